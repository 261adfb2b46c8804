/* repl.h — the interactive read-eval-print loop (src/repl.c, libedit on the loop). */
#ifndef AIO_REPL_H
#define AIO_REPL_H
#include <lua.h>

/* Runs the REPL until EOF; returns 1 if ok. The host (src/main.c) has already printed the
** version banner when lua.c would, and calls this with an empty stack on the main thread.
** Returns 0 when an error ended the session: with the message lua.c prints for it pushed (a
** prompt that could not be made), or nothing pushed when the error was reported already. */
int aio_repl(lua_State *L);

#endif

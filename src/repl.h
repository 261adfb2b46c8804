/* repl.h — the interactive read-eval-print loop (src/repl.c, libedit on the loop). */
#ifndef AIO_REPL_H
#define AIO_REPL_H
#include <lua.h>

/* Runs the REPL until EOF; returns 1 if ok. The host (src/main.c) has already printed the
** version banner when lua.c would, and calls this with an empty stack on the main thread.
** Returns 0 when an error ended the session: with the message lua.c prints for it pushed (a
** prompt that could not be made), or nothing pushed when the error was reported already. */
int aio_repl(lua_State *L);

/* Routes a fresh or forked state's console output (print, io.write, io.stdout:write,
** io.stderr:write) through console_write (aio.console): above the REPL's prompt, sent to the
** parent process, or written at once. A user's own print is left alone; failures are ignored. */
void aio_console_install(lua_State *L);
/* Loads what aio_console_install needs into L (before process.fork: the child then allocates
** less; see repl.c). */
void aio_console_preload(lua_State *L);
/* On the loop's thread: prints console output that came from a forked worker, as this
** process's own (above the prompt while one is shown; on to its parent when it is a worker). */
void aio_console_print(int to_stderr, const char *s, size_t n);

#endif

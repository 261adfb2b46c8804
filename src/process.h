/*
** process.h — what process.c, shm.c and exec.c share.
*/
#ifndef AIO_PROCESS_H
#define AIO_PROCESS_H

#include <sys/types.h>
#include "aio.h"

/* shm.c: creates the shared arena (once per process tree: children inherit it) and adds
** value, array, lock, semaphore and dict to the module table on top of the stack. */
void aio_shm_open(lua_State *L);
/* exec.c: adds exec to the module table on top of the stack. */
void aio_exec_open(lua_State *L);

/* Console output of forked workers (process.c). While the REPL's console is active somewhere
** in the process tree (on: it opened with line editing; off: it closed), the Lua-level console
** output of pool workers and process.fork children goes to their parent, which prints it
** through its own console (above the prompt); otherwise they write it themselves. */
void aio_proc_console_shared(int on);
/* In a forked worker while that holds: sends the text to the parent (any thread); 1 if sent,
** 0 if the caller must write it itself. */
int aio_proc_console_route(int to_stderr, const char *s, size_t n);

/* The name of this process ("MainProcess", "Process-1", "ForkPoolWorker-3" ...). */
const char *aio_process_name(void);

int luaopen_aio_process_c(lua_State *L);

#endif

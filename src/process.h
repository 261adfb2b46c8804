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

/* The name of this process ("MainProcess", "Process-1", "ForkPoolWorker-3" ...). */
const char *aio_process_name(void);

int luaopen_aio_process_c(lua_State *L);

#endif

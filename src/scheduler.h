/* scheduler.h — private glue between future.c, task.c and task_error.c, and for the core's
** files that spawn or resume tasks (timer.c, coroutine.c); not for other modules. */
#ifndef AIO_SCHEDULER_H
#define AIO_SCHEDULER_H
#include "aio.h"

/* Appends t to f's waiter list. */
void aio__waiter_add(aio_future *f, aio_task *t);
/* Unlinks t from f's waiter list. */
void aio__waiter_remove(aio_future *f, aio_task *t);
/* Marks the finished future f, at (absolute) fidx, as done with its outcome already stored in
** uservalue 1: wakes its waiters (outcome pushed on their coroutines) and runs its callbacks. */
void aio__future_finish(lua_State *L, aio_future *f, int fidx);
/* Moves the top nvals values of L onto t's coroutine and queues t for resumption. */
void aio__task_wake(lua_State *L, aio_task *t, int nvals);
/* Pushes the task t (it must be unfinished, hence anchored). */
void aio__task_push(lua_State *L, aio_task *t);
/* Marks the future at fidx observed (and forgets it as an unobserved failure). */
void aio__observe(lua_State *L, int fidx);
/* Pushes the display name of the task at tidx ("Task-<id>" unless set). */
void aio__push_task_name(lua_State *L, int tidx);
/* Pushes where the task at tidx was spawned ("file:line" or "?"). */
void aio__push_task_site(lua_State *L, int tidx);
/* Turns the error on top of L (raised by task tidx's coroutine co) into an aio.error with the
** task's name, spawn site and traceback; returns 0 if it was one already. */
int aio__wrap_task_error(lua_State *L, int tidx, lua_State *co);
/* Gives the aio.error on top, raised by a __close handler while the task unwound from the
** aio.error at fidx, a traceback (the first error's stack if it was raised here). */
void aio__close_error_traceback(lua_State *L, int fidx, int here);
/* Remembers the failed future at idx until its error is observed (what: NULL for a task). */
void aio__unobserved_add(lua_State *L, int idx, const char *what);
/* Registers the aio.error metatable and puts the error functions into the table at -1. */
void aio__open_task_error(lua_State *L);
/* Raises the outcome of the finished future at fidx or returns its results (for await). */
int aio__return_outcome(lua_State *L, int fidx);
/* Pushes "file:line" of the user code running now (the first frame outside aio's modules). */
void aio__push_site(lua_State *L);
/* aio_spawn, but with the spawn site given: the string at (absolute) index site, below the
** function (a done callback's task shows where add_done_callback was called); 0: the caller's. */
aio_task *aio__spawn_at(lua_State *L, int nargs, int site);
/* Set while the main loop resumes a coroutine (read by signal handlers). */
extern lua_State *volatile aio__running_co;
extern aio_loop *aio__main_loop;
/* Replaces coroutine.resume and coroutine.wrap with the await-aware versions (coroutine.c). */
void aio__install_coroutine_wrappers(lua_State *L);
/* The light userdata every await yields, so schedulers and coroutine.resume recognise it. */
extern const char aio__await_key;
#endif

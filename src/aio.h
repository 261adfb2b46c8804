/*
** aio.h — the runtime's internal contract.
**
** One libuv loop per main Lua state. Lua code runs in tasks (coroutines) or on the main thread.
** The one rule every module follows:
**
**   A C function that must wait creates (or is handed) a future, starts its libuv work, and
**   ends with `return aio_await(L, idx);`. A libuv callback finishing that work calls
**   aio_future_resolve() / aio_future_reject() with the loop's main state. Resolving never
**   resumes a coroutine: it moves the waiting tasks to the ready queue, which the loop drains
**   from one place (task.c: aio_task_step). So no coroutine is ever resumed re-entrantly.
**
** aio_await works in three contexts:
**   - inside a task (or a plain coroutine resumed by a task): the task yields to the scheduler;
**   - in a plain coroutine outside any task: the await passes up through coroutine.resume,
**     which (on the main thread) runs the loop until the future is done;
**   - on the main thread (the script's top level): it runs the loop until the future is done
**     (asyncio's run_until_complete), unless the loop is already running (a plain libuv
**     callback), where it raises a clear error.
**
** Ownership: futures and tasks are full userdata owned by the Lua GC. C code that must keep one
** alive while libuv works holds a registry reference (aio_ref / aio_unref). Memory of libuv
** handles is freed only in their close callbacks.
*/
#ifndef AIO_H
#define AIO_H

#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

typedef struct aio_loop aio_loop;
typedef struct aio_future aio_future;
typedef struct aio_task aio_task;
typedef struct aio_timed aio_timed;

#define AIO_FUTURE_MT "aio.future"
#define AIO_TASK_MT "aio.task"
#define AIO_TIMER_MT "aio.timer"
#define AIO_ERROR_MT "aio.error"

enum { AIO_PENDING = 0, AIO_DONE, AIO_FAILED, AIO_CANCELLED };

/* ---- loop.c: the loop of a Lua state ------------------------------------------------ */

/* A timed entry in the loop's timer heap (tasks sleeping, timers, sleeps outside tasks). */
struct aio_timed {
  uint64_t due;                               /* loop time (ns) when it fires */
  uint32_t seq;                               /* tie-break: FIFO among equal deadlines (wraps) */
  int32_t heap_idx;                           /* -1 when not in the heap */
  void (*fire)(aio_loop *loop, aio_timed *t); /* called from the heap timer callback */
};

struct aio_loop {
  uv_loop_t uv;
  lua_State *L;                 /* the main state: what callbacks use to touch Lua */
  aio_task *ready_head, *ready_tail; /* tasks to resume, FIFO */
  aio_timed **heap; int heap_len, heap_cap; uint32_t heap_seq;
  double epoch;                 /* aio.now() when the loop was made: task ages count from it */
#ifdef __linux__
  /* A timerfd armed (in nanoseconds, absolute) for the earliest heap entry, polled by
  ** heap_timer: libuv's own timers count whole milliseconds, and a 100 ms sleep then ends up
  ** to 1 ms late, with every sleep due in the same millisecond woken as one burst. */
  uv_poll_t heap_timer;
  int heap_fd;
#else
  uv_timer_t heap_timer;        /* armed for the earliest heap entry (millisecond precision) */
#endif
  uv_async_t wakeup;            /* signal-safe wake-up (Ctrl-C) and cross-thread wake-ups */
  int running;                  /* > 0 while inside uv_run or the scheduler: no main-thread await */
  int polling;                  /* > 0 while inside uv_run itself (uv_stop only makes sense then) */
  int ntasks;                   /* tasks not yet finished */
  int64_t next_task_id;
  int virtual_time;             /* aio.clock.virtual(): sleeps jump instead of waiting */
  uint64_t vnow;                /* the virtual clock, in ns */
  int autojump_ms;              /* real ms of idleness before the virtual clock jumps (0: at once) */
  uv_timer_t autojump;          /* a real timer for that wait (unreferenced while unused) */
  uint64_t idle_since;          /* uv_hrtime() when the loop last became idle in virtual time (0: not) */
  int closing;
  int task_hook;                /* non-zero when aio.core.set_task_hook installed a hook */
  int callback_errors;          /* errors printed by aio_pcall_report: the exit status is 1 */
  struct aio_site *sites;       /* spawn-site strings by call site (task.c), made on first spawn */
  int anchor_ref;               /* registry ref of the live-task table (task.c), 0 until made */
  int anchor_top, *anchor_free, anchor_nfree, anchor_cap; /* its slots: highest, free ones */
  const void *task_mt, *future_mt; /* the metatables of tasks and futures (identity checks) */
  int task_mt_ref, future_mt_ref;  /* and their registry refs (set on every new one) */
  /* Set by another thread (a thread pool cancelling the job this loop's state runs), followed
  ** by uv_async_send(&wakeup): the await blocking in aio_run_until raises a cancellation.
  ** Accessed with __atomic builtins (written and read on two threads). */
  int cancel_request;
};

/* A new state for the host or a worker: luaL_newstate, with an allocator that takes new blocks
** from malloc directly (lauxlib's goes through realloc) and whose ud is the state's loop once
** made (aio_loop_get's quickest way to it). NULL when out of memory. */
lua_State *aio_newstate(void);
/* Returns the loop of L's main state, creating it on first use. */
aio_loop *aio_loop_get(lua_State *L);
/* Inside a libuv callback: lets the current uv_run return at once instead of blocking in its
** poll (something became ready that the loop must handle first). No-op outside uv_run. */
void aio_loop_wake(aio_loop *loop);
/* The libuv loop of L. */
uv_loop_t *aio_uv(lua_State *L);
/* The loop's clock in nanoseconds (virtual when virtual time is on). */
uint64_t aio_now_ns(aio_loop *loop);
/* Runs the loop until future f is done (f may be NULL: until nothing is left to run).
** Raises "interrupted!" on Ctrl-C. Must not be called while the loop is running. */
void aio_run_until(lua_State *L, aio_future *f);
/* Runs the loop until no task, timer or referenced handle remains (end of a script): Ctrl-C
** then cancels every task; tasks stuck forever are cancelled; unobserved task errors are
** reported on stderr. Returns the exit status the host should use: 0, 1 (an unobserved error
** or a failure) or 130 (interrupted). Runs protected; safe to call when no loop exists. */
int aio_loop_drain(lua_State *L);
/* Non-zero if L's main state already has a loop (nothing to drain otherwise). */
int aio_loop_exists(lua_State *L);
/* Closes every handle and frees the loop (called from the state's __gc). */
void aio_loop_close(aio_loop *loop);
/* Async-signal-safe, for a SIGINT handler (lua.c's laction): the Lua code running now raises
** "interrupted!" — on L (the main thread; may be NULL) or in the task or generator the main
** loop is resuming, so Ctrl-C stops a busy loop inside a task as lua.c stops one in the main
** chunk — or, if none runs, the await blocked in the loop raises it. One Ctrl-C, one error. */
void aio_signal_interrupt(lua_State *L);
/* Non-zero (and cleared) when an interrupt is pending. */
int aio_take_interrupt(void);

/* ---- sys.c: process-wide set-up --------------------------------------------------------- */

/* Grows the process's descriptor table up front to its soft RLIMIT_NOFILE (at most
** AIO_FD_TABLE_MAX entries); a no-op once that size is reached. Called when a loop is made
** and when aio.sys.rlimit raises "nofile" (see sys.c for why). */
void aio_fd_table_reserve(void);
#define AIO_FD_TABLE_MAX 16384

/* ---- timer.c: the timer heap ---------------------------------------------------------- */

/* Durations of AIO_FOREVER_S seconds (about 32 years) or more, math.huge included, never end:
** aio_duration_ns gives AIO_NEVER for them, and nothing is scheduled. */
#define AIO_FOREVER_S 1e9
#define AIO_NEVER UINT64_MAX
/* Seconds s (argument arg, for the error) to nanoseconds: NaN raises, negative counts as 0,
** AIO_FOREVER_S or more is AIO_NEVER. */
uint64_t aio_duration_ns(lua_State *L, int arg, lua_Number s);
/* Pushes a future completed after ns nanoseconds (AIO_NEVER: a future nothing completes). */
void aio__push_sleep_future(lua_State *L, uint64_t ns);
/* Schedules t to fire `ns` nanoseconds from now. */
void aio_timed_start(aio_loop *loop, aio_timed *t, uint64_t ns);
/* Removes t from the heap if it is there. */
void aio_timed_stop(aio_loop *loop, aio_timed *t);
/* Fires every due entry and re-arms the heap timer (used by loop.c, and by virtual time). */
void aio_timers_run(aio_loop *loop);
/* Creates the handle behind the heap (unreferenced: liveness counts heap_len). */
void aio_timers_init(aio_loop *loop);
/* Disarms the heap's handle (virtual time, or a forked child forgetting its parent's timers). */
void aio_timers_disarm(aio_loop *loop);
/* In a forked child, before uv_loop_fork: stops sharing the parent's timer. */
void aio_timers_after_fork(aio_loop *loop);
/* After the loop is closed: releases what the heap's handle used besides its memory. */
void aio_timers_closed(aio_loop *loop);
/* Nanoseconds until the earliest entry, or -1 if the heap is empty. */
int64_t aio_timers_next(aio_loop *loop);

/* ---- future.c / task.c / task_error.c: futures, tasks and the scheduler ------------- */

struct aio_future {
  int state;                       /* AIO_PENDING, AIO_DONE, AIO_FAILED, AIO_CANCELLED */
  int nresults;                    /* number of result values (uservalue 1; packed if > 1) */
  unsigned is_task : 1;
  unsigned observed : 1;           /* someone looked at the outcome */
  unsigned has_callbacks : 1;      /* uservalue 2 (its done callbacks) is not nil: not read if 0 */
  int topwaiters;                  /* main-thread waiters (aio_run_until) */
  aio_task *whead, *wtail;         /* tasks waiting on this future (FIFO) */
  /* Called when the future is cancelled while pending (e.g. abort an HTTP transfer). */
  void (*on_cancel)(lua_State *L, aio_future *f, void *ud);
  void *on_cancel_ud;
};

/* A task: a coroutine scheduled by the loop, and the future of its own outcome. */
struct aio_task {
  aio_future fut;                /* first member: a task is a future */
  lua_State *co;                 /* its coroutine (NULL once finished) */
  /* A task is in at most one of: the timer heap, a future's waiter list, the ready queue; so
  ** their links share memory (a sleeping task costs ~1.4 KB in all, the bare coroutine ~1.1).
  ** Only `sleeping`, `waiting` and `queued` say which one is live. */
  union {
    aio_timed sleep;                        /* while it sleeps (heap_idx valid only then) */
    struct { aio_task *wnext, *wprev; };    /* while it waits on a future */
    aio_task *rnext;                        /* while it is in the ready queue */
  };
  aio_future *waiting;           /* the future it waits on, or NULL */
  int64_t id;
  float spawned_at;              /* seconds after the loop's epoch (a float keeps tasks small) */
  int nargs;                     /* values pushed on co for its next resume */
  int ref;                       /* anchor in the live-task table while unfinished */
  unsigned queued : 1, started : 1, sleeping : 1, running : 1;
  unsigned cancel_requested : 1;  /* a cancellation to raise at its next await */
  unsigned cancel_delivering : 1; /* woken with a cancellation error it has not yet received */
  /* it resumed a generator from code that cannot yield (a C function's callback, a metamethod):
  ** an await inside that generator could not pass up to the scheduler, so it must raise */
  unsigned stuck_in_c : 1;
  /* cancel() requests not withdrawn by uncancel() (asyncio's Task.cancelling()); it saturates
  ** at AIO_CANCELS_MAX and then stays there, so a saturated task counts as still cancelled. */
  unsigned cancels : 16;
};
#define AIO_CANCELS_MAX 0xFFFFu

/* Uservalue slots of a task userdata. */
/* (slot 2, callbacks, is shared with futures: nil, one synchronous function, or a list.) */
/* (slot 1 holds the coroutine while the task runs, then its outcome: they never coexist.) */
enum { AIO_TUV_CO = 1, AIO_TUV_RESULT = 1, AIO_TUV_CALLBACKS, AIO_TUV_WAITING, AIO_TUV_INFO,
       AIO_TASK_NUV = AIO_TUV_INFO };
/* Uservalue slots of a future userdata. */
enum { AIO_FUV_RESULT = 1, AIO_FUV_CALLBACKS, AIO_FUV_LABEL, AIO_FUTURE_NUV = AIO_FUV_LABEL };

/* Pushes a new pending future. */
aio_future *aio_future_new(lua_State *L);
/* Pushes a new pending future that C code holds until it settles it: *ref is its registry
** anchor (aio_unref when done), and cancelling it first calls on_cancel(L, f, ud), which
** undoes whatever the pending work registered (and must not settle f). */
aio_future *aio_future_new_held(lua_State *L, int *ref,
                                void (*on_cancel)(lua_State *L, aio_future *f, void *ud),
                                void *ud);
/* aio_future_new_held for a waiter of `size` zeroed bytes, whose fields at offsets fut_at and
** ref_at get the future and its ref: on_cancel gets ud, or the waiter when ud is NULL; the
** future is pushed. Never raises: NULL (nothing pushed, nothing held) when out of memory, so
** that the caller frees what it owns before raising. */
void *aio_waiter_alloc(lua_State *L, size_t size, size_t fut_at, size_t ref_at,
                       void (*on_cancel)(lua_State *L, aio_future *f, void *ud), void *ud);
/* Resolves f with a held value: the C value p, which the waiter takes when its task runs
** (aio_held_take) and drop(p) frees if nobody does. Out of memory: drops p, rejects f. For a
** wait that gives back what it was handed when its task was cancelled before it ran. */
void aio_future_resolve_held(lua_State *L, aio_future *f, void *p, void (*drop)(void *p));
/* Takes the C value out of the held value at idx, or returns NULL (not one, or taken). */
void *aio_held_take(lua_State *L, int idx);
/* Checks that the value at idx is a future or a task (tasks are futures). */
aio_future *aio_future_check(lua_State *L, int idx);
/* Returns the future (or task) at idx, or NULL. */
aio_future *aio_future_test(lua_State *L, int idx);
/* Notes the metatable on top of L (left there) for fast use: its registry ref and address. */
void aio_note_metatable(lua_State *L, int *ref, const void **addr);
/* Completes f with the nvalues on top of L (popped). No-op if f is no longer pending. */
void aio_future_resolve(lua_State *L, aio_future *f, int nvalues);
/* Fails f with the error value on top of L (popped). No-op if f is no longer pending. */
void aio_future_reject(lua_State *L, aio_future *f);
/* Cancels a pending future (runs on_cancel, wakes waiters with a cancellation error). */
int aio_future_cancel(lua_State *L, aio_future *f, const char *msg);
/* Waits for the future at idx; use in tail position: `return aio_await(L, idx);`.
** Returns the future's results or raises its error. */
int aio_await(lua_State *L, int idx);
/* aio_await for a future made for this call and registered as a waiter (with an on_cancel that
** unregisters it): where the caller cannot wait, the future is cancelled before the error is
** raised, so that no orphan waiter is left behind. */
int aio_await_own(lua_State *L, int idx);
/* aio_await_own, then returns k(L, status, base) with the outcome above base: (true,
** results...) or (false, err). k may end with `return aio_await_k(L, status, base)`. */
int aio_await_own_k(lua_State *L, int idx, lua_KFunction k);
/* The continuation of an await: returns the results above base or raises the error. */
int aio_await_k(lua_State *L, int status, lua_KContext base);
/* Takes the running task's cancellation that came after it was woken: pushes its error and
** returns 1, or returns 0 (none). For a wait that gives back what it was handed. */
int aio_take_cancel(lua_State *L);
/* Pushes the outcome of the (finished) future at fidx as (true, results...) or (false, err);
** returns the count pushed. */
int aio_future_push_outcome(lua_State *L, int fidx);
/* Pushes the future or task f (which must still be reachable: pending, or held by someone). */
void aio_future_push(lua_State *L, aio_future *f);

/* Pushes the text of the error value at idx and returns it, never raising: a string or number
** as text, else its __tostring (called protected), else "(error object is a X value)". */
const char *aio_push_error_text(lua_State *L, int idx);
/* If f failed and nobody has seen its error yet, keeps it for the report of unobserved failures
** (task_error.c: at exit, with exit status 1, and in the REPL), what naming the work: "a thread job". */
void aio_future_watch_failure(lua_State *L, aio_future *f, const char *what);
/* Forks since this process's ancestor first asked (thread.c, pthread_atfork): a resource made by
** a parent stores it and compares, an integer test instead of getpid() on every use. */
int aio_fork_gen(void);

/* Pushes the registry table stored under key, creating it with __mode = mode ("k", "v",
** "kv") the first time. */
void aio_push_weak_table(lua_State *L, const void *key, const char *mode);

/* Keeps the value at idx alive while C code owns it; returns a registry ref. */
int aio_ref(lua_State *L, int idx);
void aio_unref(lua_State *L, int ref);
/* Pushes the value of a ref. */
void aio_pushref(lua_State *L, int ref);

/* Spawns a task running the function below its nargs arguments (popped); pushes the task. */
aio_task *aio_spawn(lua_State *L, int nargs);
/* The task running L (also when L is a plain coroutine resumed from a task), or NULL. */
aio_task *aio_current_task(lua_State *L);
/* Requests cancellation of t; returns 0 if it already finished. */
int aio_task_cancel(lua_State *L, aio_task *t, const char *msg);
/* Cancels every unfinished task (used at exit and on Ctrl-C). */
void aio_cancel_all(lua_State *L, const char *msg);
/* Prints every failed task whose error nobody observed; returns how many (and forgets them). */
int aio_report_unobserved(lua_State *L);
/* Pushes that report as one string ("" when none) instead of printing it; returns how many. */
int aio_push_unobserved_report(lua_State *L);
/* Resumes ready tasks until the ready queue is empty (loop.c calls this). */
void aio_scheduler_drain(aio_loop *loop);

/* Calls the function below nargs arguments with a traceback handler; on error prints
** "aioshell: <error + traceback>" to stderr and returns non-zero (for plain callbacks). */
int aio_pcall_report(lua_State *L, int nargs, int nresults);
/* Pushes a cancellation error object with message msg. */
void aio_push_cancelled(lua_State *L, const char *msg);
/* Non-zero if the value at idx is a cancellation error. */
int aio_is_cancelled(lua_State *L, int idx);

/* ---- embed.c: the Lua modules compiled into the binary ------------------------------- */

/* Adds a package.preload loader for each embedded lua/ module (found before any file). */
void aio_preload_embedded(lua_State *L);
/* Opens the runtime into L: package.preload entries of the embedded Lua and the C modules.
** Called by the host at start and by luaopen_aio in the stand-alone C module. */
void aio_openlibs(lua_State *L);

/* C module openers (each registered in package.preload by aio_openlibs). */
int luaopen_aio_core(lua_State *L);

#endif

/*
** thread.h — what the thread pool (thread.c, thread_worker.c) and the objects its workers share
** with the loop (shared.c: cells and mutexes; channel.c: channels) have in common.
**
** Worker threads never touch the main Lua state. They hand finished work to the loop through
** the inbox (inbox.c): a mutex-protected list drained by one uv_async_t callback on the loop
** thread (uv_async_send coalesces, so the callback takes the whole list each time).
*/
#ifndef AIO_THREAD_H
#define AIO_THREAD_H

#include <time.h>
#include "aio.h"

typedef struct aio_delivery aio_delivery;
typedef struct aio_inbox aio_inbox;

/* Something a worker thread hands to the loop; `deliver` runs on the loop thread. `drop`, when
** set, runs instead if the inbox closes (its state closing) with d never delivered: it lets go
** of what d holds, without Lua. */
struct aio_delivery {
  aio_delivery *next;
  void (*deliver)(lua_State *L, aio_delivery *d);
  void (*drop)(aio_delivery *d);
};

/* Returns the inbox of L's loop, creating it on first use (loop thread only). */
aio_inbox *aio_inbox_get(lua_State *L);
/* Queues d and wakes the loop (any thread). */
void aio_inbox_post(aio_inbox *ib, aio_delivery *d);
/* Forgets the inbox (a forked child whose loop was reset makes a new one on demand). */
void aio_thread_forget_inbox(lua_State *L);
/* Counts work in flight that the loop must stay alive for (loop thread only): +1 / -1. */
void aio_inbox_hold(aio_inbox *ib, int delta);
/* Takes d back out of the inbox if it is still waiting there; 1 if it was (loop thread). */
int aio_inbox_unpost(aio_inbox *ib, aio_delivery *d);
/* Takes every delivery that mine(d, ud) accepts out of the inbox, in order, and returns them
** as a list linked by `next` (loop thread: for deliveries that will never run). */
aio_delivery *aio_inbox_take(aio_inbox *ib, int (*mine)(aio_delivery *d, void *ud), void *ud);

/* The worker running in state L (a worker thread's state or one of its coroutines), or NULL on
** the loop's own state. */
typedef struct aio_worker aio_worker;
aio_worker *aio_worker_of(lua_State *L);
/* Non-zero when the job running in L's worker was asked to stop. */
int aio_worker_cancelled(lua_State *L);
/* Raises the cancellation error a cancelled job ends with. */
int aio_worker_raise_cancel(lua_State *L);

/* The CLOCK_REALTIME time `seconds` from now, for timed pthread waits; `seconds` is capped at
** AIO_FOREVER_S (time_t cannot hold math.huge, and an overflow lay in the past). */
struct timespec aio_deadline_in(double seconds);

/* Reference counts of the objects shared between threads (cells, mutexes, channels). */
static inline void aio_refs_retain(int *refs) { __atomic_add_fetch(refs, 1, __ATOMIC_RELAXED); }
/* Drops one reference; true when it was the last. */
static inline int aio_refs_release(int *refs) {
  return __atomic_sub_fetch(refs, 1, __ATOMIC_ACQ_REL) == 0;
}

/* Unlocks the thread.mutex objects the calling OS thread still holds (shared.c); a worker calls
** it after each job. Returns how many there were. */
int aio_shared_release_held(void);

/* Add cells and mutexes (shared.c), and channels (channel.c), to the module table on top. */
void aio_shared_open(lua_State *L);
void aio_channel_open(lua_State *L);

int luaopen_aio_thread_c(lua_State *L);

#endif

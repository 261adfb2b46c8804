/*
** thread_pool.h — what the two sides of a thread pool share: thread.c (the loop's side: the
** pool's life cycle, submitting and settling jobs, the Lua bindings) and thread_worker.c (the
** worker threads: their states, running jobs, cancelling a running one). Private to them;
** the contract with other modules is thread.h.
*/
#ifndef AIO_THREAD_POOL_H
#define AIO_THREAD_POOL_H

#include <pthread.h>
#include "aio.h"
#include "buf.h"
#include "thread.h"

typedef struct pool pool;

struct aio_worker {
  pool *pool;
  pthread_t tid;
  lua_State *L;
  aio_loop *loop;        /* the worker state's own loop (for awaits inside jobs) */
  int index;
  int started;
  struct job *current;   /* guarded by pool->mu */
  char name[48];
};

typedef struct job {
  aio_delivery d;        /* first member: the inbox hands the job back as a delivery */
  struct job *next;      /* in the pool's queue */
  pool *pool;
  aio_buf msg;           /* in: fn, args...; out: results, or error, traceback */
  int state;             /* J_QUEUED, J_RUNNING, J_DONE */
  int ok;
  int cancelled;         /* it ended because it was cancelled */
  volatile int cancel;   /* asked to stop: read by the worker's count hook */
  aio_future *fut;
  int futref;
  int worker;            /* index of the worker that ran it */
  int decoded;           /* msg was decoded on the loop: its boxes own its references */
} job;

enum { J_QUEUED, J_RUNNING, J_DONE, J_DROPPED };

struct pool {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job *qhead, *qtail;
  int nqueued;
  int nidle;             /* workers asleep on cv (guarded by mu): signal only when > 0 */
  aio_worker *workers;
  int size;
  int nalive;            /* worker threads that have not exited (guarded by mu) */
  int closing;           /* no new jobs; workers leave once the queue is empty */
  int joined;
  char *broken;          /* init failed: the error every job gets (guarded by mu) */
  aio_buf init;          /* encoded init function (empty when none) */
  aio_inbox *ib;
  int refs;              /* loop thread: Lua box + jobs alive */
  int inflight;          /* loop thread: jobs submitted, not yet delivered */
  int selfref;           /* loop thread: ref to the Lua box while jobs are in flight */
  aio_delivery exited;   /* posted by the last worker to leave */
  int owner;             /* fork_gen when made: a forked child has none of these threads */
  int closedref;         /* ref to the future resolved once every worker has left */
  aio_future *closed;
  char name[32];
};


/* Sets the head of the pool's queue (mu held), atomically: idle workers spin on it unlocked. */
static inline void aio_pool_set_qhead(pool *p, job *j) { __atomic_store_n(&p->qhead, j, __ATOMIC_RELAXED); }

/* A worker thread's body (pthread_create): make a warm state, run init, then take jobs until
** the pool closes (thread_worker.c). */
void *aio_pool_worker_main(void *arg);
/* Asks the worker running j to stop (pool->mu held, j running) (thread_worker.c). */
void aio_pool_interrupt(pool *p, job *j);
/* Adds the functions a job calls in its worker (current, sleep, cancelled) to the module table
** on top (thread_worker.c). */
void aio_pool_worker_open(lua_State *L);

#endif

/*
** thread.c — thread pools: dedicated OS threads, each owning a warm lua_State.
**
** A job is `fn, args...` encoded by the codec (codec.c) on the loop thread, queued on the pool,
** decoded and run by a worker, and its results (or its error with the worker's traceback)
** encoded back and posted to the loop's inbox, whose uv_async_t callback resolves the job's
** future (a core future, so aio.gather/wait/as_completed accept it).
**
** The worker threads' side (their states, running a job, cancelling a running one) is
** thread_worker.c; the inbox, inbox.c; what the two sides share, thread_pool.h.
**
** Lifetimes: jobs, the pool and the inbox are touched by the loop thread and the workers;
** `pool.mu` guards the queue and each worker's `current`. The pool's memory is counted
** (`refs`, loop thread only): the Lua box holds one reference and each job another, so a
** delivery arriving after the pool was collected still finds it.
*/
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <errno.h>
#include <pthread.h>
#include "aio.h"
#include "codec.h"
#include "thread.h"
#include "thread_pool.h"
#include "outcome.h"

#define POOL_MT "aio.thread.pool"

typedef struct pool_box {
  pool *p;
} pool_box;

static int pool_counter = 0;
static volatile int fork_gen = 0;  /* bumped in forked children: a pool made before is not theirs */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void bump_fork_gen(void) { fork_gen++; }
static void install_atfork(void) { pthread_atfork(NULL, NULL, bump_fork_gen); }

/* How many forks separate this process from the one that first asked (0 there): what a
** resource made by the parent compares to know it is not its own here. */
int aio_fork_gen(void) {
  pthread_once(&atfork_once, install_atfork);
  return fork_gen;
}

/* Drops a reference to the pool (loop thread); frees it with the last one. */
static void pool_release(pool *p) {
  if (--p->refs > 0) return;
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  aio_buf_free(&p->init);
  free(p->broken);
  free(p->workers);
  free(p);
}

/* Frees a job that is finished or was taken off the queue (loop thread). */
static void job_free(lua_State *L, job *j) {
  pool *p = j->pool;
  /* arguments never run, or results nobody took (the future was cancelled as the job finished):
  ** the references to shared objects they carry go with them */
  if (j->msg.len && !j->decoded) aio_codec_discard(j->msg.data, j->msg.len);
  aio_buf_free(&j->msg);
  if (j->fut) j->fut->on_cancel = NULL;
  aio_unref(L, j->futref);
  free(j);
  aio_inbox_hold(p->ib, -1);
  if (--p->inflight == 0 && p->selfref != LUA_NOREF) {
    aio_unref(L, p->selfref);
    p->selfref = LUA_NOREF;
  }
  pool_release(p);
}

/* Protected: decodes a finished job's outcome and settles its future. */
static int settle_p(lua_State *L) {
  job *j = (job *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  j->decoded = 1;  /* before: a decode failing half-way must not release what it adopted */
  int n = aio_codec_decode(L, j->msg.data, j->msg.len);
  if (j->ok) {
    aio_future_resolve(L, j->fut, n);
    return 0;
  }
  if (j->cancelled) {
    aio_push_cancelled(L, "job cancelled");
    aio_future_reject(L, j->fut);
    return 0;
  }
  /* error, traceback: a string error gets the worker's traceback appended */
  char who[48];  /* the pool's name has at most 31 characters */
  snprintf(who, sizeof who, "%s-%d", j->pool->name, j->worker + 1);
  aio_outcome_push_error(L, 1, who);
  aio_future_reject(L, j->fut);
  return 0;
}

/* Inbox delivery of a finished job (loop thread). */
static void job_deliver(lua_State *L, aio_delivery *d) {
  job *j = (job *)d;
  if (j->fut && j->fut->state == AIO_PENDING) {
    lua_pushcfunction(L, settle_p);
    lua_pushlightuserdata(L, j);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) aio_future_reject(L, j->fut);
    aio_future_watch_failure(L, j->fut, "a thread job");
  }
  job_free(L, j);
}

/* Inbox delivery: every worker has left; join the threads and settle the `closed` future. */
static void pool_exited(lua_State *L, aio_delivery *d) {
  pool *p = (pool *)((char *)d - offsetof(pool, exited));
  if (!p->joined) {
    for (int i = 0; i < p->size; i++)
      if (p->workers[i].started) pthread_join(p->workers[i].tid, NULL);
    p->joined = 1;
  }
  if (p->closed) {
    aio_future_resolve(L, p->closed, 0);
    aio_unref(L, p->closedref);
    p->closed = NULL;
  }
  aio_inbox_hold(p->ib, -1);  /* taken when closing started */
  pool_release(p);
}

/* on_cancel of a job's future: unqueue it, or ask the running worker to stop. */
static void job_on_cancel(lua_State *L, aio_future *f, void *ud) {
  job *j = (job *)ud;
  pool *p = j->pool;
  (void)f;
  pthread_mutex_lock(&p->mu);
  if (j->state == J_QUEUED) {
    job **pp = &p->qhead, *prev = NULL;
    while (*pp && *pp != j) { prev = *pp; pp = &(*pp)->next; }
    if (*pp) {
      if (prev) prev->next = j->next;
      else aio_pool_set_qhead(p, j->next);
      if (p->qtail == j) p->qtail = prev;
      p->nqueued--;
    }
    j->state = J_DROPPED;
    pthread_mutex_unlock(&p->mu);
    j->fut = NULL;  /* the core is cancelling it; do not touch it again */
    job_free(L, j);
    return;
  }
  if (j->state == J_RUNNING) aio_pool_interrupt(p, j);
  pthread_mutex_unlock(&p->mu);
}

/* Checks that idx is an open pool. */
static pool *check_pool(lua_State *L, int idx) {
  pool_box *b = (pool_box *)luaL_checkudata(L, idx, POOL_MT);
  if (!b->p) luaL_error(L, "attempt to use a closed thread pool");
  return b->p;
}

/* Stops the workers: cancel_pending drops queued jobs; cancel_running stops running ones. */
static void pool_shutdown(lua_State *L, pool *p, int cancel_pending, int cancel_running) {
  job *dropped = NULL;
  pthread_mutex_lock(&p->mu);
  int first = !p->closing;
  __atomic_store_n(&p->closing, 1, __ATOMIC_RELAXED);  /* read by spinning workers */
  if (cancel_pending) {
    dropped = p->qhead;
    aio_pool_set_qhead(p, NULL);
    p->qtail = NULL;
    p->nqueued = 0;
  }
  if (cancel_running)
    for (int i = 0; i < p->size; i++)
      if (p->workers[i].current) aio_pool_interrupt(p, p->workers[i].current);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  if (first) {
    p->refs++;                   /* the `exited` delivery holds the pool */
    aio_inbox_hold(p->ib, +1);   /* and the loop, until the workers have left */
  }
  while (dropped) {
    job *next = dropped->next;
    dropped->state = J_DROPPED;
    aio_future *f = dropped->fut;
    if (f && f->state == AIO_PENDING) {
      f->on_cancel = NULL;
      aio_future_cancel(L, f, "thread pool closed");
    }
    job_free(L, dropped);
    dropped = next;
  }
}

/* thread_c.pool(size, init_fn|nil, name|nil) -> pool */
static int l_pool(lua_State *L) {
  int size = (int)luaL_optinteger(L, 1, 0);
  if (size <= 0) size = (int)uv_available_parallelism();
  if (size > 256) luaL_argerror(L, 1, "at most 256 workers");
  pool_box *b = (pool_box *)lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  luaL_setmetatable(L, POOL_MT);
  pool *p = calloc(1, sizeof *p);
  if (!p) return luaL_error(L, "out of memory");
  p->workers = calloc(size, sizeof *p->workers);
  if (!p->workers) { free(p); return luaL_error(L, "out of memory"); }
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TFUNCTION);
    aio_codec_encode(L, 2, 1, &p->init, "init", AIO_CODEC_THREAD);  /* may raise: p not yet owned */
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->size = size;
  p->refs = 1;
  p->selfref = LUA_NOREF;
  p->closedref = LUA_NOREF;
  p->ib = aio_inbox_get(L);
  p->exited.deliver = pool_exited;
  p->owner = aio_fork_gen();
  snprintf(p->name, sizeof p->name, "%s", luaL_optstring(L, 3, ""));
  if (!p->name[0]) snprintf(p->name, sizeof p->name, "pool%d", ++pool_counter);
  b->p = p;
  for (int i = 0; i < size; i++) {
    aio_worker *w = &p->workers[i];
    w->pool = p;
    w->index = i;
    snprintf(w->name, sizeof w->name, "%s-%d", p->name, i + 1);
    pthread_mutex_lock(&p->mu);
    p->nalive++;
    pthread_mutex_unlock(&p->mu);
    if (pthread_create(&w->tid, NULL, aio_pool_worker_main, w) != 0) {
      pthread_mutex_lock(&p->mu);
      p->nalive--;
      pthread_mutex_unlock(&p->mu);
      pool_shutdown(L, p, 1, 1);
      return luaL_error(L, "cannot start worker thread: %s", strerror(errno));
    }
    w->started = 1;
  }
  return 1;
}

/* pool:submit(fn, ...) -> future */
static int l_submit(lua_State *L) {
  pool *p = check_pool(L, 1);
  if (p->closing) return luaL_error(L, "cannot submit to a closed thread pool");
  if (p->owner != fork_gen)
    return luaL_error(L, "this thread pool belongs to the parent process (threads do not survive fork)");
  if (lua_type(L, 2) != LUA_TFUNCTION && !luaL_getmetafield(L, 2, "__call"))
    luaL_typeerror(L, 2, "function");
  /* encode first: a value that cannot cross raises before anything is allocated */
  aio_buf b = {0};
  aio_codec_encode(L, 2, lua_gettop(L) - 1, &b, "call", AIO_CODEC_THREAD);
  job *j = calloc(1, sizeof *j);
  if (!j) {
    aio_codec_discard(b.data, b.len);
    aio_buf_free(&b);
    return luaL_error(L, "out of memory");
  }
  j->msg = b;
  j->d.deliver = job_deliver;
  j->pool = p;
  j->state = J_QUEUED;
  j->fut = aio_future_new_held(L, &j->futref, job_on_cancel, j);
  p->refs++;
  aio_inbox_hold(p->ib, +1);
  if (p->inflight++ == 0) p->selfref = aio_ref(L, 1);
  pthread_mutex_lock(&p->mu);
  if (p->qtail) p->qtail->next = j;
  else aio_pool_set_qhead(p, j);
  p->qtail = j;
  p->nqueued++;
  if (p->nidle > 0) pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return 1;  /* the future */
}

/* pool:_shutdown(cancel_pending, cancel_running) -> future settled when all workers left */
static int l_shutdown(lua_State *L) {
  pool_box *b = (pool_box *)luaL_checkudata(L, 1, POOL_MT);
  if (!b->p) {  /* already gone: an already-settled future */
    aio_future *f = aio_future_new(L);
    aio_future_resolve(L, f, 0);
    return 1;
  }
  pool *p = b->p;
  if (!p->closed && !p->joined) {
    p->closed = aio_future_new(L);
    p->closedref = aio_ref(L, -1);
    lua_pop(L, 1);
  }
  pool_shutdown(L, p, lua_toboolean(L, 2), lua_toboolean(L, 3));
  if (p->closed) aio_pushref(L, p->closedref);
  else {
    aio_future *f = aio_future_new(L);
    aio_future_resolve(L, f, 0);
  }
  return 1;
}

/* Stops everything now and joins the threads (jobs are cancelled); returns the pool, whose box
** reference the caller drops, or NULL when there is nothing to do. */
static pool *pool_stop(lua_State *L) {
  pool_box *b = (pool_box *)luaL_checkudata(L, 1, POOL_MT);
  pool *p = b->p;
  if (!p) return NULL;
  b->p = NULL;
  if (p->owner != fork_gen) return NULL;  /* collected in a forked child: its threads are not here */
  pool_shutdown(L, p, 1, 1);
  if (!p->joined) {
    for (int i = 0; i < p->size; i++)
      if (p->workers[i].started) pthread_join(p->workers[i].tid, NULL);
    p->joined = 1;
  }
  /* The workers are gone: if their `exited` notice is still queued (the loop may never run
  ** again, e.g. at lua_close), take it back and drop the reference it held here. */
  if (aio_inbox_unpost(p->ib, &p->exited)) {
    if (p->closed) { aio_unref(L, p->closedref); p->closed = NULL; }
    aio_inbox_hold(p->ib, -1);
    p->refs--;  /* the notice's reference; the box still holds one, dropped by the caller */
  }
  return p;
}
/* Whether delivery d is a finished job of pool ud (aio_inbox_take's test). */
static int is_job_of(aio_delivery *d, void *ud) {
  return d->deliver == job_deliver && ((job *)d)->pool == (pool *)ud;
}

/* Takes p's finished jobs out of the inbox and frees them unsettled, releasing what their
** results hold. Only for a collected pool: while jobs are in flight the pool's box is kept
** alive (selfref), so that happens only at lua_close, when the loop never runs again. */
static void drop_undelivered(lua_State *L, pool *p) {
  aio_delivery *mine = aio_inbox_take(p->ib, is_job_of, p);
  while (mine) {
    aio_delivery *next = mine->next;
    job_free(L, (job *)mine);
    mine = next;
  }
}

/* __close: stop everything now and join the threads; the cancelled jobs are still delivered. */
static int l_pool_close(lua_State *L) {
  pool *p = pool_stop(L);
  if (p) pool_release(p);
  return 0;
}

/* __gc: as __close, and frees the jobs whose delivery will never run. */
static int l_pool_gc(lua_State *L) {
  pool *p = pool_stop(L);
  if (p) {
    drop_undelivered(L, p);
    pool_release(p);
  }
  return 0;
}

/* pool:stats() -> {size=, queued=, running=, inflight=} */
static int l_stats(lua_State *L) {
  pool *p = check_pool(L, 1);
  int running = 0;
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < p->size; i++) running += p->workers[i].current != NULL;
  int queued = p->nqueued;
  pthread_mutex_unlock(&p->mu);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, p->size); lua_setfield(L, -2, "size");
  lua_pushinteger(L, queued); lua_setfield(L, -2, "queued");
  lua_pushinteger(L, running); lua_setfield(L, -2, "running");
  lua_pushinteger(L, p->inflight); lua_setfield(L, -2, "inflight");
  return 1;
}

/* pool:size() -> number of workers. */
static int l_pool_size(lua_State *L) {
  lua_pushinteger(L, check_pool(L, 1)->size);
  return 1;
}

/* pool:name() -> the pool's name (its workers are name-1, name-2, ...). */
static int l_pool_name(lua_State *L) {
  lua_pushstring(L, check_pool(L, 1)->name);
  return 1;
}

/* __tostring of pools. */
static int l_pool_tostring(lua_State *L) {
  pool_box *b = (pool_box *)luaL_checkudata(L, 1, POOL_MT);
  if (!b->p) lua_pushliteral(L, "aio.thread.pool (closed)");
  else lua_pushfstring(L, "aio.thread.pool %s (%d workers)", b->p->name, b->p->size);
  return 1;
}

/* thread_c.cores() -> the number of CPUs this process may use. */
static int l_cores(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_available_parallelism());
  return 1;
}

/* Opens aio.thread_c: pools, worker helpers and the shared objects. */
int luaopen_aio_thread_c(lua_State *L) {
  static const luaL_Reg pool_methods[] = {
    {"submit", l_submit}, {"_shutdown", l_shutdown}, {"stats", l_stats}, {"size", l_pool_size},
    {"name", l_pool_name}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
    {"pool", l_pool}, {"cores", l_cores}, {NULL, NULL}};
  if (luaL_newmetatable(L, POOL_MT)) {
    luaL_newlib(L, pool_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_pool_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_pool_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_pool_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  aio_pool_worker_open(L);
  luaL_getmetatable(L, POOL_MT);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "pool_methods");  /* the facade adds map/close to these */
  lua_pop(L, 1);
  aio_shared_open(L);
  aio_channel_open(L);
  return 1;
}

/*
** thread.c — thread pools: dedicated OS threads, each owning a warm lua_State.
**
** A job is `fn, args...` encoded by the codec (codec.c) on the loop thread, queued on the pool,
** decoded and run by a worker, and its results (or its error with the worker's traceback)
** encoded back and posted to the loop's inbox, whose uv_async_t callback resolves the job's
** future (a core future, so aio.gather/wait/as_completed accept it).
**
** Cancellation reaches into a running job: the loop thread sets the job's `cancel` flag and a
** count hook on the worker's state (lua.c's way of turning SIGINT into an error), which raises a
** cancellation error in the job; thread.sleep and channel waits poll the flag. Code running in
** a coroutine of the job stops when control is back in the job's own function. A queued job is
** simply taken off the queue.
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
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sched.h>
#include <lualib.h>
#include "aio.h"
#include "codec.h"
#include "thread.h"
#include "outcome.h"

#define POOL_MT "aio.thread.pool"
#define HOOK_COUNT 100
#define SPIN_ROUNDS 300    /* a few microseconds of pause instructions */

/* ---- the inbox: worker threads -> loop ------------------------------------------------ */

struct aio_inbox {
  uv_async_t async;
  pthread_mutex_t mu;
  aio_delivery *head, *tail;
  int holds;        /* loop thread: work in flight; the async handle is referenced while > 0 */
  lua_State *L;     /* the loop's main state */
};

static const char inbox_key = 0;

/* The async callback: takes the whole list (sends coalesce) and delivers each entry. */
static void inbox_cb(uv_async_t *a) {
  aio_inbox *ib = (aio_inbox *)a->data;
  pthread_mutex_lock(&ib->mu);
  aio_delivery *d = ib->head;
  ib->head = ib->tail = NULL;
  pthread_mutex_unlock(&ib->mu);
  while (d) {
    aio_delivery *next = d->next;
    d->deliver(ib->L, d);
    d = next;
  }
}

/* Close callback of the inbox's async handle: frees the inbox. */
static void inbox_close_cb(uv_handle_t *h) {
  aio_inbox *ib = (aio_inbox *)h->data;
  pthread_mutex_destroy(&ib->mu);
  free(ib);
}

/* __gc of the inbox box in the registry: the handle's memory goes in its close callback. */
static int inbox_gc(lua_State *L) {
  aio_inbox **box = (aio_inbox **)lua_touserdata(L, 1);
  if (*box) {
    if (!uv_is_closing((uv_handle_t *)&(*box)->async))
      uv_close((uv_handle_t *)&(*box)->async, inbox_close_cb);
    *box = NULL;
  }
  return 0;
}

/* Returns the loop's inbox, making it (unreferenced) on first use (thread.h). */
aio_inbox *aio_inbox_get(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &inbox_key) == LUA_TUSERDATA) {
    aio_inbox *ib = *(aio_inbox **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (ib) return ib;
  } else {
    lua_pop(L, 1);
  }
  aio_loop *loop = aio_loop_get(L);
  aio_inbox **box = (aio_inbox **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, inbox_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  aio_inbox *ib = calloc(1, sizeof *ib);
  if (!ib) luaL_error(L, "out of memory");
  pthread_mutex_init(&ib->mu, NULL);
  ib->L = loop->L;
  uv_async_init(&loop->uv, &ib->async, inbox_cb);
  ib->async.data = ib;
  uv_unref((uv_handle_t *)&ib->async);  /* an idle inbox must not keep the loop alive */
  *box = ib;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &inbox_key);
  return ib;
}

/* In a forked child: the inbox's handle belonged to the parent's loop; start afresh. */
void aio_thread_forget_inbox(lua_State *L) {
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &inbox_key);
}

/* Takes d back out of the inbox if it is still waiting there; 1 if it was (loop thread). */
static int inbox_unpost(aio_inbox *ib, aio_delivery *d) {
  int found = 0;
  pthread_mutex_lock(&ib->mu);
  aio_delivery *prev = NULL;
  for (aio_delivery *x = ib->head; x; prev = x, x = x->next) {
    if (x != d) continue;
    if (prev) prev->next = x->next;
    else ib->head = x->next;
    if (ib->tail == x) ib->tail = prev;
    found = 1;
    break;
  }
  pthread_mutex_unlock(&ib->mu);
  return found;
}

/* Appends d and wakes the loop; any thread (thread.h). */
void aio_inbox_post(aio_inbox *ib, aio_delivery *d) {
  d->next = NULL;
  pthread_mutex_lock(&ib->mu);
  if (ib->tail) ib->tail->next = d;
  else ib->head = d;
  ib->tail = d;
  pthread_mutex_unlock(&ib->mu);
  uv_async_send(&ib->async);
}

/* References the async handle while work is in flight (thread.h). */
void aio_inbox_hold(aio_inbox *ib, int delta) {
  int before = ib->holds;
  ib->holds += delta;
  if (before == 0 && ib->holds > 0) uv_ref((uv_handle_t *)&ib->async);
  else if (before > 0 && ib->holds == 0) uv_unref((uv_handle_t *)&ib->async);
}

/* ---- pools, workers, jobs -------------------------------------------------------------- */

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

typedef struct pool_box {
  pool *p;
} pool_box;

static const char worker_key = 0;
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

/* The worker whose state L belongs to, from the registry (thread.h). */
aio_worker *aio_worker_of(lua_State *L) {
  aio_worker *w = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &worker_key) == LUA_TLIGHTUSERDATA)
    w = (aio_worker *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return w;
}

/* Reads the running job's cancel flag (thread.h). */
int aio_worker_cancelled(lua_State *L) {
  aio_worker *w = aio_worker_of(L);
  if (!w) return 0;
  job *j = w->current;  /* only this worker's thread changes `current` to/from its own job */
  return j && __atomic_load_n(&j->cancel, __ATOMIC_RELAXED);
}

/* Raises the error a cancelled job ends with (thread.h). */
int aio_worker_raise_cancel(lua_State *L) {
  lua_pushliteral(L, "aio.thread: job cancelled");
  return lua_error(L);
}

/* The count hook set on a worker's state when its job is cancelled (as lua.c's SIGINT handler
** does): raises the cancellation error in the job; a stale hook removes itself. A hook is not
** installed all the time: in Lua 5.4 any count hook sends every instruction through
** luaG_traceexec, which halves the speed of CPU-bound jobs. */
static void cancel_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  if (aio_worker_cancelled(L)) aio_worker_raise_cancel(L);
  lua_sethook(L, NULL, 0, 0);
}

/* Asks the worker running j to stop (pool->mu held, j running). */
static void interrupt_job(pool *p, job *j) {
  __atomic_store_n(&j->cancel, 1, __ATOMIC_RELAXED);
  aio_worker *w = &p->workers[j->worker];
  if (w->current == j && w->L) {
    lua_sethook(w->L, cancel_hook, LUA_MASKCOUNT, HOOK_COUNT);
    if (w->loop) {  /* a job blocked in a top-level await of its own loop (aio.sleep ...) */
      __atomic_store_n(&w->loop->cancel_request, 1, __ATOMIC_RELAXED);
      uv_async_send(&w->loop->wakeup);
    }
  }
}

/* Protected: decodes `fn, args...` from the job, calls fn, encodes the results in its place. */
static int run_job_p(lua_State *L) {
  job *j = (job *)lua_touserdata(L, 1);
  aio_outcome_call(L, j->msg.data, j->msg.len);
  /* the arguments are decoded: the results reuse the buffer, so memory the loop thread
  ** allocated is also freed there (no cross-thread free contending for malloc's arena) */
  j->msg.len = 0;
  aio_codec_encode(L, 1, lua_gettop(L), &j->msg, "result[%d]", AIO_CODEC_THREAD);
  return 0;
}

/* Protected: encodes the error record {err, traceback} (or its string form) into the job. */
static int encode_error_p(lua_State *L) {
  job *j = (job *)lua_touserdata(L, 1);
  lua_rawgeti(L, 2, 1);
  lua_rawgeti(L, 2, 2);
  if (lua_type(L, -2) != LUA_TSTRING && lua_type(L, -2) != LUA_TTABLE) {
    luaL_tolstring(L, -2, NULL);
    lua_replace(L, -3);
  }
  j->msg.len = 0;  /* whatever was there (arguments, part of a result) is no longer needed */
  aio_codec_encode(L, -2, 2, &j->msg, "error", AIO_CODEC_THREAD);
  return 0;
}

/* Protected: encodes, in place of an error value that cannot cross (the record {err, traceback}
** at 2, the reason at 3), a string error that still says what the error was and why. */
static int encode_fallback_p(lua_State *L) {
  job *j = (job *)lua_touserdata(L, 1);
  lua_rawgeti(L, 2, 1);
  aio_push_error_text(L, -1);
  const char *why = lua_tostring(L, 3);
  lua_pushfstring(L, "%s (the error value could not be sent back from the worker: %s)",
                  lua_tostring(L, -1), why ? why : "?");
  lua_rawgeti(L, 2, 2);
  j->msg.len = 0;
  aio_codec_encode(L, -2, 2, &j->msg, "error", AIO_CODEC_THREAD);
  return 0;
}

/* Runs one job in the worker's state and leaves its outcome in j->msg. */
static void run_job(aio_worker *w, job *j) {
  lua_State *L = w->L;
  lua_settop(L, 0);
  lua_pushcfunction(L, aio_outcome_msgh);
  lua_pushcfunction(L, run_job_p);
  lua_pushlightuserdata(L, j);
  if (lua_pcall(L, 1, 0, 1) == LUA_OK) {
    j->ok = 1;
  } else {
    j->ok = 0;
    j->cancelled = __atomic_load_n(&j->cancel, __ATOMIC_RELAXED);
    if (!lua_istable(L, -1)) aio_outcome_wrap_error(L);  /* error in the handler itself (memory) */
    lua_pushcfunction(L, encode_error_p);
    lua_pushlightuserdata(L, j);
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {  /* the error value itself cannot cross */
      lua_pushcfunction(L, encode_fallback_p);
      lua_pushlightuserdata(L, j);
      lua_pushvalue(L, -4);  /* the record */
      lua_pushvalue(L, -4);  /* why it could not cross */
      if (lua_pcall(L, 3, 0, 0) == LUA_OK) {
        lua_settop(L, 0);
        return;
      }
      j->msg.len = 0;
      lua_pushcfunction(L, encode_error_p);
      lua_pushlightuserdata(L, j);
      lua_createtable(L, 2, 0);
      lua_pushstring(L, "error value could not be sent back from the worker");
      lua_rawseti(L, -2, 1);
      lua_pcall(L, 2, 0, 0);
    }
  }
  lua_settop(L, 0);
}

/* Protected: runs the pool's init function in a fresh worker state. */
static int run_init_p(lua_State *L) {
  pool *p = (pool *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  int n = aio_codec_decode(L, p->init.data, p->init.len);
  lua_call(L, n - 1, 0);
  return 0;
}

/* os.exit in a worker's state: exit() from a worker thread would end the process under the
** loop's feet (the main state's finalizers and <close> variables never run, and the other
** threads keep running while atexit handlers tear things down), so it fails the job instead. */
static int worker_os_exit(lua_State *L) {
  return luaL_error(L, "os.exit cannot be called in a worker thread (it would end the whole "
                       "process); return or raise an error and let the main script exit");
}

/* require("aio.console").install(require("aio.repl_c").console_write), run protected. */
static int install_console_p(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "aio.console");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "install");
  lua_getglobal(L, "require");
  lua_pushliteral(L, "aio.repl_c");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "console_write");
  lua_remove(L, -2);
  lua_call(L, 1, 0);
  return 0;
}

/* Routes a fresh worker state's print and io.write through the REPL's console_write, so that
** while a prompt is shown they appear above it instead of inside the line being typed (they
** are written at once otherwise). If that fails the state keeps the standard ones. */
static void install_console(lua_State *L) {
  lua_pushcfunction(L, install_console_p);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) lua_pop(L, 1);
}

/* Replaces os.exit in a fresh worker state. */
static void disable_os_exit(lua_State *L) {
  if (lua_getglobal(L, "os") == LUA_TTABLE) {
    lua_pushcfunction(L, worker_os_exit);
    lua_setfield(L, -2, "exit");
  }
  lua_pop(L, 1);
}

/* Sets the head of the pool's queue (mu held), atomically: idle workers spin on it unlocked. */
static void set_qhead(pool *p, job *j) { __atomic_store_n(&p->qhead, j, __ATOMIC_RELAXED); }

/* A worker thread: make a warm state, run init, then take jobs until the pool closes. */
static void *worker_main(void *arg) {
  aio_worker *w = (aio_worker *)arg;
  pool *p = w->pool;
  lua_State *L = luaL_newstate();
  w->L = L;
  if (L) {
    luaL_openlibs(L);
    aio_openlibs(L);
    disable_os_exit(L);
    install_console(L);
    lua_pushlightuserdata(L, w);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &worker_key);
    w->loop = aio_loop_get(L);  /* made now, so a cancel can always reach it */
    if (p->init.len) {
      lua_pushcfunction(L, aio_outcome_msgh);
      lua_pushcfunction(L, run_init_p);
      lua_pushlightuserdata(L, p);
      if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        const char *msg = lua_tostring(L, -2);
        const char *tb = lua_tostring(L, -1);
        size_t len = strlen(msg ? msg : "?") + strlen(tb ? tb : "") + 64;
        char *s = malloc(len);
        if (s) snprintf(s, len, "thread pool init failed in %s: %s\n%s", w->name,
                        msg ? msg : "(error object)", tb ? tb : "");
        pthread_mutex_lock(&p->mu);
        if (!p->broken) p->broken = s;
        else free(s);
        pthread_mutex_unlock(&p->mu);
      }
      lua_settop(L, 0);
    }
  }
  for (;;) {
    /* Spin a little before sleeping: a job submitted within the next few microseconds is then
    ** picked up without a futex wake-up (the round trip of tiny jobs is dominated by those). */
    for (int spin = 0; spin < SPIN_ROUNDS; spin++) {
      if (__atomic_load_n(&p->qhead, __ATOMIC_RELAXED) || __atomic_load_n(&p->closing, __ATOMIC_RELAXED)) break;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    pthread_mutex_lock(&p->mu);
    while (!p->qhead && !p->closing) {
      p->nidle++;
      pthread_cond_wait(&p->cv, &p->mu);
      p->nidle--;
    }
    job *j = p->qhead;
    if (!j) {  /* closing and nothing left */
      int last = --p->nalive == 0;
      w->loop = NULL;
      pthread_mutex_unlock(&p->mu);
      if (L) lua_close(L);
      w->L = NULL;
      if (last) aio_inbox_post(p->ib, &p->exited);
      return NULL;
    }
    set_qhead(p, j->next);
    if (!p->qhead) p->qtail = NULL;
    p->nqueued--;
    j->state = J_RUNNING;
    j->worker = w->index;
    w->current = j;
    const char *broken = p->broken;
    pthread_mutex_unlock(&p->mu);
    if (!L || broken) {
      j->ok = 0;
      aio_codec_discard(j->msg.data, j->msg.len);  /* the arguments will never be decoded */
      aio_buf_free(&j->msg);
      lua_State *T = luaL_newstate();  /* a scratch state to encode the error */
      if (T) {
        lua_pushstring(T, broken ? broken : "worker state could not be created");
        lua_pushliteral(T, "");
        aio_codec_encode(T, -2, 2, &j->msg, "error", AIO_CODEC_THREAD);
        lua_close(T);
      }
    } else {
      run_job(w, j);
    }
    aio_shared_release_held();  /* locks the job left behind are nobody's now */
    pthread_mutex_lock(&p->mu);
    if (L) lua_sethook(L, NULL, 0, 0);  /* under mu: a late interrupt_job cannot slip in after */
    if (w->loop) __atomic_store_n(&w->loop->cancel_request, 0, __ATOMIC_RELAXED);
    w->current = NULL;
    j->state = J_DONE;
    pthread_mutex_unlock(&p->mu);
    aio_inbox_post(p->ib, &j->d);
  }
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
      else set_qhead(p, j->next);
      if (p->qtail == j) p->qtail = prev;
      p->nqueued--;
    }
    j->state = J_DROPPED;
    pthread_mutex_unlock(&p->mu);
    j->fut = NULL;  /* the core is cancelling it; do not touch it again */
    job_free(L, j);
    return;
  }
  if (j->state == J_RUNNING) interrupt_job(p, j);
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
    set_qhead(p, NULL);
    p->qtail = NULL;
    p->nqueued = 0;
  }
  if (cancel_running)
    for (int i = 0; i < p->size; i++)
      if (p->workers[i].current) interrupt_job(p, p->workers[i].current);
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
    if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
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
  else set_qhead(p, j);
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
  if (inbox_unpost(p->ib, &p->exited)) {
    if (p->closed) { aio_unref(L, p->closedref); p->closed = NULL; }
    aio_inbox_hold(p->ib, -1);
    p->refs--;  /* the notice's reference; the box still holds one, dropped by the caller */
  }
  return p;
}

/* Takes p's finished jobs out of the inbox and frees them unsettled, releasing what their
** results hold. Only for a collected pool: while jobs are in flight the pool's box is kept
** alive (selfref), so that happens only at lua_close, when the loop never runs again. */
static void drop_undelivered(lua_State *L, pool *p) {
  aio_inbox *ib = p->ib;
  aio_delivery *mine = NULL, **mt = &mine, *prev = NULL;
  pthread_mutex_lock(&ib->mu);
  for (aio_delivery **pp = &ib->head; *pp;) {
    aio_delivery *d = *pp;
    if (d->deliver == job_deliver && ((job *)d)->pool == p) {
      *pp = d->next;
      d->next = NULL;
      *mt = d;
      mt = &d->next;
    } else {
      prev = d;
      pp = &d->next;
    }
  }
  ib->tail = prev;
  pthread_mutex_unlock(&ib->mu);
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

/* ---- worker-side helpers ------------------------------------------------------------- */

/* thread_c.current() -> name of the worker running this code ("main" on the loop's state). */
static int l_current(lua_State *L) {
  aio_worker *w = aio_worker_of(L);
  lua_pushstring(L, w ? w->name : "main");
  lua_pushinteger(L, w ? w->index + 1 : 0);
  return 2;
}

/* The CLOCK_REALTIME time `seconds` from now, capped at AIO_FOREVER_S (thread.h). Beyond 10^9 s
** (about 31 years; also inf and NaN) converting the double to time_t overflows, and the wrapped
** deadline lay in the past: recv(math.huge) timed out at once. */
struct timespec aio_deadline_in(double seconds) {
  if (!(seconds < AIO_FOREVER_S)) seconds = AIO_FOREVER_S;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  double whole = (double)(time_t)seconds;
  ts.tv_sec += (time_t)seconds;
  ts.tv_nsec += (long)((seconds - whole) * 1e9);
  if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
  return ts;
}

/* thread_c.sleep(seconds): blocks this OS thread; a cancelled job wakes up with its error. */
static int l_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  aio_worker *w = aio_worker_of(L);
  if (s <= 0) sched_yield();  /* sleep(0): let another thread run (widens races on purpose) */
  while (s > 0) {
    double step = w ? (s < 0.005 ? s : 0.005) : (s < AIO_FOREVER_S ? s : AIO_FOREVER_S);  /* time_t cannot hold inf */
    struct timespec ts = {(time_t)step, (long)((step - (time_t)step) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    s -= step;
    if (w && aio_worker_cancelled(L)) return aio_worker_raise_cancel(L);
  }
  return 0;
}

/* thread_c.cancelled() -> true when the job running here was asked to stop. */
static int l_cancelled(lua_State *L) {
  lua_pushboolean(L, aio_worker_cancelled(L));
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
    {"pool", l_pool}, {"current", l_current}, {"sleep", l_sleep}, {"cancelled", l_cancelled},
    {"cores", l_cores}, {NULL, NULL}};
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
  luaL_getmetatable(L, POOL_MT);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "pool_methods");  /* the facade adds map/close to these */
  lua_pop(L, 1);
  aio_shared_open(L);
  aio_channel_open(L);
  return 1;
}

/*
** thread_worker.c — a thread pool's worker threads: each owns a warm lua_State, runs the pool's
** init function, then takes jobs off the pool's queue (thread.c fills it), runs them and
** encodes their outcome (results, or the error with the worker's traceback) in place of the
** call, for the loop to settle the job's future.
**
** Cancellation reaches into a running job: the loop thread sets the job's `cancel` flag and a
** count hook on the worker's state (lua.c's way of turning SIGINT into an error), which raises a
** cancellation error in the job; thread.sleep and channel waits poll the flag. Code running in
** a coroutine of the job stops when control is back in the job's own function. (A queued job is
** simply taken off the queue, thread.c.)
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
#include "thread_pool.h"
#include "outcome.h"
#include "repl.h"

#define HOOK_COUNT 100
#define SPIN_ROUNDS 300    /* a few microseconds of pause instructions */

static const char worker_key = 0;

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

/* Asks the worker running j to stop (pool->mu held, j running) (thread_pool.h). */
void aio_pool_interrupt(pool *p, job *j) {
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

/* Replaces os.exit in a fresh worker state. */
static void disable_os_exit(lua_State *L) {
  if (lua_getglobal(L, "os") == LUA_TTABLE) {
    lua_pushcfunction(L, worker_os_exit);
    lua_setfield(L, -2, "exit");
  }
  lua_pop(L, 1);
}

/* A worker thread: make a warm state, run init, then take jobs until the pool closes. */
void *aio_pool_worker_main(void *arg) {
  aio_worker *w = (aio_worker *)arg;
  pool *p = w->pool;
  lua_State *L = aio_newstate();
  w->L = L;
  if (L) {
    luaL_openlibs(L);
    aio_openlibs(L);
    disable_os_exit(L);
    aio_console_install(L);
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
    aio_pool_set_qhead(p, j->next);
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
    if (L) lua_sethook(L, NULL, 0, 0);  /* under mu: a late aio_pool_interrupt cannot slip in after */
    if (w->loop) __atomic_store_n(&w->loop->cancel_request, 0, __ATOMIC_RELAXED);
    w->current = NULL;
    j->state = J_DONE;
    pthread_mutex_unlock(&p->mu);
    aio_inbox_post(p->ib, &j->d);
  }
}

/* ---- what a job calls in its worker ------------------------------------------------- */

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

/* Adds current, sleep and cancelled to the module table on top (thread_pool.h). */
void aio_pool_worker_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"current", l_current}, {"sleep", l_sleep}, {"cancelled", l_cancelled}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}

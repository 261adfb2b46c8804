/*
** shared.c — objects shared by reference between the loop's state and worker threads: shared
** cells (thread.shared) and mutexes (thread.mutex); channels (thread.channel) are channel.c's.
**
** Each lives in malloc memory with an atomic reference count; every Lua state holding it has a
** box (aio_share_box) owning one reference, and the codec moves references between states
** (codec.h: aio_share_class). They never cross into another process: that is process.value's job.
*/
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include "aio.h"
#include "codec.h"
#include "thread.h"

#define SHARED_MT "aio.thread.shared"
#define MUTEX_MT "aio.thread.mutex"

/* Locks mu, waiting at most `timeout` seconds (< 0 or NaN: for ever, as a channel's wait). On
** a worker's state the wait goes in 10 ms steps that look at the job's cancel flag: a job stuck
** behind a lock (two jobs holding what the other wants, say) must still stop when cancelled.
** Returns 0, EDEADLK (this thread holds mu, which is error-checking), ETIMEDOUT or ECANCELED
** (the job was cancelled). */
static int lock_waiting(lua_State *L, pthread_mutex_t *mu, double timeout) {
  int rc = pthread_mutex_trylock(mu);
  if (rc != EBUSY) return rc;
  if (!(timeout >= 0)) timeout = -1;  /* NaN made one step of AIO_FOREVER_S, deaf to cancel */
  int inworker = aio_worker_of(L) != NULL;
  if (timeout < 0 && !inworker) return pthread_mutex_lock(mu);
  for (double left = timeout;;) {
    double step = (timeout < 0 || left > 0.01) ? 0.01 : left;
    struct timespec dl = aio_deadline_in(step);
    rc = pthread_mutex_timedlock(mu, &dl);
    if (rc != ETIMEDOUT) return rc;
    if (inworker && aio_worker_cancelled(L)) return ECANCELED;
    if (timeout >= 0 && (left -= step) <= 0) return ETIMEDOUT;
  }
}

/* Makes an error-checking mutex: relocking by its holder reports EDEADLK instead of hanging. */
static void init_errorcheck(pthread_mutex_t *mu) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
  pthread_mutex_init(mu, &a);
  pthread_mutexattr_destroy(&a);
}

/* ---- shared cells -------------------------------------------------------------------- */

enum { C_NIL, C_FALSE, C_TRUE, C_INT, C_FLT, C_ENC };

typedef struct cell {
  int refs;
  pthread_mutex_t mu;
  int type;
  lua_Integer i;
  lua_Number n;
  aio_buf enc;   /* C_ENC: any other value, encoded */
} cell;

static int open_cell_mt(lua_State *L);

static void cell_retain(void *o) { aio_refs_retain(&((cell *)o)->refs); }
/* Drops a reference to a cell; frees it with the last one. */
static void cell_release(void *o) {
  cell *c = (cell *)o;
  if (!aio_refs_release(&c->refs)) return;
  aio_codec_discard(c->enc.data, c->enc.len);
  aio_buf_free(&c->enc);
  pthread_mutex_destroy(&c->mu);
  free(c);
}
static void cell_push(lua_State *L, void *o) { aio_share_push_box(L, o, SHARED_MT, open_cell_mt); }

static const aio_share_class cell_class = {SHARED_MT, 0, cell_retain, cell_release, cell_push,
                                         NULL, NULL};

/* A value prepared outside the lock, to be swapped in under it. */
typedef struct cellval { int type; lua_Integer i; lua_Number n; aio_buf enc; } cellval;

/* Converts the value at idx into a cell value (encoding non-scalars). */
static cellval to_cellval(lua_State *L, int idx) {
  cellval v;
  memset(&v, 0, sizeof v);
  switch (lua_type(L, idx)) {
    case LUA_TNONE: case LUA_TNIL: v.type = C_NIL; break;
    case LUA_TBOOLEAN: v.type = lua_toboolean(L, idx) ? C_TRUE : C_FALSE; break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) { v.type = C_INT; v.i = lua_tointeger(L, idx); }
      else { v.type = C_FLT; v.n = lua_tonumber(L, idx); }
      break;
    default:
      v.type = C_ENC;
      aio_codec_encode(L, idx, 1, &v.enc, "value", AIO_CODEC_THREAD);
  }
  return v;
}

/* Pushes a cellval (consuming its buffer). */
static void push_cellval(lua_State *L, cellval *v) {
  switch (v->type) {
    case C_NIL: lua_pushnil(L); break;
    case C_FALSE: lua_pushboolean(L, 0); break;
    case C_TRUE: lua_pushboolean(L, 1); break;
    case C_INT: lua_pushinteger(L, v->i); break;
    case C_FLT: lua_pushnumber(L, v->n); break;
    default: aio_codec_decode_owned(L, &v->enc);
  }
}

/* Copies the cell's value out (lock held): the copy takes its own references to the
** shareable objects it names, which the decoded boxes will adopt. */
static cellval cell_copy(cell *c) {
  cellval v;
  memset(&v, 0, sizeof v);
  v.type = c->type;
  v.i = c->i;
  v.n = c->n;
  if (c->type == C_ENC) {
    aio_buf_add(&v.enc, c->enc.data, c->enc.len);
    aio_codec_retain(v.enc.data, v.enc.len);
  }
  return v;
}

/* Locks the cell (pending: a prepared value, dropped if this raises). The cell's own update
** function using the cell would relock it from the same thread: the error-checking mutex turns
** that hang into an error. In a job a contended lock is waited for as mutex:lock waits, looking
** at the cancel flag: two jobs whose update functions use each other's cells deadlock, and
** cancelling them must still stop them. */
static void cell_lock(lua_State *L, cell *c, cellval *pending) {
  int rc = lock_waiting(L, &c->mu, -1);
  if (rc == 0) return;
  if (pending) {
    aio_codec_discard(pending->enc.data, pending->enc.len);
    aio_buf_free(&pending->enc);
  }
  if (rc == ECANCELED) aio_worker_raise_cancel(L);
  luaL_error(L, "deadlock: this cell is locked by its own update function (use the value passed to it)");
}

/* thread.shared(value) -> cell */
static int l_shared(lua_State *L) {
  cellval v = to_cellval(L, 1);
  cell *c = calloc(1, sizeof *c);
  if (!c) return luaL_error(L, "out of memory");
  init_errorcheck(&c->mu);
  c->refs = 1;
  c->type = v.type; c->i = v.i; c->n = v.n; c->enc = v.enc;
  cell_push(L, c);
  return 1;
}

/* cell:get() -> a copy of the value */
static int cell_get(lua_State *L) {
  cell *c = (cell *)aio_share_check(L, 1, SHARED_MT);
  cell_lock(L, c, NULL);
  cellval v = cell_copy(c);
  pthread_mutex_unlock(&c->mu);
  push_cellval(L, &v);
  return 1;
}

/* cell:set(value) */
static int cell_set(lua_State *L) {
  cell *c = (cell *)aio_share_check(L, 1, SHARED_MT);
  cellval v = to_cellval(L, 2);
  cell_lock(L, c, &v);
  aio_buf old = c->enc;
  c->type = v.type; c->i = v.i; c->n = v.n; c->enc = v.enc;
  pthread_mutex_unlock(&c->mu);
  aio_codec_discard(old.data, old.len);
  aio_buf_free(&old);
  return 0;
}

/* cell:add(n) -> new value; atomic read-modify-write (integers wrap like Lua's). */
static int cell_add(lua_State *L) {
  cell *c = (cell *)aio_share_check(L, 1, SHARED_MT);
  luaL_checknumber(L, 2);
  int isint = lua_isinteger(L, 2);
  lua_Integer di = isint ? lua_tointeger(L, 2) : 0;
  lua_Number dn = lua_tonumber(L, 2);
  cell_lock(L, c, NULL);
  if (c->type == C_INT && isint) {
    c->i = (lua_Integer)((lua_Unsigned)c->i + (lua_Unsigned)di);
    lua_pushinteger(L, c->i);
  } else if (c->type == C_INT || c->type == C_FLT) {
    c->n = (c->type == C_INT ? (lua_Number)c->i : c->n) + dn;
    c->type = C_FLT;
    lua_pushnumber(L, c->n);
  } else {
    pthread_mutex_unlock(&c->mu);
    return luaL_error(L, "shared:add needs a number in the cell");
  }
  pthread_mutex_unlock(&c->mu);
  return 1;
}

/* Compares the cell's value with the scalar at idx (lock held). */
static int cell_equals(lua_State *L, cell *c, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TNONE: case LUA_TNIL: return c->type == C_NIL;
    case LUA_TBOOLEAN: return c->type == (lua_toboolean(L, idx) ? C_TRUE : C_FALSE);
    case LUA_TNUMBER:
      if (c->type == C_INT) {
        if (lua_isinteger(L, idx)) return c->i == lua_tointeger(L, idx);
        return (lua_Number)c->i == lua_tonumber(L, idx);
      }
      return c->type == C_FLT && c->n == lua_tonumber(L, idx);
    case LUA_TSTRING: {
      if (c->type != C_ENC) return 0;
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      aio_buf tmp = {0};
      aio_codec_encode(L, idx, 1, &tmp, "value", AIO_CODEC_THREAD);
      int eq = tmp.len == c->enc.len && memcmp(tmp.data, c->enc.data, tmp.len) == 0;
      aio_buf_free(&tmp);
      (void)s;
      return eq;
    }
    default: return 0;
  }
}

/* cell:cas(old, new) -> true if the value was old (by value, for scalars) and is now new. */
static int cell_cas(lua_State *L) {
  cell *c = (cell *)aio_share_check(L, 1, SHARED_MT);
  int t = lua_type(L, 2);
  if (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA || t == LUA_TTHREAD)
    return luaL_argerror(L, 2, "cas compares scalars (nil, boolean, number, string)");
  cellval v = to_cellval(L, 3);
  cell_lock(L, c, &v);
  int eq = cell_equals(L, c, 2);
  aio_buf old = {0};
  if (eq) {
    old = c->enc;
    c->type = v.type; c->i = v.i; c->n = v.n; c->enc = v.enc;
  }
  pthread_mutex_unlock(&c->mu);
  if (!eq) old = v.enc;
  aio_codec_discard(old.data, old.len);
  aio_buf_free(&old);
  lua_pushboolean(L, eq);
  return 1;
}

/* Protected part of cell:update: calls fn(value) and converts its result. */
static int update_p(lua_State *L) {
  cellval *out = (cellval *)lua_touserdata(L, 1);
  cellval *in = (cellval *)lua_touserdata(L, 2);
  lua_settop(L, 3);
  push_cellval(L, in);
  lua_call(L, 1, 1);
  *out = to_cellval(L, -1);
  return 0;
}

/* cell:update(fn) -> new value; runs fn(old) with the cell locked (a small critical section). */
static int cell_update(lua_State *L) {
  cell *c = (cell *)aio_share_check(L, 1, SHARED_MT);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  cellval out, in;
  memset(&out, 0, sizeof out);
  cell_lock(L, c, NULL);
  in = cell_copy(c);
  lua_pushcfunction(L, update_p);
  lua_pushlightuserdata(L, &out);
  lua_pushlightuserdata(L, &in);
  lua_pushvalue(L, 2);
  int st = lua_pcall(L, 3, 0, 0);
  if (in.enc.len) aio_codec_discard(in.enc.data, in.enc.len);  /* not decoded after all */
  aio_buf_free(&in.enc);
  if (st == LUA_OK) {
    aio_buf old = c->enc;
    c->type = out.type; c->i = out.i; c->n = out.n; c->enc = out.enc;
    cellval ret = cell_copy(c);
    pthread_mutex_unlock(&c->mu);
    aio_codec_discard(old.data, old.len);
    aio_buf_free(&old);
    push_cellval(L, &ret);
    return 1;
  }
  pthread_mutex_unlock(&c->mu);
  return lua_error(L);
}

static int cell_gc(lua_State *L) { return aio_share_box_gc(L, &cell_class); }

/* __tostring of cells. */
static int cell_tostring(lua_State *L) {
  aio_share_box *b = (aio_share_box *)luaL_checkudata(L, 1, SHARED_MT);
  lua_pushfstring(L, "aio.thread.shared: %p", b->obj);
  return 1;
}

/* Makes the cells' metatable (left on the stack). */
static int open_cell_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"get", cell_get}, {"set", cell_set}, {"add", cell_add}, {"cas", cell_cas},
    {"update", cell_update}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", cell_gc}, {"__tostring", cell_tostring}, {NULL, NULL}};
  return aio_share_new_mt(L, &cell_class, methods, meta);
}

/* ---- mutexes ------------------------------------------------------------------------- */

typedef struct mutex {
  int refs;
  pthread_mutex_t mu;  /* error-checking: relocking by the holder reports a deadlock */
  struct mutex *held_next;  /* in the holder thread's `held` list (touched by the holder only) */
  const void *loop_holder;  /* loop thread only: who holds it there (loop_owner: tasks share a thread) */
} mutex;

/* The mutexes this OS thread holds, each with a reference. A worker thread outlives its jobs:
** a lock a job leaves behind (an error or a cancellation without `<close>`) would otherwise be
** held by nobody, for good, and the worker's next job relocking it would see a "deadlock". */
static _Thread_local mutex *held;

static int open_mutex_mt(lua_State *L);
static void mutex_retain(void *o) { aio_refs_retain(&((mutex *)o)->refs); }
/* Drops a reference to a mutex; destroys it with the last one. */
static void mutex_release(void *o) {
  mutex *m = (mutex *)o;
  if (!aio_refs_release(&m->refs)) return;
  pthread_mutex_destroy(&m->mu);
  free(m);
}
static void mutex_push(lua_State *L, void *o) { aio_share_push_box(L, o, MUTEX_MT, open_mutex_mt); }
static const aio_share_class mutex_class = {MUTEX_MT, 0, mutex_retain, mutex_release,
                                          mutex_push, NULL, NULL};

/* Records that this thread now holds m. */
static void held_add(mutex *m) {
  mutex_retain(m);
  m->held_next = held;
  held = m;
}

/* Takes m out of this thread's list, before unlocking it (its reference is then the caller's
** to drop): once m is unlocked, another thread that takes it links it into its own list
** (m->held_next), and a look at m->held_next from here would splice that list into this one.
** Returns 1 if m was there, that is if this thread holds it. */
static int held_take(mutex *m) {
  for (mutex **pp = &held; *pp; pp = &(*pp)->held_next)
    if (*pp == m) {
      *pp = m->held_next;
      m->held_next = NULL;
      return 1;
    }
  return 0;
}

/* Unlocks every mutex this thread still holds; returns how many (thread.h). */
int aio_shared_release_held(void) {
  int n = 0;
  while (held) {
    mutex *m = held;
    held = m->held_next;
    pthread_mutex_unlock(&m->mu);
    mutex_release(m);
    n++;
  }
  return n;
}

/* thread.mutex() -> mutex */
static int l_mutex(lua_State *L) {
  mutex *m = calloc(1, sizeof *m);
  if (!m) return luaL_error(L, "out of memory");
  init_errorcheck(&m->mu);
  m->refs = 1;
  mutex_push(L, m);
  return 1;
}

/* Who takes a mutex on the loop's thread, where tasks share the thread pthread sees: the task
** running L (also from a plain coroutine it resumes), else L itself. */
static const void *loop_owner(lua_State *L) {
  aio_task *t = aio_current_task(L);
  return t ? (const void *)t : (const void *)L;
}

/* m (at 1) was just locked by L: records its holder and returns m (lock and try_lock). */
static int mutex_taken(lua_State *L, mutex *m) {
  held_add(m);
  if (!aio_worker_of(L)) m->loop_holder = loop_owner(L);
  lua_settop(L, 1);
  return 1;
}

/* m:lock([timeout]) -> m (usable as `local _ <close> = m:lock()`), or nil, "timeout".
** In a worker job the wait polls the cancel flag, so a cancelled job does not stay stuck. */
static int mutex_lock(lua_State *L) {
  mutex *m = (mutex *)aio_share_check(L, 1, MUTEX_MT);
  double timeout = luaL_optnumber(L, 2, -1);
  int rc = lock_waiting(L, &m->mu, timeout);
  if (rc == ECANCELED) return aio_worker_raise_cancel(L);
  if (rc == EDEADLK) return luaL_error(L, "deadlock: this thread already holds the mutex");
  if (rc == ETIMEDOUT) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  if (rc != 0) return luaL_error(L, "mutex lock: %s", strerror(rc));
  return mutex_taken(L, m);
}

/* m:try_lock() -> m or false */
static int mutex_trylock(lua_State *L) {
  mutex *m = (mutex *)aio_share_check(L, 1, MUTEX_MT);
  int rc = pthread_mutex_trylock(&m->mu);
  if (rc == 0) return mutex_taken(L, m);
  lua_pushboolean(L, 0);
  return 1;
}

/* m:unlock() (also the __close metamethod) */
static int mutex_unlock(lua_State *L) {
  mutex *m = (mutex *)aio_share_check(L, 1, MUTEX_MT);
  int onloop = !aio_worker_of(L);
  /* tasks share the loop's thread, which pthread sees as the owner: tell them apart here */
  if (onloop && m->loop_holder && m->loop_holder != loop_owner(L))
    return luaL_error(L, "unlock of a mutex this task does not hold");
  if (!held_take(m)) return luaL_error(L, "unlock of a mutex this thread does not hold");
  if (onloop) m->loop_holder = NULL;
  pthread_mutex_unlock(&m->mu);
  mutex_release(m);  /* the list's reference (the box at 1 holds another) */
  return 0;
}

/* m:_held_here() -> true when the coroutine calling it on the loop holds the mutex (the facade's
** loop-side lock tells a relock by the holder, an error, from a wait for another task). */
static int mutex_held_here(lua_State *L) {
  mutex *m = (mutex *)aio_share_check(L, 1, MUTEX_MT);
  lua_pushboolean(L, !aio_worker_of(L) && m->loop_holder == loop_owner(L));
  return 1;
}

static int mutex_gc(lua_State *L) { return aio_share_box_gc(L, &mutex_class); }

/* Makes the mutexes' metatable (left on the stack). */
static int open_mutex_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"lock", mutex_lock}, {"try_lock", mutex_trylock}, {"unlock", mutex_unlock},
    {"_held_here", mutex_held_here}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", mutex_gc}, {"__close", mutex_unlock}, {NULL, NULL}};
  return aio_share_new_mt(L, &mutex_class, methods, meta);
}

/* Adds shared and mutex to the module table on top of the stack (thread.h). */
void aio_shared_open(lua_State *L) {
  open_cell_mt(L);
  open_mutex_mt(L);
  lua_pop(L, 2);
  lua_pushcfunction(L, l_shared);
  lua_setfield(L, -2, "shared");
  lua_pushcfunction(L, l_mutex);
  lua_setfield(L, -2, "mutex");
}

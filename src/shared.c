/*
** shared.c — objects shared by reference between the loop's state and worker threads:
** shared cells (thread.shared), mutexes (thread.mutex) and channels (thread.channel).
**
** Each lives in malloc memory with an atomic reference count; every Lua state holding it has a
** box (aio_share_box) owning one reference, and the codec moves references between states
** (codec.h: aio_share_class). They never cross into another process: that is process.value's job.
**
** A channel is used by worker threads with blocking waits (condition variables) and by the
** loop's state without blocking: a loop-side receiver (or a sender on a full channel) parks a
** future, and the thread that changes the channel posts a notification to the loop's inbox,
** whose callback serves the parked futures in FIFO order.
*/
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <pthread.h>
#include "aio.h"
#include "codec.h"
#include "thread.h"

#define SHARED_MT "aio.thread.shared"
#define MUTEX_MT "aio.thread.mutex"
#define CHANNEL_MT "aio.thread.channel"

static void retain_count(int *refs) { __atomic_add_fetch(refs, 1, __ATOMIC_RELAXED); }
static int release_count(int *refs) { return __atomic_sub_fetch(refs, 1, __ATOMIC_ACQ_REL) == 0; }

/* Pushes a new box for obj of class mt (adopting one reference). */
static void push_box(lua_State *L, void *obj, const char *mt, int (*open_mt)(lua_State *L)) {
  aio_share_box *b = (aio_share_box *)lua_newuserdatauv(L, sizeof *b, 0);
  b->obj = obj;
  if (luaL_getmetatable(L, mt) != LUA_TTABLE) {
    lua_pop(L, 1);
    open_mt(L);
  }
  lua_setmetatable(L, -2);
}

/* Checks that idx is a live box of metatable mt and returns its object. */
static void *check_box(lua_State *L, int idx, const char *mt) {
  aio_share_box *b = (aio_share_box *)luaL_checkudata(L, idx, mt);
  if (!b->obj) luaL_error(L, "attempt to use a released %s", mt);
  return b->obj;
}

/* Absolute CLOCK_REALTIME deadline `seconds` from now. Beyond 10^9 s (about 31 years; also
** inf and NaN) it is 10^9 s: converting a larger double to time_t overflows, and the wrapped
** deadline lay in the past, so recv(math.huge) timed out at once. */
static struct timespec deadline_in(double seconds) {
  if (!(seconds < AIO_FOREVER_S)) seconds = AIO_FOREVER_S;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  double whole = (double)(time_t)seconds;
  ts.tv_sec += (time_t)seconds;
  ts.tv_nsec += (long)((seconds - whole) * 1e9);
  if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
  return ts;
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

static void cell_retain(void *o) { retain_count(&((cell *)o)->refs); }
/* Drops a reference to a cell; frees it with the last one. */
static void cell_release(void *o) {
  cell *c = (cell *)o;
  if (!release_count(&c->refs)) return;
  aio_codec_discard(c->enc.data, c->enc.len);
  aio_buf_free(&c->enc);
  pthread_mutex_destroy(&c->mu);
  free(c);
}
static void cell_push(lua_State *L, void *o) { push_box(L, o, SHARED_MT, open_cell_mt); }

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
** function using the cell would relock it from the same thread: an error-checking mutex turns
** that hang into an error. In a job a contended lock is waited for in 10 ms steps that look at
** the cancel flag, as mutex:lock does: two jobs whose update functions use each other's cells
** deadlock, and cancelling them must still stop them. */
static void cell_lock(lua_State *L, cell *c, cellval *pending) {
  int rc = pthread_mutex_trylock(&c->mu);
  if (rc == EBUSY && !aio_worker_of(L)) rc = pthread_mutex_lock(&c->mu);
  int cancelled = 0;
  while (rc == EBUSY || rc == ETIMEDOUT) {
    if ((cancelled = aio_worker_cancelled(L))) break;
    struct timespec dl = deadline_in(0.01);
    rc = pthread_mutex_timedlock(&c->mu, &dl);
  }
  if (rc == 0) return;
  if (pending) {
    aio_codec_discard(pending->enc.data, pending->enc.len);
    aio_buf_free(&pending->enc);
  }
  if (cancelled) aio_worker_raise_cancel(L);
  luaL_error(L, "deadlock: this cell is locked by its own update function (use the value passed to it)");
}

/* thread.shared(value) -> cell */
static int l_shared(lua_State *L) {
  cellval v = to_cellval(L, 1);
  cell *c = calloc(1, sizeof *c);
  if (!c) return luaL_error(L, "out of memory");
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
  pthread_mutex_init(&c->mu, &a);
  pthread_mutexattr_destroy(&a);
  c->refs = 1;
  c->type = v.type; c->i = v.i; c->n = v.n; c->enc = v.enc;
  cell_push(L, c);
  return 1;
}

/* cell:get() -> a copy of the value */
static int cell_get(lua_State *L) {
  cell *c = (cell *)check_box(L, 1, SHARED_MT);
  cell_lock(L, c, NULL);
  cellval v = cell_copy(c);
  pthread_mutex_unlock(&c->mu);
  push_cellval(L, &v);
  return 1;
}

/* cell:set(value) */
static int cell_set(lua_State *L) {
  cell *c = (cell *)check_box(L, 1, SHARED_MT);
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
  cell *c = (cell *)check_box(L, 1, SHARED_MT);
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
  cell *c = (cell *)check_box(L, 1, SHARED_MT);
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
  cell *c = (cell *)check_box(L, 1, SHARED_MT);
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

/* __gc of boxes: drops the box's reference. */
static int box_gc(lua_State *L, const aio_share_class *cls) {
  aio_share_box *b = (aio_share_box *)lua_touserdata(L, 1);
  if (b->obj) {
    cls->release(b->obj);
    b->obj = NULL;
  }
  return 0;
}

static int cell_gc(lua_State *L) { return box_gc(L, &cell_class); }

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
  luaL_newmetatable(L, SHARED_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, cell_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, cell_tostring);
  lua_setfield(L, -2, "__tostring");
  aio_share_register(L, &cell_class);
  return 1;
}

/* ---- mutexes ------------------------------------------------------------------------- */

typedef struct mutex {
  int refs;
  pthread_mutex_t mu;  /* error-checking: relocking by the holder reports a deadlock */
  struct mutex *held_next;  /* in the holder thread's `held` list (touched by the holder only) */
  lua_State *loop_holder;   /* loop thread only: the coroutine on the loop that holds it */
} mutex;

/* The mutexes this OS thread holds, each with a reference. A worker thread outlives its jobs:
** a lock a job leaves behind (an error or a cancellation without `<close>`) would otherwise be
** held by nobody, for good, and the worker's next job relocking it would see a "deadlock". */
static _Thread_local mutex *held;

static int open_mutex_mt(lua_State *L);
static void mutex_retain(void *o) { retain_count(&((mutex *)o)->refs); }
/* Drops a reference to a mutex; destroys it with the last one. */
static void mutex_release(void *o) {
  mutex *m = (mutex *)o;
  if (!release_count(&m->refs)) return;
  pthread_mutex_destroy(&m->mu);
  free(m);
}
static void mutex_push(lua_State *L, void *o) { push_box(L, o, MUTEX_MT, open_mutex_mt); }
static const aio_share_class mutex_class = {MUTEX_MT, 0, mutex_retain, mutex_release,
                                          mutex_push, NULL, NULL};

/* Records that this thread now holds m. */
static void held_add(mutex *m) {
  mutex_retain(m);
  m->held_next = held;
  held = m;
}

/* Forgets m from this thread's list (after unlocking it). */
static void held_remove(mutex *m) {
  for (mutex **pp = &held; *pp; pp = &(*pp)->held_next)
    if (*pp == m) {
      *pp = m->held_next;
      mutex_release(m);
      return;
    }
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
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
  pthread_mutex_init(&m->mu, &a);
  pthread_mutexattr_destroy(&a);
  m->refs = 1;
  mutex_push(L, m);
  return 1;
}

/* m:lock([timeout]) -> m (usable as `local _ <close> = m:lock()`), or nil, "timeout".
** In a worker job the wait polls the cancel flag, so a cancelled job does not stay stuck. */
static int mutex_lock(lua_State *L) {
  mutex *m = (mutex *)check_box(L, 1, MUTEX_MT);
  double timeout = luaL_optnumber(L, 2, -1);
  int inworker = aio_worker_of(L) != NULL;
  int rc;
  if (timeout < 0 && !inworker) {
    rc = pthread_mutex_lock(&m->mu);
  } else {
    double left = timeout;
    for (;;) {
      double step = (timeout < 0 || left > 0.01) ? 0.01 : left;
      struct timespec dl = deadline_in(step);
      rc = pthread_mutex_timedlock(&m->mu, &dl);
      if (rc != ETIMEDOUT) break;
      if (inworker && aio_worker_cancelled(L)) return aio_worker_raise_cancel(L);
      if (timeout >= 0 && (left -= step) <= 0) break;
    }
  }
  if (rc == EDEADLK) return luaL_error(L, "deadlock: this thread already holds the mutex");
  if (rc == ETIMEDOUT) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  if (rc != 0) return luaL_error(L, "mutex lock: %s", strerror(rc));
  held_add(m);
  if (!inworker) m->loop_holder = L;
  lua_settop(L, 1);
  return 1;
}

/* m:try_lock() -> m or false */
static int mutex_trylock(lua_State *L) {
  mutex *m = (mutex *)check_box(L, 1, MUTEX_MT);
  int rc = pthread_mutex_trylock(&m->mu);
  if (rc == 0) {
    held_add(m);
    if (!aio_worker_of(L)) m->loop_holder = L;
    lua_settop(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* m:unlock() (also the __close metamethod) */
static int mutex_unlock(lua_State *L) {
  mutex *m = (mutex *)check_box(L, 1, MUTEX_MT);
  int onloop = !aio_worker_of(L);
  /* tasks share the loop's thread, which pthread sees as the owner: tell them apart here */
  if (onloop && m->loop_holder && m->loop_holder != L)
    return luaL_error(L, "unlock of a mutex this task does not hold");
  int rc = pthread_mutex_unlock(&m->mu);
  if (rc == EPERM) return luaL_error(L, "unlock of a mutex this thread does not hold");
  if (rc == 0) {
    held_remove(m);
    if (onloop) m->loop_holder = NULL;
  }
  return 0;
}

/* m:_held_here() -> true when the coroutine calling it on the loop holds the mutex (the facade's
** loop-side lock tells a relock by the holder, an error, from a wait for another task). */
static int mutex_held_here(lua_State *L) {
  mutex *m = (mutex *)check_box(L, 1, MUTEX_MT);
  lua_pushboolean(L, !aio_worker_of(L) && m->loop_holder == L);
  return 1;
}

static int mutex_gc(lua_State *L) { return box_gc(L, &mutex_class); }

/* Makes the mutexes' metatable (left on the stack). */
static int open_mutex_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"lock", mutex_lock}, {"try_lock", mutex_trylock}, {"unlock", mutex_unlock},
    {"_held_here", mutex_held_here}, {NULL, NULL}};
  luaL_newmetatable(L, MUTEX_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, mutex_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, mutex_unlock);
  lua_setfield(L, -2, "__close");
  aio_share_register(L, &mutex_class);
  return 1;
}

/* ---- channels ------------------------------------------------------------------------ */

typedef struct msg {
  struct msg *next;
  aio_buf b;
} msg;

/* A future parked by the loop's state (loop thread only). */
typedef struct lwaiter {
  struct lwaiter *next, *prev;
  struct chan *ch;
  aio_future *fut;
  int ref;
  int is_send;
  aio_buf b;   /* is_send: the message waiting for room */
} lwaiter;

typedef struct chan {
  int refs;
  pthread_mutex_t mu;
  pthread_cond_t cv;        /* broadcast on every change */
  msg *head, *tail;
  int count, cap;           /* cap 0: unbounded */
  int closed;
  /* loop side */
  aio_inbox *ib;            /* set when the loop first parks a future */
  int loop_waiting;         /* guarded by mu: the loop has parked futures */
  int notify_posted;        /* guarded by mu */
  aio_delivery notify;
  lwaiter *whead, *wtail;   /* loop thread only */
} chan;

static int open_chan_mt(lua_State *L);
static void chan_retain(void *o) { retain_count(&((chan *)o)->refs); }
/* Drops a reference to a channel; frees it and its messages with the last one. */
static void chan_release(void *o) {
  chan *c = (chan *)o;
  if (!release_count(&c->refs)) return;
  for (msg *m = c->head, *n; m; m = n) {
    n = m->next;
    aio_codec_discard(m->b.data, m->b.len);
    aio_buf_free(&m->b);
    free(m);
  }
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}
static void chan_push(lua_State *L, void *o) { push_box(L, o, CHANNEL_MT, open_chan_mt); }
static const aio_share_class chan_class = {CHANNEL_MT, 0, chan_retain, chan_release, chan_push,
                                         NULL, NULL};

/* Wakes the loop if it has parked futures (mu held). */
static void chan_changed(chan *c) {
  pthread_cond_broadcast(&c->cv);
  if (c->loop_waiting && !c->notify_posted) {
    c->notify_posted = 1;
    chan_retain(c);  /* the delivery holds the channel */
    aio_inbox_post(c->ib, &c->notify);
  }
}

/* Appends a message (mu held). */
static void chan_append(chan *c, msg *m) {
  m->next = NULL;
  if (c->tail) c->tail->next = m;
  else c->head = m;
  c->tail = m;
  c->count++;
}

/* Removes the oldest message, or returns NULL (mu held). */
static msg *chan_take(chan *c) {
  msg *m = c->head;
  if (m) {
    c->head = m->next;
    if (!c->head) c->tail = NULL;
    c->count--;
  }
  return m;
}

/* Pushes the decoded message and frees it. */
static void push_msg(lua_State *L, msg *m) {
  aio_buf b = m->b;
  free(m);
  if (aio_codec_decode_owned(L, &b) == 0) lua_pushnil(L);
}

/* Unlinks a parked loop-side waiter (mu held). */
static void unlink_waiter(chan *c, lwaiter *w) {
  if (w->prev) w->prev->next = w->next;
  else c->whead = w->next;
  if (w->next) w->next->prev = w->prev;
  else c->wtail = w->prev;
  w->next = w->prev = NULL;
}

/* Frees a parked waiter (loop thread). */
static void free_waiter(lua_State *L, lwaiter *w) {
  if (w->b.len) aio_codec_discard(w->b.data, w->b.len);
  aio_buf_free(&w->b);
  if (w->fut) w->fut->on_cancel = NULL;
  aio_unref(L, w->ref);
  aio_inbox_hold(w->ch->ib, -1);
  free(w);
}

/* Recomputes loop_waiting (mu held). */
static void chan_update_waiting(chan *c) { c->loop_waiting = c->whead != NULL; }

/* on_cancel of a parked future: forget the waiter (its message, if a send, is dropped). */
static void waiter_on_cancel(lua_State *L, aio_future *f, void *ud) {
  lwaiter *w = (lwaiter *)ud;
  chan *c = w->ch;
  (void)f;
  pthread_mutex_lock(&c->mu);
  unlink_waiter(c, w);
  chan_update_waiting(c);
  pthread_mutex_unlock(&c->mu);
  w->fut = NULL;
  free_waiter(L, w);
}

/* The oldest parked loop-side waiter of one kind (mu held). Receivers and senders each keep
** FIFO order among themselves but must not queue behind each other: a sender parked on a full
** channel ahead of a receiver would otherwise block the very receiver that makes room. */
static lwaiter *first_waiter(chan *c, int is_send) {
  lwaiter *w = c->whead;
  while (w && w->is_send != is_send) w = w->next;
  return w;
}

/* Serves the loop's parked futures (receivers first, each kind in FIFO order) as far as the
** channel allows. */
static void chan_serve(lua_State *L, chan *c) {
  for (;;) {
    pthread_mutex_lock(&c->mu);
    lwaiter *w = first_waiter(c, 0);
    msg *m = NULL;
    int ok = 0;
    if (w && (c->count > 0 || c->closed)) {
      m = chan_take(c);
      ok = 1;
    } else if ((w = first_waiter(c, 1)) && (c->closed || c->cap == 0 || c->count < c->cap)) {
      ok = 1;
      if (!c->closed) {
        msg *nm = calloc(1, sizeof *nm);
        if (nm) {
          nm->b = w->b;
          memset(&w->b, 0, sizeof w->b);
          chan_append(c, nm);
        }
      }
    }
    if (!ok) {
      chan_update_waiting(c);
      pthread_mutex_unlock(&c->mu);
      return;
    }
    unlink_waiter(c, w);
    chan_update_waiting(c);
    if (w->is_send || m) pthread_cond_broadcast(&c->cv);
    int closed = c->closed;
    pthread_mutex_unlock(&c->mu);
    if (w->is_send) {
      if (closed) {
        lua_pushliteral(L, "send on a closed channel");
        aio_future_reject(L, w->fut);
      } else {
        lua_pushboolean(L, 1);
        aio_future_resolve(L, w->fut, 1);
      }
    } else if (m) {
      push_msg(L, m);
      aio_future_resolve(L, w->fut, 1);
    } else {  /* closed and drained */
      lua_pushnil(L);
      lua_pushliteral(L, "closed");
      aio_future_resolve(L, w->fut, 2);
    }
    free_waiter(L, w);
  }
}

/* Inbox delivery: a worker changed a channel the loop waits on. */
static void chan_notified(lua_State *L, aio_delivery *d) {
  chan *c = (chan *)((char *)d - offsetof(chan, notify));
  pthread_mutex_lock(&c->mu);
  c->notify_posted = 0;
  pthread_mutex_unlock(&c->mu);
  chan_serve(L, c);
  chan_release(c);
}

/* thread.channel([capacity]) -> channel */
static int l_channel(lua_State *L) {
  lua_Integer cap = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, cap >= 0 && cap <= 1 << 30, 1, "capacity out of range");
  chan *c = calloc(1, sizeof *c);
  if (!c) return luaL_error(L, "out of memory");
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  c->refs = 1;
  c->cap = (int)cap;
  c->notify.deliver = chan_notified;
  chan_push(L, c);
  return 1;
}

/* Parks a loop-side future on the channel and awaits it (tail call). */
static int chan_park(lua_State *L, chan *c, int is_send, aio_buf *b) {
  lwaiter *w = calloc(1, sizeof *w);
  if (!w) return luaL_error(L, "out of memory");
  w->ch = c;
  w->is_send = is_send;
  if (b) w->b = *b;
  w->fut = aio_future_new(L);
  w->ref = aio_ref(L, -1);
  w->fut->on_cancel = waiter_on_cancel;
  w->fut->on_cancel_ud = w;
  if (!c->ib) c->ib = aio_inbox_get(L);
  aio_inbox_hold(c->ib, +1);
  pthread_mutex_lock(&c->mu);
  w->prev = c->wtail;
  if (c->wtail) c->wtail->next = w;
  else c->whead = w;
  c->wtail = w;
  c->loop_waiting = 1;
  pthread_mutex_unlock(&c->mu);
  /* The caller saw the channel full (or empty) before taking the lock again: a worker may have
  ** changed it in between, while no waiter was parked to be notified, and then blocked itself
  ** (both sides waiting forever, 1 run in 20 of the back-pressure spec). Serving now settles
  ** this waiter at once if the channel already allows it. */
  chan_serve(L, c);
  return aio_await_own(L, lua_gettop(L));
}

/* True if a is earlier than b. */
static int ts_before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* A worker's wait on the channel (mu held): at most 10 ms, so that a cancelled job notices.
** Returns 1 once the overall deadline dl (NULL: none) has passed. */
static int chan_wait(chan *c, const struct timespec *dl) {
  struct timespec step = deadline_in(0.01);
  if (dl && ts_before(dl, &step)) step = *dl;
  pthread_cond_timedwait(&c->cv, &c->mu, &step);
  if (!dl) return 0;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return !ts_before(&now, dl);
}

/* Frees a message that will not be delivered. */
static void free_msg(msg *m) {
  aio_codec_discard(m->b.data, m->b.len);
  aio_buf_free(&m->b);
  free(m);
}

/* ch:send(value [, timeout]) -> true | nil, "timeout". A worker blocks while the channel is
** full; the loop's state awaits instead (timeouts there are the facade's business; timeout 0
** polls without waiting, as recv's does). */
static int chan_send(lua_State *L) {
  chan *c = (chan *)check_box(L, 1, CHANNEL_MT);
  double timeout = luaL_optnumber(L, 3, -1);
  lua_settop(L, 2);
  aio_buf b = {0};
  aio_codec_encode(L, 2, 1, &b, "value", AIO_CODEC_THREAD);  /* may raise: nothing linked yet */
  msg *m = calloc(1, sizeof *m);
  if (!m) { aio_codec_discard(b.data, b.len); aio_buf_free(&b); return luaL_error(L, "out of memory"); }
  m->b = b;
  int inworker = aio_worker_of(L) != NULL;
  struct timespec dl = deadline_in(timeout < 0 ? 0 : timeout);
  pthread_mutex_lock(&c->mu);
  if (!inworker && timeout != 0 && !c->closed &&
      (first_waiter(c, 1) || (c->cap && c->count >= c->cap))) {
    pthread_mutex_unlock(&c->mu);
    free(m);
    return chan_park(L, c, 1, &b);
  }
  while (!c->closed && c->cap && c->count >= c->cap) {
    int expired = chan_wait(c, timeout >= 0 ? &dl : NULL);
    if (aio_worker_cancelled(L)) {
      pthread_mutex_unlock(&c->mu);
      free_msg(m);
      return aio_worker_raise_cancel(L);
    }
    if (expired && c->count >= c->cap) {
      pthread_mutex_unlock(&c->mu);
      free_msg(m);
      lua_pushnil(L);
      lua_pushliteral(L, "timeout");
      return 2;
    }
  }
  if (c->closed) {
    pthread_mutex_unlock(&c->mu);
    free_msg(m);
    return luaL_error(L, "send on a closed channel");
  }
  chan_append(c, m);
  chan_changed(c);
  int serve_here = !inworker && c->whead;  /* a loop-side receiver is parked */
  pthread_mutex_unlock(&c->mu);
  if (serve_here) chan_serve(L, c);
  lua_pushboolean(L, 1);
  return 1;
}

/* ch:recv([timeout]) -> value | nil, "closed" | nil, "timeout". A worker blocks; the loop's
** state awaits (timeout 0 polls without waiting). */
static int chan_recv(lua_State *L) {
  chan *c = (chan *)check_box(L, 1, CHANNEL_MT);
  double timeout = luaL_optnumber(L, 2, -1);
  int inworker = aio_worker_of(L) != NULL;
  struct timespec dl = deadline_in(timeout < 0 ? 0 : timeout);
  pthread_mutex_lock(&c->mu);
  if (!inworker && timeout != 0 && (first_waiter(c, 0) || (c->count == 0 && !c->closed))) {
    pthread_mutex_unlock(&c->mu);
    return chan_park(L, c, 0, NULL);
  }
  while (inworker && c->count == 0 && !c->closed) {
    int expired = chan_wait(c, timeout >= 0 ? &dl : NULL);
    if (aio_worker_cancelled(L)) {
      pthread_mutex_unlock(&c->mu);
      return aio_worker_raise_cancel(L);
    }
    if (expired) break;
  }
  msg *m = chan_take(c);
  int closed = c->closed;
  if (m) chan_changed(c);
  int serve_here = m && !inworker && c->whead;
  pthread_mutex_unlock(&c->mu);
  if (serve_here) chan_serve(L, c);
  if (!m) {
    lua_pushnil(L);
    lua_pushstring(L, closed ? "closed" : "timeout");
    return 2;
  }
  push_msg(L, m);
  return 1;
}

/* ch:close(): no more sends; receivers drain what is left, then get nil, "closed". */
static int chan_close(lua_State *L) {
  chan *c = (chan *)check_box(L, 1, CHANNEL_MT);
  pthread_mutex_lock(&c->mu);
  c->closed = 1;
  chan_changed(c);
  int serve_here = aio_worker_of(L) == NULL && c->whead;
  pthread_mutex_unlock(&c->mu);
  if (serve_here) chan_serve(L, c);
  return 0;
}

/* #ch -> messages waiting */
static int chan_len(lua_State *L) {
  chan *c = (chan *)check_box(L, 1, CHANNEL_MT);
  pthread_mutex_lock(&c->mu);
  lua_pushinteger(L, c->count);
  pthread_mutex_unlock(&c->mu);
  return 1;
}

static int chan_gc(lua_State *L) { return box_gc(L, &chan_class); }

/* Makes the channels' metatable (left on the stack). */
static int open_chan_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"send", chan_send}, {"recv", chan_recv}, {"close", chan_close}, {"len", chan_len},
    {NULL, NULL}};
  luaL_newmetatable(L, CHANNEL_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, chan_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, chan_len);
  lua_setfield(L, -2, "__len");
  aio_share_register(L, &chan_class);
  return 1;
}

/* Adds shared, mutex and channel to the module table on top of the stack. */
int aio_shared_open(lua_State *L) {
  open_cell_mt(L);
  open_mutex_mt(L);
  open_chan_mt(L);
  lua_pop(L, 3);
  lua_pushcfunction(L, l_shared);
  lua_setfield(L, -2, "shared");
  lua_pushcfunction(L, l_mutex);
  lua_setfield(L, -2, "mutex");
  lua_pushcfunction(L, l_channel);
  lua_setfield(L, -2, "channel");
  return 0;
}

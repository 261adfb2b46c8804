/*
** timer.c — the loop's timer heap: every sleep and timer of a loop lives in one binary
** min-heap keyed by (due, seq), behind a single handle (a nanosecond timerfd on Linux, a
** uv_timer_t elsewhere). A sleeping task costs one heap slot (a pointer) instead of a libuv
** handle, and equal deadlines fire in FIFO order thanks to seq.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <fcntl.h>
#include <sys/timerfd.h>
#include <unistd.h>
#endif
#include "aio.h"
#include "scheduler.h"

/* Orders two entries: earlier deadline first, then insertion order. */
static int timed_less(const aio_timed *a, const aio_timed *b) {
  return a->due < b->due || (a->due == b->due && (int32_t)(a->seq - b->seq) < 0);
}

/* Puts entry t at heap position i. */
static void heap_place(aio_loop *loop, int i, aio_timed *t) {
  loop->heap[i] = t;
  t->heap_idx = i;
}

/* Moves the entry at i up until its parent is smaller. */
static void heap_up(aio_loop *loop, int i) {
  aio_timed *t = loop->heap[i];
  while (i > 0) {
    int parent = (i - 1) / 2;
    if (!timed_less(t, loop->heap[parent])) break;
    heap_place(loop, i, loop->heap[parent]);
    i = parent;
  }
  heap_place(loop, i, t);
}

/* Moves the entry at i down until both children are larger. */
static void heap_down(aio_loop *loop, int i) {
  aio_timed *t = loop->heap[i];
  for (;;) {
    int child = 2 * i + 1;
    if (child >= loop->heap_len) break;
    if (child + 1 < loop->heap_len && timed_less(loop->heap[child + 1], loop->heap[child])) child++;
    if (!timed_less(loop->heap[child], t)) break;
    heap_place(loop, i, loop->heap[child]);
    i = child;
  }
  heap_place(loop, i, t);
}

#ifdef __linux__
/* The heap's timerfd became readable: fire what is due. */
static void on_heap_timer(uv_poll_t *handle, int status, int events) {
  aio_loop *loop = (aio_loop *)handle->data;
  uint64_t expirations;
  (void)status, (void)events;
  /* Drain the expiry count; EAGAIN only means a re-arm raced the wake-up, and running the
  ** heap is harmless then (it fires nothing that is not due). */
  while (read(loop->heap_fd, &expirations, sizeof expirations) < 0 && errno == EINTR) {}
  aio_timers_run(loop);
  aio_loop_wake(loop);  /* whoever this woke (a main-thread await) must not wait for the poll */
}

/* Arms the timerfd for the absolute monotonic time due (uv_hrtime's clock), in ns. */
static void heap_arm(aio_loop *loop, uint64_t due) {
  struct itimerspec its = {{0, 0}, {0, 0}};
  if (due == 0) due = 1;  /* all-zero would disarm; a time in the past fires at once */
  its.it_value.tv_sec = (time_t)(due / 1000000000u);
  its.it_value.tv_nsec = (long)(due % 1000000000u);
  timerfd_settime(loop->heap_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

void aio_timers_disarm(aio_loop *loop) {
  struct itimerspec off = {{0, 0}, {0, 0}};
  timerfd_settime(loop->heap_fd, 0, &off, NULL);
}

void aio_timers_init(aio_loop *loop) {
  loop->heap_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (loop->heap_fd < 0) abort();  /* only out of file descriptors, before any work started */
  uv_poll_init(&loop->uv, &loop->heap_timer, loop->heap_fd);
  loop->heap_timer.data = loop;
  uv_poll_start(&loop->heap_timer, UV_READABLE, on_heap_timer);
  uv_unref((uv_handle_t *)&loop->heap_timer);
}

/* A forked child shares the parent's timerfd: arming it would move the parent's timer. The
** same descriptor number gets a fresh timerfd, so the poll handle (re-registered by
** uv_loop_fork) watches the child's own. */
void aio_timers_after_fork(aio_loop *loop) {
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) abort();
  dup3(fd, loop->heap_fd, O_CLOEXEC);
  close(fd);
}

/* After the loop is closed (the poll handle with it): the descriptor is ours to close. */
void aio_timers_closed(aio_loop *loop) {
  if (loop->heap_fd >= 0) close(loop->heap_fd);
  loop->heap_fd = -1;
}
#else
/* The single uv timer behind the heap fired. */
static void on_heap_timer(uv_timer_t *handle) {
  aio_loop *loop = (aio_loop *)handle->data;
  aio_timers_run(loop);
  /* libuv runs due timers *before* polling, then polls with the next timer's timeout: stop
  ** that poll, or whoever this timer woke (a task, a main-thread await) waits for it. */
  aio_loop_wake(loop);
}

/* Arms the uv timer for due (rounded up to whole milliseconds: libuv's resolution). */
static void heap_arm(aio_loop *loop, uint64_t due) {
  uint64_t now = uv_hrtime();
  uint64_t ms = due > now ? (due - now + 999999) / 1000000 : 0;
  uv_update_time(&loop->uv);
  uv_timer_start(&loop->heap_timer, on_heap_timer, ms, 0);
}

void aio_timers_disarm(aio_loop *loop) { uv_timer_stop(&loop->heap_timer); }

void aio_timers_init(aio_loop *loop) {
  uv_timer_init(&loop->uv, &loop->heap_timer);
  loop->heap_timer.data = loop;
  uv_unref((uv_handle_t *)&loop->heap_timer);
}

void aio_timers_after_fork(aio_loop *loop) { (void)loop; }
void aio_timers_closed(aio_loop *loop) { (void)loop; }
#endif

/* Arms the heap's handle for the earliest entry (or disarms it when the heap is empty). */
static void heap_rearm(aio_loop *loop) {
  if (loop->heap_len == 0 || loop->virtual_time) aio_timers_disarm(loop);
  else heap_arm(loop, loop->heap[0]->due);
}

/* Schedules t to fire ns nanoseconds from now. */
void aio_timed_start(aio_loop *loop, aio_timed *t, uint64_t ns) {
  if (t->heap_idx >= 0) aio_timed_stop(loop, t);
  if (loop->heap_len == loop->heap_cap) {
    int cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
    aio_timed **h = realloc(loop->heap, (size_t)cap * sizeof *h);
    if (!h) abort();  /* out of memory in the middle of the loop: nothing sane to do */
    loop->heap = h;
    loop->heap_cap = cap;
  }
  uint64_t now = aio_now_ns(loop);
  t->due = now + ns >= now ? now + ns : UINT64_MAX;  /* a virtual clock advanced far: saturate */
  t->seq = loop->heap_seq++;
  heap_place(loop, loop->heap_len++, t);
  heap_up(loop, t->heap_idx);
  if (loop->heap[0] == t) heap_rearm(loop);
}

/* Takes t out of the heap without re-arming the uv timer; returns its old position. */
static int heap_remove(aio_loop *loop, aio_timed *t) {
  int i = t->heap_idx;
  t->heap_idx = -1;
  aio_timed *last = loop->heap[--loop->heap_len];
  if (last != t) {
    heap_place(loop, i, last);
    heap_down(loop, i);
    heap_up(loop, last->heap_idx);
  }
  return i;
}

/* Removes t from the heap if it is there. */
void aio_timed_stop(aio_loop *loop, aio_timed *t) {
  if (t->heap_idx >= 0 && heap_remove(loop, t) == 0) heap_rearm(loop);
}

/* Nanoseconds until the earliest entry, or -1 if the heap is empty. */
int64_t aio_timers_next(aio_loop *loop) {
  if (loop->heap_len == 0) return -1;
  uint64_t now = aio_now_ns(loop), due = loop->heap[0]->due;
  return due > now ? (int64_t)(due - now) : 0;
}

/* Fires every due entry, in (due, seq) order, then re-arms the uv timer. */
void aio_timers_run(aio_loop *loop) {
  uint64_t now = aio_now_ns(loop);
  while (loop->heap_len > 0 && loop->heap[0]->due <= now) {
    aio_timed *t = loop->heap[0];
    heap_remove(loop, t);
    t->fire(loop, t);
  }
  heap_rearm(loop);
}

/* ---- timer objects: aio.call_later / aio.every, and sleeps outside tasks ------------------- */

enum { TIMER_CALL, TIMER_FUTURE };

typedef struct aio_timer {
  aio_timed timed;
  int ref;            /* self anchor while scheduled */
  int kind;
  uint64_t interval;  /* ns; 0 for one-shot */
} aio_timer;

/* Drops the self anchor of a timer that will not fire again. */
static void timer_release(lua_State *L, aio_timer *tm) {
  if (tm->ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, tm->ref);
    tm->ref = LUA_NOREF;
  }
}

/* User values of a timer object: the callback or the sleep future; for a callback, its
** arguments (packed) and the spawn site of its tasks (where call_later or every was called). */
enum { TIMER_UV_VALUE = 1, TIMER_UV_ARGS, TIMER_UV_SITE };

/* Heap callback: spawn the callback task (re-arming `every`), or resolve the sleep future. */
static void timer_fire(aio_loop *loop, aio_timed *timed) {
  lua_State *L = loop->L;
  aio_timer *tm = (aio_timer *)timed;
  lua_rawgeti(L, LUA_REGISTRYINDEX, tm->ref);
  int tidx = lua_gettop(L);
  if (tm->kind == TIMER_FUTURE) {
    lua_getiuservalue(L, tidx, TIMER_UV_VALUE);
    aio_future *f = aio_future_test(L, -1);
    timer_release(L, tm);
    if (f) aio_future_resolve(L, f, 0);
    lua_settop(L, tidx - 1);
    return;
  }
  lua_getiuservalue(L, tidx, TIMER_UV_SITE);   /* tidx + 1 */
  lua_getiuservalue(L, tidx, TIMER_UV_VALUE);  /* tidx + 2: the callback */
  lua_getiuservalue(L, tidx, TIMER_UV_ARGS);
  int n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n, "too many arguments");
  for (int i = 1; i <= n; i++) lua_rawgeti(L, tidx + 3, i);
  lua_remove(L, tidx + 3);
  if (tm->interval > 0) aio_timed_start(loop, &tm->timed, tm->interval);
  else timer_release(L, tm);
  aio__spawn_at(L, n, tidx + 1);
  lua_settop(L, tidx - 1);
}

/* Pushes a new timer object of the given kind holding value at vidx, scheduled in ns
** (AIO_NEVER: never scheduled, and not anchored). */
static aio_timer *timer_new(lua_State *L, int kind, int vidx, uint64_t ns, uint64_t interval) {
  vidx = lua_absindex(L, vidx);
  aio_timer *tm = (aio_timer *)lua_newuserdatauv(L, sizeof *tm, kind == TIMER_CALL ? 3 : 1);
  memset(tm, 0, sizeof *tm);
  tm->timed.heap_idx = -1;
  tm->timed.fire = timer_fire;
  tm->ref = LUA_NOREF;
  tm->kind = kind;
  tm->interval = interval;
  luaL_setmetatable(L, AIO_TIMER_MT);
  lua_pushvalue(L, vidx);
  lua_setiuservalue(L, -2, TIMER_UV_VALUE);
  if (ns == AIO_NEVER) return tm;
  lua_pushvalue(L, -1);
  tm->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  aio_timed_start(aio_loop_get(L), &tm->timed, ns);
  return tm;
}

/* on_cancel of a sleep future: the timer is no longer needed. */
static void sleep_future_cancelled(lua_State *L, aio_future *f, void *ud) {
  (void)f;
  aio_timer *tm = (aio_timer *)ud;
  aio_timed_stop(aio_loop_get(L), &tm->timed);
  timer_release(L, tm);
}

/* The one rule for durations (sleep, timers, and through timer_future the combinators'
** timeouts): s seconds (argument arg) in nanoseconds. NaN raises; a negative duration counts
** as 0 (asyncio's rule, and sleep's of old); AIO_FOREVER_S or more (math.huge) is AIO_NEVER,
** a deadline that never comes. Converting those unclamped to an integer was undefined and made
** them fire at once. */
uint64_t aio_duration_ns(lua_State *L, int arg, lua_Number s) {
  if (s != s) luaL_argerror(L, arg, "seconds is NaN");
  if (s <= 0) return 0;
  if (s >= AIO_FOREVER_S) return AIO_NEVER;
  return (uint64_t)(s * 1e9 + 0.5);
}

/* Converts seconds at idx (checked: 0 up to AIO_FOREVER_S) to nanoseconds (clock.advance). */
static uint64_t seconds_to_ns(lua_State *L, int idx) {
  lua_Number s = luaL_checknumber(L, idx);
  luaL_argcheck(L, s >= 0 && s < AIO_FOREVER_S, idx, "seconds out of range");
  return aio_duration_ns(L, idx, s);
}

/* Pushes a future that a timer completes after ns nanoseconds (sleeps outside tasks);
** with AIO_NEVER, one that nothing completes (cancelling it still works). */
void aio__push_sleep_future(lua_State *L, uint64_t ns) {
  aio_future *f = aio_future_new(L);
  if (ns == AIO_NEVER) return;
  aio_timer *tm = timer_new(L, TIMER_FUTURE, -1, ns, 0);
  f->on_cancel = sleep_future_cancelled;
  f->on_cancel_ud = tm;
  lua_pop(L, 1);
}

/* Shared by call_later and every: (seconds, fn, ...) -> handle. */
static int schedule_call(lua_State *L, int repeat) {
  uint64_t ns = aio_duration_ns(L, 1, luaL_checknumber(L, 1));
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (repeat) luaL_argcheck(L, ns > 0, 1, "interval must be positive");
  int n = lua_gettop(L) - 2;
  lua_createtable(L, n, 0);  /* the arguments of fn, packed */
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, i + 2);
    lua_rawseti(L, -2, i);
  }
  lua_pushvalue(L, 2);
  timer_new(L, TIMER_CALL, -1, ns, repeat ? ns : 0);
  lua_pushvalue(L, -3);
  lua_setiuservalue(L, -2, TIMER_UV_ARGS);
  aio__push_site(L);
  lua_setiuservalue(L, -2, TIMER_UV_SITE);
  return 1;
}

/* aio.call_later(seconds, fn, ...) -> handle: fn(...) runs as a task after that long. */
static int l_call_later(lua_State *L) {
  return schedule_call(L, 0);
}

/* aio.every(seconds, fn, ...) -> handle: fn(...) runs as a task every `seconds`. */
static int l_every(lua_State *L) {
  return schedule_call(L, 1);
}

/* handle:cancel() -> true if it was still scheduled. */
static int l_timer_cancel(lua_State *L) {
  aio_timer *tm = (aio_timer *)luaL_checkudata(L, 1, AIO_TIMER_MT);
  int active = tm->timed.heap_idx >= 0;
  aio_timed_stop(aio_loop_get(L), &tm->timed);
  timer_release(L, tm);
  lua_pushboolean(L, active);
  return 1;
}

/* handle:active() -> true while it is scheduled. */
static int l_timer_active(lua_State *L) {
  aio_timer *tm = (aio_timer *)luaL_checkudata(L, 1, AIO_TIMER_MT);
  lua_pushboolean(L, tm->timed.heap_idx >= 0);
  return 1;
}

/* aio.clock.virtual([autojump_threshold]): sleeps and timers jump instantly, in order (trio's
** MockClock); with a threshold (seconds, up to 60), only after the loop has had no I/O for that
** long in real time (threads or other processes may be about to send it some). */
static int l_clock_virtual(lua_State *L) {
  aio_loop *loop = aio_loop_get(L);
  lua_Number threshold = luaL_optnumber(L, 1, 0);
  luaL_argcheck(L, threshold >= 0 && threshold <= 60, 1, "autojump threshold out of range (0 to 60 seconds)");
  loop->autojump_ms = (int)(threshold * 1000 + 0.999);      /* a part of a millisecond counts */
  if (!loop->virtual_time) {
    loop->vnow = uv_hrtime();
    loop->virtual_time = 1;
    aio_timers_disarm(loop);
  }
  return 0;
}

/* aio.clock.real(): back to the wall clock; pending timers keep their remaining delays. */
static int l_clock_real(lua_State *L) {
  aio_loop *loop = aio_loop_get(L);
  if (loop->virtual_time) {
    uint64_t real = uv_hrtime();
    for (int i = 0; i < loop->heap_len; i++) loop->heap[i]->due = loop->heap[i]->due - loop->vnow + real;
    loop->virtual_time = 0;
    heap_rearm(loop);
  }
  return 0;
}

/* aio.clock.is_virtual() -> boolean. */
static int l_clock_is_virtual(lua_State *L) {
  lua_pushboolean(L, aio_loop_get(L)->virtual_time);
  return 1;
}

/* aio.clock.advance(seconds): moves virtual time forward, firing what falls due. */
static int l_clock_advance(lua_State *L) {
  aio_loop *loop = aio_loop_get(L);
  uint64_t ns = seconds_to_ns(L, 1);
  if (!loop->virtual_time) return luaL_error(L, "aio.clock.advance needs virtual time");
  uint64_t target = loop->vnow + ns;
  while (loop->heap_len > 0 && loop->heap[0]->due <= target) {
    if (loop->heap[0]->due > loop->vnow) loop->vnow = loop->heap[0]->due;
    aio_timers_run(loop);
  }
  loop->vnow = target;
  return 0;
}

/* aio.now() -> the loop's clock in seconds. */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)aio_now_ns(aio_loop_get(L)) / 1e9);
  return 1;
}

/* aio.core.timer_future(seconds) -> a future completed after that long (cancel stops it). */
static int l_timer_future(lua_State *L) {
  aio__push_sleep_future(L, aio_duration_ns(L, 1, luaL_checknumber(L, 1)));
  return 1;
}

/* Registers the timer metatable and puts call_later/every/now/clock into the table at -1. */
void aio__open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {{"cancel", l_timer_cancel}, {"active", l_timer_active}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"call_later", l_call_later}, {"every", l_every}, {"now", l_now},
                                   {"timer_future", l_timer_future}, {NULL, NULL}};
  static const luaL_Reg clock[] = {{"virtual", l_clock_virtual}, {"real", l_clock_real},
                                   {"is_virtual", l_clock_is_virtual}, {"advance", l_clock_advance},
                                   {"now", l_now}, {NULL, NULL}};
  luaL_newmetatable(L, AIO_TIMER_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  luaL_newlib(L, clock);
  lua_setfield(L, -2, "clock");
}

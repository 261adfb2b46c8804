/*
** task.c — tasks and the scheduler: spawning, the ready queue, the one place that resumes a
** task's coroutine (task_step), sleeping, cancellation, the task object's Lua bindings. What a
** failure becomes and who hears of it is task_error.c; the coroutine.resume/wrap wrappers that
** let an await in a plain generator coroutine pass through to the scheduler are coroutine.c.
**
** A task's coroutine stores the task's address in its LUA_EXTRASPACE; plain coroutines resumed
** from a task get the same address while they run, so aio_current_task works at any depth.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "scheduler.h"
#include <lualib.h>
#include <stddef.h>

const char aio__await_key = 'A';
static const char HOOK_KEY = 'H';        /* registry: the task lifecycle hook (tracing) */

/* The task whose code runs on L (or NULL). */
aio_task *aio_current_task(lua_State *L) {
  return *(aio_task **)lua_getextraspace(L);
}

/* Pushes the live-task anchor table of loop. It sits at an integer registry ref (the
** registry's array part) rather than under a pointer key: this runs twice per task switch. */
static void push_anchor_of(lua_State *L, aio_loop *loop) {
  if (loop->anchor_ref > 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->anchor_ref);
    return;
  }
  lua_newtable(L);
  lua_pushvalue(L, -1);
  loop->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Pushes the live-task anchor table of L's loop. */
static void push_anchor(lua_State *L) {
  push_anchor_of(L, aio_loop_get(L));
}

/* Anchors the value on top (left there) in loop's live-task table; returns its slot. Free
** slots wait in a C stack (luaL_ref keeps its free list inside the table: ~300 instructions a
** call); slots are reused before the table grows, so it is full whenever it has to grow. */
static int anchor_add(lua_State *L, aio_loop *loop) {
  int slot = loop->anchor_nfree > 0 ? loop->anchor_free[--loop->anchor_nfree] : ++loop->anchor_top;
  push_anchor_of(L, loop);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  return slot;
}

/* Releases an anchor slot of loop, whose live-task table is at (absolute) aidx. */
static void anchor_remove(lua_State *L, aio_loop *loop, int aidx, int slot) {
  lua_pushnil(L);
  lua_rawseti(L, aidx, slot);
  if (loop->anchor_nfree == loop->anchor_cap) {
    int cap = loop->anchor_cap ? loop->anchor_cap * 2 : 256;
    int *grown = realloc(loop->anchor_free, (size_t)cap * sizeof *grown);
    if (!grown) return;  /* the slot is simply never reused */
    loop->anchor_free = grown;
    loop->anchor_cap = cap;
  }
  loop->anchor_free[loop->anchor_nfree++] = slot;
}

/* Pushes the task t of loop (unfinished, hence anchored). */
static void task_push_of(lua_State *L, aio_loop *loop, aio_task *t) {
  push_anchor_of(L, loop);
  lua_rawgeti(L, -1, t->ref);
  lua_remove(L, -2);
}

/* Pushes loop's live-task table, then the task t (unfinished, hence anchored): what
** task_finish needs, the table to unanchor it from just below the task. */
static void push_anchor_and_task(lua_State *L, aio_loop *loop, aio_task *t) {
  push_anchor_of(L, loop);
  lua_rawgeti(L, -1, t->ref);
}

/* Pushes the task t (it must be unfinished, hence anchored). */
void aio__task_push(lua_State *L, aio_task *t) {
  task_push_of(L, aio_loop_get(L), t);
}

/* Appends t to the loop's ready queue. */
static void ready_push(aio_loop *loop, aio_task *t) {
  t->queued = 1;
  t->rnext = NULL;
  if (loop->ready_tail) loop->ready_tail->rnext = t; else loop->ready_head = t;
  loop->ready_tail = t;
  /* If this runs inside uv_run (a timer fired before the poll phase), make that poll return
  ** at once: UV_RUN_ONCE would otherwise block until the *next* timer or I/O event. */
  aio_loop_wake(loop);
}

/* Moves the top nvals values of L onto t's coroutine and queues t for resumption. */
void aio__task_wake(lua_State *L, aio_task *t, int nvals) {
  lua_checkstack(t->co, nvals + 1);
  lua_xmove(L, t->co, nvals);
  t->nargs = nvals;
  t->sleeping = 0;
  ready_push(aio_loop_get(L), t);
}

/* ---- spawning and the scheduler --------------------------------------------------------- */

/* A direct-mapped cache of spawn-site strings, per loop: formatting "file:line" on every spawn
** cost as much as all the rest of spawn. Entries match by content (short source and line), so
** a chunk that reuses a dead chunk's address never gets the old chunk's site; or, where the
** entry pins the chunk's source string itself (an interned short string: pushing the source
** gives that very string back), by its address, which that string keeps while pinned. */
enum { SITE_SLOTS = 64 };
struct aio_site {
  const char *pinned;   /* the chunk's source, kept alive by pin_ref; NULL: compare src */
  int line, ref, pin_ref;
  char src[LUA_IDSIZE];
};

/* Inlined even where the compiler would not (it has two callers): spawn's hot path. */
#ifdef __GNUC__
#define HOT_INLINE inline __attribute__((always_inline))
#else
#define HOT_INLINE inline
#endif

/* Longest string Lua interns (LUAI_MAXSHORTLEN, llimits.h, not exported). A longer source is
** never pinned, and so never copied: load's default chunk name is the chunk's whole code, and a
** copy per cache entry kept megabytes alive after the chunk was gone. (Were Lua built with
** another limit, the address check alone still decides what is pinned.) */
enum { SITE_SHORT_SOURCE_MAX = 40 };

/* Fills the cache entry e for ar with the site string on top (left there). The new references
** are made before the old ones go, so a memory error leaves e as it was. */
static void site_cache_fill(lua_State *L, struct aio_site *e, const lua_Debug *ar) {
  const char *pinned = NULL;
  int pin_ref = LUA_NOREF;
  if (ar->srclen <= SITE_SHORT_SOURCE_MAX) {
    lua_pushlstring(L, ar->source, ar->srclen);
    if (lua_tostring(L, -1) == ar->source) {  /* the source itself: interned */
      pinned = ar->source;
      pin_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_pushvalue(L, -1);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (e->ref > 0) luaL_unref(L, LUA_REGISTRYINDEX, e->ref);
  if (e->pin_ref > 0) luaL_unref(L, LUA_REGISTRYINDEX, e->pin_ref);
  e->ref = ref;
  e->pin_ref = pin_ref;
  e->pinned = pinned;
  e->line = ar->currentline;
  memcpy(e->src, ar->short_src, sizeof e->src);
}

/* Pushes the site string "src:line", from the loop's cache or made (and cached) now. */
static HOT_INLINE void push_site_string(lua_State *L, aio_loop *loop, const lua_Debug *ar) {
  if (!loop->sites) loop->sites = calloc(SITE_SLOTS, sizeof *loop->sites);
  struct aio_site *e = NULL;
  if (loop->sites) {
    uintptr_t h = ((uintptr_t)ar->source >> 4) ^ ((uintptr_t)ar->currentline * 40503u);
    e = &loop->sites[h % SITE_SLOTS];
    if (e->ref > 0 && e->line == ar->currentline
        && (e->pinned ? e->pinned == ar->source : strcmp(e->src, ar->short_src) == 0)) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref);
      return;
    }
  }
  lua_pushfstring(L, "%s:%d", ar->short_src, ar->currentline);
  if (e) site_cache_fill(L, e, ar);
}

/* Pushes "file:line" of the user code that called into spawn: the first Lua frame up that is
** not one of the runtime's own embedded modules (gather spawning a function is the user's). */
static HOT_INLINE void push_spawn_site(lua_State *L, aio_loop *loop) {
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    /* memcmp of a constant length compiles to two loads, where strncmp was a libc call */
    if (ar.currentline > 0 && (ar.srclen < 9 || memcmp(ar.source, "@lua/aio/", 9) != 0)) {
      push_site_string(L, loop, &ar);
      return;
    }
  }
  lua_pushliteral(L, "?");
}

/* Calls the task lifecycle hook, if any, with (event, task at tidx). */
static void call_task_hook(lua_State *L, const char *event, int tidx) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &HOOK_KEY);
  lua_pushstring(L, event);
  lua_pushvalue(L, tidx);
  aio_pcall_report(L, 2, 0);
}

/* aio.core.set_task_hook(fn | nil): fn(event, task) runs synchronously when a task is
** spawned ("spawn") and when it ends ("end"); for tracers. One hook at a time. */
static int l_set_task_hook(lua_State *L) {
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  aio_loop_get(L)->task_hook = !lua_isnil(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &HOOK_KEY);
  return 0;
}

/* Pushes "file:line" of the user code running now (see push_spawn_site). */
void aio__push_site(lua_State *L) {
  push_spawn_site(L, aio_loop_get(L));
}

/* Spawns a task running the function below its nargs arguments (popped); pushes the task. Its
** spawn site is the string at (absolute) index site, or, when site is 0, the calling code's. */
aio_task *aio__spawn_at(lua_State *L, int nargs, int site) {
  aio_loop *loop = aio_loop_get(L);
  int fidx = lua_gettop(L) - nargs;
  if (lua_type(L, fidx) != LUA_TFUNCTION) luaL_checktype(L, fidx, LUA_TFUNCTION);  /* raises */
  aio_task *t = (aio_task *)lua_newuserdatauv(L, sizeof *t, AIO_TASK_NUV);
  memset(t, 0, sizeof *t);
  t->fut.is_task = 1;
  t->sleep.heap_idx = -1;
  t->id = loop->next_task_id++;
  t->spawned_at = (float)((double)aio_now_ns(loop) / 1e9 - loop->epoch);
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->task_mt_ref);  /* the task metatable */
  lua_setmetatable(L, -2);
  if (site) lua_pushvalue(L, site); else push_spawn_site(L, loop);
  lua_setiuservalue(L, -2, AIO_TUV_INFO);
  lua_State *co = lua_newthread(L);     /* fn args task co */
  t->co = co;
  *(aio_task **)lua_getextraspace(co) = t;
  lua_rotate(L, fidx, 2);               /* task co fn args */
  lua_xmove(L, co, nargs + 1);
  lua_setiuservalue(L, -2, AIO_TUV_CO); /* task */
  t->ref = anchor_add(L, loop);
  t->nargs = nargs;
  loop->ntasks++;
  ready_push(loop, t);
  if (loop->task_hook) call_task_hook(L, "spawn", lua_gettop(L));
  return t;
}

/* Spawns a task running the function below its nargs arguments (popped); pushes the task. */
aio_task *aio_spawn(lua_State *L, int nargs) {
  return aio__spawn_at(L, nargs, 0);
}

/* Ends task t (at tidx, its live-task table just below) with its outcome: stores it,
** unanchors, wakes waiters. */
static void task_finish(lua_State *L, aio_loop *loop, aio_task *t, int tidx, int state, int nres) {
  t->fut.state = state;
  t->fut.nresults = state == AIO_DONE ? nres : 1;
  /* The outcome replaces the coroutine in the shared slot, which lets it be collected. */
  if (state == AIO_DONE && nres == 0) {
    lua_pushnil(L);
  } else if (state == AIO_DONE && nres > 1) {
    lua_createtable(L, nres, 0);
    lua_insert(L, -nres - 1);
    for (int i = nres; i >= 1; i--) lua_rawseti(L, -i - 1, i);
  }
  lua_setiuservalue(L, tidx, AIO_TUV_RESULT);
  t->co = NULL;
  anchor_remove(L, loop, tidx - 1, t->ref);
  loop->ntasks--;
  if (state == AIO_FAILED && !t->fut.observed && !t->fut.whead) aio__unobserved_add(L, tidx, NULL);
  if (loop->task_hook) call_task_hook(L, "end", tidx);
  aio__future_finish(L, &t->fut, tidx);
  t->ref = LUA_NOREF;
}

static void arm_cancel_hook(aio_task *t);
static void push_pending_cancel(lua_State *L, aio_task *t);

/* Resumes task t once: the only place where a task's coroutine is resumed. */
static void task_step(aio_loop *loop, aio_task *t) {
  lua_State *L = loop->L, *co = t->co;
  int nres, nargs = t->nargs;  /* L's stack is as it was after each resume: ends pop to tidx - 2 */
  t->queued = 0;
  t->cancel_delivering = 0;  /* a cancellation it was woken with is received now */
  t->nargs = 0;
  if (!t->started) {
    t->started = 1;
    if (t->cancel_requested) {  /* cancelled before it ever ran: it never runs */
      push_anchor_and_task(L, loop, t);
      int tidx = lua_gettop(L);
      lua_settop(co, 0);
      lua_getiuservalue(L, tidx, AIO_TUV_WAITING);
      aio_push_cancelled(L, lua_tostring(L, -1));
      lua_remove(L, -2);
      task_finish(L, loop, t, tidx, AIO_CANCELLED, 1);
      lua_settop(L, tidx - 2);
      return;
    }
  }
  if (nargs < 0 && !t->cancel_requested) {  /* woken from sleep(0): nothing to hand it */
    nargs = 0;
  } else if (nargs < 0) {  /* sleep(0) is a cancellation point, as asyncio's: (false, err) */
    lua_pushboolean(co, 0);
    push_pending_cancel(L, t);
    lua_xmove(L, co, 1);
    nargs = 2;
  }
  t->running = 1;
  /* Only the main loop's thread uses aio__running_co (the SIGINT handler): others leave it be. */
  int on_main = loop == aio__main_loop;
  lua_State *outer = on_main ? aio__running_co : NULL;
  if (on_main) aio__running_co = co;
  int status = lua_resume(co, L, nargs, &nres);
  if (on_main) aio__running_co = outer;
  t->running = 0;
  if (status == LUA_YIELD) {  /* the common case needs no Lua value of the task: none pushed */
    if (t->nargs < 0) {  /* sleep(0) (l_sleep): queued here, where the loop is at hand */
      ready_push(loop, t);
    } else if (!(nres >= 1 && lua_touserdata(co, -nres) == &aio__await_key) && !t->waiting
               && !t->sleeping && !t->queued) {
      ready_push(loop, t);  /* a bare coroutine.yield() in a task: let the others run */
      if (t->cancel_requested) arm_cancel_hook(t);
    }
    if (nres > 0) lua_pop(co, nres);
    return;
  }
  push_anchor_and_task(L, loop, t);  /* it ends: its outcome goes into the task (still anchored) */
  int tidx = lua_gettop(L);
  if (status == LUA_OK && lua_checkstack(L, nres + LUA_MINSTACK)) {
    lua_xmove(co, L, nres);
    task_finish(L, loop, t, tidx, AIO_DONE, nres);
  } else if (status == LUA_OK) {  /* more results than a stack can hold: fail, don't overflow */
    lua_settop(co, 0);
    lua_pushfstring(L, "task returned too many results (%d)", nres);
    aio__wrap_task_error(L, tidx, co);
    task_finish(L, loop, t, tidx, AIO_FAILED, 1);
  } else {
    lua_xmove(co, L, 1);
    lua_pushvalue(L, -1);  /* keep the raw error to compare after closing */
    int cancelled = aio_is_cancelled(L, -1);
    int here = !cancelled && aio__wrap_task_error(L, tidx, co);  /* needs the stack not yet unwound */
    if (lua_resetthread(co) != LUA_OK) {  /* closes <close> variables; same error unless one failed */
      lua_xmove(co, L, 1);
      if (!lua_rawequal(L, -1, -3)) {  /* a __close handler raised a new error */
        cancelled = aio_is_cancelled(L, -1);
        if (!cancelled && aio__wrap_task_error(L, tidx, co)) aio__close_error_traceback(L, -2, here);
        lua_replace(L, -2);
      } else {
        lua_pop(L, 1);
      }
    }
    lua_remove(L, -2);
    task_finish(L, loop, t, tidx, cancelled ? AIO_CANCELLED : AIO_FAILED, 1);
  }
  lua_settop(L, tidx - 2);  /* the live-task table and the task gone too */
}

/* Resumes the tasks that are ready now; tasks made ready meanwhile wait for the next turn, so
** I/O is polled between turns even when tasks keep yielding. */
void aio_scheduler_drain(aio_loop *loop) {
  aio_task *last = loop->ready_tail;
  loop->running++;  /* done-callbacks run from here: an await in one must not re-enter the loop */
  while (loop->ready_head) {
    aio_task *t = loop->ready_head;
    loop->ready_head = t->rnext;
    if (!loop->ready_head) loop->ready_tail = NULL;
    task_step(loop, t);
    if (t == last) break;
  }
  loop->running--;
}

/* Pushes the cancellation error for task t (message stored at cancel time) and clears it. */
static void push_pending_cancel(lua_State *L, aio_task *t) {
  aio__task_push(L, t);
  lua_getiuservalue(L, -1, AIO_TUV_WAITING);
  aio_push_cancelled(L, lua_tostring(L, -1));
  lua_pushnil(L);
  lua_setiuservalue(L, -4, AIO_TUV_WAITING);
  lua_replace(L, -3);
  lua_pop(L, 1);
  t->cancel_requested = 0;
}

/* Count hook armed on a task that made a bare coroutine.yield() with a cancellation pending:
** raises it at the task's first instruction after the yield. Lua's own yield has no
** continuation of ours to raise it from, and a check in the switch path would cost every
** task; this costs nothing unless it is used. */
static void cancel_hook(lua_State *co, lua_Debug *ar) {
  (void)ar;
  lua_sethook(co, NULL, 0, 0);
  aio_task *t = aio_current_task(co);
  if (t && t->cancel_requested) {
    push_pending_cancel(co, t);
    lua_error(co);
  }
}

/* Makes t's bare coroutine.yield() a cancellation point (cancel_hook), unless t's coroutine
** has a hook already (a profiler's, a pending Ctrl-C): then it waits for t's next await. */
static void arm_cancel_hook(aio_task *t) {
  if (lua_gethook(t->co) == NULL) lua_sethook(t->co, cancel_hook, LUA_MASKCOUNT, 1);
}

/* Arranges one delivery of a cancellation to t (unless one is pending), counting a new
** request when count is set; returns 0 if t already finished. */
static int request_cancel(lua_State *L, aio_task *t, const char *msg, int count) {
  if (t->fut.state != AIO_PENDING) return 0;
  if (count && t->cancels < AIO_CANCELS_MAX) t->cancels++;
  if (t->cancel_delivering || t->cancel_requested) return 1;
  aio_loop *loop = aio_loop_get(L);
  if (t->waiting || t->sleeping) {
    if (t->sleeping) {
      aio_timed_stop(loop, &t->sleep);
      t->sleeping = 0;
    } else {
      aio_future *f = t->waiting;
      aio__waiter_remove(f, t);
      /* asyncio's rule: cancelling a task cancels the plain future it awaits (an I/O
      ** operation, a lock waiter...), not another task others may be waiting for. */
      if (!f->is_task && !f->whead && !f->topwaiters) aio_future_cancel(L, f, msg);
    }
    aio__task_push(L, t);
    lua_pushnil(L);
    lua_setiuservalue(L, -2, AIO_TUV_WAITING);
    lua_pop(L, 1);
    lua_pushboolean(L, 0);
    aio_push_cancelled(L, msg);
    aio__task_wake(L, t, 2);
    t->cancel_delivering = 1;
    return 1;
  }
  /* Running, queued with a value to deliver, or not started: raise at its next await. */
  t->cancel_requested = 1;
  aio__task_push(L, t);
  lua_pushstring(L, msg ? msg : "cancelled");
  lua_setiuservalue(L, -2, AIO_TUV_WAITING);
  lua_pop(L, 1);
  /* Queued after a bare yield (nothing to hand it: every wake passes at least one value,
  ** sleep(0) passes -1 and task_step raises it there): raise as it resumes. */
  if (t->queued && t->started && t->nargs == 0) arm_cancel_hook(t);
  return 1;
}

/* Requests cancellation of t (counted: see t->cancels); returns 0 if it already finished. A
** request made while an earlier one is still on its way (not yet raised in the task) shares
** its delivery: one error. One made after the task received the first is delivered again. */
int aio_task_cancel(lua_State *L, aio_task *t, const char *msg) {
  return request_cancel(L, t, msg, 1);
}

/* Cancels every unfinished task (used at exit and on Ctrl-C). */
void aio_cancel_all(lua_State *L, const char *msg) {
  push_anchor(L);
  int anchor = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, anchor)) {
    aio_task *t = (aio_task *)luaL_testudata(L, -1, AIO_TASK_MT);
    if (t) aio_task_cancel(L, t, msg);
    lua_pop(L, 1);
  }
  lua_settop(L, anchor - 1);
}

/* ---- awaiting ----------------------------------------------------------------------------- */

/* Continuation of an await: the resume values above base are (true, results...) or (false,
** err); returns the results or raises err (aio.h). */
int aio_await_k(lua_State *L, int status, lua_KContext base) {
  (void)status;
  if (!lua_toboolean(L, (int)base + 1)) {
    lua_pushvalue(L, (int)base + 2);
    return lua_error(L);
  }
  return lua_gettop(L) - (int)base - 1;
}

/* Suspends the calling task (already registered as a waiter or sleeper) until woken; k then
** continues with the resume values above the current top. */
static int task_suspend(lua_State *L, lua_KFunction k) {
  int base = lua_gettop(L);
  lua_pushlightuserdata(L, (void *)&aio__await_key);
  return lua_yieldk(L, 1, base, k);
}

/* True if code running on L (t's coroutine, or a generator it resumes) can suspend task t. */
static int can_suspend(lua_State *L, aio_task *t) {
  return lua_isyieldable(L) && !t->stuck_in_c;
}

/* Raises unless the running task t can yield right now. */
static void check_can_suspend(lua_State *L, aio_task *t) {
  if (t->cancel_requested) {
    push_pending_cancel(L, t);
    lua_error(L);
  }
  if (!can_suspend(L, t))
    luaL_error(L, "cannot await here: across a C-call boundary (a metamethod, a done callback "
                  "or a C function called this code); spawn a task with aio.spawn and await there");
}

/* Waits for the future at idx, then returns k(L, status, base) with the outcome above base:
** (true, results...) or (false, err). In tail position. */
static int await_then(lua_State *L, int idx, lua_KFunction k) {
  idx = lua_absindex(L, idx);
  aio_future *f = aio_future_check(L, idx);
  int base = lua_gettop(L);
  if (f->state == AIO_PENDING) {
    aio_task *t = aio_current_task(L);
    if (t) {
      if ((aio_future *)t == f) return luaL_error(L, "a task cannot await itself");
      check_can_suspend(L, t);
      aio__waiter_add(f, t);
      aio__task_push(L, t);
      lua_pushvalue(L, idx);
      lua_setiuservalue(L, -2, AIO_TUV_WAITING);  /* keeps f alive while t waits */
      lua_pop(L, 1);
      return task_suspend(L, k);
    }
    if (lua_isyieldable(L)) {  /* a plain coroutine outside tasks: let coroutine.resume wait */
      lua_pushlightuserdata(L, (void *)&aio__await_key);
      lua_pushvalue(L, idx);
      return lua_yieldk(L, 2, base, k);
    }
    lua_pushvalue(L, idx);  /* the main thread waits: run the loop until f is done */
    aio_run_until(L, f);
    lua_settop(L, base);
  }
  aio__observe(L, idx);
  aio_future_push_outcome(L, idx);
  return k(L, LUA_OK, base);
}

/* Waits for the future at idx; use in tail position. */
int aio_await(lua_State *L, int idx) {
  return await_then(L, idx, aio_await_k);
}

/* Waits for a future the caller made for this call and registered somewhere (a channel's or a
** pipe's list of waiters), then returns k(L, status, base) as await_then does; in tail
** position. Where the caller cannot wait (across a C-call boundary, or in a task whose
** cancellation is pending) the wait raises and nobody would ever await the future: it is
** cancelled first, so that its on_cancel takes the registration back (an orphan would take
** the next message, and keep the loop alive). */
int aio_await_own_k(lua_State *L, int idx, lua_KFunction k) {
  idx = lua_absindex(L, idx);
  aio_future *f = aio_future_check(L, idx);
  aio_task *t = aio_current_task(L);
  if (t && f->state == AIO_PENDING && (t->cancel_requested || !can_suspend(L, t))) {
    aio_future_cancel(L, f, "cancelled");
    check_can_suspend(L, t);
  }
  return await_then(L, idx, k);
}

/* aio_await_own_k returning the future's results or raising its error. */
int aio_await_own(lua_State *L, int idx) {
  return aio_await_own_k(L, idx, aio_await_k);
}

/* Takes the running task's pending cancellation, one that came after the task was woken with
** what it awaited: pushes its error and returns 1 (the task will not get it again), else
** returns 0. For the give-back rule (docs/aio.md, Cancellation): a primitive's wait that was
** handed something gives it back and raises this at once. */
int aio_take_cancel(lua_State *L) {
  aio_task *t = aio_current_task(L);
  if (!t || !t->cancel_requested || t->fut.state != AIO_PENDING) return 0;
  push_pending_cancel(L, t);
  return 1;
}

/* Continuation of sleep(0): resumed with nothing, or with (false, err) if cancelled. */
static int sleep0_k(lua_State *L, int status, lua_KContext base) {
  if (lua_gettop(L) == (int)base) return 0;
  return aio_await_k(L, status, base);
}

/* Timer heap callback: a sleeping task's time has come. */
static void on_sleep_done(aio_loop *loop, aio_timed *timed) {
  aio_task *t = (aio_task *)((char *)timed - offsetof(aio_task, sleep));
  lua_pushboolean(loop->L, 1);
  aio__task_wake(loop->L, t, 1);
}

/* aio.sleep(seconds): suspends the task (or, at top level, runs the loop) that long;
** sleep(0) or negative just lets every other ready task run once; math.huge sleeps forever. */
static int l_sleep(lua_State *L) {
  int isnum;
  lua_Number s = lua_tonumberx(L, 1, &isnum);  /* the common case first: luaL_optnumber's */
  if (!isnum) s = luaL_optnumber(L, 1, 0);      /* checks cost ~70 instructions a sleep */
  aio_task *t = aio_current_task(L);
  if (t && s <= 0) {
    check_can_suspend(L, t);
    /* task_step queues it once it has yielded and resumes it with nothing (or false, err): no
    ** loop lookup here, and nothing can be pushed on a running coroutine anyway */
    t->nargs = -1;
    /* From the task's own coroutine the yield needs no await key: nargs tells task_step (a
    ** generator's resume_loop needs the key to pass the await up) */
    if (L == t->co) return lua_yieldk(L, 0, lua_gettop(L), sleep0_k);
    return task_suspend(L, sleep0_k);
  }
  if (t) {
    check_can_suspend(L, t);
    lua_settop(L, 0);
    uint64_t ns = aio_duration_ns(L, 1, s);
    t->sleep.fire = on_sleep_done;
    t->sleep.heap_idx = -1;  /* the union held other links until now */
    t->sleeping = 1;
    if (ns == AIO_NEVER) t->sleep.due = AIO_NEVER;  /* in no heap: only a cancel wakes it */
    else aio_timed_start(aio_loop_get(L), &t->sleep, ns);
    return task_suspend(L, aio_await_k);
  }
  /* Outside tasks: a one-shot timer future (timer.c) awaited like any other. */
  aio__push_sleep_future(L, aio_duration_ns(L, 1, s));
  return aio_await(L, -1);
}

/* ---- Lua bindings: tasks ------------------------------------------------------------------ */

/* Checks that the value at idx is a task. */
static aio_task *check_task(lua_State *L, int idx) {
  aio_future *f = aio_future_test(L, idx);
  if (!f || !f->is_task) luaL_typeerror(L, idx, AIO_TASK_MT);
  return (aio_task *)f;
}

/* aio.spawn(fn, ...) -> task (aio__spawn_at checks that fn, at 1, is a function). */
static int l_spawn(lua_State *L) {
  aio_spawn(L, lua_gettop(L) - 1);
  return 1;
}

/* aio.current() -> the running task, or nil at top level. */
static int l_current(lua_State *L) {
  aio_task *t = aio_current_task(L);
  if (!t || t->fut.state != AIO_PENDING) return 0;
  aio__task_push(L, t);
  return 1;
}

/* task:cancel([msg]) -> true if the task was still running. */
static int l_task_cancel(lua_State *L) {
  aio_task *t = check_task(L, 1);
  lua_pushboolean(L, aio_task_cancel(L, t, luaL_optstring(L, 2, NULL)));
  return 1;
}

/* core.redeliver_cancel(task [, msg]) -> false if the task already finished: the cancellation
** the task already received (and that is still counted) is raised again at its next await,
** with no new request counted. For a call that returns what it was handed although its
** caller was cancelled meanwhile (aio.wait_for after its inner task ended with a result): the
** caller still gets its cancellation. */
static int l_redeliver_cancel(lua_State *L) {
  aio_task *t = check_task(L, 1);
  lua_pushboolean(L, request_cancel(L, t, luaL_optstring(L, 2, NULL), 0));
  return 1;
}

/* core.take_cancel() -> the running task's pending cancellation error, taken (aio_take_cancel),
** or nothing. */
static int l_take_cancel(lua_State *L) {
  return aio_take_cancel(L);
}

/* task:cancelling() -> the number of cancel() requests not withdrawn by uncancel(). */
static int l_task_cancelling(lua_State *L) {
  lua_pushinteger(L, check_task(L, 1)->cancels);
  return 1;
}

/* task:uncancel() -> the count left once one cancel() request is withdrawn (asyncio's
** Task.uncancel): for a combinator that cancelled the task on its own behalf and caught the
** result; more than it found at its start means someone else asked too. At 0 a cancellation
** not yet raised in the task is dropped; one it was already woken with still arrives. */
static int l_task_uncancel(lua_State *L) {
  aio_task *t = check_task(L, 1);
  if (t->cancels > 0 && t->cancels < AIO_CANCELS_MAX) t->cancels--;  /* saturated: stays */
  if (t->cancels == 0 && t->cancel_requested) {
    t->cancel_requested = 0;
    lua_pushnil(L);
    lua_setiuservalue(L, 1, AIO_TUV_WAITING);  /* the pending message (the task waits on nothing) */
  }
  lua_pushinteger(L, t->cancels);
  return 1;
}

/* task:set_name(name). */
static int l_task_set_name(lua_State *L) {
  check_task(L, 1);
  luaL_checkstring(L, 2);
  if (lua_getiuservalue(L, 1, AIO_TUV_INFO) != LUA_TTABLE) {  /* site string -> {site=, name=} */
    lua_createtable(L, 0, 2);
    lua_insert(L, -2);
    lua_setfield(L, -2, "site");
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, AIO_TUV_INFO);
  }
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "name");
  lua_settop(L, 1);
  return 1;
}

/* Pushes the state name of task t: pending, ready, running, sleeping, waiting, done, failed, cancelled. */
static const char *task_state(aio_task *t) {
  static const char *const ended[] = {"pending", "done", "failed", "cancelled"};
  if (t->fut.state != AIO_PENDING) return ended[t->fut.state];
  if (t->running) return "running";
  if (t->sleeping) return "sleeping";
  if (t->waiting) return "waiting";
  if (t->queued) return t->started ? "ready" : "new";
  return "suspended";
}

/* task:traceback([msg]) -> the suspended task's stack (its own coroutine). */
static int l_task_traceback(lua_State *L) {
  aio_task *t = check_task(L, 1);
  const char *msg = luaL_optstring(L, 2, NULL);
  if (!t->co) {
    if (t->fut.state == AIO_FAILED) {
      lua_getiuservalue(L, 1, AIO_TUV_RESULT);
      lua_getfield(L, -1, "traceback");
      return 1;
    }
    lua_pushfstring(L, "%s(task is %s)", msg ? msg : "", task_state(t));
    return 1;
  }
  luaL_traceback(L, t->co, msg, 0);
  return 1;
}

/* Pushes what task t waits on, as text (nil if it waits on nothing). */
static void push_waiting_on(lua_State *L, aio_task *t, int tidx) {
  if (t->sleeping && t->sleep.heap_idx < 0) {
    lua_pushliteral(L, "sleep (forever)");
  } else if (t->sleeping) {
    double left = (double)(t->sleep.due - aio_now_ns(aio_loop_get(L))) / 1e9;
    lua_pushfstring(L, "sleep (%f s left)", left > 0 ? left : 0.0);
  } else if (t->waiting) {
    lua_getiuservalue(L, tidx, AIO_TUV_WAITING);
    if (t->waiting->is_task) {
      aio__push_task_name(L, lua_gettop(L));
      lua_pushfstring(L, "task %s", lua_tostring(L, -1));
      lua_replace(L, -3);
      lua_pop(L, 1);
    } else {
      luaL_tolstring(L, -1, NULL);
      lua_remove(L, -2);
    }
  } else {
    lua_pushnil(L);
  }
}

/* __index of tasks: methods, then the fields id, name, state, site, waiting_on, age. */
static int l_task_index(lua_State *L) {
  aio_task *t = (aio_task *)lua_touserdata(L, 1);  /* __index is only reached from a task */
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  const char *k = lua_tostring(L, 2);
  if (!k) return 0;
  if (strcmp(k, "id") == 0) lua_pushinteger(L, t->id);
  else if (strcmp(k, "name") == 0) aio__push_task_name(L, 1);
  else if (strcmp(k, "state") == 0) lua_pushstring(L, task_state(t));
  else if (strcmp(k, "site") == 0) aio__push_task_site(L, 1);
  else if (strcmp(k, "waiting_on") == 0) push_waiting_on(L, t, 1);
  else if (strcmp(k, "age") == 0)
    {
    aio_loop *loop = aio_loop_get(L);
    lua_pushnumber(L, (double)aio_now_ns(loop) / 1e9 - loop->epoch - t->spawned_at);
  }
  else return 0;
  return 1;
}

/* __tostring: "aio.task 3 'name' (sleeping)". */
static int l_task_tostring(lua_State *L) {
  aio_task *t = check_task(L, 1);
  aio__push_task_name(L, 1);
  lua_pushfstring(L, "aio.task %I '%s' (%s)", (LUA_INTEGER)t->id, lua_tostring(L, -1), task_state(t));
  return 1;
}

/* aio.tasks() -> list of live tasks (in id order), each a table describing it. */
static int l_tasks(lua_State *L) {
  push_anchor(L);
  int anchor = lua_gettop(L);
  lua_newtable(L);
  int list = anchor + 1, n = 0;
  lua_pushnil(L);
  while (lua_next(L, anchor)) {
    if (luaL_testudata(L, -1, AIO_TASK_MT)) {
      lua_pushvalue(L, -1);
      lua_rawseti(L, list, ++n);
    }
    lua_pop(L, 1);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, list, "n");
  return 1;
}

/* aio.run_loop([fut]): runs the loop until fut is done (at top level), without raising its
** error, or until nothing is left. */
static int l_run_loop(lua_State *L) {
  if (aio_current_task(L))
    return luaL_error(L, "aio.run_loop in a task: the loop is already running (it runs this "
                         "task); await the future instead (fut:await()), run_loop is for the top level");
  if (lua_isnoneornil(L, 1)) aio_run_until(L, NULL);
  else aio_run_until(L, aio_future_check(L, 1));
  return 0;
}

/* aio.ntasks() -> number of unfinished tasks. */
static int l_ntasks(lua_State *L) {
  lua_pushinteger(L, aio_loop_get(L)->ntasks);
  return 1;
}

/* Registers the task and error metatables and puts the task functions into the table at -1. */
void aio__open_task(lua_State *L) {
  extern const luaL_Reg *aio__future_methods;
  static const luaL_Reg task_methods[] = {
    {"cancel", l_task_cancel}, {"cancelling", l_task_cancelling}, {"uncancel", l_task_uncancel},
    {"set_name", l_task_set_name}, {"traceback", l_task_traceback}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
    {"spawn", l_spawn}, {"current", l_current}, {"sleep", l_sleep}, {"tasks", l_tasks},
    {"run_loop", l_run_loop}, {"set_task_hook", l_set_task_hook}, {"ntasks", l_ntasks},
    {"redeliver_cancel", l_redeliver_cancel}, {"take_cancel", l_take_cancel}, {NULL, NULL}};
  luaL_newmetatable(L, AIO_TASK_MT);
  lua_newtable(L);
  luaL_setfuncs(L, aio__future_methods, 0);
  lua_pushnil(L);
  lua_setfield(L, -2, "set_result");  /* a task's outcome comes from its function only */
  lua_pushnil(L);
  lua_setfield(L, -2, "set_error");
  luaL_setfuncs(L, task_methods, 0);
  lua_pushcclosure(L, l_task_index, 1);  /* the methods table is its upvalue */
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_task_tostring);
  lua_setfield(L, -2, "__tostring");
  aio_loop *loop = aio_loop_get(L);
  aio_note_metatable(L, &loop->task_mt_ref, &loop->task_mt);
  lua_pop(L, 1);
  aio__open_task_error(L);
  luaL_setfuncs(L, funcs, 0);
  aio__install_coroutine_wrappers(L);
}

/*
** future.c — futures: a value that will be set once, awaited by tasks or by the main thread.
**
** Waiters are tasks linked into an intrusive FIFO list (a task waits on one thing at a time), so
** waiting costs no allocation. Completing a future never resumes anyone: waiters get their
** outcome pushed onto their coroutine and go to the ready queue.
*/
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include "scheduler.h"

static const char FUTURES_KEY = 'F';  /* weak table: light userdata -> future userdata */

/* Appends t to f's waiter list. */
void aio__waiter_add(aio_future *f, aio_task *t) {
  t->wnext = NULL;
  t->wprev = f->wtail;
  if (f->wtail) f->wtail->wnext = t; else f->whead = t;
  f->wtail = t;
  t->waiting = f;
}

/* Unlinks t from f's waiter list. */
void aio__waiter_remove(aio_future *f, aio_task *t) {
  if (t->wprev) t->wprev->wnext = t->wnext; else f->whead = t->wnext;
  if (t->wnext) t->wnext->wprev = t->wprev; else f->wtail = t->wprev;
  t->wnext = t->wprev = NULL;
  t->waiting = NULL;
}

/* Pushes the registry table stored under key, creating it weak (__mode = mode) at first use. */
void aio_push_weak_table(lua_State *L, const void *key, const char *mode) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* Pushes the weak table that maps futures' addresses to their userdata. */
static void push_future_table(lua_State *L) {
  aio_push_weak_table(L, &FUTURES_KEY, "v");
}

/* Pushes a new pending future of size bytes (a future, or a struct that begins with one). */
static aio_future *future_new_sized(lua_State *L, size_t size) {
  aio_future *f = (aio_future *)lua_newuserdatauv(L, size, AIO_FUTURE_NUV);
  memset(f, 0, size);
  lua_rawgeti(L, LUA_REGISTRYINDEX, aio_loop_get(L)->future_mt_ref);
  lua_setmetatable(L, -2);
  push_future_table(L);
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, f);
  lua_pop(L, 1);
  return f;
}

/* Pushes a new pending future. */
aio_future *aio_future_new(lua_State *L) {
  return future_new_sized(L, sizeof(aio_future));
}

/* Pushes the future or task f. */
void aio_future_push(lua_State *L, aio_future *f) {
  if (f->is_task) {
    aio__task_push(L, (aio_task *)f);
    return;
  }
  push_future_table(L);
  lua_rawgetp(L, -1, f);
  lua_remove(L, -2);
}

/* The future or task at idx, if it belongs to loop's state, with its metatable pushed; or NULL,
** with nothing pushed. For a loop that pops it with the rest of its stack (one call less). */
static aio_future *future_test_push_mt(lua_State *L, int idx, aio_loop *loop) {
  /* Called on every future method: the metatable is compared by address with the two the loop
  ** noted when it made them (luaL_testudata looks each up by name: a string hash each time). */
  void *p = lua_touserdata(L, idx);
  if (!p || lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  const void *mt = lua_topointer(L, -1);
  if (mt == loop->task_mt || mt == loop->future_mt) return (aio_future *)p;
  lua_pop(L, 1);
  return NULL;
}

/* The future or task at idx, if it belongs to loop's state, or NULL. */
static aio_future *future_test_in(lua_State *L, int idx, aio_loop *loop) {
  aio_future *f = future_test_push_mt(L, idx, loop);
  if (f) lua_pop(L, 1);
  return f;
}

/* Returns the future (or task) at idx, or NULL. */
aio_future *aio_future_test(lua_State *L, int idx) {
  return future_test_in(L, idx, aio_loop_get(L));
}

/* Notes the metatable on top of L (left there) for fast use: its registry ref and address. */
void aio_note_metatable(lua_State *L, int *ref, const void **addr) {
  lua_pushvalue(L, -1);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  *addr = lua_topointer(L, -1);
}

/* Checks that the value at idx is a future or a task. */
aio_future *aio_future_check(lua_State *L, int idx) {
  aio_future *f = aio_future_test(L, idx);
  if (!f) luaL_typeerror(L, idx, "future or task");
  return f;
}

/* when_all's future: a plain future (to everyone else) that counts its children. Every child
** holds the group itself as its done callback: counting a child down is a C call, with no Lua
** call and no closure (a C closure per group cost ~330 instructions per child). */
typedef struct aio_group {
  aio_future fut;               /* first member: a group is a future */
  lua_Integer remaining;        /* children not yet done */
  int return_exceptions;        /* a failed child settles the group only without it */
} aio_group;

/* Counts down the group at gidx for its child f, at (absolute) fidx, which just finished:
** settles the group at the child's failure (unless return_exceptions) or once none is left. */
static void group_child_done(lua_State *L, int gidx, aio_future *f, int fidx) {
  aio_group *g = (aio_group *)lua_touserdata(L, gidx);
  g->remaining--;
  if (g->fut.state != AIO_PENDING) return;
  if (f->state != AIO_DONE && !g->return_exceptions) {
    luaL_checkstack(L, LUA_MINSTACK, NULL);
    lua_pushvalue(L, fidx);
    aio_future_resolve(L, &g->fut, 1);   /* the first failure, in time */
  } else if (g->remaining == 0) {
    luaL_checkstack(L, LUA_MINSTACK, NULL);
    aio_future_resolve(L, &g->fut, 0);
  }
}

/* Runs the synchronous done callback at (absolute) cbidx, of Lua type cbtype, for the finished
** future f at (absolute) fidx: a function (called protected, errors reported) or a when_all
** group (counted down). */
static void run_sync_callback(lua_State *L, int cbidx, int cbtype, aio_future *f, int fidx) {
  if (cbtype == LUA_TUSERDATA) {
    group_child_done(L, cbidx, f, fidx);
    return;
  }
  lua_pushvalue(L, cbidx);
  lua_pushvalue(L, fidx);
  aio_pcall_report(L, 1, 0);
}

/* Runs the done callbacks of the future at fidx. The callbacks slot holds nil, one synchronous
** callback (the common case: gather, wait, as_completed on a task — no allocation), or a list
** whose entries are synchronous callbacks or {fn, site} tables for callbacks that run as tasks
** (site: where add_done_callback was called, the task's spawn site). A synchronous callback is
** a function or a when_all group (aio_group). */
static void run_callbacks(lua_State *L, aio_future *f, int fidx) {
  if (!f->has_callbacks) return;
  int type = lua_getiuservalue(L, fidx, AIO_FUV_CALLBACKS);
  if (type == LUA_TUSERDATA) {  /* the common case: a when_all group (gather) */
    group_child_done(L, -1, f, fidx);
    lua_pop(L, 1);
    return;
  }
  if (type != LUA_TTABLE) {
    if (type != LUA_TNIL) run_sync_callback(L, lua_gettop(L), type, f, fidx);
    lua_pop(L, 1);
    return;
  }
  int cbs = lua_gettop(L);
  lua_Integer n = luaL_len(L, cbs);
  for (lua_Integer i = 1; i <= n; i++) {
    int type = lua_rawgeti(L, cbs, i);
    if (type == LUA_TTABLE) {  /* runs as a task */
      int entry = lua_gettop(L);
      lua_rawgeti(L, entry, 2);
      lua_rawgeti(L, entry, 1);
      lua_pushvalue(L, fidx);
      aio__spawn_at(L, 1, entry + 1);
      lua_settop(L, entry - 1);
    } else {
      run_sync_callback(L, cbs + 1, type, f, fidx);
      lua_settop(L, cbs);
    }
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, fidx, AIO_FUV_CALLBACKS);
  f->has_callbacks = 0;
}

/* Wakes the waiters of the finished future f, on top of L at (absolute) fidx, and runs its
** callbacks. */
void aio__future_finish(lua_State *L, aio_future *f, int fidx) {
  if (f->topwaiters) aio_loop_wake(aio_loop_get(L));  /* the main thread waits: no blocking poll */
  while (f->whead) {
    aio_task *t = f->whead;
    aio__waiter_remove(f, t);
    f->observed = 1;
    aio__task_wake(L, t, aio_future_push_outcome(L, fidx));
  }
  run_callbacks(L, f, fidx);
}

/* Completes f with the nvalues on top of L (popped). No-op if f is no longer pending. */
void aio_future_resolve(lua_State *L, aio_future *f, int nvalues) {
  if (f->state != AIO_PENDING) { lua_pop(L, nvalues); return; }
  aio_future_push(L, f);
  int fidx = lua_gettop(L);
  if (nvalues == 1) {
    lua_pushvalue(L, fidx - 1);
  } else if (nvalues > 1) {
    lua_createtable(L, nvalues, 0);
    for (int i = 1; i <= nvalues; i++) {
      lua_pushvalue(L, fidx - nvalues - 1 + i);
      lua_rawseti(L, -2, i);
    }
  } else {
    lua_pushnil(L);
  }
  lua_setiuservalue(L, fidx, AIO_FUV_RESULT);
  f->nresults = nvalues;
  f->state = AIO_DONE;
  aio__future_finish(L, f, fidx);
  lua_pop(L, nvalues + 1);
}

/* Fails f with the error value on top of L (popped). No-op if f is no longer pending. */
void aio_future_reject(lua_State *L, aio_future *f) {
  if (f->state != AIO_PENDING) { lua_pop(L, 1); return; }
  aio_future_push(L, f);
  lua_insert(L, -2);
  f->state = aio_is_cancelled(L, -1) ? AIO_CANCELLED : AIO_FAILED;
  lua_setiuservalue(L, -2, AIO_FUV_RESULT);
  aio__future_finish(L, f, lua_gettop(L));
  lua_pop(L, 1);
}

/* Cancels a pending future: runs on_cancel, then wakes waiters with a cancellation error. */
int aio_future_cancel(lua_State *L, aio_future *f, const char *msg) {
  if (f->state != AIO_PENDING) return 0;
  if (f->is_task) return aio_task_cancel(L, (aio_task *)f, msg);
  if (f->on_cancel) {
    void (*fn)(lua_State *, aio_future *, void *) = f->on_cancel;
    f->on_cancel = NULL;
    fn(L, f, f->on_cancel_ud);
  }
  aio_push_cancelled(L, msg);
  aio_future_reject(L, f);
  return 1;
}

/* Pushes the outcome of the finished future at fidx: (true, results...) or (false, err). */
int aio_future_push_outcome(lua_State *L, int fidx) {
  fidx = lua_absindex(L, fidx);
  aio_future *f = (aio_future *)lua_touserdata(L, fidx);
  if (f->state != AIO_DONE) {
    lua_pushboolean(L, 0);
    lua_getiuservalue(L, fidx, AIO_FUV_RESULT);
    return 2;
  }
  int n = f->nresults;
  luaL_checkstack(L, n + 2, "too many results");
  lua_pushboolean(L, 1);
  lua_getiuservalue(L, fidx, AIO_FUV_RESULT);
  if (n > 1) {
    int packed = lua_gettop(L);
    for (int i = 1; i <= n; i++) lua_rawgeti(L, packed, i);
    lua_remove(L, packed);
  } else if (n == 0) {
    lua_pop(L, 1);
  }
  return n + 1;
}

/* Raises the outcome of the finished future at fidx, or returns its results. */
int aio__return_outcome(lua_State *L, int fidx) {
  aio__observe(L, fidx);
  int n = aio_future_push_outcome(L, fidx);
  if (!lua_toboolean(L, -n)) return lua_error(L);
  return n - 1;
}

/* ---- Lua bindings: aio.future() ------------------------------------------------------- */

/* aio.future([label]) -> a new pending future. */
static int l_future_new(lua_State *L) {
  int has_label = !lua_isnoneornil(L, 1);
  aio_future_new(L);
  if (has_label) {
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, AIO_FUV_LABEL);
  }
  return 1;
}

/* fut:set_result(...): completes the future; raises if it is already done. */
static int l_future_set_result(lua_State *L) {
  aio_future *f = (aio_future *)luaL_checkudata(L, 1, AIO_FUTURE_MT);
  if (f->state != AIO_PENDING) return luaL_error(L, "future is already done");
  aio_future_resolve(L, f, lua_gettop(L) - 1);
  return 0;
}

/* fut:set_error(err): fails the future; raises if it is already done, or if err is nil (a
** failure without an error value would look like a success to exception() and wait). */
static int l_future_set_error(lua_State *L) {
  aio_future *f = (aio_future *)luaL_checkudata(L, 1, AIO_FUTURE_MT);
  luaL_argexpected(L, !lua_isnoneornil(L, 2), 2, "error value");
  if (f->state != AIO_PENDING) return luaL_error(L, "future is already done");
  lua_settop(L, 2);
  aio_future_reject(L, f);
  return 0;
}

/* fut:await() -> its results, or raises its error. */
static int l_future_await(lua_State *L) {
  aio_future_check(L, 1);
  lua_settop(L, 1);
  return aio_await(L, 1);
}

/* fut:done() -> true once it has an outcome (result, error or cancellation). */
static int l_future_done(lua_State *L) {
  lua_pushboolean(L, aio_future_check(L, 1)->state != AIO_PENDING);
  return 1;
}

/* fut:cancelled() -> true if it was cancelled. */
static int l_future_cancelled(lua_State *L) {
  lua_pushboolean(L, aio_future_check(L, 1)->state == AIO_CANCELLED);
  return 1;
}

/* fut:result() -> its results; raises its error, or if it is not done yet. */
static int l_future_result(lua_State *L) {
  aio_future *f = aio_future_check(L, 1);
  if (f->state == AIO_PENDING) return luaL_error(L, "result is not ready yet (await it first)");
  return aio__return_outcome(L, 1);
}

/* fut:exception() -> its error value, or nil if it succeeded; raises if not done. */
static int l_future_exception(lua_State *L) {
  aio_future *f = aio_future_check(L, 1);
  if (f->state == AIO_PENDING) return luaL_error(L, "future is not done yet");
  aio__observe(L, 1);
  if (f->state == AIO_DONE) return 0;
  lua_getiuservalue(L, 1, AIO_FUV_RESULT);
  return 1;
}

/* fut:cancel([msg]) -> true if it was pending and is now cancelled. */
static int l_future_cancel(lua_State *L) {
  aio_future *f = aio_future_check(L, 1);
  lua_pushboolean(L, aio_future_cancel(L, f, luaL_optstring(L, 2, NULL)));
  return 1;
}

/* Adds the function at (absolute) fnidx to the callbacks of f, the future at (absolute) fidx,
** as a task callback or (sync) an internal one (a function, or a when_all group). Adding one
** does not observe f's error. */
static void add_callback_to(lua_State *L, aio_future *f, int fidx, int fnidx, int sync) {
  if (f->state != AIO_PENDING) {  /* already done: run it now (sync) or soon (task) */
    if (sync) {
      run_sync_callback(L, fnidx, lua_type(L, fnidx), f, fidx);
    } else {
      lua_pushvalue(L, fnidx);
      lua_pushvalue(L, fidx);
      aio_spawn(L, 1);
      lua_pop(L, 1);
    }
    return;
  }
  if (!f->has_callbacks && sync) {  /* the common case: one synchronous callback, no table */
    lua_pushvalue(L, fnidx);
    lua_setiuservalue(L, fidx, AIO_FUV_CALLBACKS);
    f->has_callbacks = 1;
    return;
  }
  int type = lua_getiuservalue(L, fidx, AIO_FUV_CALLBACKS);
  f->has_callbacks = 1;  /* below: a list, or one callback kept and this one added */
  if (type != LUA_TTABLE) {  /* make a list, keeping the single callback there was */
    lua_newtable(L);
    if (type != LUA_TNIL) {
      lua_pushvalue(L, -2);
      lua_rawseti(L, -2, 1);
    }
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, fidx, AIO_FUV_CALLBACKS);
  }
  if (sync) {
    lua_pushvalue(L, fnidx);
  } else {
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, fnidx);
    lua_rawseti(L, -2, 1);
    aio__push_site(L);
    lua_rawseti(L, -2, 2);
  }
  lua_rawseti(L, -2, luaL_len(L, -2) + 1);
  lua_pop(L, type == LUA_TTABLE ? 1 : 2);
}

/* Adds fn (at 2) to the callbacks of the future at 1, observing its error if observe is set. */
static int add_callback(lua_State *L, int sync, int observe) {
  aio_future *f = aio_future_check(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (observe) aio__observe(L, 1);
  add_callback_to(L, f, 1, 2, sync);
  return 0;
}

/* Checks gather's (list, n, return_exceptions) arguments, leaving exactly those three. */
static lua_Integer check_list_args(lua_State *L, int *return_exceptions) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = luaL_checkinteger(L, 2);
  *return_exceptions = lua_toboolean(L, 3);
  lua_settop(L, 3);
  return n;
}

/* aio.core.collect(list, n, return_exceptions [, in_place]) -> {n=n, first result of each} of
** n finished futures or tasks, in order; with return_exceptions a failed one gives its error
** value, otherwise its error is raised (gather's last step, one C call instead of two per
** child). in_place: the results replace the futures in list itself, which is returned (gather's
** own copy: no second table of n slots, 1.6 MB for 100,000 tasks). */
static int l_collect(lua_State *L) {
  int return_exceptions, in_place = lua_toboolean(L, 4);
  lua_Integer n = check_list_args(L, &return_exceptions);
  if (in_place) lua_pushvalue(L, 1);                          /* 4: results */
  else lua_createtable(L, n > 0 && n < INT_MAX ? (int)n : 0, 1);
  lua_pushinteger(L, n);
  lua_setfield(L, 4, "n");
  aio_loop *loop = aio_loop_get(L);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);                                    /* 5 */
    aio_future *f = future_test_push_mt(L, 5, loop);         /* 6: its metatable */
    if (!f) return luaL_typeerror(L, 5, "future or task");
    if (f->state == AIO_PENDING) return luaL_error(L, "result is not ready yet (await it first)");
    if (f->state == AIO_FAILED && !f->observed) aio__observe(L, 5);
    f->observed = 1;  /* what aio__observe does to any other future, without its call */
    if (f->state != AIO_DONE) {
      lua_getiuservalue(L, 5, AIO_FUV_RESULT);
      if (!return_exceptions) return lua_error(L);
    } else if (f->nresults == 0) {
      lua_pushnil(L);
    } else if (lua_getiuservalue(L, 5, AIO_FUV_RESULT) == LUA_TTABLE && f->nresults > 1) {
      lua_rawgeti(L, -1, 1);                                 /* packed results: the first */
      lua_remove(L, -2);
    }
    lua_rawseti(L, 4, i);
    lua_settop(L, 4);
  }
  return 1;
}

/* Pushes a new when_all group of n children (pending, or settled at once when n <= 0). */
static aio_group *group_new(lua_State *L, lua_Integer n, int return_exceptions) {
  aio_group *g = (aio_group *)future_new_sized(L, sizeof *g);
  g->remaining = n;
  g->return_exceptions = return_exceptions;
  if (n <= 0) aio_future_resolve(L, &g->fut, 0);
  return g;
}

/* Puts the group at (absolute) gidx on the done callbacks of the n futures or tasks of list
** (at 1), which must all be ones. */
static void group_watch(lua_State *L, int gidx, lua_Integer n) {
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    add_callback_to(L, (aio_future *)lua_touserdata(L, -1), lua_gettop(L), gidx, 1);
    lua_pop(L, 1);
  }
}

/* aio.core.when_all(list, n, return_exceptions) -> a future that completes when the n futures
** or tasks of list are all done, or, without return_exceptions, with the first that fails as
** its result. gather's bookkeeping in C: a Lua callback per child cost ~2,500 instructions. */
static int l_when_all(lua_State *L) {
  int return_exceptions;
  lua_Integer n = check_list_args(L, &return_exceptions);
  aio_loop *loop = aio_loop_get(L);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    if (!future_test_in(L, 4, loop)) return luaL_typeerror(L, 4, "future or task");
    lua_pop(L, 1);
  }
  group_new(L, n, return_exceptions);                   /* 4 */
  group_watch(L, 4, n);
  return 1;
}

/* Takes the group at (absolute) gidx off the callbacks of the future at the top (once: its
** last entry there, the others moved down; or the single slot). */
static void callbacks_remove(lua_State *L, int gidx) {
  int top = lua_gettop(L);
  int type = lua_getiuservalue(L, top, AIO_FUV_CALLBACKS);
  if (type != LUA_TTABLE) {
    if (lua_rawequal(L, -1, gidx)) {
      lua_pushnil(L);
      lua_setiuservalue(L, top, AIO_FUV_CALLBACKS);
      ((aio_future *)lua_touserdata(L, top))->has_callbacks = 0;
    }
  } else {
    lua_Integer n = luaL_len(L, -1), j = n;
    while (j >= 1 && (lua_rawgeti(L, top + 1, j), !lua_rawequal(L, -1, gidx))) {
      lua_pop(L, 1);
      j--;
    }
    for (; j >= 1 && j < n; j++) {
      lua_rawgeti(L, top + 1, j + 1);
      lua_rawseti(L, top + 1, j);
    }
    if (j >= 1) {  /* found, and the ones after it moved down */
      lua_pushnil(L);
      lua_rawseti(L, top + 1, n);
    }
  }
  lua_settop(L, top);
}

/* Takes the group at (absolute) gidx back off the callbacks of the first n futures or tasks of
** list (at lidx), which it was just put on (when_all_copy meeting a value that is not one).
** A done one ran the group at once and kept nothing. */
static void group_unwatch(lua_State *L, int lidx, int gidx, lua_Integer n) {
  for (lua_Integer i = n; i >= 1; i--) {
    lua_rawgeti(L, lidx, i);
    if (((aio_future *)lua_touserdata(L, -1))->state == AIO_PENDING) callbacks_remove(L, gidx);
    lua_pop(L, 1);
  }
}

/* aio.core.when_all_copy(list, n, return_exceptions) -> when_all's future and a copy
** {n = n, ...} of list[1..n] (gather's own list, which its caller may change meanwhile), or
** nil, with nothing watched, if they are not all futures or tasks. gather's start in one call
** and one pass: each child is checked, watched and copied as it is read (~800 instructions per
** child as three calls, ~500 as one call and two passes, ~350 now); a value that is not a
** future undoes the watches made so far, which nothing can have observed meanwhile. */
static int l_when_all_copy(lua_State *L) {
  int return_exceptions;
  lua_Integer n = check_list_args(L, &return_exceptions);
  lua_createtable(L, n > 0 && n < INT_MAX ? (int)n : 0, 1);   /* 4: the copy */
  lua_pushinteger(L, n);
  lua_setfield(L, 4, "n");
  group_new(L, n, return_exceptions);                   /* 5 */
  aio_loop *loop = aio_loop_get(L);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);                               /* 6 */
    aio_future *f = future_test_in(L, 6, loop);
    if (!f) {
      group_unwatch(L, 4, 5, i - 1);
      return 0;
    }
    add_callback_to(L, f, 6, 5, 1);
    lua_rawseti(L, 4, i);
  }
  lua_pushvalue(L, 4);
  return 2;
}

/* fut:add_done_callback(fn): fn(fut) runs as a task once the future is done. */
static int l_future_add_done_callback(lua_State *L) {
  return add_callback(L, 0, 1);
}

/* aio.core.on_done(fut, fn): fn(fut) runs synchronously when the future completes; it counts
** as observing fut's error (fn receives fut). */
static int l_future_on_done(lua_State *L) {
  return add_callback(L, 1, 1);
}

/* aio.core._watch(fut, fn): on_done for internal watchers that only want to be woken (wait,
** as_completed, wait_for, group, pool maps): it does not observe fut's error, so a failure the
** caller never looks at is still reported. */
static int l_future_watch(lua_State *L) {
  return add_callback(L, 1, 0);
}

/* aio.core._failed(fut) -> true if fut failed with an error other than a cancellation; unlike
** exception(), it does not observe that error (wait's first_exception, group). */
static int l_future_failed(lua_State *L) {
  lua_pushboolean(L, aio_future_check(L, 1)->state == AIO_FAILED);
  return 1;
}

/* __tostring: "aio.future: pending (label)". */
static int l_future_tostring(lua_State *L) {
  static const char *const states[] = {"pending", "done", "failed", "cancelled"};
  aio_future *f = (aio_future *)luaL_checkudata(L, 1, AIO_FUTURE_MT);
  lua_getiuservalue(L, 1, AIO_FUV_LABEL);
  if (lua_isnil(L, -1)) lua_pushfstring(L, "aio.future (%s): %p", states[f->state], (void *)f);
  else lua_pushfstring(L, "aio.future '%s' (%s)", luaL_tolstring(L, -1, NULL), states[f->state]);
  return 1;
}

static const luaL_Reg future_methods[] = {
  {"set_result", l_future_set_result}, {"set_error", l_future_set_error},
  {"await", l_future_await}, {"done", l_future_done}, {"cancelled", l_future_cancelled},
  {"result", l_future_result}, {"exception", l_future_exception}, {"cancel", l_future_cancel},
  {"add_done_callback", l_future_add_done_callback}, {NULL, NULL}
};

/* Shared by tasks: the future methods that also apply to a task. */
const luaL_Reg *aio__future_methods = future_methods;

/* Creates the future metatable and puts future/on_done into the module table at -1. */
void aio__open_future(lua_State *L) {
  aio_loop *loop = aio_loop_get(L);
  luaL_newmetatable(L, AIO_FUTURE_MT);
  aio_note_metatable(L, &loop->future_mt_ref, &loop->future_mt);
  luaL_newlib(L, future_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_future_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_future_new);
  lua_setfield(L, -2, "future");
  lua_pushcfunction(L, l_future_on_done);
  lua_setfield(L, -2, "on_done");
  lua_pushcfunction(L, l_future_watch);
  lua_setfield(L, -2, "_watch");
  lua_pushcfunction(L, l_future_failed);
  lua_setfield(L, -2, "_failed");
  lua_pushcfunction(L, l_when_all);
  lua_setfield(L, -2, "when_all");
  lua_pushcfunction(L, l_when_all_copy);
  lua_setfield(L, -2, "when_all_copy");
  lua_pushcfunction(L, l_collect);
  lua_setfield(L, -2, "collect");
}

/* Pushes a new pending future that C code holds and settles later (aio.h). */
aio_future *aio_future_new_held(lua_State *L, int *ref,
                                void (*on_cancel)(lua_State *L, aio_future *f, void *ud),
                                void *ud) {
  aio_future *f = aio_future_new(L);
  *ref = aio_ref(L, -1);
  f->on_cancel = on_cancel;
  f->on_cancel_ud = ud;
  return f;
}

/* Keeps the value at idx alive while C code owns it; returns a registry ref. */
int aio_ref(lua_State *L, int idx) {
  lua_pushvalue(L, idx);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Releases a ref made by aio_ref (LUA_NOREF/LUA_REFNIL are ignored). */
void aio_unref(lua_State *L, int ref) {
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

/* Pushes the value of a ref. */
void aio_pushref(lua_State *L, int ref) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
}

/* ---- held values: what a served waiter's future holds until its task runs ---------------- */

#define HELD_MT "aio.held"

/* A C value handed to a waiter's future, taken by the waiter when its task runs (or dropped). */
typedef struct held {
  void *p;
  void (*drop)(void *p);
} held;

/* __gc of a held value nobody took (its task never ran again): drops it. */
static int held_gc(lua_State *L) {
  held *h = (held *)lua_touserdata(L, 1);
  if (h->p) h->drop(h->p);
  h->p = NULL;
  return 0;
}

/* Protected: pushes a held value for the value at 1, dropped by the function at 2, which it
** then owns. */
static int push_held_p(lua_State *L) {
  if (luaL_newmetatable(L, HELD_MT)) {
    lua_pushcfunction(L, held_gc);
    lua_setfield(L, -2, "__gc");
  }
  held *h = (held *)lua_newuserdatauv(L, sizeof *h, 0);
  h->p = lua_touserdata(L, 1);
  h->drop = *(void (**)(void *))lua_touserdata(L, 2);
  lua_insert(L, -2);
  lua_setmetatable(L, -2);
  return 1;
}

/* Resolves f with a held value p (aio.h), or, when out of memory, drops p and rejects f. */
void aio_future_resolve_held(lua_State *L, aio_future *f, void *p, void (*drop)(void *p)) {
  lua_pushcfunction(L, push_held_p);
  lua_pushlightuserdata(L, p);
  lua_pushlightuserdata(L, (void *)&drop);
  if (lua_pcall(L, 2, 1, 0) == LUA_OK) {
    aio_future_resolve(L, f, 1);
  } else {
    drop(p);
    aio_future_reject(L, f);
  }
}

/* Takes the value out of the held value at idx: NULL if idx holds none (or it was taken). */
void *aio_held_take(lua_State *L, int idx) {
  held *h = (held *)luaL_testudata(L, idx, HELD_MT);
  void *p = h ? h->p : NULL;
  if (h) h->p = NULL;
  return p;
}

/* Protected: pushes a new future and stores its registry ref at the int (light userdata at 1). */
static int new_held_p(lua_State *L) {
  int *ref = (int *)lua_touserdata(L, 1);
  aio_future_new(L);
  *ref = aio_ref(L, -1);
  return 1;
}

/* Makes a waiter of `size` zeroed bytes for a new held future (aio_future_new_held, pushed),
** whose on_cancel(L, f, ud) is set once both exist; the future and its ref are stored in the
** waiter at fut_at and ref_at. Never raises: NULL (nothing pushed, nothing held) when out of
** memory, so that the caller can free what it owns first. */
void *aio_waiter_alloc(lua_State *L, size_t size, size_t fut_at, size_t ref_at,
                       void (*on_cancel)(lua_State *L, aio_future *f, void *ud), void *ud) {
  int ref = LUA_NOREF;
  lua_pushcfunction(L, new_held_p);
  lua_pushlightuserdata(L, &ref);
  char *w = lua_pcall(L, 1, 1, 0) == LUA_OK ? calloc(1, size) : NULL;
  if (!w) {
    aio_unref(L, ref);
    lua_pop(L, 1);
    return NULL;
  }
  aio_future *f = (aio_future *)lua_touserdata(L, -1);
  f->on_cancel = on_cancel;
  f->on_cancel_ud = ud ? ud : w;
  memcpy(w + fut_at, &f, sizeof f);
  memcpy(w + ref_at, &ref, sizeof ref);
  return w;
}

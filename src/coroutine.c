/*
** coroutine.c — coroutine.resume and coroutine.wrap that let an await inside a plain (generator)
** coroutine pass through to whoever drives it, and back (cqueues does the same).
**
** An await inside a coroutine yields the await key. Our resume sees it and, inside a task or a
** yieldable coroutine, yields it further up (lua_yieldk), resuming the inner coroutine with the
** outcome when the scheduler wakes us; on the main thread it runs the loop until the awaited
** future is done. Any other yield is an ordinary generator yield and is returned as usual, so
** the generator protocol is untouched. Error messages and statuses are those of lbaselib.c.
*/
#include <lualib.h>
#include "scheduler.h"

/* What a generator's extra space holds while an await inside it passes through its resume
** (resume_loop): only that resume may continue it. A task's own coroutine holds its task. */
static const char PASSING = 'P';
#define PASSING_THROUGH ((aio_task *)(void *)&PASSING)

/* True if co can be resumed (lcorolib's "suspended": yielded, or not started yet). */
static int co_suspended(lua_State *co) {
  lua_Debug ar;
  if (lua_status(co) == LUA_YIELD) return 1;
  return lua_status(co) == LUA_OK && !lua_getstack(co, 0, &ar) && lua_gettop(co) > 0;
}

/* True if co is suspended but only its driver may resume it: a task's coroutine (the
** scheduler), or a generator whose await passes through the resume that drives it. Resuming
** it from elsewhere would hand its await arbitrary values, so for everyone else it is a
** "normal" coroutine, as one that resumed another. (A plain generator's extra space is NULL
** whenever it is suspended: resume_loop clears it after each resume.) */
static int driven_elsewhere(lua_State *co) {
  return co_suspended(co) && *(aio_task **)lua_getextraspace(co) != NULL;
}

/* Resumes the coroutine at index 1 with the narg values above it, passing awaits through;
** returns like lua_resume's caller in lbaselib: pushes results, or returns -1 with the error.
** `continuing`: this is the driver coming back with the outcome of a passed-through await. */
static int resume_loop(lua_State *L, int narg, int continuing) {
  lua_State *co = lua_tothread(L, 1);
  if (!continuing && driven_elsewhere(co)) {
    lua_pushliteral(L, "cannot resume non-suspended coroutine");  /* lua_resume's words */
    return -1;
  }
  for (;;) {
    int status, nres;
    /* A running or normal co (ourselves, or one resuming us) only makes lua_resume fail; its
    ** task pointer is in use (a task's coroutine, a generator) and must stay as it is. */
    int resumable = co_suspended(co);
    if (!lua_checkstack(co, narg)) {
      lua_pushliteral(L, "too many arguments to resume");
      return -1;
    }
    lua_xmove(L, co, narg);
    aio_task *outer = aio_current_task(L);
    if (resumable) *(aio_task **)lua_getextraspace(co) = outer;
    int main_loop = aio__main_loop && aio__main_loop->L == aio_loop_get(L)->L;
    lua_State *running = main_loop ? aio__running_co : NULL;  /* main thread's only */
    if (main_loop) aio__running_co = co;
    /* From where a task cannot yield, an await in co could not pass up: it must raise at once,
    ** before it registers the task as a waiter (check_can_suspend) */
    unsigned stuck = outer ? outer->stuck_in_c : 0;
    if (outer && !lua_isyieldable(L)) outer->stuck_in_c = 1;
    status = lua_resume(co, L, narg, &nres);
    if (outer) outer->stuck_in_c = stuck;
    if (main_loop) aio__running_co = running;
    if (resumable) *(aio_task **)lua_getextraspace(co) = NULL;  /* no stale task pointer */
    if (status == LUA_YIELD && nres >= 1 && lua_touserdata(co, -nres) == &aio__await_key) {
      if (outer || lua_isyieldable(L)) {  /* pass the await up to whoever drives us */
        *(aio_task **)lua_getextraspace(co) = PASSING_THROUGH;
        lua_settop(L, 1);
        lua_xmove(co, L, nres);
        return -2;  /* caller yields with resume_k */
      }
      /* The main thread: run the loop until the awaited future is done, then resume. */
      lua_xmove(co, L, nres);
      aio_future *f = aio_future_check(L, -1);
      *(aio_task **)lua_getextraspace(co) = PASSING_THROUGH;  /* tasks run meanwhile */
      aio_run_until(L, f);
      int fidx = lua_gettop(L);
      narg = aio_future_push_outcome(L, fidx);
      lua_remove(L, fidx);
      lua_remove(L, fidx - 1);
      continue;
    }
    if (status == LUA_OK || status == LUA_YIELD) {
      if (!lua_checkstack(L, nres + 1)) {
        lua_pop(co, nres);
        lua_pushliteral(L, "too many results to resume");
        return -1;
      }
      lua_xmove(co, L, nres);
      return nres;
    }
    lua_xmove(co, L, 1);  /* the error object */
    return -1;
  }
}

static int co_resume_finish(lua_State *L, int r);

/* Continuation of coroutine.resume after a passed-through await. */
static int co_resume_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  return co_resume_finish(L, resume_loop(L, lua_gettop(L) - 1, 1));
}

/* Turns resume_loop's answer into coroutine.resume's results (or a pass-through yield). */
static int co_resume_finish(lua_State *L, int r) {
  if (r == -2) return lua_yieldk(L, lua_gettop(L) - 1, 0, co_resume_k);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

/* coroutine.resume(co, ...), with awaits inside co passing through to the scheduler. */
static int l_co_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "thread");  /* lcorolib's message: "thread expected" */
  return co_resume_finish(L, resume_loop(L, lua_gettop(L) - 1, 0));
}

static int co_wrap_finish(lua_State *L, int r);

/* Continuation of a coroutine.wrap function after a passed-through await. */
static int co_wrap_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  return co_wrap_finish(L, resume_loop(L, lua_gettop(L) - 1, 1));
}

/* Turns resume_loop's answer into a wrap function's results (errors propagate). */
static int co_wrap_finish(lua_State *L, int r) {
  if (r == -2) return lua_yieldk(L, lua_gettop(L) - 1, 0, co_wrap_k);
  if (r < 0) {
    lua_State *co = lua_tothread(L, 1);
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) {  /* an error inside: close its tbc variables */
      stat = lua_resetthread(co);
      lua_xmove(co, L, 1);
    }
    if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  return r;
}

/* The function made by coroutine.wrap: resumes its coroutine (upvalue 1). */
static int co_wrap_call(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  return co_wrap_finish(L, resume_loop(L, lua_gettop(L) - 1, 0));
}

/* coroutine.wrap(fn), with awaits inside passing through to the scheduler. */
static int l_co_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, co_wrap_call, 1);
  return 1;
}

/* coroutine.status(co): lcorolib's (upvalue 1), but "normal" for a coroutine only its driver
** may resume (driven_elsewhere). */
static int l_co_status(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "thread");
  if (co != L && driven_elsewhere(co)) {
    lua_pushliteral(L, "normal");
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

/* coroutine.close(co): lcorolib's (upvalue 1), but refusing, as for any normal coroutine, one
** only its driver may resume (closing it would pull a task or an await from under it). */
static int l_co_close(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "thread");
  if (co != L && driven_elsewhere(co)) return luaL_error(L, "cannot close a normal coroutine");
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* Sets field name of the table on top to fn, a closure over the field's current value. */
static void wrap_field(lua_State *L, const char *name, lua_CFunction fn) {
  lua_getfield(L, -1, name);
  if (lua_tocfunction(L, -1) == fn) {  /* already wrapped */
    lua_pop(L, 1);
    return;
  }
  lua_pushcclosure(L, fn, 1);
  lua_setfield(L, -2, name);
}

/* Replaces coroutine.resume and coroutine.wrap with the await-aware versions, and
** coroutine.status and coroutine.close with ones that know what only a driver may resume. */
void aio__install_coroutine_wrappers(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_COLIBNAME) == LUA_TTABLE) {
    lua_pushcfunction(L, l_co_resume);
    lua_setfield(L, -2, "resume");
    lua_pushcfunction(L, l_co_wrap);
    lua_setfield(L, -2, "wrap");
    wrap_field(L, "status", l_co_status);
    wrap_field(L, "close", l_co_close);
  }
  lua_pop(L, 2);
}


/*
** task_error.c — what a task's failure becomes and who hears of it: the aio.error object (a
** task's error with its name, traceback and spawn site; cancellation errors), the text of any
** error value, protected calls that print their error, and the registry of failures nobody
** observed, reported at exit and above the REPL's prompt.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "scheduler.h"

static const char UNOBSERVED_KEY = 'U';  /* registry: failed task -> true, until observed */

/* Pushes a cancellation error object with message msg. */
void aio_push_cancelled(lua_State *L, const char *msg) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, msg ? msg : "cancelled");
  lua_setfield(L, -2, "message");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "cancelled");
  luaL_setmetatable(L, AIO_ERROR_MT);
}

/* Non-zero if the value at idx is a cancellation error. */
int aio_is_cancelled(lua_State *L, int idx) {
  if (!luaL_testudata(L, idx, AIO_ERROR_MT) && !(lua_istable(L, idx) && lua_getmetatable(L, idx)))
    return 0;
  if (lua_istable(L, idx)) {  /* compare the metatable pushed above */
    luaL_getmetatable(L, AIO_ERROR_MT);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!same) return 0;
    lua_getfield(L, idx, "cancelled");
    int c = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return c;
  }
  return 0;
}

/* Calls the __tostring of the value at 1 (run protected by aio_push_error_text). */
static int call_tostring(lua_State *L) {
  luaL_callmeta(L, 1, "__tostring");
  return 1;
}

/* Pushes the text of the error value at idx and returns it, never raising: a string or a
** number as text (converting a copy: the value itself stays a number), else what its
** __tostring returns, called protected (one that raises or returns no string must not break
** the scheduler), else "(error object is a X value)". */
const char *aio_push_error_text(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  int type = lua_type(L, idx);
  if (type == LUA_TSTRING || type == LUA_TNUMBER) {
    lua_pushvalue(L, idx);
    return lua_tostring(L, -1);
  }
  if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushcfunction(L, call_tostring);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) return lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
}

/* Message handler: the error as text (aio_push_error_text) with a traceback. */
static int msghandler(lua_State *L) {
  luaL_traceback(L, L, aio_push_error_text(L, 1), 1);
  return 1;
}

/* Calls the function below nargs arguments protected; on error prints it with a traceback. */
int aio_pcall_report(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  int status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  if (status != LUA_OK) {  /* printed, and remembered so the exit status says it too */
    fprintf(stderr, "aioshell: %s\n", lua_tostring(L, -1));
    fflush(stderr);
    lua_pop(L, 1);
    aio_loop_get(L)->callback_errors++;
  }
  return status;
}

/* Pushes the display name of the task at tidx ("Task-<id>" unless set). */
void aio__push_task_name(lua_State *L, int tidx) {
  aio_task *t = (aio_task *)lua_touserdata(L, tidx);
  if (lua_getiuservalue(L, tidx, AIO_TUV_INFO) == LUA_TTABLE) {
    if (lua_getfield(L, -1, "name") != LUA_TNIL) { lua_remove(L, -2); return; }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushfstring(L, "Task-%I", (LUA_INTEGER)t->id);
}

/* Pushes where the task at tidx was spawned ("file:line:" or ""). */
void aio__push_task_site(lua_State *L, int tidx) {
  if (lua_getiuservalue(L, tidx, AIO_TUV_INFO) == LUA_TTABLE) {
    lua_getfield(L, -1, "site");
    lua_remove(L, -2);
  }
}

/* Turns the error on top of L (raised by task tidx's coroutine co) into an aio.error object
** carrying the message, the original value, the task's name, spawn site and traceback.
** Returns 0 if it was one already. */
int aio__wrap_task_error(lua_State *L, int tidx, lua_State *co) {
  int eidx = lua_gettop(L);
  if (lua_getmetatable(L, eidx)) {
    luaL_getmetatable(L, AIO_ERROR_MT);
    int ours = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (ours) return 0;  /* already an aio.error: a cancellation, or from another task */
  }
  lua_createtable(L, 0, 6);
  int obj = lua_gettop(L);
  const char *msg = aio_push_error_text(L, eidx);
  lua_pushvalue(L, -1);
  lua_setfield(L, obj, "message");
  luaL_traceback(L, co, msg, 0);
  lua_setfield(L, obj, "traceback");
  lua_settop(L, obj);
  lua_pushvalue(L, eidx);
  lua_setfield(L, obj, "value");
  aio__push_task_name(L, tidx);
  lua_setfield(L, obj, "task");
  aio__push_task_site(L, tidx);
  lua_setfield(L, obj, "site");
  luaL_setmetatable(L, AIO_ERROR_MT);
  lua_replace(L, eidx);
  return 1;
}

/* The aio.error on top was raised by a __close handler while the task unwound from the error
** `first` (an aio.error, at fidx), outside the coroutine (lua_resetthread): its own traceback
** is empty. Gives it one made of the first error's message and, if that error was raised in
** this task (`here`), its stack: the frames whose variables were being closed. */
void aio__close_error_traceback(lua_State *L, int fidx, int here) {
  int e = lua_gettop(L);
  fidx = lua_absindex(L, fidx);
  lua_getfield(L, e, "message");
  lua_getfield(L, fidx, "message");
  lua_getfield(L, fidx, "traceback");
  const char *tb = here ? lua_tostring(L, -1) : NULL;
  const char *frames = tb ? strstr(tb, "\nstack traceback:") : NULL;
  lua_pushfstring(L, "%s\nstack traceback:\n\t(raised by a __close handler as the task unwound "
                  "from: %s)%s", lua_tostring(L, e + 1), lua_tostring(L, e + 2),
                  frames ? frames + sizeof "\nstack traceback:" - 1 : "");
  lua_setfield(L, e, "traceback");
  lua_settop(L, e);
}

/* __tostring of aio.error: "message (in task NAME)". */
static int l_error_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  const char *msg = lua_tostring(L, -1);
  if (!msg) msg = "?";
  if (lua_getfield(L, 1, "task") == LUA_TSTRING)
    lua_pushfstring(L, "%s (in task %s)", msg, lua_tostring(L, -1));
  else
    lua_pushstring(L, msg);
  return 1;
}

/* Marks the future at fidx observed (and forgets it as an unobserved failure). */
void aio__observe(lua_State *L, int fidx) {
  aio_future *f = (aio_future *)lua_touserdata(L, fidx);
  if (f->observed) return;
  f->observed = 1;
  if (f->state != AIO_FAILED) return;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &UNOBSERVED_KEY) == LUA_TTABLE) {
    lua_pushvalue(L, fidx);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
}

/* Remembers the failed future at idx until someone observes its error: a task (what NULL,
** reported with its name and spawn site) or other work, what naming it ("a thread job"). The
** value is true for a task, else {what, seq}: jobs are reported after tasks, in failure order. */
void aio__unobserved_add(lua_State *L, int idx, const char *what) {
  static lua_Integer seq;  /* shared by every state (a worker's nested pools too): atomic */
  idx = lua_absindex(L, idx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &UNOBSERVED_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &UNOBSERVED_KEY);
  }
  lua_pushvalue(L, idx);
  if (what) {
    lua_createtable(L, 2, 0);
    lua_pushstring(L, what);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
    lua_rawseti(L, -2, 2);
  } else {
    lua_pushboolean(L, 1);
  }
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* If f failed and nobody has seen its error yet, keeps it for the report of unobserved
** failures (at exit, with exit status 1, and above the REPL's prompt), as a failed task is
** kept; what (a static string) names the work: "a thread job". */
void aio_future_watch_failure(lua_State *L, aio_future *f, const char *what) {
  if (f->state != AIO_FAILED || f->observed) return;
  aio_future_push(L, f);
  aio__unobserved_add(L, -1, what);
  lua_pop(L, 1);
}

/* An unobserved failure to report: its order (a task's id; jobs after every task, in failure
** order) and its index in the list being sorted. */
struct unobserved { int64_t order; int index; };

/* qsort's comparison: by order. */
static int by_order(const void *a, const void *b) {
  int64_t x = ((const struct unobserved *)a)->order, y = ((const struct unobserved *)b)->order;
  return (x > y) - (x < y);
}

/* The report order of the unobserved failure key -> value on top of L (left there). */
static int64_t unobserved_order(lua_State *L) {
  if (lua_type(L, -1) != LUA_TTABLE) return ((aio_task *)lua_touserdata(L, -2))->id;
  lua_rawgeti(L, -1, 2);
  int64_t seq = (int64_t)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return ((int64_t)1 << 62) + seq;
}

/* Pushes a list of the unobserved failures (futures) in table tab, in report order (qsort: a
** report can hold thousands of failures); returns their count. */
static int push_unobserved_sorted(lua_State *L, int tab) {
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, tab)) { n++; lua_pop(L, 1); }
  lua_createtable(L, n, 0);
  int list = lua_gettop(L), i = 0;
  /* the sort keys in a userdata, not malloc: a raising allocation below cannot leak them */
  struct unobserved *e = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *e, 0);
  lua_pushnil(L);
  while (lua_next(L, tab)) {
    e[i].order = unobserved_order(L);
    e[i].index = i + 1;
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, list, ++i);
  }
  qsort(e, (size_t)n, sizeof *e, by_order);
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, list, e[i].index);
    lua_rawseti(L, -2, i + 1);
  }
  lua_replace(L, list);
  lua_settop(L, list);
  return n;
}

/* Pushes the report line(s) of the unobserved failure at idx (what: its entry's description,
** NULL for a task). */
static void push_unobserved_entry(lua_State *L, int idx, const char *what) {
  int top = lua_gettop(L);
  lua_getiuservalue(L, idx, AIO_TUV_RESULT);  /* = AIO_FUV_RESULT: the error */
  if (what) {
    const char *text = aio_push_error_text(L, -1);
    lua_pushfstring(L, "aioshell: %s failed and nobody observed its error\n%s\n", what, text);
  } else {
    lua_getfield(L, -1, "traceback");
    const char *tb = lua_tostring(L, -1);
    aio__push_task_name(L, idx);
    aio__push_task_site(L, idx);
    const char *site = lua_tostring(L, -1);
    lua_pushfstring(L, "aioshell: task %s failed and nobody observed its error (spawned at %s)\n%s\n",
                    lua_tostring(L, -2), site && *site ? site : "?", tb ? tb : "?");
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}

/* Pushes the report of every failed task (and job, see aio_future_watch_failure) whose error
** nobody observed, tasks in spawn order (one string, "" when none), and forgets them; returns
** how many. */
int aio_push_unobserved_report(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &UNOBSERVED_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushliteral(L, "");
    return 0;
  }
  int tab = lua_gettop(L);
  int n = push_unobserved_sorted(L, tab), list = tab + 1;
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &UNOBSERVED_KEY);  /* forgotten: reporting observes them */
  luaL_Buffer b;
  luaL_buffinit(L, &b);  /* each entry's text is made on top, then added (lauxlib's rule) */
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    int idx = lua_gettop(L);
    lua_pushvalue(L, idx);
    lua_rawget(L, tab);
    const char *what = NULL;
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_rawgeti(L, -1, 1);
      lua_replace(L, -2);
      what = lua_tostring(L, -1);
    }
    ((aio_future *)lua_touserdata(L, idx))->observed = 1;
    push_unobserved_entry(L, idx, what);
    lua_replace(L, idx);
    lua_settop(L, idx);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  lua_replace(L, tab);
  lua_settop(L, tab);
  return n;
}

/* Prints every failed task whose error nobody observed, in spawn order; returns the count. */
int aio_report_unobserved(lua_State *L) {
  int n = aio_push_unobserved_report(L);
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  fwrite(text, 1, len, stderr);
  fflush(stderr);
  lua_pop(L, 1);
  return n;
}

/* aio.is_cancelled(err) -> true if err is a cancellation error. */
static int l_is_cancelled(lua_State *L) {
  lua_pushboolean(L, aio_is_cancelled(L, 1));
  return 1;
}

/* aio.cancelled_error([msg]) -> a new cancellation error value. */
static int l_cancelled_error(lua_State *L) {
  aio_push_cancelled(L, luaL_optstring(L, 1, NULL));
  return 1;
}

/* aio.report_unobserved() -> count: prints and forgets unobserved task failures now (REPL). */
static int l_report_unobserved(lua_State *L) {
  lua_pushinteger(L, aio_report_unobserved(L));
  return 1;
}

/* Registers the aio.error metatable and puts the error functions into the table at -1. */
void aio__open_task_error(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"is_cancelled", l_is_cancelled}, {"cancelled_error", l_cancelled_error},
    {"report_unobserved", l_report_unobserved}, {NULL, NULL}};
  luaL_newmetatable(L, AIO_ERROR_MT);
  lua_pushcfunction(L, l_error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}

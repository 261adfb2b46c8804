/*
** outcome.c — the parts of a job's outcome that the thread pool and the forked workers share
** (see outcome.h): the message handler that keeps the traceback, decoding and calling the job,
** and turning the error that came back into the one its future is rejected with.
*/
#include <string.h>
#include <lauxlib.h>
#include "codec.h"
#include "outcome.h"

/* Message handler: keeps the error value and the traceback of where it happened. */
int aio_outcome_msgh(lua_State *L) {
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  luaL_traceback(L, L, NULL, 1);
  lua_rawseti(L, -2, 2);
  return 1;
}

/* Wraps the value on top into {value}, the shape of an error record without a traceback. */
void aio_outcome_wrap_error(lua_State *L) {
  lua_createtable(L, 2, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 1);
}

/* Decodes `fn, args...` and calls fn; the results stay on the (otherwise empty) stack. */
int aio_outcome_call(lua_State *L, const char *data, size_t len) {
  lua_settop(L, 0);
  int n = aio_codec_decode(L, data, len);
  if (n < 1) return luaL_error(L, "empty job");
  lua_call(L, n - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* Does the traceback body tb (its lines after "stack traceback:") name a Lua frame? Not when
** the error came from the worker's own C code after the job returned (a result that cannot
** cross): then its only line is "[C]: in ?", which says nothing. */
static int has_lua_frame(const char *tb) {
  static const char c_frame[] = "\n\t[C]: in ?";
  while (*tb) {
    if (strncmp(tb, c_frame, sizeof c_frame - 1) != 0) return 1;
    tb += sizeof c_frame - 1;
  }
  return 0;
}

/* The error a failed call's future is rejected with: the worker's traceback travels with it. */
void aio_outcome_push_error(lua_State *L, int e, const char *who) {
  e = lua_absindex(L, e);
  if (lua_type(L, e) == LUA_TSTRING) {
    const char *tb = lua_tostring(L, e + 1);
    if (tb && strncmp(tb, "stack traceback:", 16) == 0) tb += 16;
    if (tb && has_lua_frame(tb)) lua_pushfstring(L, "%s\nstack traceback (%s):%s", lua_tostring(L, e), who, tb);
    else lua_pushvalue(L, e);
  } else {
    if (lua_type(L, e) == LUA_TTABLE && lua_type(L, e + 1) == LUA_TSTRING) {
      if (lua_getfield(L, e, "traceback") == LUA_TNIL) {  /* keep a traceback it has */
        lua_pushvalue(L, e + 1);
        lua_setfield(L, e, "traceback");
      }
      lua_pop(L, 1);
    }
    lua_pushvalue(L, e);
  }
}

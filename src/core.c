/*
** core.c — the `aio.core` C module: assembles the bindings of futures, tasks and timers.
** The `aio` module (lua/aio/init.lua) is the Lua facade built on it.
*/
#include "aio.h"

void aio__open_future(lua_State *L);
void aio__open_task(lua_State *L);
void aio__open_timer(lua_State *L);

/* require "aio.core" */
int luaopen_aio_core(lua_State *L) {
  aio_loop_get(L);
  lua_newtable(L);
  aio__open_task(L);
  aio__open_future(L);
  aio__open_timer(L);
  return 1;
}

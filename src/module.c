/*
** module.c — the runtime as a Lua C module (aio.so), for a stock lua5.4:
**   LUA_CPATH='build/?.so;;' lua5.4 -e 'local aio = require "aio"'
** The module carries the same runtime library as aioshell and embeds the same Lua modules, so
** `require "aio.http"` etc. resolve too. There is no host here: nothing drains the loop after
** the main chunk, so a script run this way ends with aio.run(main) (or awaits at top level).
*/
#include "aio.h"

/* Opens the runtime into L (package.preload entries), then returns require "aio".
** package.preload comes before the file searchers, so the nested require finds the
** embedded lua/aio/init.lua and not this C module again. */
int luaopen_aio(lua_State *L) {
  aio_openlibs(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "aio");
  lua_call(L, 1, 1);
  return 1;
}

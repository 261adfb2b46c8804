/*
** embed.c — preloads the Lua modules compiled into the binary and the C modules.
*/
#include "aio.h"
#include "embed.h"
#include <lualib.h>

#define AIO_MODULE(name, fn) int fn(lua_State *L);
#include "modules.def"
#undef AIO_MODULE

static const struct { const char *name; lua_CFunction open; } c_modules[] = {
#define AIO_MODULE(name, fn) {name, fn},
#include "modules.def"
#undef AIO_MODULE
  {NULL, NULL}
};

/* package.preload loader of an embedded module (upvalue: its entry): compiles and runs it with
** require's arguments, as the Lua file searcher's loader would. */
static int embedded_loader(lua_State *L) {
  const aio_embedded *m = lua_touserdata(L, lua_upvalueindex(1));
  lua_pushfstring(L, "@%s", m->path);
  if (luaL_loadbufferx(L, m->source, m->len, lua_tostring(L, -1), "t") != LUA_OK)
    return lua_error(L);
  lua_pushvalue(L, 1);
  lua_pushstring(L, m->path);
  lua_call(L, 2, 1);
  return 1;
}

/* Puts a loader for every embedded Lua module in package.preload: found before any file, with
** package.searchers and require's messages left exactly as in lua5.4. */
void aio_preload_embedded(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const aio_embedded *m = aio_embedded_modules; m->name; m++) {
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, embedded_loader, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
}

/* Registers the C and the embedded Lua modules in package.preload; remembers
** the standard print (registry "aio.std_print": the REPL prints values itself only for it). */
void aio_openlibs(lua_State *L) {
  lua_getglobal(L, "print");
  lua_setfield(L, LUA_REGISTRYINDEX, "aio.std_print");
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);  /* see loop_create: no task here */
  *(void **)lua_getextraspace(lua_tothread(L, -1)) = NULL;
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (int i = 0; c_modules[i].name; i++) {
    lua_pushcfunction(L, c_modules[i].open);
    lua_setfield(L, -2, c_modules[i].name);
  }
  lua_pop(L, 1);
  aio_preload_embedded(L);
}

/*
** embed.c — finds the Lua modules compiled into the binary and preloads the C modules.
*/
#include <string.h>
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

/* Returns the embedded module called name, or NULL. */
static const aio_embedded *find_embedded(const char *name) {
  for (const aio_embedded *m = aio_embedded_modules; m->name; m++)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}

/* package.searchers entry: a loader for an embedded module, or a message saying why not. */
static int embedded_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const aio_embedded *m = find_embedded(name);
  if (!m) {
    lua_pushfstring(L, "no embedded module '%s'", name);
    return 1;
  }
  lua_pushfstring(L, "@%s", m->path);
  if (luaL_loadbufferx(L, m->source, m->len, lua_tostring(L, -1), "t") != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, m->path);
  return 2;
}

/* Inserts the embedded searcher right after the preload searcher. */
void aio_install_searcher(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, LUA_LOADLIBNAME);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "searchers");
    if (lua_istable(L, -1)) {
      lua_Integer n = (lua_Integer)luaL_len(L, -1);
      for (lua_Integer i = n; i >= 2; i--) {  /* shift entries 2..n up by one */
        lua_geti(L, -1, i);
        lua_seti(L, -2, i + 1);
      }
      lua_pushcfunction(L, embedded_searcher);
      lua_seti(L, -2, 2);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

/* Registers the C modules in package.preload and installs the embedded searcher; remembers
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
  aio_install_searcher(L);
}

/*
** shareable.c — shareable C objects (thread.shared/mutex/channel, process.value/array/lock/
** queue/dict, pipe ends): the class mark on their metatable that the codec looks for, the box
** each Lua state holds one by, and its metatable (see shareable.h). The codec (codec.c) moves
** them between states; each kind's own file (shared.c, channel.c, shm.c ...) makes them.
*/
#include "shareable.h"

/* Marks the metatable on top of the stack as a shareable class (shareable.h). */
void aio_share_register(lua_State *L, const aio_share_class *cls) {
  lua_pushlightuserdata(L, (void *)cls);
  lua_setfield(L, -2, AIO_SHARE_FIELD);
}

/* Class no-ops for objects not counted (shared memory) or crossing by value (shareable.h). */
void aio_share_noop_ref(void *o) { (void)o; }
void aio_share_noop_push(lua_State *L, void *o) { (void)L; (void)o; }

/* Makes a shareable class's metatable, left on the stack (shareable.h). */
int aio_share_new_mt(lua_State *L, const aio_share_class *cls, const luaL_Reg *methods,
                     const luaL_Reg *meta) {
  luaL_newmetatable(L, cls->name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "methods");
  lua_setfield(L, -2, "__index");
  luaL_setfuncs(L, meta, 0);
  aio_share_register(L, cls);
  return 1;
}

/* Pushes a box for obj, making its class's metatable on first use in this state (shareable.h). */
void aio_share_push_box(lua_State *L, void *obj, const char *mt, int (*open_mt)(lua_State *L)) {
  aio_share_box *b = (aio_share_box *)lua_newuserdatauv(L, sizeof *b, 0);
  b->obj = obj;
  if (luaL_getmetatable(L, mt) != LUA_TTABLE) {
    lua_pop(L, 1);
    open_mt(L);
  }
  lua_setmetatable(L, -2);
}

/* The object of a live box of metatable mt at idx; raises on a released one (shareable.h). */
void *aio_share_check(lua_State *L, int idx, const char *mt) {
  aio_share_box *b = (aio_share_box *)luaL_checkudata(L, idx, mt);
  if (!b->obj) luaL_error(L, "attempt to use a released %s", mt);
  return b->obj;
}

/* __gc of a box of a counted class: drops the box's reference (shareable.h). */
int aio_share_box_gc(lua_State *L, const aio_share_class *cls) {
  aio_share_box *b = (aio_share_box *)lua_touserdata(L, 1);
  if (b->obj) {
    cls->release(b->obj);
    b->obj = NULL;
  }
  return 0;
}

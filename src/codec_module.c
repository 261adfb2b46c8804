/*
** codec_module.c — the aio.codec module: the codec (codec.c) seen from Lua, for tests and for
** measuring what a message costs.
*/
#include <string.h>
#include <lauxlib.h>
#include "codec.h"
#include "aio.h"

/* codec.roundtrip(...) -> copies of the arguments, encoded and decoded in this state. */
static int l_roundtrip(lua_State *L) {
  aio_buf b = {0};
  int n = lua_gettop(L);
  aio_codec_encode(L, 1, n, &b, "args[%d]", AIO_CODEC_THREAD);
  lua_settop(L, 0);
  return aio_codec_decode_owned(L, &b);
}

/* codec.size(...) -> the number of bytes the arguments take encoded (for a process boundary
** when the last argument is the string "process"). */
static int l_size(lua_State *L) {
  aio_buf b = {0};
  int n = lua_gettop(L);
  int boundary = AIO_CODEC_THREAD;
  if (n > 0 && lua_type(L, n) == LUA_TSTRING && strcmp(lua_tostring(L, n), "process") == 0) {
    boundary = AIO_CODEC_PROCESS;
    n--;
  }
  aio_codec_encode(L, 1, n, &b, "args[%d]", boundary);
  lua_pushinteger(L, (lua_Integer)b.len);
  aio_codec_discard(b.data, b.len);
  aio_buf_free(&b);
  return 1;
}

/* Opens aio.codec. */
int luaopen_aio_codec(lua_State *L) {
  static const luaL_Reg funcs[] = {{"roundtrip", l_roundtrip}, {"size", l_size}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}

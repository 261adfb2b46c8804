/*
** http_common.c — what the HTTP client and server share (http_common.h): syntax checks, the
** option reader, the header join.
*/
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <lauxlib.h>
#include "http_common.h"

/* Is s[0..len) an HTTP token (RFC 9110, 5.6.2)? */
int aio_http_is_token(const char *s, size_t len) {
  if (len == 0) return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((unsigned)(ch | 0x20) - 'a' < 26u || (unsigned)ch - '0' < 10u) continue;
    if (ch == 0 || !strchr("!#$%&'*+-.^_`|~", ch)) return 0;
  }
  return 1;
}

/* Does s[0..len) hold a CR, LF or NUL (and *high: a byte >= 0x80)? Every URL the client sends
** goes through here, so 8 bytes at a time are let through when none is a control byte or
** >= 0x80. */
int aio_http_has_crlf_nul(const char *s, size_t len, int *high) {
  const uint64_t ones = 0x0101010101010101u, tops = 0x8080808080808080u;
  size_t i = 0;
  for (uint64_t w; i + 8 <= len; i += 8) {
    memcpy(&w, s + i, 8);
    if (((w - ones * 0x20) | w) & tops) break; /* a byte < 0x20 or >= 0x80: look at each */
  }
  for (; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch - 0x20u < 0x60u) continue;        /* printable ASCII: the common case */
    if (ch == '\r' || ch == '\n' || ch == 0) return 1;
    if (ch >= 0x80 && high) *high = 1;
  }
  return 0;
}

/* Raises "<who>: bad option '<k>' (<expected> expected, got <value>)" about the value at idx. */
int aio_http_opt_error(lua_State *L, int idx, const char *who, const char *k, const char *expected) {
  const char *got = lua_type(L, idx) == LUA_TNUMBER ? luaL_tolstring(L, idx, NULL)
                                                     : luaL_typename(L, idx);
  return luaL_error(L, "%s: bad option '%s' (%s expected, got %s)", who, k, expected, got);
}

/* Pushes and returns bound x as text: an integral one without Lua's ".0" (1e15 in full). */
static const char *num_text(lua_State *L, lua_Number x) {
  if (x == floor(x) && fabs(x) < 1e18) return lua_pushfstring(L, "%I", (LUAI_UACINT)(lua_Integer)x);
  return lua_pushfstring(L, "%f", x);
}

/* Reads the optional field k of the table at idx: a number (an integer) from min to max. */
lua_Number aio_http_opt_number(lua_State *L, int idx, const char *who, const char *k,
                               lua_Number dflt, lua_Number min, lua_Number max, int kind) {
  static const char *const what[] = {"a number", "an integer", "a number of seconds"};
  if (lua_type(L, idx) != LUA_TTABLE) return dflt;
  if (lua_getfield(L, idx, k) == LUA_TNIL) { lua_pop(L, 1); return dflt; }
  int ok;
  lua_Number n = lua_tonumberx(L, -1, &ok);
  if (ok && kind == AIO_OPT_INTEGER) (void)lua_tointegerx(L, -1, &ok);
  if (!ok || !(n >= min && n <= max)) {
    int at = lua_absindex(L, -1);
    const char *lo = num_text(L, min), *expected;
    if (max == HUGE_VAL) expected = lua_pushfstring(L, "%s >= %s", what[kind], lo);
    else expected = lua_pushfstring(L, "%s from %s to %s", what[kind], lo, num_text(L, max));
    aio_http_opt_error(L, at, who, k, expected);
  }
  lua_pop(L, 1);
  return n;
}

/* Sets table[name] = v, joining a repeated header's values with ", "; pops the name. */
void aio_http_join_header(lua_State *L, const char *v, size_t vl) {
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) == LUA_TSTRING) {    /* repeated header: join */
    lua_pushliteral(L, ", ");
    lua_pushlstring(L, v, vl);
    lua_concat(L, 3);
  } else {
    lua_pop(L, 1);
    lua_pushlstring(L, v, vl);
  }
  lua_rawset(L, -3);
}

/* Pushes the header name k[0..len) lower-cased (a long name through a Lua buffer). */
void aio_http_push_lower(lua_State *L, const char *k, size_t len) {
  char small[64], *out = small;
  luaL_Buffer b;
  if (len > sizeof small) out = luaL_buffinitsize(L, &b, len);
  for (size_t i = 0; i < len; i++) out[i] = (char)((k[i] >= 'A' && k[i] <= 'Z') ? k[i] + 32 : k[i]);
  if (out == small) lua_pushlstring(L, small, len);
  else luaL_pushresultsize(&b, len);
}

/* __index of header tables: a name in any case finds its lower-case entry (HTTP names are
** case-insensitive: res.headers["Content-Type"] is res.headers["content-type"]). */
static int headers_index(lua_State *L) {
  size_t n, i = 0;
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const char *k = lua_tolstring(L, 2, &n);
  while (i < n && !(k[i] >= 'A' && k[i] <= 'Z')) i++;
  if (i == n) return 0;                     /* lower case already: the raw lookup found nothing */
  aio_http_push_lower(L, k, n);
  lua_rawget(L, 1);
  return 1;
}

/* Pushes the metatable of header tables, registered as "aio.http.headers" (made on first use;
** by that name a header table crosses to a worker, whose codec makes it there too). */
void aio_http_push_headers_mt(lua_State *L) {
  if (luaL_newmetatable(L, "aio.http.headers")) {
    lua_pushcfunction(L, headers_index);
    lua_setfield(L, -2, "__index");
  }
}

/* Gives the header table on top of the stack the metatable of header tables. */
void aio_http_set_headers_mt(lua_State *L) {
  aio_http_push_headers_mt(L);
  lua_setmetatable(L, -2);
}

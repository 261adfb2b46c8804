/*
** http_server_request.c — the request as the HTTP server's handler sees it: the request table
** (method, target, path, query, version, body, headers, trailers) and its decoding helpers
** (unescape, decode_query, headers), which the facade also calls.
*/
#include <string.h>
#include "http_server.h"

/* Steps through the "name\0value\0" pairs of h from *i up to end; 0 when there are no more. */
static int hdr_next(const char *h, size_t *i, size_t end, const char **k, size_t *kl, const char **v, size_t *vl) {
  if (*i >= end) return 0;
  *k = h + *i;
  *kl = strnlen(*k, end - *i);
  if (*i + *kl + 1 >= end) return 0;
  *v = *k + *kl + 1;
  *vl = strnlen(*v, end - *i - *kl - 1);
  *i += *kl + *vl + 2;
  return 1;
}

/* The value of a hex digit, or -1. */
static int hexdigit(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Pushes p[0..n) with %XX escapes decoded (a malformed escape stays as it is) and, with plus,
** each "+" as a space (query strings). */
static void push_unescaped(lua_State *L, const char *p, size_t n, int plus) {
  if (!memchr(p, '%', n) && !(plus && memchr(p, '+', n))) { lua_pushlstring(L, p, n); return; }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++) {
    int hi, lo;
    if (p[i] == '%' && i + 2 < n && (hi = hexdigit((unsigned char)p[i + 1])) >= 0 && (lo = hexdigit((unsigned char)p[i + 2])) >= 0) {
      luaL_addchar(&b, (char)(hi * 16 + lo));
      i += 2;
    } else luaL_addchar(&b, plus && p[i] == '+' ? ' ' : p[i]);
  }
  luaL_pushresult(&b);
}

/* server_c.unescape(s [, plus]) -> s with %XX escapes decoded (and "+" as a space if plus). */
int aio_hs_l_unescape(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  push_unescaped(L, s, n, lua_toboolean(L, 2));
  return 1;
}

/* server_c.decode_query(s) -> {key = value}: pairs split at "&" or ";", key and value split at
** the first "=", both unescaped with "+" as a space; a repeated key keeps its last value
** (tornado's get_argument). In C: it ran on every request that read req.query. */
int aio_hs_l_decode_query(lua_State *L) {
  size_t n;
  const char *q = luaL_optlstring(L, 1, "", &n), *end = q + n;
  lua_createtable(L, 0, 4);
  while (q < end) {
    const char *stop = q;
    while (stop < end && *stop != '&' && *stop != ';') stop++;
    if (stop > q) {
      const char *eq = memchr(q, '=', (size_t)(stop - q));
      push_unescaped(L, q, (size_t)((eq ? eq : stop) - q), 1);
      if (eq) push_unescaped(L, eq + 1, (size_t)(stop - eq - 1), 1);
      else lua_pushliteral(L, "");
      lua_rawset(L, -3);
    }
    q = stop + 1;
  }
  return 1;
}

/* Where the path of target u starts: after the scheme and authority of an absolute-form target
** ("http://host:80/p?q", RFC 9112 3.2.2, which a server must accept), else 0. */
static size_t path_start(const char *u, size_t n) {
  size_t i = 0;
  while (i < n && (((u[i] | 32) >= 'a' && (u[i] | 32) <= 'z') || (i > 0 && strchr("0123456789+-.", u[i]))))
    i++;
  if (i == 0 || n - i < 3 || memcmp(u + i, "://", 3) != 0) return 0;
  for (i += 3; i < n && u[i] != '/' && u[i] != '?'; i++) {}
  return i;
}

/* Pushes a table of the header pairs in h[from, to): repeats joined by ", ", names found in
** any case. */
static void push_headers(lua_State *L, const char *h, size_t from, size_t to) {
  const char *k, *v; size_t kl, vl, i = from;
  lua_createtable(L, 0, 8);
  aio_http_set_headers_mt(L);
  while (hdr_next(h, &i, to, &k, &kl, &v, &vl)) {
    lua_pushlstring(L, k, kl);
    aio_http_join_header(L, v, vl);
  }
}

/* The names of the request fields, in RK_* order (the server's key table, keys_ref): pushed
** from there, a key costs a rawgeti where lua_setfield looked the name up each time. */
static const char *const request_keys[] = {
  "method", "conn", "target", "path", "raw_query", "version", "body", "_headers", "trailers" };

/* Pushes the table of request_keys, the server's key table (keys_ref). */
void aio_hs_push_request_keys(lua_State *L) {
  lua_createtable(L, RK_TRAILERS, 0);
  for (int i = RK_METHOD; i <= RK_TRAILERS; i++) { lua_pushstring(L, request_keys[i - 1]); lua_rawseti(L, -2, i); }
}

/* Pushes the request table, with the facade's metatable: method, conn, target, path (decoded),
** raw_query, version, body, _headers (the headers as they came, "name\0value\0"...: the facade
** makes req.headers of them on first use, which most handlers never make), and trailers when a
** chunked body had some. */
void aio_hs_push_request(lua_State *L, srv *s, conn *c, llhttp_t *p) {
  aio_pushref(L, s->keys_ref);
  int keys = lua_gettop(L);
  lua_createtable(L, 0, 10);                  /* sized for what C and the facade put in it */
  lua_rawgeti(L, keys, RK_METHOD);
  lua_pushstring(L, llhttp_method_name((llhttp_method_t)p->method)); lua_rawset(L, -3);
  lua_rawgeti(L, keys, RK_CONN); aio_pushref(L, c->box_ref); lua_rawset(L, -3);
  const char *u = c->url.data ? c->url.data : "";
  lua_rawgeti(L, keys, RK_TARGET); lua_pushlstring(L, u, c->url.len); lua_rawset(L, -3);
  size_t from = path_start(u, c->url.len);
  const char *qm = memchr(u + from, '?', c->url.len - from);
  size_t plen = (qm ? (size_t)(qm - u) : c->url.len) - from;
  lua_rawgeti(L, keys, RK_PATH);
  if (plen == 0 && from > 0) lua_pushliteral(L, "/");   /* "http://host" or "http://host?q" */
  else push_unescaped(L, u + from, plen, 0);
  lua_rawset(L, -3);
  lua_rawgeti(L, keys, RK_RAW_QUERY);
  if (qm) lua_pushlstring(L, qm + 1, c->url.len - (size_t)(qm + 1 - u)); else lua_pushliteral(L, "");
  lua_rawset(L, -3);
  lua_rawgeti(L, keys, RK_VERSION);
  if (p->http_major == 1 && p->http_minor == 1) lua_pushliteral(L, "1.1");
  else lua_pushfstring(L, "%d.%d", (int)p->http_major, (int)p->http_minor);
  lua_rawset(L, -3);
  lua_rawgeti(L, keys, RK_BODY);
  lua_pushlstring(L, c->body.data ? c->body.data : "", c->body.len); lua_rawset(L, -3);
  const char *h = c->hdrs.data ? c->hdrs.data : "";
  size_t trailers = c->trailers_at < c->hdrs.len ? c->trailers_at : c->hdrs.len;
  lua_rawgeti(L, keys, RK_HEADERS); lua_pushlstring(L, h, trailers); lua_rawset(L, -3);
  if (trailers < c->hdrs.len) {
    lua_rawgeti(L, keys, RK_TRAILERS); push_headers(L, h, trailers, c->hdrs.len); lua_rawset(L, -3);
  }
  aio_pushref(L, s->req_mt_ref);
  lua_setmetatable(L, -2);
  lua_remove(L, keys);
}

/* server_c.headers(raw) -> the table of a request's "name\0value\0"... headers (req.headers). */
int aio_hs_l_headers(lua_State *L) {
  size_t n;
  const char *h = luaL_checklstring(L, 1, &n);
  push_headers(L, h, 0, n);
  return 1;
}

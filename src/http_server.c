/*
** http_server.c — HTTP/1.1 server, its Lua side (module aio.http_server_c): listen and the server
** object (port, close, connections; the server's life cycle), and the conn object the facade
** answers through (respond, start, write, finish, drain, abort, peer).
**
**
** The C side owns sockets, parsing, limits, timeouts and response ordering; the Lua facade
** (lua/aio/http.lua) owns the handler. For each complete request C spawns a task running the
** facade's dispatch function with (conn, seq, req); the facade answers through respond/start/
** write/finish with that seq.
**
** Pipelining: every request gets a slot in its connection's FIFO. Bytes for the head slot go
** straight to the socket; bytes for later slots wait in the slot's buffer, so responses leave in
** request order whatever order the handlers finish in.
**
** Limits: llhttp has no header limit, so we count the head ourselves (431 over max_header);
** bodies over max_body get 413; a major version other than 1 gets 505; anything llhttp rejects
** (bad syntax, CL+TE smuggling, bad chunk sizes) and what RFC 9112 adds (no Host or two, space
** before a colon) gets 400. Each such answer says `Connection: close`, the input is ignored
** from then on, and the socket is shut down once the answer is written.
** Backpressure (conn_pace): output not yet taken by the kernel over the high-water mark stops
** reading, and makes the facade's res:write await conn:drain.
** Timeouts: one sweep timer per server checks each connection's deadline (header timeout while
** a request head is arriving, idle timeout between requests and while a body trickles in) and
** closes one whose queued output has not moved for the idle timeout.
** Peers: a reset or a failed write closes at once and cancels the handlers; an EOF lets the
** requests in flight finish and be answered first (conn_half_closed).
**
** Files: http_server_conn.c (a connection: accepting, reading, parsing, timeouts, closing),
** http_server_request.c (the request table a handler gets), http_server_write.c (the answers:
** slots in request order, heads, sending, backpressure); http_server.h is what they share.
*/
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include "http_server.h"

/* ---- server life cycle -------------------------------------------------------------- */

/* Close callback of a malloc'd handle: its memory goes only now (libuv's rule). */
static void free_cb(uv_handle_t *h) { free(h); }

/* Lets go of the references l_listen took for s (those it got to), and of its Lua object, which
** now says "closed". */
static void srv_unref(lua_State *L, srv *s) {
  if (s->handler_ref != LUA_NOREF) { aio_unref(L, s->handler_ref); s->handler_ref = LUA_NOREF; }
  if (s->keys_ref != LUA_NOREF) { aio_unref(L, s->keys_ref); s->keys_ref = LUA_NOREF; }
  if (s->req_mt_ref != LUA_NOREF) { aio_unref(L, s->req_mt_ref); s->req_mt_ref = LUA_NOREF; }
  if (s->box) { s->box->s = NULL; s->box = NULL; }
}

/* Frees a server l_listen did not finish (bind or listen failed, or memory ran out on the way):
** its references, its handles (in their close callbacks; once the loop is closed they are
** closed already), its memory. */
static void srv_discard(lua_State *L, srv *s) {
  srv_unref(L, s);
  uv_handle_t *h[2] = {(uv_handle_t *)s->listener, (uv_handle_t *)s->sweep};
  for (int i = 0; i < 2; i++) {
    if (!h[i]) continue;
    if (s->loop->closing) free(h[i]);
    else uv_close(h[i], free_cb);
  }
  free(s);
}

/* When closing and every connection is gone: resolve the close future, drop refs. */
void aio_hs_srv_maybe_done(srv *s) {
  if (!s->closing || s->nconns > 0 || s->listener) return;
  lua_State *L = s->loop->L;
  if (s->sweep) { uv_close((uv_handle_t *)s->sweep, free_cb); s->sweep = NULL; }
  aio_hs_count_server(-1);
  if (s->dropped) { free(s); return; }
  if (s->closed_fut) {
    aio_future_resolve(L, s->closed_fut, 0);
    aio_unref(L, s->closed_ref);
    s->closed_fut = NULL;
  }
  srv_unref(L, s);
  if (s->self_ref != LUA_NOREF) { int r = s->self_ref; s->self_ref = LUA_NOREF; aio_unref(L, r); }
  free(s);                                     /* no handle of ours refers to it any more */
}

/* The listening socket is closed: the server may be done. */
static void on_listener_closed(uv_handle_t *h) {
  srv *s = h->data;
  free(h);
  s->listener = NULL;
  aio_hs_srv_maybe_done(s);
}

/* Lets go of a running server as its state closes: its handles close now, before the loop's,
** and their close callbacks free it and its connections without touching Lua (dropped). */
static void srv_drop(srv *s) {
  s->box->s = NULL;
  s->box = NULL;
  s->dropped = 1;
  if (!s->closing && s->listener) uv_close((uv_handle_t *)s->listener, on_listener_closed);
  s->closing = 1;
  if (s->sweep) { uv_close((uv_handle_t *)s->sweep, free_cb); s->sweep = NULL; }
  for (conn *c = s->conns; c; c = c->next) aio_hs_conn_drop(c);
  aio_hs_srv_maybe_done(s);
}

/* __gc of the server's Lua object: discards a server l_listen did not finish; drops a running
** one, which keeps its object alive, so this is its state closing (a closed one is gone). */
static int l_srv_gc(lua_State *L) {
  srv_box *b = lua_touserdata(L, 1);
  if (b->s && b->s->building) srv_discard(L, b->s);
  else if (b->s) srv_drop(b->s);
  return 0;
}

/* Starts the graceful close: stop accepting; idle connections end now, busy ones after. */
static void srv_begin_close(srv *s) {
  if (s->closing) return;
  s->closing = 1;
  if (s->listener) uv_close((uv_handle_t *)s->listener, on_listener_closed);
  for (conn *c = s->conns, *n; c; c = n) {
    n = c->next;
    c->close_when_idle = 1;
    if (!c->shead && !c->in_msg) aio_hs_conn_finish(c, 0);
  }
}

/* The server of argument 1; raises if it is closed. */
static srv *check_srv(lua_State *L) {
  srv_box *b = luaL_checkudata(L, 1, SERVER_MT);
  if (!b->s) luaL_error(L, "attempt to use a closed http server");
  return b->s;
}

/* The address to bind for host: an IPv4 or IPv6 literal, else the first address the name
** resolves to ("localhost"), looked up synchronously: listen is a start-up call. */
static int resolve_host(aio_loop *loop, const char *host, int port, struct sockaddr_storage *addr) {
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)addr) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)addr) == 0) return 0;
  struct addrinfo hints = {0};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_ADDRCONFIG;
  uv_getaddrinfo_t req;
  int rc = uv_getaddrinfo(&loop->uv, &req, NULL, host, NULL, &hints);
  if (rc != 0) return rc;
  memcpy(addr, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
  uv_freeaddrinfo(req.addrinfo);
  if (addr->ss_family == AF_INET6) ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
  else ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
  return 0;
}

/* Takes the references of s: the dispatch function (argument 3), the request keys, the request
** metatable (argument 5). */
static void srv_take_refs(lua_State *L, srv *s) {
  lua_pushvalue(L, 3);
  s->handler_ref = aio_ref(L, -1);
  lua_pop(L, 1);
  aio_hs_push_request_keys(L);
  s->keys_ref = aio_ref(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, 5);
  s->req_mt_ref = aio_ref(L, -1);
  lua_pop(L, 1);
}

/* Binds and listens at addr and starts the sweep timer; a libuv error code on failure (the
** handles made so far are s's: srv_discard closes them). Raises when out of memory. */
static int srv_open(lua_State *L, srv *s, const struct sockaddr_storage *addr, int backlog) {
  uv_tcp_t *listener = malloc(sizeof *listener);
  if (!listener) return luaL_error(L, "out of memory");
  uv_tcp_init(&s->loop->uv, listener);
  listener->data = s;
  s->listener = listener;
  uv_timer_t *sweep = malloc(sizeof *sweep);
  if (!sweep) return luaL_error(L, "out of memory");
  uv_timer_init(&s->loop->uv, sweep);
  sweep->data = s;
  s->sweep = sweep;
  int rc;
  if ((rc = uv_tcp_bind(listener, (const struct sockaddr *)addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)listener, backlog, aio_hs_on_connection)) != 0) return rc;
  struct sockaddr_storage bound; int blen = sizeof bound;
  uv_tcp_getsockname(listener, (struct sockaddr *)&bound, &blen);
  s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
  uint64_t tick = (s->header_timeout < s->idle_timeout ? s->header_timeout : s->idle_timeout) / 4;
  if (tick < 10) tick = 10;
  if (tick > 1000) tick = 1000;
  s->tick = tick;
  uv_timer_start(sweep, aio_hs_on_sweep, tick, tick);
  uv_unref((uv_handle_t *)sweep);             /* the listener keeps the loop alive, not this */
  return 0;
}

/* Reads option name of l_listen's opts (argument 4, may be absent): see aio_http_opt_number. */
#define opt_number(L, name, dflt, min, max, kind) \
  aio_http_opt_number((L), 4, "http.serve", (name), (dflt), (min), (max), (kind))

/* server_c.listen(host, port, dispatch, opts, request_mt) → server. request_mt is the metatable
** of the request tables passed to dispatch.
** opts: max_body, max_header (bytes), header_timeout, idle_timeout (seconds), backlog,
** max_pipeline (requests in flight per connection), write_buffer (bytes: backpressure). */
static int l_listen(lua_State *L) {
  const char *host = luaL_optstring(L, 1, "127.0.0.1");
  int port = (int)luaL_optinteger(L, 2, 0);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 5, LUA_TTABLE);
  signal(SIGPIPE, SIG_IGN);                  /* a peer's reset must be a write error, not death */
  /* Options first: one that raises must find nothing allocated yet. */
  /* (the bounds keep the casts to sizes, milliseconds and ints defined: no inf) */
  size_t max_body = (size_t)opt_number(L, "max_body", 1 << 20, 0, 1e15, AIO_OPT_NUMBER);
  size_t max_header = (size_t)opt_number(L, "max_header", 8192, 1, 1e15, AIO_OPT_NUMBER);
  uint64_t header_timeout = (uint64_t)(opt_number(L, "header_timeout", 10, 0, 1e9, AIO_OPT_SECONDS) * 1000);
  uint64_t idle_timeout = (uint64_t)(opt_number(L, "idle_timeout", 30, 0, 1e9, AIO_OPT_SECONDS) * 1000);
  int backlog = (int)opt_number(L, "backlog", 4096, 1, INT_MAX, AIO_OPT_NUMBER);   /* the kernel clamps it to somaxconn */
  int max_pipeline = (int)opt_number(L, "max_pipeline", 256, 1, INT_MAX, AIO_OPT_NUMBER);
  size_t write_buffer = (size_t)opt_number(L, "write_buffer", 65536, 1, 1e15, AIO_OPT_NUMBER);
  /* Then Lua's rule (liolib's): the box says "closed" before anything is acquired, and holds
  ** the server from its first byte on, so that a raise (out of memory) on the way leaves it to
  ** the box's __gc (l_srv_gc), and every failure path lets go of what was taken. */
  srv_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->s = NULL;
  luaL_setmetatable(L, SERVER_MT);
  srv *s = calloc(1, sizeof *s);
  if (!s) return luaL_error(L, "out of memory");
  s->loop = aio_loop_get(L);
  s->building = 1;
  s->handler_ref = s->keys_ref = s->req_mt_ref = s->self_ref = s->closed_ref = LUA_NOREF;
  box->s = s;
  s->box = box;
  s->max_body = max_body; s->max_header = max_header; s->max_pipeline = max_pipeline;
  s->header_timeout = header_timeout; s->idle_timeout = idle_timeout;
  s->high_water = write_buffer;
  s->low_water = s->high_water / 4;
  srv_take_refs(L, s);
  struct sockaddr_storage addr;
  int rc = resolve_host(s->loop, host, port, &addr);
  if (rc == 0) rc = srv_open(L, s, &addr, backlog);
  if (rc != 0) {
    srv_discard(L, s);
    lua_pushnil(L);
    lua_pushfstring(L, "http.serve %s:%d: %s", host, port, uv_strerror(rc));
    lua_pushinteger(L, rc);
    return 3;
  }
  s->self_ref = aio_ref(L, -1);               /* alive while listening, whatever the script keeps */
  s->building = 0;
  aio_hs_count_server(+1);
  return 1;
}

/* server:port() → the bound port. */
static int l_port(lua_State *L) {
  lua_pushinteger(L, check_srv(L)->port);
  return 1;
}

/* Non-zero if the running task is the handler of one of s's unanswered requests. */
static int srv_own_handler(lua_State *L, srv *s) {
  aio_task *t = aio_current_task(L);
  if (!t) return 0;
  for (conn *c = s->conns; c; c = c->next)
    for (slot *p = c->shead; p; p = p->next)
      if (p->task == t && !p->finished) return 1;
  return 0;
}

/* server:close() → a future that resolves once every connection has ended, and whether the
** caller is one of the server's own handlers (whose request that future would wait for). */
static int l_srv_close(lua_State *L) {
  srv_box *b = luaL_checkudata(L, 1, SERVER_MT);
  srv *s = b->s;
  if (!s) { aio_future *f = aio_future_new(L); aio_future_resolve(L, f, 0); return 1; }  /* already closed */
  int own = srv_own_handler(L, s);
  aio_future *f = s->closed_fut;
  if (!f) {
    f = aio_future_new(L);
    s->closed_fut = f;
    s->closed_ref = aio_ref(L, -1);
  } else aio_pushref(L, s->closed_ref);
  lua_pushboolean(L, own);
  srv_begin_close(s);
  aio_hs_srv_maybe_done(s);
  return 2;
}

/* server:connections() → number of open connections. */
static int l_nconns(lua_State *L) {
  lua_pushinteger(L, check_srv(L)->nconns);
  return 1;
}

/* ---- the conn object the facade answers through ------------------------------------ */

/* The conn box at argument 1. The conn methods are closures over the conn metatable: comparing
** with that upvalue costs less than luaL_checkudata's registry lookup by name, on every call. */
static conn_box *to_conn_box(lua_State *L) {
  conn_box *b = lua_touserdata(L, 1);
  if (b && lua_getmetatable(L, 1)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) return b;
  }
  return luaL_checkudata(L, 1, CONN_MT);     /* raises the usual error */
}

/* Returns conn and slot for (box, seq), or NULL when the connection is gone. */
static conn *check_conn(lua_State *L, slot **sp) {
  conn_box *b = to_conn_box(L);
  uint32_t seq = (uint32_t)luaL_checkinteger(L, 2);
  if (!b->c) return NULL;
  *sp = aio_hs_slot_find(b->c, seq);
  return *sp ? b->c : NULL;
}

/* The final status at idx (an integer 200..599; raises otherwise). */
static int check_status(lua_State *L, int idx) {
  lua_Integer n = luaL_checkinteger(L, idx);
  luaL_argcheck(L, n >= 200 && n <= 599, idx, "status must be from 200 to 599");
  return (int)n;
}

/* The value at idx as a string, through tostring (__tostring included; nil is "nil"). */
static const char *to_text(lua_State *L, int idx, size_t *n) {
  return lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, n) : luaL_tolstring(L, idx, n);
}

/* Sends the head of the answer to (conn, seq) at 1, 2 (status at 3, headers at 4) with the first
** body bytes d[0..n), n being the Content-Length unless streamed: the common part of conn:respond
** and conn:start. Returns the conn and sets *pp, or returns NULL when the client has gone or
** the request was answered already. */
static conn *answer_head(lua_State *L, slot **pp, const char *d, size_t n, int streamed) {
  slot *p;
  conn *c = check_conn(L, &p);
  int status = check_status(L, 3);
  if (!c || p->started) return NULL;
  aio_hs_slot_answer(L, c, p, status, 4, d, n, streamed);
  *pp = p;
  return c;
}

/* conn:respond(seq, status, headers|nil, body|nil) → true, or false if the client has gone.
** The body goes through tostring (nil is an empty body) before the slot is looked up: a
** __tostring may answer the request itself, and so free the slot. */
static int l_respond(lua_State *L) {
  size_t blen = 0;
  const char *body = lua_isnoneornil(L, 5) ? "" : to_text(L, 5, &blen);
  slot *p;
  conn *c = answer_head(L, &p, body, blen, 0);
  if (c) {
    p->finished = 1;
    aio_hs_conn_flush_slots(c);
  }
  lua_pushboolean(L, c != NULL);
  return 1;
}

/* conn:start(seq, status, headers|nil [, chunk]) → as conn:write: sends the head of a streamed
** (chunked) body with its first chunk (through tostring, before anything is sent, and before
** the slot is looked up, as conn:respond's body). */
static int l_start(lua_State *L) {
  size_t n = 0;
  const char *d = lua_isnone(L, 5) ? "" : to_text(L, 5, &n);
  slot *p;
  conn *c = answer_head(L, &p, d, n, 1);
  return c ? aio_hs_push_drain(L, c, p) : 0;
}

/* conn:write(seq, chunk) → a future to await before writing more (see push_drain), or nothing:
** one chunk of a streamed body (through tostring, before the slot is looked up, as conn:respond's
** body). */
static int l_write(lua_State *L) {
  size_t n;
  const char *d = to_text(L, 3, &n);
  slot *p;
  conn *c = check_conn(L, &p);
  if (!c || !p->started || p->finished) return 0;
  aio_hs_slot_write(c, p, d, n);
  return aio_hs_push_drain(L, c, p);
}

/* conn:finish(seq) → true: ends a streamed body. */
static int l_finish(lua_State *L) {
  slot *p;
  conn *c = check_conn(L, &p);
  if (!c || !p->started || p->finished) { lua_pushboolean(L, 0); return 1; }
  if (p->chunked && !p->head_only) aio_hs_slot_emit(c, p, "0\r\n\r\n", 5);
  p->finished = 1;
  aio_hs_conn_flush_slots(c);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:drain(seq) → a future to await before writing more, or nothing (see push_drain). */
static int l_drain(lua_State *L) {
  slot *p;
  conn *c = check_conn(L, &p);
  return c ? aio_hs_push_drain(L, c, p) : 0;
}

/* conn:abort() — drops the connection (a handler failed after it had started streaming). */
static int l_abort(lua_State *L) {
  conn_box *b = to_conn_box(L);
  if (b->c) aio_hs_conn_close(b->c);
  return 0;
}

/* conn:peer() → "ip:port" of the client, or nil. */
static int l_peer(lua_State *L) {
  conn_box *b = to_conn_box(L);
  if (!b->c) return 0;
  struct sockaddr_storage a; int len = sizeof a; char ip[64];
  if (uv_tcp_getpeername(&b->c->tcp, (struct sockaddr *)&a, &len) != 0) return 0;
  if (a.ss_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)&a, ip, sizeof ip);
  else uv_ip4_name((struct sockaddr_in *)&a, ip, sizeof ip);
  lua_pushfstring(L, "%s:%d", ip, (int)ntohs(((struct sockaddr_in *)&a)->sin_port));
  return 1;
}

/* Opens aio.http_server_c: listen; the server and conn metatables. */
int luaopen_aio_http_server_c(lua_State *L) {
  static const luaL_Reg srv_methods[] = {
    {"port", l_port}, {"close", l_srv_close}, {"connections", l_nconns}, {NULL, NULL}};
  static const luaL_Reg conn_methods[] = {
    {"respond", l_respond}, {"start", l_start}, {"write", l_write}, {"finish", l_finish},
    {"drain", l_drain}, {"abort", l_abort}, {"peer", l_peer}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"listen", l_listen}, {"unescape", aio_hs_l_unescape},
                                   {"decode_query", aio_hs_l_decode_query},
                                   {"check_header", aio_hs_l_check_header},
                                   {"headers", aio_hs_l_headers},
                                   {NULL, NULL}};
  luaL_newmetatable(L, SERVER_MT);
  lua_pushcfunction(L, l_srv_gc);
  lua_setfield(L, -2, "__gc");
  luaL_newlib(L, srv_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, CONN_MT);
  luaL_newlibtable(L, conn_methods);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, conn_methods, 1);          /* upvalue 1: the metatable (to_conn_box) */
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}

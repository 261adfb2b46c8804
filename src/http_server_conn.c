/*
** http_server_conn.c — one connection of the HTTP server: accepting it, reading and parsing its
** requests (the llhttp callbacks and our limits: 431, 413, 505, 400), spawning a handler task
** per request, its deadlines (the sweep timer), and closing it (shutdown, half-close, reset).
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "http_server.h"

/* ---- connection life cycle -------------------------------------------------------------- */

/* Close callback: the conn's memory (and its handle's) is freed only here. */
static void on_conn_closed(uv_handle_t *h) {
  conn *c = h->data;
  srv *s = c->s;
  aio_hs_conn_drop_slots(NULL, c, 0);               /* conn_close let go of their tasks */
  aio_buf_free(&c->url); aio_buf_free(&c->hdrs); aio_buf_free(&c->body);
  if (c->prev) c->prev->next = c->next; else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->nconns--;
  free(c);
  aio_hs_srv_maybe_done(s);
}

/* Closes the socket now; the Lua box goes dead so late handler writes are no-ops. Frees no
** memory (the slots go in on_conn_closed): a caller deep in a write may still hold c and a slot. */
void aio_hs_conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->box) { c->box->c = NULL; c->box = NULL; }
  /* At exit the loop closes every handle itself and the state is going away: touch neither. */
  if (c->s->loop->closing || uv_is_closing((uv_handle_t *)&c->tcp)) return;
  lua_State *L = c->s->loop->L;
  /* Handlers still working for this client are cancelled: nobody will read their answer. */
  for (slot *p = c->shead; p; p = p->next) aio_hs_slot_release(L, p, 1);
  aio_hs_conn_wake_writers(c);                      /* they see a closed connection and go on */
  if (c->box_ref != LUA_NOREF) { aio_unref(L, c->box_ref); c->box_ref = LUA_NOREF; }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* Closes the socket now without touching Lua (http_server.h). */
void aio_hs_conn_drop(conn *c) {
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  c->closing = 1;
  if (c->box) { c->box->c = NULL; c->box = NULL; }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* FIN sent: give the peer 2 s to finish sending (its EOF closes us sooner). */
static void on_shutdown(uv_shutdown_t *r, int status) {
  conn *c = r->handle->data;
  (void)status;
  free(r);
  c->deadline = uv_now(&c->s->loop->uv) + 2000; /* drain the peer's last bytes, then close */
  if (c->input_dead && !c->closing && uv_is_readable((uv_stream_t *)&c->tcp) == 0)
    aio_hs_conn_close(c);
}

/* Ends the connection after the last response. With drain (a rejected request, whose peer
** may still be sending), FIN first and discard input for a while: closing a socket with
** unread input sends RST, which can destroy our answer before the peer reads it. */
void aio_hs_conn_finish(conn *c, int drain) {
  if (c->closing || c->shutting) return;
  c->input_dead = 1;
  if (!drain) {
    c->close_after = 1;
    if (c->writes == 0) aio_hs_conn_close(c);
    return;
  }
  c->shutting = 1;
  uv_shutdown_t *r = malloc(sizeof *r);
  if (!r || uv_shutdown(r, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    free(r);
    aio_hs_conn_close(c);
  }
}

/* Nothing in flight any more: arm the idle deadline, or close if the server is closing. */
void aio_hs_conn_idle(conn *c) {
  if (c->shead || c->in_msg || c->closing) return;
  if (c->close_when_idle) { aio_hs_conn_finish(c, 0); return; }
  c->deadline = uv_now(&c->s->loop->uv) + c->s->idle_timeout;
}

/* ---- llhttp callbacks ------------------------------------------------------------------ */

/* Counts n more bytes of the head (and trailers); 431 once over max_header. */
static int too_big(conn *c, size_t n) {
  c->head_bytes += n;
  if (c->head_bytes > c->s->max_header) { c->err_status = 431; return 1; }
  return 0;
}

/* A request starts: reset the per-request buffers and arm the header deadline. */
static int on_message_begin(llhttp_t *p) {
  conn *c = p->data;
  c->in_msg = 1;
  c->url.len = c->hdrs.len = c->body.len = 0;
  c->head_bytes = 0;
  c->trailers_at = SIZE_MAX;
  c->version_seen = c->want_continue = 0;
  c->name_at = 0;
  c->hosts = c->in_expect = c->expect_100 = 0;
  c->deadline = uv_now(&c->s->loop->uv) + c->s->header_timeout;
  return 0;
}

/* A piece of the method (counted against max_header). */
static int on_method(llhttp_t *p, const char *at, size_t n) {
  (void)at;
  return too_big(p->data, n) ? -1 : 0;
}

/* A piece of the version ("1.1"). Only HTTP/1.x is spoken here: a major digit other than 1
** gets 505 (llhttp itself knows 0.9 and 2.0, and would make 3.0 a 400). */
static int on_version(llhttp_t *p, const char *at, size_t n) {
  conn *c = p->data;
  if (n == 0) return 0;
  if (!c->version_seen && at[0] >= '0' && at[0] <= '9' && at[0] != '1') { c->err_status = 505; return -1; }
  if (!c->version_seen && too_big(c, 4)) return -1;   /* the request line's two spaces and CRLF */
  c->version_seen = 1;
  return too_big(c, n) ? -1 : 0;
}

/* A piece of the request target (counted against max_header). */
static int on_url(llhttp_t *p, const char *at, size_t n) {
  conn *c = p->data;
  if (too_big(c, n)) return -1;
  return aio_buf_try_add(&c->url, at, n) ? 0 : -1;
}

/* A piece of a header name, stored lower-cased (counted against max_header). */
static int on_header_field(llhttp_t *p, const char *at, size_t n) {
  conn *c = p->data;
  if (too_big(c, n)) return -1;
  size_t start = c->hdrs.len;
  if (!aio_buf_try_add(&c->hdrs, at, n)) return -1;
  for (size_t i = start; i < c->hdrs.len; i++) {
    char ch = c->hdrs.data[i];
    if (ch >= 'A' && ch <= 'Z') c->hdrs.data[i] = (char)(ch + 32);
  }
  return 0;
}

/* A header name is complete. No whitespace may stand before the colon (RFC 9112 5.1: 400);
** the line's ": " and CRLF count against max_header, so empty lines cannot flood us. Host and
** Expect fields are noted for on_headers_complete (trailers are noted too, never looked at). */
static int on_header_field_complete(llhttp_t *p) {
  conn *c = p->data;
  char last = c->hdrs.len ? c->hdrs.data[c->hdrs.len - 1] : ':';
  if (last == ' ' || last == '\t') { c->err_status = 400; return -1; }
  size_t kl = c->hdrs.len - c->name_at;
  const char *k = kl ? c->hdrs.data + c->name_at : "";
  if (kl == 4 && memcmp(k, "host", 4) == 0 && c->hosts < 2) c->hosts++;
  c->in_expect = kl == 6 && memcmp(k, "expect", 6) == 0;
  if (too_big(c, 4) || !aio_buf_try_add(&c->hdrs, "", 1)) return -1;  /* the NUL ends the name */
  c->value_at = c->hdrs.len;
  return 0;
}

/* A piece of a header value (counted against max_header). */
static int on_header_value(llhttp_t *p, const char *at, size_t n) {
  conn *c = p->data;
  if (too_big(c, n)) return -1;
  return aio_buf_try_add(&c->hdrs, at, n) ? 0 : -1;
}

/* A header value is complete: trailing whitespace goes (llhttp drops only the leading). */
static int on_header_value_complete(llhttp_t *p) {
  conn *c = p->data;
  while (c->hdrs.len > c->value_at && (c->hdrs.data[c->hdrs.len - 1] == ' ' || c->hdrs.data[c->hdrs.len - 1] == '\t'))
    c->hdrs.len--;
  size_t vl = c->hdrs.len - c->value_at;
  if (c->in_expect && vl == 12 && strncasecmp(c->hdrs.data + c->value_at, "100-continue", 12) == 0)
    c->expect_100 = 1;
  if (!aio_buf_try_add(&c->hdrs, "", 1)) return -1;   /* the NUL that ends the value */
  c->name_at = c->hdrs.len;                           /* where the next name starts */
  return 0;
}

/* The head is complete: exactly one Host in HTTP/1.1, at most one in 1.0 (RFC 9112 3.2: 400);
** 413 early from Content-Length; the body gets the idle deadline. */
static int on_headers_complete(llhttp_t *p) {
  conn *c = p->data;
  if (c->hosts > 1 || (c->hosts == 0 && p->http_minor >= 1)) { c->err_status = 400; return -1; }
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->s->max_body) { c->err_status = 413; return -1; }
  c->deadline = uv_now(&c->s->loop->uv) + c->s->idle_timeout;
  /* "Expect: 100-continue": the client waits (curl: 1 s) for a go-ahead before the body. An
  ** interim answer must not overtake earlier answers: with some pending it is owed, and sent by
  ** conn_flush_slots when the last of them is out. */
  if (c->expect_100 && p->http_minor >= 1 && (p->flags & (F_CONTENT_LENGTH | F_CHUNKED))) {
    if (c->shead) c->want_continue = 1;
    else aio_hs_conn_send_continue(c);
  }
  return 0;
}

/* A chunk's size line: after the last (size 0) come the trailer fields, kept apart. */
static int on_chunk_header(llhttp_t *p) {
  conn *c = p->data;
  if (p->content_length == 0) c->trailers_at = c->hdrs.len;
  return 0;
}

/* A piece of the (de-chunked) body, counted against max_body. */
static int on_body(llhttp_t *p, const char *at, size_t n) {
  conn *c = p->data;
  if (c->body.len + n > c->s->max_body) { c->err_status = 413; return -1; }
  c->deadline = uv_now(&c->s->loop->uv) + c->s->idle_timeout;
  return aio_buf_try_add(&c->body, at, n) ? 0 : -1;
}

/* A request is complete: make its slot, build the req table and spawn the handler task. */
static int on_message_complete(llhttp_t *p) {
  conn *c = p->data;
  srv *s = c->s;
  lua_State *L = s->loop->L;
  if (c->closing) return -1;                  /* a write failed meanwhile (a 100 Continue) */
  int keep = llhttp_should_keep_alive(p);
  slot *sl = aio_hs_slot_new(c);
  if (!sl) return -1;
  sl->http10 = (p->http_major == 1 && p->http_minor == 0);
  if (sl->http10 && (p->flags & F_TRANSFER_ENCODING)) keep = 0;  /* RFC 9112 6.1: faulty framing */
  sl->head_only = (p->method == HTTP_HEAD);
  /* A client pipelining more than max_pipeline requests gets them answered, the last with
  ** Connection: close, and the rest of its input is dropped: a flood costs at most that many
  ** tasks. (Real pipelining clients send a few and retry on close.) */
  sl->close = !keep || s->closing || c->close_when_idle || c->nslots >= s->max_pipeline;
  if (p->method == HTTP_CONNECT) sl->close = 1; /* answered, never tunnelled: the rest is not HTTP */
  c->in_msg = 0;
  c->want_continue = 0;                       /* the body came without it */
  c->deadline = 0;                            /* the handler runs: no deadline */
  int top = lua_gettop(L);
  aio_pushref(L, s->handler_ref);
  aio_pushref(L, c->box_ref);
  lua_pushinteger(L, sl->seq);
  aio_hs_push_request(L, s, c, p);
  sl->task = aio_spawn(L, 3);
  sl->task_ref = aio_ref(L, -1);
  lua_settop(L, top);
  if (sl->close) return HPE_PAUSED;           /* no more requests on this connection */
  return 0;
}

/* The parser's callbacks (llhttp_settings_init would only zero the rest). */
static const llhttp_settings_t settings = {
  .on_message_begin = on_message_begin, .on_url = on_url, .on_method = on_method,
  .on_version = on_version, .on_header_field = on_header_field,
  .on_header_field_complete = on_header_field_complete, .on_header_value = on_header_value,
  .on_header_value_complete = on_header_value_complete, .on_headers_complete = on_headers_complete,
  .on_chunk_header = on_chunk_header, .on_body = on_body, .on_message_complete = on_message_complete,
};

/* ---- reading ---------------------------------------------------------------------------- */

/* Reads land in the server's one buffer: on_read consumes them before returning. */
void aio_hs_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  conn *c = h->data;
  (void)hint;
  b->base = c->s->readbuf;
  b->len = sizeof c->s->readbuf;
}

/* Answers a request llhttp (or our limits) rejected, then ends the connection. */
static void conn_reject(conn *c, int status) {
  c->input_dead = 1;
  c->in_msg = 0;
  c->deadline = 0;                 /* the head's deadline is over: earlier handlers may still run */
  slot *p = aio_hs_slot_new(c);
  if (!p) { aio_hs_conn_close(c); return; }
  p->close = 1;
  p->drain = 1;
  const char *msg = aio_hs_reason(status);
  char out[512];
  int n = snprintf(out, sizeof out, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n", status, msg,
                   aio_hs_http_date(),
                   strlen(msg) + 1, msg);
  aio_hs_slot_emit(c, p, out, (size_t)n);
  p->finished = 1;
  aio_hs_conn_flush_slots(c);
}

/* The client shut its sending side (EOF) with answers owed or on their way. It may wait for
** them (shutdown(SHUT_WR), `nc -N`, some HTTP/1.0 clients), so they are finished and sent, then
** the connection closes; a partial request is dropped. (A client that closed altogether is
** found out when the answer is written: a reset.) */
static void conn_half_closed(conn *c) {
  c->input_dead = 1;
  c->in_msg = 0;
  c->deadline = 0;
  c->reading = 0;                             /* libuv stopped reading at EOF */
  if (c->stail) c->stail->close = 1;          /* conn_flush_slots ends the connection after it */
  else if (!c->shutting) aio_hs_conn_finish(c, 0);   /* (a shutdown closes in on_shutdown) */
}

/* Bytes from a client: feed llhttp; a parse error or a limit answers and ends the connection. */
void aio_hs_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  conn *c = st->data;
  if (nread < 0) {                            /* EOF with work in flight: see conn_half_closed */
    if (nread == UV_EOF && (c->shead || c->writes > 0)) conn_half_closed(c);
    else aio_hs_conn_close(c);                /* an error (reset), or nothing owed: close now */
    return;
  }
  if (nread == 0 || c->input_dead) return;
  llhttp_errno_t e = llhttp_execute(&c->parser, b->base, (size_t)nread);
  /* An Upgrade (h2c, websocket) is ignored, as RFC 9110 7.8 allows: the request is answered
  ** as plain HTTP/1.1 and parsing goes on after it. (A CONNECT's slot closes: HPE_PAUSED.) */
  while (e == HPE_PAUSED_UPGRADE && !c->closing) {
    const char *at = llhttp_get_error_pos(&c->parser);
    llhttp_resume_after_upgrade(&c->parser);
    e = llhttp_execute(&c->parser, at, (size_t)(b->base + nread - at));
  }
  if (e == HPE_OK || c->closing) return;
  if (e == HPE_PAUSED) { c->input_dead = 1; return; }
  conn_reject(c, c->err_status ? c->err_status : 400);
}

/* A client connected: make its conn, its Lua box, and start reading. */
void aio_hs_on_connection(uv_stream_t *ls, int status) {
  srv *s = ls->data;
  if (status < 0 || s->closing) return;
  conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->s = s;
  c->box_ref = LUA_NOREF;
  uv_tcp_init(&s->loop->uv, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) { uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free); return; }
  c->next = s->conns; if (s->conns) s->conns->prev = c; s->conns = c;
  s->nconns++;
  uv_tcp_nodelay(&c->tcp, 1);
  llhttp_init(&c->parser, HTTP_REQUEST, &settings);
  c->parser.data = c;
  lua_State *L = s->loop->L;
  conn_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->c = c;
  luaL_setmetatable(L, CONN_MT);
  c->box = box;
  c->box_ref = aio_ref(L, -1);
  lua_pop(L, 1);
  c->deadline = uv_now(&s->loop->uv) + s->header_timeout;
  c->reading = uv_read_start((uv_stream_t *)&c->tcp, aio_hs_on_alloc, aio_hs_on_read) == 0;
}

/* Sweep timer: closes connections past their deadline (slowloris, idle keep-alive), and those
** whose queued output has not moved for idle_timeout (a peer that stopped reading). The
** latter counts sweeps, not clock time: libuv runs timers before I/O, so after the loop was
** held up (handlers building large answers) a clock would blame the peer for our delay. */
void aio_hs_on_sweep(uv_timer_t *t) {
  srv *s = t->data;
  uint64_t now = uv_now(&s->loop->uv);
  for (conn *c = s->conns, *n; c; c = n) {
    n = c->next;
    if (c->closing) continue;
    if (c->writes > 0) {
      c->stalled = c->progressed ? 0 : c->stalled + 1;
      c->progressed = 0;
      if ((uint64_t)c->stalled * s->tick >= s->idle_timeout) aio_hs_conn_close(c);
    } else if (c->deadline && now >= c->deadline) aio_hs_conn_close(c);
  }
}

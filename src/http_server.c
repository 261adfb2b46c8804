/*
** http_server.c — HTTP/1.1 server: libuv TCP + llhttp (strict) glue (module aio.http_server_c).
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
*/
#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include <signal.h>
#include <llhttp.h>
#include "aio.h"
#include "buf.h"
#include "http_common.h"

#define SERVER_MT "aio.http.server"
#define CONN_MT "aio.http.conn"

typedef struct srv srv;
typedef struct conn conn;


typedef struct slot {              /* one request's response, in request order */
  struct slot *next;
  uint32_t seq;
  aio_task *task; int task_ref;    /* the handler's task, while the slot lives */
  aio_buf out;                        /* bytes waiting for earlier responses to finish */
  unsigned finished : 1, close : 1, drain : 1, head_only : 1, http10 : 1, chunked : 1, started : 1;
} slot;

typedef struct { conn *c; } conn_box;
typedef struct { srv *s; } srv_box;

struct conn {
  uv_tcp_t tcp;                    /* first member: the handle's memory is the conn's */
  llhttp_t parser;
  srv *s;
  conn *prev, *next;
  conn_box *box; int box_ref;
  aio_buf url, hdrs, body;            /* the request being parsed; hdrs = "name\0value\0"... */
  size_t head_bytes;               /* the head so far, with per-line overhead (max_header) */
  size_t name_at, value_at;        /* where the header name / value being parsed starts in hdrs */
  size_t trailers_at;              /* where chunked trailer fields start in hdrs (SIZE_MAX: none) */
  int err_status;                  /* 431/413 found by a callback, else 0 (→ 400) */
  slot *shead, *stail; int nslots;
  size_t buffered;                 /* bytes in the buffers of the slots after the head (conn_pace) */
  uint32_t next_seq;
  uint64_t deadline;               /* ms (uv_now); 0 = none */
  int writes;                      /* uv_write requests in flight */
  uint32_t stalled;                /* sweeps with queued output that did not move (see on_sweep) */
  aio_future *drained; int drained_ref; /* resolved for writers waiting on output (see conn_pace) */
  unsigned in_msg : 1, input_dead : 1, close_after : 1, closing : 1, shutting : 1, close_when_idle : 1;
  unsigned reading : 1;            /* uv_read_start is in effect */
  unsigned version_seen : 1;       /* the request line's version has begun (on_version) */
  unsigned want_continue : 1;      /* a 100 Continue is owed once earlier answers are out */
  unsigned hosts : 2;              /* Host fields seen in the head (2: two or more) */
  unsigned in_expect : 1;          /* the field being parsed is Expect */
  unsigned expect_100 : 1;         /* the head asked for "Expect: 100-continue" */
  unsigned progressed : 1;         /* a queued write finished since the last sweep */
};

struct srv {
  aio_loop *loop;
  uv_tcp_t *listener;              /* malloc'd; NULL once closed */
  uv_timer_t *sweep;
  int handler_ref, self_ref;
  int keys_ref, req_mt_ref;        /* request_keys as Lua strings; the facade's request metatable */
  conn *conns; int nconns;
  size_t max_body, max_header;
  int max_pipeline;                /* requests in flight per connection (the last says close) */
  uint64_t header_timeout, idle_timeout; /* ms */
  uint64_t tick;                   /* ms between sweeps */
  size_t high_water, low_water;    /* unsent output per connection: stop / resume (write_buffer) */
  int closing;
  int building;                    /* l_listen has not finished it: the box's __gc discards it */
  aio_future *closed_fut; int closed_ref;
  int port;
  srv_box *box;                    /* the Lua object, cleared when the server is freed */
  char readbuf[65536];             /* shared: reads are consumed synchronously in read_cb */
};

typedef struct { uv_write_t req; char data[]; } wreq;

static llhttp_settings_t settings;
static int settings_ready = 0;

static _Thread_local aio_buf scratch;         /* response heads are formatted here (one thread, one loop) */

static void conn_close(conn *c);
static void conn_flush_slots(conn *c);
static void conn_pace(conn *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);
static void srv_maybe_done(srv *s);

/* Appends a string literal to an aio_buf (0 when out of memory). */
#define SB_LIT(b, s) aio_buf_try_add((b), (s), sizeof(s) - 1)

/* Lets go of a slot's handler task (if any), cancelling it first when cancel is set. */
static void slot_release(lua_State *L, slot *p, int cancel) {
  if (p->task_ref != LUA_NOREF && L) {
    if (cancel && !p->finished) aio_task_cancel(L, p->task, "http client disconnected");
    aio_unref(L, p->task_ref);
  }
  p->task_ref = LUA_NOREF;
  p->task = NULL;
}

/* Frees a slot, releasing its task as slot_release does. */
static void slot_free(lua_State *L, slot *p, int cancel) {
  slot_release(L, p, cancel);
  aio_buf_free(&p->out);
  free(p);
}

/* Frees all of c's slots as slot_free does (L NULL: their tasks are not touched). */
static void conn_drop_slots(lua_State *L, conn *c, int cancel) {
  while (c->shead) { slot *n = c->shead->next; slot_free(L, c->shead, cancel); c->shead = n; }
  c->stail = NULL;
  c->nslots = 0;
  c->buffered = 0;
}

/* ---- writing ---------------------------------------------------------------------------- */

/* A queued write finished: free its copy; close if that was the last byte before a close or
** the peer is gone; otherwise the output moved, which may let writers and reading resume. */
static void on_written(uv_write_t *w, int status) {
  conn *c = w->handle->data;
  free(w);
  c->writes--;
  if (c->closing) return;
  if (status < 0 || (c->writes == 0 && c->close_after)) { conn_close(c); return; }
  c->progressed = 1;
  if (c->writes == 0 && !c->shead && !c->in_msg && c->deadline)   /* idle from the last byte out */
    c->deadline = uv_now(&c->s->loop->uv) + c->s->idle_timeout;
  conn_pace(c);
}

/* Bytes per queued write. libuv reports a write only once all of it is out (its queue size too),
** so pieces this big let on_written see a slow reader's progress, not just a stalled one. */
#define WRITE_PIECE 65536

/* Sends bytes in order: try_write when nothing is queued, the rest through uv_write copies.
** A failed write (the peer reset) closes the connection: conn_close frees nothing, so the
** caller may go on with its conn and slot, but must stop once c->closing is set. */
static void conn_send(conn *c, const char *p, size_t n) {
  if (c->closing || n == 0) return;
  if (c->writes == 0) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)(n < (1u << 30) ? n : (1u << 30)));
    int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (w > 0) { p += w; n -= (size_t)w; }
    else if (w != UV_EAGAIN && w != UV_ENOSYS) { conn_close(c); return; }
  }
  while (n > 0) {
    size_t k = n < WRITE_PIECE ? n : WRITE_PIECE;
    wreq *r = malloc(sizeof *r + k);
    if (!r) { conn_close(c); return; }
    memcpy(r->data, p, k);
    uv_buf_t b = uv_buf_init(r->data, (unsigned)k);
    if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) { free(r); conn_close(c); return; }
    if (c->writes++ == 0) c->stalled = 0;
    p += k; n -= k;
  }
}

/* Sends the interim answer a client that sent "Expect: 100-continue" waits for. */
static void conn_send_continue(conn *c) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  conn_send(c, cont, sizeof cont - 1);
}

/* Bytes of output not yet taken by the kernel: libuv's write queue and what later slots buffer
** (the head's writer waits on the first, a later slot's on its own buffer, reading on both).
** The slots' part is a running count (c->buffered): conn_pace runs on every emit, and walking
** up to max_pipeline slots each time made a pipelined burst quadratic. */
static size_t conn_queued(conn *c) {
  assert(c->buffered == 0 || (c->shead && c->shead->next));   /* only later slots buffer */
  return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) + c->buffered;
}

/* Wakes the writers waiting in conn:drain (each checks again whether it may go on). */
static void conn_wake_writers(conn *c) {
  if (!c->drained) return;
  lua_State *L = c->s->loop->L;
  aio_future_resolve(L, c->drained, 0);
  aio_unref(L, c->drained_ref);
  c->drained = NULL;
}

/* Backpressure: stops reading while the output not yet taken by the kernel is over the
** high-water mark, and reads again (and wakes waiting writers) once it is under the low-water
** mark. So a client that does not read its answers cannot make us parse and answer more
** requests, nor a handler's res:write grow our memory: the write waits (conn:drain). */
static void conn_pace(conn *c) {
  if (c->closing) return;
  size_t q = conn_queued(c);
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= c->s->low_water) conn_wake_writers(c);
  if (c->reading && q > c->s->high_water) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  } else if (!c->reading && q <= c->s->low_water && uv_is_readable((uv_stream_t *)&c->tcp)) {
    c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0;
  }
}

/* ---- connection life cycle -------------------------------------------------------------- */

/* Close callback: the conn's memory (and its handle's) is freed only here. */
static void on_conn_closed(uv_handle_t *h) {
  conn *c = h->data;
  srv *s = c->s;
  conn_drop_slots(NULL, c, 0);               /* conn_close let go of their tasks */
  aio_buf_free(&c->url); aio_buf_free(&c->hdrs); aio_buf_free(&c->body);
  if (c->prev) c->prev->next = c->next; else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->nconns--;
  free(c);
  srv_maybe_done(s);
}

/* Closes the socket now; the Lua box goes dead so late handler writes are no-ops. Frees no
** memory (the slots go in on_conn_closed): a caller deep in a write may still hold c and a slot. */
static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->box) { c->box->c = NULL; c->box = NULL; }
  /* At exit the loop closes every handle itself and the state is going away: touch neither. */
  if (c->s->loop->closing || uv_is_closing((uv_handle_t *)&c->tcp)) return;
  lua_State *L = c->s->loop->L;
  /* Handlers still working for this client are cancelled: nobody will read their answer. */
  for (slot *p = c->shead; p; p = p->next) slot_release(L, p, 1);
  conn_wake_writers(c);                      /* they see a closed connection and go on */
  if (c->box_ref != LUA_NOREF) { aio_unref(L, c->box_ref); c->box_ref = LUA_NOREF; }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* FIN sent: give the peer 2 s to finish sending (its EOF closes us sooner). */
static void on_shutdown(uv_shutdown_t *r, int status) {
  conn *c = r->handle->data;
  (void)status;
  free(r);
  c->deadline = uv_now(&c->s->loop->uv) + 2000; /* drain the peer's last bytes, then close */
  if (c->input_dead && !c->closing && uv_is_readable((uv_stream_t *)&c->tcp) == 0) conn_close(c);
}

/* Ends the connection after the last response. With drain (a rejected request, whose peer
** may still be sending), FIN first and discard input for a while: closing a socket with
** unread input sends RST, which can destroy our answer before the peer reads it. */
static void conn_finish(conn *c, int drain) {
  if (c->closing || c->shutting) return;
  c->input_dead = 1;
  if (!drain) {
    c->close_after = 1;
    if (c->writes == 0) conn_close(c);
    return;
  }
  c->shutting = 1;
  uv_shutdown_t *r = malloc(sizeof *r);
  if (!r || uv_shutdown(r, (uv_stream_t *)&c->tcp, on_shutdown) != 0) { free(r); conn_close(c); }
}

/* Nothing in flight any more: arm the idle deadline, or close if the server is closing. */
static void conn_idle(conn *c) {
  if (c->shead || c->in_msg || c->closing) return;
  if (c->close_when_idle) { conn_finish(c, 0); return; }
  c->deadline = uv_now(&c->s->loop->uv) + c->s->idle_timeout;
}

/* ---- response slots --------------------------------------------------------------------- */

static slot *slot_find(conn *c, uint32_t seq) {
  for (slot *p = c->shead; p; p = p->next) if (p->seq == seq) return p;
  return NULL;
}

/* Emits bytes for slot p: to the socket if p is the head, else into p's buffer. */
static void slot_emit(conn *c, slot *p, const char *d, size_t n) {
  if (p == c->shead) conn_send(c, d, n);
  else if (aio_buf_try_add(&p->out, d, n)) c->buffered += n;
  else conn_close(c);
  conn_pace(c);
}

/* Pops finished head slots, sending what later slots had buffered; closes after a close slot. */
static void conn_flush_slots(conn *c) {
  while (!c->closing && c->shead && c->shead->finished) {
    slot *p = c->shead;
    c->shead = p->next;
    if (!c->shead) c->stail = NULL;
    c->nslots--;
    int close = p->close, drain = p->drain;
    slot_free(c->s->loop->L, p, 0);
    if (close) {
      c->input_dead = 1;
      conn_drop_slots(c->s->loop->L, c, 1);
      conn_finish(c, drain);
      return;
    }
    if (c->shead && c->shead->out.len) {
      c->buffered -= c->shead->out.len;
      conn_send(c, c->shead->out.data, c->shead->out.len);
      aio_buf_free(&c->shead->out);
    }
    conn_wake_writers(c);                    /* a new head: its writer waits on other bytes */
  }
  if (c->shead || c->closing) return;
  if (c->want_continue && c->in_msg && !c->input_dead) {   /* the request's turn has come */
    c->want_continue = 0;
    conn_send_continue(c);
  }
  conn_idle(c);
}

/* Adds a slot for the next response; its flags come from the request just parsed. */
static slot *slot_new(conn *c) {
  slot *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->seq = c->next_seq++;
  p->task_ref = LUA_NOREF;
  if (c->stail) c->stail->next = p; else c->shead = p;
  c->stail = p;
  c->nslots++;
  return p;
}

/* The reason phrase of a status code: every final code IANA registers (RFC 9110 names, 418
** as commonly sent), "" for others (the phrase may be empty; the space before it stays). */
static const char *reason(int status) {
  switch (status) {
    case 200: return "OK"; case 201: return "Created"; case 202: return "Accepted";
    case 203: return "Non-Authoritative Information"; case 204: return "No Content";
    case 205: return "Reset Content"; case 206: return "Partial Content"; case 207: return "Multi-Status";
    case 208: return "Already Reported"; case 226: return "IM Used";
    case 300: return "Multiple Choices"; case 301: return "Moved Permanently"; case 302: return "Found";
    case 303: return "See Other"; case 304: return "Not Modified"; case 305: return "Use Proxy";
    case 307: return "Temporary Redirect"; case 308: return "Permanent Redirect";
    case 400: return "Bad Request"; case 401: return "Unauthorized"; case 402: return "Payment Required";
    case 403: return "Forbidden"; case 404: return "Not Found"; case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable"; case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout"; case 409: return "Conflict"; case 410: return "Gone";
    case 411: return "Length Required"; case 412: return "Precondition Failed"; case 413: return "Content Too Large";
    case 414: return "URI Too Long"; case 415: return "Unsupported Media Type"; case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed"; case 418: return "I'm a teapot"; case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content"; case 423: return "Locked"; case 424: return "Failed Dependency";
    case 425: return "Too Early"; case 426: return "Upgrade Required"; case 428: return "Precondition Required";
    case 429: return "Too Many Requests"; case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error"; case 501: return "Not Implemented"; case 502: return "Bad Gateway";
    case 503: return "Service Unavailable"; case 504: return "Gateway Timeout"; case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates"; case 507: return "Insufficient Storage"; case 508: return "Loop Detected";
    case 510: return "Not Extended"; case 511: return "Network Authentication Required";
    default: return "";
  }
}

/* The Date header value, formatted once per second. */
static const char *http_date(void) {
  static time_t last = 0;
  static char buf[64];
  time_t now = time(NULL);
  if (now != last) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    last = now;
  }
  return buf;
}

/* Raises "http: <what> "<s>"" with s's control characters shown as \ddd (s may hold CR, LF
** or NUL: they must not reach a log line raw). */
static int header_error(lua_State *L, const char *what, const char *s, size_t n) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n && i < 60; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= 32 && ch < 127 && ch != '"' && ch != '\\') luaL_addchar(&b, (char)ch);
    else { char esc[8]; snprintf(esc, sizeof esc, "\\%d", ch); luaL_addstring(&b, esc); }
  }
  luaL_pushresult(&b);
  return luaL_error(L, "http: %s \"%s\"", what, lua_tostring(L, -1));
}

/* Checks the response header at kidx (name) and vidx (value), pushes the value as a string and
** returns it. Raises when the name is not a token or the value holds CR, LF or NUL: either
** would let a handler's data split the response (header injection). */
static const char *check_header(lua_State *L, int kidx, int vidx, size_t *kl, size_t *vl) {
  if (lua_type(L, kidx) != LUA_TSTRING) luaL_error(L, "http: header name must be a string, got %s", luaL_typename(L, kidx));
  const char *k = lua_tolstring(L, kidx, kl);
  if (!aio_http_is_token(k, *kl)) header_error(L, "invalid header name", k, *kl);
  const char *v = luaL_tolstring(L, vidx, vl);
  if (aio_http_has_crlf_nul(v, *vl, NULL)) header_error(L, "CR, LF or NUL in the value of header", k, *kl);
  return v;
}

/* server_c.check_header(name, value) -> value as a string; raises as check_header does. */
static int l_check_header(lua_State *L) {
  size_t kl, vl;
  luaL_checkany(L, 2);
  check_header(L, 1, 2, &kl, &vl);
  return 1;
}

/* Appends v in base 10 or 16 (lower case) to b: snprintf took ~900 instructions a call. */
static void add_uint(aio_buf *b, unsigned long long v, unsigned base) {
  char d[24], *e = d + sizeof d, *s = e;
  do { *--s = "0123456789abcdef"[v % base]; v /= base; } while (v);
  aio_buf_try_add(b, s, (size_t)(e - s));
}

/* Non-zero if header name k (kl bytes) is lit, ignoring case. */
#define NAME_IS(k, kl, lit) ((kl) == sizeof(lit) - 1 && strncasecmp((k), (lit), sizeof(lit) - 1) == 0)

/* Non-zero if the comma-separated list v (vl bytes) holds the token "close" (any case). */
static int says_close(const char *v, size_t vl) {
  for (size_t i = 0; i < vl;) {
    while (i < vl && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t start = i;
    while (i < vl && v[i] != ',' && v[i] != ' ' && v[i] != '\t') i++;
    if (i - start == 5 && strncasecmp(v + start, "close", 5) == 0) return 1;
  }
  return 0;
}

/* Appends the status line and headers (user headers from the table at hidx, may be 0) to b.
** body_len < 0 means chunked (or close-delimited for HTTP/1.0). The framing headers are ours,
** with three exceptions: a user Date replaces ours, a user "Connection: close" closes the
** connection after this answer, and a HEAD answer keeps a user Content-Length (the length of
** the body a GET would get). Raw C buffer on purpose: a luaL_Buffer may push a box mid-way,
** which would break the lua_next walk of the headers. */
static void format_head(lua_State *L, aio_buf *b, conn *c, slot *p, int status, int hidx, long long body_len) {
  int has_ct = 0, has_date = 0, has_length = 0, is_head = p->head_only;  /* (format_head sets it) */
  SB_LIT(b, "HTTP/1.1 ");
  add_uint(b, (unsigned long long)status, 10);
  SB_LIT(b, " ");
  const char *phrase = reason(status);
  aio_buf_try_add(b, phrase, strlen(phrase));
  SB_LIT(b, "\r\n");
  if (hidx && lua_type(L, hidx) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, hidx)) {
      size_t kl, vl;
      const char *v = check_header(L, -2, -1, &kl, &vl);
      const char *k = lua_tostring(L, -3);
      int keep = 1;
      if (NAME_IS(k, kl, "connection")) { if (says_close(v, vl)) p->close = 1; keep = 0; }
      else if (NAME_IS(k, kl, "transfer-encoding")) keep = 0;
      else if (NAME_IS(k, kl, "content-length")) keep = has_length = is_head;
      else if (NAME_IS(k, kl, "content-type")) has_ct = 1;
      else if (NAME_IS(k, kl, "date")) has_date = 1;
      if (keep) { aio_buf_try_add(b, k, kl); SB_LIT(b, ": "); aio_buf_try_add(b, v, vl); SB_LIT(b, "\r\n"); }
      lua_pop(L, 2);
    }
  }
  if (!has_date) { const char *d = http_date(); SB_LIT(b, "Date: "); aio_buf_try_add(b, d, strlen(d)); SB_LIT(b, "\r\n"); }
  int bodyless = status == 204 || status == 304;  /* no body, no length */
  if (status == 205) body_len = 0;                /* RFC 9110 15.3.6: no content, say so */
  if (bodyless || status == 205) p->head_only = 1;
  if (!has_ct && !bodyless && status != 205) SB_LIT(b, "Content-Type: text/plain; charset=utf-8\r\n");
  if (bodyless || has_length) {
    /* RFC 9110 forbids Content-Length on 204 (ours would not describe a 304); a HEAD's own stays */
  } else if (body_len >= 0) {
    SB_LIT(b, "Content-Length: ");
    add_uint(b, (unsigned long long)body_len, 10);
    SB_LIT(b, "\r\n");
  } else if (!p->http10) {
    SB_LIT(b, "Transfer-Encoding: chunked\r\n");
    p->chunked = 1;
  } else p->close = 1;                        /* HTTP/1.0 stream: the close delimits the body */
  if (c->close_when_idle || c->s->closing) p->close = 1;
  if (p->close) SB_LIT(b, "Connection: close\r\n");
  else if (p->http10) SB_LIT(b, "Connection: keep-alive\r\n");
  SB_LIT(b, "\r\n");
}

/* ---- llhttp callbacks ------------------------------------------------------------------ */

/* Counts n more bytes of the head (and trailers); 431 once over max_header. */
static int too_big(conn *c, size_t n) {
  c->head_bytes += n;
  if (c->head_bytes > c->s->max_header) { c->err_status = 431; return 1; }
  return 0;
}

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
    else conn_send_continue(c);
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
static int l_unescape(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  push_unescaped(L, s, n, lua_toboolean(L, 2));
  return 1;
}

/* server_c.decode_query(s) -> {key = value}: pairs split at "&" or ";", key and value split at
** the first "=", both unescaped with "+" as a space; a repeated key keeps its last value
** (tornado's get_argument). In C: it ran on every request that read req.query. */
static int l_decode_query(lua_State *L) {
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

/* Pushes a table of the header pairs in h[from, to): repeats joined by ", ". */
static void push_headers(lua_State *L, const char *h, size_t from, size_t to) {
  const char *k, *v; size_t kl, vl, i = from;
  lua_createtable(L, 0, 8);
  while (hdr_next(h, &i, to, &k, &kl, &v, &vl)) {
    lua_pushlstring(L, k, kl);
    aio_http_join_header(L, v, vl);
  }
}

/* The names of the request fields C sets, in the order of the server's key table (keys_ref):
** pushed from there, a key costs a rawgeti where lua_setfield looked the name up each time. */
enum { RK_METHOD = 1, RK_CONN, RK_TARGET, RK_PATH, RK_RAW_QUERY, RK_VERSION, RK_BODY, RK_HEADERS, RK_TRAILERS };
static const char *const request_keys[] = {
  "method", "conn", "target", "path", "raw_query", "version", "body", "_headers", "trailers" };

/* Pushes the request table, with the facade's metatable: method, conn, target, path (decoded),
** raw_query, version, body, _headers (the headers as they came, "name\0value\0"...: the facade
** makes req.headers of them on first use, which most handlers never make), and trailers when a
** chunked body had some. */
static void push_request(lua_State *L, srv *s, conn *c, llhttp_t *p) {
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

/* A request is complete: make its slot, build the req table and spawn the handler task. */
static int on_message_complete(llhttp_t *p) {
  conn *c = p->data;
  srv *s = c->s;
  lua_State *L = s->loop->L;
  if (c->closing) return -1;                  /* a write failed meanwhile (a 100 Continue) */
  int keep = llhttp_should_keep_alive(p);
  slot *sl = slot_new(c);
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
  push_request(L, s, c, p);
  sl->task = aio_spawn(L, 3);
  sl->task_ref = aio_ref(L, -1);
  lua_settop(L, top);
  if (sl->close) return HPE_PAUSED;           /* no more requests on this connection */
  return 0;
}

/* server_c.headers(raw) -> the table of a request's "name\0value\0"... headers (req.headers). */
static int l_headers(lua_State *L) {
  size_t n;
  const char *h = luaL_checklstring(L, 1, &n);
  push_headers(L, h, 0, n);
  return 1;
}

/* Sets up the llhttp callbacks (once) and ignores SIGPIPE: a peer's reset must be a write
** error, not death. */
static void parser_init(void) {
  if (settings_ready) return;
  llhttp_settings_init(&settings);
  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_method = on_method;
  settings.on_version = on_version;
  settings.on_header_field_complete = on_header_field_complete;
  settings.on_header_value_complete = on_header_value_complete;
  settings.on_chunk_header = on_chunk_header;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
  signal(SIGPIPE, SIG_IGN);
  settings_ready = 1;
}

/* ---- reading ---------------------------------------------------------------------------- */

/* Reads land in the server's one buffer: on_read consumes them before returning. */
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
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
  slot *p = slot_new(c);
  if (!p) { conn_close(c); return; }
  p->close = 1;
  p->drain = 1;
  const char *msg = reason(status);
  char out[512];
  int n = snprintf(out, sizeof out, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n", status, msg, http_date(),
                   strlen(msg) + 1, msg);
  slot_emit(c, p, out, (size_t)n);
  p->finished = 1;
  conn_flush_slots(c);
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
  else if (!c->shutting) conn_finish(c, 0);   /* (a shutdown closes in on_shutdown) */
}

/* Bytes from a client: feed llhttp; a parse error or a limit answers and ends the connection. */
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  conn *c = st->data;
  if (nread < 0) {                            /* EOF with work in flight: see conn_half_closed */
    if (nread == UV_EOF && (c->shead || c->writes > 0)) conn_half_closed(c);
    else conn_close(c);                       /* an error (reset), or nothing owed: close now */
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
static void on_connection(uv_stream_t *ls, int status) {
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
  c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0;
}

/* Sweep timer: closes connections past their deadline (slowloris, idle keep-alive), and those
** whose queued output has not moved for idle_timeout (a peer that stopped reading). The
** latter counts sweeps, not clock time: libuv runs timers before I/O, so after the loop was
** held up (handlers building large answers) a clock would blame the peer for our delay. */
static void on_sweep(uv_timer_t *t) {
  srv *s = t->data;
  uint64_t now = uv_now(&s->loop->uv);
  for (conn *c = s->conns, *n; c; c = n) {
    n = c->next;
    if (c->closing) continue;
    if (c->writes > 0) {
      c->stalled = c->progressed ? 0 : c->stalled + 1;
      c->progressed = 0;
      if ((uint64_t)c->stalled * s->tick >= s->idle_timeout) conn_close(c);
    } else if (c->deadline && now >= c->deadline) conn_close(c);
  }
}

/* ---- server life cycle -------------------------------------------------------------- */

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

/* __gc of the server's Lua object: discards a server l_listen did not finish (a running one
** keeps its object alive, and a closed one is gone already). */
static int l_srv_gc(lua_State *L) {
  srv_box *b = lua_touserdata(L, 1);
  if (b->s && b->s->building) srv_discard(L, b->s);
  return 0;
}

/* When closing and every connection is gone: resolve the close future, drop refs. */
static void srv_maybe_done(srv *s) {
  if (!s->closing || s->nconns > 0 || s->listener) return;
  lua_State *L = s->loop->L;
  if (s->sweep) { uv_close((uv_handle_t *)s->sweep, free_cb); s->sweep = NULL; }
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
  srv_maybe_done(s);
}

/* Starts the graceful close: stop accepting; idle connections end now, busy ones after. */
static void srv_begin_close(srv *s) {
  if (s->closing) return;
  s->closing = 1;
  if (s->listener) uv_close((uv_handle_t *)s->listener, on_listener_closed);
  for (conn *c = s->conns, *n; c; c = n) {
    n = c->next;
    c->close_when_idle = 1;
    if (!c->shead && !c->in_msg) conn_finish(c, 0);
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
  lua_createtable(L, RK_TRAILERS, 0);
  for (int i = RK_METHOD; i <= RK_TRAILERS; i++) { lua_pushstring(L, request_keys[i - 1]); lua_rawseti(L, -2, i); }
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
      (rc = uv_listen((uv_stream_t *)listener, backlog, on_connection)) != 0) return rc;
  struct sockaddr_storage bound; int blen = sizeof bound;
  uv_tcp_getsockname(listener, (struct sockaddr *)&bound, &blen);
  s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
  uint64_t tick = (s->header_timeout < s->idle_timeout ? s->header_timeout : s->idle_timeout) / 4;
  if (tick < 10) tick = 10;
  if (tick > 1000) tick = 1000;
  s->tick = tick;
  uv_timer_start(sweep, on_sweep, tick, tick);
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
  parser_init();
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
  srv_maybe_done(s);
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
  *sp = slot_find(b->c, seq);
  return *sp ? b->c : NULL;
}

/* The final status at idx (an integer 200..599; raises otherwise). */
static int check_status(lua_State *L, int idx) {
  lua_Integer n = luaL_checkinteger(L, idx);
  luaL_argcheck(L, n >= 200 && n <= 599, idx, "status must be from 200 to 599");
  return (int)n;
}

/* Bytes a body or chunk may have to be copied after its head or chunk size: one write, not two. */
#define SMALL_BODY 16384

/* The value at idx as a string, through tostring (__tostring included; nil is "nil"). */
static const char *to_text(lua_State *L, int idx, size_t *n) {
  return lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, n) : luaL_tolstring(L, idx, n);
}

/* Sends what scratch holds (a head, or nothing), then d[0..n) as body bytes of slot p: framed as
** a chunk when p is chunked, dropped for a HEAD answer; small data joins scratch in one write. */
static void emit_body(conn *c, slot *p, const char *d, size_t n) {
  if (p->head_only) n = 0;
  int small = n <= SMALL_BODY;
  if (n > 0 && p->chunked) { add_uint(&scratch, n, 16); SB_LIT(&scratch, "\r\n"); }
  if (small && n > 0) {
    aio_buf_try_add(&scratch, d, n);
    if (p->chunked) SB_LIT(&scratch, "\r\n");
  }
  if (scratch.len) slot_emit(c, p, scratch.data, scratch.len);
  if (!small) {
    slot_emit(c, p, d, n);
    if (p->chunked) slot_emit(c, p, "\r\n", 2);
  }
}

/* Sends the head of slot p's answer (status, headers from the table at hidx) with the first body
** bytes d[0..n), n being the Content-Length unless streamed. */
static void slot_answer(lua_State *L, conn *c, slot *p, int status, int hidx, const char *d, size_t n,
                        int streamed) {
  scratch.len = 0;
  format_head(L, &scratch, c, p, status, hidx, streamed ? -1 : (long long)n);
  p->started = 1;
  emit_body(c, p, d, n);
}

/* Sends d[0..n) as body bytes of slot p, whose head is out. */
static void slot_write(conn *c, slot *p, const char *d, size_t n) {
  scratch.len = 0;
  emit_body(c, p, d, n);
}

/* Pushes the future a writer of slot p must await before writing more and returns 1, or
** returns 0: the slot's output is over the high-water mark (the head slot's in libuv's write
** queue, a later slot's in its buffer). */
static int push_drain(lua_State *L, conn *c, slot *p) {
  size_t n = p == c->shead ? uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) : p->out.len;
  if (c->closing || n <= c->s->high_water) return 0;
  if (c->drained && c->drained->state != AIO_PENDING) conn_wake_writers(c);  /* its waiter was cancelled */
  if (c->drained) aio_pushref(L, c->drained_ref);
  else {
    c->drained = aio_future_new(L);
    c->drained_ref = aio_ref(L, -1);
  }
  return 1;
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
  slot_answer(L, c, p, status, 4, d, n, streamed);
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
    conn_flush_slots(c);
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
  return c ? push_drain(L, c, p) : 0;
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
  slot_write(c, p, d, n);
  return push_drain(L, c, p);
}

/* conn:finish(seq) → true: ends a streamed body. */
static int l_finish(lua_State *L) {
  slot *p;
  conn *c = check_conn(L, &p);
  if (!c || !p->started || p->finished) { lua_pushboolean(L, 0); return 1; }
  if (p->chunked && !p->head_only) slot_emit(c, p, "0\r\n\r\n", 5);
  p->finished = 1;
  conn_flush_slots(c);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:drain(seq) → a future to await before writing more, or nothing (see push_drain). */
static int l_drain(lua_State *L) {
  slot *p;
  conn *c = check_conn(L, &p);
  return c ? push_drain(L, c, p) : 0;
}

/* conn:abort() — drops the connection (a handler failed after it had started streaming). */
static int l_abort(lua_State *L) {
  conn_box *b = to_conn_box(L);
  if (b->c) conn_close(b->c);
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
  static const luaL_Reg funcs[] = {{"listen", l_listen}, {"unescape", l_unescape},
                                   {"decode_query", l_decode_query}, {"check_header", l_check_header},
                                   {"headers", l_headers},
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

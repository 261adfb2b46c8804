/*
** http_server_write.c — the HTTP server's answers: one slot per request in request order (a
** later slot buffers until the earlier ones are out), the response head (status line, headers,
** framing), sending (try_write, then queued copies) and backpressure (conn_pace).
*/
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "http_server.h"

static void conn_pace(conn *c);

typedef struct { uv_write_t req; char data[]; } wreq;

static _Thread_local aio_buf scratch;         /* response heads are formatted here (one thread, one loop) */
static _Thread_local int servers_open;        /* this thread's servers: the last one frees scratch */

/* Counts this thread's servers; the last one frees scratch (http_server.h). */
void aio_hs_count_server(int delta) {
  servers_open += delta;
  if (servers_open == 0) aio_buf_free(&scratch);
}

/* Appends a string literal to an aio_buf (0 when out of memory). */
#define SB_LIT(b, s) aio_buf_try_add((b), (s), sizeof(s) - 1)

/* Lets go of a slot's handler task (if any), cancelling it first when cancel is set. */
void aio_hs_slot_release(lua_State *L, slot *p, int cancel) {
  if (p->task_ref != LUA_NOREF && L) {
    if (cancel && !p->finished) aio_task_cancel(L, p->task, "http client disconnected");
    aio_unref(L, p->task_ref);
  }
  p->task_ref = LUA_NOREF;
  p->task = NULL;
}

/* Frees a slot, releasing its task as slot_release does. */
static void slot_free(lua_State *L, slot *p, int cancel) {
  aio_hs_slot_release(L, p, cancel);
  aio_buf_free(&p->out);
  free(p);
}

/* Frees all of c's slots as slot_free does (L NULL: their tasks are not touched). */
void aio_hs_conn_drop_slots(lua_State *L, conn *c, int cancel) {
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
  if (status < 0 || (c->writes == 0 && c->close_after)) { aio_hs_conn_close(c); return; }
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
    else if (w != UV_EAGAIN && w != UV_ENOSYS) { aio_hs_conn_close(c); return; }
  }
  while (n > 0) {
    size_t k = n < WRITE_PIECE ? n : WRITE_PIECE;
    wreq *r = malloc(sizeof *r + k);
    if (!r) { aio_hs_conn_close(c); return; }
    memcpy(r->data, p, k);
    uv_buf_t b = uv_buf_init(r->data, (unsigned)k);
    if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
      free(r);
      aio_hs_conn_close(c);
      return;
    }
    if (c->writes++ == 0) c->stalled = 0;
    p += k; n -= k;
  }
}

/* Sends the interim answer a client that sent "Expect: 100-continue" waits for. */
void aio_hs_conn_send_continue(conn *c) {
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
void aio_hs_conn_wake_writers(conn *c) {
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
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= c->s->low_water)
    aio_hs_conn_wake_writers(c);
  if (c->reading && q > c->s->high_water) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  } else if (!c->reading && q <= c->s->low_water && uv_is_readable((uv_stream_t *)&c->tcp)) {
    c->reading = uv_read_start((uv_stream_t *)&c->tcp, aio_hs_on_alloc, aio_hs_on_read) == 0;
  }
}

/* ---- response slots --------------------------------------------------------------------- */

/* The slot of request seq on c, or NULL. */
slot *aio_hs_slot_find(conn *c, uint32_t seq) {
  for (slot *p = c->shead; p; p = p->next) if (p->seq == seq) return p;
  return NULL;
}

/* Emits bytes for slot p: to the socket if p is the head, else into p's buffer. */
void aio_hs_slot_emit(conn *c, slot *p, const char *d, size_t n) {
  if (p == c->shead) conn_send(c, d, n);
  else if (aio_buf_try_add(&p->out, d, n)) c->buffered += n;
  else aio_hs_conn_close(c);
  conn_pace(c);
}

/* Pops finished head slots, sending what later slots had buffered; closes after a close slot.
** Bytes that left the buffers may let reading resume (conn_pace): try_write may have taken them
** all, and then no write callback comes to look. */
void aio_hs_conn_flush_slots(conn *c) {
  int moved = 0;
  while (!c->closing && c->shead && c->shead->finished) {
    slot *p = c->shead;
    c->shead = p->next;
    if (!c->shead) c->stail = NULL;
    c->nslots--;
    int close = p->close, drain = p->drain;
    slot_free(c->s->loop->L, p, 0);
    if (close) {
      c->input_dead = 1;
      aio_hs_conn_drop_slots(c->s->loop->L, c, 1);
      aio_hs_conn_finish(c, drain);
      return;
    }
    if (c->shead && c->shead->out.len) {
      c->buffered -= c->shead->out.len;
      conn_send(c, c->shead->out.data, c->shead->out.len);
      aio_buf_free(&c->shead->out);
      moved = 1;
    }
    aio_hs_conn_wake_writers(c);             /* a new head: its writer waits on other bytes */
  }
  if (moved) conn_pace(c);
  if (c->shead || c->closing) return;
  if (c->want_continue && c->in_msg && !c->input_dead) {   /* the request's turn has come */
    c->want_continue = 0;
    aio_hs_conn_send_continue(c);
  }
  aio_hs_conn_idle(c);
}

/* Adds a slot for the next response; its flags come from the request just parsed. */
slot *aio_hs_slot_new(conn *c) {
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
const char *aio_hs_reason(int status) {
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
const char *aio_hs_http_date(void) {
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
const char *aio_hs_check_header(lua_State *L, int kidx, int vidx, size_t *kl, size_t *vl) {
  if (lua_type(L, kidx) != LUA_TSTRING) luaL_error(L, "http: header name must be a string, got %s", luaL_typename(L, kidx));
  const char *k = lua_tolstring(L, kidx, kl);
  if (!aio_http_is_token(k, *kl)) header_error(L, "invalid header name", k, *kl);
  const char *v = luaL_tolstring(L, vidx, vl);
  if (aio_http_has_crlf_nul(v, *vl, NULL)) header_error(L, "CR, LF or NUL in the value of header", k, *kl);
  return v;
}

/* server_c.check_header(name, value) -> value as a string; raises as check_header does. */
int aio_hs_l_check_header(lua_State *L) {
  size_t kl, vl;
  luaL_checkany(L, 2);
  aio_hs_check_header(L, 1, 2, &kl, &vl);
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
  const char *phrase = aio_hs_reason(status);
  aio_buf_try_add(b, phrase, strlen(phrase));
  SB_LIT(b, "\r\n");
  if (hidx && lua_type(L, hidx) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, hidx)) {
      size_t kl, vl;
      const char *v = aio_hs_check_header(L, -2, -1, &kl, &vl);
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
  if (!has_date) {
    const char *d = aio_hs_http_date();
    SB_LIT(b, "Date: "); aio_buf_try_add(b, d, strlen(d)); SB_LIT(b, "\r\n");
  }
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

/* Bytes a body or chunk may have to be copied after its head or chunk size: one write, not two. */
#define SMALL_BODY 16384

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
  if (scratch.len) aio_hs_slot_emit(c, p, scratch.data, scratch.len);
  if (!small) {
    aio_hs_slot_emit(c, p, d, n);
    if (p->chunked) aio_hs_slot_emit(c, p, "\r\n", 2);
  }
}

/* Sends the head of slot p's answer (status, headers from the table at hidx) with the first body
** bytes d[0..n), n being the Content-Length unless streamed. */
void aio_hs_slot_answer(lua_State *L, conn *c, slot *p, int status, int hidx, const char *d,
                        size_t n, int streamed) {
  scratch.len = 0;
  format_head(L, &scratch, c, p, status, hidx, streamed ? -1 : (long long)n);
  p->started = 1;
  emit_body(c, p, d, n);
}

/* Sends d[0..n) as body bytes of slot p, whose head is out. */
void aio_hs_slot_write(conn *c, slot *p, const char *d, size_t n) {
  scratch.len = 0;
  emit_body(c, p, d, n);
}

/* Pushes the future a writer of slot p must await before writing more and returns 1, or
** returns 0: the slot's output is over the high-water mark (the head slot's in libuv's write
** queue, a later slot's in its buffer). */
int aio_hs_push_drain(lua_State *L, conn *c, slot *p) {
  size_t n = p == c->shead ? uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) : p->out.len;
  if (c->closing || n <= c->s->high_water) return 0;
  if (c->drained && c->drained->state != AIO_PENDING)   /* its waiter was cancelled */
    aio_hs_conn_wake_writers(c);
  if (c->drained) aio_pushref(L, c->drained_ref);
  else {
    c->drained = aio_future_new(L);
    c->drained_ref = aio_ref(L, -1);
  }
  return 1;
}

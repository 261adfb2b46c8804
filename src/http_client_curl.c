/*
** http_client_curl.c — libcurl's multi interface driven by the aio loop: the socket and timer
** callbacks, the easy handles (configured once, reused), starting a transfer, and collecting
** finished ones into responses or error objects.
**
**
** One uv_poll_t per socket curl tells us about, one uv_timer_t per client. Rules learnt the
** hard way (each one is a bug we measured or hit, or a cost we measured):
**   1. curl_multi_socket_action is never called from inside a curl callback: curl's timer
**      callback only arms our uv timer (a 0 ms timeout fires on the next loop iteration).
**   2. At most max_connections easy handles are inside curl, and at most max_per_host per host;
**      the rest wait in OUR FIFO. curl's own pending queue re-scans every pending handle on
**      every action (5-10x CPU), and time spent in it counts against the timeout (rule 3).
**   3. A request's timeout starts when its handle enters curl, so time spent queued never
**      counts against it (tornado's HTTP 599 trap).
**   4. A connection's poll handle lives as long as its socket (curl opens and closes it through
**      our callbacks), not as long as one transfer: curl says CURL_POLL_REMOVE after every
**      request on a kept-alive connection, and a fresh uv_poll_t per request cost an ioctl and
**      four epoll_ctl calls. uv_poll_start is only called when the events change (every call
**      is an EPOLL_CTL_DEL + ADD). A handle is stopped synchronously before its socket closes
**      and freed in its close callback.
**   5. A CURLMsg is copied before its handle is removed (the docs' WARNING).
**   6. An idempotent request that fails on a kept-alive connection the server just closed,
**      before any byte of a response, is retried once on a new connection. curl (7.88) retries
**      some of those itself, for any method: on_prereq sees every send attempt and refuses a
**      second one of a request that is not idempotent, a third of any.
**   7. A request that gets a slot goes out from the call that made it (kick_now), and curl is
**      told at once about sockets it just opened (drive_fresh): waiting for the loop batched
**      a whole turn's requests into one burst that came back as a burst.
**   8. curl closes a socket whose connect is still pending without our close callback; its
**      context goes when curl reports it removed, or when curl reuses the descriptor number.
*/
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "http_client.h"

static void drive(http_client *c, curl_socket_t fd, int flags);
static void on_poll(uv_poll_t *h, int status, int events);

/* ---- curl callbacks (they only record; they never re-enter curl) -------------------- */

/* CURLOPT_WRITEFUNCTION: accumulates the body. */
static size_t on_write(char *ptr, size_t size, size_t n, void *ud) {
  http_req *r = ud;
  return aio_buf_try_add(&r->rbody, ptr, size * n) ? size * n : 0;
}

/* CURLOPT_HEADERFUNCTION: keeps the raw header lines of the last response only. */
static size_t on_header(char *ptr, size_t size, size_t n, void *ud) {
  http_req *r = ud;
  size_t len = size * n;
  if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) r->rhead.len = 0; /* a new response (redirect) */
  return aio_buf_try_add(&r->rhead, ptr, len) ? len : 0;
}

/* CURLOPT_PREREQFUNCTION, called before each send attempt: counts the attempts of the current
** hop, so that curl's own retry of a request whose reused connection died ("Connection died,
** retrying a fresh connect", any method) never sends a request that is not idempotent twice,
** nor any request three times (our own retry included). */
static int on_prereq(void *ud, char *ip, char *local_ip, int port, int local_port) {
  http_req *r = ud;
  (void)ip; (void)local_ip; (void)port; (void)local_port;
  if (r->follow) {                         /* a redirect starts a new hop */
    long hop = 0;
    curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_COUNT, &hop);
    if (hop != r->hop) { r->hop = hop; r->sends = 0; }
  }
  if (++r->sends <= (r->idempotent ? 2 : 1)) return CURL_PREREQFUNC_OK;
  r->resend_refused = 1;
  return CURL_PREREQFUNC_ABORT;
}

/* Close callback of a malloc'd handle: its memory goes only now (libuv's rule). */
static void free_handle_cb(uv_handle_t *h) { free(h); }

/* Polls s for events (0 stops it); a no-op when they do not change. */
static void sock_poll(sock_ctx *s, int events, uv_poll_cb cb) {
  if (events == s->events) return;
  if (events) uv_poll_start(&s->poll, events, cb);
  else uv_poll_stop(&s->poll);
  s->events = events;
}

/* Sets the events curl wants on s: polled at once, or, while s is fresh, when drive_fresh is
** done with it (every uv_poll_start begins with an EPOLL_CTL_DEL, which fails on a socket not
** yet polled: curl asks for writable after its connect and readable after its send, both
** inside the calls that drive_fresh makes, so only the last of them needs polling). */
static void sock_want(sock_ctx *s, int events) {
  if (s->fresh) s->want = events;
  else sock_poll(s, events, on_poll);
}

/* Makes the context and (unreferenced) poll handle of socket fd; NULL when out of memory. */
static sock_ctx *sock_new(http_client *c, curl_socket_t fd) {
  sock_ctx *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  if (uv_poll_init_socket(&c->loop->uv, &s->poll, fd) != 0) { free(s); return NULL; }
  uv_unref((uv_handle_t *)&s->poll);
  s->fd = fd; s->c = c; s->poll.data = s;
  return s;
}

/* Stops s synchronously (its socket may close right after: uv_close stops a poll handle at
** once, so no uv_poll_stop first, whose EPOLL_CTL_DEL made uv_close's own fail with ENOENT, a
** wasted syscall per connection) and frees it in the close callback. */
static void sock_free(sock_ctx *s) {
  uv_close((uv_handle_t *)&s->poll, free_handle_cb);
}

/* The owned context of fd, or NULL. */
static sock_ctx *sock_owned(http_client *c, curl_socket_t fd) {
  return fd >= 0 && fd < c->nsocks ? c->socks[fd] : NULL;
}

/* Drops the owned context of fd (its socket is closed already, or about to be). */
static void sock_forget(http_client *c, curl_socket_t fd) {
  sock_ctx *s = c->socks[fd];
  c->socks[fd] = NULL;
  sock_free(s);
}

/* Poll callback: tells curl which socket is ready, then collects finished transfers. */
static void on_poll(uv_poll_t *h, int status, int events) {
  sock_ctx *s = h->data;
  http_client *c = s->c;
  int flags = 0;
  if (s->idle) {             /* a kept-alive connection spoke (the peer closed it): curl will */
    sock_poll(s, 0, on_poll);  /* find out when it next tries it; stop the level-triggered poll */
    return;
  }
  if (status < 0) flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  drive(c, s->fd, flags);
}

/* Timer callback: curl's timeout expired (or a deferred kick). */
static void on_timer(uv_timer_t *t) {
  drive(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* Remembers that s was just opened (its connect pending), for drive_fresh. Only a shortcut:
** when memory is short the socket simply waits for the loop to report it writable. */
static void fresh_note(http_client *c, sock_ctx *s) {
  if (c->nfresh == c->cap_fresh) {
    int n = c->cap_fresh ? c->cap_fresh * 2 : 16;
    curl_socket_t *grown = realloc(c->fresh, (size_t)n * sizeof *grown);
    if (!grown) return;
    c->fresh = grown;
    c->cap_fresh = n;
  }
  s->fresh = 1;
  c->fresh[c->nfresh++] = s->fd;
}

/* CURLOPT_OPENSOCKETFUNCTION: makes a connection's socket and its poll handle. */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
  http_client *c = ud;
  (void)purpose;
  curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  if (fd == CURL_SOCKET_BAD) return fd;
  if (fd >= c->nsocks) {
    int n = c->nsocks ? c->nsocks : 64;
    while (n <= fd) n *= 2;
    sock_ctx **grown = realloc(c->socks, (size_t)n * sizeof *grown);
    if (!grown) { close(fd); return CURL_SOCKET_BAD; }
    memset(grown + c->nsocks, 0, (size_t)(n - c->nsocks) * sizeof *grown);
    c->socks = grown;
    c->nsocks = n;
  }
  if (c->socks[fd]) sock_forget(c, fd);     /* curl closed that descriptor without telling us */
  sock_ctx *s = sock_new(c, fd);
  if (!s) { close(fd); return CURL_SOCKET_BAD; }
  s->owned = 1;
  c->socks[fd] = s;
  fresh_note(c, s);
  return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the connection is gone; so are its poll handle and socket. */
static int on_close_socket(void *ud, curl_socket_t fd) {
  http_client *c = ud;
  sock_ctx *s = sock_owned(c, fd);
  if (s) sock_forget(c, fd);
  return close(fd);
}

/* CURLMOPT_SOCKETFUNCTION: starts, updates or removes the poll of a socket. Sockets curl did
** not open through on_open_socket (a resolver's) get a context per use, as curl reports them. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *cbp, void *sockp) {
  http_client *c = cbp;
  sock_ctx *s = sockp ? sockp : sock_owned(c, fd);
  (void)e;
  if (what == CURL_POLL_REMOVE) {
    if (!s) return 0;
    if (s->owned && !(s->events & UV_READABLE) && fcntl(fd, F_GETFD) == -1) {
      /* A transfer removed while its connection was still being made: curl (7.88) closes
      ** such a socket itself, without our close callback, then says REMOVE. Polling the
      ** closed descriptor would make libuv abort on its next epoll_ctl. (A connection kept
      ** alive was waiting for a response, so it is polled for reading: no syscall then.) */
      sock_forget(c, fd);
    } else if (s->owned) {   /* kept alive: watch for the peer closing it, nothing else */
      s->idle = 1;
      sock_want(s, (s->fresh ? s->want : s->events) ? UV_READABLE : 0);
    } else {
      sock_free(s);
      curl_multi_assign(c->multi, fd, NULL);
    }
    return 0;
  }
  if (!s) {
    if (!(s = sock_new(c, fd))) return -1;
    curl_multi_assign(c->multi, fd, s);
  }
  s->idle = 0;
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  sock_want(s, ev);
  return 0;
}

/* CURLMOPT_TIMERFUNCTION: arms our single timer; a 0 ms timeout is the deferred kick. */
static int on_curl_timer(CURLM *m, long timeout_ms, void *ud) {
  http_client *c = ud;
  (void)m;
  if (timeout_ms < 0) uv_timer_stop(c->timer);
  else uv_timer_start(c->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- easy handles and the multi handle -------------------------------------------------- */

/* Sets the options every request of client c shares on easy handle e, its timeouts included
** (once per handle: with curl_easy_reset and a full set of options per request, setting options
** cost ~10,000 instructions a request). */
static void easy_configure(http_client *c, CURL *e) {
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c);
  curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");       /* never file://, ftp:// ... */
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  if (c->timeout_ms > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
  if (c->connect_timeout_ms > 0) curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
  if (c->no_proxy_env) {           /* what curl would find: no proxy (see proxy_env_unset) */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOPROXY, "");
  }
}

/* Is no proxy variable curl (7.88) reads for an http or https URL set (or are they all empty)?
** Then the client tells curl "no proxy" itself (CURLOPT_PROXY and CURLOPT_NOPROXY ""), as curl
** would conclude, and curl skips its five getenv calls and their copies on every request (~1,500
** instructions). curl never reads HTTP_PROXY in capitals, and no_proxy matters only with a proxy.
** Read when the client is made: aioshell offers no way to change its environment after start. */
static int proxy_env_unset(void) {
  static const char *const names[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                      "ALL_PROXY", NULL};
  for (int i = 0; names[i]; i++) {
    const char *v = getenv(names[i]);
    if (v && *v) return 0;
  }
  return 1;
}

/* Sets the options GET request r set on its easy handle beyond the client's back to the
** client's (req_start sets no others for a GET). MAXREDIRS stays: curl reads it only when
** following, and every request that follows sets it. */
static void easy_unset(http_client *c, http_req *r) {
  CURL *e = r->easy;
  if (r->curlu) curl_easy_setopt(e, CURLOPT_CURLU, NULL);    /* it would outrank a URL */
  if (r->headers) curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
  if (r->follow) curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  if (r->timeout_ms != c->timeout_ms) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
  if (r->connect_timeout_ms != c->connect_timeout_ms)
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
}

/* Makes client c's curl side: what it tells curl of proxies, the multi handle, the spare handles, the timer and the liveness
** handle. Returns 0 when out of memory, with nothing of it left allocated. */
int aio_hc_driver_open(http_client *c) {
  c->no_proxy_env = proxy_env_unset();
  c->cap_spare = c->max_connections;
  c->spare = calloc((size_t)c->cap_spare, sizeof(CURL *));
  c->timer = malloc(sizeof *c->timer);
  c->alive = malloc(sizeof *c->alive);
  c->multi = curl_multi_init();
  if (!c->spare || !c->timer || !c->alive || !c->multi) {
    free(c->spare); free(c->timer); free(c->alive);
    if (c->multi) curl_multi_cleanup(c->multi);
    return 0;
  }
  uv_timer_init(&c->loop->uv, c->timer);
  c->timer->data = c;
  uv_unref((uv_handle_t *)c->timer);
  uv_prepare_init(&c->loop->uv, c->alive);
  c->alive->data = c;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->max_connections);
  curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)c->max_connections);
  return 1;                                  /* max_per_host is ours (pump), not curl's */
}

/* Frees client c's curl side (its requests are gone): the spare handles, the multi handle
** (which closes its sockets through on_close_socket), the timer and the liveness handle. */
void aio_hc_driver_close(http_client *c) {
  for (int i = 0; i < c->nspare; i++) curl_easy_cleanup(c->spare[i]);
  free(c->spare);
  curl_multi_cleanup(c->multi);
  free(c->socks);
  free(c->fresh);
  if (!uv_is_closing((uv_handle_t *)c->timer)) uv_close((uv_handle_t *)c->timer, free_handle_cb);
  if (!uv_is_closing((uv_handle_t *)c->alive)) uv_close((uv_handle_t *)c->alive, free_handle_cb);
}

/* Gives r's easy handle back to the spares (or frees it), carrying the client's options only:
** a GET's own are set back (easy_unset); after any other method, whose options reach further
** (NOBODY, CUSTOMREQUEST, POSTFIELDS), the handle is reset and configured again (~8,000
** instructions). */
void aio_hc_easy_release(http_client *c, http_req *r) {
  if (!r->easy) return;
  if (c->nspare < c->cap_spare) {
    if (r->verb == VERB_GET) easy_unset(c, r);
    else { curl_easy_reset(r->easy); easy_configure(c, r->easy); }
    c->spare[c->nspare++] = r->easy;
  } else {
    curl_easy_cleanup(r->easy);
  }
  r->easy = NULL;
}

/* Configures r's easy handle and hands it to curl (its timeout starts now). */
int aio_hc_req_start(http_client *c, http_req *r) {
  CURL *e;
  if (c->nspare > 0) e = c->spare[--c->nspare];
  else if ((e = curl_easy_init()) != NULL) easy_configure(c, e);
  else return 0;
  r->easy = e;
  if (r->curlu) {
    /* curl 7.88 takes the URL from the CURLU handle only when it has no URL string: a reused
    ** handle still holds the last one, which then became res.url (the request itself went
    ** to the right place). */
    curl_easy_setopt(e, CURLOPT_URL, NULL);
    curl_easy_setopt(e, CURLOPT_CURLU, r->curlu);
  } else {
    curl_easy_setopt(e, CURLOPT_URL, r->url);
  }
  curl_easy_setopt(e, CURLOPT_PRIVATE, r);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_PREREQDATA, r);
  if (r->timeout_ms != c->timeout_ms) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms);
  if (r->connect_timeout_ms != c->connect_timeout_ms)  /* 0: curl's default */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, r->connect_timeout_ms);
  if (r->follow) {
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, r->max_redirs);
  }
  if (r->headers) curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  if (r->verb == VERB_HEAD) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  else if (r->verb == VERB_OTHER) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
  if (r->has_body) {           /* for a POST that alone makes the method (see VERB_POST) */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
  }
  if (curl_multi_add_handle(c->multi, e) != CURLM_OK) return 0;
  r->state = REQ_ACTIVE;
  r->t_started = aio_now_ns(c->loop);
  r->prev = NULL; r->next = c->active;
  if (c->active) c->active->prev = r;
  c->active = r;
  c->nactive++;
  if (r->host) r->host->active++;
  return 1;
}

/* ---- finished transfers ----------------------------------------------------------------- */

/* Maps the curl result of request r (on easy handle e) to one of our error kinds (push_failure
** has the last word). */
static const char *error_kind(http_req *r, CURL *e, CURLcode rc) {
  char *eff = NULL;
  switch (rc) {
    case CURLE_COULDNT_CONNECT: return "refused";
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY: return "dns";
    case CURLE_OPERATION_TIMEDOUT: return "timeout";
    case CURLE_RECV_ERROR: case CURLE_SEND_ERROR: case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE: return "reset";
    case CURLE_TOO_MANY_REDIRECTS: return "redirects";
    case CURLE_URL_MALFORMAT: return "url";
    case CURLE_UNSUPPORTED_PROTOCOL:         /* the URL's (or a redirect's) scheme, or the reply */
      curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &eff);
      return aio_hc_url_is_http(eff ? eff : r->url) ? "protocol" : "url";
    case CURLE_WEIRD_SERVER_REPLY: case CURLE_BAD_CONTENT_ENCODING: case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: case CURLE_HTTP3: return "protocol";
    default: return "curl";
  }
}

/* Did r fail to connect after it had gone out in the same hop? That is curl's own retry after
** the connection died before a response: curl makes the new connection before on_prereq sees
** the attempt, and when that connect fails, the request still went out once. */
static int died_then_connect_failed(http_req *r, CURL *e, CURLcode rc) {
  long hop = 0;
  if (r->sends == 0 || (rc != CURLE_COULDNT_CONNECT && rc != CURLE_COULDNT_RESOLVE_HOST)) return 0;
  if (r->follow) curl_easy_getinfo(e, CURLINFO_REDIRECT_COUNT, &hop);
  return hop == r->hop;
}

/* Pushes the error of request r, failed with rc on easy handle e. A request that went out and
** got no reply is kind "reset" however its last attempt ended (on_prereq refused to send it
** again, or the new connection failed): the caller must hear that it may have reached the
** server, never "refused", which says it did not. */
static void push_failure(lua_State *L, http_req *r, CURL *e, CURLcode rc) {
  const char *kind = error_kind(r, e, rc), *msg = curl_easy_strerror(rc);
  if (r->resend_refused) {
    kind = "reset";
    msg = r->idempotent ? "connection died before a response, twice"
                        : "connection died before a response (not sent again: not idempotent)";
  } else if (died_then_connect_failed(r, e, rc)) {
    kind = "reset";
    msg = lua_pushfstring(L, "connection died before a response, then: %s", msg);
  }
  aio_hc_push_error(L, kind, r->url, msg, (int)rc);
}

/* Pushes the header table of the raw header block: lower-case names (found in any case),
** repeats joined by ", ". Sized by its line count, so that a response's few headers get a small
** table. */
static void push_headers(lua_State *L, const char *p, size_t len) {
  const char *end = p + len;
  int lines = 0;
  for (const char *q = p; q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++) lines++;
  lua_createtable(L, 0, lines > 2 ? lines - 2 : 0);      /* less the status line and the blank one */
  aio_http_set_headers_mt(L);
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *le = eol ? eol : end;
    const char *colon = memchr(p, ':', (size_t)(le - p));
    if (colon && !(le - p >= 5 && memcmp(p, "HTTP/", 5) == 0)) {
      const char *v = colon + 1, *ve = le;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      aio_http_push_lower(L, p, (size_t)(colon - p));
      aio_http_join_header(L, v, (size_t)(ve - v));
    }
    p = le + 1;
  }
}

/* Is r, which failed with rc on easy handle e, worth one more try on a new connection? Yes when
** it went out on a kept-alive connection the server closed meanwhile (its idle close crossing
** our reuse: the race every keep-alive client meets), nothing of a response came back, and its
** method is idempotent (RFC 9110, 9.2.2), as browsers, urllib3 and Go's client do. */
static int retry_on_new_connection(http_req *r, CURL *e, CURLcode rc) {
  long connects = -1;
  /* once only, and not after curl's own retry (sends) or from a redirect's target (hop) */
  if (!r->idempotent || r->retried || r->sends > 1 || r->hop > 0) return 0;
  if (r->rhead.len > 0 || r->rbody.len > 0) return 0;
  if (rc != CURLE_SEND_ERROR && rc != CURLE_RECV_ERROR && rc != CURLE_GOT_NOTHING) return 0;
  return curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK && connects == 0;
}

/* Completes every finished transfer: builds the response (or error) and settles its future.
** Returns how many queued requests took the freed slots. */
static int check_done(http_client *c) {
  lua_State *L = c->loop->L;
  CURLMsg *msg;
  int left, finished = 0;
  while ((msg = curl_multi_info_read(c->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *e = msg->easy_handle;             /* copy before removing: msg dies with the handle */
    CURLcode rc = msg->data.result;
    http_req *r = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
    curl_multi_remove_handle(c->multi, e);
    aio_hc_active_remove(c, r);
    r->state = REQ_DONE;
    finished++;
    if (rc != CURLE_OK && retry_on_new_connection(r, e, rc)) {
      aio_hc_easy_release(c, r);
      r->retried = 1;
      aio_hc_enqueue(c, r, 1);                     /* pump, below, starts it again */
      continue;
    }
    int top = lua_gettop(L);
    if (rc == CURLE_OK) {
      long status = 0; char *eff = NULL;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
      curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &eff);
      lua_createtable(L, 0, 8);
      lua_pushinteger(L, status); lua_setfield(L, -2, "status");
      lua_pushboolean(L, status > 0 && status < 400); lua_setfield(L, -2, "ok");
      lua_pushlstring(L, r->rbody.data ? r->rbody.data : "", r->rbody.len); lua_setfield(L, -2, "body");
      push_headers(L, r->rhead.data ? r->rhead.data : "", r->rhead.len); lua_setfield(L, -2, "headers");
      lua_pushstring(L, eff ? eff : r->url); lua_setfield(L, -2, "url");
      lua_pushnumber(L, (double)(aio_now_ns(c->loop) - r->t_started) / 1e9); lua_setfield(L, -2, "time");
      lua_pushnumber(L, (double)(r->t_started - r->t_queued) / 1e9); lua_setfield(L, -2, "queued");
      lua_pushnumber(L, (double)r->t_started / 1e9); lua_setfield(L, -2, "started"); /* aio.now()'s clock */
      aio_future_resolve(L, r->fut, 1);
    } else {
      push_failure(L, r, e, rc);
      aio_future_reject(L, r->fut);
    }
    lua_settop(L, top);
    aio_hc_req_free(L, r);
  }
  int started = 0;
  if (finished) {
    started = aio_hc_pump(c, c->qhead);
    aio_hc_client_maybe_unref(L, c);
  }
  return started;
}

/* ---- driving curl ----------------------------------------------------------------------- */

/* Makes the next loop turn collect transfers that finished in curl's last call when nothing
** collected them after it (running counts the transfers curl still runs): drive's bounded
** loop, or kick_now. Without it a chain of requests failing at once (a refused port, seen
** immediately by drive_fresh) stopped after the bound and hung, waiting for an event. */
static void collect_later(http_client *c, int running) {
  if (running < c->nactive) uv_timer_start(c->timer, on_timer, 0, 0);
}

/* Lets curl look at the sockets it opened during its last call at once, instead of after the
** loop reports them writable. curl (7.88) opens every new connection of a call, then waits for
** writability before it sends on any of them; a loopback connect is complete when connect()
** returns, so that wait only batched the requests: the crawler's first 100 left together 9 ms
** after the first connect and came back as one burst every 100 ms wave, each wave the last of
** the burst waiting ~4 ms behind the others. Where the connect is still pending, curl polls
** the socket, finds it not ready and keeps waiting as before. Only then is the socket polled,
** for what curl last asked (sock_want). *running is updated. */
static void drive_fresh(http_client *c, int *running) {
  while (c->nfresh > 0) {
    curl_socket_t fd = c->fresh[--c->nfresh];
    sock_ctx *s = sock_owned(c, fd);
    if (!s || !s->fresh) continue;
    curl_multi_socket_action(c->multi, fd, CURL_CSELECT_OUT, running);
    if (sock_owned(c, fd) != s) continue;  /* curl closed it (freed in its close callback) */
    s->fresh = 0;
    sock_poll(s, s->want, on_poll);
  }
}

/* Lets curl act on a socket (or its timers), then completes transfers. When completions let
** queued requests in, kicks curl again at once so they go out in this loop turn, right behind
** the response that freed their slot, instead of after every other event of the turn (with
** 100 responses per turn that wait was most of the crawler's per-wave overhead). This is not a
** curl callback, so calling curl_multi_socket_action here is allowed. */
static void drive(http_client *c, curl_socket_t fd, int flags) {
  int running;
  c->driving++;
  curl_multi_socket_action(c->multi, fd, flags, &running);
  drive_fresh(c, &running);
  for (int i = 0; i < 8 && check_done(c) > 0; i++) {
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    drive_fresh(c, &running);
  }
  c->driving--;
  collect_later(c, running);
}

/* Kicks curl from l_request, so a request that got a slot connects and goes out now, while the
** caller's code goes on (not one loop turn later with every other request of the turn).
** Transfers that finish here are settled by the loop (a zero timer), never from inside the
** caller's Lua code. Skipped inside drive(), whose own loop kicks curl. */
void aio_hc_kick_now(http_client *c) {
  int running;
  if (c->driving) return;
  c->driving++;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drive_fresh(c, &running);
  c->driving--;
  collect_later(c, running);
}

/*
** http_client.c — libcurl's multi interface driven by the aio loop (module aio.http_client_c).
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
** Requests complete by resolving/rejecting a future with the loop's main state; the Lua facade
** (lua/aio/http.lua) awaits it, and cancelling that future aborts the transfer.
*/
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>
#include <curl/curl.h>
#include "aio.h"
#include "buf.h"
#include "http_common.h"

#define CLIENT_MT "aio.http.client"
#define HTTP_ERROR_MT "aio.http.error"

typedef struct http_client http_client;
typedef struct http_req http_req;
typedef struct http_host http_host;

enum { REQ_QUEUED = 0, REQ_ACTIVE, REQ_DONE };

/* How a method is given to curl. GET and HEAD without a body are curl's own (HEAD: NOBODY). A
** POST is made by its body (POSTFIELDS) alone, never by CURLOPT_CUSTOMREQUEST: curl then turns
** it into a GET on a 301, 302 or 303, as browsers do, where a custom "POST" went out again with
** an empty body. Any other method, and GET with a body, is a CUSTOMREQUEST, which curl (7.88)
** keeps on every redirect, dropping the body on 301, 302 and 303 (docs/http.md). */
enum { VERB_GET = 0, VERB_HEAD, VERB_POST, VERB_OTHER };

struct http_req {
  http_req *prev, *next;           /* FIFO (queued) or active list */
  http_client *c;
  CURL *easy;
  aio_future *fut; int fut_ref;    /* the future the caller awaits (registry ref) */
  int state;
  char *method, *url, *body; size_t body_len;
  CURLU *curlu;                    /* the URL as url_prepare parsed it, handed to curl (else NULL:
                                      curl parses url itself) */
  struct curl_slist *headers;
  http_host *host;                 /* with max_per_host: the host it counts against, else NULL */
  long timeout_ms, connect_timeout_ms, max_redirs;   /* 0: no timeout */
  int follow, has_body;
  int verb;                        /* VERB_*: how its method is given to curl */
  int idempotent;                  /* its method may go out twice (RFC 9110, 9.2.2) */
  int retried;                     /* already retried once on a new connection */
  int sends;                       /* send attempts of the current hop, counted by on_prereq */
  long hop;                        /* redirects followed before that hop (follow only) */
  int resend_refused;              /* on_prereq refused a send: the request fails as "reset" */
  aio_buf rbody, rhead;              /* response body and raw header lines (of the last response) */
  uint64_t t_queued, t_started;    /* loop clock, ns */
};

struct http_host {                 /* a scheme://host:port with requests out (max_per_host) */
  http_host *next;                 /* chain of its bucket in the client's table */
  int active;                      /* its requests inside curl */
  int nreq;                        /* its requests queued or inside curl: freed at 0 */
  size_t len;
  char key[];                      /* "scheme://host:port", the host lower-cased */
};

typedef struct {                   /* one per socket curl watches */
  uv_poll_t poll;
  curl_socket_t fd;
  http_client *c;
  int events;                      /* UV_READABLE|UV_WRITABLE being polled, 0 when stopped */
  int owned;                       /* opened by on_open_socket: lives until on_close_socket */
  int idle;                        /* owned, and curl has no transfer on it (kept alive) */
  int fresh;                       /* opened during the current curl call: connect pending */
} sock_ctx;

struct http_client {
  aio_loop *loop;
  CURLM *multi;
  uv_timer_t *timer;               /* malloc'd: freed in its close callback */
  uv_prepare_t *alive;             /* active only while requests are out: keeps the loop alive.
                                      The timer and polls are unreferenced, so an idle client
                                      (curl's cache timers, kept-alive sockets) never holds the
                                      program open after its script is done. */
  http_req *qhead, *qtail;         /* requests waiting for a slot (FIFO) */
  http_req *active;                /* requests inside curl */
  int nactive, nqueued;
  int max_connections;
  int max_per_host;                /* 0: no limit per host */
  http_host **hosts; size_t nhosts, nbuckets; /* hosts with requests out (max_per_host only) */
  long timeout_ms, connect_timeout_ms;
  int no_proxy_env;                /* no proxy variable was set when it was made (proxy_env_unset) */
  CURL **spare; int nspare, cap_spare; /* easy handles kept for reuse, configured (easy_configure)
                                      and carrying no option of an earlier request */
  int self_ref;                    /* registry ref to the client userdata while requests are out */
  int closed;
  sock_ctx **socks; int nsocks;    /* owned sockets' contexts, indexed by descriptor */
  curl_socket_t *fresh; int nfresh, cap_fresh; /* sockets opened during the current curl call */
  int driving;                     /* inside drive(): l_request leaves the kick to it */
  pid_t pid;                       /* the process that made it (for the error message) */
  int fork_gen;                    /* aio_fork_gen() when made: a forked child must not use it */
};

static int curl_ready = 0;

static int pump(http_client *c, http_req *from);
static int check_done(http_client *c);
static void drive(http_client *c, curl_socket_t fd, int flags);

/* ---- small helpers ---------------------------------------------------------------- */

/* Copies len bytes (NULs allowed) into a new NUL-terminated buffer; NULL when out of memory. */
static char *dupstr(const char *s, size_t len) {
  char *p = malloc(len + 1);
  if (p) { memcpy(p, s, len); p[len] = 0; }
  return p;
}

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

/* The liveness handle's callback: nothing to do, being active is its whole job. */
static void on_alive(uv_prepare_t *h) { (void)h; }

/* Polls s for events (0 stops it); a no-op when they do not change. */
static void sock_poll(sock_ctx *s, int events, uv_poll_cb cb) {
  if (events == s->events) return;
  if (events) uv_poll_start(&s->poll, events, cb);
  else uv_poll_stop(&s->poll);
  s->events = events;
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

/* Stops s synchronously (its socket may close right after) and frees it in the close callback. */
static void sock_free(sock_ctx *s) {
  uv_poll_stop(&s->poll);
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
      sock_poll(s, s->events ? UV_READABLE : 0, on_poll);
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
  sock_poll(s, ev, on_poll);
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

/* ---- hosts (max_per_host) ------------------------------------------------------------ */

/* FNV-1a of a host key. */
static size_t host_hash(const char *k, size_t len) {
  size_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)k[i]) * 16777619u;
  return h;
}

/* Doubles the host table (a no-op when memory is short: the chains just grow longer). */
static void hosts_grow(http_client *c) {
  size_t n = c->nbuckets ? c->nbuckets * 2 : 16;
  http_host **grown = calloc(n, sizeof *grown);
  if (!grown) return;
  for (size_t i = 0; i < c->nbuckets; i++) {
    for (http_host *h = c->hosts[i], *next; h; h = next) {
      next = h->next;
      size_t b = host_hash(h->key, h->len) & (n - 1);
      h->next = grown[b];
      grown[b] = h;
    }
  }
  free(c->hosts);
  c->hosts = grown;
  c->nbuckets = n;
}

/* The host of key (made when new), with one more request counted; NULL when out of memory. */
static http_host *host_hold(http_client *c, const char *key, size_t len) {
  if (c->nhosts >= c->nbuckets) hosts_grow(c);
  if (!c->hosts) return NULL;
  size_t b = host_hash(key, len) & (c->nbuckets - 1);
  http_host *h = c->hosts[b];
  while (h && (h->len != len || memcmp(h->key, key, len) != 0)) h = h->next;
  if (!h) {
    if (!(h = calloc(1, sizeof *h + len + 1))) return NULL;
    memcpy(h->key, key, len);
    h->len = len;
    h->next = c->hosts[b];
    c->hosts[b] = h;
    c->nhosts++;
  }
  h->nreq++;
  return h;
}

/* Counts one request less against h; frees it with its last one. */
static void host_release(http_client *c, http_host *h) {
  if (--h->nreq > 0) return;
  http_host **p = &c->hosts[host_hash(h->key, h->len) & (c->nbuckets - 1)];
  while (*p != h) p = &(*p)->next;
  *p = h->next;
  c->nhosts--;
  free(h);
}

/* ---- URLs ------------------------------------------------------------------------------- */

/* How curl itself parses a URL it is given (7.88's url.c), so our reading of its parts agrees. */
#define URL_PARSE_FLAGS (CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME)

/* Is a part of u (a host name) plain ASCII? A part curl cannot give counts as ASCII. */
static int url_part_ascii(CURLU *u, CURLUPart what) {
  char *part = NULL;
  int ascii = 1;
  if (curl_url_get(u, what, &part, 0) != CURLUE_OK) return 1;
  for (const char *p = part; *p; p++) if ((unsigned char)*p >= 0x80) ascii = 0;
  curl_free(part);
  return ascii;
}

/* Gives u's host name in punycode when it is not ASCII, returning the new URL (malloc'd), or
** NULL when there is nothing to convert or the conversion fails (curl then reports the URL).
** curl converts with libidn2, which reads the host in the locale's encoding; aioshell keeps
** the C locale (as lua.c does), so the conversion runs under a C.UTF-8 locale for this thread
** only (uselocale), and the process locale is never touched. */
static char *url_punycode(CURLU *u) {
  char *puny = NULL, *out = NULL;
  if (url_part_ascii(u, CURLUPART_HOST)) return NULL;
  locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
  if (utf8 == (locale_t)0) return NULL;
  locale_t old = uselocale(utf8);
  CURLUcode rc = curl_url_get(u, CURLUPART_URL, &puny, CURLU_PUNYCODE);
  uselocale(old);
  freelocale(utf8);
  if (rc != CURLUE_OK) return NULL;
  if ((out = strdup(puny)) != NULL && curl_url_set(u, CURLUPART_URL, out, URL_PARSE_FLAGS) != CURLUE_OK) {
    free(out);                     /* u keeps the name as given, as when the conversion fails */
    out = NULL;
  }
  curl_free(puny);
  return out;
}

/* Writes "scheme://host:port" of u (the host lower-cased) into a new buffer; NULL when curl
** cannot give those parts (the request then counts against no host: curl will fail it). */
static char *url_host_key(CURLU *u, size_t *len) {
  char *scheme = NULL, *host = NULL, *port = NULL, *key = NULL;
  if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    size_t n = strlen(scheme) + strlen(host) + (port ? strlen(port) : 0) + 5;
    if ((key = malloc(n)) != NULL) {
      *len = (size_t)snprintf(key, n, "%s://%s:%s", scheme, host, port ? port : "");
      for (char *k = key; *k; k++) if (*k >= 'A' && *k <= 'Z') *k = (char)(*k + 32);
    }
  }
  curl_free(scheme); curl_free(host); curl_free(port);
  return key;
}

/* Reads r's URL with curl's URL API when something needs its parts: a host name that is not
** ASCII goes to curl in punycode (non_ascii: the URL has such bytes somewhere), and with
** max_per_host r counts against its host. Only then: a plain request never parses its URL
** here. The parsed URL is kept for curl (CURLOPT_CURLU), which then does not parse it again.
** A URL curl cannot parse is left to curl, which fails it with kind "url". Returns 0 when out
** of memory. */
static int url_prepare(http_client *c, http_req *r, int non_ascii) {
  CURLU *u = curl_url();
  if (!u) return 0;
  if (curl_url_set(u, CURLUPART_URL, r->url, URL_PARSE_FLAGS) != CURLUE_OK) {
    curl_url_cleanup(u);
    return 1;
  }
  r->curlu = u;                    /* req_free frees it */
  char *puny = non_ascii ? url_punycode(u) : NULL;
  if (puny) { free(r->url); r->url = puny; }
  size_t len = 0;
  char *key = c->max_per_host > 0 ? url_host_key(u, &len) : NULL;
  int ok = !key || (r->host = host_hold(c, key, len)) != NULL;
  free(key);
  return ok;
}

/* Is the scheme of url one we allow (http, https)? Asked only of a failed request: curl says
** "unsupported protocol" both for a URL of another scheme and for a reply that is not HTTP. */
static int url_is_http(const char *url) {
  CURLU *u = curl_url();
  char *scheme = NULL;
  int yes = 0;
  if (u && curl_url_set(u, CURLUPART_URL, url, URL_PARSE_FLAGS) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK)
    yes = strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0;
  curl_free(scheme);
  curl_url_cleanup(u);
  return yes;
}

/* ---- request life cycle -------------------------------------------------------------- */

static void list_remove(http_req **head, http_req **tail, http_req *r) {
  if (r->prev) r->prev->next = r->next; else *head = r->next;
  if (r->next) r->next->prev = r->prev; else if (tail) *tail = r->prev;
  r->prev = r->next = NULL;
}

/* Takes queued request r out of the FIFO. */
static void queue_remove(http_client *c, http_req *r) {
  list_remove(&c->qhead, &c->qtail, r);
  c->nqueued--;
}

/* Takes r, whose easy handle curl no longer holds, out of the active list and its host's slots. */
static void active_remove(http_client *c, http_req *r) {
  list_remove(&c->active, NULL, r);
  c->nactive--;
  if (r->host) r->host->active--;
}

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

/* Gives r's easy handle back to the spares (or frees it), carrying the client's options only:
** a GET's own are set back (easy_unset); after any other method, whose options reach further
** (NOBODY, CUSTOMREQUEST, POSTFIELDS), the handle is reset and configured again (~8,000
** instructions). */
static void easy_release(http_client *c, http_req *r) {
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

/* Frees a request's memory (its future ref included) and gives its easy handle back. */
static void req_free(lua_State *L, http_req *r) {
  http_client *c = r->c;
  easy_release(c, r);
  if (r->fut) r->fut->on_cancel = NULL;
  if (r->fut_ref != LUA_NOREF) aio_unref(L, r->fut_ref);
  curl_slist_free_all(r->headers);
  curl_url_cleanup(r->curlu);                /* (after easy_release: curl may read it till then) */
  if (r->host) host_release(c, r->host);
  free(r->method); free(r->url); free(r->body);
  aio_buf_free(&r->rbody); aio_buf_free(&r->rhead);
  free(r);
}

/* Drops the client's self-reference when nothing is out any more. */
static void client_maybe_unref(lua_State *L, http_client *c) {
  if (c->nactive == 0 && c->nqueued == 0 && c->self_ref != LUA_NOREF) {
    int ref = c->self_ref;
    uv_prepare_stop(c->alive);
    c->self_ref = LUA_NOREF;
    aio_unref(L, ref);
  }
}

/* Configures r's easy handle and hands it to curl (its timeout starts now). */
static int req_start(http_client *c, http_req *r) {
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

/* Pushes a structured error {kind=, url=, message=, code=} with the error metatable. */
static void push_error(lua_State *L, const char *kind, const char *url, const char *msg, int code) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind); lua_setfield(L, -2, "kind");
  lua_pushstring(L, url); lua_setfield(L, -2, "url");
  lua_pushstring(L, msg); lua_setfield(L, -2, "message");
  lua_pushinteger(L, code); lua_setfield(L, -2, "code");
  luaL_setmetatable(L, HTTP_ERROR_MT);
}

/* Moves queued requests into curl while slots are free, in FIFO order from `from` on (those
** before it are known to be waiting for their host). A request whose host has max_per_host
** requests inside curl stays queued and the next one may go: a busy host never holds up an
** idle one. Passing over such requests costs a pointer step each, only with max_per_host,
** only while a slot is free. Returns how many started. */
static int pump(http_client *c, http_req *from) {
  lua_State *L = c->loop->L;
  int started = 0;
  http_req *r = from, *next;
  for (; r && c->nactive < c->max_connections; r = next) {
    next = r->next;
    if (r->host && r->host->active >= c->max_per_host) continue;
    queue_remove(c, r);
    if (!req_start(c, r)) {
      r->state = REQ_DONE;
      push_error(L, "internal", r->url, "cannot start transfer", -1);
      aio_future_reject(L, r->fut);          /* its callbacks may change the queue: */
      req_free(L, r);
      next = c->qhead;                       /* start over (the blocked ones are passed again) */
    } else started++;
  }
  return started;
}

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
      return url_is_http(eff ? eff : r->url) ? "protocol" : "url";
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
  push_error(L, kind, r->url, msg, (int)rc);
}

/* Pushes the header name k[0..len) lower-cased (a long name through a Lua buffer). */
static void push_lower(lua_State *L, const char *k, size_t len) {
  char small[64], *out = small;
  luaL_Buffer b;
  if (len > sizeof small) out = luaL_buffinitsize(L, &b, len);
  for (size_t i = 0; i < len; i++) out[i] = (char)((k[i] >= 'A' && k[i] <= 'Z') ? k[i] + 32 : k[i]);
  if (out == small) lua_pushlstring(L, small, len);
  else luaL_pushresultsize(&b, len);
}

/* Pushes the header table of the raw header block: lower-case names, repeats joined by ", ".
** Sized by its line count, so that a response's few headers get a small table. */
static void push_headers(lua_State *L, const char *p, size_t len) {
  const char *end = p + len;
  int lines = 0;
  for (const char *q = p; q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++) lines++;
  lua_createtable(L, 0, lines > 2 ? lines - 2 : 0);      /* less the status line and the blank one */
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *le = eol ? eol : end;
    const char *colon = memchr(p, ':', (size_t)(le - p));
    if (colon && !(le - p >= 5 && memcmp(p, "HTTP/", 5) == 0)) {
      const char *v = colon + 1, *ve = le;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      push_lower(L, p, (size_t)(colon - p));
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

/* Puts r in the FIFO of requests waiting for a slot: at its tail, or at its head (a request
** that was already in flight goes first). */
static void enqueue(http_client *c, http_req *r, int at_head) {
  r->state = REQ_QUEUED;
  if (at_head) {
    r->prev = NULL; r->next = c->qhead;
    if (c->qhead) c->qhead->prev = r; else c->qtail = r;
    c->qhead = r;
  } else {
    r->prev = c->qtail; r->next = NULL;
    if (c->qtail) c->qtail->next = r; else c->qhead = r;
    c->qtail = r;
  }
  c->nqueued++;
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
    active_remove(c, r);
    r->state = REQ_DONE;
    finished++;
    if (rc != CURLE_OK && retry_on_new_connection(r, e, rc)) {
      easy_release(c, r);
      r->retried = 1;
      enqueue(c, r, 1);                     /* pump, below, starts it again */
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
    req_free(L, r);
  }
  int started = 0;
  if (finished) {
    started = pump(c, c->qhead);
    client_maybe_unref(L, c);
  }
  return started;
}

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
** the socket, finds it not ready and keeps waiting as before. *running is updated. */
static void drive_fresh(http_client *c, int *running) {
  while (c->nfresh > 0) {
    curl_socket_t fd = c->fresh[--c->nfresh];
    sock_ctx *s = sock_owned(c, fd);
    if (!s || !s->fresh) continue;
    s->fresh = 0;
    curl_multi_socket_action(c->multi, fd, CURL_CSELECT_OUT, running);
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
static void kick_now(http_client *c) {
  int running;
  if (c->driving) return;
  c->driving++;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drive_fresh(c, &running);
  c->driving--;
  collect_later(c, running);
}

/* Future cancel hook: a queued request leaves the FIFO, an active one is aborted. */
static void on_req_cancel(lua_State *L, aio_future *f, void *ud) {
  http_req *r = ud;
  http_client *c = r->c;
  (void)f;
  if (r->state == REQ_QUEUED) {
    queue_remove(c, r);
  } else if (r->state == REQ_ACTIVE) {
    curl_multi_remove_handle(c->multi, r->easy);
    active_remove(c, r);
  } else return;
  r->state = REQ_DONE;
  r->fut = NULL;                             /* it is being cancelled: do not touch it again */
  req_free(L, r);
  pump(c, c->qhead);
  client_maybe_unref(L, c);
}

/* ---- Lua API --------------------------------------------------------------------------- */

static http_client *check_client(lua_State *L, int idx) {
  http_client **pc = luaL_checkudata(L, idx, CLIENT_MT);
  if (!*pc || (*pc)->closed) luaL_error(L, "attempt to use a closed http client");
  if ((*pc)->fork_gen != aio_fork_gen())
    luaL_error(L, "http client made by process %d cannot be used in a forked child (make a new "
               "one there)", (int)(*pc)->pid);
  return *pc;
}

/* client:owned() → true unless the client was made by another process (the parent of a fork). */
static int l_owned(lua_State *L) {
  http_client **pc = luaL_checkudata(L, 1, CLIENT_MT);
  lua_pushboolean(L, *pc && (*pc)->fork_gen == aio_fork_gen());
  return 1;
}

/* Reads the optional field k of the table at idx, a duration in seconds, as milliseconds rounded
** up (0.0005 s is 1 ms, not "no timeout"): def when absent; 0, no timeout, for 0, math.huge or
** anything too long to count in a long. */
static long opt_ms(lua_State *L, int idx, const char *who, const char *k, long def) {
  lua_Number s = aio_http_opt_number(L, idx, who, k, -1, 0, HUGE_VAL, AIO_OPT_SECONDS);
  if (s < 0) return def;
  double ms = ceil(s * 1000.0);
  return ms < (double)LONG_MAX ? (long)ms : 0;
}

/* Reads the optional integer field k (min .. INT_MAX) of the table at idx; def when absent. */
static int opt_int(lua_State *L, int idx, const char *who, const char *k, int min, int def) {
  return (int)aio_http_opt_number(L, idx, who, k, def, min, INT_MAX, AIO_OPT_INTEGER);
}

/* client_c.new{max_connections=, max_per_host=, timeout=, connect_timeout=} → client. Every
** option is read (and may raise) before anything is allocated. */
static int l_new(lua_State *L) {
  static const char who[] = "http.client";
  luaL_checktype(L, 1, LUA_TTABLE);
  int max_connections = opt_int(L, 1, who, "max_connections", 1, 100);
  int max_per_host = opt_int(L, 1, who, "max_per_host", 0, 0);
  long timeout_ms = opt_ms(L, 1, who, "timeout", 0);
  long connect_timeout_ms = opt_ms(L, 1, who, "connect_timeout", 0);
  if (!curl_ready) {                         /* lazily: aioshell -e '' must start fast */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    curl_ready = 1;
  }
  http_client **pc = lua_newuserdatauv(L, sizeof *pc, 0);
  *pc = NULL;                                /* "closed" until fully built (liolib's rule) */
  luaL_setmetatable(L, CLIENT_MT);
  http_client *c = calloc(1, sizeof *c);
  if (!c) return luaL_error(L, "out of memory");
  c->loop = aio_loop_get(L);
  c->pid = getpid();
  c->fork_gen = aio_fork_gen();
  c->self_ref = LUA_NOREF;
  c->max_connections = max_connections;
  c->max_per_host = max_per_host;
  c->timeout_ms = timeout_ms;
  c->connect_timeout_ms = connect_timeout_ms;
  c->no_proxy_env = proxy_env_unset();
  c->cap_spare = c->max_connections;
  c->spare = calloc((size_t)c->cap_spare, sizeof(CURL *));
  c->timer = malloc(sizeof *c->timer);
  c->alive = malloc(sizeof *c->alive);
  c->multi = curl_multi_init();
  if (!c->spare || !c->timer || !c->alive || !c->multi) {
    free(c->spare); free(c->timer); free(c->alive);
    if (c->multi) curl_multi_cleanup(c->multi);
    free(c);
    return luaL_error(L, "cannot create http client");
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
  *pc = c;                                   /* max_per_host is ours (pump), not curl's */
  return 1;
}

#define WHO_REQUEST "http request"

typedef struct {                   /* l_request's arguments once checked */
  const char *method, *url, *body; /* strings on the Lua stack (body NULL: none) */
  size_t mlen, ulen, blen;
  int verb;                        /* VERB_* */
  int non_ascii;                   /* the URL has bytes >= 0x80 (a host name to convert?) */
  int expect;                      /* the caller gives an Expect header */
  int follow;
  long timeout_ms, connect_timeout_ms, max_redirs;
  int hbase, nheaders;             /* header names and values at stack slots hbase+1 .. +2n */
} req_args;

/* How method (asked with a body or not) is given to curl: VERB_*. */
static int verb_of(const char *m, size_t len, int has_body) {
  if (len == 4 && memcmp(m, "POST", 4) == 0) return VERB_POST;
  if (len == 3 && memcmp(m, "GET", 3) == 0) return has_body ? VERB_OTHER : VERB_GET;
  if (len == 4 && memcmp(m, "HEAD", 4) == 0) return VERB_HEAD;
  return VERB_OTHER;
}

/* Is method idempotent (RFC 9110, 9.2.2), so that it may go out twice? */
static int is_idempotent(const char *m) {
  static const char *const idempotent[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", NULL};
  for (int i = 0; idempotent[i]; i++)
    if (strcmp(m, idempotent[i]) == 0) return 1;
  return 0;
}

/* Returns the string argument idx (k names it in the error raised for anything else). */
static const char *check_string(lua_State *L, int idx, const char *k, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING) aio_http_opt_error(L, idx, WHO_REQUEST, k, "a string");
  return lua_tolstring(L, idx, len);
}

/* Checks the headers table at idx, {name = value}: a token, and a string or number without CR,
** LF or NUL. Leaves each name and value string on the stack for req_headers (a number becomes a
** string there, in the stack's copy). Returns how many; *expect is set for an Expect header. */
static int check_headers(lua_State *L, int idx, int *expect) {
  int n = 0;
  size_t klen, vlen;
  lua_pushnil(L);
  while (lua_next(L, idx)) {                 /* ..., name, value */
    if (lua_type(L, -2) != LUA_TSTRING)
      aio_http_opt_error(L, lua_absindex(L, -2), WHO_REQUEST, "headers", "string names");
    const char *k = lua_tolstring(L, -2, &klen);
    if (!aio_http_is_token(k, klen))
      luaL_error(L, WHO_REQUEST ": bad header name '%s' (an HTTP token expected)", k);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, WHO_REQUEST ": bad header '%s' (a string value expected, got %s)", k,
                 luaL_typename(L, -1));
    const char *v = lua_tolstring(L, -1, &vlen);
    if (aio_http_has_crlf_nul(v, vlen, NULL))
      luaL_error(L, WHO_REQUEST ": bad header '%s' (its value contains CR, LF or NUL)", k);
    if (klen == 6 && strncasecmp(k, "expect", 6) == 0) *expect = 1;
    luaL_checkstack(L, 3, "too many headers");
    lua_pushvalue(L, -2);                    /* the traversal's key: name and value stay below */
    n++;
  }
  return n;
}

/* Checks l_request's arguments (method, url, headers, body, opts at 2..6) into a. Everything
** that can raise is here, before anything is allocated: a raise after the allocations leaked
** them (all of them, body copy included, on every bad call). */
static void check_request(lua_State *L, http_client *c, req_args *a) {
  a->method = check_string(L, 2, "method", &a->mlen);
  if (!aio_http_is_token(a->method, a->mlen))
    luaL_error(L, WHO_REQUEST ": bad option 'method' (not an HTTP token)");
  a->url = check_string(L, 3, "url", &a->ulen);
  a->non_ascii = 0;
  if (aio_http_has_crlf_nul(a->url, a->ulen, &a->non_ascii))
    luaL_error(L, WHO_REQUEST ": bad option 'url' (contains CR, LF or NUL)");
  a->body = NULL;
  a->blen = 0;
  if (!lua_isnoneornil(L, 5)) {
    if (lua_type(L, 5) != LUA_TSTRING && lua_type(L, 5) != LUA_TNUMBER)
      aio_http_opt_error(L, 5, WHO_REQUEST, "body", "a string");
    a->body = lua_tolstring(L, 5, &a->blen);
  }
  a->verb = verb_of(a->method, a->mlen, a->body != NULL);
  if (a->body && a->verb == VERB_HEAD)
    luaL_error(L, WHO_REQUEST ": bad option 'body' (a HEAD request has no body)");
  a->timeout_ms = c->timeout_ms;
  a->connect_timeout_ms = c->connect_timeout_ms;
  a->max_redirs = 10;
  a->follow = 0;
  if (lua_type(L, 6) == LUA_TTABLE) {
    a->timeout_ms = opt_ms(L, 6, WHO_REQUEST, "timeout", a->timeout_ms);
    a->connect_timeout_ms = opt_ms(L, 6, WHO_REQUEST, "connect_timeout", a->connect_timeout_ms);
    lua_getfield(L, 6, "follow");
    a->follow = lua_toboolean(L, -1);
    lua_pop(L, 1);
    a->max_redirs = opt_int(L, 6, WHO_REQUEST, "max_redirects", 0, 10);
  }
  a->expect = 0;
  a->hbase = lua_gettop(L);
  a->nheaders = 0;
  if (lua_type(L, 4) == LUA_TTABLE) a->nheaders = check_headers(L, 4, &a->expect);
  else if (!lua_isnoneornil(L, 4)) aio_http_opt_error(L, 4, WHO_REQUEST, "headers", "a table");
}

/* Is s[0..len) empty or blank (curl drops a header whose value is)? */
static int is_blank(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) if (s[i] != ' ' && s[i] != '\t') return 0;
  return 1;
}

/* Appends "name: value" to r's header list, or "name;" for an empty value (curl reads "name:"
** as "do not send that header" and "name;" as "send it empty"). Returns 0 when out of memory. */
static int req_add_header(http_req *r, const char *k, size_t klen, const char *v, size_t vlen) {
  char small[256], *line = small;
  size_t n = klen + vlen + 3;
  if (n > sizeof small && !(line = malloc(n))) return 0;
  memcpy(line, k, klen);
  if (is_blank(v, vlen)) {
    memcpy(line + klen, ";", 2);
  } else {
    memcpy(line + klen, ": ", 2);
    memcpy(line + klen + 2, v, vlen);
    line[klen + 2 + vlen] = 0;
  }
  struct curl_slist *grown = curl_slist_append(r->headers, line);
  if (line != small) free(line);
  if (grown) r->headers = grown;
  return grown != NULL;
}

/* Builds r's header list from the strings check_headers left on the stack. A request with a
** body also gets an empty "Expect:" (unless the caller gives one), as most clients send none:
** curl (7.88) asks for "100-continue" before a body over 1 MiB and waits a second for a server
** that ignores it. Returns 0 when out of memory. */
static int req_headers(lua_State *L, http_req *r, const req_args *a) {
  for (int i = 0; i < a->nheaders; i++) {
    size_t klen, vlen;
    const char *k = lua_tolstring(L, a->hbase + 2 * i + 1, &klen);
    const char *v = lua_tolstring(L, a->hbase + 2 * i + 2, &vlen);
    if (!req_add_header(r, k, klen, v, vlen)) return 0;
  }
  if (a->blen > 0 && !a->expect) {
    struct curl_slist *grown = curl_slist_append(r->headers, "Expect:");
    if (!grown) return 0;
    r->headers = grown;
  }
  return 1;
}

/* Makes the request of the checked arguments a: C memory only, nothing here raises (the header
** strings are Lua strings already). NULL when out of memory. */
static http_req *req_new(lua_State *L, http_client *c, const req_args *a) {
  http_req *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->c = c;
  r->fut_ref = LUA_NOREF;
  r->method = dupstr(a->method, a->mlen);
  r->url = dupstr(a->url, a->ulen);
  r->has_body = a->body != NULL || a->verb == VERB_POST;     /* a POST always has one, maybe "" */
  if (a->body) r->body = dupstr(a->body, a->blen);
  r->body_len = a->blen;
  r->verb = a->verb;
  r->timeout_ms = a->timeout_ms;
  r->connect_timeout_ms = a->connect_timeout_ms;
  r->follow = a->follow;
  r->max_redirs = a->max_redirs;
  if (!r->method || !r->url || (a->body && !r->body) || !req_headers(L, r, a) ||
      ((a->non_ascii || c->max_per_host > 0) && !url_prepare(c, r, a->non_ascii))) {
    req_free(L, r);
    return NULL;
  }
  r->idempotent = is_idempotent(r->method);
  return r;
}

/* client:request(method, url, headers|nil, body|nil, opts|nil) → future resolving to a response.
** opts: timeout, connect_timeout (seconds), follow (bool), max_redirects. The steps, in this
** order: 1. every check that raises on misuse; 2. the Lua objects (a raise here is out of
** memory, and they are collected); 3. the C memory, which nothing raises past. */
static int l_request(lua_State *L) {
  http_client *c = check_client(L, 1);
  req_args a;
  check_request(L, c, &a);
  aio_future *f = aio_future_new(L);
  int fut_ref = aio_ref(L, -1);
  if (c->self_ref == LUA_NOREF) {
    c->self_ref = aio_ref(L, 1);
    uv_prepare_start(c->alive, on_alive);
  }
  http_req *r = req_new(L, c, &a);
  if (!r) {
    aio_unref(L, fut_ref);
    client_maybe_unref(L, c);
    return luaL_error(L, "out of memory");
  }
  r->fut = f;
  r->fut_ref = fut_ref;
  f->on_cancel = on_req_cancel;
  f->on_cancel_ud = r;
  r->t_queued = aio_now_ns(c->loop);
  enqueue(c, r, 0);                          /* always through the FIFO: fairness */
  /* Outside drive, the requests before r are all waiting for a slot (pump ran after every slot
  ** freed), so only r can start: with max_per_host, no scan of the queue on every request.
  ** Inside drive (a done callback), freed slots may not have been handed out yet. */
  if (pump(c, c->driving ? c->qhead : r) > 0) kick_now(c);
  return 1;
}

/* client:stats() → active, queued */
static int l_stats(lua_State *L) {
  http_client *c = check_client(L, 1);
  lua_pushinteger(L, c->nactive);
  lua_pushinteger(L, c->nqueued);
  return 2;
}

/* client:close() / __gc / __close: aborts what is out (rejecting as cancelled) and frees curl. */
static int l_close(lua_State *L) {
  http_client **pc = luaL_checkudata(L, 1, CLIENT_MT);
  http_client *c = *pc;
  if (!c) return 0;
  *pc = NULL;
  /* In a forked child the parent's client is left alone: its kept-alive connections are the
  ** parent's too (closing them cleanly, as curl would, could send bytes on them), and its
  ** handles belong to the loop the child copied. Its memory is the child's to lose. */
  if (c->fork_gen != aio_fork_gen()) return 0;
  c->closed = 1;
  while (c->qhead || c->active) {
    http_req *r = c->qhead ? c->qhead : c->active;
    if (r->fut) {
      aio_future *f = r->fut;
      f->on_cancel = NULL;
      aio_future_cancel(L, f, "http client closed");
      r->fut = NULL;
    }
    if (r->state == REQ_QUEUED) queue_remove(c, r);
    else { curl_multi_remove_handle(c->multi, r->easy); active_remove(c, r); }
    req_free(L, r);
  }
  for (int i = 0; i < c->nspare; i++) curl_easy_cleanup(c->spare[i]);
  free(c->spare);
  curl_multi_cleanup(c->multi);              /* closes its sockets through on_close_socket */
  free(c->socks);
  free(c->fresh);
  free(c->hosts);                            /* empty: every request released its host */
  if (!uv_is_closing((uv_handle_t *)c->timer)) uv_close((uv_handle_t *)c->timer, free_handle_cb);
  if (!uv_is_closing((uv_handle_t *)c->alive)) uv_close((uv_handle_t *)c->alive, free_handle_cb);
  if (c->self_ref != LUA_NOREF) aio_unref(L, c->self_ref);
  free(c);
  return 0;
}

/* The error object's __tostring: "http <kind>: <message> (<url>)". */
static int l_error_tostring(lua_State *L) {
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "url");
  lua_pushfstring(L, "http %s: %s (%s)", luaL_optstring(L, 2, "?"), luaL_optstring(L, 3, "?"),
                  luaL_optstring(L, 4, "?"));
  return 1;
}

/* client_c.error(kind, url, message) → a structured error (for the facade's own failures). */
static int l_error(lua_State *L) {
  push_error(L, luaL_checkstring(L, 1), luaL_optstring(L, 2, "?"), luaL_optstring(L, 3, ""), -1);
  return 1;
}

/* client_c.is_error(v) → true if v is an http error object. */
static int l_is_error(lua_State *L) {
  int is = 0;
  if (lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, HTTP_ERROR_MT);
    is = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, is);
  return 1;
}

/* client_c.version() → libcurl's version string. */
static int l_version(lua_State *L) {
  lua_pushstring(L, curl_version());
  return 1;
}

/* Opens aio.http_client_c: new, error, is_error, version; the client and error metatables. */
int luaopen_aio_http_client_c(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"request", l_request}, {"stats", l_stats}, {"close", l_close}, {"owned", l_owned},
    {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", l_close}, {"__close", l_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
    {"new", l_new}, {"error", l_error}, {"is_error", l_is_error}, {"version", l_version}, {NULL, NULL}};
  luaL_newmetatable(L, CLIENT_MT);
  luaL_setfuncs(L, meta, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, HTTP_ERROR_MT);
  lua_pushcfunction(L, l_error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}

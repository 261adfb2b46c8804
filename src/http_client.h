/*
** http_client.h — what the files of aio.http_client_c share: http_client.c (the Lua side, the
** request's memory), http_client_curl.c (the curl-multi driver), http_client_queue.c (the FIFO
** and the per-host counts), http_client_url.c (URL parts). Private to them.
*/
#ifndef AIO_HTTP_CLIENT_H
#define AIO_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
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
  int fresh;                       /* opened during the current curl call: connect pending, and
                                      its poll not started before drive_fresh has acted on it */
  int want;                        /* while fresh: the events curl asked for, polled after */
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

/* ---- http_client.c: the Lua side, a request's memory ---- */

/* Frees a request's memory (its future ref included) and gives its easy handle back. */
void aio_hc_req_free(lua_State *L, http_req *r);
/* Drops the client's self-reference when nothing is out any more. */
void aio_hc_client_maybe_unref(lua_State *L, http_client *c);
/* Pushes a structured error {kind=, url=, message=, code=} with the error metatable. */
void aio_hc_push_error(lua_State *L, const char *kind, const char *url, const char *msg, int code);

/* ---- http_client_curl.c: the curl-multi driver ---- */

/* Makes client c's curl side (multi handle, spare easy handles, timer, liveness handle); 0 when
** out of memory, with nothing of it left allocated. */
int aio_hc_driver_open(http_client *c);
/* Frees client c's curl side, once none of its requests is left. */
void aio_hc_driver_close(http_client *c);
/* Gives r's easy handle back to the spares (or frees it). */
void aio_hc_easy_release(http_client *c, http_req *r);
/* Configures r's easy handle and hands it to curl (its timeout starts now); 0 on failure. */
int aio_hc_req_start(http_client *c, http_req *r);
/* Lets curl send what just got a slot now, from the caller's call (rule 7). */
void aio_hc_kick_now(http_client *c);

/* ---- http_client_queue.c: the FIFO and the per-host counts ---- */

/* The host of key (made when new), with one more request counted; NULL when out of memory. */
http_host *aio_hc_host_hold(http_client *c, const char *key, size_t len);
/* Counts one request less against h; frees it with its last one. */
void aio_hc_host_release(http_client *c, http_host *h);
/* Takes queued request r out of the FIFO. */
void aio_hc_queue_remove(http_client *c, http_req *r);
/* Takes r, whose easy handle curl no longer holds, out of the active list and its host's slots. */
void aio_hc_active_remove(http_client *c, http_req *r);
/* Moves queued requests from `from` on into curl while slots are free; how many started. */
int aio_hc_pump(http_client *c, http_req *from);
/* Puts r in the FIFO of requests waiting for a slot, at its tail (or head: a retry). */
void aio_hc_enqueue(http_client *c, http_req *r, int at_head);

/* ---- http_client_url.c: URL parts ---- */

/* Reads r's URL with curl's URL API when something needs its parts (a host name that is not
** ASCII, max_per_host); 0 when out of memory. */
int aio_hc_url_prepare(http_client *c, http_req *r, int non_ascii);
/* Is the scheme of url one we allow (http, https)? */
int aio_hc_url_is_http(const char *url);

#endif

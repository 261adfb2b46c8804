/*
** http_client.c — the HTTP client's Lua side (module aio.http_client_c): client_c.new and the
** client object (request, stats, close, owned), the checks of a request's arguments (every one
** that raises runs before anything is allocated), the request's memory, and the error objects.
** A request completes by resolving or rejecting a future with the loop's main state; the facade
** (lua/aio/http.lua) awaits it, and cancelling that future aborts the transfer.
**
** Files: http_client_curl.c (libcurl's multi interface driven by the loop, and the rules it
** keeps), http_client_queue.c (our FIFO of requests waiting for a slot, and the per-host
** counts), http_client_url.c (what is read of a URL); http_client.h is what they share.
*/
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <limits.h>
#include <math.h>
#include <unistd.h>
#include "http_client.h"

static int curl_ready = 0;

/* ---- requests and clients: memory, liveness, cancellation ------------------------------- */

/* Copies len bytes (NULs allowed) into a new NUL-terminated buffer; NULL when out of memory. */
static char *dupstr(const char *s, size_t len) {
  char *p = malloc(len + 1);
  if (p) { memcpy(p, s, len); p[len] = 0; }
  return p;
}

/* The liveness handle's callback: nothing to do, being active is its whole job. */
static void on_alive(uv_prepare_t *h) { (void)h; }

/* Frees a request's memory (its future ref included) and gives its easy handle back. */
void aio_hc_req_free(lua_State *L, http_req *r) {
  http_client *c = r->c;
  aio_hc_easy_release(c, r);
  if (r->fut) r->fut->on_cancel = NULL;
  if (r->fut_ref != LUA_NOREF) aio_unref(L, r->fut_ref);
  curl_slist_free_all(r->headers);
  curl_url_cleanup(r->curlu);                /* (after easy_release: curl may read it till then) */
  if (r->host) aio_hc_host_release(c, r->host);
  free(r->method); free(r->url); free(r->body);
  aio_buf_free(&r->rbody); aio_buf_free(&r->rhead);
  free(r);
}

/* Drops the client's self-reference when nothing is out any more. */
void aio_hc_client_maybe_unref(lua_State *L, http_client *c) {
  if (c->nactive == 0 && c->nqueued == 0 && c->self_ref != LUA_NOREF) {
    int ref = c->self_ref;
    uv_prepare_stop(c->alive);
    c->self_ref = LUA_NOREF;
    aio_unref(L, ref);
  }
}

/* Pushes a structured error {kind=, url=, message=, code=} with the error metatable. */
void aio_hc_push_error(lua_State *L, const char *kind, const char *url, const char *msg, int code) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind); lua_setfield(L, -2, "kind");
  lua_pushstring(L, url); lua_setfield(L, -2, "url");
  lua_pushstring(L, msg); lua_setfield(L, -2, "message");
  lua_pushinteger(L, code); lua_setfield(L, -2, "code");
  luaL_setmetatable(L, HTTP_ERROR_MT);
}

/* Future cancel hook: a queued request leaves the FIFO, an active one is aborted. */
static void on_req_cancel(lua_State *L, aio_future *f, void *ud) {
  http_req *r = ud;
  http_client *c = r->c;
  (void)f;
  if (r->state == REQ_QUEUED) {
    aio_hc_queue_remove(c, r);
  } else if (r->state == REQ_ACTIVE) {
    curl_multi_remove_handle(c->multi, r->easy);
    aio_hc_active_remove(c, r);
  } else return;
  r->state = REQ_DONE;
  r->fut = NULL;                             /* it is being cancelled: do not touch it again */
  aio_hc_req_free(L, r);
  aio_hc_pump(c, c->qhead);
  aio_hc_client_maybe_unref(L, c);
}

/* ---- Lua API --------------------------------------------------------------------------- */

/* The client at idx; raises if it is closed or was made by another process (before a fork). */
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
  if (!aio_hc_driver_open(c)) {
    free(c);
    return luaL_error(L, "cannot create http client");
  }
  *pc = c;
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
      ((a->non_ascii || c->max_per_host > 0) && !aio_hc_url_prepare(c, r, a->non_ascii))) {
    aio_hc_req_free(L, r);
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
    aio_hc_client_maybe_unref(L, c);
    return luaL_error(L, "out of memory");
  }
  r->fut = f;
  r->fut_ref = fut_ref;
  f->on_cancel = on_req_cancel;
  f->on_cancel_ud = r;
  r->t_queued = aio_now_ns(c->loop);
  aio_hc_enqueue(c, r, 0);                          /* always through the FIFO: fairness */
  /* Outside drive, the requests before r are all waiting for a slot (pump ran after every slot
  ** freed), so only r can start: with max_per_host, no scan of the queue on every request.
  ** Inside drive (a done callback), freed slots may not have been handed out yet. */
  if (aio_hc_pump(c, c->driving ? c->qhead : r) > 0) aio_hc_kick_now(c);
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
    if (r->state == REQ_QUEUED) aio_hc_queue_remove(c, r);
    else { curl_multi_remove_handle(c->multi, r->easy); aio_hc_active_remove(c, r); }
    aio_hc_req_free(L, r);
  }
  aio_hc_driver_close(c);
  free(c->hosts);                            /* empty: every request released its host */
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
  aio_hc_push_error(L, luaL_checkstring(L, 1), luaL_optstring(L, 2, "?"), luaL_optstring(L, 3, ""),
                    -1);
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

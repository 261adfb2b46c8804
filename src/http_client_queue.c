/*
** http_client_queue.c — which requests go into curl (rules 2 and 3 of http_client_curl.c): the
** FIFO of requests waiting for a slot, the list of those inside curl, and with max_per_host the
** table of hosts with requests out, each with its count inside curl.
*/
#include <stdlib.h>
#include <string.h>
#include "http_client.h"

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
http_host *aio_hc_host_hold(http_client *c, const char *key, size_t len) {
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
void aio_hc_host_release(http_client *c, http_host *h) {
  if (--h->nreq > 0) return;
  http_host **p = &c->hosts[host_hash(h->key, h->len) & (c->nbuckets - 1)];
  while (*p != h) p = &(*p)->next;
  *p = h->next;
  c->nhosts--;
  free(h);
}

/* ---- the FIFO and the active list ------------------------------------------------------- */

/* Unlinks r from the list at *head (and *tail, when the list keeps one). */
static void list_remove(http_req **head, http_req **tail, http_req *r) {
  if (r->prev) r->prev->next = r->next; else *head = r->next;
  if (r->next) r->next->prev = r->prev; else if (tail) *tail = r->prev;
  r->prev = r->next = NULL;
}

/* Takes queued request r out of the FIFO. */
void aio_hc_queue_remove(http_client *c, http_req *r) {
  list_remove(&c->qhead, &c->qtail, r);
  c->nqueued--;
}

/* Takes r, whose easy handle curl no longer holds, out of the active list and its host's slots. */
void aio_hc_active_remove(http_client *c, http_req *r) {
  list_remove(&c->active, NULL, r);
  c->nactive--;
  if (r->host) r->host->active--;
}

/* Moves queued requests into curl while slots are free, in FIFO order from `from` on (those
** before it are known to be waiting for their host). A request whose host has max_per_host
** requests inside curl stays queued and the next one may go: a busy host never holds up an
** idle one. Passing over such requests costs a pointer step each, only with max_per_host,
** only while a slot is free. Returns how many started. */
int aio_hc_pump(http_client *c, http_req *from) {
  lua_State *L = c->loop->L;
  int started = 0;
  http_req *r = from, *next;
  for (; r && c->nactive < c->max_connections; r = next) {
    next = r->next;
    if (r->host && r->host->active >= c->max_per_host) continue;
    aio_hc_queue_remove(c, r);
    if (!aio_hc_req_start(c, r)) {
      r->state = REQ_DONE;
      aio_hc_push_error(L, "internal", r->url, "cannot start transfer", -1);
      aio_future_reject(L, r->fut);          /* its callbacks may change the queue: */
      aio_hc_req_free(L, r);
      next = c->qhead;                       /* start over (the blocked ones are passed again) */
    } else started++;
  }
  return started;
}

/* Puts r in the FIFO of requests waiting for a slot: at its tail, or at its head (a request
** that was already in flight goes first). */
void aio_hc_enqueue(http_client *c, http_req *r, int at_head) {
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

/*
** inbox.c — the loop's inbox: how worker threads hand work back to the loop thread (a thread
** pool's finished jobs, a channel's wake-ups). A mutex-protected list of deliveries drained by
** one uv_async_t callback on the loop thread; the declarations are in thread.h.
*/
#include <stdlib.h>
#include <pthread.h>
#include "aio.h"
#include "thread.h"

struct aio_inbox {
  uv_async_t async;
  pthread_mutex_t mu;
  aio_delivery *head, *tail;
  int holds;        /* loop thread: work in flight; the async handle is referenced while > 0 */
  lua_State *L;     /* the loop's main state */
};

static const char inbox_key = 0;

/* The async callback: takes the whole list (sends coalesce) and delivers each entry. */
static void inbox_cb(uv_async_t *a) {
  aio_inbox *ib = (aio_inbox *)a->data;
  pthread_mutex_lock(&ib->mu);
  aio_delivery *d = ib->head;
  ib->head = ib->tail = NULL;
  pthread_mutex_unlock(&ib->mu);
  while (d) {
    aio_delivery *next = d->next;
    d->deliver(ib->L, d);
    d = next;
  }
}

/* Close callback of the inbox's async handle: drops what was never delivered (a collected
** pool already took its jobs back) and frees the inbox. */
static void inbox_close_cb(uv_handle_t *h) {
  aio_inbox *ib = (aio_inbox *)h->data;
  for (aio_delivery *d = ib->head, *next; d; d = next) {
    next = d->next;
    if (d->drop) d->drop(d);
  }
  pthread_mutex_destroy(&ib->mu);
  free(ib);
}

/* __gc of the inbox box in the registry: the handle's memory goes in its close callback. */
static int inbox_gc(lua_State *L) {
  aio_inbox **box = (aio_inbox **)lua_touserdata(L, 1);
  if (*box) {
    if (!uv_is_closing((uv_handle_t *)&(*box)->async))
      uv_close((uv_handle_t *)&(*box)->async, inbox_close_cb);
    *box = NULL;
  }
  return 0;
}

/* Returns the loop's inbox, making it (unreferenced) on first use (thread.h). */
aio_inbox *aio_inbox_get(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &inbox_key) == LUA_TUSERDATA) {
    aio_inbox *ib = *(aio_inbox **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (ib) return ib;
  } else {
    lua_pop(L, 1);
  }
  aio_loop *loop = aio_loop_get(L);
  aio_inbox **box = (aio_inbox **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, inbox_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  aio_inbox *ib = calloc(1, sizeof *ib);
  if (!ib) luaL_error(L, "out of memory");
  pthread_mutex_init(&ib->mu, NULL);
  ib->L = loop->L;
  uv_async_init(&loop->uv, &ib->async, inbox_cb);
  ib->async.data = ib;
  uv_unref((uv_handle_t *)&ib->async);  /* an idle inbox must not keep the loop alive */
  *box = ib;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &inbox_key);
  return ib;
}

/* In a forked child: the inbox's handle belonged to the parent's loop; start afresh. */
void aio_thread_forget_inbox(lua_State *L) {
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &inbox_key);
}

/* Takes d back out of the inbox if it is still waiting there; 1 if it was (thread.h). */
int aio_inbox_unpost(aio_inbox *ib, aio_delivery *d) {
  int found = 0;
  pthread_mutex_lock(&ib->mu);
  aio_delivery *prev = NULL;
  for (aio_delivery *x = ib->head; x; prev = x, x = x->next) {
    if (x != d) continue;
    if (prev) prev->next = x->next;
    else ib->head = x->next;
    if (ib->tail == x) ib->tail = prev;
    found = 1;
    break;
  }
  pthread_mutex_unlock(&ib->mu);
  return found;
}

/* Appends d and wakes the loop; any thread (thread.h). */
void aio_inbox_post(aio_inbox *ib, aio_delivery *d) {
  d->next = NULL;
  pthread_mutex_lock(&ib->mu);
  if (ib->tail) ib->tail->next = d;
  else ib->head = d;
  ib->tail = d;
  pthread_mutex_unlock(&ib->mu);
  uv_async_send(&ib->async);
}

/* References the async handle while work is in flight (thread.h). */
void aio_inbox_hold(aio_inbox *ib, int delta) {
  int before = ib->holds;
  ib->holds += delta;
  if (before == 0 && ib->holds > 0) uv_ref((uv_handle_t *)&ib->async);
  else if (before > 0 && ib->holds == 0) uv_unref((uv_handle_t *)&ib->async);
}

/* Takes every delivery that mine(d, ud) accepts out of the inbox, in order, and returns them
** as a list linked by `next` (thread.h). */
aio_delivery *aio_inbox_take(aio_inbox *ib, int (*mine)(aio_delivery *d, void *ud), void *ud) {
  aio_delivery *taken = NULL, **mt = &taken, *prev = NULL;
  pthread_mutex_lock(&ib->mu);
  for (aio_delivery **pp = &ib->head; *pp;) {
    aio_delivery *d = *pp;
    if (mine(d, ud)) {
      *pp = d->next;
      d->next = NULL;
      *mt = d;
      mt = &d->next;
    } else {
      prev = d;
      pp = &d->next;
    }
  }
  ib->tail = prev;
  pthread_mutex_unlock(&ib->mu);
  return taken;
}

/*
** channel.c — thread.channel: a FIFO of encoded messages, bounded or not, shared by reference
** between the loop's state and worker threads (like shared.c's cells and mutexes: an atomic
** reference count, one box per Lua state, the codec moving references).
**
** Workers block on a condition variable, in 10 ms steps that look at the job's cancel flag.
** The loop's state never blocks: a receiver on an empty channel (or a sender on a full one)
** parks a waiter, a future it awaits, in the channel's queue for its kind, with a timer on the
** loop's heap when the call has a timeout. Whatever changes
** the channel serves the parked waiters: on the loop at once, from a worker by posting a
** notification to the loop's inbox. Each kind is served in FIFO order and never queues behind
** the other (a sender waiting for room must not hold up the receiver that makes it).
**
** No wake-up is lost: a loop-side call checks the channel and links its waiter in one critical
** section (mu), and every change made under mu while a waiter is linked either serves at once
** (on the loop) or posts a notification (a worker). A waiter is handed its message (or room)
** and settled in one step on the loop thread, where it is also unlinked when cancelled or
** timed out: a cancelled waiter never takes an item, and never leaves one behind unsent. A
** receiver is handed its message still encoded (a held message, decoded when its task runs):
** if the task was cancelled in between, the message goes back to the front of the channel
** (in send order among those given back) and the recv raises the cancellation (the give-back
** rule, docs/aio.md). So a closed channel tells its receivers "closed" only once it is empty
** and no message handed out is still held (one could come back). A sender's message
** went into the channel when it was served, where others may already have taken it: its
** send returns true and the cancellation is raised at the task's next await.
**
** A forked child has a copy of the channel, with the parent's parked waiters in it: their
** tasks are the parent's, and the child forgets them (chan_lock).
*/
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include "aio.h"
#include "codec.h"
#include "thread.h"

#define CHANNEL_MT "aio.thread.channel"

typedef struct msg {
  struct msg *next;
  uint64_t seq;        /* its place in the order of sends (a given-back message keeps it) */
  struct chan *holder; /* while handed to a loop receiver that has not taken it: its channel */
  int gen;             /* then the fork generation it was handed in */
  aio_buf b;
} msg;

typedef struct waiter waiter;

/* A FIFO of parked loop-side waiters, doubly linked so that a cancelled one leaves in O(1). */
typedef struct wqueue {
  waiter *head, *tail;
} wqueue;

/* A future parked by the loop's state. The coroutine awaiting it keeps the channel's box, and
** so the channel, alive. */
struct waiter {
  waiter *next, *prev;
  wqueue *q;           /* the queue it is parked in: its channel's recvq or sendq */
  struct chan *ch;
  aio_inbox *ib;       /* the loop's inbox, held (aio_inbox_hold) while the waiter lives */
  aio_future *fut;
  int ref;
  msg *m;              /* a sender's message, waiting for room */
  int gen;             /* the fork generation of the loop that parked it (aio_fork_gen) */
  aio_timed timeout;   /* on the loop's heap while the call's timeout runs */
};

typedef struct chan {
  int refs;
  pthread_mutex_t mu;
  pthread_cond_t cv;        /* workers' waits: broadcast on every change */
  msg *head, *tail;
  int count, cap;           /* cap 0: unbounded */
  uint64_t seq;             /* the next message's seq */
  int closed;
  int held;                 /* messages handed to loop receivers that have not taken them */
  /* the loop side, guarded by mu (and touched by the loop thread only, but for ib/notify) */
  wqueue recvq, sendq;
  aio_inbox *ib;            /* where workers post `notify` while waiters are parked */
  int notify_posted;
  aio_delivery notify;
  int gen;                  /* the fork generation the loop-side fields belong to */
} chan;

static int open_chan_mt(lua_State *L);
static void chan_serve(lua_State *L, chan *c);

static void chan_retain(void *o) { aio_refs_retain(&((chan *)o)->refs); }

/* Frees a message that will not be delivered (dropping the references it carries). */
static void free_msg(msg *m) {
  aio_codec_discard(m->b.data, m->b.len);
  aio_buf_free(&m->b);
  free(m);
}

/* Frees the waiters of q still parked when the channel's last reference goes. That happens only
** as their state closes (a parked task keeps the channel's box alive) and no task runs again:
** their futures forget them, and nothing else (Lua, the loop) is touched. */
static void drop_parked(wqueue *q) {
  for (waiter *w = q->head, *n; w; w = n) {
    n = w->next;
    if (w->fut) w->fut->on_cancel = NULL;
    if (w->m) free_msg(w->m);
    free(w);
  }
}

/* Drops a reference to a channel; frees it, its messages and its parked waiters with the last. */
static void chan_release(void *o) {
  chan *c = (chan *)o;
  if (!aio_refs_release(&c->refs)) return;
  for (msg *m = c->head, *n; m; m = n) {
    n = m->next;
    free_msg(m);
  }
  if (c->gen == aio_fork_gen()) {  /* else a forked child's copy of the parent's (chan_lock) */
    drop_parked(&c->recvq);
    drop_parked(&c->sendq);
  }
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

static void chan_push(lua_State *L, void *o) { aio_share_push_box(L, o, CHANNEL_MT, open_chan_mt); }
static const aio_share_class chan_class = {CHANNEL_MT, 0, chan_retain, chan_release, chan_push,
                                         NULL, NULL};

/* ---- the message queue (mu held) ------------------------------------------------------- */

/* Locks the channel. In a forked child, first forgets the loop-side state copied from the
** parent: its parked waiters (serving one would hand a message to a parent's task, and run
** that task in the child) and its notification, posted to an inbox nobody reads here. */
static void chan_lock(chan *c) {
  pthread_mutex_lock(&c->mu);
  int gen = aio_fork_gen();
  if (c->gen == gen) return;
  c->gen = gen;
  c->recvq.head = c->recvq.tail = c->sendq.head = c->sendq.tail = NULL;
  c->ib = NULL;
  c->notify_posted = 0;
  c->held = 0;
}

/* True if a bounded channel has no room. */
static int chan_full(chan *c) { return c->cap && c->count >= c->cap; }

/* True if the loop has parked waiters. */
static int loop_waiting(chan *c) { return c->recvq.head || c->sendq.head; }

/* Wakes the workers; a worker's change also wakes the loop if it has parked waiters. The
** loop's own calls serve those at once instead: a notification posted then was never needed,
** and one still queued at exit held its channel for ever. */
static void chan_changed(chan *c, int from_worker) {
  pthread_cond_broadcast(&c->cv);
  if (from_worker && loop_waiting(c) && !c->notify_posted) {
    c->notify_posted = 1;
    chan_retain(c);  /* the delivery holds the channel */
    aio_inbox_post(c->ib, &c->notify);
  }
}

/* Appends a message. */
static void chan_append(chan *c, msg *m) {
  m->next = NULL;
  m->seq = c->seq++;
  if (c->tail) c->tail->next = m;
  else c->head = m;
  c->tail = m;
  c->count++;
}

/* Removes the oldest message, or returns NULL. */
static msg *chan_take(chan *c) {
  msg *m = c->head;
  if (m) {
    c->head = m->next;
    if (!c->head) c->tail = NULL;
    c->count--;
  }
  return m;
}

/* Encodes the value at idx into a new message (raises on a value that cannot cross). */
static msg *msg_new(lua_State *L, int idx) {
  aio_buf b = {0};
  aio_codec_encode(L, idx, 1, &b, "value", AIO_CODEC_THREAD);  /* may raise: nothing made yet */
  msg *m = calloc(1, sizeof *m);
  if (!m) {
    aio_codec_discard(b.data, b.len);
    aio_buf_free(&b);
    luaL_error(L, "out of memory");
  }
  m->b = b;
  return m;
}

/* Pushes the decoded message and frees it. */
static void push_msg(lua_State *L, msg *m) {
  aio_buf b = m->b;
  free(m);
  if (aio_codec_decode_owned(L, &b) == 0) lua_pushnil(L);
}

/* ---- loop-side waiters ------------------------------------------------------------------ */

/* Appends w to the queue it belongs to (mu held). */
static void wq_push(waiter *w) {
  wqueue *q = w->q;
  w->next = NULL;
  w->prev = q->tail;
  if (q->tail) q->tail->next = w;
  else q->head = w;
  q->tail = w;
}

/* Unlinks w from its queue (mu held). */
static void wq_unlink(waiter *w) {
  wqueue *q = w->q;
  if (w->prev) w->prev->next = w->next;
  else q->head = w->next;
  if (w->next) w->next->prev = w->prev;
  else q->tail = w->prev;
  w->next = w->prev = NULL;
}

/* Frees a waiter that is not (or no longer) linked, and its message if it still has one. */
static void free_waiter(lua_State *L, waiter *w) {
  aio_timed_stop(aio_loop_get(L), &w->timeout);
  if (w->m) free_msg(w->m);
  if (w->fut) w->fut->on_cancel = NULL;
  aio_unref(L, w->ref);
  aio_inbox_hold(w->ib, -1);
  free(w);
}

/* Takes a parked waiter out of its queue before it was served (loop thread). */
static void waiter_unlink(waiter *w) {
  chan_lock(w->ch);
  if (w->gen == w->ch->gen) wq_unlink(w);  /* else a parent's waiter this child forgot */
  pthread_mutex_unlock(&w->ch->mu);
}

/* on_cancel of a parked future: unlink the waiter; a sender's message is dropped unsent. */
static void waiter_on_cancel(lua_State *L, aio_future *f, void *ud) {
  waiter *w = (waiter *)ud;
  (void)f;
  waiter_unlink(w);
  w->fut = NULL;
  free_waiter(L, w);
}

/* Heap callback: the call's timeout passed before the waiter was served; it returns nil,
** "timeout" (a sender's message is dropped unsent). */
static void waiter_timed_out(aio_loop *loop, aio_timed *t) {
  waiter *w = (waiter *)((char *)t - offsetof(waiter, timeout));
  lua_State *L = loop->L;
  waiter_unlink(w);
  lua_pushnil(L);
  lua_pushliteral(L, "timeout");
  aio_future_resolve(L, w->fut, 2);
  free_waiter(L, w);
}

/* Protected: pushes the loop's inbox (made on first use, which may raise). */
static int inbox_get_p(lua_State *L) {
  lua_pushlightuserdata(L, aio_inbox_get(L));
  return 1;
}

/* Makes a waiter for queue q, not yet linked, and pushes its future. Never raises (outside mu):
** NULL when out of memory, so that the caller frees its message m first. */
static waiter *waiter_new(lua_State *L, chan *c, wqueue *q, msg *m) {
  lua_pushcfunction(L, inbox_get_p);
  int ok = lua_pcall(L, 0, 1, 0) == LUA_OK;
  aio_inbox *ib = ok ? (aio_inbox *)lua_touserdata(L, -1) : NULL;
  lua_pop(L, 1);
  if (!ib) return NULL;
  waiter *w = aio_waiter_alloc(L, sizeof *w, offsetof(waiter, fut), offsetof(waiter, ref),
                               waiter_on_cancel, NULL);
  if (!w) return NULL;
  w->q = q;
  w->ch = c;
  w->m = m;
  w->gen = aio_fork_gen();
  w->timeout.heap_idx = -1;
  w->timeout.fire = waiter_timed_out;
  w->ib = ib;
  aio_inbox_hold(w->ib, +1);
  return w;
}

/* Links w (mu held), noting the inbox of the loop that parks it for the workers' notices (the
** first waiter, or the first since a fork: a child's loop has an inbox of its own). */
static void waiter_link(chan *c, waiter *w) {
  if (c->ib != w->ib) {
    c->ib = w->ib;
    c->notify_posted = 0;
  }
  wq_push(w);
}

/* True if a closed channel has nothing more for its receivers (mu held): no message, and none
** held by a receiver that may still give it back. */
static int chan_drained(chan *c) { return c->closed && c->count == 0 && c->held == 0; }

/* True if a loop-side recv must wait (mu held): no message yet, or earlier receivers first. */
static int recv_must_wait(chan *c) { return c->recvq.head || (c->count == 0 && !chan_drained(c)); }

/* True if a loop-side send must wait (mu held): no room yet, or earlier senders first. */
static int send_must_wait(chan *c) { return !c->closed && (c->sendq.head || chan_full(c)); }

/* For a loop-side call that may wait (a recv, or a send of m): locks the channel and, if the
** call must wait, links a waiter in the same critical section as the check that says so. The
** waiter is made outside the lock (it allocates; out of memory raises) when a first check says
** it is needed, and a second check decides. Returns the linked waiter (mu released, its future on the stack,
** m its own), or NULL with mu held and m still the caller's: go ahead at once. */
static waiter *park_or_lock(lua_State *L, chan *c, wqueue *q, msg *m) {
  int (*must_wait)(chan *) = q == &c->sendq ? send_must_wait : recv_must_wait;
  waiter *w = NULL;
  chan_lock(c);
  while (must_wait(c)) {
    if (w) {
      waiter_link(c, w);
      pthread_mutex_unlock(&c->mu);
      return w;
    }
    pthread_mutex_unlock(&c->mu);
    w = waiter_new(L, c, q, m);
    if (!w) {
      if (m) free_msg(m);
      luaL_error(L, "out of memory");
    }
    chan_lock(c);
  }
  if (w) {  /* the channel changed in between: no wait after all */
    w->m = NULL;
    free_waiter(L, w);
    lua_pop(L, 1);
  }
  return NULL;
}

/* Takes the next parked waiter the channel lets go on (mu held), or NULL: a receiver (first)
** with the oldest message (*m; NULL once closed and drained), else a sender, whose message
** goes in (unless the channel is closed). */
static waiter *next_served(chan *c, msg **m) {
  waiter *w = c->recvq.head;
  int changed = 0;
  *m = NULL;
  if (w && (c->count > 0 || chan_drained(c))) {
    *m = chan_take(c);
    changed = *m != NULL;
    if (*m) {  /* held until the receiver takes it (recv_k) or gives it back */
      c->held++;
      (*m)->holder = c;
      (*m)->gen = c->gen;
      chan_retain(c);
    }
  } else if ((w = c->sendq.head) && (c->closed || !chan_full(c))) {
    if (!c->closed) {
      chan_append(c, w->m);
      w->m = NULL;
      changed = 1;
    }
  } else {
    return NULL;
  }
  wq_unlink(w);
  if (changed) pthread_cond_broadcast(&c->cv);  /* room, or a message, for waiting workers */
  return w;
}

/* A message handed to a loop receiver is no longer held (taken, given back, or dropped): once
** nothing is held, a closed and empty channel tells its waiting receivers so (served here when
** L is the loop's state; L NULL: from a finalizer, workers only). Drops the holder's reference
** to the channel. With `back`, the message goes back to the channel's front first (mu held
** for both: no receiver is told "closed" in between). */
static void msg_unhold(lua_State *L, msg *m, void (*back)(chan *c, msg *m)) {
  chan *c = m->holder;
  m->holder = NULL;
  chan_lock(c);
  if (m->gen == c->gen) c->held--;  /* else handed in a parent: this child forgot it */
  if (back) back(c, m);
  if (back || chan_drained(c)) chan_changed(c, 0);  /* the loop's own call: it serves below */
  int serve_here = L && c->recvq.head && (c->count > 0 || chan_drained(c));
  pthread_mutex_unlock(&c->mu);
  if (serve_here) chan_serve(L, c);
  chan_release(c);
}

/* Drops a message a served receiver never took (aio_future_resolve_held). */
static void drop_msg(void *m) {
  msg_unhold(NULL, (msg *)m, NULL);
  free_msg((msg *)m);
}

/* Settles a served waiter's future and frees the waiter: a sender gets true (or the closed
** channel's error), a receiver its message (or its decoding error), or nil, "closed". */
static void settle_waiter(lua_State *L, waiter *w, msg *m, int closed) {
  if (w->q == &w->ch->sendq) {
    if (closed) {
      lua_pushliteral(L, "send on a closed channel");
      aio_future_reject(L, w->fut);
    } else {
      lua_pushboolean(L, 1);
      aio_future_resolve(L, w->fut, 1);
    }
  } else if (m) {  /* decoded by the receiver when its task runs (recv_k) */
    aio_future_resolve_held(L, w->fut, m, drop_msg);
  } else {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    aio_future_resolve(L, w->fut, 2);
  }
  free_waiter(L, w);
}

/* Serves the loop's parked waiters as far as the channel allows (loop thread). */
static void chan_serve(lua_State *L, chan *c) {
  for (;;) {
    msg *m;
    chan_lock(c);
    waiter *w = next_served(c, &m);
    int closed = c->closed;
    pthread_mutex_unlock(&c->mu);
    if (!w) return;
    settle_waiter(L, w, m, closed);
  }
}

/* Inbox delivery: a worker changed a channel the loop waits on. */
static void chan_notified(lua_State *L, aio_delivery *d) {
  chan *c = (chan *)((char *)d - offsetof(chan, notify));
  chan_lock(c);
  c->notify_posted = 0;
  pthread_mutex_unlock(&c->mu);
  chan_serve(L, c);
  chan_release(c);
}

/* Inbox drop: the state closed with the notification undelivered; it held the channel. */
static void chan_notify_dropped(aio_delivery *d) {
  chan_release((char *)d - offsetof(chan, notify));
}

/* ---- worker-side waits ------------------------------------------------------------------- */

/* True if a is earlier than b. */
static int ts_before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* A worker's wait on the channel (mu held): at most 10 ms, so that a cancelled job notices.
** Returns 1 once the overall deadline dl (NULL: none) has passed. */
static int chan_wait(chan *c, const struct timespec *dl) {
  struct timespec step = aio_deadline_in(0.01);
  if (dl && ts_before(dl, &step)) step = *dl;
  pthread_cond_timedwait(&c->cv, &c->mu, &step);
  if (!dl) return 0;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return !ts_before(&now, dl);
}

/* Waits in a worker (mu held) while ready(c) is false, at most `timeout` seconds (< 0: for
** ever). Returns 0, or 1 when the job was cancelled (mu still held). */
static int worker_wait(lua_State *L, chan *c, int (*ready)(chan *), double timeout) {
  struct timespec dl;
  if (timeout >= 0) dl = aio_deadline_in(timeout);
  while (!ready(c)) {
    int expired = chan_wait(c, timeout >= 0 ? &dl : NULL);
    if (aio_worker_cancelled(L)) return 1;
    if (expired) return 0;
  }
  return 0;
}

/* What a worker's send and recv wait for (mu held). */
static int has_room(chan *c) { return c->closed || !chan_full(c); }
static int has_message(chan *c) { return c->count > 0 || chan_drained(c); }

/* Readies the channel for a send of m (q: its sendq) or a recv (q: its recvq). On the loop
** (unless timeout is 0: a poll) that may park a waiter, timed when timeout > 0, which is
** returned (mu released; the caller awaits its future). Otherwise returns NULL with mu held,
** after a worker's wait for room or a message (at most `timeout` seconds; the caller looks
** again). A cancelled job's wait raises (m freed). */
static waiter *chan_enter(lua_State *L, chan *c, wqueue *q, msg *m, double timeout) {
  int inworker = aio_worker_of(L) != NULL;
  if (!inworker && timeout != 0) {
    waiter *w = park_or_lock(L, c, q, m);
    uint64_t ns = w && timeout > 0 ? aio_duration_ns(L, 0, timeout) : AIO_NEVER;
    if (ns != AIO_NEVER) aio_timed_start(aio_loop_get(L), &w->timeout, ns);
    return w;
  }
  chan_lock(c);
  if (inworker && worker_wait(L, c, q == &c->sendq ? has_room : has_message, timeout)) {
    pthread_mutex_unlock(&c->mu);
    if (m) free_msg(m);
    aio_worker_raise_cancel(L);
  }
  return NULL;
}

/* ---- the methods -------------------------------------------------------------------------- */

/* ch:send(value [, timeout]) -> true | nil, "timeout". A worker blocks while the channel is
** full; the loop's state awaits instead (timeout 0 polls without waiting, as recv's does). */
static int chan_send(lua_State *L) {
  chan *c = (chan *)aio_share_check(L, 1, CHANNEL_MT);
  double timeout = luaL_optnumber(L, 3, -1);
  lua_settop(L, 2);
  msg *m = msg_new(L, 2);
  if (chan_enter(L, c, &c->sendq, m, timeout)) return aio_await_own(L, lua_gettop(L));
  if (c->closed || chan_full(c)) {
    int closed = c->closed;
    pthread_mutex_unlock(&c->mu);
    free_msg(m);
    if (closed) return luaL_error(L, "send on a closed channel");
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  int inworker = aio_worker_of(L) != NULL;
  chan_append(c, m);
  chan_changed(c, inworker);
  int serve_here = !inworker && c->recvq.head;
  pthread_mutex_unlock(&c->mu);
  if (serve_here) chan_serve(L, c);
  lua_pushboolean(L, 1);
  return 1;
}

/* Puts a message a receiver was handed back (its task was cancelled before it ran) in front
** of the channel (mu held), behind the ones given back that were sent before it (receivers
** run, and give back, in any order), even if that makes a bounded channel hold more than its
** capacity for a while (senders wait until it is below again). */
static void chan_put_front(chan *c, msg *m) {
  msg **at = &c->head;
  while (*at && (*at)->seq < m->seq) at = &(*at)->next;
  m->next = *at;
  *at = m;
  if (!m->next) c->tail = m;
  c->count++;
}

/* Continuation of a parked recv: decodes the message it was handed, or, when its task was
** cancelled after it was served (timed out and closed alike), gives the message back (the
** next receiver is served with it) and raises the cancellation. */
static int recv_k(lua_State *L, int status, lua_KContext base) {
  msg *m = lua_toboolean(L, (int)base + 1) ? (msg *)aio_held_take(L, (int)base + 2) : NULL;
  if (aio_take_cancel(L)) {
    if (m) msg_unhold(L, m, chan_put_front);
    return lua_error(L);
  }
  if (!m) return aio_await_k(L, status, base);
  msg_unhold(L, m, NULL);
  lua_settop(L, (int)base);
  push_msg(L, m);
  return 1;
}

/* ch:recv([timeout]) -> value | nil, "closed" | nil, "timeout". A worker blocks; the loop's
** state awaits (timeout 0 polls without waiting). */
static int chan_recv(lua_State *L) {
  chan *c = (chan *)aio_share_check(L, 1, CHANNEL_MT);
  double timeout = luaL_optnumber(L, 2, -1);
  if (chan_enter(L, c, &c->recvq, NULL, timeout)) return aio_await_own_k(L, lua_gettop(L), recv_k);
  msg *m = chan_take(c);
  int closed = chan_drained(c);
  int inworker = aio_worker_of(L) != NULL;
  if (m) chan_changed(c, inworker);
  int serve_here = m && !inworker && c->sendq.head;
  pthread_mutex_unlock(&c->mu);
  if (serve_here) chan_serve(L, c);
  if (!m) {
    lua_pushnil(L);
    lua_pushstring(L, closed ? "closed" : "timeout");
    return 2;
  }
  push_msg(L, m);
  return 1;
}

/* ch:close(): no more sends; receivers drain what is left, then get nil, "closed". */
static int chan_close(lua_State *L) {
  chan *c = (chan *)aio_share_check(L, 1, CHANNEL_MT);
  chan_lock(c);
  c->closed = 1;
  int inworker = aio_worker_of(L) != NULL;
  chan_changed(c, inworker);
  int serve_here = !inworker && loop_waiting(c);
  pthread_mutex_unlock(&c->mu);
  if (serve_here) chan_serve(L, c);
  return 0;
}

/* #ch -> messages waiting */
static int chan_len(lua_State *L) {
  chan *c = (chan *)aio_share_check(L, 1, CHANNEL_MT);
  chan_lock(c);
  lua_pushinteger(L, c->count);
  pthread_mutex_unlock(&c->mu);
  return 1;
}

static int chan_gc(lua_State *L) { return aio_share_box_gc(L, &chan_class); }

/* Makes the channels' metatable (left on the stack). */
static int open_chan_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"send", chan_send}, {"recv", chan_recv}, {"close", chan_close}, {"len", chan_len},
    {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", chan_gc}, {"__len", chan_len}, {NULL, NULL}};
  return aio_share_new_mt(L, &chan_class, methods, meta);
}

/* thread.channel([capacity]) -> channel */
static int l_channel(lua_State *L) {
  lua_Integer cap = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, cap >= 0 && cap <= 1 << 30, 1, "capacity out of range");
  chan *c = calloc(1, sizeof *c);
  if (!c) return luaL_error(L, "out of memory");
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  c->refs = 1;
  c->cap = (int)cap;
  c->notify.deliver = chan_notified;
  c->notify.drop = chan_notify_dropped;
  c->gen = aio_fork_gen();
  chan_push(L, c);
  return 1;
}

/* Adds channel to the module table on top of the stack (thread.h). */
void aio_channel_open(lua_State *L) {
  open_chan_mt(L);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_channel);
  lua_setfield(L, -2, "channel");
}

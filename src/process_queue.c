/*
** process_queue.c — process.queue: many producers, many consumers, whole messages.
**
** A SOCK_SEQPACKET socketpair shared by every process forked after it was made: the kernel
** keeps messages whole and hands each to one reader. Waiters park on uv_poll handles. A get
** served, then cancelled before its task ran, returns its message all the same (the
** cancellation comes at its next await): nothing puts a message back at the socket's front.
*/
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/socket.h>
#include "process_internal.h"

#define QUEUE_MT "aio.process.queue"
#define QUEUE_MSG_MAX (1 << 20)  /* requested SO_SNDBUF of a queue: its largest message */

/* ---- queues: many producers, many consumers, whole messages ------------------------------ */

typedef struct pqueue {
  int fd[2];             /* SOCK_SEQPACKET pair: put writes fd[0], get reads fd[1] */
  pid_t creator;
  uint32_t epoch;
  pid_t owner;
  lua_State *L;
  uv_poll_t *rpoll, *wpoll;
  proc_waiter *ghead, *gtail, *phead, *ptail;
  char *rbuf;
  size_t rcap;
  struct pqueue *next;
} pqueue;

static pqueue *queues = NULL;
static int open_queue_mt(lua_State *L);

/* Pushes a box for a queue. */
static void queue_push(lua_State *L, pqueue *q) { aio_share_push_box(L, q, QUEUE_MT, open_queue_mt); }

/* Codec: a queue crosses as its fds, creator pid and epoch. */
static void queue_pack(void *obj, aio_buf *b) {
  pqueue *q = (pqueue *)obj;
  aio_proc_pack_fdref(b, q->fd[0], q->fd[1], q->creator, q->epoch);
}

/* Codec: the receiving side of queue_pack; refuses queues that do not exist here. */
static void queue_unpack(lua_State *L, const char *p, size_t n) {
  fdref r = aio_proc_unpack_fdref(L, p, n, "queue", "process.queue");
  pqueue *q;
  for (q = queues; q; q = q->next)
    if (q->fd[0] == r.fd[0] && q->creator == (pid_t)r.creator && q->epoch == r.epoch) break;
  if (!q) {
    q = calloc(1, sizeof *q);
    if (!q) luaL_error(L, "out of memory");
    q->fd[0] = r.fd[0];
    q->fd[1] = r.fd[1];
    q->creator = (pid_t)r.creator;
    q->epoch = r.epoch;
    q->next = queues;
    queues = q;
  }
  queue_push(L, q);
}

static const aio_share_class queue_class = {QUEUE_MT, 1, aio_share_noop_ref, aio_share_noop_ref, aio_share_noop_push,
                                            queue_pack, queue_unpack};

/* Checks that idx is a queue. */
static pqueue *check_queue(lua_State *L, int idx) {
  aio_share_box *b = (aio_share_box *)luaL_checkudata(L, idx, QUEUE_MT);
  return (pqueue *)b->obj;
}

/* Gives the queue this process's poll handles and receive buffer. */
static void queue_attach(lua_State *L, pqueue *q) {
  if (q->owner == getpid() && q->rbuf) return;
  q->owner = getpid();
  q->L = aio_loop_get(L)->L;
  q->rpoll = q->wpoll = NULL;
  q->ghead = q->gtail = q->phead = q->ptail = NULL;
  int sz = 0;
  socklen_t sl = sizeof sz;
  if (getsockopt(q->fd[0], SOL_SOCKET, SO_SNDBUF, &sz, &sl) != 0 || sz <= 0) sz = 1 << 18;
  q->rcap = (size_t)sz;
  q->rbuf = malloc(q->rcap);
  if (!q->rbuf) luaL_error(L, "out of memory");
}

/* Tries to take one message: 1 got it (in out), 0 none now, -1 error (errno). */
static int queue_try_get(pqueue *q, aio_buf *out) {
  ssize_t n = recv(q->fd[1], q->rbuf, q->rcap, MSG_DONTWAIT);
  if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
  memset(out, 0, sizeof *out);
  aio_buf_add(out, q->rbuf, (size_t)n);
  if (!out->data) aio_buf_add(out, "", 0);
  return 1;
}

/* Tries to put one message: 1 sent, 0 no room now, -1 error (errno). */
static int queue_try_put(pqueue *q, aio_buf *m) {
  ssize_t n = send(q->fd[0], m->data, m->len, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
  return 1;
}

static void queue_poll_cb(uv_poll_t *h, int status, int events);

/* Starts a poll handle *h on fd for `events` if someone waits, or closes it if nobody does. */
static void queue_match_poll(pqueue *q, uv_loop_t *uv, uv_poll_t **h, int waiting, int fd,
                             int events) {
  if (waiting && !*h) {
    *h = malloc(sizeof **h);
    uv_poll_init(uv, *h, fd);
    (*h)->data = q;
    uv_poll_start(*h, events, queue_poll_cb);
  } else if (!waiting && *h) {
    uv_poll_stop(*h);
    uv_close((uv_handle_t *)*h, aio_free_handle);
    *h = NULL;
  }
}

/* Starts or stops the poll handles to match the parked waiters. */
static void queue_update_polls(pqueue *q, uv_loop_t *uv) {
  queue_match_poll(q, uv, &q->rpoll, q->ghead != NULL, q->fd[1], UV_READABLE);
  queue_match_poll(q, uv, &q->wpoll, q->phead != NULL, q->fd[0], UV_WRITABLE);
}

/* The queue is readable or writable: serve parked getters and putters. */
static void queue_poll_cb(uv_poll_t *h, int status, int events) {
  pqueue *q = (pqueue *)h->data;
  lua_State *L = q->L;
  uv_loop_t *uv = h->loop;
  (void)status;
  (void)events;
  while (q->ghead) {  /* serve getters while messages come */
    proc_waiter *w = q->ghead;
    if (w->fut->state != AIO_PENDING) {
      aio_proc_unlink(&q->ghead, &q->gtail, w->fut);
      aio_proc_waiter_free(L, w);
      continue;
    }
    aio_buf m;
    int r = queue_try_get(q, &m);
    if (r == 0) break;
    aio_proc_unlink(&q->ghead, &q->gtail, w->fut);
    if (r < 0) {
      lua_pushfstring(L, "process.queue get: %s", strerror(errno));
      aio_future_reject(L, w->fut);
    } else {
      aio_proc_resolve_msg(L, w->fut, &m);
    }
    aio_proc_waiter_free(L, w);
  }
  while (q->phead) {  /* and putters while there is room */
    proc_waiter *w = q->phead;
    if (w->fut->state != AIO_PENDING) {
      aio_proc_unlink(&q->phead, &q->ptail, w->fut);
      aio_proc_waiter_free(L, w);
      continue;
    }
    int r = queue_try_put(q, &w->msg);
    if (r == 0) break;
    aio_proc_unlink(&q->phead, &q->ptail, w->fut);
    if (r < 0) {
      lua_pushfstring(L, "process.queue put: %s", strerror(errno));
      aio_future_reject(L, w->fut);
    } else {
      lua_pushboolean(L, 1);
      aio_future_resolve(L, w->fut, 1);
    }
    aio_proc_waiter_free(L, w);
  }
  queue_update_polls(q, uv);
}

/* on_cancel of a parked get or put (its task was cancelled, e.g. by a timeout): forget the
** waiter (a put's message is not sent) and stop polling if nobody else waits, or the poll
** would keep the loop (and the program) alive. */
static void qwaiter_on_cancel(lua_State *L, aio_future *f, void *ud) {
  pqueue *q = (pqueue *)ud;
  proc_waiter *w = aio_proc_unlink(&q->ghead, &q->gtail, f);
  if (!w) w = aio_proc_unlink(&q->phead, &q->ptail, f);
  if (!w) return;
  aio_proc_waiter_free(L, w);
  queue_update_polls(q, aio_uv(L));
}

/* Parks a get (or a put of msg, which it takes) and awaits it. */
static int queue_park(lua_State *L, pqueue *q, int is_put, aio_buf *msg) {
  proc_waiter *w = is_put ? aio_proc_park(L, &q->phead, &q->ptail, qwaiter_on_cancel, q)
                          : aio_proc_park(L, &q->ghead, &q->gtail, qwaiter_on_cancel, q);
  if (!w) {
    if (msg) aio_buf_free(msg);
    return luaL_error(L, "out of memory");
  }
  if (msg) w->msg = *msg;
  queue_update_polls(q, aio_uv(L));
  return aio_await_own(L, lua_gettop(L));
}

/* Encodes the value at 2 as a queue message, refusing what does not fit in one datagram. */
static void queue_encode(lua_State *L, pqueue *q, aio_buf *m) {
  aio_codec_encode(L, 2, 1, m, "value", AIO_CODEC_PROCESS);
  if (m->len + 64 > q->rcap) {
    size_t n = m->len;
    aio_buf_free(m);
    luaL_error(L, "process.queue message too large (%d bytes encoded; at most about %d): "
                  "send large data through a process.pipe", (int)n, (int)q->rcap - 64);
  }
}

/* q:put(value) -> true (awaits room when the queue is full) */
static int queue_put(lua_State *L) {
  pqueue *q = check_queue(L, 1);
  luaL_checkany(L, 2);
  queue_attach(L, q);
  aio_buf m = {0};
  queue_encode(L, q, &m);
  if (!q->phead) {
    int r = queue_try_put(q, &m);
    if (r != 0) {
      aio_buf_free(&m);
      if (r < 0) return luaL_error(L, "process.queue put: %s", strerror(errno));
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  return queue_park(L, q, 1, &m);
}

/* q:put_nowait(value) -> true | nil, "full" */
static int queue_put_nowait(lua_State *L) {
  pqueue *q = check_queue(L, 1);
  luaL_checkany(L, 2);
  queue_attach(L, q);
  aio_buf m = {0};
  queue_encode(L, q, &m);
  int r = queue_try_put(q, &m);
  aio_buf_free(&m);
  if (r < 0) return luaL_error(L, "process.queue put: %s", strerror(errno));
  if (r == 0) { lua_pushnil(L); lua_pushliteral(L, "full"); return 2; }
  lua_pushboolean(L, 1);
  return 1;
}

/* q:get() -> value (awaits the next message from any producer) */
static int queue_get(lua_State *L) {
  pqueue *q = check_queue(L, 1);
  queue_attach(L, q);
  if (!q->ghead) {
    aio_buf m;
    int r = queue_try_get(q, &m);
    if (r < 0) return luaL_error(L, "process.queue get: %s", strerror(errno));
    if (r > 0) {
      lua_settop(L, 0);
      return aio_codec_decode_owned(L, &m);
    }
  }
  return queue_park(L, q, 0, NULL);
}

/* q:get_nowait() -> value | nil, "empty" */
static int queue_get_nowait(lua_State *L) {
  pqueue *q = check_queue(L, 1);
  queue_attach(L, q);
  aio_buf m;
  int r = queue_try_get(q, &m);
  if (r < 0) return luaL_error(L, "process.queue get: %s", strerror(errno));
  if (r == 0) { lua_pushnil(L); lua_pushliteral(L, "empty"); return 2; }
  lua_settop(L, 0);
  return aio_codec_decode_owned(L, &m);
}

/* __tostring of queues. */
static int queue_tostring(lua_State *L) {
  pqueue *q = check_queue(L, 1);
  lua_pushfstring(L, "<process.queue fds %d/%d>", q->fd[0], q->fd[1]);
  return 1;
}

/* Makes the queues' metatable (left on the stack). */
static int open_queue_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"put", queue_put}, {"put_nowait", queue_put_nowait}, {"get", queue_get},
    {"get_nowait", queue_get_nowait}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__tostring", queue_tostring}, {NULL, NULL}};
  return aio_share_new_mt(L, &queue_class, methods, meta);
}

/* process_c.queue() -> queue */
static int l_queue(lua_State *L) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return luaL_error(L, "process.queue: %s", strerror(errno));
  int sz = QUEUE_MSG_MAX;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  pqueue *q = calloc(1, sizeof *q);
  if (!q) return luaL_error(L, "out of memory");
  q->fd[0] = sv[0];
  q->fd[1] = sv[1];
  q->creator = getpid();
  q->epoch = aio_proc_next_epoch();
  q->next = queues;
  queues = q;
  queue_push(L, q);
  return 1;
}

/* Closes this process's copies of the queues `creator` made after `epoch` (a new pool
** worker's inheritance; process_internal.h). Queues are never closed, so their fds are open. */
void aio_process_queue_close_after(pid_t creator, uint32_t epoch) {
  for (pqueue *q = queues; q; q = q->next)
    if (q->creator == creator && q->epoch > epoch && q->fd[0] >= 0) {
      close(q->fd[0]);
      close(q->fd[1]);
      q->fd[0] = q->fd[1] = -1;
    }
}

/* 1 if fd is a descriptor of one of this process's queues (process_internal.h). */
int aio_process_queue_has_fd(int fd) {
  for (pqueue *q = queues; q; q = q->next)
    if (q->fd[0] == fd || q->fd[1] == fd) return 1;
  return 0;
}

/* Adds queue to the module table on top of the stack (process_internal.h). */
void aio_process_queue_open(lua_State *L) {
  open_queue_mt(L);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_queue);
  lua_setfield(L, -2, "queue");
}

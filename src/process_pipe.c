/*
** process_pipe.c — process.pipe: two connected duplex ends, framed and awaitable.
**
** Sends are queued through libuv (never blocking, so both sides may send large payloads at
** once); receives await whole frames. An end crosses the codec by value (fd, creator pid,
** epoch) and is usable in every process forked after it was made. A parked receiver is handed
** its frame still encoded; if its task was cancelled before it ran, the frame goes back in
** front of the end's buffered data, in the order the frames came among those given back (the
** give-back rule, docs/aio.md). The end of input is handed out only once no frame handed out
** is still held (one could come back).
*/
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/socket.h>
#include "process_internal.h"

#define PIPE_MT "aio.process.pipe"

/* ---- pipes: duplex, framed, awaitable ----------------------------------------------------- */

/* A frame taken from an end's buffer: held by the receiver it was handed to, or given back. */
typedef struct frame {
  struct frame *next;    /* in the end's list of frames given back */
  uint64_t seq;          /* its place in the order the frames came (kept when given back) */
  struct pend *end;      /* the end whose receiver holds it */
  pid_t owner;           /* the process that handed it (a forked child forgets the parent's) */
  aio_buf b;
} frame;

typedef struct pend {
  int fd;
  pid_t creator;
  uint32_t epoch;
  int refs;              /* boxes in this process */
  pid_t owner;           /* the process whose loop `h` belongs to */
  uv_pipe_t *h;
  lua_State *L;
  aio_buf rbuf;
  size_t rpos;
  frame *back;           /* frames given back, in seq order: they come before rbuf's */
  uint64_t seq;          /* the seq of the next frame taken from rbuf */
  proc_waiter *whead, *wtail;
  int held;              /* frames handed to receivers that have not taken them */
  int eof, closed, reading;
  struct pend *next;     /* this process's ends (so one fd has one struct here) */
} pend;

static pend *ends = NULL;

static int open_pipe_mt(lua_State *L);

/* This process's struct for a pipe end, if it has one. */
static pend *find_end(int fd, pid_t creator, uint32_t epoch) {
  for (pend *e = ends; e; e = e->next)
    if (e->fd == fd && e->creator == creator && e->epoch == epoch && !e->closed) return e;
  return NULL;
}

/* Pushes a box for a pipe end. */
static void push_end(lua_State *L, pend *e) {
  aio_share_push_box(L, e, PIPE_MT, open_pipe_mt);
  e->refs++;
}

/* Makes this process's struct for a pipe end. */
static pend *new_end(int fd, pid_t creator, uint32_t epoch) {
  pend *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->fd = fd;
  e->creator = creator;
  e->epoch = epoch;
  e->next = ends;
  ends = e;
  return e;
}

/* Codec: a pipe end crosses as its fd, creator pid and epoch. */
static void pipe_pack(void *obj, aio_buf *b) {
  pend *e = (pend *)obj;
  aio_proc_pack_fdref(b, e->fd, -1, e->creator, e->epoch);
}

/* Codec: the receiving side of pipe_pack; refuses ends that do not exist here. */
static void pipe_unpack(lua_State *L, const char *p, size_t n) {
  fdref r = aio_proc_unpack_fdref(L, p, n, "pipe", "process.pipe end");
  pend *e = find_end(r.fd[0], (pid_t)r.creator, r.epoch);
  if (!e) e = new_end(r.fd[0], (pid_t)r.creator, r.epoch);
  if (!e) luaL_error(L, "out of memory");
  push_end(L, e);
}

static const aio_share_class pipe_class = {PIPE_MT, 1, aio_share_noop_ref, aio_share_noop_ref, aio_share_noop_push,
                                           pipe_pack, pipe_unpack};

/* Checks that idx is an open pipe end. */
static pend *check_end(lua_State *L, int idx) {
  aio_share_box *b = (aio_share_box *)luaL_checkudata(L, idx, PIPE_MT);
  pend *e = (pend *)b->obj;
  if (!e || e->closed) luaL_error(L, "attempt to use a closed pipe end");
  return e;
}

static void end_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Makes sure the end has a handle on this process's loop (a forked child inherits the struct
** but not the parent's loop); drops what belonged to the parent. */
static void end_attach(lua_State *L, pend *e) {
  if (e->h && e->owner == getpid()) return;
  e->h = malloc(sizeof *e->h);
  if (!e->h) luaL_error(L, "out of memory");
  uv_pipe_init(aio_uv(L), e->h, 0);
  int rc = uv_pipe_open(e->h, e->fd);
  if (rc != 0) { free(e->h); e->h = NULL; luaL_error(L, "pipe: %s", uv_strerror(rc)); }
  e->h->data = e;
  e->owner = getpid();
  e->L = aio_loop_get(L)->L;
  e->rbuf.data = NULL;  /* the parent's buffer and waiters are not ours (CoW copies) */
  e->rbuf.len = e->rbuf.cap = 0;
  e->rpos = 0;
  e->back = NULL;
  e->held = 0;
  e->whead = e->wtail = NULL;
  e->reading = 0;
  e->eof = 0;
  uv_unref((uv_handle_t *)e->h);
}

/* Pops the next frame (a given-back one first, else a complete one from the buffer) into out
** and its seq into *seq, or returns 0. */
static int end_take_frame(pend *e, aio_buf *out, uint64_t *seq) {
  if (e->back) {
    frame *f = e->back;
    e->back = f->next;
    *out = f->b;
    *seq = f->seq;
    free(f);
    return 1;
  }
  size_t avail = e->rbuf.len - e->rpos;
  uint32_t len;
  if (avail < sizeof len) return 0;
  memcpy(&len, e->rbuf.data + e->rpos, sizeof len);
  if (avail < sizeof len + len) return 0;
  memset(out, 0, sizeof *out);
  aio_buf_add(out, e->rbuf.data + e->rpos + sizeof len, len);
  if (!out->data) aio_buf_add(out, "", 0);
  e->rpos += sizeof len + len;
  if (e->rpos == e->rbuf.len) e->rbuf.len = e->rpos = 0;
  *seq = e->seq++;
  return 1;
}

/* Stops reading when nobody waits: data stays in the kernel and the loop may end. */
static void end_idle(pend *e) {
  if (!e->whead && e->h && e->reading) {
    uv_read_stop((uv_stream_t *)e->h);
    uv_unref((uv_handle_t *)e->h);
    e->reading = 0;
  }
}

/* A frame handed to a receiver is no longer held (taken, given back or dropped): once none is,
** the end of input may be handed out (end_serve). */
static void end_unhold(frame *f) {
  if (f->owner == f->end->owner) f->end->held--;
}

/* Drops a frame a served receiver never took (aio_future_resolve_held). */
static void drop_frame(void *p) {
  end_unhold((frame *)p);
  aio_buf_free(&((frame *)p)->b);
  free(p);
}

/* Hands a parked receiver its frame, still encoded: end_recv_k decodes it when the task runs,
** or gives it back. Out of memory for the holder: decoded now, as before the give-back rule. */
static void end_hand_frame(lua_State *L, pend *e, aio_future *f, aio_buf *m, uint64_t seq) {
  frame *held = malloc(sizeof *held);
  if (!held) {
    aio_proc_resolve_msg(L, f, m);
    return;
  }
  held->b = *m;
  held->seq = seq;
  held->end = e;
  held->owner = e->owner;
  e->held++;
  aio_future_resolve_held(L, f, held, drop_frame);
}

/* Gives complete messages (or EOF) to parked receivers, in order. */
static void end_serve(pend *e) {
  lua_State *L = e->L;
  while (e->whead) {
    aio_buf m;
    uint64_t seq;
    proc_waiter *w = e->whead;
    if (w->fut->state == AIO_PENDING && end_take_frame(e, &m, &seq)) {
      aio_proc_unlink(&e->whead, &e->wtail, w->fut);
      end_hand_frame(L, e, w->fut, &m, seq);
    } else if (w->fut->state == AIO_PENDING && e->eof && !e->held) {
      aio_proc_unlink(&e->whead, &e->wtail, w->fut);
      lua_pushnil(L);
      lua_pushliteral(L, "closed");
      aio_future_resolve(L, w->fut, 2);
    } else if (w->fut->state == AIO_PENDING) {
      break;
    } else {  /* cancelled meanwhile */
      aio_proc_unlink(&e->whead, &e->wtail, w->fut);
    }
    aio_proc_waiter_free(L, w);
  }
  end_idle(e);
}

/* Puts a frame a receiver was handed back (its task was cancelled before it ran: the give-back
** rule) in front of the end's buffered data, behind the ones given back that came before it
** (receivers run, and give back, in any order), and serves the next receiver with it. */
static void end_give_back(pend *e, frame *m) {
  end_unhold(m);
  frame **at = &e->back;
  while (*at && (*at)->seq < m->seq) at = &(*at)->next;
  m->next = *at;
  *at = m;
  end_serve(e);
}

/* Data on a pipe end: buffer it and serve the receivers. */
static void end_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  pend *e = (pend *)s->data;
  if (nread > 0) aio_buf_add(&e->rbuf, buf->base, (size_t)nread);
  free(buf->base);
  if (nread < 0) {
    e->eof = 1;
    uv_read_stop(s);
    e->reading = 0;
  }
  end_serve(e);
}

/* end:send(value) -> true: queued without blocking (framed; any size). */
static int end_send(lua_State *L) {
  pend *e = check_end(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  end_attach(L, e);
  aio_buf b = {0};
  size_t at = aio_frame_begin(&b);
  aio_codec_encode(L, 2, 1, &b, "value", AIO_CODEC_PROCESS);
  aio_frame_end(&b, at);
  int rc = aio_stream_send((uv_stream_t *)e->h, &b);
  if (rc != 0) return luaL_error(L, "pipe send: %s", uv_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* on_cancel of a parked receive (its task was cancelled, e.g. by a timeout): forget the
** waiter, or the end would go on reading and keep the loop (and the program) alive. */
static void pwaiter_on_cancel(lua_State *L, aio_future *f, void *ud) {
  pend *e = (pend *)ud;
  proc_waiter *w = aio_proc_unlink(&e->whead, &e->wtail, f);
  if (!w) return;
  aio_proc_waiter_free(L, w);
  end_idle(e);
}

/* Continuation of a parked recv: decodes the frame it was handed, or, when its task was
** cancelled after it was served, gives the frame back (unless this end was closed meanwhile:
** nothing reads it here then) and raises the cancellation. */
static int end_recv_k(lua_State *L, int status, lua_KContext base) {
  frame *m = lua_toboolean(L, (int)base + 1) ? (frame *)aio_held_take(L, (int)base + 2) : NULL;
  if (aio_take_cancel(L)) {
    pend *e = (pend *)((aio_share_box *)lua_touserdata(L, 1))->obj;
    if (m && e && !e->closed) end_give_back(e, m);
    else if (m) drop_frame(m);
    return lua_error(L);
  }
  if (!m) return aio_await_k(L, status, base);
  end_unhold(m);
  if (m->end->eof && !m->end->held && !m->end->closed) end_serve(m->end);  /* "closed" now */
  aio_buf b = m->b;
  free(m);
  lua_settop(L, 0);
  return aio_codec_decode_owned(L, &b);
}

/* end:recv() -> value | nil, "closed" (awaits the next message) */
static int end_recv(lua_State *L) {
  pend *e = check_end(L, 1);
  end_attach(L, e);
  aio_buf m;
  uint64_t seq;
  if (!e->whead && end_take_frame(e, &m, &seq)) {
    lua_settop(L, 0);
    int n = aio_codec_decode_owned(L, &m);
    return n;
  }
  if (e->eof && !e->whead && !e->held) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  if (!aio_proc_park(L, &e->whead, &e->wtail, pwaiter_on_cancel, e))
    return luaL_error(L, "out of memory");
  if (!e->reading && !e->eof) {
    e->reading = 1;
    uv_ref((uv_handle_t *)e->h);
    uv_read_start((uv_stream_t *)e->h, aio_proc_alloc, end_read_cb);
  }
  return aio_await_own_k(L, lua_gettop(L), end_recv_k);
}

/* end:poll() -> true if a whole message is ready now (without waiting) */
static int end_poll(lua_State *L) {
  pend *e = check_end(L, 1);
  size_t avail = e->rbuf.len - e->rpos;
  uint32_t len = 0;
  if (avail >= sizeof len) memcpy(&len, e->rbuf.data + e->rpos, sizeof len);
  lua_pushboolean(L, e->back || (avail >= sizeof len && avail >= sizeof len + len));
  return 1;
}

/* Write callback of the empty write queued behind a closed end's last sends: close it now. */
static void end_flushed(uv_write_t *req, int status) {
  (void)status;
  uv_close((uv_handle_t *)req->handle, aio_free_handle);  /* closes the fd too */
  free(req);
}

/* Closes an end's handle once the sends queued on it are written (uv_close would cancel
** them: a send then close lost the message). Writes finish in order, so an empty write queued
** last tells when. Not shutdown(2): other processes may share the socket. */
static void end_close_handle(uv_stream_t *h) {
  static char none[1];
  uv_buf_t empty = uv_buf_init(none, 0);
  uv_write_t *req = NULL;
  if (uv_stream_get_write_queue_size(h) > 0 && (req = malloc(sizeof *req)) &&
      uv_write(req, h, &empty, 1, end_flushed) == 0)
    return;
  free(req);
  uv_close((uv_handle_t *)h, aio_free_handle);
}

/* end:close(): this process's end is closed (the peer's recv then gets nil, "closed"); sends
** already made are still delivered. */
static int end_close(lua_State *L) {
  aio_share_box *b = (aio_share_box *)luaL_checkudata(L, 1, PIPE_MT);
  pend *e = (pend *)b->obj;
  if (!e || e->closed) return 0;
  e->closed = 1;
  if (e->h && e->owner == getpid()) {
    e->eof = 1;
    end_serve(e);
    while (e->back) {  /* given back, and nobody can recv on a closed end */
      frame *f = e->back;
      e->back = f->next;
      drop_frame(f);
    }
    end_close_handle((uv_stream_t *)e->h);
    e->h = NULL;
  } else {
    close(e->fd);
  }
  return 0;
}

/* end:fileno() -> the descriptor. */
static int end_fileno(lua_State *L) {
  lua_pushinteger(L, check_end(L, 1)->fd);
  return 1;
}

/* __tostring of pipe ends. */
static int end_tostring(lua_State *L) {
  aio_share_box *b = (aio_share_box *)luaL_checkudata(L, 1, PIPE_MT);
  pend *e = (pend *)b->obj;
  lua_pushfstring(L, "<process.pipe end fd %d%s>", e ? e->fd : -1, e && e->closed ? " closed" : "");
  return 1;
}

/* Makes the pipe ends' metatable (left on the stack). */
static int open_pipe_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"send", end_send}, {"recv", end_recv}, {"poll", end_poll}, {"close", end_close},
    {"fileno", end_fileno}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__tostring", end_tostring}, {NULL, NULL}};
  return aio_share_new_mt(L, &pipe_class, methods, meta);
}

/* process_c.pipe() -> end1, end2: two connected duplex ends. */
static int l_pipe(lua_State *L) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return luaL_error(L, "process.pipe: %s", strerror(errno));
  pid_t me = getpid();
  pend *a = new_end(sv[0], me, aio_proc_next_epoch());
  pend *b = new_end(sv[1], me, aio_proc_next_epoch());
  if (!a || !b) return luaL_error(L, "out of memory");
  push_end(L, a);
  push_end(L, b);
  return 2;
}

/* Closes this process's copies of the open ends `creator` made after `epoch` (a new pool
** worker's inheritance; process_internal.h). Ends closed there are skipped: their numbers may
** have been reused. */
void aio_process_pipe_close_after(pid_t creator, uint32_t epoch) {
  for (pend *e = ends; e; e = e->next)
    if (e->creator == creator && e->epoch > epoch && !e->closed) {
      close(e->fd);
      e->closed = 1;
    }
}

/* 1 if fd is an open pipe end of this process (process_internal.h). */
int aio_process_pipe_has_fd(int fd) {
  for (pend *e = ends; e; e = e->next)
    if (e->fd == fd && !e->closed) return 1;
  return 0;
}

/* Adds pipe to the module table on top of the stack (process_internal.h). */
void aio_process_pipe_open(lua_State *L) {
  open_pipe_mt(L);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_pipe);
  lua_setfield(L, -2, "pipe");
}

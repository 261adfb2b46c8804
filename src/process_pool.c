/*
** process_pool.c — process.pool: persistent forked workers that take `fn, args...` jobs.
**
** Each worker starts a fresh Lua state (not a copy of the parent's) and runs jobs like a thread
** pool's worker, reading framed calls from its socketpair and writing framed outcomes back.
** A worker that dies (even by SIGKILL) fails only the job it was running and is replaced; a
** shared page where the worker notes each job it takes tells that job from ones it never
** started (requeued). A job cancelled after it was sent is skipped by the worker (a cancel
** frame follows it). A new worker keeps only what a job may need of what it inherits: it
** closes the parent's sockets, the other workers' streams and pipes made after its pool.
** The parent never blocks: it writes through libuv and reaps workers with waitpid(WNOHANG)
** polled from a timer once their stream reached EOF.
*/
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <lualib.h>
#include "process_internal.h"
#include "repl.h"

#define PPOOL_MT "aio.process.pool"
#define POOL_DEPTH 2            /* jobs in flight per pool worker (the second waits in its pipe) */

/* ---- process pools ----------------------------------------------------------------------- */

typedef struct ppool ppool;
typedef struct pworker pworker;

typedef struct pjob {
  struct pjob *next;
  ppool *pool;
  aio_buf msg;           /* fn, args... (encoded for a process boundary) */
  aio_future *fut;
  int futref;
  pworker *w;            /* worker it was sent to, NULL while queued */
  uint32_t seq;          /* its number in that worker's stream (1, 2, ...) */
  int dropped;           /* cancelled after it was sent: ignore its outcome */
} pjob;

/* What a worker tells its parent through shared memory (one page per worker), so the parent
** can tell a job the worker never started from one it died running. */
typedef struct wshared {
  uint32_t ready;        /* init done */
  uint32_t started;      /* number of the last job taken (jobs are numbered 1, 2, ... per worker) */
} wshared;

struct pworker {
  ppool *pool;
  wshared *sh;           /* NULL if it could not be mapped (then every sent job counts as started) */
  pid_t pid;
  int fd;
  uv_pipe_t *pipe;
  aio_buf rbuf;
  size_t rpos;
  pjob *ihead, *itail;   /* jobs sent, in order */
  int ninflight;
  uint32_t nsent;        /* jobs sent (numbers them for cancel frames) */
  int ndone;             /* jobs finished (maxtasksperchild) */
  int dead, retiring, killed_for_cancel;
  int reap_ticks;        /* reaper polls so far (2 ms apart) */
  uv_timer_t *reaper;
  int index;
  char name[48];
  pworker *next;
};

struct ppool {
  int size, maxtasks;
  int depth;             /* jobs in flight per worker (prefetch; default POOL_DEPTH) */
  pjob *qhead, *qtail;
  int nqueued;
  pworker *workers;      /* live and dying workers */
  int nworkers;          /* not yet reaped */
  int nspawned;
  int closing;
  aio_buf init;
  lua_State *L;
  uv_loop_t *uv;
  int refs;              /* the Lua box + jobs + worker handles */
  int inflight;          /* jobs not yet settled */
  int selfref;
  aio_future *closed;
  int closedref;
  int gone;              /* the Lua box was collected */
  uint32_t epoch;        /* fd epoch when made: what every worker inherits */
  char name[32];
  int fork_gen;          /* aio_fork_gen() of the process that made the pool */
};

typedef struct ppool_box { ppool *p; } ppool_box;

/* Drops a reference to a pool; frees it with the last one. */
static void ppool_release(ppool *p) {
  if (--p->refs > 0) return;
  aio_buf_free(&p->init);
  free(p);
}

static void pool_dispatch(ppool *p);
static void pool_check_closed(ppool *p);
static int pool_spawn(ppool *p);

/* ---- a worker's input: job frames, and cancel frames for jobs sent but not started ---- */

#define CANCEL_FRAME UINT32_MAX  /* a header meaning: skip the job numbered by the next uint32 */

typedef struct winput {
  int fd;
  aio_buf b;             /* bytes read; frames not yet taken start at pos */
  size_t pos;
  uint32_t njobs;        /* job frames taken (a job's number is its place in the stream) */
  uint32_t skip[64];     /* numbers of jobs cancelled before they started */
  int nskip;
} winput;

/* Reads what the stream holds (waiting for it if `wait`): 1 got bytes, 0 none now, -1 ended. */
static int win_fill(winput *in, int wait) {
  char tmp[65536];
  if (in->pos) {  /* drop what was taken */
    memmove(in->b.data, in->b.data + in->pos, in->b.len - in->pos);
    in->b.len -= in->pos;
    in->pos = 0;
  }
  ssize_t r = recv(in->fd, tmp, sizeof tmp, wait ? 0 : MSG_DONTWAIT);
  if (r > 0) { aio_buf_add(&in->b, tmp, (size_t)r); return 1; }
  if (r < 0 && errno == EINTR) return 1;
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  return -1;
}

/* The size of the complete frame at `at`, or 0 if it has not all arrived. */
static size_t win_frame(winput *in, size_t at, uint32_t *hdr) {
  size_t avail = in->b.len - at;
  if (avail < sizeof *hdr) return 0;
  memcpy(hdr, in->b.data + at, sizeof *hdr);
  size_t n = sizeof *hdr + (*hdr == CANCEL_FRAME ? sizeof(uint32_t) : *hdr);
  return avail >= n ? n : 0;
}

/* Records the cancel frames among the complete frames read so far (a cancel for the job about
** to start may have come behind it). */
static void win_scan_cancels(winput *in) {
  uint32_t hdr, seq;
  size_t n;
  for (size_t at = in->pos; (n = win_frame(in, at, &hdr)) > 0; at += n) {
    if (hdr != CANCEL_FRAME) continue;
    memcpy(&seq, in->b.data + at + sizeof hdr, sizeof seq);
    int known = seq < in->njobs;  /* that job started already: too late */
    for (int i = 0; i < in->nskip && !known; i++) known = in->skip[i] == seq;
    if (!known && in->nskip < (int)(sizeof in->skip / sizeof in->skip[0]))
      in->skip[in->nskip++] = seq;
  }
}

/* 1 if job seq was cancelled; forgets it and cancels that came too late for earlier jobs. */
static int win_take_skip(winput *in, uint32_t seq) {
  int found = 0;
  for (int i = 0; i < in->nskip;) {
    if (in->skip[i] <= seq) {
      found |= in->skip[i] == seq;
      in->skip[i] = in->skip[--in->nskip];
    } else {
      i++;
    }
  }
  return found;
}

/* Takes the next job (into job) and says whether it was cancelled; 0 once the stream ended. */
static int win_next_job(winput *in, aio_buf *job, int *skipped) {
  uint32_t hdr;
  size_t n;
  for (;;) {
    while ((n = win_frame(in, in->pos, &hdr)) == 0)
      if (win_fill(in, 1) < 0) return 0;
    if (hdr == CANCEL_FRAME) { win_scan_cancels(in); in->pos += n; continue; }
    aio_buf_add(job, in->b.data + in->pos + sizeof hdr, hdr);
    if (!job->data) aio_buf_add(job, "", 0);
    in->pos += n;
    uint32_t seq = ++in->njobs;
    while (win_fill(in, 0) > 0) {}
    win_scan_cancels(in);
    *skipped = win_take_skip(in, seq);
    return 1;
  }
}

/* The pool worker's life: fresh state, init, then jobs until its stream ends. */
static void pool_worker_main(ppool *p, pworker *me, int fd, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);
  signal(SIGINT, SIG_IGN);  /* Ctrl-C is for the parent, which ends its workers */
  /* First, before anything here opens a descriptor: the parent's sockets and the parent's ends
  ** of every other worker's stream (of this pool and of the others: a worker sees its stream
  ** end only when every copy of the parent's end is closed). */
  aio_proc_close_parent_handles(p->uv);
  aio_proc_inherit_upto(p->epoch);
  aio_proc_become(me->name);
  aio_proc_set_parent_stream(fd);
  aio_proc_forget_sends();
  lua_State *L = aio_newstate();
  if (!L) _exit(1);
  luaL_openlibs(L);
  aio_openlibs(L);
  aio_console_install(L);
  char *broken = NULL;
  if (p->init.len) {
    aio_buf init = {0};
    aio_buf_add(&init, p->init.data, p->init.len);
    lua_pushcfunction(L, aio_outcome_msgh);
    lua_pushcfunction(L, aio_outcome_call_p);
    lua_pushlightuserdata(L, &init);
    if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
      lua_rawgeti(L, -1, 1);
      const char *m = luaL_tolstring(L, -1, NULL);
      size_t n = strlen(m) + 64;
      broken = malloc(n);
      if (broken) snprintf(broken, n, "process pool init failed in %s: %s", me->name, m);
    }
    aio_buf_free(&init);
    lua_settop(L, 0);
  }
  if (me->sh) __atomic_store_n(&me->sh->ready, 1, __ATOMIC_RELEASE);
  winput input = {.fd = fd};
  for (;;) {
    aio_buf in = {0}, out = {0};
    int skipped = 0;
    if (!win_next_job(&input, &in, &skipped)) break;
    if (me->sh) __atomic_store_n(&me->sh->started, input.njobs, __ATOMIC_RELEASE);
    size_t at = aio_frame_begin(&out);
    if (broken || skipped) {  /* (the parent ignores a skipped job's answer) */
      lua_createtable(L, 2, 0);
      lua_pushstring(L, broken ? broken : "cancelled before it started");
      lua_rawseti(L, -2, 1);
      aio_outcome_encode_error(L, -1, &out);
      lua_settop(L, 0);
    } else {
      aio_outcome_run(L, &in, &out);
    }
    aio_frame_end(&out, at);
    aio_buf_free(&in);
    if (aio_proc_write_parent(out.data, out.len) < 0) break;
    aio_buf_free(&out);
    aio_proc_flush_sends(L);  /* after the answer: the parent may read the pipe only then */
  }
  fflush(NULL);
  _exit(0);
}

static void worker_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Forks one more worker; returns 0 or an errno. */
static int pool_spawn(ppool *p) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return errno;
  pworker *w = calloc(1, sizeof *w);
  if (!w) { close(sv[0]); close(sv[1]); return ENOMEM; }
  w->pool = p;
  w->sh = mmap(NULL, sizeof *w->sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (w->sh == MAP_FAILED) w->sh = NULL;
  w->index = ++p->nspawned;
  w->fd = sv[0];
  snprintf(w->name, sizeof w->name, "%s-%d", p->name, w->index);
  pid_t parent = getpid();
  pid_t pid = aio_proc_fork();
  if (pid < 0) {
    int e = errno;
    close(sv[0]);
    close(sv[1]);
    if (w->sh) munmap(w->sh, sizeof *w->sh);
    free(w);
    return e;
  }
  if (pid == 0) {
    close(sv[0]);
    w->fd = -1;
    pool_worker_main(p, w, sv[1], parent);
  }
  close(sv[1]);
  w->pid = pid;
  w->pipe = malloc(sizeof *w->pipe);
  uv_pipe_init(p->uv, w->pipe, 0);
  uv_pipe_open(w->pipe, sv[0]);
  w->pipe->data = w;
  uv_read_start((uv_stream_t *)w->pipe, aio_proc_alloc, worker_read_cb);
  uv_unref((uv_handle_t *)w->pipe);  /* idle workers do not keep the loop alive */
  w->next = p->workers;
  p->workers = w;
  p->nworkers++;
  p->refs++;  /* the worker (freed once reaped and its pipe closed) */
  return 0;
}

/* Frees a settled or dropped job. */
static void pjob_free(lua_State *L, pjob *j) {
  ppool *p = j->pool;
  if (j->fut) j->fut->on_cancel = NULL;
  aio_unref(L, j->futref);
  aio_buf_free(&j->msg);
  free(j);
  if (--p->inflight == 0 && p->selfref != LUA_NOREF) {
    aio_unref(L, p->selfref);
    p->selfref = LUA_NOREF;
  }
  ppool_release(p);
}

/* Frees a worker that is reaped and whose stream is closed; drops its reference to the pool. */
static void worker_free(pworker *w) {
  ppool *p = w->pool;
  aio_buf_free(&w->rbuf);
  if (w->sh) munmap(w->sh, sizeof *w->sh);
  free(w);
  ppool_release(p);
}

/* 1 if w had taken job j when it died (its number reached the shared page). */
static int worker_started(pworker *w, pjob *j) {
  return !w->sh || __atomic_load_n(&w->sh->started, __ATOMIC_ACQUIRE) >= j->seq;
}

/* Close callback of a worker's stream; frees the worker once it is also reaped. */
static void worker_pipe_closed(uv_handle_t *h) {
  pworker *w = (pworker *)h->data;
  free(h);
  w->pipe = NULL;
  if (!w->reaper) worker_free(w);  /* reaped already: the worker's memory can go */
}

/* Unlinks w from the pool's worker list. */
static void pool_unlink(ppool *p, pworker *w) {
  for (pworker **pp = &p->workers; *pp; pp = &(*pp)->next)
    if (*pp == w) { *pp = w->next; return; }
}

/* Puts j back at the head of the queue (a job that never started on a dead worker). */
static void pool_requeue_front(ppool *p, pjob *j) {
  j->w = NULL;
  j->next = p->qhead;
  p->qhead = j;
  if (!p->qtail) p->qtail = j;
  p->nqueued++;
}

/* Reaper timer of a worker: once reaped, fails or requeues its jobs and replaces it. */
static void worker_reap_tick(uv_timer_t *t) {
  pworker *w = (pworker *)t->data;
  ppool *p = w->pool;
  lua_State *L = p->L;
  int status = 0;
  pid_t r = waitpid(w->pid, &status, WNOHANG);
  if (r == 0) {
    /* A worker whose stream we closed exits at once; one that has not after 2 s is stuck
    ** (e.g. it forked while another thread held a lock it needs) and must not hang close. */
    if (++w->reap_ticks == 1000) kill(w->pid, SIGKILL);
    return;
  }
  uv_close((uv_handle_t *)t, aio_free_handle);
  w->reaper = NULL;
  p->nworkers--;
  /* 1. the job it was running fails (unless it was retired cleanly or killed to cancel it).
  ** A job it had not taken did not fail: it goes back to the queue with the others (the
  ** worker died idle, or after init, just as the job was sent). So does one it took after
  ** answering the job it was killed to cancel (the answer unread when the kill came). A
  ** worker that died in init fails the job: a replacement would die the same way. */
  pjob *head = w->ihead;
  int ready = !w->sh || __atomic_load_n(&w->sh->ready, __ATOMIC_ACQUIRE);
  if (head && ready && (!worker_started(w, head) || (w->killed_for_cancel && !head->dropped)))
    head = NULL;
  if (head) {
    w->ihead = head->next;
    if (!w->ihead) w->itail = NULL;
    w->ninflight--;
    if (!head->dropped && head->fut && head->fut->state == AIO_PENDING) {
      char why[96];
      aio_proc_describe_status(status, why, sizeof why);
      lua_pushfstring(L, "process pool worker %s (pid %d) died while running this job: %s",
                      w->name, (int)w->pid, why);
      aio_future_reject(L, head->fut);
      aio_future_watch_failure(L, head->fut, "a process pool job");
    }
    pjob_free(L, head);
  }
  /* 2. jobs sent after it never started: back to the front of the queue, in order */
  pjob *rest = w->ihead, *rev = NULL;
  w->ihead = w->itail = NULL;
  while (rest) { pjob *n = rest->next; rest->next = rev; rev = rest; rest = n; }
  while (rev) {
    pjob *n = rev->next;
    if (rev->dropped) pjob_free(L, rev);
    else pool_requeue_front(p, rev);
    rev = n;
  }
  w->ninflight = 0;
  pool_unlink(p, w);
  if (!w->pipe) worker_free(w);
  /* 3. a replacement, unless the pool is closing with nothing left to run (a closing pool
  ** still owes its queued jobs a worker: without one they and close() would wait forever) */
  int live = 0;
  for (pworker *x = p->workers; x; x = x->next) if (!x->dead && !x->retiring) live++;
  if ((!p->closing || p->qhead) && !p->gone && live < p->size) pool_spawn(p);
  pool_dispatch(p);
  pool_check_closed(p);
}

/* The worker's stream ended (it died or was retired): close it and start reaping. */
static void worker_gone(pworker *w) {
  if (w->dead) return;
  w->dead = 1;
  if (w->pipe) {
    uv_read_stop((uv_stream_t *)w->pipe);
    uv_close((uv_handle_t *)w->pipe, worker_pipe_closed);
  }
  w->fd = -1;
  w->reaper = malloc(sizeof *w->reaper);
  uv_timer_init(w->pool->uv, w->reaper);
  w->reaper->data = w;
  uv_timer_start(w->reaper, worker_reap_tick, 0, 2);
}

/* A worker's output and results: output frames are printed, the others settle its jobs in order. */
static void worker_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  pworker *w = (pworker *)s->data;
  ppool *p = w->pool;
  lua_State *L = p->L;
  if (nread > 0) aio_buf_add(&w->rbuf, buf->base, (size_t)nread);
  free(buf->base);
  if (nread < 0) { worker_gone(w); return; }
  for (;;) {  /* output frames are printed; every other frame settles the oldest job sent */
    size_t avail = w->rbuf.len - w->rpos, used;
    uint32_t len;
    if (aio_proc_output_frame(w->rbuf.data + w->rpos, avail, &used)) {
      if (!used) break;
      w->rpos += used;
      continue;
    }
    if (avail < sizeof len) break;
    memcpy(&len, w->rbuf.data + w->rpos, sizeof len);
    if (avail < sizeof len + len) break;
    const char *data = w->rbuf.data + w->rpos + sizeof len;
    w->rpos += sizeof len + len;
    pjob *j = w->ihead;
    if (!j) continue;  /* cannot happen: a worker answers only what it was sent */
    w->ihead = j->next;
    if (!w->ihead) w->itail = NULL;
    w->ninflight--;
    w->ndone++;
    if (!j->dropped && j->fut) {
      char who[96];
      snprintf(who, sizeof who, "%s pid %d", w->name, (int)w->pid);
      aio_outcome_settle(L, j->fut, data, len, who);
      aio_future_watch_failure(L, j->fut, "a process pool job");
    }
    pjob_free(L, j);
  }
  if (w->rpos == w->rbuf.len) w->rbuf.len = w->rpos = 0;
  if (w->ninflight == 0 && w->pipe) uv_unref((uv_handle_t *)w->pipe);
  if (p->maxtasks && w->ndone >= p->maxtasks && w->ninflight == 0 && !w->retiring) {
    w->retiring = 1;  /* closing its stream ends it; the reaper spawns the replacement */
    worker_gone(w);
  }
  pool_dispatch(p);
  pool_check_closed(p);
}

/* Sends queued jobs to workers with room (oldest job to the least busy worker). */
static void pool_dispatch(ppool *p) {
  while (p->qhead) {
    pworker *best = NULL;
    for (pworker *w = p->workers; w; w = w->next) {
      if (w->dead || w->retiring || w->ninflight >= p->depth) continue;
      if (p->maxtasks && w->ndone + w->ninflight >= p->maxtasks) continue;
      if (!best || w->ninflight < best->ninflight) best = w;
    }
    if (!best) return;
    pjob *j = p->qhead;
    p->qhead = j->next;
    if (!p->qhead) p->qtail = NULL;
    p->nqueued--;
    j->next = NULL;
    j->w = best;
    j->seq = ++best->nsent;
    if (best->itail) best->itail->next = j;
    else best->ihead = j;
    best->itail = j;
    best->ninflight++;
    aio_buf frame = {0};
    size_t at = aio_frame_begin(&frame);
    aio_buf_add(&frame, j->msg.data, j->msg.len);
    aio_frame_end(&frame, at);
    uv_ref((uv_handle_t *)best->pipe);
    if (aio_stream_send((uv_stream_t *)best->pipe, &frame) != 0) {
      /* the worker is gone (EPIPE) and this job never reached it: take it back */
      pjob **pp = &best->ihead;
      pjob *prev = NULL;
      while (*pp && *pp != j) { prev = *pp; pp = &(*pp)->next; }
      if (*pp) { *pp = NULL; best->itail = prev; best->ninflight--; }
      pool_requeue_front(p, j);
      worker_gone(best);
    }
  }
}

/* When closing and nothing is left to do: retire every worker; once all are reaped, settle
** the `closed` future. */
static void pool_check_closed(ppool *p) {
  if (!p->closing || p->qhead) return;
  int busy = 0;
  for (pworker *w = p->workers; w; w = w->next) {
    if (w->ninflight > 0) busy = 1;
  }
  if (busy) return;
  for (pworker *w = p->workers; w; w = w->next)
    if (!w->dead) { w->retiring = 1; worker_gone(w); }
  if (p->nworkers == 0 && p->closed) {
    lua_State *L = p->L;
    aio_future *f = p->closed;
    p->closed = NULL;
    aio_future_resolve(L, f, 0);
    aio_unref(L, p->closedref);
  }
}

/* on_cancel of a job's future: unqueue it, or kill the worker running it. */
static void pjob_on_cancel(lua_State *L, aio_future *f, void *ud) {
  pjob *j = (pjob *)ud;
  ppool *p = j->pool;
  (void)f;
  j->fut = NULL;  /* the core settles it as cancelled */
  if (!j->w) {
    pjob **pp = &p->qhead, *prev = NULL;
    while (*pp && *pp != j) { prev = *pp; pp = &(*pp)->next; }
    if (*pp) {
      *pp = j->next;
      if (p->qtail == j) p->qtail = prev;
      p->nqueued--;
    }
    pjob_free(L, j);
    return;
  }
  j->dropped = 1;
  if (j->w->dead) return;
  if (j->w->ihead == j) {  /* running: the only way to stop it is to end it */
    j->w->killed_for_cancel = 1;
    kill(j->w->pid, SIGKILL);
  } else {  /* sent, not started: the worker skips it (its answer is ignored) */
    uint32_t frame[2] = {CANCEL_FRAME, j->seq};
    aio_buf b = {0};
    aio_buf_add(&b, frame, sizeof frame);
    aio_stream_send((uv_stream_t *)j->w->pipe, &b);  /* fails only if the worker is gone */
  }
}

/* Checks that idx is an open process pool. */
static ppool *check_ppool(lua_State *L, int idx) {
  ppool_box *b = (ppool_box *)luaL_checkudata(L, idx, PPOOL_MT);
  if (!b->p) luaL_error(L, "attempt to use a closed process pool");
  return b->p;
}

/* process_c.pool(size, maxtasksperchild, init|nil, name|nil, prefetch|nil) -> pool */
static int l_ppool(lua_State *L) {
  aio_proc_check_fork_thread(L, "process.pool");
  int size = (int)luaL_optinteger(L, 1, 0);
  if (size <= 0) size = (int)uv_available_parallelism();
  if (size > 256) return luaL_argerror(L, 1, "at most 256 workers");
  int maxtasks = (int)luaL_optinteger(L, 2, 0);
  aio_buf init = {0};
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TFUNCTION);
    aio_codec_encode(L, 3, 1, &init, "init", AIO_CODEC_PROCESS);  /* may raise: nothing made yet */
  }
  ppool_box *b = (ppool_box *)lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  luaL_setmetatable(L, PPOOL_MT);
  int bidx = lua_gettop(L);
  ppool *p = calloc(1, sizeof *p);
  if (!p) { aio_buf_free(&init); return luaL_error(L, "out of memory"); }
  p->init = init;
  p->size = size;
  p->maxtasks = maxtasks;
  p->depth = (int)luaL_optinteger(L, 5, POOL_DEPTH);
  if (p->depth < 1) p->depth = 1;
  p->L = aio_loop_get(L)->L;
  p->uv = aio_uv(L);
  p->refs = 1;
  p->selfref = LUA_NOREF;
  p->closedref = LUA_NOREF;
  p->fork_gen = aio_fork_gen();
  p->epoch = aio_proc_epoch();
  snprintf(p->name, sizeof p->name, "%s", luaL_optstring(L, 4, "ForkPoolWorker"));
  b->p = p;
  for (int i = 0; i < size; i++) {
    int e = pool_spawn(p);
    if (e) return luaL_error(L, "process pool: cannot start a worker: %s", strerror(e));
  }
  lua_settop(L, bidx);
  return 1;
}

/* Checks that idx is an open process pool made by this process: a forked child has a copy of
** its parent's pools, whose workers and handles are not its own (closing them aborted it).
** The fork generation, not getpid(): a system call on every submit. */
static ppool *check_own_ppool(lua_State *L, int idx) {
  ppool *p = check_ppool(L, idx);
  if (p->fork_gen != aio_fork_gen())
    luaL_error(L, "this process pool belongs to the parent process");
  return p;
}

/* pool:submit(fn, ...) -> future */
static int ppool_submit(lua_State *L) {
  ppool *p = check_own_ppool(L, 1);
  if (p->closing) return luaL_error(L, "cannot submit to a closed process pool");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  aio_buf msg = {0};
  aio_codec_encode(L, 2, lua_gettop(L) - 1, &msg, "call", AIO_CODEC_PROCESS);
  pjob *j = calloc(1, sizeof *j);
  if (!j) { aio_buf_free(&msg); return luaL_error(L, "out of memory"); }
  j->msg = msg;
  j->pool = p;
  j->fut = aio_future_new_held(L, &j->futref, pjob_on_cancel, j);
  p->refs++;
  if (p->inflight++ == 0) p->selfref = aio_ref(L, 1);
  if (p->qtail) p->qtail->next = j;
  else p->qhead = j;
  p->qtail = j;
  p->nqueued++;
  pool_dispatch(p);
  return 1;
}

/* pool:_shutdown(cancel_pending, terminate) -> future settled once every worker is reaped */
static int ppool_shutdown(lua_State *L) {
  ppool *p = check_own_ppool(L, 1);
  int cancel_pending = lua_toboolean(L, 2), terminate = lua_toboolean(L, 3);
  p->closing = 1;
  if (!p->closed) {
    p->closed = aio_future_new(L);
    p->closedref = aio_ref(L, -1);
    lua_pop(L, 1);
  }
  int closedref = p->closedref;
  if (cancel_pending || terminate) {
    while (p->qhead) {
      pjob *j = p->qhead;
      p->qhead = j->next;
      if (!p->qhead) p->qtail = NULL;
      p->nqueued--;
      aio_future *f = j->fut;
      j->fut = NULL;
      if (f) { f->on_cancel = NULL; aio_future_cancel(L, f, "process pool closed"); }
      pjob_free(L, j);
    }
  }
  if (terminate) {
    for (pworker *w = p->workers; w; w = w->next) {
      for (pjob *j = w->ihead; j; j = j->next) {
        aio_future *f = j->fut;
        j->dropped = 1;
        if (f && f->state == AIO_PENDING) {
          f->on_cancel = NULL;
          j->fut = NULL;
          aio_future_cancel(L, f, "process pool terminated");
        }
      }
      if (!w->dead) kill(w->pid, SIGKILL);
    }
  }
  aio_pushref(L, closedref);
  pool_check_closed(p);
  return 1;
}

/* A collected pool's reaped worker: unlinked, its stream closed (which frees it). An idle
** worker's stream must be closed here: nothing else would, and its descriptor would leak. */
static void worker_discard(ppool *p, pworker *w) {
  w->dead = 1;
  p->nworkers--;
  pool_unlink(p, w);
  if (w->pipe && !uv_is_closing((uv_handle_t *)w->pipe)) {  /* (the loop may be closed) */
    uv_read_stop((uv_stream_t *)w->pipe);
    uv_close((uv_handle_t *)w->pipe, worker_pipe_closed);
  } else if (!w->pipe) {
    worker_free(w);
  }
}

/* Frees the jobs of the list that starts at j (a collected pool's: see ppool_gc). */
static void free_jobs(lua_State *L, pjob *j) {
  while (j) {
    pjob *next = j->next;
    pjob_free(L, j);
    j = next;
  }
}

/* __gc: end the workers now (SIGKILL) and reap them. A pool with jobs unsettled is collected
** only as its state closes (it is referenced until they are): no timer or stream callback will
** run again, so the jobs, queued or sent, are freed here, and so is a worker being reaped. */
static int ppool_gc(lua_State *L) {
  ppool_box *b = (ppool_box *)luaL_checkudata(L, 1, PPOOL_MT);
  ppool *p = b->p;
  if (!p) return 0;
  b->p = NULL;
  p->gone = 1;
  p->closing = 1;
  if (p->fork_gen == aio_fork_gen()) {
    pworker *next;
    free_jobs(L, p->qhead);
    p->qhead = p->qtail = NULL;
    p->nqueued = 0;
    for (pworker *w = p->workers; w; w = next) {
      next = w->next;
      free_jobs(L, w->ihead);
      w->ihead = w->itail = NULL;
      w->ninflight = 0;
      kill(w->pid, SIGKILL);
      waitpid(w->pid, NULL, 0);
      if (w->reaper && !uv_is_closing((uv_handle_t *)w->reaper))  /* (the loop may be closed) */
        uv_close((uv_handle_t *)w->reaper, aio_free_handle);
      w->reaper = NULL;
      worker_discard(p, w);
    }
  }
  ppool_release(p);
  return 0;
}

/* pool:size() -> number of workers. */
static int ppool_size(lua_State *L) {
  lua_pushinteger(L, check_ppool(L, 1)->size);
  return 1;
}

/* pool:name() -> the pool's name (its workers are name-1, name-2, ...). */
static int ppool_name(lua_State *L) {
  lua_pushstring(L, check_ppool(L, 1)->name);
  return 1;
}

/* pool:pids() -> list of the live workers' pids */
static int ppool_pids(lua_State *L) {
  ppool *p = check_ppool(L, 1);
  lua_newtable(L);
  int i = 0;
  for (pworker *w = p->workers; w; w = w->next)
    if (!w->dead) { lua_pushinteger(L, w->pid); lua_rawseti(L, -2, ++i); }
  return 1;
}

/* pool:stats() -> {size=, workers=, queued=, sent=} (sent: jobs at the workers, running or prefetched) */
static int ppool_stats(lua_State *L) {
  ppool *p = check_ppool(L, 1);
  int live = 0, busy = 0;
  for (pworker *w = p->workers; w; w = w->next) {
    if (!w->dead) live++;
    busy += w->ninflight;
  }
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, p->size); lua_setfield(L, -2, "size");
  lua_pushinteger(L, live); lua_setfield(L, -2, "workers");
  lua_pushinteger(L, p->nqueued); lua_setfield(L, -2, "queued");
  lua_pushinteger(L, busy); lua_setfield(L, -2, "sent");
  return 1;
}

/* Adds pool and pool_methods to the module table on top of the stack (process_internal.h). */
void aio_process_pool_open(lua_State *L) {
  static const luaL_Reg pool_methods[] = {
    {"submit", ppool_submit}, {"_shutdown", ppool_shutdown}, {"size", ppool_size},
    {"pids", ppool_pids}, {"stats", ppool_stats}, {"name", ppool_name}, {NULL, NULL}};
  if (luaL_newmetatable(L, PPOOL_MT)) {
    luaL_newlib(L, pool_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ppool_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "pool_methods");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_ppool);
  lua_setfield(L, -2, "pool");
}

/*
** process.c — forked processes: identity and lineage, framing, call outcomes, process.fork
** and its handles, and the aio.process_c module (process_pool.c, process_pipe.c,
** process_queue.c, shm.c and exec.c add the rest; process_internal.h is what they share).
**
** fork(fn) keeps the parent's Lua state in the child (copy-on-write: closures need no
** serialization); the child throws away the parent's loop (tasks, timers, handles), runs fn as
** a task on a fresh loop and sends its outcome back through the codec on a socketpair.
**
** Frames on every stream are a native-endian uint32 length and a codec message. The parent
** never blocks on a pipe: it writes through libuv (queued, so two sides sending large payloads
** at once cannot deadlock) and reads as data comes. Children are reaped with waitpid(WNOHANG)
** polled from a timer once their stream reached EOF: SIGCHLD stays as lua.c leaves it.
**
** While the REPL edits lines, a child's console output (aio.console) also travels on its stream
** to the parent, as output frames the parent prints above its prompt (aio_proc_console_route).
**
** Descriptors crossing the codec (pipe ends, queues) are described by value: fd numbers plus
** the pid that created them and a creation count (epoch). A process can use such a descriptor
** only if it created it or was forked from its creator after it existed: every child records
** (parent pid, epoch at fork) in its lineage, so a refusal can say exactly why.
*/
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <pthread.h>
#include "thread.h"
#include "repl.h"
#include "process_internal.h"

#define PROC_MT "aio.process.handle"

/* ---- identity, lineage, frames --------------------------------------------------------- */

static char proc_name[64] = "MainProcess";
static int nchildren = 0;      /* process.fork children made by this process (for names) */
typedef struct ancestor { pid_t pid; uint32_t epoch; } ancestor;
static ancestor lineage[32];
static int nlineage = 0;
static uint32_t fd_epoch = 0;  /* fd-backed objects created by this process */
static int pending_writes = 0; /* uv writes not yet completed (flushed before a child exits) */

const char *aio_process_name(void) { return proc_name; }

/* This process is now a child named `name` (its own children are numbered afresh). */
void aio_proc_become(const char *name) {
  snprintf(proc_name, sizeof proc_name, "%s", name);
  nchildren = 0;
}

/* The epoch of a new fd-backed object (pipe end, queue) made by this process. */
uint32_t aio_proc_next_epoch(void) { return ++fd_epoch; }

/* The epoch of the last fd-backed object made by this process. */
uint32_t aio_proc_epoch(void) { return fd_epoch; }

/* In a new pool worker: its parent's pipe ends and queues made after the pool (after `epoch`)
** are closed here and refused. A replacement worker is forked whenever one dies; without this
** it would hold copies of newer pipe ends (their peers would never see EOF while the pool
** lives) and take descriptors the pool's first workers refuse. */
void aio_proc_inherit_upto(uint32_t epoch) {
  if (nlineage == 0 || lineage[nlineage - 1].epoch <= epoch) return;
  pid_t parent = lineage[nlineage - 1].pid;
  aio_process_pipe_close_after(parent, epoch);
  aio_process_queue_close_after(parent, epoch);
  lineage[nlineage - 1].epoch = epoch;
}

static int parent_stream = -1;  /* this process's stream to its parent, if it has one */
static pthread_mutex_t parent_mu = PTHREAD_MUTEX_INITIALIZER;  /* one writer of parent_stream */
static uint32_t *console_page = NULL;  /* shared by the process tree: the console is active */
static uint32_t console_on = 0;        /* what the page says (kept here until it exists) */

/* Says whether the REPL's console is active, for every process of the tree (process.h). */
void aio_proc_console_shared(int on) {
  console_on = on != 0;
  if (console_page) __atomic_store_n(console_page, console_on, __ATOMIC_RELEASE);
}

/* Maps the shared console flag before the first fork, so every child sees it change: workers
** forked before the REPL started (by the script of `aioshell -i script.lua`) too. */
static void console_page_make(void) {
  if (console_page) return;
  void *m = mmap(NULL, sizeof *console_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
  if (m == MAP_FAILED) return;  /* then output is never routed: written as before */
  console_page = (uint32_t *)m;
  *console_page = console_on;
}

/* Records fd as this process's stream to its parent (a fork child's outcome stream, a pool
** worker's job stream): the processes it forks close their copy. */
void aio_proc_set_parent_stream(int fd) { parent_stream = fd; }

/* fork(2) that records the lineage in the child and flushes stdio first (or buffered output
** would be written twice). The child closes its copy of this process's stream to its own
** parent: the parent sees that stream end (this process died) only when every copy is closed,
** and a grandchild's copy delayed it until the grandchild exited. */
pid_t aio_proc_fork(void) {
  fflush(NULL);
  console_page_make();
  pid_t parent = getpid();
  uint32_t epoch = fd_epoch;
  pid_t pid = fork();
  if (pid == 0) pthread_mutex_init(&parent_mu, NULL);  /* a thread may have held it */
  if (pid == 0) aio_fd_table_reserve();  /* the child's table holds only what was open */
  if (pid == 0 && parent_stream >= 0) {
    close(parent_stream);
    parent_stream = -1;
  }
  if (pid == 0 && nlineage < (int)(sizeof lineage / sizeof lineage[0])) {
    lineage[nlineage].pid = parent;
    lineage[nlineage++].epoch = epoch;
  }
  return pid;
}

/* Non-zero if a descriptor made by `creator` as its epoch-th object exists in this process. */
static int fd_valid_here(pid_t creator, uint32_t epoch) {
  if (creator == getpid()) return 1;
  for (int i = 0; i < nlineage; i++)
    if (lineage[i].pid == creator) return epoch <= lineage[i].epoch;
  return 0;
}

/* Appends a descriptor reference for the codec (process_internal.h). */
void aio_proc_pack_fdref(aio_buf *b, int fd0, int fd1, pid_t creator, uint32_t epoch) {
  fdref r = {{fd0, fd1}, (int32_t)creator, epoch};
  aio_buf_add(b, &r, sizeof r);
}

/* Reads a descriptor reference; refuses one that does not exist here (process_internal.h). */
fdref aio_proc_unpack_fdref(lua_State *L, const char *p, size_t n, const char *kind,
                            const char *what) {
  fdref r;
  if (n != sizeof r) luaL_error(L, "aio codec: malformed %s", kind);
  memcpy(&r, p, sizeof r);
  if (!fd_valid_here((pid_t)r.creator, r.epoch))
    luaL_error(L, "%s (made by pid %d) does not exist in this process (pid %d): "
                  "make %ss before forking the process or the pool that uses them",
               what, (int)r.creator, (int)getpid(), kind);
  return r;
}

/* Sends all n bytes to the parent (blocking; the caller holds parent_mu); 1 or -1. */
static int send_parent_locked(const void *p, size_t n) {
  const char *c = (const char *)p;
  while (n > 0) {
    ssize_t r = send(parent_stream, c, n, MSG_NOSIGNAL);
    if (r < 0) { if (errno == EINTR) continue; return -1; }
    c += r;
    n -= (size_t)r;
  }
  return 1;
}

/* Writes all n bytes to the parent, one writer at a time (process_internal.h); 1 or -1. */
int aio_proc_write_parent(const void *p, size_t n) {
  pthread_mutex_lock(&parent_mu);
  int r = send_parent_locked(p, n);
  pthread_mutex_unlock(&parent_mu);
  return r;
}

/* Sends console output to the parent as an output frame while the console is active in the
** tree (process.h). Earlier output still in this process's stdout buffer goes first. The
** parent's loop reads the stream at all times, so a worker that prints a lot only waits for it;
** what a worker sent before it died is read before its end. */
int aio_proc_console_route(int to_stderr, const char *s, size_t n) {
  if (parent_stream < 0 || !console_page || n > UINT32_MAX - 1 ||
      !__atomic_load_n(console_page, __ATOMIC_ACQUIRE))
    return 0;
  uint32_t hdr[2] = {to_stderr ? AIO_FRAME_STDERR : AIO_FRAME_STDOUT, (uint32_t)n};
  fflush(stdout);
  pthread_mutex_lock(&parent_mu);
  int ok = send_parent_locked(hdr, sizeof hdr) > 0 && send_parent_locked(s, n) > 0;
  pthread_mutex_unlock(&parent_mu);
  return ok;
}

/* Prints the output frame at p, once complete, through this process's console (process_internal.h). */
int aio_proc_output_frame(const char *p, size_t n, size_t *used) {
  uint32_t hdr[2];
  *used = 0;
  if (n < sizeof hdr[0]) return 0;
  memcpy(hdr, p, sizeof hdr[0]);
  if (hdr[0] != AIO_FRAME_STDOUT && hdr[0] != AIO_FRAME_STDERR) return 0;
  if (n < sizeof hdr) return 1;
  memcpy(hdr, p, sizeof hdr);
  if (n - sizeof hdr < hdr[1]) return 1;
  aio_console_print(hdr[0] == AIO_FRAME_STDERR, p + sizeof hdr, hdr[1]);
  *used = sizeof hdr + hdr[1];
  return 1;
}

/* Reserves a frame header in b; aio_frame_end fills it in. */
size_t aio_frame_begin(aio_buf *b) {
  uint32_t z = 0;
  size_t at = b->len;
  aio_buf_add(b, &z, sizeof z);
  return at;
}

/* Fills in the length of the frame begun at `at`. */
void aio_frame_end(aio_buf *b, size_t at) {
  uint32_t n = (uint32_t)(b->len - at - sizeof n);
  memcpy(b->data + at, &n, sizeof n);
}

/* Describes a wait status: "exit status 3", "killed by signal 9 (Killed)". */
void aio_proc_describe_status(int status, char *out, size_t n) {
  if (WIFEXITED(status)) snprintf(out, n, "exit status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(out, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
  else snprintf(out, n, "status %d", status);
}

/* Python's exitcode: the exit status, or minus the signal number. */
int aio_proc_exitcode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

/* A uv write that owns its buffer. */
typedef struct wreq {
  uv_write_t req;
  aio_buf b;
} wreq;

/* In a pool worker (a fresh state): the parent's unfinished sends are not this process's to
** wait for; they belong to a loop that never runs here. */
void aio_proc_forget_sends(void) { pending_writes = 0; }

/* Runs L's loop until this process's queued sends are written: a child about to exit and a
** pool worker between jobs run no loop otherwise, and the rest of a large send would be lost
** (or wait, unwritten, for a worker that blocks reading its next job). */
void aio_proc_flush_sends(lua_State *L) {
  if (pending_writes <= 0) return;
  aio_loop *loop = aio_loop_get(L);
  while (pending_writes > 0 && uv_run(&loop->uv, UV_RUN_ONCE)) {}
}

/* Write callback: frees the buffer and the request. */
static void wreq_done(uv_write_t *req, int status) {
  (void)status;
  wreq *w = (wreq *)req;
  aio_buf_free(&w->b);
  free(w);
  pending_writes--;
}

/* Writes the whole buffer b (taken over) to a stream: directly if the kernel takes it all,
** else queued (libuv finishes it without blocking). Returns 0 or a libuv error. */
int aio_stream_send(uv_stream_t *s, aio_buf *b) {
  uv_buf_t ub = uv_buf_init(b->data, (unsigned)b->len);
  int n = uv_try_write(s, &ub, 1);
  if (n == (int)b->len) { aio_buf_free(b); return 0; }
  if (n < 0 && n != UV_EAGAIN) { aio_buf_free(b); return n; }
  size_t done = n > 0 ? (size_t)n : 0;
  wreq *w = calloc(1, sizeof *w);
  if (!w) { aio_buf_free(b); return UV_ENOMEM; }
  w->b = *b;
  memset(b, 0, sizeof *b);
  ub = uv_buf_init(w->b.data + done, (unsigned)(w->b.len - done));
  int rc = uv_write(&w->req, s, &ub, 1, wreq_done);
  if (rc != 0) { aio_buf_free(&w->b); free(w); return rc; }
  pending_writes++;
  return 0;
}

/* ---- running a call and encoding its outcome ----------------------------------------- */

/* Protected: encodes `true, values...` (the values are on the stack above the 2 arguments). */
static int encode_ok_p(lua_State *L) {
  aio_buf *out = (aio_buf *)lua_touserdata(L, 1);
  int n = lua_gettop(L) - 1;
  lua_pushboolean(L, 1);
  aio_codec_encode(L, -1, 1, out, "ok", AIO_CODEC_PROCESS);  /* a lone boolean: no ids used */
  lua_pop(L, 1);
  aio_codec_encode(L, 2, n, out, "result[%d]", AIO_CODEC_PROCESS);
  return 0;
}

/* Protected: encodes `false, err, traceback` from the record {err, tb} at 2. Errors that are
** aio error objects (tasks' errors) cross as their string form, which carries the traceback. */
static int encode_err_p(lua_State *L) {
  aio_buf *out = (aio_buf *)lua_touserdata(L, 1);
  lua_rawgeti(L, 2, 1);
  lua_rawgeti(L, 2, 2);
  int e = lua_gettop(L) - 1, tbi = e + 1;
  int t = lua_type(L, e);
  if (t == LUA_TTABLE && lua_getfield(L, e, "traceback") == LUA_TSTRING) {
    /* a task's error (aio.error): its own traceback, and the original value if plain */
    const char *tb = lua_tostring(L, -1);
    const char *st = strstr(tb, "stack traceback:");
    lua_pushstring(L, st ? st : tb);
    lua_replace(L, tbi);
    lua_pop(L, 1);
    int vt = lua_getfield(L, e, "value");
    if (vt != LUA_TSTRING && vt != LUA_TNUMBER) {
      lua_pop(L, 1);
      lua_getfield(L, e, "message");
    }
    lua_replace(L, e);
    t = lua_type(L, e);
  } else if (t == LUA_TTABLE) {
    lua_pop(L, 1);
  }
  if (t != LUA_TSTRING && t != LUA_TTABLE && t != LUA_TNUMBER && t != LUA_TBOOLEAN) {
    luaL_tolstring(L, -2, NULL);
    lua_replace(L, -3);
  } else if (t == LUA_TTABLE && luaL_getmetafield(L, -2, "__tostring") != LUA_TNIL) {
    lua_pop(L, 1);
    luaL_tolstring(L, -2, NULL);
    lua_replace(L, -3);
  }
  lua_pushboolean(L, 0);
  aio_codec_encode(L, -1, 1, out, "ok", AIO_CODEC_PROCESS);
  lua_pop(L, 1);
  aio_codec_encode(L, -2, 2, out, "error", AIO_CODEC_PROCESS);
  return 0;
}

/* Encodes an error record {err, tb} at idx into out, falling back to its string form. */
void aio_outcome_encode_error(lua_State *L, int idx, aio_buf *out) {
  idx = lua_absindex(L, idx);
  size_t at = out->len;
  lua_pushcfunction(L, encode_err_p);
  lua_pushlightuserdata(L, out);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 2, 0, 0) == LUA_OK) return;
  out->len = at;
  lua_pop(L, 1);
  lua_createtable(L, 2, 0);
  lua_pushliteral(L, "error value could not be sent back from the child process");
  lua_rawseti(L, -2, 1);
  lua_pushcfunction(L, encode_err_p);
  lua_pushlightuserdata(L, out);
  lua_pushvalue(L, -3);
  lua_pcall(L, 2, 0, 0);
  lua_pop(L, 1);
}

/* Encodes the n values on top of the stack as a success into out (or the encoding error). */
void aio_outcome_encode_ok(lua_State *L, int n, aio_buf *out) {
  size_t at = out->len;
  lua_pushcfunction(L, encode_ok_p);
  lua_insert(L, -n - 1);
  lua_pushlightuserdata(L, out);
  lua_insert(L, -n - 1);
  if (lua_pcall(L, n + 1, 0, 0) == LUA_OK) return;
  out->len = at;
  aio_outcome_wrap_error(L);
  aio_outcome_encode_error(L, -1, out);
  lua_pop(L, 1);
}

/* Protected: decodes `fn, args...` and calls it; the results stay on the stack. */
int aio_outcome_call_p(lua_State *L) {
  aio_buf *in = (aio_buf *)lua_touserdata(L, 1);
  return aio_outcome_call(L, in->data, in->len);
}

/* Runs the call encoded in `in` and writes its outcome to out (a pool worker's job). */
void aio_outcome_run(lua_State *L, aio_buf *in, aio_buf *out) {
  lua_settop(L, 0);
  lua_pushcfunction(L, aio_outcome_msgh);
  lua_pushcfunction(L, aio_outcome_call_p);
  lua_pushlightuserdata(L, in);
  if (lua_pcall(L, 1, LUA_MULTRET, 1) == LUA_OK) {
    aio_outcome_encode_ok(L, lua_gettop(L) - 1, out);
  } else {
    if (!lua_istable(L, -1)) {
      aio_outcome_wrap_error(L);
    }
    aio_outcome_encode_error(L, -1, out);
  }
  lua_settop(L, 0);
}

/* Protected: decodes an outcome message and settles future f with it; `who` names the process
** in the traceback line. */
typedef struct settle_ctx { aio_future *f; const char *data; size_t len; const char *who; } settle_ctx;

/* Protected: decodes an outcome message and resolves or rejects the future. */
static int settle_p(lua_State *L) {
  settle_ctx *c = (settle_ctx *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  int n = aio_codec_decode(L, c->data, c->len);
  if (n >= 1 && lua_toboolean(L, 1)) {
    lua_remove(L, 1);
    aio_future_resolve(L, c->f, n - 1);
    return 0;
  }
  aio_outcome_push_error(L, 2, c->who);
  aio_future_reject(L, c->f);
  return 0;
}

/* Settles f from an outcome message; a message that cannot be decoded fails f with why. */
void aio_outcome_settle(lua_State *L, aio_future *f, const char *data, size_t len, const char *who) {
  if (f->state != AIO_PENDING) return;
  settle_ctx c = {f, data, len, who};
  lua_pushcfunction(L, settle_p);
  lua_pushlightuserdata(L, &c);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) aio_future_reject(L, f);
}

/* Protected: decodes an owned message as one value and resolves f with it. */
static int resolve_msg_p(lua_State *L) {
  aio_future *f = (aio_future *)lua_touserdata(L, 1);
  aio_buf *b = (aio_buf *)lua_touserdata(L, 2);
  lua_settop(L, 0);
  int n = aio_codec_decode_owned(L, b);
  aio_future_resolve(L, f, n);
  return 0;
}

/* Resolves f with the decoded message (or rejects it with the decoding error). */
void aio_proc_resolve_msg(lua_State *L, aio_future *f, aio_buf *b) {
  lua_pushcfunction(L, resolve_msg_p);
  lua_pushlightuserdata(L, f);
  lua_pushlightuserdata(L, b);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) aio_future_reject(L, f);
  aio_buf_free(b);
}

/* Makes a waiter and parks it at the end of a list (process_internal.h). */
proc_waiter *aio_proc_park(lua_State *L, proc_waiter **head, proc_waiter **tail,
                           void (*on_cancel)(lua_State *L, aio_future *f, void *ud), void *ud) {
  proc_waiter *w = aio_waiter_alloc(L, sizeof *w, offsetof(proc_waiter, fut),
                                    offsetof(proc_waiter, ref), on_cancel, ud);
  if (!w) return NULL;
  if (*tail) (*tail)->next = w;
  else *head = w;
  *tail = w;
  return w;
}

/* Unlinks the waiter whose future is f (process_internal.h). */
proc_waiter *aio_proc_unlink(proc_waiter **head, proc_waiter **tail, aio_future *f) {
  proc_waiter *prev = NULL, *w = *head;
  while (w && w->fut != f) { prev = w; w = w->next; }
  if (!w) return NULL;
  if (prev) prev->next = w->next;
  else *head = w->next;
  if (*tail == w) *tail = prev;
  return w;
}

/* Frees an unlinked waiter (process_internal.h). */
void aio_proc_waiter_free(lua_State *L, proc_waiter *w) {
  aio_buf_free(&w->msg);
  aio_unref(L, w->ref);
  free(w);
}

/* uv_walk callback in a new pool worker: closes one parent handle's descriptor (see below). */
static void close_parent_handle(uv_handle_t *h, void *arg) {
  uv_os_fd_t fd;
  (void)arg;
  if (uv_fileno(h, &fd) == 0 && fd > 2 && !aio_process_pipe_has_fd(fd) &&
      !aio_process_queue_has_fd(fd))
    close(fd);
}

/* In a new pool worker (a fresh state that never runs the parent's loop): a copy of a
** listening socket kept the port bound after the server closed, and a copy of a connection
** kept its peer from seeing the close. Only the descriptors are closed: uv_close would
** unregister them from the epoll instance the worker shares with its parent. Pipe ends and
** queues stay (jobs may be sent them). */
void aio_proc_close_parent_handles(uv_loop_t *uv) {
  uv_walk(uv, close_parent_handle, NULL);
}

/* ---- a fresh loop in a forked child ----------------------------------------------------- */

/* uv_walk callback in a child: closes the parent's handles (not the loop's own). */
static void close_inherited(uv_handle_t *h, void *arg) {
  aio_loop *loop = (aio_loop *)arg;
  if (h == (uv_handle_t *)&loop->heap_timer || h == (uv_handle_t *)&loop->wakeup ||
      h == (uv_handle_t *)&loop->autojump) return;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Forgets the parent's tasks, timers and handles in a forked child; its Lua objects stay (the
** child may read them) but nothing of the parent's will run or be waited for. */
static void reset_loop_in_child(lua_State *L) {
  aio_loop *loop = aio_loop_get(L);
  aio_timers_after_fork(loop);
  uv_loop_fork(&loop->uv);
  loop->ready_head = loop->ready_tail = NULL;
  for (int i = 0; i < loop->heap_len; i++) loop->heap[i]->heap_idx = -1;
  loop->heap_len = 0;
  aio_timers_disarm(loop);
  loop->running = 0;  /* fork may have been called from inside a task */
  loop->ntasks = 0;
  uv_walk(&loop->uv, close_inherited, loop);
  uv_run(&loop->uv, UV_RUN_NOWAIT);
  aio_thread_forget_inbox(L);  /* its async handle was one of the parent's */
}

/* ---- process.fork ------------------------------------------------------------------------ */

typedef struct proc {
  pid_t pid;
  char name[64];
  uv_pipe_t *pipe;       /* the child's outcome stream (NULL once closed) */
  aio_buf rbuf;          /* bytes read so far */
  int eof, reaped, status;
  uv_timer_t *reaper;
  aio_future *done;      /* settled once the outcome is read and the child reaped */
  pid_t owner;           /* the process that forked it (a forked child has copies) */
  int doneref;
  int selfref;           /* keeps the handle alive until the child is reaped */
  lua_State *L;
} proc;

typedef struct proc_box { proc *p; } proc_box;

void aio_free_handle(uv_handle_t *h) { free(h); }

/* Both the outcome stream ended and the child was reaped: settle `done`. */
static void proc_maybe_done(proc *p) {
  if (!p->eof || !p->reaped || !p->done) return;
  lua_State *L = p->L;
  aio_future *f = p->done;
  p->done = NULL;
  aio_future_resolve(L, f, 0);
  aio_unref(L, p->doneref);
  aio_unref(L, p->selfref);
  p->selfref = LUA_NOREF;
}

/* Reaper timer: polls waitpid until the child is gone. */
static void proc_reap_tick(uv_timer_t *t) {
  proc *p = (proc *)t->data;
  int status;
  pid_t r = waitpid(p->pid, &status, WNOHANG);
  if (r == 0) return;
  p->reaped = 1;
  p->status = r == p->pid ? status : 0;
  uv_close((uv_handle_t *)t, aio_free_handle);
  p->reaper = NULL;
  proc_maybe_done(p);
}

/* Starts polling waitpid for p's child (its stream reached EOF, so it is exiting). */
static void proc_start_reaper(proc *p, uv_loop_t *uv) {
  p->reaper = malloc(sizeof *p->reaper);
  uv_timer_init(uv, p->reaper);
  p->reaper->data = p;
  uv_timer_start(p->reaper, proc_reap_tick, 0, 2);
}

/* libuv read buffers: up to 64 KB, freed by the read callbacks. */
void aio_proc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  if (suggested > 65536) suggested = 65536;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

/* Prints the child's output frames at the front of its buffer (the outcome comes after them). */
static void proc_take_output(proc *p) {
  size_t at = 0, used;
  while (aio_proc_output_frame(p->rbuf.data + at, p->rbuf.len - at, &used) && used) at += used;
  if (at == 0) return;
  memmove(p->rbuf.data, p->rbuf.data + at, p->rbuf.len - at);
  p->rbuf.len -= at;
}

/* Reads the child's output and outcome; at EOF starts reaping it. */
static void proc_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  proc *p = (proc *)s->data;
  if (nread > 0) aio_buf_add(&p->rbuf, buf->base, (size_t)nread);
  free(buf->base);
  if (nread > 0) proc_take_output(p);
  if (nread < 0) {
    p->eof = 1;
    uv_close((uv_handle_t *)s, aio_free_handle);
    p->pipe = NULL;
    proc_start_reaper(p, s->loop);
  }
}

/* The child's side of fork: run fn as a task on a fresh loop, send the outcome, exit. */
static void fork_child(lua_State *L, int fd, int fnidx, int nargs) {
  aio_proc_set_parent_stream(fd);
  aio_proc_become(lua_tostring(L, 1));
  reset_loop_in_child(L);
  aio_console_install(L);
  for (int i = 0; i <= nargs; i++) lua_pushvalue(L, fnidx + i);
  aio_spawn(L, nargs);
  int tidx = lua_gettop(L);
  aio_future *t = aio_future_check(L, tidx);
  lua_pushvalue(L, tidx);
  lua_setfield(L, LUA_REGISTRYINDEX, "aio.process.main_task");
  aio_run_until(L, t);
  int n = aio_future_push_outcome(L, tidx);
  aio_buf out = {0};
  size_t at = aio_frame_begin(&out);
  int ok = lua_toboolean(L, -n);
  if (ok) {
    aio_outcome_encode_ok(L, n - 1, &out);
  } else {
    aio_outcome_wrap_error(L);
    aio_outcome_encode_error(L, -1, &out);
  }
  aio_frame_end(&out, at);
  aio_proc_flush_sends(L);
  aio_proc_write_parent(out.data, out.len);
  fflush(NULL);
  _exit(ok ? 0 : 1);
}

/* Raises unless L runs on the loop's thread: only the forking thread exists in a child, so a
** fork from a worker thread would leave the loop's thread (and its locks) behind. */
void aio_proc_check_fork_thread(lua_State *L, const char *what) {
  if (aio_worker_of(L))
    luaL_error(L, "%s: fork only from the loop's thread, not from a worker thread", what);
}

/* process_c.fork(name|nil, fn, ...) -> handle */
static int l_fork(lua_State *L) {
  aio_proc_check_fork_thread(L, "process.fork");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int nargs = lua_gettop(L) - 2;
  char name[64];
  if (lua_isstring(L, 1)) snprintf(name, sizeof name, "%s", lua_tostring(L, 1));
  else snprintf(name, sizeof name, "Process-%d", ++nchildren);
  lua_pushstring(L, name);
  lua_replace(L, 1);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return luaL_error(L, "process.fork: socketpair: %s", strerror(errno));
  proc_box *box = (proc_box *)lua_newuserdatauv(L, sizeof *box, 1);
  box->p = NULL;
  luaL_setmetatable(L, PROC_MT);
  int boxidx = lua_gettop(L);
  proc *p = calloc(1, sizeof *p);
  if (!p) { close(sv[0]); close(sv[1]); return luaL_error(L, "out of memory"); }
  box->p = p;
  snprintf(p->name, sizeof p->name, "%s", name);
  p->L = aio_loop_get(L)->L;
  p->selfref = LUA_NOREF;
  p->doneref = LUA_NOREF;
  uv_loop_t *uv = aio_uv(L);
  aio_console_preload(L);          /* the child installs the console wrappers without parsing */
  pid_t pid = aio_proc_fork();
  if (pid < 0) {
    close(sv[0]);
    close(sv[1]);
    return luaL_error(L, "process.fork: fork: %s", strerror(errno));
  }
  if (pid == 0) {
    close(sv[0]);
    fork_child(L, sv[1], 2, nargs);  /* does not return */
  }
  close(sv[1]);
  p->pid = pid;
  p->owner = getpid();
  p->pipe = malloc(sizeof *p->pipe);
  uv_pipe_init(uv, p->pipe, 0);
  uv_pipe_open(p->pipe, sv[0]);
  p->pipe->data = p;
  uv_read_start((uv_stream_t *)p->pipe, aio_proc_alloc, proc_read_cb);
  p->done = aio_future_new(L);
  p->doneref = aio_ref(L, -1);
  lua_setiuservalue(L, boxidx, 1);  /* handle.done lives as long as the handle */
  p->selfref = aio_ref(L, boxidx);
  lua_settop(L, boxidx);
  return 1;
}

/* Checks that the first argument is a process handle. */
static proc *check_proc(lua_State *L) {
  proc_box *b = (proc_box *)luaL_checkudata(L, 1, PROC_MT);
  return b->p;
}

/* handle:_outcome() -> true, results... | false, err | nil, "killed by signal 9 (Killed)" */
static int proc_outcome(lua_State *L) {
  proc *p = check_proc(L);
  if (!p->eof || !p->reaped) return luaL_error(L, "process has not finished (join it first)");
  uint32_t len = 0;
  if (p->rbuf.len >= sizeof len) memcpy(&len, p->rbuf.data, sizeof len);
  if (p->rbuf.len < sizeof len || p->rbuf.len - sizeof len < len) {  /* none, or cut short */
    char why[96];
    aio_proc_describe_status(p->status, why, sizeof why);
    lua_pushnil(L);
    lua_pushfstring(L, "process %s (pid %d) ended without a result: %s", p->name, (int)p->pid, why);
    return 2;
  }
  lua_getiuservalue(L, 1, 1);
  aio_future *f = aio_future_new(L);  /* a scratch future reuses aio_outcome_settle's decoding */
  int fidx = lua_gettop(L);
  char who[96];
  snprintf(who, sizeof who, "%s pid %d", p->name, (int)p->pid);
  aio_outcome_settle(L, f, p->rbuf.data + sizeof len, len, who);
  return aio_future_push_outcome(L, fidx);
}

/* handle.pid / .name / .exitcode / .done, and the methods. */
static int proc_index(lua_State *L) {
  proc *p = check_proc(L);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "pid") == 0) lua_pushinteger(L, p->pid);
  else if (strcmp(k, "name") == 0) lua_pushstring(L, p->name);
  else if (strcmp(k, "exitcode") == 0) {
    if (p->reaped) lua_pushinteger(L, aio_proc_exitcode(p->status));
    else lua_pushnil(L);
  } else if (strcmp(k, "done") == 0) {
    lua_getiuservalue(L, 1, 1);
  } else {
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "methods");
    lua_getfield(L, -1, k);
  }
  return 1;
}

/* Signal numbers by name ("TERM", "SIGKILL", 9). */
static int signal_arg(lua_State *L, int idx, int def) {
  if (lua_isnoneornil(L, idx)) return def;
  if (lua_isinteger(L, idx)) return (int)lua_tointeger(L, idx);
  const char *s = luaL_checkstring(L, idx);
  if (strncmp(s, "SIG", 3) == 0) s += 3;
  static const struct { const char *n; int v; } sigs[] = {
    {"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT}, {"HUP", SIGHUP}, {"USR1", SIGUSR1},
    {"USR2", SIGUSR2}, {"STOP", SIGSTOP}, {"CONT", SIGCONT}, {"QUIT", SIGQUIT}, {NULL, 0}};
  for (int i = 0; sigs[i].n; i++) if (strcmp(sigs[i].n, s) == 0) return sigs[i].v;
  return luaL_argerror(L, idx, "unknown signal name");
}

/* handle:kill([sig]) -> true | nil, err (default SIGTERM; a finished process is left alone) */
static int proc_kill(lua_State *L) {
  proc *p = check_proc(L);
  int sig = signal_arg(L, 2, SIGTERM);
  if (p->reaped) { lua_pushnil(L); lua_pushliteral(L, "process has already exited"); return 2; }
  if (kill(p->pid, sig) != 0) { lua_pushnil(L); lua_pushstring(L, strerror(errno)); return 2; }
  lua_pushboolean(L, 1);
  return 1;
}

/* handle:is_alive() */
static int proc_is_alive(lua_State *L) {
  lua_pushboolean(L, !check_proc(L)->reaped);
  return 1;
}

/* Frees a process record. */
static void proc_free(proc *p) {
  aio_buf_free(&p->rbuf);
  free(p);
}

/* Close callback of a collected process's pipe or reaper: frees the handle, and the record
** with the last of them (no Lua: the state is closing). */
static void proc_handle_closed(uv_handle_t *h) {
  proc *p = (proc *)h->data;
  if (h == (uv_handle_t *)p->pipe) p->pipe = NULL;
  else p->reaper = NULL;
  free(h);
  if (!p->pipe && !p->reaper) proc_free(p);
}

/* __gc of process handles: collected only once the child was reaped (selfref until then), or
** as the state closes. A child still running then is killed and reaped: the script ended with
** an error or Ctrl-C (a normal end waits for it), and it must not outlive its parent. */
static int proc_gc(lua_State *L) {
  proc_box *b = (proc_box *)luaL_checkudata(L, 1, PROC_MT);
  proc *p = b->p;
  if (p && !p->reaped && p->owner == getpid()) {
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->reaped = 1;
  }
  if (!p || !p->reaped) return 0;  /* a parent's child, seen in a forked child: not ours */
  b->p = NULL;
  if (!p->pipe && !p->reaper) {
    proc_free(p);
    return 0;
  }
  /* The state closes before the outcome was read: libuv still has the pipe (or the reaper),
  ** closed now and freed, with p, in the close callback the loop's closing runs. */
  if (p->pipe) uv_close((uv_handle_t *)p->pipe, proc_handle_closed);
  if (p->reaper) uv_close((uv_handle_t *)p->reaper, proc_handle_closed);
  return 0;
}

/* __tostring of process handles. */
static int proc_tostring(lua_State *L) {
  proc *p = check_proc(L);
  lua_pushfstring(L, "<process %s pid %d %s>", p->name, (int)p->pid,
                  p->reaped ? "stopped" : "running");
  return 1;
}
/* ---- module -------------------------------------------------------------------------------- */

/* process_c.current() -> name, pid, parent pid */
static int l_current(lua_State *L) {
  lua_pushstring(L, proc_name);
  lua_pushinteger(L, getpid());
  lua_pushinteger(L, getppid());
  return 3;
}

/* process_c.getpid() */
static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

/* Opens aio.process_c: fork and its handles here; pools, pipes, queues, shared memory and exec
** from their own files. */
int luaopen_aio_process_c(lua_State *L) {
  static const luaL_Reg proc_methods[] = {
    {"_outcome", proc_outcome}, {"kill", proc_kill}, {"is_alive", proc_is_alive}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
    {"fork", l_fork}, {"current", l_current}, {"getpid", l_getpid}, {NULL, NULL}};
  if (luaL_newmetatable(L, PROC_MT)) {
    lua_pushcfunction(L, proc_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, proc_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, proc_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, proc_methods);
    lua_setfield(L, -2, "methods");
  }
  lua_getfield(L, -1, "methods");
  luaL_newlib(L, funcs);
  lua_insert(L, -3);
  lua_setfield(L, -3, "handle_methods");
  lua_pop(L, 1);
  aio_process_pool_open(L);
  aio_process_pipe_open(L);
  aio_process_queue_open(L);
  aio_shm_open(L);
  aio_exec_open(L);
  return 1;
}

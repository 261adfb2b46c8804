/*
** process.c — forked processes: process.fork, process pools, duplex pipes and message queues.
**
** fork(fn) keeps the parent's Lua state in the child (copy-on-write: closures need no
** serialization); the child throws away the parent's loop (tasks, timers, handles), runs fn as
** a task on a fresh loop and sends its outcome back through the codec on a socketpair.
** Pool workers are forked too, but each starts a fresh Lua state and takes `fn, args...`
** messages, like a thread pool's worker; a worker that dies (even by SIGKILL) fails only the
** job it was running and is replaced.
**
** Frames on every stream are a native-endian uint32 length and a codec message. The parent
** never blocks on a pipe: it writes through libuv (queued, so two sides sending large payloads
** at once cannot deadlock) and reads as data comes. Children are reaped with waitpid(WNOHANG)
** polled from a timer once their stream reached EOF: SIGCHLD stays as lua.c leaves it.
**
** Descriptors crossing the codec (pipe ends, queues) are described by value: fd numbers plus
** the pid that created them and a creation count (epoch). A process can use such a descriptor
** only if it created it or was forked from its creator after it existed: every child records
** (parent pid, epoch at fork) in its lineage, so a refusal can say exactly why.
*/
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <lualib.h>
#include "aio.h"
#include "codec.h"
#include "process.h"
#include "thread.h"

#define PROC_MT "aio.process.handle"
#define PPOOL_MT "aio.process.pool"
#define PIPE_MT "aio.process.pipe"
#define QUEUE_MT "aio.process.queue"
#define POOL_DEPTH 2            /* jobs in flight per pool worker (the second waits in its pipe) */
#define QUEUE_MSG_MAX (1 << 20)  /* requested SO_SNDBUF of a queue: its largest message */

/* ---- identity, lineage, frames --------------------------------------------------------- */

static char proc_name[64] = "MainProcess";
static int nchildren = 0;      /* process.fork children made by this process (for names) */
typedef struct ancestor { pid_t pid; uint32_t epoch; } ancestor;
static ancestor lineage[32];
static int nlineage = 0;
static uint32_t fd_epoch = 0;  /* fd-backed objects created by this process */
static int pending_writes = 0; /* uv writes not yet completed (flushed before a child exits) */

const char *aio_process_name(void) { return proc_name; }

/* fork(2) that records the lineage in the child and flushes stdio first (or buffered output
** would be written twice). */
static pid_t lineage_fork(void) {
  fflush(NULL);
  pid_t parent = getpid();
  uint32_t epoch = fd_epoch;
  pid_t pid = fork();
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

/* Blocking helpers for children (which have nothing else to do). */
static int read_full(int fd, void *p, size_t n) {
  char *c = (char *)p;
  while (n > 0) {
    ssize_t r = read(fd, c, n);
    if (r == 0) return 0;
    if (r < 0) { if (errno == EINTR) continue; return -1; }
    c += r;
    n -= (size_t)r;
  }
  return 1;
}

/* Writes all n bytes (blocking); 1 or -1. */
static int write_full(int fd, const void *p, size_t n) {
  const char *c = (const char *)p;
  while (n > 0) {
    ssize_t r = write(fd, c, n);
    if (r < 0) { if (errno == EINTR) continue; return -1; }
    c += r;
    n -= (size_t)r;
  }
  return 1;
}

/* Reserves a frame header in b; frame_end fills it in. */
static size_t frame_begin(aio_buf *b) {
  uint32_t z = 0;
  size_t at = b->len;
  aio_buf_add(b, &z, sizeof z);
  return at;
}

/* Fills in the length of the frame begun at `at`. */
static void frame_end(aio_buf *b, size_t at) {
  uint32_t n = (uint32_t)(b->len - at - sizeof n);
  memcpy(b->data + at, &n, sizeof n);
}

/* Describes a wait status: "exit status 3", "killed by signal 9 (Killed)". */
static void describe_status(int status, char *out, size_t n) {
  if (WIFEXITED(status)) snprintf(out, n, "exit status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(out, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
  else snprintf(out, n, "status %d", status);
}

/* Python's exitcode: the exit status, or minus the signal number. */
static int exitcode_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

/* A uv write that owns its buffer. */
typedef struct wreq {
  uv_write_t req;
  aio_buf b;
} wreq;

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
static int stream_send(uv_stream_t *s, aio_buf *b) {
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

/* Message handler: keeps the error value and the traceback of where it happened. */
static int outcome_msgh(lua_State *L) {
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  luaL_traceback(L, L, NULL, 1);
  lua_rawseti(L, -2, 2);
  return 1;
}

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
static void encode_error_record(lua_State *L, int idx, aio_buf *out) {
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
static void encode_success(lua_State *L, int n, aio_buf *out) {
  size_t at = out->len;
  lua_pushcfunction(L, encode_ok_p);
  lua_insert(L, -n - 1);
  lua_pushlightuserdata(L, out);
  lua_insert(L, -n - 1);
  if (lua_pcall(L, n + 1, 0, 0) == LUA_OK) return;
  out->len = at;
  lua_createtable(L, 2, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 1);
  encode_error_record(L, -1, out);
  lua_pop(L, 1);
}

/* Protected: decodes `fn, args...` and calls it; the results stay on the stack. */
static int call_message_p(lua_State *L) {
  aio_buf *in = (aio_buf *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  int n = aio_codec_decode(L, in->data, in->len);
  if (n < 1) return luaL_error(L, "empty job");
  lua_call(L, n - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* Runs the call encoded in `in` and writes its outcome to out (a pool worker's job). */
static void run_message(lua_State *L, aio_buf *in, aio_buf *out) {
  lua_settop(L, 0);
  lua_pushcfunction(L, outcome_msgh);
  lua_pushcfunction(L, call_message_p);
  lua_pushlightuserdata(L, in);
  if (lua_pcall(L, 1, LUA_MULTRET, 1) == LUA_OK) {
    encode_success(L, lua_gettop(L) - 1, out);
  } else {
    if (!lua_istable(L, -1)) {
      lua_createtable(L, 2, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
    }
    encode_error_record(L, -1, out);
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
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *tb = lua_tostring(L, 3);
    if (tb && strncmp(tb, "stack traceback:", 16) == 0) tb += 16;
    if (tb && *tb) lua_pushfstring(L, "%s\nstack traceback (%s):%s", lua_tostring(L, 2), c->who, tb);
    else lua_pushvalue(L, 2);
  } else {
    if (lua_type(L, 2) == LUA_TTABLE && lua_type(L, 3) == LUA_TSTRING) {
      if (lua_getfield(L, 2, "traceback") == LUA_TNIL) {  /* keep a traceback it has */
        lua_pushvalue(L, 3);
        lua_setfield(L, 2, "traceback");
      }
      lua_pop(L, 1);
    }
    lua_pushvalue(L, 2);
  }
  aio_future_reject(L, c->f);
  return 0;
}

/* Settles f from an outcome message; a message that cannot be decoded fails f with why. */
static void settle_future(lua_State *L, aio_future *f, const char *data, size_t len, const char *who) {
  if (f->state != AIO_PENDING) return;
  settle_ctx c = {f, data, len, who};
  lua_pushcfunction(L, settle_p);
  lua_pushlightuserdata(L, &c);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) aio_future_reject(L, f);
}

/* ---- a fresh loop in a forked child ----------------------------------------------------- */

/* uv_walk callback in a child: closes the parent's handles (not the loop's own). */
static void close_inherited(uv_handle_t *h, void *arg) {
  aio_loop *loop = (aio_loop *)arg;
  if (h == (uv_handle_t *)&loop->heap_timer || h == (uv_handle_t *)&loop->wakeup) return;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Forgets the parent's tasks, timers and handles in a forked child; its Lua objects stay (the
** child may read them) but nothing of the parent's will run or be waited for. */
static void reset_loop_in_child(lua_State *L) {
  aio_loop *loop = aio_loop_get(L);
  uv_loop_fork(&loop->uv);
  loop->ready_head = loop->ready_tail = NULL;
  for (int i = 0; i < loop->heap_len; i++) loop->heap[i]->heap_idx = -1;
  loop->heap_len = 0;
  uv_timer_stop(&loop->heap_timer);
  loop->running = 0;  /* fork may have been called from inside a task */
  loop->ntasks = 0;
  uv_walk(&loop->uv, close_inherited, loop);
  uv_run(&loop->uv, UV_RUN_NOWAIT);
  extern void aio_thread_forget_inbox(lua_State *L);
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
  int doneref;
  int selfref;           /* keeps the handle alive until the child is reaped */
  lua_State *L;
} proc;

typedef struct proc_box { proc *p; } proc_box;

static void free_handle(uv_handle_t *h) { free(h); }

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
  uv_close((uv_handle_t *)t, free_handle);
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
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  if (suggested > 65536) suggested = 65536;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

/* Reads the child's outcome; at EOF starts reaping it. */
static void proc_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  proc *p = (proc *)s->data;
  if (nread > 0) aio_buf_add(&p->rbuf, buf->base, (size_t)nread);
  free(buf->base);
  if (nread < 0) {
    p->eof = 1;
    uv_close((uv_handle_t *)s, free_handle);
    p->pipe = NULL;
    proc_start_reaper(p, s->loop);
  }
}

/* The child's side of fork: run fn as a task on a fresh loop, send the outcome, exit. */
static void fork_child(lua_State *L, int fd, int fnidx, int nargs) {
  snprintf(proc_name, sizeof proc_name, "%s", lua_tostring(L, 1));
  nchildren = 0;
  reset_loop_in_child(L);
  aio_loop *loop = aio_loop_get(L);
  for (int i = 0; i <= nargs; i++) lua_pushvalue(L, fnidx + i);
  aio_spawn(L, nargs);
  int tidx = lua_gettop(L);
  aio_future *t = aio_future_check(L, tidx);
  lua_pushvalue(L, tidx);
  lua_setfield(L, LUA_REGISTRYINDEX, "aio.process.main_task");
  aio_run_until(L, t);
  int n = aio_future_push_outcome(L, tidx);
  aio_buf out = {0};
  size_t at = frame_begin(&out);
  int ok = lua_toboolean(L, -n);
  if (ok) {
    encode_success(L, n - 1, &out);
  } else {
    lua_createtable(L, 2, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    encode_error_record(L, -1, &out);
  }
  frame_end(&out, at);
  while (pending_writes > 0 && uv_run(&loop->uv, UV_RUN_ONCE)) {}  /* flush pipe sends */
  write_full(fd, out.data, out.len);
  fflush(NULL);
  _exit(ok ? 0 : 1);
}

/* Raises unless L runs on the loop's thread: only the forking thread exists in a child, so a
** fork from a worker thread would leave the loop's thread (and its locks) behind. */
static void check_fork_thread(lua_State *L, const char *what) {
  if (aio_worker_of(L))
    luaL_error(L, "%s: fork only from the loop's thread, not from a worker thread", what);
}

/* process_c.fork(name|nil, fn, ...) -> handle */
static int l_fork(lua_State *L) {
  check_fork_thread(L, "process.fork");
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
  pid_t pid = lineage_fork();
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
  p->pipe = malloc(sizeof *p->pipe);
  uv_pipe_init(uv, p->pipe, 0);
  uv_pipe_open(p->pipe, sv[0]);
  p->pipe->data = p;
  uv_read_start((uv_stream_t *)p->pipe, alloc_cb, proc_read_cb);
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
  if (p->rbuf.len < 4) {
    char why[96];
    describe_status(p->status, why, sizeof why);
    lua_pushnil(L);
    lua_pushfstring(L, "process %s (pid %d) ended without a result: %s", p->name, (int)p->pid, why);
    return 2;
  }
  lua_getiuservalue(L, 1, 1);
  aio_future *f = aio_future_new(L);  /* a scratch future reuses settle_future's decoding */
  int fidx = lua_gettop(L);
  char who[96];
  snprintf(who, sizeof who, "%s pid %d", p->name, (int)p->pid);
  settle_future(L, f, p->rbuf.data + 4, p->rbuf.len - 4, who);
  return aio_future_push_outcome(L, fidx);
}

/* handle.pid / .name / .exitcode / .done, and the methods. */
static int proc_index(lua_State *L) {
  proc *p = check_proc(L);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "pid") == 0) lua_pushinteger(L, p->pid);
  else if (strcmp(k, "name") == 0) lua_pushstring(L, p->name);
  else if (strcmp(k, "exitcode") == 0) {
    if (p->reaped) lua_pushinteger(L, exitcode_of(p->status));
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

/* __gc of process handles: collected only once the child was reaped (selfref until then). */
static int proc_gc(lua_State *L) {
  proc_box *b = (proc_box *)luaL_checkudata(L, 1, PROC_MT);
  proc *p = b->p;
  if (!p || !p->reaped || p->pipe || p->reaper) return 0;  /* still in use by libuv: leave it */
  b->p = NULL;
  aio_buf_free(&p->rbuf);
  free(p);
  return 0;
}

/* __tostring of process handles. */
static int proc_tostring(lua_State *L) {
  proc *p = check_proc(L);
  lua_pushfstring(L, "<process %s pid %d %s>", p->name, (int)p->pid,
                  p->reaped ? "stopped" : "running");
  return 1;
}

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
  int dropped;           /* cancelled after it was sent: ignore its outcome */
} pjob;

struct pworker {
  ppool *pool;
  pid_t pid;
  int fd;
  uv_pipe_t *pipe;
  aio_buf rbuf;
  size_t rpos;
  pjob *ihead, *itail;   /* jobs sent, in order */
  int ninflight;
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
  char name[32];
  pid_t owner;           /* the process that made the pool */
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

/* The pool worker's life: fresh state, init, then jobs until its stream ends. */
static void pool_worker_main(ppool *p, pworker *me, int fd, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);
  signal(SIGINT, SIG_IGN);  /* Ctrl-C is for the parent, which ends its workers */
  for (pworker *w = p->workers; w; w = w->next)
    if (w != me && w->fd >= 0) close(w->fd);
  snprintf(proc_name, sizeof proc_name, "%s", me->name);
  nchildren = 0;
  lua_State *L = luaL_newstate();
  if (!L) _exit(1);
  luaL_openlibs(L);
  aio_openlibs(L);
  char *broken = NULL;
  if (p->init.len) {
    aio_buf init = {0};
    aio_buf_add(&init, p->init.data, p->init.len);
    lua_pushcfunction(L, outcome_msgh);
    lua_pushcfunction(L, call_message_p);
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
  for (;;) {
    uint32_t len;
    if (read_full(fd, &len, sizeof len) <= 0) break;
    aio_buf in = {0}, out = {0};
    if (len) {
      in.data = malloc(len);
      if (!in.data) _exit(1);
      in.len = in.cap = len;
      if (read_full(fd, in.data, len) <= 0) break;
    }
    size_t at = frame_begin(&out);
    if (broken) {
      lua_createtable(L, 2, 0);
      lua_pushstring(L, broken);
      lua_rawseti(L, -2, 1);
      encode_error_record(L, -1, &out);
      lua_settop(L, 0);
    } else {
      run_message(L, &in, &out);
    }
    frame_end(&out, at);
    aio_buf_free(&in);
    if (write_full(fd, out.data, out.len) < 0) break;
    aio_buf_free(&out);
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
  w->index = ++p->nspawned;
  w->fd = sv[0];
  snprintf(w->name, sizeof w->name, "%s-%d", p->name, w->index);
  pid_t parent = getpid();
  pid_t pid = lineage_fork();
  if (pid < 0) { int e = errno; close(sv[0]); close(sv[1]); free(w); return e; }
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
  uv_read_start((uv_stream_t *)w->pipe, alloc_cb, worker_read_cb);
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

/* Close callback of a worker's stream; frees the worker once it is also reaped. */
static void worker_pipe_closed(uv_handle_t *h) {
  pworker *w = (pworker *)h->data;
  free(h);
  w->pipe = NULL;
  if (!w->reaper) {  /* reaped already: the worker's memory can go */
    ppool *p = w->pool;
    aio_buf_free(&w->rbuf);
    free(w);
    ppool_release(p);
  }
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
  uv_close((uv_handle_t *)t, free_handle);
  w->reaper = NULL;
  p->nworkers--;
  /* 1. the job it was running fails (unless it was retired cleanly or killed to cancel it) */
  pjob *head = w->ihead;
  if (head) {
    w->ihead = head->next;
    if (!w->ihead) w->itail = NULL;
    w->ninflight--;
    if (!head->dropped && head->fut && head->fut->state == AIO_PENDING) {
      char why[96];
      describe_status(status, why, sizeof why);
      lua_pushfstring(L, "process pool worker %s (pid %d) died while running this job: %s",
                      w->name, (int)w->pid, why);
      aio_future_reject(L, head->fut);
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
  if (!w->pipe) {
    aio_buf_free(&w->rbuf);
    free(w);
    ppool_release(p);
  }
  /* 3. a replacement, unless the pool is closing */
  int live = 0;
  for (pworker *x = p->workers; x; x = x->next) if (!x->dead && !x->retiring) live++;
  if (!p->closing && !p->gone && live < p->size) pool_spawn(p);
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

/* A worker's results: each complete frame settles the oldest job sent to it. */
static void worker_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  pworker *w = (pworker *)s->data;
  ppool *p = w->pool;
  lua_State *L = p->L;
  if (nread > 0) aio_buf_add(&w->rbuf, buf->base, (size_t)nread);
  free(buf->base);
  if (nread < 0) { worker_gone(w); return; }
  for (;;) {  /* every complete frame settles the oldest job sent to this worker */
    size_t avail = w->rbuf.len - w->rpos;
    uint32_t len;
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
      settle_future(L, j->fut, data, len, who);
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
    if (best->itail) best->itail->next = j;
    else best->ihead = j;
    best->itail = j;
    best->ninflight++;
    aio_buf frame = {0};
    size_t at = frame_begin(&frame);
    aio_buf_add(&frame, j->msg.data, j->msg.len);
    frame_end(&frame, at);
    uv_ref((uv_handle_t *)best->pipe);
    if (stream_send((uv_stream_t *)best->pipe, &frame) != 0) {
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
  if (j->w->ihead == j && !j->w->dead) {  /* running: the only way to stop it is to end it */
    j->w->killed_for_cancel = 1;
    kill(j->w->pid, SIGKILL);
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
  check_fork_thread(L, "process.pool");
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
  p->owner = getpid();
  snprintf(p->name, sizeof p->name, "%s", luaL_optstring(L, 4, "ForkPoolWorker"));
  b->p = p;
  for (int i = 0; i < size; i++) {
    int e = pool_spawn(p);
    if (e) return luaL_error(L, "process pool: cannot start a worker: %s", strerror(e));
  }
  lua_settop(L, bidx);
  return 1;
}

/* pool:submit(fn, ...) -> future */
static int ppool_submit(lua_State *L) {
  ppool *p = check_ppool(L, 1);
  if (p->closing) return luaL_error(L, "cannot submit to a closed process pool");
  if (p->owner != getpid()) return luaL_error(L, "this process pool belongs to the parent process");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  aio_buf msg = {0};
  aio_codec_encode(L, 2, lua_gettop(L) - 1, &msg, "call", AIO_CODEC_PROCESS);
  pjob *j = calloc(1, sizeof *j);
  if (!j) { aio_buf_free(&msg); return luaL_error(L, "out of memory"); }
  j->msg = msg;
  j->pool = p;
  j->fut = aio_future_new(L);
  j->futref = aio_ref(L, -1);
  j->fut->on_cancel = pjob_on_cancel;
  j->fut->on_cancel_ud = j;
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
  ppool *p = check_ppool(L, 1);
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

/* __gc: end the workers now (SIGKILL) and reap them. */
static int ppool_gc(lua_State *L) {
  ppool_box *b = (ppool_box *)luaL_checkudata(L, 1, PPOOL_MT);
  ppool *p = b->p;
  if (!p) return 0;
  b->p = NULL;
  p->gone = 1;
  p->closing = 1;
  if (p->owner == getpid()) {
    for (pworker *w = p->workers; w; w = w->next) {
      if (w->reaper) continue;
      kill(w->pid, SIGKILL);
      waitpid(w->pid, NULL, 0);
      w->reaper = NULL;
      w->dead = 1;
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

/* pool:pids() -> list of the live workers' pids */
static int ppool_pids(lua_State *L) {
  ppool *p = check_ppool(L, 1);
  lua_newtable(L);
  int i = 0;
  for (pworker *w = p->workers; w; w = w->next)
    if (!w->dead) { lua_pushinteger(L, w->pid); lua_rawseti(L, -2, ++i); }
  return 1;
}

/* pool:stats() -> {size=, workers=, queued=, inflight=} */
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

/* ---- pipes: duplex, framed, awaitable ----------------------------------------------------- */

typedef struct pwaiter {
  struct pwaiter *next;
  aio_future *fut;
  int ref;
} pwaiter;

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
  pwaiter *whead, *wtail;
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
  aio_share_box *b = (aio_share_box *)lua_newuserdatauv(L, sizeof *b, 0);
  b->obj = e;
  e->refs++;
  if (luaL_getmetatable(L, PIPE_MT) != LUA_TTABLE) { lua_pop(L, 1); open_pipe_mt(L); }
  lua_setmetatable(L, -2);
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

typedef struct fdref { int32_t fd[2]; int32_t creator; uint32_t epoch; } fdref;

/* Codec: a pipe end crosses as its fd, creator pid and epoch. */
static void pipe_pack(void *obj, aio_buf *b) {
  pend *e = (pend *)obj;
  fdref r = {{e->fd, -1}, (int32_t)e->creator, e->epoch};
  aio_buf_add(b, &r, sizeof r);
}

/* Codec: the receiving side of pipe_pack; refuses ends that do not exist here. */
static void pipe_unpack(lua_State *L, const char *p, size_t n) {
  fdref r;
  if (n != sizeof r) luaL_error(L, "aio codec: malformed pipe");
  memcpy(&r, p, sizeof r);
  if (!fd_valid_here((pid_t)r.creator, r.epoch))
    luaL_error(L, "process.pipe end (made by pid %d) does not exist in this process (pid %d): "
                  "make pipes before forking the process or the pool that uses them",
               (int)r.creator, (int)getpid());
  pend *e = find_end(r.fd[0], (pid_t)r.creator, r.epoch);
  if (!e) e = new_end(r.fd[0], (pid_t)r.creator, r.epoch);
  if (!e) luaL_error(L, "out of memory");
  push_end(L, e);
}

static void noop_ref(void *o) { (void)o; }
static void noop_push(lua_State *L, void *o) { (void)L; (void)o; }
static const aio_share_class pipe_class = {PIPE_MT, 1, noop_ref, noop_ref, noop_push,
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
  e->whead = e->wtail = NULL;
  e->reading = 0;
  e->eof = 0;
  uv_unref((uv_handle_t *)e->h);
}

/* Pops a complete frame into a new buffer, or returns 0. */
static int end_take_frame(pend *e, aio_buf *out) {
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
  return 1;
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
static void resolve_with_msg(lua_State *L, aio_future *f, aio_buf *b) {
  lua_pushcfunction(L, resolve_msg_p);
  lua_pushlightuserdata(L, f);
  lua_pushlightuserdata(L, b);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) aio_future_reject(L, f);
  aio_buf_free(b);
}

/* Gives complete messages (or EOF) to parked receivers, in order. */
static void end_serve(pend *e) {
  lua_State *L = e->L;
  while (e->whead) {
    aio_buf m;
    pwaiter *w = e->whead;
    if (w->fut->state != AIO_PENDING) {  /* cancelled meanwhile */
      e->whead = w->next;
      if (!e->whead) e->wtail = NULL;
      aio_unref(L, w->ref);
      free(w);
      continue;
    }
    if (end_take_frame(e, &m)) {
      e->whead = w->next;
      if (!e->whead) e->wtail = NULL;
      resolve_with_msg(L, w->fut, &m);
    } else if (e->eof) {
      e->whead = w->next;
      if (!e->whead) e->wtail = NULL;
      lua_pushnil(L);
      lua_pushliteral(L, "closed");
      aio_future_resolve(L, w->fut, 2);
    } else {
      break;
    }
    aio_unref(L, w->ref);
    free(w);
  }
  if (!e->whead && e->h && e->reading) {  /* nobody waits: leave data in the kernel */
    uv_read_stop((uv_stream_t *)e->h);
    uv_unref((uv_handle_t *)e->h);
    e->reading = 0;
  }
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
  size_t at = frame_begin(&b);
  aio_codec_encode(L, 2, 1, &b, "value", AIO_CODEC_PROCESS);
  frame_end(&b, at);
  int rc = stream_send((uv_stream_t *)e->h, &b);
  if (rc != 0) return luaL_error(L, "pipe send: %s", uv_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* end:recv() -> value | nil, "closed" (awaits the next message) */
static int end_recv(lua_State *L) {
  pend *e = check_end(L, 1);
  end_attach(L, e);
  aio_buf m;
  if (!e->whead && end_take_frame(e, &m)) {
    lua_settop(L, 0);
    int n = aio_codec_decode_owned(L, &m);
    return n;
  }
  if (e->eof && !e->whead) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  pwaiter *w = calloc(1, sizeof *w);
  if (!w) return luaL_error(L, "out of memory");
  w->fut = aio_future_new(L);
  w->ref = aio_ref(L, -1);
  if (e->wtail) e->wtail->next = w;
  else e->whead = w;
  e->wtail = w;
  if (!e->reading) {
    e->reading = 1;
    uv_ref((uv_handle_t *)e->h);
    uv_read_start((uv_stream_t *)e->h, alloc_cb, end_read_cb);
  }
  return aio_await(L, lua_gettop(L));
}

/* end:poll() -> true if a whole message is ready now (without waiting) */
static int end_poll(lua_State *L) {
  pend *e = check_end(L, 1);
  size_t avail = e->rbuf.len - e->rpos;
  uint32_t len = 0;
  if (avail >= sizeof len) memcpy(&len, e->rbuf.data + e->rpos, sizeof len);
  lua_pushboolean(L, avail >= sizeof len && avail >= sizeof len + len);
  return 1;
}

static void end_handle_closed(uv_handle_t *h) { free(h); }

/* end:close(): this process's end is closed (the peer's recv then gets nil, "closed"). */
static int end_close(lua_State *L) {
  aio_share_box *b = (aio_share_box *)luaL_checkudata(L, 1, PIPE_MT);
  pend *e = (pend *)b->obj;
  if (!e || e->closed) return 0;
  e->closed = 1;
  if (e->h && e->owner == getpid()) {
    e->eof = 1;
    end_serve(e);
    uv_close((uv_handle_t *)e->h, end_handle_closed);  /* closes the fd too */
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
  luaL_newmetatable(L, PIPE_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, end_tostring);
  lua_setfield(L, -2, "__tostring");
  aio_share_register(L, &pipe_class);
  return 1;
}

/* process_c.pipe() -> end1, end2: two connected duplex ends. */
static int l_pipe(lua_State *L) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return luaL_error(L, "process.pipe: %s", strerror(errno));
  pid_t me = getpid();
  pend *a = new_end(sv[0], me, ++fd_epoch);
  pend *b = new_end(sv[1], me, ++fd_epoch);
  if (!a || !b) return luaL_error(L, "out of memory");
  push_end(L, a);
  push_end(L, b);
  return 2;
}

/* ---- queues: many producers, many consumers, whole messages ------------------------------ */

typedef struct qwaiter {
  struct qwaiter *next;
  aio_future *fut;
  int ref;
  aio_buf msg;           /* a put waiting for room */
} qwaiter;

typedef struct pqueue {
  int fd[2];             /* SOCK_SEQPACKET pair: put writes fd[0], get reads fd[1] */
  pid_t creator;
  uint32_t epoch;
  pid_t owner;
  lua_State *L;
  uv_poll_t *rpoll, *wpoll;
  qwaiter *ghead, *gtail, *phead, *ptail;
  char *rbuf;
  size_t rcap;
  struct pqueue *next;
} pqueue;

static pqueue *queues = NULL;
static int open_queue_mt(lua_State *L);

/* Pushes a box for a queue. */
static void queue_push(lua_State *L, pqueue *q) {
  aio_share_box *b = (aio_share_box *)lua_newuserdatauv(L, sizeof *b, 0);
  b->obj = q;
  if (luaL_getmetatable(L, QUEUE_MT) != LUA_TTABLE) { lua_pop(L, 1); open_queue_mt(L); }
  lua_setmetatable(L, -2);
}

/* Codec: a queue crosses as its fds, creator pid and epoch. */
static void queue_pack(void *obj, aio_buf *b) {
  pqueue *q = (pqueue *)obj;
  fdref r = {{q->fd[0], q->fd[1]}, (int32_t)q->creator, q->epoch};
  aio_buf_add(b, &r, sizeof r);
}

/* Codec: the receiving side of queue_pack; refuses queues that do not exist here. */
static void queue_unpack(lua_State *L, const char *p, size_t n) {
  fdref r;
  if (n != sizeof r) luaL_error(L, "aio codec: malformed queue");
  memcpy(&r, p, sizeof r);
  if (!fd_valid_here((pid_t)r.creator, r.epoch))
    luaL_error(L, "process.queue (made by pid %d) does not exist in this process (pid %d): "
                  "make queues before forking the process or the pool that uses them",
               (int)r.creator, (int)getpid());
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

static const aio_share_class queue_class = {QUEUE_MT, 1, noop_ref, noop_ref, noop_push,
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

/* Starts or stops the poll handles to match the parked waiters. */
static void queue_update_polls(pqueue *q, uv_loop_t *uv) {
  if (q->ghead && !q->rpoll) {
    q->rpoll = malloc(sizeof *q->rpoll);
    uv_poll_init(uv, q->rpoll, q->fd[1]);
    q->rpoll->data = q;
    uv_poll_start(q->rpoll, UV_READABLE, queue_poll_cb);
  } else if (!q->ghead && q->rpoll) {
    uv_poll_stop(q->rpoll);
    uv_close((uv_handle_t *)q->rpoll, free_handle);
    q->rpoll = NULL;
  }
  if (q->phead && !q->wpoll) {
    q->wpoll = malloc(sizeof *q->wpoll);
    uv_poll_init(uv, q->wpoll, q->fd[0]);
    q->wpoll->data = q;
    uv_poll_start(q->wpoll, UV_WRITABLE, queue_poll_cb);
  } else if (!q->phead && q->wpoll) {
    uv_poll_stop(q->wpoll);
    uv_close((uv_handle_t *)q->wpoll, free_handle);
    q->wpoll = NULL;
  }
}

/* The queue is readable or writable: serve parked getters and putters. */
static void queue_poll_cb(uv_poll_t *h, int status, int events) {
  pqueue *q = (pqueue *)h->data;
  lua_State *L = q->L;
  uv_loop_t *uv = h->loop;
  (void)status;
  (void)events;
  while (q->ghead) {  /* serve getters while messages come */
    qwaiter *w = q->ghead;
    if (w->fut->state != AIO_PENDING) {
      q->ghead = w->next;
      if (!q->ghead) q->gtail = NULL;
      aio_unref(L, w->ref);
      free(w);
      continue;
    }
    aio_buf m;
    int r = queue_try_get(q, &m);
    if (r == 0) break;
    q->ghead = w->next;
    if (!q->ghead) q->gtail = NULL;
    if (r < 0) {
      lua_pushfstring(L, "process.queue get: %s", strerror(errno));
      aio_future_reject(L, w->fut);
    } else {
      resolve_with_msg(L, w->fut, &m);
    }
    aio_unref(L, w->ref);
    free(w);
  }
  while (q->phead) {  /* and putters while there is room */
    qwaiter *w = q->phead;
    if (w->fut->state != AIO_PENDING) {
      q->phead = w->next;
      if (!q->phead) q->ptail = NULL;
      aio_buf_free(&w->msg);
      aio_unref(L, w->ref);
      free(w);
      continue;
    }
    int r = queue_try_put(q, &w->msg);
    if (r == 0) break;
    q->phead = w->next;
    if (!q->phead) q->ptail = NULL;
    if (r < 0) {
      lua_pushfstring(L, "process.queue put: %s", strerror(errno));
      aio_future_reject(L, w->fut);
    } else {
      lua_pushboolean(L, 1);
      aio_future_resolve(L, w->fut, 1);
    }
    aio_buf_free(&w->msg);
    aio_unref(L, w->ref);
    free(w);
  }
  queue_update_polls(q, uv);
}

/* Parks a waiter on list (head, tail) and awaits it. */
static int queue_park(lua_State *L, pqueue *q, int is_put, aio_buf *msg) {
  qwaiter *w = calloc(1, sizeof *w);
  if (!w) return luaL_error(L, "out of memory");
  if (msg) w->msg = *msg;
  w->fut = aio_future_new(L);
  w->ref = aio_ref(L, -1);
  if (is_put) {
    if (q->ptail) q->ptail->next = w; else q->phead = w;
    q->ptail = w;
  } else {
    if (q->gtail) q->gtail->next = w; else q->ghead = w;
    q->gtail = w;
  }
  queue_update_polls(q, aio_uv(L));
  return aio_await(L, lua_gettop(L));
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

static int open_queue_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"put", queue_put}, {"put_nowait", queue_put_nowait}, {"get", queue_get},
    {"get_nowait", queue_get_nowait}, {NULL, NULL}};
  luaL_newmetatable(L, QUEUE_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, queue_tostring);
  lua_setfield(L, -2, "__tostring");
  aio_share_register(L, &queue_class);
  return 1;
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
  q->epoch = ++fd_epoch;
  q->next = queues;
  queues = q;
  queue_push(L, q);
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

int luaopen_aio_process_c(lua_State *L) {
  static const luaL_Reg proc_methods[] = {
    {"_outcome", proc_outcome}, {"kill", proc_kill}, {"is_alive", proc_is_alive}, {NULL, NULL}};
  static const luaL_Reg pool_methods[] = {
    {"submit", ppool_submit}, {"_shutdown", ppool_shutdown}, {"size", ppool_size},
    {"pids", ppool_pids}, {"stats", ppool_stats}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
    {"fork", l_fork}, {"pool", l_ppool}, {"pipe", l_pipe}, {"queue", l_queue},
    {"current", l_current}, {"getpid", l_getpid}, {NULL, NULL}};
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
  lua_pop(L, 1);
  if (luaL_newmetatable(L, PPOOL_MT)) {
    luaL_newlib(L, pool_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ppool_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  open_pipe_mt(L);
  open_queue_mt(L);
  lua_pop(L, 2);
  luaL_newlib(L, funcs);
  luaL_getmetatable(L, PPOOL_MT);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "pool_methods");
  lua_pop(L, 1);
  luaL_getmetatable(L, PROC_MT);
  lua_getfield(L, -1, "methods");
  lua_setfield(L, -3, "handle_methods");
  lua_pop(L, 1);
  aio_shm_open(L);
  aio_exec_open(L);
  return 1;
}

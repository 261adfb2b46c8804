/*
** exec.c — process.exec: run an external program without blocking the loop (uv_spawn), feed
** its stdin, collect or stream its stdout and stderr, and settle a future with its exit status.
**
** The record lives until its last handle is closed (the process handle and up to three pipes);
** the future is settled when the process has exited and both output pipes reached EOF, so the
** output is complete. Cancelling the future sends SIGTERM to the program.
*/
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include "aio.h"
#include "codec.h"
#include "process.h"

typedef struct xproc {
  uv_process_t proc;
  uv_pipe_t in, out, err;
  uv_write_t wreq;
  aio_buf inbuf;
  aio_buf obuf, ebuf;
  int nhandles;          /* handles not yet closed */
  int exited, eofs;      /* process exited; output pipes at EOF (0..2) */
  int64_t status;
  int termsig;
  lua_State *L;
  aio_future *fut;
  int futref;
  int on_out, on_err;    /* registry refs of the streaming callbacks, or LUA_NOREF */
  int settled;
  struct xanchor *anchor; /* the Lua object that closes it if the state closes first */
  int anchorref;
} xproc;

/* A record's anchor in the registry: its __gc runs only if the state closes while the record
** still has handles open. */
typedef struct xanchor { xproc *x; } xanchor;

/* Close callback of the record's handles: the last one frees it (and lets go of its anchor,
** unless the anchor's __gc closed the handles: the state is closing, no Lua then). */
static void x_closed(uv_handle_t *h) {
  xproc *x = (xproc *)h->data;
  if (--x->nhandles > 0) return;
  if (x->anchor) {
    x->anchor->x = NULL;
    aio_unref(x->L, x->anchorref);
  }
  aio_buf_free(&x->inbuf);
  aio_buf_free(&x->obuf);
  aio_buf_free(&x->ebuf);
  free(x);
}

/* Settles the future once the program exited and its output is complete. */
static void x_maybe_settle(xproc *x) {
  if (x->settled || !x->exited || x->eofs < 2) return;
  x->settled = 1;
  lua_State *L = x->L;
  if (x->fut && x->fut->state == AIO_PENDING) {
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, x->status);
    lua_setfield(L, -2, "status");
    if (x->termsig) {
      lua_pushinteger(L, x->termsig);
      lua_setfield(L, -2, "signal");
    }
    lua_pushboolean(L, x->status == 0 && x->termsig == 0);
    lua_setfield(L, -2, "ok");
    lua_pushlstring(L, x->obuf.data ? x->obuf.data : "", x->obuf.len);
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, x->ebuf.data ? x->ebuf.data : "", x->ebuf.len);
    lua_setfield(L, -2, "stderr");
    aio_future_resolve(L, x->fut, 1);
  }
  if (x->fut) x->fut->on_cancel = NULL;
  aio_unref(L, x->futref);
  aio_unref(L, x->on_out);
  aio_unref(L, x->on_err);
  x->fut = NULL;
}

static void x_exit(uv_process_t *p, int64_t status, int termsig) {
  xproc *x = (xproc *)p->data;
  x->exited = 1;
  x->status = status;
  x->termsig = termsig;
  uv_close((uv_handle_t *)p, x_closed);
  x_maybe_settle(x);
}

static void x_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

/* Output arrives: give it to the streaming callback, or collect it. */
static void x_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  xproc *x = (xproc *)s->data;
  int is_out = s == (uv_stream_t *)&x->out;
  if (nread > 0) {
    int cb = is_out ? x->on_out : x->on_err;
    if (cb != LUA_NOREF && !x->settled) {
      aio_pushref(x->L, cb);
      lua_pushlstring(x->L, buf->base, (size_t)nread);
      aio_pcall_report(x->L, 1, 0);
    } else {
      aio_buf_add(is_out ? &x->obuf : &x->ebuf, buf->base, (size_t)nread);
    }
  }
  free(buf->base);
  if (nread < 0) {
    uv_close((uv_handle_t *)s, x_closed);
    x->eofs++;
    x_maybe_settle(x);
  }
}

static void x_written(uv_write_t *req, int status) {
  (void)status;
  xproc *x = (xproc *)req->data;
  /* EOF for the program's stdin (unless closing it cancelled the write) */
  if (!uv_is_closing((uv_handle_t *)&x->in)) uv_close((uv_handle_t *)&x->in, x_closed);
}

static void x_on_cancel(lua_State *L, aio_future *f, void *ud) {
  (void)L;
  (void)f;
  xproc *x = (xproc *)ud;
  x->fut = NULL;
  if (!x->exited) uv_process_kill(&x->proc, SIGTERM);
}

/* __gc of an anchor (the state is closing with the program's handles open): closes them; the
** last close callback frees the record. */
static int xanchor_gc(lua_State *L) {
  xanchor *a = (xanchor *)lua_touserdata(L, 1);
  xproc *x = a->x;
  if (!x) return 0;
  a->x = NULL;
  x->anchor = NULL;
  uv_handle_t *hs[] = {(uv_handle_t *)&x->proc, (uv_handle_t *)&x->out, (uv_handle_t *)&x->err,
                       x->in.loop ? (uv_handle_t *)&x->in : NULL};
  for (int i = 0; i < 4; i++)
    if (hs[i] && !uv_is_closing(hs[i])) uv_close(hs[i], x_closed);
  return 0;
}

/* Makes x's anchor and keeps it in the registry until x is freed. */
static void x_anchor(lua_State *L, xproc *x) {
  xanchor *a = (xanchor *)lua_newuserdatauv(L, sizeof *a, 0);
  a->x = x;
  if (luaL_newmetatable(L, "aio.process.exec_anchor")) {
    lua_pushcfunction(L, xanchor_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  x->anchorref = aio_ref(L, -1);
  x->anchor = a;
  lua_pop(L, 1);
}

/* Fills a NULL-terminated argv/env array from a Lua list at idx (strings kept on the stack). */
static char **string_list(lua_State *L, int idx, const char *first) {
  int n = idx ? (int)luaL_len(L, idx) : 0;
  char **v = (char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 2), 0);
  int k = 0;
  if (first) v[k++] = (char *)first;
  for (int i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    v[k++] = (char *)luaL_checkstring(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &v[k - 1]);  /* keep it alive until the spawn returned */
  }
  v[k] = NULL;
  return v;
}

/* Removes the anchors string_list put in the registry. */
static void drop_anchors(lua_State *L, char **v) {
  for (int i = 0; v[i]; i++) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &v[i]);
  }
}

/* process_c.exec(file, args, opts) -> future of {status=, signal=, ok=, stdout=, stderr=}
** opts: stdin (string), cwd, env (list of "K=V"), on_stdout / on_stderr (fn(chunk)). */
static int l_exec(lua_State *L) {
  const char *file = luaL_checkstring(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_istable(L, 3)) { lua_settop(L, 2); lua_newtable(L); }
  lua_settop(L, 3);
  char **argv = string_list(L, lua_istable(L, 2) ? 2 : 0, file);
  lua_getfield(L, 3, "env");
  char **env = NULL;
  if (lua_istable(L, -1)) env = string_list(L, lua_gettop(L), NULL);
  lua_getfield(L, 3, "cwd");
  const char *cwd = lua_tostring(L, -1);
  lua_getfield(L, 3, "stdin");
  size_t inlen = 0;
  const char *in = lua_tolstring(L, -1, &inlen);

  xproc *x = calloc(1, sizeof *x);
  if (!x) return luaL_error(L, "out of memory");
  x->L = aio_loop_get(L)->L;
  x->on_out = x->on_err = LUA_NOREF;
  uv_loop_t *uv = aio_uv(L);
  uv_pipe_init(uv, &x->out, 0);
  uv_pipe_init(uv, &x->err, 0);
  x->out.data = x->err.data = x->proc.data = x;
  uv_stdio_container_t stdio[3];
  if (in) {
    uv_pipe_init(uv, &x->in, 0);
    x->in.data = x;
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&x->in;
  } else {
    stdio[0].flags = UV_IGNORE;
  }
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&x->out;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&x->err;
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.file = file;
  o.args = argv;
  o.env = env;
  o.cwd = cwd;
  o.exit_cb = x_exit;
  o.stdio_count = 3;
  o.stdio = stdio;
  int rc = uv_spawn(uv, &x->proc, &o);
  drop_anchors(L, argv);
  if (env) drop_anchors(L, env);
  x->nhandles = in ? 3 : 2;
  if (rc != 0) {
    /* the process handle is initialised even on failure: close everything */
    x->nhandles++;
    x->settled = 1;
    uv_close((uv_handle_t *)&x->proc, x_closed);
    uv_close((uv_handle_t *)&x->out, x_closed);
    uv_close((uv_handle_t *)&x->err, x_closed);
    if (in) uv_close((uv_handle_t *)&x->in, x_closed);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", file, uv_strerror(rc));
    return 2;
  }
  x->nhandles++;  /* the process handle */
  x_anchor(L, x);
  lua_getfield(L, 3, "on_stdout");
  if (lua_isfunction(L, -1)) x->on_out = aio_ref(L, -1);
  lua_getfield(L, 3, "on_stderr");
  if (lua_isfunction(L, -1)) x->on_err = aio_ref(L, -1);
  uv_read_start((uv_stream_t *)&x->out, x_alloc, x_read);
  uv_read_start((uv_stream_t *)&x->err, x_alloc, x_read);
  if (in) {
    aio_buf_add(&x->inbuf, in, inlen);
    uv_buf_t b = uv_buf_init(x->inbuf.data ? x->inbuf.data : (char *)"", (unsigned)inlen);
    x->wreq.data = x;
    if (uv_write(&x->wreq, (uv_stream_t *)&x->in, &b, 1, x_written) != 0)
      uv_close((uv_handle_t *)&x->in, x_closed);
  }
  x->fut = aio_future_new_held(L, &x->futref, x_on_cancel, x);
  lua_pushinteger(L, x->proc.pid);
  return 2;
}

void aio_exec_open(lua_State *L) {
  lua_pushcfunction(L, l_exec);
  lua_setfield(L, -2, "exec");
}

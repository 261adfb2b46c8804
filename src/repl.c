/*
** repl.c — the REPL's terminal, driven by the event loop (module aio.repl_c + aio_repl).
**
** The read-eval-print logic (prompts, incomplete chunks, value printing, console commands,
** completion candidates) lives in lua/aio/repl.lua; this file owns what must be C:
**
**   - line editing with libedit's readline emulation in its *callback* interface. The tty is
**     opened again as /dev/tty and watched with a uv_poll_t, so the loop (timers, tasks,
**     sockets) keeps running while the prompt waits. Polling fd 0 itself would set O_NONBLOCK
**     on the terminal's shared file description and make stdout non-blocking too.
**     libedit needs its handler re-installed after every line, and rl_catch_signals = 0.
**   - output from background tasks while a line is being edited: clear the input rows, print,
**     rl_forced_update_display() (rl_redisplay would draw over the printed text);
**   - piped input (stdin not a tty): lines read by uv_fs_read on fd 0, without editing or
**     escape sequences, echoed after the prompt as Debian's lua5.4 -i (GNU readline) does;
**   - output of thread-pool workers (aio.console on their states, console_write here): while a
**     prompt is shown it is queued and printed above the line by the loop (the async handle
**     that Ctrl-C also uses), otherwise written at once; one mutex orders it with the REPL's own
**     drawing, so a worker's text never lands between the prompt and the line. Forked workers
**     (process pools, process.fork) send theirs to the parent while the REPL edits lines
**     (aio_proc_console_route, process.c), which prints it here (aio_console_print);
**   - Ctrl-C: a sigaction handler (async-signal-safe: a flag, lua_sethook on the running
**     line's coroutine as lua.c does, uv_async_send). In the loop, the async callback either
**     clears the edited line or asks Lua to cancel the running line's task; the hook stops a
**     line that is busy in Lua code and never gives the loop a chance.
**
** There is one terminal, so the state is a single static struct. Handles are malloc'ed and
** freed in their close callbacks (libuv's memory rule).
*/
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>
#include <editline/readline.h>
#include "aio.h"
#include "process.h"
#include "repl.h"

#define REPL_HISTORY_MAX 1000
#define REPL_LINE_MAX 1000           /* bytes: longer lines are cut (see on_tty_readable) */

static struct {
  lua_State *L;                      /* the main state (callbacks touch Lua through it) */
  int open;
  int editing;                       /* libedit on a terminal (else: plain piped lines) */
  int prompt_shown;                  /* a line is being edited: output goes above it */
  FILE *in;                          /* /dev/tty, libedit's input */
  uv_poll_t *poll;                   /* readiness of the tty */
  uv_async_t *async;                 /* Ctrl-C wake-up from the signal handler */
  uv_signal_t *winch;                /* terminal resized */
  uv_prepare_t *prepare;             /* before each poll: failures to show above the prompt */
  struct sigaction old_int;
  volatile sig_atomic_t sigint;      /* 1: Ctrl-C pending, 2: pending and aimed at a running line */
  volatile long long sigint_at;      /* when the pending Ctrl-C came (ms) */
  struct termios termios;            /* the terminal's settings before libedit */
  int have_termios;
  lua_State *volatile line_co;       /* coroutine of the running line (for the Ctrl-C hook) */
  aio_future *line_fut;              /* future of the pending readline, or NULL */
  int line_ref;
  int completer_ref;                 /* Lua function(text, line, start, end) -> candidates */
  int interrupt_ref;                 /* Lua function() called on Ctrl-C while a line runs */
  char *history;                     /* history file, or NULL */
  char *prompt;                      /* the prompt being shown */
  char *old_ctype;                   /* LC_CTYPE before the REPL */
  /* piped input */
  uv_fs_t *req;                      /* the read in flight, or NULL */
  char rbuf[4096];
  char *pend; size_t plen, pcap;     /* bytes read but not yet returned as lines */
  int eof;
  /* completion candidates handed to libedit's generator */
  char **cands; int ncands, icand;
} R = {.line_ref = LUA_NOREF, .completer_ref = LUA_NOREF, .interrupt_ref = LUA_NOREF};

/* Console output of other threads (see console_write): the mutex orders their writes with the
** REPL's drawing; while `queueing` (a prompt is shown) their text waits in `buf` as records
** (one byte: 1 for stderr, then the text's length as a size_t, then the text) for the loop. */
static struct {
  pthread_mutex_t mu;
  int queueing;
  uv_async_t *async;                 /* R.async while the REPL edits lines, else NULL */
  char *buf; size_t len, cap;
} CON = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ---- output ------------------------------------------------------------------------------ */

/* Advances the cursor position (*row, *col) over the n bytes of s as libedit lays them out on a
** terminal `cols` wide: wide characters take two columns and move whole to the next row when
** they do not fit, tabs go to the next multiple of 8, control characters show as ^X. */
static void advance(const char *s, size_t n, int cols, int *row, int *col) {
  mbstate_t st;
  memset(&st, 0, sizeof st);
  while (n > 0) {
    wchar_t wc;
    size_t len = mbrtowc(&wc, s, n, &st);
    int w;
    if (len == (size_t)-1 || len == (size_t)-2) {  /* not text in this locale: one byte */
      memset(&st, 0, sizeof st);
      wc = 0;
      len = 1;
      w = 1;
    } else {
      if (len == 0) len = 1;
      if (wc == L'\t') w = 8 - *col % 8;
      else if (wc < 0x20 || wc == 0x7f) w = 2;
      else if ((w = wcwidth(wc)) < 0) w = 1;
    }
    if (*col + w > cols && wc != L'\t') { (*row)++; *col = 0; }
    *col += w;
    if (*col >= cols) { (*row) += *col / cols; *col %= cols; }
    s += len;
    n -= len;
  }
}

/* Width of the terminal in columns (80 if unknown). */
static int term_cols(void) {
  struct winsize ws;
  if (R.in && ioctl(fileno(R.in), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

/* Writes s to out, turning "\n" into "\r\n": libedit's edit mode may have turned output
** post-processing off, and an extra carriage return is harmless when it has not. */
static void write_crlf(FILE *out, const char *s, size_t n) {
  size_t start = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '\n') {
      fwrite(s + start, 1, i - start, out);
      fputs("\r\n", out);
      start = i + 1;
    }
  }
  fwrite(s + start, 1, n - start, out);
}

/* Writes s to out (stdout or stderr); while a line is being edited, above it, then redraws
** prompt and line. The caller holds CON.mu. */
static void repl_output_locked(FILE *out, const char *s, size_t n) {
  if (!R.prompt_shown) {
    fwrite(s, 1, n, out);
    fflush(out);
    return;
  }
  /* 1. Go to the first row of prompt+line and clear from there to the end of the screen. */
  int cols = term_cols(), row = 0, col = 0;
  if (R.prompt) advance(R.prompt, strlen(R.prompt), cols, &row, &col);
  if (rl_line_buffer) advance(rl_line_buffer, strnlen(rl_line_buffer, (size_t)rl_point), cols, &row, &col);
  fputs("\r", stdout);
  if (row > 0) fprintf(stdout, "\x1b[%dA", row);
  fputs("\x1b[J", stdout);
  fflush(stdout);
  /* 2. Print the text, always ending with a newline so the prompt gets a row of its own. */
  write_crlf(out, s, n);
  if (n > 0 && s[n - 1] != '\n') fputs("\r\n", out);
  fflush(out);
  /* 3. Draw prompt and half-typed line again, cursor where it was. */
  rl_forced_update_display();
}

/* repl_output_locked, taking the console mutex. */
static void repl_output(FILE *out, const char *s, size_t n) {
  pthread_mutex_lock(&CON.mu);
  repl_output_locked(out, s, n);
  pthread_mutex_unlock(&CON.mu);
}

/* Sets whether a prompt is shown (CON.mu held): while one is, other threads' output is queued
** for the loop. */
static void set_prompt_shown_locked(int shown) {
  R.prompt_shown = shown;
  CON.queueing = shown && CON.async != NULL;
}

/* Prints the output other threads queued (above the line being edited, if any; CON.mu held). */
static void drain_console_locked(void) {
  size_t at = 0;
  while (at < CON.len) {
    size_t n;
    memcpy(&n, CON.buf + at + 1, sizeof n);
    repl_output_locked(CON.buf[at] ? stderr : stdout, CON.buf + at + 1 + sizeof n, n);
    at += 1 + sizeof n + n;
  }
  CON.len = 0;
}

/* drain_console_locked, taking the console mutex. */
static void drain_console(void) {
  pthread_mutex_lock(&CON.mu);
  drain_console_locked();
  pthread_mutex_unlock(&CON.mu);
}

/* Hides the prompt (other threads write at once from now on) and prints what they queued
** while it was shown, in the same critical section: a worker's next text cannot come out
** before its earlier, queued text. */
static void hide_prompt(void) {
  pthread_mutex_lock(&CON.mu);
  set_prompt_shown_locked(0);
  drain_console_locked();
  pthread_mutex_unlock(&CON.mu);
}

/* Appends a record to the queue (CON.mu held); false if memory ran out. */
static int console_queue(int to_stderr, const char *s, size_t n) {
  size_t need = CON.len + 1 + sizeof n + n;
  if (need > CON.cap) {
    size_t cap = CON.cap ? CON.cap : 4096;
    while (cap < need) cap *= 2;
    char *b = realloc(CON.buf, cap);
    if (b == NULL) return 0;
    CON.buf = b;
    CON.cap = cap;
  }
  CON.buf[CON.len] = (char)(to_stderr != 0);
  memcpy(CON.buf + CON.len + 1, &n, sizeof n);
  memcpy(CON.buf + CON.len + 1 + sizeof n, s, n);
  CON.len = need;
  return 1;
}

/* console_write(s [, to_stderr [, flush]]): console output of any thread's Lua state (the
** writer aio.console installs in thread-pool workers). While the REPL shows a prompt the text
** is queued and printed above the line by the loop; otherwise it is written at once (flushed
** when `flush`, as print does, and always on stderr). */
static int l_console_write(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  int to_stderr = lua_toboolean(L, 2);
  if (aio_proc_console_route(to_stderr, s, n)) return 0;  /* a forked worker: to the parent */
  pthread_mutex_lock(&CON.mu);
  if (CON.queueing && console_queue(to_stderr, s, n)) {
    uv_async_send(CON.async);
  } else {
    FILE *out = to_stderr ? stderr : stdout;
    fwrite(s, 1, n, out);
    if (to_stderr || lua_toboolean(L, 3)) fflush(out);
  }
  pthread_mutex_unlock(&CON.mu);
  return 0;
}

/* Prints console output on the loop's thread (repl.h): a forked worker's, or the REPL's own. */
void aio_console_print(int to_stderr, const char *s, size_t n) {
  if (!aio_proc_console_route(to_stderr, s, n)) repl_output(to_stderr ? stderr : stdout, s, n);
}

/* write(s [, to_stderr]): prints s, above the line being edited if there is one (in a process
** forked from the REPL's, which has these wrappers too: sent to the parent). */
static int l_write(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  aio_console_print(lua_toboolean(L, 2), s, n);
  return 0;
}

/* Pushes require(name) (unprotected: the callers below run under lua_pcall). */
static void push_required(lua_State *L, const char *name) {
  lua_getglobal(L, "require");
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
}

/* Protected: require("aio.console").install(repl_c.console_write, repl_c.std_print). */
static int install_console_p(lua_State *L) {
  push_required(L, "aio.console");
  lua_getfield(L, -1, "install");
  push_required(L, "aio.repl_c");
  lua_getfield(L, -1, "console_write");
  lua_getfield(L, -2, "std_print");
  lua_remove(L, -3);
  lua_call(L, 2, 0);
  return 0;
}

/* Protected: loads aio.console and aio.repl_c (package.loaded keeps them). */
static int preload_console_p(lua_State *L) {
  push_required(L, "aio.console");
  push_required(L, "aio.repl_c");
  return 0;
}

/* Loads the modules aio_console_install needs into L, before a fork, so that the child only
** looks them up: a child of a process with threads should allocate little. Under ASan (GCC
** 12's), an allocator lock another thread held at the fork stays held in the child (glibc's
** malloc takes its locks around fork; that allocator does not), and parsing aio.console in the
** child deadlocked it in about 4 runs of 10 of misuse_spec, right after a pool's threads
** started. Release builds are not at risk. */
void aio_console_preload(lua_State *L) {
  lua_pushcfunction(L, preload_console_p);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) lua_pop(L, 1);
}

/* Installs aio.console's wrappers with console_write as the writer (repl.h): in a thread-pool
** worker, a process-pool worker or a process.fork child. */
void aio_console_install(lua_State *L) {
  lua_pushcfunction(L, install_console_p);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) lua_pop(L, 1);
}

/* ---- reading lines ----------------------------------------------------------------------- */

/* Completes the pending readline future with the value on top of L (popped). */
static void finish_line(lua_State *L) {
  aio_future *f = R.line_fut;
  int ref = R.line_ref;
  R.line_fut = NULL;
  R.line_ref = LUA_NOREF;
  if (f == NULL) {
    lua_pop(L, 1);
    return;
  }
  aio_future_resolve(L, f, 1);
  aio_unref(L, ref);
}

/* Stops editing: no handler, no polling, output goes straight to stdout again. */
static void stop_editing(void) {
  if (R.prompt_shown) rl_callback_handler_remove();
  hide_prompt();
  if (R.poll) uv_poll_stop(R.poll);
}

/* libedit's line handler: a complete line (malloc'ed, ours to free) or NULL at EOF. */
static void on_line(char *line) {
  lua_State *L = R.L;
  stop_editing();
  if (line) lua_pushstring(L, line);
  else {
    fputs("\n", stdout);  /* Ctrl-D leaves the cursor after the prompt */
    fflush(stdout);
    lua_pushnil(L);
  }
  free(line);
  finish_line(L);
}

/* The tty is readable: let libedit consume what is there (it calls on_line at Enter).
** A line that reaches REPL_LINE_MAX bytes ends there, as if Enter had been pressed (lua.c
** without readline cuts its input at LUA_MAXINPUT the same way); the rest of a paste goes on
** as the next line. Why: libedit 3.1-20221030 points rl_line_buffer at a conversion buffer of
** 1024 bytes that it reallocates as the line grows, without updating the pointer, and writes
** rl_line_buffer[rl_end] after every key. Past that size the write went to freed memory (a
** pasted 6 KB line aborted with "malloc(): invalid next size"). History entries are kept under
** the same bound (l_add_history, l_open), since Up would bring them into the line. */
static void on_tty_readable(uv_poll_t *h, int status, int events) {
  (void)h; (void)events;
  if (status < 0 || !R.prompt_shown) {
    if (status < 0) {  /* the terminal went away: behave as EOF */
      stop_editing();
      lua_pushnil(R.L);
      finish_line(R.L);
    }
    return;
  }
  rl_callback_read_char();
  if (R.prompt_shown && rl_end >= REPL_LINE_MAX && rl_line_buffer) {
    char *line = malloc((size_t)rl_end + 1);
    if (line) {
      memcpy(line, rl_line_buffer, (size_t)rl_end);
      line[rl_end] = '\0';
    }
    fputs("\r\n", stdout);
    on_line(line);  /* (a NULL line would read as EOF: only when out of memory) */
  }
}

/* Takes one complete line out of the piped-input buffer onto L; 0 if there is none yet. */
static int take_plain_line(lua_State *L) {
  char *nl = R.plen ? memchr(R.pend, '\n', R.plen) : NULL;
  size_t len;
  if (nl) len = (size_t)(nl - R.pend);
  else if (R.eof && R.plen > 0) len = R.plen;  /* last line without a newline */
  else return 0;
  lua_pushlstring(L, R.pend, len);
  size_t used = nl ? len + 1 : len;
  memmove(R.pend, R.pend + used, R.plen - used);
  R.plen -= used;
  /* Echo it as GNU readline does on a non-terminal (what Debian's lua5.4 -i prints). */
  fwrite(lua_tostring(L, -1), 1, len, stdout);
  fputc('\n', stdout);
  fflush(stdout);
  return 1;
}

static void start_plain_read(void);

/* A piped-input read finished: buffer the bytes, hand out a line if one is complete. */
static void on_plain_read(uv_fs_t *req) {
  lua_State *L = R.L;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  free(req);
  R.req = NULL;
  if (!R.open) return;
  if (n <= 0) R.eof = 1;
  else {
    if (R.plen + (size_t)n > R.pcap) {
      size_t cap = R.pcap ? R.pcap * 2 : 8192;
      while (cap < R.plen + (size_t)n) cap *= 2;
      char *p = realloc(R.pend, cap);
      if (p == NULL) { R.eof = 1; goto deliver; }
      R.pend = p;
      R.pcap = cap;
    }
    memcpy(R.pend + R.plen, R.rbuf, (size_t)n);
    R.plen += (size_t)n;
  }
deliver:
  if (R.line_fut == NULL) return;
  if (take_plain_line(L)) finish_line(L);
  else if (R.eof) { lua_pushnil(L); finish_line(L); }
  else start_plain_read();
}

/* Starts reading more piped input (fd 0) on libuv's thread pool, unless a read is in flight. */
static void start_plain_read(void) {
  if (R.req || R.eof) return;
  R.req = malloc(sizeof *R.req);
  if (R.req == NULL) { R.eof = 1; return; }
  uv_buf_t buf = uv_buf_init(R.rbuf, sizeof R.rbuf);
  if (uv_fs_read(aio_uv(R.L), R.req, 0, &buf, 1, -1, on_plain_read) < 0) {
    free(R.req);
    R.req = NULL;
    R.eof = 1;
  }
}

/* Cancelling a readline (its task was cancelled): stop editing, forget the future. */
static void on_readline_cancel(lua_State *L, aio_future *f, void *ud) {
  (void)f; (void)ud;
  stop_editing();
  aio_unref(L, R.line_ref);
  R.line_fut = NULL;
  R.line_ref = LUA_NOREF;
}

/* readline(prompt) -> line | nil (end of input) | false (Ctrl-C at the prompt). Awaits. */
static int l_readline(lua_State *L) {
  const char *prompt = luaL_optstring(L, 1, "> ");
  if (!R.open) return luaL_error(L, "the REPL terminal is not open");
  if (R.line_fut) return luaL_error(L, "readline is already waiting for a line");
  R.line_fut = aio_future_new_held(L, &R.line_ref, on_readline_cancel, NULL);
  int fidx = lua_gettop(L);
  if (R.editing) {
    free(R.prompt);
    R.prompt = strdup(prompt);
    pthread_mutex_lock(&CON.mu);  /* no worker's text between the prompt and its flag */
    set_prompt_shown_locked(1);
    rl_callback_handler_install(R.prompt, on_line);  /* libedit needs it again for every line */
    pthread_mutex_unlock(&CON.mu);
    uv_poll_start(R.poll, UV_READABLE, on_tty_readable);
  } else {
    fputs(prompt, stdout);
    fflush(stdout);
    if (take_plain_line(L)) finish_line(L);
    else if (R.eof) { lua_pushnil(L); finish_line(L); }
    else start_plain_read();
  }
  return aio_await(L, fidx);
}

/* ---- Ctrl-C ------------------------------------------------------------------------------ */

/* Debug hook set by the signal handler on a busy line: raise "interrupted!" (lua.c's lstop). */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/* Monotonic milliseconds (clock_gettime is async-signal-safe). */
static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* SIGINT handler: only async-signal-safe work; the loop does the rest in on_sigint_async.
** A Ctrl-C the loop has not seen for a second means Lua code that never yields holds the
** loop (a busy background task, or a coroutine the hook does not reach): a second Ctrl-C
** then restores the terminal and ends the process the default way, as it would in lua.c. */
static void on_sigint(int sig) {
  if (R.sigint && now_ms() - R.sigint_at > 1000) {
    static const char msg[] = "\naioshell: the event loop is stuck in Lua code; exiting\n";
    if (R.in && R.have_termios) tcsetattr(fileno(R.in), TCSANOW, &R.termios);
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing to do */ }
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  if (!R.sigint) R.sigint_at = now_ms();
  lua_State *co = R.line_co;
  R.sigint = co ? 2 : 1;  /* 2: aimed at a running line, void if that line ends first */
  if (co) lua_sethook(co, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  if (R.async) uv_async_send(R.async);
}

/* Before the loop blocks while a line is edited: a background task that failed with nobody
** observing its error is reported above the prompt now, not only before the next prompt (the
** user may be waiting for exactly that task). Before the poll, not after it: tasks run between
** loop turns, so a failure is recorded after a turn's check phase, and the next turn may block. */
static void on_prepare(uv_prepare_t *h) {
  (void)h;
  if (!R.prompt_shown || !R.L) return;
  lua_State *L = R.L;
  if (aio_push_unobserved_report(L) > 0) {
    size_t n;
    const char *text = lua_tolstring(L, -1, &n);
    repl_output(stderr, text, n);
  }
  lua_pop(L, 1);
}

/* Ctrl-C seen by the loop: clear the edited line, or cancel the running line's task. */
static void on_sigint_async(uv_async_t *h) {
  (void)h;
  lua_State *L = R.L;
  drain_console();  /* the same handle wakes the loop for other threads' output */
  int what = R.sigint;
  if (!what) return;
  R.sigint = 0;
  lua_State *co = R.line_co;
  if (co) lua_sethook(co, NULL, 0, 0);  /* the line is suspended: cancelling is enough */
  if (R.line_fut) {                     /* idle at a prompt */
    if (what == 2) return;  /* the hook already stopped the line this Ctrl-C was meant for */
    if (R.prompt_shown) {
      rl_replace_line("", 0);
      stop_editing();
      fputs("^C\r\n", stdout);
      fflush(stdout);
    }
    lua_pushboolean(L, 0);
    finish_line(L);
  } else if (R.interrupt_ref != LUA_NOREF) {
    aio_pushref(L, R.interrupt_ref);
    aio_pcall_report(L, 0, 0);
  }
}

/* set_line(co | nil): the coroutine running the current line (Ctrl-C's hook target). */
static int l_set_line(lua_State *L) {
  R.line_co = lua_isthread(L, 1) ? lua_tothread(L, 1) : NULL;
  return 0;
}

/* ---- completion -------------------------------------------------------------------------- */

/* Frees the candidate list of the last completion. */
static void free_cands(void) {
  for (int i = 0; i < R.ncands; i++) free(R.cands[i]);
  free(R.cands);
  R.cands = NULL;
  R.ncands = R.icand = 0;
}

/* libedit's generator: hands out the candidates Lua returned, one per call. */
static char *cand_generator(const char *text, int state) {
  (void)text;
  if (state == 0) R.icand = 0;
  if (R.icand < R.ncands) return strdup(R.cands[R.icand++]);
  return NULL;
}

/* Protected: calls the Lua completer and copies its candidates (strings) into R.cands. */
static int collect_cands(lua_State *L) {
  aio_pushref(L, R.completer_ref);
  lua_pushstring(L, (const char *)lua_touserdata(L, 1));
  lua_pushstring(L, rl_line_buffer ? rl_line_buffer : "");
  lua_pushinteger(L, lua_tointeger(L, 2));
  lua_pushinteger(L, lua_tointeger(L, 3));
  lua_call(L, 4, 1);
  if (!lua_istable(L, -1)) return 0;
  int n = (int)luaL_len(L, -1);
  R.cands = calloc((size_t)n + 1, sizeof *R.cands);
  if (R.cands == NULL) return 0;
  for (int i = 1; i <= n; i++) {
    const char *s = (lua_rawgeti(L, -1, i), lua_tostring(L, -1));
    if (s) R.cands[R.ncands++] = strdup(s);
    lua_pop(L, 1);
  }
  return 0;
}

/* rl_attempted_completion_function: candidates from Lua; never libedit's file names. */
static char **on_complete(const char *text, int start, int end) {
  lua_State *L = R.L;
  rl_attempted_completion_over = 1;
  free_cands();
  if (R.completer_ref == LUA_NOREF) return NULL;
  lua_pushcfunction(L, collect_cands);
  lua_pushlightuserdata(L, (void *)text);
  lua_pushinteger(L, start);
  lua_pushinteger(L, end);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) lua_pop(L, 1);  /* a failing completer completes nothing */
  if (R.ncands == 0) return NULL;
  return rl_completion_matches(text, cand_generator);
}

/* ---- opening and closing ----------------------------------------------------------------- */

/* Close callback of the REPL's handles: their memory is freed only here. */
static void on_handle_closed(uv_handle_t *h) {
  free(h);
}

/* SIGWINCH: tell libedit the new width. */
static void on_winch(uv_signal_t *h, int sig) {
  (void)h; (void)sig;
  if (R.editing) rl_resize_terminal();
}

/* Stores the function field `name` of the options table at 1 as a ref (or LUA_NOREF). */
static int opt_ref(lua_State *L, const char *name) {
  int ref = LUA_NOREF;
  if (lua_getfield(L, 1, name) == LUA_TFUNCTION) ref = aio_ref(L, -1);
  lua_pop(L, 1);
  return ref;
}

/* Drops the history entries too long to be edited safely (see on_tty_readable). */
static void drop_long_history(void) {
  for (int i = history_length - 1; i >= 0; i--) {
    HIST_ENTRY *he = history_get(history_base + i);
    if (he && he->line && strlen(he->line) >= REPL_LINE_MAX) {
      free(remove_history(i));  /* (libedit mallocs the entry it hands back) */
    }
  }
}

/* open{editing=, history=, history_size=, completer=, interrupt=} -> editing (boolean).
** Takes the terminal: libedit (or piped reading), history, Ctrl-C handling. */
static int l_open(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (R.open) return luaL_error(L, "the REPL terminal is already open");
  aio_loop *loop = aio_loop_get(L);
  R.L = loop->L;
  lua_getfield(L, 1, "editing");
  R.editing = lua_isnil(L, -1) ? isatty(0) : lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "history");
  const char *hist = lua_tostring(L, -1);
  R.history = hist && *hist ? strdup(hist) : NULL;
  lua_pop(L, 1);
  lua_getfield(L, 1, "history_size");
  int hmax = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : REPL_HISTORY_MAX;
  lua_pop(L, 1);
  R.completer_ref = opt_ref(L, "completer");
  R.interrupt_ref = opt_ref(L, "interrupt");
  R.eof = 0;
  R.plen = 0;
  if (R.editing) {
    R.in = fopen("/dev/tty", "r");
    if (R.in == NULL) R.in = stdin;  /* no controlling terminal: edit fd 0 after all */
    /* libedit takes multibyte input only in a UTF-8 LC_CTYPE; lua.c leaves the "C" locale, so
    ** the REPL switches LC_CTYPE alone (not LC_NUMERIC: number formatting stays as in lua.c) to
    ** the user's while it runs, as Python's REPL does. */
    const char *ctype = setlocale(LC_CTYPE, NULL);
    R.old_ctype = ctype ? strdup(ctype) : NULL;
    setlocale(LC_CTYPE, "");
    R.have_termios = tcgetattr(fileno(R.in), &R.termios) == 0;
    rl_instream = R.in;
    rl_outstream = stdout;
    rl_readline_name = "aioshell";
    rl_catch_signals = 0;
    rl_completion_append_character = '\0';
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^#~[]})";
    rl_completer_word_break_characters = (char *)rl_basic_word_break_characters;
    rl_attempted_completion_function = on_complete;
    rl_initialize();
    using_history();
    stifle_history(hmax > 0 ? hmax : REPL_HISTORY_MAX);
    if (R.history) read_history(R.history);
    drop_long_history();
    R.poll = malloc(sizeof *R.poll);
    if (R.poll == NULL || uv_poll_init(&loop->uv, R.poll, fileno(R.in)) != 0) {
      free(R.poll);
      R.poll = NULL;
      return luaL_error(L, "cannot watch the terminal");
    }
    R.winch = malloc(sizeof *R.winch);
    if (R.winch) {
      uv_signal_init(&loop->uv, R.winch);
      uv_signal_start(R.winch, on_winch, SIGWINCH);
      uv_unref((uv_handle_t *)R.winch);
    }
    R.prepare = malloc(sizeof *R.prepare);
    if (R.prepare) {
      uv_prepare_init(&loop->uv, R.prepare);
      uv_prepare_start(R.prepare, on_prepare);
      uv_unref((uv_handle_t *)R.prepare);
    }
  }
  R.async = malloc(sizeof *R.async);
  if (R.async) {
    uv_async_init(&loop->uv, R.async, on_sigint_async);
    uv_unref((uv_handle_t *)R.async);
    if (R.editing) {
      pthread_mutex_lock(&CON.mu);
      CON.async = R.async;
      pthread_mutex_unlock(&CON.mu);
    }
  }
  if (R.editing) aio_proc_console_shared(1);  /* forked workers' output comes here from now on */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, &R.old_int);
  R.open = 1;
  lua_pushboolean(L, R.editing);
  return 1;
}

/* add_history(line): remembers a line (or a whole multi-line chunk) for the arrow keys. */
static int l_add_history(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  if (R.editing && n > 0 && n < REPL_LINE_MAX) add_history(s);  /* (see on_tty_readable) */
  return 0;
}

/* close(): gives the terminal back: history saved, handlers removed, SIGINT as before. */
static int l_close(lua_State *L) {
  if (!R.open) return 0;
  R.open = 0;
  sigaction(SIGINT, &R.old_int, NULL);
  R.line_co = NULL;
  if (R.line_fut) {
    aio_future *f = R.line_fut;
    R.line_fut = NULL;
    f->on_cancel = NULL;
    aio_unref(L, R.line_ref);
    R.line_ref = LUA_NOREF;
  }
  if (R.editing) {
    stop_editing();
    aio_proc_console_shared(0);
    if (R.history) write_history(R.history);
    if (R.poll) uv_close((uv_handle_t *)R.poll, on_handle_closed);
    if (R.winch) uv_close((uv_handle_t *)R.winch, on_handle_closed);
    if (R.prepare) uv_close((uv_handle_t *)R.prepare, on_handle_closed);
    R.poll = NULL;
    R.winch = NULL;
    R.prepare = NULL;
    if (R.in && R.in != stdin) fclose(R.in);
    R.in = NULL;
    rl_instream = stdin;
    if (R.old_ctype) setlocale(LC_CTYPE, R.old_ctype);
    free(R.old_ctype);
    R.old_ctype = NULL;
  }
  pthread_mutex_lock(&CON.mu);
  CON.async = NULL;
  CON.queueing = 0;
  drain_console_locked();  /* what other threads queued last, printed now */
  pthread_mutex_unlock(&CON.mu);
  if (R.async) uv_close((uv_handle_t *)R.async, on_handle_closed);
  R.async = NULL;
  /* A piped read still in flight frees its own request when it completes (R.open is 0). */
  aio_unref(L, R.completer_ref);
  aio_unref(L, R.interrupt_ref);
  R.completer_ref = R.interrupt_ref = LUA_NOREF;
  free(R.history);
  free(R.prompt);
  free(R.pend);
  R.history = R.prompt = R.pend = NULL;
  R.plen = R.pcap = 0;
  free_cands();
  return 0;
}

/* hrtime() -> seconds of the monotonic clock (for :time). */
static int l_hrtime(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime() / 1e9);
  return 1;
}

/* isatty(fd) -> boolean. */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 0)));
  return 1;
}

/* In a forked child: the console mutex may have been held by a thread that is not there, and
** the prompt (the terminal) is not the child's to draw. Nor is the REPL the child's to close:
** os.exit there (the REPL wraps it with close) must not stop the parent's editing handles, which
** the child's loop no longer has (libuv's assertion), nor say for the whole process tree that
** the console went away, nor write the history file. */
static void console_atfork_child(void) {
  R.prompt_shown = 0;
  R.open = 0;
  pthread_mutex_init(&CON.mu, NULL);
  CON.async = NULL;
  CON.queueing = 0;
  CON.len = 0;
}

static pthread_once_t console_once = PTHREAD_ONCE_INIT;

/* Registers console_atfork_child (once per process). */
static void console_install_atfork(void) { pthread_atfork(NULL, NULL, console_atfork_child); }

/* The module aio.repl_c (registered in src/modules.def). */
int luaopen_aio_repl_c(lua_State *L) {
  pthread_once(&console_once, console_install_atfork);
  static const luaL_Reg funcs[] = {
    {"open", l_open},         {"close", l_close},   {"readline", l_readline},
    {"write", l_write},       {"add_history", l_add_history},
    {"set_line", l_set_line}, {"hrtime", l_hrtime}, {"isatty", l_isatty},
    {"console_write", l_console_write}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  lua_getfield(L, LUA_REGISTRYINDEX, "aio.std_print");  /* see aio_openlibs */
  lua_setfield(L, -2, "std_print");
  return 1;
}

/* Protected body of aio_repl: require "aio.repl" and run it. */
static int repl_main(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "aio.repl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "run");
  lua_call(L, 0, 2);
  return 2;
}

/* os.exit(0, true) in protected mode (closes the state: finalizers run, handles close). */
static int repl_exit(lua_State *L) {
  lua_getglobal(L, "os");
  lua_getfield(L, -1, "exit");
  lua_pushinteger(L, 0);
  lua_pushboolean(L, 1);
  lua_call(L, 2, 0);
  return 0;
}

/* Runs the REPL until EOF; returns 1 if ok, 0 after an error (see repl.h).
** The session ending is the program ending, as with lua5.4 -i. Tasks were given a grace and
** cancelled by aio.repl; but timers (aio.every) and listening servers left behind would keep
** the host's drain running forever, so in that case the state is closed here (os.exit). */
int aio_repl(lua_State *L) {
  lua_pushcfunction(L, repl_main);
  if (aio_pcall_report(L, 0, 2) != LUA_OK) return 0;
  if (!lua_isnil(L, -2) && !lua_toboolean(L, -2)) {  /* false, message */
    lua_remove(L, -2);
    return 0;
  }
  lua_pop(L, 2);
  aio_loop *loop = aio_loop_get(L);
  loop->running++;
  uv_run(&loop->uv, UV_RUN_NOWAIT);  /* lets the REPL's own handles finish closing */
  loop->running--;
  if (loop->heap_len > 0 || uv_loop_alive(&loop->uv)) {
    aio_report_unobserved(L);
    lua_pushcfunction(L, repl_exit);
    aio_pcall_report(L, 0, 0);
  }
  return 1;
}

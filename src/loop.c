/*
** loop.c — the loop of a Lua state: creation, running until a future completes, draining at the
** end of a script, interrupts, and closing every handle at exit.
**
** The loop lives in a full userdata stored in the registry of the main state; its __gc (run by
** lua_close) closes every handle and the uv loop. Tasks are never resumed from inside a libuv
** callback: callbacks move tasks to the ready queue and aio_run_until drains it between
** iterations of uv_run. That keeps one resume site and no re-entrancy.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include "aio.h"

static atomic_uint loop_generation;  /* bumped by every aio_loop_close (see aio_loop_get) */

static const char LOOP_KEY = 'L';
static volatile sig_atomic_t interrupt_pending = 0;  /* a Ctrl-C not yet turned into an error */
static volatile sig_atomic_t drain_interrupted = 0;  /* a Ctrl-C during the drain: stop it */
static uv_async_t *volatile interrupt_async = NULL;  /* the main loop's wake-up, for signals */

/* The wake-up async fired: nothing to do here; aio_run_until checks the interrupt flag. */
static void on_wakeup(uv_async_t *handle) {
  (void)handle;
}

/* The coroutine being resumed by the main loop (read by aio_signal_interrupt), and that loop. */
lua_State *volatile aio__running_co = NULL;
aio_loop *aio__main_loop = NULL;

/* Non-zero (and cleared) when an interrupt is pending. */
int aio_take_interrupt(void) {
  if (!interrupt_pending) return 0;
  interrupt_pending = 0;
  return 1;
}

/* Debug hook armed by aio_signal_interrupt: removes itself and raises "interrupted!", unless
** the loop got there first (an await blocked in uv_run raised it and took the flag): one
** Ctrl-C is one error, never two. */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  if (aio_take_interrupt()) luaL_error(L, "interrupted!");
}

/* Async-signal-safe, for SIGINT handlers (lua.c's laction): makes the Lua code running now
** raise "interrupted!" at its next instruction, through a hook, and wakes the loop so that an
** await blocked in uv_run raises it instead. The hook goes on the coroutine the main loop is
** resuming (a busy task), and on L (may be NULL) unless L is inside the loop: Lua code there
** is a done callback called from C that an error must not unwind. */
void aio_signal_interrupt(lua_State *L) {
  int mask = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT;
  interrupt_pending = 1;
  lua_State *co = aio__running_co;
  if (co) lua_sethook(co, interrupt_hook, mask, 1);
  if (L && !(aio__main_loop && aio__main_loop->running)) lua_sethook(L, interrupt_hook, mask, 1);
  uv_async_t *a = interrupt_async;
  if (a) uv_async_send(a);
}

/* The loop's clock in nanoseconds (virtual when virtual time is on). */
uint64_t aio_now_ns(aio_loop *loop) {
  return loop->virtual_time ? loop->vnow : uv_hrtime();
}

static void state_alloc_set_loop(lua_State *L, aio_loop *loop);

/* __gc of the loop userdata: close everything (lua_close runs it last, as it was made first). */
static int loop_gc(lua_State *L) {
  aio_loop *loop = (aio_loop *)lua_touserdata(L, 1);
  if (!loop->closing) aio_loop_close(loop);
  return 0;
}

/* Closes a handle unless it is already closing (uv_walk callback). */
static void close_walk_cb(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle)) uv_close(handle, NULL);
}

/* Closes every handle and the loop itself; memory of other modules' handles is freed by their
** own close callbacks, which must not touch Lua (the state may be half closed). */
void aio_loop_close(aio_loop *loop) {
  loop->closing = 1;
  atomic_fetch_add(&loop_generation, 1);  /* forget every thread's cached loop */
  state_alloc_set_loop(loop->L, NULL);    /* and the state's own note of it */
  if (interrupt_async == &loop->wakeup) {
    interrupt_async = NULL;
    aio__main_loop = NULL;
    aio__running_co = NULL;
  }
  uv_walk(&loop->uv, close_walk_cb, NULL);
  while (uv_loop_close(&loop->uv) == UV_EBUSY) uv_run(&loop->uv, UV_RUN_NOWAIT);
  aio_timers_closed(loop);
  free(loop->sites);
  loop->sites = NULL;
  free(loop->anchor_free);
  loop->anchor_free = NULL;
  free(loop->heap);
  loop->heap = NULL;
}

/* Non-zero if L's main state already has a loop. */
int aio_loop_exists(lua_State *L) {
  int exists = lua_rawgetp(L, LUA_REGISTRYINDEX, &LOOP_KEY) == LUA_TUSERDATA;
  lua_pop(L, 1);
  return exists;
}

/* The allocator of states made by aio_newstate: lauxlib's, but a new block comes from malloc
** itself (glibc's realloc(NULL, n) is malloc(n) behind a wrapper of ~24 instructions, paid on
** every allocation: five per task). Blocks of either allocator are one heap's, so a state may
** switch to it at any time. Its ud, which it does not use, is the state's loop once made. */
static void *state_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud; (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return ptr ? realloc(ptr, nsize) : malloc(nsize);
}

/* luaL_newstate (its panic and warning functions) with state_alloc as the allocator. */
lua_State *aio_newstate(void) {
  lua_State *L = luaL_newstate();
  if (L) lua_setallocf(L, state_alloc, NULL);
  return L;
}

/* Sets the ud of L's allocator to loop (or NULL), if L is a state of aio_newstate's. */
static void state_alloc_set_loop(lua_State *L, aio_loop *loop) {
  void *ud;
  if (lua_getallocf(L, &ud) == state_alloc) lua_setallocf(L, state_alloc, loop);
}

/* Makes the loop userdata, initialises libuv and stores it in the registry. */
static aio_loop *loop_create(lua_State *L) {
  aio_loop *loop = (aio_loop *)lua_newuserdatauv(L, sizeof *loop, 0);
  memset(loop, 0, sizeof *loop);
#ifdef __linux__
  loop->heap_fd = -1;
#endif
  loop->closing = 1;  /* 'closed' until libuv is initialised, so __gc is safe on failure */
  lua_newtable(L);
  lua_pushcfunction(L, loop_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  int rc = uv_loop_init(&loop->uv);
  if (rc != 0) luaL_error(L, "cannot create event loop: %s", uv_strerror(rc));
  loop->closing = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  loop->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  /* Lua leaves the main thread's extra space uninitialised and copies it into every new
  ** coroutine; tasks keep their address there, so it must start out NULL. */
  *(void **)lua_getextraspace(loop->L) = NULL;
  loop->uv.data = loop;
  aio_timers_init(loop);  /* unreferenced: liveness of timers is counted by heap_len */
  uv_async_init(&loop->uv, &loop->wakeup, on_wakeup);
  uv_unref((uv_handle_t *)&loop->wakeup);
  uv_timer_init(&loop->uv, &loop->autojump);
  loop->autojump.data = loop;
  uv_unref((uv_handle_t *)&loop->autojump);
  loop->next_task_id = 1;
  loop->epoch = (double)uv_hrtime() / 1e9;
  if (!interrupt_async) {  /* the first loop is the main thread's: the one Ctrl-C talks to */
    interrupt_async = &loop->wakeup;
    aio__main_loop = loop;
  }
  signal(SIGPIPE, SIG_IGN);  /* a peer closing a socket must be an error value, not death */
  aio_fd_table_reserve();    /* before any thread of ours exists: see sys.c */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &LOOP_KEY);
  state_alloc_set_loop(L, loop);
  return loop;
}

/* The last loop aio_loop_get found on this OS thread, keyed by its state's registry table
** (one per state, shared by all its threads: reading its address is a pointer load, where the
** registry lookup of the loop cost ~230 instructions and that of the main thread ~120; every
** spawn and task switch asks for the loop). A loop closing bumps the generation, so a state
** freed (even on another thread) and a new one at the same address never meet a stale entry. */
static _Thread_local struct { const void *registry; aio_loop *loop; unsigned generation; } loop_cache;

/* aio_loop_get's miss: looks the loop up in the registry (or makes it) and caches it. Kept out
** of line: inlined, it made the hit path save and restore six registers (~15 instructions). */
#ifdef __GNUC__
__attribute__((noinline))
#endif
static aio_loop *loop_lookup(lua_State *L, const void *registry, unsigned generation) {
  aio_loop *loop;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LOOP_KEY) == LUA_TUSERDATA) {
    loop = (aio_loop *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    /* Finalizers of objects made before the loop run after its own at lua_close: the loop's
    ** memory is still there, but its handles and arrays are gone. Never cached. */
    if (loop->closing) luaL_error(L, "the event loop is closed (the program is ending)");
  } else {
    lua_pop(L, 1);
    loop = loop_create(L);
  }
  loop_cache.registry = registry;
  loop_cache.loop = loop;
  loop_cache.generation = generation;
  return loop;
}

/* Returns the loop of L's main state, creating it on first use. */
aio_loop *aio_loop_get(lua_State *L) {
  void *ud;
  if (lua_getallocf(L, &ud) == state_alloc && ud) return (aio_loop *)ud;  /* aioshell's states */
  const void *registry = lua_topointer(L, LUA_REGISTRYINDEX);
  unsigned generation = atomic_load_explicit(&loop_generation, memory_order_relaxed);
  if (registry == loop_cache.registry && generation == loop_cache.generation) return loop_cache.loop;
  return loop_lookup(L, registry, generation);
}

/* The libuv loop of L. */
uv_loop_t *aio_uv(lua_State *L) {
  return &aio_loop_get(L)->uv;
}

/* True while something could still make progress: ready tasks, timers or live handles. */
static int loop_alive(aio_loop *loop) {
  return loop->ready_head != NULL || loop->heap_len > 0 || uv_loop_alive(&loop->uv);
}

/* Makes the uv_run in progress return without blocking in its poll phase. Only while polling:
** a uv_stop outside uv_run would make the *next* uv_run skip its whole iteration (no I/O, no
** timers), and tasks that keep yielding would starve everything else. */
void aio_loop_wake(aio_loop *loop) {
  if (loop->polling) uv_stop(&loop->uv);
}

/* The autojump timer's callback: it only ends libuv's wait (idle_for_threshold decides). */
static void on_autojump(uv_timer_t *t) {
  (void)t;
}

/* Virtual time's autojump threshold (trio's autojump_threshold): lets libuv wait for I/O (a
** thread's result, a request from another thread or process, a response's next bytes) until
** the loop has had none, and no task ready, for loop->autojump_ms real milliseconds; true when
** so, and the clock may jump. Without the wait, a request already on its way from a thread
** arrived after the jump and was timed from the later virtual instant. Quiet time counts from
** loop->idle_since; libuv's wait ending before any timer was due (I/O) restarts it, a real
** timer's callback (a server's connection sweep, a reaper) does not: restarted by those, a
** threshold longer than a server's sweep never ran out and the clock never jumped. (Polling
** libuv's backend descriptor instead would miss watchers started in the last turn: libuv adds
** them to its epoll set only when it next polls.) */
static int idle_for_threshold(aio_loop *loop) {
  if (loop->autojump_ms <= 0) return 1;
  uint64_t now = uv_hrtime(), wait = (uint64_t)loop->autojump_ms * 1000000;
  if (loop->idle_since == 0) loop->idle_since = now;
  if (now - loop->idle_since < wait) {
    uint64_t left = loop->idle_since + wait - now;
    uv_timer_start(&loop->autojump, on_autojump, (left + 999999) / 1000000, 0);
    uv_ref((uv_handle_t *)&loop->autojump);
    uv_update_time(&loop->uv);
    int timeout = uv_backend_timeout(&loop->uv);  /* ms until the first timer is due */
    loop->running++, loop->polling++;
    uv_run(&loop->uv, UV_RUN_ONCE);
    loop->running--, loop->polling--;
    uv_timer_stop(&loop->autojump);
    uv_unref((uv_handle_t *)&loop->autojump);
    uint64_t after = uv_hrtime();
    if (timeout > 2 && after - now + 2000000 < (uint64_t)timeout * 1000000) loop->idle_since = after;
  }
  if (loop->ready_head != NULL || loop->heap_len == 0) return 0;
  return uv_hrtime() - loop->idle_since >= wait;
}

/* Polls libuv once (without blocking if tasks are ready); in virtual time, when nothing is
** ready, jumps the clock to the next timer instead of waiting for it (after the autojump
** threshold of real idleness, when one is set). */
static void loop_poll(aio_loop *loop) {
  if (loop->virtual_time && loop->ready_head == NULL && loop->heap_len > 0) {
    loop->running++, loop->polling++;
    uv_run(&loop->uv, UV_RUN_NOWAIT);  /* I/O first, then jump (no timers: no jump, just wait) */
    loop->running--, loop->polling--;
    if (loop->ready_head == NULL && loop->heap_len > 0 && idle_for_threshold(loop)) {
      uint64_t due = loop->heap[0]->due;
      if (due > loop->vnow) loop->vnow = due;
      aio_timers_run(loop);
      loop->idle_since = 0;
    }
    if (loop->ready_head != NULL || loop->heap_len == 0) loop->idle_since = 0;
    return;
  }
  loop->idle_since = 0;
  int mode = loop->ready_head ? UV_RUN_NOWAIT : UV_RUN_ONCE;
  /* The heap timer is unreferenced (liveness counts heap_len instead); reference it while
  ** polling, or uv_run would neither wait for it nor even run it (with no other referenced
  ** handle, uv_run skips its iteration: tasks that keep yielding would starve the timers). */
  if (loop->heap_len > 0) uv_ref((uv_handle_t *)&loop->heap_timer);
  loop->running++, loop->polling++;
  uv_run(&loop->uv, mode);
  loop->running--, loop->polling--;
  uv_unref((uv_handle_t *)&loop->heap_timer);
}

/* Non-zero (and cleared) when Ctrl-C came during the drain (the busy task's hook may have
** taken interrupt_pending: the drain must stop all the same). */
static int take_drain_interrupt(void) {
  if (!drain_interrupted) return 0;
  drain_interrupted = 0;
  return 1;
}

/* The top-level awaiter of f gives up (it raises next): a private future nobody else waits on
** (a top-level sleep's timer, a request) is cancelled, or it would keep the loop alive after
** the error. */
static void abandon(lua_State *L, aio_future *f, const char *msg) {
  if (f && f->state == AIO_PENDING && !f->is_task && !f->whead && f->topwaiters == 0)
    aio_future_cancel(L, f, msg);
}

/* True if L runs a __gc finalizer now. Lua 5.4.4+ stops its collector while a finalizer runs
** and lua_gc then answers -1 to everything: one call, where walking L's stack (a getinfo per
** frame) was 15% of a top-level sleep(0). A collector stopped otherwise (collectgarbage
** "stop", or a Lua before 5.4.4, which stops it in finalizers as the user does) falls back to
** the walk: a finalizer's frame is the metamethod "__gc". (Finalizers run wherever a
** collection step happens: running the loop there re-enters it.) */
static int in_finalizer(lua_State *L) {
  int running = lua_gc(L, LUA_GCISRUNNING, 0);
  if (running != 0) return running < 0;
  lua_Debug ar;
  for (int level = 0; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "n", &ar);
    if (ar.namewhat && strcmp(ar.namewhat, "metamethod") == 0 && ar.name && strcmp(ar.name, "__gc") == 0)
      return 1;
  }
  return 0;
}

static void run(lua_State *L, aio_future *f, int tasks_only);

/* Runs the loop until future f is done (or, with f NULL, until nothing is left to run). */
void aio_run_until(lua_State *L, aio_future *f) {
  run(L, f, 0);
}

/* aio_run_until; with tasks_only (and f NULL), until no task is left, whatever handles (a
** listening server) would keep the loop alive: after a Ctrl-C, the cancelled tasks' cleanup
** is all that is waited for. */
static void run(lua_State *L, aio_future *f, int tasks_only) {
  aio_loop *loop = aio_loop_get(L);
  if (loop->running) {
    abandon(L, f, "cancelled");
    luaL_error(L, "cannot await here: the event loop is already running (this code runs in a "
                  "plain callback); spawn a task with aio.spawn and await inside it");
  }
  if (in_finalizer(L)) {
    abandon(L, f, "cancelled");
    luaL_error(L, "cannot await here: inside a __gc finalizer (running the loop there would "
                  "run other code in the middle of a collection); spawn a task with aio.spawn");
  }
  if (f) f->topwaiters++;  /* counted so cancelling a task does not cancel a future we need */
  loop->idle_since = 0;    /* the caller ran code: virtual time's idleness starts anew */
  for (;;) {
    if (aio_take_interrupt() | take_drain_interrupt()) {  /* both: one Ctrl-C, one error */
      if (f) f->topwaiters--;
      abandon(L, f, "interrupted");
      luaL_error(L, "interrupted!");
    }
    /* another thread cancelled the job awaiting here */
    if (__atomic_exchange_n(&loop->cancel_request, 0, __ATOMIC_RELAXED)) {
      if (f) f->topwaiters--;
      abandon(L, f, "cancelled");
      aio_push_cancelled(L, "job cancelled");
      lua_error(L);
    }
    aio_scheduler_drain(loop);
    if (f && f->state != AIO_PENDING) break;
    if (tasks_only && loop->ntasks == 0) return;
    if (!loop_alive(loop)) {
      if (!f) return;
      f->topwaiters--;
      luaL_error(L, "await would block forever: nothing is left that could complete it "
                    "(%d task(s) waiting)", loop->ntasks);
    }
    loop_poll(loop);
  }
  f->topwaiters--;
}

/* SIGINT while draining: the busy task, if any, gets "interrupted!"; the loop stops and the
** tasks are then cancelled. A second Ctrl-C ends the process at once (SIG_DFL, as lua.c). */
static void on_drain_sigint(int sig) {
  signal(sig, SIG_DFL);
  drain_interrupted = 1;
  aio_signal_interrupt(NULL);
}

/* Protected body of aio_loop_drain: run until idle; on Ctrl-C cancel every task and finish. */
static int drain_protected(lua_State *L) {
  aio_loop *loop = aio_loop_get(L);
  int interrupted = lua_toboolean(L, 1);
  if (interrupted) aio_cancel_all(L, "interrupted");
  run(L, NULL, interrupted);
  if (loop->ntasks > 0) {  /* tasks waiting for something that can never happen */
    aio_cancel_all(L, "the program ended while the task was still waiting");
    aio_run_until(L, NULL);
  }
  return 0;
}

/* Runs the loop until no task, timer or referenced handle remains (end of a script), then
** reports unobserved task errors. Returns the exit status the host should use (0, 1, 130). */
int aio_loop_drain(lua_State *L) {
  if (!aio_loop_exists(L)) return 0;
  int status = 0;
  void (*old)(int) = signal(SIGINT, on_drain_sigint);
  for (int interrupted = 0; interrupted < 2; interrupted++) {
    lua_pushcfunction(L, drain_protected);
    lua_pushboolean(L, interrupted);
    if (lua_pcall(L, 1, 0, 0) == LUA_OK) {
      /* A Ctrl-C that stopped the last busy task, so that the loop ran dry before seeing it,
      ** still counts. */
      if (!take_drain_interrupt()) break;
      aio_take_interrupt();
    } else {
      const char *msg = lua_tostring(L, -1);
      if (!msg || strcmp(msg, "interrupted!") != 0) {
        fprintf(stderr, "aioshell: %s\n", msg ? msg : "(error object is not a string)");
        fflush(stderr);
        status = 1;
        lua_pop(L, 1);
        break;
      }
      lua_pop(L, 1);
    }
    status = 130;
  }
  signal(SIGINT, old);
  if (aio_report_unobserved(L) > 0 && status == 0) status = 1;
  if (aio_loop_get(L)->callback_errors > 0 && status == 0) status = 1;
  return status;
}

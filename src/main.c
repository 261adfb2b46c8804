/*
** main.c — the aioshell host: the command line of the lua5.4 stand-alone interpreter
** (Lua manual §7, lua.c of Lua 5.4.4), plus the aio runtime and its event loop.
**
** Conformance is the point of this file: same options, same `arg` table, same messages
** prefixed with argv[0], same tracebacks and exit statuses, the main chunk on the main thread
** with no hook installed. What aioshell adds never changes what lua5.4 does:
**   1. aio_openlibs() right after luaL_openlibs(), so `require "aio"` resolves;
**   2. the SIGINT handler also wakes the event loop, so a top-level await can be interrupted
**      (whichever of the hook and the loop sees the Ctrl-C first raises, the other does not);
**   3. after the main chunk ends well, the loop runs until nothing is left (aio_loop_drain),
**      whose verdict (unobserved task errors: 1, Ctrl-C: 130) becomes the exit status;
**   4. `--help` and `--version`, which lua5.4 rejects as unrecognized options.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "aio.h"
#include "repl.h"

#define INIT_VAR "LUA_INIT"
#define INIT_VAR_VERSIONED INIT_VAR LUA_VERSUFFIX /* "LUA_INIT_5_4" */

static lua_State *globalL = NULL;      /* the state the SIGINT handler stops */
static const char *progname = "aioshell"; /* prefix of error messages; argv[0] when given */
static const char *trace_file = NULL;     /* --trace FILE: trace-event JSON of the run */

/* ---- signals ------------------------------------------------------------------------ */

/* Installs handler for sig with sigaction (no SA_RESTART, like lua.c). */
static void setsignal(int sig, void (*handler)(int)) {
  struct sigaction sa;
  sa.sa_handler = handler;
  sa.sa_flags = 0;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, NULL);
}

/* SIGINT while Lua code runs. A signal handler must not touch the state: it arms a hook
** that raises "interrupted!" at the next instruction (also in a busy task) and tells the loop,
** so that an await blocked in uv_run wakes up too (aio_signal_interrupt). A second Ctrl-C
** kills the process (SIG_DFL). */
static void on_sigint(int sig) {
  setsignal(sig, SIG_DFL);
  aio_signal_interrupt(globalL);
}

/* ---- messages --------------------------------------------------------------------- */

/* Writes the usage text (the one of lua.c) to f. */
static void write_usage(FILE *f) {
  fprintf(f,
    "usage: %s [options] [script [args]]\n"
    "Available options are:\n"
    "  -e stat   execute string 'stat'\n"
    "  -i        enter interactive mode after executing 'script'\n"
    "  -l mod    require library 'mod' into global 'mod'\n"
    "  -l g=mod  require library 'mod' into global 'g'\n"
    "  -v        show version information\n"
    "  -E        ignore environment variables\n"
    "  -W        turn warnings on\n"
    "  --        stop handling options\n"
    "  -         stop handling options and execute stdin\n",
    progname);
  fflush(f);
}

/* Complains on stderr about a bad option (missing argument or unknown), then shows usage. */
static void print_usage(const char *badoption) {
  lua_writestringerror("%s: ", progname);
  if (badoption[1] == 'e' || badoption[1] == 'l')
    lua_writestringerror("'%s' needs argument\n", badoption);
  else
    lua_writestringerror("unrecognized option '%s'\n", badoption);
  write_usage(stderr);
}

/* `--help`: the usage on stdout, with aioshell's additions. */
static void print_help(void) {
  write_usage(stdout);
  printf("  --trace FILE  write a Chrome/Perfetto trace of the run's tasks and HTTP requests\n"
         "  --help    show this help and exit\n"
         "  --version show the versions of aioshell, Lua and libuv and exit\n"
         "Without a script, reads stdin (the REPL when stdin is a terminal; it has the global aio).\n"
         "After the script, runs the event loop until no task, timer or handle is left.\n");
}

/* `--version`: versions of the pieces, on stdout. */
static void print_full_version(void) {
  printf("aioshell %s (%s, libuv %s)\n", AIO_VERSION, LUA_RELEASE, uv_version_string());
}

/* `-v` and the REPL banner: exactly what lua5.4 prints. */
static void print_version(void) {
  lua_writestring(LUA_COPYRIGHT, strlen(LUA_COPYRIGHT));
  lua_writeline();
}

/* Prints msg on stderr, prefixed with "pname: " when pname is not NULL. */
static void l_message(const char *pname, const char *msg) {
  if (pname) lua_writestringerror("%s: ", pname);
  lua_writestringerror("%s\n", msg);
}

/* If status is an error, prints (and pops) the message on top of the stack; returns status.
** The message is a string: the message handler or Lua itself made it. */
static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    l_message(progname, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return status;
}

/* Message handler of every chunk: the error plus a traceback; an error object that is not a
** string goes through its __tostring, or is described by its type. */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1; /* the object's own description, without traceback (as lua.c) */
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Calls the function below narg arguments with msghandler, with Ctrl-C armed meanwhile. */
static int docall(lua_State *L, int narg, int nres) {
  int status;
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  globalL = L;
  setsignal(SIGINT, on_sigint);
  status = lua_pcall(L, narg, nres, base);
  setsignal(SIGINT, SIG_DFL);
  lua_remove(L, base);
  return status;
}

/* ---- chunks ------------------------------------------------------------------------- */

/* Sets global `arg`: argv[script] at index 0, the script's arguments at 1.., everything
** before (interpreter and options) at negative indices. Without a script, the interpreter's
** name is at 0. */
static void createargtable(lua_State *L, char **argv, int argc, int script) {
  int narg = argc - (script + 1);
  lua_createtable(L, narg > 0 ? narg : 0, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* Runs the chunk just loaded (if status is OK) and reports any error. */
static int dochunk(lua_State *L, int status) {
  if (status == LUA_OK) status = docall(L, 0, 0);
  return report(L, status);
}

/* Runs file name (NULL: stdin). */
static int dofile(lua_State *L, const char *name) {
  return dochunk(L, luaL_loadfile(L, name));
}

/* Runs string s as a chunk called name. */
static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* `-l [g=]mod`: sets global g (or mod) to require(mod). Edits spec in place (it is argv). */
static int dolibrary(lua_State *L, char *spec) {
  int status;
  char *globname = spec, *modname = strchr(spec, '=');
  if (modname == NULL) modname = spec;
  else *modname++ = '\0';
  lua_getglobal(L, "require");
  lua_pushstring(L, modname);
  status = docall(L, 1, 1);
  if (status == LUA_OK) lua_setglobal(L, globname);
  return report(L, status);
}

/* Pushes arg[1..#arg] (the script's arguments); returns how many. */
static int pushargs(lua_State *L) {
  int n;
  if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
  n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -n - 1);
  return n;
}

/* Loads and runs the script argv[0] with its arguments; "-" is stdin unless after "--". */
static int handle_script(lua_State *L, char **argv) {
  int status;
  const char *fname = argv[0];
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL;
  status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    int n = pushargs(L);
    status = docall(L, n, LUA_MULTRET);
  }
  return report(L, status);
}

/* ---- options ------------------------------------------------------------------------ */

enum {
  HAS_ERROR = 1,    /* bad option: nothing else counts */
  HAS_I = 2,        /* -i */
  HAS_V = 4,        /* -v (also implied by -i) */
  HAS_E = 8,        /* -e */
  HAS_NOENV = 16,   /* -E */
  HAS_HELP = 32,    /* --help (aioshell) */
  HAS_VERSION = 64  /* --version (aioshell) */
};

/* Scans the options before any Lua code runs. Returns the HAS_* mask; *first is then the
** index of the script (0 if none), or of the bad option when the mask is HAS_ERROR. */
static int collectargs(char **argv, int *first) {
  int args = 0, i;
  *first = 0;
  if (argv[0] == NULL) return 0; /* no program name at all */
  if (argv[0][0]) progname = argv[0];
  for (i = 1; argv[i] != NULL; i++) {
    const char *opt = argv[i];
    *first = i;
    if (opt[0] != '-') return args; /* the script */
    switch (opt[1]) {
      case '-':
        if (strcmp(opt, "--help") == 0) return args | HAS_HELP;
        if (strcmp(opt, "--version") == 0) return args | HAS_VERSION;
        if (strncmp(opt, "--trace", 7) == 0 && (opt[7] == '=' || opt[7] == '\0')) {
          trace_file = opt[7] == '=' ? opt + 8 : argv[++i];  /* an aioshell addition */
          if (trace_file == NULL || trace_file[0] == '\0') return HAS_ERROR;
          break;
        }
        if (opt[2] != '\0') return HAS_ERROR;
        *first = argv[i + 1] ? i + 1 : 0; /* "--": the script is next, if any */
        return args;
      case '\0': /* "-": stdin is the script */
        return args;
      case 'E':
        if (opt[2] != '\0') return HAS_ERROR;
        args |= HAS_NOENV;
        break;
      case 'W':
        if (opt[2] != '\0') return HAS_ERROR;
        break;
      case 'i':
        args |= HAS_I; /* -i implies -v */
        /* FALLTHROUGH */
      case 'v':
        if (opt[2] != '\0') return HAS_ERROR;
        args |= HAS_V;
        break;
      case 'e':
        args |= HAS_E;
        /* FALLTHROUGH */
      case 'l': /* both take an argument, glued or next */
        if (opt[2] == '\0') {
          i++;
          if (argv[i] == NULL || argv[i][0] == '-') return HAS_ERROR;
        }
        break;
      default:
        return HAS_ERROR;
    }
  }
  *first = 0;
  return args;
}

/* Runs -e and -l options (and switches warnings on at -W), in command-line order, for the
** options before index n. Returns 0 as soon as one fails. */
static int runargs(lua_State *L, char **argv, int n) {
  for (int i = 1; i < n; i++) {
    int option = argv[i][1];
    if (strcmp(argv[i], "--trace") == 0) { i++; continue; }  /* its value is not an option */
    if (option == 'e' || option == 'l') {
      char *extra = argv[i] + 2;
      int status;
      if (*extra == '\0') extra = argv[++i];
      status = option == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra);
      if (status != LUA_OK) return 0;
    } else if (option == 'W') {
      lua_warning(L, "@on", 0);
    }
  }
  return 1;
}

/* Runs LUA_INIT_5_4, else LUA_INIT: "@file" runs a file, anything else is a chunk. */
static int handle_luainit(lua_State *L) {
  const char *name = "=" INIT_VAR_VERSIONED;
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=" INIT_VAR;
    init = getenv(name + 1);
  }
  if (init == NULL) return LUA_OK;
  if (init[0] == '@') return dofile(L, init + 1);
  return dostring(L, init, name);
}

/* --trace FILE: loads aio.trace with AIO_TRACE set, which starts the trace and writes FILE at
** exit (the module does the work; the host only asks for it). */
static int start_trace(lua_State *L) {
  setenv("AIO_TRACE", trace_file, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "aio.trace");
  return report(L, docall(L, 1, 0));
}

/* ---- the program ------------------------------------------------------------------- */

/* Runs the event loop to its end after the main chunk; returns the exit status it decides
** (0, 1 for an unobserved task error, 130 for Ctrl-C, which cancels the remaining tasks: the
** loop installs its own SIGINT handler meanwhile). */
static int drain(lua_State *L) {
  int status;
  if (!aio_loop_exists(L)) return EXIT_SUCCESS;
  lua_settop(L, 0);
  status = aio_loop_drain(L);
  lua_sethook(L, NULL, 0, 0); /* a Ctrl-C that came too late to fire must not hit finalizers */
  return status;
}

/* Pushes the exit status and returns 1 (pmain's result). */
static int exit_status(lua_State *L, int status) {
  lua_pushinteger(L, status);
  return 1;
}

/* After an error in LUA_INIT, -e, -l or the script: the loop does not run (lua.c stops there),
** but the task failures nobody observed so far are reported too, after that error. */
static int failed(lua_State *L) {
  aio_report_unobserved(L);
  return exit_status(L, EXIT_FAILURE);
}

/* Runs the REPL; LUA_OK if it ended normally. An error that ends it prints as in lua.c,
** whose REPL clears the program name: the bare message. */
static int repl(lua_State *L) {
  lua_settop(L, 0);
  if (aio_repl(L)) return LUA_OK;
  if (lua_gettop(L) > 0) l_message(NULL, lua_tostring(L, -1));
  return LUA_ERRRUN;
}

/* The whole interpreter, in protected mode. Pushes the exit status. */
static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int script;
  int args = collectargs(argv, &script);
  int optlim = script > 0 ? script : argc; /* first argv that is not an option */
  luaL_checkversion(L);
  if (args == HAS_ERROR) {
    print_usage(argv[script]);
    return exit_status(L, EXIT_FAILURE);
  }
  if (args & HAS_HELP) {
    print_help();
    return exit_status(L, EXIT_SUCCESS);
  }
  if (args & HAS_VERSION) {
    print_full_version();
    return exit_status(L, EXIT_SUCCESS);
  }
  if (args & HAS_V) print_version();
  if (args & HAS_NOENV) { /* tells package not to read LUA_PATH and LUA_CPATH */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  aio_openlibs(L);
  createargtable(L, argv, argc, script);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN, 0, 0); /* generational mode, as lua.c */
  /* Chunks run with exactly lua.c's stack below them (pmain's two arguments), so that a stack
  ** overflow happens at the same depth and its traceback reads the same. */
  lua_settop(L, 2);
  if (!(args & HAS_NOENV) && handle_luainit(L) != LUA_OK) return failed(L);
  if (trace_file && start_trace(L) != LUA_OK) return failed(L);
  if (!runargs(L, argv, optlim)) return failed(L);
  if (script > 0 && handle_script(L, argv + script) != LUA_OK) return failed(L);
  if (args & HAS_I) {
    if (repl(L) != LUA_OK) return failed(L);
  } else if (script < 1 && !(args & (HAS_E | HAS_V))) {
    if (isatty(0)) {
      print_version();
      if (repl(L) != LUA_OK) return failed(L);
    } else if (dofile(L, NULL) != LUA_OK) {
      /* Like lua.c, an error in piped stdin does not change the exit status, and the loop
      ** does not run after it; unobserved task failures are still reported (status 1). */
      return exit_status(L, aio_report_unobserved(L) > 0 ? EXIT_FAILURE : EXIT_SUCCESS);
    }
  }
  return exit_status(L, drain(L));
}

int main(int argc, char **argv) {
  int status, result;
  lua_State *L = aio_newstate();
  if (L == NULL) {
    l_message(argv[0], "cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_gc(L, LUA_GCSTOP); /* no collection while the state is being built */
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  result = status == LUA_OK ? (int)lua_tointeger(L, -1) : EXIT_FAILURE;
  report(L, status);
  lua_close(L); /* finalizers run, the loop is closed */
  return result;
}

/*
** sys.c — system and process metrics for aio.sys (the C half; lua/aio/sys.lua is the facade).
**
** Everything here is a cheap, non-blocking snapshot: /proc reads of a few hundred bytes and
** libuv's own metric calls. Rates (cpu_percent) need two snapshots separated in time; the
** waiting between them is the facade's job (aio.sleep), so no function here ever blocks.
**
** Error convention (liolib's): misuse raises; an environmental failure (a /proc file that cannot
** be read) returns fail, "what: strerror", errno.
*/
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "aio.h"

/* The eight jiffy counters of one /proc/stat "cpu" line, in the kernel's order. */
static const char *const cpu_fields[] = {
  "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", NULL
};

/* Pushes a table of one cpu line's counters, converted from clock ticks to seconds. */
static void push_cpu_line(lua_State *L, const unsigned long long *v, int n, double tick) {
  int i;
  lua_createtable(L, 0, 8);
  for (i = 0; cpu_fields[i] != NULL; i++) {
    lua_pushnumber(L, i < n ? (double)v[i] / tick : 0.0);
    lua_setfield(L, -2, cpu_fields[i]);
  }
}

/* Pushes the times of /proc/stat's aggregate line, and the per-cpu lines as its array part. */
static int read_proc_stat(lua_State *L) {
  char line[512];
  double tick = (double)sysconf(_SC_CLK_TCK);
  FILE *f = fopen("/proc/stat", "r");
  int ncpu = 0, have_total = 0;
  if (f == NULL) return 0;
  if (tick <= 0) tick = 100.0;
  lua_newtable(L);  /* placeholder for the aggregate, filled below */
  while (fgets(line, sizeof line, f) != NULL) {
    unsigned long long v[8] = {0};
    char name[32];
    int n;
    if (strncmp(line, "cpu", 3) != 0) break;  /* cpu lines come first */
    n = sscanf(line, "%31s %llu %llu %llu %llu %llu %llu %llu %llu", name,
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) - 1;
    if (n < 4) continue;
    push_cpu_line(L, v, n, tick);
    if (strcmp(name, "cpu") == 0) {       /* the aggregate replaces the placeholder */
      lua_replace(L, -2);
      have_total = 1;
    } else {
      lua_rawseti(L, -2, ++ncpu);
    }
  }
  fclose(f);
  if (!have_total) { lua_pop(L, 1); return 0; }
  return 1;
}

/* Builds the same table as read_proc_stat from uv_cpu_info (non-Linux or no /proc). */
static int read_uv_cpu_info(lua_State *L) {
  uv_cpu_info_t *info;
  int n, i, err = uv_cpu_info(&info, &n);
  double sum[5] = {0};
  static const char *const names[] = {"user", "nice", "system", "idle", "irq"};
  if (err != 0) return 0;
  lua_newtable(L);
  for (i = 0; i < n; i++) {
    double t[5];
    int k;
    t[0] = (double)info[i].cpu_times.user / 1000.0;   /* libuv reports milliseconds */
    t[1] = (double)info[i].cpu_times.nice / 1000.0;
    t[2] = (double)info[i].cpu_times.sys / 1000.0;
    t[3] = (double)info[i].cpu_times.idle / 1000.0;
    t[4] = (double)info[i].cpu_times.irq / 1000.0;
    lua_createtable(L, 0, 8);
    for (k = 0; k < 5; k++) {
      sum[k] += t[k];
      lua_pushnumber(L, t[k]);
      lua_setfield(L, -2, names[k]);
    }
    lua_rawseti(L, -2, i + 1);
  }
  for (i = 0; i < 5; i++) {
    lua_pushnumber(L, sum[i]);
    lua_setfield(L, -2, names[i]);
  }
  uv_free_cpu_info(info, n);
  return 1;
}

/* sys.cpu_times() -> {user=, nice=, system=, idle=, iowait=, ..., [1]={per cpu}, ...} (seconds). */
static int sys_cpu_times(lua_State *L) {
  if (read_proc_stat(L) || read_uv_cpu_info(L)) return 1;
  return luaL_fileresult(L, 0, "/proc/stat");
}

/* Reads "Key: value kB" lines of /proc/meminfo into the table on top (bytes). */
static int read_meminfo(lua_State *L) {
  char line[256];
  FILE *f = fopen("/proc/meminfo", "r");
  if (f == NULL) return 0;
  while (fgets(line, sizeof line, f) != NULL) {
    char key[64];
    unsigned long long kb;
    if (sscanf(line, "%63[^:]: %llu", key, &kb) == 2) {
      if (strcmp(key, "MemAvailable") == 0) {
        lua_pushinteger(L, (lua_Integer)(kb * 1024));
        lua_setfield(L, -2, "available");
      } else if (strcmp(key, "Buffers") == 0 || strcmp(key, "Cached") == 0) {
        lua_pushinteger(L, (lua_Integer)(kb * 1024));
        lua_setfield(L, -2, strcmp(key, "Cached") == 0 ? "cached" : "buffers");
      }
    }
  }
  fclose(f);
  return 1;
}

/* The cgroup memory limit in bytes, or 0 when there is none. Under cgroup v1 an unlimited
** group reports the kernel's "unlimited", PAGE_COUNTER_MAX pages (LONG_MAX rounded down to a
** page: 9223372036854771712 with 4 KiB pages), and libuv passes that on as a limit: from that
** value up it means no limit. */
static uint64_t memory_limit(void) {
  uint64_t limit = uv_get_constrained_memory();
  long page = sysconf(_SC_PAGESIZE);
  uint64_t unlimited = page > 0 ? (uint64_t)(LONG_MAX / page) * (uint64_t)page : (uint64_t)LONG_MAX;
  return limit >= unlimited ? 0 : limit;
}

/* sys.memory() -> {total=, free=, available=, used=, percent=} in bytes (percent of total used). */
static int sys_memory(lua_State *L) {
  uint64_t total = uv_get_total_memory(), freem = uv_get_free_memory();
  lua_Integer avail;
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, (lua_Integer)total);
  lua_setfield(L, -2, "total");
  lua_pushinteger(L, (lua_Integer)freem);
  lua_setfield(L, -2, "free");
  read_meminfo(L);
  if (lua_getfield(L, -1, "available") != LUA_TNUMBER) {  /* no MemAvailable: use free */
    lua_pop(L, 1);
    lua_pushinteger(L, (lua_Integer)freem);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "available");
  }
  avail = lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_pushinteger(L, (lua_Integer)total - avail);
  lua_setfield(L, -2, "used");
  lua_pushnumber(L, total > 0 ? 100.0 * (double)((lua_Integer)total - avail) / (double)total : 0.0);
  lua_setfield(L, -2, "percent");
  uint64_t limit = memory_limit();
  if (limit > 0) {  /* a cgroup limit, when there is one */
    lua_pushinteger(L, (lua_Integer)limit);
    lua_setfield(L, -2, "constrained");
  }
  return 1;
}

/* sys.loadavg() -> 1, 5 and 15 minute load averages. */
static int sys_loadavg(lua_State *L) {
  double avg[3];
  uv_loadavg(avg);
  lua_pushnumber(L, avg[0]);
  lua_pushnumber(L, avg[1]);
  lua_pushnumber(L, avg[2]);
  return 3;
}

/* sys.rss() -> this process's resident set size in bytes. */
static int sys_rss(lua_State *L) {
  size_t rss;
  int err = uv_resident_set_memory(&rss);
  if (err != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "rss: %s", uv_strerror(err));
    lua_pushinteger(L, err);
    return 3;
  }
  lua_pushinteger(L, (lua_Integer)rss);
  return 1;
}

/* sys.rusage() -> {utime=, stime=, maxrss= (bytes), minflt=, majflt=, nvcsw=, nivcsw=}. */
static int sys_rusage(lua_State *L) {
  uv_rusage_t ru;
  int err = uv_getrusage(&ru);
  if (err != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "rusage: %s", uv_strerror(err));
    lua_pushinteger(L, err);
    return 3;
  }
  lua_createtable(L, 0, 7);
  lua_pushnumber(L, (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6);
  lua_setfield(L, -2, "utime");
  lua_pushnumber(L, (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
  lua_setfield(L, -2, "stime");
  lua_pushinteger(L, (lua_Integer)ru.ru_maxrss * 1024);  /* Linux reports kilobytes */
  lua_setfield(L, -2, "maxrss");
  lua_pushinteger(L, (lua_Integer)ru.ru_minflt);
  lua_setfield(L, -2, "minflt");
  lua_pushinteger(L, (lua_Integer)ru.ru_majflt);
  lua_setfield(L, -2, "majflt");
  lua_pushinteger(L, (lua_Integer)ru.ru_nvcsw);
  lua_setfield(L, -2, "nvcsw");
  lua_pushinteger(L, (lua_Integer)ru.ru_nivcsw);
  lua_setfield(L, -2, "nivcsw");
  return 1;
}

/* sys.process_time() -> user + system CPU seconds this process has used (for "CPU burned"). */
static int sys_process_time(lua_State *L) {
  uv_rusage_t ru;
  if (uv_getrusage(&ru) != 0) return luaL_fileresult(L, 0, "rusage");
  lua_pushnumber(L, (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
  return 1;
}

/* sys.hrtime() -> nanoseconds from an arbitrary point (real time, never virtual). */
static int sys_hrtime(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_hrtime());
  return 1;
}

/* sys.clock() -> seconds from an arbitrary point, as a float (real time, never virtual). */
static int sys_clock(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime() / 1e9);
  return 1;
}

/* sys.time() -> wall-clock seconds since the epoch, as a float (microsecond resolution). */
static int sys_time(lua_State *L) {
  uv_timeval64_t tv;
  int err = uv_gettimeofday(&tv);
  if (err != 0) return luaL_fileresult(L, 0, "gettimeofday");
  lua_pushnumber(L, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
  return 1;
}

/* sys.cpu_count() -> number of CPUs this process may use. */
static int sys_cpu_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_available_parallelism());
  return 1;
}

#ifdef __linux__
/* Pushes the CPUs of set as a list in increasing order. */
static void push_cpu_list(lua_State *L, const cpu_set_t *set) {
  lua_newtable(L);
  lua_Integer n = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
    if (CPU_ISSET(cpu, set)) {
      lua_pushinteger(L, cpu);
      lua_rawseti(L, -2, ++n);
    }
}

/* Reads the list of CPU numbers at idx into set; raises unless it is one. */
static void check_cpu_list(lua_State *L, int idx, cpu_set_t *set) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer n = luaL_len(L, idx);
  luaL_argcheck(L, n > 0, idx, "a list of CPU numbers expected, got an empty one");
  CPU_ZERO(set);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    int isint;
    lua_Integer cpu = lua_tointegerx(L, -1, &isint);
    luaL_argcheck(L, isint && cpu >= 0 && cpu < CPU_SETSIZE, idx,
                  "CPU numbers are integers from 0");
    CPU_SET((int)cpu, set);
    lua_pop(L, 1);
  }
}

/* sys.affinity([cpus]) -> the CPUs the calling OS thread may run on; with a list, it first
** restricts the thread to them (fail, message, errno when none of them can be used). Per
** thread, not per process: a thread-pool job that calls it pins its own worker. */
static int sys_affinity(lua_State *L) {
  cpu_set_t set;
  int err = 0;
  if (!lua_isnoneornil(L, 1)) {
    check_cpu_list(L, 1, &set);
    err = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  }
  if (!err) err = pthread_getaffinity_np(pthread_self(), sizeof set, &set);
  if (err) {
    errno = err;
    return luaL_fileresult(L, 0, "affinity");
  }
  push_cpu_list(L, &set);
  return 1;
}
#else
/* sys.affinity(): CPU affinity is Linux-only here. */
static int sys_affinity(lua_State *L) {
  errno = ENOSYS;
  return luaL_fileresult(L, 0, "affinity");
}
#endif

/* sys.uptime() -> seconds since boot. */
static int sys_uptime(lua_State *L) {
  double up = 0;
  int err = uv_uptime(&up);
  if (err != 0) return luaL_fileresult(L, 0, "uptime");
  lua_pushnumber(L, up);
  return 1;
}

/* sys.pid() -> this process's id. */
static int sys_pid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_os_getpid());
  return 1;
}

/* sys.isatty(fd) -> true if fd is a terminal (plot uses it to choose redraw vs plain lines). */
static int sys_isatty(lua_State *L) {
  int fd = (int)luaL_optinteger(L, 1, 1);
  lua_pushboolean(L, uv_guess_handle(fd) == UV_TTY);
  return 1;
}

/* sys.tty_size([fd]) -> columns, rows of the terminal on fd, or fail when it is not one.
** A plain ioctl: uv_tty_init would switch a shared stdio descriptor to non-blocking mode. */
static int sys_tty_size(lua_State *L) {
  int fd = (int)luaL_optinteger(L, 1, 1);
  struct winsize ws;
  if (ioctl(fd, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "not a terminal");
    return 2;
  }
  lua_pushinteger(L, ws.ws_col);
  lua_pushinteger(L, ws.ws_row);
  return 2;
}

/* The kernel grows a process's descriptor table by doubling as descriptors are opened, and
** once the process has a second thread every growth waits for an RCU grace period
** (expand_fdtable calls synchronize_rcu): 10-20 ms here, during which every thread opening a
** descriptor waits too. The crawler with its in-process server thread paid three of them
** (at 256, 512 and 1024 descriptors), about 30 ms of a 0.27 s unbounded crawl. Growing the
** table once, to the soft limit, while the process is still single-threaded (the first loop
** is made before any thread of ours) or in one step when the limit is raised, costs
** microseconds; the table's memory is the kernel's, 8 bytes per entry. A forked child's table
** is sized by the descriptors open at the fork, not by its parent's table: what was reserved
** counts only in the process that reserved it (aio_proc_fork calls this in the child). */
void aio_fd_table_reserve(void) {
  static atomic_long reserved;  /* entries already reserved by reserved_pid (0: none yet) */
  static atomic_int reserved_pid;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  long want = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > AIO_FD_TABLE_MAX ?
              AIO_FD_TABLE_MAX : (long)rl.rlim_cur;
  int me = (int)getpid();
  if (atomic_load(&reserved_pid) == me && want <= atomic_load(&reserved)) return;
  int any = open("/", O_PATH | O_CLOEXEC);
  if (any < 0) return;
  int high = fcntl(any, F_DUPFD_CLOEXEC, (int)want - 1);  /* lowest free fd >= want - 1 */
  if (high >= 0) {
    close(high);
    atomic_store(&reserved, want);
    atomic_store(&reserved_pid, me);
  }
  close(any);
}

/* The resource names sys.rlimit knows, and their RLIMIT_ constants. */
static const char *const rlimit_names[] = {
  "nofile", "nproc", "core", "stack", "as", "data", "fsize", "cpu", NULL
};
static const int rlimit_ids[] = {
  RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_CORE, RLIMIT_STACK, RLIMIT_AS, RLIMIT_DATA, RLIMIT_FSIZE,
  RLIMIT_CPU
};

/* Pushes one limit: an integer, or math.huge for RLIM_INFINITY. */
static void push_rlim(lua_State *L, rlim_t v) {
  if (v == RLIM_INFINITY) lua_pushnumber(L, HUGE_VAL);
  else lua_pushinteger(L, (lua_Integer)v);
}

/* sys.rlimit(name [, soft]) -> soft, hard. With soft (an integer >= 0, or math.huge for
** unlimited) it first sets the soft limit, keeping the hard one; a soft limit above the hard
** one, or one the kernel refuses, returns fail, "rlimit NAME: message", errno. */
static int sys_rlimit(lua_State *L) {
  int which = rlimit_ids[luaL_checkoption(L, 1, NULL, rlimit_names)];
  const char *name = lua_tostring(L, 1);
  struct rlimit rl;
  if (getrlimit(which, &rl) != 0) return luaL_fileresult(L, 0, "getrlimit");
  if (!lua_isnoneornil(L, 2)) {
    rlim_t soft;
    if (lua_isinteger(L, 2)) {
      lua_Integer v = lua_tointeger(L, 2);
      luaL_argcheck(L, v >= 0, 2, "limit must be a non-negative integer or math.huge");
      soft = (rlim_t)v;
    } else {
      luaL_argcheck(L, lua_type(L, 2) == LUA_TNUMBER && lua_tonumber(L, 2) == HUGE_VAL, 2,
                    "limit must be a non-negative integer or math.huge");
      soft = RLIM_INFINITY;
    }
    if (rl.rlim_max != RLIM_INFINITY && (soft == RLIM_INFINITY || soft > rl.rlim_max)) {
      luaL_pushfail(L);
      if (soft == RLIM_INFINITY)
        lua_pushfstring(L, "rlimit %s: unlimited is above the hard limit %I", name,
                        (lua_Integer)rl.rlim_max);
      else
        lua_pushfstring(L, "rlimit %s: %I is above the hard limit %I", name, (lua_Integer)soft,
                        (lua_Integer)rl.rlim_max);
      lua_pushinteger(L, EINVAL);
      return 3;
    }
    rl.rlim_cur = soft;
    if (setrlimit(which, &rl) != 0) {
      int en = errno;
      luaL_pushfail(L);
      lua_pushfstring(L, "rlimit %s: %s", name, strerror(en));
      lua_pushinteger(L, en);
      return 3;
    }
    if (getrlimit(which, &rl) != 0) return luaL_fileresult(L, 0, "getrlimit");
    if (which == RLIMIT_NOFILE) aio_fd_table_reserve();
  }
  push_rlim(L, rl.rlim_cur);
  push_rlim(L, rl.rlim_max);
  return 2;
}

/* Whether path names an existing directory. */
static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Creates one directory; an existing directory counts as success when exist_ok. Returns 0 or
** an errno value. */
static int make_dir(const char *path, int exist_ok) {
  int en;
  if (mkdir(path, 0777) == 0) return 0;
  en = errno;
  if (en == EEXIST && exist_ok) return is_dir(path) ? 0 : ENOTDIR;
  return en;
}

/* sys.mkdir(path [, parents]) -> true, or fail, "mkdir PATH: message", errno. With parents,
** creates the missing parent directories too and accepts an existing directory (mkdir -p);
** no shell is involved, so any path is safe. */
static int sys_mkdir(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  int parents = lua_toboolean(L, 2);
  int err = 0;
  luaL_Buffer b;
  luaL_argcheck(L, len > 0 && strlen(path) == len, 1, "not a path");
  if (parents) {
    char *p = luaL_buffinitsize(L, &b, len + 1);
    size_t i;
    memcpy(p, path, len + 1);
    for (i = 1; i < len && err == 0; i++) {  /* each prefix ending before a '/' */
      if (p[i] != '/' || p[i - 1] == '/') continue;
      p[i] = '\0';
      err = make_dir(p, 1);
      if (err == 0) p[i] = '/';             /* on failure p stays the prefix, for the message */
    }
    if (err == 0) err = make_dir(p, 1);
  } else {
    err = make_dir(path, 0);
  }
  if (err != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "mkdir %s: %s", parents ? luaL_buffaddr(&b) : path, strerror(err));
    lua_pushinteger(L, err);
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg sys_funcs[] = {
  {"cpu_times", sys_cpu_times},
  {"memory", sys_memory},
  {"loadavg", sys_loadavg},
  {"rss", sys_rss},
  {"rusage", sys_rusage},
  {"process_time", sys_process_time},
  {"hrtime", sys_hrtime},
  {"clock", sys_clock},
  {"time", sys_time},
  {"cpu_count", sys_cpu_count},
  {"affinity", sys_affinity},
  {"uptime", sys_uptime},
  {"pid", sys_pid},
  {"isatty", sys_isatty},
  {"tty_size", sys_tty_size},
  {"rlimit", sys_rlimit},
  {"mkdir", sys_mkdir},
  {NULL, NULL}
};

/* Opens aio.sys_c. */
int luaopen_aio_sys_c(lua_State *L) {
  luaL_newlib(L, sys_funcs);
  return 1;
}

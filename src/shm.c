/*
** shm.c — objects in memory shared by forked processes: process.value, process.array,
** process.lock, process.semaphore and process.dict (OpenResty's shared dict is the model: no
** manager process, fixed capacity, every operation atomic).
**
** One arena is mapped (MAP_SHARED | MAP_ANONYMOUS) the first time aio.process is opened, before
** any fork, so every process of the tree sees it at the same address: objects cross the codec
** as plain pointers. The arena only grows (objects live as long as the process tree); its
** pages cost memory only once touched.
**
** Locks are owner-pid words taken with compare-and-swap. A holder that died (SIGKILL) is
** detected with kill(pid, 0) and its lock taken over, so a crash never wedges the others.
** Waiting is the caller's business: the Lua facade polls try_acquire with a short aio.sleep so
** the loop keeps running.
*/
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <errno.h>
#include <signal.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/mman.h>
#include <math.h>
#include "aio.h"
#include "codec.h"
#include "process.h"

#define ARENA_SIZE ((size_t)256 << 20)  /* address space reserved; pages used on demand */
#define VALUE_MT "aio.process.value"
#define ARRAY_MT "aio.process.array"
#define LOCK_MT "aio.process.lock"
#define SEM_MT "aio.process.semaphore"
#define DICT_MT "aio.process.dict"

typedef struct arena {
  int32_t lock;
  size_t used, size;
  char data[];
} arena;

static arena *A = NULL;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;

static void arena_map(void) {
  void *m = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return;
  A = (arena *)m;
  A->size = ARENA_SIZE - sizeof(arena);
}

/* ---- owner-pid locks ------------------------------------------------------------------- */

/* Tries to take the lock word for this process; takes it over from a dead holder. */
static int plock_try(int32_t *l) {
  int32_t me = (int32_t)getpid(), expected = 0;
  if (__atomic_compare_exchange_n(l, &expected, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
    return 1;
  if (expected != 0 && expected != me && kill(expected, 0) != 0 && errno == ESRCH)
    return __atomic_compare_exchange_n(l, &expected, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
  return 0;
}

/* Takes the lock word, spinning then yielding (for the short internal critical sections). */
static void plock(int32_t *l) {
  for (int i = 0; !plock_try(l); i++) {
    if (i < 100) sched_yield();
    else { struct timespec ts = {0, 50000}; nanosleep(&ts, NULL); }
  }
}

static void punlock(int32_t *l) {
  __atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

/* Allocates n zeroed bytes in the arena, or NULL when it is full. */
static void *shm_alloc(size_t n) {
  n = (n + 15) & ~(size_t)15;
  plock(&A->lock);
  void *p = NULL;
  if (A->used + n <= A->size) {
    p = A->data + A->used;
    A->used += n;
  }
  punlock(&A->lock);
  if (p) memset(p, 0, n);
  return p;
}

/* ---- boxes and the share class (in shared memory: not counted) ------------------------- */

static int open_value_mt(lua_State *L);
static int open_array_mt(lua_State *L);
static int open_lock_mt(lua_State *L);
static int open_sem_mt(lua_State *L);
static int open_dict_mt(lua_State *L);

static void push_value(lua_State *L, void *o) { aio_share_push_box(L, o, VALUE_MT, open_value_mt); }
static void push_array(lua_State *L, void *o) { aio_share_push_box(L, o, ARRAY_MT, open_array_mt); }
static void push_lock(lua_State *L, void *o) { aio_share_push_box(L, o, LOCK_MT, open_lock_mt); }
static void push_sem(lua_State *L, void *o) { aio_share_push_box(L, o, SEM_MT, open_sem_mt); }
static void push_dict(lua_State *L, void *o) { aio_share_push_box(L, o, DICT_MT, open_dict_mt); }

static const aio_share_class value_class = {VALUE_MT, 1, aio_share_noop_ref, aio_share_noop_ref,
                                          push_value, NULL, NULL};
static const aio_share_class array_class = {ARRAY_MT, 1, aio_share_noop_ref, aio_share_noop_ref,
                                          push_array, NULL, NULL};
static const aio_share_class lock_class = {LOCK_MT, 1, aio_share_noop_ref, aio_share_noop_ref,
                                          push_lock, NULL, NULL};
static const aio_share_class sem_class = {SEM_MT, 1, aio_share_noop_ref, aio_share_noop_ref,
                                          push_sem, NULL, NULL};
static const aio_share_class dict_class = {DICT_MT, 1, aio_share_noop_ref, aio_share_noop_ref,
                                          push_dict, NULL, NULL};

static void *alloc_or_fail(lua_State *L, size_t n) {
  if (!A) luaL_error(L, "shared memory is not available (mmap failed)");
  void *p = shm_alloc(n);
  if (!p) luaL_error(L, "shared memory arena is full (%d MB)", (int)(ARENA_SIZE >> 20));
  return p;
}

/* ---- numbers: one 64-bit word holding an integer or a double ---------------------------- */

enum { K_INT = 0, K_FLOAT = 1 };

static void push_word(lua_State *L, int kind, int64_t w) {
  if (kind == K_INT) lua_pushinteger(L, (lua_Integer)w);
  else { double d; memcpy(&d, &w, sizeof d); lua_pushnumber(L, d); }
}

static int64_t to_word(lua_State *L, int kind, int idx) {
  if (kind == K_INT) {
    lua_Integer i = 0;
    if (!lua_isinteger(L, idx)) {
      lua_Number n = luaL_checknumber(L, idx);
      if (!lua_numbertointeger(n, &i)) luaL_argerror(L, idx, "an integer is needed (this one holds integers)");
    } else {
      i = lua_tointeger(L, idx);
    }
    return (int64_t)i;
  }
  double d = (double)luaL_checknumber(L, idx);
  int64_t w;
  memcpy(&w, &d, sizeof w);
  return w;
}

/* Atomically adds the number at idx to *w; pushes the new value. */
static void word_add(lua_State *L, int kind, int64_t *w, int idx) {
  if (kind == K_INT) {
    int64_t d = to_word(L, K_INT, idx);
    lua_pushinteger(L, (lua_Integer)(int64_t)__atomic_add_fetch((uint64_t *)w, (uint64_t)d, __ATOMIC_SEQ_CST));
    return;
  }
  double d = (double)luaL_checknumber(L, idx);
  int64_t old = __atomic_load_n(w, __ATOMIC_SEQ_CST), nw;
  double cur;
  do {
    memcpy(&cur, &old, sizeof cur);
    cur += d;
    memcpy(&nw, &cur, sizeof nw);
  } while (!__atomic_compare_exchange_n(w, &old, nw, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  lua_pushnumber(L, cur);
}

typedef struct shvalue { int32_t kind; int64_t w; } shvalue;

/* process.value(init [, "float"]) -> a shared number (integer unless init is a float) */
static int l_value(lua_State *L) {
  int kind = K_INT;
  if (lua_type(L, 2) == LUA_TSTRING) kind = strcmp(lua_tostring(L, 2), "float") == 0 ? K_FLOAT : K_INT;
  else if (lua_type(L, 1) == LUA_TNUMBER && !lua_isinteger(L, 1)) kind = K_FLOAT;
  if (lua_isnoneornil(L, 1)) lua_pushinteger(L, 0), lua_replace(L, 1);
  int64_t w = to_word(L, kind, 1);
  shvalue *v = (shvalue *)alloc_or_fail(L, sizeof *v);
  v->kind = kind;
  v->w = w;
  push_value(L, v);
  return 1;
}

static int value_get(lua_State *L) {
  shvalue *v = (shvalue *)aio_share_check(L, 1, VALUE_MT);
  push_word(L, v->kind, __atomic_load_n(&v->w, __ATOMIC_SEQ_CST));
  return 1;
}

static int value_set(lua_State *L) {
  shvalue *v = (shvalue *)aio_share_check(L, 1, VALUE_MT);
  __atomic_store_n(&v->w, to_word(L, v->kind, 2), __ATOMIC_SEQ_CST);
  return 0;
}

/* v:add(n) -> new value (atomic) */
static int value_add(lua_State *L) {
  shvalue *v = (shvalue *)aio_share_check(L, 1, VALUE_MT);
  word_add(L, v->kind, &v->w, 2);
  return 1;
}

/* v:cas(old, new) -> true if it held old and now holds new */
static int value_cas(lua_State *L) {
  shvalue *v = (shvalue *)aio_share_check(L, 1, VALUE_MT);
  int64_t old = to_word(L, v->kind, 2), nw = to_word(L, v->kind, 3);
  lua_pushboolean(L, __atomic_compare_exchange_n(&v->w, &old, nw, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  return 1;
}

/* v.value reads, v.value = x writes (multiprocessing.Value's spelling). */
static int value_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "value") == 0) {
    lua_settop(L, 1);
    return value_get(L);
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int value_newindex(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "value") == 0) {
    lua_remove(L, 2);
    return value_set(L);
  }
  return luaL_error(L, "process.value has only the field 'value'");
}

static int value_tostring(lua_State *L) {
  shvalue *v = (shvalue *)aio_share_check(L, 1, VALUE_MT);
  push_word(L, v->kind, __atomic_load_n(&v->w, __ATOMIC_SEQ_CST));
  lua_pushfstring(L, "process.value(%s)", luaL_tolstring(L, -1, NULL));
  return 1;
}

/* Makes the values' metatable (left on the stack). */
static int open_value_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"get", value_get}, {"set", value_set}, {"add", value_add}, {"cas", value_cas}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
    {"__index", value_index}, {"__newindex", value_newindex}, {"__tostring", value_tostring},
    {NULL, NULL}};
  return aio_share_new_mt(L, &value_class, methods, meta);
}

/* ---- arrays of numbers ------------------------------------------------------------------ */

typedef struct sharray { int32_t kind; int64_t n; int64_t w[]; } sharray;

/* process.array(n | list [, "int"|"float"]) -> a shared array of numbers, zero-filled */
static int l_array(lua_State *L) {
  int kind = K_INT;
  if (lua_type(L, 2) == LUA_TSTRING) kind = strcmp(lua_tostring(L, 2), "float") == 0 ? K_FLOAT : K_INT;
  lua_Integer n;
  if (lua_istable(L, 1)) {
    n = (lua_Integer)luaL_len(L, 1);
    if (lua_type(L, 2) != LUA_TSTRING && n > 0) {
      lua_geti(L, 1, 1);
      if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) kind = K_FLOAT;
      lua_pop(L, 1);
    }
  } else {
    n = luaL_checkinteger(L, 1);
  }
  luaL_argcheck(L, n >= 0 && n <= (1 << 28), 1, "size out of range");
  sharray *a = (sharray *)alloc_or_fail(L, sizeof *a + (size_t)n * sizeof(int64_t));
  a->kind = kind;
  a->n = n;
  if (lua_istable(L, 1))
    for (lua_Integer i = 1; i <= n; i++) {
      lua_geti(L, 1, i);
      a->w[i - 1] = to_word(L, kind, -1);
      lua_pop(L, 1);
    }
  push_array(L, a);
  return 1;
}

static int64_t *array_slot(lua_State *L, sharray *a, int idx) {
  lua_Integer i = luaL_checkinteger(L, idx);
  if (i < 1 || i > a->n) luaL_error(L, "index %d out of range (1..%d)", (int)i, (int)a->n);
  return &a->w[i - 1];
}

static int array_get(lua_State *L) {
  sharray *a = (sharray *)aio_share_check(L, 1, ARRAY_MT);
  push_word(L, a->kind, __atomic_load_n(array_slot(L, a, 2), __ATOMIC_SEQ_CST));
  return 1;
}

static int array_set(lua_State *L) {
  sharray *a = (sharray *)aio_share_check(L, 1, ARRAY_MT);
  int64_t *slot = array_slot(L, a, 2);
  __atomic_store_n(slot, to_word(L, a->kind, 3), __ATOMIC_SEQ_CST);
  return 0;
}

static int array_add(lua_State *L) {
  sharray *a = (sharray *)aio_share_check(L, 1, ARRAY_MT);
  word_add(L, a->kind, array_slot(L, a, 2), 3);
  return 1;
}

static int array_len(lua_State *L) {
  lua_pushinteger(L, ((sharray *)aio_share_check(L, 1, ARRAY_MT))->n);
  return 1;
}

/* a:totable() -> a plain copy */
static int array_totable(lua_State *L) {
  sharray *a = (sharray *)aio_share_check(L, 1, ARRAY_MT);
  lua_createtable(L, (int)a->n, 0);
  for (int64_t i = 0; i < a->n; i++) {
    push_word(L, a->kind, __atomic_load_n(&a->w[i], __ATOMIC_SEQ_CST));
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* a[i] reads and a[i] = x writes; other keys are methods. */
static int array_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TNUMBER) return array_get(L);
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

/* Makes the arrays' metatable (left on the stack). */
static int open_array_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"get", array_get}, {"set", array_set}, {"add", array_add}, {"totable", array_totable},
    {"len", array_len}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
    {"__index", array_index}, {"__newindex", array_set}, {"__len", array_len}, {NULL, NULL}};
  return aio_share_new_mt(L, &array_class, methods, meta);
}

/* ---- locks and semaphores ------------------------------------------------------------- */

typedef struct shlock { int32_t owner; } shlock;

/* process.lock() -> lock */
static int l_lock(lua_State *L) {
  push_lock(L, alloc_or_fail(L, sizeof(shlock)));
  return 1;
}

/* lock:try_acquire() -> lock | false (a dead holder's lock is taken over) */
static int lock_try(lua_State *L) {
  shlock *l = (shlock *)aio_share_check(L, 1, LOCK_MT);
  if (__atomic_load_n(&l->owner, __ATOMIC_RELAXED) == (int32_t)getpid())
    return luaL_error(L, "deadlock: this process already holds the lock");
  if (plock_try(&l->owner)) { lua_settop(L, 1); return 1; }
  lua_pushboolean(L, 0);
  return 1;
}

/* lock:release() (also __close) */
static int lock_release(lua_State *L) {
  shlock *l = (shlock *)aio_share_check(L, 1, LOCK_MT);
  int32_t me = (int32_t)getpid();
  if (!__atomic_compare_exchange_n(&l->owner, &me, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
    return luaL_error(L, "release of a process.lock this process does not hold");
  return 0;
}

/* lock:owner() -> pid of the holder or nil */
static int lock_owner(lua_State *L) {
  shlock *l = (shlock *)aio_share_check(L, 1, LOCK_MT);
  int32_t o = __atomic_load_n(&l->owner, __ATOMIC_RELAXED);
  if (o) lua_pushinteger(L, o);
  else lua_pushnil(L);
  return 1;
}

/* Makes the locks' metatable (left on the stack). */
static int open_lock_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"try_acquire", lock_try}, {"release", lock_release}, {"owner", lock_owner}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", lock_release}, {NULL, NULL}};
  return aio_share_new_mt(L, &lock_class, methods, meta);
}

typedef struct shsem { int64_t value; } shsem;

/* process.semaphore(n) -> semaphore */
static int l_semaphore(lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 1, 1);
  luaL_argcheck(L, n >= 0, 1, "must be >= 0");
  shsem *s = (shsem *)alloc_or_fail(L, sizeof *s);
  s->value = n;
  push_sem(L, s);
  return 1;
}

/* sem:try_acquire() -> sem | false */
static int sem_try(lua_State *L) {
  shsem *s = (shsem *)aio_share_check(L, 1, SEM_MT);
  int64_t v = __atomic_load_n(&s->value, __ATOMIC_RELAXED);
  while (v > 0)
    if (__atomic_compare_exchange_n(&s->value, &v, v - 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
      lua_settop(L, 1);
      return 1;
    }
  lua_pushboolean(L, 0);
  return 1;
}

/* sem:release() (also __close) */
static int sem_release(lua_State *L) {
  shsem *s = (shsem *)aio_share_check(L, 1, SEM_MT);
  __atomic_add_fetch(&s->value, 1, __ATOMIC_RELEASE);
  return 0;
}

static int sem_value(lua_State *L) {
  lua_pushinteger(L, __atomic_load_n(&((shsem *)aio_share_check(L, 1, SEM_MT))->value, __ATOMIC_RELAXED));
  return 1;
}

/* Makes the semaphores' metatable (left on the stack). */
static int open_sem_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"try_acquire", sem_try}, {"release", sem_release}, {"value", sem_value}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", sem_release}, {NULL, NULL}};
  return aio_share_new_mt(L, &sem_class, methods, meta);
}

/* ---- the shared dictionary ---------------------------------------------------------------- */

enum { S_EMPTY = 0, S_USED = 1, S_DELETED = 2 };

typedef struct slot {
  uint32_t state, hash, klen, vlen;
  char data[];           /* key bytes, then value bytes (both codec-encoded) */
} slot;

typedef struct shdict {
  int32_t lock;
  uint32_t nslots, slot_size, count;
  char slots[];
} shdict;

static slot *slot_at(shdict *d, uint32_t i) {
  return (slot *)(d->slots + (size_t)i * (sizeof(slot) + d->slot_size));
}

static uint32_t fnv1a(const char *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) { h ^= (unsigned char)p[i]; h *= 16777619u; }
  return h;
}

/* process.dict{slots=1024, slot_size=256} -> dict */
static int l_dict(lua_State *L) {
  lua_Integer nslots = 1024, slot_size = 256;
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "slots");
    nslots = luaL_optinteger(L, -1, nslots);
    lua_getfield(L, 1, "slot_size");
    slot_size = luaL_optinteger(L, -1, slot_size);
    lua_pop(L, 2);
  }
  luaL_argcheck(L, nslots >= 1 && nslots <= (1 << 22), 1, "slots out of range");
  luaL_argcheck(L, slot_size >= 16 && slot_size <= (1 << 20), 1, "slot_size out of range");
  slot_size = (slot_size + 7) & ~7;
  shdict *d = (shdict *)alloc_or_fail(L, sizeof *d + (size_t)nslots * (sizeof(slot) + (size_t)slot_size));
  d->nslots = (uint32_t)nslots;
  d->slot_size = (uint32_t)slot_size;
  push_dict(L, d);
  return 1;
}

/* Encodes the key at idx (strings, numbers, booleans). */
static void dict_key(lua_State *L, int idx, aio_buf *k) {
  int t = lua_type(L, idx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
    luaL_argerror(L, idx, "dict keys are strings, numbers or booleans");
  if (t == LUA_TNUMBER && !lua_isinteger(L, idx)) {  /* 2.0 and 2 are the same key, as in Lua */
    lua_Number n = lua_tonumber(L, idx);
    lua_Integer i;
    if (n == floor(n) && lua_numbertointeger(n, &i)) { lua_pushinteger(L, i); lua_replace(L, idx); }
  }
  aio_codec_encode(L, idx, 1, k, "key", AIO_CODEC_PROCESS);
}

/* Finds the slot of key k (lock held): its index, or -1; *free_at gets the first reusable slot. */
static int64_t dict_find(shdict *d, aio_buf *k, uint32_t h, int64_t *free_at) {
  *free_at = -1;
  for (uint32_t n = 0, i = h % d->nslots; n < d->nslots; n++, i = (i + 1) % d->nslots) {
    slot *s = slot_at(d, i);
    if (s->state == S_EMPTY) { if (*free_at < 0) *free_at = i; return -1; }
    if (s->state == S_DELETED) { if (*free_at < 0) *free_at = i; continue; }
    if (s->hash == h && s->klen == k->len && memcmp(s->data, k->data, k->len) == 0) return i;
  }
  return -1;
}

/* d:get(key) -> value | nil */
static int dict_get(lua_State *L) {
  shdict *d = (shdict *)aio_share_check(L, 1, DICT_MT);
  aio_buf k = {0}, v = {0};
  dict_key(L, 2, &k);
  uint32_t h = fnv1a(k.data, k.len);
  int64_t fr;
  plock(&d->lock);
  int64_t i = dict_find(d, &k, h, &fr);
  if (i >= 0) {
    slot *s = slot_at(d, (uint32_t)i);
    aio_buf_add(&v, s->data + s->klen, s->vlen);
  }
  punlock(&d->lock);
  aio_buf_free(&k);
  if (i < 0) { lua_pushnil(L); return 1; }
  lua_settop(L, 0);
  return aio_codec_decode_owned(L, &v);
}

/* Stores (or, with v NULL, deletes) key k (lock held). Returns 1, or 0 when full. */
static int dict_store(shdict *d, aio_buf *k, uint32_t h, aio_buf *v, int only_if_absent, int *existed) {
  int64_t fr;
  int64_t i = dict_find(d, k, h, &fr);
  *existed = i >= 0;
  if (!v) {
    if (i >= 0) { slot_at(d, (uint32_t)i)->state = S_DELETED; d->count--; }
    return 1;
  }
  if (i >= 0 && only_if_absent) return 1;
  if (i < 0) {
    if (fr < 0) return 0;
    i = fr;
    d->count++;
  }
  slot *s = slot_at(d, (uint32_t)i);
  s->state = S_USED;
  s->hash = h;
  s->klen = (uint32_t)k->len;
  s->vlen = (uint32_t)v->len;
  memcpy(s->data, k->data, k->len);
  memcpy(s->data + k->len, v->data, v->len);
  return 1;
}

/* Common body of set/add: (key, value) -> true | nil, "no memory" | false, "exists" */
static int dict_put(lua_State *L, int only_if_absent) {
  shdict *d = (shdict *)aio_share_check(L, 1, DICT_MT);
  aio_buf k = {0}, v = {0};
  dict_key(L, 2, &k);
  int del = lua_isnoneornil(L, 3);
  if (!del) {
    lua_settop(L, 3);
    aio_codec_encode(L, 3, 1, &v, "value", AIO_CODEC_PROCESS);
    if (k.len + v.len > d->slot_size) {
      size_t need = k.len + v.len;
      aio_buf_free(&k);
      aio_buf_free(&v);
      return luaL_error(L, "process.dict: key and value take %d bytes encoded; a slot holds %d "
                           "(make the dict with a larger slot_size)", (int)need, (int)d->slot_size);
    }
  }
  uint32_t h = fnv1a(k.data, k.len);
  int existed;
  plock(&d->lock);
  int ok = dict_store(d, &k, h, del ? NULL : &v, only_if_absent, &existed);
  punlock(&d->lock);
  aio_buf_free(&k);
  aio_buf_free(&v);
  if (!ok) { lua_pushnil(L); lua_pushliteral(L, "no memory"); return 2; }
  if (only_if_absent && existed) { lua_pushboolean(L, 0); lua_pushliteral(L, "exists"); return 2; }
  lua_pushboolean(L, 1);
  return 1;
}

/* d:set(key, value) (nil deletes) -> true | nil, "no memory" */
static int dict_set(lua_State *L) { return dict_put(L, 0); }
/* d:add(key, value) -> true | false, "exists" | nil, "no memory" */
static int dict_add(lua_State *L) { return dict_put(L, 1); }
/* d:delete(key) */
static int dict_delete(lua_State *L) { lua_settop(L, 2); return dict_put(L, 0); }

/* Protected: decodes a number from an encoded value (for incr). */
static int decode_number_p(lua_State *L) {
  aio_buf *b = (aio_buf *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  aio_codec_decode(L, b->data, b->len);
  return 1;
}

/* d:incr(key, n [, init]) -> new value: atomic; a missing key starts at init (else an error). */
static int dict_incr(lua_State *L) {
  shdict *d = (shdict *)aio_share_check(L, 1, DICT_MT);
  luaL_checknumber(L, 3);
  int has_init = !lua_isnoneornil(L, 4);
  if (has_init) luaL_checknumber(L, 4);
  lua_settop(L, 4);
  aio_buf k = {0};
  dict_key(L, 2, &k);
  uint32_t h = fnv1a(k.data, k.len);
  plock(&d->lock);
  int64_t fr;
  int64_t i = dict_find(d, &k, h, &fr);
  if (i < 0 && !has_init) {
    punlock(&d->lock);
    aio_buf_free(&k);
    lua_pushnil(L);
    lua_pushliteral(L, "not found");
    return 2;
  }
  /* decoding a scalar cannot raise but for memory: do it under the lock, in protected mode */
  if (i >= 0) {
    slot *s = slot_at(d, (uint32_t)i);
    aio_buf cur = {0};
    aio_buf_add(&cur, s->data + s->klen, s->vlen);
    lua_pushcfunction(L, decode_number_p);
    lua_pushlightuserdata(L, &cur);
    int st = lua_pcall(L, 1, 1, 0);
    aio_buf_free(&cur);
    if (st != LUA_OK || lua_type(L, -1) != LUA_TNUMBER) {
      punlock(&d->lock);
      aio_buf_free(&k);
      return luaL_error(L, "process.dict:incr: the value is not a number");
    }
  } else {
    lua_pushvalue(L, 4);
  }
  lua_pushvalue(L, 3);
  lua_arith(L, LUA_OPADD);  /* the stored value + n (integers wrap, floats stay floats) */
  aio_buf v = {0};
  aio_codec_encode(L, -1, 1, &v, "value", AIO_CODEC_PROCESS);  /* a number: cannot fail */
  int existed;
  int ok = dict_store(d, &k, h, &v, 0, &existed);
  punlock(&d->lock);
  aio_buf_free(&k);
  aio_buf_free(&v);
  if (!ok) { lua_pushnil(L); lua_pushliteral(L, "no memory"); return 2; }
  return 1;
}

/* d:keys() -> list of keys */
static int dict_keys(lua_State *L) {
  shdict *d = (shdict *)aio_share_check(L, 1, DICT_MT);
  aio_buf all = {0};
  plock(&d->lock);
  for (uint32_t i = 0; i < d->nslots; i++) {
    slot *s = slot_at(d, i);
    if (s->state == S_USED) aio_buf_add(&all, s->data, s->klen);
  }
  punlock(&d->lock);
  lua_settop(L, 0);
  int n = all.len ? aio_codec_decode_owned(L, &all) : 0;
  aio_buf_free(&all);
  lua_createtable(L, n, 0);
  lua_insert(L, 1);
  for (int i = n; i >= 1; i--) lua_rawseti(L, 1, i);
  return 1;
}

static int dict_len(lua_State *L) {
  shdict *d = (shdict *)aio_share_check(L, 1, DICT_MT);
  lua_pushinteger(L, __atomic_load_n(&d->count, __ATOMIC_RELAXED));
  return 1;
}

/* d:clear() */
static int dict_clear(lua_State *L) {
  shdict *d = (shdict *)aio_share_check(L, 1, DICT_MT);
  plock(&d->lock);
  for (uint32_t i = 0; i < d->nslots; i++) slot_at(d, i)->state = S_EMPTY;
  d->count = 0;
  punlock(&d->lock);
  return 0;
}

/* d:capacity() -> slots, slot_size */
static int dict_capacity(lua_State *L) {
  shdict *d = (shdict *)aio_share_check(L, 1, DICT_MT);
  lua_pushinteger(L, d->nslots);
  lua_pushinteger(L, d->slot_size);
  return 2;
}

/* Makes the dictionaries' metatable (left on the stack). */
static int open_dict_mt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"get", dict_get}, {"set", dict_set}, {"add", dict_add}, {"delete", dict_delete},
    {"incr", dict_incr}, {"keys", dict_keys}, {"len", dict_len}, {"clear", dict_clear},
    {"capacity", dict_capacity}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__len", dict_len}, {NULL, NULL}};
  return aio_share_new_mt(L, &dict_class, methods, meta);
}

void aio_shm_open(lua_State *L) {
  pthread_once(&arena_once, arena_map);
  open_value_mt(L);
  open_array_mt(L);
  open_lock_mt(L);
  open_sem_mt(L);
  open_dict_mt(L);
  lua_pop(L, 5);
  static const luaL_Reg funcs[] = {
    {"value", l_value}, {"array", l_array}, {"lock", l_lock}, {"semaphore", l_semaphore},
    {"dict", l_dict}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}

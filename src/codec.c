/*
** codec.c — the value codec shared by worker threads and forked processes (see codec.h).
**
** Format: a sequence of tagged items. Tables and Lua functions get an id in the order they are
** first met, on both sides, so a second meeting is a T_REF and cycles and shared references come
** out as they went in. Encoding runs under lua_pcall so that an error (a value that cannot cross)
** leaves the caller's buffer untouched and the shareable objects already retained released.
*/
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <ctype.h>
#include <lua.h>
#include <lauxlib.h>
#include "codec.h"
#include "aio.h"
#include "http_common.h"

enum {
  T_NIL, T_FALSE, T_TRUE, T_INT, T_FLT, T_STR, T_TABLE, T_TABLE_MT, T_REF, T_FUNC, T_ENV,
  T_CFUNC, T_SHARE, T_END, T_SHAREX, T_REGMT
};

#define MAXDEPTH 200
#define FUNC_CACHE_MAX 256

/* ---- primitive writes -------------------------------------------------------------- */

/* Appends one byte. */
static void put_byte(aio_buf *b, int c) {
  unsigned char ch = (unsigned char)c;
  aio_buf_add(b, &ch, 1);
}

/* Appends v as a little-endian base-128 varint. */
static void put_varint(aio_buf *b, uint64_t v) {
  unsigned char tmp[10];
  int n = 0;
  do {
    unsigned char c = v & 0x7f;
    v >>= 7;
    tmp[n++] = c | (v ? 0x80 : 0);
  } while (v);
  aio_buf_add(b, tmp, n);
}

/* ---- encoding ------------------------------------------------------------------------ */

/* One step of the path from the root to the value being encoded (for error messages). */
typedef struct frame {
  enum { F_ROOT, F_INDEX, F_KEY, F_KEYOF, F_UPVALUE, F_META } kind;
  lua_Integer i;      /* F_ROOT: argument number; F_INDEX: array index */
  int idx;            /* F_KEY / F_KEYOF: stack index of the key */
  const char *name;   /* F_UPVALUE: upvalue name */
} frame;

typedef struct shared_ref {
  const aio_share_class *cls;
  void *obj;
} shared_ref;

typedef struct enc {
  aio_buf *b;
  const char *what;
  int boundary;
  int seen;            /* stack index: table/function -> id (made on first use) */
  int globals;         /* stack index: the sender's globals table (fetched on first use) */
  int dumps;           /* stack index: weak cache function -> its bytecode (on first use) */
  unsigned made_seen : 1, made_globals : 1, made_dumps : 1;
  int nextid;
  int depth;
  frame path[MAXDEPTH + 2];
  shared_ref *retained; int nretained, capretained;  /* released if encoding fails */
} enc;

static void encode_value(lua_State *L, enc *e, int idx);

/* Appends a Lua-ish rendering of the key at idx to the path being built. */
static void add_key(lua_State *L, luaL_Buffer *lb, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      int ident = len > 0 && (isalpha((unsigned char)s[0]) || s[0] == '_');
      for (size_t i = 0; ident && i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_') ident = 0;
      if (ident) {
        luaL_addchar(lb, '.');
        luaL_addlstring(lb, s, len);
      } else {
        luaL_addstring(lb, "[\"");
        luaL_addlstring(lb, s, len > 40 ? 40 : len);
        luaL_addstring(lb, len > 40 ? "...\"]" : "\"]");
      }
      break;
    }
    case LUA_TNUMBER: case LUA_TBOOLEAN:
      luaL_addchar(lb, '[');
      luaL_tolstring(L, idx, NULL);
      luaL_addvalue(lb);
      luaL_addchar(lb, ']');
      break;
    default:
      lua_pushfstring(L, "[<%s key>]", luaL_typename(L, idx));
      luaL_addvalue(lb);
  }
}

/* Raises "cannot send <path> (<what it is>); <hint>" for the value at idx. */
static int refuse(lua_State *L, enc *e, int idx, const char *desc, const char *hint) {
  luaL_Buffer lb;
  idx = lua_absindex(L, idx);
  lua_pushstring(L, desc);  /* desc may point into a stack string: anchor it */
  int descidx = lua_gettop(L);
  luaL_buffinit(L, &lb);
  luaL_addstring(&lb, "cannot send ");
  for (int d = 0; d <= e->depth; d++) {
    frame *f = &e->path[d];
    if (e->depth > 16 && d == 5) {  /* a very deep path: keep its two ends */
      luaL_addstring(&lb, "...");
      d = e->depth - 8;
      continue;
    }
    switch (f->kind) {
      case F_ROOT:
        if (strcmp(e->what, "call") == 0) {  /* fn, args...: the function, then its arguments */
          if (f->i == 1) lua_pushliteral(L, "fn");
          else lua_pushfstring(L, "args[%d]", (int)f->i - 1);
        } else if (strstr(e->what, "%d")) lua_pushfstring(L, e->what, (int)f->i);
        else lua_pushstring(L, e->what);
        luaL_addvalue(&lb);
        break;
      case F_INDEX:
        lua_pushfstring(L, "[%I]", (LUAI_UACINT)f->i);
        luaL_addvalue(&lb);
        break;
      case F_KEY: add_key(L, &lb, f->idx); break;
      case F_KEYOF: luaL_addstring(&lb, "<a key>"); break;
      case F_UPVALUE:
        lua_pushfstring(L, "<upvalue %s>", f->name ? f->name : "?");
        luaL_addvalue(&lb);
        break;
      case F_META: luaL_addstring(&lb, "<metatable>"); break;
    }
  }
  luaL_addstring(&lb, " (");
  lua_pushvalue(L, descidx);
  luaL_addvalue(&lb);
  luaL_addstring(&lb, ")");
  if (hint) {
    luaL_addstring(&lb, "; ");
    luaL_addstring(&lb, hint);
  }
  luaL_pushresult(&lb);
  (void)idx;
  return lua_error(L);
}

/* Pushes a frame on the path (the depth limit keeps recursion bounded). */
static frame *push_frame(lua_State *L, enc *e, int kind, int idx) {
  if (e->depth >= MAXDEPTH) refuse(L, e, idx, "nested more than 200 levels deep", NULL);
  frame *f = &e->path[++e->depth];
  f->kind = kind;
  return f;
}

/* The slots below are filled on first use: a message of plain scalars and strings (most job
** arguments and results) then costs no table at all. */
static int enc_seen(lua_State *L, enc *e) {
  if (!e->made_seen) {
    lua_newtable(L);
    lua_replace(L, e->seen);
    e->made_seen = 1;
  }
  return e->seen;
}

/* The sender's globals table (fetched on first use). */
static int enc_globals(lua_State *L, enc *e) {
  if (!e->made_globals) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_replace(L, e->globals);
    e->made_globals = 1;
  }
  return e->globals;
}

static const char dump_cache_key = 0;

/* The sender's bytecode cache (made on first use). */
static int enc_dumps(lua_State *L, enc *e) {
  if (!e->made_dumps) {
    aio_push_weak_table(L, &dump_cache_key, "k");
    lua_replace(L, e->dumps);
    e->made_dumps = 1;
  }
  return e->dumps;
}

/* If the value at idx was met before, writes a T_REF and returns 1; else gives it an id. */
static int encode_ref(lua_State *L, enc *e, int idx) {
  enc_seen(L, e);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->seen) == LUA_TNUMBER) {
    put_byte(e->b, T_REF);
    put_varint(e->b, (uint64_t)lua_tointeger(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, ++e->nextid);
  lua_rawset(L, e->seen);
  return 0;
}

/* Refuses the table at idx if its metatable's __name (on top) names one of the loop's sync
** objects (lua/aio/sync.lua): a copy in another state would share nothing with the original —
** a lock "acquired" there excluded nobody, an item taken there stayed in the loop's queue. */
static void refuse_loop_bound(lua_State *L, enc *e, int idx) {
  static const char *const names[] = {"aio.lock", "aio.semaphore", "aio.event", "aio.condition",
                                      "aio.queue", NULL};
  const char *name = lua_tostring(L, -1);
  for (int i = 0; names[i]; i++)
    if (strcmp(name, names[i]) == 0)
      refuse(L, e, idx, name,
             "it belongs to this loop (a copy would share nothing with it); between threads use "
             "thread.mutex, thread.channel or thread.shared, between processes process.lock, "
             "process.semaphore or process.queue");
}

/* Tables: array part 1..n, then the other pairs, then T_END; the metatable goes first. */
static void encode_table(lua_State *L, enc *e, int idx) {
  if (encode_ref(L, e, idx)) return;
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  int hasmt = lua_getmetatable(L, idx);
  put_byte(e->b, hasmt ? T_TABLE_MT : T_TABLE);
  put_varint(e->b, (uint64_t)n);
  if (hasmt) {
    /* A metatable registered under its __name (luaL_newmetatable: aio.error, classes) crosses
    ** as that name, so the receiver's own metatable is used: an aio.error stays an aio.error
    ** (tostring, aio.is_cancelled, aio.is_timeout all work on the other side). */
    int mt = lua_gettop(L);
    if (lua_getfield(L, mt, "__name") == LUA_TSTRING) {
      lua_pushvalue(L, -1);
      int same = lua_rawget(L, LUA_REGISTRYINDEX) == LUA_TTABLE && lua_rawequal(L, -1, mt);
      lua_pop(L, 1);
      if (same) {
        size_t len;
        const char *name = lua_tolstring(L, -1, &len);
        put_byte(e->b, T_REGMT);
        put_varint(e->b, len);
        aio_buf_add(e->b, name, len);
        lua_pop(L, 2);
        goto contents;
      }
      refuse_loop_bound(L, e, idx);
    }
    lua_pop(L, 1);
    push_frame(L, e, F_META, -1);
    encode_value(L, e, mt);
    e->depth--;
    lua_pop(L, 1);
  }
contents:
  for (lua_Integer i = 1; i <= n; i++) {
    frame *f = push_frame(L, e, F_INDEX, idx);
    f->i = i;
    lua_rawgeti(L, idx, i);
    encode_value(L, e, lua_gettop(L));
    lua_pop(L, 1);
    e->depth--;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = lua_gettop(L) - 1;
    if (lua_isinteger(L, k)) {
      lua_Integer i = lua_tointeger(L, k);
      if (i >= 1 && i <= n) { lua_pop(L, 1); continue; }
    }
    frame *f = push_frame(L, e, F_KEYOF, k);
    f->idx = k;
    encode_value(L, e, k);
    f->kind = F_KEY;
    encode_value(L, e, k + 1);
    e->depth--;
    lua_pop(L, 1);
  }
  put_byte(e->b, T_END);
}

/* lua_dump writer: appends to the buffer. */
static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  aio_buf_add((aio_buf *)ud, p, sz);
  return 0;
}

/* Lua functions: a "pure" flag (no upvalues but _ENV), the bytecode, then each upvalue. */
static void encode_function(lua_State *L, enc *e, int idx) {
  if (lua_iscfunction(L, idx)) {
    if (lua_getupvalue(L, idx, 1) != NULL)
      refuse(L, e, idx, "C function with upvalues",
             "only Lua functions and plain C functions cross; wrap it in a Lua function "
             "that requires its module inside the worker");
    lua_CFunction fn = lua_tocfunction(L, idx);
    put_byte(e->b, T_CFUNC);
    aio_buf_add(e->b, &fn, sizeof fn);
    return;
  }
  int nups = 0, pure = 1;
  for (const char *name; (name = lua_getupvalue(L, idx, nups + 1)) != NULL; nups++) {
    if (strcmp(name, "_ENV") != 0 && !lua_rawequal(L, -1, enc_globals(L, e))) pure = 0;
    lua_pop(L, 1);
  }
  /* A pure function (no upvalue but the globals) gets no id: it cannot refer to itself, and
  ** the receiver's cache gives the same function object for the same bytecode anyway. */
  if (!pure && encode_ref(L, e, idx)) return;
  if (nups > 255) refuse(L, e, idx, "function with more than 255 upvalues", NULL);
  put_byte(e->b, T_FUNC);
  put_byte(e->b, pure);
  put_byte(e->b, nups);
  size_t at = e->b->len;
  uint32_t len = 0;
  aio_buf_add(e->b, &len, sizeof len);  /* patched below */
  enc_dumps(L, e);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->dumps) == LUA_TSTRING) {  /* dumped before: reuse the bytecode */
    size_t n;
    const char *code = lua_tolstring(L, -1, &n);
    aio_buf_add(e->b, code, n);
    lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_dump(L, dump_writer, e->b, 0);
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushlstring(L, e->b->data + at + sizeof len, e->b->len - at - sizeof len);
    lua_rawset(L, e->dumps);
  }
  len = (uint32_t)(e->b->len - at - sizeof len);
  memcpy(e->b->data + at, &len, sizeof len);
  for (int i = 1; i <= nups; i++) {
    const char *name = lua_getupvalue(L, idx, i);
    if (name && strcmp(name, "_ENV") == 0) {  /* whatever it is here, it means "the globals" */
      put_byte(e->b, T_ENV);
      lua_pop(L, 1);
      continue;
    }
    frame *f = push_frame(L, e, F_UPVALUE, idx);
    f->name = name;
    encode_value(L, e, lua_gettop(L));
    e->depth--;
    lua_pop(L, 1);
  }
}

/* Userdata: shareable objects by reference; everything else is refused with a reason. */
static void encode_userdata(lua_State *L, enc *e, int idx) {
  const aio_share_class *cls = NULL;
  const char *tname = NULL;
  if (lua_getmetatable(L, idx)) {
    if (lua_getfield(L, -1, AIO_SHARE_FIELD) == LUA_TLIGHTUSERDATA)
      cls = (const aio_share_class *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, -1, "__name") == LUA_TSTRING) tname = lua_tostring(L, -1);
    lua_pop(L, 1);  /* the name stays alive in the metatable, which stays on the stack */
  } else {
    lua_pushnil(L);
  }
  if (!cls) {
    const char *desc = lua_pushfstring(L, "userdata: %s", tname ? tname : "no name");
    if (tname && strcmp(tname, "FILE*") == 0)
      refuse(L, e, idx, desc, "an open file cannot cross; send its name and open it in the worker");
    refuse(L, e, idx, desc,
           "only shareable aio objects cross (thread.shared/mutex/channel, process.value/array/"
           "lock/semaphore/queue/dict); create this one inside the worker");
  }
  if (e->boundary == AIO_CODEC_PROCESS && !cls->cross_process) {
    const char *desc = lua_pushfstring(L, "userdata: %s", cls->name);
    refuse(L, e, idx, desc,
           "it lives in this process's memory; use process.value/array/dict/queue to share "
           "between processes");
  }
  lua_pop(L, 1);
  void *obj = ((aio_share_box *)lua_touserdata(L, idx))->obj;
  if (!obj) refuse(L, e, idx, cls->name, "it is closed");
  if (cls->pack) {  /* described by value: fd numbers and where they come from */
    aio_buf tmp = {0};
    cls->pack(obj, &tmp);
    put_byte(e->b, T_SHAREX);
    aio_buf_add(e->b, &cls, sizeof cls);
    put_varint(e->b, tmp.len);
    aio_buf_add(e->b, tmp.data, tmp.len);
    aio_buf_free(&tmp);
    return;
  }
  if (e->nretained == e->capretained) {
    e->capretained = e->capretained ? e->capretained * 2 : 4;
    e->retained = realloc(e->retained, e->capretained * sizeof *e->retained);
    if (!e->retained) abort();
  }
  cls->retain(obj);
  e->retained[e->nretained].cls = cls;
  e->retained[e->nretained++].obj = obj;
  put_byte(e->b, T_SHARE);
  aio_buf_add(e->b, &cls, sizeof cls);
  aio_buf_add(e->b, &obj, sizeof obj);
}

/* Encodes the value at (absolute) index idx. */
static void encode_value(lua_State *L, enc *e, int idx) {
  luaL_checkstack(L, 8, "value nested too deeply");
  switch (lua_type(L, idx)) {
    case LUA_TNIL: put_byte(e->b, T_NIL); break;
    case LUA_TBOOLEAN: put_byte(e->b, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        uint64_t u = (uint64_t)lua_tointeger(L, idx);
        put_byte(e->b, T_INT);
        put_varint(e->b, (u << 1) ^ (uint64_t)((int64_t)u >> 63));  /* zigzag */
      } else {
        lua_Number d = lua_tonumber(L, idx);
        put_byte(e->b, T_FLT);
        aio_buf_add(e->b, &d, sizeof d);
      }
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      put_byte(e->b, T_STR);
      put_varint(e->b, len);
      aio_buf_add(e->b, s, len);
      break;
    }
    case LUA_TTABLE:
      if (lua_rawequal(L, idx, enc_globals(L, e))) put_byte(e->b, T_ENV);
      else encode_table(L, e, idx);
      break;
    case LUA_TFUNCTION: encode_function(L, e, idx); break;
    case LUA_TUSERDATA: encode_userdata(L, e, idx); break;
    case LUA_TTHREAD:
      refuse(L, e, idx, "coroutine",
             "a running stack cannot be copied; send the function that makes it instead");
      break;
    case LUA_TLIGHTUSERDATA:
      refuse(L, e, idx, "light userdata", "a raw pointer means nothing to another Lua state");
      break;
    default:
      refuse(L, e, idx, luaL_typename(L, idx), NULL);
  }
}

/* Protected body of aio_codec_encode: the values are its arguments 2..n+1. */
static int encode_p(lua_State *L) {
  enc *e = (enc *)lua_touserdata(L, 1);
  int n = lua_gettop(L) - 1;
  lua_settop(L, n + 4);  /* three nil slots: seen, globals, dumps */
  e->seen = n + 2;
  e->globals = n + 3;
  e->dumps = n + 4;
  for (int i = 1; i <= n; i++) {
    e->depth = 0;
    e->path[0].kind = F_ROOT;
    e->path[0].i = i;
    encode_value(L, e, i + 1);
  }
  return 0;
}

/* Encodes under lua_pcall; on error releases what was retained and re-raises (codec.h). */
void aio_codec_encode(lua_State *L, int idx, int n, aio_buf *b, const char *what, int boundary) {
  enc e;
  memset(&e, 0, sizeof e);
  e.b = b;
  e.what = what;
  e.boundary = boundary;
  size_t oldlen = b->len;
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, n + 4, "too many values to send");
  lua_pushcfunction(L, encode_p);
  lua_pushlightuserdata(L, &e);
  for (int i = 0; i < n; i++) lua_pushvalue(L, idx + i);
  int status = lua_pcall(L, n + 1, 0, 0);
  if (status != LUA_OK) {
    for (int i = 0; i < e.nretained; i++) e.retained[i].cls->release(e.retained[i].obj);
    free(e.retained);
    if (oldlen == 0) aio_buf_free(b);  /* a fresh buffer: the caller has nothing to free */
    else b->len = oldlen;
    if (lua_type(L, -1) == LUA_TSTRING) {  /* misuse: at the call of the C function that sends */
      luaL_where(L, 1);                    /* (empty under pcall: a Lua facade adds its own) */
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    lua_error(L);
  }
  free(e.retained);
}

/* ---- decoding ------------------------------------------------------------------------ */

typedef struct dec {
  const char *p, *end;
  int refs;      /* stack index: id -> table/function */
  int nextid;
  int cache;     /* stack index: bytecode -> function (pure functions) */
  lua_State *L;  /* NULL when only walking (aio_codec_discard) */
  unsigned made_refs : 1, made_cache : 1;
} dec;

/* Raises the error of a message that does not parse. */
static int malformed(lua_State *L) {
  return luaL_error(L, "aio codec: malformed message");
}

/* Reads one byte (-1 at the end when only walking). */
static int get_byte(dec *d) {
  if (d->p >= d->end) return d->L ? malformed(d->L) : -1;
  return (unsigned char)*d->p++;
}

/* Reads a base-128 varint. */
static uint64_t get_varint(dec *d) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    int c = get_byte(d);
    if (c < 0) return 0;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
  }
  return d->L ? (uint64_t)malformed(d->L) : 0;
}

/* Reads n bytes; NULL (walking) or an error when the message is short. */
static const char *get_bytes(dec *d, size_t n) {
  if ((size_t)(d->end - d->p) < n) {
    if (d->L) malformed(d->L);
    d->p = d->end;
    return NULL;
  }
  const char *s = d->p;
  d->p += n;
  return s;
}

static void decode_value(dec *d);

/* The receiver's cache of loaded pure functions (bytecode -> function); starts afresh when it
** holds FUNC_CACHE_MAX entries, so a long-lived worker does not grow without bound. */
static const char cache_key = 0;

/* Pushes the receiver's cache of loaded pure functions, making it if needed. */
static int push_func_cache(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &cache_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &cache_key);
  }
  return lua_gettop(L);
}

/* A 63-bit FNV-1a hash of the bytecode: the cache's key (no Lua string is made per lookup). */
static lua_Integer code_hash(const char *code, size_t len) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < len; i++) { h ^= (unsigned char)code[i]; h *= 1099511628211ULL; }
  h &= 0x7fffffffffffffffULL;
  return (lua_Integer)(h ? h : 1);
}

/* Pushes the cached function for code[0..len) and returns 1, or returns 0. The cache maps
** hash -> function and function -> its bytecode, which is compared to rule out collisions. */
static int cache_find(dec *d, const char *code, size_t len, lua_Integer h) {
  lua_State *L = d->L;
  if (lua_rawgeti(L, d->cache, h) == LUA_TFUNCTION) {
    lua_pushvalue(L, -1);
    if (lua_rawget(L, d->cache) == LUA_TSTRING) {
      size_t n;
      const char *s = lua_tolstring(L, -1, &n);
      if (n == len && memcmp(s, code, len) == 0) {
        lua_pop(L, 1);
        return 1;
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

/* Adds the function on top of the stack to the cache under hash h of code[0..len). */
static void cache_add(dec *d, const char *code, size_t len, lua_Integer h) {
  lua_State *L = d->L;
  lua_rawgeti(L, d->cache, 0);  /* the entry count lives at index 0, which no hash equals */
  lua_Integer n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (n >= FUNC_CACHE_MAX) {
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &cache_key);
    lua_replace(L, d->cache);
    n = 0;
  }
  lua_pushinteger(L, n + 1);
  lua_rawseti(L, d->cache, 0);
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->cache, h);
  lua_pushvalue(L, -1);
  lua_pushlstring(L, code, len);
  lua_rawset(L, d->cache);
}

/* The id table, made on first use (d->refs is a nil slot until then). */
static void dec_refs(dec *d) {
  if (!d->made_refs) {
    lua_newtable(d->L);
    lua_replace(d->L, d->refs);
    d->made_refs = 1;
  }
}

/* Registers the value on top of the stack under the next id. */
static void add_ref(dec *d) {
  dec_refs(d);
  lua_pushvalue(d->L, -1);
  lua_rawseti(d->L, d->refs, ++d->nextid);
}

/* Reads the rest of a table item and pushes the table. */
static void decode_table(dec *d, int hasmt) {
  lua_State *L = d->L;
  lua_Integer n = (lua_Integer)get_varint(d);
  lua_createtable(L, n > 1 << 20 ? 1 << 20 : (int)n, 0);
  int t = lua_gettop(L);
  add_ref(d);
  int mt = 0;
  if (hasmt) {
    decode_value(d);
    mt = lua_gettop(L);
  }
  for (lua_Integer i = 1; i <= n; i++) {
    decode_value(d);
    lua_rawseti(L, t, i);
  }
  while (d->p < d->end && (unsigned char)*d->p != T_END) {
    decode_value(d);
    decode_value(d);
    if (lua_isnil(L, -2)) malformed(L);
    lua_rawset(L, t);
  }
  get_byte(d);  /* T_END */
  if (mt) {
    if (!lua_istable(L, mt)) malformed(L);
    lua_pushvalue(L, mt);
    lua_setmetatable(L, t);
    lua_remove(L, mt);
  }
}

/* Reads the rest of a function item and pushes the function. */
static void decode_function(dec *d) {
  lua_State *L = d->L;
  int pure = get_byte(d);
  int nups = get_byte(d);
  uint32_t len;
  memcpy(&len, get_bytes(d, sizeof len), sizeof len);
  const char *code = get_bytes(d, len);
  int cached = 0;
  if (!d->made_cache) {
    push_func_cache(L);
    lua_replace(L, d->cache);
    d->made_cache = 1;
  }
  lua_Integer h = pure ? code_hash(code, len) : 0;
  if (pure) cached = cache_find(d, code, len, h);
  if (!cached) {
    if (luaL_loadbufferx(L, code, len, "=(aio codec)", "b") != LUA_OK) lua_error(L);
    if (pure) cache_add(d, code, len, h);
  }
  int f = lua_gettop(L);
  if (!pure) add_ref(d);  /* pure functions have no id (see encode_function) */
  for (int i = 1; i <= nups; i++) {
    decode_value(d);
    if (cached) lua_pop(L, 1);  /* a cached pure function already has the receiver's _ENV */
    else if (!lua_setupvalue(L, f, i)) lua_pop(L, 1);
  }
}


/* Metatables a state registers on first use, which a value may bring before that: their makers
** (each pushes its metatable, registering it), so that the headers of a response sent to a
** worker are found in any case there even if the worker never loaded aio.http. */
static const struct { const char *name; void (*push)(lua_State *L); } lazy_mts[] = {
  {"aio.http.headers", aio_http_push_headers_mt},
};

/* Pushes the metatable registered as name in a state that lacks it: made by its maker when it
** has one, else a bare table that only says the name. */
static void push_missing_mt(lua_State *L, const char *name) {
  for (size_t i = 0; i < sizeof lazy_mts / sizeof lazy_mts[0]; i++) {
    if (strcmp(name, lazy_mts[i].name) == 0) { lazy_mts[i].push(L); return; }
  }
  lua_createtable(L, 0, 1);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
}
/* Reads one item and pushes its value. */
static void decode_value(dec *d) {
  lua_State *L = d->L;
  luaL_checkstack(L, 8, "value nested too deeply");
  int tag = get_byte(d);
  switch (tag) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: {
      uint64_t z = get_varint(d);
      lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (~(z & 1) + 1)));
      break;
    }
    case T_FLT: {
      lua_Number x;
      memcpy(&x, get_bytes(d, sizeof x), sizeof x);
      lua_pushnumber(L, x);
      break;
    }
    case T_STR: {
      size_t len = (size_t)get_varint(d);
      lua_pushlstring(L, get_bytes(d, len), len);
      break;
    }
    case T_TABLE: case T_TABLE_MT: decode_table(d, tag == T_TABLE_MT); break;
    case T_REGMT: {  /* a registered metatable, by name (made bare if this state lacks it) */
      size_t len = (size_t)get_varint(d);
      lua_pushlstring(L, get_bytes(d, len), len);
      if (luaL_getmetatable(L, lua_tostring(L, -1)) != LUA_TTABLE) {
        lua_pop(L, 1);
        push_missing_mt(L, lua_tostring(L, -1));
      }
      lua_remove(L, -2);
      break;
    }
    case T_REF:
      dec_refs(d);
      if (lua_rawgeti(L, d->refs, (lua_Integer)get_varint(d)) == LUA_TNIL) malformed(L);
      break;
    case T_FUNC: decode_function(d); break;
    case T_ENV: lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); break;
    case T_CFUNC: {
      lua_CFunction fn;
      memcpy(&fn, get_bytes(d, sizeof fn), sizeof fn);
      lua_pushcfunction(L, fn);
      break;
    }
    case T_SHARE: {
      const aio_share_class *cls;
      void *obj;
      memcpy(&cls, get_bytes(d, sizeof cls), sizeof cls);
      memcpy(&obj, get_bytes(d, sizeof obj), sizeof obj);
      cls->push(L, obj);
      break;
    }
    case T_SHAREX: {
      const aio_share_class *cls;
      memcpy(&cls, get_bytes(d, sizeof cls), sizeof cls);
      size_t n = (size_t)get_varint(d);
      cls->unpack(L, get_bytes(d, n), n);
      break;
    }
    default: malformed(L);
  }
}

/* Decodes every item of the message; the helper slots are dropped at the end (codec.h). */
int aio_codec_decode(lua_State *L, const char *data, size_t len) {
  dec d;
  int base = lua_gettop(L);
  luaL_checkstack(L, 8, "decoding");
  d.p = data;
  d.end = data + len;
  d.L = L;
  d.nextid = 0;
  d.made_refs = d.made_cache = 0;
  lua_settop(L, base + 2);  /* two nil slots: the function cache and the id table */
  d.cache = base + 1;
  d.refs = base + 2;
  int n = 0;
  while (d.p < d.end) {
    decode_value(&d);
    n++;
  }
  /* move the n values down over the two helper slots */
  lua_rotate(L, base + 1, n);
  lua_pop(L, 2);
  return n;
}

/* ---- discarding ---------------------------------------------------------------------- */

/* Walks one item, releasing (or retaining) the shareable objects it holds. */
static void skip_value(dec *d, int retain) {
  int tag = get_byte(d);
  switch (tag) {
    case T_INT: get_varint(d); break;
    case T_FLT: get_bytes(d, sizeof(lua_Number)); break;
    case T_STR: get_bytes(d, (size_t)get_varint(d)); break;
    case T_REF: get_varint(d); break;
    case T_CFUNC: get_bytes(d, sizeof(lua_CFunction)); break;
    case T_TABLE: case T_TABLE_MT: {
      uint64_t n = get_varint(d);
      if (tag == T_TABLE_MT) skip_value(d, retain);
      for (uint64_t i = 0; i < n && d->p < d->end; i++) skip_value(d, retain);
      while (d->p < d->end && (unsigned char)*d->p != T_END) skip_value(d, retain);
      get_byte(d);
      break;
    }
    case T_FUNC: {
      get_byte(d);
      int nups = get_byte(d);
      uint32_t len = 0;
      const char *p = get_bytes(d, sizeof len);
      if (p) memcpy(&len, p, sizeof len);
      get_bytes(d, len);
      for (int i = 0; i < nups && d->p < d->end; i++) skip_value(d, retain);
      break;
    }
    case T_SHAREX: get_bytes(d, sizeof(void *)); get_bytes(d, (size_t)get_varint(d)); break;
    case T_REGMT: get_bytes(d, (size_t)get_varint(d)); break;
    case T_SHARE: {
      const char *pc = get_bytes(d, sizeof(void *)), *po = get_bytes(d, sizeof(void *));
      if (pc && po) {
        const aio_share_class *cls;
        void *obj;
        memcpy(&cls, pc, sizeof cls);
        memcpy(&obj, po, sizeof obj);
        if (retain) cls->retain(obj);
        else cls->release(obj);
      }
      break;
    }
    default: break;
  }
}

/* Releases the shareable references of an undelivered message (codec.h). */
void aio_codec_discard(const char *data, size_t len) {
  dec d;
  d.p = data;
  d.end = data + len;
  d.L = NULL;
  while (d.p < d.end) skip_value(&d, 0);
}

/* Takes one more reference to each shareable object of a message (codec.h). */
void aio_codec_retain(const char *data, size_t len) {
  dec d;
  d.p = data;
  d.end = data + len;
  d.L = NULL;
  while (d.p < d.end) skip_value(&d, 1);
}

/* Protected body of aio_codec_decode_owned. */
static int decode_p(lua_State *L) {
  aio_buf *b = (aio_buf *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  return aio_codec_decode(L, b->data, b->len);
}

/* Decodes under lua_pcall so that b is freed whatever happens (codec.h). */
int aio_codec_decode_owned(lua_State *L, aio_buf *b) {
  int base = lua_gettop(L);
  lua_pushcfunction(L, decode_p);
  lua_pushlightuserdata(L, b);
  int st = lua_pcall(L, 1, LUA_MULTRET, 0);
  aio_buf_free(b);
  if (st != LUA_OK) return lua_error(L);
  return lua_gettop(L) - base;
}

/*
** shareable.h — C objects that cross between Lua states (worker threads, forked processes) by
** reference: their class, the box a state holds one by, and the metatable mark the codec
** (codec.h) recognises. A class's userdata metatable carries `__aio_share` (AIO_SHARE_FIELD), a
** light userdata pointing to its aio_share_class.
*/
#ifndef AIO_SHAREABLE_H
#define AIO_SHAREABLE_H

#include <stddef.h>
#include <lua.h>
#include <lauxlib.h>
#include "buf.h"

/* The metatable field that marks a shareable class (a light userdata: its aio_share_class). */
#define AIO_SHARE_FIELD "__aio_share"

/* How a shareable C object crosses: by reference, counted by its class. */
typedef struct aio_share_class {
  const char *name;                      /* metatable name, e.g. "aio.thread.shared" */
  int cross_process;                     /* lives in shared memory: may cross into a process */
  void (*retain)(void *obj);             /* one more reference, taken by the encoded message */
  void (*release)(void *obj);            /* drops a reference (message dropped undecoded) */
  void (*push)(lua_State *L, void *obj); /* pushes a userdata adopting one reference */
  /* Optional: objects that are not one address in all processes (file descriptors) describe
  ** themselves in bytes instead; `unpack` pushes a userdata for them in the receiver (it may
  ** raise, e.g. when the descriptor does not exist there). retain/release are then unused. */
  void (*pack)(void *obj, aio_buf *b);
  void (*unpack)(lua_State *L, const char *p, size_t n);
} aio_share_class;

/* The first field of every shareable userdata: the shared object. */
typedef struct aio_share_box {
  void *obj;
} aio_share_box;

/* Sets the `__aio_share` field of the metatable on top of the stack to cls. */
void aio_share_register(lua_State *L, const aio_share_class *cls);

/* Class no-ops: retain/release of objects that are not counted (they live in shared memory,
** or cross by value: pipe ends, queues), and push of those that only cross by `unpack`. */
void aio_share_noop_ref(void *o);
void aio_share_noop_push(lua_State *L, void *o);

/* Makes the metatable named cls->name (left on the stack; returns 1): the `methods` table is
** its __index and its field `methods` (for an __index function among `meta` that still wants
** them), then come the metamethods `meta`, then the class mark (aio_share_register). */
int aio_share_new_mt(lua_State *L, const aio_share_class *cls, const luaL_Reg *methods,
                     const luaL_Reg *meta);

/* Pushes a box (aio_share_box) for obj with the metatable mt, which open_mt makes (left on the
** stack) the first time this state needs it: a state a shared object crosses into may not
** have opened its module. The box owns whatever reference the caller hands it. */
void aio_share_push_box(lua_State *L, void *obj, const char *mt, int (*open_mt)(lua_State *L));

/* The object of the box at idx, which must have the metatable mt; raises if it was released. */
void *aio_share_check(lua_State *L, int idx, const char *mt);

/* __gc of the boxes of a reference-counted class: drops the box's reference (cls->release). */
int aio_share_box_gc(lua_State *L, const aio_share_class *cls);

#endif

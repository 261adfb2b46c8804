/*
** codec.h — moving Lua values between Lua states (worker threads, forked processes).
**
** One byte format for both boundaries. What crosses, and how:
**   nil, booleans, integers and floats (kept apart), strings (binary-safe);
**   tables, nested, with cycles and shared references preserved, metatables included;
**   Lua functions as bytecode, their upvalues copied by value, `_ENV` (and any reference to the
**   sender's globals table) mapped to the receiver's globals;
**   light C functions (no upvalues) by address — the receiver runs the same binary;
**   shareable objects (thread.shared, thread.mutex, thread.channel, process.value ...) by
**   reference: their userdata metatable carries `__aio_share`, a light userdata pointing to an
**   aio_share_class.
** Anything else (coroutines, C closures, foreign userdata, open files, light userdata) raises an
** error naming the path to the value, e.g. `cannot send args[2].conn (userdata: aio.tcp) ...`.
*/
#ifndef AIO_CODEC_H
#define AIO_CODEC_H

#include <stddef.h>
#include <lua.h>
#include <lauxlib.h>
#include "buf.h"

/* Which boundary the values cross: decides which shareable objects may go. */
enum { AIO_CODEC_THREAD = 0, AIO_CODEC_PROCESS = 1 };

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

/* Appends n values starting at stack index idx to b (b may be empty or already hold data).
** `what` names the root in error paths: "args" gives args[1], args[2] ...; a name without
** brackets ("result") is used as is for n == 1. Raises a Lua error on values that cannot
** cross; b is left as it was on error. */
void aio_codec_encode(lua_State *L, int idx, int n, aio_buf *b, const char *what, int boundary);

/* Pushes the values encoded in data[0..len); returns how many. Raises on malformed input. */
int aio_codec_decode(lua_State *L, const char *data, size_t len);

/* Decodes b, taking ownership of its memory (freed even if decoding raises); empties b. */
int aio_codec_decode_owned(lua_State *L, aio_buf *b);

/* Takes one more reference to each shareable object named in an encoded message (before
** decoding a copy of a message that is kept, e.g. a shared cell's value). */
void aio_codec_retain(const char *data, size_t len);

/* Drops the references to shareable objects held by an encoded message that will never be
** decoded (so that their counts stay right). */
void aio_codec_discard(const char *data, size_t len);


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

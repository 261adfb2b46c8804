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
**   reference: their userdata metatable carries the class mark (shareable.h).
** Anything else (coroutines, C closures, foreign userdata, open files, light userdata) raises an
** error naming the path to the value, e.g. `cannot send args[2].conn (userdata: aio.tcp) ...`.
*/
#ifndef AIO_CODEC_H
#define AIO_CODEC_H

#include <stddef.h>
#include <lua.h>
#include <lauxlib.h>
#include "buf.h"
#include "shareable.h"

/* Which boundary the values cross: decides which shareable objects may go. */
enum { AIO_CODEC_THREAD = 0, AIO_CODEC_PROCESS = 1 };

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

#endif

/*
** outcome.h — how a call run in another Lua state comes back to the loop: the error record
** {err, traceback} made where it failed, and the error its future is rejected with. Shared by
** the thread pool (thread.c) and the forked workers (process*.c); each encodes the record for
** its own boundary.
*/
#ifndef AIO_OUTCOME_H
#define AIO_OUTCOME_H

#include <stddef.h>
#include <lua.h>

/* Message handler: replaces the error value with the record {err, traceback of where it was raised}. */
int aio_outcome_msgh(lua_State *L);

/* Replaces the value on top of the stack with the error record {value} (no traceback). */
void aio_outcome_wrap_error(lua_State *L);

/* Empties the stack, decodes `fn, args...` from data and calls fn; returns how many results it
** left on the stack. Raises "empty job" on an empty message, and whatever fn raises. */
int aio_outcome_call(lua_State *L, const char *data, size_t len);

/* Pushes the error to reject a failed call's future with, from the decoded error at e and its
** traceback at e + 1: a string error gets "stack traceback (<who>):" and the traceback
** appended; a table error gets a `traceback` field unless it has one. */
void aio_outcome_push_error(lua_State *L, int e, const char *who);

#endif

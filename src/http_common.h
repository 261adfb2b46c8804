/*
** http_common.h — what the HTTP client (http_client*.c) and server (http_server*.c) share:
** the syntax checks (what a method or header name may be, what no header value nor request URL
** may hold; each side raises its own error message), the reader of their options (one wording
** for a bad one), and the join of a repeated header in a header table.
*/
#ifndef AIO_HTTP_COMMON_H
#define AIO_HTTP_COMMON_H

#include <stddef.h>
#include <lua.h>

/* Is s[0..len) an HTTP token (RFC 9110, 5.6.2), as a method or a header name must be? */
int aio_http_is_token(const char *s, size_t len);

/* Does s[0..len) hold a CR, LF or NUL? Each would end a request or status line or a header
** early (request smuggling, response splitting) or cut it short. When high is not NULL, *high
** is set if s holds a byte >= 0x80 (it is left alone otherwise). */
int aio_http_has_crlf_nul(const char *s, size_t len, int *high);

/* How aio_http_opt_number reads an option (and names what it expected in its error). */
enum { AIO_OPT_NUMBER, AIO_OPT_INTEGER, AIO_OPT_SECONDS };

/* Raises "<who>: bad option '<k>' (<expected> expected, got <value>)" about the value at idx (a
** number is shown, anything else by its type). */
int aio_http_opt_error(lua_State *L, int idx, const char *who, const char *k, const char *expected);

/* The optional field k of the table at idx (no table: dflt) as a number from min to max (an
** integer for AIO_OPT_INTEGER; Lua's conversion, so "5" counts), dflt when absent; anything
** else raises as aio_http_opt_error, expecting e.g. "a number of seconds from 0 to 1000000000"
** (">= min" when max is HUGE_VAL). NaN never passes: no caller casts it. */
lua_Number aio_http_opt_number(lua_State *L, int idx, const char *who, const char *k,
                               lua_Number dflt, lua_Number min, lua_Number max, int kind);

/* With a header table below a header name on the stack, sets table[name] = v[0..vl), joined to
** an earlier value of a repeated header with ", "; pops the name. */
void aio_http_join_header(lua_State *L, const char *v, size_t vl);

/* Pushes the header name k[0..len) lower-cased. */
void aio_http_push_lower(lua_State *L, const char *k, size_t len);

/* Pushes the shared metatable of header tables ("aio.http.headers", made on first use), whose
** __index finds a name given in any case (res.headers["Content-Type"]). */
void aio_http_push_headers_mt(lua_State *L);

/* Gives the header table on top of the stack that metatable. */
void aio_http_set_headers_mt(lua_State *L);

#endif

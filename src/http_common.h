/*
** http_common.h — the HTTP syntax checks the client (http_client.c) and the server
** (http_server.c) share: what a method or header name may be, and what no header value (nor a
** request URL) may hold. Each side raises its own error message.
*/
#ifndef AIO_HTTP_COMMON_H
#define AIO_HTTP_COMMON_H

#include <stddef.h>

/* Is s[0..len) an HTTP token (RFC 9110, 5.6.2), as a method or a header name must be? */
int aio_http_is_token(const char *s, size_t len);

/* Does s[0..len) hold a CR, LF or NUL? Each would end a request or status line or a header
** early (request smuggling, response splitting) or cut it short. When high is not NULL, *high
** is set if s holds a byte >= 0x80 (it is left alone otherwise). */
int aio_http_has_crlf_nul(const char *s, size_t len, int *high);

#endif

/*
** http_common.c — HTTP syntax checks shared by the client and the server (http_common.h).
*/
#include <stdint.h>
#include <string.h>
#include "http_common.h"

/* Is s[0..len) an HTTP token (RFC 9110, 5.6.2)? */
int aio_http_is_token(const char *s, size_t len) {
  if (len == 0) return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((unsigned)(ch | 0x20) - 'a' < 26u || (unsigned)ch - '0' < 10u) continue;
    if (ch == 0 || !strchr("!#$%&'*+-.^_`|~", ch)) return 0;
  }
  return 1;
}

/* Does s[0..len) hold a CR, LF or NUL (and *high: a byte >= 0x80)? Every URL the client sends
** goes through here, so 8 bytes at a time are let through when none is a control byte or
** >= 0x80. */
int aio_http_has_crlf_nul(const char *s, size_t len, int *high) {
  const uint64_t ones = 0x0101010101010101u, tops = 0x8080808080808080u;
  size_t i = 0;
  for (uint64_t w; i + 8 <= len; i += 8) {
    memcpy(&w, s + i, 8);
    if (((w - ones * 0x20) | w) & tops) break; /* a byte < 0x20 or >= 0x80: look at each */
  }
  for (; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch - 0x20u < 0x60u) continue;        /* printable ASCII: the common case */
    if (ch == '\r' || ch == '\n' || ch == 0) return 1;
    if (ch >= 0x80 && high) *high = 1;
  }
  return 0;
}

/*
** buf.h — the growable byte buffer used wherever bytes are collected: codec messages, frames,
** HTTP requests and responses. Its memory is plain malloc memory, so that another thread or
** process may own it. The functions are inline: the codec appends a few bytes at a time.
*/
#ifndef AIO_BUF_H
#define AIO_BUF_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* A growable byte buffer; {0} is an empty one. */
typedef struct aio_buf {
  char *data;
  size_t len, cap;
} aio_buf;

/* Appends n bytes to b, growing it geometrically; 0 when out of memory (b left as it was). */
static inline int aio_buf_try_add(aio_buf *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;  /* a small job (function + arguments) fits at once */
    while (cap < b->len + n) cap *= 2;
    char *d = (char *)realloc(b->data, cap);
    if (!d) return 0;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 1;
}

/* Appends n bytes to b; aborts when out of memory (as lua.c would). */
static inline void aio_buf_add(aio_buf *b, const void *p, size_t n) {
  if (!aio_buf_try_add(b, p, n)) abort();
}

/* Frees b's memory and empties it. */
static inline void aio_buf_free(aio_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

#endif

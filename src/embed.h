/* embed.h — the Lua modules embedded at build time (cmake/embed.cmake writes the table). */
#ifndef AIO_EMBED_H
#define AIO_EMBED_H
#include <stddef.h>

typedef struct aio_embedded {
  const char *name;     /* module name, e.g. "aio.rx" */
  const char *path;     /* source path for chunk names, e.g. "lua/aio/rx.lua" */
  const char *source;
  size_t len;
} aio_embedded;

extern const aio_embedded aio_embedded_modules[];

#endif

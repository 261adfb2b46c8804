/*
** curl_lazy.c — libcurl, loaded on first use instead of at program start.
**
** Why: linking libcurl makes the dynamic loader map and relocate it and its ~30 dependencies
** (TLS, GSSAPI, LDAP, IDN, ...) before main() runs: about 5 ms on every start, while
** `aioshell -e ''` must start in 3 ms and most scripts never make an HTTP request. So the
** runtime does not link libcurl: the curl_* functions it calls are defined here, each one
** resolving the real function with dlopen("libcurl.so.4") + dlsym the first time it is called.
** The definitions are hidden (not exported), so libcurl, once loaded, never binds to them.
**
** The build links libcurl with --as-needed after this file: a curl function missing below
** still links (libcurl is then loaded at start again, only slower), and spec/cli_spec.lua
** checks that a plain start does not map libcurl. To use a new curl function, add one line.
*/
#define CURL_DISABLE_TYPECHECK /* the typecheck macros would rename the variadic functions */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#pragma GCC visibility push(hidden)
/* curl 8 made curl_url_get's handle const (an API- and ABI-compatible change): the header's
** declaration is renamed out of the way, so the definition below fits every version. */
#define curl_url_get curl_url_get_as_declared
#include <curl/curl.h>
#undef curl_url_get
CURLUcode curl_url_get(CURLU *u, CURLUPart what, char **part, unsigned int flags);

#define LIBCURL_SONAME "libcurl.so.4"

/* Returns the address of libcurl's function `name`, loading libcurl on the first call. There
** is no way to report an error through every curl signature, and a libcurl that cannot be
** loaded is a broken installation, so that ends the program with a message. */
static void *curl_symbol(const char *name) {
  static void *lib;
  void *lib_now = __atomic_load_n(&lib, __ATOMIC_ACQUIRE), *fn;
  if (lib_now == NULL) { /* dlopen is thread-safe and returns the same handle if raced */
    lib_now = dlopen(LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (lib_now == NULL) {
      fprintf(stderr, "aioshell: cannot load %s: %s\n", LIBCURL_SONAME, dlerror());
      abort();
    }
    __atomic_store_n(&lib, lib_now, __ATOMIC_RELEASE);
  }
  fn = dlsym(lib_now, name);
  if (fn == NULL) {
    fprintf(stderr, "aioshell: %s has no %s: %s\n", LIBCURL_SONAME, name, dlerror());
    abort();
  }
  return fn;
}

/* Declares `real`: libcurl's function `name` of type `ret (*) params`, resolved once. */
#define REAL(ret, params, name) \
  typedef ret (*real_fn) params; \
  static real_fn cached_; \
  real_fn real = __atomic_load_n(&cached_, __ATOMIC_ACQUIRE); \
  if (real == NULL) { \
    real = (real_fn)curl_symbol(#name); \
    __atomic_store_n(&cached_, real, __ATOMIC_RELEASE); \
  }

/* Defines `ret name params` forwarding `args` to libcurl's own function. */
#define LAZY(ret, name, params, args) \
  ret name params { REAL(ret, params, name) return real args; }
#define LAZY_VOID(name, params, args) \
  void name params { REAL(void, params, name) real args; }

/* ---- global, easy, slist, strings ---------------------------------------------------- */
LAZY(CURLcode, curl_global_init, (long flags), (flags))
LAZY_VOID(curl_global_cleanup, (void), ())
LAZY(char *, curl_version, (void), ())
LAZY(curl_version_info_data *, curl_version_info, (CURLversion v), (v))
LAZY(CURL *, curl_easy_init, (void), ())
LAZY_VOID(curl_easy_cleanup, (CURL *h), (h))
LAZY_VOID(curl_easy_reset, (CURL *h), (h))
LAZY(CURL *, curl_easy_duphandle, (CURL *h), (h))
LAZY(CURLcode, curl_easy_perform, (CURL *h), (h))
LAZY(CURLcode, curl_easy_pause, (CURL *h, int bitmask), (h, bitmask))
LAZY(const char *, curl_easy_strerror, (CURLcode c), (c))
LAZY(char *, curl_easy_escape, (CURL *h, const char *s, int n), (h, s, n))
LAZY(char *, curl_easy_unescape, (CURL *h, const char *s, int n, int *outn), (h, s, n, outn))
LAZY_VOID(curl_free, (void *p), (p))
LAZY(struct curl_slist *, curl_slist_append, (struct curl_slist *l, const char *s), (l, s))
LAZY_VOID(curl_slist_free_all, (struct curl_slist *l), (l))
LAZY(time_t, curl_getdate, (const char *p, const time_t *unused), (p, unused))

/* ---- multi ------------------------------------------------------------------------- */
LAZY(CURLM *, curl_multi_init, (void), ())
LAZY(CURLMcode, curl_multi_cleanup, (CURLM *m), (m))
LAZY(CURLMcode, curl_multi_add_handle, (CURLM *m, CURL *h), (m, h))
LAZY(CURLMcode, curl_multi_remove_handle, (CURLM *m, CURL *h), (m, h))
LAZY(CURLMcode, curl_multi_perform, (CURLM *m, int *running), (m, running))
LAZY(CURLMcode, curl_multi_socket_action, (CURLM *m, curl_socket_t s, int ev, int *running),
     (m, s, ev, running))
LAZY(CURLMcode, curl_multi_assign, (CURLM *m, curl_socket_t s, void *p), (m, s, p))
LAZY(CURLMcode, curl_multi_timeout, (CURLM *m, long *ms), (m, ms))
LAZY(CURLMsg *, curl_multi_info_read, (CURLM *m, int *left), (m, left))
LAZY(const char *, curl_multi_strerror, (CURLMcode c), (c))
LAZY(CURLMcode, curl_multi_wakeup, (CURLM *m), (m))
LAZY(CURLMcode, curl_multi_poll, (CURLM *m, struct curl_waitfd *fds, unsigned n, int ms, int *nfds),
     (m, fds, n, ms, nfds))
LAZY(CURLMcode, curl_multi_wait, (CURLM *m, struct curl_waitfd *fds, unsigned n, int ms, int *nfds),
     (m, fds, n, ms, nfds))

/* ---- URL API ----------------------------------------------------------------------- */
LAZY(CURLU *, curl_url, (void), ())
LAZY_VOID(curl_url_cleanup, (CURLU *u), (u))
LAZY(CURLUcode, curl_url_get, (CURLU *u, CURLUPart what, char **part, unsigned int flags),
     (u, what, part, flags))
/* (curl_url_dup is left out: its constness changed across curl versions.) */
LAZY(CURLUcode, curl_url_set, (CURLU *u, CURLUPart what, const char *part, unsigned int flags),
     (u, what, part, flags))
LAZY(const char *, curl_url_strerror, (CURLUcode c), (c))

/* ---- the variadic setters ---------------------------------------------------------------
** A variadic call cannot be forwarded as such: read the one argument with the type its
** option number announces (curl.h's CURLOPTTYPE_* ranges), pass it on with that type. */

/* Forwards one option value of option `opt` (a CURLOPTTYPE_* numbered option) to real. */
#define FORWARD_OPTION(real, handle, opt, ap) \
  ((opt) < CURLOPTTYPE_OBJECTPOINT ? real(handle, opt, va_arg(ap, long)) \
   : (opt) < CURLOPTTYPE_FUNCTIONPOINT ? real(handle, opt, va_arg(ap, void *)) \
   : (opt) < CURLOPTTYPE_OFF_T ? real(handle, opt, va_arg(ap, void (*)(void))) \
   : (opt) < CURLOPTTYPE_BLOB ? real(handle, opt, va_arg(ap, curl_off_t)) \
   : real(handle, opt, va_arg(ap, void *)))

CURLcode curl_easy_setopt(CURL *h, CURLoption opt, ...) {
  CURLcode rc;
  va_list ap;
  REAL(CURLcode, (CURL *, CURLoption, ...), curl_easy_setopt)
  va_start(ap, opt);
  rc = FORWARD_OPTION(real, h, opt, ap);
  va_end(ap);
  return rc;
}

CURLMcode curl_multi_setopt(CURLM *m, CURLMoption opt, ...) {
  CURLMcode rc;
  va_list ap;
  REAL(CURLMcode, (CURLM *, CURLMoption, ...), curl_multi_setopt)
  va_start(ap, opt);
  rc = FORWARD_OPTION(real, m, opt, ap);
  va_end(ap);
  return rc;
}

/* Every CURLINFO_* takes a pointer to where the answer goes. */
CURLcode curl_easy_getinfo(CURL *h, CURLINFO info, ...) {
  CURLcode rc;
  va_list ap;
  REAL(CURLcode, (CURL *, CURLINFO, ...), curl_easy_getinfo)
  va_start(ap, info);
  rc = real(h, info, va_arg(ap, void *));
  va_end(ap);
  return rc;
}

#pragma GCC visibility pop

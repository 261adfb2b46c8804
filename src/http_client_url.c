/*
** http_client_url.c — what the HTTP client reads of a URL, through curl's URL API: a host name
** to give curl in punycode, the "scheme://host:port" a request counts against (max_per_host),
** and whether a failed request's scheme was http(s).
*/
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "http_client.h"

/* How curl itself parses a URL it is given (7.88's url.c), so our reading of its parts agrees. */
#define URL_PARSE_FLAGS (CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME)

/* Is a part of u (a host name) plain ASCII? A part curl cannot give counts as ASCII. */
static int url_part_ascii(CURLU *u, CURLUPart what) {
  char *part = NULL;
  int ascii = 1;
  if (curl_url_get(u, what, &part, 0) != CURLUE_OK) return 1;
  for (const char *p = part; *p; p++) if ((unsigned char)*p >= 0x80) ascii = 0;
  curl_free(part);
  return ascii;
}

/* Gives u's host name in punycode when it is not ASCII, returning the new URL (malloc'd), or
** NULL when there is nothing to convert or the conversion fails (curl then reports the URL).
** curl converts with libidn2, which reads the host in the locale's encoding; aioshell keeps
** the C locale (as lua.c does), so the conversion runs under a C.UTF-8 locale for this thread
** only (uselocale), and the process locale is never touched. */
static char *url_punycode(CURLU *u) {
  char *puny = NULL, *out = NULL;
  if (url_part_ascii(u, CURLUPART_HOST)) return NULL;
  locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
  if (utf8 == (locale_t)0) return NULL;
  locale_t old = uselocale(utf8);
  CURLUcode rc = curl_url_get(u, CURLUPART_URL, &puny, CURLU_PUNYCODE);
  uselocale(old);
  freelocale(utf8);
  if (rc != CURLUE_OK) return NULL;
  if ((out = strdup(puny)) != NULL && curl_url_set(u, CURLUPART_URL, out, URL_PARSE_FLAGS) != CURLUE_OK) {
    free(out);                     /* u keeps the name as given, as when the conversion fails */
    out = NULL;
  }
  curl_free(puny);
  return out;
}

/* Writes "scheme://host:port" of u (the host lower-cased) into a new buffer; NULL when curl
** cannot give those parts (the request then counts against no host: curl will fail it). */
static char *url_host_key(CURLU *u, size_t *len) {
  char *scheme = NULL, *host = NULL, *port = NULL, *key = NULL;
  if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    size_t n = strlen(scheme) + strlen(host) + (port ? strlen(port) : 0) + 5;
    if ((key = malloc(n)) != NULL) {
      *len = (size_t)snprintf(key, n, "%s://%s:%s", scheme, host, port ? port : "");
      for (char *k = key; *k; k++) if (*k >= 'A' && *k <= 'Z') *k = (char)(*k + 32);
    }
  }
  curl_free(scheme); curl_free(host); curl_free(port);
  return key;
}

/* Reads r's URL with curl's URL API when something needs its parts: a host name that is not
** ASCII goes to curl in punycode (non_ascii: the URL has such bytes somewhere), and with
** max_per_host r counts against its host. Only then: a plain request never parses its URL
** here. The parsed URL is kept for curl (CURLOPT_CURLU), which then does not parse it again.
** A URL curl cannot parse is left to curl, which fails it with kind "url". Returns 0 when out
** of memory. */
int aio_hc_url_prepare(http_client *c, http_req *r, int non_ascii) {
  CURLU *u = curl_url();
  if (!u) return 0;
  if (curl_url_set(u, CURLUPART_URL, r->url, URL_PARSE_FLAGS) != CURLUE_OK) {
    curl_url_cleanup(u);
    return 1;
  }
  r->curlu = u;                    /* req_free frees it */
  char *puny = non_ascii ? url_punycode(u) : NULL;
  if (puny) { free(r->url); r->url = puny; }
  size_t len = 0;
  char *key = c->max_per_host > 0 ? url_host_key(u, &len) : NULL;
  int ok = !key || (r->host = aio_hc_host_hold(c, key, len)) != NULL;
  free(key);
  return ok;
}

/* Is the scheme of url one we allow (http, https)? Asked only of a failed request: curl says
** "unsupported protocol" both for a URL of another scheme and for a reply that is not HTTP. */
int aio_hc_url_is_http(const char *url) {
  CURLU *u = curl_url();
  char *scheme = NULL;
  int yes = 0;
  if (u && curl_url_set(u, CURLUPART_URL, url, URL_PARSE_FLAGS) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK)
    yes = strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0;
  curl_free(scheme);
  curl_url_cleanup(u);
  return yes;
}

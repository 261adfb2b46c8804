/*
** http_server.h — what the files of aio.http_server_c share: http_server.c (the Lua side and the
** server's life cycle), http_server_conn.c (a connection, reading and parsing),
** http_server_request.c (the request table), http_server_write.c (the answers). Private to them.
*/
#ifndef AIO_HTTP_SERVER_H
#define AIO_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <llhttp.h>
#include "aio.h"
#include "buf.h"
#include "http_common.h"

#define SERVER_MT "aio.http.server"
#define CONN_MT "aio.http.conn"

typedef struct srv srv;
typedef struct conn conn;

typedef struct slot {              /* one request's response, in request order */
  struct slot *next;
  uint32_t seq;
  aio_task *task; int task_ref;    /* the handler's task, while the slot lives */
  aio_buf out;                        /* bytes waiting for earlier responses to finish */
  unsigned finished : 1, close : 1, drain : 1, head_only : 1, http10 : 1, chunked : 1, started : 1;
} slot;

typedef struct { conn *c; } conn_box;
typedef struct { srv *s; } srv_box;

struct conn {
  uv_tcp_t tcp;                    /* first member: the handle's memory is the conn's */
  llhttp_t parser;
  srv *s;
  conn *prev, *next;
  conn_box *box; int box_ref;
  aio_buf url, hdrs, body;            /* the request being parsed; hdrs = "name\0value\0"... */
  size_t head_bytes;               /* the head so far, with per-line overhead (max_header) */
  size_t name_at, value_at;        /* where the header name / value being parsed starts in hdrs */
  size_t trailers_at;              /* where chunked trailer fields start in hdrs (SIZE_MAX: none) */
  int err_status;                  /* 431/413 found by a callback, else 0 (→ 400) */
  slot *shead, *stail; int nslots;
  size_t buffered;                 /* bytes in the buffers of the slots after the head (conn_pace) */
  uint32_t next_seq;
  uint64_t deadline;               /* ms (uv_now); 0 = none */
  int writes;                      /* uv_write requests in flight */
  uint32_t stalled;                /* sweeps with queued output that did not move (see on_sweep) */
  aio_future *drained; int drained_ref; /* resolved for writers waiting on output (see conn_pace) */
  unsigned in_msg : 1, input_dead : 1, close_after : 1, closing : 1, shutting : 1, close_when_idle : 1;
  unsigned reading : 1;            /* uv_read_start is in effect */
  unsigned version_seen : 1;       /* the request line's version has begun (on_version) */
  unsigned want_continue : 1;      /* a 100 Continue is owed once earlier answers are out */
  unsigned hosts : 2;              /* Host fields seen in the head (2: two or more) */
  unsigned in_expect : 1;          /* the field being parsed is Expect */
  unsigned expect_100 : 1;         /* the head asked for "Expect: 100-continue" */
  unsigned progressed : 1;         /* a queued write finished since the last sweep */
};

struct srv {
  aio_loop *loop;
  uv_tcp_t *listener;              /* malloc'd; NULL once closed */
  uv_timer_t *sweep;
  int handler_ref, self_ref;
  int keys_ref, req_mt_ref;        /* request_keys as Lua strings; the facade's request metatable */
  conn *conns; int nconns;
  size_t max_body, max_header;
  int max_pipeline;                /* requests in flight per connection (the last says close) */
  uint64_t header_timeout, idle_timeout; /* ms */
  uint64_t tick;                   /* ms between sweeps */
  size_t high_water, low_water;    /* unsent output per connection: stop / resume (write_buffer) */
  int closing;
  int building;                    /* l_listen has not finished it: the box's __gc discards it */
  int dropped;                     /* collected with its state: closes without touching Lua */
  aio_future *closed_fut; int closed_ref;
  int port;
  srv_box *box;                    /* the Lua object, cleared when the server is freed */
  char readbuf[65536];             /* shared: reads are consumed synchronously in read_cb */
};

/* ---- http_server.c: the Lua side, the server's life cycle ---- */

/* When closing and every connection is gone: resolves the close future, frees the server. */
void aio_hs_srv_maybe_done(srv *s);

/* ---- http_server_conn.c: a connection, reading and parsing ---- */

/* Closes the socket now; frees nothing (on_conn_closed does), so a caller may go on with c. */
void aio_hs_conn_close(conn *c);
/* Closes the socket now without touching Lua (its server goes with the state); on_conn_closed
** frees c. */
void aio_hs_conn_drop(conn *c);
/* Ends the connection after the last response (drain: FIN first, then discard input a while). */
void aio_hs_conn_finish(conn *c, int drain);
/* Nothing in flight any more: arms the idle deadline, or closes if the server is closing. */
void aio_hs_conn_idle(conn *c);
/* The read callbacks (a connection's reads land in the server's one buffer). */
void aio_hs_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
void aio_hs_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);
/* The listener's callback: a client connected. */
void aio_hs_on_connection(uv_stream_t *ls, int status);
/* The sweep timer's callback: closes connections past their deadline or stalled. */
void aio_hs_on_sweep(uv_timer_t *t);

/* ---- http_server_request.c: the request table ---- */

/* The names of the request fields C sets, in the order of the server's key table (keys_ref). */
enum { RK_METHOD = 1, RK_CONN, RK_TARGET, RK_PATH, RK_RAW_QUERY, RK_VERSION, RK_BODY, RK_HEADERS, RK_TRAILERS };
/* Pushes the server's key table (keys_ref). */
void aio_hs_push_request_keys(lua_State *L);
/* Pushes the request table of the request c just parsed, with the facade's metatable. */
void aio_hs_push_request(lua_State *L, srv *s, conn *c, llhttp_t *p);
/* server_c.unescape, server_c.decode_query, server_c.headers (see their definitions). */
int aio_hs_l_unescape(lua_State *L);
int aio_hs_l_decode_query(lua_State *L);
int aio_hs_l_headers(lua_State *L);

/* ---- http_server_write.c: the answers ---- */

/* Adds a slot for the next response; NULL when out of memory. */
slot *aio_hs_slot_new(conn *c);
/* The slot of request seq on c, or NULL. */
slot *aio_hs_slot_find(conn *c, uint32_t seq);
/* Lets go of a slot's handler task (if any), cancelling it first when cancel is set. */
void aio_hs_slot_release(lua_State *L, slot *p, int cancel);
/* Frees all of c's slots (L NULL: their tasks are not touched). */
void aio_hs_conn_drop_slots(lua_State *L, conn *c, int cancel);
/* Emits bytes for slot p: to the socket if p is the head, else into p's buffer. */
void aio_hs_slot_emit(conn *c, slot *p, const char *d, size_t n);
/* Sends the head of slot p's answer (status, headers from the table at hidx) with the first body
** bytes d[0..n), n being the Content-Length unless streamed. */
void aio_hs_slot_answer(lua_State *L, conn *c, slot *p, int status, int hidx, const char *d,
                        size_t n, int streamed);
/* Sends d[0..n) as body bytes of slot p, whose head is out. */
void aio_hs_slot_write(conn *c, slot *p, const char *d, size_t n);
/* Pops finished head slots, sending what later slots had buffered; closes after a close slot. */
void aio_hs_conn_flush_slots(conn *c);
/* Sends the interim answer a client that sent "Expect: 100-continue" waits for. */
void aio_hs_conn_send_continue(conn *c);
/* Wakes the writers waiting in conn:drain. */
void aio_hs_conn_wake_writers(conn *c);
/* Counts this thread's servers (+1 made, -1 freed); the last one frees the scratch buffer the
** answers' heads are formatted in (a worker thread's would be lost when the thread ends). */
void aio_hs_count_server(int delta);
/* Pushes the future a writer of slot p must await and returns 1, or returns 0 (no need). */
int aio_hs_push_drain(lua_State *L, conn *c, slot *p);
/* The reason phrase of a status code ("" for one without). */
const char *aio_hs_reason(int status);
/* The Date header value, formatted once per second. */
const char *aio_hs_http_date(void);
/* Checks the response header at kidx (name) and vidx (value); pushes and returns the value. */
const char *aio_hs_check_header(lua_State *L, int kidx, int vidx, size_t *kl, size_t *vl);
/* server_c.check_header(name, value) -> value as a string. */
int aio_hs_l_check_header(lua_State *L);

#endif

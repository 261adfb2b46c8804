/*
** process_internal.h — what the files of aio.process_c share: process.c (identity, lineage,
** framing, outcomes, process.fork and the module), process_pool.c, process_pipe.c and
** process_queue.c. Private to them; the contract with other modules is process.h.
*/
#ifndef AIO_PROCESS_INTERNAL_H
#define AIO_PROCESS_INTERNAL_H

#include <stdint.h>
#include <sys/types.h>
#include "aio.h"
#include "codec.h"
#include "process.h"
#include "outcome.h"

/* ---- identity and lineage (process.c) ---- */

/* This process is now a child named `name` (its own children are numbered afresh). */
void aio_proc_become(const char *name);
/* fork(2) that records the lineage in the child and flushes stdio first; the child closes
** its copy of the stream set by aio_proc_set_parent_stream (this process's to its parent). */
pid_t aio_proc_fork(void);
void aio_proc_set_parent_stream(int fd);
/* Raises unless L runs on the loop's thread (fork only from there). */
void aio_proc_check_fork_thread(lua_State *L, const char *what);
/* The epoch of a new fd-backed object (pipe end, queue) made by this process. */
uint32_t aio_proc_next_epoch(void);
/* The epoch of the last fd-backed object made so far (a pool records it when made). */
uint32_t aio_proc_epoch(void);
/* In a new pool worker: drops what its parent made after `epoch` (closes the copies, and the
** lineage no longer admits them), so every worker of a pool takes the same descriptors. */
void aio_proc_inherit_upto(uint32_t epoch);
/* In a new pool worker: closes the descriptors of the parent's loop handles (servers,
** connections, HTTP requests) except pipe ends and queues, without touching the loop. */
void aio_proc_close_parent_handles(uv_loop_t *uv);

/* How a descriptor-backed object crosses the codec: fds, creator pid, epoch. */
typedef struct fdref { int32_t fd[2]; int32_t creator; uint32_t epoch; } fdref;
/* Codec pack side: appends the reference (fd1 is -1 for a one-descriptor object). */
void aio_proc_pack_fdref(aio_buf *b, int fd0, int fd1, pid_t creator, uint32_t epoch);
/* Codec unpack side: reads a reference and raises unless its descriptors exist in this process
** (made here, or before this process was forked from their creator). `kind` ("pipe") and
** `what` ("process.pipe end") word the errors. */
fdref aio_proc_unpack_fdref(lua_State *L, const char *p, size_t n, const char *kind,
                            const char *what);

/* ---- I/O and frames (process.c) ---- */

/* Blocking write of exactly n bytes to this process's stream to its parent (a child's outcome,
** a worker's answer; one writer at a time, so a thread's output frame never cuts into it):
** 1, or -1 on error (the parent is gone: no SIGPIPE). */
int aio_proc_write_parent(const void *p, size_t n);
/* A frame is a native-endian uint32 length and a message: begin reserves, end fills it in. */
size_t aio_frame_begin(aio_buf *b);
void aio_frame_end(aio_buf *b, size_t at);
/* From a child to its parent, a length of AIO_FRAME_STDOUT or AIO_FRAME_STDERR instead marks
** console output: a uint32 length and the text follow (aio_proc_console_route). */
#define AIO_FRAME_STDOUT 0xFFFFFFFEu
#define AIO_FRAME_STDERR 0xFFFFFFFDu
/* If the n bytes at p start with an output frame: prints its text through this process's
** console once it is complete and sets *used to its size (0 while incomplete); returns 1.
** Returns 0 for any other frame. */
int aio_proc_output_frame(const char *p, size_t n, size_t *used);
/* Writes the whole buffer b (taken over) to a stream without blocking; 0 or a libuv error. */
int aio_stream_send(uv_stream_t *s, aio_buf *b);
/* Runs L's loop until the sends queued by this process are written (a child before it exits, a
** pool worker between jobs); a pool worker first forgets the parent's (aio_proc_forget_sends). */
void aio_proc_flush_sends(lua_State *L);
void aio_proc_forget_sends(void);
/* libuv read buffers (up to 64 KB, freed by the read callbacks); a close callback that frees. */
void aio_proc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void aio_free_handle(uv_handle_t *h);
/* "exit status 3", "killed by signal 9 (Killed)"; Python's exitcode of a wait status. */
void aio_proc_describe_status(int status, char *out, size_t n);
int aio_proc_exitcode(int status);

/* ---- outcomes: `true, values...` or `false, err, traceback` (process.c) ---- */

/* Protected: decodes `fn, args...` from the aio_buf at 1 and calls it; results stay. */
int aio_outcome_call_p(lua_State *L);
/* Encodes the n values on top of the stack as a success (or the encoding error). */
void aio_outcome_encode_ok(lua_State *L, int n, aio_buf *out);
/* Encodes the error record {err, tb} at idx, falling back to its string form. */
void aio_outcome_encode_error(lua_State *L, int idx, aio_buf *out);
/* Runs the call encoded in `in` and writes its outcome to out. */
void aio_outcome_run(lua_State *L, aio_buf *in, aio_buf *out);
/* Settles f from an outcome message; `who` names the process in the traceback line. */
void aio_outcome_settle(lua_State *L, aio_future *f, const char *data, size_t len, const char *who);
/* Resolves f with the one value decoded from b (or rejects it with the decoding error); frees b. */
void aio_proc_resolve_msg(lua_State *L, aio_future *f, aio_buf *b);

/* ---- parked waiters of pipe ends and queues (process.c) ---- */

/* A loop-side waiter parked on a pipe end or a queue, in a singly linked FIFO. */
typedef struct proc_waiter {
  struct proc_waiter *next;
  aio_future *fut;
  int ref;
  aio_buf msg;           /* a queue put's message, waiting for room */
} proc_waiter;

/* Makes a waiter whose future (pushed) calls on_cancel(L, f, ud) and appends it to the list
** (*head, *tail); NULL (nothing pushed or held) when out of memory. */
proc_waiter *aio_proc_park(lua_State *L, proc_waiter **head, proc_waiter **tail,
                           void (*on_cancel)(lua_State *L, aio_future *f, void *ud), void *ud);
/* Unlinks the waiter whose future is f from the list (*head, *tail); NULL if it is not there. */
proc_waiter *aio_proc_unlink(proc_waiter **head, proc_waiter **tail, aio_future *f);
/* Frees a waiter that is no longer linked (and a put's message it still has). */
void aio_proc_waiter_free(lua_State *L, proc_waiter *w);

/* ---- the other parts of the module: each adds its functions to the table on top ---- */

void aio_process_pool_open(lua_State *L);   /* process_pool.c: pool, pool_methods */
void aio_process_pipe_open(lua_State *L);   /* process_pipe.c: pipe */
void aio_process_queue_open(lua_State *L);  /* process_queue.c: queue */
/* Close this process's copies of the pipe ends / queues `creator` made after `epoch`. */
void aio_process_pipe_close_after(pid_t creator, uint32_t epoch);
void aio_process_queue_close_after(pid_t creator, uint32_t epoch);
/* 1 if fd is an open pipe end / queue descriptor of this process. */
int aio_process_pipe_has_fd(int fd);
int aio_process_queue_has_fd(int fd);

#endif

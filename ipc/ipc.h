/*
 * ipc.h: the one inter-process protocol of Lodestar.
 *
 * Every byte between two Lodestar processes travels in frames over a Unix
 * stream socket: a fixed 20-byte header, then one packed protobuf-c
 * Envelope (proto/ipc.proto). Header fields, all big-endian:
 *
 *   offset size field
 *   0      2    magic       0x4C44 ("LD")
 *   2      1    version     IPC_VERSION
 *   3      1    kind        1 request, 2 response, 3 push
 *   4      2    type        the Envelope's body case number
 *   6      2    reserved    0
 *   8      4    length      Envelope bytes that follow
 *   12     8    request id  non-zero on requests, echoed on responses, 0 on pushes
 *
 * A frame whose magic, version, kind or reserved field is wrong, or whose
 * length exceeds the connection's maximum, or whose Envelope does not decode,
 * closes that connection (only that one) with a logged reason.
 *
 * Requests carry a non-zero request id chosen by the sender; the response
 * repeats it. Pushes carry id 0. Everything is non-blocking on libevent.
 */
#ifndef LODESTAR_IPC_H
#define LODESTAR_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ipc.pb-c.h"

struct event_base;

#define IPC_MAGIC 0x4C44u
#define IPC_VERSION 1u
#define IPC_HEADER_SIZE 20u
#define IPC_DEFAULT_MAX_FRAME (16u * 1024u * 1024u)

enum ipc_kind {
    IPC_KIND_REQUEST = 1,
    IPC_KIND_RESPONSE = 2,
    IPC_KIND_PUSH = 3,
};

typedef struct ipc_header {
    uint8_t version;
    uint8_t kind;
    uint16_t type;   /* Envelope body case */
    uint32_t length; /* payload bytes */
    uint64_t request_id;
} ipc_header_t;

/* ---------------------------------------------------------------- frames */

/* Write the 20-byte header. */
void ipc_header_encode(const ipc_header_t *h, uint8_t out[IPC_HEADER_SIZE]);

/* Validate and decode a header. Returns 0, or -1 with a reason in err
 * (bad magic 0x..., unsupported version N, unknown kind N, reserved field is
 * 0x..., not 0, frame of N bytes exceeds the maximum of M). A max_frame of 0
 * means IPC_DEFAULT_MAX_FRAME (likewise for every max_frame below). */
int ipc_header_decode(const uint8_t in[IPC_HEADER_SIZE], uint32_t max_frame, ipc_header_t *h,
                      char *err, size_t errlen);

/* Encode header + packed envelope into one malloc'd buffer (*out, *outlen).
 * Returns 0, or -1 when the packed envelope exceeds max_frame, the kind is
 * not one of enum ipc_kind, or memory runs out. */
int ipc_frame_encode(uint8_t kind, uint64_t request_id, const Lodestar__Envelope *env,
                     uint32_t max_frame, uint8_t **out, size_t *outlen);

/* Name of an envelope body case, for logs ("ping_request", "hello", ...). */
const char *ipc_type_name(uint32_t type);

/* ------------------------------------------------------------ connection */

/* One framed connection on a connected Unix stream socket (takes the fd).
 * The first connection made sets SIGPIPE to ignored if its disposition is
 * still the default, so a write to a vanished peer is an error, not death. */
typedef struct ipc_conn ipc_conn_t;

/* A whole frame arrived. `env` is owned by the callee's caller: it is freed
 * after the callback returns (copy what you keep). */
typedef void (*ipc_frame_cb)(ipc_conn_t *c, const ipc_header_t *h, Lodestar__Envelope *env, void *arg);
/* The connection closed: peer EOF, I/O error, or a protocol violation.
 * `reason` says which. The connection is freed right after the callback. */
typedef void (*ipc_close_cb)(ipc_conn_t *c, const char *reason, void *arg);

/* `name` labels the peer in logs ("naming worker", "supervisor channel").
 * Returns NULL when out of resources; the fd is closed then too. */
ipc_conn_t *ipc_conn_new(struct event_base *base, int fd, const char *name, uint32_t max_frame,
                         ipc_frame_cb on_frame, ipc_close_cb on_close, void *arg);
/* Decode this connection's frames into the process's frame arena (see
 * conn.c): cheaper for large frames, but nothing of a frame may be kept or
 * detached past its callback, not even by taking ownership of a part.
 * Client connections use it; servers (whose handlers may keep requests)
 * do not. Event-loop thread only. */
void ipc_conn_use_frame_arena(ipc_conn_t *c);
/* Inside a frame callback of such a connection: an allocator for decoding
 * nested messages (e.g. an Event's data) that lives as long as the frame;
 * free_unpacked with it costs nothing. NULL elsewhere (use malloc then). */
ProtobufCAllocator *ipc_frame_allocator(void);
/* Queue a frame. Returns 0, or -1 (connection closing, frame too large). */
int ipc_conn_send(ipc_conn_t *c, uint8_t kind, uint64_t request_id, const Lodestar__Envelope *env);
/* Bytes queued but not yet written (for back-pressure). */
size_t ipc_conn_pending(const ipc_conn_t *c);
const char *ipc_conn_name(const ipc_conn_t *c);
void ipc_conn_set_user(ipc_conn_t *c, void *user);
void *ipc_conn_user(const ipc_conn_t *c);
/* Close now; the close callback is NOT called. */
void ipc_conn_free(ipc_conn_t *c);
/* Close after queued output is flushed (or after 1 s); close cb not called. */
void ipc_conn_close_after_flush(ipc_conn_t *c);
/* Called exactly once when the connection is really released, whichever way
 * it closed (close callback, ipc_conn_free, close after flush), before its
 * memory goes; sends fail by then. NULL removes the hook. The server uses
 * it to forget connections its request handlers freed themselves. */
typedef void (*ipc_conn_free_cb)(ipc_conn_t *c, void *arg);
void ipc_conn_set_free_hook(ipc_conn_t *c, ipc_conn_free_cb hook, void *arg);

/* ---------------------------------------------------------------- server */

/* Accepts on a listening Unix socket (typically inherited from the
 * supervisor, which owns it so that restarts never refuse a connect). */
typedef struct ipc_server ipc_server_t;

/* A request arrived. Answer now or later with ipc_server_reply(conn, id, env)
 * (conn stays valid until its close; check with the close hook if deferring).
 * Subscribe requests are handled by the server itself and never reach here. */
typedef void (*ipc_request_cb)(ipc_server_t *s, ipc_conn_t *conn, uint64_t request_id,
                               Lodestar__Envelope *req, void *arg);
/* Optional: a peer connected / went away (to drop deferred work for it). */
typedef void (*ipc_peer_cb)(ipc_server_t *s, ipc_conn_t *conn, bool connected, void *arg);

ipc_server_t *ipc_server_new(struct event_base *base, int listen_fd, const char *name, uint32_t max_frame,
                             ipc_request_cb on_request, ipc_peer_cb on_peer, void *arg);
int ipc_server_reply(ipc_conn_t *conn, uint64_t request_id, const Lodestar__Envelope *env);
/* Reply with an Error body (code, printf-style message). */
int ipc_server_reply_error(ipc_conn_t *conn, uint64_t request_id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Push an envelope to every connection subscribed to `topic`. Returns the
 * number of connections it was queued on. */
int ipc_server_publish(ipc_server_t *s, const char *topic, const Lodestar__Envelope *env);
size_t ipc_server_conn_count(const ipc_server_t *s);
/* Stop accepting (the listening fd is left open for its owner). */
void ipc_server_stop_accepting(ipc_server_t *s);
/* Close every connection (on_peer(false) is called for each) and free the
 * server. Does not close listen_fd. */
void ipc_server_free(ipc_server_t *s);

/* ---------------------------------------------------------------- client */

/* Connects to a Unix socket path, reconnects with exponential backoff
 * (50 ms doubling to 2 s) whenever the connection drops, re-sends its
 * subscriptions after every reconnect, and matches responses to requests. */
typedef struct ipc_client ipc_client_t;

/* status: 0 = reply in `reply` (which may hold an Error body);
 *        -ETIMEDOUT = no answer in time; -ECONNRESET = connection lost while
 *        waiting; -ENOTCONN = not connected when sent. `reply` is NULL unless
 *        status is 0 and is freed after the callback returns. */
typedef void (*ipc_reply_cb)(int status, Lodestar__Envelope *reply, void *arg);
typedef void (*ipc_push_cb)(ipc_client_t *cl, Lodestar__Envelope *push, void *arg);
/* Connection state changed (true: connected and subscriptions re-sent). */
typedef void (*ipc_state_cb)(ipc_client_t *cl, bool connected, void *arg);

/* The first connect is tried at once (requests may be sent right away);
 * its on_state(true) still comes from the loop, never from inside here. */
ipc_client_t *ipc_client_new(struct event_base *base, const char *path, const char *name, uint32_t max_frame,
                             ipc_push_cb on_push, ipc_state_cb on_state, void *arg);
/* Send a request; exactly one call of cb follows (never synchronously from
 * inside this call). timeout_ms <= 0 waits without a time limit (until the
 * reply or the loss of the connection). Returns 0, or -1 if it could not even
 * be queued (then cb is not called). */
int ipc_client_request(ipc_client_t *cl, const Lodestar__Envelope *req, int timeout_ms, ipc_reply_cb cb,
                       void *arg);
/* Subscribe to a topic now and after every reconnect. */
int ipc_client_subscribe(ipc_client_t *cl, const char *topic);
bool ipc_client_connected(const ipc_client_t *cl);
/* Fail every pending request with -ECONNRESET (callbacks run; a request
 * refused while disconnected keeps its -ENOTCONN), then free. Callable from
 * inside any of the client's callbacks. */
void ipc_client_free(ipc_client_t *cl);

/* ------------------------------------------------------------- utilities */

/* Create a listening Unix stream socket at path (unlinking a stale one),
 * mode 0660, non-blocking, close-on-exec. Returns fd or -errno:
 * -ENAMETOOLONG (path does not fit sun_path), -EADDRINUSE (something still
 * accepts at path), -EEXIST (path exists and is not a socket), ... */
int ipc_listen_unix(const char *path, int backlog);
/* Connect (non-blocking) to a Unix socket path. Returns fd or -errno;
 * -EINPROGRESS is not returned for Unix sockets in practice but handled. */
int ipc_connect_unix(const char *path);

#endif

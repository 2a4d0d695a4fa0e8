/*
 * grpc_server.h: Lodestar's one wrapper around gRPC core.
 *
 * Every grpc_* call a gateway makes goes through this module, so a gRPC
 * upgrade touches grpc_server.c only. Rules it keeps:
 *
 *  - gRPC core is initialised here (gs_server_new) and shut down here
 *    (when the server is torn down), only in the gateway process that
 *    serves gRPC, never before a fork.
 *  - One grpc_server and one completion queue per gs_server_t. A private
 *    thread waits on the completion queue and hands every completion to the
 *    libevent thread through a mutex-protected list and an eventfd; every
 *    call state machine and every handler runs on the libevent thread, so
 *    handlers never need locks and may use IPC clients directly. The one
 *    exception is a streaming method registered with on_cq_thread (see
 *    gs_stream_handlers_t): its calls are handed to the completion-queue
 *    thread once and live there, without a thread hop per message.
 *  - Listening sockets belong to the caller (the supervisor, in a gateway):
 *    the server accepts on them with libevent and hands each connected
 *    socket to gRPC core. The listening fds are never closed here.
 *  - Methods are registered by full path ("/grpc.health.v1.Health/Check")
 *    before gs_server_start. A call to any other path is answered
 *    UNIMPLEMENTED.
 *
 * Calls. A handler receives a gs_call_t and answers it exactly once with
 * gs_reply() (or gs_reply_msg()), at once or later from another callback.
 * The call object stays valid until that reply, even when the client
 * cancelled or the deadline passed meanwhile (the reply is then dropped).
 * A unary call a handler holds has nothing outstanding in gRPC core (its
 * close goes with the reply), so a client's cancel is learnt only when the
 * reply goes out, or at the drain bound.
 *
 * Streams (client, server or bidirectional streaming methods; they look the
 * same from here). A streaming method has handlers instead of one unary
 * function: on_open when the call arrives, on_message per message the
 * client sends (the next one is read only after it returned), on_half_close
 * when the client sent its last message, and on_done exactly once when the
 * call is over on the wire (finished by us, cancelled by the client, past
 * its deadline, or cancelled by the drain) and nothing of ours is still
 * outstanding; the call object is freed right after on_done returns, so
 * handlers must drop every reference to it there. Messages go out with
 * gs_stream_send (copied, queued, sent in order, one SEND at a time) and the
 * call ends with gs_stream_finish (the status follows the queued messages).
 * At most one operation of each kind is outstanding on a call; a stream
 * whose client does not read its answers stops being read once 64 answers
 * wait (GS_STREAM_MAX_QUEUED in grpc_server.c), and handlers may pause
 * reading too
 * (gs_stream_pause / gs_stream_resume).
 *
 * Drain. gs_server_drain() stops accepting connections, asks gRPC core for
 * a graceful shutdown (GOAWAY; running calls continue), cancels every call
 * still running when the bound expires (open streams included: their
 * on_done runs with cancelled true), then tears the server down
 * (grpc_server_destroy, completion queue shutdown, grpc_shutdown) and calls
 * the done callback.
 */
#ifndef LODESTAR_GRPC_SERVER_H
#define LODESTAR_GRPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

/* gRPC status codes; the numbers are the wire protocol's. */
enum gs_status {
    GS_OK = 0,
    GS_CANCELLED = 1,
    GS_UNKNOWN = 2,
    GS_INVALID_ARGUMENT = 3,
    GS_DEADLINE_EXCEEDED = 4,
    GS_NOT_FOUND = 5,
    GS_ALREADY_EXISTS = 6,
    GS_PERMISSION_DENIED = 7,
    GS_RESOURCE_EXHAUSTED = 8,
    GS_FAILED_PRECONDITION = 9,
    GS_ABORTED = 10,
    GS_OUT_OF_RANGE = 11,
    GS_UNIMPLEMENTED = 12,
    GS_INTERNAL = 13,
    GS_UNAVAILABLE = 14,
    GS_DATA_LOSS = 15,
    GS_UNAUTHENTICATED = 16,
};

typedef struct gs_server gs_server_t;
typedef struct gs_call gs_call_t;

/* A unary request arrived. `req` (len bytes, the serialized message) is
 * valid only during this callback. Answer with gs_reply(call, ...) now or
 * later, exactly once. */
typedef void (*gs_unary_fn)(gs_call_t *call, const uint8_t *req, size_t len, void *arg);

/* Streaming method handlers; on_message is required, the rest optional.
 *  on_open(call)            the call arrived; may already send or finish.
 *  on_message(call, m, n)   one message from the client, valid only during
 *                           the callback.
 *  on_half_close(call)      the client will send nothing more; without this
 *                           handler the call is finished with OK (after the
 *                           queued messages). A client's cancel also ends
 *                           its messages, so this may run just before an
 *                           on_done that says cancelled.
 *  on_done(call, cancelled) the call is over; cancelled is false only when
 *                           our gs_stream_finish status went out. The call
 *                           is freed when it returns.
 *
 * on_cq_thread: every handler of the method runs on the completion-queue
 * thread, holding the server's handler lock, and the call's gs_* functions
 * may be used only from inside those handlers. For request/answer streams
 * served from thread-safe state (Discover from the naming replica): each
 * message is read, handled and answered on the thread that did the I/O.
 * Handlers must not use IPC clients or anything else of the event loop's
 * unless the event loop changes it only under gs_server_lock_handlers().
 * gs_server_drain ends such streams at once with UNAVAILABLE "server
 * draining, reconnect". */
typedef struct gs_stream_handlers {
    void (*on_open)(gs_call_t *call, void *arg);
    void (*on_message)(gs_call_t *call, const uint8_t *msg, size_t len, void *arg);
    void (*on_half_close)(gs_call_t *call, void *arg);
    void (*on_done)(gs_call_t *call, bool cancelled, void *arg);
    bool on_cq_thread;
} gs_stream_handlers_t;

/* The drain finished; the server is torn down (gs_server_free still needed).
 * `clean` is false when calls had to be cancelled at the bound. */
typedef void (*gs_drained_fn)(gs_server_t *s, bool clean, void *arg);

typedef struct gs_options {
    const char *name;           /* label in logs, e.g. "polaris-grpc" */
    uint32_t max_message_bytes; /* largest message received or sent; 0 = 4 MiB */
} gs_options_t;

/* Initialise gRPC core and create an unstarted server on `base`.
 * Returns NULL with a reason in err on failure. */
gs_server_t *gs_server_new(struct event_base *base, const gs_options_t *opt, char *err, size_t errlen);

/* Register a unary method by full path ("/package.Service/Method").
 * Only before gs_server_start. 0, or -EINVAL (bad path, duplicate, started). */
int gs_server_add_unary(gs_server_t *s, const char *method, gs_unary_fn fn, void *arg, char *err,
                        size_t errlen);

/* Register a streaming method (handlers are copied). Same rules and
 * errors as gs_server_add_unary. */
int gs_server_add_stream(gs_server_t *s, const char *method, const gs_stream_handlers_t *h, void *arg, char *err,
                         size_t errlen);

/* Serve connections accepted on a listening socket the caller owns (it is
 * made non-blocking, never closed here). `name` labels it in logs. Only
 * before gs_server_start. 0, or negative errno with a reason in err. */
int gs_server_add_listener(gs_server_t *s, int listen_fd, const char *name, char *err, size_t errlen);

/* Start gRPC core, its completion-queue thread, and accepting.
 * 0, or negative errno with a reason in err. */
int gs_server_start(gs_server_t *s, char *err, size_t errlen);

/* Graceful stop, see the file comment. `timeout_ms` bounds how long running
 * calls may take before they are cancelled. `done` runs once, from the event
 * loop (never inside this call). Calling it again has no effect. */
void gs_server_drain(gs_server_t *s, int timeout_ms, gs_drained_fn done, void *arg);

/* True once the drain completed (or the server was never started). */
bool gs_server_stopped(const gs_server_t *s);

/* Calls accepted and not yet finished (including ones awaiting a reply). */
size_t gs_server_active_calls(const gs_server_t *s);

/* Event-loop code that changes what on_cq_thread handlers read holds this
 * lock while it does; no such handler runs meanwhile. Not reentrant; never
 * call it from inside such a handler. */
void gs_server_lock_handlers(gs_server_t *s);
void gs_server_unlock_handlers(gs_server_t *s);

/* Free the server. If it is still running it is shut down at once (calls
 * cancelled, bounded wait for gRPC core). Calls whose handlers have not
 * replied yet stay valid until their gs_reply, which then only frees them. */
void gs_server_free(gs_server_t *s);

/* Answer a unary call: status GS_OK with the serialized response (len may
 * be 0), or an error status with optional details (resp is then ignored).
 * Returns 0 (also when the client turns out to have gone: the reply is then
 * dropped); -ECANCELED when the call is known to be over (the drain bound
 * ended it; the reply is dropped, the call is freed all the same);
 * -EALREADY on a second reply (the call is not touched); -EINVAL on a
 * streaming call; -EIO when gRPC core refused the batch. */
int gs_reply(gs_call_t *call, int status, const char *details, const uint8_t *resp, size_t len);

/* A serialized response shared by many unary replies (the same answer to
 * every watcher a change wakes): copied once here, then each gs_reply_msg
 * takes a reference to it, never a copy. Free it whenever convenient:
 * replies still in flight keep their reference. */
typedef struct gs_msg gs_msg_t;
gs_msg_t *gs_msg_new(const uint8_t *msg, size_t len); /* NULL when out of memory */
void gs_msg_free(gs_msg_t *m);
/* gs_reply(call, GS_OK, NULL, <m's bytes>) without copying them; same
 * returns, and -EINVAL when m is NULL. */
int gs_reply_msg(gs_call_t *call, const gs_msg_t *m);

/* Streams: queue one message (copied). 0; -EALREADY after gs_stream_finish;
 * -ECANCELED when the call is over (the message is dropped); -EINVAL on a
 * unary call; -ENOMEM; -EIO when gRPC core refused the batch. */
int gs_stream_send(gs_call_t *call, const uint8_t *msg, size_t len);
/* Streams: end the call with status (details only for errors) once the
 * queued messages went out. 0, -EALREADY on a second finish, -ECANCELED,
 * -EINVAL, -EIO as above. */
int gs_stream_finish(gs_call_t *call, int status, const char *details);
/* Streams: stop / restart reading the client's messages. */
void gs_stream_pause(gs_call_t *call);
void gs_stream_resume(gs_call_t *call);
/* Streams: messages queued or in flight towards the client. */
size_t gs_stream_queued(const gs_call_t *call);
/* Streams: the client half-closed. */
bool gs_stream_half_closed(const gs_call_t *call);
/* A pointer the handler keeps with the call (streams: per-stream state). */
void gs_call_set_user(gs_call_t *call, void *user);
void *gs_call_user(const gs_call_t *call);

/* Full method path of the call. */
const char *gs_call_method(const gs_call_t *call);
/* True when the call is known to be over before our reply went out: the
 * client cancelled or its deadline passed (a stream learns it at once, a
 * unary call only when its reply goes out), or the server shut down. */
bool gs_call_cancelled(const gs_call_t *call);
/* Milliseconds until the client's deadline (0 when already passed), or -1
 * when the client set none. */
int64_t gs_call_remaining_ms(const gs_call_t *call);
/* The client's address in gRPC core's notation ("ipv4:127.0.0.1:5555",
 * "ipv6:[::1]:5555"), copied into buf; "unknown" once the call is over.
 * gRPC core only knows connections handed over by fd as "fd:N", so the
 * address is taken from what accept() reported for that fd. */
void gs_call_peer(const gs_call_t *call, char *buf, size_t buflen);

/* Human-readable name of a status code ("UNIMPLEMENTED"). */
const char *gs_status_name(int status);

#endif

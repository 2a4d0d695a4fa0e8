/*
 * grpc_server.c: see grpc_server.h. The only file of the gateways that
 * calls gRPC core.
 *
 * Threads. gRPC core runs its own pollers; our completion-queue thread
 * (cq_thread) only moves completions from grpc_completion_queue_next onto
 * a handoff list and pokes an eventfd. Everything else, every batch start,
 * every call object and every handler, runs on the libevent thread.
 *
 * Tags. Each call owns one tag per kind of batch (request, receive, send,
 * close), and a kind of batch is never outstanding twice on one call, so a
 * tag can sit on the handoff list by itself: the list links the tags
 * directly and the completion-queue thread never allocates.
 *
 * Call lifetime. A call object holds gRPC core's grpc_call while any batch
 * is outstanding or until RECV_CLOSE_ON_SERVER completed (the call is over
 * on the wire, by final status or cancellation). The object itself lives on
 * while a handler owes its unary reply, so a deferred gs_reply always finds
 * it. A streaming call ends when gRPC core's call is released: its on_done
 * runs then, once, and the object goes with it.
 *
 * Streams. One RECV_MESSAGE at a time (the next after on_message returned,
 * unless paused or too many answers are queued), one SEND batch at a time
 * fed from the call's queue, the final status after the last queued
 * message: the same queue and pump as a unary reply.
 *
 * Memory per call (config watchers hold 100,000): the request's metadata
 * and details are freed as soon as the call arrived, and the server sets no
 * deadline timer per call (GRPC_ARG_ENABLE_DEADLINE_CHECKS off: clients
 * cancel at their deadline).
 */
#include "grpc_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "log.h"

#define GS_PENDING_REQUESTS 8            /* request_call kept outstanding */
/* request_registered_call kept outstanding per unary method: calls beyond
 * wait in gRPC core until one is re-armed, and every tag outstanding on the
 * queue costs each completion a little (Debian's gRPC tracks them). */
#define GS_PENDING_PER_UNARY 4
#define GS_DEFAULT_MAX_MESSAGE (4u * 1024u * 1024u)
#define GS_FREE_WAIT_MS 5000             /* gs_server_free's bound on gRPC core */
#define GS_ACCEPT_PAUSE_MS 500           /* after accept() failed (EMFILE...) */
#define GS_PEER_LEN 72                   /* "ipv6:[<46>]:65535" */
#define GS_STREAM_MAX_QUEUED 64          /* a stream stops reading beyond this many unsent answers */

enum tag_kind { TAG_REQUEST, TAG_ADOPT, TAG_RECV, TAG_SEND, TAG_SENDRECV, TAG_CLOSE, TAG_SHUTDOWN };

typedef struct gs_tag {
    enum tag_kind kind;
    int success;
    void *owner;
    struct gs_tag *next; /* handoff list */
} gs_tag_t;

typedef struct gs_method {
    char *path;
    void *handle;           /* unary methods: gRPC core's registered method (payload read with the call) */
    gs_unary_fn unary;      /* NULL for a streaming method */
    gs_stream_handlers_t h; /* streaming methods */
    void *arg;
} gs_method_t;

typedef struct gs_outmsg {
    grpc_byte_buffer *bb;
    struct gs_outmsg *next;
} gs_outmsg_t;

struct gs_call {
    gs_server_t *srv; /* NULL once the server was freed */
    grpc_call *gc;    /* NULL once released */
    grpc_call_details details;  /* until the call arrived */
    grpc_metadata_array req_md; /* until the call arrived */
    bool have_details;
    gpr_timespec deadline;
    char *method;
    const gs_method_t *m;

    gs_tag_t t_req, t_adopt, t_recv, t_send, t_sendrecv, t_close;
    bool on_cq;           /* handled on the completion-queue thread (see gs_stream_handlers_t) */
    bool registered;      /* unary, through its registered method: the request came with the call, and
                           * its end is tracked by the reply batch (RECV_CLOSE_ON_SERVER goes with it) */
    bool close_in_send;   /* the send batch in flight carries RECV_CLOSE_ON_SERVER */
    bool defer_pump;      /* on_cq stream inside on_message: the answer goes out with the next read */
    bool in_handler;      /* unary handler running: a reply given now is sent when it returns */
    int ops;              /* batches outstanding */
    bool closed;          /* RECV_CLOSE_ON_SERVER completed, or could not start */
    int cancelled;        /* written by gRPC core with RECV_CLOSE_ON_SERVER */
    bool awaiting_reply;  /* a handler owes gs_reply */
    bool replied;
    bool md_sent;
    bool send_inflight;
    bool finish_queued;
    bool finish_sent;
    grpc_status_code status;
    grpc_slice status_details;
    bool have_status_details;
    grpc_byte_buffer *recv_bb;
    grpc_byte_buffer *send_bb;
    gs_outmsg_t *outq, *outq_tail;
    size_t outq_len;      /* messages queued, not yet handed to gRPC core */
    struct gs_call *prev, *next; /* server's list of live calls */

    /* streaming calls */
    bool stream;
    gs_stream_handlers_t h; /* copied: the call may outlive the server */
    void *harg;
    void *user;
    bool recv_inflight;
    bool recv_paused;     /* by the handler (gs_stream_pause) */
    bool half_closed;     /* the client sent its last message */
    bool done_called;
};

typedef struct gs_listener {
    gs_server_t *srv;
    struct evconnlistener *lev;
    struct event *resume;
    char *name;
    int fd;
} gs_listener_t;

enum gs_state { GS_ST_NEW, GS_ST_RUNNING, GS_ST_DRAINING, GS_ST_STOPPED };

struct gs_server {
    struct event_base *base;
    char name[64];
    enum gs_state state;

    grpc_server *srv;
    grpc_completion_queue *cq;
    grpc_server_credentials *creds;
    bool grpc_inited;
    bool thread_started;
    pthread_t thread;

    pthread_mutex_t mu; /* guards q_head / q_tail */
    /* Held by the completion-queue thread while it runs a call handled
     * there, and by event-loop code that changes what those handlers read
     * (gs_server_lock_handlers). */
    pthread_mutex_t handler_mu;
    /* Guards calls / n_calls, every call's gc while it is released, and
     * peers: the two threads both add, remove and look up there. */
    pthread_mutex_t calls_mu;
    gs_tag_t *q_head, *q_tail;
    int efd;
    struct event *ev_wake;

    gs_method_t *methods;
    size_t n_methods;
    gs_listener_t **listeners;
    size_t n_listeners;

    gs_tag_t t_shutdown;
    bool shutdown_called;
    bool shutdown_done;
    bool cancelled_all;
    int pending_requests;
    int drain_timeout_ms;
    struct event *ev_drain_timer;
    struct event *ev_teardown;
    gs_drained_fn drained;
    void *drained_arg;

    gs_call_t *calls;
    size_t n_calls;

    /* Client address per accepted fd. gRPC core names a connection made
     * with grpc_server_add_channel_from_fd "fd:N"; this table turns that
     * back into the address accept() reported. */
    char (*peers)[GS_PEER_LEN];
    size_t n_peers;
};

static void call_maybe_release(gs_call_t *c);
static int call_pump(gs_call_t *c);

/* ------------------------------------------------------------ logging */

/* gRPC core's own log lines go to our log, tagged. Called on any thread. */
static void grpc_log_bridge(gpr_log_func_args *a)
{
    int lvl = a->severity == GPR_LOG_SEVERITY_ERROR  ? LOG_LVL_WARN
              : a->severity == GPR_LOG_SEVERITY_INFO ? LOG_LVL_INFO
                                                     : LOG_LVL_DEBUG;
    log_write(lvl, "grpc core: %s (%s:%d)", a->message, a->file, a->line);
}

const char *gs_status_name(int status)
{
    static const char *const names[] = {
        "OK",           "CANCELLED",         "UNKNOWN",   "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
        "NOT_FOUND",    "ALREADY_EXISTS",    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION", "ABORTED",    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
        "UNAVAILABLE",  "DATA_LOSS",         "UNAUTHENTICATED",
    };
    if (status < 0 || (size_t)status >= sizeof names / sizeof names[0])
        return "?";
    return names[status];
}

/* ------------------------------------------------------ completion handoff */

static void dispatch(gs_server_t *s, gs_tag_t *t);
static void on_send_done(gs_call_t *c, bool success);

/* The completion-queue thread: waits on gRPC core, queues, wakes libevent. */
static void *cq_thread(void *p)
{
    gs_server_t *s = p;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        gs_tag_t *t = ev.tag;
        t->success = ev.success;
        t->next = NULL;
        if (t->kind != TAG_SHUTDOWN && t->kind != TAG_REQUEST && ((gs_call_t *)t->owner)->on_cq) {
            /* A call handled here: no handoff (see gs_stream_handlers_t). */
            pthread_mutex_lock(&s->handler_mu);
            dispatch(s, t);
            pthread_mutex_unlock(&s->handler_mu);
            continue;
        }
        if (t->kind == TAG_SEND && ((gs_call_t *)t->owner)->close_in_send) {
            /* The last batch of a replied unary call: all that is left is
             * releasing it, and the event loop no longer touches a call
             * once it was replied to (release_parked skips it). */
            on_send_done(t->owner, t->success);
            continue;
        }
        pthread_mutex_lock(&s->mu);
        bool wake = s->q_head == NULL;
        if (s->q_tail)
            s->q_tail->next = t;
        else
            s->q_head = t;
        s->q_tail = t;
        pthread_mutex_unlock(&s->mu);
        if (wake) {
            uint64_t one = 1;
            ssize_t w = write(s->efd, &one, sizeof one);
            (void)w; /* EAGAIN only when the counter is saturated: already awake */
        }
    }
    return NULL;
}

static void on_request_done(gs_call_t *c, bool success);
static void on_adopt(gs_call_t *c, bool success);
static bool unary_deliver(gs_call_t *c, grpc_byte_buffer *bb);
static void on_recv_done(gs_call_t *c, bool success);
static void on_send_done(gs_call_t *c, bool success);
static void on_sendrecv_done(gs_call_t *c, bool success);
static void on_close_done(gs_call_t *c, bool success);
static void on_shutdown_done(gs_server_t *s);

static void dispatch(gs_server_t *s, gs_tag_t *t)
{
    switch (t->kind) {
    case TAG_REQUEST:
        on_request_done(t->owner, t->success);
        break;
    case TAG_ADOPT:
        on_adopt(t->owner, t->success);
        break;
    case TAG_RECV:
        on_recv_done(t->owner, t->success);
        break;
    case TAG_SEND:
        on_send_done(t->owner, t->success);
        break;
    case TAG_SENDRECV:
        on_sendrecv_done(t->owner, t->success);
        break;
    case TAG_CLOSE:
        on_close_done(t->owner, t->success);
        break;
    case TAG_SHUTDOWN:
        on_shutdown_done(s);
        break;
    }
}

/* Take everything the completion-queue thread queued and run it. The
 * eventfd is read before the list is taken, so no wake-up is ever lost. */
static void process_completions(gs_server_t *s)
{
    uint64_t n;
    ssize_t r = read(s->efd, &n, sizeof n);
    (void)r;
    pthread_mutex_lock(&s->mu);
    gs_tag_t *t = s->q_head;
    s->q_head = s->q_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (t) {
        gs_tag_t *next = t->next;
        t->next = NULL;
        dispatch(s, t);
        t = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    process_completions(arg);
}

/* ------------------------------------------------------------- calls */

static void call_list_add(gs_server_t *s, gs_call_t *c)
{
    pthread_mutex_lock(&s->calls_mu);
    c->prev = NULL;
    c->next = s->calls;
    if (s->calls)
        s->calls->prev = c;
    s->calls = c;
    s->n_calls++;
    pthread_mutex_unlock(&s->calls_mu);
}

/* Unlink c if it is on the list (a request that never arrived is not). */
static void call_list_remove(gs_server_t *s, gs_call_t *c)
{
    pthread_mutex_lock(&s->calls_mu);
    if (c->prev || c->next || s->calls == c) {
        if (c->prev)
            c->prev->next = c->next;
        else
            s->calls = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->prev = c->next = NULL;
        s->n_calls--;
    }
    pthread_mutex_unlock(&s->calls_mu);
}

static size_t calls_count(gs_server_t *s)
{
    pthread_mutex_lock(&s->calls_mu);
    size_t n = s->n_calls;
    pthread_mutex_unlock(&s->calls_mu);
    return n;
}

static void call_drop_outq(gs_call_t *c)
{
    c->outq_len = 0;
    while (c->outq) {
        gs_outmsg_t *m = c->outq;
        c->outq = m->next;
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    c->outq_tail = NULL;
}

/* The request's details and metadata: nothing of them is used once the
 * call arrived (its method and deadline are copied), so they are not kept
 * for the call's whole life. */
static void call_drop_details(gs_call_t *c)
{
    if (c->have_details) {
        grpc_call_details_destroy(&c->details);
        grpc_metadata_array_destroy(&c->req_md);
        c->have_details = false;
    }
}

/* Release gRPC core's call when it is over, and our object when nobody
 * owes it anything. */
static void call_maybe_release(gs_call_t *c)
{
    if (c->gc && c->ops == 0 && c->closed) {
        /* under calls_mu: the drain may be cancelling it from the other thread */
        if (c->srv)
            pthread_mutex_lock(&c->srv->calls_mu);
        grpc_call_unref(c->gc);
        c->gc = NULL;
        if (c->srv)
            pthread_mutex_unlock(&c->srv->calls_mu);
    }
    if (c->gc)
        return;
    call_drop_details(c);
    if (c->have_status_details) {
        grpc_slice_unref(c->status_details);
        c->have_status_details = false;
    }
    call_drop_outq(c);
    if (c->awaiting_reply)
        return;
    if (c->stream && !c->done_called) {
        /* The stream is over and nothing of ours is outstanding: tell the
         * handler once, then the call goes away. */
        c->done_called = true;
        if (c->h.on_done)
            c->h.on_done(c, c->cancelled || !c->finish_sent, c->harg);
    }
    if (c->srv)
        call_list_remove(c->srv, c);
    free(c->method);
    free(c);
}

/* Start a batch on a call; counts it as outstanding. */
static int call_start(gs_call_t *c, const grpc_op *ops, size_t n, gs_tag_t *tag)
{
    /* counted before it starts: its completion may run on the other
     * thread before grpc_call_start_batch returns (hand-over batches) */
    c->ops++;
    grpc_call_error e = grpc_call_start_batch(c->gc, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        c->ops--;
        log_error("%s: %s: gRPC core refused a batch of %zu ops: %s", c->srv ? c->srv->name : "grpc",
                  c->method ? c->method : "?", n, grpc_call_error_to_string(e));
        return -EIO;
    }
    return 0;
}

/* Queue the final status; call_pump sends it after queued messages. */
static void call_finish(gs_call_t *c, grpc_status_code status, const char *details)
{
    if (c->finish_queued)
        return;
    c->finish_queued = true;
    c->status = status;
    c->status_details = grpc_slice_from_copied_string(details ? details : "");
    c->have_status_details = true;
}

/* Send what is due: initial metadata once, the next queued message, and the
 * final status when nothing is queued before it, in one batch when they
 * are all ready (a unary reply is a single batch). */
static int call_pump(gs_call_t *c)
{
    if (!c->gc || c->closed || c->send_inflight || c->finish_sent || c->defer_pump)
        return 0;
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    bool has_msg = false, has_status = false;
    if (c->outq) {
        gs_outmsg_t *m = c->outq;
        c->outq = m->next;
        if (!c->outq)
            c->outq_tail = NULL;
        c->outq_len--;
        c->send_bb = m->bb;
        free(m);
        has_msg = true;
    }
    if (c->finish_queued && !c->outq)
        has_status = true;
    if (!has_msg && !has_status)
        return 0;
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = 0;
        n++;
    }
    if (has_msg) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->send_bb;
        n++;
    }
    if (has_status) {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.trailing_metadata_count = 0;
        ops[n].data.send_status_from_server.status = c->status;
        ops[n].data.send_status_from_server.status_details = &c->status_details;
        n++;
        if (c->registered) {
            ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
            ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
            n++;
        }
    }
    /* Everything is set before the batch starts: a batch that carries the
     * close of a unary call is completed, and the call released, by the
     * completion-queue thread, possibly before call_start returns. */
    bool md_was_sent = c->md_sent;
    bool handoff = has_status && c->registered;
    c->md_sent = true;
    c->send_inflight = true;
    if (has_status)
        c->finish_sent = true;
    c->close_in_send = handoff;
    if (call_start(c, ops, n, &c->t_send) != 0) {
        c->md_sent = md_was_sent;
        c->send_inflight = false;
        c->finish_sent = false;
        c->close_in_send = false;
        if (c->send_bb) {
            grpc_byte_buffer_destroy(c->send_bb);
            c->send_bb = NULL;
        }
        /* End the call on the wire so its close completes and it is released
         * (a registered unary call has no close of its own outstanding). */
        grpc_call_cancel_with_status(c->gc, GRPC_STATUS_INTERNAL, "server failed to send", NULL);
        if (c->registered)
            c->closed = true;
        return -EIO;
    }
    return handoff ? 1 : 0;
}

static void call_recv_next(gs_call_t *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    if (call_start(c, &op, 1, &c->t_recv) != 0)
        grpc_call_cancel_with_status(c->gc, GRPC_STATUS_INTERNAL, "server failed to receive", NULL);
    else
        c->recv_inflight = true;
}

/* A stream reads its next message only when the previous one was handled,
 * the handler did not pause it, and not too many answers wait to go out:
 * a client that does not read its answers stops being read (and gRPC's
 * flow control then stops the client). */
static bool stream_may_read(const gs_call_t *c)
{
    return c->stream && c->gc && !c->closed && !c->recv_inflight && !c->recv_paused && !c->half_closed &&
           !c->finish_queued && c->outq_len < GS_STREAM_MAX_QUEUED;
}

static void stream_read_more(gs_call_t *c)
{
    if (stream_may_read(c))
        call_recv_next(c);
}

/* Queue one outgoing message (a reference to sl) behind the ones already
 * queued. */
static int call_enqueue_slice(gs_call_t *c, grpc_slice sl)
{
    gs_outmsg_t *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->bb = grpc_raw_byte_buffer_create(&sl, 1); /* takes its own reference */
    if (c->outq_tail)
        c->outq_tail->next = m;
    else
        c->outq = m;
    c->outq_tail = m;
    c->outq_len++;
    return 0;
}

/* The same with a copy of msg. */
static int call_enqueue(gs_call_t *c, const uint8_t *msg, size_t len)
{
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)(msg ? msg : (const uint8_t *)""), len);
    int rc = call_enqueue_slice(c, sl);
    grpc_slice_unref(sl);
    return rc;
}

static gs_call_t *call_new(gs_server_t *s)
{
    gs_call_t *c = calloc(1, sizeof *c);
    if (!c) {
        log_error("%s: out of memory for a new call", s->name);
        return NULL;
    }
    c->srv = s;
    c->t_req = (gs_tag_t){.kind = TAG_REQUEST, .owner = c};
    c->t_adopt = (gs_tag_t){.kind = TAG_ADOPT, .owner = c};
    c->t_sendrecv = (gs_tag_t){.kind = TAG_SENDRECV, .owner = c};
    c->t_recv = (gs_tag_t){.kind = TAG_RECV, .owner = c};
    c->t_send = (gs_tag_t){.kind = TAG_SEND, .owner = c};
    c->t_close = (gs_tag_t){.kind = TAG_CLOSE, .owner = c};
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->req_md);
    c->have_details = true;
    return c;
}

/* Ask gRPC core for the next call of a unary method, with its request. */
static int request_registered(gs_server_t *s, const gs_method_t *m)
{
    gs_call_t *c = call_new(s);
    if (!c)
        return -ENOMEM;
    c->m = m;
    c->registered = true;
    grpc_call_error e = grpc_server_request_registered_call(s->srv, m->handle, &c->gc, &c->deadline, &c->req_md,
                                                            &c->recv_bb, s->cq, s->cq, &c->t_req);
    if (e != GRPC_CALL_OK) {
        log_error("%s: cannot request a %s call from gRPC core: %s", s->name, m->path, grpc_call_error_to_string(e));
        grpc_call_details_destroy(&c->details);
        grpc_metadata_array_destroy(&c->req_md);
        free(c);
        return -EIO;
    }
    s->pending_requests++;
    return 0;
}

/* Ask gRPC core for the next call of any other method (streams, unknown). */
static int request_one(gs_server_t *s)
{
    gs_call_t *c = call_new(s);
    if (!c)
        return -ENOMEM;
    grpc_call_error e = grpc_server_request_call(s->srv, &c->gc, &c->details, &c->req_md, s->cq, s->cq, &c->t_req);
    if (e != GRPC_CALL_OK) {
        log_error("%s: cannot request a call from gRPC core: %s", s->name, grpc_call_error_to_string(e));
        grpc_call_details_destroy(&c->details);
        grpc_metadata_array_destroy(&c->req_md);
        free(c);
        return -EIO;
    }
    s->pending_requests++;
    return 0;
}

static const gs_method_t *find_method(const gs_server_t *s, const char *path)
{
    for (size_t i = 0; i < s->n_methods; i++)
        if (strcmp(s->methods[i].path, path) == 0)
            return &s->methods[i];
    return NULL;
}

/* Start tracking the call's end (RECV_CLOSE_ON_SERVER). false when gRPC
 * core refused: the call is then cancelled and released. */
static bool call_track_close(gs_call_t *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (call_start(c, &op, 1, &c->t_close) == 0)
        return true;
    c->closed = true;
    grpc_call_cancel_with_status(c->gc, GRPC_STATUS_INTERNAL, "server failed to track the call", NULL);
    call_maybe_release(c);
    return false;
}

/* A streaming call begins: the handler sees it, then its first read. */
static void stream_begin(gs_call_t *c)
{
    if (c->h.on_open)
        c->h.on_open(c, c->harg);
    stream_read_more(c);
}

/* A new call arrived (or, without success, the server is shutting down). */
static void on_request_done(gs_call_t *c, bool success)
{
    gs_server_t *s = c->srv;
    s->pending_requests--;
    if (!success) {
        if (c->recv_bb) {
            grpc_byte_buffer_destroy(c->recv_bb);
            c->recv_bb = NULL;
        }
        c->awaiting_reply = false;
        call_maybe_release(c); /* gc is NULL: frees */
        return;
    }
    if (c->registered) {
        if (s->state == GS_ST_RUNNING)
            request_registered(s, c->m);
        call_list_add(s, c);
        call_drop_details(c);
        grpc_byte_buffer *bb = c->recv_bb;
        c->recv_bb = NULL;
        c->method = strdup(c->m->path);
        if (!c->method) {
            log_error("%s: out of memory for a call's method name", s->name);
            if (bb)
                grpc_byte_buffer_destroy(bb);
            c->closed = true;
            grpc_call_cancel_with_status(c->gc, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
            call_maybe_release(c);
            return;
        }
        if (!unary_deliver(c, bb))
            call_maybe_release(c);
        return;
    }
    if (s->state == GS_ST_RUNNING)
        request_one(s);
    call_list_add(s, c);
    c->deadline = c->details.deadline;
    c->method = strndup((const char *)GRPC_SLICE_START_PTR(c->details.method), GRPC_SLICE_LENGTH(c->details.method));
    call_drop_details(c);
    if (!c->method) {
        log_error("%s: out of memory for a call's method name", s->name);
        c->closed = true; /* nothing started: release at once */
        grpc_call_cancel_with_status(c->gc, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        call_maybe_release(c);
        return;
    }
    c->m = find_method(s, c->method);
    if (c->m && !c->m->unary) {
        c->stream = true;
        c->h = c->m->h;
        c->harg = c->m->arg;
    }
    if (c->stream && c->h.on_cq_thread) {
        /* Hand the call to the completion-queue thread: an empty batch
         * completes at once, there. From here on this thread does not
         * touch the call. */
        c->on_cq = true;
        if (call_start(c, NULL, 0, &c->t_adopt) == 0)
            return;
        c->on_cq = false;
        c->closed = true;
        grpc_call_cancel_with_status(c->gc, GRPC_STATUS_INTERNAL, "server failed to start the call", NULL);
        call_maybe_release(c);
        return;
    }
    if (!call_track_close(c))
        return;
    if (!c->m) {
        log_debug("%s: %s: unknown method, answering UNIMPLEMENTED", s->name, c->method);
        char msg[512];
        snprintf(msg, sizeof msg, "unknown method %s", c->method);
        call_finish(c, GRPC_STATUS_UNIMPLEMENTED, msg);
        call_pump(c);
    } else if (c->stream) {
        stream_begin(c);
    } else {
        call_recv_next(c);
    }
    call_maybe_release(c);
}

/* On the completion-queue thread: a call handed over by on_request_done. */
static void on_adopt(gs_call_t *c, bool success)
{
    c->ops--;
    if (!success) {
        c->closed = true;
        grpc_call_cancel_with_status(c->gc, GRPC_STATUS_INTERNAL, "server failed to start the call", NULL);
        call_maybe_release(c);
        return;
    }
    if (!call_track_close(c))
        return;
    stream_begin(c);
    call_maybe_release(c);
}

/* After a message was handled: send what it queued and read the next one.
 * A stream on the completion-queue thread whose handler answered with one
 * message does both in one batch, as a request/answer stream needs: one
 * completion per round trip instead of two (the batch completes when the
 * next request arrived; the answer itself goes out at once). */
static void stream_continue(gs_call_t *c)
{
    if (c->on_cq && c->outq && c->outq_len == 1 && !c->finish_queued && !c->send_inflight && stream_may_read(c)) {
        gs_outmsg_t *m = c->outq;
        grpc_op ops[3];
        memset(ops, 0, sizeof ops);
        size_t n = 0;
        if (!c->md_sent) {
            ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
            n++;
        }
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = m->bb;
        n++;
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n].data.recv_message.recv_message = &c->recv_bb;
        n++;
        if (call_start(c, ops, n, &c->t_sendrecv) == 0) {
            c->outq = c->outq_tail = NULL;
            c->outq_len = 0;
            c->send_bb = m->bb;
            free(m);
            c->md_sent = true;
            c->send_inflight = true;
            c->recv_inflight = true;
            return;
        }
        /* refused: fall back to the separate batches (which log and end the call) */
    }
    call_pump(c);
    stream_read_more(c);
}

/* A streaming call received a message, or (bb NULL) the client's
 * half-close. */
static void stream_on_recv(gs_call_t *c, grpc_byte_buffer *bb)
{
    if (!bb) {
        /* The client's messages ended: a half-close, or a cancel whose
         * close completion has not been seen yet (gRPC core ends the
         * messages either way; on_done then says cancelled). */
        c->half_closed = true;
        if (c->h.on_half_close)
            c->h.on_half_close(c, c->harg);
        else
            call_finish(c, GRPC_STATUS_OK, NULL);
        call_pump(c);
        return;
    }
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb)) {
        grpc_byte_buffer_destroy(bb);
        call_finish(c, GRPC_STATUS_INTERNAL, "stream message cannot be decompressed");
        call_pump(c);
        return;
    }
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(bb);
    size_t len = GRPC_SLICE_LENGTH(all);
    const uint8_t *data = len ? GRPC_SLICE_START_PTR(all) : (const uint8_t *)"";
    c->defer_pump = c->on_cq;
    if (c->h.on_message && !c->finish_queued)
        c->h.on_message(c, data, len, c->harg);
    c->defer_pump = false;
    grpc_slice_unref(all);
    stream_continue(c);
}

/* A unary call's request (bb NULL: the client sent none) goes to its
 * handler, which now owes the reply. A reply given inside the handler is
 * sent when it returns. true: the call was handed to the completion-queue
 * thread with its last batch, and the caller must not touch it again. */
static bool unary_deliver(gs_call_t *c, grpc_byte_buffer *bb)
{
    if (!bb) {
        /* the client half-closed without sending the request */
        call_finish(c, GRPC_STATUS_INTERNAL, "request message missing");
        return call_pump(c) == 1;
    }
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb)) {
        grpc_byte_buffer_destroy(bb);
        call_finish(c, GRPC_STATUS_INTERNAL, "request message cannot be decompressed");
        return call_pump(c) == 1;
    }
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(bb);

    size_t len = GRPC_SLICE_LENGTH(all);
    const uint8_t *data = len ? GRPC_SLICE_START_PTR(all) : (const uint8_t *)"";
    c->awaiting_reply = true;
    /* The call object outlives the handler until gs_reply. */
    c->in_handler = true;
    c->m->unary(c, data, len, c->m->arg);
    c->in_handler = false;
    grpc_slice_unref(all);
    return c->finish_queued && call_pump(c) == 1;
}

static void on_recv_done(gs_call_t *c, bool success)
{
    c->ops--;
    c->recv_inflight = false;
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    if (!success || c->closed || !c->gc) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        call_maybe_release(c);
        return;
    }
    if (c->stream) {
        stream_on_recv(c, bb);
        call_maybe_release(c);
        return;
    }
    if (!unary_deliver(c, bb))
        call_maybe_release(c);
}

static void on_send_done(gs_call_t *c, bool success)
{
    c->ops--;
    c->send_inflight = false;
    if (c->close_in_send)
        c->closed = true; /* the batch carried the close: the call is over either way */
    if (c->send_bb) {
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
    }
    if (success) {
        call_pump(c);
        stream_read_more(c);
    } else {
        call_drop_outq(c);
    }
    call_maybe_release(c);
}

/* The answer went out and the next request (or the half-close) arrived. */
static void on_sendrecv_done(gs_call_t *c, bool success)
{
    c->ops--;
    c->send_inflight = false;
    c->recv_inflight = false;
    if (c->send_bb) {
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
    }
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    if (!success || c->closed || !c->gc) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        call_drop_outq(c);
        call_maybe_release(c);
        return;
    }
    stream_on_recv(c, bb);
    call_maybe_release(c);
}

static void on_close_done(gs_call_t *c, bool success)
{
    c->ops--;
    c->closed = true;
    if (c->cancelled && c->srv)
        log_debug("%s: %s: call cancelled before it finished", c->srv->name, c->method ? c->method : "?");
    call_drop_outq(c);
    call_maybe_release(c);
}

struct gs_msg {
    grpc_slice slice;
};

gs_msg_t *gs_msg_new(const uint8_t *msg, size_t len)
{
    gs_msg_t *m = malloc(sizeof *m);
    if (!m)
        return NULL;
    m->slice = grpc_slice_from_copied_buffer((const char *)(msg ? msg : (const uint8_t *)""), len);
    return m;
}

void gs_msg_free(gs_msg_t *m)
{
    if (!m)
        return;
    grpc_slice_unref(m->slice);
    free(m);
}

/* gs_reply and gs_reply_msg: the response is resp/len, or shared when set. */
static int reply(gs_call_t *c, int status, const char *details, const uint8_t *resp, size_t len,
                 const gs_msg_t *shared)
{
    if (!c)
        return -EINVAL;
    if (c->stream)
        return -EINVAL;
    if (!c->awaiting_reply || c->replied)
        return -EALREADY;
    c->replied = true;
    c->awaiting_reply = false;
    if (!c->gc || c->closed || !c->srv) {
        if (!c->in_handler) /* else released when the handler returns */
            call_maybe_release(c);
        return -ECANCELED;
    }
    if (status == GS_OK && (shared ? call_enqueue_slice(c, shared->slice) : call_enqueue(c, resp, len)) < 0) {
        status = GS_RESOURCE_EXHAUSTED;
        details = "server out of memory";
    }
    call_finish(c, (grpc_status_code)status, status == GS_OK ? NULL : details);
    if (c->in_handler)
        return 0; /* sent when the handler returns (unary_deliver) */
    int rc = call_pump(c);
    if (rc == 1)
        return 0; /* handed over: the completion-queue thread releases it */
    call_maybe_release(c);
    return rc;
}

int gs_reply(gs_call_t *c, int status, const char *details, const uint8_t *resp, size_t len)
{
    return reply(c, status, details, resp, len, NULL);
}

int gs_reply_msg(gs_call_t *c, const gs_msg_t *m)
{
    if (!m)
        return -EINVAL;
    return reply(c, GS_OK, NULL, NULL, 0, m);
}

/* True when nothing more may be sent on a streaming call. */
static bool stream_over(const gs_call_t *c)
{
    return !c->gc || c->closed || !c->srv || c->done_called;
}

int gs_stream_send(gs_call_t *c, const uint8_t *msg, size_t len)
{
    if (!c || !c->stream)
        return -EINVAL;
    if (stream_over(c))
        return -ECANCELED;
    if (c->finish_queued)
        return -EALREADY;
    if (call_enqueue(c, msg, len) < 0)
        return -ENOMEM;
    return call_pump(c);
}

int gs_stream_finish(gs_call_t *c, int status, const char *details)
{
    if (!c || !c->stream)
        return -EINVAL;
    if (c->finish_queued)
        return -EALREADY;
    if (stream_over(c))
        return -ECANCELED;
    call_finish(c, (grpc_status_code)status, status == GS_OK ? NULL : details);
    return call_pump(c);
}

void gs_stream_pause(gs_call_t *c)
{
    if (c && c->stream)
        c->recv_paused = true;
}

void gs_stream_resume(gs_call_t *c)
{
    if (!c || !c->stream || !c->recv_paused)
        return;
    c->recv_paused = false;
    if (!stream_over(c))
        stream_read_more(c);
}

size_t gs_stream_queued(const gs_call_t *c) { return c ? c->outq_len + (c->send_inflight ? 1 : 0) : 0; }

bool gs_stream_half_closed(const gs_call_t *c) { return c && c->half_closed; }

void gs_call_set_user(gs_call_t *c, void *user)
{
    if (c)
        c->user = user;
}

void *gs_call_user(const gs_call_t *c) { return c ? c->user : NULL; }

const char *gs_call_method(const gs_call_t *c) { return c->method ? c->method : ""; }

bool gs_call_cancelled(const gs_call_t *c)
{
    return !c->srv || !c->gc || c->cancelled || (c->closed && !c->finish_sent);
}

int64_t gs_call_remaining_ms(const gs_call_t *c)
{
    if (gpr_time_cmp(c->deadline, gpr_inf_future(c->deadline.clock_type)) == 0)
        return -1;
    gpr_timespec left = gpr_time_sub(c->deadline, gpr_now(c->deadline.clock_type));
    int64_t ms = gpr_time_to_millis(left);
    return ms < 0 ? 0 : ms;
}

void gs_call_peer(const gs_call_t *c, char *buf, size_t buflen)
{
    if (!buflen)
        return;
    if (!c->gc) {
        snprintf(buf, buflen, "unknown");
        return;
    }
    char *p = grpc_call_get_peer(c->gc);
    gs_server_t *s = c->srv;
    char *end = NULL;
    long fd = p && strncmp(p, "fd:", 3) == 0 ? strtol(p + 3, &end, 10) : -1;
    bool known = false;
    if (s && fd >= 0 && end && !*end) {
        pthread_mutex_lock(&s->calls_mu);
        if ((size_t)fd < s->n_peers && s->peers[fd][0]) {
            snprintf(buf, buflen, "%s", s->peers[fd]);
            known = true;
        }
        pthread_mutex_unlock(&s->calls_mu);
    }
    if (!known)
        snprintf(buf, buflen, "%s", p ? p : "unknown");
    gpr_free(p);
}

/* Remember who connected on fd, in gRPC core's peer notation. */
static void peer_remember(gs_server_t *s, int fd, const struct sockaddr *sa, int socklen)
{
    if (fd < 0)
        return;
    if ((size_t)fd >= s->n_peers) {
        size_t n = s->n_peers ? s->n_peers : 64;
        while (n <= (size_t)fd)
            n *= 2;
        char(*arr)[GS_PEER_LEN] = realloc(s->peers, n * sizeof *arr);
        if (!arr)
            return; /* the call then reports gRPC core's "fd:N" */
        memset(arr + s->n_peers, 0, (n - s->n_peers) * sizeof *arr);
        s->peers = arr;
        s->n_peers = n;
    }
    char *out = s->peers[fd];
    char host[INET6_ADDRSTRLEN] = "";
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, GS_PEER_LEN, "ipv4:%s:%u", host, ntohs(in->sin_port));
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, GS_PEER_LEN, "ipv6:[%s]:%u", host, ntohs(in6->sin6_port));
    } else if (sa && sa->sa_family == AF_UNIX && socklen > (int)offsetof(struct sockaddr_un, sun_path)) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        snprintf(out, GS_PEER_LEN, "unix:%.*s", (int)(socklen - (int)offsetof(struct sockaddr_un, sun_path)),
                 un->sun_path);
    } else {
        out[0] = '\0';
    }
}

/* ---------------------------------------------------------- listeners */

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
    gs_listener_t *l = arg;
    gs_server_t *s = l->srv;
    if (s->state != GS_ST_RUNNING) {
        close(fd);
        return;
    }
    if (sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) {
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
            log_debug("%s: %s: TCP_NODELAY: %s", s->name, l->name, strerror(errno));
    }
    pthread_mutex_lock(&s->calls_mu);
    peer_remember(s, fd, sa, socklen);
    pthread_mutex_unlock(&s->calls_mu);
    /* gRPC core owns the connected socket from here on (it closes it). */
    grpc_server_add_channel_from_fd(s->srv, fd, s->creds);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    gs_listener_t *l = arg;
    int e = EVUTIL_SOCKET_ERROR();
    log_warn("%s: accepting on listener %s failed: %s; pausing accepts for %d ms", l->srv->name, l->name,
             evutil_socket_error_to_string(e), GS_ACCEPT_PAUSE_MS);
    evconnlistener_disable(lev);
    struct timeval tv = {0, GS_ACCEPT_PAUSE_MS * 1000};
    evtimer_add(l->resume, &tv);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    gs_listener_t *l = arg;
    if (l->lev && l->srv->state == GS_ST_RUNNING)
        evconnlistener_enable(l->lev);
}

/* Stop accepting everywhere; the listening fds stay open for their owner. */
static void listeners_close(gs_server_t *s)
{
    for (size_t i = 0; i < s->n_listeners; i++) {
        gs_listener_t *l = s->listeners[i];
        if (l->lev) {
            evconnlistener_free(l->lev);
            l->lev = NULL;
        }
        if (l->resume)
            evtimer_del(l->resume);
    }
}

int gs_server_add_listener(gs_server_t *s, int fd, const char *name, char *err, size_t errlen)
{
    const char *lname = name ? name : "?";
    if (s->state != GS_ST_NEW) {
        snprintf(err, errlen, "listener %s: server already started", lname);
        return -EINVAL;
    }
    int acc = 0;
    socklen_t sl = sizeof acc;
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &sl) < 0 || !acc) {
        snprintf(err, errlen, "listener %s: fd %d is not a listening socket", lname, fd);
        return -EINVAL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        int e = errno;
        snprintf(err, errlen, "listener %s: fd %d: cannot make it non-blocking: %s", lname, fd, strerror(e));
        return -e;
    }
    gs_listener_t **arr = realloc(s->listeners, (s->n_listeners + 1) * sizeof *arr);
    if (!arr) {
        snprintf(err, errlen, "listener %s: out of memory", lname);
        return -ENOMEM;
    }
    s->listeners = arr;
    gs_listener_t *l = calloc(1, sizeof *l);
    if (!l || !(l->name = strdup(lname))) {
        free(l);
        snprintf(err, errlen, "listener %s: out of memory", lname);
        return -ENOMEM;
    }
    l->srv = s;
    l->fd = fd;
    /* backlog 0: the socket already listens; no LEV_OPT_CLOSE_ON_FREE: the fd is not ours */
    l->lev = evconnlistener_new(s->base, on_accept, l, LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED, 0, fd);
    l->resume = evtimer_new(s->base, on_accept_resume, l);
    if (!l->lev || !l->resume) {
        if (l->lev)
            evconnlistener_free(l->lev);
        if (l->resume)
            event_free(l->resume);
        free(l->name);
        free(l);
        snprintf(err, errlen, "listener %s: fd %d: libevent cannot listen on it", lname, fd);
        return -EIO;
    }
    evconnlistener_set_error_cb(l->lev, on_accept_error);
    s->listeners[s->n_listeners++] = l;
    return 0;
}

/* -------------------------------------------------------------- server */

/* Register m (its path is copied) after the checks both kinds share;
 * `needs` names the handler a valid registration must have. */
static int method_add(gs_server_t *s, const char *method, bool valid, const char *needs, gs_method_t m, char *err,
                      size_t errlen)
{
    if (!method || method[0] != '/' || !strchr(method + 1, '/') || !valid) {
        snprintf(err, errlen, "method '%s': expected a path \"/package.Service/Method\" and %s",
                 method ? method : "(null)", needs);
        return -EINVAL;
    }
    if (s->state != GS_ST_NEW) {
        snprintf(err, errlen, "method %s: server already started", method);
        return -EINVAL;
    }
    if (find_method(s, method)) {
        snprintf(err, errlen, "method %s: registered twice", method);
        return -EINVAL;
    }
    gs_method_t *arr = realloc(s->methods, (s->n_methods + 1) * sizeof *arr);
    if (!arr) {
        snprintf(err, errlen, "method %s: out of memory", method);
        return -ENOMEM;
    }
    s->methods = arr;
    if (!(m.path = strdup(method))) {
        snprintf(err, errlen, "method %s: out of memory", method);
        return -ENOMEM;
    }
    s->methods[s->n_methods++] = m;
    return 0;
}

int gs_server_add_unary(gs_server_t *s, const char *method, gs_unary_fn fn, void *arg, char *err, size_t errlen)
{
    return method_add(s, method, fn != NULL, "a handler", (gs_method_t){.unary = fn, .arg = arg}, err, errlen);
}

int gs_server_add_stream(gs_server_t *s, const char *method, const gs_stream_handlers_t *h, void *arg, char *err,
                         size_t errlen)
{
    return method_add(s, method, h && h->on_message, "an on_message handler",
                      (gs_method_t){.h = h ? *h : (gs_stream_handlers_t){0}, .arg = arg}, err, errlen);
}

static void on_teardown(evutil_socket_t fd, short what, void *arg);
static void on_drain_timeout(evutil_socket_t fd, short what, void *arg);

gs_server_t *gs_server_new(struct event_base *base, const gs_options_t *opt, char *err, size_t errlen)
{
    gs_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = base;
    s->efd = -1;
    snprintf(s->name, sizeof s->name, "%s", opt && opt->name ? opt->name : "grpc");
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->handler_mu, NULL);
    pthread_mutex_init(&s->calls_mu, NULL);
    s->t_shutdown = (gs_tag_t){.kind = TAG_SHUTDOWN, .owner = s};

    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        snprintf(err, errlen, "%s: eventfd: %s", s->name, strerror(errno));
        goto fail;
    }
    s->ev_wake = event_new(base, s->efd, EV_READ | EV_PERSIST, on_wake, s);
    s->ev_drain_timer = evtimer_new(base, on_drain_timeout, s);
    s->ev_teardown = event_new(base, -1, 0, on_teardown, s);
    if (!s->ev_wake || !s->ev_drain_timer || !s->ev_teardown || event_add(s->ev_wake, NULL) < 0) {
        snprintf(err, errlen, "%s: cannot create libevent events", s->name);
        goto fail;
    }

    gpr_set_log_function(grpc_log_bridge);
    grpc_init();
    s->grpc_inited = true;

    uint32_t maxmsg = opt && opt->max_message_bytes ? opt->max_message_bytes : GS_DEFAULT_MAX_MESSAGE;
    if (maxmsg > INT32_MAX)
        maxmsg = INT32_MAX;
    grpc_arg args[3];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)maxmsg;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)maxmsg;
    /* No server-side deadline timer per call: clients cancel at their own
     * deadline, which ends the call here too, and handlers read the
     * deadline with gs_call_remaining_ms. The timer cost memory in every
     * call and timer work in every call held (config watchers). */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_ENABLE_DEADLINE_CHECKS;
    args[2].value.integer = 0;
    grpc_channel_args ca = {.num_args = 3, .args = args};

    s->cq = grpc_completion_queue_create_for_next(NULL);
    s->srv = grpc_server_create(&ca, NULL);
    s->creds = grpc_insecure_server_credentials_create();
    if (!s->cq || !s->srv || !s->creds) {
        snprintf(err, errlen, "%s: gRPC core cannot create a server", s->name);
        goto fail;
    }
    grpc_server_register_completion_queue(s->srv, s->cq, NULL);
    return s;
fail:
    gs_server_free(s);
    return NULL;
}

int gs_server_start(gs_server_t *s, char *err, size_t errlen)
{
    if (s->state != GS_ST_NEW) {
        snprintf(err, errlen, "%s: already started", s->name);
        return -EINVAL;
    }
    /* Unary methods are registered with gRPC core, which then reads the
     * request with the call (one batch and one completion fewer). */
    for (size_t m = 0; m < s->n_methods; m++) {
        if (!s->methods[m].unary)
            continue;
        s->methods[m].handle = grpc_server_register_method(s->srv, s->methods[m].path, NULL,
                                                           GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!s->methods[m].handle) {
            snprintf(err, errlen, "%s: gRPC core refused to register method %s", s->name, s->methods[m].path);
            return -EINVAL;
        }
    }
    /* The thread must not take the process's signals: block them while it
     * is created (it inherits the mask), then restore ours. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&s->thread, NULL, cq_thread, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        snprintf(err, errlen, "%s: cannot start the completion-queue thread: %s", s->name, strerror(e));
        return -e;
    }
    s->thread_started = true;
    grpc_server_start(s->srv);
    s->state = GS_ST_RUNNING;
    for (int i = 0; i < GS_PENDING_REQUESTS; i++) {
        if (request_one(s) != 0) {
            snprintf(err, errlen, "%s: gRPC core does not accept call requests", s->name);
            return -EIO;
        }
    }
    for (size_t m = 0; m < s->n_methods; m++) {
        for (int i = 0; s->methods[m].handle && i < GS_PENDING_PER_UNARY; i++) {
            if (request_registered(s, &s->methods[m]) != 0) {
                snprintf(err, errlen, "%s: gRPC core does not accept call requests for %s", s->name,
                         s->methods[m].path);
                return -EIO;
            }
        }
    }
    for (size_t i = 0; i < s->n_listeners; i++) {
        if (evconnlistener_enable(s->listeners[i]->lev) < 0) {
            snprintf(err, errlen, "%s: listener %s: cannot start accepting", s->name, s->listeners[i]->name);
            return -EIO;
        }
    }
    log_info("%s: serving gRPC on %zu listener%s, %zu method%s", s->name, s->n_listeners,
             s->n_listeners == 1 ? "" : "s", s->n_methods, s->n_methods == 1 ? "" : "s");
    return 0;
}

/* Destroy gRPC core's objects in the order it requires. Runs on the event
 * loop thread, after the shutdown tag (or for a server never started). */
static void teardown(gs_server_t *s)
{
    if (s->ev_drain_timer)
        evtimer_del(s->ev_drain_timer);
    listeners_close(s);
    if (s->srv) {
        grpc_server_destroy(s->srv);
        s->srv = NULL;
    }
    if (s->cq) {
        grpc_completion_queue_shutdown(s->cq);
        if (s->thread_started) {
            pthread_join(s->thread, NULL);
            s->thread_started = false;
        } else {
            while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
                   GRPC_QUEUE_SHUTDOWN)
                ;
        }
        /* completions queued before the thread saw the queue shut down */
        process_completions(s);
        grpc_completion_queue_destroy(s->cq);
        s->cq = NULL;
    }
    if (s->creds) {
        grpc_server_credentials_release(s->creds);
        s->creds = NULL;
    }
    if (s->grpc_inited) {
        grpc_shutdown();
        s->grpc_inited = false;
    }
    s->state = GS_ST_STOPPED;
}

static void on_shutdown_done(gs_server_t *s)
{
    s->shutdown_done = true;
    /* Tear down outside the completion loop that delivered this tag. */
    event_active(s->ev_teardown, EV_TIMEOUT, 0);
}

static void on_teardown(evutil_socket_t fd, short what, void *arg)
{
    gs_server_t *s = arg;
    if (s->state == GS_ST_STOPPED)
        return;
    teardown(s);
    log_info("%s: gRPC server stopped%s", s->name, s->cancelled_all ? " (calls cancelled at the drain bound)" : "");
    if (s->drained)
        s->drained(s, !s->cancelled_all, s->drained_arg);
}

/* After grpc_server_cancel_all_calls: unary calls still waiting for their
 * handler's reply have no batch the cancel could complete, so their end is
 * taken here: gRPC core's call is released now (shutdown waits for it), our
 * object stays for the late gs_reply, which then only frees it. */
static void release_parked(gs_server_t *s)
{
    size_t cap = 0, n = 0;
    gs_call_t **v = NULL;
    pthread_mutex_lock(&s->calls_mu);
    for (gs_call_t *c = s->calls; c; c = c->next) {
        /* awaiting_reply first: a replied call may be being released by
         * the completion-queue thread, and is not read any further */
        if (!c->awaiting_reply || c->on_cq || !c->registered || !c->gc || c->ops)
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            gs_call_t **nv = realloc(v, nc * sizeof *nv);
            if (!nv)
                break;
            v = nv;
            cap = nc;
        }
        v[n++] = c;
    }
    pthread_mutex_unlock(&s->calls_mu);
    /* these calls belong to this thread: nothing else frees them meanwhile */
    for (size_t i = 0; i < n; i++) {
        v[i]->closed = true;
        v[i]->cancelled = 1;
        call_maybe_release(v[i]);
    }
    free(v);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    gs_server_t *s = arg;
    if (s->shutdown_done || !s->srv)
        return;
    size_t n = calls_count(s);
    log_warn("%s: drain bound of %d ms reached; cancelling %zu call%s still running", s->name, s->drain_timeout_ms, n,
             n == 1 ? "" : "s");
    s->cancelled_all = true;
    grpc_server_cancel_all_calls(s->srv);
    release_parked(s);
}

void gs_server_drain(gs_server_t *s, int timeout_ms, gs_drained_fn done, void *arg)
{
    if (s->state == GS_ST_DRAINING || s->state == GS_ST_STOPPED)
        return;
    s->drained = done;
    s->drained_arg = arg;
    s->drain_timeout_ms = timeout_ms < 0 ? 0 : timeout_ms;
    if (s->state == GS_ST_NEW) {
        s->state = GS_ST_DRAINING;
        event_active(s->ev_teardown, EV_TIMEOUT, 0);
        return;
    }
    s->state = GS_ST_DRAINING;
    listeners_close(s);
    size_t n = calls_count(s);
    log_info("%s: draining: no new connections, %zu call%s in flight", s->name, n, n == 1 ? "" : "s");
    grpc_server_shutdown_and_notify(s->srv, s->cq, &s->t_shutdown);
    s->shutdown_called = true;
    /* Streams handled on the completion-queue thread are out of this
     * thread's reach: end them now so their clients reconnect elsewhere. */
    pthread_mutex_lock(&s->calls_mu);
    for (gs_call_t *c = s->calls; c; c = c->next)
        if (c->on_cq && c->gc)
            grpc_call_cancel_with_status(c->gc, GRPC_STATUS_UNAVAILABLE, "server draining, reconnect", NULL);
    pthread_mutex_unlock(&s->calls_mu);
    struct timeval tv = {s->drain_timeout_ms / 1000, (s->drain_timeout_ms % 1000) * 1000};
    evtimer_add(s->ev_drain_timer, &tv);
}

bool gs_server_stopped(const gs_server_t *s) { return s->state == GS_ST_STOPPED; }

size_t gs_server_active_calls(const gs_server_t *s) { return calls_count((gs_server_t *)s); }

void gs_server_lock_handlers(gs_server_t *s)
{
    if (s)
        pthread_mutex_lock(&s->handler_mu);
}

void gs_server_unlock_handlers(gs_server_t *s)
{
    if (s)
        pthread_mutex_unlock(&s->handler_mu);
}

/* Stop a running server synchronously: cancel everything and pump
 * completions here until gRPC core confirms, within GS_FREE_WAIT_MS.
 * Returns false when it did not confirm (the server is then leaked). */
static bool stop_now(gs_server_t *s)
{
    listeners_close(s);
    if (!s->shutdown_called) {
        grpc_server_shutdown_and_notify(s->srv, s->cq, &s->t_shutdown);
        s->shutdown_called = true;
    }
    if (!s->shutdown_done) {
        s->cancelled_all = true;
        grpc_server_cancel_all_calls(s->srv);
        release_parked(s);
    }
    for (int waited = 0; !s->shutdown_done && waited < GS_FREE_WAIT_MS; waited += 50) {
        struct pollfd pfd = {.fd = s->efd, .events = POLLIN};
        poll(&pfd, 1, 50);
        process_completions(s);
    }
    return s->shutdown_done;
}

void gs_server_free(gs_server_t *s)
{
    if (!s)
        return;
    if (s->state == GS_ST_RUNNING || (s->state == GS_ST_DRAINING && s->srv && s->shutdown_called)) {
        if (!stop_now(s)) {
            log_error("%s: gRPC core did not finish shutting down within %d ms; leaving it allocated", s->name,
                      GS_FREE_WAIT_MS);
            return;
        }
        teardown(s);
    } else if (s->state != GS_ST_STOPPED) {
        teardown(s); /* never started: nothing to wait for */
    }
    /* Calls whose handlers still owe a reply outlive the server. */
    while (s->calls) {
        gs_call_t *c = s->calls;
        call_list_remove(s, c);
        c->srv = NULL;
    }
    for (size_t i = 0; i < s->n_listeners; i++) {
        if (s->listeners[i]->resume)
            event_free(s->listeners[i]->resume);
        free(s->listeners[i]->name);
        free(s->listeners[i]);
    }
    free(s->listeners);
    for (size_t i = 0; i < s->n_methods; i++)
        free(s->methods[i].path);
    free(s->methods);
    free(s->peers);
    if (s->ev_wake)
        event_free(s->ev_wake);
    if (s->ev_drain_timer)
        event_free(s->ev_drain_timer);
    if (s->ev_teardown)
        event_free(s->ev_teardown);
    if (s->efd >= 0)
        close(s->efd);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->handler_mu);
    pthread_mutex_destroy(&s->calls_mu);
    free(s);
}

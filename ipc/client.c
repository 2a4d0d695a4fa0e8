/*
 * client.c: an IPC client that stays connected to one Unix socket path.
 *
 * Owns its connection, the reconnect schedule, the subscribed topics and the
 * table of requests waiting for an answer. Rules kept here:
 *  - request ids are a per-client counter starting at 1, never reused;
 *  - every accepted request gets exactly one callback: the reply, a timeout,
 *    -ECONNRESET when the connection drops (or the client is freed) while it
 *    waits, or -ENOTCONN when it was made while disconnected; never from
 *    inside ipc_client_request itself (a refusal is delivered by a
 *    zero-delay timer);
 *  - a lost or failed connection is retried after 50 ms, doubling up to 2 s;
 *    a successful connect resets the delay;
 *  - after each connect the client first sends one Subscribe with all its
 *    topics, then reports on_state(true); on_state(false) follows only a
 *    reported true. The first connect happens inside ipc_client_new, so its
 *    on_state(true) is deferred to the loop (the caller does not even hold
 *    the client pointer yet);
 *  - user callbacks may free the client: `depth` counts client callbacks on
 *    the stack and the memory is released only when it returns to zero.
 */
#include "ipc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"

#define CLIENT_BACKOFF_MIN_MS 50
#define CLIENT_BACKOFF_MAX_MS 2000
#define CLIENT_SUBSCRIBE_TIMEOUT_MS 5000
#define CLIENT_BUCKETS_MIN 16

typedef struct pending {
    ipc_client_t *cl;
    uint64_t id; /* 0: refused while disconnected, waiting to be told */
    ipc_reply_cb cb;
    void *arg;
    struct event *ev; /* the timeout, or the deferred refusal */
    struct pending *hnext;      /* hash chain, in-flight requests */
    struct pending *prev, *next; /* refused list */
} pending_t;

struct ipc_client {
    struct event_base *base;
    char *path;
    char *name;
    uint32_t max_frame;
    ipc_push_cb on_push;
    ipc_state_cb on_state;
    void *arg;

    ipc_conn_t *conn; /* NULL while disconnected */
    bool up_reported; /* on_state(true) was delivered for this connection */
    struct event *reconnect_timer;
    struct event *notify_ev; /* deferred on_state(true) after the first connect */
    int backoff_ms;
    bool fail_logged;

    char **topics;
    size_t n_topics;

    uint64_t next_id;
    pending_t **buckets; /* in-flight requests by id; power-of-two size */
    size_t n_buckets;
    size_t n_inflight;
    pending_t *refused;

    int depth;
    bool freeing;
    bool free_pending;
};

/* ------------------------------------------------------- pending table */

static size_t bucket_of(const ipc_client_t *cl, uint64_t id)
{
    return (size_t)(id & (cl->n_buckets - 1));
}

/* Double the table when it gets crowded; staying small is not an error. */
static void table_grow(ipc_client_t *cl)
{
    size_t n = cl->n_buckets * 2;
    pending_t **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < cl->n_buckets; i++) {
        pending_t *p = cl->buckets[i];
        while (p) {
            pending_t *next = p->hnext;
            size_t j = (size_t)(p->id & (n - 1));
            p->hnext = b[j];
            b[j] = p;
            p = next;
        }
    }
    free(cl->buckets);
    cl->buckets = b;
    cl->n_buckets = n;
}

static void table_insert(ipc_client_t *cl, pending_t *p)
{
    if (cl->n_inflight >= cl->n_buckets * 2)
        table_grow(cl);
    size_t i = bucket_of(cl, p->id);
    p->hnext = cl->buckets[i];
    cl->buckets[i] = p;
    cl->n_inflight++;
}

static pending_t *table_remove(ipc_client_t *cl, uint64_t id)
{
    for (pending_t **pp = &cl->buckets[bucket_of(cl, id)]; *pp; pp = &(*pp)->hnext) {
        if ((*pp)->id == id) {
            pending_t *p = *pp;
            *pp = p->hnext;
            p->hnext = NULL;
            cl->n_inflight--;
            return p;
        }
    }
    return NULL;
}

static pending_t *table_take_any(ipc_client_t *cl)
{
    for (size_t i = 0; i < cl->n_buckets; i++)
        if (cl->buckets[i])
            return table_remove(cl, cl->buckets[i]->id);
    return NULL;
}

static void refused_unlink(ipc_client_t *cl, pending_t *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        cl->refused = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

/* Deliver one final status for a request already taken out of every list. */
static void pending_finish(pending_t *p, int status, Lodestar__Envelope *reply)
{
    ipc_reply_cb cb = p->cb;
    void *arg = p->arg;
    event_free(p->ev);
    free(p);
    cb(status, reply, arg);
}

/* Fail every in-flight request. Callbacks may add requests (those are
 * refused, since the connection is gone) or free the client (deferred). */
static void fail_inflight(ipc_client_t *cl, int status)
{
    pending_t *p;
    while ((p = table_take_any(cl)))
        pending_finish(p, status, NULL);
}

static void fail_refused(ipc_client_t *cl)
{
    while (cl->refused) {
        pending_t *p = cl->refused;
        refused_unlink(cl, p);
        pending_finish(p, -ENOTCONN, NULL);
    }
}

/* ------------------------------------------------- lifetime and re-entry */

static void client_destroy(ipc_client_t *cl)
{
    if (cl->conn)
        ipc_conn_free(cl->conn);
    if (cl->reconnect_timer)
        event_free(cl->reconnect_timer);
    if (cl->notify_ev)
        event_free(cl->notify_ev);
    for (size_t i = 0; i < cl->n_topics; i++)
        free(cl->topics[i]);
    free(cl->topics);
    free(cl->buckets);
    free(cl->path);
    free(cl->name);
    free(cl);
}

static void cl_enter(ipc_client_t *cl)
{
    cl->depth++;
}

static void cl_leave(ipc_client_t *cl)
{
    if (--cl->depth == 0 && cl->free_pending)
        client_destroy(cl);
}

/* ------------------------------------------------------------- requests */

static void pending_ev_cb(evutil_socket_t fd, short what, void *arg)
{
    pending_t *p = arg;
    ipc_client_t *cl = p->cl;
    cl_enter(cl);
    if (p->id == 0) {
        refused_unlink(cl, p);
        pending_finish(p, -ENOTCONN, NULL);
    } else {
        log_debug("ipc: %s: request %llu timed out", cl->name, (unsigned long long)p->id);
        table_remove(cl, p->id);
        pending_finish(p, -ETIMEDOUT, NULL);
    }
    cl_leave(cl);
}

int ipc_client_request(ipc_client_t *cl, const Lodestar__Envelope *req, int timeout_ms, ipc_reply_cb cb,
                       void *arg)
{
    if (!cl || !req || !cb || cl->freeing)
        return -1;
    pending_t *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->cl = cl;
    p->cb = cb;
    p->arg = arg;
    p->ev = evtimer_new(cl->base, pending_ev_cb, p);
    if (!p->ev) {
        free(p);
        return -1;
    }
    if (!cl->conn) {
        static const struct timeval now = {0, 0};
        if (evtimer_add(p->ev, &now) < 0) {
            event_free(p->ev);
            free(p);
            return -1;
        }
        p->next = cl->refused;
        if (cl->refused)
            cl->refused->prev = p;
        cl->refused = p;
        return 0;
    }
    p->id = cl->next_id++;
    if (ipc_conn_send(cl->conn, IPC_KIND_REQUEST, p->id, req) < 0) {
        event_free(p->ev);
        free(p);
        return -1;
    }
    if (timeout_ms > 0) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        evtimer_add(p->ev, &tv);
    }
    table_insert(cl, p);
    return 0;
}

/* ------------------------------------------------------- subscriptions */

static void subscribe_reply_cb(int status, Lodestar__Envelope *reply, void *arg)
{
    ipc_client_t *cl = arg;
    if (status == -ECONNRESET || status == -ENOTCONN)
        return; /* re-sent after the next connect */
    if (status < 0)
        log_warn("ipc: %s: subscription to %s unanswered: %s", cl->name, cl->path, strerror(-status));
    else if (reply->body_case == LODESTAR__ENVELOPE__BODY_ERROR)
        log_warn("ipc: %s: subscription refused by %s: %s", cl->name, cl->path, reply->error->message);
    else if (reply->body_case != LODESTAR__ENVELOPE__BODY_SUBSCRIBE_ACK)
        log_warn("ipc: %s: subscription answered with %s instead of subscribe_ack", cl->name,
                 ipc_type_name(reply->body_case));
}

static void send_subscribe(ipc_client_t *cl, char **topics, size_t n)
{
    Lodestar__Subscribe sub = LODESTAR__SUBSCRIBE__INIT;
    sub.n_topics = n;
    sub.topics = topics;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_SUBSCRIBE;
    env.subscribe = &sub;
    if (ipc_client_request(cl, &env, CLIENT_SUBSCRIBE_TIMEOUT_MS, subscribe_reply_cb, cl) < 0)
        log_warn("ipc: %s: cannot send a subscription for %zu topic(s)", cl->name, n);
}

int ipc_client_subscribe(ipc_client_t *cl, const char *topic)
{
    if (!cl || !topic || !*topic || cl->freeing)
        return -1;
    for (size_t i = 0; i < cl->n_topics; i++)
        if (strcmp(cl->topics[i], topic) == 0)
            return 0;
    char **t = realloc(cl->topics, (cl->n_topics + 1) * sizeof *t);
    if (!t)
        return -1;
    cl->topics = t;
    if (!(t[cl->n_topics] = strdup(topic)))
        return -1;
    cl->n_topics++;
    if (cl->conn)
        send_subscribe(cl, &t[cl->n_topics - 1], 1);
    return 0;
}

/* ----------------------------------------------------------- connection */

static void client_on_frame(ipc_conn_t *conn, const ipc_header_t *h, Lodestar__Envelope *env, void *arg)
{
    ipc_client_t *cl = arg;
    cl_enter(cl);
    if (h->kind == IPC_KIND_RESPONSE) {
        pending_t *p = table_remove(cl, h->request_id);
        if (p)
            pending_finish(p, 0, env);
        else
            log_debug("ipc: %s: response to unknown or expired request %llu (%s) ignored", cl->name,
                      (unsigned long long)h->request_id, ipc_type_name(h->type));
    } else if (h->kind == IPC_KIND_PUSH) {
        if (cl->on_push)
            cl->on_push(cl, env, cl->arg);
    } else {
        Lodestar__Error e = LODESTAR__ERROR__INIT;
        e.code = -ENOSYS;
        e.message = "this peer is a client and serves no requests";
        Lodestar__Envelope out = LODESTAR__ENVELOPE__INIT;
        out.body_case = LODESTAR__ENVELOPE__BODY_ERROR;
        out.error = &e;
        ipc_conn_send(conn, IPC_KIND_RESPONSE, h->request_id, &out);
    }
    cl_leave(cl);
}

static void schedule_reconnect(ipc_client_t *cl)
{
    struct timeval tv = {cl->backoff_ms / 1000, (cl->backoff_ms % 1000) * 1000};
    evtimer_add(cl->reconnect_timer, &tv);
    cl->backoff_ms *= 2;
    if (cl->backoff_ms > CLIENT_BACKOFF_MAX_MS)
        cl->backoff_ms = CLIENT_BACKOFF_MAX_MS;
}

static void client_on_close(ipc_conn_t *conn, const char *reason, void *arg)
{
    ipc_client_t *cl = arg;
    cl_enter(cl);
    cl->conn = NULL;
    log_warn("ipc: %s: connection to %s lost: %s; reconnecting", cl->name, cl->path, reason);
    bool was_up = cl->up_reported;
    cl->up_reported = false;
    fail_inflight(cl, -ECONNRESET);
    if (was_up && cl->on_state && !cl->freeing)
        cl->on_state(cl, false, cl->arg);
    if (!cl->freeing && !cl->conn)
        schedule_reconnect(cl);
    cl_leave(cl);
}

/* One connect attempt. On success the subscriptions go out first; then
 * on_state(true) is reported now (report_now) or from the loop. */
static void client_try_connect(ipc_client_t *cl, bool report_now)
{
    int fd = ipc_connect_unix(cl->path);
    if (fd < 0) {
        if (!cl->fail_logged)
            log_info("ipc: %s: cannot connect to %s: %s; retrying", cl->name, cl->path, strerror(-fd));
        else if (cl->backoff_ms == CLIENT_BACKOFF_MAX_MS)
            log_debug("ipc: %s: still cannot connect to %s: %s", cl->name, cl->path, strerror(-fd));
        cl->fail_logged = true;
        schedule_reconnect(cl);
        return;
    }
    cl->conn = ipc_conn_new(cl->base, fd, cl->name, cl->max_frame, client_on_frame, client_on_close, cl);
    if (!cl->conn) {
        schedule_reconnect(cl);
        return;
    }
    /* replies and pushes are copied by whoever keeps them */
    ipc_conn_use_frame_arena(cl->conn);
    cl->backoff_ms = CLIENT_BACKOFF_MIN_MS;
    cl->fail_logged = false;
    log_info("ipc: %s: connected to %s", cl->name, cl->path);
    if (cl->n_topics)
        send_subscribe(cl, cl->topics, cl->n_topics);
    if (report_now) {
        cl->up_reported = true;
        if (cl->on_state)
            cl->on_state(cl, true, cl->arg);
    } else {
        static const struct timeval now = {0, 0};
        evtimer_add(cl->notify_ev, &now);
    }
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    ipc_client_t *cl = arg;
    cl_enter(cl);
    if (!cl->conn && !cl->freeing)
        client_try_connect(cl, true);
    cl_leave(cl);
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    ipc_client_t *cl = arg;
    cl_enter(cl);
    if (cl->conn && !cl->up_reported && !cl->freeing) {
        cl->up_reported = true;
        if (cl->on_state)
            cl->on_state(cl, true, cl->arg);
    }
    cl_leave(cl);
}

ipc_client_t *ipc_client_new(struct event_base *base, const char *path, const char *name, uint32_t max_frame,
                             ipc_push_cb on_push, ipc_state_cb on_state, void *arg)
{
    if (!base || !path || !*path)
        return NULL;
    ipc_client_t *cl = calloc(1, sizeof *cl);
    if (!cl)
        goto oom;
    cl->base = base;
    cl->path = strdup(path);
    cl->name = strdup(name && *name ? name : "ipc client");
    cl->max_frame = max_frame ? max_frame : IPC_DEFAULT_MAX_FRAME;
    cl->on_push = on_push;
    cl->on_state = on_state;
    cl->arg = arg;
    cl->backoff_ms = CLIENT_BACKOFF_MIN_MS;
    cl->next_id = 1;
    cl->n_buckets = CLIENT_BUCKETS_MIN;
    cl->buckets = calloc(cl->n_buckets, sizeof *cl->buckets);
    cl->reconnect_timer = evtimer_new(base, reconnect_cb, cl);
    cl->notify_ev = evtimer_new(base, notify_cb, cl);
    if (!cl->path || !cl->name || !cl->buckets || !cl->reconnect_timer || !cl->notify_ev)
        goto oom;
    client_try_connect(cl, false);
    return cl;

oom:
    log_error("ipc: %s: out of memory creating a client for %s", name ? name : "ipc client", path);
    if (cl)
        client_destroy(cl);
    return NULL;
}

bool ipc_client_connected(const ipc_client_t *cl)
{
    return cl->conn != NULL;
}

void ipc_client_free(ipc_client_t *cl)
{
    if (!cl || cl->freeing)
        return;
    cl->freeing = true;
    cl_enter(cl);
    if (cl->conn) {
        ipc_conn_free(cl->conn);
        cl->conn = NULL;
    }
    evtimer_del(cl->reconnect_timer);
    evtimer_del(cl->notify_ev);
    fail_inflight(cl, -ECONNRESET);
    fail_refused(cl);
    cl->free_pending = true;
    cl_leave(cl);
}

/*
 * server.c: accepts IPC connections on a listening Unix socket and routes
 * their requests.
 *
 * Owns the listener (not the listening fd: that belongs to whoever created
 * it, usually the supervisor, so it is never closed here), the set of
 * accepted connections and each connection's subscribed topics. Rules:
 *  - requests go to on_request, except Subscribe, which the server answers
 *    itself with a SubscribeAck listing all the connection's topics;
 *  - responses and pushes arriving at a server are ignored (logged at debug);
 *  - a connection leaves the set exactly once, whichever way it closed
 *    (the conn free hook), and on_peer(false) is called then;
 *  - a push to a connection that already has more than 4 * max_frame bytes
 *    queued drops that connection as a slow consumer (logged), rather than
 *    letting one stuck reader grow our memory without bound;
 *  - accept errors (EMFILE, ENFILE, ...) pause accepting for a moment
 *    instead of spinning on a listener that stays readable.
 */
#include "ipc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "log.h"

/* Pause after an accept error before accepting again. */
#define SERVER_ACCEPT_RETRY_MS 100

typedef struct server_conn {
    ipc_server_t *srv;
    ipc_conn_t *conn;
    char **topics;
    size_t n_topics;
    bool doomed; /* marked as a slow consumer during a publish */
    struct server_conn *prev, *next;
} server_conn_t;

struct ipc_server {
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *retry_timer;
    char *name;
    uint32_t max_frame;
    ipc_request_cb on_request;
    ipc_peer_cb on_peer;
    void *arg;
    server_conn_t *conns;
    size_t n_conns;
    unsigned long long accepted;
    bool accepting;
};

static void sc_unlink(server_conn_t *sc)
{
    ipc_server_t *s = sc->srv;
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        s->conns = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    sc->prev = sc->next = NULL;
    s->n_conns--;
}

static void sc_free(server_conn_t *sc)
{
    for (size_t i = 0; i < sc->n_topics; i++)
        free(sc->topics[i]);
    free(sc->topics);
    free(sc);
}

/* The connection is being released (any path): forget it. */
static void server_conn_gone(ipc_conn_t *conn, void *arg)
{
    server_conn_t *sc = arg;
    ipc_server_t *s = sc->srv;
    sc_unlink(sc);
    if (s->on_peer)
        s->on_peer(s, conn, false, s->arg);
    sc_free(sc);
}

/* Close a connection on the server's initiative (slow consumer, server
 * shutdown): unlinked now, even if the conn itself frees later because one
 * of its callbacks is on the stack. */
static void server_conn_drop(server_conn_t *sc)
{
    ipc_server_t *s = sc->srv;
    ipc_conn_t *conn = sc->conn;
    ipc_conn_set_free_hook(conn, NULL, NULL);
    sc_unlink(sc);
    if (s->on_peer)
        s->on_peer(s, conn, false, s->arg);
    ipc_conn_free(conn);
    sc_free(sc);
}

static bool sc_has_topic(const server_conn_t *sc, const char *topic)
{
    for (size_t i = 0; i < sc->n_topics; i++)
        if (strcmp(sc->topics[i], topic) == 0)
            return true;
    return false;
}

static int sc_add_topic(server_conn_t *sc, const char *topic)
{
    if (!*topic || sc_has_topic(sc, topic))
        return 0;
    char **t = realloc(sc->topics, (sc->n_topics + 1) * sizeof *t);
    if (!t)
        return -ENOMEM;
    sc->topics = t;
    if (!(t[sc->n_topics] = strdup(topic)))
        return -ENOMEM;
    sc->n_topics++;
    return 0;
}

static void server_handle_subscribe(server_conn_t *sc, uint64_t request_id, const Lodestar__Subscribe *sub)
{
    for (size_t i = 0; sub && i < sub->n_topics; i++) {
        if (sc_add_topic(sc, sub->topics[i]) < 0) {
            ipc_server_reply_error(sc->conn, request_id, -ENOMEM, "out of memory subscribing to topic '%s'",
                                   sub->topics[i]);
            return;
        }
    }
    Lodestar__SubscribeAck ack = LODESTAR__SUBSCRIBE_ACK__INIT;
    ack.n_topics = sc->n_topics;
    ack.topics = sc->topics;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_SUBSCRIBE_ACK;
    env.subscribe_ack = &ack;
    ipc_server_reply(sc->conn, request_id, &env);
    log_debug("ipc: %s: subscribed to %zu topic(s)", ipc_conn_name(sc->conn), sc->n_topics);
}

static void server_on_frame(ipc_conn_t *conn, const ipc_header_t *h, Lodestar__Envelope *env, void *arg)
{
    server_conn_t *sc = arg;
    ipc_server_t *s = sc->srv;
    if (h->kind != IPC_KIND_REQUEST) {
        log_debug("ipc: %s: ignoring a %s frame of type %s sent to a server", ipc_conn_name(conn),
                  h->kind == IPC_KIND_RESPONSE ? "response" : "push", ipc_type_name(h->type));
        return;
    }
    if (env->body_case == LODESTAR__ENVELOPE__BODY_SUBSCRIBE) {
        server_handle_subscribe(sc, h->request_id, env->subscribe);
        return;
    }
    if (!s->on_request) {
        ipc_server_reply_error(conn, h->request_id, -ENOSYS, "%s serves no %s requests", s->name,
                               ipc_type_name(env->body_case));
        return;
    }
    /* Nothing of sc or s is touched after this: the handler may free either. */
    s->on_request(s, conn, h->request_id, env, s->arg);
}

static void server_on_close(ipc_conn_t *conn, const char *reason, void *arg)
{
    log_debug("ipc: %s: disconnected: %s", ipc_conn_name(conn), reason);
}

static void server_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int socklen,
                             void *arg)
{
    ipc_server_t *s = arg;
    char name[160];
    struct ucred cred;
    socklen_t clen = sizeof cred;
    s->accepted++;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 && cred.pid > 0)
        snprintf(name, sizeof name, "%s peer #%llu (pid %d)", s->name, s->accepted, (int)cred.pid);
    else
        snprintf(name, sizeof name, "%s peer #%llu", s->name, s->accepted);

    server_conn_t *sc = calloc(1, sizeof *sc);
    if (!sc) {
        log_error("ipc: %s: out of memory accepting %s", s->name, name);
        close(fd);
        return;
    }
    sc->srv = s;
    sc->conn = ipc_conn_new(s->base, fd, name, s->max_frame, server_on_frame, server_on_close, sc);
    if (!sc->conn) {
        free(sc);
        return;
    }
    ipc_conn_set_free_hook(sc->conn, server_conn_gone, sc);
    sc->next = s->conns;
    if (s->conns)
        s->conns->prev = sc;
    s->conns = sc;
    s->n_conns++;
    log_debug("ipc: %s: connected", name);
    if (s->on_peer)
        s->on_peer(s, sc->conn, true, s->arg);
}

static void server_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    ipc_server_t *s = arg;
    if (s->accepting)
        evconnlistener_enable(s->listener);
}

static void server_accept_error_cb(struct evconnlistener *l, void *arg)
{
    ipc_server_t *s = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_warn("ipc: %s: accept failed: %s; pausing accepts for %d ms", s->name, strerror(err),
             SERVER_ACCEPT_RETRY_MS);
    evconnlistener_disable(l);
    struct timeval tv = {0, SERVER_ACCEPT_RETRY_MS * 1000};
    evtimer_add(s->retry_timer, &tv);
}

ipc_server_t *ipc_server_new(struct event_base *base, int listen_fd, const char *name, uint32_t max_frame,
                             ipc_request_cb on_request, ipc_peer_cb on_peer, void *arg)
{
    const char *label = name && *name ? name : "ipc server";
    ipc_server_t *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(label))) {
        log_error("ipc: %s: out of memory", label);
        free(s);
        return NULL;
    }
    s->base = base;
    s->max_frame = max_frame ? max_frame : IPC_DEFAULT_MAX_FRAME;
    s->on_request = on_request;
    s->on_peer = on_peer;
    s->arg = arg;
    /* The listener accepts until EAGAIN, so the fd must not block; an
     * inherited socket may not have been created that way. */
    if (evutil_make_socket_nonblocking(listen_fd) < 0) {
        log_error("ipc: %s: cannot make listening fd %d non-blocking: %s", label, listen_fd, strerror(errno));
        goto fail;
    }
    s->retry_timer = evtimer_new(base, server_retry_cb, s);
    /* No LEV_OPT_CLOSE_ON_FREE: the fd stays with its owner. Backlog 0: the
     * socket is already listening. */
    s->listener = evconnlistener_new(base, server_accept_cb, s, LEV_OPT_CLOSE_ON_EXEC, 0, listen_fd);
    if (!s->retry_timer || !s->listener) {
        log_error("ipc: %s: cannot watch listening fd %d: %s", label, listen_fd, strerror(errno));
        goto fail;
    }
    evconnlistener_set_error_cb(s->listener, server_accept_error_cb);
    s->accepting = true;
    return s;

fail:
    if (s->listener)
        evconnlistener_free(s->listener);
    if (s->retry_timer)
        event_free(s->retry_timer);
    free(s->name);
    free(s);
    return NULL;
}

int ipc_server_reply(ipc_conn_t *conn, uint64_t request_id, const Lodestar__Envelope *env)
{
    return ipc_conn_send(conn, IPC_KIND_RESPONSE, request_id, env);
}

int ipc_server_reply_error(ipc_conn_t *conn, uint64_t request_id, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Lodestar__Error e = LODESTAR__ERROR__INIT;
    e.code = code;
    e.message = msg;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_ERROR;
    env.error = &e;
    return ipc_conn_send(conn, IPC_KIND_RESPONSE, request_id, &env);
}

int ipc_server_publish(ipc_server_t *s, const char *topic, const Lodestar__Envelope *env)
{
    size_t limit = (size_t)s->max_frame * 4;
    int queued = 0;
    bool any_doomed = false;
    for (server_conn_t *sc = s->conns; sc; sc = sc->next) {
        if (!sc_has_topic(sc, topic))
            continue;
        size_t pending = ipc_conn_pending(sc->conn);
        if (pending > limit) {
            log_warn("ipc: %s: slow consumer, closing: %zu bytes queued exceed %zu while pushing '%s'",
                     ipc_conn_name(sc->conn), pending, limit, topic);
            sc->doomed = true;
            any_doomed = true;
            continue;
        }
        if (ipc_conn_send(sc->conn, IPC_KIND_PUSH, 0, env) == 0)
            queued++;
    }
    /* Dropping runs on_peer, which may change the list: rescan each time. */
    while (any_doomed) {
        any_doomed = false;
        for (server_conn_t *sc = s->conns; sc; sc = sc->next) {
            if (sc->doomed) {
                server_conn_drop(sc);
                any_doomed = true;
                break;
            }
        }
    }
    return queued;
}

size_t ipc_server_conn_count(const ipc_server_t *s)
{
    return s->n_conns;
}

void ipc_server_stop_accepting(ipc_server_t *s)
{
    if (!s->accepting)
        return;
    s->accepting = false;
    evconnlistener_disable(s->listener);
    evtimer_del(s->retry_timer);
}

void ipc_server_free(ipc_server_t *s)
{
    if (!s)
        return;
    ipc_server_stop_accepting(s);
    while (s->conns)
        server_conn_drop(s->conns);
    evconnlistener_free(s->listener);
    event_free(s->retry_timer);
    free(s->name);
    free(s);
}

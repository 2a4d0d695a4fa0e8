/*
 * worker.c: the shared worker body (see worker.h).
 */
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* A PingRequest waiting for its SELECT 1. conn becomes NULL when the asking
 * connection closes first, so the late answer is dropped, not sent to a
 * freed connection. */
typedef struct ping_ctx {
    worker_t *w;
    ipc_conn_t *conn;
    uint64_t request_id;
    struct timespec start;
    struct ping_ctx *next;
} ping_ctx_t;

static worker_t *worker_of(child_t *c) { return c->state; }

static void ping_unlink(worker_t *w, ping_ctx_t *pc)
{
    for (ping_ctx_t **pp = &w->pings; *pp; pp = &(*pp)->next)
        if (*pp == pc) {
            *pp = pc->next;
            return;
        }
}

static void on_ping_result(int status, PGresult *res, const char *err, void *arg)
{
    ping_ctx_t *pc = arg;
    worker_t *w = pc->w;
    ping_unlink(w, pc);
    if (pc->conn) {
        struct timespec end;
        clock_gettime(CLOCK_MONOTONIC, &end);
        uint64_t rtt = (uint64_t)((end.tv_sec - pc->start.tv_sec) * 1000000L +
                                  (end.tv_nsec - pc->start.tv_nsec) / 1000L);
        Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
        Lodestar__PingResponse pr = LODESTAR__PING_RESPONSE__INIT;
        char detail[512] = "";
        pr.role = (char *)w->child->role->name;
        pr.store_ok = status == 0;
        if (status == 0)
            pr.store_rtt_us = rtt;
        else
            snprintf(detail, sizeof detail, "store: %s", err ? err : strerror(-status));
        pr.detail = detail;
        env.body_case = LODESTAR__ENVELOPE__BODY_PING_RESPONSE;
        env.ping_response = &pr;
        ipc_server_reply(pc->conn, pc->request_id, &env);
    }
    free(pc);
}

static void on_request(ipc_server_t *s, ipc_conn_t *conn, uint64_t request_id, Lodestar__Envelope *req, void *arg)
{
    worker_t *w = arg;
    if (req->body_case == LODESTAR__ENVELOPE__BODY_PING_REQUEST) {
        ping_ctx_t *pc = calloc(1, sizeof *pc);
        pc->w = w;
        pc->conn = conn;
        pc->request_id = request_id;
        clock_gettime(CLOCK_MONOTONIC, &pc->start);
        pc->next = w->pings;
        w->pings = pc;
        if (store_query(w->store, "SELECT 1", 0, NULL, on_ping_result, pc) < 0) {
            ping_unlink(w, pc);
            free(pc);
            ipc_server_reply_error(conn, request_id, -ESHUTDOWN, "%s worker is stopping", w->child->role->name);
        }
        return;
    }
    if (w->domain->on_request) {
        w->domain->on_request(w, conn, request_id, req);
        return;
    }
    ipc_server_reply_error(conn, request_id, -EOPNOTSUPP, "%s worker does not handle %s requests",
                           w->child->role->name, ipc_type_name(req->body_case));
}

static void on_peer(ipc_server_t *s, ipc_conn_t *conn, bool connected, void *arg)
{
    worker_t *w = arg;
    if (w->domain->on_peer)
        w->domain->on_peer(w, conn, connected);
    if (connected)
        return;
    for (ping_ctx_t *pc = w->pings; pc; pc = pc->next)
        if (pc->conn == conn)
            pc->conn = NULL;
}

static void on_store_state(store_t *st, bool up, const char *why, void *arg)
{
    worker_t *w = arg;
    w->store_up = up;
    if (up) {
        w->store_why[0] = '\0';
        log_info("store up (schema version %d)", store_schema_version(st));
        if (!w->domain->ready || w->domain->ready(w))
            child_ready(w->child);
    } else {
        snprintf(w->store_why, sizeof w->store_why, "%s", why ? why : "unknown");
        log_warn("store down: %s", w->store_why);
    }
    if (w->domain->on_store_state)
        w->domain->on_store_state(w, up);
}

int worker_start(child_t *c, const worker_domain_t *domain)
{
    worker_t *w = calloc(1, sizeof *w);
    w->child = c;
    w->domain = domain;
    c->state = w;
    snprintf(w->store_why, sizeof w->store_why, "not connected yet");

    char name[64];
    snprintf(name, sizeof name, "ipc:%s", c->role->name);
    int fd = child_listen_fd(c, name);
    if (fd < 0) {
        log_error("no inherited IPC socket named '%s'; started outside the supervisor?", name);
        return -1;
    }
    w->server = ipc_server_new(c->base, fd, c->role->title, c->cfg->ipc.max_frame_bytes, on_request, on_peer, w);
    if (!w->server) {
        log_error("cannot serve IPC on the inherited socket '%s'", name);
        return -1;
    }

    char *dsn = cfg_store_dsn(c->cfg);
    store_options_t opt = {
        .dsn = dsn,
        .who = c->role->title,
        .connect_timeout_ms = c->cfg->store.connect_timeout_ms,
        .reconnect_backoff_max_ms = c->cfg->store.reconnect_backoff_max_ms,
        .query_timeout_ms = 30000,
    };
    w->store = store_new(c->base, &opt, on_store_state, w);
    free(dsn);
    if (!w->store) {
        log_error("cannot create the store connection");
        return -1;
    }
    if (domain->init && domain->init(w) < 0)
        return -1;
    return 0;
}

/* Runs after every write queued before the drain began has finished. */
static void on_drain_barrier(int status, PGresult *res, const char *err, void *arg)
{
    worker_t *w = arg;
    if (status < 0)
        log_warn("drain: store barrier failed (%s); pending writes may be lost", err ? err : strerror(-status));
    child_drained(w->child);
}

void worker_drain(child_t *c)
{
    worker_t *w = worker_of(c);
    if (!w) {
        child_drained(c);
        return;
    }
    if (w->server)
        ipc_server_stop_accepting(w->server);
    if (!w->store || store_query(w->store, "SELECT 1", 0, NULL, on_drain_barrier, w) < 0)
        child_drained(c);
}

void worker_stop(child_t *c)
{
    worker_t *w = worker_of(c);
    if (!w)
        return;
    if (w->domain->fini)
        w->domain->fini(w);
    if (w->server)
        ipc_server_free(w->server);
    w->server = NULL;
    /* store_free fails the pings still queued; their conns are gone. */
    for (ping_ctx_t *pc = w->pings; pc; pc = pc->next)
        pc->conn = NULL;
    if (w->store)
        store_free(w->store);
    free(w);
    c->state = NULL;
}

void worker_domain_ready(worker_t *w)
{
    if (w->store_up)
        child_ready(w->child);
}

bool worker_healthy(child_t *c, char *why, size_t whylen)
{
    worker_t *w = worker_of(c);
    if (w && !w->store_up) {
        snprintf(why, whylen, "store down: %s", w->store_why);
        return false;
    }
    return true;
}

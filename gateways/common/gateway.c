/*
 * gateway.c: see gateway.h. Owns the worker clients of one gateway process,
 * the health checks in flight over them, and the naming read replica: the
 * naming client's pushes and connection changes go straight to it
 * (naming_replica.h), so it asks for a snapshot on every connect; the
 * config client's go likewise to the config replica (config_replica.h),
 * which feeds the config watch registry (config_watch.h).
 *
 * A check keeps one slot per worker it asked; each slot's IPC reply fills
 * in its part, and the last one delivers the aggregate. When nothing could
 * be sent at all (no worker enabled, or every request refused at once) the
 * aggregate is delivered by a zero-delay timer, so callers never see their
 * callback run inside gw_check_workers.
 */
#include "gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config_replica.h"
#include "config_watch.h"
#include "log.h"
#include "naming_replica.h"

typedef struct gw_check gw_check_t;

typedef struct gw_slot {
    gw_check_t *chk;
    size_t idx;
} gw_slot_t;

struct gw_check {
    gw_t *gw;
    gw_health_cb cb;
    void *arg;
    size_t outstanding;
    gw_health_t h;
    gw_slot_t slots[GW_MAX_WORKERS];
    struct event *deliver; /* zero-delay delivery when nothing is outstanding */
    gw_check_t *prev, *next;
};

typedef struct gw_worker {
    const char *role; /* static string */
    ipc_client_t *cl;
} gw_worker_t;

struct gw {
    struct event_base *base;
    char role[64];
    int timeout_ms;         /* liveness checks */
    int request_timeout_ms; /* gw_request: ipc.request_timeout_ms */
    nr_t *replica;          /* fed by the naming client's pushes and state */
    cfr_t *config_replica;   /* fed by the config client's pushes and state */
    cwatch_t *config_watch; /* config long polls, woken by config_replica */
    gw_worker_t workers[GW_MAX_WORKERS];
    size_t n_workers;
    gw_check_t *checks;
    bool freeing;
};

static void check_unlink(gw_t *gw, gw_check_t *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else if (gw->checks == k)
        gw->checks = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
}

static void check_deliver(gw_check_t *k)
{
    gw_t *gw = k->gw;
    bool healthy = true;
    for (size_t i = 0; i < k->h.n_workers; i++)
        if (!k->h.workers[i].ok || !k->h.workers[i].store_ok)
            healthy = false;
    k->h.healthy = healthy;
    check_unlink(gw, k);
    if (k->deliver)
        event_free(k->deliver);
    if (!healthy) {
        for (size_t i = 0; i < k->h.n_workers; i++) {
            const gw_worker_status_t *w = &k->h.workers[i];
            if (!w->ok || !w->store_ok)
                log_debug("health: %s worker %s: %s", w->role, w->ok ? "store down" : "no answer", w->detail);
        }
    }
    k->cb(&k->h, k->arg);
    free(k);
}

static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
    check_deliver(arg);
}

static void on_ping_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    gw_slot_t *slot = arg;
    gw_check_t *k = slot->chk;
    gw_worker_status_t *w = &k->h.workers[slot->idx];
    if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_PING_RESPONSE) {
        const Lodestar__PingResponse *pr = reply->ping_response;
        w->ok = true;
        w->store_ok = pr->store_ok;
        w->store_rtt_us = pr->store_ok ? pr->store_rtt_us : 0;
        snprintf(w->detail, sizeof w->detail, "%s", pr->detail ? pr->detail : "");
    } else if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_ERROR) {
        snprintf(w->detail, sizeof w->detail, "%s",
                 reply->error->message && *reply->error->message ? reply->error->message : "error without message");
    } else if (status == 0) {
        snprintf(w->detail, sizeof w->detail, "unexpected %s reply", ipc_type_name(reply->body_case));
    } else if (status == -ETIMEDOUT) {
        snprintf(w->detail, sizeof w->detail, "timeout");
    } else if (status == -ENOTCONN) {
        snprintf(w->detail, sizeof w->detail, "not connected");
    } else if (status == -ECONNRESET) {
        snprintf(w->detail, sizeof w->detail, "%s", k->gw->freeing ? "gateway stopping" : "connection lost");
    } else {
        snprintf(w->detail, sizeof w->detail, "%s", strerror(-status));
    }
    if (--k->outstanding == 0)
        check_deliver(k);
}

int gw_check_workers(gw_t *gw, gw_health_cb cb, void *arg)
{
    if (gw->freeing)
        return -ESHUTDOWN;
    gw_check_t *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    k->gw = gw;
    k->cb = cb;
    k->arg = arg;
    k->h.n_workers = gw->n_workers;
    k->next = gw->checks;
    if (gw->checks)
        gw->checks->prev = k;
    gw->checks = k;

    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    Lodestar__PingRequest pr = LODESTAR__PING_REQUEST__INIT;
    pr.from = gw->role;
    env.body_case = LODESTAR__ENVELOPE__BODY_PING_REQUEST;
    env.ping_request = &pr;
    for (size_t i = 0; i < gw->n_workers; i++) {
        gw_worker_status_t *w = &k->h.workers[i];
        w->role = gw->workers[i].role;
        k->slots[i] = (gw_slot_t){.chk = k, .idx = i};
        k->outstanding++;
        if (ipc_client_request(gw->workers[i].cl, &env, gw->timeout_ms, on_ping_reply, &k->slots[i]) < 0) {
            k->outstanding--;
            snprintf(w->detail, sizeof w->detail, "request could not be queued");
        }
    }
    if (k->outstanding == 0) {
        k->deliver = evtimer_new(gw->base, on_deliver, k);
        if (!k->deliver) {
            check_unlink(gw, k);
            free(k);
            return -ENOMEM;
        }
        static const struct timeval now = {0, 0};
        evtimer_add(k->deliver, &now);
    }
    return 0;
}

bool gw_healthy(const gw_t *gw, char *why, size_t whylen)
{
    for (size_t i = 0; i < gw->n_workers; i++) {
        if (!ipc_client_connected(gw->workers[i].cl)) {
            snprintf(why, whylen, "%s worker not connected", gw->workers[i].role);
            return false;
        }
    }
    return true;
}

ipc_client_t *gw_worker(const gw_t *gw, const char *worker_role)
{
    for (size_t i = 0; i < gw->n_workers; i++)
        if (strcmp(gw->workers[i].role, worker_role) == 0)
            return gw->workers[i].cl;
    return NULL;
}

int gw_drain_bound_ms(const cfg_t *cfg)
{
    int total = cfg->supervisor.drain_timeout_ms;
    if (total <= 0)
        return 0;
    int reserve = total / 4 < 1000 ? total / 4 : 1000;
    return total - reserve;
}

int gw_request(gw_t *gw, const char *worker_role, const Lodestar__Envelope *req, ipc_reply_cb cb, void *arg)
{
    if (gw->freeing)
        return -ESHUTDOWN;
    ipc_client_t *cl = gw_worker(gw, worker_role);
    if (!cl)
        return -ENOENT;
    if (ipc_client_request(cl, req, gw->request_timeout_ms, cb, arg) < 0)
        return -EIO;
    return 0;
}

int gw_request_timeout_ms(const gw_t *gw) { return gw->request_timeout_ms; }

struct event_base *gw_base(const gw_t *gw) { return gw->base; }

struct nr *gw_replica(const gw_t *gw) { return gw->replica; }

struct cfr *gw_config_replica(const gw_t *gw) { return gw->config_replica; }

struct cwatch *gw_config_watch(const gw_t *gw) { return gw->config_watch; }

/* The config client's callbacks: everything goes to the config replica. */
static void on_config_push(ipc_client_t *cl, Lodestar__Envelope *push, void *arg)
{
    gw_t *gw = arg;
    if (gw->config_replica)
        cfr_on_push(gw->config_replica, push);
}

static void on_config_state(ipc_client_t *cl, bool connected, void *arg)
{
    gw_t *gw = arg;
    if (gw->config_replica)
        cfr_on_state(gw->config_replica, connected);
}

/* The naming client's callbacks: everything goes to the replica. */
static void on_naming_push(ipc_client_t *cl, Lodestar__Envelope *push, void *arg)
{
    gw_t *gw = arg;
    if (gw->replica)
        nr_on_push(gw->replica, push);
}

static void on_naming_state(ipc_client_t *cl, bool connected, void *arg)
{
    gw_t *gw = arg;
    if (gw->replica)
        nr_on_state(gw->replica, connected);
}

gw_t *gw_new(struct event_base *base, const cfg_t *cfg, const char *role, char *err, size_t errlen)
{
    gw_t *gw = calloc(1, sizeof *gw);
    if (!gw) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    gw->base = base;
    snprintf(gw->role, sizeof gw->role, "%s", role);
    gw->timeout_ms = cfg->ipc.request_timeout_ms;
    if (gw->timeout_ms <= 0 || gw->timeout_ms > GW_LIVENESS_TIMEOUT_MS)
        gw->timeout_ms = GW_LIVENESS_TIMEOUT_MS;
    gw->request_timeout_ms = cfg->ipc.request_timeout_ms > 0 ? cfg->ipc.request_timeout_ms : 5000;

    const struct {
        const char *role;
        const char *title;
        bool enabled;
    } wanted[GW_MAX_WORKERS] = {
        {"naming", "naming worker", cfg->naming.enabled},
        {"config", "config worker", cfg->config.enabled},
        {"health", "health worker", cfg->health.enabled},
    };
    for (size_t i = 0; i < GW_MAX_WORKERS; i++) {
        if (!wanted[i].enabled)
            continue;
        char *path = cfg_ipc_path(cfg, wanted[i].role);
        if (!path) {
            snprintf(err, errlen, "%s worker: out of memory for its socket path", wanted[i].role);
            gw_free(gw);
            return NULL;
        }
        bool naming = strcmp(wanted[i].role, "naming") == 0;
        bool config = strcmp(wanted[i].role, "config") == 0;
        ipc_client_t *cl = ipc_client_new(base, path, wanted[i].title, cfg->ipc.max_frame_bytes,
                                          naming ? on_naming_push : config ? on_config_push : NULL,
                                          naming ? on_naming_state : config ? on_config_state : NULL, gw);
        if (!cl) {
            snprintf(err, errlen, "%s worker: cannot create an IPC client for %s", wanted[i].role, path);
            free(path);
            gw_free(gw);
            return NULL;
        }
        free(path);
        gw->workers[gw->n_workers++] = (gw_worker_t){.role = wanted[i].role, .cl = cl};
        if (naming) {
            gw->replica = nr_new(base, cl, gw->request_timeout_ms);
            if (!gw->replica) {
                snprintf(err, errlen, "naming worker: cannot set up the naming read replica");
                gw_free(gw);
                return NULL;
            }
        }
        if (config) {
            gw->config_replica = cfr_new(base, cl, gw->request_timeout_ms);
            gw->config_watch = gw->config_replica ? cwatch_new(base, gw->config_replica) : NULL;
            if (!gw->config_watch) {
                snprintf(err, errlen, "config worker: cannot set up the config read replica and watch registry");
                gw_free(gw);
                return NULL;
            }
        }
    }
    return gw;
}

void gw_free(gw_t *gw)
{
    if (!gw)
        return;
    gw->freeing = true;
    /* Pending requests fail with -ECONNRESET: their checks complete here. */
    for (size_t i = 0; i < gw->n_workers; i++) {
        ipc_client_free(gw->workers[i].cl);
        gw->workers[i].cl = NULL;
    }
    /* Checks waiting only for their zero-delay delivery. */
    while (gw->checks)
        check_deliver(gw->checks);
    /* After the clients: a snapshot request failed above found it alive. */
    nr_free(gw->replica);
    gw->replica = NULL;
    /* parked config watchers are answered (flushed) before the replica goes */
    cwatch_free(gw->config_watch);
    gw->config_watch = NULL;
    cfr_free(gw->config_replica);
    gw->config_replica = NULL;
    free(gw);
}

int gw_each_listener(child_t *c, const char *protocol, gw_listener_fn fn, void *arg)
{
    int n = 0;
    for (size_t i = 0; i < c->cfg->n_listeners; i++) {
        const cfg_listener_t *l = &c->cfg->listeners[i];
        if (!l->enabled || strcmp(l->protocol, protocol) != 0)
            continue;
        int fd = child_listen_fd(c, l->name);
        if (fd < 0) {
            log_error("listener %s (%s:%d): no inherited socket of that name (LODESTAR_LISTEN_FDS)", l->name,
                      l->address, l->port);
            return -1;
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            log_error("listener %s: fd %d: cannot make it non-blocking: %s", l->name, fd, strerror(errno));
            return -1;
        }
        char err[512] = "";
        if (fn(l, fd, arg, err, sizeof err) < 0) {
            log_error("listener %s (%s:%d): %s", l->name, l->address, l->port, err);
            return -1;
        }
        log_info("listener %s: %s on %s:%d", l->name, protocol, l->address, l->port);
        n++;
    }
    if (n == 0) {
        log_error("no enabled listener has protocol %s: nothing to serve", protocol);
        return -1;
    }
    return n;
}

/*
 * polaris_grpc.c: the polaris-grpc gateway role. One gRPC server serves
 * every enabled listener whose protocol is polaris-grpc (by default 8091
 * for naming and 8093 for config), on the listening sockets the supervisor
 * passed in: v1.PolarisGRPC (naming_api.c, heartbeat_api.c),
 * v1.PolarisHeartbeatGRPC (heartbeat_api.c), and grpc.health.v1.Health for
 * the whole server ("") and the Polaris services.
 *
 * Drain (SIGTERM/SIGHUP): health watchers are told NOT_SERVING and ended;
 * Discover streams are ended with UNAVAILABLE so SDKs reconnect (to the
 * next gateway on the same supervisor-held socket; the gRPC server does
 * this, as they run on its completion-queue thread); BatchHeartbeat streams
 * stop reading and end once their beats are answered; then the gRPC server
 * stops accepting, lets running calls finish, and cancels what is left
 * shortly before the child's own drain bound, so the process still exits
 * through a clean teardown.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/roles.h"
#include "log.h"
#include "pg.h"

static const char *const pg_health_services[] = {
    "v1.PolarisGRPC",
    "v1.PolarisConfigGRPC",
    "v1.PolarisHeartbeatGRPC",
    NULL,
};

static int pg_serve_listener(const cfg_listener_t *l, int fd, void *arg, char *err, size_t errlen)
{
    pg_state_t *st = arg;
    return gs_server_add_listener(st->srv, fd, l->name, err, errlen);
}

static int pg_init(child_t *c)
{
    pg_state_t *st = calloc(1, sizeof *st);
    if (!st) {
        log_error("out of memory");
        return -1;
    }
    st->c = c;
    c->state = st;
    char err[512] = "";

    st->gw = gw_new(c->base, c->cfg, PG_ROLE, err, sizeof err);
    if (!st->gw) {
        log_error("cannot set up the worker clients: %s", err);
        return -1;
    }
    st->srv = gs_server_new(c->base, &(gs_options_t){.name = PG_ROLE}, err, sizeof err);
    if (!st->srv) {
        log_error("cannot create the gRPC server: %s", err);
        return -1;
    }
    st->health = (gw_grpc_health_t){.gw = st->gw, .services = pg_health_services};
    if (gw_grpc_health_register(st->srv, &st->health, err, sizeof err) < 0) {
        log_error("cannot register the health service: %s", err);
        return -1;
    }
    if (pg_naming_register(st, err, sizeof err) < 0 || pg_heartbeat_register(st, err, sizeof err) < 0 ||
        pg_config_register(st, err, sizeof err) < 0) {
        log_error("cannot register the Polaris services: %s", err);
        return -1;
    }

    if (gw_each_listener(c, PG_ROLE, pg_serve_listener, st) < 0)
        return -1;
    if (gs_server_start(st->srv, err, sizeof err) < 0) {
        log_error("cannot start the gRPC server: %s", err);
        return -1;
    }
    child_ready(c);
    return 0;
}

static void pg_on_drained(gs_server_t *s, bool clean, void *arg)
{
    child_t *c = arg;
    if (!clean)
        log_warn("drain: calls still running at the bound were cancelled");
    child_drained(c);
}

static void pg_drain(child_t *c)
{
    pg_state_t *st = c->state;
    st->draining = true;
    gw_grpc_health_shutdown(&st->health);
    for (pg_stream_t *ps = st->streams, *next; ps; ps = next) {
        next = ps->next; /* a drain may end the stream at once */
        ps->drain(ps);
    }
    gs_server_drain(st->srv, gw_drain_bound_ms(c->cfg), pg_on_drained, c);
}

static void pg_fini(child_t *c)
{
    pg_state_t *st = c->state;
    if (!st)
        return;
    /* Worker clients first: checks, writes and beats still waiting answer
     * their calls, which stay valid until answered; beats never sent are
     * answered next; then the server (handlers that still run during its
     * shutdown see st->gw NULL); the health watch state last. */
    gs_server_lock_handlers(st->srv); /* Discover handlers read st->gw on the gRPC thread */
    gw_free(st->gw);
    st->gw = NULL;
    gs_server_unlock_handlers(st->srv);
    pg_heartbeat_free(st);
    gs_server_free(st->srv);
    gw_grpc_health_free(&st->health);
    free(st);
    c->state = NULL;
}

static bool pg_healthy(child_t *c, char *why, size_t whylen)
{
    pg_state_t *st = c->state;
    if (!st || !st->gw) {
        snprintf(why, whylen, "not initialised");
        return false;
    }
    return gw_healthy(st->gw, why, whylen);
}

const child_role_t polaris_grpc_role = {
    .name = PG_ROLE,
    .title = "polaris-grpc gateway",
    .init = pg_init,
    .drain = pg_drain,
    .fini = pg_fini,
    .healthy = pg_healthy,
};

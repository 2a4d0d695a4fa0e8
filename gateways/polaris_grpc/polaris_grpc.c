/*
 * polaris_grpc.c: the polaris-grpc gateway role. One gRPC server serves
 * every enabled listener whose protocol is polaris-grpc (by default 8091
 * for naming and 8093 for config), on the listening sockets the supervisor
 * passed in. For now it serves grpc.health.v1.Health/Check for the whole
 * server ("") and for the Polaris services it will carry.
 *
 * Drain (SIGTERM/SIGHUP): the gRPC server stops accepting, lets running
 * calls finish, and cancels what is left shortly before the child's own
 * drain bound, so the process still exits through a clean teardown.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"
#include "common/gateway.h"
#include "common/grpc_health.h"
#include "common/grpc_server.h"
#include "common/roles.h"
#include "log.h"

#define PG_ROLE "polaris-grpc"

static const char *const pg_health_services[] = {
    "v1.PolarisGRPC",
    "v1.PolarisConfigGRPC",
    "v1.PolarisHeartbeatGRPC",
    NULL,
};

typedef struct pg_state {
    child_t *c;
    gw_t *gw;
    gs_server_t *srv;
    gw_grpc_health_t health;
} pg_state_t;

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
    gs_server_drain(st->srv, gw_drain_bound_ms(c->cfg), pg_on_drained, c);
}

static void pg_fini(child_t *c)
{
    pg_state_t *st = c->state;
    if (!st)
        return;
    /* Worker clients first: checks still waiting answer their calls, which
     * stay valid until answered; then the server. */
    gw_free(st->gw);
    gs_server_free(st->srv);
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

/*
 * health_worker.c: the health domain worker. It currently serves the shared
 * worker body (IPC, store, liveness); the health domain's model and requests
 * plug in through the worker_domain_t hooks below.
 */
#include "common/worker.h"

static const worker_domain_t health_domain = {0};

static int health_init(child_t *c) { return worker_start(c, &health_domain); }

const child_role_t health_role = {
    .name = "health",
    .title = "health worker",
    .init = health_init,
    .drain = worker_drain,
    .fini = worker_stop,
    .healthy = worker_healthy,
};

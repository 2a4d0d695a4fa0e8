/*
 * config_worker.c: the config domain worker. It currently serves the shared
 * worker body (IPC, store, liveness); the config domain's model and requests
 * plug in through the worker_domain_t hooks below.
 */
#include "common/worker.h"

static const worker_domain_t config_domain = {0};

static int config_init(child_t *c) { return worker_start(c, &config_domain); }

const child_role_t config_role = {
    .name = "config",
    .title = "config worker",
    .init = config_init,
    .drain = worker_drain,
    .fini = worker_stop,
    .healthy = worker_healthy,
};

/*
 * naming_worker.c: the naming domain worker. It currently serves the shared
 * worker body (IPC, store, liveness); the naming domain's model and requests
 * plug in through the worker_domain_t hooks below.
 */
#include "common/worker.h"

static const worker_domain_t naming_domain = {0};

static int naming_init(child_t *c) { return worker_start(c, &naming_domain); }

const child_role_t naming_role = {
    .name = "naming",
    .title = "naming worker",
    .init = naming_init,
    .drain = worker_drain,
    .fini = worker_stop,
    .healthy = worker_healthy,
};

/*
 * worker.h: what every domain worker (naming, config, health) shares.
 *
 * A worker owns one PostgreSQL store connection (store.h) and serves IPC
 * requests on the Unix socket the supervisor created for it ("ipc:<role>",
 * inherited as a listening fd so clients never see a refused connect while
 * the worker restarts). It answers PingRequest itself, with a real round
 * trip to PostgreSQL, and hands every other request to its domain.
 *
 * Ready means: the IPC socket accepts and the store is connected and
 * migrated. Drain means: stop accepting, let every queued store write
 * commit (a barrier query at the end of the FIFO), then exit.
 */
#ifndef LODESTAR_WORKER_H
#define LODESTAR_WORKER_H

#include "child.h"
#include "store.h"

typedef struct worker worker_t;

typedef struct worker_domain {
    /* A request that is not a PingRequest. Answer with ipc_server_reply*. */
    void (*on_request)(worker_t *w, ipc_conn_t *conn, uint64_t request_id, Lodestar__Envelope *req);
    /* The store came up or went down (after the worker's own handling). */
    void (*on_store_state)(worker_t *w, bool up);
    int (*init)(worker_t *w);
    void (*fini)(worker_t *w);
    /* Optional: does the domain serve yet? When set, the worker reports Ready
     * only once the store is up and this returns true; a domain that becomes
     * ready later (the naming worker after loading its model) then calls
     * worker_domain_ready(). NULL: ready as soon as the store is up. */
    bool (*ready)(worker_t *w);
    /* Optional: an IPC peer connected or went away (drop answers owed to it). */
    void (*on_peer)(worker_t *w, ipc_conn_t *conn, bool connected);
} worker_domain_t;

struct worker {
    child_t *child;
    const worker_domain_t *domain;
    store_t *store;
    ipc_server_t *server;
    bool store_up;
    char store_why[256];   /* why the store is down, for pings and logs */
    struct ping_ctx *pings;/* pings waiting for their store round trip */
    void *domain_state;
};

int worker_start(child_t *c, const worker_domain_t *domain);
void worker_drain(child_t *c);
void worker_stop(child_t *c);
bool worker_healthy(child_t *c, char *why, size_t whylen);
/* The domain's ready() turned true: report Ready if the store is up. */
void worker_domain_ready(worker_t *w);

/* The role table rows, one per domain folder. */
extern const child_role_t naming_role, config_role, health_role;

#endif

/*
 * gateway.h: what every gateway process shares.
 *
 * A gateway talks to the domain workers over IPC: one ipc_client_t per
 * enabled worker (naming, config, health), connected to the worker's socket
 * (cfg_ipc_path), reconnecting by itself. On top of them sits the liveness
 * chain every protocol exposes (HTTP /healthz, grpc.health.v1): a
 * PingRequest to every enabled worker, each of which answers after a round
 * trip to PostgreSQL. With the naming worker enabled, the gateway also
 * keeps the naming read replica (gw_replica) that discovery answers from.
 *
 * Rules kept here:
 *  - a health check's callback runs exactly once, always from the event
 *    loop, never inside gw_check_workers itself;
 *  - one liveness check is bounded by ipc.request_timeout_ms, capped at
 *    GW_LIVENESS_TIMEOUT_MS (a probe must answer quickly);
 *  - healthy means: every enabled worker answered and its store was
 *    reachable. With no worker enabled there is nothing to check and the
 *    answer is healthy with an empty list;
 *  - gw_free answers checks still waiting (as failed) before returning.
 */
#ifndef LODESTAR_GATEWAY_H
#define LODESTAR_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "child.h"
#include "config.h"
#include "ipc.h"

struct event_base;

#define GW_MAX_WORKERS 3
#define GW_LIVENESS_TIMEOUT_MS 2000

/* One worker's part of a health check. */
typedef struct gw_worker_status {
    const char *role;      /* "naming", "config", "health" */
    bool ok;               /* answered with a PingResponse */
    bool store_ok;         /* ... saying its store round trip succeeded */
    uint64_t store_rtt_us; /* that round trip, when store_ok */
    char detail[256];      /* the worker's detail, or why it did not answer:
                              "timeout", "not connected", "connection lost",
                              or the Error message it sent */
} gw_worker_status_t;

typedef struct gw_health {
    bool healthy;
    size_t n_workers;
    gw_worker_status_t workers[GW_MAX_WORKERS];
} gw_health_t;

/* The aggregate of one check; `h` is valid only during the call. */
typedef void (*gw_health_cb)(const gw_health_t *h, void *arg);

typedef struct gw gw_t;

/* Create the worker clients for a gateway playing `role` ("polaris-http";
 * sent as PingRequest.from and used in logs). `cfg` must outlive the
 * gateway. Returns NULL with a reason in err. */
gw_t *gw_new(struct event_base *base, const cfg_t *cfg, const char *role, char *err, size_t errlen);

/* Ping every enabled worker; `cb` runs once with the aggregate.
 * 0, or -ESHUTDOWN while the gateway is being freed (cb not called). */
int gw_check_workers(gw_t *gw, gw_health_cb cb, void *arg);

/* For the child's healthy hook: every worker client is connected.
 * Otherwise false with the first disconnected worker named in why. */
bool gw_healthy(const gw_t *gw, char *why, size_t whylen);

/* The IPC client of an enabled worker ("naming"), or NULL. */
ipc_client_t *gw_worker(const gw_t *gw, const char *worker_role);

/* The part of the child's drain bound (supervisor.drain_timeout_ms) a
 * gateway may let in-flight requests run before it answers or cancels them
 * itself: a quarter (at most a second) is kept for the teardown, so the
 * process still exits cleanly before the child skeleton cuts the drain. */
int gw_drain_bound_ms(const cfg_t *cfg);

/* Checks still in flight are answered with their missing workers marked
 * "gateway stopping" (callbacks run), then everything is freed. */
void gw_free(gw_t *gw);

struct nr;
/* The naming read replica fed by the naming worker (NULL when the naming
 * worker is disabled). Owned by the gw_t. */
struct nr *gw_replica(const gw_t *gw);

struct cfr;
struct cwatch;
/* The config read replica and the config watch registry fed by the config
 * worker (NULL when the config worker is disabled). Owned by the gw_t;
 * gw_free flushes the watchers still parked. */
struct cfr *gw_config_replica(const gw_t *gw);
struct cwatch *gw_config_watch(const gw_t *gw);

/* Send a request to an enabled worker ("naming", "health") with the
 * configured ipc.request_timeout_ms; cb runs exactly once (with the
 * ipc_client_request statuses), never inside this call. Returns 0,
 * -ENOENT when that worker is not enabled, -ESHUTDOWN while the gateway is
 * being freed, -EIO when the request could not be queued (cb not called). */
int gw_request(gw_t *gw, const char *worker_role, const Lodestar__Envelope *req, ipc_reply_cb cb, void *arg);
/* The timeout gw_request applies, in milliseconds. */
int gw_request_timeout_ms(const gw_t *gw);
/* The event base the gateway runs on. */
struct event_base *gw_base(const gw_t *gw);

/* Serve one inherited listening socket (non-blocking already). Return 0, or
 * -1 with a reason in err. */
typedef int (*gw_listener_fn)(const cfg_listener_t *l, int fd, void *arg, char *err, size_t errlen);

/* Call fn for every enabled listener of `protocol`, with the socket the
 * supervisor passed in for it. Logs and returns -1 on the first failure
 * (naming the listener), and when no listener has the protocol. Returns
 * the number of listeners served. */
int gw_each_listener(child_t *c, const char *protocol, gw_listener_fn fn, void *arg);

#endif

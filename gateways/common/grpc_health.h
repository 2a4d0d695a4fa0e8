/*
 * grpc_health.h: grpc.health.v1.Health for any gRPC gateway, answered
 * through the liveness chain (gw_check_workers): SERVING only when every
 * enabled worker and its store answered, NOT_SERVING otherwise.
 *
 *  - Check: one liveness check per call. A service name the gateway does
 *    not serve gets gRPC NOT_FOUND, as the standard health service does.
 *  - Watch (server streaming): the current status at once, then a new
 *    message whenever it changes; all watchers share one liveness check
 *    every GW_GRPC_HEALTH_WATCH_MS. A service name the gateway does not
 *    serve is answered SERVICE_UNKNOWN and watched all the same, as the
 *    standard says. On drain (gw_grpc_health_shutdown) every watcher gets
 *    NOT_SERVING and its stream ends with UNAVAILABLE, so watchers do not
 *    hold the drain up.
 */
#ifndef LODESTAR_GRPC_HEALTH_H
#define LODESTAR_GRPC_HEALTH_H

#include <stddef.h>

#include "gateway.h"
#include "grpc_server.h"

#define GW_GRPC_HEALTH_CHECK "/grpc.health.v1.Health/Check"
#define GW_GRPC_HEALTH_WATCH "/grpc.health.v1.Health/Watch"
#define GW_GRPC_HEALTH_WATCH_MS 1000

struct gw_health_watch;

/* Owned by the caller; must outlive the server it is registered on. */
typedef struct gw_grpc_health {
    gw_t *gw;
    const char *const *services; /* NULL-terminated names besides "" */
    struct gw_health_watch *watch; /* internal: Watch streams (set by register) */
} gw_grpc_health_t;

/* Register Check and Watch on a not yet started server. 0 or -errno (err). */
int gw_grpc_health_register(gs_server_t *s, gw_grpc_health_t *h, char *err, size_t errlen);

/* Draining: tell every watcher NOT_SERVING, end the streams, refuse new
 * ones the same way. */
void gw_grpc_health_shutdown(gw_grpc_health_t *h);

/* Free the Watch state; after gw_free and gs_server_free (their last
 * callbacks may still reach it). */
void gw_grpc_health_free(gw_grpc_health_t *h);

#endif

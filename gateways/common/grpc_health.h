/*
 * grpc_health.h: grpc.health.v1.Health/Check for any gRPC gateway, answered
 * through the liveness chain (gw_check_workers): SERVING only when every
 * enabled worker and its store answered, NOT_SERVING otherwise. A service
 * name the gateway does not serve gets NOT_FOUND, as the standard health
 * service does. Watch is not offered (gRPC status UNIMPLEMENTED).
 */
#ifndef LODESTAR_GRPC_HEALTH_H
#define LODESTAR_GRPC_HEALTH_H

#include <stddef.h>

#include "gateway.h"
#include "grpc_server.h"

#define GW_GRPC_HEALTH_CHECK "/grpc.health.v1.Health/Check"

/* Owned by the caller; must outlive the server it is registered on. */
typedef struct gw_grpc_health {
    gw_t *gw;
    const char *const *services; /* NULL-terminated names besides "" */
} gw_grpc_health_t;

/* Register Health/Check on a not yet started server. 0 or -errno (err). */
int gw_grpc_health_register(gs_server_t *s, gw_grpc_health_t *h, char *err, size_t errlen);

#endif

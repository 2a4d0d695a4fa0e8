/*
 * roles.h: the gateway roles lodestar-gateway can play, one per protocol
 * folder. Adding a protocol: a folder defining its child_role_t, one
 * declaration here and one row in gateways/main.c.
 */
#ifndef LODESTAR_GATEWAY_ROLES_H
#define LODESTAR_GATEWAY_ROLES_H

#include "child.h"

extern const child_role_t polaris_http_role; /* polaris_http/polaris_http.c */
extern const child_role_t polaris_grpc_role; /* polaris_grpc/polaris_grpc.c */

#endif

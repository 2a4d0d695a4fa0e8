/*
 * grpc_health.c: see grpc_health.h. Decodes HealthCheckRequest, runs one
 * liveness check per call and answers from its callback; the call object
 * stays valid until that answer (grpc_server.h).
 */
#include "grpc_health.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "health.pb-c.h"
#include "log.h"

static bool service_known(const gw_grpc_health_t *h, const char *name)
{
    if (!name || !*name)
        return true;
    for (size_t i = 0; h->services && h->services[i]; i++)
        if (strcmp(h->services[i], name) == 0)
            return true;
    return false;
}

static void on_checked(const gw_health_t *health, void *arg)
{
    gs_call_t *call = arg;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = health->healthy ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                  : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    uint8_t buf[16];
    size_t n = grpc__health__v1__health_check_response__get_packed_size(&resp);
    if (n > sizeof buf) {
        gs_reply(call, GS_INTERNAL, "health response does not fit", NULL, 0);
        return;
    }
    grpc__health__v1__health_check_response__pack(&resp, buf);
    gs_reply(call, GS_OK, NULL, buf, n);
}

static void on_check(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    gw_grpc_health_t *h = arg;
    Grpc__Health__V1__HealthCheckRequest *r = grpc__health__v1__health_check_request__unpack(NULL, len, req);
    if (!r) {
        gs_reply(call, GS_INVALID_ARGUMENT, "HealthCheckRequest does not decode", NULL, 0);
        return;
    }
    bool known = service_known(h, r->service);
    if (!known) {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown service \"%.255s\"", r->service);
        grpc__health__v1__health_check_request__free_unpacked(r, NULL);
        gs_reply(call, GS_NOT_FOUND, msg, NULL, 0);
        return;
    }
    grpc__health__v1__health_check_request__free_unpacked(r, NULL);
    int rc = gw_check_workers(h->gw, on_checked, call);
    if (rc < 0)
        gs_reply(call, GS_UNAVAILABLE, rc == -ESHUTDOWN ? "gateway stopping" : "cannot check the workers", NULL, 0);
}

int gw_grpc_health_register(gs_server_t *s, gw_grpc_health_t *h, char *err, size_t errlen)
{
    return gs_server_add_unary(s, GW_GRPC_HEALTH_CHECK, on_check, h, err, errlen);
}

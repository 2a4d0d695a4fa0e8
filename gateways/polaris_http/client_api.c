/*
 * client_api.c: the Polaris client API over HTTP on the polaris-http
 * gateway: POST /v1/RegisterInstance, /v1/DeregisterInstance,
 * /v1/Heartbeat, /v1/ReportClient (and /v1/Discover, in ph_discover.c).
 * Each takes one JSON object (the proto3 JSON mapping of v1.Instance or
 * v1.Client) and answers one v1.Response.
 *
 * Rules kept here:
 *  - registration and deregistration go to the naming worker and are
 *    answered with its Response for the item, after PostgreSQL committed;
 *  - a heartbeat never reaches the naming worker: the instance is resolved
 *    in the gateway's replica (by id, or by the Polaris id of namespace,
 *    service, vpc_id, host and port when the client sends no id, as
 *    polaris-go does), then relayed to the health worker as a
 *    HeartbeatBatch. Unknown instance: 400303; health check not enabled on
 *    the instance: 400141; health worker disabled: 400140; health worker
 *    failing or silent: 500007 (the same answers as the gRPC gateway);
 *  - ReportClient is acknowledged (200000) as the Polaris server does:
 *    nothing is kept; a client without an id gets its host and location
 *    echoed.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "naming_id.h"
#include "naming_replica.h"
#include "ph.h"
#include "common/polaris_discover.h"

/* ------------------------------------------------ register / deregister */

static void ph_instance_write(ph_call_t *call, Lodestar__NamingWriteRequest__Op op)
{
    V1__Instance *ins = (V1__Instance *)ph_parse_one(call, &v1__instance__descriptor);
    if (!ins)
        return;
    Lodestar__InstanceExt ext = LODESTAR__INSTANCE_EXT__INIT;
    ext.origin = PH_ORIGIN;
    Lodestar__NamingInstance ni = LODESTAR__NAMING_INSTANCE__INIT;
    ni.instance = ins;
    if (op == LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER)
        ni.ext = &ext;
    Lodestar__NamingInstance *nip = &ni;
    Lodestar__NamingWriteRequest w = LODESTAR__NAMING_WRITE_REQUEST__INIT;
    w.op = op;
    w.n_instances = 1;
    w.instances = &nip;
    w.origin = PH_ROLE;
    ph_naming_write(call, &w);
    protobuf_c_message_free_unpacked(&ins->base, NULL);
}

static void ph_register(ph_call_t *call)
{
    ph_instance_write(call, LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER);
}

static void ph_deregister(ph_call_t *call)
{
    ph_instance_write(call, LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER);
}

/* ------------------------------------------------------------ heartbeat */

static const char *sv(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : ""; }

/* The Response for a heartbeat: code, info and the instance as sent. */
static void ph_heartbeat_answer(ph_call_t *call, uint32_t code, const V1__Instance *ins, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void ph_heartbeat_answer(ph_call_t *call, uint32_t code, const V1__Instance *ins, const char *fmt, ...)
{
    char info[512];
    int n = snprintf(info, sizeof info, "%s", polaris_code_info(code));
    if (fmt && n >= 0 && (size_t)n < sizeof info - 2) {
        va_list ap;
        va_start(ap, fmt);
        info[n++] = ':';
        info[n++] = ' ';
        vsnprintf(info + n, sizeof info - (size_t)n, fmt, ap);
        va_end(ap);
    }
    Google__Protobuf__UInt32Value c;
    Google__Protobuf__StringValue i;
    V1__Response r = V1__RESPONSE__INIT;
    r.code = PH_U32(c, code);
    r.info = PH_STR(i, info);
    r.instance = (V1__Instance *)ins;
    ph_reply_message(call->st, call->req, &r.base, code);
}

static void ph_on_heartbeat_ack(ph_call_t *call, int status, Lodestar__Envelope *reply, void *data)
{
    V1__Instance *ins = data;
    if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_HEARTBEAT_ACK && reply->heartbeat_ack &&
        reply->heartbeat_ack->n_codes >= 1) {
        uint32_t code = reply->heartbeat_ack->codes[0];
        ph_heartbeat_answer(call, code, ins, NULL);
    } else if (status == -ETIMEDOUT) {
        ph_heartbeat_answer(call, V1__CODE__HeartbeatException, ins, "the health worker did not answer within %d ms",
                            call->st->request_timeout_ms);
    } else if (status < 0) {
        ph_heartbeat_answer(call, V1__CODE__HeartbeatException, ins, "%s",
                            call->st->gw ? "the health worker could not be reached" : "the gateway is stopping");
    } else if (reply->body_case == LODESTAR__ENVELOPE__BODY_ERROR && reply->error) {
        ph_heartbeat_answer(call, V1__CODE__HeartbeatException, ins, "%s",
                            reply->error->message ? reply->error->message : "the health worker refused the beat");
    } else {
        ph_heartbeat_answer(call, V1__CODE__HeartbeatException, ins, "the health worker answered with %s",
                            ipc_type_name(reply->body_case));
    }
    protobuf_c_message_free_unpacked(&ins->base, NULL);
}



static void ph_heartbeat(ph_call_t *call)
{
    V1__Instance *ins = (V1__Instance *)ph_parse_one(call, &v1__instance__descriptor);
    if (!ins)
        return;
    ph_state_t *st = call->st;
    nr_t *r = st->gw ? gw_replica(st->gw) : NULL;
    char idbuf[NAMING_HEX_LEN + 1];
    const char *id = NULL, *why = NULL;
    if (!st->gw) {
        ph_heartbeat_answer(call, V1__CODE__ExecuteException, ins, "the gateway is stopping");
        goto out;
    }
    uint32_t bad = pd_beat_target(r, ins, idbuf, &id, &why);
    if (bad) {
        ph_heartbeat_answer(call, bad, ins, "%s%s%s", id ? id : "", id ? ": " : "", why);
        goto out;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char *ids[1] = {(char *)id};
    Lodestar__HeartbeatBatch hb = LODESTAR__HEARTBEAT_BATCH__INIT;
    hb.n_instance_ids = 1;
    hb.instance_ids = ids;
    hb.received_unix_ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_HEARTBEAT_BATCH;
    env.heartbeat_batch = &hb;
    int rc = ph_worker_request(call, "health", &env, ph_on_heartbeat_ack, ins);
    if (rc == 0)
        return; /* ins is freed with the answer */
    if (rc == -ENOENT)
        ph_heartbeat_answer(call, V1__CODE__HealthCheckNotOpen, ins, "the health worker is not enabled");
    else
        ph_heartbeat_answer(call, V1__CODE__HeartbeatException, ins, "%s",
                            rc == -ESHUTDOWN ? "the gateway is stopping" : "cannot send the beat to the health worker");
out:
    protobuf_c_message_free_unpacked(&ins->base, NULL);
}

/* --------------------------------------------------------- report client */

/* As the Polaris server: nothing is kept; a client without an id gets its
 * host and location echoed, one with an id a bare success. */
static void ph_report_client(ph_call_t *call)
{
    V1__Client *cl = (V1__Client *)ph_parse_one(call, &v1__client__descriptor);
    if (!cl)
        return;
    Google__Protobuf__UInt32Value c;
    Google__Protobuf__StringValue i;
    V1__Client out = V1__CLIENT__INIT;
    V1__Response r = V1__RESPONSE__INIT;
    r.code = PH_U32(c, V1__CODE__ExecuteSuccess);
    r.info = PH_STR(i, polaris_code_info(V1__CODE__ExecuteSuccess));
    if (!*sv(cl->id)) {
        out.host = cl->host;
        out.location = cl->location;
        r.client = &out;
    }
    ph_reply_message(call->st, call->req, &r.base, V1__CODE__ExecuteSuccess);
    protobuf_c_message_free_unpacked(&cl->base, NULL);
}

const ph_route_t ph_client_routes[] = {
    {"/v1/RegisterInstance", EVHTTP_REQ_POST, PH_KIND_RESPONSE, ph_register},
    {"/v1/DeregisterInstance", EVHTTP_REQ_POST, PH_KIND_RESPONSE, ph_deregister},
    {"/v1/Heartbeat", EVHTTP_REQ_POST, PH_KIND_RESPONSE, ph_heartbeat},
    {"/v1/ReportClient", EVHTTP_REQ_POST, PH_KIND_RESPONSE, ph_report_client},
    {"/v1/Discover", EVHTTP_REQ_POST, PH_KIND_DISCOVER, ph_discover},
    {NULL, 0, 0, NULL},
};

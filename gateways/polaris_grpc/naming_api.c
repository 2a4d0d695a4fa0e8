/*
 * naming_api.c: v1.PolarisGRPC ReportClient, RegisterInstance,
 * DeregisterInstance and Discover (see pg.h for the shared rules).
 *
 * Register / Deregister are one-item NamingWriteRequests to the naming
 * worker; the answer is the worker's v1.Response for that item, passed on
 * unchanged (code, info, instance with its id), so it says exactly what
 * PostgreSQL committed.
 *
 * Discover answers every DiscoverRequest of the stream with one
 * DiscoverResponse, in order, from the replica:
 *  - INSTANCE: the service's instances (all, or healthy only with
 *    Filter.OnlyHealthyInstance), isolated and weight-0 instances included
 *    as the Polaris server does (SDKs filter them); 200001 without payload
 *    when the client's service.revision is the current one; 400301 for a
 *    service the replica does not hold. These three answers are encoded
 *    once per service change and kept in the service's cache slots.
 *  - SERVICES: the services of service.namespace (every namespace when
 *    empty) with name, namespace and metadata, under the list's revision.
 *  - ROUTING, RATE_LIMIT, CIRCUIT_BREAKER, FAULT_DETECTOR: no rules are
 *    served yet; an empty rule set under a revision that is a fixed digest
 *    of (type, namespace, service), so a client that repeats the revision
 *    gets 200001.
 *  - anything else: 400004 InvalidDiscoverResource.
 * Every answer names the service and type the request asked about, which is
 * how SDKs match answers to their requests on the shared stream.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "naming.pb-c.h"
#include "naming_id.h"
#include "naming_replica.h"
#include "pg.h"
#include "common/polaris_discover.h"
#include "polaris_circuitbreaker.pb-c.h"
#include "polaris_client.pb-c.h"
#include "polaris_fault_detector.pb-c.h"
#include "polaris_ratelimit.pb-c.h"
#include "polaris_request.pb-c.h"
#include "polaris_routing.pb-c.h"

#define M_REPORT_CLIENT "/v1.PolarisGRPC/ReportClient"
#define M_REGISTER "/v1.PolarisGRPC/RegisterInstance"
#define M_DEREGISTER "/v1.PolarisGRPC/DeregisterInstance"
#define M_DISCOVER "/v1.PolarisGRPC/Discover"

static const char *sv(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : ""; }

/* ------------------------------------------------------ ReportClient */

/* As the Polaris server: nothing is kept; a client without an id gets its
 * host and location echoed, one with an id a bare success. */
static void on_report_client(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    if (len == 0) {
        pg_reply_response(call, V1__CODE__EmptyRequest, NULL, NULL, NULL);
        return;
    }
    V1__Client *c = v1__client__unpack(NULL, len, req);
    if (!c) {
        char info[160];
        snprintf(info, sizeof info, "request decode failed: %zu bytes are not a v1.Client", len);
        pg_reply_response(call, V1__CODE__ParseException, info, NULL, NULL);
        return;
    }
    if (*sv(c->id)) {
        pg_reply_response(call, V1__CODE__ExecuteSuccess, NULL, NULL, NULL);
    } else {
        V1__Client out = V1__CLIENT__INIT;
        out.host = c->host;
        out.location = c->location;
        pg_reply_response(call, V1__CODE__ExecuteSuccess, NULL, NULL, &out);
    }
    v1__client__free_unpacked(c, NULL);
}

/* ------------------------------------------- Register / Deregister */

typedef struct write_ctx {
    pg_state_t *st;
    gs_call_t *call;
    V1__Instance *inst;
    const char *what;
} write_ctx_t;

static void on_write_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    write_ctx_t *w = arg;
    const Lodestar__NamingWriteResponse *wr =
        status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_NAMING_WRITE_RESPONSE ? reply->naming_write_response
                                                                                         : NULL;
    if (wr && wr->result && wr->result->n_responses >= 1 && wr->result->responses[0]) {
        pg_reply_message(w->call, &wr->result->responses[0]->base);
    } else if (wr && wr->result) {
        const V1__BatchWriteResponse *b = wr->result;
        uint32_t code = b->code ? b->code->value : V1__CODE__ExecuteException;
        pg_reply_response(w->call, code, *sv(b->info) ? sv(b->info) : NULL, w->inst, NULL);
    } else {
        char why[400];
        pg_worker_failure("naming", status, reply, gw_request_timeout_ms(w->st->gw), why, sizeof why);
        log_warn("%s of %s/%s %s:%u: %s", w->what, sv(w->inst->namespace_), sv(w->inst->service),
                 sv(w->inst->host), w->inst->port ? w->inst->port->value : 0, why);
        pg_reply_response(w->call, V1__CODE__ExecuteException, why, w->inst, NULL);
    }
    v1__instance__free_unpacked(w->inst, NULL);
    free(w);
}

static void instance_write(pg_state_t *st, gs_call_t *call, const uint8_t *req, size_t len,
                           Lodestar__NamingWriteRequest__Op op, const char *what)
{
    if (!st->gw) {
        pg_reply_response(call, V1__CODE__ExecuteException, "gateway stopping", NULL, NULL);
        return;
    }
    if (len == 0) {
        pg_reply_response(call, V1__CODE__EmptyRequest, NULL, NULL, NULL);
        return;
    }
    V1__Instance *in = v1__instance__unpack(NULL, len, req);
    if (!in) {
        char info[160];
        snprintf(info, sizeof info, "request decode failed: %zu bytes are not a v1.Instance", len);
        pg_reply_response(call, V1__CODE__ParseException, info, NULL, NULL);
        return;
    }
    write_ctx_t *w = calloc(1, sizeof *w);
    if (!w) {
        pg_reply_response(call, V1__CODE__ExecuteException, "gateway out of memory", in, NULL);
        v1__instance__free_unpacked(in, NULL);
        return;
    }
    *w = (write_ctx_t){.st = st, .call = call, .inst = in, .what = what};

    Lodestar__InstanceExt ext = LODESTAR__INSTANCE_EXT__INIT;
    ext.origin = PG_ORIGIN;
    Lodestar__NamingInstance ni = LODESTAR__NAMING_INSTANCE__INIT;
    ni.instance = in;
    ni.ext = &ext;
    Lodestar__NamingInstance *items[1] = {&ni};
    Lodestar__NamingWriteRequest wr = LODESTAR__NAMING_WRITE_REQUEST__INIT;
    wr.op = op;
    wr.n_instances = 1;
    wr.instances = items;
    wr.origin = PG_WRITE_ORIGIN;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_WRITE_REQUEST;
    env.naming_write_request = &wr;
    int rc = gw_request(st->gw, "naming", &env, on_write_reply, w);
    if (rc < 0)
        on_write_reply(rc, NULL, w);
}

static void on_register(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    instance_write(arg, call, req, len, LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER, "register");
}

static void on_deregister(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    instance_write(arg, call, req, len, LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER, "deregister");
}

/* ---------------------------------------------------------- Discover */

/* Discover streams run on the gRPC completion-queue thread (on_cq_thread):
 * each request is read, answered from the replica and written back on the
 * thread that did the I/O. What they read: st->gw, cleared by pg_fini under
 * the server's handler lock, and the replica, read under its own lock,
 * held until the answer is copied out of its cache slot. */

/* Discover answers are packed protobuf (polaris_discover.h does the rest). */
static int pack_answer(const ProtobufCMessage *m, uint8_t **data, size_t *len)
{
    *data = pg_pack(m, len);
    return *data ? 0 : -1;
}

static void send_answer(gs_call_t *call, int rc, pd_answer_t *a)
{
    if (rc < 0) {
        gs_stream_finish(call, GS_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    gs_stream_send(call, a->data, a->len);
    pd_answer_release(a);
}

static void dsc_message(gs_call_t *call, const uint8_t *msg, size_t len, void *arg)
{
    pg_state_t *st = arg;
    if (!st->gw) {
        gs_stream_finish(call, GS_UNAVAILABLE, "gateway stopping");
        return;
    }
    pd_answer_t a;
    if (len == 0) {
        send_answer(call,
                    pd_short(V1__CODE__EmptyRequest, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__UNKNOWN, NULL, NULL,
                             pack_answer, &a),
                    &a);
        return;
    }
    V1__DiscoverRequest *dr = v1__discover_request__unpack(NULL, len, msg);
    if (!dr) {
        char info[160];
        snprintf(info, sizeof info, "%zu bytes are not a v1.DiscoverRequest", len);
        send_answer(call,
                    pd_short(V1__CODE__ParseException, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__UNKNOWN, NULL, info,
                             pack_answer, &a),
                    &a);
        return;
    }
    nr_t *r = gw_replica(st->gw);
    nr_lock(r);
    send_answer(call, pd_discover(r, dr, pack_answer, PG_SLOT_ALL, &a), &a);
    nr_unlock(r);
    v1__discover_request__free_unpacked(dr, NULL);
}

int pg_naming_register(pg_state_t *st, char *err, size_t errlen)
{
    int rc = gs_server_add_unary(st->srv, M_REPORT_CLIENT, on_report_client, st, err, errlen);
    if (rc == 0)
        rc = gs_server_add_unary(st->srv, M_REGISTER, on_register, st, err, errlen);
    if (rc == 0)
        rc = gs_server_add_unary(st->srv, M_DEREGISTER, on_deregister, st, err, errlen);
    if (rc == 0) {
        gs_stream_handlers_t h = {.on_message = dsc_message, .on_cq_thread = true};
        rc = gs_server_add_stream(st->srv, M_DISCOVER, &h, st, err, errlen);
    }
    return rc;
}

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

typedef struct dsc_stream {
    pg_stream_t ps; /* first: the shared stream list links this */
    pg_state_t *st;
} dsc_stream_t;

/* Fill the wrappers of a DiscoverResponse header. */
typedef struct dsc_head {
    Google__Protobuf__UInt32Value code;
    Google__Protobuf__StringValue info;
} dsc_head_t;

static void head_init(V1__DiscoverResponse *r, dsc_head_t *h, uint32_t code, const char *info, int type)
{
    google__protobuf__uint32_value__init(&h->code);
    google__protobuf__string_value__init(&h->info);
    h->code.value = code;
    h->info.value = (char *)(info ? info : polaris_code_info(code));
    r->code = &h->code;
    r->info = &h->info;
    r->type = (V1__DiscoverResponse__DiscoverResponseType)type;
}

static void send_msg(gs_call_t *call, const ProtobufCMessage *m)
{
    size_t n = 0;
    uint8_t *buf = pg_pack(m, &n);
    if (!buf) {
        gs_stream_finish(call, GS_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    gs_stream_send(call, buf, n);
    free(buf);
}

/* An answer without payload: code, info, type, and the service as asked. */
static void answer(gs_call_t *call, uint32_t code, const char *info, int type, V1__Service *svc)
{
    V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
    dsc_head_t h;
    head_init(&r, &h, code, info, type);
    r.service = svc;
    send_msg(call, &r.base);
}

/* The service as discovery shows it: no token, no counts, no ACLs. */
static void service_view(V1__Service *out, const V1__Service *src)
{
    v1__service__init(out);
    out->id = src->id;
    out->name = src->name;
    out->namespace_ = src->namespace_;
    out->n_metadata = src->n_metadata;
    out->metadata = src->metadata;
    out->ports = src->ports;
    out->business = src->business;
    out->department = src->department;
    out->cmdb_mod1 = src->cmdb_mod1;
    out->cmdb_mod2 = src->cmdb_mod2;
    out->cmdb_mod3 = src->cmdb_mod3;
    out->comment = src->comment;
    out->owners = src->owners;
    out->revision = src->revision;
    out->platform_id = src->platform_id;
    out->ctime = src->ctime;
    out->mtime = src->mtime;
}

/* Encode the INSTANCE answer for the service's current state into slot. */
static int encode_instances(const nr_service_t *svc, bool healthy_only, nr_cache_slot_t *slot)
{
    const Lodestar__NamingServiceState *st = svc->state;
    size_t n = st->n_instances;
    V1__Instance *copies = calloc(n ? n : 1, sizeof *copies);
    V1__Instance **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!copies || !ptrs) {
        free(copies);
        free(ptrs);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const Lodestar__NamingInstance *ni = st->instances[i];
        if (!ni || !ni->instance)
            continue;
        const V1__Instance *in = ni->instance;
        if (healthy_only && !(in->healthy && in->healthy->value))
            continue;
        copies[k] = *in;
        copies[k].service_token = NULL; /* never handed to consumers */
        ptrs[k] = &copies[k];
        k++;
    }
    V1__Service view, alias = V1__SERVICE__INIT;
    service_view(&view, st->service);
    alias.name = st->service->name;
    alias.namespace_ = st->service->namespace_;
    V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
    dsc_head_t h;
    head_init(&r, &h, V1__CODE__ExecuteSuccess, NULL, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE);
    r.service = &view;
    r.aliasfor = &alias;
    r.n_instances = k;
    r.instances = ptrs;
    slot->data = pg_pack(&r.base, &slot->len);
    free(copies);
    free(ptrs);
    return slot->data ? 0 : -ENOMEM;
}

static int encode_nochange(const nr_service_t *svc, nr_cache_slot_t *slot)
{
    V1__Service s = V1__SERVICE__INIT;
    s.name = svc->state->service->name;
    s.namespace_ = svc->state->service->namespace_;
    s.revision = svc->state->service->revision;
    V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
    dsc_head_t h;
    head_init(&r, &h, V1__CODE__DataNoChange, NULL, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE);
    r.service = &s;
    slot->data = pg_pack(&r.base, &slot->len);
    return slot->data ? 0 : -ENOMEM;
}

/* Check the service key of a request the way Polaris does. 0 when usable,
 * else the code to answer. */
static uint32_t check_key(const V1__Service *q)
{
    if (!q)
        return V1__CODE__EmptyRequest;
    if (!*sv(q->name))
        return V1__CODE__InvalidServiceName;
    if (!*sv(q->namespace_))
        return V1__CODE__InvalidNamespaceName;
    return 0;
}

static void discover_instances(gs_call_t *call, nr_t *r, const V1__DiscoverRequest *dr)
{
    const int type = V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE;
    uint32_t bad = check_key(dr->service);
    if (bad) {
        answer(call, bad, NULL, type, dr->service);
        return;
    }
    const nr_service_t *svc = nr_service(r, sv(dr->service->namespace_), sv(dr->service->name));
    if (!svc) {
        answer(call, V1__CODE__NotFoundService, NULL, type, dr->service);
        return;
    }
    bool nochange = *svc->revision && strcmp(sv(dr->service->revision), svc->revision) == 0;
    bool healthy_only = dr->filter && dr->filter->onlyhealthyinstance;
    int which = nochange ? PG_SLOT_NOCHANGE : healthy_only ? PG_SLOT_HEALTHY : PG_SLOT_ALL;
    nr_cache_slot_t *slot = nr_cache(svc, which);
    if (!slot->data) {
        int rc = nochange ? encode_nochange(svc, slot) : encode_instances(svc, healthy_only, slot);
        if (rc < 0) {
            answer(call, V1__CODE__ExecuteException, "gateway out of memory", type, dr->service);
            return;
        }
    }
    gs_stream_send(call, slot->data, slot->len);
}

typedef struct svc_list {
    V1__Service *items;
    V1__Service **ptrs;
    size_t n, cap;
} svc_list_t;

static void collect_service(const nr_service_t *svc, void *arg)
{
    svc_list_t *l = arg;
    if (l->n >= l->cap)
        return;
    V1__Service *s = &l->items[l->n];
    v1__service__init(s);
    s->name = svc->state->service->name;
    s->namespace_ = svc->state->service->namespace_;
    s->n_metadata = svc->state->service->n_metadata;
    s->metadata = svc->state->service->metadata;
    l->ptrs[l->n] = s;
    l->n++;
}

static void discover_services(gs_call_t *call, nr_t *r, const V1__DiscoverRequest *dr)
{
    const int type = V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__SERVICES;
    const char *ns = dr->service ? sv(dr->service->namespace_) : "";
    const char *rev = nr_services_revision(r, ns);
    if (!*rev) {
        /* nothing to list: success without a revision, as Polaris */
        answer(call, V1__CODE__ExecuteSuccess, NULL, type, dr->service);
        return;
    }
    if (dr->service && strcmp(sv(dr->service->revision), rev) == 0) {
        answer(call, V1__CODE__DataNoChange, NULL, type, dr->service);
        return;
    }
    size_t cap = nr_service_count(r);
    svc_list_t l = {.items = calloc(cap ? cap : 1, sizeof *l.items), .ptrs = calloc(cap ? cap : 1, sizeof *l.ptrs),
                    .cap = cap};
    if (!l.items || !l.ptrs) {
        free(l.items);
        free(l.ptrs);
        answer(call, V1__CODE__ExecuteException, "gateway out of memory", type, dr->service);
        return;
    }
    nr_foreach_service(r, *ns ? ns : NULL, collect_service, &l);
    Google__Protobuf__StringValue s_ns = GOOGLE__PROTOBUF__STRING_VALUE__INIT, s_name = s_ns, s_rev = s_ns;
    s_ns.value = (char *)ns;
    s_name.value = (char *)(dr->service ? sv(dr->service->name) : "");
    s_rev.value = (char *)rev;
    V1__Service head = V1__SERVICE__INIT;
    head.namespace_ = &s_ns;
    head.name = &s_name;
    head.revision = &s_rev;
    V1__DiscoverResponse resp = V1__DISCOVER_RESPONSE__INIT;
    dsc_head_t h;
    head_init(&resp, &h, V1__CODE__ExecuteSuccess, NULL, type);
    resp.service = &head;
    resp.n_services = l.n;
    resp.services = l.ptrs;
    send_msg(call, &resp.base);
    free(l.items);
    free(l.ptrs);
}

/* Rule types served empty until rules exist: a stable revision per
 * (type, namespace, service). */
static void discover_empty_rules(gs_call_t *call, const V1__DiscoverRequest *dr)
{
    int type = (int)dr->type;
    uint32_t bad = check_key(dr->service);
    if (bad) {
        answer(call, bad, NULL, type, dr->service);
        return;
    }
    const char *ns = sv(dr->service->namespace_), *name = sv(dr->service->name);
    char rev[NAMING_HEX_LEN + 1];
    char tbuf[16];
    snprintf(tbuf, sizeof tbuf, "%d", type);
    naming_digest_t d;
    if (naming_digest_init(&d) < 0) {
        answer(call, V1__CODE__ExecuteException, "gateway out of memory", type, dr->service);
        return;
    }
    naming_digest_add_str(&d, "lodestar:no-rules");
    naming_digest_add_str(&d, tbuf);
    naming_digest_add_str(&d, ns);
    naming_digest_add_str(&d, name);
    naming_digest_hex(&d, rev);
    if (strcmp(sv(dr->service->revision), rev) == 0) {
        answer(call, V1__CODE__DataNoChange, NULL, type, dr->service);
        return;
    }
    Google__Protobuf__StringValue s_rev = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    s_rev.value = rev;
    V1__Service svc = V1__SERVICE__INIT, alias = V1__SERVICE__INIT;
    svc.name = alias.name = dr->service->name;
    svc.namespace_ = alias.namespace_ = dr->service->namespace_;
    svc.revision = &s_rev;
    V1__DiscoverResponse resp = V1__DISCOVER_RESPONSE__INIT;
    dsc_head_t h;
    head_init(&resp, &h, V1__CODE__ExecuteSuccess, NULL, type);
    resp.service = &svc;
    resp.aliasfor = &alias;
    V1__Routing routing = V1__ROUTING__INIT;
    V1__RateLimit ratelimit = V1__RATE_LIMIT__INIT;
    V1__CircuitBreaker cb = V1__CIRCUIT_BREAKER__INIT;
    V1__FaultDetector fd = V1__FAULT_DETECTOR__INIT;
    switch (dr->type) {
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__ROUTING:
        routing.service = dr->service->name;
        routing.namespace_ = dr->service->namespace_;
        routing.revision = &s_rev;
        resp.routing = &routing;
        break;
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__RATE_LIMIT:
        ratelimit.revision = &s_rev;
        resp.ratelimit = &ratelimit;
        break;
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__CIRCUIT_BREAKER:
        cb.service = dr->service->name;
        cb.service_namespace = dr->service->namespace_;
        cb.revision = &s_rev;
        resp.circuitbreaker = &cb;
        break;
    default: /* FAULT_DETECTOR */
        fd.revision = rev;
        resp.faultdetector = &fd;
        break;
    }
    send_msg(call, &resp.base);
}

static void dsc_message(gs_call_t *call, const uint8_t *msg, size_t len, void *arg)
{
    pg_state_t *st = arg;
    if (!st->gw) {
        gs_stream_finish(call, GS_UNAVAILABLE, "gateway stopping");
        return;
    }
    if (len == 0) {
        answer(call, V1__CODE__EmptyRequest, NULL, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__UNKNOWN, NULL);
        return;
    }
    V1__DiscoverRequest *dr = v1__discover_request__unpack(NULL, len, msg);
    if (!dr) {
        char info[160];
        snprintf(info, sizeof info, "request decode failed: %zu bytes are not a v1.DiscoverRequest", len);
        answer(call, V1__CODE__ParseException, info, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__UNKNOWN, NULL);
        return;
    }
    nr_t *r = gw_replica(st->gw);
    bool known_type = true;
    switch (dr->type) {
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__SERVICES:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__ROUTING:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__RATE_LIMIT:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__CIRCUIT_BREAKER:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__FAULT_DETECTOR:
        break;
    default:
        known_type = false;
        break;
    }
    if (!known_type) {
        answer(call, V1__CODE__InvalidDiscoverResource, NULL, (int)dr->type, dr->service);
    } else if (!r || !nr_ready(r)) {
        answer(call, V1__CODE__ExecuteException,
               r ? "naming data not loaded yet: the gateway waits for the naming worker's snapshot"
                 : "naming worker not enabled",
               (int)dr->type, dr->service);
    } else if (dr->type == V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE) {
        discover_instances(call, r, dr);
    } else if (dr->type == V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__SERVICES) {
        discover_services(call, r, dr);
    } else {
        discover_empty_rules(call, dr);
    }
    v1__discover_request__free_unpacked(dr, NULL);
}

static void dsc_drain(pg_stream_t *ps)
{
    if (ps->call)
        gs_stream_finish(ps->call, GS_UNAVAILABLE, "server draining, reconnect");
}

static void dsc_open(gs_call_t *call, void *arg)
{
    pg_state_t *st = arg;
    dsc_stream_t *ds = calloc(1, sizeof *ds);
    if (!ds) {
        gs_stream_finish(call, GS_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    ds->st = st;
    ds->ps.call = call;
    ds->ps.drain = dsc_drain;
    pg_stream_link(st, &ds->ps);
    gs_call_set_user(call, ds);
    if (st->draining)
        dsc_drain(&ds->ps);
}

static void dsc_done(gs_call_t *call, bool cancelled, void *arg)
{
    dsc_stream_t *ds = gs_call_user(call);
    if (!ds)
        return;
    pg_stream_unlink(ds->st, &ds->ps);
    free(ds);
}

int pg_naming_register(pg_state_t *st, char *err, size_t errlen)
{
    int rc = gs_server_add_unary(st->srv, M_REPORT_CLIENT, on_report_client, st, err, errlen);
    if (rc == 0)
        rc = gs_server_add_unary(st->srv, M_REGISTER, on_register, st, err, errlen);
    if (rc == 0)
        rc = gs_server_add_unary(st->srv, M_DEREGISTER, on_deregister, st, err, errlen);
    if (rc == 0) {
        gs_stream_handlers_t h = {.on_open = dsc_open, .on_message = dsc_message, .on_done = dsc_done};
        rc = gs_server_add_stream(st->srv, M_DISCOVER, &h, st, err, errlen);
    }
    return rc;
}

/*
 * ph_discover.c: POST /v1/Discover on the polaris-http gateway, answered
 * from the gateway's naming replica only (never from the naming worker),
 * with the same answers as the gRPC Discover (gateways/polaris_grpc/
 * naming_api.c), in JSON:
 *  - the service key is checked as Polaris does: service missing 400002,
 *    name empty 400120, namespace empty 400110;
 *  - INSTANCE: the service's instances (all, or the healthy ones with
 *    Filter.OnlyHealthyInstance; isolated and weight-0 instances included,
 *    as the Polaris server does, for SDKs to skip), the service without its
 *    token, and no service_token on instances; 200001 DataNoChange without
 *    payload when the client's service.revision is the current one; 400301
 *    for a service the replica does not hold;
 *  - SERVICES: the services of service.namespace (every namespace when it is
 *    empty) with name, namespace and metadata, under the list revision;
 *    200001 when unchanged; success without a revision when there is none;
 *  - ROUTING, RATE_LIMIT, CIRCUIT_BREAKER, FAULT_DETECTOR: an empty rule set
 *    under a fixed digest of (type, namespace, service), 200001 when the
 *    client repeats it, so SDKs keep working until rules are served;
 *  - any other type: 400004 InvalidDiscoverResource.
 * INSTANCE answers are encoded once per service state: the JSON text sits
 * in the service's replica cache slots (PH_SLOT_*, this process's own),
 * which the replica frees whenever the service changes.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "naming_id.h"
#include "naming_replica.h"
#include "pbjson.h"
#include "ph.h"
#include "polaris_request.pb-c.h"

#define PH_SLOT_ALL 0      /* INSTANCE, every instance */
#define PH_SLOT_HEALTHY 1  /* INSTANCE, healthy ones only */
#define PH_SLOT_NOCHANGE 2 /* INSTANCE 200001 for the current revision */

typedef V1__DiscoverResponse__DiscoverResponseType ph_dtype_t;

static const char *sv(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : ""; }

/* A DiscoverResponse with only code, info, type and the service as asked. */
static void ph_discover_short(ph_call_t *call, uint32_t code, ph_dtype_t type, V1__Service *asked, const char *detail)
{
    char info[512];
    if (detail)
        snprintf(info, sizeof info, "%s: %s", polaris_code_info(code), detail);
    else
        snprintf(info, sizeof info, "%s", polaris_code_info(code));
    Google__Protobuf__UInt32Value c;
    Google__Protobuf__StringValue i;
    V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
    r.code = PH_U32(c, code);
    r.info = PH_STR(i, info);
    r.type = type;
    r.service = asked;
    ph_reply_message(call->st, call->req, &r.base, code);
}

/* The service key of a request, checked as Polaris does: 0 when usable,
 * else the code to answer (with the field named in *what). */
static uint32_t ph_check_key(const V1__Service *q, const char **what)
{
    if (!q) {
        *what = "service is missing";
        return V1__CODE__EmptyRequest;
    }
    if (!*sv(q->name)) {
        *what = "service.name is empty";
        return V1__CODE__InvalidServiceName;
    }
    if (!*sv(q->namespace_)) {
        *what = "service.namespace is empty";
        return V1__CODE__InvalidNamespaceName;
    }
    return 0;
}

/* The service as discovery shows it: no token, no counts, no ACLs. */
static void ph_service_view(V1__Service *out, const V1__Service *src)
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

/* Encodes a message into a cache slot as JSON text. */
static int ph_encode_slot(const ProtobufCMessage *m, nr_cache_slot_t *slot)
{
    char err[256] = "";
    char *text = NULL;
    size_t len = 0;
    if (pbjson_encode(m, PBJSON_EMIT_DEFAULTS, &text, &len, err, sizeof err) < 0) {
        log_error("discover: cannot encode the answer: %s", err);
        return -1;
    }
    slot->data = (uint8_t *)text;
    slot->len = len;
    return 0;
}

/* The full INSTANCE answer for the service's current state. */
static int ph_encode_instances(const nr_service_t *svc, bool only_healthy, nr_cache_slot_t *slot)
{
    const Lodestar__NamingServiceState *state = svc->state;
    size_t n = state->n_instances;
    V1__Instance *copies = calloc(n ? n : 1, sizeof *copies);
    V1__Instance **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!copies || !ptrs) {
        free(copies);
        free(ptrs);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const Lodestar__NamingInstance *ni = state->instances[i];
        if (!ni || !ni->instance)
            continue;
        if (only_healthy && !(ni->instance->healthy && ni->instance->healthy->value))
            continue;
        copies[k] = *ni->instance; /* shallow: the replica keeps the fields */
        copies[k].service_token = NULL; /* never handed to consumers */
        ptrs[k] = &copies[k];
        k++;
    }
    V1__Service view, alias = V1__SERVICE__INIT;
    ph_service_view(&view, state->service);
    alias.name = state->service->name;
    alias.namespace_ = state->service->namespace_;
    Google__Protobuf__UInt32Value c;
    Google__Protobuf__StringValue i;
    V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
    r.code = PH_U32(c, V1__CODE__ExecuteSuccess);
    r.info = PH_STR(i, polaris_code_info(V1__CODE__ExecuteSuccess));
    r.type = V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE;
    r.service = &view;
    r.aliasfor = &alias;
    r.n_instances = k;
    r.instances = ptrs;
    int rc = ph_encode_slot(&r.base, slot);
    free(copies);
    free(ptrs);
    return rc;
}

/* 200001 for the service's current revision. */
static int ph_encode_nochange(const nr_service_t *svc, nr_cache_slot_t *slot)
{
    V1__Service s = V1__SERVICE__INIT;
    s.name = svc->state->service->name;
    s.namespace_ = svc->state->service->namespace_;
    s.revision = svc->state->service->revision;
    Google__Protobuf__UInt32Value c;
    Google__Protobuf__StringValue i;
    V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
    r.code = PH_U32(c, V1__CODE__DataNoChange);
    r.info = PH_STR(i, polaris_code_info(V1__CODE__DataNoChange));
    r.type = V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE;
    r.service = &s;
    return ph_encode_slot(&r.base, slot);
}

static void ph_discover_instances(ph_call_t *call, nr_t *r, V1__DiscoverRequest *dr)
{
    const ph_dtype_t type = V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE;
    const char *what = NULL;
    uint32_t bad = ph_check_key(dr->service, &what);
    if (bad) {
        ph_discover_short(call, bad, type, dr->service, what);
        return;
    }
    const nr_service_t *svc = nr_service(r, sv(dr->service->namespace_), sv(dr->service->name));
    if (!svc || !svc->state || !svc->state->service) {
        char detail[400];
        snprintf(detail, sizeof detail, "no service %.180s in namespace %.180s", sv(dr->service->name),
                 sv(dr->service->namespace_));
        ph_discover_short(call, V1__CODE__NotFoundService, type, dr->service, detail);
        return;
    }
    bool nochange = svc->revision && *svc->revision && !strcmp(sv(dr->service->revision), svc->revision);
    bool only_healthy = dr->filter && dr->filter->onlyhealthyinstance;
    int which = nochange ? PH_SLOT_NOCHANGE : only_healthy ? PH_SLOT_HEALTHY : PH_SLOT_ALL;
    nr_cache_slot_t *slot = nr_cache(svc, which);
    if (!slot) {
        ph_discover_short(call, V1__CODE__ExecuteException, type, dr->service, "no answer cache for the service");
        return;
    }
    if (!slot->data) {
        int rc = nochange ? ph_encode_nochange(svc, slot) : ph_encode_instances(svc, only_healthy, slot);
        if (rc < 0) {
            ph_discover_short(call, V1__CODE__ExecuteException, type, dr->service, "cannot encode the answer");
            return;
        }
    }
    uint32_t code = nochange ? V1__CODE__DataNoChange : V1__CODE__ExecuteSuccess;
    ph_reply_text(call->st, call->req, polaris_http_status(code), code, (const char *)slot->data, slot->len);
}

typedef struct ph_svc_list {
    V1__Service *items; /* name, namespace, metadata of each */
    V1__Service **ptrs;
    size_t n, cap;
} ph_svc_list_t;

static void ph_collect_service(const nr_service_t *svc, void *arg)
{
    ph_svc_list_t *l = arg;
    if (l->n >= l->cap || !svc->state || !svc->state->service)
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

static void ph_discover_services(ph_call_t *call, nr_t *r, V1__DiscoverRequest *dr)
{
    const ph_dtype_t type = V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__SERVICES;
    const char *ns = dr->service ? sv(dr->service->namespace_) : "";
    const char *rev = nr_services_revision(r, ns);
    if (!rev || !*rev) { /* nothing to list: success without a revision, as Polaris */
        ph_discover_short(call, V1__CODE__ExecuteSuccess, type, dr->service, NULL);
        return;
    }
    if (dr->service && !strcmp(sv(dr->service->revision), rev)) {
        ph_discover_short(call, V1__CODE__DataNoChange, type, dr->service, NULL);
        return;
    }
    size_t cap = nr_service_count(r);
    ph_svc_list_t l = {.items = calloc(cap ? cap : 1, sizeof *l.items), .ptrs = calloc(cap ? cap : 1, sizeof *l.ptrs),
                       .cap = cap};
    if (!l.items || !l.ptrs) {
        free(l.items);
        free(l.ptrs);
        ph_discover_short(call, V1__CODE__ExecuteException, type, dr->service, "out of memory");
        return;
    }
    nr_foreach_service(r, *ns ? ns : NULL, ph_collect_service, &l);
    Google__Protobuf__StringValue wns, wname, wrev;
    V1__Service head = V1__SERVICE__INIT;
    head.namespace_ = PH_STR(wns, ns);
    head.name = PH_STR(wname, dr->service ? sv(dr->service->name) : "");
    head.revision = PH_STR(wrev, rev);
    Google__Protobuf__UInt32Value c;
    Google__Protobuf__StringValue i;
    V1__DiscoverResponse resp = V1__DISCOVER_RESPONSE__INIT;
    resp.code = PH_U32(c, V1__CODE__ExecuteSuccess);
    resp.info = PH_STR(i, polaris_code_info(V1__CODE__ExecuteSuccess));
    resp.type = type;
    resp.service = &head;
    resp.n_services = l.n;
    resp.services = l.ptrs;
    ph_reply_message(call->st, call->req, &resp.base, V1__CODE__ExecuteSuccess);
    free(l.items);
    free(l.ptrs);
}

/* Rule types served empty until rules exist, under a stable revision per
 * (type, namespace, service): the same digest the gRPC gateway gives. */
static void ph_discover_rules(ph_call_t *call, V1__DiscoverRequest *dr, ph_dtype_t type)
{
    const char *what = NULL;
    uint32_t bad = ph_check_key(dr->service, &what);
    if (bad) {
        ph_discover_short(call, bad, type, dr->service, what);
        return;
    }
    char rev[NAMING_HEX_LEN + 1];
    char tbuf[16];
    snprintf(tbuf, sizeof tbuf, "%d", (int)type);
    naming_digest_t d;
    if (naming_digest_init(&d) < 0) {
        ph_discover_short(call, V1__CODE__ExecuteException, type, dr->service, "out of memory");
        return;
    }
    naming_digest_add_str(&d, "lodestar:no-rules");
    naming_digest_add_str(&d, tbuf);
    naming_digest_add_str(&d, sv(dr->service->namespace_));
    naming_digest_add_str(&d, sv(dr->service->name));
    naming_digest_hex(&d, rev);
    if (!strcmp(sv(dr->service->revision), rev)) {
        ph_discover_short(call, V1__CODE__DataNoChange, type, dr->service, NULL);
        return;
    }
    Google__Protobuf__StringValue wrev;
    V1__Service svc = V1__SERVICE__INIT, alias = V1__SERVICE__INIT;
    svc.name = alias.name = dr->service->name;
    svc.namespace_ = alias.namespace_ = dr->service->namespace_;
    svc.revision = PH_STR(wrev, rev);
    V1__Routing routing = V1__ROUTING__INIT;
    V1__RateLimit ratelimit = V1__RATE_LIMIT__INIT;
    V1__CircuitBreaker cb = V1__CIRCUIT_BREAKER__INIT;
    V1__FaultDetector fd = V1__FAULT_DETECTOR__INIT;
    Google__Protobuf__UInt32Value c;
    Google__Protobuf__StringValue i;
    V1__DiscoverResponse resp = V1__DISCOVER_RESPONSE__INIT;
    resp.code = PH_U32(c, V1__CODE__ExecuteSuccess);
    resp.info = PH_STR(i, polaris_code_info(V1__CODE__ExecuteSuccess));
    resp.type = type;
    resp.service = &svc;
    resp.aliasfor = &alias;
    switch (type) {
    case V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__ROUTING:
        routing.service = dr->service->name;
        routing.namespace_ = dr->service->namespace_;
        routing.revision = &wrev;
        resp.routing = &routing;
        break;
    case V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__RATE_LIMIT:
        ratelimit.revision = &wrev;
        resp.ratelimit = &ratelimit;
        break;
    case V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__CIRCUIT_BREAKER:
        cb.service = dr->service->name;
        cb.service_namespace = dr->service->namespace_;
        cb.revision = &wrev;
        resp.circuitbreaker = &cb;
        break;
    default: /* FAULT_DETECTOR */
        fd.revision = rev;
        resp.faultdetector = &fd;
        break;
    }
    ph_reply_message(call->st, call->req, &resp.base, V1__CODE__ExecuteSuccess);
}

void ph_discover(ph_call_t *call)
{
    V1__DiscoverRequest *dr = (V1__DiscoverRequest *)ph_parse_one(call, &v1__discover_request__descriptor);
    if (!dr)
        return;
    ph_state_t *st = call->st;
    nr_t *r = st->gw ? gw_replica(st->gw) : NULL;
    ph_dtype_t type = (ph_dtype_t)dr->type;
    bool known = true;
    switch (dr->type) {
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__SERVICES:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__ROUTING:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__RATE_LIMIT:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__CIRCUIT_BREAKER:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__FAULT_DETECTOR:
        break;
    default:
        known = false;
        break;
    }
    if (!known) {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(&v1__discover_request__discover_request_type__descriptor, dr->type);
        char detail[128];
        snprintf(detail, sizeof detail, "type %s is not served", v ? v->name : "unknown");
        ph_discover_short(call, V1__CODE__InvalidDiscoverResource, type, dr->service, detail);
    } else if (!st->gw) {
        ph_discover_short(call, V1__CODE__ExecuteException, type, dr->service, "the gateway is stopping");
    } else if (!r) {
        ph_discover_short(call, V1__CODE__ExecuteException, type, dr->service, "the naming worker is not enabled");
    } else if (!nr_ready(r)) {
        ph_discover_short(call, V1__CODE__ExecuteException, type, dr->service,
                          "naming data not loaded yet: the gateway waits for the naming worker's snapshot");
    } else if (dr->type == V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE) {
        ph_discover_instances(call, r, dr);
    } else if (dr->type == V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__SERVICES) {
        ph_discover_services(call, r, dr);
    } else {
        ph_discover_rules(call, dr, type);
    }
    protobuf_c_message_free_unpacked(&dr->base, NULL);
}

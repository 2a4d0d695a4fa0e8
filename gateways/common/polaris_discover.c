/*
 * polaris_discover.c: see polaris_discover.h.
 */
#include "polaris_discover.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "naming_id.h"
#include "polaris_code.h"
#include "polaris_code.pb-c.h"
#include "polaris_response.pb-c.h"

enum { SLOT_ALL = 0, SLOT_HEALTHY = 1, SLOT_NOCHANGE = 2 };

static const char *sv(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : ""; }

/* The fixed header fields of every answer. */
typedef struct head {
    Google__Protobuf__UInt32Value code;
    Google__Protobuf__StringValue info;
    char text[512];
} head_t;

static void head_set(V1__DiscoverResponse *r, head_t *h, uint32_t code, int type, const char *detail)
{
    google__protobuf__uint32_value__init(&h->code);
    google__protobuf__string_value__init(&h->info);
    if (detail)
        snprintf(h->text, sizeof h->text, "%s: %s", polaris_code_info(code), detail);
    else
        snprintf(h->text, sizeof h->text, "%s", polaris_code_info(code));
    h->code.value = code;
    h->info.value = h->text;
    r->code = &h->code;
    r->info = &h->info;
    r->type = (V1__DiscoverResponse__DiscoverResponseType)type;
}

static int owned(const ProtobufCMessage *m, uint32_t code, pd_encode_fn enc, pd_answer_t *out)
{
    memset(out, 0, sizeof *out);
    size_t len = 0;
    if (enc(m, &out->owned, &len) < 0)
        return -1;
    out->code = code;
    out->data = out->owned;
    out->len = len;
    return 0;
}

int pd_short(uint32_t code, int type, V1__Service *asked, const char *detail, pd_encode_fn enc, pd_answer_t *out)
{
    V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
    head_t h;
    head_set(&r, &h, code, type, detail);
    r.service = asked;
    return owned(&r.base, code, enc, out);
}

void pd_answer_release(pd_answer_t *a)
{
    free(a->owned);
    memset(a, 0, sizeof *a);
}

/* The service key of a request, checked as Polaris does: 0 when usable,
 * else the code to answer (with the field named in *what). */
static uint32_t check_key(const V1__Service *q, const char **what)
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

static int encode_instances(const nr_service_t *svc, bool only_healthy, pd_encode_fn enc, nr_cache_slot_t *slot)
{
    const Lodestar__NamingServiceState *st = svc->state;
    size_t n = st->n_instances;
    V1__Instance *copies = calloc(n ? n : 1, sizeof *copies);
    V1__Instance **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!copies || !ptrs) {
        free(copies);
        free(ptrs);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const Lodestar__NamingInstance *ni = st->instances[i];
        if (!ni || !ni->instance)
            continue;
        if (only_healthy && !(ni->instance->healthy && ni->instance->healthy->value))
            continue;
        copies[k] = *ni->instance;      /* shallow: the replica keeps the fields */
        copies[k].service_token = NULL; /* never handed to consumers */
        ptrs[k] = &copies[k];
        k++;
    }
    V1__Service view, alias = V1__SERVICE__INIT;
    service_view(&view, st->service);
    alias.name = st->service->name;
    alias.namespace_ = st->service->namespace_;
    V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
    head_t h;
    head_set(&r, &h, V1__CODE__ExecuteSuccess, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE, NULL);
    r.service = &view;
    r.aliasfor = &alias;
    r.n_instances = k;
    r.instances = ptrs;
    int rc = enc(&r.base, &slot->data, &slot->len);
    free(copies);
    free(ptrs);
    return rc;
}

static int encode_nochange(const nr_service_t *svc, pd_encode_fn enc, nr_cache_slot_t *slot)
{
    V1__Service s = V1__SERVICE__INIT;
    s.name = svc->state->service->name;
    s.namespace_ = svc->state->service->namespace_;
    s.revision = svc->state->service->revision;
    V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
    head_t h;
    head_set(&r, &h, V1__CODE__DataNoChange, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE, NULL);
    r.service = &s;
    return enc(&r.base, &slot->data, &slot->len);
}

static int discover_instances(nr_t *r, const V1__DiscoverRequest *dr, pd_encode_fn enc, int slot_base,
                              pd_answer_t *out)
{
    const int type = V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE;
    const char *what = NULL;
    uint32_t bad = check_key(dr->service, &what);
    if (bad)
        return pd_short(bad, type, dr->service, what, enc, out);
    const nr_service_t *svc = nr_service(r, sv(dr->service->namespace_), sv(dr->service->name));
    if (!svc || !svc->state || !svc->state->service) {
        char detail[400];
        snprintf(detail, sizeof detail, "no service %.180s in namespace %.180s", sv(dr->service->name),
                 sv(dr->service->namespace_));
        return pd_short(V1__CODE__NotFoundService, type, dr->service, detail, enc, out);
    }
    bool nochange = svc->revision && *svc->revision && strcmp(sv(dr->service->revision), svc->revision) == 0;
    bool only_healthy = dr->filter && dr->filter->onlyhealthyinstance;
    nr_cache_slot_t *slot = nr_cache(svc, slot_base + (nochange ? SLOT_NOCHANGE : only_healthy ? SLOT_HEALTHY : SLOT_ALL));
    if (!slot)
        return pd_short(V1__CODE__ExecuteException, type, dr->service, "no answer cache for the service", enc, out);
    if (!slot->data) {
        int rc = nochange ? encode_nochange(svc, enc, slot) : encode_instances(svc, only_healthy, enc, slot);
        if (rc < 0)
            return pd_short(V1__CODE__ExecuteException, type, dr->service, "cannot encode the answer", enc, out);
    }
    memset(out, 0, sizeof *out);
    out->code = nochange ? V1__CODE__DataNoChange : V1__CODE__ExecuteSuccess;
    out->data = slot->data;
    out->len = slot->len;
    return 0;
}

typedef struct svc_list {
    V1__Service *items; /* name, namespace, metadata of each */
    V1__Service **ptrs;
    size_t n, cap;
} svc_list_t;

static void collect_service(const nr_service_t *svc, void *arg)
{
    svc_list_t *l = arg;
    if (l->n >= l->cap || !svc->state || !svc->state->service)
        return;
    V1__Service *s = &l->items[l->n];
    v1__service__init(s);
    s->name = svc->state->service->name;
    s->namespace_ = svc->state->service->namespace_;
    s->n_metadata = svc->state->service->n_metadata;
    s->metadata = svc->state->service->metadata;
    l->ptrs[l->n++] = s;
}

static int discover_services(nr_t *r, const V1__DiscoverRequest *dr, pd_encode_fn enc, pd_answer_t *out)
{
    const int type = V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__SERVICES;
    const char *ns = dr->service ? sv(dr->service->namespace_) : "";
    const char *rev = nr_services_revision(r, ns);
    if (!rev || !*rev) /* nothing to list: success without a revision, as Polaris */
        return pd_short(V1__CODE__ExecuteSuccess, type, dr->service, NULL, enc, out);
    if (dr->service && strcmp(sv(dr->service->revision), rev) == 0)
        return pd_short(V1__CODE__DataNoChange, type, dr->service, NULL, enc, out);
    size_t cap = nr_service_count(r);
    svc_list_t l = {.items = calloc(cap ? cap : 1, sizeof *l.items), .ptrs = calloc(cap ? cap : 1, sizeof *l.ptrs),
                    .cap = cap};
    if (!l.items || !l.ptrs) {
        free(l.items);
        free(l.ptrs);
        return pd_short(V1__CODE__ExecuteException, type, dr->service, "out of memory", enc, out);
    }
    nr_foreach_service(r, *ns ? ns : NULL, collect_service, &l);
    Google__Protobuf__StringValue wns = GOOGLE__PROTOBUF__STRING_VALUE__INIT, wname = wns, wrev = wns;
    wns.value = (char *)ns;
    wname.value = (char *)(dr->service ? sv(dr->service->name) : "");
    wrev.value = (char *)rev;
    V1__Service head = V1__SERVICE__INIT;
    head.namespace_ = &wns;
    head.name = &wname;
    head.revision = &wrev;
    V1__DiscoverResponse resp = V1__DISCOVER_RESPONSE__INIT;
    head_t h;
    head_set(&resp, &h, V1__CODE__ExecuteSuccess, type, NULL);
    resp.service = &head;
    resp.n_services = l.n;
    resp.services = l.ptrs;
    int rc = owned(&resp.base, V1__CODE__ExecuteSuccess, enc, out);
    free(l.items);
    free(l.ptrs);
    return rc;
}

/* Rule types served empty until rules exist: a stable revision per
 * (type, namespace, service), so SDKs get DataNoChange on repeat. */
static int discover_rules(const V1__DiscoverRequest *dr, pd_encode_fn enc, pd_answer_t *out)
{
    int type = (int)dr->type;
    const char *what = NULL;
    uint32_t bad = check_key(dr->service, &what);
    if (bad)
        return pd_short(bad, type, dr->service, what, enc, out);
    char rev[NAMING_HEX_LEN + 1], tbuf[16];
    snprintf(tbuf, sizeof tbuf, "%d", type);
    naming_digest_t d;
    if (naming_digest_init(&d) < 0)
        return pd_short(V1__CODE__ExecuteException, type, dr->service, "out of memory", enc, out);
    naming_digest_add_str(&d, "lodestar:no-rules");
    naming_digest_add_str(&d, tbuf);
    naming_digest_add_str(&d, sv(dr->service->namespace_));
    naming_digest_add_str(&d, sv(dr->service->name));
    naming_digest_hex(&d, rev);
    if (strcmp(sv(dr->service->revision), rev) == 0)
        return pd_short(V1__CODE__DataNoChange, type, dr->service, NULL, enc, out);
    Google__Protobuf__StringValue wrev = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    wrev.value = rev;
    V1__Service svc = V1__SERVICE__INIT, alias = V1__SERVICE__INIT;
    svc.name = alias.name = dr->service->name;
    svc.namespace_ = alias.namespace_ = dr->service->namespace_;
    svc.revision = &wrev;
    V1__DiscoverResponse resp = V1__DISCOVER_RESPONSE__INIT;
    head_t h;
    head_set(&resp, &h, V1__CODE__ExecuteSuccess, type, NULL);
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
        routing.revision = &wrev;
        resp.routing = &routing;
        break;
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__RATE_LIMIT:
        ratelimit.revision = &wrev;
        resp.ratelimit = &ratelimit;
        break;
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__CIRCUIT_BREAKER:
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
    return owned(&resp.base, V1__CODE__ExecuteSuccess, enc, out);
}

int pd_discover(nr_t *r, const V1__DiscoverRequest *dr, pd_encode_fn enc, int slot_base, pd_answer_t *out)
{
    int type = (int)dr->type;
    switch (dr->type) {
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__SERVICES:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__ROUTING:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__RATE_LIMIT:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__CIRCUIT_BREAKER:
    case V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__FAULT_DETECTOR:
        break;
    default: {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(&v1__discover_request__discover_request_type__descriptor, type);
        char detail[128];
        snprintf(detail, sizeof detail, "type %s is not served", v ? v->name : "unknown");
        return pd_short(V1__CODE__InvalidDiscoverResource, type, dr->service, detail, enc, out);
    }
    }
    if (!r)
        return pd_short(V1__CODE__ExecuteException, type, dr->service, "the naming worker is not enabled", enc, out);
    if (!nr_ready(r))
        return pd_short(V1__CODE__ExecuteException, type, dr->service,
                        "naming data not loaded yet: the gateway waits for the naming worker's snapshot", enc, out);
    int rc;
    nr_lock(r); /* cache slots are filled here; see polaris_discover.h for out->data */
    if (dr->type == V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE)
        rc = discover_instances(r, dr, enc, slot_base, out);
    else if (dr->type == V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__SERVICES)
        rc = discover_services(r, dr, enc, out);
    else
        rc = discover_rules(dr, enc, out);
    nr_unlock(r);
    return rc;
}

uint32_t pd_beat_target(nr_t *r, const V1__Instance *in, char idbuf[41], const char **id, const char **why)
{
    *id = NULL;
    *why = NULL;
    if (in->id) {
        if (!*sv(in->id)) {
            *why = "id is empty";
            return V1__CODE__InvalidInstanceID;
        }
        *id = sv(in->id);
    } else {
        if (!*sv(in->service)) {
            *why = "service is required without an id";
            return V1__CODE__InvalidServiceName;
        }
        if (!*sv(in->namespace_)) {
            *why = "namespace is required without an id";
            return V1__CODE__InvalidNamespaceName;
        }
        if (!*sv(in->host)) {
            *why = "host is required without an id";
            return V1__CODE__InvalidInstanceHost;
        }
        if (!in->port || in->port->value == 0 || in->port->value > 65535) {
            *why = "port must be 1..65535 without an id";
            return V1__CODE__InvalidInstancePort;
        }
        naming_instance_id(sv(in->namespace_), sv(in->service), sv(in->vpc_id), sv(in->host), in->port->value, idbuf);
        *id = idbuf;
    }
    if (!r) {
        *why = "the naming worker is not enabled";
        return V1__CODE__ExecuteException;
    }
    if (!nr_ready(r)) {
        *why = "naming data not loaded yet: the gateway waits for the naming worker's snapshot";
        return V1__CODE__ExecuteException;
    }
    const Lodestar__NamingInstance *ni = nr_instance(r, *id, NULL);
    if (!ni || !ni->instance) {
        *why = "no instance with that id";
        return V1__CODE__NotFoundInstance;
    }
    const V1__Instance *known = ni->instance;
    if (!(known->enable_health_check && known->enable_health_check->value && known->health_check)) {
        *why = "the instance has no heartbeat health check";
        return V1__CODE__HeartbeatOnDisabledIns;
    }
    return 0;
}

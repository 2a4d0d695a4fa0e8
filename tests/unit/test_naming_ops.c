/*
 * test_naming_ops.c: what write requests do (workers/naming/nm_ops.c), how
 * a batch accumulates the rows it writes, the responses built from the
 * results, and the OpenAPI queries (nm_query.c). PostgreSQL is simulated by
 * commit(): every pending row gets a fresh row_version and is applied, as
 * the worker does with the rows RETURNING hands back.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "naming.h"

static nm_arena_t A;
static nm_model_t *M;
static nm_overlay_t OV;
static cfg_naming_worker_t CFG;
static int64_t VERSION;
static int64_t CLOCK_MS = 1700000000000LL;

static void setup(void)
{
    nm_arena_init(&A, 4096);
    M = nm_model_new();
    memset(&OV, 0, sizeof OV);
    CFG = (cfg_naming_worker_t){.auto_create_namespace = true, .auto_create_service = true, .batch_max = 128,
                                .batch_wait_ms = 32, .batch_queue_size = 10240, .sync_interval_ms = 250,
                                .deleted_retention_s = 3600};
    VERSION = 0;
    /* the namespace the schema creates */
    nm_namespace_t *ns = nm_namespace_new("default");
    ns->row_version = ++VERSION;
    nm_model_apply_namespace(M, ns);
    nm_model_clear_touched(M);
}

static void teardown(void)
{
    nm_overlay_free(&OV);
    nm_model_free(M);
    nm_arena_free(&A);
}

TestSuite(naming_ops, .init = setup, .fini = teardown);

/* What PostgreSQL would do with the batch: CREATE rows only when no live
 * row exists; every written row gets a new row_version and times. */
static void commit(void)
{
    CLOCK_MS += 1000;
    for (nm_namespace_t *x = OV.namespaces; x; x = x->hh.next) {
        const nm_namespace_t *cur = nm_model_namespace(M, x->name);
        if (x->mode == NM_MODE_CREATE && cur)
            continue;
        nm_namespace_t *r = nm_namespace_dup(x);
        r->row_version = ++VERSION;
        r->ctime_ms = cur ? cur->ctime_ms : CLOCK_MS;
        r->mtime_ms = CLOCK_MS;
        nm_model_apply_namespace(M, r);
    }
    for (nm_service_t *x = OV.services; x; x = x->hh.next) {
        const nm_service_t *cur = nm_model_service(M, x->ns, x->name);
        if (x->mode == NM_MODE_CREATE && cur && cur->has_row)
            continue;
        nm_service_t *r = nm_service_dup(x);
        r->row_version = ++VERSION;
        r->ctime_ms = cur && cur->has_row ? cur->ctime_ms : CLOCK_MS;
        r->mtime_ms = CLOCK_MS;
        nm_model_apply_service(M, r);
    }
    for (nm_instance_t *x = OV.instances; x; x = x->hh.next) {
        const nm_instance_t *cur = nm_model_instance(M, x->id);
        nm_instance_t *r = nm_instance_dup(x);
        r->row_version = ++VERSION;
        r->ctime_ms = cur ? cur->ctime_ms : CLOCK_MS;
        r->mtime_ms = CLOCK_MS;
        nm_model_apply_instance(M, r);
    }
    nm_model_finish(M);
    nm_model_clear_touched(M);
    nm_overlay_free(&OV);
}

static Google__Protobuf__StringValue *S(const char *v)
{
    Google__Protobuf__StringValue *w = nm_arena_alloc(&A, sizeof *w);
    google__protobuf__string_value__init(w);
    w->value = nm_arena_strdup(&A, v);
    return w;
}

static Google__Protobuf__UInt32Value *U(uint32_t v)
{
    Google__Protobuf__UInt32Value *w = nm_arena_alloc(&A, sizeof *w);
    google__protobuf__uint32_value__init(w);
    w->value = v;
    return w;
}

static Google__Protobuf__BoolValue *B(bool v)
{
    Google__Protobuf__BoolValue *w = nm_arena_alloc(&A, sizeof *w);
    google__protobuf__bool_value__init(w);
    w->value = v;
    return w;
}

static V1__Instance *inst(const char *ns, const char *svc, const char *host, uint32_t port)
{
    V1__Instance *in = nm_arena_alloc(&A, sizeof *in);
    v1__instance__init(in);
    if (ns)
        in->namespace_ = S(ns);
    if (svc)
        in->service = S(svc);
    if (host)
        in->host = S(host);
    in->port = U(port);
    return in;
}

static void meta(V1__Instance *in, const char *k, const char *v)
{
    V1__Instance__MetadataEntry **m = nm_arena_alloc(&A, (in->n_metadata + 1) * sizeof *m);
    if (in->n_metadata)
        memcpy(m, in->metadata, in->n_metadata * sizeof *m);
    V1__Instance__MetadataEntry *e = nm_arena_alloc(&A, sizeof *e);
    v1__instance__metadata_entry__init(e);
    e->key = nm_arena_strdup(&A, k);
    e->value = nm_arena_strdup(&A, v);
    m[in->n_metadata++] = e;
    in->metadata = m;
}

static V1__HealthCheck *heartbeat(uint32_t ttl)
{
    V1__HealthCheck *hc = nm_arena_alloc(&A, sizeof *hc);
    v1__health_check__init(hc);
    hc->type = V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT;
    V1__HeartbeatHealthCheck *hb = nm_arena_alloc(&A, sizeof *hb);
    v1__heartbeat_health_check__init(hb);
    hb->ttl = U(ttl);
    hc->heartbeat = hb;
    return hc;
}

static Lodestar__NamingWriteRequest *ireq(int op, V1__Instance **list, size_t n)
{
    Lodestar__NamingWriteRequest *r = nm_arena_alloc(&A, sizeof *r);
    lodestar__naming_write_request__init(r);
    r->op = op;
    r->n_instances = n;
    r->instances = nm_arena_alloc(&A, n * sizeof *r->instances);
    for (size_t i = 0; i < n; i++) {
        Lodestar__NamingInstance *ni = nm_arena_alloc(&A, sizeof *ni);
        lodestar__naming_instance__init(ni);
        ni->instance = list[i];
        r->instances[i] = ni;
    }
    return r;
}

static Lodestar__NamingWriteRequest *sreq(int op, V1__Service *s)
{
    Lodestar__NamingWriteRequest *r = nm_arena_alloc(&A, sizeof *r);
    lodestar__naming_write_request__init(r);
    r->op = op;
    r->n_services = 1;
    r->services = nm_arena_alloc(&A, sizeof *r->services);
    r->services[0] = s;
    return r;
}

static Lodestar__NamingWriteRequest *nreq(int op, const char *name)
{
    Lodestar__NamingWriteRequest *r = nm_arena_alloc(&A, sizeof *r);
    lodestar__naming_write_request__init(r);
    r->op = op;
    r->n_namespaces = 1;
    r->namespaces = nm_arena_alloc(&A, sizeof *r->namespaces);
    V1__Namespace *ns = nm_arena_alloc(&A, sizeof *ns);
    v1__namespace__init(ns);
    ns->name = S(name);
    r->namespaces[0] = ns;
    return r;
}

static V1__Service *svc(const char *ns, const char *name)
{
    V1__Service *s = nm_arena_alloc(&A, sizeof *s);
    v1__service__init(s);
    s->namespace_ = S(ns);
    s->name = S(name);
    return s;
}

#define REG LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER
#define DEREG LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER
#define UPDATE LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_UPDATE

/* Evaluate one request; its results stay valid until the next call. */
static nm_result_t RES[8];
static bool eval(Lodestar__NamingWriteRequest *r)
{
    for (size_t i = 0; i < 8; i++)
        nm_result_clear(&RES[i]);
    cr_assert_leq(nm_request_items(r), 8u);
    return nm_ops_eval(M, &OV, &CFG, r, RES);
}

static void register_one(const char *ns, const char *svc_name, const char *host, uint32_t port)
{
    V1__Instance *in = inst(ns, svc_name, host, port);
    cr_assert(eval(ireq(REG, &in, 1)), "registration failed: %s", RES[0].info);
    commit();
}

static char *id_of(const char *ns, const char *svc_name, const char *host, uint32_t port, char out[41])
{
    naming_instance_id(ns, svc_name, NULL, host, port, out);
    return out;
}

Test(naming_ops, register_computes_the_id_and_creates_what_is_missing)
{
    V1__Instance *in = inst("prod", "echo", "10.0.0.1", 8080);
    cr_assert(eval(ireq(REG, &in, 1)));
    char id[41];
    id_of("prod", "echo", "10.0.0.1", 8080, id);
    cr_assert_eq(RES[0].code, 200000u);
    cr_assert_str_eq(((nm_instance_t *)RES[0].obj)->id, id);
    nm_instance_t *pending = NULL;
    HASH_FIND_STR(OV.instances, id, pending);
    cr_assert_not_null(pending);
    cr_assert_eq(pending->weight, 100u, "Polaris's default weight");
    cr_assert(pending->healthy, "healthy by default");
    cr_assert_not(pending->isolate);
    cr_assert_not(pending->enable_hc);
    nm_namespace_t *ns = NULL;
    HASH_FIND_STR(OV.namespaces, "prod", ns);
    cr_assert(ns && ns->mode == NM_MODE_CREATE, "the namespace is created (only if absent)");
    nm_service_t *s = NULL;
    HASH_FIND_STR(OV.services, "prod\x1f" "echo", s);
    cr_assert(s && s->mode == NM_MODE_CREATE);
    cr_assert_str_eq(nm_meta_get(&s->meta, "internal-auto-created"), "true");
    cr_assert_str_eq(s->owners, "Polaris");
    cr_assert_eq(strlen(s->token), 32u);
    cr_assert_null(nm_model_instance(M, id), "nothing changes before the commit");
    commit();
    cr_assert_not_null(nm_model_instance(M, id));
    cr_assert(nm_model_service(M, "prod", "echo")->has_row);
}

Test(naming_ops, auto_creation_can_be_off)
{
    CFG.auto_create_namespace = false;
    V1__Instance *in = inst("prod", "echo", "10.0.0.1", 8080);
    cr_assert_not(eval(ireq(REG, &in, 1)));
    cr_assert_eq(RES[0].code, 400305u);
    cr_assert_str_eq(RES[0].info, "not found namespace: namespace prod does not exist and "
                                  "workers.naming.auto_create_namespace is off");
    cr_assert(nm_overlay_empty(&OV));
    CFG.auto_create_service = false;
    in = inst("default", "echo", "10.0.0.1", 8080);
    cr_assert_not(eval(ireq(REG, &in, 1)));
    cr_assert_eq(RES[0].code, 400301u);
    cr_assert_str_eq(RES[0].info, "not found service: service default/echo does not exist and "
                                  "workers.naming.auto_create_service is off");
}

Test(naming_ops, reregistering_updates_in_place)
{
    register_one("default", "echo", "10.0.0.1", 8080);
    char id[41];
    id_of("default", "echo", "10.0.0.1", 8080, id);
    int64_t ctime = nm_model_instance(M, id)->ctime_ms;
    /* an operator isolates it */
    V1__Instance *iso = inst(NULL, NULL, NULL, 0);
    iso->port = NULL;
    iso->id = S(id);
    iso->isolate = B(true);
    cr_assert(eval(ireq(UPDATE, &iso, 1)));
    cr_assert_eq(RES[0].code, 200000u);
    commit();
    /* the client registers again with another weight and no isolate flag */
    V1__Instance *again = inst("default", "echo", "10.0.0.1", 8080);
    again->weight = U(7);
    cr_assert(eval(ireq(REG, &again, 1)));
    commit();
    cr_assert_eq(HASH_COUNT(M->instances), 1u, "still one instance");
    nm_instance_t *cur = nm_model_instance(M, id);
    cr_assert_eq(cur->weight, 7u);
    cr_assert(cur->isolate, "a registration without isolate keeps the isolate flag (Polaris)");
    cr_assert_eq(cur->ctime_ms, ctime, "ctime survives re-registration");
}

Test(naming_ops, an_explicit_id_is_the_identity)
{
    register_one("default", "echo", "10.0.0.1", 8080);
    V1__Instance *in = inst("default", "echo", "10.0.0.1", 8080);
    in->id = S("client-chosen");
    cr_assert(eval(ireq(REG, &in, 1)));
    commit();
    cr_assert_eq(HASH_COUNT(M->instances), 2u,
                 "Polaris keys instances by id only: a different id at the same address is another instance");
    cr_assert_not_null(nm_model_instance(M, "client-chosen"));
}

Test(naming_ops, health_check_rules)
{
    V1__Instance *list[3] = {inst("default", "a", "h", 1), inst("default", "a", "h", 2), inst("default", "a", "h", 3)};
    list[0]->health_check = heartbeat(0);
    list[1]->health_check = heartbeat(61);
    list[2]->health_check = heartbeat(10);
    list[2]->enable_health_check = B(false);
    cr_assert(eval(ireq(REG, list, 3)));
    nm_instance_t *a = RES[0].obj, *b = RES[1].obj, *c = RES[2].obj;
    cr_assert(a->enable_hc && a->hc_type == 1 && a->hc_ttl == 5, "TTL 0 becomes 5");
    cr_assert(b->enable_hc && b->hc_ttl == 5, "TTL above 60 becomes 5");
    cr_assert(!c->enable_hc && c->hc_type == -1, "enable_health_check false wins over a health_check block");
}

Test(naming_ops, deregister)
{
    V1__Instance *in = inst("default", "echo", "10.0.0.9", 1);
    cr_assert(eval(ireq(DEREG, &in, 1)));
    cr_assert_eq(RES[0].code, 200000u, "deregistering an unknown instance succeeds (Polaris)");
    cr_assert(nm_overlay_empty(&OV), "and writes nothing");
    register_one("default", "echo", "10.0.0.9", 1);
    cr_assert(eval(ireq(DEREG, &in, 1)));
    cr_assert(OV.instances && OV.instances->deleted, "a soft delete");
    commit();
    cr_assert_eq(HASH_COUNT(M->instances), 0u);
    cr_assert_null(nm_model_service(M, "default", "echo")->instances);
}

Test(naming_ops, update)
{
    V1__Instance *in = inst("default", "echo", "h", 1);
    in->weight = U(5);
    cr_assert_not(eval(ireq(UPDATE, &in, 1)));
    cr_assert_eq(RES[0].code, 400303u);
    register_one("default", "echo", "h", 1);
    in = inst("default", "echo", "h", 1);
    in->weight = U(100);
    cr_assert(eval(ireq(UPDATE, &in, 1)));
    cr_assert_eq(RES[0].code, 200002u, "nothing changed: NoNeedUpdate");
    cr_assert(nm_overlay_empty(&OV));
    in->weight = U(5);
    meta(in, "k", "v");
    in->health_check = heartbeat(3);
    cr_assert(eval(ireq(UPDATE, &in, 1)));
    cr_assert_eq(RES[0].code, 200000u);
    nm_instance_t *x = RES[0].obj;
    cr_assert_eq(x->weight, 5u);
    cr_assert_str_eq(nm_meta_get(&x->meta, "k"), "v");
    cr_assert(x->enable_hc && x->hc_ttl == 3);
    cr_assert_not(x->healthy, "switching the health check on waits for the first heartbeat");
    cr_assert_str_eq(x->host, "h", "fields the update does not carry stay");
}

Test(naming_ops, requests_in_one_batch_see_each_other)
{
    V1__Instance *in = inst("default", "echo", "h", 1);
    cr_assert(eval(ireq(REG, &in, 1)));
    cr_assert(eval(ireq(DEREG, &in, 1)));
    cr_assert_eq(HASH_COUNT(OV.instances), 1u, "one row per key: the final state");
    cr_assert(OV.instances->deleted);
    V1__Instance *up = inst("default", "echo", "h", 1);
    up->weight = U(1);
    cr_assert_not(eval(ireq(UPDATE, &up, 1)));
    cr_assert_eq(RES[0].code, 400303u, "the pending deregistration hides the instance");
}

Test(naming_ops, a_request_is_atomic)
{
    register_one("default", "echo", "h", 1);
    V1__Instance *list[2] = {inst("default", "echo", "h", 1), inst("default", "echo", "other", 2)};
    list[0]->weight = U(9);
    list[1]->weight = U(9);
    cr_assert_not(eval(ireq(UPDATE, list, 2)));
    cr_assert_eq(RES[1].code, 400303u);
    cr_assert_eq(RES[0].code, 400000u);
    cr_assert_str_eq(RES[0].info, "bad request: batch rejected: item 1 invalid");
    cr_assert(nm_overlay_empty(&OV), "nothing of a failed request is written");
}

Test(naming_ops, services_and_namespaces)
{
    V1__Service *s = svc("default", "echo");
    s->business = S("pay");
    cr_assert(eval(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE, s)));
    cr_assert(RES[0].create && strcmp(RES[0].key, "default\x1f" "echo") == 0);
    commit();
    cr_assert_not(eval(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE, s)));
    cr_assert_eq(RES[0].code, 400201u);
    cr_assert_str_eq(RES[0].info, "existed resource: service default/echo already exists");

    register_one("default", "echo", "h", 1);
    cr_assert_not(eval(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_DELETE, s)));
    cr_assert_eq(RES[0].code, 400204u);
    cr_assert_not(eval(nreq(LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_DELETE, "default")));
    cr_assert_eq(RES[0].code, 400203u);

    V1__Service *u = svc("default", "echo");
    u->business = S("pay");
    cr_assert(eval(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE, u)));
    cr_assert_eq(RES[0].code, 200002u);
    u->comment = S("new");
    cr_assert(eval(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE, u)));
    cr_assert_eq(RES[0].code, 200000u);
    commit();
    cr_assert_str_eq(nm_model_service(M, "default", "echo")->comment, "new");
    cr_assert_not(eval(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE, svc("default", "nope"))));
    cr_assert_eq(RES[0].code, 400202u);

    cr_assert(eval(nreq(LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_CREATE, "prod")));
    commit();
    cr_assert_not(eval(nreq(LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_CREATE, "prod")));
    cr_assert_eq(RES[0].code, 400201u);
    cr_assert(eval(nreq(LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_DELETE, "prod")));
    commit();
    cr_assert_null(nm_model_namespace(M, "prod"));
    cr_assert(eval(nreq(LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_DELETE, "prod")));
    cr_assert_eq(RES[0].code, 200000u, "deleting an absent namespace succeeds");
}

Test(naming_ops, by_host)
{
    register_one("default", "a", "10.0.0.1", 1);
    register_one("default", "a", "10.0.0.1", 2);
    register_one("default", "b", "10.0.0.1", 3);
    register_one("default", "a", "10.0.0.2", 4);
    V1__Instance *q = inst("default", "a", "10.0.0.1", 0);
    q->port = NULL;
    q->isolate = B(true);
    cr_assert(eval(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST, &q, 1)));
    cr_assert_eq(HASH_COUNT(OV.instances), 2u, "namespace and service narrow the host");
    commit();
    cr_assert(eval(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST, &q, 1)));
    cr_assert_eq(RES[0].code, 200002u);
    V1__Instance *d = inst(NULL, NULL, "10.0.0.1", 0);
    d->port = NULL;
    cr_assert(eval(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DELETE_HOST, &d, 1)));
    cr_assert_eq(HASH_COUNT(OV.instances), 3u, "without service every instance on the host goes");
    commit();
    cr_assert_eq(HASH_COUNT(M->instances), 1u);
    q->host = S("10.9.9.9");
    cr_assert_not(eval(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST, &q, 1)));
    cr_assert_eq(RES[0].code, 400303u);
    V1__Instance *n = inst("default", "ghost", "10.0.0.1", 0);
    n->port = NULL;
    cr_assert_not(eval(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DELETE_HOST, &n, 1)));
    cr_assert_eq(RES[0].code, 400301u);
}

Test(naming_ops, set_health)
{
    register_one("default", "echo", "h", 1);
    char id[41];
    id_of("default", "echo", "h", 1, id);
    V1__Instance *in = inst(NULL, NULL, NULL, 0);
    in->port = NULL;
    in->id = S(id);
    in->healthy = B(true);
    cr_assert(eval(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH, &in, 1)));
    cr_assert_eq(RES[0].code, 200002u);
    in->healthy = B(false);
    cr_assert(eval(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH, &in, 1)));
    cr_assert_eq(RES[0].code, 200000u);
    commit();
    cr_assert_not(nm_model_instance(M, id)->healthy);
    cr_assert_eq(nm_model_service(M, "default", "echo")->n_healthy, 0u);
    V1__Instance *two[2] = {inst(NULL, NULL, NULL, 0), in};
    two[0]->port = NULL;
    two[0]->id = S("gone-meanwhile");
    two[0]->healthy = B(true);
    in->healthy = B(true);
    cr_assert(eval(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH, two, 2)),
              "an unknown instance does not hold back the other health verdicts");
    cr_assert_eq(RES[0].code, 400303u);
    cr_assert_eq(RES[1].code, 200000u);
    commit();
    cr_assert(nm_model_instance(M, id)->healthy);
}

Test(naming_ops, create_mode_tracks_rows_the_batch_creates)
{
    V1__Instance *in = inst("default", "echo", "h", 1);
    cr_assert(eval(ireq(REG, &in, 1)));
    V1__Service *u = svc("default", "echo");
    u->comment = S("x");
    cr_assert(eval(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE, u)));
    nm_service_t *s = NULL;
    HASH_FIND_STR(OV.services, "default\x1f" "echo", s);
    cr_assert_eq(s->mode, NM_MODE_CREATE, "a row created in this batch keeps CREATE mode when rewritten");
    cr_assert_str_eq(s->comment, "x");
    commit();
    cr_assert(eval(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE, svc("default", "echo"))));
    u->comment = S("y");
    cr_assert(eval(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE, u)));
    HASH_FIND_STR(OV.services, "default\x1f" "echo", s);
    cr_assert_eq(s->mode, NM_MODE_OVERWRITE, "a committed row is overwritten");
}

Test(naming_ops, batch_response)
{
    register_one("default", "echo", "h", 1);
    V1__Instance *list[2] = {inst("default", "echo", "h", 1), inst("default", "echo", "h", 2)};
    list[1]->id = S("");
    list[0]->weight = U(3);
    cr_assert(eval(ireq(REG, list, 2)));
    Lodestar__NamingWriteRequest *r = ireq(REG, list, 2);
    commit();
    V1__BatchWriteResponse *b = nm_batch_response(&A, M, r, RES, 2);
    cr_assert_eq(b->code->value, 200000u);
    cr_assert_eq(b->size->value, 2u);
    cr_assert_eq(b->n_responses, 2u);
    char id[41];
    id_of("default", "echo", "h", 1, id);
    V1__Instance *out = b->responses[0]->instance;
    cr_assert_str_eq(out->id->value, id);
    cr_assert_eq(out->weight->value, 3u);
    cr_assert_str_eq(out->revision->value, nm_model_instance(M, id)->revision);
    cr_assert_str_neq(out->ctime->value, "", "times come from the committed row");
    cr_assert_str_eq(b->responses[0]->info->value, "execute success");

    V1__Instance *bad = inst("default", "echo", "h", 1);
    bad->weight = U(1);
    V1__Instance *pair[2] = {bad, inst("default", "echo", "nope", 1)};
    pair[1]->weight = U(1);
    r = ireq(UPDATE, pair, 2);
    cr_assert_not(eval(r));
    b = nm_batch_response(&A, M, r, RES, 2);
    cr_assert_eq(b->code->value, 400303u, "the first failing item's code");
    cr_assert_eq(b->responses[0]->code->value, 400000u);
    char other[41];
    id_of("default", "echo", "nope", 1, other);
    cr_assert_str_eq(b->responses[1]->instance->id->value, other, "a failed item echoes the request with its id");
}

/* An answer shows what its own request produced: when a later request of
 * the same batch changed the instance again, the earlier one's answer is
 * built from its own state (with the committed times), not from the
 * model's (newer) one. */
Test(naming_ops, batch_response_of_an_instance_changed_again_in_the_batch)
{
    nm_result_t r1[1] = {0}, r2[1] = {0};
    V1__Instance *a = inst("default", "echo", "h", 1);
    a->weight = U(3);
    Lodestar__NamingWriteRequest *q1 = ireq(REG, &a, 1);
    cr_assert(nm_ops_eval(M, &OV, &CFG, q1, r1));
    V1__Instance *b = inst("default", "echo", "h", 1);
    b->weight = U(9);
    Lodestar__NamingWriteRequest *q2 = ireq(UPDATE, &b, 1);
    cr_assert(nm_ops_eval(M, &OV, &CFG, q2, r2));
    commit();
    char id[41];
    id_of("default", "echo", "h", 1, id);
    const nm_instance_t *cur = nm_model_instance(M, id);
    cr_assert_eq(cur->weight, 9u);
    char ctime[32];
    nm_format_time(cur->ctime_ms, ctime);
    V1__BatchWriteResponse *o1 = nm_batch_response(&A, M, q1, r1, 1);
    V1__BatchWriteResponse *o2 = nm_batch_response(&A, M, q2, r2, 1);
    cr_assert_eq(o1->responses[0]->instance->weight->value, 3u, "the registration's own state");
    cr_assert_str_neq(o1->responses[0]->instance->revision->value, cur->revision);
    cr_assert_str_eq(o1->responses[0]->instance->ctime->value, ctime, "with the committed times");
    cr_assert_eq(o2->responses[0]->instance->weight->value, 9u);
    cr_assert_str_eq(o2->responses[0]->instance->revision->value, cur->revision);
    cr_assert_str_eq(o2->responses[0]->instance->ctime->value, ctime);
    nm_result_clear(&r1[0]);
    nm_result_clear(&r2[0]);
}

/* ------------------------------------------------------------------ queries */

static Lodestar__NamingQueryRequest *query(int kind, const char *const *kv)
{
    Lodestar__NamingQueryRequest *q = nm_arena_alloc(&A, sizeof *q);
    lodestar__naming_query_request__init(q);
    q->kind = kind;
    size_t n = 0;
    while (kv && kv[2 * n])
        n++;
    q->n_filters = n;
    q->filters = nm_arena_alloc(&A, n * sizeof *q->filters);
    for (size_t i = 0; i < n; i++) {
        Lodestar__NamingQueryRequest__FiltersEntry *e = nm_arena_alloc(&A, sizeof *e);
        lodestar__naming_query_request__filters_entry__init(e);
        e->key = nm_arena_strdup(&A, kv[2 * i]);
        e->value = nm_arena_strdup(&A, kv[2 * i + 1]);
        q->filters[i] = e;
    }
    return q;
}

static void fixture(void)
{
    V1__Service *s = svc("default", "pay-api");
    s->business = S("payments");
    cr_assert(eval(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE, s)));
    commit();
    register_one("default", "pay-api", "10.0.0.1", 80);
    register_one("default", "pay-web", "10.0.0.2", 80);
    register_one("prod", "orders", "10.0.0.1", 81);
    V1__Instance *in = inst("default", "pay-api", "10.0.0.3", 80);
    meta(in, "env", "blue");
    meta(in, "zone", "a");
    cr_assert(eval(ireq(REG, &in, 1)));
    commit();
    in = inst("default", "pay-api", "10.0.0.4", 80);
    meta(in, "env", "green");
    cr_assert(eval(ireq(REG, &in, 1)));
    commit();
}

Test(naming_ops, query_services)
{
    fixture();
    const char *f1[] = {"name", "pay*", NULL};
    Lodestar__NamingQueryResponse *r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES, f1));
    cr_assert_eq(r->result->code->value, 200000u);
    cr_assert_eq(r->result->amount->value, 2u, "a trailing * matches by prefix");
    const char *f2[] = {"business", "pay", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES, f2));
    cr_assert_eq(r->result->amount->value, 1u);
    cr_assert_str_eq(r->result->services[0]->name->value, "pay-api");
    cr_assert_eq(r->result->services[0]->total_instance_count->value, 3u);
    const char *f3[] = {"host", "10.0.0.1", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES, f3));
    cr_assert_eq(r->result->amount->value, 2u, "services with an instance on the host");
    const char *f4[] = {"instance_keys", "env", "instance_values", "green", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES, f4));
    cr_assert_eq(r->result->amount->value, 1u);
    const char *f5[] = {"offset", "1", "limit", "1", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES, f5));
    cr_assert_eq(r->result->amount->value, 3u, "amount counts every match");
    cr_assert_eq(r->result->size->value, 1u);
    const char *f6[] = {"colour", "red", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES, f6));
    cr_assert_eq(r->result->code->value, 400103u);
    cr_assert_str_eq(r->result->info->value, "invalid parameter: colour is not allowed");
    const char *f7[] = {"name", "", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES, f7));
    cr_assert_str_eq(r->result->info->value, "invalid parameter: the value for name is empty");
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES_COUNT, NULL));
    cr_assert_eq(r->result->amount->value, 3u);
    const char *f8[] = {"namespace", "prod", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES_ALL, f8));
    cr_assert_eq(r->result->n_services, 1u);
}

Test(naming_ops, query_instances)
{
    fixture();
    Lodestar__NamingQueryResponse *r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES, NULL));
    cr_assert_eq(r->result->code->value, 400104u);
    const char *f0[] = {"service", "pay-api", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES, f0));
    cr_assert_eq(r->result->code->value, 400105u, "service needs a namespace (or a host)");
    const char *f1[] = {"service", "pay-api", "namespace", "default", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES, f1));
    cr_assert_eq(r->result->amount->value, 3u);
    const char *f2[] = {"host", "10.0.0.1,10.0.0.2", "port", "80", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES, f2));
    cr_assert_eq(r->result->amount->value, 2u);
    const char *f3[] = {"service", "pay-api", "namespace", "default", "keys", "env", "values", "blue", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES, f3));
    cr_assert_eq(r->result->amount->value, 1u);
    cr_assert_str_eq(r->result->instances[0]->host->value, "10.0.0.3");
    const char *f4[] = {"host", "10.0.0.1", "keys", "env", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES, f4));
    cr_assert_eq(r->result->code->value, 400105u);
    cr_assert_str_eq(r->result->info->value, "query instance, service or namespace or host is required: instance "
                                             "metadata key and value must be both provided");
    const char *f5[] = {"host", "10.0.0.1", "healthy", "maybe", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES, f5));
    cr_assert_eq(r->result->code->value, 400103u);
    const char *f6[] = {"host", "10.0.0.1", "healthy", "false", NULL};
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES, f6));
    cr_assert_eq(r->result->amount->value, 0u);
    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES_COUNT, NULL));
    cr_assert_eq(r->result->amount->value, 5u);
}

Test(naming_ops, query_labels_and_namespaces)
{
    fixture();
    const char *f[] = {"service", "pay-api", NULL};
    Lodestar__NamingQueryResponse *r =
        nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCE_LABELS, f));
    V1__InstanceLabels *il = r->response->instancelabels;
    cr_assert_str_eq(il->namespace_, "default", "namespace defaults to default");
    cr_assert_eq(il->n_labels, 2u);
    cr_assert_str_eq(il->labels[0]->key, "env");
    cr_assert_eq(il->labels[0]->value->n_values, 2u);
    cr_assert_str_eq(il->labels[0]->value->values[0], "blue");
    cr_assert_str_eq(il->labels[0]->value->values[1], "green");
    cr_assert_str_eq(il->labels[1]->key, "zone");

    r = nm_query(&A, M, query(LODESTAR__NAMING_QUERY_REQUEST__KIND__NAMESPACES, NULL));
    cr_assert_eq(r->result->amount->value, 2u);
    cr_assert_str_eq(r->result->namespaces[0]->name->value, "default");
    cr_assert_eq(r->result->namespaces[0]->total_service_count->value, 2u);
    cr_assert_eq(r->result->namespaces[0]->total_instance_count->value, 4u);
    cr_assert_eq(r->result->summary->total_instance_count, 5u);
}

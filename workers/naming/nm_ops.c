/*
 * nm_ops.c: what a write request does, decided against the committed model
 * plus the rows the current batch will write (the overlay).
 *
 * Nothing here touches the model: evaluation produces the final state of
 * every row the batch writes (nm_overlay_t) and one result per item. The
 * batch commits those rows; the model changes only when PostgreSQL returns
 * them (naming_batch.c). A request is atomic: its items are evaluated into a
 * request-local overlay layered over the batch's, which is merged only
 * when every item succeeded.
 *
 * Semantics follow polaris-server (service/instance.go, service/service.go,
 * namespace/namespace.go, common/model CreateInstanceModel):
 *   register    id given or computed (namespace##service[##vpc]##host##port);
 *               that id is the identity: the same id updates in place, keeps
 *               ctime and, when the request names no isolate, the isolate
 *               flag. An explicit id that differs from an instance already at
 *               the same address creates a second instance, because Polaris
 *               keys instances by id only (its instance table has no unique
 *               address). Defaults: weight 100, healthy true, isolate false;
 *               a heartbeat health check is on when health_check.heartbeat is
 *               given and enable_health_check is not false, with TTL 5 when
 *               0 or above 60. Namespace and service are created when absent
 *               and auto-creation is on (the service with owners "Polaris"
 *               and metadata internal-auto-created=true), else 400305/400301.
 *   deregister  soft delete; an unknown instance is success (as Polaris).
 *   update      only the fields the request carries (metadata when it has
 *               entries, as a protobuf map cannot say "empty on purpose");
 *               enabling the health check marks the instance unhealthy until
 *               a heartbeat; nothing changed -> 200002; unknown -> 400303.
 *   delete/isolate by host: every instance on the host (namespace and
 *               service narrow it; an unknown service -> 400301); isolate
 *               with no instance -> 400303, nothing to change -> 200002.
 *   set health  the health worker's verdict; unknown -> 400303, same -> 200002.
 *               The only op whose items are independent: an unknown
 *               instance (deregistered meanwhile) fails alone.
 *   service create/update/delete, namespace create/update/delete: as Polaris
 *               (400201 existing, 400202 unknown on update, success when
 *               deleting something absent, 400204/400203 when not empty).
 * Tokens: polaris-server's default configuration does not check client
 * tokens (auth.option clientOpen false), so any service_token is accepted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "naming.h"

typedef Lodestar__NamingWriteRequest req_t;

typedef struct view {
    const nm_model_t *m;
    nm_overlay_t *ov;  /* the batch */
    nm_overlay_t *rov; /* this request */
    const cfg_naming_worker_t *cfg;
    const nm_overlay_t *const *pending; /* batches sent, not yet committed */
    size_t npending;
    bool blocked; /* the request read a row a pending batch writes */
} view_t;

static const char *val(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : NULL; }
static const char *valor(const Google__Protobuf__StringValue *v, const char *d) { return val(v) ? val(v) : d; }

static void set_str(char **dst, const char *s) { nm_str_set(dst, s); }

/* ----------------------------------------------------------------- overlay */

void nm_overlay_free(nm_overlay_t *ov)
{
    nm_instance_t *in, *itmp;
    HASH_ITER(hh, ov->instances, in, itmp)
    {
        HASH_DEL(ov->instances, in);
        nm_instance_free(in);
    }
    nm_service_t *s, *stmp;
    HASH_ITER(hh, ov->services, s, stmp)
    {
        HASH_DEL(ov->services, s);
        nm_service_free(s);
    }
    nm_namespace_t *ns, *ntmp;
    HASH_ITER(hh, ov->namespaces, ns, ntmp)
    {
        HASH_DEL(ov->namespaces, ns);
        nm_namespace_free(ns);
    }
}

bool nm_overlay_empty(const nm_overlay_t *ov) { return !ov->instances && !ov->services && !ov->namespaces; }

static nm_instance_t *ov_instance(const nm_overlay_t *o, const char *id)
{
    nm_instance_t *e = NULL;
    HASH_FIND_STR(o->instances, id, e);
    return e;
}

static nm_service_t *ov_service(const nm_overlay_t *o, const char *key)
{
    nm_service_t *e = NULL;
    HASH_FIND_STR(o->services, key, e);
    return e;
}

static nm_namespace_t *ov_namespace(const nm_overlay_t *o, const char *name)
{
    nm_namespace_t *e = NULL;
    HASH_FIND_STR(o->namespaces, name, e);
    return e;
}

/* Reading below the batch: a row some pending batch writes makes the
 * request depend on that batch's outcome (blocked). */
static void check_pending_instance(view_t *v, const char *id)
{
    for (size_t i = 0; i < v->npending && !v->blocked; i++)
        v->blocked = ov_instance(v->pending[i], id) != NULL;
}

static void check_pending_service(view_t *v, const char *key)
{
    for (size_t i = 0; i < v->npending && !v->blocked; i++)
        v->blocked = ov_service(v->pending[i], key) != NULL;
}

static void check_pending_namespace(view_t *v, const char *name)
{
    for (size_t i = 0; i < v->npending && !v->blocked; i++)
        v->blocked = ov_namespace(v->pending[i], name) != NULL;
}

/* Scans (by host, instance counts, a namespace's services) read more rows
 * than can be checked one by one: any pending batch blocks them. */
static void check_pending_any(view_t *v)
{
    for (size_t i = 0; i < v->npending && !v->blocked; i++)
        v->blocked = !nm_overlay_empty(v->pending[i]);
}

/* The instance as this request sees it; NULL when absent or deleted. */
static const nm_instance_t *v_instance(view_t *v, const char *id)
{
    const nm_instance_t *e = ov_instance(v->rov, id);
    if (!e)
        e = ov_instance(v->ov, id);
    if (e)
        return e->deleted ? NULL : e;
    check_pending_instance(v, id);
    return nm_model_instance(v->m, id);
}

/* The service row as this request sees it; NULL when there is none. */
static const nm_service_t *v_service(view_t *v, const char *ns, const char *name)
{
    char buf[NM_KEY_BUF];
    char *key = nm_service_key_in(ns, name, buf);
    const nm_service_t *e = ov_service(v->rov, key);
    if (!e)
        e = ov_service(v->ov, key);
    if (!e) {
        check_pending_service(v, key);
        const nm_service_t *s = nm_model_service(v->m, ns, name);
        e = s && s->has_row ? s : NULL;
    } else if (e->deleted) {
        e = NULL;
    }
    nm_service_key_release(key, buf);
    return e;
}

static const nm_namespace_t *v_namespace(view_t *v, const char *name)
{
    const nm_namespace_t *e = ov_namespace(v->rov, name);
    if (!e)
        e = ov_namespace(v->ov, name);
    if (e)
        return e->deleted ? NULL : e;
    check_pending_namespace(v, name);
    return nm_model_namespace(v->m, name);
}

/* Calls fn for every instance the view holds that matches the filter
 * (each id once, in its topmost state). */
typedef struct host_filter {
    const char *host, *ns, *service;
} host_filter_t;

static bool matches(const nm_instance_t *in, const host_filter_t *f)
{
    return !in->deleted && strcmp(in->host, f->host) == 0 && (!f->ns || strcmp(in->ns, f->ns) == 0) &&
           (!f->service || strcmp(in->service, f->service) == 0);
}

static size_t v_instances_on_host(view_t *v, const host_filter_t *f, const nm_instance_t ***out)
{
    check_pending_any(v);
    size_t n = 0, cap = 16;
    const nm_instance_t **list = nm_xcalloc(cap, sizeof *list);
#define PUSH(x)                                                                                                        \
    do {                                                                                                               \
        if (n == cap) {                                                                                                \
            cap *= 2;                                                                                                  \
            const nm_instance_t **nl = realloc(list, cap * sizeof *list);                                              \
            if (!nl)                                                                                                   \
                nm_oom();                                                                                              \
            list = nl;                                                                                                 \
        }                                                                                                              \
        list[n++] = (x);                                                                                               \
    } while (0)
    for (const nm_instance_t *e = v->rov->instances; e; e = e->hh.next)
        if (matches(e, f))
            PUSH(e);
    for (const nm_instance_t *e = v->ov->instances; e; e = e->hh.next)
        if (!ov_instance(v->rov, e->id) && matches(e, f))
            PUSH(e);
    for (const nm_instance_t *e = v->m->instances; e; e = e->hh.next)
        if (!ov_instance(v->rov, e->id) && !ov_instance(v->ov, e->id) && matches(e, f))
            PUSH(e);
#undef PUSH
    *out = list;
    return n;
}

/* Live instances of service ns/name as the view sees them. */
static size_t v_instance_count(view_t *v, const char *ns, const char *name)
{
    check_pending_any(v);
    const nm_service_t *s = nm_model_service(v->m, ns, name);
    long n = s ? (long)s->n_instances : 0;
    const nm_overlay_t *layers[2] = {v->rov, v->ov};
    for (int l = 0; l < 2; l++) {
        for (const nm_instance_t *e = layers[l]->instances; e; e = e->hh.next) {
            if (l == 1 && ov_instance(v->rov, e->id))
                continue; /* shadowed by the request's own state */
            const nm_instance_t *cur = nm_model_instance(v->m, e->id);
            bool was = cur && strcmp(cur->ns, ns) == 0 && strcmp(cur->service, name) == 0;
            bool is = !e->deleted && strcmp(e->ns, ns) == 0 && strcmp(e->service, name) == 0;
            n += (long)is - (long)was;
        }
    }
    return n > 0 ? (size_t)n : 0;
}

/* Does namespace ns hold any service (a row or instances) in the view? */
static bool v_namespace_has_services(view_t *v, const char *ns)
{
    check_pending_any(v);
    for (const nm_service_t *s = v->m->services; s; s = s->hh.next)
        if (strcmp(s->ns, ns) == 0 && (v_service(v, s->ns, s->name) || v_instance_count(v, s->ns, s->name) > 0))
            return true;
    const nm_overlay_t *layers[2] = {v->rov, v->ov};
    for (int l = 0; l < 2; l++) {
        for (const nm_service_t *s = layers[l]->services; s; s = s->hh.next)
            if (strcmp(s->ns, ns) == 0 && v_service(v, s->ns, s->name))
                return true;
        for (const nm_instance_t *e = layers[l]->instances; e; e = e->hh.next)
            if (!e->deleted && strcmp(e->ns, ns) == 0 && v_instance(v, e->id))
                return true;
    }
    return false;
}

/* Put the new state of a row into the request overlay (takes ownership). */
static void put_instance(view_t *v, nm_instance_t *in)
{
    nm_instance_t *old = ov_instance(v->rov, in->id);
    if (old) {
        HASH_DEL(v->rov->instances, old);
        nm_instance_free(old);
    }
    nm_instance_revision(in);
    HASH_ADD_KEYPTR(hh, v->rov->instances, in->id, strlen(in->id), in);
}

/* CREATE mode (insert unless a live row exists) is kept only while the
 * batch has never written the row and the model holds no live row; a row
 * rewritten after its creation in the same batch stays in CREATE mode
 * unless it is being deleted. */
static void put_service(view_t *v, nm_service_t *s, int mode)
{
    nm_service_t *old = ov_service(v->rov, s->key);
    nm_service_t *batch = ov_service(v->ov, s->key);
    const nm_service_t *model = nm_model_service(v->m, s->ns, s->name);
    if (mode == NM_MODE_CREATE && (batch || (model && model->has_row)))
        mode = NM_MODE_OVERWRITE;
    if (mode == NM_MODE_OVERWRITE && !s->deleted && ((old && old->mode == NM_MODE_CREATE) ||
                                                     (!old && batch && batch->mode == NM_MODE_CREATE)))
        mode = NM_MODE_CREATE;
    s->mode = (uint8_t)mode;
    if (old) {
        HASH_DEL(v->rov->services, old);
        nm_service_free(old);
    }
    HASH_ADD_KEYPTR(hh, v->rov->services, s->key, strlen(s->key), s);
}

static void put_namespace(view_t *v, nm_namespace_t *ns, int mode)
{
    nm_namespace_t *old = ov_namespace(v->rov, ns->name);
    nm_namespace_t *batch = ov_namespace(v->ov, ns->name);
    if (mode == NM_MODE_CREATE && (batch || nm_model_namespace(v->m, ns->name)))
        mode = NM_MODE_OVERWRITE;
    if (mode == NM_MODE_OVERWRITE && !ns->deleted && ((old && old->mode == NM_MODE_CREATE) ||
                                                      (!old && batch && batch->mode == NM_MODE_CREATE)))
        mode = NM_MODE_CREATE;
    ns->mode = (uint8_t)mode;
    nm_namespace_revision(ns);
    if (old) {
        HASH_DEL(v->rov->namespaces, old);
        nm_namespace_free(old);
    }
    HASH_ADD_KEYPTR(hh, v->rov->namespaces, ns->name, strlen(ns->name), ns);
}

static void merge(nm_overlay_t *ov, nm_overlay_t *rov)
{
    nm_instance_t *in, *itmp;
    HASH_ITER(hh, rov->instances, in, itmp)
    {
        HASH_DEL(rov->instances, in);
        nm_instance_t *old = ov_instance(ov, in->id);
        if (old) {
            HASH_DEL(ov->instances, old);
            nm_instance_free(old);
        }
        HASH_ADD_KEYPTR(hh, ov->instances, in->id, strlen(in->id), in);
    }
    nm_service_t *s, *stmp;
    HASH_ITER(hh, rov->services, s, stmp)
    {
        HASH_DEL(rov->services, s);
        nm_service_t *old = ov_service(ov, s->key);
        if (old) {
            HASH_DEL(ov->services, old);
            nm_service_free(old);
        }
        HASH_ADD_KEYPTR(hh, ov->services, s->key, strlen(s->key), s);
    }
    nm_namespace_t *ns, *ntmp;
    HASH_ITER(hh, rov->namespaces, ns, ntmp)
    {
        HASH_DEL(rov->namespaces, ns);
        nm_namespace_t *old = ov_namespace(ov, ns->name);
        if (old) {
            HASH_DEL(ov->namespaces, old);
            nm_namespace_free(old);
        }
        HASH_ADD_KEYPTR(hh, ov->namespaces, ns->name, strlen(ns->name), ns);
    }
}

/* ----------------------------------------------------------------- results */

void nm_result_clear(nm_result_t *r)
{
    if (r->obj) {
        if (r->kind == NM_ROW_INSTANCE)
            nm_instance_free(r->obj);
        else if (r->kind == NM_ROW_SERVICE)
            nm_service_free(r->obj);
        else if (r->kind == NM_ROW_NAMESPACE)
            nm_namespace_free(r->obj);
    }
    memset(r, 0, sizeof *r);
}

void nm_results_reject_rest(nm_result_t *res, size_t n)
{
    size_t first = n;
    for (size_t i = 0; i < n && first == n; i++)
        if (res[i].code && !nm_code_ok(res[i].code))
            first = i;
    if (first == n)
        return;
    for (size_t i = 0; i < n; i++) {
        if (res[i].code && !nm_code_ok(res[i].code))
            continue;
        nm_result_clear(&res[i]);
        nm_fail(NM_BAD_REQUEST, res[i].info, sizeof res[i].info, "batch rejected: item %zu invalid", first);
        res[i].code = NM_BAD_REQUEST;
        res[i].collateral = true;
    }
}

static void ok(nm_result_t *r, uint32_t code, int kind, void *obj)
{
    r->code = code;
    snprintf(r->info, sizeof r->info, "%s", polaris_code_info(code));
    r->kind = obj ? kind : 0;
    r->obj = obj;
}

/* ------------------------------------------------------------- namespaces */

/* createNamespaceIfAbsent: 0 when the namespace exists or was created. */
static uint32_t ensure_namespace(view_t *v, const char *name, const char *owners, nm_result_t *r)
{
    if (v_namespace(v, name))
        return 0;
    if (!v->cfg->auto_create_namespace)
        return nm_fail(NM_NOT_FOUND_NAMESPACE, r->info, sizeof r->info,
                       "namespace %s does not exist and workers.naming.auto_create_namespace is off", name);
    nm_namespace_t *ns = nm_namespace_new(name);
    char token[33];
    nm_random_hex(token);
    set_str(&ns->token, token);
    set_str(&ns->owners, owners ? owners : "");
    put_namespace(v, ns, NM_MODE_CREATE);
    return 0;
}

/* ---------------------------------------------------------------- instances */

static void copy_ext(nm_instance_t *in, const Lodestar__InstanceExt *x)
{
    set_str(&in->nacos_group, x->nacos_group);
    set_str(&in->nacos_cluster, x->nacos_cluster);
    in->ephemeral = x->ephemeral;
    set_str(&in->eureka_app, x->eureka_app);
    set_str(&in->eureka_status, x->eureka_status);
    set_str(&in->eureka_overridden_status, x->eureka_overridden_status);
    in->eureka_last_dirty_ms = x->eureka_last_dirty_ms;
    set_str(&in->origin, x->origin);
}

static void copy_ext_from(nm_instance_t *in, const nm_instance_t *src)
{
    set_str(&in->nacos_group, src->nacos_group);
    set_str(&in->nacos_cluster, src->nacos_cluster);
    in->ephemeral = src->ephemeral;
    set_str(&in->eureka_app, src->eureka_app);
    set_str(&in->eureka_status, src->eureka_status);
    set_str(&in->eureka_overridden_status, src->eureka_overridden_status);
    in->eureka_last_dirty_ms = src->eureka_last_dirty_ms;
    set_str(&in->origin, src->origin);
}

static bool ext_equal(const nm_instance_t *a, const nm_instance_t *b)
{
    return strcmp(a->nacos_group, b->nacos_group) == 0 && strcmp(a->nacos_cluster, b->nacos_cluster) == 0 &&
           a->ephemeral == b->ephemeral && strcmp(a->eureka_app, b->eureka_app) == 0 &&
           strcmp(a->eureka_status, b->eureka_status) == 0 &&
           strcmp(a->eureka_overridden_status, b->eureka_overridden_status) == 0 &&
           a->eureka_last_dirty_ms == b->eureka_last_dirty_ms && strcmp(a->origin, b->origin) == 0;
}

static void meta_from_instance(nm_meta_t *m, const V1__Instance *r)
{
    nm_meta_free(m);
    for (size_t i = 0; i < r->n_metadata; i++)
        nm_meta_add(m, r->metadata[i]->key, r->metadata[i]->value);
    nm_meta_sort(m);
}

static uint32_t normalise_ttl(const V1__HealthCheck *hc)
{
    uint32_t ttl = hc->heartbeat->ttl ? hc->heartbeat->ttl->value : 0;
    return ttl == 0 || ttl > NM_MAX_TTL ? NM_DEFAULT_TTL : ttl;
}

/* CreateInstanceModel: the full state a registration produces. */
static nm_instance_t *instance_from_request(const Lodestar__NamingInstance *ni, const char *id,
                                            const nm_instance_t *existing)
{
    const V1__Instance *r = ni->instance;
    nm_instance_t *in = nm_instance_new();
    set_str(&in->id, id);
    set_str(&in->ns, valor(r->namespace_, ""));
    set_str(&in->service, valor(r->service, ""));
    set_str(&in->vpc_id, valor(r->vpc_id, ""));
    set_str(&in->host, valor(r->host, ""));
    in->port = r->port ? r->port->value : 0;
    set_str(&in->protocol, valor(r->protocol, ""));
    set_str(&in->version, valor(r->version, ""));
    in->priority = r->priority ? r->priority->value : 0;
    in->weight = r->weight ? r->weight->value : NM_DEFAULT_WEIGHT;
    in->healthy = r->healthy ? r->healthy->value : true;
    in->isolate = r->isolate ? r->isolate->value : existing ? existing->isolate : false;
    if (r->location) {
        set_str(&in->region, valor(r->location->region, ""));
        set_str(&in->zone, valor(r->location->zone, ""));
        set_str(&in->campus, valor(r->location->campus, ""));
    }
    meta_from_instance(&in->meta, r);
    set_str(&in->logic_set, valor(r->logic_set, ""));
    if (r->health_check && r->health_check->heartbeat && (!r->enable_health_check || r->enable_health_check->value)) {
        in->enable_hc = true;
        in->hc_type = V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT;
        in->hc_ttl = normalise_ttl(r->health_check);
    }
    if (ni->ext)
        copy_ext(in, ni->ext);
    else if (existing)
        copy_ext_from(in, existing);
    if (existing) {
        in->ctime_ms = existing->ctime_ms;
        in->mtime_ms = existing->mtime_ms;
    }
    return in;
}

static uint32_t eval_register(view_t *v, const Lodestar__NamingInstance *ni, nm_result_t *r)
{
    const V1__Instance *q = ni->instance;
    char id[NM_MAX_INSTANCE_ID * 4 + 1];
    nm_item_instance_id(q, id);
    const char *ns = val(q->namespace_), *svc = val(q->service);
    uint32_t rc = ensure_namespace(v, ns, "Polaris", r);
    if (rc)
        return rc;
    if (!v_service(v, ns, svc)) {
        if (!v->cfg->auto_create_service)
            return nm_fail(NM_NOT_FOUND_SERVICE, r->info, sizeof r->info,
                           "service %s/%s does not exist and workers.naming.auto_create_service is off", ns, svc);
        nm_service_t *s = nm_service_new(ns, svc);
        char hex[33];
        nm_random_hex(hex);
        set_str(&s->id, hex);
        nm_random_hex(hex);
        set_str(&s->token, hex);
        set_str(&s->owners, "Polaris");
        nm_meta_add(&s->meta, NM_AUTO_CREATED_KEY, "true");
        put_service(v, s, NM_MODE_CREATE);
    }
    nm_instance_t *in = instance_from_request(ni, id, v_instance(v, id));
    put_instance(v, in);
    ok(r, NM_OK, NM_ROW_INSTANCE, nm_instance_dup(in)); /* revision included */
    return 0;
}

static uint32_t eval_deregister(view_t *v, const Lodestar__NamingInstance *ni, nm_result_t *r)
{
    char id[NM_MAX_INSTANCE_ID * 4 + 1];
    nm_item_instance_id(ni->instance, id);
    const nm_instance_t *cur = v_instance(v, id);
    ok(r, NM_OK, 0, NULL);
    snprintf(r->key, sizeof r->key, "%s", id);
    if (!cur)
        return 0; /* already gone: success, as Polaris */
    nm_instance_t *in = nm_instance_dup(cur);
    in->deleted = true;
    put_instance(v, in);
    return 0;
}

/* updateInstanceAttribute + updateHealthCheck. Returns true when changed. */
static bool apply_update(nm_instance_t *in, const Lodestar__NamingInstance *ni)
{
    const V1__Instance *r = ni->instance;
    bool changed = false;
    if (r->n_metadata) {
        nm_meta_t m = {0};
        meta_from_instance(&m, r);
        if (!nm_meta_equal(&m, &in->meta)) {
            nm_meta_free(&in->meta);
            in->meta = m;
            changed = true;
        } else {
            nm_meta_free(&m);
        }
    }
#define UPD_STR(field, wrapper)                                                                                        \
    if (val(r->wrapper) && strcmp(val(r->wrapper), in->field) != 0) {                                                  \
        set_str(&in->field, val(r->wrapper));                                                                          \
        changed = true;                                                                                                \
    }
#define UPD_NUM(field, wrapper)                                                                                        \
    if (r->wrapper && r->wrapper->value != in->field) {                                                                \
        in->field = r->wrapper->value;                                                                                 \
        changed = true;                                                                                                \
    }
    UPD_STR(protocol, protocol)
    UPD_STR(version, version)
    UPD_NUM(priority, priority)
    UPD_NUM(weight, weight)
    UPD_NUM(healthy, healthy)
    UPD_NUM(isolate, isolate)
    UPD_STR(logic_set, logic_set)
    if (r->location) {
        UPD_STR(region, location->region)
        UPD_STR(zone, location->zone)
        UPD_STR(campus, location->campus)
    }
#undef UPD_STR
#undef UPD_NUM
    if (r->health_check && r->health_check->heartbeat && (!r->enable_health_check || r->enable_health_check->value)) {
        if (!in->enable_hc) {
            /* switching the check on: unhealthy until the first heartbeat */
            in->healthy = false;
            in->enable_hc = true;
            changed = true;
        }
        uint32_t ttl = normalise_ttl(r->health_check);
        if (ttl != in->hc_ttl || in->hc_type != V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT)
            changed = true;
        in->hc_type = V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT;
        in->hc_ttl = ttl;
    }
    if (r->enable_health_check && !r->enable_health_check->value) {
        if (in->enable_hc || in->hc_type >= 0)
            changed = true;
        in->enable_hc = false;
        in->hc_type = -1;
        in->hc_ttl = 0;
    }
    if (ni->ext) {
        nm_instance_t *probe = nm_instance_dup(in);
        copy_ext(probe, ni->ext);
        if (!ext_equal(probe, in)) {
            copy_ext(in, ni->ext);
            changed = true;
        }
        nm_instance_free(probe);
    }
    return changed;
}

static uint32_t eval_update(view_t *v, const Lodestar__NamingInstance *ni, nm_result_t *r)
{
    char id[NM_MAX_INSTANCE_ID * 4 + 1], buf[96];
    nm_item_instance_id(ni->instance, id);
    const nm_instance_t *cur = v_instance(v, id);
    if (!cur)
        return nm_fail(NM_NOT_FOUND_INSTANCE, r->info, sizeof r->info, "instance %s does not exist",
                       nm_clip(id, buf, sizeof buf));
    nm_instance_t *in = nm_instance_dup(cur);
    if (!apply_update(in, ni)) {
        ok(r, NM_NO_NEED_UPDATE, NM_ROW_INSTANCE, in);
        nm_instance_revision(in);
        return 0;
    }
    put_instance(v, in);
    ok(r, NM_OK, NM_ROW_INSTANCE, nm_instance_dup(in)); /* revision included */
    return 0;
}

static uint32_t eval_by_host(view_t *v, const Lodestar__NamingInstance *ni, bool isolate, nm_result_t *r)
{
    const V1__Instance *q = ni->instance;
    host_filter_t f = {val(q->host), val(q->namespace_), val(q->service)};
    if (f.service && f.ns && !v_service(v, f.ns, f.service) && v_instance_count(v, f.ns, f.service) == 0)
        return nm_fail(NM_NOT_FOUND_SERVICE, r->info, sizeof r->info, "service %s/%s does not exist", f.ns,
                       f.service);
    const nm_instance_t **list;
    size_t n = v_instances_on_host(v, &f, &list);
    if (isolate && n == 0) {
        free(list);
        return nm_fail(NM_NOT_FOUND_INSTANCE, r->info, sizeof r->info, "no instance on host %s", f.host);
    }
    size_t changed = 0;
    for (size_t i = 0; i < n; i++) {
        if (isolate && list[i]->isolate == q->isolate->value)
            continue;
        nm_instance_t *in = nm_instance_dup(list[i]);
        if (isolate)
            in->isolate = q->isolate->value;
        else
            in->deleted = true;
        put_instance(v, in);
        changed++;
    }
    free(list);
    ok(r, isolate && changed == 0 ? NM_NO_NEED_UPDATE : NM_OK, 0, NULL);
    return 0;
}

static uint32_t eval_set_health(view_t *v, const Lodestar__NamingInstance *ni, nm_result_t *r)
{
    const char *id = val(ni->instance->id);
    char buf[96];
    const nm_instance_t *cur = v_instance(v, id);
    if (!cur)
        return nm_fail(NM_NOT_FOUND_INSTANCE, r->info, sizeof r->info, "instance %s does not exist",
                       nm_clip(id, buf, sizeof buf));
    nm_instance_t *in = nm_instance_dup(cur);
    if (in->healthy == (bool)ni->instance->healthy->value) {
        ok(r, NM_NO_NEED_UPDATE, NM_ROW_INSTANCE, in);
        return 0;
    }
    in->healthy = ni->instance->healthy->value;
    put_instance(v, in);
    ok(r, NM_OK, NM_ROW_INSTANCE, nm_instance_dup(in)); /* revision included */
    return 0;
}

/* ----------------------------------------------------------------- services */

static void meta_from_service(nm_meta_t *m, const V1__Service *q)
{
    nm_meta_free(m);
    for (size_t i = 0; i < q->n_metadata; i++)
        nm_meta_add(m, q->metadata[i]->key, q->metadata[i]->value);
    nm_meta_sort(m);
}

static uint32_t eval_service_create(view_t *v, const V1__Service *q, nm_result_t *r)
{
    const char *ns = val(q->namespace_), *name = val(q->name);
    uint32_t rc = ensure_namespace(v, ns, val(q->owners), r);
    if (rc)
        return rc;
    const nm_service_t *cur = v_service(v, ns, name);
    if (cur) {
        nm_fail(NM_EXISTED_RESOURCE, r->info, sizeof r->info, "service %s/%s already exists", ns, name);
        r->kind = NM_ROW_SERVICE;
        r->obj = nm_service_dup(cur);
        return NM_EXISTED_RESOURCE;
    }
    nm_service_t *s = nm_service_new(ns, name);
    char hex[33];
    nm_random_hex(hex);
    set_str(&s->id, hex);
    nm_random_hex(hex);
    set_str(&s->token, hex);
    meta_from_service(&s->meta, q);
    set_str(&s->ports, valor(q->ports, ""));
    set_str(&s->business, valor(q->business, ""));
    set_str(&s->department, valor(q->department, ""));
    set_str(&s->cmdb_mod1, valor(q->cmdb_mod1, ""));
    set_str(&s->cmdb_mod2, valor(q->cmdb_mod2, ""));
    set_str(&s->cmdb_mod3, valor(q->cmdb_mod3, ""));
    set_str(&s->comment, valor(q->comment, ""));
    set_str(&s->owners, valor(q->owners, ""));
    set_str(&s->platform_id, valor(q->platform_id, ""));
    ok(r, NM_OK, NM_ROW_SERVICE, nm_service_dup(s));
    snprintf(r->key, sizeof r->key, "%s", s->key);
    put_service(v, s, NM_MODE_CREATE);
    r->create = ov_service(v->rov, r->key)->mode == NM_MODE_CREATE;
    return 0;
}

static uint32_t eval_service_update(view_t *v, const V1__Service *q, nm_result_t *r)
{
    const char *ns = val(q->namespace_), *name = val(q->name);
    const nm_service_t *cur = v_service(v, ns, name);
    if (!cur)
        return nm_fail(NM_NOT_FOUND_RESOURCE, r->info, sizeof r->info, "service %s/%s does not exist", ns, name);
    nm_service_t *s = nm_service_dup(cur);
    bool changed = false;
    if (q->n_metadata) {
        nm_meta_t m = {0};
        meta_from_service(&m, q);
        if (!nm_meta_equal(&m, &s->meta)) {
            nm_meta_free(&s->meta);
            s->meta = m;
            changed = true;
        } else {
            nm_meta_free(&m);
        }
    }
#define UPD(field)                                                                                                     \
    if (val(q->field) && strcmp(val(q->field), s->field) != 0) {                                                       \
        set_str(&s->field, val(q->field));                                                                             \
        changed = true;                                                                                                \
    }
    UPD(ports)
    UPD(business)
    UPD(department)
    UPD(cmdb_mod1)
    UPD(cmdb_mod2)
    UPD(cmdb_mod3)
    UPD(comment)
    UPD(owners)
    UPD(platform_id)
#undef UPD
    if (!changed) {
        ok(r, NM_NO_NEED_UPDATE, NM_ROW_SERVICE, s);
        return 0;
    }
    s->deleted = false;
    ok(r, NM_OK, NM_ROW_SERVICE, nm_service_dup(s));
    put_service(v, s, NM_MODE_OVERWRITE);
    return 0;
}

static uint32_t eval_service_delete(view_t *v, const V1__Service *q, nm_result_t *r)
{
    const char *ns = val(q->namespace_), *name = val(q->name);
    const nm_service_t *cur = v_service(v, ns, name);
    size_t n = v_instance_count(v, ns, name);
    if (n > 0)
        return nm_fail(NM_SERVICE_EXISTED_INSTANCES, r->info, sizeof r->info, "service %s/%s has %zu instances", ns,
                       name, n);
    ok(r, NM_OK, 0, NULL);
    if (!cur)
        return 0; /* already gone: success, as Polaris */
    nm_service_t *s = nm_service_dup(cur);
    s->deleted = true;
    put_service(v, s, NM_MODE_OVERWRITE);
    return 0;
}

/* --------------------------------------------------------------- namespaces */

static void meta_from_namespace(nm_meta_t *m, const V1__Namespace *q)
{
    nm_meta_free(m);
    for (size_t i = 0; i < q->n_metadata; i++)
        nm_meta_add(m, q->metadata[i]->key, q->metadata[i]->value);
    nm_meta_sort(m);
}

static uint32_t eval_namespace_create(view_t *v, const V1__Namespace *q, nm_result_t *r)
{
    const char *name = val(q->name);
    const nm_namespace_t *cur = v_namespace(v, name);
    if (cur) {
        nm_fail(NM_EXISTED_RESOURCE, r->info, sizeof r->info, "namespace %s already exists", name);
        r->kind = NM_ROW_NAMESPACE;
        r->obj = nm_namespace_dup(cur);
        return NM_EXISTED_RESOURCE;
    }
    nm_namespace_t *ns = nm_namespace_new(name);
    char token[33];
    nm_random_hex(token);
    set_str(&ns->token, token);
    set_str(&ns->comment, valor(q->comment, ""));
    set_str(&ns->owners, valor(q->owners, ""));
    meta_from_namespace(&ns->meta, q);
    put_namespace(v, ns, NM_MODE_CREATE);
    ok(r, NM_OK, NM_ROW_NAMESPACE, nm_namespace_dup(ns));
    snprintf(r->key, sizeof r->key, "%s", name);
    r->create = ns->mode == NM_MODE_CREATE;
    return 0;
}

static uint32_t eval_namespace_update(view_t *v, const V1__Namespace *q, nm_result_t *r)
{
    const char *name = val(q->name);
    const nm_namespace_t *cur = v_namespace(v, name);
    if (!cur)
        return nm_fail(NM_NOT_FOUND_RESOURCE, r->info, sizeof r->info, "namespace %s does not exist", name);
    nm_namespace_t *ns = nm_namespace_dup(cur);
    bool changed = false;
    if (val(q->comment) && strcmp(val(q->comment), ns->comment) != 0) {
        set_str(&ns->comment, val(q->comment));
        changed = true;
    }
    if (val(q->owners) && strcmp(val(q->owners), ns->owners) != 0) {
        set_str(&ns->owners, val(q->owners));
        changed = true;
    }
    if (q->n_metadata) {
        nm_meta_t m = {0};
        meta_from_namespace(&m, q);
        if (!nm_meta_equal(&m, &ns->meta)) {
            nm_meta_free(&ns->meta);
            ns->meta = m;
            changed = true;
        } else {
            nm_meta_free(&m);
        }
    }
    if (!changed) {
        /* Polaris answers success for an update that changes nothing */
        ok(r, NM_OK, NM_ROW_NAMESPACE, ns);
        return 0;
    }
    ok(r, NM_OK, NM_ROW_NAMESPACE, nm_namespace_dup(ns));
    put_namespace(v, ns, NM_MODE_OVERWRITE);
    return 0;
}

static uint32_t eval_namespace_delete(view_t *v, const V1__Namespace *q, nm_result_t *r)
{
    const char *name = val(q->name);
    const nm_namespace_t *cur = v_namespace(v, name);
    ok(r, NM_OK, 0, NULL);
    if (!cur)
        return 0;
    if (v_namespace_has_services(v, name)) {
        r->code = 0;
        return nm_fail(NM_NAMESPACE_EXISTED_SERVICES, r->info, sizeof r->info, "namespace %s still has services",
                       name);
    }
    nm_namespace_t *ns = nm_namespace_dup(cur);
    ns->deleted = true;
    put_namespace(v, ns, NM_MODE_OVERWRITE);
    return 0;
}

/* ---------------------------------------------------------------- dispatch */

bool nm_ops_eval(const nm_model_t *m, nm_overlay_t *ov, const cfg_naming_worker_t *cfg, const req_t *req,
                 nm_result_t *res)
{
    return nm_ops_eval_pending(m, ov, NULL, 0, cfg, req, res) == NM_EVAL_OK;
}

nm_eval_t nm_ops_eval_pending(const nm_model_t *m, nm_overlay_t *ov, const nm_overlay_t *const *pending,
                              size_t npending, const cfg_naming_worker_t *cfg, const req_t *req, nm_result_t *res)
{
    nm_overlay_t rov = {0};
    view_t v = {m, ov, &rov, cfg, pending, npending, false};
    size_t n = nm_request_items(req);
    bool all_ok = true;
    for (size_t i = 0; i < n; i++) {
        nm_result_t *r = &res[i];
        nm_result_clear(r);
        uint32_t rc = 0;
        switch (req->op) {
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER:
            rc = eval_register(&v, req->instances[i], r);
            break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER:
            rc = eval_deregister(&v, req->instances[i], r);
            break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_UPDATE: rc = eval_update(&v, req->instances[i], r); break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DELETE_HOST:
            rc = eval_by_host(&v, req->instances[i], false, r);
            break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST:
            rc = eval_by_host(&v, req->instances[i], true, r);
            break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH:
            rc = eval_set_health(&v, req->instances[i], r);
            break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE:
            rc = eval_service_create(&v, req->services[i], r);
            break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE:
            rc = eval_service_update(&v, req->services[i], r);
            break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_DELETE:
            rc = eval_service_delete(&v, req->services[i], r);
            break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_CREATE:
            rc = eval_namespace_create(&v, req->namespaces[i], r);
            break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_UPDATE:
            rc = eval_namespace_update(&v, req->namespaces[i], r);
            break;
        case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_DELETE:
            rc = eval_namespace_delete(&v, req->namespaces[i], r);
            break;
        default:
            rc = nm_fail(NM_BAD_REQUEST, r->info, sizeof r->info, "op %d is not a naming write operation",
                         (int)req->op);
            break;
        }
        if (rc) {
            r->code = rc;
            r->create = false;
            /* health verdicts are independent of each other: one about an
             * instance deregistered meanwhile must not hold back the rest */
            if (!(req->op == LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH && rc == NM_NOT_FOUND_INSTANCE))
                all_ok = false;
        }
    }
    if (v.blocked) {
        for (size_t i = 0; i < n; i++)
            nm_result_clear(&res[i]);
        nm_overlay_free(&rov);
        return NM_EVAL_BLOCKED;
    }
    if (!all_ok) {
        nm_results_reject_rest(res, n);
        nm_overlay_free(&rov);
        return NM_EVAL_FAILED;
    }
    merge(ov, &rov);
    return NM_EVAL_OK;
}

/* ---------------------------------------------------------------- responses */

static Google__Protobuf__UInt32Value *u32v(nm_arena_t *a, uint32_t x)
{
    Google__Protobuf__UInt32Value *v = nm_arena_alloc(a, sizeof *v);
    google__protobuf__uint32_value__init(v);
    v->value = x;
    return v;
}

static Google__Protobuf__StringValue *sv(nm_arena_t *a, const char *s)
{
    Google__Protobuf__StringValue *v = nm_arena_alloc(a, sizeof *v);
    google__protobuf__string_value__init(v);
    v->value = nm_arena_strdup(a, s);
    return v;
}

/* The request's own item, with the instance id the worker resolved. */
static void echo_item(nm_arena_t *a, V1__Response *o, const req_t *req, size_t i, const nm_result_t *r)
{
    if (req->op <= LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH) {
        const V1__Instance *q = req->instances[i] ? req->instances[i]->instance : NULL;
        if (!q)
            return;
        V1__Instance *in = nm_arena_alloc(a, sizeof *in);
        *in = *q;
        bool by_id = req->op != LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DELETE_HOST &&
                     req->op != LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST;
        if (r->key[0]) {
            in->id = sv(a, r->key);
        } else if (by_id && (q->id || (q->host && q->port))) {
            char id[NM_MAX_INSTANCE_ID * 4 + 1];
            nm_item_instance_id(q, id);
            in->id = sv(a, id);
        }
        o->instance = in;
    } else if (req->op <= LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_DELETE) {
        o->service = req->services[i];
    } else {
        o->namespace_ = req->namespaces[i];
    }
}

V1__BatchWriteResponse *nm_batch_response(nm_arena_t *a, nm_model_t *m, const req_t *req, nm_result_t *res,
                                          size_t n)
{
    V1__BatchWriteResponse *b = nm_arena_alloc(a, sizeof *b);
    v1__batch_write_response__init(b);
    b->responses = nm_arena_alloc(a, n * sizeof *b->responses);
    b->n_responses = n;
    uint32_t top = NM_OK;
    for (size_t i = 0; i < n && top == NM_OK; i++)
        if (!nm_code_ok(res[i].code) && !res[i].collateral)
            top = res[i].code;
    for (size_t i = 0; i < n && top == NM_OK; i++)
        if (!nm_code_ok(res[i].code))
            top = res[i].code;
    for (size_t i = 0; i < n; i++) {
        nm_result_t *r = &res[i];
        V1__Response *o = nm_arena_alloc(a, sizeof *o);
        v1__response__init(o);
        o->code = u32v(a, r->code);
        o->info = sv(a, r->info[0] ? r->info : polaris_code_info(r->code));
        if (r->kind == NM_ROW_INSTANCE && r->obj) {
            nm_instance_t *in = r->obj;
            nm_instance_t *cur = nm_model_instance(m, in->id);
            if (cur && strcmp(cur->revision, in->revision) == 0) {
                /* the same content (and the model's times): the model's
                 * cached message, which the publication built anyway */
                o->instance = nm_instance_cached_pb(cur)->instance;
            } else {
                if (cur) {
                    in->ctime_ms = cur->ctime_ms;
                    in->mtime_ms = cur->mtime_ms;
                }
                o->instance = nm_pb_instance(a, in);
            }
        } else if (r->kind == NM_ROW_SERVICE && r->obj) {
            nm_service_t *s = r->obj;
            const nm_service_t *cur = nm_model_service(m, s->ns, s->name);
            if (cur) {
                s->ctime_ms = cur->ctime_ms;
                s->mtime_ms = cur->mtime_ms;
                s->n_instances = cur->n_instances;
                s->n_healthy = cur->n_healthy;
                memcpy(s->revision, cur->revision, sizeof s->revision);
            }
            /* the token only to whoever just created the service */
            bool created = req->op == LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE && r->code == NM_OK;
            o->service = nm_pb_service(a, s, created);
        } else if (r->kind == NM_ROW_NAMESPACE && r->obj) {
            nm_namespace_t *ns = r->obj;
            const nm_namespace_t *cur = nm_model_namespace(m, ns->name);
            if (cur) {
                ns->ctime_ms = cur->ctime_ms;
                ns->mtime_ms = cur->mtime_ms;
            }
            V1__Namespace *pb = nm_pb_namespace(a, ns, NULL);
            if (req->op == LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_CREATE && r->code == NM_OK)
                pb->token = sv(a, ns->token);
            o->namespace_ = pb;
        } else {
            echo_item(a, o, req, i, r);
        }
        b->responses[i] = o;
    }
    b->code = u32v(a, top);
    b->info = sv(a, polaris_code_info(top));
    b->size = u32v(a, (uint32_t)n);
    return b;
}

V1__BatchWriteResponse *nm_batch_response_code(nm_arena_t *a, uint32_t code, const char *info)
{
    V1__BatchWriteResponse *b = nm_arena_alloc(a, sizeof *b);
    v1__batch_write_response__init(b);
    b->code = u32v(a, code);
    b->info = sv(a, info && *info ? info : polaris_code_info(code));
    b->size = u32v(a, 0);
    return b;
}

/*
 * nm_pb.c: the model as protobuf messages (v1.Instance, v1.Service,
 * v1.Namespace, lodestar.NamingServiceState), built in arenas.
 *
 * Output follows what polaris-server returns: every scalar field of an
 * instance or service is present (a wrapper with "" or 0 when unset), the
 * health_check block only when the instance has one, location only when one
 * of its parts is set, the service token only in create responses, times in
 * Polaris's "2006-01-02 15:04:05" local-time format. Instances and lists are
 * ordered (by id, by name) so equal models encode to equal bytes.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "naming.h"

/* Times repeat a lot (a batch commits its rows in one transaction, with one
 * timestamp), and local-time conversion is not cheap: the last few seconds
 * formatted are remembered. */
void nm_format_time(int64_t ms, char out[32])
{
    enum { SLOTS = 4 };
    static _Thread_local struct {
        time_t t;
        bool set;
        char text[32];
    } cache[SLOTS];
    static _Thread_local unsigned next;
    time_t t = (time_t)(ms / 1000);
    for (unsigned i = 0; i < SLOTS; i++)
        if (cache[i].set && cache[i].t == t) {
            memcpy(out, cache[i].text, 32);
            return;
        }
    struct tm tm;
    if (!localtime_r(&t, &tm) || !strftime(out, 32, "%Y-%m-%d %H:%M:%S", &tm)) {
        out[0] = '\0';
        return;
    }
    unsigned k = next++ % SLOTS;
    cache[k].t = t;
    cache[k].set = true;
    memcpy(cache[k].text, out, 32);
}

static Google__Protobuf__StringValue *sv(nm_arena_t *a, const char *s)
{
    Google__Protobuf__StringValue *v = nm_arena_alloc(a, sizeof *v);
    google__protobuf__string_value__init(v);
    v->value = nm_arena_strdup(a, s);
    return v;
}

static Google__Protobuf__UInt32Value *u32v(nm_arena_t *a, uint32_t x)
{
    Google__Protobuf__UInt32Value *v = nm_arena_alloc(a, sizeof *v);
    google__protobuf__uint32_value__init(v);
    v->value = x;
    return v;
}

static Google__Protobuf__BoolValue *bv(nm_arena_t *a, bool x)
{
    Google__Protobuf__BoolValue *v = nm_arena_alloc(a, sizeof *v);
    google__protobuf__bool_value__init(v);
    v->value = x;
    return v;
}

static Google__Protobuf__StringValue *time_sv(nm_arena_t *a, int64_t ms)
{
    char buf[32];
    nm_format_time(ms, buf);
    return sv(a, ms ? buf : "");
}

V1__Instance *nm_pb_instance(nm_arena_t *a, const nm_instance_t *in)
{
    V1__Instance *o = nm_arena_alloc(a, sizeof *o);
    v1__instance__init(o);
    o->id = sv(a, in->id);
    o->service = sv(a, in->service);
    o->namespace_ = sv(a, in->ns);
    o->vpc_id = sv(a, in->vpc_id);
    o->host = sv(a, in->host);
    o->port = u32v(a, in->port);
    o->protocol = sv(a, in->protocol);
    o->version = sv(a, in->version);
    o->priority = u32v(a, in->priority);
    o->weight = u32v(a, in->weight);
    if (in->hc_type >= 0) {
        V1__HealthCheck *hc = nm_arena_alloc(a, sizeof *hc);
        v1__health_check__init(hc);
        hc->type = (V1__HealthCheck__HealthCheckType)in->hc_type;
        V1__HeartbeatHealthCheck *hb = nm_arena_alloc(a, sizeof *hb);
        v1__heartbeat_health_check__init(hb);
        hb->ttl = u32v(a, in->hc_ttl);
        hc->heartbeat = hb;
        o->health_check = hc;
    }
    o->enable_health_check = bv(a, in->enable_hc);
    o->healthy = bv(a, in->healthy);
    o->isolate = bv(a, in->isolate);
    if (in->region[0] || in->zone[0] || in->campus[0]) {
        V1__Location *loc = nm_arena_alloc(a, sizeof *loc);
        v1__location__init(loc);
        loc->region = sv(a, in->region);
        loc->zone = sv(a, in->zone);
        loc->campus = sv(a, in->campus);
        o->location = loc;
    }
    if (in->meta.n) {
        o->n_metadata = in->meta.n;
        o->metadata = nm_arena_alloc(a, in->meta.n * sizeof *o->metadata);
        for (size_t i = 0; i < in->meta.n; i++) {
            V1__Instance__MetadataEntry *e = nm_arena_alloc(a, sizeof *e);
            v1__instance__metadata_entry__init(e);
            e->key = nm_arena_strdup(a, in->meta.keys[i]);
            e->value = nm_arena_strdup(a, in->meta.vals[i]);
            o->metadata[i] = e;
        }
    }
    o->logic_set = sv(a, in->logic_set);
    o->ctime = time_sv(a, in->ctime_ms);
    o->mtime = time_sv(a, in->mtime_ms);
    o->revision = sv(a, in->revision);
    return o;
}

Lodestar__NamingInstance *nm_pb_naming_instance(nm_arena_t *a, const nm_instance_t *in)
{
    Lodestar__NamingInstance *ni = nm_arena_alloc(a, sizeof *ni);
    lodestar__naming_instance__init(ni);
    ni->instance = nm_pb_instance(a, in);
    Lodestar__InstanceExt *x = nm_arena_alloc(a, sizeof *x);
    lodestar__instance_ext__init(x);
    x->nacos_group = nm_arena_strdup(a, in->nacos_group);
    x->nacos_cluster = nm_arena_strdup(a, in->nacos_cluster);
    x->ephemeral = in->ephemeral;
    x->eureka_app = nm_arena_strdup(a, in->eureka_app);
    x->eureka_status = nm_arena_strdup(a, in->eureka_status);
    x->eureka_overridden_status = nm_arena_strdup(a, in->eureka_overridden_status);
    x->eureka_last_dirty_ms = in->eureka_last_dirty_ms;
    x->origin = nm_arena_strdup(a, in->origin);
    ni->ext = x;
    return ni;
}

Lodestar__NamingInstance *nm_instance_cached_pb(nm_instance_t *in)
{
    if (!in->pb)
        in->pb = nm_pb_naming_instance(&in->pb_arena, in);
    return in->pb;
}

V1__Service *nm_pb_service(nm_arena_t *a, const nm_service_t *s, bool with_token)
{
    V1__Service *o = nm_arena_alloc(a, sizeof *o);
    v1__service__init(o);
    o->id = sv(a, s->id);
    o->name = sv(a, s->name);
    o->namespace_ = sv(a, s->ns);
    if (s->meta.n) {
        o->n_metadata = s->meta.n;
        o->metadata = nm_arena_alloc(a, s->meta.n * sizeof *o->metadata);
        for (size_t i = 0; i < s->meta.n; i++) {
            V1__Service__MetadataEntry *e = nm_arena_alloc(a, sizeof *e);
            v1__service__metadata_entry__init(e);
            e->key = nm_arena_strdup(a, s->meta.keys[i]);
            e->value = nm_arena_strdup(a, s->meta.vals[i]);
            o->metadata[i] = e;
        }
    }
    o->ports = sv(a, s->ports);
    o->business = sv(a, s->business);
    o->department = sv(a, s->department);
    o->cmdb_mod1 = sv(a, s->cmdb_mod1);
    o->cmdb_mod2 = sv(a, s->cmdb_mod2);
    o->cmdb_mod3 = sv(a, s->cmdb_mod3);
    o->comment = sv(a, s->comment);
    o->owners = sv(a, s->owners);
    if (with_token)
        o->token = sv(a, s->token);
    o->platform_id = sv(a, s->platform_id);
    o->ctime = time_sv(a, s->ctime_ms);
    o->mtime = time_sv(a, s->mtime_ms);
    o->revision = sv(a, s->revision);
    o->total_instance_count = u32v(a, s->n_instances);
    o->healthy_instance_count = u32v(a, s->n_healthy);
    return o;
}

V1__Namespace *nm_pb_namespace(nm_arena_t *a, const nm_namespace_t *ns, const uint32_t *counts)
{
    V1__Namespace *o = nm_arena_alloc(a, sizeof *o);
    v1__namespace__init(o);
    o->id = sv(a, ns->name);
    o->name = sv(a, ns->name);
    o->comment = sv(a, ns->comment);
    o->owners = sv(a, ns->owners);
    o->ctime = time_sv(a, ns->ctime_ms);
    o->mtime = time_sv(a, ns->mtime_ms);
    if (ns->meta.n) {
        o->n_metadata = ns->meta.n;
        o->metadata = nm_arena_alloc(a, ns->meta.n * sizeof *o->metadata);
        for (size_t i = 0; i < ns->meta.n; i++) {
            V1__Namespace__MetadataEntry *e = nm_arena_alloc(a, sizeof *e);
            v1__namespace__metadata_entry__init(e);
            e->key = nm_arena_strdup(a, ns->meta.keys[i]);
            e->value = nm_arena_strdup(a, ns->meta.vals[i]);
            o->metadata[i] = e;
        }
    }
    if (counts) {
        o->total_service_count = u32v(a, counts[0]);
        o->total_instance_count = u32v(a, counts[1]);
        o->total_health_instance_count = u32v(a, counts[2]);
    }
    return o;
}

Lodestar__NamingServiceState *nm_pb_state(nm_arena_t *a, nm_service_t *s, const char *ns, const char *name,
                                          uint64_t seq)
{
    Lodestar__NamingServiceState *st = nm_arena_alloc(a, sizeof *st);
    lodestar__naming_service_state__init(st);
    st->seq = seq;
    if (s && nm_service_live(s)) {
        st->service = nm_pb_service(a, s, false);
        nm_service_sort(s);
        size_t n = HASH_CNT(hh_svc, s->instances);
        st->n_instances = n;
        st->instances = nm_arena_alloc(a, n * sizeof *st->instances);
        size_t i = 0;
        for (nm_instance_t *in = s->instances; in; in = in->hh_svc.next)
            st->instances[i++] = nm_instance_cached_pb(in);
        return st;
    }
    V1__Service *o = nm_arena_alloc(a, sizeof *o);
    v1__service__init(o);
    o->name = sv(a, s ? s->name : name);
    o->namespace_ = sv(a, s ? s->ns : ns);
    st->service = o;
    st->deleted = true;
    return st;
}

static int cmp_ns(const void *a, const void *b)
{
    const V1__Namespace *x = *(V1__Namespace *const *)a, *y = *(V1__Namespace *const *)b;
    return strcmp(x->name->value, y->name->value);
}

size_t nm_pb_namespaces(nm_arena_t *a, const nm_model_t *m, V1__Namespace ***out)
{
    size_t n = HASH_COUNT(m->namespaces);
    V1__Namespace **v = nm_arena_alloc(a, n * sizeof *v);
    size_t i = 0;
    for (nm_namespace_t *ns = m->namespaces; ns; ns = ns->hh.next)
        v[i++] = nm_pb_namespace(a, ns, NULL);
    qsort(v, n, sizeof *v, cmp_ns);
    *out = v;
    return n;
}

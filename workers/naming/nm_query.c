/*
 * nm_query.c: NamingQueryRequest, the OpenAPI reads, answered from the
 * model (never from PostgreSQL).
 *
 * Filters are the query parameters as the client sent them and follow
 * polaris-server (service.ServiceFilterAttributes, InstanceFilterAttributes,
 * GetInstanceLabels, namespace checkGetNamespace):
 *   services   name and namespace exact or with a trailing "*" (prefix);
 *              business and owner by substring; department, cmdb_mod1..3,
 *              platform_id exact; host (comma list) and port (comma list)
 *              select services with such an instance; keys/values one
 *              service metadata pair; instance_keys/instance_values (comma
 *              lists of equal length) select services with an instance
 *              carrying all those pairs; only_exist_instance,
 *              only_exist_health_instance. An unknown parameter is 400103
 *              "<key> is not allowed", an empty one (other than values)
 *              400103 "the value for <key> is empty".
 *   instances  not empty (400104); (service and namespace) or host or id
 *              (400105); keys/values as comma lists of equal length
 *              (400105); id, service, namespace, host (comma list), port
 *              (comma list), protocol, version, healthy/health_status
 *              (true/false/1/0, healthy wins), isolate, weight, logic_set,
 *              cmdb_region/cmdb_zone/cmdb_idc (location), priority.
 *   paging     offset (default 0) and limit (default 100, at most 100) from
 *              the filters when present, else from the request fields;
 *              amount is the number of matches, size the number returned.
 *              Lists are ordered by mtime, newest first, then by key.
 *   counts     SERVICES_COUNT / INSTANCES_COUNT: amount = everything live.
 *   labels     INSTANCE_LABELS: every metadata key of the service's
 *              instances with its distinct values (namespace defaults to
 *              "default"; service_id may name the service instead).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "naming.h"

typedef Lodestar__NamingQueryRequest query_t;

static const char *filter(const query_t *q, const char *key)
{
    const char *v = NULL;
    for (size_t i = 0; i < q->n_filters; i++)
        if (q->filters[i]->key && strcmp(q->filters[i]->key, key) == 0)
            v = q->filters[i]->value ? q->filters[i]->value : "";
    return v;
}

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

static Lodestar__NamingQueryResponse *batch(nm_arena_t *a, uint32_t code, const char *info)
{
    Lodestar__NamingQueryResponse *r = nm_arena_alloc(a, sizeof *r);
    lodestar__naming_query_response__init(r);
    V1__BatchQueryResponse *b = nm_arena_alloc(a, sizeof *b);
    v1__batch_query_response__init(b);
    b->code = u32v(a, code);
    b->info = sv(a, info && *info ? info : polaris_code_info(code));
    b->amount = u32v(a, 0);
    b->size = u32v(a, 0);
    r->result = b;
    return r;
}

static Lodestar__NamingQueryResponse *bad(nm_arena_t *a, uint32_t code, const char *fmt, const char *arg)
{
    char info[512], buf[96];
    nm_fail(code, info, sizeof info, fmt, nm_clip(arg ? arg : "", buf, sizeof buf));
    return batch(a, code, info);
}

static int parse_u32(const char *s, uint32_t *out)
{
    if (!s || !*s)
        return -EINVAL;
    unsigned long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(*p - '0');
        if (v > UINT32_MAX)
            return -ERANGE;
    }
    *out = (uint32_t)v;
    return 0;
}

/* Paging: 0, or a 400103 response. */
static Lodestar__NamingQueryResponse *paging(nm_arena_t *a, const query_t *q, uint32_t *offset, uint32_t *limit)
{
    const char *o = filter(q, "offset"), *l = filter(q, "limit");
    *offset = q->offset;
    *limit = q->limit ? q->limit : 100;
    if (o && parse_u32(o, offset) < 0)
        return bad(a, NM_INVALID_PARAMETER, "offset \"%s\" is not a non-negative integer", o);
    if (l && parse_u32(l, limit) < 0)
        return bad(a, NM_INVALID_PARAMETER, "limit \"%s\" is not a non-negative integer", l);
    if (*limit > 100)
        *limit = 100;
    return NULL;
}

/* Exact, or a prefix when the pattern ends with "*". */
static bool name_match(const char *pattern, const char *s)
{
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '*')
        return strncmp(pattern, s, n - 1) == 0;
    return strcmp(pattern, s) == 0;
}

/* Is s one of the comma-separated items of list? */
static bool in_list(const char *list, const char *s)
{
    size_t n = strlen(s);
    for (const char *p = list; p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0)
            return true;
        p = c ? c + 1 : NULL;
    }
    return false;
}

static bool port_in_list(const char *list, uint32_t port)
{
    char buf[16];
    snprintf(buf, sizeof buf, "%u", port);
    return in_list(list, buf);
}

/* Split a comma list into a malloc'd array of malloc'd strings. */
static size_t split(const char *s, char ***out)
{
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    char **v = nm_xcalloc(n, sizeof *v);
    size_t i = 0;
    for (const char *p = s;; i++) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        v[i] = nm_xcalloc(len + 1, 1);
        memcpy(v[i], p, len);
        if (!c)
            break;
        p = c + 1;
    }
    *out = v;
    return n;
}

static void free_split(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static bool has_meta(const nm_meta_t *m, char **keys, char **vals, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *v = nm_meta_get(m, keys[i]);
        if (!v || strcmp(v, vals[i]) != 0)
            return false;
    }
    return true;
}

/* -------------------------------------------------------------- namespaces */

static int cmp_nsp(const void *a, const void *b)
{
    const nm_namespace_t *x = *(nm_namespace_t *const *)a, *y = *(nm_namespace_t *const *)b;
    return strcmp(x->name, y->name);
}

static Lodestar__NamingQueryResponse *q_namespaces(nm_arena_t *a, const nm_model_t *m, const query_t *q)
{
    uint32_t offset, limit;
    Lodestar__NamingQueryResponse *err = paging(a, q, &offset, &limit);
    if (err)
        return err;
    const char *name = filter(q, "name"), *owner = filter(q, "owner");
    size_t n = HASH_COUNT(m->namespaces), k = 0;
    nm_namespace_t **v = nm_xcalloc(n, sizeof *v);
    for (nm_namespace_t *ns = m->namespaces; ns; ns = ns->hh.next)
        if ((!name || name_match(name, ns->name)) && (!owner || strstr(ns->owners, owner)))
            v[k++] = ns;
    qsort(v, k, sizeof *v, cmp_nsp);
    Lodestar__NamingQueryResponse *r = batch(a, NM_OK, NULL);
    V1__BatchQueryResponse *b = r->result;
    b->amount->value = (uint32_t)k;
    size_t from = offset < k ? offset : k, to = from + limit < k ? from + limit : k;
    b->n_namespaces = to - from;
    b->namespaces = nm_arena_alloc(a, (to - from) * sizeof *b->namespaces);
    V1__Summary *sum = nm_arena_alloc(a, sizeof *sum);
    v1__summary__init(sum);
    for (size_t i = from; i < to; i++) {
        uint32_t counts[3] = {0, 0, 0};
        for (const nm_service_t *s = m->services; s; s = s->hh.next)
            if (strcmp(s->ns, v[i]->name) == 0 && nm_service_live(s)) {
                counts[0]++;
                counts[1] += s->n_instances;
                counts[2] += s->n_healthy;
            }
        b->namespaces[i - from] = nm_pb_namespace(a, v[i], counts);
        sum->total_service_count += counts[0];
        sum->total_instance_count += counts[1];
        sum->total_health_instance_count += counts[2];
    }
    b->size->value = (uint32_t)(to - from);
    b->summary = sum;
    free(v);
    return r;
}

/* ---------------------------------------------------------------- services */

static const char *const service_keys[] = {"name",      "namespace",   "business", "department",
                                           "cmdb_mod1", "cmdb_mod2",   "cmdb_mod3", "owner",
                                           "offset",    "limit",       "platform_id", "only_exist_health_instance",
                                           "only_exist_instance", "host", "port", "keys",
                                           "values",    "instance_keys", "instance_values"};

static int cmp_svc(const void *a, const void *b)
{
    const nm_service_t *x = *(nm_service_t *const *)a, *y = *(nm_service_t *const *)b;
    if (x->mtime_ms != y->mtime_ms)
        return x->mtime_ms > y->mtime_ms ? -1 : 1;
    return strcmp(x->key, y->key);
}

/* Allowed keys and non-empty values; NULL when fine. */
static Lodestar__NamingQueryResponse *check_keys(nm_arena_t *a, const query_t *q, const char *const *keys, size_t nk,
                                                 const char *empty_ok)
{
    for (size_t i = 0; i < q->n_filters; i++) {
        const char *k = q->filters[i]->key ? q->filters[i]->key : "";
        const char *v = q->filters[i]->value ? q->filters[i]->value : "";
        bool known = false;
        for (size_t j = 0; j < nk && !known; j++)
            known = strcmp(keys[j], k) == 0;
        if (!known)
            return bad(a, NM_INVALID_PARAMETER, "%s is not allowed", k);
        if (!*v && !(empty_ok && strcmp(k, empty_ok) == 0))
            return bad(a, NM_INVALID_PARAMETER, "the value for %s is empty", k);
    }
    return NULL;
}

static Lodestar__NamingQueryResponse *q_services(nm_arena_t *a, const nm_model_t *m, const query_t *q)
{
    Lodestar__NamingQueryResponse *err =
        check_keys(a, q, service_keys, sizeof service_keys / sizeof service_keys[0], "values");
    if (err)
        return err;
    uint32_t offset, limit;
    if ((err = paging(a, q, &offset, &limit)))
        return err;
    const char *name = filter(q, "name"), *ns = filter(q, "namespace"), *business = filter(q, "business"),
               *department = filter(q, "department"), *cmdb1 = filter(q, "cmdb_mod1"), *cmdb2 = filter(q, "cmdb_mod2"),
               *cmdb3 = filter(q, "cmdb_mod3"), *owner = filter(q, "owner"), *platform = filter(q, "platform_id"),
               *host = filter(q, "host"), *port = filter(q, "port"), *keys = filter(q, "keys"),
               *values = filter(q, "values"), *ikeys = filter(q, "instance_keys"),
               *ivals = filter(q, "instance_values");
    const char *oh = filter(q, "only_exist_health_instance"), *oi = filter(q, "only_exist_instance");
    bool only_healthy = oh && strcmp(oh, "true") == 0, only_inst = oi && strcmp(oi, "true") == 0;
    char **ik = NULL, **iv = NULL;
    size_t nik = 0, niv = 0;
    if (ikeys || ivals) {
        nik = split(ikeys ? ikeys : "", &ik);
        niv = split(ivals ? ivals : "", &iv);
        if (nik != niv) {
            free_split(ik, nik);
            free_split(iv, niv);
            return bad(a, NM_INVALID_PARAMETER, "%slength of instance_keys and instance_values are not equal", "");
        }
    }
    size_t n = HASH_COUNT(m->services), k = 0;
    nm_service_t **v = nm_xcalloc(n, sizeof *v);
    for (nm_service_t *s = m->services; s; s = s->hh.next) {
        if (!nm_service_live(s))
            continue;
        if ((name && !name_match(name, s->name)) || (ns && !name_match(ns, s->ns)) ||
            (business && !strstr(s->business, business)) || (department && strcmp(s->department, department)) ||
            (cmdb1 && strcmp(s->cmdb_mod1, cmdb1)) || (cmdb2 && strcmp(s->cmdb_mod2, cmdb2)) ||
            (cmdb3 && strcmp(s->cmdb_mod3, cmdb3)) || (owner && !strstr(s->owners, owner)) ||
            (platform && strcmp(s->platform_id, platform)))
            continue;
        if (keys) {
            const char *mv = nm_meta_get(&s->meta, keys);
            if (!mv || strcmp(mv, values ? values : "") != 0)
                continue;
        }
        if ((only_healthy && s->n_healthy == 0) || (only_inst && s->n_instances == 0))
            continue;
        if (host || port || ik) {
            bool found = false;
            for (const nm_instance_t *in = s->instances; in && !found; in = in->hh_svc.next)
                found = (!host || in_list(host, in->host)) && (!port || port_in_list(port, in->port)) &&
                        (!ik || has_meta(&in->meta, ik, iv, nik));
            if (!found)
                continue;
        }
        v[k++] = s;
    }
    if (ik) {
        free_split(ik, nik);
        free_split(iv, niv);
    }
    qsort(v, k, sizeof *v, cmp_svc);
    Lodestar__NamingQueryResponse *r = batch(a, NM_OK, NULL);
    V1__BatchQueryResponse *b = r->result;
    b->amount->value = (uint32_t)k;
    size_t from = offset < k ? offset : k, to = from + limit < k ? from + limit : k;
    b->n_services = to - from;
    b->services = nm_arena_alloc(a, (to - from) * sizeof *b->services);
    for (size_t i = from; i < to; i++)
        b->services[i - from] = nm_pb_service(a, v[i], false);
    b->size->value = (uint32_t)(to - from);
    free(v);
    return r;
}

static Lodestar__NamingQueryResponse *q_services_all(nm_arena_t *a, const nm_model_t *m, const query_t *q)
{
    const char *ns = filter(q, "namespace");
    size_t n = HASH_COUNT(m->services), k = 0;
    nm_service_t **v = nm_xcalloc(n, sizeof *v);
    for (nm_service_t *s = m->services; s; s = s->hh.next)
        if (nm_service_live(s) && (!ns || !*ns || strcmp(s->ns, ns) == 0))
            v[k++] = s;
    qsort(v, k, sizeof *v, cmp_svc);
    Lodestar__NamingQueryResponse *r = batch(a, NM_OK, NULL);
    V1__BatchQueryResponse *b = r->result;
    b->n_services = k;
    b->services = nm_arena_alloc(a, k * sizeof *b->services);
    for (size_t i = 0; i < k; i++)
        b->services[i] = nm_pb_service(a, v[i], false);
    b->amount->value = b->size->value = (uint32_t)k;
    free(v);
    return r;
}

/* --------------------------------------------------------------- instances */

static const char *const instance_keys[] = {"id",      "service",   "namespace",   "host",      "port",
                                            "keys",    "values",    "protocol",    "version",   "health_status",
                                            "healthy", "isolate",   "weight",      "logic_set", "cmdb_region",
                                            "cmdb_zone", "cmdb_idc", "priority",   "offset",    "limit"};

static int parse_bool(const char *s, bool *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
        *out = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
        *out = false;
    else
        return -EINVAL;
    return 0;
}

static int cmp_inst(const void *a, const void *b)
{
    const nm_instance_t *x = *(nm_instance_t *const *)a, *y = *(nm_instance_t *const *)b;
    if (x->mtime_ms != y->mtime_ms)
        return x->mtime_ms > y->mtime_ms ? -1 : 1;
    return strcmp(x->id, y->id);
}

static Lodestar__NamingQueryResponse *q_instances(nm_arena_t *a, const nm_model_t *m, const query_t *q)
{
    if (q->n_filters == 0)
        return batch(a, NM_EMPTY_QUERY_PARAMETER, NULL);
    const char *keys = filter(q, "keys"), *values = filter(q, "values");
    if (!keys != !values)
        return bad(a, NM_INVALID_QUERY_INS_PARAMETER, "%sinstance metadata key and value must be both provided", "");
    Lodestar__NamingQueryResponse *err = check_keys(a, q, instance_keys, sizeof instance_keys / sizeof instance_keys[0],
                                                    NULL);
    if (err)
        return err;
    const char *id = filter(q, "id"), *svc = filter(q, "service"), *ns = filter(q, "namespace"),
               *host = filter(q, "host"), *port = filter(q, "port"), *protocol = filter(q, "protocol"),
               *version = filter(q, "version"), *logic_set = filter(q, "logic_set"),
               *region = filter(q, "cmdb_region"), *zone = filter(q, "cmdb_zone"), *campus = filter(q, "cmdb_idc");
    if (!((svc && ns) || host || id))
        return batch(a, NM_INVALID_QUERY_INS_PARAMETER, NULL);
    uint32_t offset, limit;
    if ((err = paging(a, q, &offset, &limit)))
        return err;
    bool healthy = false, isolate = false;
    const char *hs = filter(q, "healthy");
    if (!hs)
        hs = filter(q, "health_status");
    if (hs && parse_bool(hs, &healthy) < 0)
        return bad(a, NM_INVALID_PARAMETER, "healthy \"%s\" is not true, false, 1 or 0", hs);
    const char *is = filter(q, "isolate");
    if (is && parse_bool(is, &isolate) < 0)
        return bad(a, NM_INVALID_PARAMETER, "isolate \"%s\" is not true, false, 1 or 0", is);
    uint32_t weight = 0, priority = 0;
    const char *ws = filter(q, "weight"), *ps = filter(q, "priority");
    if (ws && parse_u32(ws, &weight) < 0)
        return bad(a, NM_INVALID_PARAMETER, "weight \"%s\" is not a non-negative integer", ws);
    if (ps && parse_u32(ps, &priority) < 0)
        return bad(a, NM_INVALID_PARAMETER, "priority \"%s\" is not a non-negative integer", ps);
    char **mk = NULL, **mv = NULL;
    size_t nmk = 0, nmv = 0;
    if (keys) {
        nmk = split(keys, &mk);
        nmv = split(values, &mv);
        if (nmk != nmv) {
            free_split(mk, nmk);
            free_split(mv, nmv);
            return bad(a, NM_INVALID_QUERY_INS_PARAMETER, "%sinstance metadata key and value length are different",
                       "");
        }
    }
    /* narrow to one service when both are given */
    const nm_service_t *only = svc && ns ? nm_model_service(m, ns, svc) : NULL;
    size_t cap = only ? only->n_instances : HASH_COUNT(m->instances), k = 0;
    nm_instance_t **v = nm_xcalloc(cap, sizeof *v);
    if (!(svc && ns && !only)) {
        nm_instance_t *first = only ? only->instances : m->instances;
        for (nm_instance_t *in = first; in; in = only ? in->hh_svc.next : in->hh.next) {
            if ((id && strcmp(in->id, id)) || (svc && strcmp(in->service, svc)) || (ns && strcmp(in->ns, ns)) ||
                (host && !in_list(host, in->host)) || (port && !port_in_list(port, in->port)) ||
                (protocol && strcmp(in->protocol, protocol)) || (version && strcmp(in->version, version)) ||
                (hs && in->healthy != healthy) || (is && in->isolate != isolate) || (ws && in->weight != weight) ||
                (ps && in->priority != priority) || (logic_set && strcmp(in->logic_set, logic_set)) ||
                (region && strcmp(in->region, region)) || (zone && strcmp(in->zone, zone)) ||
                (campus && strcmp(in->campus, campus)) || (mk && !has_meta(&in->meta, mk, mv, nmk)))
                continue;
            v[k++] = in;
        }
    }
    if (mk) {
        free_split(mk, nmk);
        free_split(mv, nmv);
    }
    qsort(v, k, sizeof *v, cmp_inst);
    Lodestar__NamingQueryResponse *r = batch(a, NM_OK, NULL);
    V1__BatchQueryResponse *b = r->result;
    b->amount->value = (uint32_t)k;
    size_t from = offset < k ? offset : k, to = from + limit < k ? from + limit : k;
    b->n_instances = to - from;
    b->instances = nm_arena_alloc(a, (to - from) * sizeof *b->instances);
    for (size_t i = from; i < to; i++)
        b->instances[i - from] = nm_pb_instance(a, v[i]);
    b->size->value = (uint32_t)(to - from);
    free(v);
    return r;
}

/* ------------------------------------------------------------------ labels */

typedef struct label {
    char *key;
    nm_meta_t values; /* used as a sorted set: keys = the values */
    UT_hash_handle hh;
} label_t;

static int cmp_label(const void *a, const void *b)
{
    return strcmp((*(label_t *const *)a)->key, (*(label_t *const *)b)->key);
}

static Lodestar__NamingQueryResponse *q_labels(nm_arena_t *a, const nm_model_t *m, const query_t *q)
{
    const char *ns = filter(q, "namespace"), *svc = filter(q, "service"), *sid = filter(q, "service_id");
    if (!ns)
        ns = "default";
    const nm_service_t *s = svc ? nm_model_service(m, ns, svc) : NULL;
    if (sid && *sid)
        for (const nm_service_t *c = m->services; c && (!s || strcmp(s->id, sid)); c = c->hh.next)
            if (c->has_row && strcmp(c->id, sid) == 0)
                s = c;
    Lodestar__NamingQueryResponse *r = nm_arena_alloc(a, sizeof *r);
    lodestar__naming_query_response__init(r);
    V1__Response *resp = nm_arena_alloc(a, sizeof *resp);
    v1__response__init(resp);
    resp->code = u32v(a, NM_OK);
    resp->info = sv(a, polaris_code_info(NM_OK));
    V1__InstanceLabels *il = nm_arena_alloc(a, sizeof *il);
    v1__instance_labels__init(il);
    il->namespace_ = nm_arena_strdup(a, s ? s->ns : ns);
    il->service = nm_arena_strdup(a, s ? s->name : svc ? svc : "");
    il->service_id = nm_arena_strdup(a, s ? s->id : sid ? sid : "");
    resp->instancelabels = il;
    r->response = resp;
    if (!s)
        return r;
    label_t *labels = NULL;
    for (const nm_instance_t *in = s->instances; in; in = in->hh_svc.next) {
        for (size_t i = 0; i < in->meta.n; i++) {
            label_t *l = NULL;
            HASH_FIND_STR(labels, in->meta.keys[i], l);
            if (!l) {
                l = nm_xcalloc(1, sizeof *l);
                l->key = nm_xstrdup(in->meta.keys[i]);
                HASH_ADD_KEYPTR(hh, labels, l->key, strlen(l->key), l);
            }
            if (!nm_meta_get(&l->values, in->meta.vals[i])) {
                nm_meta_add(&l->values, in->meta.vals[i], "");
                nm_meta_sort(&l->values);
            }
        }
    }
    size_t n = HASH_COUNT(labels), i = 0;
    label_t **v = nm_xcalloc(n, sizeof *v);
    for (label_t *l = labels; l; l = l->hh.next)
        v[i++] = l;
    qsort(v, n, sizeof *v, cmp_label);
    il->n_labels = n;
    il->labels = nm_arena_alloc(a, n * sizeof *il->labels);
    for (i = 0; i < n; i++) {
        V1__InstanceLabels__LabelsEntry *e = nm_arena_alloc(a, sizeof *e);
        v1__instance_labels__labels_entry__init(e);
        e->key = nm_arena_strdup(a, v[i]->key);
        V1__StringList *sl = nm_arena_alloc(a, sizeof *sl);
        v1__string_list__init(sl);
        sl->n_values = v[i]->values.n;
        sl->values = nm_arena_alloc(a, sl->n_values * sizeof *sl->values);
        for (size_t j = 0; j < sl->n_values; j++)
            sl->values[j] = nm_arena_strdup(a, v[i]->values.keys[j]);
        e->value = sl;
        il->labels[i] = e;
    }
    free(v);
    label_t *l, *tmp;
    HASH_ITER(hh, labels, l, tmp)
    {
        HASH_DEL(labels, l);
        free(l->key);
        nm_meta_free(&l->values);
        free(l);
    }
    return r;
}

Lodestar__NamingQueryResponse *nm_query(nm_arena_t *a, const nm_model_t *m, const query_t *q)
{
    switch (q->kind) {
    case LODESTAR__NAMING_QUERY_REQUEST__KIND__NAMESPACES: return q_namespaces(a, m, q);
    case LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES: return q_services(a, m, q);
    case LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES_ALL: return q_services_all(a, m, q);
    case LODESTAR__NAMING_QUERY_REQUEST__KIND__SERVICES_COUNT: {
        Lodestar__NamingQueryResponse *r = batch(a, NM_OK, NULL);
        uint32_t n = 0;
        for (const nm_service_t *s = m->services; s; s = s->hh.next)
            n += nm_service_live(s);
        r->result->amount->value = n;
        return r;
    }
    case LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES: return q_instances(a, m, q);
    case LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES_COUNT: {
        Lodestar__NamingQueryResponse *r = batch(a, NM_OK, NULL);
        r->result->amount->value = HASH_COUNT(m->instances);
        return r;
    }
    case LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCE_LABELS: return q_labels(a, m, q);
    default: {
        char kind[16];
        snprintf(kind, sizeof kind, "%d", (int)q->kind);
        return bad(a, NM_BAD_REQUEST, "query kind %s is not a naming query", kind);
    }
    }
}

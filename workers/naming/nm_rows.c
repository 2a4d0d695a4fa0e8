/*
 * nm_rows.c: the JSON form of naming rows, the format rows cross the
 * PostgreSQL boundary in.
 *
 * Reading (start-up load, polling): SQL returns each row as to_jsonb(row)
 * with txid removed and ctime/mtime replaced by ctime_ms/mtime_ms (epoch
 * milliseconds); see NM_SQL_ROW_JSON in naming.h. Keys are the column names
 * of 0002_naming.sql.
 * Unknown keys are ignored (a newer schema may add columns); a missing or
 * mistyped known key is an error naming it.
 *
 * Writing: one JSON object per row with the same column names, fed to
 * jsonb_populate_recordset(NULL::<table>, $n) in naming_batch.c. Times, row
 * versions and txid are never sent: PostgreSQL sets them.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "naming.h"

enum ftype { F_STR, F_U32, F_I32, F_I64, F_BOOL, F_META };

typedef struct field {
    const char *col;
    enum ftype type;
    size_t off;
    bool write; /* sent on writes */
} field_t;

#define NSF(col, t, f, w) {col, t, offsetof(nm_namespace_t, f), w}
static const field_t ns_fields[] = {
    NSF("name", F_STR, name, true),         NSF("comment", F_STR, comment, true),
    NSF("owners", F_STR, owners, true),     NSF("token", F_STR, token, true),
    NSF("metadata", F_META, meta, true),    NSF("deleted", F_BOOL, deleted, true),
    NSF("ctime_ms", F_I64, ctime_ms, false), NSF("mtime_ms", F_I64, mtime_ms, false),
    NSF("row_version", F_I64, row_version, false),
};

#define SVF(col, t, f, w) {col, t, offsetof(nm_service_t, f), w}
static const field_t svc_fields[] = {
    SVF("namespace", F_STR, ns, true),          SVF("name", F_STR, name, true),
    SVF("id", F_STR, id, true),                 SVF("metadata", F_META, meta, true),
    SVF("ports", F_STR, ports, true),           SVF("business", F_STR, business, true),
    SVF("department", F_STR, department, true), SVF("cmdb_mod1", F_STR, cmdb_mod1, true),
    SVF("cmdb_mod2", F_STR, cmdb_mod2, true),   SVF("cmdb_mod3", F_STR, cmdb_mod3, true),
    SVF("comment", F_STR, comment, true),       SVF("owners", F_STR, owners, true),
    SVF("token", F_STR, token, true),           SVF("platform_id", F_STR, platform_id, true),
    SVF("deleted", F_BOOL, deleted, true),      SVF("ctime_ms", F_I64, ctime_ms, false),
    SVF("mtime_ms", F_I64, mtime_ms, false),    SVF("row_version", F_I64, row_version, false),
};

#define INF(col, t, f, w) {col, t, offsetof(nm_instance_t, f), w}
static const field_t inst_fields[] = {
    INF("id", F_STR, id, true),
    INF("namespace", F_STR, ns, true),
    INF("service", F_STR, service, true),
    INF("vpc_id", F_STR, vpc_id, true),
    INF("host", F_STR, host, true),
    INF("port", F_U32, port, true),
    INF("protocol", F_STR, protocol, true),
    INF("version", F_STR, version, true),
    INF("priority", F_U32, priority, true),
    INF("weight", F_U32, weight, true),
    INF("hc_type", F_I32, hc_type, true),
    INF("hc_ttl", F_U32, hc_ttl, true),
    INF("enable_health_check", F_BOOL, enable_hc, true),
    INF("healthy", F_BOOL, healthy, true),
    INF("isolate", F_BOOL, isolate, true),
    INF("region", F_STR, region, true),
    INF("zone", F_STR, zone, true),
    INF("campus", F_STR, campus, true),
    INF("metadata", F_META, meta, true),
    INF("logic_set", F_STR, logic_set, true),
    INF("nacos_group", F_STR, nacos_group, true),
    INF("nacos_cluster", F_STR, nacos_cluster, true),
    INF("ephemeral", F_BOOL, ephemeral, true),
    INF("eureka_app", F_STR, eureka_app, true),
    INF("eureka_status", F_STR, eureka_status, true),
    INF("eureka_overridden_status", F_STR, eureka_overridden_status, true),
    INF("eureka_last_dirty_ms", F_I64, eureka_last_dirty_ms, true),
    INF("origin", F_STR, origin, true),
    INF("deleted", F_BOOL, deleted, true),
    INF("ctime_ms", F_I64, ctime_ms, false),
    INF("mtime_ms", F_I64, mtime_ms, false),
    INF("row_version", F_I64, row_version, false),
};

#define N(a) (sizeof a / sizeof a[0])

static int read_field(json_t *obj, const field_t *f, void *base, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, f->col);
    char *p = (char *)base + f->off;
    if (!v) {
        snprintf(err, errlen, "column %s is missing", f->col);
        return -EINVAL;
    }
    switch (f->type) {
    case F_STR: {
        if (json_is_null(v)) {
            snprintf(err, errlen, "column %s is NULL", f->col);
            return -EINVAL;
        }
        if (!json_is_string(v))
            break;
        char **dst = (char **)p;
        free(*dst);
        *dst = nm_xstrdup(json_string_value(v));
        return 0;
    }
    case F_U32:
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
            break;
        *(uint32_t *)p = (uint32_t)json_integer_value(v);
        return 0;
    case F_I32:
        if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX)
            break;
        *(int32_t *)p = (int32_t)json_integer_value(v);
        return 0;
    case F_I64:
        if (!json_is_integer(v))
            break;
        *(int64_t *)p = (int64_t)json_integer_value(v);
        return 0;
    case F_BOOL:
        if (!json_is_boolean(v))
            break;
        *(bool *)p = json_is_true(v);
        return 0;
    case F_META: {
        if (!json_is_object(v))
            break;
        nm_meta_t *m = (nm_meta_t *)p;
        nm_meta_free(m);
        const char *k;
        json_t *val;
        json_object_foreach(v, k, val)
        {
            if (!json_is_string(val)) {
                snprintf(err, errlen, "column %s: value of key \"%s\" is not a string", f->col, k);
                return -EINVAL;
            }
            nm_meta_add(m, k, json_string_value(val));
        }
        nm_meta_sort(m);
        return 0;
    }
    }
    snprintf(err, errlen, "column %s has the wrong type", f->col);
    return -EINVAL;
}

static int read_fields(json_t *obj, const field_t *fs, size_t n, void *base, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (read_field(obj, &fs[i], base, err, errlen) < 0)
            return -EINVAL;
    return 0;
}

int nm_row_parse(int kind, const char *text, void **out, char *err, size_t errlen)
{
    *out = NULL;
    json_error_t je;
    json_t *obj = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!obj || !json_is_object(obj)) {
        snprintf(err, errlen, "row is not a JSON object: %s", obj ? "wrong type" : je.text);
        json_decref(obj);
        return -EINVAL;
    }
    int rc = -EINVAL;
    if (kind == NM_ROW_NAMESPACE) {
        nm_namespace_t *ns = nm_namespace_new("");
        rc = read_fields(obj, ns_fields, N(ns_fields), ns, err, errlen);
        if (rc < 0)
            nm_namespace_free(ns);
        else
            *out = ns;
    } else if (kind == NM_ROW_SERVICE) {
        nm_service_t *s = nm_service_new("", "");
        rc = read_fields(obj, svc_fields, N(svc_fields), s, err, errlen);
        if (rc < 0) {
            nm_service_free(s);
        } else {
            free(s->key);
            s->key = nm_service_key(s->ns, s->name);
            *out = s;
        }
    } else if (kind == NM_ROW_INSTANCE) {
        nm_instance_t *in = nm_instance_new();
        rc = read_fields(obj, inst_fields, N(inst_fields), in, err, errlen);
        if (rc < 0) {
            nm_instance_free(in);
        } else {
            nm_instance_revision(in);
            *out = in;
        }
    } else {
        snprintf(err, errlen, "unknown row kind %d", kind);
    }
    json_decref(obj);
    return rc;
}

static json_t *write_fields(const field_t *fs, size_t n, const void *base)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) {
        const field_t *f = &fs[i];
        if (!f->write)
            continue;
        const char *p = (const char *)base + f->off;
        json_t *v = NULL;
        switch (f->type) {
        case F_STR: v = json_string(*(char *const *)p); break;
        case F_U32: v = json_integer(*(const uint32_t *)p); break;
        case F_I32: v = json_integer(*(const int32_t *)p); break;
        case F_I64: v = json_integer(*(const int64_t *)p); break;
        case F_BOOL: v = json_boolean(*(const bool *)p); break;
        case F_META: {
            const nm_meta_t *m = (const nm_meta_t *)p;
            v = json_object();
            for (size_t k = 0; k < m->n; k++)
                json_object_set_new(v, m->keys[k], json_string(m->vals[k]));
            break;
        }
        }
        /* strings were validated as UTF-8 before they got here, so a NULL
         * can only mean no memory */
        if (!v)
            nm_oom();
        json_object_set_new(o, f->col, v);
    }
    return o;
}

void *nm_row_json_namespace(const nm_namespace_t *ns)
{
    json_t *o = write_fields(ns_fields, N(ns_fields), ns);
    json_object_set_new(o, "revision", json_string(ns->revision));
    return o;
}

void *nm_row_json_service(const nm_service_t *s) { return write_fields(svc_fields, N(svc_fields), s); }

void *nm_row_json_instance(const nm_instance_t *in) { return write_fields(inst_fields, N(inst_fields), in); }

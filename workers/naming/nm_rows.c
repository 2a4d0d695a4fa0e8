/*
 * nm_rows.c: the forms naming rows cross the PostgreSQL boundary in.
 *
 * Reading (start-up load, polling): SQL returns each row as to_jsonb(row)
 * with txid and writer removed and ctime/mtime replaced by
 * ctime_ms/mtime_ms (epoch milliseconds); see NM_SQL_ROW_JSON in naming.h.
 * Keys are the column names of 0002_naming.sql. Unknown keys are ignored
 * (a newer schema may add columns); a missing or mistyped known key is an
 * error naming it.
 *
 * Writing: a batch's rows of one table go as one array per written column
 * (nm_rowset_t), in PostgreSQL's binary array format, which naming_batch.c
 * unnests back into rows. Binary needs no quoting or escaping, and
 * PostgreSQL reads it without parsing: only the metadata column (jsonb) is
 * text inside. Times, row versions, txid and writer are never part of a
 * row: PostgreSQL and the batch statement set them.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "naming.h"

enum ftype { F_STR, F_U32, F_I32, F_I64, F_BOOL, F_META, F_HEX };

/* The PostgreSQL type of a written column (NM_PG_NONE: read only). */
enum pgtype { PG_NONE, PG_TEXT, PG_INT2, PG_INT4, PG_INT8, PG_BOOL, PG_JSONB };

typedef struct field {
    const char *col;
    enum ftype type;
    size_t off;
    enum pgtype pg; /* PG_NONE: never written; F_HEX: written, never read */
} field_t;

#define NSF(col, t, f, w) {col, t, offsetof(nm_namespace_t, f), w}
static const field_t ns_fields[] = {
    NSF("name", F_STR, name, PG_TEXT),          NSF("comment", F_STR, comment, PG_TEXT),
    NSF("owners", F_STR, owners, PG_TEXT),      NSF("token", F_STR, token, PG_TEXT),
    NSF("metadata", F_META, meta, PG_JSONB),    NSF("revision", F_HEX, revision, PG_TEXT),
    NSF("deleted", F_BOOL, deleted, PG_BOOL),   NSF("ctime_ms", F_I64, ctime_ms, PG_NONE),
    NSF("mtime_ms", F_I64, mtime_ms, PG_NONE),  NSF("row_version", F_I64, row_version, PG_NONE),
};

#define SVF(col, t, f, w) {col, t, offsetof(nm_service_t, f), w}
static const field_t svc_fields[] = {
    SVF("namespace", F_STR, ns, PG_TEXT),          SVF("name", F_STR, name, PG_TEXT),
    SVF("id", F_STR, id, PG_TEXT),                 SVF("metadata", F_META, meta, PG_JSONB),
    SVF("ports", F_STR, ports, PG_TEXT),           SVF("business", F_STR, business, PG_TEXT),
    SVF("department", F_STR, department, PG_TEXT), SVF("cmdb_mod1", F_STR, cmdb_mod1, PG_TEXT),
    SVF("cmdb_mod2", F_STR, cmdb_mod2, PG_TEXT),   SVF("cmdb_mod3", F_STR, cmdb_mod3, PG_TEXT),
    SVF("comment", F_STR, comment, PG_TEXT),       SVF("owners", F_STR, owners, PG_TEXT),
    SVF("token", F_STR, token, PG_TEXT),           SVF("platform_id", F_STR, platform_id, PG_TEXT),
    SVF("deleted", F_BOOL, deleted, PG_BOOL),      SVF("ctime_ms", F_I64, ctime_ms, PG_NONE),
    SVF("mtime_ms", F_I64, mtime_ms, PG_NONE),     SVF("row_version", F_I64, row_version, PG_NONE),
};

/* Column types as in 0002_naming.sql: priority is a bigint, hc_type a
 * smallint, the other numbers integers. */
#define INF(col, t, f, w) {col, t, offsetof(nm_instance_t, f), w}
static const field_t inst_fields[] = {
    INF("id", F_STR, id, PG_TEXT),
    INF("namespace", F_STR, ns, PG_TEXT),
    INF("service", F_STR, service, PG_TEXT),
    INF("vpc_id", F_STR, vpc_id, PG_TEXT),
    INF("host", F_STR, host, PG_TEXT),
    INF("port", F_U32, port, PG_INT4),
    INF("protocol", F_STR, protocol, PG_TEXT),
    INF("version", F_STR, version, PG_TEXT),
    INF("priority", F_U32, priority, PG_INT8),
    INF("weight", F_U32, weight, PG_INT4),
    INF("hc_type", F_I32, hc_type, PG_INT2),
    INF("hc_ttl", F_U32, hc_ttl, PG_INT4),
    INF("enable_health_check", F_BOOL, enable_hc, PG_BOOL),
    INF("healthy", F_BOOL, healthy, PG_BOOL),
    INF("isolate", F_BOOL, isolate, PG_BOOL),
    INF("region", F_STR, region, PG_TEXT),
    INF("zone", F_STR, zone, PG_TEXT),
    INF("campus", F_STR, campus, PG_TEXT),
    INF("metadata", F_META, meta, PG_JSONB),
    INF("logic_set", F_STR, logic_set, PG_TEXT),
    INF("nacos_group", F_STR, nacos_group, PG_TEXT),
    INF("nacos_cluster", F_STR, nacos_cluster, PG_TEXT),
    INF("ephemeral", F_BOOL, ephemeral, PG_BOOL),
    INF("eureka_app", F_STR, eureka_app, PG_TEXT),
    INF("eureka_status", F_STR, eureka_status, PG_TEXT),
    INF("eureka_overridden_status", F_STR, eureka_overridden_status, PG_TEXT),
    INF("eureka_last_dirty_ms", F_I64, eureka_last_dirty_ms, PG_INT8),
    INF("origin", F_STR, origin, PG_TEXT),
    INF("deleted", F_BOOL, deleted, PG_BOOL),
    INF("ctime_ms", F_I64, ctime_ms, PG_NONE),
    INF("mtime_ms", F_I64, mtime_ms, PG_NONE),
    INF("row_version", F_I64, row_version, PG_NONE),
};

#define N(a) (sizeof a / sizeof a[0])

static int read_field(json_t *obj, const field_t *f, void *base, char *err, size_t errlen)
{
    if (f->type == F_HEX)
        return 0; /* recomputed from the content, not read */
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
        nm_str_set((char **)p, json_string_value(v));
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
    case F_HEX:
        return 0;
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
            nm_str_free(s->key);
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

/* ------------------------------------------------------------ writing */

static const field_t *fields_of(int kind, size_t *n)
{
    switch (kind) {
    case NM_ROW_NAMESPACE: *n = N(ns_fields); return ns_fields;
    case NM_ROW_SERVICE: *n = N(svc_fields); return svc_fields;
    case NM_ROW_INSTANCE: *n = N(inst_fields); return inst_fields;
    default: *n = 0; return NULL;
    }
}

/* The i-th written field of kind. */
static const field_t *written(int kind, size_t i)
{
    size_t n;
    const field_t *fs = fields_of(kind, &n);
    for (size_t k = 0; k < n; k++)
        if (fs[k].pg != PG_NONE && i-- == 0)
            return &fs[k];
    return NULL;
}

size_t nm_row_ncols(int kind)
{
    size_t n, w = 0;
    const field_t *fs = fields_of(kind, &n);
    for (size_t k = 0; k < n; k++)
        w += fs[k].pg != PG_NONE;
    return w;
}

const char *nm_row_col(int kind, size_t i)
{
    const field_t *f = written(kind, i);
    return f ? f->col : NULL;
}

static const char *const pg_names[] = {
    [PG_TEXT] = "text", [PG_INT2] = "int2", [PG_INT4] = "int4",
    [PG_INT8] = "int8", [PG_BOOL] = "bool", [PG_JSONB] = "jsonb",
};

/* PostgreSQL's built-in type OIDs (pg_type.dat), fixed across versions. */
static const uint32_t pg_oids[] = {
    [PG_TEXT] = 25, [PG_INT2] = 21, [PG_INT4] = 23, [PG_INT8] = 20, [PG_BOOL] = 16, [PG_JSONB] = 3802,
};

const char *nm_row_coltype(int kind, size_t i)
{
    const field_t *f = written(kind, i);
    return f ? pg_names[f->pg] : NULL;
}

/* One column: the 20-byte array header (filled in by nm_rowset_param),
 * then per element its length and bytes. */
typedef struct col {
    char *buf;
    size_t len, cap;
} col_t;

struct nm_rowset {
    int kind;
    size_t ncols;
    const field_t **fs; /* the written fields, in column order */
    col_t *cols;
    uint32_t n;
};

#define ARRAY_HEADER 20

static void col_reserve(col_t *c, size_t more)
{
    if (c->len + more <= c->cap)
        return;
    size_t cap = c->cap ? c->cap : 256;
    while (cap < c->len + more)
        cap *= 2;
    char *b = realloc(c->buf, cap);
    if (!b)
        nm_oom();
    c->buf = b;
    c->cap = cap;
}

static void put_u32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static void col_bytes(col_t *c, const void *p, size_t n)
{
    col_reserve(c, n);
    memcpy(c->buf + c->len, p, n);
    c->len += n;
}

/* An element: its length, then its bytes. */
static void col_elem(col_t *c, const void *p, size_t n)
{
    char l[4];
    put_u32(l, (uint32_t)n);
    col_reserve(c, 4 + n);
    col_bytes(c, l, 4);
    col_bytes(c, p, n);
}

static void col_int(col_t *c, uint64_t v, size_t width)
{
    char b[8];
    for (size_t i = 0; i < width; i++)
        b[i] = (char)(v >> (8 * (width - 1 - i)));
    col_elem(c, b, width);
}

/* A JSON string literal of s (valid UTF-8, so only quotes, backslashes and
 * control characters need escapes). */
static void json_str(col_t *c, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    col_bytes(c, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        col_bytes(c, run, (size_t)(s - run));
        char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
        if (ch == '"' || ch == '\\') {
            esc[1] = (char)ch;
            col_bytes(c, esc, 2);
        } else {
            col_bytes(c, esc, 6);
        }
        run = s + 1;
    }
    col_bytes(c, run, (size_t)(s - run));
    col_bytes(c, "\"", 1);
}

/* jsonb's binary input: a version byte (1), then the JSON text. */
static void col_meta(col_t *c, const nm_meta_t *m)
{
    col_reserve(c, 4);
    size_t at = c->len;
    c->len += 4;
    col_bytes(c, "\1{", 2);
    for (size_t i = 0; i < m->n; i++) {
        if (i)
            col_bytes(c, ",", 1);
        json_str(c, m->keys[i]);
        col_bytes(c, ":", 1);
        json_str(c, m->vals[i]);
    }
    col_bytes(c, "}", 1);
    put_u32(c->buf + at, (uint32_t)(c->len - at - 4));
}

nm_rowset_t *nm_rowset_new(int kind)
{
    nm_rowset_t *rs = nm_xcalloc(1, sizeof *rs);
    rs->kind = kind;
    rs->ncols = nm_row_ncols(kind);
    rs->fs = nm_xcalloc(rs->ncols, sizeof *rs->fs);
    rs->cols = nm_xcalloc(rs->ncols, sizeof *rs->cols);
    for (size_t i = 0; i < rs->ncols; i++) {
        rs->fs[i] = written(kind, i);
        col_reserve(&rs->cols[i], ARRAY_HEADER);
        rs->cols[i].len = ARRAY_HEADER;
    }
    return rs;
}

void nm_rowset_add(nm_rowset_t *rs, const void *row)
{
    for (size_t i = 0; i < rs->ncols; i++) {
        const field_t *f = rs->fs[i];
        const char *p = (const char *)row + f->off;
        col_t *c = &rs->cols[i];
        size_t w = f->pg == PG_INT2 ? 2 : f->pg == PG_INT4 ? 4 : 8;
        switch (f->type) {
        case F_STR: {
            const char *v = *(char *const *)p;
            col_elem(c, v, strlen(v));
            break;
        }
        case F_HEX: col_elem(c, p, strlen(p)); break;
        case F_U32: col_int(c, *(const uint32_t *)p, w); break;
        case F_I32: col_int(c, (uint64_t)(int64_t) * (const int32_t *)p, w); break;
        case F_I64: col_int(c, (uint64_t) * (const int64_t *)p, w); break;
        case F_BOOL: {
            char b = *(const bool *)p ? 1 : 0;
            col_elem(c, &b, 1);
            break;
        }
        case F_META: col_meta(c, (const nm_meta_t *)p); break;
        }
    }
    rs->n++;
}

size_t nm_rowset_count(const nm_rowset_t *rs) { return rs->n; }

const char *nm_rowset_param(nm_rowset_t *rs, size_t i, int *len)
{
    col_t *c = &rs->cols[i];
    char *h = c->buf;
    uint32_t oid = pg_oids[rs->fs[i]->pg];
    if (rs->n == 0) {
        /* an empty array has no dimensions */
        put_u32(h, 0);
        put_u32(h + 4, 0);
        put_u32(h + 8, oid);
        *len = 12;
        return h;
    }
    put_u32(h, 1);       /* dimensions */
    put_u32(h + 4, 0);   /* no NULLs */
    put_u32(h + 8, oid); /* element type */
    put_u32(h + 12, rs->n);
    put_u32(h + 16, 1); /* lower bound */
    *len = (int)c->len;
    return h;
}

void nm_rowset_free(nm_rowset_t *rs)
{
    if (!rs)
        return;
    for (size_t i = 0; i < rs->ncols; i++)
        free(rs->cols[i].buf);
    free(rs->cols);
    free(rs->fs);
    free(rs);
}

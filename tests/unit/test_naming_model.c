/*
 * test_naming_model.c: the naming worker's in-memory model: content
 * revisions (stable, and changed by every observable field), applying rows
 * by row_version, services that exist only through their instances,
 * resync mark-and-sweep, the service aggregate kept per change, and the row
 * formats: binary column arrays out, JSON in (workers/naming/nm_model.c,
 * nm_rows.c, nm_pb.c).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "naming.h"

static void set(char **f, const char *v) { nm_str_set(f, v); }

static nm_instance_t *mk(const char *id, const char *svc, const char *host, int64_t version)
{
    nm_instance_t *in = nm_instance_new();
    set(&in->id, id);
    set(&in->ns, "default");
    set(&in->service, svc);
    set(&in->host, host);
    in->port = 8080;
    in->row_version = version;
    nm_meta_add(&in->meta, "env", "prod");
    nm_meta_sort(&in->meta);
    return in;
}

static nm_service_t *mksvc(const char *name, int64_t version)
{
    nm_service_t *s = nm_service_new("default", name);
    set(&s->id, "0123456789abcdef0123456789abcdef");
    set(&s->comment, "the echo service");
    s->row_version = version;
    return s;
}

Test(naming_model, instance_revision_is_content_only)
{
    nm_instance_t *a = mk("i1", "echo", "10.0.0.1", 1), *b = mk("i1", "echo", "10.0.0.1", 99);
    b->ctime_ms = 12345;
    b->mtime_ms = 67890;
    nm_instance_revision(a);
    nm_instance_revision(b);
    cr_assert_str_eq(a->revision, b->revision, "times and row versions are not content");
    cr_assert_eq(strlen(a->revision), (size_t)NAMING_HEX_LEN);

    /* every observable field changes the revision */
    static const char *const names[] = {"id",       "service", "host",   "port",  "protocol", "version",
                                        "priority", "weight",  "hc",     "ttl",   "enable",   "healthy",
                                        "isolate",  "region",  "campus", "meta",  "logic_set", "vpc",
                                        "nacos_group", "ephemeral", "eureka_status", "dirty", "origin"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        nm_instance_t *c = nm_instance_dup(a);
        switch (i) {
        case 0: set(&c->id, "i2"); break;
        case 1: set(&c->service, "echo2"); break;
        case 2: set(&c->host, "10.0.0.2"); break;
        case 3: c->port = 8081; break;
        case 4: set(&c->protocol, "grpc"); break;
        case 5: set(&c->version, "1.0"); break;
        case 6: c->priority = 1; break;
        case 7: c->weight = 50; break;
        case 8: c->hc_type = 1; break;
        case 9: c->hc_ttl = 5; break;
        case 10: c->enable_hc = true; break;
        case 11: c->healthy = false; break;
        case 12: c->isolate = true; break;
        case 13: set(&c->region, "r"); break;
        case 14: set(&c->campus, "c"); break;
        case 15: nm_meta_add(&c->meta, "env", "dev"); nm_meta_sort(&c->meta); break;
        case 16: set(&c->logic_set, "set"); break;
        case 17: set(&c->vpc_id, "vpc"); break;
        case 18: set(&c->nacos_group, "G"); break;
        case 19: c->ephemeral = true; break;
        case 20: set(&c->eureka_status, "UP"); break;
        case 21: c->eureka_last_dirty_ms = 1; break;
        case 22: set(&c->origin, "eureka"); break;
        }
        nm_instance_revision(c);
        cr_assert_str_neq(c->revision, a->revision, "changing %s must change the revision", names[i]);
        nm_instance_free(c);
    }
    nm_instance_free(a);
    nm_instance_free(b);
}

/* nm_digest_* must give exactly naming_digest_*'s digests (revisions stay
 * the same across versions and nodes): the same runs, short and long
 * (past the inline buffer), NULL and empty strings. */
Test(naming_model, buffered_digest_equals_naming_digest)
{
    static char big[5000];
    memset(big, 'x', sizeof big - 1);
    for (int round = 0; round < 3; round++) {
        naming_digest_t ref;
        cr_assert_eq(naming_digest_init(&ref), 0);
        nm_digest_t d;
        nm_digest_init(&d);
        const char *runs[] = {"lodestar.instance.1", "", NULL, "a", "bc", round ? big : "short", "\x01\x02"};
        for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
            naming_digest_add_str(&ref, runs[i]);
            nm_digest_add_str(&d, runs[i]);
        }
        unsigned char raw[3] = {0, 255, 7};
        naming_digest_add(&ref, raw, round == 2 ? 0 : sizeof raw);
        nm_digest_add(&d, raw, round == 2 ? 0 : sizeof raw);
        char want[NAMING_HEX_LEN + 1], got[NAMING_HEX_LEN + 1];
        unsigned char bin[NAMING_HEX_LEN / 2];
        naming_digest_hex(&ref, want);
        nm_digest_finish(&d, got, bin);
        cr_assert_str_eq(got, want, "round %d", round);
        for (int i = 0; i < NAMING_HEX_LEN / 2; i++) {
            unsigned v;
            sscanf(want + 2 * i, "%2x", &v);
            cr_assert_eq(bin[i], v, "round %d: byte %d", round, i);
        }
    }
}

Test(naming_model, metadata_is_sorted_and_last_duplicate_wins)
{
    nm_meta_t m = {0};
    nm_meta_add(&m, "b", "1");
    nm_meta_add(&m, "a", "2");
    nm_meta_add(&m, "b", "3");
    nm_meta_sort(&m);
    cr_assert_eq(m.n, 2u);
    cr_assert_str_eq(m.keys[0], "a");
    cr_assert_str_eq(m.keys[1], "b");
    cr_assert_str_eq(nm_meta_get(&m, "b"), "3");
    cr_assert_null(nm_meta_get(&m, "c"));
    nm_meta_free(&m);
}

Test(naming_model, service_revision_follows_instances_in_id_order)
{
    nm_model_t *m1 = nm_model_new(), *m2 = nm_model_new();
    nm_model_apply_service(m1, mksvc("echo", 1));
    nm_model_apply_instance(m1, mk("a", "echo", "10.0.0.1", 2));
    nm_model_apply_instance(m1, mk("b", "echo", "10.0.0.2", 3));
    /* the same data arriving in another order (and other versions) */
    nm_model_apply_instance(m2, mk("b", "echo", "10.0.0.2", 7));
    nm_model_apply_instance(m2, mk("a", "echo", "10.0.0.1", 8));
    nm_model_apply_service(m2, mksvc("echo", 9));
    nm_model_finish(m1);
    nm_model_finish(m2);
    nm_service_t *s1 = nm_model_service(m1, "default", "echo"), *s2 = nm_model_service(m2, "default", "echo");
    cr_assert_not_null(s1);
    cr_assert_str_eq(s1->revision, s2->revision, "identical data must give identical revisions on every node");
    cr_assert_eq(s1->n_instances, 2u);
    cr_assert_eq(s1->n_healthy, 2u);
    char before[NAMING_HEX_LEN + 1];
    memcpy(before, s1->revision, sizeof before);

    nm_instance_t *c = mk("b", "echo", "10.0.0.2", 4);
    c->isolate = true;
    cr_assert_eq(nm_model_apply_instance(m1, c), 1);
    nm_model_finish(m1);
    cr_assert_str_neq(s1->revision, before, "an instance change changes the service revision");
    cr_assert_eq(s1->n_healthy, 1u, "isolated instances are not counted healthy");
    memcpy(before, s1->revision, sizeof before);

    nm_service_t *u = mksvc("echo", 5);
    set(&u->comment, "changed");
    nm_model_apply_service(m1, u);
    nm_model_finish(m1);
    cr_assert_str_neq(s1->revision, before, "a service field change changes the service revision");
    nm_model_free(m1);
    nm_model_free(m2);
}

/* The service's instance aggregate (count, healthy count, XOR of digests)
 * is kept per change: after a long mix of additions, in-place changes
 * (healthy, isolate, host), moves and removals it must equal that of a
 * model holding just the final instances, applied once each. */
Test(naming_model, service_aggregate_follows_every_instance_change)
{
    enum { N = 64 };
    nm_model_t *m = nm_model_new(), *fresh = nm_model_new();
    nm_model_apply_service(m, mksvc("echo", 1));
    nm_model_apply_service(fresh, mksvc("echo", 1));
    int64_t v = 10;
    bool live[N] = {0}, healthy[N], isolate[N];
    int host[N];
    char id[16], h[32];
    unsigned x = 12345;
    for (int round = 0; round < 2000; round++) {
        x = x * 1103515245u + 12345u;
        int i = (int)((x >> 8) % N), what = (int)((x >> 20) % 5);
        snprintf(id, sizeof id, "i%02d", i);
        if (what == 0 && live[i]) { /* removal */
            nm_instance_t *d = mk(id, "echo", "h", v++);
            d->deleted = true;
            nm_model_apply_instance(m, d);
            live[i] = false;
        } else if (what == 1 && live[i]) { /* a move away and back */
            snprintf(h, sizeof h, "10.0.0.%d", host[i]);
            nm_model_apply_instance(m, mk(id, "other", h, v++));
            nm_instance_t *back = mk(id, "echo", h, v++);
            back->healthy = healthy[i];
            back->isolate = isolate[i];
            nm_model_apply_instance(m, back);
        } else { /* addition or in-place change */
            if (!live[i])
                healthy[i] = true, isolate[i] = false, host[i] = i;
            if (what == 2)
                healthy[i] = !healthy[i];
            else if (what == 3)
                isolate[i] = !isolate[i];
            else
                host[i]++;
            snprintf(h, sizeof h, "10.0.0.%d", host[i]);
            nm_instance_t *in = mk(id, "echo", h, v++);
            in->healthy = healthy[i];
            in->isolate = isolate[i];
            nm_model_apply_instance(m, in);
            live[i] = true;
        }
        if (round % 97 == 0)
            nm_model_finish(m);
    }
    uint32_t n = 0, nh = 0;
    for (int i = N - 1; i >= 0; i--) {
        if (!live[i])
            continue;
        snprintf(id, sizeof id, "i%02d", i);
        snprintf(h, sizeof h, "10.0.0.%d", host[i]);
        nm_instance_t *in = mk(id, "echo", h, 1);
        in->healthy = healthy[i];
        in->isolate = isolate[i];
        nm_model_apply_instance(fresh, in);
        n++;
        nh += healthy[i] && !isolate[i];
    }
    nm_model_finish(m);
    nm_model_finish(fresh);
    nm_service_t *a = nm_model_service(m, "default", "echo"), *b = nm_model_service(fresh, "default", "echo");
    cr_assert_gt(n, 0u);
    cr_assert_eq(a->n_instances, n, "instances: %u, expected %u", a->n_instances, n);
    cr_assert_eq(a->n_healthy, nh, "healthy: %u, expected %u", a->n_healthy, nh);
    cr_assert_str_eq(a->revision, b->revision, "the aggregate drifted from the instances it stands for");
    nm_model_free(m);
    nm_model_free(fresh);
}

Test(naming_model, rows_apply_by_row_version)
{
    nm_model_t *m = nm_model_new();
    cr_assert_eq(nm_model_apply_instance(m, mk("a", "echo", "10.0.0.1", 5)), 1);
    nm_model_clear_touched(m);
    cr_assert_eq(nm_model_apply_instance(m, mk("a", "echo", "10.0.0.9", 5)), 0, "the same version is ignored");
    cr_assert_eq(nm_model_apply_instance(m, mk("a", "echo", "10.0.0.9", 4)), 0, "an older version is ignored");
    cr_assert_str_eq(nm_model_instance(m, "a")->host, "10.0.0.1");
    cr_assert_null(m->touched, "ignored rows touch nothing");
    cr_assert_eq(nm_model_apply_instance(m, mk("a", "echo", "10.0.0.9", 6)), 1);
    cr_assert_str_eq(nm_model_instance(m, "a")->host, "10.0.0.9");
    cr_assert_not_null(m->touched);
    nm_instance_t *del = mk("a", "echo", "10.0.0.9", 7);
    del->deleted = true;
    cr_assert_eq(nm_model_apply_instance(m, del), 1);
    cr_assert_null(nm_model_instance(m, "a"));
    cr_assert_null(nm_model_service(m, "default", "echo"),
                   "a service without row and instances leaves the model");
    del = mk("zzz", "echo", "h", 8);
    del->deleted = true;
    cr_assert_eq(nm_model_apply_instance(m, del), 0, "deleting what is not there changes nothing");
    nm_model_free(m);
}

Test(naming_model, moving_an_instance_between_services)
{
    nm_model_t *m = nm_model_new();
    nm_model_apply_instance(m, mk("a", "one", "h", 1));
    nm_model_apply_instance(m, mk("a", "two", "h", 2));
    nm_model_finish(m);
    cr_assert_null(nm_model_service(m, "default", "one"));
    cr_assert_eq(nm_model_service(m, "default", "two")->n_instances, 1u);
    cr_assert_eq(HASH_COUNT(m->touched), 2u, "both services are published");
    nm_model_free(m);
}

Test(naming_model, services_live_through_rows_or_instances)
{
    nm_model_t *m = nm_model_new();
    nm_model_apply_instance(m, mk("a", "echo", "h", 1));
    nm_service_t *s = nm_model_service(m, "default", "echo");
    cr_assert_not_null(s, "an instance brings its service along before the service row arrives");
    cr_assert_not(s->has_row);
    cr_assert(nm_service_live(s));
    nm_model_apply_service(m, mksvc("echo", 2));
    cr_assert(s->has_row);
    cr_assert_str_eq(s->comment, "the echo service");
    nm_service_t *d = mksvc("echo", 3);
    d->deleted = true;
    nm_model_apply_service(m, d);
    s = nm_model_service(m, "default", "echo");
    cr_assert_not_null(s, "a deleted service row does not hide live instances");
    cr_assert_not(s->has_row);
    cr_assert_str_eq(s->comment, "");
    cr_assert_eq(nm_model_apply_service(m, mksvc("echo", 3)), 0, "the deletion's version still counts");
    nm_model_free(m);
}

Test(naming_model, resync_sweeps_what_the_database_no_longer_has)
{
    nm_model_t *m = nm_model_new();
    nm_model_apply_instance(m, mk("a", "echo", "h1", 1));
    nm_model_apply_instance(m, mk("b", "echo", "h2", 2));
    nm_namespace_t *ns = nm_namespace_new("prod");
    ns->row_version = 3;
    nm_model_apply_namespace(m, ns);
    nm_model_finish(m);
    nm_model_clear_touched(m);

    nm_model_mark_unseen(m);
    nm_model_apply_instance(m, mk("a", "echo", "h1", 1)); /* still there, unchanged */
    nm_model_sweep(m);
    nm_model_finish(m);
    cr_assert_not_null(nm_model_instance(m, "a"));
    cr_assert_null(nm_model_instance(m, "b"), "b was deleted elsewhere meanwhile");
    cr_assert_null(nm_model_namespace(m, "prod"));
    cr_assert(m->namespaces_changed);
    cr_assert_eq(nm_model_service(m, "default", "echo")->n_instances, 1u);
    cr_assert_eq(HASH_COUNT(m->touched), 1u);
    nm_model_free(m);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be_int(const unsigned char *p, uint32_t len)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < len; i++)
        v = v << 8 | p[i];
    if (len < 8 && (v >> (8 * len - 1)) & 1)
        v |= ~(uint64_t)0 << (8 * len); /* sign-extend */
    return (int64_t)v;
}

/* Decode the column arrays of a rowset the way PostgreSQL reads them
 * (array_recv: header, element type, dimension, then length-prefixed
 * elements) into one JSON object per row, keyed by column, as the read
 * path's SQL returns rows. */
static json_t *decode_rowset(int kind, nm_rowset_t *rs)
{
    static const struct { const char *name; uint32_t oid; } types[] = {
        {"text", 25}, {"int2", 21}, {"int4", 23}, {"int8", 20}, {"bool", 16}, {"jsonb", 3802}};
    size_t rows = nm_rowset_count(rs), ncols = nm_row_ncols(kind);
    json_t *out = json_array();
    for (size_t r = 0; r < rows; r++)
        json_array_append_new(out, json_object());
    for (size_t c = 0; c < ncols; c++) {
        const char *type = nm_row_coltype(kind, c), *col = nm_row_col(kind, c);
        uint32_t oid = 0;
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
            if (strcmp(types[t].name, type) == 0)
                oid = types[t].oid;
        cr_assert_neq(oid, 0u, "column %s: unknown type %s", col, type);
        int len;
        const unsigned char *p = (const unsigned char *)nm_rowset_param(rs, c, &len);
        cr_assert_eq(be32(p), rows ? 1u : 0u, "column %s: dimensions", col);
        cr_assert_eq(be32(p + 4), 0u, "column %s: no NULLs", col);
        cr_assert_eq(be32(p + 8), oid, "column %s: element type", col);
        if (!rows) {
            cr_assert_eq(len, 12, "column %s: an empty array has no dimension", col);
            continue;
        }
        cr_assert_eq(be32(p + 12), (uint32_t)rows, "column %s: length", col);
        cr_assert_eq(be32(p + 16), 1u, "column %s: lower bound", col);
        const unsigned char *e = p + 20;
        for (size_t r = 0; r < rows; r++) {
            uint32_t n = be32(e);
            e += 4;
            json_t *v = NULL;
            if (oid == 25) {
                v = json_stringn((const char *)e, n);
            } else if (oid == 16) {
                cr_assert_eq(n, 1u);
                v = json_boolean(e[0]);
            } else if (oid == 3802) {
                cr_assert_eq(e[0], 1, "jsonb version byte");
                json_error_t je;
                v = json_loadb((const char *)e + 1, n - 1, 0, &je);
                cr_assert_not_null(v, "column %s: bad JSON: %s", col, je.text);
            } else {
                cr_assert_eq(n, oid == 21 ? 2u : oid == 23 ? 4u : 8u, "column %s: width", col);
                v = json_integer(be_int(e, n));
            }
            e += n;
            json_object_set_new(json_array_get(out, r), col, v);
        }
        cr_assert_eq((int)(e - p), len, "column %s: trailing bytes", col);
    }
    return out;
}

Test(naming_model, instance_rows_round_trip)
{
    nm_instance_t *in = mk("i-1", "echo", "10.0.0.1", 0);
    set(&in->protocol, "grpc");
    in->hc_type = 1;
    in->hc_ttl = 5;
    in->enable_hc = true;
    in->isolate = true;
    set(&in->region, "r1");
    set(&in->eureka_status, "UP");
    in->eureka_last_dirty_ms = 1700000000000LL;
    in->priority = 4000000000u;
    nm_meta_add(&in->meta, "quote\"back\\slash", "ctl\x01\ttab \xc3\xa9");
    nm_meta_sort(&in->meta);
    nm_instance_revision(in);
    nm_instance_t *other = mk("i-2", "echo", "10.0.0.2", 0);
    other->hc_type = -1;
    nm_rowset_t *rs = nm_rowset_new(NM_ROW_INSTANCE);
    nm_rowset_add(rs, in);
    nm_rowset_add(rs, other);
    json_t *rows = decode_rowset(NM_ROW_INSTANCE, rs);
    nm_rowset_free(rs);
    json_t *o = json_array_get(rows, 0);
    cr_assert_null(json_object_get(o, "row_version"), "row versions are never sent");
    cr_assert_null(json_object_get(o, "ctime_ms"), "times are never sent");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(rows, 1), "hc_type")), -1, "negative smallint");
    json_object_set_new(o, "ctime_ms", json_integer(1000));
    json_object_set_new(o, "mtime_ms", json_integer(2000));
    json_object_set_new(o, "row_version", json_integer(42));
    json_object_set_new(o, "future_column", json_string("ignored"));
    char *text = json_dumps(o, 0);
    json_decref(rows);
    void *row = NULL;
    char err[256];
    cr_assert_eq(nm_row_parse(NM_ROW_INSTANCE, text, &row, err, sizeof err), 0, "parse failed: %s", err);
    free(text);
    nm_instance_t *back = row;
    cr_assert_str_eq(back->revision, in->revision, "every field came back as it was sent");
    cr_assert_eq(back->row_version, 42);
    cr_assert_eq(back->ctime_ms, 1000);
    cr_assert_eq(back->priority, 4000000000u);
    cr_assert_eq(back->eureka_last_dirty_ms, 1700000000000LL);
    cr_assert_str_eq(nm_meta_get(&back->meta, "env"), "prod");
    cr_assert_str_eq(nm_meta_get(&back->meta, "quote\"back\\slash"), "ctl\x01\ttab \xc3\xa9");
    nm_instance_free(back);
    nm_instance_free(in);
    nm_instance_free(other);

    /* the other kinds: namespaces send their revision, services their key */
    nm_namespace_t *ns = nm_namespace_new("prod");
    nm_namespace_revision(ns);
    rs = nm_rowset_new(NM_ROW_NAMESPACE);
    nm_rowset_add(rs, ns);
    rows = decode_rowset(NM_ROW_NAMESPACE, rs);
    nm_rowset_free(rs);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "revision")), ns->revision);
    json_decref(rows);
    nm_namespace_free(ns);
    nm_service_t *sv = mksvc("echo", 1);
    rs = nm_rowset_new(NM_ROW_SERVICE);
    rows = decode_rowset(NM_ROW_SERVICE, rs); /* empty */
    cr_assert_eq(json_array_size(rows), 0u);
    json_decref(rows);
    nm_rowset_add(rs, sv);
    rows = decode_rowset(NM_ROW_SERVICE, rs);
    nm_rowset_free(rs);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "namespace")), "default");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "comment")), "the echo service");
    json_decref(rows);
    nm_service_free(sv);

    cr_assert_eq(nm_row_parse(NM_ROW_INSTANCE, "{\"id\":\"x\"}", &row, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "column namespace is missing");
    cr_assert_eq(nm_row_parse(NM_ROW_SERVICE, "[1]", &row, err, sizeof err), -EINVAL);
    cr_assert_null(row);
}

Test(naming_model, service_and_namespace_rows)
{
    void *row = NULL;
    char err[256];
    const char *svc = "{\"namespace\":\"default\",\"name\":\"echo\",\"id\":\"abc\",\"metadata\":{\"k\":\"v\"},"
                      "\"ports\":\"\",\"business\":\"b\",\"department\":\"\",\"cmdb_mod1\":\"\",\"cmdb_mod2\":\"\","
                      "\"cmdb_mod3\":\"\",\"comment\":\"\",\"owners\":\"o\",\"token\":\"t\",\"platform_id\":\"\","
                      "\"deleted\":false,\"ctime_ms\":1,\"mtime_ms\":2,\"row_version\":3}";
    cr_assert_eq(nm_row_parse(NM_ROW_SERVICE, svc, &row, err, sizeof err), 0, "%s", err);
    nm_service_t *s = row;
    cr_assert_str_eq(s->key, "default\x1f" "echo");
    cr_assert_str_eq(nm_meta_get(&s->meta, "k"), "v");
    cr_assert_eq(s->row_version, 3);
    nm_service_free(s);
    const char *bad = "{\"name\":\"p\",\"comment\":\"\",\"owners\":\"\",\"token\":\"\",\"metadata\":{},"
                      "\"deleted\":\"no\",\"ctime_ms\":1,\"mtime_ms\":2,\"row_version\":3}";
    cr_assert_eq(nm_row_parse(NM_ROW_NAMESPACE, bad, &row, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "column deleted has the wrong type");
}

Test(naming_model, published_states)
{
    nm_model_t *m = nm_model_new();
    nm_model_apply_service(m, mksvc("echo", 1));
    nm_model_apply_instance(m, mk("b", "echo", "h2", 2));
    nm_model_apply_instance(m, mk("a", "echo", "h1", 3));
    nm_model_finish(m);
    nm_arena_t a;
    nm_arena_init(&a, 1024);
    nm_service_t *s = nm_model_service(m, "default", "echo");
    Lodestar__NamingServiceState *st = nm_pb_state(&a, s, NULL, NULL, 77);
    cr_assert_eq(st->seq, 77u);
    cr_assert_not(st->deleted);
    cr_assert_eq(st->n_instances, 2u);
    cr_assert_str_eq(st->instances[0]->instance->id->value, "a", "instances are ordered by id");
    cr_assert_str_eq(st->service->revision->value, s->revision);
    cr_assert_eq(st->service->total_instance_count->value, 2u);
    cr_assert_null(st->service->token, "tokens are not published");
    cr_assert_null(st->instances[0]->instance->health_check, "no health check block when none is set");
    cr_assert_str_eq(st->instances[0]->instance->revision->value, nm_model_instance(m, "a")->revision);
    Lodestar__NamingServiceState *gone = nm_pb_state(&a, NULL, "default", "old", 78);
    cr_assert(gone->deleted);
    cr_assert_str_eq(gone->service->name->value, "old");
    cr_assert_eq(gone->n_instances, 0u);
    nm_arena_free(&a);
    nm_model_free(m);
}

/*
 * test_naming_validate.c: static checks of naming write requests, with the
 * exact Polaris codes and the messages naming the field
 * (workers/naming/nm_validate.c).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "naming.h"

static nm_arena_t A;

static void setup(void) { nm_arena_init(&A, 4096); }
static void teardown(void) { nm_arena_free(&A); }

TestSuite(naming_validate, .init = setup, .fini = teardown);

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

/* A string of n copies of c (in the arena). */
static char *rep(const char *c, size_t n)
{
    size_t l = strlen(c);
    char *s = nm_arena_alloc(&A, l * n + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * l, c, l);
    return s;
}

/* A valid instance: default/echo 10.0.0.1:8080. */
static V1__Instance *inst(void)
{
    V1__Instance *in = nm_arena_alloc(&A, sizeof *in);
    v1__instance__init(in);
    in->namespace_ = S("default");
    in->service = S("echo");
    in->host = S("10.0.0.1");
    in->port = U(8080);
    return in;
}

static void add_meta(V1__Instance *in, const char *k, const char *v)
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

static void expect_item(const Lodestar__NamingWriteRequest *r, uint32_t code, const char *info)
{
    char got[512];
    uint32_t c = nm_validate_item(r, 0, got, sizeof got);
    cr_assert_eq(c, code, "expected code %u (%s), got %u (%s)", code, info, c, got);
    if (info)
        cr_assert_str_eq(got, info);
}

#define REG LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER

static void expect_register(V1__Instance *in, uint32_t code, const char *info)
{
    expect_item(ireq(REG, &in, 1), code, info);
}

Test(naming_validate, a_complete_registration_passes)
{
    V1__Instance *in = inst();
    in->port = U(0);
    add_meta(in, "env", "prod");
    in->weight = U(65535);
    in->priority = U(4000000000u);
    expect_register(in, 0, "");
}

Test(naming_validate, instance_names)
{
    V1__Instance *in = inst();
    in->namespace_ = NULL;
    expect_register(in, 400110, "invalid namespace name: instance.namespace is missing");
    in = inst();
    in->namespace_ = S("de fault");
    expect_register(in, 400110,
                    "invalid namespace name: instance.namespace \"de fault\" contains a character outside "
                    "[0-9A-Za-z-./:_]");
    in = inst();
    in->namespace_ = S(rep("n", 65));
    expect_register(in, 400110, "invalid namespace name: instance.namespace has 65 characters (at most 64)");
    in = inst();
    in->service = S("");
    expect_register(in, 400120, "invalid service name: instance.service is empty");
    in = inst();
    in->service = S(rep("s", 129));
    expect_register(in, 400120, "invalid service name: instance.service has 129 characters (at most 128)");
    in = inst();
    in->service = S(rep("s", 128));
    expect_register(in, 0, "");
    in = inst();
    in->service = S("a-b.c/d:e_F9");
    expect_register(in, 0, "");
}

Test(naming_validate, host_port_weight)
{
    V1__Instance *in = inst();
    in->host = NULL;
    expect_register(in, 400131, "invalid instance host: instance.host is missing");
    in = inst();
    in->host = S("");
    expect_register(in, 400131, "invalid instance host: instance.host is empty");
    in = inst();
    in->host = S(rep("h", 129));
    expect_register(in, 400131, "invalid instance host: instance.host has 129 characters (at most 128)");
    in = inst();
    in->host = S(rep("\xc3\xa9", 128)); /* 128 characters, 256 bytes: lengths count characters */
    expect_register(in, 0, "");
    in = inst();
    in->host = S("10.0.0.\xff");
    expect_register(in, 400131, "invalid instance host: instance.host is not valid UTF-8");
    in = inst();
    in->port = NULL;
    expect_register(in, 400132, "invalid instance port: instance.port is missing");
    in = inst();
    in->port = U(65536);
    expect_register(in, 400132, "invalid instance port: instance.port 65536 is above 65535");
    in = inst();
    in->weight = U(65536);
    expect_register(in, 400103, "invalid parameter: instance.weight 65536 is above 65535");
}

Test(naming_validate, field_lengths)
{
    V1__Instance *in = inst();
    in->protocol = S(rep("p", 33));
    expect_register(in, 400136, "invalid instance protocol: instance.protocol has 33 characters (at most 32)");
    in = inst();
    in->version = S(rep("v", 33));
    expect_register(in, 400137, "invalid instance version: instance.version has 33 characters (at most 32)");
    in = inst();
    in->logic_set = S(rep("l", 129));
    expect_register(in, 400138, "invalid instance logic set: instance.logic_set has 129 characters (at most 128)");
    in = inst();
    in->id = S(rep("i", 129));
    expect_register(in, 400130, "invalid instance id: instance.id has 129 characters (at most 128)");
    in = inst();
    in->vpc_id = S(rep("v", 65));
    expect_register(in, 400103, "invalid parameter: instance.vpc_id has 65 characters (at most 64)");
    in = inst();
    V1__Location *loc = nm_arena_alloc(&A, sizeof *loc);
    v1__location__init(loc);
    loc->zone = S(rep("z", 129));
    in->location = loc;
    expect_register(in, 400103, "invalid parameter: instance.location.zone has 129 characters (at most 128)");
}

Test(naming_validate, metadata)
{
    V1__Instance *in = inst();
    for (int i = 0; i < 65; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        add_meta(in, k, "v");
    }
    expect_register(in, 400150,
                    "the length of metadata is too long or metadata contains invalid characters: instance.metadata "
                    "has 65 entries (at most 64)");
    in = inst();
    add_meta(in, rep("k", 129), "v");
    expect_register(in, 400150,
                    "the length of metadata is too long or metadata contains invalid characters: instance.metadata "
                    "key \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...\" is longer than 128 "
                    "characters");
    in = inst();
    add_meta(in, "big", rep("v", 4097));
    expect_register(in, 400150,
                    "the length of metadata is too long or metadata contains invalid characters: "
                    "instance.metadata[\"big\"] is longer than 4096 characters");
    in = inst();
    add_meta(in, "ok", rep("v", 4096));
    expect_register(in, 0, "");
}

Test(naming_validate, revise_and_host_ops)
{
    V1__Instance *in = inst();
    in->id = S("");
    expect_item(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER, &in, 1), 400130,
                "invalid instance id: instance.id is empty");
    in = nm_arena_alloc(&A, sizeof *in);
    v1__instance__init(in);
    in->id = S("abc");
    expect_item(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER, &in, 1), 0, "");
    in = inst();
    in->host = NULL;
    expect_item(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER, &in, 1), 400131,
                "invalid instance host: instance.host is missing");
    in = inst();
    expect_item(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST, &in, 1), 400139,
                "invalid instance isolate: instance.isolate is missing");
    in->isolate = B(true);
    expect_item(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST, &in, 1), 0, "");
    in = inst();
    in->host = S("");
    expect_item(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DELETE_HOST, &in, 1), 400131,
                "invalid instance host: instance.host is empty");
    in = inst();
    in->id = S("x");
    expect_item(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH, &in, 1), 400103,
                "invalid parameter: instance.healthy is missing");
    in->id = NULL;
    in->healthy = B(false);
    expect_item(ireq(LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH, &in, 1), 400130,
                "invalid instance id: instance.id is missing");
    V1__Instance *none = NULL;
    expect_item(ireq(REG, &none, 1), 400002, "empty request: instances[0].instance is missing");
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

static V1__Service *svc(void)
{
    V1__Service *s = nm_arena_alloc(&A, sizeof *s);
    v1__service__init(s);
    s->namespace_ = S("default");
    s->name = S("echo");
    return s;
}

Test(naming_validate, services)
{
    static const struct {
        size_t off, len;
        uint32_t code;
        const char *info;
    } cases[] = {
        {offsetof(V1__Service, ports), 8193, 400124,
         "invalid service ports: service.ports has 8193 characters (at most 8192)"},
        {offsetof(V1__Service, business), 129, 400125,
         "invalid service business: service.business has 129 characters (at most 128)"},
        {offsetof(V1__Service, department), 1025, 400126,
         "invalid service department: service.department has 1025 characters (at most 1024)"},
        {offsetof(V1__Service, cmdb_mod2), 1025, 400127,
         "invalid service CMDB: service.cmdb_mod2 has 1025 characters (at most 1024)"},
        {offsetof(V1__Service, comment), 1025, 400128,
         "invalid service comment: service.comment has 1025 characters (at most 1024)"},
        {offsetof(V1__Service, owners), 1025, 400121,
         "invalid service owners: service.owners has 1025 characters (at most 1024)"},
        {offsetof(V1__Service, token), 2049, 400122,
         "invalid service token: service.token has 2049 characters (at most 2048)"},
        {offsetof(V1__Service, platform_id), 33, 400180,
         "invalid platform id: service.platform_id has 33 characters (at most 32)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        V1__Service *s = svc();
        *(Google__Protobuf__StringValue **)((char *)s + cases[i].off) = S(rep("x", cases[i].len));
        expect_item(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE, s), cases[i].code, cases[i].info);
        *(Google__Protobuf__StringValue **)((char *)s + cases[i].off) = S(rep("x", cases[i].len - 1));
        expect_item(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE, s), 0, "");
    }
    V1__Service *s = svc();
    s->name = S("bad name");
    expect_item(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_DELETE, s), 400120,
                "invalid service name: service.name \"bad name\" contains a character outside [0-9A-Za-z-./:_]");
    s = svc();
    s->namespace_ = NULL;
    expect_item(sreq(LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE, s), 400110,
                "invalid namespace name: service.namespace is missing");
}

Test(naming_validate, namespaces)
{
    Lodestar__NamingWriteRequest *r = nm_arena_alloc(&A, sizeof *r);
    lodestar__naming_write_request__init(r);
    r->op = LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_CREATE;
    r->n_namespaces = 1;
    r->namespaces = nm_arena_alloc(&A, sizeof *r->namespaces);
    V1__Namespace *ns = nm_arena_alloc(&A, sizeof *ns);
    v1__namespace__init(ns);
    r->namespaces[0] = ns;
    expect_item(r, 400110, "invalid namespace name: namespace.name is missing");
    ns->name = S("prod");
    ns->owners = S(rep("o", 1025));
    expect_item(r, 400111, "invalid namespace owners: namespace.owners has 1025 characters (at most 1024)");
    ns->owners = S("ops");
    expect_item(r, 0, "");
}

Test(naming_validate, request_level)
{
    char info[512];
    V1__Instance *in = inst();
    Lodestar__NamingWriteRequest *r = ireq(REG, &in, 1);
    cr_assert_eq(nm_validate_request(r, info, sizeof info), 0u);
    r->op = 99;
    cr_assert_eq(nm_validate_request(r, info, sizeof info), 400000u);
    cr_assert_str_eq(info, "bad request: op 99 is not a naming write operation");
    r = ireq(REG, NULL, 0);
    cr_assert_eq(nm_validate_request(r, info, sizeof info), 400002u);
    cr_assert_str_eq(info, "empty request: INSTANCE_REGISTER carries no instances");
    V1__Instance *many[101];
    for (int i = 0; i < 101; i++)
        many[i] = inst();
    r = ireq(REG, many, 101);
    cr_assert_eq(nm_validate_request(r, info, sizeof info), 400003u);
    cr_assert_str_eq(info, "batch size over the limit: 101 instances (at most 100)");
    r->op = LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH;
    cr_assert_eq(nm_validate_request(r, info, sizeof info), 0u, "the health worker's batches are not capped at 100");
}

Test(naming_validate, one_bad_item_rejects_the_request)
{
    V1__Instance *list[3] = {inst(), inst(), inst()};
    list[0]->port = U(1);
    list[1]->host = NULL;
    list[2]->port = U(3);
    Lodestar__NamingWriteRequest *r = ireq(REG, list, 3);
    nm_result_t res[3] = {0};
    cr_assert_eq(nm_validate_items(r, res), 1u);
    cr_assert_eq(res[1].code, 400131u);
    cr_assert_str_eq(res[1].info, "invalid instance host: instance.host is missing");
    cr_assert_eq(res[0].code, 400000u);
    cr_assert_str_eq(res[0].info, "bad request: batch rejected: item 1 invalid");
    cr_assert_eq(res[2].code, 400000u);
    cr_assert_str_eq(res[2].info, "bad request: batch rejected: item 1 invalid");
}

Test(naming_validate, the_same_instance_twice)
{
    V1__Instance *list[2] = {inst(), inst()};
    Lodestar__NamingWriteRequest *r = ireq(REG, list, 2);
    nm_result_t res[2] = {0};
    cr_assert_eq(nm_validate_items(r, res), 1u);
    char id[NAMING_HEX_LEN + 1], want[256];
    naming_instance_id("default", "echo", NULL, "10.0.0.1", 8080, id);
    snprintf(want, sizeof want, "the same instance request: instance %s is also item 0 of this request", id);
    cr_assert_eq(res[1].code, 400208u);
    cr_assert_str_eq(res[1].info, want);
    cr_assert_eq(res[0].code, 400000u);
    /* an explicit id equal to the computed one is the same instance too */
    list[1]->id = S(id);
    memset(res, 0, sizeof res);
    cr_assert_eq(nm_validate_items(r, res), 1u);
    cr_assert_eq(res[1].code, 400208u);
}

Test(naming_validate, instance_id_is_explicit_or_computed)
{
    char id[NM_MAX_INSTANCE_ID * 4 + 1], want[NAMING_HEX_LEN + 1];
    V1__Instance *in = inst();
    nm_item_instance_id(in, id);
    naming_instance_id("default", "echo", NULL, "10.0.0.1", 8080, want);
    cr_assert_str_eq(id, want);
    in->vpc_id = S("vpc-1");
    nm_item_instance_id(in, id);
    naming_instance_id("default", "echo", "vpc-1", "10.0.0.1", 8080, want);
    cr_assert_str_eq(id, want, "the vpc id is part of the computed id");
    in->vpc_id = S("");
    in->port = U(0);
    nm_item_instance_id(in, id);
    naming_instance_id("default", "echo", "", "10.0.0.1", 0, want);
    cr_assert_str_eq(id, want, "an empty vpc id is no vpc id; port 0");
    /* the worker composes the text itself: it must cut over-long input
     * exactly where naming_instance_id does (2047 bytes) */
    in->vpc_id = S(rep("v", 300));
    in->host = S(rep("h", 900));
    in->service = S(rep("\xc3\xa9", 450));
    in->port = U(65535);
    nm_item_instance_id(in, id);
    naming_instance_id("default", in->service->value, in->vpc_id->value, in->host->value, 65535, want);
    cr_assert_str_eq(id, want, "over-long input");
    in->namespace_ = NULL;
    in->service = NULL;
    nm_item_instance_id(in, id);
    naming_instance_id("", "", in->vpc_id->value, in->host->value, 65535, want);
    cr_assert_str_eq(id, want, "missing names hash as empty ones");
    in->id = S("my-own-id");
    nm_item_instance_id(in, id);
    cr_assert_str_eq(id, "my-own-id");
}

Test(naming_validate, utf8)
{
    cr_assert(nm_utf8_valid("plain"));
    cr_assert(nm_utf8_valid("\xe4\xb8\xad\xe6\x96\x87"));
    cr_assert_not(nm_utf8_valid("\xc0\xaf"), "overlong encodings are invalid");
    cr_assert_not(nm_utf8_valid("\xed\xa0\x80"), "surrogates are invalid");
    cr_assert_not(nm_utf8_valid("\xe4\xb8"), "truncated sequences are invalid");
    cr_assert_eq(nm_utf8_len("\xe4\xb8\xad\xe6\x96\x87x"), 3u);
    char buf[8];
    cr_assert_str_eq(nm_clip("\xe4\xb8\xad\xe6\x96\x87\xe6\x96\x87", buf, sizeof buf), "\xe4\xb8\xad...",
                     "clipping never cuts a character");
}

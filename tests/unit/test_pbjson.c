/*
 * test_pbjson.c: the protobuf-c <-> proto3 JSON converter (proto/pbjson.c).
 *
 * Real Polaris v1 messages (Instance with wrappers, map, location and
 * health check; DiscoverResponse; Any holding an Instance;
 * BatchWriteResponse) go message -> JSON -> message (packed bytes equal)
 * and JSON -> message -> JSON (stable text). A hand-built descriptor
 * (test.AllTypes, not in pbjson's generated type table) covers every scalar
 * type, oneofs, an int32-keyed map, recursion and the computed camelCase
 * names. Every input error is checked word for word, malformed and deeply
 * nested JSON is refused, unknown fields are refused or skipped by flag,
 * and a seeded mutation loop feeds a few thousand broken documents through
 * decode/encode with a counting allocator that must balance.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "pbjson.h"
#include "polaris_config_file.pb-c.h"
#include "polaris_fault_detector.pb-c.h"
#include "polaris_heartbeat.pb-c.h"
#include "polaris_request.pb-c.h"
#include "polaris_response.pb-c.h"
#include "polaris_service.pb-c.h"

/* ------------------------------------------------ test.AllTypes fixture */

typedef enum { COLOR_RED = 0, COLOR_GREEN = 1, COLOR_BLUE = 2 } Color;

typedef struct {
    ProtobufCMessage base;
    int32_t key;
    char *value;
} IntMapEntry;

typedef enum {
    ALL_TYPES_CHOICE_NOT_SET = 0,
    ALL_TYPES_CHOICE_O_INT = 19,
    ALL_TYPES_CHOICE_O_STR = 20,
} AllTypesChoice;

typedef struct AllTypes AllTypes;
struct AllTypes {
    ProtobufCMessage base;
    int32_t i32, s32, sf32;
    uint32_t u32, f32;
    int64_t i64, s64, sf64;
    uint64_t u64, f64;
    float flt;
    double dbl;
    protobuf_c_boolean b;
    char *str;
    ProtobufCBinaryData byt;
    int en;
    size_t n_r_i32;
    int32_t *r_i32;
    size_t n_r_str;
    char **r_str;
    AllTypesChoice choice_case;
    union {
        int32_t o_int;
        char *o_str;
    };
    char *snake_case_name;
    AllTypes *child;
    size_t n_r_en;
    int *r_en;
    size_t n_r_i64;
    int64_t *r_i64;
    size_t n_int_map;
    IntMapEntry **int_map;
};

static const ProtobufCEnumValue color_values[] = {
    { "RED", "COLOR_RED", 0 }, { "GREEN", "COLOR_GREEN", 1 }, { "BLUE", "COLOR_BLUE", 2 },
};
static const ProtobufCEnumValueIndex color_by_name[] = { { "BLUE", 2 }, { "GREEN", 1 }, { "RED", 0 } };
static const ProtobufCIntRange color_ranges[] = { { 0, 0 }, { 0, 3 } };
static const ProtobufCEnumDescriptor color_descriptor = {
    PROTOBUF_C__ENUM_DESCRIPTOR_MAGIC, "test.Color", "Color", "Color", "test",
    3, color_values, 3, color_by_name, 1, color_ranges, NULL, NULL, NULL, NULL,
};

extern const ProtobufCMessageDescriptor int_map_entry_descriptor;
extern const ProtobufCMessageDescriptor all_types_descriptor;

static void int_map_entry_init(ProtobufCMessage *m)
{
    IntMapEntry *e = (IntMapEntry *)m;
    memset(e, 0, sizeof *e);
    e->base.descriptor = &int_map_entry_descriptor;
    e->value = (char *)protobuf_c_empty_string;
}

static const ProtobufCFieldDescriptor int_map_entry_fields[] = {
    { "key", 1, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_INT32, 0, offsetof(IntMapEntry, key),
      NULL, NULL, 0, 0, NULL, NULL },
    { "value", 2, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_STRING, 0, offsetof(IntMapEntry, value),
      NULL, &protobuf_c_empty_string, 0, 0, NULL, NULL },
};
static const unsigned int_map_entry_by_name[] = { 0, 1 };
static const ProtobufCIntRange int_map_entry_ranges[] = { { 1, 0 }, { 0, 2 } };
const ProtobufCMessageDescriptor int_map_entry_descriptor = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "test.AllTypes.IntMapEntry", "IntMapEntry",
    "IntMapEntry", "test", sizeof(IntMapEntry), 2, int_map_entry_fields, int_map_entry_by_name,
    1, int_map_entry_ranges, int_map_entry_init, NULL, NULL, NULL,
};

static void all_types_init(ProtobufCMessage *m)
{
    AllTypes *a = (AllTypes *)m;
    memset(a, 0, sizeof *a);
    a->base.descriptor = &all_types_descriptor;
    a->str = (char *)protobuf_c_empty_string;
    a->snake_case_name = (char *)protobuf_c_empty_string;
}

#define AT_FIELD(nm, id, label, type, q, desc, def, flags) \
    { #nm, id, PROTOBUF_C_LABEL_##label, PROTOBUF_C_TYPE_##type, q, offsetof(AllTypes, nm), \
      desc, def, flags, 0, NULL, NULL }
#define AT_SCALAR(nm, id, type) AT_FIELD(nm, id, NONE, type, 0, NULL, NULL, 0)
#define AT_REPEATED(nm, id, type, desc, flags) \
    AT_FIELD(nm, id, REPEATED, type, offsetof(AllTypes, n_##nm), desc, NULL, flags)

static const ProtobufCFieldDescriptor all_types_fields[] = {
    AT_SCALAR(i32, 1, INT32),
    AT_SCALAR(s32, 2, SINT32),
    AT_SCALAR(sf32, 3, SFIXED32),
    AT_SCALAR(u32, 4, UINT32),
    AT_SCALAR(f32, 5, FIXED32),
    AT_SCALAR(i64, 6, INT64),
    AT_SCALAR(s64, 7, SINT64),
    AT_SCALAR(sf64, 8, SFIXED64),
    AT_SCALAR(u64, 9, UINT64),
    AT_SCALAR(f64, 10, FIXED64),
    AT_SCALAR(flt, 11, FLOAT),
    AT_SCALAR(dbl, 12, DOUBLE),
    AT_SCALAR(b, 13, BOOL),
    AT_FIELD(str, 14, NONE, STRING, 0, NULL, &protobuf_c_empty_string, 0),
    AT_SCALAR(byt, 15, BYTES),
    AT_FIELD(en, 16, NONE, ENUM, 0, &color_descriptor, NULL, 0),
    AT_REPEATED(r_i32, 17, INT32, NULL, PROTOBUF_C_FIELD_FLAG_PACKED),
    AT_REPEATED(r_str, 18, STRING, NULL, 0),
    AT_FIELD(o_int, 19, NONE, INT32, offsetof(AllTypes, choice_case), NULL, NULL,
             PROTOBUF_C_FIELD_FLAG_ONEOF),
    AT_FIELD(o_str, 20, NONE, STRING, offsetof(AllTypes, choice_case), NULL, NULL,
             PROTOBUF_C_FIELD_FLAG_ONEOF),
    AT_FIELD(snake_case_name, 21, NONE, STRING, 0, NULL, &protobuf_c_empty_string, 0),
    AT_FIELD(child, 22, NONE, MESSAGE, 0, &all_types_descriptor, NULL, 0),
    AT_REPEATED(r_en, 23, ENUM, &color_descriptor, PROTOBUF_C_FIELD_FLAG_PACKED),
    AT_REPEATED(r_i64, 24, INT64, NULL, PROTOBUF_C_FIELD_FLAG_PACKED),
    AT_REPEATED(int_map, 25, MESSAGE, &int_map_entry_descriptor, 0),
};
/* field indexes in strcmp order of their names */
static const unsigned all_types_by_name[] = {
    12 /* b */, 14 /* byt */, 21 /* child */, 11 /* dbl */, 15 /* en */, 4 /* f32 */,
    9 /* f64 */, 10 /* flt */, 0 /* i32 */, 5 /* i64 */, 24 /* int_map */, 18 /* o_int */,
    19 /* o_str */, 22 /* r_en */, 16 /* r_i32 */, 23 /* r_i64 */, 17 /* r_str */, 1 /* s32 */,
    6 /* s64 */, 2 /* sf32 */, 7 /* sf64 */, 20 /* snake_case_name */, 13 /* str */,
    3 /* u32 */, 8 /* u64 */,
};
static const ProtobufCIntRange all_types_ranges[] = { { 1, 0 }, { 0, 25 } };
const ProtobufCMessageDescriptor all_types_descriptor = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "test.AllTypes", "AllTypes", "AllTypes", "test",
    sizeof(AllTypes), 25, all_types_fields, all_types_by_name, 1, all_types_ranges,
    all_types_init, NULL, NULL, NULL,
};

/* ---------------------------------------------------------------- helpers */

struct counter {
    long allocs, frees;
};

static void *count_alloc(void *data, size_t n)
{
    ((struct counter *)data)->allocs++;
    return malloc(n);
}

static void count_free(void *data, void *p)
{
    if (p != NULL)
        ((struct counter *)data)->frees++;
    free(p);
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    cr_assert_not_null(buf);
    cr_assert_eq(protobuf_c_message_pack(m, buf), n);
    *len = n;
    return buf;
}

/* Same wire bytes (our encoder is deterministic for equal content). */
static void assert_same_message(const ProtobufCMessage *a, const ProtobufCMessage *b,
                                const char *what)
{
    size_t la, lb;
    uint8_t *pa = pack(a, &la), *pb = pack(b, &lb);
    cr_assert(la == lb && memcmp(pa, pb, la) == 0, "%s: messages differ (%zu vs %zu bytes)",
              what, la, lb);
    free(pa);
    free(pb);
}

/* A heap copy of m (freed with protobuf_c_message_free_unpacked). */
static ProtobufCMessage *clone(const ProtobufCMessage *m)
{
    size_t n;
    uint8_t *buf = pack(m, &n);
    ProtobufCMessage *c = protobuf_c_message_unpack(m->descriptor, NULL, n, buf);
    free(buf);
    cr_assert_not_null(c);
    return c;
}

static char *enc(const ProtobufCMessage *m, int flags)
{
    char err[512], *out = NULL;
    size_t len = 0;
    int rc = pbjson_encode(m, flags, &out, &len, err, sizeof err);
    cr_assert_eq(rc, 0, "encode %s failed: %s", m->descriptor->name, err);
    cr_assert_not_null(out);
    cr_assert_eq(strlen(out), len);
    return out;
}

static ProtobufCMessage *dec(const ProtobufCMessageDescriptor *d, const char *json, int flags)
{
    char err[512];
    ProtobufCMessage *m = NULL;
    int rc = pbjson_decode(d, json, strlen(json), flags, NULL, &m, err, sizeof err);
    cr_assert_eq(rc, 0, "decode %s as %s failed: %s", json, d->name, err);
    cr_assert_not_null(m);
    return m;
}

static void expect_json(const ProtobufCMessage *m, int flags, const char *want)
{
    char *got = enc(m, flags);
    cr_assert_str_eq(got, want, "encoding %s", m->descriptor->name);
    free(got);
}

static void expect_decode_error(const ProtobufCMessageDescriptor *d, const char *json, int flags,
                                const char *want)
{
    char err[512];
    ProtobufCMessage *m = (ProtobufCMessage *)&err; /* must be reset to NULL */
    struct counter cnt = { 0, 0 };
    ProtobufCAllocator a = { count_alloc, count_free, &cnt };
    int rc = pbjson_decode(d, json, strlen(json), flags, &a, &m, err, sizeof err);
    cr_assert_eq(rc, -EINVAL, "decode %s: rc %d, want -EINVAL (err \"%s\")", json, rc, err);
    cr_assert_null(m, "no message on error");
    cr_assert_str_eq(err, want, "decode %s: got \"%s\"", json, err);
    cr_assert_eq(cnt.allocs, cnt.frees, "decode %s: %ld allocations, %ld frees", json,
                 cnt.allocs, cnt.frees);
}

/* JSON -> message -> JSON must give canonical text that then stays fixed. */
static void expect_canonical(const ProtobufCMessageDescriptor *d, const char *in,
                             const char *want)
{
    ProtobufCMessage *m1 = dec(d, in, 0), *m2;
    char *j1 = enc(m1, 0), *j2;
    cr_assert_str_eq(j1, want, "canonical form of %s", in);
    m2 = dec(d, j1, 0);
    j2 = enc(m2, 0);
    cr_assert_str_eq(j2, j1, "second round of %s", in);
    assert_same_message(m1, m2, in);
    free(j1);
    free(j2);
    protobuf_c_message_free_unpacked(m1, NULL);
    protobuf_c_message_free_unpacked(m2, NULL);
}

/* --------------------------------------------------- Polaris v1 messages */

static Google__Protobuf__StringValue S[16];
static Google__Protobuf__UInt32Value U[4];
static Google__Protobuf__BoolValue B[4];

static Google__Protobuf__StringValue *sv(int i, const char *s)
{
    google__protobuf__string_value__init(&S[i]);
    S[i].value = (char *)s;
    return &S[i];
}

static Google__Protobuf__UInt32Value *u32(int i, uint32_t v)
{
    google__protobuf__uint32_value__init(&U[i]);
    U[i].value = v;
    return &U[i];
}

static Google__Protobuf__BoolValue *bv(int i, int v)
{
    google__protobuf__bool_value__init(&B[i]);
    B[i].value = v;
    return &B[i];
}

/* A registration as an SDK sends it, as a heap message. */
static ProtobufCMessage *make_instance(void)
{
    V1__Instance ins = V1__INSTANCE__INIT;
    V1__HealthCheck hc = V1__HEALTH_CHECK__INIT;
    V1__HeartbeatHealthCheck hb = V1__HEARTBEAT_HEALTH_CHECK__INIT;
    V1__Location loc = V1__LOCATION__INIT;
    V1__Instance__MetadataEntry e1 = V1__INSTANCE__METADATA_ENTRY__INIT;
    V1__Instance__MetadataEntry e2 = V1__INSTANCE__METADATA_ENTRY__INIT;
    V1__Instance__MetadataEntry *md[] = { &e1, &e2 };

    ins.id = sv(0, "ab");
    ins.service = sv(1, "svc");
    ins.namespace_ = sv(2, "ns");
    ins.host = sv(3, "10.0.0.1");
    ins.port = u32(0, 8080);
    ins.weight = u32(1, 100);
    hb.ttl = u32(2, 5);
    hc.type = V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT;
    hc.heartbeat = &hb;
    ins.health_check = &hc;
    ins.healthy = bv(0, 1);
    ins.isolate = bv(1, 0);
    loc.region = sv(4, "r");
    loc.zone = sv(5, "z");
    ins.location = &loc;
    e1.key = "env";
    e1.value = "prod";
    e2.key = "k";
    e2.value = "v";
    ins.n_metadata = 2;
    ins.metadata = md;
    ins.logic_set = sv(6, "set1");
    ins.service_token = sv(7, "tok");
    ins.enable_health_check = bv(2, 1);
    ins.vpc_id = sv(8, "vpc");
    return clone(&ins.base);
}

static const char INSTANCE_JSON[] =
    "{\"id\":\"ab\",\"service\":\"svc\",\"namespace\":\"ns\",\"host\":\"10.0.0.1\","
    "\"port\":8080,\"weight\":100,"
    "\"healthCheck\":{\"type\":\"HEARTBEAT\",\"heartbeat\":{\"ttl\":5}},"
    "\"healthy\":true,\"isolate\":false,\"location\":{\"region\":\"r\",\"zone\":\"z\"},"
    "\"metadata\":{\"env\":\"prod\",\"k\":\"v\"},\"logic_set\":\"set1\","
    "\"service_token\":\"tok\",\"enableHealthCheck\":true,\"vpc_id\":\"vpc\"}";

Test(pbjson, instance_to_json_uses_spec_json_names)
{
    ProtobufCMessage *m = make_instance();
    expect_json(m, 0, INSTANCE_JSON);
    expect_json(m, PBJSON_ORIGINAL_NAMES,
                "{\"id\":\"ab\",\"service\":\"svc\",\"namespace\":\"ns\",\"host\":\"10.0.0.1\","
                "\"port\":8080,\"weight\":100,"
                "\"health_check\":{\"type\":\"HEARTBEAT\",\"heartbeat\":{\"ttl\":5}},"
                "\"healthy\":true,\"isolate\":false,\"location\":{\"region\":\"r\",\"zone\":\"z\"},"
                "\"metadata\":{\"env\":\"prod\",\"k\":\"v\"},\"logic_set\":\"set1\","
                "\"service_token\":\"tok\",\"enable_health_check\":true,\"vpc_id\":\"vpc\"}");
    protobuf_c_message_free_unpacked(m, NULL);
}

Test(pbjson, instance_round_trip_message_json_message)
{
    ProtobufCMessage *m = make_instance(), *back;
    char *j = enc(m, 0);
    back = dec(&v1__instance__descriptor, j, 0);
    assert_same_message(m, back, "Instance");
    free(j);
    protobuf_c_message_free_unpacked(back, NULL);

    j = enc(m, PBJSON_ORIGINAL_NAMES | PBJSON_INDENT);
    cr_assert(strchr(j, '\n') != NULL, "PBJSON_INDENT output is indented");
    back = dec(&v1__instance__descriptor, j, 0);
    assert_same_message(m, back, "Instance from snake_case, indented");
    free(j);
    protobuf_c_message_free_unpacked(back, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
}

Test(pbjson, snake_case_and_camel_case_input_agree)
{
    static const char snake[] =
        "{\"id\":\"ab\",\"service\":\"svc\",\"namespace\":\"ns\",\"host\":\"10.0.0.1\","
        "\"port\":8080,\"weight\":100,"
        "\"health_check\":{\"type\":\"HEARTBEAT\",\"heartbeat\":{\"ttl\":5}},"
        "\"healthy\":true,\"isolate\":false,\"location\":{\"region\":\"r\",\"zone\":\"z\"},"
        "\"metadata\":{\"env\":\"prod\",\"k\":\"v\"},\"logic_set\":\"set1\","
        "\"service_token\":\"tok\",\"enable_health_check\":true,\"vpc_id\":\"vpc\"}";
    static const char camel[] =
        "{\"id\":\"ab\",\"service\":\"svc\",\"namespace\":\"ns\",\"host\":\"10.0.0.1\","
        "\"port\":8080,\"weight\":100,"
        "\"healthCheck\":{\"type\":\"HEARTBEAT\",\"heartbeat\":{\"ttl\":5}},"
        "\"healthy\":true,\"isolate\":false,\"location\":{\"region\":\"r\",\"zone\":\"z\"},"
        "\"metadata\":{\"env\":\"prod\",\"k\":\"v\"},\"logicSet\":\"set1\","
        "\"serviceToken\":\"tok\",\"enableHealthCheck\":true,\"vpcId\":\"vpc\"}";
    ProtobufCMessage *want = make_instance();
    ProtobufCMessage *a = dec(&v1__instance__descriptor, snake, 0);
    ProtobufCMessage *b = dec(&v1__instance__descriptor, camel, 0);
    ProtobufCMessage *c = dec(&v1__instance__descriptor, INSTANCE_JSON, 0);
    assert_same_message(want, a, "snake_case input");
    assert_same_message(want, b, "camelCase input");
    assert_same_message(want, c, "json_name input");
    protobuf_c_message_free_unpacked(want, NULL);
    protobuf_c_message_free_unpacked(a, NULL);
    protobuf_c_message_free_unpacked(b, NULL);
    protobuf_c_message_free_unpacked(c, NULL);
}

Test(pbjson, json_names_from_the_spec)
{
    /* json_name options that differ from lowerCamelCase, and names that are
     * not lower-case at all */
    expect_canonical(&v1__heartbeat_record__descriptor,
                     "{\"instanceId\":\"i\",\"lastHeartbeatSec\":1700000000,\"exist\":true}",
                     "{\"instance_id\":\"i\",\"last_heartbeat_sec\":\"1700000000\",\"exist\":true}");
    expect_canonical(&v1__discover_request__descriptor,
                     "{\"type\":1,\"service\":{\"name\":\"s\",\"namespace\":\"n\"},"
                     "\"Filter\":{\"OnlyHealthyInstance\":true}}",
                     "{\"type\":\"INSTANCE\",\"service\":{\"name\":\"s\",\"namespace\":\"n\"},"
                     "\"Filter\":{\"OnlyHealthyInstance\":true}}");
    expect_decode_error(&v1__discover_request__descriptor, "{\"filter\":{}}", 0,
                        "unknown field \"filter\"");
    expect_canonical(&v1__service__descriptor,
                     "{\"cmdbMod1\":\"m\",\"totalInstanceCount\":3,\"platformId\":\"p\"}",
                     "{\"cmdb_mod1\":\"m\",\"platform_id\":\"p\",\"total_instance_count\":3}");
    expect_canonical(&v1__fault_detect_rule__descriptor,
                     "{\"extendInfo\":{\"a\":\"b\"},\"target_service\":{\"service\":\"s\"}}",
                     "{\"targetService\":{\"service\":\"s\"},\"extend_info\":{\"a\":\"b\"}}");
    expect_canonical(&v1__config_discover_response__descriptor,
                     "{\"code\":200000,\"type\":\"CONFIG_FILE\",\"configFile\":{\"fileName\":\"f\","
                     "\"version\":\"7\",\"releaseTime\":\"t\"}}",
                     "{\"code\":200000,\"type\":\"CONFIG_FILE\",\"config_file\":{\"fileName\":\"f\","
                     "\"version\":\"7\",\"release_time\":\"t\"}}");
}

Test(pbjson, discover_response_with_repeated_instances)
{
    static const char in[] =
        "{\"code\":200000,\"info\":\"execute success\",\"type\":\"INSTANCE\","
        "\"service\":{\"name\":\"svc\",\"namespace\":\"ns\",\"revision\":\"r9\"},"
        "\"instances\":[{\"id\":\"a\",\"host\":\"10.0.0.1\",\"port\":80,\"healthy\":true},"
        "{\"id\":\"b\",\"host\":\"10.0.0.2\",\"port\":81,\"metadata\":{\"x\":\"y\"}},"
        "{\"id\":\"c\",\"isolate\":true}]}";
    ProtobufCMessage *m = dec(&v1__discover_response__descriptor, in, 0);
    V1__DiscoverResponse *r = (V1__DiscoverResponse *)m;
    cr_assert_eq(r->code->value, 200000);
    cr_assert_eq(r->type, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE);
    cr_assert_eq(r->n_instances, 3);
    cr_assert_str_eq(r->instances[1]->host->value, "10.0.0.2");
    cr_assert_eq(r->instances[1]->port->value, 81);
    cr_assert_str_eq(r->instances[1]->metadata[0]->value, "y");
    cr_assert_eq(r->instances[2]->isolate->value, 1);
    expect_json(m, 0, in);
    protobuf_c_message_free_unpacked(m, NULL);
    expect_canonical(&v1__discover_response__descriptor, in, in);
}

Test(pbjson, any_holding_an_instance)
{
    ProtobufCMessage *ins = make_instance(), *back;
    V1__Response r = V1__RESPONSE__INIT;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    Google__Protobuf__UInt32Value code = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    size_t n;
    char *j, *want;
    V1__Response *br;

    any.type_url = "type.googleapis.com/v1.Instance";
    any.value.data = pack(ins, &n);
    any.value.len = n;
    code.value = 200000;
    r.code = &code;
    r.data = &any;
    j = enc(&r.base, 0);
    cr_assert(asprintf(&want, "{\"code\":200000,\"data\":{\"@type\":\"type.googleapis.com/"
                              "v1.Instance\",%s}", INSTANCE_JSON + 1) > 0);
    cr_assert_str_eq(j, want);
    back = dec(&v1__response__descriptor, j, 0);
    assert_same_message(&r.base, back, "Response with Any");
    br = (V1__Response *)back;
    cr_assert_str_eq(br->data->type_url, "type.googleapis.com/v1.Instance");
    free(j);
    free(want);
    free(any.value.data);
    protobuf_c_message_free_unpacked(back, NULL);
    protobuf_c_message_free_unpacked(ins, NULL);

    cr_assert_eq(pbjson_find_type("v1.Instance"), &v1__instance__descriptor);
    cr_assert_eq(pbjson_find_type("type.googleapis.com/v1.Instance"), &v1__instance__descriptor);
    cr_assert_eq(pbjson_find_type("google.protobuf.Any"), &google__protobuf__any__descriptor);
    cr_assert_null(pbjson_find_type("v1.NoSuchThing"));
    cr_assert_null(pbjson_find_type(NULL));
}

Test(pbjson, any_holding_wrappers_and_any)
{
    /* special-form types go under "value" */
    expect_canonical(&v1__response__descriptor,
                     "{\"data\":{\"value\":\"x\",\"@type\":\"type.googleapis.com/"
                     "google.protobuf.StringValue\"}}",
                     "{\"data\":{\"@type\":\"type.googleapis.com/google.protobuf.StringValue\","
                     "\"value\":\"x\"}}");
    expect_canonical(&v1__response__descriptor,
                     "{\"data\":{\"@type\":\"type.googleapis.com/google.protobuf.Any\","
                     "\"value\":{\"@type\":\"type.googleapis.com/v1.Location\",\"zone\":\"z\"}}}",
                     "{\"data\":{\"@type\":\"type.googleapis.com/google.protobuf.Any\","
                     "\"value\":{\"@type\":\"type.googleapis.com/v1.Location\",\"zone\":\"z\"}}}");
    expect_canonical(&v1__batch_query_response__descriptor,
                     "{\"data\":[{\"@type\":\"x/v1.Namespace\",\"name\":\"a\"},{}]}",
                     "{\"data\":[{\"@type\":\"x/v1.Namespace\",\"name\":\"a\"},{}]}");
}

Test(pbjson, batch_write_response)
{
    V1__BatchWriteResponse bw = V1__BATCH_WRITE_RESPONSE__INIT;
    V1__Response r1 = V1__RESPONSE__INIT, r2 = V1__RESPONSE__INIT;
    V1__Response *rs[] = { &r1, &r2 };
    V1__Instance ins = V1__INSTANCE__INIT;
    ProtobufCMessage *back;
    char *j;
    static const char want[] =
        "{\"code\":200000,\"info\":\"execute success\",\"size\":2,\"responses\":["
        "{\"code\":200000,\"instance\":{\"id\":\"i1\"}},"
        "{\"code\":400201,\"info\":\"existed resource\"}]}";

    bw.code = u32(0, 200000);
    bw.info = sv(0, "execute success");
    bw.size = u32(1, 2);
    r1.code = u32(2, 200000);
    ins.id = sv(1, "i1");
    r1.instance = &ins;
    r2.code = u32(3, 400201);
    r2.info = sv(2, "existed resource");
    bw.n_responses = 2;
    bw.responses = rs;
    j = enc(&bw.base, 0);
    cr_assert_str_eq(j, want);
    back = dec(&v1__batch_write_response__descriptor, j, 0);
    assert_same_message(&bw.base, back, "BatchWriteResponse");
    free(j);
    protobuf_c_message_free_unpacked(back, NULL);
}

Test(pbjson, emit_defaults_writes_every_field)
{
    V1__HeartbeatRecord rec = V1__HEARTBEAT_RECORD__INIT;
    V1__BatchWriteResponse bw = V1__BATCH_WRITE_RESPONSE__INIT;
    V1__Location loc = V1__LOCATION__INIT;
    AllTypes at;

    expect_json(&rec.base, 0, "{}");
    expect_json(&rec.base, PBJSON_EMIT_DEFAULTS,
                "{\"instance_id\":\"\",\"last_heartbeat_sec\":\"0\",\"exist\":false}");
    expect_json(&bw.base, PBJSON_EMIT_DEFAULTS,
                "{\"code\":null,\"info\":null,\"size\":null,\"responses\":[]}");
    loc.zone = sv(0, "");
    expect_json(&loc.base, PBJSON_EMIT_DEFAULTS, "{\"region\":null,\"zone\":\"\",\"campus\":null}");
    expect_json(&loc.base, 0, "{\"zone\":\"\"}");

    all_types_init(&at.base);
    expect_json(&at.base, PBJSON_EMIT_DEFAULTS,
                "{\"i32\":0,\"s32\":0,\"sf32\":0,\"u32\":0,\"f32\":0,\"i64\":\"0\",\"s64\":\"0\","
                "\"sf64\":\"0\",\"u64\":\"0\",\"f64\":\"0\",\"flt\":0.0,\"dbl\":0.0,\"b\":false,"
                "\"str\":\"\",\"byt\":\"\",\"en\":\"RED\",\"rI32\":[],\"rStr\":[],"
                "\"snakeCaseName\":\"\",\"child\":null,\"rEn\":[],\"rI64\":[],\"intMap\":{}}");
}

/* ------------------------------------------------------ scalar edge cases */

Test(pbjson, fixture_descriptor_is_consistent)
{
    for (unsigned i = 1; i < all_types_descriptor.n_fields; i++) {
        const char *a = all_types_fields[all_types_by_name[i - 1]].name;
        const char *b = all_types_fields[all_types_by_name[i]].name;
        cr_assert_lt(strcmp(a, b), 0, "fields_sorted_by_name: %s before %s", a, b);
    }
    for (unsigned i = 0; i < all_types_descriptor.n_fields; i++)
        cr_assert_eq(all_types_fields[i].id, i + 1);
    cr_assert_null(pbjson_find_type("test.AllTypes"), "the fixture is not in the type table");
}

Test(pbjson, integer_limits_and_64_bit_strings)
{
    expect_canonical(&all_types_descriptor,
                     "{\"i32\":-2147483648,\"s32\":2147483647,\"sf32\":-1,\"u32\":4294967295,"
                     "\"f32\":\"4294967295\",\"i64\":\"-9223372036854775808\","
                     "\"s64\":9223372036854775807,\"sf64\":-5,\"u64\":\"18446744073709551615\","
                     "\"f64\":\"1\"}",
                     "{\"i32\":-2147483648,\"s32\":2147483647,\"sf32\":-1,\"u32\":4294967295,"
                     "\"f32\":4294967295,\"i64\":\"-9223372036854775808\","
                     "\"s64\":\"9223372036854775807\",\"sf64\":\"-5\","
                     "\"u64\":\"18446744073709551615\",\"f64\":\"1\"}");
    /* integral reals, exponents and quoted numbers are accepted */
    expect_canonical(&all_types_descriptor,
                     "{\"i32\":1.0,\"u32\":\"1e2\",\"i64\":-3e2,\"u64\":\"0\",\"sf32\":\"-0\"}",
                     "{\"i32\":1,\"u32\":100,\"i64\":\"-300\"}");
    expect_canonical(&all_types_descriptor, "{\"r_i64\":[\"1\",2,\"-3\"],\"r_i32\":[5,-6]}",
                     "{\"rI32\":[5,-6],\"rI64\":[\"1\",\"2\",\"-3\"]}");
}

Test(pbjson, floats_doubles_nan_and_infinity)
{
    ProtobufCMessage *m;
    AllTypes *a;
    expect_canonical(&all_types_descriptor, "{\"dbl\":\"NaN\",\"flt\":\"-Infinity\"}",
                     "{\"flt\":\"-Infinity\",\"dbl\":\"NaN\"}");
    expect_canonical(&all_types_descriptor, "{\"dbl\":\"Infinity\",\"flt\":0.5}",
                     "{\"flt\":0.5,\"dbl\":\"Infinity\"}");
    expect_canonical(&all_types_descriptor, "{\"dbl\":\"-2.5e3\",\"flt\":3}",
                     "{\"flt\":3.0,\"dbl\":-2500.0}");
    m = dec(&all_types_descriptor, "{\"dbl\":1e308,\"flt\":\"3.4e38\"}", 0);
    a = (AllTypes *)m;
    cr_assert_eq(a->dbl, 1e308);
    cr_assert(a->flt > 3.39e38f && isfinite(a->flt));
    protobuf_c_message_free_unpacked(m, NULL);
}

Test(pbjson, bools_strings_bytes_enums)
{
    ProtobufCMessage *m;
    AllTypes *a;
    expect_canonical(&all_types_descriptor, "{\"b\":\"true\",\"str\":\"h\\u00e9llo \\u2603\"}",
                     "{\"b\":true,\"str\":\"h\xc3\xa9llo \xe2\x98\x83\"}");
    m = dec(&all_types_descriptor, "{\"byt\":\"AQID/w==\"}", 0);
    a = (AllTypes *)m;
    cr_assert_eq(a->byt.len, 4);
    cr_assert(memcmp(a->byt.data, "\x01\x02\x03\xff", 4) == 0);
    expect_json(m, 0, "{\"byt\":\"AQID/w==\"}");
    protobuf_c_message_free_unpacked(m, NULL);
    /* URL-safe alphabet and missing padding are accepted */
    expect_canonical(&all_types_descriptor, "{\"byt\":\"AQID_w\"}", "{\"byt\":\"AQID/w==\"}");
    expect_canonical(&all_types_descriptor, "{\"byt\":\"YQ\"}", "{\"byt\":\"YQ==\"}");
    /* enums by name and by number; numbers without a name stay numbers */
    expect_canonical(&all_types_descriptor, "{\"en\":2,\"r_en\":[\"GREEN\",0,7]}",
                     "{\"en\":\"BLUE\",\"rEn\":[\"GREEN\",\"RED\",7]}");
    expect_canonical(&v1__health_check__descriptor, "{\"type\":1}", "{\"type\":\"HEARTBEAT\"}");
}

Test(pbjson, oneofs_maps_and_camel_fallback)
{
    ProtobufCMessage *m;
    AllTypes *a;
    expect_canonical(&all_types_descriptor, "{\"o_int\":0}", "{\"oInt\":0}");
    expect_canonical(&all_types_descriptor, "{\"oStr\":\"\"}", "{\"oStr\":\"\"}");
    m = dec(&all_types_descriptor, "{\"oStr\":\"x\",\"snakeCaseName\":\"s\"}", 0);
    a = (AllTypes *)m;
    cr_assert_eq(a->choice_case, ALL_TYPES_CHOICE_O_STR);
    cr_assert_str_eq(a->o_str, "x");
    cr_assert_str_eq(a->snake_case_name, "s");
    expect_json(m, PBJSON_ORIGINAL_NAMES, "{\"o_str\":\"x\",\"snake_case_name\":\"s\"}");
    protobuf_c_message_free_unpacked(m, NULL);
    expect_canonical(&all_types_descriptor, "{\"int_map\":{\"-1\":\"a\",\"7\":\"\"}}",
                     "{\"intMap\":{\"-1\":\"a\",\"7\":\"\"}}");
    expect_canonical(&all_types_descriptor,
                     "{\"child\":{\"child\":{\"i32\":3}},\"r_str\":[\"a\",\"\",\"c\"]}",
                     "{\"rStr\":[\"a\",\"\",\"c\"],\"child\":{\"child\":{\"i32\":3}}}");
    /* null leaves a field unset */
    expect_canonical(&v1__instance__descriptor,
                     "{\"id\":null,\"port\":null,\"metadata\":null,\"location\":null,\"host\":\"h\"}",
                     "{\"host\":\"h\"}");
}

/* ---------------------------------------------------------------- errors */

Test(pbjson, type_and_range_errors_are_precise)
{
    expect_decode_error(&v1__response__descriptor, "{\"instance\":{\"port\":\"abc\"}}", 0,
                        "instance.port: expected an unsigned 32-bit integer, got \"abc\"");
    expect_decode_error(&v1__instance__descriptor, "{\"weight\":4294967296}", 0,
                        "weight: value 4294967296 out of range for uint32");
    expect_decode_error(&v1__instance__descriptor, "{\"port\":-1}", 0,
                        "port: value -1 out of range for uint32");
    expect_decode_error(&v1__instance__descriptor, "{\"port\":80.5}", 0,
                        "port: expected an unsigned 32-bit integer, got 80.5");
    expect_decode_error(&v1__instance__descriptor, "{\"healthCheck\":{\"type\":\"PING\"}}", 0,
                        "healthCheck.type: unknown value \"PING\" for enum "
                        "v1.HealthCheck.HealthCheckType");
    expect_decode_error(&v1__discover_response__descriptor, "{\"instances\":{}}", 0,
                        "instances: expected an array, got {}");
    expect_decode_error(&v1__discover_response__descriptor,
                        "{\"instances\":[{\"id\":\"a\"},{\"port\":true}]}", 0,
                        "instances[1].port: expected an unsigned 32-bit integer, got true");
    expect_decode_error(&v1__discover_response__descriptor, "{\"instances\":[null]}", 0,
                        "instances[0]: null is not allowed in a repeated field");
    expect_decode_error(&v1__instance__descriptor, "{\"metadata\":{\"k\":1}}", 0,
                        "metadata[\"k\"]: expected a string, got 1");
    expect_decode_error(&v1__instance__descriptor, "{\"metadata\":{\"k\":null}}", 0,
                        "metadata[\"k\"]: null is not allowed as a map value");
    expect_decode_error(&v1__instance__descriptor, "{\"metadata\":[]}", 0,
                        "metadata: expected an object, got []");
    expect_decode_error(&v1__heartbeat_record__descriptor, "{\"last_heartbeat_sec\":\"12x\"}", 0,
                        "last_heartbeat_sec: expected a signed 64-bit integer, got \"12x\"");
    expect_decode_error(&all_types_descriptor, "{\"u64\":\"18446744073709551616\"}", 0,
                        "u64: value 18446744073709551616 out of range for uint64");
    expect_decode_error(&all_types_descriptor, "{\"i32\":\"-2147483649\"}", 0,
                        "i32: value -2147483649 out of range for int32");
    expect_decode_error(&all_types_descriptor, "{\"sf32\":2147483648}", 0,
                        "sf32: value 2147483648 out of range for sfixed32");
    expect_decode_error(&all_types_descriptor, "{\"u32\":-0.5}", 0,
                        "u32: expected an unsigned 32-bit integer, got -0.5");
    expect_decode_error(&all_types_descriptor, "{\"i64\":1e19}", 0,
                        "i64: value 1e19 out of range for int64");
    expect_decode_error(&all_types_descriptor, "{\"f32\":\" 1\"}", 0,
                        "f32: expected an unsigned 32-bit integer, got \" 1\"");
    expect_decode_error(&all_types_descriptor, "{\"flt\":\"1e39\"}", 0,
                        "flt: value 1e39 out of range for float");
    expect_decode_error(&all_types_descriptor, "{\"dbl\":\"1e999\"}", 0,
                        "dbl: value 1e999 out of range for double");
    expect_decode_error(&all_types_descriptor, "{\"dbl\":\"nan\"}", 0,
                        "dbl: expected a number, got \"nan\"");
    expect_decode_error(&all_types_descriptor, "{\"b\":1}", 0, "b: expected a boolean, got 1");
    expect_decode_error(&all_types_descriptor, "{\"str\":5}", 0, "str: expected a string, got 5");
    expect_decode_error(&all_types_descriptor, "{\"str\":\"a\\u0000b\"}", 0,
                        "invalid JSON at line 1, column 17: \\u0000 is not allowed in a string");
    expect_decode_error(&all_types_descriptor, "{\"byt\":\"***\"}", 0, "byt: invalid base64 data");
    expect_decode_error(&all_types_descriptor, "{\"byt\":\"A\"}", 0, "byt: invalid base64 data");
    expect_decode_error(&all_types_descriptor, "{\"byt\":7}", 0,
                        "byt: expected a base64 string, got 7");
    expect_decode_error(&all_types_descriptor, "{\"en\":1.5}", 0,
                        "en: expected an enum name or number, got 1.5");
    expect_decode_error(&all_types_descriptor, "{\"en\":4294967296}", 0,
                        "en: value 4294967296 out of range for enum test.Color");
    expect_decode_error(&all_types_descriptor, "{\"int_map\":{\"x\":\"v\"}}", 0,
                        "int_map[\"x\"]: expected a signed 32-bit integer, got \"x\"");
    expect_decode_error(&all_types_descriptor, "{\"r_str\":[\"a\",3]}", 0,
                        "r_str[1]: expected a string, got 3");
    expect_decode_error(&all_types_descriptor, "{\"child\":{\"child\":{\"r_en\":[\"PINK\"]}}}", 0,
                        "child.child.r_en[0]: unknown value \"PINK\" for enum test.Color");
}

Test(pbjson, structural_errors_are_precise)
{
    expect_decode_error(&v1__response__descriptor,
                        "{\"data\":{\"@type\":\"type.googleapis.com/v1.Nope\"}}", 0,
                        "data: unknown type \"type.googleapis.com/v1.Nope\" in \"@type\"");
    expect_decode_error(&v1__response__descriptor, "{\"data\":{\"id\":\"x\"}}", 0,
                        "data: missing \"@type\" in google.protobuf.Any");
    expect_decode_error(&v1__response__descriptor, "{\"data\":{\"@type\":\"v1.Instance\"}}", 0,
                        "data: invalid type URL \"v1.Instance\" in \"@type\"");
    expect_decode_error(&v1__response__descriptor, "{\"data\":{\"@type\":5}}", 0,
                        "data: expected a type URL string in \"@type\", got 5");
    expect_decode_error(&v1__response__descriptor,
                        "{\"data\":{\"@type\":\"t/v1.Instance\",\"port\":\"p\"}}", 0,
                        "data.port: expected an unsigned 32-bit integer, got \"p\"");
    expect_decode_error(&v1__instance__descriptor,
                        "{\"enable_health_check\":true,\"enableHealthCheck\":false}", 0,
                        "\"enable_health_check\" and \"enableHealthCheck\" name the same field");
    expect_decode_error(&all_types_descriptor, "{\"oInt\":1,\"oStr\":\"x\"}", 0,
                        "oStr: field is in the same oneof as \"o_int\", which is already set");
    expect_decode_error(&v1__instance__descriptor, "\"x\"", 0, "expected an object, got \"x\"");
    expect_decode_error(&v1__instance__descriptor, "null", 0, "expected an object, got null");
    expect_decode_error(&v1__instance__descriptor, "[]", 0, "expected an object, got []");
    expect_decode_error(&v1__instance__descriptor, "{\"location\":\"here\"}", 0,
                        "location: expected an object, got \"here\"");
    expect_decode_error(&v1__instance__descriptor,
                        "{\"port\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
                        0,
                        "port: expected an unsigned 32-bit integer, got "
                        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...");
    expect_decode_error(&google__protobuf__file_descriptor_proto__descriptor,
                        "{\"name\":\"f\",\"options\":{\"uninterpretedOption\":[{\"name\":[{}]}]}}", 0,
                        "options.uninterpretedOption[0].name[0]: missing required field "
                        "\"name_part\"");
}

Test(pbjson, malformed_json_reports_line_and_column)
{
    expect_decode_error(&v1__instance__descriptor, "{\"id\":", 0,
                        "invalid JSON at line 1, column 6: unexpected token near end of file");
    expect_decode_error(&v1__instance__descriptor, "{\"host\": \"a\",\n \"port\": }", 0,
                        "invalid JSON at line 2, column 10: unexpected token near '}'");
    expect_decode_error(&v1__instance__descriptor, "{\"id\":\"a\",\"id\":\"b\"}", 0,
                        "invalid JSON at line 1, column 14: duplicate object key near '\"id\"'");
    expect_decode_error(&v1__instance__descriptor, "", 0,
                        "invalid JSON at line 1, column 0: unexpected token near end of file");
    expect_decode_error(&v1__instance__descriptor, "{} {}", 0,
                        "invalid JSON at line 1, column 4: end of file expected near '{'");
    expect_decode_error(&v1__instance__descriptor, "{\"port\":18446744073709551616}", 0,
                        "invalid JSON at line 1, column 28: too big integer near "
                        "'18446744073709551616'");
}

Test(pbjson, deeply_nested_garbage)
{
    size_t n = 100000;
    char *deep = malloc(2 * n + 32), *p;
    char err[512];
    ProtobufCMessage *m = NULL;
    int rc;

    /* raw nesting: jansson's parser limit */
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = '\0';
    rc = pbjson_decode(&v1__instance__descriptor, deep, 2 * n, 0, NULL, &m, err, sizeof err);
    cr_assert_eq(rc, -EINVAL);
    cr_assert(strstr(err, "maximum parsing depth") != NULL, "got: %s", err);

    /* nesting jansson accepts but the message type does not */
    p = deep;
    p += sprintf(p, "{\"location\":");
    memset(p, '[', 1000);
    memset(p + 1000, ']', 1000);
    strcpy(p + 2000, "}");
    rc = pbjson_decode(&v1__instance__descriptor, deep, strlen(deep), 0, NULL, &m, err, sizeof err);
    cr_assert_eq(rc, -EINVAL);
    cr_assert_str_eq(err, "location: expected an object, got "
                          "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[...");

    /* recursive message type: refused past PBJSON_MAX_DEPTH messages */
    p = deep;
    for (int i = 0; i < 150; i++)
        p += sprintf(p, "{\"child\":");
    p += sprintf(p, "{}");
    for (int i = 0; i < 150; i++)
        *p++ = '}';
    *p = '\0';
    rc = pbjson_decode(&all_types_descriptor, deep, strlen(deep), 0, NULL, &m, err, sizeof err);
    cr_assert_eq(rc, -EINVAL);
    cr_assert_null(m);
    cr_assert(strncmp(err, "child.child.child.", 18) == 0, "got: %s", err);
    cr_assert(strstr(err, ": message nesting exceeds 100 levels") != NULL, "got: %s", err);

    /* the same through Any-in-Any */
    p = deep;
    for (int i = 0; i < 120; i++)
        p += sprintf(p, "{\"@type\":\"t/google.protobuf.Any\",\"value\":");
    p += sprintf(p, "{}");
    for (int i = 0; i < 120; i++)
        *p++ = '}';
    *p = '\0';
    rc = pbjson_decode(&google__protobuf__any__descriptor, deep, strlen(deep), 0, NULL, &m, err,
                       sizeof err);
    cr_assert_eq(rc, -EINVAL);
    cr_assert(strstr(err, "message nesting exceeds 100 levels") != NULL, "got: %s", err);
    free(deep);

    /* 99 levels are fine, both ways */
    {
        char buf[4096];
        ProtobufCMessage *ok;
        char *out;
        p = buf;
        for (int i = 0; i < 99; i++)
            p += sprintf(p, "{\"child\":");
        p += sprintf(p, "{\"i32\":1}");
        for (int i = 0; i < 99; i++)
            *p++ = '}';
        *p = '\0';
        ok = dec(&all_types_descriptor, buf, 0);
        out = enc(ok, 0);
        cr_assert_str_eq(out, buf);
        free(out);
        protobuf_c_message_free_unpacked(ok, NULL);
    }
}

Test(pbjson, unknown_fields_refused_or_ignored)
{
    ProtobufCMessage *m;
    V1__Instance *ins;
    static const char in[] =
        "{\"host\":\"h\",\"foo\":1,\"location\":{\"zone\":\"z\",\"planet\":\"earth\"},"
        "\"healthCheck\":{\"type\":\"GRPC\"},\"extra\":{\"deep\":[1,2,{\"x\":null}]}}";

    expect_decode_error(&v1__instance__descriptor, "{\"foo\":1}", 0, "unknown field \"foo\"");
    expect_decode_error(&v1__response__descriptor, "{\"instance\":{\"ip\":\"1.2.3.4\"}}", 0,
                        "instance: unknown field \"ip\"");
    expect_decode_error(&v1__response__descriptor, "{\"data\":{\"@type\":\"t/v1.Location\","
                        "\"planet\":\"x\"}}", 0, "data: unknown field \"planet\"");
    expect_decode_error(&v1__instance__descriptor, in, 0, "unknown field \"foo\"");

    m = dec(&v1__instance__descriptor, in, PBJSON_IGNORE_UNKNOWN);
    ins = (V1__Instance *)m;
    cr_assert_str_eq(ins->host->value, "h");
    cr_assert_str_eq(ins->location->zone->value, "z");
    cr_assert_eq(ins->health_check->type, V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__UNKNOWN,
                 "an unknown enum name is skipped under PBJSON_IGNORE_UNKNOWN");
    expect_json(m, 0, "{\"host\":\"h\",\"healthCheck\":{},\"location\":{\"zone\":\"z\"}}");
    protobuf_c_message_free_unpacked(m, NULL);

    m = dec(&all_types_descriptor, "{\"r_en\":[\"RED\",\"PINK\",\"BLUE\"],\"o_str\":null,"
                                   "\"en\":\"PINK\"}", PBJSON_IGNORE_UNKNOWN);
    expect_json(m, 0, "{\"rEn\":[\"RED\",\"BLUE\"]}");
    protobuf_c_message_free_unpacked(m, NULL);
}

Test(pbjson, decode_array_for_batch_bodies)
{
    ProtobufCMessage **arr = NULL;
    size_t n = 99;
    char err[256];
    static const char in[] = "[{\"host\":\"a\",\"port\":1},{\"host\":\"b\",\"port\":\"2\"}]";
    int rc = pbjson_decode_array(&v1__instance__descriptor, in, strlen(in), 0, NULL, &arr, &n,
                                 err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_assert_eq(((V1__Instance *)arr[1])->port->value, 2);
    pbjson_free_array(arr, n, NULL);

    rc = pbjson_decode_array(&v1__instance__descriptor, "[]", 2, 0, NULL, &arr, &n, err, sizeof err);
    cr_assert_eq(rc, 0);
    cr_assert_eq(n, 0);
    pbjson_free_array(arr, n, NULL);

    {
        struct counter cnt = { 0, 0 };
        ProtobufCAllocator a = { count_alloc, count_free, &cnt };
        static const char bad[] = "[{\"port\":1},{\"port\":\"x\"},{}]";
        rc = pbjson_decode_array(&v1__instance__descriptor, bad, strlen(bad), 0, &a, &arr, &n,
                                 err, sizeof err);
        cr_assert_eq(rc, -EINVAL);
        cr_assert_null(arr);
        cr_assert_eq(n, 0);
        cr_assert_str_eq(err, "[1].port: expected an unsigned 32-bit integer, got \"x\"");
        cr_assert_eq(cnt.allocs, cnt.frees);
    }
    rc = pbjson_decode_array(&v1__instance__descriptor, "{}", 2, 0, NULL, &arr, &n, err, sizeof err);
    cr_assert_eq(rc, -EINVAL);
    cr_assert_str_eq(err, "expected an array, got {}");
    rc = pbjson_decode_array(&v1__instance__descriptor, "[{},null]", 9, 0, NULL, &arr, &n, err,
                             sizeof err);
    cr_assert_eq(rc, -EINVAL);
    cr_assert_str_eq(err, "[1]: expected an object, got null");
}

Test(pbjson, jansson_level_api_and_allocator)
{
    struct counter cnt = { 0, 0 };
    ProtobufCAllocator a = { count_alloc, count_free, &cnt };
    ProtobufCMessage *ins = make_instance(), *back = NULL;
    json_t *arr = json_array(), *j;
    char err[256], *text;

    for (int i = 0; i < 3; i++) {
        j = pbjson_to_json(ins, 0, err, sizeof err);
        cr_assert_not_null(j, "%s", err);
        json_array_append_new(arr, j);
    }
    text = json_dumps(arr, JSON_COMPACT);
    cr_assert(strncmp(text, "[{\"id\":\"ab\"", 11) == 0, "got %s", text);
    free(text);
    cr_assert_eq(pbjson_from_json(&v1__instance__descriptor, json_array_get(arr, 2), 0, &a, &back,
                                  err, sizeof err), 0, "%s", err);
    assert_same_message(ins, back, "from_json with a custom allocator");
    cr_assert_gt(cnt.allocs, 10, "every part of the message comes from the allocator");
    protobuf_c_message_free_unpacked(back, &a);
    cr_assert_eq(cnt.allocs, cnt.frees, "%ld allocations, %ld frees", cnt.allocs, cnt.frees);
    json_decref(arr);
    protobuf_c_message_free_unpacked(ins, NULL);
}

Test(pbjson, encode_errors_are_reported)
{
    V1__Response r = V1__RESPONSE__INIT;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    V1__Instance ins = V1__INSTANCE__INIT;
    static uint8_t junk[] = { 0xff, 0xff, 0xff };
    char err[256], *out = (char *)err;
    size_t len = 7;

    r.data = &any;
    any.type_url = "x/v1.Nope";
    cr_assert_eq(pbjson_encode(&r.base, 0, &out, &len, err, sizeof err), -EINVAL);
    cr_assert_null(out);
    cr_assert_eq(len, 0);
    cr_assert_str_eq(err, "data: unknown type \"x/v1.Nope\" in google.protobuf.Any");

    any.type_url = "x/v1.Instance";
    any.value.data = junk;
    any.value.len = sizeof junk;
    cr_assert_eq(pbjson_encode(&r.base, 0, &out, &len, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "data: google.protobuf.Any value is not a valid v1.Instance");

    any.type_url = "";
    cr_assert_eq(pbjson_encode(&r.base, 0, &out, &len, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "data: google.protobuf.Any has a value but no type URL");

    r.data = NULL;
    r.instance = &ins;
    ins.host = sv(0, "\xc3\x28");
    cr_assert_eq(pbjson_encode(&r.base, 0, &out, &len, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "instance.host: string is not valid UTF-8");
    cr_assert_null(pbjson_to_json(&r.base, 0, err, sizeof err));
    cr_assert_str_eq(err, "instance.host: string is not valid UTF-8");
}

/* ------------------------------------------------------------------- fuzz */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* One random edit of buf (len bytes, capacity cap); returns the new len. */
static size_t mutate(char *buf, size_t len, size_t cap)
{
    static const char chars[] = "{}[]\":,0123456789-+.eE \\ntrufalsx@/";
    static const char *const tokens[] = {
        "null", "true", "1e999", "-0", "\"\\u0000\"", "\"\\ud800\"", "{}", "[]", "18446744073709551616",
        "\"NaN\"", "\"AQID\"", "\"@type\":\"t/v1.Instance\",", "{\"@type\":\"t/google.protobuf.Any\"}",
        "\"port\":", "\"metadata\":{\"a\":", "\"instances\":[", "\"Filter\":", "-9223372036854775809",
    };
    size_t pos = len ? rnd((uint32_t)len + 1) : 0;
    switch (rnd(6)) {
    case 0: /* overwrite one byte */
        if (len > 0)
            buf[rnd((uint32_t)len)] = chars[rnd(sizeof chars - 1)];
        break;
    case 1: { /* delete a range */
        size_t n = rnd(8) + 1;
        if (pos + n > len)
            n = len - pos;
        memmove(buf + pos, buf + pos + n, len - pos - n);
        len -= n;
        break;
    }
    case 2: { /* insert a token */
        const char *t = tokens[rnd(sizeof tokens / sizeof tokens[0])];
        size_t n = strlen(t);
        if (len + n < cap) {
            memmove(buf + pos + n, buf + pos, len - pos);
            memcpy(buf + pos, t, n);
            len += n;
        }
        break;
    }
    case 3: { /* duplicate a range */
        size_t n = rnd(16) + 1;
        if (pos + n <= len && len + n < cap) {
            memmove(buf + pos + n, buf + pos, len - pos);
            len += n;
        }
        break;
    }
    case 4: /* truncate */
        len = pos;
        break;
    default: /* insert a random byte, possibly not UTF-8 */
        if (len + 1 < cap) {
            memmove(buf + pos + 1, buf + pos, len - pos);
            buf[pos] = (char)rnd(256);
            len++;
        }
        break;
    }
    buf[len] = '\0';
    return len;
}

Test(pbjson, fuzz_mutated_json_never_crashes_or_leaks)
{
    static const struct {
        const ProtobufCMessageDescriptor *d;
        const char *json;
    } seeds[] = {
        { &v1__instance__descriptor, INSTANCE_JSON },
        { &v1__discover_response__descriptor,
          "{\"code\":200000,\"type\":\"INSTANCE\",\"service\":{\"name\":\"s\",\"revision\":\"r\"},"
          "\"instances\":[{\"id\":\"a\",\"port\":80,\"metadata\":{\"k\":\"v\"}},{\"id\":\"b\"}]}" },
        { &v1__response__descriptor,
          "{\"code\":400201,\"data\":{\"@type\":\"type.googleapis.com/v1.Instance\",\"host\":\"h\","
          "\"port\":\"9\"},\"instance\":{\"vpc_id\":\"v\",\"healthCheck\":{\"type\":1}}}" },
        { &v1__batch_write_response__descriptor,
          "{\"code\":200000,\"size\":1,\"responses\":[{\"code\":200000,\"info\":\"ok\"}]}" },
        { &v1__discover_request__descriptor,
          "{\"type\":\"ROUTING\",\"service\":{\"name\":\"s\",\"metadata\":{\"a\":\"b\"}},"
          "\"Filter\":{\"OnlyHealthyInstance\":true}}" },
        { &v1__config_discover_response__descriptor,
          "{\"code\":200000,\"config_file\":{\"version\":\"18446744073709551615\",\"tags\":"
          "[{\"key\":\"k\",\"value\":\"v\"}],\"encrypted\":false},\"config_file_groups\":[{}]}" },
        { &all_types_descriptor,
          "{\"i32\":-1,\"u64\":\"5\",\"flt\":\"NaN\",\"dbl\":1.5,\"byt\":\"AQID\",\"en\":\"BLUE\","
          "\"r_i32\":[1,2],\"r_str\":[\"x\"],\"oInt\":3,\"child\":{\"child\":{\"b\":true}},"
          "\"int_map\":{\"1\":\"a\"},\"r_i64\":[\"-7\"],\"r_en\":[2]}" },
    };
    enum { CAP = 4096, ROUNDS = 4000 };
    char *buf = malloc(CAP);
    int decoded = 0;

    for (int round = 0; round < ROUNDS; round++) {
        unsigned s = rnd(sizeof seeds / sizeof seeds[0]);
        size_t len = strlen(seeds[s].json);
        int edits = (int)rnd(3) + 1, flags = rnd(2) ? PBJSON_IGNORE_UNKNOWN : 0;
        struct counter cnt = { 0, 0 };
        ProtobufCAllocator a = { count_alloc, count_free, &cnt };
        ProtobufCMessage *m = NULL;
        char err[512];
        int rc;

        memcpy(buf, seeds[s].json, len + 1);
        for (int e = 0; e < edits; e++)
            len = mutate(buf, len, CAP);
        rc = pbjson_decode(seeds[s].d, buf, len, flags, &a, &m, err, sizeof err);
        if (rc == 0) {
            char *j1 = NULL, *j2 = NULL;
            ProtobufCMessage *m2 = NULL;
            decoded++;
            cr_assert_eq(pbjson_encode(m, flags & PBJSON_EMIT_DEFAULTS, &j1, NULL, err, sizeof err),
                         0, "re-encoding %s: %s", buf, err);
            cr_assert_eq(pbjson_decode(seeds[s].d, j1, strlen(j1), 0, &a, &m2, err, sizeof err), 0,
                         "decoding our own output %s: %s", j1, err);
            cr_assert_eq(pbjson_encode(m2, 0, &j2, NULL, err, sizeof err), 0);
            cr_assert_str_eq(j1, j2, "unstable round trip of %s", buf);
            free(j1);
            free(j2);
            protobuf_c_message_free_unpacked(m2, &a);
            protobuf_c_message_free_unpacked(m, &a);
        } else {
            cr_assert(rc == -EINVAL, "rc %d for %s", rc, buf);
            cr_assert_null(m);
            cr_assert_gt(strlen(err), 0, "an error message for %s", buf);
        }
        cr_assert_eq(cnt.allocs, cnt.frees, "leak on %s: %ld allocations, %ld frees", buf,
                     cnt.allocs, cnt.frees);
    }
    cr_assert_gt(decoded, ROUNDS / 20, "the mutations leave some documents valid (%d)", decoded);
    free(buf);
}

Test(pbjson, fuzz_random_wire_bytes_encode_safely)
{
    /* messages unpacked from arbitrary bytes may hold invalid UTF-8 or
     * unknown Any types: encoding must fail cleanly, never crash */
    uint8_t buf[256];
    int encoded = 0;
    ProtobufCMessage *seed = make_instance();
    size_t slen;
    uint8_t *sbytes = pack(seed, &slen);

    for (int round = 0; round < 3000; round++) {
        size_t len;
        ProtobufCMessage *m;
        char err[256], *out = NULL;
        const ProtobufCMessageDescriptor *d = (round & 1) ? &v1__instance__descriptor
                                                          : &v1__response__descriptor;
        if (round % 3 == 0) {
            len = rnd(sizeof buf);
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)rnd(256);
        } else {
            len = slen < sizeof buf ? slen : sizeof buf;
            memcpy(buf, sbytes, len);
            for (int e = (int)rnd(4); e >= 0; e--)
                buf[rnd((uint32_t)len)] = (uint8_t)rnd(256);
        }
        m = protobuf_c_message_unpack(d, NULL, len, buf);
        if (m == NULL)
            continue;
        if (pbjson_encode(m, (int)rnd(16), &out, NULL, err, sizeof err) == 0) {
            ProtobufCMessage *back = NULL;
            encoded++;
            cr_assert_eq(pbjson_decode(d, out, strlen(out), 0, NULL, &back, err, sizeof err), 0,
                         "decoding %s: %s", out, err);
            protobuf_c_message_free_unpacked(back, NULL);
            free(out);
        } else {
            cr_assert_null(out);
            cr_assert_gt(strlen(err), 0);
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    cr_assert_gt(encoded, 50, "some mutated messages encode (%d)", encoded);
    free(sbytes);
    protobuf_c_message_free_unpacked(seed, NULL);
}

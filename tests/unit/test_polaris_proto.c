/*
 * test_polaris_proto.c: our Polaris v1 protos (proto/polaris_*.proto) are
 * wire-compatible with the public polarismesh/specification.
 *
 * Messages are packed and compared with bytes computed by hand from the
 * spec's field numbers and types (tag = number << 3 | wire type, varints
 * little-endian base 128), then unpacked again. The gRPC service
 * descriptors protoc-c generates must carry the package, service and
 * method names the SDKs call ("/v1.PolarisGRPC/RegisterInstance" ...), the
 * enums the spec's values, and unknown fields (e.g. Service field 26, which
 * we leave out) must survive a decode/encode cycle.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "polaris_code.pb-c.h"
#include "polaris_config_file.pb-c.h"
#include "polaris_config_file_response.pb-c.h"
#include "polaris_grpc_config_api.pb-c.h"
#include "polaris_grpcapi.pb-c.h"
#include "polaris_heartbeat.pb-c.h"
#include "polaris_request.pb-c.h"
#include "polaris_response.pb-c.h"
#include "polaris_service.pb-c.h"

/* Packs m and asserts the bytes equal want[0..n). */
static void expect_bytes(const ProtobufCMessage *m, const uint8_t *want, size_t n,
                         const char *what)
{
    size_t sz = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(sz ? sz : 1);
    char got_hex[1024] = "", want_hex[1024] = "";
    cr_assert_not_null(buf);
    cr_assert_eq(protobuf_c_message_pack(m, buf), sz, "%s: pack size mismatch", what);
    for (size_t i = 0; i < sz && i < 300; i++)
        snprintf(got_hex + strlen(got_hex), sizeof got_hex - strlen(got_hex), "%02x ", buf[i]);
    for (size_t i = 0; i < n && i < 300; i++)
        snprintf(want_hex + strlen(want_hex), sizeof want_hex - strlen(want_hex), "%02x ", want[i]);
    cr_assert(sz == n && memcmp(buf, want, n) == 0, "%s:\n got  %s\n want %s", what, got_hex,
              want_hex);
    free(buf);
}

static Google__Protobuf__StringValue *sv(const char *s)
{
    Google__Protobuf__StringValue *w = malloc(sizeof *w);
    google__protobuf__string_value__init(w);
    w->value = (char *)s;
    return w;
}

static Google__Protobuf__UInt32Value *u32(uint32_t v)
{
    Google__Protobuf__UInt32Value *w = malloc(sizeof *w);
    google__protobuf__uint32_value__init(w);
    w->value = v;
    return w;
}

static Google__Protobuf__BoolValue *bv(int v)
{
    Google__Protobuf__BoolValue *w = malloc(sizeof *w);
    google__protobuf__bool_value__init(w);
    w->value = v;
    return w;
}

Test(polaris_proto, instance_port_is_uint32_wrapper_field_5)
{
    V1__Instance ins = V1__INSTANCE__INIT;
    Google__Protobuf__UInt32Value port = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    /* field 5, wire type 2 -> 0x2a; length 3; inner field 1 varint -> 0x08;
     * 8080 = 63 * 128 + 16 -> 0x90 0x3f */
    static const uint8_t want[] = { 0x2a, 0x03, 0x08, 0x90, 0x3f };
    port.value = 8080;
    ins.port = &port;
    expect_bytes(&ins.base, want, sizeof want, "Instance{port=8080}");

    /* a present wrapper holding 0 is still sent: an empty sub-message */
    port.value = 0;
    static const uint8_t want0[] = { 0x2a, 0x00 };
    expect_bytes(&ins.base, want0, sizeof want0, "Instance{port=0}");
}

Test(polaris_proto, instance_registration_fields)
{
    V1__Instance ins = V1__INSTANCE__INIT;
    V1__HealthCheck hc = V1__HEALTH_CHECK__INIT;
    V1__HeartbeatHealthCheck hb = V1__HEARTBEAT_HEALTH_CHECK__INIT;
    V1__Location loc = V1__LOCATION__INIT;
    V1__Instance__MetadataEntry e = V1__INSTANCE__METADATA_ENTRY__INIT;
    V1__Instance__MetadataEntry *ents[] = { &e };
    static const uint8_t want[] = {
        0x0a, 0x04, 0x0a, 0x02, 'a', 'b',                   /* 1 id "ab" */
        0x22, 0x03, 0x0a, 0x01, 'h',                        /* 4 host "h" */
        0x2a, 0x03, 0x08, 0x90, 0x3f,                       /* 5 port 8080 */
        0x4a, 0x02, 0x08, 0x64,                             /* 9 weight 100 */
        0x52, 0x08, 0x08, 0x01,                             /* 10 health_check{type HEARTBEAT */
        0x12, 0x04, 0x0a, 0x02, 0x08, 0x05,                 /*   heartbeat{ttl 5}} */
        0x62, 0x00,                                         /* 12 isolate false (present) */
        0x6a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 'r',            /* 13 location{region "r"} */
        0x72, 0x06, 0x0a, 0x01, 'k', 0x12, 0x01, 'v',       /* 14 metadata {"k":"v"} */
        0xa2, 0x01, 0x02, 0x08, 0x01,                       /* 20 enable_health_check true */
        0xaa, 0x01, 0x03, 0x0a, 0x01, 'x',                  /* 21 vpc_id "x" */
    };
    ProtobufCMessage *back;
    V1__Instance *b;

    ins.id = sv("ab");
    ins.host = sv("h");
    ins.port = u32(8080);
    ins.weight = u32(100);
    hb.ttl = u32(5);
    hc.type = V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT;
    hc.heartbeat = &hb;
    ins.health_check = &hc;
    ins.isolate = bv(0);
    loc.region = sv("r");
    ins.location = &loc;
    e.key = "k";
    e.value = "v";
    ins.n_metadata = 1;
    ins.metadata = ents;
    ins.enable_health_check = bv(1);
    ins.vpc_id = sv("x");
    expect_bytes(&ins.base, want, sizeof want, "Instance registration");

    back = protobuf_c_message_unpack(&v1__instance__descriptor, NULL, sizeof want, want);
    cr_assert_not_null(back, "the hand-built bytes must unpack as v1.Instance");
    b = (V1__Instance *)back;
    cr_assert_str_eq(b->id->value, "ab");
    cr_assert_eq(b->port->value, 8080);
    cr_assert_eq(b->health_check->type, V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT);
    cr_assert_eq(b->health_check->heartbeat->ttl->value, 5);
    cr_assert_not_null(b->isolate, "a present false wrapper stays present");
    cr_assert_eq(b->isolate->value, 0);
    cr_assert_eq(b->n_metadata, 1);
    cr_assert_str_eq(b->metadata[0]->key, "k");
    cr_assert_eq(b->enable_health_check->value, 1);
    cr_assert_str_eq(b->vpc_id->value, "x");
    protobuf_c_message_free_unpacked(back, NULL);

    free(ins.id);
    free(ins.host);
    free(ins.port);
    free(ins.weight);
    free(hb.ttl);
    free(ins.isolate);
    free(loc.region);
    free(ins.enable_health_check);
    free(ins.vpc_id);
}

Test(polaris_proto, discover_request_with_filter_30)
{
    V1__DiscoverRequest req = V1__DISCOVER_REQUEST__INIT;
    V1__Service svc = V1__SERVICE__INIT;
    V1__DiscoverFilter flt = V1__DISCOVER_FILTER__INIT;
    static const uint8_t want[] = {
        0x08, 0x01,                                         /* 1 type INSTANCE */
        0x12, 0x10,                                         /* 2 service, 16 bytes */
        0x0a, 0x03, 0x0a, 0x01, 's',                        /*   1 name "s" */
        0x12, 0x03, 0x0a, 0x01, 'n',                        /*   2 namespace "n" */
        0x7a, 0x04, 0x0a, 0x02, 'r', '1',                   /*   15 revision "r1" */
        0xf2, 0x01, 0x02, 0x08, 0x01,                       /* 30 Filter{OnlyHealthyInstance} */
    };
    req.type = V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE;
    svc.name = sv("s");
    svc.namespace_ = sv("n");
    svc.revision = sv("r1");
    req.service = &svc;
    flt.onlyhealthyinstance = 1;
    req.filter = &flt;
    expect_bytes(&req.base, want, sizeof want, "DiscoverRequest");
    free(svc.name);
    free(svc.namespace_);
    free(svc.revision);
}

Test(polaris_proto, response_code_and_instance)
{
    V1__Response r = V1__RESPONSE__INIT;
    V1__Instance ins = V1__INSTANCE__INIT;
    static const uint8_t want[] = {
        0x0a, 0x04, 0x08, 0xc0, 0x9a, 0x0c,                 /* 1 code 200000 */
        0x12, 0x04, 0x0a, 0x02, 'o', 'k',                   /* 2 info "ok" */
        0x32, 0x05, 0x0a, 0x03, 0x0a, 0x01, 'i',            /* 6 instance{id "i"} */
    };
    r.code = u32(V1__CODE__ExecuteSuccess);
    r.info = sv("ok");
    ins.id = sv("i");
    r.instance = &ins;
    expect_bytes(&r.base, want, sizeof want, "Response");
    free(r.code);
    free(r.info);
    free(ins.id);
}

Test(polaris_proto, discover_response_instances_and_type)
{
    V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
    V1__Instance a = V1__INSTANCE__INIT, b = V1__INSTANCE__INIT;
    V1__Instance *list[] = { &a, &b };
    static const uint8_t want[] = {
        0x0a, 0x04, 0x08, 0xc1, 0x9a, 0x0c,                 /* 1 code 200001 */
        0x18, 0x01,                                         /* 3 type INSTANCE */
        0x2a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 'a',            /* 5 instances[0] */
        0x2a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 'b',            /* 5 instances[1] */
    };
    r.code = u32(V1__CODE__DataNoChange);
    r.type = V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE;
    a.id = sv("a");
    b.id = sv("b");
    r.n_instances = 2;
    r.instances = list;
    expect_bytes(&r.base, want, sizeof want, "DiscoverResponse");
    free(r.code);
    free(a.id);
    free(b.id);
}

Test(polaris_proto, heartbeat_messages_use_plain_scalars)
{
    V1__HeartbeatRecord rec = V1__HEARTBEAT_RECORD__INIT;
    V1__InstanceHeartbeat hb = V1__INSTANCE_HEARTBEAT__INIT;
    /* 1700000000 = 0x6553F100 -> 7-bit groups 0x00 0x62 0x4f 0x2a 0x06 */
    static const uint8_t want_rec[] = {
        0x0a, 0x01, 'a',                                    /* 1 instanceId */
        0x30, 0x80, 0xe2, 0xcf, 0xaa, 0x06,                 /* 6 lastHeartbeatSec (int64) */
        0x38, 0x01,                                         /* 7 exist */
    };
    static const uint8_t want_hb[] = {
        0x0a, 0x01, 'i', 0x12, 0x01, 's', 0x1a, 0x01, 'n', 0x22, 0x01, 'h',
        0x28, 0x90, 0x3f,                                   /* 5 port 8080 (uint32) */
    };
    rec.instanceid = "a";
    rec.lastheartbeatsec = 1700000000;
    rec.exist = 1;
    expect_bytes(&rec.base, want_rec, sizeof want_rec, "HeartbeatRecord");
    hb.instanceid = "i";
    hb.service = "s";
    hb.namespace_ = "n";
    hb.host = "h";
    hb.port = 8080;
    expect_bytes(&hb.base, want_hb, sizeof want_hb, "InstanceHeartbeat");
}

Test(polaris_proto, config_client_messages)
{
    V1__ClientConfigFileInfo info = V1__CLIENT_CONFIG_FILE_INFO__INIT;
    V1__ConfigFileTag tag = V1__CONFIG_FILE_TAG__INIT;
    V1__ConfigFileTag *tags[] = { &tag };
    Google__Protobuf__UInt64Value ver = GOOGLE__PROTOBUF__UINT64_VALUE__INIT;
    V1__ConfigClientResponse resp = V1__CONFIG_CLIENT_RESPONSE__INIT;
    V1__ConfigDiscoverRequest dreq = V1__CONFIG_DISCOVER_REQUEST__INIT;
    V1__ClientConfigFileInfo small = V1__CLIENT_CONFIG_FILE_INFO__INIT;
    static const uint8_t want_info[] = {
        0x0a, 0x03, 0x0a, 0x01, 'n',                        /* 1 namespace */
        0x12, 0x03, 0x0a, 0x01, 'g',                        /* 2 group */
        0x1a, 0x03, 0x0a, 0x01, 'f',                        /* 3 file_name */
        0x2a, 0x02, 0x08, 0x05,                             /* 5 version UInt64Value 5 */
        0x3a, 0x0a, 0x0a, 0x03, 0x0a, 0x01, 'k',            /* 7 tags[{key "k", */
        0x12, 0x03, 0x0a, 0x01, 'v',                        /*   value "v"}] */
    };
    static const uint8_t want_resp_head[] = { 0x0a, 0x04, 0x08, 0xc0, 0x9a, 0x0c, 0x1a, 0x1f };
    uint8_t want_resp[sizeof want_resp_head + sizeof want_info];
    static const uint8_t want_dreq[] = {
        0x08, 0x01,                                         /* 1 type CONFIG_FILE */
        0x12, 0x05, 0x0a, 0x03, 0x0a, 0x01, 'n',            /* 2 config_file{namespace} */
        0x1a, 0x01, 'r',                                    /* 3 revision "r" (string) */
    };

    info.namespace_ = sv("n");
    info.group = sv("g");
    info.file_name = sv("f");
    ver.value = 5;
    info.version = &ver;
    tag.key = sv("k");
    tag.value = sv("v");
    info.n_tags = 1;
    info.tags = tags;
    expect_bytes(&info.base, want_info, sizeof want_info, "ClientConfigFileInfo");

    cr_assert_eq(sizeof want_info, 0x1f, "configFile length byte in want_resp_head");
    memcpy(want_resp, want_resp_head, sizeof want_resp_head);
    memcpy(want_resp + sizeof want_resp_head, want_info, sizeof want_info);
    resp.code = u32(V1__CODE__ExecuteSuccess);
    resp.configfile = &info;
    expect_bytes(&resp.base, want_resp, sizeof want_resp, "ConfigClientResponse");

    dreq.type = V1__CONFIG_DISCOVER_REQUEST__CONFIG_DISCOVER_REQUEST_TYPE__CONFIG_FILE;
    small.namespace_ = info.namespace_;
    dreq.config_file = &small;
    dreq.revision = "r";
    expect_bytes(&dreq.base, want_dreq, sizeof want_dreq, "ConfigDiscoverRequest");

    free(info.namespace_);
    free(info.group);
    free(info.file_name);
    free(tag.key);
    free(tag.value);
    free(resp.code);
}

Test(polaris_proto, response_codes_match_the_spec)
{
    static const struct { const char *name; int value; } codes[] = {
        { "ExecuteSuccess", 200000 }, { "DataNoChange", 200001 }, { "NoNeedUpdate", 200002 },
        { "BadRequest", 400000 }, { "ParseException", 400001 }, { "EmptyRequest", 400002 },
        { "BatchSizeOverLimit", 400003 }, { "InvalidDiscoverResource", 400004 },
        { "InvalidParameter", 400103 }, { "InvalidNamespaceName", 400110 },
        { "InvalidServiceName", 400120 }, { "InvalidServiceToken", 400122 },
        { "InvalidInstanceID", 400130 }, { "InvalidInstanceHost", 400131 },
        { "InvalidInstancePort", 400132 }, { "HealthCheckNotOpen", 400140 },
        { "HeartbeatOnDisabledIns", 400141 }, { "HeartbeatExceedLimit", 400142 },
        { "ExistedResource", 400201 }, { "NotFoundResource", 400202 },
        { "SameInstanceRequest", 400208 }, { "NotFoundService", 400301 },
        { "NotFoundInstance", 400303 }, { "NotFoundNamespace", 400305 },
        { "ClientAPINotOpen", 400401 }, { "InvalidConfigFileGroupName", 400801 },
        { "NotFoundResourceConfigFile", 400807 }, { "Unauthorized", 401000 },
        { "NotAllowedAccess", 401001 }, { "AuthTokenForbidden", 403001 },
        { "APIRateLimit", 403003 }, { "DataConflict", 409000 },
        { "InstanceTooManyRequests", 429001 }, { "ExecuteException", 500000 },
        { "StoreLayerException", 500001 }, { "HeartbeatException", 500007 },
        { "InstanceRegisTimeout", 500008 },
    };
    cr_assert_str_eq(v1__code__descriptor.name, "v1.Code");
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value_by_name(&v1__code__descriptor, codes[i].name);
        cr_assert_not_null(v, "code %s missing from v1.Code", codes[i].name);
        cr_assert_eq(v->value, codes[i].value, "code %s is %d, spec says %d", codes[i].name,
                     v->value, codes[i].value);
    }
    cr_assert_eq(V1__CODE__ExecuteSuccess, 200000);
    cr_assert_eq(V1__CODE__NotFoundResourceConfigFile, 400807);
}

Test(polaris_proto, discover_types_match_the_spec)
{
    cr_assert_eq(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__SERVICES, 6);
    cr_assert_eq(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__NAMESPACES, 12);
    cr_assert_eq(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__FAULT_DETECTOR, 13);
    cr_assert_eq(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__LANE, 100);
    cr_assert_eq(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__CUSTOM_ROUTE_RULE, 101);
    cr_assert_eq(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__NEARBY_ROUTE_RULE, 102);
    cr_assert_eq(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__LOSSLESS, 103);
    cr_assert_eq(V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__CIRCUIT_BREAKER, 5);
    cr_assert_eq(V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__FAULT_DETECTOR, 13);
    cr_assert_eq(V1__CLIENT__CLIENT_TYPE__SDK, 1);
    cr_assert_eq(V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT, 1);
    cr_assert_eq(V1__CONFIG_DISCOVER_REQUEST__CONFIG_DISCOVER_REQUEST_TYPE__CONFIG_FILE_GROUPS, 3);
}

/* Asserts that service sd has exactly the given methods, in this order,
 * with these request and response types, and returns nothing. */
struct method_spec {
    const char *path;
    const ProtobufCMessageDescriptor *in, *out;
};

static void expect_service(const ProtobufCServiceDescriptor *sd, const char *full_name,
                           const struct method_spec *ms, unsigned n)
{
    cr_assert_str_eq(sd->name, full_name);
    cr_assert_str_eq(sd->package, "v1");
    cr_assert_eq(sd->n_methods, n, "%s has %u methods, expected %u", full_name, sd->n_methods, n);
    for (unsigned i = 0; i < n; i++) {
        char path[256];
        snprintf(path, sizeof path, "/%s/%s", sd->name, sd->methods[i].name);
        cr_assert_str_eq(path, ms[i].path, "method %u of %s", i, full_name);
        cr_assert_eq(sd->methods[i].input, ms[i].in, "%s input type is %s", path,
                     sd->methods[i].input->name);
        cr_assert_eq(sd->methods[i].output, ms[i].out, "%s output type is %s", path,
                     sd->methods[i].output->name);
        cr_assert_not_null(protobuf_c_service_descriptor_get_method_by_name(sd,
                               sd->methods[i].name));
    }
}

Test(polaris_proto, grpc_service_and_method_names)
{
    static const struct method_spec naming[] = {
        { "/v1.PolarisGRPC/ReportClient", &v1__client__descriptor, &v1__response__descriptor },
        { "/v1.PolarisGRPC/RegisterInstance", &v1__instance__descriptor, &v1__response__descriptor },
        { "/v1.PolarisGRPC/DeregisterInstance", &v1__instance__descriptor, &v1__response__descriptor },
        { "/v1.PolarisGRPC/Discover", &v1__discover_request__descriptor,
          &v1__discover_response__descriptor },
        { "/v1.PolarisGRPC/Heartbeat", &v1__instance__descriptor, &v1__response__descriptor },
    };
    static const struct method_spec heartbeat[] = {
        { "/v1.PolarisHeartbeatGRPC/BatchHeartbeat", &v1__heartbeats_request__descriptor,
          &v1__heartbeats_response__descriptor },
        { "/v1.PolarisHeartbeatGRPC/BatchGetHeartbeat", &v1__get_heartbeats_request__descriptor,
          &v1__get_heartbeats_response__descriptor },
        { "/v1.PolarisHeartbeatGRPC/BatchDelHeartbeat", &v1__del_heartbeats_request__descriptor,
          &v1__del_heartbeats_response__descriptor },
    };
    static const struct method_spec config[] = {
        { "/v1.PolarisConfigGRPC/GetConfigFile", &v1__client_config_file_info__descriptor,
          &v1__config_client_response__descriptor },
        { "/v1.PolarisConfigGRPC/CreateConfigFile", &v1__config_file__descriptor,
          &v1__config_client_response__descriptor },
        { "/v1.PolarisConfigGRPC/UpdateConfigFile", &v1__config_file__descriptor,
          &v1__config_client_response__descriptor },
        { "/v1.PolarisConfigGRPC/PublishConfigFile", &v1__config_file_release__descriptor,
          &v1__config_client_response__descriptor },
        { "/v1.PolarisConfigGRPC/UpsertAndPublishConfigFile",
          &v1__config_file_publish_info__descriptor, &v1__config_client_response__descriptor },
        { "/v1.PolarisConfigGRPC/WatchConfigFiles", &v1__client_watch_config_file_request__descriptor,
          &v1__config_client_response__descriptor },
        { "/v1.PolarisConfigGRPC/GetConfigFileMetadataList",
          &v1__config_file_group_request__descriptor, &v1__config_client_list_response__descriptor },
        { "/v1.PolarisConfigGRPC/Discover", &v1__config_discover_request__descriptor,
          &v1__config_discover_response__descriptor },
    };
    expect_service(&v1__polaris_grpc__descriptor, "v1.PolarisGRPC", naming, 5);
    expect_service(&v1__polaris_heartbeat_grpc__descriptor, "v1.PolarisHeartbeatGRPC", heartbeat, 3);
    expect_service(&v1__polaris_config_grpc__descriptor, "v1.PolarisConfigGRPC", config, 8);
}

Test(polaris_proto, unknown_fields_survive_and_service_26_is_not_ours)
{
    /* Service{name "s", 26: varint-wrapped bool (as BoolValue{true}), 999: "z"} */
    static const uint8_t in[] = {
        0x0a, 0x03, 0x0a, 0x01, 's',
        0xd2, 0x01, 0x02, 0x08, 0x01,                       /* 26 (tag 210), BoolValue{true} */
        0xba, 0x3e, 0x01, 'z',                              /* 999 (tag 7994) "z" */
    };
    ProtobufCMessage *m;
    V1__Service *s;

    cr_assert_null(protobuf_c_message_descriptor_get_field(&v1__service__descriptor, 26),
                   "Service field 26 differs between spec versions and must stay undeclared");
    m = protobuf_c_message_unpack(&v1__service__descriptor, NULL, sizeof in, in);
    cr_assert_not_null(m);
    s = (V1__Service *)m;
    cr_assert_str_eq(s->name->value, "s");
    cr_assert_eq(m->n_unknown_fields, 2, "fields 26 and 999 are kept as unknown");
    expect_bytes(m, in, sizeof in, "Service with unknown fields re-packed");
    protobuf_c_message_free_unpacked(m, NULL);
}

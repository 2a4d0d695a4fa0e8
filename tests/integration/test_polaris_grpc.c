/*
 * test_polaris_grpc.c: the Polaris gRPC API on the real naming port (8091
 * role), through the real supervisor, naming and health workers and a
 * private PostgreSQL, with the C gRPC client (tests/support/grpc_client.c):
 * v1.PolarisGRPC ReportClient, RegisterInstance, DeregisterInstance,
 * Heartbeat and the Discover stream, and v1.PolarisHeartbeatGRPC.
 *
 * One supervisor serves the whole flow (starting one takes seconds); each
 * step names what it checks in its assertion messages.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_client.h"
#include "health.pb-c.h"
#include "lstest.h"
#include "naming_id.h"
#include "polaris_client.pb-c.h"
#include "polaris_heartbeat.pb-c.h"
#include "polaris_request.pb-c.h"
#include "polaris_response.pb-c.h"
#include "polaris_routing.pb-c.h"

#define M_REPORT_CLIENT "/v1.PolarisGRPC/ReportClient"
#define M_REGISTER "/v1.PolarisGRPC/RegisterInstance"
#define M_DEREGISTER "/v1.PolarisGRPC/DeregisterInstance"
#define M_HEARTBEAT "/v1.PolarisGRPC/Heartbeat"
#define M_DISCOVER "/v1.PolarisGRPC/Discover"
#define M_BATCH_HEARTBEAT "/v1.PolarisHeartbeatGRPC/BatchHeartbeat"
#define M_BATCH_GET "/v1.PolarisHeartbeatGRPC/BatchGetHeartbeat"
#define M_BATCH_DEL "/v1.PolarisHeartbeatGRPC/BatchDelHeartbeat"
#define M_WATCH "/grpc.health.v1.Health/Watch"

#define NS "default"
#define SVC "grpc-it"

static lstest_t T;
static gtc_channel_t *ch;

/* ------------------------------------------------------------ helpers */

static Google__Protobuf__StringValue *S(const char *v)
{
    Google__Protobuf__StringValue *s = malloc(sizeof *s);
    google__protobuf__string_value__init(s);
    s->value = strdup(v);
    return s;
}

static Google__Protobuf__UInt32Value *U(uint32_t v)
{
    Google__Protobuf__UInt32Value *u = malloc(sizeof *u);
    google__protobuf__uint32_value__init(u);
    u->value = v;
    return u;
}

static Google__Protobuf__BoolValue *B(bool v)
{
    Google__Protobuf__BoolValue *b = malloc(sizeof *b);
    google__protobuf__bool_value__init(b);
    b->value = v;
    return b;
}

static const char *sv(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : ""; }

/* An instance message; everything malloc'd (free with free_unpacked). */
static V1__Instance *instance(const char *id, const char *host, uint32_t port, int health_check, int healthy)
{
    V1__Instance *in = malloc(sizeof *in);
    v1__instance__init(in);
    if (id)
        in->id = S(id);
    in->namespace_ = S(NS);
    in->service = S(SVC);
    if (host)
        in->host = S(host);
    if (port)
        in->port = U(port);
    if (health_check >= 0) {
        in->enable_health_check = B(health_check);
        if (health_check) {
            in->health_check = malloc(sizeof *in->health_check);
            v1__health_check__init(in->health_check);
            in->health_check->type = V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT;
            in->health_check->heartbeat = malloc(sizeof *in->health_check->heartbeat);
            v1__heartbeat_health_check__init(in->health_check->heartbeat);
            in->health_check->heartbeat->ttl = U(5);
        }
    }
    if (healthy >= 0)
        in->healthy = B(healthy);
    return in;
}

/* A unary call with raw bytes: the gRPC status, the answer in *resp. */
static int call_raw(const char *method, const uint8_t *req, size_t len, uint8_t **resp, size_t *rlen)
{
    int status = -1;
    char *details = NULL;
    int rc = gtc_channel_call(ch, method, req, len, 10000, resp, rlen, &status, &details);
    cr_assert_eq(rc, 0, "%s: the call failed to run (%d)", method, rc);
    cr_assert_eq(status, 0, "%s: gRPC status %d (%s)", method, status, details ? details : "");
    free(details);
    return status;
}

/* A unary call answered with a v1.Response. */
static V1__Response *call_response(const char *method, const ProtobufCMessage *req)
{
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(n ? n : 1);
    protobuf_c_message_pack(req, buf);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    call_raw(method, buf, n, &resp, &rlen);
    free(buf);
    V1__Response *r = v1__response__unpack(NULL, rlen, resp);
    free(resp);
    cr_assert(r, "%s: the answer is not a v1.Response", method);
    cr_assert(r->code, "%s: the answer has no code", method);
    return r;
}

static uint32_t code_of(const V1__Response *r) { return r->code ? r->code->value : 0; }

static void expect_code(const char *what, V1__Response *r, uint32_t want)
{
    cr_assert_eq(code_of(r), want, "%s: code %u (%s), expected %u", what, code_of(r), sv(r->info), want);
}

/* A Discover stream kept across requests, as SDKs do. */
static gtc_stream_t *dsc;

static V1__DiscoverResponse *discover_raw(const uint8_t *req, size_t len)
{
    cr_assert_eq(gtc_stream_send(dsc, req, len, 5000), 0, "Discover: send failed");
    uint8_t *m = NULL;
    size_t n = 0;
    int rc = gtc_stream_recv(dsc, &m, &n, 5000);
    cr_assert_eq(rc, 0, "Discover: no answer (%d)", rc);
    V1__DiscoverResponse *r = v1__discover_response__unpack(NULL, n, m);
    free(m);
    cr_assert(r, "Discover: the answer is not a v1.DiscoverResponse");
    return r;
}

static V1__DiscoverResponse *discover(int type, const char *ns, const char *name, const char *revision,
                                      bool only_healthy)
{
    Google__Protobuf__StringValue s_ns = GOOGLE__PROTOBUF__STRING_VALUE__INIT, s_name = s_ns, s_rev = s_ns;
    s_ns.value = (char *)ns;
    s_name.value = (char *)name;
    s_rev.value = (char *)(revision ? revision : "");
    V1__Service svc = V1__SERVICE__INIT;
    svc.namespace_ = &s_ns;
    svc.name = &s_name;
    svc.revision = &s_rev;
    V1__DiscoverFilter f = V1__DISCOVER_FILTER__INIT;
    f.onlyhealthyinstance = only_healthy;
    V1__DiscoverRequest dr = V1__DISCOVER_REQUEST__INIT;
    dr.type = (V1__DiscoverRequest__DiscoverRequestType)type;
    dr.service = &svc;
    if (only_healthy)
        dr.filter = &f;
    uint8_t buf[1024];
    size_t n = v1__discover_request__pack(&dr, buf);
    return discover_raw(buf, n);
}

static uint32_t dcode(const V1__DiscoverResponse *r) { return r->code ? r->code->value : 0; }

static bool has_instance(const V1__DiscoverResponse *r, const char *id)
{
    for (size_t i = 0; i < r->n_instances; i++)
        if (strcmp(sv(r->instances[i]->id), id) == 0)
            return true;
    return false;
}

/* Poll INSTANCE discovery until pred holds (changes reach the gateway's
 * replica asynchronously, after the commit). */
static V1__DiscoverResponse *discover_until(bool (*pred)(const V1__DiscoverResponse *), const char *what)
{
    long long end = lstest_now_ms() + 15000;
    for (;;) {
        V1__DiscoverResponse *r = discover(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE, NS, SVC, NULL, false);
        if (pred(r))
            return r;
        if (lstest_now_ms() > end)
            cr_assert_fail("%s: not seen within 15 s (last code %u, %zu instances)", what, dcode(r), r->n_instances);
        v1__discover_response__free_unpacked(r, NULL);
        lstest_sleep_ms(50);
    }
}

static char id1[NAMING_HEX_LEN + 1], id2[NAMING_HEX_LEN + 1], id3[NAMING_HEX_LEN + 1];

static bool three_instances(const V1__DiscoverResponse *r)
{
    return dcode(r) == 200000 && has_instance(r, id1) && has_instance(r, id2) && has_instance(r, id3);
}

static bool id3_gone(const V1__DiscoverResponse *r)
{
    return dcode(r) == 200000 && has_instance(r, id1) && !has_instance(r, id3);
}

/* --------------------------------------------------------------- steps */

static void step_wait_replica(void)
{
    long long end = lstest_now_ms() + 20000;
    for (;;) {
        V1__DiscoverResponse *r =
            discover(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE, NS, "no-such-service", NULL, false);
        uint32_t c = dcode(r);
        if (c == 400301) {
            cr_assert_eq(r->type, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE, "404 answer type");
            cr_assert_str_eq(sv(r->service->name), "no-such-service", "unknown service echoed");
            v1__discover_response__free_unpacked(r, NULL);
            return;
        }
        cr_assert_eq(c, 500000, "before the replica is loaded: 500000, got %u (%s)", c, sv(r->info));
        cr_assert(strstr(sv(r->info), "not loaded"), "500000 says why: %s", sv(r->info));
        v1__discover_response__free_unpacked(r, NULL);
        cr_assert(lstest_now_ms() < end, "the replica did not load within 20 s");
        lstest_sleep_ms(100);
    }
}

static void step_report_client(void)
{
    V1__Client c = V1__CLIENT__INIT;
    Google__Protobuf__StringValue host = GOOGLE__PROTOBUF__STRING_VALUE__INIT, ver = host;
    host.value = "127.0.0.1";
    ver.value = "test-1.0";
    c.host = &host;
    c.version = &ver;
    c.type = V1__CLIENT__CLIENT_TYPE__SDK;
    V1__Response *r = call_response(M_REPORT_CLIENT, &c.base);
    expect_code("ReportClient", r, 200000);
    cr_assert(r->client && strcmp(sv(r->client->host), "127.0.0.1") == 0, "ReportClient echoes the host");
    v1__response__free_unpacked(r, NULL);
}

static void step_register(void)
{
    naming_instance_id(NS, SVC, NULL, "10.1.0.1", 8080, id1);
    naming_instance_id(NS, SVC, NULL, "10.1.0.2", 8080, id2);
    naming_instance_id(NS, SVC, NULL, "10.1.0.3", 8080, id3);
    struct {
        const char *host;
        int hc, healthy;
        const char *id;
    } regs[] = {{"10.1.0.1", 1, -1, id1}, {"10.1.0.2", 0, -1, id2}, {"10.1.0.3", 1, 0, id3}};
    for (size_t i = 0; i < 3; i++) {
        V1__Instance *in = instance(NULL, regs[i].host, 8080, regs[i].hc, regs[i].healthy);
        V1__Response *r = call_response(M_REGISTER, &in->base);
        expect_code("RegisterInstance without id", r, 200000);
        cr_assert(r->instance, "register answer carries the instance");
        cr_assert_str_eq(sv(r->instance->id), regs[i].id, "registered id is SHA-1 of ns##service##host##port");
        v1__response__free_unpacked(r, NULL);
        v1__instance__free_unpacked(in, NULL);
    }
}

static char revision[128];

static void step_discover_instances(void)
{
    V1__DiscoverResponse *r = discover_until(three_instances, "three registered instances");
    cr_assert_eq(r->type, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__INSTANCE, "type INSTANCE");
    cr_assert_str_eq(sv(r->service->name), SVC, "service name");
    cr_assert_str_eq(sv(r->service->namespace_), NS, "service namespace");
    snprintf(revision, sizeof revision, "%s", sv(r->service->revision));
    cr_assert(revision[0], "the answer carries the service revision");
    cr_assert_eq(r->n_instances, 3, "exactly three instances, got %zu", r->n_instances);
    for (size_t i = 0; i < r->n_instances; i++) {
        cr_assert_null(r->instances[i]->service_token, "no service token handed to consumers");
        cr_assert(r->instances[i]->port && r->instances[i]->port->value == 8080, "port");
    }
    v1__discover_response__free_unpacked(r, NULL);

    /* the same revision: DataNoChange without payload */
    r = discover(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE, NS, SVC, revision, false);
    cr_assert_eq(dcode(r), 200001, "same revision: 200001, got %u", dcode(r));
    cr_assert_eq(r->n_instances, 0, "no payload with 200001");
    cr_assert_str_eq(sv(r->service->name), SVC, "200001 names the service");
    v1__discover_response__free_unpacked(r, NULL);

    /* only healthy: the instance registered unhealthy is left out */
    r = discover(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE, NS, SVC, NULL, true);
    cr_assert_eq(dcode(r), 200000, "healthy-only discover code %u", dcode(r));
    cr_assert_eq(r->n_instances, 2, "healthy-only: 2 instances, got %zu", r->n_instances);
    cr_assert_not(has_instance(r, id3), "the unhealthy instance is filtered");
    v1__discover_response__free_unpacked(r, NULL);
}

static void step_heartbeat(void)
{
    V1__Instance *in = instance(id1, NULL, 0, -1, -1);
    V1__Response *r = call_response(M_HEARTBEAT, &in->base);
    expect_code("Heartbeat by id", r, 200000);
    v1__response__free_unpacked(r, NULL);
    v1__instance__free_unpacked(in, NULL);

    in = instance(NULL, "10.1.0.1", 8080, -1, -1);
    r = call_response(M_HEARTBEAT, &in->base);
    expect_code("Heartbeat by host and port", r, 200000);
    cr_assert(r->instance && strcmp(sv(r->instance->id), id1) == 0, "the beat resolved to the registered id");
    v1__response__free_unpacked(r, NULL);
    v1__instance__free_unpacked(in, NULL);

    in = instance(NULL, "10.9.9.9", 8080, -1, -1);
    r = call_response(M_HEARTBEAT, &in->base);
    expect_code("Heartbeat for an unknown instance", r, 400303);
    v1__response__free_unpacked(r, NULL);
    v1__instance__free_unpacked(in, NULL);

    in = instance(id2, NULL, 0, -1, -1);
    r = call_response(M_HEARTBEAT, &in->base);
    expect_code("Heartbeat on an instance without health check", r, 400141);
    v1__response__free_unpacked(r, NULL);
    v1__instance__free_unpacked(in, NULL);

    in = instance("", NULL, 0, -1, -1);
    r = call_response(M_HEARTBEAT, &in->base);
    expect_code("Heartbeat with an empty id", r, 400130);
    v1__response__free_unpacked(r, NULL);
    v1__instance__free_unpacked(in, NULL);
}

static V1__GetHeartbeatsResponse *get_beats(const char *a, const char *b)
{
    char *ids[2] = {(char *)a, (char *)b};
    V1__GetHeartbeatsRequest q = V1__GET_HEARTBEATS_REQUEST__INIT;
    q.n_instanceids = 2;
    q.instanceids = ids;
    uint8_t buf[256];
    size_t n = v1__get_heartbeats_request__pack(&q, buf);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    call_raw(M_BATCH_GET, buf, n, &resp, &rlen);
    V1__GetHeartbeatsResponse *r = v1__get_heartbeats_response__unpack(NULL, rlen, resp);
    free(resp);
    cr_assert(r, "BatchGetHeartbeat answer does not decode");
    cr_assert_eq(r->n_records, 2, "one record per id, got %zu", r->n_records);
    return r;
}

static void step_heartbeat_service(void)
{
    V1__GetHeartbeatsResponse *g = get_beats(id1, "no-such-id");
    cr_assert_str_eq(g->records[0]->instanceid, id1, "record order");
    cr_assert(g->records[0]->exist, "the beaten instance has a record");
    cr_assert_gt(g->records[0]->lastheartbeatsec, 1600000000, "last beat is a unix time");
    cr_assert_not(g->records[1]->exist, "an id never beaten has none");
    v1__get_heartbeats_response__free_unpacked(g, NULL);

    /* BatchHeartbeat: one (empty) answer per request, by id and by key */
    gtc_stream_t *s = gtc_stream_open(ch, M_BATCH_HEARTBEAT, 10000);
    cr_assert(s, "BatchHeartbeat stream");
    for (int k = 0; k < 3; k++) {
        V1__InstanceHeartbeat a = V1__INSTANCE_HEARTBEAT__INIT, b = V1__INSTANCE_HEARTBEAT__INIT;
        a.instanceid = id1;
        b.namespace_ = NS;
        b.service = SVC;
        b.host = "10.1.0.3";
        b.port = 8080;
        V1__InstanceHeartbeat *list[2] = {&a, &b};
        V1__HeartbeatsRequest hr = V1__HEARTBEATS_REQUEST__INIT;
        hr.n_heartbeats = 2;
        hr.heartbeats = list;
        uint8_t buf[512];
        size_t n = v1__heartbeats_request__pack(&hr, buf);
        cr_assert_eq(gtc_stream_send(s, buf, n, 5000), 0, "BatchHeartbeat send %d", k);
    }
    for (int k = 0; k < 3; k++) {
        uint8_t *m = NULL;
        size_t n = 99;
        cr_assert_eq(gtc_stream_recv(s, &m, &n, 5000), 0, "BatchHeartbeat answer %d", k);
        cr_assert_eq(n, 0, "HeartbeatsResponse is empty");
        free(m);
    }
    cr_assert_eq(gtc_stream_half_close(s, 5000), 0, "half-close");
    uint8_t *m = NULL;
    size_t n = 0;
    cr_assert_eq(gtc_stream_recv(s, &m, &n, 5000), 1, "the server ends the stream after the client's half-close");
    int status = -1;
    char *details = NULL;
    cr_assert_eq(gtc_stream_status(s, 5000, &status, &details), 0, "final status");
    cr_assert_eq(status, 0, "BatchHeartbeat ends OK, got %d (%s)", status, details ? details : "");
    free(details);
    gtc_stream_close(s);

    g = get_beats(id3, id1);
    cr_assert(g->records[0]->exist, "a beat by key reached the health worker");
    v1__get_heartbeats_response__free_unpacked(g, NULL);

    /* BatchDelHeartbeat forgets the beats */
    char *ids[1] = {id1};
    V1__DelHeartbeatsRequest d = V1__DEL_HEARTBEATS_REQUEST__INIT;
    d.n_instanceids = 1;
    d.instanceids = ids;
    uint8_t buf[256];
    size_t dn = v1__del_heartbeats_request__pack(&d, buf);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    call_raw(M_BATCH_DEL, buf, dn, &resp, &rlen);
    V1__DelHeartbeatsResponse *dr = v1__del_heartbeats_response__unpack(NULL, rlen, resp);
    free(resp);
    cr_assert(dr, "BatchDelHeartbeat answer does not decode");
    cr_assert_eq(dr->code, 200000, "BatchDelHeartbeat code %u (%s)", dr->code, dr->info);
    v1__del_heartbeats_response__free_unpacked(dr, NULL);
    g = get_beats(id1, id3);
    cr_assert_not(g->records[0]->exist, "deleted beats are gone");
    cr_assert(g->records[1]->exist, "others stay");
    v1__get_heartbeats_response__free_unpacked(g, NULL);
}

static bool lists_service(const V1__DiscoverResponse *r, const char *name)
{
    for (size_t i = 0; i < r->n_services; i++)
        if (strcmp(sv(r->services[i]->name), name) == 0 && strcmp(sv(r->services[i]->namespace_), NS) == 0)
            return true;
    return false;
}

/* id3 listed healthy: the beats of the heartbeat step reached the replica */
static bool id3_healthy(const V1__DiscoverResponse *r)
{
    if (dcode(r) != 200000)
        return false;
    for (size_t i = 0; i < r->n_instances; i++)
        if (strcmp(sv(r->instances[i]->id), id3) == 0)
            return r->instances[i]->healthy && r->instances[i]->healthy->value;
    return false;
}

static void step_discover_other_types(void)
{
    /* the heartbeat step's verdict changes the service: let it land first,
     * so the revisions compared below are not split by it */
    v1__discover_response__free_unpacked(discover_until(id3_healthy, "id3 healthy after its beats"), NULL);
    V1__DiscoverResponse *r = discover(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__SERVICES, NS, "", NULL, false);
    cr_assert_eq(dcode(r), 200000, "SERVICES code %u (%s)", dcode(r), sv(r->info));
    cr_assert_eq(r->type, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__SERVICES, "type SERVICES");
    cr_assert(lists_service(r, SVC), "SERVICES lists %s", SVC);
    char srev[128];
    snprintf(srev, sizeof srev, "%s", sv(r->service->revision));
    cr_assert(srev[0], "SERVICES carries the list revision");
    v1__discover_response__free_unpacked(r, NULL);
    r = discover(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__SERVICES, NS, "", srev, false);
    cr_assert_eq(dcode(r), 200001, "SERVICES with the same revision: 200001, got %u", dcode(r));
    v1__discover_response__free_unpacked(r, NULL);

    r = discover(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__ROUTING, NS, SVC, NULL, false);
    cr_assert_eq(dcode(r), 200000, "ROUTING code %u", dcode(r));
    cr_assert_eq(r->type, V1__DISCOVER_RESPONSE__DISCOVER_RESPONSE_TYPE__ROUTING, "type ROUTING");
    cr_assert(r->routing, "ROUTING answer carries a routing");
    cr_assert_eq(r->routing->n_rules, 0, "no routing rules yet");
    char rrev[128];
    snprintf(rrev, sizeof rrev, "%s", sv(r->service->revision));
    cr_assert(rrev[0], "ROUTING carries a revision");
    cr_assert_str_eq(sv(r->routing->revision), rrev, "routing revision = service revision in the answer");
    v1__discover_response__free_unpacked(r, NULL);
    r = discover(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__ROUTING, NS, SVC, rrev, false);
    cr_assert_eq(dcode(r), 200001, "ROUTING with its revision: 200001, got %u", dcode(r));
    v1__discover_response__free_unpacked(r, NULL);

    int types[] = {V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__RATE_LIMIT,
                   V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__CIRCUIT_BREAKER,
                   V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__FAULT_DETECTOR};
    for (size_t i = 0; i < 3; i++) {
        r = discover(types[i], NS, SVC, NULL, false);
        cr_assert_eq(dcode(r), 200000, "rule type %d: code %u", types[i], dcode(r));
        cr_assert_eq((int)r->type, types[i], "rule type %d answered as its type", types[i]);
        cr_assert(*sv(r->service->revision), "rule type %d carries a revision", types[i]);
        v1__discover_response__free_unpacked(r, NULL);
    }

    r = discover(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__LANE, NS, SVC, NULL, false);
    cr_assert_eq(dcode(r), 400004, "LANE: 400004 InvalidDiscoverResource, got %u", dcode(r));
    v1__discover_response__free_unpacked(r, NULL);
}

static void step_bad_input(void)
{
    /* a length-delimited field claiming 5 bytes, holding 1 */
    static const uint8_t bad[] = {0x0a, 0x05, 'a'};
    uint8_t *resp = NULL;
    size_t rlen = 0;
    call_raw(M_REGISTER, bad, sizeof bad, &resp, &rlen);
    V1__Response *r = v1__response__unpack(NULL, rlen, resp);
    free(resp);
    cr_assert(r, "answer to malformed bytes is a v1.Response");
    expect_code("RegisterInstance with malformed bytes", r, 400001);
    cr_assert(strstr(sv(r->info), "v1.Instance"), "400001 names the message: %s", sv(r->info));
    v1__response__free_unpacked(r, NULL);

    call_raw(M_REGISTER, NULL, 0, &resp, &rlen);
    r = v1__response__unpack(NULL, rlen, resp);
    free(resp);
    cr_assert(r, "answer to an empty request is a v1.Response");
    expect_code("RegisterInstance with an empty request", r, 400002);
    v1__response__free_unpacked(r, NULL);

    /* on the Discover stream: an error answer, and the stream goes on */
    V1__DiscoverResponse *d = discover_raw(bad, sizeof bad);
    cr_assert_eq(dcode(d), 400001, "Discover with malformed bytes: %u", dcode(d));
    v1__discover_response__free_unpacked(d, NULL);
    d = discover(V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE, NS, SVC, revision, false);
    cr_assert(dcode(d) == 200001 || dcode(d) == 200000, "the stream still answers after a bad message: %u",
              dcode(d));
    v1__discover_response__free_unpacked(d, NULL);
}

static void step_deregister(void)
{
    V1__Instance *in = instance(id3, NULL, 0, -1, -1);
    V1__Response *r = call_response(M_DEREGISTER, &in->base);
    expect_code("DeregisterInstance by id", r, 200000);
    v1__response__free_unpacked(r, NULL);
    v1__instance__free_unpacked(in, NULL);
    V1__DiscoverResponse *d = discover_until(id3_gone, "the deregistered instance leaving discovery");
    cr_assert_str_neq(sv(d->service->revision), revision, "the revision changed with the instance set");
    v1__discover_response__free_unpacked(d, NULL);
}

/* Open a Health/Watch stream for a service; returns it after checking the
 * first status. */
static gtc_stream_t *watch(const char *service, int want)
{
    gtc_stream_t *w = gtc_stream_open(ch, M_WATCH, 60000);
    cr_assert(w, "Watch stream");
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    uint8_t buf[128];
    size_t n = grpc__health__v1__health_check_request__pack(&req, buf);
    cr_assert_eq(gtc_stream_send(w, buf, n, 5000), 0, "Watch request");
    cr_assert_eq(gtc_stream_half_close(w, 5000), 0, "Watch half-close");
    uint8_t *m = NULL;
    size_t mlen = 0;
    cr_assert_eq(gtc_stream_recv(w, &m, &mlen, 5000), 0, "Watch(%s): first status", service);
    Grpc__Health__V1__HealthCheckResponse *r = grpc__health__v1__health_check_response__unpack(NULL, mlen, m);
    free(m);
    cr_assert(r, "Watch answer decodes");
    cr_assert_eq((int)r->status, want, "Watch(\"%s\"): status %d, expected %d", service, r->status, want);
    grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    return w;
}

static bool two_instances(const V1__DiscoverResponse *r)
{
    return dcode(r) == 200000 && has_instance(r, id1) && has_instance(r, id2);
}

/* Health/Watch, then a gateway restart: watchers hear NOT_SERVING and their
 * streams end, the Discover stream ends with UNAVAILABLE (not at the drain
 * bound), and the new gateway answers from a freshly loaded replica. */
static void step_watch_and_restart(void)
{
    gtc_stream_t *unknown =
        watch("no.such.Service", GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN);
    gtc_stream_close(unknown);
    gtc_stream_t *w = watch("v1.PolarisGRPC", GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

    pid_t old = lstest_pid(&T, "polaris-grpc");
    cr_assert(old > 0, "gateway pid");
    long long t0 = lstest_now_ms();
    cr_assert_eq(kill(old, SIGTERM), 0, "SIGTERM to the gateway");

    uint8_t *m = NULL;
    size_t mlen = 0;
    cr_assert_eq(gtc_stream_recv(w, &m, &mlen, 5000), 0, "the watcher hears about the drain");
    Grpc__Health__V1__HealthCheckResponse *r = grpc__health__v1__health_check_response__unpack(NULL, mlen, m);
    free(m);
    cr_assert(r && r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING,
              "draining gateway says NOT_SERVING");
    grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    int status = -1;
    cr_assert_eq(gtc_stream_status(w, 5000, &status, NULL), 0, "Watch ends");
    cr_assert_eq(status, 14, "Watch ends UNAVAILABLE on drain, got %d", status);
    gtc_stream_close(w);

    cr_assert_eq(gtc_stream_recv(dsc, &m, &mlen, 5000), 1, "the Discover stream is ended by the drain");
    cr_assert_eq(gtc_stream_status(dsc, 5000, &status, NULL), 0, "Discover final status");
    cr_assert_eq(status, 14, "Discover ends UNAVAILABLE on drain, got %d", status);
    cr_assert_lt(lstest_now_ms() - t0, 2000, "open streams must not hold the drain until its bound");
    gtc_stream_close(dsc);

    cr_assert(lstest_wait_restarted(&T, "polaris-grpc", old, 20000) > 0, "the gateway restarted");
    dsc = gtc_stream_open(ch, M_DISCOVER, 120000);
    cr_assert(dsc, "a new Discover stream");
    V1__DiscoverResponse *d = discover_until(two_instances, "instances after the gateway restart");
    v1__discover_response__free_unpacked(d, NULL);
}

/* ---------------------------------------------------------------- test */

Test(polaris_grpc, register_heartbeat_discover_deregister, .timeout = 180)
{
    lstest_start(&T, NULL, 60000);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", T.grpc_port);
    ch = gtc_channel_open(target);
    cr_assert(ch, "channel");
    dsc = gtc_stream_open(ch, M_DISCOVER, 120000);
    cr_assert(dsc, "Discover stream");

    step_wait_replica();
    step_report_client();
    step_register();
    step_discover_instances();
    step_heartbeat();
    step_heartbeat_service();
    step_discover_other_types();
    step_bad_input();
    step_deregister();
    step_watch_and_restart();

    cr_assert_eq(gtc_stream_half_close(dsc, 5000), 0, "Discover half-close");
    int status = -1;
    cr_assert_eq(gtc_stream_status(dsc, 5000, &status, NULL), 0, "Discover final status");
    cr_assert_eq(status, 0, "Discover ends OK after the client's half-close, got %d", status);
    gtc_stream_close(dsc);
    gtc_channel_close(ch);
    cr_assert_eq(lstest_stop(&T, 20000), 0, "lodestar exit status");
    lstest_cleanup(&T);
}

/*
 * lodestar_bench.c: load generator for the Polaris naming API over gRPC,
 * and the bare gRPC-core echo server that gives the same-run ceiling.
 *
 *   lodestar-bench echo-server PORT PAYLOAD_BYTES
 *       a bidi-stream echo on gRPC core alone: each request is answered
 *       with PAYLOAD_BYTES bytes (runs until SIGTERM/SIGINT)
 *   lodestar-bench preload   TARGET SERVICES INSTANCES
 *       registers SERVICES x INSTANCES heartbeat-checked instances
 *   lodestar-bench register  TARGET CONCURRENCY SECONDS
 *       durable registrations of fresh instances (unary, CONCURRENCY in flight)
 *   lodestar-bench discover  TARGET CONCURRENCY SECONDS SERVICES
 *       INSTANCE discovery on CONCURRENCY bidi streams, one request in flight
 *       per stream (how SDKs use Discover), services round-robin, no revision
 *       sent so every answer is a full instance list
 *   lodestar-bench heartbeat TARGET CONCURRENCY SECONDS SERVICES INSTANCES
 *       unary Heartbeat relay of preloaded instances
 *   lodestar-bench batch-heartbeat TARGET STREAMS SECONDS SERVICES INSTANCES BATCH
 *       v1.PolarisHeartbeatGRPC/BatchHeartbeat on STREAMS bidi streams, one
 *       HeartbeatsRequest of BATCH beats (by namespace, service, host and
 *       port, as SDKs without ids send them) in flight per stream, the
 *       preloaded instances in turn; prints a second line with beats/s
 *   lodestar-bench echo      TARGET CONCURRENCY SECONDS
 *       the discover pattern against echo-server
 *
 * Each measuring mode prints one line:
 *   mode=discover ops=N seconds=S ops_per_s=X p50_us=A p99_us=B errors=E avg_resp_bytes=R
 * Latency is per call (unary) or per request/response round trip (streams).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "polaris_grpcapi.pb-c.h"
#include "polaris_heartbeat.pb-c.h"
#include "polaris_request.pb-c.h"
#include "polaris_response.pb-c.h"
#include "polaris_service.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

#define ECHO_METHOD "/lodestar.bench.Echo/Stream"
#define N_CHANNELS 4

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static grpc_byte_buffer *bb_from(const uint8_t *p, size_t n)
{
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)p, n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static size_t bb_read(grpc_byte_buffer *bb, uint8_t **out)
{
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, bb);
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    size_t n = GRPC_SLICE_LENGTH(all);
    *out = malloc(n ? n : 1);
    memcpy(*out, GRPC_SLICE_START_PTR(all), n);
    grpc_slice_unref(all);
    return n;
}

static Google__Protobuf__StringValue *sv(const char *s)
{
    Google__Protobuf__StringValue *v = malloc(sizeof *v);
    google__protobuf__string_value__init(v);
    v->value = strdup(s);
    return v;
}

static Google__Protobuf__UInt32Value *u32(uint32_t x)
{
    Google__Protobuf__UInt32Value *v = malloc(sizeof *v);
    google__protobuf__uint32_value__init(v);
    v->value = x;
    return v;
}

static void free_instance(V1__Instance *in)
{
    /* built by make_instance: every pointer is ours */
    Google__Protobuf__StringValue *svs[] = {in->namespace_, in->service, in->host};
    for (size_t i = 0; i < 3; i++)
        if (svs[i]) {
            free(svs[i]->value);
            free(svs[i]);
        }
    free(in->port);
    if (in->health_check) {
        free(in->health_check->heartbeat->ttl);
        free(in->health_check->heartbeat);
        free(in->health_check);
    }
    free(in->enable_health_check);
}

/* An instance of bench service `svc` (index) number `idx`. */
static void make_instance(V1__Instance *in, unsigned svc, unsigned idx, bool with_hc)
{
    v1__instance__init(in);
    char name[64], host[64];
    snprintf(name, sizeof name, "bench-svc-%u", svc);
    snprintf(host, sizeof host, "10.%u.%u.%u", (idx >> 16) & 255, (idx >> 8) & 255, idx & 255);
    in->namespace_ = sv("default");
    in->service = sv(name);
    in->host = sv(host);
    in->port = u32(8000 + idx % 1000);
    if (with_hc) {
        in->health_check = malloc(sizeof *in->health_check);
        v1__health_check__init(in->health_check);
        in->health_check->type = V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT;
        in->health_check->heartbeat = malloc(sizeof *in->health_check->heartbeat);
        v1__heartbeat_health_check__init(in->health_check->heartbeat);
        in->health_check->heartbeat->ttl = u32(5);
        in->enable_health_check = malloc(sizeof *in->enable_health_check);
        google__protobuf__bool_value__init(in->enable_health_check);
        in->enable_health_check->value = 1;
    }
}

static size_t pack_instance(unsigned svc, unsigned idx, bool hc, uint8_t *buf, size_t cap)
{
    V1__Instance in;
    make_instance(&in, svc, idx, hc);
    size_t n = v1__instance__get_packed_size(&in);
    if (n <= cap)
        v1__instance__pack(&in, buf);
    free_instance(&in);
    return n <= cap ? n : 0;
}

static size_t pack_discover(unsigned svc, uint8_t *buf, size_t cap)
{
    V1__DiscoverRequest r = V1__DISCOVER_REQUEST__INIT;
    V1__Service s = V1__SERVICE__INIT;
    char name[64];
    snprintf(name, sizeof name, "bench-svc-%u", svc);
    Google__Protobuf__StringValue ns = GOOGLE__PROTOBUF__STRING_VALUE__INIT, nm = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    ns.value = (char *)"default";
    nm.value = name;
    s.namespace_ = &ns;
    s.name = &nm;
    r.type = V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE;
    r.service = &s;
    size_t n = v1__discover_request__get_packed_size(&r);
    if (n > cap)
        return 0;
    return v1__discover_request__pack(&r, buf);
}

/* ------------------------------------------------------------- stats */

typedef struct stats {
    uint32_t *lat_us;
    size_t n, cap;
    size_t errors;
    uint64_t resp_bytes;
    char first_error[256];
} stats_t;

static void stats_add(stats_t *st, double seconds, size_t resp_len)
{
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 1 << 16;
        st->lat_us = realloc(st->lat_us, st->cap * sizeof *st->lat_us);
    }
    st->lat_us[st->n++] = (uint32_t)(seconds * 1e6);
    st->resp_bytes += resp_len;
}

static void stats_error(stats_t *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void stats_error(stats_t *st, const char *fmt, ...)
{
    if (st->errors++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->first_error, sizeof st->first_error, fmt, ap);
        va_end(ap);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void stats_print(const char *mode, stats_t *st, double secs)
{
    qsort(st->lat_us, st->n, sizeof *st->lat_us, cmp_u32);
    uint32_t p50 = st->n ? st->lat_us[st->n / 2] : 0;
    uint32_t p99 = st->n ? st->lat_us[(size_t)((double)st->n * 0.99)] : 0;
    printf("mode=%s ops=%zu seconds=%.2f ops_per_s=%.0f p50_us=%u p99_us=%u errors=%zu avg_resp_bytes=%llu\n", mode,
           st->n, secs, (double)st->n / secs, p50, p99, st->errors,
           st->n ? (unsigned long long)(st->resp_bytes / st->n) : 0ULL);
    if (st->errors)
        printf("first_error=%s\n", st->first_error);
    fflush(stdout);
    free(st->lat_us);
}

/* --------------------------------------------------- unary load engine */

typedef struct ucall {
    grpc_call *call;
    grpc_metadata_array md_in, md_trail;
    grpc_byte_buffer *req, *resp;
    grpc_status_code status;
    grpc_slice details;
    double started;
    int slot;
} ucall_t;

typedef size_t (*make_req_fn)(uint64_t n, uint8_t *buf, size_t cap);

static grpc_channel *channels[N_CHANNELS];

static void open_channels(const char *target)
{
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    for (int i = 0; i < N_CHANNELS; i++) {
        /* distinct channels: several HTTP/2 connections, as many clients would have */
        grpc_arg a = {.type = GRPC_ARG_INTEGER, .key = (char *)"grpc.channel_id", .value.integer = i};
        grpc_channel_args args = {.num_args = 1, .args = &a};
        channels[i] = grpc_channel_create(target, cr, &args);
    }
    grpc_channel_credentials_release(cr);
}

static void close_channels(void)
{
    for (int i = 0; i < N_CHANNELS; i++)
        grpc_channel_destroy(channels[i]);
}

static void ucall_start(ucall_t *c, grpc_completion_queue *cq, const char *method, const uint8_t *req, size_t len)
{
    c->status = GRPC_STATUS_OK;
    c->details = grpc_empty_slice();
    grpc_metadata_array_init(&c->md_in);
    grpc_metadata_array_init(&c->md_trail);
    c->req = bb_from(req, len);
    c->resp = NULL;
    c->started = now_s();
    grpc_slice m = grpc_slice_from_static_string(method);
    c->call = grpc_channel_create_call(channels[c->slot % N_CHANNELS], NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                       gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(10, GPR_TIMESPAN)),
                                       NULL);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->md_in;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->md_trail;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->details;
    grpc_call_start_batch(c->call, ops, 6, c, NULL);
}

/* Finish one unary call: check gRPC status and the Polaris code. */
static void ucall_done(ucall_t *c, bool ok, stats_t *st)
{
    double lat = now_s() - c->started;
    size_t rlen = 0;
    if (!ok || c->status != GRPC_STATUS_OK || !c->resp) {
        char *d = grpc_slice_to_c_string(c->details);
        stats_error(st, "grpc status %d: %s", c->status, d);
        gpr_free(d);
    } else {
        uint8_t *b;
        rlen = bb_read(c->resp, &b);
        V1__Response *r = v1__response__unpack(NULL, rlen, b);
        free(b);
        uint32_t code = r && r->code ? r->code->value : 0;
        if (code == 200000 || code == 200001)
            stats_add(st, lat, rlen);
        else
            stats_error(st, "polaris code %u: %s", code, r && r->info ? r->info->value : "");
        if (r)
            v1__response__free_unpacked(r, NULL);
    }
    grpc_byte_buffer_destroy(c->req);
    if (c->resp)
        grpc_byte_buffer_destroy(c->resp);
    grpc_metadata_array_destroy(&c->md_in);
    grpc_metadata_array_destroy(&c->md_trail);
    grpc_slice_unref(c->details);
    grpc_call_unref(c->call);
}

/* Keep `conc` unary calls in flight for `secs` (0: until `total` calls). */
static double run_unary(const char *method, int conc, double secs, uint64_t total, make_req_fn make, stats_t *st)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    ucall_t *calls = calloc((size_t)conc, sizeof *calls);
    uint8_t buf[4096];
    uint64_t issued = 0;
    double t0 = now_s(), end = t0 + secs;
    int active = 0;
    for (int i = 0; i < conc && (secs > 0 || issued < total); i++) {
        calls[i].slot = i;
        size_t n = make(issued++, buf, sizeof buf);
        ucall_start(&calls[i], cq, method, buf, n);
        active++;
    }
    while (active > 0) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        ucall_t *c = ev.tag;
        ucall_done(c, ev.success, st);
        active--;
        bool more = secs > 0 ? now_s() < end : issued < total;
        if (more) {
            size_t n = make(issued++, buf, sizeof buf);
            ucall_start(c, cq, method, buf, n);
            active++;
        }
    }
    double took = now_s() - t0;
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    free(calls);
    return took;
}

/* ------------------------------------------------ stream load engine */

typedef struct scall {
    grpc_call *call;
    grpc_metadata_array md_in, md_trail;
    grpc_byte_buffer *req, *resp;
    grpc_status_code status;
    grpc_slice details;
    double started;
    int slot;
    int phase; /* 0 opening, 1 round trip in flight, 2 closing */
    uint64_t n;
    uint64_t answers; /* answers received on this stream */
} scall_t;

typedef size_t (*make_stream_req_fn)(uint64_t n, uint8_t *buf, size_t cap);

static void scall_round(scall_t *c, make_stream_req_fn make)
{
    static uint8_t buf[65536]; /* one thread drives every stream */
    size_t len = make(c->n++ * 7919 + (uint64_t)c->slot, buf, sizeof buf);
    c->req = bb_from(buf, len);
    c->resp = NULL;
    c->started = now_s();
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->req;
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &c->resp;
    if (c->n == 1) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &c->md_in;
    }
    c->phase = 1;
    grpc_call_start_batch(c->call, ops, n, c, NULL);
}

/* Read a protobuf varint at *p (bounded by end); false when malformed. */
static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* The code of a Polaris response (field 1, a google.protobuf.UInt32Value)
 * read straight from the wire format, without decoding the rest; 0 when
 * absent or malformed. */
static uint32_t wire_code(const uint8_t *b, size_t len)
{
    const uint8_t *p = b, *end = b + len;
    uint64_t key, v;
    while (p < end && wire_varint(&p, end, &key)) {
        unsigned wt = (unsigned)(key & 7);
        if (wt == 0) {
            if (!wire_varint(&p, end, &v))
                return 0;
        } else if (wt == 1 || wt == 5) {
            p += wt == 1 ? 8 : 4;
        } else if (wt == 2) {
            if (!wire_varint(&p, end, &v) || v > (uint64_t)(end - p))
                return 0;
            if ((key >> 3) == 1) { /* UInt32Value { uint32 value = 1; } */
                const uint8_t *q = p, *qend = p + v;
                uint64_t ik, iv;
                while (q < qend && wire_varint(&q, qend, &ik)) {
                    if ((ik & 7) != 0 || !wire_varint(&q, qend, &iv))
                        return 0;
                    if ((ik >> 3) == 1)
                        return (uint32_t)iv;
                }
                return 0;
            }
            p += v;
        } else {
            return 0;
        }
    }
    return 0;
}

static double run_streams(const char *method, int conc, double secs, make_stream_req_fn make, bool polaris, stats_t *st)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    scall_t *calls = calloc((size_t)conc, sizeof *calls);
    for (int i = 0; i < conc; i++) {
        scall_t *c = &calls[i];
        c->slot = i;
        grpc_metadata_array_init(&c->md_in);
        grpc_metadata_array_init(&c->md_trail);
        grpc_slice m = grpc_slice_from_static_string(method);
        c->call = grpc_channel_create_call(channels[i % N_CHANNELS], NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                           gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        /* a server may send its initial metadata only with its first
         * answer: receive it in the first round trip, not before */
        grpc_op ops[1];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->phase = 0;
        grpc_call_start_batch(c->call, ops, 1, c, NULL);
    }
    double t0 = now_s(), end = t0 + secs;
    int active = conc;
    while (active > 0) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        scall_t *c = ev.tag;
        if (c->phase == 2) { /* status received */
            active--;
            continue;
        }
        if (c->phase == 1) {
            double lat = now_s() - c->started;
            grpc_byte_buffer_destroy(c->req);
            if (!ev.success || !c->resp) {
                stats_error(st, "stream ended early");
            } else {
                uint8_t *b;
                size_t rlen = bb_read(c->resp, &b);
                grpc_byte_buffer_destroy(c->resp);
                if (polaris && (c->answers++ % 256) != 0) {
                    /* the generator's own work per answer stays close to
                     * the echo run's: only the code is read */
                    uint32_t code = wire_code(b, rlen);
                    if (code == 200000 || code == 200001)
                        stats_add(st, lat, rlen);
                    else
                        stats_error(st, "discover code %u", code);
                } else if (polaris) {
                    /* every 256th answer of a stream is decoded in full */
                    V1__DiscoverResponse *r = v1__discover_response__unpack(NULL, rlen, b);
                    uint32_t code = r && r->code ? r->code->value : 0;
                    if (code == 200000 || code == 200001)
                        stats_add(st, lat, rlen);
                    else
                        stats_error(st, "discover code %u: %s", code, r && r->info ? r->info->value : "");
                    if (r)
                        v1__discover_response__free_unpacked(r, NULL);
                } else {
                    stats_add(st, lat, rlen);
                }
                free(b);
            }
        }
        if (ev.success && now_s() < end) {
            scall_round(c, make);
            continue;
        }
        /* close: half-close and collect the status */
        grpc_op ops[2];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[1].data.recv_status_on_client.trailing_metadata = &c->md_trail;
        ops[1].data.recv_status_on_client.status = &c->status;
        ops[1].data.recv_status_on_client.status_details = &c->details;
        c->phase = 2;
        if (grpc_call_start_batch(c->call, ops, 2, c, NULL) != GRPC_CALL_OK) {
            grpc_call_cancel(c->call, NULL);
            active--;
        }
    }
    double took = now_s() - t0;
    for (int i = 0; i < conc; i++) {
        grpc_metadata_array_destroy(&calls[i].md_in);
        grpc_metadata_array_destroy(&calls[i].md_trail);
        grpc_slice_unref(calls[i].details);
        grpc_call_unref(calls[i].call);
    }
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    free(calls);
    return took;
}

/* ---------------------------------------------------------- requests */

static unsigned g_services = 1000, g_instances = 10;

static size_t req_preload(uint64_t n, uint8_t *buf, size_t cap)
{
    return pack_instance((unsigned)(n / g_instances), (unsigned)(n % g_instances), true, buf, cap);
}

/* fresh instances for the durable-register run: service "bench-reg-*" */
static size_t req_register(uint64_t n, uint8_t *buf, size_t cap)
{
    return pack_instance(100000u + (unsigned)(n % 100), 1000u + (unsigned)n, false, buf, cap);
}

static size_t req_heartbeat(uint64_t n, uint8_t *buf, size_t cap)
{
    uint64_t k = n % ((uint64_t)g_services * g_instances);
    return pack_instance((unsigned)(k / g_instances), (unsigned)(k % g_instances), false, buf, cap);
}

static size_t req_discover(uint64_t n, uint8_t *buf, size_t cap)
{
    return pack_discover((unsigned)(n % g_services), buf, cap);
}

/* BatchHeartbeat: g_batch beats of the preloaded instances, in turn */
static unsigned g_batch = 100;
static uint64_t g_beat_next;

static size_t req_batch_heartbeat(uint64_t n, uint8_t *buf, size_t cap)
{
    (void)n;
    V1__InstanceHeartbeat *hb = calloc(g_batch, sizeof *hb);
    V1__InstanceHeartbeat **ptrs = calloc(g_batch, sizeof *ptrs);
    char (*names)[32] = calloc(g_batch, sizeof *names);
    char (*hosts)[32] = calloc(g_batch, sizeof *hosts);
    uint64_t total = (uint64_t)g_services * g_instances;
    for (unsigned j = 0; j < g_batch; j++) {
        uint64_t k = g_beat_next++ % total;
        unsigned svc = (unsigned)(k / g_instances), idx = (unsigned)(k % g_instances);
        v1__instance_heartbeat__init(&hb[j]);
        snprintf(names[j], sizeof names[j], "bench-svc-%u", svc);
        snprintf(hosts[j], sizeof hosts[j], "10.%u.%u.%u", (idx >> 16) & 255, (idx >> 8) & 255, idx & 255);
        hb[j].namespace_ = (char *)"default";
        hb[j].service = names[j];
        hb[j].host = hosts[j];
        hb[j].port = 8000 + idx % 1000;
        ptrs[j] = &hb[j];
    }
    V1__HeartbeatsRequest r = V1__HEARTBEATS_REQUEST__INIT;
    r.n_heartbeats = g_batch;
    r.heartbeats = ptrs;
    size_t len = v1__heartbeats_request__get_packed_size(&r);
    if (len <= cap)
        v1__heartbeats_request__pack(&r, buf);
    free(hb);
    free(ptrs);
    free(names);
    free(hosts);
    return len <= cap ? len : 0;
}

static size_t req_echo(uint64_t n, uint8_t *buf, size_t cap)
{
    return pack_discover((unsigned)(n % g_services), buf, cap); /* same request size as discover */
}

/* -------------------------------------------------------- echo server */

static volatile sig_atomic_t g_stop;
static void on_stop(int sig) { g_stop = 1; }

typedef struct ecall {
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *in, *out;
    int phase; /* 0 awaiting call, 1 reading, 2 finishing */
    int cancelled;
} ecall_t;

static int echo_server(int port, size_t payload)
{
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    grpc_init();
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server *srv = grpc_server_create(NULL, NULL);
    grpc_server_register_completion_queue(srv, cq, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    grpc_server_credentials *cr = grpc_insecure_server_credentials_create();
    if (!grpc_server_add_http2_port(srv, addr, cr)) {
        fprintf(stderr, "echo-server: cannot listen on %s\n", addr);
        return 1;
    }
    grpc_server_credentials_release(cr);
    grpc_server_start(srv);
    uint8_t *reply = malloc(payload ? payload : 1);
    memset(reply, 'x', payload);

#define REQUEST_NEW()                                                                                                \
    do {                                                                                                             \
        ecall_t *e = calloc(1, sizeof *e);                                                                           \
        grpc_call_details_init(&e->details);                                                                         \
        grpc_metadata_array_init(&e->md);                                                                            \
        grpc_server_request_call(srv, &e->call, &e->details, &e->md, cq, cq, e);                                     \
    } while (0)
    REQUEST_NEW();
    printf("echo-server listening on %s, payload %zu bytes\n", addr, payload);
    fflush(stdout);
    while (!g_stop) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                                                    gpr_time_from_millis(200, GPR_TIMESPAN)), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        ecall_t *e = ev.tag;
        grpc_op ops[3];
        memset(ops, 0, sizeof ops);
        if (e->phase == 0) {
            REQUEST_NEW();
            if (!ev.success) {
                free(e);
                continue;
            }
            ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
            ops[1].op = GRPC_OP_RECV_MESSAGE;
            ops[1].data.recv_message.recv_message = &e->in;
            e->phase = 1;
            grpc_call_start_batch(e->call, ops, 2, e, NULL);
            continue;
        }
        if (e->out) {
            grpc_byte_buffer_destroy(e->out);
            e->out = NULL;
        }
        if (e->phase == 1 && ev.success && e->in) {
            grpc_byte_buffer_destroy(e->in);
            e->in = NULL;
            e->out = bb_from(reply, payload);
            ops[0].op = GRPC_OP_SEND_MESSAGE;
            ops[0].data.send_message.send_message = e->out;
            ops[1].op = GRPC_OP_RECV_MESSAGE;
            ops[1].data.recv_message.recv_message = &e->in;
            grpc_call_start_batch(e->call, ops, 2, e, NULL);
            continue;
        }
        if (e->phase == 1) { /* client half-closed (or failed): finish */
            ops[0].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
            ops[0].data.send_status_from_server.status = GRPC_STATUS_OK;
            ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
            ops[1].data.recv_close_on_server.cancelled = &e->cancelled;
            e->phase = 2;
            if (grpc_call_start_batch(e->call, ops, 2, e, NULL) == GRPC_CALL_OK)
                continue;
        }
        grpc_call_unref(e->call);
        grpc_call_details_destroy(&e->details);
        grpc_metadata_array_destroy(&e->md);
        free(e);
    }
    grpc_server_shutdown_and_notify(srv, cq, NULL);
    grpc_server_cancel_all_calls(srv);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE && ev.tag == NULL)
            break;
    }
    grpc_server_destroy(srv);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    free(reply);
    grpc_shutdown();
    return 0;
}

/* --------------------------------------------------------------- main */

static int usage(void)
{
    fprintf(stderr, "usage: lodestar-bench echo-server PORT PAYLOAD_BYTES\n"
                    "       lodestar-bench preload TARGET SERVICES INSTANCES\n"
                    "       lodestar-bench register TARGET CONCURRENCY SECONDS\n"
                    "       lodestar-bench discover TARGET CONCURRENCY SECONDS SERVICES\n"
                    "       lodestar-bench heartbeat TARGET CONCURRENCY SECONDS SERVICES INSTANCES\n"
                    "       lodestar-bench batch-heartbeat TARGET STREAMS SECONDS SERVICES INSTANCES BATCH\n"
                    "       lodestar-bench echo TARGET CONCURRENCY SECONDS\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *mode = argv[1];
    if (strcmp(mode, "echo-server") == 0 && argc == 4)
        return echo_server(atoi(argv[2]), (size_t)atol(argv[3]));
    if (argc < 4)
        return usage();
    const char *target = argv[2];
    grpc_init();
    open_channels(target);
    stats_t st = {0};
    double took;
    if (strcmp(mode, "preload") == 0 && argc == 5) {
        g_services = (unsigned)atoi(argv[3]);
        g_instances = (unsigned)atoi(argv[4]);
        took = run_unary("/v1.PolarisGRPC/RegisterInstance", 64, 0, (uint64_t)g_services * g_instances, req_preload,
                         &st);
        stats_print("preload", &st, took);
    } else if (strcmp(mode, "register") == 0 && argc == 5) {
        took = run_unary("/v1.PolarisGRPC/RegisterInstance", atoi(argv[3]), atof(argv[4]), 0, req_register, &st);
        stats_print("register", &st, took);
    } else if (strcmp(mode, "discover") == 0 && argc == 6) {
        g_services = (unsigned)atoi(argv[5]);
        took = run_streams("/v1.PolarisGRPC/Discover", atoi(argv[3]), atof(argv[4]), req_discover, true, &st);
        stats_print("discover", &st, took);
    } else if (strcmp(mode, "heartbeat") == 0 && argc == 7) {
        g_services = (unsigned)atoi(argv[5]);
        g_instances = (unsigned)atoi(argv[6]);
        took = run_unary("/v1.PolarisGRPC/Heartbeat", atoi(argv[3]), atof(argv[4]), 0, req_heartbeat, &st);
        stats_print("heartbeat", &st, took);
    } else if (strcmp(mode, "batch-heartbeat") == 0 && argc == 8) {
        g_services = (unsigned)atoi(argv[5]);
        g_instances = (unsigned)atoi(argv[6]);
        g_batch = (unsigned)atoi(argv[7]);
        if (g_batch < 1 || g_batch > 1000 || g_services * g_instances == 0) {
            close_channels();
            grpc_shutdown();
            return usage();
        }
        took = run_streams("/v1.PolarisHeartbeatGRPC/BatchHeartbeat", atoi(argv[3]), atof(argv[4]),
                           req_batch_heartbeat, false, &st);
        size_t msgs = st.n;
        stats_print("batch-heartbeat", &st, took);
        printf("mode=batch-heartbeat beats=%llu seconds=%.2f beats_per_s=%.0f batch=%u streams=%d\n",
               (unsigned long long)msgs * g_batch, took, (double)msgs * g_batch / took, g_batch, atoi(argv[3]));
    } else if (strcmp(mode, "echo") == 0 && argc == 5) {
        took = run_streams(ECHO_METHOD, atoi(argv[3]), atof(argv[4]), req_echo, false, &st);
        stats_print("echo", &st, took);
    } else {
        close_channels();
        grpc_shutdown();
        return usage();
    }
    close_channels();
    grpc_shutdown();
    return st.errors && st.n == 0 ? 1 : 0;
}

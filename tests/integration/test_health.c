/*
 * test_health.c: health checking end to end with the memory heartbeat
 * store, through the real supervisor, naming and health workers, a private
 * PostgreSQL and the Polaris gRPC API (tests/support/grpc_client.c):
 *
 *  - beat -> healthy; silence -> unhealthy within 3 x TTL + 1 s (and not
 *    before 3 x TTL); a beat -> healthy again; an instance that never beat
 *    turns unhealthy 3 x TTL after it was registered;
 *  - the health worker's own answers per id over IPC: 200000, 400141,
 *    400303;
 *  - kill -9 of the health worker: no beating instance is ever marked
 *    unhealthy, and a silent one not before one full expiry window after
 *    the restart;
 *  - the protect threshold and the clean-up job.
 *
 * TTLs are 1 s; the wheel ticks every 50 ms. Health is observed the way
 * clients see it: in Discover answers.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "grpc_client.h"
#include "ipc.h"
#include "lstest.h"
#include "polaris_request.pb-c.h"
#include "polaris_response.pb-c.h"

#define M_REGISTER "/v1.PolarisGRPC/RegisterInstance"
#define M_HEARTBEAT "/v1.PolarisGRPC/Heartbeat"
#define M_DISCOVER "/v1.PolarisGRPC/Discover"
#define NS "default"

#define HC_FAST                                                                                                        \
    "healthcheck:\n"                                                                                                   \
    "  slot_num: 100\n"                                                                                                \
    "  min_check_interval_ms: 100\n"                                                                                   \
    "  max_check_interval_ms: 5000\n"

static lstest_t T;
static gtc_channel_t *ch;
static gtc_stream_t *dsc;

/* ------------------------------------------------------------ helpers */

static int call(const char *method, const ProtobufCMessage *req, V1__Response **out)
{
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(n ? n : 1);
    protobuf_c_message_pack(req, buf);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int status = -1;
    int rc = gtc_channel_call(ch, method, buf, n, 5000, &resp, &rlen, &status, NULL);
    free(buf);
    if (rc < 0 || status != 0) {
        free(resp);
        return -1;
    }
    V1__Response *r = v1__response__unpack(NULL, rlen, resp);
    free(resp);
    if (!r)
        return -1;
    int code = r->code ? (int)r->code->value : -1;
    if (out)
        *out = r;
    else
        v1__response__free_unpacked(r, NULL);
    return code;
}

/* Register an instance of `svc` with an explicit id and a heartbeat check
 * of ttl seconds (0: no health check). */
static void reg(const char *svc, const char *id, const char *host, uint32_t ttl)
{
    Google__Protobuf__StringValue s_id = GOOGLE__PROTOBUF__STRING_VALUE__INIT, s_ns = s_id, s_svc = s_id,
                                  s_host = s_id;
    s_id.value = (char *)id;
    s_ns.value = NS;
    s_svc.value = (char *)svc;
    s_host.value = (char *)host;
    Google__Protobuf__UInt32Value port = GOOGLE__PROTOBUF__UINT32_VALUE__INIT, t = port;
    port.value = 8080;
    t.value = ttl;
    Google__Protobuf__BoolValue en = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    en.value = ttl > 0;
    V1__HeartbeatHealthCheck hb = V1__HEARTBEAT_HEALTH_CHECK__INIT;
    hb.ttl = &t;
    V1__HealthCheck hc = V1__HEALTH_CHECK__INIT;
    hc.type = V1__HEALTH_CHECK__HEALTH_CHECK_TYPE__HEARTBEAT;
    hc.heartbeat = &hb;
    V1__Instance in = V1__INSTANCE__INIT;
    in.id = &s_id;
    in.namespace_ = &s_ns;
    in.service = &s_svc;
    in.host = &s_host;
    in.port = &port;
    in.enable_health_check = &en;
    if (ttl)
        in.health_check = &hc;
    int code = call(M_REGISTER, &in.base, NULL);
    cr_assert_eq(code, 200000, "register %s: code %d", id, code);
}

static int beat(const char *id)
{
    Google__Protobuf__StringValue s_id = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    s_id.value = (char *)id;
    V1__Instance in = V1__INSTANCE__INIT;
    in.id = &s_id;
    return call(M_HEARTBEAT, &in.base, NULL);
}

static void beat_all(const char *const *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        beat(ids[i]);
}

/* Health of every instance of svc as a Discover answer shows it:
 * out[i] = 1 healthy, 0 unhealthy, -1 absent. */
static void health_of(const char *svc, const char *const *ids, size_t n, int *out)
{
    Google__Protobuf__StringValue s_ns = GOOGLE__PROTOBUF__STRING_VALUE__INIT, s_name = s_ns;
    s_ns.value = NS;
    s_name.value = (char *)svc;
    V1__Service s = V1__SERVICE__INIT;
    s.namespace_ = &s_ns;
    s.name = &s_name;
    V1__DiscoverRequest dr = V1__DISCOVER_REQUEST__INIT;
    dr.type = V1__DISCOVER_REQUEST__DISCOVER_REQUEST_TYPE__INSTANCE;
    dr.service = &s;
    uint8_t buf[512];
    size_t len = v1__discover_request__pack(&dr, buf);
    cr_assert_eq(gtc_stream_send(dsc, buf, len, 5000), 0, "Discover send");
    uint8_t *m = NULL;
    size_t mlen = 0;
    cr_assert_eq(gtc_stream_recv(dsc, &m, &mlen, 5000), 0, "Discover answer");
    V1__DiscoverResponse *r = v1__discover_response__unpack(NULL, mlen, m);
    free(m);
    cr_assert(r, "Discover answer decodes");
    for (size_t i = 0; i < n; i++) {
        out[i] = -1;
        for (size_t k = 0; k < r->n_instances; k++) {
            const V1__Instance *in = r->instances[k];
            if (in->id && in->id->value && strcmp(in->id->value, ids[i]) == 0)
                out[i] = in->healthy && in->healthy->value ? 1 : 0;
        }
    }
    v1__discover_response__free_unpacked(r, NULL);
}

static int health1(const char *svc, const char *id)
{
    int h;
    health_of(svc, &id, 1, &h);
    return h;
}

static void start(const char *extra)
{
    lstest_start(&T, extra, 60000);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", T.grpc_port);
    ch = gtc_channel_open(target);
    cr_assert(ch, "channel");
    dsc = gtc_stream_open(ch, M_DISCOVER, 300000);
    cr_assert(dsc, "Discover stream");
}

static void stop(void)
{
    gtc_stream_cancel(dsc);
    gtc_stream_close(dsc);
    gtc_channel_close(ch);
    cr_assert_eq(lstest_stop(&T, 20000), 0, "lodestar exit status");
    lstest_cleanup(&T);
}

/* Wait (beating `beating` every 250 ms) until every id of `svc` listed is
 * visible as registered. */
static void wait_visible(const char *svc, const char *const *ids, size_t n)
{
    long long end = lstest_now_ms() + 10000;
    int h[16];
    for (;;) {
        health_of(svc, ids, n, h);
        bool all = true;
        for (size_t i = 0; i < n; i++)
            all = all && h[i] >= 0;
        if (all)
            return;
        cr_assert_lt(lstest_now_ms(), end, "registered instances did not show up in 10 s");
        lstest_sleep_ms(50);
    }
}

/* One IPC request to the health worker's socket, blocking. */
static Lodestar__Envelope *health_ipc(const Lodestar__Envelope *req, int timeout_ms)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int pl = snprintf(a.sun_path, sizeof a.sun_path, "%.90s/health.sock", T.runtime);
    cr_assert(pl > 0 && (size_t)pl < sizeof a.sun_path, "socket path fits");
    const char *path = a.sun_path;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect %s: %s", path, strerror(errno));
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t *buf;
    size_t len;
    cr_assert_eq(ipc_frame_encode(IPC_KIND_REQUEST, 7, req, IPC_DEFAULT_MAX_FRAME, &buf, &len), 0);
    cr_assert_eq(write(fd, buf, len), (ssize_t)len, "request written");
    free(buf);
    uint8_t hdr[IPC_HEADER_SIZE];
    size_t got = 0;
    while (got < IPC_HEADER_SIZE) {
        ssize_t n = read(fd, hdr + got, IPC_HEADER_SIZE - got);
        cr_assert_gt(n, 0, "health worker answer header (%s)", n < 0 ? strerror(errno) : "EOF");
        got += (size_t)n;
    }
    ipc_header_t h;
    char err[128];
    cr_assert_eq(ipc_header_decode(hdr, IPC_DEFAULT_MAX_FRAME, &h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h.request_id, 7, "the answer to our request");
    uint8_t *body = malloc(h.length ? h.length : 1);
    got = 0;
    while (got < h.length) {
        ssize_t n = read(fd, body + got, h.length - got);
        cr_assert_gt(n, 0, "health worker answer body");
        got += (size_t)n;
    }
    close(fd);
    Lodestar__Envelope *env = lodestar__envelope__unpack(NULL, h.length, body);
    free(body);
    cr_assert(env, "the answer decodes");
    return env;
}

/* -------------------------------------------------------------- tests */

Test(health, beat_silence_and_recovery, .timeout = 180)
{
    start(HC_FAST);
    static const char *const ids[] = {"hc-beating", "hc-silent", "hc-never"};
    reg("hc-it", ids[0], "10.2.0.1", 1);
    reg("hc-it", ids[1], "10.2.0.2", 1);
    reg("hc-it", "hc-no-check", "10.2.0.4", 0);
    long long t_reg = lstest_now_ms();
    reg("hc-it", ids[2], "10.2.0.3", 1);
    wait_visible("hc-it", ids, 3);

    /* beat -> healthy (registered healthy; the beat is accepted) */
    cr_assert_eq(beat(ids[0]), 200000, "beat of a heartbeat-checked instance");
    cr_assert_eq(beat(ids[1]), 200000, "beat of a heartbeat-checked instance");
    cr_assert_eq(beat("hc-no-check"), 400141, "beat of an instance without a heartbeat check");
    cr_assert_eq(beat("no-such-instance"), 400303, "beat of an unknown instance");

    /* the health worker's own answers, per id, over IPC */
    char *bids[] = {(char *)ids[0], "hc-no-check", "no-such-instance"};
    Lodestar__HeartbeatBatch hb = LODESTAR__HEARTBEAT_BATCH__INIT;
    hb.n_instance_ids = 3;
    hb.instance_ids = bids;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_HEARTBEAT_BATCH;
    env.heartbeat_batch = &hb;
    Lodestar__Envelope *ack = health_ipc(&env, 5000);
    cr_assert_eq(ack->body_case, LODESTAR__ENVELOPE__BODY_HEARTBEAT_ACK, "a HeartbeatAck, got %s",
                 ipc_type_name(ack->body_case));
    cr_assert_eq(ack->heartbeat_ack->n_codes, 3, "one code per id");
    cr_assert_eq(ack->heartbeat_ack->codes[0], 200000);
    cr_assert_eq(ack->heartbeat_ack->codes[1], 400141, "HeartbeatOnDisabledIns");
    cr_assert_eq(ack->heartbeat_ack->codes[2], 400303, "NotFoundInstance");
    lodestar__envelope__free_unpacked(ack, NULL);

    /* silence of hc-silent; hc-beating keeps beating */
    long long t_last = lstest_now_ms();
    beat(ids[1]);
    bool never_down = false, silent_down = false;
    long long t_never = 0, t_silent = 0;
    while (!(never_down && silent_down)) {
        long long now = lstest_now_ms();
        cr_assert_lt(now - t_last, 8000, "the silent instances were not marked unhealthy in 8 s");
        beat(ids[0]);
        int h[3];
        health_of("hc-it", ids, 3, h);
        cr_assert_eq(h[0], 1, "a beating instance stays healthy (at +%lld ms)", now - t_last);
        if (!h[1] && !silent_down) {
            silent_down = true;
            t_silent = now;
        }
        if (!h[2] && !never_down) {
            never_down = true;
            t_never = now;
        }
        lstest_sleep_ms(100);
    }
    cr_assert_geq(t_silent - t_last, 2900, "not unhealthy before 3 x TTL (after %lld ms)", t_silent - t_last);
    cr_assert_leq(t_silent - t_last, 4000 + 150, "unhealthy within 3 x TTL + 1 s (after %lld ms)", t_silent - t_last);
    cr_assert_geq(t_never - t_reg, 2900, "an instance that never beat: not before 3 x TTL after registering");
    cr_assert(lstest_file_contains(T.log, "instance hc-silent of default/hc-it: unhealthy, no beat for"),
              "the verdict is logged with its reason");

    /* a beat brings it back */
    long long t_beat = lstest_now_ms();
    cr_assert_eq(beat(ids[1]), 200000, "beat after the silence");
    for (;;) {
        if (health1("hc-it", ids[1]) == 1)
            break;
        cr_assert_lt(lstest_now_ms() - t_beat, 1500, "healthy again soon after the beat");
        lstest_sleep_ms(20);
    }
    cr_assert(lstest_file_contains(T.log, "instance hc-silent of default/hc-it: healthy again"), "logged");
    stop();
}

Test(health, kill9_of_the_health_worker_marks_nothing_falsely, .timeout = 180)
{
    start(HC_FAST);
    static const char *const beating[] = {"k-0", "k-1", "k-2", "k-3"};
    for (size_t i = 0; i < 4; i++) {
        char host[32];
        snprintf(host, sizeof host, "10.3.0.%zu", i + 1);
        reg("hc-kill", beating[i], host, 1);
    }
    reg("hc-kill", "k-silent", "10.3.0.9", 1);
    static const char *const all[] = {"k-0", "k-1", "k-2", "k-3", "k-silent"};
    wait_visible("hc-kill", all, 5);
    for (int i = 0; i < 8; i++) {
        beat_all(beating, 4);
        lstest_sleep_ms(250);
    }
    beat("k-silent"); /* its last beat: ~2 s before the kill, so it would expire ~1 s after it */
    for (int i = 0; i < 8; i++) {
        beat_all(beating, 4);
        lstest_sleep_ms(250);
    }
    pid_t old = lstest_pid(&T, "health");
    cr_assert_gt(old, 0, "health worker pid");
    long long t_kill = lstest_now_ms();
    cr_assert_eq(kill(old, SIGKILL), 0, "kill -9 the health worker");
    long long t_silent_down = 0;
    while (lstest_now_ms() - t_kill < 7000) {
        beat_all(beating, 4);
        int h[5];
        health_of("hc-kill", all, 5, h);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(h[i], 1, "%s beats and must never be marked unhealthy (at +%lld ms after the kill)", all[i],
                         lstest_now_ms() - t_kill);
        if (h[4] == 0 && !t_silent_down)
            t_silent_down = lstest_now_ms();
        lstest_sleep_ms(200);
    }
    cr_assert(lstest_pid(&T, "health") != old, "the health worker was restarted");
    cr_assert_gt(t_silent_down, 0, "the silent instance is marked in the end");
    cr_assert_geq(t_silent_down - t_kill, 3000,
                  "not before one full expiry window after the restart (marked %lld ms after the kill)",
                  t_silent_down - t_kill);
    stop();
}

Test(health, protect_threshold_and_cleanup, .timeout = 180)
{
    start(HC_FAST "  protect_threshold_percent: 50\n"
                  "  cleanup: {enabled: true, unhealthy_for_s: 2}\n");
    static const char *const ids[] = {"p-0", "p-1", "p-2", "p-3"};
    for (size_t i = 0; i < 4; i++) {
        char host[32];
        snprintf(host, sizeof host, "10.4.0.%zu", i + 1);
        reg("hc-protect", ids[i], host, 1);
    }
    wait_visible("hc-protect", ids, 4);
    /* all four go silent: only half may be marked unhealthy; the clean-up
     * job then deregisters those two (unhealthy for 2 s) */
    long long t0 = lstest_now_ms();
    int h[4], down = 0, gone = 0, most_down = 0;
    while (gone < 2) {
        cr_assert_lt(lstest_now_ms() - t0, 12000, "not marked and cleaned up in 12 s (%d down, %d gone)", down, gone);
        health_of("hc-protect", ids, 4, h);
        down = gone = 0;
        for (int i = 0; i < 4; i++) {
            down += h[i] == 0;
            gone += h[i] == -1;
        }
        cr_assert_leq(down * 2, 4 - gone, "at most 50 %% of the service's %d instances unhealthy, got %d", 4 - gone,
                      down);
        if (down > most_down)
            most_down = down;
        lstest_sleep_ms(100);
    }
    cr_assert_eq(most_down, 2, "the threshold's worth was marked (%d)", most_down);
    cr_assert(lstest_file_contains(T.log, "deregistered by the clean-up job"), "the deletion is logged");
    /* then the threshold lets the other two be marked (they are half of two) */
    long long t2 = lstest_now_ms();
    for (;;) {
        health_of("hc-protect", ids, 4, h);
        int left_down = 0, left = 0;
        for (int i = 0; i < 4; i++) {
            left += h[i] >= 0;
            left_down += h[i] == 0;
        }
        cr_assert_eq(left, 2, "two instances remain until they are cleaned up too");
        if (left_down == 1)
            break;
        cr_assert_lt(lstest_now_ms() - t2, 3000, "one of the remaining two is marked");
        lstest_sleep_ms(100);
    }
    stop();
}

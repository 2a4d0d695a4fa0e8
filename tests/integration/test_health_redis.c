/*
 * test_health_redis.c: health checking with the Redis heartbeat store, end
 * to end, with a real redis-server started by the test
 * (tests/support/redistest.c):
 *
 *  - one node: beat -> healthy, silence -> unhealthy, beat -> healthy
 *    again through Redis; the beats survive a kill -9 of the health worker;
 *    Redis stopped -> nothing is marked unhealthy however long the silence;
 *    Redis back (empty) -> normal service: the silent instance is marked,
 *    but only one full expiry window after Redis returned;
 *  - two Lodestar nodes on one PostgreSQL (tests/support/pgtest.h) and one
 *    Redis: beats that reach one node keep instances checked by the other
 *    healthy; each instance is checked by exactly one node (the consistent
 *    hash of hc_ring.h over the configured node ids decides which, and the
 *    verdict lines in each node's log show who did it); when a node stops,
 *    the other takes over its share.
 *
 * TTLs are 1 s, the wheel ticks every 50 ms, nodes announce every 500 ms.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_client.h"
#include "hc_ring.h"
#include "lstest.h"
#include "pgtest.h"
#include "polaris_heartbeat.pb-c.h"
#include "polaris_request.pb-c.h"
#include "polaris_response.pb-c.h"
#include "redistest.h"

#define M_REGISTER "/v1.PolarisGRPC/RegisterInstance"
#define M_HEARTBEAT "/v1.PolarisGRPC/Heartbeat"
#define M_DISCOVER "/v1.PolarisGRPC/Discover"
#define M_BATCH_GET "/v1.PolarisHeartbeatGRPC/BatchGetHeartbeat"
#define NS "default"

/* One Lodestar node as a client sees it. */
typedef struct node {
    lstest_t t;
    gtc_channel_t *ch;
    gtc_stream_t *dsc;
} node_t;

static redistest_t R;

/* ------------------------------------------------------------ helpers */

static int call(node_t *n, const char *method, const ProtobufCMessage *req)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(req, buf);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int status = -1;
    int rc = gtc_channel_call(n->ch, method, buf, len, 5000, &resp, &rlen, &status, NULL);
    free(buf);
    if (rc < 0 || status != 0) {
        free(resp);
        return -1;
    }
    V1__Response *r = v1__response__unpack(NULL, rlen, resp);
    free(resp);
    int code = r && r->code ? (int)r->code->value : -1;
    if (r)
        v1__response__free_unpacked(r, NULL);
    return code;
}

static void reg(node_t *n, const char *svc, const char *id, const char *host)
{
    Google__Protobuf__StringValue s_id = GOOGLE__PROTOBUF__STRING_VALUE__INIT, s_ns = s_id, s_svc = s_id,
                                  s_host = s_id;
    s_id.value = (char *)id;
    s_ns.value = NS;
    s_svc.value = (char *)svc;
    s_host.value = (char *)host;
    Google__Protobuf__UInt32Value port = GOOGLE__PROTOBUF__UINT32_VALUE__INIT, ttl = port;
    port.value = 8080;
    ttl.value = 1;
    Google__Protobuf__BoolValue en = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    en.value = true;
    V1__HeartbeatHealthCheck hb = V1__HEARTBEAT_HEALTH_CHECK__INIT;
    hb.ttl = &ttl;
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
    in.health_check = &hc;
    int code = call(n, M_REGISTER, &in.base);
    cr_assert_eq(code, 200000, "register %s: code %d", id, code);
}

static int beat(node_t *n, const char *id)
{
    Google__Protobuf__StringValue s_id = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    s_id.value = (char *)id;
    V1__Instance in = V1__INSTANCE__INIT;
    in.id = &s_id;
    return call(n, M_HEARTBEAT, &in.base);
}

/* Beat every id of ids[0..cnt) except those in skip (NULL-terminated). */
static void beat_except(node_t *n, const char *const *ids, size_t cnt, const char *const *skip)
{
    for (size_t i = 0; i < cnt; i++) {
        bool skipped = false;
        for (const char *const *s = skip; s && *s; s++)
            skipped = skipped || strcmp(*s, ids[i]) == 0;
        if (!skipped)
            beat(n, ids[i]);
    }
}

/* out[i]: 1 healthy, 0 unhealthy, -1 absent, as n's Discover shows. */
static void health_of(node_t *n, const char *svc, const char *const *ids, size_t cnt, int *out)
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
    cr_assert_eq(gtc_stream_send(n->dsc, buf, len, 5000), 0, "Discover send");
    uint8_t *m = NULL;
    size_t mlen = 0;
    cr_assert_eq(gtc_stream_recv(n->dsc, &m, &mlen, 5000), 0, "Discover answer");
    V1__DiscoverResponse *r = v1__discover_response__unpack(NULL, mlen, m);
    free(m);
    cr_assert(r, "Discover answer decodes");
    for (size_t i = 0; i < cnt; i++) {
        out[i] = -1;
        for (size_t k = 0; k < r->n_instances; k++) {
            const V1__Instance *in = r->instances[k];
            if (in->id && in->id->value && strcmp(in->id->value, ids[i]) == 0)
                out[i] = in->healthy && in->healthy->value ? 1 : 0;
        }
    }
    v1__discover_response__free_unpacked(r, NULL);
}

static int health1(node_t *n, const char *svc, const char *id)
{
    int h;
    health_of(n, svc, &id, 1, &h);
    return h;
}

static void wait_visible(node_t *n, const char *svc, const char *const *ids, size_t cnt)
{
    long long end = lstest_now_ms() + 10000;
    int h[32];
    for (;;) {
        health_of(n, svc, ids, cnt, h);
        bool all = true;
        for (size_t i = 0; i < cnt; i++)
            all = all && h[i] >= 0;
        if (all)
            return;
        cr_assert_lt(lstest_now_ms(), end, "registered instances did not show up on node %s in 10 s", n->t.dir);
        lstest_sleep_ms(50);
    }
}

static void node_start(node_t *n, const char *node_id, const char *dsn)
{
    char extra[1200];
    snprintf(extra, sizeof extra,
             "healthcheck:\n"
             "  store: redis\n"
             "  redis: {address: \"%s\", key_prefix: \"it:\", timeout_ms: 500}\n"
             "  slot_num: 100\n"
             "  min_check_interval_ms: 100\n"
             "  max_check_interval_ms: 5000\n"
             "  cluster: {node_id: %s, announce_ttl_ms: 1500}\n",
             R.address, node_id);
    if (dsn)
        snprintf(n->t.dsn, sizeof n->t.dsn, "%s", dsn);
    lstest_start(&n->t, extra, 60000);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", n->t.grpc_port);
    n->ch = gtc_channel_open(target);
    cr_assert(n->ch, "channel");
    n->dsc = gtc_stream_open(n->ch, M_DISCOVER, 300000);
    cr_assert(n->dsc, "Discover stream");
}

static void node_stop(node_t *n)
{
    if (!n->ch)
        return;
    gtc_stream_cancel(n->dsc);
    gtc_stream_close(n->dsc);
    gtc_channel_close(n->ch);
    n->ch = NULL;
    cr_assert_eq(lstest_stop(&n->t, 20000), 0, "lodestar exit status");
    lstest_cleanup(&n->t);
}

static void redis_up(void)
{
    char err[1024];
    cr_assert_eq(redistest_start(&R, err, sizeof err), 0, "redis-server: %s", err);
}

/* Does node n's log hold a verdict line for id? */
static bool logged_unhealthy(const node_t *n, const char *id)
{
    char needle[128];
    snprintf(needle, sizeof needle, "instance %s of default/", id);
    if (!lstest_file_contains(n->t.log, needle))
        return false;
    snprintf(needle, sizeof needle, "instance %s of default/hc-redis: unhealthy", id);
    return lstest_file_contains(n->t.log, needle);
}

/* ---------------------------------------------------------- one node */

Test(health_redis, outage_and_restart, .timeout = 240)
{
    redis_up();
    node_t n = {0};
    node_start(&n, "solo", NULL);
    static const char *const ids[] = {"r-0", "r-1", "r-2", "r-quiet"};
    for (size_t i = 0; i < 4; i++) {
        char host[32];
        snprintf(host, sizeof host, "10.5.0.%zu", i + 1);
        reg(&n, "hc-redis", ids[i], host);
    }
    wait_visible(&n, "hc-redis", ids, 4);

    /* beat -> stored in Redis */
    cr_assert_eq(beat(&n, "r-0"), 200000, "a beat goes to Redis");
    redisContext *c = redistest_connect(&R);
    cr_assert(c, "redis connection");
    redisReply *rep = redisCommand(c, "HGET it:hb r-0");
    cr_assert(rep && rep->type == REDIS_REPLY_STRING, "the beat is in the it:hb hash");
    cr_assert_gt(strtoll(rep->str, NULL, 10), 1600000000000LL, "as unix milliseconds");
    freeReplyObject(rep);
    redisFree(c);

    /* silence -> unhealthy; beat -> healthy again */
    long long t_last = lstest_now_ms();
    for (;;) {
        beat_except(&n, ids, 3, (const char *const[]){"r-2", NULL});
        int h = health1(&n, "hc-redis", "r-2");
        if (h == 0)
            break;
        cr_assert_lt(lstest_now_ms() - t_last, 4000 + 1000, "r-2 unhealthy within 3 x TTL + 1 s (+ the start window)");
        lstest_sleep_ms(100);
    }
    cr_assert_eq(beat(&n, "r-2"), 200000, "r-2 beats again");
    long long t_back = lstest_now_ms();
    while (health1(&n, "hc-redis", "r-2") != 1) {
        cr_assert_lt(lstest_now_ms() - t_back, 1500, "healthy again after a beat");
        lstest_sleep_ms(20);
    }

    /* kill -9 of the health worker: the beats are still there afterwards */
    pid_t old = lstest_pid(&n.t, "health");
    cr_assert_eq(kill(old, SIGKILL), 0, "kill -9 the health worker");
    long long t_kill = lstest_now_ms();
    while (lstest_pid(&n.t, "health") == old || !lstest_wait_ready(&n.t, 100)) {
        beat_except(&n, ids, 3, NULL);
        cr_assert_lt(lstest_now_ms() - t_kill, 10000, "the health worker came back");
        lstest_sleep_ms(100);
    }
    char *qids[] = {"r-quiet"};
    V1__GetHeartbeatsRequest q = V1__GET_HEARTBEATS_REQUEST__INIT;
    q.n_instanceids = 1;
    q.instanceids = qids;
    uint8_t qb[128];
    size_t ql = v1__get_heartbeats_request__pack(&q, qb);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int status = -1;
    cr_assert_eq(gtc_channel_call(n.ch, M_BATCH_GET, qb, ql, 5000, &resp, &rlen, &status, NULL), 0);
    cr_assert_eq(status, 0, "BatchGetHeartbeat status");
    V1__GetHeartbeatsResponse *g = v1__get_heartbeats_response__unpack(NULL, rlen, resp);
    free(resp);
    cr_assert(g && g->n_records == 1, "one record");
    cr_assert_not(g->records[0]->exist, "r-quiet never beat");
    v1__get_heartbeats_response__free_unpacked(g, NULL);
    qids[0] = "r-0";
    ql = v1__get_heartbeats_request__pack(&q, qb);
    cr_assert_eq(gtc_channel_call(n.ch, M_BATCH_GET, qb, ql, 5000, &resp, &rlen, &status, NULL), 0);
    g = v1__get_heartbeats_response__unpack(NULL, rlen, resp);
    free(resp);
    cr_assert(g && g->n_records == 1 && g->records[0]->exist, "the beats survived the health worker's restart");
    v1__get_heartbeats_response__free_unpacked(g, NULL);

    /* keep r-0..r-2 beating for a while so everything is settled and healthy */
    int h[4];
    for (int i = 0; i < 15; i++) {
        beat_except(&n, ids, 3, NULL);
        lstest_sleep_ms(200);
    }
    health_of(&n, "hc-redis", ids, 3, h);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(h[i], 1, "%s healthy before the outage", ids[i]);

    /* Redis stopped: r-1 goes silent too; nothing is marked for 5 s */
    cr_assert_eq(redistest_stop(&R), 0, "stop redis");
    long long t_stop = lstest_now_ms();
    while (lstest_now_ms() - t_stop < 5000) {
        beat_except(&n, ids, 3, (const char *const[]){"r-1", NULL});
        health_of(&n, "hc-redis", ids, 3, h);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(h[i], 1, "%s marked unhealthy while Redis is down (+%lld ms)", ids[i],
                         lstest_now_ms() - t_stop);
        lstest_sleep_ms(200);
    }
    cr_assert(lstest_file_contains(n.t.log, "heartbeat store (Redis"), "the outage is logged");
    cr_assert(lstest_file_contains(n.t.log, "UNREACHABLE"), "loudly");
    cr_assert_eq(beat(&n, "r-0"), 500007, "a beat that cannot be stored: HeartbeatException");

    /* Redis back, empty: beating instances stay healthy, r-1 is marked one
     * expiry window after the health worker saw Redis again */
    char err[1024];
    cr_assert_eq(redistest_restart(&R, err, sizeof err), 0, "redis restart: %s", err);
    long long t_up = lstest_now_ms();
    long long t_r1 = 0;
    while (!t_r1) {
        cr_assert_lt(lstest_now_ms() - t_up, 9000, "r-1 was not marked after Redis came back");
        beat_except(&n, ids, 3, (const char *const[]){"r-1", NULL});
        health_of(&n, "hc-redis", ids, 3, h);
        cr_assert_eq(h[0], 1, "r-0 beats: healthy");
        cr_assert_eq(h[2], 1, "r-2 beats: healthy");
        if (h[1] == 0)
            t_r1 = lstest_now_ms();
        lstest_sleep_ms(100);
    }
    cr_assert_geq(t_r1 - t_up, 3000, "nothing marked before one expiry window after Redis returned (%lld ms)",
                  t_r1 - t_up);
    cr_assert(lstest_file_contains(n.t.log, "reachable again"), "the return is logged");
    cr_assert_eq(beat(&n, "r-0"), 200000, "beats are stored again");
    node_stop(&n);
    redistest_cleanup(&R);
}

/* ----------------------------------------------------------- two nodes */

Test(health_redis, two_nodes_share_beats_and_split_checks, .timeout = 300)
{
    redis_up();
    pgtest_t pg = {0};
    char err[1024];
    cr_assert_eq(pgtest_start(&pg, err, sizeof err), 0, "PostgreSQL: %s", err);
    node_t a = {0}, b = {0};
    node_start(&a, "node-a", pg.dsn);
    node_start(&b, "node-b", pg.dsn);

    /* who checks what: the ring every node computes */
    static const char *const all[] = {"c-00", "c-01", "c-02", "c-03", "c-04", "c-05",
                                      "c-06", "c-07", "c-08", "c-09", "c-10", "c-11"};
    enum { N = 12 };
    const char *members[] = {"node-a", "node-b"};
    hc_ring_t ring = {0};
    cr_assert_eq(hc_ring_build(&ring, members, 2), 0);
    const char *of_a[N], *of_b[N];
    size_t na = 0, nb = 0;
    for (size_t i = 0; i < N; i++) {
        if (strcmp(hc_ring_owner(&ring, all[i]), "node-a") == 0)
            of_a[na++] = all[i];
        else
            of_b[nb++] = all[i];
    }
    hc_ring_free(&ring);
    cr_assert(na >= 2 && nb >= 2, "both nodes own at least two of the instances (%zu / %zu)", na, nb);

    for (size_t i = 0; i < N; i++) {
        char host[32];
        snprintf(host, sizeof host, "10.6.0.%zu", i + 1);
        reg(&a, "hc-redis", all[i], host);
    }
    wait_visible(&a, "hc-redis", all, N);
    wait_visible(&b, "hc-redis", all, N); /* through the shared PostgreSQL */

    /* beats reach node B only; node A's share stays healthy: it reads them */
    int h[N];
    long long t0 = lstest_now_ms();
    while (lstest_now_ms() - t0 < 5000) {
        beat_except(&b, all, N, NULL);
        health_of(&a, "hc-redis", all, N, h);
        for (size_t i = 0; i < N; i++)
            cr_assert_eq(h[i], 1, "%s beats through node B only and stays healthy (+%lld ms)", all[i],
                         lstest_now_ms() - t0);
        lstest_sleep_ms(200);
    }

    /* one silent instance of each share: each is marked by its owner */
    const char *sa = of_a[0], *sb = of_b[0];
    long long t1 = lstest_now_ms();
    for (;;) {
        beat_except(&b, all, N, (const char *const[]){sa, sb, NULL});
        int hs[2];
        const char *both[] = {sa, sb};
        health_of(&b, "hc-redis", both, 2, hs);
        if (hs[0] == 0 && hs[1] == 0)
            break;
        cr_assert_lt(lstest_now_ms() - t1, 6000, "%s and %s were not both marked in 6 s", sa, sb);
        lstest_sleep_ms(100);
    }
    cr_assert(logged_unhealthy(&a, sa), "node A marked %s, its own", sa);
    cr_assert_not(logged_unhealthy(&b, sa), "node B did not check %s", sa);
    cr_assert(logged_unhealthy(&b, sb), "node B marked %s, its own", sb);
    cr_assert_not(logged_unhealthy(&a, sb), "node A did not check %s", sb);

    /* node B stops: node A takes over B's share */
    node_stop(&b);
    const char *sb2 = of_b[1];
    long long t2 = lstest_now_ms();
    for (;;) {
        beat_except(&a, all, N, (const char *const[]){sa, sb, sb2, NULL});
        int hs;
        health_of(&a, "hc-redis", &sb2, 1, &hs);
        if (hs == 0)
            break;
        cr_assert_lt(lstest_now_ms() - t2, 3000 + 1000 + 1500, "%s (B's share) was not marked by node A in time", sb2);
        lstest_sleep_ms(100);
    }
    cr_assert(logged_unhealthy(&a, sb2), "node A marked %s after node B left", sb2);
    /* the rest of B's share, beating through A, stays healthy */
    health_of(&a, "hc-redis", of_b, nb, h);
    for (size_t i = 2; i < nb; i++)
        cr_assert_eq(h[i], 1, "%s beats and stays healthy after the takeover", of_b[i]);
    /* and a beat brings B's silent instance back, now through A */
    cr_assert_eq(beat(&a, sb), 200000, "beat of %s through node A", sb);
    long long t3 = lstest_now_ms();
    while (health1(&a, "hc-redis", sb) != 1) {
        cr_assert_lt(lstest_now_ms() - t3, 1500, "%s healthy again", sb);
        lstest_sleep_ms(20);
    }
    node_stop(&a);
    pgtest_stop(&pg);
    redistest_cleanup(&R);
}

/*
 * heartbeat_api.c: v1.PolarisGRPC Heartbeat and v1.PolarisHeartbeatGRPC
 * (BatchHeartbeat, BatchGetHeartbeat, BatchDelHeartbeat); see pg.h for the
 * shared rules.
 *
 * The relay. Every beat the gateway accepts becomes an instance id handed
 * to the relay with a callback. Beats queued during one pass of the event
 * loop (gRPC completions arrive in bursts) leave as one HeartbeatBatch
 * request to the health worker, at most PG_RELAY_MAX ids each; the
 * HeartbeatAck's codes go back to the callbacks in order. When the health
 * worker is not enabled every beat gets 400140 HealthCheckNotOpen; when it
 * fails or does not answer, 500007 HeartbeatException.
 *
 * Heartbeat resolves the instance in the replica first, by id or, without
 * one, by the Polaris id of namespace, service, vpc_id, host and port:
 * unknown -> 400303 NotFoundInstance, health check not enabled -> 400141
 * HeartbeatOnDisabledIns, otherwise relayed and answered after the ack.
 *
 * BatchHeartbeat answers each HeartbeatsRequest with one (empty)
 * HeartbeatsResponse once all its beats were acknowledged, in request
 * order; beats for unknown instances or instances without health check are
 * dropped (logged at debug), as the Polaris server only logs them. A stream
 * with many requests waiting stops being read until they are answered.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "log.h"
#include "naming.pb-c.h"
#include "naming_id.h"
#include "naming_replica.h"
#include "pg.h"
#include "common/polaris_discover.h"
#include "polaris_heartbeat.pb-c.h"

#define M_HEARTBEAT "/v1.PolarisGRPC/Heartbeat"
#define M_BATCH_HEARTBEAT "/v1.PolarisHeartbeatGRPC/BatchHeartbeat"
#define M_BATCH_GET "/v1.PolarisHeartbeatGRPC/BatchGetHeartbeat"
#define M_BATCH_DEL "/v1.PolarisHeartbeatGRPC/BatchDelHeartbeat"

#define PG_RELAY_MAX 1024      /* ids per HeartbeatBatch */
#define PG_STREAM_MAX_WAITING 32 /* BatchHeartbeat requests waiting before reading pauses */


/* ------------------------------------------------------------- relay */

typedef void (*beat_cb)(uint32_t code, void *arg);

typedef struct beat {
    char *id;
    beat_cb cb;
    void *arg;
} beat_t;

typedef struct relay_batch {
    struct pg_relay *relay;
    beat_t *beats;
    size_t n;
} relay_batch_t;

struct pg_relay {
    pg_state_t *st;
    struct event *flush_ev;
    beat_t *pending;
    size_t n, cap;
};

static int64_t now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void batch_finish(relay_batch_t *b, const uint32_t *codes, size_t n_codes, uint32_t fail_code)
{
    for (size_t i = 0; i < b->n; i++) {
        uint32_t code = codes && i < n_codes ? codes[i] : fail_code;
        b->beats[i].cb(code, b->beats[i].arg);
        free(b->beats[i].id);
    }
    free(b->beats);
    free(b);
}

static void on_batch_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    relay_batch_t *b = arg;
    if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_HEARTBEAT_ACK) {
        const Lodestar__HeartbeatAck *ack = reply->heartbeat_ack;
        if (ack->n_codes != b->n)
            log_warn("heartbeat relay: %zu codes for %zu beats", ack->n_codes, b->n);
        batch_finish(b, ack->codes, ack->n_codes, V1__CODE__HeartbeatException);
        return;
    }
    char why[400];
    pg_worker_failure("health", status, reply, b->relay ? gw_request_timeout_ms(b->relay->st->gw) : 0, why,
                      sizeof why);
    log_warn("heartbeat relay: %zu beats not acknowledged: %s", b->n, why);
    batch_finish(b, NULL, 0, status == -ENOENT ? V1__CODE__HealthCheckNotOpen : V1__CODE__HeartbeatException);
}

/* Send beats [0, n) of the queue as one HeartbeatBatch; they leave the
 * queue. Failures are delivered here (this runs from the loop). */
static void relay_send(struct pg_relay *rl, beat_t *beats, size_t n)
{
    relay_batch_t *b = calloc(1, sizeof *b);
    char **ids = calloc(n, sizeof *ids);
    beat_t *own = malloc(n * sizeof *own);
    if (!b || !ids || !own) {
        free(b);
        free(ids);
        free(own);
        for (size_t i = 0; i < n; i++) {
            beats[i].cb(V1__CODE__HeartbeatException, beats[i].arg);
            free(beats[i].id);
        }
        return;
    }
    memcpy(own, beats, n * sizeof *own);
    b->relay = rl;
    b->beats = own;
    b->n = n;
    for (size_t i = 0; i < n; i++)
        ids[i] = own[i].id;
    Lodestar__HeartbeatBatch hb = LODESTAR__HEARTBEAT_BATCH__INIT;
    hb.n_instance_ids = n;
    hb.instance_ids = ids;
    hb.received_unix_ms = (uint64_t)now_unix_ms();
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_HEARTBEAT_BATCH;
    env.heartbeat_batch = &hb;
    int rc = gw_request(rl->st->gw, "health", &env, on_batch_reply, b);
    free(ids);
    if (rc < 0)
        on_batch_reply(rc, NULL, b);
}

/* Everything queued in this loop pass leaves, PG_RELAY_MAX ids a batch. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct pg_relay *rl = arg;
    beat_t *q = rl->pending;
    size_t n = rl->n;
    rl->pending = NULL;
    rl->n = rl->cap = 0;
    for (size_t off = 0; off < n; off += PG_RELAY_MAX)
        relay_send(rl, q + off, n - off < PG_RELAY_MAX ? n - off : PG_RELAY_MAX);
    free(q);
}

/* Queue one beat; cb runs exactly once, always from the loop, never inside
 * this call. */
static int relay_beat(struct pg_relay *rl, const char *id, beat_cb cb, void *arg)
{
    if (rl->n == rl->cap) {
        size_t cap = rl->cap ? rl->cap * 2 : 16;
        beat_t *p = realloc(rl->pending, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        rl->pending = p;
        rl->cap = cap;
    }
    char *copy = strdup(id);
    if (!copy)
        return -ENOMEM;
    rl->pending[rl->n++] = (beat_t){.id = copy, .cb = cb, .arg = arg};
    if (rl->n == 1)
        event_active(rl->flush_ev, EV_TIMEOUT, 0); /* after the rest of this loop pass */
    return 0;
}

/* ------------------------------------------------------ resolution */

static bool health_enabled(const Lodestar__NamingInstance *ni)
{
    const V1__Instance *in = ni->instance;
    return in && in->enable_health_check && in->enable_health_check->value && in->health_check;
}

/* ---------------------------------------------------------- Heartbeat */

typedef struct hb_call {
    gs_call_t *call;
    V1__Instance *in;
    Google__Protobuf__StringValue idv; /* the resolved id, echoed */
    char id[NAMING_HEX_LEN + 1];
} hb_call_t;

static void hb_answer(hb_call_t *h, uint32_t code, const char *info)
{
    pg_reply_response(h->call, code, info, h->in, NULL);
    if (h->in->id == &h->idv)
        h->in->id = NULL; /* ours, not the decoder's */
    v1__instance__free_unpacked(h->in, NULL);
    free(h);
}

static void on_hb_acked(uint32_t code, void *arg)
{
    hb_answer(arg, code, NULL);
}

static void on_heartbeat(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    pg_state_t *st = arg;
    if (!st->gw) {
        pg_reply_response(call, V1__CODE__ExecuteException, "gateway stopping", NULL, NULL);
        return;
    }
    if (len == 0) {
        pg_reply_response(call, V1__CODE__EmptyRequest, NULL, NULL, NULL);
        return;
    }
    V1__Instance *in = v1__instance__unpack(NULL, len, req);
    if (!in) {
        char info[160];
        snprintf(info, sizeof info, "request decode failed: %zu bytes are not a v1.Instance", len);
        pg_reply_response(call, V1__CODE__ParseException, info, NULL, NULL);
        return;
    }
    hb_call_t *h = calloc(1, sizeof *h);
    if (!h) {
        pg_reply_response(call, V1__CODE__ExecuteException, "gateway out of memory", in, NULL);
        v1__instance__free_unpacked(in, NULL);
        return;
    }
    h->call = call;
    h->in = in;
    const char *id = NULL, *why = NULL;
    uint32_t bad = pd_beat_target(gw_replica(st->gw), in, h->id, &id, &why);
    if (id && id != h->id)
        snprintf(h->id, sizeof h->id, "%.*s", (int)NAMING_HEX_LEN, id);
    if (id && !in->id) {
        /* echo the id the beat resolved to, as Polaris does */
        google__protobuf__string_value__init(&h->idv);
        h->idv.value = h->id;
        in->id = &h->idv;
    }
    if (bad) {
        hb_answer(h, bad, bad == V1__CODE__ExecuteException ? why : NULL);
        return;
    }
    if (relay_beat(st->relay, id, on_hb_acked, h) < 0)
        hb_answer(h, V1__CODE__HeartbeatException, "gateway out of memory");
}

/* ---------------------------------------------------- BatchHeartbeat */

typedef struct bh_stream bh_stream_t;

typedef struct bh_item {
    bh_stream_t *s;
    size_t waiting; /* beats not yet acknowledged */
    struct bh_item *next;
} bh_item_t;

struct bh_stream {
    pg_stream_t ps; /* first; ps.call NULL once the call is over */
    bh_item_t *head, *tail;
    size_t n_items;
    bool paused;
    bool closing; /* half-closed or draining: finish once all is answered */
};

static void bh_free_if_over(bh_stream_t *s)
{
    if (s->ps.call || s->head)
        return;
    free(s);
}

/* Answer, in order, every request whose beats were all acknowledged. */
static void bh_flush(bh_stream_t *s)
{
    while (s->head && s->head->waiting == 0) {
        bh_item_t *it = s->head;
        s->head = it->next;
        if (!s->head)
            s->tail = NULL;
        s->n_items--;
        free(it);
        if (s->ps.call)
            gs_stream_send(s->ps.call, (const uint8_t *)"", 0); /* HeartbeatsResponse is empty */
    }
    if (!s->ps.call) {
        bh_free_if_over(s);
        return;
    }
    if (s->paused && s->n_items < PG_STREAM_MAX_WAITING / 2) {
        s->paused = false;
        gs_stream_resume(s->ps.call);
    }
    if (s->closing && !s->head)
        gs_stream_finish(s->ps.call, GS_OK, NULL);
}

static void on_bh_acked(uint32_t code, void *arg)
{
    bh_item_t *it = arg;
    bh_stream_t *s = it->s;
    if (code != V1__CODE__ExecuteSuccess)
        log_debug("BatchHeartbeat: a beat was answered %u", code);
    it->waiting--;
    if (it == s->head)
        bh_flush(s);
}

static void bh_message(gs_call_t *call, const uint8_t *msg, size_t len, void *arg)
{
    bh_stream_t *s = gs_call_user(call);
    if (!s || !s->ps.st->gw)
        return;
    V1__HeartbeatsRequest *req = v1__heartbeats_request__unpack(NULL, len, msg);
    if (!req) {
        char info[160];
        snprintf(info, sizeof info, "request decode failed: %zu bytes are not a v1.HeartbeatsRequest", len);
        gs_stream_finish(call, GS_INVALID_ARGUMENT, info);
        return;
    }
    bh_item_t *it = calloc(1, sizeof *it);
    if (!it) {
        v1__heartbeats_request__free_unpacked(req, NULL);
        gs_stream_finish(call, GS_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    it->s = s;
    if (s->tail)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
    s->n_items++;

    nr_t *r = gw_replica(s->ps.st->gw);
    bool filter = r && nr_ready(r);
    size_t relayed = 0, dropped = 0;
    /* count first, then relay: an ack can never arrive before the count is
     * complete (acks come from the loop, never inside relay_beat) */
    for (size_t i = 0; i < req->n_heartbeats; i++) {
        const V1__InstanceHeartbeat *b = req->heartbeats[i];
        char idbuf[NAMING_HEX_LEN + 1];
        const char *id = b->instanceid;
        if (!id || !*id) {
            if (!b->service || !*b->service || !b->namespace_ || !*b->namespace_ || !b->host || !*b->host ||
                b->port == 0 || b->port > 65535) {
                dropped++;
                continue;
            }
            naming_instance_id(b->namespace_, b->service, NULL, b->host, b->port, idbuf);
            id = idbuf;
        }
        if (filter) {
            const Lodestar__NamingInstance *ni = nr_instance(r, id, NULL);
            if (!ni || !health_enabled(ni)) {
                log_debug("BatchHeartbeat: beat for %s dropped: %s", id,
                          !ni ? "unknown instance" : "health check not enabled");
                dropped++;
                continue;
            }
        }
        it->waiting++;
        if (relay_beat(s->ps.st->relay, id, on_bh_acked, it) < 0) {
            it->waiting--;
            dropped++;
            continue;
        }
        relayed++;
    }
    if (dropped)
        log_debug("BatchHeartbeat: %zu of %zu beats relayed, %zu dropped", relayed, req->n_heartbeats, dropped);
    v1__heartbeats_request__free_unpacked(req, NULL);
    if (s->n_items >= PG_STREAM_MAX_WAITING && !s->paused) {
        s->paused = true;
        gs_stream_pause(call);
    }
    if (it->waiting == 0 && it == s->head)
        bh_flush(s);
}

static void bh_drain(pg_stream_t *ps)
{
    bh_stream_t *s = (bh_stream_t *)ps;
    if (!ps->call)
        return;
    s->closing = true;
    gs_stream_pause(ps->call);
    if (!s->head)
        gs_stream_finish(ps->call, GS_OK, NULL);
}

static void bh_half_close(gs_call_t *call, void *arg)
{
    bh_stream_t *s = gs_call_user(call);
    if (!s) {
        gs_stream_finish(call, GS_OK, NULL);
        return;
    }
    s->closing = true;
    if (!s->head)
        gs_stream_finish(call, GS_OK, NULL);
}

static void bh_open(gs_call_t *call, void *arg)
{
    pg_stream_open(arg, call, sizeof(bh_stream_t), bh_drain);
}

static void bh_done(gs_call_t *call, bool cancelled, void *arg)
{
    bh_stream_t *s = pg_stream_close(call);
    if (!s)
        return;
    bh_free_if_over(s); /* else the last ack frees it */
}

/* ------------------------------------------------- BatchGetHeartbeat */

typedef struct get_ctx {
    pg_state_t *st;
    gs_call_t *call;
} get_ctx_t;

static void on_get_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    get_ctx_t *g = arg;
    if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_HEARTBEAT_RECORDS) {
        V1__GetHeartbeatsResponse out = V1__GET_HEARTBEATS_RESPONSE__INIT;
        out.n_records = reply->heartbeat_records->n_records;
        out.records = reply->heartbeat_records->records;
        pg_reply_message(g->call, &out.base);
    } else if (status == -ENOENT) {
        /* no health checking: no records, as Polaris without a checker */
        V1__GetHeartbeatsResponse out = V1__GET_HEARTBEATS_RESPONSE__INIT;
        pg_reply_message(g->call, &out.base);
    } else {
        char why[400];
        pg_worker_failure("health", status, reply, gw_request_timeout_ms(g->st->gw), why, sizeof why);
        gs_reply(g->call, GS_UNAVAILABLE, why, NULL, 0);
    }
    free(g);
}

static void on_batch_get(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    pg_state_t *st = arg;
    if (!st->gw) {
        gs_reply(call, GS_UNAVAILABLE, "gateway stopping", NULL, 0);
        return;
    }
    V1__GetHeartbeatsRequest *q = v1__get_heartbeats_request__unpack(NULL, len, req);
    if (!q) {
        char info[160];
        snprintf(info, sizeof info, "request decode failed: %zu bytes are not a v1.GetHeartbeatsRequest", len);
        gs_reply(call, GS_INVALID_ARGUMENT, info, NULL, 0);
        return;
    }
    get_ctx_t *g = calloc(1, sizeof *g);
    if (!g) {
        v1__get_heartbeats_request__free_unpacked(q, NULL);
        gs_reply(call, GS_RESOURCE_EXHAUSTED, "server out of memory", NULL, 0);
        return;
    }
    g->st = st;
    g->call = call;
    Lodestar__HeartbeatQuery hq = LODESTAR__HEARTBEAT_QUERY__INIT;
    hq.n_instance_ids = q->n_instanceids;
    hq.instance_ids = q->instanceids;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_HEARTBEAT_QUERY;
    env.heartbeat_query = &hq;
    int rc = gw_request(st->gw, "health", &env, on_get_reply, g);
    v1__get_heartbeats_request__free_unpacked(q, NULL);
    if (rc < 0)
        on_get_reply(rc, NULL, g);
}

/* ------------------------------------------------- BatchDelHeartbeat */

static void del_answer(gs_call_t *call, uint32_t code, const char *info)
{
    V1__DelHeartbeatsResponse out = V1__DEL_HEARTBEATS_RESPONSE__INIT;
    out.code = code;
    out.info = (char *)(info ? info : polaris_code_info(code));
    pg_reply_message(call, &out.base);
}

static void on_del_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    get_ctx_t *g = arg;
    if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_HEARTBEAT_ACK) {
        del_answer(g->call, V1__CODE__ExecuteSuccess, NULL);
    } else if (status == -ENOENT) {
        del_answer(g->call, V1__CODE__HealthCheckNotOpen, NULL);
    } else {
        char why[400];
        pg_worker_failure("health", status, reply, gw_request_timeout_ms(g->st->gw), why, sizeof why);
        del_answer(g->call, V1__CODE__HeartbeatException, why);
    }
    free(g);
}

static void on_batch_del(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    pg_state_t *st = arg;
    if (!st->gw) {
        del_answer(call, V1__CODE__ExecuteException, "gateway stopping");
        return;
    }
    if (len == 0) {
        del_answer(call, V1__CODE__EmptyRequest, NULL);
        return;
    }
    V1__DelHeartbeatsRequest *q = v1__del_heartbeats_request__unpack(NULL, len, req);
    if (!q) {
        char info[160];
        snprintf(info, sizeof info, "request decode failed: %zu bytes are not a v1.DelHeartbeatsRequest", len);
        del_answer(call, V1__CODE__ParseException, info);
        return;
    }
    get_ctx_t *g = calloc(1, sizeof *g);
    if (!g) {
        v1__del_heartbeats_request__free_unpacked(q, NULL);
        del_answer(call, V1__CODE__ExecuteException, "gateway out of memory");
        return;
    }
    g->st = st;
    g->call = call;
    Lodestar__HeartbeatDelete hd = LODESTAR__HEARTBEAT_DELETE__INIT;
    hd.n_instance_ids = q->n_instanceids;
    hd.instance_ids = q->instanceids;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_HEARTBEAT_DELETE;
    env.heartbeat_delete = &hd;
    int rc = gw_request(st->gw, "health", &env, on_del_reply, g);
    v1__del_heartbeats_request__free_unpacked(q, NULL);
    if (rc < 0)
        on_del_reply(rc, NULL, g);
}

/* ------------------------------------------------------------ setup */

int pg_heartbeat_register(pg_state_t *st, char *err, size_t errlen)
{
    struct pg_relay *rl = calloc(1, sizeof *rl);
    if (!rl || !(rl->flush_ev = event_new(gw_base(st->gw), -1, 0, on_flush, rl))) {
        free(rl);
        snprintf(err, errlen, "heartbeat relay: out of memory");
        return -ENOMEM;
    }
    rl->st = st;
    st->relay = rl;
    int rc = gs_server_add_unary(st->srv, M_HEARTBEAT, on_heartbeat, st, err, errlen);
    if (rc == 0) {
        gs_stream_handlers_t h = {
            .on_open = bh_open, .on_message = bh_message, .on_half_close = bh_half_close, .on_done = bh_done};
        rc = gs_server_add_stream(st->srv, M_BATCH_HEARTBEAT, &h, st, err, errlen);
    }
    if (rc == 0)
        rc = gs_server_add_unary(st->srv, M_BATCH_GET, on_batch_get, st, err, errlen);
    if (rc == 0)
        rc = gs_server_add_unary(st->srv, M_BATCH_DEL, on_batch_del, st, err, errlen);
    return rc;
}

void pg_heartbeat_free(pg_state_t *st)
{
    struct pg_relay *rl = st->relay;
    if (!rl)
        return;
    st->relay = NULL;
    /* beats never sent: answered as failed */
    for (size_t i = 0; i < rl->n; i++) {
        rl->pending[i].cb(V1__CODE__HeartbeatException, rl->pending[i].arg);
        free(rl->pending[i].id);
    }
    free(rl->pending);
    event_free(rl->flush_ev);
    free(rl);
}

/*
 * health_worker.c: the health domain worker. On top of the shared worker
 * body (IPC, store, liveness) it keeps the heartbeat relay's end: the last
 * beat of every instance id, in memory.
 *
 *  - HeartbeatBatch: record "now" (the batch's received_unix_ms when set)
 *    as the last beat of every id, count the beats, answer a HeartbeatAck
 *    with one 200000 per id (the gateway resolved the ids against its
 *    replica before relaying);
 *  - HeartbeatQuery: one v1.HeartbeatRecord per id, in request order
 *    (exist false and last beat 0 for an id never seen);
 *  - HeartbeatDelete: forget the ids, one 200000 per id.
 *
 * The table is a uthash keyed by instance id. Expiry, stores and health
 * transitions belong to the health-checking issue and replace this table.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uthash.h>

#include "common/worker.h"
#include "log.h"

#define HW_CODE_OK 200000u
#define HW_MAX_IDS 100000 /* per request */

typedef struct hw_beat {
    char *id;
    int64_t last_ms;
    uint64_t count;
    UT_hash_handle hh;
} hw_beat_t;

typedef struct hw_state {
    hw_beat_t *beats;
} hw_state_t;

static int64_t now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static hw_beat_t *beat_find(hw_state_t *st, const char *id)
{
    hw_beat_t *b = NULL;
    HASH_FIND_STR(st->beats, id, b);
    return b;
}

static void reply_ack(ipc_conn_t *conn, uint64_t request_id, uint32_t *codes, size_t n)
{
    Lodestar__HeartbeatAck ack = LODESTAR__HEARTBEAT_ACK__INIT;
    ack.n_codes = n;
    ack.codes = codes;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_HEARTBEAT_ACK;
    env.heartbeat_ack = &ack;
    ipc_server_reply(conn, request_id, &env);
}

static void on_beats(hw_state_t *st, ipc_conn_t *conn, uint64_t request_id, const Lodestar__HeartbeatBatch *hb)
{
    uint32_t *codes = hb->n_instance_ids ? malloc(hb->n_instance_ids * sizeof *codes) : NULL;
    if (hb->n_instance_ids && !codes) {
        ipc_server_reply_error(conn, request_id, -ENOMEM, "out of memory for %zu heartbeats", hb->n_instance_ids);
        return;
    }
    int64_t at = hb->received_unix_ms ? (int64_t)hb->received_unix_ms : now_unix_ms();
    for (size_t i = 0; i < hb->n_instance_ids; i++) {
        const char *id = hb->instance_ids[i];
        codes[i] = HW_CODE_OK;
        hw_beat_t *b = beat_find(st, id);
        if (!b) {
            b = calloc(1, sizeof *b);
            if (!b || !(b->id = strdup(id))) {
                free(b);
                codes[i] = 500007; /* HeartbeatException */
                continue;
            }
            HASH_ADD_KEYPTR(hh, st->beats, b->id, strlen(b->id), b);
        }
        if (at > b->last_ms)
            b->last_ms = at;
        b->count++;
    }
    reply_ack(conn, request_id, codes, hb->n_instance_ids);
    free(codes);
}

static void on_query(hw_state_t *st, ipc_conn_t *conn, uint64_t request_id, const Lodestar__HeartbeatQuery *q)
{
    size_t n = q->n_instance_ids;
    V1__HeartbeatRecord *recs = n ? calloc(n, sizeof *recs) : NULL;
    V1__HeartbeatRecord **ptrs = n ? calloc(n, sizeof *ptrs) : NULL;
    if (n && (!recs || !ptrs)) {
        free(recs);
        free(ptrs);
        ipc_server_reply_error(conn, request_id, -ENOMEM, "out of memory for %zu heartbeat records", n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        v1__heartbeat_record__init(&recs[i]);
        recs[i].instanceid = q->instance_ids[i];
        hw_beat_t *b = beat_find(st, q->instance_ids[i]);
        if (b) {
            recs[i].exist = true;
            recs[i].lastheartbeatsec = b->last_ms / 1000;
        }
        ptrs[i] = &recs[i];
    }
    Lodestar__HeartbeatRecords out = LODESTAR__HEARTBEAT_RECORDS__INIT;
    out.n_records = n;
    out.records = ptrs;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_HEARTBEAT_RECORDS;
    env.heartbeat_records = &out;
    ipc_server_reply(conn, request_id, &env);
    free(recs);
    free(ptrs);
}

static void on_delete(hw_state_t *st, ipc_conn_t *conn, uint64_t request_id, const Lodestar__HeartbeatDelete *d)
{
    uint32_t *codes = d->n_instance_ids ? malloc(d->n_instance_ids * sizeof *codes) : NULL;
    if (d->n_instance_ids && !codes) {
        ipc_server_reply_error(conn, request_id, -ENOMEM, "out of memory for %zu ids", d->n_instance_ids);
        return;
    }
    for (size_t i = 0; i < d->n_instance_ids; i++) {
        hw_beat_t *b = beat_find(st, d->instance_ids[i]);
        if (b) {
            HASH_DEL(st->beats, b);
            free(b->id);
            free(b);
        }
        codes[i] = HW_CODE_OK;
    }
    reply_ack(conn, request_id, codes, d->n_instance_ids);
    free(codes);
}

static void health_on_request(worker_t *w, ipc_conn_t *conn, uint64_t request_id, Lodestar__Envelope *req)
{
    hw_state_t *st = w->domain_state;
    size_t n = 0;
    switch (req->body_case) {
    case LODESTAR__ENVELOPE__BODY_HEARTBEAT_BATCH:
        n = req->heartbeat_batch->n_instance_ids;
        break;
    case LODESTAR__ENVELOPE__BODY_HEARTBEAT_QUERY:
        n = req->heartbeat_query->n_instance_ids;
        break;
    case LODESTAR__ENVELOPE__BODY_HEARTBEAT_DELETE:
        n = req->heartbeat_delete->n_instance_ids;
        break;
    default:
        ipc_server_reply_error(conn, request_id, -EOPNOTSUPP, "health worker does not handle %s requests",
                               ipc_type_name(req->body_case));
        return;
    }
    if (n > HW_MAX_IDS) {
        ipc_server_reply_error(conn, request_id, -E2BIG, "%s: %zu instance ids exceed the limit of %d",
                               ipc_type_name(req->body_case), n, HW_MAX_IDS);
        return;
    }
    if (req->body_case == LODESTAR__ENVELOPE__BODY_HEARTBEAT_BATCH)
        on_beats(st, conn, request_id, req->heartbeat_batch);
    else if (req->body_case == LODESTAR__ENVELOPE__BODY_HEARTBEAT_QUERY)
        on_query(st, conn, request_id, req->heartbeat_query);
    else
        on_delete(st, conn, request_id, req->heartbeat_delete);
}

static int health_domain_init(worker_t *w)
{
    hw_state_t *st = calloc(1, sizeof *st);
    if (!st) {
        log_error("out of memory for the heartbeat table");
        return -1;
    }
    w->domain_state = st;
    return 0;
}

static void health_domain_fini(worker_t *w)
{
    hw_state_t *st = w->domain_state;
    if (!st)
        return;
    hw_beat_t *b, *tmp;
    HASH_ITER(hh, st->beats, b, tmp)
    {
        HASH_DEL(st->beats, b);
        free(b->id);
        free(b);
    }
    free(st);
    w->domain_state = NULL;
}

static const worker_domain_t health_domain = {
    .on_request = health_on_request,
    .init = health_domain_init,
    .fini = health_domain_fini,
};

static int health_init(child_t *c) { return worker_start(c, &health_domain); }

const child_role_t health_role = {
    .name = "health",
    .title = "health worker",
    .init = health_init,
    .drain = worker_drain,
    .fini = worker_stop,
    .healthy = worker_healthy,
};

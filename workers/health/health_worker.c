/*
 * health_worker.c: the health domain worker (see health.h for its parts
 * and hc_core.h for the checking rules).
 *
 * What it owns:
 *  - the naming replica (gateways/common/naming_replica.h) of the local
 *    naming worker: an IPC client of <runtime_dir>/naming.sock, snapshot on
 *    connect, NamingChange pushes. Every change of a service resynchronises
 *    that service's heartbeat-checked instances into the core; the worker
 *    reports Ready once the first snapshot is in;
 *  - the heartbeat store: memory (the core's last beats), or Redis
 *    (hc_redis.h): every HeartbeatBatch becomes one HSET of all its
 *    instances' beats, acknowledged once Redis answered;
 *  - the wheel timer (one tick = max_check_interval_ms / slot_num) and the
 *    clean-up timer; verdicts leave through health_writes.c.
 *
 * Answers per beat (HeartbeatAck codes, in request order): 200000 for an
 * instance with a heartbeat check; 400141 HeartbeatOnDisabledIns for an
 * instance without one; 400303 NotFoundInstance for an id the naming data
 * does not hold; 400140 HealthCheckNotOpen when healthcheck.enabled is
 * false; 500007 HeartbeatException when Redis did not take the beat. An id
 * unknown here may be an instance registered a moment ago whose change has
 * not reached this replica yet (the gateway's replica got it first): its
 * answer waits for later changes, at most HW_LATE_MS (500007 instead of
 * 400303 while the replica has not loaded at all).
 *
 * While the heartbeat store is unreachable nothing is checked, so nothing
 * is marked unhealthy; the log says so at error level on every change and
 * every HW_REMIND_MS while it lasts. When it is back, the core's floor
 * moves to now (hc_core_store_back): one more full expiry window passes
 * before anything is marked.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <utlist.h>

#include "health.h"
#include "log.h"

#define HW_CODE_OK 200000u
#define HW_CODE_NOT_OPEN 400140u
#define HW_CODE_DISABLED 400141u
#define HW_CODE_NOT_FOUND 400303u
#define HW_CODE_EXCEPTION 500007u
#define HW_MAX_IDS 100000      /* per request */
#define HW_LATE_MS 1000        /* longest wait for an id the replica does not know yet */
#define HW_REMIND_MS 30000     /* store outage reminders */
#define HW_READ_CHUNK 1000     /* ids per HMGET */
#define HW_PROTECT_KEY "lodestar.health.protect_threshold_percent"

int64_t hw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *sv(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : ""; }

/* ------------------------------------------------------------ acks */

/* A HeartbeatBatch (or HeartbeatDelete) being answered: codes fill in as
 * the pieces finish (Redis writes, late ids); the ack goes out when none is
 * left. conn is NULL once the peer went away (nothing is sent then). */
struct hw_ack {
    hw_t *hw;
    ipc_conn_t *conn;
    uint64_t request_id;
    uint32_t *codes;
    size_t n;
    size_t waiting;
    int64_t at_ms;
    size_t *late;      /* indexes of ids not resolved yet */
    char **late_ids;
    size_t n_late;
    int64_t late_deadline_ms;
    hw_ack_t *prev, *next;
};

/* One HSET of beats (or HDEL): which codes of which ack it settles. */
typedef struct hw_piece {
    hw_ack_t *ack;
    size_t *idx;
    size_t n;
} hw_piece_t;

static hw_ack_t *ack_new(hw_t *hw, ipc_conn_t *conn, uint64_t request_id, size_t n)
{
    hw_ack_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->codes = calloc(n ? n : 1, sizeof *a->codes);
    if (!a->codes) {
        free(a);
        return NULL;
    }
    a->hw = hw;
    a->conn = conn;
    a->request_id = request_id;
    a->n = n;
    DL_APPEND(hw->acks, a);
    return a;
}

static void ack_free(hw_ack_t *a)
{
    DL_DELETE(a->hw->acks, a);
    for (size_t i = 0; i < a->n_late; i++)
        free(a->late_ids[i]);
    free(a->late_ids);
    free(a->late);
    free(a->codes);
    free(a);
}

/* Send the ack if nothing is outstanding any more, and free it. */
static void ack_maybe_send(hw_ack_t *a)
{
    if (a->waiting)
        return;
    if (a->conn) {
        Lodestar__HeartbeatAck ack = LODESTAR__HEARTBEAT_ACK__INIT;
        ack.n_codes = a->n;
        ack.codes = a->codes;
        Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
        env.body_case = LODESTAR__ENVELOPE__BODY_HEARTBEAT_ACK;
        env.heartbeat_ack = &ack;
        ipc_server_reply(a->conn, a->request_id, &env);
    }
    ack_free(a);
}

static void on_piece_reply(hr_t *r, redisReply *reply, void *arg)
{
    hw_piece_t *p = arg;
    bool ok = reply && reply->type != REDIS_REPLY_ERROR;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("heartbeat store refused a write of %zu beats: %.*s", p->n, (int)reply->len, reply->str);
    for (size_t i = 0; i < p->n; i++)
        p->ack->codes[p->idx[i]] = ok ? HW_CODE_OK : HW_CODE_EXCEPTION;
    p->ack->waiting--;
    ack_maybe_send(p->ack);
    free(p->idx);
    free(p);
}

/* One Redis command for the ids at idx[0..n) of ack a: HSET of their beats
 * at a->at_ms, or HDEL. Sets their codes to 500007 when it cannot be sent;
 * otherwise the reply settles them. Takes idx. */
static void send_piece(hw_t *hw, hw_ack_t *a, const char *const *ids, size_t *idx, size_t n, bool del)
{
    if (!n) {
        free(idx);
        return;
    }
    hr_argv_t av = {0};
    hr_argv_add(&av, del ? "HDEL" : "HSET", 4);
    hr_argv_add(&av, hw->hb_key, strlen(hw->hb_key));
    char ms[24];
    int msl = snprintf(ms, sizeof ms, "%lld", (long long)a->at_ms);
    for (size_t i = 0; i < n; i++) {
        const char *id = ids[idx[i]];
        hr_argv_add(&av, id, strlen(id));
        if (!del)
            hr_argv_add(&av, ms, (size_t)msl);
    }
    hw_piece_t *p = calloc(1, sizeof *p);
    int rc = p ? hr_argv_send(hw->redis, &av, on_piece_reply, p) : -ENOMEM;
    hr_argv_free(&av);
    if (rc < 0) {
        for (size_t i = 0; i < n; i++)
            a->codes[idx[i]] = HW_CODE_EXCEPTION;
        free(p);
        free(idx);
        return;
    }
    p->ack = a;
    p->idx = idx;
    p->n = n;
    a->waiting++;
}

/* ---------------------------------------------------------- beats */

static void apply_action(hw_t *hw, hc_act_kind_t kind, hc_inst_t *in)
{
    if (kind == HC_ACT_NONE)
        return;
    hc_action_t a = {.kind = kind, .inst = in};
    hw_writes_queue(hw->writes, &a);
}

/* Resolve id for a beat: 200000 (and the beat recorded in the core), 400141,
 * or 0 when the naming data does not know it (yet). */
static uint32_t beat_one(hw_t *hw, const char *id, int64_t at)
{
    hc_inst_t *in = hc_core_find(hw->core, id);
    if (in) {
        apply_action(hw, hc_core_beat(hw->core, in, at), in);
        return HW_CODE_OK;
    }
    if (hw->replica && nr_instance(hw->replica, id, NULL))
        return HW_CODE_DISABLED;
    return 0;
}

static void late_arm(hw_t *hw)
{
    int64_t now = hw_now_ms(), first = 0;
    hw_ack_t *a;
    DL_FOREACH(hw->acks, a)
    {
        if (a->n_late && (!first || a->late_deadline_ms < first))
            first = a->late_deadline_ms;
    }
    if (!first)
        return;
    int64_t d = first > now ? first - now : 0;
    struct timeval tv = {d / 1000, (d % 1000) * 1000};
    evtimer_add(hw->late_ev, &tv);
}

/* Try again the ids of every ack that the replica did not know; past the
 * deadline they are answered 400303 (500007 while nothing is loaded). */
static void late_retry(hw_t *hw)
{
    int64_t now = hw_now_ms();
    hw_ack_t *a, *tmp;
    DL_FOREACH_SAFE(hw->acks, a, tmp)
    {
        if (!a->n_late)
            continue;
        bool expired = now >= a->late_deadline_ms;
        /* resolved beats to store: ack positions, and their ids by position */
        size_t *to_store = hw->redis ? calloc(a->n_late, sizeof *to_store) : NULL;
        const char **ids = hw->redis ? calloc(a->n, sizeof *ids) : NULL;
        size_t n_store = 0, keep = 0;
        char **done = calloc(a->n_late, sizeof *done);
        size_t n_done = 0;
        for (size_t i = 0; i < a->n_late; i++) {
            uint32_t code = beat_one(hw, a->late_ids[i], a->at_ms);
            if (!code && expired)
                code = hw->replica_loaded ? HW_CODE_NOT_FOUND : HW_CODE_EXCEPTION;
            if (!code || !done) {
                a->late[keep] = a->late[i];
                a->late_ids[keep++] = a->late_ids[i];
                continue;
            }
            size_t pos = a->late[i];
            a->codes[pos] = code;
            if (code == HW_CODE_OK && hw->redis) {
                if (to_store && ids && hw->store_up) {
                    ids[pos] = a->late_ids[i];
                    to_store[n_store++] = pos;
                } else {
                    a->codes[pos] = HW_CODE_EXCEPTION;
                }
            }
            done[n_done++] = a->late_ids[i];
        }
        size_t was = a->n_late;
        a->n_late = keep;
        if (n_store) {
            send_piece(hw, a, ids, to_store, n_store, false); /* copies the ids, takes to_store */
            to_store = NULL;
        }
        for (size_t i = 0; i < n_done; i++)
            free(done[i]);
        free(done);
        free(to_store);
        free(ids);
        if (was && !keep) {
            a->waiting--;
            ack_maybe_send(a);
        }
    }
    late_arm(hw);
}

static void on_late(evutil_socket_t fd, short what, void *arg) { late_retry(arg); }

static void on_beats(hw_t *hw, ipc_conn_t *conn, uint64_t request_id, const Lodestar__HeartbeatBatch *hb)
{
    size_t n = hb->n_instance_ids;
    hw_ack_t *a = ack_new(hw, conn, request_id, n);
    if (!a) {
        ipc_server_reply_error(conn, request_id, -ENOMEM, "out of memory for %zu heartbeats", n);
        return;
    }
    if (!hw->core) {
        for (size_t i = 0; i < n; i++)
            a->codes[i] = HW_CODE_NOT_OPEN;
        ack_maybe_send(a);
        return;
    }
    int64_t now = hw_now_ms();
    a->at_ms = hb->received_unix_ms && (int64_t)hb->received_unix_ms < now ? (int64_t)hb->received_unix_ms : now;
    size_t *to_store = hw->redis ? malloc((n ? n : 1) * sizeof *to_store) : NULL;
    size_t n_store = 0;
    bool oom = hw->redis && !to_store;
    for (size_t i = 0; i < n; i++) {
        const char *id = hb->instance_ids[i];
        uint32_t code = beat_one(hw, id, a->at_ms);
        if (code == HW_CODE_OK && hw->redis) {
            if (oom)
                code = HW_CODE_EXCEPTION;
            else
                to_store[n_store++] = i;
        }
        if (code) {
            a->codes[i] = code;
            continue;
        }
        /* unknown here: wait for the replica a little */
        size_t *li = realloc(a->late, (a->n_late + 1) * sizeof *li);
        char **ls = li ? realloc(a->late_ids, (a->n_late + 1) * sizeof *ls) : NULL;
        if (li)
            a->late = li;
        char *copy = ls ? strdup(id) : NULL;
        if (ls)
            a->late_ids = ls;
        if (!copy) {
            a->codes[i] = HW_CODE_EXCEPTION;
            continue;
        }
        a->late[a->n_late] = i;
        a->late_ids[a->n_late++] = copy;
    }
    if (hw->redis) {
        if (!hw->store_up) {
            for (size_t k = 0; k < n_store; k++)
                a->codes[to_store[k]] = HW_CODE_EXCEPTION;
            free(to_store);
        } else {
            send_piece(hw, a, (const char *const *)hb->instance_ids, to_store, n_store, false);
        }
    }
    if (a->n_late) {
        a->waiting++;
        a->late_deadline_ms = now + HW_LATE_MS;
        late_arm(hw);
    }
    ack_maybe_send(a);
}

/* ----------------------------------------------------- get and delete */

struct hw_query {
    hw_t *hw;
    ipc_conn_t *conn;
    uint64_t request_id;
    Lodestar__HeartbeatQuery *q; /* our copy */
    struct hw_query *prev, *next;
};

static void query_answer(hw_t *hw, ipc_conn_t *conn, uint64_t request_id, const Lodestar__HeartbeatQuery *q,
                         const redisReply *store)
{
    size_t n = q->n_instance_ids;
    V1__HeartbeatRecord *recs = calloc(n ? n : 1, sizeof *recs);
    V1__HeartbeatRecord **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!recs || !ptrs) {
        free(recs);
        free(ptrs);
        ipc_server_reply_error(conn, request_id, -ENOMEM, "out of memory for %zu heartbeat records", n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        v1__heartbeat_record__init(&recs[i]);
        recs[i].instanceid = q->instance_ids[i];
        int64_t last = 0;
        hc_inst_t *in = hw->core ? hc_core_find(hw->core, q->instance_ids[i]) : NULL;
        if (in)
            last = in->last_beat_ms;
        if (store && i < store->elements && store->element[i]->type == REDIS_REPLY_STRING) {
            int64_t s = strtoll(store->element[i]->str, NULL, 10);
            if (s > last)
                last = s;
        }
        if (last > 0) {
            recs[i].exist = true;
            recs[i].lastheartbeatsec = last / 1000;
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

static void on_query_reply(hr_t *r, redisReply *reply, void *arg)
{
    hw_query_t *qq = arg;
    DL_DELETE(qq->hw->queries, qq);
    if (qq->conn) {
        if (reply && reply->type == REDIS_REPLY_ARRAY)
            query_answer(qq->hw, qq->conn, qq->request_id, qq->q, reply);
        else
            ipc_server_reply_error(qq->conn, qq->request_id, -EIO, "heartbeat store: %s",
                                   reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                             : "no answer from Redis");
    }
    lodestar__heartbeat_query__free_unpacked(qq->q, NULL);
    free(qq);
}

static void on_query(hw_t *hw, ipc_conn_t *conn, uint64_t request_id, const Lodestar__HeartbeatQuery *q)
{
    if (!hw->redis || q->n_instance_ids == 0) {
        query_answer(hw, conn, request_id, q, NULL);
        return;
    }
    if (!hw->store_up) {
        ipc_server_reply_error(conn, request_id, -EIO, "heartbeat store unreachable: %s", hw->store_why);
        return;
    }
    hr_argv_t av = {0};
    hr_argv_add(&av, "HMGET", 5);
    hr_argv_add(&av, hw->hb_key, strlen(hw->hb_key));
    for (size_t i = 0; i < q->n_instance_ids; i++)
        hr_argv_add(&av, q->instance_ids[i], strlen(q->instance_ids[i]));
    hw_query_t *qq = calloc(1, sizeof *qq);
    size_t len = lodestar__heartbeat_query__get_packed_size(q);
    uint8_t *buf = malloc(len ? len : 1);
    if (qq && buf) {
        lodestar__heartbeat_query__pack(q, buf);
        qq->q = lodestar__heartbeat_query__unpack(NULL, len, buf);
    }
    free(buf);
    int rc = qq && qq->q ? hr_argv_send(hw->redis, &av, on_query_reply, qq) : -ENOMEM;
    hr_argv_free(&av);
    if (rc < 0) {
        if (qq && qq->q)
            lodestar__heartbeat_query__free_unpacked(qq->q, NULL);
        free(qq);
        ipc_server_reply_error(conn, request_id, rc, "heartbeat store: %s",
                               rc == -ENOTCONN ? "unreachable" : "out of memory");
        return;
    }
    qq->hw = hw;
    qq->conn = conn;
    qq->request_id = request_id;
    DL_APPEND(hw->queries, qq);
}

static void on_delete(hw_t *hw, ipc_conn_t *conn, uint64_t request_id, const Lodestar__HeartbeatDelete *d)
{
    size_t n = d->n_instance_ids;
    hw_ack_t *a = ack_new(hw, conn, request_id, n);
    if (!a) {
        ipc_server_reply_error(conn, request_id, -ENOMEM, "out of memory for %zu ids", n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        hc_inst_t *in = hw->core ? hc_core_find(hw->core, d->instance_ids[i]) : NULL;
        if (in)
            hc_core_forget_beats(hw->core, in);
        a->codes[i] = HW_CODE_OK;
    }
    if (hw->redis && n) {
        size_t *idx = malloc(n * sizeof *idx);
        if (!idx || !hw->store_up) {
            free(idx);
            for (size_t i = 0; i < n; i++)
                a->codes[i] = HW_CODE_EXCEPTION;
        } else {
            for (size_t i = 0; i < n; i++)
                idx[i] = i;
            send_piece(hw, a, (const char *const *)d->instance_ids, idx, n, true);
        }
    }
    ack_maybe_send(a);
}

/* ------------------------------------------------------- requests */

static void health_on_request(worker_t *w, ipc_conn_t *conn, uint64_t request_id, Lodestar__Envelope *req)
{
    hw_t *hw = w->domain_state;
    size_t n = 0;
    switch (req->body_case) {
    case LODESTAR__ENVELOPE__BODY_HEARTBEAT_BATCH: n = req->heartbeat_batch->n_instance_ids; break;
    case LODESTAR__ENVELOPE__BODY_HEARTBEAT_QUERY: n = req->heartbeat_query->n_instance_ids; break;
    case LODESTAR__ENVELOPE__BODY_HEARTBEAT_DELETE: n = req->heartbeat_delete->n_instance_ids; break;
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
        on_beats(hw, conn, request_id, req->heartbeat_batch);
    else if (req->body_case == LODESTAR__ENVELOPE__BODY_HEARTBEAT_QUERY)
        on_query(hw, conn, request_id, req->heartbeat_query);
    else
        on_delete(hw, conn, request_id, req->heartbeat_delete);
}

static void health_on_peer(worker_t *w, ipc_conn_t *conn, bool connected)
{
    hw_t *hw = w->domain_state;
    if (connected || !hw)
        return;
    hw_ack_t *a;
    DL_FOREACH(hw->acks, a)
    {
        if (a->conn == conn)
            a->conn = NULL;
    }
    hw_query_t *q;
    DL_FOREACH(hw->queries, q)
    {
        if (q->conn == conn)
            q->conn = NULL;
    }
}

/* ------------------------------------------------ naming replica sync */

/* "2006-01-02 15:04:05" in local time (how the naming worker writes mtime). */
static int64_t parse_mtime(const char *s)
{
    struct tm tm = {0};
    const char *end = s && *s ? strptime(s, "%Y-%m-%d %H:%M:%S", &tm) : NULL;
    if (!end || *end)
        return 0;
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    return t == (time_t)-1 ? 0 : (int64_t)t * 1000;
}

static bool has_heartbeat_check(const V1__Instance *in)
{
    return in && in->enable_health_check && in->enable_health_check->value && in->health_check;
}

static int protect_of(const V1__Service *s)
{
    if (!s)
        return -1;
    for (size_t i = 0; i < s->n_metadata; i++) {
        if (!s->metadata[i]->key || strcmp(s->metadata[i]->key, HW_PROTECT_KEY) != 0 || !s->metadata[i]->value)
            continue;
        char *end = NULL;
        long v = strtol(s->metadata[i]->value, &end, 10);
        if (end != s->metadata[i]->value && !*end && v >= 0 && v <= 100)
            return (int)v;
        log_warn("service %s/%s: metadata %s=\"%s\" is not a percentage 0..100; the global threshold applies",
                 sv(s->namespace_), sv(s->name), HW_PROTECT_KEY, s->metadata[i]->value);
    }
    return -1;
}

/* What the health checker keeps of one instance; false when it has no
 * heartbeat check (it is then not the checker's). */
static bool inst_info(const V1__Instance *in, hc_inst_info_t *out)
{
    if (!in || !has_heartbeat_check(in))
        return false;
    bool healthy = !in->healthy || in->healthy->value;
    const V1__HeartbeatHealthCheck *h = in->health_check->heartbeat;
    *out = (hc_inst_info_t){
        .id = sv(in->id),
        .ttl_s = h && h->ttl ? h->ttl->value : 0,
        .healthy = healthy,
        .mtime_ms = healthy ? 0 : parse_mtime(sv(in->mtime)),
    };
    return true;
}

/* The whole service, as after a snapshot or a full state. */
static void sync_service(const nr_service_t *svc, void *arg)
{
    hw_t *hw = arg;
    const Lodestar__NamingServiceState *st = svc->state;
    int64_t now = hw_now_ms();
    if (!st || st->deleted) {
        hc_core_drop_service(hw->core, svc->ns, svc->name);
        return;
    }
    hc_inst_info_t *v = calloc(st->n_instances ? st->n_instances : 1, sizeof *v);
    if (!v) {
        log_error("out of memory syncing service %s/%s", svc->ns, svc->name);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < st->n_instances; i++)
        if (st->instances[i] && inst_info(st->instances[i]->instance, &v[k]))
            k++;
    hc_core_sync_service(hw->core, svc->ns, svc->name, v, k, (uint32_t)st->n_instances, svc->n_unhealthy,
                         protect_of(st->service), now);
    free(v);
}

/* Only what a delta changed: the work does not grow with the service. */
static void update_service(hw_t *hw, const nr_service_t *svc, const nr_delta_t *d)
{
    const Lodestar__NamingServiceState *st = svc->state;
    size_t n = d->n_changed;
    hc_inst_info_t *v = calloc(n ? n : 1, sizeof *v);
    const char **gone = calloc(d->n_removed + n + 1, sizeof *gone);
    if (!v || !gone) {
        free(v);
        free(gone);
        log_error("out of memory applying a change to service %s/%s; re-reading it whole", svc->ns, svc->name);
        sync_service(svc, hw);
        return;
    }
    size_t k = 0, g = 0;
    for (size_t i = 0; i < d->n_removed; i++)
        gone[g++] = d->removed[i];
    for (size_t i = 0; i < n; i++) {
        const V1__Instance *in = d->changed[i] ? d->changed[i]->instance : NULL;
        if (inst_info(in, &v[k]))
            k++;
        else if (in)
            gone[g++] = sv(in->id); /* no heartbeat check (any more) */
    }
    hc_core_update_service(hw->core, svc->ns, svc->name, v, k, gone, g, (uint32_t)st->n_instances,
                           svc->n_unhealthy, protect_of(st->service), hw_now_ms());
    free(v);
    free(gone);
}

static void on_replica_change(nr_t *r, const nr_service_t *svc, const nr_delta_t *delta, void *arg)
{
    hw_t *hw = arg;
    if (hw->core) {
        if (!svc) {
            hc_core_sync_begin(hw->core);
            nr_foreach_service(r, NULL, sync_service, hw);
            hc_core_sync_end(hw->core);
        } else if (delta && svc->state && !svc->state->deleted) {
            update_service(hw, svc, delta);
        } else {
            sync_service(svc, hw);
        }
    }
    if (!svc && !hw->replica_loaded) {
        hw->replica_loaded = true;
        log_info("naming data loaded: %zu heartbeat-checked instances", hw->core ? hc_core_count(hw->core) : 0);
        worker_domain_ready(hw->w);
    }
    if (hw->acks)
        late_retry(hw);
}

static void on_naming_push(ipc_client_t *cl, Lodestar__Envelope *push, void *arg)
{
    hw_t *hw = arg;
    nr_on_push(hw->replica, push);
}

static void on_naming_state(ipc_client_t *cl, bool connected, void *arg)
{
    hw_t *hw = arg;
    if (connected)
        log_info("connected to the naming worker");
    else
        log_warn("naming worker connection lost; verdicts wait until it is back");
    nr_on_state(hw->replica, connected);
}

static bool health_ready(worker_t *w)
{
    hw_t *hw = w->domain_state;
    return !hw || !hw->replica || hw->replica_loaded;
}

/* ------------------------------------------------------ checking */

typedef struct hw_read {
    hw_t *hw;
    char **ids;
    size_t n;
} hw_read_t;

static void act_all(hw_t *hw, hc_actions_t *acts)
{
    if (acts->n)
        hw_writes_queue_all(hw->writes, acts);
    acts->n = 0;
}

static void on_read_reply(hr_t *r, redisReply *reply, void *arg)
{
    hw_read_t *rd = arg;
    hw_t *hw = rd->hw;
    bool ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == rd->n;
    if (reply && !ok)
        log_warn("heartbeat store: unexpected answer to reading %zu beats (type %d)", rd->n, reply->type);
    int64_t now = hw_now_ms();
    hc_actions_t acts = {0};
    for (size_t i = 0; i < rd->n; i++) {
        hc_inst_t *in = hw->core ? hc_core_find(hw->core, rd->ids[i]) : NULL;
        if (in && in->reading) {
            if (ok && hw->store_up) {
                const redisReply *e = reply->element[i];
                int64_t beat = e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
                hc_core_judge(hw->core, in, beat, now, &acts);
            } else {
                hc_core_retry(hw->core, in, now);
            }
        }
        free(rd->ids[i]);
    }
    act_all(hw, &acts);
    hc_actions_free(&acts);
    free(rd->ids);
    free(rd);
}

/* Read the store's beats of the instances the core handed out, in chunks. */
static void read_beats(hw_t *hw, hc_insts_t *need, int64_t now)
{
    for (size_t off = 0; off < need->n; off += HW_READ_CHUNK) {
        size_t n = need->n - off < HW_READ_CHUNK ? need->n - off : HW_READ_CHUNK;
        hw_read_t *rd = calloc(1, sizeof *rd);
        hr_argv_t av = {0};
        hr_argv_add(&av, "HMGET", 5);
        hr_argv_add(&av, hw->hb_key, strlen(hw->hb_key));
        if (rd)
            rd->ids = calloc(n, sizeof *rd->ids);
        for (size_t i = 0; rd && rd->ids && i < n; i++) {
            hc_inst_t *in = need->v[off + i];
            hr_argv_add(&av, in->id, strlen(in->id));
            rd->ids[i] = strdup(in->id);
            if (!rd->ids[i])
                av.oom = true;
        }
        int rc = rd && rd->ids ? hr_argv_send(hw->redis, &av, on_read_reply, rd) : -ENOMEM;
        hr_argv_free(&av);
        if (rc == 0) {
            rd->hw = hw;
            rd->n = n;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            hc_core_retry(hw->core, need->v[off + i], now);
            if (rd && rd->ids)
                free(rd->ids[i]);
        }
        if (rd)
            free(rd->ids);
        free(rd);
    }
}

static void store_remind(hw_t *hw, int64_t now)
{
    if (now - hw->store_reminded_ms < HW_REMIND_MS)
        return;
    hw->store_reminded_ms = now;
    log_error("heartbeat store still unreachable after %lld s (%s): no instance is marked unhealthy until it is back",
              (long long)((now - hw->store_down_since_ms) / 1000), hw->store_why);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    hw_t *hw = arg;
    int64_t now = hw_now_ms();
    if (!hw->store_up) {
        store_remind(hw, now);
        return;
    }
    hc_insts_t need = {0};
    hc_actions_t acts = {0};
    hc_core_tick(hw->core, now, hw->redis ? &need : NULL, &acts);
    act_all(hw, &acts);
    if (need.n)
        read_beats(hw, &need, now);
    hc_insts_free(&need);
    hc_actions_free(&acts);
}

static void on_cleanup(evutil_socket_t fd, short what, void *arg)
{
    hw_t *hw = arg;
    if (!hw->store_up)
        return;
    hc_actions_t acts = {0};
    hc_core_cleanup(hw->core, hw_now_ms(), &acts);
    act_all(hw, &acts);
    hc_actions_free(&acts);
}

/* ---------------------------------------------------- heartbeat store */

static void on_store_state(hr_t *r, bool up, const char *why, void *arg)
{
    hw_t *hw = arg;
    int64_t now = hw_now_ms();
    if (up) {
        bool was_down = hw->store_down_since_ms != 0;
        hw->store_up = true;
        hw->store_why[0] = '\0';
        hc_core_store_back(hw->core, now);
        if (was_down)
            log_notice("heartbeat store (Redis) reachable again after %lld ms: checks resume, nothing is marked "
                       "unhealthy before one full expiry window has passed",
                       (long long)(now - hw->store_down_since_ms));
        else
            log_info("heartbeat store (Redis) %s reachable", hw->hc->redis_address);
        hw->store_down_since_ms = 0;
        if (hw->cluster)
            hw_cluster_refresh(hw->cluster);
        return;
    }
    hw->store_up = false;
    snprintf(hw->store_why, sizeof hw->store_why, "%s", why ? why : "unknown");
    if (!hw->store_down_since_ms)
        hw->store_down_since_ms = now;
    hw->store_reminded_ms = now;
    log_error("heartbeat store (Redis %s) UNREACHABLE: %s; no instance will be marked unhealthy until it is back, "
              "beats are answered 500007",
              hw->hc->redis_address, hw->store_why);
}

/* ------------------------------------------------------- lifecycle */

static struct event *periodic(hw_t *hw, int64_t ms, event_callback_fn fn)
{
    struct event *ev = event_new(hw->base, -1, EV_PERSIST, fn, hw);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (ev && event_add(ev, &tv) < 0) {
        event_free(ev);
        return NULL;
    }
    return ev;
}

static void health_domain_fini(worker_t *w);

static int health_domain_init(worker_t *w)
{
    hw_t *hw = calloc(1, sizeof *hw);
    if (!hw) {
        log_error("out of memory for the health worker");
        return -1;
    }
    w->domain_state = hw;
    const cfg_t *cfg = w->child->cfg;
    hw->w = w;
    hw->base = w->child->base;
    hw->hc = &cfg->healthcheck;
    hw->request_timeout_ms = cfg->ipc.request_timeout_ms;
    hw->started_ms = hw_now_ms();
    hw->store_up = true;
    hw->late_ev = evtimer_new(hw->base, on_late, hw);
    if (!hw->late_ev)
        return -1;

    if (cfg->naming.enabled) {
        char *path = cfg_ipc_path(cfg, "naming");
        hw->naming = path ? ipc_client_new(hw->base, path, "naming worker", cfg->ipc.max_frame_bytes, on_naming_push,
                                           on_naming_state, hw)
                          : NULL;
        free(path);
        hw->replica = hw->naming ? nr_new(hw->base, hw->naming, hw->request_timeout_ms) : NULL;
        if (!hw->replica || nr_on_change(hw->replica, on_replica_change, hw) < 0) {
            log_error("cannot follow the naming worker's changes");
            return -1;
        }
    } else {
        log_warn("the naming worker is not enabled: no instance is known, every beat is answered 400303");
        hw->replica_loaded = true;
    }

    const cfg_healthcheck_t *hc = hw->hc;
    if (!hc->enabled) {
        log_notice("health checking is off (healthcheck.enabled: false): beats are answered 400140");
        return 0;
    }
    hc_params_t p = {
        .slot_num = (uint32_t)hc->slot_num,
        .min_interval_ms = hc->min_check_interval_ms,
        .max_interval_ms = hc->max_check_interval_ms,
        .protect_percent = hc->protect_threshold_percent,
        .restart_grace_ms = hc->restart_grace_ms,
        .cleanup_after_ms = hc->cleanup_enabled ? (int64_t)hc->cleanup_unhealthy_for_s * 1000 : 0,
        .shared_store = hc->store == CFG_HC_REDIS,
    };
    hw->core = hc_core_new(&p, hw->started_ms);
    hw->writes = hw->core ? hw_writes_new(hw) : NULL;
    if (!hw->core || !hw->writes) {
        log_error("out of memory for the health checker");
        return -1;
    }
    int64_t tick = hc->max_check_interval_ms / hc->slot_num;
    hw->tick_ev = periodic(hw, tick > 0 ? tick : 1, on_tick);
    if (p.cleanup_after_ms) {
        int64_t every = p.cleanup_after_ms / 4;
        every = every < 500 ? 500 : every > 60000 ? 60000 : every;
        hw->cleanup_ev = periodic(hw, every, on_cleanup);
    }
    if (!hw->tick_ev || (p.cleanup_after_ms && !hw->cleanup_ev)) {
        log_error("cannot start the health check timers");
        return -1;
    }
    if (hc->store == CFG_HC_REDIS) {
        char err[300];
        if (asprintf(&hw->hb_key, "%shb", hc->redis_key_prefix) < 0) {
            hw->hb_key = NULL;
            return -1;
        }
        hw->store_up = false;
        hw->store_down_since_ms = 0;
        snprintf(hw->store_why, sizeof hw->store_why, "not connected yet");
        hw->cluster = hw_cluster_new(hw, err, sizeof err);
        if (!hw->cluster) {
            log_error("cluster mode: %s", err);
            return -1;
        }
        hr_options_t o = {.address = hc->redis_address,
                          .password = hc->redis_password,
                          .db = hc->redis_db,
                          .timeout_ms = hc->redis_timeout_ms,
                          .who = "heartbeat store"};
        hw->redis = hr_new(hw->base, &o, on_store_state, hw, err, sizeof err);
        if (!hw->redis) {
            log_error("heartbeat store: %s", err);
            return -1;
        }
    }
    char cleanup[64] = "off";
    if (hc->cleanup_enabled)
        snprintf(cleanup, sizeof cleanup, "after %d s unhealthy", hc->cleanup_unhealthy_for_s);
    log_info("health checking: %s store, wheel of %d slots x %lld ms, checks every %d..%d ms, protect threshold %d%%, "
             "restart grace %d ms, clean-up %s",
             hc->store == CFG_HC_REDIS ? "redis" : "memory", hc->slot_num, (long long)(tick > 0 ? tick : 1),
             hc->min_check_interval_ms, hc->max_check_interval_ms, hc->protect_threshold_percent, hc->restart_grace_ms,
             cleanup);
    return 0;
}

static void health_domain_fini(worker_t *w)
{
    hw_t *hw = w->domain_state;
    if (!hw)
        return;
    /* pending store commands fail first: their callbacks still find everything */
    if (hw->redis)
        hr_free(hw->redis);
    hw->redis = NULL;
    hw_cluster_free(hw->cluster);
    hw_writes_free(hw->writes);
    while (hw->acks) {
        hw_ack_t *a = hw->acks;
        a->conn = NULL;
        ack_free(a);
    }
    while (hw->queries) {
        hw_query_t *q = hw->queries;
        DL_DELETE(hw->queries, q);
        lodestar__heartbeat_query__free_unpacked(q->q, NULL);
        free(q);
    }
    if (hw->replica)
        nr_free(hw->replica);
    if (hw->naming)
        ipc_client_free(hw->naming);
    if (hw->tick_ev)
        event_free(hw->tick_ev);
    if (hw->cleanup_ev)
        event_free(hw->cleanup_ev);
    if (hw->late_ev)
        event_free(hw->late_ev);
    hc_core_free(hw->core);
    free(hw->hb_key);
    free(hw);
    w->domain_state = NULL;
}

static const worker_domain_t health_domain = {
    .on_request = health_on_request,
    .init = health_domain_init,
    .fini = health_domain_fini,
    .ready = health_ready,
    .on_peer = health_on_peer,
};

static int health_init(child_t *c) { return worker_start(c, &health_domain); }

/* Leave the cluster first (this node's share moves to the others at once),
 * then the shared worker drain. */
static void health_drain(child_t *c)
{
    worker_t *w = c->state;
    hw_t *hw = w ? w->domain_state : NULL;
    if (hw && hw->cluster)
        hw_cluster_leave(hw->cluster);
    worker_drain(c);
}

const child_role_t health_role = {
    .name = "health",
    .title = "health worker",
    .init = health_init,
    .drain = health_drain,
    .fini = worker_stop,
    .healthy = worker_healthy,
};

/*
 * naming_batch.c: the write path. Requests queue; one batch at a time is
 * evaluated and written in ONE statement (one round trip, one implicit
 * transaction); only after PostgreSQL answered does anything change.
 *
 * Rules:
 *  - A request is checked statically on arrival (nm_validate_*); a bad one
 *    is answered at once and never queued. More than
 *    workers.naming.batch.queue_size queued operations: 429001.
 *  - A batch takes whole requests from the queue, up to
 *    workers.naming.batch.max_batch operations (at least one request), when
 *    that many are queued or workers.naming.batch.wait_ms after the oldest
 *    queued request arrived, and only while no batch is in flight.
 *  - Each request of the batch is evaluated against the model plus the
 *    rows the batch already writes (nm_ops_eval), so later requests see
 *    earlier ones. The rows' final states go to PostgreSQL as JSON arrays
 *    (sorted by key, so concurrent nodes lock rows in the same order) in
 *    data-modifying CTEs of one statement. RETURNING hands back what
 *    PostgreSQL decided for each row written: its times and fresh
 *    row_version (the rest is the state the batch sent).
 *  - After COMMIT: the written rows are applied to the model, revisions
 *    recomputed, the next batch is sent, then NamingChange is published
 *    with the batch's highest row_version as its number and every request
 *    is answered (from an event queued behind the store's send, so that
 *    this work overlaps PostgreSQL's on the next batch). A row in
 *    CREATE mode that PostgreSQL did not return already existed live
 *    (another node created it meanwhile): its creating item gets 400201.
 *  - A failed statement changes nothing in memory and answers every request
 *    that had been accepted into the batch with 500001.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "log.h"
#include "naming.h"
#include "worker.h"

typedef struct nm_req {
    struct nm_req *next;
    ipc_conn_t *conn; /* NULL once the peer went away */
    uint64_t request_id;
    Lodestar__NamingWriteRequest *req; /* our own copy */
    size_t n;
    nm_result_t *res;
    bool accepted; /* its rows are in the batch */
    uint64_t due_ms; /* arrival + workers.naming.batch.wait_ms */
} nm_req_t;

struct nm_batcher {
    nm_state_t *st;
    char *sql;
    nm_req_t *qhead, **qtail;
    size_t queued_ops;
    struct event *timer;
    nm_req_t *inflight;
    nm_overlay_t ov;
    bool busy;
    nm_req_t *done_head; /* committed, waiting for post_ev to be answered */
    uint64_t done_top;   /* their highest row_version */
    struct event *post_ev;
    bool draining;
    void (*drained)(void *arg);
    void *drained_arg;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------- SQL */

static const char *const ns_cols[] = {"name", "comment", "owners", "token", "metadata", "revision", "deleted", NULL};
static const char *const svc_cols[] = {"namespace", "name",      "id",        "metadata", "ports",
                                       "business",  "department", "cmdb_mod1", "cmdb_mod2", "cmdb_mod3",
                                       "comment",   "owners",    "token",     "platform_id", "deleted", NULL};
static const char *const inst_cols[] = {"id",          "namespace",  "service",       "vpc_id",
                                        "host",        "port",       "protocol",      "version",
                                        "priority",    "weight",     "hc_type",       "hc_ttl",
                                        "enable_health_check", "healthy", "isolate",  "region",
                                        "zone",        "campus",     "metadata",      "logic_set",
                                        "nacos_group", "nacos_cluster", "ephemeral",  "eureka_app",
                                        "eureka_status", "eureka_overridden_status", "eureka_last_dirty_ms",
                                        "origin",      "deleted",    NULL};

static bool in_set(const char *const *set, const char *s)
{
    for (; *set; set++)
        if (strcmp(*set, s) == 0)
            return true;
    return false;
}

/* One data-modifying CTE: upsert the rows of parameter $param into table.
 * create: insert, or revive a soft-deleted row, but leave a live row alone
 * (and then return nothing for it). */
static void upsert_cte(FILE *f, const char *name, const char *table, const char *const *cols,
                       const char *const *key, int param, bool create)
{
    fprintf(f, "%s AS (INSERT INTO %s AS t (", name, table);
    for (size_t i = 0; cols[i]; i++)
        fprintf(f, "%s, ", cols[i]);
    fprintf(f, "ctime, mtime, row_version, txid) SELECT ");
    for (size_t i = 0; cols[i]; i++)
        fprintf(f, "r.%s, ", cols[i]);
    fprintf(f, "now(), now(), nextval('lodestar_naming_version'), pg_current_xact_id() "
               "FROM jsonb_populate_recordset(NULL::%s, $%d::jsonb) AS r ON CONFLICT (",
            table, param);
    for (size_t i = 0; key[i]; i++)
        fprintf(f, "%s%s", i ? ", " : "", key[i]);
    fprintf(f, ") DO UPDATE SET ");
    for (size_t i = 0; cols[i]; i++)
        if (!in_set(key, cols[i]))
            fprintf(f, "%s = EXCLUDED.%s, ", cols[i], cols[i]);
    fprintf(f, "ctime = CASE WHEN t.deleted THEN EXCLUDED.ctime ELSE t.ctime END, mtime = EXCLUDED.mtime, "
               "row_version = EXCLUDED.row_version, txid = EXCLUDED.txid%s RETURNING t.*)",
            create ? " WHERE t.deleted" : "");
}

/* The batch statement: $1 namespaces to write, $2 namespaces to create,
 * $3/$4 the same for services, $5 instances. Returns, per row written,
 * (kind, key, key2, row_version, ctime_ms, mtime_ms): the rest of a stored
 * row is exactly the pending state the batch sent. */
static char *build_sql(void)
{
    static const char *const ns_key[] = {"name", NULL};
    static const char *const svc_key[] = {"namespace", "name", NULL};
    static const char *const inst_key[] = {"id", NULL};
    char *sql = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&sql, &len);
    if (!f)
        nm_oom();
    fprintf(f, "WITH ");
    upsert_cte(f, "nso", "lodestar_namespace", ns_cols, ns_key, 1, false);
    fprintf(f, ", ");
    upsert_cte(f, "nsc", "lodestar_namespace", ns_cols, ns_key, 2, true);
    fprintf(f, ", ");
    upsert_cte(f, "svo", "lodestar_service", svc_cols, svc_key, 3, false);
    fprintf(f, ", ");
    upsert_cte(f, "svc", "lodestar_service", svc_cols, svc_key, 4, true);
    fprintf(f, ", ");
    upsert_cte(f, "ino", "lodestar_instance", inst_cols, inst_key, 5, false);
#define STORED                                                                                                         \
    "t.row_version, (extract(epoch FROM t.ctime) * 1000)::bigint, (extract(epoch FROM t.mtime) * 1000)::bigint"
    fprintf(f, " SELECT 1, t.name, '', " STORED " FROM nso t UNION ALL SELECT 1, t.name, '', " STORED " FROM nsc t"
               " UNION ALL SELECT 2, t.namespace, t.name, " STORED " FROM svo t"
               " UNION ALL SELECT 2, t.namespace, t.name, " STORED " FROM svc t"
               " UNION ALL SELECT 3, t.id, '', " STORED " FROM ino t");
#undef STORED
    if (fclose(f) != 0 || !sql)
        nm_oom();
    return sql;
}

/* --------------------------------------------------------------- replies */

static void req_free(nm_req_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        nm_result_clear(&r->res[i]);
    free(r->res);
    if (r->req)
        lodestar__naming_write_request__free_unpacked(r->req, NULL);
    free(r);
}

static void send_response(ipc_conn_t *conn, uint64_t request_id, V1__BatchWriteResponse *result)
{
    Lodestar__NamingWriteResponse resp = LODESTAR__NAMING_WRITE_RESPONSE__INIT;
    resp.result = result;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_WRITE_RESPONSE;
    env.naming_write_response = &resp;
    if (ipc_server_reply(conn, request_id, &env) < 0)
        log_warn("naming: cannot answer request %llu on %s", (unsigned long long)request_id, ipc_conn_name(conn));
}

static void reply(nm_batcher_t *b, nm_req_t *r)
{
    if (!r->conn)
        return;
    nm_arena_t a;
    nm_arena_init(&a, 8192);
    send_response(r->conn, r->request_id, nm_batch_response(&a, b->st->model, r->req, r->res, r->n));
    nm_arena_free(&a);
}

static void reply_code(ipc_conn_t *conn, uint64_t request_id, uint32_t code, const char *info)
{
    nm_arena_t a;
    nm_arena_init(&a, 1024);
    send_response(conn, request_id, nm_batch_response_code(&a, code, info));
    nm_arena_free(&a);
}

/* Every item of r gets code (a store failure or an overload). */
static void fail_all(nm_req_t *r, uint32_t code, const char *detail)
{
    char buf[400];
    const char *d = nm_clip(detail, buf, sizeof buf);
    for (size_t i = 0; i < r->n; i++) {
        nm_result_clear(&r->res[i]);
        r->res[i].code = nm_fail(code, r->res[i].info, sizeof r->res[i].info, "%s", d);
    }
}

/* ----------------------------------------------------------------- flush */

static void flush(nm_batcher_t *b);

static void arm_timer(nm_batcher_t *b)
{
    uint64_t now = now_ms();
    uint64_t wait = b->qhead->due_ms > now ? b->qhead->due_ms - now : 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    evtimer_add(b->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) { flush(arg); }

/* Queue empty and nothing in flight: tell a waiting drain. */
static void maybe_drained(nm_batcher_t *b)
{
    if (b->draining && b->drained && !b->qhead && !b->busy && !b->done_head) {
        void (*done)(void *) = b->drained;
        b->drained = NULL;
        done(b->drained_arg);
    }
}

static int cmp_inst(const void *a, const void *b)
{
    return strcmp((*(nm_instance_t *const *)a)->id, (*(nm_instance_t *const *)b)->id);
}
static int cmp_svc(const void *a, const void *b)
{
    return strcmp((*(nm_service_t *const *)a)->key, (*(nm_service_t *const *)b)->key);
}
static int cmp_ns(const void *a, const void *b)
{
    return strcmp((*(nm_namespace_t *const *)a)->name, (*(nm_namespace_t *const *)b)->name);
}

/* The five JSON parameters of the batch statement (malloc'd strings). */
static void build_params(const nm_overlay_t *ov, char *params[5])
{
    json_t *arr[5];
    for (int i = 0; i < 5; i++)
        arr[i] = json_array();
    size_t n = HASH_COUNT(ov->namespaces), i = 0;
    nm_namespace_t **nv = nm_xcalloc(n, sizeof *nv);
    for (nm_namespace_t *x = ov->namespaces; x; x = x->hh.next)
        nv[i++] = x;
    qsort(nv, n, sizeof *nv, cmp_ns);
    for (i = 0; i < n; i++)
        json_array_append_new(arr[nv[i]->mode == NM_MODE_CREATE ? 1 : 0], nm_row_json_namespace(nv[i]));
    free(nv);
    n = HASH_COUNT(ov->services);
    i = 0;
    nm_service_t **sv = nm_xcalloc(n, sizeof *sv);
    for (nm_service_t *x = ov->services; x; x = x->hh.next)
        sv[i++] = x;
    qsort(sv, n, sizeof *sv, cmp_svc);
    for (i = 0; i < n; i++)
        json_array_append_new(arr[sv[i]->mode == NM_MODE_CREATE ? 3 : 2], nm_row_json_service(sv[i]));
    free(sv);
    n = HASH_COUNT(ov->instances);
    i = 0;
    nm_instance_t **iv = nm_xcalloc(n, sizeof *iv);
    for (nm_instance_t *x = ov->instances; x; x = x->hh.next)
        iv[i++] = x;
    qsort(iv, n, sizeof *iv, cmp_inst);
    for (i = 0; i < n; i++)
        json_array_append_new(arr[4], nm_row_json_instance(iv[i]));
    free(iv);
    for (int k = 0; k < 5; k++) {
        params[k] = json_dumps(arr[k], JSON_COMPACT);
        json_decref(arr[k]);
        if (!params[k])
            nm_oom();
    }
}

typedef struct key_set {
    char *key;
    UT_hash_handle hh;
} key_set_t;

static void on_commit(int status, PGresult *res, const char *err, void *arg);
static void post_commit(nm_batcher_t *b);

/* Evaluate and send one batch (or answer requests that write nothing). */
static void flush(nm_batcher_t *b)
{
    nm_state_t *st = b->st;
    while (!b->busy && b->qhead) {
        if (!b->draining && b->queued_ops < (size_t)st->cfg.batch_max && now_ms() < b->qhead->due_ms) {
            arm_timer(b);
            return;
        }
        evtimer_del(b->timer);
        /* take whole requests up to max_batch operations */
        nm_req_t *head = b->qhead, **tail = &head;
        size_t ops = 0;
        while (b->qhead && (ops == 0 || ops + b->qhead->n <= (size_t)st->cfg.batch_max)) {
            nm_req_t *r = b->qhead;
            b->qhead = r->next;
            ops += r->n;
            tail = &r->next;
        }
        *tail = NULL;
        if (!b->qhead)
            b->qtail = &b->qhead;
        b->queued_ops -= ops;

        if (!st->w->store_up) {
            char detail[300];
            snprintf(detail, sizeof detail, "store down: %s", st->w->store_why);
            for (nm_req_t *r = head, *next; r; r = next) {
                next = r->next;
                fail_all(r, NM_STORE_LAYER_EXCEPTION, detail);
                reply(b, r);
                req_free(r);
            }
            continue;
        }
        for (nm_req_t *r = head; r; r = r->next)
            r->accepted = nm_ops_eval(st->model, &b->ov, &st->cfg, r->req, r->res);
        if (nm_overlay_empty(&b->ov)) {
            for (nm_req_t *r = head, *next; r; r = next) {
                next = r->next;
                reply(b, r);
                req_free(r);
            }
            continue;
        }
        char *params[5];
        build_params(&b->ov, params);
        b->inflight = head;
        b->busy = true;
        int rc = store_query(st->w->store, b->sql, 5, (const char *const *)params, on_commit, b);
        for (int k = 0; k < 5; k++)
            free(params[k]);
        if (rc < 0) {
            b->busy = false;
            b->inflight = NULL;
            nm_overlay_free(&b->ov);
            for (nm_req_t *r = head, *next; r; r = next) {
                next = r->next;
                if (r->accepted)
                    fail_all(r, NM_STORE_LAYER_EXCEPTION, "the store is shutting down");
                reply(b, r);
                req_free(r);
            }
        }
    }
    maybe_drained(b);
}

static void on_commit(int status, PGresult *res, const char *err, void *arg)
{
    if (status == -ECANCELED)
        return; /* the store is being freed; the batcher was freed first */
    nm_batcher_t *b = arg;
    nm_state_t *st = b->st;
    nm_req_t *head = b->inflight;
    b->inflight = NULL;
    b->busy = false;
    if (status < 0) {
        log_warn("naming: batch commit failed, %s: %s", status == -ECONNRESET ? "connection lost" : "error",
                 err ? err : "?");
        char detail[400];
        snprintf(detail, sizeof detail, "%s", err ? err : "the batch transaction failed");
        for (nm_req_t *r = head; r; r = r->next)
            if (r->accepted)
                fail_all(r, NM_STORE_LAYER_EXCEPTION, detail);
    } else {
        key_set_t *returned = NULL;
        uint64_t top = 0;
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            int kind = atoi(PQgetvalue(res, i, 0));
            const char *k1 = PQgetvalue(res, i, 1), *k2 = PQgetvalue(res, i, 2);
            int64_t version = strtoll(PQgetvalue(res, i, 3), NULL, 10);
            int64_t ctime = strtoll(PQgetvalue(res, i, 4), NULL, 10), mtime = strtoll(PQgetvalue(res, i, 5), NULL, 10);
            if ((uint64_t)version > top)
                top = (uint64_t)version;
            char *key = NULL;
            if (kind == NM_ROW_NAMESPACE) {
                nm_namespace_t *x = NULL;
                HASH_FIND_STR(b->ov.namespaces, k1, x);
                if (x) {
                    /* the pending state becomes the model's row */
                    HASH_DEL(b->ov.namespaces, x);
                    x->row_version = version;
                    x->ctime_ms = ctime;
                    x->mtime_ms = mtime;
                    key = nm_xstrdup(k1);
                    nm_model_apply_namespace(st->model, x);
                }
            } else if (kind == NM_ROW_SERVICE) {
                char *skey = nm_service_key(k1, k2);
                nm_service_t *x = NULL;
                HASH_FIND_STR(b->ov.services, skey, x);
                if (x) {
                    HASH_DEL(b->ov.services, x);
                    x->row_version = version;
                    x->ctime_ms = ctime;
                    x->mtime_ms = mtime;
                    nm_model_apply_service(st->model, x);
                    key = skey;
                } else {
                    free(skey);
                }
            } else {
                nm_instance_t *x = NULL;
                HASH_FIND_STR(b->ov.instances, k1, x);
                if (x) {
                    HASH_DEL(b->ov.instances, x);
                    x->row_version = version;
                    x->ctime_ms = ctime;
                    x->mtime_ms = mtime;
                    nm_model_apply_instance(st->model, x);
                }
            }
            if (kind != NM_ROW_INSTANCE && !key)
                log_error("naming: PostgreSQL returned a row the batch did not write (kind %d, %s)", kind, k1);
            if (key) {
                key_set_t *k = nm_xcalloc(1, sizeof *k);
                k->key = key;
                HASH_ADD_KEYPTR(hh, returned, k->key, strlen(k->key), k);
            }
        }
        nm_model_finish(st->model);
        /* CREATE rows PostgreSQL left alone: another node had created them */
        for (nm_req_t *r = head; r; r = r->next) {
            for (size_t i = 0; r->accepted && i < r->n; i++) {
                nm_result_t *x = &r->res[i];
                if (!x->create)
                    continue;
                key_set_t *k = NULL;
                HASH_FIND_STR(returned, x->key, k);
                if (!k) {
                    nm_result_clear(x);
                    x->code = nm_fail(NM_EXISTED_RESOURCE, x->info, sizeof x->info,
                                      "it was created meanwhile by another node");
                }
            }
        }
        key_set_t *k, *tmp;
        HASH_ITER(hh, returned, k, tmp)
        {
            HASH_DEL(returned, k);
            free(k->key);
            free(k);
        }
        /* The model is current. Send the next batch first, then publish and
         * answer from an event that runs after the store has sent it, so
         * that PostgreSQL works on the next batch meanwhile. */
        nm_overlay_free(&b->ov);
        if (b->done_head)
            post_commit(b);
        b->done_head = head;
        b->done_top = top;
        flush(b);
        event_active(b->post_ev, EV_TIMEOUT, 1);
        return;
    }
    nm_overlay_free(&b->ov);
    for (nm_req_t *r = head, *next; r; r = next) {
        next = r->next;
        reply(b, r);
        req_free(r);
    }
    flush(b);
}

/* Publish what the last commit changed, then answer its requests. */
static void post_commit(nm_batcher_t *b)
{
    nm_state_t *st = b->st;
    nm_req_t *head = b->done_head;
    b->done_head = NULL;
    if (b->done_top && (st->model->touched || st->model->namespaces_changed))
        nm_publish(st, b->done_top);
    else if (b->done_top > st->model->seq)
        st->model->seq = b->done_top;
    for (nm_req_t *r = head, *next; r; r = next) {
        next = r->next;
        reply(b, r);
        req_free(r);
    }
}

static void on_post(evutil_socket_t fd, short what, void *arg)
{
    nm_batcher_t *b = arg;
    if (b->done_head)
        post_commit(b);
    maybe_drained(b);
}

/* ----------------------------------------------------------------- public */

nm_batcher_t *nm_batcher_new(nm_state_t *st)
{
    nm_batcher_t *b = nm_xcalloc(1, sizeof *b);
    b->st = st;
    b->qtail = &b->qhead;
    b->sql = build_sql();
    b->timer = evtimer_new(st->w->child->base, on_timer, b);
    b->post_ev = event_new(st->w->child->base, -1, 0, on_post, b);
    if (!b->timer || !b->post_ev)
        nm_oom();
    return b;
}

void nm_batcher_free(nm_batcher_t *b)
{
    if (!b)
        return;
    for (nm_req_t *r = b->qhead, *next; r; r = next) {
        next = r->next;
        req_free(r);
    }
    for (nm_req_t *r = b->inflight, *next; r; r = next) {
        next = r->next;
        req_free(r);
    }
    for (nm_req_t *r = b->done_head, *next; r; r = next) {
        next = r->next;
        req_free(r);
    }
    nm_overlay_free(&b->ov);
    event_free(b->timer);
    event_free(b->post_ev);
    free(b->sql);
    free(b);
}

static Lodestar__NamingWriteRequest *copy_request(const Lodestar__NamingWriteRequest *src)
{
    size_t len = lodestar__naming_write_request__get_packed_size(src);
    uint8_t *buf = nm_xcalloc(len ? len : 1, 1);
    lodestar__naming_write_request__pack(src, buf);
    Lodestar__NamingWriteRequest *r = lodestar__naming_write_request__unpack(NULL, len, buf);
    free(buf);
    if (!r)
        nm_oom(); /* our own bytes: only memory can fail here */
    return r;
}

void nm_batcher_submit(nm_batcher_t *b, ipc_conn_t *conn, uint64_t request_id, const Lodestar__NamingWriteRequest *req)
{
    char info[512];
    uint32_t code = nm_validate_request(req, info, sizeof info);
    if (code) {
        reply_code(conn, request_id, code, info);
        return;
    }
    nm_req_t *r = nm_xcalloc(1, sizeof *r);
    r->conn = conn;
    r->request_id = request_id;
    r->n = nm_request_items(req);
    r->res = nm_xcalloc(r->n, sizeof *r->res);
    if (nm_validate_items(req, r->res) > 0) {
        nm_arena_t a;
        nm_arena_init(&a, 8192);
        send_response(conn, request_id, nm_batch_response(&a, b->st->model, req, r->res, r->n));
        nm_arena_free(&a);
        req_free(r);
        return;
    }
    size_t limit = (size_t)b->st->cfg.batch_queue_size;
    if (b->queued_ops + r->n > limit) {
        char detail[200];
        snprintf(detail, sizeof detail, "the write queue holds %zu of at most %zu operations "
                 "(workers.naming.batch.queue_size)", b->queued_ops, limit);
        r->req = copy_request(req);
        fail_all(r, NM_INSTANCE_TOO_MANY_REQUESTS, detail);
        reply(b, r);
        req_free(r);
        return;
    }
    r->req = copy_request(req);
    r->due_ms = now_ms() + (uint64_t)b->st->cfg.batch_wait_ms;
    *b->qtail = r;
    b->qtail = &r->next;
    b->queued_ops += r->n;
    flush(b);
}

void nm_batcher_forget_conn(nm_batcher_t *b, ipc_conn_t *conn)
{
    for (nm_req_t *r = b->qhead; r; r = r->next)
        if (r->conn == conn)
            r->conn = NULL;
    for (nm_req_t *r = b->inflight; r; r = r->next)
        if (r->conn == conn)
            r->conn = NULL;
    for (nm_req_t *r = b->done_head; r; r = r->next)
        if (r->conn == conn)
            r->conn = NULL;
}

void nm_batcher_flush_all(nm_batcher_t *b, void (*done)(void *arg), void *arg)
{
    b->draining = true;
    b->drained = done;
    b->drained_arg = arg;
    flush(b);
}

/*
 * naming_batch.c: the write path. Requests queue; batches of them are
 * evaluated and each is written in ONE statement (one implicit
 * transaction); only after PostgreSQL committed a batch does anything of
 * it change in memory or get acknowledged.
 *
 * Rules:
 *  - A request is checked statically on arrival (nm_validate_*); a bad one
 *    is answered at once and never queued. More than
 *    workers.naming.batch.queue_size queued operations: 429001.
 *  - A batch takes whole requests from the queue, up to
 *    workers.naming.batch.max_batch operations (at least one request), when
 *    that many are queued or workers.naming.batch.wait_ms after the oldest
 *    queued request arrived, and, while no batch is in flight, as soon as
 *    no request arrived for NM_IDLE_GAP_US: an idle PostgreSQL gains
 *    nothing from a longer wait, and requests arriving together (a
 *    burst) still share a batch. Under load batches fill up while others
 *    are in flight; a lone request is not held for the window.
 *  - Up to NM_FLIGHTS batches are in flight at once: the store pipelines
 *    them on its one connection (store_query_prepared), so PostgreSQL works
 *    on one while the worker evaluates the next or applies the previous.
 *    They commit in the order they were sent, each in its own transaction,
 *    so they must not depend on each other: a request that reads a row a
 *    batch in flight writes (nm_ops_eval_pending says BLOCKED) is not
 *    evaluated until that batch came back; it stays at the head of the
 *    queue (nothing overtakes it) and the batch formed so far goes without
 *    it. A batch in flight therefore never built on another one's pending
 *    rows, and one that fails leaves the others' outcome as it would have
 *    been had it never been sent.
 *  - Each request of a batch is evaluated against the model plus the rows
 *    the batch already writes, so later requests see earlier ones. The
 *    rows' final states go to PostgreSQL sorted by key (so concurrent nodes
 *    lock rows in the same order) as binary column arrays (nm_rowset_t),
 *    unnested in data-modifying CTEs of one prepared statement (one that
 *    writes instances only when the batch writes nothing else). RETURNING
 *    hands back what PostgreSQL decided for each row written: its times
 *    and fresh row_version (the rest is the state the batch sent).
 *  - After COMMIT: the batch's rows are applied to the model, revisions
 *    recomputed, more batches are sent, and from an event queued behind
 *    that (so this work overlaps PostgreSQL's) NamingChange is published
 *    with the batch's highest row_version as its number, then every
 *    request is answered. Batches whose commits arrive together (one read
 *    of the store's socket) are published together, with the highest
 *    number of them. A row in CREATE mode that PostgreSQL did not return
 *    already existed live (another node created it meanwhile): its
 *    creating item gets 400201.
 *  - A failed statement changes nothing in memory and answers every request
 *    that had been accepted into the batch with 500001.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "log.h"
#include "naming.h"
#include "worker.h"

/* The statements a batch can go as (see build_sql). */
enum { SHAPE_ALL, SHAPE_INST, N_SHAPES };

/* Batches in flight at most. */
#define NM_FLIGHTS 4

/* With nothing in flight, a partial batch goes once requests stopped
 * arriving for this long: a burst (clients answering the acknowledgements
 * of the previous batch, through the gateways) comes within a fraction of
 * it. */
#define NM_IDLE_GAP_US 1000

typedef struct nm_req {
    struct nm_req *next;
    ipc_conn_t *conn; /* NULL once the peer went away */
    uint64_t request_id;
    Lodestar__NamingWriteRequest *req; /* owned */
    size_t n;
    nm_result_t *res;
    bool accepted; /* its rows are in the batch */
    uint64_t due_us; /* arrival + workers.naming.batch.wait_ms (monotonic us) */
} nm_req_t;

/* A batch sent to PostgreSQL, waiting for its commit. */
typedef struct nm_flight {
    struct nm_flight *next;
    struct nm_batcher *b;
    nm_req_t *reqs;
    nm_overlay_t ov; /* the rows it writes */
} nm_flight_t;

struct nm_batcher {
    nm_state_t *st;
    char *sql[N_SHAPES];
    int nparams[N_SHAPES];
    nm_req_t *qhead, **qtail;
    size_t queued_ops;
    struct event *timer;
    nm_flight_t *fl_head, *fl_tail; /* in flight, oldest first: results come in this order */
    int n_flights;
    bool blocked;        /* the queue head waits for a batch in flight */
    uint64_t last_arrival_us; /* when the newest queued request arrived */
    nm_req_t *done_head; /* committed, waiting for post_ev to be answered */
    nm_req_t **done_tail;
    uint64_t done_top;   /* their highest row_version */
    struct event *post_ev;
    bool draining;
    void (*drained)(void *arg);
    void *drained_arg;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ------------------------------------------------------------------- SQL */

/* One data-modifying CTE: upsert into table the rows whose columns arrive
 * as arrays, parameters $first.. (one per column of nm_rowset_t kind, in
 * nm_row_col order). create: insert, or revive a soft-deleted row, but
 * leave a live row alone (and then return nothing for it). Returns the
 * next free parameter number. */
static int upsert_cte(FILE *f, const char *name, const char *table, int kind, const char *const *key,
                      const char *k1, const char *k2, int first, bool create)
{
    size_t n = nm_row_ncols(kind);
    fprintf(f, "%s AS (INSERT INTO %s AS t (", name, table);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s, ", nm_row_col(kind, i));
    fprintf(f, "ctime, mtime, row_version, txid, writer) SELECT ");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "r.%s, ", nm_row_col(kind, i));
    fprintf(f, "now(), now(), nextval('lodestar_naming_version'), pg_current_xact_id(), $1::int8 FROM unnest(");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s$%d::%s[]", i ? ", " : "", first + (int)i, nm_row_coltype(kind, i));
    fprintf(f, ") AS r(");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%s", i ? ", " : "", nm_row_col(kind, i));
    fprintf(f, ") ON CONFLICT (");
    for (size_t i = 0; key[i]; i++)
        fprintf(f, "%s%s", i ? ", " : "", key[i]);
    fprintf(f, ") DO UPDATE SET ");
    for (size_t i = 0; i < n; i++) {
        const char *c = nm_row_col(kind, i);
        bool is_key = false;
        for (size_t k = 0; key[k]; k++)
            is_key |= strcmp(key[k], c) == 0;
        if (!is_key)
            fprintf(f, "%s = EXCLUDED.%s, ", c, c);
    }
    fprintf(f, "ctime = CASE WHEN t.deleted THEN EXCLUDED.ctime ELSE t.ctime END, mtime = EXCLUDED.mtime, "
               "row_version = EXCLUDED.row_version, txid = EXCLUDED.txid, writer = EXCLUDED.writer%s "
               "RETURNING %s AS k1, %s AS k2, t.row_version AS v, t.ctime AS c, t.mtime AS m)",
            create ? " WHERE t.deleted" : "", k1, k2);
    return first + (int)n;
}

/* A batch statement. $1 the writer number, then the column arrays of the
 * row sets it writes, in enum batch_set order: namespaces to write,
 * namespaces to create, services to write, services to create, instances.
 * Returns, per row written, (kind, key, key2, row_version, ctime_ms,
 * mtime_ms): the rest of a stored row is exactly the pending state the
 * batch sent. Two statements: every set, and instances only (the common
 * batch, which then does not carry four empty upserts). */
enum batch_set { SET_NS, SET_NS_CREATE, SET_SVC, SET_SVC_CREATE, SET_INST, N_SETS };
static const int set_kind[N_SETS] = {NM_ROW_NAMESPACE, NM_ROW_NAMESPACE, NM_ROW_SERVICE, NM_ROW_SERVICE,
                                     NM_ROW_INSTANCE};
static const unsigned shape_sets[N_SHAPES] = {(1u << N_SETS) - 1, 1u << SET_INST};
static const char *const shape_name[N_SHAPES] = {"naming_batch", "naming_batch_inst"};

static char *build_sql(unsigned sets, int *nparams)
{
    static const char *const ns_key[] = {"name", NULL};
    static const char *const svc_key[] = {"namespace", "name", NULL};
    static const char *const inst_key[] = {"id", NULL};
    static const struct {
        const char *cte, *table, *k1, *k2;
        const char *const *key;
        bool create;
    } def[N_SETS] = {
        [SET_NS] = {"nso", "lodestar_namespace", "t.name", "''::text", ns_key, false},
        [SET_NS_CREATE] = {"nsc", "lodestar_namespace", "t.name", "''::text", ns_key, true},
        [SET_SVC] = {"svo", "lodestar_service", "t.namespace", "t.name", svc_key, false},
        [SET_SVC_CREATE] = {"svc", "lodestar_service", "t.namespace", "t.name", svc_key, true},
        [SET_INST] = {"ino", "lodestar_instance", "t.id", "''::text", inst_key, false},
    };
    char *sql = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&sql, &len);
    if (!f)
        nm_oom();
    int p = 2;
    bool first = true;
    fprintf(f, "WITH ");
    for (int k = 0; k < N_SETS; k++) {
        if (!(sets & 1u << k))
            continue;
        fprintf(f, "%s", first ? "" : ", ");
        p = upsert_cte(f, def[k].cte, def[k].table, set_kind[k], def[k].key, def[k].k1, def[k].k2, p, def[k].create);
        first = false;
    }
    first = true;
    for (int k = 0; k < N_SETS; k++) {
        if (!(sets & 1u << k))
            continue;
        fprintf(f, "%sSELECT %d, k1, k2, v, (extract(epoch FROM c) * 1000)::bigint, "
                   "(extract(epoch FROM m) * 1000)::bigint FROM %s",
                first ? " " : " UNION ALL ", set_kind[k], def[k].cte);
        first = false;
    }
    if (fclose(f) != 0 || !sql)
        nm_oom();
    *nparams = p - 1;
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

static void req_list_free(nm_req_t *r)
{
    while (r) {
        nm_req_t *next = r->next;
        req_free(r);
        r = next;
    }
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
    nm_arena_t *a = &b->st->scratch;
    send_response(r->conn, r->request_id, nm_batch_response(a, b->st->model, r->req, r->res, r->n));
    nm_arena_reset(a);
}

/* Answer and free every request of a list. */
static void reply_all(nm_batcher_t *b, nm_req_t *r)
{
    while (r) {
        nm_req_t *next = r->next;
        reply(b, r);
        req_free(r);
        r = next;
    }
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

/* When the queue head's partial batch goes: wait_ms after the head
 * arrived; but while no batch is in flight, as soon as requests stopped
 * coming for NM_IDLE_GAP_US (PostgreSQL has nothing to do meanwhile). */
static uint64_t head_due_us(const nm_batcher_t *b)
{
    uint64_t due = b->qhead->due_us;
    if (!b->fl_head && b->last_arrival_us + NM_IDLE_GAP_US < due)
        due = b->last_arrival_us + NM_IDLE_GAP_US;
    return due;
}

static void arm_timer(nm_batcher_t *b)
{
    uint64_t now = now_us(), due = head_due_us(b);
    uint64_t wait = due > now ? due - now : 0;
    struct timeval tv = {(time_t)(wait / 1000000u), (suseconds_t)(wait % 1000000u)};
    evtimer_add(b->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) { flush(arg); }

/* Queue empty and nothing in flight: tell a waiting drain. */
static void maybe_drained(nm_batcher_t *b)
{
    if (b->draining && b->drained && !b->qhead && !b->fl_head && !b->done_head) {
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

/* The parameters of the batch statement: the pending rows, sorted by key
 * (so that concurrent nodes lock rows in the same order), as column arrays. */
typedef struct batch_params {
    nm_rowset_t *sets[N_SETS];
    int n;
    const char **values;
    int *lengths, *formats;
} batch_params_t;

static void build_params(const nm_overlay_t *ov, const char *writer, batch_params_t *bp, unsigned sets,
                         int nparams)
{
    for (int k = 0; k < N_SETS; k++)
        bp->sets[k] = nm_rowset_new(set_kind[k]);
    size_t n = HASH_COUNT(ov->namespaces), i = 0;
    nm_namespace_t **nv = nm_xcalloc(n, sizeof *nv);
    for (nm_namespace_t *x = ov->namespaces; x; x = x->hh.next)
        nv[i++] = x;
    qsort(nv, n, sizeof *nv, cmp_ns);
    for (i = 0; i < n; i++)
        nm_rowset_add(bp->sets[nv[i]->mode == NM_MODE_CREATE ? SET_NS_CREATE : SET_NS], nv[i]);
    free(nv);
    n = HASH_COUNT(ov->services);
    i = 0;
    nm_service_t **sv = nm_xcalloc(n, sizeof *sv);
    for (nm_service_t *x = ov->services; x; x = x->hh.next)
        sv[i++] = x;
    qsort(sv, n, sizeof *sv, cmp_svc);
    for (i = 0; i < n; i++)
        nm_rowset_add(bp->sets[sv[i]->mode == NM_MODE_CREATE ? SET_SVC_CREATE : SET_SVC], sv[i]);
    free(sv);
    n = HASH_COUNT(ov->instances);
    i = 0;
    nm_instance_t **iv = nm_xcalloc(n, sizeof *iv);
    for (nm_instance_t *x = ov->instances; x; x = x->hh.next)
        iv[i++] = x;
    qsort(iv, n, sizeof *iv, cmp_inst);
    for (i = 0; i < n; i++)
        nm_rowset_add(bp->sets[SET_INST], iv[i]);
    free(iv);

    bp->n = nparams;
    bp->values = nm_xcalloc((size_t)nparams, sizeof *bp->values);
    bp->lengths = nm_xcalloc((size_t)nparams, sizeof *bp->lengths);
    bp->formats = nm_xcalloc((size_t)nparams, sizeof *bp->formats);
    bp->values[0] = writer;
    int p = 1;
    for (int k = 0; k < N_SETS; k++)
        for (size_t c = 0; sets & 1u << k && c < nm_row_ncols(set_kind[k]); c++, p++) {
            bp->values[p] = nm_rowset_param(bp->sets[k], c, &bp->lengths[p]);
            bp->formats[p] = 1;
        }
}

static void free_params(batch_params_t *bp)
{
    for (int k = 0; k < N_SETS; k++)
        nm_rowset_free(bp->sets[k]);
    free(bp->values);
    free(bp->lengths);
    free(bp->formats);
}

typedef struct key_set {
    char *key;
    UT_hash_handle hh;
} key_set_t;

static void on_commit(int status, PGresult *res, const char *err, void *arg);
static void post_commit(nm_batcher_t *b);

/* Take requests off the queue head, up to max_batch operations, evaluating
 * each into ov; stops early at a request blocked by a batch in flight (it
 * stays queued, b->blocked set). Returns the requests taken, in order. */
static nm_req_t *take_batch(nm_batcher_t *b, nm_overlay_t *ov)
{
    nm_state_t *st = b->st;
    const nm_overlay_t *pending[NM_FLIGHTS];
    size_t npending = 0;
    for (nm_flight_t *f = b->fl_head; f && npending < NM_FLIGHTS; f = f->next)
        pending[npending++] = &f->ov;
    nm_req_t *head = NULL, **tail = &head;
    size_t ops = 0;
    while (b->qhead && (ops == 0 || ops + b->qhead->n <= (size_t)st->cfg.batch_max)) {
        nm_req_t *r = b->qhead;
        nm_eval_t e = nm_ops_eval_pending(st->model, ov, pending, npending, &st->cfg, r->req, r->res);
        if (e == NM_EVAL_BLOCKED) {
            b->blocked = true;
            break;
        }
        r->accepted = e == NM_EVAL_OK;
        b->qhead = r->next;
        b->queued_ops -= r->n;
        r->next = NULL;
        *tail = r;
        tail = &r->next;
        ops += r->n;
    }
    if (!b->qhead)
        b->qtail = &b->qhead;
    return head;
}

/* Evaluate and send batches while the pipeline has room (or answer
 * requests that write nothing). */
static void flush(nm_batcher_t *b)
{
    nm_state_t *st = b->st;
    while (b->qhead && b->n_flights < NM_FLIGHTS) {
        if (b->blocked && b->fl_head)
            break; /* a batch in flight must come back first */
        b->blocked = false;
        if (!b->draining && b->queued_ops < (size_t)st->cfg.batch_max && now_us() < head_due_us(b)) {
            arm_timer(b);
            break;
        }
        evtimer_del(b->timer);
        if (!st->w->store_up) {
            char detail[300];
            snprintf(detail, sizeof detail, "store down: %s", st->w->store_why);
            size_t ops = 0;
            nm_req_t *head = NULL, **tail = &head;
            while (b->qhead && (ops == 0 || ops + b->qhead->n <= (size_t)st->cfg.batch_max)) {
                nm_req_t *r = b->qhead;
                b->qhead = r->next;
                b->queued_ops -= r->n;
                ops += r->n;
                r->next = NULL;
                fail_all(r, NM_STORE_LAYER_EXCEPTION, detail);
                *tail = r;
                tail = &r->next;
            }
            if (!b->qhead)
                b->qtail = &b->qhead;
            reply_all(b, head);
            continue;
        }
        nm_flight_t *f = nm_xcalloc(1, sizeof *f);
        f->b = b;
        nm_req_t *head = take_batch(b, &f->ov);
        if (!head) {
            free(f);
            continue; /* blocked at the first request */
        }
        if (nm_overlay_empty(&f->ov)) {
            /* nothing to write: what it read is committed already */
            free(f);
            reply_all(b, head);
            continue;
        }
        int shape = f->ov.namespaces || f->ov.services ? SHAPE_ALL : SHAPE_INST;
        batch_params_t bp;
        build_params(&f->ov, st->writer, &bp, shape_sets[shape], b->nparams[shape]);
        f->reqs = head;
        int rc = store_query_prepared(st->w->store, shape_name[shape], b->sql[shape], bp.n, bp.values, bp.lengths,
                                      bp.formats, on_commit, f);
        free_params(&bp);
        if (rc < 0) {
            nm_overlay_free(&f->ov);
            for (nm_req_t *r = head; r; r = r->next)
                if (r->accepted)
                    fail_all(r, NM_STORE_LAYER_EXCEPTION, "the store is shutting down");
            free(f);
            reply_all(b, head);
            continue;
        }
        if (b->fl_tail)
            b->fl_tail->next = f;
        else
            b->fl_head = f;
        b->fl_tail = f;
        b->n_flights++;
    }
    maybe_drained(b);
}

/* Apply a committed batch's rows (the result of its statement) to the
 * model; the highest row_version goes to *top. CREATE items whose row
 * PostgreSQL left alone get 400201. */
static void apply_commit(nm_batcher_t *b, nm_flight_t *f, PGresult *res, uint64_t *top)
{
    nm_state_t *st = b->st;
    key_set_t *returned = NULL;
    *top = 0;
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        int kind = atoi(PQgetvalue(res, i, 0));
        const char *k1 = PQgetvalue(res, i, 1), *k2 = PQgetvalue(res, i, 2);
        int64_t version = strtoll(PQgetvalue(res, i, 3), NULL, 10);
        int64_t ctime = strtoll(PQgetvalue(res, i, 4), NULL, 10), mtime = strtoll(PQgetvalue(res, i, 5), NULL, 10);
        if ((uint64_t)version > *top)
            *top = (uint64_t)version;
        char *key = NULL;
        if (kind == NM_ROW_NAMESPACE) {
            nm_namespace_t *x = NULL;
            HASH_FIND_STR(f->ov.namespaces, k1, x);
            if (x) {
                /* the pending state becomes the model's row */
                HASH_DEL(f->ov.namespaces, x);
                x->row_version = version;
                x->ctime_ms = ctime;
                x->mtime_ms = mtime;
                key = nm_xstrdup(k1);
                nm_model_apply_namespace(st->model, x);
            }
        } else if (kind == NM_ROW_SERVICE) {
            char *skey = nm_service_key(k1, k2);
            nm_service_t *x = NULL;
            HASH_FIND_STR(f->ov.services, skey, x);
            if (x) {
                HASH_DEL(f->ov.services, x);
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
            HASH_FIND_STR(f->ov.instances, k1, x);
            if (x) {
                HASH_DEL(f->ov.instances, x);
                x->row_version = version;
                x->ctime_ms = ctime;
                x->mtime_ms = mtime;
                nm_model_apply_instance_hashed(st->model, x); /* put_instance hashed it */
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
    for (nm_req_t *r = f->reqs; r; r = r->next) {
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
}

static void on_commit(int status, PGresult *res, const char *err, void *arg)
{
    if (status == -ECANCELED)
        return; /* the store is being freed; the batcher was freed first */
    nm_flight_t *f = arg;
    nm_batcher_t *b = f->b;
    if (b->fl_head != f) /* the store completes queries in order */
        log_error("naming: a batch completed out of order");
    /* unlink f wherever it is */
    nm_flight_t **pp = &b->fl_head, *prev = NULL;
    while (*pp && *pp != f) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp)
        *pp = f->next;
    if (b->fl_tail == f)
        b->fl_tail = prev;
    b->n_flights--;
    b->blocked = false; /* whatever waited may depend on f alone */
    nm_req_t *head = f->reqs;
    if (status < 0) {
        log_warn("naming: batch commit failed, %s: %s", status == -ECONNRESET ? "connection lost" : "error",
                 err ? err : "?");
        char detail[400];
        snprintf(detail, sizeof detail, "%s", err ? err : "the batch transaction failed");
        for (nm_req_t *r = head; r; r = r->next)
            if (r->accepted)
                fail_all(r, NM_STORE_LAYER_EXCEPTION, detail);
        nm_overlay_free(&f->ov);
        free(f);
        reply_all(b, head);
        flush(b);
        return;
    }
    uint64_t top;
    apply_commit(b, f, res, &top);
    nm_overlay_free(&f->ov);
    free(f);
    /* The model is current. Send what can go next, then publish and answer
     * from an event that runs after the store has sent it, so that
     * PostgreSQL works on the next batch meanwhile. */
    *b->done_tail = head;
    while (*b->done_tail)
        b->done_tail = &(*b->done_tail)->next;
    if (top > b->done_top)
        b->done_top = top;
    flush(b);
    event_active(b->post_ev, EV_TIMEOUT, 1);
}

/* Publish what the committed batches changed, then answer their requests. */
static void post_commit(nm_batcher_t *b)
{
    nm_state_t *st = b->st;
    nm_req_t *head = b->done_head;
    uint64_t top = b->done_top;
    b->done_head = NULL;
    b->done_tail = &b->done_head;
    b->done_top = 0;
    if (top && (st->model->touched || st->model->namespaces_changed))
        nm_publish(st, top);
    else if (top > st->model->seq)
        st->model->seq = top;
    reply_all(b, head);
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
    b->done_tail = &b->done_head;
    for (int k = 0; k < N_SHAPES; k++)
        b->sql[k] = build_sql(shape_sets[k], &b->nparams[k]);
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
    req_list_free(b->qhead);
    for (nm_flight_t *f = b->fl_head, *next; f; f = next) {
        next = f->next;
        req_list_free(f->reqs);
        nm_overlay_free(&f->ov);
        free(f);
    }
    req_list_free(b->done_head);
    event_free(b->timer);
    event_free(b->post_ev);
    for (int k = 0; k < N_SHAPES; k++)
        free(b->sql[k]);
    free(b);
}

void nm_batcher_submit(nm_batcher_t *b, ipc_conn_t *conn, uint64_t request_id, Lodestar__NamingWriteRequest *req)
{
    char info[512];
    uint32_t code = nm_validate_request(req, info, sizeof info);
    if (code) {
        reply_code(conn, request_id, code, info);
        lodestar__naming_write_request__free_unpacked(req, NULL);
        return;
    }
    nm_req_t *r = nm_xcalloc(1, sizeof *r);
    r->conn = conn;
    r->request_id = request_id;
    r->req = req;
    r->n = nm_request_items(req);
    r->res = nm_xcalloc(r->n, sizeof *r->res);
    if (nm_validate_items(req, r->res) > 0) {
        reply(b, r);
        req_free(r);
        return;
    }
    size_t limit = (size_t)b->st->cfg.batch_queue_size;
    if (b->queued_ops + r->n > limit) {
        char detail[200];
        snprintf(detail, sizeof detail, "the write queue holds %zu of at most %zu operations "
                 "(workers.naming.batch.queue_size)", b->queued_ops, limit);
        fail_all(r, NM_INSTANCE_TOO_MANY_REQUESTS, detail);
        reply(b, r);
        req_free(r);
        return;
    }
    b->last_arrival_us = now_us();
    r->due_us = b->last_arrival_us + (uint64_t)b->st->cfg.batch_wait_ms * 1000u;
    *b->qtail = r;
    b->qtail = &r->next;
    b->queued_ops += r->n;
    flush(b);
}

static void forget(nm_req_t *r, const ipc_conn_t *conn)
{
    for (; r; r = r->next)
        if (r->conn == conn)
            r->conn = NULL;
}

void nm_batcher_forget_conn(nm_batcher_t *b, ipc_conn_t *conn)
{
    forget(b->qhead, conn);
    for (nm_flight_t *f = b->fl_head; f; f = f->next)
        forget(f->reqs, conn);
    forget(b->done_head, conn);
}

void nm_batcher_flush_all(nm_batcher_t *b, void (*done)(void *arg), void *arg)
{
    b->draining = true;
    b->drained = done;
    b->drained_arg = arg;
    flush(b);
}

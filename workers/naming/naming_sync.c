/*
 * naming_sync.c: keeping the model equal to PostgreSQL.
 *
 *  - Queries are prepared statements (store_query_prepared), so they ride
 *    the store's pipeline between the write batches; the cleanup, several
 *    statements in one, is a plain query.
 *  - Start-up: once the store is up (connected and migrated), one query
 *    reads every live row of the three naming tables, the snapshot's xmin
 *    and the version sequence's high-water mark; the model is built from
 *    it and only then does the worker report Ready (nm_loaded).
 *  - Polling: every workers.naming.sync_interval_ms, one statement reads the
 *    rows whose txid >= the xmin of the previous poll's snapshot, and the
 *    xmin of its own snapshot for the next round. A transaction that was
 *    still running when a poll's snapshot was taken has a txid at or above
 *    that snapshot's xmin, so a later poll reads its rows once it
 *    committed; rows read again are ignored by row_version. Rows from other
 *    nodes then update the model and are published like local ones.
 *    Rows this worker wrote (writer = its writer number) are skipped: it
 *    applied them when their batch committed, and the poll's result comes
 *    after the results of every batch sent before it (one connection, in
 *    order). A batch whose outcome was lost with the connection is covered
 *    by the resync that follows every reconnect.
 *  - Resync: after the store reconnects, the full load runs again with
 *    mark-and-sweep, so whatever was deleted meanwhile (even hard-deleted)
 *    leaves the model too.
 *  - Cleanup: soft-deleted rows older than workers.naming.deleted_retention_s
 *    are deleted for good, by every node (the statement is idempotent).
 *
 * Publication numbers: NamingChange.seq must grow across restarts and
 * across everything a replica ever received. Every number the worker
 * publishes is a value of lodestar_naming_version it drew itself (a
 * committed batch's highest row_version, or nextval here), and the load
 * starts from the sequence's high-water mark, so a later number is always
 * higher than an earlier one.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"
#include "naming.h"
#include "worker.h"


/* Kinds in the first column: 1 namespace, 2 service, 3 instance (enum
 * nm_row_kind), 0 the snapshot's xmin, 4 the version high-water mark. */
static const char SQL_LOAD[] =
    "SELECT 0, pg_snapshot_xmin(pg_current_snapshot())::text "
    "UNION ALL SELECT 4, (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "
    "FROM lodestar_naming_version)::text "
    "UNION ALL SELECT 1, " NM_SQL_ROW_JSON " FROM lodestar_namespace t WHERE NOT t.deleted "
    "UNION ALL SELECT 2, " NM_SQL_ROW_JSON " FROM lodestar_service t WHERE NOT t.deleted "
    "UNION ALL SELECT 3, " NM_SQL_ROW_JSON " FROM lodestar_instance t WHERE NOT t.deleted";

/* $2: this worker's writer number; its own rows are in the model already. */
static const char SQL_POLL[] =
    "SELECT 0, pg_snapshot_xmin(pg_current_snapshot())::text "
    "UNION ALL SELECT 1, " NM_SQL_ROW_JSON " FROM lodestar_namespace t WHERE t.txid >= $1::xid8 AND t.writer <> $2::bigint "
    "UNION ALL SELECT 2, " NM_SQL_ROW_JSON " FROM lodestar_service t WHERE t.txid >= $1::xid8 AND t.writer <> $2::bigint "
    "UNION ALL SELECT 3, " NM_SQL_ROW_JSON " FROM lodestar_instance t WHERE t.txid >= $1::xid8 AND t.writer <> $2::bigint";

static const char SQL_NEXTVAL[] = "SELECT nextval('lodestar_naming_version')";

struct nm_sync {
    nm_state_t *st;
    struct event *poll_ev, *cleanup_ev, *retry_ev;
    char xmin[32];      /* txid floor for the next poll */
    bool have_xmin;
    bool busy;          /* a load or poll is in flight */
    bool store_up;
    bool resync_due;    /* the store came back: reload before polling */
    bool nextval_busy;
    int cleanup_period_ms;
};

static void schedule(struct event *ev, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* Apply every row of a load or poll result; returns the number of rows
 * that could not be read (logged, skipped). xmin and high-water mark go to
 * the out-parameters when present. */
static int apply_rows(struct nm_sync *s, PGresult *res, char *xmin, size_t xminlen, uint64_t *hwm)
{
    nm_model_t *m = s->st->model;
    int bad = 0;
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        int kind = atoi(PQgetvalue(res, i, 0));
        const char *v = PQgetvalue(res, i, 1);
        if (kind == 0) {
            snprintf(xmin, xminlen, "%s", v);
            continue;
        }
        if (kind == 4) {
            if (hwm)
                *hwm = strtoull(v, NULL, 10);
            continue;
        }
        void *row = NULL;
        char err[256];
        if (nm_row_parse(kind, v, &row, err, sizeof err) < 0) {
            if (bad++ < 5)
                log_warn("naming: skipping an unreadable row (kind %d): %s", kind, err);
            continue;
        }
        if (kind == NM_ROW_NAMESPACE)
            nm_model_apply_namespace(m, row);
        else if (kind == NM_ROW_SERVICE)
            nm_model_apply_service(m, row);
        else
            nm_model_apply_instance_hashed(m, row); /* nm_row_parse hashed it */
    }
    return bad;
}

static void start_load(struct nm_sync *s);

static void on_load(int status, PGresult *res, const char *err, void *arg)
{
    if (status == -ECANCELED)
        return; /* the store is being freed, and so is s */
    struct nm_sync *s = arg;
    nm_state_t *st = s->st;
    s->busy = false;
    if (status < 0) {
        log_warn("naming: loading the model from PostgreSQL failed: %s; retrying in 1 s", err ? err : "?");
        schedule(s->retry_ev, 1000);
        return;
    }
    bool first = !st->loaded;
    if (!first)
        nm_model_mark_unseen(st->model);
    uint64_t hwm = 0;
    char xmin[32] = "";
    int bad = apply_rows(s, res, xmin, sizeof xmin, &hwm);
    if (!first)
        nm_model_sweep(st->model);
    nm_model_finish(st->model);
    if (xmin[0]) {
        snprintf(s->xmin, sizeof s->xmin, "%s", xmin);
        s->have_xmin = true;
    }
    if (hwm > st->model->seq)
        st->model->seq = hwm;
    s->resync_due = false;
    log_info("naming: %s %u namespaces, %u services, %u instances from PostgreSQL%s", first ? "loaded" : "resynced",
             HASH_COUNT(st->model->namespaces), HASH_COUNT(st->model->services), HASH_COUNT(st->model->instances),
             bad ? " (some rows skipped)" : "");
    if (first) {
        nm_model_clear_touched(st->model);
        nm_loaded(st);
    } else if (st->model->touched || st->model->namespaces_changed) {
        nm_sync_publish_remote(s);
    }
    schedule(s->poll_ev, st->cfg.sync_interval_ms);
}

static void start_load(struct nm_sync *s)
{
    if (s->busy || !s->store_up)
        return;
    s->busy = true;
    if (store_query_prepared(s->st->w->store, "naming_load", SQL_LOAD, 0, NULL, NULL, NULL, on_load, s) < 0)
        s->busy = false;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct nm_sync *s = arg;
    start_load(s);
}

static void on_poll_result(int status, PGresult *res, const char *err, void *arg)
{
    if (status == -ECANCELED)
        return;
    struct nm_sync *s = arg;
    s->busy = false;
    if (status < 0) {
        log_warn("naming: polling PostgreSQL for other nodes' changes failed: %s", err ? err : "?");
    } else {
        char xmin[32] = "";
        apply_rows(s, res, xmin, sizeof xmin, NULL);
        nm_model_finish(s->st->model);
        if (xmin[0])
            snprintf(s->xmin, sizeof s->xmin, "%s", xmin);
        if (s->st->model->touched || s->st->model->namespaces_changed)
            nm_sync_publish_remote(s);
    }
    schedule(s->poll_ev, s->st->cfg.sync_interval_ms);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct nm_sync *s = arg;
    if (!s->store_up || s->busy) {
        schedule(s->poll_ev, s->st->cfg.sync_interval_ms);
        return;
    }
    if (s->resync_due || !s->have_xmin) {
        start_load(s);
        return;
    }
    const char *params[2] = {s->xmin, s->st->writer};
    s->busy = true;
    if (store_query_prepared(s->st->w->store, "naming_poll", SQL_POLL, 2, params, NULL, NULL, on_poll_result, s) < 0)
        s->busy = false;
}

static void on_nextval(int status, PGresult *res, const char *err, void *arg)
{
    if (status == -ECANCELED)
        return;
    struct nm_sync *s = arg;
    s->nextval_busy = false;
    nm_state_t *st = s->st;
    if (status < 0 || PQntuples(res) != 1) {
        /* the changes stay touched; the next commit or poll publishes them */
        log_warn("naming: cannot draw a change number: %s", err ? err : "no row");
        return;
    }
    uint64_t seq = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    if (st->model->touched || st->model->namespaces_changed)
        nm_publish(st, seq);
    else if (seq > st->model->seq)
        st->model->seq = seq;
}

void nm_sync_publish_remote(struct nm_sync *s)
{
    if (s->nextval_busy)
        return;
    s->nextval_busy = true;
    if (store_query_prepared(s->st->w->store, "naming_nextval", SQL_NEXTVAL, 0, NULL, NULL, NULL, on_nextval, s) < 0)
        s->nextval_busy = false;
}

static void on_cleanup_done(int status, PGresult *res, const char *err, void *arg)
{
    if (status == -ECANCELED)
        return;
    struct nm_sync *s = arg;
    if (status < 0)
        log_warn("naming: removing old soft-deleted rows failed: %s", err ? err : "?");
    schedule(s->cleanup_ev, s->cleanup_period_ms);
}

static void on_cleanup(evutil_socket_t fd, short what, void *arg)
{
    struct nm_sync *s = arg;
    if (!s->store_up) {
        schedule(s->cleanup_ev, s->cleanup_period_ms);
        return;
    }
    char sql[768];
    int r = s->st->cfg.deleted_retention_s;
    snprintf(sql, sizeof sql,
             "DELETE FROM lodestar_instance WHERE deleted AND mtime < now() - make_interval(secs => %d);"
             "DELETE FROM lodestar_service WHERE deleted AND mtime < now() - make_interval(secs => %d);"
             "DELETE FROM lodestar_namespace WHERE deleted AND mtime < now() - make_interval(secs => %d)",
             r, r, r);
    if (store_query(s->st->w->store, sql, 0, NULL, on_cleanup_done, s) < 0)
        schedule(s->cleanup_ev, s->cleanup_period_ms);
}

struct nm_sync *nm_sync_new(nm_state_t *st)
{
    struct nm_sync *s = nm_xcalloc(1, sizeof *s);
    s->st = st;
    struct event_base *base = st->w->child->base;
    s->poll_ev = evtimer_new(base, on_poll, s);
    s->cleanup_ev = evtimer_new(base, on_cleanup, s);
    s->retry_ev = evtimer_new(base, on_retry, s);
    if (!s->poll_ev || !s->cleanup_ev || !s->retry_ev)
        nm_oom();
    /* a quarter of the retention, between 1 s and 1 min */
    long p = (long)st->cfg.deleted_retention_s * 250;
    s->cleanup_period_ms = (int)(p < 1000 ? 1000 : p > 60000 ? 60000 : p);
    schedule(s->cleanup_ev, s->cleanup_period_ms);
    return s;
}

void nm_sync_free(struct nm_sync *s)
{
    if (!s)
        return;
    event_free(s->poll_ev);
    event_free(s->cleanup_ev);
    event_free(s->retry_ev);
    free(s);
}

void nm_sync_store_state(struct nm_sync *s, bool up)
{
    bool was = s->store_up;
    s->store_up = up;
    if (!up || was)
        return;
    if (s->st->loaded)
        s->resync_due = true;
    if (!s->busy)
        start_load(s);
}

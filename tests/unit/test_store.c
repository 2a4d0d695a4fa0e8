/*
 * test_store.c: the PostgreSQL store (workers/common/store.c) against a real,
 * private PostgreSQL per test (tests/support/pgtest.c), on a real libevent
 * loop. Every wait is bounded; a test that waits too long fails with what
 * it was waiting for.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgtest.h"
#include "store.h"

static pgtest_t pg;
static struct event_base *base;

static void setup(void)
{
    base = event_base_new();
    cr_assert_not_null(base, "event_base_new failed");
}

static void teardown(void)
{
    pgtest_stop(&pg);
    if (base)
        event_base_free(base);
    base = NULL;
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 90);

static void start_pg(void)
{
    char err[1024];
    int rc = pgtest_start(&pg, err, sizeof err);
    cr_assert_eq(rc, 0, "pgtest_start failed (%d): %s", rc, err);
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run the loop until pred(arg) holds or ms pass; returns whether it held. */
static bool run_until(bool (*pred)(void *), void *arg, int ms)
{
    long long end = mono_ms() + ms;
    while (!pred(arg)) {
        if (mono_ms() >= end)
            return false;
        struct timeval tv = {0, 20000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    return true;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

static void run_for(int ms) { run_until(never, NULL, ms); }

/* ---- state and result recorders ----------------------------------------- */

typedef struct watch {
    int ups;
    int downs;
    bool up;
    char why[512];
} watch_t;

static void on_state(store_t *st, bool up, const char *why, void *arg)
{
    watch_t *w = arg;
    cr_assert_not_null(st, "state callback without a store");
    cr_assert_not_null(why, "state callback without a reason string");
    w->up = up;
    if (up) {
        w->ups++;
    } else {
        w->downs++;
        snprintf(w->why, sizeof w->why, "%s", why);
    }
}

static bool is_up(void *arg) { return ((watch_t *)arg)->up; }

static bool is_down(void *arg)
{
    watch_t *w = arg;
    return w->downs > 0 && !w->up;
}

typedef struct qres {
    int calls;
    int status;
    char err[512];
    bool had_res;
    ExecStatusType rstatus;
    int ntuples;
    int nfields;
    char v[4][512];
    bool null[4];
} qres_t;

static void on_result(int status, PGresult *res, const char *err, void *arg)
{
    qres_t *q = arg;
    q->calls++;
    q->status = status;
    snprintf(q->err, sizeof q->err, "%s", err ? err : "");
    q->had_res = res != NULL;
    if (!res)
        return;
    q->rstatus = PQresultStatus(res);
    q->ntuples = PQntuples(res);
    q->nfields = PQnfields(res);
    for (int f = 0; f < q->nfields && f < 4 && q->ntuples > 0; f++) {
        q->null[f] = PQgetisnull(res, 0, f);
        snprintf(q->v[f], sizeof q->v[f], "%s", PQgetvalue(res, 0, f));
    }
}

static bool is_done(void *arg) { return ((qres_t *)arg)->calls > 0; }

static store_options_t options(const char *dsn)
{
    store_options_t o = {
        .dsn = dsn,
        .who = "test store",
        .connect_timeout_ms = 3000,
        .reconnect_backoff_max_ms = 200,
        .query_timeout_ms = 15000,
    };
    return o;
}

static store_t *new_up_store(watch_t *w)
{
    store_options_t o = options(pg.dsn);
    store_t *st = store_new(base, &o, on_state, w);
    cr_assert_not_null(st, "store_new returned NULL");
    cr_assert(run_until(is_up, w, 20000), "store did not come up within 20 s (last reason: %s)", w->why);
    return st;
}

/* Run sql through the store and wait for its callback. */
static void store_run(store_t *st, const char *sql, int n, const char *const *params, qres_t *q)
{
    memset(q, 0, sizeof *q);
    cr_assert_eq(store_query(st, sql, n, params, on_result, q), 0, "store_query(%s) refused", sql);
    cr_assert_eq(q->calls, 0, "callback for '%s' ran inside store_query", sql);
    cr_assert(run_until(is_done, q, 20000), "no result for '%s' within 20 s", sql);
    cr_assert_eq(q->calls, 1, "callback for '%s' ran %d times", sql, q->calls);
}

/* The first value of a query run on a separate blocking connection. */
static char *pg_scalar(const char *sql)
{
    char err[1024];
    PGconn *c = pgtest_connect(&pg, NULL, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "'%s' failed: %s", sql, PQresultErrorMessage(r));
    cr_assert_eq(PQntuples(r), 1, "'%s' returned %d rows", sql, PQntuples(r));
    char *v = strdup(PQgetisnull(r, 0, 0) ? "(null)" : PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return v;
}

static void expect_scalar(const char *sql, const char *want)
{
    char *got = pg_scalar(sql);
    cr_assert_str_eq(got, want, "'%s' returned '%s', expected '%s'", sql, got, want);
    free(got);
}

/* ---- tests -------------------------------------------------------------- */

Test(store, comes_up_and_applies_migrations)
{
    start_pg();
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    cr_assert(store_is_up(st), "store_is_up false after the up callback");
    cr_assert_eq(w.ups, 1, "up reported %d times", w.ups);
    cr_assert_eq(w.downs, 0, "down reported before coming up: %s", w.why);
    cr_assert_gt(store_n_migrations, 0, "no migrations embedded");
    cr_assert_eq(store_schema_version(st), store_n_migrations, "schema version %d, %d migrations embedded",
                 store_schema_version(st), store_n_migrations);
    cr_assert_eq(store_schema_version(st), store_migrations[store_n_migrations - 1].version,
                 "schema version is not the last migration's");

    char want[16];
    snprintf(want, sizeof want, "%d", store_n_migrations);
    expect_scalar("SELECT count(*) FROM lodestar_schema_migrations", want);
    expect_scalar("SELECT count(*) FROM lodestar_schema_migrations WHERE version = 1 AND name = 'base'", "1");
    expect_scalar("SELECT to_regclass('lodestar_node') IS NOT NULL", "t");
    expect_scalar("SELECT to_regclass('lodestar_namespace') IS NOT NULL", "t");
    expect_scalar("SELECT string_agg(name, ',') FROM lodestar_namespace WHERE NOT deleted", "default");
    expect_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", "0");

    qres_t q;
    store_run(st, "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()", 0, NULL, &q);
    cr_assert_eq(q.status, 0, "query failed: %s", q.err);
    cr_assert_str_eq(q.v[0], "test store", "application_name is '%s'", q.v[0]);
    store_free(st);
}

Test(store, two_stores_starting_together_both_come_up)
{
    start_pg();
    watch_t w1 = {0}, w2 = {0};
    store_options_t o = options(pg.dsn);
    store_t *a = store_new(base, &o, on_state, &w1);
    store_t *b = store_new(base, &o, on_state, &w2);
    cr_assert(a && b, "store_new returned NULL");
    cr_assert(run_until(is_up, &w1, 20000), "first store not up: %s", w1.why);
    cr_assert(run_until(is_up, &w2, 20000), "second store not up: %s", w2.why);
    cr_assert_eq(w1.downs + w2.downs, 0, "a store reported down while starting: '%s' / '%s'", w1.why, w2.why);
    cr_assert_eq(store_schema_version(a), store_n_migrations, "first store schema version");
    cr_assert_eq(store_schema_version(b), store_n_migrations, "second store schema version");
    char want[16];
    snprintf(want, sizeof want, "%d", store_n_migrations);
    expect_scalar("SELECT count(*) FROM lodestar_schema_migrations", want);
    expect_scalar("SELECT count(*) FROM lodestar_namespace", "1");
    store_free(a);
    store_free(b);
}

Test(store, migrations_not_reapplied_on_restart)
{
    start_pg();
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    const char *sql = "SELECT count(*) || ':' || string_agg(version || '@' || applied_at::text, ',' ORDER BY version) "
                      "FROM lodestar_schema_migrations";
    char *before = pg_scalar(sql);
    store_free(st);

    run_for(50);
    watch_t w2 = {0};
    st = new_up_store(&w2);
    cr_assert_eq(store_schema_version(st), store_n_migrations, "schema version after restart");
    char *after = pg_scalar(sql);
    cr_assert_str_eq(after, before, "migrations changed on restart: before '%s', after '%s'", before, after);
    expect_scalar("SELECT count(*) FROM lodestar_namespace", "1");
    free(before);
    free(after);
    store_free(st);
}

Test(store, parameterised_round_trip_with_null_and_quotes)
{
    start_pg();
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    const char *tricky = "it's a \"quoted\" \\ value; DROP TABLE lodestar_node; --";
    const char *params[] = {tricky, NULL, "41"};
    qres_t q;
    store_run(st, "SELECT $1::text, $2::text, $3::int + 1", 3, params, &q);
    cr_assert_eq(q.status, 0, "query failed: %s", q.err);
    cr_assert_eq(q.rstatus, PGRES_TUPLES_OK, "result status %s", PQresStatus(q.rstatus));
    cr_assert_eq(q.ntuples, 1, "rows: %d", q.ntuples);
    cr_assert_str_eq(q.v[0], tricky, "text parameter came back as '%s'", q.v[0]);
    cr_assert(!q.null[0], "first value is NULL");
    cr_assert(q.null[1], "NULL parameter came back as '%s'", q.v[1]);
    cr_assert_str_eq(q.v[2], "42", "int parameter + 1 is '%s'", q.v[2]);

    const char *ins[] = {"ns-'x'", tricky};
    store_run(st, "INSERT INTO lodestar_namespace (name, comment) VALUES ($1, $2)", 2, ins, &q);
    cr_assert_eq(q.status, 0, "insert failed: %s", q.err);
    cr_assert_eq(q.rstatus, PGRES_COMMAND_OK, "insert result status %s", PQresStatus(q.rstatus));
    char *stored = pg_scalar("SELECT comment FROM lodestar_namespace WHERE name = 'ns-''x'''");
    cr_assert_str_eq(stored, tricky, "stored comment is '%s'", stored);
    free(stored);
    expect_scalar("SELECT to_regclass('lodestar_node') IS NOT NULL", "t");
    store_free(st);
}

Test(store, multi_statement_returns_last_result)
{
    start_pg();
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    qres_t q;
    store_run(st, "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3); SELECT sum(x), 'last' FROM t", 0, NULL,
              &q);
    cr_assert_eq(q.status, 0, "multi-statement query failed: %s", q.err);
    cr_assert_eq(q.rstatus, PGRES_TUPLES_OK, "result status %s", PQresStatus(q.rstatus));
    cr_assert_str_eq(q.v[0], "6", "sum is '%s'", q.v[0]);
    cr_assert_str_eq(q.v[1], "last", "second column is '%s'", q.v[1]);

    /* without a callback: fire and forget, still in order */
    cr_assert_eq(store_query(st, "INSERT INTO t VALUES (10)", 0, NULL, NULL, NULL), 0, "queue without callback");
    store_run(st, "SELECT sum(x) FROM t", 0, NULL, &q);
    cr_assert_eq(q.status, 0, "query failed: %s", q.err);
    cr_assert_str_eq(q.v[0], "16", "sum after the callback-less insert is '%s'", q.v[0]);

    store_run(st, "SELECT 1; UPDATE t SET x = x + 1", 0, NULL, &q);
    cr_assert_eq(q.status, 0, "query failed: %s", q.err);
    cr_assert_eq(q.rstatus, PGRES_COMMAND_OK, "last result should be the UPDATE's, got %s", PQresStatus(q.rstatus));

    store_run(st, "SELECT 1; SELECT * FROM no_such_table; SELECT 3", 0, NULL, &q);
    cr_assert_eq(q.status, -EIO, "an error in the middle gave status %d", q.status);
    cr_assert(strstr(q.err, "no_such_table"), "error does not name the table: %s", q.err);
    cr_assert(!q.had_res, "a failed query passed a result");
    store_free(st);
}

Test(store, sql_error_reports_eio_with_postgres_message)
{
    start_pg();
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    qres_t q;
    store_run(st, "SELECT * FROM no_such_table", 0, NULL, &q);
    cr_assert_eq(q.status, -EIO, "status %d, expected -EIO", q.status);
    cr_assert(strstr(q.err, "relation \"no_such_table\" does not exist"), "message: %s", q.err);
    cr_assert(strstr(q.err, "42P01"), "message lacks the SQLSTATE: %s", q.err);

    const char *bad[] = {"abc"};
    store_run(st, "SELECT $1::int", 1, bad, &q);
    cr_assert_eq(q.status, -EIO, "status %d, expected -EIO", q.status);
    cr_assert(strstr(q.err, "invalid input syntax for type integer"), "message: %s", q.err);

    store_run(st, "SELECT 5", 0, NULL, &q);
    cr_assert_eq(q.status, 0, "query after errors failed: %s", q.err);
    cr_assert_str_eq(q.v[0], "5", "value '%s'", q.v[0]);
    cr_assert(store_is_up(st), "store went down after SQL errors");
    cr_assert_eq(w.downs, 0, "store reported down after SQL errors: %s", w.why);
    store_free(st);
}

#define FIFO_N 100
static int fifo_order[FIFO_N];
static int fifo_seen;
static int fifo_failed;

static void on_fifo(int status, PGresult *res, const char *err, void *arg)
{
    if (status != 0)
        fifo_failed++;
    if (fifo_seen < FIFO_N)
        fifo_order[fifo_seen] = (int)(intptr_t)arg;
    fifo_seen++;
}

Test(store, queries_run_in_fifo_order)
{
    start_pg();
    watch_t w = {0};
    store_options_t o = options(pg.dsn);
    store_t *st = store_new(base, &o, on_state, &w);
    cr_assert_not_null(st, "store_new returned NULL");
    /* everything is queued before the store is even connected */
    qres_t create;
    memset(&create, 0, sizeof create);
    cr_assert_eq(store_query(st, "CREATE TABLE seq (id serial PRIMARY KEY, i int NOT NULL)", 0, NULL, on_result,
                             &create),
                 0, "queue create");
    fifo_seen = fifo_failed = 0;
    for (int i = 0; i < FIFO_N; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *p[] = {v};
        cr_assert_eq(store_query(st, "INSERT INTO seq (i) VALUES ($1)", 1, p, on_fifo, (void *)(intptr_t)i), 0,
                     "queue insert %d", i);
    }
    qres_t sel;
    memset(&sel, 0, sizeof sel);
    cr_assert_eq(store_query(st, "SELECT string_agg(i::text, ',' ORDER BY id), count(*) FROM seq", 0, NULL, on_result,
                             &sel),
                 0, "queue select");
    cr_assert(run_until(is_done, &sel, 30000), "select did not finish (store up: %d, why: %s)", w.up, w.why);
    cr_assert_eq(create.status, 0, "create failed: %s", create.err);
    cr_assert_eq(fifo_seen, FIFO_N, "%d insert callbacks before the select's", fifo_seen);
    cr_assert_eq(fifo_failed, 0, "%d inserts failed", fifo_failed);
    char want[FIFO_N * 4] = "";
    for (int i = 0; i < FIFO_N; i++) {
        cr_assert_eq(fifo_order[i], i, "callback %d belongs to insert %d", i, fifo_order[i]);
        char num[8];
        snprintf(num, sizeof num, i ? ",%d" : "%d", i);
        strcat(want, num);
    }
    cr_assert_eq(sel.status, 0, "select failed: %s", sel.err);
    cr_assert_str_eq(sel.v[0], want, "rows in insertion order: %s", sel.v[0]);
    cr_assert_str_eq(sel.v[1], "100", "row count %s", sel.v[1]);
    store_free(st);
}

Test(store, server_killed_during_query)
{
    start_pg();
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    qres_t q;
    memset(&q, 0, sizeof q);
    cr_assert_eq(store_query(st, "SELECT pg_sleep(30)", 0, NULL, on_result, &q), 0, "queue sleep");
    run_for(300);
    cr_assert_eq(q.calls, 0, "pg_sleep finished early: %d %s", q.status, q.err);
    cr_assert_eq(pgtest_kill(&pg), 0, "pgtest_kill");
    cr_assert(run_until(is_done, &q, 10000), "no callback for the query in flight after the kill");
    cr_assert_eq(q.status, -ECONNRESET, "status %d (%s), expected -ECONNRESET", q.status, q.err);
    cr_assert(q.err[0], "no reason given for the lost query");
    cr_assert(run_until(is_down, &w, 5000), "state callback did not report down");
    cr_assert(w.why[0], "down without a reason");
    cr_assert(!store_is_up(st), "store_is_up after the server died");
    /* keeps retrying against the dead server without crashing */
    run_for(700);
    cr_assert(!w.up, "store claims to be up with no server");
    store_free(st);
}

Test(store, reconnects_after_server_restart)
{
    start_pg();
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    cr_assert_eq(pgtest_kill(&pg), 0, "pgtest_kill");
    cr_assert(run_until(is_down, &w, 10000), "store did not notice the server died");

    /* queued while down: waits for the reconnect */
    qres_t q;
    memset(&q, 0, sizeof q);
    cr_assert_eq(store_query(st, "SELECT 7", 0, NULL, on_result, &q), 0, "queue while down");
    run_for(300);
    cr_assert_eq(q.calls, 0, "query ran while the server was down: %d %s", q.status, q.err);

    char err[1024];
    cr_assert_eq(pgtest_restart(&pg, err, sizeof err), 0, "pgtest_restart: %s", err);
    cr_assert(run_until(is_up, &w, 20000), "store did not reconnect (last reason: %s)", w.why);
    cr_assert_eq(w.ups, 2, "up reported %d times", w.ups);
    cr_assert(run_until(is_done, &q, 10000), "query queued while down never ran");
    cr_assert_eq(q.status, 0, "query queued while down failed: %s", q.err);
    cr_assert_str_eq(q.v[0], "7", "value '%s'", q.v[0]);

    store_run(st, "SELECT count(*) FROM lodestar_schema_migrations", 0, NULL, &q);
    cr_assert_eq(q.status, 0, "query after reconnect failed: %s", q.err);
    char want[16];
    snprintf(want, sizeof want, "%d", store_n_migrations);
    cr_assert_str_eq(q.v[0], want, "migrations after reconnect: %s", q.v[0]);
    store_free(st);
}

Test(store, comes_up_when_server_starts_later)
{
    start_pg();
    cr_assert_eq(pgtest_kill(&pg), 0, "pgtest_kill");
    watch_t w = {0};
    store_options_t o = options(pg.dsn);
    store_t *st = store_new(base, &o, on_state, &w);
    cr_assert_not_null(st, "store_new returned NULL");
    cr_assert(run_until(is_down, &w, 5000), "no down report without a server");
    run_for(500);
    char err[1024];
    cr_assert_eq(pgtest_restart(&pg, err, sizeof err), 0, "pgtest_restart: %s", err);
    cr_assert(run_until(is_up, &w, 20000), "store did not come up once the server started (%s)", w.why);
    cr_assert_eq(store_schema_version(st), store_n_migrations, "schema version");
    store_free(st);
}

static int cancel_calls;
static int cancel_bad;
static int cancel_requeue;
static store_t *cancel_store;

static void on_cancel(int status, PGresult *res, const char *err, void *arg)
{
    if ((int)(intptr_t)arg != cancel_calls || status != -ECANCELED || res || !err || !err[0])
        cancel_bad++;
    cancel_calls++;
    cancel_requeue += store_query(cancel_store, "SELECT 1", 0, NULL, on_cancel, NULL) == -1 ? 0 : 1;
}

Test(store, free_cancels_queued_queries)
{
    start_pg();
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    cancel_store = st;
    cancel_calls = cancel_bad = cancel_requeue = 0;
    cr_assert_eq(store_query(st, "SELECT pg_sleep(10)", 0, NULL, on_cancel, (void *)(intptr_t)0), 0, "queue");
    for (int i = 1; i <= 5; i++)
        cr_assert_eq(store_query(st, "SELECT 1", 0, NULL, on_cancel, (void *)(intptr_t)i), 0, "queue %d", i);
    run_for(200);
    cr_assert_eq(cancel_calls, 0, "a query finished before store_free");
    store_free(st);
    cr_assert_eq(cancel_calls, 6, "%d callbacks on store_free, expected 6", cancel_calls);
    cr_assert_eq(cancel_bad, 0, "%d callbacks out of order or without -ECANCELED", cancel_bad);
    cr_assert_eq(cancel_requeue, 0, "store_query accepted a query while the store was being freed");
    run_for(100);
    cr_assert_eq(cancel_calls, 6, "callbacks after store_free returned");
}

static int fcb_calls;
static int fcb_cancelled;
static store_t *fcb_store;

static void on_free_from_cb(int status, PGresult *res, const char *err, void *arg)
{
    fcb_calls++;
    if (status == -ECANCELED)
        fcb_cancelled++;
    if (fcb_calls == 1) {
        cr_assert_eq(status, 0, "first query failed: %s", err);
        store_free(fcb_store);
        cr_assert_eq(fcb_cancelled, 2, "store_free inside a callback did not cancel the queued queries");
    }
}

Test(store, free_from_inside_a_callback)
{
    start_pg();
    watch_t w = {0};
    fcb_store = new_up_store(&w);
    fcb_calls = fcb_cancelled = 0;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(store_query(fcb_store, "SELECT 1", 0, NULL, on_free_from_cb, NULL), 0, "queue %d", i);
    run_for(500);
    cr_assert_eq(fcb_calls, 3, "%d callbacks", fcb_calls);
    cr_assert_eq(fcb_cancelled, 2, "%d cancelled", fcb_cancelled);
}

Test(store, unreachable_server_keeps_retrying)
{
    char dir[] = "/tmp/lodestar-nopg-XXXXXX";
    cr_assert_not_null(mkdtemp(dir), "mkdtemp");
    char dsn[256];
    snprintf(dsn, sizeof dsn, "host=%s port=5432 dbname=lodestar user=lodestar", dir);
    watch_t w = {0};
    store_options_t o = options(dsn);
    o.query_timeout_ms = 400;
    store_t *st = store_new(base, &o, on_state, &w);
    cr_assert_not_null(st, "store_new returned NULL");
    cr_assert_eq(w.downs, 0, "state callback ran inside store_new");
    qres_t q;
    memset(&q, 0, sizeof q);
    cr_assert_eq(store_query(st, "SELECT 1", 0, NULL, on_result, &q), 0, "queue");
    cr_assert(run_until(is_down, &w, 3000), "no down report for an unreachable server");
    cr_assert(strstr(w.why, dir), "reason does not name the socket directory: %s", w.why);
    cr_assert(run_until(is_done, &q, 3000), "queued query did not time out");
    cr_assert_eq(q.status, -ETIMEDOUT, "status %d (%s), expected -ETIMEDOUT", q.status, q.err);
    run_for(800);
    cr_assert(!w.up, "up without a server");
    cr_assert(!store_is_up(st), "store_is_up without a server");
    cr_assert_eq(w.downs, 1, "down reported %d times for the same reason", w.downs);
    store_free(st);
    rmdir(dir);
}

Test(store, query_in_flight_times_out)
{
    start_pg();
    watch_t w = {0};
    store_options_t o = options(pg.dsn);
    o.query_timeout_ms = 500;
    store_t *st = store_new(base, &o, on_state, &w);
    cr_assert(run_until(is_up, &w, 20000), "store not up: %s", w.why);
    qres_t slow;
    memset(&slow, 0, sizeof slow);
    long long t0 = mono_ms();
    cr_assert_eq(store_query(st, "SELECT pg_sleep(20)", 0, NULL, on_result, &slow), 0, "queue");
    cr_assert(run_until(is_done, &slow, 5000), "slow query not failed");
    long long took = mono_ms() - t0;
    cr_assert_eq(slow.status, -ETIMEDOUT, "status %d (%s), expected -ETIMEDOUT", slow.status, slow.err);
    cr_assert(took >= 450 && took < 3000, "timed out after %lld ms, expected about 500", took);
    cr_assert(run_until(is_up, &w, 10000), "store did not come back after the timeout (%s)", w.why);
    qres_t q;
    store_run(st, "SELECT 'after'", 0, NULL, &q);
    cr_assert_eq(q.status, 0, "query after a timeout failed: %s", q.err);
    cr_assert_str_eq(q.v[0], "after", "value '%s'", q.v[0]);
    store_free(st);
}

Test(store, failing_migration_reports_down_and_retries)
{
    start_pg();
    char err[1024];
    cr_assert_eq(pgtest_exec(&pg, "CREATE TABLE lodestar_node (x int)", err, sizeof err), 0, "%s", err);
    watch_t w = {0};
    store_options_t o = options(pg.dsn);
    store_t *st = store_new(base, &o, on_state, &w);
    cr_assert(run_until(is_down, &w, 10000), "no down report for a failing migration");
    cr_assert(strstr(w.why, "0001_base"), "reason does not name the migration: %s", w.why);
    cr_assert(strstr(w.why, "already exists"), "reason lacks PostgreSQL's message: %s", w.why);
    run_for(500);
    cr_assert(!w.up, "store went up with a failed migration");
    cr_assert_eq(store_schema_version(st), 0, "schema version %d with nothing applied", store_schema_version(st));
    expect_scalar("SELECT count(*) FROM lodestar_schema_migrations", "0");
    expect_scalar("SELECT to_regclass('lodestar_namespace') IS NULL", "t");

    cr_assert_eq(pgtest_exec(&pg, "DROP TABLE lodestar_node", err, sizeof err), 0, "%s", err);
    cr_assert(run_until(is_up, &w, 10000), "store did not come up after the obstacle went away (%s)", w.why);
    cr_assert_eq(store_schema_version(st), store_n_migrations, "schema version");
    expect_scalar("SELECT count(*) FROM lodestar_namespace WHERE name = 'default'", "1");
    store_free(st);
}

Test(store, backend_terminated_during_query)
{
    start_pg();
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    qres_t q;
    memset(&q, 0, sizeof q);
    cr_assert_eq(store_query(st, "SELECT pg_sleep(30)", 0, NULL, on_result, &q), 0, "queue sleep");
    run_for(300);
    char err[1024];
    cr_assert_eq(pgtest_exec(&pg,
                             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = 'test store'",
                             err, sizeof err),
                 0, "%s", err);
    cr_assert(run_until(is_done, &q, 10000), "no callback after the backend was terminated");
    cr_assert_eq(q.status, -ECONNRESET, "status %d (%s), expected -ECONNRESET", q.status, q.err);
    cr_assert(strstr(q.err, "terminating connection"), "reason lacks PostgreSQL's message: %s", q.err);
    cr_assert_geq(w.downs, 1, "no down report");
    cr_assert(run_until(is_up, &w, 10000), "store did not reconnect (%s)", w.why);
    store_run(st, "SELECT 'back'", 0, NULL, &q);
    cr_assert_eq(q.status, 0, "query after the reconnect failed: %s", q.err);
    store_free(st);
}

static int sfree_calls;

static void on_state_free(store_t *st, bool up, const char *why, void *arg)
{
    sfree_calls++;
    store_free(st);
}

Test(store, free_from_inside_the_state_callback)
{
    char dir[] = "/tmp/lodestar-nopg-XXXXXX";
    cr_assert_not_null(mkdtemp(dir), "mkdtemp");
    char dsn[256];
    snprintf(dsn, sizeof dsn, "host=%s port=5432 dbname=lodestar user=lodestar", dir);
    store_options_t o = options(dsn);
    sfree_calls = 0;
    store_t *st = store_new(base, &o, on_state_free, NULL);
    cr_assert_not_null(st, "store_new returned NULL");
    qres_t q;
    memset(&q, 0, sizeof q);
    cr_assert_eq(store_query(st, "SELECT 1", 0, NULL, on_result, &q), 0, "queue");
    run_for(600);
    cr_assert_eq(sfree_calls, 1, "state callback ran %d times", sfree_calls);
    cr_assert_eq(q.calls, 1, "queued query callback ran %d times", q.calls);
    cr_assert_eq(q.status, -ECANCELED, "status %d (%s), expected -ECANCELED", q.status, q.err);
    rmdir(dir);
}

/*
 * test_nm_store.c: the store's prepared, pipelined queries
 * (store_query_prepared in workers/common/store.c), which the naming
 * worker's write path and poll use, against a real private PostgreSQL on a
 * real libevent loop: text and binary parameters, statements prepared once
 * per connection (and again after a reconnect), results in queue order, a
 * failing query failing alone, a broken statement failing every time with
 * PostgreSQL's message, plain queries queued behind pipelined ones, and
 * queries in flight when the store is freed. Every wait is bounded.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtest.h"
#include "store.h"

static pgtest_t pg;
static struct event_base *base;

static void setup(void)
{
    base = event_base_new();
    cr_assert_not_null(base);
    char err[1024];
    int rc = pgtest_start(&pg, err, sizeof err);
    cr_assert_eq(rc, 0, "pgtest_start failed (%d): %s", rc, err);
}

static void teardown(void)
{
    pgtest_stop(&pg);
    if (base)
        event_base_free(base);
    base = NULL;
}

TestSuite(nm_store, .init = setup, .fini = teardown, .timeout = 90);

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

typedef struct watch {
    bool up;
    int ups;
} watch_t;

static void on_state(store_t *st, bool up, const char *why, void *arg)
{
    watch_t *w = arg;
    w->up = up;
    w->ups += up;
}

static bool is_up(void *arg) { return ((watch_t *)arg)->up; }

/* One callback's record; order[] notes the sequence callbacks ran in. */
typedef struct qres {
    int calls, status, order;
    char err[512];
    char v[512];
    int ntuples;
} qres_t;

static int next_order;

static void on_result(int status, PGresult *res, const char *err, void *arg)
{
    qres_t *q = arg;
    q->calls++;
    q->status = status;
    q->order = ++next_order;
    snprintf(q->err, sizeof q->err, "%s", err ? err : "");
    if (res) {
        q->ntuples = PQntuples(res);
        if (q->ntuples > 0 && PQnfields(res) > 0)
            snprintf(q->v, sizeof q->v, "%s", PQgetvalue(res, 0, 0));
    }
}

typedef struct all {
    qres_t *q;
    int n;
} all_t;

static bool all_done(void *arg)
{
    all_t *a = arg;
    for (int i = 0; i < a->n; i++)
        if (a->q[i].calls == 0)
            return false;
    return true;
}

static store_t *new_up_store(watch_t *w)
{
    store_options_t o = {.dsn = pg.dsn, .who = "nm store test", .connect_timeout_ms = 3000,
                         .reconnect_backoff_max_ms = 200, .query_timeout_ms = 15000};
    store_t *st = store_new(base, &o, on_state, w);
    cr_assert_not_null(st);
    cr_assert(run_until(is_up, w, 20000), "store did not come up");
    return st;
}

static void wait_all(qres_t *q, int n)
{
    all_t a = {q, n};
    cr_assert(run_until(all_done, &a, 20000), "not every query completed within 20 s");
    for (int i = 0; i < n; i++)
        cr_assert_eq(q[i].calls, 1, "query %d: %d callbacks", i, q[i].calls);
}

static const char SQL_ADD[] = "SELECT ($1::int4 + $2::int4)::text";

Test(nm_store, prepared_queries_pipeline_in_order_and_fail_alone)
{
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    enum { N = 40 };
    qres_t q[N];
    memset(q, 0, sizeof q);
    next_order = 0;
    for (int i = 0; i < N; i++) {
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", i);
        snprintf(b, sizeof b, "%d", i == 7 ? 2147483647 : 1000); /* item 7 overflows */
        const char *v[2] = {a, b};
        cr_assert_eq(store_query_prepared(st, "add", SQL_ADD, 2, v, NULL, NULL, on_result, &q[i]), 0);
    }
    cr_assert_eq(q[0].calls, 0, "a callback ran inside store_query_prepared");
    wait_all(q, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(q[i].order, i + 1, "query %d completed as number %d", i, q[i].order);
        if (i == 7) {
            cr_assert_eq(q[i].status, -EIO, "the overflow: status %d", q[i].status);
            cr_assert(strstr(q[i].err, "out of range"), "PostgreSQL's message: %s", q[i].err);
            continue;
        }
        char want[16];
        snprintf(want, sizeof want, "%d", i + 1000);
        cr_assert_eq(q[i].status, 0, "query %d: %s", i, q[i].err);
        cr_assert_str_eq(q[i].v, want, "query %d", i);
    }
    store_free(st);
}

Test(nm_store, binary_array_parameters)
{
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    /* int4[] {5, -2, 40} in PostgreSQL's binary array form: ndim, has-null,
     * element type (int4 = 23), then per dimension (length, lower bound),
     * then per element (length, big-endian value) */
    uint32_t arr[3 + 2 + 6] = {htonl(1), htonl(0), htonl(23), htonl(3), htonl(1),
                               htonl(4), htonl(5), htonl(4), htonl((uint32_t)-2), htonl(4), htonl(40)};
    const char *v[2] = {(const char *)arr, "x\"y"};
    int len[2] = {(int)sizeof arr, 0};
    int fmt[2] = {1, 0};
    qres_t q = {0};
    cr_assert_eq(store_query_prepared(st, "sum", "SELECT (SELECT sum(x) FROM unnest($1::int4[]) x)::text || $2::text",
                                      2, v, len, fmt, on_result, &q),
                 0);
    wait_all(&q, 1);
    cr_assert_eq(q.status, 0, "%s", q.err);
    cr_assert_str_eq(q.v, "43x\"y");
    store_free(st);
}

Test(nm_store, a_broken_statement_fails_every_time_and_harms_nothing_else)
{
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    const char *v[2] = {"1", "2"};
    qres_t q[4];
    memset(q, 0, sizeof q);
    cr_assert_eq(store_query_prepared(st, "bad", "SELECT $1::int4 +", 1, v, NULL, NULL, on_result, &q[0]), 0);
    cr_assert_eq(store_query_prepared(st, "add", SQL_ADD, 2, v, NULL, NULL, on_result, &q[1]), 0);
    cr_assert_eq(store_query_prepared(st, "bad", "SELECT $1::int4 +", 1, v, NULL, NULL, on_result, &q[2]), 0);
    wait_all(q, 3);
    cr_assert_eq(q[0].status, -EIO);
    cr_assert(strstr(q[0].err, "syntax error"), "PostgreSQL's message: %s", q[0].err);
    cr_assert_eq(q[1].status, 0, "%s", q[1].err);
    cr_assert_str_eq(q[1].v, "3");
    /* sent while the Prepare was still on its way: it fails too */
    cr_assert_eq(q[2].status, -EIO);
    /* the failed Prepare is not remembered: a later use prepares the
     * statement again (and fails the same way) rather than finding it
     * "unknown" */
    cr_assert_eq(store_query_prepared(st, "bad", "SELECT $1::int4 +", 1, v, NULL, NULL, on_result, &q[3]), 0);
    wait_all(&q[3], 1);
    cr_assert(strstr(q[3].err, "syntax error"), "PostgreSQL's message: %s", q[3].err);
    store_free(st);
}

Test(nm_store, plain_queries_wait_behind_the_pipeline)
{
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    qres_t q[5];
    memset(q, 0, sizeof q);
    next_order = 0;
    const char *v[2] = {"1", "1"};
    cr_assert_eq(store_query_prepared(st, "add", SQL_ADD, 2, v, NULL, NULL, on_result, &q[0]), 0);
    cr_assert_eq(store_query_prepared(st, "add", SQL_ADD, 2, v, NULL, NULL, on_result, &q[1]), 0);
    /* several statements in one plain query: not allowed in a pipeline */
    cr_assert_eq(store_query(st, "CREATE TABLE t (x int); SELECT 'plain'", 0, NULL, on_result, &q[2]), 0);
    const char *p[1] = {"7"};
    cr_assert_eq(store_query(st, "SELECT $1::text", 1, p, on_result, &q[3]), 0);
    cr_assert_eq(store_query_prepared(st, "add", SQL_ADD, 2, v, NULL, NULL, on_result, &q[4]), 0);
    wait_all(q, 5);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(q[i].status, 0, "query %d: %s", i, q[i].err);
        cr_assert_eq(q[i].order, i + 1, "query %d completed as number %d", i, q[i].order);
    }
    cr_assert_str_eq(q[2].v, "plain");
    cr_assert_str_eq(q[3].v, "7");
    cr_assert_str_eq(q[4].v, "2");
    store_free(st);
}

Test(nm_store, statements_are_prepared_again_on_a_new_connection)
{
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    const char *v[2] = {"20", "22"};
    qres_t q[3];
    memset(q, 0, sizeof q);
    cr_assert_eq(store_query_prepared(st, "add", SQL_ADD, 2, v, NULL, NULL, on_result, &q[0]), 0);
    wait_all(q, 1);
    cr_assert_str_eq(q[0].v, "42");
    char err[1024];
    cr_assert_eq(pgtest_exec(&pg,
                             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = 'nm store test'",
                             err, sizeof err),
                 0, "%s", err);
    /* the store notices on its next query; then it reconnects */
    cr_assert_eq(store_query(st, "SELECT 1", 0, NULL, on_result, &q[1]), 0);
    wait_all(&q[1], 1);
    cr_assert(run_until(is_up, &w, 10000), "the store did not come back");
    cr_assert_eq(w.ups, 2, "the store did not reconnect (ups %d)", w.ups);
    cr_assert_eq(store_query_prepared(st, "add", SQL_ADD, 2, v, NULL, NULL, on_result, &q[2]), 0);
    wait_all(&q[2], 1);
    cr_assert_eq(q[2].status, 0, "after the reconnect: %s", q[2].err);
    cr_assert_str_eq(q[2].v, "42");
    store_free(st);
}

Test(nm_store, freeing_the_store_cancels_queries_in_flight)
{
    watch_t w = {0};
    store_t *st = new_up_store(&w);
    qres_t q[3];
    memset(q, 0, sizeof q);
    const char *v[1] = {"20"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(store_query_prepared(st, "nap", "SELECT pg_sleep($1::int4)::text", 1, v, NULL, NULL,
                                          on_result, &q[i]),
                     0);
    /* let them go out */
    struct timeval tv = {0, 200000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    cr_assert_eq(q[0].calls, 0);
    store_free(st);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(q[i].calls, 1, "query %d: %d callbacks", i, q[i].calls);
        cr_assert_eq(q[i].status, -ECANCELED, "query %d: status %d", i, q[i].status);
    }
}

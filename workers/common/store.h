/*
 * store.h: the PostgreSQL store as every worker sees it.
 *
 * One libpq connection per store_t, in non-blocking mode, driven by the
 * worker's libevent loop (PQconnectStart/PQconnectPoll, PQsendQueryParams,
 * PQsocket). Queries queue and run in order; prepared queries are
 * pipelined (several in flight, each its own transaction). On start (and after every
 * reconnect) the store applies the versioned migrations embedded from
 * deploy/sql/NNNN_name.sql under a PostgreSQL advisory lock, so several nodes may
 * start at once; only then does it report itself up.
 *
 * When PostgreSQL goes away the store never crashes the worker: the query in
 * flight fails (callback with status -ECONNRESET), queued queries wait for
 * the reconnect (or fail on their own timeout), and the store reconnects with
 * exponential backoff up to store.reconnect_backoff_max_ms.
 */
#ifndef LODESTAR_STORE_H
#define LODESTAR_STORE_H

#include <stdbool.h>
#include <libpq-fe.h>

struct event_base;

typedef struct store store_t;

/* status 0: res holds a PGRES_COMMAND_OK / PGRES_TUPLES_OK result (owned by
 * the store, cleared after the callback). status < 0: err says why
 * (-EIO query error with PostgreSQL's message, -ECONNRESET connection lost,
 * -ETIMEDOUT queued too long, -ECANCELED store freed); res may be NULL. */
typedef void (*store_result_cb)(int status, PGresult *res, const char *err, void *arg);
/* The store became usable (connected and migrated) or stopped being usable. */
typedef void (*store_state_cb)(store_t *st, bool up, const char *why, void *arg);

typedef struct store_options {
    const char *dsn;
    const char *who;                /* label in logs and application_name, e.g. "naming worker" */
    int connect_timeout_ms;         /* default 5000 */
    int reconnect_backoff_max_ms;   /* default 5000 */
    int query_timeout_ms;           /* queued + running bound, default 30000 */
} store_options_t;

store_t *store_new(struct event_base *base, const store_options_t *opt, store_state_cb on_state, void *arg);
/* Queue a query with text parameters ($1..$n; NULL values allowed). The SQL
 * may hold several statements only when nparams is 0 (the callback then gets
 * the last statement's result; any failing statement fails the query). The
 * SQL and parameters are copied; cb always runs later, from the loop,
 * exactly once (unless -1 is returned). Returns 0, or -1 when the
 * store is being freed, sql is NULL, nparams < 0 or memory runs out (cb not
 * called). */
int store_query(store_t *st, const char *sql, int nparams, const char *const *params, store_result_cb cb,
                void *arg);
/* Queue one SQL statement to run as the prepared statement `name`: prepared
 * on each connection the first time it is used there (every use of a name
 * must pass the same SQL), then executed with parameters in text
 * (formats NULL, or formats[i] 0: NUL-terminated) or binary (formats[i] 1:
 * lengths[i] bytes, PostgreSQL's binary form of the parameter's type; the
 * SQL must cast the parameter, as in $1::int4[]). Unlike store_query, such
 * queries do not wait for each other: up to 32 are in flight at once, each
 * in its own implicit transaction, so one that fails does not affect the
 * ones sent after it. Results still come back, and callbacks run, in queue
 * order; a store_query queued behind them waits until they completed.
 * Same return values and callback contract as store_query. */
int store_query_prepared(store_t *st, const char *name, const char *sql, int nparams, const char *const *values,
                         const int *lengths, const int *formats, store_result_cb cb, void *arg);
bool store_is_up(const store_t *st);
/* Highest migration version applied (0 before the first successful start). */
int store_schema_version(const store_t *st);
/* Fail queued queries with -ECANCELED (callbacks run) and close. */
void store_free(store_t *st);

/* The embedded migrations, in version order (generated from deploy/sql at build time). */
typedef struct store_migration {
    int version;
    const char *name;
    const char *sql;
} store_migration_t;
extern const store_migration_t store_migrations[];
extern const int store_n_migrations;

#endif

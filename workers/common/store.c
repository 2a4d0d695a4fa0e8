/*
 * store.c: the PostgreSQL store (see store.h), one non-blocking libpq
 * connection driven by the worker's libevent loop.
 *
 * Rules this file keeps:
 *  - After store_new no libpq call blocks: connecting is PQconnectPoll on
 *    socket readiness, queries are PQsend* + PQflush + PQconsumeInput, and
 *    migrations are ordinary queued queries. (libpq resolves host names
 *    synchronously inside PQconnectPoll; give numeric addresses or socket
 *    directories where that matters.)
 *  - Queries are sent in the order they were queued. Internal queries (the
 *    migration steps) go ahead of the user queue; user queries are sent only
 *    while the store is up. A plain query (store_query) is sent alone: only
 *    when nothing else is in flight, and nothing follows it until it
 *    completed. Prepared queries (store_query_prepared) are pipelined: up
 *    to STORE_PIPELINE_MAX of them are in flight at once, in libpq pipeline
 *    mode, each followed by its own Sync (so each is its own implicit
 *    transaction and a failing one fails alone). Results complete in the
 *    order the queries were sent; the connection leaves pipeline mode
 *    before the next plain query.
 *  - A statement is prepared on a connection the first time a query names
 *    it (the Prepare travels in the same pipeline segment as that query);
 *    the set of prepared names is forgotten with the connection.
 *  - Every callback may re-enter the store (queue a query, free the store).
 *    Code that runs a callback checks st->freeing right after and unwinds
 *    without touching the connection; the memory itself is released when
 *    the outermost entry point (libevent callback or public function) leaves.
 *  - Socket events are deleted before anything is called back and before
 *    PQfinish, and recreated whenever libpq may have switched sockets (every
 *    connection poll step, every new connection).
 *  - The state callback fires on every change between up and down, and again
 *    while down when the reason changes (for example from "connection
 *    refused" to "migration 0002_x failed: ...").
 */
#include "store.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define STORE_BACKOFF_START_MS 100
#define STORE_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define STORE_DEFAULT_BACKOFF_MAX_MS 5000
#define STORE_DEFAULT_QUERY_TIMEOUT_MS 30000
#define STORE_PIPELINE_MAX 32

enum store_state {
    ST_WAITING,    /* no connection; ev_timer starts the next attempt */
    ST_CONNECTING, /* PQconnectPoll in progress; ev_timer bounds it */
    ST_MIGRATING,  /* connected, running the internal migration queries */
    ST_UP,         /* connected and migrated: user queries flow */
};

struct store;
/* Completion of an internal query: status 0 (res valid) or -EIO (err). */
typedef void (*internal_done_fn)(struct store *st, int status, PGresult *res, const char *err);

typedef struct sq {
    struct sq *next;
    char *sql;
    int nparams;
    char **params;
    int *lengths;       /* prepared query: byte length of each parameter */
    int *formats;       /* prepared query: 0 text, 1 binary */
    char *stmt;         /* prepared statement name; NULL for a plain query */
    bool prepares;      /* in flight: the statement's Prepare went out with it */
    int ends;           /* in flight: end-of-command markers seen so far */
    bool internal;      /* a migration step: done runs, cb is NULL */
    store_result_cb cb; /* user query; may be NULL */
    void *arg;
    internal_done_fn done;
    const char *what;      /* internal: step name for messages */
    uint64_t deadline_ms;  /* monotonic */
} sq_t;

struct store {
    struct event_base *base;
    char *dsn;
    char *who;
    int connect_timeout_ms;
    int backoff_max_ms;
    int query_timeout_ms;
    store_state_cb on_state;
    void *state_arg;

    enum store_state state;
    PGconn *conn;
    struct event *ev_conn; /* one-shot readiness while connecting */
    struct event *ev_rd;   /* persistent read while connected */
    struct event *ev_wr;   /* persistent write while output is pending */
    struct event *ev_timer;
    struct event *ev_deadline;
    struct event *ev_kick; /* runs pump() from the loop after store_query */
    int backoff_ms;

    sq_t *uhead, *utail; /* user queue */
    sq_t *ihead, *itail; /* internal queue */
    sq_t *inflight;      /* the oldest query in flight (the one results belong to) */
    sq_t *inflight_tail; /* the newest; queries in flight are linked through next */
    int n_inflight;
    bool pipeline;       /* the connection is in libpq pipeline mode */
    char **prepared;     /* statement names prepared (or being prepared) on this connection */
    int n_prepared;
    PGresult *last;   /* last result of the query in flight */
    char *qerr;       /* first error of the query in flight */
    bool unsupported; /* the query in flight started COPY: drop the connection */
    bool fatal;       /* the server ended the session (FATAL/PANIC error) */

    /* migration progress of the current connection */
    int *applied;
    int n_applied;
    int mig_idx;
    int schema_version;

    bool state_known;
    bool state_up;
    char state_why[512];

    int depth;
    bool freeing;
};

static void store_destroy(store_t *st);
static void pump(store_t *st);
static void start_migrations(store_t *st);
static void done_apply(store_t *st, int status, PGresult *res, const char *err);

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timeval ms_tv(uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* Copy s into out with every run of whitespace (libpq's multi-line messages)
 * folded into one space and trailing whitespace removed. */
static void squash(char *out, size_t outlen, const char *s)
{
    size_t o = 0;
    bool space = false;
    if (!outlen)
        return;
    for (; s && *s && o + 1 < outlen; s++) {
        if (*s == '\n' || *s == '\t' || *s == '\r' || *s == ' ') {
            space = o > 0;
            continue;
        }
        if (space && o + 2 < outlen)
            out[o++] = ' ';
        space = false;
        out[o++] = *s;
    }
    out[o] = '\0';
}

static const char *conn_error(const store_t *st, char *buf, size_t len)
{
    squash(buf, len, st->conn ? PQerrorMessage(st->conn) : "");
    if (!buf[0])
        snprintf(buf, len, "unknown libpq error");
    return buf;
}

/* PostgreSQL's own words for a failed result: primary message, detail and
 * SQLSTATE, on one line. */
static char *result_error(const PGresult *r)
{
    const char *prim = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    char buf[1024], msg[1024];
    if (prim) {
        snprintf(buf, sizeof buf, "%s%s%s%s%s%s", prim, detail ? " (" : "", detail ? detail : "",
                 detail ? ")" : "", state ? " SQLSTATE " : "", state ? state : "");
    } else {
        const char *m = PQresultErrorMessage(r);
        snprintf(buf, sizeof buf, "%s", m && *m ? m : PQresStatus(PQresultStatus(r)));
    }
    squash(msg, sizeof msg, buf);
    return strdup(msg);
}

static void notice_cb(void *arg, const char *message)
{
    store_t *st = arg;
    char buf[1024];
    squash(buf, sizeof buf, message);
    log_debug("store (%s): server notice: %s", st->who, buf);
}

/* ---- queue entries ------------------------------------------------------ */

static void sq_free(sq_t *q)
{
    if (!q)
        return;
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->lengths);
    free(q->formats);
    free(q->stmt);
    free(q->sql);
    free(q);
}

static sq_t *sq_new(const store_t *st, const char *sql, int nparams, const char *const *params)
{
    sq_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->sql = strdup(sql);
    if (!q->sql)
        goto fail;
    if (nparams > 0) {
        q->params = calloc((size_t)nparams, sizeof *q->params);
        if (!q->params)
            goto fail;
        q->nparams = nparams;
        for (int i = 0; i < nparams; i++) {
            if (params && params[i] && !(q->params[i] = strdup(params[i])))
                goto fail;
        }
    }
    q->deadline_ms = now_ms() + (uint64_t)st->query_timeout_ms;
    return q;
fail:
    sq_free(q);
    return NULL;
}

/* A prepared query's entry: parameters copied with their lengths (binary
 * ones may hold NUL bytes). */
static sq_t *sq_new_prepared(const store_t *st, const char *name, const char *sql, int nparams,
                             const char *const *values, const int *lengths, const int *formats)
{
    sq_t *q = sq_new(st, sql, 0, NULL);
    if (!q)
        return NULL;
    q->stmt = strdup(name);
    if (!q->stmt)
        goto fail;
    if (nparams > 0) {
        q->params = calloc((size_t)nparams, sizeof *q->params);
        q->lengths = calloc((size_t)nparams, sizeof *q->lengths);
        q->formats = calloc((size_t)nparams, sizeof *q->formats);
        if (!q->params || !q->lengths || !q->formats)
            goto fail;
        q->nparams = nparams;
        for (int i = 0; i < nparams; i++) {
            if (!values || !values[i])
                continue;
            bool binary = formats && formats[i] == 1;
            size_t len = binary ? (size_t)(lengths ? lengths[i] : 0) : strlen(values[i]);
            q->params[i] = malloc(len + 1);
            if (!q->params[i])
                goto fail;
            memcpy(q->params[i], values[i], len);
            q->params[i][len] = '\0';
            q->lengths[i] = (int)len;
            q->formats[i] = binary ? 1 : 0;
        }
    }
    return q;
fail:
    sq_free(q);
    return NULL;
}

static void queue_push(sq_t **head, sq_t **tail, sq_t *q)
{
    q->next = NULL;
    if (*tail)
        (*tail)->next = q;
    else
        *head = q;
    *tail = q;
}

static sq_t *queue_pop(sq_t **head, sq_t **tail)
{
    sq_t *q = *head;
    if (q) {
        *head = q->next;
        if (!*head)
            *tail = NULL;
        q->next = NULL;
    }
    return q;
}

static void inflight_push(store_t *st, sq_t *q)
{
    q->next = NULL;
    if (st->inflight_tail)
        st->inflight_tail->next = q;
    else
        st->inflight = q;
    st->inflight_tail = q;
    st->n_inflight++;
}

static sq_t *inflight_pop(store_t *st)
{
    sq_t *q = st->inflight;
    if (q) {
        st->inflight = q->next;
        if (!st->inflight)
            st->inflight_tail = NULL;
        st->n_inflight--;
        q->next = NULL;
    }
    return q;
}

/* Hand a finished query to its owner and free it. Returns false when the
 * callback freed the store (the caller must unwind at once). */
static bool deliver(store_t *st, sq_t *q, int status, PGresult *res, const char *err)
{
    if (q->internal) {
        if (!st->freeing)
            q->done(st, status, res, err);
    } else if (q->cb) {
        q->cb(status, res, err, q->arg);
    }
    sq_free(q);
    return !st->freeing;
}

/* ---- entry and exit of every outside call ------------------------------ */

static void enter(store_t *st) { st->depth++; }

static void rearm_deadline(store_t *st)
{
    uint64_t next = UINT64_MAX;
    if (st->inflight)
        next = st->inflight->deadline_ms;
    if (st->ihead && st->ihead->deadline_ms < next)
        next = st->ihead->deadline_ms;
    if (st->uhead && st->uhead->deadline_ms < next)
        next = st->uhead->deadline_ms;
    if (next == UINT64_MAX) {
        evtimer_del(st->ev_deadline);
        return;
    }
    uint64_t now = now_ms();
    struct timeval tv = ms_tv(next > now ? next - now : 0);
    evtimer_add(st->ev_deadline, &tv);
}

static void leave(store_t *st)
{
    if (st->depth == 1 && !st->freeing)
        rearm_deadline(st);
    if (--st->depth == 0 && st->freeing)
        store_destroy(st);
}

/* ---- state reporting ---------------------------------------------------- */

static bool report_up(store_t *st)
{
    if (st->state_known && st->state_up)
        return true;
    st->state_known = true;
    st->state_up = true;
    st->state_why[0] = '\0';
    if (st->on_state)
        st->on_state(st, true, "", st->state_arg);
    return !st->freeing;
}

static bool report_down(store_t *st, const char *why)
{
    if (st->state_known && !st->state_up && strcmp(st->state_why, why) == 0)
        return true;
    st->state_known = true;
    st->state_up = false;
    snprintf(st->state_why, sizeof st->state_why, "%s", why);
    if (st->on_state)
        st->on_state(st, false, st->state_why, st->state_arg);
    return !st->freeing;
}

/* ---- connection --------------------------------------------------------- */

static void free_event(struct event **ev)
{
    if (*ev) {
        event_free(*ev);
        *ev = NULL;
    }
}

static void clear_inflight_results(store_t *st)
{
    if (st->last) {
        PQclear(st->last);
        st->last = NULL;
    }
    free(st->qerr);
    st->qerr = NULL;
    st->unsupported = false;
    st->fatal = false;
}

static bool is_prepared(const store_t *st, const char *name)
{
    for (int i = 0; i < st->n_prepared; i++)
        if (strcmp(st->prepared[i], name) == 0)
            return true;
    return false;
}

static void forget_prepared(store_t *st, const char *name)
{
    for (int i = 0; i < st->n_prepared; i++)
        if (strcmp(st->prepared[i], name) == 0) {
            free(st->prepared[i]);
            st->prepared[i] = st->prepared[--st->n_prepared];
            return;
        }
}

static void forget_all_prepared(store_t *st)
{
    for (int i = 0; i < st->n_prepared; i++)
        free(st->prepared[i]);
    free(st->prepared);
    st->prepared = NULL;
    st->n_prepared = 0;
}

/* Drop the connection and everything tied to it; no callbacks run here.
 * The user queries in flight (if any) are returned, oldest first and
 * linked through next, to the caller to fail. */
static sq_t *close_conn(store_t *st)
{
    free_event(&st->ev_conn);
    free_event(&st->ev_rd);
    free_event(&st->ev_wr);
    if (st->ev_timer)
        evtimer_del(st->ev_timer);
    if (st->conn) {
        PQfinish(st->conn);
        st->conn = NULL;
    }
    clear_inflight_results(st);
    sq_t *q;
    while ((q = queue_pop(&st->ihead, &st->itail)))
        sq_free(q);
    free(st->applied);
    st->applied = NULL;
    st->n_applied = 0;
    st->mig_idx = 0;
    forget_all_prepared(st);
    st->pipeline = false;
    sq_t *head = NULL, **tail = &head;
    while ((q = inflight_pop(st))) {
        if (q->internal) {
            sq_free(q);
            continue;
        }
        *tail = q;
        tail = &q->next;
    }
    return head;
}

/* Fail the queries close_conn returned. Returns false when a callback freed
 * the store; the rest are then released without callbacks. */
static bool fail_list(store_t *st, sq_t *q, int status, const char *why)
{
    while (q) {
        sq_t *next = q->next;
        q->next = NULL;
        if (!deliver(st, q, status, NULL, why)) {
            while (next) {
                sq_t *n = next->next;
                sq_free(next);
                next = n;
            }
            return false;
        }
        q = next;
    }
    return true;
}

/* Start the backoff timer; returns the delay used. The delay doubles on
 * every failure up to backoff_max_ms and starts over once the store is up. */
static int schedule_reconnect(store_t *st)
{
    int delay = st->backoff_ms;
    st->backoff_ms = st->backoff_ms > st->backoff_max_ms / 2 ? st->backoff_max_ms : st->backoff_ms * 2;
    st->state = ST_WAITING;
    struct timeval tv = ms_tv((uint64_t)delay);
    evtimer_add(st->ev_timer, &tv);
    return delay;
}

/* The connection is unusable: fail the query in flight with `status`,
 * report down with `why` and try again after the backoff. Logged at
 * `level`, or at info when it only repeats the reason already reported. */
static void conn_failed(store_t *st, int status, const char *why, int level)
{
    if (st->freeing)
        return;
    bool repeat = st->state_known && !st->state_up && strcmp(st->state_why, why) == 0;
    sq_t *q = close_conn(st);
    int delay = schedule_reconnect(st);
    log_write(repeat ? LOG_LVL_INFO : level, "store (%s): %s; retrying in %d ms", st->who, why, delay);
    if (!fail_list(st, q, status, why))
        return;
    report_down(st, why);
}

static void conn_lost(store_t *st)
{
    char buf[512];
    char why[700];
    snprintf(why, sizeof why, "connection lost: %s",
             st->fatal && st->qerr ? st->qerr : conn_error(st, buf, sizeof buf));
    conn_failed(st, -ECONNRESET, why, LOG_LVL_WARN);
}

static void on_conn_io(evutil_socket_t fd, short what, void *arg);

/* Wait for the socket readiness PQconnectPoll asked for. The socket may be
 * a new one on every step, so the event is recreated each time. */
static void wait_connect(store_t *st, PostgresPollingStatusType want)
{
    free_event(&st->ev_conn);
    int fd = PQsocket(st->conn);
    if (fd < 0) {
        char buf[512], why[600];
        snprintf(why, sizeof why, "cannot connect: %s", conn_error(st, buf, sizeof buf));
        conn_failed(st, -ECONNRESET, why, LOG_LVL_WARN);
        return;
    }
    st->ev_conn = event_new(st->base, fd, want == PGRES_POLLING_READING ? EV_READ : EV_WRITE, on_conn_io, st);
    if (!st->ev_conn || event_add(st->ev_conn, NULL) < 0)
        conn_failed(st, -ECONNRESET, "cannot connect: cannot watch the socket (out of memory)", LOG_LVL_WARN);
}

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);

static void connected(store_t *st)
{
    free_event(&st->ev_conn);
    evtimer_del(st->ev_timer);
    if (PQsetnonblocking(st->conn, 1) != 0) {
        char buf[512], why[600];
        snprintf(why, sizeof why, "cannot switch the connection to non-blocking mode: %s",
                 conn_error(st, buf, sizeof buf));
        conn_failed(st, -ECONNRESET, why, LOG_LVL_WARN);
        return;
    }
    int fd = PQsocket(st->conn);
    st->ev_rd = event_new(st->base, fd, EV_READ | EV_PERSIST, on_read, st);
    st->ev_wr = event_new(st->base, fd, EV_WRITE | EV_PERSIST, on_write, st);
    if (!st->ev_rd || !st->ev_wr || event_add(st->ev_rd, NULL) < 0) {
        conn_failed(st, -ECONNRESET, "cannot watch the connection socket (out of memory)", LOG_LVL_WARN);
        return;
    }
    const char *host = PQhost(st->conn);
    log_info("store (%s): connected to %s port %s database %s; checking migrations", st->who,
             host && *host ? host : "(default)", PQport(st->conn), PQdb(st->conn));
    st->state = ST_MIGRATING;
    start_migrations(st);
}

static void poll_connect(store_t *st)
{
    switch (PQconnectPoll(st->conn)) {
    case PGRES_POLLING_READING:
        wait_connect(st, PGRES_POLLING_READING);
        break;
    case PGRES_POLLING_WRITING:
        wait_connect(st, PGRES_POLLING_WRITING);
        break;
    case PGRES_POLLING_OK:
        connected(st);
        break;
    default: {
        char buf[512], why[600];
        snprintf(why, sizeof why, "cannot connect: %s", conn_error(st, buf, sizeof buf));
        conn_failed(st, -ECONNRESET, why, LOG_LVL_WARN);
        break;
    }
    }
}

static void on_conn_io(evutil_socket_t fd, short what, void *arg)
{
    store_t *st = arg;
    enter(st);
    if (st->state == ST_CONNECTING && st->conn)
        poll_connect(st);
    leave(st);
}

static void start_connect(store_t *st)
{
    const char *keys[] = {"dbname", "application_name", NULL};
    const char *vals[] = {st->dsn, st->who, NULL};
    st->conn = PQconnectStartParams(keys, vals, 1);
    if (!st->conn) {
        conn_failed(st, -ECONNRESET, "cannot connect: out of memory", LOG_LVL_WARN);
        return;
    }
    if (PQstatus(st->conn) == CONNECTION_BAD) {
        char buf[512], why[600];
        snprintf(why, sizeof why, "cannot connect: %s", conn_error(st, buf, sizeof buf));
        conn_failed(st, -ECONNRESET, why, LOG_LVL_WARN);
        return;
    }
    PQsetNoticeProcessor(st->conn, notice_cb, st);
    st->state = ST_CONNECTING;
    struct timeval tv = ms_tv((uint64_t)st->connect_timeout_ms);
    evtimer_add(st->ev_timer, &tv);
    /* libpq: behave as if PQconnectPoll had last asked for writing */
    wait_connect(st, PGRES_POLLING_WRITING);
}

/* ev_timer: the backoff ran out (start a connection attempt) or the
 * connection attempt took longer than connect_timeout_ms. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    store_t *st = arg;
    enter(st);
    if (st->state == ST_WAITING) {
        start_connect(st);
    } else if (st->state == ST_CONNECTING) {
        char why[128];
        snprintf(why, sizeof why, "cannot connect: no connection within %d ms", st->connect_timeout_ms);
        conn_failed(st, -ECONNRESET, why, LOG_LVL_WARN);
    }
    leave(st);
}

/* ---- queries ------------------------------------------------------------ */

static bool flush_output(store_t *st)
{
    int r = PQflush(st->conn);
    if (r < 0) {
        conn_lost(st);
        return false;
    }
    if (r > 0)
        event_add(st->ev_wr, NULL);
    else
        event_del(st->ev_wr);
    return true;
}

/* Send a prepared query into the pipeline (entering pipeline mode when the
 * connection is idle): its Prepare first when this connection has not seen
 * the statement yet, then the execution and a Sync. False: libpq refused
 * (connection error in its message). */
static bool send_prepared(store_t *st, sq_t *q)
{
    if (!st->pipeline) {
        if (!PQenterPipelineMode(st->conn))
            return false;
        st->pipeline = true;
    }
    q->prepares = false;
    q->ends = 0;
    if (!is_prepared(st, q->stmt)) {
        char **p = realloc(st->prepared, (size_t)(st->n_prepared + 1) * sizeof *p);
        char *name = strdup(q->stmt);
        if (!p || !name) {
            free(name);
            if (p)
                st->prepared = p;
            return false;
        }
        st->prepared = p;
        if (!PQsendPrepare(st->conn, q->stmt, q->sql, q->nparams, NULL)) {
            free(name);
            return false;
        }
        st->prepared[st->n_prepared++] = name;
        q->prepares = true;
    }
    return PQsendQueryPrepared(st->conn, q->stmt, q->nparams, (const char *const *)q->params, q->lengths,
                               q->formats, 0) &&
           PQpipelineSync(st->conn);
}

/* Send what may go now: internal queries first, user ones only once the
 * store is up. A plain query waits until nothing is in flight (and takes
 * the connection out of pipeline mode); prepared queries join the pipeline
 * up to STORE_PIPELINE_MAX. */
static void pump(store_t *st)
{
    bool sent = false;
    while (!st->freeing && st->conn && (st->state == ST_MIGRATING || st->state == ST_UP)) {
        sq_t **head = st->ihead ? &st->ihead : st->state == ST_UP && st->uhead ? &st->uhead : NULL;
        if (!head)
            break;
        sq_t *q = *head;
        bool pipelined = q->stmt && !q->internal;
        if (st->inflight && (!pipelined || !st->inflight->stmt || st->n_inflight >= STORE_PIPELINE_MAX))
            break;
        if (!pipelined && st->pipeline) {
            if (!PQexitPipelineMode(st->conn)) {
                conn_lost(st);
                return;
            }
            st->pipeline = false;
        }
        q = head == &st->ihead ? queue_pop(&st->ihead, &st->itail) : queue_pop(&st->uhead, &st->utail);
        int ok = pipelined ? send_prepared(st, q)
                 : q->nparams == 0
                     ? PQsendQuery(st->conn, q->sql)
                     : PQsendQueryParams(st->conn, q->sql, q->nparams, NULL, (const char *const *)q->params,
                                         NULL, NULL, 0);
        if (!ok) {
            if (PQstatus(st->conn) == CONNECTION_BAD || pipelined) {
                /* a half-sent pipeline entry cannot be taken back */
                inflight_push(st, q);
                conn_lost(st);
                return;
            }
            char buf[512];
            conn_error(st, buf, sizeof buf);
            if (!deliver(st, q, -EIO, NULL, buf))
                return;
            continue;
        }
        inflight_push(st, q);
        sent = true;
        if (!pipelined)
            break;
    }
    if (sent && !st->freeing && st->conn)
        flush_output(st);
}

/* The query in flight returned all its results. */
static void complete(store_t *st)
{
    if (PQstatus(st->conn) == CONNECTION_BAD) {
        conn_lost(st);
        return;
    }
    if (st->fatal) {
        /* e.g. pg_terminate_backend or a server shutdown: the error is the
         * server's goodbye, the query failed because the connection ended */
        char why[700];
        snprintf(why, sizeof why, "connection lost: %s", st->qerr ? st->qerr : "session ended by the server");
        conn_failed(st, -ECONNRESET, why, LOG_LVL_WARN);
        return;
    }
    sq_t *q = inflight_pop(st);
    PGresult *res = st->last;
    char *err = st->qerr;
    bool unsupported = st->unsupported;
    st->last = NULL;
    st->qerr = NULL;
    st->unsupported = false;
    st->fatal = false;
    bool alive;
    if (err)
        alive = deliver(st, q, -EIO, NULL, err);
    else if (res)
        alive = deliver(st, q, 0, res, NULL);
    else
        alive = deliver(st, q, -EIO, NULL, "the server returned no result");
    PQclear(res);
    free(err);
    if (!alive)
        return;
    if (unsupported && st->conn) {
        conn_failed(st, -ECONNRESET, "a query started COPY, which the store does not support; connection reset",
                    LOG_LVL_WARN);
        return;
    }
    pump(st);
}

static void take_result(store_t *st, PGresult *r)
{
    switch (PQresultStatus(r)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
        if (st->last)
            PQclear(st->last);
        st->last = r;
        return;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        st->unsupported = true;
        if (!st->qerr)
            st->qerr = strdup("COPY is not supported by the store");
        break;
    case PGRES_EMPTY_QUERY:
        if (!st->qerr)
            st->qerr = strdup("empty query");
        break;
    case PGRES_PIPELINE_ABORTED:
        /* the statement's Prepare failed; its error came first */
        if (!st->qerr)
            st->qerr = strdup("not executed: an earlier step of the query failed");
        break;
    default: {
        const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
        if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0) && !st->fatal) {
            st->fatal = true;
            free(st->qerr);
            st->qerr = NULL;
        }
        if (!st->qerr)
            st->qerr = result_error(r);
        break;
    }
    }
    PQclear(r);
}

static void handle_input(store_t *st)
{
    if (!PQconsumeInput(st->conn)) {
        conn_lost(st);
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(st->conn)))
        PQfreemem(n);
    if (PQstatus(st->conn) == CONNECTION_BAD) {
        conn_lost(st);
        return;
    }
    if (PQisnonblocking(st->conn) && st->ev_wr && event_pending(st->ev_wr, EV_WRITE, NULL) && !flush_output(st))
        return;
    while (!st->freeing && st->conn && st->inflight && !PQisBusy(st->conn)) {
        if (st->unsupported) {
            /* COPY never ends by itself: stop reading and drop the connection */
            complete(st);
            continue;
        }
        sq_t *q = st->inflight;
        PGresult *r = PQgetResult(st->conn);
        if (!q->stmt) {
            if (!r)
                complete(st);
            else
                take_result(st, r);
            continue;
        }
        /* a pipelined query: [Prepare result, end,] execution results, end,
         * then its Sync */
        if (!r) {
            if (q->ends++ == 0 && q->prepares && st->qerr)
                forget_prepared(st, q->stmt); /* the Prepare itself failed */
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            complete(st);
            continue;
        }
        take_result(st, r);
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    store_t *st = arg;
    enter(st);
    if (st->conn)
        handle_input(st);
    leave(st);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    store_t *st = arg;
    enter(st);
    if (st->conn)
        flush_output(st);
    leave(st);
}

/* ev_deadline: fail what has waited longer than query_timeout_ms. A query in
 * flight cannot be cancelled without blocking (PQcancel), so its connection
 * is dropped; PostgreSQL then abandons it. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    store_t *st = arg;
    enter(st);
    uint64_t now = now_ms();
    char why[256];
    if (st->inflight && st->inflight->deadline_ms <= now) {
        const sq_t *q = st->inflight;
        if (q->done == done_apply)
            snprintf(why, sizeof why, "migration %04d_%s took longer than %d ms; connection reset",
                     store_migrations[st->mig_idx].version, store_migrations[st->mig_idx].name,
                     st->query_timeout_ms);
        else if (q->internal)
            snprintf(why, sizeof why, "%s took longer than %d ms; connection reset", q->what, st->query_timeout_ms);
        else
            snprintf(why, sizeof why, "query took longer than %d ms; connection reset", st->query_timeout_ms);
        conn_failed(st, -ETIMEDOUT, why, LOG_LVL_WARN);
    }
    snprintf(why, sizeof why, "query waited longer than %d ms", st->query_timeout_ms);
    while (!st->freeing && st->uhead && st->uhead->deadline_ms <= now) {
        sq_t *q = queue_pop(&st->uhead, &st->utail);
        if (!deliver(st, q, -ETIMEDOUT, NULL, why))
            break;
    }
    leave(st);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    store_t *st = arg;
    enter(st);
    pump(st);
    leave(st);
}

/* Queue an internal query (a migration step); it runs before user queries. */
static void internal_query(store_t *st, const char *what, const char *sql, internal_done_fn done)
{
    sq_t *q = sq_new(st, sql, 0, NULL);
    if (!q) {
        conn_failed(st, -ECONNRESET, "out of memory while preparing migrations", LOG_LVL_WARN);
        return;
    }
    q->internal = true;
    q->done = done;
    q->what = what;
    queue_push(&st->ihead, &st->itail, q);
    pump(st);
}

/* ---- migrations --------------------------------------------------------- */

/* FNV-1a of "lodestar.migrations": the advisory lock every node takes
 * around its migration check. */
static int64_t migration_lock_key(void)
{
    uint64_t h = 14695981039346656037ull;
    for (const char *p = "lodestar.migrations"; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ull;
    }
    return (int64_t)h;
}

static void migration_failed(store_t *st, const char *why)
{
    conn_failed(st, -ECONNRESET, why, LOG_LVL_ERROR);
}

static void step_failed(store_t *st, const char *what, const char *err)
{
    char why[1200];
    snprintf(why, sizeof why, "migration check failed at %s: %s", what, err);
    migration_failed(st, why);
}

static bool is_applied(const store_t *st, int version)
{
    for (int i = 0; i < st->n_applied; i++)
        if (st->applied[i] == version)
            return true;
    return false;
}

static void apply_next(store_t *st);

static void done_unlock(store_t *st, int status, PGresult *res, const char *err)
{
    if (status < 0) {
        step_failed(st, "releasing the migration lock", err);
        return;
    }
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        log_warn("store (%s): the migration lock was not held when releasing it", st->who);
    int top = 0;
    for (int i = 0; i < st->n_applied; i++)
        if (st->applied[i] > top)
            top = st->applied[i];
    st->schema_version = top;
    st->state = ST_UP;
    st->backoff_ms = STORE_BACKOFF_START_MS;
    log_notice("store (%s): up, schema version %d", st->who, top);
    if (!report_up(st))
        return;
    pump(st);
}

static void done_apply(store_t *st, int status, PGresult *res, const char *err)
{
    const store_migration_t *m = &store_migrations[st->mig_idx];
    char why[1400];
    if (status == 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        status = -EIO;
        err = "its text does not end cleanly (unterminated quote or comment?), so the migration was not committed";
    }
    if (status < 0) {
        snprintf(why, sizeof why, "migration %04d_%s failed: %s", m->version, m->name, err);
        migration_failed(st, why);
        return;
    }
    st->applied[st->n_applied++] = m->version;
    log_notice("store (%s): applied migration %04d_%s", st->who, m->version, m->name);
    st->mig_idx++;
    apply_next(st);
}

static void apply_next(store_t *st)
{
    while (st->mig_idx < store_n_migrations && is_applied(st, store_migrations[st->mig_idx].version))
        st->mig_idx++;
    if (st->mig_idx >= store_n_migrations) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%" PRId64 ")", migration_lock_key());
        internal_query(st, "releasing the migration lock", sql, done_unlock);
        return;
    }
    const store_migration_t *m = &store_migrations[st->mig_idx];
    char *name = PQescapeLiteral(st->conn, m->name, strlen(m->name));
    if (!name) {
        char buf[512];
        step_failed(st, "preparing a migration", conn_error(st, buf, sizeof buf));
        return;
    }
    /* the newline before each added statement keeps a trailing "--" comment
     * in the file from swallowing it */
    static const char fmt[] = "BEGIN;\n%s\n;\nINSERT INTO lodestar_schema_migrations (version, name) VALUES (%d, %s);\nCOMMIT;";
    size_t len = strlen(m->sql) + strlen(name) + sizeof fmt + 16;
    char *sql = malloc(len);
    if (!sql) {
        PQfreemem(name);
        step_failed(st, "preparing a migration", "out of memory");
        return;
    }
    snprintf(sql, len, fmt, m->sql, m->version, name);
    PQfreemem(name);
    log_info("store (%s): applying migration %04d_%s", st->who, m->version, m->name);
    internal_query(st, "a migration", sql, done_apply);
    free(sql);
}

static void done_read(store_t *st, int status, PGresult *res, const char *err)
{
    if (status < 0) {
        step_failed(st, "reading applied migrations", err);
        return;
    }
    int rows = PQntuples(res);
    free(st->applied);
    st->applied = calloc((size_t)rows + (size_t)store_n_migrations + 1, sizeof *st->applied);
    st->n_applied = 0;
    if (!st->applied) {
        step_failed(st, "reading applied migrations", "out of memory");
        return;
    }
    for (int i = 0; i < rows; i++) {
        int v = atoi(PQgetvalue(res, i, 0));
        const char *name = PQgetvalue(res, i, 1);
        st->applied[st->n_applied++] = v;
        bool known = false;
        for (int k = 0; k < store_n_migrations; k++) {
            if (store_migrations[k].version != v)
                continue;
            known = true;
            if (strcmp(store_migrations[k].name, name) != 0)
                log_warn("store (%s): migration %d is recorded as '%s' but this build calls it '%s'", st->who,
                         v, name, store_migrations[k].name);
        }
        if (!known)
            log_notice("store (%s): the database has migration %04d_%s, unknown to this build (newer node?)",
                       st->who, v, name);
    }
    st->mig_idx = 0;
    apply_next(st);
}

static void done_create(store_t *st, int status, PGresult *res, const char *err)
{
    if (status < 0) {
        step_failed(st, "creating lodestar_schema_migrations", err);
        return;
    }
    internal_query(st, "reading applied migrations",
                   "SELECT version, name FROM lodestar_schema_migrations ORDER BY version", done_read);
}

static void done_lock(store_t *st, int status, PGresult *res, const char *err)
{
    if (status < 0) {
        step_failed(st, "taking the migration lock", err);
        return;
    }
    internal_query(st, "creating lodestar_schema_migrations",
                   "CREATE TABLE IF NOT EXISTS lodestar_schema_migrations ("
                   "version int PRIMARY KEY, name text NOT NULL, "
                   "applied_at timestamptz NOT NULL DEFAULT now())",
                   done_create);
}

static void start_migrations(store_t *st)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%" PRId64 ")", migration_lock_key());
    internal_query(st, "taking the migration lock", sql, done_lock);
}

/* ---- public ------------------------------------------------------------- */

store_t *store_new(struct event_base *base, const store_options_t *opt, store_state_cb on_state, void *arg)
{
    if (!base || !opt) {
        log_error("store: store_new needs an event base and options");
        return NULL;
    }
    store_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->base = base;
    st->dsn = strdup(opt->dsn ? opt->dsn : "");
    st->who = strdup(opt->who && *opt->who ? opt->who : "lodestar");
    st->connect_timeout_ms = opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : STORE_DEFAULT_CONNECT_TIMEOUT_MS;
    st->backoff_max_ms = opt->reconnect_backoff_max_ms > 0 ? opt->reconnect_backoff_max_ms : STORE_DEFAULT_BACKOFF_MAX_MS;
    st->query_timeout_ms = opt->query_timeout_ms > 0 ? opt->query_timeout_ms : STORE_DEFAULT_QUERY_TIMEOUT_MS;
    st->backoff_ms = STORE_BACKOFF_START_MS < st->backoff_max_ms ? STORE_BACKOFF_START_MS : st->backoff_max_ms;
    st->on_state = on_state;
    st->state_arg = arg;
    st->ev_timer = evtimer_new(base, on_timer, st);
    st->ev_deadline = evtimer_new(base, on_deadline, st);
    st->ev_kick = event_new(base, -1, 0, on_kick, st);
    if (!st->dsn || !st->who || !st->ev_timer || !st->ev_deadline || !st->ev_kick) {
        log_error("store: out of memory creating the store");
        store_destroy(st);
        return NULL;
    }
    /* the first attempt starts from the loop, so no callback runs before
     * the caller holds the store */
    st->state = ST_WAITING;
    struct timeval now = {0, 0};
    evtimer_add(st->ev_timer, &now);
    return st;
}

int store_query_prepared(store_t *st, const char *name, const char *sql, int nparams, const char *const *values,
                         const int *lengths, const int *formats, store_result_cb cb, void *arg)
{
    if (!st || st->freeing)
        return -1;
    if (!name || !*name || !sql || nparams < 0) {
        log_error("store (%s): store_query_prepared called without a name or SQL, or with a negative parameter count",
                  st->who);
        return -1;
    }
    sq_t *q = sq_new_prepared(st, name, sql, nparams, values, lengths, formats);
    if (!q) {
        log_error("store (%s): out of memory queueing prepared statement %s", st->who, name);
        return -1;
    }
    q->cb = cb;
    q->arg = arg;
    enter(st);
    queue_push(&st->uhead, &st->utail, q);
    event_active(st->ev_kick, EV_TIMEOUT, 0);
    leave(st);
    return 0;
}

int store_query(store_t *st, const char *sql, int nparams, const char *const *params, store_result_cb cb,
                void *arg)
{
    if (!st || st->freeing)
        return -1;
    if (!sql || nparams < 0) {
        log_error("store (%s): store_query called without SQL or with a negative parameter count", st->who);
        return -1;
    }
    sq_t *q = sq_new(st, sql, nparams, params);
    if (!q) {
        log_error("store (%s): out of memory queueing a query", st->who);
        return -1;
    }
    q->cb = cb;
    q->arg = arg;
    enter(st);
    queue_push(&st->uhead, &st->utail, q);
    /* sent from the loop, so that no callback runs inside store_query */
    event_active(st->ev_kick, EV_TIMEOUT, 0);
    leave(st);
    return 0;
}

bool store_is_up(const store_t *st) { return st && st->state == ST_UP && !st->freeing; }

int store_schema_version(const store_t *st) { return st ? st->schema_version : 0; }

void store_free(store_t *st)
{
    if (!st || st->freeing)
        return;
    st->freeing = true;
    enter(st);
    evtimer_del(st->ev_timer);
    evtimer_del(st->ev_deadline);
    event_del(st->ev_kick);
    sq_t *q = close_conn(st);
    while (q) {
        sq_t *next = q->next;
        q->next = NULL;
        deliver(st, q, -ECANCELED, NULL, "store freed");
        q = next;
    }
    while ((q = queue_pop(&st->uhead, &st->utail)))
        deliver(st, q, -ECANCELED, NULL, "store freed");
    leave(st);
}

/* Release the memory; the connection is already closed. */
static void store_destroy(store_t *st)
{
    close_conn(st);
    sq_t *q;
    while ((q = queue_pop(&st->uhead, &st->utail)))
        sq_free(q);
    free_event(&st->ev_timer);
    free_event(&st->ev_deadline);
    free_event(&st->ev_kick);
    free(st->dsn);
    free(st->who);
    free(st);
}

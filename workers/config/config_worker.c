/*
 * config_worker.c: the config domain worker (see config_worker.h).
 *
 * Owns the config model of this node and its synchronisation with
 * PostgreSQL:
 *  - first load: every live row in one snapshot (lodestar_config_changes
 *    from xid 0); the worker reports Ready only after it, and requests that
 *    arrived meanwhile are answered then;
 *  - polls every workers.config.sync_interval_ms: rows whose txid is at or
 *    above the previous snapshot's xmin (xid8 technique: a transaction still
 *    running at the previous poll has an xid >= that xmin, so its rows are
 *    read once it committed); re-read rows change nothing (row versions);
 *  - a full reload (with removal of whatever is gone) whenever the store
 *    comes back after being down, or a row did not fit the model;
 *  - tombstones older than workers.config.deleted_retention_s are purged
 *    every minute.
 * Changes of what clients read are pushed as ConfigChange on topic
 * "config", split so that every push fits half an IPC frame.
 */
#include "config_worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "cc_validate.h"
#include "cc_view.h"
#include "log.h"

#define CW_PURGE_PERIOD_S 60

static const char SQL_CHANGES[] = "SELECT kind, data::text FROM lodestar_config_changes($1::xid8, $2::boolean)";
static const char SQL_PURGE[] = "SELECT lodestar_config_purge(make_interval(secs => $1::double precision))";

static cw_t *cw_of(worker_t *w) { return w->domain_state; }

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- calls answered later ---- */

cw_call_t *cw_call_new(cw_t *cw, ipc_conn_t *conn, uint64_t request_id, void *data)
{
    cw_call_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cw = cw;
    c->conn = conn;
    c->request_id = request_id;
    c->data = data;
    c->next = cw->calls;
    cw->calls = c;
    return c;
}

ipc_conn_t *cw_call_finish(cw_call_t *call)
{
    cw_t *cw = call->cw;
    for (cw_call_t **pp = &cw->calls; *pp; pp = &(*pp)->next)
        if (*pp == call) {
            *pp = call->next;
            break;
        }
    ipc_conn_t *conn = call->conn;
    free(call);
    return conn;
}

bool cw_glob(const char *p, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

/* ---- applying store results ---- */

int cw_apply_result(cw_t *cw, PGresult *res, void (*on_result)(void *arg, json_t *row), void *arg, char *xmin,
                    size_t xminlen)
{
    int n = PQntuples(res);
    if (PQnfields(res) != 2) {
        log_error("config store result has %d columns, expected kind and data", PQnfields(res));
        cw->reload_wanted = true;
        return -EPROTO;
    }
    json_t **rows = calloc(n > 0 ? (size_t)n : 1, sizeof *rows);
    if (!rows) {
        cw->reload_wanted = true;
        return -ENOMEM;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        json_error_t e;
        rows[i] = json_loadb(PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1), JSON_DECODE_ANY, &e);
        if (!rows[i]) {
            log_error("config store row %d (%s) is not JSON: %s", i, PQgetvalue(res, i, 0), e.text);
            rc = -EPROTO;
        }
    }
    static const char *const order[] = {"group", "file", "release"};
    for (int i = 0; i < n; i++) {
        const char *kind = PQgetvalue(res, i, 0);
        if (!rows[i])
            continue;
        if (strcmp(kind, "xmin") == 0 && xmin) {
            snprintf(xmin, xminlen, "%s", json_is_string(rows[i]) ? json_string_value(rows[i]) : "");
        } else if (strcmp(kind, "result") == 0 && on_result) {
            on_result(arg, rows[i]);
        }
    }
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++)
        for (int i = 0; i < n; i++) {
            if (!rows[i] || strcmp(PQgetvalue(res, i, 0), order[k]) != 0)
                continue;
            char err[512];
            int r = cc_model_apply(cw->model, order[k], rows[i], err, sizeof err);
            if (r < 0) {
                log_error("config model: %s; a full reload follows", err);
                rc = r;
            }
        }
    for (int i = 0; i < n; i++)
        json_decref(rows[i]);
    free(rows);
    if (rc < 0)
        cw->reload_wanted = true;
    return rc;
}

/* ---- pushing changes ---- */

static void publish_change(cw_t *cw, Lodestar__ConfigFileState **states, size_t n)
{
    Lodestar__ConfigChange ch = LODESTAR__CONFIG_CHANGE__INIT;
    ch.files = states;
    ch.n_files = n;
    ch.notification_id = cw->model->notification_id;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_CHANGE;
    env.config_change = &ch;
    ipc_server_publish(cw->w->server, CW_TOPIC, &env);
    cw->pushes++;
}

void cw_push_changes(cw_t *cw)
{
    cc_file_t **files;
    size_t n = cc_model_take_changes(cw->model, &files);
    if (n == 0 || !cw->w->server) {
        cc_model_commit_changes(cw->model);
        return;
    }
    size_t budget = cw->max_frame / 2;
    cc_arena_t a = {0};
    Lodestar__ConfigFileState **states = cc_arena_alloc(&a, n * sizeof *states);
    size_t k = 0, bytes = 0;
    for (size_t i = 0; states && i < n; i++) {
        Lodestar__ConfigFileState *s = cc_view_state(&a, files[i]);
        if (!s)
            break;
        size_t sz = lodestar__config_file_state__get_packed_size(s) + 8;
        if (k > 0 && bytes + sz > budget) {
            publish_change(cw, states, k);
            k = 0;
            bytes = 0;
        }
        states[k++] = s;
        bytes += sz;
    }
    if (a.failed)
        log_error("out of memory building a config change push; replicas resynchronise on reconnect");
    else if (k > 0)
        publish_change(cw, states, k);
    cc_arena_free(&a);
    cc_model_commit_changes(cw->model);
}

/* ---- load, poll, purge ---- */

typedef struct sync_ctx {
    cw_t *cw;
    bool full;
    long long started_ms;
} sync_ctx_t;

static void replay_deferred(cw_t *cw);

static void on_sync_result(int status, PGresult *res, const char *err, void *arg)
{
    sync_ctx_t *sc = arg;
    cw_t *cw = sc->cw;
    bool full = sc->full;
    long long took = mono_ms() - sc->started_ms;
    free(sc);
    if (!cw)
        return;
    cw->poll_in_flight = false;
    if (status < 0) {
        if (status != -ECANCELED)
            log_warn("config %s failed: %s", full ? "load" : "poll", err ? err : strerror(-status));
        if (full)
            cw->reload_wanted = true;
        return;
    }
    char xmin[32] = "";
    if (full) {
        cc_model_reload_begin(cw->model);
        cw->reload_wanted = false;
    }
    int rc = cw_apply_result(cw, res, NULL, NULL, xmin, sizeof xmin);
    if (full)
        cc_model_reload_end(cw->model);
    if (xmin[0])
        snprintf(cw->since, sizeof cw->since, "%s", xmin);
    if (full && !cw->loaded) {
        if (rc < 0) {
            /* an inconsistent first load would serve wrong data: try again */
            cc_model_free(cw->model);
            cw->model = cc_model_new();
            cw->reload_wanted = true;
            return;
        }
        cc_model_mark_all_pushed(cw->model);
        cw->loaded = true;
        log_info("config model loaded in %lld ms: %u groups, %u files, notification id %llu", took,
                 HASH_COUNT(cw->model->groups), HASH_COUNT(cw->model->files),
                 (unsigned long long)cw->model->notification_id);
        worker_domain_ready(cw->w);
        replay_deferred(cw);
        return;
    }
    if (full)
        log_info("config model reloaded in %lld ms", took);
    cw_push_changes(cw);
}

/* Start a full load (from xid 0, live rows only) or a poll. */
static void sync_start(cw_t *cw, bool full)
{
    if (cw->poll_in_flight || !store_is_up(cw->w->store))
        return;
    sync_ctx_t *sc = calloc(1, sizeof *sc);
    if (!sc)
        return;
    sc->cw = cw;
    sc->full = full;
    sc->started_ms = mono_ms();
    const char *params[2] = {full || !cw->since[0] ? "0" : cw->since, full ? "true" : "false"};
    if (store_query(cw->w->store, SQL_CHANGES, 2, params, on_sync_result, sc) < 0) {
        free(sc);
        return;
    }
    cw->poll_in_flight = true;
}

static void on_poll_timer(evutil_socket_t fd, short what, void *arg)
{
    cw_t *cw = arg;
    sync_start(cw, !cw->loaded || cw->reload_wanted);
}

static void on_purge_result(int status, PGresult *res, const char *err, void *arg)
{
    if (status < 0) {
        if (status != -ECANCELED)
            log_warn("config tombstone purge failed: %s", err ? err : strerror(-status));
        return;
    }
    long long n = PQntuples(res) == 1 ? atoll(PQgetvalue(res, 0, 0)) : 0;
    if (n > 0)
        log_info("config: purged %lld tombstones older than %s s", n, (const char *)arg);
}

static void on_purge_timer(evutil_socket_t fd, short what, void *arg)
{
    cw_t *cw = arg;
    static char secs[32];
    if (!store_is_up(cw->w->store))
        return;
    snprintf(secs, sizeof secs, "%d", cw->retention_s);
    const char *params[1] = {secs};
    store_query(cw->w->store, SQL_PURGE, 1, params, on_purge_result, secs);
}

/* ---- requests ---- */

static void dispatch(cw_t *cw, ipc_conn_t *conn, uint64_t id, Lodestar__Envelope *req)
{
    switch (req->body_case) {
    case LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_REQUEST:
        cw_handle_write(cw, conn, id, req->config_write_request);
        break;
    case LODESTAR__ENVELOPE__BODY_CONFIG_QUERY_REQUEST:
        cw_handle_query(cw, conn, id, req->config_query_request);
        break;
    case LODESTAR__ENVELOPE__BODY_CONFIG_SNAPSHOT_REQUEST:
        cw_handle_snapshot(cw, conn, id, req->config_snapshot_request);
        break;
    default:
        ipc_server_reply_error(conn, id, -EOPNOTSUPP, "config worker does not handle %s requests",
                               ipc_type_name(req->body_case));
        break;
    }
}

static void replay_deferred(cw_t *cw)
{
    cw_deferred_t *d = cw->deferred;
    cw->deferred = cw->deferred_tail = NULL;
    while (d) {
        cw_deferred_t *next = d->next;
        if (d->conn) {
            Lodestar__Envelope *env = lodestar__envelope__unpack(NULL, d->len, d->bytes);
            if (env) {
                dispatch(cw, d->conn, d->request_id, env);
                lodestar__envelope__free_unpacked(env, NULL);
            }
        }
        free(d->bytes);
        free(d);
        d = next;
    }
}

static void cw_on_request(worker_t *w, ipc_conn_t *conn, uint64_t id, Lodestar__Envelope *req)
{
    cw_t *cw = cw_of(w);
    if (cw->loaded) {
        dispatch(cw, conn, id, req);
        return;
    }
    /* the model is not loaded yet: keep the request (the envelope is freed
     * when this returns, so it is kept packed) */
    cw_deferred_t *d = calloc(1, sizeof *d);
    size_t len = lodestar__envelope__get_packed_size(req);
    uint8_t *bytes = d ? malloc(len ? len : 1) : NULL;
    if (!d || !bytes) {
        free(d);
        ipc_server_reply_error(conn, id, -ENOMEM, "config worker is loading and out of memory");
        return;
    }
    lodestar__envelope__pack(req, bytes);
    d->conn = conn;
    d->request_id = id;
    d->bytes = bytes;
    d->len = len;
    if (cw->deferred_tail)
        cw->deferred_tail->next = d;
    else
        cw->deferred = d;
    cw->deferred_tail = d;
}

static void cw_on_peer(worker_t *w, ipc_conn_t *conn, bool connected)
{
    cw_t *cw = cw_of(w);
    if (connected || !cw)
        return;
    for (cw_call_t *c = cw->calls; c; c = c->next)
        if (c->conn == conn)
            c->conn = NULL;
    for (cw_deferred_t *d = cw->deferred; d; d = d->next)
        if (d->conn == conn)
            d->conn = NULL;
}

static void cw_on_store_state(worker_t *w, bool up)
{
    cw_t *cw = cw_of(w);
    if (!up)
        return;
    if (cw->store_seen_up && cw->loaded)
        cw->reload_wanted = true; /* changes (or purges) may have been missed */
    cw->store_seen_up = true;
    sync_start(cw, !cw->loaded || cw->reload_wanted);
}

static bool cw_ready(worker_t *w)
{
    cw_t *cw = cw_of(w);
    return cw && cw->loaded;
}

static int cw_init(worker_t *w)
{
    cw_t *cw = calloc(1, sizeof *cw);
    if (!cw)
        return -1;
    w->domain_state = cw;
    cw->w = w;
    cw->model = cc_model_new();
    if (!cw->model)
        return -1;
    const cfg_t *cfg = w->child->cfg;
    cw->max_frame = cfg->ipc.max_frame_bytes;
    cw->max_content = cfg->config_worker.max_content_bytes;
    uint32_t fit = cw->max_frame > 65536u ? (cw->max_frame - 65536u) / 2 : 0;
    if (cw->max_content > fit) {
        log_warn("workers.config.max_content_bytes %u lowered to %u to fit ipc.max_frame_bytes %u", cw->max_content,
                 fit, cw->max_frame);
        cw->max_content = fit;
    }
    cw->sync_interval_ms = cfg->config_worker.sync_interval_ms;
    cw->retention_s = cfg->config_worker.deleted_retention_s;
    cw->poll_ev = event_new(w->child->base, -1, EV_PERSIST, on_poll_timer, cw);
    cw->purge_ev = event_new(w->child->base, -1, EV_PERSIST, on_purge_timer, cw);
    if (!cw->poll_ev || !cw->purge_ev)
        return -1;
    struct timeval pt = {cw->sync_interval_ms / 1000, (cw->sync_interval_ms % 1000) * 1000};
    int purge_s = cw->retention_s < CW_PURGE_PERIOD_S ? cw->retention_s : CW_PURGE_PERIOD_S;
    struct timeval gt = {purge_s, 0};
    event_add(cw->poll_ev, &pt);
    event_add(cw->purge_ev, &gt);
    log_info("config worker: content up to %u bytes, sync every %d ms, tombstones kept %d s", cw->max_content,
             cw->sync_interval_ms, cw->retention_s);
    return 0;
}

static void cw_fini(worker_t *w)
{
    cw_t *cw = cw_of(w);
    if (!cw)
        return;
    if (cw->poll_ev)
        event_free(cw->poll_ev);
    if (cw->purge_ev)
        event_free(cw->purge_ev);
    /* queued store callbacks still hold their calls: they see no conn and
     * free their own state when the store fails them (-ECANCELED) */
    for (cw_call_t *c = cw->calls; c; c = c->next)
        c->conn = NULL;
    cw_deferred_t *d = cw->deferred;
    while (d) {
        cw_deferred_t *n = d->next;
        free(d->bytes);
        free(d);
        d = n;
    }
    cw->deferred = cw->deferred_tail = NULL;
}

static const worker_domain_t config_domain = {
    .on_request = cw_on_request,
    .on_store_state = cw_on_store_state,
    .init = cw_init,
    .fini = cw_fini,
    .ready = cw_ready,
    .on_peer = cw_on_peer,
};

static int config_init(child_t *c) { return worker_start(c, &config_domain); }

static void config_stop(child_t *c)
{
    worker_t *w = c->state;
    cw_t *cw = w ? cw_of(w) : NULL;
    worker_stop(c); /* frees the store: pending callbacks run with -ECANCELED */
    if (cw) {
        cc_model_free(cw->model);
        free(cw);
    }
    cc_validate_cleanup();
}

const child_role_t config_role = {
    .name = "config",
    .title = "config worker",
    .init = config_init,
    .drain = worker_drain,
    .fini = config_stop,
    .healthy = worker_healthy,
};

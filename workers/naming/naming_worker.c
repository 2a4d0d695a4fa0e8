/*
 * naming_worker.c: the naming domain worker, plugged into the shared worker
 * body (workers/common/worker.h) through worker_domain_t hooks.
 *
 * It owns the authoritative naming model (naming.h) and answers, on its
 * IPC socket:
 *   NamingWriteRequest    -> NamingWriteResponse, after PostgreSQL committed
 *                            (naming_batch.c)
 *   NamingQueryRequest    -> NamingQueryResponse, from memory (nm_query.c)
 *   NamingSnapshotRequest -> NamingSnapshot: every namespace and every live
 *                            service with its instances, and the change
 *                            number they reflect
 * and publishes NamingChange on topic "naming" after every commit and after
 * applying other nodes' changes: the full state of each touched service
 * (deleted = true when it went away) and, when namespaces changed, the whole
 * namespace list.
 *
 * Ready (to the supervisor) only once the model is loaded; requests that
 * arrive earlier wait (copied) and are answered after the load. Drain
 * commits everything queued before the worker body's store barrier.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "naming.h"
#include "worker.h"

struct nm_parked {
    nm_parked_t *next;
    ipc_conn_t *conn;
    uint64_t request_id;
    Lodestar__Envelope *env; /* our own copy */
};

static nm_state_t *state_of(worker_t *w) { return w ? w->domain_state : NULL; }

/* --------------------------------------------------------------- publish */

static int cmp_touch(const void *a, const void *b)
{
    return strcmp((*(nm_touch_t *const *)a)->key, (*(nm_touch_t *const *)b)->key);
}

/* The state to push for one touched service: a delta naming only the
 * instances that changed when the replicas already hold the previous
 * publication of this service (the common case under registration and
 * health traffic), else the full state. Packing full states of large
 * services on every change would cost O(instances) per write. */
static Lodestar__NamingServiceState *publish_state(nm_arena_t *a, nm_model_t *m, nm_service_t *s, const nm_touch_t *t,
                                                   uint64_t seq)
{
    if (!s || !nm_service_live(s) || t->full || s->pub_seq == 0)
        return nm_pb_state(a, s, t->ns, t->name, seq);
    Lodestar__NamingServiceState *st = nm_arena_alloc(a, sizeof *st);
    lodestar__naming_service_state__init(st);
    st->seq = seq;
    st->delta = true;
    st->base_seq = s->pub_seq;
    st->service = nm_pb_service(a, s, false);
    size_t n = HASH_COUNT(t->insts), ni = 0, nr = 0;
    st->instances = nm_arena_alloc(a, (n ? n : 1) * sizeof *st->instances);
    st->removed_ids = nm_arena_alloc(a, (n ? n : 1) * sizeof *st->removed_ids);
    for (nm_touch_inst_t *ti = t->insts; ti; ti = ti->hh.next) {
        nm_instance_t *in = ti->removed ? NULL : nm_model_instance(m, ti->id);
        if (in && in->svc == s)
            st->instances[ni++] = nm_instance_cached_pb(in);
        else
            st->removed_ids[nr++] = ti->id;
    }
    st->n_instances = ni;
    st->n_removed_ids = nr;
    return st;
}

void nm_publish(nm_state_t *st, uint64_t seq)
{
    nm_model_t *m = st->model;
    if (seq > m->seq)
        m->seq = seq;
    size_t n = HASH_COUNT(m->touched);
    if (n == 0 && !m->namespaces_changed)
        return;
    nm_arena_t *a = &st->scratch;
    Lodestar__NamingChange ch = LODESTAR__NAMING_CHANGE__INIT;
    nm_touch_t **v = nm_xcalloc(n, sizeof *v);
    size_t i = 0;
    for (nm_touch_t *t = m->touched; t; t = t->hh.next)
        v[i++] = t;
    qsort(v, n, sizeof *v, cmp_touch);
    ch.n_services = n;
    ch.services = nm_arena_alloc(a, n * sizeof *ch.services);
    for (i = 0; i < n; i++) {
        nm_service_t *s = nm_model_service(m, v[i]->ns, v[i]->name);
        ch.services[i] = publish_state(a, m, s, v[i], seq);
        if (s)
            s->pub_seq = seq;
    }
    free(v);
    if (m->namespaces_changed)
        ch.n_namespaces = nm_pb_namespaces(a, m, &ch.namespaces);
    ch.seq = seq;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_CHANGE;
    env.naming_change = &ch;
    if (st->w->server)
        ipc_server_publish(st->w->server, "naming", &env);
    nm_arena_reset(a);
    nm_model_clear_touched(m);
}

/* -------------------------------------------------------------- answers */

static int cmp_svc(const void *a, const void *b)
{
    return strcmp((*(nm_service_t *const *)a)->key, (*(nm_service_t *const *)b)->key);
}

static void answer_snapshot(nm_state_t *st, ipc_conn_t *conn, uint64_t request_id)
{
    nm_model_t *m = st->model;
    nm_arena_t a;
    nm_arena_init(&a, 65536);
    Lodestar__NamingSnapshot snap = LODESTAR__NAMING_SNAPSHOT__INIT;
    snap.n_namespaces = nm_pb_namespaces(&a, m, &snap.namespaces);
    size_t n = HASH_COUNT(m->services), k = 0;
    nm_service_t **v = nm_xcalloc(n, sizeof *v);
    for (nm_service_t *s = m->services; s; s = s->hh.next)
        if (nm_service_live(s))
            v[k++] = s;
    qsort(v, k, sizeof *v, cmp_svc);
    snap.n_services = k;
    snap.services = nm_arena_alloc(&a, k * sizeof *snap.services);
    for (size_t i = 0; i < k; i++)
        snap.services[i] = nm_pb_state(&a, v[i], NULL, NULL, m->seq);
    free(v);
    snap.seq = m->seq;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_SNAPSHOT;
    env.naming_snapshot = &snap;
    if (ipc_server_reply(conn, request_id, &env) < 0) {
        log_warn("naming: the snapshot (%zu services) does not fit in one IPC frame (ipc.max_frame_bytes)", k);
        ipc_server_reply_error(conn, request_id, -EMSGSIZE,
                               "naming snapshot of %zu services exceeds ipc.max_frame_bytes", k);
    }
    nm_arena_free(&a);
}

static void answer_query(nm_state_t *st, ipc_conn_t *conn, uint64_t request_id, const Lodestar__NamingQueryRequest *q)
{
    nm_arena_t a;
    nm_arena_init(&a, 16384);
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_QUERY_RESPONSE;
    env.naming_query_response = nm_query(&a, st->model, q);
    if (ipc_server_reply(conn, request_id, &env) < 0)
        ipc_server_reply_error(conn, request_id, -EMSGSIZE, "naming query answer exceeds ipc.max_frame_bytes");
    nm_arena_free(&a);
}

static void dispatch(nm_state_t *st, ipc_conn_t *conn, uint64_t request_id, Lodestar__Envelope *req)
{
    switch (req->body_case) {
    case LODESTAR__ENVELOPE__BODY_NAMING_WRITE_REQUEST: {
        /* the batcher keeps the request until it is answered: detach it
         * from the envelope, whose owner frees the rest (protobuf-c frees
         * only the oneof member that is set; a server's frames are decoded
         * with malloc, never into the IPC frame arena) */
        Lodestar__NamingWriteRequest *w = req->naming_write_request;
        req->naming_write_request = NULL;
        req->body_case = LODESTAR__ENVELOPE__BODY__NOT_SET;
        nm_batcher_submit(st->batcher, conn, request_id, w);
        return;
    }
    case LODESTAR__ENVELOPE__BODY_NAMING_QUERY_REQUEST:
        answer_query(st, conn, request_id, req->naming_query_request);
        return;
    case LODESTAR__ENVELOPE__BODY_NAMING_SNAPSHOT_REQUEST:
        answer_snapshot(st, conn, request_id);
        return;
    default:
        ipc_server_reply_error(conn, request_id, -EOPNOTSUPP, "the naming worker does not handle %s requests",
                               ipc_type_name(req->body_case));
    }
}

static Lodestar__Envelope *copy_envelope(const Lodestar__Envelope *env)
{
    size_t len = lodestar__envelope__get_packed_size(env);
    uint8_t *buf = nm_xcalloc(len ? len : 1, 1);
    lodestar__envelope__pack(env, buf);
    Lodestar__Envelope *c = lodestar__envelope__unpack(NULL, len, buf);
    free(buf);
    if (!c)
        nm_oom();
    return c;
}

void nm_loaded(nm_state_t *st)
{
    st->loaded = true;
    worker_domain_ready(st->w);
    nm_parked_t *p = st->parked;
    st->parked = NULL;
    st->parked_tail = &st->parked;
    while (p) {
        nm_parked_t *next = p->next;
        if (p->conn)
            dispatch(st, p->conn, p->request_id, p->env);
        lodestar__envelope__free_unpacked(p->env, NULL);
        free(p);
        p = next;
    }
}

/* ------------------------------------------------------------------ hooks */

static void naming_on_request(worker_t *w, ipc_conn_t *conn, uint64_t request_id, Lodestar__Envelope *req)
{
    nm_state_t *st = state_of(w);
    if (!st->loaded && (req->body_case == LODESTAR__ENVELOPE__BODY_NAMING_WRITE_REQUEST ||
                        req->body_case == LODESTAR__ENVELOPE__BODY_NAMING_QUERY_REQUEST ||
                        req->body_case == LODESTAR__ENVELOPE__BODY_NAMING_SNAPSHOT_REQUEST)) {
        nm_parked_t *p = nm_xcalloc(1, sizeof *p);
        p->conn = conn;
        p->request_id = request_id;
        p->env = copy_envelope(req);
        *st->parked_tail = p;
        st->parked_tail = &p->next;
        return;
    }
    dispatch(st, conn, request_id, req);
}

static void naming_on_peer(worker_t *w, ipc_conn_t *conn, bool connected)
{
    nm_state_t *st = state_of(w);
    if (connected || !st)
        return;
    nm_batcher_forget_conn(st->batcher, conn);
    for (nm_parked_t *p = st->parked; p; p = p->next)
        if (p->conn == conn)
            p->conn = NULL;
}

static void naming_on_store_state(worker_t *w, bool up)
{
    nm_state_t *st = state_of(w);
    if (st)
        nm_sync_store_state(st->sync, up);
}

static bool naming_ready(worker_t *w)
{
    nm_state_t *st = state_of(w);
    return st && st->loaded;
}

static int naming_domain_init(worker_t *w)
{
    /* Every batch allocates and frees a few megabytes in many pieces; by
     * default glibc gives the freed top of the heap back to the kernel and
     * page-faults it in again for the next batch. This process keeps it. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    nm_state_t *st = nm_xcalloc(1, sizeof *st);
    st->w = w;
    st->cfg = w->child->cfg->naming_worker;
    st->model = nm_model_new();
    st->parked_tail = &st->parked;
    nm_arena_init(&st->scratch, 16384);
    /* the writer number: random, non-zero, positive (a bigint column) */
    uint64_t wr = 0;
    while (wr == 0) {
        char hex[33];
        nm_random_hex(hex);
        wr = strtoull(hex + 16, NULL, 16) >> 1;
    }
    snprintf(st->writer, sizeof st->writer, "%llu", (unsigned long long)wr);
    w->domain_state = st;
    st->batcher = nm_batcher_new(st);
    st->sync = nm_sync_new(st);
    log_info("naming: batches of up to %d operations or %d ms, queue %d, sync every %d ms, deleted rows kept %d s",
             st->cfg.batch_max, st->cfg.batch_wait_ms, st->cfg.batch_queue_size, st->cfg.sync_interval_ms,
             st->cfg.deleted_retention_s);
    return 0;
}

static void naming_domain_fini(worker_t *w)
{
    nm_state_t *st = state_of(w);
    if (!st)
        return;
    w->domain_state = NULL;
    nm_batcher_free(st->batcher);
    nm_sync_free(st->sync);
    for (nm_parked_t *p = st->parked, *next; p; p = next) {
        next = p->next;
        lodestar__envelope__free_unpacked(p->env, NULL);
        free(p);
    }
    nm_model_free(st->model);
    nm_arena_free(&st->scratch);
    free(st);
}

static const worker_domain_t naming_domain = {
    .on_request = naming_on_request,
    .on_store_state = naming_on_store_state,
    .init = naming_domain_init,
    .fini = naming_domain_fini,
    .ready = naming_ready,
    .on_peer = naming_on_peer,
};

static int naming_init(child_t *c) { return worker_start(c, &naming_domain); }

static void on_batches_committed(void *arg) { worker_drain(arg); }

/* Commit what is queued, then let the worker body run its store barrier. */
static void naming_drain(child_t *c)
{
    worker_t *w = c->state;
    nm_state_t *st = state_of(w);
    if (!st) {
        worker_drain(c);
        return;
    }
    if (w->server)
        ipc_server_stop_accepting(w->server);
    nm_batcher_flush_all(st->batcher, on_batches_committed, c);
}

const child_role_t naming_role = {
    .name = "naming",
    .title = "naming worker",
    .init = naming_init,
    .drain = naming_drain,
    .fini = worker_stop,
    .healthy = worker_healthy,
};

/*
 * config_query.c: ConfigQueryRequest (admin reads) and ConfigSnapshotRequest
 * (replica pages), see proto/config.proto.
 *
 * Everything is answered from the model except release history (never held
 * in memory) and the content of an inactive release (the model keeps
 * contents of active releases only): those two read PostgreSQL.
 * Lists are sorted by key (namespace, group, name; releases newest first
 * within a file) so that offset/limit pages are stable.
 */
#include "config_worker.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_validate.h"
#include "cc_view.h"
#include "log.h"
#include "polaris_code.pb-c.h"
#include "polaris_config_file_response.pb-c.h"

typedef Lodestar__ConfigQueryRequest__Kind kind_t;
#define KIND(x) LODESTAR__CONFIG_QUERY_REQUEST__KIND__##x

static const char SQL_HISTORY[] =
    "SELECT 'total', count(*)::text FROM lodestar_config_release_history"
    " WHERE ($1 = '' OR namespace = $1) AND ($2 = '' OR grp = $2) AND ($3 = '' OR file_name = $3)"
    " UNION ALL (SELECT 'row', json_build_object('id', id, 'namespace', namespace, 'group', grp,"
    " 'file_name', file_name, 'release_name', release_name, 'type', type, 'status', status, 'content', content,"
    " 'md5', md5, 'format', format, 'tags', tags, 'comment', comment, 'description', description,"
    " 'version', version, 'operator', operator, 'ctime', lodestar_config_ms(ctime), 'reason', reason)::text"
    " FROM lodestar_config_release_history"
    " WHERE ($1 = '' OR namespace = $1) AND ($2 = '' OR grp = $2) AND ($3 = '' OR file_name = $3)"
    " ORDER BY id DESC OFFSET $4 LIMIT $5)";

static const char SQL_RELEASE_CONTENT[] =
    "SELECT content FROM lodestar_config_release"
    " WHERE namespace = $1 AND grp = $2 AND file_name = $3 AND name = $4 AND NOT deleted";

static const char *filter(const Lodestar__ConfigQueryRequest *q, const char *key)
{
    for (size_t i = 0; i < q->n_filters; i++)
        if (q->filters[i]->key && strcmp(q->filters[i]->key, key) == 0 && q->filters[i]->value)
            return q->filters[i]->value;
    return "";
}

/* An empty pattern matches everything. */
static bool match(const char *pattern, const char *s) { return !*pattern || cw_glob(pattern, s); }

/* ---- answers ---- */

typedef struct qans {
    cc_arena_t a;
    V1__ConfigBatchQueryResponse br;
    V1__ConfigResponse one;
    bool has_one;
} qans_t;

static void qans_init(qans_t *q)
{
    memset(q, 0, sizeof *q);
    v1__config_batch_query_response__init(&q->br);
    v1__config_response__init(&q->one);
}

static void qans_code(qans_t *q, uint32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void qans_code(qans_t *q, uint32_t code, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    q->br.code = cc_u32v(&q->a, code);
    q->br.info = cc_sv_dup(&q->a, buf);
    q->one.code = q->br.code;
    q->one.info = q->br.info;
}

static void qans_send(qans_t *q, ipc_conn_t *conn, uint64_t request_id)
{
    if (conn) {
        if (!q->br.code)
            qans_code(q, V1__CODE__ExecuteSuccess, "execute success");
        if (q->a.failed) {
            ipc_server_reply_error(conn, request_id, -ENOMEM, "config worker out of memory answering a query");
        } else {
            Lodestar__ConfigQueryResponse qr = LODESTAR__CONFIG_QUERY_RESPONSE__INIT;
            qr.result = &q->br;
            if (q->has_one)
                qr.response = &q->one;
            Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
            env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_QUERY_RESPONSE;
            env.config_query_response = &qr;
            ipc_server_reply(conn, request_id, &env);
        }
    }
    cc_arena_free(&q->a);
}

static void page_bounds(const Lodestar__ConfigQueryRequest *req, size_t total, size_t *from, size_t *to)
{
    size_t limit = req->limit ? req->limit : CW_DEFAULT_LIMIT;
    if (limit > CW_MAX_LIMIT)
        limit = CW_MAX_LIMIT;
    *from = req->offset < total ? req->offset : total;
    *to = total - *from > limit ? *from + limit : total;
}

/* ---- lists from the model ---- */

static int group_cmp(const void *a, const void *b)
{
    const cc_group_t *x = *(cc_group_t *const *)a, *y = *(cc_group_t *const *)b;
    return strcmp(x->hkey, y->hkey);
}

static int file_cmp(const void *a, const void *b)
{
    const cc_file_t *x = *(cc_file_t *const *)a, *y = *(cc_file_t *const *)b;
    return strcmp(x->hkey, y->hkey);
}

static void query_groups(cw_t *cw, const Lodestar__ConfigQueryRequest *req, qans_t *q)
{
    const char *ns = filter(req, "namespace"), *name = filter(req, "name");
    const char *business = filter(req, "business"), *department = filter(req, "department");
    if (!*name)
        name = filter(req, "group");
    size_t n = HASH_COUNT(cw->model->groups), k = 0;
    cc_group_t **v = cc_arena_alloc(&q->a, (n ? n : 1) * sizeof *v);
    if (!v)
        return;
    for (cc_group_t *g = cw->model->groups; g; g = g->hh.next)
        if ((!*ns || strcmp(ns, g->ns) == 0) && match(name, g->name) && match(business, g->business) &&
            match(department, g->department))
            v[k++] = g;
    qsort(v, k, sizeof *v, group_cmp);
    cc_model_count_files(cw->model);
    size_t from, to;
    page_bounds(req, k, &from, &to);
    q->br.total = cc_u32v(&q->a, (uint32_t)k);
    q->br.configfilegroups = cc_arena_alloc(&q->a, (to - from + 1) * sizeof *q->br.configfilegroups);
    for (size_t i = from; q->br.configfilegroups && i < to; i++)
        q->br.configfilegroups[q->br.n_configfilegroups++] = cc_view_group(&q->a, v[i]);
}

static void query_files(cw_t *cw, const Lodestar__ConfigQueryRequest *req, qans_t *q)
{
    const char *ns = filter(req, "namespace"), *group = filter(req, "group"), *name = filter(req, "name");
    if (!*name)
        name = filter(req, "file_name");
    size_t n = HASH_COUNT(cw->model->files), k = 0;
    cc_file_t **v = cc_arena_alloc(&q->a, (n ? n : 1) * sizeof *v);
    if (!v)
        return;
    for (cc_file_t *f = cw->model->files; f; f = f->hh.next)
        if ((!*ns || strcmp(ns, f->ns) == 0) && match(group, f->group) && match(name, f->name))
            v[k++] = f;
    qsort(v, k, sizeof *v, file_cmp);
    size_t from, to;
    page_bounds(req, k, &from, &to);
    q->br.total = cc_u32v(&q->a, (uint32_t)k);
    q->br.configfiles = cc_arena_alloc(&q->a, (to - from + 1) * sizeof *q->br.configfiles);
    for (size_t i = from; q->br.configfiles && i < to; i++)
        q->br.configfiles[q->br.n_configfiles++] = cc_view_file(&q->a, v[i], false);
}

/* The file named by namespace, group and name (or file_name); NULL with the
 * answer's code set when a name is invalid or the file is unknown. */
static cc_file_t *one_file(cw_t *cw, const Lodestar__ConfigQueryRequest *req, qans_t *q)
{
    const char *ns = filter(req, "namespace"), *group = filter(req, "group"), *name = filter(req, "file_name");
    if (!*name)
        name = filter(req, "name");
    char err[256];
    if (cc_check_resource_name("namespace", ns, CC_MAX_NAMESPACE_LEN, err, sizeof err) < 0) {
        qans_code(q, V1__CODE__InvalidNamespaceName, "%s", err);
        return NULL;
    }
    if (cc_check_resource_name("group", group, CC_MAX_NAME_LEN, err, sizeof err) < 0) {
        qans_code(q, V1__CODE__InvalidConfigFileGroupName, "%s", err);
        return NULL;
    }
    if (cc_check_file_name(name, err, sizeof err) < 0) {
        qans_code(q, V1__CODE__InvalidConfigFileName, "%s", err);
        return NULL;
    }
    cc_file_t *f = cc_model_file(cw->model, ns, group, name);
    if (!f)
        qans_code(q, V1__CODE__NotFoundResource, "config file %s/%s/%s does not exist", ns, group, name);
    return f;
}

typedef struct relref {
    const cc_file_t *f;
    const cc_release_t *r;
} relref_t;

static int relref_cmp(const void *a, const void *b)
{
    const relref_t *x = a, *y = b;
    int c = strcmp(x->f->hkey, y->f->hkey);
    if (c)
        return c;
    return x->r->version < y->r->version ? 1 : x->r->version > y->r->version ? -1 : 0;
}

static void list_releases(qans_t *q, const Lodestar__ConfigQueryRequest *req, relref_t *v, size_t k, bool page)
{
    qsort(v, k, sizeof *v, relref_cmp);
    size_t from = 0, to = k;
    if (page)
        page_bounds(req, k, &from, &to);
    q->br.total = cc_u32v(&q->a, (uint32_t)k);
    q->br.configfilereleases = cc_arena_alloc(&q->a, (to - from + 1) * sizeof *q->br.configfilereleases);
    for (size_t i = from; q->br.configfilereleases && i < to; i++)
        q->br.configfilereleases[q->br.n_configfilereleases++] = cc_view_release(&q->a, v[i].f, v[i].r, false);
}

static void query_releases(cw_t *cw, const Lodestar__ConfigQueryRequest *req, qans_t *q)
{
    const char *ns = filter(req, "namespace"), *group = filter(req, "group"), *name = filter(req, "file_name");
    const char *rname = filter(req, "release_name");
    bool only_active = strcmp(filter(req, "only_active"), "true") == 0;
    if (!*name)
        name = filter(req, "name");
    size_t n = 0, k = 0;
    for (cc_file_t *f = cw->model->files; f; f = f->hh.next)
        for (const cc_release_t *r = f->releases; r; r = r->next)
            n++;
    relref_t *v = cc_arena_alloc(&q->a, (n ? n : 1) * sizeof *v);
    if (!v)
        return;
    for (cc_file_t *f = cw->model->files; f; f = f->hh.next) {
        if ((*ns && strcmp(ns, f->ns) != 0) || !match(group, f->group) || !match(name, f->name))
            continue;
        for (const cc_release_t *r = f->releases; r; r = r->next)
            if (match(rname, r->name) && (!only_active || r->active))
                v[k++] = (relref_t){f, r};
    }
    list_releases(q, req, v, k, true);
}

static void query_release_versions(cw_t *cw, const Lodestar__ConfigQueryRequest *req, qans_t *q)
{
    const cc_file_t *f = one_file(cw, req, q);
    if (!f)
        return;
    size_t n = 0, k = 0;
    for (const cc_release_t *r = f->releases; r; r = r->next)
        n++;
    relref_t *v = cc_arena_alloc(&q->a, (n ? n : 1) * sizeof *v);
    if (!v)
        return;
    for (const cc_release_t *r = f->releases; r; r = r->next)
        v[k++] = (relref_t){f, r};
    list_releases(q, req, v, k, false);
}

/* ---- reads that need PostgreSQL ---- */

typedef struct qctx {
    kind_t kind;
    char *ns, *group, *file, *release;
} qctx_t;

static void qctx_free(qctx_t *c)
{
    free(c->ns);
    free(c->group);
    free(c->file);
    free(c->release);
    free(c);
}

static void on_history(int status, PGresult *res, const char *err, void *arg)
{
    cw_call_t *call = arg;
    cw_t *cw = call->cw;
    qctx_t *qc = call->data;
    uint64_t request_id = call->request_id;
    ipc_conn_t *conn = cw_call_finish(call);
    qctx_free(qc);
    if (!conn || status == -ECANCELED)
        return;
    qans_t q;
    qans_init(&q);
    if (status < 0) {
        qans_code(&q, V1__CODE__StoreLayerException, "store: %s", err ? err : strerror(-status));
        qans_send(&q, conn, request_id);
        return;
    }
    int n = PQntuples(res);
    /* histories carry contents: a page stops short of half a frame (total
     * still counts every row, so the caller pages on) */
    size_t bytes = 0, budget = cw->max_frame / 2;
    q.br.configfilereleasehistories = cc_arena_alloc(&q.a, (size_t)(n > 0 ? n : 1) * sizeof(void *));
    for (int i = 0; i < n && q.br.configfilereleasehistories; i++) {
        const char *kind = PQgetvalue(res, i, 0);
        if (strcmp(kind, "total") == 0) {
            q.br.total = cc_u32v(&q.a, (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10));
            continue;
        }
        if (bytes > budget)
            continue;
        json_t *row = json_loadb(PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1), 0, NULL);
        if (!row)
            continue;
        V1__ConfigFileReleaseHistory *h = cc_view_history(&q.a, row);
        json_decref(row);
        if (!h)
            continue;
        size_t sz = v1__config_file_release_history__get_packed_size(h) + 8;
        if (bytes + sz > budget && q.br.n_configfilereleasehistories > 0) {
            bytes = budget + 1; /* full: later rows are skipped */
            continue;
        }
        bytes += sz;
        q.br.configfilereleasehistories[q.br.n_configfilereleasehistories++] = h;
    }
    qans_send(&q, conn, request_id);
}

static void on_release_content(int status, PGresult *res, const char *err, void *arg)
{
    cw_call_t *call = arg;
    cw_t *cw = call->cw;
    qctx_t *qc = call->data;
    uint64_t request_id = call->request_id;
    ipc_conn_t *conn = cw_call_finish(call);
    if (!conn || status == -ECANCELED) {
        qctx_free(qc);
        return;
    }
    qans_t q;
    qans_init(&q);
    /* the model may have moved on meanwhile: look the release up again */
    const cc_file_t *f = cc_model_file(cw->model, qc->ns, qc->group, qc->file);
    const cc_release_t *r = f ? cc_file_release(f, qc->release) : NULL;
    if (status < 0) {
        qans_code(&q, V1__CODE__StoreLayerException, "store: %s", err ? err : strerror(-status));
    } else if (!r || PQntuples(res) != 1) {
        qans_code(&q, V1__CODE__NotFoundResourceConfigFile, "config file %s/%s/%s has no release %s", qc->ns,
                  qc->group, qc->file, qc->release);
    } else {
        q.one.configfilerelease = cc_view_release(&q.a, f, r, true);
        if (q.one.configfilerelease && !q.one.configfilerelease->content)
            q.one.configfilerelease->content = cc_sv_dup(&q.a, PQgetvalue(res, 0, 0));
        q.has_one = true;
    }
    qctx_free(qc);
    qans_send(&q, conn, request_id);
}

static bool query_store(cw_t *cw, ipc_conn_t *conn, uint64_t request_id, qctx_t *qc, const char *sql, int nparams,
                        const char *const *params, store_result_cb cb)
{
    cw_call_t *call = cw_call_new(cw, conn, request_id, qc);
    if (!call)
        return false;
    if (store_query(cw->w->store, sql, nparams, params, cb, call) < 0) {
        cw_call_finish(call);
        return false;
    }
    return true;
}

static qctx_t *qctx_new(kind_t kind, const char *ns, const char *group, const char *file, const char *release)
{
    qctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->kind = kind;
    c->ns = strdup(ns);
    c->group = strdup(group);
    c->file = strdup(file);
    c->release = strdup(release);
    if (!c->ns || !c->group || !c->file || !c->release) {
        qctx_free(c);
        return NULL;
    }
    return c;
}

/* ---- entry ---- */

void cw_handle_query(cw_t *cw, ipc_conn_t *conn, uint64_t request_id, const Lodestar__ConfigQueryRequest *req)
{
    qans_t q;
    qans_init(&q);
    switch (req->kind) {
    case KIND(GROUPS):
        query_groups(cw, req, &q);
        break;
    case KIND(FILES):
        query_files(cw, req, &q);
        break;
    case KIND(FILE): {
        const cc_file_t *f = one_file(cw, req, &q);
        if (f) {
            q.one.configfile = cc_view_file(&q.a, f, true);
            q.has_one = true;
        }
        break;
    }
    case KIND(RELEASES):
        query_releases(cw, req, &q);
        break;
    case KIND(RELEASE_VERSIONS):
        query_release_versions(cw, req, &q);
        break;
    case KIND(RELEASE): {
        const cc_file_t *f = one_file(cw, req, &q);
        if (!f)
            break;
        const char *rname = filter(req, "release_name");
        const cc_release_t *r = *rname ? cc_file_release(f, rname) : cc_file_active(f);
        if (!r) {
            if (*rname)
                qans_code(&q, V1__CODE__NotFoundResourceConfigFile, "config file %s/%s/%s has no release %s", f->ns,
                          f->group, f->name, rname);
            else
                qans_code(&q, V1__CODE__NotFoundResourceConfigFile, "config file %s/%s/%s has no active release",
                          f->ns, f->group, f->name);
            break;
        }
        if (r->content) {
            q.one.configfilerelease = cc_view_release(&q.a, f, r, true);
            q.has_one = true;
            break;
        }
        qctx_t *qc = qctx_new(req->kind, f->ns, f->group, f->name, r->name);
        const char *params[4] = {f->ns, f->group, f->name, r->name};
        if (qc && query_store(cw, conn, request_id, qc, SQL_RELEASE_CONTENT, 4, params, on_release_content)) {
            cc_arena_free(&q.a);
            return;
        }
        if (qc)
            qctx_free(qc);
        qans_code(&q, V1__CODE__ExecuteException, "config worker cannot read release %s now", r->name);
        break;
    }
    case KIND(RELEASE_HISTORY): {
        const char *ns = filter(req, "namespace"), *group = filter(req, "group"), *file = filter(req, "file_name");
        if (!*file)
            file = filter(req, "name");
        size_t limit = req->limit ? req->limit : CW_DEFAULT_LIMIT;
        if (limit > CW_MAX_LIMIT)
            limit = CW_MAX_LIMIT;
        char off[24], lim[24];
        snprintf(off, sizeof off, "%u", req->offset);
        snprintf(lim, sizeof lim, "%zu", limit);
        const char *params[5] = {ns, group, file, off, lim};
        qctx_t *qc = qctx_new(req->kind, ns, group, file, "");
        if (qc && query_store(cw, conn, request_id, qc, SQL_HISTORY, 5, params, on_history)) {
            cc_arena_free(&q.a);
            return;
        }
        if (qc)
            qctx_free(qc);
        qans_code(&q, V1__CODE__ExecuteException, "config worker cannot read release history now");
        break;
    }
    default:
        qans_code(&q, V1__CODE__InvalidParameter, "unknown config query kind %d", (int)req->kind);
        break;
    }
    qans_send(&q, conn, request_id);
}

/* ---- snapshot pages ---- */

void cw_handle_snapshot(cw_t *cw, ipc_conn_t *conn, uint64_t request_id, const Lodestar__ConfigSnapshotRequest *req)
{
    const char *after = req->after ? req->after : "";
    size_t budget = cw->max_frame / 2;
    if (req->max_bytes && req->max_bytes < budget)
        budget = req->max_bytes;
    cc_arena_t a = {0};
    size_t n = HASH_COUNT(cw->model->files), k = 0;
    cc_file_t **v = cc_arena_alloc(&a, (n ? n : 1) * sizeof *v);
    for (cc_file_t *f = cw->model->files; v && f; f = f->hh.next)
        if (cc_file_published(f) && strcmp(f->hkey, after) > 0)
            v[k++] = f;
    if (v)
        qsort(v, k, sizeof *v, file_cmp);
    Lodestar__ConfigSnapshot snap = LODESTAR__CONFIG_SNAPSHOT__INIT;
    snap.files = cc_arena_alloc(&a, (k ? k : 1) * sizeof *snap.files);
    size_t bytes = 0, i = 0;
    for (; snap.files && i < k; i++) {
        Lodestar__ConfigFileState *s = cc_view_state(&a, v[i]);
        if (!s)
            break;
        size_t sz = lodestar__config_file_state__get_packed_size(s) + 8;
        if (i > 0 && bytes + sz > budget)
            break;
        snap.files[snap.n_files++] = s;
        bytes += sz;
    }
    snap.notification_id = cw->model->notification_id;
    snap.complete = i >= k;
    snap.next = (char *)(snap.complete || i == 0 ? "" : v[i - 1]->hkey);
    if (a.failed) {
        ipc_server_reply_error(conn, request_id, -ENOMEM, "config worker out of memory building a snapshot page");
    } else {
        Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
        env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_SNAPSHOT;
        env.config_snapshot = &snap;
        ipc_server_reply(conn, request_id, &env);
    }
    cc_arena_free(&a);
}

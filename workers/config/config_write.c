/*
 * config_write.c: ConfigWriteRequest (see proto/config.proto).
 *
 * Every item is checked first: names, lengths, formats, tags, beta rules,
 * and for publishing operations the content that would be published, parsed
 * as its format (the draft held in the model for FILE_PUBLISH, whose md5
 * then goes along so that PostgreSQL refuses to publish anything else). If
 * any item is invalid nothing is sent to the store. Otherwise the items go
 * to lodestar_config_write() as one JSON array in one statement; the rows
 * it changed are applied to the model, the changes pushed, and only then
 * the request is answered, item by item, with the Polaris code and the
 * resulting group, file or release.
 */
#include "config_worker.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_beta.h"
#include "cc_validate.h"
#include "cc_view.h"
#include "log.h"
#include "polaris_code.pb-c.h"
#include "polaris_config_file_response.pb-c.h"

typedef Lodestar__ConfigWriteRequest__Op op_t;

#define OP(x) LODESTAR__CONFIG_WRITE_REQUEST__OP__##x

static const char SQL_WRITE[] = "SELECT kind, data::text FROM lodestar_config_write($1, $2::jsonb, $3)";

/* One item: its checks' verdict, then the store's. */
typedef struct witem {
    uint32_t code;          /* 0 while undecided */
    char *info;
    json_t *json;           /* the item as lodestar_config_write takes it */
    char *ns, *group, *name;/* what the answer shows: a group (name) or a file */
    char *release_name;     /* publishing operations: from the store's result */
} witem_t;

typedef struct wctx {
    cw_t *cw;
    op_t op;
    size_t n;
    witem_t *items;
    size_t culprit;         /* first invalid item + 1 (0: none): its code is the batch's */
} wctx_t;

static const char *sval(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : NULL; }
static const char *sval_or(const Google__Protobuf__StringValue *v, const char *d)
{
    const char *s = sval(v);
    return s ? s : d;
}

static void fail(witem_t *it, uint32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(witem_t *it, uint32_t code, const char *fmt, ...)
{
    if (it->code)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    it->code = code;
    free(it->info);
    it->info = strdup(buf);
}

static void set_key(witem_t *it, const char *ns, const char *group, const char *name)
{
    it->ns = strdup(ns ? ns : "");
    it->group = strdup(group ? group : "");
    it->name = strdup(name ? name : "");
}

static void wctx_free(wctx_t *wc)
{
    for (size_t i = 0; i < wc->n; i++) {
        witem_t *it = &wc->items[i];
        free(it->info);
        json_decref(it->json);
        free(it->ns);
        free(it->group);
        free(it->name);
        free(it->release_name);
    }
    free(wc->items);
    free(wc);
}

/* ---- field checks ---- */

static bool check_ns(witem_t *it, const char *ns)
{
    char err[256];
    if (cc_check_resource_name("namespace", ns, CC_MAX_NAMESPACE_LEN, err, sizeof err) < 0) {
        fail(it, V1__CODE__InvalidNamespaceName, "%s", err);
        return false;
    }
    return true;
}

static bool check_group(witem_t *it, const char *group)
{
    char err[256];
    if (cc_check_resource_name("group", group, CC_MAX_NAME_LEN, err, sizeof err) < 0) {
        fail(it, V1__CODE__InvalidConfigFileGroupName, "%s", err);
        return false;
    }
    return true;
}

static bool check_file(witem_t *it, const char *name)
{
    char err[256];
    if (cc_check_file_name(name, err, sizeof err) < 0) {
        fail(it, V1__CODE__InvalidConfigFileName, "%s", err);
        return false;
    }
    return true;
}

/* Free text (comments, owners, descriptions): UTF-8, bounded. */
static bool check_text(witem_t *it, const char *what, const char *s, size_t max)
{
    size_t bad, len = s ? strlen(s) : 0;
    if (!s)
        return true;
    if (len > max) {
        fail(it, V1__CODE__InvalidParameter, "%s is %zu bytes long; at most %zu are allowed", what, len, max);
        return false;
    }
    if (!cc_utf8_valid(s, len, &bad)) {
        fail(it, V1__CODE__InvalidParameter, "%s is not valid UTF-8 (byte %zu)", what, bad);
        return false;
    }
    return true;
}

static bool check_content(cw_t *cw, witem_t *it, const char *key, const char *content)
{
    size_t len = strlen(content), bad;
    if (len > cw->max_content) {
        fail(it, V1__CODE__InvalidConfigFileContentLength,
             "content of config file %s is %zu bytes long; at most %u are allowed", key, len, cw->max_content);
        return false;
    }
    if (!cc_utf8_valid(content, len, &bad)) {
        fail(it, V1__CODE__InvalidParameter, "content of config file %s is not valid UTF-8 (byte %zu)", key, bad);
        return false;
    }
    return true;
}

/* The content parses as its format (publishing operations). */
static bool check_format_content(witem_t *it, const char *key, int fmt, const char *content)
{
    char err[768];
    if (cc_validate_content((cc_format_t)fmt, content, strlen(content), err, sizeof err) < 0) {
        fail(it, V1__CODE__InvalidConfigFileFormat, "content of config file %s is not valid %s: %s", key,
             cc_format_name((cc_format_t)fmt), err);
        return false;
    }
    return true;
}

static int check_format_name(witem_t *it, const char *format)
{
    int f = cc_format_parse(format);
    if (f < 0)
        fail(it, V1__CODE__InvalidConfigFileFormat,
             "format \"%s\" is not supported (text, json, yaml, xml, properties, html)", format);
    return f;
}

static json_t *tags_json(witem_t *it, V1__ConfigFileTag *const *tags, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *k = tags[i] ? sval(tags[i]->key) : NULL, *v = tags[i] ? sval(tags[i]->value) : NULL;
        size_t bad;
        if (!k || !*k || !v || !*v) {
            fail(it, V1__CODE__InvalidConfigFileTags, "tags[%zu] needs a non-empty key and value", i);
            break;
        }
        if (strlen(k) > CC_MAX_NAME_LEN || strlen(v) > CC_MAX_COMMENT_LEN || !cc_utf8_valid(k, strlen(k), &bad) ||
            !cc_utf8_valid(v, strlen(v), &bad)) {
            fail(it, V1__CODE__InvalidConfigFileTags,
                 "tags[%zu] (\"%.64s\"): key at most %d bytes, value at most %d, both UTF-8", i, k, CC_MAX_NAME_LEN,
                 CC_MAX_COMMENT_LEN);
            break;
        }
        json_array_append_new(arr, json_pack("{s:s,s:s}", "key", k, "value", v));
    }
    return arr;
}

static void put_str(json_t *o, const char *k, const char *v)
{
    if (v)
        json_object_set_new(o, k, json_string(v));
}

static const char *by_of(const Google__Protobuf__StringValue *modify_by, const Google__Protobuf__StringValue *create_by,
                         const char *op_operator)
{
    const char *b = sval(modify_by);
    if (!b || !*b)
        b = sval(create_by);
    if (!b || !*b)
        b = op_operator;
    return b ? b : "";
}

/* ---- one item per operation ---- */

static void build_group(wctx_t *wc, witem_t *it, const V1__ConfigFileGroup *g, const char *op_by)
{
    if (!g) {
        fail(it, V1__CODE__EmptyRequest, "empty config group");
        return;
    }
    const char *ns = sval(g->namespace_), *name = sval(g->name);
    set_key(it, ns, NULL, name);
    if (!check_ns(it, ns) || !check_group(it, name))
        return;
    json_t *o = json_pack("{s:s,s:s,s:s}", "namespace", ns, "name", name, "by",
                          by_of(g->modify_by, g->create_by, op_by));
    it->json = o;
    if (wc->op == OP(GROUP_DELETE))
        return;
    const char *const keys[] = {"comment", "owner", "business", "department"};
    const char *const vals[] = {sval(g->comment), sval(g->owner), sval(g->business), sval(g->department)};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (!check_text(it, keys[i], vals[i], CC_MAX_COMMENT_LEN))
            return;
        put_str(o, keys[i], vals[i]);
    }
    if (g->n_metadata) {
        json_t *md = json_object();
        for (size_t i = 0; i < g->n_metadata; i++) {
            const char *k = g->metadata[i]->key ? g->metadata[i]->key : "";
            const char *v = g->metadata[i]->value ? g->metadata[i]->value : "";
            size_t bad;
            if (!*k || strlen(k) > CC_MAX_NAME_LEN || strlen(v) > CC_MAX_COMMENT_LEN ||
                !cc_utf8_valid(k, strlen(k), &bad) || !cc_utf8_valid(v, strlen(v), &bad)) {
                fail(it, V1__CODE__InvalidMetadata,
                     "metadata \"%.64s\": key of 1..%d bytes, value of at most %d, both UTF-8", k, CC_MAX_NAME_LEN,
                     CC_MAX_COMMENT_LEN);
                json_decref(md);
                return;
            }
            json_object_set_new(md, k, json_string(v));
        }
        json_object_set_new(o, "metadata", md);
    }
}

static void build_file(wctx_t *wc, witem_t *it, const V1__ConfigFile *f, const char *op_by)
{
    if (!f) {
        fail(it, V1__CODE__EmptyRequest, "empty config file");
        return;
    }
    const char *ns = sval(f->namespace_), *group = sval(f->group), *name = sval(f->name);
    set_key(it, ns, group, name);
    if (!check_ns(it, ns) || !check_group(it, group) || !check_file(it, name))
        return;
    char key[400];
    snprintf(key, sizeof key, "%s/%s/%s", ns, group, name);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "namespace", ns, "group", group, "name", name, "by",
                          by_of(f->modify_by, f->create_by, op_by));
    it->json = o;
    if (wc->op == OP(FILE_DELETE))
        return;
    bool create = wc->op == OP(FILE_CREATE);
    const char *content = sval(f->content);
    if (content || create) {
        if (!content)
            content = "";
        if (!check_content(wc->cw, it, key, content))
            return;
        json_object_set_new(o, "content", json_string(content));
    }
    const char *format = sval(f->format);
    if (format || create) {
        int fmt = check_format_name(it, format);
        if (fmt < 0)
            return;
        json_object_set_new(o, "format", json_string(cc_format_name((cc_format_t)fmt)));
    }
    if (!check_text(it, "comment", sval(f->comment), CC_MAX_COMMENT_LEN))
        return;
    put_str(o, "comment", sval(f->comment));
    if (f->n_tags || create)
        json_object_set_new(o, "tags", tags_json(it, f->tags, f->n_tags));
    if (f->encrypted)
        json_object_set_new(o, "encrypted", json_boolean(f->encrypted->value));
    if (!check_text(it, "encrypt_algo", sval(f->encrypt_algo), CC_MAX_NAME_LEN))
        return;
    put_str(o, "encrypt_algo", sval(f->encrypt_algo));
}

static bool check_release_name(witem_t *it, const char *name)
{
    char err[256];
    if (name && *name && cc_check_release_name(name, err, sizeof err) < 0) {
        fail(it, V1__CODE__InvalidParameter, "%s", err);
        return false;
    }
    return true;
}

static void build_publish(wctx_t *wc, witem_t *it, const V1__ConfigFileRelease *r, const char *op_by)
{
    if (!r) {
        fail(it, V1__CODE__EmptyRequest, "empty config file release");
        return;
    }
    const char *ns = sval(r->namespace_), *group = sval(r->group), *name = sval(r->file_name);
    set_key(it, ns, group, name);
    if (!check_ns(it, ns) || !check_group(it, group) || !check_file(it, name))
        return;
    char key[400];
    snprintf(key, sizeof key, "%s/%s/%s", ns, group, name);
    const char *rname = sval(r->name);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "namespace", ns, "group", group, "file_name", name, "by",
                          by_of(r->modify_by, r->create_by, op_by));
    it->json = o;
    switch (wc->op) {
    case OP(STOP_BETA):
        return;
    case OP(RELEASE_DELETE):
        if (!rname || !*rname) {
            fail(it, V1__CODE__InvalidParameter, "which release of config file %s to delete: name is empty", key);
            return;
        }
        if (!check_release_name(it, rname))
            return;
        put_str(o, "release_name", rname);
        return;
    case OP(RELEASE_ROLLBACK):
        if (rname && *rname) {
            if (!check_release_name(it, rname))
                return;
            put_str(o, "release_name", rname);
        } else if (r->version && r->version->value) {
            json_object_set_new(o, "version", json_integer((json_int_t)r->version->value));
        } else {
            fail(it, V1__CODE__InvalidParameter,
                 "which release of config file %s to roll back to: give its name or its version", key);
        }
        return;
    default:
        break;
    }
    /* FILE_PUBLISH */
    if (!check_release_name(it, rname) || !check_text(it, "comment", sval(r->comment), CC_MAX_COMMENT_LEN) ||
        !check_text(it, "release_description", sval(r->release_description), CC_MAX_COMMENT_LEN))
        return;
    put_str(o, "release_name", rname);
    put_str(o, "comment", sval(r->comment));
    put_str(o, "description", sval(r->release_description));
    const char *type = sval(r->release_type);
    if ((type && strcmp(type, CC_RELEASE_TYPE_GRAY) == 0) || r->n_beta_labels) {
        cc_beta_t b = {0};
        char err[512];
        if (cc_beta_from_labels(r->beta_labels, r->n_beta_labels, &b, err, sizeof err) < 0) {
            fail(it, V1__CODE__InvalidMatchRule, "beta release of config file %s: %s", key, err);
            return;
        }
        json_object_set_new(o, "beta", cc_beta_to_json(&b));
        cc_beta_free(&b);
    }
    const cc_file_t *f = cc_model_file(wc->cw->model, ns, group, name);
    if (!f) {
        fail(it, V1__CODE__NotFoundResource, "config file %s does not exist", key);
        return;
    }
    int fmt = cc_format_parse(f->format);
    if (!check_content(wc->cw, it, key, f->content) ||
        !check_format_content(it, key, fmt < 0 ? CC_FMT_TEXT : fmt, f->content))
        return;
    put_str(o, "md5", f->md5);
}

static void build_publish_info(wctx_t *wc, witem_t *it, const V1__ConfigFilePublishInfo *p, const char *op_by)
{
    if (!p) {
        fail(it, V1__CODE__EmptyRequest, "empty config file publish info");
        return;
    }
    const char *ns = sval(p->namespace_), *group = sval(p->group), *name = sval(p->file_name);
    set_key(it, ns, group, name);
    if (!check_ns(it, ns) || !check_group(it, group) || !check_file(it, name))
        return;
    char key[400];
    snprintf(key, sizeof key, "%s/%s/%s", ns, group, name);
    const char *by = by_of(p->modify_by, p->create_by, op_by);
    const char *content = sval_or(p->content, "");
    const char *rname = sval(p->release_name);
    if (!check_content(wc->cw, it, key, content) || !check_release_name(it, rname) ||
        !check_text(it, "comment", sval(p->comment), CC_MAX_COMMENT_LEN) ||
        !check_text(it, "release_description", sval(p->release_description), CC_MAX_COMMENT_LEN) ||
        !check_text(it, "encrypt_algo", sval(p->encrypt_algo), CC_MAX_NAME_LEN))
        return;
    /* the format the content must have: the one given, else (upsert of an
     * existing file) the stored one, else text */
    const char *format = sval(p->format);
    const cc_file_t *existing = cc_model_file(wc->cw->model, ns, group, name);
    int fmt;
    if (format)
        fmt = check_format_name(it, format);
    else if (wc->op == OP(FILE_UPSERT_AND_PUBLISH) && existing)
        fmt = cc_format_parse(existing->format) < 0 ? CC_FMT_TEXT : cc_format_parse(existing->format);
    else
        fmt = CC_FMT_TEXT;
    if (fmt < 0 || !check_format_content(it, key, fmt, content))
        return;
    char md5[CC_MD5_HEX_LEN + 1];
    if (cc_md5_hex(content, strlen(content), md5) < 0) {
        fail(it, V1__CODE__ExecuteException, "cannot compute the md5 of config file %s", key);
        return;
    }
    json_t *file = json_pack("{s:s,s:s,s:s,s:s}", "namespace", ns, "group", group, "name", name, "content", content);
    if (format || !existing || wc->op == OP(FILE_CREATE_AND_PUBLISH))
        json_object_set_new(file, "format", json_string(cc_format_name((cc_format_t)fmt)));
    put_str(file, "comment", sval(p->comment));
    if (p->n_tags || !existing)
        json_object_set_new(file, "tags", tags_json(it, p->tags, p->n_tags));
    if (p->encrypted)
        json_object_set_new(file, "encrypted", json_boolean(p->encrypted->value));
    put_str(file, "encrypt_algo", sval(p->encrypt_algo));
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o}", "namespace", ns, "group", group, "file_name", name, "by", by,
                          "md5", md5, "file", file);
    put_str(o, "release_name", rname);
    put_str(o, "description", sval(p->release_description));
    it->json = o;
}

/* ---- answer ---- */

static void reply_items(cw_t *cw, ipc_conn_t *conn, uint64_t request_id, wctx_t *wc)
{
    if (!conn)
        return;
    cc_arena_t a = {0};
    V1__ConfigBatchWriteResponse br = V1__CONFIG_BATCH_WRITE_RESPONSE__INIT;
    V1__ConfigResponse **rs = cc_arena_alloc(&a, (wc->n ? wc->n : 1) * sizeof *rs);
    uint32_t first = 0;
    const char *first_info = NULL;
    bool groups = wc->op == OP(GROUP_CREATE) || wc->op == OP(GROUP_UPDATE);
    if (groups)
        cc_model_count_files(cw->model);
    for (size_t i = 0; rs && i < wc->n; i++) {
        witem_t *it = &wc->items[i];
        V1__ConfigResponse *r = cc_arena_alloc(&a, sizeof *r);
        if (!r)
            break;
        v1__config_response__init(r);
        r->code = cc_u32v(&a, it->code);
        r->info = cc_sv_ref(&a, it->info ? it->info : (it->code == V1__CODE__ExecuteSuccess ? "execute success" : ""));
        if (it->code != V1__CODE__ExecuteSuccess && !first) {
            first = it->code;
            first_info = it->info;
        }
        if (it->code == V1__CODE__ExecuteSuccess) {
            if (groups) {
                const cc_group_t *g = cc_model_group(cw->model, it->ns, it->name);
                if (g)
                    r->configfilegroup = cc_view_group(&a, g);
            } else if (wc->op == OP(FILE_CREATE) || wc->op == OP(FILE_UPDATE)) {
                const cc_file_t *f = cc_model_file(cw->model, it->ns, it->group, it->name);
                if (f)
                    r->configfile = cc_view_file(&a, f, true);
            } else if (it->release_name) {
                const cc_file_t *f = cc_model_file(cw->model, it->ns, it->group, it->name);
                const cc_release_t *rel = f ? cc_file_release(f, it->release_name) : NULL;
                if (rel)
                    r->configfilerelease = cc_view_release(&a, f, rel, true);
            }
        }
        rs[i] = r;
    }
    if (wc->culprit) {
        first = wc->items[wc->culprit - 1].code;
        first_info = wc->items[wc->culprit - 1].info;
    }
    br.code = cc_u32v(&a, first ? first : V1__CODE__ExecuteSuccess);
    br.info = cc_sv_ref(&a, first ? (first_info ? first_info : "") : "execute success");
    br.total = cc_u32v(&a, (uint32_t)wc->n);
    br.responses = rs;
    br.n_responses = wc->n;
    if (a.failed) {
        cc_arena_free(&a);
        ipc_server_reply_error(conn, request_id, -ENOMEM, "config worker out of memory answering a write");
        return;
    }
    Lodestar__ConfigWriteResponse wr = LODESTAR__CONFIG_WRITE_RESPONSE__INIT;
    wr.result = &br;
    wr.notification_id = cw->model->notification_id;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_RESPONSE;
    env.config_write_response = &wr;
    ipc_server_reply(conn, request_id, &env);
    cc_arena_free(&a);
}

/* A 'result' row of lodestar_config_write: {"i", "code", "info", "release_name"}. */
static void on_item_result(void *arg, json_t *row)
{
    wctx_t *wc = arg;
    json_t *i = json_object_get(row, "i"), *code = json_object_get(row, "code");
    if (!json_is_integer(i) || !json_is_integer(code))
        return;
    json_int_t idx = json_integer_value(i);
    if (idx < 0 || (size_t)idx >= wc->n)
        return;
    witem_t *it = &wc->items[idx];
    it->code = (uint32_t)json_integer_value(code);
    const char *info = json_string_value(json_object_get(row, "info"));
    if (info) {
        free(it->info);
        it->info = strdup(info);
    }
    const char *rname = json_string_value(json_object_get(row, "release_name"));
    if (rname) {
        free(it->release_name);
        it->release_name = strdup(rname);
    }
}

static void on_write_done(int status, PGresult *res, const char *err, void *arg)
{
    cw_call_t *call = arg;
    cw_t *cw = call->cw;
    wctx_t *wc = call->data;
    uint64_t request_id = call->request_id;
    if (status < 0) {
        ipc_conn_t *conn = cw_call_finish(call);
        if (status != -ECANCELED) {
            log_warn("config write %s of %zu item(s) failed in the store: %s",
                     protobuf_c_enum_descriptor_get_value(&lodestar__config_write_request__op__descriptor,
                                                          (int)wc->op)->name,
                     wc->n, err ? err : strerror(-status));
            for (size_t i = 0; i < wc->n; i++) {
                wc->items[i].code = V1__CODE__StoreLayerException;
                free(wc->items[i].info);
                wc->items[i].info = NULL;
                char buf[768];
                snprintf(buf, sizeof buf, "store: %s", err ? err : strerror(-status));
                wc->items[i].info = strdup(buf);
            }
            reply_items(cw, conn, request_id, wc);
        }
        wctx_free(wc);
        return;
    }
    cw_apply_result(cw, res, on_item_result, wc, NULL, 0);
    for (size_t i = 0; i < wc->n; i++)
        if (!wc->items[i].code) {
            wc->items[i].code = V1__CODE__ExecuteException;
            wc->items[i].info = strdup("the store returned no result for this item");
        }
    cw_push_changes(cw);
    ipc_conn_t *conn = cw_call_finish(call);
    reply_items(cw, conn, request_id, wc);
    wctx_free(wc);
}

void cw_handle_write(cw_t *cw, ipc_conn_t *conn, uint64_t request_id, const Lodestar__ConfigWriteRequest *req)
{
    op_t op = req->op;
    size_t n;
    switch (op) {
    case OP(GROUP_CREATE):
    case OP(GROUP_UPDATE):
    case OP(GROUP_DELETE): n = req->n_groups; break;
    case OP(FILE_CREATE):
    case OP(FILE_UPDATE):
    case OP(FILE_DELETE): n = req->n_files; break;
    case OP(FILE_PUBLISH):
    case OP(RELEASE_ROLLBACK):
    case OP(RELEASE_DELETE):
    case OP(STOP_BETA): n = req->n_releases; break;
    case OP(FILE_CREATE_AND_PUBLISH):
    case OP(FILE_UPSERT_AND_PUBLISH): n = req->n_publish_infos; break;
    default:
        ipc_server_reply_error(conn, request_id, -EINVAL, "config write: unknown operation %d", (int)op);
        return;
    }
    wctx_t *wc = calloc(1, sizeof *wc);
    if (!wc || !(wc->items = calloc(n ? n : 1, sizeof *wc->items))) {
        free(wc);
        ipc_server_reply_error(conn, request_id, -ENOMEM, "config worker out of memory");
        return;
    }
    wc->cw = cw;
    wc->op = op;
    wc->n = n;
    const char *op_by = req->operator_ && *req->operator_ ? req->operator_ : "";
    const char *opname = protobuf_c_enum_descriptor_get_value(&lodestar__config_write_request__op__descriptor, (int)op)->name;
    if (n == 0 || n > CW_MAX_BATCH) {
        /* answered as one failed item so the caller gets a Polaris code */
        wc->n = 1;
        if (n)
            fail(&wc->items[0], V1__CODE__BatchSizeOverLimit, "%s of %zu items: at most %d per request", opname, n,
                 CW_MAX_BATCH);
        else
            fail(&wc->items[0], V1__CODE__EmptyRequest, "%s without any item", opname);
        reply_items(cw, conn, request_id, wc);
        wctx_free(wc);
        return;
    }
    bool invalid = false;
    for (size_t i = 0; i < n; i++) {
        witem_t *it = &wc->items[i];
        switch (op) {
        case OP(GROUP_CREATE):
        case OP(GROUP_UPDATE):
        case OP(GROUP_DELETE): build_group(wc, it, req->groups[i], op_by); break;
        case OP(FILE_CREATE):
        case OP(FILE_UPDATE):
        case OP(FILE_DELETE): build_file(wc, it, req->files[i], op_by); break;
        case OP(FILE_CREATE_AND_PUBLISH):
        case OP(FILE_UPSERT_AND_PUBLISH): build_publish_info(wc, it, req->publish_infos[i], op_by); break;
        default: build_publish(wc, it, req->releases[i], op_by); break;
        }
        if (it->code && !invalid) {
            invalid = true;
            wc->culprit = i + 1;
        }
    }
    if (invalid) {
        for (size_t i = 0; i < n; i++)
            fail(&wc->items[i], V1__CODE__BadRequest, "not applied: another item of this request is invalid");
        log_info("config write %s from %s refused: item %zu: %s", opname,
                 req->origin && *req->origin ? req->origin : "?", wc->culprit - 1, wc->items[wc->culprit - 1].info);
        reply_items(cw, conn, request_id, wc);
        wctx_free(wc);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(arr, wc->items[i].json);
    char *items = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    cw_call_t *call = items ? cw_call_new(cw, conn, request_id, wc) : NULL;
    if (!call) {
        free(items);
        ipc_server_reply_error(conn, request_id, -ENOMEM, "config worker out of memory");
        wctx_free(wc);
        return;
    }
    const char *params[3] = {opname, items, op_by};
    if (store_query(cw->w->store, SQL_WRITE, 3, params, on_write_done, call) < 0) {
        cw_call_finish(call);
        ipc_server_reply_error(conn, request_id, -ESHUTDOWN, "config worker is stopping");
        wctx_free(wc);
    }
    free(items);
}

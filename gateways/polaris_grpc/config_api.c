/*
 * config_api.c: v1.PolarisConfigGRPC (served on every polaris-grpc
 * listener; Polaris SDKs use 8093): GetConfigFile, WatchConfigFiles and
 * GetConfigFileMetadataList from the gateway's config replica, and
 * CreateConfigFile, UpdateConfigFile, PublishConfigFile,
 * UpsertAndPublishConfigFile through the config worker.
 *
 * Rules kept here:
 *  - every answer is gRPC OK carrying a Polaris code (as Polaris does);
 *    reads before the replica is loaded answer 500000 saying so;
 *  - the client's IP for beta targeting is ClientWatchConfigFileRequest
 *    .client_ip when given, else the connection's peer address; its labels
 *    are the tags the client sent;
 *  - WatchConfigFiles is a unary long poll held in the config watch
 *    registry (config_watch.h): answered at once when a watched file is
 *    already newer for this client, else when one becomes newer, else at
 *    the timeout (30 s, or the client's deadline minus PC_DEADLINE_MARGIN_MS
 *    when that is sooner) with 200001 DataNoChange, as the Polaris server
 *    answers a watch that saw no change; a draining gateway answers its
 *    watchers 200001 at once so clients re-poll elsewhere;
 *  - a change answers its woken watchers with one message encoded once and
 *    shared (gs_reply_msg): the answer depends only on the file and on the
 *    version and md5 the watcher now reads.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config_replica.h"
#include "common/config_watch.h"
#include "config.pb-c.h"
#include "log.h"
#include "pg.h"
#include "polaris_config_file.pb-c.h"
#include "polaris_config_file_response.pb-c.h"

#define PC_SERVICE "/v1.PolarisConfigGRPC/"
#define PC_WORKER "config"
#define PC_WATCH_TIMEOUT_MS 30000
#define PC_DEADLINE_MARGIN_MS 500

/* The drain hook (one polaris-grpc gateway per process). */
static pg_state_t *pc_st;
static pg_stream_t pc_drain_hook;

static const char *svv(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : ""; }

/* Answer a ConfigClientResponse: code, info (NULL: the code's text), file. */
static void pc_reply(gs_call_t *call, uint32_t code, const char *info, V1__ClientConfigFileInfo *file)
{
    V1__ConfigClientResponse r = V1__CONFIG_CLIENT_RESPONSE__INIT;
    Google__Protobuf__UInt32Value c = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    Google__Protobuf__StringValue i = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    c.value = code;
    i.value = (char *)(info ? info : polaris_code_info(code));
    r.code = &c;
    r.info = &i;
    r.configfile = file;
    pg_reply_message(call, &r.base);
}

static void pc_failf(gs_call_t *call, uint32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pc_failf(gs_call_t *call, uint32_t code, const char *fmt, ...)
{
    char info[512];
    int n = snprintf(info, sizeof info, "%s: ", polaris_code_info(code));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(info + (n > 0 && (size_t)n < sizeof info ? n : 0), sizeof info - (size_t)(n > 0 ? n : 0), fmt, ap);
    va_end(ap);
    pc_reply(call, code, info, NULL);
}

/* "ipv4:1.2.3.4:5" / "ipv6:[::1]:5" -> the bare address. */
static void pc_peer_ip(gs_call_t *call, char *ip, size_t iplen)
{
    char peer[128];
    gs_call_peer(call, peer, sizeof peer);
    ip[0] = '\0';
    const char *p = peer;
    if (strncmp(p, "ipv4:", 5) == 0) {
        p += 5;
        const char *colon = strrchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        snprintf(ip, iplen, "%.*s", (int)n, p);
    } else if (strncmp(p, "ipv6:[", 6) == 0) {
        p += 6;
        const char *end = strchr(p, ']');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 7 && strncmp(p, "::ffff:", 7) == 0 && memchr(p + 7, '.', n - 7)) {
            p += 7;
            n -= 7;
        }
        snprintf(ip, iplen, "%.*s", (int)n, p);
    }
}

/* A ClientConfigFileInfo for a client: the release it reads; content only
 * when with_content (watch answers carry none, as Polaris). Fields point
 * into `v` and `out` (caller's storage). */
typedef struct pc_view {
    V1__ClientConfigFileInfo info;
    Google__Protobuf__StringValue ns, group, name, content, md5, rname, rtime;
    Google__Protobuf__UInt64Value version;
    Google__Protobuf__BoolValue encrypted;
} pc_view_t;

static V1__ClientConfigFileInfo *pc_view(pc_view_t *o, const cfr_file_t *f, const V1__ClientConfigFileInfo *v,
                                          bool with_content)
{
    v1__client_config_file_info__init(&o->info);
#define PC_SV(field, val)                                                                                          \
    do {                                                                                                           \
        google__protobuf__string_value__init(&o->field);                                                           \
        o->field.value = (char *)(val);                                                                            \
    } while (0)
    PC_SV(ns, f->ns);
    PC_SV(group, f->group);
    PC_SV(name, f->name);
    o->info.namespace_ = &o->ns;
    o->info.group = &o->group;
    o->info.file_name = &o->name;
    PC_SV(md5, svv(v->md5));
    o->info.md5 = &o->md5;
    google__protobuf__uint64_value__init(&o->version);
    o->version.value = v->version ? v->version->value : 0;
    o->info.version = &o->version;
    if (with_content) {
        PC_SV(content, svv(v->content));
        o->info.content = &o->content;
        PC_SV(rname, svv(v->name));
        o->info.name = &o->rname;
        PC_SV(rtime, svv(v->release_time));
        o->info.release_time = &o->rtime;
        o->info.tags = v->tags;
        o->info.n_tags = v->n_tags;
        google__protobuf__bool_value__init(&o->encrypted);
        o->encrypted.value = v->encrypted && v->encrypted->value;
        o->info.encrypted = &o->encrypted;
    }
#undef PC_SV
    return &o->info;
}

/* ------------------------------------------------------------- reads */

static cfr_t *pc_replica(pg_state_t *st, gs_call_t *call)
{
    cfr_t *r = st->gw ? gw_config_replica(st->gw) : NULL;
    if (!r) {
        pc_failf(call, V1__CODE__ClientAPINotOpen, "the config worker is not enabled");
        return NULL;
    }
    if (!cfr_ready(r)) {
        pc_failf(call, V1__CODE__ExecuteException, "the config replica is not loaded yet");
        return NULL;
    }
    return r;
}

static void pc_get_config_file(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    pg_state_t *st = arg;
    V1__ClientConfigFileInfo *q = v1__client_config_file_info__unpack(NULL, len, req);
    if (!q) {
        pc_failf(call, V1__CODE__ParseException, "the request is not a v1.ClientConfigFileInfo");
        return;
    }
    cfr_t *r = pc_replica(st, call);
    if (!r)
        goto out;
    const char *ns = svv(q->namespace_), *group = svv(q->group), *name = svv(q->file_name);
    if (!*ns || !*group || !*name) {
        pc_reply(call, V1__CODE__BadRequest, "namespace & group & fileName can not be empty", NULL);
        goto out;
    }
    char ip[64];
    pc_peer_ip(call, ip, sizeof ip);
    const cfr_file_t *f = cfr_file(r, ns, group, name);
    const V1__ClientConfigFileInfo *v = cfr_client_view(f, ip, q->tags, q->n_tags, NULL);
    if (!v) {
        pc_failf(call, V1__CODE__NotFoundResourceConfigFile, "config file %s/%s/%s has no release", ns, group,
                 name);
        goto out;
    }
    pc_view_t o;
    pc_reply(call, V1__CODE__ExecuteSuccess, NULL, pc_view(&o, f, v, true));
out:
    v1__client_config_file_info__free_unpacked(q, NULL);
}

typedef struct pc_meta {
    V1__ClientConfigFileInfo **items;
    pc_view_t *views;
    size_t n, cap;
    uint64_t max_nid;
    bool oom;
} pc_meta_t;

static void pc_meta_add(const cfr_file_t *f, void *arg)
{
    pc_meta_t *m = arg;
    if (m->oom || !f->state->release || !f->state->release->file)
        return;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        pc_view_t *v = realloc(m->views, cap * sizeof *v);
        if (!v) {
            m->oom = true;
            return;
        }
        m->views = v;
        m->cap = cap;
    }
    pc_view(&m->views[m->n++], f, f->state->release->file, false);
    pc_view_t *o = &m->views[m->n - 1];
    google__protobuf__string_value__init(&o->rname);
    o->rname.value = (char *)svv(f->state->release->file->name);
    o->info.name = &o->rname;
    if (f->notification_id > m->max_nid)
        m->max_nid = f->notification_id;
}

/* The group's revision: the highest notification id of its files and how
 * many there are (a deletion changes the count). */
static void pc_get_metadata_list(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    pg_state_t *st = arg;
    V1__ConfigFileGroupRequest *q = v1__config_file_group_request__unpack(NULL, len, req);
    V1__ConfigClientListResponse resp = V1__CONFIG_CLIENT_LIST_RESPONSE__INIT;
    Google__Protobuf__UInt32Value c = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    Google__Protobuf__StringValue i = GOOGLE__PROTOBUF__STRING_VALUE__INIT, rev = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    resp.code = &c;
    resp.info = &i;
    pc_meta_t m = {0};
    char revbuf[64] = "";
    cfr_t *r = st->gw ? gw_config_replica(st->gw) : NULL;
    if (!q) {
        c.value = V1__CODE__ParseException;
    } else if (!r || !cfr_ready(r)) {
        c.value = r ? V1__CODE__ExecuteException : V1__CODE__ClientAPINotOpen;
    } else {
        const char *ns = q->config_file_group ? svv(q->config_file_group->namespace_) : "";
        const char *group = q->config_file_group ? svv(q->config_file_group->name) : "";
        resp.namespace_ = (char *)ns;
        resp.group = (char *)group;
        if (!*ns || !*group) {
            c.value = V1__CODE__BadRequest;
        } else {
            cfr_foreach_file(r, ns, group, pc_meta_add, &m);
            if (m.oom) {
                c.value = V1__CODE__ExecuteException;
            } else {
                snprintf(revbuf, sizeof revbuf, "%llx-%zx", (unsigned long long)m.max_nid, m.n);
                rev.value = revbuf;
                resp.revision = &rev;
                if (q->revision && strcmp(svv(q->revision), revbuf) == 0) {
                    c.value = V1__CODE__DataNoChange;
                } else {
                    c.value = V1__CODE__ExecuteSuccess;
                    m.items = malloc((m.n ? m.n : 1) * sizeof *m.items);
                    if (!m.items) {
                        c.value = V1__CODE__ExecuteException;
                    } else {
                        for (size_t k = 0; k < m.n; k++)
                            m.items[k] = &m.views[k].info;
                        resp.config_file_infos = m.items;
                        resp.n_config_file_infos = m.n;
                    }
                }
            }
        }
    }
    i.value = (char *)polaris_code_info(c.value);
    pg_reply_message(call, &resp.base);
    free(m.items);
    free(m.views);
    if (q)
        v1__config_file_group_request__free_unpacked(q, NULL);
}

/* ------------------------------------------------------------- watch */

/* The last change answer encoded, by what it depends on: the file's key,
 * the version and the md5 the watcher reads. A wake answers every watcher
 * that reads the same release with one shared message. */
static struct {
    char *key;
    size_t keylen;
    uint64_t version;
    char *md5;
    gs_msg_t *msg;
} pc_woken;

static void pc_woken_clear(void)
{
    gs_msg_free(pc_woken.msg);
    free(pc_woken.key);
    free(pc_woken.md5);
    memset(&pc_woken, 0, sizeof pc_woken);
}

/* The shared answer for (f, v): the cached one, or a new one; NULL when
 * out of memory (the caller then encodes its own). */
static const gs_msg_t *pc_woken_answer(const cfr_file_t *f, const V1__ClientConfigFileInfo *v)
{
    uint64_t version = v->version ? v->version->value : 0;
    const char *md5 = svv(v->md5);
    if (pc_woken.msg && pc_woken.version == version && pc_woken.keylen == f->keylen &&
        memcmp(pc_woken.key, f->key, f->keylen) == 0 && strcmp(pc_woken.md5, md5) == 0)
        return pc_woken.msg;
    pc_woken_clear();
    pc_view_t o;
    V1__ConfigClientResponse r = V1__CONFIG_CLIENT_RESPONSE__INIT;
    Google__Protobuf__UInt32Value c = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    Google__Protobuf__StringValue i = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    c.value = V1__CODE__ExecuteSuccess;
    i.value = (char *)polaris_code_info(c.value);
    r.code = &c;
    r.info = &i;
    r.configfile = pc_view(&o, f, v, false);
    size_t n = 0;
    uint8_t *buf = pg_pack(&r.base, &n);
    pc_woken.key = malloc(f->keylen ? f->keylen : 1);
    pc_woken.md5 = strdup(md5);
    pc_woken.msg = buf ? gs_msg_new(buf, n) : NULL;
    free(buf);
    if (!pc_woken.key || !pc_woken.md5 || !pc_woken.msg) {
        pc_woken_clear();
        return NULL;
    }
    memcpy(pc_woken.key, f->key, f->keylen);
    pc_woken.keylen = f->keylen;
    pc_woken.version = version;
    return pc_woken.msg;
}

static void pc_watch_done(void *arg, cwatch_outcome_t outcome, const cfr_file_t *f, const V1__ClientConfigFileInfo *v)
{
    gs_call_t *call = arg;
    if (outcome == CWATCH_CHANGED && f && v) {
        const gs_msg_t *m = pc_woken_answer(f, v);
        if (m) {
            gs_reply_msg(call, m);
            return;
        }
        pc_view_t o;
        pc_reply(call, V1__CODE__ExecuteSuccess, NULL, pc_view(&o, f, v, false));
        return;
    }
    pc_reply(call, V1__CODE__DataNoChange, NULL, NULL);
}

static void pc_watch(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    pg_state_t *st = arg;
    V1__ClientWatchConfigFileRequest *q = v1__client_watch_config_file_request__unpack(NULL, len, req);
    if (!q) {
        pc_failf(call, V1__CODE__ParseException, "the request is not a v1.ClientWatchConfigFileRequest");
        return;
    }
    cfr_t *r = pc_replica(st, call);
    if (!r)
        goto out;
    if (q->n_watch_files == 0) {
        pc_failf(call, V1__CODE__InvalidWatchConfigFileFormat, "watch_files is empty");
        goto out;
    }
    char ip[64];
    if (*svv(q->client_ip))
        snprintf(ip, sizeof ip, "%s", svv(q->client_ip));
    else
        pc_peer_ip(call, ip, sizeof ip);
    int timeout = PC_WATCH_TIMEOUT_MS;
    int64_t left = gs_call_remaining_ms(call);
    if (left >= 0 && left - PC_DEADLINE_MARGIN_MS < timeout)
        timeout = (int)(left - PC_DEADLINE_MARGIN_MS);
    /* the first file's tags stand for the client's labels */
    V1__ConfigFileTag *const *tags = q->watch_files[0] ? q->watch_files[0]->tags : NULL;
    size_t n_tags = q->watch_files[0] ? q->watch_files[0]->n_tags : 0;
    const cfr_file_t *bf = NULL;
    const V1__ClientConfigFileInfo *bv = NULL;
    char err[256] = "";
    int rc = 0;
    if (timeout <= 0 || st->draining) {
        /* no time to wait: only the immediate check */
        rc = cwatch_behind(gw_config_watch(st->gw), q->watch_files, q->n_watch_files, ip, tags, n_tags, &bf, &bv,
                           err, sizeof err);
    } else {
        rc = cwatch_add(gw_config_watch(st->gw), q->watch_files, q->n_watch_files, ip, tags, n_tags, timeout,
                        pc_watch_done, call, NULL, &bf, &bv, err, sizeof err);
        if (rc == 0)
            goto out; /* parked: answered by pc_watch_done */
    }
    if (rc == 1) {
        pc_view_t o;
        pc_reply(call, V1__CODE__ExecuteSuccess, NULL, pc_view(&o, bf, bv, false));
    } else if (rc == -EINVAL) {
        pc_reply(call, V1__CODE__BadRequest, "namespace & group & fileName can not be empty", NULL);
    } else if (rc < 0) {
        pc_failf(call, V1__CODE__ExecuteException, "cannot hold the watch: %s", strerror(-rc));
    } else {
        pc_reply(call, V1__CODE__DataNoChange, NULL, NULL);
    }
out:
    v1__client_watch_config_file_request__free_unpacked(q, NULL);
}

/* ------------------------------------------------------------ writes */

typedef struct pc_write {
    gs_call_t *call;
    pg_state_t *st;
} pc_write_t;

static void pc_on_write(int status, Lodestar__Envelope *reply, void *arg)
{
    pc_write_t *w = arg;
    gs_call_t *call = w->call;
    pg_state_t *st = w->st;
    free(w);
    if (status != 0 || reply->body_case != LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_RESPONSE ||
        !reply->config_write_response->result) {
        char why[256];
        pg_worker_failure(PC_WORKER, status, reply, st->gw ? gw_request_timeout_ms(st->gw) : 0, why, sizeof why);
        pc_failf(call, V1__CODE__ExecuteException, "%s", why);
        return;
    }
    const V1__ConfigBatchWriteResponse *res = reply->config_write_response->result;
    const V1__ConfigResponse *one = res->n_responses ? res->responses[0] : NULL;
    uint32_t code = one && one->code ? one->code->value : res->code ? res->code->value : V1__CODE__ExecuteException;
    const char *info = one && one->info ? one->info->value : res->info ? res->info->value : NULL;
    V1__ClientConfigFileInfo cf = V1__CLIENT_CONFIG_FILE_INFO__INIT;
    V1__ClientConfigFileInfo *file = NULL;
    if (one && one->configfilerelease) {
        const V1__ConfigFileRelease *rel = one->configfilerelease;
        cf.namespace_ = rel->namespace_;
        cf.group = rel->group;
        cf.file_name = rel->file_name;
        cf.content = rel->content;
        cf.version = rel->version;
        cf.md5 = rel->md5;
        cf.name = rel->name;
        file = &cf;
    } else if (one && one->configfile) {
        const V1__ConfigFile *f = one->configfile;
        cf.namespace_ = f->namespace_;
        cf.group = f->group;
        cf.file_name = f->name;
        cf.content = f->content;
        cf.encrypted = f->encrypted;
        file = &cf;
    }
    pc_reply(call, code, info, file);
}

static void pc_send_write(pg_state_t *st, gs_call_t *call, Lodestar__ConfigWriteRequest *w)
{
    w->origin = PG_ROLE;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_REQUEST;
    env.config_write_request = w;
    pc_write_t *p = malloc(sizeof *p);
    if (!p) {
        pc_failf(call, V1__CODE__ExecuteException, "out of memory");
        return;
    }
    *p = (pc_write_t){call, st};
    int rc = st->gw ? gw_request(st->gw, PC_WORKER, &env, pc_on_write, p) : -ESHUTDOWN;
    if (rc < 0) {
        free(p);
        char why[256];
        pg_worker_failure(PC_WORKER, rc, NULL, 0, why, sizeof why);
        pc_failf(call, rc == -ENOENT ? V1__CODE__ClientAPINotOpen : V1__CODE__ExecuteException, "%s", why);
    }
}

#define PC_WRITE_HANDLER(fname, Type, type, OP, field)                                                             \
    static void fname(gs_call_t *call, const uint8_t *req, size_t len, void *arg)                                  \
    {                                                                                                              \
        if (len == 0) {                                                                                            \
            pc_failf(call, V1__CODE__EmptyRequest, "empty " #Type);                                               \
            return;                                                                                                \
        }                                                                                                          \
        V1__##Type *m = type##__unpack(NULL, len, req);                                                            \
        if (!m) {                                                                                                  \
            pc_failf(call, V1__CODE__ParseException, "the request is not a v1." #Type);                           \
            return;                                                                                                \
        }                                                                                                          \
        Lodestar__ConfigWriteRequest w = LODESTAR__CONFIG_WRITE_REQUEST__INIT;                                     \
        w.op = LODESTAR__CONFIG_WRITE_REQUEST__OP__##OP;                                                           \
        w.field = &m;                                                                                              \
        w.n_##field = 1;                                                                                           \
        pc_send_write(arg, call, &w);                                                                              \
        type##__free_unpacked(m, NULL);                                                                            \
    }

PC_WRITE_HANDLER(pc_create_file, ConfigFile, v1__config_file, FILE_CREATE, files)
PC_WRITE_HANDLER(pc_update_file, ConfigFile, v1__config_file, FILE_UPDATE, files)
PC_WRITE_HANDLER(pc_publish_file, ConfigFileRelease, v1__config_file_release, FILE_PUBLISH, releases)
PC_WRITE_HANDLER(pc_upsert_publish, ConfigFilePublishInfo, v1__config_file_publish_info, FILE_UPSERT_AND_PUBLISH,
                 publish_infos)

/* ------------------------------------------------------------ register */

static void pc_drain(pg_stream_t *ps)
{
    (void)ps;
    if (pc_st && pc_st->gw)
        cwatch_flush(gw_config_watch(pc_st->gw));
    pc_woken_clear();
}

int pg_config_register(pg_state_t *st, char *err, size_t errlen)
{
    const struct {
        const char *name;
        gs_unary_fn fn;
    } m[] = {
        {PC_SERVICE "GetConfigFile", pc_get_config_file},
        {PC_SERVICE "WatchConfigFiles", pc_watch},
        {PC_SERVICE "GetConfigFileMetadataList", pc_get_metadata_list},
        {PC_SERVICE "CreateConfigFile", pc_create_file},
        {PC_SERVICE "UpdateConfigFile", pc_update_file},
        {PC_SERVICE "PublishConfigFile", pc_publish_file},
        {PC_SERVICE "UpsertAndPublishConfigFile", pc_upsert_publish},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (gs_server_add_unary(st->srv, m[i].name, m[i].fn, st, err, errlen) < 0)
            return -1;
    if (gw_config_watch(st->gw)) {
        pc_st = st;
        pc_drain_hook = (pg_stream_t){.st = st, .call = NULL, .drain = pc_drain};
        pg_stream_link(st, &pc_drain_hook);
    }
    return 0;
}

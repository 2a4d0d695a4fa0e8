/*
 * config_api.c: the Polaris config client API on the polaris-http
 * gateway: GET /v1/GetConfigFile and POST /v1/WatchConfigFile, answered
 * from the gateway's config replica and watch registry (no worker on the
 * read path).
 *
 * Rules kept here:
 *  - GetConfigFile reads namespace, group, fileName (or file_name) and
 *    version from the query, as Polaris' HTTP client API does; 400807 when
 *    the file has no release for this client;
 *  - the client's IP for beta targeting is the watch request's client_ip
 *    when given, else the connection's peer address; Polaris' HTTP
 *    GetConfigFile carries no tags, so only the IP targets HTTP reads, and
 *    WatchConfigFile takes the first watched file's tags as labels;
 *  - WatchConfigFile is a long poll held in the watch registry: answered
 *    at once when a watched file is newer for this client, else on change,
 *    else after PC_WATCH_TIMEOUT_MS with 200001 DataNoChange; a parked
 *    watch counts in ph_state_t.waiting, and the drain flushes them;
 *  - a client that leaves while parked is answered all the same when its
 *    watch ends (evhttp then just frees the request).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config_replica.h"
#include "common/config_watch.h"
#include "log.h"
#include "pbjson.h"
#include "ph.h"
#include "polaris_config_file.pb-c.h"
#include "polaris_config_file_response.pb-c.h"

#define PC_WATCH_TIMEOUT_MS 30000

static const char *svv(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : ""; }

typedef struct pc_view {
    V1__ClientConfigFileInfo info;
    Google__Protobuf__StringValue ns, group, name, content, md5, rname, rtime;
    Google__Protobuf__UInt64Value version;
    Google__Protobuf__BoolValue encrypted;
} pc_view_t;

/* What the client reads of f (v: the release for it); content only when
 * with_content (watch answers carry none, as Polaris). */
static V1__ClientConfigFileInfo *pc_view(pc_view_t *o, const cfr_file_t *f, const V1__ClientConfigFileInfo *v,
                                          bool with_content)
{
    v1__client_config_file_info__init(&o->info);
    o->info.namespace_ = ph_str(&o->ns, f->ns);
    o->info.group = ph_str(&o->group, f->group);
    o->info.file_name = ph_str(&o->name, f->name);
    o->info.md5 = ph_str(&o->md5, svv(v->md5));
    google__protobuf__uint64_value__init(&o->version);
    o->version.value = v->version ? v->version->value : 0;
    o->info.version = &o->version;
    if (with_content) {
        o->info.content = ph_str(&o->content, svv(v->content));
        o->info.name = ph_str(&o->rname, svv(v->name));
        o->info.release_time = ph_str(&o->rtime, svv(v->release_time));
        o->info.tags = v->tags;
        o->info.n_tags = v->n_tags;
        google__protobuf__bool_value__init(&o->encrypted);
        o->encrypted.value = v->encrypted && v->encrypted->value;
        o->info.encrypted = &o->encrypted;
    }
    return &o->info;
}

static void pc_answer(ph_state_t *st, struct evhttp_request *req, uint32_t code, const char *info,
                      V1__ClientConfigFileInfo *file)
{
    V1__ConfigClientResponse r = V1__CONFIG_CLIENT_RESPONSE__INIT;
    Google__Protobuf__UInt32Value c;
    Google__Protobuf__StringValue i;
    r.code = ph_u32(&c, code);
    r.info = ph_str(&i, info ? info : polaris_code_info(code));
    r.configfile = file;
    ph_reply_message(st, req, &r.base, code);
}

static void pc_peer_ip(struct evhttp_request *req, char *ip, size_t iplen)
{
    ip[0] = '\0';
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (!evcon)
        return;
    char *addr = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evcon, &addr, &port);
    if (addr) {
        const char *a = addr;
        if (strncmp(a, "::ffff:", 7) == 0 && strchr(a + 7, '.'))
            a += 7;
        snprintf(ip, iplen, "%s", a);
    }
}

static cfr_t *pc_replica(ph_call_t *call)
{
    cfr_t *r = call->st->gw ? gw_config_replica(call->st->gw) : NULL;
    if (!r) {
        ph_fail(call, V1__CODE__ClientAPINotOpen, "the config worker is not enabled");
        return NULL;
    }
    if (!cfr_ready(r)) {
        ph_fail(call, V1__CODE__ExecuteException, "the config replica is not loaded yet");
        return NULL;
    }
    return r;
}

/* GET /v1/GetConfigFile?namespace=&group=&fileName=&version= */
static void pc_get_config_file(ph_call_t *call)
{
    cfr_t *r = pc_replica(call);
    if (!r)
        return;
    ph_query_t q;
    if (ph_query_parse(call, &q) < 0)
        return;
    const char *ns = ph_query_get(&q, "namespace"), *group = ph_query_get(&q, "group");
    const char *name = ph_query_get(&q, "fileName");
    if (!name)
        name = ph_query_get(&q, "file_name");
    if (!ns || !*ns || !group || !*group || !name || !*name) {
        pc_answer(call->st, call->req, V1__CODE__BadRequest, "namespace & group & fileName can not be empty", NULL);
        ph_query_free(&q);
        return;
    }
    char ip[64];
    pc_peer_ip(call->req, ip, sizeof ip);
    const cfr_file_t *f = cfr_file(r, ns, group, name);
    const V1__ClientConfigFileInfo *v = cfr_client_view(f, ip, NULL, 0, NULL);
    if (!v) {
        char info[600];
        snprintf(info, sizeof info, "%s: config file %s/%s/%s has no release",
                 polaris_code_info(V1__CODE__NotFoundResourceConfigFile), ns, group, name);
        pc_answer(call->st, call->req, V1__CODE__NotFoundResourceConfigFile, info, NULL);
    } else {
        pc_view_t o;
        pc_answer(call->st, call->req, V1__CODE__ExecuteSuccess, NULL, pc_view(&o, f, v, true));
    }
    ph_query_free(&q);
}

typedef struct pc_watch {
    ph_state_t *st;
    struct evhttp_request *req;
} pc_watch_t;

static void pc_watch_done(void *arg, cwatch_outcome_t outcome, const cfr_file_t *f, const V1__ClientConfigFileInfo *v)
{
    pc_watch_t *w = arg;
    ph_state_t *st = w->st;
    if (outcome == CWATCH_CHANGED && f && v) {
        pc_view_t o;
        pc_answer(st, w->req, V1__CODE__ExecuteSuccess, NULL, pc_view(&o, f, v, false));
    } else {
        pc_answer(st, w->req, V1__CODE__DataNoChange, NULL, NULL);
    }
    free(w);
    st->waiting--;
    ph_maybe_drained(st);
}

/* POST /v1/WatchConfigFile with a ClientWatchConfigFileRequest. */
static void pc_watch(ph_call_t *call)
{
    cfr_t *r = pc_replica(call);
    if (!r)
        return;
    V1__ClientWatchConfigFileRequest *q =
        (V1__ClientWatchConfigFileRequest *)ph_parse_one(call, &v1__client_watch_config_file_request__descriptor);
    if (!q)
        return;
    if (q->n_watch_files == 0) {
        ph_fail(call, V1__CODE__InvalidWatchConfigFileFormat, "watch_files is empty");
        goto out;
    }
    char ip[64];
    if (*svv(q->client_ip))
        snprintf(ip, sizeof ip, "%s", svv(q->client_ip));
    else
        pc_peer_ip(call->req, ip, sizeof ip);
    V1__ConfigFileTag *const *tags = q->watch_files[0] ? q->watch_files[0]->tags : NULL;
    size_t n_tags = q->watch_files[0] ? q->watch_files[0]->n_tags : 0;
    cwatch_t *cw = gw_config_watch(call->st->gw);
    const cfr_file_t *bf = NULL;
    const V1__ClientConfigFileInfo *bv = NULL;
    char err[256] = "";
    int rc;
    pc_watch_t *w = NULL;
    if (call->st->draining) {
        rc = cwatch_behind(cw, q->watch_files, q->n_watch_files, ip, tags, n_tags, &bf, &bv, err, sizeof err);
    } else {
        w = malloc(sizeof *w);
        if (!w) {
            ph_fail(call, V1__CODE__ExecuteException, "out of memory");
            goto out;
        }
        *w = (pc_watch_t){call->st, call->req};
        rc = cwatch_add(cw, q->watch_files, q->n_watch_files, ip, tags, n_tags, PC_WATCH_TIMEOUT_MS, pc_watch_done, w,
                        NULL, &bf, &bv, err, sizeof err);
        if (rc == 0) {
            call->st->waiting++;
            goto out;
        }
        free(w);
    }
    if (rc == 1) {
        pc_view_t o;
        pc_answer(call->st, call->req, V1__CODE__ExecuteSuccess, NULL, pc_view(&o, bf, bv, false));
    } else if (rc == -EINVAL) {
        pc_answer(call->st, call->req, V1__CODE__BadRequest, "namespace & group & fileName can not be empty", NULL);
    } else if (rc < 0) {
        ph_fail(call, V1__CODE__ExecuteException, "cannot hold the watch: %s", strerror(-rc));
    } else {
        pc_answer(call->st, call->req, V1__CODE__DataNoChange, NULL, NULL);
    }
out:
    v1__client_watch_config_file_request__free_unpacked(q, NULL);
}

const ph_route_t ph_config_client_routes[] = {
    {"/v1/GetConfigFile", EVHTTP_REQ_GET, PH_KIND_RESPONSE, pc_get_config_file},
    {"/v1/WatchConfigFile", EVHTTP_REQ_POST, PH_KIND_RESPONSE, pc_watch},
    {NULL, 0, 0, NULL},
};

/*
 * openapi_config.c: the Polaris config OpenAPI on the polaris-http
 * gateway: /config/v1/configfilegroups, /config/v1/configfiles and their
 * release, rollback, beta, version and history paths, served by the config
 * worker (ConfigWriteRequest / ConfigQueryRequest).
 *
 * Rules kept here (as in the Polaris server's apiserver/httpserver/config):
 *  - single-item writes (groups, files, release, createandpub) take one
 *    JSON object and answer a ConfigResponse; rollback and stopbeta take a
 *    JSON array and answer a ConfigBatchWriteResponse; DELETE takes its
 *    target in the query (namespace, group, name);
 *  - lists answer a ConfigBatchQueryResponse; GET /configfiles (one file)
 *    and GET /configfiles/release answer a ConfigResponse;
 *  - query parameters go to the worker as ConfigQueryRequest.filters;
 *    offset and limit are checked here (400103 when not non-negative
 *    integers); for release paths a `name` parameter stands for file_name
 *    when file_name is absent (Polaris' console sends either).
 */
#include <stdlib.h>
#include <string.h>

#include "config.pb-c.h"
#include "log.h"
#include "pbjson.h"
#include "ph.h"
#include "polaris_config_file.pb-c.h"
#include "polaris_config_file_response.pb-c.h"

#define PC_WORKER "config"
#define PC_MAX_LIMIT 1000

typedef Lodestar__ConfigWriteRequest__Op pc_op_t;
typedef Lodestar__ConfigQueryRequest__Kind pc_kind_t;

static uint32_t pc_code(const Google__Protobuf__UInt32Value *c) { return c ? c->value : V1__CODE__ExecuteException; }

/* ------------------------------------------------------------ worker */

static void pc_on_write(ph_call_t *call, int status, Lodestar__Envelope *reply, void *data)
{
    (void)data;
    if (status != 0 || reply->body_case != LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_RESPONSE ||
        !reply->config_write_response->result) {
        ph_fail_worker(call, PC_WORKER, status, reply);
        return;
    }
    V1__ConfigBatchWriteResponse *r = reply->config_write_response->result;
    if (call->route->kind == PH_KIND_RESPONSE) {
        if (r->n_responses >= 1 && r->responses[0]) {
            ph_reply_message(call->st, call->req, &r->responses[0]->base, pc_code(r->responses[0]->code));
            return;
        }
        V1__ConfigResponse one = V1__CONFIG_RESPONSE__INIT;
        one.code = r->code;
        one.info = r->info;
        ph_reply_message(call->st, call->req, &one.base, pc_code(r->code));
        return;
    }
    ph_reply_message(call->st, call->req, &r->base, pc_code(r->code));
}

static void pc_send_write(ph_call_t *call, Lodestar__ConfigWriteRequest *w)
{
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_REQUEST;
    env.config_write_request = w;
    w->origin = PH_ROLE;
    int rc = ph_worker_request(call, PC_WORKER, &env, pc_on_write, NULL);
    if (rc < 0)
        ph_fail_worker(call, PC_WORKER, rc, NULL);
}

static void pc_on_query(ph_call_t *call, int status, Lodestar__Envelope *reply, void *data)
{
    (void)data;
    const Lodestar__ConfigQueryResponse *q =
        status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_CONFIG_QUERY_RESPONSE ? reply->config_query_response
                                                                                          : NULL;
    if (q && call->route->kind == PH_KIND_RESPONSE && q->response) {
        ph_reply_message(call->st, call->req, &q->response->base, pc_code(q->response->code));
        return;
    }
    if (q && call->route->kind != PH_KIND_RESPONSE && q->result) {
        ph_reply_message(call->st, call->req, &q->result->base, pc_code(q->result->code));
        return;
    }
    ph_fail_worker(call, PC_WORKER, status, reply);
}

/* ------------------------------------------------------------- writes */

/* One JSON object of `desc` in the body, sent as a one-item write. */
static void pc_write_one(ph_call_t *call, pc_op_t op, const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = ph_parse_one(call, desc);
    if (!m)
        return;
    Lodestar__ConfigWriteRequest w = LODESTAR__CONFIG_WRITE_REQUEST__INIT;
    w.op = op;
    if (desc == &v1__config_file_group__descriptor) {
        w.groups = (V1__ConfigFileGroup **)&m;
        w.n_groups = 1;
    } else if (desc == &v1__config_file__descriptor) {
        w.files = (V1__ConfigFile **)&m;
        w.n_files = 1;
    } else if (desc == &v1__config_file_release__descriptor) {
        w.releases = (V1__ConfigFileRelease **)&m;
        w.n_releases = 1;
    } else {
        w.publish_infos = (V1__ConfigFilePublishInfo **)&m;
        w.n_publish_infos = 1;
    }
    pc_send_write(call, &w);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* A JSON array of releases (rollback, stopbeta). */
static void pc_write_releases(ph_call_t *call, pc_op_t op)
{
    ProtobufCMessage **items;
    size_t n;
    if (ph_parse_array(call, &v1__config_file_release__descriptor, &items, &n) < 0)
        return;
    Lodestar__ConfigWriteRequest w = LODESTAR__CONFIG_WRITE_REQUEST__INIT;
    w.op = op;
    w.releases = (V1__ConfigFileRelease **)items;
    w.n_releases = n;
    pc_send_write(call, &w);
    pbjson_free_array(items, n, NULL);
}

/* DELETE with the target in the query: namespace, group, name. */
static void pc_delete(ph_call_t *call, bool group)
{
    ph_query_t q;
    if (ph_query_parse(call, &q) < 0)
        return;
    const char *ns = ph_query_get(&q, "namespace"), *grp = ph_query_get(&q, "group");
    const char *name = ph_query_get(&q, "name");
    if (!name)
        name = ph_query_get(&q, "fileName");
    Google__Protobuf__StringValue a, b, c, by;
    const char *del_by = ph_query_get(&q, "deleteBy");
    Lodestar__ConfigWriteRequest w = LODESTAR__CONFIG_WRITE_REQUEST__INIT;
    if (group) {
        V1__ConfigFileGroup g = V1__CONFIG_FILE_GROUP__INIT, *gp = &g;
        g.namespace_ = ns ? PH_STR(a, ns) : NULL;
        g.name = grp ? PH_STR(b, grp) : NULL;
        w.op = LODESTAR__CONFIG_WRITE_REQUEST__OP__GROUP_DELETE;
        w.groups = &gp;
        w.n_groups = 1;
        w.operator_ = (char *)(del_by ? del_by : "");
        pc_send_write(call, &w);
    } else {
        V1__ConfigFile f = V1__CONFIG_FILE__INIT, *fp = &f;
        f.namespace_ = ns ? PH_STR(a, ns) : NULL;
        f.group = grp ? PH_STR(b, grp) : NULL;
        f.name = name ? PH_STR(c, name) : NULL;
        f.modify_by = del_by ? PH_STR(by, del_by) : NULL;
        w.op = LODESTAR__CONFIG_WRITE_REQUEST__OP__FILE_DELETE;
        w.files = &fp;
        w.n_files = 1;
        w.operator_ = (char *)(del_by ? del_by : "");
        pc_send_write(call, &w);
    }
    ph_query_free(&q);
}

static void pc_group_create(ph_call_t *c)
{
    pc_write_one(c, LODESTAR__CONFIG_WRITE_REQUEST__OP__GROUP_CREATE, &v1__config_file_group__descriptor);
}
static void pc_group_update(ph_call_t *c)
{
    pc_write_one(c, LODESTAR__CONFIG_WRITE_REQUEST__OP__GROUP_UPDATE, &v1__config_file_group__descriptor);
}
static void pc_group_delete(ph_call_t *c) { pc_delete(c, true); }
static void pc_file_create(ph_call_t *c)
{
    pc_write_one(c, LODESTAR__CONFIG_WRITE_REQUEST__OP__FILE_CREATE, &v1__config_file__descriptor);
}
static void pc_file_update(ph_call_t *c)
{
    pc_write_one(c, LODESTAR__CONFIG_WRITE_REQUEST__OP__FILE_UPDATE, &v1__config_file__descriptor);
}
static void pc_file_delete(ph_call_t *c) { pc_delete(c, false); }
static void pc_release(ph_call_t *c)
{
    pc_write_one(c, LODESTAR__CONFIG_WRITE_REQUEST__OP__FILE_PUBLISH, &v1__config_file_release__descriptor);
}
static void pc_createandpub(ph_call_t *c)
{
    pc_write_one(c, LODESTAR__CONFIG_WRITE_REQUEST__OP__FILE_CREATE_AND_PUBLISH,
                 &v1__config_file_publish_info__descriptor);
}
static void pc_rollback(ph_call_t *c) { pc_write_releases(c, LODESTAR__CONFIG_WRITE_REQUEST__OP__RELEASE_ROLLBACK); }
static void pc_stopbeta(ph_call_t *c) { pc_write_releases(c, LODESTAR__CONFIG_WRITE_REQUEST__OP__STOP_BETA); }

/* -------------------------------------------------------------- reads */

static void pc_read(ph_call_t *call, pc_kind_t kind, bool paged, bool release_path)
{
    ph_query_t q;
    if (ph_query_parse(call, &q) < 0)
        return;
    Lodestar__ConfigQueryRequest r = LODESTAR__CONFIG_QUERY_REQUEST__INIT;
    r.kind = kind;
    if (paged) {
        char err[200];
        if (ph_query_u32(&q, "offset", 0, &r.offset, err, sizeof err) < 0 ||
            ph_query_u32(&q, "limit", PH_DEFAULT_LIMIT, &r.limit, err, sizeof err) < 0) {
            ph_fail(call, V1__CODE__InvalidParameter, "%s", err);
            ph_query_free(&q);
            return;
        }
        if (r.limit > PC_MAX_LIMIT)
            r.limit = PC_MAX_LIMIT;
    }
    ph_query_remove(&q, "offset");
    ph_query_remove(&q, "limit");
    size_t n = q.n;
    Lodestar__ConfigQueryRequest__FiltersEntry *fe = calloc(n + 1, sizeof *fe);
    Lodestar__ConfigQueryRequest__FiltersEntry **fp = calloc(n + 1, sizeof *fp);
    if (!fe || !fp) {
        free(fe);
        free(fp);
        ph_query_free(&q);
        ph_fail(call, V1__CODE__ExecuteException, "out of memory");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        lodestar__config_query_request__filters_entry__init(&fe[k]);
        fe[k].key = q.keys[i];
        fe[k].value = q.values[i];
        if (strcmp(q.keys[i], "fileName") == 0)
            fe[k].key = "file_name";
        fp[k] = &fe[k];
        k++;
    }
    /* release paths: `name` is the file's name when file_name is absent */
    const char *name = ph_query_get(&q, "name");
    if (release_path && name && !ph_query_get(&q, "file_name") && !ph_query_get(&q, "fileName")) {
        lodestar__config_query_request__filters_entry__init(&fe[k]);
        fe[k].key = "file_name";
        fe[k].value = (char *)name;
        fp[k] = &fe[k];
        k++;
    }
    r.filters = fp;
    r.n_filters = k;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_QUERY_REQUEST;
    env.config_query_request = &r;
    int rc = ph_worker_request(call, PC_WORKER, &env, pc_on_query, NULL);
    if (rc < 0)
        ph_fail_worker(call, PC_WORKER, rc, NULL);
    free(fe);
    free(fp);
    ph_query_free(&q);
}

static void pc_groups(ph_call_t *c) { pc_read(c, LODESTAR__CONFIG_QUERY_REQUEST__KIND__GROUPS, true, false); }
static void pc_file(ph_call_t *c) { pc_read(c, LODESTAR__CONFIG_QUERY_REQUEST__KIND__FILE, false, false); }
static void pc_files(ph_call_t *c) { pc_read(c, LODESTAR__CONFIG_QUERY_REQUEST__KIND__FILES, true, false); }
static void pc_release_one(ph_call_t *c) { pc_read(c, LODESTAR__CONFIG_QUERY_REQUEST__KIND__RELEASE, false, true); }
static void pc_releases(ph_call_t *c) { pc_read(c, LODESTAR__CONFIG_QUERY_REQUEST__KIND__RELEASES, true, true); }
static void pc_versions(ph_call_t *c)
{
    pc_read(c, LODESTAR__CONFIG_QUERY_REQUEST__KIND__RELEASE_VERSIONS, false, true);
}
static void pc_history(ph_call_t *c) { pc_read(c, LODESTAR__CONFIG_QUERY_REQUEST__KIND__RELEASE_HISTORY, true, true); }

#define CFG "/config/v1"
const ph_route_t ph_config_openapi_routes[] = {
    {CFG "/configfilegroups", EVHTTP_REQ_GET, PH_KIND_BATCH_QUERY, pc_groups},
    {CFG "/configfilegroups", EVHTTP_REQ_POST, PH_KIND_RESPONSE, pc_group_create},
    {CFG "/configfilegroups", EVHTTP_REQ_PUT, PH_KIND_RESPONSE, pc_group_update},
    {CFG "/configfilegroups", EVHTTP_REQ_DELETE, PH_KIND_RESPONSE, pc_group_delete},
    {CFG "/configfiles", EVHTTP_REQ_GET, PH_KIND_RESPONSE, pc_file},
    {CFG "/configfiles", EVHTTP_REQ_POST, PH_KIND_RESPONSE, pc_file_create},
    {CFG "/configfiles", EVHTTP_REQ_PUT, PH_KIND_RESPONSE, pc_file_update},
    {CFG "/configfiles", EVHTTP_REQ_DELETE, PH_KIND_RESPONSE, pc_file_delete},
    {CFG "/configfiles/by-group", EVHTTP_REQ_GET, PH_KIND_BATCH_QUERY, pc_files},
    {CFG "/configfiles/search", EVHTTP_REQ_GET, PH_KIND_BATCH_QUERY, pc_files},
    {CFG "/configfiles/release", EVHTTP_REQ_POST, PH_KIND_RESPONSE, pc_release},
    {CFG "/configfiles/release", EVHTTP_REQ_GET, PH_KIND_RESPONSE, pc_release_one},
    {CFG "/configfiles/releases", EVHTTP_REQ_GET, PH_KIND_BATCH_QUERY, pc_releases},
    {CFG "/configfiles/releases/rollback", EVHTTP_REQ_PUT, PH_KIND_BATCH_WRITE, pc_rollback},
    {CFG "/configfiles/releases/stopbeta", EVHTTP_REQ_POST, PH_KIND_BATCH_WRITE, pc_stopbeta},
    {CFG "/configfiles/createandpub", EVHTTP_REQ_POST, PH_KIND_RESPONSE, pc_createandpub},
    {CFG "/configfiles/release/versions", EVHTTP_REQ_GET, PH_KIND_BATCH_QUERY, pc_versions},
    {CFG "/configfiles/releasehistory", EVHTTP_REQ_GET, PH_KIND_BATCH_QUERY, pc_history},
    {NULL, 0, 0, NULL},
};

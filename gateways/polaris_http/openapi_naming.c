/*
 * openapi_naming.c: the Polaris OpenAPI for naming on the polaris-http
 * gateway: /core/v1/namespaces, /naming/v1/services and
 * /naming/v1/instances (Polaris also serves namespaces under
 * /naming/v1/namespaces; both paths are answered).
 *
 * Rules kept here (as in the Polaris server's apiserver/httpserver):
 *  - every write takes a JSON array (one item is a one-element array) and
 *    answers a BatchWriteResponse with one Response per item; the naming
 *    worker validates every item first and applies none when one is bad;
 *  - every read answers a BatchQueryResponse (amount, size, items), except
 *    GET /naming/v1/instances/labels which answers a Response carrying
 *    instanceLabels;
 *  - query parameters are handed to the worker as
 *    NamingQueryRequest.filters, as Polaris reads them (first value of a
 *    name; "keys" and "values" joined with ","); offset and limit are not
 *    filters: they are checked here (non-negative integers, 400103
 *    otherwise), limit defaults to and is capped at PH_MAX_LIMIT.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pbjson.h"
#include "ph.h"

typedef Lodestar__NamingWriteRequest__Op ph_op_t;
typedef Lodestar__NamingQueryRequest__Kind ph_qkind_t;

/* ------------------------------------------------------------- writes */

/* Parses the body as an array of the op's item type and sends it. */
static void ph_write(ph_call_t *call, ph_op_t op)
{
    const ProtobufCMessageDescriptor *desc;
    bool instances = false, services = false;
    switch (op) {
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_CREATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_UPDATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_DELETE:
        desc = &v1__namespace__descriptor;
        break;
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_DELETE:
        desc = &v1__service__descriptor;
        services = true;
        break;
    default:
        desc = &v1__instance__descriptor;
        instances = true;
        break;
    }
    ProtobufCMessage **items;
    size_t n;
    if (ph_parse_array(call, desc, &items, &n) < 0)
        return;

    Lodestar__NamingWriteRequest w = LODESTAR__NAMING_WRITE_REQUEST__INIT;
    w.op = op;
    w.origin = PH_ROLE;
    Lodestar__NamingInstance *wrap = NULL;
    Lodestar__NamingInstance **wrapp = NULL;
    Lodestar__InstanceExt ext = LODESTAR__INSTANCE_EXT__INIT;
    ext.origin = PH_ORIGIN;
    if (instances) {
        wrap = calloc(n, sizeof *wrap);
        wrapp = calloc(n, sizeof *wrapp);
        if (!wrap || !wrapp) {
            free(wrap);
            free(wrapp);
            pbjson_free_array(items, n, NULL);
            ph_fail(call, V1__CODE__ExecuteException, "out of memory");
            return;
        }
        for (size_t i = 0; i < n; i++) {
            lodestar__naming_instance__init(&wrap[i]);
            wrap[i].instance = (V1__Instance *)items[i];
            /* the protocol that registered it; other ops leave ext alone */
            if (op == LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER)
                wrap[i].ext = &ext;
            wrapp[i] = &wrap[i];
        }
        w.n_instances = n;
        w.instances = wrapp;
    } else if (services) {
        w.n_services = n;
        w.services = (V1__Service **)items;
    } else {
        w.n_namespaces = n;
        w.namespaces = (V1__Namespace **)items;
    }
    ph_naming_write(call, &w);
    free(wrap);
    free(wrapp);
    pbjson_free_array(items, n, NULL);
}

/* -------------------------------------------------------------- reads */

static void ph_read(ph_call_t *call, ph_qkind_t kind, bool paged)
{
    ph_query_t q;
    if (ph_query_parse(call, &q) < 0)
        return;
    Lodestar__NamingQueryRequest r = LODESTAR__NAMING_QUERY_REQUEST__INIT;
    r.kind = kind;
    if (paged) {
        char err[200];
        if (ph_query_u32(&q, "offset", 0, &r.offset, err, sizeof err) < 0 ||
            ph_query_u32(&q, "limit", PH_DEFAULT_LIMIT, &r.limit, err, sizeof err) < 0) {
            ph_fail(call, V1__CODE__InvalidParameter, "%s", err);
            ph_query_free(&q);
            return;
        }
        if (r.limit > PH_MAX_LIMIT)
            r.limit = PH_MAX_LIMIT;
    }
    ph_query_remove(&q, "offset");
    ph_query_remove(&q, "limit");

    Lodestar__NamingQueryRequest__FiltersEntry *f = calloc(q.n ? q.n : 1, sizeof *f);
    Lodestar__NamingQueryRequest__FiltersEntry **fp = calloc(q.n ? q.n : 1, sizeof *fp);
    if (!f || !fp) {
        free(f);
        free(fp);
        ph_query_free(&q);
        ph_fail(call, V1__CODE__ExecuteException, "out of memory");
        return;
    }
    for (size_t i = 0; i < q.n; i++) {
        lodestar__naming_query_request__filters_entry__init(&f[i]);
        f[i].key = q.keys[i];
        f[i].value = q.values[i];
        fp[i] = &f[i];
    }
    r.n_filters = q.n;
    r.filters = fp;
    ph_naming_query(call, &r);
    free(f);
    free(fp);
    ph_query_free(&q);
}

/* ----------------------------------------------------------- handlers */

#define OP(x) LODESTAR__NAMING_WRITE_REQUEST__OP__##x
#define KIND(x) LODESTAR__NAMING_QUERY_REQUEST__KIND__##x

static void ns_get(ph_call_t *c) { ph_read(c, KIND(NAMESPACES), true); }
static void ns_create(ph_call_t *c) { ph_write(c, OP(NAMESPACE_CREATE)); }
static void ns_update(ph_call_t *c) { ph_write(c, OP(NAMESPACE_UPDATE)); }
static void ns_delete(ph_call_t *c) { ph_write(c, OP(NAMESPACE_DELETE)); }

static void svc_get(ph_call_t *c) { ph_read(c, KIND(SERVICES), true); }
static void svc_all(ph_call_t *c) { ph_read(c, KIND(SERVICES_ALL), false); }
static void svc_count(ph_call_t *c) { ph_read(c, KIND(SERVICES_COUNT), false); }
static void svc_create(ph_call_t *c) { ph_write(c, OP(SERVICE_CREATE)); }
static void svc_update(ph_call_t *c) { ph_write(c, OP(SERVICE_UPDATE)); }
static void svc_delete(ph_call_t *c) { ph_write(c, OP(SERVICE_DELETE)); }

static void ins_get(ph_call_t *c) { ph_read(c, KIND(INSTANCES), true); }
static void ins_count(ph_call_t *c) { ph_read(c, KIND(INSTANCES_COUNT), false); }
static void ins_labels(ph_call_t *c) { ph_read(c, KIND(INSTANCE_LABELS), false); }
static void ins_create(ph_call_t *c) { ph_write(c, OP(INSTANCE_REGISTER)); }
static void ins_update(ph_call_t *c) { ph_write(c, OP(INSTANCE_UPDATE)); }
static void ins_delete(ph_call_t *c) { ph_write(c, OP(INSTANCE_DEREGISTER)); }
static void ins_delete_host(ph_call_t *c) { ph_write(c, OP(INSTANCE_DELETE_HOST)); }
static void ins_isolate_host(ph_call_t *c) { ph_write(c, OP(INSTANCE_ISOLATE_HOST)); }

#define GET EVHTTP_REQ_GET
#define POST EVHTTP_REQ_POST
#define PUT EVHTTP_REQ_PUT
#define BW PH_KIND_BATCH_WRITE
#define BQ PH_KIND_BATCH_QUERY

const ph_route_t ph_openapi_routes[] = {
    {"/core/v1/namespaces", GET, BQ, ns_get},
    {"/core/v1/namespaces", POST, BW, ns_create},
    {"/core/v1/namespaces", PUT, BW, ns_update},
    {"/core/v1/namespaces/delete", POST, BW, ns_delete},
    {"/naming/v1/namespaces", GET, BQ, ns_get},
    {"/naming/v1/namespaces", POST, BW, ns_create},
    {"/naming/v1/namespaces", PUT, BW, ns_update},
    {"/naming/v1/namespaces/delete", POST, BW, ns_delete},

    {"/naming/v1/services", GET, BQ, svc_get},
    {"/naming/v1/services", POST, BW, svc_create},
    {"/naming/v1/services", PUT, BW, svc_update},
    {"/naming/v1/services/delete", POST, BW, svc_delete},
    {"/naming/v1/services/all", GET, BQ, svc_all},
    {"/naming/v1/services/count", GET, BQ, svc_count},

    {"/naming/v1/instances", GET, BQ, ins_get},
    {"/naming/v1/instances", POST, BW, ins_create},
    {"/naming/v1/instances", PUT, BW, ins_update},
    {"/naming/v1/instances/delete", POST, BW, ins_delete},
    {"/naming/v1/instances/delete/host", POST, BW, ins_delete_host},
    {"/naming/v1/instances/isolate/host", PUT, BW, ins_isolate_host},
    {"/naming/v1/instances/count", GET, BQ, ins_count},
    {"/naming/v1/instances/labels", GET, PH_KIND_RESPONSE, ins_labels},
    {NULL, 0, 0, NULL},
};

/*
 * nm_validate.c: static checks of NamingWriteRequest items, with the codes
 * polaris-server answers for the same input.
 *
 * The rules and their order follow polaris-server's parameter checks
 * (service/interceptor/paramcheck: checkCreateInstance, checkReviseInstance,
 * CheckDbInstanceFieldLen, checkInstanceByHost, checkCreateService,
 * checkReviseService, CheckDbServiceFieldLen; namespace checkCreateNamespace;
 * common/utils CheckResourceName, CheckDbStrFieldLen, CheckDbMetaDataFieldLen,
 * CheckInstanceTetrad):
 *   - names match ^[0-9A-Za-z-./:_]+$; service names up to 128 and namespace
 *     names up to 64 characters;
 *   - host present and non-empty, up to 128; port present, at most 65535
 *     (0 is accepted, as Polaris does); weight at most 65535 (InvalidParameter);
 *     protocol and version up to 32, logic_set up to 128;
 *   - at most 64 metadata entries, keys up to 128 and values up to 4096;
 *   - service ports 8192, business 128, department/cmdb/comment/owners 1024,
 *     token 2048, platform_id 32, each with its own code.
 * Lengths count characters (UTF-8 code points), as Go's RuneCountInString.
 * Beyond Polaris (which leaves these to database errors that would fail a
 * whole batch here): strings must be valid UTF-8 (the field's own code);
 * instance id up to 128, vpc_id up to 64, location parts and InstanceExt
 * strings up to 128, namespace comment up to 1024 (InvalidParameter).
 * Priority is not checked and the heartbeat TTL is normalised, not
 * rejected (0 or above 60 becomes 5), exactly as Polaris.
 *
 * Every message starts with Polaris's text for the code and then names the
 * field: "invalid instance host: instance.host is empty".
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "naming.h"

typedef struct code_text {
    uint32_t code;
    const char *text;
} code_text_t;

/* polaris-server common/api/v1 code2info, for the codes used here. */

const char *nm_clip(const char *s, char *buf, size_t len)
{
    if (!s)
        return "";
    if (!nm_utf8_valid(s))
        return "(not UTF-8)";
    size_t n = strlen(s);
    if (n < len)
        return s;
    /* cut at a character boundary, leaving room for "..." */
    size_t cut = len > 4 ? len - 4 : 0;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    memcpy(buf, s, cut);
    memcpy(buf + cut, "...", 4);
    return buf;
}


bool nm_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        size_t n;
        unsigned min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1;
            min = 0x80;
            c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            min = 0x800;
            c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            min = 0x10000;
            c &= 0x07;
        } else {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            c = (c << 6) | (p[i] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

size_t nm_utf8_len(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80)
            n++;
    return n;
}

bool nm_name_valid(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '-' || c == '.' ||
              c == '/' || c == ':' || c == '_'))
            return false;
    }
    return true;
}

size_t nm_request_items(const Lodestar__NamingWriteRequest *req)
{
    switch (req->op) {
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_UPDATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DELETE_HOST:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH: return req->n_instances;
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_DELETE: return req->n_services;
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_CREATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_UPDATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_DELETE: return req->n_namespaces;
    default: return 0;
    }
}

static const char *op_name(int op)
{
    switch (op) {
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER: return "INSTANCE_REGISTER";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER: return "INSTANCE_DEREGISTER";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_UPDATE: return "INSTANCE_UPDATE";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DELETE_HOST: return "INSTANCE_DELETE_HOST";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST: return "INSTANCE_ISOLATE_HOST";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH: return "INSTANCE_SET_HEALTH";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE: return "SERVICE_CREATE";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE: return "SERVICE_UPDATE";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_DELETE: return "SERVICE_DELETE";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_CREATE: return "NAMESPACE_CREATE";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_UPDATE: return "NAMESPACE_UPDATE";
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_DELETE: return "NAMESPACE_DELETE";
    default: return NULL;
    }
}

uint32_t nm_fail(uint32_t code, char *info, size_t infolen, const char *fmt, ...)
{
    char detail[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    snprintf(info, infolen, "%s: %s", polaris_code_info(code), detail);
    return code;
}

uint32_t nm_validate_request(const Lodestar__NamingWriteRequest *req, char *info, size_t infolen)
{
    const char *op = op_name(req->op);
    if (!op)
        return nm_fail(NM_BAD_REQUEST, info, infolen, "op %d is not a naming write operation", (int)req->op);
    size_t n = nm_request_items(req);
    const char *list = req->op >= LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_CREATE ? "namespaces"
                       : req->op >= LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE ? "services"
                                                                                       : "instances";
    if (n == 0)
        return nm_fail(NM_EMPTY_REQUEST, info, infolen, "%s carries no %s", op, list);
    /* INSTANCE_SET_HEALTH comes from the health worker, not from clients,
     * and may carry every expiry of one check round. */
    if (n > NM_MAX_BATCH_ITEMS && req->op != LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH)
        return nm_fail(NM_BATCH_SIZE_OVER_LIMIT, info, infolen, "%zu %s (at most %d)", n, list, NM_MAX_BATCH_ITEMS);
    return 0;
}

/* ------------------------------------------------------------ field checks */

typedef struct vctx {
    char *info;
    size_t infolen;
    const char *obj; /* "instance", "service", "namespace" */
} vctx_t;

static const char *val(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : NULL; }

/* A string that may be absent: valid UTF-8 and at most max characters. */
static uint32_t check_len(vctx_t *c, const char *s, const char *field, size_t max, uint32_t code)
{
    if (!s)
        return 0;
    if (!nm_utf8_valid(s))
        return nm_fail(code, c->info, c->infolen, "%s.%s is not valid UTF-8", c->obj, field);
    size_t n = nm_utf8_len(s);
    if (n > max)
        return nm_fail(code, c->info, c->infolen, "%s.%s has %zu characters (at most %zu)", c->obj, field, n, max);
    return 0;
}

/* A Polaris resource name: present, non-empty, ^[0-9A-Za-z-./:_]+$. */
static uint32_t check_name(vctx_t *c, const char *s, const char *field, uint32_t code)
{
    if (!s)
        return nm_fail(code, c->info, c->infolen, "%s.%s is missing", c->obj, field);
    if (!*s)
        return nm_fail(code, c->info, c->infolen, "%s.%s is empty", c->obj, field);
    if (!nm_name_valid(s)) {
        char buf[64];
        return nm_fail(code, c->info, c->infolen, "%s.%s \"%s\" contains a character outside [0-9A-Za-z-./:_]",
                       c->obj, field, nm_clip(s, buf, sizeof buf));
    }
    return 0;
}

static uint32_t check_meta_count(vctx_t *c, size_t n)
{
    if (n > NM_MAX_METADATA)
        return nm_fail(NM_INVALID_METADATA, c->info, c->infolen, "%s.metadata has %zu entries (at most %d)", c->obj,
                    n, NM_MAX_METADATA);
    return 0;
}

static uint32_t check_meta_kv(vctx_t *c, const char *k, const char *v)
{
    k = k ? k : "";
    v = v ? v : "";
    if (!nm_utf8_valid(k))
        return nm_fail(NM_INVALID_METADATA, c->info, c->infolen, "%s.metadata has a key that is not valid UTF-8",
                    c->obj);
    char buf[64];
    if (!nm_utf8_valid(v))
        return nm_fail(NM_INVALID_METADATA, c->info, c->infolen, "%s.metadata[\"%s\"] is not valid UTF-8", c->obj,
                       nm_clip(k, buf, sizeof buf));
    if (nm_utf8_len(k) > NM_MAX_META_KEY)
        return nm_fail(NM_INVALID_METADATA, c->info, c->infolen, "%s.metadata key \"%s\" is longer than %d characters",
                       c->obj, nm_clip(k, buf, sizeof buf), NM_MAX_META_KEY);
    if (nm_utf8_len(v) > NM_MAX_META_VALUE)
        return nm_fail(NM_INVALID_METADATA, c->info, c->infolen, "%s.metadata[\"%s\"] is longer than %d characters",
                       c->obj, nm_clip(k, buf, sizeof buf), NM_MAX_META_VALUE);
    return 0;
}

/* ------------------------------------------------------------- instances */

static uint32_t instance_meta(vctx_t *c, const V1__Instance *in)
{
    for (size_t i = 0; i < in->n_metadata; i++) {
        uint32_t rc = check_meta_kv(c, in->metadata[i]->key, in->metadata[i]->value);
        if (rc)
            return rc;
    }
    return 0;
}

/* CheckDbInstanceFieldLen plus the lengths Polaris leaves to its database. */
static uint32_t instance_lengths(vctx_t *c, const V1__Instance *in, const Lodestar__InstanceExt *ext)
{
    uint32_t rc;
    if ((rc = check_len(c, val(in->service), "service", NM_MAX_SERVICE_NAME, NM_INVALID_SERVICE_NAME)) ||
        (rc = check_len(c, val(in->namespace_), "namespace", NM_MAX_NAMESPACE_NAME, NM_INVALID_NAMESPACE_NAME)) ||
        (rc = check_len(c, val(in->host), "host", NM_MAX_HOST, NM_INVALID_INSTANCE_HOST)) ||
        (rc = check_len(c, val(in->protocol), "protocol", NM_MAX_PROTOCOL, NM_INVALID_INSTANCE_PROTOCOL)) ||
        (rc = check_len(c, val(in->version), "version", NM_MAX_VERSION, NM_INVALID_INSTANCE_VERSION)) ||
        (rc = check_len(c, val(in->logic_set), "logic_set", NM_MAX_LOGIC_SET, NM_INVALID_INSTANCE_LOGIC_SET)) ||
        (rc = instance_meta(c, in)))
        return rc;
    if (in->port && in->port->value > NM_MAX_PORT)
        return nm_fail(NM_INVALID_INSTANCE_PORT, c->info, c->infolen, "instance.port %u is above %u", in->port->value,
                    NM_MAX_PORT);
    if (in->weight && in->weight->value > NM_MAX_WEIGHT)
        return nm_fail(NM_INVALID_PARAMETER, c->info, c->infolen, "instance.weight %u is above %u",
                    in->weight->value, NM_MAX_WEIGHT);
    if ((rc = check_len(c, val(in->id), "id", NM_MAX_INSTANCE_ID, NM_INVALID_INSTANCE_ID)) ||
        (rc = check_len(c, val(in->vpc_id), "vpc_id", NM_MAX_VPC_ID, NM_INVALID_PARAMETER)) ||
        (rc = check_len(c, val(in->service_token), "service_token", NM_MAX_TOKEN, NM_INVALID_SERVICE_TOKEN)))
        return rc;
    if (in->location &&
        ((rc = check_len(c, val(in->location->region), "location.region", NM_MAX_LOCATION, NM_INVALID_PARAMETER)) ||
         (rc = check_len(c, val(in->location->zone), "location.zone", NM_MAX_LOCATION, NM_INVALID_PARAMETER)) ||
         (rc = check_len(c, val(in->location->campus), "location.campus", NM_MAX_LOCATION, NM_INVALID_PARAMETER))))
        return rc;
    if (ext) {
        vctx_t e = {c->info, c->infolen, "ext"};
        if ((rc = check_len(&e, ext->nacos_group, "nacos_group", NM_MAX_EXT, NM_INVALID_PARAMETER)) ||
            (rc = check_len(&e, ext->nacos_cluster, "nacos_cluster", NM_MAX_EXT, NM_INVALID_PARAMETER)) ||
            (rc = check_len(&e, ext->eureka_app, "eureka_app", NM_MAX_EXT, NM_INVALID_PARAMETER)) ||
            (rc = check_len(&e, ext->eureka_status, "eureka_status", NM_MAX_EXT, NM_INVALID_PARAMETER)) ||
            (rc = check_len(&e, ext->eureka_overridden_status, "eureka_overridden_status", NM_MAX_EXT,
                            NM_INVALID_PARAMETER)) ||
            (rc = check_len(&e, ext->origin, "origin", NM_MAX_EXT, NM_INVALID_PARAMETER)))
            return rc;
    }
    return 0;
}

/* CheckInstanceTetrad: the address that names an instance without an id. */
static uint32_t instance_tetrad(vctx_t *c, const V1__Instance *in)
{
    uint32_t rc;
    if ((rc = check_name(c, val(in->service), "service", NM_INVALID_SERVICE_NAME)) ||
        (rc = check_name(c, val(in->namespace_), "namespace", NM_INVALID_NAMESPACE_NAME)))
        return rc;
    if (!val(in->host))
        return nm_fail(NM_INVALID_INSTANCE_HOST, c->info, c->infolen, "instance.host is missing");
    if (!*val(in->host))
        return nm_fail(NM_INVALID_INSTANCE_HOST, c->info, c->infolen, "instance.host is empty");
    if (!in->port)
        return nm_fail(NM_INVALID_INSTANCE_PORT, c->info, c->infolen, "instance.port is missing");
    return 0;
}

static uint32_t check_register(vctx_t *c, const Lodestar__NamingInstance *ni)
{
    const V1__Instance *in = ni->instance;
    uint32_t rc;
    if ((rc = check_meta_count(c, in->n_metadata)) || (rc = instance_lengths(c, in, ni->ext)))
        return rc;
    return instance_tetrad(c, in);
}

/* checkReviseInstance: by id when one is given, else by address. */
static uint32_t check_revise(vctx_t *c, const Lodestar__NamingInstance *ni)
{
    const V1__Instance *in = ni->instance;
    uint32_t rc;
    if (in->id) {
        if (!val(in->id) || !*val(in->id))
            return nm_fail(NM_INVALID_INSTANCE_ID, c->info, c->infolen, "instance.id is empty");
        return instance_lengths(c, in, ni->ext);
    }
    if ((rc = instance_lengths(c, in, ni->ext)))
        return rc;
    return instance_tetrad(c, in);
}

/* checkInstanceByHost; namespace and service only narrow the match here
 * (NamingWriteRequest contract), so each is checked when given. */
static uint32_t check_by_host(vctx_t *c, const Lodestar__NamingInstance *ni, bool isolate)
{
    const V1__Instance *in = ni->instance;
    uint32_t rc;
    if (in->service && (rc = check_name(c, val(in->service), "service", NM_INVALID_SERVICE_NAME)))
        return rc;
    if (in->namespace_ && (rc = check_name(c, val(in->namespace_), "namespace", NM_INVALID_NAMESPACE_NAME)))
        return rc;
    if (!val(in->host))
        return nm_fail(NM_INVALID_INSTANCE_HOST, c->info, c->infolen, "instance.host is missing");
    if (!*val(in->host))
        return nm_fail(NM_INVALID_INSTANCE_HOST, c->info, c->infolen, "instance.host is empty");
    if ((rc = check_len(c, val(in->host), "host", NM_MAX_HOST, NM_INVALID_INSTANCE_HOST)) ||
        (rc = check_len(c, val(in->service), "service", NM_MAX_SERVICE_NAME, NM_INVALID_SERVICE_NAME)) ||
        (rc = check_len(c, val(in->namespace_), "namespace", NM_MAX_NAMESPACE_NAME, NM_INVALID_NAMESPACE_NAME)))
        return rc;
    if (isolate && !in->isolate)
        return nm_fail(NM_INVALID_INSTANCE_ISOLATE, c->info, c->infolen, "instance.isolate is missing");
    return 0;
}

static uint32_t check_set_health(vctx_t *c, const Lodestar__NamingInstance *ni)
{
    const V1__Instance *in = ni->instance;
    if (!val(in->id) || !*val(in->id))
        return nm_fail(NM_INVALID_INSTANCE_ID, c->info, c->infolen, "instance.id is %s", in->id ? "empty" : "missing");
    uint32_t rc = check_len(c, val(in->id), "id", NM_MAX_INSTANCE_ID, NM_INVALID_INSTANCE_ID);
    if (rc)
        return rc;
    if (!in->healthy)
        return nm_fail(NM_INVALID_PARAMETER, c->info, c->infolen, "instance.healthy is missing");
    return 0;
}

/* -------------------------------------------------------------- services */

/* CheckDbServiceFieldLen */
static uint32_t service_lengths(vctx_t *c, const V1__Service *s)
{
    uint32_t rc;
    if ((rc = check_len(c, val(s->name), "name", NM_MAX_SERVICE_NAME, NM_INVALID_SERVICE_NAME)) ||
        (rc = check_len(c, val(s->namespace_), "namespace", NM_MAX_NAMESPACE_NAME, NM_INVALID_NAMESPACE_NAME)))
        return rc;
    for (size_t i = 0; i < s->n_metadata; i++)
        if ((rc = check_meta_kv(c, s->metadata[i]->key, s->metadata[i]->value)))
            return rc;
    if ((rc = check_len(c, val(s->ports), "ports", NM_MAX_PORTS, NM_INVALID_SERVICE_PORTS)) ||
        (rc = check_len(c, val(s->business), "business", NM_MAX_BUSINESS, NM_INVALID_SERVICE_BUSINESS)) ||
        (rc = check_len(c, val(s->department), "department", NM_MAX_DEPARTMENT, NM_INVALID_SERVICE_DEPARTMENT)) ||
        (rc = check_len(c, val(s->cmdb_mod1), "cmdb_mod1", NM_MAX_CMDB, NM_INVALID_SERVICE_CMDB)) ||
        (rc = check_len(c, val(s->cmdb_mod2), "cmdb_mod2", NM_MAX_CMDB, NM_INVALID_SERVICE_CMDB)) ||
        (rc = check_len(c, val(s->cmdb_mod3), "cmdb_mod3", NM_MAX_CMDB, NM_INVALID_SERVICE_CMDB)) ||
        (rc = check_len(c, val(s->comment), "comment", NM_MAX_COMMENT, NM_INVALID_SERVICE_COMMENT)) ||
        (rc = check_len(c, val(s->owners), "owners", NM_MAX_OWNERS, NM_INVALID_SERVICE_OWNERS)) ||
        (rc = check_len(c, val(s->token), "token", NM_MAX_TOKEN, NM_INVALID_SERVICE_TOKEN)) ||
        (rc = check_len(c, val(s->platform_id), "platform_id", NM_MAX_PLATFORM_ID, NM_INVALID_PLATFORM_ID)))
        return rc;
    return 0;
}

static uint32_t check_service(vctx_t *c, const V1__Service *s, bool meta_count)
{
    uint32_t rc;
    if ((rc = check_name(c, val(s->name), "name", NM_INVALID_SERVICE_NAME)) ||
        (rc = check_name(c, val(s->namespace_), "namespace", NM_INVALID_NAMESPACE_NAME)))
        return rc;
    if (meta_count && (rc = check_meta_count(c, s->n_metadata)))
        return rc;
    return service_lengths(c, s);
}

/* ------------------------------------------------------------ namespaces */

static uint32_t check_namespace(vctx_t *c, const V1__Namespace *ns)
{
    uint32_t rc;
    if ((rc = check_name(c, val(ns->name), "name", NM_INVALID_NAMESPACE_NAME)) ||
        (rc = check_len(c, val(ns->name), "name", NM_MAX_NAMESPACE_NAME, NM_INVALID_NAMESPACE_NAME)) ||
        (rc = check_len(c, val(ns->comment), "comment", NM_MAX_COMMENT, NM_INVALID_PARAMETER)) ||
        (rc = check_len(c, val(ns->owners), "owners", NM_MAX_OWNERS, NM_INVALID_NAMESPACE_OWNERS)) ||
        (rc = check_meta_count(c, ns->n_metadata)))
        return rc;
    for (size_t i = 0; i < ns->n_metadata; i++)
        if ((rc = check_meta_kv(c, ns->metadata[i]->key, ns->metadata[i]->value)))
            return rc;
    return 0;
}

uint32_t nm_validate_item(const Lodestar__NamingWriteRequest *req, size_t i, char *info, size_t infolen)
{
    info[0] = '\0';
    switch (req->op) {
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_UPDATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DELETE_HOST:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH: {
        vctx_t c = {info, infolen, "instance"};
        const Lodestar__NamingInstance *ni = i < req->n_instances ? req->instances[i] : NULL;
        if (!ni || !ni->instance)
            return nm_fail(NM_EMPTY_REQUEST, info, infolen, "instances[%zu].instance is missing", i);
        switch (req->op) {
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER: return check_register(&c, ni);
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER: return check_revise(&c, ni);
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_UPDATE: {
            uint32_t rc = check_meta_count(&c, ni->instance->n_metadata);
            return rc ? rc : check_revise(&c, ni);
        }
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DELETE_HOST: return check_by_host(&c, ni, false);
        case LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_ISOLATE_HOST: return check_by_host(&c, ni, true);
        default: return check_set_health(&c, ni);
        }
    }
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_CREATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_UPDATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_DELETE: {
        vctx_t c = {info, infolen, "service"};
        const V1__Service *s = i < req->n_services ? req->services[i] : NULL;
        if (!s)
            return nm_fail(NM_EMPTY_REQUEST, info, infolen, "services[%zu] is missing", i);
        return check_service(&c, s, req->op != LODESTAR__NAMING_WRITE_REQUEST__OP__SERVICE_DELETE);
    }
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_CREATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_UPDATE:
    case LODESTAR__NAMING_WRITE_REQUEST__OP__NAMESPACE_DELETE: {
        vctx_t c = {info, infolen, "namespace"};
        const V1__Namespace *ns = i < req->n_namespaces ? req->namespaces[i] : NULL;
        if (!ns)
            return nm_fail(NM_EMPTY_REQUEST, info, infolen, "namespaces[%zu] is missing", i);
        return check_namespace(&c, ns);
    }
    default: return nm_fail(NM_BAD_REQUEST, info, infolen, "op %d is not a naming write operation", (int)req->op);
    }
}

/* Append s to buf (cap bytes with the NUL), cutting where snprintf would. */
static void id_append(char *buf, size_t cap, size_t *n, const char *s)
{
    size_t l = strlen(s);
    if (*n + l > cap - 1)
        l = cap - 1 - *n;
    memcpy(buf + *n, s, l);
    *n += l;
}

/* naming_instance_id (common/naming_id.h) without printf and with SHA-1
 * fetched once (it runs for every registration): the same text, cut at
 * the same length, so the same id. */
static void instance_id(const char *ns, const char *service, const char *vpc_id, const char *host, unsigned port,
                        char out[NAMING_HEX_LEN + 1])
{
    char buf[2048], num[16];
    size_t n = 0, k = sizeof num;
    num[--k] = '\0';
    do {
        num[--k] = (char)('0' + port % 10);
        port /= 10;
    } while (port);
    const char *parts[5] = {ns, service, vpc_id && *vpc_id ? vpc_id : NULL, host, num + k};
    bool first = true;
    for (int i = 0; i < 5; i++) {
        if (!parts[i])
            continue;
        if (!first)
            id_append(buf, sizeof buf, &n, "##");
        id_append(buf, sizeof buf, &n, parts[i]);
        first = false;
    }
    nm_sha1_hex(buf, n, out);
}

void nm_item_instance_id(const V1__Instance *in, char out[NM_MAX_INSTANCE_ID * 4 + 1])
{
    const char *id = val(in->id);
    if (id && *id) {
        snprintf(out, NM_MAX_INSTANCE_ID * 4 + 1, "%s", id);
        return;
    }
    instance_id(val(in->namespace_) ? val(in->namespace_) : "", val(in->service) ? val(in->service) : "",
                val(in->vpc_id), val(in->host) ? val(in->host) : "", in->port ? in->port->value : 0, out);
}

typedef struct seen_id {
    char *id;
    size_t index;
    UT_hash_handle hh;
} seen_id_t;

size_t nm_validate_items(const Lodestar__NamingWriteRequest *req, nm_result_t *res)
{
    size_t n = nm_request_items(req), bad = 0;
    bool by_id = req->op == LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_REGISTER ||
                 req->op == LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER ||
                 req->op == LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_UPDATE ||
                 req->op == LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH;
    seen_id_t *seen = NULL;
    for (size_t i = 0; i < n; i++) {
        nm_result_t *r = &res[i];
        r->code = nm_validate_item(req, i, r->info, sizeof r->info);
        if (r->code) {
            bad++;
            continue;
        }
        if (!by_id || n < 2)
            continue; /* one item cannot repeat itself */
        char id[NM_MAX_INSTANCE_ID * 4 + 1];
        nm_item_instance_id(req->instances[i]->instance, id);
        seen_id_t *e = NULL;
        HASH_FIND_STR(seen, id, e);
        if (e) {
            char buf[96];
            r->code = nm_fail(NM_SAME_INSTANCE_REQUEST, r->info, sizeof r->info,
                              "instance %s is also item %zu of this request", nm_clip(id, buf, sizeof buf), e->index);
            bad++;
            continue;
        }
        e = nm_xcalloc(1, sizeof *e);
        e->id = nm_xstrdup(id);
        e->index = i;
        HASH_ADD_KEYPTR(hh, seen, e->id, strlen(e->id), e);
    }
    seen_id_t *e, *tmp;
    HASH_ITER(hh, seen, e, tmp)
    {
        HASH_DEL(seen, e);
        free(e->id);
        free(e);
    }
    if (bad)
        nm_results_reject_rest(res, n);
    return bad;
}

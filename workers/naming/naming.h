/*
 * naming.h: the naming worker's internal types, shared by the files of
 * workers/naming (nothing outside this folder includes it).
 *
 *   nm_model.c     the authoritative in-memory model: namespaces, services,
 *                  instances in uthash tables; applies rows (from PostgreSQL:
 *                  start-up load, own commits, other nodes' changes) by
 *                  row_version; content revisions; counts
 *   nm_pb.c        model -> protobuf (arena-allocated), Polaris time format
 *   nm_rows.c      rows as SQL returns them (JSON) and takes them (binary
 *                  column arrays)
 *   nm_validate.c  static checks of a NamingWriteRequest with Polaris codes
 *   nm_ops.c       evaluation of write requests against model + pending batch
 *   nm_query.c     NamingQueryRequest (Polaris OpenAPI filters) over the model
 *   naming_batch.c the write queue and the batches (one transaction each,
 *                  several in flight on the store's pipeline)
 *   naming_sync.c  start-up load, resync after reconnect, polling other nodes'
 *                  changes, hard delete of old soft-deleted rows
 *   naming_worker.c the worker_domain_t hooks, IPC dispatch, snapshots and
 *                  NamingChange publication
 * The nm_*.c files touch neither the store nor the IPC server (library
 * lodestar_naming, unit-tested on their own); naming_*.c are the worker.
 *
 * Rules every file keeps:
 *  - The model changes only through nm_model_apply_* with rows PostgreSQL has
 *    committed; a row is applied only when its row_version is higher than the
 *    one held, so re-reading a row is a no-op.
 *  - Revisions are SHA-1 digests of content (not of times or row versions),
 *    so identical data has identical revisions on every node.
 *  - Out of memory aborts the worker with a log line (the supervisor
 *    restarts it); nothing else aborts.
 */
#ifndef LODESTAR_NAMING_H
#define LODESTAR_NAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <uthash.h>

#include "polaris_code.h"
#include "config.h"
#include "ipc.h"
#include "naming_id.h"

/* ------------------------------------------------------------- Polaris codes */

enum {
    NM_OK = 200000,                     /* ExecuteSuccess */
    NM_NO_NEED_UPDATE = 200002,         /* NoNeedUpdate */
    NM_BAD_REQUEST = 400000,            /* BadRequest */
    NM_EMPTY_REQUEST = 400002,          /* EmptyRequest */
    NM_BATCH_SIZE_OVER_LIMIT = 400003,  /* BatchSizeOverLimit */
    NM_INVALID_PARAMETER = 400103,      /* InvalidParameter */
    NM_EMPTY_QUERY_PARAMETER = 400104,  /* EmptyQueryParameter */
    NM_INVALID_QUERY_INS_PARAMETER = 400105,
    NM_INVALID_NAMESPACE_NAME = 400110,
    NM_INVALID_NAMESPACE_OWNERS = 400111,
    NM_INVALID_SERVICE_NAME = 400120,
    NM_INVALID_SERVICE_OWNERS = 400121,
    NM_INVALID_SERVICE_TOKEN = 400122,
    NM_INVALID_SERVICE_PORTS = 400124,
    NM_INVALID_SERVICE_BUSINESS = 400125,
    NM_INVALID_SERVICE_DEPARTMENT = 400126,
    NM_INVALID_SERVICE_CMDB = 400127,
    NM_INVALID_SERVICE_COMMENT = 400128,
    NM_INVALID_INSTANCE_ID = 400130,
    NM_INVALID_INSTANCE_HOST = 400131,
    NM_INVALID_INSTANCE_PORT = 400132,
    NM_INVALID_INSTANCE_PROTOCOL = 400136,
    NM_INVALID_INSTANCE_VERSION = 400137,
    NM_INVALID_INSTANCE_LOGIC_SET = 400138,
    NM_INVALID_INSTANCE_ISOLATE = 400139,
    NM_INVALID_METADATA = 400150,
    NM_INVALID_PLATFORM_ID = 400180,
    NM_EXISTED_RESOURCE = 400201,
    NM_NOT_FOUND_RESOURCE = 400202,
    NM_NAMESPACE_EXISTED_SERVICES = 400203,
    NM_SERVICE_EXISTED_INSTANCES = 400204,
    NM_SAME_INSTANCE_REQUEST = 400208,
    NM_NOT_FOUND_SERVICE = 400301,
    NM_NOT_FOUND_INSTANCE = 400303,
    NM_NOT_FOUND_NAMESPACE = 400305,
    NM_INSTANCE_TOO_MANY_REQUESTS = 429001,
    NM_EXECUTE_EXCEPTION = 500000,
    NM_STORE_LAYER_EXCEPTION = 500001,
};

/* Sets info to "<Polaris text for code>: <detail>" and returns code. */
uint32_t nm_fail(uint32_t code, char *info, size_t infolen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* s, or a copy cut at a character boundary to fit len bytes (with "...");
 * "(not UTF-8)" for invalid input. For quoting client input in messages. */
const char *nm_clip(const char *s, char *buf, size_t len);
/* True for 2xxxxx codes. */
static inline bool nm_code_ok(uint32_t code) { return code >= 200000 && code < 300000; }

/* Polaris limits (polaris common/utils: MaxMetadataLength, MaxDb*Length, MaxBatchSize). */
#define NM_MAX_BATCH_ITEMS 100
#define NM_MAX_METADATA 64
#define NM_MAX_META_KEY 128
#define NM_MAX_META_VALUE 4096
#define NM_MAX_SERVICE_NAME 128
#define NM_MAX_NAMESPACE_NAME 64
#define NM_MAX_HOST 128
#define NM_MAX_PROTOCOL 32
#define NM_MAX_VERSION 32
#define NM_MAX_LOGIC_SET 128
#define NM_MAX_LOCATION 128
#define NM_MAX_VPC_ID 64
#define NM_MAX_INSTANCE_ID 128
#define NM_MAX_PORTS 8192
#define NM_MAX_BUSINESS 128
#define NM_MAX_DEPARTMENT 1024
#define NM_MAX_CMDB 1024
#define NM_MAX_COMMENT 1024
#define NM_MAX_OWNERS 1024
#define NM_MAX_TOKEN 2048
#define NM_MAX_PLATFORM_ID 32
#define NM_MAX_EXT 128
#define NM_MAX_PORT 65535u
#define NM_MAX_WEIGHT 65535u
#define NM_DEFAULT_WEIGHT 100u
#define NM_DEFAULT_TTL 5u
#define NM_MAX_TTL 60u

#define NM_AUTO_CREATED_KEY "internal-auto-created"

/* ------------------------------------------------------------------ memory */

/* Allocation that aborts (with a log line) when memory runs out. */
void nm_oom(void) __attribute__((noreturn));
void *nm_xcalloc(size_t n, size_t size);
char *nm_xstrdup(const char *s); /* NULL -> "" */
/* The strings of model objects and rows (nm_instance_t, nm_service_t,
 * nm_namespace_t fields): "" is the one shared nm_empty_str (most optional
 * fields are empty, and each would be an allocation), anything else a heap
 * copy. They are made, replaced and freed only through these; never
 * written through. */
extern char nm_empty_str[1];
char *nm_str_dup(const char *s); /* NULL -> "" */
void nm_str_free(char *s);
void nm_str_set(char **dst, const char *s);
/* 32 lowercase hex characters from the kernel's random source (ids, tokens). */
void nm_random_hex(char out[33]);

/* A bump allocator for protobuf trees that are packed and then dropped
 * together (replies, pushes, an instance's cached message). */
typedef struct nm_arena {
    struct nm_arena_chunk *head;
    size_t chunk;
} nm_arena_t;
void nm_arena_init(nm_arena_t *a, size_t chunk);
void *nm_arena_alloc(nm_arena_t *a, size_t n); /* zeroed, max-aligned */
char *nm_arena_strdup(nm_arena_t *a, const char *s);
void nm_arena_free(nm_arena_t *a);
/* Drop everything allocated but keep the largest chunk for reuse (an arena
 * used over and over, for one reply or publication at a time). */
void nm_arena_reset(nm_arena_t *a);

/* ------------------------------------------------------------------- model */

/* Metadata: sorted by key, keys unique. */
typedef struct nm_meta {
    size_t n;
    char **keys;
    char **vals;
} nm_meta_t;
void nm_meta_free(nm_meta_t *m);
void nm_meta_copy(nm_meta_t *dst, const nm_meta_t *src);
bool nm_meta_equal(const nm_meta_t *a, const nm_meta_t *b);
/* Append then normalise (sort, later duplicates win). */
void nm_meta_add(nm_meta_t *m, const char *k, const char *v);
void nm_meta_sort(nm_meta_t *m);
const char *nm_meta_get(const nm_meta_t *m, const char *key);

enum nm_mode { NM_MODE_OVERWRITE = 0, NM_MODE_CREATE = 1 };

typedef struct nm_service nm_service_t;

typedef struct nm_instance {
    char *id, *ns, *service;
    char *vpc_id, *host;
    uint32_t port;
    char *protocol, *version;
    uint32_t priority, weight;
    int32_t hc_type; /* -1: no health_check block; else V1__HealthCheck__HealthCheckType */
    uint32_t hc_ttl;
    bool enable_hc, healthy, isolate;
    char *region, *zone, *campus;
    nm_meta_t meta;
    char *logic_set;
    /* lodestar.InstanceExt */
    char *nacos_group, *nacos_cluster;
    bool ephemeral;
    char *eureka_app, *eureka_status, *eureka_overridden_status;
    int64_t eureka_last_dirty_ms;
    char *origin;

    int64_t ctime_ms, mtime_ms, row_version;
    bool deleted;
    char revision[NAMING_HEX_LEN + 1];
    unsigned char digest[NAMING_HEX_LEN / 2]; /* revision in binary */

    /* model only */
    nm_service_t *svc;
    nm_arena_t pb_arena;
    struct Lodestar__NamingInstance *pb; /* cached message, NULL until built */
    bool seen;                           /* resync mark */
    UT_hash_handle hh;                   /* model->instances or an overlay, by id */
    UT_hash_handle hh_svc;               /* svc->instances, by id */
} nm_instance_t;

struct nm_service {
    char *key; /* ns "\x1f" name */
    char *ns, *name, *id;
    nm_meta_t meta;
    char *ports, *business, *department, *cmdb_mod1, *cmdb_mod2, *cmdb_mod3, *comment, *owners, *token,
        *platform_id;
    int64_t ctime_ms, mtime_ms, row_version;
    bool deleted;      /* row state (overlay entries and rows) */
    uint8_t mode;      /* overlay only: enum nm_mode */

    /* model only */
    bool has_row;           /* a live row is applied; else the service exists only for its instances */
    bool unsorted;          /* instances (hh_svc order) are not in id order */
    uint64_t pub_seq;       /* seq of its last published state; 0: none yet (the next one is full) */
    nm_instance_t *instances;
    uint32_t n_instances, n_healthy;          /* kept up to date by every instance change */
    unsigned char agg[NAMING_HEX_LEN / 2];    /* XOR of its instances' digests, likewise */
    char revision[NAMING_HEX_LEN + 1];
    bool seen;
    UT_hash_handle hh;
};

typedef struct nm_namespace {
    char *name, *comment, *owners, *token;
    nm_meta_t meta;
    int64_t ctime_ms, mtime_ms, row_version;
    bool deleted;
    uint8_t mode;
    char revision[NAMING_HEX_LEN + 1];
    bool seen;
    UT_hash_handle hh;
} nm_namespace_t;

/* A service whose published state changed since the last publication. */
/* An instance a touched service gained, changed or lost since its last
 * publication (the content of a delta push). */
typedef struct nm_touch_inst {
    bool removed;
    UT_hash_handle hh;
    char id[]; /* allocated with the entry */
} nm_touch_inst_t;

typedef struct nm_touch {
    char *key, *ns, *name;
    bool full;                /* service-level change: publish the full state */
    nm_touch_inst_t *insts;   /* otherwise: the instances to publish as a delta */
    UT_hash_handle hh;
} nm_touch_t;

typedef struct nm_model {
    nm_namespace_t *namespaces;
    nm_service_t *services;
    nm_instance_t *instances;
    nm_touch_t *touched;
    bool namespaces_changed;
    uint64_t seq; /* highest publication number handed out (see naming_sync.c) */
} nm_model_t;

nm_model_t *nm_model_new(void);
void nm_model_free(nm_model_t *m);

/* "ns\x1fname" (malloc'd). */
char *nm_service_key(const char *ns, const char *name);
/* The same in buf when it fits (lookups), else malloc'd; release it with
 * nm_service_key_release. */
#define NM_KEY_BUF 512
char *nm_service_key_in(const char *ns, const char *name, char buf[NM_KEY_BUF]);
static inline void nm_service_key_release(char *key, const char *buf)
{
    if (key != buf)
        free(key);
}

nm_instance_t *nm_instance_new(void);   /* every string "" */
nm_instance_t *nm_instance_dup(const nm_instance_t *in);
void nm_instance_free(nm_instance_t *in);
nm_service_t *nm_service_new(const char *ns, const char *name);
nm_service_t *nm_service_dup(const nm_service_t *s); /* fields only, no instances */
void nm_service_free(nm_service_t *s);               /* fields only */
nm_namespace_t *nm_namespace_new(const char *name);
nm_namespace_t *nm_namespace_dup(const nm_namespace_t *ns);
void nm_namespace_free(nm_namespace_t *ns);

/* The digest revisions are made of: the same SHA-1 over length-prefixed
 * runs as naming_digest_* (common/naming_id.h), with the runs gathered in
 * one buffer and hashed at once. init, add any number of runs, finish
 * (hex, and the 20 bytes when bin is not NULL). */
typedef struct nm_digest {
    unsigned char *p;
    size_t len, cap;
    unsigned char inline_buf[1024];
} nm_digest_t;
void nm_digest_init(nm_digest_t *d);
void nm_digest_add(nm_digest_t *d, const void *data, size_t len);
void nm_digest_add_str(nm_digest_t *d, const char *s); /* NULL hashes like "" */
void nm_digest_finish(nm_digest_t *d, char hex[NAMING_HEX_LEN + 1], unsigned char bin[NAMING_HEX_LEN / 2]);
/* Plain SHA-1 of len bytes in hex. */
void nm_sha1_hex(const void *data, size_t len, char out[NAMING_HEX_LEN + 1]);

/* Content revisions. */
void nm_instance_revision(nm_instance_t *in);   /* sets in->revision and in->digest */
void nm_namespace_revision(nm_namespace_t *ns); /* sets ns->revision */
/* Recomputes the revision of a model service from its fields and the
 * instance aggregate (count and XOR of digests) that every instance change
 * keeps current: O(1), whatever the number of instances. */
void nm_service_refresh(nm_service_t *s);
/* Put a service's instances (hh_svc order) in id order, if they are not. */
void nm_service_sort(nm_service_t *s);

/* Apply a committed row (ownership of row passes to the model). Returns 1
 * when applied, 0 when ignored because the model holds the same or a newer
 * row_version. Touched services are recorded in m->touched. */
int nm_model_apply_namespace(nm_model_t *m, nm_namespace_t *row);
int nm_model_apply_service(nm_model_t *m, nm_service_t *row);
int nm_model_apply_instance(nm_model_t *m, nm_instance_t *row);
/* The same for a row whose revision (and digest) is current: computed by
 * nm_instance_revision after its last change (overlay rows, parsed rows). */
int nm_model_apply_instance_hashed(nm_model_t *m, nm_instance_t *row);
/* Recompute revisions and counts of touched services. */
void nm_model_finish(nm_model_t *m);
/* Drop the touched set (after publication). */
void nm_model_clear_touched(nm_model_t *m);

/* Resync: mark everything unseen; rows applied (or matched) mark seen;
 * sweep removes what no row vouched for (deleted elsewhere meanwhile). */
void nm_model_mark_unseen(nm_model_t *m);
void nm_model_sweep(nm_model_t *m);

nm_instance_t *nm_model_instance(const nm_model_t *m, const char *id);
nm_service_t *nm_model_service(const nm_model_t *m, const char *ns, const char *name);
nm_namespace_t *nm_model_namespace(const nm_model_t *m, const char *name);
/* A service is published while it has a live row or live instances. */
static inline bool nm_service_live(const nm_service_t *s) { return s->has_row || s->n_instances > 0; }

/* --------------------------------------------------------------- protobuf */

/* Polaris time format "2006-01-02 15:04:05" (local time). */
void nm_format_time(int64_t ms, char out[32]);

struct V1__Instance;
struct V1__Service;
struct V1__Namespace;
struct Lodestar__NamingServiceState;

struct V1__Instance *nm_pb_instance(nm_arena_t *a, const nm_instance_t *in);
struct Lodestar__NamingInstance *nm_pb_naming_instance(nm_arena_t *a, const nm_instance_t *in);
/* The model's cached NamingInstance of an instance (built on first use). */
struct Lodestar__NamingInstance *nm_instance_cached_pb(nm_instance_t *in);
/* with_token: include the service token (only create responses do). */
struct V1__Service *nm_pb_service(nm_arena_t *a, const nm_service_t *s, bool with_token);
/* counts: {services, instances, healthy instances} of the namespace, or NULL. */
struct V1__Namespace *nm_pb_namespace(nm_arena_t *a, const nm_namespace_t *ns, const uint32_t *counts);
/* Full state of a model service (instances by reference to their cached
 * messages), or a deleted state naming ns/name when s is NULL. */
struct Lodestar__NamingServiceState *nm_pb_state(nm_arena_t *a, nm_service_t *s, const char *ns, const char *name,
                                                 uint64_t seq);
/* Every namespace with a live row, sorted by name. */
size_t nm_pb_namespaces(nm_arena_t *a, const nm_model_t *m, struct V1__Namespace ***out);

/* ------------------------------------------------------------------- rows */

enum nm_row_kind { NM_ROW_NAMESPACE = 1, NM_ROW_SERVICE = 2, NM_ROW_INSTANCE = 3 };

/* SQL: one row of table alias t as the JSON text nm_row_parse reads. */
#define NM_SQL_ROW_JSON                                                                                                \
    "(to_jsonb(t) - 'txid' - 'writer' - 'ctime' - 'mtime' || jsonb_build_object("                                      \
    "'ctime_ms', (extract(epoch FROM t.ctime) * 1000)::bigint, "                                                       \
    "'mtime_ms', (extract(epoch FROM t.mtime) * 1000)::bigint))::text"

/* Parse one row as the SQL of naming_sync.c/naming_batch.c returns it (a JSON
 * object with the table's columns, ctime/mtime as ctime_ms/mtime_ms).
 * Returns 0 and *out (a new nm_namespace_t / nm_service_t / nm_instance_t),
 * or -EINVAL with the reason in err. */
int nm_row_parse(int kind, const char *json, void **out, char *err, size_t errlen);
/* The columns a write sends for a kind of row: how many, the i-th one's
 * name and its PostgreSQL type name ("text", "int4", ...). */
size_t nm_row_ncols(int kind);
const char *nm_row_col(int kind, size_t i);
const char *nm_row_coltype(int kind, size_t i);
/* Rows of one kind to write, as one PostgreSQL binary array per column
 * (parameter format 1, type <coltype>[]): add rows (nm_namespace_t /
 * nm_service_t / nm_instance_t of that kind) in order, then take each
 * column's parameter. */
typedef struct nm_rowset nm_rowset_t;
nm_rowset_t *nm_rowset_new(int kind);
void nm_rowset_add(nm_rowset_t *rs, const void *row);
size_t nm_rowset_count(const nm_rowset_t *rs);
/* Column i's bytes (valid until the next add or the free); *len its length. */
const char *nm_rowset_param(nm_rowset_t *rs, size_t i, int *len);
void nm_rowset_free(nm_rowset_t *rs);

/* -------------------------------------------------------------- validation */

/* UTF-8 validity and length in code points (Polaris counts runes). */
bool nm_utf8_valid(const char *s);
size_t nm_utf8_len(const char *s);
/* Polaris resource names: ^[0-9A-Za-z-./:_]+$ */
bool nm_name_valid(const char *s);

/* Request-level checks (op known, item count): 0 or a code, info set. */
uint32_t nm_validate_request(const Lodestar__NamingWriteRequest *req, char *info, size_t infolen);
/* Static checks of item i of the op's list: 0 or a Polaris code, info set
 * ("<Polaris text>: <field> <what is wrong>"). */
uint32_t nm_validate_item(const Lodestar__NamingWriteRequest *req, size_t i, char *info, size_t infolen);
struct nm_result;
/* Every item of a request (static checks plus the same instance addressed
 * twice, 400208): fills res[] for failing items and, when any failed, gives
 * the others 400000. Returns the number of failing items. */
size_t nm_validate_items(const Lodestar__NamingWriteRequest *req, struct nm_result *res);
/* Number of items the op carries. */
size_t nm_request_items(const Lodestar__NamingWriteRequest *req);
/* The instance id an instance item addresses: the explicit id, or the
 * Polaris id computed from namespace, service, vpc_id, host, port. */
void nm_item_instance_id(const struct V1__Instance *in, char out[NM_MAX_INSTANCE_ID * 4 + 1]);

/* ------------------------------------------------------------- evaluation */

/* Pending final states of the rows one batch writes. */
typedef struct nm_overlay {
    nm_namespace_t *namespaces;
    nm_service_t *services;
    nm_instance_t *instances;
} nm_overlay_t;
void nm_overlay_free(nm_overlay_t *ov);
bool nm_overlay_empty(const nm_overlay_t *ov);

/* Outcome of one item. obj is a copy of what the item produced (for the
 * response), kind says which type; NULL for items that echo the request. */
typedef struct nm_result {
    uint32_t code;
    char info[512];
    int kind;   /* enum nm_row_kind, 0 = echo the request item */
    void *obj;  /* nm_instance_t / nm_service_t / nm_namespace_t copy */
    /* the row key of a CREATE item, or the instance id an echoed item resolved to */
    char key[NM_MAX_NAMESPACE_NAME * 4 + NM_MAX_SERVICE_NAME * 4 + 2];
    bool create; /* the item's row is written in CREATE mode */
    bool collateral; /* rejected only because another item of its request failed */
} nm_result_t;
void nm_result_clear(nm_result_t *r);

/* Evaluate a statically valid request against the model plus the batch's
 * pending overlay. Fills res[0..n_items). Returns true when every item
 * succeeded: its row changes are then merged into ov. When any item fails
 * nothing of the request enters ov and the other items get 400000
 * (INSTANCE_SET_HEALTH excepted: an unknown instance fails alone). */
bool nm_ops_eval(const nm_model_t *m, nm_overlay_t *ov, const cfg_naming_worker_t *cfg,
                 const Lodestar__NamingWriteRequest *req, nm_result_t *res);
/* The same while earlier batches are still on their way to PostgreSQL
 * (pending[0..npending), their overlays): a request that reads a row one
 * of them writes (or scans: by host, instance counts, a namespace's
 * services, while any is pending) depends on whether that batch commits,
 * so it is not evaluated now: NM_EVAL_BLOCKED, res[] cleared, ov
 * untouched. Otherwise the model alone holds what the request reads, and
 * the outcome is that of nm_ops_eval. */
typedef enum nm_eval { NM_EVAL_FAILED, NM_EVAL_OK, NM_EVAL_BLOCKED } nm_eval_t;
nm_eval_t nm_ops_eval_pending(const nm_model_t *m, nm_overlay_t *ov, const nm_overlay_t *const *pending,
                              size_t npending, const cfg_naming_worker_t *cfg,
                              const Lodestar__NamingWriteRequest *req, nm_result_t *res);
/* After some items failed (code set, not 2xx): every other item gets
 * 400000 "batch rejected: item <first failing index> invalid". */
void nm_results_reject_rest(nm_result_t *res, size_t n);
/* The BatchWriteResponse of a request (arena-allocated; it may also point
 * into model instances' cached messages, so pack it before the model
 * changes). Its code is the first failing item's own code (not the 400000
 * of items rejected along with it), or 200000. */
struct V1__BatchWriteResponse *nm_batch_response(nm_arena_t *a, nm_model_t *m,
                                                 const Lodestar__NamingWriteRequest *req, nm_result_t *res,
                                                 size_t n);
/* A whole-request answer (EmptyRequest, BatchSizeOverLimit, ...) without items. */
struct V1__BatchWriteResponse *nm_batch_response_code(nm_arena_t *a, uint32_t code, const char *info);

/* ------------------------------------------------------------------ query */

/* Answer a NamingQueryRequest from the model (arena-allocated). */
struct Lodestar__NamingQueryResponse *nm_query(nm_arena_t *a, const nm_model_t *m,
                                               const Lodestar__NamingQueryRequest *q);

/* ------------------------------------------------------------ the worker */

struct worker;
typedef struct nm_batcher nm_batcher_t;
typedef struct nm_sync nm_sync_t;

typedef struct nm_parked nm_parked_t;

typedef struct nm_state {
    struct worker *w;
    cfg_naming_worker_t cfg;
    char writer[24];            /* this process's writer column value (0004_naming_writer.sql), decimal */
    nm_model_t *model;
    bool loaded;                /* the first full load finished: requests are served */
    nm_batcher_t *batcher;
    nm_sync_t *sync;
    nm_parked_t *parked;        /* requests that arrived before the first load */
    nm_parked_t **parked_tail;
    nm_arena_t scratch;         /* for one reply or publication at a time (reset after each) */
} nm_state_t;

/* naming_worker.c: publish NamingChange for m->touched (and the namespace
 * list when it changed) with publication number seq, then clear. */
void nm_publish(nm_state_t *st, uint64_t seq);
/* naming_worker.c: the first load finished. */
void nm_loaded(nm_state_t *st);

/* naming_batch.c */
nm_batcher_t *nm_batcher_new(nm_state_t *st);
void nm_batcher_free(nm_batcher_t *b);
/* Take a write request (ownership passes: freed with
 * lodestar__naming_write_request__free_unpacked); answers it later on conn. */
void nm_batcher_submit(nm_batcher_t *b, ipc_conn_t *conn, uint64_t request_id, Lodestar__NamingWriteRequest *req);
/* The connection closed: drop answers owed to it. */
void nm_batcher_forget_conn(nm_batcher_t *b, ipc_conn_t *conn);
/* Commit everything queued as soon as possible; done() when the queue is
 * empty and nothing is in flight. */
void nm_batcher_flush_all(nm_batcher_t *b, void (*done)(void *arg), void *arg);

/* naming_sync.c */
nm_sync_t *nm_sync_new(nm_state_t *st);
void nm_sync_free(nm_sync_t *s);
/* The store came up (first time: full load; later: resync) or went down. */
void nm_sync_store_state(nm_sync_t *s, bool up);
/* Ask PostgreSQL for a fresh publication number and publish m->touched
 * with it (used after applying other nodes' rows). */
void nm_sync_publish_remote(nm_sync_t *s);

#endif

/*
 * config_worker.h: the config worker's parts, shared by its files:
 *   config_worker.c  the domain hooks, loading and polling PostgreSQL,
 *                    pushing changes, requests waiting for the first load
 *   config_write.c   ConfigWriteRequest: validation, one store call, answer
 *   config_query.c   ConfigQueryRequest and ConfigSnapshotRequest
 *
 * Rules:
 *  - The model (core/cc_model.h) changes only from rows PostgreSQL returned;
 *    every change of what clients read is pushed on topic "config" before
 *    the write that caused it is answered.
 *  - A request answered later (after a store query) keeps its connection in
 *    a cw_call_t; when the connection closes first the call forgets it and
 *    the late answer is dropped.
 *  - Requests that arrive before the first load finished wait for it, in
 *    arrival order.
 */
#ifndef LODESTAR_CONFIG_WORKER_H
#define LODESTAR_CONFIG_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "cc_arena.h"
#include "cc_model.h"
#include "worker.h"

#define CW_TOPIC "config"
#define CW_MAX_BATCH 100       /* items per write request */
#define CW_DEFAULT_LIMIT 100   /* query page size when none is given */
#define CW_MAX_LIMIT 1000

typedef struct cw cw_t;

/* A request being answered after a store round trip. */
typedef struct cw_call {
    cw_t *cw;
    ipc_conn_t *conn;          /* NULL once the asking connection closed */
    uint64_t request_id;
    struct cw_call *next;
    void *data;                /* the handler's own state */
} cw_call_t;

/* A request that arrived before the first load: kept packed. */
typedef struct cw_deferred {
    ipc_conn_t *conn;
    uint64_t request_id;
    uint8_t *bytes;
    size_t len;
    struct cw_deferred *next;
} cw_deferred_t;

struct cw {
    worker_t *w;
    cc_model_t *model;
    uint32_t max_content;      /* effective content limit (bytes) */
    uint32_t max_frame;
    int sync_interval_ms;
    int retention_s;
    bool loaded;               /* the first full load finished */
    bool store_seen_up;        /* the store was up before (a later up reloads) */
    bool reload_wanted;        /* the next poll is a full reload */
    bool poll_in_flight;
    char since[32];            /* xid8: the previous poll's snapshot xmin */
    struct event *poll_ev;
    struct event *purge_ev;
    cw_call_t *calls;
    cw_deferred_t *deferred, *deferred_tail;
    uint64_t pushes;           /* ConfigChange messages published */
};

/* Calls: create (linked into cw->calls), then finish exactly once. */
cw_call_t *cw_call_new(cw_t *cw, ipc_conn_t *conn, uint64_t request_id, void *data);
/* Unlink and free the call (not its data). Returns the connection to answer
 * on, or NULL when it went away. */
ipc_conn_t *cw_call_finish(cw_call_t *call);

/* Apply the rows of a store result (columns kind, data::text) to the model:
 * groups, then files, then releases. Rows of kind 'xmin' set *xmin (may be
 * NULL), 'result' rows are handed to on_result (may be NULL). Returns 0, or
 * a negative code when a row did not apply (a reload is then scheduled). */
int cw_apply_result(cw_t *cw, PGresult *res, void (*on_result)(void *arg, json_t *row), void *arg, char *xmin,
                    size_t xminlen);
/* Push every pending change of what clients read (ConfigChange on "config"). */
void cw_push_changes(cw_t *cw);

/* The handlers; req is the whole envelope (freed by the caller on return). */
void cw_handle_write(cw_t *cw, ipc_conn_t *conn, uint64_t request_id, const Lodestar__ConfigWriteRequest *req);
void cw_handle_query(cw_t *cw, ipc_conn_t *conn, uint64_t request_id, const Lodestar__ConfigQueryRequest *req);
void cw_handle_snapshot(cw_t *cw, ipc_conn_t *conn, uint64_t request_id, const Lodestar__ConfigSnapshotRequest *req);

/* '*' matches any run of characters; anything else must be equal. */
bool cw_glob(const char *pattern, const char *s);

#endif

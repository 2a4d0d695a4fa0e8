/*
 * config.h: the typed configuration of a Lodestar node, parsed from YAML.
 *
 * The supervisor parses and validates the file; every child receives the
 * exact bytes the supervisor validated (a sealed memfd on fd 3) and parses
 * them again with cfg_load_buffer(), so parent and children never disagree
 * even if the file changes on disk in between.
 *
 * Rules kept by the parser (config.c):
 *  - unknown keys and wrong types are errors;
 *  - every error names the file, line, column and the key path, e.g.
 *      lodestar.yaml:12:11: listeners[1].port: expected an integer 1..65535, got "http"
 *  - all errors are collected (--check-config prints every one);
 *  - relative paths resolve against the config file's directory;
 *  - "${NAME}" inside a string is replaced by the environment variable NAME
 *    (an unset variable is an error naming it); LODESTAR_PG_DSN, when set,
 *    overrides store.dsn.
 * See deploy/lodestar.yaml for the documented example.
 */
#ifndef LODESTAR_CONFIG_H
#define LODESTAR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CFG_MAX_ERRORS 64

/* Collected parse/validation errors, each a full line "file:line:col: key: reason". */
typedef struct cfg_errors {
    size_t count;
    char *msgs[CFG_MAX_ERRORS];
    size_t dropped; /* errors beyond CFG_MAX_ERRORS */
} cfg_errors_t;

typedef struct cfg_log {
    int level;  /* enum log_level */
    char *file; /* absolute path, or NULL for stderr */
} cfg_log_t;

/* logging.processes.<role>: overrides for one process (role names as in
 * cfg_listener.protocol, "naming", "config", "health" or "supervisor"). */
typedef struct cfg_process_log {
    char *role;
    cfg_log_t log;
} cfg_process_log_t;

/* One listening TCP socket. The supervisor binds it and hands it to the
 * gateway process of its protocol; all listeners sharing a protocol are
 * served by the same gateway process. */
typedef struct cfg_listener {
    char *name;     /* unique, e.g. "polaris-grpc-naming" */
    char *protocol; /* "polaris-http", "polaris-grpc", later "eureka", "nacos", ... */
    char *address;  /* "0.0.0.0", "127.0.0.1", "::" */
    int port;       /* 1..65535 */
    bool enabled;
} cfg_listener_t;

typedef struct cfg_worker {
    bool enabled;
} cfg_worker_t;

/* workers.naming: the naming worker's own settings (besides `enabled`). */
typedef struct cfg_naming_worker {
    bool auto_create_namespace; /* create a namespace on first use (default true) */
    bool auto_create_service;   /* create a service on its first registration (default true) */
    int batch_max;              /* batch.max_batch: operations per transaction (default 128) */
    int batch_wait_ms;          /* batch.wait_ms: longest wait before a partial batch commits (default 32) */
    int batch_queue_size;       /* batch.queue_size: queued operations before 429001 (default 10240) */
    int sync_interval_ms;       /* poll for other nodes' changes (default 250) */
    int deleted_retention_s;    /* soft-deleted rows are hard-deleted after this (default 3600) */
} cfg_naming_worker_t;

/* workers.config: the config worker's own settings (besides `enabled`). */
typedef struct cfg_config_worker {
    uint32_t max_content_bytes; /* largest config file content in bytes (default 20000, Polaris' contentMaxLength) */
    int sync_interval_ms;       /* poll for other nodes' changes (default 250) */
    int deleted_retention_s;    /* tombstones of groups and releases are purged after this (default 3600) */
} cfg_config_worker_t;

typedef struct cfg_supervisor {
    int shutdown_timeout_ms;       /* SIGTERM -> SIGKILL escalation bound (default 8000) */
    int drain_timeout_ms;          /* a child's own drain bound (default 5000) */
    int restart_backoff_initial_ms;/* first restart delay (default 100) */
    int restart_backoff_max_ms;    /* cap (default 30000) */
    int crash_loop_window_ms;      /* window for counting crashes (default 60000) */
    int crash_loop_max;            /* crashes within the window before throttling to max backoff (default 5) */
    int ready_timeout_ms;          /* child must report ready within this (default 60000) */
    int ping_interval_ms;          /* supervisor -> child liveness probe period (default 2000) */
} cfg_supervisor_t;

typedef struct cfg_ipc {
    uint32_t max_frame_bytes; /* default 16 MiB */
    int request_timeout_ms;   /* default 5000 */
} cfg_ipc_t;

typedef struct cfg_embedded_pg {
    char *data_dir; /* absolute; default <config dir>/data/postgres */
    char *bin_dir;  /* default /usr/lib/postgresql/15/bin */
    char *user;     /* OS user PostgreSQL runs as when Lodestar runs as root (default "postgres") */
    int port;       /* names the socket file only; no TCP (default 5432) */
} cfg_embedded_pg_t;

typedef struct cfg_store {
    char *dsn; /* NULL = embedded private PostgreSQL */
    cfg_embedded_pg_t embedded;
    int connect_timeout_ms;     /* default 5000 */
    int reconnect_backoff_max_ms; /* default 5000 */
} cfg_store_t;

typedef enum cfg_hc_store { CFG_HC_MEMORY = 0, CFG_HC_REDIS = 1 } cfg_hc_store_t;

typedef struct cfg_healthcheck {
    bool enabled;
    cfg_hc_store_t store;
    char *redis_address; /* "host:port" or "unix:/path"; required when store is redis */
    char *redis_password;
    int redis_db;
    char *redis_key_prefix;        /* redis.key_prefix: every key starts with it (default "lodestar:") */
    int redis_timeout_ms;          /* redis.timeout_ms: unanswered this long = store unreachable (default 2000) */
    int slot_num;                  /* time wheel slots (default 30, Polaris' slotNum) */
    int min_check_interval_ms;     /* shortest delay between two checks of an instance (default 1000) */
    int max_check_interval_ms;     /* longest delay; the wheel spans it (default 30000) */
    int protect_threshold_percent; /* never more than this % of a service's instances unhealthy; 0 = off */
    int restart_grace_ms;          /* after a (re)start nothing is marked unhealthy before this (and 3 x TTL) */
    bool cleanup_enabled;          /* cleanup.enabled: delete long-unhealthy instances (default false) */
    int cleanup_unhealthy_for_s;   /* cleanup.unhealthy_for_s: unhealthy this long -> deregistered (default 3600) */
    char *cluster_node_id;         /* cluster.node_id: this node's name in Redis; NULL = hostname + runtime_dir */
    int cluster_announce_ttl_ms;   /* cluster.announce_ttl_ms: a silent node is dead after this (default 5000) */
} cfg_healthcheck_t;

typedef struct cfg {
    char *path;        /* absolute path of the file this came from */
    char *base_dir;    /* its directory; relative paths resolve against it */
    char *runtime_dir; /* absolute; default <base_dir>/run */

    cfg_log_t log;
    cfg_process_log_t *proc_logs;
    size_t n_proc_logs;

    cfg_supervisor_t supervisor;
    cfg_ipc_t ipc;
    cfg_store_t store;
    cfg_healthcheck_t healthcheck;

    cfg_worker_t naming, config, health;
    cfg_naming_worker_t naming_worker; /* workers.naming.* beyond enabled */
    cfg_config_worker_t config_worker; /* workers.config.* beyond enabled */

    cfg_listener_t *listeners;
    size_t n_listeners;
} cfg_t;

/* Parse a file. On success returns 0 and *out (free with cfg_free).
 * On failure returns -1, *out is NULL and errs holds every error. */
int cfg_load_file(const char *path, cfg_t **out, cfg_errors_t *errs);

/* Parse bytes that came from `path` (used for messages and to resolve
 * relative paths; the file itself is not read). Same contract as above. */
int cfg_load_buffer(const char *buf, size_t len, const char *path, cfg_t **out, cfg_errors_t *errs);

void cfg_free(cfg_t *cfg);
void cfg_errors_clear(cfg_errors_t *errs);

/* The log settings for a process role: the override when present, else the global. */
const cfg_log_t *cfg_log_for(const cfg_t *cfg, const char *role);

/* The libpq connection string workers use: store.dsn, or the embedded
 * instance's socket ("host=<runtime_dir>/pg port=<port> dbname=lodestar user=lodestar").
 * Returns a malloc'd string. */
char *cfg_store_dsn(const cfg_t *cfg);

/* Directory holding the embedded PostgreSQL's Unix socket: <runtime_dir>/pg. malloc'd. */
char *cfg_pg_socket_dir(const cfg_t *cfg);

/* Path of a worker's IPC socket: <runtime_dir>/<role>.sock. malloc'd. */
char *cfg_ipc_path(const cfg_t *cfg, const char *role);

/* Path of the supervisor's control socket: <runtime_dir>/control.sock. malloc'd. */
char *cfg_control_path(const cfg_t *cfg);

/* True when two listeners would need a different socket (address/port changed). */
bool cfg_listener_socket_differs(const cfg_listener_t *a, const cfg_listener_t *b);

#endif

/*
 * lstest.h: integration-test harness. Starts the real supervisor
 * (build/bin/lodestar) on a temporary YAML file in a temporary directory,
 * with its private PostgreSQL, on free loopback ports, and talks to it the
 * way an operator and a client would: the control socket, signals, HTTP and
 * gRPC on the real ports.
 */
#ifndef LODESTAR_LSTEST_H
#define LODESTAR_LSTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "ipc.pb-c.h"

typedef struct lstest {
    char dir[256];       /* temporary directory (removed by lstest_stop) */
    char config[512];    /* the YAML file */
    char log[512];       /* supervisor's stdout+stderr */
    char runtime[512];   /* runtime_dir */
    int http_port;       /* polaris-http */
    int grpc_port;       /* polaris-grpc naming */
    int grpc_config_port;/* polaris-grpc config */
    pid_t pid;           /* supervisor */
    int exit_status;     /* after lstest_stop: exit code, or 128+signal */
    char logging_extra[256]; /* lines added under `logging:` (indented two spaces) */
    char dsn[512];       /* when set: an external PostgreSQL (store.dsn) instead of the private one */
} lstest_t;

/* A free TCP port on 127.0.0.1 (bound and released). */
int lstest_free_port(void);

/* Write the YAML: runtime dir, private PostgreSQL data dir, the three
 * listeners on fresh ports, fast restart/ping timings; `extra` is appended
 * verbatim (top-level YAML keys), may be NULL. */
void lstest_write_config(lstest_t *t, const char *extra);

/* Create the temp dir and paths, pick ports, write the config (no start). */
void lstest_prepare(lstest_t *t, const char *extra);

/* Create the temp dir, write the config, start the supervisor and wait
 * until every process is ready (bounded by timeout_ms). Criterion-asserts. */
void lstest_start(lstest_t *t, const char *extra, int timeout_ms);
/* Start without waiting (for tests that expect a failure or watch startup). */
pid_t lstest_spawn(lstest_t *t, char *const extra_env[]);

/* Ask the control socket. Returns NULL when it does not answer. Free with
 * lodestar__status_response__free_unpacked(r, NULL). */
Lodestar__StatusResponse *lstest_status(const lstest_t *t, int timeout_ms);
/* pid of a role ("naming", "polaris-http", "postgres"), 0 if not running. */
pid_t lstest_pid(const lstest_t *t, const char *role);
/* Wait until the supervisor runs and every process is ready; true if so. */
bool lstest_wait_ready(const lstest_t *t, int timeout_ms);
/* Wait until `role` runs with a pid other than old_pid and is ready. Returns the new pid or 0. */
pid_t lstest_wait_restarted(const lstest_t *t, const char *role, pid_t old_pid, int timeout_ms);

/* SIGTERM the supervisor, wait up to timeout_ms; returns its exit code (or
 * 128+signal, or -1 on timeout, after which it is SIGKILLed). */
int lstest_stop(lstest_t *t, int timeout_ms);
/* Remove the temporary directory (PostgreSQL files included). */
void lstest_cleanup(lstest_t *t);

/* Blocking HTTP/1.0 GET on 127.0.0.1:port. Returns the status code (or
 * -errno) and the body in *body (malloc'd, may be NULL). */
int lstest_http_get(int port, const char *path, char **body, int timeout_ms);
/* An HTTP answer as received by lstest_http / lstest_http_raw. */
typedef struct lstest_http_resp {
    int status;       /* HTTP status of the first answer, or -errno */
    char *headers;    /* its header lines (without the status line), "Name: value\r\n" each */
    char *body;       /* its body (NUL-terminated; body_len bytes) */
    size_t body_len;
    char *raw;        /* every byte read until the server closed (NUL-terminated) */
    size_t raw_len;
} lstest_http_resp_t;

/* One blocking HTTP/1.1 request on 127.0.0.1:port with "Connection:
 * close": method, path (with any query string), and a body of body_len
 * bytes with its content type (content_type NULL: application/json; body
 * NULL: no body, no Content-Length). Reads until the server closes; a
 * server that closes while the body is still being sent does not kill the
 * caller (no SIGPIPE) and its answer is still read. Returns resp->status.
 * Free with lstest_http_resp_free. */
int lstest_http(int port, const char *method, const char *path, const char *content_type, const char *body,
                size_t body_len, lstest_http_resp_t *resp, int timeout_ms);
/* The same with the request's bytes given as they are (malformed requests,
 * pipelining); the first answer is parsed, every byte is in resp->raw. */
int lstest_http_raw(int port, const void *request, size_t len, lstest_http_resp_t *resp, int timeout_ms);
/* A header of the first answer (name case-insensitive): malloc'd value or NULL. */
char *lstest_http_header(const lstest_http_resp_t *resp, const char *name);
void lstest_http_resp_free(lstest_http_resp_t *resp);

/* One TCP connect to 127.0.0.1:port: 0, or -errno (-ECONNREFUSED). */
int lstest_connect(int port, int timeout_ms);

/* Processes whose command line mentions `needle` (e.g. the temp dir), for
 * orphan checks. Returns how many, excluding the caller. */
int lstest_count_procs_matching(const char *needle);
/* True if the file contains the text. */
bool lstest_file_contains(const char *path, const char *needle);
/* Sleep milliseconds. */
void lstest_sleep_ms(int ms);
/* Monotonic milliseconds. */
long long lstest_now_ms(void);

#endif

/*
 * ph.h: what the files of the polaris-http gateway share (internal to
 * gateways/polaris_http/; nothing outside includes it).
 *
 *  - polaris_http.c: the role (init, drain, fini), listeners, router, /healthz
 *  - ph_body.c: the input guard bounding request heads and bodies
 *  - ph_reply.c: JSON answers, Polaris codes, body and query parsing
 *  - ph_worker.c: requests to the workers on behalf of an HTTP request
 *  - client_api.c: the Polaris client API (/v1/...) but Discover
 *  - ph_discover.c: /v1/Discover from the naming replica
 *  - openapi_naming.c: the OpenAPI (/core/v1/namespaces, /naming/v1/...)
 *
 * Rules kept across them:
 *  - every answer is JSON with Content-Type application/json; Polaris
 *    answers carry the HTTP status given by the code's first three digits
 *    (polaris_http_status), and X-Polaris-Code / X-Polaris-Message when the code
 *    is not 200000;
 *  - message bodies are the proto3 JSON mapping produced and parsed by
 *    pbjson only (no per-message JSON code); client input is parsed with
 *    PBJSON_IGNORE_UNKNOWN, answers are written with PBJSON_EMIT_DEFAULTS as
 *    the Polaris server does;
 *  - a request waiting on a worker is counted in ph_state_t.waiting until
 *    its answer is handed to evhttp, so the drain knows when it may leave.
 */
#ifndef LODESTAR_POLARIS_HTTP_PH_H
#define LODESTAR_POLARIS_HTTP_PH_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "polaris_code.h"
#include "child.h"
#include "common/gateway.h"
#include "ipc.h"
#include "polaris_code.pb-c.h"

#define PH_ROLE "polaris-http"
#define PH_ORIGIN "polaris"
/* Request bodies above this are refused with a JSON 400 (ph_body.c). */
#define PH_MAX_BODY (1024 * 1024)
/* A request line plus headers above this is refused likewise. */
#define PH_MAX_HEADERS (16 * 1024)
/* Items in one OpenAPI batch (Polaris: 100). */
#define PH_MAX_BATCH 100
/* OpenAPI list paging (Polaris: offset 0, limit 100, at most 100). */
#define PH_DEFAULT_LIMIT 100
#define PH_MAX_LIMIT 100

/* The message an endpoint answers with; errors found before a worker is
 * asked are answered with the same message type, holding code and info. */
typedef enum ph_kind {
    PH_KIND_PLAIN = 0,   /* /healthz: not a Polaris message */
    PH_KIND_RESPONSE,    /* v1.Response */
    PH_KIND_BATCH_WRITE, /* v1.BatchWriteResponse */
    PH_KIND_BATCH_QUERY, /* v1.BatchQueryResponse */
    PH_KIND_DISCOVER,    /* v1.DiscoverResponse */
} ph_kind_t;

typedef struct ph_state {
    child_t *c;
    gw_t *gw; /* NULL once freed at the drain bound */
    struct evhttp *http;
    struct evhttp_bound_socket **bound;
    size_t n_bound;
    size_t waiting;  /* requests waiting for the workers' answers */
    size_t flushing; /* answers handed to evhttp, not yet written out */
    bool draining;
    bool settled; /* the settle period after the drain began has passed */
    bool drained;
    int request_timeout_ms; /* bound of one worker request */
    struct event *flush_timer;
    struct event *drain_bound_timer;
    struct event *settle_timer;
} ph_state_t;

typedef struct ph_route ph_route_t;

/* One HTTP request being handled. */
typedef struct ph_call {
    ph_state_t *st;
    struct evhttp_request *req;
    const ph_route_t *route;
    const char *path;
    const char *body; /* request body bytes (not NUL-terminated), NULL if none */
    size_t body_len;
} ph_call_t;

typedef void (*ph_handler_fn)(ph_call_t *call);

struct ph_route {
    const char *path;
    enum evhttp_cmd_type method;
    ph_kind_t kind;
    ph_handler_fn fn;
};

/* Route tables of the API files, each ending with a {NULL} row. */
extern const ph_route_t ph_client_routes[];
extern const ph_route_t ph_openapi_routes[];
/* config_api.c (/v1/GetConfigFile, /v1/WatchConfigFile) and
 * openapi_config.c (/config/v1/...). */
extern const ph_route_t ph_config_client_routes[];
extern const ph_route_t ph_config_openapi_routes[];

/* ------------------------------------------------------------ ph_body.c */

/* The marker header the input guard adds to a request whose head or body
 * it refused; its value is the reason. A client cannot send it: the guard
 * removes it from every incoming head. */
#define PH_REJECT_HEADER "X-Lodestar-Rejected"

/* evhttp_set_bevcb callback: a socket bufferevent whose input is guarded. */
struct bufferevent *ph_body_bevcb(struct event_base *base, void *arg);

/* ----------------------------------------------------------- ph_reply.c */


/* Answer with `body` (reference stolen) as JSON. */
void ph_reply_json(ph_state_t *st, struct evhttp_request *req, int status, json_t *body);
/* Answer with JSON text already encoded (copied). */
void ph_reply_text(ph_state_t *st, struct evhttp_request *req, int status, uint32_t code, const char *text,
                   size_t len);
/* Answer with a Polaris message whose code is `code` (status from it). */
void ph_reply_message(ph_state_t *st, struct evhttp_request *req, const ProtobufCMessage *msg, uint32_t code);
/* Answer the call's route kind with only code and info: info is Polaris'
 * text for the code, then ": " and the formatted detail when fmt is set. */
void ph_fail(ph_call_t *call, uint32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void ph_vfail(ph_state_t *st, struct evhttp_request *req, ph_kind_t kind, uint32_t code, const char *fmt,
              va_list ap) __attribute__((format(printf, 5, 0)));

/* Fill a wrapper the caller owns (usually on its stack) and return it. */
static inline Google__Protobuf__UInt32Value *ph_u32(Google__Protobuf__UInt32Value *w, uint32_t v)
{
    google__protobuf__uint32_value__init(w);
    w->value = v;
    return w;
}
static inline Google__Protobuf__StringValue *ph_str(Google__Protobuf__StringValue *w, const char *v)
{
    google__protobuf__string_value__init(w);
    w->value = (char *)v;
    return w;
}
#define PH_U32(w, v) ph_u32(&(w), (v))
#define PH_STR(w, v) ph_str(&(w), (v))

/* Parse the call's body as one message of `desc` (PBJSON_IGNORE_UNKNOWN).
 * On failure answers 400001 (or 400002 for an empty body) itself and
 * returns NULL. Free with protobuf_c_message_free_unpacked(m, NULL). */
ProtobufCMessage *ph_parse_one(ph_call_t *call, const ProtobufCMessageDescriptor *desc);
/* Parse the call's body as a JSON array of `desc` (1..PH_MAX_BATCH items).
 * On failure answers itself (400001, 400002 empty, 400003 too many) and
 * returns -1. Free with pbjson_free_array(*out, *n, NULL). */
int ph_parse_array(ph_call_t *call, const ProtobufCMessageDescriptor *desc, ProtobufCMessage ***out, size_t *n);

/* The request's query parameters, decoded, as Polaris reads them: the
 * first value of each name, except "keys" and "values" whose values are
 * joined with ",". */
typedef struct ph_query {
    size_t n;
    char **keys;
    char **values;
} ph_query_t;
/* 0, or -1 after answering 400103 (malformed query string) itself. */
int ph_query_parse(ph_call_t *call, ph_query_t *q);
const char *ph_query_get(const ph_query_t *q, const char *key);
/* Removes a parameter (offset and limit are not filters). */
void ph_query_remove(ph_query_t *q, const char *key);
void ph_query_free(ph_query_t *q);
/* Reads a non-negative decimal parameter; absent gives `def`. Returns 0,
 * or -1 with the reason in err. */
int ph_query_u32(const ph_query_t *q, const char *key, uint32_t def, uint32_t *out, char *err, size_t errlen);

/* ---------------------------------------------------------- ph_worker.c */

/* One request to a worker on behalf of an HTTP request (gw_request). `done`
 * runs once, from the event loop, with status as ipc_reply_cb has it (0
 * with a reply, or -ETIMEDOUT, -ECONNRESET, -ENOTCONN); it must answer the
 * HTTP request. ph_worker_request returns 0, or when nothing was sent (done
 * not called; the caller answers) -ENOENT (worker not enabled), -ESHUTDOWN
 * (gateway stopping), -EIO or -ENOMEM. */
typedef void (*ph_done_fn)(ph_call_t *call, int status, Lodestar__Envelope *reply, void *data);
int ph_worker_request(ph_call_t *call, const char *worker_role, const Lodestar__Envelope *env, ph_done_fn done,
                      void *data);
/* The Polaris answer for a failed worker request: status < 0 (as above), or
 * a reply that is an Error or not of the expected type. */
void ph_fail_worker(ph_call_t *call, const char *worker_role, int status, const Lodestar__Envelope *reply);

/* Send a NamingWriteRequest; the answer is the worker's BatchWriteResponse,
 * or for PH_KIND_RESPONSE routes its first Response. */
int ph_naming_write(ph_call_t *call, Lodestar__NamingWriteRequest *w);
/* Send a NamingQueryRequest; the answer is its BatchQueryResponse (or its
 * Response for PH_KIND_RESPONSE routes). */
int ph_naming_query(ph_call_t *call, Lodestar__NamingQueryRequest *q);

/* -------------------------------------------------------- ph_discover.c */

/* POST /v1/Discover, answered from the naming replica. */
void ph_discover(ph_call_t *call);

/* ------------------------------------------------------- polaris_http.c */

/* Once nothing waits on workers and every answer is written, finish the
 * drain (no-op unless draining). */
void ph_maybe_drained(ph_state_t *st);

#endif

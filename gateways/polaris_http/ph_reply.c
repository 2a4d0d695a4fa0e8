/*
 * ph_reply.c: how the polaris-http gateway answers and reads requests:
 * JSON replies (always application/json), Polaris codes and their HTTP
 * status (first three digits), the code texts Polaris puts into `info`,
 * request bodies through pbjson, and query parameters.
 *
 * Rules kept here:
 *  - bodies are decoded with PBJSON_IGNORE_UNKNOWN (Polaris ignores unknown
 *    fields) and answers encoded with PBJSON_EMIT_DEFAULTS (Polaris writes
 *    every field); a decode error is answered 400001 with pbjson's message,
 *    which names the field path or the JSON line and column;
 *  - an answer whose code is not 200000 carries X-Polaris-Code and
 *    X-Polaris-Message, as the Polaris server's do; a Request-Id header is
 *    echoed;
 *  - a request whose client went away is still "answered" (evhttp frees it);
 *    only answers on a live connection are counted as flushing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "pbjson.h"
#include "ph.h"

/* Polaris' own texts (common/api/v1 code2info) for the codes this gateway
 * and the naming worker answer most; others fall back to the enum name. */



/* ----------------------------------------------------------- replies */

static void ph_on_complete(struct evhttp_request *req, void *arg)
{
    (void)req;
    ph_state_t *st = arg;
    if (st->flushing)
        st->flushing--;
    ph_maybe_drained(st);
}

/* Hands `text` to evhttp with the common headers. code 0: not a Polaris
 * answer (no X-Polaris-* headers). */
static void ph_send(ph_state_t *st, struct evhttp_request *req, int status, uint32_t code, const char *text,
                    size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (code && code != V1__CODE__ExecuteSuccess) {
        char c[16];
        snprintf(c, sizeof c, "%u", code);
        evhttp_add_header(h, "X-Polaris-Code", c);
        evhttp_add_header(h, "X-Polaris-Message", polaris_code_info(code));
    }
    const char *rid = evhttp_find_header(evhttp_request_get_input_headers(req), "Request-Id");
    if (rid)
        evhttp_add_header(h, "Request-Id", rid);
    if (st->draining)
        evhttp_add_header(h, "Connection", "close");
    struct evbuffer *buf = evbuffer_new();
    if (!buf || (len && evbuffer_add(buf, text, len) < 0) || evbuffer_add(buf, "\n", 1) < 0) {
        log_error("HTTP answer: out of memory");
        if (buf)
            evbuffer_drain(buf, evbuffer_get_length(buf));
        status = 500;
    }
    /* A request whose client already left has no connection: evhttp frees
     * it on send and never reports completion. */
    if (evhttp_request_get_connection(req)) {
        st->flushing++;
        evhttp_request_set_on_complete_cb(req, ph_on_complete, st);
    }
    evhttp_send_reply(req, status, NULL, buf);
    if (buf)
        evbuffer_free(buf);
}

void ph_reply_json(ph_state_t *st, struct evhttp_request *req, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] = "{\"error\":\"out of memory\"}";
        ph_send(st, req, 500, 0, oom, sizeof oom - 1);
        return;
    }
    ph_send(st, req, status, 0, text, strlen(text));
    free(text);
}

void ph_reply_text(ph_state_t *st, struct evhttp_request *req, int status, uint32_t code, const char *text,
                   size_t len)
{
    ph_send(st, req, status, code, text, len);
}

void ph_reply_message(ph_state_t *st, struct evhttp_request *req, const ProtobufCMessage *msg, uint32_t code)
{
    char err[256] = "";
    char *text = NULL;
    size_t len = 0;
    if (pbjson_encode(msg, PBJSON_EMIT_DEFAULTS, &text, &len, err, sizeof err) < 0) {
        log_error("cannot encode the %s answer as JSON: %s", msg->descriptor->name, err);
        static const char fail[] = "{\"code\":500000,\"info\":\"execute exception: cannot encode the answer\"}";
        ph_send(st, req, 500, V1__CODE__ExecuteException, fail, sizeof fail - 1);
        return;
    }
    ph_send(st, req, polaris_http_status(code), code, text, len);
    free(text);
}

void ph_vfail(ph_state_t *st, struct evhttp_request *req, ph_kind_t kind, uint32_t code, const char *fmt, va_list ap)
{
    char info[1024];
    int n = snprintf(info, sizeof info, "%s", polaris_code_info(code));
    if (fmt && n >= 0 && (size_t)n < sizeof info - 2) {
        info[n++] = ':';
        info[n++] = ' ';
        vsnprintf(info + n, sizeof info - (size_t)n, fmt, ap);
    }
    Google__Protobuf__UInt32Value c;
    Google__Protobuf__StringValue i;
    switch (kind) {
    case PH_KIND_PLAIN: {
        json_t *o = json_object();
        if (o)
            json_object_set_new(o, "error", json_string(info));
        ph_reply_json(st, req, polaris_http_status(code), o);
        return;
    }
    case PH_KIND_RESPONSE: {
        V1__Response r = V1__RESPONSE__INIT;
        r.code = PH_U32(c, code);
        r.info = PH_STR(i, info);
        ph_reply_message(st, req, &r.base, code);
        return;
    }
    case PH_KIND_BATCH_WRITE: {
        V1__BatchWriteResponse r = V1__BATCH_WRITE_RESPONSE__INIT;
        r.code = PH_U32(c, code);
        r.info = PH_STR(i, info);
        ph_reply_message(st, req, &r.base, code);
        return;
    }
    case PH_KIND_BATCH_QUERY: {
        V1__BatchQueryResponse r = V1__BATCH_QUERY_RESPONSE__INIT;
        r.code = PH_U32(c, code);
        r.info = PH_STR(i, info);
        ph_reply_message(st, req, &r.base, code);
        return;
    }
    case PH_KIND_DISCOVER: {
        V1__DiscoverResponse r = V1__DISCOVER_RESPONSE__INIT;
        r.code = PH_U32(c, code);
        r.info = PH_STR(i, info);
        ph_reply_message(st, req, &r.base, code);
        return;
    }
    }
}

void ph_fail(ph_call_t *call, uint32_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ph_vfail(call->st, call->req, call->route ? call->route->kind : PH_KIND_RESPONSE, code, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------- bodies */

ProtobufCMessage *ph_parse_one(ph_call_t *call, const ProtobufCMessageDescriptor *desc)
{
    if (!call->body_len) {
        ph_fail(call, V1__CODE__ParseException, "the request body is empty; expected a JSON object");
        return NULL;
    }
    char err[512] = "";
    ProtobufCMessage *m = NULL;
    int rc = pbjson_decode(desc, call->body, call->body_len, PBJSON_IGNORE_UNKNOWN, NULL, &m, err, sizeof err);
    if (rc < 0) {
        if (rc == -ENOMEM)
            ph_fail(call, V1__CODE__ExecuteException, "out of memory");
        else
            ph_fail(call, V1__CODE__ParseException, "%s", err);
        return NULL;
    }
    return m;
}

int ph_parse_array(ph_call_t *call, const ProtobufCMessageDescriptor *desc, ProtobufCMessage ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!call->body_len) {
        ph_fail(call, V1__CODE__ParseException, "the request body is empty; expected a JSON array");
        return -1;
    }
    char err[512] = "";
    int rc =
        pbjson_decode_array(desc, call->body, call->body_len, PBJSON_IGNORE_UNKNOWN, NULL, out, n, err, sizeof err);
    if (rc < 0) {
        if (rc == -ENOMEM)
            ph_fail(call, V1__CODE__ExecuteException, "out of memory");
        else
            ph_fail(call, V1__CODE__ParseException, "%s", err);
        return -1;
    }
    if (*n == 0) {
        pbjson_free_array(*out, 0, NULL);
        *out = NULL;
        ph_fail(call, V1__CODE__EmptyRequest, "the JSON array has no items");
        return -1;
    }
    if (*n > PH_MAX_BATCH) {
        ph_fail(call, V1__CODE__BatchSizeOverLimit, "%zu items; at most %d are accepted in one request", *n,
                PH_MAX_BATCH);
        pbjson_free_array(*out, *n, NULL);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- queries */

static int ph_query_add(ph_query_t *q, const char *key, const char *value)
{
    for (size_t i = 0; i < q->n; i++) {
        if (strcmp(q->keys[i], key) != 0)
            continue;
        if (strcmp(key, "keys") != 0 && strcmp(key, "values") != 0)
            return 0; /* the first value wins */
        size_t a = strlen(q->values[i]), b = strlen(value);
        char *v = realloc(q->values[i], a + b + 2);
        if (!v)
            return -1;
        v[a] = ',';
        memcpy(v + a + 1, value, b + 1);
        q->values[i] = v;
        return 0;
    }
    char **k = realloc(q->keys, (q->n + 1) * sizeof *k);
    if (!k)
        return -1;
    q->keys = k;
    char **v = realloc(q->values, (q->n + 1) * sizeof *v);
    if (!v)
        return -1;
    q->values = v;
    q->keys[q->n] = strdup(key);
    q->values[q->n] = strdup(value);
    if (!q->keys[q->n] || !q->values[q->n]) {
        free(q->keys[q->n]);
        free(q->values[q->n]);
        return -1;
    }
    q->n++;
    return 0;
}

int ph_query_parse(ph_call_t *call, ph_query_t *q)
{
    memset(q, 0, sizeof *q);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(call->req);
    const char *qs = uri ? evhttp_uri_get_query(uri) : NULL;
    if (!qs || !*qs)
        return 0;
    struct evkeyvalq kv;
    TAILQ_INIT(&kv);
    if (evhttp_parse_query_str(qs, &kv) < 0) {
        evhttp_clear_headers(&kv);
        ph_fail(call, V1__CODE__InvalidParameter, "malformed query string");
        return -1;
    }
    int rc = 0;
    struct evkeyval *e;
    TAILQ_FOREACH(e, &kv, next)
    {
        if (ph_query_add(q, e->key, e->value ? e->value : "") < 0) {
            rc = -1;
            break;
        }
    }
    evhttp_clear_headers(&kv);
    if (rc < 0) {
        ph_query_free(q);
        ph_fail(call, V1__CODE__ExecuteException, "out of memory");
    }
    return rc;
}

const char *ph_query_get(const ph_query_t *q, const char *key)
{
    for (size_t i = 0; i < q->n; i++)
        if (!strcmp(q->keys[i], key))
            return q->values[i];
    return NULL;
}

void ph_query_remove(ph_query_t *q, const char *key)
{
    for (size_t i = 0; i < q->n; i++) {
        if (strcmp(q->keys[i], key) != 0)
            continue;
        free(q->keys[i]);
        free(q->values[i]);
        q->keys[i] = q->keys[q->n - 1];
        q->values[i] = q->values[q->n - 1];
        q->n--;
        return;
    }
}

void ph_query_free(ph_query_t *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->keys[i]);
        free(q->values[i]);
    }
    free(q->keys);
    free(q->values);
    memset(q, 0, sizeof *q);
}

int ph_query_u32(const ph_query_t *q, const char *key, uint32_t def, uint32_t *out, char *err, size_t errlen)
{
    const char *v = ph_query_get(q, key);
    if (!v) {
        *out = def;
        return 0;
    }
    uint64_t n = 0;
    size_t i = 0;
    for (; v[i] >= '0' && v[i] <= '9' && n <= UINT32_MAX; i++)
        n = n * 10 + (uint64_t)(v[i] - '0');
    if (i == 0 || v[i] != '\0' || n > UINT32_MAX) {
        snprintf(err, errlen, "%s: expected a non-negative integer up to %u, got \"%.64s\"", key, UINT32_MAX, v);
        return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

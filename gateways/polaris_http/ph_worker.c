/*
 * ph_worker.c: requests the polaris-http gateway sends to the workers on
 * behalf of an HTTP request, and how their outcomes become Polaris answers.
 *
 * Rules kept here:
 *  - every request is bounded by ipc.request_timeout_ms and counted in
 *    ph_state_t.waiting until its answer is handed to evhttp; the drain
 *    waits for that count (or frees the worker clients at its bound, which
 *    fails the requests with -ECONNRESET and so answers them);
 *  - the naming worker answers writes with a BatchWriteResponse holding one
 *    Response per item; a single-item client call (RegisterInstance, ...)
 *    answers that item's Response, a batch call the whole
 *    BatchWriteResponse; the HTTP status follows the answered code;
 *  - a worker that is missing, slow or gone is answered 500000
 *    ExecuteException (400401 ClientAPINotOpen when the worker is disabled)
 *    with the reason in info.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ph.h"

typedef struct ph_pending {
    ph_call_t call;
    ph_done_fn done;
    void *data;
} ph_pending_t;

static void ph_on_worker_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    ph_pending_t *p = arg;
    ph_state_t *st = p->call.st;
    st->waiting--;
    p->done(&p->call, status, reply, p->data);
    free(p);
    ph_maybe_drained(st);
}

int ph_worker_request(ph_call_t *call, const char *worker_role, const Lodestar__Envelope *env, ph_done_fn done,
                      void *data)
{
    ph_state_t *st = call->st;
    if (!st->gw)
        return -ESHUTDOWN;
    ph_pending_t *p = malloc(sizeof *p);
    if (!p)
        return -ENOMEM;
    *p = (ph_pending_t){.call = *call, .done = done, .data = data};
    /* the body is not needed any more once the request went out */
    p->call.body = NULL;
    p->call.body_len = 0;
    st->waiting++;
    int rc = gw_request(st->gw, worker_role, env, ph_on_worker_reply, p);
    if (rc < 0) {
        st->waiting--;
        free(p);
    }
    return rc;
}

void ph_fail_worker(ph_call_t *call, const char *worker_role, int status, const Lodestar__Envelope *reply)
{
    switch (status) {
    case 0:
        break;
    case -ENOENT:
        ph_fail(call, V1__CODE__ClientAPINotOpen, "the %s worker is not enabled", worker_role);
        return;
    case -ETIMEDOUT:
        ph_fail(call, V1__CODE__ExecuteException, "the %s worker did not answer within %d ms", worker_role,
                call->st->request_timeout_ms);
        return;
    case -ECONNRESET:
        ph_fail(call, V1__CODE__ExecuteException, "%s", call->st->gw ? "the connection to the worker was lost"
                                                                       : "the gateway is stopping");
        return;
    case -ENOTCONN:
        ph_fail(call, V1__CODE__ExecuteException, "the %s worker is not connected", worker_role);
        return;
    case -ESHUTDOWN:
        ph_fail(call, V1__CODE__ExecuteException, "the gateway is stopping");
        return;
    case -ENOMEM:
        ph_fail(call, V1__CODE__ExecuteException, "out of memory");
        return;
    default:
        ph_fail(call, V1__CODE__ExecuteException, "cannot send the request to the %s worker: %s", worker_role,
                strerror(-status));
        return;
    }
    if (reply && reply->body_case == LODESTAR__ENVELOPE__BODY_ERROR && reply->error) {
        const Lodestar__Error *e = reply->error;
        uint32_t code = e->code >= 200000 && e->code < 600000 ? (uint32_t)e->code : V1__CODE__ExecuteException;
        ph_fail(call, code, "%s", e->message && *e->message ? e->message : "the worker answered with an error");
        return;
    }
    ph_fail(call, V1__CODE__ExecuteException, "the %s worker answered with an unexpected %s message", worker_role,
            reply ? ipc_type_name(reply->body_case) : "empty");
}

static uint32_t ph_code_of(const Google__Protobuf__UInt32Value *c)
{
    return c ? c->value : V1__CODE__ExecuteException;
}

static void ph_on_write_done(ph_call_t *call, int status, Lodestar__Envelope *reply, void *data)
{
    (void)data;
    if (status != 0 || reply->body_case != LODESTAR__ENVELOPE__BODY_NAMING_WRITE_RESPONSE ||
        !reply->naming_write_response || !reply->naming_write_response->result) {
        ph_fail_worker(call, "naming", status, reply);
        return;
    }
    V1__BatchWriteResponse *r = reply->naming_write_response->result;
    if (call->route->kind == PH_KIND_RESPONSE) {
        if (r->n_responses >= 1 && r->responses[0]) {
            ph_reply_message(call->st, call->req, &r->responses[0]->base, ph_code_of(r->responses[0]->code));
            return;
        }
        /* no per-item answer: the batch's own code and info */
        V1__Response one = V1__RESPONSE__INIT;
        one.code = r->code;
        one.info = r->info;
        ph_reply_message(call->st, call->req, &one.base, ph_code_of(r->code));
        return;
    }
    ph_reply_message(call->st, call->req, &r->base, ph_code_of(r->code));
}

int ph_naming_write(ph_call_t *call, Lodestar__NamingWriteRequest *w)
{
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_WRITE_REQUEST;
    env.naming_write_request = w;
    if (!w->origin)
        w->origin = PH_ROLE;
    int rc = ph_worker_request(call, "naming", &env, ph_on_write_done, NULL);
    if (rc < 0)
        ph_fail_worker(call, "naming", rc, NULL);
    return rc;
}

static void ph_on_query_done(ph_call_t *call, int status, Lodestar__Envelope *reply, void *data)
{
    (void)data;
    const Lodestar__NamingQueryResponse *q =
        status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_NAMING_QUERY_RESPONSE ? reply->naming_query_response
                                                                                          : NULL;
    if (q && call->route->kind == PH_KIND_RESPONSE && q->response) {
        ph_reply_message(call->st, call->req, &q->response->base, ph_code_of(q->response->code));
        return;
    }
    if (q && call->route->kind != PH_KIND_RESPONSE && q->result) {
        ph_reply_message(call->st, call->req, &q->result->base, ph_code_of(q->result->code));
        return;
    }
    ph_fail_worker(call, "naming", status, reply);
}

int ph_naming_query(ph_call_t *call, Lodestar__NamingQueryRequest *q)
{
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_QUERY_REQUEST;
    env.naming_query_request = q;
    int rc = ph_worker_request(call, "naming", &env, ph_on_query_done, NULL);
    if (rc < 0)
        ph_fail_worker(call, "naming", rc, NULL);
    return rc;
}

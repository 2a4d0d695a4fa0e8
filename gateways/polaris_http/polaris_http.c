/*
 * polaris_http.c: the polaris-http gateway role. One evhttp server serves
 * every enabled listener whose protocol is polaris-http (by default 8090),
 * on the listening sockets the supervisor passed in: the Polaris client API
 * (client_api.c, ph_discover.c), the naming OpenAPI (openapi_naming.c) and
 * GET /healthz through the liveness chain (gw_check_workers). The files of
 * this folder share ph.h.
 *
 * Rules kept here:
 *  - the listening fds belong to the supervisor: evhttp gets them through
 *    evconnlistener without LEV_OPT_CLOSE_ON_FREE, so freeing the bound
 *    socket stops accepting but never closes the fd;
 *  - every answer is JSON, including 404, 405 and requests the input guard
 *    refused (ph_body.c marks them; they are answered 400 here with the
 *    reason, in the answer type of their route);
 *  - request bodies and heads are bounded (PH_MAX_BODY, PH_MAX_HEADERS) by
 *    the input guard under every connection; evhttp's own limits are set
 *    as a backstop;
 *  - drain: stop accepting; keep reading for PH_DRAIN_SETTLE_MS so that a
 *    request already on its way on a connection accepted just before is
 *    answered rather than cut off; let requests waiting on workers finish
 *    (their answers carry "Connection: close"); at the gateway's drain bound
 *    (gw_drain_bound_ms) the worker clients are freed, which answers every
 *    request still waiting as failed, so each client gets an answer instead
 *    of a reset; wait for the answers to be written out (bounded by
 *    PH_FLUSH_BOUND_MS), then child_drained().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <jansson.h>

#include "child.h"
#include "common/config_watch.h"
#include "common/gateway.h"
#include "common/roles.h"
#include "log.h"
#include "ph.h"

#define PH_IDLE_TIMEOUT_S 60
#define PH_FLUSH_BOUND_MS 1000
/* After the listeners stop, requests may still be on their way on
 * connections accepted just before: keep reading for this long. */
#define PH_DRAIN_SETTLE_MS 300

static void ph_healthz(ph_call_t *call);

static const ph_route_t ph_own_routes[] = {
    {"/healthz", EVHTTP_REQ_GET, PH_KIND_PLAIN, ph_healthz},
    {"/healthz", EVHTTP_REQ_HEAD, PH_KIND_PLAIN, ph_healthz},
    {NULL, 0, 0, NULL},
};

static const ph_route_t *const ph_tables[] = {ph_own_routes, ph_client_routes, ph_openapi_routes,
                                              ph_config_client_routes, ph_config_openapi_routes};

static const char *ph_method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    }
    return "?";
}

/* ------------------------------------------------------------- drain */

static void ph_finish_drain(ph_state_t *st, const char *how)
{
    if (st->drained)
        return;
    st->drained = true;
    log_info("drain: %s", how);
    child_drained(st->c);
}

static void ph_on_flush_bound(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ph_state_t *st = arg;
    ph_finish_drain(st, "answers not confirmed written within the flush bound");
}

static void ph_on_settled(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ph_state_t *st = arg;
    st->settled = true;
    ph_maybe_drained(st);
}

/* Requests still waiting on workers at the drain bound are answered now
 * (the worker clients fail them) rather than cut off. */
static void ph_on_drain_bound(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ph_state_t *st = arg;
    if (!st->waiting || !st->gw)
        return;
    log_warn("drain: bound reached; answering %zu request%s still waiting on workers", st->waiting,
             st->waiting == 1 ? "" : "s");
    gw_t *gw = st->gw;
    st->gw = NULL;
    gw_free(gw);
}

void ph_maybe_drained(ph_state_t *st)
{
    if (!st->draining || st->drained || !st->settled || st->waiting)
        return;
    if (st->flushing == 0) {
        ph_finish_drain(st, "every request answered");
        return;
    }
    if (!evtimer_pending(st->flush_timer, NULL)) {
        struct timeval tv = {PH_FLUSH_BOUND_MS / 1000, (PH_FLUSH_BOUND_MS % 1000) * 1000};
        evtimer_add(st->flush_timer, &tv);
    }
}

/* ----------------------------------------------------------- healthz */

typedef struct ph_health_wait {
    ph_state_t *st;
    struct evhttp_request *req;
} ph_health_wait_t;

static json_t *ph_error_body(const char *error, const char *method, const char *path)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "error", json_string(error));
    if (method)
        json_object_set_new(o, "method", json_string(method));
    if (path) {
        json_t *p = json_string(path); /* NULL when the path is not UTF-8 */
        if (p)
            json_object_set_new(o, "path", p);
    }
    return o;
}

static void ph_on_health(const gw_health_t *h, void *arg)
{
    ph_health_wait_t *p = arg;
    ph_state_t *st = p->st;
    json_t *workers = json_object();
    for (size_t i = 0; workers && i < h->n_workers; i++) {
        const gw_worker_status_t *w = &h->workers[i];
        json_t *o = json_object();
        if (!o)
            continue;
        json_object_set_new(o, "ok", json_boolean(w->ok));
        json_object_set_new(o, "store_ok", json_boolean(w->store_ok));
        if (w->ok && w->store_ok)
            json_object_set_new(o, "store_rtt_us", json_integer((json_int_t)w->store_rtt_us));
        else
            json_object_set_new(o, "reason", json_string(w->detail[0] ? w->detail : "unknown"));
        json_object_set_new(workers, w->role, o);
    }
    json_t *body = json_object();
    if (body) {
        json_object_set_new(body, "status", json_string(h->healthy ? "ok" : "unavailable"));
        json_object_set_new(body, "workers", workers);
    } else {
        json_decref(workers);
    }
    st->waiting--;
    ph_reply_json(st, p->req, h->healthy ? 200 : 503, body);
    free(p);
    ph_maybe_drained(st);
}

static void ph_healthz(ph_call_t *call)
{
    ph_state_t *st = call->st;
    int rc = -ESHUTDOWN; /* the worker clients are gone once the drain bound passed */
    if (st->gw) {
        ph_health_wait_t *p = malloc(sizeof *p);
        rc = -ENOMEM;
        if (p) {
            *p = (ph_health_wait_t){.st = st, .req = call->req};
            st->waiting++;
            rc = gw_check_workers(st->gw, ph_on_health, p);
            if (rc < 0) {
                st->waiting--;
                free(p);
            }
        }
    }
    if (rc < 0) {
        json_t *b = ph_error_body(rc == -ESHUTDOWN ? "gateway stopping" : "cannot check the workers", NULL, NULL);
        if (b)
            json_object_set_new(b, "status", json_string("unavailable"));
        ph_reply_json(st, call->req, 503, b);
    }
}

/* ------------------------------------------------------------ router */

static void ph_on_request(struct evhttp_request *req, void *arg)
{
    ph_state_t *st = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || !*path)
        path = "/";
    enum evhttp_cmd_type m = evhttp_request_get_command(req);

    const ph_route_t *match = NULL, *same_path = NULL;
    char allow[64] = "";
    for (size_t t = 0; t < sizeof ph_tables / sizeof ph_tables[0]; t++) {
        for (const ph_route_t *r = ph_tables[t]; r->path; r++) {
            if (strcmp(r->path, path) != 0)
                continue;
            if (!same_path)
                same_path = r;
            if (r->method == m)
                match = r;
            size_t used = strlen(allow);
            snprintf(allow + used, sizeof allow - used, "%s%s", used ? ", " : "", ph_method_name(r->method));
        }
    }

    ph_call_t call = {.st = st, .req = req, .route = match ? match : same_path, .path = path};
    const char *rejected = evhttp_find_header(evhttp_request_get_input_headers(req), PH_REJECT_HEADER);
    if (rejected) {
        ph_fail(&call, V1__CODE__BadRequest, "%s", rejected);
        return;
    }
    if (!same_path) {
        ph_reply_json(st, req, 404, ph_error_body("not found", NULL, path));
        return;
    }
    if (!match) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
        ph_reply_json(st, req, 405, ph_error_body("method not allowed", ph_method_name(m), path));
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in ? evbuffer_get_length(in) : 0;
    if (len) {
        call.body = (const char *)evbuffer_pullup(in, -1);
        if (!call.body) {
            ph_fail(&call, V1__CODE__ExecuteException, "out of memory");
            return;
        }
        call.body_len = len;
    }
    match->fn(&call);
}

/* ------------------------------------------------------------- role */

static int ph_serve_listener(const cfg_listener_t *l, int fd, void *arg, char *err, size_t errlen)
{
    (void)l;
    ph_state_t *st = arg;
    struct evhttp_bound_socket **arr = realloc(st->bound, (st->n_bound + 1) * sizeof *arr);
    if (!arr) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    st->bound = arr;
    /* backlog 0: already listening; no LEV_OPT_CLOSE_ON_FREE: the fd is the supervisor's */
    struct evconnlistener *lev = evconnlistener_new(st->c->base, NULL, NULL, LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    struct evhttp_bound_socket *b = lev ? evhttp_bind_listener(st->http, lev) : NULL;
    if (!b) {
        if (lev)
            evconnlistener_free(lev);
        snprintf(err, errlen, "cannot serve HTTP on fd %d", fd);
        return -1;
    }
    st->bound[st->n_bound++] = b;
    return 0;
}

static int ph_init(child_t *c)
{
    ph_state_t *st = calloc(1, sizeof *st);
    if (!st) {
        log_error("out of memory");
        return -1;
    }
    st->c = c;
    c->state = st;
    char err[512] = "";

    st->gw = gw_new(c->base, c->cfg, PH_ROLE, err, sizeof err);
    if (!st->gw) {
        log_error("cannot set up the worker clients: %s", err);
        return -1;
    }
    st->request_timeout_ms = gw_request_timeout_ms(st->gw);
    st->http = evhttp_new(c->base);
    st->flush_timer = evtimer_new(c->base, ph_on_flush_bound, st);
    st->drain_bound_timer = evtimer_new(c->base, ph_on_drain_bound, st);
    st->settle_timer = evtimer_new(c->base, ph_on_settled, st);
    if (!st->http || !st->flush_timer || !st->drain_bound_timer || !st->settle_timer) {
        log_error("cannot create the HTTP server");
        return -1;
    }
    /* The input guard (ph_body.c) enforces PH_MAX_BODY and PH_MAX_HEADERS
     * with JSON answers; evhttp's limits leave room for the lines it adds
     * and only act if a connection had to go without the guard. */
    evhttp_set_bevcb(st->http, ph_body_bevcb, st);
    evhttp_set_max_body_size(st->http, PH_MAX_BODY);
    evhttp_set_max_headers_size(st->http, 2 * PH_MAX_HEADERS);
    evhttp_set_timeout(st->http, PH_IDLE_TIMEOUT_S);
    evhttp_set_default_content_type(st->http, "application/json");
    /* Let every common method reach the router, which answers 405 itself. */
    evhttp_set_allowed_methods(st->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                             EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
                                             EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
    evhttp_set_gencb(st->http, ph_on_request, st);

    if (gw_each_listener(c, PH_ROLE, ph_serve_listener, st) < 0)
        return -1;
    child_ready(c);
    return 0;
}

static void ph_drain(child_t *c)
{
    ph_state_t *st = c->state;
    st->draining = true;
    /* parked config long polls are answered now (200001), so clients re-poll */
    if (st->gw)
        cwatch_flush(gw_config_watch(st->gw));
    /* Frees each listener (not its fd): new connections wait in the
     * supervisor's backlog for the next gateway process. */
    for (size_t i = 0; i < st->n_bound; i++)
        evhttp_del_accept_socket(st->http, st->bound[i]);
    st->n_bound = 0;
    log_info("drain: stopped accepting; %zu request%s waiting on workers", st->waiting,
             st->waiting == 1 ? "" : "s");
    int bound = gw_drain_bound_ms(c->cfg);
    struct timeval tv = {bound / 1000, (bound % 1000) * 1000};
    evtimer_add(st->drain_bound_timer, &tv);
    int settle = bound < PH_DRAIN_SETTLE_MS ? bound / 2 : PH_DRAIN_SETTLE_MS;
    struct timeval ts = {settle / 1000, (settle % 1000) * 1000};
    evtimer_add(st->settle_timer, &ts);
}

static void ph_fini(child_t *c)
{
    ph_state_t *st = c->state;
    if (!st)
        return;
    /* Worker clients first: requests still waiting answer while evhttp
     * still owns them. */
    gw_t *gw = st->gw;
    st->gw = NULL;
    gw_free(gw);
    if (st->http)
        evhttp_free(st->http);
    if (st->flush_timer)
        event_free(st->flush_timer);
    if (st->drain_bound_timer)
        event_free(st->drain_bound_timer);
    if (st->settle_timer)
        event_free(st->settle_timer);
    free(st->bound);
    free(st);
    c->state = NULL;
}

static bool ph_healthy(child_t *c, char *why, size_t whylen)
{
    ph_state_t *st = c->state;
    if (!st || !st->gw) {
        snprintf(why, whylen, st ? "draining" : "not initialised");
        return false;
    }
    return gw_healthy(st->gw, why, whylen);
}

const child_role_t polaris_http_role = {
    .name = PH_ROLE,
    .title = "polaris-http gateway",
    .init = ph_init,
    .drain = ph_drain,
    .fini = ph_fini,
    .healthy = ph_healthy,
};

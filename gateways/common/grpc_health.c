/*
 * grpc_health.c: see grpc_health.h. Check decodes HealthCheckRequest, runs
 * one liveness check per call and answers from its callback; the call
 * object stays valid until that answer (grpc_server.h).
 *
 * Watch keeps a list of watchers (one per stream). One timer drives one
 * shared liveness check at a time while watchers exist; each result is
 * compared with what every watcher was last told and sent only on change.
 * A watcher leaves the list in its stream's on_done, the only place the
 * call goes away, so the list never holds a dead call.
 */
#include "grpc_health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "health.pb-c.h"
#include "log.h"

#define ST_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define ST_NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define ST_SERVICE_UNKNOWN GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

typedef struct watcher {
    gs_call_t *call;
    bool subscribed; /* its request arrived */
    bool known;      /* the service is one we serve */
    int last;        /* status last sent, -1 none */
    struct watcher *prev, *next;
} watcher_t;

struct gw_health_watch {
    gw_grpc_health_t *h;
    struct event *timer;
    watcher_t *list;
    size_t n;
    bool checking;   /* a shared check is in flight */
    bool again;      /* a new watcher arrived during that check */
    bool shutdown;
    bool freed;      /* gw_grpc_health_free ran while a check was in flight */
};

static bool service_known(const gw_grpc_health_t *h, const char *name)
{
    if (!name || !*name)
        return true;
    for (size_t i = 0; h->services && h->services[i]; i++)
        if (strcmp(h->services[i], name) == 0)
            return true;
    return false;
}

static int pack_status(int status, uint8_t *buf, size_t cap, size_t *len)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = status;
    size_t n = grpc__health__v1__health_check_response__get_packed_size(&resp);
    if (n > cap)
        return -ENOSPC;
    grpc__health__v1__health_check_response__pack(&resp, buf);
    *len = n;
    return 0;
}

/* ------------------------------------------------------------- Check */

static void on_checked(const gw_health_t *health, void *arg)
{
    gs_call_t *call = arg;
    uint8_t buf[16];
    size_t n = 0;
    if (pack_status(health->healthy ? ST_SERVING : ST_NOT_SERVING, buf, sizeof buf, &n) < 0) {
        gs_reply(call, GS_INTERNAL, "health response does not fit", NULL, 0);
        return;
    }
    gs_reply(call, GS_OK, NULL, buf, n);
}

static void on_check(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    gw_grpc_health_t *h = arg;
    Grpc__Health__V1__HealthCheckRequest *r = grpc__health__v1__health_check_request__unpack(NULL, len, req);
    if (!r) {
        gs_reply(call, GS_INVALID_ARGUMENT, "HealthCheckRequest does not decode", NULL, 0);
        return;
    }
    bool known = service_known(h, r->service);
    if (!known) {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown service \"%.255s\"", r->service);
        grpc__health__v1__health_check_request__free_unpacked(r, NULL);
        gs_reply(call, GS_NOT_FOUND, msg, NULL, 0);
        return;
    }
    grpc__health__v1__health_check_request__free_unpacked(r, NULL);
    int rc = gw_check_workers(h->gw, on_checked, call);
    if (rc < 0)
        gs_reply(call, GS_UNAVAILABLE, rc == -ESHUTDOWN ? "gateway stopping" : "cannot check the workers", NULL, 0);
}

/* ------------------------------------------------------------- Watch */

static void watcher_tell(watcher_t *w, int status)
{
    if (w->last == status)
        return;
    uint8_t buf[16];
    size_t n = 0;
    if (pack_status(status, buf, sizeof buf, &n) == 0 && gs_stream_send(w->call, buf, n) == 0)
        w->last = status;
}

static void watch_start_check(struct gw_health_watch *wt);

static void on_watch_checked(const gw_health_t *health, void *arg)
{
    struct gw_health_watch *wt = arg;
    wt->checking = false;
    if (wt->freed) {
        free(wt);
        return;
    }
    for (watcher_t *w = wt->list; w; w = w->next) {
        if (!w->subscribed)
            continue;
        watcher_tell(w, !w->known ? ST_SERVICE_UNKNOWN : health->healthy ? ST_SERVING : ST_NOT_SERVING);
    }
    if (wt->again && !wt->shutdown) {
        wt->again = false;
        watch_start_check(wt);
    }
}

static void watch_start_check(struct gw_health_watch *wt)
{
    if (wt->checking) {
        wt->again = true;
        return;
    }
    if (wt->shutdown)
        return;
    wt->checking = true;
    if (gw_check_workers(wt->h->gw, on_watch_checked, wt) < 0)
        wt->checking = false;
}

static void on_watch_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_health_watch *wt = arg;
    if (wt->n == 0 || wt->shutdown)
        return;
    watch_start_check(wt);
    struct timeval tv = {GW_GRPC_HEALTH_WATCH_MS / 1000, (GW_GRPC_HEALTH_WATCH_MS % 1000) * 1000};
    evtimer_add(wt->timer, &tv);
}

static void watch_end(watcher_t *w)
{
    watcher_tell(w, ST_NOT_SERVING);
    gs_stream_finish(w->call, GS_UNAVAILABLE, "server draining");
}

static void on_watch_open(gs_call_t *call, void *arg)
{
    gw_grpc_health_t *h = arg;
    struct gw_health_watch *wt = h->watch;
    watcher_t *w = calloc(1, sizeof *w);
    if (!w) {
        gs_stream_finish(call, GS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->call = call;
    w->last = -1;
    w->next = wt->list;
    if (wt->list)
        wt->list->prev = w;
    wt->list = w;
    wt->n++;
    gs_call_set_user(call, w);
    if (wt->shutdown)
        watch_end(w);
}

static void on_watch_message(gs_call_t *call, const uint8_t *msg, size_t len, void *arg)
{
    gw_grpc_health_t *h = arg;
    struct gw_health_watch *wt = h->watch;
    watcher_t *w = gs_call_user(call);
    if (!w || w->subscribed)
        return; /* one request per Watch; anything after it is ignored */
    Grpc__Health__V1__HealthCheckRequest *r = grpc__health__v1__health_check_request__unpack(NULL, len, msg);
    if (!r) {
        gs_stream_finish(call, GS_INVALID_ARGUMENT, "HealthCheckRequest does not decode");
        return;
    }
    w->subscribed = true;
    w->known = service_known(h, r->service);
    grpc__health__v1__health_check_request__free_unpacked(r, NULL);
    if (!w->known)
        watcher_tell(w, ST_SERVICE_UNKNOWN);
    watch_start_check(wt);
    if (!evtimer_pending(wt->timer, NULL)) {
        struct timeval tv = {GW_GRPC_HEALTH_WATCH_MS / 1000, (GW_GRPC_HEALTH_WATCH_MS % 1000) * 1000};
        evtimer_add(wt->timer, &tv);
    }
}

/* The client half-closed after its request: keep streaming. */
static void on_watch_half_close(gs_call_t *call, void *arg) {}

static void on_watch_done(gs_call_t *call, bool cancelled, void *arg)
{
    gw_grpc_health_t *h = arg;
    struct gw_health_watch *wt = h->watch;
    watcher_t *w = gs_call_user(call);
    if (!w || !wt)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        wt->list = w->next;
    if (w->next)
        w->next->prev = w->prev;
    wt->n--;
    free(w);
    gs_call_set_user(call, NULL);
    if (wt->n == 0)
        evtimer_del(wt->timer);
}

int gw_grpc_health_register(gs_server_t *s, gw_grpc_health_t *h, char *err, size_t errlen)
{
    int rc = gs_server_add_unary(s, GW_GRPC_HEALTH_CHECK, on_check, h, err, errlen);
    if (rc < 0)
        return rc;
    struct gw_health_watch *wt = calloc(1, sizeof *wt);
    if (!wt || !(wt->timer = evtimer_new(gw_base(h->gw), on_watch_timer, wt))) {
        free(wt);
        snprintf(err, errlen, "%s: out of memory", GW_GRPC_HEALTH_WATCH);
        return -ENOMEM;
    }
    wt->h = h;
    h->watch = wt;
    gs_stream_handlers_t hs = {
        .on_open = on_watch_open,
        .on_message = on_watch_message,
        .on_half_close = on_watch_half_close,
        .on_done = on_watch_done,
    };
    return gs_server_add_stream(s, GW_GRPC_HEALTH_WATCH, &hs, h, err, errlen);
}

void gw_grpc_health_shutdown(gw_grpc_health_t *h)
{
    struct gw_health_watch *wt = h ? h->watch : NULL;
    if (!wt || wt->shutdown)
        return;
    wt->shutdown = true;
    evtimer_del(wt->timer);
    for (watcher_t *w = wt->list; w; w = w->next)
        watch_end(w);
}

void gw_grpc_health_free(gw_grpc_health_t *h)
{
    struct gw_health_watch *wt = h ? h->watch : NULL;
    if (!wt)
        return;
    h->watch = NULL;
    event_free(wt->timer);
    wt->timer = NULL;
    while (wt->list) {
        watcher_t *w = wt->list;
        wt->list = w->next;
        gs_call_set_user(w->call, NULL);
        free(w);
    }
    wt->n = 0;
    if (wt->checking)
        wt->freed = true; /* the check's callback frees it */
    else
        free(wt);
}

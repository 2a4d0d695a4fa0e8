/*
 * health_writes.c: the health checker's verdicts, sent to the naming worker
 * (the only writer of instances) over the health worker's naming client.
 *
 * Rules kept here:
 *  - verdicts queue by kind; one NamingWriteRequest is in flight at a time,
 *    carrying up to HW_SET_MAX instances (INSTANCE_SET_HEALTH: the naming
 *    worker takes them as independent items in one transaction) or
 *    HW_DEREG_MAX (INSTANCE_DEREGISTER: the naming worker's item limit);
 *    health verdicts go first, deregistrations after;
 *  - the naming worker publishes the change before it answers, on the same
 *    connection, so when the answer arrives the replica already shows the
 *    new state; only then is the core told the write is done
 *    (hc_core_write_done), and a beat that came meanwhile is honoured;
 *  - per item, 200000, 200002 (nothing to change) and 400303 (the instance
 *    is gone) count as done; anything else, or no answer, as failed: the
 *    core checks the instance again after min_check_interval_ms;
 *  - every verdict is logged at info with its reason, at most
 *    HW_LOG_LINES lines per request and a count for the rest.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "health.h"
#include "log.h"

#define HW_SET_MAX 1000
#define HW_DEREG_MAX 100
#define HW_LOG_LINES 20

typedef struct hw_item {
    char *id;
    hc_act_kind_t kind;
} hw_item_t;

typedef struct hw_queue {
    hw_item_t *v;
    size_t n, cap;
} hw_queue_t;

struct hw_writes {
    hw_t *hw;
    hw_queue_t health, dereg;
    bool in_flight;
    struct event *flush_ev;
    struct hw_sent *sent; /* the request in flight (NULL once its answer came) */
};

typedef struct hw_sent {
    hw_writes_t *wr;      /* NULL when the writer went away first */
    hw_item_t *items;
    size_t n;
    bool dereg;
} hw_sent_t;

static int queue_push(hw_queue_t *q, const char *id, hc_act_kind_t kind)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        hw_item_t *v = realloc(q->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        q->v = v;
        q->cap = cap;
    }
    char *copy = strdup(id);
    if (!copy)
        return -ENOMEM;
    q->v[q->n++] = (hw_item_t){.id = copy, .kind = kind};
    return 0;
}

static void items_free(hw_item_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].id);
    free(v);
}

static const char *kind_name(hc_act_kind_t k)
{
    return k == HC_ACT_UP ? "healthy" : k == HC_ACT_DOWN ? "unhealthy" : "deregistered";
}

static void flush_later(hw_writes_t *wr)
{
    if (!wr->in_flight && (wr->health.n || wr->dereg.n))
        event_active(wr->flush_ev, EV_TIMEOUT, 0);
}

/* Tell the core how each item ended; queue what it asks for next. */
static void settle(hw_writes_t *wr, hw_item_t *items, size_t n, const uint32_t *codes, size_t n_codes,
                   const char *failure)
{
    hw_t *hw = wr->hw;
    int64_t now = hw_now_ms();
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t code = codes && i < n_codes ? codes[i] : 0;
        bool ok = code == 200000 || code == 200002 || code == 400303;
        if (!ok) {
            if (failed < HW_LOG_LINES && failure)
                log_warn("instance %s could not be marked %s: %s", items[i].id, kind_name(items[i].kind), failure);
            else if (failed < HW_LOG_LINES)
                log_warn("instance %s could not be marked %s: the naming worker answered %u", items[i].id,
                         kind_name(items[i].kind), code);
            failed++;
        }
        hc_inst_t *in = hw->core ? hc_core_find(hw->core, items[i].id) : NULL;
        if (!in)
            continue;
        hc_act_kind_t next = hc_core_write_done(hw->core, in, ok, now);
        if (next != HC_ACT_NONE) {
            hc_action_t a = {.kind = next, .inst = in};
            hw_writes_queue(wr, &a);
        }
    }
    if (failed > HW_LOG_LINES)
        log_warn("... and %zu more verdicts failed", failed - HW_LOG_LINES);
}

static void on_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    hw_sent_t *s = arg;
    hw_writes_t *wr = s->wr;
    if (!wr) {
        items_free(s->items, s->n);
        free(s);
        return;
    }
    wr->sent = NULL;
    wr->in_flight = false;
    if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_NAMING_WRITE_RESPONSE &&
        reply->naming_write_response->result) {
        const V1__BatchWriteResponse *r = reply->naming_write_response->result;
        uint32_t *codes = calloc(s->n ? s->n : 1, sizeof *codes);
        if (codes)
            for (size_t i = 0; i < s->n && i < r->n_responses; i++)
                codes[i] = r->responses[i] && r->responses[i]->code ? r->responses[i]->code->value : 0;
        settle(wr, s->items, s->n, codes, codes ? s->n : 0, codes ? NULL : "out of memory");
        free(codes);
    } else {
        char why[300];
        if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_ERROR)
            snprintf(why, sizeof why, "naming worker refused: %s",
                     reply->error->message ? reply->error->message : "");
        else if (status == 0)
            snprintf(why, sizeof why, "naming worker answered %s", ipc_type_name(reply->body_case));
        else
            snprintf(why, sizeof why, "%s",
                     status == -ETIMEDOUT ? "no answer from the naming worker in time" : strerror(-status));
        settle(wr, s->items, s->n, NULL, 0, why);
    }
    items_free(s->items, s->n);
    free(s);
    flush_later(wr);
}

/* Log what one request decides. */
static void log_sent(const hw_t *hw, const hw_item_t *items, size_t n)
{
    size_t shown = 0;
    for (size_t i = 0; i < n && shown < HW_LOG_LINES; i++, shown++) {
        const hc_inst_t *in = hw->core ? hc_core_find(hw->core, items[i].id) : NULL;
        const char *ns = in && in->svc ? in->svc->ns : "?", *name = in && in->svc ? in->svc->name : "?";
        switch (items[i].kind) {
        case HC_ACT_DOWN:
            log_info("instance %s of %s/%s: unhealthy, no beat for %lld ms (TTL %lld s)", items[i].id, ns, name,
                     in ? (long long)(hw_now_ms() - (in->last_beat_ms ? in->last_beat_ms : in->floor_ms)) : 0LL,
                     in ? (long long)(in->ttl_ms / 1000) : 0LL);
            break;
        case HC_ACT_UP: log_info("instance %s of %s/%s: healthy again (beat received)", items[i].id, ns, name); break;
        default:
            log_notice("instance %s of %s/%s: deregistered by the clean-up job (unhealthy since %lld s)", items[i].id,
                       ns, name, in ? (long long)((hw_now_ms() - in->since_ms) / 1000) : 0LL);
            break;
        }
    }
    if (n > shown)
        log_info("... and %zu more verdicts", n - shown);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    hw_writes_t *wr = arg;
    hw_t *hw = wr->hw;
    if (wr->in_flight)
        return;
    bool dereg = wr->health.n == 0;
    hw_queue_t *q = dereg ? &wr->dereg : &wr->health;
    if (!q->n)
        return;
    size_t max = dereg ? HW_DEREG_MAX : HW_SET_MAX;
    size_t n = q->n < max ? q->n : max;
    hw_sent_t *s = calloc(1, sizeof *s);
    Lodestar__NamingInstance *nis = calloc(n, sizeof *nis);
    Lodestar__NamingInstance **nptr = calloc(n, sizeof *nptr);
    V1__Instance *ins = calloc(n, sizeof *ins);
    Google__Protobuf__StringValue *ids = calloc(n, sizeof *ids);
    Google__Protobuf__BoolValue *hs = calloc(n, sizeof *hs);
    if (!s || !nis || !nptr || !ins || !ids || !hs) {
        free(s);
        free(nis);
        free(nptr);
        free(ins);
        free(ids);
        free(hs);
        log_error("out of memory sending %zu verdicts; they go with the next one", n);
        return;
    }
    s->wr = wr;
    s->n = n;
    s->dereg = dereg;
    s->items = malloc(n * sizeof *s->items);
    if (!s->items) {
        free(s);
        free(nis);
        free(nptr);
        free(ins);
        free(ids);
        free(hs);
        return;
    }
    memcpy(s->items, q->v, n * sizeof *q->v);
    memmove(q->v, q->v + n, (q->n - n) * sizeof *q->v);
    q->n -= n;
    for (size_t i = 0; i < n; i++) {
        lodestar__naming_instance__init(&nis[i]);
        v1__instance__init(&ins[i]);
        google__protobuf__string_value__init(&ids[i]);
        ids[i].value = s->items[i].id;
        ins[i].id = &ids[i];
        if (!dereg) {
            google__protobuf__bool_value__init(&hs[i]);
            hs[i].value = s->items[i].kind == HC_ACT_UP;
            ins[i].healthy = &hs[i];
        }
        nis[i].instance = &ins[i];
        nptr[i] = &nis[i];
    }
    Lodestar__NamingWriteRequest req = LODESTAR__NAMING_WRITE_REQUEST__INIT;
    req.op = dereg ? LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_DEREGISTER
                   : LODESTAR__NAMING_WRITE_REQUEST__OP__INSTANCE_SET_HEALTH;
    req.n_instances = n;
    req.instances = nptr;
    req.origin = "health";
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_WRITE_REQUEST;
    env.naming_write_request = &req;
    log_sent(hw, s->items, n);
    int rc = hw->naming ? ipc_client_request(hw->naming, &env, hw->request_timeout_ms, on_reply, s) : -1;
    free(nis);
    free(nptr);
    free(ins);
    free(ids);
    free(hs);
    if (rc < 0) {
        settle(wr, s->items, s->n, NULL, 0, hw->naming ? "the request could not be queued" : "no naming worker");
        items_free(s->items, s->n);
        free(s);
        return;
    }
    wr->in_flight = true;
    wr->sent = s;
}

hw_writes_t *hw_writes_new(hw_t *hw)
{
    hw_writes_t *wr = calloc(1, sizeof *wr);
    if (!wr)
        return NULL;
    wr->hw = hw;
    wr->flush_ev = event_new(hw->base, -1, 0, on_flush, wr);
    if (!wr->flush_ev) {
        free(wr);
        return NULL;
    }
    return wr;
}

void hw_writes_free(hw_writes_t *wr)
{
    if (!wr)
        return;
    if (wr->sent)
        wr->sent->wr = NULL; /* its callback frees it */
    for (size_t i = 0; i < wr->health.n; i++)
        free(wr->health.v[i].id);
    for (size_t i = 0; i < wr->dereg.n; i++)
        free(wr->dereg.v[i].id);
    free(wr->health.v);
    free(wr->dereg.v);
    event_free(wr->flush_ev);
    free(wr);
}

void hw_writes_queue(hw_writes_t *wr, const hc_action_t *a)
{
    hw_queue_t *q = a->kind == HC_ACT_DELETE ? &wr->dereg : &wr->health;
    if (queue_push(q, a->inst->id, a->kind) < 0) {
        log_error("out of memory queueing a verdict for %s", a->inst->id);
        hc_core_write_done(wr->hw->core, a->inst, false, hw_now_ms());
        return;
    }
    flush_later(wr);
}

void hw_writes_queue_all(hw_writes_t *wr, const hc_actions_t *acts)
{
    for (size_t i = 0; i < acts->n; i++)
        hw_writes_queue(wr, &acts->v[i]);
}

size_t hw_writes_waiting(const hw_writes_t *wr) { return wr->health.n + wr->dereg.n + (wr->in_flight ? 1 : 0); }

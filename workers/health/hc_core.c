/*
 * hc_core.c: see hc_core.h for the rules. Tables: instances by id
 * (uthash), services by "namespace\0name" (uthash), each service's
 * instances in a list, and the unhealthy instances in one list so that the
 * clean-up job looks at the unhealthy ones only.
 */
#include "hc_core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

struct hc_core {
    hc_params_t p;
    hc_wheel_t wheel;
    hc_inst_t *insts;    /* by id */
    hc_svc_t *svcs;      /* by key */
    hc_inst_t *sick;     /* unhealthy instances */
    int64_t floor_ms;    /* start, or the heartbeat store's return */
    int64_t no_marks_before;
    uint64_t gen;        /* per sync call */
    uint64_t snap_gen;   /* per full resynchronisation */
    bool (*owns)(const char *id, void *arg);
    void *owns_arg;
    hc_stats_t stats;
    /* hc_core_tick's outputs while the wheel hands entries out */
    int64_t tick_now;
    hc_insts_t *tick_need;
    hc_actions_t *tick_acts;
};

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ------------------------------------------------------------ vectors */

int hc_actions_push(hc_actions_t *a, hc_act_kind_t kind, hc_inst_t *in, int64_t silent_ms)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        hc_action_t *v = realloc(a->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = (hc_action_t){.kind = kind, .inst = in, .silent_ms = silent_ms};
    return 0;
}

void hc_actions_free(hc_actions_t *a)
{
    free(a->v);
    memset(a, 0, sizeof *a);
}

int hc_insts_push(hc_insts_t *v, hc_inst_t *in)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        hc_inst_t **p = realloc(v->v, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = in;
    return 0;
}

void hc_insts_free(hc_insts_t *v)
{
    free(v->v);
    memset(v, 0, sizeof *v);
}

/* ----------------------------------------------------------- basics */

hc_core_t *hc_core_new(const hc_params_t *p, int64_t now_ms)
{
    hc_core_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->p = *p;
    if (c->p.slot_num < 2)
        c->p.slot_num = 2;
    if (c->p.max_interval_ms < 1)
        c->p.max_interval_ms = 1;
    if (c->p.min_interval_ms < 1)
        c->p.min_interval_ms = 1;
    if (c->p.min_interval_ms > c->p.max_interval_ms)
        c->p.min_interval_ms = c->p.max_interval_ms;
    int64_t tick = c->p.max_interval_ms / c->p.slot_num;
    if (hc_wheel_init(&c->wheel, c->p.slot_num, tick > 0 ? tick : 1, now_ms) < 0) {
        free(c);
        return NULL;
    }
    c->floor_ms = now_ms;
    c->no_marks_before = now_ms + (p->restart_grace_ms > 0 ? p->restart_grace_ms : 0);
    return c;
}

static void inst_destroy(hc_core_t *c, hc_inst_t *in)
{
    hc_wheel_remove(&c->wheel, &in->node);
    HASH_DEL(c->insts, in);
    if (in->svc) {
        DL_DELETE2(in->svc->insts, in, sprev, snext);
        if (in->pending == HC_ACT_DOWN && in->svc->pending_down)
            in->svc->pending_down--;
    }
    if (!in->healthy)
        DL_DELETE2(c->sick, in, uprev, unext);
    free(in->id);
    free(in);
}

static void svc_destroy(hc_core_t *c, hc_svc_t *s)
{
    hc_inst_t *in, *tmp;
    DL_FOREACH_SAFE2(s->insts, in, tmp, snext)
    {
        inst_destroy(c, in);
    }
    HASH_DEL(c->svcs, s);
    free(s->key);
    free(s);
}

void hc_core_free(hc_core_t *c)
{
    if (!c)
        return;
    hc_svc_t *s, *st;
    HASH_ITER(hh, c->svcs, s, st)
    {
        svc_destroy(c, s);
    }
    hc_inst_t *in, *it;
    HASH_ITER(hh, c->insts, in, it)
    {
        in->svc = NULL;
        inst_destroy(c, in);
    }
    hc_wheel_free(&c->wheel);
    free(c);
}

const hc_params_t *hc_core_params(const hc_core_t *c) { return &c->p; }
const hc_stats_t *hc_core_stats(const hc_core_t *c) { return &c->stats; }
size_t hc_core_count(const hc_core_t *c) { return HASH_COUNT(c->insts); }
size_t hc_core_wheel_count(const hc_core_t *c) { return c->wheel.count; }
uint64_t hc_core_wheel_visited(const hc_core_t *c) { return c->wheel.visited; }

hc_inst_t *hc_core_find(const hc_core_t *c, const char *id)
{
    hc_inst_t *in = NULL;
    if (id)
        HASH_FIND_STR(c->insts, id, in);
    return in;
}

/* ---------------------------------------------------------- timing */

/* When in expires as far as this node knows: 3 x TTL after its last beat,
 * or after the floors when that is later; never before the restart grace. */
static int64_t expiry_of(const hc_core_t *c, const hc_inst_t *in)
{
    int64_t base = max64(max64(in->last_beat_ms, in->floor_ms), c->floor_ms);
    return max64(base + 3 * in->ttl_ms, c->no_marks_before);
}

static bool alive_by_beat(const hc_inst_t *in, int64_t now)
{
    return in->last_beat_ms > 0 && in->last_beat_ms + 3 * in->ttl_ms > now;
}

/* The next check at `at`, kept within [now + min, now + max]. */
static void schedule(hc_core_t *c, hc_inst_t *in, int64_t at, int64_t now)
{
    if (at < now + c->p.min_interval_ms)
        at = now + c->p.min_interval_ms;
    if (at > now + c->p.max_interval_ms)
        at = now + c->p.max_interval_ms;
    hc_wheel_add(&c->wheel, &in->node, at);
}

void hc_core_set_owner(hc_core_t *c, bool (*owns)(const char *id, void *arg), void *arg)
{
    c->owns = owns;
    c->owns_arg = arg;
}

static bool owns(const hc_core_t *c, const char *id) { return !c->owns || c->owns(id, c->owns_arg); }

void hc_core_reown(hc_core_t *c, int64_t now_ms)
{
    hc_inst_t *in, *tmp;
    HASH_ITER(hh, c->insts, in, tmp)
    {
        in->owned = owns(c, in->id);
        if (in->owned && !hc_wheel_linked(&in->node) && !in->reading)
            schedule(c, in, expiry_of(c, in), now_ms);
        else if (!in->owned)
            hc_wheel_remove(&c->wheel, &in->node);
    }
}

void hc_core_store_back(hc_core_t *c, int64_t now_ms)
{
    if (now_ms > c->floor_ms)
        c->floor_ms = now_ms;
}

/* ------------------------------------------------------------- sync */

static hc_svc_t *svc_get(hc_core_t *c, const char *ns, const char *name, bool create)
{
    size_t a = strlen(ns), b = strlen(name), keylen = a + 1 + b;
    char *key = malloc(keylen + 1);
    if (!key)
        return NULL;
    memcpy(key, ns, a + 1);
    memcpy(key + a + 1, name, b + 1);
    hc_svc_t *s = NULL;
    HASH_FIND(hh, c->svcs, key, keylen, s);
    if (s || !create) {
        free(key);
        return s;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        free(key);
        return NULL;
    }
    s->key = key;
    s->keylen = keylen;
    s->ns = key;
    s->name = key + a + 1;
    s->protect_percent = -1;
    HASH_ADD_KEYPTR(hh, c->svcs, s->key, s->keylen, s);
    return s;
}

static void set_healthy(hc_core_t *c, hc_inst_t *in, bool healthy, int64_t mtime_ms, int64_t now)
{
    if (healthy == in->healthy)
        return;
    in->healthy = healthy;
    if (healthy) {
        DL_DELETE2(c->sick, in, uprev, unext);
        in->since_ms = 0;
    } else {
        DL_APPEND2(c->sick, in, uprev, unext);
        in->since_ms = mtime_ms > 0 && mtime_ms < now ? mtime_ms : now;
    }
}

/* Add or update one heartbeat-checked instance of s; NULL when v has no
 * id or memory ran out. */
static hc_inst_t *inst_upsert(hc_core_t *c, hc_svc_t *s, const hc_inst_info_t *v, int64_t now_ms)
{
    if (!v->id || !*v->id)
        return NULL;
    int64_t ttl_ms = (int64_t)(v->ttl_s ? v->ttl_s : 5) * 1000;
    hc_inst_t *in = hc_core_find(c, v->id);
    if (!in) {
        in = calloc(1, sizeof *in);
        if (!in || !(in->id = strdup(v->id))) {
            free(in);
            return NULL;
        }
        in->ttl_ms = ttl_ms;
        in->floor_ms = now_ms;
        in->healthy = true;
        HASH_ADD_KEYPTR(hh, c->insts, in->id, strlen(in->id), in);
        in->svc = s;
        DL_APPEND2(s->insts, in, sprev, snext);
        set_healthy(c, in, v->healthy, v->mtime_ms, now_ms);
        in->owned = owns(c, in->id);
        if (in->owned)
            schedule(c, in, expiry_of(c, in), now_ms);
        return in;
    }
    if (in->svc != s) {
        if (in->svc) {
            DL_DELETE2(in->svc->insts, in, sprev, snext);
            if (in->pending == HC_ACT_DOWN && in->svc->pending_down)
                in->svc->pending_down--;
        }
        in->svc = s;
        DL_APPEND2(s->insts, in, sprev, snext);
        if (in->pending == HC_ACT_DOWN)
            s->pending_down++;
    }
    set_healthy(c, in, v->healthy, v->mtime_ms, now_ms);
    if (in->ttl_ms != ttl_ms) {
        in->ttl_ms = ttl_ms;
        if (hc_wheel_linked(&in->node))
            schedule(c, in, expiry_of(c, in), now_ms);
    }
    return in;
}

static void svc_counts(hc_svc_t *s, uint32_t total, uint32_t unhealthy, int protect_percent)
{
    s->total = total;
    s->unhealthy = unhealthy;
    s->protect_percent = protect_percent;
}

void hc_core_sync_service(hc_core_t *c, const char *ns, const char *name, const hc_inst_info_t *v, size_t n,
                          uint32_t total, uint32_t unhealthy, int protect_percent, int64_t now_ms)
{
    hc_svc_t *s = svc_get(c, ns, name, true);
    if (!s)
        return;
    svc_counts(s, total, unhealthy, protect_percent);
    s->snap_mark = c->snap_gen;
    uint64_t gen = ++c->gen;
    for (size_t i = 0; i < n; i++) {
        hc_inst_t *in = inst_upsert(c, s, &v[i], now_ms);
        if (in)
            in->mark = gen;
    }
    hc_inst_t *in, *tmp;
    DL_FOREACH_SAFE2(s->insts, in, tmp, snext)
    {
        if (in->mark != gen)
            inst_destroy(c, in);
    }
}

void hc_core_update_service(hc_core_t *c, const char *ns, const char *name, const hc_inst_info_t *v, size_t n,
                            const char *const *gone, size_t n_gone, uint32_t total, uint32_t unhealthy,
                            int protect_percent, int64_t now_ms)
{
    hc_svc_t *s = svc_get(c, ns, name, true);
    if (!s)
        return;
    svc_counts(s, total, unhealthy, protect_percent);
    s->snap_mark = c->snap_gen;
    for (size_t i = 0; i < n_gone; i++) {
        hc_inst_t *in = gone[i] ? hc_core_find(c, gone[i]) : NULL;
        if (in && in->svc == s)
            inst_destroy(c, in);
    }
    for (size_t i = 0; i < n; i++)
        inst_upsert(c, s, &v[i], now_ms);
}

void hc_core_drop_service(hc_core_t *c, const char *ns, const char *name)
{
    hc_svc_t *s = svc_get(c, ns, name, false);
    if (s)
        svc_destroy(c, s);
}

void hc_core_sync_begin(hc_core_t *c) { c->snap_gen++; }

void hc_core_sync_end(hc_core_t *c)
{
    hc_svc_t *s, *tmp;
    HASH_ITER(hh, c->svcs, s, tmp)
    {
        if (s->snap_mark != c->snap_gen)
            svc_destroy(c, s);
    }
}

/* ------------------------------------------------------------ beats */

hc_act_kind_t hc_core_beat(hc_core_t *c, hc_inst_t *in, int64_t at_ms)
{
    c->stats.beats++;
    if (at_ms > in->last_beat_ms)
        in->last_beat_ms = at_ms;
    if (!in->healthy && in->pending == HC_ACT_NONE) {
        in->pending = HC_ACT_UP;
        c->stats.marked_up++;
        return HC_ACT_UP;
    }
    return HC_ACT_NONE;
}

void hc_core_forget_beats(hc_core_t *c, hc_inst_t *in)
{
    (void)c;
    in->last_beat_ms = 0;
}

/* ---------------------------------------------------------- checking */

static bool threshold_allows(const hc_core_t *c, const hc_svc_t *s)
{
    int pct = s->protect_percent >= 0 ? s->protect_percent : c->p.protect_percent;
    if (pct <= 0 || pct >= 100)
        return true;
    return ((uint64_t)s->unhealthy + s->pending_down + 1) * 100 <= (uint64_t)pct * s->total;
}

void hc_core_judge(hc_core_t *c, hc_inst_t *in, int64_t store_beat_ms, int64_t now_ms, hc_actions_t *acts)
{
    in->reading = false;
    if (store_beat_ms > now_ms)
        store_beat_ms = now_ms; /* another node's clock runs ahead: the beat is from now */
    if (store_beat_ms > in->last_beat_ms)
        in->last_beat_ms = store_beat_ms;
    if (!in->owned)
        return; /* no longer ours (membership changed during the read) */
    c->stats.checks++;
    int64_t exp = expiry_of(c, in);
    if (!in->healthy && in->pending == HC_ACT_NONE && alive_by_beat(in, now_ms)) {
        if (hc_actions_push(acts, HC_ACT_UP, in, 0) == 0) {
            in->pending = HC_ACT_UP;
            c->stats.marked_up++;
        }
        schedule(c, in, exp, now_ms);
        return;
    }
    if (exp > now_ms) {
        schedule(c, in, exp, now_ms);
        return;
    }
    if (!in->healthy || in->pending != HC_ACT_NONE) {
        schedule(c, in, now_ms + c->p.max_interval_ms, now_ms);
        return;
    }
    if (!in->svc || !threshold_allows(c, in->svc)) {
        c->stats.withheld++;
        schedule(c, in, now_ms + c->p.min_interval_ms, now_ms);
        return;
    }
    int64_t known = max64(max64(in->last_beat_ms, in->floor_ms), c->floor_ms);
    if (hc_actions_push(acts, HC_ACT_DOWN, in, now_ms - known) == 0) {
        in->pending = HC_ACT_DOWN;
        in->svc->pending_down++;
        c->stats.marked_down++;
        schedule(c, in, now_ms + c->p.max_interval_ms, now_ms);
    } else {
        schedule(c, in, now_ms + c->p.min_interval_ms, now_ms);
    }
}

static void on_due(hc_wheel_node_t *node, void *arg)
{
    hc_core_t *c = arg;
    hc_inst_t *in = (hc_inst_t *)((char *)node - offsetof(hc_inst_t, node));
    int64_t now = c->tick_now;
    bool local = !c->p.shared_store ||
                 (expiry_of(c, in) > now && (in->healthy || in->pending != HC_ACT_NONE));
    if (local || !c->tick_need) {
        hc_core_judge(c, in, 0, now, c->tick_acts);
        return;
    }
    if (hc_insts_push(c->tick_need, in) < 0) {
        schedule(c, in, now + c->p.min_interval_ms, now);
        return;
    }
    in->reading = true;
    c->stats.reads++;
}

void hc_core_tick(hc_core_t *c, int64_t now_ms, hc_insts_t *need, hc_actions_t *acts)
{
    c->tick_now = now_ms;
    c->tick_need = need;
    c->tick_acts = acts;
    hc_wheel_advance(&c->wheel, now_ms, on_due, c);
    c->tick_need = NULL;
    c->tick_acts = NULL;
}

void hc_core_retry(hc_core_t *c, hc_inst_t *in, int64_t now_ms)
{
    in->reading = false;
    if (in->owned)
        schedule(c, in, now_ms + c->p.min_interval_ms, now_ms);
}

void hc_core_cleanup(hc_core_t *c, int64_t now_ms, hc_actions_t *acts)
{
    if (c->p.cleanup_after_ms <= 0 || now_ms < c->no_marks_before)
        return;
    hc_inst_t *in;
    DL_FOREACH2(c->sick, in, unext)
    {
        if (!in->owned || in->pending != HC_ACT_NONE)
            continue;
        if (now_ms < c->floor_ms + 3 * in->ttl_ms || alive_by_beat(in, now_ms))
            continue;
        if (now_ms - in->since_ms < c->p.cleanup_after_ms)
            continue;
        if (hc_actions_push(acts, HC_ACT_DELETE, in, now_ms - in->since_ms) == 0) {
            in->pending = HC_ACT_DELETE;
            c->stats.deleted++;
        }
    }
}

hc_act_kind_t hc_core_write_done(hc_core_t *c, hc_inst_t *in, bool ok, int64_t now_ms)
{
    hc_act_kind_t was = in->pending;
    in->pending = HC_ACT_NONE;
    if (was == HC_ACT_DOWN && in->svc && in->svc->pending_down)
        in->svc->pending_down--;
    if (!ok) {
        if (in->owned && !in->reading)
            schedule(c, in, now_ms + c->p.min_interval_ms, now_ms);
        return HC_ACT_NONE;
    }
    /* a beat that came while the instance was being marked unhealthy */
    if (was == HC_ACT_DOWN && !in->healthy && alive_by_beat(in, now_ms)) {
        in->pending = HC_ACT_UP;
        c->stats.marked_up++;
        return HC_ACT_UP;
    }
    return HC_ACT_NONE;
}

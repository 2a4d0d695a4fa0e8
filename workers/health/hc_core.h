/*
 * hc_core.h: the health checker's decisions, without I/O.
 *
 * The core holds every instance that has a heartbeat check (as the naming
 * data says: enable_health_check and a heartbeat TTL), grouped by service,
 * with the latest beat known on this node. The instances this node checks
 * (all of them, or its share in cluster mode: the owner callback) sit on a
 * time wheel (hc_wheel.h) at the time their next check is due. The caller
 * (health_worker.c) feeds in naming changes, beats and the clock, and
 * carries out the actions the core hands back: mark healthy, mark
 * unhealthy, deregister. Time is unix milliseconds, passed in, so the core
 * is deterministic under test.
 *
 * Rules kept here:
 *  - an instance expires 3 x TTL after its last beat; when this node has no
 *    beat for it, after 3 x TTL from a floor: when this node first saw the
 *    instance, when the core started, and when the heartbeat store came
 *    back from an outage (hc_core_store_back). So after a (re)start or an
 *    outage nothing is marked unhealthy before one full expiry window, and
 *    never before start + restart_grace_ms;
 *  - a check schedules the next one at the expiry time, clamped to
 *    [min_interval_ms, max_interval_ms] from now; checking early is
 *    harmless (the instance is simply rescheduled);
 *  - with a shared store (Redis) an instance that looks expired from here,
 *    or is unhealthy, may have beaten on another node: the core hands it
 *    out to be read from the store (hc_core_tick's `need`), and the caller
 *    judges it with what the store said (hc_core_judge), or retries later
 *    (hc_core_retry) when the store did not answer;
 *  - one write at a time per instance: an instance with a pending action is
 *    neither marked again nor deleted until hc_core_write_done;
 *  - protect threshold (percent of the service's instances, 0 = off; the
 *    service's own value overrides the global one): a mark that would leave
 *    more than that share unhealthy (counting marks still pending) is
 *    withheld and retried after min_interval_ms;
 *  - marking healthy is never withheld: a beat for an unhealthy instance
 *    asks for it at once (hc_core_beat), on any node;
 *  - clean-up (cleanup_after_ms > 0): an owned instance unhealthy for that
 *    long, without a beat in its last expiry window, and not inside a
 *    start or store-outage window, is deregistered.
 */
#ifndef LODESTAR_HC_CORE_H
#define LODESTAR_HC_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uthash.h>

#include "hc_wheel.h"

typedef enum hc_act_kind { HC_ACT_NONE = 0, HC_ACT_UP, HC_ACT_DOWN, HC_ACT_DELETE } hc_act_kind_t;

typedef struct hc_params {
    uint32_t slot_num;         /* wheel slots; the wheel spans max_interval_ms */
    int64_t min_interval_ms;
    int64_t max_interval_ms;
    int protect_percent;       /* 0 = off */
    int64_t restart_grace_ms;
    int64_t cleanup_after_ms;  /* 0 = no clean-up */
    bool shared_store;         /* beats may reach other nodes: read the store before marking */
} hc_params_t;

typedef struct hc_svc hc_svc_t;

typedef struct hc_inst {
    char *id;
    hc_svc_t *svc;
    int64_t ttl_ms;
    int64_t last_beat_ms;   /* latest beat known here, 0 = none */
    int64_t floor_ms;       /* first seen by this core */
    int64_t since_ms;       /* unhealthy since (when !healthy) */
    bool healthy;           /* as the naming data says */
    bool owned;             /* this node checks it */
    bool reading;           /* handed out for a store read */
    hc_act_kind_t pending;  /* action handed out, not yet done */
    uint64_t mark;
    hc_wheel_node_t node;
    struct hc_inst *sprev, *snext; /* the service's instances */
    struct hc_inst *uprev, *unext; /* the unhealthy list (clean-up) */
    UT_hash_handle hh;
} hc_inst_t;

struct hc_svc {
    char *key;         /* "namespace\0name" */
    size_t keylen;
    const char *ns, *name;
    uint32_t total;    /* instances of the service, with or without a check */
    uint32_t unhealthy;/* of those, unhealthy in the naming data */
    uint32_t pending_down;
    int protect_percent; /* -1: the global value */
    uint64_t snap_mark;
    hc_inst_t *insts;
    UT_hash_handle hh;
};

/* What the naming data says of one heartbeat-checked instance. */
typedef struct hc_inst_info {
    const char *id;
    uint32_t ttl_s;
    bool healthy;
    int64_t mtime_ms; /* last change in the naming data, 0 when unknown */
} hc_inst_info_t;

typedef struct hc_action {
    hc_act_kind_t kind;
    hc_inst_t *inst;
    int64_t silent_ms; /* DOWN: how long no beat was known; DELETE: how long unhealthy */
} hc_action_t;

typedef struct hc_actions {
    hc_action_t *v;
    size_t n, cap;
} hc_actions_t;

typedef struct hc_insts {
    hc_inst_t **v;
    size_t n, cap;
} hc_insts_t;

typedef struct hc_stats {
    uint64_t beats;       /* hc_core_beat calls */
    uint64_t checks;      /* instances judged */
    uint64_t reads;       /* instances handed out for a store read */
    uint64_t marked_up, marked_down, deleted;
    uint64_t withheld;    /* marks withheld by the protect threshold */
} hc_stats_t;

typedef struct hc_core hc_core_t;

hc_core_t *hc_core_new(const hc_params_t *p, int64_t now_ms);
void hc_core_free(hc_core_t *c);
const hc_params_t *hc_core_params(const hc_core_t *c);
const hc_stats_t *hc_core_stats(const hc_core_t *c);
size_t hc_core_count(const hc_core_t *c);
size_t hc_core_wheel_count(const hc_core_t *c);
/* Wheel entries taken out of their slots so far (the wheel's work). */
uint64_t hc_core_wheel_visited(const hc_core_t *c);

/* Which instances this node checks (NULL: all). Call hc_core_reown after
 * the answer of owns changed (cluster membership). */
void hc_core_set_owner(hc_core_t *c, bool (*owns)(const char *id, void *arg), void *arg);
void hc_core_reown(hc_core_t *c, int64_t now_ms);

/* A service's heartbeat-checked instances as the naming data now says
 * (v[0..n)), with its instance counts (all instances) and its protect
 * threshold (-1 = the global one). Instances of the service not in v are
 * dropped; an id that moved from another service moves here. */
void hc_core_sync_service(hc_core_t *c, const char *ns, const char *name, const hc_inst_info_t *v, size_t n,
                          uint32_t total, uint32_t unhealthy, int protect_percent, int64_t now_ms);

/* What one change did to a service, without walking it: the
 * heartbeat-checked instances added or changed (v[0..n)), the ids that
 * left it or lost their heartbeat check (gone; ids of other services are
 * ignored), and the service's counts and protect threshold as above. */
void hc_core_update_service(hc_core_t *c, const char *ns, const char *name, const hc_inst_info_t *v, size_t n,
                            const char *const *gone, size_t n_gone, uint32_t total, uint32_t unhealthy,
                            int protect_percent, int64_t now_ms);
void hc_core_drop_service(hc_core_t *c, const char *ns, const char *name);
/* Around a full resynchronisation: services not synced in between are dropped. */
void hc_core_sync_begin(hc_core_t *c);
void hc_core_sync_end(hc_core_t *c);

hc_inst_t *hc_core_find(const hc_core_t *c, const char *id);

/* A beat for in at at_ms. Returns HC_ACT_UP when the caller must mark the
 * instance healthy (the action is then pending), else HC_ACT_NONE. */
hc_act_kind_t hc_core_beat(hc_core_t *c, hc_inst_t *in, int64_t at_ms);
/* Forget what is known of in's beats (BatchDelHeartbeat). */
void hc_core_forget_beats(hc_core_t *c, hc_inst_t *in);

/* The heartbeat store is reachable again after an outage. */
void hc_core_store_back(hc_core_t *c, int64_t now_ms);

/* Advance the wheel to now_ms: judge what can be judged here into acts,
 * hand the rest out in need (shared store). */
void hc_core_tick(hc_core_t *c, int64_t now_ms, hc_insts_t *need, hc_actions_t *acts);
/* Judge one instance handed out by hc_core_tick with the store's last beat
 * (0 = none). */
void hc_core_judge(hc_core_t *c, hc_inst_t *in, int64_t store_beat_ms, int64_t now_ms, hc_actions_t *acts);
/* The store read for in failed: check it again later. */
void hc_core_retry(hc_core_t *c, hc_inst_t *in, int64_t now_ms);
/* The clean-up job: instances to deregister. */
void hc_core_cleanup(hc_core_t *c, int64_t now_ms, hc_actions_t *acts);
/* The write for in's pending action finished (ok or not). Returns HC_ACT_UP
 * when a beat that arrived meanwhile asks for the instance to be marked
 * healthy again (pending again), else HC_ACT_NONE. */
hc_act_kind_t hc_core_write_done(hc_core_t *c, hc_inst_t *in, bool ok, int64_t now_ms);

/* Growable vectors (abort-free: a failed append drops the element and
 * returns -ENOMEM). */
int hc_actions_push(hc_actions_t *a, hc_act_kind_t kind, hc_inst_t *in, int64_t silent_ms);
void hc_actions_free(hc_actions_t *a);
int hc_insts_push(hc_insts_t *v, hc_inst_t *in);
void hc_insts_free(hc_insts_t *v);

#endif

/*
 * health.h: the health worker's parts and the state they share.
 *
 *   health_worker.c   the domain: beats, queries, deletes over IPC, the
 *                     naming replica feeding the checker core, the wheel
 *                     and clean-up timers, the heartbeat store's state
 *   health_writes.c   verdicts to the naming worker (INSTANCE_SET_HEALTH,
 *                     INSTANCE_DEREGISTER), batched, one request in flight
 *   health_cluster.c  cluster mode: node announcements in Redis and the
 *                     consistent-hash split of the checks
 *
 * Everything runs on the worker's one libevent thread.
 */
#ifndef LODESTAR_HEALTH_H
#define LODESTAR_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/worker.h"
#include "hc_core.h"
#include "hc_redis.h"
#include "naming_replica.h"

typedef struct hw_ack hw_ack_t;
typedef struct hw_query hw_query_t;
typedef struct hw_writes hw_writes_t;
typedef struct hw_cluster hw_cluster_t;

typedef struct hw {
    worker_t *w;
    struct event_base *base;
    const cfg_healthcheck_t *hc;
    int request_timeout_ms;
    int64_t started_ms;
    hc_core_t *core;          /* NULL when healthcheck.enabled is false */
    /* heartbeat store */
    hr_t *redis;              /* NULL in memory mode */
    char *hb_key;             /* <prefix>hb */
    bool store_up;
    int64_t store_down_since_ms;
    int64_t store_reminded_ms;
    char store_why[256];
    /* naming data */
    ipc_client_t *naming;
    nr_t *replica;
    bool replica_loaded;
    /* beats waiting for an answer */
    hw_ack_t *acks;
    hw_query_t *queries;      /* BatchGetHeartbeat reads waiting for Redis */
    struct event *late_ev;
    /* timers */
    struct event *tick_ev, *cleanup_ev;
    hw_writes_t *writes;
    hw_cluster_t *cluster;
} hw_t;

int64_t hw_now_ms(void);

/* health_writes.c */
hw_writes_t *hw_writes_new(hw_t *hw);
void hw_writes_free(hw_writes_t *wr);
/* Queue the write an action asks for (the action is pending in the core). */
void hw_writes_queue(hw_writes_t *wr, const hc_action_t *a);
void hw_writes_queue_all(hw_writes_t *wr, const hc_actions_t *acts);
size_t hw_writes_waiting(const hw_writes_t *wr);

/* health_cluster.c */
hw_cluster_t *hw_cluster_new(hw_t *hw, char *err, size_t errlen);
void hw_cluster_free(hw_cluster_t *cl);
/* Announce this node now (the store just came up). */
void hw_cluster_refresh(hw_cluster_t *cl);
/* Remove this node from Redis (drain): its share moves at once. */
void hw_cluster_leave(hw_cluster_t *cl);
const char *hw_cluster_node_id(const hw_cluster_t *cl);
size_t hw_cluster_members(const hw_cluster_t *cl);

#endif

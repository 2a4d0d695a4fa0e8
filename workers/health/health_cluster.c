/*
 * health_cluster.c: cluster mode (heartbeat store Redis). Every node
 * accepts beats (they all land in the shared hash); the checks are split.
 *
 * Every announce_ttl_ms / 3 a node runs one round against Redis:
 *   SET <prefix>node:<id> <unix ms> PX <announce_ttl_ms>  (its own TTL'd key)
 *   SADD <prefix>nodes <id>                               (the member list)
 *   SMEMBERS <prefix>nodes, then MGET of their node keys: members whose key
 *   expired are dead (and are SREMed); the rest are the live nodes.
 * The live node ids (this node always among them) form a consistent-hash
 * ring (hc_ring.h); this node checks the instances the ring gives it. When
 * the live set changes, the core re-owns its instances: a dead node's share
 * is picked up by the others within announce_ttl_ms plus one round, and
 * their first checks read the shared beats, so nothing is marked unhealthy
 * merely because its checker died. A draining node deletes its key and
 * leaves the set, so its share moves at once.
 *
 * Until the first round has completed this node checks nothing (it does not
 * know yet who else does). While Redis is unreachable the last known ring
 * stays; no one marks anything unhealthy then anyway.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "hc_ring.h"
#include "health.h"
#include "log.h"

struct hw_cluster {
    hw_t *hw;
    char *node_id;
    char *node_key;
    char *nodes_key;
    char *node_prefix; /* <prefix>node: */
    int ttl_ms;
    hc_ring_t ring;
    bool ring_known;
    struct event *timer;
    bool busy; /* a round is in flight */
};

/* One round's members while their keys are being read. */
typedef struct hw_round {
    hw_cluster_t *cl;
    char **members;
    size_t n;
} hw_round_t;

static bool owns(const char *id, void *arg)
{
    hw_cluster_t *cl = arg;
    if (!cl->ring_known)
        return false;
    const char *owner = hc_ring_owner(&cl->ring, id);
    return !owner || strcmp(owner, cl->node_id) == 0;
}

static void ignore_reply(hr_t *r, redisReply *reply, void *arg)
{
    const char *what = arg;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("cluster: %s refused: %.*s", what, (int)reply->len, reply->str);
}

static void round_free(hw_round_t *rd)
{
    for (size_t i = 0; i < rd->n; i++)
        free(rd->members[i]);
    free(rd->members);
    free(rd);
}

static void set_members(hw_cluster_t *cl, char **live, size_t n)
{
    if (cl->ring_known && hc_ring_same_members(&cl->ring, (const char *const *)live, n))
        return;
    hc_ring_t fresh = {0};
    if (hc_ring_build(&fresh, (const char *const *)live, n) < 0) {
        log_error("cluster: out of memory building the ring of %zu nodes", n);
        return;
    }
    hc_ring_free(&cl->ring);
    cl->ring = fresh;
    bool first = !cl->ring_known;
    cl->ring_known = true;
    char list[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < cl->ring.n_members && used + 2 < sizeof list; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", cl->ring.members[i]);
        if (w < 0)
            break;
        used += (size_t)w < sizeof list - used ? (size_t)w : sizeof list - used - 1;
    }
    log_notice("cluster: %s%zu live checking node%s: %s (this node: %s)", first ? "" : "membership changed, ",
               cl->ring.n_members, cl->ring.n_members == 1 ? "" : "s", list, cl->node_id);
    if (cl->hw->core)
        hc_core_reown(cl->hw->core, hw_now_ms());
}

static void on_keys(hr_t *r, redisReply *reply, void *arg)
{
    hw_round_t *rd = arg;
    hw_cluster_t *cl = rd->cl;
    cl->busy = false;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != rd->n) {
        round_free(rd);
        return;
    }
    char **live = calloc(rd->n + 1, sizeof *live);
    if (!live) {
        round_free(rd);
        return;
    }
    size_t n_live = 0;
    hr_argv_t dead = {0};
    hr_argv_add(&dead, "SREM", 4);
    hr_argv_add(&dead, cl->nodes_key, strlen(cl->nodes_key));
    for (size_t i = 0; i < rd->n; i++) {
        if (reply->element[i]->type == REDIS_REPLY_STRING || strcmp(rd->members[i], cl->node_id) == 0)
            live[n_live++] = rd->members[i];
        else
            hr_argv_add(&dead, rd->members[i], strlen(rd->members[i]));
    }
    live[n_live++] = cl->node_id; /* always; duplicates are ignored by the ring */
    if (dead.argc > 2) {
        log_info("cluster: %d node%s stopped announcing and left the ring", dead.argc - 2, dead.argc == 3 ? "" : "s");
        hr_argv_send(r, &dead, ignore_reply, "SREM of dead nodes");
    }
    hr_argv_free(&dead);
    set_members(cl, live, n_live);
    free(live);
    round_free(rd);
}

static void on_members(hr_t *r, redisReply *reply, void *arg)
{
    hw_cluster_t *cl = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        cl->busy = false;
        return;
    }
    hw_round_t *rd = calloc(1, sizeof *rd);
    if (rd)
        rd->members = calloc(reply->elements ? reply->elements : 1, sizeof *rd->members);
    hr_argv_t av = {0};
    hr_argv_add(&av, "MGET", 4);
    for (size_t i = 0; rd && rd->members && i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING)
            continue;
        rd->members[rd->n] = strndup(e->str, e->len);
        if (!rd->members[rd->n]) {
            av.oom = true;
            break;
        }
        rd->n++;
        hr_argv_addf(&av, "%s%.*s", cl->node_prefix, (int)e->len, e->str);
    }
    int rc = rd && rd->members && rd->n ? hr_argv_send(r, &av, on_keys, rd) : -ENOMEM;
    hr_argv_free(&av);
    if (rc < 0) {
        cl->busy = false;
        if (rd && rd->members)
            round_free(rd);
        else if (rd)
            free(rd);
        return;
    }
    rd->cl = cl;
}

void hw_cluster_refresh(hw_cluster_t *cl)
{
    if (!cl || cl->busy || !cl->hw->redis || !hr_up(cl->hw->redis))
        return;
    hw_t *hw = cl->hw;
    char ms[24], ttl[24];
    snprintf(ms, sizeof ms, "%lld", (long long)hw_now_ms());
    snprintf(ttl, sizeof ttl, "%d", cl->ttl_ms);
    const char *set[] = {"SET", cl->node_key, ms, "PX", ttl};
    const char *sadd[] = {"SADD", cl->nodes_key, cl->node_id};
    const char *smembers[] = {"SMEMBERS", cl->nodes_key};
    if (hr_command(hw->redis, 5, set, NULL, ignore_reply, "announcing this node") < 0 ||
        hr_command(hw->redis, 3, sadd, NULL, ignore_reply, "joining the node set") < 0 ||
        hr_command(hw->redis, 2, smembers, NULL, on_members, cl) < 0)
        return;
    cl->busy = true;
}

static void on_timer(evutil_socket_t fd, short what, void *arg) { hw_cluster_refresh(arg); }

void hw_cluster_leave(hw_cluster_t *cl)
{
    hw_t *hw = cl->hw;
    if (!hw->redis || !hr_up(hw->redis))
        return;
    const char *del[] = {"DEL", cl->node_key};
    const char *srem[] = {"SREM", cl->nodes_key, cl->node_id};
    hr_command(hw->redis, 2, del, NULL, ignore_reply, "removing this node's key");
    hr_command(hw->redis, 3, srem, NULL, ignore_reply, "leaving the node set");
    event_del(cl->timer);
    log_info("cluster: node %s leaves; its checks move to the other nodes", cl->node_id);
}

hw_cluster_t *hw_cluster_new(hw_t *hw, char *err, size_t errlen)
{
    const cfg_healthcheck_t *hc = hw->hc;
    const cfg_t *cfg = hw->w->child->cfg;
    hw_cluster_t *cl = calloc(1, sizeof *cl);
    if (!cl) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cl->hw = hw;
    cl->ttl_ms = hc->cluster_announce_ttl_ms;
    int rc = 0;
    if (hc->cluster_node_id && *hc->cluster_node_id) {
        cl->node_id = strdup(hc->cluster_node_id);
    } else {
        char host[256] = "localhost";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        rc = asprintf(&cl->node_id, "%s:%s", host, cfg->runtime_dir);
    }
    if (rc < 0 || !cl->node_id || asprintf(&cl->node_key, "%snode:%s", hc->redis_key_prefix, cl->node_id) < 0 ||
        asprintf(&cl->nodes_key, "%snodes", hc->redis_key_prefix) < 0 ||
        asprintf(&cl->node_prefix, "%snode:", hc->redis_key_prefix) < 0) {
        snprintf(err, errlen, "out of memory");
        hw_cluster_free(cl);
        return NULL;
    }
    int every = cl->ttl_ms / 3 > 50 ? cl->ttl_ms / 3 : 50;
    struct timeval tv = {every / 1000, (every % 1000) * 1000};
    cl->timer = event_new(hw->base, -1, EV_PERSIST, on_timer, cl);
    if (!cl->timer || event_add(cl->timer, &tv) < 0) {
        snprintf(err, errlen, "cannot start the announcement timer");
        hw_cluster_free(cl);
        return NULL;
    }
    hc_core_set_owner(hw->core, owns, cl);
    log_info("cluster: this node is %s (announced every %d ms, dead after %d ms of silence)", cl->node_id, every,
             cl->ttl_ms);
    return cl;
}

void hw_cluster_free(hw_cluster_t *cl)
{
    if (!cl)
        return;
    if (cl->hw->core)
        hc_core_set_owner(cl->hw->core, NULL, NULL);
    if (cl->timer)
        event_free(cl->timer);
    hc_ring_free(&cl->ring);
    free(cl->node_id);
    free(cl->node_key);
    free(cl->nodes_key);
    free(cl->node_prefix);
    free(cl);
}

const char *hw_cluster_node_id(const hw_cluster_t *cl) { return cl->node_id; }
size_t hw_cluster_members(const hw_cluster_t *cl) { return cl->ring.n_members; }

/*
 * naming_replica.c: see naming_replica.h. Owns a gateway's in-memory copy
 * of every namespace, service and instance.
 *
 * Tables (uthash):
 *  - services by (namespace, name); the key is "namespace\0name". An entry
 *    whose latest state says `deleted` stays as a tombstone (not visible
 *    through the API) so that an older state arriving late cannot bring the
 *    service back; tombstones are dropped when a snapshot covers them;
 *  - instances by id, pointing into the owning service's state;
 *  - namespace buckets: the live services of one namespace in a list, and
 *    the lazily computed revision of that list.
 *
 * Rules kept here:
 *  - a state replaces the current one only when its seq is higher; every
 *    replacement frees the service's cache slots and invalidates the
 *    services revision of its namespace and of the whole list;
 *  - states are copied out of the envelopes (pack + unpack), so nothing
 *    here points into memory the IPC layer frees;
 *  - a snapshot removes what it does not contain, unless the replica holds
 *    a newer state for it (a push that overtook the snapshot);
 *  - the snapshot is requested again on every connect, and retried every
 *    NR_RETRY_MS while connected until one arrives.
 */
#include "naming_replica.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <uthash.h>
#include <utlist.h>

#include "log.h"
#include "naming.pb-c.h"
#include "naming_id.h"

#define NR_TOPIC "naming"
#define NR_RETRY_MS 1000
#define NR_MAX_LISTENERS 4

typedef struct nr_nsb nr_nsb_t;

typedef struct nr_svc {
    nr_service_t pub; /* what users see; pub.ns / pub.name point into key */
    char *key;        /* "namespace\0name" */
    size_t keylen;
    bool live;        /* false: tombstone */
    size_t cap;       /* room in pub.state->instances and keys (deltas grow both by doubling) */
    uint64_t *keys;   /* keys[i] = id_key of instance i: the binary search reads these, not the
                       * instances (NULL after an allocation failure: ids are compared instead) */
    uint64_t mark;    /* snapshot generation that contained it */
    nr_nsb_t *nsb;    /* namespace bucket while live */
    struct nr_svc *prev, *next; /* list of the bucket */
    UT_hash_handle hh;
} nr_svc_t;

typedef struct nr_inst {
    const char *id; /* points into the owning state */
    const Lodestar__NamingInstance *inst;
    nr_svc_t *svc;
    UT_hash_handle hh;
} nr_inst_t;

struct nr_nsb {
    char *name;
    nr_svc_t *head;
    size_t count;
    bool rev_valid;
    char rev[NAMING_HEX_LEN + 1];
    UT_hash_handle hh;
};

typedef struct nr_snapreq {
    nr_t *r; /* NULL once the replica is gone */
} nr_snapreq_t;

typedef struct nr_listener {
    nr_change_fn fn;
    void *arg;
} nr_listener_t;

struct nr {
    pthread_mutex_t mu; /* recursive; see nr_lock */
    struct event_base *base;
    ipc_client_t *naming;
    int timeout_ms;
    bool ready;
    bool connected;
    bool retry_logged;
    uint64_t last_seq;
    uint64_t generation;
    nr_svc_t *services;
    nr_inst_t *instances;
    nr_nsb_t *nsbs;
    bool all_rev_valid;
    char all_rev[NAMING_HEX_LEN + 1];
    V1__Namespace **namespaces;
    size_t n_namespaces;
    nr_snapreq_t *snapreq;
    struct event *retry_ev;
    nr_listener_t listeners[NR_MAX_LISTENERS];
    size_t n_listeners;
};

static nr_svc_t *svc_of(const nr_service_t *pub)
{
    return (nr_svc_t *)((char *)pub - offsetof(nr_svc_t, pub));
}

/* ------------------------------------------------------------ copies */

/* A private copy of a protobuf-c message (pack, then unpack). */
static ProtobufCMessage *msg_copy(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t stackbuf[4096];
    uint8_t *buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *out = protobuf_c_message_unpack(m->descriptor, NULL, n, buf);
    if (buf != stackbuf)
        free(buf);
    return out;
}

static const char *sv(const Google__Protobuf__StringValue *v)
{
    return v && v->value ? v->value : "";
}

/* -------------------------------------------------------- namespaces */

static nr_nsb_t *nsb_get(nr_t *r, const char *ns, bool create)
{
    nr_nsb_t *b = NULL;
    HASH_FIND_STR(r->nsbs, ns, b);
    if (b || !create)
        return b;
    b = calloc(1, sizeof *b);
    if (!b || !(b->name = strdup(ns))) {
        free(b);
        return NULL;
    }
    HASH_ADD_KEYPTR(hh, r->nsbs, b->name, strlen(b->name), b);
    return b;
}

static void revisions_invalidate(nr_t *r, nr_nsb_t *b)
{
    if (b)
        b->rev_valid = false;
    r->all_rev_valid = false;
}

/* --------------------------------------------------------- instances */

static const char *inst_id(const Lodestar__NamingInstance *ni)
{
    return ni && ni->instance ? sv(ni->instance->id) : "";
}

/* Drop one instance of e from the id index (only if the index points at
 * exactly this copy: an id that moved to another service stays there). */
static void instance_unindex(nr_t *r, nr_svc_t *e, const Lodestar__NamingInstance *ni)
{
    const char *id = inst_id(ni);
    if (!*id)
        return;
    nr_inst_t *x = NULL;
    HASH_FIND_STR(r->instances, id, x);
    if (x && x->svc == e && x->inst == ni) {
        HASH_DEL(r->instances, x);
        free(x);
    }
}

/* Point the id index at this copy of an instance of e. */
static void instance_index(nr_t *r, nr_svc_t *e, const Lodestar__NamingInstance *ni)
{
    const char *id = inst_id(ni);
    if (!*id) {
        log_warn("naming replica: service %s/%s: instance without id ignored", e->pub.ns, e->pub.name);
        return;
    }
    nr_inst_t *x = NULL;
    HASH_FIND_STR(r->instances, id, x);
    if (x) {
        /* the same id under another service: the newest state wins */
        if (x->svc != e)
            log_warn("naming replica: instance id %s moves from service %s/%s to %s/%s", id, x->svc->pub.ns,
                     x->svc->pub.name, e->pub.ns, e->pub.name);
        HASH_DEL(r->instances, x);
    } else if (!(x = calloc(1, sizeof *x))) {
        log_error("naming replica: out of memory indexing instance %s", id);
        return;
    }
    x->id = id;
    x->inst = ni;
    x->svc = e;
    HASH_ADD_KEYPTR(hh, r->instances, x->id, strlen(x->id), x);
}

static void instances_unindex(nr_t *r, nr_svc_t *e)
{
    const Lodestar__NamingServiceState *st = e->pub.state;
    if (!st)
        return;
    for (size_t i = 0; i < st->n_instances; i++)
        instance_unindex(r, e, st->instances[i]);
}

static void instances_index(nr_t *r, nr_svc_t *e)
{
    const Lodestar__NamingServiceState *st = e->pub.state;
    for (size_t i = 0; i < st->n_instances; i++)
        instance_index(r, e, st->instances[i]);
}

/* ---------------------------------------------------------- services */

static void cache_clear(nr_svc_t *e)
{
    for (int i = 0; i < NR_CACHE_SLOTS; i++) {
        free(e->pub.cache[i].data);
        e->pub.cache[i].data = NULL;
        e->pub.cache[i].len = 0;
    }
}

static void svc_unlink_live(nr_t *r, nr_svc_t *e)
{
    if (!e->live)
        return;
    if (e->nsb) {
        DL_DELETE(e->nsb->head, e);
        e->nsb->count--;
        revisions_invalidate(r, e->nsb);
        e->nsb = NULL;
    }
    e->live = false;
}

static void svc_destroy(nr_t *r, nr_svc_t *e)
{
    instances_unindex(r, e);
    svc_unlink_live(r, e);
    HASH_DEL(r->services, e);
    cache_clear(e);
    if (e->pub.state)
        lodestar__naming_service_state__free_unpacked(e->pub.state, NULL);
    free(e->keys);
    free(e->key);
    free(e);
}

/* Build the table key "ns\0name" into a malloc'd buffer. */
static char *make_key(const char *ns, const char *name, size_t *keylen)
{
    size_t a = strlen(ns), b = strlen(name);
    char *k = malloc(a + 1 + b + 1);
    if (!k)
        return NULL;
    memcpy(k, ns, a + 1);
    memcpy(k + a + 1, name, b + 1);
    *keylen = a + 1 + b;
    return k;
}

static nr_svc_t *svc_find(const nr_t *r, const char *ns, const char *name)
{
    size_t a = strlen(ns), b = strlen(name), keylen = a + 1 + b;
    char stackkey[512];
    char *k = keylen + 1 <= sizeof stackkey ? stackkey : malloc(keylen + 1);
    if (!k)
        return NULL;
    memcpy(k, ns, a + 1);
    memcpy(k + a + 1, name, b + 1);
    nr_svc_t *e = NULL;
    HASH_FIND(hh, r->services, k, keylen, e);
    if (k != stackkey)
        free(k);
    return e;
}

static void notify(nr_t *r, const nr_service_t *svc, const nr_delta_t *delta)
{
    for (size_t i = 0; i < r->n_listeners; i++)
        r->listeners[i].fn(r, svc, delta, r->listeners[i].arg);
}

static bool inst_unhealthy(const Lodestar__NamingInstance *ni)
{
    return ni && ni->instance && ni->instance->healthy && !ni->instance->healthy->value;
}

static int cmp_instance_id(const void *a, const void *b)
{
    const Lodestar__NamingInstance *x = *(Lodestar__NamingInstance *const *)a;
    const Lodestar__NamingInstance *y = *(Lodestar__NamingInstance *const *)b;
    return strcmp(x->instance ? sv(x->instance->id) : "", y->instance ? sv(y->instance->id) : "");
}

/* The first 8 bytes of an id as a big-endian number (zero-padded): keys
 * order like strcmp orders the ids, ties broken by strcmp. */
static uint64_t id_key(const char *id)
{
    uint64_t k = 0;
    int i = 0;
    for (; i < 8 && id[i]; i++)
        k = k << 8 | (unsigned char)id[i];
    return i ? k << (8 * (8 - i)) : 0;
}

/* Keys for the whole (sorted) instance array of e, after a full state. */
static void keys_rebuild(nr_svc_t *e)
{
    const Lodestar__NamingServiceState *st = e->pub.state;
    size_t n = st ? st->n_instances : 0;
    uint64_t *k = realloc(e->keys, (n ? n : 1) * sizeof *k);
    if (!k) {
        free(e->keys);
        e->keys = NULL;
        return;
    }
    e->keys = k;
    for (size_t i = 0; i < n; i++)
        k[i] = id_key(inst_id(st->instances[i]));
}

/* Take ownership of st and apply it under the highest-seq rule. Returns the
 * entry when the state was applied, NULL when it was stale or unusable (st
 * is freed then). */
static nr_svc_t *apply_state(nr_t *r, Lodestar__NamingServiceState *st)
{
    const char *ns = st->service ? sv(st->service->namespace_) : "";
    const char *name = st->service ? sv(st->service->name) : "";
    if (!*ns || !*name) {
        log_warn("naming replica: service state (seq %llu) without namespace or name ignored",
                 (unsigned long long)st->seq);
        lodestar__naming_service_state__free_unpacked(st, NULL);
        return NULL;
    }
    nr_svc_t *e = svc_find(r, ns, name);
    if (e && st->seq <= e->pub.seq) {
        lodestar__naming_service_state__free_unpacked(st, NULL);
        return NULL;
    }
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e || !(e->key = make_key(ns, name, &e->keylen))) {
            log_error("naming replica: out of memory for service %s/%s", ns, name);
            free(e);
            lodestar__naming_service_state__free_unpacked(st, NULL);
            return NULL;
        }
        e->pub.ns = e->key;
        e->pub.name = e->key + strlen(e->key) + 1;
        HASH_ADD_KEYPTR(hh, r->services, e->key, e->keylen, e);
    }
    instances_unindex(r, e);
    cache_clear(e);
    if (e->pub.state)
        lodestar__naming_service_state__free_unpacked(e->pub.state, NULL);
    e->pub.state = st;
    e->cap = st->n_instances;
    e->pub.n_unhealthy = 0;
    for (size_t i = 0; i < st->n_instances; i++)
        e->pub.n_unhealthy += inst_unhealthy(st->instances[i]);
    e->pub.seq = st->seq;
    e->pub.revision = sv(st->service->revision);
    if (st->seq > r->last_seq)
        r->last_seq = st->seq;

    if (st->deleted) {
        svc_unlink_live(r, e);
    } else {
        if (st->n_instances > 1)
            qsort(st->instances, st->n_instances, sizeof *st->instances, cmp_instance_id);
        if (!e->live) {
            e->nsb = nsb_get(r, e->pub.ns, true);
            if (e->nsb) {
                DL_APPEND(e->nsb->head, e);
                e->nsb->count++;
            }
            e->live = true;
        }
        instances_index(r, e);
    }
    keys_rebuild(e);
    revisions_invalidate(r, e->nsb ? e->nsb : nsb_get(r, e->pub.ns, false));
    return e;
}

static Lodestar__NamingServiceState *state_copy(const Lodestar__NamingServiceState *st)
{
    return (Lodestar__NamingServiceState *)msg_copy(&st->base);
}

static void namespaces_free(nr_t *r)
{
    for (size_t i = 0; i < r->n_namespaces; i++)
        v1__namespace__free_unpacked(r->namespaces[i], NULL);
    free(r->namespaces);
    r->namespaces = NULL;
    r->n_namespaces = 0;
}

static void namespaces_set(nr_t *r, V1__Namespace *const *list, size_t n)
{
    V1__Namespace **copy = n ? calloc(n, sizeof *copy) : NULL;
    if (n && !copy) {
        log_error("naming replica: out of memory for %zu namespaces", n);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        V1__Namespace *c = (V1__Namespace *)msg_copy(&list[i]->base);
        if (c)
            copy[k++] = c;
    }
    namespaces_free(r);
    r->namespaces = copy;
    r->n_namespaces = k;
}

static void request_snapshot(nr_t *r);

/* Position of id in the id-sorted instance array: its index when found
 * (*found true), else where it would be inserted. With keys, most probes
 * compare integers in one array instead of following three pointers. */
static size_t inst_search(Lodestar__NamingInstance *const *v, const uint64_t *keys, size_t n, const char *id,
                          bool *found)
{
    size_t lo = 0, hi = n;
    uint64_t k = id_key(id);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = keys && keys[mid] != k ? (keys[mid] < k ? -1 : 1) : strcmp(inst_id(v[mid]), id);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* Merge a delta (see proto/naming.proto) into the state the replica holds.
 * The held instances stay sorted by id, so each removed or changed instance
 * is found by binary search and only those are re-indexed: the work per
 * change does not grow with the size of the service (beyond moving
 * pointers). Returns the entry, or NULL when the delta does not follow what
 * is held (stale: dropped; a gap: dropped and a snapshot requested). */
static nr_svc_t *apply_delta(nr_t *r, const Lodestar__NamingServiceState *d, nr_delta_t *out)
{
    const char *ns = d->service ? sv(d->service->namespace_) : "";
    const char *name = d->service ? sv(d->service->name) : "";
    nr_svc_t *e = *ns && *name ? svc_find(r, ns, name) : NULL;
    if (e && d->seq <= e->pub.seq)
        return NULL; /* already have it, or newer */
    if (!e || !e->pub.state || e->pub.state->deleted || e->pub.seq < d->base_seq) {
        log_info("naming replica: change to %s/%s at seq %llu follows seq %llu, which this replica does not hold; "
                 "asking for a snapshot",
                 ns, name, (unsigned long long)d->seq, (unsigned long long)d->base_seq);
        if (r->connected && !r->snapreq)
            request_snapshot(r);
        return NULL;
    }
    Lodestar__NamingServiceState *st = e->pub.state;
    V1__Service *svc = (V1__Service *)msg_copy(&d->service->base);
    Lodestar__NamingInstance **v = st->instances;
    size_t need = st->n_instances + d->n_instances;
    if (need > e->cap || !v) {
        size_t cap = e->cap * 2 > need ? e->cap * 2 : need < 16 ? 16 : need;
        v = realloc(st->instances, cap * sizeof *v);
        if (v) {
            st->instances = v;
            e->cap = cap;
            uint64_t *k = e->keys ? realloc(e->keys, cap * sizeof *k) : NULL;
            if (!k)
                free(e->keys); /* searched without keys until the next full state */
            e->keys = k;
        }
    }
    if (!svc || !v) {
        if (svc)
            v1__service__free_unpacked(svc, NULL);
        log_error("naming replica: out of memory applying a change to %s/%s; asking for a snapshot", ns, name);
        if (r->connected && !r->snapreq)
            request_snapshot(r);
        return NULL;
    }
    st->instances = v;
    const Lodestar__NamingInstance **changed = d->n_instances ? calloc(d->n_instances, sizeof *changed) : NULL;
    if (d->n_instances && !changed)
        log_error("naming replica: out of memory listing the changes to %s/%s for listeners", ns, name);
    out->changed = changed;
    out->removed = (const char *const *)d->removed_ids;
    out->n_removed = d->n_removed_ids;
    cache_clear(e);
    size_t n = st->n_instances;
    for (size_t k = 0; k < d->n_removed_ids; k++) {
        bool found;
        size_t at = inst_search(v, e->keys, n, d->removed_ids[k], &found);
        if (!found)
            continue;
        instance_unindex(r, e, v[at]);
        e->pub.n_unhealthy -= inst_unhealthy(v[at]);
        lodestar__naming_instance__free_unpacked(v[at], NULL);
        memmove(&v[at], &v[at + 1], (n - at - 1) * sizeof *v);
        if (e->keys)
            memmove(&e->keys[at], &e->keys[at + 1], (n - at - 1) * sizeof *e->keys);
        n--;
    }
    for (size_t k = 0; k < d->n_instances; k++) {
        Lodestar__NamingInstance *c = (Lodestar__NamingInstance *)msg_copy(&d->instances[k]->base);
        if (!c || !*inst_id(c)) {
            log_warn("naming replica: change to %s/%s at seq %llu: instance %s", ns, name,
                     (unsigned long long)d->seq, c ? "without id ignored" : "could not be copied (out of memory)");
            if (c)
                lodestar__naming_instance__free_unpacked(c, NULL);
            continue;
        }
        bool found;
        size_t at = inst_search(v, e->keys, n, inst_id(c), &found);
        if (found) {
            instance_unindex(r, e, v[at]);
            e->pub.n_unhealthy -= inst_unhealthy(v[at]);
            lodestar__naming_instance__free_unpacked(v[at], NULL);
        } else {
            memmove(&v[at + 1], &v[at], (n - at) * sizeof *v);
            if (e->keys)
                memmove(&e->keys[at + 1], &e->keys[at], (n - at) * sizeof *e->keys);
            n++;
        }
        v[at] = c;
        if (e->keys)
            e->keys[at] = id_key(inst_id(c));
        e->pub.n_unhealthy += inst_unhealthy(c);
        instance_index(r, e, c);
        if (changed)
            changed[out->n_changed++] = c;
    }
    st->n_instances = n;
    v1__service__free_unpacked(st->service, NULL);
    st->service = svc;
    st->seq = d->seq;
    e->pub.seq = d->seq;
    e->pub.revision = sv(st->service->revision);
    if (d->seq > r->last_seq)
        r->last_seq = d->seq;
    revisions_invalidate(r, e->nsb ? e->nsb : nsb_get(r, e->pub.ns, false));
    return e;
}

static void apply_change(nr_t *r, const Lodestar__NamingChange *ch)
{
    for (size_t i = 0; i < ch->n_services; i++) {
        if (!ch->services[i])
            continue;
        nr_svc_t *e;
        nr_delta_t delta = {0};
        bool is_delta = ch->services[i]->delta;
        if (is_delta) {
            e = apply_delta(r, ch->services[i], &delta);
        } else {
            Lodestar__NamingServiceState *st = state_copy(ch->services[i]);
            e = st ? apply_state(r, st) : NULL;
        }
        if (e)
            notify(r, &e->pub, is_delta && (delta.changed || !ch->services[i]->n_instances) ? &delta : NULL);
        free((void *)delta.changed);
    }
    if (ch->n_namespaces)
        namespaces_set(r, ch->namespaces, ch->n_namespaces);
    if (ch->seq > r->last_seq)
        r->last_seq = ch->seq;
}

static void apply_snapshot(nr_t *r, const Lodestar__NamingSnapshot *snap)
{
    uint64_t gen = ++r->generation;
    size_t applied = 0;
    for (size_t i = 0; i < snap->n_services; i++) {
        const Lodestar__NamingServiceState *src = snap->services[i];
        if (!src || !src->service)
            continue;
        /* mark what the snapshot holds, applied or not (a newer push wins) */
        nr_svc_t *e = svc_find(r, sv(src->service->namespace_), sv(src->service->name));
        if (e && src->seq <= e->pub.seq) {
            e->mark = gen;
            continue;
        }
        Lodestar__NamingServiceState *st = state_copy(src);
        if (!st)
            continue;
        e = apply_state(r, st);
        if (e) {
            e->mark = gen;
            applied++;
        }
    }
    /* Gone while we were not listening: everything the snapshot lacks,
     * unless we hold something newer than the snapshot. */
    size_t removed = 0;
    nr_svc_t *e, *tmp;
    HASH_ITER(hh, r->services, e, tmp)
    {
        if (e->mark == gen || e->pub.seq > snap->seq)
            continue;
        if (e->live)
            removed++;
        svc_destroy(r, e);
    }
    namespaces_set(r, snap->namespaces, snap->n_namespaces);
    if (snap->seq > r->last_seq)
        r->last_seq = snap->seq;
    r->ready = true;
    log_info("naming replica: snapshot at seq %llu loaded: %zu services (%zu updated, %zu removed), %zu namespaces",
             (unsigned long long)snap->seq, (size_t)HASH_COUNT(r->services), applied, removed, r->n_namespaces);
    notify(r, NULL, NULL);
}

/* ---------------------------------------------------------- snapshots */

static void request_snapshot(nr_t *r);

static void schedule_retry(nr_t *r)
{
    if (!r->connected)
        return;
    struct timeval tv = {NR_RETRY_MS / 1000, (NR_RETRY_MS % 1000) * 1000};
    evtimer_add(r->retry_ev, &tv);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    nr_t *r = arg;
    if (r->connected && !r->snapreq)
        request_snapshot(r);
}

static void on_snapshot_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    nr_snapreq_t *q = arg;
    nr_t *r = q->r;
    free(q);
    if (!r)
        return;
    r->snapreq = NULL;
    if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_NAMING_SNAPSHOT) {
        r->retry_logged = false;
        nr_lock(r);
        apply_snapshot(r, reply->naming_snapshot);
        nr_unlock(r);
        return;
    }
    char why[300];
    if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_ERROR)
        snprintf(why, sizeof why, "naming worker answered: %s", reply->error->message ? reply->error->message : "");
    else if (status == 0)
        snprintf(why, sizeof why, "naming worker answered %s instead of naming_snapshot",
                 ipc_type_name(reply->body_case));
    else
        snprintf(why, sizeof why, "%s", status == -ETIMEDOUT ? "no answer in time" : strerror(-status));
    if (!r->retry_logged)
        log_warn("naming replica: snapshot request failed (%s); retrying every %d ms", why, NR_RETRY_MS);
    else
        log_debug("naming replica: snapshot request failed again (%s)", why);
    r->retry_logged = true;
    schedule_retry(r);
}

static void request_snapshot(nr_t *r)
{
    nr_snapreq_t *q = calloc(1, sizeof *q);
    if (!q) {
        schedule_retry(r);
        return;
    }
    q->r = r;
    Lodestar__NamingSnapshotRequest sr = LODESTAR__NAMING_SNAPSHOT_REQUEST__INIT;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_SNAPSHOT_REQUEST;
    env.naming_snapshot_request = &sr;
    if (ipc_client_request(r->naming, &env, r->timeout_ms, on_snapshot_reply, q) < 0) {
        free(q);
        schedule_retry(r);
        return;
    }
    r->snapreq = q;
}

/* ------------------------------------------------------------- public */

nr_t *nr_new(struct event_base *base, ipc_client_t *naming, int request_timeout_ms)
{
    if (!base || !naming)
        return NULL;
    nr_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&r->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    r->base = base;
    r->naming = naming;
    r->timeout_ms = request_timeout_ms > 0 ? request_timeout_ms : 5000;
    r->retry_ev = evtimer_new(base, on_retry, r);
    if (!r->retry_ev || ipc_client_subscribe(naming, NR_TOPIC) < 0) {
        log_error("naming replica: cannot subscribe to topic %s", NR_TOPIC);
        if (r->retry_ev)
            event_free(r->retry_ev);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return NULL;
    }
    /* the client reports "connected" from the loop; the snapshot request
     * goes out then (nr_on_state) */
    return r;
}

void nr_free(nr_t *r)
{
    if (!r)
        return;
    if (r->snapreq)
        r->snapreq->r = NULL; /* its callback frees it */
    event_free(r->retry_ev);
    nr_svc_t *e, *tmp;
    HASH_ITER(hh, r->services, e, tmp)
    {
        svc_destroy(r, e);
    }
    nr_inst_t *x, *xt;
    HASH_ITER(hh, r->instances, x, xt)
    {
        HASH_DEL(r->instances, x);
        free(x);
    }
    nr_nsb_t *b, *bt;
    HASH_ITER(hh, r->nsbs, b, bt)
    {
        HASH_DEL(r->nsbs, b);
        free(b->name);
        free(b);
    }
    namespaces_free(r);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void nr_on_push(nr_t *r, Lodestar__Envelope *push)
{
    if (!r || !push)
        return;
    nr_lock(r);
    switch (push->body_case) {
    case LODESTAR__ENVELOPE__BODY_NAMING_CHANGE:
        apply_change(r, push->naming_change);
        break;
    case LODESTAR__ENVELOPE__BODY_NAMING_SNAPSHOT:
        apply_snapshot(r, push->naming_snapshot);
        break;
    case LODESTAR__ENVELOPE__BODY_EVENT: {
        const Lodestar__Event *ev = push->event;
        if (!ev->topic || strcmp(ev->topic, NR_TOPIC) != 0) {
            log_debug("naming replica: event on topic %s ignored", ev->topic ? ev->topic : "?");
            break;
        }
        ProtobufCAllocator *al = ipc_frame_allocator(); /* lives as long as the push */
        Lodestar__NamingChange *ch = lodestar__naming_change__unpack(al, ev->data.len, ev->data.data);
        if (!ch) {
            log_warn("naming replica: event seq %llu on topic %s does not hold a NamingChange (%zu bytes)",
                     (unsigned long long)ev->seq, NR_TOPIC, ev->data.len);
            break;
        }
        apply_change(r, ch);
        if (!al) /* the frame arena releases its part with the push */
            lodestar__naming_change__free_unpacked(ch, NULL);
        break;
    }
    default:
        log_debug("naming replica: push %s ignored", ipc_type_name(push->body_case));
        break;
    }
    nr_unlock(r);
}

void nr_lock(nr_t *r)
{
    if (r)
        pthread_mutex_lock(&r->mu);
}

void nr_unlock(nr_t *r)
{
    if (r)
        pthread_mutex_unlock(&r->mu);
}

void nr_on_state(nr_t *r, bool connected)
{
    if (!r)
        return;
    r->connected = connected;
    if (!connected) {
        evtimer_del(r->retry_ev);
        /* a request in flight fails with -ECONNRESET on its own */
        return;
    }
    evtimer_del(r->retry_ev);
    if (!r->snapreq)
        request_snapshot(r);
}

bool nr_ready(const nr_t *r) { return r && r->ready; }

const nr_service_t *nr_service(const nr_t *r, const char *ns, const char *name)
{
    if (!r || !ns || !name)
        return NULL;
    nr_svc_t *e = svc_find(r, ns, name);
    return e && e->live ? &e->pub : NULL;
}

const Lodestar__NamingInstance *nr_instance(const nr_t *r, const char *id, const nr_service_t **svc)
{
    if (svc)
        *svc = NULL;
    if (!r || !id || !*id)
        return NULL;
    nr_inst_t *x = NULL;
    HASH_FIND_STR(r->instances, id, x);
    if (!x)
        return NULL;
    if (svc)
        *svc = &x->svc->pub;
    return x->inst;
}

void nr_foreach_service(const nr_t *r, const char *ns, void (*fn)(const nr_service_t *svc, void *arg), void *arg)
{
    if (!r || !fn)
        return;
    if (ns) {
        nr_nsb_t *b = NULL;
        HASH_FIND_STR(r->nsbs, ns, b);
        if (!b)
            return;
        nr_svc_t *e, *tmp;
        DL_FOREACH_SAFE(b->head, e, tmp)
        {
            fn(&e->pub, arg);
        }
        return;
    }
    nr_svc_t *e, *tmp;
    HASH_ITER(hh, r->services, e, tmp)
    {
        if (e->live)
            fn(&e->pub, arg);
    }
}

size_t nr_namespaces(const nr_t *r, V1__Namespace *const **out)
{
    if (!r) {
        if (out)
            *out = NULL;
        return 0;
    }
    if (out)
        *out = r->namespaces;
    return r->n_namespaces;
}

static int cmp_svc(const void *a, const void *b)
{
    const nr_svc_t *x = *(nr_svc_t *const *)a, *y = *(nr_svc_t *const *)b;
    int c = strcmp(x->pub.ns, y->pub.ns);
    return c ? c : strcmp(x->pub.name, y->pub.name);
}

/* SHA-1 over (namespace, name, revision) of every service, sorted by
 * namespace and name: the list changes revision whenever a service comes,
 * goes, or changes. */
static int compute_revision(nr_svc_t **v, size_t n, char out[NAMING_HEX_LEN + 1])
{
    qsort(v, n, sizeof *v, cmp_svc);
    naming_digest_t d;
    if (naming_digest_init(&d) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        naming_digest_add_str(&d, v[i]->pub.ns);
        naming_digest_add_str(&d, v[i]->pub.name);
        naming_digest_add_str(&d, v[i]->pub.revision);
    }
    naming_digest_hex(&d, out);
    return 0;
}

const char *nr_services_revision(nr_t *r, const char *ns)
{
    if (!r)
        return "";
    bool all = !ns || !*ns;
    nr_nsb_t *b = NULL;
    if (!all) {
        HASH_FIND_STR(r->nsbs, ns, b);
        if (!b || b->count == 0)
            return "";
        if (b->rev_valid)
            return b->rev;
    } else if (r->all_rev_valid) {
        return r->all_rev[0] ? r->all_rev : "";
    }
    size_t n = 0;
    if (all) {
        nr_svc_t *e, *tmp;
        HASH_ITER(hh, r->services, e, tmp)
        {
            if (e->live)
                n++;
        }
    } else {
        n = b->count;
    }
    if (n == 0) {
        r->all_rev[0] = '\0';
        r->all_rev_valid = true;
        return "";
    }
    nr_svc_t **v = malloc(n * sizeof *v);
    if (!v)
        return "";
    size_t k = 0;
    if (all) {
        nr_svc_t *e, *tmp;
        HASH_ITER(hh, r->services, e, tmp)
        {
            if (e->live)
                v[k++] = e;
        }
    } else {
        nr_svc_t *e;
        DL_FOREACH(b->head, e)
        {
            v[k++] = e;
        }
    }
    char *out = all ? r->all_rev : b->rev;
    int rc = compute_revision(v, k, out);
    free(v);
    if (rc < 0)
        return "";
    if (all)
        r->all_rev_valid = true;
    else
        b->rev_valid = true;
    return out;
}

int nr_on_change(nr_t *r, nr_change_fn fn, void *arg)
{
    if (!r || !fn)
        return -EINVAL;
    if (r->n_listeners >= NR_MAX_LISTENERS)
        return -ENOSPC;
    r->listeners[r->n_listeners++] = (nr_listener_t){.fn = fn, .arg = arg};
    return 0;
}

nr_cache_slot_t *nr_cache(const nr_service_t *svc, int slot)
{
    if (!svc || slot < 0 || slot >= NR_CACHE_SLOTS)
        return NULL;
    return &svc_of(svc)->pub.cache[slot];
}

uint64_t nr_seq(const nr_t *r) { return r ? r->last_seq : 0; }

size_t nr_service_count(const nr_t *r)
{
    if (!r)
        return 0;
    size_t n = 0;
    nr_svc_t *e, *tmp;
    HASH_ITER(hh, r->services, e, tmp)
    {
        if (e->live)
            n++;
    }
    return n;
}

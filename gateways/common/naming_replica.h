/*
 * naming_replica.h: a gateway's read replica of the naming data.
 *
 * Discovery never crosses a process boundary: every gateway keeps all
 * namespaces, services and instances in memory, fed by the naming worker:
 * on every (re)connect of the naming IPC client the replica asks for a
 * NamingSnapshot, and between snapshots it applies the NamingChange pushes
 * of topic "naming". Per service it keeps the state with the highest seq,
 * so a push that overtakes the snapshot (or the reverse) is harmless.
 *
 * Each service also holds encoded-response cache slots, owned by whichever
 * protocol fills them (e.g. the packed Polaris DiscoverResponse for
 * "all instances" and "healthy only"). A slot is freed whenever the
 * service's state changes, so a cached answer is always for the current
 * revision; protocols encode once per change, not once per request.
 *
 * Threads. The replica changes only on its event loop's thread (pushes,
 * snapshots), always under its lock. Code on that thread reads without the
 * lock; code on any other thread (the gRPC completion-queue thread serving
 * Discover) holds nr_lock while it reads, fills cache slots, or uses data
 * that points into the replica, such as a cache slot it is copying.
 */
#ifndef LODESTAR_NAMING_REPLICA_H
#define LODESTAR_NAMING_REPLICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ipc.h"

struct event_base;

#define NR_CACHE_SLOTS 8

typedef struct nr_cache_slot {
    uint8_t *data;
    size_t len;
} nr_cache_slot_t;

typedef struct nr_service {
    const char *ns;                  /* namespace name */
    const char *name;                /* service name */
    const char *revision;            /* service.revision, "" if none */
    Lodestar__NamingServiceState *state; /* owned by the replica; read-only for users */
    uint64_t seq;
    uint32_t n_unhealthy;            /* instances whose healthy is false */
    nr_cache_slot_t cache[NR_CACHE_SLOTS]; /* freed on every change */
} nr_service_t;

typedef struct nr nr_t;

/* What one pushed delta did to a service, for listeners that keep state per
 * instance and should not walk the whole service on every change: the
 * replica's copies of the instances added or changed (in svc->state), and
 * the ids the worker removed (some may not have been held). Valid during
 * the callback only. */
typedef struct nr_delta {
    const Lodestar__NamingInstance *const *changed;
    size_t n_changed;
    const char *const *removed;
    size_t n_removed;
} nr_delta_t;

/* Called after the replica applied a change to a service (svc->state is the
 * new state; svc->state->deleted when it went away) or, with svc NULL, after
 * a full snapshot was loaded. delta is set when the change was a delta on
 * top of what the listener saw before; NULL when the whole state was
 * replaced (the listener then re-reads svc->state). */
typedef void (*nr_change_fn)(nr_t *r, const nr_service_t *svc, const nr_delta_t *delta, void *arg);

/* naming: the gateway's IPC client to the naming worker (gw_worker(gw,
 * "naming")); the replica subscribes to topic "naming" on it and requests
 * snapshots through it. It does not take ownership. */
nr_t *nr_new(struct event_base *base, ipc_client_t *naming, int request_timeout_ms);
void nr_free(nr_t *r);

/* The gateway's ipc_client push and state callbacks must be forwarded here
 * (gateway.c does this for the naming client). */
void nr_on_push(nr_t *r, Lodestar__Envelope *push);
void nr_on_state(nr_t *r, bool connected);

/* True once a snapshot has been loaded (discovery answers only then). */
bool nr_ready(const nr_t *r);

const nr_service_t *nr_service(const nr_t *r, const char *ns, const char *name);
/* An instance by id, with the service it belongs to (may be NULL). */
const Lodestar__NamingInstance *nr_instance(const nr_t *r, const char *id, const nr_service_t **svc);
/* Every live service in namespace ns (NULL: all), in no particular order. */
void nr_foreach_service(const nr_t *r, const char *ns, void (*fn)(const nr_service_t *svc, void *arg), void *arg);
/* Namespaces as the worker last sent them. */
size_t nr_namespaces(const nr_t *r, V1__Namespace *const **out);
/* Revision of the service list of a namespace (changes when a service is
 * added or removed there), for DiscoverRequest type SERVICES. ns NULL or ""
 * means every namespace. "" when there is no live service to list. The
 * string stays valid until the next change. */
const char *nr_services_revision(nr_t *r, const char *ns);

/* Register a listener for changes (at most a few; e.g. watchers). */
int nr_on_change(nr_t *r, nr_change_fn fn, void *arg);

/* Cache slot helpers: the data is freed with free() on change. */
nr_cache_slot_t *nr_cache(const nr_service_t *svc, int slot);

/* The replica's lock (recursive; no-ops when r is NULL). See Threads above. */
void nr_lock(nr_t *r);
void nr_unlock(nr_t *r);

/* Highest change seq applied so far (snapshot or push); 0 before any. */
uint64_t nr_seq(const nr_t *r);
/* Live services in the replica. */
size_t nr_service_count(const nr_t *r);

#endif

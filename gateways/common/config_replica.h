/*
 * config_replica.h: a gateway's read replica of what config clients read.
 *
 * Every gateway keeps, per config file with a published release, the
 * ConfigFileState the config worker sends (active release, beta release
 * and its target, notification_id), fed by ConfigSnapshot pages on every
 * (re)connect of the config IPC client and by ConfigChange pushes on topic
 * "config" in between. Client reads (GetConfigFile, watch checks) are
 * answered from here with no IPC.
 *
 * Rules kept here:
 *  - per file key a state replaces the held one only when its
 *    notification_id is higher, whatever order pages and pushes arrive in;
 *    a removed file stays as a tombstone so that an older state arriving
 *    late cannot bring it back;
 *  - after the last snapshot page, live files that neither a page nor a
 *    push of this round mentioned are removed;
 *  - listeners (cfr_on_change) run after the replica applied a change, so
 *    what they read is already the new state (the watch registry relies on
 *    this to never lose a wake-up);
 *  - states are private copies, never pointers into IPC buffers.
 */
#ifndef LODESTAR_CONFIG_REPLICA_H
#define LODESTAR_CONFIG_REPLICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.pb-c.h"
#include "ipc.h"

struct event_base;

typedef struct cfr_file {
    const char *ns;    /* point into the key */
    const char *group;
    const char *name;
    const char *key;   /* "ns\0group\0name" */
    size_t keylen;
    Lodestar__ConfigFileState *state; /* NULL for a tombstone */
    uint64_t notification_id;
} cfr_file_t;

typedef struct cfr cfr_t;

/* Runs after a file's state changed (f->state NULL: it was removed). */
typedef void (*cfr_change_fn)(cfr_t *r, const cfr_file_t *f, void *arg);

/* config: the gateway's IPC client to the config worker; the replica
 * subscribes to "config" on it and pages snapshots through it. NULL gives a
 * replica fed only through cfr_on_push (tests). */
cfr_t *cfr_new(struct event_base *base, ipc_client_t *config, int request_timeout_ms);
void cfr_free(cfr_t *r);

/* The config client's push and state callbacks go here (gateway.c). A push
 * is a ConfigChange (or a ConfigSnapshot page, applied the same way), or an
 * Event on topic "config" carrying a packed ConfigChange. */
void cfr_on_push(cfr_t *r, Lodestar__Envelope *push);
void cfr_on_state(cfr_t *r, bool connected);

/* A complete snapshot was loaded at least once. */
bool cfr_ready(const cfr_t *r);

/* A file with something published, or NULL. */
const cfr_file_t *cfr_file(const cfr_t *r, const char *ns, const char *group, const char *name);
/* What the client at client_ip (may be NULL) with these tags reads of f:
 * the beta release when there is one and the client matches its target,
 * else the active release; NULL when neither applies. *beta tells which. */
const V1__ClientConfigFileInfo *cfr_client_view(const cfr_file_t *f, const char *client_ip,
                                               V1__ConfigFileTag *const *tags, size_t n_tags, bool *beta);
/* The version of that view, 0 when there is none. */
uint64_t cfr_client_version(const cfr_file_t *f, const char *client_ip, V1__ConfigFileTag *const *tags,
                           size_t n_tags);

/* Every live file (group NULL: every group of ns; ns NULL: everything). */
void cfr_foreach_file(const cfr_t *r, const char *ns, const char *group, void (*fn)(const cfr_file_t *f, void *arg),
                     void *arg);

/* Register a change listener (at most a few). 0 or -ENOSPC. */
int cfr_on_change(cfr_t *r, cfr_change_fn fn, void *arg);

/* Highest notification id seen (snapshot or push). */
uint64_t cfr_notification_id(const cfr_t *r);
/* Live files. */
size_t cfr_file_count(const cfr_t *r);

/* The key "ns\0group\0name" of a file into buf (NUL-terminated after the
 * name too); returns its length without that final NUL, or 0 when it does
 * not fit or a part is empty. */
size_t cfr_make_key(char *buf, size_t buflen, const char *ns, const char *group, const char *name);

#endif

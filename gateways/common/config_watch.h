/*
 * config_watch.h: a gateway's registry of config long-poll watchers.
 *
 * A watcher is one client request: the files it watches with the version
 * it holds of each, the client's IP and tags (for beta targeting), a
 * deadline and a completion callback. Gateways hold watchers, not the
 * config worker: the registry listens to the config replica and wakes the
 * watchers of each changed file whose version is now behind.
 *
 * Rules kept here:
 *  - cwatch_add checks every watched file against the replica and parks
 *    the watcher in the same call, on the event-loop thread: a change is
 *    either already in the replica (answered at once) or applied later,
 *    after the watcher is indexed (woken). No wake-up is lost in between;
 *  - "behind" means the version the client would read now (beta or main,
 *    for that client) is higher than the one it sent, as Polaris compares;
 *    a file with nothing published is never behind;
 *  - the replica applies a change before the registry looks at it;
 *  - a watcher's callback runs exactly once: woken (with the file it is
 *    behind on), timed out, or flushed (drain / free); never inside
 *    cwatch_add. After the callback the handle is gone;
 *  - no timer per watcher: one deadline min-heap and one libevent timer
 *    for its earliest deadline; index: uthash of file key -> list of
 *    watcher entries; a watcher is one allocation;
 *  - after a burst (many watchers parked, woken or flushed in a short
 *    while) the process gives freed memory back to the system
 *    (malloc_trim), once the burst is over (see config_watch.c).
 */
#ifndef LODESTAR_CONFIG_WATCH_H
#define LODESTAR_CONFIG_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config_replica.h"
#include "polaris_config_file.pb-c.h"

struct event_base;

typedef enum cwatch_outcome {
    CWATCH_CHANGED = 0, /* a watched file is newer for this client */
    CWATCH_TIMEOUT = 1, /* the deadline passed */
    CWATCH_FLUSHED = 2, /* the gateway drains or the registry is freed */
} cwatch_outcome_t;

typedef struct cwatch cwatch_t;
typedef struct cwatch_watcher cwatch_watcher_t;

/* outcome CWATCH_CHANGED: f is the file and view what the client reads of
 * it now (both valid only during the call); otherwise both NULL. */
typedef void (*cwatch_done_fn)(void *arg, cwatch_outcome_t outcome, const cfr_file_t *f,
                               const V1__ClientConfigFileInfo *view);

/* The registry listens to `replica` (which must outlive it). */
cwatch_t *cwatch_new(struct event_base *base, cfr_t *replica);
/* Every watcher still parked completes with CWATCH_FLUSHED first. */
void cwatch_free(cwatch_t *w);

/* One watch request. files[i] carries namespace, group, file_name and the
 * version the client holds (absent = 0). client_ip may be NULL; tags are
 * copied. timeout_ms > 0.
 * Returns 1 when a file is already behind: *behind_file / *behind_view are
 * set (valid until the replica changes), nothing is parked, done is never
 * called. Returns 0 when parked (*out, if given, is the handle).
 * -EINVAL (with the reason in err) for a request without files or a file
 * without namespace, group or name; -ENOMEM. */
int cwatch_add(cwatch_t *w, V1__ClientConfigFileInfo *const *files, size_t n_files, const char *client_ip,
               V1__ConfigFileTag *const *tags, size_t n_tags, int timeout_ms, cwatch_done_fn done, void *arg,
               cwatch_watcher_t **out, const cfr_file_t **behind_file, const V1__ClientConfigFileInfo **behind_view,
               char *err, size_t errlen);
/* Only the immediate check of cwatch_add: 1 (behind, outputs set), 0, or
 * -EINVAL. Nothing is parked. */
int cwatch_behind(cwatch_t *w, V1__ClientConfigFileInfo *const *files, size_t n_files, const char *client_ip,
                  V1__ConfigFileTag *const *tags, size_t n_tags, const cfr_file_t **behind_file,
                  const V1__ClientConfigFileInfo **behind_view, char *err, size_t errlen);
/* Forget a parked watcher without calling its callback (its client left). */
void cwatch_cancel(cwatch_t *w, cwatch_watcher_t *h);
/* Complete every parked watcher with CWATCH_FLUSHED (drain). */
void cwatch_flush(cwatch_t *w);

/* Parked watchers, and watched (file, watcher) entries. */
size_t cwatch_count(const cwatch_t *w);
size_t cwatch_entries(const cwatch_t *w);
/* Times freed memory was given back after a burst. */
size_t cwatch_trims(const cwatch_t *w);

#endif

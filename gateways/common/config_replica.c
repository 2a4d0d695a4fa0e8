/*
 * config_replica.c: see config_replica.h. Owns a gateway's copy of the
 * ConfigFileState of every published config file.
 *
 * One uthash table of files keyed by "ns\0group\0name". Snapshot rounds:
 * on every connect the replica starts a round (generation + 1) and pages
 * through ConfigSnapshotRequest/ConfigSnapshot, one page in flight at a
 * time, following `next` until `complete`; every state applied during the
 * round (from a page or a push) is marked with the round's generation, and
 * the last page removes live files left unmarked. A failed page restarts
 * the round after CFR_RETRY_MS while connected.
 */
#include "config_replica.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <uthash.h>

#include "cc_beta.h"
#include "log.h"

#define CFR_TOPIC "config"
#define CFR_RETRY_MS 1000
#define CFR_MAX_LISTENERS 4
#define CFR_KEY_MAX 512

typedef struct cr_entry {
    cfr_file_t pub;
    char *keybuf;
    uint64_t mark; /* generation of the round that last applied it */
    UT_hash_handle hh;
} cfr_entry_t;

typedef struct cr_pagereq {
    cfr_t *r; /* NULL once the replica is gone */
} cfr_pagereq_t;

typedef struct cr_listener {
    cfr_change_fn fn;
    void *arg;
} cfr_listener_t;

struct cfr {
    struct event_base *base;
    ipc_client_t *config;
    int timeout_ms;
    bool ready;
    bool connected;
    uint64_t generation;
    uint64_t notification_id;
    size_t live;
    cfr_entry_t *files;
    cfr_pagereq_t *pagereq;
    struct event *retry_ev;
    cfr_listener_t listeners[CFR_MAX_LISTENERS];
    size_t n_listeners;
};

size_t cfr_make_key(char *buf, size_t buflen, const char *ns, const char *group, const char *name)
{
    if (!ns || !group || !name || !*ns || !*group || !*name)
        return 0;
    size_t a = strlen(ns), b = strlen(group), c = strlen(name);
    if (a + b + c + 3 > buflen)
        return 0;
    memcpy(buf, ns, a + 1);
    memcpy(buf + a + 1, group, b + 1);
    memcpy(buf + a + b + 2, name, c + 1);
    return a + b + c + 2;
}

static cfr_entry_t *entry_find(const cfr_t *r, const char *key, size_t keylen)
{
    cfr_entry_t *e = NULL;
    HASH_FIND(hh, r->files, key, keylen, e);
    return e;
}

static void notify(cfr_t *r, const cfr_entry_t *e)
{
    for (size_t i = 0; i < r->n_listeners; i++)
        r->listeners[i].fn(r, &e->pub, r->listeners[i].arg);
}

/* A private copy of a state (pack, then unpack). */
static Lodestar__ConfigFileState *state_copy(const Lodestar__ConfigFileState *s)
{
    size_t n = lodestar__config_file_state__get_packed_size(s);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return NULL;
    lodestar__config_file_state__pack(s, buf);
    Lodestar__ConfigFileState *out = lodestar__config_file_state__unpack(NULL, n, buf);
    free(buf);
    return out;
}

static void entry_set_state(cfr_t *r, cfr_entry_t *e, Lodestar__ConfigFileState *st)
{
    if (e->pub.state)
        lodestar__config_file_state__free_unpacked(e->pub.state, NULL);
    bool was_live = e->pub.state != NULL;
    e->pub.state = st;
    if (was_live && !st)
        r->live--;
    else if (!was_live && st)
        r->live++;
}

/* Apply one state; listeners run when it changed the replica. */
static void apply_state(cfr_t *r, const Lodestar__ConfigFileState *s)
{
    char key[CFR_KEY_MAX];
    size_t klen = cfr_make_key(key, sizeof key, s->namespace_, s->group, s->file_name);
    if (!klen) {
        log_warn("config replica: a state without namespace, group or file name (or too long) was ignored");
        return;
    }
    if (s->notification_id > r->notification_id)
        r->notification_id = s->notification_id;
    cfr_entry_t *e = entry_find(r, key, klen);
    if (e && e->pub.notification_id >= s->notification_id) {
        if (e->pub.notification_id == s->notification_id)
            e->mark = r->generation;
        return; /* older or the same: keep what we hold */
    }
    bool removed = s->removed || (!s->release && !s->beta);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e || !(e->keybuf = malloc(klen + 1))) {
            free(e);
            log_error("config replica: out of memory for file %s/%s/%s", s->namespace_, s->group, s->file_name);
            return;
        }
        memcpy(e->keybuf, key, klen + 1);
        e->pub.key = e->keybuf;
        e->pub.keylen = klen;
        e->pub.ns = e->keybuf;
        e->pub.group = e->keybuf + strlen(e->keybuf) + 1;
        e->pub.name = e->pub.group + strlen(e->pub.group) + 1;
        HASH_ADD_KEYPTR(hh, r->files, e->keybuf, klen, e);
    }
    Lodestar__ConfigFileState *copy = NULL;
    if (!removed) {
        copy = state_copy(s);
        if (!copy) {
            log_error("config replica: out of memory copying file %s/%s/%s; it resynchronises on reconnect",
                      s->namespace_, s->group, s->file_name);
            return;
        }
    }
    e->pub.notification_id = s->notification_id;
    e->mark = r->generation;
    bool was_live = e->pub.state != NULL;
    entry_set_state(r, e, copy);
    if (copy || was_live)
        notify(r, e);
}

static void apply_states(cfr_t *r, Lodestar__ConfigFileState *const *files, size_t n, uint64_t notification_id)
{
    for (size_t i = 0; i < n; i++)
        if (files[i])
            apply_state(r, files[i]);
    if (notification_id > r->notification_id)
        r->notification_id = notification_id;
}

/* The last page of a round: remove live files the round did not mention. */
static void sweep(cfr_t *r)
{
    cfr_entry_t *e, *tmp;
    HASH_ITER(hh, r->files, e, tmp)
    {
        if (e->mark == r->generation)
            continue;
        if (e->pub.state) {
            entry_set_state(r, e, NULL);
            notify(r, e);
        }
        /* tombstones of earlier rounds are covered by this snapshot */
        HASH_DEL(r->files, e);
        free(e->keybuf);
        free(e);
    }
}

/* ------------------------------------------------------------ snapshot */

static void request_page(cfr_t *r, const char *after);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    cfr_t *r = arg;
    if (r->connected && !r->pagereq) {
        r->generation++;
        request_page(r, "");
    }
}

static void schedule_retry(cfr_t *r)
{
    struct timeval tv = {CFR_RETRY_MS / 1000, (CFR_RETRY_MS % 1000) * 1000};
    evtimer_add(r->retry_ev, &tv);
}

static void on_page(int status, Lodestar__Envelope *reply, void *arg)
{
    cfr_pagereq_t *q = arg;
    cfr_t *r = q->r;
    free(q);
    if (!r)
        return;
    r->pagereq = NULL;
    if (status != 0 || reply->body_case != LODESTAR__ENVELOPE__BODY_CONFIG_SNAPSHOT) {
        const char *why = status == -ETIMEDOUT    ? "timeout"
                          : status == -ECONNRESET ? "connection lost"
                          : status == -ENOTCONN   ? "not connected"
                          : status != 0           ? "failed"
                          : reply->body_case == LODESTAR__ENVELOPE__BODY_ERROR && reply->error->message
                              ? reply->error->message
                              : "unexpected reply";
        log_warn("config replica: snapshot page request failed (%s); retrying in %d ms", why, CFR_RETRY_MS);
        if (r->connected)
            schedule_retry(r);
        return;
    }
    const Lodestar__ConfigSnapshot *snap = reply->config_snapshot;
    apply_states(r, snap->files, snap->n_files, snap->notification_id);
    if (snap->complete) {
        sweep(r);
        if (!r->ready)
            log_info("config replica: loaded %zu files (notification id %llu)", r->live,
                     (unsigned long long)r->notification_id);
        r->ready = true;
        return;
    }
    if (!snap->next || !*snap->next) {
        log_warn("config replica: an incomplete snapshot page without a cursor; restarting the snapshot");
        schedule_retry(r);
        return;
    }
    request_page(r, snap->next);
}

static void request_page(cfr_t *r, const char *after)
{
    cfr_pagereq_t *q = calloc(1, sizeof *q);
    if (!q) {
        schedule_retry(r);
        return;
    }
    q->r = r;
    Lodestar__ConfigSnapshotRequest sr = LODESTAR__CONFIG_SNAPSHOT_REQUEST__INIT;
    sr.after = (char *)after;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_SNAPSHOT_REQUEST;
    env.config_snapshot_request = &sr;
    r->pagereq = q;
    if (ipc_client_request(r->config, &env, r->timeout_ms, on_page, q) < 0) {
        r->pagereq = NULL;
        free(q);
        schedule_retry(r);
    }
}

/* -------------------------------------------------------------- public */

cfr_t *cfr_new(struct event_base *base, ipc_client_t *config, int request_timeout_ms)
{
    if (!base)
        return NULL;
    cfr_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->base = base;
    r->config = config;
    r->timeout_ms = request_timeout_ms > 0 ? request_timeout_ms : 5000;
    r->retry_ev = evtimer_new(base, on_retry, r);
    if (!r->retry_ev || (config && ipc_client_subscribe(config, CFR_TOPIC) < 0)) {
        log_error("config replica: cannot subscribe to topic %s", CFR_TOPIC);
        if (r->retry_ev)
            event_free(r->retry_ev);
        free(r);
        return NULL;
    }
    return r;
}

void cfr_free(cfr_t *r)
{
    if (!r)
        return;
    if (r->pagereq)
        r->pagereq->r = NULL; /* its callback frees it */
    event_free(r->retry_ev);
    cfr_entry_t *e, *tmp;
    HASH_ITER(hh, r->files, e, tmp)
    {
        HASH_DEL(r->files, e);
        if (e->pub.state)
            lodestar__config_file_state__free_unpacked(e->pub.state, NULL);
        free(e->keybuf);
        free(e);
    }
    free(r);
}

void cfr_on_push(cfr_t *r, Lodestar__Envelope *push)
{
    if (!r || !push)
        return;
    switch (push->body_case) {
    case LODESTAR__ENVELOPE__BODY_CONFIG_CHANGE:
        apply_states(r, push->config_change->files, push->config_change->n_files,
                     push->config_change->notification_id);
        break;
    case LODESTAR__ENVELOPE__BODY_CONFIG_SNAPSHOT:
        apply_states(r, push->config_snapshot->files, push->config_snapshot->n_files,
                     push->config_snapshot->notification_id);
        break;
    case LODESTAR__ENVELOPE__BODY_EVENT: {
        const Lodestar__Event *ev = push->event;
        if (!ev->topic || strcmp(ev->topic, CFR_TOPIC) != 0)
            break;
        Lodestar__ConfigChange *ch = lodestar__config_change__unpack(NULL, ev->data.len, ev->data.data);
        if (!ch) {
            log_warn("config replica: event on topic %s does not hold a ConfigChange (%zu bytes)", CFR_TOPIC,
                     ev->data.len);
            break;
        }
        apply_states(r, ch->files, ch->n_files, ch->notification_id);
        lodestar__config_change__free_unpacked(ch, NULL);
        break;
    }
    default:
        log_debug("config replica: push %s ignored", ipc_type_name(push->body_case));
        break;
    }
}

void cfr_on_state(cfr_t *r, bool connected)
{
    if (!r)
        return;
    r->connected = connected;
    evtimer_del(r->retry_ev);
    if (!connected || !r->config)
        return; /* a page in flight fails with -ECONNRESET on its own */
    if (!r->pagereq) {
        r->generation++;
        request_page(r, "");
    }
}

bool cfr_ready(const cfr_t *r) { return r && r->ready; }

const cfr_file_t *cfr_file(const cfr_t *r, const char *ns, const char *group, const char *name)
{
    char key[CFR_KEY_MAX];
    size_t klen = r ? cfr_make_key(key, sizeof key, ns, group, name) : 0;
    if (!klen)
        return NULL;
    cfr_entry_t *e = entry_find(r, key, klen);
    return e && e->pub.state ? &e->pub : NULL;
}

const V1__ClientConfigFileInfo *cfr_client_view(const cfr_file_t *f, const char *client_ip,
                                               V1__ConfigFileTag *const *tags, size_t n_tags, bool *beta)
{
    if (beta)
        *beta = false;
    if (!f || !f->state)
        return NULL;
    const Lodestar__ConfigFileState *s = f->state;
    if (s->beta && s->beta->file && s->beta_target &&
        cc_beta_target_matches(s->beta_target, client_ip ? client_ip : "", tags, n_tags)) {
        if (beta)
            *beta = true;
        return s->beta->file;
    }
    return s->release ? s->release->file : NULL;
}

uint64_t cfr_client_version(const cfr_file_t *f, const char *client_ip, V1__ConfigFileTag *const *tags,
                           size_t n_tags)
{
    const V1__ClientConfigFileInfo *v = cfr_client_view(f, client_ip, tags, n_tags, NULL);
    return v && v->version ? v->version->value : 0;
}

void cfr_foreach_file(const cfr_t *r, const char *ns, const char *group, void (*fn)(const cfr_file_t *f, void *arg),
                     void *arg)
{
    if (!r || !fn)
        return;
    for (cfr_entry_t *e = r->files; e; e = e->hh.next) {
        if (!e->pub.state)
            continue;
        if (ns && strcmp(ns, e->pub.ns) != 0)
            continue;
        if (group && strcmp(group, e->pub.group) != 0)
            continue;
        fn(&e->pub, arg);
    }
}

int cfr_on_change(cfr_t *r, cfr_change_fn fn, void *arg)
{
    if (r->n_listeners >= CFR_MAX_LISTENERS)
        return -ENOSPC;
    r->listeners[r->n_listeners++] = (cfr_listener_t){fn, arg};
    return 0;
}

uint64_t cfr_notification_id(const cfr_t *r) { return r ? r->notification_id : 0; }

size_t cfr_file_count(const cfr_t *r) { return r ? r->live : 0; }

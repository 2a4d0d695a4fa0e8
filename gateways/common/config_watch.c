/*
 * config_watch.c: see config_watch.h. Owns the parked config watchers of
 * one gateway process.
 *
 * Layout, kept small because a node holds 100,000 of them:
 *  - a watcher is one allocation: the header, one entry per distinct
 *    watched file, the client's IP and its tags (as V1__ConfigFileTag so
 *    cc_beta_target_matches reads them directly);
 *  - an entry sits in the doubly linked list of its file key; keys live in
 *    a uthash table and are freed when their last entry leaves;
 *  - deadlines sit in one binary min-heap (the watcher knows its slot, so
 *    removal is O(log n)); one libevent timer is armed for the root.
 *
 * Memory after a burst. Most of what a held watcher costs is its client's
 * call (gRPC core's per-call state, or an HTTP connection): parking many
 * leaves the transient memory of their arrival free inside the heap, and
 * answering many frees their calls. glibc keeps freed heap memory for reuse
 * and rarely hands it back, so after a burst (within one CW_TRIM_DELAY_MS
 * window, at least CW_TRIM_MIN watchers parked or completed, and a quarter
 * of the most held since the last trim: clients arriving en masse, a wake
 * of every watcher, a drain; not the steady trickle of timeouts and
 * re-polls), malloc_trim gives the free pages back once the burst has been
 * over for CW_TRIM_DELAY_MS (its answers have gone out by then).
 */
#include "config_watch.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <uthash.h>
#include <utlist.h>

#include "log.h"

#define CW_KEY_MAX 512
#define CW_TRIM_MIN 1024      /* watchers parked or completed that make a burst */
#define CW_TRIM_DELAY_MS 2000 /* burst window, and quiet time before the trim */

typedef struct cwatch_key cwatch_key_t;
typedef struct cwatch_entry cwatch_entry_t;

struct cwatch_entry {
    cwatch_watcher_t *w;
    cwatch_key_t *k;
    uint64_t version; /* what the client holds */
    cwatch_entry_t *prev, *next;
};

struct cwatch_watcher {
    cwatch_done_fn done;
    void *arg;
    int64_t deadline_ms; /* CLOCK_MONOTONIC */
    uint32_t heap_idx;
    uint16_t n_entries;
    uint16_t n_tags;
    char *ip;                 /* into this allocation, NULL when unknown */
    V1__ConfigFileTag **tags; /* into this allocation */
    cwatch_entry_t entries[];
};

struct cwatch_key {
    UT_hash_handle hh;
    cwatch_entry_t *head;
    size_t keylen;
    char key[];
};

struct cwatch {
    struct event_base *base;
    cfr_t *replica;
    cwatch_key_t *keys;
    cwatch_watcher_t **heap;
    size_t n_heap, cap_heap;
    size_t n_entries;
    struct event *timer;
    int64_t armed_ms; /* deadline the timer is armed for, 0 when not armed */
    struct event *trim_timer;
    size_t burst;           /* watchers parked or completed in the current window */
    int64_t window_ms;      /* start of that window (CW_TRIM_DELAY_MS long) */
    size_t peak_since_trim; /* most watchers held since the last trim */
    size_t trims;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- heap */

static void heap_set(cwatch_t *w, size_t i, cwatch_watcher_t *x)
{
    w->heap[i] = x;
    x->heap_idx = (uint32_t)i;
}

static void heap_up(cwatch_t *w, size_t i)
{
    cwatch_watcher_t *x = w->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (w->heap[p]->deadline_ms <= x->deadline_ms)
            break;
        heap_set(w, i, w->heap[p]);
        i = p;
    }
    heap_set(w, i, x);
}

static void heap_down(cwatch_t *w, size_t i)
{
    cwatch_watcher_t *x = w->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        int64_t best = x->deadline_ms;
        if (l < w->n_heap && w->heap[l]->deadline_ms < best) {
            m = l;
            best = w->heap[l]->deadline_ms;
        }
        if (l + 1 < w->n_heap && w->heap[l + 1]->deadline_ms < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(w, i, w->heap[m]);
        i = m;
    }
    heap_set(w, i, x);
}

static int heap_push(cwatch_t *w, cwatch_watcher_t *x)
{
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 1024;
        cwatch_watcher_t **h = realloc(w->heap, cap * sizeof *h);
        if (!h)
            return -ENOMEM;
        w->heap = h;
        w->cap_heap = cap;
    }
    w->heap[w->n_heap] = x;
    x->heap_idx = (uint32_t)w->n_heap++;
    heap_up(w, x->heap_idx);
    return 0;
}

static void heap_remove(cwatch_t *w, cwatch_watcher_t *x)
{
    size_t i = x->heap_idx;
    cwatch_watcher_t *last = w->heap[--w->n_heap];
    if (i == w->n_heap)
        return;
    heap_set(w, i, last);
    if (i > 0 && w->heap[(i - 1) / 2]->deadline_ms > last->deadline_ms)
        heap_up(w, i);
    else
        heap_down(w, i);
}

static void arm(cwatch_t *w)
{
    if (w->n_heap == 0) {
        if (w->armed_ms)
            evtimer_del(w->timer);
        w->armed_ms = 0;
        return;
    }
    int64_t d = w->heap[0]->deadline_ms;
    if (w->armed_ms == d)
        return;
    int64_t wait = d - now_ms();
    if (wait < 0)
        wait = 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    evtimer_add(w->timer, &tv);
    w->armed_ms = d;
}

/* ---------------------------------------------------------- index */

static void detach(cwatch_t *w, cwatch_watcher_t *x)
{
    for (uint16_t i = 0; i < x->n_entries; i++) {
        cwatch_entry_t *e = &x->entries[i];
        cwatch_key_t *k = e->k;
        DL_DELETE(k->head, e);
        w->n_entries--;
        if (!k->head) {
            HASH_DEL(w->keys, k);
            free(k);
        }
    }
    heap_remove(w, x);
}

static void on_trim(evutil_socket_t fd, short what, void *arg)
{
    cwatch_t *w = arg;
    int64_t t0 = now_ms();
    malloc_trim(0);
    log_debug("config watch: gave freed memory back after a burst (%zu watchers held) in %lld ms", w->n_heap,
              (long long)(now_ms() - t0));
    w->trims++;
    w->burst = 0;
    w->peak_since_trim = w->n_heap;
}

/* Count `n` watchers parked or completed; while a burst goes on, the trim
 * waits until it has been quiet for CW_TRIM_DELAY_MS. */
static void note_burst(cwatch_t *w, size_t n)
{
    if (!n)
        return;
    int64_t now = now_ms();
    if (now - w->window_ms > CW_TRIM_DELAY_MS) {
        w->window_ms = now;
        w->burst = 0;
    }
    w->burst += n;
    if (w->burst < CW_TRIM_MIN || w->burst < w->peak_since_trim / 4)
        return;
    struct timeval tv = {CW_TRIM_DELAY_MS / 1000, (CW_TRIM_DELAY_MS % 1000) * 1000};
    evtimer_add(w->trim_timer, &tv); /* re-adding a pending timer pushes it back */
}

static void complete(cwatch_watcher_t *x, cwatch_outcome_t o, const cfr_file_t *f, const V1__ClientConfigFileInfo *v)
{
    cwatch_done_fn done = x->done;
    void *arg = x->arg;
    free(x);
    done(arg, o, f, v);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    cwatch_t *w = arg;
    w->armed_ms = 0;
    int64_t now = now_ms();
    size_t n = 0;
    while (w->n_heap && w->heap[0]->deadline_ms <= now) {
        cwatch_watcher_t *x = w->heap[0];
        detach(w, x);
        complete(x, CWATCH_TIMEOUT, NULL, NULL);
        n++;
    }
    note_burst(w, n);
    arm(w);
}

/* A replica change: wake the watchers of that file that are now behind.
 * Woken watchers are detached first, then called, so callbacks may add or
 * cancel watchers freely. */
static void on_change(cfr_t *r, const cfr_file_t *f, void *arg)
{
    cwatch_t *w = arg;
    cwatch_key_t *k = NULL;
    HASH_FIND(hh, w->keys, f->key, f->keylen, k);
    if (!k || !f->state)
        return;
    size_t n = 0, cap = 0;
    cwatch_watcher_t **woken = NULL;
    cwatch_entry_t *e;
    DL_FOREACH(k->head, e)
    {
        cwatch_watcher_t *x = e->w;
        if (cfr_client_version(f, x->ip, x->tags, x->n_tags) <= e->version)
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            cwatch_watcher_t **v = realloc(woken, nc * sizeof *v);
            if (!v) {
                log_error("config watch: out of memory waking watchers of %s/%s/%s; they wake on timeout",
                          f->ns, f->group, f->name);
                break;
            }
            woken = v;
            cap = nc;
        }
        woken[n++] = x;
    }
    for (size_t i = 0; i < n; i++)
        detach(w, woken[i]);
    for (size_t i = 0; i < n; i++) {
        cwatch_watcher_t *x = woken[i];
        const V1__ClientConfigFileInfo *v = cfr_client_view(f, x->ip, x->tags, x->n_tags, NULL);
        complete(x, CWATCH_CHANGED, f, v);
    }
    free(woken);
    note_burst(w, n);
    arm(w);
}

/* ---------------------------------------------------------- public */

cwatch_t *cwatch_new(struct event_base *base, cfr_t *replica)
{
    if (!base || !replica)
        return NULL;
    cwatch_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->base = base;
    w->replica = replica;
    w->timer = evtimer_new(base, on_timer, w);
    w->trim_timer = evtimer_new(base, on_trim, w);
    if (!w->timer || !w->trim_timer || cfr_on_change(replica, on_change, w) < 0) {
        if (w->timer)
            event_free(w->timer);
        if (w->trim_timer)
            event_free(w->trim_timer);
        free(w);
        return NULL;
    }
    return w;
}

void cwatch_flush(cwatch_t *w)
{
    if (!w)
        return;
    size_t n = 0;
    while (w->n_heap) {
        cwatch_watcher_t *x = w->heap[w->n_heap - 1];
        detach(w, x);
        complete(x, CWATCH_FLUSHED, NULL, NULL);
        n++;
    }
    note_burst(w, n);
    arm(w);
}

void cwatch_free(cwatch_t *w)
{
    if (!w)
        return;
    cwatch_flush(w);
    event_free(w->timer);
    event_free(w->trim_timer);
    free(w->heap);
    free(w);
}

static const char *svv(const Google__Protobuf__StringValue *v) { return v && v->value ? v->value : ""; }

int cwatch_behind(cwatch_t *w, V1__ClientConfigFileInfo *const *files, size_t n_files, const char *client_ip,
                  V1__ConfigFileTag *const *tags, size_t n_tags, const cfr_file_t **behind_file,
                  const V1__ClientConfigFileInfo **behind_view, char *err, size_t errlen)
{
    if (n_files == 0) {
        snprintf(err, errlen, "no file to watch");
        return -EINVAL;
    }
    if (n_files > UINT16_MAX || n_tags > UINT16_MAX) {
        snprintf(err, errlen, "too many files (%zu) or tags (%zu) in one watch", n_files, n_tags);
        return -EINVAL;
    }
    char key[CW_KEY_MAX];
    for (size_t i = 0; i < n_files; i++) {
        const V1__ClientConfigFileInfo *fi = files[i];
        if (!fi || !cfr_make_key(key, sizeof key, svv(fi->namespace_), svv(fi->group), svv(fi->file_name))) {
            snprintf(err, errlen, "watch_files[%zu]: namespace, group and file_name are required", i);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < n_files; i++) {
        const V1__ClientConfigFileInfo *fi = files[i];
        const cfr_file_t *f = cfr_file(w->replica, svv(fi->namespace_), svv(fi->group), svv(fi->file_name));
        if (!f)
            continue;
        const V1__ClientConfigFileInfo *v = cfr_client_view(f, client_ip, tags, n_tags, NULL);
        uint64_t have = fi->version ? fi->version->value : 0;
        if (v && v->version && v->version->value > have) {
            *behind_file = f;
            *behind_view = v;
            return 1;
        }
    }
    return 0;
}

int cwatch_add(cwatch_t *w, V1__ClientConfigFileInfo *const *files, size_t n_files, const char *client_ip,
               V1__ConfigFileTag *const *tags, size_t n_tags, int timeout_ms, cwatch_done_fn done, void *arg,
               cwatch_watcher_t **out, const cfr_file_t **behind_file, const V1__ClientConfigFileInfo **behind_view,
               char *err, size_t errlen)
{
    if (out)
        *out = NULL;
    /* 1. validate, and answer at once when a file is already behind */
    int rc = cwatch_behind(w, files, n_files, client_ip, tags, n_tags, behind_file, behind_view, err, errlen);
    if (rc != 0)
        return rc;
    char key[CW_KEY_MAX];
    /* 2. park: one allocation */
    size_t iplen = client_ip && *client_ip ? strlen(client_ip) + 1 : 0;
    size_t size = sizeof(cwatch_watcher_t) + n_files * sizeof(cwatch_entry_t);
    size_t tag_off = size;
    size += n_tags * (sizeof(V1__ConfigFileTag *) + sizeof(V1__ConfigFileTag) + 2 * sizeof(Google__Protobuf__StringValue));
    size_t str_off = size;
    size += iplen;
    for (size_t i = 0; i < n_tags; i++)
        size += strlen(svv(tags[i]->key)) + strlen(svv(tags[i]->value)) + 2;
    cwatch_watcher_t *x = malloc(size);
    if (!x)
        return -ENOMEM;
    memset(x, 0, str_off);
    x->done = done;
    x->arg = arg;
    x->deadline_ms = now_ms() + (timeout_ms > 0 ? timeout_ms : 1);
    char *s = (char *)x + str_off;
    if (iplen) {
        memcpy(s, client_ip, iplen);
        x->ip = s;
        s += iplen;
    }
    if (n_tags) {
        x->tags = (V1__ConfigFileTag **)((char *)x + tag_off);
        V1__ConfigFileTag *tv = (V1__ConfigFileTag *)(x->tags + n_tags);
        Google__Protobuf__StringValue *sv = (Google__Protobuf__StringValue *)(tv + n_tags);
        for (size_t i = 0; i < n_tags; i++) {
            v1__config_file_tag__init(&tv[i]);
            const char *tk = svv(tags[i]->key), *tval = svv(tags[i]->value);
            size_t a = strlen(tk) + 1, b = strlen(tval) + 1;
            google__protobuf__string_value__init(&sv[2 * i]);
            google__protobuf__string_value__init(&sv[2 * i + 1]);
            memcpy(s, tk, a);
            sv[2 * i].value = s;
            s += a;
            memcpy(s, tval, b);
            sv[2 * i + 1].value = s;
            s += b;
            tv[i].key = &sv[2 * i];
            tv[i].value = &sv[2 * i + 1];
            x->tags[i] = &tv[i];
        }
        x->n_tags = (uint16_t)n_tags;
    }
    if (heap_push(w, x) < 0) {
        free(x);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n_files; i++) {
        const V1__ClientConfigFileInfo *fi = files[i];
        size_t klen = cfr_make_key(key, sizeof key, svv(fi->namespace_), svv(fi->group), svv(fi->file_name));
        cwatch_key_t *k = NULL;
        HASH_FIND(hh, w->keys, key, klen, k);
        uint64_t have = fi->version ? fi->version->value : 0;
        bool dup = false;
        for (uint16_t j = 0; k && j < x->n_entries; j++)
            if (x->entries[j].k == k) { /* the same file twice: keep the lowest version */
                if (have < x->entries[j].version)
                    x->entries[j].version = have;
                dup = true;
            }
        if (dup)
            continue;
        if (!k) {
            k = calloc(1, sizeof *k + klen);
            if (!k) {
                detach(w, x);
                free(x);
                return -ENOMEM;
            }
            memcpy(k->key, key, klen);
            k->keylen = klen;
            HASH_ADD(hh, w->keys, key[0], klen, k);
        }
        cwatch_entry_t *e = &x->entries[x->n_entries++];
        e->w = x;
        e->k = k;
        e->version = have;
        DL_APPEND(k->head, e);
        w->n_entries++;
    }
    if (w->n_heap > w->peak_since_trim)
        w->peak_since_trim = w->n_heap;
    note_burst(w, 1);
    arm(w);
    if (out)
        *out = x;
    return 0;
}

void cwatch_cancel(cwatch_t *w, cwatch_watcher_t *h)
{
    if (!w || !h)
        return;
    detach(w, h);
    free(h);
    note_burst(w, 1);
    arm(w);
}

size_t cwatch_count(const cwatch_t *w) { return w ? w->n_heap : 0; }

size_t cwatch_entries(const cwatch_t *w) { return w ? w->n_entries : 0; }

size_t cwatch_trims(const cwatch_t *w) { return w ? w->trims : 0; }

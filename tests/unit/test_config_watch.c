/*
 * test_config_watch.c: the gateway's config replica and watch registry
 * without processes: ConfigChange pushes are fed straight into the replica
 * (cfr_on_push) and the registry's answers are recorded. Covers the
 * immediate answer when behind, wake-up on change, timeouts (and their
 * order through the deadline heap), no lost wake-up between a read and a
 * watch, beta targeting by IP and labels, ordering by notification id,
 * cancellation and flushing, giving memory back after a burst.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config_replica.h"
#include "config_watch.h"

typedef struct rec {
    int calls;
    cwatch_outcome_t outcome;
    uint64_t version;
    char file[64];
    int order; /* global completion order */
} rec_t;

static int g_order;
static struct event_base *base;
static cfr_t *rep;
static cwatch_t *cw;

static void setup(void)
{
    base = event_base_new();
    rep = cfr_new(base, NULL, 1000);
    cw = cwatch_new(base, rep);
    cr_assert(base && rep && cw, "replica and registry");
    g_order = 0;
}

static void teardown(void)
{
    cwatch_free(cw);
    cfr_free(rep);
    event_base_free(base);
}

static void on_done(void *arg, cwatch_outcome_t o, const cfr_file_t *f, const V1__ClientConfigFileInfo *v)
{
    rec_t *r = arg;
    r->calls++;
    r->outcome = o;
    r->version = v && v->version ? v->version->value : 0;
    snprintf(r->file, sizeof r->file, "%s", f ? f->name : "");
    r->order = ++g_order;
}

/* Push one state: main release `ver` (0: none), beta `beta_ver` (0: none)
 * for `beta_ip` or label env=gray. */
static void push(const char *name, uint64_t nid, uint64_t ver, uint64_t beta_ver, const char *beta_ip)
{
    Google__Protobuf__UInt64Value v1 = GOOGLE__PROTOBUF__UINT64_VALUE__INIT, v2 = GOOGLE__PROTOBUF__UINT64_VALUE__INIT;
    Google__Protobuf__StringValue md5 = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    md5.value = "m";
    v1.value = ver;
    v2.value = beta_ver;
    V1__ClientConfigFileInfo f1 = V1__CLIENT_CONFIG_FILE_INFO__INIT, f2 = V1__CLIENT_CONFIG_FILE_INFO__INIT;
    f1.version = &v1;
    f1.md5 = &md5;
    f2.version = &v2;
    f2.md5 = &md5;
    Lodestar__ConfigReleaseState r1 = LODESTAR__CONFIG_RELEASE_STATE__INIT, r2 = LODESTAR__CONFIG_RELEASE_STATE__INIT;
    r1.file = &f1;
    r2.file = &f2;
    Lodestar__ConfigBetaTarget t = LODESTAR__CONFIG_BETA_TARGET__INIT;
    char *ips[1] = {(char *)beta_ip};
    Lodestar__ConfigBetaTarget__LabelsEntry le = LODESTAR__CONFIG_BETA_TARGET__LABELS_ENTRY__INIT;
    Lodestar__ConfigBetaTarget__LabelsEntry *lep = &le;
    if (beta_ip) {
        t.client_ips = ips;
        t.n_client_ips = 1;
    } else {
        le.key = "env";
        le.value = "gray";
        t.labels = &lep;
        t.n_labels = 1;
    }
    Lodestar__ConfigFileState s = LODESTAR__CONFIG_FILE_STATE__INIT;
    s.namespace_ = "ns";
    s.group = "g";
    s.file_name = (char *)name;
    s.release = ver ? &r1 : NULL;
    s.beta = beta_ver ? &r2 : NULL;
    s.beta_target = beta_ver ? &t : NULL;
    s.notification_id = nid;
    s.removed = !ver && !beta_ver;
    Lodestar__ConfigFileState *sp = &s;
    Lodestar__ConfigChange ch = LODESTAR__CONFIG_CHANGE__INIT;
    ch.files = &sp;
    ch.n_files = 1;
    ch.notification_id = nid;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_CHANGE;
    env.config_change = &ch;
    cfr_on_push(rep, &env);
}

/* A watch of one file holding `have`, from `ip` with optional tag env=val. */
static int watch(const char *name, uint64_t have, const char *ip, const char *env_val, int timeout_ms, rec_t *r,
                 uint64_t *behind_version)
{
    Google__Protobuf__StringValue ns = GOOGLE__PROTOBUF__STRING_VALUE__INIT, g = GOOGLE__PROTOBUF__STRING_VALUE__INIT,
                                  n = GOOGLE__PROTOBUF__STRING_VALUE__INIT, tk = GOOGLE__PROTOBUF__STRING_VALUE__INIT,
                                  tv = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    Google__Protobuf__UInt64Value v = GOOGLE__PROTOBUF__UINT64_VALUE__INIT;
    ns.value = "ns";
    g.value = "g";
    n.value = (char *)name;
    v.value = have;
    V1__ClientConfigFileInfo fi = V1__CLIENT_CONFIG_FILE_INFO__INIT, *fip = &fi;
    fi.namespace_ = &ns;
    fi.group = &g;
    fi.file_name = &n;
    fi.version = &v;
    V1__ConfigFileTag tag = V1__CONFIG_FILE_TAG__INIT, *tagp = &tag;
    tk.value = "env";
    tv.value = (char *)env_val;
    tag.key = &tk;
    tag.value = &tv;
    const cfr_file_t *bf = NULL;
    const V1__ClientConfigFileInfo *bv = NULL;
    char err[128];
    int rc = cwatch_add(cw, &fip, 1, ip, env_val ? &tagp : NULL, env_val ? 1 : 0, timeout_ms, on_done, r, NULL, &bf,
                        &bv, err, sizeof err);
    if (rc == 1 && behind_version)
        *behind_version = bv->version->value;
    return rc;
}

static void run_ms(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

TestSuite(config_watch, .init = setup, .fini = teardown);

Test(config_watch, answers_at_once_when_behind)
{
    push("a", 1, 3, 0, NULL);
    rec_t r = {0};
    uint64_t bv = 0;
    cr_assert_eq(watch("a", 2, "10.0.0.9", NULL, 30000, &r, &bv), 1, "a client holding 2 of version 3 is behind");
    cr_assert_eq(bv, 3, "answered with the replica's version");
    cr_assert_eq(r.calls, 0, "the callback is not used for an immediate answer");
    cr_assert_eq(cwatch_count(cw), 0, "nothing parked");
    cr_assert_eq(watch("a", 3, "10.0.0.9", NULL, 30000, &r, NULL), 0, "a client holding 3 waits");
    cr_assert_eq(cwatch_count(cw), 1, "parked");
}

Test(config_watch, wakes_on_change_after_applying_it)
{
    push("a", 1, 1, 0, NULL);
    rec_t r = {0}, other = {0};
    cr_assert_eq(watch("a", 1, "10.0.0.9", NULL, 30000, &r, NULL), 0, "parked");
    cr_assert_eq(watch("b", 0, "10.0.0.9", NULL, 30000, &other, NULL), 0, "a watcher of an unpublished file parks");
    push("a", 2, 2, 0, NULL);
    cr_assert_eq(r.calls, 1, "woken by the publish");
    cr_assert_eq(r.outcome, CWATCH_CHANGED, "outcome changed");
    cr_assert_eq(r.version, 2, "woken with the new version");
    cr_assert_eq(cfr_client_version(cfr_file(rep, "ns", "g", "a"), "10.0.0.9", NULL, 0), 2,
                 "the replica held the new version when the watcher ran");
    cr_assert_eq(other.calls, 0, "watchers of other files are not woken");
    push("b", 3, 1, 0, NULL);
    cr_assert_eq(other.calls, 1, "first publish of a watched file wakes its watcher");
    cr_assert_eq(cwatch_count(cw), 0, "nothing left");
    cr_assert_eq(cwatch_entries(cw), 0, "no entries left");
}

Test(config_watch, older_state_does_not_wake_or_replace)
{
    push("a", 5, 4, 0, NULL);
    rec_t r = {0};
    cr_assert_eq(watch("a", 4, NULL, NULL, 30000, &r, NULL), 0, "parked");
    push("a", 3, 9, 0, NULL); /* older notification id */
    cr_assert_eq(r.calls, 0, "an older state is ignored");
    cr_assert_eq(cfr_client_version(cfr_file(rep, "ns", "g", "a"), NULL, NULL, 0), 4, "replica keeps version 4");
    push("a", 6, 0, 0, NULL); /* removed */
    cr_assert_null(cfr_file(rep, "ns", "g", "a"), "removed");
    cr_assert_eq(r.calls, 0, "a removal does not wake (nothing newer to read)");
    push("a", 4, 8, 0, NULL); /* older than the removal */
    cr_assert_null(cfr_file(rep, "ns", "g", "a"), "a late older state does not bring it back");
}

Test(config_watch, times_out_in_deadline_order)
{
    push("a", 1, 1, 0, NULL);
    enum { N = 200 };
    rec_t *r = calloc(N, sizeof *r);
    for (int i = 0; i < N; i++) {
        int t = 20 + ((i * 37) % N); /* scrambled deadlines 20..219 ms */
        cr_assert_eq(watch("a", 1, NULL, NULL, t, &r[i], NULL), 0, "parked %d", i);
    }
    rec_t keep = {0};
    cr_assert_eq(watch("a", 1, NULL, NULL, 30000, &keep, NULL), 0, "a long one");
    long long t0 = 0;
    (void)t0;
    for (int k = 0; k < 100 && cwatch_count(cw) > 1; k++)
        run_ms(10);
    cr_assert_eq(cwatch_count(cw), 1, "all short watchers timed out");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].calls, 1, "watcher %d answered once", i);
        cr_assert_eq(r[i].outcome, CWATCH_TIMEOUT, "watcher %d timed out", i);
    }
    /* a watcher with a later deadline never completes before one with an
     * earlier deadline by more than a timer tick */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            int ti = 20 + ((i * 37) % N), tj = 20 + ((j * 37) % N);
            if (ti + 15 < tj)
                cr_assert_lt(r[i].order, r[j].order, "deadline %d ms answered before %d ms", ti, tj);
        }
    cr_assert_eq(keep.calls, 0, "the long watcher still waits");
    free(r);
}

/* The lost wake-up case: a client reads version 1, a publish lands before
 * its watch arrives, then it watches holding 1. The watch must answer at
 * once (not wait 30 s for a publish that already happened). And a publish
 * right after the watch parked wakes it. */
Test(config_watch, no_lost_wakeup_between_read_and_watch)
{
    push("a", 1, 1, 0, NULL);
    uint64_t read = cfr_client_version(cfr_file(rep, "ns", "g", "a"), "10.0.0.9", NULL, 0);
    cr_assert_eq(read, 1, "client reads version 1");
    push("a", 2, 2, 0, NULL); /* the publish between GetConfigFile and WatchConfigFiles */
    rec_t r = {0};
    uint64_t bv = 0;
    cr_assert_eq(watch("a", read, "10.0.0.9", NULL, 30000, &r, &bv), 1, "the watch answers at once");
    cr_assert_eq(bv, 2, "with version 2");
    cr_assert_eq(watch("a", 2, "10.0.0.9", NULL, 30000, &r, NULL), 0, "holding 2: parked");
    push("a", 3, 3, 0, NULL);
    cr_assert_eq(r.calls, 1, "the next publish wakes it with no loop turn in between");
    cr_assert_eq(r.version, 3, "version 3");
}

Test(config_watch, beta_targets_ip_and_labels)
{
    push("a", 1, 2, 0, NULL);
    rec_t in = {0}, out = {0}, lab = {0}, nolab = {0};
    cr_assert_eq(watch("a", 2, "10.0.0.1", NULL, 30000, &in, NULL), 0, "beta client parked");
    cr_assert_eq(watch("a", 2, "10.0.0.2", NULL, 30000, &out, NULL), 0, "other client parked");
    push("a", 2, 2, 3, "10.0.0.1");
    cr_assert_eq(in.calls, 1, "the listed IP is woken by the beta");
    cr_assert_eq(in.version, 3, "and reads the beta version");
    cr_assert_eq(out.calls, 0, "others keep the main release and wait");
    uint64_t bv = 0;
    cr_assert_eq(watch("a", 2, "10.0.0.1", NULL, 30000, &in, &bv), 1, "beta client holding main is behind");
    cr_assert_eq(bv, 3, "beta version");

    push("a", 3, 2, 4, NULL); /* beta by label env=gray */
    cr_assert_eq(watch("a", 2, "10.0.0.7", "gray", 30000, &lab, &bv), 1, "labelled client is behind at once");
    cr_assert_eq(bv, 4, "reads beta 4");
    cr_assert_eq(watch("a", 2, "10.0.0.7", "blue", 30000, &nolab, NULL), 0, "other label waits");
    cr_assert_eq(out.calls, 0, "still waiting");
    push("a", 4, 5, 0, NULL); /* stop beta: main moves to 5 */
    cr_assert_eq(out.calls, 1, "everyone is woken by the new main version");
    cr_assert_eq(out.version, 5, "version 5");
    cr_assert_eq(nolab.calls, 1, "the other label too");
}

Test(config_watch, cancel_and_flush)
{
    push("a", 1, 1, 0, NULL);
    rec_t a = {0}, b = {0};
    cwatch_watcher_t *h = NULL;
    Google__Protobuf__StringValue ns = GOOGLE__PROTOBUF__STRING_VALUE__INIT, g = GOOGLE__PROTOBUF__STRING_VALUE__INIT,
                                  n = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    ns.value = "ns";
    g.value = "g";
    n.value = "a";
    V1__ClientConfigFileInfo fi = V1__CLIENT_CONFIG_FILE_INFO__INIT, *files[2] = {&fi, &fi};
    fi.namespace_ = &ns;
    fi.group = &g;
    fi.file_name = &n;
    const cfr_file_t *bf;
    const V1__ClientConfigFileInfo *bv;
    char err[128];
    cr_assert_eq(cwatch_add(cw, files, 2, NULL, NULL, 0, 30000, on_done, &a, &h, &bf, &bv, err, sizeof err), 1,
                 "version absent means 0: behind version 1");
    Google__Protobuf__UInt64Value v = GOOGLE__PROTOBUF__UINT64_VALUE__INIT;
    v.value = 1;
    fi.version = &v;
    cr_assert_eq(cwatch_add(cw, files, 2, NULL, NULL, 0, 30000, on_done, &a, &h, &bf, &bv, err, sizeof err), 0,
                 "parked");
    cr_assert_eq(cwatch_entries(cw), 1, "the same file twice is one entry");
    cwatch_cancel(cw, h);
    cr_assert_eq(cwatch_count(cw), 0, "cancelled");
    push("a", 2, 2, 0, NULL);
    cr_assert_eq(a.calls, 0, "a cancelled watcher is never called");
    cr_assert_eq(watch("a", 2, NULL, NULL, 30000, &b, NULL), 0, "parked");
    n.value = "";
    cr_assert_eq(cwatch_add(cw, files, 1, NULL, NULL, 0, 30000, on_done, &a, &h, &bf, &bv, err, sizeof err), -EINVAL,
                 "a file without name is refused");
    cr_assert(strstr(err, "watch_files[0]"), "the error names the file: %s", err);
    cwatch_flush(cw);
    cr_assert_eq(b.calls, 1, "flushed");
    cr_assert_eq(b.outcome, CWATCH_FLUSHED, "outcome flushed");
}

/* Freed memory goes back after a burst (many watchers parked and woken in
 * a short while), once the burst is over; not after a small one. */
Test(config_watch, trims_after_a_burst_only)
{
    push("a", 1, 1, 0, NULL);
    enum { SMALL = 500, BURST = 1100 };
    rec_t *r = calloc(SMALL + BURST, sizeof *r);
    for (int i = 0; i < SMALL; i++)
        cr_assert_eq(watch("a", 1, NULL, NULL, 30000, &r[i], NULL), 0, "parked");
    push("a", 2, 2, 0, NULL);
    cr_assert_eq(r[SMALL - 1].calls, 1, "woken");
    run_ms(2300);
    cr_assert_eq(cwatch_trims(cw), 0, "%d parked and woken are no burst", SMALL);

    for (int i = SMALL; i < SMALL + BURST; i++)
        cr_assert_eq(watch("a", 2, NULL, NULL, 30000, &r[i], NULL), 0, "parked");
    push("a", 3, 3, 0, NULL);
    cr_assert_eq(r[SMALL + BURST - 1].calls, 1, "woken");
    cr_assert_eq(cwatch_trims(cw), 0, "the trim waits until the burst is over");
    run_ms(2300);
    cr_assert_eq(cwatch_trims(cw), 1, "one trim after a burst of %d", BURST);
    run_ms(2300);
    cr_assert_eq(cwatch_trims(cw), 1, "and only one");
    free(r);
}

/*
 * test_health_core.c: the health checker's decisions (hc_core.c) on a
 * virtual clock: expiry after 3 x TTL and not before, healthy again on a
 * beat, the restart and store-outage windows, the protect threshold, the
 * shared-store read path, cluster ownership, clean-up, and the cost of a
 * tick with 100,000 instances.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hc_core.h"

#define T0 1700000000000LL /* a unix time in ms */

static hc_params_t params(void)
{
    return (hc_params_t){.slot_num = 100, .min_interval_ms = 100, .max_interval_ms = 10000};
}

static void sync1(hc_core_t *c, const char *svc, const char *id, uint32_t ttl_s, bool healthy, int64_t now)
{
    hc_inst_info_t v = {.id = id, .ttl_s = ttl_s, .healthy = healthy};
    hc_core_sync_service(c, "default", svc, &v, 1, 1, healthy ? 0 : 1, -1, now);
}

/* Tick every 10 ms from `from` to `to`; returns the first action of `kind`
 * for `id` (its time in *at), acting as the naming worker would: the core
 * hears the new state, then that the write is done. */
static bool run_until(hc_core_t *c, int64_t from, int64_t to, hc_act_kind_t kind, const char *id, int64_t *at)
{
    for (int64_t now = from; now <= to; now += 10) {
        hc_actions_t acts = {0};
        hc_core_tick(c, now, NULL, &acts);
        bool hit = false;
        for (size_t i = 0; i < acts.n; i++) {
            hc_inst_t *in = acts.v[i].inst;
            if (acts.v[i].kind == kind && strcmp(in->id, id) == 0 && !hit) {
                hit = true;
                *at = now;
            }
            hc_core_write_done(c, in, true, now);
        }
        hc_actions_free(&acts);
        if (hit)
            return true;
    }
    return false;
}

Test(health_core, silence_marks_unhealthy_after_three_ttl)
{
    hc_params_t p = params();
    hc_core_t *c = hc_core_new(&p, T0);
    sync1(c, "svc", "i1", 1, true, T0);
    hc_inst_t *in = hc_core_find(c, "i1");
    cr_assert(in, "the instance is known");
    cr_assert_eq(hc_core_beat(c, in, T0 + 500), HC_ACT_NONE, "a beat for a healthy instance asks for nothing");
    int64_t at = 0;
    cr_assert(run_until(c, T0, T0 + 10000, HC_ACT_DOWN, "i1", &at), "marked unhealthy at last");
    cr_assert_geq(at, T0 + 500 + 3000, "not before 3 x TTL after the last beat (marked at +%lld ms)",
                  (long long)(at - T0));
    cr_assert_leq(at, T0 + 500 + 3000 + 100, "at most one tick late (marked at +%lld ms)", (long long)(at - T0));
    cr_assert_eq(hc_core_stats(c)->marked_down, 1);
    hc_core_free(c);
}

Test(health_core, beats_keep_it_healthy_and_a_beat_brings_it_back)
{
    hc_params_t p = params();
    hc_core_t *c = hc_core_new(&p, T0);
    sync1(c, "svc", "i1", 1, true, T0);
    hc_inst_t *in = hc_core_find(c, "i1");
    for (int64_t now = T0; now < T0 + 20000; now += 10) {
        if ((now - T0) % 900 == 0)
            hc_core_beat(c, in, now);
        hc_actions_t acts = {0};
        hc_core_tick(c, now, NULL, &acts);
        cr_assert_eq(acts.n, 0, "a beating instance is never marked (at +%lld ms)", (long long)(now - T0));
        hc_actions_free(&acts);
    }
    cr_assert_lt(hc_core_stats(c)->checks, 20000 / 100, "checks follow expiry times, not ticks (%llu checks)",
                 (unsigned long long)hc_core_stats(c)->checks);
    /* the naming data says unhealthy now: the next beat asks for healthy, once */
    sync1(c, "svc", "i1", 1, false, T0 + 20000);
    cr_assert_eq(hc_core_beat(c, in, T0 + 20001), HC_ACT_UP, "a beat for an unhealthy instance: mark healthy");
    cr_assert_eq(hc_core_beat(c, in, T0 + 20002), HC_ACT_NONE, "not twice while the first is pending");
    cr_assert_eq(hc_core_write_done(c, in, true, T0 + 20010), HC_ACT_NONE);
    sync1(c, "svc", "i1", 1, true, T0 + 20010);
    cr_assert(in->healthy);
    hc_core_free(c);
}

Test(health_core, restart_window_and_restart_grace)
{
    hc_params_t p = params();
    p.restart_grace_ms = 5000;
    hc_core_t *c = hc_core_new(&p, T0);
    /* known before the start, no beat seen by this (new) core */
    sync1(c, "svc", "i1", 1, true, T0);
    int64_t at = 0;
    cr_assert(run_until(c, T0, T0 + 8000, HC_ACT_DOWN, "i1", &at), "marked in the end");
    cr_assert_geq(at, T0 + 5000, "not before restart_grace_ms (marked at +%lld ms)", (long long)(at - T0));
    hc_core_free(c);

    p.restart_grace_ms = 0;
    c = hc_core_new(&p, T0);
    sync1(c, "svc", "i1", 2, true, T0);
    cr_assert(run_until(c, T0, T0 + 8000, HC_ACT_DOWN, "i1", &at), "marked in the end");
    cr_assert_geq(at, T0 + 6000, "not before one full expiry window after the start (+%lld ms)", (long long)(at - T0));
    hc_core_free(c);
}

Test(health_core, store_outage_restarts_the_window)
{
    hc_params_t p = params();
    p.shared_store = true;
    hc_core_t *c = hc_core_new(&p, T0);
    sync1(c, "svc", "i1", 1, true, T0);
    hc_inst_t *in = hc_core_find(c, "i1");
    hc_core_beat(c, in, T0);
    /* the store was down from +1 s to +10 s: the worker did not tick; now it is back */
    hc_core_store_back(c, T0 + 10000);
    hc_insts_t need = {0};
    hc_actions_t acts = {0};
    for (int64_t now = T0 + 10000; now < T0 + 12900; now += 10) {
        hc_core_tick(c, now, &need, &acts);
        cr_assert_eq(need.n, 0, "no read needed inside the window after the store came back (+%lld)",
                     (long long)(now - T0));
        cr_assert_eq(acts.n, 0, "nothing marked inside the window");
    }
    /* after the window the instance must be read from the store */
    for (int64_t now = T0 + 12900; now <= T0 + 13200 && !need.n; now += 10)
        hc_core_tick(c, now, &need, &acts);
    cr_assert_eq(need.n, 1, "the expired instance is handed out for a store read");
    cr_assert(in->reading);
    /* another node got a beat 1 s ago: healthy, rescheduled */
    hc_core_judge(c, in, T0 + 12000, T0 + 13100, &acts);
    cr_assert_eq(acts.n, 0, "a beat in the shared store keeps it healthy");
    cr_assert_eq(in->last_beat_ms, T0 + 12000, "the store's beat is taken");
    cr_assert(hc_wheel_linked(&in->node), "checked again later");
    hc_insts_free(&need);
    hc_actions_free(&acts);
    hc_core_free(c);
}

Test(health_core, failed_reads_and_writes_are_retried)
{
    hc_params_t p = params();
    p.shared_store = true;
    hc_core_t *c = hc_core_new(&p, T0);
    sync1(c, "svc", "i1", 1, true, T0);
    hc_inst_t *in = hc_core_find(c, "i1");
    hc_insts_t need = {0};
    hc_actions_t acts = {0};
    int64_t now = T0;
    for (; !need.n && now < T0 + 5000; now += 10)
        hc_core_tick(c, now, &need, &acts);
    cr_assert_eq(need.n, 1, "read needed");
    hc_core_retry(c, in, now);
    cr_assert_not(in->reading);
    cr_assert(hc_wheel_linked(&in->node), "back on the wheel after a failed read");
    need.n = 0;
    for (int64_t t = now; !need.n && t < now + 200; t += 10)
        hc_core_tick(c, t, &need, &acts);
    cr_assert_eq(need.n, 1, "read again within min_interval_ms");
    hc_core_judge(c, in, 0, now + 200, &acts);
    cr_assert_eq(acts.n, 1, "no beat anywhere: marked unhealthy");
    cr_assert_eq(acts.v[0].kind, HC_ACT_DOWN);
    cr_assert_eq(in->pending, HC_ACT_DOWN);
    /* the write failed: pending cleared, checked again soon, marked again */
    cr_assert_eq(hc_core_write_done(c, in, false, now + 200), HC_ACT_NONE);
    cr_assert_eq(in->pending, HC_ACT_NONE);
    acts.n = need.n = 0;
    for (int64_t t = now + 200; !need.n && t < now + 400; t += 10)
        hc_core_tick(c, t, &need, &acts);
    cr_assert_eq(need.n, 1, "checked again after the failed write");
    hc_insts_free(&need);
    hc_actions_free(&acts);
    hc_core_free(c);
}

/* n instances "i0".."i<n-1>" of one service, all healthy, TTL 1 s */
static void sync_many(hc_core_t *c, const char *svc, int n, int unhealthy, int protect, int64_t now)
{
    hc_inst_info_t *v = calloc((size_t)n, sizeof *v);
    char (*ids)[16] = calloc((size_t)n, sizeof *ids);
    for (int i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "%s-%d", svc, i);
        v[i] = (hc_inst_info_t){.id = ids[i], .ttl_s = 1, .healthy = i >= unhealthy};
    }
    hc_core_sync_service(c, "default", svc, v, (size_t)n, (uint32_t)n, (uint32_t)unhealthy, protect, now);
    free(v);
    free(ids);
}

static size_t count_down(hc_core_t *c, int64_t from, int64_t to)
{
    size_t down = 0;
    for (int64_t now = from; now <= to; now += 10) {
        hc_actions_t acts = {0};
        hc_core_tick(c, now, NULL, &acts);
        for (size_t i = 0; i < acts.n; i++)
            if (acts.v[i].kind == HC_ACT_DOWN)
                down++;
        hc_actions_free(&acts);
    }
    return down;
}

Test(health_core, protect_threshold)
{
    hc_params_t p = params();
    p.protect_percent = 30;
    hc_core_t *c = hc_core_new(&p, T0);
    sync_many(c, "a", 10, 0, -1, T0);  /* global 30 % */
    sync_many(c, "b", 10, 0, 50, T0);  /* the service's own 50 % */
    sync_many(c, "z", 10, 0, 0, T0);   /* the service turned it off */
    size_t down = count_down(c, T0, T0 + 6000);
    cr_assert_eq(down, 3 + 5 + 10, "30 %% of a, 50 %% of b, all of z: got %zu", down);
    cr_assert_gt(hc_core_stats(c)->withheld, 0, "withheld marks are counted");
    /* pending marks count: nothing more while they are not confirmed */
    cr_assert_eq(count_down(c, T0 + 6000, T0 + 7000), 0, "the cap holds with marks pending");
    hc_core_free(c);

    /* a service already 30 % unhealthy gets no further marks */
    c = hc_core_new(&p, T0);
    sync_many(c, "a", 10, 3, -1, T0);
    cr_assert_eq(count_down(c, T0, T0 + 6000), 0, "already at the threshold");
    hc_core_free(c);
}

static bool owns_even(const char *id, void *arg)
{
    const char *dash = strrchr(id, '-');
    return dash && atoi(dash + 1) % 2 == *(int *)arg;
}

Test(health_core, only_owned_instances_are_checked)
{
    hc_params_t p = params();
    hc_core_t *c = hc_core_new(&p, T0);
    int parity = 0;
    hc_core_set_owner(c, owns_even, &parity);
    sync_many(c, "s", 10, 0, -1, T0);
    cr_assert_eq(hc_core_wheel_count(c), 5, "five of ten owned");
    cr_assert_eq(count_down(c, T0, T0 + 4000), 5, "only the owned ones are marked");
    parity = 1; /* membership changed: the other half is ours now */
    hc_core_reown(c, T0 + 4000);
    cr_assert_eq(hc_core_wheel_count(c), 5, "the other five are on the wheel now");
    hc_inst_t *odd = hc_core_find(c, "s-1");
    cr_assert(odd->owned && !hc_core_find(c, "s-0")->owned);
    cr_assert_eq(count_down(c, T0 + 4000, T0 + 5000), 5, "the new share is checked at once");
    hc_core_free(c);
}

Test(health_core, cleanup_deregisters_long_unhealthy_instances)
{
    hc_params_t p = params();
    p.cleanup_after_ms = 5000;
    hc_core_t *c = hc_core_new(&p, T0);
    hc_inst_info_t v[2] = {{.id = "old", .ttl_s = 1, .healthy = false, .mtime_ms = T0 - 60000},
                           {.id = "new", .ttl_s = 1, .healthy = false}};
    hc_core_sync_service(c, "default", "s", v, 2, 2, 2, -1, T0);
    hc_actions_t acts = {0};
    hc_core_cleanup(c, T0 + 1000, &acts);
    cr_assert_eq(acts.n, 0, "nothing inside the start window");
    hc_core_cleanup(c, T0 + 3100, &acts);
    cr_assert_eq(acts.n, 1, "the instance unhealthy for a minute goes, got %zu", acts.n);
    cr_assert_str_eq(acts.v[0].inst->id, "old");
    cr_assert_eq(acts.v[0].kind, HC_ACT_DELETE);
    hc_core_cleanup(c, T0 + 3200, &acts);
    cr_assert_eq(acts.n, 1, "not twice while pending");
    /* "new" beats: never deleted while beating */
    hc_inst_t *n = hc_core_find(c, "new");
    cr_assert_eq(hc_core_beat(c, n, T0 + 5500), HC_ACT_UP, "its beat asks for healthy");
    hc_core_write_done(c, n, false, T0 + 5510); /* that write failed: still unhealthy */
    acts.n = 0;
    hc_core_cleanup(c, T0 + 6000, &acts);
    cr_assert_eq(acts.n, 0, "a beating instance is not deleted");
    hc_core_cleanup(c, T0 + 9000, &acts);
    cr_assert_eq(acts.n, 1, "once silent for an expiry window and unhealthy long enough, it goes");
    hc_actions_free(&acts);
    hc_core_free(c);
}

Test(health_core, sync_adds_moves_and_drops)
{
    hc_params_t p = params();
    hc_core_t *c = hc_core_new(&p, T0);
    sync_many(c, "a", 3, 0, -1, T0);
    cr_assert_eq(hc_core_count(c), 3);
    hc_inst_info_t v[2] = {{.id = "a-0", .ttl_s = 2, .healthy = true}, {.id = "x", .ttl_s = 0, .healthy = true}};
    hc_core_sync_service(c, "default", "b", v, 2, 2, 0, -1, T0);
    hc_inst_t *moved = hc_core_find(c, "a-0");
    cr_assert_str_eq(moved->svc->name, "b", "a-0 moved to service b");
    cr_assert_eq(moved->ttl_ms, 2000, "TTL updated");
    cr_assert_eq(hc_core_find(c, "x")->ttl_ms, 5000, "TTL 0 means Polaris' default 5 s");
    sync_many(c, "a", 2, 0, -1, T0); /* a-0 and a-1: a-0 moves back */
    cr_assert_str_eq(hc_core_find(c, "a-0")->svc->name, "a");
    cr_assert_null(hc_core_find(c, "a-2"), "a-2 left service a");
    hc_core_sync_begin(c);
    sync_many(c, "a", 2, 0, -1, T0);
    hc_core_sync_end(c);
    cr_assert_null(hc_core_find(c, "x"), "a full resync drops services it did not see");
    hc_core_drop_service(c, "default", "a");
    cr_assert_eq(hc_core_count(c), 0, "dropping the service drops its instances");
    cr_assert_eq(hc_core_wheel_count(c), 0, "and their wheel entries");
    hc_core_free(c);
}

Test(health_core, a_tick_costs_what_is_due)
{
    hc_params_t p = {.slot_num = 30, .min_interval_ms = 1000, .max_interval_ms = 30000};
    hc_core_t *c = hc_core_new(&p, T0);
    enum { N = 100000 };
    hc_inst_info_t *v = calloc(N, sizeof *v);
    char (*ids)[24] = calloc(N, sizeof *ids);
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "inst-%d", i);
        v[i] = (hc_inst_info_t){.id = ids[i], .ttl_s = 5, .healthy = true};
    }
    hc_core_sync_service(c, "default", "big", v, N, N, 0, -1, T0);
    cr_assert_eq(hc_core_wheel_count(c), N);
    /* every instance beats every 5 s, spread over the period */
    int64_t now = T0;
    uint64_t checks0 = hc_core_stats(c)->checks;
    for (; now < T0 + 60000; now += 1000) {
        for (int i = 0; i < N; i++)
            if ((i % 5) == ((now - T0) / 1000) % 5)
                hc_core_beat(c, hc_core_find(c, ids[i]), now);
        hc_actions_t acts = {0};
        hc_core_tick(c, now, NULL, &acts);
        cr_assert_eq(acts.n, 0, "beating instances stay healthy");
        hc_actions_free(&acts);
    }
    uint64_t checks = hc_core_stats(c)->checks - checks0;
    /* a naive checker looks at all 100,000 every second: 6,000,000 */
    cr_assert_lt(checks, (uint64_t)N * 60 / 8, "%llu checks in 60 s for %d instances", (unsigned long long)checks, N);
    free(v);
    free(ids);
    hc_core_free(c);
}

/* A delta touches only what it names: added and changed instances are
 * taken in, ids that left (of this service only) are dropped, the rest of
 * the service stays as it was, checks included. */
Test(health_core, update_applies_only_what_a_change_names)
{
    hc_params_t p = params();
    hc_core_t *c = hc_core_new(&p, T0);
    hc_inst_info_t v[3] = {{.id = "a", .ttl_s = 5, .healthy = true},
                           {.id = "b", .ttl_s = 5, .healthy = true},
                           {.id = "c", .ttl_s = 5, .healthy = true}};
    hc_core_sync_service(c, "default", "s1", v, 3, 3, 0, -1, T0);
    sync1(c, "s2", "x", 5, true, T0);
    cr_assert_eq(hc_core_count(c), 4);

    hc_inst_info_t up[2] = {{.id = "d", .ttl_s = 7, .healthy = true}, {.id = "b", .ttl_s = 9, .healthy = false}};
    const char *gone[] = {"c", "x", "never-held"};
    hc_core_update_service(c, "default", "s1", up, 2, gone, 3, 4, 1, -1, T0 + 100);
    cr_assert_eq(hc_core_count(c), 4, "a, b, d of s1 and x of s2 expected, %zu held", hc_core_count(c));
    cr_assert(hc_core_find(c, "a"), "a untouched");
    cr_assert(hc_core_find(c, "d") && hc_core_find(c, "d")->ttl_ms == 7000, "d added with its TTL");
    cr_assert(hc_core_find(c, "b") && hc_core_find(c, "b")->ttl_ms == 9000 && !hc_core_find(c, "b")->healthy,
              "b changed");
    cr_assert_null(hc_core_find(c, "c"), "c left");
    cr_assert(hc_core_find(c, "x"), "an id of another service is not dropped by s1's change");

    /* a sweep after the update still sees a, b, d as s1's */
    hc_core_sync_service(c, "default", "s1", v, 1, 1, 0, -1, T0 + 200);
    cr_assert_null(hc_core_find(c, "b"), "a full sync drops what it lacks");
    cr_assert_null(hc_core_find(c, "d"), "including what an update added");
    cr_assert(hc_core_find(c, "a"));
    hc_core_free(c);
}

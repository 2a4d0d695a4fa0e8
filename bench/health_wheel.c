/*
 * health_wheel.c: what the health checker's time wheel costs per second,
 * measured on the checker core itself (workers/health/hc_core.c, linked
 * directly: no IPC, no gRPC), on a simulated clock so that minutes of
 * checking run in seconds.
 *
 *   lodestar-health-wheel [INSTANCES] [SECONDS] [TTL_S] [SLOT_NUM] [MIN_MS] [MAX_MS]
 *   defaults:              100000      300       5       30         1000     30000
 *
 * INSTANCES heartbeat-checked instances (100 per service) beat every TTL_S
 * (phases spread evenly); 1 % of them stop beating half way through and
 * must be marked unhealthy. Every wheel tick (MAX_MS / SLOT_NUM of
 * simulated time) the core is ticked as the health worker does. The CPU
 * time of the ticks alone is measured (CLOCK_THREAD_CPUTIME_ID) and
 * reported per simulated second, with the checks and wheel entries that
 * work consisted of; a naive checker that looks at every instance every
 * tick (reading the same instance records) is measured the same way for
 * comparison. One line per measurement:
 *   wheel instances=N ... tick_cpu_us_per_s=X checks_per_s=C visited_per_s=V marked=M
 *   naive instances=N ... scan_cpu_us_per_s=Y
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hc_core.h"

#define T0 1700000000000LL

static double cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static long arg(int argc, char **argv, int i, long dflt)
{
    return argc > i ? strtol(argv[i], NULL, 10) : dflt;
}

/* Sync the service of instance k with k (and whatever else is in
 * down[]) unhealthy. */
static void mark_down(hc_core_t *c, char (*ids)[48], long k, unsigned char *down, int64_t now)
{
    hc_inst_info_t v[100];
    long s = k / 100;
    uint32_t unhealthy = 0;
    down[k] = 1;
    for (int i = 0; i < 100; i++) {
        v[i] = (hc_inst_info_t){.id = ids[s * 100 + i], .ttl_s = 0, .healthy = !down[s * 100 + i]};
        unhealthy += down[s * 100 + i];
    }
    char svc[32];
    snprintf(svc, sizeof svc, "svc-%ld", s);
    hc_inst_t *in = hc_core_find(c, ids[k]);
    for (int i = 0; i < 100; i++)
        v[i].ttl_s = (uint32_t)(in->ttl_ms / 1000);
    hc_core_sync_service(c, "default", svc, v, 100, 100, unhealthy, -1, now);
}

int main(int argc, char **argv)
{
    long n = arg(argc, argv, 1, 100000), secs = arg(argc, argv, 2, 300), ttl = arg(argc, argv, 3, 5);
    hc_params_t p = {.slot_num = (uint32_t)arg(argc, argv, 4, 30),
                     .min_interval_ms = arg(argc, argv, 5, 1000),
                     .max_interval_ms = arg(argc, argv, 6, 30000)};
    if (n < 100 || secs < 10 || ttl < 1 || p.slot_num < 2 || p.min_interval_ms < 1 ||
        p.max_interval_ms < p.min_interval_ms) {
        fprintf(stderr, "usage: %s [INSTANCES>=100] [SECONDS>=10] [TTL_S] [SLOT_NUM] [MIN_MS] [MAX_MS]\n", argv[0]);
        return 2;
    }
    int64_t tick = p.max_interval_ms / p.slot_num;
    hc_core_t *c = hc_core_new(&p, T0);
    char (*ids)[48] = calloc((size_t)n, sizeof *ids);
    hc_inst_t **insts = calloc((size_t)n, sizeof *insts);
    hc_inst_info_t *v = calloc(100, sizeof *v);
    if (!c || !ids || !insts || !v) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (long s = 0; s < n / 100; s++) {
        char svc[32];
        snprintf(svc, sizeof svc, "svc-%ld", s);
        for (int i = 0; i < 100; i++) {
            long k = s * 100 + i;
            snprintf(ids[k], sizeof ids[k], "%040lx", (unsigned long)k * 2654435761ul);
            v[i] = (hc_inst_info_t){.id = ids[k], .ttl_s = (uint32_t)ttl, .healthy = true};
        }
        hc_core_sync_service(c, "default", svc, v, 100, 100, 0, -1, T0);
    }
    n = n / 100 * 100;
    for (long k = 0; k < n; k++)
        insts[k] = hc_core_find(c, ids[k]);

    int64_t ttl_ms = ttl * 1000, end = T0 + secs * 1000, silent_from = T0 + secs * 500;
    double tick_cpu = 0;
    uint64_t checks0 = hc_core_stats(c)->checks, visited0 = hc_core_wheel_visited(c);
    size_t marked = 0;
    hc_actions_t acts = {0};
    unsigned char *down = calloc((size_t)n, 1);
    long next_beat = 0; /* instances beat in turn: n per ttl_ms */
    for (int64_t now = T0; now < end; now += tick) {
        /* the beats of this tick (not measured: they are the relay's work) */
        long due = (long)((now - T0 + tick) * n / ttl_ms);
        for (; next_beat < due; next_beat++) {
            long k = next_beat % n;
            if (now >= silent_from && k % 100 == 0)
                continue; /* 1 % fell silent */
            hc_core_beat(c, insts[k], now);
        }
        double t = cpu_us();
        hc_core_tick(c, now, NULL, &acts);
        tick_cpu += cpu_us() - t;
        for (size_t i = 0; i < acts.n; i++) {
            /* what the naming worker would do: the instance is unhealthy
             * now (its service's new state comes back), then the answer */
            hc_inst_t *in = acts.v[i].inst;
            if (acts.v[i].kind == HC_ACT_DOWN) {
                long k = strtol(in->id, NULL, 16) / 2654435761l;
                mark_down(c, ids, k, down, now);
                marked++;
            }
            hc_core_write_done(c, in, true, now);
        }
        acts.n = 0;
    }
    hc_actions_free(&acts);
    uint64_t checks = hc_core_stats(c)->checks - checks0;
    uint64_t visited = hc_core_wheel_visited(c) - visited0;
    printf("wheel instances=%ld ttl_s=%ld slot_num=%u tick_ms=%lld min_ms=%lld max_ms=%lld simulated_s=%ld "
           "tick_cpu_us_per_s=%.0f checks_per_s=%.0f visited_per_s=%.0f marked=%zu expected_marked=%ld\n",
           n, ttl, p.slot_num, (long long)tick, (long long)p.min_interval_ms, (long long)p.max_interval_ms, secs,
           tick_cpu / (double)secs, (double)checks / (double)secs, (double)visited / (double)secs, marked,
           n / 100);
    hc_core_free(c);

    /* the naive alternative on the same records: every tick, look at every
     * instance's last beat (a fresh core, beats only, never ticked) */
    c = hc_core_new(&p, T0);
    for (long s = 0; s < n / 100; s++) {
        char svc[32];
        snprintf(svc, sizeof svc, "svc-%ld", s);
        for (int i = 0; i < 100; i++)
            v[i] = (hc_inst_info_t){.id = ids[s * 100 + i], .ttl_s = (uint32_t)ttl, .healthy = true};
        hc_core_sync_service(c, "default", svc, v, 100, 100, 0, -1, T0);
    }
    for (long k = 0; k < n; k++)
        insts[k] = hc_core_find(c, ids[k]);
    memset(down, 0, (size_t)n);
    double scan_cpu = 0;
    size_t naive_marked = 0;
    next_beat = 0;
    for (int64_t now = T0; now < end; now += tick) {
        long due = (long)((now - T0 + tick) * n / ttl_ms);
        for (; next_beat < due; next_beat++) {
            long k = next_beat % n;
            if (!(now >= silent_from && k % 100 == 0))
                hc_core_beat(c, insts[k], now);
        }
        double t = cpu_us();
        for (long k = 0; k < n; k++) {
            const hc_inst_t *in = insts[k];
            if (!down[k] && (in->last_beat_ms ? in->last_beat_ms : T0) + 3 * in->ttl_ms <= now) {
                down[k] = 1;
                naive_marked++;
            }
        }
        scan_cpu += cpu_us() - t;
    }
    printf("naive instances=%ld ttl_s=%ld tick_ms=%lld simulated_s=%ld scan_cpu_us_per_s=%.0f marked=%zu\n", n, ttl,
           (long long)tick, secs, scan_cpu / (double)secs, naive_marked);
    hc_core_free(c);
    free(down);
    free(ids);
    free(insts);
    free(v);
    return 0;
}

/*
 * test_health_wheel.c: the health checker's time wheel (hc_wheel.c):
 * entries come out when due (never early, at most one tick late), advancing
 * costs what is due rather than what is held, and moves, removals, clock
 * jumps and delays beyond the wheel's span behave.
 */
#include <criterion/criterion.h>

#include <stdlib.h>

#include "hc_wheel.h"

typedef struct item {
    hc_wheel_node_t node;
    int id;
    int64_t fired_at;
    int fired;
} item_t;

typedef struct fired_log {
    int64_t now;
    int count;
} fired_log_t;

static void on_fire(hc_wheel_node_t *node, void *arg)
{
    fired_log_t *log = arg;
    item_t *it = (item_t *)node;
    it->fired++;
    it->fired_at = log->now;
    log->count++;
}

static int advance(hc_wheel_t *w, int64_t now, fired_log_t *log)
{
    log->now = now;
    int before = log->count;
    hc_wheel_advance(w, now, on_fire, log);
    return log->count - before;
}

Test(health_wheel, entries_fire_when_due_never_early)
{
    hc_wheel_t w;
    cr_assert_eq(hc_wheel_init(&w, 30, 100, 1000000), 0, "init");
    item_t items[50] = {0};
    fired_log_t log = {0};
    for (int i = 0; i < 50; i++)
        hc_wheel_add(&w, &items[i].node, 1000000 + 37 * (i + 1)); /* 37 ms apart, within 3 s */
    cr_assert_eq(w.count, 50, "the wheel holds 50 entries");
    for (int64_t now = 1000000; now <= 1000000 + 3000; now += 10) {
        advance(&w, now, &log);
        for (int i = 0; i < 50; i++) {
            int64_t due = 1000000 + 37 * (i + 1);
            if (items[i].fired)
                cr_assert_geq(items[i].fired_at, due, "entry %d fired at %lld before it was due at %lld", i,
                              (long long)items[i].fired_at, (long long)due);
            else
                cr_assert_lt(now, due + 100, "entry %d due at %lld still waiting at %lld (more than one tick late)",
                             i, (long long)due, (long long)now);
        }
    }
    for (int i = 0; i < 50; i++)
        cr_assert_eq(items[i].fired, 1, "entry %d fired %d times", i, items[i].fired);
    cr_assert_eq(w.count, 0, "nothing left");
    hc_wheel_free(&w);
}

Test(health_wheel, cost_grows_with_what_is_due)
{
    hc_wheel_t w;
    cr_assert_eq(hc_wheel_init(&w, 300, 100, 0), 0, "init");
    enum { N = 100000 };
    item_t *items = calloc(N, sizeof *items);
    cr_assert(items);
    /* 99,900 entries due at 29 s, 100 due at 1 s */
    for (int i = 0; i < N; i++)
        hc_wheel_add(&w, &items[i].node, i < 100 ? 1000 : 29000);
    fired_log_t log = {0};
    uint64_t visited0 = w.visited;
    int fired = advance(&w, 1000, &log);
    cr_assert_eq(fired, 100, "the 100 due entries fired, got %d", fired);
    cr_assert_eq(w.visited - visited0, 100, "advancing 10 ticks looked at 100 entries, not at %llu",
                 (unsigned long long)(w.visited - visited0));
    fired = advance(&w, 28900, &log);
    cr_assert_eq(fired, 0, "nothing else is due before 29 s");
    cr_assert_eq(w.visited - visited0, 100, "empty slots cost no entry visits");
    fired = advance(&w, 29000, &log);
    cr_assert_eq(fired, N - 100, "the rest fired at 29 s");
    hc_wheel_free(&w);
    free(items);
}

Test(health_wheel, move_and_remove)
{
    hc_wheel_t w;
    cr_assert_eq(hc_wheel_init(&w, 10, 100, 0), 0, "init");
    item_t a = {0}, b = {0};
    fired_log_t log = {0};
    hc_wheel_add(&w, &a.node, 300);
    hc_wheel_add(&w, &b.node, 300);
    hc_wheel_add(&w, &a.node, 700); /* moved, not duplicated */
    cr_assert_eq(w.count, 2, "a move keeps one entry");
    hc_wheel_remove(&w, &b.node);
    cr_assert_not(hc_wheel_linked(&b.node), "removed");
    hc_wheel_remove(&w, &b.node); /* twice is harmless */
    cr_assert_eq(advance(&w, 600, &log), 0, "a was moved to 700, b removed");
    cr_assert_eq(advance(&w, 700, &log), 1, "a fires at 700");
    cr_assert_eq(a.fired_at, 700);
    cr_assert_eq(b.fired, 0, "b never fires");
    hc_wheel_free(&w);
}

Test(health_wheel, delays_beyond_the_span_come_out_on_time)
{
    hc_wheel_t w;
    cr_assert_eq(hc_wheel_init(&w, 10, 100, 0), 0, "init: the wheel spans 1 s");
    item_t a = {0};
    fired_log_t log = {0};
    hc_wheel_add(&w, &a.node, 3550);
    for (int64_t now = 0; now < 3500; now += 50)
        cr_assert_eq(advance(&w, now, &log), 0, "not due at %lld", (long long)now);
    cr_assert_eq(advance(&w, 3600, &log), 1, "due at 3550: out by the next tick");
    cr_assert_geq(a.fired_at, 3550, "never early");
    hc_wheel_free(&w);
}

Test(health_wheel, clock_jumps)
{
    hc_wheel_t w;
    cr_assert_eq(hc_wheel_init(&w, 20, 50, 10000), 0, "init");
    item_t items[20] = {0};
    fired_log_t log = {0};
    for (int i = 0; i < 20; i++)
        hc_wheel_add(&w, &items[i].node, 10000 + 40 * (i + 1));
    /* the loop stalled for an hour: one pass hands out everything due */
    cr_assert_eq(advance(&w, 10000 + 3600000, &log), 20, "everything due after a jump forward");
    item_t late = {0};
    hc_wheel_add(&w, &late.node, 3610000 + 500);
    /* the clock went back: nothing comes out early */
    cr_assert_eq(advance(&w, 5000, &log), 0, "nothing on a jump backwards");
    cr_assert_eq(advance(&w, 3610000 + 499, &log), 0, "not before due");
    cr_assert_eq(advance(&w, 3610000 + 500, &log), 1, "then on time");
    hc_wheel_free(&w);
}

Test(health_wheel, bad_arguments)
{
    hc_wheel_t w;
    cr_assert_lt(hc_wheel_init(&w, 1, 100, 0), 0, "one slot is refused");
    cr_assert_lt(hc_wheel_init(&w, 10, 0, 0), 0, "a zero tick is refused");
}

/*
 * hc_wheel.h: the health worker's time wheel (hashed timing wheel, one
 * level), as polaris-server's healthcheck.slotNum wheel.
 *
 * The wheel has n slots of tick_ms each and spans n ticks. An entry due at
 * time t (ms) goes into the slot of tick ceil(t / tick_ms), clamped to 1 ..
 * n-1 ticks after the wheel's cursor, so advancing the wheel to `now`
 * visits only the slots whose ticks passed and, in them, only the entries
 * put there: the work per second grows with the entries that are due, not
 * with how many entries the wheel holds. An entry clamped to the far end
 * of the wheel (due beyond its span) is put back when its slot comes round
 * early; callers keep delays within the span (max_check_interval_ms) so
 * that this never happens in steady state.
 *
 * Entries are intrusive (hc_wheel_node_t inside the caller's struct);
 * nothing here allocates after hc_wheel_init. Time is whatever ms clock
 * the caller passes, as long as it is the same one throughout.
 */
#ifndef LODESTAR_HC_WHEEL_H
#define LODESTAR_HC_WHEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hc_wheel_node {
    struct hc_wheel_node *prev, *next; /* NULL when not in the wheel */
    int64_t due_ms;
} hc_wheel_node_t;

typedef struct hc_wheel {
    hc_wheel_node_t *slots; /* n sentinels of circular lists */
    uint32_t n;
    int64_t tick_ms;
    int64_t cursor;    /* last tick processed */
    size_t count;      /* entries held */
    uint64_t visited;  /* entries taken out of slots by hc_wheel_advance, ever */
} hc_wheel_t;

/* n >= 2 slots of tick_ms >= 1; the cursor starts at now_ms. 0 or -ENOMEM / -EINVAL. */
int hc_wheel_init(hc_wheel_t *w, uint32_t n, int64_t tick_ms, int64_t now_ms);
/* Unlinks every entry (the entries themselves belong to the caller). */
void hc_wheel_free(hc_wheel_t *w);

/* Put (or move) an entry so that it comes out once now >= due_ms. */
void hc_wheel_add(hc_wheel_t *w, hc_wheel_node_t *node, int64_t due_ms);
void hc_wheel_remove(hc_wheel_t *w, hc_wheel_node_t *node);
static inline bool hc_wheel_linked(const hc_wheel_node_t *node) { return node->next != NULL; }

/* Advance the cursor to now_ms and hand every entry due by then to fn,
 * unlinked (fn may add it again, or add and remove others). Returns how
 * many entries were handed out. */
size_t hc_wheel_advance(hc_wheel_t *w, int64_t now_ms, void (*fn)(hc_wheel_node_t *node, void *arg), void *arg);

#endif

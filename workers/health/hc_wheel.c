/*
 * hc_wheel.c: see hc_wheel.h. Each slot is a circular doubly linked list
 * with a sentinel, so adding, moving and removing an entry are O(1).
 *
 * Rules kept here:
 *  - a slot's entries are taken from its head one by one; whatever is
 *    added while they are handed out lands at least one tick ahead, never
 *    in the slot being emptied;
 *  - when the cursor is more than one turn behind (a stalled loop, a clock
 *    jump forward) it skips whole turns: one turn visits every slot, which
 *    holds every entry;
 *  - when the clock goes backwards the cursor stays; entries then come out
 *    late rather than early.
 */
#include "hc_wheel.h"

#include <errno.h>
#include <stdlib.h>

static int64_t ceil_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) == (b < 0))) ? q + 1 : q;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

int hc_wheel_init(hc_wheel_t *w, uint32_t n, int64_t tick_ms, int64_t now_ms)
{
    if (n < 2 || tick_ms < 1)
        return -EINVAL;
    w->slots = calloc(n, sizeof *w->slots);
    if (!w->slots)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        w->slots[i].prev = w->slots[i].next = &w->slots[i];
    w->n = n;
    w->tick_ms = tick_ms;
    w->cursor = floor_div(now_ms, tick_ms);
    w->count = 0;
    w->visited = 0;
    return 0;
}

void hc_wheel_free(hc_wheel_t *w)
{
    if (!w->slots)
        return;
    for (uint32_t i = 0; i < w->n; i++) {
        hc_wheel_node_t *s = &w->slots[i];
        while (s->next != s) {
            hc_wheel_node_t *x = s->next;
            s->next = x->next;
            x->prev = x->next = NULL;
        }
    }
    free(w->slots);
    w->slots = NULL;
    w->count = 0;
}

static void unlink_node(hc_wheel_node_t *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = NULL;
}

void hc_wheel_remove(hc_wheel_t *w, hc_wheel_node_t *node)
{
    if (!node->next)
        return;
    unlink_node(node);
    w->count--;
}

void hc_wheel_add(hc_wheel_t *w, hc_wheel_node_t *node, int64_t due_ms)
{
    hc_wheel_remove(w, node);
    int64_t d = ceil_div(due_ms, w->tick_ms) - w->cursor;
    if (d < 1)
        d = 1;
    if (d > (int64_t)w->n - 1)
        d = (int64_t)w->n - 1;
    hc_wheel_node_t *s = &w->slots[(uint64_t)(w->cursor + d) % w->n];
    node->due_ms = due_ms;
    node->prev = s->prev;
    node->next = s;
    s->prev->next = node;
    s->prev = node;
    w->count++;
}

size_t hc_wheel_advance(hc_wheel_t *w, int64_t now_ms, void (*fn)(hc_wheel_node_t *node, void *arg), void *arg)
{
    int64_t target = floor_div(now_ms, w->tick_ms);
    if (target - w->cursor > (int64_t)w->n)
        w->cursor = target - (int64_t)w->n;
    size_t handed = 0;
    while (w->cursor < target) {
        w->cursor++;
        hc_wheel_node_t *s = &w->slots[(uint64_t)w->cursor % w->n];
        /* take entries one at a time from the head: fn may remove others of
         * this slot, and whatever it adds lands at least one tick ahead */
        while (s->next != s) {
            hc_wheel_node_t *x = s->next;
            unlink_node(x);
            w->count--;
            w->visited++;
            if (x->due_ms > now_ms) {
                hc_wheel_add(w, x, x->due_ms); /* clamped earlier: not due yet */
            } else {
                handed++;
                fn(x, arg);
            }
        }
    }
    return handed;
}

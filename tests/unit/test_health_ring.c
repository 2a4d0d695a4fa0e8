/*
 * test_health_ring.c: consistent hashing of instance ids over the live
 * checking nodes (hc_ring.c): the same owner whatever order the members
 * were learnt in, an even split, and a join or a leave moving only the
 * share of the node that came or went.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "hc_ring.h"

#define KEYS 30000

static void key(int i, char *buf, size_t len) { snprintf(buf, len, "%040x", (unsigned)i * 2654435761u); }

Test(health_ring, owner_does_not_depend_on_member_order)
{
    const char *a[] = {"node-a", "node-b", "node-c"};
    const char *b[] = {"node-c", "node-a", "node-b", "node-a", ""};
    hc_ring_t r1 = {0}, r2 = {0};
    cr_assert_eq(hc_ring_build(&r1, a, 3), 0);
    cr_assert_eq(hc_ring_build(&r2, b, 5), 0);
    cr_assert_eq(r2.n_members, 3, "duplicates and empty ids are ignored");
    cr_assert(hc_ring_same_members(&r1, b, 5), "the same set");
    for (int i = 0; i < 2000; i++) {
        char k[64];
        key(i, k, sizeof k);
        cr_assert_str_eq(hc_ring_owner(&r1, k), hc_ring_owner(&r2, k), "key %s", k);
    }
    hc_ring_free(&r1);
    hc_ring_free(&r2);
}

Test(health_ring, empty_ring_owns_nothing)
{
    hc_ring_t r = {0};
    cr_assert_eq(hc_ring_build(&r, NULL, 0), 0);
    cr_assert_null(hc_ring_owner(&r, "x"), "no member, no owner");
    const char *one[] = {"solo"};
    cr_assert_not(hc_ring_same_members(&r, one, 1));
    cr_assert_eq(hc_ring_build(&r, one, 1), 0);
    cr_assert_str_eq(hc_ring_owner(&r, "anything"), "solo");
    hc_ring_free(&r);
}

static int count_of(const hc_ring_t *r, const char *member)
{
    int n = 0;
    for (int i = 0; i < KEYS; i++) {
        char k[64];
        key(i, k, sizeof k);
        if (strcmp(hc_ring_owner(r, k), member) == 0)
            n++;
    }
    return n;
}

Test(health_ring, even_split)
{
    const char *m[] = {"host-1:/run/lodestar", "host-2:/run/lodestar", "host-3:/run/lodestar"};
    hc_ring_t r = {0};
    cr_assert_eq(hc_ring_build(&r, m, 3), 0);
    for (int i = 0; i < 3; i++) {
        int n = count_of(&r, m[i]);
        cr_assert(n > KEYS / 3 * 7 / 10 && n < KEYS / 3 * 13 / 10, "%s owns %d of %d keys (expected about a third)",
                  m[i], n, KEYS);
    }
    hc_ring_free(&r);
}

Test(health_ring, join_and_leave_move_only_one_share)
{
    const char *three[] = {"n1", "n2", "n3"};
    const char *four[] = {"n1", "n2", "n3", "n4"};
    hc_ring_t r3 = {0}, r4 = {0};
    cr_assert_eq(hc_ring_build(&r3, three, 3), 0);
    cr_assert_eq(hc_ring_build(&r4, four, 4), 0);
    int moved = 0;
    for (int i = 0; i < KEYS; i++) {
        char k[64];
        key(i, k, sizeof k);
        const char *before = hc_ring_owner(&r3, k), *after = hc_ring_owner(&r4, k);
        if (strcmp(before, after) != 0) {
            cr_assert_str_eq(after, "n4", "key %s moved from %s to %s: only moves to the new node are allowed", k,
                             before, after);
            moved++;
        }
    }
    cr_assert(moved > KEYS / 4 * 7 / 10 && moved < KEYS / 4 * 13 / 10,
              "about a quarter of the keys move to the new node, got %d", moved);
    /* and when n4 leaves again, exactly its keys go back where they were */
    for (int i = 0; i < KEYS; i++) {
        char k[64];
        key(i, k, sizeof k);
        if (strcmp(hc_ring_owner(&r4, k), "n4") != 0)
            cr_assert_str_eq(hc_ring_owner(&r3, k), hc_ring_owner(&r4, k), "keys of the staying nodes stay");
    }
    hc_ring_free(&r3);
    hc_ring_free(&r4);
}

Test(health_ring, hash_is_fixed)
{
    /* every node must compute the same owners, across versions too: these
     * values may never change */
    cr_assert_eq(hc_ring_hash("lodestar", 8), 0x0d8adcbb0a064b55ull, "FNV-1a 64 + splitmix64 of \"lodestar\"");
    cr_assert_eq(hc_ring_hash("", 0), 0xc3817c016ba4ff30ull, "of the empty string");
    cr_assert_neq(hc_ring_hash("a", 1), hc_ring_hash("b", 1));
}

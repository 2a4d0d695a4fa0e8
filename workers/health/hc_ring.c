/*
 * hc_ring.c: see hc_ring.h. The members are kept sorted and unique so that
 * equal sets give byte-identical rings; points with equal hashes (never
 * seen in practice) are ordered by member, so ties resolve the same way on
 * every node.
 */
#include "hc_ring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t hc_ring_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    /* splitmix64 finaliser: FNV alone clusters similar short keys */
    h += 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_point(const void *a, const void *b)
{
    const hc_ring_point_t *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->member < y->member ? -1 : x->member > y->member;
}

void hc_ring_free(hc_ring_t *r)
{
    for (size_t i = 0; i < r->n_members; i++)
        free(r->members[i]);
    free(r->members);
    free(r->points);
    memset(r, 0, sizeof *r);
}

/* Sorted unique copy of the non-empty ids. */
static char **sorted_members(const char *const *ids, size_t n, size_t *out_n)
{
    char **v = calloc(n ? n : 1, sizeof *v);
    if (!v)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] && *ids[i])
            v[k++] = (char *)ids[i];
    qsort(v, k, sizeof *v, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || strcmp(v[u - 1], v[i]) != 0)
            v[u++] = v[i];
    *out_n = u;
    return v;
}

int hc_ring_build(hc_ring_t *r, const char *const *ids, size_t n)
{
    hc_ring_free(r);
    size_t m = 0;
    char **borrowed = sorted_members(ids, n, &m);
    if (!borrowed)
        return -ENOMEM;
    r->members = calloc(m ? m : 1, sizeof *r->members);
    r->points = calloc(m ? m * HC_RING_VNODES : 1, sizeof *r->points);
    if (!r->members || !r->points) {
        free(borrowed);
        hc_ring_free(r);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m; i++) {
        r->members[i] = strdup(borrowed[i]);
        if (!r->members[i]) {
            r->n_members = i;
            free(borrowed);
            hc_ring_free(r);
            return -ENOMEM;
        }
        r->n_members = i + 1;
        for (uint32_t v = 0; v < HC_RING_VNODES; v++) {
            char buf[512];
            int len = snprintf(buf, sizeof buf, "%s#%u", borrowed[i], v);
            if (len < 0 || (size_t)len >= sizeof buf)
                len = (int)sizeof buf - 1; /* long ids: the truncated form is still the same on every node */
            r->points[r->n_points++] = (hc_ring_point_t){.hash = hc_ring_hash(buf, (size_t)len), .member = (uint32_t)i};
        }
    }
    free(borrowed);
    qsort(r->points, r->n_points, sizeof *r->points, cmp_point);
    return 0;
}

const char *hc_ring_owner(const hc_ring_t *r, const char *key)
{
    if (!r->n_points)
        return NULL;
    uint64_t h = hc_ring_hash(key, strlen(key));
    size_t lo = 0, hi = r->n_points; /* first point with hash >= h */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == r->n_points)
        lo = 0;
    return r->members[r->points[lo].member];
}

bool hc_ring_same_members(const hc_ring_t *r, const char *const *ids, size_t n)
{
    size_t m = 0;
    char **v = sorted_members(ids, n, &m);
    if (!v)
        return false;
    bool same = m == r->n_members;
    for (size_t i = 0; same && i < m; i++)
        same = strcmp(v[i], r->members[i]) == 0;
    free(v);
    return same;
}

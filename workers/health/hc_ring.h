/*
 * hc_ring.h: consistent hashing of instance ids over the live health
 * checking nodes (cluster mode).
 *
 * Every node id gets HC_RING_VNODES points on a 64-bit ring; an instance
 * belongs to the node owning the first point at or after the hash of its
 * id (wrapping round). Every node computes the same owner from the same
 * member list, whatever order it learnt the members in, and when a node
 * joins or leaves only the instances of the points it gains or loses move
 * (about 1/n of them). The hash is FNV-1a 64 followed by a 64-bit
 * finaliser (splitmix64), fixed here: changing it moves every instance.
 */
#ifndef LODESTAR_HC_RING_H
#define LODESTAR_HC_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HC_RING_VNODES 160

typedef struct hc_ring_point {
    uint64_t hash;
    uint32_t member; /* index into members */
} hc_ring_point_t;

typedef struct hc_ring {
    char **members;  /* sorted, unique */
    size_t n_members;
    hc_ring_point_t *points;
    size_t n_points;
} hc_ring_t;

/* The hash used for ids and points. */
uint64_t hc_ring_hash(const char *s, size_t len);

/* Build the ring of these member ids (duplicates and empty ids ignored).
 * 0, or -ENOMEM (the ring is left empty). */
int hc_ring_build(hc_ring_t *r, const char *const *ids, size_t n);
void hc_ring_free(hc_ring_t *r);

/* The owning member of key, or NULL when the ring is empty. */
const char *hc_ring_owner(const hc_ring_t *r, const char *key);

/* The same member list (compared as sets)? */
bool hc_ring_same_members(const hc_ring_t *r, const char *const *ids, size_t n);

#endif

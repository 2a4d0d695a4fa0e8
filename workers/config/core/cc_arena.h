/*
 * cc_arena.h: a bump allocator for building one protobuf-c message tree
 * (a response, a snapshot page, a change push) and freeing it at once.
 *
 * Rule: strings put into a message with the *_ref helpers point into the
 * config model without copying (contents can be megabytes); such a message
 * must be packed or sent before the model changes again, and the arena
 * freed right after.
 */
#ifndef LODESTAR_CC_ARENA_H
#define LODESTAR_CC_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "google/protobuf/wrappers.pb-c.h"

typedef struct cc_arena_block cc_arena_block_t;

typedef struct cc_arena {
    cc_arena_block_t *blocks;
    bool failed; /* an allocation failed (every later one returns NULL) */
} cc_arena_t;

/* Zeroed memory, or NULL (and failed set) when out of memory. */
void *cc_arena_alloc(cc_arena_t *a, size_t size);
char *cc_arena_strdup(cc_arena_t *a, const char *s);
char *cc_arena_printf(cc_arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cc_arena_free(cc_arena_t *a);

/* Well-known wrapper values. *_ref keeps the pointer (no copy). */
Google__Protobuf__StringValue *cc_sv_ref(cc_arena_t *a, const char *s);
Google__Protobuf__StringValue *cc_sv_dup(cc_arena_t *a, const char *s);
Google__Protobuf__UInt64Value *cc_u64v(cc_arena_t *a, uint64_t v);
Google__Protobuf__UInt32Value *cc_u32v(cc_arena_t *a, uint32_t v);
Google__Protobuf__BoolValue *cc_bv(cc_arena_t *a, bool v);

/* Polaris time text ("2006-01-02 15:04:05", local time) of Unix ms. */
char *cc_arena_time(cc_arena_t *a, int64_t unix_ms);

#endif

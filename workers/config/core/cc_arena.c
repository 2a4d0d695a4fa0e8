/*
 * cc_arena.c: bump allocator for message trees (see cc_arena.h).
 */
#include "cc_arena.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARENA_BLOCK 16384
#define ARENA_ALIGN 16

struct cc_arena_block {
    cc_arena_block_t *next;
    size_t used, cap;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

void *cc_arena_alloc(cc_arena_t *a, size_t size)
{
    if (a->failed)
        return NULL;
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    cc_arena_block_t *b = a->blocks;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > ARENA_BLOCK ? size : ARENA_BLOCK;
        b = malloc(sizeof *b + cap);
        if (!b) {
            a->failed = true;
            return NULL;
        }
        b->used = 0;
        b->cap = cap;
        /* a big one-off allocation goes behind the current block so that
         * the current block keeps serving small ones */
        if (a->blocks && size > ARENA_BLOCK) {
            b->next = a->blocks->next;
            a->blocks->next = b;
        } else {
            b->next = a->blocks;
            a->blocks = b;
        }
    }
    void *p = b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

char *cc_arena_strdup(cc_arena_t *a, const char *s)
{
    if (!s)
        s = "";
    size_t n = strlen(s) + 1;
    char *d = cc_arena_alloc(a, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

char *cc_arena_printf(cc_arena_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *d = cc_arena_alloc(a, (size_t)n + 1);
    if (!d)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(d, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return d;
}

void cc_arena_free(cc_arena_t *a)
{
    cc_arena_block_t *b = a->blocks;
    while (b) {
        cc_arena_block_t *n = b->next;
        free(b);
        b = n;
    }
    a->blocks = NULL;
    a->failed = false;
}

Google__Protobuf__StringValue *cc_sv_ref(cc_arena_t *a, const char *s)
{
    Google__Protobuf__StringValue *v = cc_arena_alloc(a, sizeof *v);
    if (!v)
        return NULL;
    google__protobuf__string_value__init(v);
    v->value = (char *)(s ? s : "");
    return v;
}

Google__Protobuf__StringValue *cc_sv_dup(cc_arena_t *a, const char *s)
{
    return cc_sv_ref(a, cc_arena_strdup(a, s));
}

Google__Protobuf__UInt64Value *cc_u64v(cc_arena_t *a, uint64_t x)
{
    Google__Protobuf__UInt64Value *v = cc_arena_alloc(a, sizeof *v);
    if (!v)
        return NULL;
    google__protobuf__uint64_value__init(v);
    v->value = x;
    return v;
}

Google__Protobuf__UInt32Value *cc_u32v(cc_arena_t *a, uint32_t x)
{
    Google__Protobuf__UInt32Value *v = cc_arena_alloc(a, sizeof *v);
    if (!v)
        return NULL;
    google__protobuf__uint32_value__init(v);
    v->value = x;
    return v;
}

Google__Protobuf__BoolValue *cc_bv(cc_arena_t *a, bool x)
{
    Google__Protobuf__BoolValue *v = cc_arena_alloc(a, sizeof *v);
    if (!v)
        return NULL;
    google__protobuf__bool_value__init(v);
    v->value = x;
    return v;
}

char *cc_arena_time(cc_arena_t *a, int64_t unix_ms)
{
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    char buf[32];
    if (!localtime_r(&t, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm))
        buf[0] = '\0';
    return cc_arena_strdup(a, buf);
}

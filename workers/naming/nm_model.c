/*
 * nm_model.c: the naming worker's in-memory model (see naming.h).
 *
 * Three uthash tables: namespaces by name, services by "ns\x1fname",
 * instances by id; each service also holds its live instances (hh_svc).
 * A service exists in the model while it has a live row or live instances
 * (an instance may reach us before its service row, or outlive it when two
 * nodes race a service delete against a registration); such a service is
 * published with empty fields until its row arrives.
 *
 * Rows are applied by row_version: a row not newer than the one held is
 * ignored, so a row read twice (own commit, then the poll) changes nothing.
 * Every applied change records the service in m->touched; nm_model_finish
 * recomputes revisions and counts of those services only.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "log.h"
#include "naming.h"

/* ------------------------------------------------------------------ memory */

void nm_oom(void)
{
    log_error("naming worker: out of memory");
    abort();
}

void *nm_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        nm_oom();
    return p;
}

char *nm_xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        nm_oom();
    return d;
}

char nm_empty_str[1];

char *nm_str_dup(const char *s) { return !s || !*s ? nm_empty_str : nm_xstrdup(s); }

void nm_str_free(char *s)
{
    if (s != nm_empty_str)
        free(s);
}

void nm_str_set(char **dst, const char *s)
{
    char *old = *dst;
    *dst = nm_str_dup(s);
    nm_str_free(old);
}

void nm_random_hex(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("naming worker: getrandom failed: %s", strerror(errno));
            abort();
        }
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof b; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[32] = '\0';
}

typedef struct nm_arena_chunk {
    struct nm_arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
} nm_arena_chunk_t;

void nm_arena_init(nm_arena_t *a, size_t chunk)
{
    a->head = NULL;
    a->chunk = chunk ? chunk : 4096;
}

void *nm_arena_alloc(nm_arena_t *a, size_t n)
{
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) / align * align;
    if (!n)
        n = align;
    nm_arena_chunk_t *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > a->chunk ? n : a->chunk;
        c = malloc(sizeof *c + cap);
        if (!c)
            nm_oom();
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
        /* later chunks grow so big trees need few of them */
        if (a->chunk < 1u << 20)
            a->chunk *= 2;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *nm_arena_strdup(nm_arena_t *a, const char *s)
{
    if (!s)
        s = "";
    size_t n = strlen(s) + 1;
    char *d = nm_arena_alloc(a, n);
    memcpy(d, s, n);
    return d;
}

void nm_arena_reset(nm_arena_t *a)
{
    nm_arena_chunk_t *c = a->head;
    if (!c)
        return;
    /* the newest chunk is the largest (chunks grow): keep it */
    nm_arena_chunk_t *n = c->next;
    while (n) {
        nm_arena_chunk_t *next = n->next;
        free(n);
        n = next;
    }
    c->next = NULL;
    c->used = 0;
}

void nm_arena_free(nm_arena_t *a)
{
    nm_arena_chunk_t *c = a->head;
    while (c) {
        nm_arena_chunk_t *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
}

/* ---------------------------------------------------------------- metadata */

void nm_meta_free(nm_meta_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->keys[i]);
        free(m->vals[i]);
    }
    free(m->keys);
    free(m->vals);
    m->n = 0;
    m->keys = m->vals = NULL;
}

void nm_meta_copy(nm_meta_t *dst, const nm_meta_t *src)
{
    dst->n = src->n;
    dst->keys = nm_xcalloc(src->n, sizeof *dst->keys);
    dst->vals = nm_xcalloc(src->n, sizeof *dst->vals);
    for (size_t i = 0; i < src->n; i++) {
        dst->keys[i] = nm_xstrdup(src->keys[i]);
        dst->vals[i] = nm_xstrdup(src->vals[i]);
    }
}

bool nm_meta_equal(const nm_meta_t *a, const nm_meta_t *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->keys[i], b->keys[i]) != 0 || strcmp(a->vals[i], b->vals[i]) != 0)
            return false;
    return true;
}

void nm_meta_add(nm_meta_t *m, const char *k, const char *v)
{
    char **keys = realloc(m->keys, (m->n + 1) * sizeof *keys);
    if (!keys)
        nm_oom();
    m->keys = keys;
    char **vals = realloc(m->vals, (m->n + 1) * sizeof *vals);
    if (!vals)
        nm_oom();
    m->vals = vals;
    m->keys[m->n] = nm_xstrdup(k);
    m->vals[m->n] = nm_xstrdup(v);
    m->n++;
}

/* Stable insertion sort by key, then drop earlier duplicates (the last
 * occurrence wins, as for a protobuf map read from the wire). */
void nm_meta_sort(nm_meta_t *m)
{
    for (size_t i = 1; i < m->n; i++) {
        char *k = m->keys[i], *v = m->vals[i];
        size_t j = i;
        while (j > 0 && strcmp(m->keys[j - 1], k) > 0) {
            m->keys[j] = m->keys[j - 1];
            m->vals[j] = m->vals[j - 1];
            j--;
        }
        m->keys[j] = k;
        m->vals[j] = v;
    }
    size_t o = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (i + 1 < m->n && strcmp(m->keys[i], m->keys[i + 1]) == 0) {
            free(m->keys[i]);
            free(m->vals[i]);
            continue;
        }
        m->keys[o] = m->keys[i];
        m->vals[o] = m->vals[i];
        o++;
    }
    m->n = o;
}

const char *nm_meta_get(const nm_meta_t *m, const char *key)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(m->keys[mid], key);
        if (c == 0)
            return m->vals[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ------------------------------------------------------------------ objects */

char *nm_service_key_in(const char *ns, const char *name, char buf[NM_KEY_BUF])
{
    size_t a = strlen(ns), b = strlen(name);
    if (a + b + 2 > NM_KEY_BUF)
        return nm_service_key(ns, name);
    memcpy(buf, ns, a);
    buf[a] = '\x1f';
    memcpy(buf + a + 1, name, b + 1);
    return buf;
}

char *nm_service_key(const char *ns, const char *name)
{
    size_t a = strlen(ns), b = strlen(name);
    char *k = nm_xcalloc(a + b + 2, 1);
    memcpy(k, ns, a);
    k[a] = '\x1f';
    memcpy(k + a + 1, name, b);
    return k;
}

#define INSTANCE_STRINGS(X)                                                                                           \
    X(id) X(ns) X(service) X(vpc_id) X(host) X(protocol) X(version) X(region) X(zone) X(campus) X(logic_set)          \
        X(nacos_group) X(nacos_cluster) X(eureka_app) X(eureka_status) X(eureka_overridden_status) X(origin)

nm_instance_t *nm_instance_new(void)
{
    nm_instance_t *in = nm_xcalloc(1, sizeof *in);
#define X(f) in->f = nm_empty_str;
    INSTANCE_STRINGS(X)
#undef X
    in->hc_type = -1;
    in->weight = NM_DEFAULT_WEIGHT;
    in->healthy = true;
    nm_arena_init(&in->pb_arena, 1024);
    return in;
}

nm_instance_t *nm_instance_dup(const nm_instance_t *src)
{
    nm_instance_t *in = nm_xcalloc(1, sizeof *in);
    *in = *src;
#define X(f) in->f = nm_str_dup(src->f);
    INSTANCE_STRINGS(X)
#undef X
    nm_meta_copy(&in->meta, &src->meta);
    in->svc = NULL;
    in->pb = NULL;
    nm_arena_init(&in->pb_arena, 1024);
    memset(&in->hh, 0, sizeof in->hh);
    memset(&in->hh_svc, 0, sizeof in->hh_svc);
    return in;
}

void nm_instance_free(nm_instance_t *in)
{
    if (!in)
        return;
#define X(f) nm_str_free(in->f);
    INSTANCE_STRINGS(X)
#undef X
    nm_meta_free(&in->meta);
    nm_arena_free(&in->pb_arena);
    free(in);
}

#define SERVICE_STRINGS(X)                                                                                            \
    X(key) X(ns) X(name) X(id) X(ports) X(business) X(department) X(cmdb_mod1) X(cmdb_mod2) X(cmdb_mod3) X(comment)  \
        X(owners) X(token) X(platform_id)

nm_service_t *nm_service_new(const char *ns, const char *name)
{
    nm_service_t *s = nm_xcalloc(1, sizeof *s);
#define X(f) s->f = nm_empty_str;
    SERVICE_STRINGS(X)
#undef X
    s->key = nm_service_key(ns, name);
    s->ns = nm_str_dup(ns);
    s->name = nm_str_dup(name);
    return s;
}

nm_service_t *nm_service_dup(const nm_service_t *src)
{
    nm_service_t *s = nm_xcalloc(1, sizeof *s);
    *s = *src;
#define X(f) s->f = nm_str_dup(src->f);
    SERVICE_STRINGS(X)
#undef X
    nm_meta_copy(&s->meta, &src->meta);
    s->instances = NULL;
    memset(&s->hh, 0, sizeof s->hh);
    return s;
}

void nm_service_free(nm_service_t *s)
{
    if (!s)
        return;
#define X(f) nm_str_free(s->f);
    SERVICE_STRINGS(X)
#undef X
    nm_meta_free(&s->meta);
    free(s);
}

nm_namespace_t *nm_namespace_new(const char *name)
{
    nm_namespace_t *ns = nm_xcalloc(1, sizeof *ns);
    ns->name = nm_str_dup(name);
    ns->comment = nm_empty_str;
    ns->owners = nm_empty_str;
    ns->token = nm_empty_str;
    return ns;
}

nm_namespace_t *nm_namespace_dup(const nm_namespace_t *src)
{
    nm_namespace_t *ns = nm_xcalloc(1, sizeof *ns);
    *ns = *src;
    ns->name = nm_str_dup(src->name);
    ns->comment = nm_str_dup(src->comment);
    ns->owners = nm_str_dup(src->owners);
    ns->token = nm_str_dup(src->token);
    nm_meta_copy(&ns->meta, &src->meta);
    memset(&ns->hh, 0, sizeof ns->hh);
    return ns;
}

void nm_namespace_free(nm_namespace_t *ns)
{
    if (!ns)
        return;
    nm_str_free(ns->name);
    nm_str_free(ns->comment);
    nm_str_free(ns->owners);
    nm_str_free(ns->token);
    nm_meta_free(&ns->meta);
    free(ns);
}

/* --------------------------------------------------------------- revisions */

/* ------------------------------------------------------------- digests */

/* naming_digest_* (common/naming_id.h) feeds OpenSSL run by run, and for
 * runs this short the per-call overhead of EVP (and the implicit fetch of
 * SHA-1 on every init) costs far more than the hashing. nm_digest_* frames
 * the same runs into one buffer (an 8-byte big-endian length, then the
 * bytes: exactly what naming_digest_add feeds) and hashes it in one call
 * with SHA-1 fetched once per thread, so the digests are the same. */
static _Thread_local EVP_MD *sha1_md;
static _Thread_local EVP_MD_CTX *sha1_ctx;

void nm_digest_init(nm_digest_t *d)
{
    d->p = d->inline_buf;
    d->len = 0;
    d->cap = sizeof d->inline_buf;
}

static void digest_reserve(nm_digest_t *d, size_t more)
{
    if (d->len + more <= d->cap)
        return;
    size_t cap = d->cap * 2;
    while (cap < d->len + more)
        cap *= 2;
    unsigned char *p = d->p == d->inline_buf ? malloc(cap) : realloc(d->p, cap);
    if (!p)
        nm_oom();
    if (d->p == d->inline_buf)
        memcpy(p, d->inline_buf, d->len);
    d->p = p;
    d->cap = cap;
}

void nm_digest_add(nm_digest_t *d, const void *data, size_t len)
{
    digest_reserve(d, 8 + len);
    uint64_t be = htobe64((uint64_t)len);
    memcpy(d->p + d->len, &be, 8);
    d->len += 8;
    if (len)
        memcpy(d->p + d->len, data, len);
    d->len += len;
}

void nm_digest_add_str(nm_digest_t *d, const char *s)
{
    nm_digest_add(d, s ? s : "", s ? strlen(s) : 0);
}

/* SHA-1 of len bytes: hex (and the 20 bytes when bin is not NULL). */
static void sha1(const void *data, size_t len, char hex[NAMING_HEX_LEN + 1], unsigned char *bin)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!sha1_md) {
        sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL);
        sha1_ctx = EVP_MD_CTX_new();
        if (!sha1_md || !sha1_ctx) {
            log_error("naming worker: OpenSSL has no SHA-1");
            abort();
        }
    }
    if (EVP_DigestInit_ex2(sha1_ctx, sha1_md, NULL) != 1 || EVP_DigestUpdate(sha1_ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(sha1_ctx, md, &mdlen) != 1 || mdlen != NAMING_HEX_LEN / 2) {
        log_error("naming worker: SHA-1 failed");
        abort();
    }
    for (unsigned i = 0; i < mdlen; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
        if (bin)
            bin[i] = md[i];
    }
    hex[NAMING_HEX_LEN] = '\0';
}

void nm_sha1_hex(const void *data, size_t len, char out[NAMING_HEX_LEN + 1]) { sha1(data, len, out, NULL); }

void nm_digest_finish(nm_digest_t *d, char hex[NAMING_HEX_LEN + 1], unsigned char bin[NAMING_HEX_LEN / 2])
{
    sha1(d->p, d->len, hex, bin);
    if (d->p != d->inline_buf)
        free(d->p);
    d->p = d->inline_buf;
    d->len = 0;
}

/* Numbers enter digests as their decimal text. */
static void digest_u64(nm_digest_t *d, uint64_t v)
{
    char buf[24];
    size_t i = sizeof buf;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    nm_digest_add(d, buf + i, sizeof buf - i);
}

static void digest_i64(nm_digest_t *d, int64_t v)
{
    if (v >= 0) {
        digest_u64(d, (uint64_t)v);
        return;
    }
    char buf[24];
    size_t i = sizeof buf;
    uint64_t u = (uint64_t)0 - (uint64_t)v;
    do {
        buf[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    buf[--i] = '-';
    nm_digest_add(d, buf + i, sizeof buf - i);
}

static void digest_meta(nm_digest_t *d, const nm_meta_t *m)
{
    digest_u64(d, m->n);
    for (size_t i = 0; i < m->n; i++) {
        nm_digest_add_str(d, m->keys[i]);
        nm_digest_add_str(d, m->vals[i]);
    }
}

static void digest_init(nm_digest_t *d) { nm_digest_init(d); }

/* Every field a client can observe, in a fixed order; times and row
 * versions are not content. */
void nm_instance_revision(nm_instance_t *in)
{
    nm_digest_t d;
    digest_init(&d);
    nm_digest_add_str(&d, "lodestar.instance.1");
    nm_digest_add_str(&d, in->id);
    nm_digest_add_str(&d, in->ns);
    nm_digest_add_str(&d, in->service);
    nm_digest_add_str(&d, in->vpc_id);
    nm_digest_add_str(&d, in->host);
    digest_u64(&d, in->port);
    nm_digest_add_str(&d, in->protocol);
    nm_digest_add_str(&d, in->version);
    digest_u64(&d, in->priority);
    digest_u64(&d, in->weight);
    digest_i64(&d, in->hc_type);
    digest_u64(&d, in->hc_ttl);
    digest_u64(&d, in->enable_hc);
    digest_u64(&d, in->healthy);
    digest_u64(&d, in->isolate);
    nm_digest_add_str(&d, in->region);
    nm_digest_add_str(&d, in->zone);
    nm_digest_add_str(&d, in->campus);
    digest_meta(&d, &in->meta);
    nm_digest_add_str(&d, in->logic_set);
    nm_digest_add_str(&d, in->nacos_group);
    nm_digest_add_str(&d, in->nacos_cluster);
    digest_u64(&d, in->ephemeral);
    nm_digest_add_str(&d, in->eureka_app);
    nm_digest_add_str(&d, in->eureka_status);
    nm_digest_add_str(&d, in->eureka_overridden_status);
    digest_i64(&d, in->eureka_last_dirty_ms);
    nm_digest_add_str(&d, in->origin);
    nm_digest_finish(&d, in->revision, in->digest);
}

void nm_namespace_revision(nm_namespace_t *ns)
{
    nm_digest_t d;
    digest_init(&d);
    nm_digest_add_str(&d, "lodestar.namespace.1");
    nm_digest_add_str(&d, ns->name);
    nm_digest_add_str(&d, ns->comment);
    nm_digest_add_str(&d, ns->owners);
    nm_digest_add_str(&d, ns->token);
    digest_meta(&d, &ns->meta);
    nm_digest_finish(&d, ns->revision, NULL);
}

static int cmp_instance_id(const void *a, const void *b)
{
    return strcmp(((const nm_instance_t *)a)->id, ((const nm_instance_t *)b)->id);
}

void nm_service_sort(nm_service_t *s)
{
    if (s->unsorted)
        HASH_SRT(hh_svc, s->instances, cmp_instance_id);
    s->unsorted = false;
}

/* The service revision covers its own fields and the set of its instances'
 * revisions. The set enters as the XOR of the instance digests (and their
 * count): independent of order, so no sort is needed on every change, and
 * still equal on every node holding the same data. svc_add/svc_sub keep
 * that aggregate and the counts as instances come, change and go, so a
 * refresh costs the same for one instance as for ten thousand. */
static bool counts_healthy(const nm_instance_t *in) { return in->healthy && !in->isolate; }

static void svc_xor(nm_service_t *s, const nm_instance_t *in)
{
    for (size_t i = 0; i < sizeof s->agg; i++)
        s->agg[i] ^= in->digest[i];
}

/* in (revision current) joined s's instances, or took new content in place. */
static void svc_add(nm_service_t *s, const nm_instance_t *in)
{
    svc_xor(s, in);
    s->n_instances++;
    if (counts_healthy(in))
        s->n_healthy++;
}

/* in (with the revision it was added with) leaves s, or is about to change. */
static void svc_sub(nm_service_t *s, const nm_instance_t *in)
{
    svc_xor(s, in);
    s->n_instances--;
    if (counts_healthy(in))
        s->n_healthy--;
}

void nm_service_refresh(nm_service_t *s)
{
    uint32_t n = s->n_instances;
    nm_digest_t d;
    digest_init(&d);
    nm_digest_add_str(&d, "lodestar.service.1");
    nm_digest_add_str(&d, s->ns);
    nm_digest_add_str(&d, s->name);
    digest_u64(&d, s->has_row);
    nm_digest_add_str(&d, s->id);
    digest_meta(&d, &s->meta);
    nm_digest_add_str(&d, s->ports);
    nm_digest_add_str(&d, s->business);
    nm_digest_add_str(&d, s->department);
    nm_digest_add_str(&d, s->cmdb_mod1);
    nm_digest_add_str(&d, s->cmdb_mod2);
    nm_digest_add_str(&d, s->cmdb_mod3);
    nm_digest_add_str(&d, s->comment);
    nm_digest_add_str(&d, s->owners);
    nm_digest_add_str(&d, s->token);
    nm_digest_add_str(&d, s->platform_id);
    digest_u64(&d, n);
    nm_digest_add(&d, s->agg, sizeof s->agg);
    nm_digest_finish(&d, s->revision, NULL);
}

/* -------------------------------------------------------------------- model */

nm_model_t *nm_model_new(void) { return nm_xcalloc(1, sizeof(nm_model_t)); }

void nm_model_clear_touched(nm_model_t *m)
{
    nm_touch_t *t, *tmp;
    HASH_ITER(hh, m->touched, t, tmp)
    {
        HASH_DEL(m->touched, t);
        nm_touch_inst_t *ti, *ttmp;
        HASH_ITER(hh, t->insts, ti, ttmp)
        {
            HASH_DEL(t->insts, ti);
            free(ti);
        }
        free(t->key);
        free(t->ns);
        free(t->name);
        free(t);
    }
    m->namespaces_changed = false;
}

void nm_model_free(nm_model_t *m)
{
    if (!m)
        return;
    nm_service_t *s, *stmp;
    /* each service's own instance table first, while its items still exist */
    for (s = m->services; s; s = s->hh.next)
        HASH_CLEAR(hh_svc, s->instances);
    nm_instance_t *in, *itmp;
    HASH_ITER(hh, m->instances, in, itmp)
    {
        HASH_DEL(m->instances, in);
        nm_instance_free(in);
    }
    HASH_ITER(hh, m->services, s, stmp)
    {
        HASH_DEL(m->services, s);
        nm_service_free(s);
    }
    nm_namespace_t *ns, *ntmp;
    HASH_ITER(hh, m->namespaces, ns, ntmp)
    {
        HASH_DEL(m->namespaces, ns);
        nm_namespace_free(ns);
    }
    nm_model_clear_touched(m);
    free(m);
}

nm_instance_t *nm_model_instance(const nm_model_t *m, const char *id)
{
    nm_instance_t *in = NULL;
    HASH_FIND_STR(m->instances, id, in);
    return in;
}

nm_service_t *nm_model_service(const nm_model_t *m, const char *ns, const char *name)
{
    char buf[NM_KEY_BUF];
    char *key = nm_service_key_in(ns, name, buf);
    nm_service_t *s = NULL;
    HASH_FIND_STR(m->services, key, s);
    nm_service_key_release(key, buf);
    return s;
}

nm_namespace_t *nm_model_namespace(const nm_model_t *m, const char *name)
{
    nm_namespace_t *ns = NULL;
    HASH_FIND_STR(m->namespaces, name, ns);
    return ns;
}

static nm_touch_t *touch_get(nm_model_t *m, const nm_service_t *s)
{
    nm_touch_t *t = NULL;
    HASH_FIND_STR(m->touched, s->key, t);
    if (t)
        return t;
    t = nm_xcalloc(1, sizeof *t);
    t->key = nm_xstrdup(s->key);
    t->ns = nm_xstrdup(s->ns);
    t->name = nm_xstrdup(s->name);
    HASH_ADD_KEYPTR(hh, m->touched, t->key, strlen(t->key), t);
    return t;
}

/* A service-level change: its next publication is a full state. */
static void touch(nm_model_t *m, const nm_service_t *s)
{
    touch_get(m, s)->full = true;
}

/* One instance of s was added, changed or removed: unless something else
 * asks for a full state, the next publication is a delta naming it. */
static void touch_inst(nm_model_t *m, const nm_service_t *s, const char *id, bool removed)
{
    nm_touch_t *t = touch_get(m, s);
    if (t->full)
        return;
    nm_touch_inst_t *ti = NULL;
    HASH_FIND_STR(t->insts, id, ti);
    if (!ti) {
        size_t len = strlen(id);
        ti = nm_xcalloc(1, sizeof *ti + len + 1);
        memcpy(ti->id, id, len + 1);
        HASH_ADD_KEYPTR(hh, t->insts, ti->id, len, ti);
    }
    ti->removed = removed;
}

/* Drop a service that has neither a row nor instances. */
static void maybe_remove_service(nm_model_t *m, nm_service_t *s)
{
    if (s->has_row || s->instances)
        return;
    HASH_DEL(m->services, s);
    nm_service_free(s);
}

static nm_service_t *service_get_or_add(nm_model_t *m, const char *ns, const char *name)
{
    nm_service_t *s = nm_model_service(m, ns, name);
    if (s)
        return s;
    s = nm_service_new(ns, name);
    HASH_ADD_KEYPTR(hh, m->services, s->key, strlen(s->key), s);
    return s;
}

static void instance_detach(nm_model_t *m, nm_instance_t *in)
{
    nm_service_t *s = in->svc;
    HASH_DEL(m->instances, in);
    if (s) {
        HASH_DELETE(hh_svc, s->instances, in);
        svc_sub(s, in);
        touch_inst(m, s, in->id, true);
        maybe_remove_service(m, s);
    }
    in->svc = NULL;
}

/* An instance that stays in its service takes the row's content in place:
 * it keeps its position in the service's id-ordered list. */
static void instance_take_fields(nm_instance_t *cur, nm_instance_t *row)
{
#define SWAP(f)                                                                                                        \
    do {                                                                                                               \
        char *t_ = cur->f;                                                                                             \
        cur->f = row->f;                                                                                               \
        row->f = t_;                                                                                                   \
    } while (0)
    SWAP(vpc_id);
    SWAP(host);
    SWAP(protocol);
    SWAP(version);
    SWAP(region);
    SWAP(zone);
    SWAP(campus);
    SWAP(logic_set);
    SWAP(nacos_group);
    SWAP(nacos_cluster);
    SWAP(eureka_app);
    SWAP(eureka_status);
    SWAP(eureka_overridden_status);
    SWAP(origin);
#undef SWAP
    nm_meta_t tm = cur->meta;
    cur->meta = row->meta;
    row->meta = tm;
    cur->port = row->port;
    cur->priority = row->priority;
    cur->weight = row->weight;
    cur->hc_type = row->hc_type;
    cur->hc_ttl = row->hc_ttl;
    cur->enable_hc = row->enable_hc;
    cur->healthy = row->healthy;
    cur->isolate = row->isolate;
    cur->ephemeral = row->ephemeral;
    cur->eureka_last_dirty_ms = row->eureka_last_dirty_ms;
    cur->ctime_ms = row->ctime_ms;
    cur->mtime_ms = row->mtime_ms;
    cur->row_version = row->row_version;
    cur->seen = true;
    nm_arena_free(&cur->pb_arena);
    cur->pb = NULL;
    memcpy(cur->revision, row->revision, sizeof cur->revision);
    memcpy(cur->digest, row->digest, sizeof cur->digest);
    nm_instance_free(row);
}

int nm_model_apply_instance(nm_model_t *m, nm_instance_t *row)
{
    if (!row->deleted)
        nm_instance_revision(row);
    return nm_model_apply_instance_hashed(m, row);
}

int nm_model_apply_instance_hashed(nm_model_t *m, nm_instance_t *row)
{
    nm_instance_t *cur = nm_model_instance(m, row->id);
    if (cur && row->row_version <= cur->row_version) {
        cur->seen = true;
        nm_instance_free(row);
        return 0;
    }
    if (!cur && row->deleted) {
        nm_instance_free(row);
        return 0;
    }
    if (cur && !row->deleted && strcmp(cur->ns, row->ns) == 0 && strcmp(cur->service, row->service) == 0) {
        touch_inst(m, cur->svc, cur->id, false);
        svc_sub(cur->svc, cur);
        instance_take_fields(cur, row);
        svc_add(cur->svc, cur);
        return 1;
    }
    if (cur) {
        instance_detach(m, cur);
        nm_instance_free(cur);
    }
    if (row->deleted) {
        nm_instance_free(row);
        return 1;
    }
    nm_service_t *s = service_get_or_add(m, row->ns, row->service);
    row->svc = s;
    row->seen = true;
    row->pb = NULL;
    if (s->instances) {
        const nm_instance_t *tail = ELMT_FROM_HH(s->instances->hh_svc.tbl, s->instances->hh_svc.tbl->tail);
        if (strcmp(tail->id, row->id) > 0)
            s->unsorted = true;
    }
    HASH_ADD_KEYPTR(hh, m->instances, row->id, strlen(row->id), row);
    HASH_ADD_KEYPTR(hh_svc, s->instances, row->id, strlen(row->id), row);
    svc_add(s, row);
    touch_inst(m, s, row->id, false);
    return 1;
}

/* Move the row's fields into the model's service (which keeps its
 * instances), then free what is left of the row. */
static void service_take_fields(nm_service_t *dst, nm_service_t *row)
{
#define SWAP(f)                                                                                                        \
    do {                                                                                                               \
        char *t_ = dst->f;                                                                                             \
        dst->f = row->f;                                                                                               \
        row->f = t_;                                                                                                   \
    } while (0)
    SWAP(id);
    SWAP(ports);
    SWAP(business);
    SWAP(department);
    SWAP(cmdb_mod1);
    SWAP(cmdb_mod2);
    SWAP(cmdb_mod3);
    SWAP(comment);
    SWAP(owners);
    SWAP(token);
    SWAP(platform_id);
#undef SWAP
    nm_meta_t tm = dst->meta;
    dst->meta = row->meta;
    row->meta = tm;
    dst->ctime_ms = row->ctime_ms;
    dst->mtime_ms = row->mtime_ms;
    dst->row_version = row->row_version;
    nm_service_free(row);
}

static void service_clear_fields(nm_service_t *s)
{
    nm_service_t *blank = nm_service_new(s->ns, s->name);
    int64_t v = s->row_version;
    service_take_fields(s, blank);
    s->row_version = v;
    s->ctime_ms = s->mtime_ms = 0;
}

int nm_model_apply_service(nm_model_t *m, nm_service_t *row)
{
    nm_service_t *cur = nm_model_service(m, row->ns, row->name);
    if (cur && row->row_version <= cur->row_version) {
        if (cur->has_row)
            cur->seen = true;
        nm_service_free(row);
        return 0;
    }
    if (row->deleted) {
        if (!cur) {
            nm_service_free(row);
            return 0;
        }
        int64_t v = row->row_version;
        nm_service_free(row);
        bool had = cur->has_row;
        cur->has_row = false;
        service_clear_fields(cur);
        cur->row_version = v;
        if (had)
            touch(m, cur);
        maybe_remove_service(m, cur);
        return 1;
    }
    if (!cur)
        cur = service_get_or_add(m, row->ns, row->name);
    service_take_fields(cur, row);
    cur->has_row = true;
    cur->seen = true;
    touch(m, cur);
    return 1;
}

int nm_model_apply_namespace(nm_model_t *m, nm_namespace_t *row)
{
    nm_namespace_t *cur = nm_model_namespace(m, row->name);
    if (cur && row->row_version <= cur->row_version) {
        cur->seen = true;
        nm_namespace_free(row);
        return 0;
    }
    if (!cur && row->deleted) {
        nm_namespace_free(row);
        return 0;
    }
    if (cur) {
        HASH_DEL(m->namespaces, cur);
        nm_namespace_free(cur);
    }
    m->namespaces_changed = true;
    if (row->deleted) {
        nm_namespace_free(row);
        return 1;
    }
    nm_namespace_revision(row);
    row->seen = true;
    HASH_ADD_KEYPTR(hh, m->namespaces, row->name, strlen(row->name), row);
    return 1;
}

void nm_model_finish(nm_model_t *m)
{
    for (nm_touch_t *t = m->touched; t; t = t->hh.next) {
        nm_service_t *s = NULL;
        HASH_FIND_STR(m->services, t->key, s);
        if (s)
            nm_service_refresh(s);
    }
}

void nm_model_mark_unseen(nm_model_t *m)
{
    for (nm_instance_t *in = m->instances; in; in = in->hh.next)
        in->seen = false;
    for (nm_service_t *s = m->services; s; s = s->hh.next)
        s->seen = false;
    for (nm_namespace_t *ns = m->namespaces; ns; ns = ns->hh.next)
        ns->seen = false;
}

void nm_model_sweep(nm_model_t *m)
{
    nm_instance_t *in, *itmp;
    HASH_ITER(hh, m->instances, in, itmp)
    {
        if (in->seen)
            continue;
        instance_detach(m, in);
        nm_instance_free(in);
    }
    nm_service_t *s, *stmp;
    HASH_ITER(hh, m->services, s, stmp)
    {
        if (s->seen || !s->has_row)
            continue;
        s->has_row = false;
        service_clear_fields(s);
        touch(m, s);
        maybe_remove_service(m, s);
    }
    nm_namespace_t *ns, *ntmp;
    HASH_ITER(hh, m->namespaces, ns, ntmp)
    {
        if (ns->seen)
            continue;
        HASH_DEL(m->namespaces, ns);
        nm_namespace_free(ns);
        m->namespaces_changed = true;
    }
}

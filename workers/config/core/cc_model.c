/*
 * cc_model.c: the in-memory mirror of the config centre (see cc_model.h).
 */
#include "cc_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_validate.h"

/* ---- small JSON readers: absent or null fields read as empty ---- */

static const char *jstr(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : "";
}

static size_t jstrlen(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_length(v) : 0;
}

static int64_t jint(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static bool jbool(const json_t *o, const char *k) { return json_is_true(json_object_get(o, k)); }

/* Replace *dst with a copy of s; false when out of memory. */
static bool set_str(char **dst, const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        return false;
    free(*dst);
    *dst = d;
    return true;
}

static bool set_bytes(char **dst, size_t *dlen, const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (!d)
        return false;
    memcpy(d, s, len);
    d[len] = '\0';
    free(*dst);
    *dst = d;
    *dlen = len;
    return true;
}

char *cc_file_key(char *buf, size_t len, const char *ns, const char *group, const char *name)
{
    int n = snprintf(buf, len, "%s%c%s%c%s", ns, CC_KEY_SEP, group, CC_KEY_SEP, name);
    return n < 0 || (size_t)n >= len ? NULL : buf;
}

static char *group_key(const char *ns, const char *name)
{
    size_t l = strlen(ns) + strlen(name) + 2;
    char *k = malloc(l);
    if (k)
        snprintf(k, l, "%s%c%s", ns, CC_KEY_SEP, name);
    return k;
}

static char *file_key_dup(const char *ns, const char *group, const char *name)
{
    size_t l = strlen(ns) + strlen(group) + strlen(name) + 3;
    char *k = malloc(l);
    if (k)
        cc_file_key(k, l, ns, group, name);
    return k;
}

/* ---- tags ---- */

void cc_tags_free(cc_tags_t *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].key);
        free(t->v[i].value);
    }
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

int cc_tags_from_json(const json_t *arr, cc_tags_t *out)
{
    cc_tags_t t = {0};
    if (arr && !json_is_array(arr))
        return -EINVAL;
    size_t n = arr ? json_array_size(arr) : 0;
    if (n) {
        t.v = calloc(n, sizeof *t.v);
        if (!t.v)
            return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(arr, i);
        if (!json_is_object(e)) {
            cc_tags_free(&t);
            return -EINVAL;
        }
        t.v[i].key = strdup(jstr(e, "key"));
        t.v[i].value = strdup(jstr(e, "value"));
        t.n++;
        if (!t.v[i].key || !t.v[i].value) {
            cc_tags_free(&t);
            return -ENOMEM;
        }
    }
    cc_tags_free(out);
    *out = t;
    return 0;
}

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const cc_tag_t *)a)->key, ((const cc_tag_t *)b)->key);
}

/* A JSON object of strings into sorted key/value pairs. */
static int kvs_from_object(const json_t *obj, cc_tags_t *out)
{
    cc_tags_t t = {0};
    if (obj && !json_is_object(obj))
        return -EINVAL;
    size_t n = obj ? json_object_size(obj) : 0;
    if (n) {
        t.v = calloc(n, sizeof *t.v);
        if (!t.v)
            return -ENOMEM;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        t.v[t.n].key = strdup(k);
        t.v[t.n].value = strdup(json_is_string(v) ? json_string_value(v) : "");
        t.n++;
        if (!t.v[t.n - 1].key || !t.v[t.n - 1].value) {
            cc_tags_free(&t);
            return -ENOMEM;
        }
    }
    if (t.n > 1)
        qsort(t.v, t.n, sizeof *t.v, kv_cmp);
    cc_tags_free(out);
    *out = t;
    return 0;
}

/* ---- lifetime ---- */

cc_model_t *cc_model_new(void) { return calloc(1, sizeof(cc_model_t)); }

static void group_free(cc_group_t *g)
{
    free(g->hkey);
    free(g->ns);
    free(g->name);
    free(g->comment);
    free(g->owner);
    free(g->business);
    free(g->department);
    free(g->create_by);
    free(g->modify_by);
    cc_tags_free(&g->metadata);
    free(g);
}

static void release_free(cc_release_t *r)
{
    free(r->name);
    free(r->md5);
    free(r->format);
    free(r->comment);
    free(r->description);
    free(r->encrypt_algo);
    free(r->create_by);
    free(r->modify_by);
    free(r->content);
    cc_tags_free(&r->tags);
    cc_beta_free(&r->target);
    free(r);
}

static void file_free(cc_file_t *f)
{
    cc_release_t *r = f->releases;
    while (r) {
        cc_release_t *n = r->next;
        release_free(r);
        r = n;
    }
    free(f->hkey);
    free(f->ns);
    free(f->group);
    free(f->name);
    free(f->content);
    free(f->format);
    free(f->comment);
    free(f->encrypt_algo);
    free(f->create_by);
    free(f->modify_by);
    cc_tags_free(&f->tags);
    free(f);
}

void cc_model_free(cc_model_t *m)
{
    if (!m)
        return;
    cc_group_t *g, *gt;
    HASH_ITER(hh, m->groups, g, gt)
    {
        HASH_DEL(m->groups, g);
        group_free(g);
    }
    cc_file_t *f, *ft;
    HASH_ITER(hh, m->files, f, ft)
    {
        HASH_DEL(m->files, f);
        f->dirty = false;
        file_free(f);
    }
    /* removed files live only in the change list */
    for (size_t i = 0; i < m->n_changed; i++)
        if (m->changed[i] && !m->changed[i]->live)
            file_free(m->changed[i]);
    free(m->changed);
    free(m);
}

/* ---- lookups ---- */

cc_group_t *cc_model_group(const cc_model_t *m, const char *ns, const char *name)
{
    char *k = group_key(ns, name);
    if (!k)
        return NULL;
    cc_group_t *g = NULL;
    HASH_FIND_STR(m->groups, k, g);
    free(k);
    return g;
}

cc_file_t *cc_model_file(const cc_model_t *m, const char *ns, const char *group, const char *name)
{
    char buf[512];
    char *k = cc_file_key(buf, sizeof buf, ns, group, name);
    char *heap = NULL;
    if (!k && !(k = heap = file_key_dup(ns, group, name)))
        return NULL;
    cc_file_t *f = NULL;
    HASH_FIND_STR(m->files, k, f);
    free(heap);
    return f;
}

void cc_model_count_files(cc_model_t *m)
{
    for (cc_group_t *g = m->groups; g; g = g->hh.next)
        g->n_files = 0;
    for (cc_file_t *f = m->files; f; f = f->hh.next) {
        cc_group_t *g = cc_model_group(m, f->ns, f->group);
        if (g)
            g->n_files++;
    }
}

const cc_release_t *cc_file_active(const cc_file_t *f)
{
    const cc_release_t *best = NULL;
    for (const cc_release_t *r = f->releases; r; r = r->next)
        if (r->active && !r->beta && (!best || r->version > best->version))
            best = r;
    return best;
}

const cc_release_t *cc_file_beta(const cc_file_t *f)
{
    const cc_release_t *best = NULL;
    for (const cc_release_t *r = f->releases; r; r = r->next)
        if (r->active && r->beta && (!best || r->version > best->version))
            best = r;
    return best;
}

const cc_release_t *cc_file_release(const cc_file_t *f, const char *name)
{
    for (const cc_release_t *r = f->releases; r; r = r->next)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

bool cc_file_published(const cc_file_t *f) { return f->live && (cc_file_active(f) || cc_file_beta(f)); }

/* ---- change list ---- */

static void note_change(cc_model_t *m, cc_file_t *f)
{
    if (f->dirty)
        return;
    if (m->n_changed == m->cap_changed) {
        size_t cap = m->cap_changed ? m->cap_changed * 2 : 64;
        cc_file_t **c = realloc(m->changed, cap * sizeof *c);
        if (!c)
            return; /* the next reload repairs what this push misses */
        m->changed = c;
        m->cap_changed = cap;
    }
    m->changed[m->n_changed++] = f;
    f->dirty = true;
}

static void see_nid(cc_model_t *m, uint64_t nid)
{
    if (nid > m->notification_id)
        m->notification_id = nid;
}

/* Take a live file out of the tables: it waits in the change list until its
 * removal is pushed (or is freed now if no replica ever saw it). */
static void file_remove(cc_model_t *m, cc_file_t *f)
{
    HASH_DEL(m->files, f);
    f->live = false;
    cc_release_t *r = f->releases;
    while (r) {
        cc_release_t *n = r->next;
        release_free(r);
        r = n;
    }
    f->releases = NULL;
    if (f->emitted_nid == 0 && !f->dirty) {
        file_free(f);
        return;
    }
    note_change(m, f);
}

size_t cc_model_take_changes(cc_model_t *m, cc_file_t ***out)
{
    /* keep only files whose pushed state is out of date */
    size_t k = 0;
    for (size_t i = 0; i < m->n_changed; i++) {
        cc_file_t *f = m->changed[i];
        bool push = f->live ? (f->notification_id != f->emitted_nid && (cc_file_published(f) || f->emitted_nid))
                            : f->emitted_nid != 0;
        if (push) {
            m->changed[k++] = f;
            continue;
        }
        f->dirty = false;
        if (!f->live)
            file_free(f);
    }
    m->n_changed = k;
    *out = m->changed;
    return k;
}

void cc_model_commit_changes(cc_model_t *m)
{
    for (size_t i = 0; i < m->n_changed; i++) {
        cc_file_t *f = m->changed[i];
        f->dirty = false;
        if (!f->live)
            file_free(f);
        else
            f->emitted_nid = cc_file_published(f) ? f->notification_id : 0;
    }
    m->n_changed = 0;
}

void cc_model_mark_all_pushed(cc_model_t *m)
{
    for (size_t i = 0; i < m->n_changed; i++) {
        cc_file_t *f = m->changed[i];
        f->dirty = false;
        if (!f->live)
            file_free(f);
    }
    m->n_changed = 0;
    for (cc_file_t *f = m->files; f; f = f->hh.next)
        f->emitted_nid = cc_file_published(f) ? f->notification_id : 0;
}

/* ---- applying rows ---- */

static int apply_group(cc_model_t *m, const json_t *row, char *err, size_t errlen)
{
    const char *ns = jstr(row, "namespace"), *name = jstr(row, "name");
    int64_t rv = jint(row, "row_version");
    if (!*ns || !*name || rv <= 0) {
        snprintf(err, errlen, "malformed config group row (namespace \"%s\", name \"%s\", row_version %lld)", ns,
                 name, (long long)rv);
        return -EINVAL;
    }
    cc_group_t *g = cc_model_group(m, ns, name);
    if (g) {
        g->mark = m->generation;
        if (g->row_version >= rv)
            return 0;
    }
    if (jbool(row, "deleted")) {
        if (g) {
            HASH_DEL(m->groups, g);
            group_free(g);
            return 1;
        }
        return 0;
    }
    bool fresh = !g;
    if (fresh) {
        g = calloc(1, sizeof *g);
        if (!g || !(g->hkey = group_key(ns, name)) || !set_str(&g->ns, ns) || !set_str(&g->name, name))
            goto oom;
    }
    if (!set_str(&g->comment, jstr(row, "comment")) || !set_str(&g->owner, jstr(row, "owner")) ||
        !set_str(&g->business, jstr(row, "business")) || !set_str(&g->department, jstr(row, "department")) ||
        !set_str(&g->create_by, jstr(row, "create_by")) || !set_str(&g->modify_by, jstr(row, "modify_by")) ||
        kvs_from_object(json_object_get(row, "metadata"), &g->metadata) < 0)
        goto oom;
    g->id = jint(row, "id");
    g->row_version = rv;
    g->ctime_ms = jint(row, "ctime");
    g->mtime_ms = jint(row, "mtime");
    g->mark = m->generation;
    if (fresh)
        HASH_ADD_KEYPTR(hh, m->groups, g->hkey, strlen(g->hkey), g);
    return 1;
oom:
    if (fresh && g)
        group_free(g);
    snprintf(err, errlen, "out of memory applying config group %s/%s", ns, name);
    return -ENOMEM;
}

static int apply_file(cc_model_t *m, const json_t *row, char *err, size_t errlen)
{
    const char *ns = jstr(row, "namespace"), *grp = jstr(row, "group"), *name = jstr(row, "name");
    int64_t rv = jint(row, "row_version");
    if (!*ns || !*grp || !*name || rv <= 0) {
        snprintf(err, errlen, "malformed config file row (%s/%s/%s, row_version %lld)", ns, grp, name,
                 (long long)rv);
        return -EINVAL;
    }
    uint64_t nid = (uint64_t)jint(row, "notification_id");
    see_nid(m, nid);
    cc_file_t *f = cc_model_file(m, ns, grp, name);
    if (f) {
        f->mark = m->generation;
        if (f->row_version >= rv)
            return 0;
    }
    if (jbool(row, "deleted")) {
        if (!f)
            return 0;
        f->notification_id = nid;
        f->row_version = rv;
        file_remove(m, f);
        return 1;
    }
    bool fresh = !f;
    if (fresh) {
        f = calloc(1, sizeof *f);
        if (!f || !(f->hkey = file_key_dup(ns, grp, name)) || !set_str(&f->ns, ns) || !set_str(&f->group, grp) ||
            !set_str(&f->name, name))
            goto oom;
        f->live = true;
    }
    if (!set_bytes(&f->content, &f->content_len, jstr(row, "content"), jstrlen(row, "content")) ||
        !set_str(&f->format, jstr(row, "format")) || !set_str(&f->comment, jstr(row, "comment")) ||
        !set_str(&f->encrypt_algo, jstr(row, "encrypt_algo")) || !set_str(&f->create_by, jstr(row, "create_by")) ||
        !set_str(&f->modify_by, jstr(row, "modify_by")) || cc_tags_from_json(json_object_get(row, "tags"), &f->tags) < 0)
        goto oom;
    if (cc_md5_hex(f->content, f->content_len, f->md5) < 0)
        f->md5[0] = '\0';
    f->encrypted = jbool(row, "encrypted");
    f->id = jint(row, "id");
    f->row_version = rv;
    f->ctime_ms = jint(row, "ctime");
    f->mtime_ms = jint(row, "mtime");
    f->release_seq = (uint64_t)jint(row, "release_seq");
    f->mark = m->generation;
    if (f->notification_id != nid) {
        f->notification_id = nid;
        note_change(m, f);
    }
    if (fresh)
        HASH_ADD_KEYPTR(hh, m->files, f->hkey, strlen(f->hkey), f);
    return 1;
oom:
    if (fresh && f)
        file_free(f);
    snprintf(err, errlen, "out of memory applying config file %s/%s/%s", ns, grp, name);
    return -ENOMEM;
}

static void release_unlink(cc_file_t *f, cc_release_t *r)
{
    for (cc_release_t **pp = &f->releases; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            return;
        }
}

static int apply_release(cc_model_t *m, const json_t *row, char *err, size_t errlen)
{
    const char *ns = jstr(row, "namespace"), *grp = jstr(row, "group"), *fname = jstr(row, "file_name");
    const char *name = jstr(row, "name");
    int64_t rv = jint(row, "row_version");
    if (!*ns || !*grp || !*fname || !*name || rv <= 0) {
        snprintf(err, errlen, "malformed config release row (%s/%s/%s release \"%s\", row_version %lld)", ns, grp,
                 fname, name, (long long)rv);
        return -EINVAL;
    }
    see_nid(m, (uint64_t)jint(row, "notification_id"));
    bool deleted = jbool(row, "deleted");
    cc_file_t *f = cc_model_file(m, ns, grp, fname);
    if (!f) {
        if (deleted)
            return 0;
        snprintf(err, errlen, "release %s of config file %s/%s/%s arrived but the file is not known", name, ns, grp,
                 fname);
        return -ENOENT;
    }
    cc_release_t *r = (cc_release_t *)cc_file_release(f, name);
    if (r) {
        r->mark = m->generation;
        if (r->row_version >= rv)
            return 0;
    }
    if (deleted) {
        if (!r)
            return 0;
        bool was_active = r->active;
        release_unlink(f, r);
        release_free(r);
        if (was_active)
            note_change(m, f);
        return 1;
    }
    bool active = jbool(row, "active");
    const json_t *content = json_object_get(row, "content");
    if (active && !json_is_string(content)) {
        snprintf(err, errlen, "active release %s of config file %s/%s/%s arrived without content", name, ns, grp,
                 fname);
        return -EINVAL;
    }
    bool fresh = !r;
    if (fresh) {
        r = calloc(1, sizeof *r);
        if (!r || !set_str(&r->name, name))
            goto oom;
    }
    if (!set_str(&r->md5, jstr(row, "md5")) || !set_str(&r->format, jstr(row, "format")) ||
        !set_str(&r->comment, jstr(row, "comment")) || !set_str(&r->description, jstr(row, "description")) ||
        !set_str(&r->encrypt_algo, jstr(row, "encrypt_algo")) || !set_str(&r->create_by, jstr(row, "create_by")) ||
        !set_str(&r->modify_by, jstr(row, "modify_by")) || cc_tags_from_json(json_object_get(row, "tags"), &r->tags) < 0)
        goto oom;
    if (active) {
        if (!set_bytes(&r->content, &r->content_len, json_string_value(content), json_string_length(content)))
            goto oom;
    } else {
        free(r->content);
        r->content = NULL;
        r->content_len = 0;
    }
    cc_beta_t target = {0};
    if (cc_beta_from_json(json_object_get(row, "beta_ips"), json_object_get(row, "beta_labels"), &target) < 0) {
        if (fresh)
            release_free(r);
        snprintf(err, errlen, "release %s of config file %s/%s/%s has a malformed beta target", name, ns, grp, fname);
        return -EINVAL;
    }
    cc_beta_free(&r->target);
    r->target = target;
    r->encrypted = jbool(row, "encrypted");
    r->id = jint(row, "id");
    r->row_version = rv;
    r->ctime_ms = jint(row, "ctime");
    r->mtime_ms = jint(row, "mtime");
    r->version = (uint64_t)jint(row, "version");
    r->notification_id = (uint64_t)jint(row, "notification_id");
    r->active = active;
    r->beta = jbool(row, "beta");
    r->mark = m->generation;
    if (fresh) {
        r->next = f->releases;
        f->releases = r;
    }
    note_change(m, f);
    return 1;
oom:
    if (fresh && r)
        release_free(r);
    snprintf(err, errlen, "out of memory applying release %s of config file %s/%s/%s", name, ns, grp, fname);
    return -ENOMEM;
}

int cc_model_apply(cc_model_t *m, const char *kind, const json_t *row, char *err, size_t errlen)
{
    if (!json_is_object(row)) {
        snprintf(err, errlen, "config %s row is not a JSON object", kind);
        return -EINVAL;
    }
    if (strcmp(kind, "group") == 0)
        return apply_group(m, row, err, errlen);
    if (strcmp(kind, "file") == 0)
        return apply_file(m, row, err, errlen);
    if (strcmp(kind, "release") == 0)
        return apply_release(m, row, err, errlen);
    snprintf(err, errlen, "unknown config row kind \"%s\"", kind);
    return -EINVAL;
}

void cc_model_reload_begin(cc_model_t *m) { m->generation++; }

void cc_model_reload_end(cc_model_t *m)
{
    cc_group_t *g, *gt;
    HASH_ITER(hh, m->groups, g, gt)
    {
        if (g->mark != m->generation) {
            HASH_DEL(m->groups, g);
            group_free(g);
        }
    }
    cc_file_t *f, *ft;
    HASH_ITER(hh, m->files, f, ft)
    {
        if (f->mark != m->generation) {
            file_remove(m, f);
            continue;
        }
        for (cc_release_t *r = f->releases, *n; r; r = n) {
            n = r->next;
            if (r->mark != m->generation) {
                release_unlink(f, r);
                if (r->active)
                    note_change(m, f);
                release_free(r);
            }
        }
    }
}

/*
 * cc_view.c: protobuf views of the config model (see cc_view.h).
 */
#include "cc_view.h"

#include <string.h>

#include "cc_validate.h"

/* A zeroed, initialised message of type T in the arena (NULL when out of memory). */
static void *new_msg(cc_arena_t *a, size_t size, const ProtobufCMessageDescriptor *d)
{
    void *p = cc_arena_alloc(a, size);
    if (p)
        protobuf_c_message_init(d, p);
    return p;
}
#define NEW(a, T, desc) ((T *)new_msg((a), sizeof(T), &(desc)))

V1__ConfigFileTag **cc_view_tags(cc_arena_t *a, const cc_tags_t *t)
{
    if (!t->n)
        return NULL;
    V1__ConfigFileTag **v = cc_arena_alloc(a, t->n * sizeof *v);
    if (!v)
        return NULL;
    for (size_t i = 0; i < t->n; i++) {
        v[i] = NEW(a, V1__ConfigFileTag, v1__config_file_tag__descriptor);
        if (!v[i])
            return NULL;
        v[i]->key = cc_sv_ref(a, t->v[i].key);
        v[i]->value = cc_sv_ref(a, t->v[i].value);
    }
    return v;
}

V1__ConfigFileGroup *cc_view_group(cc_arena_t *a, const cc_group_t *g)
{
    V1__ConfigFileGroup *v = NEW(a, V1__ConfigFileGroup, v1__config_file_group__descriptor);
    if (!v)
        return NULL;
    v->id = cc_u64v(a, (uint64_t)g->id);
    v->name = cc_sv_ref(a, g->name);
    v->namespace_ = cc_sv_ref(a, g->ns);
    v->comment = cc_sv_ref(a, g->comment);
    v->create_time = cc_sv_ref(a, cc_arena_time(a, g->ctime_ms));
    v->create_by = cc_sv_ref(a, g->create_by);
    v->modify_time = cc_sv_ref(a, cc_arena_time(a, g->mtime_ms));
    v->modify_by = cc_sv_ref(a, g->modify_by);
    v->filecount = cc_u64v(a, g->n_files);
    v->owner = cc_sv_ref(a, g->owner);
    v->business = cc_sv_ref(a, g->business);
    v->department = cc_sv_ref(a, g->department);
    v->editable = cc_bv(a, true);
    v->deleteable = cc_bv(a, true);
    if (g->metadata.n) {
        v->metadata = cc_arena_alloc(a, g->metadata.n * sizeof *v->metadata);
        if (!v->metadata)
            return NULL;
        for (size_t i = 0; i < g->metadata.n; i++) {
            V1__ConfigFileGroup__MetadataEntry *e =
                NEW(a, V1__ConfigFileGroup__MetadataEntry, v1__config_file_group__metadata_entry__descriptor);
            if (!e)
                return NULL;
            e->key = g->metadata.v[i].key;
            e->value = g->metadata.v[i].value;
            v->metadata[i] = e;
        }
        v->n_metadata = g->metadata.n;
    }
    return v;
}

V1__ConfigFile *cc_view_file(cc_arena_t *a, const cc_file_t *f, bool with_content)
{
    V1__ConfigFile *v = NEW(a, V1__ConfigFile, v1__config_file__descriptor);
    if (!v)
        return NULL;
    const cc_release_t *act = cc_file_active(f), *beta = cc_file_beta(f);
    v->id = cc_u64v(a, (uint64_t)f->id);
    v->name = cc_sv_ref(a, f->name);
    v->namespace_ = cc_sv_ref(a, f->ns);
    v->group = cc_sv_ref(a, f->group);
    if (with_content)
        v->content = cc_sv_ref(a, f->content);
    v->format = cc_sv_ref(a, f->format);
    v->comment = cc_sv_ref(a, f->comment);
    v->status = cc_sv_ref(a, beta                                        ? CC_STATUS_BETAING
                             : act && strcmp(act->md5, f->md5) == 0 ? CC_STATUS_SUCCESS
                                                                     : CC_STATUS_TO_BE_RELEASED);
    v->tags = cc_view_tags(a, &f->tags);
    v->n_tags = v->tags ? f->tags.n : 0;
    v->create_time = cc_sv_ref(a, cc_arena_time(a, f->ctime_ms));
    v->create_by = cc_sv_ref(a, f->create_by);
    v->modify_time = cc_sv_ref(a, cc_arena_time(a, f->mtime_ms));
    v->modify_by = cc_sv_ref(a, f->modify_by);
    if (act) {
        v->release_time = cc_sv_ref(a, cc_arena_time(a, act->mtime_ms));
        v->release_by = cc_sv_ref(a, act->modify_by);
    }
    v->encrypted = cc_bv(a, f->encrypted);
    v->encrypt_algo = cc_sv_ref(a, f->encrypt_algo);
    return v;
}

/* Polaris beta rules back from a stored target. */
static V1__ClientLabel **view_beta_labels(cc_arena_t *a, const cc_beta_t *b, size_t *n)
{
    size_t cnt = (b->n_ips ? 1 : 0) + b->n_labels;
    *n = 0;
    if (!cnt)
        return NULL;
    V1__ClientLabel **v = cc_arena_alloc(a, cnt * sizeof *v);
    if (!v)
        return NULL;
    size_t k = 0;
    if (b->n_ips) {
        size_t len = 1;
        for (size_t i = 0; i < b->n_ips; i++)
            len += strlen(b->ips[i]) + 1;
        char *list = cc_arena_alloc(a, len);
        if (!list)
            return NULL;
        for (size_t i = 0; i < b->n_ips; i++) {
            if (i)
                strcat(list, ",");
            strcat(list, b->ips[i]);
        }
        V1__ClientLabel *l = NEW(a, V1__ClientLabel, v1__client_label__descriptor);
        V1__MatchString *m = NEW(a, V1__MatchString, v1__match_string__descriptor);
        if (!l || !m)
            return NULL;
        m->type = V1__MATCH_STRING__MATCH_STRING_TYPE__IN;
        m->value = cc_sv_ref(a, list);
        l->key = (char *)CC_CLIENT_IP_LABEL;
        l->value = m;
        v[k++] = l;
    }
    for (size_t i = 0; i < b->n_labels; i++) {
        V1__ClientLabel *l = NEW(a, V1__ClientLabel, v1__client_label__descriptor);
        V1__MatchString *m = NEW(a, V1__MatchString, v1__match_string__descriptor);
        if (!l || !m)
            return NULL;
        m->type = V1__MATCH_STRING__MATCH_STRING_TYPE__EXACT;
        m->value = cc_sv_ref(a, b->values[i]);
        l->key = b->keys[i];
        l->value = m;
        v[k++] = l;
    }
    *n = k;
    return v;
}

V1__ConfigFileRelease *cc_view_release(cc_arena_t *a, const cc_file_t *f, const cc_release_t *r, bool with_content)
{
    V1__ConfigFileRelease *v = NEW(a, V1__ConfigFileRelease, v1__config_file_release__descriptor);
    if (!v)
        return NULL;
    v->id = cc_u64v(a, (uint64_t)r->id);
    v->name = cc_sv_ref(a, r->name);
    v->namespace_ = cc_sv_ref(a, f->ns);
    v->group = cc_sv_ref(a, f->group);
    v->file_name = cc_sv_ref(a, f->name);
    if (with_content && r->content)
        v->content = cc_sv_ref(a, r->content);
    v->comment = cc_sv_ref(a, r->comment);
    v->md5 = cc_sv_ref(a, r->md5);
    v->version = cc_u64v(a, r->version);
    v->create_time = cc_sv_ref(a, cc_arena_time(a, r->ctime_ms));
    v->create_by = cc_sv_ref(a, r->create_by);
    v->modify_time = cc_sv_ref(a, cc_arena_time(a, r->mtime_ms));
    v->modify_by = cc_sv_ref(a, r->modify_by);
    v->tags = cc_view_tags(a, &r->tags);
    v->n_tags = v->tags ? r->tags.n : 0;
    v->active = cc_bv(a, r->active);
    v->format = cc_sv_ref(a, r->format);
    v->release_description = cc_sv_ref(a, r->description);
    v->release_type = cc_sv_ref(a, r->beta ? CC_RELEASE_TYPE_GRAY : "");
    if (r->beta)
        v->beta_labels = view_beta_labels(a, &r->target, &v->n_beta_labels);
    v->config_file_id = cc_u64v(a, (uint64_t)f->id);
    return v;
}

Lodestar__ConfigBetaTarget *cc_view_target(cc_arena_t *a, const cc_beta_t *b)
{
    Lodestar__ConfigBetaTarget *t = NEW(a, Lodestar__ConfigBetaTarget, lodestar__config_beta_target__descriptor);
    if (!t)
        return NULL;
    t->client_ips = b->ips;
    t->n_client_ips = b->n_ips;
    if (b->n_labels) {
        t->labels = cc_arena_alloc(a, b->n_labels * sizeof *t->labels);
        if (!t->labels)
            return NULL;
        for (size_t i = 0; i < b->n_labels; i++) {
            Lodestar__ConfigBetaTarget__LabelsEntry *e =
                NEW(a, Lodestar__ConfigBetaTarget__LabelsEntry, lodestar__config_beta_target__labels_entry__descriptor);
            if (!e)
                return NULL;
            e->key = b->keys[i];
            e->value = b->values[i];
            t->labels[i] = e;
        }
        t->n_labels = b->n_labels;
    }
    return t;
}

static Lodestar__ConfigReleaseState *view_release_state(cc_arena_t *a, const cc_file_t *f, const cc_release_t *r)
{
    Lodestar__ConfigReleaseState *s = NEW(a, Lodestar__ConfigReleaseState, lodestar__config_release_state__descriptor);
    V1__ClientConfigFileInfo *i = NEW(a, V1__ClientConfigFileInfo, v1__client_config_file_info__descriptor);
    if (!s || !i)
        return NULL;
    i->namespace_ = cc_sv_ref(a, f->ns);
    i->group = cc_sv_ref(a, f->group);
    i->file_name = cc_sv_ref(a, f->name);
    i->content = cc_sv_ref(a, r->content);
    i->version = cc_u64v(a, r->version);
    i->md5 = cc_sv_ref(a, r->md5);
    i->tags = cc_view_tags(a, &r->tags);
    i->n_tags = i->tags ? r->tags.n : 0;
    i->encrypted = cc_bv(a, r->encrypted);
    i->name = cc_sv_ref(a, r->name);
    i->release_time = cc_sv_ref(a, cc_arena_time(a, r->mtime_ms));
    s->file = i;
    s->format = r->format;
    s->release_by = r->modify_by;
    s->release_time_ms = r->mtime_ms;
    s->encrypt_algo = r->encrypt_algo;
    return s;
}

Lodestar__ConfigFileState *cc_view_state(cc_arena_t *a, const cc_file_t *f)
{
    Lodestar__ConfigFileState *s = NEW(a, Lodestar__ConfigFileState, lodestar__config_file_state__descriptor);
    if (!s)
        return NULL;
    s->namespace_ = f->ns;
    s->group = f->group;
    s->file_name = f->name;
    s->notification_id = f->notification_id;
    const cc_release_t *act = f->live ? cc_file_active(f) : NULL, *beta = f->live ? cc_file_beta(f) : NULL;
    if (!act && !beta) {
        s->removed = true;
        return s;
    }
    if (act && !(s->release = view_release_state(a, f, act)))
        return NULL;
    if (beta && (!(s->beta = view_release_state(a, f, beta)) || !(s->beta_target = cc_view_target(a, &beta->target))))
        return NULL;
    return s;
}

static const char *hstr(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : "";
}

V1__ConfigFileReleaseHistory *cc_view_history(cc_arena_t *a, const json_t *row)
{
    V1__ConfigFileReleaseHistory *v = NEW(a, V1__ConfigFileReleaseHistory, v1__config_file_release_history__descriptor);
    if (!v)
        return NULL;
    const json_t *id = json_object_get(row, "id"), *ctime = json_object_get(row, "ctime");
    v->id = cc_u64v(a, json_is_integer(id) ? (uint64_t)json_integer_value(id) : 0);
    v->name = cc_sv_dup(a, hstr(row, "release_name"));
    v->namespace_ = cc_sv_dup(a, hstr(row, "namespace"));
    v->group = cc_sv_dup(a, hstr(row, "group"));
    v->file_name = cc_sv_dup(a, hstr(row, "file_name"));
    v->content = cc_sv_dup(a, hstr(row, "content"));
    v->format = cc_sv_dup(a, hstr(row, "format"));
    v->comment = cc_sv_dup(a, hstr(row, "comment"));
    v->md5 = cc_sv_dup(a, hstr(row, "md5"));
    v->type = cc_sv_dup(a, hstr(row, "type"));
    v->status = cc_sv_dup(a, hstr(row, "status"));
    cc_tags_t tags = {0};
    if (cc_tags_from_json(json_object_get(row, "tags"), &tags) == 0 && tags.n) {
        v->tags = cc_arena_alloc(a, tags.n * sizeof *v->tags);
        for (size_t i = 0; v->tags && i < tags.n; i++) {
            v->tags[i] = NEW(a, V1__ConfigFileTag, v1__config_file_tag__descriptor);
            if (!v->tags[i])
                break;
            v->tags[i]->key = cc_sv_dup(a, tags.v[i].key);
            v->tags[i]->value = cc_sv_dup(a, tags.v[i].value);
            v->n_tags = i + 1;
        }
    }
    cc_tags_free(&tags);
    char *t = cc_arena_time(a, json_is_integer(ctime) ? (int64_t)json_integer_value(ctime) : 0);
    v->create_time = cc_sv_ref(a, t);
    v->create_by = cc_sv_dup(a, hstr(row, "operator"));
    v->modify_time = cc_sv_ref(a, t);
    v->modify_by = cc_sv_dup(a, hstr(row, "operator"));
    v->reason = cc_sv_dup(a, hstr(row, "reason"));
    v->release_description = cc_sv_dup(a, hstr(row, "description"));
    return v;
}

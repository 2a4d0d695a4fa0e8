/*
 * cc_model.h: the config worker's in-memory view of the config centre:
 * groups, files (drafts) and each file's releases, in uthash tables.
 *
 * Rules:
 *  - The model is a mirror of PostgreSQL, never ahead of it: it changes only
 *    by applying rows the store returned (a full load, a poll of rows changed
 *    since the last one, the rows a write changed), all in the JSON shape of
 *    deploy/sql/0003_config.sql.
 *  - A row is applied only when its row_version is higher than the one held
 *    (row versions come from one PostgreSQL sequence), so re-applying a row,
 *    or an older one arriving late, changes nothing.
 *  - Release contents are held only for active releases (main and beta);
 *    inactive releases keep their metadata (name, version, md5, ...).
 *  - What clients read of a file changes exactly when the file's
 *    notification_id changes; the model lists such files (and removed ones)
 *    until the caller has pushed them (cc_model_take_changes/commit).
 *  - Groups and files are in hash tables keyed by namespace, group and name
 *    joined with 0x1f (a byte no name may contain).
 */
#ifndef LODESTAR_CC_MODEL_H
#define LODESTAR_CC_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uthash.h>

#include "cc_beta.h"

#define CC_KEY_SEP '\x1f'

typedef struct cc_tag {
    char *key;
    char *value;
} cc_tag_t;

typedef struct cc_tags {
    cc_tag_t *v;
    size_t n;
} cc_tags_t;

typedef struct cc_group {
    UT_hash_handle hh;
    char *hkey;
    char *ns, *name;
    char *comment, *owner, *business, *department, *create_by, *modify_by;
    cc_tags_t metadata; /* key/value pairs, sorted by key */
    int64_t id, row_version, ctime_ms, mtime_ms;
    uint64_t mark;      /* reload generation that saw it */
    size_t n_files;     /* filled by cc_model_count_files */
} cc_group_t;

typedef struct cc_release {
    struct cc_release *next;
    char *name, *md5, *format, *comment, *description, *encrypt_algo, *create_by, *modify_by;
    char *content;      /* NULL unless active */
    size_t content_len;
    cc_tags_t tags;
    cc_beta_t target;   /* beta releases */
    int64_t id, row_version, ctime_ms, mtime_ms;
    uint64_t version, notification_id, mark;
    bool active, beta, encrypted;
} cc_release_t;

typedef struct cc_file {
    UT_hash_handle hh;
    char *hkey;
    char *ns, *group, *name;
    char *content, *format, *comment, *encrypt_algo, *create_by, *modify_by;
    size_t content_len;
    char md5[33];            /* of the draft content */
    cc_tags_t tags;
    cc_release_t *releases;  /* any order */
    int64_t id, row_version, ctime_ms, mtime_ms;
    uint64_t release_seq, notification_id, mark;
    uint64_t emitted_nid;    /* notification id of the state last pushed (0: never) */
    bool encrypted;
    bool live;               /* false: deleted, waiting for its removal to be pushed */
    bool dirty;              /* listed in the model's change list */
} cc_file_t;

typedef struct cc_model {
    cc_group_t *groups;
    cc_file_t *files;
    cc_file_t **changed;     /* files whose client-visible state may have changed */
    size_t n_changed, cap_changed;
    uint64_t notification_id;/* highest seen */
    uint64_t generation;     /* current reload generation */
} cc_model_t;

cc_model_t *cc_model_new(void);
void cc_model_free(cc_model_t *m);

/* Apply one row of kind "group", "file" or "release". Returns 1 when it
 * changed the model, 0 when it was not newer than what is held, -EINVAL for
 * a malformed row, -ENOENT for a live release of a file the model does not
 * hold (the model and the store disagree: reload). err names the row. */
int cc_model_apply(cc_model_t *m, const char *kind, const json_t *row, char *err, size_t errlen);

/* A full reload: rows applied between begin and end are the complete live
 * set; end removes everything else (removed files are listed as changed). */
void cc_model_reload_begin(cc_model_t *m);
void cc_model_reload_end(cc_model_t *m);

/* Files whose state must be pushed: live files whose notification_id
 * differs from the one last pushed, and removed files that had been pushed.
 * Valid until cc_model_commit_changes, which records them as pushed and
 * frees removed files. */
size_t cc_model_take_changes(cc_model_t *m, cc_file_t ***out);
void cc_model_commit_changes(cc_model_t *m);
/* Treat every current state as already pushed (after the first load, when
 * replicas fetch snapshots instead). */
void cc_model_mark_all_pushed(cc_model_t *m);

cc_group_t *cc_model_group(const cc_model_t *m, const char *ns, const char *name);
cc_file_t *cc_model_file(const cc_model_t *m, const char *ns, const char *group, const char *name);
/* Fill every group's n_files. */
void cc_model_count_files(cc_model_t *m);

/* The file's active release and active beta release, or NULL. */
const cc_release_t *cc_file_active(const cc_file_t *f);
const cc_release_t *cc_file_beta(const cc_file_t *f);
const cc_release_t *cc_file_release(const cc_file_t *f, const char *name);
/* Live files with an active release or beta: what replicas hold. */
bool cc_file_published(const cc_file_t *f);

/* "ns\x1fgroup\x1fname" into buf; returns buf, or NULL when it does not fit. */
char *cc_file_key(char *buf, size_t len, const char *ns, const char *group, const char *name);

/* Tags as stored ([{"key", "value"}, ...]) to and from cc_tags_t. */
int cc_tags_from_json(const json_t *arr, cc_tags_t *out);
void cc_tags_free(cc_tags_t *t);

#endif

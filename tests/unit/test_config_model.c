/*
 * test_config_model.c: the config worker's in-memory model
 * (workers/config/core/cc_model.c) and its protobuf views (cc_view.c):
 * rows applied by row version only, release contents kept for active
 * releases only, what clients read changing exactly with the notification
 * id, removals, full reloads, and the replica states built from it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cc_arena.h"
#include "cc_model.h"
#include "cc_view.h"

static cc_model_t *m;

static void setup(void) { m = cc_model_new(); }
static void teardown(void) { cc_model_free(m); }

TestSuite(config_model, .init = setup, .fini = teardown);

static json_t *file_row(const char *name, int64_t rv, uint64_t nid, const char *content, bool deleted)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:[{s:s,s:s}],s:I,s:I,s:I,s:b,s:I,s:I,s:s,s:s}", "namespace", "default",
                     "group", "app", "name", name, "content", content, "format", "json", "tags", "key", "team",
                     "value", "core", "row_version", (json_int_t)rv, "notification_id", (json_int_t)nid, "release_seq",
                     (json_int_t)3, "deleted", deleted, "ctime", (json_int_t)1700000000000, "mtime",
                     (json_int_t)1700000001000, "create_by", "alice", "modify_by", "bob");
}

static json_t *release_row(const char *file, const char *name, int64_t rv, uint64_t version, bool active, bool beta,
                           const char *content)
{
    json_t *r = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:b,s:b,s:b,s:[],s:{},s:I,s:s}", "namespace", "default",
                          "group", "app", "file_name", file, "name", name, "md5", "md5-of-content", "format", "json",
                          "row_version", (json_int_t)rv, "version", (json_int_t)version, "active", active, "beta", beta,
                          "deleted", false, "beta_ips", "beta_labels", "mtime", (json_int_t)1700000002000,
                          "modify_by", "carol");
    if (content)
        json_object_set_new(r, "content", json_string(content));
    if (beta) {
        json_object_set_new(r, "beta_ips", json_pack("[s]", "10.0.0.9"));
        json_object_set_new(r, "beta_labels", json_pack("{s:s}", "env", "gray"));
    }
    return r;
}

static int apply(const char *kind, json_t *row)
{
    char err[256] = "";
    int rc = cc_model_apply(m, kind, row, err, sizeof err);
    json_decref(row);
    return rc;
}

/* Take the pending changes, check their count, record them as pushed. */
static size_t changes(void)
{
    cc_file_t **v;
    size_t n = cc_model_take_changes(m, &v);
    cc_model_commit_changes(m);
    return n;
}

Test(config_model, publish_is_listed_once_and_reapplying_changes_nothing)
{
    cr_assert_eq(apply("file", file_row("a.json", 10, 5, "{\"v\":1}", false)), 1);
    cr_assert_eq(apply("release", release_row("a.json", "r1", 11, 1, true, false, "{\"v\":1}")), 1);
    cc_file_t *f = cc_model_file(m, "default", "app", "a.json");
    cr_assert_not_null(f);
    cr_assert_str_eq(f->md5, "a191475ae2bf7db9c7e320f7da455bbb", "md5 of the draft {\"v\":1}");
    cr_assert(cc_file_published(f));
    cr_assert_eq(m->notification_id, 5);

    cc_file_t **v;
    cr_assert_eq(cc_model_take_changes(m, &v), 1, "the new release is a change");
    cr_assert_eq(v[0], f);
    cc_arena_t a = {0};
    Lodestar__ConfigFileState *s = cc_view_state(&a, f);
    cr_assert_not_null(s);
    cr_assert_not(s->removed);
    cr_assert_eq(s->notification_id, 5);
    cr_assert_not_null(s->release);
    cr_assert_str_eq(s->release->file->content->value, "{\"v\":1}");
    cr_assert_eq(s->release->file->version->value, 1);
    cr_assert_str_eq(s->release->file->name->value, "r1");
    cr_assert_str_eq(s->release->file->md5->value, "md5-of-content");
    cr_assert_str_eq(s->release->format, "json");
    cr_assert_str_eq(s->release->release_by, "carol");
    cr_assert_eq(s->release->release_time_ms, 1700000002000);
    cr_assert_null(s->beta);
    cc_arena_free(&a);
    cc_model_commit_changes(m);

    /* the same rows again (a poll re-reading them), and an older one */
    cr_assert_eq(apply("file", file_row("a.json", 10, 5, "{\"v\":1}", false)), 0);
    cr_assert_eq(apply("release", release_row("a.json", "r1", 11, 1, true, false, "{\"v\":1}")), 0);
    cr_assert_eq(apply("file", file_row("a.json", 9, 4, "{\"old\":1}", false)), 0);
    cr_assert_str_eq(f->content, "{\"v\":1}", "an older row does not overwrite a newer one");
    cr_assert_eq(changes(), 0, "nothing new to push");
}

Test(config_model, a_new_release_replaces_the_old_one_whose_content_is_dropped)
{
    apply("file", file_row("a.json", 10, 5, "{}", false));
    apply("release", release_row("a.json", "r1", 11, 1, true, false, "{}"));
    cr_assert_eq(changes(), 1);
    /* publish r2: the file's notification id moves, r1 turns inactive */
    apply("file", file_row("a.json", 20, 6, "{\"x\":2}", false));
    apply("release", release_row("a.json", "r1", 21, 1, false, false, NULL));
    apply("release", release_row("a.json", "r2", 22, 2, true, false, "{\"x\":2}"));
    cc_file_t *f = cc_model_file(m, "default", "app", "a.json");
    const cc_release_t *r1 = cc_file_release(f, "r1"), *act = cc_file_active(f);
    cr_assert_not_null(r1);
    cr_assert_null(r1->content, "inactive releases keep no content");
    cr_assert_str_eq(act->name, "r2");
    cr_assert_eq(act->version, 2);
    cr_assert_eq(changes(), 1);
    cr_assert_eq(f->emitted_nid, 6);
    /* a draft edit alone (same notification id) is not a change for clients */
    apply("file", file_row("a.json", 30, 6, "{\"draft\":3}", false));
    cr_assert_eq(changes(), 0);
}

Test(config_model, beta_state_carries_its_target)
{
    apply("file", file_row("b.json", 10, 7, "{}", false));
    apply("release", release_row("b.json", "main", 11, 1, true, false, "{\"main\":1}"));
    apply("release", release_row("b.json", "gray", 12, 2, true, true, "{\"beta\":1}"));
    cc_file_t *f = cc_model_file(m, "default", "app", "b.json");
    cc_arena_t a = {0};
    Lodestar__ConfigFileState *s = cc_view_state(&a, f);
    cr_assert_not_null(s->release);
    cr_assert_not_null(s->beta);
    cr_assert_str_eq(s->beta->file->content->value, "{\"beta\":1}");
    cr_assert_eq(s->beta->file->version->value, 2);
    cr_assert_not_null(s->beta_target);
    cr_assert_eq(s->beta_target->n_client_ips, 1);
    cr_assert_str_eq(s->beta_target->client_ips[0], "10.0.0.9");
    cr_assert_eq(s->beta_target->n_labels, 1);
    cr_assert_str_eq(s->beta_target->labels[0]->key, "env");
    cr_assert_str_eq(s->beta_target->labels[0]->value, "gray");
    /* the Polaris view gives the rules back */
    V1__ConfigFileRelease *rv = cc_view_release(&a, f, cc_file_beta(f), true);
    cr_assert_str_eq(rv->release_type->value, "gray");
    cr_assert_eq(rv->n_beta_labels, 2);
    cr_assert_str_eq(rv->beta_labels[0]->key, "CLIENT_IP");
    cr_assert_str_eq(rv->beta_labels[0]->value->value->value, "10.0.0.9");
    cr_assert_str_eq(rv->beta_labels[1]->key, "env");
    V1__ConfigFile *fv = cc_view_file(&a, f, false);
    cr_assert_str_eq(fv->status->value, "betaing");
    cr_assert_null(fv->content);
    cc_arena_free(&a);
}

Test(config_model, deleting_a_pushed_file_pushes_its_removal)
{
    apply("file", file_row("c.json", 10, 8, "{}", false));
    apply("release", release_row("c.json", "r1", 11, 1, true, false, "{}"));
    cr_assert_eq(changes(), 1);
    cr_assert_eq(apply("file", file_row("c.json", 30, 9, "", true)), 1);
    cr_assert_null(cc_model_file(m, "default", "app", "c.json"), "gone from the tables at once");
    /* its release tombstones arrive after the file's: nothing to do */
    json_t *tomb = release_row("c.json", "r1", 31, 1, false, false, NULL);
    json_object_set_new(tomb, "deleted", json_true());
    cr_assert_eq(apply("release", tomb), 0);
    cc_file_t **v;
    cr_assert_eq(cc_model_take_changes(m, &v), 1);
    cc_arena_t a = {0};
    Lodestar__ConfigFileState *s = cc_view_state(&a, v[0]);
    cr_assert(s->removed);
    cr_assert_eq(s->notification_id, 9);
    cr_assert_null(s->release);
    cc_arena_free(&a);
    cc_model_commit_changes(m);
    cr_assert_eq(changes(), 0);
}

Test(config_model, a_file_never_pushed_leaves_silently)
{
    apply("file", file_row("d.json", 10, 0, "{}", false));
    cr_assert_eq(changes(), 0, "a draft without release is not a client state");
    apply("file", file_row("d.json", 11, 0, "", true));
    cr_assert_eq(changes(), 0);
}

Test(config_model, rows_that_do_not_fit)
{
    char err[256];
    json_t *orphan = release_row("nofile.json", "r1", 5, 1, true, false, "{}");
    cr_assert_eq(cc_model_apply(m, "release", orphan, err, sizeof err), -ENOENT);
    cr_assert_str_eq(err, "release r1 of config file default/app/nofile.json arrived but the file is not known");
    json_decref(orphan);
    json_t *bad = json_pack("{s:s}", "namespace", "default");
    cr_assert_eq(cc_model_apply(m, "file", bad, err, sizeof err), -EINVAL);
    cr_assert_eq(cc_model_apply(m, "widget", bad, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "unknown config row kind \"widget\"");
    json_decref(bad);
    apply("file", file_row("e.json", 10, 1, "{}", false));
    json_t *nocontent = release_row("e.json", "r1", 11, 1, true, false, NULL);
    cr_assert_eq(cc_model_apply(m, "release", nocontent, err, sizeof err), -EINVAL, "an active release needs content");
    json_decref(nocontent);
}

Test(config_model, reload_removes_what_is_gone)
{
    apply("group", json_pack("{s:s,s:s,s:I}", "namespace", "default", "name", "app", "row_version", (json_int_t)1));
    apply("group", json_pack("{s:s,s:s,s:I}", "namespace", "default", "name", "old", "row_version", (json_int_t)2));
    apply("file", file_row("keep.json", 10, 3, "{}", false));
    apply("release", release_row("keep.json", "r1", 11, 1, true, false, "{}"));
    apply("release", release_row("keep.json", "r0", 12, 0, false, false, NULL));
    apply("file", file_row("gone.json", 20, 4, "{}", false));
    apply("release", release_row("gone.json", "r1", 21, 1, true, false, "{}"));
    cc_model_mark_all_pushed(m);
    cr_assert_eq(changes(), 0, "everything loaded counts as pushed");
    cc_model_count_files(m);
    cr_assert_eq(cc_model_group(m, "default", "app")->n_files, 2);

    /* the store now holds only: group app, keep.json with r1 */
    cc_model_reload_begin(m);
    apply("group", json_pack("{s:s,s:s,s:I}", "namespace", "default", "name", "app", "row_version", (json_int_t)1));
    apply("file", file_row("keep.json", 10, 3, "{}", false));
    apply("release", release_row("keep.json", "r1", 11, 1, true, false, "{}"));
    cc_model_reload_end(m);
    cr_assert_null(cc_model_group(m, "default", "old"));
    cr_assert_null(cc_model_file(m, "default", "app", "gone.json"));
    cc_file_t *keep = cc_model_file(m, "default", "app", "keep.json");
    cr_assert_null(cc_file_release(keep, "r0"), "an inactive release that is gone is dropped");
    cc_file_t **v;
    cr_assert_eq(cc_model_take_changes(m, &v), 1, "only the removed file is a client change");
    cr_assert_str_eq(v[0]->name, "gone.json");
    cr_assert_not(v[0]->live);
    cc_model_commit_changes(m);
}

Test(config_model, group_view)
{
    json_t *g = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:{s:s,s:s},s:I,s:I}", "namespace", "prod", "name", "payments",
                          "comment", "c", "owner", "ops", "business", "pay", "department", "fin", "metadata", "z", "1",
                          "a", "2", "row_version", (json_int_t)1, "ctime", (json_int_t)0);
    cr_assert_eq(apply("group", g), 1);
    cc_arena_t a = {0};
    cc_model_count_files(m);
    V1__ConfigFileGroup *v = cc_view_group(&a, cc_model_group(m, "prod", "payments"));
    cr_assert_str_eq(v->name->value, "payments");
    cr_assert_str_eq(v->namespace_->value, "prod");
    cr_assert_str_eq(v->owner->value, "ops");
    cr_assert_eq(v->filecount->value, 0);
    cr_assert_eq(v->n_metadata, 2);
    cr_assert_str_eq(v->metadata[0]->key, "a", "metadata sorted by key");
    cc_arena_free(&a);
    /* deleting it */
    cr_assert_eq(apply("group", json_pack("{s:s,s:s,s:I,s:b}", "namespace", "prod", "name", "payments", "row_version",
                                          (json_int_t)2, "deleted", true)),
                 1);
    cr_assert_null(cc_model_group(m, "prod", "payments"));
}

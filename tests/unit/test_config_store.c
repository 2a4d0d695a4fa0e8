/*
 * test_config_store.c: the config centre's schema and write function
 * (deploy/sql/0003_config.sql) on a private PostgreSQL: release versions
 * that only grow (publish, rollback to an earlier release with a new
 * version, delete and re-create), notification ids, beta rules, the md5
 * guard, per-item failures, tombstones and their purge, and the xid8 poll
 * (a transaction that commits after a poll is seen by the next one).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pgtest.h"
#include "store.h"

static pgtest_t pg;
static PGconn *db;

static void setup(void)
{
    char err[1024];
    cr_assert_eq(pgtest_start(&pg, err, sizeof err), 0, "pgtest_start: %s", err);
    /* the base schema and the config centre's (the other domains' tables are not needed) */
    for (int i = 0; i < store_n_migrations; i++) {
        if (strcmp(store_migrations[i].name, "base") != 0 && strcmp(store_migrations[i].name, "config") != 0)
            continue;
        cr_assert_eq(pgtest_exec(&pg, store_migrations[i].sql, err, sizeof err), 0, "migration %s: %s",
                     store_migrations[i].name, err);
    }
    db = pgtest_connect(&pg, NULL, err, sizeof err);
    cr_assert_not_null(db, "connect: %s", err);
}

static void teardown(void)
{
    if (db)
        PQfinish(db);
    db = NULL;
    pgtest_stop(&pg);
}

TestSuite(config_store, .init = setup, .fini = teardown, .timeout = 90);

/* Run a query with text parameters; must succeed. */
static PGresult *q(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql,
              PQresultErrorMessage(r));
    return r;
}

/* One value of a one-row query. */
static char *q1(const char *sql)
{
    PGresult *r = q(db, sql, 0, NULL);
    cr_assert_eq(PQntuples(r), 1, "%s returned %d rows", sql, PQntuples(r));
    char *v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static long long q1ll(const char *sql)
{
    char *v = q1(sql);
    long long n = atoll(v);
    free(v);
    return n;
}

typedef struct wres {
    int codes[8];
    char info[8][512];
    char release[8][256];
    int n_results;
    int n_rows; /* changed rows returned */
} wres_t;

static wres_t write_on(PGconn *c, const char *op, const char *items)
{
    const char *params[3] = {op, items, "tester"};
    PGresult *r = q(c, "SELECT kind, data::text FROM lodestar_config_write($1, $2::jsonb, $3)", 3, params);
    wres_t w = {0};
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *j = json_loads(PQgetvalue(r, i, 1), 0, NULL);
        cr_assert_not_null(j);
        if (strcmp(PQgetvalue(r, i, 0), "result") == 0) {
            int idx = (int)json_integer_value(json_object_get(j, "i"));
            cr_assert(idx >= 0 && idx < 8);
            w.codes[idx] = (int)json_integer_value(json_object_get(j, "code"));
            const char *info = json_string_value(json_object_get(j, "info"));
            const char *rel = json_string_value(json_object_get(j, "release_name"));
            snprintf(w.info[idx], sizeof w.info[idx], "%s", info ? info : "");
            snprintf(w.release[idx], sizeof w.release[idx], "%s", rel ? rel : "");
            w.n_results++;
        } else {
            w.n_rows++;
        }
        json_decref(j);
    }
    PQclear(r);
    return w;
}

static wres_t write_op(const char *op, const char *items) { return write_on(db, op, items); }

#define FILE_KEY "\"namespace\":\"default\",\"group\":\"app\""

static void create_file(const char *name, const char *content)
{
    char items[1024];
    json_t *c = json_string(content);
    char *cs = json_dumps(c, JSON_ENCODE_ANY);
    snprintf(items, sizeof items, "[{" FILE_KEY ",\"name\":\"%s\",\"content\":%s,\"format\":\"json\"}]", name, cs);
    free(cs);
    json_decref(c);
    wres_t w = write_op("FILE_CREATE", items);
    cr_assert_eq(w.codes[0], 200000, "create %s: %s", name, w.info[0]);
}

static void set_content(const char *name, const char *content)
{
    char items[1024];
    snprintf(items, sizeof items, "[{" FILE_KEY ",\"name\":\"%s\",\"content\":\"%s\"}]", name, content);
    wres_t w = write_op("FILE_UPDATE", items);
    cr_assert_eq(w.codes[0], 200000, "update %s: %s", name, w.info[0]);
}

static wres_t publish(const char *file, const char *release_name)
{
    char items[512];
    if (release_name)
        snprintf(items, sizeof items, "[{" FILE_KEY ",\"file_name\":\"%s\",\"release_name\":\"%s\"}]", file,
                 release_name);
    else
        snprintf(items, sizeof items, "[{" FILE_KEY ",\"file_name\":\"%s\"}]", file);
    return write_op("FILE_PUBLISH", items);
}

static long long active_version(const char *file, bool beta)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(max(version), 0) FROM lodestar_config_release WHERE file_name = '%s' AND active AND beta = %s",
             file, beta ? "true" : "false");
    return q1ll(sql);
}

static char *active_content(const char *file)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT content FROM lodestar_config_release WHERE file_name = '%s' AND active AND NOT beta", file);
    return q1(sql);
}

static long long file_nid(const char *file)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT notification_id FROM lodestar_config_file WHERE name = '%s'", file);
    return q1ll(sql);
}

Test(config_store, versions_only_grow_and_rollback_activates_an_old_release_with_a_new_version)
{
    create_file("a.json", "{\"v\":1}");
    wres_t w = publish("a.json", "first");
    cr_assert_eq(w.codes[0], 200000, "%s", w.info[0]);
    cr_assert_str_eq(w.release[0], "first");
    cr_assert_eq(active_version("a.json", false), 1);
    long long nid1 = file_nid("a.json");
    cr_assert_gt(nid1, 0);

    set_content("a.json", "{\\\"v\\\":2}");
    w = publish("a.json", NULL);
    cr_assert_eq(w.codes[0], 200000, "%s", w.info[0]);
    cr_assert(strncmp(w.release[0], "a.json-", 7) == 0, "a generated release name starts with the file name: %s",
              w.release[0]);
    cr_assert_eq(active_version("a.json", false), 2);
    long long nid2 = file_nid("a.json");
    cr_assert_gt(nid2, nid1, "every publish takes a new notification id");
    cr_assert_eq(q1ll("SELECT count(*) FROM lodestar_config_release WHERE file_name = 'a.json' AND active"), 1,
                 "one active release");

    /* the same release name again is refused: roll back instead */
    w = publish("a.json", "first");
    cr_assert_eq(w.codes[0], 400201);
    cr_assert(strstr(w.info[0], "release first of config file default/app/a.json already exists"), "%s", w.info[0]);

    /* rollback to "first": its content, a new version */
    w = write_op("RELEASE_ROLLBACK", "[{" FILE_KEY ",\"file_name\":\"a.json\",\"release_name\":\"first\"}]");
    cr_assert_eq(w.codes[0], 200000, "%s", w.info[0]);
    cr_assert_eq(active_version("a.json", false), 3, "rollback makes the old release active with a new version");
    char *c = active_content("a.json");
    cr_assert_str_eq(c, "{\"v\":1}");
    free(c);
    cr_assert_gt(file_nid("a.json"), nid2);

    /* rollback by version: the second publish still has version 2 */
    w = write_op("RELEASE_ROLLBACK", "[{" FILE_KEY ",\"file_name\":\"a.json\",\"version\":2}]");
    cr_assert_eq(w.codes[0], 200000, "%s", w.info[0]);
    cr_assert_eq(active_version("a.json", false), 4);
    c = active_content("a.json");
    cr_assert_str_eq(c, "{\"v\":2}");
    free(c);

    w = write_op("RELEASE_ROLLBACK", "[{" FILE_KEY ",\"file_name\":\"a.json\",\"release_name\":\"nope\"}]");
    cr_assert_eq(w.codes[0], 400202);
    cr_assert_str_eq(w.info[0], "release nope of config file default/app/a.json does not exist");

    char *types = q1("SELECT string_agg(type || ':' || version, ',' ORDER BY id) FROM lodestar_config_release_history");
    cr_assert_str_eq(types, "normal:1,normal:2,rollback:3,rollback:4");
    free(types);

    /* delete the file and create it again: versions continue */
    w = write_op("FILE_DELETE", "[{" FILE_KEY ",\"name\":\"a.json\"}]");
    cr_assert_eq(w.codes[0], 200000, "%s", w.info[0]);
    cr_assert_eq(q1ll("SELECT count(*) FROM lodestar_config_release WHERE NOT deleted"), 0);
    create_file("a.json", "{}");
    w = publish("a.json", "first");
    cr_assert_eq(w.codes[0], 200000, "the tombstone of a release name gives way: %s", w.info[0]);
    cr_assert_eq(active_version("a.json", false), 5, "the version continues after delete and re-create");
}

Test(config_store, beta_blocks_publishing_until_stopped_and_stopping_moves_the_main_version)
{
    create_file("b.json", "{}");
    cr_assert_eq(publish("b.json", "main").codes[0], 200000);
    long long nid = file_nid("b.json");
    wres_t w = write_op("FILE_PUBLISH", "[{" FILE_KEY ",\"file_name\":\"b.json\",\"release_name\":\"gray1\","
                                        "\"beta\":{\"ips\":[\"10.0.0.1\"],\"labels\":{}}}]");
    cr_assert_eq(w.codes[0], 200000, "%s", w.info[0]);
    cr_assert_eq(active_version("b.json", true), 2);
    cr_assert_eq(active_version("b.json", false), 1, "the main release stays");
    cr_assert_gt(file_nid("b.json"), nid);

    w = publish("b.json", "main2");
    cr_assert_eq(w.codes[0], 409000);
    cr_assert_str_eq(w.info[0], "config file default/app/b.json has an active beta release gray1; stop it first");
    w = write_op("FILE_PUBLISH",
                 "[{" FILE_KEY ",\"file_name\":\"b.json\",\"beta\":{\"ips\":[\"10.0.0.2\"],\"labels\":{}}}]");
    cr_assert_eq(w.codes[0], 409000, "one beta at most");

    nid = file_nid("b.json");
    w = write_op("STOP_BETA", "[{" FILE_KEY ",\"file_name\":\"b.json\"}]");
    cr_assert_eq(w.codes[0], 200000, "%s", w.info[0]);
    cr_assert_eq(active_version("b.json", true), 0, "no beta any more");
    cr_assert_eq(active_version("b.json", false), 3, "the main release moves above the beta's version");
    cr_assert_gt(file_nid("b.json"), nid);
    w = write_op("STOP_BETA", "[{" FILE_KEY ",\"file_name\":\"b.json\"}]");
    cr_assert_eq(w.codes[0], 200000, "stopping no beta succeeds (Polaris)");
    cr_assert_eq(publish("b.json", "main2").codes[0], 200000);
    char *types = q1("SELECT string_agg(type, ',' ORDER BY id) FROM lodestar_config_release_history");
    cr_assert_str_eq(types, "normal,betaing,cancel-gray,normal");
    free(types);
}

Test(config_store, publish_refuses_content_other_than_the_validated_one)
{
    create_file("c.json", "{\"v\":1}");
    /* the worker validated {"v":0} (a stale draft): refused, nothing written */
    wres_t w = write_op("FILE_PUBLISH", "[{" FILE_KEY ",\"file_name\":\"c.json\",\"md5\":\"0123456789abcdef0123456789abcdef\"}]");
    cr_assert_eq(w.codes[0], 409000);
    cr_assert_str_eq(w.info[0], "config file default/app/c.json changed while it was being published; retry");
    cr_assert_eq(q1ll("SELECT count(*) FROM lodestar_config_release"), 0);
    cr_assert_eq(q1ll("SELECT release_seq FROM lodestar_config_file WHERE name = 'c.json'"), 0);
    w = write_op("FILE_PUBLISH", "[{" FILE_KEY ",\"file_name\":\"c.json\",\"md5\":\"a191475ae2bf7db9c7e320f7da455bbb\"}]");
    cr_assert_eq(w.codes[0], 200000, "%s", w.info[0]);
}

Test(config_store, each_item_fails_alone)
{
    create_file("d.json", "{}");
    wres_t w = write_op("FILE_PUBLISH", "[{" FILE_KEY ",\"file_name\":\"d.json\"},{" FILE_KEY
                                        ",\"file_name\":\"missing.json\"},{" FILE_KEY ",\"file_name\":\"d.json\"}]");
    cr_assert_eq(w.n_results, 3);
    cr_assert_eq(w.codes[0], 200000);
    cr_assert_eq(w.codes[1], 400202);
    cr_assert_str_eq(w.info[1], "config file default/app/missing.json does not exist");
    cr_assert_eq(w.codes[2], 200000);
    cr_assert_eq(active_version("d.json", false), 2);
    cr_assert_gt(w.n_rows, 0, "the changed rows come back");
    w = write_op("FILE_CREATE", "[{" FILE_KEY ",\"name\":\"d.json\",\"content\":\"\"}]");
    cr_assert_eq(w.codes[0], 400201);
    cr_assert_str_eq(w.info[0], "config file default/app/d.json already exists");
    cr_assert_eq(w.n_rows, 0, "a failed item changes no row");
    w = write_op("FILE_UPDATE", "[{" FILE_KEY ",\"name\":\"nope.json\",\"content\":\"\"}]");
    cr_assert_eq(w.codes[0], 400202);
}

Test(config_store, groups_files_and_tombstones)
{
    wres_t w = write_op("GROUP_CREATE", "[{\"namespace\":\"default\",\"name\":\"app\",\"comment\":\"c\","
                                        "\"metadata\":{\"k\":\"v\"}}]");
    cr_assert_eq(w.codes[0], 200000, "%s", w.info[0]);
    w = write_op("GROUP_CREATE", "[{\"namespace\":\"default\",\"name\":\"app\"}]");
    cr_assert_eq(w.codes[0], 400201);
    cr_assert_str_eq(w.info[0], "config group default/app already exists");
    create_file("e.json", "{}");
    w = write_op("GROUP_DELETE", "[{\"namespace\":\"default\",\"name\":\"app\"}]");
    cr_assert_eq(w.codes[0], 400201);
    cr_assert_str_eq(w.info[0], "config group default/app still holds 1 config file(s); delete them first");
    cr_assert_eq(publish("e.json", "r1").codes[0], 200000);
    long long nid = file_nid("e.json");
    w = write_op("RELEASE_DELETE", "[{" FILE_KEY ",\"file_name\":\"e.json\",\"release_name\":\"r1\"}]");
    cr_assert_eq(w.codes[0], 200000);
    cr_assert_gt(file_nid("e.json"), nid, "deleting the active release is a change for clients");
    cr_assert_eq(active_version("e.json", false), 0);
    cr_assert_eq(write_op("FILE_DELETE", "[{" FILE_KEY ",\"name\":\"e.json\"}]").codes[0], 200000);
    cr_assert_eq(write_op("FILE_DELETE", "[{" FILE_KEY ",\"name\":\"e.json\"}]").codes[0], 200000,
                 "deleting a missing file succeeds (Polaris)");
    cr_assert_eq(write_op("GROUP_DELETE", "[{\"namespace\":\"default\",\"name\":\"app\"}]").codes[0], 200000);
    cr_assert_eq(q1ll("SELECT count(*) FROM lodestar_config_group WHERE deleted"), 1, "a tombstone stays");
    cr_assert_eq(q1ll("SELECT lodestar_config_purge(interval '1 hour')"), 0, "young tombstones stay");
    cr_assert_eq(q1ll("SELECT lodestar_config_purge(interval '0')"), 2, "the group's and the release's tombstones go");
    cr_assert_eq(q1ll("SELECT count(*) FROM lodestar_config_file"), 1, "file rows stay (their release_seq)");
}

Test(config_store, a_poll_sees_what_committed_after_the_previous_poll)
{
    char err[512];
    PGconn *other = pgtest_connect(&pg, NULL, err, sizeof err);
    cr_assert_not_null(other, "%s", err);
    create_file("f.json", "{}");
    char *xmin = q1("SELECT data #>> '{}' FROM lodestar_config_changes('0', true) WHERE kind = 'xmin'");

    /* a transaction on another connection writes and stays open across a poll */
    PQclear(q(other, "BEGIN", 0, NULL));
    wres_t w = write_on(other, "FILE_PUBLISH", "[{" FILE_KEY ",\"file_name\":\"f.json\"}]");
    cr_assert_eq(w.codes[0], 200000);
    const char *p1[1] = {xmin};
    PGresult *r = q(db, "SELECT kind, data::text FROM lodestar_config_changes($1::xid8, false)", 1, p1);
    int releases = 0;
    char next[64] = "";
    for (int i = 0; i < PQntuples(r); i++) {
        if (strcmp(PQgetvalue(r, i, 0), "release") == 0)
            releases++;
        if (strcmp(PQgetvalue(r, i, 0), "xmin") == 0) {
            json_t *j = json_loads(PQgetvalue(r, i, 1), JSON_DECODE_ANY, NULL);
            snprintf(next, sizeof next, "%s", json_string_value(j));
            json_decref(j);
        }
    }
    PQclear(r);
    cr_assert_eq(releases, 0, "an uncommitted release is not visible");
    cr_assert(next[0]);
    PQclear(q(other, "COMMIT", 0, NULL));

    /* the next poll starts at the previous poll's xmin, which the open
     * transaction held back: its rows are read now */
    const char *p2[1] = {next};
    r = q(db, "SELECT kind, data::text FROM lodestar_config_changes($1::xid8, false)", 1, p2);
    releases = 0;
    for (int i = 0; i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), "release") == 0)
            releases++;
    PQclear(r);
    cr_assert_eq(releases, 1, "the release committed after the poll is seen by the next one");
    free(xmin);
    PQfinish(other);
}

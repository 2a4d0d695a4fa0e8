/*
 * test_config_worker.c: the config worker for real: the supervisor starts
 * it with PostgreSQL, and the test talks to <runtime_dir>/config.sock the
 * way a gateway does (an ipc_client: requests, the "config" subscription,
 * snapshot pages), checking PostgreSQL directly where "nothing written"
 * matters. Covers CRUD of groups and files, publish and snapshot, history
 * and rollback, beta publish and stop-beta, refused content and names,
 * unknown files, durability across a full restart, two nodes on one
 * PostgreSQL converging within a second, and kill -9 of the worker while
 * publishes are in flight (no acknowledged publish is lost).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "cc_arena.h"
#include "ipc.h"
#include "lstest.h"
#include "pgtest.h"

/* ------------------------------------------------------------ a client */

typedef struct cli {
    struct event_base *base;
    ipc_client_t *cl;
    bool connected;
    size_t n_pushes;        /* ConfigChange pushes received */
    long long last_push_ms;
    char push_files[64][128];/* file names seen in pushes (the first 64) */
    size_t n_push_files;
} cli_t;

static void on_push(ipc_client_t *cl, Lodestar__Envelope *env, void *arg)
{
    cli_t *c = arg;
    if (env->body_case != LODESTAR__ENVELOPE__BODY_CONFIG_CHANGE)
        return;
    c->n_pushes++;
    c->last_push_ms = lstest_now_ms();
    for (size_t i = 0; i < env->config_change->n_files && c->n_push_files < 64; i++)
        snprintf(c->push_files[c->n_push_files++], sizeof c->push_files[0], "%s%s",
                 env->config_change->files[i]->removed ? "-" : "+", env->config_change->files[i]->file_name);
}

static bool pushed(const cli_t *c, const char *tagged_name)
{
    for (size_t i = 0; i < c->n_push_files; i++)
        if (strcmp(c->push_files[i], tagged_name) == 0)
            return true;
    return false;
}

static void on_state(ipc_client_t *cl, bool connected, void *arg) { ((cli_t *)arg)->connected = connected; }

static void run_for(cli_t *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(c->base, &tv);
    event_base_dispatch(c->base);
}

/* Run the loop until *flag turns true or ms pass. */
static bool run_until(cli_t *c, const bool *flag, int ms)
{
    long long end = lstest_now_ms() + ms;
    while (!*flag && lstest_now_ms() < end)
        run_for(c, 5);
    return *flag;
}

static void cli_open(cli_t *c, const lstest_t *t)
{
    memset(c, 0, sizeof *c);
    c->base = event_base_new();
    char path[700];
    snprintf(path, sizeof path, "%s/config.sock", t->runtime);
    c->cl = ipc_client_new(c->base, path, "test", 0, on_push, on_state, c);
    cr_assert_not_null(c->cl);
    cr_assert_eq(ipc_client_subscribe(c->cl, "config"), 0);
    cr_assert(run_until(c, &c->connected, 10000), "no connection to %s", path);
}

static void cli_close(cli_t *c)
{
    ipc_client_free(c->cl);
    event_base_free(c->base);
}

typedef struct callres {
    bool done;
    int status;
    uint8_t *bytes;
    size_t len;
} callres_t;

static void on_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    callres_t *r = arg;
    r->done = true;
    r->status = status;
    if (reply) {
        r->len = lodestar__envelope__get_packed_size(reply);
        r->bytes = malloc(r->len ? r->len : 1);
        lodestar__envelope__pack(reply, r->bytes);
    }
}

/* One request, waited for. Free the reply with lodestar__envelope__free_unpacked. */
static Lodestar__Envelope *cli_call(cli_t *c, const Lodestar__Envelope *req)
{
    callres_t r = {0};
    cr_assert_eq(ipc_client_request(c->cl, req, 10000, on_reply, &r), 0);
    cr_assert(run_until(c, &r.done, 15000), "no answer from the config worker");
    cr_assert_eq(r.status, 0, "request failed: %s", strerror(-r.status));
    Lodestar__Envelope *env = lodestar__envelope__unpack(NULL, r.len, r.bytes);
    free(r.bytes);
    cr_assert_not_null(env);
    cr_assert_neq(env->body_case, LODESTAR__ENVELOPE__BODY_ERROR, "error reply: %s",
                  env->body_case == LODESTAR__ENVELOPE__BODY_ERROR ? env->error->message : "");
    return env;
}

/* ------------------------------------------------------------ requests */

static cc_arena_t A; /* request messages of the current test */

static Google__Protobuf__StringValue *S(const char *s) { return cc_sv_dup(&A, s); }

static void *msg(size_t size, const ProtobufCMessageDescriptor *d)
{
    void *p = cc_arena_alloc(&A, size);
    cr_assert_not_null(p);
    protobuf_c_message_init(d, p);
    return p;
}
#define NEW(T, desc) ((T *)msg(sizeof(T), &(desc)))

typedef Lodestar__ConfigWriteRequest__Op op_t;
#define OP(x) LODESTAR__CONFIG_WRITE_REQUEST__OP__##x
#define KIND(x) LODESTAR__CONFIG_QUERY_REQUEST__KIND__##x

/* The answer to a one-item write. */
typedef struct wr {
    uint32_t code;
    char info[1024];
    uint64_t version;
    char release[256];
    char md5[64];
    char content[512];
    uint64_t nid;
} wr_t;

static wr_t do_write(cli_t *c, Lodestar__ConfigWriteRequest *w)
{
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_REQUEST;
    env.config_write_request = w;
    w->operator_ = "tester";
    w->origin = "test_config_worker";
    Lodestar__Envelope *reply = cli_call(c, &env);
    cr_assert_eq(reply->body_case, LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_RESPONSE);
    Lodestar__ConfigWriteResponse *resp = reply->config_write_response;
    wr_t r = {0};
    cr_assert_not_null(resp->result);
    cr_assert_eq(resp->result->n_responses, 1);
    V1__ConfigResponse *one = resp->result->responses[0];
    r.code = one->code ? one->code->value : 0;
    snprintf(r.info, sizeof r.info, "%s", one->info && one->info->value ? one->info->value : "");
    cr_assert_eq(resp->result->code->value, r.code, "the batch code is the only item's code");
    V1__ConfigFileRelease *rel = one->configfilerelease;
    if (rel) {
        r.version = rel->version ? rel->version->value : 0;
        snprintf(r.release, sizeof r.release, "%s", rel->name ? rel->name->value : "");
        snprintf(r.md5, sizeof r.md5, "%s", rel->md5 ? rel->md5->value : "");
        snprintf(r.content, sizeof r.content, "%s", rel->content ? rel->content->value : "");
    }
    r.nid = resp->notification_id;
    lodestar__envelope__free_unpacked(reply, NULL);
    return r;
}

static wr_t group_op(cli_t *c, op_t op, const char *name, const char *comment)
{
    Lodestar__ConfigWriteRequest w = LODESTAR__CONFIG_WRITE_REQUEST__INIT;
    V1__ConfigFileGroup *g = NEW(V1__ConfigFileGroup, v1__config_file_group__descriptor);
    g->namespace_ = S("default");
    g->name = S(name);
    if (comment)
        g->comment = S(comment);
    w.op = op;
    w.groups = &g;
    w.n_groups = 1;
    return do_write(c, &w);
}

static wr_t file_op(cli_t *c, op_t op, const char *group, const char *name, const char *content, const char *format)
{
    Lodestar__ConfigWriteRequest w = LODESTAR__CONFIG_WRITE_REQUEST__INIT;
    V1__ConfigFile *f = NEW(V1__ConfigFile, v1__config_file__descriptor);
    f->namespace_ = S("default");
    f->group = S(group);
    f->name = S(name);
    if (content)
        f->content = S(content);
    if (format)
        f->format = S(format);
    w.op = op;
    w.files = &f;
    w.n_files = 1;
    return do_write(c, &w);
}

/* FILE_PUBLISH, RELEASE_ROLLBACK (name or version), RELEASE_DELETE, STOP_BETA;
 * beta_ip publishes a beta for that client IP. */
static wr_t release_op(cli_t *c, op_t op, const char *group, const char *file, const char *release, uint64_t version,
                       const char *beta_ip)
{
    Lodestar__ConfigWriteRequest w = LODESTAR__CONFIG_WRITE_REQUEST__INIT;
    V1__ConfigFileRelease *r = NEW(V1__ConfigFileRelease, v1__config_file_release__descriptor);
    r->namespace_ = S("default");
    r->group = S(group);
    r->file_name = S(file);
    if (release)
        r->name = S(release);
    if (version)
        r->version = cc_u64v(&A, version);
    if (beta_ip) {
        V1__ClientLabel *l = NEW(V1__ClientLabel, v1__client_label__descriptor);
        V1__MatchString *m = NEW(V1__MatchString, v1__match_string__descriptor);
        m->type = V1__MATCH_STRING__MATCH_STRING_TYPE__EXACT;
        m->value = S(beta_ip);
        l->key = cc_arena_strdup(&A, "CLIENT_IP");
        l->value = m;
        r->release_type = S("gray");
        r->beta_labels = cc_arena_alloc(&A, sizeof *r->beta_labels);
        r->beta_labels[0] = l;
        r->n_beta_labels = 1;
    }
    w.op = op;
    w.releases = &r;
    w.n_releases = 1;
    return do_write(c, &w);
}

static wr_t publish(cli_t *c, const char *group, const char *file, const char *release)
{
    return release_op(c, OP(FILE_PUBLISH), group, file, release, 0, NULL);
}

static wr_t publish_info(cli_t *c, op_t op, const char *group, const char *file, const char *content,
                         const char *format, const char *release)
{
    Lodestar__ConfigWriteRequest w = LODESTAR__CONFIG_WRITE_REQUEST__INIT;
    V1__ConfigFilePublishInfo *p = NEW(V1__ConfigFilePublishInfo, v1__config_file_publish_info__descriptor);
    p->namespace_ = S("default");
    p->group = S(group);
    p->file_name = S(file);
    p->content = S(content);
    if (format)
        p->format = S(format);
    if (release)
        p->release_name = S(release);
    w.op = op;
    w.publish_infos = &p;
    w.n_publish_infos = 1;
    return do_write(c, &w);
}

/* A query; filters as "key", "value" pairs ending with NULL. */
static Lodestar__Envelope *query(cli_t *c, Lodestar__ConfigQueryRequest__Kind kind, ...)
{
    Lodestar__ConfigQueryRequest q = LODESTAR__CONFIG_QUERY_REQUEST__INIT;
    Lodestar__ConfigQueryRequest__FiltersEntry *e[8];
    va_list ap;
    va_start(ap, kind);
    for (const char *k; (k = va_arg(ap, const char *)) && q.n_filters < 8;) {
        e[q.n_filters] = NEW(Lodestar__ConfigQueryRequest__FiltersEntry,
                             lodestar__config_query_request__filters_entry__descriptor);
        e[q.n_filters]->key = (char *)k;
        e[q.n_filters]->value = va_arg(ap, char *);
        q.n_filters++;
    }
    va_end(ap);
    q.kind = kind;
    q.filters = e;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_QUERY_REQUEST;
    env.config_query_request = &q;
    Lodestar__Envelope *reply = cli_call(c, &env);
    cr_assert_eq(reply->body_case, LODESTAR__ENVELOPE__BODY_CONFIG_QUERY_RESPONSE);
    cr_assert_not_null(reply->config_query_response->result);
    return reply;
}

static uint32_t qcode(const Lodestar__Envelope *e) { return e->config_query_response->result->code->value; }

/* The file's state in the worker's snapshot, paging 300 bytes at a time
 * (several pages); NULL when the snapshot lacks it. The state is copied into
 * *keep (free with lodestar__config_file_state__free_unpacked). */
static Lodestar__ConfigFileState *snapshot_find(cli_t *c, const char *file, uint64_t *nid)
{
    Lodestar__ConfigFileState *found = NULL;
    char after[512] = "";
    for (int page = 0; page < 10000; page++) {
        Lodestar__ConfigSnapshotRequest sr = LODESTAR__CONFIG_SNAPSHOT_REQUEST__INIT;
        sr.after = after;
        sr.max_bytes = 300;
        Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
        env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_SNAPSHOT_REQUEST;
        env.config_snapshot_request = &sr;
        Lodestar__Envelope *reply = cli_call(c, &env);
        cr_assert_eq(reply->body_case, LODESTAR__ENVELOPE__BODY_CONFIG_SNAPSHOT);
        Lodestar__ConfigSnapshot *s = reply->config_snapshot;
        for (size_t i = 0; i < s->n_files; i++) {
            cr_assert_not(s->files[i]->removed, "a snapshot holds published files only");
            if (strcmp(s->files[i]->file_name, file) == 0 && !found) {
                size_t len = lodestar__config_file_state__get_packed_size(s->files[i]);
                uint8_t *b = malloc(len ? len : 1);
                lodestar__config_file_state__pack(s->files[i], b);
                found = lodestar__config_file_state__unpack(NULL, len, b);
                free(b);
            }
        }
        if (nid)
            *nid = s->notification_id;
        bool complete = s->complete;
        cr_assert(complete || s->n_files > 0, "an incomplete page must hold at least one file");
        snprintf(after, sizeof after, "%s", s->next);
        lodestar__envelope__free_unpacked(reply, NULL);
        if (complete)
            return found;
    }
    cr_assert_fail("the snapshot never completed");
    return NULL;
}

static PGconn *db_open(const lstest_t *t, const char *dsn)
{
    char buf[800];
    if (!dsn) {
        snprintf(buf, sizeof buf, "host=%s/pg port=5432 dbname=lodestar user=lodestar", t->runtime);
        dsn = buf;
    }
    PGconn *db = PQconnectdb(dsn);
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "cannot connect to %s: %s", dsn, PQerrorMessage(db));
    return db;
}

static long long db_count(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    long long n = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

static void teardown(void) { cc_arena_free(&A); }

TestSuite(config_worker, .fini = teardown, .timeout = 240);

/* ------------------------------------------------------------ tests */

Test(config_worker, groups_files_publish_snapshot_history_rollback)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    cli_t c;
    cli_open(&c, &t);

    /* groups */
    wr_t r = group_op(&c, OP(GROUP_CREATE), "app", "first comment");
    cr_assert_eq(r.code, 200000, "%s", r.info);
    r = group_op(&c, OP(GROUP_CREATE), "app", NULL);
    cr_assert_eq(r.code, 400201, "a second create of the group: %s", r.info);
    cr_assert_str_eq(r.info, "config group default/app already exists");
    cr_assert_eq(group_op(&c, OP(GROUP_UPDATE), "app", "second comment").code, 200000);
    cr_assert_eq(group_op(&c, OP(GROUP_UPDATE), "nogroup", "x").code, 400202);
    Lodestar__Envelope *q = query(&c, KIND(GROUPS), "namespace", "default", "name", "ap*", NULL);
    V1__ConfigBatchQueryResponse *b = q->config_query_response->result;
    cr_assert_eq(b->total->value, 1);
    cr_assert_str_eq(b->configfilegroups[0]->comment->value, "second comment");
    cr_assert_eq(b->configfilegroups[0]->filecount->value, 0);
    lodestar__envelope__free_unpacked(q, NULL);

    /* files */
    r = file_op(&c, OP(FILE_CREATE), "app", "conf/app.json", "{\"port\": 8080}", "json");
    cr_assert_eq(r.code, 200000, "%s", r.info);
    cr_assert_eq(file_op(&c, OP(FILE_CREATE), "app", "other.txt", "hello", NULL).code, 200000);
    q = query(&c, KIND(FILES), "namespace", "default", "group", "app", NULL);
    b = q->config_query_response->result;
    cr_assert_eq(b->total->value, 2);
    cr_assert_str_eq(b->configfiles[0]->name->value, "conf/app.json", "sorted by name");
    cr_assert_str_eq(b->configfiles[0]->status->value, "to-be-released");
    cr_assert_null(b->configfiles[0]->content, "lists carry no content");
    lodestar__envelope__free_unpacked(q, NULL);
    q = query(&c, KIND(FILES), "namespace", "default", "name", "*.txt", NULL);
    cr_assert_eq(q->config_query_response->result->total->value, 1, "search by name wildcard");
    lodestar__envelope__free_unpacked(q, NULL);
    q = query(&c, KIND(FILE), "namespace", "default", "group", "app", "name", "conf/app.json", NULL);
    cr_assert_eq(qcode(q), 200000);
    cr_assert_str_eq(q->config_query_response->response->configfile->content->value, "{\"port\": 8080}");
    cr_assert_str_eq(q->config_query_response->response->configfile->format->value, "json");
    lodestar__envelope__free_unpacked(q, NULL);

    /* publish: acknowledged with version and md5, pushed, in the snapshot */
    size_t pushes = c.n_pushes;
    r = publish(&c, "app", "conf/app.json", "v1");
    cr_assert_eq(r.code, 200000, "%s", r.info);
    cr_assert_eq(r.version, 1);
    cr_assert_str_eq(r.release, "v1");
    cr_assert_str_eq(r.content, "{\"port\": 8080}");
    cr_assert_eq(strlen(r.md5), 32);
    uint64_t nid1 = r.nid;
    cr_assert_gt(nid1, 0);
    cr_assert_gt(c.n_pushes, pushes, "the change was pushed before the answer");
    cr_assert(pushed(&c, "+conf/app.json"));
    uint64_t snap_nid = 0;
    Lodestar__ConfigFileState *st = snapshot_find(&c, "conf/app.json", &snap_nid);
    cr_assert_not_null(st, "the published file is in the snapshot");
    cr_assert_eq(snap_nid, nid1);
    cr_assert_eq(st->notification_id, nid1);
    cr_assert_str_eq(st->release->file->content->value, "{\"port\": 8080}");
    cr_assert_eq(st->release->file->version->value, 1);
    cr_assert_str_eq(st->release->file->md5->value, r.md5);
    cr_assert_str_eq(st->release->format, "json");
    cr_assert_str_eq(st->release->release_by, "tester");
    cr_assert_null(st->beta);
    lodestar__config_file_state__free_unpacked(st, NULL);
    cr_assert_null(snapshot_find(&c, "other.txt", NULL), "an unpublished file is not in the snapshot");

    /* a second release, then history and rollback */
    cr_assert_eq(file_op(&c, OP(FILE_UPDATE), "app", "conf/app.json", "{\"port\": 9090}", NULL).code, 200000);
    r = publish(&c, "app", "conf/app.json", NULL);
    cr_assert_eq(r.code, 200000, "%s", r.info);
    cr_assert_eq(r.version, 2);
    cr_assert(strncmp(r.release, "conf/app.json-", 14) == 0, "generated release name %s", r.release);
    cr_assert_gt(r.nid, nid1);
    q = query(&c, KIND(RELEASE_VERSIONS), "namespace", "default", "group", "app", "file_name", "conf/app.json", NULL);
    b = q->config_query_response->result;
    cr_assert_eq(b->total->value, 2);
    cr_assert_eq(b->configfilereleases[0]->version->value, 2, "newest first");
    cr_assert(b->configfilereleases[0]->active->value);
    cr_assert_not(b->configfilereleases[1]->active->value);
    lodestar__envelope__free_unpacked(q, NULL);
    q = query(&c, KIND(RELEASE), "namespace", "default", "group", "app", "file_name", "conf/app.json",
              "release_name", "v1", NULL);
    cr_assert_eq(qcode(q), 200000);
    cr_assert_str_eq(q->config_query_response->response->configfilerelease->content->value, "{\"port\": 8080}",
                     "an inactive release's content comes from PostgreSQL");
    lodestar__envelope__free_unpacked(q, NULL);

    r = release_op(&c, OP(RELEASE_ROLLBACK), "app", "conf/app.json", "v1", 0, NULL);
    cr_assert_eq(r.code, 200000, "%s", r.info);
    cr_assert_eq(r.version, 3, "rollback activates v1 with a new version");
    st = snapshot_find(&c, "conf/app.json", NULL);
    cr_assert_str_eq(st->release->file->content->value, "{\"port\": 8080}");
    cr_assert_str_eq(st->release->file->name->value, "v1");
    cr_assert_eq(st->release->file->version->value, 3);
    lodestar__config_file_state__free_unpacked(st, NULL);
    q = query(&c, KIND(RELEASE_HISTORY), "namespace", "default", "group", "app", "file_name", "conf/app.json", NULL);
    b = q->config_query_response->result;
    cr_assert_eq(b->total->value, 3);
    cr_assert_str_eq(b->configfilereleasehistories[0]->type->value, "rollback", "newest first");
    cr_assert_str_eq(b->configfilereleasehistories[0]->name->value, "v1");
    cr_assert_str_eq(b->configfilereleasehistories[2]->type->value, "normal");
    cr_assert_str_eq(b->configfilereleasehistories[2]->create_by->value, "tester");
    lodestar__envelope__free_unpacked(q, NULL);
    q = query(&c, KIND(RELEASES), "namespace", "default", "group", "app", "only_active", "true", NULL);
    cr_assert_eq(q->config_query_response->result->total->value, 1);
    lodestar__envelope__free_unpacked(q, NULL);

    /* delete: pushed as removed, gone from snapshot and queries */
    cr_assert_eq(group_op(&c, OP(GROUP_DELETE), "app", NULL).code, 400201, "the group still holds files");
    r = file_op(&c, OP(FILE_DELETE), "app", "conf/app.json", NULL, NULL);
    cr_assert_eq(r.code, 200000, "%s", r.info);
    cr_assert(pushed(&c, "-conf/app.json"), "the removal was pushed");
    cr_assert_null(snapshot_find(&c, "conf/app.json", NULL));
    q = query(&c, KIND(FILE), "namespace", "default", "group", "app", "name", "conf/app.json", NULL);
    cr_assert_eq(qcode(q), 400202);
    lodestar__envelope__free_unpacked(q, NULL);
    cr_assert_eq(file_op(&c, OP(FILE_DELETE), "app", "other.txt", NULL, NULL).code, 200000);
    cr_assert_eq(group_op(&c, OP(GROUP_DELETE), "app", NULL).code, 200000);

    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 15000), 0);
    lstest_cleanup(&t);
}

Test(config_worker, beta_release_and_stop_beta)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    cli_t c;
    cli_open(&c, &t);
    wr_t r = publish_info(&c, OP(FILE_CREATE_AND_PUBLISH), "svc", "app.yaml", "mode: stable\n", "yaml", "stable");
    cr_assert_eq(r.code, 200000, "%s", r.info);
    cr_assert_eq(r.version, 1);
    cr_assert_eq(file_op(&c, OP(FILE_UPDATE), "svc", "app.yaml", "mode: canary\n", NULL).code, 200000);
    r = release_op(&c, OP(FILE_PUBLISH), "svc", "app.yaml", "canary", 0, "10.0.0.7");
    cr_assert_eq(r.code, 200000, "%s", r.info);
    cr_assert_eq(r.version, 2);

    Lodestar__ConfigFileState *st = snapshot_find(&c, "app.yaml", NULL);
    cr_assert_not_null(st);
    cr_assert_str_eq(st->release->file->content->value, "mode: stable\n", "everyone else keeps the main release");
    cr_assert_not_null(st->beta);
    cr_assert_str_eq(st->beta->file->content->value, "mode: canary\n");
    cr_assert_eq(st->beta_target->n_client_ips, 1);
    cr_assert_str_eq(st->beta_target->client_ips[0], "10.0.0.7");
    lodestar__config_file_state__free_unpacked(st, NULL);

    r = publish(&c, "svc", "app.yaml", "stable2");
    cr_assert_eq(r.code, 409000, "publishing during a beta: %s", r.info);
    r = release_op(&c, OP(FILE_PUBLISH), "svc", "app.yaml", "x", 0, "10.0.0.300");
    cr_assert_eq(r.code, 400904);
    cr_assert_str_eq(r.info, "beta release of config file default/svc/app.yaml: beta client IP \"10.0.0.300\" is not "
                             "an IPv4 or IPv6 address");

    r = release_op(&c, OP(STOP_BETA), "svc", "app.yaml", NULL, 0, NULL);
    cr_assert_eq(r.code, 200000, "%s", r.info);
    st = snapshot_find(&c, "app.yaml", NULL);
    cr_assert_null(st->beta, "the beta is over");
    cr_assert_null(st->beta_target);
    cr_assert_str_eq(st->release->file->content->value, "mode: stable\n");
    cr_assert_eq(st->release->file->version->value, 3, "the main release moved above the beta's version");
    lodestar__config_file_state__free_unpacked(st, NULL);
    r = publish(&c, "svc", "app.yaml", "stable2");
    cr_assert_eq(r.code, 200000, "%s", r.info);
    cr_assert_eq(r.version, 4);

    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 15000), 0);
    lstest_cleanup(&t);
}

Test(config_worker, bad_input_is_refused_and_nothing_is_written)
{
    lstest_t t = {0};
    lstest_start(&t, "workers:\n  config:\n    max_content_bytes: 1000\n", 60000);
    cli_t c;
    cli_open(&c, &t);
    PGconn *db = db_open(&t, NULL);

    /* invalid JSON in create-and-publish: nothing at all is written */
    wr_t r = publish_info(&c, OP(FILE_CREATE_AND_PUBLISH), "app", "bad.json", "{\n  \"a\": 1,\n  \"b\": ]\n}", "json",
                          NULL);
    cr_assert_eq(r.code, 400804);
    cr_assert_str_eq(r.info, "content of config file default/app/bad.json is not valid json: line 3, column 8: "
                             "unexpected token near ']'");
    cr_assert_eq(db_count(db, "SELECT count(*) FROM lodestar_config_file WHERE name = 'bad.json'"), 0);
    cr_assert_eq(db_count(db, "SELECT count(*) FROM lodestar_config_group"), 0, "not even the group");
    cr_assert_null(snapshot_find(&c, "bad.json", NULL));

    /* a draft that is not valid YAML cannot be published */
    cr_assert_eq(file_op(&c, OP(FILE_CREATE), "app", "app.yaml", "a: 1\n  b: 2\n", "yaml").code, 200000,
                 "drafts are not checked");
    r = publish(&c, "app", "app.yaml", NULL);
    cr_assert_eq(r.code, 400804);
    cr_assert_str_eq(r.info, "content of config file default/app/app.yaml is not valid yaml: line 2, column 4: mapping "
                             "values are not allowed in this context");
    r = file_op(&c, OP(FILE_CREATE), "app", "x.props", "k=\\u12", "properties");
    cr_assert_eq(r.code, 200000);
    r = publish(&c, "app", "x.props", NULL);
    cr_assert_eq(r.code, 400804);
    cr_assert(strstr(r.info, "line 1, column 3: malformed \\uxxxx encoding"), "%s", r.info);
    r = file_op(&c, OP(FILE_CREATE), "app", "x.xml", "<a><b></a>", "xml");
    r = publish(&c, "app", "x.xml", NULL);
    cr_assert_eq(r.code, 400804);
    cr_assert(strstr(r.info, "line 1, column 11: Opening and ending tag mismatch: b line 1 and a"), "%s", r.info);
    cr_assert_eq(db_count(db, "SELECT count(*) FROM lodestar_config_release"), 0);
    cr_assert_eq(db_count(db, "SELECT count(*) FROM lodestar_config_release_history"), 0);

    /* over-long content (max_content_bytes: 1000) */
    char big[1200];
    memset(big, 'x', 1001);
    big[1001] = '\0';
    r = file_op(&c, OP(FILE_CREATE), "app", "big.txt", big, NULL);
    cr_assert_eq(r.code, 400803);
    cr_assert_str_eq(r.info, "content of config file default/app/big.txt is 1001 bytes long; at most 1000 are allowed");
    big[1000] = '\0';
    cr_assert_eq(file_op(&c, OP(FILE_CREATE), "app", "big.txt", big, NULL).code, 200000, "1000 bytes fit");

    /* names and formats */
    r = file_op(&c, OP(FILE_CREATE), "app", "a b.txt", "", NULL);
    cr_assert_eq(r.code, 400802);
    r = file_op(&c, OP(FILE_CREATE), "my group", "a.txt", "", NULL);
    cr_assert_eq(r.code, 400801);
    r = file_op(&c, OP(FILE_CREATE), "app", "a.toml", "", "toml");
    cr_assert_eq(r.code, 400804);
    cr_assert_str_eq(r.info, "format \"toml\" is not supported (text, json, yaml, xml, properties, html)");

    /* unknown files */
    r = publish(&c, "app", "nope.json", NULL);
    cr_assert_eq(r.code, 400202);
    cr_assert_str_eq(r.info, "config file default/app/nope.json does not exist");
    r = release_op(&c, OP(RELEASE_ROLLBACK), "app", "nope.json", "r1", 0, NULL);
    cr_assert_eq(r.code, 400202);
    Lodestar__Envelope *q =
        query(&c, KIND(RELEASE), "namespace", "default", "group", "app", "file_name", "app.yaml", NULL);
    cr_assert_eq(qcode(q), 400807, "a file without release: NotFoundResourceConfigFile");
    lodestar__envelope__free_unpacked(q, NULL);
    q = query(&c, KIND(FILE), "namespace", "default", "group", "app", "name", "nope.json", NULL);
    cr_assert_eq(qcode(q), 400202);
    lodestar__envelope__free_unpacked(q, NULL);

    /* a batch with one invalid item applies nothing */
    Lodestar__ConfigWriteRequest w = LODESTAR__CONFIG_WRITE_REQUEST__INIT;
    V1__ConfigFile *files[2];
    for (int i = 0; i < 2; i++) {
        files[i] = NEW(V1__ConfigFile, v1__config_file__descriptor);
        files[i]->namespace_ = S("default");
        files[i]->group = S("app");
        files[i]->name = S(i ? "bad name" : "good.txt");
        files[i]->content = S("x");
    }
    w.op = OP(FILE_CREATE);
    w.files = files;
    w.n_files = 2;
    w.operator_ = "tester";
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_REQUEST;
    env.config_write_request = &w;
    Lodestar__Envelope *reply = cli_call(&c, &env);
    V1__ConfigBatchWriteResponse *br = reply->config_write_response->result;
    cr_assert_eq(br->code->value, 400802, "the batch reports the invalid item's code");
    cr_assert_eq(br->responses[0]->code->value, 400000);
    cr_assert_eq(br->responses[1]->code->value, 400802);
    lodestar__envelope__free_unpacked(reply, NULL);
    cr_assert_eq(db_count(db, "SELECT count(*) FROM lodestar_config_file WHERE name = 'good.txt'"), 0);

    /* a statement that fails in PostgreSQL itself: 500001, nothing half-written */
    PGresult *pr = PQexec(db, "CREATE FUNCTION test_boom() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$ BEGIN RAISE EXCEPTION 'history is read-only in this test'; END $$;"
                              "CREATE TRIGGER test_boom BEFORE INSERT ON lodestar_config_release_history "
                              "FOR EACH ROW EXECUTE FUNCTION test_boom()");
    cr_assert_eq(PQresultStatus(pr), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(pr));
    PQclear(pr);
    r = publish_info(&c, OP(FILE_CREATE_AND_PUBLISH), "app", "half.json", "{}", "json", NULL);
    cr_assert_eq(r.code, 500001);
    cr_assert(strstr(r.info, "store: history is read-only in this test"), "%s", r.info);
    cr_assert_eq(db_count(db, "SELECT count(*) FROM lodestar_config_file WHERE name = 'half.json'"), 0,
                 "the file of a failed create-and-publish is not written either");
    cr_assert_eq(db_count(db, "SELECT count(*) FROM lodestar_config_release"), 0);
    pr = PQexec(db, "DROP TRIGGER test_boom ON lodestar_config_release_history");
    PQclear(pr);
    r = publish_info(&c, OP(FILE_CREATE_AND_PUBLISH), "app", "half.json", "{}", "json", NULL);
    cr_assert_eq(r.code, 200000, "the worker serves on after a store error: %s", r.info);
    cr_assert_eq(r.version, 1);

    PQfinish(db);
    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 15000), 0);
    lstest_cleanup(&t);
}

Test(config_worker, durable_across_a_full_restart)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    cli_t c;
    cli_open(&c, &t);
    wr_t r = publish_info(&c, OP(FILE_UPSERT_AND_PUBLISH), "app", "keep.properties", "a=1\n", "properties", "r1");
    cr_assert_eq(r.code, 200000, "%s", r.info);
    r = publish_info(&c, OP(FILE_UPSERT_AND_PUBLISH), "app", "keep.properties", "a=2\n", NULL, "r2");
    cr_assert_eq(r.code, 200000, "%s", r.info);
    cr_assert_eq(r.version, 2);
    uint64_t nid = r.nid;
    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 15000), 0);

    lstest_start(&t, NULL, 60000);
    cli_open(&c, &t);
    uint64_t snap_nid = 0;
    Lodestar__ConfigFileState *st = snapshot_find(&c, "keep.properties", &snap_nid);
    cr_assert_not_null(st, "the release survived the restart");
    cr_assert_str_eq(st->release->file->content->value, "a=2\n");
    cr_assert_eq(st->release->file->version->value, 2);
    cr_assert_str_eq(st->release->file->name->value, "r2");
    cr_assert_str_eq(st->release->format, "properties");
    cr_assert_eq(snap_nid, nid, "the notification id is the stored one");
    lodestar__config_file_state__free_unpacked(st, NULL);
    r = publish(&c, "app", "keep.properties", NULL);
    cr_assert_eq(r.version, 3, "versions continue after the restart");
    cr_assert_gt(r.nid, nid);
    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 15000), 0);
    lstest_cleanup(&t);
}

Test(config_worker, two_nodes_on_one_postgresql_converge_within_a_second)
{
    pgtest_t pg = {0};
    char err[1024];
    cr_assert_eq(pgtest_start(&pg, err, sizeof err), 0, "pgtest_start: %s", err);
    lstest_t a = {0}, b = {0};
    snprintf(a.dsn, sizeof a.dsn, "%s", pg.dsn);
    snprintf(b.dsn, sizeof b.dsn, "%s", pg.dsn);
    lstest_start(&a, NULL, 60000);
    lstest_start(&b, NULL, 60000);
    cli_t ca, cb;
    cli_open(&ca, &a);
    cli_open(&cb, &b);

    wr_t r = publish_info(&ca, OP(FILE_CREATE_AND_PUBLISH), "shared", "s.json", "{\"node\":\"a\"}", "json", NULL);
    cr_assert_eq(r.code, 200000, "%s", r.info);
    long long t0 = lstest_now_ms();
    /* node b pushes the change to its subscribers and serves it in its snapshot */
    long long end = t0 + 1000;
    while (!pushed(&cb, "+s.json") && lstest_now_ms() < end)
        run_for(&cb, 5);
    long long took = lstest_now_ms() - t0;
    cr_assert(pushed(&cb, "+s.json"), "node b pushed no change within 1 s");
    Lodestar__ConfigFileState *st = snapshot_find(&cb, "s.json", NULL);
    cr_assert_not_null(st);
    cr_assert_str_eq(st->release->file->content->value, "{\"node\":\"a\"}");
    cr_assert_eq(st->notification_id, r.nid, "both nodes agree on the notification id");
    lodestar__config_file_state__free_unpacked(st, NULL);
    cr_log_info("node b saw node a's publish after %lld ms", took);

    /* and back: node b publishes, node a converges; versions are shared */
    cr_assert_eq(file_op(&cb, OP(FILE_UPDATE), "shared", "s.json", "{\"node\":\"b\"}", NULL).code, 200000);
    r = publish(&cb, "shared", "s.json", NULL);
    cr_assert_eq(r.code, 200000, "node b publishes a file it learnt from node a: %s", r.info);
    cr_assert_eq(r.version, 2);
    t0 = lstest_now_ms();
    end = t0 + 1000;
    bool ok = false;
    while (!ok && lstest_now_ms() < end) {
        run_for(&ca, 20);
        st = snapshot_find(&ca, "s.json", NULL);
        ok = st && st->release && st->release->file->version->value == 2;
        if (st)
            lodestar__config_file_state__free_unpacked(st, NULL);
    }
    cr_assert(ok, "node a did not converge within 1 s");
    /* a delete on one node is a removal on the other */
    cr_assert_eq(file_op(&ca, OP(FILE_DELETE), "shared", "s.json", NULL, NULL).code, 200000);
    end = lstest_now_ms() + 1000;
    while (!pushed(&cb, "-s.json") && lstest_now_ms() < end)
        run_for(&cb, 5);
    cr_assert(pushed(&cb, "-s.json"), "node b pushed no removal within 1 s");

    cli_close(&ca);
    cli_close(&cb);
    cr_assert_eq(lstest_stop(&a, 15000), 0);
    cr_assert_eq(lstest_stop(&b, 15000), 0);
    lstest_cleanup(&a);
    lstest_cleanup(&b);
    pgtest_stop(&pg);
}

/* ---- kill -9 while publishes are in flight ---- */

typedef struct inflight {
    bool used;
    char name[32];
    callres_t res;
} inflight_t;

Test(config_worker, kill_9_while_publishing_loses_no_acknowledged_publish)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    cli_t c;
    cli_open(&c, &t);
    cr_assert_eq(publish_info(&c, OP(FILE_CREATE_AND_PUBLISH), "k", "k.json", "{\"i\":0}", "json", "r0").code,
                 200000);

    enum { SLOTS = 8, TARGET = 120, KILL_AT = 40 };
    inflight_t slots[SLOTS] = {0};
    char acked[TARGET + SLOTS][32];
    int n_acked = 0, sent = 0, failed = 0;
    bool killed = false;
    pid_t old = lstest_pid(&t, "config");
    cr_assert_gt(old, 0);
    long long end = lstest_now_ms() + 60000;
    Lodestar__ConfigWriteRequest w = LODESTAR__CONFIG_WRITE_REQUEST__INIT;
    V1__ConfigFilePublishInfo *p = NEW(V1__ConfigFilePublishInfo, v1__config_file_publish_info__descriptor);
    p->namespace_ = S("default");
    p->group = S("k");
    p->file_name = S("k.json");
    w.op = OP(FILE_UPSERT_AND_PUBLISH);
    w.publish_infos = &p;
    w.n_publish_infos = 1;
    w.operator_ = "tester";
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_REQUEST;
    env.config_write_request = &w;
    while (n_acked < TARGET && lstest_now_ms() < end) {
        for (int s = 0; s < SLOTS; s++) {
            inflight_t *f = &slots[s];
            if (f->used && f->res.done) {
                if (f->res.status == 0) {
                    Lodestar__Envelope *e = lodestar__envelope__unpack(NULL, f->res.len, f->res.bytes);
                    if (e && e->body_case == LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_RESPONSE &&
                        e->config_write_response->result->code->value == 200000)
                        snprintf(acked[n_acked++], sizeof acked[0], "%s", f->name);
                    else
                        failed++;
                    if (e)
                        lodestar__envelope__free_unpacked(e, NULL);
                } else {
                    failed++;
                }
                free(f->res.bytes);
                f->used = false;
            }
            if (!f->used && ipc_client_connected(c.cl) && n_acked < TARGET) {
                char content[64];
                snprintf(f->name, sizeof f->name, "p%d", ++sent);
                snprintf(content, sizeof content, "{\"i\":%d}", sent);
                p->release_name = S(f->name);
                p->content = S(content);
                memset(&f->res, 0, sizeof f->res);
                if (ipc_client_request(c.cl, &env, 10000, on_reply, &f->res) == 0)
                    f->used = true;
            }
        }
        if (!killed && n_acked >= KILL_AT) {
            cr_assert_eq(kill(old, SIGKILL), 0);
            killed = true;
        }
        run_for(&c, 2);
    }
    /* let the last requests finish */
    for (int s = 0; s < SLOTS; s++) {
        inflight_t *f = &slots[s];
        if (f->used) {
            run_until(&c, &f->res.done, 15000);
            if (f->res.status == 0) {
                Lodestar__Envelope *e = lodestar__envelope__unpack(NULL, f->res.len, f->res.bytes);
                if (e && e->body_case == LODESTAR__ENVELOPE__BODY_CONFIG_WRITE_RESPONSE &&
                    e->config_write_response->result->code->value == 200000)
                    snprintf(acked[n_acked++], sizeof acked[0], "%s", f->name);
                if (e)
                    lodestar__envelope__free_unpacked(e, NULL);
            }
            free(f->res.bytes);
        }
    }
    cr_assert(killed, "the worker was never killed (only %d acknowledged)", n_acked);
    cr_assert_geq(n_acked, TARGET, "only %d publishes acknowledged within the time limit", n_acked);
    cr_assert_neq(lstest_wait_restarted(&t, "config", old, 20000), 0, "the config worker did not come back");
    cr_log_info("%d publishes acknowledged, %d failed around the kill", n_acked, failed);

    PGconn *db = db_open(&t, NULL);
    for (int i = 0; i < n_acked; i++) {
        char sql[4400];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM lodestar_config_release WHERE file_name = 'k.json' AND name = '%s'", acked[i]);
        cr_assert_eq(db_count(db, sql), 1, "acknowledged publish %s is not in PostgreSQL", acked[i]);
    }
    PQfinish(db);
    /* the restarted worker serves the latest release */
    Lodestar__ConfigFileState *st = snapshot_find(&c, "k.json", NULL);
    cr_assert_not_null(st);
    cr_assert_geq(st->release->file->version->value, (uint64_t)n_acked, "every acknowledged publish took a version");
    lodestar__config_file_state__free_unpacked(st, NULL);
    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 15000), 0);
    lstest_cleanup(&t);
}

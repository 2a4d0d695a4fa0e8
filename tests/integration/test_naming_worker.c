/*
 * test_naming_worker.c: the naming worker for real, through the real
 * supervisor and PostgreSQL, spoken to over its IPC socket
 * (<runtime_dir>/naming.sock) the way the gateways do: writes, queries,
 * snapshots and NamingChange pushes; a batch with a bad item; batches in
 * flight together (dependent requests wait, a failing batch fails alone);
 * durability across a full restart; two Lodestar nodes on one PostgreSQL
 * converging;
 * kill -9 of the worker in the middle of a registration stream losing no
 * acknowledged registration.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"
#include "lstest.h"
#include "naming_id.h"
#include "pgtest.h"

/* ------------------------------------------------------------ IPC client */

typedef struct cli {
    struct event_base *base;
    ipc_client_t *cl;
    bool connected;
    Lodestar__NamingChange *pushes[4096]; /* copies, in arrival order */
    long long push_ms[4096];
    size_t n_pushes;
} cli_t;

static Lodestar__Envelope *copy_env(const Lodestar__Envelope *e)
{
    size_t len = lodestar__envelope__get_packed_size(e);
    uint8_t *buf = malloc(len ? len : 1);
    lodestar__envelope__pack(e, buf);
    Lodestar__Envelope *c = lodestar__envelope__unpack(NULL, len, buf);
    free(buf);
    cr_assert_not_null(c);
    return c;
}

static void on_push(ipc_client_t *cl, Lodestar__Envelope *push, void *arg)
{
    cli_t *c = arg;
    if (push->body_case != LODESTAR__ENVELOPE__BODY_NAMING_CHANGE || c->n_pushes == 4096)
        return;
    size_t len = lodestar__naming_change__get_packed_size(push->naming_change);
    uint8_t *buf = malloc(len ? len : 1);
    lodestar__naming_change__pack(push->naming_change, buf);
    c->pushes[c->n_pushes] = lodestar__naming_change__unpack(NULL, len, buf);
    c->push_ms[c->n_pushes++] = lstest_now_ms();
    free(buf);
}

static void on_state(ipc_client_t *cl, bool connected, void *arg) { ((cli_t *)arg)->connected = connected; }

static void run_for(cli_t *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(c->base, &tv);
    event_base_dispatch(c->base);
}

static void cli_open(cli_t *c, const lstest_t *t)
{
    memset(c, 0, sizeof *c);
    c->base = event_base_new();
    char path[600];
    snprintf(path, sizeof path, "%s/naming.sock", t->runtime);
    c->cl = ipc_client_new(c->base, path, "test client", 0, on_push, on_state, c);
    cr_assert_not_null(c->cl);
    ipc_client_subscribe(c->cl, "naming");
    long long end = lstest_now_ms() + 5000;
    while (!c->connected && lstest_now_ms() < end)
        run_for(c, 10);
    cr_assert(c->connected, "cannot connect to %s", path);
}

static void cli_close(cli_t *c)
{
    ipc_client_free(c->cl);
    event_base_free(c->base);
    for (size_t i = 0; i < c->n_pushes; i++)
        lodestar__naming_change__free_unpacked(c->pushes[i], NULL);
}

typedef struct call {
    bool done;
    int status;
    Lodestar__Envelope *reply;
} call_t;

static void on_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    call_t *w = arg;
    w->done = true;
    w->status = status;
    if (reply)
        w->reply = copy_env(reply);
}

static Lodestar__Envelope *cli_call(cli_t *c, const Lodestar__Envelope *req)
{
    call_t w = {0};
    cr_assert_eq(ipc_client_request(c->cl, req, 10000, on_reply, &w), 0);
    while (!w.done)
        run_for(c, 5);
    cr_assert_eq(w.status, 0, "request failed: %s", strerror(-w.status));
    return w.reply;
}

/* ------------------------------------------------------------- messages */

static Google__Protobuf__StringValue *S(const char *v)
{
    Google__Protobuf__StringValue *w = calloc(1, sizeof *w);
    google__protobuf__string_value__init(w);
    w->value = strdup(v);
    return w;
}

static Google__Protobuf__UInt32Value *U(uint32_t v)
{
    Google__Protobuf__UInt32Value *w = calloc(1, sizeof *w);
    google__protobuf__uint32_value__init(w);
    w->value = v;
    return w;
}

/* A NamingInstance for ns/svc host:port (freed with the request). */
static Lodestar__NamingInstance *ni(const char *ns, const char *svc, const char *host, uint32_t port)
{
    Lodestar__NamingInstance *n = calloc(1, sizeof *n);
    lodestar__naming_instance__init(n);
    V1__Instance *in = calloc(1, sizeof *in);
    v1__instance__init(in);
    if (ns)
        in->namespace_ = S(ns);
    if (svc)
        in->service = S(svc);
    if (host)
        in->host = S(host);
    in->port = U(port);
    n->instance = in;
    return n;
}

static Lodestar__NamingWriteRequest *wreq(int op, size_t n, Lodestar__NamingInstance **items)
{
    Lodestar__NamingWriteRequest *r = calloc(1, sizeof *r);
    lodestar__naming_write_request__init(r);
    r->op = op;
    r->n_instances = n;
    r->instances = calloc(n ? n : 1, sizeof *r->instances);
    if (n)
        memcpy(r->instances, items, n * sizeof *items);
    r->origin = strdup("test");
    return r;
}

/* Send a write; returns the response envelope (caller frees). The request
 * is freed here (protobuf-c's free_unpacked frees malloc'd trees). */
static Lodestar__Envelope *write_req(cli_t *c, Lodestar__NamingWriteRequest *r)
{
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_WRITE_REQUEST;
    env.naming_write_request = r;
    Lodestar__Envelope *rep = cli_call(c, &env);
    lodestar__naming_write_request__free_unpacked(r, NULL);
    cr_assert_eq(rep->body_case, LODESTAR__ENVELOPE__BODY_NAMING_WRITE_RESPONSE, "got %s",
                 ipc_type_name(rep->body_case));
    return rep;
}

#define OP(x) LODESTAR__NAMING_WRITE_REQUEST__OP__##x

/* Register one instance; returns the response's code. */
static uint32_t reg1(cli_t *c, const char *svc, const char *host, uint32_t port)
{
    Lodestar__NamingInstance *item = ni("default", svc, host, port);
    Lodestar__Envelope *rep = write_req(c, wreq(OP(INSTANCE_REGISTER), 1, &item));
    uint32_t code = rep->naming_write_response->result->code->value;
    lodestar__envelope__free_unpacked(rep, NULL);
    return code;
}

static Lodestar__NamingSnapshot *snapshot(cli_t *c)
{
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    Lodestar__NamingSnapshotRequest sr = LODESTAR__NAMING_SNAPSHOT_REQUEST__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_SNAPSHOT_REQUEST;
    env.naming_snapshot_request = &sr;
    Lodestar__Envelope *rep = cli_call(c, &env);
    cr_assert_eq(rep->body_case, LODESTAR__ENVELOPE__BODY_NAMING_SNAPSHOT, "got %s", ipc_type_name(rep->body_case));
    size_t len = lodestar__naming_snapshot__get_packed_size(rep->naming_snapshot);
    uint8_t *buf = malloc(len ? len : 1);
    lodestar__naming_snapshot__pack(rep->naming_snapshot, buf);
    lodestar__envelope__free_unpacked(rep, NULL);
    Lodestar__NamingSnapshot *s = lodestar__naming_snapshot__unpack(NULL, len, buf);
    free(buf);
    return s;
}

static const Lodestar__NamingServiceState *snap_service(const Lodestar__NamingSnapshot *s, const char *name)
{
    for (size_t i = 0; i < s->n_services; i++)
        if (strcmp(s->services[i]->service->name->value, name) == 0)
            return s->services[i];
    return NULL;
}

/* The newest pushed state of a service (NULL if none was pushed). */
static const Lodestar__NamingServiceState *last_push(const cli_t *c, const char *name, size_t *index)
{
    for (size_t i = c->n_pushes; i-- > 0;)
        for (size_t j = 0; j < c->pushes[i]->n_services; j++)
            if (strcmp(c->pushes[i]->services[j]->service->name->value, name) == 0) {
                if (index)
                    *index = i;
                return c->pushes[i]->services[j];
            }
    return NULL;
}

/* Wait until the newest pushed state of name has n instances. */
static const Lodestar__NamingServiceState *await_push(cli_t *c, const char *name, size_t n, int ms)
{
    long long end = lstest_now_ms() + ms;
    for (;;) {
        const Lodestar__NamingServiceState *st = last_push(c, name, NULL);
        /* pushes may be deltas: the service message always carries the count */
        size_t have = st && st->service && st->service->total_instance_count
                          ? st->service->total_instance_count->value
                          : st && !st->delta ? st->n_instances : (size_t)-1;
        if (st && !st->deleted && have == n)
            return st;
        if (lstest_now_ms() >= end)
            return NULL;
        run_for(c, 5);
    }
}

static Lodestar__NamingQueryResponse *query(cli_t *c, int kind, const char *const *kv)
{
    Lodestar__NamingQueryRequest q = LODESTAR__NAMING_QUERY_REQUEST__INIT;
    q.kind = kind;
    Lodestar__NamingQueryRequest__FiltersEntry e[8], *ep[8];
    size_t n = 0;
    while (kv && kv[2 * n]) {
        lodestar__naming_query_request__filters_entry__init(&e[n]);
        e[n].key = (char *)kv[2 * n];
        e[n].value = (char *)kv[2 * n + 1];
        ep[n] = &e[n];
        n++;
    }
    q.n_filters = n;
    q.filters = ep;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_QUERY_REQUEST;
    env.naming_query_request = &q;
    Lodestar__Envelope *rep = cli_call(c, &env);
    cr_assert_eq(rep->body_case, LODESTAR__ENVELOPE__BODY_NAMING_QUERY_RESPONSE);
    size_t len = lodestar__naming_query_response__get_packed_size(rep->naming_query_response);
    uint8_t *buf = malloc(len ? len : 1);
    lodestar__naming_query_response__pack(rep->naming_query_response, buf);
    lodestar__envelope__free_unpacked(rep, NULL);
    Lodestar__NamingQueryResponse *r = lodestar__naming_query_response__unpack(NULL, len, buf);
    free(buf);
    return r;
}

/* One integer from SQL on the embedded PostgreSQL of t. */
static long long sql_count(const char *dsn, const char *sql)
{
    PGconn *pg = PQconnectdb(dsn);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "connect %s: %s", dsn, PQerrorMessage(pg));
    PGresult *r = PQexec(pg, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pg));
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return v;
}

static void embedded_dsn(const lstest_t *t, char *out, size_t len)
{
    snprintf(out, len, "host=%s/pg port=5432 dbname=lodestar user=lodestar", t->runtime);
}

/* ----------------------------------------------------------------- tests */

Test(naming_worker, register_update_deregister_query_snapshot_and_pushes)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    cli_t c;
    cli_open(&c, &t);

    Lodestar__NamingSnapshot *s0 = snapshot(&c);
    cr_assert_eq(s0->n_namespaces, 1u);
    cr_assert_str_eq(s0->namespaces[0]->name->value, "default");
    cr_assert_eq(s0->n_services, 0u);
    uint64_t seq0 = s0->seq;
    lodestar__naming_snapshot__free_unpacked(s0, NULL);

    Lodestar__NamingInstance *items[2] = {ni("default", "echo", "10.0.0.1", 8080),
                                          ni("default", "echo", "10.0.0.2", 8080)};
    Lodestar__Envelope *rep = write_req(&c, wreq(OP(INSTANCE_REGISTER), 2, items));
    V1__BatchWriteResponse *b = rep->naming_write_response->result;
    cr_assert_eq(b->code->value, 200000u, "register: %s", b->info->value);
    cr_assert_eq(b->n_responses, 2u);
    char id1[NAMING_HEX_LEN + 1], id2[NAMING_HEX_LEN + 1];
    naming_instance_id("default", "echo", NULL, "10.0.0.1", 8080, id1);
    naming_instance_id("default", "echo", NULL, "10.0.0.2", 8080, id2);
    cr_assert_str_eq(b->responses[0]->instance->id->value, id1, "the Polaris id comes back");
    cr_assert_eq(strlen(b->responses[0]->instance->revision->value), (size_t)NAMING_HEX_LEN);
    lodestar__envelope__free_unpacked(rep, NULL);

    /* acknowledged means committed */
    char dsn[700];
    embedded_dsn(&t, dsn, sizeof dsn);
    cr_assert_eq(sql_count(dsn, "SELECT count(*) FROM lodestar_instance WHERE NOT deleted"), 2);

    const Lodestar__NamingServiceState *st = await_push(&c, "echo", 2, 3000);
    cr_assert_not_null(st, "no NamingChange with both instances");
    cr_assert_gt(st->seq, seq0, "pushes number after the snapshot");
    char rev1[NAMING_HEX_LEN + 1];
    snprintf(rev1, sizeof rev1, "%s", st->service->revision->value);
    cr_assert_eq(st->service->total_instance_count->value, 2u);
    cr_assert_eq(st->service->healthy_instance_count->value, 2u);
    bool ns_list = false;
    for (size_t i = 0; i < c.n_pushes; i++)
        ns_list |= c.pushes[i]->n_namespaces > 0;
    cr_assert_not(ns_list, "the namespace list is pushed only when namespaces change");

    Lodestar__NamingSnapshot *s1 = snapshot(&c);
    const Lodestar__NamingServiceState *ss = snap_service(s1, "echo");
    cr_assert_not_null(ss);
    cr_assert_eq(ss->n_instances, 2u);
    cr_assert_str_eq(ss->service->revision->value, rev1, "snapshot and push agree");
    cr_assert_str_eq(ss->instances[0]->instance->id->value, strcmp(id1, id2) < 0 ? id1 : id2, "instances come by id");
    lodestar__naming_snapshot__free_unpacked(s1, NULL);

    const char *f[] = {"service", "echo", "namespace", "default", NULL};
    Lodestar__NamingQueryResponse *q = query(&c, LODESTAR__NAMING_QUERY_REQUEST__KIND__INSTANCES, f);
    cr_assert_eq(q->result->code->value, 200000u);
    cr_assert_eq(q->result->amount->value, 2u);
    lodestar__naming_query_response__free_unpacked(q, NULL);

    /* update: the revision moves */
    Lodestar__NamingInstance *up = ni("default", "echo", "10.0.0.1", 8080);
    up->instance->weight = U(5);
    rep = write_req(&c, wreq(OP(INSTANCE_UPDATE), 1, &up));
    cr_assert_eq(rep->naming_write_response->result->code->value, 200000u);
    lodestar__envelope__free_unpacked(rep, NULL);
    long long end = lstest_now_ms() + 3000;
    while ((st = last_push(&c, "echo", NULL)) && strcmp(st->service->revision->value, rev1) == 0 &&
           lstest_now_ms() < end)
        run_for(&c, 5);
    cr_assert_str_neq(st->service->revision->value, rev1, "an instance update changes the service revision");

    /* deregister one, and an unknown one (success, as Polaris) */
    Lodestar__NamingInstance *de[2] = {ni("default", "echo", "10.0.0.2", 8080), ni("default", "echo", "10.9.9.9", 1)};
    rep = write_req(&c, wreq(OP(INSTANCE_DEREGISTER), 2, de));
    cr_assert_eq(rep->naming_write_response->result->code->value, 200000u);
    lodestar__envelope__free_unpacked(rep, NULL);
    cr_assert_not_null(await_push(&c, "echo", 1, 3000), "no push after deregistration");
    cr_assert_eq(sql_count(dsn, "SELECT count(*) FROM lodestar_instance WHERE deleted"), 1,
                 "deregistration is a soft delete");

    /* a namespace change pushes the namespace list */
    Lodestar__NamingWriteRequest *nr = wreq(OP(NAMESPACE_CREATE), 0, NULL);
    nr->n_namespaces = 1;
    nr->namespaces = calloc(1, sizeof *nr->namespaces);
    nr->namespaces[0] = calloc(1, sizeof(V1__Namespace));
    v1__namespace__init(nr->namespaces[0]);
    nr->namespaces[0]->name = S("prod");
    rep = write_req(&c, nr);
    cr_assert_eq(rep->naming_write_response->result->code->value, 200000u);
    cr_assert_not_null(rep->naming_write_response->result->responses[0]->namespace_->token);
    lodestar__envelope__free_unpacked(rep, NULL);
    end = lstest_now_ms() + 3000;
    size_t with_ns = 0;
    while (lstest_now_ms() < end && !with_ns) {
        run_for(&c, 5);
        for (size_t i = 0; i < c.n_pushes; i++)
            if (c.pushes[i]->n_namespaces == 2)
                with_ns++;
    }
    cr_assert(with_ns, "no push with the namespace list");

    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

Test(naming_worker, a_batch_with_one_invalid_item_applies_nothing)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    cli_t c;
    cli_open(&c, &t);
    Lodestar__NamingInstance *items[3] = {ni("default", "batch", "10.0.0.1", 1), ni("default", "batch", "", 2),
                                          ni("default", "batch", "10.0.0.3", 70000)};
    Lodestar__Envelope *rep = write_req(&c, wreq(OP(INSTANCE_REGISTER), 3, items));
    V1__BatchWriteResponse *b = rep->naming_write_response->result;
    cr_assert_eq(b->code->value, 400131u, "the first bad item's code: %s", b->info->value);
    cr_assert_eq(b->n_responses, 3u);
    cr_assert_eq(b->responses[0]->code->value, 400000u);
    cr_assert_str_eq(b->responses[0]->info->value, "bad request: batch rejected: item 1 invalid");
    cr_assert_eq(b->responses[1]->code->value, 400131u);
    cr_assert_str_eq(b->responses[1]->info->value, "invalid instance host: instance.host is empty");
    cr_assert_eq(b->responses[2]->code->value, 400132u);
    cr_assert_str_eq(b->responses[2]->info->value, "invalid instance port: instance.port 70000 is above 65535");
    lodestar__envelope__free_unpacked(rep, NULL);

    /* a semantic failure (unknown instance) rejects the whole request too */
    Lodestar__NamingInstance *ok = ni("default", "batch", "10.0.0.1", 1);
    cr_assert_eq(reg1(&c, "batch", "10.0.0.1", 1), 200000u);
    Lodestar__NamingInstance *up[2] = {ok, ni("default", "batch", "10.0.0.99", 1)};
    up[0]->instance->weight = U(1);
    up[1]->instance->weight = U(1);
    rep = write_req(&c, wreq(OP(INSTANCE_UPDATE), 2, up));
    b = rep->naming_write_response->result;
    cr_assert_eq(b->code->value, 400303u);
    cr_assert_eq(b->responses[0]->code->value, 400000u);
    lodestar__envelope__free_unpacked(rep, NULL);

    run_for(&c, 300);
    Lodestar__NamingSnapshot *s = snapshot(&c);
    const Lodestar__NamingServiceState *ss = snap_service(s, "batch");
    cr_assert_not_null(ss);
    cr_assert_eq(ss->n_instances, 1u, "only the separate, valid registration exists");
    cr_assert_eq(ss->instances[0]->instance->weight->value, 100u, "the rejected update left the weight alone");
    lodestar__naming_snapshot__free_unpacked(s, NULL);
    char dsn[700];
    embedded_dsn(&t, dsn, sizeof dsn);
    cr_assert_eq(sql_count(dsn, "SELECT count(*) FROM lodestar_instance"), 1);

    /* a transaction PostgreSQL refuses: every request of the batch gets
     * 500001 and nothing changes in memory */
    PGconn *pg = PQconnectdb(dsn);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "%s", PQerrorMessage(pg));
    PGresult *pr = PQexec(pg, "CREATE FUNCTION lodestar_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
                              "BEGIN IF NEW.host = '10.66.6.6' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
                              "RETURN NEW; END $$; "
                              "CREATE TRIGGER lodestar_test_refuse BEFORE INSERT OR UPDATE ON lodestar_instance "
                              "FOR EACH ROW EXECUTE FUNCTION lodestar_test_refuse()");
    cr_assert_eq(PQresultStatus(pr), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    PQclear(pr);
    call_t w1 = {0}, w2 = {0};
    Lodestar__NamingInstance *i1 = ni("default", "batch", "10.66.6.6", 1), *i2 = ni("default", "batch", "10.0.0.50", 1);
    Lodestar__NamingWriteRequest *r1 = wreq(OP(INSTANCE_REGISTER), 1, &i1), *r2 = wreq(OP(INSTANCE_REGISTER), 1, &i2);
    Lodestar__Envelope e1 = LODESTAR__ENVELOPE__INIT, e2 = LODESTAR__ENVELOPE__INIT;
    e1.body_case = e2.body_case = LODESTAR__ENVELOPE__BODY_NAMING_WRITE_REQUEST;
    e1.naming_write_request = r1;
    e2.naming_write_request = r2;
    cr_assert_eq(ipc_client_request(c.cl, &e1, 10000, on_reply, &w1), 0);
    cr_assert_eq(ipc_client_request(c.cl, &e2, 10000, on_reply, &w2), 0);
    lodestar__naming_write_request__free_unpacked(r1, NULL);
    lodestar__naming_write_request__free_unpacked(r2, NULL);
    while (!(w1.done && w2.done))
        run_for(&c, 5);
    call_t *both[2] = {&w1, &w2};
    for (int i = 0; i < 2; i++) {
        V1__BatchWriteResponse *wb = both[i]->reply->naming_write_response->result;
        cr_assert_eq(wb->code->value, 500001u, "request %d: %s", i, wb->info->value);
        cr_assert(strstr(wb->responses[0]->info->value, "store layer exception: ") &&
                      strstr(wb->responses[0]->info->value, "refused by the test"),
                  "request %d: %s", i, wb->responses[0]->info->value);
        lodestar__envelope__free_unpacked(both[i]->reply, NULL);
    }
    pr = PQexec(pg, "DROP TRIGGER lodestar_test_refuse ON lodestar_instance");
    PQclear(pr);
    PQfinish(pg);
    s = snapshot(&c);
    cr_assert_eq(snap_service(s, "batch")->n_instances, 1u, "a failed transaction changes nothing in memory");
    lodestar__naming_snapshot__free_unpacked(s, NULL);
    cr_assert_eq(reg1(&c, "batch", "10.0.0.50", 1), 200000u, "the same registration succeeds once allowed");

    /* requests the worker does not handle get an Error */
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    Lodestar__StatusRequest sr = LODESTAR__STATUS_REQUEST__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_STATUS_REQUEST;
    env.status_request = &sr;
    rep = cli_call(&c, &env);
    cr_assert_eq(rep->body_case, LODESTAR__ENVELOPE__BODY_ERROR);
    lodestar__envelope__free_unpacked(rep, NULL);

    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

/* Send a write without waiting for its answer. */
static void write_async(cli_t *c, Lodestar__NamingWriteRequest *r, call_t *w)
{
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_WRITE_REQUEST;
    env.naming_write_request = r;
    cr_assert_eq(ipc_client_request(c->cl, &env, 10000, on_reply, w), 0);
    lodestar__naming_write_request__free_unpacked(r, NULL);
}

static uint32_t call_code(const call_t *w)
{
    cr_assert_eq(w->status, 0);
    return w->reply->naming_write_response->result->code->value;
}

/* One operation per batch, so batches go out while earlier ones are still
 * in flight: a request that reads what an earlier batch writes must wait
 * for that batch's outcome, and a batch that fails must not take the
 * independent ones sent after it along. */
Test(naming_worker, pipelined_batches_keep_dependent_requests_in_order)
{
    lstest_t t = {0};
    lstest_start(&t, "workers:\n  naming:\n    batch: {max_batch: 1, wait_ms: 1}\n", 60000);
    cli_t c;
    cli_open(&c, &t);
    cr_assert_eq(reg1(&c, "pipe", "10.7.0.9", 9), 200000u, "the service exists before the storm");
    char dsn[700];
    embedded_dsn(&t, dsn, sizeof dsn);
    PGconn *pg = PQconnectdb(dsn);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "%s", PQerrorMessage(pg));
    PGresult *pr = PQexec(pg, "CREATE FUNCTION lodestar_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
                              "BEGIN IF NEW.host = '10.66.6.6' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
                              "RETURN NEW; END $$; "
                              "CREATE TRIGGER lodestar_test_refuse BEFORE INSERT OR UPDATE ON lodestar_instance "
                              "FOR EACH ROW EXECUTE FUNCTION lodestar_test_refuse()");
    cr_assert_eq(PQresultStatus(pr), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    PQclear(pr);

    enum { ROUNDS = 20, STEPS = 6 };
    call_t w[ROUNDS][STEPS];
    memset(w, 0, sizeof w);
    for (uint32_t k = 0; k < ROUNDS; k++) {
        uint32_t port = 100 + k;
        Lodestar__NamingInstance *it;
        /* 0: register A; 1: update A (reads A, in flight) */
        it = ni("default", "pipe", "10.7.0.1", port);
        write_async(&c, wreq(OP(INSTANCE_REGISTER), 1, &it), &w[k][0]);
        it = ni("default", "pipe", "10.7.0.1", port);
        it->instance->weight = U(7);
        write_async(&c, wreq(OP(INSTANCE_UPDATE), 1, &it), &w[k][1]);
        /* 2: register B, refused by PostgreSQL; 3: update B (reads B) */
        it = ni("default", "pipe", "10.66.6.6", port);
        write_async(&c, wreq(OP(INSTANCE_REGISTER), 1, &it), &w[k][2]);
        it = ni("default", "pipe", "10.66.6.6", port);
        it->instance->weight = U(5);
        write_async(&c, wreq(OP(INSTANCE_UPDATE), 1, &it), &w[k][3]);
        /* 4: register C, independent of everything before it; 5: deregister A */
        it = ni("default", "pipe", "10.7.0.3", port);
        write_async(&c, wreq(OP(INSTANCE_REGISTER), 1, &it), &w[k][4]);
        it = ni("default", "pipe", "10.7.0.1", port);
        write_async(&c, wreq(OP(INSTANCE_DEREGISTER), 1, &it), &w[k][5]);
    }
    long long end = lstest_now_ms() + 20000;
    bool all = false;
    while (!all && lstest_now_ms() < end) {
        run_for(&c, 5);
        all = true;
        for (int k = 0; k < ROUNDS; k++)
            for (int i = 0; i < STEPS; i++)
                all = all && w[k][i].done;
    }
    cr_assert(all, "not every request was answered");
    for (int k = 0; k < ROUNDS; k++) {
        cr_assert_eq(call_code(&w[k][0]), 200000u, "round %d: register A", k);
        cr_assert_eq(call_code(&w[k][1]), 200000u, "round %d: the update saw A registered", k);
        cr_assert_eq(call_code(&w[k][2]), 500001u, "round %d: B refused", k);
        cr_assert_eq(call_code(&w[k][3]), 400303u, "round %d: the update of B saw B's batch fail", k);
        cr_assert_eq(call_code(&w[k][4]), 200000u, "round %d: C committed after B's batch failed", k);
        cr_assert_eq(call_code(&w[k][5]), 200000u, "round %d: deregister A", k);
        for (int i = 0; i < STEPS; i++)
            lodestar__envelope__free_unpacked(w[k][i].reply, NULL);
    }
    pr = PQexec(pg, "DROP TRIGGER lodestar_test_refuse ON lodestar_instance");
    PQclear(pr);
    PQfinish(pg);
    cr_assert_eq(sql_count(dsn, "SELECT count(*) FROM lodestar_instance WHERE host = '10.7.0.1' AND deleted "
                                "AND weight = 7"),
                 ROUNDS, "every A: updated, then deregistered");
    cr_assert_eq(sql_count(dsn, "SELECT count(*) FROM lodestar_instance WHERE host = '10.66.6.6'"), 0);
    cr_assert_eq(sql_count(dsn, "SELECT count(*) FROM lodestar_instance WHERE host = '10.7.0.3' AND NOT deleted"),
                 ROUNDS);
    Lodestar__NamingSnapshot *s = snapshot(&c);
    const Lodestar__NamingServiceState *ss = snap_service(s, "pipe");
    cr_assert_not_null(ss);
    cr_assert_eq(ss->n_instances, 1u + ROUNDS, "the model holds what PostgreSQL holds");
    lodestar__naming_snapshot__free_unpacked(s, NULL);
    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

Test(naming_worker, durable_across_a_full_restart)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    cli_t c;
    cli_open(&c, &t);
    for (uint32_t p = 1; p <= 20; p++)
        cr_assert_eq(reg1(&c, p % 2 ? "odd" : "even", "10.1.0.1", p), 200000u);
    Lodestar__NamingSnapshot *before = snapshot(&c);
    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 10000), 0);

    lstest_spawn(&t, NULL);
    cr_assert(lstest_wait_ready(&t, 60000), "lodestar did not come back");
    cli_open(&c, &t);
    Lodestar__NamingSnapshot *after = snapshot(&c);
    cr_assert_geq(after->seq, before->seq, "change numbers never go back");
    cr_assert_eq(after->n_services, before->n_services);
    for (size_t i = 0; i < before->n_services; i++) {
        const Lodestar__NamingServiceState *a = before->services[i], *b = after->services[i];
        cr_assert_str_eq(a->service->name->value, b->service->name->value);
        cr_assert_str_eq(a->service->revision->value, b->service->revision->value,
                         "%s: same data, same revision after the restart", a->service->name->value);
        cr_assert_eq(a->n_instances, 10u);
        cr_assert_eq(b->n_instances, a->n_instances);
        for (size_t j = 0; j < a->n_instances; j++) {
            cr_assert_str_eq(a->instances[j]->instance->id->value, b->instances[j]->instance->id->value);
            cr_assert_str_eq(a->instances[j]->instance->ctime->value, b->instances[j]->instance->ctime->value);
        }
    }
    lodestar__naming_snapshot__free_unpacked(before, NULL);
    lodestar__naming_snapshot__free_unpacked(after, NULL);
    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

Test(naming_worker, two_nodes_on_one_database_converge_within_a_second)
{
    pgtest_t pg = {0};
    char err[512];
    cr_assert_eq(pgtest_start(&pg, err, sizeof err), 0, "pgtest_start: %s", err);
    lstest_t a = {0}, b = {0};
    snprintf(a.dsn, sizeof a.dsn, "%s", pg.dsn);
    snprintf(b.dsn, sizeof b.dsn, "%s", pg.dsn);
    lstest_start(&a, NULL, 60000);
    lstest_start(&b, NULL, 60000);
    cli_t ca, cb;
    cli_open(&ca, &a);
    cli_open(&cb, &b);

    long long t0 = lstest_now_ms();
    cr_assert_eq(reg1(&ca, "shared", "10.2.0.1", 80), 200000u);
    const Lodestar__NamingServiceState *seen = await_push(&cb, "shared", 1, 5000);
    cr_assert_not_null(seen, "node B never heard of node A's registration");
    long long took = cb.push_ms[cb.n_pushes - 1] - t0;
    cr_assert_lt(took, 1000, "node B saw it after %lld ms", took);
    const Lodestar__NamingServiceState *own = await_push(&ca, "shared", 1, 3000);
    cr_assert_not_null(own);
    cr_assert_str_eq(seen->service->revision->value, own->service->revision->value,
                     "both nodes compute the same revision");
    Lodestar__NamingSnapshot *sb = snapshot(&cb);
    cr_assert_not_null(snap_service(sb, "shared"));
    lodestar__naming_snapshot__free_unpacked(sb, NULL);

    /* and back: B deregisters, A's replica stream drops it */
    Lodestar__NamingInstance *de = ni("default", "shared", "10.2.0.1", 80);
    Lodestar__Envelope *rep = write_req(&cb, wreq(OP(INSTANCE_DEREGISTER), 1, &de));
    cr_assert_eq(rep->naming_write_response->result->code->value, 200000u);
    lodestar__envelope__free_unpacked(rep, NULL);
    t0 = lstest_now_ms();
    cr_assert_not_null(await_push(&ca, "shared", 0, 5000), "node A never saw the deregistration");
    took = ca.push_ms[ca.n_pushes - 1] - t0;
    cr_assert_lt(took, 1000, "node A saw the deregistration after %lld ms", took);

    cli_close(&ca);
    cli_close(&cb);
    cr_assert_eq(lstest_stop(&a, 10000), 0);
    cr_assert_eq(lstest_stop(&b, 10000), 0);
    lstest_cleanup(&a);
    lstest_cleanup(&b);
    pgtest_stop(&pg);
}

/* The batch window (wait_ms) bounds how long a partial batch waits while
 * others are in flight; with nothing in flight a burst goes as soon as it
 * ended: here the window is a minute, longer than the requests' own
 * timeout, and a burst of registrations still commits, in one transaction. */
Test(naming_worker, an_idle_worker_does_not_hold_a_burst_for_the_window)
{
    lstest_t t = {0};
    lstest_start(&t, "workers:\n  naming:\n    batch: {wait_ms: 60000}\n", 60000);
    cli_t c;
    cli_open(&c, &t);
    cr_assert_eq(reg1(&c, "burst", "10.8.0.1", 1), 200000u, "a lone registration");
    enum { N = 20 };
    call_t w[N];
    memset(w, 0, sizeof w);
    for (uint32_t i = 0; i < N; i++) {
        Lodestar__NamingInstance *it = ni("default", "burst", "10.8.0.2", 100 + i);
        write_async(&c, wreq(OP(INSTANCE_REGISTER), 1, &it), &w[i]);
    }
    bool all = false;
    while (!all) {
        run_for(&c, 5);
        all = true;
        for (int i = 0; i < N; i++)
            all = all && w[i].done;
    }
    for (int i = 0; i < N; i++) {
        cr_assert_eq(call_code(&w[i]), 200000u, "registration %d", i);
        lodestar__envelope__free_unpacked(w[i].reply, NULL);
    }
    char dsn[700];
    embedded_dsn(&t, dsn, sizeof dsn);
    cr_assert_eq(sql_count(dsn, "SELECT count(DISTINCT txid) FROM lodestar_instance WHERE host = '10.8.0.2'"), 1,
                 "the burst went as one batch");
    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

Test(naming_worker, configuration_auto_create_queue_and_retention)
{
    lstest_t t = {0};
    lstest_start(&t,
                 "workers:\n"
                 "  naming:\n"
                 "    auto_create_service: false\n"
                 "    deleted_retention_s: 1\n"
                 "    batch: {queue_size: 1, wait_ms: 400}\n",
                 60000);
    cli_t c;
    cli_open(&c, &t);
    cr_assert_eq(reg1(&c, "manual", "10.4.0.1", 1), 400301u, "no auto-created services when switched off");

    Lodestar__NamingWriteRequest *sr = wreq(OP(SERVICE_CREATE), 0, NULL);
    sr->n_services = 1;
    sr->services = calloc(1, sizeof *sr->services);
    sr->services[0] = calloc(1, sizeof(V1__Service));
    v1__service__init(sr->services[0]);
    sr->services[0]->namespace_ = S("default");
    sr->services[0]->name = S("manual");
    Lodestar__Envelope *rep = write_req(&c, sr);
    V1__BatchWriteResponse *b = rep->naming_write_response->result;
    cr_assert_eq(b->code->value, 200000u, "%s", b->info->value);
    cr_assert_eq(strlen(b->responses[0]->service->token->value), 32u, "the creator gets the service token");
    lodestar__envelope__free_unpacked(rep, NULL);

    /* queue_size 1: a second request arriving while the first is queued
     * (both in one read, so before the first can leave) is refused with
     * 429001 */
    call_t w1 = {0}, w2 = {0};
    Lodestar__NamingInstance *i1 = ni("default", "manual", "10.4.0.1", 1), *i2 = ni("default", "manual", "10.4.0.2", 2);
    Lodestar__NamingWriteRequest *r1 = wreq(OP(INSTANCE_REGISTER), 1, &i1), *r2 = wreq(OP(INSTANCE_REGISTER), 1, &i2);
    Lodestar__Envelope e1 = LODESTAR__ENVELOPE__INIT, e2 = LODESTAR__ENVELOPE__INIT;
    e1.body_case = e2.body_case = LODESTAR__ENVELOPE__BODY_NAMING_WRITE_REQUEST;
    e1.naming_write_request = r1;
    e2.naming_write_request = r2;
    cr_assert_eq(ipc_client_request(c.cl, &e1, 10000, on_reply, &w1), 0);
    cr_assert_eq(ipc_client_request(c.cl, &e2, 10000, on_reply, &w2), 0);
    lodestar__naming_write_request__free_unpacked(r1, NULL);
    lodestar__naming_write_request__free_unpacked(r2, NULL);
    while (!(w1.done && w2.done))
        run_for(&c, 5);
    cr_assert_eq(w2.reply->naming_write_response->result->code->value, 429001u);
    cr_assert_str_eq(w2.reply->naming_write_response->result->responses[0]->info->value,
                     "your instance has too many requests: the write queue holds 1 of at most 1 operations "
                     "(workers.naming.batch.queue_size)");
    cr_assert_eq(w1.reply->naming_write_response->result->code->value, 200000u);
    lodestar__envelope__free_unpacked(w1.reply, NULL);
    lodestar__envelope__free_unpacked(w2.reply, NULL);

    /* soft delete, then gone for good after the retention */
    Lodestar__NamingInstance *de = ni("default", "manual", "10.4.0.1", 1);
    rep = write_req(&c, wreq(OP(INSTANCE_DEREGISTER), 1, &de));
    cr_assert_eq(rep->naming_write_response->result->code->value, 200000u);
    lodestar__envelope__free_unpacked(rep, NULL);
    char dsn[700];
    embedded_dsn(&t, dsn, sizeof dsn);
    cr_assert_eq(sql_count(dsn, "SELECT count(*) FROM lodestar_instance WHERE deleted"), 1);
    long long end = lstest_now_ms() + 8000;
    while (sql_count(dsn, "SELECT count(*) FROM lodestar_instance") > 0 && lstest_now_ms() < end)
        lstest_sleep_ms(100);
    cr_assert_eq(sql_count(dsn, "SELECT count(*) FROM lodestar_instance"), 0,
                 "the soft-deleted row outlived deleted_retention_s");

    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

/* ------------------------------------------- kill -9 during registrations */

typedef struct flight {
    cli_t *c;
    uint32_t next_port, max_port;
    int in_flight;
    bool acked[4096];
    size_t n_acked, n_failed;
    bool stop;
} flight_t;

typedef struct pending {
    flight_t *f;
    uint32_t port;
} pending_t;

static void on_reg(int status, Lodestar__Envelope *reply, void *arg)
{
    pending_t *p = arg;
    flight_t *f = p->f;
    f->in_flight--;
    if (status == 0 && reply->body_case == LODESTAR__ENVELOPE__BODY_NAMING_WRITE_RESPONSE &&
        reply->naming_write_response->result->code->value == 200000) {
        f->acked[p->port] = true;
        f->n_acked++;
    } else {
        f->n_failed++;
    }
    free(p);
}

static void send_next(flight_t *f)
{
    while (f->in_flight < 16 && f->next_port < f->max_port) {
        pending_t *p = calloc(1, sizeof *p);
        p->f = f;
        p->port = f->next_port++;
        Lodestar__NamingInstance *item = ni("default", "storm", "10.3.0.1", p->port);
        Lodestar__NamingWriteRequest *r = wreq(OP(INSTANCE_REGISTER), 1, &item);
        Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
        env.body_case = LODESTAR__ENVELOPE__BODY_NAMING_WRITE_REQUEST;
        env.naming_write_request = r;
        int rc = ipc_client_request(f->c->cl, &env, 5000, on_reg, p);
        lodestar__naming_write_request__free_unpacked(r, NULL);
        if (rc < 0) {
            free(p);
            f->n_failed++;
            continue;
        }
        f->in_flight++;
    }
}

Test(naming_worker, kill_9_loses_no_acknowledged_registration)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    cli_t c;
    cli_open(&c, &t);
    flight_t *f = calloc(1, sizeof *f);
    f->c = &c;
    f->next_port = 1;
    f->max_port = 4000;
    /* let registrations flow, then kill the worker in the middle of them */
    long long end = lstest_now_ms() + 400;
    while (lstest_now_ms() < end) {
        send_next(f);
        run_for(&c, 2);
    }
    pid_t pid = lstest_pid(&t, "naming");
    cr_assert_gt(pid, 0);
    size_t acked_before = f->n_acked;
    cr_assert_gt(acked_before, 0u, "no registration was acknowledged before the kill");
    cr_assert_eq(kill(pid, SIGKILL), 0);
    end = lstest_now_ms() + 100;
    while (lstest_now_ms() < end) {
        send_next(f);
        run_for(&c, 2);
    }
    pid_t np = lstest_wait_restarted(&t, "naming", pid, 30000);
    cr_assert_gt(np, 0, "the naming worker did not come back");
    /* keep registering against the new worker for a moment, then drain */
    size_t acked_mid = f->n_acked;
    end = lstest_now_ms() + 500;
    while (lstest_now_ms() < end) {
        if (c.connected)
            send_next(f);
        run_for(&c, 2);
    }
    cr_assert_gt(f->n_acked, acked_mid, "nothing was acknowledged by the restarted worker");
    f->stop = true;
    end = lstest_now_ms() + 10000;
    while (f->in_flight > 0 && lstest_now_ms() < end)
        run_for(&c, 5);
    cr_assert_eq(f->in_flight, 0);
    cr_assert_gt(f->n_failed, 0u, "the kill should have cost some unacknowledged requests");

    char dsn[700];
    embedded_dsn(&t, dsn, sizeof dsn);
    PGconn *pg = PQconnectdb(dsn);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "%s", PQerrorMessage(pg));
    PGresult *r = PQexec(pg, "SELECT port FROM lodestar_instance WHERE service = 'storm' AND NOT deleted");
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(pg));
    bool *stored = calloc(4096, sizeof *stored);
    for (int i = 0; i < PQntuples(r); i++)
        stored[atoi(PQgetvalue(r, i, 0))] = true;
    size_t lost = 0;
    for (uint32_t p = 1; p < 4096; p++)
        if (f->acked[p] && !stored[p])
            lost++;
    cr_assert_eq(lost, 0u, "%zu acknowledged registrations are not in PostgreSQL (of %zu acknowledged)", lost,
                 f->n_acked);
    cr_log_info("kill -9: %zu acknowledged (%zu before the kill), %zu failed, %d stored", f->n_acked, acked_before,
                f->n_failed, PQntuples(r));
    PQclear(r);
    PQfinish(pg);

    /* the restarted worker loaded exactly what PostgreSQL holds */
    Lodestar__NamingSnapshot *s = snapshot(&c);
    const Lodestar__NamingServiceState *ss = snap_service(s, "storm");
    cr_assert_not_null(ss);
    long long n = sql_count(dsn, "SELECT count(*) FROM lodestar_instance WHERE service = 'storm' AND NOT deleted");
    cr_assert_eq((long long)ss->n_instances, n);
    lodestar__naming_snapshot__free_unpacked(s, NULL);
    free(stored);
    free(f);
    cli_close(&c);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

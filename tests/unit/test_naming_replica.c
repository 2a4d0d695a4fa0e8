/*
 * test_naming_replica.c: the gateways' naming read replica
 * (gateways/common/naming_replica.c) fed the way a gateway feeds it: a real
 * IPC client connected to a real IPC server in this process that plays the
 * naming worker (answers NamingSnapshotRequest), with the client's push and
 * state callbacks forwarded to nr_on_push / nr_on_state as gateway.c does.
 * Changes are also handed to nr_on_push directly, built from JSON with
 * pbjson, to drive the seq rules exactly.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "ipc.h"
#include "log.h"
#include "naming.pb-c.h"
#include "naming_replica.h"
#include "pbjson.h"

/* ------------------------------------------------------------ fixture */

static struct event_base *base;
static char dir[64];
static char sock_path[128];
static int listen_fd = -1;
static ipc_server_t *server;
static ipc_client_t *client;
static nr_t *replica;
static struct event *guard;
static bool guard_fired;

/* the fake naming worker */
static char snapshot_json[8192];
static int snapshot_requests;
static int answer_errors_first; /* answer this many snapshot requests with an Error */
static ipc_conn_t *last_conn;

/* change listener */
static int changes, snapshots_seen;
static char last_changed[128];

static Lodestar__Envelope *env_from_json(const char *json)
{
    ProtobufCMessage *m = NULL;
    char err[512] = "";
    int rc = pbjson_decode(&lodestar__envelope__descriptor, json, strlen(json), 0, NULL, &m, err, sizeof err);
    cr_assert_eq(rc, 0, "test JSON does not decode: %s\n%s", err, json);
    return (Lodestar__Envelope *)m;
}

static void push_json(const char *json)
{
    Lodestar__Envelope *e = env_from_json(json);
    nr_on_push(replica, e);
    lodestar__envelope__free_unpacked(e, NULL);
}

static void on_request(ipc_server_t *s, ipc_conn_t *conn, uint64_t id, Lodestar__Envelope *req, void *arg)
{
    last_conn = conn;
    if (req->body_case != LODESTAR__ENVELOPE__BODY_NAMING_SNAPSHOT_REQUEST) {
        ipc_server_reply_error(conn, id, -EOPNOTSUPP, "unexpected %s", ipc_type_name(req->body_case));
        return;
    }
    snapshot_requests++;
    if (answer_errors_first > 0) {
        answer_errors_first--;
        ipc_server_reply_error(conn, id, -EAGAIN, "store not loaded yet");
        return;
    }
    Lodestar__Envelope *e = env_from_json(snapshot_json);
    ipc_server_reply(conn, id, e);
    lodestar__envelope__free_unpacked(e, NULL);
}

static void on_push(ipc_client_t *cl, Lodestar__Envelope *push, void *arg) { nr_on_push(replica, push); }

static void on_state(ipc_client_t *cl, bool connected, void *arg) { nr_on_state(replica, connected); }

/* what the last change told its listener about instances */
static bool last_was_delta;
static char last_delta[256];

static void on_change(nr_t *r, const nr_service_t *svc, const nr_delta_t *delta, void *arg)
{
    if (!svc) {
        snapshots_seen++;
        return;
    }
    changes++;
    last_was_delta = delta != NULL;
    last_delta[0] = '\0';
    if (delta) {
        size_t off = 0;
        for (size_t i = 0; i < delta->n_changed; i++)
            off += (size_t)snprintf(last_delta + off, sizeof last_delta - off, "+%s:%u ",
                                    delta->changed[i]->instance->id->value, delta->changed[i]->instance->port->value);
        for (size_t i = 0; i < delta->n_removed; i++)
            off += (size_t)snprintf(last_delta + off, sizeof last_delta - off, "-%s ", delta->removed[i]);
    }
    snprintf(last_changed, sizeof last_changed, "%s/%s%s", svc->ns, svc->name,
             svc->state->deleted ? " (deleted)" : "");
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    guard_fired = true;
    event_base_loopbreak(base);
}

static void setup(void)
{
    log_init("test_naming_replica", LOG_LVL_WARN, NULL);
    snprintf(dir, sizeof dir, "/tmp/nrtest-XXXXXX");
    cr_assert(mkdtemp(dir), "mkdtemp");
    snprintf(sock_path, sizeof sock_path, "%s/naming.sock", dir);
    base = event_base_new();
    listen_fd = ipc_listen_unix(sock_path, 16);
    cr_assert(listen_fd >= 0, "listen on %s: %s", sock_path, strerror(-listen_fd));
    server = ipc_server_new(base, listen_fd, "fake naming worker", 0, on_request, NULL, NULL);
    cr_assert(server, "ipc_server_new");
    snprintf(snapshot_json, sizeof snapshot_json, "{\"namingSnapshot\": {\"seq\": \"0\"}}");
    snapshot_requests = 0;
    answer_errors_first = 0;
    changes = snapshots_seen = 0;
    last_changed[0] = '\0';
    guard_fired = false;
    guard = evtimer_new(base, on_guard, NULL);
    struct timeval tv = {10, 0};
    evtimer_add(guard, &tv);
    client = ipc_client_new(base, sock_path, "naming worker", 0, on_push, on_state, NULL);
    cr_assert(client, "ipc_client_new");
    replica = nr_new(base, client, 2000);
    cr_assert(replica, "nr_new");
    cr_assert_eq(nr_on_change(replica, on_change, NULL), 0, "nr_on_change");
}

static void teardown(void)
{
    ipc_client_free(client);
    nr_free(replica);
    ipc_server_free(server);
    if (listen_fd >= 0)
        close(listen_fd);
    unlink(sock_path);
    rmdir(dir);
    event_free(guard);
    event_base_free(base);
}

/* Run the loop until cond() holds (or the guard fires). */
static void run_until(bool (*cond)(void))
{
    while (!cond() && !guard_fired)
        event_base_loop(base, EVLOOP_ONCE);
    cr_assert_not(guard_fired, "timed out waiting");
}

static bool is_ready(void) { return nr_ready(replica); }

static int count_cb_n;
static void count_cb(const nr_service_t *svc, void *arg) { count_cb_n++; }
static int count_services(const char *ns)
{
    count_cb_n = 0;
    nr_foreach_service(replica, ns, count_cb, NULL);
    return count_cb_n;
}

/* A NamingServiceState in JSON: instances "id:host:port:healthy" joined by ',' */
static void state_json(char *out, size_t cap, const char *ns, const char *name, const char *rev, unsigned seq,
                       bool deleted, const char *instances)
{
    char inst[4096] = "";
    size_t off = 0;
    if (instances && *instances) {
        char copy[1024];
        snprintf(copy, sizeof copy, "%s", instances);
        char *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            char id[64], host[64];
            unsigned port, healthy;
            cr_assert_eq(sscanf(tok, "%63[^:]:%63[^:]:%u:%u", id, host, &port, &healthy), 4, "bad spec %s", tok);
            off += (size_t)snprintf(inst + off, sizeof inst - off,
                                    "%s{\"instance\": {\"id\": \"%s\", \"namespace\": \"%s\", \"service\": \"%s\", "
                                    "\"host\": \"%s\", \"port\": %u, \"healthy\": %s}}",
                                    off ? ", " : "", id, ns, name, host, port, healthy ? "true" : "false");
        }
    }
    snprintf(out, cap,
             "{\"service\": {\"name\": \"%s\", \"namespace\": \"%s\", \"revision\": \"%s\", "
             "\"metadata\": {\"team\": \"a\"}}, \"instances\": [%s], \"deleted\": %s, \"seq\": \"%u\"}",
             name, ns, rev, inst, deleted ? "true" : "false", seq);
}

static void push_state(const char *ns, const char *name, const char *rev, unsigned seq, bool deleted,
                       const char *instances)
{
    char st[6000], env[6200];
    state_json(st, sizeof st, ns, name, rev, seq, deleted, instances);
    snprintf(env, sizeof env, "{\"namingChange\": {\"services\": [%s], \"seq\": \"%u\"}}", st, seq);
    push_json(env);
}

/* Connect and load an empty snapshot so pushes can be checked alone. */
static void start_empty(void)
{
    run_until(is_ready);
    cr_assert_eq(snapshot_requests, 1, "one snapshot request on connect, got %d", snapshot_requests);
}

TestSuite(naming_replica, .init = setup, .fini = teardown, .timeout = 30);

/* ---------------------------------------------------------------- tests */

Test(naming_replica, snapshot_on_connect_builds_indexes)
{
    char a[2000], b[2000], c[2000];
    state_json(a, sizeof a, "default", "orders", "rev-a", 3, false, "i1:10.0.0.1:80:1,i2:10.0.0.2:80:0");
    state_json(b, sizeof b, "default", "users", "rev-b", 4, false, "i3:10.0.0.3:81:1");
    state_json(c, sizeof c, "prod", "orders", "rev-c", 5, false, "");
    snprintf(snapshot_json, sizeof snapshot_json,
             "{\"namingSnapshot\": {\"namespaces\": [{\"name\": \"default\"}, {\"name\": \"prod\"}], "
             "\"services\": [%s, %s, %s], \"seq\": \"5\"}}",
             a, b, c);
    cr_assert_not(nr_ready(replica), "not ready before the snapshot");
    run_until(is_ready);
    cr_assert_eq(snapshot_requests, 1, "snapshot requests: %d", snapshot_requests);
    cr_assert_eq(snapshots_seen, 1, "the listener hears about the snapshot once");
    cr_assert_eq(nr_seq(replica), 5, "seq %llu", (unsigned long long)nr_seq(replica));

    const nr_service_t *s = nr_service(replica, "default", "orders");
    cr_assert(s, "default/orders loaded");
    cr_assert_str_eq(s->revision, "rev-a", "revision");
    cr_assert_str_eq(s->ns, "default", "ns");
    cr_assert_str_eq(s->name, "orders", "name");
    cr_assert_eq(s->state->n_instances, 2, "instances");
    cr_assert(nr_service(replica, "prod", "orders"), "same name, other namespace");
    cr_assert_null(nr_service(replica, "prod", "users"), "absent service");

    const nr_service_t *owner = NULL;
    const Lodestar__NamingInstance *ni = nr_instance(replica, "i3", &owner);
    cr_assert(ni, "instance i3 indexed");
    cr_assert_str_eq(ni->instance->host->value, "10.0.0.3", "host of i3");
    cr_assert(owner && strcmp(owner->name, "users") == 0, "i3 belongs to users");
    cr_assert_null(nr_instance(replica, "nope", NULL), "unknown id");

    cr_assert_eq(count_services("default"), 2, "services in default");
    cr_assert_eq(count_services("prod"), 1, "services in prod");
    cr_assert_eq(count_services(NULL), 3, "all services");
    cr_assert_eq(count_services("nope"), 0, "unknown namespace");
    cr_assert_eq(nr_service_count(replica), 3, "service count");

    V1__Namespace *const *nss = NULL;
    size_t nn = nr_namespaces(replica, &nss);
    cr_assert_eq(nn, 2, "namespaces: %zu", nn);
    cr_assert_str_eq(nss[1]->name->value, "prod", "second namespace");
}

Test(naming_replica, highest_seq_wins_and_cache_is_freed)
{
    start_empty();
    push_state("default", "svc", "r5", 5, false, "a:1.1.1.1:80:1,b:1.1.1.2:80:1");
    const nr_service_t *s = nr_service(replica, "default", "svc");
    cr_assert(s, "applied");
    cr_assert_eq(changes, 1, "listener called once");
    cr_assert_str_eq(last_changed, "default/svc", "listener got the service");

    /* fill a cache slot as a protocol would */
    nr_cache_slot_t *slot = nr_cache(s, 0);
    cr_assert(slot, "slot 0");
    slot->data = malloc(4);
    memcpy(slot->data, "abcd", 4);
    slot->len = 4;
    cr_assert_null(nr_cache(s, NR_CACHE_SLOTS), "slot out of range");
    cr_assert_null(nr_cache(s, -1), "negative slot");

    /* older and equal seqs are ignored, cache kept */
    push_state("default", "svc", "r3", 3, false, "a:1.1.1.1:80:1");
    push_state("default", "svc", "r5b", 5, false, "a:1.1.1.1:80:1");
    s = nr_service(replica, "default", "svc");
    cr_assert_str_eq(s->revision, "r5", "stale states must not replace seq 5 (revision %s)", s->revision);
    cr_assert_eq(s->state->n_instances, 2, "instances of seq 5 kept");
    cr_assert_eq(changes, 1, "no listener call for stale states");
    cr_assert(nr_cache(s, 0)->data, "cache kept while nothing changed");
    cr_assert(nr_instance(replica, "b", NULL), "b still indexed");

    /* newer: applied, cache freed, index follows */
    push_state("default", "svc", "r7", 7, false, "a:1.1.1.1:80:1,c:1.1.1.3:80:0");
    s = nr_service(replica, "default", "svc");
    cr_assert_str_eq(s->revision, "r7", "seq 7 applied");
    cr_assert_eq(s->seq, 7, "seq field");
    cr_assert_null(nr_cache(s, 0)->data, "cache slot freed on change");
    cr_assert_eq(nr_cache(s, 0)->len, 0, "cache slot length reset");
    cr_assert_null(nr_instance(replica, "b", NULL), "b left the instance index");
    cr_assert(nr_instance(replica, "c", NULL), "c joined the instance index");
    cr_assert_eq(changes, 2, "listener called for seq 7");
    cr_assert_eq(nr_seq(replica), 7, "replica seq");
}

Test(naming_replica, deleted_state_removes_and_blocks_older_states)
{
    start_empty();
    push_state("default", "gone", "r1", 10, false, "x:2.2.2.2:90:1");
    const char *rev_before = nr_services_revision(replica, "default");
    char before[64];
    snprintf(before, sizeof before, "%s", rev_before);
    cr_assert(before[0], "a namespace with a service has a services revision");

    push_state("default", "gone", "", 11, true, "");
    cr_assert_null(nr_service(replica, "default", "gone"), "deleted service is not visible");
    cr_assert_null(nr_instance(replica, "x", NULL), "its instances left the index");
    cr_assert_str_eq(last_changed, "default/gone (deleted)", "listener told about the deletion");
    cr_assert_str_eq(nr_services_revision(replica, "default"), "", "no service left: empty revision");
    cr_assert_eq(count_services("default"), 0, "nothing listed");

    /* an older live state arriving late must not resurrect it */
    push_state("default", "gone", "r1", 10, false, "x:2.2.2.2:90:1");
    cr_assert_null(nr_service(replica, "default", "gone"), "stale state after the deletion ignored");

    /* a newer registration brings it back */
    push_state("default", "gone", "r12", 12, false, "y:2.2.2.3:90:1");
    cr_assert(nr_service(replica, "default", "gone"), "re-created by a newer state");
    cr_assert(nr_instance(replica, "y", NULL), "new instance indexed");
}

Test(naming_replica, snapshot_removes_what_it_lacks_but_keeps_newer_pushes)
{
    start_empty();
    push_state("default", "newer", "rn", 20, false, "n1:3.3.3.1:1:1");
    push_state("default", "older", "ro", 5, false, "o1:3.3.3.2:1:1");
    char c[2000], stale[2000];
    state_json(c, sizeof c, "default", "fresh", "rc", 14, false, "f1:3.3.3.3:1:1");
    /* the snapshot also carries an older state of "newer" */
    state_json(stale, sizeof stale, "default", "newer", "r-old", 12, false, "");
    char env[6000];
    snprintf(env, sizeof env, "{\"namingSnapshot\": {\"services\": [%s, %s], \"seq\": \"15\"}}", c, stale);
    int before = snapshots_seen;
    push_json(env);
    cr_assert_eq(snapshots_seen, before + 1, "listener told about the snapshot");
    cr_assert(nr_service(replica, "default", "fresh"), "snapshot content applied");
    cr_assert_null(nr_service(replica, "default", "older"), "service missing from the snapshot removed");
    cr_assert_null(nr_instance(replica, "o1", NULL), "and its instances");
    const nr_service_t *n = nr_service(replica, "default", "newer");
    cr_assert(n, "a push newer than the snapshot survives it");
    cr_assert_str_eq(n->revision, "rn", "and keeps its newer state");
    cr_assert(nr_instance(replica, "n1", NULL), "its instances stay indexed");
}

Test(naming_replica, services_revision_follows_the_list)
{
    start_empty();
    cr_assert_str_eq(nr_services_revision(replica, "default"), "", "empty namespace");
    cr_assert_str_eq(nr_services_revision(replica, NULL), "", "empty replica");
    push_state("default", "a", "ra", 1, false, "");
    char r1[64];
    snprintf(r1, sizeof r1, "%s", nr_services_revision(replica, "default"));
    cr_assert_eq(strlen(r1), 40, "a SHA-1 in hex: '%s'", r1);
    cr_assert_str_eq(nr_services_revision(replica, "default"), r1, "stable while nothing changes");

    push_state("default", "b", "rb", 2, false, "");
    char r2[64];
    snprintf(r2, sizeof r2, "%s", nr_services_revision(replica, "default"));
    cr_assert_str_neq(r2, r1, "adding a service changes the revision");

    push_state("other", "c", "rc", 3, false, "");
    cr_assert_str_eq(nr_services_revision(replica, "default"), r2, "another namespace does not touch it");
    char all[64];
    snprintf(all, sizeof all, "%s", nr_services_revision(replica, ""));
    cr_assert_str_neq(all, r2, "the all-namespaces list differs");
    cr_assert_str_eq(nr_services_revision(replica, NULL), all, "NULL and \"\" both mean every namespace");

    push_state("default", "b", "rb2", 4, false, "");
    char r3[64];
    snprintf(r3, sizeof r3, "%s", nr_services_revision(replica, "default"));
    cr_assert_str_neq(r3, r2, "a service's own revision change changes the list revision");
    cr_assert_str_neq(nr_services_revision(replica, NULL), all, "and the all-namespaces revision");

    push_state("default", "b", "", 5, true, "");
    cr_assert_str_eq(nr_services_revision(replica, "default"), r1, "back to the one-service list: same revision");
}

Test(naming_replica, event_on_topic_naming_is_applied)
{
    start_empty();
    /* an Event envelope whose data is a packed NamingChange */
    char st[2000], ch[2200];
    state_json(st, sizeof st, "default", "evt", "re", 9, false, "e1:4.4.4.4:1:1");
    snprintf(ch, sizeof ch, "{\"namingChange\": {\"services\": [%s], \"seq\": \"9\"}}", st);
    Lodestar__Envelope *inner = env_from_json(ch);
    size_t n = lodestar__naming_change__get_packed_size(inner->naming_change);
    uint8_t *buf = malloc(n);
    lodestar__naming_change__pack(inner->naming_change, buf);
    Lodestar__Event ev = LODESTAR__EVENT__INIT;
    ev.topic = "naming";
    ev.seq = 9;
    ev.data.data = buf;
    ev.data.len = n;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_EVENT;
    env.event = &ev;
    nr_on_push(replica, &env);
    cr_assert(nr_service(replica, "default", "evt"), "change carried in an Event applied");
    /* another topic is ignored */
    ev.topic = "config";
    nr_on_push(replica, &env);
    cr_assert_eq(changes, 1, "only the naming event counted");
    free(buf);
    lodestar__envelope__free_unpacked(inner, NULL);
}

Test(naming_replica, pushes_from_the_worker_reach_the_replica)
{
    start_empty();
    char st[2000], ch[2200];
    state_json(st, sizeof st, "default", "pushed", "rp", 3, false, "p1:5.5.5.5:1:1");
    snprintf(ch, sizeof ch, "{\"namingChange\": {\"services\": [%s], \"seq\": \"3\"}}", st);
    Lodestar__Envelope *e = env_from_json(ch);
    cr_assert(ipc_server_publish(server, "naming", e) == 1, "one subscriber on topic naming");
    lodestar__envelope__free_unpacked(e, NULL);
    while (!nr_service(replica, "default", "pushed") && !guard_fired)
        event_base_loop(base, EVLOOP_ONCE);
    cr_assert(nr_service(replica, "default", "pushed"), "published change applied through the IPC client");
}

static bool two_requests_and_ready(void) { return snapshot_requests >= 2 && nr_ready(replica); }

Test(naming_replica, failed_snapshot_is_retried)
{
    answer_errors_first = 1;
    run_until(two_requests_and_ready);
    cr_assert_eq(snapshot_requests, 2, "one failed request, one retry: %d", snapshot_requests);
}

static bool is_disconnected(void) { return !ipc_client_connected(client); }

Test(naming_replica, reconnect_requests_a_new_snapshot)
{
    start_empty();
    push_state("default", "stale", "rs", 4, false, "s1:6.6.6.6:1:1");
    char a[2000];
    state_json(a, sizeof a, "default", "kept", "rk", 8, false, "k1:6.6.6.7:1:1");
    snprintf(snapshot_json, sizeof snapshot_json, "{\"namingSnapshot\": {\"services\": [%s], \"seq\": \"8\"}}", a);
    /* the worker restarts: its side of the connection goes away */
    cr_assert(last_conn, "server saw the client");
    ipc_conn_free(last_conn);
    last_conn = NULL;
    run_until(is_disconnected);
    cr_assert(nr_ready(replica), "the replica keeps serving what it has while disconnected");
    cr_assert(nr_service(replica, "default", "stale"), "data kept while disconnected");
    run_until(two_requests_and_ready);
    while (nr_service(replica, "default", "stale") && !guard_fired)
        event_base_loop(base, EVLOOP_ONCE);
    cr_assert_null(nr_service(replica, "default", "stale"), "the new snapshot removed what the worker lost");
    cr_assert(nr_service(replica, "default", "kept"), "and brought the current state");
}

static int want_requests;
static bool enough_requests(void) { return snapshot_requests >= want_requests; }
static void run_until_requests(int n)
{
    want_requests = n;
    run_until(enough_requests);
}

/* A delta push: only changed instances and removed ids, on top of base_seq. */
static void push_delta(const char *ns, const char *name, const char *rev, unsigned base, unsigned seq,
                       const char *instances, const char *removed_json)
{
    char st[6000], env[6400];
    state_json(st, sizeof st, ns, name, rev, seq, false, instances);
    /* turn the full state JSON into a delta: drop the closing brace, add the delta fields */
    size_t len = strlen(st);
    cr_assert(len > 0 && st[len - 1] == '}');
    st[len - 1] = '\0';
    snprintf(env, sizeof env,
             "{\"namingChange\": {\"services\": [%s, \"delta\": true, \"baseSeq\": \"%u\", \"removedIds\": [%s]}], "
             "\"seq\": \"%u\"}}",
             st, base, removed_json, seq);
    push_json(env);
}

Test(naming_replica, deltas_merge_on_their_base_and_gaps_ask_for_a_snapshot)
{
    start_empty();
    push_state("default", "svc", "r5", 5, false, "a:1.1.1.1:80:1,b:1.1.1.2:80:1,c:1.1.1.3:80:0");
    cr_assert_not(last_was_delta, "a full state reaches listeners without a delta");
    cr_assert_eq(nr_service(replica, "default", "svc")->n_unhealthy, 1, "c is unhealthy");
    /* b changes, c goes, d arrives */
    push_delta("default", "svc", "r6", 5, 6, "b:1.1.1.2:81:0,d:1.1.1.4:80:1", "\"c\"");
    cr_assert(last_was_delta, "a delta reaches listeners as one");
    cr_assert_str_eq(last_delta, "+b:81 +d:80 -c ", "listeners see what changed and what left");
    const nr_service_t *s = nr_service(replica, "default", "svc");
    cr_assert_eq(s->n_unhealthy, 1, "c left unhealthy, b became unhealthy: %u", s->n_unhealthy);
    cr_assert_str_eq(s->revision, "r6");
    cr_assert_eq(s->seq, 6);
    cr_assert_eq(s->state->n_instances, 3, "a, b, d expected, got %zu", s->state->n_instances);
    const char *want[] = {"a", "b", "d"};
    for (size_t i = 0; i < 3; i++)
        cr_assert_str_eq(s->state->instances[i]->instance->id->value, want[i], "instances stay in id order");
    cr_assert_eq(s->state->instances[1]->instance->port->value, 81, "b took its new port");
    cr_assert_null(nr_instance(replica, "c", NULL), "c left the index");
    cr_assert(nr_instance(replica, "d", NULL), "d joined the index");
    cr_assert_eq(changes, 2);

    /* the same delta again (or an older one) changes nothing */
    push_delta("default", "svc", "r6", 5, 6, "b:1.1.1.2:99:0", "");
    cr_assert_eq(nr_service(replica, "default", "svc")->state->instances[1]->instance->port->value, 81);
    cr_assert_eq(changes, 2, "a stale delta must not notify");

    /* a delta whose base this replica never saw: dropped, snapshot requested */
    int before = snapshot_requests;
    push_delta("default", "svc", "r9", 8, 9, "e:1.1.1.5:80:1", "");
    s = nr_service(replica, "default", "svc");
    cr_assert_eq(s->seq, 6, "a delta over a gap must not be applied");
    cr_assert_null(nr_instance(replica, "e", NULL));
    run_until_requests(before + 1); /* the replica asked the worker for a snapshot */
}

/* A full state may list its instances in any order; deltas on top of it find
 * what they change by id, and many small deltas build the same set as the
 * worker holds, in id order, with the index pointing at the current copies. */
Test(naming_replica, deltas_on_unsorted_states_and_long_runs_stay_exact)
{
    start_empty();
    push_state("default", "big", "r1", 1, false, "z:1.1.1.9:80:1,m:1.1.1.5:80:1,a:1.1.1.1:80:1");
    push_delta("default", "big", "r2", 1, 2, "n:1.1.1.6:80:1,m:1.1.1.5:90:0,0:1.1.1.0:80:1,b:1.1.1.2:80:1", "\"z\"");
    const nr_service_t *s = nr_service(replica, "default", "big");
    const char *want[] = {"0", "a", "b", "m", "n"};
    cr_assert_eq(s->state->n_instances, 5, "0, a, b, m, n expected, got %zu", s->state->n_instances);
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(s->state->instances[i]->instance->id->value, want[i], "position %zu", i);
    const Lodestar__NamingInstance *m = nr_instance(replica, "m", NULL);
    cr_assert(m && m->instance->port->value == 90, "the index points at m's new copy");
    cr_assert_null(nr_instance(replica, "z", NULL), "z left the index");

    /* 300 deltas: each adds one instance (ids in a scrambled order) and every
     * third also removes the one added two steps before */
    bool present[300] = {false};
    unsigned seq = 2;
    for (unsigned k = 0; k < 300; k++) {
        unsigned id = (k * 7919u) % 300u;
        char add[64], rem[32] = "";
        snprintf(add, sizeof add, "i%03u:10.0.%u.%u:%u:1", id, id / 256, id % 256, 1000 + id);
        present[id] = true;
        if (k % 3 == 2) {
            unsigned gone = ((k - 2) * 7919u) % 300u;
            snprintf(rem, sizeof rem, "\"i%03u\"", gone);
            present[gone] = false;
        }
        push_delta("default", "big", "rk", seq, seq + 1, add, rem);
        seq++;
    }
    s = nr_service(replica, "default", "big");
    cr_assert_eq(s->seq, seq);
    size_t expect = 5, at = 0;
    for (unsigned id = 0; id < 300; id++)
        expect += present[id];
    cr_assert_eq(s->state->n_instances, expect, "%zu instances expected, got %zu", expect, s->state->n_instances);
    for (size_t i = 1; i < s->state->n_instances; i++)
        cr_assert(strcmp(s->state->instances[i - 1]->instance->id->value, s->state->instances[i]->instance->id->value) < 0,
                  "instances stay in strict id order at %zu", i);
    for (unsigned id = 0; id < 300; id++) {
        char key[16];
        snprintf(key, sizeof key, "i%03u", id);
        const nr_service_t *owner = NULL;
        const Lodestar__NamingInstance *ni = nr_instance(replica, key, &owner);
        if (present[id]) {
            cr_assert(ni && owner == s && ni->instance->port->value == 1000 + id, "%s indexed with its port", key);
            at++;
        } else {
            cr_assert_null(ni, "%s was removed", key);
        }
    }
    cr_assert_eq(at + 5, expect);
}

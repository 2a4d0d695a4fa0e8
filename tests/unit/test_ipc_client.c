/*
 * test_ipc_client.c: the IPC client (ipc/client.c) against the IPC server
 * (ipc/server.c) over a real listening Unix socket in a temporary
 * directory: request correlation, timeouts, server restarts, reconnection,
 * subscriptions and pushes, refusals while disconnected, freeing with
 * requests in flight, slow consumers. Every loop is bounded by a deadline.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/event.h>

#include "ipc.h"
#include "log.h"

enum answer_mode {
    ANSWER_NOW,      /* PingResponse{role = request's from} at once */
    ANSWER_NEVER,    /* keep the request, never answer */
    ANSWER_REVERSED, /* hold 3 requests, then answer them last first */
    ANSWER_KICK,     /* free the asking connection from inside the handler */
};

typedef struct held {
    ipc_conn_t *conn;
    uint64_t id;
    char from[64];
} held_t;

typedef struct server_ctx {
    enum answer_mode mode;
    int requests;
    held_t held[8];
    int n_held;
    int peers_up, peers_down;
} server_ctx_t;

typedef struct reply_slot {
    int calls;
    int status;
    int body;
    char role[64];
    struct timeval at;
    bool free_client_in_cb;
    ipc_client_t *cl;
} reply_slot_t;

typedef struct client_ctx {
    int ups, downs;
    int pushes;
    char last_topic[64];
    uint64_t last_seq;
} client_ctx_t;

static struct event_base *base;
static char dir[64];
static char path[128];
static int listen_fd = -1;
static ipc_server_t *srv;
static server_ctx_t sctx;

static void answer(ipc_conn_t *conn, uint64_t id, const char *from)
{
    Lodestar__PingResponse pr = LODESTAR__PING_RESPONSE__INIT;
    pr.role = (char *)from;
    pr.store_ok = true;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_PING_RESPONSE;
    env.ping_response = &pr;
    cr_assert_eq(ipc_server_reply(conn, id, &env), 0, "server reply to %llu", (unsigned long long)id);
}

static void on_request(ipc_server_t *s, ipc_conn_t *conn, uint64_t id, Lodestar__Envelope *req, void *arg)
{
    server_ctx_t *x = arg;
    x->requests++;
    const char *from = req->body_case == LODESTAR__ENVELOPE__BODY_PING_REQUEST ? req->ping_request->from : "?";
    if (x->mode == ANSWER_NOW) {
        answer(conn, id, from);
        return;
    }
    if (x->mode == ANSWER_KICK) {
        ipc_conn_free(conn);
        return;
    }
    cr_assert_lt(x->n_held, 8, "too many held requests");
    held_t *h = &x->held[x->n_held++];
    h->conn = conn;
    h->id = id;
    snprintf(h->from, sizeof h->from, "%s", from);
    if (x->mode == ANSWER_REVERSED && x->n_held == 3) {
        for (int i = 2; i >= 0; i--)
            answer(x->held[i].conn, x->held[i].id, x->held[i].from);
        x->n_held = 0;
    }
}

static void on_peer(ipc_server_t *s, ipc_conn_t *conn, bool connected, void *arg)
{
    server_ctx_t *x = arg;
    if (connected) {
        x->peers_up++;
    } else {
        x->peers_down++;
        /* forget requests held for a peer that went away */
        for (int i = 0; i < x->n_held; i++)
            if (x->held[i].conn == conn)
                x->held[i] = x->held[--x->n_held], i--;
    }
}

static void server_start(enum answer_mode mode, uint32_t max_frame)
{
    listen_fd = ipc_listen_unix(path, 16);
    cr_assert_geq(listen_fd, 0, "ipc_listen_unix(%s): %s", path, strerror(-listen_fd));
    int up = sctx.peers_up, down = sctx.peers_down;
    memset(&sctx, 0, sizeof sctx);
    sctx.mode = mode;
    sctx.peers_up = up;
    sctx.peers_down = down;
    srv = ipc_server_new(base, listen_fd, "test server", max_frame, on_request, on_peer, &sctx);
    cr_assert_not_null(srv, "ipc_server_new");
}

/* What a dying worker looks like to its clients: the server goes, and the
 * listening socket goes with it. */
static void server_stop(void)
{
    ipc_server_free(srv);
    srv = NULL;
    cr_assert_eq(close(listen_fd), 0, "ipc_server_free left the listening fd open for its owner");
    listen_fd = -1;
}

static void setup(void)
{
    log_init("test_ipc_client", LOG_LVL_DEBUG, NULL);
    snprintf(dir, sizeof dir, "/tmp/lodestar-ipc-XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/ipc.sock", dir);
    base = event_base_new();
    cr_assert_not_null(base, "event_base_new");
    memset(&sctx, 0, sizeof sctx);
}

static void teardown(void)
{
    if (srv)
        ipc_server_free(srv);
    if (listen_fd >= 0)
        close(listen_fd);
    event_base_free(base);
    unlink(path);
    rmdir(dir);
}

TestSuite(ipc_client, .init = setup, .fini = teardown, .timeout = 30);

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/* Run the loop until *counter >= want or ms pass; returns *counter. */
static int run_until(const int *counter, int want, int ms)
{
    bool expired = false;
    struct event *t = evtimer_new(base, deadline_cb, &expired);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (*counter < want && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return *counter;
}

static void run_for(int ms)
{
    int never = 0;
    run_until(&never, 1, ms);
}

static long ms_between(const struct timeval *a, const struct timeval *b)
{
    return (b->tv_sec - a->tv_sec) * 1000 + (b->tv_usec - a->tv_usec) / 1000;
}

static void reply_cb(int status, Lodestar__Envelope *reply, void *arg)
{
    reply_slot_t *r = arg;
    r->calls++;
    r->status = status;
    gettimeofday(&r->at, NULL);
    if (status == 0) {
        cr_assert_not_null(reply, "a reply with status 0");
        r->body = reply->body_case;
        if (reply->body_case == LODESTAR__ENVELOPE__BODY_PING_RESPONSE)
            snprintf(r->role, sizeof r->role, "%s", reply->ping_response->role);
        else if (reply->body_case == LODESTAR__ENVELOPE__BODY_ERROR)
            snprintf(r->role, sizeof r->role, "%s", reply->error->message);
    } else {
        cr_assert_null(reply, "no reply with status %d", status);
    }
    if (r->free_client_in_cb)
        ipc_client_free(r->cl);
}

static void on_push(ipc_client_t *cl, Lodestar__Envelope *push, void *arg)
{
    client_ctx_t *c = arg;
    c->pushes++;
    if (push->body_case == LODESTAR__ENVELOPE__BODY_EVENT) {
        snprintf(c->last_topic, sizeof c->last_topic, "%s", push->event->topic);
        c->last_seq = push->event->seq;
    }
}

static void on_state(ipc_client_t *cl, bool connected, void *arg)
{
    client_ctx_t *c = arg;
    if (connected)
        c->ups++;
    else
        c->downs++;
    cr_assert_eq(ipc_client_connected(cl), connected, "on_state agrees with ipc_client_connected");
}

static int ping(ipc_client_t *cl, const char *from, int timeout_ms, reply_slot_t *slot)
{
    Lodestar__PingRequest pr = LODESTAR__PING_REQUEST__INIT;
    pr.from = (char *)from;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_PING_REQUEST;
    env.ping_request = &pr;
    return ipc_client_request(cl, &env, timeout_ms, reply_cb, slot);
}

static ipc_client_t *client_up(client_ctx_t *cc)
{
    ipc_client_t *cl = ipc_client_new(base, path, "test client", 0, on_push, on_state, cc);
    cr_assert_not_null(cl, "ipc_client_new");
    cr_assert_eq(run_until(&cc->ups, 1, 2000), 1, "client reports connected");
    return cl;
}

static void publish_event(const char *topic, uint64_t seq, int want_queued)
{
    Lodestar__Event ev = LODESTAR__EVENT__INIT;
    ev.topic = (char *)topic;
    ev.seq = seq;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_EVENT;
    env.event = &ev;
    cr_assert_eq(ipc_server_publish(srv, topic, &env), want_queued, "publish '%s' reaches %d connection(s)", topic,
                 want_queued);
}

Test(ipc_client, first_state_report_is_deferred_to_the_loop)
{
    server_start(ANSWER_NOW, 0);
    client_ctx_t cc = {0};
    ipc_client_t *cl = ipc_client_new(base, path, "test client", 0, on_push, on_state, &cc);
    cr_assert_not_null(cl, "ipc_client_new");
    cr_assert_eq(cc.ups, 0, "on_state not called from inside ipc_client_new");
    cr_assert_eq(run_until(&cc.ups, 1, 2000), 1, "connected reported from the loop");
    cr_assert(ipc_client_connected(cl), "connected");
    cr_assert_eq(run_until(&sctx.peers_up, 1, 2000), 1, "server saw the peer");
    cr_assert_eq(ipc_server_conn_count(srv), 1u, "one connection");
    ipc_client_free(cl);
    cr_assert_eq(run_until(&sctx.peers_down, 1, 2000), 1, "server saw the peer go");
    cr_assert_eq(ipc_server_conn_count(srv), 0u, "no connection left");
}

Test(ipc_client, responses_are_matched_to_their_requests)
{
    server_start(ANSWER_REVERSED, 0);
    client_ctx_t cc = {0};
    ipc_client_t *cl = client_up(&cc);

    reply_slot_t r[3] = {{0}};
    const char *names[3] = {"alpha", "bravo", "charlie"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ping(cl, names[i], 5000, &r[i]), 0, "request %d queued", i);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(r[i].calls, 0, "no callback from inside ipc_client_request");
    cr_assert_eq(run_until(&r[0].calls, 1, 3000), 1, "first request answered (last)");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r[i].calls, 1, "request %d answered exactly once", i);
        cr_assert_eq(r[i].status, 0, "request %d status", i);
        cr_assert_eq(r[i].body, LODESTAR__ENVELOPE__BODY_PING_RESPONSE, "request %d body", i);
        cr_assert_str_eq(r[i].role, names[i], "request %d got its own reply", i);
    }
    /* answered in reverse: the third callback ran first */
    cr_assert(timercmp(&r[2].at, &r[0].at, <=), "reverse order of answers was preserved");
    ipc_client_free(cl);
}

Test(ipc_client, request_ids_start_at_one_and_grow)
{
    server_start(ANSWER_NEVER, 0);
    client_ctx_t cc = {0};
    ipc_client_t *cl = client_up(&cc);
    reply_slot_t r[3] = {{0}};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ping(cl, "id", 5000, &r[i]), 0, "queued");
    cr_assert_eq(run_until(&sctx.requests, 3, 2000), 3, "server got 3 requests");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(sctx.held[i].id, (uint64_t)i + 1, "request %d has id %d", i, i + 1);
    ipc_client_free(cl);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(r[i].status, -ECONNRESET, "failed on free");
}

Test(ipc_client, unanswered_request_times_out)
{
    server_start(ANSWER_NEVER, 0);
    client_ctx_t cc = {0};
    ipc_client_t *cl = client_up(&cc);
    reply_slot_t r = {0};
    struct timeval t0;
    gettimeofday(&t0, NULL);
    cr_assert_eq(ping(cl, "patient", 200, &r), 0, "queued");
    cr_assert_eq(run_until(&r.calls, 1, 3000), 1, "callback came");
    cr_assert_eq(r.status, -ETIMEDOUT, "timed out");
    long ms = ms_between(&t0, &r.at);
    cr_assert(ms >= 190 && ms <= 700, "timeout after about 200 ms (took %ld ms)", ms);
    cr_assert_eq(sctx.requests, 1, "the server did get it");
    cr_assert(ipc_client_connected(cl), "a timeout does not drop the connection");

    /* A late answer to the expired id is ignored, not misdelivered. */
    answer(sctx.held[0].conn, sctx.held[0].id, "late");
    run_for(100);
    cr_assert_eq(r.calls, 1, "no second callback");
    ipc_client_free(cl);
    cr_assert_eq(r.calls, 1, "no callback on free for a finished request");
}

Test(ipc_client, server_restart_fails_in_flight_and_reconnects)
{
    server_start(ANSWER_NEVER, 0);
    client_ctx_t cc = {0};
    ipc_client_t *cl = client_up(&cc);

    reply_slot_t r1 = {0};
    cr_assert_eq(ping(cl, "in flight", 10000, &r1), 0, "queued");
    cr_assert_eq(run_until(&sctx.requests, 1, 2000), 1, "server holds the request");

    server_stop();
    cr_assert_eq(run_until(&r1.calls, 1, 2000), 1, "in-flight request failed");
    cr_assert_eq(r1.status, -ECONNRESET, "with -ECONNRESET");
    cr_assert_eq(run_until(&cc.downs, 1, 2000), 1, "client reported the loss");
    cr_assert(!ipc_client_connected(cl), "disconnected");

    /* Nobody listens for a while: attempts fail and back off. */
    run_for(300);
    cr_assert_eq(cc.ups, 1, "no connection without a server");

    server_start(ANSWER_NOW, 0);
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    cr_assert_eq(run_until(&cc.ups, 2, 3000), 2, "client reconnected on its own");
    gettimeofday(&t1, NULL);
    cr_assert_leq(ms_between(&t0, &t1), 2200, "within the maximum backoff");

    reply_slot_t r2 = {0};
    cr_assert_eq(ping(cl, "after restart", 2000, &r2), 0, "queued");
    cr_assert_eq(run_until(&r2.calls, 1, 2000), 1, "answered");
    cr_assert_eq(r2.status, 0, "status");
    cr_assert_str_eq(r2.role, "after restart", "reply");
    cr_assert_eq(r1.calls, 1, "the failed request was reported once");
    ipc_client_free(cl);
}

Test(ipc_client, subscriptions_survive_reconnects_and_pushes_reach_subscribers_only)
{
    server_start(ANSWER_NOW, 0);
    client_ctx_t ca = {0}, cb = {0};
    ipc_client_t *a = client_up(&ca);
    ipc_client_t *b = client_up(&cb);
    cr_assert_eq(ipc_client_subscribe(a, "naming"), 0, "a subscribes to naming");
    cr_assert_eq(ipc_client_subscribe(b, "config"), 0, "b subscribes to config");

    /* A request sent after the Subscribe is handled after it. */
    reply_slot_t ra = {0}, rb = {0};
    ping(a, "a", 2000, &ra);
    ping(b, "b", 2000, &rb);
    cr_assert_eq(run_until(&ra.calls, 1, 2000), 1, "a synced");
    cr_assert_eq(run_until(&rb.calls, 1, 2000), 1, "b synced");

    publish_event("naming", 1, 1);
    publish_event("config", 2, 1);
    publish_event("health", 3, 0);
    cr_assert_eq(run_until(&ca.pushes, 1, 2000), 1, "a got the naming push");
    cr_assert_eq(run_until(&cb.pushes, 1, 2000), 1, "b got the config push");
    cr_assert_str_eq(ca.last_topic, "naming", "a's push topic");
    cr_assert_eq(ca.last_seq, 1u, "a's push seq");
    cr_assert_str_eq(cb.last_topic, "config", "b saw only its own topic");
    cr_assert_eq(cb.last_seq, 2u, "b's push seq");

    /* Restart the server: the new one knows nothing of the subscriptions. */
    server_stop();
    cr_assert_eq(run_until(&ca.downs, 1, 2000), 1, "a lost the server");
    cr_assert_eq(run_until(&cb.downs, 1, 2000), 1, "b lost the server");
    server_start(ANSWER_NOW, 0);
    cr_assert_eq(run_until(&ca.ups, 2, 3000), 2, "a reconnected");
    cr_assert_eq(run_until(&cb.ups, 2, 3000), 2, "b reconnected");
    reply_slot_t ra2 = {0}, rb2 = {0};
    ping(a, "a", 2000, &ra2);
    ping(b, "b", 2000, &rb2);
    cr_assert_eq(run_until(&ra2.calls, 1, 2000), 1, "a synced again");
    cr_assert_eq(run_until(&rb2.calls, 1, 2000), 1, "b synced again");

    publish_event("naming", 4, 1);
    publish_event("config", 5, 1);
    cr_assert_eq(run_until(&ca.pushes, 2, 2000), 2, "a's subscription was re-sent");
    cr_assert_eq(run_until(&cb.pushes, 2, 2000), 2, "b's subscription was re-sent");
    cr_assert_eq(ca.last_seq, 4u, "a got the naming push after the restart");
    cr_assert_str_eq(cb.last_topic, "config", "b still only config");
    cr_assert_eq(cb.last_seq, 5u, "b got the config push after the restart");
    ipc_client_free(a);
    ipc_client_free(b);
}

Test(ipc_client, request_while_disconnected_fails_asynchronously)
{
    /* No server at the path at all. */
    client_ctx_t cc = {0};
    ipc_client_t *cl = ipc_client_new(base, path, "lonely client", 0, on_push, on_state, &cc);
    cr_assert_not_null(cl, "ipc_client_new without a server");
    cr_assert(!ipc_client_connected(cl), "not connected");
    reply_slot_t r = {0};
    cr_assert_eq(ping(cl, "anyone", 1000, &r), 0, "accepted for a deferred refusal");
    cr_assert_eq(r.calls, 0, "not called from inside ipc_client_request");
    cr_assert_eq(run_until(&r.calls, 1, 500), 1, "refusal delivered by the loop");
    cr_assert_eq(r.status, -ENOTCONN, "with -ENOTCONN");
    run_for(50);
    cr_assert_eq(r.calls, 1, "exactly once");
    cr_assert_eq(cc.ups + cc.downs, 0, "no state change reported");
    ipc_client_free(cl);
}

Test(ipc_client, client_started_before_server_connects_later)
{
    client_ctx_t cc = {0};
    ipc_client_t *cl = ipc_client_new(base, path, "early client", 0, on_push, on_state, &cc);
    cr_assert_not_null(cl, "ipc_client_new");
    run_for(120);
    server_start(ANSWER_NOW, 0);
    cr_assert_eq(run_until(&cc.ups, 1, 3000), 1, "connected once the server appeared");
    reply_slot_t r = {0};
    ping(cl, "hello", 2000, &r);
    cr_assert_eq(run_until(&r.calls, 1, 2000), 1, "answered");
    cr_assert_eq(r.status, 0, "status");
    ipc_client_free(cl);
}

Test(ipc_client, free_fails_pending_requests_with_econnreset)
{
    server_start(ANSWER_NEVER, 0);
    client_ctx_t cc = {0};
    ipc_client_t *cl = client_up(&cc);
    reply_slot_t r = {0};
    cr_assert_eq(ping(cl, "abandoned", 10000, &r), 0, "queued");
    cr_assert_eq(run_until(&sctx.requests, 1, 2000), 1, "server holds it");
    ipc_client_free(cl);
    cr_assert_eq(r.calls, 1, "callback ran during ipc_client_free");
    cr_assert_eq(r.status, -ECONNRESET, "with -ECONNRESET");
    cr_assert_eq(run_until(&sctx.peers_down, 1, 2000), 1, "the server saw the client go");
    cr_assert_eq(sctx.n_held, 0, "and dropped its held request");
}

Test(ipc_client, free_from_inside_a_reply_callback)
{
    server_start(ANSWER_NEVER, 0);
    client_ctx_t cc = {0};
    ipc_client_t *cl = client_up(&cc);
    reply_slot_t first = {.free_client_in_cb = true, .cl = cl}, second = {0};
    cr_assert_eq(ping(cl, "one", 10000, &first), 0, "queued");
    cr_assert_eq(ping(cl, "two", 10000, &second), 0, "queued");
    cr_assert_eq(run_until(&sctx.requests, 2, 2000), 2, "server holds both");
    answer(sctx.held[0].conn, sctx.held[0].id, "one");
    cr_assert_eq(run_until(&first.calls, 1, 2000), 1, "first answered");
    cr_assert_eq(first.status, 0, "first status");
    cr_assert_eq(second.calls, 1, "second failed by the free inside the first callback");
    cr_assert_eq(second.status, -ECONNRESET, "with -ECONNRESET");
    run_for(50);
}

Test(ipc_client, server_without_handler_answers_with_an_error)
{
    listen_fd = ipc_listen_unix(path, 4);
    cr_assert_geq(listen_fd, 0, "listen");
    srv = ipc_server_new(base, listen_fd, "mute server", 0, NULL, NULL, NULL);
    cr_assert_not_null(srv, "ipc_server_new");
    client_ctx_t cc = {0};
    ipc_client_t *cl = client_up(&cc);
    reply_slot_t r = {0};
    ping(cl, "x", 2000, &r);
    cr_assert_eq(run_until(&r.calls, 1, 2000), 1, "answered");
    cr_assert_eq(r.status, 0, "a reply");
    cr_assert_eq(r.body, LODESTAR__ENVELOPE__BODY_ERROR, "an Error body");
    cr_assert(strstr(r.role, "ping_request") != NULL, "error names the request type: '%s'", r.role);
    ipc_client_free(cl);
}

Test(ipc_client, slow_consumer_is_dropped)
{
    server_start(ANSWER_NOW, 1024);
    /* A raw peer that subscribes and then never reads. */
    int fd = ipc_connect_unix(path);
    cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
    char *topics[] = {"naming"};
    Lodestar__Subscribe sub = LODESTAR__SUBSCRIBE__INIT;
    sub.n_topics = 1;
    sub.topics = topics;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_SUBSCRIBE;
    env.subscribe = &sub;
    uint8_t *f;
    size_t len;
    cr_assert_eq(ipc_frame_encode(IPC_KIND_REQUEST, 1, &env, 0, &f, &len), 0, "encode subscribe");
    cr_assert_eq(write(fd, f, len), (ssize_t)len, "write subscribe");
    free(f);
    cr_assert_eq(run_until(&sctx.peers_up, 1, 2000), 1, "server accepted");

    char data[900];
    memset(data, 'z', sizeof data);
    Lodestar__Event ev = LODESTAR__EVENT__INIT;
    ev.topic = "naming";
    ev.data.data = (uint8_t *)data;
    ev.data.len = sizeof data;
    Lodestar__Envelope push = LODESTAR__ENVELOPE__INIT;
    push.body_case = LODESTAR__ENVELOPE__BODY_EVENT;
    push.event = &ev;
    bool subscribed = false;
    int i;
    for (i = 0; i < 5000 && sctx.peers_down == 0; i++) {
        ev.seq = (uint64_t)i;
        int n = ipc_server_publish(srv, "naming", &push);
        subscribed |= n == 1;
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    cr_assert(subscribed, "the raw peer's subscription took effect");
    cr_assert_eq(sctx.peers_down, 1, "the slow consumer was dropped (after %d pushes)", i);
    cr_assert_eq(ipc_server_conn_count(srv), 0u, "no connection left");
    close(fd);
}

Test(ipc_client, listen_refuses_a_live_socket_and_long_paths)
{
    server_start(ANSWER_NOW, 0);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "socket file exists");
    cr_assert(S_ISSOCK(st.st_mode), "it is a socket");
    cr_assert_eq(st.st_mode & 0777, 0660, "mode 0660, got %o", (unsigned)(st.st_mode & 0777));
    cr_assert_eq(ipc_listen_unix(path, 4), -EADDRINUSE, "a live listener is not replaced");
    char longp[200];
    memset(longp, 'a', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    cr_assert_eq(ipc_listen_unix(longp, 4), -ENAMETOOLONG, "path longer than sun_path");
    cr_assert_eq(ipc_connect_unix(longp), -ENAMETOOLONG, "connect to a too long path");
    char nothing[160];
    snprintf(nothing, sizeof nothing, "%s/none.sock", dir);
    int rc = ipc_connect_unix(nothing);
    cr_assert_eq(rc, -ENOENT, "connect to a missing socket: %d", rc);
    char regular[160];
    snprintf(regular, sizeof regular, "%s/file", dir);
    FILE *fp = fopen(regular, "w");
    cr_assert_not_null(fp, "create a regular file");
    fclose(fp);
    cr_assert_eq(ipc_listen_unix(regular, 4), -EEXIST, "a regular file is not replaced");
    unlink(regular);
}

Test(ipc_client, handler_may_free_the_asking_connection)
{
    server_start(ANSWER_KICK, 0);
    client_ctx_t cc = {0};
    ipc_client_t *cl = client_up(&cc);
    cr_assert_eq(run_until(&sctx.peers_up, 1, 2000), 1, "server saw the peer");
    reply_slot_t r = {0};
    cr_assert_eq(ping(cl, "kick me", 5000, &r), 0, "queued");
    cr_assert_eq(run_until(&r.calls, 1, 2000), 1, "request ended");
    cr_assert_eq(r.status, -ECONNRESET, "with -ECONNRESET");
    cr_assert_eq(sctx.peers_down, 1, "on_peer(false) once for the kicked connection");
    cr_assert_eq(ipc_server_conn_count(srv), 0u, "server forgot it");
    /* the client comes back by itself */
    cr_assert_eq(run_until(&cc.ups, 2, 3000), 2, "client reconnected");
    cr_assert_eq(run_until(&sctx.peers_up, 2, 2000), 2, "server accepted it again");
    cr_assert_eq(ipc_server_conn_count(srv), 1u, "one connection again");
    ipc_client_free(cl);
    cr_assert_eq(run_until(&sctx.peers_down, 2, 2000), 2, "and it went away on free");
}

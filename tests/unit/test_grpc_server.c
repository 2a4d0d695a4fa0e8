/*
 * test_grpc_server.c: the gRPC core wrapper (gateways/common/grpc_server.c)
 * served in-process on a listening socket the test owns, the way the
 * supervisor hands one to a gateway, and called by real gRPC clients
 * (tests/support/grpc_client.c) from a thread or from forked processes.
 *
 * The libevent loop runs on the test's main thread; client threads report
 * back through a pipe the loop watches. Forked clients are forked before
 * gRPC core is initialised in the test process, as gRPC requires.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "grpc_client.h"
#include "grpc_server.h"
#include "log.h"

#define ECHO "/lodestar.test.Echo/Echo"
#define SLOW "/lodestar.test.Echo/Slow"

/* ------------------------------------------------------------ fixture */

static struct event_base *base;
static gs_server_t *srv;
static int listen_fd = -1;
static char target[64];
static struct event *guard; /* fails the test instead of hanging */

static int drained_count;
static bool drained_clean;
static int late_reply_rc = 1;

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    cr_log_error("test timed out");
    event_base_loopbreak(base);
}

static void setup(void)
{
    log_init("test_grpc_server", LOG_LVL_WARN, NULL);
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(listen_fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(bind(listen_fd, (struct sockaddr *)&a, sizeof a) == 0, "bind: %s", strerror(errno));
    cr_assert(listen(listen_fd, 128) == 0, "listen: %s", strerror(errno));
    socklen_t sl = sizeof a;
    getsockname(listen_fd, (struct sockaddr *)&a, &sl);
    snprintf(target, sizeof target, "127.0.0.1:%d", ntohs(a.sin_port));
    base = event_base_new();
    cr_assert(base, "event_base_new");
    guard = evtimer_new(base, on_guard, NULL);
    struct timeval tv = {20, 0};
    evtimer_add(guard, &tv);
    drained_count = 0;
    drained_clean = false;
    late_reply_rc = 1;
}

static void teardown_fixture(void)
{
    if (srv)
        gs_server_free(srv);
    srv = NULL;
    if (guard)
        event_free(guard);
    guard = NULL;
    if (base)
        event_base_free(base);
    base = NULL;
    if (listen_fd >= 0)
        close(listen_fd);
    listen_fd = -1;
}

/* ------------------------------------------------------------ handlers */

static char echo_peer[128];
static int64_t echo_remaining_ms;

static void echo(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    int *count = arg;
    (*count)++;
    gs_call_peer(call, echo_peer, sizeof echo_peer);
    echo_remaining_ms = gs_call_remaining_ms(call);
    cr_assert_str_eq(gs_call_method(call), ECHO, "method seen by the handler");
    cr_assert_not(gs_call_cancelled(call), "a fresh call is not cancelled");
    cr_assert_eq(gs_reply(call, GS_OK, NULL, req, len), 0, "echo reply failed");
    cr_assert_eq(gs_reply(call, GS_OK, NULL, req, len), -EALREADY, "a second reply must be refused");
}

/* Slow: answers after the number of milliseconds the request names. */
typedef struct slow_reply {
    gs_call_t *call;
    struct event *ev;
} slow_reply_t;

static void slow_fire(evutil_socket_t fd, short what, void *arg)
{
    slow_reply_t *r = arg;
    late_reply_rc = gs_reply(r->call, GS_OK, NULL, (const uint8_t *)"late", 4);
    event_free(r->ev);
    free(r);
}

static void slow(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    char buf[16] = {0};
    memcpy(buf, req, len < sizeof buf - 1 ? len : sizeof buf - 1);
    int ms = atoi(buf);
    slow_reply_t *r = calloc(1, sizeof *r);
    r->call = call;
    r->ev = evtimer_new(base, slow_fire, r);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(r->ev, &tv);
}

static int echo_count;

static void start_server(void)
{
    char err[256] = "";
    srv = gs_server_new(base, &(gs_options_t){.name = "test grpc"}, err, sizeof err);
    cr_assert(srv, "gs_server_new: %s", err);
    cr_assert_eq(gs_server_add_unary(srv, ECHO, echo, &echo_count, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_unary(srv, SLOW, slow, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_listener(srv, listen_fd, "test-grpc", err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_start(srv, err, sizeof err), 0, "%s", err);
}

static void on_drained(gs_server_t *s, bool clean, void *arg)
{
    drained_count++;
    drained_clean = clean;
    event_base_loopbreak(base);
}

/* ------------------------------------------------------- client thread */

typedef struct client_job {
    const char *method;
    int calls;
    int timeout_ms;
    char payload[32]; /* sent as is when set, else "msg <i>" */
    int ok;           /* calls that returned status OK with the expected body */
    int last_status;
    char last_details[256];
    int last_rc;
    int done_fd;      /* written once when finished */
} client_job_t;

static void *client_thread(void *p)
{
    client_job_t *j = p;
    for (int i = 0; i < j->calls; i++) {
        char msg[32];
        int n = j->payload[0] ? snprintf(msg, sizeof msg, "%s", j->payload) : snprintf(msg, sizeof msg, "msg %d", i);
        uint8_t *resp = NULL;
        size_t rl = 0;
        int st = -1;
        char *det = NULL;
        j->last_rc = gtc_unary(target, j->method, (const uint8_t *)msg, (size_t)n, j->timeout_ms, &resp, &rl, &st,
                               &det);
        j->last_status = st;
        snprintf(j->last_details, sizeof j->last_details, "%s", det ? det : "");
        if (j->last_rc == 0 && st == 0 &&
            ((strcmp(j->method, ECHO) == 0 && rl == (size_t)n && memcmp(resp, msg, rl) == 0) ||
             (strcmp(j->method, ECHO) != 0 && rl == 4 && memcmp(resp, "late", 4) == 0)))
            j->ok++;
        free(resp);
        free(det);
    }
    ssize_t w = write(j->done_fd, "x", 1);
    (void)w;
    return NULL;
}

typedef struct running {
    pthread_t thread;
    int pipe[2];
    client_job_t job;
} running_t;

static void run_client(running_t *r, const char *method, int calls, int timeout_ms, const char *payload)
{
    memset(r, 0, sizeof *r);
    cr_assert_eq(pipe2(r->pipe, O_CLOEXEC), 0, "pipe");
    r->job.method = method;
    r->job.calls = calls;
    r->job.timeout_ms = timeout_ms;
    if (payload)
        snprintf(r->job.payload, sizeof r->job.payload, "%s", payload);
    r->job.done_fd = r->pipe[1];
    cr_assert_eq(pthread_create(&r->thread, NULL, client_thread, &r->job), 0, "pthread_create");
}

static void break_loop(evutil_socket_t fd, short what, void *arg) { event_base_loopbreak(base); }

/* Run the loop until the client thread finished, then join it. */
static void wait_client(running_t *r)
{
    event_base_once(base, r->pipe[0], EV_READ, break_loop, NULL, NULL);
    event_base_dispatch(base);
    pthread_join(r->thread, NULL);
    close(r->pipe[0]);
    close(r->pipe[1]);
}

static void start_drain_cb(evutil_socket_t fd, short what, void *arg)
{
    gs_server_drain(srv, *(int *)arg, on_drained, NULL);
}

/* ---------------------------------------------------------------- tests */

TestSuite(grpc_server, .init = setup, .fini = teardown_fixture, .timeout = 60);

Test(grpc_server, echo_unknown_and_many_sequential_calls)
{
    echo_count = 0;
    start_server();

    running_t r;
    run_client(&r, ECHO, 1, 2000, "hello");
    wait_client(&r);
    cr_assert_eq(r.job.last_rc, 0, "gtc_unary failed: %d", r.job.last_rc);
    cr_assert_eq(r.job.last_status, GS_OK, "echo status %d (%s)", r.job.last_status, r.job.last_details);
    cr_assert_eq(r.job.ok, 1, "echo body mismatch");
    cr_assert(strncmp(echo_peer, "ipv4:127.0.0.1:", 15) == 0, "peer should be the client's address, got '%s'",
              echo_peer);
    cr_assert(echo_remaining_ms > 0 && echo_remaining_ms <= 2000, "deadline left %lld ms, expected 1..2000",
              (long long)echo_remaining_ms);

    run_client(&r, "/lodestar.test.Echo/Missing", 1, 2000, "x");
    wait_client(&r);
    cr_assert_eq(r.job.last_status, GS_UNIMPLEMENTED, "unknown method answered %s, expected UNIMPLEMENTED",
                 gs_status_name(r.job.last_status));
    cr_assert(strstr(r.job.last_details, "/lodestar.test.Echo/Missing"), "details should name the method: '%s'",
              r.job.last_details);

    run_client(&r, ECHO, 200, 2000, NULL);
    wait_client(&r);
    cr_assert_eq(r.job.ok, 200, "only %d of 200 sequential calls succeeded (last status %d: %s)", r.job.ok,
                 r.job.last_status, r.job.last_details);
    cr_assert_eq(echo_count, 201, "handler ran %d times, expected 201", echo_count);

    int bound = 2000;
    event_base_once(base, -1, EV_TIMEOUT, start_drain_cb, &bound, &(struct timeval){0, 0});
    event_base_dispatch(base);
    cr_assert_eq(drained_count, 1, "drain did not complete");
    cr_assert(drained_clean, "idle server should drain without cancelling");
    cr_assert(gs_server_stopped(srv), "server should report stopped");
    cr_assert(fcntl(listen_fd, F_GETFD) >= 0, "the listening fd belongs to the caller and must stay open");
}

Test(grpc_server, concurrent_forked_clients)
{
    enum { NCLIENTS = 4, NCALLS = 25 };
    int go[2], res[2];
    cr_assert_eq(pipe2(go, O_CLOEXEC), 0, "pipe");
    cr_assert_eq(pipe2(res, O_CLOEXEC), 0, "pipe");
    pid_t pids[NCLIENTS];
    /* fork before gRPC core is initialised in this process */
    for (int i = 0; i < NCLIENTS; i++) {
        pids[i] = fork();
        cr_assert(pids[i] >= 0, "fork: %s", strerror(errno));
        if (pids[i] == 0) {
            char c;
            close(go[1]);
            if (read(go[0], &c, 1) != 1)
                _exit(100);
            int ok = 0;
            for (int k = 0; k < NCALLS; k++) {
                char msg[32];
                int n = snprintf(msg, sizeof msg, "client %d call %d", i, k);
                uint8_t *resp = NULL;
                size_t rl = 0;
                int st = -1;
                if (gtc_unary(target, ECHO, (const uint8_t *)msg, (size_t)n, 5000, &resp, &rl, &st, NULL) == 0 &&
                    st == 0 && rl == (size_t)n && memcmp(resp, msg, rl) == 0)
                    ok++;
                free(resp);
            }
            ssize_t w = write(res[1], "x", 1);
            (void)w;
            _exit(NCALLS - ok);
        }
    }
    close(go[0]);
    close(res[1]);

    echo_count = 0;
    start_server();
    for (int i = 0; i < NCLIENTS; i++)
        cr_assert_eq(write(go[1], "g", 1), 1, "go");
    close(go[1]);

    /* run the loop until every child reported (EOF on res when all exited) */
    int reported = 0;
    while (reported < NCLIENTS) {
        event_base_once(base, res[0], EV_READ, break_loop, NULL, NULL);
        event_base_dispatch(base);
        char buf[NCLIENTS];
        ssize_t n = read(res[0], buf, sizeof buf);
        cr_assert(n > 0, "a client exited without reporting");
        reported += (int)n;
    }
    close(res[0]);
    for (int i = 0; i < NCLIENTS; i++) {
        int wst;
        cr_assert_eq(waitpid(pids[i], &wst, 0), pids[i], "waitpid");
        cr_assert(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "client %d: %d of %d calls failed", i,
                  WIFEXITED(wst) ? WEXITSTATUS(wst) : -1, NCALLS);
    }
    cr_assert_eq(echo_count, NCLIENTS * NCALLS, "handler ran %d times, expected %d", echo_count, NCLIENTS * NCALLS);

    int bound = 2000;
    event_base_once(base, -1, EV_TIMEOUT, start_drain_cb, &bound, &(struct timeval){0, 0});
    event_base_dispatch(base);
    cr_assert_eq(drained_count, 1, "drain did not complete");
}

/* A call in flight when the drain starts finishes normally. */
Test(grpc_server, drain_lets_inflight_call_finish)
{
    start_server();
    running_t r;
    run_client(&r, SLOW, 1, 5000, "300");
    /* start draining once the call is in the handler */
    while (gs_server_active_calls(srv) == 0)
        event_base_loop(base, EVLOOP_ONCE);
    int bound = 3000;
    gs_server_drain(srv, bound, on_drained, NULL);
    event_base_dispatch(base); /* until drained */
    cr_assert_eq(drained_count, 1, "drain did not complete");
    cr_assert(drained_clean, "the call finished within the bound: nothing should be cancelled");
    cr_assert_eq(late_reply_rc, 0, "the deferred reply should have been sent");
    wait_client(&r);
    cr_assert_eq(r.job.last_status, GS_OK, "in-flight call got %s (%s)", gs_status_name(r.job.last_status),
                 r.job.last_details);
    cr_assert_eq(r.job.ok, 1, "in-flight call body mismatch");
}

/* A call still running at the drain bound is cancelled; its handler's late
 * reply is refused harmlessly, even after the server was freed. */
Test(grpc_server, drain_bound_cancels_and_late_reply_is_safe)
{
    start_server();
    running_t r;
    run_client(&r, SLOW, 1, 10000, "1500");
    while (gs_server_active_calls(srv) == 0)
        event_base_loop(base, EVLOOP_ONCE);
    gs_server_drain(srv, 200, on_drained, NULL);
    event_base_dispatch(base);
    cr_assert_eq(drained_count, 1, "drain did not complete");
    cr_assert_not(drained_clean, "the drain had to cancel a call");
    gs_server_free(srv);
    srv = NULL;
    wait_client(&r);
    cr_assert_neq(r.job.last_status, GS_OK, "the cancelled call must not succeed");
    /* let the handler's timer fire and reply to the orphaned call */
    struct timeval tv = {2, 0};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    cr_assert_eq(late_reply_rc, -ECANCELED, "late reply returned %d, expected -ECANCELED", late_reply_rc);
}

/* A client keeping its channel (one HTTP/2 connection) open and idle, as
 * SDKs do, must not hold the drain up until the bound: the graceful GOAWAY
 * closes it. */
typedef struct idle_client {
    gtc_channel_t *ch;
    int status;
    int done_fd;    /* written after the call */
    int release_fd; /* read before closing the channel */
} idle_client_t;

static void *idle_client_thread(void *p)
{
    idle_client_t *ic = p;
    uint8_t *resp = NULL;
    size_t rl = 0;
    ic->status = -1;
    if (gtc_channel_call(ic->ch, ECHO, (const uint8_t *)"idle", 4, 2000, &resp, &rl, &ic->status, NULL) != 0)
        ic->status = -1;
    free(resp);
    ssize_t w = write(ic->done_fd, "x", 1);
    (void)w;
    char c;
    ssize_t r = read(ic->release_fd, &c, 1);
    (void)r;
    gtc_channel_close(ic->ch);
    return NULL;
}

Test(grpc_server, drain_with_idle_open_channel_is_clean)
{
    start_server();
    int done[2], release[2];
    cr_assert_eq(pipe2(done, O_CLOEXEC), 0, "pipe");
    cr_assert_eq(pipe2(release, O_CLOEXEC), 0, "pipe");
    idle_client_t ic = {.ch = gtc_channel_open(target), .done_fd = done[1], .release_fd = release[0]};
    cr_assert(ic.ch, "gtc_channel_open");
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, idle_client_thread, &ic), 0, "pthread_create");
    event_base_once(base, done[0], EV_READ, break_loop, NULL, NULL);
    event_base_dispatch(base);
    cr_assert_eq(ic.status, GS_OK, "call on the kept channel: status %d", ic.status);

    gs_server_drain(srv, 3000, on_drained, NULL);
    event_base_dispatch(base);
    cr_assert_eq(drained_count, 1, "drain did not complete");
    cr_assert(drained_clean, "an idle open connection must be closed by GOAWAY, not cancelled at the bound");

    cr_assert_eq(write(release[1], "x", 1), 1, "release");
    pthread_join(t, NULL);
    close(done[0]);
    close(done[1]);
    close(release[0]);
    close(release[1]);
}

/* The listening socket outlives a server: a second server (a restarted
 * gateway) serves on the same fd. */
Test(grpc_server, listening_fd_survives_restart)
{
    echo_count = 0;
    start_server();
    running_t r;
    run_client(&r, ECHO, 3, 2000, NULL);
    wait_client(&r);
    cr_assert_eq(r.job.ok, 3, "first server: %d of 3 calls", r.job.ok);
    int bound = 1000;
    gs_server_drain(srv, bound, on_drained, NULL);
    event_base_dispatch(base);
    cr_assert_eq(drained_count, 1, "first drain did not complete");
    gs_server_free(srv);
    srv = NULL;

    start_server();
    run_client(&r, ECHO, 3, 2000, NULL);
    wait_client(&r);
    cr_assert_eq(r.job.ok, 3, "second server on the same fd: %d of 3 calls (last %d: %s)", r.job.ok,
                 r.job.last_status, r.job.last_details);
    gs_server_drain(srv, bound, on_drained, NULL);
    event_base_dispatch(base);
    cr_assert_eq(drained_count, 2, "second drain did not complete");
}

Test(grpc_server, registration_errors_name_the_input)
{
    char err[256] = "";
    srv = gs_server_new(base, &(gs_options_t){.name = "test grpc"}, err, sizeof err);
    cr_assert(srv, "gs_server_new: %s", err);
    cr_assert_eq(gs_server_add_unary(srv, "NoSlash", echo, NULL, err, sizeof err), -EINVAL, "bad path accepted");
    cr_assert(strstr(err, "NoSlash"), "error should name the path: %s", err);
    cr_assert_eq(gs_server_add_unary(srv, ECHO, echo, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_unary(srv, ECHO, echo, NULL, err, sizeof err), -EINVAL, "duplicate accepted");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(gs_server_add_listener(srv, fd, "not-listening", err, sizeof err), -EINVAL,
                 "a socket that does not listen was accepted");
    cr_assert(strstr(err, "not-listening"), "error should name the listener: %s", err);
    close(fd);
    /* never started: freeing must still shut gRPC core down cleanly */
}

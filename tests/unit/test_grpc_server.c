/*
 * test_grpc_server.c: the gRPC core wrapper (gateways/common/grpc_server.c)
 * served in-process on a listening socket the test owns, the way the
 * supervisor hands one to a gateway, and called by real gRPC clients
 * (tests/support/grpc_client.c) from a thread or from forked processes:
 * unary calls (message size limits, compressed requests, shared reply
 * messages, a held call whose client gave up), and streams (echo both
 * ways, half-close, server finish, client cancel, drain bound).
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
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/compression.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "grpc_client.h"
#include "grpc_server.h"
#include "log.h"

#define ECHO "/lodestar.test.Echo/Echo"
#define SLOW "/lodestar.test.Echo/Slow"
#define BIG "/lodestar.test.Echo/Big"
#define SHARED "/lodestar.test.Echo/Shared"
#define HOLD "/lodestar.test.Echo/Hold"

/* ------------------------------------------------------------ fixture */

static struct event_base *base;
static gs_server_t *srv;
static int listen_fd = -1;
static char target[64];
static struct event *guard; /* fails the test instead of hanging */
static struct event *pause_timer; /* stream tests: resumes a paused stream */

static int drained_count;
static bool drained_clean;
static int late_reply_rc = 1;

static bool guard_fired;

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    cr_log_error("test timed out");
    guard_fired = true;
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
    guard_fired = false;
    late_reply_rc = 1;
}

static void teardown_fixture(void)
{
    if (pause_timer)
        event_free(pause_timer);
    pause_timer = NULL;
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

/* Big: answers as many bytes ('b') as the request names. */
static void big(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    char buf[16] = {0};
    memcpy(buf, req, len < sizeof buf - 1 ? len : sizeof buf - 1);
    size_t n = (size_t)atoi(buf);
    uint8_t *out = malloc(n ? n : 1);
    memset(out, 'b', n);
    gs_reply(call, GS_OK, NULL, out, n);
    free(out);
}

/* Shared: answers with one message built once for all calls (every third
 * call gets a message of its own, freed right after the reply). */
static gs_msg_t *shared_msg;
static int shared_count;

static void shared(gs_call_t *call, const uint8_t *req, size_t len, void *arg)
{
    if (++shared_count % 3 == 0) {
        gs_msg_t *own = gs_msg_new((const uint8_t *)"shared answer", 13);
        cr_assert_eq(gs_reply_msg(call, own), 0, "reply with a message of its own");
        gs_msg_free(own); /* the reply keeps its reference */
        return;
    }
    cr_assert_eq(gs_reply_msg(call, shared_msg), 0, "reply with the shared message");
    cr_assert_eq(gs_reply_msg(call, shared_msg), -EALREADY, "a second reply must be refused");
}

/* Hold: keeps the call without answering (the test answers it). */
static gs_call_t *held_call;

static void hold(gs_call_t *call, const uint8_t *req, size_t len, void *arg) { held_call = call; }

static void start_server_max(uint32_t max_message_bytes)
{
    char err[256] = "";
    srv = gs_server_new(base, &(gs_options_t){.name = "test grpc", .max_message_bytes = max_message_bytes}, err,
                        sizeof err);
    cr_assert(srv, "gs_server_new: %s", err);
    cr_assert_eq(gs_server_add_unary(srv, ECHO, echo, &echo_count, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_unary(srv, SLOW, slow, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_unary(srv, BIG, big, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_unary(srv, SHARED, shared, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_unary(srv, HOLD, hold, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_listener(srv, listen_fd, "test-grpc", err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_start(srv, err, sizeof err), 0, "%s", err);
}

static void start_server(void) { start_server_max(0); }

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
    char payload[160]; /* sent as is when set, else "msg <i>" */
    int ok;           /* calls that returned status OK with the expected body */
    int last_status;
    char last_details[256];
    int last_rc;
    int done_fd;      /* written once when finished */
    const char *expect; /* the answer expected when not ECHO's or Slow's */
} client_job_t;

static void *client_thread(void *p)
{
    client_job_t *j = p;
    for (int i = 0; i < j->calls; i++) {
        char msg[160];
        int n = j->payload[0] ? snprintf(msg, sizeof msg, "%s", j->payload) : snprintf(msg, sizeof msg, "msg %d", i);
        uint8_t *resp = NULL;
        size_t rl = 0;
        int st = -1;
        char *det = NULL;
        j->last_rc = gtc_unary(target, j->method, (const uint8_t *)msg, (size_t)n, j->timeout_ms, &resp, &rl, &st,
                               &det);
        j->last_status = st;
        snprintf(j->last_details, sizeof j->last_details, "%s", det ? det : "");
        const char *want = j->expect ? j->expect : "late";
        if (j->last_rc == 0 && st == 0 &&
            ((strcmp(j->method, ECHO) == 0 && rl == (size_t)n && memcmp(resp, msg, rl) == 0) ||
             (strcmp(j->method, ECHO) != 0 && rl == strlen(want) && memcmp(resp, want, rl) == 0)))
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

static void run_client_expect(running_t *r, const char *method, int calls, int timeout_ms, const char *payload,
                              const char *expect)
{
    memset(r, 0, sizeof *r);
    r->job.expect = expect;
    cr_assert_eq(pipe2(r->pipe, O_CLOEXEC), 0, "pipe");
    r->job.method = method;
    r->job.calls = calls;
    r->job.timeout_ms = timeout_ms;
    if (payload)
        snprintf(r->job.payload, sizeof r->job.payload, "%s", payload);
    r->job.done_fd = r->pipe[1];
    cr_assert_eq(pthread_create(&r->thread, NULL, client_thread, &r->job), 0, "pthread_create");
}

static void run_client(running_t *r, const char *method, int calls, int timeout_ms, const char *payload)
{
    run_client_expect(r, method, calls, timeout_ms, payload, NULL);
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
    /* the deadline crosses clocks (client realtime, server monotonic), so
     * allow a few milliseconds of conversion error above the 2000 */
    cr_assert(echo_remaining_ms > 0 && echo_remaining_ms <= 2050, "deadline left %lld ms, expected 1..2050",
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

/* Messages above max_message_bytes are refused both ways, and nothing else
 * suffers from it. */
Test(grpc_server, message_size_limit_both_ways)
{
    echo_count = 0;
    start_server_max(64);
    running_t r;
    char big_req[101];
    memset(big_req, 'q', 100);
    big_req[100] = '\0';
    run_client(&r, ECHO, 1, 2000, big_req);
    wait_client(&r);
    cr_assert_eq(r.job.last_status, GS_RESOURCE_EXHAUSTED, "a 100-byte request to a 64-byte server: %s (%s)",
                 gs_status_name(r.job.last_status), r.job.last_details);
    cr_assert_eq(echo_count, 0, "the handler must not see an oversized request");

    run_client(&r, BIG, 1, 2000, "100");
    wait_client(&r);
    cr_assert_eq(r.job.last_status, GS_RESOURCE_EXHAUSTED, "a 100-byte answer from a 64-byte server: %s (%s)",
                 gs_status_name(r.job.last_status), r.job.last_details);

    run_client(&r, ECHO, 3, 2000, NULL);
    wait_client(&r);
    cr_assert_eq(r.job.ok, 3, "small calls after refused ones: %d of 3 (%s)", r.job.ok, r.job.last_details);
}

/* A client that compresses its requests (grpc-encoding: gzip) is
 * understood: the handler sees the plain bytes. */
typedef struct gzip_job {
    uint8_t req[4096];
    int status;
    bool same;
    int done_fd;
} gzip_job_t;

static void *gzip_client_thread(void *p)
{
    gzip_job_t *j = p;
    grpc_init();
    grpc_arg arg = {.type = GRPC_ARG_INTEGER,
                    .key = (char *)GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM,
                    .value.integer = GRPC_COMPRESS_GZIP};
    grpc_channel_args ca = {1, &arg};
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, cr, &ca);
    grpc_channel_credentials_release(cr);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = grpc_channel_create_call(
        ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, grpc_slice_from_static_string(ECHO), NULL,
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(5000, GPR_TIMESPAN)), NULL);
    grpc_slice body = grpc_slice_from_copied_buffer((const char *)j->req, sizeof j->req);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_metadata_array imd, tmd;
    grpc_metadata_array_init(&imd);
    grpc_metadata_array_init(&tmd);
    grpc_byte_buffer *recv = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &imd;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &tmd;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    int tag = 1;
    j->status = -1;
    if (grpc_call_start_batch(call, ops, 6, &tag, NULL) == GRPC_CALL_OK &&
        grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type == GRPC_OP_COMPLETE) {
        j->status = (int)status;
        if (recv) {
            grpc_byte_buffer_reader rd;
            if (grpc_byte_buffer_reader_init(&rd, recv)) {
                grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
                j->same = GRPC_SLICE_LENGTH(all) == sizeof j->req &&
                          memcmp(GRPC_SLICE_START_PTR(all), j->req, sizeof j->req) == 0;
                grpc_slice_unref(all);
                grpc_byte_buffer_reader_destroy(&rd);
            }
        }
    }
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_metadata_array_destroy(&imd);
    grpc_metadata_array_destroy(&tmd);
    grpc_slice_unref(details);
    grpc_call_unref(call);
    grpc_channel_destroy(ch);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    ssize_t w = write(j->done_fd, "x", 1);
    (void)w;
    return NULL;
}

Test(grpc_server, compressed_request_is_decoded)
{
    echo_count = 0;
    start_server();
    static gzip_job_t j;
    for (size_t i = 0; i < sizeof j.req; i++)
        j.req[i] = (uint8_t)('a' + (i / 64) % 4); /* compressible */
    int pfd[2];
    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0, "pipe");
    j.done_fd = pfd[1];
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, gzip_client_thread, &j), 0, "pthread_create");
    event_base_once(base, pfd[0], EV_READ, break_loop, NULL, NULL);
    event_base_dispatch(base);
    pthread_join(t, NULL);
    close(pfd[0]);
    close(pfd[1]);
    cr_assert_eq(j.status, GS_OK, "gzip-compressed echo answered %d", j.status);
    cr_assert_eq(echo_count, 1, "the handler should have run once");
    cr_assert(j.same, "the echo must carry the uncompressed request back");
}

/* One message answers many calls, by reference; a message freed right
 * after its reply still goes out whole. */
Test(grpc_server, shared_reply_message)
{
    start_server();
    shared_msg = gs_msg_new((const uint8_t *)"shared answer", 13);
    cr_assert(shared_msg, "gs_msg_new");
    shared_count = 0;
    running_t r;
    run_client_expect(&r, SHARED, 30, 2000, NULL, "shared answer");
    wait_client(&r);
    cr_assert_eq(r.job.ok, 30, "%d of 30 calls got the shared answer (last status %d: %s)", r.job.ok,
                 r.job.last_status, r.job.last_details);
    gs_msg_free(shared_msg);
    shared_msg = NULL;
    cr_assert_eq(gs_reply_msg(NULL, NULL), -EINVAL, "no message, no reply");
}

/* A unary call a handler holds has nothing outstanding in gRPC core: its
 * client giving up is learnt only when the reply goes out, which is then
 * dropped harmlessly, and the call is released. */
Test(grpc_server, held_unary_call_learns_of_cancel_at_reply)
{
    start_server();
    held_call = NULL;
    running_t r;
    run_client(&r, HOLD, 1, 300, NULL);
    wait_client(&r);
    cr_assert_eq(r.job.last_status, GS_DEADLINE_EXCEEDED, "the client gave up: %s",
                 gs_status_name(r.job.last_status));
    cr_assert(held_call, "the handler holds the call");
    struct timeval tv = {0, 200 * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    cr_assert_not(gs_call_cancelled(held_call), "nothing tells a held unary call of the cancel before its reply");
    cr_assert_eq(gs_server_active_calls(srv), 1, "the call is still held");
    cr_assert_eq(gs_reply(held_call, GS_OK, NULL, (const uint8_t *)"late", 4), 0, "the reply goes out");
    /* released once the reply's batch failed (by either thread) */
    for (int i = 0; i < 500 && gs_server_active_calls(srv) > 0; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(10 * 1000);
    }
    cr_assert_eq(gs_server_active_calls(srv), 0, "the call is released once its reply failed");
    int bound = 2000;
    event_base_once(base, -1, EV_TIMEOUT, start_drain_cb, &bound, &(struct timeval){0, 0});
    event_base_dispatch(base);
    cr_assert_eq(drained_count, 1, "drain did not complete");
    cr_assert(drained_clean, "nothing was left to cancel");
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

/* ------------------------------------------------------------ streams */

#define STREAM "/lodestar.test.Echo/Stream"
#define FAST "/lodestar.test.Echo/Fast" /* the same stream, handled on the completion-queue thread */

/* Server side of the echo stream: echoes every message; "finish" ends the
 * call with FAILED_PRECONDITION, "burst N" sends N numbered messages; on
 * the client's half-close it says "bye" and finishes OK. */
typedef struct stream_stats {
    int opened, messages, half_closes, done;
    bool done_cancelled;
    int send_after_done_rc;
    int finish_twice_rc;
} stream_stats_t;

static stream_stats_t sst;
static gs_call_t *pause_call;

static void on_pause_timer(evutil_socket_t fd, short what, void *arg)
{
    sst.messages += 1000; /* marks that the timer ran before the next message */
    cr_assert_eq(gs_stream_send(pause_call, (const uint8_t *)"resumed", 7), 0, "resumed");
    gs_stream_resume(pause_call);
}

static void st_open(gs_call_t *call, void *arg)
{
    sst.opened++;
    gs_call_set_user(call, &sst);
    cr_assert_str_eq(gs_call_method(call), STREAM, "method seen by on_open");
}

static void st_message(gs_call_t *call, const uint8_t *msg, size_t len, void *arg)
{
    cr_assert_eq(gs_call_user(call), &sst, "per-stream pointer kept with the call");
    sst.messages++;
    char buf[64] = {0};
    memcpy(buf, msg, len < sizeof buf - 1 ? len : sizeof buf - 1);
    if (strcmp(buf, "finish") == 0) {
        cr_assert_eq(gs_stream_finish(call, GS_FAILED_PRECONDITION, "finished by server"), 0, "finish");
        sst.finish_twice_rc = gs_stream_finish(call, GS_OK, NULL);
        return;
    }
    if (strcmp(buf, "pause") == 0) {
        /* stop reading; a timer resumes after answering "resumed" */
        gs_stream_pause(call);
        pause_call = call;
        struct timeval tv = {0, 200 * 1000};
        evtimer_add(pause_timer, &tv);
        return;
    }
    if (strncmp(buf, "burst ", 6) == 0) {
        int n = atoi(buf + 6);
        for (int i = 0; i < n; i++) {
            char out[32];
            int k = snprintf(out, sizeof out, "burst %d", i);
            cr_assert_eq(gs_stream_send(call, (const uint8_t *)out, (size_t)k), 0, "burst send %d", i);
        }
        return;
    }
    cr_assert_eq(gs_stream_send(call, msg, len), 0, "echo send");
}

static void st_half_close(gs_call_t *call, void *arg)
{
    sst.half_closes++;
    cr_assert(gs_stream_half_closed(call), "half-closed flag");
    cr_assert_eq(gs_stream_send(call, (const uint8_t *)"bye", 3), 0, "bye");
    cr_assert_eq(gs_stream_finish(call, GS_OK, NULL), 0, "finish after half-close");
}

static void st_done(gs_call_t *call, bool cancelled, void *arg)
{
    sst.done++;
    sst.done_cancelled = cancelled;
    sst.send_after_done_rc = gs_stream_send(call, (const uint8_t *)"late", 4);
}

static void start_stream_server(void)
{
    memset(&sst, 0, sizeof sst);
    pause_call = NULL;
    if (!pause_timer)
        pause_timer = evtimer_new(base, on_pause_timer, NULL);
    char err[256] = "";
    srv = gs_server_new(base, &(gs_options_t){.name = "test grpc"}, err, sizeof err);
    cr_assert(srv, "gs_server_new: %s", err);
    gs_stream_handlers_t h = {
        .on_open = st_open, .on_message = st_message, .on_half_close = st_half_close, .on_done = st_done};
    cr_assert_eq(gs_server_add_stream(srv, STREAM, &h, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_unary(srv, ECHO, echo, &echo_count, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_listener(srv, listen_fd, "test-grpc", err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_start(srv, err, sizeof err), 0, "%s", err);
}

/* What the client thread did, checked on the main thread afterwards. */
enum stream_script { SCRIPT_ECHO_MANY, SCRIPT_SERVER_FINISH, SCRIPT_CANCEL, SCRIPT_IDLE, SCRIPT_PAUSE };

typedef struct stream_job {
    enum stream_script script;
    const char *method; /* STREAM or FAST */
    int done_fd;
    int release_fd;     /* SCRIPT_IDLE: wait for this before closing */
    char failure[256];  /* first thing that went wrong, "" when all fine */
    int echoed, burst, status;
    char details[128];
} stream_job_t;

#define JOB_FAIL(j, ...)                                                                                        \
    do {                                                                                                        \
        if (!(j)->failure[0])                                                                                   \
            snprintf((j)->failure, sizeof (j)->failure, __VA_ARGS__);                                          \
    } while (0)

static int expect_msg(stream_job_t *j, gtc_stream_t *s, const char *want)
{
    uint8_t *m = NULL;
    size_t n = 0;
    int rc = gtc_stream_recv(s, &m, &n, 3000);
    int ok = rc == 0 && n == strlen(want) && memcmp(m, want, n) == 0;
    if (!ok)
        JOB_FAIL(j, "expected '%s', recv rc %d got %zu bytes '%.*s'", want, rc, n, (int)n, m ? (char *)m : "");
    free(m);
    return ok;
}

static void *stream_client_thread(void *p)
{
    stream_job_t *j = p;
    gtc_channel_t *ch = gtc_channel_open(target);
    gtc_stream_t *s = gtc_stream_open(ch, j->method, 10000);
    if (!s) {
        JOB_FAIL(j, "gtc_stream_open failed");
        goto out;
    }
    char msg[32];
    switch (j->script) {
    case SCRIPT_ECHO_MANY:
        /* ping-pong */
        for (int i = 0; i < 200; i++) {
            int n = snprintf(msg, sizeof msg, "msg %d", i);
            if (gtc_stream_send(s, (const uint8_t *)msg, (size_t)n, 3000) != 0) {
                JOB_FAIL(j, "send %d failed", i);
                break;
            }
            if (!expect_msg(j, s, msg))
                break;
            j->echoed++;
        }
        /* pipelined: many in flight both ways */
        for (int i = 0; i < 50; i++) {
            int n = snprintf(msg, sizeof msg, "pipe %d", i);
            if (gtc_stream_send(s, (const uint8_t *)msg, (size_t)n, 3000) != 0)
                JOB_FAIL(j, "pipelined send %d failed", i);
        }
        for (int i = 0; i < 50; i++) {
            snprintf(msg, sizeof msg, "pipe %d", i);
            if (expect_msg(j, s, msg))
                j->echoed++;
        }
        /* more answers than requests, beyond the server's queue bound */
        if (gtc_stream_send(s, (const uint8_t *)"burst 300", 9, 3000) != 0)
            JOB_FAIL(j, "burst request failed");
        for (int i = 0; i < 300; i++) {
            snprintf(msg, sizeof msg, "burst %d", i);
            if (expect_msg(j, s, msg))
                j->burst++;
        }
        if (gtc_stream_half_close(s, 3000) != 0)
            JOB_FAIL(j, "half-close failed");
        expect_msg(j, s, "bye");
        {
            uint8_t *m = NULL;
            size_t n = 0;
            int rc = gtc_stream_recv(s, &m, &n, 3000);
            if (rc != 1)
                JOB_FAIL(j, "after bye: recv rc %d, expected the end of the stream", rc);
            free(m);
        }
        break;
    case SCRIPT_SERVER_FINISH: {
        if (gtc_stream_send(s, (const uint8_t *)"hello", 5, 3000) != 0)
            JOB_FAIL(j, "send failed");
        expect_msg(j, s, "hello");
        if (gtc_stream_send(s, (const uint8_t *)"finish", 6, 3000) != 0)
            JOB_FAIL(j, "send finish failed");
        uint8_t *m = NULL;
        size_t n = 0;
        int rc = gtc_stream_recv(s, &m, &n, 3000);
        if (rc != 1)
            JOB_FAIL(j, "after finish: recv rc %d, expected the end of the stream", rc);
        free(m);
        break;
    }
    case SCRIPT_CANCEL:
        if (gtc_stream_send(s, (const uint8_t *)"one", 3, 3000) != 0)
            JOB_FAIL(j, "send failed");
        expect_msg(j, s, "one");
        gtc_stream_cancel(s);
        break;
    case SCRIPT_PAUSE:
        /* "after" is sent while the server does not read: its echo must come
         * after the server resumed */
        if (gtc_stream_send(s, (const uint8_t *)"pause", 5, 3000) != 0 ||
            gtc_stream_send(s, (const uint8_t *)"after", 5, 3000) != 0)
            JOB_FAIL(j, "send failed");
        expect_msg(j, s, "resumed");
        expect_msg(j, s, "after");
        if (gtc_stream_half_close(s, 3000) != 0)
            JOB_FAIL(j, "half-close failed");
        expect_msg(j, s, "bye");
        break;
    case SCRIPT_IDLE:
        if (gtc_stream_send(s, (const uint8_t *)"idle", 4, 3000) != 0)
            JOB_FAIL(j, "send failed");
        expect_msg(j, s, "idle");
        break;
    }
    if (j->script == SCRIPT_IDLE) {
        ssize_t w = write(j->done_fd, "x", 1);
        (void)w;
        char c;
        ssize_t r = read(j->release_fd, &c, 1);
        (void)r;
    }
    char *det = NULL;
    j->status = -1;
    if (gtc_stream_status(s, 5000, &j->status, &det) != 0)
        JOB_FAIL(j, "no final status within 5 s");
    snprintf(j->details, sizeof j->details, "%s", det ? det : "");
    free(det);
    gtc_stream_close(s);
out:
    gtc_channel_close(ch);
    if (j->script != SCRIPT_IDLE) {
        ssize_t w = write(j->done_fd, "x", 1);
        (void)w;
    }
    return NULL;
}

typedef struct stream_run {
    pthread_t thread;
    int pipe[2];
    int release[2];
    stream_job_t job;
} stream_run_t;

static void run_stream_client(stream_run_t *r, enum stream_script script)
{
    memset(r, 0, sizeof *r);
    cr_assert_eq(pipe2(r->pipe, O_CLOEXEC), 0, "pipe");
    cr_assert_eq(pipe2(r->release, O_CLOEXEC), 0, "pipe");
    r->job.script = script;
    r->job.method = STREAM;
    r->job.done_fd = r->pipe[1];
    r->job.release_fd = r->release[0];
    cr_assert_eq(pthread_create(&r->thread, NULL, stream_client_thread, &r->job), 0, "pthread_create");
}

/* Run the loop until the client thread wrote its byte. */
static void wait_stream_signal(stream_run_t *r)
{
    event_base_once(base, r->pipe[0], EV_READ, break_loop, NULL, NULL);
    event_base_dispatch(base);
    char c;
    ssize_t n = read(r->pipe[0], &c, 1);
    (void)n;
}

static void join_stream_client(stream_run_t *r)
{
    pthread_join(r->thread, NULL);
    close(r->pipe[0]);
    close(r->pipe[1]);
    close(r->release[0]);
    close(r->release[1]);
}

/* Run the loop until the server saw the stream end. */
static void wait_stream_done(void)
{
    while (sst.done == 0 && !guard_fired && event_base_loop(base, EVLOOP_ONCE) == 0)
        ;
}

Test(grpc_server, stream_echo_both_ways_half_close)
{
    start_stream_server();
    stream_run_t r;
    run_stream_client(&r, SCRIPT_ECHO_MANY);
    wait_stream_signal(&r);
    join_stream_client(&r);
    wait_stream_done();
    cr_assert_str_empty(r.job.failure, "client: %s", r.job.failure);
    cr_assert_eq(r.job.echoed, 250, "echoed %d of 250 messages", r.job.echoed);
    cr_assert_eq(r.job.burst, 300, "received %d of 300 burst messages", r.job.burst);
    cr_assert_eq(r.job.status, GS_OK, "final status %s (%s)", gs_status_name(r.job.status), r.job.details);
    cr_assert_eq(sst.opened, 1, "on_open ran %d times", sst.opened);
    cr_assert_eq(sst.messages, 251, "on_message ran %d times, expected 251", sst.messages);
    cr_assert_eq(sst.half_closes, 1, "on_half_close ran %d times", sst.half_closes);
    cr_assert_eq(sst.done, 1, "on_done ran %d times", sst.done);
    cr_assert_not(sst.done_cancelled, "a stream we finished is not cancelled");
    cr_assert_eq(sst.send_after_done_rc, -ECANCELED, "send inside on_done returned %d", sst.send_after_done_rc);
    cr_assert_eq(gs_server_active_calls(srv), 0, "no call left");
}

Test(grpc_server, stream_server_finish)
{
    start_stream_server();
    stream_run_t r;
    run_stream_client(&r, SCRIPT_SERVER_FINISH);
    wait_stream_signal(&r);
    join_stream_client(&r);
    wait_stream_done();
    cr_assert_str_empty(r.job.failure, "client: %s", r.job.failure);
    cr_assert_eq(r.job.status, GS_FAILED_PRECONDITION, "final status %s (%s)", gs_status_name(r.job.status),
                 r.job.details);
    cr_assert_str_eq(r.job.details, "finished by server", "status details");
    cr_assert_eq(sst.finish_twice_rc, -EALREADY, "a second finish returned %d", sst.finish_twice_rc);
    cr_assert_eq(sst.half_closes, 0, "the client never half-closed");
    cr_assert_eq(sst.done, 1, "on_done ran %d times", sst.done);
    cr_assert_not(sst.done_cancelled, "finished by us, not cancelled");
}

Test(grpc_server, stream_client_cancel)
{
    start_stream_server();
    stream_run_t r;
    run_stream_client(&r, SCRIPT_CANCEL);
    wait_stream_signal(&r);
    join_stream_client(&r);
    wait_stream_done();
    cr_assert_str_empty(r.job.failure, "client: %s", r.job.failure);
    cr_assert_eq(r.job.status, GS_CANCELLED, "client's final status %s", gs_status_name(r.job.status));
    cr_assert_eq(sst.done, 1, "on_done ran %d times", sst.done);
    cr_assert(sst.done_cancelled, "the server must see the stream cancelled");
    /* gRPC core ends the client's messages on a cancel too, so on_half_close
     * may or may not have run first; what counts is on_done's verdict */
    cr_assert_leq(sst.half_closes, 1, "on_half_close ran %d times", sst.half_closes);
    /* unary calls still work on the same server */
    running_t u;
    echo_count = 0;
    run_client(&u, ECHO, 3, 2000, NULL);
    wait_client(&u);
    cr_assert_eq(u.job.ok, 3, "unary after a cancelled stream: %d of 3", u.job.ok);
}

/* An idle open stream holds the drain until the bound, then is cancelled. */
Test(grpc_server, drain_cancels_open_stream_at_bound)
{
    start_stream_server();
    stream_run_t r;
    run_stream_client(&r, SCRIPT_IDLE);
    wait_stream_signal(&r); /* the stream is open and answered once */
    long long t0 = 0;
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t0 = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
    }
    gs_server_drain(srv, 300, on_drained, NULL);
    event_base_dispatch(base);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long took = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 - t0;
    cr_assert_eq(drained_count, 1, "drain did not complete");
    cr_assert_not(drained_clean, "the open stream had to be cancelled");
    cr_assert(took >= 250, "the drain ended after %lld ms, before its bound", took);
    cr_assert_eq(sst.done, 1, "on_done ran %d times", sst.done);
    cr_assert(sst.done_cancelled, "the stream was cancelled by the drain");
    cr_assert_eq(write(r.release[1], "x", 1), 1, "release");
    join_stream_client(&r);
    cr_assert_str_empty(r.job.failure, "client: %s", r.job.failure);
    cr_assert_neq(r.job.status, GS_OK, "a cancelled stream must not end OK");
}

Test(grpc_server, stream_registration_and_misuse)
{
    char err[256] = "";
    srv = gs_server_new(base, &(gs_options_t){.name = "test grpc"}, err, sizeof err);
    cr_assert(srv, "gs_server_new: %s", err);
    gs_stream_handlers_t none = {0};
    cr_assert_eq(gs_server_add_stream(srv, STREAM, &none, NULL, err, sizeof err), -EINVAL,
                 "a stream without on_message was accepted");
    cr_assert(strstr(err, STREAM), "error should name the method: %s", err);
    gs_stream_handlers_t h = {.on_message = st_message};
    cr_assert_eq(gs_server_add_stream(srv, STREAM, &h, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_unary(srv, STREAM, echo, NULL, err, sizeof err), -EINVAL,
                 "the same path as unary and stream");
    cr_assert_eq(gs_stream_send(NULL, (const uint8_t *)"x", 1), -EINVAL, "send on no call");
}

Test(grpc_server, stream_pause_holds_reading)
{
    start_stream_server();
    stream_run_t r;
    run_stream_client(&r, SCRIPT_PAUSE);
    wait_stream_signal(&r);
    join_stream_client(&r);
    wait_stream_done();
    cr_assert_str_empty(r.job.failure, "client: %s", r.job.failure);
    cr_assert_eq(r.job.status, GS_OK, "final status %s", gs_status_name(r.job.status));
    cr_assert_eq(sst.messages, 1002, "two messages around one resume, got %d", sst.messages);
}

/* ----------------------------------------- streams on the gRPC thread */

/* The FAST method's handlers run on the completion-queue thread: they
 * record what happened (checked on the main thread afterwards) and answer
 * like st_*: echo, "burst N", "finish", "bye" on half-close. */
typedef struct fast_stats {
    pthread_mutex_t mu;
    int opened, messages, half_closes, done;
    bool done_cancelled;
    bool on_main_thread; /* some handler ran on the test's thread */
    int send_failures;
} fast_stats_t;

static fast_stats_t fst = {.mu = PTHREAD_MUTEX_INITIALIZER};
static pthread_t main_thread;

static void fast_note(int *counter)
{
    pthread_mutex_lock(&fst.mu);
    (*counter)++;
    if (pthread_equal(pthread_self(), main_thread))
        fst.on_main_thread = true;
    pthread_mutex_unlock(&fst.mu);
}

static void fast_open(gs_call_t *call, void *arg) { fast_note(&fst.opened); }

static void fast_message(gs_call_t *call, const uint8_t *msg, size_t len, void *arg)
{
    fast_note(&fst.messages);
    char buf[64] = {0};
    memcpy(buf, msg, len < sizeof buf - 1 ? len : sizeof buf - 1);
    int rc = 0;
    if (strcmp(buf, "finish") == 0) {
        rc = gs_stream_finish(call, GS_FAILED_PRECONDITION, "finished by server");
    } else if (strncmp(buf, "burst ", 6) == 0) {
        for (int i = 0, n = atoi(buf + 6); i < n && rc == 0; i++) {
            char out[32];
            int k = snprintf(out, sizeof out, "burst %d", i);
            rc = gs_stream_send(call, (const uint8_t *)out, (size_t)k);
        }
    } else {
        rc = gs_stream_send(call, msg, len);
    }
    if (rc != 0)
        fast_note(&fst.send_failures);
}

static void fast_half_close(gs_call_t *call, void *arg)
{
    fast_note(&fst.half_closes);
    if (gs_stream_send(call, (const uint8_t *)"bye", 3) != 0 || gs_stream_finish(call, GS_OK, NULL) != 0)
        fast_note(&fst.send_failures);
}

static void fast_done(gs_call_t *call, bool cancelled, void *arg)
{
    pthread_mutex_lock(&fst.mu);
    fst.done_cancelled = cancelled;
    pthread_mutex_unlock(&fst.mu);
    fast_note(&fst.done);
}

static int fast_done_count(void)
{
    pthread_mutex_lock(&fst.mu);
    int n = fst.done;
    pthread_mutex_unlock(&fst.mu);
    return n;
}

static void start_fast_server(void)
{
    pthread_mutex_lock(&fst.mu);
    fst.opened = fst.messages = fst.half_closes = fst.done = fst.send_failures = 0;
    fst.done_cancelled = fst.on_main_thread = false;
    pthread_mutex_unlock(&fst.mu);
    main_thread = pthread_self();
    char err[256] = "";
    srv = gs_server_new(base, &(gs_options_t){.name = "test grpc"}, err, sizeof err);
    cr_assert(srv, "gs_server_new: %s", err);
    gs_stream_handlers_t h = {.on_open = fast_open,
                              .on_message = fast_message,
                              .on_half_close = fast_half_close,
                              .on_done = fast_done,
                              .on_cq_thread = true};
    cr_assert_eq(gs_server_add_stream(srv, FAST, &h, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_unary(srv, ECHO, echo, &echo_count, err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_add_listener(srv, listen_fd, "test-grpc", err, sizeof err), 0, "%s", err);
    cr_assert_eq(gs_server_start(srv, err, sizeof err), 0, "%s", err);
}

Test(grpc_server, cq_thread_stream_echo_both_ways_half_close)
{
    start_fast_server();
    stream_run_t r;
    memset(&r, 0, sizeof r);
    cr_assert_eq(pipe2(r.pipe, O_CLOEXEC), 0, "pipe");
    cr_assert_eq(pipe2(r.release, O_CLOEXEC), 0, "pipe");
    r.job = (stream_job_t){.script = SCRIPT_ECHO_MANY, .method = FAST, .done_fd = r.pipe[1], .release_fd = r.release[0]};
    cr_assert_eq(pthread_create(&r.thread, NULL, stream_client_thread, &r.job), 0, "pthread_create");
    wait_stream_signal(&r);
    join_stream_client(&r);
    for (int i = 0; i < 500 && fast_done_count() == 0; i++)
        usleep(10 * 1000);
    cr_assert_str_empty(r.job.failure, "client: %s", r.job.failure);
    cr_assert_eq(r.job.echoed, 250, "echoed %d of 250 messages", r.job.echoed);
    cr_assert_eq(r.job.burst, 300, "received %d of 300 burst messages", r.job.burst);
    cr_assert_eq(r.job.status, GS_OK, "final status %s (%s)", gs_status_name(r.job.status), r.job.details);
    pthread_mutex_lock(&fst.mu);
    fast_stats_t f = fst;
    pthread_mutex_unlock(&fst.mu);
    cr_assert_eq(f.opened, 1, "on_open ran %d times", f.opened);
    cr_assert_eq(f.messages, 251, "on_message ran %d times, expected 251", f.messages);
    cr_assert_eq(f.half_closes, 1, "on_half_close ran %d times", f.half_closes);
    cr_assert_eq(f.done, 1, "on_done ran %d times", f.done);
    cr_assert_not(f.done_cancelled, "a stream we finished is not cancelled");
    cr_assert_eq(f.send_failures, 0, "%d sends or finishes failed", f.send_failures);
    cr_assert_not(f.on_main_thread, "on_cq_thread handlers ran on the event loop's thread");
    cr_assert_eq(gs_server_active_calls(srv), 0, "no call left");
    /* unary calls on the same server still go through the event loop */
    running_t u;
    echo_count = 0;
    run_client(&u, ECHO, 3, 2000, NULL);
    wait_client(&u);
    cr_assert_eq(u.job.ok, 3, "unary next to a fast stream: %d of 3", u.job.ok);
}

/* A drain does not wait for an idle stream served on the gRPC thread: it is
 * ended at once with UNAVAILABLE, so its client reconnects elsewhere. */
Test(grpc_server, drain_ends_cq_thread_stream_at_once)
{
    start_fast_server();
    stream_run_t r;
    memset(&r, 0, sizeof r);
    cr_assert_eq(pipe2(r.pipe, O_CLOEXEC), 0, "pipe");
    cr_assert_eq(pipe2(r.release, O_CLOEXEC), 0, "pipe");
    r.job = (stream_job_t){.script = SCRIPT_IDLE, .method = FAST, .done_fd = r.pipe[1], .release_fd = r.release[0]};
    cr_assert_eq(pthread_create(&r.thread, NULL, stream_client_thread, &r.job), 0, "pthread_create");
    wait_stream_signal(&r); /* the stream is open and answered once */
    gs_server_drain(srv, 20000, on_drained, NULL);
    event_base_dispatch(base);
    cr_assert_eq(drained_count, 1, "drain did not complete");
    cr_assert(drained_clean, "nothing had to wait for the drain bound");
    cr_assert_eq(fast_done_count(), 1, "on_done ran %d times", fast_done_count());
    cr_assert(fst.done_cancelled, "the stream was ended by the drain, not finished");
    cr_assert_eq(write(r.release[1], "x", 1), 1, "release");
    join_stream_client(&r);
    cr_assert_str_empty(r.job.failure, "client: %s", r.job.failure);
    cr_assert_eq(r.job.status, GS_UNAVAILABLE, "client's final status %s (%s)", gs_status_name(r.job.status),
                 r.job.details);
}

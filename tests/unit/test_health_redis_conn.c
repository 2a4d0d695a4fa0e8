/*
 * test_health_redis_conn.c: the health worker's Redis connection (hc_redis.c)
 * against a real redis-server started by the test (support/redistest.c):
 * the handshake (AUTH, SELECT, PING), pipelined commands, a stopped server
 * (pending commands fail, new ones are refused, the state says why), the
 * reconnect when it is back, a frozen server caught by the command
 * timeout, and address parsing.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "hc_redis.h"
#include "redistest.h"

static redistest_t R;
static struct event_base *base;

typedef struct watch {
    int ups, downs;
    bool up;
    char why[256];
} watch_t;

static void on_state(hr_t *r, bool up, const char *why, void *arg)
{
    watch_t *w = arg;
    w->up = up;
    if (up)
        w->ups++;
    else
        w->downs++;
    snprintf(w->why, sizeof w->why, "%s", why ? why : "");
}

typedef struct result {
    int calls;
    int type;      /* reply type, -1 for NULL */
    long long integer;
    char str[256];
    size_t elements;
    char elem[4][64];
} result_t;

static void on_result(hr_t *r, redisReply *reply, void *arg)
{
    result_t *res = arg;
    res->calls++;
    res->type = reply ? reply->type : -1;
    if (!reply)
        return;
    res->integer = reply->integer;
    if (reply->str)
        snprintf(res->str, sizeof res->str, "%.*s", (int)reply->len, reply->str);
    res->elements = reply->elements;
    for (size_t i = 0; i < reply->elements && i < 4; i++)
        snprintf(res->elem[i], sizeof res->elem[i], "%s",
                 reply->element[i]->type == REDIS_REPLY_STRING ? reply->element[i]->str : "(nil)");
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_nothing(evutil_socket_t fd, short what, void *arg) {}

/* Run the loop until *flag is true or timeout_ms passed; returns *flag. */
static bool loop_until(const bool *flag, int timeout_ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, on_nothing, NULL);
    struct timeval tv = {0, 10000};
    event_add(tick, &tv);
    long long end = now_ms() + timeout_ms;
    while (!*flag && now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return *flag;
}

/* Run the loop until *v >= want or timeout_ms passed. */
static bool wait_int(const int *v, int want, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    bool done = *v >= want;
    while (!done && now_ms() < end) {
        loop_until(&done, 20);
        done = *v >= want;
    }
    return done;
}

static void setup(void)
{
    char err[1024];
    int rc = redistest_start(&R, err, sizeof err);
    cr_assert_eq(rc, 0, "redis-server: %s", err);
    base = event_base_new();
    cr_assert(base);
}

static void teardown(void)
{
    event_base_free(base);
    redistest_cleanup(&R);
}

static hr_t *connect_up(watch_t *w, const char *password, int db, int timeout_ms)
{
    char err[300];
    hr_options_t o = {.address = R.address, .password = password, .db = db, .timeout_ms = timeout_ms, .who = "test"};
    hr_t *r = hr_new(base, &o, on_state, w, err, sizeof err);
    cr_assert(r, "hr_new: %s", err);
    return r;
}

Test(health_redis, handshake_and_pipelined_commands, .init = setup, .fini = teardown)
{
    watch_t w = {0};
    hr_t *r = connect_up(&w, NULL, 3, 2000);
    cr_assert_not(hr_up(r), "up only after PING was answered");
    cr_assert(loop_until(&w.up, 5000), "connected: %s", w.why);
    cr_assert_eq(w.ups, 1);

    /* one loop pass: three commands leave together and answer in order */
    hr_argv_t av = {0};
    hr_argv_add(&av, "HSET", 4);
    hr_argv_add(&av, "t:hb", 4);
    for (int i = 0; i < 3; i++) {
        hr_argv_addf(&av, "id-%d", i);
        hr_argv_addf(&av, "%d", 1000 + i);
    }
    result_t set = {0}, get = {0}, dbsize = {0};
    cr_assert_eq(hr_argv_send(r, &av, on_result, &set), 0);
    hr_argv_free(&av);
    const char *hmget[] = {"HMGET", "t:hb", "id-2", "nope", "id-0"};
    cr_assert_eq(hr_command(r, 5, hmget, NULL, on_result, &get), 0);
    const char *sz[] = {"DBSIZE"};
    cr_assert_eq(hr_command(r, 1, sz, NULL, on_result, &dbsize), 0);
    cr_assert_eq(set.calls + get.calls, 0, "callbacks never run inside the call");
    cr_assert_eq(hr_pending(r), 3);
    cr_assert(wait_int(&dbsize.calls, 1, 3000), "the last command was answered");
    cr_assert_eq(set.type, REDIS_REPLY_INTEGER, "HSET answered");
    cr_assert_eq(set.integer, 3, "three fields written");
    cr_assert_eq(get.elements, 3);
    cr_assert_str_eq(get.elem[0], "1002");
    cr_assert_str_eq(get.elem[1], "(nil)");
    cr_assert_str_eq(get.elem[2], "1000");
    cr_assert_eq(hr_pending(r), 0);

    /* SELECT 3 happened: database 0 is empty */
    redisContext *c = redistest_connect(&R);
    cr_assert(c);
    redisReply *rep = redisCommand(c, "EXISTS t:hb");
    cr_assert_eq(rep->integer, 0, "nothing written to db 0");
    freeReplyObject(rep);
    rep = redisCommand(c, "SELECT 3");
    freeReplyObject(rep);
    rep = redisCommand(c, "HGET t:hb id-1");
    cr_assert_str_eq(rep->str, "1001", "written to db 3");
    freeReplyObject(rep);
    redisFree(c);
    hr_free(r);
}

Test(health_redis, stopped_server_and_reconnect, .init = setup, .fini = teardown)
{
    watch_t w = {0};
    hr_t *r = connect_up(&w, NULL, 0, 2000);
    cr_assert(loop_until(&w.up, 5000), "connected: %s", w.why);
    cr_assert_eq(redistest_stop(&R), 0, "stop redis");
    cr_assert(wait_int(&w.downs, 1, 3000), "the loss is noticed");
    cr_assert_eq(w.downs, 1, "reported once");
    cr_assert(strlen(w.why) > 0, "with a reason");
    const char *ping[] = {"PING"};
    result_t res = {0};
    cr_assert_eq(hr_command(r, 1, ping, NULL, on_result, &res), -ENOTCONN, "refused while down");
    /* reconnect attempts keep failing quietly, then succeed */
    for (int i = 0; i < 20; i++)
        loop_until(&w.up, 20);
    cr_assert_eq(w.downs, 1, "failed reconnects are not reported again");
    char err[1024];
    cr_assert_eq(redistest_restart(&R, err, sizeof err), 0, "restart: %s", err);
    cr_assert(loop_until(&w.up, 5000), "back up within the 2 s backoff: %s", w.why);
    cr_assert_eq(w.ups, 2);
    cr_assert_eq(hr_command(r, 1, ping, NULL, on_result, &res), 0, "accepted again");
    cr_assert(wait_int(&res.calls, 1, 2000), "PING answered");
    cr_assert_str_eq(res.str, "PONG");
    hr_free(r);
}

Test(health_redis, frozen_server_times_out, .init = setup, .fini = teardown)
{
    watch_t w = {0};
    hr_t *r = connect_up(&w, NULL, 0, 300);
    cr_assert(loop_until(&w.up, 5000), "connected: %s", w.why);
    cr_assert_eq(kill(R.pid, SIGSTOP), 0, "freeze redis");
    const char *ping[] = {"PING"};
    result_t res = {0};
    cr_assert_eq(hr_command(r, 1, ping, NULL, on_result, &res), 0);
    long long t0 = now_ms();
    cr_assert(wait_int(&res.calls, 1, 3000), "the command ended");
    cr_assert_eq(res.type, -1, "with no reply");
    cr_assert_lt(now_ms() - t0, 1000, "within the 300 ms timeout and a watchdog period");
    cr_assert_not(w.up, "the connection counts as down");
    cr_assert(strstr(w.why, "no answer within 300 ms"), "the reason says so: %s", w.why);
    kill(R.pid, SIGCONT);
    cr_assert(loop_until(&w.up, 5000), "back when Redis thaws: %s", w.why);
    hr_free(r);
}

Test(health_redis, auth, .init = setup, .fini = teardown)
{
    redisContext *c = redistest_connect(&R);
    cr_assert(c);
    redisReply *rep = redisCommand(c, "CONFIG SET requirepass s3cret");
    cr_assert(rep && rep->type == REDIS_REPLY_STATUS, "requirepass set");
    freeReplyObject(rep);
    redisFree(c);

    watch_t bad = {0};
    hr_t *r = connect_up(&bad, "wrong", 0, 2000);
    cr_assert(wait_int(&bad.downs, 1, 3000) && !bad.up, "a wrong password keeps it down");
    cr_assert(strstr(bad.why, "handshake refused"), "and says why: %s", bad.why);
    hr_free(r);

    watch_t good = {0};
    r = connect_up(&good, "s3cret", 0, 2000);
    cr_assert(loop_until(&good.up, 5000), "the right password connects: %s", good.why);
    hr_free(r);
}

Test(health_redis, pending_commands_fail_on_free, .init = setup, .fini = teardown)
{
    watch_t w = {0};
    hr_t *r = connect_up(&w, NULL, 0, 2000);
    cr_assert(loop_until(&w.up, 5000), "connected");
    const char *ping[] = {"PING"};
    result_t res = {0};
    cr_assert_eq(hr_command(r, 1, ping, NULL, on_result, &res), 0);
    hr_free(r);
    cr_assert_eq(res.calls, 1, "every pending command gets its callback");
    cr_assert_eq(res.type, -1, "with no reply");
}

Test(health_redis, addresses)
{
    char host[64], path[64], err[200];
    int port;
    cr_assert_eq(hr_parse_address("127.0.0.1:6379", host, sizeof host, &port, path, sizeof path, err, sizeof err), 0);
    cr_assert_str_eq(host, "127.0.0.1");
    cr_assert_eq(port, 6379);
    cr_assert_eq(hr_parse_address("[::1]:7000", host, sizeof host, &port, path, sizeof path, err, sizeof err), 0);
    cr_assert_str_eq(host, "::1");
    cr_assert_eq(port, 7000);
    cr_assert_eq(hr_parse_address("unix:/run/r.sock", host, sizeof host, &port, path, sizeof path, err, sizeof err),
                 0);
    cr_assert_str_eq(path, "/run/r.sock");
    static const char *const bad[] = {"", "redis", "host:", "host:0", "host:70000", "[::1]7000", "unix:", ":6379"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(hr_parse_address(bad[i], host, sizeof host, &port, path, sizeof path, err, sizeof err), -EINVAL,
                     "\"%s\" is refused", bad[i]);
        if (*bad[i])
            cr_assert(strstr(err, bad[i]), "the error names the address: %s", err);
    }
    struct event_base *b = event_base_new();
    hr_options_t o = {.address = "nowhere", .timeout_ms = 100};
    cr_assert_null(hr_new(b, &o, NULL, NULL, err, sizeof err), "hr_new refuses a bad address");
    cr_assert(strstr(err, "nowhere"), "%s", err);
    event_base_free(b);
}

/*
 * hc_redis.c: see hc_redis.h.
 *
 * Every command travels in a wrapper (hr_cmd_t) kept in send order: hiredis
 * answers in order, so the oldest unanswered command is the list's head and
 * the watchdog only looks at it. The wrapper, not hiredis, calls the user's
 * callback, so each command gets exactly one, whichever way it ends.
 *
 * Rules kept here:
 *  - r->ac is the live context or NULL. Dropping a connection clears r->ac
 *    before freeing the context, so callbacks that hiredis runs during the
 *    free see a connection that is already down (a command they send is
 *    refused) and the disconnect callback of a context that is no longer
 *    r->ac is ignored;
 *  - hiredis may free a context on its own (connect failure, EOF, I/O
 *    error); the connect and disconnect callbacks are where we learn it;
 *  - redisAsyncFree inside a hiredis callback is deferred by hiredis until
 *    the callback returns, so dropping from a reply callback is safe.
 */
#include "hc_redis.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include "log.h"

#define HR_BACKOFF_MIN_MS 100
#define HR_BACKOFF_MAX_MS 2000

typedef struct hr_cmd {
    hr_t *r;
    hr_reply_fn cb; /* NULL for the handshake's own commands */
    void *arg;
    int64_t sent_ms;
    bool handshake_ping;
    struct hr_cmd *prev, *next;
} hr_cmd_t;

struct hr {
    struct event_base *base;
    char host[256];
    char path[256];
    int port;
    char *password;
    int db;
    int timeout_ms;
    char who[64];
    redisAsyncContext *ac;
    bool up;
    int reported; /* -1 nothing reported yet, else the last reported up/down */
    char why[256];
    int64_t connect_started_ms;
    int backoff_ms;
    struct event *reconnect_ev, *watchdog_ev;
    hr_cmd_t *head, *tail; /* sent, unanswered */
    size_t pending;
    hr_state_fn state_fn;
    void *state_arg;
    bool freeing;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int hr_parse_address(const char *address, char *host, size_t hostlen, int *port, char *path, size_t pathlen,
                     char *err, size_t errlen)
{
    host[0] = path[0] = '\0';
    *port = 0;
    if (!address || !*address) {
        snprintf(err, errlen, "empty Redis address");
        return -EINVAL;
    }
    if (strncmp(address, "unix:", 5) == 0) {
        const char *p = address + 5;
        if (!*p || strlen(p) >= pathlen) {
            snprintf(err, errlen, "Redis address \"%s\": the socket path is empty or too long", address);
            return -EINVAL;
        }
        snprintf(path, pathlen, "%s", p);
        return 0;
    }
    const char *colon;
    const char *h = address;
    size_t hl;
    if (*address == '[') {
        const char *close = strchr(address, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "Redis address \"%s\": expected [v6-address]:port", address);
            return -EINVAL;
        }
        h = address + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(address, ':');
        if (!colon) {
            snprintf(err, errlen, "Redis address \"%s\": expected host:port or unix:/path", address);
            return -EINVAL;
        }
        hl = (size_t)(colon - address);
    }
    char *end = NULL;
    long p = strtol(colon + 1, &end, 10);
    if (hl == 0 || hl >= hostlen || !colon[1] || *end || p < 1 || p > 65535) {
        snprintf(err, errlen, "Redis address \"%s\": expected host:port with a port 1..65535", address);
        return -EINVAL;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

/* --------------------------------------------------------- state */

static void report(hr_t *r, bool up)
{
    if (r->reported == (int)up || r->freeing)
        return;
    r->reported = up;
    if (r->state_fn)
        r->state_fn(r, up, up ? "" : r->why, r->state_arg);
}

static void schedule_reconnect(hr_t *r)
{
    if (r->freeing)
        return;
    struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};
    evtimer_add(r->reconnect_ev, &tv);
    r->backoff_ms = r->backoff_ms * 2 > HR_BACKOFF_MAX_MS ? HR_BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* The connection is lost (why says how): forget the context, free it if
 * it is still ours to free, report, and try again later. */
static void go_down(hr_t *r, const char *why, bool free_ctx)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->up = false;
    snprintf(r->why, sizeof r->why, "%s", why && *why ? why : "connection closed");
    if (ac && free_ctx)
        redisAsyncFree(ac); /* pending callbacks run with NULL */
    report(r, false);
    schedule_reconnect(r);
}

/* ------------------------------------------------------- commands */

static void cmd_unlink(hr_t *r, hr_cmd_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        r->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        r->tail = c->prev;
    c->prev = c->next = NULL;
    r->pending--;
}

static void on_handshake_reply(hr_t *r, redisAsyncContext *ac, redisReply *reply, bool ping)
{
    if (ac != r->ac)
        return; /* an old context being torn down */
    if (!reply) {
        go_down(r, ac->errstr[0] ? ac->errstr : "no answer to the connection handshake", false);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[300];
        snprintf(why, sizeof why, "handshake refused: %.*s", (int)(reply->len < 200 ? reply->len : 200), reply->str);
        go_down(r, why, true);
        return;
    }
    if (ping) {
        r->up = true;
        r->why[0] = '\0';
        r->backoff_ms = HR_BACKOFF_MIN_MS;
        report(r, true);
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    hr_cmd_t *c = privdata;
    hr_t *r = c->r;
    cmd_unlink(r, c);
    if (c->cb)
        c->cb(r, reply, c->arg);
    else
        on_handshake_reply(r, ac, reply, c->handshake_ping);
    free(c);
}

static int send_cmd(hr_t *r, int argc, const char **argv, const size_t *argvlen, hr_reply_fn cb, void *arg,
                    bool ping)
{
    hr_cmd_t *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    c->sent_ms = mono_ms();
    c->handshake_ping = ping;
    if (redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, argvlen) != REDIS_OK) {
        free(c);
        return -ENOTCONN;
    }
    c->prev = r->tail;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    r->pending++;
    return 0;
}

int hr_command(hr_t *r, int argc, const char **argv, const size_t *argvlen, hr_reply_fn cb, void *arg)
{
    if (!r->up || !r->ac)
        return -ENOTCONN;
    return send_cmd(r, argc, argv, argvlen, cb, arg, false);
}

/* ----------------------------------------------------- connecting */

static void on_connect(const redisAsyncContext *cac, int status)
{
    hr_t *r = cac->data;
    if (!r || cac != r->ac)
        return;
    if (status != REDIS_OK)
        go_down(r, cac->errstr[0] ? cac->errstr : "connect failed", false); /* hiredis frees it */
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    hr_t *r = cac->data;
    if (!r || cac != r->ac)
        return;
    go_down(r, status == REDIS_OK ? "connection closed" : (cac->errstr[0] ? cac->errstr : "connection lost"),
            false);
}

static void start_connect(hr_t *r)
{
    redisAsyncContext *ac = r->path[0] ? redisAsyncConnectUnix(r->path) : redisAsyncConnect(r->host, r->port);
    if (!ac || ac->err) {
        char why[300];
        snprintf(why, sizeof why, "connect: %s", ac && ac->errstr[0] ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        go_down(r, why, false);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
        redisAsyncFree(ac);
        go_down(r, "cannot attach to the event loop", false);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->connect_started_ms = mono_ms();
    char dbs[16];
    snprintf(dbs, sizeof dbs, "%d", r->db);
    const char *auth[] = {"AUTH", r->password};
    const char *sel[] = {"SELECT", dbs};
    const char *ping[] = {"PING"};
    int rc = 0;
    if (r->password && *r->password)
        rc = send_cmd(r, 2, auth, NULL, NULL, NULL, false);
    if (rc == 0 && r->db != 0)
        rc = send_cmd(r, 2, sel, NULL, NULL, NULL, false);
    if (rc == 0)
        rc = send_cmd(r, 1, ping, NULL, NULL, NULL, true);
    if (rc < 0)
        go_down(r, "cannot queue the connection handshake", true);
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    hr_t *r = arg;
    if (!r->ac)
        start_connect(r);
}

/* A connect or the oldest command outstanding too long: Redis counts as gone. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    hr_t *r = arg;
    if (!r->ac)
        return;
    int64_t now = mono_ms();
    char why[160];
    if (!r->up && now - r->connect_started_ms > r->timeout_ms) {
        snprintf(why, sizeof why, "no connection within %d ms", r->timeout_ms);
        go_down(r, why, true);
    } else if (r->head && now - r->head->sent_ms > r->timeout_ms) {
        snprintf(why, sizeof why, "no answer within %d ms (%zu commands waiting)", r->timeout_ms, r->pending);
        go_down(r, why, true);
    }
}

hr_t *hr_new(struct event_base *base, const hr_options_t *o, hr_state_fn fn, void *arg, char *err, size_t errlen)
{
    hr_t *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (hr_parse_address(o->address, r->host, sizeof r->host, &r->port, r->path, sizeof r->path, err, errlen) < 0) {
        free(r);
        return NULL;
    }
    r->base = base;
    r->password = o->password && *o->password ? strdup(o->password) : NULL;
    r->db = o->db;
    r->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 2000;
    snprintf(r->who, sizeof r->who, "%s", o->who ? o->who : "redis");
    r->reported = -1;
    r->backoff_ms = HR_BACKOFF_MIN_MS;
    r->state_fn = fn;
    r->state_arg = arg;
    snprintf(r->why, sizeof r->why, "not connected yet");
    r->reconnect_ev = evtimer_new(base, on_reconnect, r);
    r->watchdog_ev = event_new(base, -1, EV_PERSIST, on_watchdog, r);
    int period = r->timeout_ms / 4 < 250 ? (r->timeout_ms / 4 > 10 ? r->timeout_ms / 4 : 10) : 250;
    struct timeval tv = {period / 1000, (period % 1000) * 1000};
    if (!r->reconnect_ev || !r->watchdog_ev || (o->password && *o->password && !r->password) ||
        event_add(r->watchdog_ev, &tv) < 0) {
        snprintf(err, errlen, "out of memory");
        if (r->reconnect_ev)
            event_free(r->reconnect_ev);
        if (r->watchdog_ev)
            event_free(r->watchdog_ev);
        free(r->password);
        free(r);
        return NULL;
    }
    start_connect(r);
    return r;
}

void hr_free(hr_t *r)
{
    if (!r)
        return;
    r->freeing = true;
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->up = false;
    snprintf(r->why, sizeof r->why, "shutting down");
    if (ac)
        redisAsyncFree(ac);
    /* commands of a context hiredis already freed have had their callbacks */
    while (r->head) {
        hr_cmd_t *c = r->head;
        cmd_unlink(r, c);
        if (c->cb)
            c->cb(r, NULL, c->arg);
        free(c);
    }
    event_free(r->reconnect_ev);
    event_free(r->watchdog_ev);
    free(r->password);
    free(r);
}

bool hr_up(const hr_t *r) { return r && r->up; }
const char *hr_why(const hr_t *r) { return r->up ? "" : r->why; }
size_t hr_pending(const hr_t *r) { return r->pending; }

/* ---------------------------------------------------------- argv */

void hr_argv_add(hr_argv_t *a, const char *s, size_t len)
{
    if (a->oom)
        return;
    if (a->argc == a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        char **v = realloc(a->argv, (size_t)cap * sizeof *v);
        size_t *l = v ? realloc(a->len, (size_t)cap * sizeof *l) : NULL;
        if (v)
            a->argv = v;
        if (!v || !l) {
            a->oom = true;
            return;
        }
        a->len = l;
        a->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) {
        a->oom = true;
        return;
    }
    memcpy(copy, s, len);
    copy[len] = '\0';
    a->argv[a->argc] = copy;
    a->len[a->argc] = len;
    a->argc++;
}

void hr_argv_addf(hr_argv_t *a, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        a->oom = true;
        return;
    }
    hr_argv_add(a, buf, (size_t)n);
}

int hr_argv_send(hr_t *r, const hr_argv_t *a, hr_reply_fn cb, void *arg)
{
    if (a->oom || a->argc == 0)
        return -ENOMEM;
    return hr_command(r, a->argc, (const char **)a->argv, a->len, cb, arg);
}

void hr_argv_free(hr_argv_t *a)
{
    for (int i = 0; i < a->argc; i++)
        free(a->argv[i]);
    free(a->argv);
    free(a->len);
    memset(a, 0, sizeof *a);
}

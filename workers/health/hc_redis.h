/*
 * hc_redis.h: the health worker's Redis connection (hiredis async on the
 * worker's libevent loop).
 *
 * One connection, reconnected with backoff (100 ms doubling to 2 s) after
 * every loss. After each connect it sends AUTH (when a password is set),
 * SELECT (when db is not 0) and PING, and counts as up only once PING was
 * answered. Commands given while it is not up are refused at once
 * (-ENOTCONN); commands given while up are pipelined by hiredis (all
 * commands of one loop pass leave in one write) and each gets exactly one
 * callback: the reply, or NULL when the connection was lost first. A
 * command unanswered for timeout_ms (or a connect that takes that long)
 * drops the connection: Redis stopped by SIGSTOP or a black-holed network
 * looks exactly like Redis gone.
 *
 * The state callback reports the first failure and every change between
 * up and down, with the reason.
 *
 * Key layout (prefix = healthcheck.redis.key_prefix), used by the health
 * worker:
 *   <prefix>hb           hash: instance id -> last beat, unix ms (decimal)
 *   <prefix>node:<id>    string with a TTL: a live checking node
 *   <prefix>nodes        set: node ids that announced themselves
 */
#ifndef LODESTAR_HC_REDIS_H
#define LODESTAR_HC_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

struct event_base;

typedef struct hr hr_t;

typedef void (*hr_state_fn)(hr_t *r, bool up, const char *why, void *arg);
/* reply is NULL when the command failed without an answer (connection
 * lost, timeout, shutdown); it may be a REDIS_REPLY_ERROR. */
typedef void (*hr_reply_fn)(hr_t *r, redisReply *reply, void *arg);

typedef struct hr_options {
    const char *address;  /* "host:port", "[v6]:port" or "unix:/path" */
    const char *password; /* NULL or "" = no AUTH */
    int db;
    int timeout_ms;
    const char *who;      /* for logs */
} hr_options_t;

/* Parse an address into host + port or a Unix path. 0, or -EINVAL with the
 * reason in err. */
int hr_parse_address(const char *address, char *host, size_t hostlen, int *port, char *path, size_t pathlen,
                     char *err, size_t errlen);

/* Start connecting (the first attempt goes out at once; its result comes
 * from the loop). NULL with err on a bad address or out of memory. */
hr_t *hr_new(struct event_base *base, const hr_options_t *o, hr_state_fn fn, void *arg, char *err, size_t errlen);
/* Fails every pending command (callbacks run with NULL) and frees. Not
 * from inside one of this connection's callbacks. */
void hr_free(hr_t *r);
bool hr_up(const hr_t *r);
/* Why the connection is down (the last failure), "" when up. */
const char *hr_why(const hr_t *r);
/* Commands sent and not answered yet. */
size_t hr_pending(const hr_t *r);

/* Send one command. 0: cb follows exactly once, never from inside this
 * call; -ENOTCONN (not up) or -ENOMEM: cb is not called. */
int hr_command(hr_t *r, int argc, const char **argv, const size_t *argvlen, hr_reply_fn cb, void *arg);

/* An argument vector under construction (strings are copied). */
typedef struct hr_argv {
    int argc, cap;
    char **argv;
    size_t *len;
    bool oom;
} hr_argv_t;
void hr_argv_add(hr_argv_t *a, const char *s, size_t len);
void hr_argv_addf(hr_argv_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* hr_command with the vector; -ENOMEM when building it ran out of memory. */
int hr_argv_send(hr_t *r, const hr_argv_t *a, hr_reply_fn cb, void *arg);
void hr_argv_free(hr_argv_t *a);

#endif

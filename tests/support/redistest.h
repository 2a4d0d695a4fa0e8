/*
 * redistest.h: a private, throw-away redis-server for tests.
 *
 * redistest_start creates a temporary directory under /tmp and starts
 * /usr/bin/redis-server in the foreground of a child process, listening on
 * a Unix socket in that directory and on a free loopback TCP port, without
 * persistence (no RDB, no AOF: a restarted server starts empty, the worst
 * case for its clients). The server dies with the test process
 * (PR_SET_PDEATHSIG) and an atexit handler kills and removes whatever a
 * test left running. The calls block; they are meant for test code only.
 */
#ifndef LODESTAR_REDISTEST_H
#define LODESTAR_REDISTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#define REDISTEST_SERVER "/usr/bin/redis-server"

typedef struct redistest {
    char dir[256];     /* temporary directory: socket, log */
    char sock[300];    /* Unix socket path */
    char address[320]; /* "unix:<sock>", for healthcheck.redis.address */
    int port;          /* loopback TCP port */
    pid_t pid;         /* 0 when not running */
} redistest_t;

/* Start a server and wait until it answers PING (at most 10 s). 0 or a
 * negative errno, with the reason (and the server log's tail) in err; on
 * failure nothing is left running and the directory is removed. */
int redistest_start(redistest_t *r, char *err, size_t errlen);

/* Stop the server (SIGTERM, SIGKILL after 5 s) and wait for it; the
 * directory stays, so redistest_restart can bring it back on the same
 * socket and port. 0, or -ESRCH when it was not running. */
int redistest_stop(redistest_t *r);

/* Start it again (empty) on the same socket and port. 0 or negative errno. */
int redistest_restart(redistest_t *r, char *err, size_t errlen);

/* Stop if running and remove the directory. Safe on a zeroed struct. */
void redistest_cleanup(redistest_t *r);

/* A blocking connection on the Unix socket, for assertions (NULL on
 * failure). Free with redisFree. */
redisContext *redistest_connect(const redistest_t *r);

#endif

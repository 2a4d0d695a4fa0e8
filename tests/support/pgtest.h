/*
 * pgtest.h: a private, throw-away PostgreSQL server for tests.
 *
 * pgtest_start creates a temporary directory under /tmp, runs initdb into
 * <dir>/data and starts postgres listening only on a Unix socket in <dir>
 * (no TCP), then creates the database "lodestar" (user "lodestar", trust
 * authentication). When the test runs as root, initdb and postgres run as
 * the OS user "postgres" (postgres refuses to run as root).
 *
 * Nothing is left behind: pgtest_stop shuts the server down (fast shutdown,
 * then SIGKILL) and removes the directory; servers still running when the
 * process exits are killed and removed by an atexit handler, and the
 * postmaster dies with the process that started it (PR_SET_PDEATHSIG) when
 * that process crashes. The calls block; they are meant for test code only.
 */
#ifndef LODESTAR_PGTEST_H
#define LODESTAR_PGTEST_H

#include <libpq-fe.h>
#include <stddef.h>
#include <sys/types.h>

#define PGTEST_BIN_DIR "/usr/lib/postgresql/15/bin"

typedef struct pgtest {
    char dir[256];  /* temporary directory: socket dir, data/ and logs */
    char dsn[512];  /* "host=<dir> port=<port> dbname=lodestar user=lodestar" */
    pid_t pid;      /* postmaster pid, 0 when not running */
    int port;       /* names the socket file <dir>/.s.PGSQL.<port> */
} pgtest_t;

/* initdb, start, wait until it accepts connections (at most 30 s), create
 * database lodestar. 0 or a negative errno; err says what failed (with the
 * tail of the server log when the server did not come up). On failure
 * nothing is left running and the directory is removed. */
int pgtest_start(pgtest_t *pg, char *err, size_t errlen);

/* Fast shutdown (SIGINT), SIGKILL after 10 s, then remove the directory.
 * Safe to call on a zeroed or already stopped pgtest_t. */
void pgtest_stop(pgtest_t *pg);

/* Simulate a crash: SIGKILL the postmaster and every server process it had
 * started, and wait until they are gone. The data directory stays.
 * 0 or a negative errno (-ESRCH when it was not running). */
int pgtest_kill(pgtest_t *pg);

/* Start the server again on the same data directory and port (after
 * pgtest_kill), and wait until it accepts connections. 0 or negative errno
 * (-EBUSY when it is already running). */
int pgtest_restart(pgtest_t *pg, char *err, size_t errlen);

/* A blocking connection to database `dbname` (NULL: "lodestar"), for test
 * assertions. NULL on failure, with the reason in err. */
PGconn *pgtest_connect(const pgtest_t *pg, const char *dbname, char *err, size_t errlen);

/* Run one SQL string on a fresh blocking connection to database lodestar.
 * 0, or -EIO with PostgreSQL's message in err. */
int pgtest_exec(const pgtest_t *pg, const char *sql, char *err, size_t errlen);

#endif

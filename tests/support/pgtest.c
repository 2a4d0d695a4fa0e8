/*
 * pgtest.c: a private PostgreSQL per test (see pgtest.h).
 *
 * Rules this file keeps:
 *  - Every server it starts is recorded in a small table owned by the
 *    process that started it; an atexit handler (acting only in that
 *    process, not in forked children) kills whatever is still recorded and
 *    removes its directory.
 *  - The postmaster gets PR_SET_PDEATHSIG(SIGKILL) after dropping to the
 *    postgres user, so it dies with the test process even on a crash.
 *  - Killing a server also kills the backends it had forked: they become
 *    orphans when the postmaster dies and would keep the shared memory
 *    (and a later restart) busy. They are found by their working directory,
 *    which postgres sets to the data directory.
 *  - Between fork and exec the child only makes async-signal-safe calls.
 */
#include "pgtest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PGTEST_MAX_LIVE 16
#define PGTEST_READY_MS 30000
#define PGTEST_INITDB_MS 120000
#define PGTEST_STOP_MS 10000

struct live_server {
    pid_t owner; /* process that started it; 0 = free slot */
    pid_t pid;   /* postmaster, 0 when not running */
    char dir[256];
};

static struct live_server g_live[PGTEST_MAX_LIVE];
static bool g_atexit_done;

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ---- bookkeeping -------------------------------------------------------- */

static struct live_server *live_find(const char *dir)
{
    for (int i = 0; i < PGTEST_MAX_LIVE; i++)
        if (g_live[i].owner == getpid() && strcmp(g_live[i].dir, dir) == 0)
            return &g_live[i];
    return NULL;
}

static void live_set(const char *dir, pid_t pid)
{
    struct live_server *l = live_find(dir);
    for (int i = 0; !l && i < PGTEST_MAX_LIVE; i++)
        if (g_live[i].owner == 0 || kill(g_live[i].owner, 0) < 0)
            l = &g_live[i];
    if (!l)
        return;
    l->owner = getpid();
    l->pid = pid;
    snprintf(l->dir, sizeof l->dir, "%s", dir);
}

static void live_forget(const char *dir)
{
    struct live_server *l = live_find(dir);
    if (l)
        memset(l, 0, sizeof *l);
}

/* ---- processes ---------------------------------------------------------- */

/* Wait for pid for at most ms milliseconds. 1 when it exited (status in
 * *status), 0 on timeout, negative errno on error. */
static int wait_pid(pid_t pid, int ms, int *status)
{
    long long end = mono_ms() + ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r < 0 && errno != EINTR)
            return -errno;
        if (mono_ms() >= end)
            return 0;
        sleep_ms(10);
    }
}

/* The data directory's canonical path (out holds PATH_MAX bytes). */
static int data_dir_path(const char *dir, char *out)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/data", dir);
    if (!realpath(path, out))
        return -errno;
    return 0;
}

/* SIGKILL every process whose working directory is the server's data
 * directory (the backends of a killed postmaster) and wait until none is
 * left (at most 10 s). Returns the number still alive. */
static int sweep_orphans(const char *dir)
{
    char data[PATH_MAX];
    if (data_dir_path(dir, data) < 0)
        return 0;
    long long end = mono_ms() + PGTEST_STOP_MS;
    for (;;) {
        int found = 0;
        DIR *d = opendir("/proc");
        if (!d)
            return 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            char *endp;
            long n = strtol(e->d_name, &endp, 10);
            if (*endp || n <= 0 || (pid_t)n == getpid())
                continue;
            char link[64], cwd[PATH_MAX];
            snprintf(link, sizeof link, "/proc/%ld/cwd", n);
            ssize_t len = readlink(link, cwd, sizeof cwd - 1);
            if (len <= 0)
                continue;
            cwd[len] = '\0';
            if (strcmp(cwd, data) != 0)
                continue;
            found++;
            kill((pid_t)n, SIGKILL);
        }
        closedir(d);
        if (!found || mono_ms() >= end)
            return found;
        sleep_ms(20);
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *dir)
{
    if (dir && dir[0])
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

struct run_as {
    bool drop;
    uid_t uid;
    gid_t gid;
};

static int run_as_init(struct run_as *ra, char *err, size_t errlen)
{
    memset(ra, 0, sizeof *ra);
    if (geteuid() != 0)
        return 0;
    struct passwd *pw = getpwnam("postgres");
    if (!pw) {
        snprintf(err, errlen, "running as root but there is no OS user 'postgres' to run the server as");
        return -ENOENT;
    }
    ra->drop = true;
    ra->uid = pw->pw_uid;
    ra->gid = pw->pw_gid;
    return 0;
}

/* fork + exec argv[0] in `dir` with stdout/stderr appended to `logpath`,
 * as the postgres user when running as root. With `server`, the child gets
 * its own session and dies with this process. Returns the pid or -errno. */
static pid_t spawn(const struct run_as *ra, const char *dir, const char *logpath, char *const argv[], bool server)
{
    pid_t parent = getpid();
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0)
        return -errno;
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (nullfd < 0) {
        int e = errno;
        close(logfd);
        return -e;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(logfd);
        close(nullfd);
        return -e;
    }
    if (pid == 0) {
        if (server)
            setsid();
        if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
            _exit(126);
        if (close_range(3, ~0U, 0) < 0) {
            long max = sysconf(_SC_OPEN_MAX);
            for (long fd = 3; fd < (max > 0 ? max : 1024); fd++)
                close((int)fd);
        }
        if (chdir(dir) < 0)
            _exit(126);
        if (ra->drop) {
            if (setgroups(0, NULL) < 0 || setgid(ra->gid) < 0 || setuid(ra->uid) < 0)
                _exit(126);
        }
        if (server) {
            /* after setuid: a credential change clears the death signal */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(126);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    close(logfd);
    close(nullfd);
    return pid;
}

/* The last bytes of a log file on one line, for error messages. */
static void log_tail(const char *path, char *out, size_t outlen)
{
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[700];
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof buf - 1 ? size - (off_t)sizeof buf + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof buf - 1, from);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    size_t o = 0;
    for (ssize_t i = 0; i < n && o + 4 < outlen; i++) {
        if (buf[i] == '\n') {
            if (i + 1 < n) {
                memcpy(out + o, " | ", 3);
                o += 3;
            }
        } else {
            out[o++] = buf[i];
        }
    }
    out[o] = '\0';
}

/* ---- server ------------------------------------------------------------- */

static int start_server(pgtest_t *pg, const struct run_as *ra, char *err, size_t errlen)
{
    char data[300], port[32], logpath[300], sockdir[300];
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(sockdir, sizeof sockdir, "%s", pg->dir);
    snprintf(port, sizeof port, "%d", pg->port);
    snprintf(logpath, sizeof logpath, "%s/postgres.log", pg->dir);
    char *argv[] = {PGTEST_BIN_DIR "/postgres", "-D", data, "-k", sockdir, "-c", "listen_addresses=", "-p", port,
                    "-F", "-c", "fsync=off", "-c", "max_connections=30", "-c", "shared_buffers=16MB", NULL};
    pid_t pid = spawn(ra, pg->dir, logpath, argv, true);
    if (pid < 0) {
        snprintf(err, errlen, "cannot start %s: %s", argv[0], strerror((int)-pid));
        return (int)pid;
    }
    pg->pid = pid;
    live_set(pg->dir, pid);

    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "host=%s port=%d dbname=postgres user=lodestar connect_timeout=5", pg->dir,
             pg->port);
    long long end = mono_ms() + PGTEST_READY_MS;
    char last[256] = "";
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            char tail[700];
            log_tail(logpath, tail, sizeof tail);
            snprintf(err, errlen, "postgres exited during start-up (status %d): %s", status, tail);
            pg->pid = 0;
            live_set(pg->dir, 0);
            return -ECHILD;
        }
        PGconn *c = PQconnectdb(conninfo);
        bool ok = c && PQstatus(c) == CONNECTION_OK;
        if (c && !ok)
            snprintf(last, sizeof last, "%s", PQerrorMessage(c));
        PQfinish(c);
        if (ok)
            return 0;
        if (mono_ms() >= end) {
            char tail[700];
            log_tail(logpath, tail, sizeof tail);
            snprintf(err, errlen, "postgres did not accept connections within %d ms (last error: %s); log: %s",
                     PGTEST_READY_MS, last, tail);
            return -ETIMEDOUT;
        }
        sleep_ms(30);
    }
}

static void stop_pid(pgtest_t *pg)
{
    if (pg->pid <= 0)
        return;
    int status;
    if (kill(pg->pid, SIGINT) == 0 && wait_pid(pg->pid, PGTEST_STOP_MS, &status) == 1) {
        pg->pid = 0;
    } else {
        kill(pg->pid, SIGKILL);
        wait_pid(pg->pid, PGTEST_STOP_MS, &status);
        pg->pid = 0;
    }
    sweep_orphans(pg->dir);
}

static void pgtest_atexit(void)
{
    for (int i = 0; i < PGTEST_MAX_LIVE; i++) {
        struct live_server *l = &g_live[i];
        if (l->owner != getpid())
            continue;
        if (l->pid > 0) {
            int status;
            kill(l->pid, SIGKILL);
            wait_pid(l->pid, PGTEST_STOP_MS, &status);
        }
        sweep_orphans(l->dir);
        rm_rf(l->dir);
        memset(l, 0, sizeof *l);
    }
}

int pgtest_start(pgtest_t *pg, char *err, size_t errlen)
{
    memset(pg, 0, sizeof *pg);
    if (!g_atexit_done) {
        atexit(pgtest_atexit);
        g_atexit_done = true;
    }
    struct run_as ra;
    int rc = run_as_init(&ra, err, errlen);
    if (rc < 0)
        return rc;
    snprintf(pg->dir, sizeof pg->dir, "/tmp/lodestar-pg-XXXXXX");
    if (!mkdtemp(pg->dir)) {
        rc = -errno;
        snprintf(err, errlen, "mkdtemp(/tmp/lodestar-pg-XXXXXX): %s", strerror(errno));
        pg->dir[0] = '\0';
        return rc;
    }
    live_set(pg->dir, 0);
    if (ra.drop && chown(pg->dir, ra.uid, ra.gid) < 0) {
        rc = -errno;
        snprintf(err, errlen, "chown %s to postgres: %s", pg->dir, strerror(errno));
        goto fail;
    }

    char data[300], logpath[300];
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(logpath, sizeof logpath, "%s/initdb.log", pg->dir);
    char *initdb[] = {PGTEST_BIN_DIR "/initdb", "-D", data,     "-U",      "lodestar", "--auth=trust",
                      "-E",                     "UTF8", "--locale=C", "--no-sync", NULL};
    pid_t pid = spawn(&ra, pg->dir, logpath, initdb, false);
    if (pid < 0) {
        rc = (int)pid;
        snprintf(err, errlen, "cannot run %s: %s", initdb[0], strerror(-rc));
        goto fail;
    }
    int status = 0;
    rc = wait_pid(pid, PGTEST_INITDB_MS, &status);
    if (rc != 1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (rc == 0) {
            kill(pid, SIGKILL);
            wait_pid(pid, PGTEST_STOP_MS, &status);
        }
        char tail[700];
        log_tail(logpath, tail, sizeof tail);
        snprintf(err, errlen, "initdb into %s failed (%s): %s", data, rc == 0 ? "timed out" : "non-zero exit", tail);
        rc = -EIO;
        goto fail;
    }

    pg->port = 20000 + (int)(getpid() % 20000);
    snprintf(pg->dsn, sizeof pg->dsn, "host=%s port=%d dbname=lodestar user=lodestar", pg->dir, pg->port);
    rc = start_server(pg, &ra, err, errlen);
    if (rc < 0)
        goto fail;

    PGconn *c = pgtest_connect(pg, "postgres", err, errlen);
    if (!c) {
        rc = -EIO;
        goto fail;
    }
    PGresult *r = PQexec(c, "CREATE DATABASE lodestar");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "CREATE DATABASE lodestar: %s", PQresultErrorMessage(r));
        PQclear(r);
        PQfinish(c);
        rc = -EIO;
        goto fail;
    }
    PQclear(r);
    PQfinish(c);
    return 0;

fail:
    pgtest_stop(pg);
    return rc;
}

void pgtest_stop(pgtest_t *pg)
{
    if (!pg || !pg->dir[0])
        return;
    stop_pid(pg);
    rm_rf(pg->dir);
    live_forget(pg->dir);
    pg->dir[0] = '\0';
    pg->dsn[0] = '\0';
}

int pgtest_kill(pgtest_t *pg)
{
    if (!pg || pg->pid <= 0)
        return -ESRCH;
    int status;
    if (kill(pg->pid, SIGKILL) < 0)
        return -errno;
    int rc = wait_pid(pg->pid, PGTEST_STOP_MS, &status);
    pg->pid = 0;
    live_set(pg->dir, 0);
    int left = sweep_orphans(pg->dir);
    if (rc < 0)
        return rc;
    if (rc == 0 || left > 0)
        return -ETIMEDOUT;
    return 0;
}

int pgtest_restart(pgtest_t *pg, char *err, size_t errlen)
{
    if (!pg || !pg->dir[0]) {
        snprintf(err, errlen, "pgtest_restart: no server directory (pgtest_start not called or failed)");
        return -EINVAL;
    }
    if (pg->pid > 0) {
        snprintf(err, errlen, "pgtest_restart: the server in %s is still running (pid %d)", pg->dir, (int)pg->pid);
        return -EBUSY;
    }
    struct run_as ra;
    int rc = run_as_init(&ra, err, errlen);
    if (rc < 0)
        return rc;
    rc = start_server(pg, &ra, err, errlen);
    if (rc < 0)
        stop_pid(pg);
    return rc;
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *pgtest_connect(const pgtest_t *pg, const char *dbname, char *err, size_t errlen)
{
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "host=%s port=%d dbname=%s user=lodestar connect_timeout=5", pg->dir,
             pg->port, dbname ? dbname : "lodestar");
    PGconn *c = PQconnectdb(conninfo);
    if (!c) {
        snprintf(err, errlen, "connect '%s': out of memory", conninfo);
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "connect '%s': %s", conninfo, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    return c;
}

int pgtest_exec(const pgtest_t *pg, const char *sql, char *err, size_t errlen)
{
    PGconn *c = pgtest_connect(pg, NULL, err, errlen);
    if (!c)
        return -EIO;
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    int rc = 0;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s: %s", sql, PQresultErrorMessage(r));
        rc = -EIO;
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

/*
 * pgembed.c: the private PostgreSQL 15 the supervisor runs when no DSN is
 * configured.
 *
 * Rules kept here:
 *  - it listens on a Unix socket only (<runtime_dir>/pg, mode 0700), never TCP;
 *  - when Lodestar runs as root, initdb and postgres run as the unprivileged
 *    user store.embedded.user (postgres refuses to run as root anyway);
 *  - it is started first and stopped last (supervisor.c orders that), and it
 *    dies with the supervisor (PR_SET_PDEATHSIG = SIGINT, fast shutdown);
 *  - readiness is read from postmaster.pid's status line, so the supervisor
 *    needs no libpq;
 *  - first start: initdb (superuser "lodestar", trust on the private socket)
 *    then CREATE DATABASE lodestar in single-user mode.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sup.h"

typedef struct runas {
    bool drop;
    uid_t uid;
    gid_t gid;
    char name[64];
} runas_t;

static int resolve_user(const sup_t *s, runas_t *ra, char *err, size_t errlen)
{
    memset(ra, 0, sizeof *ra);
    if (geteuid() != 0)
        return 0;
    const char *user = s->cfg->store.embedded.user;
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        snprintf(err, errlen, "store.embedded.user '%s' does not exist (PostgreSQL cannot run as root)", user);
        return -ENOENT;
    }
    ra->drop = true;
    ra->uid = pw->pw_uid;
    ra->gid = pw->pw_gid;
    snprintf(ra->name, sizeof ra->name, "%s", user);
    return 0;
}

/* mkdir -p with mode for the parents that do not exist yet. */
static int mkdirs(const char *path, mode_t mode)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int own_dir(const char *path, const runas_t *ra, mode_t mode, char *err, size_t errlen)
{
    int rc = mkdirs(path, mode);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(-rc));
        return rc;
    }
    if (ra->drop && chown(path, ra->uid, ra->gid) < 0) {
        snprintf(err, errlen, "cannot give %s to user %s: %s", path, ra->name, strerror(errno));
        return -errno;
    }
    chmod(path, mode);
    return 0;
}

/* In a forked child: become the PostgreSQL user, or die saying why. */
static void drop_privileges(const runas_t *ra, const char *must_reach)
{
    if (ra->drop) {
        if (setgroups(0, NULL) < 0 || setgid(ra->gid) < 0 || setuid(ra->uid) < 0) {
            dprintf(STDERR_FILENO, "lodestar: cannot switch to user %s: %s\n", ra->name, strerror(errno));
            _exit(126);
        }
    }
    if (must_reach && access(must_reach, R_OK | W_OK | X_OK) < 0) {
        dprintf(STDERR_FILENO,
                "lodestar: PostgreSQL's user %s cannot use %s (%s): every parent directory must be "
                "searchable by that user\n",
                ra->drop ? ra->name : "(current)", must_reach, strerror(errno));
        _exit(126);
    }
}

/* Run a program as the PostgreSQL user and wait (bounded). stdin_text, when
 * given, is written to its standard input. Returns its exit status or -errno. */
static int run_and_wait(const runas_t *ra, const char *must_reach, char *const argv[], const char *stdin_text,
                        int timeout_s, char *err, size_t errlen)
{
    int in[2] = {-1, -1};
    if (stdin_text && pipe2(in, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return -errno;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDWR);
        dup2(stdin_text ? in[0] : devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO); /* progress chatter; errors stay on stderr */
        drop_privileges(ra, must_reach);
        execv(argv[0], argv);
        dprintf(STDERR_FILENO, "lodestar: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (stdin_text) {
        close(in[0]);
        ssize_t w = write(in[1], stdin_text, strlen(stdin_text));
        (void)w;
        close(in[1]);
    }
    int st = 0;
    for (int waited_ms = 0;; waited_ms += 50) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (waited_ms > timeout_s * 1000) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            snprintf(err, errlen, "%s did not finish within %d s", argv[0], timeout_s);
            return -ETIMEDOUT;
        }
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFEXITED(st))
        snprintf(err, errlen, "%s exited with status %d (its message is above)", argv[0], WEXITSTATUS(st));
    else
        snprintf(err, errlen, "%s was killed by signal %d", argv[0], WTERMSIG(st));
    return -EIO;
}

int pg_prepare(sup_t *s, char *err, size_t errlen)
{
    const cfg_embedded_pg_t *e = &s->cfg->store.embedded;
    runas_t ra;
    int rc = resolve_user(s, &ra, err, errlen);
    if (rc < 0)
        return rc;
    char *sockdir = cfg_pg_socket_dir(s->cfg);
    rc = own_dir(sockdir, &ra, 0700, err, errlen);
    free(sockdir);
    if (rc < 0)
        return rc;
    rc = own_dir(e->data_dir, &ra, 0700, err, errlen);
    if (rc < 0)
        return rc;

    char version_file[4200];
    snprintf(version_file, sizeof version_file, "%s/PG_VERSION", e->data_dir);
    if (access(version_file, F_OK) == 0)
        return 0;

    log_notice("store: initialising a private PostgreSQL in %s (first start)", e->data_dir);
    char initdb[4200], postgres[4200], dflag[4200];
    snprintf(initdb, sizeof initdb, "%s/initdb", e->bin_dir);
    snprintf(postgres, sizeof postgres, "%s/postgres", e->bin_dir);
    snprintf(dflag, sizeof dflag, "--pgdata=%s", e->data_dir);
    char *iargv[] = {initdb, dflag, "--username=lodestar", "--auth=trust", "--encoding=UTF8",
                     "--locale=C", NULL};
    rc = run_and_wait(&ra, e->data_dir, iargv, NULL, 120, err, errlen);
    if (rc < 0)
        return rc;
    char *sargv[] = {postgres, "--single", "-D", (char *)e->data_dir, "-F", "-c", "log_min_messages=warning",
                     "postgres", NULL};
    rc = run_and_wait(&ra, e->data_dir, sargv, "CREATE DATABASE lodestar;\n", 60, err, errlen);
    if (rc < 0)
        return rc;
    log_notice("store: private PostgreSQL initialised (database lodestar, superuser lodestar)");
    return 0;
}

int pg_start(sup_t *s, proc_t *p)
{
    const cfg_embedded_pg_t *e = &s->cfg->store.embedded;
    char err[512] = "";
    runas_t ra;
    if (resolve_user(s, &ra, err, sizeof err) < 0) {
        log_error("store: %s", err);
        return -1;
    }
    char postgres[4200], port[16];
    snprintf(postgres, sizeof postgres, "%s/postgres", e->bin_dir);
    snprintf(port, sizeof port, "%d", e->port);
    char *sockdir = cfg_pg_socket_dir(s->cfg);
    char *argv[] = {postgres, "-D", (char *)e->data_dir, "-k", sockdir, "-p", port, "-c", "listen_addresses=",
                    "-c", "log_line_prefix=%m [postgres %p] ", "-c", "log_min_messages=warning", NULL};
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, STDIN_FILENO);
        drop_privileges(&ra, NULL);
        /* after the uid change, which would clear it */
        prctl(PR_SET_PDEATHSIG, SIGINT);
        if (getppid() == 1)
            _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(postgres, argv);
        dprintf(STDERR_FILENO, "lodestar: cannot run %s: %s\n", postgres, strerror(errno));
        _exit(127);
    }
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(sockdir);
    if (pid < 0) {
        log_error("store: cannot fork PostgreSQL: %s", strerror(fork_errno));
        return -1;
    }
    p->pid = pid;
    log_info("store: started private PostgreSQL, pid %d, socket in %s/pg", (int)pid, s->cfg->runtime_dir);
    return 0;
}

/* postmaster.pid: line 1 the pid, line 8 the status ("starting", "ready",
 * "stopping", "standby"). Ready only when the pid is the one we forked. */
int pg_poll_ready(sup_t *s, char *why, size_t whylen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/postmaster.pid", s->cfg->store.embedded.data_dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, whylen, "no %s yet", path);
        return 0;
    }
    char line[512];
    int n = 0, pid = 0, ready = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        if (n == 1)
            pid = atoi(line);
        if (n == 8)
            ready = strncmp(line, "ready", 5) == 0;
    }
    fclose(f);
    if (!s->pg || pid != s->pg->pid) {
        snprintf(why, whylen, "postmaster.pid names pid %d, not ours", pid);
        return 0;
    }
    if (!ready) {
        snprintf(why, whylen, "PostgreSQL is still starting");
        return 0;
    }
    return 1;
}

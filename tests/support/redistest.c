/*
 * redistest.c: a private redis-server per test (see redistest.h).
 *
 * Rules this file keeps:
 *  - every server it starts is recorded in a small table owned by the
 *    process that started it; an atexit handler (acting only in that
 *    process, not in forked children) kills what is still running and
 *    removes the directories;
 *  - the server gets PR_SET_PDEATHSIG(SIGKILL), so it dies with the test
 *    process even on a crash;
 *  - between fork and exec the child only makes async-signal-safe calls.
 */
#include "redistest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REDISTEST_MAX_LIVE 8
#define REDISTEST_READY_MS 10000
#define REDISTEST_STOP_MS 5000

struct live {
    pid_t owner;
    redistest_t *r;
};

static struct live g_live[REDISTEST_MAX_LIVE];
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

static void remove_dir(const char *dir)
{
    if (!dir[0])
        return;
    char path[600];
    static const char *const files[] = {"redis.sock", "redis.log", "dump.rdb"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void live_add(redistest_t *r)
{
    for (int i = 0; i < REDISTEST_MAX_LIVE; i++)
        if (g_live[i].owner == 0 || kill(g_live[i].owner, 0) < 0) {
            g_live[i] = (struct live){.owner = getpid(), .r = r};
            return;
        }
}

static void live_del(redistest_t *r)
{
    for (int i = 0; i < REDISTEST_MAX_LIVE; i++)
        if (g_live[i].owner == getpid() && g_live[i].r == r)
            g_live[i] = (struct live){0};
}

static void redistest_atexit(void)
{
    for (int i = 0; i < REDISTEST_MAX_LIVE; i++)
        if (g_live[i].owner == getpid() && g_live[i].r)
            redistest_cleanup(g_live[i].r);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void log_tail(const redistest_t *r, char *out, size_t len)
{
    char path[600];
    snprintf(path, sizeof path, "%s/redis.log", r->dir);
    FILE *f = fopen(path, "r");
    out[0] = '\0';
    if (!f)
        return;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the last bytes of the log that fit (at most 600) */
    size_t keep = n < 600 ? n : 600;
    if (len && keep > len - 1)
        keep = len - 1;
    if (len) {
        memcpy(out, buf + n - keep, keep);
        out[keep] = '\0';
    }
}

redisContext *redistest_connect(const redistest_t *r)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectUnixWithTimeout(r->sock, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

static bool answers_ping(const redistest_t *r)
{
    redisContext *c = redistest_connect(r);
    if (!c)
        return false;
    redisReply *rep = redisCommand(c, "PING");
    bool ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return ok;
}

static int spawn(redistest_t *r, char *err, size_t errlen)
{
    char port[16], logf[600];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(logf, sizeof logf, "%s/redis.log", r->dir);
    char *const argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--unixsocket", r->sock,
                          "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", r->dir,
                          "--logfile", logf, "--daemonize", "no", NULL};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return -errno;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, STDIN_FILENO);
            dup2(nul, STDOUT_FILENO);
            dup2(nul, STDERR_FILENO);
        }
        setpgid(0, 0);
        execv(REDISTEST_SERVER, argv);
        _exit(127);
    }
    r->pid = pid;
    long long end = mono_ms() + REDISTEST_READY_MS;
    while (mono_ms() < end) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            r->pid = 0;
            char tail[700];
            log_tail(r, tail, sizeof tail);
            snprintf(err, errlen, "redis-server exited at start (status %d): %s", st, tail);
            return -EIO;
        }
        if (answers_ping(r))
            return 0;
        sleep_ms(20);
    }
    char tail[700];
    log_tail(r, tail, sizeof tail);
    snprintf(err, errlen, "redis-server did not answer PING within %d ms: %s", REDISTEST_READY_MS, tail);
    redistest_stop(r);
    return -ETIMEDOUT;
}

int redistest_start(redistest_t *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (access(REDISTEST_SERVER, X_OK) < 0) {
        snprintf(err, errlen, "%s is not installed (apt-get install redis-server)", REDISTEST_SERVER);
        return -ENOENT;
    }
    snprintf(r->dir, sizeof r->dir, "/tmp/lodestar-redis-XXXXXX");
    if (!mkdtemp(r->dir)) {
        snprintf(err, errlen, "mkdtemp: %s", strerror(errno));
        r->dir[0] = '\0';
        return -errno;
    }
    snprintf(r->sock, sizeof r->sock, "%s/redis.sock", r->dir);
    snprintf(r->address, sizeof r->address, "unix:%s", r->sock);
    r->port = free_port();
    if (r->port < 0) {
        snprintf(err, errlen, "no free loopback port");
        remove_dir(r->dir);
        return -EADDRNOTAVAIL;
    }
    if (!g_atexit_done) {
        atexit(redistest_atexit);
        g_atexit_done = true;
    }
    int rc = spawn(r, err, errlen);
    if (rc < 0) {
        remove_dir(r->dir);
        r->dir[0] = '\0';
        return rc;
    }
    live_add(r);
    return 0;
}

int redistest_stop(redistest_t *r)
{
    if (!r->pid)
        return -ESRCH;
    kill(r->pid, SIGTERM);
    long long end = mono_ms() + REDISTEST_STOP_MS;
    int st;
    while (waitpid(r->pid, &st, WNOHANG) == 0) {
        if (mono_ms() > end) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &st, 0);
            break;
        }
        sleep_ms(10);
    }
    r->pid = 0;
    return 0;
}

int redistest_restart(redistest_t *r, char *err, size_t errlen)
{
    if (r->pid) {
        snprintf(err, errlen, "redis-server is still running (pid %d)", (int)r->pid);
        return -EBUSY;
    }
    if (!r->dir[0]) {
        snprintf(err, errlen, "no server was started");
        return -EINVAL;
    }
    return spawn(r, err, errlen);
}

void redistest_cleanup(redistest_t *r)
{
    if (!r)
        return;
    if (r->pid)
        redistest_stop(r);
    remove_dir(r->dir);
    r->dir[0] = '\0';
    live_del(r);
}

/*
 * lstest.c: see lstest.h.
 */
#include "lstest.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ipc.h"

void lstest_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

long long lstest_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int lstest_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

void lstest_write_config(lstest_t *t, const char *extra)
{
    FILE *f = fopen(t->config, "w");
    cr_assert(f, "cannot write %s", t->config);
    char store[1200];
    if (t->dsn[0])
        snprintf(store, sizeof store, "store:\n  dsn: \"%s\"\n", t->dsn);
    else
        snprintf(store, sizeof store, "store:\n  embedded:\n    data_dir: %s/pgdata\n", t->dir);
    fprintf(f,
            "runtime_dir: %s\n"
            "logging:\n  level: info\n%s"
            "supervisor:\n"
            "  restart_backoff_initial_ms: 100\n"
            "  ping_interval_ms: 500\n"
            "  shutdown_timeout_ms: 8000\n"
            "  drain_timeout_ms: 3000\n"
            "%s"
            "listeners:\n"
            "  - {name: polaris-http, protocol: polaris-http, address: 127.0.0.1, port: %d}\n"
            "  - {name: polaris-grpc-naming, protocol: polaris-grpc, address: 127.0.0.1, port: %d}\n"
            "  - {name: polaris-grpc-config, protocol: polaris-grpc, address: 127.0.0.1, port: %d}\n"
            "%s",
            t->runtime, t->logging_extra, store, t->http_port, t->grpc_port, t->grpc_config_port, extra ? extra : "");
    fclose(f);
}

static void init_paths(lstest_t *t)
{
    if (t->dir[0])
        return;
    snprintf(t->dir, sizeof t->dir, "/tmp/lodestar-it-XXXXXX");
    cr_assert(mkdtemp(t->dir), "mkdtemp: %s", strerror(errno));
    chmod(t->dir, 0755); /* the private PostgreSQL's user must reach it */
    snprintf(t->config, sizeof t->config, "%s/lodestar.yaml", t->dir);
    snprintf(t->log, sizeof t->log, "%s/lodestar.log", t->dir);
    snprintf(t->runtime, sizeof t->runtime, "%s/run", t->dir);
    t->http_port = lstest_free_port();
    t->grpc_port = lstest_free_port();
    t->grpc_config_port = lstest_free_port();
}

pid_t lstest_spawn(lstest_t *t, char *const extra_env[])
{
    init_paths(t);
    struct stat st;
    if (stat(t->config, &st) < 0)
        lstest_write_config(t, NULL);
    const char *bin = getenv("LODESTAR_BIN_DIR");
    cr_assert(bin, "LODESTAR_BIN_DIR is not set (run through ctest)");
    char exe[512];
    snprintf(exe, sizeof exe, "%s/lodestar", bin);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        /* the supervisor stops gracefully if the test process dies */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        int fd = open(t->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        for (size_t i = 0; extra_env && extra_env[i]; i++)
            putenv(extra_env[i]);
        setpgid(0, 0);
        execl(exe, "lodestar", "-c", t->config, (char *)NULL);
        _exit(127);
    }
    t->pid = pid;
    return pid;
}

void lstest_prepare(lstest_t *t, const char *extra)
{
    init_paths(t);
    lstest_write_config(t, extra);
}

void lstest_start(lstest_t *t, const char *extra, int timeout_ms)
{
    lstest_prepare(t, extra);
    lstest_spawn(t, NULL);
    if (!lstest_wait_ready(t, timeout_ms)) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "tail -n 40 %s >&2", t->log);
        int rc = system(cmd);
        (void)rc;
        cr_assert_fail("lodestar did not become ready within %d ms (log above)", timeout_ms);
    }
}

/* One blocking request on the control socket. */
Lodestar__StatusResponse *lstest_status(const lstest_t *t, int timeout_ms)
{
    char path[600];
    snprintf(path, sizeof path, "%s/control.sock", t->runtime);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) {
        close(fd);
        return NULL;
    }
    memcpy(a.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return NULL;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    Lodestar__StatusRequest req = LODESTAR__STATUS_REQUEST__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_STATUS_REQUEST;
    env.status_request = &req;
    uint8_t *buf;
    size_t len;
    if (ipc_frame_encode(IPC_KIND_REQUEST, 1, &env, IPC_DEFAULT_MAX_FRAME, &buf, &len) < 0) {
        close(fd);
        return NULL;
    }
    ssize_t w = write(fd, buf, len);
    free(buf);
    if (w != (ssize_t)len) {
        close(fd);
        return NULL;
    }
    uint8_t hdr[IPC_HEADER_SIZE];
    size_t got = 0;
    while (got < IPC_HEADER_SIZE) {
        ssize_t n = read(fd, hdr + got, IPC_HEADER_SIZE - got);
        if (n <= 0) {
            close(fd);
            return NULL;
        }
        got += (size_t)n;
    }
    ipc_header_t h;
    char err[128];
    if (ipc_header_decode(hdr, IPC_DEFAULT_MAX_FRAME, &h, err, sizeof err) < 0) {
        close(fd);
        return NULL;
    }
    uint8_t *body = malloc(h.length ? h.length : 1);
    got = 0;
    while (got < h.length) {
        ssize_t n = read(fd, body + got, h.length - got);
        if (n <= 0) {
            free(body);
            close(fd);
            return NULL;
        }
        got += (size_t)n;
    }
    close(fd);
    Lodestar__Envelope *reply = lodestar__envelope__unpack(NULL, h.length, body);
    free(body);
    if (!reply || reply->body_case != LODESTAR__ENVELOPE__BODY_STATUS_RESPONSE) {
        if (reply)
            lodestar__envelope__free_unpacked(reply, NULL);
        return NULL;
    }
    /* hand out the inner message alone: re-pack it */
    size_t sl = lodestar__status_response__get_packed_size(reply->status_response);
    uint8_t *sb = malloc(sl ? sl : 1);
    lodestar__status_response__pack(reply->status_response, sb);
    lodestar__envelope__free_unpacked(reply, NULL);
    Lodestar__StatusResponse *sr = lodestar__status_response__unpack(NULL, sl, sb);
    free(sb);
    return sr;
}

pid_t lstest_pid(const lstest_t *t, const char *role)
{
    Lodestar__StatusResponse *sr = lstest_status(t, 2000);
    if (!sr)
        return 0;
    pid_t pid = 0;
    for (size_t i = 0; i < sr->n_processes; i++)
        if (strcmp(sr->processes[i]->role, role) == 0)
            pid = sr->processes[i]->pid;
    lodestar__status_response__free_unpacked(sr, NULL);
    return pid;
}

static bool all_ready(Lodestar__StatusResponse *sr)
{
    if (strcmp(sr->state, "running") != 0)
        return false;
    for (size_t i = 0; i < sr->n_processes; i++)
        if (strcmp(sr->processes[i]->state, "ready") != 0 && strcmp(sr->processes[i]->state, "disabled") != 0)
            return false;
    return true;
}

bool lstest_wait_ready(const lstest_t *t, int timeout_ms)
{
    long long end = lstest_now_ms() + timeout_ms;
    while (lstest_now_ms() < end) {
        Lodestar__StatusResponse *sr = lstest_status(t, 1000);
        if (sr) {
            bool ok = all_ready(sr);
            lodestar__status_response__free_unpacked(sr, NULL);
            if (ok)
                return true;
        }
        int st;
        if (t->pid && waitpid(t->pid, &st, WNOHANG) == t->pid)
            return false;
        lstest_sleep_ms(20);
    }
    return false;
}

pid_t lstest_wait_restarted(const lstest_t *t, const char *role, pid_t old_pid, int timeout_ms)
{
    long long end = lstest_now_ms() + timeout_ms;
    while (lstest_now_ms() < end) {
        Lodestar__StatusResponse *sr = lstest_status(t, 1000);
        if (sr) {
            pid_t found = 0;
            for (size_t i = 0; i < sr->n_processes; i++) {
                Lodestar__ProcessStatus *p = sr->processes[i];
                if (strcmp(p->role, role) == 0 && p->pid && p->pid != old_pid && strcmp(p->state, "ready") == 0)
                    found = p->pid;
            }
            lodestar__status_response__free_unpacked(sr, NULL);
            if (found)
                return found;
        }
        lstest_sleep_ms(10);
    }
    return 0;
}

int lstest_stop(lstest_t *t, int timeout_ms)
{
    if (!t->pid)
        return t->exit_status;
    kill(t->pid, SIGTERM);
    long long end = lstest_now_ms() + timeout_ms;
    int st;
    while (lstest_now_ms() < end) {
        pid_t r = waitpid(t->pid, &st, WNOHANG);
        if (r == t->pid) {
            t->pid = 0;
            t->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            return t->exit_status;
        }
        lstest_sleep_ms(20);
    }
    kill(-t->pid, SIGKILL);
    kill(t->pid, SIGKILL);
    waitpid(t->pid, &st, 0);
    t->pid = 0;
    t->exit_status = -1;
    return -1;
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            rm_rf(sub);
        else
            unlink(sub);
    }
    closedir(d);
    rmdir(path);
}

/* Every process of the instance logs into t->log (stderr included, so
 * sanitizer reports land there too). A clean run has no sanitizer report
 * and no process that ended its stop with a failure. */
static void assert_clean_log(const lstest_t *t)
{
    static const char *const bad[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                                      "stopped: exit 1", "stopped: exit 2", "stopped: exit 23", "stopped: signal",
                                      "exited unexpectedly (exit"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (lstest_file_contains(t->log, bad[i])) {
            char cmd[700];
            snprintf(cmd, sizeof cmd, "grep -n -B2 -A20 '%s' %s | head -60 >&2", bad[i], t->log);
            int rc = system(cmd);
            (void)rc;
            cr_assert_fail("'%s' in %s (excerpt above)", bad[i], t->log);
        }
}

void lstest_cleanup(lstest_t *t)
{
    if (t->pid)
        lstest_stop(t, 10000);
    if (t->log[0])
        assert_clean_log(t);
    if (t->dir[0] && !getenv("LODESTAR_KEEP_TEST_DIRS"))
        rm_rf(t->dir);
}

static int connect_to(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, timeout_ms) != 1) {
        close(fd);
        return -ETIMEDOUT;
    }
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
        close(fd);
        return -err;
    }
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

int lstest_connect(int port, int timeout_ms)
{
    int fd = connect_to(port, timeout_ms);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

int lstest_http_get(int port, const char *path, char **body, int timeout_ms)
{
    if (body)
        *body = NULL;
    int fd = connect_to(port, timeout_ms);
    if (fd < 0)
        return fd;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -EIO;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1024 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno == EAGAIN ? ETIMEDOUT : errno;
            free(buf);
            close(fd);
            return -e;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return -EPROTO;
    }
    char *b = strstr(buf, "\r\n\r\n");
    if (body)
        *body = strdup(b ? b + 4 : "");
    free(buf);
    return status;
}

/* Sends everything; a peer that closed gives -EPIPE or -ECONNRESET (no
 * SIGPIPE), after which its answer may still be read. */
static int write_all(int fd, const char *p, size_t len)
{
    while (len) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? (errno == EAGAIN ? -ETIMEDOUT : -errno) : -EIO;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Splits the first answer in r->raw into status, headers and body. */
static int parse_answer(lstest_http_resp_t *r)
{
    int status = 0;
    if (sscanf(r->raw, "HTTP/1.%*d %d", &status) != 1)
        return -EPROTO;
    const char *line_end = strstr(r->raw, "\r\n");
    const char *head_end = strstr(r->raw, "\r\n\r\n");
    if (!line_end || !head_end)
        return -EPROTO;
    size_t hl = (size_t)(head_end + 2 - (line_end + 2));
    r->headers = strndup(line_end + 2, hl);
    const char *b = head_end + 4;
    size_t avail = r->raw_len - (size_t)(b - r->raw);
    char *cl = lstest_http_header(r, "Content-Length");
    size_t blen = cl ? (size_t)strtoull(cl, NULL, 10) : avail;
    free(cl);
    if (blen > avail)
        blen = avail;
    r->body = malloc(blen + 1);
    memcpy(r->body, b, blen);
    r->body[blen] = '\0';
    r->body_len = blen;
    return status;
}

int lstest_http_raw(int port, const void *request, size_t len, lstest_http_resp_t *r, int timeout_ms)
{
    memset(r, 0, sizeof *r);
    int fd = connect_to(port, timeout_ms);
    if (fd < 0)
        return r->status = fd;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int rc = write_all(fd, request, len);
    if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET) {
        close(fd);
        return r->status = rc;
    }
    size_t cap = 8192;
    r->raw = malloc(cap);
    for (;;) {
        if (r->raw_len + 4096 > cap)
            r->raw = realloc(r->raw, cap *= 2);
        ssize_t n = read(fd, r->raw + r->raw_len, cap - r->raw_len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == ECONNRESET && r->raw_len)
            break; /* a reset after the answer: what arrived still counts */
        if (n < 0) {
            int e = errno == EAGAIN ? ETIMEDOUT : errno;
            r->raw[r->raw_len] = '\0';
            close(fd);
            return r->status = -e;
        }
        if (n == 0)
            break;
        r->raw_len += (size_t)n;
    }
    close(fd);
    r->raw[r->raw_len] = '\0';
    return r->status = parse_answer(r);
}

int lstest_http(int port, const char *method, const char *path, const char *content_type, const char *body,
                size_t body_len, lstest_http_resp_t *r, int timeout_ms)
{
    char head[2048];
    int n;
    if (body)
        n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, content_type ? content_type : "application/json", body_len);
    else
        n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method,
                     path);
    size_t total = (size_t)n + (body ? body_len : 0);
    char *req = malloc(total);
    memcpy(req, head, (size_t)n);
    if (body)
        memcpy(req + n, body, body_len);
    int rc = lstest_http_raw(port, req, total, r, timeout_ms);
    free(req);
    return rc;
}

char *lstest_http_header(const lstest_http_resp_t *r, const char *name)
{
    if (!r->headers)
        return NULL;
    size_t nl = strlen(name);
    for (const char *p = r->headers; *p;) {
        const char *e = strstr(p, "\r\n");
        if (!e)
            break;
        if ((size_t)(e - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(e - v));
        }
        p = e + 2;
    }
    return NULL;
}

void lstest_http_resp_free(lstest_http_resp_t *r)
{
    free(r->headers);
    free(r->body);
    free(r->raw);
    memset(r, 0, sizeof *r);
}

/* Reads a /proc file whose entries are NUL-separated, as one string. */
static bool read_proc_text(int pid, const char *what, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, what);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0)
        return false;
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    buf[n] = '\0';
    return true;
}

int lstest_count_procs_matching(const char *needle)
{
    DIR *d = opendir("/proc");
    int count = 0;
    struct dirent *e;
    static char text[65536];
    while ((e = readdir(d))) {
        int pid = atoi(e->d_name);
        if (pid <= 0 || pid == getpid())
            continue;
        char stat[512];
        /* zombies are not alive: they only wait for their parent */
        if (read_proc_text(pid, "stat", stat, sizeof stat)) {
            char *rp = strrchr(stat, ')');
            if (rp && rp[1] == ' ' && rp[2] == 'Z')
                continue;
        }
        if ((read_proc_text(pid, "cmdline", text, sizeof text) && strstr(text, needle)) ||
            (read_proc_text(pid, "environ", text, sizeof text) && strstr(text, needle)))
            count++;
    }
    closedir(d);
    return count;
}

bool lstest_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    size_t n = fread(buf, 1, (size_t)sz, f);
    buf[n] = '\0';
    fclose(f);
    bool found = strstr(buf, needle) != NULL;
    free(buf);
    return found;
}

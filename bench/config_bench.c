/*
 * config_bench.c: load generator for the config centre.
 *
 *   lodestar-config-bench read GRPC_TARGET CONCURRENCY SECONDS GROUP FILE
 *       GetConfigFile over gRPC, CONCURRENCY unary calls in flight
 *   lodestar-config-bench http-read HTTP_PORT CONCURRENCY SECONDS GROUP FILE
 *       GET /v1/GetConfigFile over CONCURRENCY keep-alive HTTP/1.1 connections
 *   lodestar-config-bench watch GRPC_TARGET HTTP_PORT WATCHERS CHANNELS GROUP FILE
 *       WATCHERS WatchConfigFiles long polls spread over CHANNELS HTTP/2
 *       connections, holding the file's current version; once all are held,
 *       reads VmRSS of every pid in $LODESTAR_PIDS (before and after), then
 *       publishes the file over HTTP and times each watcher's answer from the
 *       moment the release request was sent
 *
 * Output, one line per mode:
 *   mode=read ops=N seconds=S ops_per_s=X p50_us=A p99_us=B errors=E
 *   mode=watch watchers=N channels=C held=H publish=ok|failed rss_before_kib=A rss_after_kib=B
 *       rss_per_watcher_b=C woken=W other=O first_ms=F p50_ms=P p99_ms=Q last_ms=L
 *       wake_cpu_ms=X bench_cpu_ms=Y
 *   (watch: times from the release request; wake_cpu_ms is the CPU time
 *   all Lodestar processes used from the release request to the last
 *   answer, bench_cpu_ms this process's; on stderr, one line per Lodestar
 *   process whose RSS moved by 1 MiB or more while the watchers were held)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "polaris_config_file.pb-c.h"
#include "polaris_config_file_response.pb-c.h"

#define M_GET "/v1.PolarisConfigGRPC/GetConfigFile"
#define M_WATCH "/v1.PolarisConfigGRPC/WatchConfigFiles"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static Google__Protobuf__StringValue *sv(Google__Protobuf__StringValue *w, const char *v)
{
    google__protobuf__string_value__init(w);
    w->value = (char *)v;
    return w;
}

/* ------------------------------------------------------------ gRPC calls */

typedef struct call {
    grpc_call *c;
    grpc_metadata_array init_md, trail_md;
    grpc_byte_buffer *send, *recv;
    grpc_status_code status;
    grpc_slice details;
    double started;
    size_t idx;
} call_t;

/* One channel (its own HTTP/2 connection). `lean`: no retry filter and a
 * minimal filter stack (no client deadline timers, no compression), so the
 * load generator spends as little as it can per answer; the watch mode
 * shares the machine's cores with the gateway it measures. */
static grpc_channel *open_channel(const char *target, int i, bool lean)
{
    grpc_arg args[4];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[0].value.integer = 1;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = "lodestar.bench.channel"; /* distinct args: distinct connections */
    args[1].value.integer = i;
    size_t na = 2;
    if (lean) {
        args[na].type = GRPC_ARG_INTEGER;
        args[na].key = GRPC_ARG_MINIMAL_STACK;
        args[na].value.integer = 1;
        na++;
        args[na].type = GRPC_ARG_INTEGER;
        args[na].key = GRPC_ARG_ENABLE_RETRIES;
        args[na].value.integer = 0;
        na++;
    }
    grpc_channel_args ca = {na, args};
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, cr, &ca);
    grpc_channel_credentials_release(cr);
    return ch;
}

static int start_call(call_t *k, grpc_channel *ch, grpc_completion_queue *cq, const char *method,
                      const uint8_t *req, size_t len, int deadline_ms)
{
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
    k->c = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, grpc_slice_from_static_string(method), NULL,
                                    dl, NULL);
    grpc_metadata_array_init(&k->init_md);
    grpc_metadata_array_init(&k->trail_md);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)req, len);
    k->send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    k->recv = NULL;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = k->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &k->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &k->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &k->status;
    ops[5].data.recv_status_on_client.status_details = &k->details;
    ops[5].data.recv_status_on_client.trailing_metadata = &k->trail_md;
    k->started = now_s();
    return grpc_call_start_batch(k->c, ops, 6, k, NULL) == GRPC_CALL_OK ? 0 : -1;
}

/* Decode the answer's Polaris code and version; frees the call's parts. */
static uint32_t finish_call(call_t *k, uint64_t *version)
{
    uint32_t code = 0;
    if (k->status == GRPC_STATUS_OK && k->recv) {
        grpc_byte_buffer_reader rd;
        grpc_byte_buffer_reader_init(&rd, k->recv);
        grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        V1__ConfigClientResponse *r =
            v1__config_client_response__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
        grpc_slice_unref(all);
        if (r) {
            code = r->code ? r->code->value : 0;
            if (version)
                *version = r->configfile && r->configfile->version ? r->configfile->version->value : 0;
            v1__config_client_response__free_unpacked(r, NULL);
        }
    }
    if (k->recv)
        grpc_byte_buffer_destroy(k->recv);
    grpc_byte_buffer_destroy(k->send);
    grpc_metadata_array_destroy(&k->init_md);
    grpc_metadata_array_destroy(&k->trail_md);
    grpc_slice_unref(k->details);
    grpc_call_unref(k->c);
    k->c = NULL;
    return code;
}

static size_t pack_get(uint8_t *buf, const char *group, const char *file)
{
    Google__Protobuf__StringValue a, b, c;
    V1__ClientConfigFileInfo q = V1__CLIENT_CONFIG_FILE_INFO__INIT;
    q.namespace_ = sv(&a, "default");
    q.group = sv(&b, group);
    q.file_name = sv(&c, file);
    return v1__client_config_file_info__pack(&q, buf);
}

static int mode_read(const char *target, int conc, int secs, const char *group, const char *file)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    enum { NCH = 4 };
    grpc_channel *ch[NCH];
    for (int i = 0; i < NCH; i++)
        ch[i] = open_channel(target, i, false);
    uint8_t req[512];
    size_t len = pack_get(req, group, file);
    call_t *calls = calloc((size_t)conc, sizeof *calls);
    size_t cap = 1 << 22, n = 0, errors = 0;
    uint32_t *lat = malloc(cap * sizeof *lat);
    double t0 = now_s(), end = t0 + secs;
    for (int i = 0; i < conc; i++) {
        calls[i].idx = (size_t)i;
        start_call(&calls[i], ch[i % NCH], cq, M_GET, req, len, 10000);
    }
    int live = conc;
    while (live > 0) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        call_t *k = ev.tag;
        double t = now_s();
        uint32_t code = finish_call(k, NULL);
        if (code != 200000)
            errors++;
        else if (n < cap)
            lat[n++] = (uint32_t)((t - k->started) * 1e6);
        if (t < end)
            start_call(k, ch[k->idx % NCH], cq, M_GET, req, len, 10000);
        else
            live--;
    }
    double secs_done = now_s() - t0;
    qsort(lat, n, sizeof *lat, cmp_u32);
    printf("mode=read ops=%zu seconds=%.2f ops_per_s=%.0f p50_us=%u p99_us=%u errors=%zu\n", n, secs_done,
           n / secs_done, n ? lat[n / 2] : 0, n ? lat[n * 99 / 100] : 0, errors);
    for (int i = 0; i < NCH; i++)
        grpc_channel_destroy(ch[i]);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    free(calls);
    free(lat);
    return errors ? 1 : 0;
}

/* ------------------------------------------------------------------ HTTP */

static int http_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* One blocking request on a fresh connection; returns the body's code. */
static int http_once(int port, const char *method, const char *path, const char *body)
{
    int fd = http_connect(port);
    if (fd < 0)
        return -1;
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     method, path, body ? strlen(body) : 0, body ? body : "");
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    char resp[8192];
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)r;
    resp[got] = '\0';
    close(fd);
    return strstr(resp, "\"code\":200000") ? 200000 : -1;
}

typedef struct hconn {
    int fd;
    char buf[16384];
    size_t len;
    double started;
} hconn_t;

/* A complete answer in c->buf: its total length, else 0. */
static size_t http_complete(const hconn_t *c)
{
    const char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    const char *cl = memmem(c->buf, (size_t)(end - c->buf), "Content-Length:", 15);
    if (!cl)
        cl = memmem(c->buf, (size_t)(end - c->buf), "content-length:", 15);
    size_t body = cl ? strtoul(cl + 15, NULL, 10) : 0;
    size_t total = (size_t)(end - c->buf) + 4 + body;
    return c->len >= total ? total : 0;
}

static int mode_http_read(int port, int conc, int secs, const char *group, const char *file)
{
    char req[512];
    int rl = snprintf(req, sizeof req,
                      "GET /v1/GetConfigFile?namespace=default&group=%s&fileName=%s HTTP/1.1\r\nHost: x\r\n\r\n",
                      group, file);
    hconn_t *cs = calloc((size_t)conc, sizeof *cs);
    struct pollfd *p = calloc((size_t)conc, sizeof *p);
    size_t cap = 1 << 22, n = 0, errors = 0;
    uint32_t *lat = malloc(cap * sizeof *lat);
    for (int i = 0; i < conc; i++) {
        cs[i].fd = http_connect(port);
        if (cs[i].fd < 0) {
            fprintf(stderr, "connect failed\n");
            return 1;
        }
        cs[i].started = now_s();
        if (write(cs[i].fd, req, (size_t)rl) != rl)
            errors++;
    }
    double t0 = now_s(), end = t0 + secs;
    int live = conc;
    bool *done = calloc((size_t)conc, sizeof *done);
    while (live > 0) {
        for (int i = 0; i < conc; i++)
            p[i] = (struct pollfd){.fd = done[i] ? -1 : cs[i].fd, .events = POLLIN};
        if (poll(p, (nfds_t)conc, 1000) <= 0)
            continue;
        for (int i = 0; i < conc; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            hconn_t *c = &cs[i];
            ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            if (r <= 0) {
                errors++;
                done[i] = true;
                live--;
                continue;
            }
            c->len += (size_t)r;
            size_t tot = http_complete(c);
            if (!tot)
                continue;
            double t = now_s();
            if (strstr(c->buf, "\"code\":200000") && n < cap)
                lat[n++] = (uint32_t)((t - c->started) * 1e6);
            else
                errors++;
            memmove(c->buf, c->buf + tot, c->len - tot);
            c->len -= tot;
            if (t < end) {
                c->started = t;
                if (write(c->fd, req, (size_t)rl) != rl)
                    errors++;
            } else {
                done[i] = true;
                live--;
            }
        }
    }
    double secs_done = now_s() - t0;
    qsort(lat, n, sizeof *lat, cmp_u32);
    printf("mode=http-read ops=%zu seconds=%.2f ops_per_s=%.0f p50_us=%u p99_us=%u errors=%zu\n", n, secs_done,
           n / secs_done, n ? lat[n / 2] : 0, n ? lat[n * 99 / 100] : 0, errors);
    for (int i = 0; i < conc; i++)
        close(cs[i].fd);
    free(cs);
    free(p);
    free(done);
    free(lat);
    return errors ? 1 : 0;
}

/* ----------------------------------------------------------------- watch */

#define RSS_MAX_PIDS 64

/* VmRSS of some processes, each with a label. */
typedef struct rss_snap {
    size_t n;
    long pid[RSS_MAX_PIDS], kib[RSS_MAX_PIDS];
    char label[RSS_MAX_PIDS][48];
} rss_snap_t;

/* A process's label: its argv[0] (a child's title, "lodestar: config
 * worker") and argv[1] when that is not an option. */
static void proc_label(const char *pid, char *out, size_t len)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%s/cmdline", pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    const char *a0 = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
    const char *a1 = strlen(buf) + 1 < n ? buf + strlen(buf) + 1 : "";
    snprintf(out, len, "%s%s%.20s", a0, *a1 && *a1 != '-' ? ":" : "", *a1 && *a1 != '-' ? a1 : "");
}

/* Sum of VmRSS (KiB) of the pids in $LODESTAR_PIDS (space separated);
 * each one's in *snap too when given. */
static long rss_kib(rss_snap_t *snap)
{
    const char *pids = getenv("LODESTAR_PIDS");
    if (!pids)
        return -1;
    long sum = 0;
    if (snap)
        snap->n = 0;
    char *copy = strdup(pids), *save = NULL;
    for (char *t = strtok_r(copy, " ,", &save); t; t = strtok_r(NULL, " ,", &save)) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%s/status", t);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        long kib = 0;
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "VmRSS:", 6) == 0)
                kib = strtol(line + 6, NULL, 10);
        fclose(f);
        sum += kib;
        if (snap && snap->n < RSS_MAX_PIDS) {
            snap->pid[snap->n] = strtol(t, NULL, 10);
            snap->kib[snap->n] = kib;
            proc_label(t, snap->label[snap->n], sizeof snap->label[0]);
            snap->n++;
        }
    }
    free(copy);
    return sum;
}

/* CPU time (ms, user + system) used so far by the pids in $LODESTAR_PIDS. */
static double lodestar_cpu_ms(void)
{
    const char *pids = getenv("LODESTAR_PIDS");
    if (!pids)
        return -1;
    double ticks = 0;
    char *copy = strdup(pids), *save = NULL;
    for (char *t = strtok_r(copy, " ,", &save); t; t = strtok_r(NULL, " ,", &save)) {
        char path[64], line[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", t);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(line, sizeof line, f)) {
            /* fields 14 and 15 (utime, stime) follow the ")" that ends comm */
            const char *p = strrchr(line, ')');
            unsigned long ut = 0, st = 0;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
                ticks += (double)(ut + st);
        }
        fclose(f);
    }
    free(copy);
    return ticks * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One line per process whose RSS moved by at least 1 MiB, to stderr. */
static void rss_report(const rss_snap_t *a, const rss_snap_t *b, size_t held)
{
    for (size_t i = 0; i < b->n; i++) {
        long was = 0;
        for (size_t j = 0; j < a->n; j++)
            if (a->pid[j] == b->pid[i])
                was = a->kib[j];
        if (b->kib[i] - was < 1024 && was - b->kib[i] < 1024)
            continue;
        fprintf(stderr, "  rss pid=%ld %s before_kib=%ld after_kib=%ld per_watcher_b=%.0f\n", b->pid[i],
                b->label[i], was, b->kib[i], held ? (b->kib[i] - was) * 1024.0 / (double)held : 0.0);
    }
}

static uint64_t current_version(const char *target, const char *group, const char *file, grpc_channel *ch,
                                grpc_completion_queue *cq)
{
    (void)target;
    uint8_t req[512];
    size_t len = pack_get(req, group, file);
    call_t k = {0};
    start_call(&k, ch, cq, M_GET, req, len, 5000);
    grpc_event ev;
    do
        ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    while (ev.type != GRPC_OP_COMPLETE);
    uint64_t v = 0;
    finish_call(&k, &v);
    return v;
}

static int mode_watch(const char *target, int http_port, int n, int nch, const char *group, const char *file)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_channel **ch = calloc((size_t)nch, sizeof *ch);
    for (int i = 0; i < nch; i++)
        ch[i] = open_channel(target, i, true);
    uint64_t have = current_version(target, group, file, ch[0], cq);
    static rss_snap_t snap0, snap1;
    long before = rss_kib(&snap0);

    Google__Protobuf__StringValue a, b, c;
    Google__Protobuf__UInt64Value v = GOOGLE__PROTOBUF__UINT64_VALUE__INIT;
    v.value = have;
    V1__ClientConfigFileInfo f = V1__CLIENT_CONFIG_FILE_INFO__INIT, *fp = &f;
    f.namespace_ = sv(&a, "default");
    f.group = sv(&b, group);
    f.file_name = sv(&c, file);
    f.version = &v;
    V1__ClientWatchConfigFileRequest w = V1__CLIENT_WATCH_CONFIG_FILE_REQUEST__INIT;
    w.watch_files = &fp;
    w.n_watch_files = 1;
    uint8_t req[512];
    size_t len = v1__client_watch_config_file_request__pack(&w, req);

    call_t *calls = calloc((size_t)n, sizeof *calls);
    for (int i = 0; i < n; i++) {
        calls[i].idx = (size_t)i;
        if (start_call(&calls[i], ch[i % nch], cq, M_WATCH, req, len, 120000) < 0) {
            fprintf(stderr, "call %d could not start\n", i);
            return 1;
        }
    }
    /* Let the server hold them; any early answer is an error (counted). */
    size_t early = 0;
    double settle_end = now_s() + 5 + n / 20000.0;
    while (now_s() < settle_end) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(200, GPR_TIMESPAN)), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            early++;
            finish_call(ev.tag, NULL);
        }
    }
    long after = rss_kib(&snap1);
    size_t held = (size_t)n - early;
    rss_report(&snap0, &snap1, held);

    char body[512];
    snprintf(body, sizeof body,
             "{\"namespace\":\"default\",\"group\":\"%s\",\"name\":\"%s\",\"content\":\"bench-%ld\",\"format\":"
             "\"text\"}",
             group, file, (long)time(NULL));
    http_once(http_port, "PUT", "/config/v1/configfiles", body);
    snprintf(body, sizeof body, "{\"namespace\":\"default\",\"group\":\"%s\",\"file_name\":\"%s\"}", group, file);
    double cpu0 = lodestar_cpu_ms(), self0 = self_cpu_ms();
    double t0 = now_s();
    int pub = http_once(http_port, "POST", "/config/v1/configfiles/release", body);
    uint32_t *ms = malloc(held * sizeof *ms);
    size_t woken = 0, other = 0;
    double last = 0;
    while (woken + other < held) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(30000, GPR_TIMESPAN)), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        double t = now_s();
        uint64_t ver = 0;
        if (finish_call(ev.tag, &ver) == 200000 && ver > have) {
            ms[woken++] = (uint32_t)((t - t0) * 1000);
            last = t;
        } else {
            other++;
        }
    }
    double cpu1 = lodestar_cpu_ms(), self1 = self_cpu_ms();
    qsort(ms, woken, sizeof *ms, cmp_u32);
    printf("mode=watch watchers=%d channels=%d held=%zu publish=%s rss_before_kib=%ld rss_after_kib=%ld "
           "rss_per_watcher_b=%.0f woken=%zu other=%zu first_ms=%u p50_ms=%u p99_ms=%u last_ms=%.0f wake_cpu_ms=%.0f "
           "bench_cpu_ms=%.0f\n",
           n, nch, held, pub == 200000 ? "ok" : "failed", before, after,
           held ? (after - before) * 1024.0 / held : 0.0, woken, other, woken ? ms[0] : 0, woken ? ms[woken / 2] : 0,
           woken ? ms[woken * 99 / 100] : 0, woken ? (last - t0) * 1000 : 0, cpu1 - cpu0, self1 - self0);
    for (int i = 0; i < nch; i++)
        grpc_channel_destroy(ch[i]);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    free(ch);
    free(calls);
    free(ms);
    return woken == held && early == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (argc == 7 && strcmp(argv[1], "http-read") == 0)
        return mode_http_read(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), argv[5], argv[6]);
    grpc_init();
    int rc = 2;
    if (argc == 7 && strcmp(argv[1], "read") == 0)
        rc = mode_read(argv[2], atoi(argv[3]), atoi(argv[4]), argv[5], argv[6]);
    else if (argc == 8 && strcmp(argv[1], "watch") == 0)
        rc = mode_watch(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), argv[6], argv[7]);
    else
        fprintf(stderr, "usage: see the header of bench/config_bench.c\n");
    grpc_shutdown();
    return rc;
}

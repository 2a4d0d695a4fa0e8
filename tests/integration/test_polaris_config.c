/*
 * test_polaris_config.c: the config centre end to end: the real supervisor
 * with PostgreSQL, the config OpenAPI over HTTP (8090 role), the Polaris
 * config gRPC API (8093 role) and the HTTP client API. Covers CRUD, publish
 * and read, history and rollback, beta targeting by client IP and label,
 * watch wake-up latency after a publish, the watch timeout answer, gRPC
 * watchers of alike files each woken with their own file, 1,000
 * concurrent HTTP long polls woken by one publish, durability across a
 * restart, and kill -9 of the config worker while watchers wait.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "grpc_client.h"
#include "lstest.h"
#include "polaris_config_file.pb-c.h"
#include "polaris_config_file_response.pb-c.h"

#define M_GET "/v1.PolarisConfigGRPC/GetConfigFile"
#define M_WATCH "/v1.PolarisConfigGRPC/WatchConfigFiles"
#define M_PUBLISH "/v1.PolarisConfigGRPC/PublishConfigFile"
#define M_CREATE "/v1.PolarisConfigGRPC/CreateConfigFile"
#define M_META "/v1.PolarisConfigGRPC/GetConfigFileMetadataList"

static lstest_t T;
static char target[64];

/* ---------------------------------------------------------- helpers */

static int http(const char *method, const char *path, const char *body, char **out)
{
    lstest_http_resp_t r = {0};
    int st = lstest_http(T.http_port, method, path, NULL, body, body ? strlen(body) : 0, &r, 10000);
    if (out)
        *out = r.body ? strdup(r.body) : strdup("");
    lstest_http_resp_free(&r);
    return st;
}

/* An HTTP call that must answer 200 with code 200000. */
static void http_ok(const char *method, const char *path, const char *body, const char *what)
{
    char *out = NULL;
    int st = http(method, path, body, &out);
    cr_assert_eq(st, 200, "%s: HTTP %d: %s", what, st, out);
    cr_assert(strstr(out, "\"code\":200000"), "%s: %s", what, out);
    free(out);
}

static Google__Protobuf__StringValue *sv(Google__Protobuf__StringValue *w, const char *v)
{
    google__protobuf__string_value__init(w);
    w->value = (char *)v;
    return w;
}

typedef struct got {
    uint32_t code;
    uint64_t version;
    char content[256];
    char md5[64];
    char name[64];
} got_t;

static int unpack_resp(uint8_t *resp, size_t len, got_t *g)
{
    V1__ConfigClientResponse *r = v1__config_client_response__unpack(NULL, len, resp);
    free(resp);
    if (!r)
        return -1;
    memset(g, 0, sizeof *g);
    g->code = r->code ? r->code->value : 0;
    if (r->configfile) {
        g->version = r->configfile->version ? r->configfile->version->value : 0;
        snprintf(g->content, sizeof g->content, "%s",
                 r->configfile->content && r->configfile->content->value ? r->configfile->content->value : "");
        snprintf(g->md5, sizeof g->md5, "%s",
                 r->configfile->md5 && r->configfile->md5->value ? r->configfile->md5->value : "");
        snprintf(g->name, sizeof g->name, "%s",
                 r->configfile->file_name && r->configfile->file_name->value ? r->configfile->file_name->value : "");
    }
    v1__config_client_response__free_unpacked(r, NULL);
    return 0;
}

/* gRPC GetConfigFile, optionally with tag env=<env_tag>. */
static got_t grpc_get(const char *group, const char *name, const char *env_tag)
{
    Google__Protobuf__StringValue a, b, c, tk, tv;
    V1__ClientConfigFileInfo q = V1__CLIENT_CONFIG_FILE_INFO__INIT;
    q.namespace_ = sv(&a, "default");
    q.group = sv(&b, group);
    q.file_name = sv(&c, name);
    V1__ConfigFileTag tag = V1__CONFIG_FILE_TAG__INIT, *tp = &tag;
    if (env_tag) {
        tag.key = sv(&tk, "env");
        tag.value = sv(&tv, env_tag);
        q.tags = &tp;
        q.n_tags = 1;
    }
    uint8_t buf[1024];
    size_t n = v1__client_config_file_info__pack(&q, buf);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int status = -1;
    got_t g = {0};
    cr_assert_eq(gtc_unary(target, M_GET, buf, n, 5000, &resp, &rlen, &status, NULL), 0, "GetConfigFile call");
    cr_assert_eq(status, 0, "GetConfigFile gRPC status %d", status);
    cr_assert_eq(unpack_resp(resp, rlen, &g), 0, "GetConfigFile answer decodes");
    return g;
}

static size_t pack_watch(uint8_t *buf, const char *group, const char *name, uint64_t have, const char *client_ip)
{
    Google__Protobuf__StringValue a, b, c, ip;
    Google__Protobuf__UInt64Value v = GOOGLE__PROTOBUF__UINT64_VALUE__INIT;
    v.value = have;
    V1__ClientConfigFileInfo f = V1__CLIENT_CONFIG_FILE_INFO__INIT, *fp = &f;
    f.namespace_ = sv(&a, "default");
    f.group = sv(&b, group);
    f.file_name = sv(&c, name);
    f.version = &v;
    V1__ClientWatchConfigFileRequest w = V1__CLIENT_WATCH_CONFIG_FILE_REQUEST__INIT;
    w.watch_files = &fp;
    w.n_watch_files = 1;
    if (client_ip)
        w.client_ip = sv(&ip, client_ip);
    return v1__client_watch_config_file_request__pack(&w, buf);
}

static got_t grpc_watch(const char *group, const char *name, uint64_t have, const char *client_ip, int deadline_ms)
{
    uint8_t buf[1024];
    size_t n = pack_watch(buf, group, name, have, client_ip);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int status = -1;
    got_t g = {0};
    cr_assert_eq(gtc_unary(target, M_WATCH, buf, n, deadline_ms, &resp, &rlen, &status, NULL), 0, "Watch call");
    cr_assert_eq(status, 0, "Watch gRPC status %d", status);
    cr_assert_eq(unpack_resp(resp, rlen, &g), 0, "Watch answer decodes");
    return g;
}

static void wait_replica(void)
{
    for (int i = 0; i < 200; i++) {
        got_t g = grpc_get("nogroup", "nofile", NULL);
        if (g.code == 400807)
            return;
        lstest_sleep_ms(100);
    }
    cr_assert_fail("the config replica never loaded");
}

static void publish(const char *group, const char *name, const char *content)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"namespace\":\"default\",\"group\":\"%s\",\"name\":\"%s\",\"content\":\"%s\",\"format\":\"text\"}",
             group, name, content);
    char *out = NULL;
    http("PUT", "/config/v1/configfiles", body, &out);
    if (!strstr(out, "\"code\":200000")) {
        free(out);
        http_ok("POST", "/config/v1/configfiles", body, "create file");
    } else {
        free(out);
    }
    snprintf(body, sizeof body, "{\"namespace\":\"default\",\"group\":\"%s\",\"file_name\":\"%s\"}", group, name);
    http_ok("POST", "/config/v1/configfiles/release", body, "publish");
}

/* ------------------------------------------------ concurrent watchers */

/* Open n raw HTTP long polls on /v1/WatchConfigFile holding `have`. */
static int *open_http_watchers(size_t n, const char *group, const char *name, uint64_t have)
{
    int *fds = calloc(n, sizeof *fds);
    char body[512], req[1024];
    int bl = snprintf(body, sizeof body,
                      "{\"watch_files\":[{\"namespace\":\"default\",\"group\":\"%s\",\"file_name\":\"%s\","
                      "\"version\":%llu}]}",
                      group, name, (unsigned long long)have);
    int rl = snprintf(req, sizeof req,
                      "POST /v1/WatchConfigFile HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                      bl, body);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)T.http_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (size_t i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fds[i] >= 0, "socket %zu: %s", i, strerror(errno));
        int rc = -1;
        for (int k = 0; k < 50 && rc < 0; k++) {
            rc = connect(fds[i], (struct sockaddr *)&sa, sizeof sa);
            if (rc < 0) {
                close(fds[i]);
                fds[i] = socket(AF_INET, SOCK_STREAM, 0);
                lstest_sleep_ms(20);
            }
        }
        cr_assert_eq(rc, 0, "connect %zu", i);
        cr_assert_eq(write(fds[i], req, (size_t)rl), rl, "request %zu", i);
    }
    return fds;
}

/* Read every watcher's answer (until close). Returns how many answered
 * with `want` in their body within ms; *answered counts any answer. */
static size_t collect(int *fds, size_t n, const char *want, int ms, size_t *answered, long long *last_ms)
{
    char **bufs = calloc(n, sizeof *bufs);
    size_t *lens = calloc(n, sizeof *lens);
    bool *done = calloc(n, sizeof *done);
    struct pollfd *p = calloc(n, sizeof *p);
    size_t n_done = 0, ok = 0;
    long long end = lstest_now_ms() + ms;
    while (n_done < n && lstest_now_ms() < end) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (!done[i])
                p[k++] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        if (poll(p, k, 50) <= 0)
            continue;
        for (size_t j = 0; j < k; j++) {
            if (!(p[j].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            size_t i = 0;
            while (fds[i] != p[j].fd)
                i++;
            char tmp[4096];
            ssize_t r = read(fds[i], tmp, sizeof tmp);
            if (r > 0) {
                bufs[i] = realloc(bufs[i], lens[i] + (size_t)r + 1);
                memcpy(bufs[i] + lens[i], tmp, (size_t)r);
                lens[i] += (size_t)r;
                bufs[i][lens[i]] = '\0';
                continue;
            }
            done[i] = true;
            n_done++;
            if (last_ms)
                *last_ms = lstest_now_ms();
            if (bufs[i] && strstr(bufs[i], want))
                ok++;
        }
    }
    if (answered)
        *answered = n_done;
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(lens);
    free(done);
    free(p);
    return ok;
}

/* How many of the fds have something to read right now. */
static size_t readable(int *fds, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        if (poll(&p, 1, 0) > 0)
            c++;
    }
    return c;
}

/* ------------------------------------------------------- steps */

static void step_crud_publish_read(void)
{
    http_ok("POST", "/config/v1/configfilegroups", "{\"namespace\":\"default\",\"name\":\"g1\",\"comment\":\"c\"}",
            "create group");
    http_ok("PUT", "/config/v1/configfilegroups", "{\"namespace\":\"default\",\"name\":\"g1\",\"comment\":\"c2\"}",
            "update group");
    char *out = NULL;
    cr_assert_eq(http("GET", "/config/v1/configfilegroups?namespace=default&group=g1", NULL, &out), 200, "groups");
    cr_assert(strstr(out, "\"g1\""), "group listed: %s", out);
    free(out);
    http_ok("POST", "/config/v1/configfiles",
            "{\"namespace\":\"default\",\"group\":\"g1\",\"name\":\"app.json\",\"content\":\"{\\\"a\\\":1}\","
            "\"format\":\"json\"}",
            "create file");
    cr_assert_eq(http("GET", "/config/v1/configfiles?namespace=default&group=g1&name=app.json", NULL, &out), 200,
                 "get file");
    cr_assert(strstr(out, "app.json"), "file: %s", out);
    free(out);
    cr_assert_eq(http("GET", "/config/v1/configfiles/by-group?namespace=default&group=g1", NULL, &out), 200,
                 "by-group");
    cr_assert(strstr(out, "app.json"), "by-group lists it: %s", out);
    free(out);
    cr_assert_eq(http("GET", "/config/v1/configfiles/search?namespace=default&group=g1&name=app*", NULL, &out), 200,
                 "search");
    cr_assert(strstr(out, "app.json"), "search finds it: %s", out);
    free(out);

    got_t g = grpc_get("g1", "app.json", NULL);
    cr_assert_eq(g.code, 400807, "no release yet: 400807, got %u", g.code);
    /* invalid content is refused on publish with a precise error */
    http_ok("PUT", "/config/v1/configfiles",
            "{\"namespace\":\"default\",\"group\":\"g1\",\"name\":\"app.json\",\"content\":\"{bad\",\"format\":\"json\"}",
            "update to bad content (drafts are not parsed)");
    int st = http("POST", "/config/v1/configfiles/release",
                  "{\"namespace\":\"default\",\"group\":\"g1\",\"file_name\":\"app.json\"}", &out);
    cr_assert_eq(st, 400, "bad JSON is refused: %d %s", st, out);
    cr_assert(strstr(out, "400804") && strstr(out, "line"), "400804 with a line: %s", out);
    free(out);
    g = grpc_get("g1", "app.json", NULL);
    cr_assert_eq(g.code, 400807, "nothing was half-published");
    http_ok("PUT", "/config/v1/configfiles",
            "{\"namespace\":\"default\",\"group\":\"g1\",\"name\":\"app.json\",\"content\":\"{\\\"a\\\":1}\","
            "\"format\":\"json\"}",
            "update file");
    http_ok("POST", "/config/v1/configfiles/release",
            "{\"namespace\":\"default\",\"group\":\"g1\",\"file_name\":\"app.json\",\"name\":\"r1\"}", "publish r1");
    g = grpc_get("g1", "app.json", NULL);
    cr_assert_eq(g.code, 200000, "published: %u", g.code);
    cr_assert_str_eq(g.content, "{\"a\":1}", "content over gRPC");
    cr_assert_eq(g.version, 1, "version 1");
    cr_assert_eq(strlen(g.md5), 32, "md5 present");

    /* HTTP client API */
    cr_assert_eq(http("GET", "/v1/GetConfigFile?namespace=default&group=g1&fileName=app.json", NULL, &out), 200,
                 "HTTP GetConfigFile");
    cr_assert(strstr(out, "\"version\":\"1\"") || strstr(out, "\"version\":1"), "version 1 over HTTP: %s", out);
    free(out);
    cr_assert_eq(http("GET", "/v1/GetConfigFile?namespace=default&group=g1&fileName=none", NULL, &out), 400,
                 "unknown file: HTTP 400 (400807)");
    cr_assert(strstr(out, "400807"), "code 400807: %s", out);
    free(out);

    /* gRPC writes: create, update-and-publish */
    Google__Protobuf__StringValue a, b, c, d, e;
    V1__ConfigFile f = V1__CONFIG_FILE__INIT;
    f.namespace_ = sv(&a, "default");
    f.group = sv(&b, "g1");
    f.name = sv(&c, "grpc.txt");
    f.content = sv(&d, "hello");
    f.format = sv(&e, "text");
    uint8_t buf[512];
    size_t n = v1__config_file__pack(&f, buf);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int status = -1;
    cr_assert_eq(gtc_unary(target, M_CREATE, buf, n, 5000, &resp, &rlen, &status, NULL), 0, "CreateConfigFile");
    cr_assert_eq(unpack_resp(resp, rlen, &g), 0, "decodes");
    cr_assert_eq(g.code, 200000, "CreateConfigFile: %u", g.code);
    V1__ConfigFileRelease rel = V1__CONFIG_FILE_RELEASE__INIT;
    rel.namespace_ = &a;
    rel.group = &b;
    rel.file_name = &c;
    n = v1__config_file_release__pack(&rel, buf);
    cr_assert_eq(gtc_unary(target, M_PUBLISH, buf, n, 5000, &resp, &rlen, &status, NULL), 0, "PublishConfigFile");
    cr_assert_eq(unpack_resp(resp, rlen, &g), 0, "decodes");
    cr_assert_eq(g.code, 200000, "PublishConfigFile: %u", g.code);
    g = grpc_get("g1", "grpc.txt", NULL);
    cr_assert_str_eq(g.content, "hello", "published over gRPC, read over gRPC");

    /* metadata list from the replica */
    V1__ConfigFileGroup grp = V1__CONFIG_FILE_GROUP__INIT;
    grp.namespace_ = &a;
    grp.name = &b;
    V1__ConfigFileGroupRequest mq = V1__CONFIG_FILE_GROUP_REQUEST__INIT;
    mq.config_file_group = &grp;
    n = v1__config_file_group_request__pack(&mq, buf);
    cr_assert_eq(gtc_unary(target, M_META, buf, n, 5000, &resp, &rlen, &status, NULL), 0, "metadata list");
    V1__ConfigClientListResponse *ml = v1__config_client_list_response__unpack(NULL, rlen, resp);
    free(resp);
    cr_assert(ml && ml->code && ml->code->value == 200000, "metadata list answers 200000");
    cr_assert_eq(ml->n_config_file_infos, 2, "two published files in g1, got %zu", ml->n_config_file_infos);
    v1__config_client_list_response__free_unpacked(ml, NULL);
}

static void step_history_rollback(void)
{
    http_ok("PUT", "/config/v1/configfiles",
            "{\"namespace\":\"default\",\"group\":\"g1\",\"name\":\"app.json\",\"content\":\"{\\\"a\\\":2}\","
            "\"format\":\"json\"}",
            "update file");
    http_ok("POST", "/config/v1/configfiles/release",
            "{\"namespace\":\"default\",\"group\":\"g1\",\"file_name\":\"app.json\",\"name\":\"r2\"}", "publish r2");
    got_t g = grpc_get("g1", "app.json", NULL);
    cr_assert_str_eq(g.content, "{\"a\":2}", "r2 active");
    char *out = NULL;
    cr_assert_eq(http("GET", "/config/v1/configfiles/releasehistory?namespace=default&group=g1&name=app.json", NULL,
                      &out),
                 200, "history");
    cr_assert(strstr(out, "r1") && strstr(out, "r2"), "history holds both: %s", out);
    free(out);
    cr_assert_eq(http("GET", "/config/v1/configfiles/release/versions?namespace=default&group=g1&file_name=app.json",
                      NULL, &out),
                 200, "versions");
    cr_assert(strstr(out, "r1") && strstr(out, "r2"), "versions: %s", out);
    free(out);
    cr_assert_eq(http("GET", "/config/v1/configfiles/releases?namespace=default&group=g1", NULL, &out), 200,
                 "releases");
    free(out);
    http_ok("PUT", "/config/v1/configfiles/releases/rollback",
            "[{\"namespace\":\"default\",\"group\":\"g1\",\"file_name\":\"app.json\",\"name\":\"r1\"}]", "rollback");
    g = grpc_get("g1", "app.json", NULL);
    cr_assert_str_eq(g.content, "{\"a\":1}", "rolled back to r1's content");
    cr_assert_eq(g.version, 3, "with a new version (3), got %llu", (unsigned long long)g.version);
}

static void step_beta(void)
{
    publish("g2", "beta.txt", "main");
    got_t g = grpc_get("g2", "beta.txt", NULL);
    uint64_t main_v = g.version;
    http_ok("PUT", "/config/v1/configfiles",
            "{\"namespace\":\"default\",\"group\":\"g2\",\"name\":\"beta.txt\",\"content\":\"beta\",\"format\":\"text\"}",
            "draft for beta");
    http_ok("POST", "/config/v1/configfiles/release",
            "{\"namespace\":\"default\",\"group\":\"g2\",\"file_name\":\"beta.txt\",\"release_type\":\"gray\","
            "\"beta_labels\":[{\"key\":\"CLIENT_IP\",\"value\":{\"type\":\"EXACT\",\"value\":\"127.0.0.1\"}}]}",
            "beta for 127.0.0.1");
    g = grpc_get("g2", "beta.txt", NULL);
    cr_assert_str_eq(g.content, "beta", "the listed IP (our peer address) reads the beta");
    /* a watcher naming another client IP keeps the main release: not behind */
    long long t0 = lstest_now_ms();
    g = grpc_watch("g2", "beta.txt", main_v, "10.1.2.3", 1500);
    cr_assert_eq(g.code, 200001, "another IP is not woken by the beta: %u", g.code);
    cr_assert_geq(lstest_now_ms() - t0, 800, "it waited for its timeout");
    g = grpc_watch("g2", "beta.txt", main_v, "127.0.0.1", 5000);
    cr_assert_eq(g.code, 200000, "the beta IP is behind at once");
    cr_assert_gt(g.version, main_v, "beta version is newer");
    http_ok("POST", "/config/v1/configfiles/releases/stopbeta",
            "[{\"namespace\":\"default\",\"group\":\"g2\",\"file_name\":\"beta.txt\"}]", "stop beta");
    g = grpc_get("g2", "beta.txt", NULL);
    cr_assert_str_eq(g.content, "main", "after stop-beta everyone reads main");

    /* beta by label */
    http_ok("POST", "/config/v1/configfiles/release",
            "{\"namespace\":\"default\",\"group\":\"g2\",\"file_name\":\"beta.txt\",\"release_type\":\"gray\","
            "\"beta_labels\":[{\"key\":\"env\",\"value\":{\"type\":\"EXACT\",\"value\":\"gray\"}}]}",
            "beta for env=gray");
    g = grpc_get("g2", "beta.txt", "gray");
    cr_assert_str_eq(g.content, "beta", "labelled client reads the beta");
    g = grpc_get("g2", "beta.txt", "blue");
    cr_assert_str_eq(g.content, "main", "other label reads main");
    http_ok("POST", "/config/v1/configfiles/releases/stopbeta",
            "[{\"namespace\":\"default\",\"group\":\"g2\",\"file_name\":\"beta.txt\"}]", "stop beta");
}

typedef struct wthread {
    const char *group, *name; /* NULL: g3/w.txt */
    uint64_t have;
    got_t got;
    long long done_ms;
} wthread_t;

static void *watch_thread(void *arg)
{
    wthread_t *w = arg;
    uint8_t buf[1024];
    size_t n = pack_watch(buf, w->group ? w->group : "g3", w->name ? w->name : "w.txt", w->have, NULL);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int status = -1;
    if (gtc_unary(target, M_WATCH, buf, n, 20000, &resp, &rlen, &status, NULL) == 0 && status == 0)
        unpack_resp(resp, rlen, &w->got);
    w->done_ms = lstest_now_ms();
    return NULL;
}

static void step_watch_latency_and_timeout(void)
{
    publish("g3", "w.txt", "one");
    got_t g = grpc_get("g3", "w.txt", NULL);
    /* timeout: deadline 1.5 s -> answered 200001 before it (margin) */
    long long t0 = lstest_now_ms();
    got_t t = grpc_watch("g3", "w.txt", g.version, NULL, 1500);
    long long took = lstest_now_ms() - t0;
    cr_assert_eq(t.code, 200001, "timeout answers 200001 DataNoChange, got %u", t.code);
    cr_assert(took >= 800 && took < 1500, "answered before the client's deadline (%lld ms)", took);

    for (int round = 0; round < 3; round++) {
        wthread_t w = {.have = g.version};
        pthread_t th;
        pthread_create(&th, NULL, watch_thread, &w);
        lstest_sleep_ms(300); /* let it park */
        char content[32];
        snprintf(content, sizeof content, "v%d", round);
        long long p0 = lstest_now_ms();
        publish("g3", "w.txt", content);
        long long p1 = lstest_now_ms();
        pthread_join(th, NULL);
        cr_assert_eq(w.got.code, 200000, "woken by the publish: %u", w.got.code);
        cr_assert_gt(w.got.version, g.version, "with a newer version");
        cr_assert_lt(w.done_ms - p1, 100, "woken %lld ms after the publish was acknowledged (publish took %lld ms)",
                     w.done_ms - p1, p1 - p0);
        g = grpc_get("g3", "w.txt", NULL);
    }
}

/* gRPC watchers of two files whose releases are alike (same content, so
 * the same md5, and the same version): each is woken only by its own
 * file's publish, and answered with its own file. */
static void step_grpc_watchers_of_alike_files(void)
{
    enum { N = 8 };
    publish("g4", "k1.txt", "same");
    publish("g4", "k2.txt", "same");
    got_t g1 = grpc_get("g4", "k1.txt", NULL), g2 = grpc_get("g4", "k2.txt", NULL);
    wthread_t w[2 * N];
    pthread_t th[2 * N];
    for (int i = 0; i < 2 * N; i++) {
        w[i] = (wthread_t){.group = "g4", .name = i < N ? "k1.txt" : "k2.txt", .have = i < N ? g1.version : g2.version};
        pthread_create(&th[i], NULL, watch_thread, &w[i]);
    }
    lstest_sleep_ms(500); /* let them park */
    publish("g4", "k1.txt", "next");
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    publish("g4", "k2.txt", "next");
    for (int i = N; i < 2 * N; i++)
        pthread_join(th[i], NULL);
    got_t n1 = grpc_get("g4", "k1.txt", NULL), n2 = grpc_get("g4", "k2.txt", NULL);
    for (int i = 0; i < 2 * N; i++) {
        const got_t *want = i < N ? &n1 : &n2;
        cr_assert_eq(w[i].got.code, 200000, "watcher %d woken: %u", i, w[i].got.code);
        cr_assert_str_eq(w[i].got.name, i < N ? "k1.txt" : "k2.txt", "watcher %d answered with its own file", i);
        cr_assert_eq(w[i].got.version, want->version, "watcher %d: the new version", i);
        cr_assert_str_eq(w[i].got.md5, want->md5, "watcher %d: the new md5", i);
    }
}

static void step_many_watchers(void)
{
    enum { N = 1000 };
    got_t g = grpc_get("g3", "w.txt", NULL);
    int *fds = open_http_watchers(N, "g3", "w.txt", g.version);
    lstest_sleep_ms(1500);
    cr_assert_eq(readable(fds, N), 0, "all 1,000 watchers are parked, none answered");
    long long p0 = lstest_now_ms();
    publish("g3", "w.txt", "for-1000");
    size_t answered = 0;
    long long last = 0;
    size_t ok = collect(fds, N, "\"code\":200000", 10000, &answered, &last);
    cr_assert_eq(answered, N, "every watcher answered (%zu)", answered);
    cr_assert_eq(ok, N, "every watcher woken with 200000 (%zu)", ok);
    cr_log_info("1,000 HTTP watchers: last woken %lld ms after the publish began", last - p0);
    for (size_t i = 0; i < N; i++)
        close(fds[i]);
    free(fds);
}

static void step_worker_kill(void)
{
    enum { N = 20 };
    got_t g = grpc_get("g3", "w.txt", NULL);
    int *fds = open_http_watchers(N, "g3", "w.txt", g.version);
    lstest_sleep_ms(500);
    pid_t old = lstest_pid(&T, "config");
    cr_assert_gt(old, 0, "config worker pid");
    cr_assert_eq(kill(old, SIGKILL), 0, "kill -9 the config worker");
    cr_assert_gt(lstest_wait_restarted(&T, "config", old, 20000), 0, "the config worker came back");
    lstest_sleep_ms(500);
    cr_assert_eq(readable(fds, N), 0, "watchers keep waiting through the worker's restart");
    /* the gateway's client reconnects; publish until it goes through */
    bool done = false;
    for (int i = 0; i < 50 && !done; i++) {
        char *out = NULL;
        http("PUT", "/config/v1/configfiles",
             "{\"namespace\":\"default\",\"group\":\"g3\",\"name\":\"w.txt\",\"content\":\"after-kill\",\"format\":"
             "\"text\"}",
             &out);
        free(out);
        int st = http("POST", "/config/v1/configfiles/release",
                      "{\"namespace\":\"default\",\"group\":\"g3\",\"file_name\":\"w.txt\"}", &out);
        done = st == 200 && strstr(out, "\"code\":200000");
        free(out);
        if (!done)
            lstest_sleep_ms(200);
    }
    cr_assert(done, "a publish succeeds once the worker is back");
    size_t answered = 0;
    size_t ok = collect(fds, N, "\"code\":200000", 10000, &answered, NULL);
    cr_assert_eq(ok, N, "every waiting watcher is woken by the publish after the restart (%zu of %zu answered)", ok,
                 answered);
    for (size_t i = 0; i < N; i++)
        close(fds[i]);
    free(fds);
    g = grpc_get("g3", "w.txt", NULL);
    cr_assert_str_eq(g.content, "after-kill", "the replica reads the new release");
}

Test(polaris_config, end_to_end, .timeout = 300)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
        rl.rlim_cur = 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    lstest_start(&T, NULL, 60000);
    snprintf(target, sizeof target, "127.0.0.1:%d", T.grpc_config_port);
    wait_replica();
    step_crud_publish_read();
    step_history_rollback();
    step_beta();
    step_watch_latency_and_timeout();
    step_grpc_watchers_of_alike_files();
    step_many_watchers();
    step_worker_kill();

    /* durability across a restart */
    cr_assert_eq(lstest_stop(&T, 20000), 0, "lodestar exit status");
    lstest_start(&T, NULL, 60000);
    snprintf(target, sizeof target, "127.0.0.1:%d", T.grpc_config_port);
    wait_replica();
    got_t g = grpc_get("g1", "app.json", NULL);
    cr_assert_eq(g.code, 200000, "the release survived the restart");
    cr_assert_str_eq(g.content, "{\"a\":1}", "with its content");
    cr_assert_eq(g.version, 3, "and its version");
    g = grpc_get("g3", "w.txt", NULL);
    cr_assert_str_eq(g.content, "after-kill", "the publish after the worker kill survived too");
    char *out = NULL;
    http("DELETE", "/config/v1/configfiles?namespace=default&group=g1&name=grpc.txt", NULL, &out);
    cr_assert(strstr(out, "\"code\":200000"), "delete file: %s", out);
    free(out);
    g = grpc_get("g1", "grpc.txt", NULL);
    for (int i = 0; i < 20 && g.code != 400807; i++) {
        lstest_sleep_ms(50);
        g = grpc_get("g1", "grpc.txt", NULL);
    }
    cr_assert_eq(g.code, 400807, "a deleted file is not found");
    cr_assert_eq(lstest_stop(&T, 20000), 0, "lodestar exit status");
    lstest_cleanup(&T);
}

/*
 * test_polaris_http.c: the Polaris HTTP API on the polaris-http port, for
 * real: the supervisor, its private PostgreSQL, the naming and health
 * workers and the gateway, driven over HTTP the way a Polaris SDK or the
 * console would. Covers the client API (/v1/...), the naming OpenAPI
 * (/core/v1/namespaces, /naming/v1/services, /naming/v1/instances), the
 * Polaris codes and HTTP statuses of bad input (the message naming the
 * field, nothing of a bad batch applied), and the request framing limits
 * (every answer JSON, bodies bounded).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>
#include <unistd.h>

#include "lstest.h"
#include "naming_id.h"

#define T_HTTP_TIMEOUT_MS 8000
#define T_EVENTUALLY_MS 5000

/* ------------------------------------------------------------ helpers */

typedef struct answer {
    int status;
    json_t *j;        /* the parsed body */
    char *polaris_code; /* X-Polaris-Code header, or NULL */
} answer_t;

static void answer_free(answer_t *a)
{
    json_decref(a->j);
    free(a->polaris_code);
    memset(a, 0, sizeof *a);
}

/* One request; asserts that the answer is JSON with Content-Type
 * application/json and, for a Polaris answer, that the HTTP status is the
 * first three digits of its code and X-Polaris-Code is set unless 200000. */
static answer_t call(const lstest_t *t, const char *method, const char *path, const char *body)
{
    lstest_http_resp_t r;
    int st = lstest_http(t->http_port, method, path, body ? "application/json" : NULL, body, body ? strlen(body) : 0,
                         &r, T_HTTP_TIMEOUT_MS);
    cr_assert_gt(st, 0, "%s %s: no HTTP answer (%d)", method, path, st);
    char *ct = lstest_http_header(&r, "Content-Type");
    cr_assert(ct && strcmp(ct, "application/json") == 0, "%s %s: Content-Type is %s, not application/json", method,
              path, ct ? ct : "(none)");
    free(ct);
    json_error_t je;
    answer_t a = {.status = st};
    a.j = json_loadb(r.body, r.body_len, 0, &je);
    cr_assert(a.j, "%s %s: the answer is not JSON (%s): %.300s", method, path, je.text, r.body);
    a.polaris_code = lstest_http_header(&r, "X-Polaris-Code");
    json_t *code = json_object_get(a.j, "code");
    if (json_is_integer(code)) {
        json_int_t c = json_integer_value(code);
        cr_assert_eq(st, (int)(c / 1000), "%s %s: HTTP status %d for Polaris code %lld", method, path, st,
                     (long long)c);
        if (c != 200000) {
            cr_assert(a.polaris_code && atoll(a.polaris_code) == c, "%s %s: X-Polaris-Code is %s for code %lld",
                      method, path, a.polaris_code ? a.polaris_code : "(none)", (long long)c);
        }
    }
    lstest_http_resp_free(&r);
    return a;
}

/* A value by path: "instance.id", "responses[1].code", "labels.env.values[0]". */
static json_t *at(json_t *j, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok && j; tok = strtok_r(NULL, ".", &save)) {
        char *br = strchr(tok, '[');
        if (br)
            *br = '\0';
        if (*tok)
            j = json_object_get(j, tok);
        while (br && j) {
            j = json_array_get(j, (size_t)atoi(br + 1));
            br = strchr(br + 1, '[');
        }
    }
    return j;
}

static long long num(json_t *j, const char *path)
{
    json_t *v = at(j, path);
    cr_assert(json_is_integer(v), "%s is not a number in %s", path, json_dumps(j, JSON_COMPACT));
    return (long long)json_integer_value(v);
}

static const char *str(json_t *j, const char *path)
{
    json_t *v = at(j, path);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static long long code_of(const answer_t *a) { return num(a->j, "code"); }

/* Asserts the code and that info mentions `needle` (the field at fault). */
static void expect_code(const answer_t *a, long long code, const char *needle, const char *what)
{
    char *dump = json_dumps(a->j, JSON_COMPACT);
    cr_assert_eq(code_of(a), code, "%s: code %lld, expected %lld: %.600s", what, code_of(a), code, dump);
    if (needle) {
        const char *info = str(a->j, "info");
        cr_assert(info && strstr(info, needle), "%s: info does not name \"%s\": %s", what, needle,
                  info ? info : "(none)");
    }
    free(dump);
}

/* Count of array `path` in j (0 when absent). */
static size_t count(json_t *j, const char *path)
{
    json_t *v = at(j, path);
    return json_is_array(v) ? json_array_size(v) : 0;
}

static bool array_has(json_t *arr, const char *field, const char *value)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        const char *s = field ? json_string_value(json_object_get(e, field)) : json_string_value(e);
        if (s && strcmp(s, value) == 0)
            return true;
    }
    return false;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    cr_assert(vasprintf(&s, f, ap) >= 0);
    va_end(ap);
    return s;
}

/* POST /v1/Discover INSTANCE for default/<svc> until `n` instances are
 * listed (the replica follows the worker's commits within milliseconds). */
static answer_t discover_until(const lstest_t *t, const char *svc, size_t n)
{
    char *body = fmt("{\"type\":\"INSTANCE\",\"service\":{\"name\":\"%s\",\"namespace\":\"default\"}}", svc);
    long long end = lstest_now_ms() + T_EVENTUALLY_MS;
    for (;;) {
        answer_t a = call(t, "POST", "/v1/Discover", body);
        if (code_of(&a) == 200000 && count(a.j, "instances") == n) {
            free(body);
            return a;
        }
        cr_assert_lt(lstest_now_ms(), end, "discover of %s never listed %zu instances: %s", svc, n,
                     json_dumps(a.j, JSON_COMPACT));
        answer_free(&a);
        lstest_sleep_ms(20);
    }
}

static void start(lstest_t *t)
{
    memset(t, 0, sizeof *t);
    lstest_start(t, NULL, 60000);
}

/* ------------------------------------------------------- client API */

Test(polaris_http, register_then_discover_then_no_change, .timeout = 120)
{
    lstest_t t;
    start(&t);

    answer_t a = call(&t, "POST", "/v1/RegisterInstance",
                      "{\"service\":\"echo\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":8080,"
                      "\"protocol\":\"http\",\"weight\":100,\"metadata\":{\"zone\":\"a\"}}");
    expect_code(&a, 200000, NULL, "RegisterInstance");
    char want_id[NAMING_HEX_LEN + 1];
    naming_instance_id("default", "echo", NULL, "10.0.0.1", 8080, want_id);
    cr_assert_str_eq(str(a.j, "instance.id"), want_id, "the register answer carries the Polaris instance id");
    answer_free(&a);

    a = discover_until(&t, "echo", 1);
    cr_assert_str_eq(str(a.j, "type"), "INSTANCE");
    cr_assert_str_eq(str(a.j, "instances[0].host"), "10.0.0.1");
    cr_assert_eq(num(a.j, "instances[0].port"), 8080);
    cr_assert_str_eq(str(a.j, "instances[0].metadata.zone"), "a");
    cr_assert_str_eq(str(a.j, "instances[0].id"), want_id);
    const char *rev = str(a.j, "service.revision");
    cr_assert(rev && *rev, "the INSTANCE answer carries the service revision");
    char *revision = strdup(rev);
    answer_free(&a);

    /* the same revision: 200001 and no payload */
    char *body = fmt("{\"type\":\"INSTANCE\",\"service\":{\"name\":\"echo\",\"namespace\":\"default\","
                     "\"revision\":\"%s\"}}",
                     revision);
    a = call(&t, "POST", "/v1/Discover", body);
    expect_code(&a, 200001, NULL, "Discover with the current revision");
    cr_assert_eq(a.status, 200);
    cr_assert_eq(count(a.j, "instances"), 0, "DataNoChange carries no instances");
    cr_assert_str_eq(str(a.j, "type"), "INSTANCE");
    answer_free(&a);

    /* discovery is answered by the gateway's replica: it keeps answering
     * while the naming worker is stopped */
    pid_t naming = lstest_pid(&t, "naming");
    cr_assert_gt(naming, 0, "the naming worker runs");
    cr_assert_eq(kill(naming, SIGSTOP), 0);
    long long t0 = lstest_now_ms();
    a = call(&t, "POST", "/v1/Discover", body);
    long long took = lstest_now_ms() - t0;
    kill(naming, SIGCONT);
    expect_code(&a, 200001, NULL, "Discover while the naming worker is stopped");
    cr_assert_lt(took, 1000, "answered without the worker (%lld ms)", took);
    answer_free(&a);
    free(body);

    /* a second instance changes the revision */
    a = call(&t, "POST", "/v1/RegisterInstance",
             "{\"service\":\"echo\",\"namespace\":\"default\",\"host\":\"10.0.0.2\",\"port\":8080}");
    expect_code(&a, 200000, NULL, "second RegisterInstance");
    answer_free(&a);
    a = discover_until(&t, "echo", 2);
    cr_assert_str_neq(str(a.j, "service.revision"), revision, "the revision changed with the instance set");
    answer_free(&a);

    /* deregister: gone from discovery */
    a = call(&t, "POST", "/v1/DeregisterInstance",
             "{\"service\":\"echo\",\"namespace\":\"default\",\"host\":\"10.0.0.2\",\"port\":8080}");
    expect_code(&a, 200000, NULL, "DeregisterInstance");
    answer_free(&a);
    a = discover_until(&t, "echo", 1);
    answer_free(&a);

    /* OnlyHealthyInstance drops unhealthy instances; isolated and weight-0
     * ones are listed, as Polaris does (SDKs skip them) */
    a = call(&t, "POST", "/v1/RegisterInstance",
             "{\"service\":\"echo\",\"namespace\":\"default\",\"host\":\"10.0.0.3\",\"port\":8080,"
             "\"healthy\":false}");
    expect_code(&a, 200000, NULL, "RegisterInstance of an unhealthy instance");
    answer_free(&a);
    a = call(&t, "POST", "/v1/RegisterInstance",
             "{\"service\":\"echo\",\"namespace\":\"default\",\"host\":\"10.0.0.4\",\"port\":8080,"
             "\"isolate\":true,\"weight\":0}");
    expect_code(&a, 200000, NULL, "RegisterInstance of an isolated, weight-0 instance");
    answer_free(&a);
    a = discover_until(&t, "echo", 3);
    answer_free(&a);
    a = call(&t, "POST", "/v1/Discover",
             "{\"type\":\"INSTANCE\",\"service\":{\"name\":\"echo\",\"namespace\":\"default\"},"
             "\"Filter\":{\"OnlyHealthyInstance\":true}}");
    expect_code(&a, 200000, NULL, "Discover healthy instances only");
    cr_assert_eq(count(a.j, "instances"), 2, "the unhealthy instance is left out: %s", json_dumps(a.j, JSON_COMPACT));
    cr_assert(!array_has(at(a.j, "instances"), "host", "10.0.0.3"), "10.0.0.3 is unhealthy");
    cr_assert(array_has(at(a.j, "instances"), "host", "10.0.0.4"), "the isolated instance is listed");
    answer_free(&a);

    /* unknown service, missing name */
    a = call(&t, "POST", "/v1/Discover",
             "{\"type\":\"INSTANCE\",\"service\":{\"name\":\"nope\",\"namespace\":\"default\"}}");
    expect_code(&a, 400301, NULL, "Discover of an unknown service");
    answer_free(&a);
    a = call(&t, "POST", "/v1/Discover", "{\"type\":\"INSTANCE\",\"service\":{\"namespace\":\"default\"}}");
    expect_code(&a, 400120, "name", "Discover without a service name");
    answer_free(&a);

    /* SERVICES lists the auto-created service */
    a = call(&t, "POST", "/v1/Discover", "{\"type\":\"SERVICES\",\"service\":{\"namespace\":\"default\"}}");
    expect_code(&a, 200000, NULL, "Discover SERVICES");
    cr_assert(array_has(at(a.j, "services"), "name", "echo"), "SERVICES lists echo");
    answer_free(&a);

    /* rule types: an empty set under a revision, then 200001 */
    a = call(&t, "POST", "/v1/Discover",
             "{\"type\":\"ROUTING\",\"service\":{\"name\":\"echo\",\"namespace\":\"default\"}}");
    expect_code(&a, 200000, NULL, "Discover ROUTING");
    cr_assert_str_eq(str(a.j, "type"), "ROUTING");
    const char *rrev = str(a.j, "routing.revision");
    cr_assert(rrev && *rrev, "the empty routing carries a revision");
    body = fmt("{\"type\":\"ROUTING\",\"service\":{\"name\":\"echo\",\"namespace\":\"default\",\"revision\":\"%s\"}}",
               rrev);
    answer_free(&a);
    a = call(&t, "POST", "/v1/Discover", body);
    expect_code(&a, 200001, NULL, "Discover ROUTING with its revision");
    answer_free(&a);
    free(body);

    /* a type not served */
    a = call(&t, "POST", "/v1/Discover",
             "{\"type\":\"LANE\",\"service\":{\"name\":\"echo\",\"namespace\":\"default\"}}");
    expect_code(&a, 400004, "LANE", "Discover LANE");
    answer_free(&a);

    /* ReportClient: acknowledged, host echoed */
    a = call(&t, "POST", "/v1/ReportClient", "{\"host\":\"10.1.1.1\",\"type\":\"SDK\",\"version\":\"1.0\"}");
    expect_code(&a, 200000, NULL, "ReportClient");
    cr_assert_str_eq(str(a.j, "client.host"), "10.1.1.1");
    answer_free(&a);

    free(revision);
    lstest_cleanup(&t);
}

Test(polaris_http, heartbeat_is_relayed_for_known_instances_only, .timeout = 120)
{
    lstest_t t;
    start(&t);
    answer_t a = call(&t, "POST", "/v1/RegisterInstance",
                      "{\"service\":\"beat\",\"namespace\":\"default\",\"host\":\"10.0.0.9\",\"port\":9000,"
                      "\"health_check\":{\"type\":\"HEARTBEAT\",\"heartbeat\":{\"ttl\":5}}}");
    expect_code(&a, 200000, NULL, "RegisterInstance with a heartbeat check");
    char *id = strdup(str(a.j, "instance.id"));
    answer_free(&a);
    a = call(&t, "POST", "/v1/RegisterInstance",
             "{\"service\":\"beat\",\"namespace\":\"default\",\"host\":\"10.0.0.9\",\"port\":9001}");
    expect_code(&a, 200000, NULL, "RegisterInstance without a health check");
    answer_free(&a);
    a = discover_until(&t, "beat", 2);
    answer_free(&a);

    /* by namespace, service, host and port (polaris-go) */
    a = call(&t, "POST", "/v1/Heartbeat",
             "{\"service\":\"beat\",\"namespace\":\"default\",\"host\":\"10.0.0.9\",\"port\":9000}");
    expect_code(&a, 200000, NULL, "Heartbeat by address");
    cr_assert_str_eq(str(a.j, "instance.host"), "10.0.0.9", "the answer names the instance as sent");
    answer_free(&a);
    /* by id only (polaris-cpp) */
    char *body = fmt("{\"id\":\"%s\"}", id);
    a = call(&t, "POST", "/v1/Heartbeat", body);
    expect_code(&a, 200000, NULL, "Heartbeat by id");
    answer_free(&a);
    free(body);
    /* unknown instance */
    a = call(&t, "POST", "/v1/Heartbeat",
             "{\"service\":\"beat\",\"namespace\":\"default\",\"host\":\"10.0.0.9\",\"port\":9999}");
    expect_code(&a, 400303, NULL, "Heartbeat of an unknown instance");
    cr_assert_eq(a.status, 400);
    answer_free(&a);
    /* no heartbeat health check on the instance */
    a = call(&t, "POST", "/v1/Heartbeat",
             "{\"service\":\"beat\",\"namespace\":\"default\",\"host\":\"10.0.0.9\",\"port\":9001}");
    expect_code(&a, 400141, NULL, "Heartbeat of an instance without health check");
    answer_free(&a);
    /* not enough to name an instance */
    a = call(&t, "POST", "/v1/Heartbeat", "{\"service\":\"beat\",\"namespace\":\"default\",\"port\":9000}");
    expect_code(&a, 400131, "host", "Heartbeat without host or id");
    answer_free(&a);
    free(id);
    lstest_cleanup(&t);
}

/* ---------------------------------------------------------- OpenAPI */

Test(polaris_http, openapi_namespaces_create_list_update_delete, .timeout = 120)
{
    lstest_t t;
    start(&t);
    answer_t a = call(&t, "POST", "/core/v1/namespaces",
                      "[{\"name\":\"ns-one\",\"comment\":\"first\"},{\"name\":\"ns-two\",\"owners\":\"ops\"}]");
    expect_code(&a, 200000, NULL, "create two namespaces");
    cr_assert_eq(count(a.j, "responses"), 2, "one Response per item");
    cr_assert_eq(num(a.j, "responses[0].code"), 200000);
    cr_assert_eq(num(a.j, "responses[1].code"), 200000);
    answer_free(&a);

    a = call(&t, "GET", "/core/v1/namespaces", NULL);
    expect_code(&a, 200000, NULL, "list namespaces");
    cr_assert_geq(num(a.j, "amount"), 3, "default and the two new ones");
    json_t *nss = at(a.j, "namespaces");
    cr_assert(array_has(nss, "name", "ns-one") && array_has(nss, "name", "ns-two") && array_has(nss, "name", "default"),
              "every namespace listed");
    answer_free(&a);

    a = call(&t, "GET", "/core/v1/namespaces?name=ns-one", NULL);
    expect_code(&a, 200000, NULL, "namespace by name");
    cr_assert_eq(num(a.j, "amount"), 1);
    cr_assert_eq(num(a.j, "size"), 1);
    cr_assert_str_eq(str(a.j, "namespaces[0].comment"), "first");
    answer_free(&a);

    a = call(&t, "GET", "/core/v1/namespaces?limit=1&offset=0", NULL);
    expect_code(&a, 200000, NULL, "paged namespaces");
    cr_assert_eq(num(a.j, "size"), 1, "limit=1 returns one");
    cr_assert_geq(num(a.j, "amount"), 3, "amount counts every match");
    answer_free(&a);

    a = call(&t, "PUT", "/core/v1/namespaces", "[{\"name\":\"ns-one\",\"comment\":\"changed\"}]");
    expect_code(&a, 200000, NULL, "update a namespace");
    answer_free(&a);
    a = call(&t, "GET", "/core/v1/namespaces?name=ns-one", NULL);
    cr_assert_str_eq(str(a.j, "namespaces[0].comment"), "changed");
    answer_free(&a);

    a = call(&t, "POST", "/core/v1/namespaces/delete", "[{\"name\":\"ns-two\"}]");
    expect_code(&a, 200000, NULL, "delete a namespace");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/namespaces?name=ns-two", NULL);
    expect_code(&a, 200000, NULL, "the old OpenAPI path");
    cr_assert_eq(num(a.j, "amount"), 0, "ns-two is gone");
    answer_free(&a);

    a = call(&t, "GET", "/core/v1/namespaces?limit=ten", NULL);
    expect_code(&a, 400103, "limit", "a limit that is not a number");
    cr_assert_eq(a.status, 400);
    answer_free(&a);
    a = call(&t, "GET", "/core/v1/namespaces?offset=-1", NULL);
    expect_code(&a, 400103, "offset", "a negative offset");
    answer_free(&a);
    lstest_cleanup(&t);
}

Test(polaris_http, openapi_services_create_filter_count_all_update_delete, .timeout = 120)
{
    lstest_t t;
    start(&t);
    answer_t a = call(&t, "POST", "/naming/v1/services",
                      "[{\"name\":\"svc-a\",\"namespace\":\"default\",\"business\":\"shop\",\"owners\":\"alice\","
                      "\"metadata\":{\"team\":\"red\"}},"
                      "{\"name\":\"svc-b\",\"namespace\":\"default\",\"owners\":\"bob\"},"
                      "{\"name\":\"other\",\"namespace\":\"default\",\"owners\":\"carol\"}]");
    expect_code(&a, 200000, NULL, "create three services");
    cr_assert_eq(count(a.j, "responses"), 3);
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/services?name=svc-a", NULL);
    expect_code(&a, 200000, NULL, "service by name");
    cr_assert_eq(num(a.j, "amount"), 1);
    cr_assert_str_eq(str(a.j, "services[0].business"), "shop");
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/services?name=svc*", NULL);
    cr_assert_eq(num(a.j, "amount"), 2, "the prefix filter matches svc-a and svc-b");
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/services?name=svc*&offset=1&limit=1", NULL);
    cr_assert_eq(num(a.j, "amount"), 2, "amount counts every match");
    cr_assert_eq(num(a.j, "size"), 1, "one returned");
    cr_assert_eq(count(a.j, "services"), 1);
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/services?keys=team&values=red", NULL);
    cr_assert_eq(num(a.j, "amount"), 1, "metadata filter");
    cr_assert_str_eq(str(a.j, "services[0].name"), "svc-a");
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/services/count", NULL);
    expect_code(&a, 200000, NULL, "service count");
    cr_assert_eq(num(a.j, "amount"), 3);
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/services/all", NULL);
    expect_code(&a, 200000, NULL, "all services");
    cr_assert(array_has(at(a.j, "services"), "name", "svc-a") && array_has(at(a.j, "services"), "name", "other"),
              "every service listed");
    answer_free(&a);

    a = call(&t, "PUT", "/naming/v1/services",
             "[{\"name\":\"svc-a\",\"namespace\":\"default\",\"comment\":\"updated\"}]");
    expect_code(&a, 200000, NULL, "update a service");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/services?name=svc-a", NULL);
    cr_assert_str_eq(str(a.j, "services[0].comment"), "updated");
    answer_free(&a);

    a = call(&t, "POST", "/naming/v1/services/delete", "[{\"name\":\"svc-b\",\"namespace\":\"default\"}]");
    expect_code(&a, 200000, NULL, "delete a service");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/services?name=svc*", NULL);
    cr_assert_eq(num(a.j, "amount"), 1, "svc-b is gone");
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/services?nosuch=1", NULL);
    expect_code(&a, 400103, "nosuch", "an unknown filter");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/services?offset=abc", NULL);
    expect_code(&a, 400103, "offset", "an offset that is not a number");
    answer_free(&a);
    lstest_cleanup(&t);
}

Test(polaris_http, openapi_instances_batch_filter_count_labels_update_isolate_delete, .timeout = 120)
{
    lstest_t t;
    start(&t);
    answer_t a = call(&t, "POST", "/naming/v1/services", "[{\"name\":\"inst-svc\",\"namespace\":\"default\"}]");
    expect_code(&a, 200000, NULL, "create the service");
    answer_free(&a);

    a = call(&t, "POST", "/naming/v1/instances",
             "[{\"service\":\"inst-svc\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":80,"
             "\"metadata\":{\"env\":\"prod\"}},"
             "{\"service\":\"inst-svc\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":81,"
             "\"metadata\":{\"env\":\"test\"}},"
             "{\"service\":\"inst-svc\",\"namespace\":\"default\",\"host\":\"10.0.0.2\",\"port\":80}]");
    expect_code(&a, 200000, NULL, "create three instances in one batch");
    cr_assert_eq(count(a.j, "responses"), 3);
    for (int i = 0; i < 3; i++) {
        char p[32];
        snprintf(p, sizeof p, "responses[%d].code", i);
        cr_assert_eq(num(a.j, p), 200000, "item %d", i);
    }
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/instances?service=inst-svc&namespace=default", NULL);
    expect_code(&a, 200000, NULL, "instances of the service");
    cr_assert_eq(num(a.j, "amount"), 3);
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/instances?service=inst-svc&namespace=default&host=10.0.0.1", NULL);
    cr_assert_eq(num(a.j, "amount"), 2, "host filter");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/instances?service=inst-svc&namespace=default&port=81", NULL);
    cr_assert_eq(num(a.j, "amount"), 1, "port filter");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/instances?service=inst-svc&namespace=default&keys=env&values=prod", NULL);
    cr_assert_eq(num(a.j, "amount"), 1, "metadata filter");
    cr_assert_eq(num(a.j, "instances[0].port"), 80);
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/instances?service=inst-svc&namespace=default&offset=2&limit=5", NULL);
    cr_assert_eq(num(a.j, "amount"), 3);
    cr_assert_eq(num(a.j, "size"), 1, "offset 2 of 3 leaves one");
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/instances/count", NULL);
    expect_code(&a, 200000, NULL, "instance count");
    cr_assert_eq(num(a.j, "amount"), 3);
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/instances/labels?service=inst-svc&namespace=default", NULL);
    expect_code(&a, 200000, NULL, "instance labels");
    json_t *env = at(a.j, "instanceLabels.labels.env.values");
    cr_assert(array_has(env, NULL, "prod") && array_has(env, NULL, "test"), "labels list env=prod and env=test: %s",
              json_dumps(a.j, JSON_COMPACT));
    answer_free(&a);

    a = call(&t, "PUT", "/naming/v1/instances",
             "[{\"service\":\"inst-svc\",\"namespace\":\"default\",\"host\":\"10.0.0.2\",\"port\":80,\"weight\":50}]");
    expect_code(&a, 200000, NULL, "update an instance");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/instances?service=inst-svc&namespace=default&host=10.0.0.2", NULL);
    cr_assert_eq(num(a.j, "instances[0].weight"), 50);
    answer_free(&a);

    a = call(&t, "PUT", "/naming/v1/instances/isolate/host",
             "[{\"service\":\"inst-svc\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"isolate\":true}]");
    expect_code(&a, 200000, NULL, "isolate by host");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/instances?service=inst-svc&namespace=default&isolate=true", NULL);
    cr_assert_eq(num(a.j, "amount"), 2, "both instances on 10.0.0.1 isolated");
    answer_free(&a);

    a = call(&t, "POST", "/naming/v1/instances/delete/host",
             "[{\"service\":\"inst-svc\",\"namespace\":\"default\",\"host\":\"10.0.0.2\"}]");
    expect_code(&a, 200000, NULL, "delete by host");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/instances?service=inst-svc&namespace=default", NULL);
    cr_assert_eq(num(a.j, "amount"), 2);
    answer_free(&a);

    a = call(&t, "POST", "/naming/v1/instances/delete",
             "[{\"service\":\"inst-svc\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":80}]");
    expect_code(&a, 200000, NULL, "delete one instance");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/instances?service=inst-svc&namespace=default", NULL);
    cr_assert_eq(num(a.j, "amount"), 1);
    cr_assert_eq(num(a.j, "instances[0].port"), 81);
    answer_free(&a);

    a = call(&t, "GET", "/naming/v1/instances", NULL);
    expect_code(&a, 400104, NULL, "instances without any filter");
    answer_free(&a);
    lstest_cleanup(&t);
}

/* -------------------------------------------------------- bad input */

Test(polaris_http, bad_input_gets_the_polaris_code_and_names_the_field, .timeout = 120)
{
    lstest_t t;
    start(&t);
    answer_t a = call(&t, "POST", "/v1/RegisterInstance",
                      "{\"service\":\"bad name!\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":80}");
    expect_code(&a, 400120, "service", "a service name with a space and '!'");
    cr_assert_eq(a.status, 400);
    answer_free(&a);

    a = call(&t, "POST", "/v1/RegisterInstance",
             "{\"service\":\"ok\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":70000}");
    expect_code(&a, 400132, "port", "port 70000");
    answer_free(&a);

    a = call(&t, "POST", "/v1/RegisterInstance",
             "{\"service\":\"ok\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":80,\"weight\":70000}");
    expect_code(&a, 400103, "weight", "weight 70000");
    answer_free(&a);

    /* 65 metadata entries: one more than Polaris allows */
    size_t cap = 65 * 32 + 256, used = 0;
    char *meta = malloc(cap);
    used += (size_t)snprintf(meta + used, cap - used,
                             "{\"service\":\"ok\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":80,"
                             "\"metadata\":{");
    for (int i = 0; i < 65; i++)
        used += (size_t)snprintf(meta + used, cap - used, "%s\"k%d\":\"v\"", i ? "," : "", i);
    snprintf(meta + used, cap - used, "}}");
    a = call(&t, "POST", "/v1/RegisterInstance", meta);
    expect_code(&a, 400150, "metadata", "65 metadata entries");
    answer_free(&a);
    free(meta);

    a = call(&t, "POST", "/v1/RegisterInstance", "{\"service\":\"ok\",\"port\":80");
    expect_code(&a, 400001, "line 1", "malformed JSON (position named)");
    answer_free(&a);
    a = call(&t, "POST", "/v1/RegisterInstance", "{\"service\":\"ok\",\"port\":\"eighty\"}");
    expect_code(&a, 400001, "port", "a string where a port is expected");
    answer_free(&a);
    a = call(&t, "POST", "/v1/RegisterInstance", "");
    expect_code(&a, 400001, "empty", "an empty body");
    answer_free(&a);

    /* an unknown field is ignored, as Polaris does */
    a = call(&t, "POST", "/v1/RegisterInstance",
             "{\"service\":\"ok\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":80,\"colour\":\"blue\"}");
    expect_code(&a, 200000, NULL, "an unknown JSON field");
    answer_free(&a);

    /* batch endpoints want an array with 1..100 items */
    a = call(&t, "POST", "/naming/v1/instances", "{\"service\":\"ok\"}");
    expect_code(&a, 400001, "array", "an object where an array is expected");
    answer_free(&a);
    a = call(&t, "POST", "/naming/v1/instances", "[]");
    expect_code(&a, 400002, NULL, "an empty batch");
    answer_free(&a);
    char *many = malloc(101 * 4 + 8);
    strcpy(many, "[");
    for (int i = 0; i < 101; i++)
        strcat(many, i ? ",{}" : "{}");
    strcat(many, "]");
    a = call(&t, "POST", "/naming/v1/services", many);
    expect_code(&a, 400003, "101", "a batch of 101");
    answer_free(&a);
    free(many);
    lstest_cleanup(&t);
}

Test(polaris_http, a_batch_with_one_bad_item_applies_nothing, .timeout = 120)
{
    lstest_t t;
    start(&t);
    answer_t a = call(&t, "POST", "/naming/v1/services", "[{\"name\":\"batch-svc\",\"namespace\":\"default\"}]");
    expect_code(&a, 200000, NULL, "create the service");
    answer_free(&a);

    a = call(&t, "POST", "/naming/v1/instances",
             "[{\"service\":\"batch-svc\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":80},"
             "{\"service\":\"batch-svc\",\"namespace\":\"default\",\"host\":\"10.0.0.2\",\"port\":70000},"
             "{\"service\":\"batch-svc\",\"namespace\":\"default\",\"host\":\"10.0.0.3\",\"port\":80}]");
    cr_assert_eq(a.status, 400, "the batch fails as a whole");
    cr_assert_eq(count(a.j, "responses"), 3, "one Response per item");
    cr_assert_eq(num(a.j, "responses[1].code"), 400132, "the bad item names its code");
    const char *info = str(a.j, "responses[1].info");
    cr_assert(info && strstr(info, "port"), "the bad item's info names the port: %s", info ? info : "(none)");
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/instances?service=batch-svc&namespace=default", NULL);
    expect_code(&a, 200000, NULL, "instances after the failed batch");
    cr_assert_eq(num(a.j, "amount"), 0, "no item of the failed batch was applied");
    answer_free(&a);

    a = call(&t, "POST", "/naming/v1/services",
             "[{\"name\":\"good-one\",\"namespace\":\"default\"},{\"name\":\"bad one\",\"namespace\":\"default\"}]");
    cr_assert_eq(a.status, 400);
    cr_assert_eq(num(a.j, "responses[1].code"), 400120);
    answer_free(&a);
    a = call(&t, "GET", "/naming/v1/services?name=good-one", NULL);
    cr_assert_eq(num(a.j, "amount"), 0, "the good service of the failed batch does not exist");
    answer_free(&a);
    lstest_cleanup(&t);
}

/* ------------------------------------------------------ HTTP framing */

Test(polaris_http, bodies_and_heads_are_bounded_and_always_answered_in_json, .timeout = 120)
{
    lstest_t t;
    start(&t);

    /* a body over the limit: read, dropped, answered 400 in JSON */
    size_t big = 2 * 1024 * 1024;
    char *body = malloc(big + 64);
    int n = snprintf(body, 64, "{\"service\":\"");
    memset(body + n, 'a', big);
    strcpy(body + n + big, "\"}");
    answer_t a = call(&t, "POST", "/v1/RegisterInstance", body);
    expect_code(&a, 400000, "exceeds the limit", "a 2 MiB body");
    cr_assert_eq(a.status, 400);
    answer_free(&a);
    a = call(&t, "POST", "/naming/v1/instances", body);
    expect_code(&a, 400000, "exceeds the limit", "a 2 MiB batch");
    cr_assert(json_is_array(at(a.j, "responses")), "a batch endpoint answers a BatchWriteResponse");
    answer_free(&a);
    free(body);

    /* the connection stays usable after an oversized body */
    char *raw = malloc(big + 512);
    int h = snprintf(raw, 512, "POST /v1/ReportClient HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", big);
    memset(raw + h, 'x', big);
    int h2 = snprintf(raw + h + big, 256, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    lstest_http_resp_t r;
    cr_assert_eq(lstest_http_raw(t.http_port, raw, (size_t)h + big + (size_t)h2, &r, T_HTTP_TIMEOUT_MS), 400);
    cr_assert(strstr(r.raw, "HTTP/1.1 200 OK") && strstr(r.raw, "\"status\":\"ok\""),
              "the request after the dropped body is answered: %.400s", r.raw);
    lstest_http_resp_free(&r);
    free(raw);

    /* an oversized body is answered only once it was all sent: answering
     * (and closing) while the client still writes would reset it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)t.http_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char head[256];
    h = snprintf(head, sizeof head,
                 "POST /v1/RegisterInstance HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n",
                 big);
    cr_assert_eq(send(fd, head, (size_t)h, MSG_NOSIGNAL), h);
    char *half = calloc(1, big / 2);
    cr_assert_eq(send(fd, half, big / 2, MSG_NOSIGNAL), (ssize_t)(big / 2));
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&pf, 1, 300), 0, "no answer while half the body is still to come");
    cr_assert_eq(send(fd, half, big / 2, MSG_NOSIGNAL), (ssize_t)(big / 2));
    char ans[4096];
    size_t got = 0;
    for (ssize_t k; got < sizeof ans - 1 && (k = read(fd, ans + got, sizeof ans - 1 - got)) > 0;)
        got += (size_t)k;
    ans[got] = '\0';
    close(fd);
    free(half);
    cr_assert(strstr(ans, "HTTP/1.1 400") && strstr(ans, "exceeds the limit"), "answered after the body: %s", ans);

    /* chunked bodies are accepted, and bounded */
    static const char chunked[] = "POST /v1/ReportClient HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                  "Connection: close\r\n\r\n"
                                  "9\r\n{\"host\":\"\r\na\r\n10.2.2.2\"}\r\n0\r\n\r\n";
    cr_assert_eq(lstest_http_raw(t.http_port, chunked, sizeof chunked - 1, &r, T_HTTP_TIMEOUT_MS), 200);
    cr_assert(strstr(r.body, "10.2.2.2"), "the chunked body was read: %s", r.body);
    lstest_http_resp_free(&r);
    size_t cbig = 0x100000;
    raw = malloc(2 * (cbig + 16) + 256);
    h = snprintf(raw, 256, "POST /v1/ReportClient HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                           "Connection: close\r\n\r\n");
    size_t len = (size_t)h;
    for (int i = 0; i < 2; i++) {
        len += (size_t)sprintf(raw + len, "%zx\r\n", cbig);
        memset(raw + len, 'y', cbig);
        len += cbig;
        memcpy(raw + len, "\r\n", 2);
        len += 2;
    }
    memcpy(raw + len, "0\r\n\r\n", 5);
    len += 5;
    cr_assert_eq(lstest_http_raw(t.http_port, raw, len, &r, T_HTTP_TIMEOUT_MS), 400);
    cr_assert(strstr(r.body, "exceeds the limit"), "an oversized chunked body is refused by name: %s", r.body);
    lstest_http_resp_free(&r);
    free(raw);

    /* a head over the limit, a malformed head, an unknown method */
    raw = malloc(40000);
    h = snprintf(raw, 64, "GET /healthz HTTP/1.1\r\nX-Big: ");
    memset(raw + h, 'z', 30000);
    strcpy(raw + h + 30000, "\r\n\r\n");
    cr_assert_eq(lstest_http_raw(t.http_port, raw, strlen(raw), &r, T_HTTP_TIMEOUT_MS), 400);
    cr_assert(strstr(r.body, "exceed"), "an oversized head is refused by name: %s", r.body);
    lstest_http_resp_free(&r);
    free(raw);
    static const char badhead[] = "POST /v1/RegisterInstance HTTP/1.1\r\nno colon here\r\n\r\n";
    cr_assert_eq(lstest_http_raw(t.http_port, badhead, sizeof badhead - 1, &r, T_HTTP_TIMEOUT_MS), 400);
    cr_assert(strstr(r.body, "header"), "a malformed header line is refused by name: %s", r.body);
    lstest_http_resp_free(&r);

    /* pipelined requests are answered in order */
    static const char pipelined[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                    "POST /v1/ReportClient HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\n\r\n"
                                    "{\"host\":\"10.3.3.3\"}"
                                    "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    cr_assert_eq(lstest_http_raw(t.http_port, pipelined, sizeof pipelined - 1, &r, T_HTTP_TIMEOUT_MS), 200);
    const char *second = strstr(r.raw, "10.3.3.3"), *third = strstr(r.raw, "HTTP/1.1 404");
    cr_assert(second && third && second < third, "three answers in order: %s", r.raw);
    lstest_http_resp_free(&r);

    /* 404 and 405 are JSON too; HEAD /healthz still works */
    a = call(&t, "GET", "/v1/Nothing", NULL);
    cr_assert_eq(a.status, 404);
    answer_free(&a);
    a = call(&t, "GET", "/v1/RegisterInstance", NULL);
    cr_assert_eq(a.status, 405);
    answer_free(&a);
    cr_assert_eq(lstest_http(t.http_port, "HEAD", "/healthz", NULL, NULL, 0, &r, T_HTTP_TIMEOUT_MS), 200);
    lstest_http_resp_free(&r);
    lstest_cleanup(&t);
}

/* ------------------------------------------------------------- drain */

Test(polaris_http, a_request_waiting_on_a_worker_is_answered_when_the_gateway_stops, .timeout = 120)
{
    lstest_t t;
    start(&t);
    pid_t naming = lstest_pid(&t, "naming"), gw = lstest_pid(&t, "polaris-http");
    cr_assert(naming > 0 && gw > 0);
    cr_assert_eq(kill(naming, SIGSTOP), 0);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)t.http_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    static const char body[] = "{\"service\":\"slow\",\"namespace\":\"default\",\"host\":\"10.0.0.1\",\"port\":80}";
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /v1/RegisterInstance HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s", sizeof body - 1,
                     body);
    cr_assert_eq(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    lstest_sleep_ms(300); /* the request now waits on the stopped worker */
    cr_assert_eq(kill(gw, SIGTERM), 0);

    struct timeval tv = {8, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char ans[4096];
    size_t got = 0;
    for (ssize_t k; got < sizeof ans - 1 && (k = read(fd, ans + got, sizeof ans - 1 - got)) > 0;)
        got += (size_t)k;
    ans[got] = '\0';
    close(fd);
    kill(naming, SIGCONT);
    cr_assert(strstr(ans, "HTTP/1.1 500") && strstr(ans, "Connection: close") && strstr(ans, "stopping"),
              "the waiting request is answered in JSON as the gateway stops: %s", ans);
    cr_assert(strstr(ans, "\"code\":500000"), "a Polaris answer: %s", ans);

    cr_assert_gt(lstest_wait_restarted(&t, "polaris-http", gw, 15000), 0, "the gateway is back");
    lstest_http_resp_t r;
    cr_assert_eq(lstest_http(t.http_port, "GET", "/healthz", NULL, NULL, 0, &r, T_HTTP_TIMEOUT_MS), 200);
    lstest_http_resp_free(&r);
    lstest_cleanup(&t);
}

/*
 * test_supervisor.c: the whole process architecture, for real: the
 * supervisor, its private PostgreSQL, the three workers and both gateways,
 * driven through signals, the control socket, HTTP and gRPC.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "grpc_client.h"
#include "health.pb-c.h"
#include "lstest.h"

static const char *const child_roles[] = {"naming", "config", "health", "polaris-http", "polaris-grpc"};
#define N_CHILD_ROLES 5

/* grpc.health.v1.Health/Check for service "" on a port: the status enum, or -1. */
static int grpc_health(int port)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)"";
    uint8_t buf[64];
    size_t len = grpc__health__v1__health_check_request__pack(&req, buf);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int code = -1;
    char *details = NULL;
    int rc = gtc_unary(target, "/grpc.health.v1.Health/Check", buf, len, 3000, &resp, &rlen, &code, &details);
    free(details);
    if (rc < 0 || code != 0) {
        free(resp);
        return -1;
    }
    Grpc__Health__V1__HealthCheckResponse *r = grpc__health__v1__health_check_response__unpack(NULL, rlen, resp);
    free(resp);
    if (!r)
        return -1;
    int st = r->status;
    grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    return st;
}

static void assert_serving(const lstest_t *t)
{
    char *body = NULL;
    int status = lstest_http_get(t->http_port, "/healthz", &body, 3000);
    cr_assert_eq(status, 200, "GET /healthz answered %d: %s", status, body ? body : "");
    cr_assert(body && strstr(body, "\"naming\"") && strstr(body, "\"config\"") && strstr(body, "\"health\""),
              "healthz body lacks a worker: %s", body ? body : "");
    free(body);
    cr_assert_eq(grpc_health(t->grpc_port), GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
                 "gRPC health on the naming port is not SERVING");
    cr_assert_eq(grpc_health(t->grpc_config_port), GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
                 "gRPC health on the config port is not SERVING");
}

/* Serving within timeout_ms (the chain may still be reconnecting). */
static bool eventually_serving(const lstest_t *t, int timeout_ms)
{
    long long end = lstest_now_ms() + timeout_ms;
    while (lstest_now_ms() < end) {
        char *body = NULL;
        int st = lstest_http_get(t->http_port, "/healthz", &body, 1000);
        free(body);
        if (st == 200 && grpc_health(t->grpc_port) == 1)
            return true;
        lstest_sleep_ms(20);
    }
    return false;
}

static bool read_cmdline(pid_t pid, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

Test(supervisor, starts_every_process_and_serves_the_health_chain, .timeout = 120)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    Lodestar__StatusResponse *sr = lstest_status(&t, 2000);
    cr_assert(sr, "no answer on the control socket");
    cr_assert_str_eq(sr->state, "running");
    cr_assert_eq(sr->n_processes, 6, "expected postgres + 3 workers + 2 gateways, got %zu", sr->n_processes);
    for (size_t i = 0; i < sr->n_processes; i++) {
        Lodestar__ProcessStatus *p = sr->processes[i];
        cr_assert_str_eq(p->state, "ready", "%s is %s", p->role, p->state);
        cr_assert_gt(p->pid, 0);
        if (strcmp(p->role, "postgres") == 0)
            continue;
        char cmd[256], want[128];
        cr_assert(read_cmdline(p->pid, cmd, sizeof cmd));
        snprintf(want, sizeof want, "lodestar: %s %s", p->role, strcmp(p->kind, "worker") == 0 ? "worker" : "gateway");
        cr_assert_str_eq(cmd, want, "ps shows '%s' for %s", cmd, p->role);
    }
    lodestar__status_response__free_unpacked(sr, NULL);
    assert_serving(&t);
    /* the embedded PostgreSQL listens on a Unix socket only */
    char sock[700];
    snprintf(sock, sizeof sock, "%s/pg/.s.PGSQL.5432", t.runtime);
    cr_assert_eq(access(sock, F_OK), 0, "no PostgreSQL socket at %s", sock);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

Test(supervisor, the_supervisor_links_no_store_or_grpc_library)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ldd %s/lodestar | grep -E 'libpq|hiredis|libgrpc'", getenv("LODESTAR_BIN_DIR"));
    int rc = system(cmd);
    cr_assert_neq(WEXITSTATUS(rc), 0, "the supervisor binary links libpq, hiredis or gRPC");
}

Test(supervisor, kill_9_of_each_child_is_back_and_serving_within_2s, .timeout = 180)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    for (int i = 0; i < N_CHILD_ROLES; i++) {
        const char *role = child_roles[i];
        pid_t old = lstest_pid(&t, role);
        cr_assert_gt(old, 0, "%s not running", role);
        long long t0 = lstest_now_ms();
        cr_assert_eq(kill(old, SIGKILL), 0);
        pid_t fresh = lstest_wait_restarted(&t, role, old, 2000);
        cr_assert_gt(fresh, 0, "%s was not back and ready within 2 s", role);
        cr_assert(eventually_serving(&t, 2000 - (int)(lstest_now_ms() - t0) > 500
                                             ? 2000 - (int)(lstest_now_ms() - t0) : 500),
                  "the chain does not serve again after %s was killed", role);
        long long took = lstest_now_ms() - t0;
        cr_log_info("%s: killed pid %d, pid %d ready and serving after %lld ms", role, (int)old, (int)fresh, took);
        cr_assert_leq(took, 2000, "%s took %lld ms to come back and serve", role, took);
    }
    Lodestar__StatusResponse *sr = lstest_status(&t, 2000);
    for (size_t i = 0; i < sr->n_processes; i++) {
        Lodestar__ProcessStatus *p = sr->processes[i];
        if (strcmp(p->role, "postgres") != 0) {
            cr_assert_eq(p->restarts, 1, "%s restarted %u times", p->role, p->restarts);
            cr_assert(strstr(p->last_exit, "signal 9"), "%s last exit '%s'", p->role, p->last_exit);
        }
    }
    lodestar__status_response__free_unpacked(sr, NULL);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

typedef struct hammer {
    int port;
    volatile int stop;
    int attempts, refused, other_errors, http_ok;
    int last_error;
    bool http;
} hammer_t;

/* Connect in a loop; for HTTP also issue a request and count answers. */
static void *hammer_thread(void *arg)
{
    hammer_t *h = arg;
    while (!h->stop) {
        h->attempts++;
        if (h->http) {
            char *body = NULL;
            int st = lstest_http_get(h->port, "/healthz", &body, 5000);
            free(body);
            if (st == -ECONNREFUSED)
                h->refused++;
            else if (st < 0) {
                h->other_errors++;
                h->last_error = -st;
            } else
                h->http_ok++;
        } else {
            int rc = lstest_connect(h->port, 5000);
            if (rc == -ECONNREFUSED)
                h->refused++;
            else if (rc < 0) {
                h->other_errors++;
                h->last_error = -rc;
            }
            /* paced: a connect-and-close flood could overflow the kernel's
             * accept queue while no process accepts, which is not what this
             * test is about */
            lstest_sleep_ms(5);
        }
    }
    return NULL;
}

static void restart_gateway_under_load(int sig)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    pid_t before[N_CHILD_ROLES];
    for (int i = 0; i < N_CHILD_ROLES; i++)
        before[i] = lstest_pid(&t, child_roles[i]);

    hammer_t hh = {.port = t.http_port, .http = true}, hg = {.port = t.grpc_port}, hc = {.port = t.grpc_config_port};
    pthread_t th[3];
    pthread_create(&th[0], NULL, hammer_thread, &hh);
    pthread_create(&th[1], NULL, hammer_thread, &hg);
    pthread_create(&th[2], NULL, hammer_thread, &hc);
    lstest_sleep_ms(300);
    pid_t http_old = lstest_pid(&t, "polaris-http"), grpc_old = lstest_pid(&t, "polaris-grpc");
    kill(http_old, sig);
    kill(grpc_old, sig);
    pid_t http_new = lstest_wait_restarted(&t, "polaris-http", http_old, 5000);
    pid_t grpc_new = lstest_wait_restarted(&t, "polaris-grpc", grpc_old, 5000);
    lstest_sleep_ms(300);
    hh.stop = hg.stop = hc.stop = 1;
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    cr_log_info("signal %d: http %d attempts (%d answered), grpc %d + %d connects; refused %d/%d/%d", sig,
                hh.attempts, hh.http_ok, hg.attempts, hc.attempts, hh.refused, hg.refused, hc.refused);
    cr_assert_gt(http_new, 0, "polaris-http did not restart");
    cr_assert_gt(grpc_new, 0, "polaris-grpc did not restart");
    cr_assert_eq(hh.refused + hg.refused + hc.refused, 0, "connections refused while gateways restarted");
    cr_assert_eq(hh.other_errors + hg.other_errors + hc.other_errors, 0,
                 "connection errors during the restart: http %d (last: %s), grpc %d (%s), grpc-config %d (%s)",
                 hh.other_errors, strerror(hh.last_error), hg.other_errors, strerror(hg.last_error), hc.other_errors,
                 strerror(hc.last_error));
    cr_assert_gt(hh.http_ok, 10, "too few HTTP answers (%d) to mean anything", hh.http_ok);
    for (int i = 0; i < 3; i++) /* the workers were not touched */
        cr_assert_eq(lstest_pid(&t, child_roles[i]), before[i], "%s restarted too", child_roles[i]);
    assert_serving(&t);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

Test(supervisor, sighup_to_one_gateway_restarts_only_it_without_refusing, .timeout = 120)
{
    restart_gateway_under_load(SIGHUP);
}

Test(supervisor, sigterm_to_one_gateway_restarts_only_it_without_refusing, .timeout = 120)
{
    restart_gateway_under_load(SIGTERM);
}

Test(supervisor, reload_with_a_broken_file_keeps_the_old_configuration, .timeout = 120)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    pid_t before[N_CHILD_ROLES];
    for (int i = 0; i < N_CHILD_ROLES; i++)
        before[i] = lstest_pid(&t, child_roles[i]);
    FILE *f = fopen(t.config, "a");
    fprintf(f, "bogus_key: 1\nsupervisor: [not, a, mapping]\n");
    fclose(f);
    kill(t.pid, SIGHUP);
    lstest_sleep_ms(1500);
    cr_assert(lstest_file_contains(t.log, "reload rejected"), "no 'reload rejected' in the log");
    cr_assert(lstest_file_contains(t.log, "bogus_key"), "the log does not name the bad key");
    for (int i = 0; i < N_CHILD_ROLES; i++)
        cr_assert_eq(lstest_pid(&t, child_roles[i]), before[i], "%s restarted on a rejected reload", child_roles[i]);
    assert_serving(&t);
    Lodestar__StatusResponse *sr = lstest_status(&t, 2000);
    cr_assert_eq(sr->generation, 1);
    lodestar__status_response__free_unpacked(sr, NULL);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

Test(supervisor, reload_restarts_only_the_children_whose_configuration_changed, .timeout = 120)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    pid_t before[N_CHILD_ROLES];
    for (int i = 0; i < N_CHILD_ROLES; i++)
        before[i] = lstest_pid(&t, child_roles[i]);
    /* a new log level for the polaris-http gateway only */
    snprintf(t.logging_extra, sizeof t.logging_extra, "  processes:\n    polaris-http: {level: debug}\n");
    lstest_write_config(&t, NULL);
    kill(t.pid, SIGHUP);
    pid_t fresh = lstest_wait_restarted(&t, "polaris-http", before[3], 5000);
    cr_assert_gt(fresh, 0, "polaris-http was not restarted by the reload");
    cr_assert(lstest_wait_ready(&t, 5000));
    for (int i = 0; i < N_CHILD_ROLES; i++)
        if (i != 3)
            cr_assert_eq(lstest_pid(&t, child_roles[i]), before[i], "%s restarted although unchanged", child_roles[i]);
    Lodestar__StatusResponse *sr = lstest_status(&t, 2000);
    cr_assert_eq(sr->generation, 2);
    lodestar__status_response__free_unpacked(sr, NULL);
    assert_serving(&t);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

Test(supervisor, sigterm_stops_everything_with_status_0_and_no_orphans, .timeout = 120)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    pid_t pg = lstest_pid(&t, "postgres");
    cr_assert_gt(lstest_count_procs_matching(t.dir), 3, "cannot see the processes to check");
    long long t0 = lstest_now_ms();
    int rc = lstest_stop(&t, 10000);
    long long took = lstest_now_ms() - t0;
    cr_assert_eq(rc, 0, "supervisor exit status %d", rc);
    cr_assert_leq(took, 10000);
    lstest_sleep_ms(100);
    cr_assert_eq(kill(pg, 0), -1, "PostgreSQL (pid %d) survived", (int)pg);
    cr_assert_eq(lstest_count_procs_matching(t.dir), 0, "processes of this instance outlived the supervisor");
    cr_log_info("stopped in %lld ms", took);
    lstest_cleanup(&t);
}

Test(supervisor, children_and_postgres_exit_when_the_supervisor_is_killed, .timeout = 120)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    kill(t.pid, SIGKILL);
    int st;
    waitpid(t.pid, &st, 0);
    t.pid = 0;
    long long end = lstest_now_ms() + 10000;
    while (lstest_count_procs_matching(t.dir) > 0 && lstest_now_ms() < end)
        lstest_sleep_ms(50);
    cr_assert_eq(lstest_count_procs_matching(t.dir), 0, "children outlived a killed supervisor");
    lstest_cleanup(&t);
}

Test(supervisor, postgres_crash_is_restarted_and_workers_reconnect, .timeout = 120)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    pid_t pg = lstest_pid(&t, "postgres");
    pid_t naming = lstest_pid(&t, "naming");
    kill(pg, SIGKILL);
    cr_assert_gt(lstest_wait_restarted(&t, "postgres", pg, 15000), 0, "PostgreSQL was not restarted");
    cr_assert(eventually_serving(&t, 15000), "the health chain did not recover after PostgreSQL came back");
    cr_assert_eq(lstest_pid(&t, "naming"), naming, "the naming worker restarted instead of reconnecting");
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

Test(supervisor, second_supervisor_on_the_same_runtime_dir_refuses_to_start, .timeout = 120)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    lstest_t t2 = t;
    t2.pid = 0;
    snprintf(t2.log, sizeof t2.log, "%s/second.log", t.dir);
    pid_t p2 = lstest_spawn(&t2, NULL);
    int st;
    waitpid(p2, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "second supervisor did not exit 1");
    cr_assert(lstest_file_contains(t2.log, "another lodestar supervisor"), "no reason in its log");
    assert_serving(&t);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

Test(supervisor, a_crash_loop_is_throttled_to_the_maximum_backoff, .timeout = 120)
{
    lstest_t t = {0};
    lstest_prepare(&t, NULL);
    /* a tight crash-loop policy: more than 2 crashes in 60 s -> one restart per 3 s */
    FILE *f = fopen(t.config, "r");
    char *text = NULL;
    size_t n = 0;
    getdelim(&text, &n, '\0', f);
    fclose(f);
    char *pos = strstr(text, "  restart_backoff_initial_ms: 100\n");
    cr_assert(pos);
    f = fopen(t.config, "w");
    fwrite(text, 1, (size_t)(pos - text), f);
    fputs("  restart_backoff_initial_ms: 100\n  restart_backoff_max_ms: 3000\n  crash_loop_max: 2\n", f);
    fputs(pos + strlen("  restart_backoff_initial_ms: 100\n"), f);
    fclose(f);
    free(text);
    lstest_spawn(&t, NULL);
    cr_assert(lstest_wait_ready(&t, 60000));

    pid_t pid = lstest_pid(&t, "config");
    for (int i = 0; i < 2; i++) { /* two quick crashes: fast restarts */
        kill(pid, SIGKILL);
        pid_t fresh = lstest_wait_restarted(&t, "config", pid, 2000);
        cr_assert_gt(fresh, 0, "crash %d: no quick restart", i + 1);
        pid = fresh;
    }
    long long t0 = lstest_now_ms();
    kill(pid, SIGKILL); /* the third crash within the window */
    pid_t fresh = lstest_wait_restarted(&t, "config", pid, 6000);
    long long took = lstest_now_ms() - t0;
    cr_assert_gt(fresh, 0, "no restart after the throttled delay");
    cr_assert_geq(took, 2900, "a crash loop restarted after only %lld ms", took);
    cr_assert(lstest_file_contains(t.log, "crash loop"), "the log does not say 'crash loop'");
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

/*
 * test_cli.c: the command line as an operator uses it: --check-config on
 * the shipped example and on a broken file, `status` against a running and
 * a stopped supervisor, and SIGUSR1 reopening every process's log file.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lstest.h"

/* Run a shell command; capture stdout+stderr into *out; return exit code. */
static int run(const char *cmd, char **out)
{
    char full[2048];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 1024)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(cli, check_config_accepts_the_shipped_example)
{
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s/lodestar --check-config %s/deploy/lodestar.yaml", getenv("LODESTAR_BIN_DIR"),
             getenv("LODESTAR_SOURCE_DIR"));
    int rc = run(cmd, &out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "configuration is valid"), "%s", out);
    free(out);
}

Test(cli, check_config_prints_every_error_and_fails)
{
    char path[] = "/tmp/lodestar-cli-XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    const char *text = "listeners:\n"
                       "  - {name: a, protocol: polaris-http, address: 127.0.0.1, port: 99999}\n"
                       "logging:\n  level: loud\n"
                       "nonsense: true\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s/lodestar --check-config %s", getenv("LODESTAR_BIN_DIR"), path);
    int rc = run(cmd, &out);
    unlink(path);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "listeners[0].port"), "port error missing: %s", out);
    cr_assert(strstr(out, "logging.level"), "level error missing: %s", out);
    cr_assert(strstr(out, "nonsense"), "unknown key error missing: %s", out);
    cr_assert(strstr(out, "3 errors"), "error count missing: %s", out);
    free(out);
}

Test(cli, unknown_arguments_print_usage)
{
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s/lodestar --frobnicate", getenv("LODESTAR_BIN_DIR"));
    cr_assert_eq(run(cmd, &out), 2);
    cr_assert(strstr(out, "usage:"), "%s", out);
    free(out);
}

Test(cli, status_lists_every_process_and_fails_when_nothing_runs, .timeout = 120)
{
    lstest_t t = {0};
    lstest_start(&t, NULL, 60000);
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s/lodestar status -c %s", getenv("LODESTAR_BIN_DIR"), t.config);
    int rc = run(cmd, &out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    const char *expect[] = {"ROLE", "RESTARTS", "postgres", "naming", "config", "health", "polaris-http",
                            "polaris-grpc", "ready", "running"};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        cr_assert(strstr(out, expect[i]), "status output lacks '%s':\n%s", expect[i], out);
    free(out);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    rc = run(cmd, &out);
    cr_assert_eq(rc, 1, "status against a stopped supervisor exited %d: %s", rc, out);
    cr_assert(strstr(out, "control socket"), "%s", out);
    free(out);
    lstest_cleanup(&t);
}

Test(cli, sigusr1_reopens_every_log_file, .timeout = 120)
{
    lstest_t t = {0};
    lstest_prepare(&t, NULL);
    char logfile[600], moved[640];
    snprintf(logfile, sizeof logfile, "%s/all.log", t.dir);
    snprintf(moved, sizeof moved, "%s.1", logfile);
    cr_assert_lt(strlen(logfile) + 9, sizeof t.logging_extra);
    strcpy(t.logging_extra, "  file: ");
    strcat(t.logging_extra, logfile);
    strcat(t.logging_extra, "\n");
    lstest_start(&t, NULL, 60000);
    cr_assert(lstest_file_contains(logfile, "[naming worker"), "workers do not log to %s", logfile);
    cr_assert_eq(rename(logfile, moved), 0);
    kill(t.pid, SIGUSR1);
    const char *who[] = {"[supervisor", "[naming worker", "[config worker", "[health worker",
                         "[polaris-http gateway", "[polaris-grpc gateway"};
    long long end = lstest_now_ms() + 5000;
    size_t found = 0;
    while (lstest_now_ms() < end) {
        found = 0;
        for (size_t i = 0; i < 6; i++)
            found += lstest_file_contains(logfile, who[i]);
        if (found == 6)
            break;
        lstest_sleep_ms(50);
    }
    cr_assert_eq(found, 6, "only %zu of 6 processes write to the reopened %s", found, logfile);
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    lstest_cleanup(&t);
}

/*
 * test_systemd.c: the supervisor's systemd protocol, read from a real
 * NOTIFY_SOCKET the test owns: READY=1 only once every child is ready,
 * WATCHDOG=1 while children answer and not while one is frozen,
 * RELOADING=1 then READY=1 around a reload, STOPPING=1 on SIGTERM.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lstest.h"

static int notify_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    cr_assert_lt(strlen(path), sizeof a.sun_path, "socket path too long: %s", path);
    memcpy(a.sun_path, path, strlen(path) + 1);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0, "bind %s: %s", path, strerror(errno));
    return fd;
}

/* Next datagram within timeout_ms, or "" on timeout. */
static const char *next_msg(int fd, int timeout_ms, char *buf, size_t len)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return "";
    ssize_t n = recv(fd, buf, len - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* Wait for a datagram containing needle; true if it came in time. */
static bool wait_msg(int fd, const char *needle, int timeout_ms, char *buf, size_t len)
{
    long long end = lstest_now_ms() + timeout_ms;
    while (lstest_now_ms() < end) {
        const char *m = next_msg(fd, (int)(end - lstest_now_ms()), buf, len);
        if (strstr(m, needle))
            return true;
    }
    return false;
}

static int count_msgs(int fd, const char *needle, int window_ms)
{
    char buf[512];
    int n = 0;
    long long end = lstest_now_ms() + window_ms;
    while (lstest_now_ms() < end) {
        const char *m = next_msg(fd, (int)(end - lstest_now_ms()), buf, sizeof buf);
        if (strstr(m, needle))
            n++;
    }
    return n;
}

Test(systemd, ready_watchdog_reload_and_stopping, .timeout = 150)
{
    lstest_t t = {0};
    lstest_prepare(&t, NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/notify.sock", t.dir);
    int fd = notify_socket(path);
    static char env_notify[700], env_wd[64];
    snprintf(env_notify, sizeof env_notify, "NOTIFY_SOCKET=%s", path);
    snprintf(env_wd, sizeof env_wd, "WATCHDOG_USEC=%d", 1000000);
    lstest_spawn(&t, (char *const[]){env_notify, env_wd, NULL});

    char buf[512];
    cr_assert(wait_msg(fd, "READY=1", 60000, buf, sizeof buf), "no READY=1 from the supervisor");
    /* READY only once everything is ready */
    Lodestar__StatusResponse *sr = lstest_status(&t, 2000);
    cr_assert(sr);
    for (size_t i = 0; i < sr->n_processes; i++)
        cr_assert_str_eq(sr->processes[i]->state, "ready", "READY=1 sent while %s was %s", sr->processes[i]->role,
                         sr->processes[i]->state);
    lodestar__status_response__free_unpacked(sr, NULL);

    int beats = count_msgs(fd, "WATCHDOG=1", 2000);
    cr_assert_geq(beats, 2, "only %d WATCHDOG=1 in 2 s with a 1 s watchdog", beats);

    /* a frozen worker stops answering pings: the watchdog is withheld */
    pid_t naming = lstest_pid(&t, "naming");
    kill(naming, SIGSTOP);
    lstest_sleep_ms(3500); /* 3 ping intervals (500 ms) + 1 s of grace + margin */
    while (next_msg(fd, 0, buf, sizeof buf)[0])
        ; /* drop what queued meanwhile */
    int frozen_beats = count_msgs(fd, "WATCHDOG=1", 1500);
    kill(naming, SIGCONT);
    cr_assert_eq(frozen_beats, 0, "WATCHDOG=1 sent while the naming worker was frozen");
    lstest_sleep_ms(1200);
    cr_assert_geq(count_msgs(fd, "WATCHDOG=1", 2000), 1, "the watchdog did not resume after the worker thawed");

    kill(t.pid, SIGHUP);
    cr_assert(wait_msg(fd, "RELOADING=1", 5000, buf, sizeof buf), "no RELOADING=1 on SIGHUP");
    cr_assert(wait_msg(fd, "READY=1", 10000, buf, sizeof buf), "no READY=1 after the reload");

    kill(t.pid, SIGTERM);
    cr_assert(wait_msg(fd, "STOPPING=1", 5000, buf, sizeof buf), "no STOPPING=1 on SIGTERM");
    cr_assert_eq(lstest_stop(&t, 10000), 0);
    close(fd);
    lstest_cleanup(&t);
}

/*
 * test_sup_sockets.c: the supervisor's socket ownership (listeners.c) and
 * the configuration memfd children read (spawn.c).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lstest.h"
#include "sup.h"

static char dir[] = "/tmp/lodestar-sup-XXXXXX";

static cfg_t *make_cfg(const char *yaml)
{
    cfg_t *cfg = NULL;
    cfg_errors_t errs = {0};
    char path[128];
    snprintf(path, sizeof path, "%s/lodestar.yaml", dir);
    int rc = cfg_load_buffer(yaml, strlen(yaml), path, &cfg, &errs);
    cr_assert_eq(rc, 0, "config rejected: %s", errs.count ? errs.msgs[0] : "?");
    return cfg;
}

static bool is_listening(int fd)
{
    int v = 0;
    socklen_t l = sizeof v;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) == 0 && v == 1;
}

static size_t count_socks(sup_t *s)
{
    size_t n = 0;
    for (lsock_t *l = s->socks; l; l = l->next)
        n++;
    return n;
}

static void setup(void)
{
    cr_assert(mkdtemp(dir));
    char run[200];
    snprintf(run, sizeof run, "%s/run", dir);
    mkdir(run, 0755);
}
static void teardown(void)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    int rc = system(cmd);
    (void)rc;
}

TestSuite(sup_sockets, .init = setup, .fini = teardown);

Test(sup_sockets, keeps_unchanged_sockets_replaces_moved_ones_and_drops_removed_ones)
{
    int p1 = lstest_free_port(), p2 = lstest_free_port(), p3 = lstest_free_port();
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "runtime_dir: run\nlisteners:\n"
             "  - {name: a, protocol: polaris-http, address: 127.0.0.1, port: %d}\n"
             "  - {name: b, protocol: polaris-grpc, address: 127.0.0.1, port: %d}\n", p1, p2);
    cfg_t *c1 = make_cfg(yaml);
    sup_t s = {0};
    char err[256];
    cr_assert_eq(sup_sockets_sync(&s, c1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(count_socks(&s), 5, "2 listeners + 3 worker IPC sockets");
    int fd_a = sup_socket_find(&s, "a")->fd, fd_b = sup_socket_find(&s, "b")->fd;
    cr_assert(is_listening(fd_a) && is_listening(fd_b));
    cr_assert(sup_socket_find(&s, "ipc:naming"));
    cr_assert_eq(lstest_connect(p1, 1000), 0, "port %d does not accept", p1);

    /* same configuration again: the very same sockets */
    cr_assert_eq(sup_sockets_sync(&s, c1, err, sizeof err), 0);
    cr_assert_eq(sup_socket_find(&s, "a")->fd, fd_a);

    /* b moves to p3; a disappears */
    snprintf(yaml, sizeof yaml,
             "runtime_dir: run\nlisteners:\n"
             "  - {name: b, protocol: polaris-grpc, address: 127.0.0.1, port: %d}\n", p3);
    cfg_t *c2 = make_cfg(yaml);
    cr_assert_eq(sup_sockets_sync(&s, c2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(sup_socket_find(&s, "b")->port, p3);
    cr_assert_eq(lstest_connect(p3, 1000), 0);
    cr_assert_eq(lstest_connect(p2, 1000), -ECONNREFUSED, "the old port of b still accepts");
    cr_assert_eq(lstest_connect(p1, 1000), 0, "a must stay open until dropped");
    sup_sockets_drop_unused(&s);
    cr_assert_null(sup_socket_find(&s, "a"));
    cr_assert_eq(lstest_connect(p1, 1000), -ECONNREFUSED);
    cr_assert_eq(count_socks(&s), 4);

    sup_sockets_close_tcp(&s);
    cr_assert_eq(lstest_connect(p3, 1000), -ECONNREFUSED, "shutdown leaves TCP listeners open");
    sup_sockets_free(&s);
    cfg_free(c1);
    cfg_free(c2);
}

Test(sup_sockets, a_busy_port_is_an_error_naming_the_listener)
{
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    bind(busy, (struct sockaddr *)&a, sizeof a);
    listen(busy, 1);
    getsockname(busy, (struct sockaddr *)&a, &l);
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "runtime_dir: run\nlisteners:\n  - {name: web, protocol: polaris-http, address: 127.0.0.1, port: %d}\n",
             ntohs(a.sin_port));
    cfg_t *c = make_cfg(yaml);
    sup_t s = {0};
    char err[256] = "";
    cr_assert_lt(sup_sockets_sync(&s, c, err, sizeof err), 0);
    char want[128];
    snprintf(want, sizeof want, "listener web: cannot listen on 127.0.0.1:%d: Address already in use", ntohs(a.sin_port));
    cr_assert_str_eq(err, want);
    sup_sockets_free(&s);
    cfg_free(c);
    close(busy);
}

Test(sup_sockets, config_memfd_is_sealed_and_holds_the_bytes)
{
    const char *text = "runtime_dir: run\n";
    int fd = sup_config_memfd(text, strlen(text));
    cr_assert_geq(fd, 0);
    char buf[64] = "";
    cr_assert_eq(pread(fd, buf, sizeof buf, 0), (ssize_t)strlen(text));
    cr_assert_str_eq(buf, text);
    cr_assert_eq(pwrite(fd, "x", 1, 0), -1, "a child could change the configuration");
    cr_assert_eq(errno, EPERM);
    cr_assert_neq(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0, "the memfd leaks into unrelated execs");
    close(fd);
}

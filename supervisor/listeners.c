/*
 * listeners.c: the listening sockets the supervisor owns.
 *
 * Gateways and workers inherit them; because the supervisor keeps its copy
 * open across child restarts, a connect during a restart waits in the
 * backlog instead of being refused. A reload keeps every socket whose
 * address is unchanged and opens new ones before anything is restarted, so
 * a bind failure aborts the reload with nothing changed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "sup.h"

#define LISTEN_BACKLOG 4096

static int tcp_listen(const char *address, int port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        sl = sizeof *v4;
    } else if (inet_pton(AF_INET6, address, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        sl = sizeof *v6;
    } else {
        snprintf(err, errlen, "'%s' is not an IP address", address);
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s:%d: %s", address, port, strerror(e));
        close(fd);
        return -e;
    }
    return fd;
}

lsock_t *sup_socket_find(sup_t *s, const char *name)
{
    for (lsock_t *l = s->socks; l; l = l->next)
        if (strcmp(l->name, name) == 0)
            return l;
    return NULL;
}

static int sync_one(sup_t *s, const char *name, const char *protocol, const char *address, int port,
                    const char *path, char *err, size_t errlen)
{
    lsock_t *l = sup_socket_find(s, name);
    if (l && strcmp(l->address, address) == 0 && l->port == port && strcmp(l->path, path) == 0 &&
        strcmp(l->protocol, protocol) == 0) {
        l->keep = true;
        return 0;
    }
    char why[256] = "";
    int fd;
    if (*path)
        fd = ipc_listen_unix(path, LISTEN_BACKLOG);
    else
        fd = tcp_listen(address, port, why, sizeof why);
    if (fd < 0) {
        if (*path)
            snprintf(err, errlen, "%s: cannot listen on %s: %s", name, path, strerror(-fd));
        else
            snprintf(err, errlen, "listener %s: %s", name, why);
        return fd;
    }
    if (l) {
        /* address changed: the new socket replaces the old one */
        if (*path)
            log_info("IPC socket %s moves to %s", name, path);
        else
            log_info("listener %s moves to %s:%d", name, address, port);
        close(l->fd);
    } else {
        l = calloc(1, sizeof *l);
        snprintf(l->name, sizeof l->name, "%s", name);
        l->next = s->socks;
        s->socks = l;
    }
    snprintf(l->protocol, sizeof l->protocol, "%s", protocol);
    snprintf(l->address, sizeof l->address, "%s", address);
    snprintf(l->path, sizeof l->path, "%s", path);
    l->port = port;
    l->fd = fd;
    l->keep = true;
    if (*path)
        log_info("IPC socket %s listening at %s", name, path);
    else
        log_info("listener %s (%s) listening on %s:%d", name, protocol, address, port);
    return 0;
}

/* Make the socket set match cfg: every enabled listener and one IPC socket
 * per enabled worker. Marks what cfg uses with keep; nothing is closed here. */
int sup_sockets_sync(sup_t *s, const cfg_t *cfg, char *err, size_t errlen)
{
    for (lsock_t *l = s->socks; l; l = l->next)
        l->keep = false;
    static const char *const workers[] = {"naming", "config", "health"};
    const cfg_worker_t *wcfg[] = {&cfg->naming, &cfg->config, &cfg->health};
    for (int i = 0; i < 3; i++) {
        if (!wcfg[i]->enabled)
            continue;
        char name[64];
        snprintf(name, sizeof name, "ipc:%s", workers[i]);
        char *path = cfg_ipc_path(cfg, workers[i]);
        int rc = sync_one(s, name, "", "", 0, path, err, errlen);
        free(path);
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const cfg_listener_t *li = &cfg->listeners[i];
        if (!li->enabled)
            continue;
        int rc = sync_one(s, li->name, li->protocol, li->address, li->port, "", err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Close the sockets the current configuration no longer uses. */
void sup_sockets_drop_unused(sup_t *s)
{
    for (lsock_t **pp = &s->socks; *pp;) {
        lsock_t *l = *pp;
        if (l->keep) {
            pp = &l->next;
            continue;
        }
        log_info("closing listener %s (no longer configured)", l->name);
        close(l->fd);
        if (*l->path)
            unlink(l->path);
        *pp = l->next;
        free(l);
    }
}

/* Shutdown begins: refuse new TCP connections from now on. */
void sup_sockets_close_tcp(sup_t *s)
{
    for (lsock_t *l = s->socks; l; l = l->next)
        if (!*l->path && l->fd >= 0) {
            close(l->fd);
            l->fd = -1;
        }
}

void sup_sockets_free(sup_t *s)
{
    while (s->socks) {
        lsock_t *l = s->socks;
        s->socks = l->next;
        if (l->fd >= 0)
            close(l->fd);
        if (*l->path)
            unlink(l->path);
        free(l);
    }
}

/*
 * spawn.c: fork+exec of a worker or gateway (the contract is in ipc/child.h).
 *
 * Signals are blocked across fork so that no handler of the supervisor's
 * event loop ever runs in the child; the child unblocks them once its own
 * handlers exist. Every descriptor the supervisor opens is close-on-exec,
 * so a child inherits exactly fds 0-2, the config memfd (3), its channel (4)
 * and its listening sockets (5..).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "child.h"
#include "log.h"
#include "sup.h"

extern char **environ;

/* A sealed memfd holding the validated configuration bytes. */
int sup_config_memfd(const char *bytes, size_t len)
{
    int fd = memfd_create("lodestar-config", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, bytes + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        off += (size_t)n;
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    return fd;
}

static bool env_is_ours(const char *kv)
{
    static const char *const drop[] = {"LODESTAR_ROLE=", "LODESTAR_CONFIG_PATH=", "LODESTAR_GENERATION=",
                                       "LODESTAR_LISTEN_FDS=", "LODESTAR_SUPERVISOR_PID=", "NOTIFY_SOCKET=",
                                       "WATCHDOG_USEC=", "WATCHDOG_PID=", "LISTEN_FDS=", "LISTEN_PID=",
                                       "LISTEN_FDNAMES="};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        if (strncmp(kv, drop[i], strlen(drop[i])) == 0)
            return true;
    return false;
}

int sup_spawn(sup_t *s, proc_t *p)
{
    /* the sockets this process inherits, in order */
    int fds[32];
    char names[1024] = "";
    size_t nfds = 0;
    for (lsock_t *l = s->socks; l; l = l->next) {
        bool mine;
        if (p->kind == PK_WORKER)
            mine = strncmp(l->name, "ipc:", 4) == 0 && strcmp(l->name + 4, p->role) == 0;
        else
            mine = strcmp(l->protocol, p->role) == 0;
        if (!mine || l->fd < 0 || nfds == sizeof fds / sizeof fds[0])
            continue;
        fds[nfds++] = l->fd;
        if (*names)
            strncat(names, ",", sizeof names - strlen(names) - 1);
        strncat(names, l->name, sizeof names - strlen(names) - 1);
    }

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        log_error("%s: socketpair: %s", p->title, strerror(errno));
        return -errno;
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/%s", s->self_dir, p->kind == PK_WORKER ? "lodestar-worker" : "lodestar-gateway");
    char argv0[96];
    snprintf(argv0, sizeof argv0, "lodestar: %s", p->title);
    char *argv[] = {argv0, NULL};

    /* environment: ours, minus anything meant for the supervisor only */
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 8, sizeof *envp);
    size_t e = 0;
    for (size_t i = 0; i < n; i++)
        if (!env_is_ours(environ[i]))
            envp[e++] = environ[i];
    char env_role[64], env_path[4200], env_gen[64], env_fds[1100], env_pid[64];
    snprintf(env_role, sizeof env_role, "LODESTAR_ROLE=%s", p->role);
    snprintf(env_path, sizeof env_path, "LODESTAR_CONFIG_PATH=%s", s->cfg->path);
    snprintf(env_gen, sizeof env_gen, "LODESTAR_GENERATION=%llu", (unsigned long long)s->generation);
    snprintf(env_fds, sizeof env_fds, "LODESTAR_LISTEN_FDS=%s", names);
    snprintf(env_pid, sizeof env_pid, "LODESTAR_SUPERVISOR_PID=%d", (int)getpid());
    envp[e++] = env_role;
    envp[e++] = env_path;
    envp[e++] = env_gen;
    envp[e++] = env_fds;
    envp[e++] = env_pid;
    envp[e] = NULL;

    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t pid = fork();
    if (pid == 0) {
        /* child: move every source above the targets, then into place */
        int src[34];
        int nsrc = 0;
        src[nsrc++] = s->cfg_memfd;
        src[nsrc++] = sv[1];
        for (size_t i = 0; i < nfds; i++)
            src[nsrc++] = fds[i];
        for (int i = 0; i < nsrc; i++)
            src[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 100);
        for (int i = 0; i < nsrc; i++) {
            if (src[i] < 0 || dup2(src[i], CHILD_FD_CONFIG + i) < 0)
                _exit(126);
        }
        execve(path, argv, envp);
        dprintf(STDERR_FILENO, "lodestar: cannot exec %s for the %s: %s\n", path, p->title, strerror(errno));
        _exit(127);
    }
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(envp);
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        log_error("%s: fork: %s", p->title, strerror(fork_errno));
        return -fork_errno;
    }
    p->pid = pid;
    p->chan = ipc_conn_new(s->base, sv[0], p->title, s->cfg->ipc.max_frame_bytes, sup_chan_frame, sup_chan_close, p);
    log_info("started %s, pid %d (%zu inherited socket%s)", p->title, (int)pid, nfds, nfds == 1 ? "" : "s");
    return 0;
}

/*
 * unix.c: creating and connecting Unix stream sockets for IPC.
 *
 * Rules kept here:
 *  - every socket is non-blocking and close-on-exec from its creation;
 *  - a path that does not fit sun_path is refused with -ENAMETOOLONG
 *    rather than silently truncated;
 *  - ipc_listen_unix replaces only a *stale* socket file: if something still
 *    accepts connections at the path it fails with -EADDRINUSE, and a path
 *    that exists but is not a socket is left alone (-EEXIST);
 *  - the socket is made mode 0660 before it listens, so no connection is
 *    ever accepted under looser permissions.
 * No logging: callers name the path in their own message.
 */
#include "ipc.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int fill_addr(const char *path, struct sockaddr_un *sa)
{
    size_t len = path ? strlen(path) : 0;
    if (len == 0)
        return -EINVAL;
    if (len >= sizeof sa->sun_path)
        return -ENAMETOOLONG;
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, len + 1);
    return 0;
}

/* Is a listener alive at sa? A refused or failing connect means no. */
static bool socket_alive(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int rc = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
    /* EAGAIN: a live listener whose backlog is full. */
    bool alive = rc == 0 || errno == EAGAIN || errno == EINPROGRESS;
    close(fd);
    return alive;
}

int ipc_listen_unix(const char *path, int backlog)
{
    struct sockaddr_un sa;
    int rc = fill_addr(path, &sa);
    if (rc < 0)
        return rc;

    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST;
        if (socket_alive(&sa))
            return -EADDRINUSE;
        if (unlink(path) < 0 && errno != ENOENT)
            return -errno;
    } else if (errno != ENOENT) {
        return -errno;
    }

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (chmod(path, 0660) < 0 || listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0) {
        rc = -errno;
        unlink(path);
        close(fd);
        return rc;
    }
    return fd;
}

int ipc_connect_unix(const char *path)
{
    struct sockaddr_un sa;
    int rc = fill_addr(path, &sa);
    if (rc < 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return fd;
    rc = -errno;
    if (rc == -EINPROGRESS) {
        /* The connection completes later; the bufferevent only writes once
         * the socket is writable, and a failure then surfaces as an I/O
         * error on the connection. */
        return fd;
    }
    close(fd);
    return rc;
}

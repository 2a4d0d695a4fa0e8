/*
 * log.c: see log.h. Lines are written with one write(2) each so that
 * processes sharing a file (O_APPEND) never interleave within a line.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char g_name[64] = "lodestar";
static int g_level = LOG_LVL_INFO;
static int g_fd = STDERR_FILENO;
static char g_path[4096];

static const char *const level_names[] = {"debug", "info", "notice", "warn", "error"};

static int open_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    return fd < 0 ? -errno : fd;
}

int log_init(const char *process_name, int level, const char *file)
{
    if (process_name)
        snprintf(g_name, sizeof g_name, "%s", process_name);
    if (level >= LOG_LVL_DEBUG && level <= LOG_LVL_ERROR)
        g_level = level;
    if (g_fd != STDERR_FILENO)
        close(g_fd);
    g_fd = STDERR_FILENO;
    g_path[0] = '\0';
    if (file && *file) {
        int fd = open_file(file);
        if (fd < 0) {
            log_error("log: cannot open log file '%s': %s; logging to stderr", file, strerror(-fd));
            return fd;
        }
        g_fd = fd;
        snprintf(g_path, sizeof g_path, "%s", file);
    }
    return 0;
}

int log_reopen(void)
{
    if (!g_path[0])
        return 0;
    int fd = open_file(g_path);
    if (fd < 0) {
        log_error("log: cannot reopen log file '%s': %s; keeping the old one", g_path, strerror(-fd));
        return fd;
    }
    dup2(fd, g_fd);
    close(fd);
    return 0;
}

int log_level_parse(const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; i <= LOG_LVL_ERROR; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_LVL_WARN;
    return -1;
}

const char *log_level_name(int level)
{
    return level >= 0 && level <= LOG_LVL_ERROR ? level_names[level] : "?";
}

int log_get_level(void) { return g_level; }

void log_vwrite(int level, const char *fmt, va_list ap)
{
    if (level < g_level)
        return;
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s %d] %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), g_name, (int)getpid(),
                     log_level_name(level));
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(g_fd, line, len);
    (void)w;
}

void log_write(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

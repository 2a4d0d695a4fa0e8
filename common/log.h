/*
 * log.h: one logging facility for every Lodestar process.
 *
 * Each line names the process ("supervisor", "naming worker",
 * "polaris-http gateway"), its pid, the level and the message:
 *   2026-11-21T12:00:00.123Z [naming worker 4242] warn: store: connection lost (...)
 * Output goes to a file (appended, reopened on SIGUSR1 via log_reopen) or to
 * stderr. Callers log once, at the layer that decides what to do.
 */
#ifndef LODESTAR_LOG_H
#define LODESTAR_LOG_H

#include <stdarg.h>

enum log_level {
    LOG_LVL_DEBUG = 0,
    LOG_LVL_INFO = 1,
    LOG_LVL_NOTICE = 2,
    LOG_LVL_WARN = 3,
    LOG_LVL_ERROR = 4,
};

/* Set the process name shown on every line, the minimum level, and the
 * output file (NULL or "" = stderr). Returns 0, or -errno when the file
 * cannot be opened (logging then stays on stderr). Callable again. */
int log_init(const char *process_name, int level, const char *file);

/* Reopen the log file (after logrotate moved it). 0 or -errno. */
int log_reopen(void);

/* Parse "debug", "info", "notice", "warn"/"warning", "error"; -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(int level);
int log_get_level(void);

void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vwrite(int level, const char *fmt, va_list ap);

#define log_debug(...) log_write(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_LVL_INFO, __VA_ARGS__)
#define log_notice(...) log_write(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_warn(...) log_write(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_LVL_ERROR, __VA_ARGS__)

#endif

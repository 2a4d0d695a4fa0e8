/*
 * supervisor.c: the process table and the supervisor's state machine.
 *
 * Design rules (in the spirit of nginx's master and PostgreSQL's postmaster):
 *  - The supervisor never does domain work and never touches what can crash
 *    it: no libpq, no hiredis, no gRPC. It forks and execs, watches, restarts,
 *    owns the listening sockets and talks to systemd.
 *  - Signals only wake the libevent loop (evsignal); all decisions happen in
 *    ordinary callbacks.
 *  - Start order: private PostgreSQL (when no DSN), then workers and
 *    gateways. READY=1 goes to systemd only once every wanted process said
 *    Ready on its channel.
 *  - Stop order: gateways (stop accepting, drain), then workers (flush
 *    pending writes), then PostgreSQL; whatever outlives
 *    supervisor.shutdown_timeout_ms gets SIGKILL.
 *  - A child that exits while the supervisor is running is restarted: at
 *    once after a clean exit (an operator's SIGTERM/SIGHUP to that child, or
 *    a configuration change), with exponential backoff after a crash, and
 *    throttled to the maximum backoff in a crash loop.
 *  - Reload (SIGHUP) builds and validates the new configuration first and
 *    keeps the old one when that fails; otherwise it restarts only the
 *    children whose configuration fingerprint changed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "sup.h"

static void start_proc(sup_t *s, proc_t *p);
static void stop_progress(sup_t *s);

uint64_t sup_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t sup_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *proc_state_name(proc_state_t st)
{
    switch (st) {
    case PS_STOPPED: return "stopped";
    case PS_STARTING: return "starting";
    case PS_READY: return "ready";
    case PS_DRAINING: return "draining";
    case PS_BACKOFF: return "backoff";
    }
    return "?";
}

const char *proc_kind_name(proc_kind_t k)
{
    return k == PK_STORE ? "store" : k == PK_WORKER ? "worker" : "gateway";
}

static void set_state(proc_t *p, proc_state_t st)
{
    p->state = st;
    p->state_since_mono_ms = sup_mono_ms();
}

static void tv_ms(struct timeval *tv, int ms)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
}

/* ------------------------------------------------------------ pid files */

void sup_pidfile_write(const sup_t *s, const char *role, pid_t pid)
{
    char path[4200], tmp[4300], buf[32];
    snprintf(path, sizeof path, "%s/%s.pid", s->cfg->runtime_dir, role);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_warn("cannot write pid file %s: %s", path, strerror(errno));
        return;
    }
    int n = snprintf(buf, sizeof buf, "%d\n", (int)pid);
    ssize_t w = write(fd, buf, (size_t)n);
    (void)w;
    close(fd);
    rename(tmp, path);
}

void sup_pidfile_remove(const sup_t *s, const char *role)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.pid", s->cfg->runtime_dir, role);
    unlink(path);
}

/* -------------------------------------------------- configuration bits */

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t off = 0;
    for (;;) {
        ssize_t n = read(fd, buf + off, (size_t)st.st_size - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s: read: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (n == 0 || off + (size_t)n == (size_t)st.st_size) {
            off += (size_t)n;
            break;
        }
        off += (size_t)n;
    }
    close(fd);
    buf[off] = '\0';
    *len = off;
    return buf;
}

/* Load and validate; on failure log every error and return NULL. */
static cfg_t *load_config(const char *path, char **bytes, size_t *len)
{
    char err[4400];
    *bytes = read_file(path, len, err, sizeof err);
    if (!*bytes) {
        log_error("%s", err);
        return NULL;
    }
    cfg_t *cfg = NULL;
    cfg_errors_t errs = {0};
    if (cfg_load_buffer(*bytes, *len, path, &cfg, &errs) < 0) {
        for (size_t i = 0; i < errs.count; i++)
            log_error("%s", errs.msgs[i]);
        if (errs.dropped)
            log_error("%s: ... and %zu more errors", path, errs.dropped);
        cfg_errors_clear(&errs);
        free(*bytes);
        *bytes = NULL;
        return NULL;
    }
    return cfg;
}

static void fp_add(char **buf, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void fp_add(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        *cap = *cap * 2 + (size_t)(n > 0 ? n : 0);
        *buf = realloc(*buf, *cap);
    }
}

/* Everything in the configuration one process depends on, as text. Two
 * equal fingerprints mean the process need not restart on reload. A new
 * configuration section must be added here for the roles that read it. */
static char *fingerprint(const cfg_t *c, proc_kind_t kind, const char *role)
{
    size_t len = 0, cap = 512;
    char *b = malloc(cap);
    b[0] = '\0';
    const cfg_log_t *lg = cfg_log_for(c, role);
    fp_add(&b, &len, &cap, "rt=%s|log=%d,%s|ipc=%u,%d|drain=%d|w=%d%d%d|", c->runtime_dir, lg->level,
           lg->file ? lg->file : "", c->ipc.max_frame_bytes, c->ipc.request_timeout_ms,
           c->supervisor.drain_timeout_ms, c->naming.enabled, c->config.enabled, c->health.enabled);
    if (kind == PK_WORKER) {
        char *dsn = cfg_store_dsn(c);
        fp_add(&b, &len, &cap, "dsn=%s|ct=%d|rb=%d|", dsn, c->store.connect_timeout_ms,
               c->store.reconnect_backoff_max_ms);
        free(dsn);
        if (strcmp(role, "naming") == 0)
            fp_add(&b, &len, &cap, "nw=%d,%d,%d,%d,%d,%d,%d|", c->naming_worker.auto_create_namespace,
                   c->naming_worker.auto_create_service, c->naming_worker.batch_max, c->naming_worker.batch_wait_ms,
                   c->naming_worker.batch_queue_size, c->naming_worker.sync_interval_ms,
                   c->naming_worker.deleted_retention_s);
        if (strcmp(role, "config") == 0)
            fp_add(&b, &len, &cap, "cw=%u,%d,%d|", c->config_worker.max_content_bytes, c->config_worker.sync_interval_ms,
                   c->config_worker.deleted_retention_s);
        if (strcmp(role, "health") == 0)
            fp_add(&b, &len, &cap, "hc=%d,%d,%s,%s,%d,%s,%d,%d,%d,%d,%d,%d,%d,%d,%s,%d|", c->healthcheck.enabled,
                   c->healthcheck.store, c->healthcheck.redis_address ? c->healthcheck.redis_address : "",
                   c->healthcheck.redis_password ? c->healthcheck.redis_password : "", c->healthcheck.redis_db,
                   c->healthcheck.redis_key_prefix, c->healthcheck.redis_timeout_ms, c->healthcheck.slot_num,
                   c->healthcheck.min_check_interval_ms, c->healthcheck.max_check_interval_ms,
                   c->healthcheck.protect_threshold_percent, c->healthcheck.restart_grace_ms,
                   c->healthcheck.cleanup_enabled, c->healthcheck.cleanup_unhealthy_for_s,
                   c->healthcheck.cluster_node_id ? c->healthcheck.cluster_node_id : "",
                   c->healthcheck.cluster_announce_ttl_ms);
    } else if (kind == PK_GATEWAY) {
        for (size_t i = 0; i < c->n_listeners; i++) {
            const cfg_listener_t *l = &c->listeners[i];
            if (l->enabled && strcmp(l->protocol, role) == 0)
                fp_add(&b, &len, &cap, "l=%s,%s,%d|", l->name, l->address, l->port);
        }
    }
    return b;
}

static bool worker_enabled(const cfg_t *c, const char *role)
{
    if (strcmp(role, "naming") == 0)
        return c->naming.enabled;
    if (strcmp(role, "config") == 0)
        return c->config.enabled;
    return c->health.enabled;
}

static bool gateway_enabled(const cfg_t *c, const char *protocol)
{
    for (size_t i = 0; i < c->n_listeners; i++)
        if (c->listeners[i].enabled && strcmp(c->listeners[i].protocol, protocol) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------- process table */

static proc_t *proc_find_role(sup_t *s, const char *role)
{
    for (proc_t *p = s->procs; p; p = p->next)
        if (strcmp(p->role, role) == 0)
            return p;
    return NULL;
}

static proc_t *proc_add(sup_t *s, proc_kind_t kind, const char *role)
{
    proc_t *p = calloc(1, sizeof *p);
    p->sup = s;
    p->kind = kind;
    snprintf(p->role, sizeof p->role, "%s", role);
    snprintf(p->title, sizeof p->title, "%s %s", role, kind == PK_STORE ? "store" : proc_kind_name(kind));
    if (kind == PK_STORE)
        snprintf(p->title, sizeof p->title, "private PostgreSQL");
    p->backoff_ms = s->cfg->supervisor.restart_backoff_initial_ms;
    p->wanted = true;
    p->healthy = true;
    set_state(p, PS_STOPPED);
    proc_t **pp = &s->procs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
    return p;
}

/* The workers and gateways cfg asks for that the table lacks. */
static void procs_add_missing(sup_t *s, const cfg_t *c)
{
    static const char *const workers[] = {"naming", "config", "health"};
    for (int i = 0; i < 3; i++)
        if (worker_enabled(c, workers[i]) && !proc_find_role(s, workers[i]))
            proc_add(s, PK_WORKER, workers[i]);
    for (size_t i = 0; i < c->n_listeners; i++) {
        const cfg_listener_t *l = &c->listeners[i];
        if (l->enabled && !proc_find_role(s, l->protocol))
            proc_add(s, PK_GATEWAY, l->protocol);
    }
}

static bool proc_wanted_by(const cfg_t *c, const proc_t *p)
{
    if (p->kind == PK_STORE)
        return true;
    if (p->kind == PK_WORKER)
        return worker_enabled(c, p->role);
    return gateway_enabled(c, p->role);
}

static void describe_exit(int st, char *buf, size_t len)
{
    if (WIFEXITED(st))
        snprintf(buf, len, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, len, "signal %d (%s)%s", WTERMSIG(st), strsignal(WTERMSIG(st)),
                 WCOREDUMP(st) ? ", core dumped" : "");
    else
        snprintf(buf, len, "status 0x%x", st);
}

static void on_restart_timer(evutil_socket_t fd, short what, void *arg)
{
    proc_t *p = arg;
    start_proc(p->sup, p);
}

static void schedule_start(sup_t *s, proc_t *p, int delay_ms)
{
    if (!p->restart_timer)
        p->restart_timer = evtimer_new(s->base, on_restart_timer, p);
    struct timeval tv;
    tv_ms(&tv, delay_ms);
    set_state(p, PS_BACKOFF);
    evtimer_add(p->restart_timer, &tv);
}

static void start_proc(sup_t *s, proc_t *p)
{
    if (s->state == SS_STOPPING || !p->wanted || p->pid)
        return;
    if (p->restart_timer)
        evtimer_del(p->restart_timer);
    free(p->fingerprint);
    p->fingerprint = fingerprint(s->cfg, p->kind, p->role);
    int rc = p->kind == PK_STORE ? pg_start(s, p) : sup_spawn(s, p);
    if (rc < 0) {
        int delay = p->backoff_ms;
        p->backoff_ms = p->backoff_ms * 2 > s->cfg->supervisor.restart_backoff_max_ms
                            ? s->cfg->supervisor.restart_backoff_max_ms
                            : p->backoff_ms * 2;
        log_error("%s could not be started; trying again in %d ms", p->title, delay);
        schedule_start(s, p, delay);
        return;
    }
    if (p->started_ms)
        p->restarts++;
    p->started_ms = sup_now_ms();
    p->started_mono_ms = sup_mono_ms();
    p->last_pong_mono_ms = 0;
    p->stop_sent = false;
    set_state(p, PS_STARTING);
    sup_pidfile_write(s, p->role, p->pid);
}

static void signal_proc(proc_t *p, int sig)
{
    if (p->pid > 0 && kill(p->pid, sig) < 0 && errno != ESRCH)
        log_warn("cannot signal %s (pid %d): %s", p->title, (int)p->pid, strerror(errno));
}

static void on_pg_poll(evutil_socket_t fd, short what, void *arg);

void sup_proc_exited(sup_t *s, proc_t *p, int st)
{
    char how[96];
    describe_exit(st, how, sizeof how);
    snprintf(p->last_exit, sizeof p->last_exit, "%s", how);
    uint64_t now = sup_mono_ms();
    uint64_t uptime = now - p->started_mono_ms;
    if (p->chan) {
        ipc_conn_free(p->chan);
        p->chan = NULL;
    }
    sup_pidfile_remove(s, p->role);
    pid_t old_pid = p->pid;
    p->pid = 0;

    if (s->state == SS_STOPPING) {
        log_info("%s (pid %d) stopped: %s", p->title, (int)old_pid, how);
        set_state(p, PS_STOPPED);
        stop_progress(s);
        return;
    }
    if (!p->wanted) {
        log_info("%s (pid %d) stopped (%s): no longer configured", p->title, (int)old_pid, how);
        set_state(p, PS_STOPPED);
        sup_check_ready(s);
        return;
    }
    const cfg_supervisor_t *sc = &s->cfg->supervisor;
    bool clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (p->restart_pending) {
        p->restart_pending = false;
        log_info("%s (pid %d) stopped (%s); starting it with the new configuration", p->title, (int)old_pid, how);
        schedule_start(s, p, 0);
        return;
    }
    if (uptime >= (uint64_t)sc->crash_loop_window_ms) {
        p->backoff_ms = sc->restart_backoff_initial_ms;
        p->n_crashes = 0;
    }
    /* A child exits 0 only after a drain it was asked for (SIGTERM or SIGHUP
     * to its own pid): an operator's restart, not a crash. */
    if (clean && p->kind != PK_STORE) {
        log_notice("%s (pid %d) exited normally after %llu ms (restart requested); restarting now", p->title,
                   (int)old_pid, (unsigned long long)uptime);
        schedule_start(s, p, 0);
        return;
    }
    p->crashes[p->n_crashes++ % SUP_CRASH_HISTORY] = now;
    unsigned recent = 0;
    for (unsigned i = 0; i < SUP_CRASH_HISTORY && i < p->n_crashes; i++)
        if (now - p->crashes[i] <= (uint64_t)sc->crash_loop_window_ms)
            recent++;
    int delay = p->backoff_ms;
    p->backoff_ms = p->backoff_ms * 2 > sc->restart_backoff_max_ms ? sc->restart_backoff_max_ms : p->backoff_ms * 2;
    if ((int)recent > sc->crash_loop_max) {
        delay = sc->restart_backoff_max_ms;
        log_error("%s (pid %d) exited (%s) after %llu ms: crash loop, %u exits within %d ms; throttling restarts "
                  "to one every %d ms",
                  p->title, (int)old_pid, how, (unsigned long long)uptime, recent, sc->crash_loop_window_ms, delay);
    } else {
        log_warn("%s (pid %d) exited unexpectedly (%s) after %llu ms; restarting in %d ms", p->title, (int)old_pid,
                 how, (unsigned long long)uptime, delay);
    }
    schedule_start(s, p, delay);
}

/* --------------------------------------------------- supervisor channel */

void sup_chan_frame(ipc_conn_t *c, const ipc_header_t *h, Lodestar__Envelope *env, void *arg)
{
    proc_t *p = arg;
    sup_t *s = p->sup;
    switch (env->body_case) {
    case LODESTAR__ENVELOPE__BODY_HELLO:
        if (strcmp(env->hello->role, p->role) != 0 || env->hello->generation != s->generation)
            log_warn("%s: Hello from role '%s' generation %llu (expected '%s' generation %llu)", p->title,
                     env->hello->role, (unsigned long long)env->hello->generation, p->role,
                     (unsigned long long)s->generation);
        break;
    case LODESTAR__ENVELOPE__BODY_READY:
        if (p->state == PS_STARTING) {
            set_state(p, PS_READY);
            p->last_pong_mono_ms = sup_mono_ms();
            log_info("%s (pid %d) ready after %llu ms", p->title, (int)p->pid,
                     (unsigned long long)(sup_mono_ms() - p->started_mono_ms));
            sup_check_ready(s);
        }
        break;
    case LODESTAR__ENVELOPE__BODY_DRAINING:
        set_state(p, PS_DRAINING);
        log_info("%s (pid %d) draining: %s", p->title, (int)p->pid, env->draining->reason);
        break;
    case LODESTAR__ENVELOPE__BODY_CHILD_PONG:
        p->last_pong_mono_ms = sup_mono_ms();
        if (p->healthy != env->child_pong->healthy)
            log_notice("%s reports itself %s%s%s", p->title, env->child_pong->healthy ? "healthy" : "unhealthy",
                       *env->child_pong->detail ? ": " : "", env->child_pong->detail);
        p->healthy = env->child_pong->healthy;
        snprintf(p->health_detail, sizeof p->health_detail, "%s", env->child_pong->detail);
        break;
    default:
        log_warn("%s: unexpected %s frame on its channel; ignored", p->title, ipc_type_name(h->type));
    }
}

void sup_chan_close(ipc_conn_t *c, const char *reason, void *arg)
{
    proc_t *p = arg;
    p->chan = NULL;
    log_debug("%s channel closed: %s", p->title, reason);
}

static void on_ping_timer(evutil_socket_t fd, short what, void *arg)
{
    sup_t *s = arg;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    Lodestar__ChildPing ping = LODESTAR__CHILD_PING__INIT;
    ping.sent_unix_ms = sup_now_ms();
    env.body_case = LODESTAR__ENVELOPE__BODY_CHILD_PING;
    env.child_ping = &ping;
    for (proc_t *p = s->procs; p; p = p->next)
        if (p->chan && p->state == PS_READY)
            ipc_conn_send(p->chan, IPC_KIND_REQUEST, ++s->ping_seq, &env);
}

/* Alive for the watchdog: ready and answering pings, or between lives for
 * less than one watchdog period. */
static bool proc_alive(const sup_t *s, const proc_t *p, uint64_t now, char *why, size_t whylen)
{
    if (!p->wanted)
        return true;
    uint64_t grace = s->watchdog_usec / 1000;
    if (p->kind == PK_STORE)
        return p->pid > 0 || now - p->state_since_mono_ms < grace;
    if (p->state == PS_READY) {
        uint64_t limit = 3u * (uint64_t)s->cfg->supervisor.ping_interval_ms + 1000u;
        if (now - p->last_pong_mono_ms <= limit)
            return true;
        snprintf(why, whylen, "%s (pid %d) has not answered pings for %llu ms", p->title, (int)p->pid,
                 (unsigned long long)(now - p->last_pong_mono_ms));
        return false;
    }
    if (now - p->state_since_mono_ms < grace)
        return true;
    snprintf(why, whylen, "%s has been %s for %llu ms", p->title, proc_state_name(p->state),
             (unsigned long long)(now - p->state_since_mono_ms));
    return false;
}

static void on_watchdog_timer(evutil_socket_t fd, short what, void *arg)
{
    sup_t *s = arg;
    if (s->state == SS_STARTING) {
        /* start-up is bounded by systemd's TimeoutStartSec, not the watchdog */
        notify_watchdog();
        return;
    }
    uint64_t now = sup_mono_ms();
    char why[256] = "";
    for (proc_t *p = s->procs; p; p = p->next)
        if (!proc_alive(s, p, now, why, sizeof why)) {
            log_error("withholding the systemd watchdog: %s", why);
            return;
        }
    notify_watchdog();
}

void sup_check_ready(sup_t *s)
{
    if (s->state == SS_STOPPING)
        return;
    unsigned n = 0;
    for (proc_t *p = s->procs; p; p = p->next) {
        if (!p->wanted)
            continue;
        if (p->state != PS_READY)
            return;
        n++;
    }
    char status[128];
    snprintf(status, sizeof status, "serving: %u processes ready (generation %llu)", n,
             (unsigned long long)s->generation);
    if (s->state == SS_STARTING) {
        s->state = SS_RUNNING;
        if (s->ready_timer)
            evtimer_del(s->ready_timer);
        log_notice("all %u processes ready; serving", n);
        notify_ready(status);
    } else if (s->reloading) {
        s->reloading = false;
        log_notice("reload complete: all %u processes ready (generation %llu)", n, (unsigned long long)s->generation);
        notify_ready(status);
    }
}

static void on_ready_timeout(evutil_socket_t fd, short what, void *arg)
{
    sup_t *s = arg;
    if (s->state != SS_STARTING)
        return;
    for (proc_t *p = s->procs; p; p = p->next)
        if (p->wanted && p->state != PS_READY)
            log_error("%s is not ready after %d ms (state %s%s%s)", p->title, s->cfg->supervisor.ready_timeout_ms,
                      proc_state_name(p->state), *p->last_exit ? ", last exit: " : "", p->last_exit);
}

/* ---------------------------------------------------------- PostgreSQL */

static void start_children(sup_t *s)
{
    for (proc_t *p = s->procs; p; p = p->next)
        if (p->kind != PK_STORE && p->wanted && !p->pid && p->state != PS_BACKOFF)
            start_proc(s, p);
}

static void on_pg_poll(evutil_socket_t fd, short what, void *arg)
{
    sup_t *s = arg;
    proc_t *pg = s->pg;
    if (!pg || s->state == SS_STOPPING)
        return;
    if (pg->pid && pg->state == PS_STARTING) {
        char why[256];
        int r = pg_poll_ready(s, why, sizeof why);
        if (r == 1) {
            set_state(pg, PS_READY);
            log_info("store: private PostgreSQL ready after %llu ms",
                     (unsigned long long)(sup_mono_ms() - pg->started_mono_ms));
            start_children(s);
            sup_check_ready(s);
        }
    }
    struct timeval tv = {0, 50 * 1000};
    evtimer_add(s->pg_poll_timer, &tv);
}

/* ------------------------------------------------------------ shutdown */

static bool any_alive(sup_t *s, proc_kind_t kind)
{
    for (proc_t *p = s->procs; p; p = p->next)
        if (p->kind == kind && p->pid)
            return true;
    return false;
}

/* Advance the stop sequence: gateways, then workers, then PostgreSQL. */
static void stop_progress(sup_t *s)
{
    static const proc_kind_t order[] = {PK_GATEWAY, PK_WORKER, PK_STORE};
    for (int i = 0; i < 3; i++) {
        if (!any_alive(s, order[i]))
            continue;
        for (proc_t *p = s->procs; p; p = p->next)
            if (p->kind == order[i] && p->pid && !p->stop_sent) {
                p->stop_sent = true;
                /* PostgreSQL: SIGINT is its "fast" shutdown */
                signal_proc(p, p->kind == PK_STORE ? SIGINT : SIGTERM);
            }
        return;
    }
    log_notice("all processes stopped; exiting");
    event_base_loopbreak(s->base);
}

static void on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
    sup_t *s = arg;
    bool any = false;
    for (proc_t *p = s->procs; p; p = p->next)
        if (p->pid) {
            log_warn("%s (pid %d) still running %d ms after the stop began; sending SIGKILL", p->title, (int)p->pid,
                     s->cfg->supervisor.shutdown_timeout_ms);
            signal_proc(p, SIGKILL);
            any = true;
        }
    if (!any)
        event_base_loopbreak(s->base);
}

static void begin_shutdown(sup_t *s, const char *why)
{
    if (s->state == SS_STOPPING) {
        log_notice("%s: already stopping", why);
        return;
    }
    log_notice("%s: stopping (gateways, then workers, then the store)", why);
    s->state = SS_STOPPING;
    notify_stopping();
    for (proc_t *p = s->procs; p; p = p->next) {
        if (p->restart_timer)
            evtimer_del(p->restart_timer);
        if (!p->pid)
            set_state(p, PS_STOPPED);
    }
    sup_sockets_close_tcp(s);
    if (s->ping_timer)
        evtimer_del(s->ping_timer);
    struct timeval tv;
    tv_ms(&tv, s->cfg->supervisor.shutdown_timeout_ms);
    s->shutdown_timer = evtimer_new(s->base, on_shutdown_timeout, s);
    evtimer_add(s->shutdown_timer, &tv);
    stop_progress(s);
}

/* -------------------------------------------------------------- reload */

static bool same_str(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : "") == 0; }

/* What a reload cannot change without a full restart. */
static bool reload_compatible(const cfg_t *o, const cfg_t *n, char *why, size_t whylen)
{
    if (!same_str(o->runtime_dir, n->runtime_dir)) {
        snprintf(why, whylen, "runtime_dir changed (%s -> %s)", o->runtime_dir, n->runtime_dir);
        return false;
    }
    if ((o->store.dsn == NULL) != (n->store.dsn == NULL)) {
        snprintf(why, whylen, "store.dsn switches between the private PostgreSQL and an external one");
        return false;
    }
    if (!o->store.dsn &&
        (!same_str(o->store.embedded.data_dir, n->store.embedded.data_dir) ||
         !same_str(o->store.embedded.bin_dir, n->store.embedded.bin_dir) ||
         !same_str(o->store.embedded.user, n->store.embedded.user) || o->store.embedded.port != n->store.embedded.port)) {
        snprintf(why, whylen, "store.embedded changed");
        return false;
    }
    return true;
}

static void reload(sup_t *s)
{
    if (s->state == SS_STOPPING)
        return;
    log_notice("SIGHUP: reloading %s", s->cfg->path);
    notify_reloading();
    char *bytes = NULL;
    size_t len = 0;
    cfg_t *n = load_config(s->cfg->path, &bytes, &len);
    char why[512];
    if (n && !reload_compatible(s->cfg, n, why, sizeof why)) {
        log_error("reload: %s; that needs a full restart of lodestar", why);
        cfg_free(n);
        free(bytes);
        n = NULL;
    }
    if (n && sup_sockets_sync(s, n, why, sizeof why) < 0) {
        log_error("reload: %s", why);
        char ignore[512];
        sup_sockets_sync(s, s->cfg, ignore, sizeof ignore);
        cfg_free(n);
        free(bytes);
        n = NULL;
    }
    int memfd = n ? sup_config_memfd(bytes, len) : -1;
    if (n && memfd < 0) {
        log_error("reload: cannot create the configuration memfd: %s", strerror(-memfd));
        cfg_free(n);
        free(bytes);
        n = NULL;
    }
    if (!n) {
        log_error("reload rejected: still running on generation %llu of the configuration",
                  (unsigned long long)s->generation);
        char status[128];
        snprintf(status, sizeof status, "serving (reload rejected; generation %llu)", (unsigned long long)s->generation);
        notify_ready(status);
        return;
    }

    cfg_t *old = s->cfg;
    s->cfg = n;
    free(s->cfg_bytes);
    s->cfg_bytes = bytes;
    s->cfg_len = len;
    close(s->cfg_memfd);
    s->cfg_memfd = memfd;
    s->generation++;
    const cfg_log_t *lg = cfg_log_for(n, "supervisor");
    log_init("supervisor", lg->level, lg->file);

    procs_add_missing(s, n);
    unsigned restarted = 0;
    for (proc_t *p = s->procs; p; p = p->next) {
        bool want = proc_wanted_by(n, p);
        if (!want) {
            if (p->wanted)
                log_notice("reload: %s is no longer configured; stopping it", p->title);
            p->wanted = false;
            if (p->restart_timer)
                evtimer_del(p->restart_timer);
            if (p->pid)
                signal_proc(p, SIGTERM);
            else
                set_state(p, PS_STOPPED);
            continue;
        }
        if (!p->wanted || (!p->pid && p->state == PS_STOPPED)) {
            p->wanted = true;
            log_notice("reload: starting %s", p->title);
            start_proc(s, p);
            restarted++;
            continue;
        }
        if (p->kind == PK_STORE)
            continue;
        char *fp = fingerprint(n, p->kind, p->role);
        bool changed = !p->fingerprint || strcmp(fp, p->fingerprint) != 0;
        free(fp);
        if (!changed)
            continue;
        restarted++;
        if (p->pid) {
            log_notice("reload: %s's configuration changed; restarting it", p->title);
            p->restart_pending = true;
            signal_proc(p, SIGTERM);
        } else {
            log_notice("reload: %s's configuration changed; starting it now", p->title);
            schedule_start(s, p, 0);
        }
    }
    sup_sockets_drop_unused(s);
    cfg_free(old);
    log_notice("reload: generation %llu applied; %u process%s restarting", (unsigned long long)s->generation, restarted,
               restarted == 1 ? "" : "es");
    s->reloading = true;
    for (proc_t *p = s->procs; p; p = p->next)
        if (p->restart_pending)
            set_state(p, PS_DRAINING);
    sup_check_ready(s);
}

/* ------------------------------------------------------------- signals */

static void reap(sup_t *s)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        proc_t *p = NULL;
        for (proc_t *q = s->procs; q; q = q->next)
            if (q->pid == pid)
                p = q;
        if (p)
            sup_proc_exited(s, p, st);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    sup_t *s = arg;
    switch (sig) {
    case SIGCHLD:
        reap(s);
        break;
    case SIGTERM:
        begin_shutdown(s, "SIGTERM");
        break;
    case SIGINT:
        begin_shutdown(s, "SIGINT");
        break;
    case SIGHUP:
        reload(s);
        break;
    case SIGUSR1:
        log_reopen();
        log_notice("SIGUSR1: log file reopened; telling every child to reopen its own");
        for (proc_t *p = s->procs; p; p = p->next)
            if (p->kind != PK_STORE)
                signal_proc(p, SIGUSR1);
        break;
    }
}

/* ---------------------------------------------------------------- main */

static char *self_dir(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return strdup(".");
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash)
        *slash = '\0';
    return strdup(buf);
}

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *q = buf + 1; *q; q++)
        if (*q == '/') {
            *q = '\0';
            if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                return -errno;
            *q = '/';
        }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Refuse to start beside a live supervisor using the same runtime dir. */
static int claim_runtime_dir(sup_t *s)
{
    int rc = mkdir_p(s->cfg->runtime_dir, 0755);
    if (rc < 0) {
        log_error("cannot create runtime_dir %s: %s", s->cfg->runtime_dir, strerror(-rc));
        return -1;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/lodestar.pid", s->cfg->runtime_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        int pid = 0;
        if (fscanf(f, "%d", &pid) == 1 && pid > 0 && pid != getpid() && kill(pid, 0) == 0) {
            fclose(f);
            log_error("another lodestar supervisor (pid %d) is running with runtime_dir %s", pid,
                      s->cfg->runtime_dir);
            return -1;
        }
        fclose(f);
    }
    sup_pidfile_write(s, "lodestar", getpid());
    return 0;
}

static void sup_free(sup_t *s)
{
    for (size_t i = 0; i < sizeof s->sig_events / sizeof s->sig_events[0]; i++)
        if (s->sig_events[i])
            event_free(s->sig_events[i]);
    struct event *timers[] = {s->ping_timer, s->watchdog_timer, s->shutdown_timer, s->ready_timer, s->pg_poll_timer};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
        if (timers[i])
            event_free(timers[i]);
    while (s->procs) {
        proc_t *p = s->procs;
        s->procs = p->next;
        if (p->chan)
            ipc_conn_free(p->chan);
        if (p->restart_timer)
            event_free(p->restart_timer);
        free(p->fingerprint);
        free(p);
    }
    control_stop(s);
    sup_sockets_free(s);
    if (s->cfg) {
        sup_pidfile_remove(s, "lodestar");
        cfg_free(s->cfg);
    }
    if (s->cfg_memfd >= 0)
        close(s->cfg_memfd);
    free(s->cfg_bytes);
    free(s->self_dir);
    if (s->base)
        event_base_free(s->base);
    free(s);
}

int sup_run(const char *config_path)
{
    log_init("supervisor", LOG_LVL_INFO, NULL);
    sup_t *s = calloc(1, sizeof *s);
    s->control_fd = -1;
    s->cfg_memfd = -1;
    s->exit_status = 0;
    s->started_ms = sup_now_ms();
    s->generation = 1;
    s->cfg = load_config(config_path, &s->cfg_bytes, &s->cfg_len);
    if (!s->cfg) {
        log_error("%s: configuration is invalid; not starting", config_path);
        sup_free(s);
        return 1;
    }
    const cfg_log_t *lg = cfg_log_for(s->cfg, "supervisor");
    log_init("supervisor", lg->level, lg->file);
    log_notice("lodestar %s starting with %s (pid %d)", LODESTAR_VERSION, s->cfg->path, (int)getpid());

    signal(SIGPIPE, SIG_IGN);
    s->base = event_base_new();
    s->self_dir = self_dir();
    if (claim_runtime_dir(s) < 0) {
        cfg_free(s->cfg);
        s->cfg = NULL;
        sup_free(s);
        return 1;
    }
    s->cfg_memfd = sup_config_memfd(s->cfg_bytes, s->cfg_len);
    char err[1024];
    if (s->cfg_memfd < 0) {
        log_error("cannot create the configuration memfd: %s", strerror(-s->cfg_memfd));
        sup_free(s);
        return 1;
    }
    static const int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        s->sig_events[i] = evsignal_new(s->base, sigs[i], on_signal, s);
        evsignal_add(s->sig_events[i], NULL);
    }
    if (control_start(s, err, sizeof err) < 0 || sup_sockets_sync(s, s->cfg, err, sizeof err) < 0) {
        log_error("%s; not starting", err);
        sup_free(s);
        return 1;
    }

    if (!s->cfg->store.dsn) {
        s->pg = proc_add(s, PK_STORE, "postgres");
        notify_status("initialising the private PostgreSQL");
        if (pg_prepare(s, err, sizeof err) < 0) {
            log_error("store: cannot prepare the private PostgreSQL: %s", err);
            sup_free(s);
            return 1;
        }
    }
    procs_add_missing(s, s->cfg);

    s->ping_timer = event_new(s->base, -1, EV_PERSIST, on_ping_timer, s);
    struct timeval tv;
    tv_ms(&tv, s->cfg->supervisor.ping_interval_ms);
    evtimer_add(s->ping_timer, &tv);
    s->ready_timer = evtimer_new(s->base, on_ready_timeout, s);
    tv_ms(&tv, s->cfg->supervisor.ready_timeout_ms);
    evtimer_add(s->ready_timer, &tv);
    s->watchdog_usec = notify_watchdog_usec();
    if (s->watchdog_usec) {
        s->watchdog_timer = event_new(s->base, -1, EV_PERSIST, on_watchdog_timer, s);
        tv.tv_sec = (time_t)(s->watchdog_usec / 2 / 1000000);
        tv.tv_usec = (suseconds_t)(s->watchdog_usec / 2 % 1000000);
        evtimer_add(s->watchdog_timer, &tv);
        log_info("systemd watchdog every %llu ms", (unsigned long long)(s->watchdog_usec / 2000));
    }

    notify_status("starting processes");
    if (s->pg) {
        start_proc(s, s->pg);
        s->pg_poll_timer = evtimer_new(s->base, on_pg_poll, s);
        struct timeval t0 = {0, 0};
        evtimer_add(s->pg_poll_timer, &t0);
    } else {
        start_children(s);
    }

    event_base_dispatch(s->base);
    int status = s->exit_status;
    log_notice("supervisor exiting with status %d", status);
    sup_free(s);
    return status;
}

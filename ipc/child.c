/*
 * child.c: the skeleton every worker and gateway process runs (see child.h).
 *
 * Rules kept here:
 *  - the configuration comes only from fd 3 (the bytes the supervisor
 *    validated); a child never re-reads the file on disk;
 *  - a child never outlives its supervisor: PR_SET_PDEATHSIG plus EOF on the
 *    supervisor channel both lead to a drain and exit;
 *  - signals only set the drain in motion from the event loop (libevent
 *    signal events), never act inside a handler;
 *  - every exit path runs the role's fini and frees the configuration.
 */
#include "child.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"

typedef struct child_priv {
    child_t pub;
    struct event *sig_term, *sig_hup, *sig_usr1;
    struct event *drain_timer;
    int exit_status;
    char title[96];
} child_priv_t;

static child_priv_t *priv_of(child_t *c) { return (child_priv_t *)c; }

static void send_to_supervisor(child_t *c, uint8_t kind, uint64_t id, Lodestar__Envelope *env)
{
    if (!c->sup)
        return;
    if (ipc_conn_send(c->sup, kind, id, env) < 0)
        log_warn("cannot send %s to the supervisor", ipc_type_name(env->body_case));
}

void child_ready(child_t *c)
{
    if (c->ready)
        return;
    c->ready = true;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    Lodestar__Ready r = LODESTAR__READY__INIT;
    r.detail = (char *)"serving";
    env.body_case = LODESTAR__ENVELOPE__BODY_READY;
    env.ready = &r;
    send_to_supervisor(c, IPC_KIND_PUSH, 0, &env);
    log_info("ready");
}

void child_drained(child_t *c)
{
    child_priv_t *p = priv_of(c);
    log_info("drained, exiting");
    p->exit_status = 0;
    event_base_loopbreak(c->base);
}

void child_fail(child_t *c, const char *reason)
{
    child_priv_t *p = priv_of(c);
    log_error("fatal: %s; exiting with status 1", reason);
    p->exit_status = 1;
    event_base_loopbreak(c->base);
}

int child_listen_fd(const child_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_listen; i++)
        if (strcmp(c->listen_names[i], name) == 0)
            return c->listen_fds[i];
    return -1;
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    child_t *c = arg;
    log_warn("drain did not finish within %d ms; exiting with work still in flight",
             c->cfg->supervisor.drain_timeout_ms);
    priv_of(c)->exit_status = 0;
    event_base_loopbreak(c->base);
}

/* Begin a graceful stop: tell the supervisor, stop accepting, finish work. */
static void start_drain(child_t *c, const char *reason)
{
    if (c->draining)
        return;
    c->draining = true;
    log_info("draining: %s", reason);

    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    Lodestar__Draining d = LODESTAR__DRAINING__INIT;
    d.reason = (char *)reason;
    env.body_case = LODESTAR__ENVELOPE__BODY_DRAINING;
    env.draining = &d;
    send_to_supervisor(c, IPC_KIND_PUSH, 0, &env);

    child_priv_t *p = priv_of(c);
    struct timeval tv = {c->cfg->supervisor.drain_timeout_ms / 1000,
                         (c->cfg->supervisor.drain_timeout_ms % 1000) * 1000};
    p->drain_timer = evtimer_new(c->base, on_drain_timeout, c);
    evtimer_add(p->drain_timer, &tv);
    if (c->role->drain)
        c->role->drain(c);
    else
        child_drained(c);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    child_t *c = arg;
    switch (sig) {
    case SIGTERM:
        start_drain(c, "SIGTERM received");
        break;
    case SIGHUP:
        start_drain(c, "SIGHUP received (restart requested)");
        break;
    case SIGUSR1:
        log_reopen();
        log_info("log file reopened (SIGUSR1)");
        break;
    }
}

static void on_sup_frame(ipc_conn_t *conn, const ipc_header_t *h, Lodestar__Envelope *env, void *arg)
{
    child_t *c = arg;
    if (env->body_case == LODESTAR__ENVELOPE__BODY_CHILD_PING && h->kind == IPC_KIND_REQUEST) {
        char why[256] = "";
        bool ok = c->role->healthy ? c->role->healthy(c, why, sizeof why) : true;
        Lodestar__Envelope out = LODESTAR__ENVELOPE__INIT;
        Lodestar__ChildPong pong = LODESTAR__CHILD_PONG__INIT;
        pong.sent_unix_ms = env->child_ping->sent_unix_ms;
        pong.healthy = ok;
        pong.detail = why;
        out.body_case = LODESTAR__ENVELOPE__BODY_CHILD_PONG;
        out.child_pong = &pong;
        send_to_supervisor(c, IPC_KIND_RESPONSE, h->request_id, &out);
        return;
    }
    log_warn("unexpected %s frame on the supervisor channel; ignored", ipc_type_name(h->type));
}

static void on_sup_close(ipc_conn_t *conn, const char *reason, void *arg)
{
    child_t *c = arg;
    c->sup = NULL;
    log_warn("supervisor channel closed (%s): the supervisor is gone", reason);
    start_drain(c, "supervisor gone");
}

/* Read the whole configuration from fd 3 with pread: the memfd is shared
 * with the supervisor and siblings, so its file offset must not be used. */
static char *read_config_fd(size_t *len)
{
    struct stat st;
    if (fstat(CHILD_FD_CONFIG, &st) < 0)
        return NULL;
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        return NULL;
    size_t off = 0;
    while (off < (size_t)st.st_size) {
        ssize_t n = pread(CHILD_FD_CONFIG, buf + off, (size_t)st.st_size - off, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return NULL;
        }
        off += (size_t)n;
    }
    buf[off] = '\0';
    *len = off;
    return buf;
}

/* LODESTAR_LISTEN_FDS="a,b,c" names fds 5, 6, 7. */
static int parse_listen_fds(child_t *c)
{
    const char *spec = getenv("LODESTAR_LISTEN_FDS");
    if (!spec || !*spec)
        return 0;
    char *copy = strdup(spec), *save = NULL;
    size_t cap = 8;
    c->listen_fds = calloc(cap, sizeof *c->listen_fds);
    c->listen_names = calloc(cap, sizeof *c->listen_names);
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (c->n_listen == cap) {
            cap *= 2;
            c->listen_fds = realloc(c->listen_fds, cap * sizeof *c->listen_fds);
            c->listen_names = realloc(c->listen_names, cap * sizeof *c->listen_names);
        }
        c->listen_fds[c->n_listen] = CHILD_FD_LISTEN_FIRST + (int)c->n_listen;
        c->listen_names[c->n_listen] = strdup(tok);
        c->n_listen++;
    }
    free(copy);
    return 0;
}

static void child_free(child_priv_t *p)
{
    child_t *c = &p->pub;
    if (c->sup)
        ipc_conn_free(c->sup);
    if (p->sig_term) event_free(p->sig_term);
    if (p->sig_hup) event_free(p->sig_hup);
    if (p->sig_usr1) event_free(p->sig_usr1);
    if (p->drain_timer) event_free(p->drain_timer);
    for (size_t i = 0; i < c->n_listen; i++) {
        close(c->listen_fds[i]);
        free(c->listen_names[i]);
    }
    free(c->listen_fds);
    free(c->listen_names);
    if (c->base)
        event_base_free(c->base);
    cfg_free(c->cfg);
    free(p);
}

int child_main(int argc, char **argv, const child_role_t *const *roles)
{
    const char *role_name = getenv("LODESTAR_ROLE");
    const child_role_t *role = NULL;
    for (size_t i = 0; role_name && roles[i]; i++)
        if (strcmp(roles[i]->name, role_name) == 0)
            role = roles[i];
    if (!role) {
        fprintf(stderr, "%s: started without a known LODESTAR_ROLE (got '%s'); this program is started by "
                        "the lodestar supervisor, not by hand\n", argv[0], role_name ? role_name : "");
        return 2;
    }

    /* Die with the supervisor; if it is already gone, leave now. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    const char *sup_pid = getenv("LODESTAR_SUPERVISOR_PID");
    if (sup_pid && getppid() != (pid_t)atoi(sup_pid))
        return 1;

    child_priv_t *p = calloc(1, sizeof *p);
    child_t *c = &p->pub;
    c->role = role;
    snprintf(p->title, sizeof p->title, "%s", role->title);
    log_init(p->title, LOG_LVL_INFO, NULL);

    size_t len = 0;
    char *buf = read_config_fd(&len);
    if (!buf) {
        log_error("cannot read the configuration from fd %d: %s", CHILD_FD_CONFIG, strerror(errno));
        child_free(p);
        return 1;
    }
    cfg_errors_t errs = {0};
    const char *path = getenv("LODESTAR_CONFIG_PATH");
    if (cfg_load_buffer(buf, len, path ? path : "lodestar.yaml", &c->cfg, &errs) < 0) {
        for (size_t i = 0; i < errs.count; i++)
            log_error("%s", errs.msgs[i]);
        cfg_errors_clear(&errs);
        free(buf);
        child_free(p);
        return 1;
    }
    free(buf);
    const cfg_log_t *lc = cfg_log_for(c->cfg, role->name);
    log_init(p->title, lc->level, lc->file);

    const char *gen = getenv("LODESTAR_GENERATION");
    c->generation = gen ? strtoull(gen, NULL, 10) : 0;
    parse_listen_fds(c);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    c->base = event_base_new();
    if (!c->base) {
        log_error("cannot create the event loop");
        child_free(p);
        return 1;
    }
    p->sig_term = evsignal_new(c->base, SIGTERM, on_signal, c);
    p->sig_hup = evsignal_new(c->base, SIGHUP, on_signal, c);
    p->sig_usr1 = evsignal_new(c->base, SIGUSR1, on_signal, c);
    evsignal_add(p->sig_term, NULL);
    evsignal_add(p->sig_hup, NULL);
    evsignal_add(p->sig_usr1, NULL);
    /* The supervisor blocked signals around fork; take them now that the
     * handlers exist. */
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, NULL);

    c->sup = ipc_conn_new(c->base, CHILD_FD_SUPERVISOR, "supervisor channel", c->cfg->ipc.max_frame_bytes,
                          on_sup_frame, on_sup_close, c);
    if (!c->sup) {
        log_error("cannot open the supervisor channel on fd %d", CHILD_FD_SUPERVISOR);
        child_free(p);
        return 1;
    }
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    Lodestar__Hello hello = LODESTAR__HELLO__INIT;
    hello.role = (char *)role->name;
    hello.pid = (int32_t)getpid();
    hello.generation = c->generation;
    env.body_case = LODESTAR__ENVELOPE__BODY_HELLO;
    env.hello = &hello;
    send_to_supervisor(c, IPC_KIND_PUSH, 0, &env);

    log_info("starting (generation %llu)", c->generation);
    p->exit_status = 0;
    if (role->init(c) < 0) {
        log_error("initialisation failed; exiting with status 1");
        p->exit_status = 1;
    } else {
        event_base_dispatch(c->base);
    }
    if (role->fini)
        role->fini(c);
    int status = p->exit_status;
    log_info("exit status %d", status);
    child_free(p);
    return status;
}

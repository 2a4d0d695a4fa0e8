/*
 * control.c: the supervisor's control socket (<runtime_dir>/control.sock)
 * and the `lodestar status` command that talks to it. Same framing as
 * every other IPC connection; the only request today is StatusRequest.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "sup.h"

static void on_control_request(ipc_server_t *srv, ipc_conn_t *conn, uint64_t id, Lodestar__Envelope *req, void *arg)
{
    sup_t *s = arg;
    if (req->body_case != LODESTAR__ENVELOPE__BODY_STATUS_REQUEST) {
        ipc_server_reply_error(conn, id, -EOPNOTSUPP, "the control socket does not handle %s",
                               ipc_type_name(req->body_case));
        return;
    }
    size_t n = 0;
    for (proc_t *p = s->procs; p; p = p->next)
        n++;
    Lodestar__ProcessStatus *items = calloc(n ? n : 1, sizeof *items);
    Lodestar__ProcessStatus **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    size_t i = 0;
    for (proc_t *p = s->procs; p; p = p->next, i++) {
        lodestar__process_status__init(&items[i]);
        items[i].role = p->role;
        items[i].kind = (char *)proc_kind_name(p->kind);
        items[i].pid = p->pid;
        items[i].state = (char *)(p->wanted || p->pid ? proc_state_name(p->state) : "disabled");
        items[i].started_unix_ms = p->pid ? p->started_ms : 0;
        items[i].restarts = p->restarts;
        items[i].last_exit = p->last_exit;
        ptrs[i] = &items[i];
    }
    Lodestar__StatusResponse sr = LODESTAR__STATUS_RESPONSE__INIT;
    sr.supervisor_pid = (int32_t)getpid();
    sr.state = (char *)(s->state == SS_STARTING ? "starting" : s->state == SS_RUNNING ? "running" : "stopping");
    sr.started_unix_ms = s->started_ms;
    sr.config_path = s->cfg->path;
    sr.generation = s->generation;
    sr.n_processes = n;
    sr.processes = ptrs;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_STATUS_RESPONSE;
    env.status_response = &sr;
    ipc_server_reply(conn, id, &env);
    free(items);
    free(ptrs);
}

int control_start(sup_t *s, char *err, size_t errlen)
{
    char *path = cfg_control_path(s->cfg);
    s->control_fd = ipc_listen_unix(path, 64);
    if (s->control_fd < 0) {
        snprintf(err, errlen, "cannot create the control socket %s: %s", path, strerror(-s->control_fd));
        free(path);
        return -1;
    }
    free(path);
    s->control = ipc_server_new(s->base, s->control_fd, "control", s->cfg->ipc.max_frame_bytes, on_control_request,
                                NULL, s);
    return s->control ? 0 : -1;
}

void control_stop(sup_t *s)
{
    if (s->control)
        ipc_server_free(s->control);
    s->control = NULL;
    if (s->control_fd >= 0) {
        close(s->control_fd);
        char *path = cfg_control_path(s->cfg);
        unlink(path);
        free(path);
    }
    s->control_fd = -1;
}

/* ------------------------------------------------------------ `status` */

typedef struct status_call {
    struct event_base *base;
    int rc;
    bool done;
} status_call_t;

static void fmt_duration(uint64_t ms, char *buf, size_t len)
{
    uint64_t s = ms / 1000;
    if (s < 60)
        snprintf(buf, len, "%llus", (unsigned long long)s);
    else if (s < 3600)
        snprintf(buf, len, "%llum%02llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
    else if (s < 86400)
        snprintf(buf, len, "%lluh%02llum", (unsigned long long)(s / 3600), (unsigned long long)(s % 3600 / 60));
    else
        snprintf(buf, len, "%llud%02lluh", (unsigned long long)(s / 86400), (unsigned long long)(s % 86400 / 3600));
}

static void on_status_reply(int status, Lodestar__Envelope *reply, void *arg)
{
    status_call_t *sc = arg;
    if (sc->done)
        return; /* timed out already, or the client is being freed */
    sc->done = true;
    event_base_loopbreak(sc->base);
    if (status < 0) {
        fprintf(stderr, "lodestar status: no answer from the supervisor: %s\n", strerror(-status));
        sc->rc = 1;
        return;
    }
    if (reply->body_case == LODESTAR__ENVELOPE__BODY_ERROR) {
        fprintf(stderr, "lodestar status: %s\n", reply->error->message);
        sc->rc = 1;
        return;
    }
    if (reply->body_case != LODESTAR__ENVELOPE__BODY_STATUS_RESPONSE) {
        fprintf(stderr, "lodestar status: unexpected %s answer\n", ipc_type_name(reply->body_case));
        sc->rc = 1;
        return;
    }
    Lodestar__StatusResponse *sr = reply->status_response;
    uint64_t now = sup_now_ms();
    char up[32];
    fmt_duration(now - sr->started_unix_ms, up, sizeof up);
    printf("supervisor pid %d, %s, up %s, generation %llu, config %s\n", sr->supervisor_pid, sr->state, up,
           (unsigned long long)sr->generation, sr->config_path);
    printf("%-16s %-8s %-8s %-10s %-9s %-9s %s\n", "ROLE", "KIND", "PID", "STATE", "UPTIME", "RESTARTS",
           "LAST EXIT");
    for (size_t i = 0; i < sr->n_processes; i++) {
        Lodestar__ProcessStatus *p = sr->processes[i];
        char pid[16] = "-", upt[32] = "-";
        if (p->pid) {
            snprintf(pid, sizeof pid, "%d", p->pid);
            fmt_duration(now - p->started_unix_ms, upt, sizeof upt);
        }
        printf("%-16s %-8s %-8s %-10s %-9s %-9u %s\n", p->role, p->kind, pid, p->state, upt, p->restarts,
               *p->last_exit ? p->last_exit : "-");
    }
    sc->rc = 0;
}

static void on_status_timeout(evutil_socket_t fd, short what, void *arg)
{
    status_call_t *sc = arg;
    if (!sc->done) {
        fprintf(stderr, "lodestar status: the supervisor did not answer in time (is it running?)\n");
        sc->done = true;
        sc->rc = 1;
        event_base_loopbreak(sc->base);
    }
}

static void on_status_state(ipc_client_t *cl, bool connected, void *arg)
{
    status_call_t *sc = arg;
    if (!connected || sc->done)
        return;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    Lodestar__StatusRequest req = LODESTAR__STATUS_REQUEST__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_STATUS_REQUEST;
    env.status_request = &req;
    if (ipc_client_request(cl, &env, 3000, on_status_reply, sc) < 0) {
        fprintf(stderr, "lodestar status: cannot send the request\n");
        sc->rc = 1;
        sc->done = true;
        event_base_loopbreak(sc->base);
    }
}

int control_status_command(const char *config_path)
{
    log_init("lodestar status", LOG_LVL_WARN, NULL);
    cfg_t *cfg = NULL;
    cfg_errors_t errs = {0};
    if (cfg_load_file(config_path, &cfg, &errs) < 0) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        cfg_errors_clear(&errs);
        return 1;
    }
    char *path = cfg_control_path(cfg);
    if (access(path, F_OK) < 0) {
        fprintf(stderr, "lodestar status: no control socket at %s: is the supervisor running with %s?\n", path,
                config_path);
        free(path);
        cfg_free(cfg);
        return 1;
    }
    status_call_t sc = {.base = event_base_new(), .rc = 1};
    ipc_client_t *cl = ipc_client_new(sc.base, path, "control", cfg->ipc.max_frame_bytes, NULL, on_status_state, &sc);
    struct event *t = evtimer_new(sc.base, on_status_timeout, &sc);
    struct timeval tv = {5, 0};
    evtimer_add(t, &tv);
    event_base_dispatch(sc.base);
    event_free(t);
    ipc_client_free(cl);
    event_base_free(sc.base);
    free(path);
    cfg_free(cfg);
    return sc.rc;
}

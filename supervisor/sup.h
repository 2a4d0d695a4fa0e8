/*
 * sup.h: the supervisor's types and the functions its files share.
 *
 * The supervisor stays small: it forks and execs, watches, restarts, owns
 * every listening socket (TCP for gateways, Unix for worker IPC and for its
 * control socket), forwards signals and talks to systemd. It links neither
 * libpq, hiredis nor gRPC.
 *
 * Files: main.c (command line), supervisor.c (process table, state machine,
 * signals, reload, shutdown), spawn.c (fork+exec of a child), pgembed.c
 * (the private PostgreSQL), listeners.c (sockets), control.c (control socket
 * and `lodestar status`), notify.c (systemd notifications).
 */
#ifndef LODESTAR_SUP_H
#define LODESTAR_SUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "ipc.h"

struct event_base;
struct event;

typedef enum proc_kind { PK_STORE, PK_WORKER, PK_GATEWAY } proc_kind_t;

typedef enum proc_state {
    PS_STOPPED,  /* not running, not wanted (or not yet started) */
    PS_STARTING, /* forked, not yet ready */
    PS_READY,    /* reported ready */
    PS_DRAINING, /* told us it is draining */
    PS_BACKOFF,  /* exited; a restart is scheduled */
} proc_state_t;

#define SUP_CRASH_HISTORY 16

/* One supervised process: the private PostgreSQL, a worker or a gateway. */
typedef struct sup sup_t;

typedef struct proc {
    sup_t *sup;
    char role[32];        /* "postgres", "naming", "polaris-http" */
    char title[64];       /* "naming worker", shown in ps as "lodestar: naming worker" */
    proc_kind_t kind;
    bool wanted;          /* should run under the current configuration */
    bool restart_pending; /* stop it, then start it at once (configuration changed) */
    bool stop_sent;       /* SIGTERM (SIGINT for PostgreSQL) sent during shutdown */
    pid_t pid;
    proc_state_t state;
    uint64_t started_ms;  /* wall clock, for status */
    uint64_t started_mono_ms;
    uint64_t state_since_mono_ms;
    uint32_t restarts;
    char last_exit[96];
    int backoff_ms;       /* next crash restart delay */
    uint64_t crashes[SUP_CRASH_HISTORY]; /* monotonic ms of recent crashes (ring) */
    unsigned n_crashes;
    struct event *restart_timer;
    ipc_conn_t *chan;     /* supervisor channel; NULL for PostgreSQL */
    uint64_t last_pong_mono_ms;
    bool healthy;         /* last pong said healthy */
    char health_detail[128];
    char *fingerprint;    /* the configuration this process runs with */
    struct proc *next;
} proc_t;

/* A listening socket the supervisor owns and children inherit. */
typedef struct lsock {
    char name[80];      /* listener name, or "ipc:<role>" */
    char protocol[32];  /* gateway protocol; "" for IPC sockets */
    char address[64];
    int port;
    char path[256];     /* Unix sockets */
    int fd;
    bool keep;          /* used by the configuration being applied */
    struct lsock *next;
} lsock_t;

typedef enum sup_state { SS_STARTING, SS_RUNNING, SS_STOPPING } sup_state_t;

struct sup {
    struct event_base *base;
    cfg_t *cfg;
    char *cfg_bytes;      /* the validated file contents, passed to children on fd 3 */
    size_t cfg_len;
    int cfg_memfd;
    uint64_t generation;
    sup_state_t state;
    bool notified_ready;
    bool reloading;
    uint64_t started_ms;
    char *self_dir;       /* where lodestar-worker and lodestar-gateway live */
    proc_t *procs;
    proc_t *pg;           /* NULL with an external DSN */
    lsock_t *socks;
    ipc_server_t *control;
    int control_fd;
    struct event *sig_events[6];
    struct event *ping_timer, *watchdog_timer, *shutdown_timer, *ready_timer, *pg_poll_timer;
    uint64_t watchdog_usec;
    uint64_t ping_seq;
    int exit_status;
};

/* supervisor.c */
int sup_run(const char *config_path);
uint64_t sup_now_ms(void);      /* wall clock */
uint64_t sup_mono_ms(void);     /* monotonic */
const char *proc_state_name(proc_state_t s);
const char *proc_kind_name(proc_kind_t k);
void sup_proc_exited(sup_t *s, proc_t *p, int wstatus);
void sup_check_ready(sup_t *s);
/* Frames and close of a child's supervisor channel (arg is the proc_t). */
void sup_chan_frame(ipc_conn_t *c, const ipc_header_t *h, Lodestar__Envelope *env, void *arg);
void sup_chan_close(ipc_conn_t *c, const char *reason, void *arg);

/* spawn.c: fork+exec a worker or gateway with its fds and environment. */
int sup_spawn(sup_t *s, proc_t *p);
int sup_config_memfd(const char *bytes, size_t len);

/* pgembed.c */
int pg_prepare(sup_t *s, char *err, size_t errlen);  /* initdb on first start (blocking, bounded) */
int pg_start(sup_t *s, proc_t *p);                   /* fork the postmaster */
int pg_poll_ready(sup_t *s, char *why, size_t whylen); /* 1 ready, 0 not yet, -1 failed */

/* listeners.c */
int sup_sockets_sync(sup_t *s, const cfg_t *cfg, char *err, size_t errlen);
void sup_sockets_drop_unused(sup_t *s);
void sup_sockets_close_tcp(sup_t *s);
void sup_sockets_free(sup_t *s);
lsock_t *sup_socket_find(sup_t *s, const char *name);

/* control.c */
int control_start(sup_t *s, char *err, size_t errlen);
void control_stop(sup_t *s);
int control_status_command(const char *config_path);

/* notify.c: no-ops without NOTIFY_SOCKET. */
void notify_ready(const char *status);
void notify_status(const char *status);
void notify_reloading(void);
void notify_stopping(void);
void notify_watchdog(void);
uint64_t notify_watchdog_usec(void);

/* pid files under the runtime directory */
void sup_pidfile_write(const sup_t *s, const char *role, pid_t pid);
void sup_pidfile_remove(const sup_t *s, const char *role);

#endif

/*
 * child.h: the one skeleton every worker and gateway process runs.
 *
 * The supervisor fork+execs lodestar-worker or lodestar-gateway with
 *   argv[0] = "lodestar: <title>"   (so ps shows "lodestar: naming worker")
 *   fd 3    = a sealed memfd holding the exact configuration bytes the supervisor validated
 *   fd 4    = the supervisor channel (IPC frames, see ipc.h)
 *   fd 5..  = inherited listening sockets, in the order of LODESTAR_LISTEN_FDS
 * and the environment
 *   LODESTAR_ROLE=naming | config | health | polaris-http | polaris-grpc | ...
 *   LODESTAR_CONFIG_PATH=/abs/path/lodestar.yaml   (for messages and relative paths)
 *   LODESTAR_GENERATION=<n>                        (echoed in Hello)
 *   LODESTAR_LISTEN_FDS=name,name,...              (names of fds 5, 6, ...)
 *
 * child_main() parses the configuration, sets up logging for the role,
 * arranges to die with the supervisor (PR_SET_PDEATHSIG, and EOF on fd 4),
 * creates the event base, installs signal handling, says Hello, calls the
 * role's init, runs the loop, and exits.
 *
 * Signals in a child:
 *   SIGTERM, SIGHUP  drain (role->drain), then exit 0. The supervisor restarts
 *                    a child that exits while the supervisor is not stopping,
 *                    so signalling one gateway's pid restarts just that gateway.
 *   SIGUSR1          reopen the log file.
 *   SIGINT           ignored (the supervisor owns terminal interrupts).
 * A drain that takes longer than supervisor.drain_timeout_ms is cut short.
 */
#ifndef LODESTAR_CHILD_H
#define LODESTAR_CHILD_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/config.h"
#include "ipc.h"

#define CHILD_FD_CONFIG 3
#define CHILD_FD_SUPERVISOR 4
#define CHILD_FD_LISTEN_FIRST 5

typedef struct child child_t;

typedef struct child_role {
    const char *name;  /* "naming", "polaris-http" */
    const char *title; /* "naming worker", "polaris-http gateway" */
    /* Set up and start serving. Call child_ready() once serving (may be later,
     * from a callback). Return 0, or -1 to exit with status 1 (logged). */
    int (*init)(child_t *c);
    /* Stop accepting and finish in-flight work; call child_drained() when
     * done (possibly later). NULL: exit at once. */
    void (*drain)(child_t *c);
    /* Free everything init made; called after the loop ended. May be NULL. */
    void (*fini)(child_t *c);
    /* Health for the supervisor's liveness probe (watchdog). NULL = healthy.
     * Write a short reason into why when unhealthy. */
    bool (*healthy)(child_t *c, char *why, size_t whylen);
} child_role_t;

struct child {
    struct event_base *base;
    cfg_t *cfg;
    const child_role_t *role;
    ipc_conn_t *sup;       /* supervisor channel; NULL once the supervisor is gone */
    unsigned long long generation;
    int *listen_fds;       /* inherited listening sockets */
    char **listen_names;   /* their listener names (cfg_listener.name or "ipc:<role>") */
    size_t n_listen;
    bool draining;
    bool ready;
    void *state;           /* the role's own data */
};

/* Run a child process for one of `roles` (NULL-terminated); the role comes
 * from LODESTAR_ROLE. Returns the process exit status. */
int child_main(int argc, char **argv, const child_role_t *const *roles);

/* Report to the supervisor that this process serves. Idempotent. */
void child_ready(child_t *c);
/* Drain is complete: leave the loop and exit 0. */
void child_drained(child_t *c);
/* Leave the loop with a failure status (logged with reason). */
void child_fail(child_t *c, const char *reason);

/* The inherited listening fd for a listener name, or -1. */
int child_listen_fd(const child_t *c, const char *name);

#endif

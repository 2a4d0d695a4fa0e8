/*
 * main.c: the lodestar command line.
 *
 *   lodestar -c FILE                 run in the foreground (systemd supervises; no daemonizing)
 *   lodestar --check-config FILE     validate FILE, print every error, exit 0 or 1
 *   lodestar status -c FILE          ask the running supervisor for its processes
 *   lodestar --version | --help
 */
#include <stdio.h>
#include <string.h>

#include "sup.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: lodestar -c FILE              run the supervisor in the foreground\n"
            "       lodestar --check-config FILE  validate a configuration file\n"
            "       lodestar status -c FILE       show the processes of a running supervisor\n"
            "       lodestar --version\n");
}

static int check_config(const char *path)
{
    cfg_t *cfg = NULL;
    cfg_errors_t errs = {0};
    if (cfg_load_file(path, &cfg, &errs) < 0) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        if (errs.dropped)
            fprintf(stderr, "%s: ... and %zu more errors\n", path, errs.dropped);
        fprintf(stderr, "%s: configuration is invalid (%zu error%s)\n", path, errs.count + errs.dropped,
                errs.count + errs.dropped == 1 ? "" : "s");
        cfg_errors_clear(&errs);
        return 1;
    }
    printf("%s: configuration is valid\n", path);
    cfg_free(cfg);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
        printf("lodestar %s\n", LODESTAR_VERSION);
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--check-config") == 0)
        return check_config(argv[2]);
    if (argc == 4 && strcmp(argv[1], "status") == 0 && strcmp(argv[2], "-c") == 0)
        return control_status_command(argv[3]);
    if (argc == 3 && strcmp(argv[1], "-c") == 0)
        return sup_run(argv[2]);
    usage(stderr);
    return 2;
}

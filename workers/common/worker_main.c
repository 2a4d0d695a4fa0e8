/*
 * worker_main.c: entry of lodestar-worker. The role table: one row per
 * domain folder under workers/.
 */
#include "worker.h"

static const child_role_t *const roles[] = {&naming_role, &config_role, &health_role, NULL};

int main(int argc, char **argv) { return child_main(argc, argv, roles); }

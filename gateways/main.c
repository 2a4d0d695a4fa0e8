/*
 * main.c: the lodestar-gateway binary. The supervisor picks the protocol
 * through LODESTAR_ROLE; child_main (ipc/child.c) does everything else.
 */
#include "child.h"
#include "common/roles.h"

static const child_role_t *const gateway_roles[] = {
    &polaris_http_role,
    &polaris_grpc_role,
    NULL,
};

int main(int argc, char **argv)
{
    return child_main(argc, argv, gateway_roles);
}

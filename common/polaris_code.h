/*
 * polaris_code.h: the texts of Polaris response codes (v1.Code) and the
 * HTTP status a code maps to, shared by the naming worker and every gateway
 * so a code reads the same whichever protocol answers it.
 */
#ifndef LODESTAR_POLARIS_CODE_H
#define LODESTAR_POLARIS_CODE_H

#include <stdint.h>

/* polaris-server's message for a code ("execute success", "not found
 * instance"); the enum name for codes without one; never NULL. */
const char *polaris_code_info(uint32_t code);

/* The code's first three digits (200000 -> 200, 400120 -> 400); 500 when
 * that is not an HTTP status. */
int polaris_http_status(uint32_t code);

#endif

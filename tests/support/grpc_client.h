/*
 * grpc_client.h: a tiny synchronous gRPC client on gRPC core, for tests.
 *
 * gtc_unary opens its own insecure channel (one TCP connection), makes one
 * unary call and closes everything again, so calls never share gRPC state.
 * gtc_channel_* keep one channel open across calls, the way SDKs hold their
 * connection. gRPC core is initialised and shut down with each channel
 * (reference-counted, so it coexists with a server in the same process).
 * Never use it in a process that will fork afterwards.
 */
#ifndef LODESTAR_TEST_GRPC_CLIENT_H
#define LODESTAR_TEST_GRPC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

/* Call `method` ("/pkg.Service/Method") on `target` ("127.0.0.1:8091")
 * with the serialized request req/len and a deadline of timeout_ms, on a
 * channel of its own that is closed again before returning.
 * Returns 0 when the call completed, whatever its status: *status_code is
 * the gRPC status, *resp / *resp_len the response message (malloc'd; NULL
 * and 0 when none arrived), *details the status message (malloc'd, "" when
 * empty). resp/resp_len and details may be NULL when not wanted.
 * Returns -EINVAL on bad arguments, -EIO when gRPC core refused the call. */
int gtc_unary(const char *target, const char *method, const uint8_t *req, size_t len, int timeout_ms, uint8_t **resp,
              size_t *resp_len, int *status_code, char **details);

/* A channel kept open across calls, as SDKs do (one HTTP/2 connection once
 * the first call connected it). Open returns NULL on bad arguments. */
typedef struct gtc_channel gtc_channel_t;
gtc_channel_t *gtc_channel_open(const char *target);
/* Same contract as gtc_unary, on an open channel. */
int gtc_channel_call(gtc_channel_t *ch, const char *method, const uint8_t *req, size_t len, int timeout_ms,
                     uint8_t **resp, size_t *resp_len, int *status_code, char **details);
void gtc_channel_close(gtc_channel_t *ch);

#endif

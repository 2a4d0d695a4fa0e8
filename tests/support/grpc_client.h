/*
 * grpc_client.h: a tiny synchronous gRPC client on gRPC core, for tests.
 *
 * gtc_unary opens its own insecure channel (one TCP connection), makes one
 * unary call and closes everything again, so calls never share gRPC state.
 * gtc_channel_* keep one channel open across calls, the way SDKs hold their
 * connection; gtc_stream_* run a streaming call on such a channel. gRPC core is initialised and shut down with each channel
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

/* A streaming call on an open channel (bidi, client or server streaming:
 * the wire is the same), driven synchronously from one thread. Every wait
 * is bounded by its timeout_ms; an operation that timed out stays pending
 * and the next call of the same kind waits for it again. */
typedef struct gtc_stream gtc_stream_t;
/* Start the call (its deadline is deadline_ms from now). NULL on bad
 * arguments or when gRPC core refuses the call. */
gtc_stream_t *gtc_stream_open(gtc_channel_t *ch, const char *method, int deadline_ms);
/* Send one message. 0, -ETIMEDOUT, -EIO (the call is over or the send
 * failed), -EINVAL. */
int gtc_stream_send(gtc_stream_t *s, const uint8_t *msg, size_t len, int timeout_ms);
/* Read the next message into *msg / *len (malloc'd). 0 with a message; 1
 * when the server finished the stream (no more messages: call
 * gtc_stream_status); -ETIMEDOUT; -EIO. */
int gtc_stream_recv(gtc_stream_t *s, uint8_t **msg, size_t *len, int timeout_ms);
/* Tell the server we send nothing more. 0, -ETIMEDOUT, -EIO. */
int gtc_stream_half_close(gtc_stream_t *s, int timeout_ms);
/* Wait for the final status: 0 and *status_code / *details (malloc'd, may
 * be NULL when not wanted), or -ETIMEDOUT. */
int gtc_stream_status(gtc_stream_t *s, int timeout_ms, int *status_code, char **details);
/* Cancel the call (the server sees it cancelled). */
void gtc_stream_cancel(gtc_stream_t *s);
/* Cancel if still running, wait for every pending operation, free. */
void gtc_stream_close(gtc_stream_t *s);

#endif

/*
 * pg.h: what the files of the polaris-grpc gateway share (internal to
 * gateways/polaris_grpc/; nothing outside includes it).
 *
 *  - polaris_grpc.c: the role (init, drain, fini), listeners, health service
 *  - pg_reply.c: Polaris codes and their texts, v1.Response answers
 *  - naming_api.c: v1.PolarisGRPC ReportClient, RegisterInstance,
 *    DeregisterInstance and the Discover stream
 *  - heartbeat_api.c: v1.PolarisGRPC Heartbeat, v1.PolarisHeartbeatGRPC
 *    (BatchHeartbeat stream, BatchGetHeartbeat, BatchDelHeartbeat), and the
 *    relay that coalesces beats into HeartbeatBatch requests to the health
 *    worker
 *
 * Rules kept across them:
 *  - Polaris answers are gRPC status OK carrying the Polaris code in the
 *    message (as the Polaris server does); a gRPC error status only where
 *    the answer message has no code field (BatchHeartbeat,
 *    BatchGetHeartbeat);
 *  - a request that does not decode is answered 400001 ParseException
 *    naming the message type; a zero-length unary request 400002;
 *  - reads come from the naming replica only; before it is loaded they
 *    answer 500000 saying so;
 *  - writes and beats go to the workers through gw_request, whose callback
 *    always runs (also when the gateway is freed), so every call is
 *    answered exactly once;
 *  - the replica's cache slots of a service hold this gateway's encoded
 *    DiscoverResponse messages (PG_SLOT_*), rebuilt after each change.
 */
#ifndef LODESTAR_POLARIS_GRPC_PG_H
#define LODESTAR_POLARIS_GRPC_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "polaris_code.h"
#include "child.h"
#include "common/gateway.h"
#include "common/grpc_health.h"
#include "common/grpc_server.h"
#include "polaris_code.pb-c.h"
#include "polaris_response.pb-c.h"
#include "polaris_service.pb-c.h"

#define PG_ROLE "polaris-grpc"
#define PG_ORIGIN "polaris"            /* InstanceExt.origin of our registrations */
#define PG_WRITE_ORIGIN "polaris-grpc" /* NamingWriteRequest.origin */

/* Replica cache slots (nr_cache) this gateway fills per service. */
#define PG_SLOT_ALL 0      /* DiscoverResponse INSTANCE, every instance */
#define PG_SLOT_HEALTHY 1  /* DiscoverResponse INSTANCE, healthy ones only */
#define PG_SLOT_NOCHANGE 2 /* DiscoverResponse INSTANCE 200001 for the current revision */

struct pg_relay;
struct pg_stream;

typedef struct pg_state {
    child_t *c;
    gw_t *gw;
    gs_server_t *srv;
    gw_grpc_health_t health;
    struct pg_relay *relay;      /* heartbeat_api.c */
    struct pg_stream *streams;   /* open Discover and BatchHeartbeat streams */
    bool draining;
} pg_state_t;

/* A stream this gateway keeps open; ended early when the gateway drains. */
typedef struct pg_stream {
    pg_state_t *st;
    gs_call_t *call; /* NULL once the call is over */
    void (*drain)(struct pg_stream *ps);
    struct pg_stream *prev, *next;
} pg_stream_t;

/* Add ps to the list drained when the gateway drains (streams, and hooks
 * such as the config watchers' with call NULL). */
void pg_stream_link(pg_state_t *st, pg_stream_t *ps);
/* Open a stream's state: `size` zeroed bytes whose first member is a
 * pg_stream_t, linked into st->streams and set as the call's user data;
 * drained at once if the gateway is draining. NULL (and the call ended with
 * RESOURCE_EXHAUSTED) when out of memory. */
void *pg_stream_open(pg_state_t *st, gs_call_t *call, size_t size, void (*drain)(pg_stream_t *ps));
/* The call is over: unlink the stream and detach it from the call.
 * Returns the stream (for its owner to free when it may), or NULL. */
void *pg_stream_close(gs_call_t *call);

/* ---- pg_reply.c ---- */

/* Answer a unary call with a v1.Response: code, info (NULL: the code's
 * text), and optionally the instance / client to carry. */
void pg_reply_response(gs_call_t *call, uint32_t code, const char *info, V1__Instance *instance, V1__Client *client);
/* Pack any protobuf-c message into a malloc'd buffer. */
uint8_t *pg_pack(const ProtobufCMessage *m, size_t *len);
/* Answer a unary call with a packed message (gRPC OK). */
void pg_reply_message(gs_call_t *call, const ProtobufCMessage *m);
/* Text for a failed worker request (ipc status or Error body). */
void pg_worker_failure(const char *worker, int status, const Lodestar__Envelope *reply, int timeout_ms, char *buf,
                       size_t buflen);

/* ---- naming_api.c / heartbeat_api.c ---- */

int pg_naming_register(pg_state_t *st, char *err, size_t errlen);
int pg_heartbeat_register(pg_state_t *st, char *err, size_t errlen);
/* config_api.c: v1.PolarisConfigGRPC. */
int pg_config_register(pg_state_t *st, char *err, size_t errlen);
/* Free the relay; beats still waiting are answered as failed. */
void pg_heartbeat_free(pg_state_t *st);

#endif

/*
 * polaris_discover.h: Polaris discovery answered from the naming replica,
 * once for every protocol that speaks it (gRPC Discover stream on 8091,
 * POST /v1/Discover on 8090).
 *
 * The rules (those of polaris-server): INSTANCE lists the service's
 * instances (Filter.OnlyHealthyInstance keeps the healthy ones; isolated and
 * weight-0 instances are listed, SDKs filter them), SERVICES lists a
 * namespace's services, ROUTING / RATE_LIMIT / CIRCUIT_BREAKER /
 * FAULT_DETECTOR answer an empty rule set under a stable revision until
 * rules exist, any other type is 400004; a request carrying the current
 * revision gets 200001 DataNoChange without payload; an unknown service
 * is 400301.
 *
 * Answers are encoded by the protocol's own encoder (packed protobuf for
 * gRPC, JSON for HTTP). INSTANCE answers are cached in the service's replica
 * cache slots [slot_base, slot_base + PD_SLOTS) until the service changes,
 * so the hot path encodes nothing.
 */
#ifndef LODESTAR_POLARIS_DISCOVER_H
#define LODESTAR_POLARIS_DISCOVER_H

#include <stddef.h>
#include <stdint.h>

#include "naming_replica.h"
#include "polaris_request.pb-c.h"

#define PD_SLOTS 3

/* Encode m into a malloc'd buffer. 0, or -1 (logged by the encoder). */
typedef int (*pd_encode_fn)(const ProtobufCMessage *m, uint8_t **data, size_t *len);

typedef struct pd_answer {
    uint32_t code;       /* the Polaris code answered */
    const uint8_t *data; /* the encoded DiscoverResponse */
    size_t len;
    uint8_t *owned;      /* set when data is not a cache slot: freed by pd_answer_release */
} pd_answer_t;

/* Answer one request. r may be NULL (naming worker disabled). Returns 0 with
 * *out filled, or -1 when even the error answer could not be encoded.
 * out->data may point into a cache slot of the replica: a caller that is
 * not on the replica's event-loop thread holds nr_lock(r) from before this
 * call until it has copied the answer. */
int pd_discover(nr_t *r, const V1__DiscoverRequest *dr, pd_encode_fn enc, int slot_base, pd_answer_t *out);

/* Encode a DiscoverResponse carrying only code, info ("<code text>: detail"),
 * type and the service as asked, into *out (owned). For answers decided by
 * the protocol itself (decode errors, a stopping gateway). */
int pd_short(uint32_t code, int type, V1__Service *asked, const char *detail, pd_encode_fn enc, pd_answer_t *out);

void pd_answer_release(pd_answer_t *a);

/* The instance a Polaris heartbeat names, resolved in the replica: by its
 * id, or by the Polaris id of namespace/service/host/port (idbuf holds it).
 * Returns 0 with *id set, or the Polaris code to answer with *why saying
 * which input: 400130/400120/400110/400131/400132 for a bad key, 500000
 * when the replica is not loaded, 400303 NotFoundInstance, 400141
 * HeartbeatOnDisabledIns (enable_health_check off or no health check, as
 * polaris-server decides). */
uint32_t pd_beat_target(nr_t *r, const V1__Instance *in, char idbuf[41], const char **id, const char **why);

#endif

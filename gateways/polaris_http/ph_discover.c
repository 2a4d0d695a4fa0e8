/*
 * ph_discover.c: POST /v1/Discover on the polaris-http gateway, answered
 * from the gateway's naming replica only (never from the naming worker),
 * with exactly the answers of the gRPC Discover: both go through
 * gateways/common/polaris_discover.h, which holds Polaris' rules; this file
 * only parses the JSON request and encodes answers as JSON. INSTANCE
 * answers are encoded once per service state into this process's replica
 * cache slots, freed by the replica whenever the service changes.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "naming_id.h"
#include "naming_replica.h"
#include "pbjson.h"
#include "ph.h"
#include "common/polaris_discover.h"
#include "polaris_request.pb-c.h"

#define PH_SLOT_BASE 0 /* replica cache slots [0, PD_SLOTS) of this process */

/* Discover answers are JSON (the proto3 mapping, defaults included). */
static int json_answer(const ProtobufCMessage *m, uint8_t **data, size_t *len)
{
    char err[256] = "";
    char *text = NULL;
    if (pbjson_encode(m, PBJSON_EMIT_DEFAULTS, &text, len, err, sizeof err) < 0) {
        log_error("discover: cannot encode the answer: %s", err);
        return -1;
    }
    *data = (uint8_t *)text;
    return 0;
}

void ph_discover(ph_call_t *call)
{
    V1__DiscoverRequest *dr = (V1__DiscoverRequest *)ph_parse_one(call, &v1__discover_request__descriptor);
    if (!dr)
        return;
    ph_state_t *st = call->st;
    pd_answer_t ans;
    int rc = st->gw ? pd_discover(gw_replica(st->gw), dr, json_answer, PH_SLOT_BASE, &ans)
                    : pd_short(V1__CODE__ExecuteException, (int)dr->type, dr->service, "the gateway is stopping",
                               json_answer, &ans);
    if (rc < 0)
        ph_reply_text(st, call->req, 500, V1__CODE__ExecuteException, "{\"code\":500000}", 16);
    else
        ph_reply_text(st, call->req, polaris_http_status(ans.code), ans.code, (const char *)ans.data, ans.len);
    pd_answer_release(&ans);
    protobuf_c_message_free_unpacked(&dr->base, NULL);
}

/*
 * pg_reply.c: Polaris response codes with the texts the Polaris server
 * gives them, v1.Response answers, and the shared stream list.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pg.h"



uint8_t *pg_pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(m, buf);
    *len = n;
    return buf;
}

void pg_reply_message(gs_call_t *call, const ProtobufCMessage *m)
{
    size_t n = 0;
    uint8_t *buf = pg_pack(m, &n);
    if (!buf) {
        gs_reply(call, GS_RESOURCE_EXHAUSTED, "server out of memory", NULL, 0);
        return;
    }
    gs_reply(call, GS_OK, NULL, buf, n);
    free(buf);
}

void pg_reply_response(gs_call_t *call, uint32_t code, const char *info, V1__Instance *instance, V1__Client *client)
{
    Google__Protobuf__UInt32Value c = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    Google__Protobuf__StringValue i = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    c.value = code;
    i.value = (char *)(info ? info : polaris_code_info(code));
    V1__Response r = V1__RESPONSE__INIT;
    r.code = &c;
    r.info = &i;
    r.instance = instance;
    r.client = client;
    pg_reply_message(call, &r.base);
}

void pg_worker_failure(const char *worker, int status, const Lodestar__Envelope *reply, int timeout_ms, char *buf,
                       size_t buflen)
{
    if (status == 0 && reply && reply->body_case == LODESTAR__ENVELOPE__BODY_ERROR)
        snprintf(buf, buflen, "%s worker: %s", worker,
                 reply->error->message && *reply->error->message ? reply->error->message : "error without message");
    else if (status == 0 && reply)
        snprintf(buf, buflen, "%s worker answered %s, which this request does not expect", worker,
                 ipc_type_name(reply->body_case));
    else if (status == -ETIMEDOUT)
        snprintf(buf, buflen, "%s worker did not answer within %d ms", worker, timeout_ms);
    else if (status == -ENOTCONN)
        snprintf(buf, buflen, "%s worker not connected", worker);
    else if (status == -ECONNRESET)
        snprintf(buf, buflen, "connection to the %s worker lost", worker);
    else if (status == -ENOENT)
        snprintf(buf, buflen, "%s worker not enabled", worker);
    else if (status == -ESHUTDOWN)
        snprintf(buf, buflen, "gateway stopping");
    else
        snprintf(buf, buflen, "%s worker request failed: %s", worker, strerror(status < 0 ? -status : status));
}

void pg_stream_link(pg_state_t *st, pg_stream_t *ps)
{
    ps->prev = NULL;
    ps->next = st->streams;
    if (st->streams)
        st->streams->prev = ps;
    st->streams = ps;
}

static void pg_stream_unlink(pg_state_t *st, pg_stream_t *ps)
{
    if (ps->prev)
        ps->prev->next = ps->next;
    else if (st->streams == ps)
        st->streams = ps->next;
    if (ps->next)
        ps->next->prev = ps->prev;
    ps->prev = ps->next = NULL;
}

void *pg_stream_open(pg_state_t *st, gs_call_t *call, size_t size, void (*drain)(pg_stream_t *ps))
{
    pg_stream_t *ps = calloc(1, size);
    if (!ps) {
        gs_stream_finish(call, GS_RESOURCE_EXHAUSTED, "server out of memory");
        return NULL;
    }
    ps->st = st;
    ps->call = call;
    ps->drain = drain;
    pg_stream_link(st, ps);
    gs_call_set_user(call, ps);
    if (st->draining)
        drain(ps);
    return ps;
}

void *pg_stream_close(gs_call_t *call)
{
    pg_stream_t *ps = gs_call_user(call);
    if (!ps)
        return NULL;
    pg_stream_unlink(ps->st, ps);
    ps->call = NULL;
    gs_call_set_user(call, NULL);
    return ps;
}

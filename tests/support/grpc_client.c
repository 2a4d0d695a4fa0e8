/*
 * grpc_client.c: see grpc_client.h. One pluck completion queue and one
 * batch per unary call; a call releases everything it made before
 * returning. A stream has its own pluck queue and one tag per kind of
 * operation, so at most one operation of each kind is outstanding.
 */
#include "grpc_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

/* Copy a byte buffer's (decompressed) contents into malloc'd memory. */
static int copy_message(grpc_byte_buffer *bb, uint8_t **out, size_t *outlen)
{
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb))
        return -EIO;
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    size_t n = GRPC_SLICE_LENGTH(all);
    uint8_t *p = malloc(n ? n : 1);
    if (p)
        memcpy(p, GRPC_SLICE_START_PTR(all), n);
    grpc_slice_unref(all);
    if (!p)
        return -ENOMEM;
    *out = p;
    *outlen = n;
    return 0;
}

struct gtc_channel {
    grpc_channel *ch;
};

gtc_channel_t *gtc_channel_open(const char *target)
{
    if (!target)
        return NULL;
    gtc_channel_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    grpc_init();
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    c->ch = grpc_channel_create(target, cr, NULL);
    grpc_channel_credentials_release(cr);
    return c;
}

void gtc_channel_close(gtc_channel_t *c)
{
    if (!c)
        return;
    grpc_channel_destroy(c->ch);
    free(c);
    grpc_shutdown();
}

int gtc_unary(const char *target, const char *method, const uint8_t *req, size_t len, int timeout_ms, uint8_t **resp,
              size_t *resp_len, int *status_code, char **details)
{
    gtc_channel_t *c = gtc_channel_open(target);
    if (!c)
        return -EINVAL;
    int rc = gtc_channel_call(c, method, req, len, timeout_ms, resp, resp_len, status_code, details);
    gtc_channel_close(c);
    return rc;
}

int gtc_channel_call(gtc_channel_t *c, const char *method, const uint8_t *req, size_t len, int timeout_ms,
                     uint8_t **resp, size_t *resp_len, int *status_code, char **details)
{
    if (!c || !method || !status_code || (len && !req) || timeout_ms <= 0)
        return -EINVAL;
    if (resp)
        *resp = NULL;
    if (resp_len)
        *resp_len = 0;
    if (details)
        *details = NULL;

    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);

    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_slice mslice = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, mslice, NULL, deadline, NULL);
    grpc_slice_unref(mslice);

    grpc_slice body = grpc_slice_from_copied_buffer((const char *)(req ? req : (const uint8_t *)""), len);
    grpc_byte_buffer *send_bb = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);

    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_byte_buffer *recv_bb = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice status_details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &status_details;

    int rc = 0;
    int tag = 1;
    if (grpc_call_start_batch(call, ops, 6, &tag, NULL) != GRPC_CALL_OK) {
        rc = -EIO;
    } else {
        /* RECV_STATUS_ON_CLIENT always completes, at the latest at the deadline */
        grpc_event ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            rc = -EIO;
    }

    if (rc == 0) {
        *status_code = (int)status;
        if (recv_bb && resp && resp_len)
            rc = copy_message(recv_bb, resp, resp_len);
        if (rc == 0 && details) {
            size_t n = GRPC_SLICE_LENGTH(status_details);
            *details = malloc(n + 1);
            if (*details) {
                memcpy(*details, GRPC_SLICE_START_PTR(status_details), n);
                (*details)[n] = '\0';
            } else {
                rc = -ENOMEM;
            }
        }
    }

    if (rc != 0 && resp && *resp) {
        free(*resp);
        *resp = NULL;
        if (resp_len)
            *resp_len = 0;
    }
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_byte_buffer_destroy(send_bb);
    grpc_slice_unref(status_details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    return rc;
}

/* ------------------------------------------------------------ streams */

enum { ST_MD_SEND, ST_MD_RECV, ST_SEND, ST_RECV, ST_CLOSE, ST_STATUS, ST_NTAGS };

struct gtc_stream {
    grpc_completion_queue *cq;
    grpc_call *call;
    int tags[ST_NTAGS];      /* addresses used as tags */
    int pending[ST_NTAGS];   /* op started, completion not yet plucked */
    int ok[ST_NTAGS];        /* success of the last plucked completion */
    grpc_metadata_array initial_md, trailing_md;
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_status_code status;
    grpc_slice status_details;
    int half_closed;
};

/* Wait for one pending op's completion. 0 (ok[] tells success),
 * -ETIMEDOUT (still pending). */
static int st_wait(gtc_stream_t *s, int kind, int timeout_ms)
{
    if (!s->pending[kind])
        return 0;
    gpr_timespec dl = timeout_ms < 0 ? gpr_inf_future(GPR_CLOCK_REALTIME)
                                     : gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                                    gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->tags[kind], dl, NULL);
    if (ev.type != GRPC_OP_COMPLETE)
        return -ETIMEDOUT;
    s->pending[kind] = 0;
    s->ok[kind] = ev.success;
    return 0;
}

static int st_start(gtc_stream_t *s, int kind, const grpc_op *ops, size_t n)
{
    if (grpc_call_start_batch(s->call, ops, n, &s->tags[kind], NULL) != GRPC_CALL_OK)
        return -EIO;
    s->pending[kind] = 1;
    return 0;
}

gtc_stream_t *gtc_stream_open(gtc_channel_t *ch, const char *method, int deadline_ms)
{
    if (!ch || !method || deadline_ms <= 0)
        return NULL;
    gtc_stream_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->status_details = grpc_empty_slice();
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
    grpc_slice mslice = grpc_slice_from_copied_string(method);
    s->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, mslice, NULL, deadline, NULL);
    grpc_slice_unref(mslice);

    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    int rc = st_start(s, ST_MD_SEND, &op, 1);
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_INITIAL_METADATA;
    op.data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    if (rc == 0)
        rc = st_start(s, ST_MD_RECV, &op, 1);
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    op.data.recv_status_on_client.status = &s->status;
    op.data.recv_status_on_client.status_details = &s->status_details;
    if (rc == 0)
        rc = st_start(s, ST_STATUS, &op, 1);
    if (rc != 0) {
        gtc_stream_close(s);
        return NULL;
    }
    return s;
}

int gtc_stream_send(gtc_stream_t *s, const uint8_t *msg, size_t len, int timeout_ms)
{
    if (!s || (len && !msg) || s->half_closed)
        return -EINVAL;
    if (st_wait(s, ST_SEND, timeout_ms) < 0)
        return -ETIMEDOUT;
    if (s->send_bb) {
        grpc_byte_buffer_destroy(s->send_bb);
        s->send_bb = NULL;
    }
    grpc_slice body = grpc_slice_from_copied_buffer((const char *)(msg ? msg : (const uint8_t *)""), len);
    s->send_bb = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->send_bb;
    if (st_start(s, ST_SEND, &op, 1) < 0)
        return -EIO;
    if (st_wait(s, ST_SEND, timeout_ms) < 0)
        return -ETIMEDOUT;
    return s->ok[ST_SEND] ? 0 : -EIO;
}

int gtc_stream_recv(gtc_stream_t *s, uint8_t **msg, size_t *len, int timeout_ms)
{
    if (!s || !msg || !len)
        return -EINVAL;
    *msg = NULL;
    *len = 0;
    if (!s->pending[ST_RECV]) {
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &s->recv_bb;
        if (st_start(s, ST_RECV, &op, 1) < 0)
            return -EIO;
    }
    if (st_wait(s, ST_RECV, timeout_ms) < 0)
        return -ETIMEDOUT;
    if (!s->ok[ST_RECV])
        return -EIO;
    if (!s->recv_bb)
        return 1; /* the server finished: no more messages */
    int rc = copy_message(s->recv_bb, msg, len);
    grpc_byte_buffer_destroy(s->recv_bb);
    s->recv_bb = NULL;
    return rc;
}

int gtc_stream_half_close(gtc_stream_t *s, int timeout_ms)
{
    if (!s)
        return -EINVAL;
    if (!s->half_closed) {
        /* one SEND-kind op at a time: let a pending message go first */
        if (st_wait(s, ST_SEND, timeout_ms) < 0)
            return -ETIMEDOUT;
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        if (st_start(s, ST_CLOSE, &op, 1) < 0)
            return -EIO;
        s->half_closed = 1;
    }
    if (st_wait(s, ST_CLOSE, timeout_ms) < 0)
        return -ETIMEDOUT;
    return s->ok[ST_CLOSE] ? 0 : -EIO;
}

int gtc_stream_status(gtc_stream_t *s, int timeout_ms, int *status_code, char **details)
{
    if (!s)
        return -EINVAL;
    if (details)
        *details = NULL;
    if (st_wait(s, ST_STATUS, timeout_ms) < 0)
        return -ETIMEDOUT;
    if (status_code)
        *status_code = (int)s->status;
    if (details) {
        size_t n = GRPC_SLICE_LENGTH(s->status_details);
        *details = malloc(n + 1);
        if (!*details)
            return -ENOMEM;
        memcpy(*details, GRPC_SLICE_START_PTR(s->status_details), n);
        (*details)[n] = '\0';
    }
    return 0;
}

void gtc_stream_cancel(gtc_stream_t *s)
{
    if (s && s->call)
        grpc_call_cancel(s->call, NULL);
}

void gtc_stream_close(gtc_stream_t *s)
{
    if (!s)
        return;
    if (s->call && s->pending[ST_STATUS])
        grpc_call_cancel(s->call, NULL);
    /* after a cancel every started op completes */
    for (int k = 0; k < ST_NTAGS; k++)
        st_wait(s, k, -1);
    if (s->recv_bb)
        grpc_byte_buffer_destroy(s->recv_bb);
    if (s->send_bb)
        grpc_byte_buffer_destroy(s->send_bb);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_slice_unref(s->status_details);
    if (s->call)
        grpc_call_unref(s->call);
    grpc_completion_queue_shutdown(s->cq);
    grpc_completion_queue_destroy(s->cq);
    free(s);
}

/*
 * grpc_client.c: see grpc_client.h. One pluck completion queue and one
 * batch per call; a call releases everything it made before returning.
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

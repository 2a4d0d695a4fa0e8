/*
 * test_ipc_frame.c: the IPC frame codec (ipc/frame.c): header layout and
 * validation, envelope packing, type names.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"

static void valid_header(uint8_t out[IPC_HEADER_SIZE], uint32_t length)
{
    ipc_header_t h = {
        .version = IPC_VERSION,
        .kind = IPC_KIND_REQUEST,
        .type = LODESTAR__ENVELOPE__BODY_PING_REQUEST,
        .length = length,
        .request_id = 7,
    };
    ipc_header_encode(&h, out);
}

static void expect_rejected(const uint8_t in[IPC_HEADER_SIZE], uint32_t max, const char *reason)
{
    ipc_header_t h;
    char err[128] = "";
    cr_assert_eq(ipc_header_decode(in, max, &h, err, sizeof err), -1, "header should be rejected with '%s'",
                 reason);
    cr_assert_str_eq(err, reason, "rejection reason");
}

Test(ipc_frame, header_layout_is_big_endian)
{
    ipc_header_t h = {
        .version = IPC_VERSION,
        .kind = IPC_KIND_RESPONSE,
        .type = 0x0102,
        .length = 0x03040506,
        .request_id = 0x0708090a0b0c0d0eULL,
    };
    uint8_t b[IPC_HEADER_SIZE];
    ipc_header_encode(&h, b);
    const uint8_t want[IPC_HEADER_SIZE] = {0x4c, 0x44, IPC_VERSION, IPC_KIND_RESPONSE, 0x01, 0x02, 0x00,
                                           0x00, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
                                           0x0b, 0x0c, 0x0d, 0x0e};
    for (size_t i = 0; i < IPC_HEADER_SIZE; i++)
        cr_assert_eq(b[i], want[i], "byte %zu: got 0x%02x, want 0x%02x", i, b[i], want[i]);
}

Test(ipc_frame, header_round_trip)
{
    ipc_header_t h = {
        .version = IPC_VERSION,
        .kind = IPC_KIND_PUSH,
        .type = LODESTAR__ENVELOPE__BODY_EVENT,
        .length = 1234,
        .request_id = UINT64_MAX - 1,
    };
    uint8_t b[IPC_HEADER_SIZE];
    ipc_header_encode(&h, b);
    ipc_header_t d;
    char err[128] = "";
    cr_assert_eq(ipc_header_decode(b, 4096, &d, err, sizeof err), 0, "decode failed: %s", err);
    cr_assert_eq(d.version, h.version, "version");
    cr_assert_eq(d.kind, h.kind, "kind");
    cr_assert_eq(d.type, h.type, "type");
    cr_assert_eq(d.length, h.length, "length");
    cr_assert_eq(d.request_id, h.request_id, "request id");
}

Test(ipc_frame, length_equal_to_maximum_is_accepted)
{
    uint8_t b[IPC_HEADER_SIZE];
    valid_header(b, 4096);
    ipc_header_t d;
    char err[128] = "";
    cr_assert_eq(ipc_header_decode(b, 4096, &d, err, sizeof err), 0, "a frame of exactly the maximum: %s", err);
    cr_assert_eq(d.length, 4096u, "length");
}

Test(ipc_frame, bad_magic_rejected)
{
    uint8_t b[IPC_HEADER_SIZE];
    valid_header(b, 10);
    b[0] = 'G';
    b[1] = 'E';
    expect_rejected(b, 4096, "bad magic 0x4745");
}

Test(ipc_frame, bad_version_rejected)
{
    uint8_t b[IPC_HEADER_SIZE];
    valid_header(b, 10);
    b[2] = 9;
    expect_rejected(b, 4096, "unsupported version 9");
}

Test(ipc_frame, bad_kind_rejected)
{
    uint8_t b[IPC_HEADER_SIZE];
    valid_header(b, 10);
    b[3] = 0;
    expect_rejected(b, 4096, "unknown kind 0");
    b[3] = 4;
    expect_rejected(b, 4096, "unknown kind 4");
}

Test(ipc_frame, nonzero_reserved_rejected)
{
    uint8_t b[IPC_HEADER_SIZE];
    valid_header(b, 10);
    b[7] = 1;
    expect_rejected(b, 4096, "reserved field is 0x0001, not 0");
}

Test(ipc_frame, oversized_length_rejected)
{
    uint8_t b[IPC_HEADER_SIZE];
    valid_header(b, 4097);
    expect_rejected(b, 4096, "frame of 4097 bytes exceeds the maximum of 4096");
}

Test(ipc_frame, zero_maximum_means_default)
{
    uint8_t b[IPC_HEADER_SIZE];
    valid_header(b, IPC_DEFAULT_MAX_FRAME);
    ipc_header_t d;
    char err[128] = "";
    cr_assert_eq(ipc_header_decode(b, 0, &d, err, sizeof err), 0, "default maximum accepted: %s", err);
    valid_header(b, IPC_DEFAULT_MAX_FRAME + 1);
    expect_rejected(b, 0, "frame of 16777217 bytes exceeds the maximum of 16777216");
}

Test(ipc_frame, envelope_round_trip)
{
    Lodestar__PingResponse pr = LODESTAR__PING_RESPONSE__INIT;
    pr.role = "naming";
    pr.store_ok = true;
    pr.detail = "fine";
    pr.store_rtt_us = 321;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_PING_RESPONSE;
    env.ping_response = &pr;

    uint8_t *buf = NULL;
    size_t len = 0;
    cr_assert_eq(ipc_frame_encode(IPC_KIND_RESPONSE, 42, &env, 0, &buf, &len), 0, "encode");
    cr_assert_eq(len, IPC_HEADER_SIZE + lodestar__envelope__get_packed_size(&env), "frame length");

    ipc_header_t h;
    char err[128] = "";
    cr_assert_eq(ipc_header_decode(buf, 0, &h, err, sizeof err), 0, "header: %s", err);
    cr_assert_eq(h.kind, IPC_KIND_RESPONSE, "kind");
    cr_assert_eq(h.type, LODESTAR__ENVELOPE__BODY_PING_RESPONSE, "type is the body case");
    cr_assert_eq(h.request_id, 42u, "request id");
    cr_assert_eq(h.length, len - IPC_HEADER_SIZE, "payload length");

    Lodestar__Envelope *d = lodestar__envelope__unpack(NULL, h.length, buf + IPC_HEADER_SIZE);
    cr_assert_not_null(d, "payload decodes");
    cr_assert_eq(d->body_case, LODESTAR__ENVELOPE__BODY_PING_RESPONSE, "body case");
    cr_assert_str_eq(d->ping_response->role, "naming", "role");
    cr_assert_eq(d->ping_response->store_ok, true, "store_ok");
    cr_assert_str_eq(d->ping_response->detail, "fine", "detail");
    cr_assert_eq(d->ping_response->store_rtt_us, 321u, "rtt");
    lodestar__envelope__free_unpacked(d, NULL);
    free(buf);
}

Test(ipc_frame, empty_envelope_encodes_to_header_only)
{
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    uint8_t *buf = NULL;
    size_t len = 0;
    cr_assert_eq(ipc_frame_encode(IPC_KIND_PUSH, 0, &env, 0, &buf, &len), 0, "encode");
    cr_assert_eq(len, IPC_HEADER_SIZE, "no payload for an empty envelope");
    free(buf);
}

Test(ipc_frame, encode_refuses_oversized_and_bad_kind)
{
    char big[200];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    Lodestar__Ready r = LODESTAR__READY__INIT;
    r.detail = big;
    Lodestar__Envelope env = LODESTAR__ENVELOPE__INIT;
    env.body_case = LODESTAR__ENVELOPE__BODY_READY;
    env.ready = &r;
    uint8_t *buf = NULL;
    size_t len = 0;
    cr_assert_eq(ipc_frame_encode(IPC_KIND_PUSH, 0, &env, 100, &buf, &len), -1, "200-byte envelope over 100");
    cr_assert_null(buf, "no buffer on failure");
    cr_assert_eq(ipc_frame_encode(9, 1, &env, 0, &buf, &len), -1, "kind 9 is refused");
    cr_assert_eq(ipc_frame_encode(IPC_KIND_PUSH, 0, &env, 1000, &buf, &len), 0, "fits in 1000");
    free(buf);
}

Test(ipc_frame, type_names)
{
    cr_assert_str_eq(ipc_type_name(LODESTAR__ENVELOPE__BODY_PING_REQUEST), "ping_request", "100");
    cr_assert_str_eq(ipc_type_name(LODESTAR__ENVELOPE__BODY_HELLO), "hello", "10");
    cr_assert_str_eq(ipc_type_name(LODESTAR__ENVELOPE__BODY_ERROR), "error", "1");
    cr_assert_str_eq(ipc_type_name(LODESTAR__ENVELOPE__BODY_SUBSCRIBE_ACK), "subscribe_ack", "111");
    cr_assert_str_eq(ipc_type_name(0), "empty", "0");
    cr_assert_str_eq(ipc_type_name(2), "unknown", "an unused number");
    cr_assert_str_eq(ipc_type_name(60000), "unknown", "out of range");
}

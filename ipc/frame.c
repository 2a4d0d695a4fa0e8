/*
 * frame.c: the IPC frame codec (see ipc.h for the header layout).
 *
 * Owns the byte layout of the 20-byte header and the packing of one
 * Envelope behind it. Rules kept here:
 *  - every multi-byte header field is big-endian, written and read byte by
 *    byte (no casts of unaligned buffers, no host-order assumptions);
 *  - a header is accepted only with the right magic and version, a known
 *    kind, a zero reserved field and a length within the caller's maximum;
 *    the rejection reason names the offending value;
 *  - a max_frame of 0 means IPC_DEFAULT_MAX_FRAME everywhere.
 * No I/O and no logging: callers decide what a bad frame means.
 */
#include "ipc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
    return ((uint64_t)get_u32(p) << 32) | get_u32(p + 4);
}

void ipc_header_encode(const ipc_header_t *h, uint8_t out[IPC_HEADER_SIZE])
{
    put_u16(out + 0, IPC_MAGIC);
    out[2] = h->version;
    out[3] = h->kind;
    put_u16(out + 4, h->type);
    put_u16(out + 6, 0);
    put_u32(out + 8, h->length);
    put_u64(out + 12, h->request_id);
}

int ipc_header_decode(const uint8_t in[IPC_HEADER_SIZE], uint32_t max_frame, ipc_header_t *h, char *err,
                      size_t errlen)
{
    if (max_frame == 0)
        max_frame = IPC_DEFAULT_MAX_FRAME;
    uint16_t magic = get_u16(in + 0);
    uint16_t reserved = get_u16(in + 6);
    uint32_t length = get_u32(in + 8);

    if (magic != IPC_MAGIC) {
        snprintf(err, errlen, "bad magic 0x%04x", magic);
        return -1;
    }
    if (in[2] != IPC_VERSION) {
        snprintf(err, errlen, "unsupported version %u", in[2]);
        return -1;
    }
    if (in[3] < IPC_KIND_REQUEST || in[3] > IPC_KIND_PUSH) {
        snprintf(err, errlen, "unknown kind %u", in[3]);
        return -1;
    }
    if (reserved != 0) {
        snprintf(err, errlen, "reserved field is 0x%04x, not 0", reserved);
        return -1;
    }
    if (length > max_frame) {
        snprintf(err, errlen, "frame of %u bytes exceeds the maximum of %u", length, max_frame);
        return -1;
    }
    h->version = in[2];
    h->kind = in[3];
    h->type = get_u16(in + 4);
    h->length = length;
    h->request_id = get_u64(in + 12);
    return 0;
}

int ipc_frame_encode(uint8_t kind, uint64_t request_id, const Lodestar__Envelope *env, uint32_t max_frame,
                     uint8_t **out, size_t *outlen)
{
    if (max_frame == 0)
        max_frame = IPC_DEFAULT_MAX_FRAME;
    if (kind < IPC_KIND_REQUEST || kind > IPC_KIND_PUSH)
        return -1;
    size_t plen = lodestar__envelope__get_packed_size(env);
    if (plen > max_frame)
        return -1;
    uint8_t *buf = malloc(IPC_HEADER_SIZE + plen);
    if (!buf)
        return -1;
    ipc_header_t h = {
        .version = IPC_VERSION,
        .kind = kind,
        .type = (uint16_t)env->body_case,
        .length = (uint32_t)plen,
        .request_id = request_id,
    };
    ipc_header_encode(&h, buf);
    size_t packed = lodestar__envelope__pack(env, buf + IPC_HEADER_SIZE);
    if (packed != plen) {
        free(buf);
        return -1;
    }
    *out = buf;
    *outlen = IPC_HEADER_SIZE + plen;
    return 0;
}

/* The names come from the generated descriptor, so a body case added to
 * ipc.proto is named here without touching this file. */
const char *ipc_type_name(uint32_t type)
{
    if (type == 0)
        return "empty";
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&lodestar__envelope__descriptor, (unsigned)type);
    return f ? f->name : "unknown";
}

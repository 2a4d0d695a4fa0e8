/*
 * pbjson: protobuf-c messages <-> the proto3 JSON mapping.
 *
 * One generic converter for every HTTP gateway, driven only by protobuf-c
 * descriptors (no per-message code) plus a type table generated at build
 * time from the compiled protos (proto/CMakeLists.txt): the list of message
 * descriptors (for google.protobuf.Any "@type" look-ups) and, from the
 * protos' FileDescriptorSet, each field's json_name and which messages are
 * map entries.
 *
 * Rules kept (https://protobuf.dev/programming-guides/proto3/#json):
 *  - Output names are the field's json_name (lowerCamelCase unless the proto
 *    sets json_name, as Polaris does for e.g. "vpc_id"), or the proto field
 *    name with PBJSON_ORIGINAL_NAMES. Input accepts the json_name, the proto
 *    field name and its lowerCamelCase form ("enable_health_check" and
 *    "enableHealthCheck").
 *  - google.protobuf wrappers map to their bare value; 64-bit integers are
 *    written as strings and read from strings or numbers; enums are written
 *    by name and read by name or number; bytes are base64; maps are objects;
 *    float/double NaN and infinities are the strings "NaN", "Infinity",
 *    "-Infinity"; google.protobuf.Any is {"@type": "type.googleapis.com/
 *    <full name>", ...fields} for types in the table (pbjson_find_type).
 *  - Default values are omitted on output unless PBJSON_EMIT_DEFAULTS, which
 *    writes every field: unset message fields as null, scalars as their
 *    default, empty repeated fields as [] and empty maps as {}.
 *  - JSON null for a field leaves it unset. Unknown field names are errors
 *    unless PBJSON_IGNORE_UNKNOWN (which also skips unknown enum names).
 *  - Errors name the field path and the reason, e.g.
 *    `instance.port: expected an unsigned 32-bit integer, got "abc"`; bad
 *    JSON reports jansson's line and column. Nothing leaks on error.
 *  - Nesting deeper than PBJSON_MAX_DEPTH messages is refused both ways.
 *
 * Known limits: integers above 2^63-1 must be quoted (jansson refuses larger
 * bare numbers); floating-point output uses jansson's 17-significant-digit
 * form (0.1 is written 0.10000000000000001, which reads back exactly);
 * google.protobuf.Duration, Timestamp, Struct and FieldMask have no special
 * mapping (they are not compiled into lodestar_proto).
 *
 * Return values: 0, or -EINVAL (bad input, message names the cause) or
 * -ENOMEM. Thread-safe: the type table is built once, on first use.
 */
#ifndef LODESTAR_PBJSON_H
#define LODESTAR_PBJSON_H

#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

enum {
    PBJSON_EMIT_DEFAULTS = 1 << 0,  /* output: write fields at their default */
    PBJSON_ORIGINAL_NAMES = 1 << 1, /* output: proto field names (snake_case) */
    PBJSON_IGNORE_UNKNOWN = 1 << 2, /* input: skip unknown fields and enum names */
    PBJSON_INDENT = 1 << 3,         /* pbjson_encode: indented, not compact */
};

#define PBJSON_MAX_DEPTH 100

/*
 * Encodes msg as JSON text. *out is NUL-terminated, malloc'ed (free() it);
 * *len (if len is not NULL) is its length.
 */
int pbjson_encode(const ProtobufCMessage *msg, int flags, char **out, size_t *len,
                  char *err, size_t errlen);

/*
 * Decodes JSON text (len bytes, need not be NUL-terminated) into a new
 * message of type desc, allocated entirely from alloc (NULL: malloc). Free
 * it with protobuf_c_message_free_unpacked(*out, alloc).
 */
int pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                  int flags, ProtobufCAllocator *alloc, ProtobufCMessage **out,
                  char *err, size_t errlen);

/*
 * Decodes a JSON array of messages of type desc (the body of Polaris batch
 * calls). *out is an array of *n messages; error paths start with the
 * element index ("[2].port: ..."). Free with pbjson_free_array().
 */
int pbjson_decode_array(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                        int flags, ProtobufCAllocator *alloc, ProtobufCMessage ***out,
                        size_t *n, char *err, size_t errlen);
void pbjson_free_array(ProtobufCMessage **msgs, size_t n, ProtobufCAllocator *alloc);

/* jansson-level forms, for gateways that assemble larger documents. */
json_t *pbjson_to_json(const ProtobufCMessage *msg, int flags, char *err, size_t errlen);
int pbjson_from_json(const ProtobufCMessageDescriptor *desc, json_t *json, int flags,
                     ProtobufCAllocator *alloc, ProtobufCMessage **out,
                     char *err, size_t errlen);

/*
 * The descriptor of a message compiled into lodestar_proto, by full name
 * ("v1.Instance") or type URL ("type.googleapis.com/v1.Instance"); NULL if
 * unknown.
 */
const ProtobufCMessageDescriptor *pbjson_find_type(const char *name);

#endif

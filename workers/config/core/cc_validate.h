/*
 * cc_validate.h: checks of the config centre's input, shared by the config
 * worker (the authority) and any gateway that wants to refuse bad input
 * early. Pure functions: no I/O, no global state besides libxml2's parser
 * initialisation.
 *
 * Rules:
 *  - Names follow Polaris: namespace and group [0-9A-Za-z-.:_]+, file names
 *    [0-9A-Za-z-./:_]+ (so "a/b/app.yaml" is a file name); namespace at most
 *    64 bytes, group, file and release names at most 128.
 *  - Formats: text (the default), json, yaml, xml, properties, html.
 *  - Content is UTF-8 without NUL bytes, at most a configured number of
 *    bytes, and for json, yaml, xml and properties it must parse as that
 *    format; text and html are taken as they are.
 *  - Every failure writes one line into err naming the input and the
 *    reason; content errors say "line L, column C: reason" with 1-based
 *    line and column as the parser reports them.
 */
#ifndef LODESTAR_CC_VALIDATE_H
#define LODESTAR_CC_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#define CC_MAX_NAMESPACE_LEN 64
#define CC_MAX_NAME_LEN 128
#define CC_MAX_COMMENT_LEN 1024
#define CC_MD5_HEX_LEN 32

typedef enum cc_format {
    CC_FMT_TEXT = 0,
    CC_FMT_JSON,
    CC_FMT_YAML,
    CC_FMT_XML,
    CC_FMT_PROPERTIES,
    CC_FMT_HTML,
} cc_format_t;

/* "json" -> CC_FMT_JSON; NULL or "" -> CC_FMT_TEXT; matching ignores case.
 * Returns the format, or -EINVAL for an unknown name. */
int cc_format_parse(const char *name);
/* Canonical lower-case name of a format. */
const char *cc_format_name(cc_format_t f);

/* Names. `what` labels the input in err ("namespace", "group", "file name").
 * Return 0 or -EINVAL. */
int cc_check_resource_name(const char *what, const char *name, size_t max_len, char *err, size_t errlen);
int cc_check_file_name(const char *name, char *err, size_t errlen);
/* A release name: 1..128 bytes of UTF-8 without control characters. */
int cc_check_release_name(const char *name, char *err, size_t errlen);

/* UTF-8 without NUL bytes. On failure *bad_offset is the byte offset of the
 * first bad byte. */
bool cc_utf8_valid(const char *buf, size_t len, size_t *bad_offset);

/* Content against its format. Return 0, or -EINVAL with err like
 *   "line 3, column 7: '}' expected near ']'" */
int cc_validate_content(cc_format_t fmt, const char *buf, size_t len, char *err, size_t errlen);
int cc_validate_json(const char *buf, size_t len, char *err, size_t errlen);
int cc_validate_yaml(const char *buf, size_t len, char *err, size_t errlen);
int cc_validate_xml(const char *buf, size_t len, char *err, size_t errlen);
int cc_validate_properties(const char *buf, size_t len, char *err, size_t errlen);

/* Lowercase hex MD5 of the bytes (what Polaris, Nacos and our releases
 * call md5). out holds CC_MD5_HEX_LEN + 1 bytes. Returns 0, or -EIO when
 * OpenSSL fails. */
int cc_md5_hex(const void *buf, size_t len, char out[CC_MD5_HEX_LEN + 1]);

/* Free libxml2's global parser state (at process exit). */
void cc_validate_cleanup(void);

#endif

/*
 * cc_validate.c: names, formats and content of the config centre (see
 * cc_validate.h). JSON goes through jansson, YAML through libyaml, XML
 * through libxml2 (well-formedness only: no DTD loading, no network, no
 * entity substitution); .properties files follow java.util.Properties.
 */
#include "cc_validate.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>
#include <openssl/evp.h>
#include <yaml.h>

static const char *const format_names[] = {
    [CC_FMT_TEXT] = "text", [CC_FMT_JSON] = "json",
    [CC_FMT_YAML] = "yaml", [CC_FMT_XML] = "xml",
    [CC_FMT_PROPERTIES] = "properties", [CC_FMT_HTML] = "html",
};
#define N_FORMATS (sizeof format_names / sizeof format_names[0])

int cc_format_parse(const char *name)
{
    if (!name || !*name)
        return CC_FMT_TEXT;
    for (size_t i = 0; i < N_FORMATS; i++)
        if (strcasecmp(name, format_names[i]) == 0)
            return (int)i;
    return -EINVAL;
}

const char *cc_format_name(cc_format_t f)
{
    return (size_t)f < N_FORMATS ? format_names[f] : "text";
}

/* ---- names ---- */

static bool name_char(unsigned char c, bool slash)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.' ||
           c == ':' || c == '_' || (slash && c == '/');
}

static int check_name(const char *what, const char *name, size_t max_len, bool slash, char *err, size_t errlen)
{
    if (!name || !*name) {
        snprintf(err, errlen, "%s is empty", what);
        return -EINVAL;
    }
    size_t len = strlen(name);
    if (len > max_len) {
        snprintf(err, errlen, "%s is %zu bytes long; at most %zu are allowed", what, len, max_len);
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!name_char(c, slash)) {
            if (c >= 0x20 && c < 0x7f)
                snprintf(err, errlen, "%s \"%s\" holds '%c' at offset %zu; allowed are letters, digits and %s", what,
                         name, c, i, slash ? "'-', '.', '/', ':', '_'" : "'-', '.', ':', '_'");
            else
                snprintf(err, errlen, "%s holds byte 0x%02x at offset %zu; allowed are letters, digits and %s", what,
                         c, i, slash ? "'-', '.', '/', ':', '_'" : "'-', '.', ':', '_'");
            return -EINVAL;
        }
    }
    return 0;
}

int cc_check_resource_name(const char *what, const char *name, size_t max_len, char *err, size_t errlen)
{
    return check_name(what, name, max_len, false, err, errlen);
}

int cc_check_file_name(const char *name, char *err, size_t errlen)
{
    return check_name("file name", name, CC_MAX_NAME_LEN, true, err, errlen);
}

int cc_check_release_name(const char *name, char *err, size_t errlen)
{
    if (!name || !*name) {
        snprintf(err, errlen, "release name is empty");
        return -EINVAL;
    }
    size_t len = strlen(name), bad;
    if (len > CC_MAX_NAME_LEN) {
        snprintf(err, errlen, "release name is %zu bytes long; at most %d are allowed", len, CC_MAX_NAME_LEN);
        return -EINVAL;
    }
    if (!cc_utf8_valid(name, len, &bad)) {
        snprintf(err, errlen, "release name is not valid UTF-8 (byte %zu)", bad);
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) {
            snprintf(err, errlen, "release name holds control character 0x%02x at offset %zu",
                     (unsigned char)name[i], i);
            return -EINVAL;
        }
    return 0;
}

/* ---- UTF-8 ---- */

bool cc_utf8_valid(const char *buf, size_t len, size_t *bad_offset)
{
    const unsigned char *s = (const unsigned char *)buf;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c == 0)
            goto bad;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            goto bad;
        }
        if (len - i <= n)
            goto bad;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                goto bad;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            goto bad;
        i += n + 1;
    }
    return true;
bad:
    if (bad_offset)
        *bad_offset = i;
    return false;
}

/* ---- JSON ---- */

int cc_validate_json(const char *buf, size_t len, char *err, size_t errlen)
{
    json_error_t e;
    json_t *j = json_loadb(buf, len, JSON_DECODE_ANY, &e);
    if (j) {
        json_decref(j);
        return 0;
    }
    /* jansson says column 0 for an error before the first character */
    snprintf(err, errlen, "line %d, column %d: %s", e.line > 0 ? e.line : 1, e.column > 0 ? e.column : 1, e.text);
    return -EINVAL;
}

/* ---- YAML ---- */

int cc_validate_yaml(const char *buf, size_t len, char *err, size_t errlen)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        snprintf(err, errlen, "cannot initialise the YAML parser (out of memory)");
        return -ENOMEM;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    int rc = 0;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            if (p.error == YAML_MEMORY_ERROR) {
                snprintf(err, errlen, "out of memory while parsing YAML");
                rc = -ENOMEM;
                break;
            }
            char ctx[256] = "";
            if (p.context)
                snprintf(ctx, sizeof ctx, " (%s at line %zu, column %zu)", p.context, p.context_mark.line + 1,
                         p.context_mark.column + 1);
            snprintf(err, errlen, "line %zu, column %zu: %s%s", p.problem_mark.line + 1, p.problem_mark.column + 1,
                     p.problem ? p.problem : "syntax error", ctx);
            rc = -EINVAL;
            break;
        }
        bool end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (end)
            break;
    }
    yaml_parser_delete(&p);
    return rc;
}

/* ---- XML ---- */

/* libxml2 reports every error through these; the first one is kept (later
 * ones are usually consequences of it) and nothing is printed. */
typedef struct xml_first {
    bool set;
    int line, col;
    char msg[400];
} xml_first_t;

static void xml_silent(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

static void xml_capture(void *ctx, xmlErrorPtr e)
{
    xml_first_t *f = ctx;
    if (!f || f->set || !e || e->level < XML_ERR_ERROR)
        return;
    f->set = true;
    f->line = e->line > 0 ? e->line : 1;
    f->col = e->int2 > 0 ? e->int2 : 1;
    snprintf(f->msg, sizeof f->msg, "%s", e->message ? e->message : "not well-formed");
    size_t ml = strlen(f->msg);
    while (ml && (f->msg[ml - 1] == '\n' || f->msg[ml - 1] == ' '))
        f->msg[--ml] = '\0';
}

int cc_validate_xml(const char *buf, size_t len, char *err, size_t errlen)
{
    static bool initialised;
    if (!initialised) {
        xmlInitParser();
        initialised = true;
    }
    if (len > (size_t)INT32_MAX) {
        snprintf(err, errlen, "XML content of %zu bytes is too large", len);
        return -EINVAL;
    }
    xml_first_t first = {0};
    xmlSetGenericErrorFunc(NULL, xml_silent);
    xmlSetStructuredErrorFunc(&first, xml_capture);
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        xmlSetGenericErrorFunc(NULL, NULL);
        xmlSetStructuredErrorFunc(NULL, NULL);
        snprintf(err, errlen, "cannot create the XML parser (out of memory)");
        return -ENOMEM;
    }
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, buf, (int)len, "content.xml", NULL, XML_PARSE_NONET);
    int rc = 0;
    if (!doc || !ctxt->wellFormed) {
        if (first.set) {
            snprintf(err, errlen, "line %d, column %d: %s", first.line, first.col, first.msg);
        } else {
            const xmlError *e = xmlCtxtGetLastError(ctxt);
            snprintf(err, errlen, "line %d, column %d: %s", e && e->line > 0 ? e->line : 1,
                     e && e->int2 > 0 ? e->int2 : 1, e && e->message ? e->message : "not well-formed XML");
            size_t el = strlen(err);
            while (el && (err[el - 1] == '\n' || err[el - 1] == ' '))
                err[--el] = '\0';
        }
        rc = -EINVAL;
    }
    if (doc)
        xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    xmlSetGenericErrorFunc(NULL, NULL);
    xmlSetStructuredErrorFunc(NULL, NULL);
    return rc;
}

void cc_validate_cleanup(void) { xmlCleanupParser(); }

/* ---- .properties (java.util.Properties.load) ----
 *
 * A natural line ends at \n, \r or \r\n. Leading blanks (space, tab, form
 * feed) are skipped; an empty line, or one whose first character is '#' or
 * '!', is skipped whole (a comment never continues). A line ending in an odd
 * number of backslashes continues on the next natural line, whose leading
 * blanks are skipped too. In the joined logical line '\' escapes the next
 * character, and "\uXXXX" needs exactly four hexadecimal digits: anything
 * else is Java's "Malformed \uxxxx encoding", reported here with the natural
 * line and column of its backslash. */

typedef struct prop_pos {
    unsigned line, col;
} prop_pos_t;

static bool prop_blank(char c) { return c == ' ' || c == '\t' || c == '\f'; }

static bool hexdig(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Check the escapes of one logical line. */
static int prop_check_logical(const char *s, const prop_pos_t *pos, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\')
            continue;
        if (i + 1 >= n)
            return 0; /* a lone trailing backslash is dropped */
        if (s[i + 1] == 'u') {
            size_t k = 0;
            while (k < 4 && i + 2 + k < n && hexdig(s[i + 2 + k]))
                k++;
            if (k < 4) {
                char seen[8] = "";
                size_t m = 0;
                for (size_t j = i + 2; j < n && j < i + 6 && m < 4; j++)
                    if ((unsigned char)s[j] >= 0x20 && (unsigned char)s[j] < 0x7f)
                        seen[m++] = s[j];
                seen[m] = '\0';
                snprintf(err, errlen, "line %u, column %u: malformed \\uxxxx encoding (\\u%s): four hexadecimal "
                         "digits must follow \\u", pos[i].line, pos[i].col, seen);
                return -EINVAL;
            }
            i += 5;
        } else {
            i++;
        }
    }
    return 0;
}

int cc_validate_properties(const char *buf, size_t len, char *err, size_t errlen)
{
    char *lb = malloc(len + 1);
    prop_pos_t *pos = malloc((len + 1) * sizeof *pos);
    if (!lb || !pos) {
        free(lb);
        free(pos);
        snprintf(err, errlen, "out of memory while checking properties");
        return -ENOMEM;
    }
    size_t i = 0, n = 0;
    unsigned line = 1;
    bool cont = false; /* the logical line continues on this natural line */
    int rc = 0;
    while (i < len && rc == 0) {
        /* one natural line: [i, e) then its terminator */
        size_t e = i;
        while (e < len && buf[e] != '\n' && buf[e] != '\r')
            e++;
        size_t next = e;
        if (next < len) {
            if (buf[next] == '\r' && next + 1 < len && buf[next + 1] == '\n')
                next += 2;
            else
                next++;
        }
        size_t s = i;
        while (s < e && prop_blank(buf[s]))
            s++;
        if (!cont && (s == e || buf[s] == '#' || buf[s] == '!')) {
            i = next;
            line++;
            continue;
        }
        size_t bs = 0;
        for (size_t k = e; k > s && buf[k - 1] == '\\'; k--)
            bs++;
        size_t end = bs % 2 ? e - 1 : e;
        for (size_t k = s; k < end; k++) {
            lb[n] = buf[k];
            pos[n].line = line;
            pos[n].col = (unsigned)(k - i + 1);
            n++;
        }
        cont = bs % 2 == 1;
        if (!cont || next >= len) {
            rc = prop_check_logical(lb, pos, n, err, errlen);
            n = 0;
            cont = false;
        }
        i = next;
        line++;
    }
    if (rc == 0 && n > 0)
        rc = prop_check_logical(lb, pos, n, err, errlen);
    free(lb);
    free(pos);
    return rc;
}

/* ---- dispatch ---- */

int cc_validate_content(cc_format_t fmt, const char *buf, size_t len, char *err, size_t errlen)
{
    switch (fmt) {
    case CC_FMT_JSON: return cc_validate_json(buf, len, err, errlen);
    case CC_FMT_YAML: return cc_validate_yaml(buf, len, err, errlen);
    case CC_FMT_XML: return cc_validate_xml(buf, len, err, errlen);
    case CC_FMT_PROPERTIES: return cc_validate_properties(buf, len, err, errlen);
    case CC_FMT_TEXT:
    case CC_FMT_HTML: return 0;
    }
    snprintf(err, errlen, "unknown format %d", (int)fmt);
    return -EINVAL;
}

/* ---- MD5 ---- */

int cc_md5_hex(const void *buf, size_t len, char out[CC_MD5_HEX_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(buf, len, md, &mdlen, EVP_md5(), NULL) != 1 || mdlen != 16) {
        out[0] = '\0';
        return -EIO;
    }
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[CC_MD5_HEX_LEN] = '\0';
    return 0;
}

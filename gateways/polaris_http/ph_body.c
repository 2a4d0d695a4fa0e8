/*
 * ph_body.c: the input guard under every HTTP connection of the
 * polaris-http gateway. It bounds request heads and bodies before evhttp
 * sees them, so that an oversized or malformed request is answered with a
 * JSON 400 by the router instead of evhttp's HTML error page or a reset.
 *
 * libevent 2.1 offers no per-request hook before the body is read, so the
 * gateway creates each connection's socket bufferevent itself
 * (evhttp_set_bevcb) and watches its input buffer: every run of bytes read
 * from the socket is taken out of the buffer (evbuffer callback, run inside
 * the read) and replaced by what this file lets through, after the bytes
 * evhttp has not consumed yet. The output side is untouched, so evhttp
 * still learns that an answer was written only once the kernel has it.
 * What passes, per request:
 *  - the head (request line and headers) must end within PH_MAX_HEADERS
 *    bytes and have a well-formed request line and header lines;
 *  - a body with Content-Length up to PH_MAX_BODY passes through as is;
 *    a larger one is read and dropped as it arrives, and once it is all
 *    read evhttp gets the head with "Content-Length: 0" and the
 *    PH_REJECT_HEADER marker: the client is answered only after it sent
 *    everything (answering earlier and closing would reset it), and the
 *    connection stays usable;
 *  - a chunked body is decoded here and handed on with a Content-Length
 *    (evhttp never sees chunked framing); past PH_MAX_BODY the rest is
 *    dropped and the head is marked as above;
 *  - methods that carry no body in evhttp (GET, HEAD, DELETE, ...) have any
 *    body dropped; POST/PUT/PATCH without framing get "Content-Length: 0",
 *    which evhttp otherwise refuses when a Connection header is present;
 *  - a head that cannot be framed (too long, malformed, bad
 *    Content-Length, broken chunked encoding) is marked, sent with
 *    "Connection: close", and everything after it on that connection is
 *    dropped.
 * The marker header is removed from every incoming head, so only this file
 * can set it. Memory per connection stays bounded by the two limits. The
 * per-connection state is allocated when the first bytes arrive and freed
 * by the connection's close callback.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "log.h"
#include "ph.h"

#define PHB_MAX_CHUNK_LINE 1024

typedef enum phb_stage {
    PHB_HEAD,       /* waiting for a request head */
    PHB_PASS,       /* moving `left` body bytes to evhttp */
    PHB_DISCARD,    /* dropping `left` body bytes */
    PHB_CHUNK_SIZE, /* chunked: reading a chunk-size line */
    PHB_CHUNK_DATA, /* chunked: `left` bytes of chunk data */
    PHB_CHUNK_END,  /* chunked: the CRLF after chunk data */
    PHB_TRAILER,    /* chunked: trailer lines up to the empty one */
    PHB_SINK,       /* framing lost: drop everything */
} phb_stage_t;

typedef struct phb {
    struct bufferevent *bev;          /* the connection's socket bufferevent */
    struct evbuffer_cb_entry *entry;  /* phb_on_input on its input buffer */
    struct evbuffer *raw;             /* bytes read but not yet framed */
    struct evbuffer *front;           /* scratch: what evhttp gets, in order */
    bool busy;
    phb_stage_t stage;
    uint64_t left;              /* PASS, DISCARD, CHUNK_DATA: bytes to go */
    struct evbuffer *held_head; /* a head held back until its body is read */
    /* chunked requests */
    struct evbuffer *held_conn; /* the request's Connection header lines */
    struct evbuffer *body;      /* decoded body so far (when kept) */
    bool keep;                  /* the method carries a body to evhttp */
    bool too_large;             /* past PH_MAX_BODY: dropping the rest */
    uint64_t seen;              /* body bytes so far */
} phb_t;

/* ------------------------------------------------------------ head parsing */

typedef struct phb_line {
    const char *p;
    size_t len; /* without the line ending */
} phb_line_t;

typedef struct phb_head {
    phb_line_t request;
    phb_line_t *lines; /* header lines (continuations are separate entries) */
    size_t n;
    bool *drop;        /* per line: leave it out of the head evhttp gets */
    bool *is_conn;     /* per line: part of a Connection header */
    char method[16];
    const char *cl;    /* first Content-Length value (trimmed), or NULL */
    size_t cl_len;
    bool chunked;      /* first Transfer-Encoding is "chunked" */
    bool request_ok;   /* the request line parsed */
} phb_head_t;

static bool phb_method_has_body(const char *m)
{
    return !strcmp(m, "POST") || !strcmp(m, "PUT") || !strcmp(m, "PATCH");
}

static bool phb_method_known(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(m, known[i]))
            return true;
    return false;
}

/* "METHOD SP target SP HTTP/d.d" with a known method. */
static bool phb_parse_request_line(phb_head_t *h, char *why, size_t whylen)
{
    const char *p = h->request.p, *end = p + h->request.len;
    const char *sp1 = memchr(p, ' ', h->request.len);
    if (!sp1 || sp1 == p || (size_t)(sp1 - p) >= sizeof h->method) {
        snprintf(why, whylen, "malformed request line");
        return false;
    }
    memcpy(h->method, p, (size_t)(sp1 - p));
    h->method[sp1 - p] = '\0';
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(end - target));
    if (!sp2 || sp2 == target) {
        snprintf(why, whylen, "malformed request line");
        return false;
    }
    /* the target must parse the way evhttp will parse it */
    size_t tlen = (size_t)(sp2 - target);
    char tbuf[PH_MAX_HEADERS + 1];
    memcpy(tbuf, target, tlen);
    tbuf[tlen] = '\0';
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(tbuf, EVHTTP_URI_NONCONFORMANT);
    if (!u) {
        snprintf(why, whylen, "malformed request target");
        return false;
    }
    evhttp_uri_free(u);
    const char *ver = sp2 + 1;
    size_t vlen = (size_t)(end - ver);
    if (vlen != 8 || memcmp(ver, "HTTP/", 5) != 0 || !isdigit((unsigned char)ver[5]) || ver[6] != '.' ||
        !isdigit((unsigned char)ver[7]) || ver[5] > '1') {
        snprintf(why, whylen, "malformed request line (unsupported HTTP version)");
        return false;
    }
    for (const char *m = h->method; *m; m++)
        if (*m < 'A' || *m > 'Z') {
            snprintf(why, whylen, "malformed request line");
            return false;
        }
    if (!phb_method_known(h->method)) {
        snprintf(why, whylen, "method %s is not supported", h->method);
        return false;
    }
    return true;
}

static bool phb_name_is(const phb_line_t *l, size_t name_len, const char *name)
{
    return name_len == strlen(name) && strncasecmp(l->p, name, name_len) == 0;
}

/* The value of header line l (after "name:"), trimmed like evhttp does. */
static void phb_value(const phb_line_t *l, size_t name_len, const char **v, size_t *vlen)
{
    const char *p = l->p + name_len + 1, *e = l->p + l->len;
    while (p < e && *p == ' ')
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *v = p;
    *vlen = (size_t)(e - p);
}

/* Splits text[0..len) (ending with the empty line) into the request line
 * and header lines and finds the framing headers. */
static bool phb_parse_head(phb_head_t *h, const char *text, size_t len, char *why, size_t whylen)
{
    size_t cap = 0;
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\n')
            cap++;
    h->lines = calloc(cap ? cap : 1, sizeof *h->lines);
    h->drop = calloc(cap ? cap : 1, sizeof *h->drop);
    h->is_conn = calloc(cap ? cap : 1, sizeof *h->is_conn);
    if (!h->lines || !h->drop || !h->is_conn) {
        snprintf(why, whylen, "out of memory");
        return false;
    }
    const char *p = text, *end = text + len;
    bool first = true, prev_drop = false, prev_conn = false, seen_cl = false, seen_te = false;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        size_t l = (size_t)(nl - p);
        if (l && p[l - 1] == '\r')
            l--;
        phb_line_t line = {p, l};
        p = nl + 1;
        if (l == 0)
            break; /* the empty line ending the head */
        if (first) {
            h->request = line;
            first = false;
            if (!phb_parse_request_line(h, why, whylen))
                return false;
            h->request_ok = true;
            continue;
        }
        size_t i = h->n++;
        h->lines[i] = line;
        if (line.p[0] == ' ' || line.p[0] == '\t') { /* continuation of the previous header */
            if (i == 0) {
                snprintf(why, whylen, "malformed header line");
                return false;
            }
            h->drop[i] = prev_drop;
            h->is_conn[i] = prev_conn;
            continue;
        }
        const char *colon = memchr(line.p, ':', line.len);
        if (!colon || colon == line.p) {
            snprintf(why, whylen, "malformed header line");
            return false;
        }
        size_t nlen = (size_t)(colon - line.p);
        const char *v;
        size_t vlen;
        phb_value(&line, nlen, &v, &vlen);
        prev_drop = prev_conn = false;
        if (phb_name_is(&line, nlen, PH_REJECT_HEADER)) {
            prev_drop = true;
        } else if (phb_name_is(&line, nlen, "Content-Length")) {
            if (!seen_cl) {
                h->cl = v;
                h->cl_len = vlen;
                seen_cl = true;
            }
        } else if (phb_name_is(&line, nlen, "Transfer-Encoding")) {
            if (!seen_te) {
                h->chunked = vlen == 7 && strncasecmp(v, "chunked", 7) == 0;
                seen_te = true;
            }
        } else if (phb_name_is(&line, nlen, "Connection")) {
            prev_conn = true;
        } else if (phb_name_is(&line, nlen, "Expect") && !(vlen == 12 && strncasecmp(v, "100-continue", 12) == 0)) {
            snprintf(why, whylen, "Expect \"%.*s\" is not supported", (int)(vlen > 40 ? 40 : vlen), v);
            return false; /* evhttp would answer 417 in HTML */
        }
        h->drop[i] = prev_drop;
        h->is_conn[i] = prev_conn;
    }
    return true;
}

static void phb_head_free(phb_head_t *h)
{
    free(h->lines);
    free(h->drop);
    free(h->is_conn);
}

/* Appends the request line and the headers evhttp should see: all but
 * dropped ones, framing headers when `strip_framing`, Connection headers
 * when `strip_conn` (they go to `conn` instead when it is set). */
static void phb_emit_head(struct evbuffer *out, const phb_head_t *h, bool strip_framing, bool strip_conn,
                          struct evbuffer *conn)
{
    evbuffer_add(out, h->request.p, h->request.len);
    evbuffer_add(out, "\r\n", 2);
    bool framing = false;
    for (size_t i = 0; i < h->n; i++) {
        const phb_line_t *l = &h->lines[i];
        if (l->p[0] != ' ' && l->p[0] != '\t') {
            const char *colon = memchr(l->p, ':', l->len);
            size_t nlen = (size_t)(colon - l->p);
            framing = phb_name_is(l, nlen, "Content-Length") || phb_name_is(l, nlen, "Transfer-Encoding");
        }
        if (h->drop[i] || (strip_framing && framing))
            continue;
        if (h->is_conn[i] && (strip_conn || conn)) {
            if (conn && !strip_conn) {
                evbuffer_add(conn, l->p, l->len);
                evbuffer_add(conn, "\r\n", 2);
            }
            continue;
        }
        evbuffer_add(out, l->p, l->len);
        evbuffer_add(out, "\r\n", 2);
    }
}

static void phb_add_reject(struct evbuffer *out, bool body_method, bool close, const char *why)
{
    if (body_method)
        evbuffer_add_printf(out, "Content-Length: 0\r\n");
    evbuffer_add_printf(out, "%s: %s\r\n", PH_REJECT_HEADER, why);
    if (close)
        evbuffer_add_printf(out, "Connection: close\r\n");
    evbuffer_add(out, "\r\n", 2);
}

/* A head that cannot be framed: answer it (with the request line when it
 * is usable, a neutral one otherwise) and drop the rest of the stream. */
static void phb_reject_unframed(phb_t *b, struct evbuffer *dst, const phb_head_t *h, bool head_ok, const char *why)
{
    if (head_ok) {
        phb_emit_head(dst, h, true, true, NULL);
        phb_add_reject(dst, phb_method_has_body(h->method), true, why);
    } else {
        evbuffer_add_printf(dst, "GET / HTTP/1.1\r\n");
        phb_add_reject(dst, false, true, why);
    }
    b->stage = PHB_SINK;
}

/* Parses a Content-Length value: decimal digits only. */
static bool phb_parse_cl(const char *v, size_t len, uint64_t *out)
{
    if (len == 0 || len > 19)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)v[i]))
            return false;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    *out = n;
    return true;
}

/* PHB_HEAD: returns true when it consumed input. */
static bool phb_on_head(phb_t *b, struct evbuffer *src, struct evbuffer *dst)
{
    size_t avail = evbuffer_get_length(src);
    /* empty lines before a request line are ignored (RFC 9112 2.2) */
    size_t skip = 0;
    const unsigned char *p = evbuffer_pullup(src, avail < 64 ? (ev_ssize_t)avail : 64);
    while (skip < avail && skip < 64 && (p[skip] == '\r' || p[skip] == '\n'))
        skip++;
    if (skip) {
        evbuffer_drain(src, skip);
        return true;
    }
    size_t scan = avail < PH_MAX_HEADERS + 4 ? avail : PH_MAX_HEADERS + 4;
    const char *t = (const char *)evbuffer_pullup(src, (ev_ssize_t)scan);
    size_t end = 0;
    for (size_t i = 0; i < scan && !end; i++) {
        if (t[i] != '\n')
            continue;
        if (i + 1 < scan && t[i + 1] == '\n')
            end = i + 2;
        else if (i + 2 < scan && t[i + 1] == '\r' && t[i + 2] == '\n')
            end = i + 3;
    }
    char why[160];
    phb_head_t h = {0};
    if (!end || end > PH_MAX_HEADERS) {
        if (!end && avail <= PH_MAX_HEADERS)
            return false; /* need more */
        snprintf(why, sizeof why, "request line and headers exceed %d bytes", PH_MAX_HEADERS);
        evbuffer_drain(src, avail);
        phb_reject_unframed(b, dst, &h, false, why);
        return true;
    }
    char *text = malloc(end + 1);
    if (!text) {
        evbuffer_drain(src, avail);
        phb_reject_unframed(b, dst, &h, false, "out of memory");
        return true;
    }
    evbuffer_remove(src, text, end);
    text[end] = '\0';
    if (!phb_parse_head(&h, text, end, why, sizeof why)) {
        /* a usable request line keeps the route (and its answer shape) */
        phb_head_t only_line = {.request = h.request, .request_ok = h.request_ok};
        memcpy(only_line.method, h.method, sizeof h.method);
        phb_reject_unframed(b, dst, &only_line, h.request_ok, why);
        phb_head_free(&h);
        free(text);
        return true;
    }
    bool body_method = phb_method_has_body(h.method);
    if (h.chunked) {
        evbuffer_drain(b->held_head, evbuffer_get_length(b->held_head));
        evbuffer_drain(b->held_conn, evbuffer_get_length(b->held_conn));
        evbuffer_drain(b->body, evbuffer_get_length(b->body));
        phb_emit_head(b->held_head, &h, true, false, b->held_conn);
        b->keep = body_method;
        b->too_large = false;
        b->seen = 0;
        b->stage = PHB_CHUNK_SIZE;
    } else if (h.cl) {
        uint64_t cl;
        if (!phb_parse_cl(h.cl, h.cl_len, &cl)) {
            snprintf(why, sizeof why, "invalid Content-Length \"%.*s\"", (int)(h.cl_len > 40 ? 40 : h.cl_len), h.cl);
            phb_reject_unframed(b, dst, &h, true, why);
        } else if (body_method && cl > PH_MAX_BODY) {
            snprintf(why, sizeof why, "request body of %llu bytes exceeds the limit of %d bytes",
                     (unsigned long long)cl, PH_MAX_BODY);
            /* held back until the body is read: answering (and perhaps
             * closing) while the client still sends would reset it */
            evbuffer_drain(b->held_head, evbuffer_get_length(b->held_head));
            phb_emit_head(b->held_head, &h, true, false, NULL);
            phb_add_reject(b->held_head, true, false, why);
            b->stage = PHB_DISCARD;
            b->left = cl;
        } else if (!body_method && cl) {
            evbuffer_drain(b->held_head, evbuffer_get_length(b->held_head));
            phb_emit_head(b->held_head, &h, true, false, NULL);
            evbuffer_add(b->held_head, "\r\n", 2);
            b->stage = PHB_DISCARD;
            b->left = cl;
        } else if (!body_method) {
            phb_emit_head(dst, &h, true, false, NULL);
            evbuffer_add(dst, "\r\n", 2);
        } else {
            phb_emit_head(dst, &h, false, false, NULL);
            evbuffer_add(dst, "\r\n", 2);
            b->stage = cl ? PHB_PASS : PHB_HEAD;
            b->left = cl;
        }
    } else {
        phb_emit_head(dst, &h, true, false, NULL);
        if (body_method)
            evbuffer_add_printf(dst, "Content-Length: 0\r\n");
        evbuffer_add(dst, "\r\n", 2);
    }
    phb_head_free(&h);
    free(text);
    return true;
}

/* The chunked request is complete (or broken): hand it to evhttp. */
static void phb_finish_chunked(phb_t *b, struct evbuffer *dst, const char *broken)
{
    evbuffer_add_buffer(dst, b->held_head);
    char why[160];
    if (broken) {
        phb_add_reject(dst, b->keep, true, broken);
        evbuffer_drain(b->body, evbuffer_get_length(b->body));
        evbuffer_drain(b->held_conn, evbuffer_get_length(b->held_conn));
        b->stage = PHB_SINK;
        return;
    }
    evbuffer_add_buffer(dst, b->held_conn);
    if (b->keep && b->too_large) {
        snprintf(why, sizeof why, "chunked request body exceeds the limit of %d bytes", PH_MAX_BODY);
        phb_add_reject(dst, true, false, why);
    } else {
        if (b->keep)
            evbuffer_add_printf(dst, "Content-Length: %llu\r\n", (unsigned long long)b->seen);
        evbuffer_add(dst, "\r\n", 2);
        evbuffer_add_buffer(dst, b->body);
    }
    evbuffer_drain(b->body, evbuffer_get_length(b->body));
    b->stage = PHB_HEAD;
}

/* One line (without its ending) from src, at most `max` bytes; 1 when a
 * line was taken, 0 when more input is needed, -1 when it is too long. */
static int phb_take_line(struct evbuffer *src, char *buf, size_t max)
{
    size_t avail = evbuffer_get_length(src);
    size_t scan = avail < max + 2 ? avail : max + 2;
    const char *t = (const char *)evbuffer_pullup(src, (ev_ssize_t)scan);
    const char *nl = t ? memchr(t, '\n', scan) : NULL;
    if (!nl)
        return scan >= max + 2 ? -1 : 0;
    size_t l = (size_t)(nl - t);
    size_t keep = l && t[l - 1] == '\r' ? l - 1 : l;
    if (keep > max)
        return -1;
    memcpy(buf, t, keep);
    buf[keep] = '\0';
    evbuffer_drain(src, l + 1);
    return 1;
}

static bool phb_on_chunk_size(phb_t *b, struct evbuffer *src, struct evbuffer *dst)
{
    char line[PHB_MAX_CHUNK_LINE + 1];
    int r = phb_take_line(src, line, PHB_MAX_CHUNK_LINE);
    if (r == 0)
        return false;
    if (r < 0) {
        phb_finish_chunked(b, dst, "malformed chunked request body (chunk-size line too long)");
        return true;
    }
    uint64_t size = 0;
    size_t i = 0;
    for (; isxdigit((unsigned char)line[i]); i++) {
        if (size >> 56) {
            phb_finish_chunked(b, dst, "malformed chunked request body (chunk size too large)");
            return true;
        }
        int c = tolower((unsigned char)line[i]);
        size = size * 16 + (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    while (line[i] == ' ' || line[i] == '\t')
        i++;
    if (i == 0 || (line[i] != '\0' && line[i] != ';')) {
        phb_finish_chunked(b, dst, "malformed chunked request body (bad chunk-size line)");
        return true;
    }
    if (size == 0) {
        b->stage = PHB_TRAILER;
        return true;
    }
    if (b->keep && !b->too_large && b->seen + size > PH_MAX_BODY) {
        b->too_large = true;
        evbuffer_drain(b->body, evbuffer_get_length(b->body));
    }
    b->left = size;
    b->stage = PHB_CHUNK_DATA;
    return true;
}

static bool phb_on_chunk_end(phb_t *b, struct evbuffer *src, struct evbuffer *dst)
{
    size_t avail = evbuffer_get_length(src);
    const char *t = (const char *)evbuffer_pullup(src, avail < 2 ? (ev_ssize_t)avail : 2);
    if (t[0] == '\n') {
        evbuffer_drain(src, 1);
    } else if (t[0] == '\r' && avail < 2) {
        return false;
    } else if (t[0] == '\r' && t[1] == '\n') {
        evbuffer_drain(src, 2);
    } else {
        phb_finish_chunked(b, dst, "malformed chunked request body (no CRLF after chunk data)");
        return true;
    }
    b->stage = PHB_CHUNK_SIZE;
    return true;
}

static bool phb_on_trailer(phb_t *b, struct evbuffer *src, struct evbuffer *dst)
{
    char line[PH_MAX_HEADERS + 1];
    int r = phb_take_line(src, line, PH_MAX_HEADERS);
    if (r == 0)
        return false;
    if (r < 0)
        phb_finish_chunked(b, dst, "malformed chunked request body (trailer too long)");
    else if (line[0] == '\0')
        phb_finish_chunked(b, dst, NULL);
    return true;
}

/* Moves what may pass from src (raw bytes) to dst, keeping partial
 * framing in src for the next run. */
static void phb_frame(phb_t *b, struct evbuffer *src, struct evbuffer *dst)
{
    for (;;) {
        size_t avail = evbuffer_get_length(src);
        if (!avail)
            break;
        bool progressed = true;
        size_t n = b->left < avail ? (size_t)b->left : avail;
        switch (b->stage) {
        case PHB_HEAD:
            progressed = phb_on_head(b, src, dst);
            break;
        case PHB_PASS:
            evbuffer_remove_buffer(src, dst, n);
            if (!(b->left -= n))
                b->stage = PHB_HEAD;
            break;
        case PHB_DISCARD:
            evbuffer_drain(src, n);
            if (!(b->left -= n)) {
                evbuffer_add_buffer(dst, b->held_head); /* the head, now that its body is gone */
                b->stage = PHB_HEAD;
            }
            break;
        case PHB_CHUNK_SIZE:
            progressed = phb_on_chunk_size(b, src, dst);
            break;
        case PHB_CHUNK_DATA:
            if (b->keep && !b->too_large)
                evbuffer_remove_buffer(src, b->body, n);
            else
                evbuffer_drain(src, n);
            b->seen += n;
            if (!(b->left -= n))
                b->stage = PHB_CHUNK_END;
            break;
        case PHB_CHUNK_END:
            progressed = phb_on_chunk_end(b, src, dst);
            break;
        case PHB_TRAILER:
            progressed = phb_on_trailer(b, src, dst);
            break;
        case PHB_SINK:
            evbuffer_drain(src, avail);
            break;
        }
        if (!progressed)
            break;
    }
}

static void phb_free(phb_t *b)
{
    if (!b)
        return;
    if (b->raw)
        evbuffer_free(b->raw);
    if (b->front)
        evbuffer_free(b->front);
    if (b->held_head)
        evbuffer_free(b->held_head);
    if (b->held_conn)
        evbuffer_free(b->held_conn);
    if (b->body)
        evbuffer_free(b->body);
    free(b);
}

/* The connection is going away (evhttp_connection_free, or a reset):
 * stop watching its input and free the state. */
static void phb_on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    phb_t *b = arg;
    evbuffer_remove_cb_entry(bufferevent_get_input(b->bev), b->entry);
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    phb_free(b);
}

/* Bytes were added to the input buffer: the newest info->n_added bytes at
 * its end are raw socket bytes; everything before them has been through
 * here already and waits for evhttp. */
static void phb_on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    phb_t *b = arg;
    if (b->busy || info->n_added == 0)
        return;
    b->busy = true; /* the moves below run this callback again */
    size_t total = evbuffer_get_length(buf);
    size_t fresh = info->n_added < total ? info->n_added : total;
    evbuffer_remove_buffer(buf, b->front, total - fresh); /* what evhttp has yet to read */
    evbuffer_add_buffer(b->raw, buf);                     /* the new bytes */
    phb_frame(b, b->raw, b->front);
    evbuffer_add_buffer(buf, b->front);
    b->busy = false;
}

/* First bytes on a connection: set up its state, then handle them. Until
 * then a connection costs nothing here (one that never sends a byte needs
 * no cleanup). */
static void phb_on_first_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct bufferevent *bev = arg;
    if (info->n_added == 0)
        return;
    void *cbarg = NULL;
    bufferevent_getcb(bev, NULL, NULL, NULL, &cbarg);
    struct evhttp_connection *evcon = cbarg; /* evhttp's callback argument */
    phb_t *b = calloc(1, sizeof *b);
    if (!b || !evcon || !(b->raw = evbuffer_new()) || !(b->front = evbuffer_new()) ||
        !(b->held_head = evbuffer_new()) || !(b->held_conn = evbuffer_new()) || !(b->body = evbuffer_new())) {
        /* without its state the connection cannot be read safely */
        log_error("HTTP connection: out of memory for its input guard; closing it");
        phb_free(b);
        evbuffer_remove_cb(buf, phb_on_first_input, bev);
        evbuffer_drain(buf, evbuffer_get_length(buf));
        evbuffer_add_printf(buf, "GET / HTTP/1.1\r\n%s: out of memory\r\nConnection: close\r\n\r\n", PH_REJECT_HEADER);
        return;
    }
    b->bev = bev;
    b->entry = evbuffer_add_cb(buf, phb_on_input, b);
    if (!b->entry) {
        phb_free(b);
        return;
    }
    evhttp_connection_set_closecb(evcon, phb_on_close, b);
    /* this entry goes; run_callbacks allows a callback to remove itself */
    evbuffer_remove_cb(buf, phb_on_first_input, bev);
    phb_on_input(buf, info, b);
}

struct bufferevent *ph_body_bevcb(struct event_base *base, void *arg)
{
    (void)arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        log_error("cannot set up an HTTP connection: out of memory");
        return NULL; /* evhttp then tries a plain one itself */
    }
    if (!evbuffer_add_cb(bufferevent_get_input(bev), phb_on_first_input, bev)) {
        bufferevent_free(bev);
        log_error("cannot set up an HTTP connection's input guard: out of memory");
        return NULL;
    }
    return bev;
}

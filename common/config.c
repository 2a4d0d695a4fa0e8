/*
 * config.c: parses and validates the Lodestar YAML configuration (see
 * config.h for the contract and deploy/lodestar.yaml for the documented
 * example).
 *
 * The file is loaded with libyaml's document API and walked with small
 * key tables (one table per mapping); each table row names the key, how to
 * convert its value and where to store it. Rules kept here:
 *  - defaults are filled in first, so a missing key or a null value
 *    ("key:" or "key: ~") keeps the default;
 *  - unknown keys, duplicate keys and wrong types are errors; every error
 *    reads "FILE:LINE:COL: KEY.PATH: reason" with 1-based positions, LINE:COL
 *    being the offending value (or the key, for unknown and duplicate keys);
 *  - all errors are collected, sorted by position, at most CFG_MAX_ERRORS
 *    kept (the rest counted in errs->dropped);
 *  - "${NAME}" in any scalar value is replaced by the environment variable
 *    NAME before the value is interpreted ("$${" stands for a literal "${");
 *  - relative paths resolve against the directory of the configuration
 *    file; the file path itself is made absolute against the cwd, lexically
 *    (the file is never touched by cfg_load_buffer).
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include "log.h"

/* Protocols a listener may speak; one row per gateway kind. */
static const char *const known_protocols[] = {
    "polaris-http",
    "polaris-grpc",
};
#define N_PROTOCOLS (sizeof known_protocols / sizeof known_protocols[0])

/* Process roles that exist whatever the listeners are. */
static const char *const fixed_roles[] = {"supervisor", "naming", "config", "health"};
#define N_FIXED_ROLES (sizeof fixed_roles / sizeof fixed_roles[0])

/* The listeners used when the configuration has no "listeners" key. */
static const struct {
    const char *name, *protocol, *address;
    int port;
} default_listeners[] = {
    {"polaris-http", "polaris-http", "0.0.0.0", 8090},
    {"polaris-grpc-naming", "polaris-grpc", "0.0.0.0", 8091},
    {"polaris-grpc-config", "polaris-grpc", "0.0.0.0", 8093},
};
#define N_DEFAULT_LISTENERS (sizeof default_listeners / sizeof default_listeners[0])

/* Longest runtime_dir that still leaves room, within sockaddr_un.sun_path
 * (108 bytes), for "/pg/.s.PGSQL.65535", "/control.sock" and
 * "/<protocol>.sock" names. */
#define CFG_RUNTIME_DIR_MAX 80

#define CFG_FILE_MAX (16u * 1024u * 1024u)
#define MS_MAX 86400000LL /* one day: an upper bound for every *_ms value */
#define MAX_TABLE_ROWS 16 /* rows in the largest key table */
#define MAX_LISTENERS 1024
#define MAX_PROCESS_LOGS 64

/* Nodes remembered while walking, for checks that involve several keys. */
enum slot {
    SL_NONE = 0,
    SL_RUNTIME_DIR,
    SL_SHUTDOWN,
    SL_DRAIN,
    SL_BACKOFF_INIT,
    SL_BACKOFF_MAX,
    SL_HC_STORE,
    SL_HC_SLOTS,
    SL_HC_MIN,
    SL_HC_MAX,
    SL_L_NAME,
    SL_L_PROTO,
    SL_L_ADDR,
    SL_L_PORT,
    SL_P_FILE,
    SL_CFG_MAX_CONTENT,
    SL_COUNT
};

typedef struct err_entry {
    size_t line, col, seq;
    char *msg;
} err_entry_t;

/* Positions of one listener's keys, for the cross-listener checks. */
typedef struct lpos {
    yaml_mark_t item, name, port;
    bool addr_ok;
} lpos_t;

/* Per logging.processes entry: where its key is and what it set. */
typedef struct ppos {
    yaml_mark_t key;
    bool file_set;
} ppos_t;

typedef struct ctx {
    const char *file; /* as given, for messages */
    yaml_document_t *doc;
    cfg_t *cfg;
    char path[512]; /* current key path */
    size_t plen;
    yaml_node_t *slot[SL_COUNT];
    err_entry_t *errs;
    size_t n_errs, cap_errs;
    bool oom;
    ppos_t *ppos;
    lpos_t *lpos;
} ctx_t;

typedef enum ftype {
    FT_INT,     /* int, range min..max */
    FT_U32,     /* uint32_t, range min..max */
    FT_BOOL,    /* bool */
    FT_STR,     /* char *, must not be empty */
    FT_OPTSTR,  /* char *, empty = NULL */
    FT_PATH,    /* char *, must not be empty, made absolute */
    FT_OPTPATH, /* char *, empty = NULL, else made absolute */
    FT_LEVEL,   /* int, enum log_level */
    FT_MAP,     /* nested table at base + off */
    FT_FN,      /* custom handler */
} ftype_t;

typedef struct field field_t;
typedef void (*field_fn)(ctx_t *c, yaml_node_t *node, void *base);

struct field {
    const char *key;
    ftype_t type;
    size_t off;
    long long min, max;
    const field_t *sub; /* FT_MAP: rows ending with a NULL key */
    field_fn fn;        /* FT_FN */
    enum slot slot;     /* remember the value node here */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static char *xstrdup(ctx_t *c, const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        c->oom = true;
    return d;
}

static void set_str(char **dst, char *val)
{
    free(*dst);
    *dst = val;
}

/* Lexically clean an absolute path: drop "." and empty components, fold
 * "..", never keep a trailing slash (except for "/"). */
static char *path_clean(const char *abs)
{
    size_t n = strlen(abs);
    char *out = malloc(n + 2);
    if (!out)
        return NULL;
    size_t o = 0;
    const char *p = abs;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 1 && p[0] == '.') {
            /* skip */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        } else {
            out[o++] = '/';
            memcpy(out + o, p, len);
            o += len;
        }
        p += len;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return out;
}

/* `p` made absolute against `base` (an absolute directory) and cleaned. */
static char *path_abs(const char *base, const char *p)
{
    if (p[0] == '/')
        return path_clean(p);
    char *joined;
    if (asprintf(&joined, "%s/%s", base, p) < 0)
        return NULL;
    char *r = path_clean(joined);
    free(joined);
    return r;
}

static const char *node_desc(const yaml_node_t *n, char *buf, size_t len)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    case YAML_SCALAR_NODE: {
        size_t l = n->data.scalar.length;
        if (l > 60)
            snprintf(buf, len, "\"%.57s...\"", (const char *)n->data.scalar.value);
        else
            snprintf(buf, len, "\"%.*s\"", (int)l, (const char *)n->data.scalar.value);
        return buf;
    }
    default:
        return "nothing";
    }
}

/* A plain scalar spelling YAML null: "", "~", "null". Null means "absent". */
static bool is_null(const yaml_node_t *n)
{
    if (!n)
        return true;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return n->data.scalar.length == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

static void verr_at(ctx_t *c, size_t line, size_t col, const char *path, const char *fmt, va_list ap)
{
    char reason[1024];
    vsnprintf(reason, sizeof reason, fmt, ap);
    char *msg;
    if (asprintf(&msg, "%s:%zu:%zu: %s: %s", c->file, line, col,
                 path && *path ? path : "(top level)", reason) < 0) {
        c->oom = true;
        return;
    }
    if (c->n_errs == c->cap_errs) {
        size_t ncap = c->cap_errs ? c->cap_errs * 2 : 16;
        err_entry_t *ne = realloc(c->errs, ncap * sizeof *ne);
        if (!ne) {
            free(msg);
            c->oom = true;
            return;
        }
        c->errs = ne;
        c->cap_errs = ncap;
    }
    c->errs[c->n_errs] = (err_entry_t){line, col, c->n_errs, msg};
    c->n_errs++;
}

/* An error at a yaml mark for an explicit key path. */
__attribute__((format(printf, 4, 5))) static void err_path(ctx_t *c, yaml_mark_t m, const char *path,
                                                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr_at(c, m.line + 1, m.column + 1, path, fmt, ap);
    va_end(ap);
}

/* An error at a node, for the current key path. */
__attribute__((format(printf, 3, 4))) static void err_node(ctx_t *c, const yaml_node_t *n,
                                                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr_at(c, n->start_mark.line + 1, n->start_mark.column + 1, c->path, fmt, ap);
    va_end(ap);
}

static void err_expected(ctx_t *c, const yaml_node_t *n, const char *what)
{
    char buf[80];
    err_node(c, n, "expected %s, got %s", what, node_desc(n, buf, sizeof buf));
}

static int err_cmp(const void *a, const void *b)
{
    const err_entry_t *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Move the collected errors, in file order, into the caller's list. */
static void errs_flush(ctx_t *c, cfg_errors_t *errs)
{
    qsort(c->errs, c->n_errs, sizeof *c->errs, err_cmp);
    for (size_t i = 0; i < c->n_errs; i++) {
        if (errs && errs->count < CFG_MAX_ERRORS) {
            errs->msgs[errs->count++] = c->errs[i].msg;
        } else {
            if (errs)
                errs->dropped++;
            free(c->errs[i].msg);
        }
    }
    free(c->errs);
    c->errs = NULL;
    c->n_errs = c->cap_errs = 0;
}

/* ------------------------------------------------------------------ */
/* Key paths                                                           */
/* ------------------------------------------------------------------ */

static size_t path_push_key(ctx_t *c, const char *key)
{
    size_t saved = c->plen;
    int n = snprintf(c->path + c->plen, sizeof c->path - c->plen, "%s%s", c->plen ? "." : "", key);
    if (n > 0)
        c->plen = c->plen + (size_t)n < sizeof c->path ? c->plen + (size_t)n : sizeof c->path - 1;
    return saved;
}

static size_t path_push_index(ctx_t *c, size_t i)
{
    size_t saved = c->plen;
    int n = snprintf(c->path + c->plen, sizeof c->path - c->plen, "[%zu]", i);
    if (n > 0)
        c->plen = c->plen + (size_t)n < sizeof c->path ? c->plen + (size_t)n : sizeof c->path - 1;
    return saved;
}

static void path_pop(ctx_t *c, size_t saved)
{
    c->plen = saved;
    c->path[saved] = '\0';
}

/* ------------------------------------------------------------------ */
/* Scalars                                                             */
/* ------------------------------------------------------------------ */

static bool env_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 255 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return true;
}

/* Expand "${NAME}" in `in` (length n). Returns a malloc'd string, or NULL
 * after recording an error at node `n`. */
static char *env_expand(ctx_t *c, const yaml_node_t *node, const char *in, size_t n)
{
    size_t cap = n + 1, len = 0;
    char *out = malloc(cap);
    if (!out) {
        c->oom = true;
        return NULL;
    }
    for (size_t i = 0; i < n;) {
        const char *piece;
        size_t plen, adv;
        if (in[i] == '$' && i + 2 < n && in[i + 1] == '$' && in[i + 2] == '{') {
            piece = "${";
            plen = 2;
            adv = 3;
        } else if (in[i] == '$' && i + 1 < n && in[i + 1] == '{') {
            const char *end = memchr(in + i + 2, '}', n - i - 2);
            if (!end) {
                err_node(c, node, "unterminated \"${\" in value");
                free(out);
                return NULL;
            }
            const char *name = in + i + 2;
            size_t nlen = (size_t)(end - name);
            if (!env_name_ok(name, nlen)) {
                err_node(c, node, "invalid environment variable name \"%.*s\"", (int)nlen, name);
                free(out);
                return NULL;
            }
            char vname[256];
            snprintf(vname, sizeof vname, "%.*s", (int)nlen, name);
            piece = getenv(vname);
            if (!piece) {
                err_node(c, node, "environment variable %s is not set", vname);
                free(out);
                return NULL;
            }
            plen = strlen(piece);
            adv = nlen + 3;
        } else {
            piece = in + i;
            plen = 1;
            adv = 1;
        }
        if (len + plen + 1 > cap) {
            size_t ncap = (len + plen + 1) * 2;
            char *no = realloc(out, ncap);
            if (!no) {
                free(out);
                c->oom = true;
                return NULL;
            }
            out = no;
            cap = ncap;
        }
        memcpy(out + len, piece, plen);
        len += plen;
        i += adv;
    }
    out[len] = '\0';
    return out;
}

/* The expanded text of a scalar value, malloc'd; NULL after an error
 * ("expected <what>" when the node is not a scalar). */
static char *scalar_text(ctx_t *c, yaml_node_t *n, const char *what)
{
    if (n->type != YAML_SCALAR_NODE) {
        err_expected(c, n, what);
        return NULL;
    }
    const char *v = (const char *)n->data.scalar.value;
    if (strlen(v) != n->data.scalar.length) {
        err_node(c, n, "value contains a NUL character");
        return NULL;
    }
    return env_expand(c, n, v, n->data.scalar.length);
}

static void err_text(ctx_t *c, const yaml_node_t *n, const char *what, const char *text)
{
    if (strlen(text) > 60)
        err_node(c, n, "expected %s, got \"%.57s...\"", what, text);
    else
        err_node(c, n, "expected %s, got \"%s\"", what, text);
}

static int parse_int(ctx_t *c, yaml_node_t *n, long long min, long long max, long long *out)
{
    char what[96];
    snprintf(what, sizeof what, "an integer %lld..%lld", min, max);
    char *t = scalar_text(c, n, what);
    if (!t)
        return -1;
    const char *p = t;
    if (*p == '+' || *p == '-')
        p++;
    bool digits = *p != '\0';
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            digits = false;
    errno = 0;
    long long v = digits ? strtoll(t, NULL, 10) : 0;
    if (!digits || errno == ERANGE || v < min || v > max) {
        err_text(c, n, what, t);
        free(t);
        return -1;
    }
    free(t);
    *out = v;
    return 0;
}

static int parse_bool(ctx_t *c, yaml_node_t *n, bool *out)
{
    static const char *const what = "a boolean (true/false/yes/no/on/off)";
    char *t = scalar_text(c, n, what);
    if (!t)
        return -1;
    int r = 0;
    if (!strcasecmp(t, "true") || !strcasecmp(t, "yes") || !strcasecmp(t, "on"))
        *out = true;
    else if (!strcasecmp(t, "false") || !strcasecmp(t, "no") || !strcasecmp(t, "off"))
        *out = false;
    else {
        err_text(c, n, what, t);
        r = -1;
    }
    free(t);
    return r;
}

/* ------------------------------------------------------------------ */
/* Tables and the generic walker                                       */
/* ------------------------------------------------------------------ */

static void parse_map(ctx_t *c, yaml_node_t *node, const field_t *fields, void *base);

/* Append ", name" (or "name" when first) to a bounded list; truncates quietly. */
static void list_add(char *buf, size_t len, const char *name)
{
    size_t o = strnlen(buf, len);
    if (o + 1 < len)
        snprintf(buf + o, len - o, "%s%s", o ? ", " : "", name);
}

static void allowed_list(const field_t *fields, char *buf, size_t len)
{
    buf[0] = '\0';
    for (const field_t *f = fields; f->key; f++)
        list_add(buf, len, f->key);
}

static void parse_field(ctx_t *c, const field_t *f, yaml_node_t *v, void *base)
{
    char *dst = (char *)base + f->off;
    long long iv;
    char *t;
    switch (f->type) {
    case FT_INT:
        if (parse_int(c, v, f->min, f->max, &iv) == 0)
            *(int *)(void *)dst = (int)iv;
        break;
    case FT_U32:
        if (parse_int(c, v, f->min, f->max, &iv) == 0)
            *(uint32_t *)(void *)dst = (uint32_t)iv;
        break;
    case FT_BOOL:
        parse_bool(c, v, (bool *)(void *)dst);
        break;
    case FT_LEVEL:
        t = scalar_text(c, v, "a log level (debug, info, notice, warn, warning, error)");
        if (t) {
            int lv = log_level_parse(t);
            if (lv < 0)
                err_text(c, v, "a log level (debug, info, notice, warn, warning, error)", t);
            else
                *(int *)(void *)dst = lv;
            free(t);
        }
        break;
    case FT_STR:
    case FT_OPTSTR:
    case FT_PATH:
    case FT_OPTPATH:
        t = scalar_text(c, v, f->type == FT_PATH || f->type == FT_OPTPATH ? "a path" : "a string");
        if (!t)
            break;
        if (!*t) {
            free(t);
            if (f->type == FT_OPTSTR || f->type == FT_OPTPATH)
                set_str((char **)(void *)dst, NULL);
            else
                err_node(c, v, "must not be empty");
            break;
        }
        if (f->type == FT_PATH || f->type == FT_OPTPATH) {
            char *a = path_abs(c->cfg->base_dir, t);
            free(t);
            if (!a) {
                c->oom = true;
                break;
            }
            t = a;
        }
        set_str((char **)(void *)dst, t);
        break;
    case FT_MAP:
        parse_map(c, v, f->sub, dst);
        break;
    case FT_FN:
        f->fn(c, v, base);
        break;
    }
}

/* Walk one mapping against its table. Null means "all defaults". */
static void parse_map(ctx_t *c, yaml_node_t *node, const field_t *fields, void *base)
{
    if (is_null(node))
        return;
    if (node->type != YAML_MAPPING_NODE) {
        err_expected(c, node, "a mapping");
        return;
    }
    /* the key node first seen for each table row, to flag duplicates */
    const yaml_node_t *seen[MAX_TABLE_ROWS] = {0};
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (!k || !v)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            err_expected(c, k, "a plain key");
            continue;
        }
        const char *key = (const char *)k->data.scalar.value;
        size_t saved = path_push_key(c, key);
        const field_t *f = fields;
        while (f->key && strcmp(f->key, key) != 0)
            f++;
        size_t row = (size_t)(f - fields);
        if (!f->key) {
            char allowed[512];
            allowed_list(fields, allowed, sizeof allowed);
            err_node(c, k, "unknown key (allowed: %s)", allowed);
        } else if (seen[row]) {
            err_node(c, k, "duplicate key (first given at line %zu)", (size_t)seen[row]->start_mark.line + 1);
        } else {
            seen[row] = k;
            if (!is_null(v)) {
                if (f->slot != SL_NONE)
                    c->slot[f->slot] = v;
                parse_field(c, f, v, base);
            }
        }
        path_pop(c, saved);
    }
}

/* ---- logging.processes ---- */

static const field_t proc_log_fields[] = {
    {.key = "level", .type = FT_LEVEL, .off = offsetof(cfg_log_t, level)},
    {.key = "file", .type = FT_OPTPATH, .off = offsetof(cfg_log_t, file), .slot = SL_P_FILE},
    {0},
};

static void fn_processes(ctx_t *c, yaml_node_t *node, void *base)
{
    (void)base;
    if (node->type != YAML_MAPPING_NODE) {
        err_expected(c, node, "a mapping of process role to {level, file}");
        return;
    }
    cfg_t *cfg = c->cfg;
    size_t n = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    if (n > MAX_PROCESS_LOGS) {
        err_node(c, node, "too many entries (%zu, at most %d)", n, MAX_PROCESS_LOGS);
        return;
    }
    cfg->proc_logs = calloc(n ? n : 1, sizeof *cfg->proc_logs);
    c->ppos = calloc(n ? n : 1, sizeof *c->ppos);
    if (!cfg->proc_logs || !c->ppos) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *p = &node->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (!k || !v)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            err_expected(c, k, "a process role");
            continue;
        }
        const char *role = (const char *)k->data.scalar.value;
        size_t saved = path_push_key(c, role);
        bool dup = false;
        for (size_t j = 0; j < cfg->n_proc_logs && !dup; j++)
            if (cfg->proc_logs[j].role && strcmp(cfg->proc_logs[j].role, role) == 0) {
                err_node(c, k, "duplicate key (first given at line %zu)", (size_t)c->ppos[j].key.line + 1);
                dup = true;
            }
        if (!dup) {
            cfg_process_log_t *pl = &cfg->proc_logs[cfg->n_proc_logs];
            ppos_t *pp = &c->ppos[cfg->n_proc_logs];
            cfg->n_proc_logs++;
            pl->role = xstrdup(c, role);
            pl->log.level = -1; /* inherit unless set */
            pp->key = k->start_mark;
            c->slot[SL_P_FILE] = NULL;
            parse_map(c, v, proc_log_fields, &pl->log);
            /* a "file" value, even "" (stderr), overrides the global file */
            pp->file_set = c->slot[SL_P_FILE] != NULL;
        }
        path_pop(c, saved);
    }
}

/* ---- healthcheck.store ---- */

static void fn_hc_store(ctx_t *c, yaml_node_t *node, void *base)
{
    cfg_healthcheck_t *hc = base;
    static const char *const what = "memory or redis";
    char *t = scalar_text(c, node, what);
    if (!t)
        return;
    if (strcmp(t, "memory") == 0)
        hc->store = CFG_HC_MEMORY;
    else if (strcmp(t, "redis") == 0)
        hc->store = CFG_HC_REDIS;
    else
        err_text(c, node, what, t);
    free(t);
}

/* ---- listeners ---- */

static bool protocol_known(const char *p)
{
    for (size_t i = 0; i < N_PROTOCOLS; i++)
        if (strcmp(known_protocols[i], p) == 0)
            return true;
    return false;
}

static void fn_l_name(ctx_t *c, yaml_node_t *node, void *base)
{
    cfg_listener_t *l = base;
    char *t = scalar_text(c, node, "a listener name");
    if (!t)
        return;
    bool ok = *t != '\0';
    for (const char *p = t; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-'))
            ok = false;
    if (!ok) {
        err_node(c, node, "invalid listener name \"%s\" (use lowercase letters, digits and '-')", t);
        free(t);
        return;
    }
    set_str(&l->name, t);
}

static void fn_l_proto(ctx_t *c, yaml_node_t *node, void *base)
{
    cfg_listener_t *l = base;
    char *t = scalar_text(c, node, "a protocol name");
    if (!t)
        return;
    if (!protocol_known(t)) {
        char known[256] = "";
        for (size_t i = 0; i < N_PROTOCOLS; i++)
            list_add(known, sizeof known, known_protocols[i]);
        err_node(c, node, "unknown protocol \"%s\" (known: %s)", t, known);
        free(t);
        return;
    }
    set_str(&l->protocol, t);
}

/* Binary form of an address literal; the family, or 0 when not one. */
static int addr_parse(const char *s, unsigned char out[16])
{
    if (s && inet_pton(AF_INET, s, out) == 1)
        return AF_INET;
    if (s && inet_pton(AF_INET6, s, out) == 1)
        return AF_INET6;
    return 0;
}

static void fn_l_addr(ctx_t *c, yaml_node_t *node, void *base)
{
    cfg_listener_t *l = base;
    static const char *const what = "an IPv4 or IPv6 address";
    char *t = scalar_text(c, node, what);
    if (!t)
        return;
    unsigned char bin[16];
    if (!addr_parse(t, bin)) {
        err_text(c, node, what, t);
        free(t);
        set_str(&l->address, NULL);
        return;
    }
    set_str(&l->address, t);
}

static const field_t listener_fields[] = {
    {.key = "name", .type = FT_FN, .fn = fn_l_name, .slot = SL_L_NAME},
    {.key = "protocol", .type = FT_FN, .fn = fn_l_proto, .slot = SL_L_PROTO},
    {.key = "address", .type = FT_FN, .fn = fn_l_addr, .slot = SL_L_ADDR},
    {.key = "port", .type = FT_INT, .off = offsetof(cfg_listener_t, port), .min = 1, .max = 65535, .slot = SL_L_PORT},
    {.key = "enabled", .type = FT_BOOL, .off = offsetof(cfg_listener_t, enabled)},
    {0},
};

static void listeners_free(cfg_t *cfg)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        free(cfg->listeners[i].name);
        free(cfg->listeners[i].protocol);
        free(cfg->listeners[i].address);
    }
    free(cfg->listeners);
    cfg->listeners = NULL;
    cfg->n_listeners = 0;
}

/* Two bound addresses overlap: equal, or one is the wildcard of the other's family. */
static bool addr_overlap(const char *a, const char *b)
{
    unsigned char x[16], y[16];
    static const unsigned char zero[16];
    int fa = addr_parse(a, x), fb = addr_parse(b, y);
    if (!fa || fa != fb)
        return false;
    size_t len = fa == AF_INET ? 4 : 16;
    return memcmp(x, y, len) == 0 || memcmp(x, zero, len) == 0 || memcmp(y, zero, len) == 0;
}

static void listeners_check(ctx_t *c)
{
    cfg_t *cfg = c->cfg;
    char path[64];
    for (size_t j = 0; j < cfg->n_listeners; j++) {
        cfg_listener_t *b = &cfg->listeners[j];
        for (size_t i = 0; i < j && b->name; i++) {
            if (cfg->listeners[i].name && strcmp(cfg->listeners[i].name, b->name) == 0) {
                snprintf(path, sizeof path, "listeners[%zu].name", j);
                err_path(c, c->lpos[j].name, path, "duplicate listener name \"%s\" (also listeners[%zu] at line %zu)",
                         b->name, i, (size_t)c->lpos[i].name.line + 1);
                break;
            }
        }
        if (!b->enabled || !b->port || !c->lpos[j].addr_ok)
            continue;
        for (size_t i = 0; i < j; i++) {
            cfg_listener_t *a = &cfg->listeners[i];
            if (!a->enabled || a->port != b->port || !c->lpos[i].addr_ok || !addr_overlap(a->address, b->address))
                continue;
            snprintf(path, sizeof path, "listeners[%zu].port", j);
            err_path(c, c->lpos[j].port, path, "%s port %d conflicts with listeners[%zu] (%s, %s port %d)",
                     b->address, b->port, i, a->name ? a->name : "unnamed", a->address, a->port);
            break;
        }
    }
}

static void fn_listeners(ctx_t *c, yaml_node_t *node, void *base)
{
    cfg_t *cfg = c->cfg;
    (void)base;
    if (node->type != YAML_SEQUENCE_NODE) {
        err_expected(c, node, "a sequence of listeners");
        return;
    }
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n > MAX_LISTENERS) {
        err_node(c, node, "too many listeners (%zu, at most %d)", n, MAX_LISTENERS);
        return;
    }
    listeners_free(cfg);
    cfg->listeners = calloc(n ? n : 1, sizeof *cfg->listeners);
    free(c->lpos);
    c->lpos = calloc(n ? n : 1, sizeof *c->lpos);
    if (!cfg->listeners || !c->lpos) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, node->data.sequence.items.start[i]);
        cfg_listener_t *l = &cfg->listeners[i];
        lpos_t *lp = &c->lpos[i];
        cfg->n_listeners++;
        l->enabled = true;
        l->address = xstrdup(c, "0.0.0.0");
        if (!item)
            continue;
        lp->item = lp->name = lp->port = item->start_mark;
        size_t saved = path_push_index(c, i);
        if (item->type != YAML_MAPPING_NODE) {
            err_expected(c, item, "a mapping (name, protocol, address, port, enabled)");
            path_pop(c, saved);
            continue;
        }
        c->slot[SL_L_NAME] = c->slot[SL_L_PROTO] = c->slot[SL_L_ADDR] = c->slot[SL_L_PORT] = NULL;
        parse_map(c, item, listener_fields, l);
        static const struct {
            enum slot s;
            const char *key;
        } required[] = {{SL_L_NAME, "name"}, {SL_L_PROTO, "protocol"}, {SL_L_PORT, "port"}};
        for (size_t r = 0; r < sizeof required / sizeof required[0]; r++) {
            if (!c->slot[required[r].s]) {
                size_t s2 = path_push_key(c, required[r].key);
                err_node(c, item, "required key is missing");
                path_pop(c, s2);
            }
        }
        if (c->slot[SL_L_NAME])
            lp->name = c->slot[SL_L_NAME]->start_mark;
        if (c->slot[SL_L_PORT])
            lp->port = c->slot[SL_L_PORT]->start_mark;
        unsigned char bin[16];
        lp->addr_ok = addr_parse(l->address, bin) != 0;
        path_pop(c, saved);
    }
    listeners_check(c);
}

/* ---- the schema ---- */

static const field_t logging_fields[] = {
    {.key = "level", .type = FT_LEVEL, .off = offsetof(cfg_t, log.level)},
    {.key = "file", .type = FT_OPTPATH, .off = offsetof(cfg_t, log.file)},
    {.key = "processes", .type = FT_FN, .fn = fn_processes},
    {0},
};

static const field_t supervisor_fields[] = {
    {.key = "shutdown_timeout_ms", .type = FT_INT, .off = offsetof(cfg_supervisor_t, shutdown_timeout_ms), .min = 1, .max = MS_MAX, .slot = SL_SHUTDOWN},
    {.key = "drain_timeout_ms", .type = FT_INT, .off = offsetof(cfg_supervisor_t, drain_timeout_ms), .min = 1, .max = MS_MAX, .slot = SL_DRAIN},
    {.key = "restart_backoff_initial_ms", .type = FT_INT, .off = offsetof(cfg_supervisor_t, restart_backoff_initial_ms), .min = 1, .max = MS_MAX, .slot = SL_BACKOFF_INIT},
    {.key = "restart_backoff_max_ms", .type = FT_INT, .off = offsetof(cfg_supervisor_t, restart_backoff_max_ms), .min = 1, .max = MS_MAX, .slot = SL_BACKOFF_MAX},
    {.key = "crash_loop_window_ms", .type = FT_INT, .off = offsetof(cfg_supervisor_t, crash_loop_window_ms), .min = 1, .max = MS_MAX},
    {.key = "crash_loop_max", .type = FT_INT, .off = offsetof(cfg_supervisor_t, crash_loop_max), .min = 1, .max = 1000000},
    {.key = "ready_timeout_ms", .type = FT_INT, .off = offsetof(cfg_supervisor_t, ready_timeout_ms), .min = 1, .max = MS_MAX},
    {.key = "ping_interval_ms", .type = FT_INT, .off = offsetof(cfg_supervisor_t, ping_interval_ms), .min = 1, .max = MS_MAX},
    {0},
};

static const field_t ipc_fields[] = {
    {.key = "max_frame_bytes", .type = FT_U32, .off = offsetof(cfg_ipc_t, max_frame_bytes), .min = 1024, .max = 1073741824},
    {.key = "request_timeout_ms", .type = FT_INT, .off = offsetof(cfg_ipc_t, request_timeout_ms), .min = 1, .max = MS_MAX},
    {0},
};

static const field_t embedded_fields[] = {
    {.key = "data_dir", .type = FT_PATH, .off = offsetof(cfg_embedded_pg_t, data_dir)},
    {.key = "bin_dir", .type = FT_PATH, .off = offsetof(cfg_embedded_pg_t, bin_dir)},
    {.key = "user", .type = FT_STR, .off = offsetof(cfg_embedded_pg_t, user)},
    {.key = "port", .type = FT_INT, .off = offsetof(cfg_embedded_pg_t, port), .min = 1, .max = 65535},
    {0},
};

static const field_t store_fields[] = {
    {.key = "dsn", .type = FT_OPTSTR, .off = offsetof(cfg_store_t, dsn)},
    {.key = "connect_timeout_ms", .type = FT_INT, .off = offsetof(cfg_store_t, connect_timeout_ms), .min = 1, .max = MS_MAX},
    {.key = "reconnect_backoff_max_ms", .type = FT_INT, .off = offsetof(cfg_store_t, reconnect_backoff_max_ms), .min = 1, .max = MS_MAX},
    {.key = "embedded", .type = FT_MAP, .off = offsetof(cfg_store_t, embedded), .sub = embedded_fields},
    {0},
};

static const field_t redis_fields[] = {
    {.key = "address", .type = FT_OPTSTR, .off = offsetof(cfg_healthcheck_t, redis_address)},
    {.key = "password", .type = FT_OPTSTR, .off = offsetof(cfg_healthcheck_t, redis_password)},
    {.key = "db", .type = FT_INT, .off = offsetof(cfg_healthcheck_t, redis_db), .min = 0, .max = INT_MAX},
    {.key = "key_prefix", .type = FT_STR, .off = offsetof(cfg_healthcheck_t, redis_key_prefix)},
    {.key = "timeout_ms", .type = FT_INT, .off = offsetof(cfg_healthcheck_t, redis_timeout_ms), .min = 1, .max = MS_MAX},
    {0},
};

static const field_t hc_cleanup_fields[] = {
    {.key = "enabled", .type = FT_BOOL, .off = offsetof(cfg_healthcheck_t, cleanup_enabled)},
    {.key = "unhealthy_for_s", .type = FT_INT, .off = offsetof(cfg_healthcheck_t, cleanup_unhealthy_for_s), .min = 1, .max = INT_MAX / 1000},
    {0},
};

static const field_t hc_cluster_fields[] = {
    {.key = "node_id", .type = FT_OPTSTR, .off = offsetof(cfg_healthcheck_t, cluster_node_id)},
    {.key = "announce_ttl_ms", .type = FT_INT, .off = offsetof(cfg_healthcheck_t, cluster_announce_ttl_ms), .min = 100, .max = MS_MAX},
    {0},
};

static const field_t healthcheck_fields[] = {
    {.key = "enabled", .type = FT_BOOL, .off = offsetof(cfg_healthcheck_t, enabled)},
    {.key = "store", .type = FT_FN, .fn = fn_hc_store, .slot = SL_HC_STORE},
    {.key = "redis", .type = FT_MAP, .off = 0, .sub = redis_fields},
    {.key = "slot_num", .type = FT_INT, .off = offsetof(cfg_healthcheck_t, slot_num), .min = 2, .max = 1000000, .slot = SL_HC_SLOTS},
    {.key = "min_check_interval_ms", .type = FT_INT, .off = offsetof(cfg_healthcheck_t, min_check_interval_ms), .min = 1, .max = MS_MAX, .slot = SL_HC_MIN},
    {.key = "max_check_interval_ms", .type = FT_INT, .off = offsetof(cfg_healthcheck_t, max_check_interval_ms), .min = 1, .max = MS_MAX, .slot = SL_HC_MAX},
    {.key = "protect_threshold_percent", .type = FT_INT, .off = offsetof(cfg_healthcheck_t, protect_threshold_percent), .min = 0, .max = 100},
    {.key = "restart_grace_ms", .type = FT_INT, .off = offsetof(cfg_healthcheck_t, restart_grace_ms), .min = 0, .max = MS_MAX},
    {.key = "cleanup", .type = FT_MAP, .off = 0, .sub = hc_cleanup_fields},
    {.key = "cluster", .type = FT_MAP, .off = 0, .sub = hc_cluster_fields},
    {0},
};

static const field_t worker_fields[] = {
    {.key = "enabled", .type = FT_BOOL, .off = offsetof(cfg_worker_t, enabled)},
    {0},
};

/* workers.naming: parsed against cfg_t itself, since `enabled` lives in
 * cfg->naming and the rest in cfg->naming_worker. */
static const field_t naming_batch_fields[] = {
    {.key = "max_batch", .type = FT_INT, .off = offsetof(cfg_t, naming_worker.batch_max), .min = 1, .max = 100000},
    {.key = "wait_ms", .type = FT_INT, .off = offsetof(cfg_t, naming_worker.batch_wait_ms), .min = 1, .max = 60000},
    {.key = "queue_size", .type = FT_INT, .off = offsetof(cfg_t, naming_worker.batch_queue_size), .min = 1, .max = 100000000},
    {0},
};

static const field_t naming_worker_fields[] = {
    {.key = "enabled", .type = FT_BOOL, .off = offsetof(cfg_t, naming.enabled)},
    {.key = "auto_create_namespace", .type = FT_BOOL, .off = offsetof(cfg_t, naming_worker.auto_create_namespace)},
    {.key = "auto_create_service", .type = FT_BOOL, .off = offsetof(cfg_t, naming_worker.auto_create_service)},
    {.key = "sync_interval_ms", .type = FT_INT, .off = offsetof(cfg_t, naming_worker.sync_interval_ms), .min = 1, .max = MS_MAX},
    {.key = "deleted_retention_s", .type = FT_INT, .off = offsetof(cfg_t, naming_worker.deleted_retention_s), .min = 1, .max = INT_MAX},
    {.key = "batch", .type = FT_MAP, .off = 0, .sub = naming_batch_fields},
    {0},
};

/* workers.config: parsed against cfg_t like workers.naming. */
static const field_t config_worker_fields[] = {
    {.key = "enabled", .type = FT_BOOL, .off = offsetof(cfg_t, config.enabled)},
    {.key = "max_content_bytes", .type = FT_U32, .off = offsetof(cfg_t, config_worker.max_content_bytes), .min = 1, .max = 67108864, .slot = SL_CFG_MAX_CONTENT},
    {.key = "sync_interval_ms", .type = FT_INT, .off = offsetof(cfg_t, config_worker.sync_interval_ms), .min = 1, .max = MS_MAX},
    {.key = "deleted_retention_s", .type = FT_INT, .off = offsetof(cfg_t, config_worker.deleted_retention_s), .min = 1, .max = INT_MAX},
    {0},
};

static const field_t workers_fields[] = {
    {.key = "naming", .type = FT_MAP, .off = 0, .sub = naming_worker_fields},
    {.key = "config", .type = FT_MAP, .off = 0, .sub = config_worker_fields},
    {.key = "health", .type = FT_MAP, .off = offsetof(cfg_t, health), .sub = worker_fields},
    {0},
};

static const field_t top_fields[] = {
    {.key = "runtime_dir", .type = FT_PATH, .off = offsetof(cfg_t, runtime_dir), .slot = SL_RUNTIME_DIR},
    {.key = "logging", .type = FT_MAP, .off = 0, .sub = logging_fields},
    {.key = "supervisor", .type = FT_MAP, .off = offsetof(cfg_t, supervisor), .sub = supervisor_fields},
    {.key = "ipc", .type = FT_MAP, .off = offsetof(cfg_t, ipc), .sub = ipc_fields},
    {.key = "store", .type = FT_MAP, .off = offsetof(cfg_t, store), .sub = store_fields},
    {.key = "healthcheck", .type = FT_MAP, .off = offsetof(cfg_t, healthcheck), .sub = healthcheck_fields},
    {.key = "workers", .type = FT_MAP, .off = 0, .sub = workers_fields},
    {.key = "listeners", .type = FT_FN, .fn = fn_listeners},
    {0},
};

#define TABLE_FITS(t) _Static_assert(sizeof t / sizeof t[0] <= MAX_TABLE_ROWS, #t " has too many rows")
TABLE_FITS(proc_log_fields);
TABLE_FITS(listener_fields);
TABLE_FITS(logging_fields);
TABLE_FITS(supervisor_fields);
TABLE_FITS(ipc_fields);
TABLE_FITS(embedded_fields);
TABLE_FITS(store_fields);
TABLE_FITS(redis_fields);
TABLE_FITS(healthcheck_fields);
TABLE_FITS(hc_cleanup_fields);
TABLE_FITS(hc_cluster_fields);
TABLE_FITS(worker_fields);
TABLE_FITS(naming_batch_fields);
TABLE_FITS(naming_worker_fields);
TABLE_FITS(config_worker_fields);
TABLE_FITS(workers_fields);
TABLE_FITS(top_fields);

/* ------------------------------------------------------------------ */
/* Defaults and cross-key checks                                       */
/* ------------------------------------------------------------------ */

static int set_defaults(ctx_t *c, cfg_t *cfg)
{
    cfg->runtime_dir = path_abs(cfg->base_dir, "run");
    cfg->log.level = LOG_LVL_INFO;
    cfg->supervisor = (cfg_supervisor_t){
        .shutdown_timeout_ms = 8000,
        .drain_timeout_ms = 5000,
        .restart_backoff_initial_ms = 100,
        .restart_backoff_max_ms = 30000,
        .crash_loop_window_ms = 60000,
        .crash_loop_max = 5,
        .ready_timeout_ms = 60000,
        .ping_interval_ms = 2000,
    };
    cfg->ipc.max_frame_bytes = 16u * 1024u * 1024u;
    cfg->ipc.request_timeout_ms = 5000;
    cfg->store.connect_timeout_ms = 5000;
    cfg->store.reconnect_backoff_max_ms = 5000;
    cfg->store.embedded.data_dir = path_abs(cfg->base_dir, "data/postgres");
    cfg->store.embedded.bin_dir = xstrdup(c, "/usr/lib/postgresql/15/bin");
    cfg->store.embedded.user = xstrdup(c, "postgres");
    cfg->store.embedded.port = 5432;
    cfg->healthcheck.enabled = true;
    cfg->healthcheck.store = CFG_HC_MEMORY;
    cfg->healthcheck.redis_address = xstrdup(c, "127.0.0.1:6379");
    cfg->healthcheck.redis_db = 0;
    cfg->healthcheck.redis_key_prefix = xstrdup(c, "lodestar:");
    cfg->healthcheck.redis_timeout_ms = 2000;
    cfg->healthcheck.slot_num = 30;
    cfg->healthcheck.min_check_interval_ms = 1000;
    cfg->healthcheck.max_check_interval_ms = 30000;
    cfg->healthcheck.cleanup_unhealthy_for_s = 3600;
    cfg->healthcheck.cluster_announce_ttl_ms = 5000;
    cfg->naming.enabled = cfg->config.enabled = cfg->health.enabled = true;
    cfg->config_worker = (cfg_config_worker_t){
        .max_content_bytes = 20000,
        .sync_interval_ms = 250,
        .deleted_retention_s = 3600,
    };
    cfg->naming_worker = (cfg_naming_worker_t){
        .auto_create_namespace = true,
        .auto_create_service = true,
        .batch_max = 128,
        .batch_wait_ms = 32,
        .batch_queue_size = 10240,
        .sync_interval_ms = 250,
        .deleted_retention_s = 3600,
    };
    cfg->listeners = calloc(N_DEFAULT_LISTENERS, sizeof *cfg->listeners);
    if (!cfg->runtime_dir || !cfg->store.embedded.data_dir || !cfg->listeners || c->oom)
        return -1;
    cfg->n_listeners = N_DEFAULT_LISTENERS;
    for (size_t i = 0; i < N_DEFAULT_LISTENERS; i++) {
        cfg->listeners[i] = (cfg_listener_t){
            .name = xstrdup(c, default_listeners[i].name),
            .protocol = xstrdup(c, default_listeners[i].protocol),
            .address = xstrdup(c, default_listeners[i].address),
            .port = default_listeners[i].port,
            .enabled = true,
        };
    }
    return c->oom ? -1 : 0;
}

static yaml_mark_t mark_or(const yaml_node_t *n, yaml_mark_t dflt)
{
    return n ? n->start_mark : dflt;
}

static bool role_used_by_listener(const cfg_t *cfg, const char *role)
{
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].protocol && strcmp(cfg->listeners[i].protocol, role) == 0)
            return true;
    return false;
}

static void check_roles(ctx_t *c)
{
    cfg_t *cfg = c->cfg;
    for (size_t i = 0; i < cfg->n_proc_logs; i++) {
        const char *role = cfg->proc_logs[i].role;
        if (!role)
            continue;
        bool ok = role_used_by_listener(cfg, role);
        for (size_t r = 0; r < N_FIXED_ROLES && !ok; r++)
            ok = strcmp(fixed_roles[r], role) == 0;
        if (ok)
            continue;
        char path[300];
        snprintf(path, sizeof path, "logging.processes.%s", role);
        if (protocol_known(role)) {
            err_path(c, c->ppos[i].key, path, "no listener uses protocol \"%s\"", role);
            continue;
        }
        char known[512] = "";
        for (size_t r = 0; r < N_FIXED_ROLES; r++)
            list_add(known, sizeof known, fixed_roles[r]);
        for (size_t p = 0; p < N_PROTOCOLS; p++)
            if (role_used_by_listener(cfg, known_protocols[p]))
                list_add(known, sizeof known, known_protocols[p]);
        err_path(c, c->ppos[i].key, path, "unknown process role \"%s\" (known: %s)", role, known);
    }
}

/* Checks that involve several keys, and inheritance of per-process logs. */
static void finalize(ctx_t *c, yaml_mark_t top)
{
    cfg_t *cfg = c->cfg;
    cfg_supervisor_t *s = &cfg->supervisor;

    if (s->restart_backoff_initial_ms > s->restart_backoff_max_ms) {
        bool at_init = c->slot[SL_BACKOFF_INIT] != NULL;
        err_path(c, mark_or(at_init ? c->slot[SL_BACKOFF_INIT] : c->slot[SL_BACKOFF_MAX], top),
                 at_init ? "supervisor.restart_backoff_initial_ms" : "supervisor.restart_backoff_max_ms",
                 "restart_backoff_initial_ms (%d) must not exceed restart_backoff_max_ms (%d)",
                 s->restart_backoff_initial_ms, s->restart_backoff_max_ms);
    }
    if (s->drain_timeout_ms >= s->shutdown_timeout_ms) {
        bool at_drain = c->slot[SL_DRAIN] != NULL;
        err_path(c, mark_or(at_drain ? c->slot[SL_DRAIN] : c->slot[SL_SHUTDOWN], top),
                 at_drain ? "supervisor.drain_timeout_ms" : "supervisor.shutdown_timeout_ms",
                 "drain_timeout_ms (%d) must be less than shutdown_timeout_ms (%d)", s->drain_timeout_ms,
                 s->shutdown_timeout_ms);
    }
    if (cfg->healthcheck.store == CFG_HC_REDIS && !cfg->healthcheck.redis_address)
        err_path(c, mark_or(c->slot[SL_HC_STORE], top), "healthcheck.redis.address",
                 "required when healthcheck.store is redis");
    cfg_healthcheck_t *hc = &cfg->healthcheck;
    if (hc->min_check_interval_ms > hc->max_check_interval_ms) {
        bool at_min = c->slot[SL_HC_MIN] != NULL;
        err_path(c, mark_or(at_min ? c->slot[SL_HC_MIN] : c->slot[SL_HC_MAX], top),
                 at_min ? "healthcheck.min_check_interval_ms" : "healthcheck.max_check_interval_ms",
                 "min_check_interval_ms (%d) must not exceed max_check_interval_ms (%d)", hc->min_check_interval_ms,
                 hc->max_check_interval_ms);
    } else if (hc->max_check_interval_ms < hc->slot_num) {
        bool at_slots = c->slot[SL_HC_SLOTS] != NULL;
        err_path(c, mark_or(at_slots ? c->slot[SL_HC_SLOTS] : c->slot[SL_HC_MAX], top),
                 at_slots ? "healthcheck.slot_num" : "healthcheck.max_check_interval_ms",
                 "%d slots over max_check_interval_ms %d would tick faster than 1 ms", hc->slot_num,
                 hc->max_check_interval_ms);
    }
    if (cfg->runtime_dir && strlen(cfg->runtime_dir) > CFG_RUNTIME_DIR_MAX)
        err_path(c, mark_or(c->slot[SL_RUNTIME_DIR], top), "runtime_dir",
                 "\"%s\" is too long for Unix socket paths (at most %d bytes)", cfg->runtime_dir,
                 CFG_RUNTIME_DIR_MAX);
    check_roles(c);
    /* a change push carries a file's release and beta contents in one frame
     * (the default is lowered by the worker itself to fit small frames) */
    uint64_t need = 2ull * cfg->config_worker.max_content_bytes + 65536u;
    if (c->slot[SL_CFG_MAX_CONTENT] && need > cfg->ipc.max_frame_bytes)
        err_path(c, mark_or(c->slot[SL_CFG_MAX_CONTENT], top), "workers.config.max_content_bytes",
                 "%u bytes do not fit IPC frames of ipc.max_frame_bytes (%u): twice the content plus 64 KiB must fit",
                 cfg->config_worker.max_content_bytes, cfg->ipc.max_frame_bytes);

    for (size_t i = 0; i < cfg->n_proc_logs; i++) {
        cfg_log_t *l = &cfg->proc_logs[i].log;
        if (l->level < 0)
            l->level = cfg->log.level;
        if (!c->ppos[i].file_set && cfg->log.file) {
            l->file = xstrdup(c, cfg->log.file);
        }
    }

    const char *env_dsn = getenv("LODESTAR_PG_DSN");
    if (env_dsn && *env_dsn)
        set_str(&cfg->store.dsn, xstrdup(c, env_dsn));
}

/* Report libyaml's error with its position. */
static void yaml_syntax_error(ctx_t *c, const yaml_parser_t *p, const char *buf, size_t len)
{
    yaml_mark_t m = p->problem_mark;
    if (p->error == YAML_READER_ERROR) {
        /* reader errors carry a byte offset, not a mark */
        size_t off = p->problem_offset < len ? p->problem_offset : len;
        m.line = m.column = 0;
        for (size_t i = 0; i < off; i++) {
            if (buf[i] == '\n') {
                m.line++;
                m.column = 0;
            } else {
                m.column++;
            }
        }
    }
    const char *problem = p->problem ? p->problem : (p->error == YAML_MEMORY_ERROR ? "out of memory" : "invalid YAML");
    if (p->context)
        err_path(c, m, "(syntax)", "%s (%s at line %zu, column %zu)", problem, p->context,
                 (size_t)p->context_mark.line + 1, (size_t)p->context_mark.column + 1);
    else
        err_path(c, m, "(syntax)", "%s", problem);
}

/* ------------------------------------------------------------------ */
/* Public API                                                          */
/* ------------------------------------------------------------------ */

void cfg_errors_clear(cfg_errors_t *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->count && i < CFG_MAX_ERRORS; i++)
        free(errs->msgs[i]);
    memset(errs, 0, sizeof *errs);
}

void cfg_free(cfg_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->base_dir);
    free(cfg->runtime_dir);
    free(cfg->log.file);
    for (size_t i = 0; i < cfg->n_proc_logs; i++) {
        free(cfg->proc_logs[i].role);
        free(cfg->proc_logs[i].log.file);
    }
    free(cfg->proc_logs);
    free(cfg->store.dsn);
    free(cfg->store.embedded.data_dir);
    free(cfg->store.embedded.bin_dir);
    free(cfg->store.embedded.user);
    free(cfg->healthcheck.redis_address);
    free(cfg->healthcheck.redis_password);
    free(cfg->healthcheck.redis_key_prefix);
    free(cfg->healthcheck.cluster_node_id);
    listeners_free(cfg);
    free(cfg);
}

/* A plain error with no position (the file cannot be used at all). */
__attribute__((format(printf, 2, 3))) static int fail_plain(cfg_errors_t *errs, const char *fmt, ...)
{
    if (!errs)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    char *m = NULL;
    if (vasprintf(&m, fmt, ap) < 0)
        m = NULL;
    va_end(ap);
    if (m)
        errs->msgs[errs->count++] = m;
    else
        errs->dropped++;
    return -1;
}

int cfg_load_buffer(const char *buf, size_t len, const char *path, cfg_t **out, cfg_errors_t *errs)
{
    *out = NULL;
    cfg_errors_clear(errs);
    const char *shown = path && *path ? path : "<config>";

    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return fail_plain(errs, "%s: cannot determine the current directory: %s", shown, strerror(errno));

    ctx_t c = {.file = shown};
    cfg_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return fail_plain(errs, "%s: out of memory", shown);
    c.cfg = cfg;
    cfg->path = path_abs(cwd, path && *path ? path : "lodestar.yaml");
    if (cfg->path) {
        cfg->base_dir = strdup(cfg->path);
        if (cfg->base_dir) {
            char *slash = strrchr(cfg->base_dir, '/');
            if (slash == cfg->base_dir)
                slash[1] = '\0';
            else if (slash)
                *slash = '\0';
        }
    }
    if (!cfg->path || !cfg->base_dir || set_defaults(&c, cfg) < 0) {
        cfg_free(cfg);
        return fail_plain(errs, "%s: out of memory", shown);
    }

    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        cfg_free(cfg);
        return fail_plain(errs, "%s: out of memory", shown);
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)(buf ? buf : ""), buf ? len : 0);
    yaml_mark_t top = {0};
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_syntax_error(&c, &parser, buf ? buf : "", buf ? len : 0);
    } else {
        c.doc = &doc;
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (root) {
            top = root->start_mark;
            parse_map(&c, root, top_fields, cfg);
        }
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next)) {
            yaml_syntax_error(&c, &parser, buf ? buf : "", buf ? len : 0);
        } else {
            yaml_node_t *r2 = yaml_document_get_root_node(&next);
            if (r2)
                err_path(&c, r2->start_mark, "(syntax)", "expected a single YAML document, found another one");
            yaml_document_delete(&next);
        }
        finalize(&c, top);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    free(c.ppos);
    free(c.lpos);

    if (c.n_errs || c.oom) {
        errs_flush(&c, errs);
        cfg_free(cfg);
        if (c.oom && errs && errs->count < CFG_MAX_ERRORS)
            return fail_plain(errs, "%s: out of memory", shown);
        return -1;
    }
    free(c.errs);
    *out = cfg;
    return 0;
}

int cfg_load_file(const char *path, cfg_t **out, cfg_errors_t *errs)
{
    *out = NULL;
    cfg_errors_clear(errs);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail_plain(errs, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len == cap) {
            if (cap >= CFG_FILE_MAX) {
                free(buf);
                fclose(f);
                return fail_plain(errs, "%s: larger than %u bytes", path, CFG_FILE_MAX);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (!buf) {
        fclose(f);
        return fail_plain(errs, "%s: out of memory", path);
    }
    if (ferror(f)) {
        int e = errno;
        free(buf);
        fclose(f);
        return fail_plain(errs, "%s: cannot read: %s", path, strerror(e));
    }
    fclose(f);
    int r = cfg_load_buffer(buf, len, path, out, errs);
    free(buf);
    return r;
}

const cfg_log_t *cfg_log_for(const cfg_t *cfg, const char *role)
{
    if (role)
        for (size_t i = 0; i < cfg->n_proc_logs; i++)
            if (cfg->proc_logs[i].role && strcmp(cfg->proc_logs[i].role, role) == 0)
                return &cfg->proc_logs[i].log;
    return &cfg->log;
}

/* Append a libpq conninfo value, single-quoted when it needs quoting. */
static void conninfo_value(FILE *f, const char *v)
{
    bool quote = *v == '\0';
    for (const char *p = v; *p; p++)
        if (isspace((unsigned char)*p) || *p == '\'' || *p == '\\')
            quote = true;
    if (!quote) {
        fputs(v, f);
        return;
    }
    fputc('\'', f);
    for (const char *p = v; *p; p++) {
        if (*p == '\'' || *p == '\\')
            fputc('\\', f);
        fputc(*p, f);
    }
    fputc('\'', f);
}

char *cfg_store_dsn(const cfg_t *cfg)
{
    if (cfg->store.dsn)
        return strdup(cfg->store.dsn);
    char *sock = cfg_pg_socket_dir(cfg);
    if (!sock)
        return NULL;
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    if (!f) {
        free(sock);
        return NULL;
    }
    fputs("host=", f);
    conninfo_value(f, sock);
    fprintf(f, " port=%d dbname=lodestar user=lodestar", cfg->store.embedded.port);
    free(sock);
    if (fclose(f) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

char *cfg_pg_socket_dir(const cfg_t *cfg)
{
    char *s;
    return asprintf(&s, "%s/pg", cfg->runtime_dir) < 0 ? NULL : s;
}

char *cfg_ipc_path(const cfg_t *cfg, const char *role)
{
    char *s;
    return asprintf(&s, "%s/%s.sock", cfg->runtime_dir, role) < 0 ? NULL : s;
}

char *cfg_control_path(const cfg_t *cfg)
{
    char *s;
    return asprintf(&s, "%s/control.sock", cfg->runtime_dir) < 0 ? NULL : s;
}

bool cfg_listener_socket_differs(const cfg_listener_t *a, const cfg_listener_t *b)
{
    if (!a || !b)
        return a != b;
    if (a->port != b->port)
        return true;
    unsigned char x[16], y[16];
    int fa = addr_parse(a->address, x), fb = addr_parse(b->address, y);
    if (fa && fb)
        return fa != fb || memcmp(x, y, fa == AF_INET ? 4 : 16) != 0;
    if (!a->address || !b->address)
        return a->address != b->address;
    return strcmp(a->address, b->address) != 0;
}

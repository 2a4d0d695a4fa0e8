/*
 * cc_beta.c: beta release targets (see cc_beta.h).
 */
#include "cc_beta.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool grow(char ***arr, size_t n)
{
    char **a = realloc(*arr, (n + 1) * sizeof *a);
    if (!a)
        return false;
    *arr = a;
    return true;
}

/* IPv4-mapped IPv6 clients ("::ffff:10.0.0.1") compare as their IPv4 form. */
static const char *plain_ip(const char *ip)
{
    if (ip && strncasecmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.'))
        return ip + 7;
    return ip;
}

int cc_beta_add_ip(cc_beta_t *b, const char *ip, char *err, size_t errlen)
{
    unsigned char bin[16];
    if (!ip || (inet_pton(AF_INET, ip, bin) != 1 && inet_pton(AF_INET6, ip, bin) != 1)) {
        snprintf(err, errlen, "beta client IP \"%s\" is not an IPv4 or IPv6 address", ip ? ip : "");
        return -EINVAL;
    }
    ip = plain_ip(ip);
    for (size_t i = 0; i < b->n_ips; i++)
        if (strcmp(b->ips[i], ip) == 0)
            return 0;
    char *d = strdup(ip);
    if (!d || !grow(&b->ips, b->n_ips)) {
        free(d);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    b->ips[b->n_ips++] = d;
    return 0;
}

int cc_beta_add_label(cc_beta_t *b, const char *key, const char *value, char *err, size_t errlen)
{
    if (!key || !*key) {
        snprintf(err, errlen, "beta label with an empty key");
        return -EINVAL;
    }
    for (size_t i = 0; i < b->n_labels; i++)
        if (strcmp(b->keys[i], key) == 0) {
            if (strcmp(b->values[i], value ? value : "") == 0)
                return 0;
            snprintf(err, errlen, "beta label \"%s\" is given twice with different values", key);
            return -EINVAL;
        }
    char *k = strdup(key), *v = strdup(value ? value : "");
    if (!k || !v || !grow(&b->keys, b->n_labels) || !grow(&b->values, b->n_labels)) {
        free(k);
        free(v);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    b->keys[b->n_labels] = k;
    b->values[b->n_labels] = v;
    b->n_labels++;
    return 0;
}

void cc_beta_free(cc_beta_t *b)
{
    for (size_t i = 0; i < b->n_ips; i++)
        free(b->ips[i]);
    for (size_t i = 0; i < b->n_labels; i++) {
        free(b->keys[i]);
        free(b->values[i]);
    }
    free(b->ips);
    free(b->keys);
    free(b->values);
    memset(b, 0, sizeof *b);
}

static const char *match_type_name(int t)
{
    switch (t) {
    case V1__MATCH_STRING__MATCH_STRING_TYPE__EXACT: return "EXACT";
    case V1__MATCH_STRING__MATCH_STRING_TYPE__REGEX: return "REGEX";
    case V1__MATCH_STRING__MATCH_STRING_TYPE__NOT_EQUALS: return "NOT_EQUALS";
    case V1__MATCH_STRING__MATCH_STRING_TYPE__IN: return "IN";
    case V1__MATCH_STRING__MATCH_STRING_TYPE__NOT_IN: return "NOT_IN";
    case V1__MATCH_STRING__MATCH_STRING_TYPE__RANGE: return "RANGE";
    }
    return "unknown";
}

/* Every comma-separated, blank-trimmed IP of list. */
static int add_ip_list(cc_beta_t *b, const char *list, char *err, size_t errlen)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = 0, n = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ' || *t == '\t')
            t++;
        size_t l = strlen(t);
        while (l && (t[l - 1] == ' ' || t[l - 1] == '\t'))
            t[--l] = '\0';
        if (!*t)
            continue;
        rc = cc_beta_add_ip(b, t, err, errlen);
        n++;
    }
    free(copy);
    if (rc == 0 && n == 0) {
        snprintf(err, errlen, "beta rule %s names no IP", CC_CLIENT_IP_LABEL);
        rc = -EINVAL;
    }
    return rc;
}

int cc_beta_from_labels(V1__ClientLabel *const *labels, size_t n, cc_beta_t *out, char *err, size_t errlen)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const V1__ClientLabel *l = labels[i];
        const char *key = l && l->key ? l->key : "";
        int type = l && l->value ? (int)l->value->type : V1__MATCH_STRING__MATCH_STRING_TYPE__EXACT;
        const char *value = l && l->value && l->value->value && l->value->value->value ? l->value->value->value : "";
        if (!*key) {
            snprintf(err, errlen, "beta_labels[%zu] has an empty key", i);
            rc = -EINVAL;
        } else if (strcmp(key, CC_CLIENT_IP_LABEL) == 0) {
            if (type == V1__MATCH_STRING__MATCH_STRING_TYPE__EXACT || type == V1__MATCH_STRING__MATCH_STRING_TYPE__IN)
                rc = add_ip_list(out, value, err, errlen);
            else {
                snprintf(err, errlen, "beta_labels[%zu] (%s): match type %s is not supported; use EXACT or IN", i,
                         key, match_type_name(type));
                rc = -EINVAL;
            }
        } else if (type == V1__MATCH_STRING__MATCH_STRING_TYPE__EXACT) {
            rc = cc_beta_add_label(out, key, value, err, errlen);
        } else {
            snprintf(err, errlen, "beta_labels[%zu] (%s): match type %s is not supported; use EXACT", i, key,
                     match_type_name(type));
            rc = -EINVAL;
        }
    }
    if (rc == 0 && out->n_ips == 0 && out->n_labels == 0) {
        snprintf(err, errlen, "a beta release needs client IPs or labels in beta_labels");
        rc = -EINVAL;
    }
    if (rc < 0)
        cc_beta_free(out);
    return rc;
}

json_t *cc_beta_to_json(const cc_beta_t *b)
{
    json_t *ips = json_array(), *labels = json_object();
    for (size_t i = 0; i < b->n_ips; i++)
        json_array_append_new(ips, json_string(b->ips[i]));
    for (size_t i = 0; i < b->n_labels; i++)
        json_object_set_new(labels, b->keys[i], json_string(b->values[i]));
    return json_pack("{s:o,s:o}", "ips", ips, "labels", labels);
}

int cc_beta_from_json(const json_t *ips, const json_t *labels, cc_beta_t *out)
{
    char err[256];
    if (ips && !json_is_array(ips))
        return -EINVAL;
    if (labels && !json_is_object(labels))
        return -EINVAL;
    size_t i;
    json_t *v;
    json_array_foreach(ips, i, v)
    {
        if (!json_is_string(v) || cc_beta_add_ip(out, json_string_value(v), err, sizeof err) < 0) {
            cc_beta_free(out);
            return -EINVAL;
        }
    }
    const char *k;
    json_object_foreach((json_t *)labels, k, v)
    {
        if (!json_is_string(v) || cc_beta_add_label(out, k, json_string_value(v), err, sizeof err) < 0) {
            cc_beta_free(out);
            return -EINVAL;
        }
    }
    return 0;
}

bool cc_beta_matches(const cc_beta_t *b, const char *client_ip, const char *const *keys, const char *const *values,
                     size_t n)
{
    const char *ip = plain_ip(client_ip);
    for (size_t i = 0; ip && i < b->n_ips; i++)
        if (strcmp(b->ips[i], ip) == 0)
            return true;
    if (b->n_labels == 0)
        return false;
    for (size_t i = 0; i < b->n_labels; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = keys[j] && strcmp(keys[j], b->keys[i]) == 0 && values[j] && strcmp(values[j], b->values[i]) == 0;
        if (!found)
            return false;
    }
    return true;
}

bool cc_beta_target_matches(const Lodestar__ConfigBetaTarget *t, const char *client_ip, V1__ConfigFileTag *const *tags,
                            size_t n_tags)
{
    if (!t)
        return false;
    const char *ip = plain_ip(client_ip);
    for (size_t i = 0; ip && i < t->n_client_ips; i++)
        if (t->client_ips[i] && strcmp(t->client_ips[i], ip) == 0)
            return true;
    if (t->n_labels == 0)
        return false;
    for (size_t i = 0; i < t->n_labels; i++) {
        const char *k = t->labels[i]->key ? t->labels[i]->key : "";
        const char *v = t->labels[i]->value ? t->labels[i]->value : "";
        bool found = false;
        for (size_t j = 0; j < n_tags && !found; j++) {
            const V1__ConfigFileTag *tag = tags[j];
            const char *tk = tag && tag->key && tag->key->value ? tag->key->value : NULL;
            const char *tv = tag && tag->value && tag->value->value ? tag->value->value : "";
            found = tk && strcmp(tk, k) == 0 && strcmp(tv, v) == 0;
        }
        if (!found)
            return false;
    }
    return true;
}

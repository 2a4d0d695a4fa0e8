/*
 * cc_beta.h: who gets a beta (gray) release, and whether a client is one of
 * them. Shared by the config worker (which stores targets) and gateways
 * (which match their clients against ConfigBetaTarget from the replica).
 *
 * A target is a list of client IPs and a set of labels. A client matches
 * when its IP is in the list, or when the label set is not empty and the
 * client carries every label with the same value. A target with neither
 * IPs nor labels is refused (it would match nobody).
 *
 * Polaris expresses targets as v1.ClientLabel rules (release_type "gray",
 * beta_labels): key CLIENT_IP with an EXACT or IN (comma-separated) match
 * gives IPs; any other key with an EXACT match gives a label. Other match
 * types are refused with a reason (Polaris code 400904).
 */
#ifndef LODESTAR_CC_BETA_H
#define LODESTAR_CC_BETA_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "config.pb-c.h"
#include "polaris_config_file.pb-c.h"
#include "polaris_model.pb-c.h"

#define CC_CLIENT_IP_LABEL "CLIENT_IP"

typedef struct cc_beta {
    char **ips;
    size_t n_ips;
    char **keys;
    char **values;
    size_t n_labels;
} cc_beta_t;

/* Fill *out (zeroed by the caller) from Polaris beta rules. Returns 0, or
 * -EINVAL with a reason naming the rule (out is emptied then). */
int cc_beta_from_labels(V1__ClientLabel *const *labels, size_t n, cc_beta_t *out, char *err, size_t errlen);
/* Add one IP (validated as an IPv4 or IPv6 literal) or one label. */
int cc_beta_add_ip(cc_beta_t *b, const char *ip, char *err, size_t errlen);
int cc_beta_add_label(cc_beta_t *b, const char *key, const char *value, char *err, size_t errlen);
/* The stored form: {"ips": [...], "labels": {...}}. */
json_t *cc_beta_to_json(const cc_beta_t *b);
/* From the stored form (ips: JSON array of strings, labels: JSON object of
 * strings; either may be NULL). Returns 0 or -EINVAL when malformed. */
int cc_beta_from_json(const json_t *ips, const json_t *labels, cc_beta_t *out);
void cc_beta_free(cc_beta_t *b);

/* The client at `client_ip` with labels keys[i]=values[i]. */
bool cc_beta_matches(const cc_beta_t *b, const char *client_ip, const char *const *keys, const char *const *values,
                     size_t n);
/* The same on the replica's form, with a Polaris client's tags as labels. */
bool cc_beta_target_matches(const Lodestar__ConfigBetaTarget *t, const char *client_ip, V1__ConfigFileTag *const *tags,
                            size_t n_tags);

#endif

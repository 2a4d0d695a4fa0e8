/*
 * naming_id.h: identities and revisions of the naming model, computed the
 * same way in the naming worker and in every gateway.
 *
 *  - Instance id (Polaris): lowercase hex SHA-1 of
 *      namespace##service##host##port            (no vpc id)
 *      namespace##service##vpc_id##host##port    (with a vpc id)
 *    so a client that registers without an id, and one that heartbeats with
 *    only namespace, service, host and port, land on the same instance.
 *  - Revisions are lowercase hex SHA-1 digests of the content they stand
 *    for, so two nodes holding the same data report the same revision.
 */
#ifndef LODESTAR_NAMING_ID_H
#define LODESTAR_NAMING_ID_H

#include <stddef.h>

#define NAMING_HEX_LEN 40 /* a SHA-1 in hex, without the NUL */

/* out must hold NAMING_HEX_LEN + 1 bytes. vpc_id may be NULL or "". */
void naming_instance_id(const char *ns, const char *service, const char *vpc_id, const char *host, unsigned port,
                        char out[NAMING_HEX_LEN + 1]);

/* Incremental SHA-1 for revisions: init, add any number of byte runs (each
 * run is length-prefixed so ("ab","c") and ("a","bc") differ), finish. */
typedef struct naming_digest {
    void *ctx;
} naming_digest_t;
int naming_digest_init(naming_digest_t *d);
void naming_digest_add(naming_digest_t *d, const void *data, size_t len);
void naming_digest_add_str(naming_digest_t *d, const char *s); /* NULL hashes like "" */
void naming_digest_hex(naming_digest_t *d, char out[NAMING_HEX_LEN + 1]); /* finishes and frees */

#endif

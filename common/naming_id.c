/*
 * naming_id.c: see naming_id.h. OpenSSL's EVP SHA-1.
 */
#include "naming_id.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

static void to_hex(const unsigned char *md, unsigned n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * n] = '\0';
}

void naming_instance_id(const char *ns, const char *service, const char *vpc_id, const char *host, unsigned port,
                        char out[NAMING_HEX_LEN + 1])
{
    char buf[2048];
    int n;
    if (vpc_id && *vpc_id)
        n = snprintf(buf, sizeof buf, "%s##%s##%s##%s##%u", ns, service, vpc_id, host, port);
    else
        n = snprintf(buf, sizeof buf, "%s##%s##%s##%u", ns, service, host, port);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf)
        n = (int)sizeof buf - 1; /* names are validated far below this */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(buf, (size_t)n, md, &mdlen, EVP_sha1(), NULL);
    to_hex(md, mdlen, out);
}

int naming_digest_init(naming_digest_t *d)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        d->ctx = NULL;
        return -1;
    }
    d->ctx = ctx;
    return 0;
}

void naming_digest_add(naming_digest_t *d, const void *data, size_t len)
{
    if (!d->ctx)
        return;
    uint64_t be = 0;
    for (int i = 0; i < 8; i++)
        ((unsigned char *)&be)[i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    EVP_DigestUpdate(d->ctx, &be, sizeof be);
    if (len)
        EVP_DigestUpdate(d->ctx, data, len);
}

void naming_digest_add_str(naming_digest_t *d, const char *s)
{
    naming_digest_add(d, s ? s : "", s ? strlen(s) : 0);
}

void naming_digest_hex(naming_digest_t *d, char out[NAMING_HEX_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!d->ctx || EVP_DigestFinal_ex(d->ctx, md, &mdlen) != 1) {
        memset(out, '0', NAMING_HEX_LEN);
        out[NAMING_HEX_LEN] = '\0';
    } else {
        to_hex(md, mdlen, out);
    }
    EVP_MD_CTX_free(d->ctx);
    d->ctx = NULL;
}

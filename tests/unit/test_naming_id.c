/*
 * test_naming_id.c: Polaris instance ids and content revisions.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "naming_id.h"

Test(naming_id, instance_id_is_sha1_of_the_polaris_key)
{
    char id[NAMING_HEX_LEN + 1];
    /* printf -n 'default##echo##127.0.0.1##8080' | sha1sum */
    naming_instance_id("default", "echo", NULL, "127.0.0.1", 8080, id);
    cr_assert_str_eq(id, "34d38d94b2472bf626e94f7dabcf497d77b241bc");
    naming_instance_id("default", "echo", "", "127.0.0.1", 8080, id);
    cr_assert_str_eq(id, "34d38d94b2472bf626e94f7dabcf497d77b241bc", "an empty vpc id must not change the id");
    /* printf -n 'default##echo##vpc-1##127.0.0.1##8080' | sha1sum */
    naming_instance_id("default", "echo", "vpc-1", "127.0.0.1", 8080, id);
    cr_assert_str_eq(id, "3b50f0ba215606707a6e34acb3777b4253297a45");
}

Test(naming_id, digests_are_length_prefixed_and_deterministic)
{
    naming_digest_t a, b, c;
    char ha[NAMING_HEX_LEN + 1], hb[NAMING_HEX_LEN + 1], hc[NAMING_HEX_LEN + 1];
    naming_digest_init(&a);
    naming_digest_add_str(&a, "ab");
    naming_digest_add_str(&a, "c");
    naming_digest_hex(&a, ha);
    naming_digest_init(&b);
    naming_digest_add_str(&b, "a");
    naming_digest_add_str(&b, "bc");
    naming_digest_hex(&b, hb);
    naming_digest_init(&c);
    naming_digest_add_str(&c, "ab");
    naming_digest_add_str(&c, "c");
    naming_digest_hex(&c, hc);
    cr_assert_str_neq(ha, hb, "(\"ab\",\"c\") and (\"a\",\"bc\") must differ");
    cr_assert_str_eq(ha, hc);
    cr_assert_eq(strlen(ha), NAMING_HEX_LEN);
}

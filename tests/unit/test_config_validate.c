/*
 * test_config_validate.c: the config centre's input checks
 * (workers/config/core/cc_validate.c, cc_beta.c): names, formats, content
 * per format with the exact line, column and reason, UTF-8, MD5, and beta
 * targets from Polaris rules and their matching.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_beta.h"
#include "cc_validate.h"

/* Validate s as fmt: expect success (want NULL) or exactly the message want. */
static void expect(cc_format_t fmt, const char *s, const char *want)
{
    char err[512] = "";
    int rc = cc_validate_content(fmt, s, strlen(s), err, sizeof err);
    if (!want) {
        cr_assert_eq(rc, 0, "%s content should be valid: <<%s>> (error: %s)", cc_format_name(fmt), s, err);
        return;
    }
    cr_assert_eq(rc, -EINVAL, "%s content should be refused: <<%s>>", cc_format_name(fmt), s);
    cr_assert_str_eq(err, want, "%s content <<%s>>", cc_format_name(fmt), s);
}

TestSuite(config_validate, .fini = cc_validate_cleanup);

Test(config_validate, format_names)
{
    cr_assert_eq(cc_format_parse(NULL), CC_FMT_TEXT);
    cr_assert_eq(cc_format_parse(""), CC_FMT_TEXT);
    cr_assert_eq(cc_format_parse("json"), CC_FMT_JSON);
    cr_assert_eq(cc_format_parse("YAML"), CC_FMT_YAML);
    cr_assert_eq(cc_format_parse("xml"), CC_FMT_XML);
    cr_assert_eq(cc_format_parse("properties"), CC_FMT_PROPERTIES);
    cr_assert_eq(cc_format_parse("html"), CC_FMT_HTML);
    cr_assert_eq(cc_format_parse("text"), CC_FMT_TEXT);
    cr_assert_eq(cc_format_parse("toml"), -EINVAL, "toml is not a Polaris format");
    cr_assert_eq(cc_format_parse("yml"), -EINVAL);
    cr_assert_str_eq(cc_format_name(CC_FMT_PROPERTIES), "properties");
}

Test(config_validate, resource_and_file_names)
{
    char err[256];
    cr_assert_eq(cc_check_resource_name("group", "app-1.v2:x_y", CC_MAX_NAME_LEN, err, sizeof err), 0, "%s", err);
    cr_assert_eq(cc_check_resource_name("group", "a/b", CC_MAX_NAME_LEN, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "group \"a/b\" holds '/' at offset 1; allowed are letters, digits and '-', '.', ':', '_'");
    cr_assert_eq(cc_check_resource_name("namespace", "", CC_MAX_NAMESPACE_LEN, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "namespace is empty");
    cr_assert_eq(cc_check_resource_name("namespace", NULL, CC_MAX_NAMESPACE_LEN, err, sizeof err), -EINVAL);
    char longname[80];
    memset(longname, 'n', 65);
    longname[65] = '\0';
    cr_assert_eq(cc_check_resource_name("namespace", longname, CC_MAX_NAMESPACE_LEN, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "namespace is 65 bytes long; at most 64 are allowed");
    longname[64] = '\0';
    cr_assert_eq(cc_check_resource_name("namespace", longname, CC_MAX_NAMESPACE_LEN, err, sizeof err), 0);

    cr_assert_eq(cc_check_file_name("conf/app/application.yaml", err, sizeof err), 0, "file names may hold '/': %s",
                 err);
    cr_assert_eq(cc_check_file_name("a b.json", err, sizeof err), -EINVAL);
    cr_assert_str_eq(err,
                     "file name \"a b.json\" holds ' ' at offset 1; allowed are letters, digits and '-', '.', '/', ':', '_'");
    cr_assert_eq(cc_check_file_name("caf\xc3\xa9", err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "file name holds byte 0xc3 at offset 3; allowed are letters, digits and '-', '.', '/', ':', '_'");

    cr_assert_eq(cc_check_release_name("v1.2 release \xe2\x9c\x93", err, sizeof err), 0, "%s", err);
    cr_assert_eq(cc_check_release_name("tab\there", err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "release name holds control character 0x09 at offset 3");
}

Test(config_validate, utf8)
{
    size_t bad = 99;
    cr_assert(cc_utf8_valid("plain \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 15, &bad));
    cr_assert_not(cc_utf8_valid("ab\xc3", 3, &bad), "truncated sequence");
    cr_assert_eq(bad, 2);
    cr_assert_not(cc_utf8_valid("a\xc0\xaf", 3, &bad), "overlong '/'");
    cr_assert_eq(bad, 1);
    cr_assert_not(cc_utf8_valid("\xed\xa0\x80", 3, &bad), "surrogate");
    cr_assert_eq(bad, 0);
    cr_assert_not(cc_utf8_valid("ab\0cd", 5, &bad), "NUL byte");
    cr_assert_eq(bad, 2);
    cr_assert_not(cc_utf8_valid("\xf4\x90\x80\x80", 4, &bad), "above U+10FFFF");
}

Test(config_validate, json)
{
    expect(CC_FMT_JSON, "{\"a\": 1, \"b\": [true, null, \"\xc3\xa9\"]}", NULL);
    expect(CC_FMT_JSON, "42", NULL);
    expect(CC_FMT_JSON, "{\n  \"a\": 1,\n  \"b\": ]\n}", "line 3, column 8: unexpected token near ']'");
    expect(CC_FMT_JSON, "{\"a\": 1,}", "line 1, column 9: string or '}' expected near '}'");
    expect(CC_FMT_JSON, "{\"a\":1} x", "line 1, column 9: end of file expected near 'x'");
    expect(CC_FMT_JSON, "", "line 1, column 1: unexpected token near end of file");
}

Test(config_validate, yaml)
{
    expect(CC_FMT_YAML, "server:\n  port: 8080\n  hosts: [a, b]\n", NULL);
    expect(CC_FMT_YAML, "a: 1\n---\nb: 2\n", NULL);
    expect(CC_FMT_YAML, "", NULL);
    expect(CC_FMT_YAML, "a: 1\nb: [1, 2\n",
           "line 3, column 1: did not find expected ',' or ']' (while parsing a flow sequence at line 2, column 4)");
    expect(CC_FMT_YAML, "a: 1\n  b: 2\n", "line 2, column 4: mapping values are not allowed in this context");
    expect(CC_FMT_YAML, "a:\n  - 1\n - 2\n",
           "line 3, column 2: did not find expected key (while parsing a block mapping at line 1, column 1)");
    expect(CC_FMT_YAML, "key: \"unterminated\n",
           "line 2, column 1: found unexpected end of stream (while scanning a quoted scalar at line 1, column 6)");
}

Test(config_validate, xml)
{
    expect(CC_FMT_XML, "<?xml version=\"1.0\"?>\n<a><b x=\"1\">t</b><c/></a>\n", NULL);
    expect(CC_FMT_XML, "<a>\n<b>x</c>\n</a>", "line 2, column 9: Opening and ending tag mismatch: b line 2 and c");
    expect(CC_FMT_XML, "", "line 1, column 1: Document is empty");
    expect(CC_FMT_XML, "<a>", "line 1, column 4: Premature end of data in tag a line 1");
    expect(CC_FMT_XML, "<a x='1' x='2'/>", "line 1, column 15: Attribute x redefined");
    expect(CC_FMT_XML, "<a/><b/>", "line 1, column 5: Extra content at the end of the document");
    expect(CC_FMT_XML, "<a>&undefined;</a>", "line 1, column 15: Entity 'undefined' not defined");
    /* well-formed, and nothing outside the content is read */
    expect(CC_FMT_XML,
           "<?xml version=\"1.0\"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///nonexistent/lodestar\">]>\n<x>&e;</x>", NULL);
}

Test(config_validate, properties)
{
    expect(CC_FMT_PROPERTIES,
           "# comment with \\uZZZZ is ignored\n! so is this\n\na=1\nb = \\u0041\\t\\\\\nc: x\\\n  \\u00e9\nkey\\ with\\ "
           "space value\nlonely\n",
           NULL);
    expect(CC_FMT_PROPERTIES, "", NULL);
    /* a \u escape split by a line continuation is joined first (Java does the same) */
    expect(CC_FMT_PROPERTIES, "a=\\u00\\\n41\n", NULL);
    /* an even number of trailing backslashes does not continue the line */
    expect(CC_FMT_PROPERTIES, "a=x\\\\\n\\u0041=y\n", NULL);
    expect(CC_FMT_PROPERTIES, "a=1\nb=\\u12G4\n",
           "line 2, column 3: malformed \\uxxxx encoding (\\u12G4): four hexadecimal digits must follow \\u");
    expect(CC_FMT_PROPERTIES, "a=1\nkey=abc\\\n    \\u00\n",
           "line 3, column 5: malformed \\uxxxx encoding (\\u00): four hexadecimal digits must follow \\u");
    expect(CC_FMT_PROPERTIES, "x=\\u",
           "line 1, column 3: malformed \\uxxxx encoding (\\u): four hexadecimal digits must follow \\u");
    expect(CC_FMT_PROPERTIES, "\r\nk=v\r\nbad=\\uabc\r\n",
           "line 3, column 5: malformed \\uxxxx encoding (\\uabc): four hexadecimal digits must follow \\u");
    /* a bad escape in a key is found as well */
    expect(CC_FMT_PROPERTIES, "ok=1\r\r\\uXYZW=2\n",
           "line 3, column 1: malformed \\uxxxx encoding (\\uXYZW): four hexadecimal digits must follow \\u");
}

Test(config_validate, text_and_html_are_taken_as_they_are)
{
    expect(CC_FMT_TEXT, "{ not json <not xml", NULL);
    expect(CC_FMT_HTML, "<p>unclosed <b>html", NULL);
}

Test(config_validate, md5)
{
    char out[CC_MD5_HEX_LEN + 1];
    cr_assert_eq(cc_md5_hex("", 0, out), 0);
    cr_assert_str_eq(out, "d41d8cd98f00b204e9800998ecf8427e");
    cr_assert_eq(cc_md5_hex("{}", 2, out), 0);
    cr_assert_str_eq(out, "99914b932bd37a50b983c5e7c90ae93b", "the same as PostgreSQL's md5('{}')");
    cr_assert_eq(cc_md5_hex("hello", 5, out), 0);
    cr_assert_str_eq(out, "5d41402abc4b2a76b9719d911017c592");
    cr_assert_eq(cc_md5_hex("caf\xc3\xa9", 5, out), 0);
    cr_assert_str_eq(out, "07117fe4a1ebd544965dc19573183da2", "md5 of the UTF-8 bytes");
}

/* ---- beta targets ---- */

static V1__ClientLabel *label(const char *key, V1__MatchString__MatchStringType type, const char *value)
{
    V1__ClientLabel *l = calloc(1, sizeof *l);
    V1__MatchString *m = calloc(1, sizeof *m);
    Google__Protobuf__StringValue *v = calloc(1, sizeof *v);
    v1__client_label__init(l);
    v1__match_string__init(m);
    google__protobuf__string_value__init(v);
    v->value = (char *)value;
    m->type = type;
    m->value = v;
    l->key = (char *)key;
    l->value = m;
    return l;
}

static void label_free(V1__ClientLabel *l)
{
    free(l->value->value);
    free(l->value);
    free(l);
}

Test(config_validate, beta_from_polaris_rules_and_matching)
{
    V1__ClientLabel *rules[] = {
        label("CLIENT_IP", V1__MATCH_STRING__MATCH_STRING_TYPE__IN, " 10.0.0.1, 10.0.0.2 ,::1"),
        label("env", V1__MATCH_STRING__MATCH_STRING_TYPE__EXACT, "gray"),
        label("zone", V1__MATCH_STRING__MATCH_STRING_TYPE__EXACT, "a"),
    };
    cc_beta_t b = {0};
    char err[256];
    cr_assert_eq(cc_beta_from_labels(rules, 3, &b, err, sizeof err), 0, "%s", err);
    cr_assert_eq(b.n_ips, 3);
    cr_assert_str_eq(b.ips[0], "10.0.0.1");
    cr_assert_str_eq(b.ips[2], "::1");
    cr_assert_eq(b.n_labels, 2);

    const char *keys[] = {"env", "zone", "other"}, *vals[] = {"gray", "a", "x"};
    cr_assert(cc_beta_matches(&b, "10.0.0.2", NULL, NULL, 0), "a listed IP matches without labels");
    cr_assert(cc_beta_matches(&b, "::ffff:10.0.0.1", NULL, NULL, 0), "IPv4-mapped form of a listed IP");
    cr_assert(cc_beta_matches(&b, "192.168.1.1", keys, vals, 3), "every label matches");
    cr_assert_not(cc_beta_matches(&b, "192.168.1.1", keys, vals, 1), "zone is missing");
    const char *wrong[] = {"env", "zone"}, *wrongv[] = {"gray", "b"};
    cr_assert_not(cc_beta_matches(&b, "192.168.1.1", wrong, wrongv, 2), "zone differs");

    json_t *j = cc_beta_to_json(&b);
    cc_beta_t back = {0};
    cr_assert_eq(cc_beta_from_json(json_object_get(j, "ips"), json_object_get(j, "labels"), &back), 0);
    cr_assert_eq(back.n_ips, 3);
    cr_assert_eq(back.n_labels, 2);
    json_decref(j);
    cc_beta_free(&back);
    cc_beta_free(&b);
    for (size_t i = 0; i < 3; i++) {
        rules[i]->value->value->value = NULL;
        label_free(rules[i]);
    }
}

Test(config_validate, beta_rules_refused_with_a_reason)
{
    char err[256];
    cc_beta_t b = {0};
    V1__ClientLabel *regex = label("env", V1__MATCH_STRING__MATCH_STRING_TYPE__REGEX, "gr.*");
    cr_assert_eq(cc_beta_from_labels(&regex, 1, &b, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "beta_labels[0] (env): match type REGEX is not supported; use EXACT");
    V1__ClientLabel *badip = label("CLIENT_IP", V1__MATCH_STRING__MATCH_STRING_TYPE__EXACT, "10.0.0.300");
    cr_assert_eq(cc_beta_from_labels(&badip, 1, &b, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "beta client IP \"10.0.0.300\" is not an IPv4 or IPv6 address");
    cr_assert_eq(b.n_ips, 0, "nothing is kept after a refusal");
    cr_assert_eq(cc_beta_from_labels(NULL, 0, &b, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "a beta release needs client IPs or labels in beta_labels");
    regex->value->value->value = NULL;
    badip->value->value->value = NULL;
    label_free(regex);
    label_free(badip);
}

Test(config_validate, beta_target_matches_polaris_client_tags)
{
    Lodestar__ConfigBetaTarget t = LODESTAR__CONFIG_BETA_TARGET__INIT;
    char *ips[] = {"10.1.1.1"};
    Lodestar__ConfigBetaTarget__LabelsEntry e = LODESTAR__CONFIG_BETA_TARGET__LABELS_ENTRY__INIT;
    e.key = "CLIENT_VERSION";
    e.value = "1.2";
    Lodestar__ConfigBetaTarget__LabelsEntry *ep = &e;
    t.client_ips = ips;
    t.n_client_ips = 1;
    t.labels = &ep;
    t.n_labels = 1;
    Google__Protobuf__StringValue k = GOOGLE__PROTOBUF__STRING_VALUE__INIT, v = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    k.value = "CLIENT_VERSION";
    v.value = "1.2";
    V1__ConfigFileTag tag = V1__CONFIG_FILE_TAG__INIT;
    tag.key = &k;
    tag.value = &v;
    V1__ConfigFileTag *tags[] = {&tag};
    cr_assert(cc_beta_target_matches(&t, "10.1.1.1", NULL, 0));
    cr_assert(cc_beta_target_matches(&t, "10.9.9.9", tags, 1));
    v.value = "1.3";
    cr_assert_not(cc_beta_target_matches(&t, "10.9.9.9", tags, 1));
    cr_assert_not(cc_beta_target_matches(NULL, "10.1.1.1", NULL, 0), "no target, no beta");
}

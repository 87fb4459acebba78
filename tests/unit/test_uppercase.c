/*
 * test_uppercase.c - the uppercase plugin: {"result": ...} for a JSON value
 * and a failure for JSON without one (never invalid JSON),
 * Unicode uppercasing for utf-8 content (growing, non-Latin, emoji, invalid
 * bytes), ASCII-only uppercasing for every other encoding, settings.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "plugin_harness.h"

static pb_test_plugin *uppercase(void)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, NULL, NULL);
    cr_assert_eq(t->rc, PB_OK);
    return t;
}

/* Sends content and checks the reply's content-type, encoding and bytes. */
static void check(const char *type, const char *encoding,
                  const void *content, size_t length,
                  const char *reply_type, const char *reply_encoding,
                  const void *expected, size_t expected_length)
{
    pb_test_plugin *t = uppercase();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle(t, PB_FRAMING_FRAME, type, encoding, content,
                                length, &r), PB_OK, "failed: %s", r.error);
    cr_assert_str_eq(r.content_type, reply_type);
    cr_assert_str_eq(r.content_encoding, reply_encoding);
    cr_assert_eq(r.content_length, expected_length, "got \"%s\"", (char *)r.content);
    cr_assert(memcmp(r.content, expected, expected_length) == 0,
              "got \"%s\"", (char *)r.content);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

static void check_json(const char *request, const char *expected)
{
    check("text/json", "utf-8", request, strlen(request),
          "text/json", "utf-8", expected, strlen(expected));
}

static void check_text(const char *encoding, const char *content, const char *expected)
{
    check("text/plain", encoding, content, strlen(content),
          "text/plain", encoding, expected, strlen(expected));
}

Test(uppercase, json_value_becomes_a_result)
{
    check_json("{\"action\": \"upper\", \"value\": \"hello\"}", "{\"result\": \"HELLO\"}");
}

Test(uppercase, json_value_sharp_s_grows)
{
    check_json("{\"value\": \"straße\"}", "{\"result\": \"STRASSE\"}");
}

Test(uppercase, json_value_accents_greek_and_emoji)
{
    check_json("{\"value\": \"é à ç\"}", "{\"result\": \"É À Ç\"}");
    check_json("{\"value\": \"αβγ ς σ\"}", "{\"result\": \"ΑΒΓ Σ Σ\"}");
    check_json("{\"value\": \"🐶 woof 🐾\"}", "{\"result\": \"🐶 WOOF 🐾\"}");
}

Test(uppercase, json_value_escapes_survive)
{
    check_json("{\"value\": \"a\\\"b\\\\c\\nd\\u0000e\"}",
               "{\"result\": \"A\\\"B\\\\C\\nD\\u0000E\"}");
}

static const char no_value[] =
    "uppercase needs text/json content holding an object with a string \"value\"";

/* text/json without a string "value", in every shape JSON allows. */
static const char *const valueless[] = {
    "true", "false", "null", "\"\\u00e9\"", "\"value\"", "0", "-1.5e300",
    "[]", "[\"stra\\u00dfe\"]", "[{\"value\": \"x\"}]", "{}",
    "{\"action\": \"upper\"}", "{\"Value\": \"x\"}", "{\"VALUE\": \"x\"}",
    "{\"value\": 5}", "{\"value\": 2.5}", "{\"value\": true}",
    "{\"value\": null}", "{\"value\": [\"x\"]}", "{\"value\": {\"value\": \"x\"}}",
};

Test(uppercase, json_without_a_string_value_fails)
{
    pb_test_plugin *t = uppercase();
    for (size_t i = 0; i < sizeof valueless / sizeof *valueless; i++) {
        pb_test_reply r;
        cr_assert_eq(pb_test_handle_str(t, "text/json", "utf-8", valueless[i], &r),
                     PB_ERROR, "%s got \"%s\"", valueless[i], (char *)r.content);
        cr_assert_str_eq(r.error, no_value, "%s", valueless[i]);
        pb_test_reply_free(&r);
    }
    pb_test_plugin_free(t);
}

/* Whatever text/json comes in, what goes out labelled text/json is JSON
 * (an object whose "result" is a string) or else a failure. */
static void check_json_or_failure(pb_test_plugin *t, const char *request)
{
    pb_test_reply r;
    if (pb_test_handle_str(t, "text/json", "utf-8", request, &r) == PB_OK) {
        cr_assert_str_eq(r.content_type, "text/json");
        json_error_t error;
        json_t *reply = json_loadb((const char *)r.content, r.content_length,
                                   JSON_DECODE_ANY, &error);
        cr_assert_not_null(reply, "%s got \"%s\": %s", request,
                           (char *)r.content, error.text);
        cr_assert(json_is_string(json_object_get(reply, "result")),
                  "%s got \"%s\"", request, (char *)r.content);
        json_decref(reply);
    } else {
        cr_assert_str_eq(r.error, no_value, "%s", request);
    }
    pb_test_reply_free(&r);
}

Test(uppercase, every_json_reply_is_json)
{
    static const char *const with_value[] = {
        "{\"value\": \"\\u00e9\"}", "{\"value\": \"true\"}", "{\"value\": \"\"}",
        "{\"value\": \"\\\\u00e9 \\\" \\u0001\"}", "{\"value\": \"x\", \"other\": true}",
        "{\"value\": 1, \"value\": \"x\"}",
    };
    pb_test_plugin *t = uppercase();
    for (size_t i = 0; i < sizeof valueless / sizeof *valueless; i++)
        check_json_or_failure(t, valueless[i]);
    for (size_t i = 0; i < sizeof with_value / sizeof *with_value; i++)
        check_json_or_failure(t, with_value[i]);
    pb_test_plugin_free(t);
}

Test(uppercase, json_value_that_looks_like_json)
{
    check_json("{\"value\": \"true \\\\u00e9\"}", "{\"result\": \"TRUE \\\\U00E9\"}");
}

/* Only text/json is read as JSON: JSON-looking text of another type is
 * text like any other. */
Test(uppercase, json_text_of_another_type_is_uppercased)
{
    check_text("utf-8", "{\"value\": 5, \"x\": true}", "{\"VALUE\": 5, \"X\": TRUE}");
}

Test(uppercase, utf8_text)
{
    check_text("utf-8", "straße é Ωmega 🐶 ok", "STRASSE É ΩMEGA 🐶 OK");
}

Test(uppercase, utf8_encoding_names)
{
    check_text("UTF-8", "straße", "STRASSE");
    check_text("utf8", "straße", "STRASSE");
    check_text("Utf8", "é", "É");
}

Test(uppercase, other_encodings_change_ascii_letters_only)
{
    /* "straße" in latin-1: the ß byte 0xdf must not change. */
    check_text("latin-1", "stra\xdf" "e", "STRA\xdf" "E");
    /* UTF-8 bytes under another name are left as they are, letters aside. */
    check_text("ascii", "é-z{}`~", "é-Z{}`~");
}

Test(uppercase, binary_with_nul_bytes)
{
    const unsigned char content[] = { 'a', 0, 'z', 0xff, 'q', 0 };
    const unsigned char expected[] = { 'A', 0, 'Z', 0xff, 'Q', 0 };
    check("binary/x", "binary", content, sizeof content,
          "binary/x", "binary", expected, sizeof expected);
}

Test(uppercase, utf8_with_nul_bytes)
{
    const unsigned char content[] = { 'a', 0, 0xc3, 0xa9 };
    const unsigned char expected[] = { 'A', 0, 0xc3, 0x89 };
    check("text/plain", "utf-8", content, sizeof content,
          "text/plain", "utf-8", expected, sizeof expected);
}

Test(uppercase, empty_content)
{
    check("text/plain", "utf-8", "", 0, "text/plain", "utf-8", "", 0);
    check("binary/x", "binary", "", 0, "binary/x", "binary", "", 0);
}

Test(uppercase, invalid_utf8_fails_the_request)
{
    pb_test_plugin *t = uppercase();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "text/plain", "utf-8", "abc\xff" "def", &r),
                 PB_ERROR);
    cr_assert_str_eq(r.error, "content is not valid UTF-8 (byte 3)");
    pb_test_reply_free(&r);
    cr_assert_eq(pb_test_handle_str(t, "text/plain", "utf-8", "ab\xc3", &r), PB_ERROR);
    cr_assert_str_eq(r.error, "content is not valid UTF-8 (byte 2)");
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(uppercase, a_line_gets_a_line)
{
    pb_test_plugin *t = uppercase();
    pb_test_reply r;
    const char *line = "hello wörld";
    cr_assert_eq(pb_test_handle(t, PB_FRAMING_LINE, NULL, NULL, line, strlen(line), &r),
                 PB_OK);
    cr_assert_eq(r.wire_length, strlen("HELLO WÖRLD\n"));
    cr_assert(memcmp(r.wire, "HELLO WÖRLD\n", r.wire_length) == 0);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(uppercase, refuses_settings)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor,
                                           "{\"locale\": \"tr\"}", NULL);
    cr_assert_eq(t->rc, PB_ERROR);
    cr_assert_eq(t->diag.count, 1);
    cr_assert_str_eq(pb_test_diag(t, 0),
                     "harness.conf:1: plugin uppercase: unknown setting \"locale\" "
                     "(uppercase takes no settings)");
    pb_test_plugin_free(t);
}

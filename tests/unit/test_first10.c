/*
 * test_first10.c - the first10 plugin: the guide's binary exchange byte for
 * byte, shorter and longer content, NUL bytes, both framings, settings.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_harness.h"

#define PREFIX "First 10 bytes of request: "

static pb_test_plugin *first10(void)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, NULL, NULL);
    cr_assert_eq(t->rc, PB_OK);
    return t;
}

static void check_reply(const pb_test_reply *r, const void *content, size_t length)
{
    cr_assert_str_eq(r->content_type, "binary/custom-server-binary-type");
    cr_assert_str_eq(r->content_encoding, "binary");
    cr_assert_eq(r->content_length, length);
    cr_assert(memcmp(r->content, content, length) == 0);
}

Test(first10, the_guides_exchange_byte_for_byte)
{
    unsigned char *request, *expected;
    size_t request_length, expected_length;
    pb_test_seed_exchange("binary_first10", &request, &request_length,
                          &expected, &expected_length);
    pb_test_plugin *t = first10();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_wire(t, request, request_length, &r), PB_OK);
    cr_assert_eq(r.wire_length, expected_length);
    cr_assert(memcmp(r.wire, expected, expected_length) == 0);
    check_reply(&r, PREFIX "binary\xf0\x9f\x98\x83", strlen(PREFIX) + 10);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
    free(request);
    free(expected);
}

Test(first10, shorter_content_is_taken_whole)
{
    pb_test_plugin *t = first10();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "binary/x", "binary", "abc", &r), PB_OK);
    check_reply(&r, PREFIX "abc", strlen(PREFIX) + 3);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(first10, empty_content_gives_the_prefix_alone)
{
    pb_test_plugin *t = first10();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "binary/x", "binary", "", &r), PB_OK);
    check_reply(&r, PREFIX, strlen(PREFIX));
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(first10, longer_content_with_nul_bytes_is_cut_at_ten)
{
    const unsigned char content[] = { 'a', 0, 'b', 0, 0xff, 1, 2, 3, 4, 5, 6, 7, 8 };
    unsigned char expected[sizeof PREFIX - 1 + 10];
    memcpy(expected, PREFIX, sizeof PREFIX - 1);
    memcpy(expected + sizeof PREFIX - 1, content, 10);
    pb_test_plugin *t = first10();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle(t, PB_FRAMING_FRAME, "binary/x", "binary",
                                content, sizeof content, &r), PB_OK);
    check_reply(&r, expected, sizeof expected);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(first10, answers_json_content_too)
{
    pb_test_plugin *t = first10();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "text/json", "utf-8", "{\"action\": \"x\"}", &r),
                 PB_OK);
    check_reply(&r, PREFIX "{\"action\":", strlen(PREFIX) + 10);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(first10, a_line_gets_a_line)
{
    pb_test_plugin *t = first10();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle(t, PB_FRAMING_LINE, NULL, NULL, "0123456789abc", 13, &r),
                 PB_OK);
    cr_assert_str_eq((const char *)r.content, PREFIX "0123456789");
    cr_assert_eq(r.wire_length, strlen(PREFIX) + 11);
    cr_assert_eq(r.wire[r.wire_length - 1], '\n');
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(first10, refuses_settings)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor,
                                           "{\"count\": 20}", NULL);
    cr_assert_eq(t->rc, PB_ERROR);
    cr_assert_str_eq(pb_test_diag(t, 0),
                     "harness.conf:1: plugin first10: unknown setting \"count\" "
                     "(first10 takes no settings)");
    pb_test_plugin_free(t);
}

/*
 * test_echo.c - the echo plugin: content, content-type and encoding come back
 * unchanged, in both framings, and every setting is refused.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "frame.h"
#include "plugin_harness.h"

static pb_test_plugin *echo(void)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, NULL, NULL);
    cr_assert_eq(t->rc, PB_OK);
    return t;
}

Test(echo, text_comes_back_as_the_exact_frame)
{
    pb_test_plugin *t = echo();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "text/plain", "utf-8", "hello, wörld", &r), PB_OK);
    char expected[256];
    int n = snprintf(expected, sizeof expected, "..{\"byteorder\": \"%s\", "
                     "\"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", "
                     "\"content-length\": 13}hello, wörld", pb_host_byteorder());
    size_t header_length = (size_t)n - 2 - 13;
    expected[0] = (char)(header_length >> 8);
    expected[1] = (char)header_length;
    cr_assert_eq(r.wire_length, (size_t)n);
    cr_assert(memcmp(r.wire, expected, (size_t)n) == 0);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(echo, keeps_any_content_type_and_encoding)
{
    pb_test_plugin *t = echo();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "application/x-thing", "latin-1", "caf\xe9", &r), PB_OK);
    cr_assert_str_eq(r.content_type, "application/x-thing");
    cr_assert_str_eq(r.content_encoding, "latin-1");
    cr_assert_eq(r.content_length, 4);
    cr_assert(memcmp(r.content, "caf\xe9", 4) == 0);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(echo, json_content_is_not_rewritten)
{
    pb_test_plugin *t = echo();
    pb_test_reply r;
    const char *content = "{\"action\":\"echo\",   \"value\":[1,2.50]}";
    cr_assert_eq(pb_test_handle_str(t, "text/json", "utf-8", content, &r), PB_OK);
    cr_assert_str_eq(r.content_type, "text/json");
    cr_assert_str_eq((const char *)r.content, content);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(echo, binary_with_nul_bytes)
{
    pb_test_plugin *t = echo();
    const unsigned char content[] = { 0, 1, 2, 0, 0xff, 0xfe, '\n', 0 };
    pb_test_reply r;
    cr_assert_eq(pb_test_handle(t, PB_FRAMING_FRAME, "binary/x", "binary",
                                content, sizeof content, &r), PB_OK);
    cr_assert_eq(r.content_length, sizeof content);
    cr_assert(memcmp(r.content, content, sizeof content) == 0);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(echo, empty_content)
{
    pb_test_plugin *t = echo();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "text/plain", "utf-8", "", &r), PB_OK);
    cr_assert_eq(r.content_length, 0);
    cr_assert_str_eq(r.content_type, "text/plain");
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(echo, a_line_comes_back_as_a_line)
{
    pb_test_plugin *t = echo();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle(t, PB_FRAMING_LINE, NULL, NULL, "hello there\r", 12, &r),
                 PB_OK);
    cr_assert_eq(r.wire_length, 12);
    cr_assert(memcmp(r.wire, "hello there\n", 12) == 0);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(echo, empty_settings_are_fine)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, "{ }", NULL);
    cr_assert_eq(t->rc, PB_OK);
    cr_assert_eq(t->diag.count, 0);
    pb_test_plugin_free(t);
}

Test(echo, refuses_a_setting_at_its_line)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor,
                                           "{\n"
                                           "  \"colour\": \"red\",\n"
                                           "  \"size\": 3\n"
                                           "}", NULL);
    cr_assert_eq(t->rc, PB_ERROR);
    cr_assert_eq(t->diag.count, 1);
    cr_assert_str_eq(pb_test_diag(t, 0),
                     "harness.conf:2: plugin echo: unknown setting \"colour\" "
                     "(echo takes no settings)");
    pb_test_plugin_free(t);
}

Test(echo, exports_its_descriptor)
{
    cr_assert_eq(pb_plugin_descriptor.abi_version, PLUGBOARD_ABI_VERSION);
    cr_assert_str_eq(pb_plugin_descriptor.name, "echo");
    cr_assert_not_null(pb_plugin_descriptor.handle);
}

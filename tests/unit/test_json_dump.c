/*
 * test_json_dump.c - tests of daemon/json_dump.c: output byte-identical to
 * Python's json.dumps(obj, ensure_ascii=False).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "json_dump.h"

/* Expected texts below were produced by Python 3's json.dumps. */
/* generated with python3: json.dumps(x) for each x */
static const struct { double value; const char *text; } reals[] = {
    { 0x0.0p+0, "0.0" },  /* 0.0 */
    { -0x0.0p+0, "-0.0" },  /* -0.0 */
    { 0x1.0000000000000p+0, "1.0" },  /* 1.0 */
    { -0x1.0000000000000p+0, "-1.0" },  /* -1.0 */
    { 0x1.9000000000000p+6, "100.0" },  /* 100.0 */
    { 0x1.4000000000000p+1, "2.5" },  /* 2.5 */
    { -0x1.4000000000000p+1, "-2.5" },  /* -2.5 */
    { 0x1.999999999999ap-4, "0.1" },  /* 0.1 */
    { 0x1.3333333333333p-2, "0.3" },  /* 0.3 */
    { 0x1.199999999999ap+0, "1.1" },  /* 1.1 */
    { 0x1.5555555555555p-2, "0.3333333333333333" },  /* 0.3333333333333333 */
    { 0x1.5555555555555p-1, "0.6666666666666666" },  /* 0.6666666666666666 */
    { 0x1.921fb54442d18p+1, "3.141592653589793" },  /* 3.141592653589793 */
    { 0x1.edd2f1a9fbe77p+6, "123.456" },  /* 123.456 */
    { 0x1.9200000000000p+6, "100.5" },  /* 100.5 */
    { 0x1.c6bf526340000p+49, "1000000000000000.0" },  /* 1000000000000000.0 */
    { 0x1.1c37937e08000p+53, "1e+16" },  /* 1e+16 */
    { 0x1.aa535d3d0c000p+53, "1.5e+16" },  /* 1.5e+16 */
    { 0x1.b69b4ba630f35p+56, "1.2345678901234568e+17" },  /* 1.2345678901234568e+17 */
    { 0x1.0000000000000p+53, "9007199254740992.0" },  /* 9007199254740992.0 */
    { 0x1.0f0cf064dd592p+73, "1e+22" },  /* 1e+22 */
    { 0x1.52d02c7e14af6p+76, "1e+23" },  /* 1e+23 */
    { 0x1.249ad2594c37dp+332, "1e+100" },  /* 1e+100 */
    { 0x1.0624dd2f1a9fcp-10, "0.001" },  /* 0.001 */
    { 0x1.a36e2eb1c432dp-14, "0.0001" },  /* 0.0001 */
    { 0x1.f75104d551d69p-14, "0.00012" },  /* 0.00012 */
    { 0x1.4f8b588e368f1p-17, "1e-05" },  /* 1e-05 */
    { 0x1.f75104d551d69p-17, "1.5e-05" },  /* 1.5e-05 */
    { 0x1.ad7f29abcaf48p-24, "1e-07" },  /* 1e-07 */
    { 0x0.0000000000001p-1022, "5e-324" },  /* 5e-324 */
    { 0x1.0000000000000p-1022, "2.2250738585072014e-308" },  /* 2.2250738585072014e-308 */
    { 0x1.fffffffffffffp+1023, "1.7976931348623157e+308" },  /* 1.7976931348623157e+308 */
    { 0x1.0000000000000p+803, "5.334411546303884e+241" },  /* 5.334411546303884e+241 */
    { 0x1.0000000000000p+574, "6.183260036827614e+172" },  /* 6.183260036827614e+172 */
    { 0x1.0000000000000p-549, "5.426657103235053e-166" },  /* 5.426657103235053e-166 */
    { 0x1.1cac051e59f8fp-53, "1.2345678e-16" },  /* 1.2345678e-16 */
    { 0x1.c6bf52633ffffp+49, "999999999999999.9" },  /* 999999999999999.9 */
    { 0x1.1c37937e07fffp+53, "9999999999999998.0" },  /* 9999999999999998.0 */
};
static const struct { const char *in; size_t len; const char *out; } strings[] = {
    { "plain", 5, "\"plain\"" },
    { "quote \" backslash \\ slash /", 27, "\"quote \\\" backslash \\\\ slash /\"" },
    { "\x0a\x0d\x09\x08\x0c", 5, "\"\\n\\r\\t\\b\\f\"" },
    { "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f", 32, "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\"" },
    { "\x7f del", 5, "\"\x7f del\"" },
    { "\xc3\xa9 \xc3\xbc \xf0\x9f\x90\xb0 \xf0\x9f\x92\x8d \xe4\xb8\xad\xe6\x96\x87", 22, "\"\xc3\xa9 \xc3\xbc \xf0\x9f\x90\xb0 \xf0\x9f\x92\x8d \xe4\xb8\xad\xe6\x96\x87\"" },
    { "\xff", 1, "\"\xef\xbf\xbd\"" },
    { "a\xff""b", 3, "\"a\xef\xbf\xbd""b\"" },
    { "\xe2\x82", 2, "\"\xef\xbf\xbd\"" },
    { "\xe2\x82""a", 3, "\"\xef\xbf\xbd""a\"" },
    { "\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"" },
    { "\xf0\x9f\x90", 3, "\"\xef\xbf\xbd\"" },
    { "\xf0\x9f\x90\xb0\xf0", 5, "\"\xf0\x9f\x90\xb0\xef\xbf\xbd\"" },
    { "\xc0\xaf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"" },
    { "\xf4\x90\x80\x80", 4, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"" },
    { "\xe0\x80\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"" },
    { "\xf5x", 2, "\"\xef\xbf\xbdx\"" },
    { "\x80\xbf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"" },
    { "", 0, "\"\"" },
};

static char *dump(const json_t *value)
{
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_json_dump(&out, value), 0);
    char *text = strndup((const char *)pb_buf_head(&out), pb_buf_used(&out));
    cr_assert_not_null(text);
    pb_buf_free(&out);
    return text;
}

static void expect_dump(json_t *value, const char *expected)
{
    cr_assert_not_null(value);
    char *text = dump(value);
    cr_expect_str_eq(text, expected);
    free(text);
    json_decref(value);
}

Test(json_dump, reals_match_python_repr)
{
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
        json_t *real = json_real(reals[i].value);
        char *text = dump(real);
        cr_expect_str_eq(text, reals[i].text, "real #%zu (%a)", i, reals[i].value);
        free(text);
        json_decref(real);
    }
}

Test(json_dump, strings_escape_like_python)
{
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        pb_buf out = PB_BUF_INIT;
        cr_assert_eq(pb_json_dump_string(&out, strings[i].in, strings[i].len), 0);
        cr_expect_eq(pb_buf_used(&out), strlen(strings[i].out), "string #%zu", i);
        cr_expect(pb_buf_used(&out) == strlen(strings[i].out)
                  && memcmp(pb_buf_head(&out), strings[i].out, pb_buf_used(&out)) == 0,
                  "string #%zu: got \"%.*s\"", i, (int)pb_buf_used(&out),
                  (const char *)pb_buf_head(&out));
        pb_buf_free(&out);
    }
}

Test(json_dump, string_values_with_nul)
{
    expect_dump(json_stringn("a\0b", 3), "\"a\\u0000b\"");
}

Test(json_dump, containers_keep_insertion_order)
{
    json_t *value = json_pack("{s:i, s:[i, f, s, b, b, n, {}, []], s:{s:{s:i}}, s:s}",
                              "b", 1,
                              "a", 1, 2.5, "x", 1, 0,
                              "c", "nested", "deep", -7,
                              "\xc3\xa9", "\xf0\x9f\x90\xb0");
    expect_dump(value, "{\"b\": 1, \"a\": [1, 2.5, \"x\", true, false, null, {}, []], "
                       "\"c\": {\"nested\": {\"deep\": -7}}, \"\xc3\xa9\": \"\xf0\x9f\x90\xb0\"}");
}

Test(json_dump, keys_are_escaped)
{
    json_t *object = json_object();
    cr_assert_not_null(object);
    cr_assert_eq(json_object_setn_new(object, "a\0b", 3, json_integer(1)), 0);
    cr_assert_eq(json_object_set_new(object, "z", json_pack("[[[]]]")), 0);
    expect_dump(object, "{\"a\\u0000b\": 1, \"z\": [[[]]]}");
}

Test(json_dump, integers)
{
    expect_dump(json_pack("[I, I, I, I]", (json_int_t)0, (json_int_t)-1,
                          (json_int_t)9223372036854775807LL,
                          (json_int_t)(-9223372036854775807LL - 1)),
                "[0, -1, 9223372036854775807, -9223372036854775808]");
}

Test(json_dump, scalars_and_empty_containers)
{
    expect_dump(json_true(), "true");
    expect_dump(json_false(), "false");
    expect_dump(json_null(), "null");
    expect_dump(json_object(), "{}");
    expect_dump(json_array(), "[]");
    expect_dump(json_string(""), "\"\"");
}

Test(json_dump, reference_reply_contents)
{
    expect_dump(json_pack("{s:s}", "result", "No match for \"x\"."),
                "{\"result\": \"No match for \\\"x\\\".\"}");
    expect_dump(json_pack("{s:s}", "result", "Follow the white rabbit. \xf0\x9f\x90\xb0"),
                "{\"result\": \"Follow the white rabbit. \xf0\x9f\x90\xb0\"}");
}

Test(json_dump, appends_after_existing_bytes)
{
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append_str(&out, "xy"), 0);
    pb_buf_consume(&out, 1);
    json_t *value = json_pack("[i]", 5);
    cr_assert_eq(pb_json_dump(&out, value), 0);
    cr_expect_eq(pb_buf_used(&out), 4);
    cr_expect_eq(memcmp(pb_buf_head(&out), "y[5]", 4), 0);
    json_decref(value);
    pb_buf_free(&out);
}

Test(json_dump, refuses_null_and_leaves_buffer_alone)
{
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append_str(&out, "keep"), 0);
    cr_expect_eq(pb_json_dump(&out, NULL), -1);
    cr_expect_eq(pb_buf_used(&out), 4);
    cr_expect_eq(memcmp(pb_buf_head(&out), "keep", 4), 0);
    pb_buf_free(&out);
}

/* A value nested deeper than any parsed JSON can be (a cycle, in effect)
 * is refused rather than overflowing the stack; the partial output is
 * taken back. */
static json_t *nest(int depth)
{
    json_t *value = json_array();
    for (int i = 0; i < depth; i++) {
        json_t *outer = json_array();
        cr_assert_not_null(outer);
        cr_assert_eq(json_array_append_new(outer, value), 0);
        value = outer;
    }
    return value;
}

Test(json_dump, refuses_runaway_nesting)
{
    json_t *deep = nest(5000);
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append_str(&out, "keep"), 0);
    cr_expect_eq(pb_json_dump(&out, deep), -1);
    cr_expect_eq(pb_buf_used(&out), 4);
    pb_buf_free(&out);
    json_decref(deep);

    json_t *shallow = nest(100);
    char *text = dump(shallow);
    cr_expect_eq(strlen(text), 202);
    cr_expect_eq(text[100], '[');
    cr_expect_eq(text[101], ']');
    free(text);
    json_decref(shallow);
}

Test(json_dump, cycle_is_refused)
{
    json_t *a = json_array();
    json_t *b = json_array();
    cr_assert_eq(json_array_append(a, b), 0);
    cr_assert_eq(json_array_append(b, a), 0);
    pb_buf out = PB_BUF_INIT;
    cr_expect_eq(pb_json_dump(&out, a), -1);
    cr_expect_eq(pb_buf_used(&out), 0);
    pb_buf_free(&out);
    json_array_clear(b);
    json_decref(a);
    json_decref(b);
}

/*
 * test_frame_fast.c - tests of daemon/frame_fast.c: the strict header path
 * accepts the canonical header and nothing else, and every header, odd or
 * not, gives the same object or the same error through the strict path as
 * through jansson alone, a content-length of any size included; a decoder
 * reuses a header object only when it has exactly the canonical shape.
 * Also daemon/json_fast.c, the same idea for request content.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "frame.h"
#include "frame_fast.h"
#include "json_dump.h"
#include "json_fast.h"

typedef struct header_case {
    const char *name;
    const char *text;
    size_t length;      /* 0: strlen(text); set for texts holding NUL */
    int fast;           /* whether the strict parser must accept it */
} header_case;

#define CANON(bo, type, enc, len)                                          \
    "{\"byteorder\": \"" bo "\", \"content-type\": \"" type                 \
    "\", \"content-encoding\": \"" enc "\", \"content-length\": " len "}"

static const header_case cases[] = {
    { "guide search", CANON("little", "text/json", "utf-8", "41"), 0, 1 },
    { "guide binary", CANON("little", "binary/custom-client-binary-type", "binary", "10"), 0, 1 },
    { "big endian", CANON("big", "text/json", "utf-8", "41"), 0, 1 },
    { "zero length", CANON("little", "text/plain", "utf-8", "0"), 0, 1 },
    { "empty strings", CANON("little", "", "", "5"), 0, 1 },
    { "18 digits", CANON("little", "a", "b", "999999999999999999"), 0, 1 },
    { "19 digits", CANON("little", "a", "b", "1234567890123456789"), 0, 1 },
    { "largest json_int_t", CANON("little", "a", "b", "9223372036854775807"), 0, 1 },
    { "one past json_int_t", CANON("little", "a", "b", "9223372036854775808"), 0, 1 },
    { "too big integer", CANON("little", "a", "b", "99999999999999999999"), 0, 1 },
    { "60 digits", CANON("little", "a", "b", "123456789012345678901234567890123456789012345678901234567890"), 0, 1 },
    { "printable punctuation", CANON("little", "x/y+z; q=1 ~{}[]:,", "enc", "3"), 0, 1 },

    { "leading zero", CANON("little", "a", "b", "041"), 0, 0 },
    { "too big with leading zero", CANON("little", "a", "b", "0999999999999999999999"), 0, 0 },
    { "too big negative", CANON("little", "a", "b", "-99999999999999999999"), 0, 0 },
    { "too big exponent", CANON("little", "a", "b", "1e400"), 0, 0 },
    { "too big fraction", CANON("little", "a", "b", "99999999999999999999.0"), 0, 0 },
    { "too big, other key order", "{\"content-length\": 99999999999999999999, \"byteorder\": \"big\", \"content-type\": \"a\", \"content-encoding\": \"b\"}", 0, 0 },
    { "too big, spaced", "{ \"byteorder\" : \"big\" , \"content-type\":\"a\",\"content-encoding\":\"b\",\n\"content-length\" :\t99999999999999999999 \n}", 0, 0 },
    { "too big, escaped key", "{\"byteorder\": \"big\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content\\u002dlength\": 99999999999999999999}", 0, 0 },
    { "too big, with extra keys", "{\"x\": [\"]\", {\"y\": \",\"}], \"byteorder\": \"big\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 99999999999999999999, \"z\": 1.5}", 0, 0 },
    { "too big, missing byteorder", "{\"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 99999999999999999999}", 0, 0 },
    { "too big, and a 30-digit extra key", "{\"byteorder\": \"big\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 99999999999999999999, \"n\": 123456789012345678901234567890}", 0, 0 },
    { "too big, and a syntax error after it", "{\"byteorder\": \"big\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 99999999999999999999, }", 0, 0 },
    { "too big, then a small duplicate", "{\"byteorder\": \"big\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 99999999999999999999, \"content-length\": 1}", 0, 0 },
    { "too big only in a nested decoy", "{\"x\": {\"content-length\": 99999999999999999999}, \"byteorder\": \"big\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1}", 0, 0 },
    { "30-digit extra key", "{\"byteorder\": \"big\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1, \"n\": 123456789012345678901234567890}", 0, 0 },
    { "1e400 extra key", "{\"byteorder\": \"big\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1, \"n\": 1e400}", 0, 0 },
    { "lone surrogate extra key", "{\"byteorder\": \"big\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1, \"s\": \"\\ud800\"}", 0, 0 },
    { "negative", CANON("little", "a", "b", "-1"), 0, 0 },
    { "minus zero", CANON("little", "a", "b", "-0"), 0, 0 },
    { "fraction", CANON("little", "a", "b", "41.0"), 0, 0 },
    { "exponent", CANON("little", "a", "b", "4e1"), 0, 0 },
    { "length as string", "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": \"41\"}", 0, 0 },
    { "length true", "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": true}", 0, 0 },
    { "escaped slash", CANON("little", "text\\/json", "utf-8", "41"), 0, 0 },
    { "escaped quote", CANON("little", "te\\\"xt", "utf-8", "41"), 0, 0 },
    { "unicode escape", CANON("little", "\\u0074ext/json", "utf-8", "41"), 0, 0 },
    { "unicode escape e acute", CANON("little", "caf\\u00e9", "utf-8", "1"), 0, 0 },
    { "surrogate pair", CANON("little", "\\ud83d\\ude03", "utf-8", "1"), 0, 0 },
    { "lone surrogate", CANON("little", "\\ud83d", "utf-8", "1"), 0, 0 },
    { "escaped NUL in type", CANON("little", "text\\u0000json", "utf-8", "1"), 0, 0 },
    { "escaped NUL in extra key", "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1, \"x\": \"\\u0000\"}", 0, 0 },
    { "raw UTF-8", CANON("little", "t\xc3\xabxt", "utf-8", "1"), 0, 0 },
    { "invalid UTF-8", CANON("little", "t\xffxt", "utf-8", "1"), 0, 0 },
    { "raw tab", CANON("little", "a\tb", "utf-8", "1"), 0, 0 },
    { "raw DEL", CANON("little", "a\x7f" "b", "utf-8", "1"), 0, 0 },
    { "raw NUL in string", "{\"byteorder\": \"little\", \"content-type\": \"a\0b\", \"content-encoding\": \"b\", \"content-length\": 1}", 92, 0 },
    { "NUL after object", CANON("little", "a", "b", "1") "\0", 91, 0 },
    { "extra key last", "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1, \"x\": [1, {\"y\": null}]}", 0, 0 },
    { "extra key first", "{\"x\": 1, \"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1}", 0, 0 },
    { "other key order", "{\"content-length\": 1, \"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\"}", 0, 0 },
    { "duplicate length", "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1, \"content-length\": 2}", 0, 0 },
    { "duplicate type", "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-type\": \"c\", \"content-encoding\": \"b\", \"content-length\": 1}", 0, 0 },
    { "compact separators", "{\"byteorder\":\"little\",\"content-type\":\"a\",\"content-encoding\":\"b\",\"content-length\":1}", 0, 0 },
    { "leading space", " " CANON("little", "a", "b", "1"), 0, 0 },
    { "trailing space", CANON("little", "a", "b", "1") " ", 0, 0 },
    { "trailing newline", CANON("little", "a", "b", "1") "\n", 0, 0 },
    { "space before colon", "{\"byteorder\" : \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1}", 0, 0 },
    { "pretty printed", "{\n  \"byteorder\": \"little\",\n  \"content-type\": \"a\",\n  \"content-encoding\": \"b\",\n  \"content-length\": 1\n}", 0, 0 },
    { "wrong byteorder", CANON("middle", "a", "b", "1"), 0, 0 },
    { "byteorder case", CANON("Little", "a", "b", "1"), 0, 0 },
    { "missing byteorder", "{\"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1}", 0, 0 },
    { "missing length", "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\"}", 0, 0 },
    { "type not string", "{\"byteorder\": \"little\", \"content-type\": 7, \"content-encoding\": \"b\", \"content-length\": 1}", 0, 0 },
    { "truncated", "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 1", 0, 0 },
    { "unterminated string", "{\"byteorder\": \"little", 0, 0 },
    { "two objects", CANON("little", "a", "b", "1") "{}", 0, 0 },
    { "array", "[1, 2]", 0, 0 },
    { "bare string", "\"x\"", 0, 0 },
    { "empty object", "{}", 0, 0 },
    { "empty text", "", 0, 0 },
};

#define N_CASES (sizeof cases / sizeof cases[0])

static size_t length_of(const header_case *c)
{
    return c->length ? c->length : strlen(c->text);
}

/* The object's bytes as the daemon would dump them: members in order. */
static void dump(pb_buf *out, const json_t *value)
{
    cr_assert_eq(pb_json_dump(out, value), 0);
    cr_assert_eq(pb_buf_append_byte(out, '\0'), 0);
}

Test(frame_fast, strict_parser_accepts_only_canonical_headers)
{
    for (size_t i = 0; i < N_CASES; i++) {
        pb_fast_header h;
        int accepted = pb_frame_fast_parse((const unsigned char *)cases[i].text,
                                           length_of(&cases[i]), &h);
        cr_expect_eq(accepted, cases[i].fast, "%s: strict parser said %d",
                     cases[i].name, accepted);
    }
}

Test(frame_fast, strict_parser_reads_the_values)
{
    const char *text = CANON("big", "binary/custom-client-binary-type", "binary", "123456789012345678");
    pb_fast_header h;
    cr_assert_eq(pb_frame_fast_parse((const unsigned char *)text, strlen(text), &h), 1);
    cr_expect_eq(h.byteorder_length, 3);
    cr_expect_eq(memcmp(h.byteorder, "big", 3), 0);
    cr_expect_eq(h.content_type_length, strlen("binary/custom-client-binary-type"));
    cr_expect_eq(memcmp(h.content_type, "binary/custom-client-binary-type",
                        h.content_type_length), 0);
    cr_expect_eq(h.content_encoding_length, 6);
    cr_expect_eq(memcmp(h.content_encoding, "binary", 6), 0);
    cr_expect_eq(h.content_length, 123456789012345678LL);
}

/* The header step of the decoder through one path, with a limit on the
 * whole message; the header (a new reference) and content-length, or
 * NULL and *err. */
static json_t *parse(const header_case *c, int fast, size_t limit,
                     json_int_t *content_length, pb_error *err)
{
    pb_frame_decoder d;
    pb_frame_decoder_init(&d, limit);
    json_t *header = NULL;
    if (pb_frame_decode_header(&d, (const unsigned char *)c->text, length_of(c),
                               fast, err) == 0) {
        header = json_incref(d.header);
        *content_length = (json_int_t)d.content_length;
    }
    pb_frame_decoder_reset(&d);
    return header;
}

Test(frame_fast, both_paths_give_the_same_outcome)
{
    for (size_t i = 0; i < N_CASES; i++) {
        const header_case *c = &cases[i];
        json_int_t fast_length = -1, slow_length = -1;
        pb_error fast_err = { PB_ERR_NONE, "" }, slow_err = { PB_ERR_NONE, "" };
        json_t *fast = parse(c, 1, SIZE_MAX, &fast_length, &fast_err);
        json_t *slow = parse(c, 0, SIZE_MAX, &slow_length, &slow_err);

        cr_expect_eq(fast == NULL, slow == NULL, "%s: accepted by one path only",
                     c->name);
        if (fast == NULL || slow == NULL) {
            cr_expect_eq(fast_err.code, slow_err.code, "%s: error codes differ", c->name);
            cr_expect_str_eq(fast_err.text, slow_err.text, "%s", c->name);
            cr_expect(fast_err.code == PB_ERR_BAD_FRAME
                      || fast_err.code == PB_ERR_TOO_LARGE, "%s", c->name);
        } else {
            pb_buf a = PB_BUF_INIT, b = PB_BUF_INIT;
            dump(&a, fast);
            dump(&b, slow);
            cr_expect_str_eq((const char *)a.data, (const char *)b.data, "%s", c->name);
            cr_expect(json_equal(fast, slow), "%s", c->name);
            cr_expect_eq(fast_length, slow_length, "%s", c->name);
            pb_buf_free(&a);
            pb_buf_free(&b);
        }
        json_decref(fast);
        json_decref(slow);
    }
}

static const header_case *find_case(const char *name)
{
    for (size_t i = 0; i < N_CASES; i++)
        if (strcmp(cases[i].name, name) == 0)
            return &cases[i];
    cr_assert_fail("no case \"%s\"", name);
    return NULL;
}

/* A content-length is a non-negative integer however long: over the limit
 * it is too large, through either path, once the rest of the header is
 * valid. Numbers jansson cannot hold elsewhere stay malformed. */
Test(frame_fast, content_length_of_any_size_is_too_large)
{
    static const struct {
        const char *name;
        pb_error_code code;
    } expected[] = {
        { "largest json_int_t", PB_ERR_TOO_LARGE },
        { "one past json_int_t", PB_ERR_TOO_LARGE },
        { "too big integer", PB_ERR_TOO_LARGE },
        { "60 digits", PB_ERR_TOO_LARGE },
        { "too big, other key order", PB_ERR_TOO_LARGE },
        { "too big, spaced", PB_ERR_TOO_LARGE },
        { "too big, escaped key", PB_ERR_TOO_LARGE },
        { "too big, with extra keys", PB_ERR_TOO_LARGE },
        { "too big, missing byteorder", PB_ERR_BAD_FRAME },
        { "too big, and a 30-digit extra key", PB_ERR_BAD_FRAME },
        { "too big, and a syntax error after it", PB_ERR_BAD_FRAME },
        { "too big, then a small duplicate", PB_ERR_BAD_FRAME },
        { "too big only in a nested decoy", PB_ERR_BAD_FRAME },
        { "too big with leading zero", PB_ERR_BAD_FRAME },
        { "too big negative", PB_ERR_BAD_FRAME },
        { "too big exponent", PB_ERR_BAD_FRAME },
        { "too big fraction", PB_ERR_BAD_FRAME },
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        const header_case *c = find_case(expected[i].name);
        for (int fast = 0; fast <= 1; fast++) {
            json_int_t length;
            pb_error err = { PB_ERR_NONE, "" };
            cr_expect_null(parse(c, fast, 1 << 20, &length, &err), "%s", c->name);
            cr_expect_eq(err.code, expected[i].code, "%s (%s path): %s: %s", c->name,
                         fast ? "strict" : "jansson", pb_error_token(err.code), err.text);
        }
    }
}

/* Frames decoded one after another; each message is finished before the
 * next frame, as the decoder asks. The header objects are returned with a
 * reference of their own. */
static void decode_each(const char *const *headers, size_t n, json_t **objects)
{
    pb_frame_decoder d;
    pb_frame_decoder_init(&d, 1024);
    for (size_t i = 0; i < n; i++) {
        pb_buf in = PB_BUF_INIT;
        size_t h = strlen(headers[i]);
        cr_assert_eq(pb_buf_append_byte(&in, 0), 0);
        cr_assert_eq(pb_buf_append_byte(&in, (unsigned char)h), 0);
        cr_assert_eq(pb_buf_append(&in, headers[i], h), 0);
        cr_assert_eq(pb_buf_append(&in, "xyz", i % 3 + 1), 0);
        pb_message msg;
        size_t used;
        pb_error err;
        cr_assert_eq(pb_frame_decode(&d, pb_buf_head(&in), pb_buf_used(&in), &msg,
                                     &used, NULL, &err),
                     PB_DECODE_MESSAGE, "%s: %s", headers[i], err.text);
        cr_expect_eq(json_integer_value(json_object_get(msg.header, "content-length")),
                     (json_int_t)(i % 3 + 1));
        objects[i] = json_incref(msg.header);
        pb_message_clear(&msg);
        pb_buf_free(&in);
    }
    pb_frame_decoder_reset(&d);
}

Test(frame_fast, a_finished_header_is_reused_with_the_new_length)
{
    const char *headers[] = {
        CANON("little", "text/plain", "utf-8", "1"),
        CANON("little", "text/plain", "utf-8", "2"),
    };
    json_t *objects[2];
    decode_each(headers, 2, objects);
    cr_expect_eq(objects[0], objects[1], "the same shape reuses the object");
    cr_expect_eq(json_integer_value(json_object_get(objects[1], "content-length")), 2);
    json_decref(objects[0]);
    json_decref(objects[1]);
}

Test(frame_fast, a_repeated_header_text_reads_only_its_number)
{
    const char *headers[] = {
        CANON("little", "text/plain", "utf-8", "1"),
        CANON("little", "text/plain", "utf-8", "2"),
        /* the same text up to the number, then more members: jansson's */
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": 3, \"x\": 1}",
        CANON("little", "text/plain", "utf-8", "1"),
    };
    json_t *objects[4];
    decode_each(headers, 4, objects);
    cr_expect_eq(objects[0], objects[1]);
    cr_expect_neq(objects[2], objects[1]);
    cr_expect_eq(json_integer_value(json_object_get(objects[2], "x")), 1);
    cr_expect_eq(objects[3], objects[0], "the kept text outlives a header jansson read");
    for (size_t i = 0; i < 4; i++)
        json_decref(objects[i]);

    /* A number the strict reader refuses after a repeated text is
     * judged by jansson, as without the repeat. */
    pb_frame_decoder d;
    pb_frame_decoder_init(&d, 1 << 20);
    const char *texts[] = { CANON("little", "text/plain", "utf-8", "1"),
                            CANON("little", "text/plain", "utf-8", "01") };
    pb_error err;
    cr_assert_eq(pb_frame_decode_header(&d, (const unsigned char *)texts[0],
                                        strlen(texts[0]), 1, &err), 0);
    json_decref(d.header);
    d.header = NULL;
    cr_expect_eq(pb_frame_decode_header(&d, (const unsigned char *)texts[1],
                                        strlen(texts[1]), 1, &err), -1);
    cr_expect_eq(err.code, PB_ERR_BAD_FRAME);
    cr_expect(strstr(err.text, "not valid JSON") != NULL, "%s", err.text);
    pb_frame_decoder_reset(&d);
}

Test(frame_fast, another_shape_gets_its_own_header)
{
    const char *headers[] = {
        CANON("little", "text/plain", "utf-8", "1"),
        CANON("big", "binary/x", "binary", "2"),
        /* parsed by jansson, with a member the canonical shape lacks */
        "{\"byteorder\": \"big\", \"content-type\": \"binary/x\", \"content-encoding\": \"binary\", \"content-length\": 3, \"x\": 1}",
        CANON("big", "binary/x", "binary", "1"),
        /* the same four members in another order */
        "{\"content-type\": \"binary/x\", \"byteorder\": \"big\", \"content-encoding\": \"binary\", \"content-length\": 2}",
        CANON("big", "binary/x", "binary", "3"),
    };
    json_t *objects[6];
    decode_each(headers, 6, objects);
    for (size_t i = 1; i < 6; i++)
        cr_expect_neq(objects[i], objects[i - 1], "frame %zu", i);
    cr_expect_str_eq(json_string_value(json_object_get(objects[1], "byteorder")), "big");
    cr_expect_str_eq(json_string_value(json_object_get(objects[1], "content-type")), "binary/x");
    cr_expect_str_eq(json_string_value(json_object_get(objects[1], "content-encoding")), "binary");
    cr_expect_eq(json_object_size(objects[3]), 4, "no member of the jansson header is left");
    cr_expect_null(json_object_get(objects[3], "x"));
    cr_expect_str_eq(json_object_iter_key(json_object_iter(objects[5])), "byteorder",
                     "keys keep the order of the text");
    for (size_t i = 0; i < 6; i++)
        json_decref(objects[i]);
}

/* --- Request content (json_fast.c) -------------------------------------- */

static const header_case contents[] = {
    { "guide search", "{\"action\": \"search\", \"value\": \"morpheus\"}", 0, 1 },
    { "raw UTF-8 value", "{\"action\": \"search\", \"value\": \"\xf0\x9f\x90\xb6\"}", 0, 1 },
    { "raw UTF-8 key", "{\"\xc3\xa9t\xc3\xa9\": \"x\"}", 0, 1 },
    { "compact", "{\"a\":\"b\",\"c\":\"d\"}", 0, 1 },
    { "all whitespace kinds", " \t\r\n{ \"a\" :\n\"b\" ,\t\"c\":\"d\" }\r\n ", 0, 1 },
    { "empty object", "{}", 0, 1 },
    { "spaced empty object", "{ \n }", 0, 1 },
    { "empty strings", "{\"\": \"\"}", 0, 1 },
    { "DEL byte", "{\"a\": \"\x7f\"}", 0, 1 },

    { "escaped quote", "{\"action\": \"search\", \"value\": \"a\\\"b\"}", 0, 0 },
    { "unicode escape", "{\"action\": \"search\", \"value\": \"\\u00e9\"}", 0, 0 },
    { "escaped NUL", "{\"value\": \"a\\u0000b\"}", 0, 0 },
    { "raw NUL", "{\"value\": \"a\0b\"}", 16, 0 },
    { "NUL after object", "{\"a\": \"b\"}\0", 11, 0 },
    { "raw newline in string", "{\"a\": \"b\nc\"}", 0, 0 },
    { "invalid UTF-8 value", "{\"a\": \"\xff\"}", 0, 0 },
    { "invalid UTF-8 key", "{\"\xc3\": \"x\"}", 0, 0 },
    { "overlong UTF-8", "{\"a\": \"\xc0\xaf\"}", 0, 0 },
    { "duplicate keys", "{\"action\": \"search\", \"action\": \"fly\"}", 0, 0 },
    { "number member", "{\"action\": \"search\", \"n\": 1}", 0, 0 },
    { "big number", "{\"n\": 123456789012345678901234567890}", 0, 0 },
    { "nested object", "{\"a\": {\"b\": \"c\"}}", 0, 0 },
    { "null member", "{\"a\": null}", 0, 0 },
    { "trailing comma", "{\"a\": \"b\",}", 0, 0 },
    { "missing colon", "{\"a\" \"b\"}", 0, 0 },
    { "unterminated", "{\"a\": \"b\"", 0, 0 },
    { "two objects", "{\"a\": \"b\"}{}", 0, 0 },
    { "form feed is not whitespace", "{\"a\": \"b\"}\f", 0, 0 },
    { "array", "[\"a\"]", 0, 0 },
    { "string", "\"a\"", 0, 0 },
    { "bare word", "search", 0, 0 },
    { "empty text", "", 0, 0 },
    { "only space", "  ", 0, 0 },
};

#define N_CONTENTS (sizeof contents / sizeof contents[0])

Test(json_fast, same_object_as_jansson_or_declines)
{
    for (size_t i = 0; i < N_CONTENTS; i++) {
        const header_case *c = &contents[i];
        size_t length = length_of(c);
        json_error_t jerr, slow_err;
        pb_content content;
        pb_content_init(&content);
        const pb_json *value = pb_content_parse(&content, c->text, length, &jerr);
        json_t *slow = json_loadb(c->text, length, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                                  &slow_err);
        const pb_flat_value *flat = pb_flat_of(value);

        cr_expect_eq(flat != NULL, c->fast, "%s: read in place: %s", c->name,
                     flat ? "yes" : "no");
        cr_expect_eq(value != NULL, slow != NULL, "%s: parsed unlike jansson", c->name);
        if (value == NULL && slow == NULL)
            cr_expect_str_eq(jerr.text, slow_err.text, "%s", c->name);
        const json_t *fast = flat ? pb_flat_tree(flat) : (const json_t *)value;
        if (fast != NULL && slow != NULL) {
            pb_buf a = PB_BUF_INIT, b = PB_BUF_INIT;
            dump(&a, fast);
            dump(&b, slow);
            cr_expect_str_eq((const char *)a.data, (const char *)b.data, "%s", c->name);
            cr_expect(json_equal(fast, slow), "%s", c->name);
            pb_buf_free(&a);
            pb_buf_free(&b);
        }
        pb_content_release(&content);
        json_decref(slow);
    }
}

Test(json_fast, values_keep_their_bytes)
{
    const char text[] = "{\"action\": \"search\", \"value\": \"\xf0\x9f\x90\xb6 x\"}";
    pb_content content;
    pb_content_init(&content);
    const pb_flat_value *o = pb_flat_of(pb_content_parse(&content, text, sizeof text - 1, NULL));
    cr_assert_not_null(o);
    cr_expect_eq(content.n_members, 2);
    cr_expect_str_eq(content.members[0].key, "action", "members keep document order");
    cr_expect_str_eq(pb_flat_get(o, "action")->string, "search");
    const pb_flat_value *v = pb_flat_get(o, "value");
    cr_expect_str_eq(v->string, "\xf0\x9f\x90\xb6 x");
    cr_expect_eq(v->length, 6);
    cr_expect_null(pb_flat_get(o, "missing"));
    cr_expect_null(pb_flat_get(v, "action"), "a string has no members");
    cr_expect_str_eq(pb_content_string((const pb_json *)o, "action"), "search");
    cr_expect_str_eq(json_string_value(pb_flat_tree(v)), "\xf0\x9f\x90\xb6 x",
                     "a member's jansson value is the object's member");
    cr_expect_eq(pb_flat_tree(v), json_object_get(pb_flat_tree(o), "value"));
    pb_content_release(&content);
}

Test(json_fast, bounds_send_bigger_objects_to_jansson)
{
    char text[PB_FLAT_BYTES + 64];
    pb_content content;
    pb_content_init(&content);

    /* One member more than the in-place form holds. */
    int n = snprintf(text, sizeof text, "{");
    for (int i = 0; i <= PB_FLAT_MEMBERS; i++)
        n += snprintf(text + n, sizeof text - (size_t)n, "%s\"k%d\": \"v\"", i ? ", " : "", i);
    n += snprintf(text + n, sizeof text - (size_t)n, "}");
    const pb_json *value = pb_content_parse(&content, text, (size_t)n, NULL);
    cr_expect_null(pb_flat_of(value));
    cr_expect_eq(json_object_size((const json_t *)value), PB_FLAT_MEMBERS + 1);
    pb_content_release(&content);

    /* Content longer than the storage, and exactly as long. */
    for (size_t length = PB_FLAT_BYTES; length <= PB_FLAT_BYTES + 1; length++) {
        memset(text, 'x', length);
        memcpy(text, "{\"k\": \"", 7);
        memcpy(text + length - 2, "\"}", 2);
        value = pb_content_parse(&content, text, length, NULL);
        cr_expect_eq(pb_flat_of(value) != NULL, length == PB_FLAT_BYTES, "length %zu", length);
        cr_expect_eq(strlen(pb_content_string(value, "k")), length - 9, "length %zu", length);
        pb_content_release(&content);
    }
}

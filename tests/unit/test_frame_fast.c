/*
 * test_frame_fast.c - tests of daemon/frame_fast.c: the strict header path
 * accepts the canonical header and nothing else, and every header, odd or
 * not, gives the same object or the same error through the strict path as
 * through jansson alone; reused header objects never change under a holder.
 * Also daemon/json_fast.c, the same idea for request content.
 */
#include <criterion/criterion.h>
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
    { "printable punctuation", CANON("little", "x/y+z; q=1 ~{}[]:,", "enc", "3"), 0, 1 },

    { "19 digits", CANON("little", "a", "b", "1234567890123456789"), 0, 0 },
    { "too big integer", CANON("little", "a", "b", "99999999999999999999"), 0, 0 },
    { "leading zero", CANON("little", "a", "b", "041"), 0, 0 },
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

Test(frame_fast, both_paths_give_the_same_outcome)
{
    for (size_t i = 0; i < N_CASES; i++) {
        const header_case *c = &cases[i];
        const unsigned char *text = (const unsigned char *)c->text;
        json_int_t fast_length = -1, slow_length = -1;
        pb_error fast_err = { PB_ERR_NONE, "" }, slow_err = { PB_ERR_NONE, "" };
        json_t *fast = pb_frame_parse_header(text, length_of(c), 1, &fast_length,
                                             &fast_err);
        json_t *slow = pb_frame_parse_header(text, length_of(c), 0, &slow_length,
                                             &slow_err);

        cr_expect_eq(fast == NULL, slow == NULL, "%s: accepted by one path only",
                     c->name);
        if (fast == NULL || slow == NULL) {
            cr_expect_eq(fast_err.code, slow_err.code, "%s: error codes differ", c->name);
            cr_expect_str_eq(fast_err.text, slow_err.text, "%s", c->name);
            cr_expect_eq(fast_err.code, PB_ERR_BAD_FRAME, "%s", c->name);
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
    pb_frame_fast_cleanup();
}

static json_t *fast_header(const char *text, json_int_t *length)
{
    pb_error err;
    json_t *h = pb_frame_parse_header((const unsigned char *)text, strlen(text),
                                      1, length, &err);
    cr_assert_not_null(h, "%s", text);
    return h;
}

Test(frame_fast, a_held_header_never_changes)
{
    json_int_t n1, n2;
    json_t *first = fast_header(CANON("little", "text/json", "utf-8", "41"), &n1);
    json_t *second = fast_header(CANON("little", "text/json", "utf-8", "7"), &n2);

    cr_expect_neq(first, second, "the first is still held, so it is not reused");
    cr_expect_eq(n1, 41);
    cr_expect_eq(n2, 7);
    cr_expect_eq(json_integer_value(json_object_get(first, "content-length")), 41);
    cr_expect_eq(json_integer_value(json_object_get(second, "content-length")), 7);
    json_decref(first);
    json_decref(second);
    pb_frame_fast_cleanup();
}

Test(frame_fast, a_released_header_is_reused_with_the_new_length)
{
    json_int_t n;
    json_t *first = fast_header(CANON("little", "text/json", "utf-8", "41"), &n);
    json_decref(first);
    json_t *again = fast_header(CANON("little", "text/json", "utf-8", "99"), &n);

    cr_expect_eq(again, first, "a header nobody holds is reused");
    cr_expect_eq(n, 99);
    cr_expect_eq(json_integer_value(json_object_get(again, "content-length")), 99);
    json_decref(again);

    json_t *other = fast_header(CANON("big", "binary/x", "binary", "3"), &n);
    cr_expect_str_eq(json_string_value(json_object_get(other, "byteorder")), "big");
    cr_expect_str_eq(json_string_value(json_object_get(other, "content-type")), "binary/x");
    cr_expect_str_eq(json_string_value(json_object_get(other, "content-encoding")), "binary");
    cr_expect_eq(json_integer_value(json_object_get(other, "content-length")), 3);
    json_decref(other);
    pb_frame_fast_cleanup();
}

/* Pipelined frames decoded while earlier messages are still held keep
 * their own headers; released ones let the next frame reuse theirs. */
Test(frame_fast, decoder_messages_keep_their_own_headers)
{
    pb_buf in = PB_BUF_INIT;
    const char *headers[] = {
        CANON("little", "text/plain", "utf-8", "1"),
        CANON("little", "text/plain", "utf-8", "2"),
        CANON("little", "text/plain", "utf-8", "3"),
    };
    for (size_t i = 0; i < 3; i++) {
        size_t h = strlen(headers[i]);
        cr_assert_eq(pb_buf_append_byte(&in, 0), 0);
        cr_assert_eq(pb_buf_append_byte(&in, (unsigned char)h), 0);
        cr_assert_eq(pb_buf_append(&in, headers[i], h), 0);
        cr_assert_eq(pb_buf_append(&in, "xyz", i + 1), 0);
    }
    pb_frame_decoder d;
    pb_frame_decoder_init(&d, 1024);
    pb_message msgs[3];
    size_t off = 0;
    for (size_t i = 0; i < 3; i++) {
        size_t used;
        pb_error err;
        cr_assert_eq(pb_frame_decode(&d, pb_buf_head(&in) + off, pb_buf_used(&in) - off,
                                     &msgs[i], &used, NULL, &err),
                     PB_DECODE_MESSAGE);
        off += used;
    }
    for (size_t i = 0; i < 3; i++) {
        cr_expect_eq(msgs[i].content_length, i + 1);
        cr_expect_eq(json_integer_value(json_object_get(msgs[i].header, "content-length")),
                     (json_int_t)(i + 1));
        cr_expect_str_eq(msgs[i].content_type, "text/plain");
        pb_message_clear(&msgs[i]);
    }
    pb_frame_decoder_reset(&d);
    pb_buf_free(&in);
    pb_frame_fast_cleanup();
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
        json_error_t jerr;
        json_t *fast = pb_json_fast_object(c->text, length);
        json_t *slow = json_loadb(c->text, length, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                                  &jerr);

        cr_expect_eq(fast != NULL, c->fast, "%s: fast path said %s", c->name,
                     fast ? "yes" : "no");
        if (fast != NULL) {
            cr_assert_not_null(slow, "%s: fast path took what jansson refuses",
                               c->name);
            pb_buf a = PB_BUF_INIT, b = PB_BUF_INIT;
            dump(&a, fast);
            dump(&b, slow);
            cr_expect_str_eq((const char *)a.data, (const char *)b.data, "%s", c->name);
            cr_expect(json_equal(fast, slow), "%s", c->name);
            pb_buf_free(&a);
            pb_buf_free(&b);
        }
        json_decref(fast);
        json_decref(slow);
    }
}

Test(json_fast, values_keep_their_bytes)
{
    const char text[] = "{\"action\": \"search\", \"value\": \"\xf0\x9f\x90\xb6 x\"}";
    json_t *o = pb_json_fast_object(text, sizeof text - 1);
    cr_assert_not_null(o);
    cr_expect_eq(json_object_size(o), 2);
    cr_expect_str_eq(json_string_value(json_object_get(o, "action")), "search");
    cr_expect_str_eq(json_string_value(json_object_get(o, "value")), "\xf0\x9f\x90\xb6 x");
    const char *first = json_object_iter_key(json_object_iter(o));
    cr_expect_str_eq(first, "action", "members keep document order");
    json_decref(o);
}

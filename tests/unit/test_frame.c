/*
 * test_frame.c - tests of daemon/frame.c: every malformed frame with its
 * wire code, every split of valid frames, pipelining, and replies encoded
 * byte for byte like the guide's Python server.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "json_dump.h"

#define LIMIT 1024

/* --- helpers ------------------------------------------------------------ */

/* A frame with the given header text (H taken from its length) and content. */
static void make_frame(pb_buf *out, const char *header, const char *content,
                       size_t content_length)
{
    size_t h = strlen(header);
    cr_assert_lt(h, 65536);
    cr_assert_eq(pb_buf_append_byte(out, (unsigned char)(h >> 8)), 0);
    cr_assert_eq(pb_buf_append_byte(out, (unsigned char)(h & 0xff)), 0);
    cr_assert_eq(pb_buf_append(out, header, h), 0);
    cr_assert_eq(pb_buf_append(out, content, content_length), 0);
}

/* pb_buf_head() of an empty buffer is NULL + 0, which clang's UBSan
 * rejects; an empty input is passed as an empty string instead. */
static const unsigned char *input_of(const pb_buf *b)
{
    return pb_buf_used(b) > 0 ? pb_buf_head(b) : (const unsigned char *)"";
}

/* One line per message: content-type, encoding, length and content. */
static void note_message(pb_buf *transcript, const pb_message *msg)
{
    char line[512];
    snprintf(line, sizeof line, "%s|%s|%zu|", msg->content_type,
             msg->content_encoding, msg->content_length);
    cr_assert_eq(pb_buf_append_str(transcript, line), 0);
    cr_assert_eq(pb_buf_append(transcript, msg->content, msg->content_length), 0);
    cr_assert_eq(pb_buf_append_byte(transcript, '\n'), 0);
}

/*
 * Feeds data to a fresh decoder the way the connection does: the input
 * arrives in pieces ending at each of cuts[], unconsumed bytes are kept and
 * the decoder is called until it needs more. Returns the last status.
 */
static pb_decode_status feed(size_t limit, const unsigned char *data, size_t len,
                             const size_t *cuts, size_t ncuts,
                             pb_buf *transcript, pb_error *err)
{
    pb_frame_decoder d;
    pb_buf in = PB_BUF_INIT;
    size_t at = 0;
    pb_decode_status status = PB_DECODE_NEED_MORE;

    pb_frame_decoder_init(&d, limit);
    for (size_t c = 0; c < ncuts; c++) {
        cr_assert_leq(cuts[c], len);
        cr_assert_eq(pb_buf_append(&in, data + at, cuts[c] - at), 0);
        at = cuts[c];
        for (;;) {
            pb_message msg;
            size_t consumed = 12345, wanted = 12345;
            status = pb_frame_decode(&d, input_of(&in), pb_buf_used(&in),
                                     &msg, &consumed, &wanted, err);
            if (status == PB_DECODE_MESSAGE) {
                cr_assert_gt(consumed, 0);
                cr_assert_leq(consumed, pb_buf_used(&in));
                note_message(transcript, &msg);
                pb_message_clear(&msg);
                pb_buf_consume(&in, consumed);
                continue;
            }
            cr_assert_eq(consumed, 0);
            if (status == PB_DECODE_NEED_MORE)
                cr_assert(wanted == 0 || wanted > pb_buf_used(&in));
            break;
        }
        if (status == PB_DECODE_ERROR)
            break;
    }
    if (status == PB_DECODE_NEED_MORE)
        cr_expect_eq(pb_buf_used(&in), 0, "bytes left over after the last frame");
    pb_frame_decoder_reset(&d);
    pb_buf_free(&in);
    return status;
}

static pb_decode_status feed_whole(size_t limit, const void *data, size_t len,
                                   pb_buf *transcript, pb_error *err)
{
    size_t cut = len;
    return feed(limit, data, len, &cut, 1, transcript, err);
}

static int same_bytes(const pb_buf *a, const pb_buf *b)
{
    return pb_buf_used(a) == pb_buf_used(b)
        && (pb_buf_used(a) == 0
            || memcmp(pb_buf_head(a), pb_buf_head(b), pb_buf_used(a)) == 0);
}

/* Every way of delivering data: all at once, byte by byte, every 2-way
 * split, every 3-way split of short inputs; each must give `expected`. */
static void expect_every_split(const unsigned char *data, size_t len,
                               const char *expected)
{
    pb_buf want = PB_BUF_INIT, got = PB_BUF_INIT;
    pb_error err;
    size_t *cuts = calloc(len + 1, sizeof *cuts);
    cr_assert_not_null(cuts);
    cr_assert_eq(pb_buf_append_str(&want, expected), 0);

    cr_assert_eq(feed_whole(LIMIT, data, len, &got, &err), PB_DECODE_NEED_MORE);
    cr_assert(same_bytes(&got, &want), "whole: %.*s", (int)pb_buf_used(&got),
              (const char *)pb_buf_head(&got));
    pb_buf_free(&got);

    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    cr_assert_eq(feed(LIMIT, data, len, cuts, len, &got, &err), PB_DECODE_NEED_MORE);
    cr_assert(same_bytes(&got, &want), "byte by byte");
    pb_buf_free(&got);

    for (size_t k = 0; k <= len; k++) {
        size_t two[2] = { k, len };
        cr_assert_eq(feed(LIMIT, data, len, two, 2, &got, &err), PB_DECODE_NEED_MORE);
        cr_assert(same_bytes(&got, &want), "split at %zu", k);
        pb_buf_free(&got);
    }
    pb_buf_free(&want);
    free(cuts);
}

static pb_error_code decode_error(size_t limit, const void *data, size_t len,
                                  char *text, size_t text_size)
{
    pb_buf transcript = PB_BUF_INIT;
    pb_error err = { PB_ERR_NONE, "" };
    pb_decode_status status = feed_whole(limit, data, len, &transcript, &err);
    cr_assert_eq(status, PB_DECODE_ERROR, "decoded without error");
    cr_assert_eq(pb_buf_used(&transcript), 0);
    snprintf(text, text_size, "%s", err.text);
    return err.code;
}

/* The error code and text of a frame with this header and no content. */
static pb_error_code header_error(const char *header, char *text, size_t text_size)
{
    pb_buf frame = PB_BUF_INIT;
    make_frame(&frame, header, "", 0);
    pb_error_code code = decode_error(LIMIT, pb_buf_head(&frame), pb_buf_used(&frame),
                                      text, text_size);
    pb_buf_free(&frame);
    return code;
}

static void expect_bad_header(const char *header, const char *text)
{
    char got[256];
    cr_expect_eq(header_error(header, got, sizeof got), PB_ERR_BAD_FRAME,
                 "header %s", header);
    if (text != NULL)
        cr_expect_str_eq(got, text, "header %s", header);
}

#define GOOD_PREFIX "\"byteorder\": \"little\", \"content-type\": \"text/json\", " \
                    "\"content-encoding\": \"utf-8\""

/* --- reference vectors ---------------------------------------------------- */

static size_t unhex(const char *hex, unsigned char **out)
{
    size_t n = strlen(hex) / 2;
    *out = malloc(n ? n : 1);
    cr_assert_not_null(*out);
    for (size_t i = 0; i < n; i++) {
        unsigned int byte;
        cr_assert_eq(sscanf(hex + 2 * i, "%2x", &byte), 1);
        (*out)[i] = (unsigned char)byte;
    }
    return n;
}

static json_t *load_exchanges(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(PB_TEST_SRCDIR "/tests/vectors/seed-exchanges.json",
                                  0, &jerr);
    cr_assert_not_null(root, "seed-exchanges.json: %s", jerr.text);
    json_t *exchanges = json_incref(json_object_get(root, "exchanges"));
    json_decref(root);
    cr_assert_eq(json_array_size(exchanges), 6);
    return exchanges;
}

/* The reference bytes were written on a little-endian host; a big-endian
 * one announces "big", three bytes shorter. */
static void to_host_order(pb_buf *frame)
{
    static const char little[] = "{\"byteorder\": \"little\"";
    if (strcmp(pb_host_byteorder(), "little") == 0)
        return;
    unsigned char *p = pb_buf_head(frame);
    size_t h = (size_t)p[0] << 8 | p[1];
    cr_assert_eq(memcmp(p + 2, little, sizeof little - 1), 0);
    memcpy(p + 2 + 15, "big\"", 4);
    memmove(p + 2 + 19, p + 2 + 22, pb_buf_used(frame) - 2 - 22);
    pb_buf_truncate(frame, frame->len - 3);
    h -= 3;
    p[0] = (unsigned char)(h >> 8);
    p[1] = (unsigned char)(h & 0xff);
}

/* What the reference replies carry (docs/protocol.md, reference exchanges). */
static const struct {
    const char *result;     /* JSON replies: {"result": result} */
    const char *binary;     /* otherwise these raw bytes */
} replies[6] = {
    { "Follow the white rabbit. \xf0\x9f\x90\xb0", NULL },
    { "In the caves beneath the Misty Mountains. \xf0\x9f\x92\x8d", NULL },
    { "\xf0\x9f\x90\xbe Playing ball! \xf0\x9f\x8f\x90", NULL },
    { "No match for \"x\".", NULL },
    { "Error: invalid action \"fly\".", NULL },
    { NULL, "First 10 bytes of request: binary\xf0\x9f\x98\x83" },
};

Test(frame, reference_replies_encode_byte_for_byte)
{
    json_t *exchanges = load_exchanges();
    for (size_t i = 0; i < 6; i++) {
        json_t *exchange = json_array_get(exchanges, i);
        pb_buf expected = PB_BUF_INIT, out = PB_BUF_INIT, content = PB_BUF_INIT;
        unsigned char *bytes;
        size_t n = unhex(json_string_value(json_object_get(exchange, "reply_hex")), &bytes);
        cr_assert_eq(pb_buf_append(&expected, bytes, n), 0);
        free(bytes);
        to_host_order(&expected);

        if (replies[i].result != NULL) {
            json_t *reply = json_pack("{s:s}", "result", replies[i].result);
            cr_assert_eq(pb_json_dump(&content, reply), 0);
            json_decref(reply);
            cr_assert_eq(pb_frame_encode(&out, "text/json", "utf-8",
                                         pb_buf_head(&content), pb_buf_used(&content)), 0);
        } else {
            cr_assert_eq(pb_frame_encode(&out, "binary/custom-server-binary-type", "binary",
                                         replies[i].binary, strlen(replies[i].binary)), 0);
        }
        cr_expect(same_bytes(&out, &expected), "%s: got %.*s",
                  json_string_value(json_object_get(exchange, "name")),
                  (int)pb_buf_used(&out), (const char *)pb_buf_head(&out));
        pb_buf_free(&expected);
        pb_buf_free(&out);
        pb_buf_free(&content);
    }
    json_decref(exchanges);
}

/* The six requests, as the transcript of their decoding. */
static const char *const request_transcripts[6] = {
    "text/json|utf-8|41|{\"action\": \"search\", \"value\": \"morpheus\"}\n",
    "text/json|utf-8|37|{\"action\": \"search\", \"value\": \"ring\"}\n",
    "text/json|utf-8|37|{\"action\": \"search\", \"value\": \"\xf0\x9f\x90\xb6\"}\n",
    "text/json|utf-8|34|{\"action\": \"search\", \"value\": \"x\"}\n",
    "text/json|utf-8|31|{\"action\": \"fly\", \"value\": \"x\"}\n",
    "binary/custom-client-binary-type|binary|10|binary\xf0\x9f\x98\x83\n",
};

Test(frame, reference_requests_decode_at_every_split)
{
    json_t *exchanges = load_exchanges();
    for (size_t i = 0; i < 6; i++) {
        unsigned char *bytes;
        const char *hex = json_string_value(json_object_get(json_array_get(exchanges, i),
                                                            "request_hex"));
        size_t n = unhex(hex, &bytes);
        expect_every_split(bytes, n, request_transcripts[i]);
        free(bytes);
    }
    json_decref(exchanges);
}

Test(frame, pipelined_requests_in_one_buffer)
{
    json_t *exchanges = load_exchanges();
    pb_buf all = PB_BUF_INIT;
    char expected[2048] = "";
    for (size_t i = 0; i < 6; i++) {
        unsigned char *bytes;
        const char *hex = json_string_value(json_object_get(json_array_get(exchanges, i),
                                                            "request_hex"));
        size_t n = unhex(hex, &bytes);
        cr_assert_eq(pb_buf_append(&all, bytes, n), 0);
        free(bytes);
        strcat(expected, request_transcripts[i]);
    }
    expect_every_split(pb_buf_head(&all), pb_buf_used(&all), expected);
    pb_buf_free(&all);
    json_decref(exchanges);
}

/* --- valid variations ------------------------------------------------------ */

Test(frame, whitespace_extra_keys_and_empty_content)
{
    pb_buf frame = PB_BUF_INIT;
    make_frame(&frame, " \n{" GOOD_PREFIX ", \"content-length\": 0, \"x-trace\": [1, \"a\\u0000b\"]}\t ",
               "", 0);
    make_frame(&frame, "{\"content-length\": 3, \"content-encoding\": \"\", "
                       "\"content-type\": \"a/b\", \"byteorder\": \"big\"}", "xyz", 3);
    expect_every_split(pb_buf_head(&frame), pb_buf_used(&frame),
                       "text/json|utf-8|0|\na/b||3|xyz\n");
    pb_buf_free(&frame);
}

Test(frame, message_keeps_whole_header)
{
    pb_buf frame = PB_BUF_INIT;
    pb_frame_decoder d;
    pb_message msg;
    size_t consumed, wanted;
    pb_error err;

    make_frame(&frame, "{" GOOD_PREFIX ", \"content-length\": 2, \"x-trace\": 7}", "hi", 2);
    pb_buf_append_str(&frame, "trailing");
    pb_frame_decoder_init(&d, LIMIT);
    cr_assert_eq(pb_frame_decode(&d, pb_buf_head(&frame), pb_buf_used(&frame),
                                 &msg, &consumed, &wanted, &err), PB_DECODE_MESSAGE);
    cr_expect_eq(consumed, pb_buf_used(&frame) - strlen("trailing"));
    cr_expect_eq(msg.owns_header, 1);
    cr_expect_eq(json_integer_value(json_object_get(msg.header, "x-trace")), 7);
    cr_expect_str_eq(msg.content_type, "text/json");
    cr_expect_str_eq(msg.content_encoding, "utf-8");
    cr_expect_eq(msg.content, pb_buf_head(&frame) + consumed - 2);
    cr_expect_eq(msg.content_length, 2);
    cr_expect_null(d.header, "the message took the header over");
    pb_message_clear(&msg);
    cr_expect_null(msg.header);
    pb_frame_decoder_reset(&d);
    pb_buf_free(&frame);
}

Test(frame, header_is_parsed_once_and_wanted_is_known)
{
    pb_buf frame = PB_BUF_INIT;
    pb_frame_decoder d;
    pb_message msg;
    size_t consumed, wanted;
    pb_error err;
    const char *header = "{" GOOD_PREFIX ", \"content-length\": 5}";
    size_t total = 2 + strlen(header) + 5;

    make_frame(&frame, header, "hello", 5);
    pb_frame_decoder_init(&d, LIMIT);
    cr_assert_eq(pb_frame_decode(&d, pb_buf_head(&frame), 1, &msg, &consumed,
                                 &wanted, &err), PB_DECODE_NEED_MORE);
    cr_expect_eq(wanted, 0);
    cr_assert_eq(pb_frame_decode(&d, pb_buf_head(&frame), total - 6, &msg, &consumed,
                                 &wanted, &err), PB_DECODE_NEED_MORE);
    cr_expect_eq(wanted, 0, "the header is not complete yet");
    cr_expect_null(d.header);
    cr_assert_eq(pb_frame_decode(&d, pb_buf_head(&frame), total - 5, &msg, &consumed,
                                 &wanted, &err), PB_DECODE_NEED_MORE);
    cr_expect_eq(wanted, total);
    json_t *cached = d.header;
    cr_assert_not_null(cached);
    cr_assert_eq(pb_frame_decode(&d, pb_buf_head(&frame), total - 1, &msg, &consumed,
                                 NULL, &err), PB_DECODE_NEED_MORE);
    cr_expect_eq(d.header, cached, "the cached header is reused");
    cr_assert_eq(pb_frame_decode(&d, pb_buf_head(&frame), total, &msg, &consumed,
                                 &wanted, &err), PB_DECODE_MESSAGE);
    cr_expect_eq(msg.header, cached);
    cr_expect_eq(consumed, total);
    cr_expect_eq(memcmp(msg.content, "hello", 5), 0);
    pb_message_clear(&msg);
    pb_frame_decoder_reset(&d);
    pb_buf_free(&frame);
}

Test(frame, reset_frees_a_frame_in_progress)
{
    pb_buf frame = PB_BUF_INIT;
    pb_frame_decoder d;
    pb_message msg;
    size_t consumed, wanted;
    pb_error err;

    make_frame(&frame, "{" GOOD_PREFIX ", \"content-length\": 5}", "he", 2);
    pb_frame_decoder_init(&d, LIMIT);
    cr_assert_eq(pb_frame_decode(&d, pb_buf_head(&frame), pb_buf_used(&frame), &msg,
                                 &consumed, &wanted, &err), PB_DECODE_NEED_MORE);
    cr_assert_not_null(d.header);
    pb_frame_decoder_reset(&d);
    cr_expect_null(d.header);
    cr_expect_eq(d.max_message_bytes, LIMIT);
    pb_buf_free(&frame);
}

Test(frame, message_exactly_at_the_limit)
{
    const char *header = "{" GOOD_PREFIX ", \"content-length\": 10}";
    size_t h = strlen(header);
    pb_buf frame = PB_BUF_INIT, transcript = PB_BUF_INIT;
    pb_error err;
    char text[256];

    make_frame(&frame, header, "0123456789", 10);
    cr_expect_eq(feed_whole(h + 10, pb_buf_head(&frame), pb_buf_used(&frame),
                            &transcript, &err), PB_DECODE_NEED_MORE);
    cr_expect_eq(pb_buf_used(&transcript), strlen("text/json|utf-8|10|0123456789\n"));
    cr_expect_eq(decode_error(h + 9, pb_buf_head(&frame), pb_buf_used(&frame),
                              text, sizeof text), PB_ERR_TOO_LARGE);
    char expected[128];
    snprintf(expected, sizeof expected,
             "message of %zu bytes exceeds the limit of %zu bytes", h + 10, h + 9);
    cr_expect_str_eq(text, expected);
    pb_buf_free(&frame);
    pb_buf_free(&transcript);
}

/* --- malformed frames ------------------------------------------------------ */

Test(frame, zero_header_length_is_bad_frame)
{
    char text[256];
    cr_expect_eq(decode_error(LIMIT, "\0\0", 2, text, sizeof text), PB_ERR_BAD_FRAME);
    cr_expect_str_eq(text, "header length is 0");
    cr_expect_eq(decode_error(LIMIT, "\0\0{}", 4, text, sizeof text), PB_ERR_BAD_FRAME);
}

Test(frame, header_length_over_limit_is_too_large_from_two_bytes)
{
    char text[256];
    cr_expect_eq(decode_error(100, "\x00\x65", 2, text, sizeof text), PB_ERR_TOO_LARGE);
    cr_expect_str_eq(text, "message of 101 bytes exceeds the limit of 100 bytes");
    cr_expect_eq(decode_error(LIMIT, "\xff\xff", 2, text, sizeof text), PB_ERR_TOO_LARGE);
}

Test(frame, content_over_limit_is_too_large_before_the_content)
{
    char text[256];
    pb_buf frame = PB_BUF_INIT;
    const char *header = "{" GOOD_PREFIX ", \"content-length\": 2000000}";

    make_frame(&frame, header, "", 0);
    cr_expect_eq(decode_error(LIMIT, pb_buf_head(&frame), pb_buf_used(&frame),
                              text, sizeof text), PB_ERR_TOO_LARGE);
    char expected[128];
    snprintf(expected, sizeof expected,
             "message of %zu bytes exceeds the limit of 1024 bytes",
             strlen(header) + 2000000);
    cr_expect_str_eq(text, expected);
    pb_buf_free(&frame);

    cr_expect_eq(header_error("{" GOOD_PREFIX ", \"content-length\": 9223372036854775807}",
                              text, sizeof text), PB_ERR_TOO_LARGE);
}

/* A content-length past what a 64-bit integer holds is still a
 * non-negative integer over the limit, in the canonical header and in any
 * other spelling. */
Test(frame, content_length_past_64_bits_is_too_large)
{
    static const char *const headers[] = {
        "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", "
        "\"content-length\": 9223372036854775808}",
        "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", "
        "\"content-length\": 1000000000000000000000000000000000000000}",
        "{" GOOD_PREFIX ", \"content-length\": 18446744073709551616, \"x\": [1]}",
        "{\"content-length\":99999999999999999999," GOOD_PREFIX "}",
    };
    char text[256];
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        cr_expect_eq(header_error(headers[i], text, sizeof text), PB_ERR_TOO_LARGE,
                     "%s: %s", headers[i], text);
        cr_expect_str_eq(text, "message of more than 9223372036854775807 bytes "
                               "exceeds the limit of 1024 bytes");
    }
    /* Negative or malformed stays malformed, however long. */
    cr_expect_eq(header_error("{" GOOD_PREFIX ", \"content-length\": -99999999999999999999}",
                              text, sizeof text), PB_ERR_BAD_FRAME);
    cr_expect_eq(header_error("{" GOOD_PREFIX ", \"content-length\": 99999999999999999999, "
                              "\"n\": 123456789012345678901234567890}",
                              text, sizeof text), PB_ERR_BAD_FRAME);
    cr_expect(strncmp(text, "header is not valid JSON: too big integer", 41) == 0, "%s", text);
}

/* Numbers jansson cannot hold and lone surrogates, in a member the daemon
 * does not read, are refused as bad_frame with these texts (documented in
 * docs/protocol.md). */
Test(frame, json_the_decoder_cannot_represent_is_bad_frame)
{
    static const struct {
        const char *value;
        const char *text;
    } cases[] = {
        { "123456789012345678901234567890", "header is not valid JSON: too big integer" },
        { "-123456789012345678901234567890", "header is not valid JSON: too big negative integer" },
        { "1e400", "header is not valid JSON: real number overflow" },
        { "\"\\ud800\"", "header is not valid JSON: invalid Unicode '\\uD800'" },
        { "\"\\udc00\"", "header is not valid JSON: invalid Unicode '\\uDC00'" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char header[256], text[256];
        snprintf(header, sizeof header,
                 "{" GOOD_PREFIX ", \"content-length\": 0, \"x\": %s}", cases[i].value);
        cr_expect_eq(header_error(header, text, sizeof text), PB_ERR_BAD_FRAME, "%s", header);
        cr_expect(strncmp(text, cases[i].text, strlen(cases[i].text)) == 0,
                  "%s: %s", header, text);
    }
}

Test(frame, header_that_is_not_json)
{
    char text[256];
    cr_expect_eq(header_error("abc", text, sizeof text), PB_ERR_BAD_FRAME);
    cr_expect(strncmp(text, "header is not valid JSON: ", 26) == 0, "%s", text);
    cr_expect(strstr(text, " at position ") != NULL, "%s", text);

    expect_bad_header("{" GOOD_PREFIX ", \"content-length\": 0", NULL);
    expect_bad_header("{" GOOD_PREFIX ", \"content-length\": 0} {}", NULL);
    expect_bad_header("{" GOOD_PREFIX ", \"content-length\": 0}x", NULL);
    expect_bad_header("{" GOOD_PREFIX ", \"content-length\": 0,}", NULL);
    expect_bad_header("{'byteorder': 'little'}", NULL);
}

Test(frame, header_that_is_not_utf8)
{
    expect_bad_header("{" GOOD_PREFIX ", \"content-length\": 0, \"x\": \"\xff\"}", NULL);
    expect_bad_header("{" GOOD_PREFIX ", \"content-length\": 0, \"x\": \"\xed\xa0\x80\"}", NULL);
    expect_bad_header("{" GOOD_PREFIX ", \"content-length\": 0, \"x\": \"\xc3\"}", NULL);
}

Test(frame, header_that_is_not_an_object)
{
    expect_bad_header("[]", "header is not a JSON object");
    expect_bad_header("\"text\"", "header is not a JSON object");
    expect_bad_header("42", "header is not a JSON object");
    expect_bad_header("null", "header is not a JSON object");
}

Test(frame, missing_required_keys)
{
    expect_bad_header("{\"content-type\": \"a\", \"content-encoding\": \"b\", \"content-length\": 0}",
                      "header lacks \"byteorder\"");
    expect_bad_header("{\"byteorder\": \"big\", \"content-encoding\": \"b\", \"content-length\": 0}",
                      "header lacks \"content-type\"");
    expect_bad_header("{\"byteorder\": \"big\", \"content-type\": \"a\", \"content-length\": 0}",
                      "header lacks \"content-encoding\"");
    expect_bad_header("{" GOOD_PREFIX "}", "header lacks \"content-length\"");
    expect_bad_header("{}", "header lacks \"byteorder\"");
}

Test(frame, mistyped_required_keys)
{
    expect_bad_header("{\"byteorder\": \"middle\", \"content-type\": \"a\", "
                      "\"content-encoding\": \"b\", \"content-length\": 0}",
                      "\"byteorder\" must be \"little\" or \"big\"");
    expect_bad_header("{\"byteorder\": \"Little\", \"content-type\": \"a\", "
                      "\"content-encoding\": \"b\", \"content-length\": 0}",
                      "\"byteorder\" must be \"little\" or \"big\"");
    expect_bad_header("{\"byteorder\": 1, \"content-type\": \"a\", "
                      "\"content-encoding\": \"b\", \"content-length\": 0}",
                      "\"byteorder\" must be a string");
    expect_bad_header("{\"byteorder\": \"big\", \"content-type\": null, "
                      "\"content-encoding\": \"b\", \"content-length\": 0}",
                      "\"content-type\" must be a string");
    expect_bad_header("{\"byteorder\": \"big\", \"content-type\": \"a\", "
                      "\"content-encoding\": [\"b\"], \"content-length\": 0}",
                      "\"content-encoding\" must be a string");
    expect_bad_header("{\"byteorder\": \"big\", \"content-type\": \"a\\u0000b\", "
                      "\"content-encoding\": \"b\", \"content-length\": 0}",
                      "\"content-type\" contains a NUL character");
    expect_bad_header("{\"byteorder\": \"big\", \"content-type\": \"a\", "
                      "\"content-encoding\": \"\\u0000\", \"content-length\": 0}",
                      "\"content-encoding\" contains a NUL character");
    expect_bad_header("{\"byteorder\": \"big\\u0000\", \"content-type\": \"a\", "
                      "\"content-encoding\": \"b\", \"content-length\": 0}",
                      "\"byteorder\" contains a NUL character");
}

Test(frame, content_length_must_be_a_non_negative_integer)
{
    static const char *const values[] = {
        "-1", "1.0", "0.0", "1e2", "true", "false", "null", "\"5\"", "[5]", "{}",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char header[256];
        snprintf(header, sizeof header, "{" GOOD_PREFIX ", \"content-length\": %s}", values[i]);
        expect_bad_header(header, "\"content-length\" must be a non-negative integer");
    }
}

Test(frame, error_stops_a_pipeline_after_good_frames)
{
    pb_buf frame = PB_BUF_INIT, transcript = PB_BUF_INIT;
    pb_error err;

    make_frame(&frame, "{" GOOD_PREFIX ", \"content-length\": 1}", "a", 1);
    make_frame(&frame, "[1]", "", 0);
    make_frame(&frame, "{" GOOD_PREFIX ", \"content-length\": 1}", "b", 1);
    cr_expect_eq(feed_whole(LIMIT, pb_buf_head(&frame), pb_buf_used(&frame),
                            &transcript, &err), PB_DECODE_ERROR);
    cr_expect_eq(err.code, PB_ERR_BAD_FRAME);
    cr_expect_eq(pb_buf_used(&transcript), strlen("text/json|utf-8|1|a\n"));
    pb_buf_free(&frame);
    pb_buf_free(&transcript);
}

/* --- encoder ---------------------------------------------------------------- */

Test(frame, host_byteorder)
{
    unsigned int one = 1;
    const char *expected = *(unsigned char *)&one == 1 ? "little" : "big";
    cr_expect_str_eq(pb_host_byteorder(), expected);
}

static const struct {
    pb_error_code code;
    const char *text;
    size_t length;
    const char *bytes;          /* generated with Python's json.dumps */
} error_frames[] = {
    { PB_ERR_BAD_FRAME, "header lacks \"content-length\"", 170,
      "\x00g{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 65}{\"error\": \"header lacks \\\"content-length\\\"\", \"code\": \"bad_frame\"}" },
    { PB_ERR_TOO_LARGE, "message of 2000000 bytes exceeds the limit of 1048576 bytes", 198,
      "\x00g{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 93}{\"error\": \"message of 2000000 bytes exceeds the limit of 1048576 bytes\", \"code\": \"too_large\"}" },
    { PB_ERR_NO_ROUTE, "no route for \"image/png\" \xc3\xa9\x0a\x09\x01", 177,
      "\x00g{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 72}{\"error\": \"no route for \\\"image/png\\\" \xc3\xa9\\n\\t\\u0001\", \"code\": \"no_route\"}" },
    { PB_ERR_PLUGIN_FAILED, "", 143,
      "\x00g{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 38}{\"error\": \"\", \"code\": \"plugin_failed\"}" },
};

Test(frame, error_frames_exact_bytes)
{
    for (size_t i = 0; i < sizeof error_frames / sizeof error_frames[0]; i++) {
        pb_buf out = PB_BUF_INIT, expected = PB_BUF_INIT;
        cr_assert_eq(pb_buf_append(&expected, error_frames[i].bytes, error_frames[i].length), 0);
        to_host_order(&expected);
        cr_assert_eq(pb_frame_encode_error(&out, error_frames[i].code, error_frames[i].text), 0);
        cr_expect(same_bytes(&out, &expected), "error frame #%zu: %.*s", i,
                  (int)pb_buf_used(&out), (const char *)pb_buf_head(&out));
        pb_buf_free(&out);
        pb_buf_free(&expected);
    }
}

Test(frame, encode_appends_and_round_trips)
{
    pb_buf out = PB_BUF_INIT, transcript = PB_BUF_INIT;
    pb_error err;

    cr_assert_eq(pb_buf_append_str(&out, "old"), 0);
    pb_buf_consume(&out, 3);
    cr_assert_eq(pb_frame_encode(&out, "text/pl\"ain", "\xc3\xa9", "a\0b", 3), 0);
    cr_assert_eq(pb_frame_encode(&out, "x", "y", NULL, 0), 0);
    cr_assert_eq(feed_whole(LIMIT, pb_buf_head(&out), pb_buf_used(&out), &transcript, &err),
                 PB_DECODE_NEED_MORE);
    const char expected[] = "text/pl\"ain|\xc3\xa9|3|a\0b\nx|y|0|\n";
    cr_expect_eq(pb_buf_used(&transcript), sizeof expected - 1);
    cr_expect_eq(memcmp(pb_buf_head(&transcript), expected, sizeof expected - 1), 0);
    pb_buf_free(&out);
    pb_buf_free(&transcript);
}

Test(frame, encode_header_alone)
{
    pb_buf out = PB_BUF_INIT;
    char expected[128];
    int n = snprintf(expected, sizeof expected,
                     "{\"byteorder\": \"%s\", \"content-type\": \"a\", "
                     "\"content-encoding\": \"b\", \"content-length\": 1234567}",
                     pb_host_byteorder());
    cr_assert_eq(pb_frame_encode_header(&out, "a", "b", 1234567), 0);
    cr_assert_eq(pb_buf_used(&out), (size_t)n + 2);
    cr_expect_eq(pb_buf_head(&out)[0], 0);
    cr_expect_eq(pb_buf_head(&out)[1], n);
    cr_expect_eq(memcmp(pb_buf_head(&out) + 2, expected, (size_t)n), 0);
    pb_buf_free(&out);
}

Test(frame, header_over_65535_bytes_is_refused)
{
    pb_buf out = PB_BUF_INIT;
    size_t n = 70000;
    char *type = malloc(n + 1);
    cr_assert_not_null(type);
    memset(type, 'a', n);
    type[n] = '\0';
    cr_assert_eq(pb_buf_append_str(&out, "keep"), 0);
    cr_expect_eq(pb_frame_encode_header(&out, type, "utf-8", 0), PB_FRAME_HEADER_TOO_LONG);
    cr_expect_eq(pb_frame_encode(&out, type, "utf-8", "x", 1), PB_FRAME_HEADER_TOO_LONG);
    cr_expect_eq(pb_buf_used(&out), 4, "a refused frame leaves nothing behind");
    cr_expect_eq(memcmp(pb_buf_head(&out), "keep", 4), 0);

    /* The largest header that fits still encodes. */
    size_t fixed = strlen("{\"byteorder\": \"\", \"content-type\": \"\", "
                          "\"content-encoding\": \"utf-8\", \"content-length\": 0}")
                   + strlen(pb_host_byteorder());
    type[65535 - fixed] = '\0';
    pb_buf_clear(&out);
    cr_expect_eq(pb_frame_encode_header(&out, type, "utf-8", 0), 0);
    cr_expect_eq(pb_buf_used(&out), 65537);
    cr_expect_eq(pb_buf_head(&out)[0], 0xff);
    cr_expect_eq(pb_buf_head(&out)[1], 0xff);
    cr_expect_eq(pb_frame_header_length(type, "utf-8", 0), 65535);
    free(type);
    pb_buf_free(&out);
}

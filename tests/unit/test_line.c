/*
 * test_line.c - tests of daemon/line.c: \n and \r\n lines, empty and long
 * lines, every split of the input, the line limit and ERR replies.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "line.h"

#define LIMIT 1024

static void cleanup(void)
{
    pb_line_codec_cleanup();
}

TestSuite(line, .fini = cleanup);

/* pb_buf_head() of an empty buffer is NULL + 0, which clang's UBSan
 * rejects; an empty input is passed as an empty string instead. */
static const unsigned char *input_of(const pb_buf *b)
{
    return pb_buf_used(b) > 0 ? pb_buf_head(b) : (const unsigned char *)"";
}

/* One line per message: its length and content between brackets. */
static void note_message(pb_buf *transcript, const pb_message *msg)
{
    cr_assert_str_eq(msg->content_type, "text/plain");
    cr_assert_str_eq(msg->content_encoding, "utf-8");
    cr_assert_eq(msg->owns_header, 0);
    cr_assert_eq(pb_buf_append_byte(transcript, '['), 0);
    cr_assert_eq(pb_buf_append(transcript, msg->content, msg->content_length), 0);
    cr_assert_eq(pb_buf_append_byte(transcript, ']'), 0);
}

/* Feeds data in pieces ending at cuts[], as the connection does: keeps the
 * unconsumed bytes, appends more and decodes until more is needed. */
static pb_decode_status feed(size_t limit, const char *data, size_t len,
                             const size_t *cuts, size_t ncuts,
                             pb_buf *transcript, size_t *left, pb_error *err)
{
    pb_line_decoder d;
    pb_buf in = PB_BUF_INIT;
    size_t at = 0;
    pb_decode_status status = PB_DECODE_NEED_MORE;

    pb_line_decoder_init(&d, limit);
    for (size_t c = 0; c < ncuts && status != PB_DECODE_ERROR; c++) {
        cr_assert_eq(pb_buf_append(&in, data + at, cuts[c] - at), 0);
        at = cuts[c];
        for (;;) {
            pb_message msg;
            size_t consumed = 999;
            status = pb_line_decode(&d, input_of(&in), pb_buf_used(&in),
                                    &msg, &consumed, err);
            if (status != PB_DECODE_MESSAGE) {
                cr_assert_eq(consumed, 0);
                break;
            }
            cr_assert_gt(consumed, 0);
            cr_assert_leq(consumed, pb_buf_used(&in));
            note_message(transcript, &msg);
            pb_message_clear(&msg);
            pb_buf_consume(&in, consumed);
        }
    }
    *left = pb_buf_used(&in);
    pb_buf_free(&in);
    return status;
}

static void expect_transcript(const pb_buf *transcript, const char *expected,
                              const char *how)
{
    cr_expect(pb_buf_used(transcript) == strlen(expected)
              && (*expected == '\0'
                  || memcmp(pb_buf_head(transcript), expected, strlen(expected)) == 0),
              "%s: got %.*s, want %s", how, (int)pb_buf_used(transcript),
              (const char *)pb_buf_head(transcript), expected);
}

/* All at once, byte by byte and every 2-way split give the same messages
 * and leave the same unterminated tail. */
static void expect_every_split(const char *data, const char *expected, size_t tail)
{
    size_t len = strlen(data);
    size_t left;
    pb_error err;
    pb_buf transcript = PB_BUF_INIT;
    size_t *cuts = calloc(len + 1, sizeof *cuts);
    cr_assert_not_null(cuts);

    cr_assert_eq(feed(LIMIT, data, len, &len, 1, &transcript, &left, &err),
                 PB_DECODE_NEED_MORE);
    expect_transcript(&transcript, expected, "whole");
    cr_expect_eq(left, tail);
    pb_buf_free(&transcript);

    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    cr_assert_eq(feed(LIMIT, data, len, cuts, len, &transcript, &left, &err),
                 PB_DECODE_NEED_MORE);
    expect_transcript(&transcript, expected, "byte by byte");
    cr_expect_eq(left, tail);
    pb_buf_free(&transcript);

    for (size_t k = 0; k <= len; k++) {
        size_t two[2] = { k, len };
        cr_assert_eq(feed(LIMIT, data, len, two, 2, &transcript, &left, &err),
                     PB_DECODE_NEED_MORE);
        expect_transcript(&transcript, expected, "2-way split");
        cr_expect_eq(left, tail);
        pb_buf_free(&transcript);
    }
    free(cuts);
}

Test(line, one_line)
{
    pb_line_decoder d;
    pb_message msg;
    size_t consumed;
    pb_error err;
    const char *data = "hello\nrest";

    pb_line_decoder_init(&d, LIMIT);
    cr_assert_eq(pb_line_decode(&d, (const unsigned char *)data, strlen(data),
                                &msg, &consumed, &err), PB_DECODE_MESSAGE);
    cr_expect_eq(consumed, 6);
    cr_expect_eq((const char *)msg.content, data);
    cr_expect_eq(msg.content_length, 5);
    cr_expect_str_eq(msg.content_type, "text/plain");
    cr_expect_str_eq(msg.content_encoding, "utf-8");
    cr_expect_eq(msg.owns_header, 0);
    cr_expect_eq(json_object_size(msg.header), 2);
    cr_expect_str_eq(json_string_value(json_object_get(msg.header, "content-type")),
                     "text/plain");
    cr_expect_str_eq(json_string_value(json_object_get(msg.header, "content-encoding")),
                     "utf-8");
    pb_message_clear(&msg);
    cr_expect_eq(d.scanned, 0);
}

Test(line, header_is_shared_and_survives_messages)
{
    pb_line_decoder d;
    pb_message a, b;
    size_t consumed;
    pb_error err;

    pb_line_decoder_init(&d, LIMIT);
    cr_assert_eq(pb_line_decode(&d, (const unsigned char *)"a\n", 2, &a, &consumed, &err),
                 PB_DECODE_MESSAGE);
    cr_assert_eq(pb_line_decode(&d, (const unsigned char *)"b\n", 2, &b, &consumed, &err),
                 PB_DECODE_MESSAGE);
    cr_expect_eq(a.header, b.header);
    pb_message_clear(&a);
    pb_message_clear(&b);
    cr_assert_eq(pb_line_decode(&d, (const unsigned char *)"c\n", 2, &a, &consumed, &err),
                 PB_DECODE_MESSAGE);
    cr_expect_str_eq(a.content_type, "text/plain");
    pb_message_clear(&a);

    pb_line_codec_cleanup();
    cr_assert_eq(pb_line_decode(&d, (const unsigned char *)"d\n", 2, &a, &consumed, &err),
                 PB_DECODE_MESSAGE, "the header is made again after a cleanup");
    cr_expect_str_eq(a.content_encoding, "utf-8");
    pb_message_clear(&a);
}

Test(line, crlf_and_bare_lf)
{
    expect_every_split("one\r\ntwo\nthree\r\n", "[one][two][three]", 0);
}

Test(line, only_one_trailing_cr_is_dropped)
{
    expect_every_split("a\r\r\nb\rc\n\r\n", "[a\r][b\rc][]", 0);
}

Test(line, empty_lines_are_messages)
{
    expect_every_split("\n\r\n\nx\n", "[][][][x]", 0);
}

Test(line, unterminated_tail_waits)
{
    expect_every_split("first\nsecond\r", "[first]", strlen("second\r"));
    expect_every_split("no newline", "", strlen("no newline"));
}

Test(line, bytes_are_passed_unchanged)
{
    expect_every_split("caf\xc3\xa9 \xff\x01z\n", "[caf\xc3\xa9 \xff\x01z]", 0);
}

Test(line, long_line_is_searched_once)
{
    size_t n = 200000;
    char *data = malloc(n + 2);
    cr_assert_not_null(data);
    memset(data, 'x', n);
    data[n] = '\n';
    data[n + 1] = '\0';

    pb_line_decoder d;
    pb_message msg;
    size_t consumed;
    pb_error err;
    pb_line_decoder_init(&d, 1 << 20);
    for (size_t have = 1000; have <= n; have += 1000) {
        cr_assert_eq(pb_line_decode(&d, (const unsigned char *)data, have, &msg,
                                    &consumed, &err), PB_DECODE_NEED_MORE);
        cr_assert_eq(d.scanned, have, "the searched prefix is remembered");
    }
    cr_assert_eq(pb_line_decode(&d, (const unsigned char *)data, n + 1, &msg,
                                &consumed, &err), PB_DECODE_MESSAGE);
    cr_expect_eq(msg.content_length, n);
    cr_expect_eq(consumed, n + 1);
    cr_expect_eq(d.scanned, 0);
    pb_message_clear(&msg);
    free(data);
}

static pb_decode_status decode_once(size_t limit, const char *data, pb_message *msg,
                                    pb_error *err)
{
    pb_line_decoder d;
    size_t consumed;
    pb_line_decoder_init(&d, limit);
    pb_decode_status status = pb_line_decode(&d, (const unsigned char *)data,
                                             strlen(data), msg, &consumed, err);
    if (status == PB_DECODE_MESSAGE)
        pb_message_clear(msg);
    return status;
}

Test(line, limit_is_on_the_line_without_its_newline)
{
    pb_message msg;
    pb_error err;

    cr_expect_eq(decode_once(5, "12345\n", &msg, &err), PB_DECODE_MESSAGE);
    cr_expect_eq(decode_once(5, "12345", &msg, &err), PB_DECODE_NEED_MORE);
    cr_expect_eq(decode_once(5, "123456", &msg, &err), PB_DECODE_ERROR);
    cr_expect_eq(err.code, PB_ERR_TOO_LARGE);
    cr_expect_str_eq(err.text, "line longer than the limit of 5 bytes");
    cr_expect_eq(decode_once(5, "123456\n", &msg, &err), PB_DECODE_ERROR);
    cr_expect_eq(err.code, PB_ERR_TOO_LARGE);
    cr_expect_eq(decode_once(5, "12345\r\n", &msg, &err), PB_DECODE_ERROR,
                 "the \\r counts: it is part of the line until the \\n comes");
    cr_expect_eq(decode_once(0, "\n", &msg, &err), PB_DECODE_MESSAGE);
    cr_expect_eq(decode_once(0, "x", &msg, &err), PB_DECODE_ERROR);
}

Test(line, too_long_line_is_refused_as_soon_as_it_is_over)
{
    const char *data = "ok\n0123456789abcdef\n";
    size_t len = strlen(data);
    size_t left;
    pb_error err;
    pb_buf transcript = PB_BUF_INIT;
    size_t cuts[] = { 3, 13, 14, len };

    cr_expect_eq(feed(10, data, len, cuts, 2, &transcript, &left, &err),
                 PB_DECODE_NEED_MORE, "10 bytes without \\n are still allowed");
    pb_buf_free(&transcript);
    cr_expect_eq(feed(10, data, len, cuts, 3, &transcript, &left, &err),
                 PB_DECODE_ERROR, "the 11th byte without \\n is refused");
    cr_expect_eq(err.code, PB_ERR_TOO_LARGE);
    expect_transcript(&transcript, "[ok]", "before the long line");
    pb_buf_free(&transcript);
}

static void expect_err_line(pb_error_code code, const char *text, const char *expected)
{
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append_str(&out, "reply\n"), 0);
    cr_assert_eq(pb_line_encode_error(&out, code, text), 0);
    cr_expect_eq(pb_buf_used(&out), 6 + strlen(expected));
    cr_expect(memcmp(pb_buf_head(&out) + 6, expected, strlen(expected)) == 0,
              "got %.*s", (int)pb_buf_used(&out) - 6, (const char *)pb_buf_head(&out) + 6);
    pb_buf_free(&out);
}

Test(line, err_replies)
{
    expect_err_line(PB_ERR_TOO_LARGE, "line longer than the limit of 5 bytes",
                    "ERR too_large line longer than the limit of 5 bytes\n");
    expect_err_line(PB_ERR_NO_ROUTE, "no route\r\nfor\rthis\n",
                    "ERR no_route no route  for this \n");
    expect_err_line(PB_ERR_PLUGIN_FAILED, "caf\xc3\xa9 failed",
                    "ERR plugin_failed caf\xc3\xa9 failed\n");
    expect_err_line(PB_ERR_BUSY, "", "ERR busy \n");
}

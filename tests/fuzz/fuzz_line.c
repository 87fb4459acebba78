/*
 * fuzz_line.c - libFuzzer target for the line decoder: any chunking of the
 * input gives the same lines and the same error, lines never hold a \n,
 * and a line written back with its \n decodes to itself.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "line.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                 \
            abort();                                                        \
        }                                                                   \
    } while (0)

typedef struct outcome {
    pb_buf transcript;          /* every line, length-prefixed */
    pb_decode_status status;    /* of the last call */
    pb_error err;
    size_t left;                /* unconsumed bytes at the end */
} outcome;

/* A line sent back with a \n is the same single message. */
static void check_reencode(const pb_message *msg, size_t limit)
{
    pb_buf out = PB_BUF_INIT;
    pb_line_decoder d;
    pb_message again;
    size_t consumed;
    pb_error err;

    if (msg->content_length > 0 && msg->content[msg->content_length - 1] == '\r')
        return;     /* its own \r would be dropped: not a fixed point */
    CHECK(pb_buf_append(&out, msg->content, msg->content_length) == 0);
    CHECK(pb_buf_append_byte(&out, '\n') == 0);
    pb_line_decoder_init(&d, limit);
    CHECK(pb_line_decode(&d, pb_buf_head(&out), pb_buf_used(&out), &again,
                         &consumed, &err) == PB_DECODE_MESSAGE);
    CHECK(consumed == pb_buf_used(&out));
    CHECK(again.content_length == msg->content_length);
    CHECK(msg->content_length == 0
          || memcmp(again.content, msg->content, msg->content_length) == 0);
    pb_message_clear(&again);
    pb_buf_free(&out);
}

/* ERR replies are exactly one line. */
static void check_err_line(const pb_error *err)
{
    pb_buf out = PB_BUF_INIT;
    CHECK(pb_line_encode_error(&out, err->code, err->text) == 0);
    CHECK(pb_buf_used(&out) > 4 && memcmp(pb_buf_head(&out), "ERR ", 4) == 0);
    unsigned char *nl = memchr(pb_buf_head(&out), '\n', pb_buf_used(&out));
    CHECK(nl == pb_buf_head(&out) + pb_buf_used(&out) - 1);
    pb_buf_free(&out);
}

static void decode(size_t limit, const uint8_t *data, size_t size,
                   const size_t *pieces, size_t npieces, int deep, outcome *o)
{
    pb_line_decoder d;
    pb_buf in = PB_BUF_INIT;
    size_t at = 0, p = 0;

    memset(o, 0, sizeof *o);
    o->status = PB_DECODE_NEED_MORE;
    pb_line_decoder_init(&d, limit);
    while (at < size && o->status != PB_DECODE_ERROR) {
        size_t n = pieces[p++ % npieces];
        if (n == 0 || n > size - at)
            n = size - at;
        CHECK(pb_buf_append(&in, data + at, n) == 0);
        at += n;
        for (;;) {
            pb_message msg;
            size_t consumed = 1;
            size_t used = pb_buf_used(&in);
            /* An exact-size copy, so that reading past the end is caught. */
            unsigned char *copy = malloc(used ? used : 1);
            CHECK(copy != NULL);
            if (used > 0)
                memcpy(copy, pb_buf_head(&in), used);
            o->status = pb_line_decode(&d, copy, used, &msg, &consumed, &o->err);
            if (o->status == PB_DECODE_MESSAGE) {
                CHECK(consumed > 0 && consumed <= used);
                CHECK(copy[consumed - 1] == '\n');
                CHECK(msg.content == copy);
                CHECK(msg.content_length < consumed && consumed - msg.content_length <= 2);
                CHECK(consumed - 1 <= limit);
                CHECK(msg.content_length == 0
                      || memchr(msg.content, '\n', msg.content_length) == NULL);
                CHECK(strcmp(msg.content_type, "text/plain") == 0);
                char len[32];
                snprintf(len, sizeof len, "%zu:", msg.content_length);
                CHECK(pb_buf_append_str(&o->transcript, len) == 0);
                CHECK(pb_buf_append(&o->transcript, msg.content, msg.content_length) == 0);
                if (deep)
                    check_reencode(&msg, limit);
                pb_message_clear(&msg);
                pb_buf_consume(&in, consumed);
                free(copy);
                continue;
            }
            CHECK(consumed == 0);
            if (o->status == PB_DECODE_NEED_MORE)
                CHECK(used <= limit && (used == 0 || memchr(copy, '\n', used) == NULL));
            free(copy);
            if (o->status == PB_DECODE_ERROR)
                CHECK(o->err.code == PB_ERR_TOO_LARGE);
            break;
        }
    }
    o->left = pb_buf_used(&in);
    pb_buf_free(&in);
}

static void check_same(const outcome *a, const outcome *b)
{
    CHECK(a->status == b->status);
    CHECK(pb_buf_used(&a->transcript) == pb_buf_used(&b->transcript));
    CHECK(pb_buf_used(&a->transcript) == 0
          || memcmp(pb_buf_head(&a->transcript), pb_buf_head(&b->transcript),
                    pb_buf_used(&a->transcript)) == 0);
    if (a->status == PB_DECODE_ERROR)
        CHECK(a->err.code == b->err.code && strcmp(a->err.text, b->err.text) == 0);
    else
        CHECK(a->left == b->left);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The first byte picks a small limit now and then, so that long lines
     * are refused; the rest of the time the limit is generous. */
    size_t limit = size > 0 && data[0] < 32 ? (size_t)data[0] : 1 << 20;
    static const size_t whole[] = { 0 };
    static const size_t bytes[] = { 1 };
    static const size_t mixed[] = { 3, 1, 7, 2, 64, 5 };
    outcome a, b, c;

    decode(limit, data, size, whole, 1, 1, &a);
    decode(limit, data, size, bytes, 1, 0, &b);
    decode(limit, data, size, mixed, 6, 0, &c);
    check_same(&a, &b);
    check_same(&a, &c);
    if (a.status == PB_DECODE_ERROR)
        check_err_line(&a.err);
    pb_buf_free(&a.transcript);
    pb_buf_free(&b.transcript);
    pb_buf_free(&c.transcript);
    return 0;
}

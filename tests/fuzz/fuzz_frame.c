/*
 * fuzz_frame.c - libFuzzer target for the frame decoder: any chunking of
 * the input gives the same messages and the same error, every message
 * re-encodes to a frame that decodes to the same content, the strict
 * header path and jansson judge the first header alike, and content read
 * in place equals what jansson parses of it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "json_dump.h"
#include "json_fast.h"

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
    pb_buf transcript;          /* every message: type, encoding, content */
    pb_decode_status status;    /* of the last call */
    pb_error err;
    size_t left;                /* unconsumed bytes at the end */
} outcome;

static void note(pb_buf *transcript, const char *s, size_t n)
{
    char len[32];
    snprintf(len, sizeof len, "%zu:", n);
    CHECK(pb_buf_append_str(transcript, len) == 0);
    CHECK(pb_buf_append(transcript, s, n) == 0);
}

/* A frame that the encoder wrote decodes back to what it was given. */
static void check_reencode(const pb_message *msg)
{
    pb_buf out = PB_BUF_INIT;
    pb_frame_decoder d;
    pb_message again;
    size_t consumed, wanted;
    pb_error err;

    if (pb_frame_encode(&out, msg->content_type, msg->content_encoding,
                        msg->content, msg->content_length) != 0) {
        /* Only a header the escaping made longer than 65535 bytes fails. */
        CHECK(strlen(msg->content_type) + strlen(msg->content_encoding) > 30000);
        return;
    }
    pb_frame_decoder_init(&d, (size_t)-1);
    CHECK(pb_frame_decode(&d, pb_buf_head(&out), pb_buf_used(&out), &again,
                          &consumed, &wanted, &err) == PB_DECODE_MESSAGE);
    CHECK(consumed == pb_buf_used(&out));
    CHECK(strcmp(again.content_type, msg->content_type) == 0);
    CHECK(strcmp(again.content_encoding, msg->content_encoding) == 0);
    CHECK(again.content_length == msg->content_length);
    CHECK(msg->content_length == 0
          || memcmp(again.content, msg->content, msg->content_length) == 0);
    pb_message_clear(&again);
    pb_frame_decoder_reset(&d);
    pb_buf_free(&out);
}

/* An error frame for any decode error is itself a well-formed frame. */
static void check_error_frame(const pb_error *err)
{
    pb_buf out = PB_BUF_INIT;
    pb_frame_decoder d;
    pb_message msg;
    size_t consumed, wanted;
    pb_error again;

    CHECK(pb_frame_encode_error(&out, err->code, err->text) == 0);
    pb_frame_decoder_init(&d, (size_t)-1);
    CHECK(pb_frame_decode(&d, pb_buf_head(&out), pb_buf_used(&out), &msg,
                          &consumed, &wanted, &again) == PB_DECODE_MESSAGE);
    CHECK(strcmp(msg.content_type, "text/json") == 0);
    json_t *content = json_loadb((const char *)msg.content, msg.content_length, 0, NULL);
    CHECK(content != NULL);
    CHECK(strcmp(json_string_value(json_object_get(content, "code")),
                 pb_error_token(err->code)) == 0);
    json_decref(content);
    pb_message_clear(&msg);
    pb_frame_decoder_reset(&d);
    pb_buf_free(&out);
}

/* Every message's header, however the decoder read it (a repeat of the
 * previous header's text, the strict path, jansson), is what jansson
 * parses of its text. */
static void check_header(const pb_message *msg, const unsigned char *frame)
{
    size_t h = (size_t)frame[0] << 8 | frame[1];
    json_t *slow = json_loadb((const char *)frame + 2, h, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    CHECK(slow != NULL);
    pb_buf a = PB_BUF_INIT, b = PB_BUF_INIT;
    CHECK(pb_json_dump(&a, msg->header) == 0 && pb_json_dump(&b, slow) == 0);
    CHECK(pb_buf_used(&a) == pb_buf_used(&b)
          && memcmp(pb_buf_head(&a), pb_buf_head(&b), pb_buf_used(&a)) == 0);
    pb_buf_free(&a);
    pb_buf_free(&b);
    json_decref(slow);
}

/* Content read in place, as every text/json request is, is what jansson
 * parses of it, or refused with jansson's error. */
static void check_content(const pb_message *msg)
{
    pb_content content;
    json_error_t err, slow_err;
    pb_content_init(&content);
    const pb_json *value = pb_content_parse(&content, (const char *)msg->content,
                                            msg->content_length, &err);
    json_t *slow = json_loadb((const char *)msg->content, msg->content_length,
                              JSON_DECODE_ANY | JSON_ALLOW_NUL, &slow_err);
    CHECK((value == NULL) == (slow == NULL));
    if (slow == NULL) {
        CHECK(strcmp(err.text, slow_err.text) == 0);
    } else {
        const pb_flat_value *flat = pb_flat_of(value);
        const json_t *tree = flat ? pb_flat_tree(flat) : (const json_t *)value;
        CHECK(tree != NULL && json_equal(tree, slow));
        pb_buf a = PB_BUF_INIT, b = PB_BUF_INIT;
        CHECK(pb_json_dump(&a, tree) == 0 && pb_json_dump(&b, slow) == 0);
        CHECK(pb_buf_used(&a) == pb_buf_used(&b)
              && memcmp(pb_buf_head(&a), pb_buf_head(&b), pb_buf_used(&a)) == 0);
        if (flat != NULL) {
            CHECK(flat->is_object && content.n_members == json_object_size(slow));
            for (size_t i = 0; i < content.n_members; i++) {
                const pb_flat_value *member = pb_flat_get(flat, content.members[i].key);
                const json_t *expected = json_object_get(slow, content.members[i].key);
                CHECK(member != NULL && json_is_string(expected));
                CHECK(member->length == json_string_length(expected)
                      && memcmp(member->string, json_string_value(expected), member->length) == 0);
            }
        }
        pb_buf_free(&a);
        pb_buf_free(&b);
    }
    json_decref(slow);
    pb_content_release(&content);
}

/* The first frame's header gives the same object or the same error
 * through the strict path as through jansson alone. */
static void check_paths_agree(size_t limit, const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    size_t h = (size_t)data[0] << 8 | data[1];
    if (h == 0 || h > size - 2 || h > limit)
        return;
    pb_frame_decoder fast, slow;
    pb_error fast_err, slow_err;
    pb_frame_decoder_init(&fast, limit);
    pb_frame_decoder_init(&slow, limit);
    int fast_rc = pb_frame_decode_header(&fast, data + 2, h, 1, &fast_err);
    int slow_rc = pb_frame_decode_header(&slow, data + 2, h, 0, &slow_err);
    CHECK(fast_rc == slow_rc);
    if (fast_rc != 0) {
        CHECK(fast_err.code == slow_err.code);
        CHECK(strcmp(fast_err.text, slow_err.text) == 0);
    } else {
        pb_buf a = PB_BUF_INIT, b = PB_BUF_INIT;
        CHECK(fast.content_length == slow.content_length);
        CHECK(pb_json_dump(&a, fast.header) == 0 && pb_json_dump(&b, slow.header) == 0);
        CHECK(pb_buf_used(&a) == pb_buf_used(&b)
              && memcmp(pb_buf_head(&a), pb_buf_head(&b), pb_buf_used(&a)) == 0);
        pb_buf_free(&a);
        pb_buf_free(&b);
    }
    pb_frame_decoder_reset(&fast);
    pb_frame_decoder_reset(&slow);
}

/*
 * Decodes data as the connection would, receiving it in pieces of the
 * given sizes (cycled; 0 means all at once).
 */
static void decode(size_t limit, const uint8_t *data, size_t size,
                   const size_t *pieces, size_t npieces, int deep, outcome *o)
{
    pb_frame_decoder d;
    pb_buf in = PB_BUF_INIT;
    size_t at = 0, p = 0;

    memset(o, 0, sizeof *o);
    o->status = PB_DECODE_NEED_MORE;
    pb_frame_decoder_init(&d, limit);
    while (at < size && o->status != PB_DECODE_ERROR) {
        size_t n = pieces[p++ % npieces];
        if (n == 0 || n > size - at)
            n = size - at;
        CHECK(pb_buf_append(&in, data + at, n) == 0);
        at += n;
        for (;;) {
            pb_message msg;
            size_t consumed = 1, wanted = 1;
            size_t used = pb_buf_used(&in);
            /* An exact-size copy, so that reading past the end is caught. */
            unsigned char *copy = malloc(used ? used : 1);
            CHECK(copy != NULL);
            if (used > 0)
                memcpy(copy, pb_buf_head(&in), used);
            o->status = pb_frame_decode(&d, copy, used, &msg, &consumed,
                                        &wanted, &o->err);
            if (o->status == PB_DECODE_MESSAGE) {
                CHECK(consumed > 0 && consumed <= used);
                CHECK(msg.content >= copy
                      && msg.content + msg.content_length == copy + consumed);
                CHECK(consumed <= limit + 2);
                note(&o->transcript, msg.content_type, strlen(msg.content_type));
                note(&o->transcript, msg.content_encoding, strlen(msg.content_encoding));
                note(&o->transcript, (const char *)msg.content, msg.content_length);
                if (deep) {
                    check_header(&msg, copy);
                    check_reencode(&msg);
                    check_content(&msg);
                }
                pb_message_clear(&msg);
                pb_buf_consume(&in, consumed);
                free(copy);
                continue;
            }
            free(copy);
            CHECK(consumed == 0);
            if (o->status == PB_DECODE_NEED_MORE)
                CHECK(wanted == 0 || (wanted > used && wanted <= limit + 2));
            else
                CHECK((o->err.code == PB_ERR_BAD_FRAME || o->err.code == PB_ERR_TOO_LARGE)
                      && o->err.text[0] != '\0');
            break;
        }
    }
    o->left = pb_buf_used(&in);
    pb_frame_decoder_reset(&d);
    pb_buf_free(&in);
}

static void check_same(const outcome *a, const outcome *b)
{
    CHECK(a->status == b->status);
    CHECK(pb_buf_used(&a->transcript) == pb_buf_used(&b->transcript));
    CHECK(pb_buf_used(&a->transcript) == 0
          || memcmp(pb_buf_head(&a->transcript), pb_buf_head(&b->transcript),
                    pb_buf_used(&a->transcript)) == 0);
    if (a->status == PB_DECODE_ERROR) {
        CHECK(a->err.code == b->err.code);
        CHECK(strcmp(a->err.text, b->err.text) == 0);
    } else {
        CHECK(a->left == b->left);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An input starting with 0xff (a header length over 65279, which no
     * input of this size completes) takes its limit from the next byte and
     * its stream from the rest, so that small limits and too_large are
     * reached; any other input is a stream under a generous limit. Every
     * usual frame starts with 0x00, so the limit must not come from it. */
    size_t limit = 1 << 20;
    if (size >= 2 && data[0] == 0xff) {
        limit = (size_t)data[1] * 8;
        data += 2;
        size -= 2;
    }
    static const size_t whole[] = { 0 };
    static const size_t bytes[] = { 1 };
    static const size_t mixed[] = { 3, 1, 7, 2, 64, 5 };
    outcome a, b, c;

    decode(limit, data, size, whole, 1, 1, &a);
    decode(limit, data, size, bytes, 1, 0, &b);
    decode(limit, data, size, mixed, 6, 0, &c);
    check_same(&a, &b);
    check_same(&a, &c);
    check_paths_agree(limit, data, size);
    if (a.status == PB_DECODE_ERROR)
        check_error_frame(&a.err);
    pb_buf_free(&a.transcript);
    pb_buf_free(&b.transcript);
    pb_buf_free(&c.transcript);
    return 0;
}

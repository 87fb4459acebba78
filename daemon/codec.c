/*
 * codec.c - the `frame` and `line` framings as pb_codec tables over the
 * sans-I/O codecs of frame.c and line.c.
 */
#include "codec.h"

/* --- frame ------------------------------------------------------------- */

static void frame_init(pb_decoder *d, size_t max)
{
    pb_frame_decoder_init(&d->frame, max);
}

static void frame_reset(pb_decoder *d)
{
    pb_frame_decoder_reset(&d->frame);
}

static pb_decode_status frame_decode(pb_decoder *d, size_t max,
                                     const unsigned char *data, size_t len,
                                     pb_message *msg, size_t *consumed,
                                     pb_error *err)
{
    d->frame.max_message_bytes = max;
    return pb_frame_decode(&d->frame, data, len, msg, consumed, NULL, err);
}

static size_t frame_remaining(const pb_decoder *d, size_t have)
{
    if (d->frame.header == NULL)
        return 0;
    size_t total = 2 + d->frame.header_length + d->frame.content_length;
    return total > have ? total - have : 0;
}

static int frame_reply_tail(pb_buf *out)
{
    (void)out;
    return 0;
}

static const pb_codec frame_codec = {
    .framing = PB_FRAMING_FRAME,
    .decoder_init = frame_init,
    .decoder_reset = frame_reset,
    .decode = frame_decode,
    .remaining = frame_remaining,
    .reply_head = pb_frame_encode_header_as,
    .reply_tail = frame_reply_tail,
    .error = pb_frame_encode_error,
};

/* --- line -------------------------------------------------------------- */

static void line_init(pb_decoder *d, size_t max)
{
    pb_line_decoder_init(&d->line, max);
}

static void line_reset(pb_decoder *d)
{
    (void)d;
}

static pb_decode_status line_decode(pb_decoder *d, size_t max,
                                    const unsigned char *data, size_t len,
                                    pb_message *msg, size_t *consumed,
                                    pb_error *err)
{
    d->line.max_message_bytes = max;
    return pb_line_decode(&d->line, data, len, msg, consumed, err);
}

static size_t line_remaining(const pb_decoder *d, size_t have)
{
    (void)d;
    (void)have;
    return 0;
}

/* A line reply is its content and a newline: type and encoding stay with
 * the plugin, and a push looks like any other line. */
static int line_reply_head(pb_buf *out, const char *content_type,
                           const char *content_encoding, size_t length,
                           int push)
{
    (void)out;
    (void)content_type;
    (void)content_encoding;
    (void)length;
    (void)push;
    return 0;
}

static int line_reply_tail(pb_buf *out)
{
    return pb_buf_append_byte(out, '\n') == 0 ? 0 : PB_FRAME_NO_MEMORY;
}

static const pb_codec line_codec = {
    .framing = PB_FRAMING_LINE,
    .decoder_init = line_init,
    .decoder_reset = line_reset,
    .decode = line_decode,
    .remaining = line_remaining,
    .reply_head = line_reply_head,
    .reply_tail = line_reply_tail,
    .error = pb_line_encode_error,
};

const pb_codec *pb_codec_for(pb_framing_kind framing)
{
    return framing == PB_LINE ? &line_codec : &frame_codec;
}

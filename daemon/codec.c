/*
 * codec.c - the `frame` and `line` framings as pb_codec tables over the
 * sans-I/O codecs of frame.c and line.c, and the reply side of `http`.
 */
#include "codec.h"

#include <stdio.h>
#include <string.h>

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

/* --- http -------------------------------------------------------------- */

/* libmicrohttpd parses the requests (daemon/http.c): this table only
 * encodes. A reply is the value of its Content-Type header, a NUL, then the
 * body, which http.c splits into a response; the charset is the content's
 * encoding unless that is binary. */
static int http_reply_head(pb_buf *out, const char *content_type,
                           const char *content_encoding, size_t length,
                           int push)
{
    (void)length;
    (void)push;
    size_t keep = pb_buf_used(out);
    int text = strcmp(content_encoding, "binary") != 0;
    if (pb_buf_append_str(out, content_type) == 0
        && (!text || (pb_buf_append_str(out, "; charset=") == 0
                      && pb_buf_append_str(out, content_encoding) == 0))
        && pb_buf_append_byte(out, '\0') == 0)
        return 0;
    pb_buf_truncate(out, out->start + keep);
    return PB_FRAME_NO_MEMORY;
}

static const char *http_reason(int status)
{
    switch (status) {
    case 404: return "Not Found";
    case 413: return "Content Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default:  return "Bad Request";
    }
}

/* A whole response that closes the connection: what a refused
 * connection is sent before anything is read from it. */
static int http_error(pb_buf *out, pb_error_code code, const char *text)
{
    pb_buf body = PB_BUF_INIT;
    int rc = -1;
    if (pb_error_encode_json(&body, pb_error_token(code), text) == 0) {
        int status = pb_error_http_status(code);
        char head[200];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 %d %s\r\n"
                         "Content-Type: application/json\r\n"
                         "Content-Length: %zu\r\n"
                         "Connection: close\r\n\r\n",
                         status, http_reason(status), pb_buf_used(&body));
        size_t keep = pb_buf_used(out);
        if (pb_buf_append(out, head, (size_t)n) == 0
            && pb_buf_append(out, pb_buf_head(&body), pb_buf_used(&body)) == 0)
            rc = 0;
        else
            pb_buf_truncate(out, out->start + keep);
    }
    pb_buf_free(&body);
    return rc;
}

static const pb_codec http_codec = {
    .framing = PB_FRAMING_HTTP,
    .reply_head = http_reply_head,
    .reply_tail = frame_reply_tail,
    .error = http_error,
};

const pb_codec *pb_codec_for(pb_framing_kind framing)
{
    switch (framing) {
    case PB_LINE: return &line_codec;
    case PB_HTTP: return &http_codec;
    default:      return &frame_codec;
    }
}

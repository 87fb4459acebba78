/*
 * line.c - the `line` wire codec: splits input into \n-terminated text/plain
 * messages and writes `ERR` lines, without I/O.
 */
#include "line.h"

#include <string.h>

/* Every line message borrows this one header; it never changes, so the
 * daemon builds it once instead of once per line. */
static json_t *shared_header;

static json_t *line_header(void)
{
    if (shared_header != NULL)
        return shared_header;
    json_t *header = json_object();
    if (header == NULL
        || json_object_set_new(header, "content-type", json_string("text/plain")) != 0
        || json_object_set_new(header, "content-encoding", json_string("utf-8")) != 0) {
        json_decref(header);
        return NULL;
    }
    shared_header = header;
    return shared_header;
}

void pb_line_codec_cleanup(void)
{
    json_decref(shared_header);
    shared_header = NULL;
}

void pb_line_decoder_init(pb_line_decoder *d, size_t max_message_bytes)
{
    d->max_message_bytes = max_message_bytes;
    d->scanned = 0;
}

static pb_decode_status too_long(pb_line_decoder *d, pb_error *err)
{
    d->scanned = 0;
    pb_error_set(err, PB_ERR_TOO_LARGE,
                 "line longer than the limit of %zu bytes",
                 d->max_message_bytes);
    return PB_DECODE_ERROR;
}

pb_decode_status pb_line_decode(pb_line_decoder *d,
                                const unsigned char *data, size_t len,
                                pb_message *msg, size_t *consumed,
                                pb_error *err)
{
    /* A \n further than this would end a line over the limit, so the
     * search never looks past it. */
    size_t horizon = d->max_message_bytes < len ? d->max_message_bytes + 1 : len;
    const unsigned char *newline = NULL;

    *consumed = 0;
    if (d->scanned < horizon)
        newline = memchr(data + d->scanned, '\n', horizon - d->scanned);
    if (newline == NULL) {
        if (len > d->max_message_bytes)
            return too_long(d, err);
        d->scanned = horizon;
        return PB_DECODE_NEED_MORE;
    }

    size_t line_length = (size_t)(newline - data);
    json_t *header = line_header();
    if (header == NULL) {
        d->scanned = 0;
        pb_error_set(err, PB_ERR_BAD_FRAME, "out of memory");
        return PB_DECODE_ERROR;
    }

    msg->header = header;
    msg->owns_header = 0;
    msg->content_type = json_string_value(json_object_get(header, "content-type"));
    msg->content_encoding = json_string_value(json_object_get(header, "content-encoding"));
    msg->content = data;
    msg->content_length = line_length;
    if (line_length > 0 && data[line_length - 1] == '\r')
        msg->content_length--;
    *consumed = line_length + 1;
    d->scanned = 0;
    return PB_DECODE_MESSAGE;
}

int pb_line_encode_error(pb_buf *out, pb_error_code code, const char *text)
{
    size_t keep = pb_buf_used(out);
    size_t text_at;

    if (pb_buf_append_str(out, "ERR ") != 0
        || pb_buf_append_str(out, pb_error_token(code)) != 0
        || pb_buf_append_byte(out, ' ') != 0)
        goto fail;
    text_at = pb_buf_used(out);
    if (pb_buf_append_str(out, text) != 0 || pb_buf_append_byte(out, '\n') != 0)
        goto fail;

    /* A newline inside the text would end the reply early and be read by
     * the peer as a second line. */
    unsigned char *p = pb_buf_head(out);
    for (size_t i = text_at; i < pb_buf_used(out) - 1; i++)
        if (p[i] == '\r' || p[i] == '\n')
            p[i] = ' ';
    return 0;

fail:
    pb_buf_truncate(out, out->start + keep);
    return -1;
}

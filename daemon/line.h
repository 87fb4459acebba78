/*
 * line.h - the `line` wire codec for telnet and netcat: each \n-terminated
 * line (a trailing \r dropped) is one text/plain utf-8 message; replies are
 * the content plus \n, errors `ERR <code> <text>\n`. No I/O here.
 */
#ifndef PB_LINE_H
#define PB_LINE_H

#include <stddef.h>

#include "buffer.h"
#include "error.h"
#include "frame.h"
#include "message.h"

typedef struct pb_line_decoder {
    size_t max_message_bytes;  /* limit on a line without its \n */
    size_t scanned;            /* bytes already searched for \n */
} pb_line_decoder;

void pb_line_decoder_init(pb_line_decoder *d, size_t max_message_bytes);

/*
 * Same contract as pb_frame_decode(). msg->header is a shared header object
 * ({"content-type": "text/plain", "content-encoding": "utf-8"}) that the
 * message borrows. Too long a line is PB_ERR_TOO_LARGE as soon as more than
 * max_message_bytes arrived without a \n.
 */
pb_decode_status pb_line_decode(pb_line_decoder *d,
                                const unsigned char *data, size_t len,
                                pb_message *msg, size_t *consumed,
                                pb_error *err);

/* Frees the shared line header; call once at exit. */
void pb_line_codec_cleanup(void);

/* Appends `ERR <token> <text>\n` (text with any \r or \n made spaces). */
int pb_line_encode_error(pb_buf *out, pb_error_code code, const char *text);

#endif

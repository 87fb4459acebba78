/*
 * frame.h - the `frame` wire codec: an incremental decoder (bytes in,
 * messages or a wire error out) and the reply encoder. No I/O here: the
 * connection owns the socket and feeds the decoder whatever it has.
 *
 *   +--------+---------------------------+--------------------------+
 *   | u16 BE | JSON header, UTF-8, H B   | content, content-length B |
 *   +--------+---------------------------+--------------------------+
 */
#ifndef PB_FRAME_H
#define PB_FRAME_H

#include <stddef.h>

#include "buffer.h"
#include "error.h"
#include "frame_fast.h"
#include "message.h"

typedef enum pb_decode_status {
    PB_DECODE_NEED_MORE = 0,   /* not a whole message yet; feed more bytes */
    PB_DECODE_MESSAGE,         /* *msg holds one message */
    PB_DECODE_ERROR            /* *err says what; the stream is unusable */
} pb_decode_status;

typedef struct pb_frame_decoder {
    size_t max_message_bytes;  /* limit on H + content-length */
    json_t *header;            /* parsed header of the frame in progress */
    size_t header_length;      /* its H */
    size_t content_length;     /* its content-length */
    pb_fast_cache fast;        /* header objects the strict path reuses */
} pb_frame_decoder;

void pb_frame_decoder_init(pb_frame_decoder *d, size_t max_message_bytes);
/* Frees the header of a frame in progress and the cached one, if any;
 * call it when done with the decoder. */
void pb_frame_decoder_reset(pb_frame_decoder *d);

/*
 * Decodes from data[0..len), the connection's unconsumed input, which must
 * start where the previous call's *consumed left it. Returns:
 *  - PB_DECODE_MESSAGE: *msg filled (content points into data), *consumed =
 *    bytes of the whole frame; call pb_message_clear() when done with it,
 *    and before the next call: the decoder keeps the message's header
 *    object and may rewrite it for a later frame of the same shape.
 *  - PB_DECODE_NEED_MORE: *consumed = 0; *wanted (if not NULL) = the total
 *    number of bytes the frame needs when already known, else 0. The parsed
 *    header is cached in the decoder, so re-feeding the same prefix with more
 *    bytes behind it costs no second parse.
 *  - PB_DECODE_ERROR: *err filled with PB_ERR_BAD_FRAME or PB_ERR_TOO_LARGE.
 *    A too-large frame is refused from its header alone: a header that is
 *    valid but for a content-length over the limit, however many digits
 *    that number has, is PB_ERR_TOO_LARGE.
 */
pb_decode_status pb_frame_decode(pb_frame_decoder *d,
                                 const unsigned char *data, size_t len,
                                 pb_message *msg, size_t *consumed,
                                 size_t *wanted, pb_error *err);

/*
 * The header step of pb_frame_decode: parses and checks the H bytes of
 * header text (H at most d->max_message_bytes, which the decoder checks
 * before) and, when the frame fits the limit, holds the header in the
 * decoder (d->header, d->header_length, d->content_length) and returns 0.
 * Else -1 and *err says PB_ERR_BAD_FRAME or PB_ERR_TOO_LARGE. The strict
 * path of frame_fast.c is tried first when `fast` is non-zero; either path
 * gives the same outcome, which the tests check by comparing them.
 */
int pb_frame_decode_header(pb_frame_decoder *d, const unsigned char *text,
                           size_t length, int fast, pb_error *err);

/* "little" or "big": this host's byte order, as replies announce it. */
const char *pb_host_byteorder(void);

/* The most header bytes a frame can carry: H is a u16. */
#define PB_FRAME_MAX_HEADER 65535

/* Why encoding failed; every failure is negative. */
enum {
    PB_FRAME_NO_MEMORY = -1,
    PB_FRAME_HEADER_TOO_LONG = -2
};

/*
 * Appends the 2-byte length and the JSON header of a frame carrying
 * content_length bytes, with keys in the order byteorder, content-type,
 * content-encoding, content-length. 0, PB_FRAME_NO_MEMORY, or
 * PB_FRAME_HEADER_TOO_LONG when the header would pass PB_FRAME_MAX_HEADER
 * bytes; out is left as it was on failure.
 */
int pb_frame_encode_header(pb_buf *out, const char *content_type,
                           const char *content_encoding,
                           size_t content_length);

/* The same, for a push when `push` is non-zero: the header then ends with
 * the extra key "push": true, so a client tells it from a reply. */
int pb_frame_encode_header_as(pb_buf *out, const char *content_type,
                              const char *content_encoding,
                              size_t content_length, int push);

/* The length of the JSON header pb_frame_encode_header() would write for
 * these values (without the 2-byte prefix), or 0 when out of memory. */
size_t pb_frame_header_length(const char *content_type,
                              const char *content_encoding,
                              size_t content_length);

/* Appends a whole frame: header then content. 0 or as above. */
int pb_frame_encode(pb_buf *out, const char *content_type,
                    const char *content_encoding,
                    const void *content, size_t content_length);

/* Appends an error frame: text/json {"error": text, "code": token}. */
int pb_frame_encode_error(pb_buf *out, pb_error_code code, const char *text);

#endif

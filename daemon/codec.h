/*
 * codec.h - a framing as one table of functions, chosen once when a
 * connection is accepted: how its bytes become messages, and how replies,
 * pushes and errors become bytes. The connection code never asks which
 * framing it speaks; a new one (HTTP, say) is a new table.
 */
#ifndef PB_CODEC_H
#define PB_CODEC_H

#include <plugboard/plugin.h>

#include "buffer.h"
#include "config.h"
#include "error.h"
#include "frame.h"
#include "line.h"
#include "message.h"

/* Every framing's decoder state; the codec knows which member is live.
 * The http framing has no decoder (libmicrohttpd parses it) and leaves the
 * decoder entries NULL. */
typedef union pb_decoder {
    pb_frame_decoder frame;
    pb_line_decoder line;
} pb_decoder;

typedef struct pb_codec {
    pb_framing framing;             /* as plugins are told */

    void (*decoder_init)(pb_decoder *d, size_t max_message_bytes);
    /* Frees what a message in progress holds. */
    void (*decoder_reset)(pb_decoder *d);
    /* pb_frame_decode's contract; max_message_bytes is the current limit. */
    pb_decode_status (*decode)(pb_decoder *d, size_t max_message_bytes,
                               const unsigned char *data, size_t len,
                               pb_message *msg, size_t *consumed,
                               pb_error *err);
    /* Bytes of the message in progress still to come when the decoder
     * knows its size (from a frame header); 0 when it does not. */
    size_t (*remaining)(const pb_decoder *d, size_t have);

    /* Appends what goes before `length` content bytes of a reply (or of a
     * push, when `push` is set), and what goes after them. 0, or a
     * negative PB_FRAME_* reason with out unchanged. */
    int (*reply_head)(pb_buf *out, const char *content_type,
                      const char *content_encoding, size_t length, int push);
    int (*reply_tail)(pb_buf *out);
    int (*error)(pb_buf *out, pb_error_code code, const char *text);
} pb_codec;

/* The table for a configured framing. */
const pb_codec *pb_codec_for(pb_framing_kind framing);

#endif

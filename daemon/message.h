/*
 * message.h - one decoded request as the codecs hand it to the message path:
 * its header and a view of its content in the connection's input buffer.
 */
#ifndef PB_MESSAGE_H
#define PB_MESSAGE_H

#include <jansson.h>
#include <stddef.h>
#include <string.h>

typedef struct pb_message {
    json_t *header;                 /* owned reference (frame) or borrowed
                                     * shared header (line); see owns_header */
    int owns_header;
    const char *content_type;       /* strings inside header */
    const char *content_encoding;
    const unsigned char *content;   /* points into the decoder's input */
    size_t content_length;
} pb_message;

/* Releases what the message owns (its header reference). */
static inline void pb_message_clear(pb_message *msg)
{
    if (msg->owns_header)
        json_decref(msg->header);
    memset(msg, 0, sizeof *msg);
}

#endif

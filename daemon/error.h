/*
 * error.h - the error codes a peer can be sent (docs/protocol.md) and the
 * error value the codecs and the message path hand back to the connection.
 */
#ifndef PB_ERROR_H
#define PB_ERROR_H

#include "buffer.h"

typedef enum pb_error_code {
    PB_ERR_NONE = 0,
    PB_ERR_BAD_FRAME,       /* reply, close */
    PB_ERR_TOO_LARGE,       /* reply, close without reading the content */
    PB_ERR_BAD_JSON,        /* reply, keep */
    PB_ERR_NO_ROUTE,        /* reply, keep */
    PB_ERR_PLUGIN_FAILED,   /* reply, keep */
    PB_ERR_BUSY,            /* reply at accept, close */
    PB_ERR_SHUTTING_DOWN,   /* reply, close */
    PB_ERR_SLOW_CONSUMER    /* sent unasked to a reader too slow for its
                             * pushes, close */
} pb_error_code;

typedef struct pb_error {
    pb_error_code code;
    char text[256];         /* human readable, no trailing newline */
} pb_error;

/* The wire token of a code: "bad_frame", "too_large", ... */
const char *pb_error_token(pb_error_code code);

/* Whether the connection is closed after replying with this error. */
int pb_error_closes(pb_error_code code);

/* The HTTP status an HTTP listener answers a code with. */
int pb_error_http_status(pb_error_code code);

/* Appends the JSON content of an error, {"error": TEXT, "code": TOKEN},
 * as every framing writes it. 0, or -1 (out of memory) with out unchanged. */
int pb_error_encode_json(pb_buf *out, const char *token, const char *text);

/* Fills err; returns -1 so that callers can `return pb_error_set(...)`. */
int pb_error_set(pb_error *err, pb_error_code code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif

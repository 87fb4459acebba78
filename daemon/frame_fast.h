/*
 * frame_fast.h - the strict fast path for frame headers: a header written
 * the way the guide's client writes it is checked and turned into its JSON
 * object without jansson's general parser; anything else goes to jansson.
 */
#ifndef PB_FRAME_FAST_H
#define PB_FRAME_FAST_H

#include <jansson.h>
#include <stddef.h>

#include "error.h"

/* The values of a header the strict parser accepted; the strings point
 * into the header text and are not NUL-terminated. */
typedef struct pb_fast_header {
    const char *byteorder;
    size_t byteorder_length;
    const char *content_type;
    size_t content_type_length;
    const char *content_encoding;
    size_t content_encoding_length;
    json_int_t content_length;
} pb_fast_header;

/*
 * Accepts exactly
 *   {"byteorder": "little"|"big", "content-type": S, "content-encoding": S,
 *    "content-length": N}
 * on one line with Python's ", " and ": " separators, where each S is
 * printable ASCII without '"' or '\\' and N is a non-negative integer of
 * at most 18 digits without leading zeros. Returns 1 and fills *h, or 0
 * for anything else (which is not an error: jansson decides then).
 */
int pb_frame_fast_parse(const unsigned char *text, size_t length,
                        pb_fast_header *h);

/*
 * The JSON object for an accepted header, equal member for member and in
 * the same order to what jansson builds from the same text; a new
 * reference, or NULL when out of memory. The object of the previous call
 * is reused when nobody else holds it and only content-length changed, so
 * a stream of similar frames allocates nothing.
 */
json_t *pb_frame_fast_header(const pb_fast_header *h);

/* Frees the reusable header object; at exit. */
void pb_frame_fast_cleanup(void);

/*
 * Parses and checks a frame header (the H bytes after the length prefix)
 * as the decoder does: through the strict path when `fast` is non-zero and
 * the text qualifies, otherwise through jansson. Either way the outcome is
 * the same: the header object (a new reference) and its content-length,
 * or NULL with *err set to PB_ERR_BAD_FRAME. Tests compare the two paths.
 */
json_t *pb_frame_parse_header(const unsigned char *text, size_t length,
                              int fast, json_int_t *content_length,
                              pb_error *err);

#endif

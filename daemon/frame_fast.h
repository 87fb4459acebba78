/*
 * frame_fast.h - the strict fast path for frame headers: a header written
 * the way the guide's client writes it is checked and turned into its JSON
 * object without jansson's general parser; anything else goes to jansson.
 */
#ifndef PB_FRAME_FAST_H
#define PB_FRAME_FAST_H

#include <jansson.h>
#include <limits.h>
#include <stddef.h>

/* The largest json_int_t, which jansson does not name. */
#if JSON_INTEGER_IS_LONG_LONG
#define PB_JSON_INT_MAX LLONG_MAX
#else
#define PB_JSON_INT_MAX LONG_MAX
#endif

/* The values of a header the strict parser accepted; the strings point
 * into the header text and are not NUL-terminated. */
typedef struct pb_fast_header {
    const char *byteorder;
    size_t byteorder_length;
    const char *content_type;
    size_t content_type_length;
    const char *content_encoding;
    size_t content_encoding_length;
    json_int_t content_length;      /* meaningful unless ..._overflows */
    int content_length_overflows;   /* the number is above PB_JSON_INT_MAX */
    const unsigned char *text;      /* the header text, whose first */
    size_t prefix_length;           /* bytes come before the number */
    int repeat;                     /* only the number was read: the rest
                                     * is the cached object's (see below) */
} pb_fast_header;

/*
 * Accepts exactly
 *   {"byteorder": "little"|"big", "content-type": S, "content-encoding": S,
 *    "content-length": N}
 * on one line with Python's ", " and ": " separators, where each S is
 * printable ASCII without '"' or '\\' and N is a non-negative integer
 * without leading zeros, of any number of digits. Returns 1 and fills *h,
 * or 0 for anything else (which is not an error: jansson decides then).
 */
int pb_frame_fast_parse(const unsigned char *text, size_t length,
                        pb_fast_header *h);

/* The header object the strict path built last, with its members and the
 * text before its content-length's digits, kept by a decoder for its next
 * frame. Zero-initialised when empty. */
typedef struct pb_fast_cache {
    json_t *object;
    json_t *content_type, *content_encoding, *content_length;
    unsigned char *prefix;          /* malloc'd with the object, so that a
                                     * connection that sent nothing holds
                                     * none; NULL when out of memory */
    size_t prefix_length;
} pb_fast_cache;

/*
 * A header whose text up to its content-length's digits is the cached
 * object's, the usual case of a client sending one kind of message: only
 * the number and the closing brace are read, into *h (with repeat set).
 * Returns 1, or 0 for anything else, which pb_frame_fast_parse then reads.
 */
int pb_frame_fast_repeat(const pb_fast_cache *cache, const unsigned char *text,
                         size_t length, pb_fast_header *h);

/*
 * The JSON object for an accepted header whose content-length does not
 * overflow, equal member for member and in the same order to what jansson
 * builds from the same text; a new reference, or NULL when out of memory.
 * For a repeat (pb_frame_fast_repeat) the cached object is updated with the
 * new content-length and returned again, so a stream of similar frames
 * allocates nothing; the caller guarantees that nobody uses it any more
 * (the decoder does: a message is finished before the next decode).
 * Otherwise the new object replaces it in the cache.
 */
json_t *pb_frame_fast_header(const pb_fast_header *h, pb_fast_cache *cache);

/* Releases the cached object and empties the cache. */
void pb_frame_fast_cache_clear(pb_fast_cache *cache);

#endif

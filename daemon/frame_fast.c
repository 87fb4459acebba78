/*
 * frame_fast.c - the strict fast path for frame headers: recognises the
 * canonical header the guide's client writes and builds (or reuses) its
 * JSON object without running jansson's general parser.
 */
#include "frame_fast.h"

#include <stdlib.h>
#include <string.h>

#define LITERAL(s) (s), (sizeof(s) - 1)

/* The text continues with the n bytes of lit: returns what follows them,
 * or NULL (also when p already is NULL, so steps chain). */
static const unsigned char *expect(const unsigned char *p,
                                   const unsigned char *end,
                                   const char *lit, size_t n)
{
    if (p == NULL || (size_t)(end - p) < n || memcmp(p, lit, n) != 0)
        return NULL;
    return p + n;
}

/* A string literal of printable ASCII with nothing to unescape: those are
 * exactly the strings whose bytes are their value, valid UTF-8 and free of
 * NUL, so jansson would read the same value. */
static const unsigned char *simple_string(const unsigned char *p,
                                          const unsigned char *end,
                                          const char **value, size_t *length)
{
    if (p == NULL || p == end || *p != '"')
        return NULL;
    const unsigned char *start = ++p;
    while (p < end && *p != '"') {
        if (*p < 0x20 || *p > 0x7e || *p == '\\')
            return NULL;
        p++;
    }
    if (p == end)
        return NULL;
    *value = (const char *)start;
    *length = (size_t)(p - start);
    return p + 1;
}

/* A JSON integer without sign, exponent or leading zeros, of any length;
 * one above PB_JSON_INT_MAX is still read to its end and flagged, since
 * such a content-length is refused as too large, not as malformed. */
static const unsigned char *natural(const unsigned char *p,
                                    const unsigned char *end,
                                    json_int_t *value, int *overflows)
{
    if (p == NULL || p == end || *p < '0' || *p > '9')
        return NULL;
    const unsigned char *start = p;
    json_int_t n = 0;
    *overflows = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        int digit = *p - '0';
        if (*overflows || n > (PB_JSON_INT_MAX - digit) / 10)
            *overflows = 1;
        else
            n = n * 10 + digit;
        p++;
    }
    if (*start == '0' && p - start > 1)
        return NULL;
    *value = n;
    return p;
}

int pb_frame_fast_parse(const unsigned char *text, size_t length,
                        pb_fast_header *h)
{
    const unsigned char *end = text + length;
    const unsigned char *p = expect(text, end, LITERAL("{\"byteorder\": "));
    p = simple_string(p, end, &h->byteorder, &h->byteorder_length);
    p = expect(p, end, LITERAL(", \"content-type\": "));
    p = simple_string(p, end, &h->content_type, &h->content_type_length);
    p = expect(p, end, LITERAL(", \"content-encoding\": "));
    p = simple_string(p, end, &h->content_encoding, &h->content_encoding_length);
    p = expect(p, end, LITERAL(", \"content-length\": "));
    h->text = text;
    h->prefix_length = p != NULL ? (size_t)(p - text) : 0;
    h->repeat = 0;
    p = natural(p, end, &h->content_length, &h->content_length_overflows);
    p = expect(p, end, LITERAL("}"));
    if (p != end)
        return 0;
    /* A wrong byteorder is left to the general path, which words the
     * error; only headers that will be accepted take this one. */
    if (!(h->byteorder_length == 6 && memcmp(h->byteorder, "little", 6) == 0)
        && !(h->byteorder_length == 3 && memcmp(h->byteorder, "big", 3) == 0))
        return 0;
    return 1;
}

int pb_frame_fast_repeat(const pb_fast_cache *cache, const unsigned char *text,
                         size_t length, pb_fast_header *h)
{
    size_t n = cache->prefix_length;
    if (cache->prefix == NULL || length <= n || memcmp(text, cache->prefix, n) != 0)
        return 0;
    const unsigned char *p = natural(text + n, text + length, &h->content_length,
                                     &h->content_length_overflows);
    if (expect(p, text + length, LITERAL("}")) != text + length)
        return 0;
    h->text = text;
    h->prefix_length = n;
    h->repeat = 1;
    return 1;
}

/* Adds a member and returns the value it holds, or NULL when out of
 * memory (json_object_set_new_nocheck releases value itself then). */
static json_t *add(json_t *object, const char *key, json_t *value)
{
    if (json_object_set_new_nocheck(object, key, value) != 0)
        return NULL;
    return value;
}

/* The strings are printable ASCII, hence valid UTF-8 without NUL: the
 * unchecked constructors are safe. Keys go in document order, as jansson
 * inserts them when parsing. */
static json_t *build(const pb_fast_header *h, pb_fast_cache *cache)
{
    json_t *object = json_object();
    if (object == NULL)
        return NULL;
    json_t *byteorder = add(object, "byteorder",
                            json_stringn_nocheck(h->byteorder, h->byteorder_length));
    json_t *type = byteorder ? add(object, "content-type",
                                   json_stringn_nocheck(h->content_type,
                                                        h->content_type_length))
                             : NULL;
    json_t *encoding = type ? add(object, "content-encoding",
                                  json_stringn_nocheck(h->content_encoding,
                                                       h->content_encoding_length))
                            : NULL;
    json_t *length = encoding ? add(object, "content-length",
                                    json_integer(h->content_length))
                              : NULL;
    if (length == NULL) {
        json_decref(object);
        return NULL;
    }
    pb_frame_fast_cache_clear(cache);
    cache->object = json_incref(object);
    cache->content_type = type;
    cache->content_encoding = encoding;
    cache->content_length = length;
    cache->prefix = malloc(h->prefix_length);
    if (cache->prefix != NULL) {
        memcpy(cache->prefix, h->text, h->prefix_length);
        cache->prefix_length = h->prefix_length;
    }
    return object;
}

json_t *pb_frame_fast_header(const pb_fast_header *h, pb_fast_cache *cache)
{
    if (h->repeat) {
        json_integer_set(cache->content_length, h->content_length);
        return json_incref(cache->object);
    }
    return build(h, cache);
}

void pb_frame_fast_cache_clear(pb_fast_cache *cache)
{
    json_decref(cache->object);
    free(cache->prefix);
    memset(cache, 0, sizeof *cache);
}

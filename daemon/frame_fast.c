/*
 * frame_fast.c - the strict fast path for frame headers: recognises the
 * canonical header the guide's client writes and builds (or reuses) its
 * JSON object without running jansson's general parser.
 */
#include "frame_fast.h"

#include <string.h>

#define LITERAL(s) (s), (sizeof(s) - 1)
#define MAX_DIGITS 18   /* below 2^63: no overflow check needed */

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

/* A JSON integer without sign, exponent or leading zeros, small enough
 * for json_int_t whatever its digits. */
static const unsigned char *small_integer(const unsigned char *p,
                                          const unsigned char *end,
                                          json_int_t *value)
{
    if (p == NULL || p == end || *p < '0' || *p > '9')
        return NULL;
    const unsigned char *start = p;
    json_int_t n = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (p - start == MAX_DIGITS)
            return NULL;
        n = n * 10 + (*p - '0');
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
    p = small_integer(p, end, &h->content_length);
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

/*
 * The last header object built, with its members, kept for reuse. The
 * daemon runs one event loop per process, so one is enough; the members
 * live as long as the object holds them.
 */
static struct {
    json_t *object;
    json_t *byteorder, *content_type, *content_encoding, *content_length;
} reusable;

static int same_string(const json_t *value, const char *s, size_t n)
{
    return json_string_length(value) == n
           && memcmp(json_string_value(value), s, n) == 0;
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
static json_t *build(const pb_fast_header *h)
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
    pb_frame_fast_cleanup();
    reusable.object = json_incref(object);
    reusable.byteorder = byteorder;
    reusable.content_type = type;
    reusable.content_encoding = encoding;
    reusable.content_length = length;
    return object;
}

json_t *pb_frame_fast_header(const pb_fast_header *h)
{
    /* A reference count of 1 means only this cache holds the object: no
     * message or decoder still uses it, so it may change. */
    if (reusable.object != NULL && reusable.object->refcount == 1
        && same_string(reusable.byteorder, h->byteorder, h->byteorder_length)
        && same_string(reusable.content_type, h->content_type,
                       h->content_type_length)
        && same_string(reusable.content_encoding, h->content_encoding,
                       h->content_encoding_length)) {
        json_integer_set(reusable.content_length, h->content_length);
        return json_incref(reusable.object);
    }
    return build(h);
}

void pb_frame_fast_cleanup(void)
{
    json_decref(reusable.object);
    memset(&reusable, 0, sizeof reusable);
}

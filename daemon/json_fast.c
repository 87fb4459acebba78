/*
 * json_fast.c - builds flat JSON objects of plain string members straight
 * from their text, for request content like the guide's
 * {"action": "search", "value": "morpheus"}.
 */
#include "json_fast.h"

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A string literal without escapes or control characters; UTF-8 is
 * checked by jansson when the value is made. */
static const char *plain_string(const char *p, const char *end,
                                const char **value, size_t *length)
{
    if (p == end || *p != '"')
        return NULL;
    const char *start = ++p;
    while (p < end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == '\\')
            return NULL;
        p++;
    }
    if (p == end)
        return NULL;
    *value = start;
    *length = (size_t)(p - start);
    return p + 1;
}

/* Adds one member; -1 for a duplicate key (jansson's parser would keep
 * the last value, which this path leaves to it), bad UTF-8 or no memory. */
static int add_member(json_t *object, const char *key, size_t key_length,
                      const char *value, size_t value_length)
{
    if (json_object_getn(object, key, key_length) != NULL)
        return -1;
    json_t *string = json_stringn(value, value_length);
    /* json_object_setn_new checks the key's UTF-8 and releases the value
     * itself when it fails. */
    return string == NULL ? -1
                          : json_object_setn_new(object, key, key_length, string);
}

json_t *pb_json_fast_object(const char *text, size_t length)
{
    const char *end = text + length;
    const char *p = skip_space(text, end);
    if (p == end || *p != '{')
        return NULL;
    json_t *object = json_object();
    if (object == NULL)
        return NULL;
    p = skip_space(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            const char *key, *value;
            size_t key_length, value_length;
            p = plain_string(p, end, &key, &key_length);
            p = p ? skip_space(p, end) : NULL;
            if (p == NULL || p == end || *p != ':')
                goto refuse;
            p = plain_string(skip_space(p + 1, end), end, &value, &value_length);
            if (p == NULL
                || add_member(object, key, key_length, value, value_length) != 0)
                goto refuse;
            p = skip_space(p, end);
            if (p < end && *p == ',') {
                p = skip_space(p + 1, end);
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            goto refuse;
        }
    }
    if (skip_space(p, end) == end)
        return object;
refuse:
    json_decref(object);
    return NULL;
}

json_t *pb_json_content(const char *text, size_t length, json_error_t *err)
{
    json_t *value = pb_json_fast_object(text, length);
    if (value == NULL)
        value = json_loadb(text, length, JSON_DECODE_ANY | JSON_ALLOW_NUL, err);
    return value;
}

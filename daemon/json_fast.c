/*
 * json_fast.c - reads request content of the common flat shape in place
 * (see json_fast.h) and gives everything else to jansson.
 */
#include "json_fast.h"

#include <string.h>

#include "json_dump.h"

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A string literal without escapes or control characters, in valid
 * UTF-8 (jansson refuses anything else, and then decides). */
static const char *plain_string(const char *p, const char *end,
                                const char **value, size_t *length)
{
    if (p == end || *p != '"')
        return NULL;
    const char *start = ++p;
    unsigned char high = 0;
    while (p < end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == '\\')
            return NULL;
        high |= c;
        p++;
    }
    if (p == end)
        return NULL;
    if ((high & 0x80) && !pb_utf8_valid(start, (size_t)(p - start)))
        return NULL;
    *value = start;
    *length = (size_t)(p - start);
    return p + 1;
}

/* Copies a string into the content's storage, NUL-terminated. Every
 * string gives up its two quotes for one NUL, so content no longer than
 * the storage always fits. */
static const char *store(char **at, const char *s, size_t length)
{
    char *copy = *at;
    memcpy(copy, s, length);
    copy[length] = '\0';
    *at += length + 1;
    return copy;
}

/* A flat object of distinct plain string members, filled into c; 0 for
 * any other text. */
static int parse_flat(pb_content *c, const char *text, size_t length)
{
    if (length > PB_FLAT_BYTES)
        return 0;
    const char *end = text + length;
    const char *p = skip_space(text, end);
    if (p == end || *p != '{')
        return 0;
    char *at = c->storage;
    size_t n = 0;
    p = skip_space(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            const char *key, *value;
            size_t key_length, value_length;
            if (n == PB_FLAT_MEMBERS)
                return 0;
            p = plain_string(p, end, &key, &key_length);
            p = p ? skip_space(p, end) : NULL;
            if (p == NULL || p == end || *p != ':')
                return 0;
            p = plain_string(skip_space(p + 1, end), end, &value, &value_length);
            if (p == NULL)
                return 0;
            /* jansson keeps the last of duplicate keys: its rule, not ours. */
            for (size_t i = 0; i < n; i++)
                if (strncmp(c->members[i].key, key, key_length) == 0
                    && c->members[i].key[key_length] == '\0')
                    return 0;
            c->members[n].key = store(&at, key, key_length);
            c->members[n].value = (pb_flat_value){
                .tag = PB_FLAT_TAG,
                .string = store(&at, value, value_length),
                .length = value_length,
                .content = c,
            };
            n++;
            p = skip_space(p, end);
            if (p < end && *p == ',') {
                p = skip_space(p + 1, end);
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return 0;
        }
    }
    if (skip_space(p, end) != end)
        return 0;
    c->n_members = n;
    c->object = (pb_flat_value){ .tag = PB_FLAT_TAG, .is_object = 1, .content = c };
    return 1;
}

const pb_json *pb_content_parse(pb_content *content, const char *text,
                                size_t length, json_error_t *err)
{
    content->object.tree = NULL;
    content->parsed = NULL;
    if (parse_flat(content, text, length))
        return (const pb_json *)&content->object;
    content->parsed = json_loadb(text, length, JSON_DECODE_ANY | JSON_ALLOW_NUL, err);
    return (const pb_json *)content->parsed;
}

void pb_content_release(pb_content *content)
{
    json_decref(content->object.tree);
    json_decref(content->parsed);
    content->object.tree = NULL;
    content->parsed = NULL;
}

const pb_flat_value *pb_flat_get(const pb_flat_value *object, const char *key)
{
    if (!object->is_object)
        return NULL;
    const pb_content *c = object->content;
    for (size_t i = 0; i < c->n_members; i++)
        if (strcmp(c->members[i].key, key) == 0)
            return &c->members[i].value;
    return NULL;
}

const json_t *pb_flat_tree(const pb_flat_value *value)
{
    pb_content *c = value->content;
    if (c->object.tree == NULL) {
        json_t *object = json_object();
        for (size_t i = 0; object != NULL && i < c->n_members; i++) {
            /* Checked as UTF-8 when read. */
            const pb_flat_value *v = &c->members[i].value;
            if (json_object_set_new_nocheck(object, c->members[i].key,
                                            json_stringn_nocheck(v->string, v->length)) != 0) {
                json_decref(object);
                object = NULL;
            }
        }
        if (object == NULL)
            return NULL;
        c->object.tree = object;
    }
    if (value->is_object)
        return c->object.tree;
    for (size_t i = 0; i < c->n_members; i++)
        if (&c->members[i].value == value)
            return json_object_get(c->object.tree, c->members[i].key);
    return NULL;
}

const char *pb_content_string(const pb_json *value, const char *key)
{
    const pb_flat_value *flat = pb_flat_of(value);
    if (flat != NULL) {
        const pb_flat_value *member = pb_flat_get(flat, key);
        return member != NULL ? member->string : NULL;
    }
    return json_string_value(json_object_get((const json_t *)value, key));
}

/*
 * json_fast.h - the content of a text/json request. The common shape, a
 * flat object of plain string members like the guide's
 * {"action": "search", "value": "morpheus"}, is read in place into a
 * pb_content the caller keeps on its stack: no allocation, no jansson. The
 * router finds `action` there, and the host's JSON readers read it
 * directly; jansson builds the value only when a plugin asks for more than
 * reading (a copy, an encoding). Anything else is parsed by jansson.
 */
#ifndef PB_JSON_FAST_H
#define PB_JSON_FAST_H

#include <jansson.h>
#include <stddef.h>

#include <plugboard/plugin.h>

/* Bounds of the in-place form; larger objects go to jansson. */
#define PB_FLAT_MEMBERS 8
#define PB_FLAT_BYTES   512

/*
 * A value of the in-place form: the object or one of its strings. Its
 * first member stands where a jansson value keeps its type, with a value
 * jansson never uses, which is how pb_flat_of() tells the two apart.
 */
typedef struct pb_flat_value {
    json_type tag;
    int is_object;
    const char *string;          /* a string's bytes, NUL-terminated */
    size_t length;
    struct pb_content *content;
    json_t *tree;                /* jansson's equal, once asked for */
} pb_flat_value;

typedef struct pb_content {
    pb_flat_value object;        /* request->json when the content is flat */
    size_t n_members;
    struct {
        const char *key;         /* NUL-terminated, in storage */
        pb_flat_value value;
    } members[PB_FLAT_MEMBERS];
    char storage[PB_FLAT_BYTES];
    json_t *parsed;              /* jansson's value otherwise */
} pb_content;

/* Makes a pb_content safe to release before any parse (only its two
 * trees need a value, and the rest is a kilobyte not worth clearing). */
static inline void pb_content_init(pb_content *content)
{
    content->object.tree = NULL;
    content->parsed = NULL;
}

/*
 * Parses text[0..length) into *content and returns the value to give
 * plugins as request->json, or NULL with `err` filled when the content is
 * not JSON (jansson's message). Release with pb_content_release once the
 * request is handled.
 */
const pb_json *pb_content_parse(pb_content *content, const char *text,
                                size_t length, json_error_t *err);
void pb_content_release(pb_content *content);

/* The in-place value behind `value`, or NULL when it is jansson's. */
#define PB_FLAT_TAG ((json_type)0x7f1a7)
static inline const pb_flat_value *pb_flat_of(const pb_json *value)
{
    const pb_flat_value *v = (const pb_flat_value *)value;
    return v != NULL && v->tag == PB_FLAT_TAG ? v : NULL;
}

/* The member `key` of an in-place object, or NULL. */
const pb_flat_value *pb_flat_get(const pb_flat_value *object, const char *key);

/* jansson's equal of an in-place value, built on first use and kept until
 * the content is released; NULL when out of memory. */
const json_t *pb_flat_tree(const pb_flat_value *value);

/* The string member `key` of a request's content, in either form; NULL
 * when there is none (the router's `action`). */
const char *pb_content_string(const pb_json *value, const char *key);

#endif

/*
 * json_fast.h - the strict fast path for request content: a flat JSON
 * object of plain string members, the shape of the guide's requests, is
 * built without jansson's general parser; anything else goes to jansson.
 */
#ifndef PB_JSON_FAST_H
#define PB_JSON_FAST_H

#include <jansson.h>
#include <stddef.h>

/*
 * Builds the object for text[0..length) when it is a JSON object (JSON
 * whitespace allowed around every token) whose members are all strings,
 * with keys and values free of escapes and control characters and keys
 * distinct. The result equals, member for member and in the same order,
 * what json_loadb() would build. NULL for anything else, including invalid
 * UTF-8 and out of memory: the caller then asks jansson, which decides.
 */
json_t *pb_json_fast_object(const char *text, size_t length);

/* The JSON value of text/json content, as every framing parses it: the
 * fast path first, then jansson, which fills err when the content is not
 * JSON (NULL then). */
json_t *pb_json_content(const char *text, size_t length, json_error_t *err);

#endif

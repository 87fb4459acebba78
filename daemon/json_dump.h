/*
 * json_dump.h - writes JSON exactly as Python's
 * json.dumps(obj, ensure_ascii=False) does: ", " and ": " separators, keys in
 * insertion order, non-ASCII as raw UTF-8, floats as Python's repr().
 */
#ifndef PB_JSON_DUMP_H
#define PB_JSON_DUMP_H

#include <jansson.h>
#include <stddef.h>

#include "buffer.h"

/* Appends the serialization of value to out; 0, or -1 when out of memory
 * or when value holds something JSON cannot express (NaN, infinity: Python
 * would write NaN, we refuse). */
int pb_json_dump(pb_buf *out, const json_t *value);

/* Appends one JSON string literal (quotes included) for len bytes of UTF-8;
 * 0 or -1. Invalid UTF-8 bytes are written as U+FFFD. */
int pb_json_dump_string(pb_buf *out, const char *s, size_t len);

/* 1 when s[0..len) is well-formed UTF-8, else 0. */
int pb_utf8_valid(const char *s, size_t len);

#endif

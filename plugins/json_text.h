/*
 * json_text.h - checks that bytes from outside (a message another program
 * published to Redis) are one well-formed JSON text, before the daemon
 * puts them into a reply or a push as they are.
 */
#ifndef PLUGBOARD_JSON_TEXT_H
#define PLUGBOARD_JSON_TEXT_H

#include <stddef.h>

/* Maximum nesting of arrays and objects accepted. */
#define JSON_TEXT_MAX_DEPTH 512

/*
 * Whether text[0..length) is exactly one JSON value (RFC 8259), with
 * whitespace around it allowed, strings in valid UTF-8 and nesting at
 * most JSON_TEXT_MAX_DEPTH deep.
 */
int json_text_valid(const char *text, size_t length);

#endif

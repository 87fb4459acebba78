/*
 * diag.h - configuration diagnostics: a list of "FILE:LINE: message" lines
 * collected while a configuration is loaded and checked, so that one run of
 * `plugboard -t` reports every mistake, not only the first.
 */
#ifndef PB_DIAG_H
#define PB_DIAG_H

#include <stddef.h>

typedef struct pb_diag {
    char **lines;
    size_t count;
    size_t cap;
} pb_diag;

#define PB_DIAG_INIT { NULL, 0, 0 }

/* Adds "FILE:LINE: message" (or "FILE: message" when line <= 0, or just the
 * message when file is NULL). Out of memory drops the line silently; the
 * count still says something failed. */
void pb_diag_add(pb_diag *diag, const char *file, int line,
                 const char *format, ...) __attribute__((format(printf, 4, 5)));

/* Prints every line to stderr, one per line. */
void pb_diag_print(const pb_diag *diag);

/* Logs every line as an error. */
void pb_diag_log(const pb_diag *diag);

void pb_diag_free(pb_diag *diag);

#endif

/*
 * diag.c - the list of "FILE:LINE: message" lines a configuration check
 * collects, so that every mistake in a file is reported in one run.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "log.h"

/* Stands in for a line that could not be built, so that every entry stays a
 * printable string and the count still shows that something went wrong. */
static char out_of_memory[] = "out of memory";

static int grow(pb_diag *diag)
{
    if (diag->count < diag->cap)
        return 0;
    size_t cap = diag->cap ? diag->cap * 2 : 8;
    char **lines = realloc(diag->lines, cap * sizeof *lines);
    if (!lines)
        return -1;
    diag->lines = lines;
    diag->cap = cap;
    return 0;
}

void pb_diag_add(pb_diag *diag, const char *file, int line,
                 const char *format, ...)
{
    char prefix[32];
    if (line > 0)
        snprintf(prefix, sizeof prefix, ":%d: ", line);
    else
        snprintf(prefix, sizeof prefix, ": ");
    size_t head = file ? strlen(file) + strlen(prefix) : 0;

    va_list ap, again;
    va_start(ap, format);
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, format, ap);
    va_end(ap);
    char *text = n < 0 ? NULL : malloc(head + (size_t)n + 1);
    if (text) {
        if (file)
            snprintf(text, head + 1, "%s%s", file, prefix);
        vsnprintf(text + head, (size_t)n + 1, format, again);
    }
    va_end(again);

    if (grow(diag) < 0) {
        free(text);
        return;
    }
    diag->lines[diag->count++] = text ? text : out_of_memory;
}

void pb_diag_print(const pb_diag *diag)
{
    for (size_t i = 0; i < diag->count; i++)
        fprintf(stderr, "%s\n", diag->lines[i]);
}

void pb_diag_log(const pb_diag *diag)
{
    for (size_t i = 0; i < diag->count; i++)
        pb_log_error("%s", diag->lines[i]);
}

void pb_diag_free(pb_diag *diag)
{
    for (size_t i = 0; i < diag->count; i++)
        if (diag->lines[i] != out_of_memory)
            free(diag->lines[i]);
    free(diag->lines);
    diag->lines = NULL;
    diag->count = diag->cap = 0;
}

/*
 * stats_table.c - the daemon's stats reply as text for a terminal: a
 * summary of the daemon-wide counters, then aligned tables of its workers,
 * listeners, plugins (with latency quantiles where the daemon measures
 * them), the plugins' own metrics and the routes. Members the reply lacks
 * are left out, so that an older daemon's reply prints too.
 */

#include "stats_table.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats_view.h"

#define MAX_COLUMNS 6
#define CELL 256

typedef struct table {
    int columns;
    const char *heads[MAX_COLUMNS];
    char (*rows)[MAX_COLUMNS][CELL];
    size_t nrows;
    size_t cap;
} table;

/* Like put in status_page.c: the first failure is kept, not checked at
 * every append. */
typedef struct text {
    pb_buf *out;
    int failed;
} text;

static void put(text *t, const char *s)
{
    if (!t->failed && pb_buf_append_str(t->out, s) != 0)
        t->failed = 1;
}

static void putf(text *t, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void putf(text *t, const char *format, ...)
{
    char line[CELL * 2];
    va_list ap;

    va_start(ap, format);
    vsnprintf(line, sizeof line, format, ap);
    va_end(ap);
    put(t, line);
}

static void count_text(char *cell, size_t size, const json_t *value)
{
    if (json_is_integer(value))
        snprintf(cell, size, "%lld", (long long)json_integer_value(value));
    else if (json_is_real(value))
        snprintf(cell, size, "%.0f", json_real_value(value));
    else
        snprintf(cell, size, "-");
}

static long long count_of(const json_t *value)
{
    return json_is_number(value) ? (long long)json_number_value(value) : 0;
}

/* A new row, its cells empty; NULL when out of memory. */
static char (*add_row(table *tb))[CELL]
{
    if (tb->nrows == tb->cap) {
        size_t cap = tb->cap ? tb->cap * 2 : 16;
        void *rows = realloc(tb->rows, cap * sizeof tb->rows[0]);
        if (rows == NULL)
            return NULL;
        tb->rows = rows;
        tb->cap = cap;
    }
    memset(tb->rows[tb->nrows], 0, sizeof tb->rows[0]);
    return tb->rows[tb->nrows++];
}

/* Columns are as wide as their widest cell in characters, not bytes: a
 * route's name and "µs" may hold UTF-8. */
static size_t width(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static void put_padding(text *t, size_t n)
{
    for (; n > 0; n--)
        put(t, " ");
}

/* The first `left` columns are names, aligned left; the others numbers,
 * aligned right. */
static void put_table(text *t, const table *tb, int left)
{
    size_t widths[MAX_COLUMNS];
    for (int c = 0; c < tb->columns; c++) {
        widths[c] = width(tb->heads[c]);
        for (size_t r = 0; r < tb->nrows; r++)
            if (width(tb->rows[r][c]) > widths[c])
                widths[c] = width(tb->rows[r][c]);
    }
    put(t, "\n");
    for (size_t r = 0; r <= tb->nrows; r++) {
        for (int c = 0; c < tb->columns; c++) {
            const char *cell = r == 0 ? tb->heads[c] : tb->rows[r - 1][c];
            size_t pad = widths[c] - width(cell);
            if (c > 0)
                put(t, "  ");
            if (c >= left)
                put_padding(t, pad);
            put(t, cell);
            if (c < left && c + 1 < tb->columns)
                put_padding(t, pad);
        }
        put(t, "\n");
    }
}

static void put_summary(text *t, const json_t *s)
{
    const json_t *v;
    char a[CELL];

    if (json_is_number(v = json_object_get(s, "uptime"))) {
        pb_stats_format_uptime(a, sizeof a, json_number_value(v));
        putf(t, "uptime       %s\n", a);
    }
    if ((v = json_object_get(s, "generation")) != NULL) {
        long long reloads = count_of(json_object_get(s, "reloads"));
        putf(t, "generation   %lld (%lld reload%s, %lld failed)\n", count_of(v), reloads,
             reloads == 1 ? "" : "s", count_of(json_object_get(s, "failed_reloads")));
    }
    if ((v = json_object_get(s, "workers")) != NULL) {
        long long restarts = count_of(json_object_get(s, "worker_restarts"));
        putf(t, "workers      %lld (%lld restart%s)\n", count_of(v), restarts,
             restarts == 1 ? "" : "s");
    }
    if (json_is_object(v = json_object_get(s, "connections"))) {
        putf(t, "connections  %lld open, %lld accepted, %lld refused",
             count_of(json_object_get(v, "open")), count_of(json_object_get(v, "accepted")),
             count_of(json_object_get(v, "refused")));
        const char *reason;
        const json_t *n;
        const char *sep = " (";
        json_object_foreach(json_object_get(v, "refused_by"), reason, n) {
            if (count_of(n) == 0)
                continue;
            putf(t, "%s%s %lld", sep, reason, count_of(n));
            sep = ", ";
        }
        put(t, sep[0] == ',' ? ")\n" : "\n");
    }
    if ((v = json_object_get(s, "messages")) != NULL)
        putf(t, "messages     %lld\n", count_of(v));
    if (json_is_object(v = json_object_get(s, "bytes"))) {
        char b[CELL];
        pb_stats_format_bytes(a, sizeof a, (double)count_of(json_object_get(v, "in")));
        pb_stats_format_bytes(b, sizeof b, (double)count_of(json_object_get(v, "out")));
        putf(t, "bytes        %s in, %s out\n", a, b);
    }
    if (json_is_object(v = json_object_get(s, "errors"))) {
        const char *code;
        const json_t *n;
        const char *sep = "";
        put(t, "errors       ");
        json_object_foreach((json_t *)v, code, n) {
            if (count_of(n) == 0)
                continue;
            putf(t, "%s%s %lld", sep, code, count_of(n));
            sep = ", ";
        }
        put(t, sep[0] == '\0' ? "none\n" : "\n");
    }
}

static int put_workers(text *t, const json_t *s)
{
    table tb = { 4, { "WORKER", "PID", "CONNECTIONS", "MESSAGES" }, NULL, 0, 0 };
    const json_t *list = json_object_get(s, "worker_list");
    size_t i;
    const json_t *w;

    if (json_array_size(list) == 0)
        return 0;
    json_array_foreach(list, i, w) {
        char (*row)[CELL] = add_row(&tb);
        if (row == NULL) {
            free(tb.rows);
            return -1;
        }
        count_text(row[0], CELL, json_object_get(w, "slot"));
        count_text(row[1], CELL, json_object_get(w, "pid"));
        count_text(row[2], CELL, json_object_get(w, "connections"));
        count_text(row[3], CELL, json_object_get(w, "messages"));
    }
    put_table(t, &tb, 1);
    free(tb.rows);
    return 0;
}

static int put_listeners(text *t, const json_t *s)
{
    table tb = { 3, { "LISTENER", "OPEN", "ACCEPTED" }, NULL, 0, 0 };
    const char *name;
    const json_t *l;

    if (json_object_size(json_object_get(s, "listeners")) == 0)
        return 0;
    json_object_foreach(json_object_get(s, "listeners"), name, l) {
        char (*row)[CELL] = add_row(&tb);
        if (row == NULL) {
            free(tb.rows);
            return -1;
        }
        snprintf(row[0], CELL, "%s", name);
        count_text(row[1], CELL, json_object_get(l, "open"));
        count_text(row[2], CELL, json_object_get(l, "accepted"));
    }
    put_table(t, &tb, 1);
    free(tb.rows);
    return 0;
}

static void quantile_text(char *cell, const json_t *histogram, double q)
{
    double v;
    if (pb_stats_quantile(histogram, q, &v) == 0)
        pb_stats_format_seconds(cell, CELL, v);
    else
        snprintf(cell, CELL, "-");
}

static int put_plugins(text *t, const json_t *s)
{
    table tb = { 3, { "PLUGIN", "MESSAGES", "ERRORS", "P50", "P99" }, NULL, 0, 0 };
    const json_t *plugins = json_object_get(s, "plugins");
    const char *name;
    const json_t *p;

    if (json_object_size(plugins) == 0)
        return 0;
    /* The latency columns only from a daemon that measures latency. */
    json_object_foreach((json_t *)plugins, name, p)
        if (json_object_get(p, "latency") != NULL)
            tb.columns = 5;
    json_object_foreach((json_t *)plugins, name, p) {
        char (*row)[CELL] = add_row(&tb);
        if (row == NULL) {
            free(tb.rows);
            return -1;
        }
        snprintf(row[0], CELL, "%s", name);
        count_text(row[1], CELL, json_object_get(p, "messages"));
        count_text(row[2], CELL, json_object_get(p, "errors"));
        quantile_text(row[3], json_object_get(p, "latency"), 0.5);
        quantile_text(row[4], json_object_get(p, "latency"), 0.99);
    }
    put_table(t, &tb, 1);
    free(tb.rows);
    return 0;
}

static int metric_row(table *tb, const char *plugin, const char *metric,
                      const char *label, const json_t *value)
{
    char (*row)[CELL] = add_row(tb);
    if (row == NULL)
        return -1;
    snprintf(row[0], CELL, "%s", plugin);
    if (label != NULL)
        snprintf(row[1], CELL, "%s{%s}", metric, label);
    else
        snprintf(row[1], CELL, "%s", metric);
    count_text(row[2], CELL, value);
    return 0;
}

/* One row per metric, or per label of a labelled one: `ready{jobs}`. */
static int put_metrics(text *t, const json_t *s)
{
    table tb = { 3, { "PLUGIN", "METRIC", "VALUE" }, NULL, 0, 0 };
    const char *plugin, *metric, *label;
    const json_t *p, *value, *v;
    int failed = 0;

    json_object_foreach(json_object_get(s, "plugins"), plugin, p) {
        json_object_foreach(json_object_get(p, "metrics"), metric, value) {
            if (!json_is_object(value)) {
                failed |= metric_row(&tb, plugin, metric, NULL, value);
                continue;
            }
            json_object_foreach((json_t *)value, label, v)
                failed |= metric_row(&tb, plugin, metric, label, v);
        }
    }
    if (!failed && tb.nrows > 0)
        put_table(t, &tb, 2);
    free(tb.rows);
    return failed ? -1 : 0;
}

static int put_routes(text *t, const json_t *s)
{
    table tb = { 3, { "ROUTE", "MESSAGES", "ERRORS" }, NULL, 0, 0 };
    const char *name;
    const json_t *r;

    if (json_object_size(json_object_get(s, "routes")) == 0)
        return 0;
    json_object_foreach(json_object_get(s, "routes"), name, r) {
        char (*row)[CELL] = add_row(&tb);
        if (row == NULL) {
            free(tb.rows);
            return -1;
        }
        snprintf(row[0], CELL, "%s", name);
        count_text(row[1], CELL, json_object_get(r, "messages"));
        count_text(row[2], CELL, json_object_get(r, "errors"));
    }
    put_table(t, &tb, 1);
    free(tb.rows);
    return 0;
}

int stats_table_write(pb_buf *out, const json_t *stats)
{
    text t = { out, 0 };

    put_summary(&t, stats);
    if (put_workers(&t, stats) != 0 || put_listeners(&t, stats) != 0
        || put_plugins(&t, stats) != 0 || put_metrics(&t, stats) != 0
        || put_routes(&t, stats) != 0 || t.failed)
        return -1;
    return 0;
}

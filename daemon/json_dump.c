/*
 * json_dump.c - JSON serialization byte-identical to Python's
 * json.dumps(obj, ensure_ascii=False), so replies match the guide's server.
 */
#include "json_dump.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deeper nesting than jansson's own parser accepts can only come from a
 * value built in memory, and a cycle would otherwise recurse forever. */
#define MAX_DEPTH 2048

/* Python's repr(float) switches to exponent notation outside this range of
 * the decimal point position (digits are 0.d1d2... x 10^decpt). */
#define REPR_MIN_DECPT (-4)
#define REPR_MAX_DECPT 16

static const char hexdigits[] = "0123456789abcdef";

/*
 * Length of the well-formed UTF-8 sequence at s, or 0 when it is not one;
 * then *bad is the length of its maximal subpart, which Python's "replace"
 * error handler turns into one U+FFFD.
 */
static size_t utf8_sequence(const unsigned char *s, size_t len, size_t *bad)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= len || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return need + 1;
}

static const char *named_escape(unsigned char c)
{
    switch (c) {
    case '"':  return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    case '\b': return "\\b";
    case '\f': return "\\f";
    }
    return NULL;
}

static int dump_string(pb_buf *out, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0;     /* start of the pending bytes that need no escaping */
    size_t i = 0;

    if (pb_buf_append_byte(out, '"') != 0)
        return -1;
    while (i < len) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t bad = 0;
            size_t n = utf8_sequence(p + i, len - i, &bad);
            if (n > 0) {
                i += n;
                continue;
            }
            if (pb_buf_append(out, p + run, i - run) != 0
                || pb_buf_append(out, "\xef\xbf\xbd", 3) != 0)
                return -1;
            i += bad;
            run = i;
            continue;
        }
        if (pb_buf_append(out, p + run, i - run) != 0)
            return -1;
        const char *esc = named_escape(c);
        if (esc != NULL) {
            if (pb_buf_append_str(out, esc) != 0)
                return -1;
        } else {
            char u[6] = { '\\', 'u', '0', '0', hexdigits[c >> 4], hexdigits[c & 0xf] };
            if (pb_buf_append(out, u, sizeof u) != 0)
                return -1;
        }
        i++;
        run = i;
    }
    if (pb_buf_append(out, p + run, i - run) != 0)
        return -1;
    return pb_buf_append_byte(out, '"');
}

/*
 * Splits "%.*e" output ("d.ddde+XX") into its digits and the position of
 * the decimal point relative to them (value = 0.digits x 10^decpt).
 */
static void split_exponential(const char *text, char *digits, int *decpt)
{
    size_t n = 0;
    const char *p = text;
    for (; *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[n++] = *p;
    digits[n] = '\0';
    *decpt = atoi(p + 1) + 1;
}

static int round_trips(const char *digits, int decpt, double x)
{
    char text[40];
    snprintf(text, sizeof text, "0.%se%d", digits, decpt);
    return strtod(text, NULL) == x;
}

/* Adds one unit in the last place to a digit string, carrying into a new
 * leading digit (and the decimal point position) when it overflows. */
static void increment_digits(char *digits, int *decpt)
{
    size_t n = strlen(digits);
    size_t i = n;
    while (i > 0) {
        i--;
        if (digits[i] != '9') {
            digits[i]++;
            return;
        }
        digits[i] = '0';
    }
    memmove(digits + 1, digits, n);
    digits[0] = '1';
    digits[n] = '\0';
    (*decpt)++;
}

/*
 * The shortest digit string that reads back as x (x > 0, finite), and
 * among those the closest to x: what David Gay's dtoa mode 0 gives Python.
 * The correctly rounded p-digit value is the closest p-digit candidate; the
 * only other one that can round-trip is its upper neighbour, when x sits
 * on a power of two and the gap above it is twice the gap below.
 */
static void shortest_digits(double x, char *digits, int *decpt)
{
    char text[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(text, sizeof text, "%.*e", p - 1, x);
        split_exponential(text, digits, decpt);
        if (round_trips(digits, *decpt, x))
            break;
        if (strtod(text, NULL) < x) {
            char up[24];
            int up_decpt = *decpt;
            memcpy(up, digits, strlen(digits) + 1);
            increment_digits(up, &up_decpt);
            if (round_trips(up, up_decpt, x)) {
                memcpy(digits, up, strlen(up) + 1);
                *decpt = up_decpt;
                break;
            }
        }
    }
    size_t n = strlen(digits);
    while (n > 1 && digits[n - 1] == '0')
        digits[--n] = '\0';
}

static int dump_real(pb_buf *out, double x)
{
    char digits[24];
    int decpt;
    char text[64];
    size_t n = 0;

    if (!isfinite(x))
        return -1;
    if (signbit(x)) {
        text[n++] = '-';
        x = -x;
    }
    if (x == 0.0) {
        memcpy(digits, "0", 2);
        decpt = 1;
    } else {
        shortest_digits(x, digits, &decpt);
    }
    int ndigits = (int)strlen(digits);

    if (decpt <= REPR_MIN_DECPT || decpt > REPR_MAX_DECPT) {
        text[n++] = digits[0];
        if (ndigits > 1) {
            text[n++] = '.';
            memcpy(text + n, digits + 1, (size_t)ndigits - 1);
            n += (size_t)ndigits - 1;
        }
        int exp = decpt - 1;
        n += (size_t)snprintf(text + n, sizeof text - n, "e%c%02d",
                              exp < 0 ? '-' : '+', abs(exp));
    } else if (decpt <= 0) {
        text[n++] = '0';
        text[n++] = '.';
        for (int i = decpt; i < 0; i++)
            text[n++] = '0';
        memcpy(text + n, digits, (size_t)ndigits);
        n += (size_t)ndigits;
    } else if (decpt >= ndigits) {
        memcpy(text + n, digits, (size_t)ndigits);
        n += (size_t)ndigits;
        for (int i = ndigits; i < decpt; i++)
            text[n++] = '0';
        text[n++] = '.';
        text[n++] = '0';
    } else {
        memcpy(text + n, digits, (size_t)decpt);
        n += (size_t)decpt;
        text[n++] = '.';
        memcpy(text + n, digits + decpt, (size_t)(ndigits - decpt));
        n += (size_t)(ndigits - decpt);
    }
    return pb_buf_append(out, text, n);
}

static int dump_value(pb_buf *out, const json_t *value, int depth);

static int dump_object(pb_buf *out, const json_t *object, int depth)
{
    /* jansson's iterator API takes a non-const object but does not
     * modify it. */
    void *iter = json_object_iter((json_t *)object);
    int first = 1;

    if (pb_buf_append_byte(out, '{') != 0)
        return -1;
    for (; iter != NULL; iter = json_object_iter_next((json_t *)object, iter)) {
        if (!first && pb_buf_append(out, ", ", 2) != 0)
            return -1;
        first = 0;
        if (dump_string(out, json_object_iter_key(iter),
                        json_object_iter_key_len(iter)) != 0
            || pb_buf_append(out, ": ", 2) != 0
            || dump_value(out, json_object_iter_value(iter), depth + 1) != 0)
            return -1;
    }
    return pb_buf_append_byte(out, '}');
}

static int dump_array(pb_buf *out, const json_t *array, int depth)
{
    size_t size = json_array_size(array);

    if (pb_buf_append_byte(out, '[') != 0)
        return -1;
    for (size_t i = 0; i < size; i++) {
        if (i > 0 && pb_buf_append(out, ", ", 2) != 0)
            return -1;
        if (dump_value(out, json_array_get(array, i), depth + 1) != 0)
            return -1;
    }
    return pb_buf_append_byte(out, ']');
}

static int dump_value(pb_buf *out, const json_t *value, int depth)
{
    char text[32];

    if (value == NULL || depth > MAX_DEPTH)
        return -1;
    switch (json_typeof(value)) {
    case JSON_OBJECT:
        return dump_object(out, value, depth);
    case JSON_ARRAY:
        return dump_array(out, value, depth);
    case JSON_STRING:
        return dump_string(out, json_string_value(value),
                                   json_string_length(value));
    case JSON_INTEGER:
        snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(value));
        return pb_buf_append_str(out, text);
    case JSON_REAL:
        return dump_real(out, json_real_value(value));
    case JSON_TRUE:
        return pb_buf_append(out, "true", 4);
    case JSON_FALSE:
        return pb_buf_append(out, "false", 5);
    case JSON_NULL:
        return pb_buf_append(out, "null", 4);
    }
    return -1;
}

int pb_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t bad;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence(p + i, len - i, &bad);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

int pb_json_dump_string(pb_buf *out, const char *s, size_t len)
{
    size_t keep = out->len - out->start;

    if (dump_string(out, s, len) == 0)
        return 0;
    pb_buf_truncate(out, out->start + keep);
    return -1;
}

int pb_json_dump(pb_buf *out, const json_t *value)
{
    size_t keep = out->len - out->start;

    if (dump_value(out, value, 0) == 0)
        return 0;
    pb_buf_truncate(out, out->start + keep);
    return -1;
}

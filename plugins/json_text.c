/*
 * json_text.c - a validating scanner for JSON text (RFC 8259): no values
 * are built, so checking costs one pass and no memory.
 */
#include "json_text.h"

typedef struct scanner {
    const unsigned char *p, *end;
    int depth;
} scanner;

static int value(scanner *s);

static void skip_space(scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n'
                             || *s->p == '\r'))
        s->p++;
}

static int literal(scanner *s, const char *word)
{
    for (; *word != '\0'; word++, s->p++)
        if (s->p >= s->end || *s->p != (unsigned char)*word)
            return 0;
    return 1;
}

static int digits(scanner *s)
{
    const unsigned char *start = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > start;
}

static int number(scanner *s)
{
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p < s->end && *s->p == '0')
        s->p++;
    else if (!digits(s))
        return 0;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!digits(s))
            return 0;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!digits(s))
            return 0;
    }
    return 1;
}

static int hex4(scanner *s)
{
    for (int i = 0; i < 4; i++, s->p++) {
        if (s->p >= s->end)
            return 0;
        unsigned char c = *s->p;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
              || (c >= 'A' && c <= 'F')))
            return 0;
    }
    return 1;
}

/* One UTF-8 sequence of two to four bytes starting at s->p: shortest form,
 * no surrogates, at most U+10FFFF. */
static int utf8_sequence(scanner *s)
{
    unsigned char c = *s->p;
    int more;
    unsigned long code, least;
    if (c >= 0xC2 && c <= 0xDF) {
        more = 1, code = c & 0x1F, least = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        more = 2, code = c & 0x0F, least = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        more = 3, code = c & 0x07, least = 0x10000;
    } else {
        return 0;
    }
    s->p++;
    for (int i = 0; i < more; i++, s->p++) {
        if (s->p >= s->end || (*s->p & 0xC0) != 0x80)
            return 0;
        code = code << 6 | (*s->p & 0x3F);
    }
    return code >= least && code <= 0x10FFFF && !(code >= 0xD800 && code <= 0xDFFF);
}

static int string(scanner *s)
{
    s->p++;     /* the opening quote */
    while (s->p < s->end) {
        unsigned char c = *s->p;
        if (c == '"') {
            s->p++;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            s->p++;
            if (s->p >= s->end)
                return 0;
            c = *s->p;
            if (c == 'u') {
                s->p++;
                if (!hex4(s))
                    return 0;
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f'
                       || c == 'n' || c == 'r' || c == 't') {
                s->p++;
            } else {
                return 0;
            }
        } else if (c < 0x80) {
            s->p++;
        } else if (!utf8_sequence(s)) {
            return 0;
        }
    }
    return 0;
}

/* An array or object: `close` ends it, members are values (array) or
 * "key": value pairs (object). */
static int container(scanner *s, unsigned char close)
{
    if (++s->depth > JSON_TEXT_MAX_DEPTH)
        return 0;
    s->p++;
    skip_space(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return 1;
    }
    for (;;) {
        if (close == '}') {
            skip_space(s);
            if (s->p >= s->end || *s->p != '"' || !string(s))
                return 0;
            skip_space(s);
            if (s->p >= s->end || *s->p != ':')
                return 0;
            s->p++;
        }
        if (!value(s))
            return 0;
        if (s->p >= s->end)
            return 0;
        if (*s->p == close) {
            s->p++;
            s->depth--;
            return 1;
        }
        if (*s->p != ',')
            return 0;
        s->p++;
    }
}

/* A value with the whitespace around it. */
static int value(scanner *s)
{
    skip_space(s);
    if (s->p >= s->end)
        return 0;
    int ok;
    switch (*s->p) {
    case '{': ok = container(s, '}'); break;
    case '[': ok = container(s, ']'); break;
    case '"': ok = string(s); break;
    case 't': ok = literal(s, "true"); break;
    case 'f': ok = literal(s, "false"); break;
    case 'n': ok = literal(s, "null"); break;
    default:  ok = number(s); break;
    }
    skip_space(s);
    return ok;
}

int json_text_valid(const char *text, size_t length)
{
    scanner s = { (const unsigned char *)text, (const unsigned char *)text + length, 0 };
    return value(&s) && s.p == s.end;
}

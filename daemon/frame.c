/*
 * frame.c - the `frame` wire codec: decodes length-prefixed JSON-headed
 * frames from bytes and encodes replies and error frames, without I/O.
 * Headers in the guide's canonical form take the strict path of
 * frame_fast.c; all others are parsed by jansson.
 */
#include "frame.h"

#include <string.h>

#include "json_dump.h"

#define LENGTH_PREFIX 2

void pb_frame_decoder_init(pb_frame_decoder *d, size_t max_message_bytes)
{
    d->max_message_bytes = max_message_bytes;
    d->header = NULL;
    d->header_length = 0;
    d->content_length = 0;
    memset(&d->fast, 0, sizeof d->fast);
}

void pb_frame_decoder_reset(pb_frame_decoder *d)
{
    json_decref(d->header);
    pb_frame_fast_cache_clear(&d->fast);
    pb_frame_decoder_init(d, d->max_message_bytes);
}

static int too_large(pb_error *err, unsigned long long size, size_t limit)
{
    return pb_error_set(err, PB_ERR_TOO_LARGE,
                        "message of %llu bytes exceeds the limit of %zu bytes",
                        size, limit);
}

/* A content-length beyond PB_JSON_INT_MAX is over any limit the
 * configuration allows, and no frame that long can be held. */
static int too_large_overflow(pb_error *err, size_t limit)
{
    return pb_error_set(err, PB_ERR_TOO_LARGE,
                        "message of more than %lld bytes exceeds the limit of %zu bytes",
                        (long long)PB_JSON_INT_MAX, limit);
}

/* A required string member; NUL bytes are refused because every consumer
 * (routes, plugins) reads these as C strings. */
static int required_string(const json_t *header, const char *key,
                           const char **value, pb_error *err)
{
    const json_t *member = json_object_get(header, key);

    if (member == NULL)
        return pb_error_set(err, PB_ERR_BAD_FRAME, "header lacks \"%s\"", key);
    if (!json_is_string(member))
        return pb_error_set(err, PB_ERR_BAD_FRAME,
                            "\"%s\" must be a string", key);
    *value = json_string_value(member);
    if (strlen(*value) != json_string_length(member))
        return pb_error_set(err, PB_ERR_BAD_FRAME,
                            "\"%s\" contains a NUL character", key);
    return 0;
}

/* Checks the parsed header and reads its content-length. */
static int check_header(const json_t *header, json_int_t *content_length,
                        pb_error *err)
{
    const char *text;

    if (!json_is_object(header))
        return pb_error_set(err, PB_ERR_BAD_FRAME,
                            "header is not a JSON object");
    if (required_string(header, "byteorder", &text, err) != 0)
        return -1;
    if (strcmp(text, "little") != 0 && strcmp(text, "big") != 0)
        return pb_error_set(err, PB_ERR_BAD_FRAME,
                            "\"byteorder\" must be \"little\" or \"big\"");
    if (required_string(header, "content-type", &text, err) != 0
        || required_string(header, "content-encoding", &text, err) != 0)
        return -1;

    const json_t *length = json_object_get(header, "content-length");
    if (length == NULL)
        return pb_error_set(err, PB_ERR_BAD_FRAME,
                            "header lacks \"content-length\"");
    if (!json_is_integer(length) || json_integer_value(length) < 0)
        return pb_error_set(err, PB_ERR_BAD_FRAME,
                            "\"content-length\" must be a non-negative integer");
    *content_length = json_integer_value(length);
    return 0;
}

/* --- Integers jansson cannot hold ------------------------------------------
 *
 * jansson refuses a whole text when one integer does not fit json_int_t.
 * When that integer is the top-level content-length, the frame is too large
 * rather than malformed, so it is found in the text and replaced, and the
 * rest of the header is judged as usual.
 */

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Past a string literal starting at p ('"'), or NULL. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '"')
            return p + 1;
        if (*p == '\\' && ++p == end)
            break;
    }
    return NULL;
}

/* Past a value starting at p: at the ',', '}' or ']' that ends it, or
 * at end. Only the extent of the value is found; jansson, which parses
 * the text again, judges its validity. */
static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;
    while (p < end) {
        char c = *p;
        if (depth == 0 && (c == ',' || c == '}' || c == ']'))
            return p;
        if (c == '"') {
            p = skip_string(p, end);
            if (p == NULL)
                return NULL;
            continue;
        }
        if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']')
            depth--;
        p++;
    }
    return p;
}

/* Whether the key literal [p, q) means "content-length", escapes and all. */
static int is_length_key(const char *p, const char *q)
{
    json_t *key = json_loadb(p, (size_t)(q - p), JSON_DECODE_ANY, NULL);
    int is = json_is_string(key) && json_string_length(key) == 14
             && memcmp(json_string_value(key), "content-length", 14) == 0;
    json_decref(key);
    return is;
}

/* The value text of the last top-level "content-length" member (the one
 * jansson keeps), trimmed; 0 when there is none or the text is not an
 * object. */
static int find_length_value(const char *text, size_t length,
                             const char **value, size_t *value_length)
{
    const char *end = text + length;
    const char *p = skip_space(text, end);
    int found = 0;
    if (p == end || *p != '{')
        return 0;
    p = skip_space(p + 1, end);
    while (p < end && *p == '"') {
        const char *key = p;
        p = skip_string(p, end);
        if (p == NULL)
            return 0;
        const char *key_end = p;
        p = skip_space(p, end);
        if (p == end || *p != ':')
            return 0;
        const char *start = skip_space(p + 1, end);
        p = skip_value(start, end);
        if (p == NULL)
            return 0;
        const char *stop = p;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'
                                || stop[-1] == '\n' || stop[-1] == '\r'))
            stop--;
        if (is_length_key(key, key_end)) {
            *value = start;
            *value_length = (size_t)(stop - start);
            found = 1;
        }
        p = skip_space(p, end);
        if (p == end || *p != ',')
            break;
        p = skip_space(p + 1, end);
    }
    return found;
}

/* Whether s[0..n) is a non-negative JSON integer too big for json_int_t
 * (a negative content-length is malformed, whatever its size). */
static int is_overflowing_natural(const char *s, size_t n)
{
    if (n == 0 || (s[0] == '0' && n > 1))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    char max[24];
    size_t max_digits = (size_t)snprintf(max, sizeof max, "%lld",
                                         (long long)PB_JSON_INT_MAX);
    return n > max_digits || (n == max_digits && memcmp(s, max, n) > 0);
}

/*
 * Judges a header jansson refused for a number it cannot hold. If the
 * content-length is such a number, it is replaced by 0 and the text parsed
 * again: a header then valid is too large; one refused again is malformed,
 * with that second error. 1 when decided (*err set), 0 when the
 * content-length is not one.
 */
static int overflowing_length(const unsigned char *text, size_t length,
                              size_t limit, pb_error *err)
{
    const char *value = NULL;
    size_t value_length = 0;
    if (!find_length_value((const char *)text, length, &value, &value_length)
        || !is_overflowing_natural(value, value_length))
        return 0;

    size_t before = (size_t)(value - (const char *)text);
    size_t after = length - before - value_length;
    pb_buf copy = PB_BUF_INIT;
    if (pb_buf_append(&copy, text, before) != 0
        || pb_buf_append_byte(&copy, '0') != 0
        || pb_buf_append(&copy, value + value_length, after) != 0) {
        pb_buf_free(&copy);
        pb_error_set(err, PB_ERR_BAD_FRAME, "out of memory while reading the header");
        return 1;
    }
    json_error_t jerr;
    json_t *header = json_loadb((const char *)pb_buf_head(&copy), pb_buf_used(&copy),
                                JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    pb_buf_free(&copy);
    if (header == NULL) {
        /* Positions after the stand-in are shifted back to the original. */
        int position = jerr.position;
        if ((size_t)position > before)
            position += (int)(value_length - 1);
        pb_error_set(err, PB_ERR_BAD_FRAME,
                     "header is not valid JSON: %s at position %d",
                     jerr.text, position);
        return 1;
    }
    json_int_t ignored;
    if (check_header(header, &ignored, err) == 0)
        too_large_overflow(err, limit);
    json_decref(header);
    return 1;
}

/* --- Decoding ---------------------------------------------------------- */

static int fits(const pb_frame_decoder *d, size_t header_length,
                json_int_t content_length, pb_error *err)
{
    if ((unsigned long long)content_length > d->max_message_bytes - header_length)
        return too_large(err, header_length + (unsigned long long)content_length,
                         d->max_message_bytes);
    return 0;
}

static json_t *parse_fast(pb_frame_decoder *d, const pb_fast_header *h,
                          size_t length, pb_error *err)
{
    if (h->content_length_overflows) {
        too_large_overflow(err, d->max_message_bytes);
        return NULL;
    }
    if (fits(d, length, h->content_length, err) != 0)
        return NULL;
    json_t *header = pb_frame_fast_header(h, &d->fast);
    if (header == NULL)
        pb_error_set(err, PB_ERR_BAD_FRAME, "out of memory while reading the header");
    return header;
}

static json_t *parse_general(pb_frame_decoder *d, const unsigned char *text,
                             size_t length, json_int_t *content_length,
                             pb_error *err)
{
    json_error_t jerr;
    /* NUL is allowed in the JSON text so that optional members may carry
     * it, as Python's json would; required strings are checked. */
    json_t *header = json_loadb((const char *)text, length,
                                JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (header == NULL) {
        if (json_error_code(&jerr) != json_error_numeric_overflow
            || !overflowing_length(text, length, d->max_message_bytes, err))
            pb_error_set(err, PB_ERR_BAD_FRAME,
                         "header is not valid JSON: %s at position %d",
                         jerr.text, jerr.position);
        return NULL;
    }
    if (check_header(header, content_length, err) != 0
        || fits(d, length, *content_length, err) != 0) {
        json_decref(header);
        return NULL;
    }
    return header;
}

int pb_frame_decode_header(pb_frame_decoder *d, const unsigned char *text,
                           size_t length, int fast, pb_error *err)
{
    pb_fast_header h;
    json_int_t content_length = 0;
    json_t *header;
    if (fast && (pb_frame_fast_repeat(&d->fast, text, length, &h)
                 || pb_frame_fast_parse(text, length, &h))) {
        header = parse_fast(d, &h, length, err);
        content_length = h.content_length;
    } else {
        header = parse_general(d, text, length, &content_length, err);
    }
    if (header == NULL)
        return -1;
    d->header = header;
    d->header_length = length;
    d->content_length = (size_t)content_length;
    return 0;
}

pb_decode_status pb_frame_decode(pb_frame_decoder *d,
                                 const unsigned char *data, size_t len,
                                 pb_message *msg, size_t *consumed,
                                 size_t *wanted, pb_error *err)
{
    *consumed = 0;
    if (wanted != NULL)
        *wanted = 0;

    if (d->header == NULL) {
        if (len < LENGTH_PREFIX)
            return PB_DECODE_NEED_MORE;
        size_t header_length = (size_t)data[0] << 8 | data[1];
        if (header_length == 0) {
            pb_error_set(err, PB_ERR_BAD_FRAME, "header length is 0");
            return PB_DECODE_ERROR;
        }
        if (header_length > d->max_message_bytes) {
            too_large(err, header_length, d->max_message_bytes);
            return PB_DECODE_ERROR;
        }
        if (len - LENGTH_PREFIX < header_length)
            return PB_DECODE_NEED_MORE;
        if (pb_frame_decode_header(d, data + LENGTH_PREFIX, header_length, 1,
                                   err) != 0)
            return PB_DECODE_ERROR;
    }

    size_t total = LENGTH_PREFIX + d->header_length + d->content_length;
    if (len < total) {
        if (wanted != NULL)
            *wanted = total;
        return PB_DECODE_NEED_MORE;
    }

    msg->header = d->header;
    msg->owns_header = 1;
    if (d->header == d->fast.object) {
        /* The strict path's object: its members are at hand. */
        msg->content_type = json_string_value(d->fast.content_type);
        msg->content_encoding = json_string_value(d->fast.content_encoding);
    } else {
        msg->content_type = json_string_value(json_object_get(d->header, "content-type"));
        msg->content_encoding = json_string_value(json_object_get(d->header, "content-encoding"));
    }
    msg->content = data + LENGTH_PREFIX + d->header_length;
    msg->content_length = d->content_length;
    *consumed = total;
    d->header = NULL;
    d->header_length = 0;
    d->content_length = 0;
    return PB_DECODE_MESSAGE;
}

const char *pb_host_byteorder(void)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return "big";
#else
    return "little";
#endif
}

/* Appends a JSON string literal; strings that need no escaping, such as
 * every usual content-type, are copied without the general escaper. */
static int put_string(pb_buf *out, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            return pb_json_dump_string(out, s, n);
    }
    unsigned char *p = pb_buf_extend(out, n + 2);
    if (p == NULL)
        return -1;
    p[0] = '"';
    memcpy(p + 1, s, n);
    p[n + 1] = '"';
    return 0;
}

#define PUT(out, lit) pb_buf_append((out), (lit), sizeof(lit) - 1)

/* Appends the length prefix, still zero, and the header up to the value of
 * its content-length. */
static int put_prefix(pb_buf *out, const char *content_type,
                      const char *content_encoding)
{
    if (PUT(out, "\0\0") != 0
        || PUT(out, "{\"byteorder\": ") != 0
        || put_string(out, pb_host_byteorder()) != 0
        || PUT(out, ", \"content-type\": ") != 0
        || put_string(out, content_type) != 0
        || PUT(out, ", \"content-encoding\": ") != 0
        || put_string(out, content_encoding) != 0
        || PUT(out, ", \"content-length\": ") != 0)
        return -1;
    return 0;
}

/*
 * The prefixes of the last few content types and encodings a thread wrote
 * (replies repeat a handful): a reply header is then one copy and its
 * length's digits. Per thread, as pool threads write replies too.
 */
#define PREFIXES 4
typedef struct header_prefix {
    char key[96];               /* content_type NUL content_encoding NUL */
    size_t key_length;          /* 0: unused */
    unsigned char text[224];
    size_t length;
} header_prefix;

static _Thread_local header_prefix prefixes[PREFIXES];
static _Thread_local unsigned next_prefix;

static const header_prefix *cached_prefix(const char *content_type,
                                          const char *content_encoding)
{
    size_t type_length = strlen(content_type) + 1;
    size_t encoding_length = strlen(content_encoding) + 1;
    size_t key_length = type_length + encoding_length;
    if (key_length > sizeof prefixes[0].key)
        return NULL;
    for (size_t i = 0; i < PREFIXES; i++) {
        const header_prefix *p = &prefixes[i];
        if (p->key_length == key_length
            && memcmp(p->key, content_type, type_length) == 0
            && memcmp(p->key + type_length, content_encoding, encoding_length) == 0)
            return p;
    }
    pb_buf scratch = PB_BUF_INIT;
    header_prefix *p = NULL;
    if (put_prefix(&scratch, content_type, content_encoding) == 0
        && pb_buf_used(&scratch) <= sizeof p->text) {
        p = &prefixes[next_prefix++ % PREFIXES];
        memcpy(p->key, content_type, type_length);
        memcpy(p->key + type_length, content_encoding, encoding_length);
        p->key_length = key_length;
        memcpy(p->text, pb_buf_head(&scratch), pb_buf_used(&scratch));
        p->length = pb_buf_used(&scratch);
    }
    pb_buf_free(&scratch);
    return p;
}

/* Appends the length prefix, still zero, and the header; *header_length
 * gets its length. 0, or PB_FRAME_NO_MEMORY with part of it appended. */
static int encode_header(pb_buf *out, const char *content_type,
                         const char *content_encoding, size_t content_length,
                         int push, size_t *header_length)
{
    static const char push_end[] = ", \"push\": true}";
    size_t prefix_at = pb_buf_used(out);
    const header_prefix *cached = cached_prefix(content_type, content_encoding);
    if (cached != NULL) {
        if (pb_buf_append(out, cached->text, cached->length) != 0)
            return PB_FRAME_NO_MEMORY;
    } else if (put_prefix(out, content_type, content_encoding) != 0) {
        return PB_FRAME_NO_MEMORY;
    }
    char digits[24 + sizeof push_end];
    size_t at = 24, end = 24;
    if (push) {
        memcpy(digits + end, push_end, sizeof push_end - 1);
        end += sizeof push_end - 1;
    } else {
        digits[end++] = '}';
    }
    do {
        digits[--at] = (char)('0' + content_length % 10);
        content_length /= 10;
    } while (content_length > 0);
    if (pb_buf_append(out, digits + at, end - at) != 0)
        return PB_FRAME_NO_MEMORY;
    *header_length = pb_buf_used(out) - prefix_at - LENGTH_PREFIX;
    return 0;
}

int pb_frame_encode_header(pb_buf *out, const char *content_type,
                           const char *content_encoding,
                           size_t content_length)
{
    return pb_frame_encode_header_as(out, content_type, content_encoding,
                                     content_length, 0);
}

int pb_frame_encode_header_as(pb_buf *out, const char *content_type,
                              const char *content_encoding,
                              size_t content_length, int push)
{
    size_t keep = pb_buf_used(out);
    size_t header_length = 0;

    int rc = encode_header(out, content_type, content_encoding, content_length,
                           push, &header_length);
    if (rc == 0 && header_length > PB_FRAME_MAX_HEADER)
        rc = PB_FRAME_HEADER_TOO_LONG;
    if (rc != 0) {
        pb_buf_truncate(out, out->start + keep);
        return rc;
    }
    /* The buffer may have moved its live bytes while growing, so the
     * prefix is found again from the start. */
    unsigned char *prefix = pb_buf_head(out) + keep;
    prefix[0] = (unsigned char)(header_length >> 8);
    prefix[1] = (unsigned char)(header_length & 0xff);
    return 0;
}

size_t pb_frame_header_length(const char *content_type,
                              const char *content_encoding,
                              size_t content_length)
{
    pb_buf scratch = PB_BUF_INIT;
    size_t header_length = 0;

    if (encode_header(&scratch, content_type, content_encoding, content_length,
                      0, &header_length) != 0)
        header_length = 0;
    pb_buf_free(&scratch);
    return header_length;
}

int pb_frame_encode(pb_buf *out, const char *content_type,
                    const char *content_encoding,
                    const void *content, size_t content_length)
{
    size_t keep = pb_buf_used(out);

    int rc = pb_frame_encode_header(out, content_type, content_encoding,
                                    content_length);
    if (rc != 0)
        return rc;
    if (pb_buf_append(out, content, content_length) != 0) {
        pb_buf_truncate(out, out->start + keep);
        return PB_FRAME_NO_MEMORY;
    }
    return 0;
}

int pb_frame_encode_error(pb_buf *out, pb_error_code code, const char *text)
{
    pb_buf content = PB_BUF_INIT;
    int rc = -1;

    if (pb_error_encode_json(&content, pb_error_token(code), text) == 0)
        rc = pb_frame_encode(out, "text/json", "utf-8",
                             pb_buf_head(&content), pb_buf_used(&content));
    pb_buf_free(&content);
    return rc;
}

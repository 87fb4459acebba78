/*
 * frame.c - the `frame` wire codec: decodes length-prefixed JSON-headed
 * frames from bytes and encodes replies and error frames, without I/O.
 * Headers in the guide's canonical form take the strict path of
 * frame_fast.c; all others are parsed by jansson.
 */
#include "frame.h"

#include <string.h>

#include "frame_fast.h"
#include "json_dump.h"

#define LENGTH_PREFIX 2
#define MAX_HEADER_BYTES 65535

void pb_message_clear(pb_message *msg)
{
    if (msg->owns_header)
        json_decref(msg->header);
    memset(msg, 0, sizeof *msg);
}

void pb_frame_decoder_init(pb_frame_decoder *d, size_t max_message_bytes)
{
    d->max_message_bytes = max_message_bytes;
    d->header = NULL;
    d->header_length = 0;
    d->content_length = 0;
}

void pb_frame_decoder_reset(pb_frame_decoder *d)
{
    json_decref(d->header);
    d->header = NULL;
    d->header_length = 0;
    d->content_length = 0;
}

static int too_large(pb_error *err, unsigned long long size, size_t limit)
{
    return pb_error_set(err, PB_ERR_TOO_LARGE,
                        "message of %llu bytes exceeds the limit of %zu bytes",
                        size, limit);
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

json_t *pb_frame_parse_header(const unsigned char *text, size_t length,
                              int fast, json_int_t *content_length,
                              pb_error *err)
{
    pb_fast_header fast_header;
    if (fast && pb_frame_fast_parse(text, length, &fast_header)) {
        json_t *header = pb_frame_fast_header(&fast_header);
        if (header != NULL) {
            *content_length = fast_header.content_length;
            return header;
        }
    }

    json_error_t jerr;
    /* NUL is allowed in the JSON text so that optional members may carry
     * it, as Python's json would; required strings are checked. */
    json_t *header = json_loadb((const char *)text, length,
                                JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (header == NULL) {
        pb_error_set(err, PB_ERR_BAD_FRAME,
                     "header is not valid JSON: %s at position %d",
                     jerr.text, jerr.position);
        return NULL;
    }
    if (check_header(header, content_length, err) != 0) {
        json_decref(header);
        return NULL;
    }
    return header;
}

/*
 * Parses and checks the header at data[2..2+H) and caches it in the
 * decoder; refuses a frame whose content would not fit before any of the
 * content is read.
 */
static int read_header(pb_frame_decoder *d, const unsigned char *data,
                       size_t header_length, pb_error *err)
{
    json_int_t content_length = 0;
    json_t *header = pb_frame_parse_header(data + LENGTH_PREFIX, header_length,
                                           1, &content_length, err);

    if (header == NULL)
        return -1;
    if ((unsigned long long)content_length > d->max_message_bytes - header_length) {
        json_decref(header);
        return too_large(err, header_length + (unsigned long long)content_length,
                         d->max_message_bytes);
    }
    d->header = header;
    d->header_length = header_length;
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
        if (read_header(d, data, header_length, err) != 0)
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
    msg->content_type = json_string_value(json_object_get(d->header, "content-type"));
    msg->content_encoding = json_string_value(json_object_get(d->header, "content-encoding"));
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

/* Appends n in decimal and the closing brace. */
static int put_length(pb_buf *out, size_t n)
{
    char digits[24];
    size_t at = sizeof digits;
    digits[--at] = '}';
    do {
        digits[--at] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    return pb_buf_append(out, digits + at, sizeof digits - at);
}

#define PUT(out, lit) pb_buf_append((out), (lit), sizeof(lit) - 1)

static int encode_header(pb_buf *out, const char *content_type,
                         const char *content_encoding, size_t content_length)
{
    size_t prefix_at = out->len - out->start;

    if (PUT(out, "\0\0") != 0
        || PUT(out, "{\"byteorder\": ") != 0
        || put_string(out, pb_host_byteorder()) != 0
        || PUT(out, ", \"content-type\": ") != 0
        || put_string(out, content_type) != 0
        || PUT(out, ", \"content-encoding\": ") != 0
        || put_string(out, content_encoding) != 0
        || PUT(out, ", \"content-length\": ") != 0
        || put_length(out, content_length) != 0)
        return -1;

    /* The buffer may have moved its live bytes while growing, so the
     * prefix is found again from the start offset. */
    unsigned char *prefix = pb_buf_head(out) + prefix_at;
    size_t header_length = pb_buf_used(out) - prefix_at - LENGTH_PREFIX;
    if (header_length > MAX_HEADER_BYTES)
        return -1;
    prefix[0] = (unsigned char)(header_length >> 8);
    prefix[1] = (unsigned char)(header_length & 0xff);
    return 0;
}

int pb_frame_encode_header(pb_buf *out, const char *content_type,
                           const char *content_encoding,
                           size_t content_length)
{
    size_t keep = pb_buf_used(out);

    if (encode_header(out, content_type, content_encoding, content_length) == 0)
        return 0;
    pb_buf_truncate(out, out->start + keep);
    return -1;
}

int pb_frame_encode(pb_buf *out, const char *content_type,
                    const char *content_encoding,
                    const void *content, size_t content_length)
{
    size_t keep = pb_buf_used(out);

    if (pb_frame_encode_header(out, content_type, content_encoding,
                               content_length) != 0)
        return -1;
    if (pb_buf_append(out, content, content_length) != 0) {
        pb_buf_truncate(out, out->start + keep);
        return -1;
    }
    return 0;
}

int pb_frame_encode_error(pb_buf *out, pb_error_code code, const char *text)
{
    pb_buf content = PB_BUF_INIT;
    int rc = -1;

    if (pb_buf_append_str(&content, "{\"error\": ") == 0
        && pb_json_dump_string(&content, text, strlen(text)) == 0
        && pb_buf_append_str(&content, ", \"code\": ") == 0
        && pb_json_dump_string(&content, pb_error_token(code),
                               strlen(pb_error_token(code))) == 0
        && pb_buf_append_byte(&content, '}') == 0)
        rc = pb_frame_encode(out, "text/json", "utf-8",
                             pb_buf_head(&content), pb_buf_used(&content));
    pb_buf_free(&content);
    return rc;
}

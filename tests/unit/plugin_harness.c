/*
 * plugin_harness.c - an in-process host for plugin unit tests: the daemon's
 * codecs, host services and pb_instance_handle() around one plugin, with
 * no sockets, no config file and no dlopen().
 */
#include "plugin_harness.h"

#include "json_fast.h"
#include "plugin_loader.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "line.h"

/* --- Instances ---------------------------------------------------------- */

/* The line of each value's first character in a JSON text, in document
 * order: the order of a pre-order walk of the parsed value. */
static size_t value_lines(const char *text, int *lines, size_t max)
{
    char stack[64];
    size_t depth = 0, n = 0;
    int key_next = 0, line = 1;
    for (const char *p = text; *p != '\0'; p++) {
        switch (*p) {
        case '\n':
            line++;
            break;
        case ' ': case '\t': case '\r':
            break;
        case '{': case '[':
            cr_assert(n < max && depth < sizeof stack, "harness: settings too deep");
            lines[n++] = line;
            stack[depth++] = *p;
            key_next = *p == '{';
            break;
        case '}': case ']':
            depth--;
            key_next = 0;
            break;
        case ',':
            key_next = depth > 0 && stack[depth - 1] == '{';
            break;
        case ':':
            key_next = 0;
            break;
        case '"':
            if (!key_next) {
                cr_assert(n < max);
                lines[n++] = line;
            }
            for (p++; *p != '"'; p++)
                if (*p == '\\')
                    p++;
            break;
        default:    /* a number, true, false or null */
            cr_assert(n < max);
            lines[n++] = line;
            while (p[1] != '\0' && strchr("0123456789+-.eEtruefalsn", p[1]) != NULL)
                p++;
        }
    }
    return n;
}

static void preorder(json_t *value, json_t **values, size_t *n, size_t max)
{
    cr_assert(*n < max);
    values[(*n)++] = value;
    const char *key;
    size_t index;
    json_t *child;
    if (json_is_object(value))
        json_object_foreach(value, key, child)
            preorder(child, values, n, max);
    else if (json_is_array(value))
        json_array_foreach(value, index, child)
            preorder(child, values, n, max);
}

/* Gives every settings value the position the config loader would: here,
 * the line of settings_json where it starts. */
static void place_settings(pb_plugin_conf *conf, const char *text)
{
    size_t max = strlen(text) + 1;
    int *lines = calloc(max, sizeof *lines);
    json_t **values = calloc(max, sizeof *values);
    cr_assert(lines != NULL && values != NULL);
    size_t n_lines = value_lines(text, lines, max);
    size_t n_values = 0;
    preorder(conf->settings, values, &n_values, max);
    cr_assert_eq(n_lines, n_values,
                 "harness: settings with duplicate keys cannot be placed");
    conf->positions = calloc(n_values, sizeof *conf->positions);
    cr_assert_not_null(conf->positions);
    for (size_t i = 0; i < n_values; i++) {
        conf->positions[i].value = values[i];
        conf->positions[i].pos.file = PB_TEST_CONF_FILE;
        conf->positions[i].pos.line = lines[i];
    }
    conf->n_positions = n_values;
    free(lines);
    free(values);
}

pb_test_plugin *pb_test_plugin_new(const pb_plugin *plugin,
                                   const char *settings_json,
                                   const char *config_dir)
{
    pb_test_plugin *t = calloc(1, sizeof *t);
    cr_assert_not_null(t);
    json_error_t err;
    if (settings_json == NULL)
        settings_json = "{}";
    t->conf.settings = json_loads(settings_json, JSON_ALLOW_NUL, &err);
    cr_assert(json_is_object(t->conf.settings),
              "harness: settings are not a JSON object: %s", err.text);
    t->conf.name = strdup(plugin->name);
    t->conf.module = strdup(plugin->name);
    t->conf.pos.file = PB_TEST_CONF_FILE;
    t->conf.pos.line = 1;
    place_settings(&t->conf, settings_json);

    t->instance.name = strdup(plugin->name);
    cr_assert(t->conf.name != NULL && t->conf.module != NULL && t->instance.name != NULL);
    char why[160];
    cr_assert_eq(pb_module_read(plugin, &t->instance.module, why, sizeof why), 0,
                 "%s", why);
    t->instance.conf = &t->conf;
    t->instance.config_dir = config_dir;
    t->rc = pb_instance_start(&t->instance, &t->diag) == 0 ? PB_OK : PB_ERROR;
    cr_assert_eq(t->rc == PB_OK, t->diag.count == 0,
                 "create() returned %d with %zu settings errors", t->rc,
                 t->diag.count);
    return t;
}

void pb_test_plugin_free(pb_test_plugin *t)
{
    if (t->instance.created && t->instance.module.destroy != NULL)
        t->instance.module.destroy(t->instance.state);
    free(t->instance.name);
    free(t->conf.name);
    free(t->conf.module);
    free(t->conf.positions);
    json_decref(t->conf.settings);
    pb_diag_free(&t->diag);
    free(t);
}

const char *pb_test_diag(const pb_test_plugin *t, size_t index)
{
    return index < t->diag.count && t->diag.lines[index] != NULL
           ? t->diag.lines[index] : "";
}

/* --- Requests ----------------------------------------------------------- */

/*
 * The output buffer starts with bytes of earlier replies, most of them
 * already sent, so that growing it for the reply moves the live bytes to
 * its front: a reply must survive that, and so must the undo of a failure.
 */
#define EARLIER_WRITTEN 250
#define EARLIER_SENT 240
#define EARLIER_LIVE (EARLIER_WRITTEN - EARLIER_SENT)

static unsigned char *copy_bytes(const void *bytes, size_t length)
{
    unsigned char *copy = malloc(length + 1);
    cr_assert_not_null(copy);
    if (length > 0)
        memcpy(copy, bytes, length);
    copy[length] = '\0';
    return copy;
}

static char *copy_string(const char *s)
{
    return (char *)copy_bytes(s, strlen(s));
}

static void decode_reply(pb_framing framing, pb_test_reply *reply)
{
    if (framing == PB_FRAMING_LINE) {
        cr_assert(reply->wire_length > 0 && reply->wire[reply->wire_length - 1] == '\n',
                  "a line reply must end with \\n");
        reply->content_length = reply->wire_length - 1;
        reply->content = copy_bytes(reply->wire, reply->content_length);
        return;
    }
    pb_frame_decoder decoder;
    pb_frame_decoder_init(&decoder, (size_t)1 << 30);
    pb_message msg;
    size_t consumed = 0;
    pb_error err = { PB_ERR_NONE, "" };
    pb_decode_status status = pb_frame_decode(&decoder, reply->wire,
                                              reply->wire_length, &msg,
                                              &consumed, NULL, &err);
    cr_assert_eq(status, PB_DECODE_MESSAGE, "the reply is not a frame: %s", err.text);
    cr_assert_eq(consumed, reply->wire_length, "the reply is not exactly one frame");
    reply->content_type = copy_string(msg.content_type);
    reply->content_encoding = copy_string(msg.content_encoding);
    reply->content = copy_bytes(msg.content, msg.content_length);
    reply->content_length = msg.content_length;
    pb_message_clear(&msg);
    pb_frame_decoder_reset(&decoder);
}

static int run(pb_test_plugin *t, pb_framing framing, const unsigned char *data,
               size_t length, pb_test_reply *reply)
{
    memset(reply, 0, sizeof *reply);
    pb_message msg;
    size_t consumed = 0;
    pb_error err = { PB_ERR_NONE, "" };
    pb_decode_status status;
    pb_frame_decoder frame_decoder;
    pb_line_decoder line_decoder;
    if (framing == PB_FRAMING_LINE) {
        pb_line_decoder_init(&line_decoder, (size_t)1 << 30);
        status = pb_line_decode(&line_decoder, data, length, &msg, &consumed, &err);
    } else {
        pb_frame_decoder_init(&frame_decoder, (size_t)1 << 30);
        status = pb_frame_decode(&frame_decoder, data, length, &msg, &consumed,
                                 NULL, &err);
    }
    cr_assert_eq(status, PB_DECODE_MESSAGE, "harness: bad request: %s", err.text);
    cr_assert_eq(consumed, length, "harness: the request is not one message");

    /* The content as the daemon gives it: read in place when flat. */
    pb_content content;
    pb_content_init(&content);
    const pb_json *json = NULL;
    if (strcmp(msg.content_type, "text/json") == 0) {
        json_error_t jerr;
        json = pb_content_parse(&content, (const char *)msg.content,
                                msg.content_length, &jerr);
        cr_assert_not_null(json, "harness: request content is not JSON: %s", jerr.text);
    }
    pb_request request = {
        .size = sizeof request,
        .host = &pb_host_services,
        .instance = &t->instance,
        .content_type = msg.content_type,
        .content_encoding = msg.content_encoding,
        .header = (const pb_json *)msg.header,
        .content = msg.content,
        .content_length = msg.content_length,
        .json = json,
        .listener = "harness",
        .framing = framing,
    };

    unsigned char earlier[EARLIER_WRITTEN];
    memset(earlier, 'E', sizeof earlier);
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append(&out, earlier, sizeof earlier), 0);
    pb_buf_consume(&out, EARLIER_SENT);

    reply->rc = pb_instance_call(&t->instance, &request, &out, reply->error,
                                 sizeof reply->error);

    cr_assert(pb_buf_used(&out) >= EARLIER_LIVE
              && memcmp(pb_buf_head(&out), earlier, EARLIER_LIVE) == 0,
              "the reply overwrote earlier output");
    reply->wire_length = pb_buf_used(&out) - EARLIER_LIVE;
    reply->wire = copy_bytes(pb_buf_head(&out) + EARLIER_LIVE, reply->wire_length);
    if (reply->rc == PB_OK) {
        decode_reply(framing, reply);
    } else {
        cr_assert_eq(reply->rc, PB_ERROR);
        cr_assert_eq(reply->wire_length, 0, "a failed request left output behind");
        cr_assert_neq(reply->error[0], '\0', "a failed request has no error text");
    }

    pb_buf_free(&out);
    pb_content_release(&content);
    pb_message_clear(&msg);
    if (framing == PB_FRAMING_FRAME)
        pb_frame_decoder_reset(&frame_decoder);
    return reply->rc;
}

int pb_test_handle(pb_test_plugin *t, pb_framing framing,
                   const char *content_type, const char *content_encoding,
                   const void *content, size_t length, pb_test_reply *reply)
{
    pb_buf wire = PB_BUF_INIT;
    if (framing == PB_FRAMING_LINE) {
        cr_assert(memchr(content, '\n', length) == NULL, "harness: a line holds no \\n");
        cr_assert(pb_buf_append(&wire, content, length) == 0
                  && pb_buf_append_byte(&wire, '\n') == 0);
    } else {
        cr_assert_eq(pb_frame_encode(&wire, content_type, content_encoding,
                                     content, length), 0);
    }
    int rc = run(t, framing, pb_buf_head(&wire), pb_buf_used(&wire), reply);
    pb_buf_free(&wire);
    return rc;
}

int pb_test_handle_str(pb_test_plugin *t, const char *content_type,
                       const char *content_encoding, const char *content,
                       pb_test_reply *reply)
{
    return pb_test_handle(t, PB_FRAMING_FRAME, content_type, content_encoding,
                          content, strlen(content), reply);
}

int pb_test_handle_wire(pb_test_plugin *t, const unsigned char *frame,
                        size_t length, pb_test_reply *reply)
{
    return run(t, PB_FRAMING_FRAME, frame, length, reply);
}

void pb_test_reply_free(pb_test_reply *reply)
{
    free(reply->wire);
    free(reply->content_type);
    free(reply->content_encoding);
    free(reply->content);
    memset(reply, 0, sizeof *reply);
}

/* --- Reference exchanges ------------------------------------------------ */

static unsigned char *from_hex(const char *hex, size_t *length)
{
    size_t n = strlen(hex) / 2;
    unsigned char *bytes = malloc(n + 1);
    cr_assert_not_null(bytes);
    for (size_t i = 0; i < n; i++) {
        unsigned int byte;
        cr_assert_eq(sscanf(hex + 2 * i, "%2x", &byte), 1);
        bytes[i] = (unsigned char)byte;
    }
    *length = n;
    return bytes;
}

/* The vectors were written on a little-endian host; a big-endian one
 * announces "big", which also changes the header's length prefix. */
static unsigned char *with_host_byteorder(unsigned char *frame, size_t *length)
{
    static const char written[] = "\"byteorder\": \"little\"";
    if (strcmp(pb_host_byteorder(), "little") == 0)
        return frame;
    size_t header_length = (size_t)frame[0] << 8 | frame[1];
    const char *header = (const char *)frame + 2;
    const char *at = memmem(header, header_length, written, strlen(written));
    cr_assert_not_null(at);
    pb_buf out = PB_BUF_INIT;
    char replacement[64];
    snprintf(replacement, sizeof replacement, "\"byteorder\": \"%s\"",
             pb_host_byteorder());
    size_t new_header_length = header_length - strlen(written) + strlen(replacement);
    size_t before = (size_t)(at - header);
    cr_assert(pb_buf_append_byte(&out, (unsigned char)(new_header_length >> 8)) == 0
              && pb_buf_append_byte(&out, (unsigned char)new_header_length) == 0
              && pb_buf_append(&out, header, before) == 0
              && pb_buf_append_str(&out, replacement) == 0
              && pb_buf_append(&out, at + strlen(written),
                               *length - 2 - before - strlen(written)) == 0);
    unsigned char *copy = copy_bytes(pb_buf_head(&out), pb_buf_used(&out));
    *length = pb_buf_used(&out);
    pb_buf_free(&out);
    free(frame);
    return copy;
}

void pb_test_seed_exchange(const char *name,
                           unsigned char **request, size_t *request_length,
                           unsigned char **reply, size_t *reply_length)
{
    json_error_t err;
    json_t *vectors = json_load_file(PB_TEST_SRCDIR "/tests/vectors/seed-exchanges.json",
                                     0, &err);
    cr_assert_not_null(vectors, "seed-exchanges.json: %s", err.text);
    size_t index;
    json_t *exchange;
    json_array_foreach(json_object_get(vectors, "exchanges"), index, exchange) {
        if (strcmp(json_string_value(json_object_get(exchange, "name")), name) != 0)
            continue;
        *request = from_hex(json_string_value(json_object_get(exchange, "request_hex")),
                            request_length);
        *reply = from_hex(json_string_value(json_object_get(exchange, "reply_hex")),
                          reply_length);
        *reply = with_host_byteorder(*reply, reply_length);
        json_decref(vectors);
        return;
    }
    json_decref(vectors);
    cr_assert_fail("no seed exchange named %s", name);
}

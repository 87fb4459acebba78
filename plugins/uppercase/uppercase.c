/*
 * uppercase - answers with its input in capitals. text/json content with a
 * string "value" gets {"result": "<VALUE>"}, and text/json without one
 * fails; any other content comes back uppercased with the same content-type
 * and encoding. The content-encoding decides how: utf-8 as Unicode
 * (straße -> STRASSE, é -> É, via libunistring), anything else as ASCII
 * letters only. Shows reading the parsed JSON of a request, reply_json,
 * reply_buffer, and failing a request with reply_error.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <unicase.h>
#include <unistr.h>

#include <plugboard/plugin.h>

static int is_utf8_encoding(const char *encoding)
{
    return strcasecmp(encoding, "utf-8") == 0 || strcasecmp(encoding, "utf8") == 0;
}

/*
 * Full Unicode uppercasing can change the length (ß becomes SS), so the
 * result is a new malloc'ed string; NULL with a reason in the reply when the
 * input is not UTF-8 or memory ran out.
 */
static uint8_t *unicode_upper(const pb_host *host, pb_reply *reply,
                              const void *text, size_t length,
                              size_t *upper_length)
{
    const uint8_t *bad = u8_check(text, length);
    if (bad != NULL) {
        host->reply_error(reply, "content is not valid UTF-8 (byte %zu)",
                          (size_t)(bad - (const uint8_t *)text));
        return NULL;
    }
    /* No language: the same text gives the same answer on every host. */
    uint8_t *upper = u8_toupper(text, length, NULL, NULL, NULL, upper_length);
    if (upper == NULL)
        host->reply_error(reply, "out of memory");
    return upper;
}

static int reply_json_value(const pb_request *request, pb_reply *reply,
                            const char *value, size_t length)
{
    const pb_host *host = request->host;
    size_t upper_length;
    uint8_t *upper = unicode_upper(host, reply, value, length, &upper_length);
    if (upper == NULL)
        return PB_ERROR;
    pb_json *answer = host->json_new_object();
    pb_json *result = host->json_new_string((const char *)upper, upper_length);
    free(upper);
    /* json_set takes result even when it fails (answer or result being NULL
     * after an allocation failure included), so only answer is left to free. */
    if (host->json_set(answer, "result", result) != PB_OK) {
        host->json_free(answer);
        host->reply_error(reply, "out of memory");
        return PB_ERROR;
    }
    return host->reply_json(reply, answer);
}

static int reply_unicode(const pb_request *request, pb_reply *reply)
{
    size_t upper_length;
    uint8_t *upper = unicode_upper(request->host, reply, request->content,
                                   request->content_length, &upper_length);
    if (upper == NULL)
        return PB_ERROR;
    int rc = request->host->reply_bytes(reply, request->content_type,
                                        request->content_encoding,
                                        upper, upper_length);
    free(upper);
    return rc;
}

/* Other encodings may not even be ASCII-compatible beyond a-z, so only
 * those bytes change; the reply is written in place. */
static int reply_ascii(const pb_request *request, pb_reply *reply)
{
    unsigned char *out = request->host->reply_buffer(
        reply, request->content_type, request->content_encoding,
        request->content_length);
    if (out == NULL)
        return PB_ERROR;    /* the host has recorded why */
    for (size_t i = 0; i < request->content_length; i++) {
        unsigned char c = request->content[i];
        out[i] = c >= 'a' && c <= 'z' ? (unsigned char)(c - 'a' + 'A') : c;
    }
    return PB_OK;
}

static int uppercase_handle(void *state, const pb_request *request,
                            pb_reply *reply)
{
    (void)state;
    const pb_host *host = request->host;
    /* request->json is set exactly when the content-type is text/json. */
    if (request->json != NULL) {
        size_t length;
        const char *value = host->json_string(
            host->json_get(request->json, "value"), &length);
        /* Uppercasing the JSON text instead would break it (true becomes
         * TRUE, \u00e9 becomes \U00E9) under a text/json label. */
        if (value == NULL) {
            host->reply_error(reply, "uppercase needs text/json content "
                                     "holding an object with a string \"value\"");
            return PB_ERROR;
        }
        return reply_json_value(request, reply, value, length);
    }
    if (is_utf8_encoding(request->content_encoding))
        return reply_unicode(request, reply);
    return reply_ascii(request, reply);
}

PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
    PB_PLUGIN_VERSIONED,
    .name        = "uppercase",
    .description = "answers with the request uppercased (Unicode for utf-8)",
    .create      = NULL,     /* takes no settings */
    .handle      = uppercase_handle,
    .destroy     = NULL,
};

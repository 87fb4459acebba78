/*
 * plugin_host.c - the daemon's side of the plugin SDK: the pb_host services
 * (logging, settings errors, JSON on top of jansson, replies encoded straight
 * into the connection's output) and the guarded call into a plugin's handle().
 */
#include "plugin_host.h"
#include "shared.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "frame.h"
#include "json_dump.h"
#include "log.h"

/* A pb_json is a jansson value; these casts are the only place that knows. */
static const json_t *cj(const pb_json *value) { return (const json_t *)value; }
static json_t *mj(pb_json *value) { return (json_t *)value; }
static pb_json *pj(json_t *value) { return (pb_json *)value; }

/*
 * reply_json must know the dumped length before it can write the frame
 * header, so it dumps into this buffer first. The daemon runs one loop per
 * process, so one buffer serves every call; it keeps its memory between
 * calls and pb_plugin_host_cleanup() frees it at exit.
 */
static pb_buf json_scratch = PB_BUF_INIT;

/* --- Logging and errors ------------------------------------------------- */

static const char *name_of(const pb_instance *instance)
{
    return instance != NULL && instance->name != NULL ? instance->name : "?";
}

static PB_PRINTF(3, 4) void host_log(const pb_instance *instance,
                                     pb_log_level level,
                                     const char *format, ...)
{
    if (!pb_log_enabled((int)level))
        return;
    char message[1024];
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, sizeof message, format, ap);
    va_end(ap);
    pb_log((int)level, "plugin %s: %s", name_of(instance), message);
}

static PB_PRINTF(3, 4) void host_settings_error(pb_instance *instance,
                                                const pb_json *where,
                                                const char *format, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, sizeof message, format, ap);
    va_end(ap);
    /* Outside create() there is no configuration being checked to blame,
     * so the complaint can only go to the log. */
    if (instance == NULL || instance->diag == NULL || instance->conf == NULL) {
        pb_log(PB_LOG_ERROR, "plugin %s: %s", name_of(instance), message);
        return;
    }
    pb_conf_pos pos = pb_plugin_conf_position(instance->conf, cj(where));
    pb_diag_add(instance->diag, pos.file, pos.line, "plugin %s: %s",
                name_of(instance), message);
}

static const char *host_instance_name(const pb_instance *instance)
{
    return name_of(instance);
}

static int host_resolve_path(const pb_instance *instance, const char *path,
                             char *buf, size_t size)
{
    if (path == NULL || buf == NULL || size == 0)
        return PB_ERROR;
    int n;
    if (path[0] == '/' || instance == NULL || instance->config_dir == NULL)
        n = snprintf(buf, size, "%s", path);
    else
        n = snprintf(buf, size, "%s/%s", instance->config_dir, path);
    if (n < 0 || (size_t)n >= size) {
        buf[0] = '\0';
        return PB_ERROR;
    }
    return PB_OK;
}

/* --- Reading JSON ------------------------------------------------------- */

static pb_json_type host_json_type(const pb_json *value)
{
    if (value == NULL)
        return PB_JSON_INVALID;
    switch (json_typeof(cj(value))) {
    case JSON_OBJECT:  return PB_JSON_OBJECT;
    case JSON_ARRAY:   return PB_JSON_ARRAY;
    case JSON_STRING:  return PB_JSON_STRING;
    case JSON_INTEGER: return PB_JSON_INTEGER;
    case JSON_REAL:    return PB_JSON_REAL;
    case JSON_TRUE:    return PB_JSON_TRUE;
    case JSON_FALSE:   return PB_JSON_FALSE;
    case JSON_NULL:    return PB_JSON_NULL;
    }
    return PB_JSON_INVALID;
}

static const pb_json *host_json_get(const pb_json *object, const char *key)
{
    if (!json_is_object(cj(object)) || key == NULL)
        return NULL;
    return (const pb_json *)json_object_get(cj(object), key);
}

static const char *host_json_string(const pb_json *value, size_t *length)
{
    if (!json_is_string(cj(value)))
        return NULL;
    if (length != NULL)
        *length = json_string_length(cj(value));
    return json_string_value(cj(value));
}

static long long host_json_integer(const pb_json *value)
{
    return json_is_integer(cj(value)) ? json_integer_value(cj(value)) : 0;
}

static double host_json_number(const pb_json *value)
{
    return json_is_number(cj(value)) ? json_number_value(cj(value)) : 0.0;
}

static size_t host_json_size(const pb_json *value)
{
    if (json_is_array(cj(value)))
        return json_array_size(cj(value));
    if (json_is_object(cj(value)))
        return json_object_size(cj(value));
    return 0;
}

static const pb_json *host_json_at(const pb_json *array, size_t index)
{
    if (!json_is_array(cj(array)))
        return NULL;
    return (const pb_json *)json_array_get(cj(array), index);
}

static int host_json_foreach(const pb_json *object,
                             int (*fn)(const char *key, const pb_json *value,
                                       void *arg),
                             void *arg)
{
    if (!json_is_object(cj(object)) || fn == NULL)
        return 0;
    /* jansson's iterators take a non-const object but only read it; they
     * walk members in insertion order, which is document order. */
    json_t *members = (json_t *)cj(object);
    const char *key;
    json_t *value;
    json_object_foreach(members, key, value) {
        int rc = fn(key, (const pb_json *)value, arg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static pb_json *host_json_load_file(const char *path, char *error,
                                    size_t error_size)
{
    if (path == NULL) {
        if (error != NULL && error_size > 0)
            snprintf(error, error_size, "no file name given");
        return NULL;
    }
    json_error_t err;
    errno = 0;
    json_t *value = json_load_file(path, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    int open_errno = errno;
    if (value == NULL && error != NULL && error_size > 0) {
        /* jansson's own text for an unopenable file repeats the name. */
        if (json_error_code(&err) == json_error_cannot_open_file)
            snprintf(error, error_size, "%s: %s", path,
                     open_errno != 0 ? strerror(open_errno) : "cannot open");
        else if (err.line > 0)
            snprintf(error, error_size, "%s:%d: %s", path, err.line, err.text);
        else
            snprintf(error, error_size, "%s: %s", path, err.text);
    }
    return pj(value);
}

/* --- Building JSON ------------------------------------------------------ */

static pb_json *host_json_new_object(void) { return pj(json_object()); }
static pb_json *host_json_new_array(void) { return pj(json_array()); }

static pb_json *host_json_new_string(const char *utf8, size_t length)
{
    if (utf8 == NULL)
        return NULL;
    /* json_stringn refuses bytes that are not UTF-8, as the SDK promises. */
    return pj(json_stringn(utf8, length));
}

static pb_json *host_json_new_integer(long long value)
{
    return pj(json_integer((json_int_t)value));
}

static pb_json *host_json_new_real(double value) { return pj(json_real(value)); }
static pb_json *host_json_new_bool(int value) { return pj(json_boolean(value)); }
static pb_json *host_json_new_null(void) { return pj(json_null()); }

static pb_json *host_json_copy(const pb_json *value)
{
    return value == NULL ? NULL : pj(json_deep_copy(cj(value)));
}

static int host_json_set(pb_json *object, const char *key, pb_json *value)
{
    if (object == NULL || key == NULL) {
        json_decref(mj(value));
        return PB_ERROR;
    }
    /* json_object_set_new releases value itself when it fails. */
    return json_object_set_new(mj(object), key, mj(value)) == 0 ? PB_OK : PB_ERROR;
}

static int host_json_append(pb_json *array, pb_json *value)
{
    if (array == NULL) {
        json_decref(mj(value));
        return PB_ERROR;
    }
    return json_array_append_new(mj(array), mj(value)) == 0 ? PB_OK : PB_ERROR;
}

static void host_json_free(pb_json *value) { json_decref(mj(value)); }

/* --- Replies ------------------------------------------------------------ */

/* Where reply->out ended before this reply, as an absolute offset. The mark
 * is kept relative to out->start because growing the buffer may move the
 * live bytes to its front. */
static size_t reply_start(const pb_reply *reply)
{
    return reply->out->start + reply->mark;
}

static void set_error(pb_reply *reply, const char *text)
{
    if (reply->error[0] == '\0')
        snprintf(reply->error, sizeof reply->error, "%s", text);
}

/* Says why a reply could not be encoded and drops what was written
 * of it. */
static void encode_failed(pb_reply *reply, int rc, const char *content_type,
                          const char *content_encoding, size_t length)
{
    pb_buf_truncate(reply->out, reply_start(reply));
    if (rc == PB_FRAME_HEADER_TOO_LONG) {
        char text[120];
        snprintf(text, sizeof text,
                 "reply header is %zu bytes, more than the %d a frame can carry",
                 pb_frame_header_length(content_type, content_encoding, length),
                 PB_FRAME_MAX_HEADER);
        set_error(reply, text);
    } else {
        set_error(reply, "out of memory while encoding the reply");
    }
}

/* Counts a reply call; only the first may write. */
static int claim_reply(pb_reply *reply)
{
    if (reply->done++ > 0) {
        set_error(reply, "plugin replied more than once");
        return PB_ERROR;
    }
    return PB_OK;
}

static int host_reply_bytes(pb_reply *reply, const char *content_type,
                            const char *content_encoding, const void *content,
                            size_t length)
{
    if (reply == NULL || claim_reply(reply) != PB_OK)
        return PB_ERROR;
    if (content_type == NULL || content_encoding == NULL
        || (content == NULL && length > 0)) {
        set_error(reply, "plugin gave a reply without content-type, encoding or content");
        return PB_ERROR;
    }
    int rc;
    if (reply->framing == PB_FRAMING_LINE)
        rc = pb_buf_append(reply->out, content, length) == 0
             && pb_buf_append_byte(reply->out, '\n') == 0 ? 0 : -1;
    else
        rc = pb_frame_encode(reply->out, content_type, content_encoding,
                             content, length);
    if (rc != 0) {
        encode_failed(reply, rc, content_type, content_encoding, length);
        return PB_ERROR;
    }
    return PB_OK;
}

static unsigned char *host_reply_buffer(pb_reply *reply,
                                        const char *content_type,
                                        const char *content_encoding,
                                        size_t length)
{
    if (reply == NULL || claim_reply(reply) != PB_OK)
        return NULL;
    if (content_type == NULL || content_encoding == NULL) {
        set_error(reply, "plugin gave a reply without content-type or encoding");
        return NULL;
    }
    unsigned char *content = NULL;
    int rc = PB_FRAME_NO_MEMORY;
    if (reply->framing == PB_FRAMING_LINE) {
        content = length < (size_t)-1 ? pb_buf_extend(reply->out, length + 1) : NULL;
        if (content != NULL)
            content[length] = '\n';
    } else {
        int encoded = pb_frame_encode_header(reply->out, content_type,
                                             content_encoding, length);
        if (encoded == 0)
            content = pb_buf_extend(reply->out, length);
        else
            rc = encoded;
    }
    if (content == NULL)
        encode_failed(reply, rc, content_type, content_encoding, length);
    return content;
}

static int host_reply_json(pb_reply *reply, pb_json *value)
{
    if (reply == NULL || claim_reply(reply) != PB_OK) {
        json_decref(mj(value));
        return PB_ERROR;
    }
    if (value == NULL) {
        set_error(reply, "plugin gave no JSON value to reply with (out of memory?)");
        return PB_ERROR;
    }
    int rc;
    if (reply->framing == PB_FRAMING_LINE) {
        rc = pb_json_dump(reply->out, mj(value)) == 0
             && pb_buf_append_byte(reply->out, '\n') == 0 ? 0 : -1;
    } else {
        pb_buf_clear(&json_scratch);
        rc = pb_json_dump(&json_scratch, mj(value)) == 0
             && pb_frame_encode(reply->out, "text/json", "utf-8",
                                pb_buf_head(&json_scratch),
                                pb_buf_used(&json_scratch)) == 0 ? 0 : -1;
        pb_buf_clear(&json_scratch);
    }
    json_decref(mj(value));
    if (rc != 0) {
        pb_buf_truncate(reply->out, reply_start(reply));
        set_error(reply, "could not encode the plugin's JSON reply "
                         "(out of memory, or NaN or infinity in it)");
        return PB_ERROR;
    }
    return PB_OK;
}

static PB_PRINTF(2, 3) void host_reply_error(pb_reply *reply,
                                             const char *format, ...)
{
    if (reply == NULL || format == NULL)
        return;
    va_list ap;
    va_start(ap, format);
    vsnprintf(reply->error, sizeof reply->error, format, ap);
    va_end(ap);
}

/* --- Daemon ------------------------------------------------------------ */

static const pb_shared *stats_source;

void pb_plugin_host_set_shared(const pb_shared *shared)
{
    stats_source = shared;
}

static pb_json *host_stats(void)
{
    return stats_source ? (pb_json *)pb_stats_snapshot(stats_source) : NULL;
}

static char *host_json_encode(const pb_json *value, size_t *length)
{
    pb_buf out = PB_BUF_INIT;
    if (value == NULL || pb_json_dump(&out, cj(value)) != 0 ||
        pb_buf_append_byte(&out, '\0') != 0) {
        pb_buf_free(&out);
        return NULL;
    }
    if (length != NULL)
        *length = pb_buf_used(&out) - 1;
    /* The buffer's memory is one malloc'd block starting at data: the
     * caller's free() releases it. */
    return (char *)out.data;
}

const pb_host pb_host_services = {
    .size             = sizeof(pb_host),
    .abi_version      = PLUGBOARD_ABI_VERSION,
    .log              = host_log,
    .settings_error   = host_settings_error,
    .instance_name    = host_instance_name,
    .resolve_path     = host_resolve_path,
    .json_type        = host_json_type,
    .json_get         = host_json_get,
    .json_string      = host_json_string,
    .json_integer     = host_json_integer,
    .json_number      = host_json_number,
    .json_size        = host_json_size,
    .json_at          = host_json_at,
    .json_foreach     = host_json_foreach,
    .json_load_file   = host_json_load_file,
    .json_new_object  = host_json_new_object,
    .json_new_array   = host_json_new_array,
    .json_new_string  = host_json_new_string,
    .json_new_integer = host_json_new_integer,
    .json_new_real    = host_json_new_real,
    .json_new_bool    = host_json_new_bool,
    .json_new_null    = host_json_new_null,
    .json_copy        = host_json_copy,
    .json_set         = host_json_set,
    .json_append      = host_json_append,
    .json_free        = host_json_free,
    .reply_bytes      = host_reply_bytes,
    .reply_buffer     = host_reply_buffer,
    .reply_json       = host_reply_json,
    .reply_error      = host_reply_error,
    .stats            = host_stats,
    .json_encode      = host_json_encode,
};

void pb_reply_init(pb_reply *reply, pb_buf *out, pb_framing framing)
{
    reply->out = out;
    reply->mark = pb_buf_used(out);
    reply->framing = framing;
    reply->done = 0;
    reply->error[0] = '\0';
}

int pb_instance_handle(pb_instance *instance, const pb_request *request,
                       pb_reply *reply)
{
    int rc = instance->plugin->handle(instance->state, request, reply);
    if (rc == PB_OK && reply->done == 1)
        return PB_OK;
    if (rc == PB_OK && reply->done == 0)
        set_error(reply, "plugin returned no reply");
    else if (reply->done > 1)
        set_error(reply, "plugin replied more than once");
    else
        set_error(reply, "plugin failed");
    pb_buf_truncate(reply->out, reply_start(reply));
    return PB_ERROR;
}

void pb_plugin_host_cleanup(void)
{
    pb_buf_free(&json_scratch);
}

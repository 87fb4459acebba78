/*
 * plugin_host.c - the daemon's side of the plugin SDK: the pb_host services
 * (logging, settings errors, JSON on top of jansson, replies, the loop,
 * pushes), plugins of every supported ABI, and the call into a plugin's
 * handle(), on the loop thread or on the instance's thread pool.
 */
#include "plugin_host.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "json_dump.h"
#include "json_fast.h"
#include "log.h"
#include "pool.h"

/*
 * A pb_json is a jansson value, or request content read in place
 * (json_fast.h), which the readers below read as it is; these casts are the
 * only place that knows. Anything else that needs jansson's value gets it
 * built, once, by cj().
 */
static const json_t *cj(const pb_json *value)
{
    const pb_flat_value *flat = pb_flat_of(value);
    return flat != NULL ? pb_flat_tree(flat) : (const json_t *)value;
}
static json_t *mj(pb_json *value) { return (json_t *)value; }
static pb_json *pj(json_t *value) { return (pb_json *)value; }

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
    const pb_flat_value *flat = pb_flat_of(value);
    if (flat != NULL)
        return flat->is_object ? PB_JSON_OBJECT : PB_JSON_STRING;
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
    const pb_flat_value *flat = pb_flat_of(object);
    if (flat != NULL)
        return key != NULL ? (const pb_json *)pb_flat_get(flat, key) : NULL;
    if (!json_is_object(cj(object)) || key == NULL)
        return NULL;
    return (const pb_json *)json_object_get(cj(object), key);
}

static const char *host_json_string(const pb_json *value, size_t *length)
{
    const pb_flat_value *flat = pb_flat_of(value);
    if (flat != NULL && !flat->is_object) {
        if (length != NULL)
            *length = flat->length;
        return flat->string;
    }
    if (!json_is_string(cj(value)))
        return NULL;
    if (length != NULL)
        *length = json_string_length(cj(value));
    return json_string_value(cj(value));
}

static long long host_json_integer(const pb_json *value)
{
    /* Content read in place holds strings only. */
    if (pb_flat_of(value) != NULL)
        return 0;
    return json_is_integer(cj(value)) ? json_integer_value(cj(value)) : 0;
}

static double host_json_number(const pb_json *value)
{
    if (pb_flat_of(value) != NULL)
        return 0.0;
    return json_is_number(cj(value)) ? json_number_value(cj(value)) : 0.0;
}

static size_t host_json_size(const pb_json *value)
{
    const pb_flat_value *flat = pb_flat_of(value);
    if (flat != NULL)
        return flat->is_object ? flat->content->n_members : 0;
    if (json_is_array(cj(value)))
        return json_array_size(cj(value));
    if (json_is_object(cj(value)))
        return json_object_size(cj(value));
    return 0;
}

static const pb_json *host_json_at(const pb_json *array, size_t index)
{
    if (pb_flat_of(array) != NULL || !json_is_array(cj(array)))
        return NULL;
    return (const pb_json *)json_array_get(cj(array), index);
}

static int host_json_foreach(const pb_json *object,
                             int (*fn)(const char *key, const pb_json *value,
                                       void *arg),
                             void *arg)
{
    const pb_flat_value *flat = pb_flat_of(object);
    if (flat != NULL) {
        for (size_t i = 0; flat->is_object && fn != NULL && i < flat->content->n_members; i++) {
            int rc = fn(flat->content->members[i].key,
                        (const pb_json *)&flat->content->members[i].value, arg);
            if (rc != 0)
                return rc;
        }
        return 0;
    }
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

static int host_reply_bytes(pb_reply *reply, const char *content_type,
                            const char *content_encoding, const void *content,
                            size_t length)
{
    return pb_reply_bytes(reply, content_type, content_encoding, content, length);
}

static unsigned char *host_reply_buffer(pb_reply *reply,
                                        const char *content_type,
                                        const char *content_encoding,
                                        size_t length)
{
    return pb_reply_buffer(reply, content_type, content_encoding, length);
}

static int host_reply_json(pb_reply *reply, pb_json *value)
{
    return pb_reply_json(reply, value);
}

static PB_PRINTF(2, 3) void host_reply_error(pb_reply *reply,
                                             const char *format, ...)
{
    if (reply == NULL || format == NULL)
        return;
    char text[sizeof reply->error];
    va_list ap;
    va_start(ap, format);
    vsnprintf(text, sizeof text, format, ap);
    va_end(ap);
    pb_reply_error(reply, text);
}

static int host_reply_cancelled(const pb_reply *reply)
{
    return pb_reply_cancelled(reply);
}

/* --- Daemon ------------------------------------------------------------ */

static pb_shared *stats_source;
static int stats_slot;
static struct ev_loop *worker_loop;

void pb_plugin_host_set_shared(pb_shared *shared, int slot)
{
    stats_source = shared;
    stats_slot = slot;
}

void pb_plugin_host_set_loop(struct ev_loop *loop)
{
    worker_loop = loop;
}

static pb_json *host_stats(void)
{
    return stats_source ? (pb_json *)pb_stats_snapshot(stats_source) : NULL;
}

/* --- Metrics ----------------------------------------------------------- */

/*
 * A pb_metric is the worker's pb_metric_entry in the shared mapping itself:
 * entries are never given back while the worker lives, so the handle stays
 * valid for its instance's life (and longer), costs no allocation, and
 * metric_add and metric_set are one atomic operation on it.
 */
static pb_metric_entry *entry_of(pb_metric *metric)
{
    return (pb_metric_entry *)metric;
}

/* 1..63 bytes of letters, digits and '_': a name is a JSON key that tools
 * can use as it is. */
static int valid_metric_name(const char *name)
{
    size_t n = strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                            "0123456789_");
    return n > 0 && n < PB_METRIC_NAME_LEN && name[n] == '\0';
}

/* 1..63 bytes of UTF-8 (jansson refuses a string that is not). */
static int valid_metric_label(const char *label)
{
    size_t n = strlen(label);
    if (n == 0 || n >= PB_METRIC_NAME_LEN)
        return 0;
    json_t *checked = json_stringn(label, n);
    json_decref(checked);
    return checked != NULL;
}

/* A full table is logged once per worker, not at every ask: a plugin that
 * makes a metric per label may ask on every message. */
static atomic_int full_logged;

static pb_metric *host_metric(pb_instance *instance, const char *name,
                              const char *label, pb_metric_kind kind)
{
    if (stats_source == NULL)
        return NULL;
    if (instance == NULL || instance->name == NULL) {
        pb_log_warning("plugin ?: metric %.63s refused: no instance given",
                       name != NULL ? name : "(null)");
        return NULL;
    }
    if (name == NULL || !valid_metric_name(name)) {
        pb_log_warning("plugin %s: metric name \"%.63s\" refused: it must be 1 "
                       "to 63 letters, digits or '_'", instance->name,
                       name != NULL ? name : "(null)");
        return NULL;
    }
    if (label != NULL && !valid_metric_label(label)) {
        pb_log_warning("plugin %s: a label of metric %s refused: it must be 1 to "
                       "63 bytes of UTF-8", instance->name, name);
        return NULL;
    }
    if (kind != PB_METRIC_COUNTER && kind != PB_METRIC_GAUGE &&
        kind != PB_METRIC_SHARED) {
        pb_log_warning("plugin %s: metric %s refused: unknown kind %d",
                       instance->name, name, (int)kind);
        return NULL;
    }
    int at = pb_metric_index(stats_source, stats_slot, instance->name, name,
                             label, kind);
    if (at >= 0)
        return (pb_metric *)&stats_source->slots[stats_slot].metrics[at];
    if (at == PB_METRIC_CONFLICT)
        pb_log_warning("plugin %s: metric %s refused: the name is already taken "
                       "with another kind, or %s a label", instance->name, name,
                       label != NULL ? "without" : "with");
    else if (at == PB_METRIC_FULL && atomic_exchange(&full_logged, 1) == 0)
        pb_log_warning("plugin %s: metric %s not counted: the worker's %d "
                       "metrics are taken", instance->name, name, PB_METRICS);
    return NULL;
}

static void host_metric_add(pb_metric *metric, long long delta)
{
    if (metric != NULL)
        pb_metric_entry_add(entry_of(metric), delta);
}

static void host_metric_set(pb_metric *metric, long long value)
{
    if (metric != NULL)
        pb_metric_entry_set(entry_of(metric), value);
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

static void *host_loop(void)
{
    return worker_loop;
}

static int host_run_on_loop(void (*fn)(void *arg), void *arg)
{
    return pb_run_on_loop(fn, arg) == 0 ? PB_OK : PB_ERROR;
}

/* --- Pushes ------------------------------------------------------------- */

static const pb_push_ops *pushes;

void pb_plugin_host_set_pushes(const pb_push_ops *ops)
{
    pushes = ops;
}

static pb_client *host_client_hold(const pb_request *request,
                                   void (*on_close)(pb_client *client, void *arg),
                                   void *arg)
{
    if (pushes == NULL || request == NULL || !pb_on_loop_thread())
        return NULL;
    return pushes->hold(request, on_close, arg);
}

static void host_client_release(pb_client *client)
{
    if (pushes != NULL && client != NULL)
        pushes->release(client);
}

static int host_push_bytes(pb_client *client, const char *content_type,
                           const char *content_encoding, const void *content,
                           size_t length)
{
    if (pushes == NULL || client == NULL || content_type == NULL
        || content_encoding == NULL || (content == NULL && length > 0))
        return PB_ERROR;
    return pushes->push(client, content_type, content_encoding, content,
                        length, NULL);
}

static int host_push_json(pb_client *client, pb_json *value)
{
    int rc = pushes != NULL && client != NULL && value != NULL
                 ? pushes->push(client, NULL, NULL, NULL, 0, value)
                 : PB_ERROR;
    json_decref(mj(value));
    return rc;
}

static void host_client_close(pb_client *client)
{
    if (pushes != NULL && client != NULL)
        pushes->close(client);
}

static void host_client_close_slow(pb_client *client, const char *reason)
{
    if (pushes != NULL && client != NULL)
        pushes->close_slow(client, reason != NULL ? reason : "too slow");
}

static pb_broadcast_fn *broadcaster;

void pb_plugin_host_set_broadcast(pb_broadcast_fn *fn)
{
    broadcaster = fn;
}

static int host_broadcast(pb_instance *instance, const void *data,
                          size_t length)
{
    if (broadcaster == NULL || instance == NULL || (data == NULL && length > 0))
        return PB_ERROR;
    return broadcaster(instance, data, length) == 0 ? PB_OK : PB_ERROR;
}

void pb_instance_broadcast(pb_instance *instance, const void *data,
                           size_t length)
{
    if (instance->serving && instance->module.on_broadcast != NULL)
        instance->module.on_broadcast(instance->state, data, length);
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
    .loop             = host_loop,
    .run_on_loop      = host_run_on_loop,
    .reply_cancelled  = host_reply_cancelled,
    .client_hold      = host_client_hold,
    .client_release   = host_client_release,
    .push_bytes       = host_push_bytes,
    .push_json        = host_push_json,
    .client_close     = host_client_close,
    .broadcast        = host_broadcast,
    .metric           = host_metric,
    .metric_add       = host_metric_add,
    .metric_set       = host_metric_set,
    .client_close_slow = host_client_close_slow,
};

/* --- Plugins of every ABI ------------------------------------------------ */

/* The descriptor and request of the 0.1 header (ABI 1), which plugins built
 * against it still use. */
typedef struct plugin_v1 {
    unsigned int abi_version;
    const char *name;
    const char *description;
    int (*create)(const pb_host *host, pb_instance *instance,
                  const pb_json *settings, void **state);
    int (*handle)(void *state, const void *request, pb_reply *reply);
    void (*destroy)(void *state);
} plugin_v1;

typedef struct request_v1 {
    const pb_host *host;
    pb_instance *instance;
    const char *content_type;
    const char *content_encoding;
    const pb_json *header;
    const unsigned char *content;
    size_t content_length;
    const pb_json *json;
    const char *listener;
    pb_framing framing;
} request_v1;

/* The size of an ABI 2 descriptor that predates worker_start. */
#define PLUGIN_V2_BASE offsetof(pb_plugin, worker_start)

int pb_module_read(const void *descriptor, pb_module *m, char *why,
                   size_t why_size)
{
    unsigned int abi = *(const unsigned int *)descriptor;
    memset(m, 0, sizeof *m);
    m->abi_version = abi;
    if (abi == 1) {
        const plugin_v1 *p = descriptor;
        m->name = p->name;
        m->create = p->create;
        m->handle = p->handle;
        m->destroy = p->destroy;
    } else if (abi == 2) {
        const pb_plugin *p = descriptor;
        if (p->size < PLUGIN_V2_BASE) {
            snprintf(why, why_size, "its descriptor is %zu bytes, too short for "
                     "plugin ABI 2 (is .size set to sizeof(pb_plugin)?)", p->size);
            return -1;
        }
        m->name = p->name;
        m->create = p->create;
        m->handle = (int (*)(void *, const void *, pb_reply *))p->handle;
        m->destroy = p->destroy;
        if (p->size >= offsetof(pb_plugin, worker_stop) + sizeof p->worker_stop) {
            m->worker_start = p->worker_start;
            m->worker_stop = p->worker_stop;
        }
        if (p->size >= offsetof(pb_plugin, on_broadcast) + sizeof p->on_broadcast)
            m->on_broadcast = p->on_broadcast;
    } else {
        snprintf(why, why_size, "it was built for plugin ABI %u, this daemon "
                 "loads ABI %d to %d", abi, PLUGBOARD_ABI_OLDEST,
                 PLUGBOARD_ABI_VERSION);
        return -1;
    }
    if (m->name == NULL)
        m->name = "?";
    return 0;
}

int pb_instance_handle(pb_instance *instance, const pb_request *request,
                       pb_reply *reply)
{
    int rc;
    if (instance->module.abi_version == 1) {
        const request_v1 old = {
            request->host, request->instance, request->content_type,
            request->content_encoding, request->header, request->content,
            request->content_length, request->json, request->listener,
            request->framing,
        };
        rc = instance->module.handle(instance->state, &old, reply);
        /* ABI 1 knows no deferred replies. */
        if (rc != PB_OK && rc != PB_ERROR)
            rc = 2;
    } else {
        rc = instance->module.handle(instance->state, request, reply);
    }
    return pb_reply_returned(reply, rc);
}

int pb_instance_call(pb_instance *instance, const pb_request *request,
                     pb_buf *out, char *error, size_t error_size)
{
    pb_framing_kind kind = request->framing == PB_FRAMING_LINE ? PB_LINE : PB_FRAME;
    pb_reply *reply = pb_reply_new(NULL, NULL, pb_codec_for(kind), out);
    if (reply == NULL) {
        snprintf(error, error_size, "out of memory");
        return PB_ERROR;
    }
    if (!pb_instance_handle(instance, request, reply)) {
        /* The plugin keeps the reply: it must not be freed under it. */
        snprintf(error, error_size, "plugin deferred its reply");
        return PB_ERROR;
    }
    int rc = reply->failed ? PB_ERROR : PB_OK;
    snprintf(error, error_size, "%s", reply->error);
    if (rc == PB_OK && reply->written == &reply->own)
        rc = pb_buf_append(out, pb_buf_head(&reply->own), pb_buf_used(&reply->own)) == 0
             ? PB_OK : PB_ERROR;
    pb_reply_free(reply);
    return rc;
}

/* --- Thread pools --------------------------------------------------------- */

/* A request copied for a pool thread: what it points to lives in the
 * connection's buffers, which the loop thread goes on using. */
typedef struct pool_call {
    pb_instance *instance;
    pb_reply *reply;
    pb_request request;
    json_t *header;
    json_t *json;
    char *strings;              /* listener, peer, TLS subject */
    unsigned char content[];
} pool_call;

static void free_call(pool_call *call)
{
    json_decref(call->header);
    json_decref(call->json);
    free(call->strings);
    free(call);
}

static void run_call(void *arg)
{
    pool_call *call = arg;
    pb_instance_handle(call->instance, &call->request, call->reply);
    free_call(call);
}

static char *copy_strings(const pb_request *r, const char **listener,
                          const char **peer, const char **subject)
{
    size_t a = strlen(r->listener) + 1, b = strlen(r->peer) + 1;
    size_t c = r->tls_subject ? strlen(r->tls_subject) + 1 : 0;
    char *all = malloc(a + b + c);
    if (all == NULL)
        return NULL;
    memcpy(all, r->listener, a);
    memcpy(all + a, r->peer, b);
    if (c > 0)
        memcpy(all + a + b, r->tls_subject, c);
    *listener = all;
    *peer = all + a;
    *subject = c > 0 ? all + a + b : NULL;
    return all;
}

int pb_instance_submit(pb_instance *instance, const pb_request *request,
                       pb_reply *reply)
{
    pool_call *call = malloc(sizeof *call + request->content_length);
    if (call == NULL)
        return -1;
    call->instance = instance;
    call->reply = reply;
    call->request = *request;
    /* Deep copies: the header object may be reused for the next frame. */
    call->header = json_deep_copy((const json_t *)request->header);
    /* The content's value is made for this request alone, and the loop
     * thread lets go of it once handle_message returns: it is shared,
     * not copied. */
    call->json = request->json ? json_incref((json_t *)cj(request->json)) : NULL;
    call->strings = copy_strings(request, &call->request.listener,
                                 &call->request.peer, &call->request.tls_subject);
    if (call->header == NULL || (request->json && call->json == NULL)
        || call->strings == NULL) {
        free_call(call);
        return -1;
    }
    memcpy(call->content, request->content, request->content_length);
    call->request.header = (const pb_json *)call->header;
    call->request.json = (const pb_json *)call->json;
    call->request.content = call->content;
    call->request.content_type = json_string_value(json_object_get(call->header, "content-type"));
    call->request.content_encoding = json_string_value(json_object_get(call->header, "content-encoding"));
    if (call->request.content_type == NULL)
        call->request.content_type = request->content_type;
    if (call->request.content_encoding == NULL)
        call->request.content_encoding = request->content_encoding;
    /* The thread writes the answer into memory taken here, from the loop
     * thread's buffers, which get it back when the reply is sent: the
     * thread's own allocations, freed by the loop thread, would shrink and
     * regrow its heap (page faults) with every batch. Without it the
     * thread allocates, as it would for a larger answer. */
    (void)pb_buf_reserve(reply->out, 1);
    if (pb_pool_submit(instance->pool, run_call, call) != 0) {
        free_call(call);
        return -1;
    }
    return 0;
}

int pb_instance_serve(pb_instance *instance)
{
    if (instance->conf != NULL && instance->conf->threads > 0) {
        instance->pool = pb_pool_start(instance->conf->threads, instance->name);
        if (instance->pool == NULL) {
            pb_log_error("plugin %s: cannot start %d threads", instance->name,
                         instance->conf->threads);
            return -1;
        }
    }
    if (instance->module.worker_start != NULL &&
        instance->module.worker_start(instance->state) != PB_OK) {
        pb_log_error("plugin %s: worker_start failed", instance->name);
        pb_pool_stop(instance->pool);
        instance->pool = NULL;
        return -1;
    }
    instance->serving = 1;
    return 0;
}

void pb_instance_unserve(pb_instance *instance)
{
    if (!instance->serving)
        return;
    instance->serving = 0;
    /* The pool's threads answer what is queued for them first: handle()
     * never runs once worker_stop() has. */
    pb_pool_stop(instance->pool);
    instance->pool = NULL;
    if (instance->module.worker_stop != NULL)
        instance->module.worker_stop(instance->state);
}

void pb_plugin_host_cleanup(void)
{
    worker_loop = NULL;
}

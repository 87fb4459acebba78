/*
 * test_hello - tests the hello plugin in-process, without a daemon: loads
 * hello.so the way the daemon does and drives create, handle and destroy
 * through a small host whose JSON values are jansson's.
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <plugboard/plugin.h>

/* pb_json and the other handles are opaque to plugins, so a host is free
 * to give them any shape: here a pb_json is a json_t. */
struct pb_instance {
    char error[256];            /* the last settings_error() */
};

struct pb_reply {
    json_t *json;               /* what reply_json() answered */
    char error[256];            /* the last reply_error() */
};

static json_t *as_json(const pb_json *value)
{
    return (json_t *)value;
}

static void host_log(const pb_instance *instance, pb_log_level level,
                     const char *format, ...)
{
    va_list ap;
    (void)instance;
    fprintf(stderr, "log %d: ", (int)level);
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void host_settings_error(pb_instance *instance, const pb_json *where,
                                const char *format, ...)
{
    va_list ap;
    (void)where;
    va_start(ap, format);
    vsnprintf(instance->error, sizeof instance->error, format, ap);
    va_end(ap);
}

static pb_json_type host_json_type(const pb_json *value)
{
    switch (value == NULL ? -1 : (int)json_typeof(as_json(value))) {
    case JSON_OBJECT:  return PB_JSON_OBJECT;
    case JSON_ARRAY:   return PB_JSON_ARRAY;
    case JSON_STRING:  return PB_JSON_STRING;
    case JSON_INTEGER: return PB_JSON_INTEGER;
    case JSON_REAL:    return PB_JSON_REAL;
    case JSON_TRUE:    return PB_JSON_TRUE;
    case JSON_FALSE:   return PB_JSON_FALSE;
    case JSON_NULL:    return PB_JSON_NULL;
    default:           return PB_JSON_INVALID;
    }
}

static const pb_json *host_json_get(const pb_json *object, const char *key)
{
    return (const pb_json *)json_object_get(as_json(object), key);
}

static const char *host_json_string(const pb_json *value, size_t *length)
{
    if (!json_is_string(as_json(value)))
        return NULL;
    if (length != NULL)
        *length = json_string_length(as_json(value));
    return json_string_value(as_json(value));
}

static size_t host_json_size(const pb_json *value)
{
    json_t *json = as_json(value);
    return json_is_object(json) ? json_object_size(json)
         : json_is_array(json) ? json_array_size(json) : 0;
}

static int host_json_foreach(const pb_json *object,
                             int (*fn)(const char *key, const pb_json *value, void *arg),
                             void *arg)
{
    const char *key;
    json_t *value;
    json_object_foreach(as_json(object), key, value) {
        int rc = fn(key, (const pb_json *)value, arg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static pb_json *host_json_new_object(void)
{
    return (pb_json *)json_object();
}

static pb_json *host_json_new_string(const char *utf8, size_t length)
{
    return (pb_json *)json_stringn(utf8, length);
}

static int host_json_set(pb_json *object, const char *key, pb_json *value)
{
    if (object == NULL || value == NULL) {
        json_decref(as_json(value));
        return PB_ERROR;
    }
    return json_object_set_new(as_json(object), key, as_json(value)) == 0 ? PB_OK : PB_ERROR;
}

static void host_json_free(pb_json *value)
{
    json_decref(as_json(value));
}

static int host_reply_json(pb_reply *reply, pb_json *value)
{
    if (value == NULL)
        return PB_ERROR;
    reply->json = as_json(value);
    return PB_OK;
}

static void host_reply_error(pb_reply *reply, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    vsnprintf(reply->error, sizeof reply->error, format, ap);
    va_end(ap);
}

/* The services hello uses, and json_foreach for checking setting names; a
 * plugin calling another one crashes the test, which is the failure wanted. */
static const pb_host host = {
    .size            = sizeof(pb_host),
    .abi_version     = PLUGBOARD_ABI_VERSION,
    .log             = host_log,
    .settings_error  = host_settings_error,
    .json_type       = host_json_type,
    .json_get        = host_json_get,
    .json_string     = host_json_string,
    .json_size       = host_json_size,
    .json_foreach    = host_json_foreach,
    .json_new_object = host_json_new_object,
    .json_new_string = host_json_new_string,
    .json_set        = host_json_set,
    .json_free       = host_json_free,
    .reply_json      = host_reply_json,
    .reply_error     = host_reply_error,
};

static const pb_plugin *plugin;
static int failures;

static void expect(int ok, const char *what)
{
    printf("%s - %s\n", ok ? "ok" : "FAILED", what);
    if (!ok)
        failures++;
}

/* Creates an instance from settings written as JSON; NULL when refused,
 * with the reason in instance->error. */
static void *create(const char *settings_text, pb_instance *instance)
{
    json_t *settings = json_loads(settings_text, 0, NULL);
    void *state = NULL;
    if (settings == NULL) {
        fprintf(stderr, "test_hello: bad settings JSON: %s\n", settings_text);
        exit(2);
    }
    int rc = plugin->create(&host, instance, (const pb_json *)settings, &state);
    json_decref(settings);
    return rc == PB_OK ? state : NULL;
}

/* Sends one text/json request; returns handle()'s result and the reply. */
static int handle(void *state, const char *content, pb_reply *reply)
{
    json_t *json = json_loads(content, 0, NULL);
    json_t *header = json_pack("{s:s, s:s, s:s, s:i}", "byteorder", "little",
                               "content-type", "text/json",
                               "content-encoding", "utf-8",
                               "content-length", (json_int_t)strlen(content));
    pb_request request = {
        .host = &host,
        .content_type = "text/json",
        .content_encoding = "utf-8",
        .header = (const pb_json *)header,
        .content = (const unsigned char *)content,
        .content_length = strlen(content),
        .json = (const pb_json *)json,
        .listener = "test",
        .framing = PB_FRAMING_FRAME,
    };
    if (json == NULL || header == NULL) {
        fprintf(stderr, "test_hello: cannot build the request for %s\n", content);
        exit(2);
    }
    memset(reply, 0, sizeof *reply);
    int rc = plugin->handle(state, &request, reply);
    json_decref(json);
    json_decref(header);
    return rc;
}

static int result_is(const pb_reply *reply, const char *expected)
{
    const char *result = json_string_value(json_object_get(reply->json, "result"));
    return result != NULL && strcmp(result, expected) == 0 && json_object_size(reply->json) == 1;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "./hello.so";
    void *module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (module == NULL) {
        fprintf(stderr, "test_hello: %s\n", dlerror());
        return 2;
    }
    plugin = dlsym(module, PB_PLUGIN_DESCRIPTOR_SYMBOL);
    if (plugin == NULL || plugin->abi_version != PLUGBOARD_ABI_VERSION) {
        fprintf(stderr, "test_hello: %s: no descriptor for ABI %d\n", path, PLUGBOARD_ABI_VERSION);
        return 2;
    }

    pb_instance instance = { "" };
    pb_reply reply;

    void *state = create("{\"greeting\": \"Good morning\"}", &instance);
    expect(state != NULL, "create() accepts a greeting");
    expect(handle(state, "{\"action\": \"hello\", \"name\": \"Ada\"}", &reply) == PB_OK &&
           result_is(&reply, "Good morning, Ada!"), "answers {\"result\": \"Good morning, Ada!\"}");
    json_decref(reply.json);
    expect(handle(state, "{\"action\": \"hello\", \"name\": 7}", &reply) == PB_ERROR &&
           reply.json == NULL && strcmp(reply.error, "\"name\" must be a string") == 0,
           "refuses a name that is not a string");
    if (plugin->destroy != NULL && state != NULL)
        plugin->destroy(state);

    state = create("{}", &instance);
    expect(state != NULL, "create() without settings");
    expect(handle(state, "{\"action\": \"hello\", \"name\": \"Ada\"}", &reply) == PB_OK &&
           result_is(&reply, "Hello, Ada!"), "greets with \"Hello\" by default");
    json_decref(reply.json);
    if (plugin->destroy != NULL && state != NULL)
        plugin->destroy(state);

    state = create("{\"greeting\": 5}", &instance);
    expect(state == NULL && strcmp(instance.error, "greeting must be a string of at most 63 bytes") == 0,
           "create() refuses a greeting that is not a string");
    state = create("{\"greeting\": \"0123456789012345678901234567890123456789012345678901234567890123\"}", &instance);
    expect(state == NULL, "create() refuses a 64-byte greeting");

    dlclose(module);
    printf("%s\n", failures == 0 ? "all passed" : "some failed");
    return failures == 0 ? 0 : 1;
}

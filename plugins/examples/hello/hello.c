/*
 * hello - an example plugin built outside the Plugboard tree against the
 * installed SDK: answers {"action": "hello", "name": "Ada"} with
 * {"result": "Hello, Ada!"}, the greeting taken from its settings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plugboard/plugin.h>

/* Fixed-size, so that handle() never allocates for the greeting. */
struct hello {
    char greeting[64];
};

static int hello_create(const pb_host *host, pb_instance *instance,
                        const pb_json *settings, void **state)
{
    const char *greeting = "Hello";
    const pb_json *value = host->json_get(settings, "greeting");
    if (value != NULL) {
        greeting = host->json_string(value, NULL);
        if (greeting == NULL || strlen(greeting) >= 64) {
            host->settings_error(instance, value,
                                 "greeting must be a string of at most 63 bytes");
            return PB_ERROR;
        }
    }
    /* "greeting" is the only setting: anything more is a typo. */
    if (host->json_size(settings) > (value != NULL ? 1u : 0u)) {
        host->settings_error(instance, settings,
                             "unknown setting (hello takes only \"greeting\")");
        return PB_ERROR;
    }
    struct hello *hello = calloc(1, sizeof *hello);
    if (hello == NULL) {
        host->settings_error(instance, NULL, "out of memory");
        return PB_ERROR;
    }
    strcpy(hello->greeting, greeting);
    *state = hello;
    return PB_OK;
}

static int hello_handle(void *state, const pb_request *request, pb_reply *reply)
{
    const struct hello *hello = state;
    const pb_host *host = request->host;
    /* request->json is NULL for anything but text/json; json_get and
     * json_string then return NULL too, so one check covers every case. */
    const char *name = host->json_string(host->json_get(request->json, "name"), NULL);
    if (name == NULL) {
        host->reply_error(reply, "\"name\" must be a string");
        return PB_ERROR;
    }
    char text[256];
    int n = snprintf(text, sizeof text, "%s, %s!", hello->greeting, name);
    if (n < 0 || n >= (int)sizeof text) {
        host->reply_error(reply, "name too long");
        return PB_ERROR;
    }
    /* json_set takes ownership of the string even when it fails, and fails
     * when either value is NULL: one check covers both allocations. */
    pb_json *answer = host->json_new_object();
    if (host->json_set(answer, "result", host->json_new_string(text, (size_t)n)) != PB_OK) {
        host->json_free(answer);
        host->reply_error(reply, "out of memory");
        return PB_ERROR;
    }
    return host->reply_json(reply, answer);
}

static void hello_destroy(void *state)
{
    free(state);
}

PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
    PB_PLUGIN_VERSIONED,
    .name        = "hello",
    .description = "greets by name",
    .create      = hello_create,
    .handle      = hello_handle,
    .destroy     = hello_destroy,
};

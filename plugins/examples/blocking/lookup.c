/*
 * lookup.c - an example plugin whose handle() blocks: it reads a data file
 * from disk for every request. {"action": "lookup", "key": "k"} is answered
 * {"result": "v"} from the first line "k<TAB>v" of the file named by the
 * `data_file` setting, read afresh each time, so edits show at once.
 *
 * Give the instance `threads = 4;` (beside `module`) and its handle() runs
 * on four threads per worker: the reads block those threads, never the
 * worker's loop, which goes on serving every other connection.
 *
 * Build: see the Makefile beside it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plugboard/plugin.h>

typedef struct lookup {
    const pb_host *host;
    char path[4096];
} lookup;

static int create(const pb_host *host, pb_instance *instance,
                  const pb_json *settings, void **state)
{
    const pb_json *file = host->json_get(settings, "data_file");
    const char *name = host->json_string(file, NULL);
    if (name == NULL || host->json_size(settings) != 1) {
        host->settings_error(instance, file, "lookup takes one setting, "
                             "\"data_file\", a file name");
        return PB_ERROR;
    }
    lookup *l = calloc(1, sizeof *l);
    if (l == NULL)
        return PB_ERROR;
    l->host = host;
    if (host->resolve_path(instance, name, l->path, sizeof l->path) != PB_OK) {
        host->settings_error(instance, file, "\"data_file\" is too long");
        free(l);
        return PB_ERROR;
    }
    *state = l;
    return PB_OK;
}

/* Runs on one of the instance's threads: it may block. */
static int handle(void *state, const pb_request *request, pb_reply *reply)
{
    lookup *l = state;
    const pb_host *host = l->host;
    size_t key_length;
    const char *key = host->json_string(host->json_get(request->json, "key"), &key_length);
    if (key == NULL) {
        host->reply_error(reply, "lookup needs a string \"key\"");
        return PB_ERROR;
    }
    FILE *fp = fopen(l->path, "r");
    if (fp == NULL) {
        host->reply_error(reply, "cannot read the data file");
        return PB_ERROR;
    }
    char line[4096];
    const char *found = NULL;
    while (found == NULL && fgets(line, sizeof line, fp) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *tab = strchr(line, '\t');
        if (tab != NULL && (size_t)(tab - line) == key_length
            && memcmp(line, key, key_length) == 0)
            found = tab + 1;
    }
    fclose(fp);
    if (found == NULL) {
        host->reply_error(reply, "no entry for this key");
        return PB_ERROR;
    }
    pb_json *o = host->json_new_object();
    host->json_set(o, "result", host->json_new_string(found, strlen(found)));
    return host->reply_json(reply, o);
}

static void destroy(void *state)
{
    free(state);
}

PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
    PB_PLUGIN_VERSIONED,
    .name = "lookup",
    .description = "looks keys up in a data file read for every request",
    .create = create,
    .handle = handle,
    .destroy = destroy,
};

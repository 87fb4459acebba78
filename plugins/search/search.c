/*
 * search - the sockets guide's search: {"action": "search", "value": KEY} is
 * answered with {"result": ANSWER}, the answers coming from the `entries`
 * setting and an optional JSON `data_file` merged over them. Shows checking
 * settings (every mistake reported at its own FILE:LINE), reading a data
 * file in create() so that handle() never blocks, per-instance state,
 * reply_json, and json_encode for replies written once in create().
 *
 *   settings = { entries = ( ("morpheus", "Follow the white rabbit. 🐰") );
 *                data_file = "search.json"; };    # {"key": "answer", ...}
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plugboard/plugin.h>

/* --- The table: UTF-8 key bytes -> answer ------------------------------- */

struct entry {
    char *key;              /* NULL marks an empty slot */
    size_t key_length;
    char *answer;           /* the answer text, then (see encode_replies)
                             * the whole reply {"result": ANSWER} */
    size_t answer_length;
};

/* Open addressing with linear probing, kept at most half full so that a
 * probe always ends at an empty slot. */
struct table {
    struct entry *slots;
    size_t capacity;        /* 0 or a power of two */
    size_t count;
};

static uint64_t hash_bytes(const char *bytes, size_t length)
{
    uint64_t hash = 14695981039346656037u;     /* FNV-1a */
    for (size_t i = 0; i < length; i++) {
        hash ^= (unsigned char)bytes[i];
        hash *= 1099511628211u;
    }
    return hash;
}

/* The slot holding key, or the empty slot where it belongs. */
static struct entry *find_slot(const struct table *table, const char *key,
                               size_t key_length)
{
    size_t mask = table->capacity - 1;
    for (size_t i = hash_bytes(key, key_length) & mask;; i = (i + 1) & mask) {
        struct entry *entry = &table->slots[i];
        if (entry->key == NULL || (entry->key_length == key_length
                                   && memcmp(entry->key, key, key_length) == 0))
            return entry;
    }
}

static int grow(struct table *table)
{
    size_t capacity = table->capacity > 0 ? table->capacity * 2 : 16;
    struct entry *slots = calloc(capacity, sizeof *slots);
    if (slots == NULL)
        return -1;
    struct table bigger = { slots, capacity, table->count };
    for (size_t i = 0; i < table->capacity; i++) {
        const struct entry *entry = &table->slots[i];
        if (entry->key != NULL)
            *find_slot(&bigger, entry->key, entry->key_length) = *entry;
    }
    free(table->slots);
    *table = bigger;
    return 0;
}

static char *copy_bytes(const char *bytes, size_t length)
{
    char *copy = malloc(length + 1);
    if (copy != NULL) {
        memcpy(copy, bytes, length);
        copy[length] = '\0';
    }
    return copy;
}

/* Adds or replaces key's answer; 0, or -1 when out of memory. */
static int table_put(struct table *table, const char *key, size_t key_length,
                     const char *answer, size_t answer_length)
{
    if ((table->count + 1) * 2 > table->capacity && grow(table) != 0)
        return -1;
    char *answer_copy = copy_bytes(answer, answer_length);
    if (answer_copy == NULL)
        return -1;
    struct entry *entry = find_slot(table, key, key_length);
    if (entry->key == NULL) {
        entry->key = copy_bytes(key, key_length);
        if (entry->key == NULL) {
            free(answer_copy);
            return -1;
        }
        entry->key_length = key_length;
        table->count++;
    } else {
        free(entry->answer);
    }
    entry->answer = answer_copy;
    entry->answer_length = answer_length;
    return 0;
}

static const struct entry *table_get(const struct table *table,
                                     const char *key, size_t key_length)
{
    if (table->count == 0)
        return NULL;
    const struct entry *entry = find_slot(table, key, key_length);
    return entry->key != NULL ? entry : NULL;
}

static void table_free(struct table *table)
{
    for (size_t i = 0; i < table->capacity; i++) {
        free(table->slots[i].key);
        free(table->slots[i].answer);
    }
    free(table->slots);
    free(table);
}

/* --- Settings ----------------------------------------------------------- */

/* What create() carries through the json_foreach callbacks. Every mistake
 * is reported, not only the first, so that one `plugboard -t` lists them
 * all. */
struct loader {
    const pb_host *host;
    pb_instance *instance;
    struct table *table;
    int errors;
    const pb_json *data_file;   /* the setting, to point errors in the file at */
    const char *path;           /* the data file, resolved */
};

static int check_setting(const char *key, const pb_json *value, void *arg)
{
    struct loader *loader = arg;
    if (strcmp(key, "entries") != 0 && strcmp(key, "data_file") != 0) {
        loader->host->settings_error(loader->instance, value,
            "unknown setting \"%s\" (search takes entries and data_file)", key);
        loader->errors++;
    }
    return 0;
}

static int add_answer(struct loader *loader, const char *key,
                      size_t key_length, const char *answer,
                      size_t answer_length)
{
    if (table_put(loader->table, key, key_length, answer, answer_length) != 0) {
        loader->host->settings_error(loader->instance, NULL, "out of memory");
        loader->errors++;
        return -1;
    }
    return 0;
}

static void load_entries(struct loader *loader, const pb_json *entries)
{
    const pb_host *host = loader->host;
    if (host->json_type(entries) != PB_JSON_ARRAY) {
        host->settings_error(loader->instance, entries,
                             "entries must be a list of (key, answer) pairs");
        loader->errors++;
        return;
    }
    for (size_t i = 0; i < host->json_size(entries); i++) {
        const pb_json *pair = host->json_at(entries, i);
        /* json_at and json_string return NULL for a value of the wrong
         * kind, so one test covers every malformed shape. */
        size_t key_length, answer_length;
        const char *key = host->json_string(host->json_at(pair, 0), &key_length);
        const char *answer = host->json_string(host->json_at(pair, 1),
                                               &answer_length);
        if (host->json_size(pair) != 2 || key == NULL || answer == NULL) {
            host->settings_error(loader->instance, pair,
                                 "entries[%zu] must be a pair of strings (key, answer)",
                                 i);
            loader->errors++;
        } else if (add_answer(loader, key, key_length, answer, answer_length) != 0) {
            return;
        }
    }
}

static int load_data_member(const char *key, const pb_json *value, void *arg)
{
    struct loader *loader = arg;
    size_t answer_length;
    const char *answer = loader->host->json_string(value, &answer_length);
    if (answer == NULL) {
        loader->host->settings_error(loader->instance, loader->data_file,
                                     "data_file %s: the answer for \"%s\" is not a string",
                                     loader->path, key);
        loader->errors++;
        return 0;
    }
    return add_answer(loader, key, strlen(key), answer, answer_length) != 0;
}

static void load_data_file(struct loader *loader, const pb_json *setting)
{
    const pb_host *host = loader->host;
    const char *name = host->json_string(setting, NULL);
    if (name == NULL) {
        host->settings_error(loader->instance, setting,
                             "data_file must be a string (a file name)");
        loader->errors++;
        return;
    }
    char path[4096];
    if (host->resolve_path(loader->instance, name, path, sizeof path) != PB_OK) {
        host->settings_error(loader->instance, setting,
                             "data_file: path too long: %s", name);
        loader->errors++;
        return;
    }
    char error[512];
    pb_json *data = host->json_load_file(path, error, sizeof error);
    if (data == NULL) {
        host->settings_error(loader->instance, setting, "data_file: %s", error);
        loader->errors++;
        return;
    }
    if (host->json_type(data) != PB_JSON_OBJECT) {
        host->settings_error(loader->instance, setting,
                             "data_file %s must hold a JSON object of key -> answer",
                             path);
        loader->errors++;
    } else {
        loader->data_file = setting;
        loader->path = path;
        host->json_foreach(data, load_data_member, loader);
        loader->path = NULL;
    }
    host->json_free(data);
}

/* The answers never change, so each is encoded as its whole reply once
 * here, and a hit costs handle() one copy instead of building, writing and
 * freeing a JSON object. */
static int encode_replies(const pb_host *host, struct table *table)
{
    for (size_t i = 0; i < table->capacity; i++) {
        struct entry *entry = &table->slots[i];
        if (entry->key == NULL)
            continue;
        pb_json *reply = host->json_new_object();
        if (host->json_set(reply, "result", host->json_new_string(
                entry->answer, entry->answer_length)) != PB_OK) {
            host->json_free(reply);
            return -1;
        }
        size_t length;
        char *bytes = host->json_encode(reply, &length);
        host->json_free(reply);
        if (bytes == NULL)
            return -1;
        free(entry->answer);
        entry->answer = bytes;
        entry->answer_length = length;
    }
    return 0;
}

static int search_create(const pb_host *host, pb_instance *instance,
                         const pb_json *settings, void **state)
{
    if (!PB_HOST_HAS(host, json_encode)) {
        host->settings_error(instance, NULL,
                             "this daemon is too old for this search module");
        return PB_ERROR;
    }
    struct table *table = calloc(1, sizeof *table);
    if (table == NULL) {
        host->settings_error(instance, NULL, "out of memory");
        return PB_ERROR;
    }
    struct loader loader = { host, instance, table, 0, NULL, NULL };
    host->json_foreach(settings, check_setting, &loader);
    const pb_json *entries = host->json_get(settings, "entries");
    if (entries != NULL)
        load_entries(&loader, entries);
    /* Loaded second, so that its answers win over entries with the same key. */
    const pb_json *data_file = host->json_get(settings, "data_file");
    if (data_file != NULL)
        load_data_file(&loader, data_file);
    if (loader.errors == 0 && encode_replies(host, table) != 0) {
        host->settings_error(instance, NULL, "out of memory");
        loader.errors++;
    }
    if (loader.errors > 0) {
        table_free(table);
        return PB_ERROR;
    }
    *state = table;
    return PB_OK;
}

static void search_destroy(void *state)
{
    table_free(state);
}

/* --- Answering ---------------------------------------------------------- */

/* A growable string for building an answer. */
struct text {
    char *data;
    size_t length;
    size_t capacity;
};

/* Appends bytes; 1, or 0 when out of memory (so that steps chain with &&). */
static int text_add(struct text *text, const char *bytes, size_t length)
{
    if (text->capacity - text->length < length) {
        size_t capacity = text->capacity > 0 ? text->capacity : 64;
        while (capacity - text->length < length) {
            if (capacity > SIZE_MAX / 2)
                return 0;
            capacity *= 2;
        }
        char *data = realloc(text->data, capacity);
        if (data == NULL)
            return 0;
        text->data = data;
        text->capacity = capacity;
    }
    if (length > 0)
        memcpy(text->data + text->length, bytes, length);
    text->length += length;
    return 1;
}

static int text_str(struct text *text, const char *s)
{
    return text_add(text, s, strlen(s));
}

/* Appends a value as JSON text. The host's writer is the one every reply
 * goes through, so a float here reads exactly as Python's repr() and as
 * the same float would in a reply. */
static int add_json(const pb_host *host, struct text *text, const pb_json *value)
{
    size_t length;
    char *json = host->json_encode(value, &length);
    int ok = json != NULL && text_add(text, json, length);
    free(json);
    return ok;
}

/* A request value as the guide's f-strings show it: strings as they are,
 * null (or absent) as None, booleans as True and False, numbers as Python
 * prints them, arrays and objects as JSON text. */
static int add_python(const pb_host *host, struct text *text, const pb_json *value)
{
    size_t length;
    const char *s;
    switch (host->json_type(value)) {
    case PB_JSON_STRING:
        s = host->json_string(value, &length);
        return text_add(text, s, length);
    case PB_JSON_NULL:
    case PB_JSON_INVALID: return text_str(text, "None");
    case PB_JSON_TRUE:    return text_str(text, "True");
    case PB_JSON_FALSE:   return text_str(text, "False");
    default:              return add_json(host, text, value);
    }
}

static int reply_result(const pb_host *host, pb_reply *reply,
                        const char *result, size_t length)
{
    pb_json *answer = host->json_new_object();
    /* json_set takes the string even when it fails, so only the object is
     * left to free. */
    if (host->json_set(answer, "result",
                       host->json_new_string(result, length)) != PB_OK) {
        host->json_free(answer);
        host->reply_error(reply, "out of memory");
        return PB_ERROR;
    }
    return host->reply_json(reply, answer);
}

static int search_handle(void *state, const pb_request *request,
                         pb_reply *reply)
{
    const struct table *table = state;
    const pb_host *host = request->host;
    if (host->json_type(request->json) != PB_JSON_OBJECT) {
        host->reply_error(reply, "search needs text/json content holding an object");
        return PB_ERROR;
    }
    const pb_json *action = host->json_get(request->json, "action");
    const pb_json *value = host->json_get(request->json, "value");
    size_t action_length;
    const char *action_name = host->json_string(action, &action_length);

    struct text text = { NULL, 0, 0 };
    int ok;
    if (action_name != NULL && action_length == 6
        && memcmp(action_name, "search", 6) == 0) {
        size_t key_length;
        const char *key = host->json_string(value, &key_length);
        const struct entry *entry = key != NULL
                                    ? table_get(table, key, key_length) : NULL;
        if (entry != NULL)
            return host->reply_bytes(reply, "text/json", "utf-8",
                                     entry->answer, entry->answer_length);
        ok = text_str(&text, "No match for \"")
             && add_python(host, &text, value)
             && text_str(&text, "\".");
    } else {
        ok = text_str(&text, "Error: invalid action \"")
             && add_python(host, &text, action)
             && text_str(&text, "\".");
    }
    int rc;
    if (ok) {
        rc = reply_result(host, reply, text.data, text.length);
    } else {
        host->reply_error(reply, "out of memory");
        rc = PB_ERROR;
    }
    free(text.data);
    return rc;
}

PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
    PB_PLUGIN_VERSIONED,
    .name        = "search",
    .description = "the sockets guide's search: answers keys from a table",
    .create      = search_create,
    .handle      = search_handle,
    .destroy     = search_destroy,
};

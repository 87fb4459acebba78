/*
 * prometheus.c - the statistics snapshot as Prometheus text (exposition
 * format 0.0.4): the daemon's counters as fixed families, each with
 * # HELP and # TYPE, and plugins' metrics mapped by one rule:
 *
 *   - the family is plugboard_<module>_<metric>, with "_total" appended to
 *     a counter's name unless it ends so already. <module> is the
 *     instance's module as its descriptor names it, or the instance's name
 *     when the snapshot does not say;
 *   - a counter is a Prometheus counter, a gauge or a shared level a
 *     gauge, a metric the snapshot gives no kind for is untyped;
 *   - an instance whose name is not its module's gets an `instance` label
 *     with its name, so that two instances of one module share a family;
 *   - a labelled metric's label goes in a label named after the module:
 *     the queue plugin's "ready" of the queue "jobs" is
 *     plugboard_queue_ready{queue="jobs"};
 *   - a character a name may not hold becomes '_'. A plugin family that
 *     would take the name of one of the daemon's own is left out, and so
 *     is a second series of one family with the same labels.
 *
 * A pure function of the snapshot: a member the snapshot lacks leaves its
 * families out.
 */
#include "prometheus.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Appends to out until something fails for want of memory; the caller
 * then takes back all that was written. */
typedef struct writer {
    pb_buf *out;
    int failed;
} writer;

static void put(writer *w, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void put(writer *w, const char *format, ...)
{
    size_t room = 256;
    while (!w->failed) {
        if (pb_buf_reserve(w->out, room) != 0) {
            w->failed = 1;
            return;
        }
        va_list ap;
        va_start(ap, format);
        int n = vsnprintf((char *)w->out->data + w->out->len, room, format, ap);
        va_end(ap);
        if (n < 0) {
            w->failed = 1;
        } else if ((size_t)n < room) {
            w->out->len += (size_t)n;
            return;
        }
        room = (size_t)n + 1;
    }
}

static void put_bytes(writer *w, const char *bytes, size_t n)
{
    if (!w->failed && pb_buf_append(w->out, bytes, n) != 0)
        w->failed = 1;
}

/* A label value: backslash, double quote and newline escaped. */
static void put_label_value(writer *w, const char *value)
{
    for (const char *p = value; *p != '\0'; p++) {
        size_t plain = strcspn(p, "\\\"\n");
        put_bytes(w, p, plain);
        p += plain;
        if (*p == '\0')
            return;
        put(w, "%s", *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : "\\n");
    }
}

/* Text of a # HELP line: backslash and newline escaped. */
static void put_help_text(writer *w, const char *text)
{
    for (const char *p = text; *p != '\0'; p++) {
        size_t plain = strcspn(p, "\\\n");
        put_bytes(w, p, plain);
        p += plain;
        if (*p == '\0')
            return;
        put(w, "%s", *p == '\\' ? "\\\\" : "\\n");
    }
}

/* A number as the format writes it; 0 when the member is not a number. */
static int put_number(writer *w, const json_t *value)
{
    if (json_is_integer(value))
        put(w, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
    else if (json_is_real(value))
        put(w, "%.15g", json_real_value(value));
    else
        return 0;
    return 1;
}

static void family(writer *w, const char *name, const char *type, const char *help)
{
    put(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{k1="v1",...} value: labels as n key and value pairs. A value that
 * is not a number leaves the series out. */
static void series(writer *w, const char *name, const char *const *labels, size_t n,
                   const json_t *value)
{
    if (!json_is_number(value))
        return;
    put(w, "%s", name);
    for (size_t i = 0; i < n; i++) {
        put(w, "%s%s=\"", i == 0 ? "{" : ",", labels[2 * i]);
        put_label_value(w, labels[2 * i + 1]);
        put(w, "\"");
    }
    put(w, "%s ", n > 0 ? "}" : "");
    put_number(w, value);
    put(w, "\n");
}

/* An unlabelled family of one series, from a member of the snapshot. */
static void single(writer *w, const char *name, const char *type, const char *help,
                   const json_t *value)
{
    if (!json_is_number(value))
        return;
    family(w, name, type, help);
    series(w, name, NULL, 0, value);
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* An object's keys in order, so that the output does not depend on how the
 * snapshot was built; NULL when it has none or on failure (noted). */
static const char **sorted_keys(writer *w, const json_t *object, size_t *n)
{
    *n = json_is_object(object) ? json_object_size(object) : 0;
    if (*n == 0)
        return NULL;
    const char **keys = malloc(*n * sizeof *keys);
    if (keys == NULL) {
        w->failed = 1;
        *n = 0;
        return NULL;
    }
    size_t i = 0;
    const char *key;
    const json_t *member;
    json_object_foreach((json_t *)object, key, member)
        keys[i++] = key;
    qsort(keys, *n, sizeof *keys, by_string);
    return keys;
}

/* A family with one series per member of object: its `field` (or the
 * member itself when field is NULL), labelled label=<member's key>. */
static void by_key(writer *w, const char *name, const char *type, const char *help,
                   const json_t *object, const char *label, const char *field)
{
    if (!json_is_object(object))
        return;
    family(w, name, type, help);
    size_t n;
    const char **keys = sorted_keys(w, object, &n);
    for (size_t i = 0; i < n; i++) {
        const json_t *member = json_object_get(object, keys[i]);
        const char *labels[] = { label, keys[i] };
        series(w, name, labels, 1, field ? json_object_get(member, field) : member);
    }
    free(keys);
}

/* --- Messages by route --------------------------------------------------- */

/* A route is named "N: TYPE [action A] -> INSTANCE": the instance is what
 * follows the last arrow. */
static const char *route_instance(const char *route)
{
    const char *arrow = NULL;
    for (const char *p = strstr(route, " -> "); p != NULL; p = strstr(p + 1, " -> "))
        arrow = p;
    return arrow != NULL ? arrow + 4 : "";
}

static void messages(writer *w, const json_t *routes)
{
    if (!json_is_object(routes))
        return;
    family(w, "plugboard_messages_total", "counter",
           "Messages routed, by route and the plugin instance it leads to.");
    size_t n;
    const char **keys = sorted_keys(w, routes, &n);
    for (size_t i = 0; i < n; i++) {
        const char *labels[] = { "route", keys[i], "plugin", route_instance(keys[i]) };
        series(w, "plugboard_messages_total", labels, 2,
               json_object_get(json_object_get(routes, keys[i]), "messages"));
    }
    free(keys);
}

/* --- Request durations ------------------------------------------------------ */

#define DURATION "plugboard_request_duration_seconds"

static void histogram(writer *w, const char *plugin, const json_t *latency)
{
    const json_t *buckets = json_object_get(latency, "buckets");
    size_t i;
    const json_t *bucket;
    json_array_foreach(buckets, i, bucket) {
        const json_t *bound = json_array_get(bucket, 0);
        const json_t *count = json_array_get(bucket, 1);
        if (!json_is_integer(count))
            continue;
        put(w, DURATION "_bucket{plugin=\"");
        put_label_value(w, plugin);
        put(w, "\",le=\"");
        if (!put_number(w, bound))
            put(w, "+Inf");
        put(w, "\"} %" JSON_INTEGER_FORMAT "\n", json_integer_value(count));
    }
    const char *labels[] = { "plugin", plugin };
    series(w, DURATION "_sum", labels, 1, json_object_get(latency, "sum"));
    series(w, DURATION "_count", labels, 1, json_object_get(latency, "count"));
}

static void durations(writer *w, const json_t *plugins)
{
    size_t n;
    const char **keys = sorted_keys(w, plugins, &n);
    int headed = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *latency = json_object_get(json_object_get(plugins, keys[i]), "latency");
        if (!json_is_object(latency))
            continue;
        if (!headed)
            family(w, DURATION, "histogram",
                   "Time from a request reaching its plugin instance to its reply "
                   "being queued for the client.");
        headed = 1;
        histogram(w, keys[i], latency);
    }
    free(keys);
}

/* --- Plugins' metrics --------------------------------------------------------- */

/* The daemon's own names, which no plugin family may take. */
static const char *const own_names[] = {
    "plugboard_up", "plugboard_build_info", "plugboard_uptime_seconds",
    "plugboard_workers", "plugboard_generation", "plugboard_reloads_total",
    "plugboard_reload_failures_total", "plugboard_worker_restarts_total",
    "plugboard_connections_open", "plugboard_connections_total",
    "plugboard_connections_refused_total", "plugboard_messages_total",
    "plugboard_errors_total", "plugboard_received_bytes_total",
    "plugboard_sent_bytes_total", DURATION, DURATION "_bucket", DURATION "_sum",
    DURATION "_count",
};

static int own_name(const char *name)
{
    for (size_t i = 0; i < sizeof own_names / sizeof own_names[0]; i++)
        if (strcmp(own_names[i], name) == 0)
            return 1;
    return 0;
}

/* One series of a plugin's metric, gathered so that a family's series,
 * from every instance, are written together under one header. */
typedef struct plugin_series {
    char *family;
    const char *type;
    const char *module;         /* as the snapshot names it, for the help */
    const char *metric;
    char *labels;               /* "{...}" or "" */
    const json_t *value;
} plugin_series;

typedef struct series_list {
    plugin_series *items;
    size_t n, cap;
} series_list;

/* s with every character a Prometheus name may not hold made '_'
 * (malloc'd; NULL when out of memory). */
static char *name_part(const char *s)
{
    char *out = strdup(s);
    for (char *p = out; p != NULL && *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '_'))
            *p = '_';
    return out;
}

static const char *prometheus_type(const char *kind)
{
    if (kind == NULL)
        return "untyped";
    return strcmp(kind, "counter") == 0 ? "counter" : "gauge";
}

static char *family_name(const char *module, const char *metric, const char *type)
{
    char *m = name_part(module), *n = name_part(metric);
    char *name = NULL;
    size_t len = n ? strlen(n) : 0;
    int total = strcmp(type, "counter") == 0 &&
                !(len >= 6 && strcmp(n + len - 6, "_total") == 0);
    if (m != NULL && n != NULL &&
        asprintf(&name, "plugboard_%s_%s%s", m, n, total ? "_total" : "") < 0)
        name = NULL;
    free(m);
    free(n);
    return name;
}

/* The label set of a series, as written: instance first, then the
 * metric's label under the module's name. */
static char *label_set(const char *instance, const char *label_name, const char *label)
{
    pb_buf buf = PB_BUF_INIT;
    writer w = { &buf, 0 };
    if (instance != NULL || label != NULL)
        put(&w, "{");
    if (instance != NULL) {
        put(&w, "instance=\"");
        put_label_value(&w, instance);
        put(&w, "\"%s", label != NULL ? "," : "");
    }
    if (label != NULL) {
        put(&w, "%s=\"", label_name);
        put_label_value(&w, label);
        put(&w, "\"");
    }
    if (instance != NULL || label != NULL)
        put(&w, "}");
    char *text = w.failed ? NULL : strndup(buf.data ? (char *)pb_buf_head(&buf) : "",
                                           pb_buf_used(&buf));
    pb_buf_free(&buf);
    return text;
}

static void add_series(writer *w, series_list *list, const char *module,
                       const char *instance, const char *metric, const char *kind,
                       const char *label_name, const char *label, const json_t *value)
{
    if (w->failed || !json_is_number(value))
        return;
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        plugin_series *items = realloc(list->items, cap * sizeof *items);
        if (items == NULL) {
            w->failed = 1;
            return;
        }
        list->items = items;
        list->cap = cap;
    }
    plugin_series *s = &list->items[list->n];
    s->type = prometheus_type(kind);
    s->family = family_name(module, metric, s->type);
    s->labels = label_set(instance, label_name, label);
    s->module = module;
    s->metric = metric;
    s->value = value;
    if (s->family == NULL || s->labels == NULL) {
        free(s->family);
        free(s->labels);
        w->failed = 1;
        return;
    }
    list->n++;
}

/* The label a module's labelled metrics go under: its name, unless that
 * is no label name or is taken by the instance label. */
static char *module_label(const char *module)
{
    char *name = name_part(module);
    if (name == NULL)
        return NULL;
    if (name[0] == '\0' || (name[0] >= '0' && name[0] <= '9') ||
        strncmp(name, "__", 2) == 0 || strcmp(name, "instance") == 0) {
        free(name);
        return strdup("label");
    }
    return name;
}

static void gather_instance(writer *w, series_list *list, const char *instance,
                            const json_t *entry)
{
    const json_t *metrics = json_object_get(entry, "metrics");
    const json_t *kinds = json_object_get(entry, "metric_kinds");
    const char *module = json_string_value(json_object_get(entry, "module"));
    if (module == NULL)
        module = instance;
    const char *named = strcmp(module, instance) != 0 ? instance : NULL;
    char *label_name = module_label(module);
    if (label_name == NULL) {
        w->failed = 1;
        return;
    }
    size_t n;
    const char **keys = sorted_keys(w, metrics, &n);
    for (size_t i = 0; i < n; i++) {
        const json_t *value = json_object_get(metrics, keys[i]);
        const char *kind = json_string_value(json_object_get(kinds, keys[i]));
        if (!json_is_object(value)) {
            add_series(w, list, module, named, keys[i], kind, NULL, NULL, value);
            continue;
        }
        size_t n_labels;
        const char **labels = sorted_keys(w, value, &n_labels);
        for (size_t j = 0; j < n_labels; j++)
            add_series(w, list, module, named, keys[i], kind, label_name, labels[j],
                       json_object_get(value, labels[j]));
        free(labels);
    }
    free(keys);
    free(label_name);
}

static int series_order(const void *a, const void *b)
{
    const plugin_series *x = a, *y = b;
    int c = strcmp(x->family, y->family);
    return c != 0 ? c : strcmp(x->labels, y->labels);
}

static void plugin_metrics(writer *w, const json_t *plugins)
{
    series_list list = { NULL, 0, 0 };
    size_t n;
    const char **keys = sorted_keys(w, plugins, &n);
    for (size_t i = 0; i < n; i++)
        gather_instance(w, &list, keys[i], json_object_get(plugins, keys[i]));
    free(keys);
    if (list.n > 1)
        qsort(list.items, list.n, sizeof *list.items, series_order);
    for (size_t i = 0; i < list.n; i++) {
        const plugin_series *s = &list.items[i];
        int first = i == 0 || strcmp(s->family, list.items[i - 1].family) != 0;
        if (own_name(s->family) || (!first && strcmp(s->labels, list.items[i - 1].labels) == 0))
            continue;
        if (first) {
            /* The names as the plugin gave them, which may hold what the
             * family's name could not. */
            put(w, "# HELP %s Metric \"", s->family);
            put_help_text(w, s->metric);
            put(w, "\" of the ");
            put_help_text(w, s->module);
            put(w, " plugin.\n# TYPE %s %s\n", s->family, s->type);
        }
        put(w, "%s%s ", s->family, s->labels);
        put_number(w, s->value);
        put(w, "\n");
    }
    for (size_t i = 0; i < list.n; i++) {
        free(list.items[i].family);
        free(list.items[i].labels);
    }
    free(list.items);
}

/* --- The whole -------------------------------------------------------------------- */

static void build_info(writer *w, const json_t *snapshot)
{
    const char *version = json_string_value(json_object_get(snapshot, "version"));
    const json_t *abi = json_object_get(snapshot, "abi");
    if (version == NULL || !json_is_integer(abi))
        return;
    char abi_text[32];
    snprintf(abi_text, sizeof abi_text, "%" JSON_INTEGER_FORMAT, json_integer_value(abi));
    family(w, "plugboard_build_info", "gauge",
           "The daemon's version and plugin ABI, as labels; always 1.");
    const char *labels[] = { "version", version, "abi", abi_text };
    json_t *one = json_integer(1);
    if (one == NULL)
        w->failed = 1;
    series(w, "plugboard_build_info", labels, 2, one);
    json_decref(one);
}

int pb_prometheus_write(pb_buf *out, const json_t *snapshot)
{
    /* Growing the buffer may move its unread part: the mark is relative
     * to where that starts. */
    size_t mark = pb_buf_used(out);
    writer w = { out, 0 };
    const json_t *connections = json_object_get(snapshot, "connections");
    const json_t *bytes = json_object_get(snapshot, "bytes");
    const json_t *plugins = json_object_get(snapshot, "plugins");

    family(&w, "plugboard_up", "gauge", "Whether the daemon answered; always 1.");
    put(&w, "plugboard_up 1\n");
    build_info(&w, snapshot);
    single(&w, "plugboard_uptime_seconds", "gauge", "Seconds since the daemon started.",
           json_object_get(snapshot, "uptime"));
    single(&w, "plugboard_workers", "gauge", "Worker processes running.",
           json_object_get(snapshot, "workers"));
    single(&w, "plugboard_generation", "gauge",
           "The configuration served: 1 at start, one more for each reload.",
           json_object_get(snapshot, "generation"));
    single(&w, "plugboard_reloads_total", "counter", "Configuration reloads applied.",
           json_object_get(snapshot, "reloads"));
    single(&w, "plugboard_reload_failures_total", "counter",
           "Configuration reloads refused or failed.",
           json_object_get(snapshot, "failed_reloads"));
    single(&w, "plugboard_worker_restarts_total", "counter",
           "Workers restarted after exiting unexpectedly.",
           json_object_get(snapshot, "worker_restarts"));
    const json_t *listeners = json_object_get(snapshot, "listeners");
    by_key(&w, "plugboard_connections_open", "gauge", "Client connections open, by listener.",
           listeners, "listener", "open");
    by_key(&w, "plugboard_connections_total", "counter",
           "Client connections accepted, by listener.", listeners, "listener", "accepted");
    by_key(&w, "plugboard_connections_refused_total", "counter",
           "Client connections refused: busy (max_connections), allow (not in the "
           "listener's allow list), tls (handshake failed).",
           json_object_get(connections, "refused_by"), "reason", NULL);
    messages(&w, json_object_get(snapshot, "routes"));
    by_key(&w, "plugboard_errors_total", "counter", "Errors answered, by error code.",
           json_object_get(snapshot, "errors"), "code", NULL);
    single(&w, "plugboard_received_bytes_total", "counter", "Bytes read from clients.",
           json_object_get(bytes, "in"));
    single(&w, "plugboard_sent_bytes_total", "counter", "Bytes written to clients.",
           json_object_get(bytes, "out"));
    durations(&w, plugins);
    plugin_metrics(&w, plugins);

    if (w.failed) {
        pb_buf_truncate(out, out->start + mark);
        return -1;
    }
    return 0;
}

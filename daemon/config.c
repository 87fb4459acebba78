/*
 * config.c - reads the libconfig file (plugboard.conf(5)) into a pb_config:
 * every key, type, range and reference between sections is checked, and
 * each mistake is reported as FILE:LINE before anything is used.
 */
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plugboard/plugin.h>

#include "config.h"
#include "json_dump.h"
#include "log.h"

#define DEFAULT_PIDFILE "/run/plugboard/plugboard.pid"

enum { INVALID = -1, ABSENT = 0, PRESENT = 1 };

/* Where a diagnostic points: sections are checked in the order their
 * references need, but reported in the order of the file. */
typedef struct mark {
    size_t file;        /* index in config->files */
    int line;
    size_t index;       /* in diag->lines */
} mark;

typedef struct loader {
    pb_config *config;
    const config_t *cf;
    pb_diag *diag;
    int errors;
    mark *marks;
    size_t n_marks;
    int unordered;      /* some diagnostic has no mark */
} loader;

static const char *const top_keys[] = {
    "plugin_dir", "user", "group", "pidfile", "workers", "log", "limits",
    "listeners", "plugins", "routes", NULL
};
static const char *const log_keys[] = { "level", "target", "facility", NULL };
static const char *const limits_keys[] = {
    "max_connections", "max_message_bytes", "idle_timeout",
    "max_pending_output", "shutdown_timeout", "max_inflight", NULL
};
static const char *const listener_keys[] = {
    "name", "address", "port", "path", "mode", "framing", "plugin", "allow",
    "tls", "reuseport", NULL
};
static const char *const tls_keys[] = {
    "certificate", "key", "ca", "verify_client", "min_version", NULL
};
static const char *const plugin_keys[] = {
    "name", "module", "threads", "settings", NULL
};
static const char *const route_keys[] = {
    "content_type", "action", "plugin", "listeners", NULL
};

static const pb_conf_word targets[] = {
    { "stderr", PB_LOG_STDERR }, { "syslog", PB_LOG_SYSLOG }, { NULL, 0 }
};
static const pb_conf_word framings[] = {
    { "frame", PB_FRAME }, { "line", PB_LINE }, { "http", PB_HTTP },
    { NULL, 0 }
};
static const pb_conf_word verify_words[] = {
    { "none", PB_VERIFY_NONE }, { "optional", PB_VERIFY_OPTIONAL },
    { "require", PB_VERIFY_REQUIRE }, { NULL, 0 }
};
static const pb_conf_word tls_versions[] = {
    { "1.2", PB_TLS_1_2 }, { "1.3", PB_TLS_1_3 }, { NULL, 0 }
};

/* --- Reporting ------------------------------------------------------------ */

/* The name under which a setting's file is kept in config->files: libconfig
 * names the main file NULL and an included file as written in @include,
 * which it resolves against the include directory, i.e. the config's. */
static const char *file_of(const loader *ld, const config_setting_t *s)
{
    const char *raw = config_setting_source_file(s);
    for (unsigned i = 0; raw && i < ld->cf->num_filenames; i++)
        if (ld->cf->filenames[i] == raw)
            return ld->config->files[i + 1];
    return ld->config->files[0];
}

static pb_conf_pos position(const loader *ld, const config_setting_t *s)
{
    pb_conf_pos pos = { file_of(ld, s), (int)config_setting_source_line(s) };
    return pos;
}

static void mark_line(loader *ld, const char *file, int line, size_t index)
{
    mark *grown = realloc(ld->marks, (ld->n_marks + 1) * sizeof *grown);
    if (!grown) {
        ld->unordered = 1;
        return;
    }
    ld->marks = grown;
    size_t f = 0;
    while (f < ld->config->n_files && ld->config->files[f] != file)
        f++;
    grown[ld->n_marks].file = f;
    grown[ld->n_marks].line = line;
    grown[ld->n_marks].index = index;
    ld->n_marks++;
}

__attribute__((format(printf, 4, 0)))
static void vreport(loader *ld, const char *file, int line,
                    const char *format, va_list ap)
{
    char message[1024];
    vsnprintf(message, sizeof message, format, ap);
    size_t index = ld->diag->count;
    pb_diag_add(ld->diag, file, line, "%s", message);
    ld->errors++;
    if (ld->diag->count == index + 1)
        mark_line(ld, file, line, index);
    else
        ld->unordered = 1;
}

static int by_position(const void *a, const void *b)
{
    const mark *x = a, *y = b;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Sorts this load's diagnostics, which are the last n_marks lines of diag,
 * by file and line; without a mark for each, they keep the checking order. */
static void order_diagnostics(loader *ld)
{
    if (ld->unordered || ld->n_marks < 2)
        return;
    char **sorted = malloc(ld->n_marks * sizeof *sorted);
    if (!sorted)
        return;
    qsort(ld->marks, ld->n_marks, sizeof *ld->marks, by_position);
    for (size_t i = 0; i < ld->n_marks; i++)
        sorted[i] = ld->diag->lines[ld->marks[i].index];
    memcpy(ld->diag->lines + ld->diag->count - ld->n_marks, sorted,
           ld->n_marks * sizeof *sorted);
    free(sorted);
}

__attribute__((format(printf, 3, 4)))
static void error_at(loader *ld, const config_setting_t *s,
                     const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    vreport(ld, file_of(ld, s), (int)config_setting_source_line(s), format, ap);
    va_end(ap);
}

__attribute__((format(printf, 3, 4)))
static void error_pos(loader *ld, pb_conf_pos pos, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    vreport(ld, pos.file, pos.line, format, ap);
    va_end(ap);
}

static void out_of_memory(loader *ld)
{
    pb_diag_add(ld->diag, ld->config->path, 0, "out of memory");
    ld->errors++;
    ld->unordered = 1;
}

/* --- Small helpers ---------------------------------------------------------- */

static char *copy(loader *ld, const char *s)
{
    char *c = strdup(s);
    if (!c)
        out_of_memory(ld);
    return c;
}

/* dir + "/" + rest, without doubling a slash that dir already ends with. */
static char *join(const char *dir, const char *rest, const char *suffix)
{
    size_t d = strlen(dir), r = strlen(rest), s = strlen(suffix);
    int slash = d > 0 && dir[d - 1] != '/';
    char *out = malloc(d + (size_t)slash + r + s + 1);
    if (!out)
        return NULL;
    memcpy(out, dir, d);
    if (slash)
        out[d] = '/';
    memcpy(out + d + (size_t)slash, rest, r);
    memcpy(out + d + (size_t)slash + r, suffix, s + 1);
    return out;
}

/* A path from the file: absolute as written, relative against its dir. */
static char *resolve(loader *ld, const char *value)
{
    char *out = value[0] == '/' ? strdup(value) : join(ld->config->dir, value, "");
    if (!out)
        out_of_memory(ld);
    return out;
}

static char *directory_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* Levenshtein distance; a name far longer than every key is no typo of one. */
static unsigned edit_distance(const char *a, const char *b)
{
    enum { MAX = 64 };
    size_t n = strlen(a), m = strlen(b);
    if (n > MAX || m > MAX)
        return UINT_MAX;
    unsigned row[MAX + 1];
    for (size_t j = 0; j <= m; j++)
        row[j] = (unsigned)j;
    for (size_t i = 1; i <= n; i++) {
        unsigned prev = row[0];
        row[0] = (unsigned)i;
        for (size_t j = 1; j <= m; j++) {
            unsigned up = row[j];
            unsigned best = prev + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = up;
        }
    }
    return row[m];
}

static int is_known(const char *name, const char *const *known)
{
    for (size_t i = 0; known[i]; i++)
        if (strcmp(name, known[i]) == 0)
            return 1;
    return 0;
}

/* Reports every member of group that the schema does not name, with the
 * closest known key as a hint for typos. */
static void check_keys(loader *ld, const config_setting_t *group,
                       const char *const *known, const char *where)
{
    for (int i = 0; i < config_setting_length(group); i++) {
        const config_setting_t *m = config_setting_get_elem(group, i);
        const char *name = config_setting_name(m);
        if (is_known(name, known))
            continue;
        const char *hint = NULL;
        unsigned best = 3;
        for (size_t k = 0; known[k]; k++) {
            unsigned d = edit_distance(name, known[k]);
            if (d < best) {
                best = d;
                hint = known[k];
            }
        }
        if (hint)
            error_at(ld, m, "unknown key \"%s\" %s (did you mean \"%s\"?)",
                     name, where, hint);
        else
            error_at(ld, m, "unknown key \"%s\" %s", name, where);
    }
}

/* --- Typed members ---------------------------------------------------------- */

static int is_integer(const config_setting_t *s)
{
    int t = config_setting_type(s);
    return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
}

/* An empty list is written "()" but "[]" reads as an empty array. */
static int is_list(const config_setting_t *s)
{
    int t = config_setting_type(s);
    return t == CONFIG_TYPE_LIST
        || (t == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0);
}

static int get_string(loader *ld, const config_setting_t *group,
                      const char *key, const char **value,
                      const config_setting_t **where)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (!s)
        return ABSENT;
    if (where)
        *where = s;
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        error_at(ld, s, "\"%s\" must be a string", key);
        return INVALID;
    }
    *value = config_setting_get_string(s);
    return PRESENT;
}

/* A string that names something (a file, a user, an instance): empty is as
 * good as a typo. */
static int get_name(loader *ld, const config_setting_t *group, const char *key,
                    const char **value, const config_setting_t **where)
{
    const config_setting_t *s = NULL;
    int rc = get_string(ld, group, key, value, &s);
    if (where && rc != ABSENT)
        *where = s;
    if (rc == PRESENT && (*value)[0] == '\0') {
        error_at(ld, s, "\"%s\" must not be empty", key);
        return INVALID;
    }
    return rc;
}

static int get_int(loader *ld, const config_setting_t *group, const char *key,
                   long long min, long long max, long long *value,
                   const config_setting_t **where)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (!s)
        return ABSENT;
    if (where)
        *where = s;
    if (!is_integer(s)) {
        error_at(ld, s, "\"%s\" must be an integer", key);
        return INVALID;
    }
    long long v = config_setting_get_int64(s);
    if (v < min || v > max) {
        if (max == LLONG_MAX)
            error_at(ld, s, "\"%s\" must be at least %lld", key, min);
        else
            error_at(ld, s, "\"%s\" must be between %lld and %lld", key, min, max);
        return INVALID;
    }
    *value = v;
    return PRESENT;
}

/* A count of seconds, written as an integer or a float. */
static int get_seconds(loader *ld, const config_setting_t *group,
                       const char *key, double *value)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (!s)
        return ABSENT;
    double v;
    if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
        v = config_setting_get_float(s);
    else if (is_integer(s))
        v = (double)config_setting_get_int64(s);
    else {
        error_at(ld, s, "\"%s\" must be a number", key);
        return INVALID;
    }
    if (!(v >= 0) || !isfinite(v)) {
        error_at(ld, s, "\"%s\" must be a finite number of seconds, at least 0", key);
        return INVALID;
    }
    *value = v;
    return PRESENT;
}

/* One of a fixed set of words; *choice is the one written. */
static int get_choice(loader *ld, const config_setting_t *group,
                      const char *key, const pb_conf_word *words,
                      const pb_conf_word **choice)
{
    const char *value;
    const config_setting_t *s;
    int rc = get_string(ld, group, key, &value, &s);
    if (rc != PRESENT)
        return rc;
    for (const pb_conf_word *w = words; w->name; w++) {
        if (strcmp(value, w->name) == 0) {
            *choice = w;
            return PRESENT;
        }
    }
    char list[256] = "";
    size_t used = 0;
    for (int i = 0; words[i].name && used < sizeof list; i++) {
        const char *sep = i == 0 ? "" : words[i + 1].name ? ", " : " or ";
        int n = snprintf(list + used, sizeof list - used, "%s\"%s\"", sep,
                         words[i].name);
        if (n > 0)
            used += (size_t)n;
    }
    error_at(ld, s, "\"%s\" must be %s, not \"%s\"", key, list, value);
    return INVALID;
}

static int get_group(loader *ld, const config_setting_t *parent,
                     const char *key, const config_setting_t **group)
{
    const config_setting_t *s = config_setting_get_member(parent, key);
    if (!s)
        return ABSENT;
    if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
        error_at(ld, s, "\"%s\" must be a group: %s = { ... };", key, key);
        return INVALID;
    }
    *group = s;
    return PRESENT;
}

static int get_list(loader *ld, const config_setting_t *parent,
                    const char *key, const config_setting_t **list)
{
    const config_setting_t *s = config_setting_get_member(parent, key);
    if (!s)
        return ABSENT;
    if (!is_list(s)) {
        error_at(ld, s, "\"%s\" must be a list of groups: %s = ( { ... }, ... );",
                 key, key);
        return INVALID;
    }
    *list = s;
    return PRESENT;
}

/* Sets *field to a resolved or copied string when the member is valid. */
static void take_string(loader *ld, char **field, const char *value, int path)
{
    char *v = path ? resolve(ld, value) : copy(ld, value);
    if (v) {
        free(*field);
        *field = v;
    }
}

/* --- Top level, log, limits ------------------------------------------------- */

static void load_top(loader *ld, const config_setting_t *root)
{
    pb_config *c = ld->config;
    const char *value;
    long long n;

    if (get_name(ld, root, "plugin_dir", &value, NULL) == PRESENT)
        take_string(ld, &c->plugin_dir, value, 1);
    const config_setting_t *where;
    int has_user = get_name(ld, root, "user", &value, &where);
    if (has_user == PRESENT) {
        take_string(ld, &c->user, value, 0);
        c->user_pos = position(ld, where);
    }
    if (get_name(ld, root, "group", &value, &where) == PRESENT) {
        take_string(ld, &c->group, value, 0);
        c->group_pos = position(ld, where);
        /* setgid alone would leave the workers running as root. */
        if (has_user == ABSENT)
            error_at(ld, where, "\"group\" without \"user\": set \"user\" "
                     "too, or neither");
    }
    if (get_name(ld, root, "pidfile", &value, NULL) == PRESENT)
        take_string(ld, &c->pidfile, value, 1);
    if (get_int(ld, root, "workers", 0, LLONG_MAX, &n, NULL) == PRESENT)
        c->workers = n;
}

static void load_log(loader *ld, const config_setting_t *root)
{
    pb_config *c = ld->config;
    const config_setting_t *log;
    const pb_conf_word *w;

    if (get_group(ld, root, "log", &log) != PRESENT)
        return;
    check_keys(ld, log, log_keys, "in log");
    if (get_choice(ld, log, "level", pb_log_levels, &w) == PRESENT)
        c->log_level = w->value;
    if (get_choice(ld, log, "target", targets, &w) == PRESENT)
        c->log_target = (pb_log_target)w->value;
    if (get_choice(ld, log, "facility", pb_log_facilities, &w) == PRESENT)
        take_string(ld, &c->log_facility, w->name, 0);
}

static void load_limits(loader *ld, const config_setting_t *root)
{
    pb_limits *l = &ld->config->limits;
    const config_setting_t *limits;

    if (get_group(ld, root, "limits", &limits) != PRESENT)
        return;
    check_keys(ld, limits, limits_keys, "in limits");
    get_int(ld, limits, "max_connections", 1, LLONG_MAX, &l->max_connections, NULL);
    get_int(ld, limits, "max_message_bytes", 1, LLONG_MAX, &l->max_message_bytes, NULL);
    get_seconds(ld, limits, "idle_timeout", &l->idle_timeout);
    get_int(ld, limits, "max_pending_output", 1, LLONG_MAX, &l->max_pending_output, NULL);
    get_seconds(ld, limits, "shutdown_timeout", &l->shutdown_timeout);
    get_int(ld, limits, "max_inflight", 1, INT_MAX, &l->max_inflight, NULL);
}

/* --- Plugins ------------------------------------------------------------------ */

static const pb_plugin_conf *find_plugin(const pb_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_plugins; i++)
        if (c->plugins[i].name && strcmp(c->plugins[i].name, name) == 0)
            return &c->plugins[i];
    return NULL;
}

static int valid_utf8(const unsigned char *s)
{
    return pb_utf8_valid((const char *)s, strlen((const char *)s));
}

/* Names, content types and actions appear in the statistics, which are
 * JSON, and in metric labels: they must be UTF-8. Returns rc, or INVALID
 * after reporting a present value that is not. */
static int utf8_only(loader *ld, int rc, const config_setting_t *s,
                     const char *key, const char *value)
{
    if (rc == PRESENT && !valid_utf8((const unsigned char *)value)) {
        error_at(ld, s, "\"%s\" is not valid UTF-8", key);
        return INVALID;
    }
    return rc;
}

static void add_position(loader *ld, pb_plugin_conf *p, const json_t *value,
                         pb_conf_pos pos)
{
    pb_setting_pos *grown = realloc(p->positions,
                                    (p->n_positions + 1) * sizeof *grown);
    if (!grown) {
        out_of_memory(ld);
        return;
    }
    p->positions = grown;
    p->positions[p->n_positions].value = value;
    p->positions[p->n_positions].pos = pos;
    p->n_positions++;
}

/* What a settings value is called in a message: its key, or its place in
 * its list. */
static void describe(const config_setting_t *s, char *out, size_t size)
{
    const char *name = config_setting_name(s);
    if (name)
        snprintf(out, size, "\"%s\"", name);
    else
        snprintf(out, size, "element %d of \"%s\"", config_setting_index(s),
                 config_setting_name(config_setting_parent(s)) ?
                 config_setting_name(config_setting_parent(s)) : "list");
}

/* The settings group as JSON, each value's position recorded as it is made
 * (so the group itself comes first). Returns NULL after reporting a value
 * that has no JSON form. */
static json_t *to_json(loader *ld, pb_plugin_conf *p, const config_setting_t *s)
{
    char what[128];
    json_t *v = NULL;

    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        v = json_object();
        break;
    case CONFIG_TYPE_ARRAY:
    case CONFIG_TYPE_LIST:
        v = json_array();
        break;
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        v = json_integer(config_setting_get_int64(s));
        break;
    case CONFIG_TYPE_FLOAT:
        if (!isfinite(config_setting_get_float(s))) {
            describe(s, what, sizeof what);
            error_at(ld, s, "%s is too large a number", what);
            return NULL;
        }
        v = json_real(config_setting_get_float(s));
        break;
    case CONFIG_TYPE_BOOL:
        v = json_boolean(config_setting_get_bool(s));
        break;
    case CONFIG_TYPE_STRING:
        if (!valid_utf8((const unsigned char *)config_setting_get_string(s))) {
            describe(s, what, sizeof what);
            error_at(ld, s, "%s is not valid UTF-8", what);
            return NULL;
        }
        v = json_string(config_setting_get_string(s));
        break;
    default:
        describe(s, what, sizeof what);
        error_at(ld, s, "%s has a type settings cannot hold", what);
        return NULL;
    }
    if (!v) {
        out_of_memory(ld);
        return NULL;
    }
    add_position(ld, p, v, position(ld, s));
    if (!json_is_object(v) && !json_is_array(v))
        return v;

    for (int i = 0; i < config_setting_length(s); i++) {
        const config_setting_t *m = config_setting_get_elem(s, i);
        json_t *child = to_json(ld, p, m);
        if (!child)
            continue;
        int rc = json_is_object(v) ?
                 json_object_set_new(v, config_setting_name(m), child) :
                 json_array_append_new(v, child);
        if (rc != 0)
            out_of_memory(ld);
    }
    return v;
}

static void load_settings(loader *ld, const config_setting_t *entry,
                          pb_plugin_conf *p)
{
    const config_setting_t *settings;
    int rc = get_group(ld, entry, "settings", &settings);
    if (rc == PRESENT) {
        p->settings = to_json(ld, p, settings);
        return;
    }
    if (rc == INVALID)
        return;
    p->settings = json_object();
    if (!p->settings)
        out_of_memory(ld);
    else
        add_position(ld, p, p->settings, p->pos);
}

static void load_module(loader *ld, const config_setting_t *entry,
                        pb_plugin_conf *p)
{
    const char *module;
    const config_setting_t *s;
    int rc = get_name(ld, entry, "module", &module, &s);
    if (rc == ABSENT)
        error_pos(ld, p->pos, "plugin entry lacks \"module\"");
    if (rc != PRESENT)
        return;
    if (module[0] != '/' && strchr(module, '/')) {
        error_at(ld, s, "\"module\" must be a bare name looked up in plugin_dir "
                 "or an absolute path, not \"%s\"", module);
        return;
    }
    if (strcmp(module, ".") == 0 || strcmp(module, "..") == 0) {
        error_at(ld, s, "\"module\" must not be \"%s\"", module);
        return;
    }
    p->module = copy(ld, module);
    p->path = module[0] == '/' ? strdup(module)
                               : join(ld->config->plugin_dir, module, ".so");
    if (!p->path)
        out_of_memory(ld);
}

static void load_plugin(loader *ld, const config_setting_t *entry, void *out)
{
    pb_plugin_conf *p = out;
    p->pos = position(ld, entry);
    check_keys(ld, entry, plugin_keys, "in plugin");

    const char *name = NULL;
    const config_setting_t *s = NULL;
    int rc = get_name(ld, entry, "name", &name, &s);
    rc = utf8_only(ld, rc, s, "name", name);
    if (rc == ABSENT)
        error_pos(ld, p->pos, "plugin entry lacks \"name\"");
    if (rc == PRESENT) {
        const pb_plugin_conf *other = find_plugin(ld->config, name);
        if (other)
            error_at(ld, s, "duplicate plugin name \"%s\" (first defined at %s:%d)",
                     name, other->pos.file, other->pos.line);
        else
            p->name = copy(ld, name);
    }
    load_module(ld, entry, p);
    long long threads = 0;
    get_int(ld, entry, "threads", 0, PB_MAX_PLUGIN_THREADS, &threads, NULL);
    p->threads = (int)threads;
    load_settings(ld, entry, p);
}

/* One zeroed entry per element of a list, or NULL for an empty list. */
static void *alloc_entries(loader *ld, const config_setting_t *list, size_t size)
{
    int n = config_setting_length(list);
    if (n == 0)
        return NULL;
    void *entries = calloc((size_t)n, size);
    if (!entries)
        out_of_memory(ld);
    return entries;
}

/* Hands each group of list to load, filling entries (from alloc_entries) in
 * order; elements that are not groups are reported and skipped. */
static void load_entries(loader *ld, const config_setting_t *list, void *base,
                         size_t size, size_t *count, const char *what,
                         void (*load)(loader *, const config_setting_t *, void *))
{
    char *entries = base;
    for (int i = 0; entries && i < config_setting_length(list); i++) {
        const config_setting_t *e = config_setting_get_elem(list, i);
        if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
            error_at(ld, e, "%s entries must be groups: { ... }", what);
            continue;
        }
        load(ld, e, entries + *count * size);
        (*count)++;
    }
}

/* --- Listeners ---------------------------------------------------------------- */

/* A Unix socket mode, "0660": libconfig reads a bare 0660 as decimal. */
static void load_mode(loader *ld, const config_setting_t *s, pb_listener_conf *l)
{
    const char *text = config_setting_type(s) == CONFIG_TYPE_STRING ?
                       config_setting_get_string(s) : NULL;
    long mode = -1;
    if (text && text[0] && strlen(text) <= 5 && strspn(text, "01234567") == strlen(text))
        mode = strtol(text, NULL, 8);
    if (mode < 0 || mode > 07777) {
        error_at(ld, s, "\"mode\" must be an octal number up to 07777 written "
                 "as a quoted string, such as mode = \"0660\";");
        return;
    }
    l->mode = (int)mode;
}

static void name_listener(loader *ld, pb_listener_conf *l)
{
    if (l->path) {
        l->name = copy(ld, l->path);
        return;
    }
    /* An IPv6 literal is bracketed so that the port stays readable. */
    int v6 = strchr(l->address, ':') != NULL;
    int n = snprintf(NULL, 0, "%s%s%s:%d", v6 ? "[" : "", l->address,
                     v6 ? "]" : "", l->port);
    l->name = malloc((size_t)n + 1);
    if (!l->name) {
        out_of_memory(ld);
        return;
    }
    snprintf(l->name, (size_t)n + 1, "%s%s%s:%d", v6 ? "[" : "", l->address,
             v6 ? "]" : "", l->port);
}

/* allow = [ "10.0.0.0/8", "::1/128", ... ]: the networks a TCP listener
 * accepts peers from. */
static void load_allow(loader *ld, const config_setting_t *entry,
                       pb_listener_conf *l, int unix_socket)
{
    const config_setting_t *s = config_setting_get_member(entry, "allow");
    if (!s)
        return;
    int type = config_setting_type(s);
    int n = config_setting_length(s);
    if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
        error_at(ld, s, "\"allow\" must be a list of networks: "
                 "allow = [ \"10.0.0.0/8\", \"::1/128\" ];");
        return;
    }
    if (unix_socket) {
        error_at(ld, s, "\"allow\" applies only to a TCP listener (\"address\")");
        return;
    }
    if (n == 0) {
        error_at(ld, s, "\"allow\" is empty, which would refuse every peer: "
                 "leave it out to accept all");
        return;
    }
    l->allow = calloc((size_t)n, sizeof *l->allow);
    if (!l->allow) {
        out_of_memory(ld);
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *text = config_setting_get_string(e);
        if (!text) {
            error_at(ld, e, "\"allow\" holds networks as strings "
                     "(\"10.0.0.0/8\")");
            continue;
        }
        if (pb_cidr_parse(text, &l->allow[l->n_allow]) != 0) {
            error_at(ld, e, "\"%s\" is not an IPv4 or IPv6 address or "
                     "network (ADDRESS or ADDRESS/PREFIX)", text);
            continue;
        }
        l->n_allow++;
    }
}

/* A file the tls group names, resolved, with where it was named. */
static void tls_file(loader *ld, const config_setting_t *group, const char *key,
                     char **field, pb_conf_pos *pos)
{
    const char *value;
    const config_setting_t *s;
    if (get_name(ld, group, key, &value, &s) != PRESENT)
        return;
    *pos = position(ld, s);
    /* systemd's LoadCredential= hands a service root's files in a
     * directory it names in the environment of that one start. */
    static const char credentials[] = "${CREDENTIALS_DIRECTORY}";
    if (strncmp(value, credentials, sizeof credentials - 1) == 0) {
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        if (dir == NULL || dir[0] != '/') {
            error_at(ld, s, "\"%s\" is in ${CREDENTIALS_DIRECTORY}, which is not set: "
                     "start the daemon from a systemd unit with LoadCredential=", key);
            return;
        }
        const char *rest = value + sizeof credentials - 1;
        while (*rest == '/')
            rest++;
        char *path = join(dir, rest, "");
        if (path == NULL)
            out_of_memory(ld);
        free(*field);
        *field = path;
        return;
    }
    take_string(ld, field, value, 1);
}

/* tls = { certificate; key; ca; verify_client; min_version; }: whether the
 * files load and match is checked where the keys are read (tls.c). */
static void load_tls(loader *ld, const config_setting_t *entry, pb_listener_conf *l)
{
    const config_setting_t *group;
    if (get_group(ld, entry, "tls", &group) != PRESENT)
        return;
    pb_tls_conf *t = calloc(1, sizeof *t);
    if (!t) {
        out_of_memory(ld);
        return;
    }
    l->tls = t;
    t->pos = position(ld, group);
    t->min_version = PB_TLS_1_2;
    check_keys(ld, group, tls_keys, "in tls");
    tls_file(ld, group, "certificate", &t->certificate, &t->certificate_pos);
    tls_file(ld, group, "key", &t->key, &t->key_pos);
    tls_file(ld, group, "ca", &t->ca, &t->ca_pos);
    const pb_conf_word *word;
    const config_setting_t *verify_s = config_setting_get_member(group, "verify_client");
    if (get_choice(ld, group, "verify_client", verify_words, &word) == PRESENT)
        t->verify_client = (pb_verify_client)word->value;
    if (get_choice(ld, group, "min_version", tls_versions, &word) == PRESENT)
        t->min_version = word->value;
    if (!config_setting_get_member(group, "certificate"))
        error_pos(ld, t->pos, "\"tls\" needs \"certificate\" (PEM, the "
                  "server's certificate and its chain)");
    if (!config_setting_get_member(group, "key"))
        error_pos(ld, t->pos, "\"tls\" needs \"key\" (PEM, the certificate's "
                  "private key)");
    if (t->verify_client != PB_VERIFY_NONE && !config_setting_get_member(group, "ca"))
        error_at(ld, verify_s, "verify_client = \"%s\" needs \"ca\", the CA "
                 "certificates that client certificates are checked against",
                 t->verify_client == PB_VERIFY_REQUIRE ? "require" : "optional");
}

/* reuseport = true: a TCP listener gets one socket per worker, bound with
 * SO_REUSEPORT, and the kernel spreads connections over them. */
static void load_reuseport(loader *ld, const config_setting_t *entry,
                           pb_listener_conf *l, int is_unix)
{
    const config_setting_t *s = config_setting_get_member(entry, "reuseport");
    if (!s)
        return;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        error_at(ld, s, "\"reuseport\" must be true or false");
        return;
    }
    l->reuseport = config_setting_get_bool(s);
    if (l->reuseport && is_unix)
        error_at(ld, s, "\"reuseport\" applies only to a TCP listener (\"address\")");
}

static void load_listener(loader *ld, const config_setting_t *entry, void *out)
{
    pb_listener_conf *l = out;
    pb_config *c = ld->config;
    l->pos = position(ld, entry);
    l->mode = -1;
    l->framing = PB_FRAME;
    check_keys(ld, entry, listener_keys, "in listener");

    const char *name = NULL, *address, *path, *plugin;
    const config_setting_t *name_s = NULL, *address_s = NULL, *port_s = NULL,
                           *plugin_s;
    long long port;
    const pb_conf_word *framing;
    int has_name = get_name(ld, entry, "name", &name, &name_s);
    has_name = utf8_only(ld, has_name, name_s, "name", name);
    int has_address = get_name(ld, entry, "address", &address, &address_s);
    int has_port = get_int(ld, entry, "port", 1, 65535, &port, &port_s);
    int has_path = get_name(ld, entry, "path", &path, NULL);
    const config_setting_t *mode_s = config_setting_get_member(entry, "mode");

    if (has_path != ABSENT && (has_address != ABSENT || has_port != ABSENT))
        error_at(ld, has_address != ABSENT ? address_s : port_s,
                 "listener has both \"path\" and \"%s\": use either "
                 "address and port (TCP) or path (Unix socket)",
                 has_address != ABSENT ? "address" : "port");
    else if (has_path == ABSENT && has_address == ABSENT && has_port == ABSENT)
        error_pos(ld, l->pos, "listener needs \"address\" and \"port\" (TCP) "
                  "or \"path\" (Unix socket)");
    else if (has_path == ABSENT && has_address == ABSENT)
        error_at(ld, port_s, "\"port\" without \"address\"");
    else if (has_path == ABSENT && has_port == ABSENT)
        error_at(ld, address_s, "\"address\" without \"port\"");
    else if (has_path == PRESENT) {
        take_string(ld, &l->path, path, 1);
        if (mode_s)
            load_mode(ld, mode_s, l);
    } else if (has_address == PRESENT && has_port == PRESENT) {
        take_string(ld, &l->address, address, 0);
        l->port = (int)port;
    }
    if (mode_s && has_path == ABSENT)
        error_at(ld, mode_s, "\"mode\" applies only to a Unix socket (\"path\")");
    load_allow(ld, entry, l, has_path == PRESENT);
    load_tls(ld, entry, l);
    load_reuseport(ld, entry, l, has_path == PRESENT);

    if (get_choice(ld, entry, "framing", framings, &framing) == PRESENT)
        l->framing = (pb_framing_kind)framing->value;

    if (get_name(ld, entry, "plugin", &plugin, &plugin_s) == PRESENT) {
        if (!find_plugin(c, plugin))
            error_at(ld, plugin_s, "listener refers to undefined plugin "
                     "instance \"%s\"", plugin);
        else
            take_string(ld, &l->plugin, plugin, 0);
    }

    if (has_name == PRESENT)
        take_string(ld, &l->name, name, 0);
    else if (has_name == ABSENT && (l->path || l->address))
        name_listener(ld, l);
    if (!l->name)
        return;
    if (has_name == ABSENT && !valid_utf8((const unsigned char *)l->name)) {
        error_pos(ld, l->pos, "listener named by its %s, which is not valid "
                  "UTF-8: give it a \"name\"", l->path ? "path" : "address");
        return;
    }
    /* The entries before l are the listeners loaded so far. */
    for (const pb_listener_conf *o = c->listeners; o != l; o++) {
        if (o->name && strcmp(o->name, l->name) == 0) {
            pb_conf_pos at = name_s ? position(ld, name_s) : l->pos;
            error_pos(ld, at, "duplicate listener name \"%s\" (first defined at %s:%d)",
                      l->name, o->pos.file, o->pos.line);
            break;
        }
    }
}

/* --- Routes ------------------------------------------------------------------- */

static void take_text(loader *ld, const config_setting_t *entry,
                      const char *key, char **field)
{
    const char *value = NULL;
    const config_setting_t *s = NULL;
    int rc = get_string(ld, entry, key, &value, &s);
    if (utf8_only(ld, rc, s, key, value) == PRESENT)
        take_string(ld, field, value, 0);
}

/* listeners = [ "local", ... ]: the listeners whose messages the route
 * takes; a message from another one goes on to the next route. */
static void load_route_listeners(loader *ld, const config_setting_t *entry,
                                 pb_route_conf *r)
{
    const config_setting_t *s = config_setting_get_member(entry, "listeners");
    if (!s)
        return;
    int type = config_setting_type(s);
    int n = config_setting_length(s);
    if ((type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) || n == 0) {
        error_at(ld, s, "\"listeners\" must be a list of listener names: "
                 "listeners = [ \"local\" ];");
        return;
    }
    r->listeners = calloc((size_t)n, sizeof *r->listeners);
    if (!r->listeners) {
        out_of_memory(ld);
        return;
    }
    const pb_config *c = ld->config;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *name = config_setting_get_string(e);
        if (!name) {
            error_at(ld, e, "\"listeners\" holds listener names as strings");
            continue;
        }
        size_t k = 0;
        while (k < c->n_listeners &&
               !(c->listeners[k].name && strcmp(c->listeners[k].name, name) == 0))
            k++;
        if (k == c->n_listeners) {
            error_at(ld, e, "route refers to undefined listener \"%s\"", name);
            continue;
        }
        r->listeners[r->n_listeners++] = k;
    }
}

static void load_route(loader *ld, const config_setting_t *entry, void *out)
{
    pb_route_conf *r = out;
    r->pos = position(ld, entry);
    check_keys(ld, entry, route_keys, "in route");

    take_text(ld, entry, "content_type", &r->content_type);
    take_text(ld, entry, "action", &r->action);
    const char *value;
    const config_setting_t *s;
    int rc = get_name(ld, entry, "plugin", &value, &s);
    if (rc == ABSENT)
        error_pos(ld, r->pos, "route entry lacks \"plugin\"");
    else if (rc == PRESENT && !find_plugin(ld->config, value))
        error_at(ld, s, "route refers to undefined plugin instance \"%s\"", value);
    else if (rc == PRESENT)
        take_string(ld, &r->plugin, value, 0);
    load_route_listeners(ld, entry, r);
}

/* --- The file ------------------------------------------------------------------- */

static void load_sections(loader *ld, const config_setting_t *root)
{
    pb_config *c = ld->config;
    const config_setting_t *list;

    check_keys(ld, root, top_keys, "at top level");
    load_top(ld, root);
    load_log(ld, root);
    load_limits(ld, root);

    /* Plugins first: listeners and routes refer to their instances. The
     * arrays are set before their entries are loaded so that each entry can
     * look back at the earlier ones for duplicate names. */
    if (get_list(ld, root, "plugins", &list) == PRESENT) {
        c->plugins = alloc_entries(ld, list, sizeof *c->plugins);
        load_entries(ld, list, c->plugins, sizeof *c->plugins, &c->n_plugins,
                     "plugin", load_plugin);
    }

    int rc = get_list(ld, root, "listeners", &list);
    if (rc == ABSENT) {
        pb_conf_pos file = { c->files[0], 0 };
        error_pos(ld, file, "no listeners: at least one is required");
    } else if (rc == PRESENT && config_setting_length(list) == 0) {
        error_at(ld, list, "\"listeners\" is empty: at least one is required");
    } else if (rc == PRESENT) {
        c->listeners = alloc_entries(ld, list, sizeof *c->listeners);
        load_entries(ld, list, c->listeners, sizeof *c->listeners, &c->n_listeners,
                     "listener", load_listener);
    }

    if (get_list(ld, root, "routes", &list) == PRESENT) {
        c->routes = alloc_entries(ld, list, sizeof *c->routes);
        load_entries(ld, list, c->routes, sizeof *c->routes, &c->n_routes,
                     "route", load_route);
    }
}

/* The defaults, plus the main file and every file libconfig read, so that
 * positions can point at their names for as long as the config lives. */
static int init_config(pb_config *c, const char *path, const char *plugin_dir,
                       const config_t *cf)
{
    c->workers = 1;
    c->log_level = PB_LOG_INFO;
    c->log_target = PB_LOG_STDERR;
    c->limits.max_connections = 10000;
    c->limits.max_message_bytes = 1048576;
    c->limits.idle_timeout = 60.0;
    c->limits.max_pending_output = 4194304;
    c->limits.shutdown_timeout = 10.0;
    c->limits.max_inflight = 128;

    c->path = strdup(path);
    c->dir = directory_of(path);
    c->plugin_dir = strdup(plugin_dir);
    c->pidfile = strdup(DEFAULT_PIDFILE);
    c->log_facility = strdup("daemon");
    c->files = calloc(cf->num_filenames + 1, sizeof *c->files);
    if (!c->path || !c->dir || !c->plugin_dir || !c->pidfile
        || !c->log_facility || !c->files)
        return -1;
    c->files[c->n_files++] = strdup(path);
    if (!c->files[0])
        return -1;
    for (unsigned i = 0; i < cf->num_filenames; i++) {
        c->files[c->n_files] = join(c->dir, cf->filenames[i], "");
        if (!c->files[c->n_files])
            return -1;
        c->n_files++;
    }
    return 0;
}

int pb_config_read(const char *path, char **text, size_t *len, pb_diag *diag)
{
    *text = NULL;
    *len = 0;
    FILE *fp = fopen(path, "r");
    if (!fp) {
        pb_diag_add(diag, path, 0, "cannot open: %s", strerror(errno));
        return -1;
    }
    size_t cap = 0;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0) {
        if (*len + n + 1 > cap) {
            cap = (*len + n + 1) * 2;
            char *grown = realloc(*text, cap);
            if (!grown) {
                pb_diag_add(diag, path, 0, "out of memory");
                goto fail;
            }
            *text = grown;
        }
        memcpy(*text + *len, chunk, n);
        *len += n;
    }
    if (ferror(fp)) {
        pb_diag_add(diag, path, 0, "cannot read: %s", strerror(errno));
        goto fail;
    }
    fclose(fp);
    if (!*text && !(*text = malloc(1))) {
        pb_diag_add(diag, path, 0, "out of memory");
        return -1;
    }
    (*text)[*len] = '\0';
    return 0;

fail:
    fclose(fp);
    free(*text);
    *text = NULL;
    *len = 0;
    return -1;
}

int pb_config_load(const char *path, const char *default_plugin_dir,
                   pb_config **out, pb_diag *diag)
{
    char *text;
    size_t len;
    if (pb_config_read(path, &text, &len, diag) != 0) {
        *out = NULL;
        return -1;
    }
    int rc = pb_config_parse(path, text, len, default_plugin_dir, out, diag);
    free(text);
    return rc;
}

int pb_config_parse(const char *path, const char *text, size_t len,
                    const char *default_plugin_dir, pb_config **out,
                    pb_diag *diag)
{
    *out = NULL;
    char *dir = directory_of(path);
    if (!dir) {
        pb_diag_add(diag, path, 0, "out of memory");
        return -1;
    }
    /* libconfig reads streams; the text itself stays the caller's. */
    FILE *fp = fmemopen((void *)text, len, "r");
    if (!fp) {
        pb_diag_add(diag, path, 0, "cannot read: %s", strerror(errno));
        free(dir);
        return -1;
    }

    config_t cf;
    config_init(&cf);
    config_set_include_dir(&cf, dir);
    int read_ok = config_read(&cf, fp);
    fclose(fp);
    if (!read_ok) {
        const char *raw = config_error_file(&cf);
        char *file = raw ? join(dir, raw, "") : NULL;
        pb_diag_add(diag, raw ? (file ? file : raw) : path,
                    config_error_line(&cf), "%s", config_error_text(&cf));
        free(file);
        config_destroy(&cf);
        free(dir);
        return -1;
    }
    free(dir);

    pb_config *c = calloc(1, sizeof *c);
    loader ld = { c, &cf, diag, 0, NULL, 0, 0 };
    if (!c || init_config(c, path, default_plugin_dir, &cf) < 0) {
        pb_diag_add(diag, path, 0, "out of memory");
        ld.errors++;
    } else {
        load_sections(&ld, config_root_setting(&cf));
        order_diagnostics(&ld);
    }
    free(ld.marks);
    config_destroy(&cf);
    if (ld.errors) {
        pb_config_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

pb_conf_pos pb_plugin_conf_position(const pb_plugin_conf *plugin,
                                    const json_t *value)
{
    /* jansson shares one true, one false and one null among all uses, so a
     * value found more than once cannot be placed more precisely than the
     * instance. */
    const pb_conf_pos *found = NULL;
    for (size_t i = 0; value && i < plugin->n_positions; i++) {
        if (plugin->positions[i].value != value)
            continue;
        if (found)
            return plugin->pos;
        found = &plugin->positions[i].pos;
    }
    return found ? *found : plugin->pos;
}

void pb_config_free(pb_config *config)
{
    if (!config)
        return;
    for (size_t i = 0; i < config->n_listeners; i++) {
        pb_listener_conf *l = &config->listeners[i];
        free(l->name);
        free(l->address);
        free(l->path);
        free(l->plugin);
        free(l->allow);
        if (l->tls) {
            free(l->tls->certificate);
            free(l->tls->key);
            free(l->tls->ca);
            free(l->tls);
        }
    }
    free(config->listeners);
    for (size_t i = 0; i < config->n_plugins; i++) {
        pb_plugin_conf *p = &config->plugins[i];
        free(p->name);
        free(p->module);
        free(p->path);
        json_decref(p->settings);
        free(p->positions);
    }
    free(config->plugins);
    for (size_t i = 0; i < config->n_routes; i++) {
        pb_route_conf *r = &config->routes[i];
        free(r->content_type);
        free(r->action);
        free(r->plugin);
        free(r->listeners);
    }
    free(config->routes);
    for (size_t i = 0; i < config->n_files; i++)
        free(config->files[i]);
    free(config->files);
    free(config->path);
    free(config->dir);
    free(config->plugin_dir);
    free(config->user);
    free(config->group);
    free(config->pidfile);
    free(config->log_facility);
    free(config);
}

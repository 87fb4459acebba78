/*
 * test_plugin_host.c - the host services plugins are given: JSON reading and
 * building, paths, logging, metrics, and the reply contract that
 * pb_instance_handle() enforces (one reply, failures undone and explained).
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "frame.h"
#include "json_fast.h"
#include "log.h"
#include "plugin_harness.h"
#include "shared.h"

static const pb_host *host = &pb_host_services;

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *value = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    cr_assert_not_null(value, "%s: %s", text, err.text);
    return value;
}

#define PJ(value) ((const pb_json *)(value))

/* --- The table ---------------------------------------------------------- */

Test(host, table_is_versioned)
{
    cr_assert_eq(host->size, sizeof(pb_host));
    cr_assert_eq(host->abi_version, PLUGBOARD_ABI_VERSION);
    cr_assert(PB_HOST_HAS(host, reply_error));
}

/* --- Reading JSON ------------------------------------------------------- */

Test(host, json_type)
{
    json_t *v = parse("[{}, [], \"s\", 1, 1.5, true, false, null]");
    const pb_json_type expected[] = {
        PB_JSON_OBJECT, PB_JSON_ARRAY, PB_JSON_STRING, PB_JSON_INTEGER,
        PB_JSON_REAL, PB_JSON_TRUE, PB_JSON_FALSE, PB_JSON_NULL
    };
    for (size_t i = 0; i < 8; i++)
        cr_assert_eq(host->json_type(host->json_at(PJ(v), i)), expected[i], "element %zu", i);
    cr_assert_eq(host->json_type(NULL), PB_JSON_INVALID);
    json_decref(v);
}

Test(host, json_get)
{
    json_t *v = parse("{\"a\": 1, \"b\": {\"c\": \"d\"}}");
    cr_assert_eq(host->json_integer(host->json_get(PJ(v), "a")), 1);
    cr_assert_str_eq(host->json_string(host->json_get(host->json_get(PJ(v), "b"), "c"), NULL),
                     "d");
    cr_assert_null(host->json_get(PJ(v), "missing"));
    cr_assert_null(host->json_get(PJ(v), NULL));
    cr_assert_null(host->json_get(host->json_get(PJ(v), "a"), "a"));
    cr_assert_null(host->json_get(NULL, "a"));
    json_decref(v);
}

Test(host, json_string_with_length)
{
    json_t *v = parse("[\"a\\u0000b\", \"é\", 5]");
    size_t length = 0;
    const char *s = host->json_string(host->json_at(PJ(v), 0), &length);
    cr_assert_eq(length, 3);
    cr_assert(memcmp(s, "a\0b", 4) == 0);
    cr_assert_str_eq(host->json_string(host->json_at(PJ(v), 1), &length), "é");
    cr_assert_eq(length, 2);
    length = 99;
    cr_assert_null(host->json_string(host->json_at(PJ(v), 2), &length));
    cr_assert_eq(length, 99);
    cr_assert_null(host->json_string(NULL, NULL));
    json_decref(v);
}

Test(host, json_numbers)
{
    json_t *v = parse("[-9007199254740993, 2.5, \"3\", true]");
    cr_assert_eq(host->json_integer(host->json_at(PJ(v), 0)), -9007199254740993LL);
    cr_assert_eq(host->json_integer(host->json_at(PJ(v), 1)), 0);
    cr_assert_eq(host->json_integer(host->json_at(PJ(v), 2)), 0);
    cr_assert_float_eq(host->json_number(host->json_at(PJ(v), 0)), -9007199254740992.0, 4.0);
    cr_assert_float_eq(host->json_number(host->json_at(PJ(v), 1)), 2.5, 0.0);
    cr_assert_float_eq(host->json_number(host->json_at(PJ(v), 2)), 0.0, 0.0);
    cr_assert_float_eq(host->json_number(host->json_at(PJ(v), 3)), 0.0, 0.0);
    cr_assert_eq(host->json_integer(NULL), 0);
    json_decref(v);
}

Test(host, json_size_and_at)
{
    json_t *v = parse("[{\"a\": 1, \"b\": 2}, [1, 2, 3], \"abc\"]");
    cr_assert_eq(host->json_size(PJ(v)), 3);
    cr_assert_eq(host->json_size(host->json_at(PJ(v), 0)), 2);
    cr_assert_eq(host->json_size(host->json_at(PJ(v), 1)), 3);
    cr_assert_eq(host->json_size(host->json_at(PJ(v), 2)), 0);
    cr_assert_eq(host->json_size(NULL), 0);
    cr_assert_null(host->json_at(PJ(v), 3));
    cr_assert_null(host->json_at(host->json_at(PJ(v), 0), 0));
    cr_assert_null(host->json_at(NULL, 0));
    json_decref(v);
}

struct visit {
    char keys[64];
    int stop_at;
    int calls;
};

static int visit(const char *key, const pb_json *value, void *arg)
{
    struct visit *v = arg;
    strcat(v->keys, key);
    v->calls++;
    return v->calls == v->stop_at ? 40 + v->calls : 0;
}

Test(host, json_foreach_in_document_order)
{
    json_t *v = parse("{\"z\": 1, \"b\": 2, \"y\": 3, \"a\": 4, \"x\": 5}");
    struct visit all = { "", 0, 0 };
    cr_assert_eq(host->json_foreach(PJ(v), visit, &all), 0);
    cr_assert_str_eq(all.keys, "zbyax");
    struct visit some = { "", 2, 0 };
    cr_assert_eq(host->json_foreach(PJ(v), visit, &some), 42);
    cr_assert_str_eq(some.keys, "zb");
    struct visit none = { "", 0, 0 };
    cr_assert_eq(host->json_foreach(host->json_get(PJ(v), "z"), visit, &none), 0);
    cr_assert_eq(host->json_foreach(NULL, visit, &none), 0);
    cr_assert_eq(none.calls, 0);
    json_decref(v);
}

/* A temporary file holding text; its path in path. */
static void temp_file(char *path, size_t size, const char *text)
{
    const char *tmp = getenv("PB_TEST_TMPDIR");
    snprintf(path, size, "%s/pb-host-XXXXXX", tmp != NULL ? tmp : "/tmp");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

Test(host, json_load_file)
{
    char path[4096], error[512];
    temp_file(path, sizeof path, "{\"k\": [1, \"é\"]}\n");
    pb_json *v = host->json_load_file(path, error, sizeof error);
    cr_assert_not_null(v);
    cr_assert_str_eq(host->json_string(host->json_at(host->json_get(v, "k"), 1), NULL), "é");
    host->json_free(v);
    unlink(path);
}

Test(host, json_load_file_errors)
{
    char path[4096], error[512], expected[4700];
    temp_file(path, sizeof path, "{\"k\": 1,\n\n \"k2\" 2}");
    cr_assert_null(host->json_load_file(path, error, sizeof error));
    snprintf(expected, sizeof expected, "%s:3: ':' expected near '2'", path);
    cr_assert_str_eq(error, expected);
    unlink(path);
    cr_assert_null(host->json_load_file(path, error, sizeof error));
    snprintf(expected, sizeof expected, "%s: No such file or directory", path);
    cr_assert_str_eq(error, expected);
    char small[8];
    cr_assert_null(host->json_load_file(path, small, sizeof small));
    cr_assert_eq(strlen(small), 7);
}

/* --- Building JSON ------------------------------------------------------ */

Test(host, json_new_string_checks_utf8)
{
    cr_assert_null(host->json_new_string("ab\xff", 3));
    cr_assert_null(host->json_new_string("\xc3", 1));
    cr_assert_null(host->json_new_string(NULL, 0));
    pb_json *s = host->json_new_string("a\0é", 4);
    size_t length;
    cr_assert(memcmp(host->json_string(s, &length), "a\0é", 4) == 0);
    cr_assert_eq(length, 4);
    host->json_free(s);
}

Test(host, json_building_and_ownership)
{
    pb_json *object = host->json_new_object();
    pb_json *array = host->json_new_array();
    cr_assert_eq(host->json_append(array, host->json_new_integer(-3)), PB_OK);
    cr_assert_eq(host->json_append(array, host->json_new_real(0.5)), PB_OK);
    cr_assert_eq(host->json_append(array, host->json_new_bool(7)), PB_OK);
    cr_assert_eq(host->json_append(array, host->json_new_bool(0)), PB_OK);
    cr_assert_eq(host->json_append(array, host->json_new_null()), PB_OK);
    cr_assert_eq(host->json_set(object, "list", array), PB_OK);
    cr_assert_eq(host->json_set(object, "n", host->json_new_integer(1)), PB_OK);
    cr_assert_eq(host->json_set(object, "n", host->json_new_integer(2)), PB_OK);
    char *text = json_dumps((json_t *)object, JSON_COMPACT);
    cr_assert_str_eq(text, "{\"list\":[-3,0.5,true,false,null],\"n\":2}");
    free(text);

    /* Everything below hands a value over and fails; the sanitizers'
     * leak check sees any value that was not released. */
    cr_assert_eq(host->json_set(NULL, "k", host->json_new_integer(1)), PB_ERROR);
    cr_assert_eq(host->json_set(object, NULL, host->json_new_integer(1)), PB_ERROR);
    cr_assert_eq(host->json_set(object, "k", NULL), PB_ERROR);
    cr_assert_eq(host->json_set(array, "k", host->json_new_integer(1)), PB_ERROR);
    cr_assert_eq(host->json_set(object, "bad\xff", host->json_new_integer(1)), PB_ERROR);
    cr_assert_eq(host->json_append(NULL, host->json_new_integer(1)), PB_ERROR);
    cr_assert_eq(host->json_append(object, host->json_new_integer(1)), PB_ERROR);
    cr_assert_eq(host->json_append(array, NULL), PB_ERROR);
    cr_assert_eq(host->json_size(object), 2);
    cr_assert_eq(host->json_size(array), 5);
    cr_assert_null(host->json_new_real(NAN));
    cr_assert_null(host->json_new_real(INFINITY));
    host->json_free(object);
    host->json_free(NULL);
}

Test(host, json_copy_is_independent)
{
    json_t *original = parse("{\"a\": [1, {\"b\": \"c\"}]}");
    pb_json *copy = host->json_copy(PJ(original));
    cr_assert(json_equal(original, (json_t *)copy));
    json_object_set_new(json_array_get(json_object_get(original, "a"), 1), "b",
                        json_string("changed"));
    cr_assert_str_eq(host->json_string(host->json_get(host->json_at(host->json_get(copy, "a"), 1),
                                                      "b"), NULL), "c");
    cr_assert_null(host->json_copy(NULL));
    host->json_free(copy);
    json_decref(original);
}

/* --- Instances: names, paths, logging ----------------------------------- */

static const pb_plugin bare = {
    PB_PLUGIN_VERSIONED,
    .name = "bare",
    .description = "no create, no destroy",
    .create = NULL,
    .handle = NULL,
    .destroy = NULL,
};

static int collect_keys(const char *key, const pb_json *value, void *arg)
{
    (void)value;
    strcat(arg, key);
    strcat(arg, ",");
    return 0;
}

/* Request content of the common flat shape is read in place: the readers
 * answer from it, and whatever needs more gets jansson's equal. */
Test(host, content_read_in_place)
{
    const char text[] = "{\"action\": \"search\", \"value\": \"morpheus\"}";
    pb_content content;
    pb_content_init(&content);
    const pb_json *o = pb_content_parse(&content, text, sizeof text - 1, NULL);
    cr_assert_not_null(pb_flat_of(o), "the guide's request is read in place");

    cr_expect_eq(host->json_type(o), PB_JSON_OBJECT);
    cr_expect_eq(host->json_size(o), 2);
    const pb_json *value = host->json_get(o, "value");
    cr_expect_eq(host->json_type(value), PB_JSON_STRING);
    size_t length = 0;
    cr_expect_str_eq(host->json_string(value, &length), "morpheus");
    cr_expect_eq(length, 8);
    cr_expect_null(host->json_get(o, "missing"));
    cr_expect_null(host->json_get(value, "action"));
    cr_expect_null(host->json_get(o, NULL));
    cr_expect_null(host->json_string(o, NULL));
    cr_expect_eq(host->json_integer(value), 0);
    cr_expect_eq(host->json_number(value), 0.0);
    cr_expect_null(host->json_at(o, 0));
    cr_expect_eq(host->json_size(value), 0);

    char keys[64] = "";
    cr_expect_eq(host->json_foreach(o, collect_keys, keys), 0);
    cr_expect_str_eq(keys, "action,value,", "members in document order");

    size_t n;
    char *encoded = host->json_encode(o, &n);
    cr_expect_str_eq(encoded, "{\"action\": \"search\", \"value\": \"morpheus\"}");
    free(encoded);
    encoded = host->json_encode(value, &n);
    cr_expect_str_eq(encoded, "\"morpheus\"");
    free(encoded);

    pb_json *copy = host->json_copy(value);
    pb_content_release(&content);
    cr_expect_str_eq(host->json_string(copy, NULL), "morpheus",
                     "a copy outlives the request");
    host->json_free(copy);
}

Test(host, instance_name_and_resolve_path)
{
    pb_test_plugin *t = pb_test_plugin_new(&bare, NULL, "/etc/plugboard");
    char buf[64];
    cr_assert_str_eq(host->instance_name(&t->instance), "bare");
    cr_assert_eq(host->resolve_path(&t->instance, "data/s.json", buf, sizeof buf), PB_OK);
    cr_assert_str_eq(buf, "/etc/plugboard/data/s.json");
    cr_assert_eq(host->resolve_path(&t->instance, "/srv/s.json", buf, sizeof buf), PB_OK);
    cr_assert_str_eq(buf, "/srv/s.json");
    cr_assert_eq(host->resolve_path(&t->instance, "s.json", buf, 8), PB_ERROR);
    cr_assert_eq(host->resolve_path(&t->instance, "s.json", buf, 22), PB_OK);
    cr_assert_eq(host->resolve_path(&t->instance, "s.json", buf, 21), PB_ERROR);
    t->instance.config_dir = NULL;
    cr_assert_eq(host->resolve_path(&t->instance, "s.json", buf, sizeof buf), PB_OK);
    cr_assert_str_eq(buf, "s.json");
    pb_test_plugin_free(t);
}

Test(host, settings_refused_without_create)
{
    pb_test_plugin *t = pb_test_plugin_new(&bare, "{\"x\": 1}", NULL);
    cr_assert_eq(t->rc, PB_ERROR);
    pb_test_plugin_free(t);
}

static void redirect(void)
{
    cr_redirect_stderr();
}

Test(host, log_names_the_instance, .init = redirect)
{
    pb_log_init("plugboard-test");
    pb_test_plugin *t = pb_test_plugin_new(&bare, NULL, NULL);
    host->log(&t->instance, PB_LOG_WARNING, "disk %d%% full", 93);
    host->log(&t->instance, PB_LOG_DEBUG, "not shown at the default level");
    pb_test_plugin_free(t);
    fflush(stderr);
    char text[512] = "";
    size_t n = fread(text, 1, sizeof text - 1, cr_get_redirected_stderr());
    text[n] = '\0';
    cr_assert_not_null(strstr(text, "plugin bare: disk 93% full"), "logged: %s", text);
    cr_assert_null(strstr(text, "not shown"), "logged: %s", text);
}

/* --- Metrics ------------------------------------------------------------ */

/* What was logged to the redirected stderr. */
static void logged(char *text, size_t size)
{
    fflush(stderr);
    size_t n = fread(text, 1, size - 1, cr_get_redirected_stderr());
    text[n] = '\0';
}

static int occurrences(const char *text, const char *what)
{
    int n = 0;
    for (const char *p = strstr(text, what); p != NULL; p = strstr(p + 1, what))
        n++;
    return n;
}

/* In the configuration check no mapping is set: no metrics, no crash. */
Test(host, metrics_are_null_without_statistics)
{
    pb_test_plugin *t = pb_test_plugin_new(&bare, NULL, NULL);
    pb_metric *m = host->metric(&t->instance, "published", NULL, PB_METRIC_COUNTER);
    cr_assert_null(m);
    host->metric_add(m, 1);
    host->metric_set(m, 1);
    pb_test_plugin_free(t);
}

Test(host, a_metric_handle_counts_in_the_worker_slot)
{
    pb_shared *shared = pb_shared_create();
    cr_assert_not_null(shared);
    pb_plugin_host_set_shared(shared, 2);
    pb_test_plugin *t = pb_test_plugin_new(&bare, NULL, NULL);
    pb_metric *m = host->metric(&t->instance, "published", NULL, PB_METRIC_COUNTER);
    cr_assert_not_null(m);
    cr_assert_eq(host->metric(&t->instance, "published", NULL, PB_METRIC_COUNTER), m);
    host->metric_add(m, 3);
    pb_metric *ready = host->metric(&t->instance, "ready", "caf\xC3\xA9", PB_METRIC_GAUGE);
    host->metric_set(ready, 4);
    cr_assert_eq(atomic_load(&shared->slots[2].metrics[0].value), 3);

    json_t *s = pb_stats_snapshot(shared);
    const json_t *metrics = json_object_get(
        json_object_get(json_object_get(s, "plugins"), "bare"), "metrics");
    cr_assert_eq(json_integer_value(json_object_get(metrics, "published")), 3);
    cr_assert_eq(json_integer_value(json_object_get(
                     json_object_get(metrics, "ready"), "caf\xC3\xA9")), 4);
    json_decref(s);
    pb_test_plugin_free(t);
    pb_plugin_host_set_shared(NULL, 0);
    pb_shared_destroy(shared);
}

Test(host, metric_names_labels_and_kinds_are_checked, .init = redirect)
{
    pb_log_init("plugboard-test");
    pb_shared *shared = pb_shared_create();
    cr_assert_not_null(shared);
    pb_plugin_host_set_shared(shared, 0);
    pb_test_plugin *t = pb_test_plugin_new(&bare, NULL, NULL);
    char long_text[PB_METRIC_NAME_LEN + 1];
    memset(long_text, 'a', PB_METRIC_NAME_LEN);
    long_text[PB_METRIC_NAME_LEN] = '\0';
    const char *bad_names[] = { "", "has space", "dotted.name", "caf\xC3\xA9", long_text };
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++)
        cr_assert_null(host->metric(&t->instance, bad_names[i], NULL, PB_METRIC_GAUGE),
                       "name \"%s\" taken", bad_names[i]);
    cr_assert_null(host->metric(&t->instance, NULL, NULL, PB_METRIC_GAUGE));
    const char *bad_labels[] = { "", "\xFF", "\xC3", long_text };
    for (size_t i = 0; i < sizeof bad_labels / sizeof *bad_labels; i++)
        cr_assert_null(host->metric(&t->instance, "ready", bad_labels[i], PB_METRIC_GAUGE),
                       "label %zu taken", i);
    cr_assert_null(host->metric(&t->instance, "ready", NULL, (pb_metric_kind)7));
    cr_assert_null(host->metric(NULL, "ready", NULL, PB_METRIC_GAUGE));

    /* The longest name and label fit. */
    long_text[PB_METRIC_NAME_LEN - 1] = '\0';
    cr_assert_not_null(host->metric(&t->instance, long_text, long_text, PB_METRIC_GAUGE));
    /* A name keeps its kind. */
    cr_assert_null(host->metric(&t->instance, long_text, long_text, PB_METRIC_COUNTER));
    pb_test_plugin_free(t);
    pb_plugin_host_set_shared(NULL, 0);
    pb_shared_destroy(shared);

    char text[8192];
    logged(text, sizeof text);
    cr_assert_eq(occurrences(text, "warning: plugin bare: metric name"), 6, "logged: %s", text);
    cr_assert_eq(occurrences(text, "warning: plugin bare: a label of metric ready refused"),
                 4, "logged: %s", text);
    cr_assert_not_null(strstr(text, "plugin bare: metric ready refused: unknown kind 7"),
                       "logged: %s", text);
    cr_assert_not_null(strstr(text, "plugin ?: metric ready refused: no instance given"),
                       "logged: %s", text);
    cr_assert_not_null(strstr(text, "refused: the name is already taken with another kind"),
                       "logged: %s", text);
}

Test(host, a_full_table_of_metrics_is_logged_once, .init = redirect)
{
    pb_log_init("plugboard-test");
    pb_shared *shared = pb_shared_create();
    cr_assert_not_null(shared);
    pb_plugin_host_set_shared(shared, 0);
    pb_test_plugin *t = pb_test_plugin_new(&bare, NULL, NULL);
    for (int i = 0; i < PB_METRICS; i++) {
        char label[16];
        snprintf(label, sizeof label, "l%d", i);
        cr_assert_not_null(host->metric(&t->instance, "ready", label, PB_METRIC_GAUGE));
    }
    cr_assert_null(host->metric(&t->instance, "ready", "more", PB_METRIC_GAUGE));
    cr_assert_null(host->metric(&t->instance, "ready", "still more", PB_METRIC_GAUGE));
    pb_test_plugin_free(t);
    pb_plugin_host_set_shared(NULL, 0);
    pb_shared_destroy(shared);

    char text[4096];
    logged(text, sizeof text);
    cr_assert_eq(occurrences(text, "metrics are taken"), 1, "logged: %s", text);
    cr_assert_not_null(strstr(text, "warning: plugin bare: metric ready not counted: "
                              "the worker's 128 metrics are taken"), "logged: %s", text);
}

/* --- Replies ------------------------------------------------------------ */

/* What the scripted plugin does in handle(); set by each test. */
static int (*script)(const pb_request *request, pb_reply *reply);

static int scripted_handle(void *state, const pb_request *request, pb_reply *reply)
{
    return script(request, reply);
}

static const pb_plugin scripted = {
    PB_PLUGIN_VERSIONED,
    .name = "scripted",
    .description = "does what the test says",
    .handle = scripted_handle,
};

static void run(int (*fn)(const pb_request *, pb_reply *), pb_framing framing,
                pb_test_reply *r)
{
    script = fn;
    pb_test_plugin *t = pb_test_plugin_new(&scripted, NULL, NULL);
    if (framing == PB_FRAMING_LINE)
        pb_test_handle(t, PB_FRAMING_LINE, NULL, NULL, "line", 4, r);
    else
        pb_test_handle_str(t, "text/json", "utf-8", "{\"a\": [1, \"x\"], \"b\": null}", r);
    pb_test_plugin_free(t);
}

static int reply_json_value(const pb_request *request, pb_reply *reply)
{
    pb_json *value = host->json_new_object();
    host->json_set(value, "é", host->json_new_string("ü \"q\"\n", 7));
    host->json_set(value, "copy", host->json_copy(request->json));
    host->json_set(value, "n", host->json_new_real(2.0));
    return host->reply_json(reply, value);
}

Test(host, reply_json_is_written_like_python)
{
    pb_test_reply r;
    run(reply_json_value, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_OK);
    cr_assert_str_eq(r.content_type, "text/json");
    cr_assert_str_eq(r.content_encoding, "utf-8");
    cr_assert_str_eq((const char *)r.content,
        "{\"é\": \"ü \\\"q\\\"\\n\", \"copy\": {\"a\": [1, \"x\"], \"b\": null}, \"n\": 2.0}");
    pb_test_reply_free(&r);
}

Test(host, json_encode_writes_like_reply_json)
{
    json_t *v = json_loads("{\"é\": [1, 2.5, \"a\\\"b\"], \"t\": true}", 0, NULL);
    cr_assert_not_null(v);
    size_t length = 0;
    char *bytes = host->json_encode(PJ(v), &length);
    cr_assert_not_null(bytes);
    cr_assert_str_eq(bytes, "{\"é\": [1, 2.5, \"a\\\"b\"], \"t\": true}");
    cr_assert_eq(length, strlen(bytes));
    free(bytes);
    cr_assert_null(host->json_encode(NULL, &length));
    json_decref(v);
}

Test(host, reply_json_on_a_line)
{
    pb_test_reply r;
    run(reply_json_value, PB_FRAMING_LINE, &r);
    cr_assert_eq(r.rc, PB_OK);
    cr_assert_str_eq((const char *)r.wire,
        "{\"é\": \"ü \\\"q\\\"\\n\", \"n\": 2.0}\n");
    pb_test_reply_free(&r);
}

static int reply_json_null(const pb_request *request, pb_reply *reply)
{
    return host->reply_json(reply, NULL);
}

Test(host, reply_json_of_nothing_fails)
{
    pb_test_reply r;
    run(reply_json_null, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_ERROR);
    cr_assert_str_eq(r.error, "plugin gave no JSON value to reply with (out of memory?)");
    pb_test_reply_free(&r);
}

static int reply_header(const pb_request *request, pb_reply *reply)
{
    const char *byteorder = host->json_string(host->json_get(request->header, "byteorder"),
                                              NULL);
    long long length = host->json_integer(host->json_get(request->header, "content-length"));
    char text[128];
    int n = snprintf(text, sizeof text, "%s %lld %s %s %s %d", byteorder, length,
                     request->content_type, request->content_encoding,
                     request->listener, request->instance == NULL);
    return host->reply_bytes(reply, "text/plain", "utf-8", text, (size_t)n);
}

Test(host, request_carries_the_header)
{
    pb_test_reply r;
    run(reply_header, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_OK);
    char expected[128];
    snprintf(expected, sizeof expected, "%s 26 text/json utf-8 harness 0", pb_host_byteorder());
    cr_assert_str_eq((const char *)r.content, expected);
    pb_test_reply_free(&r);
}

static int reply_in_buffer(const pb_request *request, pb_reply *reply)
{
    unsigned char *out = host->reply_buffer(reply, "binary/x", "binary", 100000);
    if (out == NULL)
        return PB_ERROR;
    for (size_t i = 0; i < 100000; i++)
        out[i] = (unsigned char)(i % 251);
    return PB_OK;
}

Test(host, reply_buffer_framed)
{
    pb_test_reply r;
    run(reply_in_buffer, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_OK);
    cr_assert_str_eq(r.content_type, "binary/x");
    cr_assert_str_eq(r.content_encoding, "binary");
    cr_assert_eq(r.content_length, 100000);
    for (size_t i = 0; i < 100000; i++)
        cr_assert_eq(r.content[i], (unsigned char)(i % 251));
    pb_test_reply_free(&r);
}

Test(host, reply_buffer_on_a_line)
{
    pb_test_reply r;
    run(reply_in_buffer, PB_FRAMING_LINE, &r);
    cr_assert_eq(r.rc, PB_OK);
    cr_assert_eq(r.wire_length, 100001);
    cr_assert_eq(r.wire[99999], (unsigned char)(99999 % 251));
    pb_test_reply_free(&r);
}

static int reply_empty_buffer(const pb_request *request, pb_reply *reply)
{
    return host->reply_buffer(reply, "text/plain", "utf-8", 0) != NULL ? PB_OK : PB_ERROR;
}

Test(host, reply_buffer_of_nothing)
{
    pb_test_reply r;
    run(reply_empty_buffer, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_OK);
    cr_assert_eq(r.content_length, 0);
    pb_test_reply_free(&r);
    run(reply_empty_buffer, PB_FRAMING_LINE, &r);
    cr_assert_eq(r.rc, PB_OK);
    cr_assert_eq(r.wire_length, 1);
    pb_test_reply_free(&r);
}

/* A content-type too long for a frame header: 70 000 letters, or 33 000
 * control characters that JSON writes as \u0001 (6 bytes each). */
static char *long_type(char c, size_t n)
{
    char *type = malloc(n + 1);
    cr_assert_not_null(type);
    memset(type, c, n);
    type[n] = '\0';
    return type;
}

static char *oversized_type;

static int reply_bytes_oversized(const pb_request *request, pb_reply *reply)
{
    return host->reply_bytes(reply, oversized_type, "utf-8", "x", 1);
}

static int reply_buffer_oversized(const pb_request *request, pb_reply *reply)
{
    return host->reply_buffer(reply, oversized_type, "utf-8", 1) != NULL ? PB_OK : PB_ERROR;
}

Test(host, a_reply_header_over_65535_bytes_says_so)
{
    static const struct {
        char c;
        size_t n;
        size_t encoded;
    } types[] = { { 'a', 70000, 70000 }, { '\x01', 33000, 6 * 33000 } };
    int (*const replies[])(const pb_request *, pb_reply *) = {
        reply_bytes_oversized, reply_buffer_oversized,
    };
    for (size_t t = 0; t < 2; t++) {
        oversized_type = long_type(types[t].c, types[t].n);
        char expected[128];
        snprintf(expected, sizeof expected,
                 "reply header is %zu bytes, more than the 65535 a frame can carry",
                 strlen("{\"byteorder\": \"\", \"content-type\": \"\", "
                        "\"content-encoding\": \"utf-8\", \"content-length\": 1}")
                     + strlen(pb_host_byteorder()) + types[t].encoded);
        for (size_t i = 0; i < 2; i++) {
            pb_test_reply r;
            run(replies[i], PB_FRAMING_FRAME, &r);
            cr_expect_eq(r.rc, PB_ERROR);
            cr_expect_str_eq(r.error, expected);
            pb_test_reply_free(&r);
        }
        free(oversized_type);
    }
}

static int reply_twice(const pb_request *request, pb_reply *reply)
{
    cr_assert_eq(host->reply_bytes(reply, "text/plain", "utf-8", "one", 3), PB_OK);
    cr_assert_eq(host->reply_bytes(reply, "text/plain", "utf-8", "two", 3), PB_ERROR);
    cr_assert_null(host->reply_buffer(reply, "text/plain", "utf-8", 3));
    cr_assert_eq(host->reply_json(reply, host->json_new_object()), PB_ERROR);
    return PB_OK;
}

Test(host, a_second_reply_fails_the_request)
{
    pb_test_reply r;
    run(reply_twice, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_ERROR);
    cr_assert_str_eq(r.error, "plugin replied more than once");
    pb_test_reply_free(&r);
}

static int no_reply(const pb_request *request, pb_reply *reply)
{
    return PB_OK;
}

Test(host, ok_without_a_reply_fails)
{
    pb_test_reply r;
    run(no_reply, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_ERROR);
    cr_assert_str_eq(r.error, "plugin returned no reply");
    pb_test_reply_free(&r);
}

static int silent_failure(const pb_request *request, pb_reply *reply)
{
    return PB_ERROR;
}

Test(host, error_without_a_reason_gets_one)
{
    pb_test_reply r;
    run(silent_failure, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_ERROR);
    cr_assert_str_eq(r.error, "plugin failed");
    pb_test_reply_free(&r);
}

static int reply_then_fail(const pb_request *request, pb_reply *reply)
{
    host->reply_bytes(reply, "text/plain", "utf-8", "partial", 7);
    host->reply_error(reply, "gave up after %d of %s", 3, "5");
    return PB_ERROR;
}

Test(host, a_failure_after_a_reply_undoes_it)
{
    pb_test_reply r;
    run(reply_then_fail, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_ERROR);
    cr_assert_str_eq(r.error, "gave up after 3 of 5");
    pb_test_reply_free(&r);
    run(reply_then_fail, PB_FRAMING_LINE, &r);
    cr_assert_eq(r.rc, PB_ERROR);
    pb_test_reply_free(&r);
}

static int long_error(const pb_request *request, pb_reply *reply)
{
    char text[1000];
    memset(text, 'e', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    host->reply_error(reply, "%s", text);
    return PB_ERROR;
}

Test(host, reply_error_text_is_cut_to_fit)
{
    pb_test_reply r;
    run(long_error, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_ERROR);
    cr_assert_eq(strlen(r.error), sizeof r.error - 1);
    pb_test_reply_free(&r);
}

static int bad_return(const pb_request *request, pb_reply *reply)
{
    host->reply_bytes(reply, "text/plain", "utf-8", "x", 1);
    return 7;
}

Test(host, an_unknown_return_value_is_a_failure)
{
    pb_test_reply r;
    run(bad_return, PB_FRAMING_FRAME, &r);
    cr_assert_eq(r.rc, PB_ERROR);
    cr_assert_str_eq(r.error, "plugin returned a status that is not PB_OK, "
                     "PB_ERROR or PB_DEFER");
    pb_test_reply_free(&r);
}

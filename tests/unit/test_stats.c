/*
 * test_stats.c - the stats plugin: it answers with the host's snapshot of
 * the counters, plugins' metrics included, as text/json, refuses settings,
 * and says so when the daemon has no statistics to give.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "plugin_harness.h"
#include "shared.h"

static pb_shared *shared;

static void map_shared(void)
{
    shared = pb_shared_create();
    cr_assert_not_null(shared);
    pb_plugin_host_set_shared(shared, 0);
}

static void unmap_shared(void)
{
    pb_plugin_host_set_shared(NULL, 0);
    pb_shared_destroy(shared);
}

TestSuite(stats, .init = map_shared, .fini = unmap_shared);

static pb_test_plugin *stats(void)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, NULL, NULL);
    cr_assert_eq(t->rc, PB_OK, "create failed: %s", pb_test_diag(t, 0));
    return t;
}

static void name_counter(pb_named_counter *c, const char *name, long messages)
{
    strcpy(c->name, name);
    atomic_store(&c->messages, messages);
    atomic_store(&c->used, 1);
}

/* The reply's content, parsed. */
static json_t *ask(pb_test_plugin *t)
{
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "text/json", "utf-8",
                                     "{\"action\": \"stats\"}", &r), PB_OK,
                 "stats failed: %s", r.error);
    cr_assert_str_eq(r.content_type, "text/json");
    cr_assert_str_eq(r.content_encoding, "utf-8");
    json_error_t err;
    json_t *reply = json_loadb((const char *)r.content, r.content_length, 0, &err);
    cr_assert_not_null(reply, "not JSON: %s", err.text);
    pb_test_reply_free(&r);
    return reply;
}

static json_int_t messages_of(const json_t *reply, const char *table,
                              const char *name)
{
    const json_t *entry = json_object_get(json_object_get(reply, table), name);
    cr_assert_not_null(entry, "no %s \"%s\"", table, name);
    return json_integer_value(json_object_get(entry, "messages"));
}

Test(stats, answers_with_the_counters_summed_over_workers)
{
    atomic_store(&shared->workers, 2);
    atomic_store(&shared->slots[0].messages, 3);
    atomic_store(&shared->slots[1].messages, 4);
    atomic_store(&shared->slots[1].errors[PB_ERR_NO_ROUTE], 1);
    name_counter(&shared->slots[0].instances[0], "echo", 2);
    name_counter(&shared->slots[1].instances[0], "echo", 5);
    name_counter(&shared->slots[1].routes[0], "1: text/caf\xC3\xA9 -> echo", 5);

    pb_test_plugin *t = stats();
    json_t *reply = ask(t);
    cr_assert_eq(json_integer_value(json_object_get(reply, "messages")), 7);
    cr_assert_eq(json_integer_value(json_object_get(reply, "workers")), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(reply, "errors"),
                                                    "no_route")), 1);
    cr_assert_eq(messages_of(reply, "plugins", "echo"), 7);
    cr_assert_eq(messages_of(reply, "routes", "1: text/caf\xC3\xA9 -> echo"), 5);
    json_decref(reply);
    pb_test_plugin_free(t);
}

Test(stats, answers_with_the_metrics_of_plugins)
{
    atomic_store(&shared->workers, 2);
    for (int slot = 0; slot < 2; slot++) {
        int at = pb_metric_index(shared, slot, "queue", "ready", "jobs",
                                 PB_METRIC_GAUGE);
        cr_assert_geq(at, 0);
        pb_metric_entry_set(&shared->slots[slot].metrics[at], 3);
    }

    pb_test_plugin *t = stats();
    json_t *reply = ask(t);
    cr_assert_eq(messages_of(reply, "plugins", "queue"), 0);
    const json_t *metrics = json_object_get(
        json_object_get(json_object_get(reply, "plugins"), "queue"), "metrics");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(metrics, "ready"),
                                                    "jobs")), 6);
    json_decref(reply);
    pb_test_plugin_free(t);
}

/* A counter whose name JSON cannot hold used to corrupt the heap of the
 * worker that answered (test_shared.c makes that write visible). */
Test(stats, a_counter_name_that_is_not_utf8_is_left_out)
{
    name_counter(&shared->slots[0].routes[0], "1: text/\xC3 -> echo", 1);
    name_counter(&shared->slots[0].routes[1], "2: * -> echo", 2);

    pb_test_plugin *t = stats();
    json_t *reply = ask(t);
    cr_assert_eq(json_object_size(json_object_get(reply, "routes")), 1);
    cr_assert_eq(messages_of(reply, "routes", "2: * -> echo"), 2);
    json_decref(reply);
    pb_test_plugin_free(t);
}

Test(stats, answers_any_content_in_either_framing)
{
    pb_test_plugin *t = stats();
    pb_test_reply r;
    cr_assert_eq(pb_test_handle(t, PB_FRAMING_LINE, "text/plain", "utf-8",
                                "stats", 5, &r), PB_OK);
    cr_assert_eq(r.content[0], '{');
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(stats, fails_when_the_daemon_keeps_no_counters)
{
    pb_test_plugin *t = stats();
    pb_plugin_host_set_shared(NULL, 0);
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "text/json", "utf-8", "{}", &r), PB_ERROR);
    cr_assert_str_eq(r.error, "statistics are not available");
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(stats, refuses_settings)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor,
                                           "{\"verbose\": true}", NULL);
    cr_assert_eq(t->rc, PB_ERROR);
    cr_assert_str_eq(pb_test_diag(t, 0),
                     "harness.conf:1: plugin stats: stats takes no settings");
    pb_test_plugin_free(t);
}

/* A daemon older than the statistics service hands a shorter host table. */
Test(stats, refuses_to_start_on_a_daemon_without_the_service)
{
    pb_test_plugin *t = stats();
    pb_host older = pb_host_services;
    older.size = offsetof(pb_host, stats);
    void *state = NULL;
    t->instance.diag = &t->diag;        /* as while the daemon creates it */
    cr_assert_eq(pb_plugin_descriptor.create(&older, &t->instance,
                                             (const pb_json *)t->conf.settings,
                                             &state), PB_ERROR);
    cr_assert_str_eq(pb_test_diag(t, 0),
                     "harness.conf:1: plugin stats: this daemon offers no "
                     "statistics service");
    t->instance.diag = NULL;
    pb_test_plugin_free(t);
}

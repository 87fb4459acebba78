/*
 * test_prometheus.c - the snapshot as Prometheus text (daemon/prometheus.c):
 * exact lines of a hand-made snapshot's families, escaping, histograms,
 * the mapping of plugins' metrics, and a realistic snapshot through
 * promtool when it is installed.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prometheus.h"
#include "shared.h"

#define PROMTOOL "/usr/bin/promtool"

/* The exposition of a snapshot given as JSON text, NUL-terminated. */
static char *expose(const char *json)
{
    json_error_t error;
    json_t *snapshot = json_loads(json, 0, &error);
    cr_assert_not_null(snapshot, "%s", error.text);
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_prometheus_write(&out, snapshot), 0);
    json_decref(snapshot);
    char *text = strndup(out.data ? (char *)pb_buf_head(&out) : "", pb_buf_used(&out));
    pb_buf_free(&out);
    return text;
}

/* Whether text holds line as a whole line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p != NULL; p = strstr(p + 1, line))
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

#define expect_line(text, line) \
    cr_expect(has_line(text, line), "no line \"%s\" in:\n%s", line, text)

static const char *daemon_snapshot =
    "{\"version\": \"1.2.3\", \"abi\": 2, \"uptime\": 12.5, \"generation\": 3,"
    " \"reloads\": 2, \"failed_reloads\": 1, \"worker_restarts\": 0, \"workers\": 2,"
    " \"connections\": {\"open\": 3, \"accepted\": 10, \"refused\": 4,"
    "   \"refused_by\": {\"busy\": 1, \"allow\": 2, \"tls\": 1}},"
    " \"messages\": 7, \"bytes\": {\"in\": 100, \"out\": 200},"
    " \"errors\": {\"bad_json\": 2, \"no_route\": 0},"
    " \"listeners\": {\"app\": {\"open\": 3, \"accepted\": 10}},"
    " \"routes\": {\"1: text/json action search -> search\": {\"messages\": 5, \"errors\": 0},"
    "   \"2: * -> rt\": {\"messages\": 2, \"errors\": 1}},"
    " \"plugins\": {}}";

Test(prometheus, the_daemons_families_have_help_type_and_values)
{
    char *text = expose(daemon_snapshot);
    expect_line(text, "# HELP plugboard_up Whether the daemon answered; always 1.");
    expect_line(text, "# TYPE plugboard_up gauge");
    expect_line(text, "plugboard_up 1");
    expect_line(text, "# TYPE plugboard_build_info gauge");
    expect_line(text, "plugboard_build_info{version=\"1.2.3\",abi=\"2\"} 1");
    expect_line(text, "plugboard_uptime_seconds 12.5");
    expect_line(text, "plugboard_workers 2");
    expect_line(text, "plugboard_generation 3");
    expect_line(text, "# TYPE plugboard_reloads_total counter");
    expect_line(text, "plugboard_reloads_total 2");
    expect_line(text, "plugboard_reload_failures_total 1");
    expect_line(text, "plugboard_worker_restarts_total 0");
    expect_line(text, "plugboard_connections_open{listener=\"app\"} 3");
    expect_line(text, "# TYPE plugboard_connections_total counter");
    expect_line(text, "plugboard_connections_total{listener=\"app\"} 10");
    expect_line(text, "plugboard_connections_refused_total{reason=\"allow\"} 2");
    expect_line(text, "plugboard_connections_refused_total{reason=\"busy\"} 1");
    expect_line(text, "plugboard_connections_refused_total{reason=\"tls\"} 1");
    expect_line(text, "plugboard_messages_total{route=\"1: text/json action search -> search\","
                      "plugin=\"search\"} 5");
    expect_line(text, "plugboard_messages_total{route=\"2: * -> rt\",plugin=\"rt\"} 2");
    expect_line(text, "plugboard_errors_total{code=\"bad_json\"} 2");
    expect_line(text, "plugboard_errors_total{code=\"no_route\"} 0");
    expect_line(text, "plugboard_received_bytes_total 100");
    expect_line(text, "plugboard_sent_bytes_total 200");
    free(text);
}

/* Every sample's family was introduced by # HELP and # TYPE before it. */
Test(prometheus, every_family_is_introduced_before_its_samples)
{
    char *text = expose(daemon_snapshot);
    char *copy = strdup(text);
    char typed[64][128];
    int n_typed = 0, helped = 0;
    for (char *line = strtok(copy, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char name[128];
        if (sscanf(line, "# HELP %127s", name) == 1) {
            helped++;
        } else if (sscanf(line, "# TYPE %127s", name) == 1) {
            cr_assert_lt(n_typed, 64);
            snprintf(typed[n_typed++], sizeof typed[0], "%s", name);
        } else {
            size_t len = strcspn(line, "{ ");
            int known = 0;
            for (int i = 0; i < n_typed; i++)
                known |= strlen(typed[i]) == len && strncmp(typed[i], line, len) == 0;
            cr_expect(known, "sample before its family: %s", line);
        }
    }
    cr_expect_eq(helped, n_typed);
    free(copy);
    free(text);
}

Test(prometheus, label_values_are_escaped)
{
    char *text = expose("{\"listeners\": {\"a\\\"b\\\\c\\nd\": {\"open\": 1, \"accepted\": 2}}}");
    expect_line(text, "plugboard_connections_open{listener=\"a\\\"b\\\\c\\nd\"} 1");
    expect_line(text, "plugboard_connections_total{listener=\"a\\\"b\\\\c\\nd\"} 2");
    free(text);
}

Test(prometheus, help_text_is_escaped)
{
    char *text = expose("{\"plugins\": {\"p\": {\"module\": \"we\\\\ird\\nname\","
                        " \"metrics\": {\"x\": 1}, \"metric_kinds\": {\"x\": \"gauge\"}}}}");
    expect_line(text, "# HELP plugboard_we_ird_name_x Metric \"x\" of the we\\\\ird\\nname plugin.");
    expect_line(text, "plugboard_we_ird_name_x{instance=\"p\"} 1");
    free(text);
}

Test(prometheus, a_histogram_has_cumulative_buckets_up_to_inf_a_sum_and_a_count)
{
    char *text = expose(
        "{\"plugins\": {\"search\": {\"messages\": 5, \"errors\": 0, \"latency\":"
        " {\"count\": 5, \"sum\": 0.00042,"
        "  \"buckets\": [[0.00005, 1], [0.0001, 3], [10, 5], [\"+Inf\", 5]]}}}}");
    expect_line(text, "# TYPE plugboard_request_duration_seconds histogram");
    expect_line(text, "plugboard_request_duration_seconds_bucket{plugin=\"search\",le=\"5e-05\"} 1");
    expect_line(text, "plugboard_request_duration_seconds_bucket{plugin=\"search\",le=\"0.0001\"} 3");
    expect_line(text, "plugboard_request_duration_seconds_bucket{plugin=\"search\",le=\"10\"} 5");
    expect_line(text, "plugboard_request_duration_seconds_bucket{plugin=\"search\",le=\"+Inf\"} 5");
    expect_line(text, "plugboard_request_duration_seconds_sum{plugin=\"search\"} 0.00042");
    expect_line(text, "plugboard_request_duration_seconds_count{plugin=\"search\"} 5");
    free(text);
}

Test(prometheus, plugins_metrics_are_named_after_their_module_and_typed_by_kind)
{
    char *text = expose(
        "{\"plugins\": {"
        " \"pubsub\": {\"module\": \"pubsub\", \"metrics\": {\"subscribers\": 4, \"published\": 9},"
        "   \"metric_kinds\": {\"subscribers\": \"gauge\", \"published\": \"counter\"}},"
        " \"jobs\": {\"module\": \"queue\", \"metrics\": {\"ready\": {\"mail\": 3, \"sms\": 1},"
        "   \"enqueued\": 12}, \"metric_kinds\": {\"ready\": \"shared\", \"enqueued\": \"counter\"}},"
        " \"q2\": {\"module\": \"queue\", \"metrics\": {\"ready\": {\"mail\": 7}},"
        "   \"metric_kinds\": {\"ready\": \"shared\"}},"
        " \"odd\": {\"metrics\": {\"a-b\": 1}}}}");
    expect_line(text, "# TYPE plugboard_pubsub_subscribers gauge");
    expect_line(text, "plugboard_pubsub_subscribers 4");
    expect_line(text, "# TYPE plugboard_pubsub_published_total counter");
    expect_line(text, "plugboard_pubsub_published_total 9");
    expect_line(text, "# TYPE plugboard_queue_ready gauge");
    expect_line(text, "plugboard_queue_ready{instance=\"jobs\",queue=\"mail\"} 3");
    expect_line(text, "plugboard_queue_ready{instance=\"jobs\",queue=\"sms\"} 1");
    expect_line(text, "plugboard_queue_ready{instance=\"q2\",queue=\"mail\"} 7");
    expect_line(text, "plugboard_queue_enqueued_total{instance=\"jobs\"} 12");
    expect_line(text, "# TYPE plugboard_odd_a_b untyped");
    expect_line(text, "plugboard_odd_a_b 1");
    /* One header for a family that two instances share. */
    const char *first = strstr(text, "# TYPE plugboard_queue_ready ");
    cr_expect_null(strstr(first + 1, "# TYPE plugboard_queue_ready "));
    free(text);
}

Test(prometheus, a_plugin_family_never_takes_a_daemon_name)
{
    char *text = expose(
        "{\"errors\": {\"busy\": 1}, \"plugins\": {\"p\": {\"module\": \"errors\","
        " \"metrics\": {\"x\": 5}, \"metric_kinds\": {\"x\": \"gauge\"}},"
        " \"e\": {\"module\": \"sent\", \"metrics\": {\"bytes\": 5},"
        " \"metric_kinds\": {\"bytes\": \"counter\"}}}}");
    expect_line(text, "plugboard_errors_x{instance=\"p\"} 5");
    cr_expect_null(strstr(text, "plugboard_sent_bytes_total{"), "%s", text);
    free(text);
}

Test(prometheus, output_is_appended_after_what_the_buffer_holds)
{
    pb_buf out = PB_BUF_INIT;
    pb_buf_append_str(&out, "before\n");
    json_t *empty = json_object();
    cr_assert_eq(pb_prometheus_write(&out, empty), 0);
    json_decref(empty);
    cr_assert_eq(strncmp((char *)pb_buf_head(&out), "before\n# HELP plugboard_up ", 27), 0);
    pb_buf_free(&out);
}

/* --- promtool ------------------------------------------------------------------ */

/* A snapshot of a daemon that has served: counters, listeners, latency,
 * plugins' metrics of each kind, as the shared statistics report them. */
static json_t *realistic_snapshot(pb_shared *shared)
{
    pb_shared_set_pid(shared, 0, 4242);
    pb_shared_set_pid(shared, 1, 4243);
    atomic_store(&shared->workers, 2);
    for (int slot = 0; slot < 2; slot++) {
        pb_stats_rebind(shared, slot);
        int search = pb_stats_instance_index(shared, slot, "search", "search");
        int jobs = pb_stats_instance_index(shared, slot, "jobs", "queue");
        int route = pb_stats_index(shared, slot, PB_STATS_ROUTES,
                                   "1: text/json action search -> search");
        int app = pb_stats_listener_index(shared, slot, "app");
        cr_assert(search >= 0 && jobs >= 0 && route >= 0 && app >= 0);
        pb_worker_stats *w = &shared->slots[slot];
        atomic_fetch_add(&w->instances[search].messages, 3);
        atomic_fetch_add(&w->routes[route].messages, 3);
        pb_latency_record(&w->latency[search], 30000);
        pb_latency_record(&w->latency[search], 700000);
        pb_latency_record(&w->latency[search], 20000000000LL);
        pb_stats_listener_open(shared, slot, app);
        atomic_fetch_add(&w->errors[PB_ERR_BAD_JSON], 1);
        int ready = pb_metric_index(shared, slot, "jobs", "ready", "mail", PB_METRIC_SHARED);
        int enqueued = pb_metric_index(shared, slot, "jobs", "enqueued", NULL,
                                       PB_METRIC_COUNTER);
        int subscribers = pb_metric_index(shared, slot, "search", "subscribers", NULL,
                                          PB_METRIC_GAUGE);
        cr_assert(ready >= 0 && enqueued >= 0 && subscribers >= 0);
        pb_metric_entry_set(&w->metrics[ready], 5);
        pb_metric_entry_add(&w->metrics[enqueued], 8);
        pb_metric_entry_add(&w->metrics[subscribers], 2);
    }
    json_t *snapshot = pb_stats_snapshot(shared);
    cr_assert_not_null(snapshot);
    return snapshot;
}

Test(prometheus, promtool_accepts_a_realistic_snapshot)
{
    if (access(PROMTOOL, X_OK) != 0)
        cr_skip_test("no " PROMTOOL " (Debian package prometheus)");
    pb_shared *shared = pb_shared_create();
    cr_assert_not_null(shared);
    json_t *snapshot = realistic_snapshot(shared);
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_prometheus_write(&out, snapshot), 0);
    json_decref(snapshot);
    pb_shared_destroy(shared);

    char path[] = "/tmp/test_prometheus.XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, pb_buf_head(&out), pb_buf_used(&out)), (ssize_t)pb_buf_used(&out));
    close(fd);
    char command[256];
    snprintf(command, sizeof command, PROMTOOL " check metrics < %s 2>&1", path);
    FILE *p = popen(command, "r");
    cr_assert_not_null(p);
    char said[4096];
    size_t n = fread(said, 1, sizeof said - 1, p);
    said[n] = '\0';
    int status = pclose(p);
    unlink(path);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "promtool check metrics failed: %s\non:\n%.*s", said,
              (int)pb_buf_used(&out), (char *)pb_buf_head(&out));
    pb_buf_free(&out);
}

/*
 * test_metrics.c - plugins' metrics against the real daemon with two
 * workers: counters, gauges and shared levels combined over the workers
 * in the stats reply, beside the daemon's own counters, and what each
 * keeps when a worker dies and when the configuration is reloaded.
 */
#include <criterion/criterion.h>
#include <plugboard/plugin.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(metrics, .init = pb_harness_init, .fini = pb_harness_cleanup,
          .timeout = 120);

#define FIXTURES PB_TEST_BUILDDIR "/tests/fixtures/.libs"

#define CONF(answer) \
    PB_T_CONF_HEAD "workers = 2;\n" \
    "listeners = ( { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; } );\n" \
    "plugins = (\n" \
    "  { name = \"rt\"; module = \"" FIXTURES "/runtime.so\"; },\n" \
    "  { name = \"stats\"; module = \"stats\"; },\n" \
    "  { name = \"search\"; module = \"search\";\n" \
    "    settings = { entries = ( (\"morpheus\", \"" answer "\") ); }; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; action = \"search\"; plugin = \"search\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"rt\"; }\n" \
    ");\n"

/* Sends json on a new connection; the result. */
static char *ask(const pb_daemon *d, const char *json)
{
    int fd = pb_dial(d, 0);
    pb_t_send_frame(d, fd, "text/json", "utf-8", json, strlen(json));
    char *got = pb_t_recv_result(d, fd);
    close(fd);
    return got;
}

/* Updates a metric of "rt"; the pid of the worker that did. */
static pid_t update(const pb_daemon *d, const char *fields)
{
    char json[256];
    snprintf(json, sizeof json, "{\"action\": \"metric\", %s}", fields);
    char *got = ask(d, json);
    pid_t pid = (pid_t)atol(got);
    cr_assert_gt(pid, 0, "%s answered \"%s\"", json, got);
    free(got);
    return pid;
}

static long long stat_of(const pb_daemon *d, const char *path)
{
    json_t *s = pb_t_stats(d);
    long long value = pb_t_stat_path(s, path);
    json_decref(s);
    return value;
}

#define UPDATES 10
#define MAX_UPDATES 500
#define GAUGE_UPDATES 6
#define SHARED_UPDATES 5

Test(metrics, combined_over_workers_and_kept_across_a_crash_and_a_reload)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("before"));

    /* Until both workers have counted: the sum is then over two slots. */
    long long published = 0;
    pid_t first = 0;
    int both = 0;
    for (int i = 0; (i < UPDATES || !both) && i < MAX_UPDATES; i++) {
        pid_t pid = update(&d, "\"name\": \"published\", \"kind\": \"counter\", "
                               "\"add\": 2");
        published += 2;
        if (first == 0)
            first = pid;
        both |= pid != first;
    }
    cr_assert(both, "one worker took all %d connections", MAX_UPDATES);
    cr_log_info("counted by two workers in %lld updates", published / 2);
    /* The gauge's share of each worker, to know what a crash takes away. */
    pid_t gauge_pid[GAUGE_UPDATES];
    for (int i = 0; i < GAUGE_UPDATES; i++)
        gauge_pid[i] = update(&d, "\"name\": \"ready\", \"label\": \"jobs\", "
                                  "\"kind\": \"gauge\", \"add\": 1");
    for (int i = 1; i <= SHARED_UPDATES; i++) {
        char fields[128];
        snprintf(fields, sizeof fields,
                 "\"name\": \"depth\", \"kind\": \"shared\", \"set\": %d", i);
        update(&d, fields);
    }
    char *refused = ask(&d, "{\"action\": \"metric\", \"name\": \"no spaces\"}");
    cr_expect_str_eq(refused, "refused");
    free(refused);
    const long long rt_messages = published / 2 + GAUGE_UPDATES + SHARED_UPDATES + 1;

    cr_expect_eq(stat_of(&d, "plugins.rt.metrics.published"), published);
    cr_expect_eq(stat_of(&d, "plugins.rt.metrics.ready.jobs"), GAUGE_UPDATES);
    cr_expect_eq(stat_of(&d, "plugins.rt.metrics.depth"), SHARED_UPDATES);
    cr_expect_eq(stat_of(&d, "plugins.rt.messages"), rt_messages);
    cr_expect_eq(stat_of(&d, "plugins.rt.errors"), 0);
    json_t *s = pb_t_stats(&d);
    cr_expect_null(json_object_get(json_object_get(json_object_get(s, "plugins"),
                                                   "stats"), "metrics"),
                   "an instance without metrics has no \"metrics\"");
    json_decref(s);
    char *log = pb_daemon_log(&d);
    cr_expect(strstr(log, "warning: plugin rt: metric name \"no spaces\" refused") != NULL,
              "%s", log);
    free(log);

    /* A crash: the counter and the shared level stay, the dead worker's
     * share of the gauge goes. */
    pid_t victim = gauge_pid[0];
    long long survivors = 0;
    for (int i = 0; i < GAUGE_UPDATES; i++)
        survivors += gauge_pid[i] != victim;
    cr_assert_eq(kill(victim, SIGKILL), 0);
    cr_assert_eq(pb_t_wait_stat(&d, "worker_restarts", 1), 1);
    cr_expect_eq(stat_of(&d, "plugins.rt.metrics.published"), published);
    cr_expect_eq(stat_of(&d, "plugins.rt.metrics.ready.jobs"),
                 survivors > 0 ? survivors : -1);
    cr_expect_eq(stat_of(&d, "plugins.rt.metrics.depth"), SHARED_UPDATES);
    cr_expect_eq(stat_of(&d, "plugins.rt.messages"), rt_messages);

    /* A reload: every worker keeps counting on top of what was counted. */
    pb_daemon_write_config(&d, CONF("after"));
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 1), 1);
    for (int i = 0; i < UPDATES; i++)
        update(&d, "\"name\": \"published\", \"kind\": \"counter\", \"add\": 1");
    update(&d, "\"name\": \"depth\", \"kind\": \"shared\", \"set\": 42");
    cr_expect_eq(stat_of(&d, "plugins.rt.metrics.published"), published + UPDATES);
    cr_expect_eq(stat_of(&d, "plugins.rt.metrics.depth"), 42);
    cr_expect_eq(stat_of(&d, "plugins.rt.messages"), rt_messages + UPDATES + 1);
    cr_expect_eq(stat_of(&d, "retired.metrics"), 0);
    pb_daemon_stop_clean(&d);
}

/* --- Listeners, workers and request durations ---------------------------------- */

#define SEARCHES 20
#define DEFER_SECONDS 0.03

/* The stats reply once `open` connections are open on "app": the
 * harness's own connections from before may take a moment to close. */
static json_t *stats_with_open(const pb_daemon *d, long long open)
{
    for (int i = 0; i < 500; i++) {
        json_t *s = pb_t_stats(d);
        if (pb_t_stat_path(s, "listeners.app.open") == open)
            return s;
        json_decref(s);
        usleep(20000);
    }
    cr_assert_fail("\"app\" never had %lld connections open", open);
    return NULL;
}

/* Cumulative count of the bucket with upper bound `le` (NULL: +Inf). */
static long long bucket_at(const json_t *stats, const char *instance, const char *le)
{
    const json_t *buckets = json_object_get(json_object_get(json_object_get(
        json_object_get(stats, "plugins"), instance), "latency"), "buckets");
    size_t i;
    const json_t *b;
    json_array_foreach(buckets, i, b) {
        const json_t *bound = json_array_get(b, 0);
        char text[32] = "+Inf";
        if (json_is_number(bound))
            snprintf(text, sizeof text, "%g", json_number_value(bound));
        if (strcmp(text, le ? le : "+Inf") == 0)
            return json_integer_value(json_array_get(b, 1));
    }
    return -1;
}

Test(metrics, listeners_workers_and_durations_in_the_stats_reply)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("found"));
    pid_t pids[4];
    cr_assert_eq(pb_daemon_wait_workers(&d, pids, 4, 2), 2);

    /* Everything on one connection, kept open: no close is in flight when
     * the counts are read. */
    int fd = pb_dial(&d, 0);
    static const char search[] = "{\"action\": \"search\", \"value\": \"morpheus\"}";
    for (int i = 0; i < SEARCHES; i++) {
        pb_t_send_frame(&d, fd, "text/json", "utf-8", search, sizeof search - 1);
        char *got = pb_t_recv_result(&d, fd);
        cr_expect_str_eq(got, "found");
        free(got);
    }
    char timer[128];
    snprintf(timer, sizeof timer,
             "{\"action\": \"timer\", \"value\": \"late\", \"delay\": %g}", DEFER_SECONDS);
    pb_t_send_frame(&d, fd, "text/json", "utf-8", timer, strlen(timer));
    char *late = pb_t_recv_result(&d, fd);
    cr_expect_str_eq(late, "late");
    free(late);

    /* This connection, and the one asking. */
    json_t *s = stats_with_open(&d, 2);
    cr_expect_eq(pb_t_stat_path(s, "listeners.app.accepted"),
                 pb_t_stat_path(s, "connections.accepted"));
    cr_expect_eq(pb_t_stat_path(s, "listeners.app.open"),
                 pb_t_stat_path(s, "connections.open"));

    cr_expect_eq(pb_t_stat_path(s, "plugins.search.latency.count"), SEARCHES);
    cr_expect_eq(bucket_at(s, "search", NULL), SEARCHES);
    cr_expect_eq(pb_t_stat_path(s, "plugins.rt.latency.count"), 1);
    cr_expect_eq(bucket_at(s, "rt", "0.025"), 0,
                 "a reply deferred %g s is counted above its delay", DEFER_SECONDS);
    cr_expect_eq(bucket_at(s, "rt", NULL), 1);
    double rt_sum = json_real_value(json_object_get(json_object_get(json_object_get(
        json_object_get(s, "plugins"), "rt"), "latency"), "sum"));
    cr_expect_geq(rt_sum, DEFER_SECONDS);
    cr_expect_str_eq(json_string_value(json_object_get(
                         json_object_get(json_object_get(s, "plugins"), "search"), "module")),
                     "search");

    const json_t *list = json_object_get(s, "worker_list");
    cr_assert_eq(json_array_size(list), 2, "two workers listed");
    long long connections = 0, messages = 0;
    size_t i;
    const json_t *w;
    json_array_foreach(list, i, w) {
        pid_t pid = (pid_t)pb_t_stat_path(w, "pid");
        cr_expect(pid == pids[0] || pid == pids[1], "pid %d is no worker", (int)pid);
        connections += pb_t_stat_path(w, "connections");
        messages += pb_t_stat_path(w, "messages");
    }
    cr_expect_neq(pb_t_stat_path(json_array_get(list, 0), "pid"),
                  pb_t_stat_path(json_array_get(list, 1), "pid"));
    cr_expect_eq(connections, pb_t_stat_path(s, "connections.open"));
    cr_expect_eq(messages, pb_t_stat_path(s, "messages"));
    cr_expect_str_eq(json_string_value(json_object_get(s, "version")), PACKAGE_VERSION);
    cr_expect_eq(pb_t_stat_path(s, "abi"), PLUGBOARD_ABI_VERSION);
    json_decref(s);
    close(fd);
    pb_daemon_stop_clean(&d);
}

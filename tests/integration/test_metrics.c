/*
 * test_metrics.c - plugins' metrics against the real daemon with two
 * workers: counters, gauges and shared levels combined over the workers
 * in the stats reply, beside the daemon's own counters, and what each
 * keeps when a worker dies and when the configuration is reloaded.
 */
#include <criterion/criterion.h>
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

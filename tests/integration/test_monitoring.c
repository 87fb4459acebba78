/*
 * test_monitoring.c - what operators' tools see of a daemon that served
 * known traffic: /metrics checked by Prometheus' own `promtool` and read
 * back, and the status page rendered by headless Chromium with those same
 * counters in it. Each tool is a Debian package CI installs (prometheus,
 * chromium); without it, its test is skipped and says so.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(monitoring, .init = pb_harness_init, .fini = pb_harness_cleanup);

#define CONF \
    PB_T_CONF_HEAD "workers = 1;\n" \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; },\n" \
    "  { name = \"http\"; address = \"127.0.0.1\"; port = @PORT1@; framing = \"http\"; }\n" \
    ");\n" \
    "plugins = (\n" \
    "  { name = \"search\"; module = \"search\";\n" \
    "    settings = { entries = ( (\"morpheus\", \"Follow the white rabbit.\") ); }; },\n" \
    "  { name = \"pubsub\"; module = \"pubsub\"; },\n" \
    "  { name = \"queue\"; module = \"queue\"; settings = { path = \"@DIR@/queue.db\"; }; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"publish\"; plugin = \"pubsub\"; },\n" \
    "  { content_type = \"text/json\"; action = \"enqueue\"; plugin = \"queue\"; },\n" \
    "  { content_type = \"text/json\"; action = \"depth\"; plugin = \"queue\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"search\"; }\n" \
    ");\n"

#define SEARCHES 7

static const char *tool(const char *const candidates[])
{
    for (size_t i = 0; candidates[i] != NULL; i++)
        if (access(candidates[i], X_OK) == 0)
            return candidates[i];
    return NULL;
}

/* POSTs one JSON message over the http listener and expects 200. */
static void post(const pb_daemon *d, int fd, const char *json)
{
    char request[512];
    snprintf(request, sizeof request,
             "POST / HTTP/1.1\r\nHost: test\r\nContent-Type: text/json\r\n"
             "Content-Length: %zu\r\n\r\n%s", strlen(json), json);
    pb_t_expect_http(d, fd, request, 200, NULL, NULL);
}

/* Known traffic: SEARCHES searches, a publish, an enqueue and the depth
 * that makes the queue's levels known. */
static void serve_traffic(const pb_daemon *d)
{
    int fd = pb_dial(d, 1);
    for (int i = 0; i < SEARCHES; i++)
        post(d, fd, "{\"action\": \"search\", \"value\": \"morpheus\"}");
    post(d, fd, "{\"action\": \"publish\", \"topic\": \"news\", \"message\": 1}");
    post(d, fd, "{\"action\": \"enqueue\", \"queue\": \"jobs\", \"message\": \"x\"}");
    post(d, fd, "{\"action\": \"depth\", \"queue\": \"jobs\"}");
    close(fd);
}

static char *get(const pb_daemon *d, const char *path)
{
    char request[256];
    snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path);
    int fd = pb_dial(d, 1);
    pb_t_send(d, fd, request, strlen(request));
    pb_t_http r;
    pb_t_recv_http(d, fd, 0, &r);
    cr_assert_eq(r.status, 200, "GET %s: %d", path, r.status);
    char *body = strndup((const char *)pb_buf_head(&r.body), pb_buf_used(&r.body));
    pb_t_http_free(&r);
    close(fd);
    return body;
}

/* The value of the sample whose line starts with `series` ("name{labels}"
 * or "name"), or -1. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return -1;
}

Test(monitoring, metrics_pass_promtool_and_count_what_was_served)
{
    static const char *const candidates[] = { "/usr/bin/promtool", "/usr/local/bin/promtool", NULL };
    const char *promtool = tool(candidates);
    if (promtool == NULL)
        cr_skip_test("promtool is not installed (Debian package prometheus)");
    pb_daemon d;
    pb_daemon_start(&d, CONF);
    serve_traffic(&d);
    char *metrics = get(&d, "/metrics");

    const char *argv[] = { promtool, "check", "metrics", NULL };
    pb_run_result r;
    pb_run(argv, NULL, metrics, strlen(metrics), &r);
    cr_expect_eq(r.status, 0, "promtool check metrics exited %d:\n%s%s", r.status, r.out, r.err);
    pb_run_free(&r);

    cr_expect_eq(sample(metrics, "plugboard_up"), 1);
    cr_expect_eq(sample(metrics, "plugboard_messages_total{route=\"4: text/json -> search\","
                                 "plugin=\"search\"}"), SEARCHES, "\n%s", metrics);
    cr_expect_eq(sample(metrics, "plugboard_request_duration_seconds_count{plugin=\"search\"}"),
                 SEARCHES, "\n%s", metrics);
    cr_expect_eq(sample(metrics, "plugboard_pubsub_published_total"), 1, "\n%s", metrics);
    cr_expect_eq(sample(metrics, "plugboard_queue_enqueued_total"), 1, "\n%s", metrics);
    cr_expect_eq(sample(metrics, "plugboard_queue_ready{queue=\"jobs\"}"), 1, "\n%s", metrics);
    free(metrics);
    pb_daemon_stop_clean(&d);
}

Test(monitoring, the_status_page_renders_live_counters_in_chromium, .timeout = 120)
{
    static const char *const candidates[] = { "/usr/bin/chromium", "/usr/bin/chromium-browser",
                                               "/usr/bin/google-chrome", NULL };
    const char *chromium = tool(candidates);
    if (chromium == NULL)
        cr_skip_test("chromium is not installed (Debian package chromium)");
    pb_daemon d;
    pb_daemon_start(&d, CONF);
    serve_traffic(&d);
    pid_t workers[2];
    cr_assert_eq(pb_daemon_wait_workers(&d, workers, 2, 1), 1);

    char url[64], home[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", d.port[1]);
    snprintf(home, sizeof home, "HOME=%s", d.dir);
    const char *argv[] = { chromium, "--headless", "--no-sandbox", "--disable-gpu",
                           "--no-first-run", "--dump-dom", url, NULL };
    const char *env[] = { home, NULL };
    pb_run_result r;
    pb_run(argv, env, NULL, 0, &r);
    cr_assert_eq(r.status, 0, "chromium exited %d:\n%s", r.status, r.err);
    char want[128];
    snprintf(want, sizeof want, "<td>search</td><td>%d</td>", SEARCHES);
    cr_expect(strstr(r.out, want) != NULL, "no %s in the rendered page:\n%s", want, r.out);
    snprintf(want, sizeof want, "<td>%ld</td>", (long)workers[0]);
    cr_expect(strstr(r.out, want) != NULL, "the worker's pid %s is not on the page", want);
    cr_expect(strstr(r.out, "jobs") != NULL, "the queue is not on the page");
    pb_run_free(&r);
    pb_daemon_stop_clean(&d);
}

/*
 * test_runtime.c - the plugin runtime against the real daemon: deferred
 * replies (from a timer and from a thread) in request order, a reply whose
 * client left, a blocking plugin on a thread pool, max_inflight, pushes and
 * the close notification, where a request came from, an ABI 1 plugin, and
 * a deferred reply across a reload.
 */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(runtime, .init = pb_harness_init, .fini = pb_harness_cleanup);

#define FIXTURES PB_TEST_BUILDDIR "/tests/fixtures/.libs"

#define CONF(limits, answer) \
    PB_T_CONF_HEAD "workers = 1;\n" limits \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; },\n" \
    "  { name = \"local\"; path = \"@SOCK@\"; }\n" \
    ");\n" \
    "plugins = (\n" \
    "  { name = \"rt\"; module = \"" FIXTURES "/runtime.so\"; },\n" \
    "  { name = \"blocking\"; module = \"" FIXTURES "/runtime.so\"; threads = 4; },\n" \
    "  { name = \"old\"; module = \"" FIXTURES "/abi1.so\"; },\n" \
    "  { name = \"stats\"; module = \"stats\"; },\n" \
    "  { name = \"search\"; module = \"search\";\n" \
    "    settings = { entries = ( (\"morpheus\", \"" answer "\") ); }; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"sleep\"; plugin = \"blocking\"; },\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; action = \"search\"; plugin = \"search\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"rt\"; },\n" \
    "  { content_type = \"text/plain\"; plugin = \"old\"; }\n" \
    ");\n"

static void send_json(const pb_daemon *d, int fd, const char *json)
{
    pb_t_send_frame(d, fd, "text/json", "utf-8", json, strlen(json));
}

static void expect_result(const pb_daemon *d, int fd, const char *want)
{
    char *got = pb_t_recv_result(d, fd);
    cr_expect_str_eq(got, want);
    free(got);
}

static char *ask(const pb_daemon *d, const char *json)
{
    int fd = pb_dial(d, 0);
    send_json(d, fd, json);
    char *got = pb_t_recv_result(d, fd);
    close(fd);
    return got;
}

/* Asks json on new connections until the result is want (for what other
 * workers or the loop do next); the last result, for the test to check. */
static char *ask_until(const pb_daemon *d, const char *json, const char *want)
{
    char *got = NULL;
    for (int i = 0; i < 500; i++) {
        free(got);
        got = ask(d, json);
        if (strcmp(got, want) == 0)
            break;
        usleep(10 * 1000);
    }
    return got;
}

/* Receives a push: its header says "push": true, its content is want. */
static void expect_push(const pb_daemon *d, int fd, const char *want)
{
    pb_t_reply r;
    pb_t_recv_frame(d, fd, &r);
    cr_expect(json_is_true(json_object_get(r.header, "push")),
              "a push's header says \"push\": true");
    pb_t_expect_bytes(d, "push content", r.content, r.content_length,
                      want, strlen(want));
    pb_t_reply_free(&r);
}

/* Whether fd has something to read within ms. */
static int readable(int fd, int ms)
{
    struct pollfd p = { fd, POLLIN, 0 };
    return poll(&p, 1, ms) == 1;
}

Test(runtime, replies_leave_in_request_order_when_later_ones_finish_first)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", "x"));
    int fd = pb_dial(&d, 0);
    send_json(&d, fd, "{\"action\": \"timer\", \"value\": \"a\", \"delay\": 0.3}");
    send_json(&d, fd, "{\"action\": \"thread\", \"value\": \"b\", \"delay\": 0.1}");
    send_json(&d, fd, "{\"action\": \"now\", \"value\": \"c\"}");
    send_json(&d, fd, "{\"action\": \"search\", \"value\": \"morpheus\"}");
    send_json(&d, fd, "{\"action\": \"sleep\", \"value\": \"e\", \"delay\": 0.05}");
    send_json(&d, fd, "{\"action\": \"timer\", \"value\": \"f\", \"delay\": 0}");
    expect_result(&d, fd, "a");
    expect_result(&d, fd, "b");
    expect_result(&d, fd, "c");
    expect_result(&d, fd, "x");
    expect_result(&d, fd, "e");
    expect_result(&d, fd, "f");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(runtime, a_deferred_reply_whose_client_left_is_dropped)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", "x"));
    for (int i = 0; i < 5; i++) {
        int fd = pb_dial(&d, 0);
        send_json(&d, fd, "{\"action\": \"timer\", \"value\": \"t\", \"delay\": 0.2}");
        send_json(&d, fd, "{\"action\": \"thread\", \"value\": \"u\", \"delay\": 0.2}");
        send_json(&d, fd, "{\"action\": \"sleep\", \"value\": \"v\", \"delay\": 0.2}");
        close(fd);
    }
    /* Every one of them has been answered once "peak" is back to idle. */
    usleep(600 * 1000);
    char *got = ask(&d, "{\"action\": \"now\", \"value\": \"alive\"}");
    cr_expect_str_eq(got, "alive");
    free(got);
    pb_daemon_stop_clean(&d);
}

Test(runtime, a_blocking_plugin_on_threads_leaves_the_loop_serving)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", "quick"));
    int sleepers[4];
    for (int i = 0; i < 4; i++) {
        sleepers[i] = pb_dial(&d, 0);
        send_json(&d, sleepers[i], "{\"action\": \"sleep\", \"value\": \"slept\", \"delay\": 3}");
    }
    /* While four threads sleep, other connections are answered. */
    for (int i = 0; i < 10; i++) {
        char *got = ask(&d, "{\"action\": \"search\", \"value\": \"morpheus\"}");
        cr_expect_str_eq(got, "quick");
        free(got);
    }
    for (int i = 0; i < 4; i++)
        cr_expect(!readable(sleepers[i], 0),
                  "a sleeper answered before the quick requests");
    for (int i = 0; i < 4; i++) {
        expect_result(&d, sleepers[i], "slept");
        close(sleepers[i]);
    }
    pb_daemon_stop_clean(&d);
}

Test(runtime, max_inflight_pauses_reading_a_connection)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("limits = { max_inflight = 2; };\n", "x"));
    int fd = pb_dial(&d, 0);
    for (int i = 0; i < 8; i++)
        send_json(&d, fd, "{\"action\": \"timer\", \"value\": \"t\", \"delay\": 0.05}");
    send_json(&d, fd, "{\"action\": \"peak\"}");
    for (int i = 0; i < 8; i++)
        expect_result(&d, fd, "t");
    char *peak = pb_t_recv_result(&d, fd);
    cr_expect(atoi(peak) >= 1 && atoi(peak) <= 2,
              "%s replies were in flight at once, max_inflight is 2", peak);
    free(peak);
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(runtime, pushes_reach_holders_and_closes_are_told)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", "x"));
    int sub = pb_dial(&d, 0);
    send_json(&d, sub, "{\"action\": \"subscribe\", \"value\": \"ok\"}");
    expect_result(&d, sub, "ok");

    char *took = ask(&d, "{\"action\": \"publish\", \"value\": \"hello\"}");
    cr_expect_str_eq(took, "1");
    free(took);
    expect_push(&d, sub, "{\"message\": \"hello\"}");

    close(sub);
    char *closed = ask_until(&d, "{\"action\": \"closed\"}", "1");
    cr_expect_str_eq(closed, "1", "the plugin was told its connection closed");
    free(closed);
    took = ask(&d, "{\"action\": \"publish\", \"value\": \"again\"}");
    cr_expect_str_eq(took, "0");
    free(took);
    pb_daemon_stop_clean(&d);
}

Test(runtime, a_request_says_where_it_came_from)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", "x"));
    int fd = pb_dial_unix(&d);
    send_json(&d, fd, "{\"action\": \"origin\"}");
    char want[64];
    snprintf(want, sizeof want, "local unix %ld", (long)getuid());
    expect_result(&d, fd, want);
    close(fd);
    char *got = ask(&d, "{\"action\": \"origin\"}");
    cr_expect(strncmp(got, "app 127.0.0.1:", 14) == 0 && strstr(got, " -1") != NULL,
              "got \"%s\"", got);
    free(got);
    pb_daemon_stop_clean(&d);
}

Test(runtime, a_plugin_built_for_abi_1_loads_and_answers)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", "x"));
    int fd = pb_dial(&d, 0);
    pb_t_send_frame(&d, fd, "text/plain", "utf-8", "hello", 5);
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "abi1 app hello", 14);
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(runtime, a_deferred_reply_arrives_across_a_reload)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", "before"));
    int fd = pb_dial(&d, 0);
    send_json(&d, fd, "{\"action\": \"timer\", \"value\": \"kept\", \"delay\": 1.0}");
    send_json(&d, fd, "{\"action\": \"search\", \"value\": \"morpheus\"}");
    pb_daemon_write_config(&d, CONF("", "after"));
    pb_daemon_signal(&d, SIGHUP);
    expect_result(&d, fd, "kept");
    /* The search was routed before the reload, by the configuration that
     * held its deferred neighbour. */
    char *got = pb_t_recv_result(&d, fd);
    cr_expect(strcmp(got, "before") == 0 || strcmp(got, "after") == 0, "%s", got);
    free(got);
    free(ask_until(&d, "{\"action\": \"search\", \"value\": \"morpheus\"}", "after"));
    send_json(&d, fd, "{\"action\": \"search\", \"value\": \"morpheus\"}");
    expect_result(&d, fd, "after");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(runtime, a_held_connection_keeps_its_hold_across_a_reload)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", "before"));
    int sub = pb_dial(&d, 0);
    send_json(&d, sub, "{\"action\": \"subscribe\", \"value\": \"ok\"}");
    expect_result(&d, sub, "ok");

    pb_daemon_write_config(&d, CONF("", "after"));
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 1), 1);

    /* The new instance publishes to the connection the old one held. */
    char *took = ask(&d, "{\"action\": \"publish\", \"value\": \"still\"}");
    cr_expect_str_eq(took, "1");
    free(took);
    expect_push(&d, sub, "{\"message\": \"still\"}");
    close(sub);
    pb_daemon_stop_clean(&d);
}

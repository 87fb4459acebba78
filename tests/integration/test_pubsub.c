/*
 * test_pubsub.c - the pubsub plugin in the real daemon: delivery across
 * workers, publish order, glob patterns, unsubscribing, a closed
 * subscriber, a slow one, subscriptions across a reload, and malformed
 * requests.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(pubsub, .init = pb_harness_init, .fini = pb_harness_cleanup);

#define FIXTURES PB_TEST_BUILDDIR "/tests/fixtures/.libs"

#define CONF(workers, limits) \
    PB_T_CONF_HEAD "workers = " workers ";\n" limits \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; }\n" \
    ");\n" \
    "plugins = (\n" \
    "  { name = \"pubsub\"; module = \"pubsub\"; },\n" \
    "  { name = \"pid\"; module = \"" FIXTURES "/worker_pid.so\"; },\n" \
    "  { name = \"stats\"; module = \"stats\"; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"pid\"; plugin = \"pid\"; },\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"pubsub\"; }\n" \
    ");\n"

static void send_json(const pb_daemon *d, int fd, const char *json)
{
    pb_t_send_frame(d, fd, "text/json", "utf-8", json, strlen(json));
}

static void expect_json(const pb_daemon *d, int fd, const char *want)
{
    pb_t_expect_reply(d, fd, "text/json", "utf-8", want, strlen(want));
}

/* Sends json and expects want as the reply. */
static void exchange(const pb_daemon *d, int fd, const char *json, const char *want)
{
    send_json(d, fd, json);
    expect_json(d, fd, want);
}

static void subscribe(const pb_daemon *d, int fd, const char *topic)
{
    char request[256], reply[256];
    snprintf(request, sizeof request, "{\"action\": \"subscribe\", \"topic\": \"%s\"}", topic);
    snprintf(reply, sizeof reply, "{\"result\": \"subscribed\", \"topic\": \"%s\"}", topic);
    exchange(d, fd, request, reply);
}

/* Publishes message (JSON text) to topic and expects "published". */
static void publish(const pb_daemon *d, int fd, const char *topic, const char *message)
{
    char request[8192];
    snprintf(request, sizeof request,
             "{\"action\": \"publish\", \"topic\": \"%s\", \"message\": %s}", topic, message);
    exchange(d, fd, request, "{\"result\": \"published\"}");
}

/* Receives a push of message on topic. */
static void expect_push(const pb_daemon *d, int fd, const char *topic, const char *message)
{
    char want[8192];
    snprintf(want, sizeof want, "{\"topic\": \"%s\", \"message\": %s}", topic, message);
    pb_t_reply r;
    pb_t_recv_frame(d, fd, &r);
    cr_expect(json_is_true(json_object_get(r.header, "push")),
              "a push's header says \"push\": true");
    pb_t_expect_bytes(d, "push", r.content, r.content_length, want, strlen(want));
    pb_t_reply_free(&r);
}

/* Proves that nothing else reached fd: it subscribes to a marker topic,
 * the publisher publishes there, and the marker is the next frame. */
static void expect_nothing_more(const pb_daemon *d, int fd, int publisher)
{
    subscribe(d, fd, "marker");
    publish(d, publisher, "marker", "\"end\"");
    expect_push(d, fd, "marker", "\"end\"");
}

static long worker_of(const pb_daemon *d, int fd)
{
    send_json(d, fd, "{\"action\": \"pid\"}");
    char *pid = pb_t_recv_result(d, fd);
    long n = atol(pid);
    free(pid);
    return n;
}

/* A new connection held by the worker `pid` (same) or by another one. */
static int dial_worker(const pb_daemon *d, long pid, int same)
{
    for (int i = 0; i < 400; i++) {
        int fd = pb_dial(d, 0);
        if ((worker_of(d, fd) == pid) == same)
            return fd;
        close(fd);
        usleep(1000);
    }
    cr_assert_fail("no connection landed on %s worker than %ld", same ? "the same" : "another", pid);
    return -1;
}

Test(pubsub, a_publish_reaches_subscribers_on_every_worker)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", ""));
    int a = pb_dial(&d, 0);
    long first = worker_of(&d, a);
    int b = dial_worker(&d, first, 0);
    int from_first = dial_worker(&d, first, 1);
    int from_second = dial_worker(&d, first, 0);
    subscribe(&d, a, "news");
    subscribe(&d, b, "news");

    publish(&d, from_first, "news", "{\"n\": 1}");
    expect_push(&d, a, "news", "{\"n\": 1}");
    expect_push(&d, b, "news", "{\"n\": 1}");
    publish(&d, from_second, "news", "[\"two\", 2]");
    expect_push(&d, a, "news", "[\"two\", 2]");
    expect_push(&d, b, "news", "[\"two\", 2]");

    close(a);
    close(b);
    close(from_first);
    close(from_second);
    pb_daemon_stop_clean(&d);
}

Test(pubsub, a_thousand_publishes_arrive_in_publish_order_on_another_worker)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", ""));
    int publisher = pb_dial(&d, 0);
    int subscriber = dial_worker(&d, worker_of(&d, publisher), 0);
    subscribe(&d, subscriber, "seq");
    /* Pipelined: all the publishes, then all their replies. */
    pb_buf out = PB_BUF_INIT;
    for (int i = 0; i < 1000; i++) {
        char request[128];
        int n = snprintf(request, sizeof request,
                         "{\"action\": \"publish\", \"topic\": \"seq\", \"message\": %d}", i);
        pb_t_frame(&out, "text/json", "utf-8", request, (size_t)n);
    }
    pb_t_send(&d, publisher, pb_buf_head(&out), pb_buf_used(&out));
    pb_buf_free(&out);
    for (int i = 0; i < 1000; i++)
        expect_json(&d, publisher, "{\"result\": \"published\"}");
    for (int i = 0; i < 1000; i++) {
        char message[16];
        snprintf(message, sizeof message, "%d", i);
        expect_push(&d, subscriber, "seq", message);
    }
    close(publisher);
    close(subscriber);
    pb_daemon_stop_clean(&d);
}

/* Publishes message (JSON text of any size) to topic on fd, without
 * waiting for the answer. */
static void send_publish(const pb_daemon *d, int fd, const char *topic, const char *message)
{
    size_t n = strlen(message) + strlen(topic) + 64;
    char *request = malloc(n);
    snprintf(request, n, "{\"action\": \"publish\", \"topic\": \"%s\", \"message\": %s}",
             topic, message);
    send_json(d, fd, request);
    free(request);
}

/* A JSON string of n bytes in all (quotes included), malloc'd. */
static char *big_string(size_t n, char fill)
{
    char *s = malloc(n + 1);
    memset(s, fill, n);
    s[0] = s[n - 1] = '"';
    s[n] = '\0';
    return s;
}

/* Receives a push of message on topic, of any size. */
static void expect_big_push(const pb_daemon *d, int fd, const char *topic, const char *message)
{
    size_t n = strlen(message) + strlen(topic) + 64;
    char *want = malloc(n);
    snprintf(want, n, "{\"topic\": \"%s\", \"message\": %s}", topic, message);
    pb_t_reply r;
    pb_t_recv_frame(d, fd, &r);
    pb_t_expect_bytes(d, "push", r.content, r.content_length, want, strlen(want));
    pb_t_reply_free(&r);
    free(want);
}

Test(pubsub, large_publishes_and_bursts_cross_workers_whole_and_in_order)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", ""));
    int publisher = pb_dial(&d, 0);
    int subscriber = dial_worker(&d, worker_of(&d, publisher), 0);
    subscribe(&d, subscriber, "big");
    /* Larger than the ring between workers: it travels in pieces. */
    char *large = big_string(900 * 1000, 'L');
    send_publish(&d, publisher, "big", large);
    expect_json(&d, publisher, "{\"result\": \"published\"}");
    expect_big_push(&d, subscriber, "big", large);
    free(large);
    /* A burst larger than the ring waits in the sender and keeps its
     * order; the subscriber reads only once it is all published (2 MB,
     * within its max_pending_output). */
    char *messages[200];
    for (int i = 0; i < 200; i++) {
        messages[i] = big_string(10000, (char)('a' + i % 26));
        send_publish(&d, publisher, "big", messages[i]);
    }
    for (int i = 0; i < 200; i++)
        expect_json(&d, publisher, "{\"result\": \"published\"}");
    for (int i = 0; i < 200; i++) {
        expect_big_push(&d, subscriber, "big", messages[i]);
        free(messages[i]);
    }
    close(publisher);
    close(subscriber);
    pb_daemon_stop_clean(&d);
}

Test(pubsub, a_worker_started_after_a_crash_sends_and_receives)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", ""));
    int stays = pb_dial(&d, 0);
    long survivor = worker_of(&d, stays);
    int doomed = dial_worker(&d, survivor, 0);
    long crashed = worker_of(&d, doomed);
    subscribe(&d, stays, "news");
    kill((pid_t)crashed, SIGKILL);
    pb_t_expect_eof(&d, doomed);
    close(doomed);
    cr_assert_eq(pb_t_wait_stat(&d, "worker_restarts", 1), 1);

    int fresh = dial_worker(&d, survivor, 0);
    cr_assert_neq(worker_of(&d, fresh), crashed);
    subscribe(&d, fresh, "news");
    publish(&d, fresh, "news", "\"from the new worker\"");
    expect_push(&d, fresh, "news", "\"from the new worker\"");
    expect_push(&d, stays, "news", "\"from the new worker\"");
    publish(&d, stays, "news", "\"to the new worker\"");
    expect_push(&d, stays, "news", "\"to the new worker\"");
    expect_push(&d, fresh, "news", "\"to the new worker\"");
    close(stays);
    close(fresh);
    pb_daemon_stop_clean(&d);
}

Test(pubsub, patterns_match_as_globs_and_a_publish_arrives_once)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1", ""));
    int sub = pb_dial(&d, 0);
    int publisher = pb_dial(&d, 0);
    exchange(&d, sub, "{\"action\": \"subscribe\", \"pattern\": \"news.*\"}",
             "{\"result\": \"subscribed\", \"pattern\": \"news.*\"}");
    subscribe(&d, sub, "news.sport");

    publish(&d, publisher, "news.sport", "\"goal\"");
    expect_push(&d, sub, "news.sport", "\"goal\"");
    publish(&d, publisher, "news.weather", "\"rain\"");
    expect_push(&d, sub, "news.weather", "\"rain\"");
    publish(&d, publisher, "weather", "\"sun\"");
    publish(&d, publisher, "news", "\"no dot\"");
    expect_nothing_more(&d, sub, publisher);

    exchange(&d, sub, "{\"action\": \"unsubscribe\", \"pattern\": \"news.*\"}",
             "{\"result\": \"unsubscribed\", \"pattern\": \"news.*\"}");
    publish(&d, publisher, "news.weather", "\"hail\"");
    publish(&d, publisher, "news.sport", "\"still here\"");
    expect_push(&d, sub, "news.sport", "\"still here\"");
    close(sub);
    close(publisher);
    pb_daemon_stop_clean(&d);
}

/* Publishes pipelined to two subscribers: strings plain or escaped,
 * other values, a topic that needs escaping, and contents of equal length
 * one after the other, each pushed as its own JSON. */
Test(pubsub, every_kind_of_message_and_topic_is_pushed_as_its_json)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1", ""));
    int a = pb_dial(&d, 0);
    int b = pb_dial(&d, 0);
    int publisher = pb_dial(&d, 0);
    /* As JSON text, between the quotes: plain, and qu"ote é. */
    const char *topics[] = { "plain", "qu\\\"ote \xc3\xa9" };
    const char *messages[] = {
        "\"aaaa\"", "\"bbbb\"", "\"a\\\"b\\\\c\"", "\"\xc3\xa9\\n\"", "\"\"",
        "{\"n\": [1, null, true, \"x\"]}", "42", "\"aaaa\"",
    };
    size_t n_topics = sizeof topics / sizeof *topics;
    size_t n_messages = sizeof messages / sizeof *messages;
    for (size_t t = 0; t < n_topics; t++) {
        subscribe(&d, a, topics[t]);
        subscribe(&d, b, topics[t]);
    }
    for (size_t t = 0; t < n_topics; t++)
        for (size_t m = 0; m < n_messages; m++) {
            char request[512];
            snprintf(request, sizeof request,
                     "{\"action\": \"publish\", \"topic\": \"%s\", \"message\": %s}",
                     topics[t], messages[m]);
            send_json(&d, publisher, request);
        }
    for (size_t i = 0; i < n_topics * n_messages; i++)
        expect_json(&d, publisher, "{\"result\": \"published\"}");
    for (size_t t = 0; t < n_topics; t++)
        for (size_t m = 0; m < n_messages; m++) {
            expect_push(&d, a, topics[t], messages[m]);
            expect_push(&d, b, topics[t], messages[m]);
        }
    expect_nothing_more(&d, a, publisher);
    close(a);
    close(b);
    close(publisher);
    pb_daemon_stop_clean(&d);
}

Test(pubsub, unsubscribe_stops_delivery_and_a_closed_subscriber_is_forgotten)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", ""));
    int sub = pb_dial(&d, 0);
    int gone = pb_dial(&d, 0);
    int publisher = pb_dial(&d, 0);
    subscribe(&d, sub, "news");
    subscribe(&d, gone, "news");
    exchange(&d, sub, "{\"action\": \"unsubscribe\", \"topic\": \"news\"}",
             "{\"result\": \"unsubscribed\", \"topic\": \"news\"}");
    /* Unsubscribing from what it never subscribed to is no error. */
    exchange(&d, sub, "{\"action\": \"unsubscribe\", \"topic\": \"other\"}",
             "{\"result\": \"unsubscribed\", \"topic\": \"other\"}");
    close(gone);
    for (int i = 0; i < 50; i++)
        publish(&d, publisher, "news", "\"to nobody\"");
    expect_nothing_more(&d, sub, publisher);
    close(sub);
    close(publisher);
    pb_daemon_stop_clean(&d);
}

Test(pubsub, a_subscriber_that_does_not_read_gets_slow_consumer_and_publishers_go_on)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1", "limits = { max_pending_output = 65536; };\n"));
    int slow = pb_dial(&d, 0);
    int fine = pb_dial(&d, 0);
    int publisher = pb_dial(&d, 0);
    subscribe(&d, slow, "flood");
    subscribe(&d, fine, "flood");

    char message[4200];
    memset(message, 'x', sizeof message);
    message[0] = '"';
    message[sizeof message - 2] = '"';
    message[sizeof message - 1] = '\0';
    /* The fine subscriber reads as it goes; the slow one never does, and
     * the publisher gets every answer without waiting for it. 12 MB is
     * more than the kernel's socket buffers take in on the way. */
    for (int i = 0; i < 3000; i++) {
        publish(&d, publisher, "flood", message);
        expect_push(&d, fine, "flood", message);
    }
    int pushes = 0;
    for (;;) {
        pb_t_reply r;
        pb_t_recv_frame(&d, slow, &r);
        if (json_is_true(json_object_get(r.header, "push"))) {
            pushes++;
            pb_t_reply_free(&r);
            continue;
        }
        json_t *error = json_loadb((const char *)r.content, r.content_length, 0, NULL);
        cr_expect_str_eq(json_string_value(json_object_get(error, "code")), "slow_consumer");
        json_decref(error);
        pb_t_reply_free(&r);
        break;
    }
    cr_expect(pushes < 3000, "the slow subscriber was cut off (%d pushes)", pushes);
    pb_t_expect_eof(&d, slow);
    /* The others are served as before. */
    publish(&d, publisher, "flood", "\"after\"");
    expect_push(&d, fine, "flood", "\"after\"");
    close(slow);
    close(fine);
    close(publisher);
    pb_daemon_stop_clean(&d);
}

Test(pubsub, subscriptions_survive_a_reload_and_follow_the_new_copy)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1", ""));
    int sub = pb_dial(&d, 0);
    int twice = pb_dial(&d, 0);
    subscribe(&d, sub, "news");
    subscribe(&d, twice, "news");
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 1), 1);

    /* Published through the new copy, delivered by the old one. */
    int publisher = pb_dial(&d, 0);
    publish(&d, publisher, "news", "\"after the reload\"");
    expect_push(&d, sub, "news", "\"after the reload\"");
    expect_push(&d, twice, "news", "\"after the reload\"");

    /* The new copy undoes what the old one holds for the connection... */
    exchange(&d, sub, "{\"action\": \"unsubscribe\", \"topic\": \"news\"}",
             "{\"result\": \"unsubscribed\", \"topic\": \"news\"}");
    /* ...and takes over a subscription made again, which arrives once. */
    subscribe(&d, twice, "news");
    publish(&d, publisher, "news", "\"once\"");
    expect_push(&d, twice, "news", "\"once\"");
    expect_nothing_more(&d, twice, publisher);
    expect_nothing_more(&d, sub, publisher);
    close(sub);
    close(twice);
    close(publisher);
    pb_daemon_stop_clean(&d);
}

Test(pubsub, malformed_requests_get_plugin_failed_and_the_connection_stays)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1", ""));
    int fd = pb_dial(&d, 0);
    const char *bad[] = {
        "{\"value\": \"no action\"}",
        "[1, 2]",
        "{\"action\": \"subscribe\"}",
        "{\"action\": \"subscribe\", \"topic\": \"a\", \"pattern\": \"b*\"}",
        "{\"action\": \"subscribe\", \"topic\": \"\"}",
        "{\"action\": \"subscribe\", \"topic\": 7}",
        "{\"action\": \"unsubscribe\", \"pattern\": null}",
        "{\"action\": \"publish\", \"topic\": \"news\"}",
        "{\"action\": \"publish\", \"message\": 1}",
        "{\"action\": \"publish\", \"topic\": [\"news\"], \"message\": 1}",
        "{\"action\": \"publish\", \"topic\": \"news\\u0000x\", \"message\": 1}",
        "{\"action\": \"subscribe\", \"topic\": \"news\\u0000x\"}",
        "{\"action\": \"shout\", \"topic\": \"news\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        send_json(&d, fd, bad[i]);
        pb_t_expect_error(&d, fd, "plugin_failed");
    }
    send_json(&d, fd, "{\"action\": \"publish\", \"topic\": ");
    pb_t_expect_error(&d, fd, "bad_json");
    subscribe(&d, fd, "news");
    publish(&d, fd, "news", "null");
    expect_push(&d, fd, "news", "null");
    close(fd);
    pb_daemon_stop_clean(&d);
}

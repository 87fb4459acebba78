/*
 * test_redis_broker.c - the pubsub and queue plugins with Redis in real
 * daemons sharing a private redis-server: publishes from one daemon reach
 * the subscribers of another (and of redis-cli), one queue is shared by
 * two daemons, and both survive Redis restarting under them, counting
 * each return in their metrics.
 */
#include <criterion/criterion.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "redis_server.h"

TestSuite(redis_broker, .init = pb_harness_init, .fini = pb_harness_cleanup);

/* Guards against hangs only. */
#define TRIES 500
#define TRY_PAUSE_US (20 * 1000)

/* Publish/subscribe actions go to pubsub, stats to stats, the rest of
 * text/json to queue. */
#define CONF_FORMAT \
    PB_T_CONF_HEAD "workers = 2;\n" \
    "listeners = ( { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; } );\n" \
    "plugins = (\n" \
    "  { name = \"pubsub\"; module = \"pubsub\"; settings = { backplane = \"%s\"; }; },\n" \
    "  { name = \"queue\"; module = \"queue\"; settings = { backend = \"redis\"; url = \"%s\"; }; },\n" \
    "  { name = \"stats\"; module = \"stats\"; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; action = \"subscribe\"; plugin = \"pubsub\"; },\n" \
    "  { content_type = \"text/json\"; action = \"unsubscribe\"; plugin = \"pubsub\"; },\n" \
    "  { content_type = \"text/json\"; action = \"publish\"; plugin = \"pubsub\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"queue\"; }\n" \
    ");\n"

static void start_daemon(pb_daemon *d, const pb_redis_server *redis)
{
    char conf[4096];
    snprintf(conf, sizeof conf, CONF_FORMAT, redis->url, redis->url);
    pb_daemon_start(d, conf);
}

static int readable(int fd, int ms)
{
    struct pollfd p = { fd, POLLIN, 0 };
    return poll(&p, 1, ms) == 1;
}

/* The next frame's JSON content (a reply, an error or a push), with
 * whether it was a push. */
static json_t *recv_json(const pb_daemon *d, int fd, int *push)
{
    pb_t_reply r;
    pb_t_recv_frame(d, fd, &r);
    json_error_t error;
    json_t *content = json_loadb((const char *)r.content, r.content_length, 0, &error);
    pb_check(d, json_is_object(content), "not a JSON object: %.*s",
             (int)r.content_length, r.content);
    if (push != NULL)
        *push = json_is_true(json_object_get(r.header, "push"));
    pb_t_reply_free(&r);
    return content;
}

static json_t *ask(const pb_daemon *d, int fd, const char *json)
{
    pb_t_send_frame(d, fd, "text/json", "utf-8", json, strlen(json));
    int push;
    json_t *reply = recv_json(d, fd, &push);
    pb_check(d, !push, "a push where a reply was expected");
    return reply;
}

static const char *string_of(const json_t *reply, const char *key)
{
    const char *value = json_string_value(json_object_get(reply, key));
    return value != NULL ? value : "(none)";
}

/* Asks until the reply's result is `result` (Redis connecting, or coming
 * back); that reply. */
static json_t *ask_until(const pb_daemon *d, int fd, const char *json,
                         const char *result)
{
    for (int i = 0; i < TRIES; i++) {
        json_t *reply = ask(d, fd, json);
        if (strcmp(string_of(reply, "result"), result) == 0)
            return reply;
        json_decref(reply);
        usleep(TRY_PAUSE_US);
    }
    pb_t_fail(d, __FILE__, __LINE__, "%s never answered %s", json, result);
}

/* Asks until the reply is a plugin_failed error that says `text`. */
static void ask_until_error(const pb_daemon *d, int fd, const char *json,
                            const char *text)
{
    for (int i = 0; i < TRIES; i++) {
        json_t *reply = ask(d, fd, json);
        int matches = strcmp(string_of(reply, "code"), "plugin_failed") == 0
                      && strstr(string_of(reply, "error"), text) != NULL;
        json_decref(reply);
        if (matches)
            return;
        usleep(TRY_PAUSE_US);
    }
    pb_t_fail(d, __FILE__, __LINE__, "%s never failed saying \"%s\"", json, text);
}

static void expect_push(const pb_daemon *d, int fd, const char *want)
{
    pb_check(d, readable(fd, PB_T_TIMEOUT_MS), "no push arrived: wanted %s", want);
    pb_t_reply r;
    pb_t_recv_frame(d, fd, &r);
    pb_check(d, json_is_true(json_object_get(r.header, "push")), "not a push");
    pb_t_expect_bytes(d, "push", r.content, r.content_length, want, strlen(want));
    pb_t_reply_free(&r);
}

#define PUBLISH(message) \
    "{\"action\": \"publish\", \"topic\": \"news\", \"message\": " message "}"

/* Publishes on `pub` until the subscriber `sub` hears it (each daemon's
 * workers connect to Redis in their own time), then drains what the
 * tries left on the way. */
static void wait_for_backplane(const pb_daemon *d, int pub, int sub)
{
    int heard = 0;
    for (int i = 0; i < TRIES && !heard; i++) {
        json_t *reply = ask(d, pub, PUBLISH("\"warming up\""));
        json_decref(reply);
        heard = readable(sub, 50);
    }
    pb_check(d, heard, "no publish reached the other daemon's subscriber");
    json_decref(ask_until(d, pub, PUBLISH("\"ready\""), "published"));
    for (;;) {
        int push;
        json_t *got = recv_json(d, sub, &push);
        pb_check(d, push, "a reply where a push was expected");
        int ready = strcmp(string_of(got, "message"), "ready") == 0;
        json_decref(got);
        if (ready)
            return;
    }
}

Test(redis_broker, publishes_reach_subscribers_of_another_daemon)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    pb_daemon a, b;
    start_daemon(&a, &redis);
    start_daemon(&b, &redis);

    int sub = pb_dial(&a, 0);
    json_t *reply = ask(&a, sub, "{\"action\": \"subscribe\", \"topic\": \"news\"}");
    pb_check(&a, strcmp(string_of(reply, "result"), "subscribed") == 0, "not subscribed");
    json_decref(reply);
    int pub = pb_dial(&b, 0);
    wait_for_backplane(&b, pub, sub);

    /* One publisher's messages arrive in order. */
    for (int i = 0; i < 20; i++) {
        char json[128];
        snprintf(json, sizeof json, PUBLISH("%d"), i);
        reply = ask(&b, pub, json);
        pb_check(&b, strcmp(string_of(reply, "result"), "published") == 0,
                 "publish %d: %s", i, string_of(reply, "error"));
        json_decref(reply);
    }
    for (int i = 0; i < 20; i++) {
        char want[128];
        snprintf(want, sizeof want, "{\"topic\": \"news\", \"message\": %d}", i);
        expect_push(&a, sub, want);
    }

    /* Anyone with the server may publish to the daemon's channels. */
    free(pb_redis_cli(&redis, (const char *const[]){ "PUBLISH", "plugboard:news",
                                                     "{\"from\": \"redis-cli\"}", NULL }));
    expect_push(&a, sub, "{\"topic\": \"news\", \"message\": {\"from\": \"redis-cli\"}}");

    close(sub);
    close(pub);
    pb_daemon_stop_clean(&a);
    pb_daemon_stop_clean(&b);
    pb_redis_stop(&redis);
}

#define ENQUEUE(queue, message) \
    "{\"action\": \"enqueue\", \"queue\": \"" queue "\", \"message\": " message "}"
#define DEQUEUE(queue, options) \
    "{\"action\": \"dequeue\", \"queue\": \"" queue "\"" options "}"

static void expect_message(const pb_daemon *d, json_t *reply, const char *id,
                           long long message)
{
    pb_check(d, strcmp(string_of(reply, "result"), "message") == 0,
             "no message: %s %s", string_of(reply, "result"), string_of(reply, "error"));
    pb_check(d, strcmp(string_of(reply, "id"), id) == 0, "message %s, not %s",
             string_of(reply, "id"), id);
    pb_check(d, json_integer_value(json_object_get(reply, "message")) == message,
             "message %s is not %lld", id, message);
    json_decref(reply);
}

Test(redis_broker, two_daemons_share_a_queue)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    pb_daemon a, b;
    start_daemon(&a, &redis);
    start_daemon(&b, &redis);
    int fa = pb_dial(&a, 0), fb = pb_dial(&b, 0);

    char ids[3][64];
    for (int i = 0; i < 3; i++) {
        char json[128];
        snprintf(json, sizeof json, ENQUEUE("jobs", "%d"), i);
        json_t *reply = ask_until(&a, fa, json, "enqueued");
        snprintf(ids[i], sizeof ids[i], "%s", string_of(reply, "id"));
        json_decref(reply);
    }
    expect_message(&b, ask_until(&b, fb, DEQUEUE("jobs", ""), "message"), ids[0], 0);
    expect_message(&a, ask(&a, fa, DEQUEUE("jobs", "")), ids[1], 1);
    expect_message(&b, ask(&b, fb, DEQUEUE("jobs", "")), ids[2], 2);
    json_t *reply = ask(&a, fa, DEQUEUE("jobs", ""));
    pb_check(&a, strcmp(string_of(reply, "result"), "empty") == 0, "not empty");
    json_decref(reply);

    /* b acknowledges what a took; the depth is the same from either. */
    char json[256];
    snprintf(json, sizeof json, "{\"action\": \"ack\", \"queue\": \"jobs\", \"id\": \"%s\"}",
             ids[1]);
    reply = ask(&b, fb, json);
    pb_check(&b, strcmp(string_of(reply, "result"), "acked") == 0, "not acked: %s",
             string_of(reply, "error"));
    json_decref(reply);
    reply = ask(&a, fa, "{\"action\": \"depth\", \"queue\": \"jobs\"}");
    pb_check(&a, json_integer_value(json_object_get(reply, "ready")) == 0
             && json_integer_value(json_object_get(reply, "leased")) == 2,
             "depth after one ack of three");
    json_decref(reply);

    /* A dequeue waiting on b is answered by an enqueue on a, long before
     * its wait is over. */
    const char *waiting = DEQUEUE("later", ", \"wait\": 20.0");
    pb_t_send_frame(&b, fb, "text/json", "utf-8", waiting, strlen(waiting));
    usleep(200 * 1000);
    pb_check(&b, !readable(fb, 0), "the dequeue did not wait");
    reply = ask(&a, fa, ENQUEUE("later", "42"));
    char later_id[64];
    snprintf(later_id, sizeof later_id, "%s", string_of(reply, "id"));
    json_decref(reply);
    pb_check(&b, readable(fb, 5000), "the waiting dequeue was not woken");
    expect_message(&b, recv_json(&b, fb, NULL), later_id, 42);

    close(fa);
    close(fb);
    pb_daemon_stop_clean(&a);
    pb_daemon_stop_clean(&b);
    pb_redis_stop(&redis);
}

static int occurrences(const char *text, const char *needle)
{
    int count = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        count++;
    return count;
}

/* Waits until the daemon's log holds `needle` `count` times. */
static void wait_logged(const pb_daemon *d, const char *needle, int count)
{
    int found = 0;
    for (int i = 0; i < TRIES && found != count; i++) {
        char *log = pb_daemon_log(d);
        found = occurrences(log, needle);
        free(log);
        if (found != count)
            usleep(TRY_PAUSE_US);
    }
    pb_check(d, found == count, "\"%s\" logged %d times, not %d", needle, found, count);
}

Test(redis_broker, both_plugins_survive_a_redis_restart)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    pb_daemon d;
    start_daemon(&d, &redis);
    int fd = pb_dial(&d, 0);
    char line[160];
    /* Both workers connected, so that the kill is an outage for each. */
    snprintf(line, sizeof line, "backplane %s connected", redis.url);
    wait_logged(&d, line, 2);
    snprintf(line, sizeof line, "queue %s connected", redis.url);
    wait_logged(&d, line, 2);
    json_decref(ask_until(&d, fd, PUBLISH("1"), "published"));
    json_decref(ask_until(&d, fd, ENQUEUE("jobs", "1"), "enqueued"));

    pb_redis_kill(&redis);
    char backplane_down[128], queue_down[128];
    snprintf(backplane_down, sizeof backplane_down, "backplane %s is not connected",
             redis.url);
    snprintf(queue_down, sizeof queue_down, "queue %s is not connected", redis.url);
    ask_until_error(&d, fd, PUBLISH("2"), backplane_down);
    ask_until_error(&d, fd, ENQUEUE("jobs", "2"), queue_down);
    ask_until_error(&d, fd, DEQUEUE("jobs", ""), queue_down);

    pb_redis_restart(&redis);
    json_decref(ask_until(&d, fd, PUBLISH("3"), "published"));
    json_t *reply = ask_until(&d, fd, ENQUEUE("jobs", "3"), "enqueued");
    char id[64];
    snprintf(id, sizeof id, "%s", string_of(reply, "id"));
    json_decref(reply);
    expect_message(&d, ask_until(&d, fd, DEQUEUE("jobs", ""), "message"), id, 3);

    /* Each worker logs each outage once when it starts, and once when it
     * is over (at its own pace). */
    snprintf(line, sizeof line, "backplane %s is back", redis.url);
    wait_logged(&d, line, 2);
    snprintf(line, sizeof line, "queue %s is back", redis.url);
    wait_logged(&d, line, 2);
    snprintf(line, sizeof line, "backplane %s lost: ", redis.url);
    wait_logged(&d, line, 2);
    snprintf(line, sizeof line, "queue %s lost: ", redis.url);
    wait_logged(&d, line, 2);
    /* And counts each return, in each worker. */
    pb_check(&d, pb_t_wait_stat_at_least(&d, "plugins.pubsub.metrics.backplane_reconnects", 2) == 2,
             "backplane_reconnects is not 2");
    pb_check(&d, pb_t_wait_stat_at_least(&d, "plugins.queue.metrics.redis_reconnects", 2) == 2,
             "redis_reconnects is not 2");

    close(fd);
    pb_daemon_stop_clean(&d);
    pb_redis_stop(&redis);
}

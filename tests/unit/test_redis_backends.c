/*
 * test_redis_backends.c - the pubsub backplane and the queue's Redis
 * backend against a private redis-server, driven on a loop of the test's
 * own: round trips, settings, outages and what they log, two backends
 * sharing one queue.
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_host.h"

#include "../../plugins/pubsub/backplane.h"
#include "../../plugins/queue/backend.h"
#include "../integration/redis_server.h"

/* Guards against hangs only. */
#define WAIT_SECONDS 10.0

/* --- A host with a log and metrics the test reads ------------------------ */

static pb_host host;
static char log_text[16384];
static long long reconnects_counted;
static char reconnect_metric_name[64];

static const char *level_name(pb_log_level level)
{
    switch (level) {
    case PB_LOG_ERROR:   return "error";
    case PB_LOG_WARNING: return "warning";
    case PB_LOG_NOTICE:  return "notice";
    case PB_LOG_INFO:    return "info";
    default:             return "debug";
    }
}

static PB_PRINTF(3, 4) void capture_log(const pb_instance *instance,
                                        pb_log_level level,
                                        const char *format, ...)
{
    (void)instance;
    size_t used = strlen(log_text);
    int n = snprintf(log_text + used, sizeof log_text - used, "%s: ",
                     level_name(level));
    if (n < 0 || (size_t)n >= sizeof log_text - used)
        return;
    used += (size_t)n;
    va_list ap;
    va_start(ap, format);
    vsnprintf(log_text + used, sizeof log_text - used, format, ap);
    va_end(ap);
    used = strlen(log_text);
    if (used + 1 < sizeof log_text)
        strcat(log_text, "\n");
}

static pb_metric *count_metric(pb_instance *instance, const char *name,
                               const char *label, pb_metric_kind kind)
{
    (void)instance;
    cr_assert_null(label);
    cr_assert_eq(kind, PB_METRIC_COUNTER);
    snprintf(reconnect_metric_name, sizeof reconnect_metric_name, "%s", name);
    return (pb_metric *)&reconnects_counted;
}

static void add_metric(pb_metric *metric, long long delta)
{
    *(long long *)metric += delta;
}

/* How often `needle` occurs in the log. */
static int logged(const char *needle)
{
    int count = 0;
    for (const char *p = strstr(log_text, needle); p != NULL;
         p = strstr(p + 1, needle))
        count++;
    return count;
}

/* --- An instance whose settings errors are collected --------------------- */

static char instance_name[] = "broker";
static pb_plugin_conf conf = { .name = instance_name, .pos = { "harness.conf", 1 } };
static pb_diag diag = PB_DIAG_INIT;
static pb_instance instance = { .name = instance_name, .conf = &conf, .diag = &diag };

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *value = json_loads(text, JSON_DECODE_ANY, &err);
    cr_assert_not_null(value, "%s: %s", text, err.text);
    return value;
}

/* --- The loop -------------------------------------------------------------- */

static struct ev_loop *loop;
static ev_timer tick;

static void on_tick(struct ev_loop *l, ev_timer *timer, int revents)
{
    (void)l;
    (void)timer;
    (void)revents;
}

static void setup(void)
{
    host = pb_host_services;
    host.log = capture_log;
    host.metric = count_metric;
    host.metric_add = add_metric;
    log_text[0] = '\0';
    reconnects_counted = 0;
    reconnect_metric_name[0] = '\0';
    loop = ev_loop_new(EVFLAG_AUTO);
    cr_assert_not_null(loop);
    pb_plugin_host_set_loop(loop);
    /* Wakes the loop now and then, so that conditions are checked. */
    ev_timer_init(&tick, on_tick, 0.01, 0.01);
    ev_timer_start(loop, &tick);
}

static void teardown(void)
{
    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    pb_plugin_host_set_loop(NULL);
    pb_diag_free(&diag);
}

/* Runs the loop until `condition` holds, failing the test (with the log)
 * if it still does not after WAIT_SECONDS. */
#define WAIT_FOR(condition) \
    do { \
        double deadline_ = ev_time() + WAIT_SECONDS; \
        while (!(condition) && ev_time() < deadline_) \
            ev_run(loop, EVRUN_ONCE); \
        cr_assert(condition, "still not so after %.0f s: %s\nlog:\n%s", \
                  WAIT_SECONDS, #condition, log_text); \
    } while (0)

static void run_for(double seconds)
{
    double deadline = ev_time() + seconds;
    while (ev_time() < deadline)
        ev_run(loop, EVRUN_ONCE);
}

/* --- Backplane --------------------------------------------------------------- */

typedef struct delivered {
    int count;
    char topic[64];
    char message[256];
    char all[2048];             /* every message, each followed by ' ' */
} delivered;

static void deliver(void *arg, const char *topic, size_t topic_length,
                    const char *message, size_t message_length)
{
    delivered *d = arg;
    d->count++;
    snprintf(d->topic, sizeof d->topic, "%.*s", (int)topic_length, topic);
    snprintf(d->message, sizeof d->message, "%.*s", (int)message_length, message);
    size_t used = strlen(d->all);
    snprintf(d->all + used, sizeof d->all - used, "%.*s ", (int)message_length, message);
}

static backplane *backplane_at(const char *url)
{
    json_t *value = json_string(url);
    backplane *bp = backplane_configure(&host, &instance, (const pb_json *)value);
    json_decref(value);
    cr_assert_not_null(bp, "%s refused: %s", url, diag.count ? diag.lines[0] : "");
    return bp;
}

static int publish(backplane *bp, const char *topic, const char *message,
                   char *error, size_t error_size)
{
    return backplane_publish(bp, topic, strlen(topic), message, strlen(message),
                             error, error_size);
}

TestSuite(backplane, .init = setup, .fini = teardown, .timeout = 60);

Test(backplane, takes_redis_urls)
{
    static const char *const good[] = {
        "redis://127.0.0.1:6390", "redis://localhost", "redis://[::1]:6379",
        "redis://localhost:7000", "redis://10.0.0.1:65535",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        backplane_free(backplane_at(good[i]));
    cr_assert_eq(diag.count, 0);
}

/* The lookup happens when the configuration is checked, off the loop, so
 * that a name that does not resolve is a configuration error. */
Test(backplane, refuses_a_hostname_that_does_not_resolve)
{
    json_t *value = json_string("redis://nonexistent.invalid:6379");
    cr_assert_null(backplane_configure(&host, &instance, (const pb_json *)value));
    json_decref(value);
    cr_assert_eq(diag.count, 1);
    cr_assert_not_null(strstr(diag.lines[0], "harness.conf:1: plugin broker: backplane "
                                             "redis://nonexistent.invalid:6379: cannot resolve "
                                             "nonexistent.invalid: "), "%s", diag.lines[0]);
}

Test(backplane, refuses_what_is_not_a_redis_url)
{
    static const char *const bad[] = {
        "http://127.0.0.1:6379", "redis://", "redis://:6379", "redis://host:",
        "redis://host:0", "redis://host:65536", "redis://host:12ab",
        "redis://host:6379/0", "redis://user:secret@host", "redis://[::1",
        "redis://[not-ipv6]:6379", "127.0.0.1:6379",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *value = json_string(bad[i]);
        size_t before = diag.count;
        cr_assert_null(backplane_configure(&host, &instance, (const pb_json *)value),
                       "%s was taken", bad[i]);
        json_decref(value);
        cr_assert_eq(diag.count, before + 1, "%s: no settings error", bad[i]);
        cr_assert_not_null(strstr(diag.lines[before], bad[i]),
                           "the error does not name the value: %s", diag.lines[before]);
        cr_assert_not_null(strstr(diag.lines[before], "harness.conf:1: plugin broker: backplane"),
                           "%s", diag.lines[before]);
    }
    json_t *number = json_integer(6379);
    cr_assert_null(backplane_configure(&host, &instance, (const pb_json *)number));
    json_decref(number);
}

Test(backplane, publishes_to_itself_and_hears_other_redis_users)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    backplane *bp = backplane_at(redis.url);
    delivered got = { 0 };
    cr_assert_eq(backplane_open(bp, deliver, &got), PB_OK);
    WAIT_FOR(backplane_ready(bp));
    cr_assert_eq(logged("info: backplane redis://127.0.0.1:"), 1, "%s", log_text);

    char error[256] = "";
    cr_assert_eq(publish(bp, "news", "{\"a\": 1}", error, sizeof error), PB_OK, "%s", error);
    WAIT_FOR(got.count == 1);
    cr_assert_str_eq(got.topic, "news");
    cr_assert_str_eq(got.message, "{\"a\": 1}");

    /* A channel outside the prefix is someone else's; then one inside it. */
    char *out = pb_redis_cli(&redis, (const char *const[]){ "PUBLISH", "news", "\"other\"", NULL });
    free(out);
    out = pb_redis_cli(&redis, (const char *const[]){ "PUBLISH", "plugboard:news", "\"hi\"", NULL });
    cr_assert_eq(atoi(out), 1, "redis-cli PUBLISH reached %s subscribers", out);
    free(out);
    WAIT_FOR(got.count == 2);
    cr_assert_str_eq(got.topic, "news");
    cr_assert_str_eq(got.message, "\"hi\"");

    /* What is not JSON never reaches subscribers; it is logged once at
     * warning. Then topics are bytes: a dotted topic and one with a colon
     * come back whole. */
    for (int i = 0; i < 2; i++)
        free(pb_redis_cli(&redis, (const char *const[]){ "PUBLISH", "plugboard:news",
                                                         "not json", NULL }));
    cr_assert_eq(publish(bp, "a.b:c", "[1,2]", error, sizeof error), PB_OK);
    WAIT_FOR(got.count == 3);
    cr_assert_str_eq(got.topic, "a.b:c");
    cr_assert_str_eq(got.message, "[1,2]");
    cr_assert_eq(logged("a message to plugboard:news is not JSON; dropped"), 2, "%s", log_text);
    cr_assert_eq(logged("warning:"), 1, "%s", log_text);

    backplane_close(bp);
    backplane_free(bp);
    pb_redis_stop(&redis);
}

Test(backplane, keeps_order_of_one_publisher)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    backplane *bp = backplane_at(redis.url);
    delivered got = { 0 };
    cr_assert_eq(backplane_open(bp, deliver, &got), PB_OK);
    WAIT_FOR(backplane_ready(bp));
    char error[256], message[32], expected[2048] = "";
    for (int i = 0; i < 200; i++) {
        snprintf(message, sizeof message, "%d", i);
        cr_assert_eq(publish(bp, "counting", message, error, sizeof error), PB_OK);
        strcat(expected, message);
        strcat(expected, " ");
    }
    WAIT_FOR(got.count == 200);
    cr_assert_str_eq(got.all, expected);
    backplane_free(bp);
    pb_redis_stop(&redis);
}

Test(backplane, refuses_to_publish_while_redis_is_away)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    pb_redis_stop(&redis);          /* its port, with nothing there */
    backplane *bp = backplane_at(redis.url);
    delivered got = { 0 };
    cr_assert_eq(backplane_open(bp, deliver, &got), PB_OK);
    run_for(1.0);                   /* several attempts */
    cr_assert_not(backplane_ready(bp));
    char error[256] = "", expected[256];
    cr_assert_eq(publish(bp, "news", "1", error, sizeof error), PB_ERROR);
    snprintf(expected, sizeof expected, "backplane %s is not connected", redis.url);
    cr_assert_str_eq(error, expected);
    char unreachable[128];
    snprintf(unreachable, sizeof unreachable, "warning: backplane %s unreachable: ", redis.url);
    cr_assert_eq(logged(unreachable), 1, "one warning for the whole outage:\n%s", log_text);
    cr_assert_eq(logged("warning:"), 1, "%s", log_text);

    /* Redis arrives late: connected, without a restart of ours. */
    pb_redis_restart(&redis);
    WAIT_FOR(backplane_ready(bp));
    cr_assert_eq(logged("notice: backplane"), 1, "%s", log_text);
    cr_assert_eq(publish(bp, "news", "1", error, sizeof error), PB_OK, "%s", error);
    WAIT_FOR(got.count == 1);
    cr_assert_eq(reconnects_counted, 0, "a first connection is no reconnect");
    backplane_free(bp);
    pb_redis_stop(&redis);
}

Test(backplane, survives_a_redis_restart)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    backplane *bp = backplane_at(redis.url);
    delivered got = { 0 };
    cr_assert_eq(backplane_open(bp, deliver, &got), PB_OK);
    cr_assert_str_eq(reconnect_metric_name, "backplane_reconnects");
    WAIT_FOR(backplane_ready(bp));

    pb_redis_kill(&redis);
    WAIT_FOR(!backplane_ready(bp));
    char error[256] = "", expected[256];
    cr_assert_eq(publish(bp, "news", "1", error, sizeof error), PB_ERROR);
    snprintf(expected, sizeof expected, "backplane %s is not connected", redis.url);
    cr_assert_str_eq(error, expected);
    run_for(0.5);

    pb_redis_restart(&redis);
    WAIT_FOR(backplane_ready(bp));
    cr_assert_eq(publish(bp, "news", "\"again\"", error, sizeof error), PB_OK, "%s", error);
    WAIT_FOR(got.count == 1);
    cr_assert_str_eq(got.message, "\"again\"");

    char lost[128], back[128];
    snprintf(lost, sizeof lost, "warning: backplane %s lost: ", redis.url);
    snprintf(back, sizeof back, "notice: backplane %s is back", redis.url);
    cr_assert_eq(logged(lost), 1, "%s", log_text);
    cr_assert_eq(logged("warning:"), 1, "one warning for the whole outage:\n%s", log_text);
    cr_assert_eq(logged(back), 1, "%s", log_text);
    cr_assert_eq(reconnects_counted, 1);

    backplane_close(bp);
    backplane_free(bp);
    pb_redis_stop(&redis);
}

Test(backplane, waits_for_a_redis_that_refuses_it)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    free(pb_redis_cli(&redis, (const char *const[]){ "CONFIG", "SET", "requirepass",
                                                     "secret", NULL }));
    backplane *bp = backplane_at(redis.url);
    delivered got = { 0 };
    cr_assert_eq(backplane_open(bp, deliver, &got), PB_OK);
    run_for(1.0);
    cr_assert_not(backplane_ready(bp), "connected is not answered");
    char refused[128];
    snprintf(refused, sizeof refused, "warning: backplane %s unreachable: ", redis.url);
    cr_assert_eq(logged(refused), 1, "%s", log_text);
    cr_assert_eq(logged("NOAUTH"), logged("debug:") + 1, "every attempt says why:\n%s",
                 log_text);

    free(pb_redis_cli(&redis, (const char *const[]){ "-a", "secret", "--no-auth-warning",
                                                     "CONFIG", "SET", "requirepass", "",
                                                     NULL }));
    WAIT_FOR(backplane_ready(bp));
    backplane_free(bp);
    pb_redis_stop(&redis);
}

Test(backplane, counts_nothing_where_the_daemon_keeps_no_metrics)
{
    host.metric = NULL;
    host.metric_add = NULL;
    pb_redis_server redis;
    pb_redis_start(&redis);
    backplane *bp = backplane_at(redis.url);
    delivered got = { 0 };
    cr_assert_eq(backplane_open(bp, deliver, &got), PB_OK);
    WAIT_FOR(backplane_ready(bp));
    pb_redis_kill(&redis);
    WAIT_FOR(!backplane_ready(bp));
    pb_redis_restart(&redis);
    WAIT_FOR(backplane_ready(bp));
    cr_assert_eq(reconnects_counted, 0);
    backplane_free(bp);
    pb_redis_stop(&redis);
}

/* --- Queue ------------------------------------------------------------------- */

typedef struct outcome {
    int done;
    queue_status status;
    char error[256];
    char id[QUEUE_ID_MAX];
    char message[256];
    long long deliveries, ready, leased;
    double next_expiry;
} outcome;

static void on_done(void *arg, const queue_result *result)
{
    outcome *o = arg;
    o->done++;
    o->status = result->status;
    snprintf(o->error, sizeof o->error, "%s", result->error ? result->error : "");
    snprintf(o->id, sizeof o->id, "%s", result->id);
    snprintf(o->message, sizeof o->message, "%.*s", (int)result->message_length,
             result->message ? result->message : "");
    o->deliveries = result->deliveries;
    o->ready = result->ready;
    o->leased = result->leased;
    o->next_expiry = result->next_expiry;
}

typedef struct woken {
    int count;
    char queue[64];
} woken;

static void on_wake(void *arg, const char *queue)
{
    woken *w = arg;
    w->count++;
    snprintf(w->queue, sizeof w->queue, "%s", queue);
}

static const queue_backend_ops *ops = &queue_redis_ops;

static queue_backend *backend_with(const char *settings_json)
{
    json_t *settings = parse(settings_json);
    queue_backend *backend = ops->configure(&host, &instance, (const pb_json *)settings);
    json_decref(settings);
    return backend;
}

static queue_backend *backend_open(const pb_redis_server *redis, woken *w)
{
    char settings[160];
    snprintf(settings, sizeof settings, "{\"backend\": \"redis\", \"url\": \"%s\"}",
             redis->url);
    queue_backend *backend = backend_with(settings);
    cr_assert_not_null(backend, "%s", diag.count ? diag.lines[0] : "");
    cr_assert_eq(ops->open(backend, on_wake, w), PB_OK, "%s", log_text);
    return backend;
}

static outcome enqueue(queue_backend *b, const char *queue, const char *message)
{
    outcome o = { 0 };
    ops->enqueue(b, queue, message, strlen(message), on_done, &o);
    cr_assert_eq(o.done, 0, "done was called before enqueue() returned");
    WAIT_FOR(o.done);
    cr_assert_eq(o.done, 1);
    return o;
}

static outcome dequeue(queue_backend *b, const char *queue, double lease)
{
    outcome o = { 0 };
    ops->dequeue(b, queue, lease, on_done, &o);
    cr_assert_eq(o.done, 0, "done was called before dequeue() returned");
    WAIT_FOR(o.done);
    cr_assert_eq(o.done, 1);
    return o;
}

static outcome ack(queue_backend *b, const char *queue, const char *id)
{
    outcome o = { 0 };
    ops->ack(b, queue, id, on_done, &o);
    WAIT_FOR(o.done);
    return o;
}

static outcome depth(queue_backend *b, const char *queue)
{
    outcome o = { 0 };
    ops->depth(b, queue, on_done, &o);
    WAIT_FOR(o.done);
    return o;
}

/* Enqueues until Redis takes it: a backend connects in the background. */
static outcome enqueue_when_up(queue_backend *b, const char *queue, const char *message)
{
    double deadline = ev_time() + WAIT_SECONDS;
    outcome o;
    do {
        o = enqueue(b, queue, message);
        if (o.status != QUEUE_OK)
            run_for(0.05);
    } while (o.status != QUEUE_OK && ev_time() < deadline);
    cr_assert_eq(o.status, QUEUE_OK, "%s\nlog:\n%s", o.error, log_text);
    return o;
}

static void backend_end(queue_backend *backend)
{
    ops->close(backend);
    ops->free(backend);
}

TestSuite(queue, .init = setup, .fini = teardown, .timeout = 60);

Test(queue, settings)
{
    cr_assert_str_eq(ops->name, "redis");
    queue_backend *b = backend_with("{\"backend\": \"redis\", \"url\": \"redis://127.0.0.1:6390\"}");
    cr_assert_not_null(b);
    ops->free(b);
    cr_assert_eq(diag.count, 0);

    cr_assert_null(backend_with("{\"backend\": \"redis\"}"));
    cr_assert_not_null(strstr(diag.lines[0], "url"), "%s", diag.lines[0]);
    cr_assert_null(backend_with("{\"backend\": \"redis\", \"url\": \"redis://127.0.0.1:1\", \"path\": \"/x\"}"));
    cr_assert_not_null(strstr(diag.lines[1], "\"path\""), "%s", diag.lines[1]);
    cr_assert_null(backend_with("{\"url\": \"tcp://h:1\"}"));
    cr_assert_not_null(strstr(diag.lines[2], "\"tcp://h:1\" is not a Redis url"), "%s", diag.lines[2]);
    cr_assert_null(backend_with("{\"url\": 6379}"));
    cr_assert_null(backend_with("{\"url\": \"redis://nonexistent.invalid\"}"));
    cr_assert_not_null(strstr(diag.lines[4], "cannot resolve nonexistent.invalid"), "%s",
                       diag.lines[4]);
    cr_assert_eq(diag.count, 5);
}

Test(queue, first_in_first_out)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    woken w = { 0 };
    queue_backend *b = backend_open(&redis, &w);

    outcome nothing = dequeue(b, "jobs", 30);     /* connecting: fails or is empty */
    cr_assert(nothing.status == QUEUE_FAILED || nothing.status == QUEUE_EMPTY);
    outcome first = enqueue_when_up(b, "jobs", "{\"n\": 1}");
    outcome second = enqueue(b, "jobs", "{\"n\": 2}");
    outcome third = enqueue(b, "jobs", "[3]");
    cr_assert_eq(third.status, QUEUE_OK);
    cr_assert_eq(third.ready, 3);
    cr_assert_eq(third.leased, 0);
    cr_assert_str_neq(first.id, second.id);

    outcome d = depth(b, "jobs");
    cr_assert_eq(d.ready, 3);
    cr_assert_eq(d.leased, 0);

    const outcome *expected[] = { &first, &second, &third };
    const char *messages[] = { "{\"n\": 1}", "{\"n\": 2}", "[3]" };
    for (int i = 0; i < 3; i++) {
        outcome got = dequeue(b, "jobs", 30);
        cr_assert_eq(got.status, QUEUE_OK, "%s", got.error);
        cr_assert_str_eq(got.id, expected[i]->id);
        cr_assert_str_eq(got.message, messages[i]);
        cr_assert_eq(got.deliveries, 1);
        cr_assert_eq(got.leased, i + 1);
    }
    outcome empty = dequeue(b, "jobs", 30);
    cr_assert_eq(empty.status, QUEUE_EMPTY);
    cr_assert(empty.next_expiry > 25 && empty.next_expiry <= 30, "%f", empty.next_expiry);
    d = depth(b, "jobs");
    cr_assert_eq(d.ready, 0);
    cr_assert_eq(d.leased, 3);

    for (int i = 0; i < 3; i++) {
        outcome acked = ack(b, "jobs", expected[i]->id);
        cr_assert_eq(acked.status, QUEUE_OK, "%s", acked.error);
        cr_assert_eq(acked.leased, 2 - i);
    }
    empty = dequeue(b, "jobs", 30);
    cr_assert_eq(empty.status, QUEUE_EMPTY);
    cr_assert_eq(empty.next_expiry, -1);
    d = depth(b, "jobs");
    cr_assert_eq(d.ready, 0);
    cr_assert_eq(d.leased, 0);

    /* Acknowledged messages leave the stream. */
    char *length = pb_redis_cli(&redis, (const char *const[]){ "XLEN", "plugboard:queue:jobs", NULL });
    cr_assert_eq(atoi(length), 0, "%s", length);
    free(length);

    /* A queue never used is empty, and asking creates nothing. */
    empty = dequeue(b, "never", 30);
    cr_assert_eq(empty.status, QUEUE_EMPTY);
    cr_assert_eq(empty.next_expiry, -1);
    d = depth(b, "never");
    cr_assert_eq(d.ready + d.leased, 0);
    char *exists = pb_redis_cli(&redis, (const char *const[]){ "EXISTS", "plugboard:queue:never", NULL });
    cr_assert_eq(atoi(exists), 0);
    free(exists);

    backend_end(b);
    pb_redis_stop(&redis);
}

Test(queue, redelivers_after_the_lease)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    woken w = { 0 };
    queue_backend *b = backend_open(&redis, &w);
    outcome first = enqueue_when_up(b, "jobs", "\"first\"");
    outcome second = enqueue(b, "jobs", "\"second\"");

    outcome got = dequeue(b, "jobs", 0.2);
    cr_assert_str_eq(got.id, first.id);
    cr_assert_eq(got.deliveries, 1);
    run_for(0.35);
    outcome d = depth(b, "jobs");
    cr_assert_eq(d.ready, 2, "an expired lease is ready again");
    cr_assert_eq(d.leased, 0);

    /* The redelivery comes before newer messages. */
    got = dequeue(b, "jobs", 0.2);
    cr_assert_eq(got.status, QUEUE_OK, "%s", got.error);
    cr_assert_str_eq(got.id, first.id);
    cr_assert_str_eq(got.message, "\"first\"");
    cr_assert_eq(got.deliveries, 2);
    run_for(0.35);
    got = dequeue(b, "jobs", 30);
    cr_assert_str_eq(got.id, first.id);
    cr_assert_eq(got.deliveries, 3);
    cr_assert_eq(ack(b, "jobs", first.id).status, QUEUE_OK);

    got = dequeue(b, "jobs", 30);
    cr_assert_str_eq(got.id, second.id);
    cr_assert_eq(got.deliveries, 1);

    /* Leases of different lengths expire on their own clocks. */
    outcome third = enqueue(b, "jobs", "3");
    got = dequeue(b, "jobs", 0.2);
    cr_assert_str_eq(got.id, third.id);
    run_for(0.35);
    got = dequeue(b, "jobs", 30);
    cr_assert_str_eq(got.id, third.id, "the short lease ran out, the long one not");
    cr_assert_eq(got.deliveries, 2);
    backend_end(b);
    pb_redis_stop(&redis);
}

Test(queue, unknown_and_expired_acks)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    woken w = { 0 };
    queue_backend *b = backend_open(&redis, &w);
    outcome first = enqueue_when_up(b, "jobs", "1");

    cr_assert_eq(ack(b, "jobs", "1-0").status, QUEUE_UNKNOWN);
    cr_assert_eq(ack(b, "jobs", "not an id").status, QUEUE_UNKNOWN);
    cr_assert_eq(ack(b, "other", first.id).status, QUEUE_UNKNOWN);
    cr_assert_eq(ack(b, "jobs", first.id).status, QUEUE_UNKNOWN, "never delivered");

    outcome got = dequeue(b, "jobs", 0.1);
    cr_assert_str_eq(got.id, first.id);
    run_for(0.25);
    cr_assert_eq(ack(b, "jobs", first.id).status, QUEUE_UNKNOWN, "its lease expired");
    got = dequeue(b, "jobs", 30);
    cr_assert_str_eq(got.id, first.id);
    cr_assert_eq(ack(b, "jobs", first.id).status, QUEUE_OK);
    cr_assert_eq(ack(b, "jobs", first.id).status, QUEUE_UNKNOWN, "acknowledged twice");
    backend_end(b);
    pb_redis_stop(&redis);
}

Test(queue, two_daemons_share_a_queue)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    woken wa = { 0 }, wb = { 0 };
    queue_backend *a = backend_open(&redis, &wa);
    queue_backend *b = backend_open(&redis, &wb);
    char ids[6][QUEUE_ID_MAX];
    for (int i = 0; i < 6; i++) {
        char message[16];
        snprintf(message, sizeof message, "%d", i);
        outcome o = i == 0 ? enqueue_when_up(a, "shared", message)
                           : enqueue(i % 2 ? b : a, "shared", message);
        cr_assert_eq(o.status, QUEUE_OK, "%s", o.error);
        snprintf(ids[i], sizeof ids[i], "%s", o.id);
    }
    /* Whoever asks gets the next message, never one the other holds. */
    for (int i = 0; i < 6; i++) {
        outcome got = dequeue(i % 3 ? a : b, "shared", 30);
        cr_assert_eq(got.status, QUEUE_OK, "%s\nlog:\n%s", got.error, log_text);
        cr_assert_str_eq(got.id, ids[i]);
    }
    cr_assert_eq(dequeue(a, "shared", 30).status, QUEUE_EMPTY);
    cr_assert_eq(dequeue(b, "shared", 30).status, QUEUE_EMPTY);
    /* Either may acknowledge what the other took: the lease is the queue's. */
    cr_assert_eq(ack(a, "shared", ids[0]).status, QUEUE_OK);
    cr_assert_eq(depth(b, "shared").leased, 5);
    backend_end(a);
    backend_end(b);
    pb_redis_stop(&redis);
}

Test(queue, an_enqueue_wakes_the_other_daemon)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    woken wa = { 0 }, wb = { 0 };
    queue_backend *a = backend_open(&redis, &wa);
    queue_backend *b = backend_open(&redis, &wb);
    /* Both connected and subscribed; then a's wake-up from b arrives. */
    WAIT_FOR(logged("info: queue") == 2);
    enqueue(b, "warmup", "0");
    WAIT_FOR(wa.count == 1);

    wa.count = wb.count = 0;
    cr_assert_eq(enqueue(a, "mail", "{}").status, QUEUE_OK);
    WAIT_FOR(wb.count == 1);
    cr_assert_str_eq(wb.queue, "mail");
    run_for(0.1);
    cr_assert_eq(wa.count, 0, "a copy is not woken by its own enqueue");

    char *out = pb_redis_cli(&redis, (const char *const[]){ "PUBLISH", "plugboard-queue-ready:jobs", "someone", NULL });
    free(out);
    WAIT_FOR(wa.count == 1 && wb.count == 2);
    cr_assert_str_eq(wa.queue, "jobs");
    backend_end(a);
    backend_end(b);
    pb_redis_stop(&redis);
}

Test(queue, survives_a_redis_restart)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    woken w = { 0 };
    queue_backend *b = backend_open(&redis, &w);
    cr_assert_str_eq(reconnect_metric_name, "redis_reconnects");
    enqueue_when_up(b, "jobs", "1");

    pb_redis_kill(&redis);
    /* The first operation may still be sent; it fails when the loss is
     * noticed. Those after fail at once. */
    outcome o = enqueue(b, "jobs", "2");
    cr_assert_eq(o.status, QUEUE_FAILED);
    cr_assert_neq(o.error[0], '\0');
    run_for(0.05);
    char expected[128];
    snprintf(expected, sizeof expected, "queue %s is not connected", redis.url);
    o = enqueue(b, "jobs", "3");
    cr_assert_eq(o.status, QUEUE_FAILED);
    cr_assert_str_eq(o.error, expected);
    o = dequeue(b, "jobs", 30);
    cr_assert_eq(o.status, QUEUE_FAILED);
    cr_assert_str_eq(o.error, expected);
    o = ack(b, "jobs", "1-0");
    cr_assert_eq(o.status, QUEUE_FAILED);
    o = depth(b, "jobs");
    cr_assert_eq(o.status, QUEUE_FAILED);
    cr_assert_eq(o.ready, -1);

    pb_redis_restart(&redis);
    outcome again = enqueue_when_up(b, "jobs", "4");
    o = dequeue(b, "jobs", 30);
    cr_assert_eq(o.status, QUEUE_OK, "%s", o.error);
    cr_assert_str_eq(o.id, again.id, "a Redis without persistence starts empty");

    char lost[128];
    snprintf(lost, sizeof lost, "warning: queue %s lost: ", redis.url);
    cr_assert_eq(logged(lost), 1, "%s", log_text);
    cr_assert_eq(logged("is back"), 1, "%s", log_text);
    cr_assert_eq(reconnects_counted, 1);
    backend_end(b);
    pb_redis_stop(&redis);
}

Test(queue, gives_up_on_a_redis_that_stops_answering)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    woken w = { 0 };
    queue_backend *b = backend_open(&redis, &w);
    enqueue_when_up(b, "jobs", "1");

    /* Stopped, it keeps its connections open and answers nothing. */
    kill(redis.pid, SIGSTOP);
    double start = ev_time();
    outcome o = { 0 };
    ops->enqueue(b, "jobs", "2", 1, on_done, &o);
    while (!o.done && ev_time() < start + 30)
        ev_run(loop, EVRUN_ONCE);
    double waited = ev_time() - start;
    cr_assert_eq(o.status, QUEUE_FAILED);
    char expected[128];
    snprintf(expected, sizeof expected, "queue %s lost: no reply for 10 s", redis.url);
    cr_assert_str_eq(o.error, expected);
    cr_assert(waited >= 9.5 && waited < 15, "failed after %.1f s", waited);
    snprintf(expected, sizeof expected, "warning: queue %s lost: no reply for 10 s; retrying",
             redis.url);
    cr_assert_eq(logged(expected), 1, "%s", log_text);
    /* Accepting connections is not answering: no return while stopped. */
    run_for(1.0);
    cr_assert_eq(logged("is back"), 0, "%s", log_text);

    kill(redis.pid, SIGCONT);
    enqueue_when_up(b, "jobs", "3");
    backend_end(b);
    pb_redis_stop(&redis);
}

Test(queue, close_fails_what_is_pending)
{
    pb_redis_server redis;
    pb_redis_start(&redis);
    woken w = { 0 };
    queue_backend *b = backend_open(&redis, &w);
    enqueue_when_up(b, "jobs", "1");

    outcome in_flight = { 0 }, second = { 0 };
    ops->enqueue(b, "jobs", "2", 1, on_done, &in_flight);
    ops->dequeue(b, "jobs", 30, on_done, &second);
    ops->close(b);
    cr_assert_eq(in_flight.done, 1);
    cr_assert_eq(in_flight.status, QUEUE_FAILED);
    cr_assert_neq(in_flight.error[0], '\0');
    cr_assert_eq(second.done, 1);
    cr_assert_eq(second.status, QUEUE_FAILED);
    ops->free(b);

    /* And what failed while Redis was away, not yet reported. */
    b = backend_open(&redis, &w);
    enqueue_when_up(b, "jobs", "1");
    pb_redis_kill(&redis);
    outcome lost = dequeue(b, "jobs", 30);
    cr_assert_eq(lost.status, QUEUE_FAILED);
    outcome waiting = { 0 };
    ops->depth(b, "jobs", on_done, &waiting);
    cr_assert_eq(waiting.done, 0);
    ops->close(b);
    cr_assert_eq(waiting.done, 1);
    cr_assert_eq(waiting.status, QUEUE_FAILED);
    ops->free(b);
}

/*
 * test_queue.c - the queue plugin and its SQLite backend in the real
 * daemon: replies byte for byte, FIFO order, leases that run out and
 * redeliver, acks, depth, dequeues that wait and are woken (from another
 * connection, and from another worker), malformed requests, settings, and
 * enqueues that survive kill -9 of the whole daemon.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

TestSuite(queue, .init = pb_harness_init, .fini = pb_harness_cleanup);

#define CONF_WITH(workers, settings) \
    PB_T_CONF_HEAD "workers = " workers ";\n" \
    "listeners = ( { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; } );\n" \
    "plugins = (\n" \
    "  { name = \"queue\"; module = \"queue\"; settings = { " settings " }; },\n" \
    "  { name = \"stats\"; module = \"stats\"; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"queue\"; }\n" \
    ");\n"

/* Each daemon keeps its queues in its own temporary directory. */
#define CONF(workers) CONF_WITH(workers, "path = \"@DIR@/queue.db\";")

static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void send_json(const pb_daemon *d, int fd, const char *json)
{
    pb_t_send_frame(d, fd, "text/json", "utf-8", json, strlen(json));
}

/* The next reply's content, which must be text/json; malloc'd. */
static char *recv_text(const pb_daemon *d, int fd)
{
    pb_t_reply r;
    pb_t_recv_frame(d, fd, &r);
    pb_check(d, r.content_type != NULL && strcmp(r.content_type, "text/json") == 0,
             "a reply of type %s", r.content_type ? r.content_type : "(none)");
    char *text = malloc(r.content_length + 1);
    memcpy(text, r.content, r.content_length);
    text[r.content_length] = '\0';
    pb_t_reply_free(&r);
    return text;
}

static void expect_text(const pb_daemon *d, int fd, const char *want)
{
    char *got = recv_text(d, fd);
    pb_t_expect_bytes(d, "reply", got, strlen(got), want, strlen(want));
    free(got);
}

/* The next reply, parsed. */
static json_t *recv_json(const pb_daemon *d, int fd)
{
    char *text = recv_text(d, fd);
    json_error_t error;
    json_t *reply = json_loads(text, 0, &error);
    pb_check(d, json_is_object(reply), "not a JSON object: %s", text);
    free(text);
    return reply;
}

static json_t *ask(const pb_daemon *d, int fd, const char *json)
{
    send_json(d, fd, json);
    return recv_json(d, fd);
}

static const char *result_of(const json_t *reply)
{
    const char *result = json_string_value(json_object_get(reply, "result"));
    return result != NULL ? result : "(none)";
}

static void enqueue(const pb_daemon *d, int fd, const char *queue,
                    const char *message)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"action\": \"enqueue\", \"queue\": \"%s\", \"message\": %s}",
             queue, message);
    json_t *reply = ask(d, fd, json);
    cr_expect_str_eq(result_of(reply), "enqueued");
    json_decref(reply);
}

/* A dequeue's reply; `options` goes into the request as it is. */
static json_t *dequeue(const pb_daemon *d, int fd, const char *queue,
                       const char *options)
{
    char json[512];
    snprintf(json, sizeof json, "{\"action\": \"dequeue\", \"queue\": \"%s\"%s%s}",
             queue, *options ? ", " : "", options);
    return ask(d, fd, json);
}

static void expect_depth(const pb_daemon *d, int fd, const char *queue,
                         long long ready, long long leased)
{
    char json[256], want[128];
    snprintf(json, sizeof json, "{\"action\": \"depth\", \"queue\": \"%s\"}", queue);
    snprintf(want, sizeof want,
             "{\"result\": \"depth\", \"ready\": %lld, \"leased\": %lld}",
             ready, leased);
    send_json(d, fd, json);
    expect_text(d, fd, want);
}

static void ack(const pb_daemon *d, int fd, const char *queue, const char *id)
{
    char json[256];
    snprintf(json, sizeof json,
             "{\"action\": \"ack\", \"queue\": \"%s\", \"id\": \"%s\"}", queue, id);
    send_json(d, fd, json);
    expect_text(d, fd, "{\"result\": \"acked\"}");
}

static void ack_refused(const pb_daemon *d, int fd, const char *queue,
                        const char *id)
{
    char json[256];
    snprintf(json, sizeof json,
             "{\"action\": \"ack\", \"queue\": \"%s\", \"id\": \"%s\"}", queue, id);
    send_json(d, fd, json);
    pb_t_expect_error(d, fd, "plugin_failed");
}

/* Whether fd has something to read within ms. */
static int readable(int fd, int ms)
{
    struct pollfd p = { fd, POLLIN, 0 };
    return poll(&p, 1, ms) == 1;
}

/*
 * The daemon's count of messages read, the stats request asking included.
 * With nothing else talking to the daemon, the n-th stats request after
 * one that saw `base` sees base + n plus what other connections sent.
 */
static long long messages_read(const pb_daemon *d)
{
    json_t *stats = pb_t_stats(d);
    long long n = pb_t_stat_path(stats, "messages");
    json_decref(stats);
    return n;
}

/* Waits until the daemon has read `more` requests besides stats requests
 * since messages_read() said `base`. */
static void wait_read(const pb_daemon *d, long long base, int more)
{
    for (int asked = 1; asked < 1000; asked++) {
        if (messages_read(d) >= base + asked + more)
            return;
        usleep(10 * 1000);
    }
    pb_t_fail(d, __FILE__, __LINE__, "the daemon never read the request");
}

/* Waits until the daemon holds `want` connections, the one asking
 * included. */
static void wait_open_connections(const pb_daemon *d, long long want)
{
    for (int i = 0; i < 1000; i++) {
        json_t *stats = pb_t_stats(d);
        long long open = pb_t_stat_path(stats, "connections.open");
        json_decref(stats);
        if (open == want)
            return;
        usleep(10 * 1000);
    }
    pb_t_fail(d, __FILE__, __LINE__, "the daemon never held %lld connections", want);
}

/* --- Protocol ------------------------------------------------------------- */

Test(queue, replies_are_written_like_json_dumps_and_messages_come_back_verbatim)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int fd = pb_dial(&d, 0);
    send_json(&d, fd, "{\"action\": \"enqueue\", \"queue\": \"jobs\", \"message\":"
              "{\"task\":\"r\xc3\xa9sum\xc3\xa9 \xf0\x9f\x90\xb0\",\"n\":[1,2.5,null,true],\"o\":{}}}");
    expect_text(&d, fd, "{\"result\": \"enqueued\", \"id\": \"1\"}");
    send_json(&d, fd, "{\"action\": \"dequeue\", \"queue\": \"jobs\"}");
    expect_text(&d, fd, "{\"result\": \"message\", \"id\": \"1\", \"message\": "
                "{\"task\": \"r\xc3\xa9sum\xc3\xa9 \xf0\x9f\x90\xb0\", \"n\": [1, 2.5, null, true], "
                "\"o\": {}}, \"deliveries\": 1}");
    send_json(&d, fd, "{\"action\": \"dequeue\", \"queue\": \"jobs\"}");
    expect_text(&d, fd, "{\"result\": \"empty\"}");
    ack(&d, fd, "jobs", "1");
    expect_depth(&d, fd, "jobs", 0, 0);
    /* A message may be any JSON value, a bare string or null included. */
    enqueue(&d, fd, "jobs", "\"just text\"");
    enqueue(&d, fd, "jobs", "null");
    send_json(&d, fd, "{\"action\": \"dequeue\", \"queue\": \"jobs\"}");
    expect_text(&d, fd, "{\"result\": \"message\", \"id\": \"2\", \"message\": "
                "\"just text\", \"deliveries\": 1}");
    send_json(&d, fd, "{\"action\": \"dequeue\", \"queue\": \"jobs\"}");
    expect_text(&d, fd, "{\"result\": \"message\", \"id\": \"3\", \"message\": "
                "null, \"deliveries\": 1}");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(queue, messages_of_a_queue_come_out_in_enqueue_order)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int fd = pb_dial(&d, 0);
    char message[32];
    for (int i = 0; i < 20; i++) {
        snprintf(message, sizeof message, "{\"n\": %d}", i);
        enqueue(&d, fd, i % 2 ? "odd" : "even", message);
    }
    for (int i = 0; i < 20; i++) {
        json_t *reply = dequeue(&d, fd, i < 10 ? "even" : "odd", "");
        cr_assert_str_eq(result_of(reply), "message");
        long long n = json_integer_value(json_object_get(json_object_get(reply, "message"), "n"));
        cr_expect_eq(n, i < 10 ? 2 * i : 2 * (i - 10) + 1, "dequeue %d gave n = %lld", i, n);
        json_decref(reply);
    }
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(queue, a_message_not_acked_in_time_is_delivered_again)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int fd = pb_dial(&d, 0);
    enqueue(&d, fd, "jobs", "\"work\"");
    json_t *first = dequeue(&d, fd, "jobs", "\"lease\": 0.2");
    cr_assert_str_eq(result_of(first), "message");
    cr_expect_eq(json_integer_value(json_object_get(first, "deliveries")), 1);
    /* Nothing else is ready: this dequeue waits for the lease to end. */
    json_t *again = dequeue(&d, fd, "jobs", "\"wait\": 10, \"lease\": 30");
    cr_assert_str_eq(result_of(again), "message");
    cr_expect_str_eq(json_string_value(json_object_get(again, "id")),
                     json_string_value(json_object_get(first, "id")));
    cr_expect_eq(json_integer_value(json_object_get(again, "deliveries")), 2);
    ack(&d, fd, "jobs", json_string_value(json_object_get(again, "id")));
    expect_depth(&d, fd, "jobs", 0, 0);
    json_decref(first);
    json_decref(again);
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(queue, acking_an_unknown_id_fails_and_the_connection_goes_on)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int fd = pb_dial(&d, 0);
    ack_refused(&d, fd, "jobs", "999");
    ack_refused(&d, fd, "jobs", "not-an-id");
    enqueue(&d, fd, "jobs", "1");
    /* Enqueued but never dequeued: nothing to ack yet. */
    ack_refused(&d, fd, "jobs", "1");
    json_t *reply = dequeue(&d, fd, "jobs", "");
    /* The id belongs to its queue only. */
    ack_refused(&d, fd, "other", "1");
    ack(&d, fd, "jobs", json_string_value(json_object_get(reply, "id")));
    ack_refused(&d, fd, "jobs", "1");
    json_decref(reply);
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(queue, acking_after_the_lease_ended_fails)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int fd = pb_dial(&d, 0);
    enqueue(&d, fd, "jobs", "\"slow work\"");
    json_t *reply = dequeue(&d, fd, "jobs", "\"lease\": 0.1");
    cr_assert_str_eq(result_of(reply), "message");
    usleep(300 * 1000);
    ack_refused(&d, fd, "jobs", json_string_value(json_object_get(reply, "id")));
    json_decref(reply);
    /* Still there, for the next consumer. */
    reply = dequeue(&d, fd, "jobs", "");
    cr_expect_str_eq(result_of(reply), "message");
    cr_expect_eq(json_integer_value(json_object_get(reply, "deliveries")), 2);
    json_decref(reply);
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(queue, depth_counts_ready_and_leased_messages_per_queue)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int fd = pb_dial(&d, 0);
    expect_depth(&d, fd, "jobs", 0, 0);
    enqueue(&d, fd, "jobs", "1");
    enqueue(&d, fd, "jobs", "2");
    enqueue(&d, fd, "jobs", "3");
    enqueue(&d, fd, "mail", "4");
    json_t *reply = dequeue(&d, fd, "jobs", "\"lease\": 60");
    expect_depth(&d, fd, "jobs", 2, 1);
    expect_depth(&d, fd, "mail", 1, 0);
    ack(&d, fd, "jobs", json_string_value(json_object_get(reply, "id")));
    expect_depth(&d, fd, "jobs", 2, 0);
    json_decref(reply);
    /* An expired lease counts as ready again. */
    reply = dequeue(&d, fd, "jobs", "\"lease\": 0.1");
    json_decref(reply);
    usleep(300 * 1000);
    expect_depth(&d, fd, "jobs", 2, 0);
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(queue, metrics_count_operations_and_keep_levels_by_queue)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2"));
    json_t *stats = pb_t_stats(&d);
    int has_metrics = pb_t_stat_path(stats, "plugins.queue.metrics.enqueued") >= 0;
    json_decref(stats);
    if (!has_metrics) {
        pb_daemon_stop_clean(&d);
        cr_skip_test("this daemon reports no plugin metrics");
    }
    int fd = pb_dial(&d, 0);
    enqueue(&d, fd, "jobs", "1");
    json_t *reply = dequeue(&d, fd, "jobs", "\"lease\": 0.1");
    json_decref(reply);
    reply = dequeue(&d, fd, "jobs", "\"wait\": 10, \"lease\": 60");
    cr_expect_eq(json_integer_value(json_object_get(reply, "deliveries")), 2);
    ack(&d, fd, "jobs", json_string_value(json_object_get(reply, "id")));
    json_decref(reply);
    enqueue(&d, fd, "jobs", "2");
    enqueue(&d, fd, "jobs", "3");
    enqueue(&d, fd, "mail", "4");
    reply = dequeue(&d, fd, "jobs", "\"lease\": 60");
    json_decref(reply);
    expect_depth(&d, fd, "jobs", 1, 1);
    expect_depth(&d, fd, "mail", 1, 0);
    close(fd);
    stats = pb_t_stats(&d);
    static const struct { const char *path; long long want; } metrics[] = {
        { "plugins.queue.metrics.enqueued", 4 },
        { "plugins.queue.metrics.delivered", 3 },
        { "plugins.queue.metrics.redelivered", 1 },
        { "plugins.queue.metrics.acked", 1 },
        { "plugins.queue.metrics.ready.jobs", 1 },
        { "plugins.queue.metrics.leased.jobs", 1 },
        { "plugins.queue.metrics.ready.mail", 1 },
        { "plugins.queue.metrics.leased.mail", 0 },
    };
    for (size_t i = 0; i < sizeof metrics / sizeof *metrics; i++)
        cr_expect_eq(pb_t_stat_path(stats, metrics[i].path), metrics[i].want,
                     "%s is %lld", metrics[i].path, pb_t_stat_path(stats, metrics[i].path));
    json_decref(stats);
    pb_daemon_stop_clean(&d);
}

/* --- Waiting ---------------------------------------------------------------- */

Test(queue, a_dequeue_that_waits_for_nothing_says_empty_after_its_wait)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int fd = pb_dial(&d, 0);
    double start = seconds_now();
    send_json(&d, fd, "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": 0.3}");
    expect_text(&d, fd, "{\"result\": \"empty\"}");
    double took = seconds_now() - start;
    cr_expect(took >= 0.29, "empty after %.3f s of a 0.3 s wait", took);
    /* Meanwhile the worker served others. */
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(queue, a_waiting_dequeue_gets_a_message_enqueued_on_another_connection)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int consumer = pb_dial(&d, 0);
    int producer = pb_dial(&d, 0);
    long long base = messages_read(&d);
    send_json(&d, consumer, "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": 30}");
    wait_read(&d, base, 1);
    cr_expect(!readable(consumer, 0), "the dequeue answered before any enqueue");
    /* The worker is not blocked by the waiting dequeue. */
    expect_depth(&d, producer, "jobs", 0, 0);
    double start = seconds_now();
    enqueue(&d, producer, "jobs", "\"wake up\"");
    cr_assert(readable(consumer, 2000), "the waiting dequeue was not woken within 2 s");
    json_t *reply = recv_json(&d, consumer);
    cr_expect_str_eq(result_of(reply), "message");
    cr_expect_str_eq(json_string_value(json_object_get(reply, "message")), "wake up");
    cr_log_info("woken %.1f ms after the enqueue was sent", (seconds_now() - start) * 1e3);
    json_decref(reply);
    close(consumer);
    close(producer);
    pb_daemon_stop_clean(&d);
}

Test(queue, waiting_dequeues_are_served_in_arrival_order)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int consumers[3];
    for (int i = 0; i < 3; i++) {
        consumers[i] = pb_dial(&d, 0);
        long long base = messages_read(&d);
        send_json(&d, consumers[i],
                  "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": 30}");
        wait_read(&d, base, 1);
    }
    /* A waiter whose client left is passed over. The client resets the
     * connection: a mere close would be a half-close, after which the
     * daemon still sends what is answered. */
    struct linger reset = { 1, 0 };
    setsockopt(consumers[1], SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    close(consumers[1]);
    wait_open_connections(&d, 3);
    int producer = pb_dial(&d, 0);
    enqueue(&d, producer, "jobs", "\"first\"");
    enqueue(&d, producer, "jobs", "\"second\"");
    json_t *reply = recv_json(&d, consumers[0]);
    cr_expect_str_eq(json_string_value(json_object_get(reply, "message")), "first");
    json_decref(reply);
    reply = recv_json(&d, consumers[2]);
    cr_expect_str_eq(json_string_value(json_object_get(reply, "message")), "second");
    json_decref(reply);
    expect_depth(&d, producer, "jobs", 0, 2);
    close(consumers[0]);
    close(consumers[2]);
    close(producer);
    pb_daemon_stop_clean(&d);
}

Test(queue, a_dequeue_waiting_as_the_daemon_stops_still_gets_its_answer)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int fd = pb_dial(&d, 0);
    long long base = messages_read(&d);
    send_json(&d, fd, "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": 1}");
    wait_read(&d, base, 1);
    pb_daemon_signal(&d, SIGTERM);
    expect_text(&d, fd, "{\"result\": \"empty\"}");
    close(fd);
    pb_daemon_wait_clean(&d);
}

/* A worker stopping with dequeues still waiting (past shutdown_timeout)
 * lets go of them cleanly. */
Test(queue, a_worker_stops_with_dequeues_still_waiting)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1") "limits = { shutdown_timeout = 0.5; };\n");
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = pb_dial(&d, 0);
        long long base = messages_read(&d);
        send_json(&d, fds[i], "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": 60}");
        wait_read(&d, base, 1);
    }
    pb_daemon_signal(&d, SIGTERM);
    for (int i = 0; i < 3; i++) {
        pb_t_expect_eof(&d, fds[i]);
        close(fds[i]);
    }
    pb_daemon_wait_clean(&d);
}

/* --- Across workers ----------------------------------------------------------- */

/* The inode of the daemon's end of our connection fd, from /proc/net/tcp:
 * the socket whose local port is the daemon's and remote port ours. */
static unsigned long server_inode(int fd, int daemon_port)
{
    struct sockaddr_in self;
    socklen_t length = sizeof self;
    if (getsockname(fd, (struct sockaddr *)&self, &length) != 0)
        return 0;
    int our_port = ntohs(self.sin_port);
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    unsigned long inode = 0;
    while (f != NULL && inode == 0 && fgets(line, sizeof line, f) != NULL) {
        unsigned local_port, remote_port;
        unsigned long node;
        if (sscanf(line, " %*d: %*x:%x %*x:%x %*x %*x:%*x %*x:%*x %*x %*d %*d %lu",
                   &local_port, &remote_port, &node) == 3
            && (int)local_port == daemon_port && (int)remote_port == our_port)
            inode = node;
    }
    if (f != NULL)
        fclose(f);
    return inode;
}

/* Which of the workers holds our connection fd; -1 when none can be seen
 * to (the daemon may not have accepted it yet). */
static int worker_holding(const pb_daemon *d, int fd, const pid_t *workers, int n)
{
    char want[64];
    snprintf(want, sizeof want, "socket:[%lu]", server_inode(fd, d->port[0]));
    for (int i = 0; i < n; i++) {
        char dir_path[64];
        snprintf(dir_path, sizeof dir_path, "/proc/%d/fd", (int)workers[i]);
        DIR *dir = opendir(dir_path);
        struct dirent *entry;
        int found = 0;
        while (dir != NULL && !found && (entry = readdir(dir)) != NULL) {
            char path[320], target[64];
            snprintf(path, sizeof path, "%s/%s", dir_path, entry->d_name);
            ssize_t got = readlink(path, target, sizeof target - 1);
            if (got > 0) {
                target[got] = '\0';
                found = strcmp(target, want) == 0;
            }
        }
        if (dir != NULL)
            closedir(dir);
        if (found)
            return i;
    }
    return -1;
}

/* A connection held by worker `which`: dials until one lands there. Each
 * connection is made to talk first, so that a worker has accepted it. */
static int dial_worker(const pb_daemon *d, const pid_t *workers, int n, int which)
{
    for (int tries = 0; tries < 200; tries++) {
        int fd = pb_dial(d, 0);
        expect_depth(d, fd, "nothing", 0, 0);
        if (worker_holding(d, fd, workers, n) == which)
            return fd;
        close(fd);
    }
    pb_t_fail(d, __FILE__, __LINE__, "no connection landed on worker %d", which);
}

Test(queue, a_waiting_dequeue_is_woken_by_an_enqueue_on_another_worker)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2"));
    pid_t workers[4];
    cr_assert_eq(pb_daemon_wait_workers(&d, workers, 4, 2), 2);
    int on[2] = { dial_worker(&d, workers, 2, 0), dial_worker(&d, workers, 2, 1) };
    for (int consumer = 0; consumer < 2; consumer++) {
        int producer = 1 - consumer;
        long long base = messages_read(&d);
        send_json(&d, on[consumer], "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": 30}");
        wait_read(&d, base, 1);
        enqueue(&d, on[producer], "jobs", "\"from the other worker\"");
        cr_assert(readable(on[consumer], 2000),
                  "a dequeue waiting in worker %d was not woken within 2 s by an "
                  "enqueue in worker %d", consumer, producer);
        json_t *reply = recv_json(&d, on[consumer]);
        cr_expect_str_eq(result_of(reply), "message");
        ack(&d, on[consumer], "jobs", json_string_value(json_object_get(reply, "id")));
        json_decref(reply);
    }
    close(on[0]);
    close(on[1]);
    pb_daemon_stop_clean(&d);
}

/* --- Malformed requests and settings -------------------------------------------- */

Test(queue, malformed_requests_get_error_frames_and_the_connection_goes_on)
{
    static const char *const requests[] = {
        "{\"action\": \"dequeue\"}",
        "{\"action\": \"dequeue\", \"queue\": 7}",
        "{\"action\": \"dequeue\", \"queue\": \"\"}",
        "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": \"x\"}",
        "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": -1}",
        "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": 1e9}",
        "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"lease\": -1}",
        "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"lease\": 0}",
        "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"lease\": null}",
        "{\"action\": \"enqueue\", \"queue\": \"jobs\"}",
        "{\"action\": \"ack\", \"queue\": \"jobs\"}",
        "{\"action\": \"ack\", \"queue\": \"jobs\", \"id\": 1}",
        "{\"action\": \"purge\", \"queue\": \"jobs\"}",
        "{\"queue\": \"jobs\"}",
        "[\"enqueue\"]",
    };
    pb_daemon d;
    pb_daemon_start(&d, CONF("1"));
    int fd = pb_dial(&d, 0);
    for (size_t i = 0; i < sizeof requests / sizeof *requests; i++) {
        pb_t_context("request %s", requests[i]);
        send_json(&d, fd, requests[i]);
        pb_t_expect_error(&d, fd, "plugin_failed");
    }
    pb_t_context("%s", "");
    send_json(&d, fd, "{\"action\": \"enqueue\", \"queue\": \"jobs\", \"message\": ");
    pb_t_expect_error(&d, fd, "bad_json");
    expect_depth(&d, fd, "jobs", 0, 0);
    char *log = pb_daemon_log(&d);
    cr_expect(strstr(log, "\"wait\" is not a number of seconds") != NULL,
              "the log does not say what was wrong:\n%s", log);
    free(log);
    close(fd);
    pb_daemon_stop_clean(&d);
}

static void expect_refused_settings(const char *settings, const char *why)
{
    pb_daemon d;
    char conf[2048];
    snprintf(conf, sizeof conf, CONF_WITH("1", "%s"), settings);
    pb_daemon_prepare(&d, conf);
    const char *argv[] = { PB_T_DAEMON_BIN, "-t", "-c", d.config_path, NULL };
    pb_run_result r;
    pb_run(argv, NULL, NULL, 0, &r);
    cr_expect_eq(r.status, 78, "plugboard -t exited %d for settings %s", r.status, settings);
    cr_expect(strstr(r.err, why) != NULL, "for settings %s, no \"%s\" in:\n%s",
              settings, why, r.err);
    pb_run_free(&r);
}

Test(queue, unknown_or_wrong_settings_are_refused)
{
    expect_refused_settings("pth = \"q.db\";", "unknown setting \"pth\"");
    expect_refused_settings("path = 7;", "\"path\" must be");
    expect_refused_settings("backend = \"mysql\";", "\"backend\" must be");
}

Test(queue, the_configuration_check_opens_no_database)
{
    pb_daemon d;
    pb_daemon_prepare(&d, CONF("1"));
    const char *argv[] = { PB_T_DAEMON_BIN, "-t", "-c", d.config_path, NULL };
    pb_run_result r;
    pb_run(argv, NULL, NULL, 0, &r);
    cr_expect_eq(r.status, 0, "plugboard -t exited %d:\n%s", r.status, r.err);
    char path[256];
    snprintf(path, sizeof path, "%s/queue.db", d.dir);
    cr_expect(access(path, F_OK) != 0, "plugboard -t created %s", path);
    pb_run_free(&r);
}

Test(queue, a_database_that_cannot_be_opened_is_named_in_the_log)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF_WITH("1", "path = \"@DIR@/missing/deeper/queue.db\";"));
    char want[256];
    snprintf(want, sizeof want, "cannot open %s/missing/deeper/queue.db: unable to "
             "open database file", d.dir);
    char *log = NULL;
    for (int i = 0; i < 500; i++) {
        free(log);
        log = pb_daemon_log(&d);
        if (strstr(log, want) != NULL)
            break;
        usleep(10 * 1000);
    }
    cr_expect(strstr(log, want) != NULL, "no \"%s\" in the log:\n%s", want, log);
    free(log);
    pb_daemon_stop(&d);
}

Test(queue, a_missing_last_directory_of_the_database_is_made)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF_WITH("1", "path = \"@DIR@/state/queue.db\";"));
    int fd = pb_dial(&d, 0);
    enqueue(&d, fd, "jobs", "\"kept\"");
    expect_depth(&d, fd, "jobs", 1, 0);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/state", d.dir);
    struct stat st;
    cr_assert_eq(stat(dir, &st), 0, "%s was made", dir);
    cr_expect_eq(st.st_mode & 0777, 0750, "%s is private to the workers' user", dir);
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* --- Durability ----------------------------------------------------------------- */

/* Sends `count` requests made by `make` over fd, `window` at a time, and
 * hands each reply to `check`. */
static void pipeline(const pb_daemon *d, int fd, int count,
                     void (*make)(int i, char *out, size_t cap),
                     void (*check)(const pb_daemon *d, int i, json_t *reply))
{
    const int window = 100;
    char json[256];
    for (int sent = 0; sent < count;) {
        int batch = count - sent < window ? count - sent : window;
        for (int i = 0; i < batch; i++) {
            make(sent + i, json, sizeof json);
            send_json(d, fd, json);
        }
        for (int i = 0; i < batch; i++) {
            json_t *reply = recv_json(d, fd);
            check(d, sent + i, reply);
            json_decref(reply);
        }
        sent += batch;
    }
}

static void make_enqueue(int i, char *out, size_t cap)
{
    snprintf(out, cap, "{\"action\": \"enqueue\", \"queue\": \"jobs\", "
             "\"message\": {\"n\": %d}}", i);
}

static void check_enqueued(const pb_daemon *d, int i, json_t *reply)
{
    pb_check(d, strcmp(result_of(reply), "enqueued") == 0,
             "enqueue %d: %s", i, result_of(reply));
}

static void make_dequeue(int i, char *out, size_t cap)
{
    (void)i;
    snprintf(out, cap, "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"lease\": 600}");
}

/* After the first message, taken on its own: reply i carries n = i + 1. */
static void check_in_order(const pb_daemon *d, int i, json_t *reply)
{
    json_t *n = json_object_get(json_object_get(reply, "message"), "n");
    pb_check(d, strcmp(result_of(reply), "message") == 0 && json_integer_value(n) == i + 1,
             "dequeue %d: %s with n = %lld", i, result_of(reply),
             (long long)json_integer_value(n));
}

/* Whether a process is gone (or a zombie, as good as gone). */
static int gone(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *stat = pb_t_read_file(path, NULL);
    const char *state = stat != NULL ? strrchr(stat, ')') : NULL;
    int dead = state == NULL || state[2] == 'Z';
    free(stat);
    return dead;
}

Test(queue, acknowledged_enqueues_survive_kill_9_of_the_whole_daemon,
     .timeout = 120)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2"));
    pid_t workers[4];
    int n = pb_daemon_wait_workers(&d, workers, 4, 2);
    cr_assert_eq(n, 2);
    int fd = pb_dial(&d, 0);
    double start = seconds_now();
    pipeline(&d, fd, 2000, make_enqueue, check_enqueued);
    cr_log_info("2000 enqueues, 100 in flight, in %.2f s", seconds_now() - start);
    close(fd);

    /* No warning: every process at once, the master first so that it
     * starts no replacement. */
    kill(d.pid, SIGKILL);
    for (int i = 0; i < n; i++)
        kill(workers[i], SIGKILL);
    cr_expect_eq(pb_daemon_wait(&d), 128 + SIGKILL);
    for (int i = 0; i < n; i++)
        for (int tries = 0; tries < 500 && !gone(workers[i]); tries++)
            usleep(10 * 1000);

    pb_daemon_launch(&d, CONF("2"));
    fd = pb_dial(&d, 0);
    expect_depth(&d, fd, "jobs", 2000, 0);
    send_json(&d, fd, "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"lease\": 600}");
    expect_text(&d, fd, "{\"result\": \"message\", \"id\": \"1\", \"message\": "
                "{\"n\": 0}, \"deliveries\": 1}");
    /* The first is leased now; the rest follow in order. */
    pipeline(&d, fd, 1999, make_dequeue, check_in_order);
    close(fd);
    pb_daemon_stop_clean(&d);
}

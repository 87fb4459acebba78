/*
 * broker_bench.c - plugboard-broker-bench: loads the broker plugins of a
 * running daemon from one libev thread, and reports messages per second.
 *
 *   fanout  S connections subscribe to one topic and one more publishes to
 *           it as fast as a bounded window allows: publishes/s and
 *           messages delivered/s across the subscribers. With --redis the
 *           same clients speak RESP to a redis-server (SUBSCRIBE, PUBLISH),
 *           for a side-by-side comparison.
 *   queue   C clients each loop over enqueue, dequeue and ack, on a queue
 *           of their own or one they share: cycles/s and their latency.
 *
 * Every reply and delivery is checked. The server's CPU time is measured
 * from outside (tools/bench-broker.sh), since a server may be several
 * processes.
 */

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buffer.h"
#include "frame.h"
#include "json_dump.h"

#define PROGRAM "plugboard-broker-bench"
#define EXIT_ERRORS 1
#define EXIT_USAGE 2
#define EXIT_CONNECT 3

#define READ_CHUNK (64 * 1024)
#define MAX_REPLY_BYTES (64u * 1024 * 1024)
#define MAX_CONNECTIONS 100000
#define MAX_WINDOW 1000000
#define MAX_SIZE (16u * 1024 * 1024)
/* Nothing delivered or answered for this long ends a run: a server that
 * drops messages must not leave the bench waiting for ever. */
#define STALL_NS (5 * 1000000000ull)
/* After the measured window, how long the last deliveries may take to
 * arrive before those missing are counted as lost. */
#define DRAIN_SECONDS 5.0
#define PAYLOAD_PATTERN "abcdefghijklmnopqrstuvwxyz0123456789"

typedef enum mode { MODE_FANOUT, MODE_QUEUE } mode;
typedef enum role { ROLE_SUBSCRIBER, ROLE_PUBLISHER, ROLE_QUEUE_CLIENT } role;
typedef enum step { STEP_ENQUEUE, STEP_DEQUEUE, STEP_ACK } step;
typedef enum phase { PHASE_SUBSCRIBING, PHASE_RUNNING, PHASE_DRAINING } phase;

typedef struct options {
    mode mode;
    int redis;
    const char *host;
    const char *port;
    unsigned long subscribers;
    unsigned long window;
    unsigned long clients;
    int shared;
    size_t size;
    double duration;
    const char *topic;
    int json;
} options;

struct bench;

typedef struct conn {
    struct bench *b;
    role role;
    int fd;                     /* -1 once closed */
    ev_io rio;
    ev_io wio;
    pb_buf in;
    pb_buf out;
    pb_frame_decoder decoder;
    int subscribed;
    char queue[32];             /* queue clients: the queue they use */
    pb_buf enqueue_request;     /* queue clients: theirs, encoded once */
    pb_buf dequeue_request;
    step step;
    uint64_t cycle_start_ns;
} conn;

typedef struct bench {
    options opt;
    struct ev_loop *loop;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char addr_text[300];
    const char *server;         /* "plugboard" or "redis", for the report */

    conn *conns;
    size_t nconns;
    conn *publisher;
    char *payload;              /* the message: size bytes of text */
    pb_buf subscribe_request;
    pb_buf publish_request;     /* the same publish every time */
    /* Wire bytes of a delivery, of a publish's reply and (RESP) of a
     * subscription's confirmation: every one is alike, so one memcmp
     * recognizes it. Frames are learnt from the first one, which is
     * checked in full; RESP's are known in advance. */
    pb_buf expected_push;
    pb_buf expected_published;
    pb_buf expected_subscribed;

    phase phase;
    unsigned long subscribed;
    uint64_t published;         /* publishes sent */
    uint64_t publish_replies;
    uint64_t publish_ok;
    uint64_t delivered;
    uint64_t lost;              /* never delivered, once the run is over */
    uint64_t window_published;  /* the counts when the window closed */
    uint64_t window_delivered;
    uint64_t cycles;
    uint64_t empty;
    uint64_t errors;
    uint64_t *cycle_ns;         /* each cycle's latency, for percentiles */
    size_t ncycle_ns;
    size_t cycle_ns_cap;

    uint64_t start_ns;
    uint64_t end_ns;
    uint64_t last_progress_ns;
    ev_timer duration_timer;
    ev_timer drain_timer;
    ev_timer watchdog;
    ev_signal sigint;
    int said_wrong;
    int said_lost;
    int said_error;
    int said_stall;
} bench;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A diagnostic, once per kind of trouble. */
static void note(int *said, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void note(int *said, const char *format, ...)
{
    va_list ap;

    if (*said)
        return;
    *said = 1;
    fputs(PROGRAM ": ", stderr);
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void out_of_memory(void) __attribute__((noreturn));

static void out_of_memory(void)
{
    fputs(PROGRAM ": out of memory\n", stderr);
    exit(EXIT_ERRORS);
}

static void stop(bench *b)
{
    ev_break(b->loop, EVBREAK_ALL);
}

/* ---- connections --------------------------------------------------------- */

static void conn_close(conn *c)
{
    if (c->fd < 0)
        return;
    ev_io_stop(c->b->loop, &c->rio);
    ev_io_stop(c->b->loop, &c->wio);
    close(c->fd);
    c->fd = -1;
}

/* A lost connection ends the run: the counts of the others would no
 * longer mean what they say. */
static void conn_lost(conn *c, const char *why)
{
    bench *b = c->b;

    note(&b->said_lost, "connection lost: %s", why);
    b->errors++;
    conn_close(c);
    stop(b);
}

static void conn_flush(conn *c)
{
    while (pb_buf_used(&c->out) > 0) {
        ssize_t n = send(c->fd, pb_buf_head(&c->out), pb_buf_used(&c->out), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_lost(c, strerror(errno));
            return;
        }
        pb_buf_consume(&c->out, (size_t)n);
    }
    if (pb_buf_used(&c->out) > 0)
        ev_io_start(c->b->loop, &c->wio);
    else
        ev_io_stop(c->b->loop, &c->wio);
}

static void conn_send(conn *c, const pb_buf *request)
{
    if (pb_buf_append(&c->out, pb_buf_head(request), pb_buf_used(request)) != 0)
        out_of_memory();
    if (!ev_is_active(&c->wio))
        conn_flush(c);
}

/* Whether the front of c->in is `expected`: 1 when it is (and it is
 * consumed), 0 when it is not, -1 when what is there so far matches and
 * more must come. */
static int take_expected(conn *c, const pb_buf *expected)
{
    size_t want = pb_buf_used(expected), have = pb_buf_used(&c->in);
    size_t n = have < want ? have : want;

    if (want == 0 || c->decoder.header != NULL
        || memcmp(pb_buf_head(&c->in), pb_buf_head(expected), n) != 0)
        return 0;
    if (n < want)
        return -1;
    pb_buf_consume(&c->in, want);
    return 1;
}

/* ---- frames: plugboard --------------------------------------------------- */

static void frame_request(pb_buf *out, json_t *request)
{
    pb_buf content = PB_BUF_INIT;

    if (request == NULL || pb_json_dump(&content, request) != 0
        || pb_frame_encode(out, "text/json", "utf-8", pb_buf_head(&content),
                           pb_buf_used(&content)) != 0)
        out_of_memory();
    pb_buf_free(&content);
    json_decref(request);
}

/* The JSON object of a text/json frame (new reference), else NULL. */
static json_t *frame_json(const pb_message *msg)
{
    if (strcmp(msg->content_type, "text/json") != 0)
        return NULL;
    json_t *value = json_loadb((const char *)msg->content, msg->content_length, 0, NULL);
    if (value != NULL && !json_is_object(value)) {
        json_decref(value);
        return NULL;
    }
    return value;
}

static int has_string(const json_t *object, const char *key, const char *want)
{
    const char *value = json_string_value(json_object_get(object, key));
    return value != NULL && strcmp(value, want) == 0;
}

/* An error frame: counted, said once, 1; else 0. */
static int error_frame(bench *b, const json_t *content)
{
    const char *code = json_string_value(json_object_get(content, "code"));
    const char *text = json_string_value(json_object_get(content, "error"));

    if (code == NULL || text == NULL)
        return 0;
    b->errors++;
    note(&b->said_error, "error reply: %s: %s", code, text);
    return 1;
}

static void wrong_frame(bench *b, const pb_message *msg, const char *what)
{
    b->errors++;
    note(&b->said_wrong, "wrong %s (%s, %zu bytes): %.*s", what, msg->content_type,
         msg->content_length, msg->content_length > 200 ? 200 : (int)msg->content_length,
         (const char *)msg->content);
}

static void learn(pb_buf *expected, const unsigned char *wire, size_t length)
{
    if (pb_buf_append(expected, wire, length) != 0)
        out_of_memory();
}

static void start_publishing(bench *b);
static void publish_more(bench *b);
static void queue_cycle_start(conn *c);

static void subscriber_frame(conn *c, const pb_message *msg, const unsigned char *wire,
                             size_t length)
{
    bench *b = c->b;
    json_t *content = frame_json(msg);
    int push = json_is_true(json_object_get(msg->header, "push"));

    if (content != NULL && error_frame(b, content)) {
        /* slow_consumer, or the daemon shutting down: the end of it. */
        json_decref(content);
        conn_lost(c, "the daemon sent an error");
        return;
    }
    if (!c->subscribed) {
        if (!push && content != NULL && has_string(content, "result", "subscribed")
            && has_string(content, "topic", b->opt.topic)) {
            c->subscribed = 1;
            if (++b->subscribed == b->opt.subscribers)
                start_publishing(b);
        } else {
            wrong_frame(b, msg, "reply to subscribe");
        }
    } else if (push && content != NULL && has_string(content, "topic", b->opt.topic)
               && has_string(content, "message", b->payload)
               && json_object_size(content) == 2) {
        if (pb_buf_used(&b->expected_push) == 0)
            learn(&b->expected_push, wire, length);
        b->delivered++;
    } else {
        wrong_frame(b, msg, "delivery");
    }
    json_decref(content);
}

static void publisher_frame(conn *c, const pb_message *msg, const unsigned char *wire,
                            size_t length)
{
    bench *b = c->b;
    json_t *content = frame_json(msg);

    b->publish_replies++;
    if (content != NULL && json_object_size(content) == 1
        && has_string(content, "result", "published")) {
        if (pb_buf_used(&b->expected_published) == 0)
            learn(&b->expected_published, wire, length);
        b->publish_ok++;
    } else if (content == NULL || !error_frame(b, content)) {
        wrong_frame(b, msg, "reply to publish");
    }
    json_decref(content);
}

static void queue_request(conn *c, const char *action, const char *id)
{
    pb_buf frame = PB_BUF_INIT;

    frame_request(&frame, json_pack("{s:s, s:s, s:s}", "action", action, "queue", c->queue,
                                    "id", id));
    conn_send(c, &frame);
    pb_buf_free(&frame);
}

static void record_cycle(bench *b, uint64_t ns)
{
    if (b->ncycle_ns == b->cycle_ns_cap) {
        size_t cap = b->cycle_ns_cap ? b->cycle_ns_cap * 2 : 4096;
        uint64_t *grown = realloc(b->cycle_ns, cap * sizeof *grown);
        if (grown == NULL)
            out_of_memory();
        b->cycle_ns = grown;
        b->cycle_ns_cap = cap;
    }
    b->cycle_ns[b->ncycle_ns++] = ns;
}

/* enqueue → "enqueued"; dequeue → "message" (or "empty", which begins the
 * cycle anew); ack → "acked", a cycle done. An error begins it anew too. */
static void queue_frame(conn *c, const pb_message *msg)
{
    bench *b = c->b;
    json_t *content = frame_json(msg);
    const char *result = json_string_value(json_object_get(content, "result"));
    static const char *const wanted[] = { "enqueued", "message", "acked" };

    if (content != NULL && error_frame(b, content)) {
        json_decref(content);
        queue_cycle_start(c);
        return;
    }
    if (c->step == STEP_DEQUEUE && result != NULL && strcmp(result, "empty") == 0) {
        b->empty++;
        json_decref(content);
        queue_cycle_start(c);
        return;
    }
    if (result == NULL || strcmp(result, wanted[c->step]) != 0) {
        wrong_frame(b, msg, "queue reply");
        json_decref(content);
        queue_cycle_start(c);
        return;
    }
    switch (c->step) {
    case STEP_ENQUEUE:
        c->step = STEP_DEQUEUE;
        conn_send(c, &c->dequeue_request);
        break;
    case STEP_DEQUEUE: {
        const char *id = json_string_value(json_object_get(content, "id"));
        if (id == NULL || !has_string(content, "message", b->payload)) {
            wrong_frame(b, msg, "dequeued message");
            queue_cycle_start(c);
            break;
        }
        c->step = STEP_ACK;
        queue_request(c, "ack", id);
        break;
    }
    case STEP_ACK:
        b->cycles++;
        record_cycle(b, now_ns() - c->cycle_start_ns);
        queue_cycle_start(c);
        break;
    }
    json_decref(content);
}

static void take_frames(conn *c)
{
    bench *b = c->b;

    while (c->fd >= 0 && pb_buf_used(&c->in) > 0) {
        const pb_buf *expected = c->role == ROLE_PUBLISHER ? &b->expected_published
                                 : c->role == ROLE_SUBSCRIBER && c->subscribed ? &b->expected_push
                                 : NULL;
        if (expected != NULL) {
            int known = take_expected(c, expected);
            if (known < 0)
                return;
            if (known > 0) {
                if (c->role == ROLE_SUBSCRIBER) {
                    b->delivered++;
                } else {
                    b->publish_replies++;
                    b->publish_ok++;
                }
                continue;
            }
        }
        pb_message msg;
        size_t consumed;
        pb_error err;
        pb_decode_status st = pb_frame_decode(&c->decoder, pb_buf_head(&c->in),
                                              pb_buf_used(&c->in), &msg, &consumed, NULL, &err);
        if (st == PB_DECODE_NEED_MORE)
            return;
        if (st == PB_DECODE_ERROR) {
            conn_lost(c, err.text);
            return;
        }
        switch (c->role) {
        case ROLE_SUBSCRIBER:
            subscriber_frame(c, &msg, pb_buf_head(&c->in), consumed);
            break;
        case ROLE_PUBLISHER:
            publisher_frame(c, &msg, pb_buf_head(&c->in), consumed);
            break;
        case ROLE_QUEUE_CLIENT:
            queue_frame(c, &msg);
            break;
        }
        pb_message_clear(&msg);
        pb_buf_consume(&c->in, consumed);
    }
}

/* ---- RESP: redis --------------------------------------------------------- */

static void resp_array(pb_buf *out, int n)
{
    char head[32];

    snprintf(head, sizeof head, "*%d\r\n", n);
    if (pb_buf_append_str(out, head) != 0)
        out_of_memory();
}

static void resp_bulk(pb_buf *out, const char *text)
{
    char head[32];

    snprintf(head, sizeof head, "$%zu\r\n", strlen(text));
    if (pb_buf_append_str(out, head) != 0 || pb_buf_append_str(out, text) != 0
        || pb_buf_append_str(out, "\r\n") != 0)
        out_of_memory();
}

/* A command, or a reply that is an array of bulk strings. */
static void resp_strings(pb_buf *out, int n, const char *const strings[])
{
    resp_array(out, n);
    for (int i = 0; i < n; i++)
        resp_bulk(out, strings[i]);
}

/* The number at data[0..len) up to "\r\n"; -1 when it is none. */
static long long resp_number(const unsigned char *data, size_t len)
{
    long long n = 0;
    size_t i = data[0] == '-' ? 1 : 0;

    if (i == len)
        return -1;
    for (; i < len; i++) {
        if (data[i] < '0' || data[i] > '9' || n > (LLONG_MAX - 9) / 10)
            return -1;
        n = n * 10 + (data[i] - '0');
    }
    return data[0] == '-' ? -n : n;
}

/* The bytes of the RESP value at the front of data[0..len): 0 while it is
 * not all there, -1 when it is malformed. */
static long long resp_length(const unsigned char *data, size_t len, int depth)
{
    const unsigned char *newline = len > 0 ? memchr(data, '\n', len) : NULL;

    if (newline == NULL)
        return 0;
    size_t line = (size_t)(newline - data) + 1;
    if (line < 3 || newline[-1] != '\r' || depth > 8)
        return -1;
    switch (data[0]) {
    case '+':
    case '-':
    case ':':
        return (long long)line;
    case '$': {
        long long n = resp_number(data + 1, line - 3);
        if (n < -1 || n > (long long)MAX_REPLY_BYTES)
            return -1;
        if (n < 0)
            return (long long)line;
        return len < line + (size_t)n + 2 ? 0 : (long long)line + n + 2;
    }
    case '*': {
        long long n = resp_number(data + 1, line - 3);
        size_t at = line;
        if (n < -1)
            return -1;
        for (long long i = 0; i < n; i++) {
            long long one = resp_length(data + at, len - at, depth + 1);
            if (one <= 0)
                return one;
            at += (size_t)one;
        }
        return (long long)at;
    }
    default:
        return -1;
    }
}

/* Every reply of redis but the expected ones is shown and counted. */
static void take_resp(conn *c)
{
    bench *b = c->b;

    while (c->fd >= 0 && pb_buf_used(&c->in) > 0) {
        const pb_buf *expected = c->role == ROLE_PUBLISHER ? &b->expected_published
                                 : c->subscribed ? &b->expected_push : &b->expected_subscribed;
        int known = take_expected(c, expected);
        if (known < 0)
            return;
        if (known > 0) {
            if (c->role == ROLE_PUBLISHER) {
                b->publish_replies++;
                b->publish_ok++;
            } else if (c->subscribed) {
                b->delivered++;
            } else {
                c->subscribed = 1;
                if (++b->subscribed == b->opt.subscribers)
                    start_publishing(b);
            }
            continue;
        }
        long long length = resp_length(pb_buf_head(&c->in), pb_buf_used(&c->in), 0);
        if (length == 0)
            return;
        if (length < 0) {
            conn_lost(c, "malformed RESP from redis");
            return;
        }
        b->errors++;
        b->publish_replies += c->role == ROLE_PUBLISHER;
        note(&b->said_wrong, "unexpected reply from redis: %.*s",
             length > 200 ? 200 : (int)length, (const char *)pb_buf_head(&c->in));
        pb_buf_consume(&c->in, (size_t)length);
    }
}

/* ---- the run ------------------------------------------------------------- */

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    conn *c = w->data;
    bench *b = c->b;
    unsigned char *into = pb_buf_extend(&c->in, READ_CHUNK);

    if (into == NULL)
        out_of_memory();
    ssize_t n = recv(c->fd, into, READ_CHUNK, 0);
    pb_buf_truncate(&c->in, c->in.len - READ_CHUNK + (n > 0 ? (size_t)n : 0));
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_lost(c, strerror(errno));
        return;
    }
    if (n == 0) {
        conn_lost(c, "closed by the server");
        return;
    }
    uint64_t before = b->delivered + b->publish_replies + b->subscribed + b->cycles + b->empty
                      + b->errors;
    if (b->opt.redis)
        take_resp(c);
    else
        take_frames(c);
    if (b->delivered + b->publish_replies + b->subscribed + b->cycles + b->empty + b->errors
        != before)
        b->last_progress_ns = now_ns();
    if (b->opt.mode == MODE_FANOUT)
        publish_more(b);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_flush(w->data);
}

/* Publishes while fewer than `window` messages are on their way: a
 * message is on its way from its publish until it has reached every
 * subscriber (counted over all of them), so that neither the server nor
 * this process piles up what the other cannot take. */
static void publish_more(bench *b)
{
    conn *p = b->publisher;
    uint64_t reached_all = b->delivered / b->opt.subscribers;
    int sent = 0;

    if (b->phase != PHASE_RUNNING || p->fd < 0)
        return;
    while (b->published - reached_all < b->opt.window) {
        if (pb_buf_append(&p->out, pb_buf_head(&b->publish_request),
                          pb_buf_used(&b->publish_request)) != 0)
            out_of_memory();
        b->published++;
        sent = 1;
    }
    if (sent && !ev_is_active(&p->wio))
        conn_flush(p);
}

static void start_publishing(bench *b)
{
    b->phase = PHASE_RUNNING;
    ev_now_update(b->loop);
    b->start_ns = now_ns();
    b->last_progress_ns = b->start_ns;
    ev_timer_start(b->loop, &b->duration_timer);
    publish_more(b);
}

static void queue_cycle_start(conn *c)
{
    if (c->b->phase != PHASE_RUNNING)
        return;
    c->step = STEP_ENQUEUE;
    c->cycle_start_ns = now_ns();
    conn_send(c, &c->enqueue_request);
}

static int drained(const bench *b)
{
    return b->publish_replies == b->published
           && b->delivered >= b->publish_ok * b->opt.subscribers;
}

static void on_drain_check(struct ev_loop *loop, ev_timer *w, int revents)
{
    bench *b = w->data;

    if (drained(b) || (double)(now_ns() - b->end_ns) / 1e9 > DRAIN_SECONDS)
        stop(b);
}

/* The measured window ends: a fan-out waits for the deliveries still on
 * their way, a queue run stops. */
static void on_duration(struct ev_loop *loop, ev_timer *w, int revents)
{
    bench *b = w->data;

    ev_timer_stop(loop, &b->duration_timer);
    b->phase = PHASE_DRAINING;
    b->end_ns = now_ns();
    b->window_published = b->published;
    b->window_delivered = b->delivered;
    if (b->opt.mode == MODE_QUEUE) {
        stop(b);
        return;
    }
    ev_timer_start(loop, &b->drain_timer);
}

static void on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
    bench *b = w->data;

    /* The drain has a deadline of its own, and counts what it misses. */
    if (b->phase == PHASE_DRAINING || now_ns() - b->last_progress_ns <= STALL_NS)
        return;
    if (b->phase == PHASE_SUBSCRIBING)
        note(&b->said_stall, "only %lu of %lu subscribers subscribed; stopping",
             b->subscribed, b->opt.subscribers);
    else
        note(&b->said_stall, "nothing delivered or answered for %.0f s; stopping",
             (double)STALL_NS / 1e9);
    b->errors++;
    b->end_ns = now_ns();
    b->window_published = b->published;
    b->window_delivered = b->delivered;
    stop(b);
}

/* An interrupt ends the run as its duration would; a second one, or one
 * before the run began, ends it at once. */
static void on_sigint(struct ev_loop *loop, ev_signal *w, int revents)
{
    bench *b = w->data;

    if (b->phase == PHASE_RUNNING)
        on_duration(loop, &b->duration_timer, 0);
    else
        stop(b);
}

/* ---- setup --------------------------------------------------------------- */

static void usage(FILE *to)
{
    fputs("Usage: " PROGRAM " [OPTIONS] fanout HOST PORT\n"
          "       " PROGRAM " [OPTIONS] --redis fanout HOST PORT\n"
          "       " PROGRAM " [OPTIONS] queue HOST PORT\n"
          "Load the pubsub or queue plugin of a running plugboard daemon (or, with\n"
          "--redis, a redis-server doing the same publish/subscribe) and report\n"
          "messages per second.\n"
          "\n"
          "fanout: SUBSCRIBERS connections subscribe to TOPIC; one more publishes\n"
          "SIZE-byte messages to it with at most WINDOW messages on their way (a\n"
          "message is on its way until every subscriber has it). Reports publishes/s\n"
          "and deliveries/s, then waits for the last deliveries and counts any lost.\n"
          "queue: CLIENTS connections each enqueue a SIZE-byte message, dequeue one\n"
          "and ack it, over and over. Reports cycles/s and their latency.\n"
          "\n"
          "  -s, --subscribers N    fanout: subscribing connections (default 100)\n"
          "  -P, --window N         fanout: messages on their way at most (default 64)\n"
          "  -t, --topic NAME       fanout: the topic (default bench)\n"
          "      --redis            fanout: speak RESP to a redis-server\n"
          "  -c, --clients N        queue: connections (default 10)\n"
          "      --shared           queue: one queue for all clients (default: one each)\n"
          "  -m, --size BYTES       message size (default 64)\n"
          "  -d, --duration SEC     how long to measure (default 5)\n"
          "      --json             print the report as one JSON object\n"
          "  -h, --help             show this help\n"
          "  -V, --version          show the version\n"
          "\n"
          "The server's CPU time is not measured here: tools/bench-broker.sh does.\n"
          "Exit status: 0 no errors, 1 errors, 2 usage error, 3 cannot connect.\n",
          to);
}

static void usage_error(const char *format, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *format, ...)
{
    va_list ap;

    fputs(PROGRAM ": ", stderr);
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fputs("\nTry '" PROGRAM " --help' for more information.\n", stderr);
    exit(EXIT_USAGE);
}

static unsigned long parse_count(const char *text, const char *what, unsigned long max)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < 1 || v > max)
        usage_error("%s must be a whole number from 1 to %lu, not '%s'", what, max, text);
    return v;
}

static void parse_options(options *o, int argc, char **argv)
{
    enum { OPT_REDIS = 256, OPT_SHARED, OPT_JSON };
    static const struct option longopts[] = {
        { "subscribers", required_argument, NULL, 's' },
        { "window", required_argument, NULL, 'P' },
        { "topic", required_argument, NULL, 't' },
        { "redis", no_argument, NULL, OPT_REDIS },
        { "clients", required_argument, NULL, 'c' },
        { "shared", no_argument, NULL, OPT_SHARED },
        { "size", required_argument, NULL, 'm' },
        { "duration", required_argument, NULL, 'd' },
        { "json", no_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 }
    };
    int opt, fanout_only = 0, queue_only = 0;
    char *end;

    o->subscribers = 100;
    o->window = 64;
    o->topic = "bench";
    o->clients = 10;
    o->size = 64;
    o->duration = 5.0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "s:P:t:c:m:d:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            o->subscribers = parse_count(optarg, "--subscribers", MAX_CONNECTIONS);
            fanout_only = 1;
            break;
        case 'P':
            o->window = parse_count(optarg, "--window", MAX_WINDOW);
            fanout_only = 1;
            break;
        case 't':
            if (optarg[0] == '\0' || strpbrk(optarg, "\"\\\r\n") != NULL)
                usage_error("--topic must be a plain, non-empty name");
            o->topic = optarg;
            fanout_only = 1;
            break;
        case OPT_REDIS:
            o->redis = 1;
            fanout_only = 1;
            break;
        case 'c':
            o->clients = parse_count(optarg, "--clients", MAX_CONNECTIONS);
            queue_only = 1;
            break;
        case OPT_SHARED:
            o->shared = 1;
            queue_only = 1;
            break;
        case 'm':
            o->size = parse_count(optarg, "--size", MAX_SIZE);
            break;
        case 'd':
            errno = 0;
            o->duration = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !(o->duration > 0)
                || o->duration > 1e6)
                usage_error("--duration must be a positive number of seconds, not '%s'", optarg);
            break;
        case OPT_JSON:
            o->json = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf(PROGRAM " %s\n", PACKAGE_VERSION);
            exit(0);
        default:
            usage_error("unknown option or missing argument: %s", argv[optind - 1]);
        }
    }
    if (argc - optind != 3)
        usage_error("give fanout or queue, then HOST PORT");
    if (strcmp(argv[optind], "fanout") == 0)
        o->mode = MODE_FANOUT;
    else if (strcmp(argv[optind], "queue") == 0)
        o->mode = MODE_QUEUE;
    else
        usage_error("unknown benchmark '%s' (fanout or queue)", argv[optind]);
    o->host = argv[optind + 1];
    o->port = argv[optind + 2];
    if (o->mode == MODE_QUEUE && fanout_only)
        usage_error("--subscribers, --window, --topic and --redis are for fanout");
    if (o->mode == MODE_FANOUT && queue_only)
        usage_error("--clients and --shared are for queue");
}

static int connect_to(const bench *b)
{
    int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;

    if (fd < 0 || connect(fd, (const struct sockaddr *)&b->addr, b->addrlen) != 0) {
        fprintf(stderr, PROGRAM ": cannot connect to %s: %s\n", b->addr_text, strerror(errno));
        exit(EXIT_CONNECT);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    return fd;
}

static void resolve_address(bench *b)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG };
    struct addrinfo *list;
    const options *o = &b->opt;

    snprintf(b->addr_text, sizeof b->addr_text,
             strchr(o->host, ':') != NULL ? "[%s]:%s" : "%s:%s", o->host, o->port);
    int rc = getaddrinfo(o->host, o->port, &hints, &list);
    if (rc != 0) {
        fprintf(stderr, PROGRAM ": cannot resolve %s: %s\n", b->addr_text, gai_strerror(rc));
        exit(EXIT_CONNECT);
    }
    memcpy(&b->addr, list->ai_addr, list->ai_addrlen);
    b->addrlen = list->ai_addrlen;
    freeaddrinfo(list);
}

/* Every connection needs a descriptor; raise the soft limit when allowed. */
static void ensure_descriptors(size_t connections)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)connections + 32;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        usage_error("%zu connections need %llu descriptors; the limit is %llu (ulimit -n)",
                    connections, (unsigned long long)need, (unsigned long long)rl.rlim_max);
    rl.rlim_cur = need;
    setrlimit(RLIMIT_NOFILE, &rl);
}

static void build_payload(bench *b)
{
    size_t n = b->opt.size, plen = strlen(PAYLOAD_PATTERN);

    b->payload = malloc(n + 1);
    if (b->payload == NULL)
        out_of_memory();
    for (size_t i = 0; i < n; i++)
        b->payload[i] = PAYLOAD_PATTERN[i % plen];
    b->payload[n] = '\0';
}

/* The requests, encoded once, and what RESP's answers will be. */
static void build_fanout_requests(bench *b)
{
    const char *topic = b->opt.topic;

    if (!b->opt.redis) {
        frame_request(&b->subscribe_request,
                      json_pack("{s:s, s:s}", "action", "subscribe", "topic", topic));
        frame_request(&b->publish_request, json_pack("{s:s, s:s, s:s}", "action", "publish",
                                                     "topic", topic, "message", b->payload));
        return;
    }
    const char *subscribe[] = { "SUBSCRIBE", topic };
    const char *publish[] = { "PUBLISH", topic, b->payload };
    const char *message[] = { "message", topic, b->payload };
    char receivers[32];

    resp_strings(&b->subscribe_request, 2, subscribe);
    resp_strings(&b->publish_request, 3, publish);
    resp_strings(&b->expected_push, 3, message);
    /* [subscribe, topic, 1]: 1 is the connection's count of subscriptions. */
    resp_array(&b->expected_subscribed, 3);
    resp_bulk(&b->expected_subscribed, "subscribe");
    resp_bulk(&b->expected_subscribed, topic);
    /* PUBLISH answers how many subscribers it reached. */
    snprintf(receivers, sizeof receivers, ":%lu\r\n", b->opt.subscribers);
    if (pb_buf_append_str(&b->expected_subscribed, ":1\r\n") != 0
        || pb_buf_append_str(&b->expected_published, receivers) != 0)
        out_of_memory();
}

static void setup_connections(bench *b)
{
    const options *o = &b->opt;

    b->nconns = o->mode == MODE_FANOUT ? o->subscribers + 1 : o->clients;
    ensure_descriptors(b->nconns);
    b->conns = calloc(b->nconns, sizeof *b->conns);
    if (b->conns == NULL)
        out_of_memory();
    for (size_t i = 0; i < b->nconns; i++) {
        conn *c = &b->conns[i];
        c->b = b;
        c->role = o->mode == MODE_QUEUE ? ROLE_QUEUE_CLIENT
                  : i == o->subscribers ? ROLE_PUBLISHER : ROLE_SUBSCRIBER;
        c->fd = connect_to(b);
        pb_frame_decoder_init(&c->decoder, MAX_REPLY_BYTES);
        ev_io_init(&c->rio, on_readable, c->fd, EV_READ);
        ev_io_init(&c->wio, on_writable, c->fd, EV_WRITE);
        c->rio.data = c->wio.data = c;
        ev_io_start(b->loop, &c->rio);
        if (c->role == ROLE_QUEUE_CLIENT) {
            snprintf(c->queue, sizeof c->queue, o->shared ? "bench" : "bench-%zu", i);
            frame_request(&c->enqueue_request, json_pack("{s:s, s:s, s:s}", "action", "enqueue",
                                                         "queue", c->queue, "message",
                                                         b->payload));
            frame_request(&c->dequeue_request,
                          json_pack("{s:s, s:s}", "action", "dequeue", "queue", c->queue));
        }
    }
    if (o->mode == MODE_FANOUT)
        b->publisher = &b->conns[o->subscribers];
}

static void teardown(bench *b)
{
    for (size_t i = 0; i < b->nconns; i++) {
        conn *c = &b->conns[i];
        conn_close(c);
        pb_buf_free(&c->in);
        pb_buf_free(&c->out);
        pb_buf_free(&c->enqueue_request);
        pb_buf_free(&c->dequeue_request);
        pb_frame_decoder_reset(&c->decoder);
    }
    free(b->conns);
    free(b->payload);
    free(b->cycle_ns);
    pb_buf_free(&b->subscribe_request);
    pb_buf_free(&b->publish_request);
    pb_buf_free(&b->expected_push);
    pb_buf_free(&b->expected_published);
    pb_buf_free(&b->expected_subscribed);
}

/* ---- report -------------------------------------------------------------- */

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_us(const bench *b, double percent)
{
    if (b->ncycle_ns == 0)
        return 0;
    size_t rank = (size_t)ceil(percent / 100.0 * (double)b->ncycle_ns);
    return (double)b->cycle_ns[rank == 0 ? 0 : rank - 1] / 1e3;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6
           + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void report(bench *b, double cpu)
{
    const options *o = &b->opt;
    double seconds = b->start_ns != 0 && b->end_ns > b->start_ns
                     ? (double)(b->end_ns - b->start_ns) / 1e9 : 0;
    double per = seconds > 0 ? 1 / seconds : 0;
    json_t *r;

    if (o->mode == MODE_FANOUT) {
        r = json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:I, s:f, s:I, s:f, s:I, s:I, s:I, s:f}",
                      "benchmark", "fanout", "server", b->server,
                      "subscribers", (json_int_t)o->subscribers, "size", (json_int_t)o->size,
                      "window", (json_int_t)o->window, "seconds", seconds,
                      "publishes", (json_int_t)b->window_published,
                      "publishes_per_s", (double)b->window_published * per,
                      "delivered", (json_int_t)b->window_delivered,
                      "delivered_per_s", (double)b->window_delivered * per,
                      "delivered_total", (json_int_t)b->delivered, "lost", (json_int_t)b->lost,
                      "errors", (json_int_t)b->errors, "bench_cpu_percent",
                      seconds > 0 ? cpu / seconds * 100 : 0);
        if (!o->json) {
            printf(PROGRAM ": fanout through %s at %s: %lu subscribers, %zu-byte messages, "
                   "window %lu\n", b->server, b->addr_text, o->subscribers, o->size, o->window);
            printf("  publishes     %llu in %.2f s, %.1f/s\n",
                   (unsigned long long)b->window_published, seconds,
                   (double)b->window_published * per);
            printf("  delivered     %llu, %.1f/s\n", (unsigned long long)b->window_delivered,
                   (double)b->window_delivered * per);
            printf("  afterwards    %llu delivered in all, %llu lost\n",
                   (unsigned long long)b->delivered, (unsigned long long)b->lost);
        }
    } else {
        qsort(b->cycle_ns, b->ncycle_ns, sizeof *b->cycle_ns, compare_u64);
        r = json_pack("{s:s, s:s, s:I, s:b, s:I, s:f, s:I, s:f, s:f, s:I, s:I, "
                      "s:{s:f, s:f, s:f}, s:f}",
                      "benchmark", "queue", "server", b->server,
                      "clients", (json_int_t)o->clients, "shared", o->shared,
                      "size", (json_int_t)o->size, "seconds", seconds,
                      "cycles", (json_int_t)b->cycles, "cycles_per_s", (double)b->cycles * per,
                      "operations_per_s", 3.0 * (double)b->cycles * per,
                      "empty", (json_int_t)b->empty, "errors", (json_int_t)b->errors,
                      "cycle_latency_us", "p50", percentile_us(b, 50), "p99", percentile_us(b, 99),
                      "max", percentile_us(b, 100),
                      "bench_cpu_percent", seconds > 0 ? cpu / seconds * 100 : 0);
        if (!o->json) {
            printf(PROGRAM ": queue at %s: %lu clients on %s, %zu-byte messages\n",
                   b->addr_text, o->clients, o->shared ? "one shared queue" : "a queue each",
                   o->size);
            printf("  cycles        %llu in %.2f s, %.1f/s (enqueue, dequeue, ack: %.1f "
                   "operations/s)\n", (unsigned long long)b->cycles, seconds,
                   (double)b->cycles * per, 3.0 * (double)b->cycles * per);
            printf("  cycle (us)    p50 %.1f  p99 %.1f  max %.1f\n", percentile_us(b, 50),
                   percentile_us(b, 99), percentile_us(b, 100));
            if (b->empty > 0)
                printf("  empty         %llu dequeues found nothing\n",
                       (unsigned long long)b->empty);
        }
    }
    if (r == NULL)
        out_of_memory();
    if (o->json) {
        pb_buf out = PB_BUF_INIT;
        if (pb_json_dump(&out, r) != 0 || pb_buf_append_byte(&out, '\n') != 0)
            out_of_memory();
        fwrite(pb_buf_head(&out), 1, pb_buf_used(&out), stdout);
        pb_buf_free(&out);
    } else {
        printf("  errors        %llu\n", (unsigned long long)b->errors);
        printf("  bench CPU     %.0f%% of one core%s\n", seconds > 0 ? cpu / seconds * 100 : 0,
               seconds > 0 && cpu / seconds >= 0.9 ? " (the bench may be the limit)" : "");
    }
    json_decref(r);
}

int main(int argc, char **argv)
{
    static bench b;

    parse_options(&b.opt, argc, argv);
    b.server = b.opt.redis ? "redis" : "plugboard";
    build_payload(&b);
    if (b.opt.mode == MODE_FANOUT)
        build_fanout_requests(&b);
    resolve_address(&b);
    b.loop = ev_default_loop(EVFLAG_AUTO);
    if (b.loop == NULL) {
        fputs(PROGRAM ": cannot initialize libev\n", stderr);
        return EXIT_ERRORS;
    }
    setup_connections(&b);

    ev_signal_init(&b.sigint, on_sigint, SIGINT);
    b.sigint.data = &b;
    ev_signal_start(b.loop, &b.sigint);
    ev_timer_init(&b.duration_timer, on_duration, b.opt.duration, 0.);
    b.duration_timer.data = &b;
    ev_timer_init(&b.drain_timer, on_drain_check, 0.01, 0.01);
    b.drain_timer.data = &b;
    ev_timer_init(&b.watchdog, on_watchdog, 1., 1.);
    b.watchdog.data = &b;
    ev_timer_start(b.loop, &b.watchdog);

    double cpu_start = cpu_seconds();
    b.last_progress_ns = now_ns();
    if (b.opt.mode == MODE_FANOUT) {
        b.phase = PHASE_SUBSCRIBING;
        for (unsigned long i = 0; i < b.opt.subscribers; i++)
            conn_send(&b.conns[i], &b.subscribe_request);
    } else {
        b.phase = PHASE_RUNNING;
        b.start_ns = now_ns();
        ev_timer_start(b.loop, &b.duration_timer);
        for (size_t i = 0; i < b.nconns; i++)
            queue_cycle_start(&b.conns[i]);
    }
    ev_run(b.loop, 0);
    if (b.end_ns == 0) {
        b.end_ns = now_ns();
        b.window_published = b.published;
        b.window_delivered = b.delivered;
    }
    if (b.opt.mode == MODE_FANOUT && b.publish_ok * b.opt.subscribers > b.delivered)
        b.lost = b.publish_ok * b.opt.subscribers - b.delivered;
    report(&b, cpu_seconds() - cpu_start);
    fflush(stdout);

    ev_timer_stop(b.loop, &b.duration_timer);
    ev_timer_stop(b.loop, &b.drain_timer);
    ev_timer_stop(b.loop, &b.watchdog);
    ev_signal_stop(b.loop, &b.sigint);
    teardown(&b);
    ev_loop_destroy(b.loop);
    return b.errors > 0 || b.lost > 0 ? EXIT_ERRORS : 0;
}

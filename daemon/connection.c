/*
 * connection.c - the connection state machine. The path of a message:
 * bytes in (on_readable) -> codec (decode_input) -> route and plugin
 * (handle_message) -> reply encoded into the output buffer -> bytes out
 * (flush). Replies are produced synchronously, so they leave in request
 * order however deep the peer pipelines.
 */
#include "connection.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "json_fast.h"
#include "line.h"
#include "log.h"
#include "plugin_host.h"

/* How long a closing connection keeps draining the peer's bytes after
 * sending its last reply, so that the close is a FIN the peer reads after
 * the reply, not a reset that may discard it. */
#define LINGER_SECONDS 2.0

struct pb_conn {
    ev_io io;
    pb_server *server;
    pb_listener *listener;
    int fd;
    pb_framing_kind framing;    /* the listener's at accept: a reload that
                                 * changes it must not break this stream */
    union {
        pb_frame_decoder frame;
        pb_line_decoder line;
    } decoder;
    pb_buf in;                  /* a partial message, or input held back */
    pb_buf out;                 /* replies not yet written */
    ev_tstamp last_active;      /* accept or last complete message */
    pb_conn *prev, *next;       /* server's list, least recently active first */
    ev_timer *linger;           /* set while lingering */
    unsigned read_closed : 1;   /* the peer half-closed */
    unsigned closing : 1;       /* close once the output is written */
    unsigned paused : 1;        /* input waits for the output to drain */
};

static void flush(pb_conn *c);

/* --- Connection objects ------------------------------------------------------ */

/* Closed connections are kept for the next accept, up to this many, so that
 * a client opening a connection per request costs no allocation. */
#define SPARE_CONNS 64

static pb_conn *spare[SPARE_CONNS];
static size_t n_spare;

static pb_conn *conn_new(void)
{
    if (PB_POOLS_ENABLED && n_spare > 0) {
        pb_conn *c = spare[--n_spare];
        memset(c, 0, sizeof *c);
        return c;
    }
    return calloc(1, sizeof(pb_conn));
}

static void conn_release(pb_conn *c)
{
    if (PB_POOLS_ENABLED && n_spare < SPARE_CONNS)
        spare[n_spare++] = c;
    else
        free(c);
}

void pb_conn_pool_drain(void)
{
    while (n_spare > 0)
        free(spare[--n_spare]);
}

/* --- Bookkeeping ----------------------------------------------------------- */

static void list_unlink(pb_conn *c)
{
    pb_server *s = c->server;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->oldest = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->newest = c->prev;
    c->prev = c->next = NULL;
}

static void list_append(pb_conn *c)
{
    pb_server *s = c->server;
    c->prev = s->newest;
    c->next = NULL;
    if (s->newest)
        s->newest->next = c;
    else
        s->oldest = c;
    s->newest = c;
}

static void touch(pb_conn *c)
{
    c->last_active = ev_now(c->server->loop);
    if (c->server->newest != c) {
        list_unlink(c);
        list_append(c);
    }
}

static void set_events(pb_conn *c, int events)
{
    if ((c->io.events & (EV_READ | EV_WRITE)) == events && ev_is_active(&c->io))
        return;
    ev_io_stop(c->server->loop, &c->io);
    if (events != 0) {
        ev_io_set(&c->io, c->fd, events);
        ev_io_start(c->server->loop, &c->io);
    }
}

static void update_events(pb_conn *c)
{
    int events = 0;
    if (!c->read_closed && !c->paused && (!c->closing || c->linger))
        events |= EV_READ;
    if (pb_buf_used(&c->out) > 0)
        events |= EV_WRITE;
    set_events(c, events);
}

static const pb_limits *limits(const pb_conn *c)
{
    return &c->server->cycle->config->limits;
}

void pb_conn_close(pb_conn *c)
{
    pb_server *s = c->server;
    ev_io_stop(s->loop, &c->io);
    if (c->linger) {
        ev_timer_stop(s->loop, c->linger);
        free(c->linger);
    }
    close(c->fd);
    list_unlink(c);
    s->n_connections--;
    pb_shared_release_connection(s->shared, s->slot);
    if (c->framing == PB_FRAME)
        pb_frame_decoder_reset(&c->decoder.frame);
    pb_buf_free(&c->in);
    pb_buf_free(&c->out);
    conn_release(c);
}

/* --- Replies ---------------------------------------------------------------- */

static pb_worker_stats *stats(const pb_conn *c)
{
    return &c->server->shared->slots[c->server->slot];
}

static void count_named(pb_named_counter *table, int index, int failed)
{
    if (index < 0)
        return;
    atomic_fetch_add_explicit(&table[index].messages, 1, memory_order_relaxed);
    if (failed)
        atomic_fetch_add_explicit(&table[index].errors, 1, memory_order_relaxed);
}

static void send_error(pb_conn *c, pb_error_code code, const char *text)
{
    atomic_fetch_add_explicit(&stats(c)->errors[code], 1, memory_order_relaxed);
    int rc = c->framing == PB_FRAME
                 ? pb_frame_encode_error(&c->out, code, text)
                 : pb_line_encode_error(&c->out, code, text);
    if (rc != 0 || pb_error_closes(code))
        c->closing = 1;
}

static const char *json_action(const json_t *content)
{
    return json_string_value(json_object_get(content, "action"));
}

static void handle_message(pb_conn *c, const pb_message *msg)
{
    json_t *content = NULL;
    if (strcmp(msg->content_type, "text/json") == 0) {
        json_error_t jerr;
        content = pb_json_fast_object((const char *)msg->content,
                                      msg->content_length);
        if (content == NULL)
            content = json_loadb((const char *)msg->content,
                                 msg->content_length,
                                 JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (content == NULL) {
            char text[300];
            snprintf(text, sizeof text,
                     "content is not valid JSON: %s (at byte %d)", jerr.text,
                     jerr.position);
            send_error(c, PB_ERR_BAD_JSON, text);
            return;
        }
    }

    const char *action = content ? json_action(content) : NULL;
    pb_instance *instance = c->listener->pinned_instance;
    const pb_route *route = NULL;
    if (instance == NULL) {
        route = pb_router_match(&c->server->cycle->router, msg->content_type,
                                action);
        instance = route ? route->instance : NULL;
    }
    if (instance == NULL) {
        char text[300];
        if (action)
            snprintf(text, sizeof text,
                     "no route for content-type \"%.100s\" and action \"%.100s\"",
                     msg->content_type, action);
        else
            snprintf(text, sizeof text, "no route for content-type \"%.100s\"",
                     msg->content_type);
        send_error(c, PB_ERR_NO_ROUTE, text);
        json_decref(content);
        return;
    }

    pb_request request = {
        .host = &pb_host_services,
        .instance = instance,
        .content_type = msg->content_type,
        .content_encoding = msg->content_encoding,
        .header = (const pb_json *)msg->header,
        .content = msg->content,
        .content_length = msg->content_length,
        .json = (const pb_json *)content,
        .listener = c->listener->name,
        .framing = c->framing == PB_FRAME ? PB_FRAMING_FRAME
                                                    : PB_FRAMING_LINE,
    };
    pb_reply reply;
    pb_reply_init(&reply, &c->out, request.framing);
    int failed = pb_instance_handle(instance, &request, &reply) != PB_OK;
    if (failed) {
        static pb_log_limit limit = PB_LOG_LIMIT(10.0, 5);
        pb_log_limited(&limit, PB_LOG_INFO, "plugin %s failed on a message from %s: %s",
                       instance->name, c->listener->address, reply.error);
        send_error(c, PB_ERR_PLUGIN_FAILED, reply.error);
    }
    count_named(stats(c)->instances, instance->stats_index, failed);
    if (route != NULL)
        count_named(stats(c)->routes, route->stats_index, failed);
    json_decref(content);
}

/* --- Input ------------------------------------------------------------------ */

static pb_decode_status decode(pb_conn *c, const unsigned char *data, size_t len,
                               pb_message *msg, size_t *consumed, pb_error *err)
{
    size_t max = (size_t)limits(c)->max_message_bytes;
    if (c->framing == PB_FRAME) {
        c->decoder.frame.max_message_bytes = max;
        return pb_frame_decode(&c->decoder.frame, data, len, msg, consumed,
                               NULL, err);
    }
    c->decoder.line.max_message_bytes = max;
    return pb_line_decode(&c->decoder.line, data, len, msg, consumed, err);
}

/*
 * Handles every complete message in data[0..len) and returns how many bytes
 * they took. Stops early on a fatal error (the rest is dropped), when the
 * connection is closing, or when queued output passed max_pending_output
 * (the rest waits in the input buffer until the peer reads).
 */
static size_t decode_input(pb_conn *c, const unsigned char *data, size_t len)
{
    size_t off = 0;
    size_t max_pending = c->server->stopping
                             ? SIZE_MAX
                             : (size_t)limits(c)->max_pending_output;
    while (!c->closing && off < len) {
        pb_message msg;
        pb_error err;
        size_t used = 0;
        pb_decode_status st = decode(c, data + off, len - off, &msg, &used, &err);
        if (st == PB_DECODE_NEED_MORE)
            break;
        if (st == PB_DECODE_ERROR) {
            pb_log_debug("%s from %s: %s", pb_error_token(err.code),
                         c->listener->address, err.text);
            send_error(c, err.code, err.text);
            return len;
        }
        touch(c);
        atomic_fetch_add_explicit(&stats(c)->messages, 1, memory_order_relaxed);
        handle_message(c, &msg);
        pb_message_clear(&msg);
        off += used;
        if (pb_buf_used(&c->out) >= max_pending) {
            c->paused = 1;
            break;
        }
    }
    return off;
}

/* Input is decoded where it lies: in the server's scratch buffer when the
 * connection held nothing, so only a partial message is ever copied. */
static void feed(pb_conn *c, const unsigned char *data, size_t len, int in_scratch)
{
    size_t used = decode_input(c, data, len);
    if (c->closing) {
        pb_buf_free(&c->in);
        return;
    }
    if (in_scratch) {
        if (used < len && pb_buf_append(&c->in, data + used, len - used) != 0) {
            send_error(c, PB_ERR_TOO_LARGE, "out of memory for this message");
            c->closing = 1;
        }
    } else {
        pb_buf_consume(&c->in, used);
    }
}

/* The input buffer is sized for the frame being received when its size is
 * known, so a large message is read in few syscalls and copied once. */
static size_t input_room(pb_conn *c)
{
    size_t want = PB_READ_CHUNK;
    if (c->framing == PB_FRAME && c->decoder.frame.header != NULL) {
        size_t total = 2 + c->decoder.frame.header_length +
                       c->decoder.frame.content_length;
        size_t have = pb_buf_used(&c->in);
        if (total > have && total - have > want)
            want = total - have;
    }
    return want;
}

/* Reads what the socket has (bounded, for fairness between connections)
 * and handles it. Returns -1 when the connection was closed. */
static int read_input(pb_conn *c)
{
    pb_server *s = c->server;
    for (int rounds = 0; rounds < 16 && !c->paused && !c->read_closed; rounds++) {
        int in_scratch = pb_buf_used(&c->in) == 0 || c->linger;
        unsigned char *dst = s->scratch;
        size_t room = sizeof s->scratch;
        if (!in_scratch) {
            room = input_room(c);
            if (pb_buf_reserve(&c->in, room) != 0) {
                send_error(c, PB_ERR_TOO_LARGE, "out of memory for this message");
                break;
            }
            dst = c->in.data + c->in.len;
        }
        ssize_t n = read(c->fd, dst, room);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            pb_log_debug("read from %s failed: %s", c->listener->address,
                         strerror(errno));
            pb_conn_close(c);
            return -1;
        }
        if (n == 0) {
            c->read_closed = 1;
            break;
        }
        atomic_fetch_add_explicit(&stats(c)->bytes_in, n, memory_order_relaxed);
        if (c->linger)
            continue;
        if (in_scratch) {
            feed(c, dst, (size_t)n, 1);
        } else {
            c->in.len += (size_t)n;
            feed(c, pb_buf_head(&c->in), pb_buf_used(&c->in), 0);
        }
        if (c->closing || (size_t)n < room)
            break;
    }
    if (c->linger && c->read_closed) {
        pb_conn_close(c);
        return -1;
    }
    return 0;
}

/* --- Output ----------------------------------------------------------------- */

static void on_linger_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    pb_conn_close(w->data);
}

/* The last reply is out: stop sending, then wait for the peer's FIN while
 * discarding what it still sends. */
static void start_linger(pb_conn *c)
{
    if (c->read_closed || shutdown(c->fd, SHUT_WR) != 0 ||
        (c->linger = malloc(sizeof *c->linger)) == NULL) {
        pb_conn_close(c);
        return;
    }
    ev_timer_init(c->linger, on_linger_timeout, LINGER_SECONDS, 0.0);
    c->linger->data = c;
    ev_timer_start(c->server->loop, c->linger);
    pb_buf_free(&c->in);
    update_events(c);
}

/* Output drained below the limit: handle the input held back meanwhile. */
static void resume(pb_conn *c)
{
    c->paused = 0;
    if (pb_buf_used(&c->in) > 0)
        feed(c, pb_buf_head(&c->in), pb_buf_used(&c->in), 0);
}

static void flush(pb_conn *c)
{
    for (;;) {
        while (pb_buf_used(&c->out) > 0) {
            ssize_t n = send(c->fd, pb_buf_head(&c->out), pb_buf_used(&c->out),
                             MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                pb_log_debug("write to %s failed: %s", c->listener->address,
                             strerror(errno));
                pb_conn_close(c);
                return;
            }
            atomic_fetch_add_explicit(&stats(c)->bytes_out, n, memory_order_relaxed);
            if ((size_t)n < pb_buf_used(&c->out))
                pb_buf_consume(&c->out, (size_t)n);
            else
                pb_buf_clear(&c->out);
        }
        if (pb_buf_used(&c->out) > 0 || !c->paused || c->closing)
            break;
        resume(c);
    }

    if (pb_buf_used(&c->out) == 0) {
        /* The output memory serves the replies to input still waiting;
         * without any, the connection is idle and holds no buffer. */
        if (pb_buf_used(&c->in) == 0)
            pb_buf_free(&c->out);
        if (c->closing && c->linger == NULL) {
            start_linger(c);
            return;
        }
        if (c->read_closed && !c->paused && c->linger == NULL) {
            pb_conn_close(c);
            return;
        }
    }
    update_events(c);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    pb_conn *c = (pb_conn *)w;
    if (revents & EV_WRITE) {
        flush(c);
        return; /* flush() may have closed c; a pending read fires again */
    }
    if ((revents & EV_READ) && read_input(c) == 0)
        flush(c);
}

/* --- Life cycle ------------------------------------------------------------- */

void pb_conn_open(pb_server *s, pb_listener *listener, int fd)
{
    pb_conn *c = conn_new();
    if (c == NULL) {
        pb_log_warning("out of memory for a connection on %s", listener->address);
        pb_shared_release_connection(s->shared, s->slot);
        close(fd);
        return;
    }
    c->server = s;
    c->listener = listener;
    c->fd = fd;
    c->framing = listener->framing;
    size_t max = (size_t)s->cycle->config->limits.max_message_bytes;
    if (c->framing == PB_FRAME)
        pb_frame_decoder_init(&c->decoder.frame, max);
    else
        pb_line_decoder_init(&c->decoder.line, max);
    ev_io_init(&c->io, on_io, fd, EV_READ);
    c->last_active = ev_now(s->loop);
    list_append(c);
    s->n_connections++;
    ev_io_start(s->loop, &c->io);
}

void pb_conn_refuse(pb_listener *listener, int fd, int code, const char *text)
{
    pb_buf out = PB_BUF_INIT;
    int rc = listener->framing == PB_FRAME
                 ? pb_frame_encode_error(&out, code, text)
                 : pb_line_encode_error(&out, code, text);
    if (rc == 0) {
        ssize_t ignored = send(fd, pb_buf_head(&out), pb_buf_used(&out),
                               MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)ignored;
    }
    pb_buf_free(&out);
    /* Drain what the peer already sent so that close() sends a FIN after
     * the error rather than a reset that could discard it. */
    shutdown(fd, SHUT_WR);
    unsigned char sink[4096];
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0)
        continue;
    close(fd);
}

static void shutdown_one(pb_conn *c)
{
    if (c->closing)
        return;
    /* Bytes the kernel already holds count as received: answer them, and
     * what waited for the output to drain, whatever the output limit. */
    c->paused = 0;
    if (!c->read_closed && read_input(c) != 0)
        return;
    if (c->paused)
        resume(c);
    if (!c->read_closed && !c->closing)
        send_error(c, PB_ERR_SHUTTING_DOWN, "the server is shutting down");
    c->closing = 1;
    flush(c);
}

void pb_conns_shutdown(pb_server *s)
{
    /* shutdown_one may close the connection it is given, never another. */
    for (pb_conn *c = s->oldest, *next; c != NULL; c = next) {
        next = c->next;
        shutdown_one(c);
    }
}

void pb_conn_expire_idle(pb_server *s)
{
    double timeout = s->cycle->config->limits.idle_timeout;
    if (timeout <= 0)
        return;
    ev_tstamp now = ev_now(s->loop);
    while (s->oldest && s->oldest->last_active + timeout <= now) {
        pb_conn *c = s->oldest;
        pb_log_debug("closing idle connection on %s", c->listener->address);
        pb_conn_close(c);
    }
}

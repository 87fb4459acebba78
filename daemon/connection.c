/*
 * connection.c - the connection state machine. The path of a message:
 * bytes in (read_input) -> the listener's codec (decode_input) -> route and
 * plugin (handle_message) -> reply encoded into the output buffer -> bytes
 * out (flush). A reply that comes later (deferred, or from a thread pool)
 * waits in the connection's queue with every reply behind it, so replies
 * leave in request order however deep the peer pipelines; pushes from
 * plugins holding the connection go out whole, between replies. On a TLS
 * listener the bytes pass through the connection's SSL object, after a
 * handshake that comes first.
 */
#include "connection.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "codec.h"
#include "json_fast.h"
#include "log.h"
#include "plugin_host.h"
#include "reply.h"
#include "tls.h"

/* How long a closing connection keeps draining the peer's bytes after
 * sending its last reply, so that the close is a FIN the peer reads after
 * the reply, not a reset that may discard it. */
#define LINGER_SECONDS 2.0

struct pb_conn {
    ev_io io;
    pb_server *server;
    pb_listener *listener;
    int fd;
    int listener_stats;         /* the listener's counters when it was accepted */
    const pb_codec *codec;      /* the listener's framing at accept: a reload
                                 * that changes it must not break this stream */
    pb_decoder decoder;
    pb_buf in;                  /* a partial message, or input held back */
    pb_buf out;                 /* replies not yet written */
    pb_buf pushed;              /* pushes made while one of its requests is
                                 * handled, sent after that request's reply */
    pb_reply *queue, *queue_tail;   /* replies in flight, in request order */
    size_t n_queued;
    pb_client *holds;           /* plugins holding it for pushes */
    size_t push_kept;           /* its idle output buffer's share of
                                 * PUSH_KEEP_TOTAL */
    ev_tstamp last_active;      /* accept or last complete message */
    pb_conn *prev, *next;       /* server's list, least recently active first */
    ev_timer *linger;           /* set while lingering */
    char peer[INET6_ADDRSTRLEN + 8];    /* "" until a request needs it */
    long peer_uid;
    SSL *ssl;                   /* NULL: plaintext */
    char *tls_subject;          /* the client certificate's, or NULL */
    unsigned long long number;  /* pb_request.connection */
    /* A connection waits for a handshake turn only before its first
     * request, and for the end of an iteration to write only after it
     * (write_later refuses one waiting for a turn): the two lists share
     * their links. */
    pb_conn *wait_prev, *wait_next;
    unsigned handshaking : 1;   /* TLS: no byte of the protocol yet */
    unsigned waiting_turn : 1;  /* its next handshake step waits for a turn */
    unsigned has_turn : 1;      /* granted one, for the event fed to it */
    unsigned write_pending : 1; /* its output waits for the iteration's end */
    unsigned read_wants_write : 1;  /* TLS: reading waits for the socket
                                     * to take bytes first */
    unsigned read_closed : 1;   /* the peer half-closed */
    unsigned closing : 1;       /* close once the output is written */
    unsigned paused : 1;        /* input waits for the output to drain */
};

/* A plugin's hold on a connection. */
struct pb_client {
    pb_conn *conn;              /* NULL once it closed */
    void (*on_close)(pb_client *client, void *arg);
    void *arg;
    pb_client *next;
    /* The configuration whose instance holds it: kept, retired or not,
     * so that a reload leaves the plugin's state for the connection. */
    pb_cycle *cycle;
};

static void flush(pb_conn *c);
static void unkeep(pb_conn *c);
static void forget_last_push(void);

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
    forget_last_push();
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
    if (pb_buf_used(&c->out) > 0 || c->read_wants_write)
        events |= EV_WRITE;
    set_events(c, events);
    /* Plaintext OpenSSL already decrypted is not on the socket: nothing
     * would wake the loop for it. */
    if ((events & EV_READ) && c->ssl != NULL && SSL_pending(c->ssl) > 0)
        ev_feed_event(c->server->loop, &c->io, EV_READ);
}

/* --- Handshake turns --------------------------------------------------------
 *
 * A TLS handshake step costs far more than answering a request: a flood of
 * new connections would fill every loop iteration and keep the established
 * connections waiting. An iteration advances at most HANDSHAKE_TURNS steps;
 * a connection past that waits, its watcher stopped, and is among the first
 * served in the next iteration.
 */
#define HANDSHAKE_TURNS 16

static struct {
    ev_prepare grant;
    unsigned int iteration;     /* the loop iteration `left` counts for */
    int left;
    pb_conn *first, *last;      /* waiting for a turn, oldest first */
} turns;

static int take_turn(pb_conn *c)
{
    if (c->has_turn) {
        c->has_turn = 0;
        return 1;
    }
    unsigned int now = ev_iteration(c->server->loop);
    if (turns.iteration != now) {
        turns.iteration = now;
        turns.left = HANDSHAKE_TURNS;
    }
    if (turns.left == 0)
        return 0;
    turns.left--;
    return 1;
}

static void wait_for_turn(pb_conn *c)
{
    struct ev_loop *loop = c->server->loop;
    ev_io_stop(loop, &c->io);
    c->waiting_turn = 1;
    c->wait_next = NULL;
    c->wait_prev = turns.last;
    if (turns.last != NULL)
        turns.last->wait_next = c;
    else
        turns.first = c;
    turns.last = c;
    if (!ev_is_active(&turns.grant))
        ev_prepare_start(loop, &turns.grant);
}

static void stop_waiting_turn(pb_conn *c)
{
    if (!c->waiting_turn)
        return;
    if (c->wait_prev != NULL)
        c->wait_prev->wait_next = c->wait_next;
    else
        turns.first = c->wait_next;
    if (c->wait_next != NULL)
        c->wait_next->wait_prev = c->wait_prev;
    else
        turns.last = c->wait_prev;
    c->waiting_turn = 0;
}

/* Before the loop polls: the waiting connections take the next
 * iteration's first turns (ev_iteration() counts polls). */
static void on_grant(struct ev_loop *loop, ev_prepare *w, int revents)
{
    turns.iteration = ev_iteration(loop) + 1;
    turns.left = HANDSHAKE_TURNS;
    while (turns.first != NULL && turns.left > 0) {
        pb_conn *c = turns.first;
        stop_waiting_turn(c);
        c->has_turn = 1;
        turns.left--;
        ev_feed_event(loop, &c->io, c->io.events);
    }
    if (turns.first == NULL)
        ev_prepare_stop(loop, w);
}

/* --- Writes at the end of an iteration --------------------------------------
 *
 * The replies to what one poll brought in, and the pushes made meanwhile to
 * other connections, are written once all of that input is handled, just
 * before the loop polls again, as Redis writes in its beforeSleep: a client
 * whose connections all get answers is woken once with most of them rather
 * than once for each, and a subscriber gets one send for a batch of
 * publishes from any number of publishers, with no poll for writability
 * unless its socket is full.
 */
static struct {
    ev_prepare flush;
    pb_conn *first, *last;      /* waiting to write, in the order they read */
} writes;

#define WRITE_NOW_BYTES 4096

static void write_later(pb_conn *c)
{
    if (c->write_pending || c->waiting_turn)
        return;
    c->write_pending = 1;
    c->wait_next = NULL;
    c->wait_prev = writes.last;
    if (writes.last != NULL)
        writes.last->wait_next = c;
    else
        writes.first = c;
    writes.last = c;
    if (!ev_is_active(&writes.flush))
        ev_prepare_start(c->server->loop, &writes.flush);
}

static void stop_waiting_write(pb_conn *c)
{
    if (!c->write_pending)
        return;
    if (c->wait_prev != NULL)
        c->wait_prev->wait_next = c->wait_next;
    else
        writes.first = c->wait_next;
    if (c->wait_next != NULL)
        c->wait_next->wait_prev = c->wait_prev;
    else
        writes.last = c->wait_prev;
    c->write_pending = 0;
}

static void on_flush(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    while (writes.first != NULL) {
        pb_conn *c = writes.first;
        stop_waiting_write(c);
        flush(c);
    }
    ev_prepare_stop(loop, w);
}

static const pb_limits *limits(const pb_conn *c)
{
    return &c->server->cycle->config->limits;
}

static void release_reply(pb_reply *r);
static void on_reply_finished(pb_reply *r);

/* Tells the plugins holding c that it closed; their holds stay valid until
 * they release them. Pushes waiting to be written and the output buffer
 * kept for them are forgotten. */
static void drop_holds(pb_conn *c)
{
    unkeep(c);
    pb_client *h = c->holds;
    c->holds = NULL;
    while (h != NULL) {
        pb_client *next = h->next;
        h->conn = NULL;
        h->next = NULL;
        if (h->on_close != NULL)
            h->on_close(h, h->arg);
        h = next;
    }
}

void pb_conn_close(pb_conn *c)
{
    pb_server *s = c->server;
    ev_io_stop(s->loop, &c->io);
    if (c->linger) {
        ev_timer_stop(s->loop, c->linger);
        free(c->linger);
    }
    stop_waiting_turn(c);
    stop_waiting_write(c);
    SSL_free(c->ssl);
    free(c->tls_subject);
    close(c->fd);
    list_unlink(c);
    s->n_connections--;
    pb_shared_release_connection(s->shared, s->slot);
    pb_stats_listener_close(s->shared, s->slot, c->listener_stats);
    c->codec->decoder_reset(&c->decoder);
    /* Replies still to come are dropped when they arrive. */
    while (c->queue != NULL) {
        pb_reply *r = c->queue;
        c->queue = r->next;
        if (r->state == PB_REPLY_READY)
            release_reply(r);
        else
            pb_reply_orphan(r);
    }
    c->queue_tail = NULL;
    c->n_queued = 0;
    drop_holds(c);
    pb_buf_free(&c->in);
    pb_buf_free(&c->out);
    pb_buf_free(&c->pushed);
    conn_release(c);
}

/* --- Replies ---------------------------------------------------------------- */

static pb_worker_stats *stats(const pb_conn *c)
{
    return &c->server->shared->slots[c->server->slot];
}

static void enqueue(pb_conn *c, pb_reply *r)
{
    r->next = NULL;
    if (c->queue_tail != NULL)
        c->queue_tail->next = r;
    else
        c->queue = r;
    c->queue_tail = r;
    c->n_queued++;
}

/* Where the next reply or error goes: straight into the output when
 * nothing is in flight ahead of it, else into a queued reply of its own.
 * NULL when out of memory. */
static pb_buf *reply_slot(pb_conn *c)
{
    if (c->queue == NULL)
        return &c->out;
    pb_reply *r = pb_reply_new(c, on_reply_finished, c->codec, NULL);
    if (r == NULL)
        return NULL;
    r->state = PB_REPLY_READY;
    r->written = &r->own;
    enqueue(c, r);
    return &r->own;
}

static void send_error(pb_conn *c, pb_error_code code, const char *text)
{
    pb_count(&stats(c)->errors[code], 1);
    pb_buf *out = reply_slot(c);
    if (out == NULL || c->codec->error(out, code, text) != 0 || pb_error_closes(code))
        c->closing = 1;
}

/* A plugin's answer (or failure) leaves: counted, and written after the
 * replies ahead of it. */
static void finish_reply(pb_conn *c, pb_reply *r)
{
    pb_reply_observe(r);
    if (r->failed) {
        static pb_log_limit limit = PB_LOG_LIMIT(10.0, 5);
        pb_log_limited(&limit, PB_LOG_INFO, "plugin %s failed on a message from %s: %s",
                       r->instance_name, c->listener->address, r->error);
        pb_count(&stats(c)->errors[PB_ERR_PLUGIN_FAILED], 1);
        if (c->codec->error(&c->out, PB_ERR_PLUGIN_FAILED, r->error) != 0)
            c->closing = 1;
    } else if (r->written == &r->own &&
               pb_buf_append(&c->out, pb_buf_head(&r->own), pb_buf_used(&r->own)) != 0) {
        c->closing = 1;
    }
}

static void release_reply(pb_reply *r)
{
    if (r->cycle != NULL)
        pb_cycle_drop(r->cycle);
    pb_reply_free(r);
}

/* Lets out the replies at the head of the queue that are complete. */
static void let_out(pb_conn *c)
{
    while (c->queue != NULL && c->queue->state == PB_REPLY_READY) {
        pb_reply *r = c->queue;
        c->queue = r->next;
        if (c->queue == NULL)
            c->queue_tail = NULL;
        c->n_queued--;
        finish_reply(c, r);
        release_reply(r);
    }
}

/* A reply that finished after its handle() returned is back on the loop. */
static void on_reply_finished(pb_reply *r)
{
    pb_conn *c = r->owner;
    if (c == NULL) {
        /* Its connection closed meanwhile: nothing to send. */
        release_reply(r);
        return;
    }
    let_out(c);
    write_later(c);
}


/* The request being handled on the loop thread, for client_hold. */
static const pb_request *current_request;
static pb_conn *current_conn;

static const char *peer_of(pb_conn *c)
{
    if (c->peer[0] != '\0')
        return c->peer;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    c->peer_uid = -1;
    snprintf(c->peer, sizeof c->peer, "unknown");
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) != 0)
        return c->peer;
    char host[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(c->peer, sizeof c->peer, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(c->peer, sizeof c->peer, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else if (ss.ss_family == AF_UNIX) {
        snprintf(c->peer, sizeof c->peer, "unix");
        struct ucred cred;
        socklen_t clen = sizeof cred;
        if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
            c->peer_uid = (long)cred.uid;
    }
    return c->peer;
}

/* A reply that finishes after handle_message() returns keeps the
 * configuration that routed it. */
static void hold_cycle(pb_conn *c, pb_reply *r)
{
    r->cycle = c->server->cycle;
    pb_cycle_hold(r->cycle);
}

static void handle_message(pb_conn *c, const pb_message *msg)
{
    pb_content content;
    pb_content_init(&content);
    const pb_json *json = NULL;
    if (strcmp(msg->content_type, "text/json") == 0) {
        json_error_t jerr;
        json = pb_content_parse(&content, (const char *)msg->content,
                                msg->content_length, &jerr);
        if (json == NULL) {
            char text[300];
            snprintf(text, sizeof text,
                     "content is not valid JSON: %s (at byte %d)", jerr.text,
                     jerr.position);
            send_error(c, PB_ERR_BAD_JSON, text);
            return;
        }
    }

    const char *action = json ? pb_content_string(json, "action") : NULL;
    pb_server *s = c->server;
    const pb_listener_view *view = &s->views[c->listener->index];
    pb_instance *instance = view->pinned;
    const pb_route *route = NULL;
    if (instance == NULL) {
        route = pb_router_match(&c->server->cycle->router, view->conf,
                                msg->content_type, action);
        instance = route ? route->instance : NULL;
    }
    if (instance == NULL) {
        char text[300];
        pb_router_miss(text, sizeof text, msg->content_type, action);
        send_error(c, PB_ERR_NO_ROUTE, text);
        pb_content_release(&content);
        return;
    }

    /* Written in place when it is the next to leave and answered on the
     * loop thread during handle(); queued in request order otherwise. */
    int in_place = c->queue == NULL && instance->pool == NULL;
    pb_reply *reply = pb_reply_new(c, on_reply_finished, c->codec,
                                   in_place ? &c->out : NULL);
    if (reply == NULL) {
        send_error(c, PB_ERR_PLUGIN_FAILED, "out of memory for the reply");
        pb_content_release(&content);
        return;
    }
    const char *peer = peer_of(c);
    reply->instance_stats = s->instance_stats[instance->index];
    reply->instance_name = instance->name;
    reply->route_stats = route ? s->route_stats[route - s->cycle->router.routes] : -1;
    pb_request request = {
        .size = sizeof(pb_request),
        .host = &pb_host_services,
        .instance = instance,
        .content_type = msg->content_type,
        .content_encoding = msg->content_encoding,
        .header = (const pb_json *)msg->header,
        .content = msg->content,
        .content_length = msg->content_length,
        .json = json,
        .listener = c->listener->name,
        .framing = c->codec->framing,
        .peer = peer,
        .peer_uid = c->peer_uid,
        .tls_subject = c->tls_subject,
        .connection = c->number,
    };
    if (!in_place)
        enqueue(c, reply);

    if (instance->pool != NULL) {
        hold_cycle(c, reply);
        if (pb_instance_submit(instance, &request, reply) != 0) {
            reply->failed = 1;
            snprintf(reply->error, sizeof reply->error,
                     "out of memory for the plugin's thread");
            reply->state = PB_REPLY_READY;
            let_out(c);
        }
        pb_content_release(&content);
        return;
    }

    current_request = &request;
    current_conn = c;
    int finished = pb_instance_handle(instance, &request, reply);
    current_request = NULL;
    current_conn = NULL;
    pb_content_release(&content);
    if (pb_buf_used(&c->pushed) > 0) {
        if (pb_buf_append(&c->out, pb_buf_head(&c->pushed), pb_buf_used(&c->pushed)) != 0)
            c->closing = 1;
        pb_buf_free(&c->pushed);
    }
    if (!finished) {
        if (in_place)
            enqueue(c, reply);
        hold_cycle(c, reply);
        return;
    }
    if (in_place) {
        finish_reply(c, reply);
        pb_reply_free(reply);
    } else {
        reply->state = PB_REPLY_READY;
        let_out(c);
    }
}

/* --- Transport: the socket, or TLS over it ----------------------------------- */

/* As read(2): bytes, 0 at the end of the stream, or -1 with errno, EAGAIN
 * when the socket must be readable first (or writable: read_wants_write). */
static ssize_t transport_read(pb_conn *c, void *buf, size_t len)
{
    if (c->ssl == NULL || c->linger)
        return read(c->fd, buf, len);
    size_t n;
    c->read_wants_write = 0;
    switch (pb_tls_read(c->ssl, buf, len, &n)) {
    case PB_TLS_OK:
        return (ssize_t)n;
    case PB_TLS_WANT_WRITE:
        c->read_wants_write = 1;
        errno = EAGAIN;
        return -1;
    case PB_TLS_WANT_READ:
        errno = EAGAIN;
        return -1;
    case PB_TLS_CLOSED:
        return 0;
    default:
        errno = EPROTO;
        return -1;
    }
}

/* As send(2). Renegotiation is off, so a TLS write that must first read
 * comes only from a broken peer, and fails. */
static ssize_t transport_write(pb_conn *c, const void *buf, size_t len)
{
    if (c->ssl == NULL)
        return send(c->fd, buf, len, MSG_NOSIGNAL);
    size_t n;
    switch (pb_tls_write(c->ssl, buf, len, &n)) {
    case PB_TLS_OK:
        return (ssize_t)n;
    case PB_TLS_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    default:
        errno = EPROTO;
        return -1;
    }
}

/* Why a read or write failed: OpenSSL's reason over TLS. */
static const char *transport_error(const pb_conn *c, char *text, size_t size)
{
    if (c->ssl != NULL && errno == EPROTO)
        return pb_tls_reason(text, size);
    return strerror(errno);
}

/* --- Input ------------------------------------------------------------------ */

/* Whether reading must wait: too much output queued for the peer, or too
 * many of its requests in progress. */
static int must_wait(const pb_conn *c, size_t max_pending)
{
    return pb_buf_used(&c->out) >= max_pending
        || c->n_queued >= (size_t)limits(c)->max_inflight;
}

/*
 * Handles every complete message in data[0..len) and returns how many bytes
 * they took. Stops early on a fatal error (the rest is dropped), when the
 * connection is closing, or when it must wait (the rest waits in the input
 * buffer until the peer reads or replies come back).
 */
static size_t decode_input(pb_conn *c, const unsigned char *data, size_t len)
{
    size_t off = 0;
    size_t max_pending = c->server->stopping
                             ? SIZE_MAX
                             : (size_t)limits(c)->max_pending_output;
    size_t max_message = (size_t)limits(c)->max_message_bytes;
    while (!c->closing && off < len) {
        pb_message msg;
        pb_error err;
        size_t used = 0;
        pb_decode_status st = c->codec->decode(&c->decoder, max_message,
                                               data + off, len - off, &msg,
                                               &used, &err);
        if (st == PB_DECODE_NEED_MORE)
            break;
        if (st == PB_DECODE_ERROR) {
            pb_log_debug("%s from %s: %s", pb_error_token(err.code),
                         c->listener->address, err.text);
            send_error(c, err.code, err.text);
            return len;
        }
        touch(c);
        pb_count(&stats(c)->messages, 1);
        handle_message(c, &msg);
        pb_message_clear(&msg);
        off += used;
        if (must_wait(c, max_pending)) {
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

/* The input buffer is sized for the message being received when its size
 * is known, so a large message is read in few syscalls and copied once. */
static size_t input_room(pb_conn *c)
{
    size_t want = PB_READ_CHUNK;
    size_t rest = c->codec->remaining(&c->decoder, pb_buf_used(&c->in));
    return rest > want ? rest : want;
}

/* Input OpenSSL already holds, left by a read that stopped for its round
 * limit or while input was paused, is read in the loop's next iteration:
 * the socket may have nothing left to poll for. */
static void read_again_if_pending(pb_conn *c)
{
    if (c->ssl != NULL && !c->handshaking && !c->linger && !c->paused &&
        !c->read_closed && !c->closing && pb_tls_pending(c->ssl))
        ev_feed_event(c->server->loop, &c->io, EV_READ);
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
        ssize_t n = transport_read(c, dst, room);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            char why[256];
            pb_log_debug("read from %s failed: %s", c->listener->address,
                         transport_error(c, why, sizeof why));
            pb_conn_close(c);
            return -1;
        }
        if (n == 0) {
            c->read_closed = 1;
            break;
        }
        pb_count(&stats(c)->bytes_in, n);
        if (c->linger)
            continue;
        if (in_scratch) {
            feed(c, dst, (size_t)n, 1);
        } else {
            c->in.len += (size_t)n;
            feed(c, pb_buf_head(&c->in), pb_buf_used(&c->in), 0);
        }
        /* A short read drained the socket. Over TLS, OpenSSL read what
         * the socket had: once it holds nothing more, the socket is
         * drained too, or the next poll says so. */
        if (c->closing || (c->ssl == NULL ? (size_t)n < room : !pb_tls_pending(c->ssl)))
            break;
    }
    if (c->linger && c->read_closed) {
        pb_conn_close(c);
        return -1;
    }
    read_again_if_pending(c);
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
    if (c->ssl != NULL)
        SSL_shutdown(c->ssl);   /* close_notify, if the socket takes it */
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
    read_again_if_pending(c);
}

/* An idle connection that plugins push to keeps its output buffer for
 * the next batch rather than allocate it again (and have the allocator
 * hand the pages back to the system and fault them in anew): a buffer of
 * at most PUSH_KEEP_BYTES, while the buffers kept so add up to at most
 * PUSH_KEEP_TOTAL in the worker. */
#define PUSH_KEEP_BYTES ((size_t)128 * 1024)
#define PUSH_KEEP_TOTAL ((size_t)32 * 1024 * 1024)

static size_t push_kept_total;

/* Gives back what c's idle buffer counted for. */
static void unkeep(pb_conn *c)
{
    push_kept_total -= c->push_kept;
    c->push_kept = 0;
}

static void flush(pb_conn *c)
{
    for (;;) {
        while (pb_buf_used(&c->out) > 0) {
            ssize_t n = transport_write(c, pb_buf_head(&c->out), pb_buf_used(&c->out));
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                char why[256];
                pb_log_debug("write to %s failed: %s", c->listener->address,
                             transport_error(c, why, sizeof why));
                pb_conn_close(c);
                return;
            }
            pb_count(&stats(c)->bytes_out, n);
            if ((size_t)n < pb_buf_used(&c->out))
                pb_buf_consume(&c->out, (size_t)n);
            else
                pb_buf_clear(&c->out);
        }
        if (pb_buf_used(&c->out) > 0 || !c->paused || c->closing ||
            c->n_queued >= (size_t)limits(c)->max_inflight)
            break;
        resume(c);
    }

    if (pb_buf_used(&c->out) == 0 && c->queue == NULL) {
        /* The output memory serves the replies to input still waiting;
         * without any, the connection is idle and holds no buffer, unless
         * plugins push to it (PUSH_KEEP_BYTES). */
        if (pb_buf_used(&c->in) == 0) {
            unkeep(c);
            if (c->holds != NULL && c->out.cap <= PUSH_KEEP_BYTES &&
                push_kept_total + c->out.cap <= PUSH_KEEP_TOTAL) {
                c->push_kept = c->out.cap;
                push_kept_total += c->push_kept;
            } else {
                pb_buf_free(&c->out);
            }
        }
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

/* A handshake that failed costs the daemon nothing more than the close:
 * a scanner, plaintext on a TLS port, a refused certificate, a peer that
 * stalled past idle_timeout. */
static void handshake_failed(pb_conn *c, const char *why)
{
    static pb_log_limit limit = PB_LOG_LIMIT(10.0, 5);
    pb_log_limited(&limit, PB_LOG_DEBUG, "TLS handshake with %s on %s failed: %s",
                   peer_of(c), c->listener->address, why);
    pb_count(&stats(c)->refused_tls, 1);
    pb_conn_close(c);
}

static void continue_handshake(pb_conn *c)
{
    switch (pb_tls_handshake(c->ssl)) {
    case PB_TLS_OK:
        c->handshaking = 0;
        c->tls_subject = pb_tls_subject(c->ssl);
        /* The first request may have come with the handshake's end. */
        if (read_input(c) == 0)
            flush(c);
        return;
    case PB_TLS_WANT_READ:
        set_events(c, EV_READ);
        return;
    case PB_TLS_WANT_WRITE:
        set_events(c, EV_WRITE);
        return;
    default: {
        char why[256];
        handshake_failed(c, pb_tls_reason(why, sizeof why));
    }
    }
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    pb_conn *c = (pb_conn *)w;
    if (c->handshaking) {
        if (take_turn(c))
            continue_handshake(c);
        else
            wait_for_turn(c);
        return;
    }
    if ((revents & EV_WRITE) && !c->read_wants_write) {
        flush(c);
        return; /* flush() may have closed c; a pending read fires again */
    }
    if (read_input(c) != 0)
        return;
    /* Output of a page or more is written while its bytes are still in the
     * cache: copying it later would cost more than the wakeup saved. */
    if (pb_buf_used(&c->out) >= WRITE_NOW_BYTES)
        flush(c);
    else
        write_later(c);
}

/* --- Pushes ----------------------------------------------------------------- */

static pb_client *hold(const pb_request *request,
                       void (*on_close)(pb_client *, void *), void *arg)
{
    pb_conn *c = request == current_request ? current_conn : NULL;
    if (c == NULL)
        return NULL;
    pb_client *h = malloc(sizeof *h);
    if (h == NULL)
        return NULL;
    h->conn = c;
    h->on_close = on_close;
    h->arg = arg;
    h->next = c->holds;
    h->cycle = c->server->cycle;
    pb_cycle_hold(h->cycle);
    c->holds = h;
    return h;
}

static void release(pb_client *h)
{
    if (h == NULL)
        return;
    if (h->conn != NULL) {
        pb_client **p = &h->conn->holds;
        while (*p != h)
            p = &(*p)->next;
        *p = h->next;
    }
    pb_cycle_drop(h->cycle);
    free(h);
}

/* The last push encoded, kept whole: a plugin that pushes one content to
 * many connections (a publish to its subscribers) has its frame encoded
 * once, and every further connection of the same framing is sent a copy
 * of these bytes. The key is the content itself, compared byte for byte,
 * never its address. Pushes are made on the loop thread only. */
#define PUSH_CACHE_BYTES ((size_t)256 * 1024)

static struct {
    const pb_codec *codec;      /* NULL: nothing kept */
    char content_type[64];
    char content_encoding[32];
    size_t head;                /* the frame's bytes before the content */
    size_t length;              /* the content's */
    pb_buf frame;
} last_push;

static void forget_last_push(void)
{
    /* Straight back to the system: the buffers' pool may be drained
     * already. */
    last_push.codec = NULL;
    free(last_push.frame.data);
    last_push.frame = (pb_buf)PB_BUF_INIT;
}

static int same_string(const char *kept, size_t room, const char *s)
{
    size_t n = strlen(s);
    return n < room && memcmp(kept, s, n + 1) == 0;
}

/* The push's frame for c's framing, from last_push or encoded into it;
 * NULL when it is not kept (too large, or out of memory). */
static const pb_buf *push_frame(const pb_conn *c, const char *content_type,
                                const char *content_encoding,
                                const void *content, size_t length)
{
    if (length > PUSH_CACHE_BYTES)
        return NULL;
    if (last_push.codec == c->codec && last_push.length == length &&
        same_string(last_push.content_type, sizeof last_push.content_type,
                    content_type) &&
        same_string(last_push.content_encoding,
                    sizeof last_push.content_encoding, content_encoding) &&
        memcmp(pb_buf_head(&last_push.frame) + last_push.head, content,
               length) == 0)
        return &last_push.frame;
    size_t type_length = strlen(content_type);
    size_t encoding_length = strlen(content_encoding);
    last_push.codec = NULL;
    if (type_length >= sizeof last_push.content_type ||
        encoding_length >= sizeof last_push.content_encoding)
        return NULL;
    pb_buf *frame = &last_push.frame;
    pb_buf_clear(frame);
    if (c->codec->reply_head(frame, content_type, content_encoding, length, 1) != 0)
        return NULL;
    size_t head = pb_buf_used(frame);
    if (pb_buf_append(frame, content, length) != 0 || c->codec->reply_tail(frame) != 0)
        return NULL;
    memcpy(last_push.content_type, content_type, type_length + 1);
    memcpy(last_push.content_encoding, content_encoding, encoding_length + 1);
    last_push.head = head;
    last_push.length = length;
    last_push.codec = c->codec;
    return frame;
}

static int push(pb_client *h, const char *content_type,
                const char *content_encoding, const void *content,
                size_t length, const pb_json *json)
{
    pb_conn *c = h->conn;
    if (c == NULL || c->closing || !pb_on_loop_thread())
        return PB_ERROR;
    if (pb_buf_used(&c->out) + pb_buf_used(&c->pushed) >
        (size_t)limits(c)->max_pending_output)
        return PB_FULL;
    /* A reply being written straight into the output may still be undone
     * (its plugin fails): a push made meanwhile waits behind it. */
    pb_buf *out = c == current_conn ? &c->pushed : &c->out;
    size_t keep = pb_buf_used(out);
    const pb_buf *frame = NULL;
    int rc;
    if (json != NULL) {
        rc = pb_reply_encode_json(out, c->codec, json, 1);
    } else if ((frame = push_frame(c, content_type, content_encoding, content,
                                   length)) != NULL) {
        rc = pb_buf_append(out, pb_buf_head(frame), pb_buf_used(frame));
    } else {
        rc = c->codec->reply_head(out, content_type, content_encoding, length, 1);
        if (rc == 0 && pb_buf_append(out, content, length) != 0)
            rc = -1;
        if (rc == 0)
            rc = c->codec->reply_tail(out);
    }
    if (rc != 0) {
        pb_buf_truncate(out, out->start + keep);
        return PB_ERROR;
    }
    if (c == current_conn)
        update_events(c);
    else
        write_later(c);
    return PB_OK;
}

static void close_held(pb_client *h)
{
    pb_conn *c = h != NULL ? h->conn : NULL;
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    /* Closed from the loop, not from inside the plugin's call. */
    ev_feed_event(c->server->loop, &c->io, EV_WRITE);
}

static void close_slow(pb_client *h, const char *reason)
{
    pb_conn *c = h != NULL ? h->conn : NULL;
    if (c == NULL || c->closing || !pb_on_loop_thread())
        return;
    pb_buf *out = c == current_conn ? &c->pushed : &c->out;
    pb_count(&stats(c)->errors[PB_ERR_SLOW_CONSUMER], 1);
    c->codec->error(out, PB_ERR_SLOW_CONSUMER, reason);
    close_held(h);
}

static const pb_push_ops push_ops = { hold, release, push, close_held,
                                      close_slow };

void pb_conns_init(struct ev_loop *loop)
{
    pb_replies_init(loop);
    pb_plugin_host_set_pushes(&push_ops);
    ev_prepare_init(&turns.grant, on_grant);
    ev_prepare_init(&writes.flush, on_flush);
}

/* --- Life cycle ------------------------------------------------------------- */

/* Numbers unique among the daemon's open connections: this worker's pid
 * above a count of its connections. A pid is reused only once the worker
 * that had it has exited, with its connections. */
unsigned long long pb_conn_next_number(void)
{
    static unsigned long long count, base;
    if (base == 0)
        base = (unsigned long long)getpid() << 40;
    return base | (++count & ((1ull << 40) - 1));
}

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
    c->codec = pb_codec_for(listener->framing);
    SSL_CTX *tls = s->views[listener->index].tls;
    if (tls != NULL) {
        if ((c->ssl = pb_tls_new(tls, fd)) == NULL) {
            pb_log_warning("out of memory for a TLS connection on %s", listener->address);
            pb_shared_release_connection(s->shared, s->slot);
            close(fd);
            conn_release(c);
            return;
        }
        c->handshaking = 1;
    }
    c->codec->decoder_init(&c->decoder,
                           (size_t)s->cycle->config->limits.max_message_bytes);
    c->peer_uid = -1;
    c->number = pb_conn_next_number();
    ev_io_init(&c->io, on_io, fd, EV_READ);
    c->last_active = ev_now(s->loop);
    list_append(c);
    s->n_connections++;
    c->listener_stats = listener->stats;
    pb_stats_listener_open(s->shared, s->slot, c->listener_stats);
    ev_io_start(s->loop, &c->io);
}

void pb_conn_refuse(pb_listener *listener, int fd, int code, const char *text)
{
    const pb_server *s = listener->server;
    /* A TLS peer could read the error only after a handshake, which is
     * what a busy daemon should not spend on it. */
    if (s->views[listener->index].tls != NULL) {
        close(fd);
        return;
    }
    pb_buf out = PB_BUF_INIT;
    if (pb_codec_for(listener->framing)->error(&out, code, text) == 0) {
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
    if (c->handshaking) {
        pb_conn_close(c);
        return;
    }
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
        /* Waiting for its own replies, or held by a plugin that pushes to
         * it, a connection is not idle. */
        if (c->queue != NULL || c->holds != NULL) {
            touch(c);
            if (s->oldest == c)
                break;
            continue;
        }
        if (c->handshaking) {
            handshake_failed(c, "no handshake within idle_timeout");
            continue;
        }
        pb_log_debug("closing idle connection on %s", c->listener->address);
        pb_conn_close(c);
    }
}

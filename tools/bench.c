/*
 * bench.c - plugboard-bench: loads a running daemon from one libev thread
 * over many non-blocking connections, checks every reply, and reports
 * throughput, latency percentiles and its own CPU cost per request.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buffer.h"
#include "frame.h"
#include "json_dump.h"
#include "line.h"
#include "tls_client.h"

#define EXIT_ERRORS 1
#define EXIT_USAGE 2
#define EXIT_CONNECT 3

#define READ_CHUNK (64 * 1024)
/* Replies are only ever as large as the daemon's own limit allows; this is
 * a guard against a peer announcing gigabytes, not a protocol limit. */
#define MAX_REPLY_BYTES (64u * 1024 * 1024)
/* The pre-encoded request stream repeats the request this many bytes' worth
 * at most, so a deep pipeline of large requests does not need P copies. */
#define REQUEST_STREAM_BYTES (1024 * 1024)
#define PROBE_TIMEOUT_MS 10000
#define RECONNECT_DELAY 0.01
/* A request unanswered this long is lost, and a run in which nothing at all
 * is answered or connected for this long is over: without these a daemon
 * that drops a request would silently idle a connection, and one that died
 * would keep a run with -n going forever. */
#define REPLY_TIMEOUT_NS (5 * 1000000000ull)
#define MAX_CONNECTIONS 1000000
#define MAX_PIPELINE 65536
#define MAX_RATE 1e6
/* --rate starts connections from a timer this often at most; the number
 * due is worked out from the clock, so a coarser tick costs no accuracy
 * over a second, only smoothness within it. */
#define PACE_TICK 0.001

#define SEARCH_REQUEST "{\"action\": \"search\", \"value\": \"morpheus\"}"
#define SEARCH_REPLY "{\"result\": \"Follow the white rabbit. \xf0\x9f\x90\xb0\"}"
#define BINARY_PATTERN "binary\xf0\x9f\x98\x83"
#define FIRST10_PREFIX "First 10 bytes of request: "
#define ECHO_PATTERN "abcdefghijklmnopqrstuvwxyz0123456789"

/* ---- latency histogram ---------------------------------------------------
 * Log-linear buckets in the manner of HdrHistogram: values below 128 ns
 * exactly, above that 64 buckets per power of two, so every value is
 * recorded within 1/64 (1.6 %) in fixed memory with no allocation. */

#define HIST_SUB_BITS 7
#define HIST_HALF (1u << (HIST_SUB_BITS - 1))
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 2) * HIST_HALF)

typedef struct histogram {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max;
} histogram;

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_HALF)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - (HIST_SUB_BITS - 1);
    return 2 * HIST_HALF + (shift - 1) * HIST_HALF
           + (unsigned)((v >> shift) - HIST_HALF);
}

/* The largest value that falls into bucket i. */
static uint64_t hist_high(unsigned i)
{
    if (i < 2 * HIST_HALF)
        return i;
    unsigned k = i - 2 * HIST_HALF;
    unsigned shift = k / HIST_HALF + 1;
    uint64_t m = HIST_HALF + k % HIST_HALF;
    return ((m + 1) << shift) - 1;
}

static void hist_record(histogram *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

static uint64_t hist_percentile(const histogram *h, double percent)
{
    if (h->total == 0)
        return 0;
    uint64_t target = (uint64_t)ceil(percent / 100.0 * (double)h->total);
    if (target == 0)
        target = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= target)
            return hist_high(i) < h->max ? hist_high(i) : h->max;
    }
    return h->max;
}

/* ---- options ------------------------------------------------------------- */

typedef enum kind { KIND_SEARCH, KIND_BINARY, KIND_ECHO, KIND_JSON, KIND_FILE } kind;

static const char *const kind_names[] = { "search", "binary", "echo", "json", "file" };

typedef struct options {
    const char *host;
    const char *port;
    const char *unix_path;
    unsigned long connections;
    double duration;
    uint64_t requests;          /* 0: run for duration */
    unsigned long pipeline;
    kind kind;
    size_t size;
    const char *content;
    const char *content_file;
    const char *type;
    int new_conn;
    double rate;                /* new connections per second; 0: no pacing */
    int line;
    int json;
    int quiet;
    int tls;
    const char *ca;             /* NULL: the system's trusted certificates */
    const char *cert;
    const char *key;
    const char *servername;     /* NULL: HOST */
    int insecure;
    int no_resume;
} options;

/* ---- what is sent and what must come back -------------------------------- */

typedef struct expectation {
    int known;                  /* where the kind fixes no reply: 0 until the
                                 * first good one */
    pb_buf wire;                /* the exact reply bytes, for the fast path */
    char *content_type;         /* frame only */
    char *content_encoding;
    unsigned char *content;
    size_t content_length;
} expectation;

/* ---- connections and the run -------------------------------------------- */

struct bench;

typedef struct conn {
    struct bench *b;
    ev_io rio;
    ev_io wio;
    ev_timer retry;
    int fd;                     /* -1 when closed */
    int connecting;
    SSL *ssl;                   /* NULL without --tls */
    int handshaking;
    int tls_read_wants_write;   /* SSL_read must write before it can go on */
    uint64_t connect_ns;        /* when a TLS connection's connect began */
    unsigned inflight;          /* sent (or queued) and not yet answered */
    uint64_t *sent_at;          /* ring of pipeline send times, oldest first */
    unsigned ring_head;
    size_t out_pending;         /* request bytes still to write */
    size_t out_offset;          /* position of the next byte within a request */
    pb_buf carry;               /* a partial reply kept between reads */
    size_t wanted;              /* total bytes the partial reply needs, or 0 */
    pb_frame_decoder frame_decoder;
    pb_line_decoder line_decoder;
} conn;

typedef struct bench {
    options opt;
    struct ev_loop *loop;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char addr_text[300];
    int tcp;

    unsigned char *stream;      /* copies of the encoded request, back to back */
    size_t content_bytes;       /* the request's content */
    size_t request_bytes;       /* one request on the wire */
    size_t stream_bytes;
    expectation expect;

    conn *conns;
    unsigned char *read_chunk;
    int running;

    SSL_CTX *tls;               /* one per run; NULL without --tls */
    const char *tls_name;       /* what the certificate must carry */
    int tls_sni;                /* tls_name is a host name, sent as SNI */
    SSL_SESSION *session;       /* the newest the daemon issued, to resume */
    char tls_error[256];        /* the reason for the last EPROTO */
    const char *tls_version;    /* of the first handshake, for the report */
    const char *tls_cipher;
    uint64_t handshakes;
    uint64_t resumed;
    histogram handshake_time;   /* from connect() to the handshake's end */

    unsigned long *idle;        /* with --rate: closed connections, a stack */
    unsigned long idle_count;
    ev_timer pace;
    uint64_t opened;            /* connections started */

    uint64_t budget;            /* requests still to send (with -n) */
    uint64_t resolved;          /* answered, wrong or lost (with -n) */
    uint64_t replies;           /* right or wrong */
    uint64_t ok;
    uint64_t errors;
    uint64_t connect_errors;
    uint64_t bytes_out;
    uint64_t bytes_in;
    uint64_t last_progress_ns;  /* last reply or successful connect */
    histogram latency;

    int progress;
    ev_timer progress_timer;
    ev_timer duration_timer;
    ev_timer watchdog;
    ev_signal sigint;
    uint64_t start_ns;
    uint64_t last_ok;
    int said_wrong;
    int said_lost;
    int said_connect;
    int said_stall;
    int said_behind;
} bench;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Prints a diagnostic once per kind of trouble, clearing the progress line
 * so the two do not run into each other. */
static void note(bench *b, int *said, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void note(bench *b, int *said, const char *format, ...)
{
    va_list ap;

    if (*said)
        return;
    *said = 1;
    fputs(b->progress ? "\r\033[Kplugboard-bench: " : "plugboard-bench: ", stderr);
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int has_work(const bench *b)
{
    return b->running && (b->opt.requests == 0 || b->budget > 0);
}

static void stop(bench *b)
{
    if (!b->running)
        return;
    b->running = 0;
    ev_break(b->loop, EVBREAK_ALL);
}

/* With -n the run ends once every request has an outcome. */
static void resolve(bench *b, uint64_t n)
{
    b->resolved += n;
    if (b->opt.requests != 0 && b->resolved >= b->opt.requests)
        stop(b);
}

/* ---- TLS ----------------------------------------------------------------- */

static void on_readable(struct ev_loop *loop, ev_io *w, int revents);
static void on_writable(struct ev_loop *loop, ev_io *w, int revents);
static void out_of_memory(void) __attribute__((noreturn));

/* Why a handshake failed, in one line. */
static void handshake_error(const bench *b, SSL *ssl, int error, char *text, size_t size)
{
    long verified = SSL_get_verify_result(ssl);

    if (verified != X509_V_OK && !b->opt.insecure) {
        int mismatch = verified == X509_V_ERR_HOSTNAME_MISMATCH
                       || verified == X509_V_ERR_IP_ADDRESS_MISMATCH;
        snprintf(text, size, "certificate verification failed: %s%s%s",
                 X509_verify_cert_error_string(verified), mismatch ? " for " : "",
                 mismatch ? b->tls_name : "");
        ERR_clear_error();
    } else if (error == SSL_ERROR_SSL) {
        snprintf(text, size, "TLS handshake failed: %s", pb_tls_client_reason());
    } else if (error == SSL_ERROR_SYSCALL && errno != 0) {
        snprintf(text, size, "TLS handshake: %s", strerror(errno));
    } else {
        snprintf(text, size, "connection closed during the TLS handshake");
    }
}

static SSL *tls_new(bench *b, int fd)
{
    SSL *ssl = SSL_new(b->tls);

    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1
        || (b->tls_sni && SSL_set_tlsext_host_name(ssl, b->tls_name) != 1))
        out_of_memory();
    if (b->session != NULL && !b->opt.no_resume)
        SSL_set_session(ssl, b->session);
    return ssl;
}

/* Maps a failed SSL_read or SSL_write onto the answers of recv() and
 * send(): -1 with EAGAIN to wait for the socket, 0 for the daemon's close,
 * -1 with errno for a broken connection (EPROTO: the reason is in
 * b->tls_error). */
static ssize_t tls_failure(conn *c, int error)
{
    ssize_t rc = pb_tls_client_io_failure(error);
    if (rc < 0 && errno == EPROTO)
        snprintf(c->b->tls_error, sizeof c->b->tls_error, "TLS: %s", pb_tls_client_reason());
    return rc;
}

/* SSL_read in place of recv(). OpenSSL reads ahead, so records may wait
 * in it with the socket drained: they are taken while there is room, and
 * what is left when the room is full is fed back as a read event, since
 * the socket will not signal it. */
static ssize_t tls_recv(conn *c, unsigned char *into, size_t room)
{
    size_t got = 0, n;

    do {
        ERR_clear_error();
        if (SSL_read_ex(c->ssl, into + got, room - got, &n) != 1) {
            int error = SSL_get_error(c->ssl, 0);
            if (error == SSL_ERROR_WANT_WRITE) {
                /* Answering the daemon (a key update) found the socket full:
                 * reading goes on once it can take bytes. */
                c->tls_read_wants_write = 1;
                ev_io_stop(c->b->loop, &c->rio);
                ev_io_start(c->b->loop, &c->wio);
            }
            if (got == 0)
                return tls_failure(c, error);
            /* The bytes in hand first; the failure shows again next time. */
            if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE)
                ev_feed_event(c->b->loop, &c->rio, EV_READ);
            return (ssize_t)got;
        }
        got += n;
    } while (got < room && SSL_has_pending(c->ssl));
    if (got == room && SSL_has_pending(c->ssl))
        ev_feed_event(c->b->loop, &c->rio, EV_READ);
    return (ssize_t)got;
}

/* SSL_write in place of send(), writing all of len or nothing yet: a write
 * that has to wait is retried with the same bytes at the same address
 * (the pre-encoded stream), and perhaps more of them. */
static ssize_t tls_send(conn *c, const unsigned char *data, size_t len)
{
    size_t n;

    ERR_clear_error();
    if (SSL_write_ex(c->ssl, data, len, &n) == 1)
        return (ssize_t)n;
    int error = SSL_get_error(c->ssl, 0);
    if (error == SSL_ERROR_WANT_READ) {
        /* Renegotiation is refused, so no write ever waits for a read;
         * one that did would find no event to wake it. */
        snprintf(c->b->tls_error, sizeof c->b->tls_error, "TLS: a write waits for a read");
        errno = EPROTO;
        return -1;
    }
    ssize_t r = tls_failure(c, error);
    if (r == 0) {
        errno = EPIPE;
        r = -1;
    }
    return r;
}

static const char *io_error(const conn *c, int error)
{
    return c->ssl != NULL && error == EPROTO ? c->b->tls_error : strerror(error);
}

/* Keeps the newest session the daemon offers (TLS 1.3 offers them after
 * the handshake, with the first reply), for the next connection. */
static int keep_session(SSL *ssl, SSL_SESSION *session)
{
    bench *b = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));

    SSL_SESSION_free(b->session);
    b->session = session;
    return 1;                   /* the reference is ours now */
}

/* ---- connections --------------------------------------------------------- */

static void conn_close(conn *c)
{
    ev_io_stop(c->b->loop, &c->rio);
    ev_io_stop(c->b->loop, &c->wio);
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        c->handshaking = 0;
        c->tls_read_wants_write = 0;
        ev_set_cb(&c->rio, on_readable);
        ev_set_cb(&c->wio, on_writable);
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->connecting = 0;
    c->inflight = 0;
    c->ring_head = 0;
    c->out_pending = 0;
    c->out_offset = 0;
    c->wanted = 0;
    pb_buf_clear(&c->carry);
    pb_frame_decoder_reset(&c->frame_decoder);
    pb_line_decoder_init(&c->line_decoder, MAX_REPLY_BYTES);
}

/* Closes a connection in good order: with TLS, close_notify first, which
 * also keeps its session resumable (OpenSSL forgets the session of a
 * connection dropped without it). */
static void conn_finish(conn *c)
{
    if (c->ssl != NULL && !c->handshaking) {
        SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
    conn_close(c);
}

/* With --rate, a closed connection waits to be started by the pace. */
static void idle_push(conn *c)
{
    bench *b = c->b;
    b->idle[b->idle_count++] = (unsigned long)(c - b->conns);
}

static void schedule_reconnect(conn *c, double delay)
{
    if (!has_work(c->b))
        return;
    if (c->b->opt.rate > 0) {
        idle_push(c);
        return;
    }
    ev_timer_set(&c->retry, delay, 0.);
    ev_timer_start(c->b->loop, &c->retry);
}

/* The connection broke: every request in flight on it is lost. */
static void conn_lost(conn *c, const char *why)
{
    bench *b = c->b;
    unsigned lost = c->inflight;

    if (lost > 0) {
        note(b, &b->said_lost, "connection lost with %u request%s in flight: %s",
             lost, lost == 1 ? "" : "s", why);
        b->errors += lost;
    }
    conn_close(c);
    resolve(b, lost);
    schedule_reconnect(c, 0.);
}

static void connect_failed(conn *c, const char *why)
{
    bench *b = c->b;

    note(b, &b->said_connect, "cannot connect to %s: %s", b->addr_text, why);
    conn_close(c);
    b->connect_errors++;
    b->errors++;
    /* The request this connection would have carried is counted as failed,
     * so that a run with -n ends even when the daemon has gone away. */
    if (b->opt.requests != 0 && b->budget > 0) {
        b->budget--;
        resolve(b, 1);
    }
    schedule_reconnect(c, RECONNECT_DELAY);
}

/* Queues up to n more requests, all stamped with the same send time. */
static void conn_enqueue(conn *c, unsigned n)
{
    bench *b = c->b;

    if (b->opt.requests != 0 && n > b->budget)
        n = (unsigned)b->budget;
    if (n == 0)
        return;
    if (b->opt.requests != 0)
        b->budget -= n;

    uint64_t t = now_ns();
    unsigned depth = (unsigned)b->opt.pipeline;
    unsigned slot = (c->ring_head + c->inflight) % depth;
    for (unsigned i = 0; i < n; i++) {
        c->sent_at[slot] = t;
        slot = slot + 1 == depth ? 0 : slot + 1;
    }
    c->inflight += n;
    c->out_pending += n * b->request_bytes;
}

/* Writes as much of the queued requests as the socket takes, in as few
 * send() calls as the pre-encoded stream allows. */
static void conn_flush(conn *c)
{
    bench *b = c->b;

    while (c->out_pending > 0) {
        size_t chunk = b->stream_bytes - c->out_offset;
        if (chunk > c->out_pending)
            chunk = c->out_pending;
        ssize_t n = c->ssl != NULL ? tls_send(c, b->stream + c->out_offset, chunk)
                                   : send(c->fd, b->stream + c->out_offset, chunk, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_lost(c, io_error(c, errno));
            return;
        }
        b->bytes_out += (uint64_t)n;
        c->out_pending -= (size_t)n;
        c->out_offset = (c->out_offset + (size_t)n) % b->request_bytes;
        if ((size_t)n < chunk)
            break;
    }
    if (c->out_pending > 0)
        ev_io_start(b->loop, &c->wio);
    else
        ev_io_stop(b->loop, &c->wio);
}

/* The connection can carry requests: the first ones go out. */
static void conn_ready(conn *c)
{
    bench *b = c->b;

    b->last_progress_ns = now_ns();
    ev_io_start(b->loop, &c->rio);
    conn_enqueue(c, (unsigned)b->opt.pipeline);
    conn_flush(c);
}

/* Takes the handshake one step further; it waits on whichever way the
 * socket must turn ready, never on both. */
static void tls_step(conn *c)
{
    bench *b = c->b;

    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        c->handshaking = 0;
        ev_io_stop(b->loop, &c->wio);
        ev_set_cb(&c->rio, on_readable);
        ev_set_cb(&c->wio, on_writable);
        b->handshakes++;
        b->resumed += SSL_session_reused(c->ssl) == 1;
        hist_record(&b->handshake_time, now_ns() - c->connect_ns);
        if (b->tls_version == NULL) {
            b->tls_version = SSL_get_version(c->ssl);
            b->tls_cipher = SSL_get_cipher_name(c->ssl);
        }
        /* Reading ahead may have taken more than the handshake. */
        if (SSL_has_pending(c->ssl))
            ev_feed_event(b->loop, &c->rio, EV_READ);
        conn_ready(c);
        return;
    }
    int error = SSL_get_error(c->ssl, r);
    if (error == SSL_ERROR_WANT_READ) {
        ev_io_stop(b->loop, &c->wio);
        ev_io_start(b->loop, &c->rio);
    } else if (error == SSL_ERROR_WANT_WRITE) {
        ev_io_stop(b->loop, &c->rio);
        ev_io_start(b->loop, &c->wio);
    } else {
        char why[300];
        handshake_error(b, c->ssl, error, why, sizeof why);
        connect_failed(c, why);
    }
}

static void on_handshake(struct ev_loop *loop, ev_io *w, int revents)
{
    tls_step(w->data);
}

static void conn_connected(conn *c)
{
    bench *b = c->b;

    c->connecting = 0;
    ev_io_set(&c->rio, c->fd, EV_READ);
    if (b->tls == NULL) {
        conn_ready(c);
        return;
    }
    c->ssl = tls_new(b, c->fd);
    c->handshaking = 1;
    ev_set_cb(&c->rio, on_handshake);
    ev_set_cb(&c->wio, on_handshake);
    tls_step(c);
}

static void conn_start(conn *c)
{
    bench *b = c->b;
    int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    b->opened++;
    if (fd < 0) {
        connect_failed(c, strerror(errno));
        return;
    }
    c->fd = fd;
    if (b->tls != NULL)
        c->connect_ns = now_ns();
    if (b->tcp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    ev_io_set(&c->wio, fd, EV_WRITE);
    if (connect(fd, (const struct sockaddr *)&b->addr, b->addrlen) == 0) {
        conn_connected(c);
        return;
    }
    if (errno != EINPROGRESS) {
        connect_failed(c, strerror(errno));
        return;
    }
    c->connecting = 1;
    ev_io_start(b->loop, &c->wio);
}

/* With --rate: starts as many connections as are due by now, from those
 * closed. When none is closed the pace falls behind, and catches up as
 * they close. */
static void on_pace(struct ev_loop *loop, ev_timer *w, int revents)
{
    bench *b = w->data;
    uint64_t due = (uint64_t)((double)(now_ns() - b->start_ns) / 1e9 * b->opt.rate) + 1;

    while (b->opened < due && b->idle_count > 0 && has_work(b))
        conn_start(&b->conns[b->idle[--b->idle_count]]);
    /* A tenth of a second behind is no passing jitter. */
    if (b->opened + 1 + (uint64_t)(b->opt.rate / 10) < due && b->running)
        note(b, &b->said_behind, "all %lu connections busy, the pace of %g new connections "
             "per second falls behind (raise --connections)", b->opt.connections, b->opt.rate);
}

/* ---- judging replies ----------------------------------------------------- */

typedef enum verdict { REPLY_OK, REPLY_WRONG, REPLY_PARTIAL, REPLY_BROKEN } verdict;

static int same_bytes(const unsigned char *a, size_t alen,
                      const unsigned char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static int is_error_frame(const pb_message *msg)
{
    if (strcmp(msg->content_type, "text/json") != 0)
        return 0;
    json_t *value = json_loadb((const char *)msg->content, msg->content_length, 0, NULL);
    int error = json_is_object(value) && json_object_get(value, "error") != NULL
                && json_object_get(value, "code") != NULL;
    json_decref(value);
    return error;
}

/* Makes the first good reply the one every later reply must equal. */
static int learn(expectation *e, const unsigned char *wire, size_t wire_length,
                 const pb_message *msg, int frame)
{
    if (pb_buf_append(&e->wire, wire, wire_length) != 0)
        return -1;
    e->content = malloc(msg->content_length ? msg->content_length : 1);
    if (e->content == NULL)
        return -1;
    memcpy(e->content, msg->content, msg->content_length);
    e->content_length = msg->content_length;
    if (frame) {
        e->content_type = strdup(msg->content_type);
        e->content_encoding = strdup(msg->content_encoding);
        if (e->content_type == NULL || e->content_encoding == NULL)
            return -1;
    }
    e->known = 1;
    return 0;
}

static verdict judge(bench *b, const unsigned char *wire, size_t wire_length,
                     const pb_message *msg, int frame)
{
    expectation *e = &b->expect;

    if (e->known) {
        if (same_bytes(msg->content, msg->content_length, e->content, e->content_length)
            && (!frame || (strcmp(msg->content_type, e->content_type) == 0
                           && strcmp(msg->content_encoding, e->content_encoding) == 0)))
            return REPLY_OK;
    } else {
        int error = frame ? is_error_frame(msg)
                          : msg->content_length >= 4 && memcmp(msg->content, "ERR ", 4) == 0;
        if (!error) {
            if (learn(e, wire, wire_length, msg, frame) != 0) {
                fputs("plugboard-bench: out of memory\n", stderr);
                exit(EXIT_ERRORS);
            }
            return REPLY_OK;
        }
    }
    note(b, &b->said_wrong, "wrong reply (%s%s%s, %zu bytes): %.*s",
         frame ? msg->content_type : "line", frame ? ", " : "",
         frame ? msg->content_encoding : "", msg->content_length,
         msg->content_length > 200 ? 200 : (int)msg->content_length,
         (const char *)msg->content);
    return REPLY_WRONG;
}

/* Looks at the reply at the front of data[0..len). A reply that is byte for
 * byte the expected one is recognized with one memcmp; anything else goes
 * through the codec and is compared by content. */
static verdict next_reply(conn *c, const unsigned char *data, size_t len,
                          size_t *consumed)
{
    bench *b = c->b;
    const expectation *e = &b->expect;
    int frame = !b->opt.line;
    int fresh = frame ? c->frame_decoder.header == NULL : c->line_decoder.scanned == 0;
    pb_message msg;
    pb_error err;
    pb_decode_status status;

    if (e->known && fresh) {
        size_t expected = pb_buf_used(&e->wire);
        size_t n = len < expected ? len : expected;
        if (memcmp(data, pb_buf_head(&e->wire), n) == 0) {
            if (n == expected) {
                *consumed = expected;
                return REPLY_OK;
            }
            c->wanted = expected;
            return REPLY_PARTIAL;
        }
    }

    if (frame)
        status = pb_frame_decode(&c->frame_decoder, data, len, &msg, consumed,
                                 &c->wanted, &err);
    else
        status = pb_line_decode(&c->line_decoder, data, len, &msg, consumed, &err);
    if (status == PB_DECODE_NEED_MORE)
        return REPLY_PARTIAL;
    if (status == PB_DECODE_ERROR) {
        note(b, &b->said_wrong, "unreadable reply: %s", err.text);
        return REPLY_BROKEN;
    }
    verdict v = judge(b, data, *consumed, &msg, frame);
    pb_message_clear(&msg);
    return v;
}

/* Takes every whole reply off data[0..len); returns the bytes used, or -1
 * when the connection was closed. *answered counts the replies. */
static ssize_t take_replies(conn *c, const unsigned char *data, size_t len,
                            unsigned *answered)
{
    bench *b = c->b;
    size_t used = 0;
    uint64_t t = now_ns();
    unsigned depth = (unsigned)b->opt.pipeline;

    *answered = 0;
    c->wanted = 0;
    while (used < len) {
        size_t consumed = 0;
        if (c->inflight == 0) {
            b->errors++;
            note(b, &b->said_wrong, "reply without a request");
            conn_lost(c, "unexpected bytes");
            return -1;
        }
        verdict v = next_reply(c, data + used, len - used, &consumed);
        if (v == REPLY_PARTIAL)
            break;
        if (v == REPLY_BROKEN) {
            conn_lost(c, "unreadable reply");
            return -1;
        }
        if (v == REPLY_OK) {
            b->ok++;
            hist_record(&b->latency, t - c->sent_at[c->ring_head]);
        } else {
            b->errors++;
        }
        c->ring_head = c->ring_head + 1 == depth ? 0 : c->ring_head + 1;
        c->inflight--;
        (*answered)++;
        used += consumed;
        resolve(b, 1);
    }
    if (*answered > 0) {
        b->replies += *answered;
        b->last_progress_ns = t;
    }
    return (ssize_t)used;
}

/* ---- I/O callbacks ------------------------------------------------------- */

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    conn *c = w->data;
    bench *b = c->b;
    unsigned char *into;
    size_t room;
    int direct = pb_buf_used(&c->carry) == 0;

    /* The common case, whole replies, is read into one shared buffer; only
     * a reply cut by the read boundary is copied to the connection. */
    if (direct) {
        into = b->read_chunk;
        room = READ_CHUNK;
    } else {
        size_t want = READ_CHUNK;
        if (c->wanted > pb_buf_used(&c->carry)
            && c->wanted - pb_buf_used(&c->carry) > want)
            want = c->wanted - pb_buf_used(&c->carry);
        if (pb_buf_reserve(&c->carry, want) != 0) {
            conn_lost(c, "out of memory");
            return;
        }
        into = c->carry.data + c->carry.len;
        room = c->carry.cap - c->carry.len;
    }

    ssize_t n = c->ssl != NULL ? tls_recv(c, into, room) : recv(c->fd, into, room, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_lost(c, io_error(c, errno));
        return;
    }
    if (n == 0) {
        conn_lost(c, "closed by the daemon");
        return;
    }
    b->bytes_in += (uint64_t)n;

    const unsigned char *data;
    size_t len;
    if (direct) {
        data = into;
        len = (size_t)n;
    } else {
        c->carry.len += (size_t)n;
        data = pb_buf_head(&c->carry);
        len = pb_buf_used(&c->carry);
    }

    unsigned answered;
    ssize_t used = take_replies(c, data, len, &answered);
    if (used < 0)
        return;
    if (direct) {
        if ((size_t)used < len && pb_buf_append(&c->carry, data + used, len - (size_t)used) != 0) {
            conn_lost(c, "out of memory");
            return;
        }
    } else {
        c->carry.start += (size_t)used;
        if (c->carry.start == c->carry.len)
            pb_buf_clear(&c->carry);
    }

    if (b->opt.new_conn) {
        if (c->inflight == 0) {
            conn_finish(c);
            if (b->opt.rate > 0)
                idle_push(c);
            else if (has_work(b))
                conn_start(c);
        }
        return;
    }
    if (answered > 0 && b->running) {
        conn_enqueue(c, answered);
        if (!ev_is_active(&c->wio))
            conn_flush(c);
    }
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    conn *c = w->data;

    if (c->connecting) {
        int error = 0;
        socklen_t len = sizeof error;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0)
            error = errno;
        if (error != 0) {
            connect_failed(c, strerror(error));
            return;
        }
        ev_io_stop(loop, w);
        conn_connected(c);
        return;
    }
    if (c->tls_read_wants_write) {
        c->tls_read_wants_write = 0;
        ev_io_start(loop, &c->rio);
        ev_feed_event(loop, &c->rio, EV_READ);
    }
    conn_flush(c);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    conn *c = w->data;

    if (has_work(c->b) && c->fd < 0)
        conn_start(c);
}

static void print_progress(bench *b)
{
    double elapsed = (double)(now_ns() - b->start_ns) / 1e9;
    fprintf(stderr, "\r\033[K%6.1f s  %12llu requests  %8llu errors  %10llu req/s",
            elapsed, (unsigned long long)b->ok, (unsigned long long)b->errors,
            (unsigned long long)(b->ok - b->last_ok));
    fflush(stderr);
    b->last_ok = b->ok;
}

static void on_progress(struct ev_loop *loop, ev_timer *w, int revents)
{
    print_progress(w->data);
}

static int overdue(const conn *c, uint64_t now)
{
    return c->inflight > 0 && now - c->sent_at[c->ring_head] > REPLY_TIMEOUT_NS;
}

/* A TLS connection still connecting or in its handshake after as long as a
 * reply may take; it would hold its place for ever. */
static int stuck(const conn *c, uint64_t now)
{
    return c->b->tls != NULL && (c->connecting || c->handshaking)
           && now - c->connect_ns > REPLY_TIMEOUT_NS;
}

static void on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
    bench *b = w->data;
    uint64_t now = now_ns();

    for (unsigned long i = 0; i < b->opt.connections && b->running; i++) {
        if (overdue(&b->conns[i], now))
            conn_lost(&b->conns[i], "no reply in time");
        else if (stuck(&b->conns[i], now))
            connect_failed(&b->conns[i], "no TLS handshake in time");
    }
    if (b->running && now - b->last_progress_ns > REPLY_TIMEOUT_NS) {
        note(b, &b->said_stall, "nothing answered or connected for %.0f s; stopping",
             (double)REPLY_TIMEOUT_NS / 1e9);
        stop(b);
    }
}

/* Requests still unanswered when the run ends are not failures unless they
 * have been waiting longer than a reply may take, or nothing was ever
 * answered (a daemon that accepts and never replies must not pass). */
static void count_overdue(bench *b)
{
    uint64_t now = now_ns();

    for (unsigned long i = 0; i < b->opt.connections; i++) {
        conn *c = &b->conns[i];
        if (overdue(c, now) || b->replies == 0)
            b->errors += c->inflight;
    }
}

static void on_duration(struct ev_loop *loop, ev_timer *w, int revents)
{
    stop(w->data);
}

static void on_sigint(struct ev_loop *loop, ev_signal *w, int revents)
{
    stop(w->data);
}

/* ---- setup --------------------------------------------------------------- */

static void usage(FILE *to)
{
    fputs("Usage: plugboard-bench [OPTIONS] HOST PORT\n"
          "       plugboard-bench [OPTIONS] -u PATH\n"
          "Load a running plugboard daemon and report requests/s, MB/s, errors,\n"
          "latency percentiles and the bench's own CPU time per request.\n"
          "\n"
          "  -u, --unix PATH        connect to a Unix-domain socket\n"
          "  -c, --connections N    concurrent connections (default 50)\n"
          "  -d, --duration SEC     how long to run (default 10)\n"
          "  -n, --requests N       stop after N requests in total instead\n"
          "  -P, --pipeline N       requests in flight per connection (default 1)\n"
          "  -k, --kind KIND        search (default), binary, echo, json or file\n"
          "  -s, --size BYTES       content size for binary and echo (default 64; k, M)\n"
          "      --content TEXT     JSON content for kind json\n"
          "      --content-file PATH  content for kind file\n"
          "      --type TYPE        content-type for kind file\n"
          "                         (default application/octet-stream)\n"
          "      --new-conn         open a new connection for every request\n"
          "      --rate N           open N new connections per second, each for one\n"
          "                         request, at most --connections at once (implies\n"
          "                         --new-conn)\n"
          "  -l, --line             line framing (kinds search and echo)\n"
          "      --json             print the report as one JSON object\n"
          "      --tls              speak TLS (1.2 or later) to the daemon\n"
          "      --ca FILE          trust the CA certificates in FILE (PEM) instead of the\n"
          "                         system's when verifying the daemon's certificate\n"
          "      --cert FILE        present the client certificate in FILE (PEM)\n"
          "      --key FILE         its private key (PEM; default: the --cert file)\n"
          "      --servername NAME  the name the daemon's certificate must carry, also sent\n"
          "                         as SNI (default HOST; with -u, give it or --insecure)\n"
          "      --insecure         do not verify the daemon's certificate\n"
          "      --no-resume        a full handshake for every connection: do not resume\n"
          "                         the daemon's last TLS session\n"
          "  -q, --quiet            no live progress line\n"
          "  -h, --help             show this help\n"
          "  -V, --version          show the version\n"
          "\n"
          "Every reply is checked; a wrong reply counts as an error, and so does a\n"
          "request unanswered after 5 s. MB are 10^6 bytes. --ca, --cert, --key,\n"
          "--servername, --insecure and --no-resume each imply --tls.\n"
          "Exit status: 0 no errors, 1 errors, 2 usage error, 3 cannot connect.\n",
          to);
}

static void usage_error(const char *format, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *format, ...)
{
    va_list ap;

    fputs("plugboard-bench: ", stderr);
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fputs("\nTry 'plugboard-bench --help' for more information.\n", stderr);
    exit(EXIT_USAGE);
}

static uint64_t parse_count(const char *text, const char *what, uint64_t min, uint64_t max)
{
    char *end;

    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max)
        usage_error("%s must be a whole number from %llu to %llu, not '%s'", what,
                    (unsigned long long)min, (unsigned long long)max, text);
    return v;
}

static size_t parse_size(const char *text)
{
    char *end;

    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    unsigned long long unit = 1;
    if (*end == 'k' || *end == 'K')
        unit = 1024;
    else if (*end == 'm' || *end == 'M')
        unit = 1024 * 1024;
    if (unit != 1)
        end++;
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-'
        || v > MAX_REPLY_BYTES / unit)
        usage_error("--size must be a byte count such as 64, 4k or 1M (at most 64M), not '%s'",
                    text);
    return (size_t)(v * unit);
}

static void parse_options(options *o, int argc, char **argv)
{
    enum { OPT_CONTENT = 256, OPT_CONTENT_FILE, OPT_TYPE, OPT_NEW_CONN, OPT_RATE, OPT_JSON,
           OPT_TLS, OPT_CA, OPT_CERT, OPT_KEY, OPT_SERVERNAME, OPT_INSECURE, OPT_NO_RESUME };
    static const struct option longopts[] = {
        { "unix", required_argument, NULL, 'u' },
        { "connections", required_argument, NULL, 'c' },
        { "duration", required_argument, NULL, 'd' },
        { "requests", required_argument, NULL, 'n' },
        { "pipeline", required_argument, NULL, 'P' },
        { "kind", required_argument, NULL, 'k' },
        { "size", required_argument, NULL, 's' },
        { "content", required_argument, NULL, OPT_CONTENT },
        { "content-file", required_argument, NULL, OPT_CONTENT_FILE },
        { "type", required_argument, NULL, OPT_TYPE },
        { "new-conn", no_argument, NULL, OPT_NEW_CONN },
        { "rate", required_argument, NULL, OPT_RATE },
        { "line", no_argument, NULL, 'l' },
        { "json", no_argument, NULL, OPT_JSON },
        { "tls", no_argument, NULL, OPT_TLS },
        { "ca", required_argument, NULL, OPT_CA },
        { "cert", required_argument, NULL, OPT_CERT },
        { "key", required_argument, NULL, OPT_KEY },
        { "servername", required_argument, NULL, OPT_SERVERNAME },
        { "insecure", no_argument, NULL, OPT_INSECURE },
        { "no-resume", no_argument, NULL, OPT_NO_RESUME },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 }
    };
    int have_duration = 0, have_size = 0, opt;
    char *end;

    o->connections = 50;
    o->duration = 10.0;
    o->pipeline = 1;
    o->kind = KIND_SEARCH;
    o->size = 64;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "u:c:d:n:P:k:s:lqhV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'u':
            o->unix_path = optarg;
            break;
        case 'c':
            o->connections = (unsigned long)parse_count(optarg, "--connections", 1, MAX_CONNECTIONS);
            break;
        case 'd':
            errno = 0;
            o->duration = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !(o->duration > 0)
                || o->duration > 1e7)
                usage_error("--duration must be a positive number of seconds, not '%s'", optarg);
            have_duration = 1;
            break;
        case 'n':
            o->requests = parse_count(optarg, "--requests", 1, UINT64_MAX / 2);
            break;
        case 'P':
            o->pipeline = (unsigned long)parse_count(optarg, "--pipeline", 1, MAX_PIPELINE);
            break;
        case 'k': {
            size_t i;
            for (i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
                if (strcmp(optarg, kind_names[i]) == 0)
                    break;
            if (i == sizeof kind_names / sizeof kind_names[0])
                usage_error("unknown kind '%s' (search, binary, echo, json or file)", optarg);
            o->kind = (kind)i;
            break;
        }
        case 's':
            o->size = parse_size(optarg);
            have_size = 1;
            break;
        case OPT_CONTENT:
            o->content = optarg;
            break;
        case OPT_CONTENT_FILE:
            o->content_file = optarg;
            break;
        case OPT_TYPE:
            o->type = optarg;
            break;
        case OPT_NEW_CONN:
            o->new_conn = 1;
            break;
        case OPT_RATE:
            errno = 0;
            o->rate = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !(o->rate > 0)
                || o->rate > MAX_RATE)
                usage_error("--rate must be a positive number of connections per second "
                            "up to %g, not '%s'", MAX_RATE, optarg);
            o->new_conn = 1;
            break;
        case 'l':
            o->line = 1;
            break;
        case OPT_JSON:
            o->json = 1;
            break;
        case OPT_TLS:
            o->tls = 1;
            break;
        case OPT_CA:
            o->ca = optarg;
            break;
        case OPT_CERT:
            o->cert = optarg;
            break;
        case OPT_KEY:
            o->key = optarg;
            break;
        case OPT_SERVERNAME:
            o->servername = optarg;
            break;
        case OPT_INSECURE:
            o->insecure = 1;
            break;
        case OPT_NO_RESUME:
            o->no_resume = 1;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf("plugboard-bench %s\n", PACKAGE_VERSION);
            exit(0);
        default:
            usage_error("unknown option or missing argument: %s", argv[optind - 1]);
        }
    }

    int rest = argc - optind;
    if (o->unix_path != NULL) {
        if (rest != 0)
            usage_error("with -u PATH, give no HOST PORT");
        if (strlen(o->unix_path) >= sizeof ((struct sockaddr_un *)0)->sun_path)
            usage_error("socket path too long: %s", o->unix_path);
    } else {
        if (rest != 2)
            usage_error("give HOST PORT, or -u PATH");
        o->host = argv[optind];
        o->port = argv[optind + 1];
    }
    if (have_duration && o->requests != 0)
        usage_error("give either --duration or --requests, not both");
    if (o->new_conn && o->pipeline > 1)
        usage_error("--new-conn and --rate send one request per connection; "
                    "--pipeline does not apply");
    if (o->ca || o->cert || o->key || o->servername || o->insecure || o->no_resume)
        o->tls = 1;
    if (o->key != NULL && o->cert == NULL)
        usage_error("--key needs --cert");
    if (o->servername != NULL && o->servername[0] == '\0')
        usage_error("--servername must not be empty");
    /* A socket path is no name a certificate can carry. */
    if (o->tls && o->unix_path != NULL && o->servername == NULL && !o->insecure)
        usage_error("TLS over -u PATH needs --servername NAME (or --insecure)");
    if (o->content != NULL && o->kind != KIND_JSON)
        usage_error("--content is for --kind json");
    if ((o->content_file != NULL || o->type != NULL) && o->kind != KIND_FILE)
        usage_error("--content-file and --type are for --kind file");
    if (have_size && o->kind != KIND_BINARY && o->kind != KIND_ECHO)
        usage_error("--size is for --kind binary and echo");
    if (o->kind == KIND_JSON && o->content == NULL)
        usage_error("--kind json needs --content TEXT");
    if (o->kind == KIND_FILE && o->content_file == NULL)
        usage_error("--kind file needs --content-file PATH");
    if (o->line && o->kind != KIND_SEARCH && o->kind != KIND_ECHO)
        usage_error("--line carries kinds search and echo only");
}

static void out_of_memory(void)
{
    fputs("plugboard-bench: out of memory\n", stderr);
    exit(EXIT_ERRORS);
}

static unsigned char *read_file(const char *path, size_t *length)
{
    FILE *f = fopen(path, "rb");
    pb_buf content = PB_BUF_INIT;

    if (f == NULL)
        usage_error("cannot open %s: %s", path, strerror(errno));
    for (;;) {
        unsigned char *into = pb_buf_extend(&content, READ_CHUNK);
        if (into == NULL)
            out_of_memory();
        size_t n = fread(into, 1, READ_CHUNK, f);
        pb_buf_truncate(&content, content.len - READ_CHUNK + n);
        if (n < READ_CHUNK)
            break;
        if (pb_buf_used(&content) > MAX_REPLY_BYTES)
            usage_error("%s is larger than %u bytes", path, MAX_REPLY_BYTES);
    }
    if (ferror(f))
        usage_error("cannot read %s: %s", path, strerror(errno));
    fclose(f);
    *length = pb_buf_used(&content);
    if (pb_buf_reserve(&content, 1) != 0)
        out_of_memory();
    return content.data;
}

static void fill_pattern(unsigned char *into, size_t n, const char *pattern)
{
    size_t plen = strlen(pattern);
    for (size_t i = 0; i < n; i++)
        into[i] = (unsigned char)pattern[i % plen];
}

static void set_expectation(expectation *e, int line, const char *type,
                            const char *encoding, const unsigned char *content,
                            size_t length)
{
    if (line) {
        if (pb_buf_append(&e->wire, content, length) != 0
            || pb_buf_append_byte(&e->wire, '\n') != 0)
            out_of_memory();
    } else if (pb_frame_encode(&e->wire, type, encoding, content, length) != 0) {
        out_of_memory();
    }
    e->content = malloc(length ? length : 1);
    if (e->content == NULL)
        out_of_memory();
    memcpy(e->content, content, length);
    e->content_length = length;
    e->content_type = strdup(type);
    e->content_encoding = strdup(encoding);
    if (e->content_type == NULL || e->content_encoding == NULL)
        out_of_memory();
    e->known = 1;
}

/* Encodes the request once, repeated so that a whole pipeline's worth goes
 * out in one send(), and fixes the expected reply where the kind allows. */
static void build_requests(bench *b)
{
    const options *o = &b->opt;
    unsigned char *content = NULL;
    size_t length = 0;
    const char *type, *encoding = "utf-8";
    pb_buf one = PB_BUF_INIT;

    switch (o->kind) {
    case KIND_SEARCH:
        type = "text/json";
        length = strlen(SEARCH_REQUEST);
        content = (unsigned char *)strdup(SEARCH_REQUEST);
        break;
    case KIND_BINARY:
    case KIND_ECHO:
        type = o->kind == KIND_BINARY ? "binary/custom-client-binary-type" : "text/plain";
        encoding = o->kind == KIND_BINARY ? "binary" : "utf-8";
        length = o->size;
        content = malloc(length ? length : 1);
        if (content != NULL)
            fill_pattern(content, length, o->kind == KIND_BINARY ? BINARY_PATTERN : ECHO_PATTERN);
        break;
    case KIND_JSON: {
        json_error_t jerr;
        json_t *parsed = json_loads(o->content, JSON_DECODE_ANY, &jerr);
        if (parsed == NULL)
            usage_error("--content is not valid JSON: %s", jerr.text);
        json_decref(parsed);
        type = "text/json";
        length = strlen(o->content);
        content = (unsigned char *)strdup(o->content);
        break;
    }
    case KIND_FILE:
    default:
        type = o->type != NULL ? o->type : "application/octet-stream";
        encoding = "binary";
        content = read_file(o->content_file, &length);
        break;
    }
    if (content == NULL)
        out_of_memory();

    if (o->line) {
        if (memchr(content, '\n', length) != NULL)
            usage_error("the content holds a newline, which --line cannot carry");
        if (pb_buf_append(&one, content, length) != 0 || pb_buf_append_byte(&one, '\n') != 0)
            out_of_memory();
    } else if (pb_frame_encode(&one, type, encoding, content, length) != 0) {
        out_of_memory();
    }

    if (o->kind == KIND_SEARCH && !o->line) {
        set_expectation(&b->expect, 0, "text/json", "utf-8",
                        (const unsigned char *)SEARCH_REPLY, strlen(SEARCH_REPLY));
    } else if (o->kind == KIND_BINARY) {
        unsigned char reply[sizeof FIRST10_PREFIX + 10];
        size_t first = length < 10 ? length : 10;
        memcpy(reply, FIRST10_PREFIX, strlen(FIRST10_PREFIX));
        memcpy(reply + strlen(FIRST10_PREFIX), content, first);
        set_expectation(&b->expect, 0, "binary/custom-server-binary-type", "binary",
                        reply, strlen(FIRST10_PREFIX) + first);
    } else if (o->kind == KIND_ECHO) {
        set_expectation(&b->expect, o->line, type, encoding, content, length);
    }
    free(content);

    b->content_bytes = length;
    b->request_bytes = pb_buf_used(&one);
    size_t copies = REQUEST_STREAM_BYTES / b->request_bytes;
    if (copies > o->pipeline)
        copies = o->pipeline;
    if (copies == 0)
        copies = 1;
    b->stream_bytes = copies * b->request_bytes;
    b->stream = malloc(b->stream_bytes);
    if (b->stream == NULL)
        out_of_memory();
    for (size_t i = 0; i < copies; i++)
        memcpy(b->stream + i * b->request_bytes, pb_buf_head(&one), b->request_bytes);
    pb_buf_free(&one);
}

/* The one TLS context of the run, which every connection shares. */
static void tls_setup(bench *b)
{
    const options *o = &b->opt;
    b->tls_name = o->servername != NULL ? o->servername : o->host;
    /* RFC 6066: a server name indication is a host name, never an address. */
    b->tls_sni = b->tls_name != NULL && !pb_tls_is_ip_literal(b->tls_name);
    const pb_tls_client_options tls = {
        .ca = o->ca, .cert = o->cert, .key = o->key, .name = b->tls_name,
        .insecure = o->insecure,
    };
    char error[600];
    pb_tls_client_failure failure;
    SSL_CTX *ctx = pb_tls_client_context(&tls, error, sizeof error, &failure);
    if (ctx == NULL) {
        fprintf(stderr, "plugboard-bench: %s\n", error);
        exit(failure == PB_TLS_CLIENT_USAGE ? EXIT_USAGE : EXIT_CONNECT);
    }
    /* Whole runs of records in one read(); tls_recv() drains them. */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (o->no_resume) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    } else {
        SSL_CTX_set_app_data(ctx, b);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT
                                            | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, keep_session);
    }
    /* OpenSSL writes with write(2), which has no MSG_NOSIGNAL. */
    signal(SIGPIPE, SIG_IGN);
    b->tls = ctx;
}

/* A blocking connect with a timeout, tried once before the run so that an
 * unreachable daemon is reported plainly instead of as a flood of errors;
 * the connected socket, or -1. */
static int probe(const struct sockaddr *addr, socklen_t addrlen, int *error)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        *error = errno;
        return -1;
    }
    if (connect(fd, addr, addrlen) != 0) {
        if (errno != EINPROGRESS) {
            *error = errno;
            close(fd);
            return -1;
        }
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int r = poll(&p, 1, PROBE_TIMEOUT_MS);
        socklen_t len = sizeof *error;
        *error = 0;
        if (r == 0)
            *error = ETIMEDOUT;
        else if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, error, &len) != 0)
            *error = errno;
        if (*error != 0) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

/* One handshake on the probe's socket, so that a certificate that does not
 * verify is reported once and plainly, as a failure to connect. */
static void probe_tls(bench *b, int fd)
{
    SSL *ssl = tls_new(b, fd);
    char why[300];

    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(ssl);
        if (r == 1)
            break;
        int error = SSL_get_error(ssl, r);
        if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
            handshake_error(b, ssl, error, why, sizeof why);
            fprintf(stderr, "plugboard-bench: cannot connect to %s: %s\n", b->addr_text, why);
            exit(EXIT_CONNECT);
        }
        struct pollfd p = { .fd = fd,
                            .events = error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT };
        if (poll(&p, 1, PROBE_TIMEOUT_MS) == 0) {
            fprintf(stderr, "plugboard-bench: cannot connect to %s: no TLS handshake in %d s\n",
                    b->addr_text, PROBE_TIMEOUT_MS / 1000);
            exit(EXIT_CONNECT);
        }
    }
    SSL_shutdown(ssl);
    ERR_clear_error();
    SSL_free(ssl);
}

/* The probe's socket served its purpose once it connected (and, with TLS,
 * shook hands). */
static void probed(bench *b, int fd)
{
    if (b->tls != NULL)
        probe_tls(b, fd);
    close(fd);
}

static void resolve_address(bench *b)
{
    const options *o = &b->opt;
    int error = 0;

    if (o->unix_path != NULL) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&b->addr;
        memset(sun, 0, sizeof *sun);
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, o->unix_path, strlen(o->unix_path) + 1);
        b->addrlen = sizeof *sun;
        snprintf(b->addr_text, sizeof b->addr_text, "%s", o->unix_path);
        int fd = probe((struct sockaddr *)sun, b->addrlen, &error);
        if (fd >= 0) {
            probed(b, fd);
            return;
        }
    } else {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG };
        struct addrinfo *list;
        snprintf(b->addr_text, sizeof b->addr_text,
                 strchr(o->host, ':') != NULL ? "[%s]:%s" : "%s:%s", o->host, o->port);
        int rc = getaddrinfo(o->host, o->port, &hints, &list);
        if (rc != 0) {
            fprintf(stderr, "plugboard-bench: cannot resolve %s: %s\n", b->addr_text,
                    gai_strerror(rc));
            exit(EXIT_CONNECT);
        }
        for (struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
            int fd = probe(ai->ai_addr, ai->ai_addrlen, &error);
            if (fd >= 0) {
                memcpy(&b->addr, ai->ai_addr, ai->ai_addrlen);
                b->addrlen = ai->ai_addrlen;
                b->tcp = 1;
                freeaddrinfo(list);
                probed(b, fd);
                return;
            }
        }
        freeaddrinfo(list);
    }
    fprintf(stderr, "plugboard-bench: cannot connect to %s: %s\n", b->addr_text,
            strerror(error));
    exit(EXIT_CONNECT);
}

/* Every connection needs a descriptor; raise the soft limit when allowed. */
static void ensure_descriptors(unsigned long connections)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)connections + 32;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        usage_error("%lu connections need %llu descriptors; the limit is %llu (ulimit -n)",
                    connections, (unsigned long long)need, (unsigned long long)rl.rlim_max);
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        usage_error("cannot raise the descriptor limit to %llu: %s",
                    (unsigned long long)need, strerror(errno));
}

static void setup_connections(bench *b)
{
    b->conns = calloc(b->opt.connections, sizeof *b->conns);
    b->read_chunk = malloc(READ_CHUNK);
    if (b->conns == NULL || b->read_chunk == NULL)
        out_of_memory();
    if (b->opt.rate > 0) {
        b->idle = malloc(b->opt.connections * sizeof *b->idle);
        if (b->idle == NULL)
            out_of_memory();
        /* Stacked so that the first connection is the first taken. */
        for (unsigned long i = 0; i < b->opt.connections; i++)
            b->idle[i] = b->opt.connections - 1 - i;
        b->idle_count = b->opt.connections;
    }
    for (unsigned long i = 0; i < b->opt.connections; i++) {
        conn *c = &b->conns[i];
        c->b = b;
        c->fd = -1;
        c->sent_at = malloc(b->opt.pipeline * sizeof *c->sent_at);
        if (c->sent_at == NULL)
            out_of_memory();
        ev_init(&c->rio, on_readable);
        ev_init(&c->wio, on_writable);
        ev_init(&c->retry, on_retry);
        c->rio.data = c->wio.data = c->retry.data = c;
        pb_frame_decoder_init(&c->frame_decoder, MAX_REPLY_BYTES);
        pb_line_decoder_init(&c->line_decoder, MAX_REPLY_BYTES);
    }
}

static void teardown(bench *b)
{
    for (unsigned long i = 0; i < b->opt.connections; i++) {
        conn *c = &b->conns[i];
        conn_finish(c);
        ev_timer_stop(b->loop, &c->retry);
        pb_buf_free(&c->carry);
        free(c->sent_at);
    }
    free(b->conns);
    free(b->idle);
    free(b->read_chunk);
    SSL_SESSION_free(b->session);
    SSL_CTX_free(b->tls);
    free(b->stream);
    pb_buf_free(&b->expect.wire);
    free(b->expect.content);
    free(b->expect.content_type);
    free(b->expect.content_encoding);
    pb_line_codec_cleanup();
}

/* ---- report -------------------------------------------------------------- */

typedef struct results {
    double seconds;
    double rps;
    double connections_per_s;   /* connections opened */
    double handshake_us[3];     /* p50, p99, max */
    double mb_out;
    double mb_in;
    double percentile_us[5];
    double cpu_us_per_request;  /* negative when nothing succeeded */
    double cpu_percent;
} results;

static const double report_percentiles[4] = { 50.0, 90.0, 99.0, 99.9 };

static double rounded(double v, double scale)
{
    return round(v * scale) / scale;
}

static int add_number(json_t *object, const char *key, double v)
{
    return json_object_set_new(object, key, json_real(v));
}

static int add_count(json_t *object, const char *key, uint64_t v)
{
    return json_object_set_new(object, key, json_integer((json_int_t)v));
}

static void report_json(const bench *b, const results *r)
{
    const options *o = &b->opt;
    json_t *root = json_object();
    json_t *latency = json_object();
    pb_buf out = PB_BUF_INIT;
    static const char *const keys[5] = { "p50", "p90", "p99", "p999", "max" };

    if (root == NULL || latency == NULL)
        out_of_memory();
    int bad = add_count(root, "requests", b->ok)
              | add_count(root, "errors", b->errors)
              | add_count(root, "connect_errors", b->connect_errors)
              | add_number(root, "seconds", rounded(r->seconds, 1e3))
              | add_number(root, "rps", rounded(r->rps, 10))
              | add_number(root, "mb_per_s_out", rounded(r->mb_out, 1e3))
              | add_number(root, "mb_per_s_in", rounded(r->mb_in, 1e3));
    for (int i = 0; i < 5; i++)
        bad |= add_number(latency, keys[i], rounded(r->percentile_us[i], 10));
    bad |= json_object_set_new(root, "latency_us", latency)
           | json_object_set_new(root, "cpu_us_per_request",
                                 r->cpu_us_per_request < 0 ? json_null()
                                 : json_real(rounded(r->cpu_us_per_request, 1e3)))
           | add_number(root, "cpu_percent", rounded(r->cpu_percent, 10))
           | add_count(root, "connections", o->connections)
           | add_count(root, "pipeline", o->pipeline)
           | json_object_set_new(root, "kind", json_string(kind_names[o->kind]))
           | add_count(root, "size", b->content_bytes)
           | json_object_set_new(root, "framing", json_string(o->line ? "line" : "frame"))
           | json_object_set_new(root, "new_conn", json_boolean(o->new_conn));
    if (o->new_conn)
        bad |= add_count(root, "connections_opened", b->opened)
               | add_number(root, "connections_per_s", rounded(r->connections_per_s, 10));
    if (o->rate > 0)
        bad |= add_number(root, "rate", o->rate);
    if (b->tls != NULL) {
        json_t *tls = json_object();
        json_t *handshake = json_object();
        if (tls == NULL || handshake == NULL)
            out_of_memory();
        bad |= json_object_set_new(tls, "version", b->tls_version ? json_string(b->tls_version)
                                                                  : json_null())
               | json_object_set_new(tls, "cipher", b->tls_cipher ? json_string(b->tls_cipher)
                                                                  : json_null())
               | add_count(tls, "handshakes", b->handshakes)
               | add_count(tls, "resumed", b->resumed)
               | add_number(handshake, "p50", rounded(r->handshake_us[0], 10))
               | add_number(handshake, "p99", rounded(r->handshake_us[1], 10))
               | add_number(handshake, "max", rounded(r->handshake_us[2], 10))
               | json_object_set_new(tls, "handshake_us", handshake)
               | json_object_set_new(root, "tls", tls);
    }
    if (bad != 0 || pb_json_dump(&out, root) != 0 || pb_buf_append_byte(&out, '\n') != 0)
        out_of_memory();
    fwrite(pb_buf_head(&out), 1, pb_buf_used(&out), stdout);
    pb_buf_free(&out);
    json_decref(root);
}

static void report_text(const bench *b, const results *r)
{
    const options *o = &b->opt;

    printf("plugboard-bench: %s%s, %s framing, kind %s (%zu bytes of content, %zu on the wire), "
           "%lu connection%s, pipeline %lu%s\n",
           b->addr_text, b->tls != NULL ? " over TLS" : "", o->line ? "line" : "frame",
           kind_names[o->kind], b->content_bytes, b->request_bytes,
           o->connections, o->connections == 1 ? "" : "s", o->pipeline,
           o->new_conn ? ", new connection per request" : "");
    printf("  requests      %llu\n", (unsigned long long)b->ok);
    printf("  errors        %llu", (unsigned long long)b->errors);
    if (b->connect_errors > 0)
        printf(" (%llu failed connects)", (unsigned long long)b->connect_errors);
    printf("\n  duration      %.2f s\n", r->seconds);
    printf("  requests/s    %.1f\n", r->rps);
    printf("  MB/s          %.2f out, %.2f in\n", r->mb_out, r->mb_in);
    printf("  latency (us)  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
           r->percentile_us[0], r->percentile_us[1], r->percentile_us[2],
           r->percentile_us[3], r->percentile_us[4]);
    if (o->new_conn) {
        printf("  connections   %llu opened, %.1f/s", (unsigned long long)b->opened,
               r->connections_per_s);
        if (o->rate > 0)
            printf(" (paced at %g/s)", o->rate);
        putchar('\n');
    }
    if (b->tls != NULL) {
        printf("  TLS           %s %s, %llu handshakes, %llu resumed\n",
               b->tls_version ? b->tls_version : "-", b->tls_cipher ? b->tls_cipher : "-",
               (unsigned long long)b->handshakes, (unsigned long long)b->resumed);
        printf("  handshake (us) p50 %.1f  p99 %.1f  max %.1f (from connect)\n",
               r->handshake_us[0], r->handshake_us[1], r->handshake_us[2]);
    }
    if (r->cpu_us_per_request >= 0)
        printf("  bench CPU     %.2f us per request, %.0f%% of one core%s\n",
               r->cpu_us_per_request, r->cpu_percent,
               r->cpu_percent >= 90 ? " (the bench may be the limit)" : "");
    else
        printf("  bench CPU     %.0f%% of one core\n", r->cpu_percent);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6
           + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    static bench b;

    parse_options(&b.opt, argc, argv);
    build_requests(&b);
    ensure_descriptors(b.opt.connections);
    if (b.opt.tls)
        tls_setup(&b);
    resolve_address(&b);

    b.loop = ev_default_loop(EVFLAG_AUTO);
    if (b.loop == NULL) {
        fputs("plugboard-bench: cannot initialize libev\n", stderr);
        return EXIT_ERRORS;
    }
    setup_connections(&b);
    b.progress = !b.opt.quiet && isatty(STDERR_FILENO);
    b.budget = b.opt.requests;
    b.running = 1;

    ev_signal_init(&b.sigint, on_sigint, SIGINT);
    b.sigint.data = &b;
    ev_signal_start(b.loop, &b.sigint);
    ev_timer_init(&b.duration_timer, on_duration, b.opt.duration, 0.);
    b.duration_timer.data = &b;
    ev_timer_init(&b.progress_timer, on_progress, 1., 1.);
    b.progress_timer.data = &b;
    ev_timer_init(&b.watchdog, on_watchdog, 1., 1.);
    b.watchdog.data = &b;
    if (b.opt.rate > 0) {
        double tick = 1. / b.opt.rate;
        ev_timer_init(&b.pace, on_pace, 0., tick > PACE_TICK ? tick : PACE_TICK);
        b.pace.data = &b;
    }

    double cpu_start = cpu_seconds();
    ev_now_update(b.loop);
    b.start_ns = now_ns();
    b.last_progress_ns = b.start_ns;
    ev_timer_start(b.loop, &b.watchdog);
    if (b.opt.requests == 0)
        ev_timer_start(b.loop, &b.duration_timer);
    if (b.progress)
        ev_timer_start(b.loop, &b.progress_timer);
    if (b.opt.rate > 0)
        ev_timer_start(b.loop, &b.pace);
    else
        for (unsigned long i = 0; i < b.opt.connections && has_work(&b); i++)
            conn_start(&b.conns[i]);
    if (b.running)
        ev_run(b.loop, 0);
    uint64_t elapsed_ns = now_ns() - b.start_ns;
    double cpu = cpu_seconds() - cpu_start;
    count_overdue(&b);

    if (b.progress)
        fputs("\r\033[K", stderr);

    results r = { 0 };
    r.seconds = (double)elapsed_ns / 1e9;
    r.rps = (double)b.ok / r.seconds;
    r.mb_out = (double)b.bytes_out / 1e6 / r.seconds;
    r.mb_in = (double)b.bytes_in / 1e6 / r.seconds;
    for (int i = 0; i < 4; i++)
        r.percentile_us[i] = (double)hist_percentile(&b.latency, report_percentiles[i]) / 1e3;
    r.percentile_us[4] = (double)b.latency.max / 1e3;
    r.connections_per_s = (double)b.opened / r.seconds;
    r.handshake_us[0] = (double)hist_percentile(&b.handshake_time, 50.0) / 1e3;
    r.handshake_us[1] = (double)hist_percentile(&b.handshake_time, 99.0) / 1e3;
    r.handshake_us[2] = (double)b.handshake_time.max / 1e3;
    r.cpu_us_per_request = b.ok > 0 ? cpu * 1e6 / (double)b.ok : -1;
    r.cpu_percent = cpu / r.seconds * 100;
    if (b.opt.json)
        report_json(&b, &r);
    else
        report_text(&b, &r);
    fflush(stdout);

    ev_signal_stop(b.loop, &b.sigint);
    ev_timer_stop(b.loop, &b.duration_timer);
    ev_timer_stop(b.loop, &b.progress_timer);
    ev_timer_stop(b.loop, &b.watchdog);
    if (b.opt.rate > 0)
        ev_timer_stop(b.loop, &b.pace);
    teardown(&b);
    ev_loop_destroy(b.loop);
    return b.errors > 0 ? EXIT_ERRORS : 0;
}

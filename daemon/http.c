/*
 * http.c - the path of a message on a listener with framing "http". The
 * worker accepts the socket (server.c: allow list, max_connections) and
 * hands it to the listener's libmicrohttpd server, which parses HTTP/1.1
 * and calls on_request; the server has no socket of its own and runs from
 * the worker's loop (its epoll descriptor and its next timeout).
 *
 *   GET /health, /metrics, /    answered at once from this worker
 *   POST /                      body -> route -> plugin -> reply (reply.c)
 *                               -> 200 with the reply's content-type
 *
 * A reply that comes later (PB_DEFER, a thread pool) suspends the
 * connection; its `finished` callback resumes it, and libmicrohttpd calls
 * on_request once more to send it.
 */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "codec.h"
#include "connection.h"
#include "error.h"
#include "json_fast.h"
#include "log.h"
#include "plugin_host.h"
#include "prometheus.h"
#include "reply.h"
#include "status_page.h"

/* What a connection may hold for one request's line and headers (and
 * libmicrohttpd's bookkeeping): a request whose headers do not fit is
 * answered 431 and closed. libmicrohttpd clears this memory for every
 * request, so it is kept to what the HTTP face's requests need, as
 * Apache bounds a header field (8190 bytes) and nginx a header line. */
#define HTTP_MEMORY_LIMIT (8 * 1024)

/* How much of a chunked body past max_message_bytes is read (and
 * dropped) to answer too_large before the connection is simply closed. */
#define HTTP_DISCARD_LIMIT (1024 * 1024)

typedef struct http_request http_request;

/* One connection, from libmicrohttpd's start notice to its close notice. */
typedef struct http_conn {
    pb_http *http;
    int fd;
    unsigned long long number;      /* pb_request.connection */
    long peer_uid;                  /* a Unix-socket peer's uid, else -1 */
    char *tls_subject;              /* a verified client certificate's */
    int tls_checked;                /* its client certificate was judged */
    ev_tstamp since;                /* accepted, or its last request ended */
    int listener_stats;             /* the listener's counters at accept */
    http_request *request;          /* the one in progress, or NULL */
    struct http_conn *prev, *next;
} http_conn;

/* One request, from on_request's first call to libmicrohttpd's notice
 * that it completed. */
struct http_request {
    http_conn *conn;
    struct MHD_Connection *mhd;
    pb_buf body;
    unsigned long long received;    /* bytes of the body so far */
    pb_reply *reply;                /* in flight, or NULL */
    int answered;                   /* the reply came back: send it */
};

/* A tls group's files as libmicrohttpd takes them (NUL-terminated PEM),
 * and what it asks of clients; all NULL for plaintext. */
typedef struct http_tls {
    char *certificate, *key, *ca;
    pb_verify_client verify_client;
    int min_version;
} http_tls;

struct pb_http {
    pb_server *server;
    pb_listener *listener;
    struct MHD_Daemon *mhd;
    http_tls tls;                   /* what it was started with */
    pb_http *older;                 /* started for an earlier tls group,
                                     * serving the connections it has */
    ev_io events;                   /* libmicrohttpd's epoll descriptor */
    ev_timer timeout;               /* its next timeout */
    ev_timer sweep;                 /* closes connections past idle_timeout */
    http_conn *conns;
    size_t n_idle;
    int running;                    /* inside MHD_run */
    int added;                      /* a connection was started */
    struct MHD_Response *healthy;   /* GET /health's answers, made once */
    struct MHD_Response *stopping;
};

static pb_worker_stats *stats(const pb_http *h)
{
    return &h->server->shared->slots[h->server->slot];
}

/* --- Driving libmicrohttpd from the loop ------------------------------------ */

static void drive(pb_http *h)
{
    if (h->running)
        return;
    h->running = 1;
    MHD_run(h->mhd);
    h->running = 0;
    MHD_UNSIGNED_LONG_LONG ms;
    ev_timer_stop(h->server->loop, &h->timeout);
    if (MHD_get_timeout(h->mhd, &ms) == MHD_YES) {
        ev_timer_set(&h->timeout, (double)ms / 1000.0, 0.0);
        ev_timer_start(h->server->loop, &h->timeout);
    }
}

static void on_events(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    drive(w->data);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    drive(w->data);
}

/* Ends a connection from outside libmicrohttpd: it reads the end of the
 * stream and closes it on its next run. */
static void end_connection(http_conn *c)
{
    shutdown(c->fd, SHUT_RDWR);
}

/* Like the other framings, a connection without a complete request for
 * idle_timeout is closed, however slowly it sends; one waiting for its
 * reply is not idle. This sweep, not libmicrohttpd's connection timeout
 * (fixed when its server starts), applies idle_timeout, so that a reload
 * changes it for open connections too. */
static void on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    pb_http *h = w->data;
    double timeout = h->server->cycle->config->limits.idle_timeout;
    if (timeout <= 0)
        return;
    ev_tstamp now = ev_now(loop);
    int ended = 0;
    for (http_conn *c = h->conns; c != NULL; c = c->next) {
        if (c->since + timeout > now || (c->request && c->request->reply))
            continue;
        pb_log_debug("closing idle HTTP connection on %s", h->listener->address);
        end_connection(c);
        c->since = now;
        ended = 1;
    }
    if (ended)
        drive(h);
}

/* --- Answers ------------------------------------------------------------------ */

static enum MHD_Result respond(http_request *rq, struct MHD_Connection *mhd,
                               unsigned int status, const char *content_type,
                               const void *body, size_t length, int close)
{
    pb_server *s = rq->conn->http->server;
    struct MHD_Response *response =
        MHD_create_response_from_buffer(length, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (response == NULL)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    /* A stopping worker lets each connection go after its answer. */
    if (close || s->stopping)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW,
                                "GET, HEAD, POST");
    enum MHD_Result rc = MHD_queue_response(mhd, status, response);
    MHD_destroy_response(response);
    if (rc == MHD_YES)
        pb_count(&stats(rq->conn->http)->bytes_out, (long)length);
    return rc;
}

/* An error as every framing writes its content; statuses for the codes
 * that are not pb_error_code (not_found, method_not_allowed, bad_request)
 * are given by the caller. */
static enum MHD_Result respond_error(http_request *rq, struct MHD_Connection *mhd,
                                     unsigned int status, const char *token,
                                     const char *text, int close)
{
    pb_buf body = PB_BUF_INIT;
    enum MHD_Result rc = MHD_NO;
    if (pb_error_encode_json(&body, token, text) == 0)
        rc = respond(rq, mhd, status, "application/json", pb_buf_head(&body),
                     pb_buf_used(&body), close);
    pb_buf_free(&body);
    return rc;
}

static enum MHD_Result respond_code(http_request *rq, struct MHD_Connection *mhd,
                                    pb_error_code code, const char *text)
{
    pb_count(&stats(rq->conn->http)->errors[code], 1);
    return respond_error(rq, mhd, (unsigned int)pb_error_http_status(code),
                         pb_error_token(code), text, pb_error_closes(code));
}

/* /metrics and /: a snapshot of the daemon's statistics, written out. */
static enum MHD_Result respond_snapshot(http_request *rq, struct MHD_Connection *mhd,
                                        int (*write)(pb_buf *, const json_t *),
                                        const char *content_type)
{
    json_t *snapshot = pb_stats_snapshot(rq->conn->http->server->shared);
    pb_buf out = PB_BUF_INIT;
    enum MHD_Result rc;
    if (snapshot != NULL && write(&out, snapshot) == 0)
        rc = respond(rq, mhd, MHD_HTTP_OK, content_type, pb_buf_head(&out),
                     pb_buf_used(&out), 0);
    else
        rc = respond_error(rq, mhd, MHD_HTTP_INTERNAL_SERVER_ERROR, "no_memory",
                           "out of memory for the statistics", 1);
    json_decref(snapshot);
    pb_buf_free(&out);
    return rc;
}

#define HEALTH_OK "ok\n"
#define HEALTH_STOPPING "stopping\n"

/* /health answers the same bytes every time: its two responses are made
 * when the server starts and queued as they are, without a copy. */
static struct MHD_Response *health_response(const char *body, int close)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(body), (void *)body,
                                        MHD_RESPMEM_PERSISTENT);
    if (response == NULL)
        return NULL;
    if (MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "text/plain; charset=utf-8") != MHD_YES
        || (close && MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION,
                                             "close") != MHD_YES)) {
        MHD_destroy_response(response);
        return NULL;
    }
    return response;
}

static enum MHD_Result answer_health(http_request *rq, struct MHD_Connection *mhd)
{
    pb_http *h = rq->conn->http;
    int stopping = h->server->stopping;
    enum MHD_Result rc =
        MHD_queue_response(mhd, stopping ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK,
                           stopping ? h->stopping : h->healthy);
    if (rc == MHD_YES)
        pb_count(&stats(h)->bytes_out, stopping ? (long)sizeof HEALTH_STOPPING - 1
                                                : (long)sizeof HEALTH_OK - 1);
    return rc;
}

static enum MHD_Result answer_get(http_request *rq, struct MHD_Connection *mhd,
                                  const char *url)
{
    if (strcmp(url, "/health") == 0)
        return answer_health(rq, mhd);
    if (strcmp(url, "/metrics") == 0)
        return respond_snapshot(rq, mhd, pb_prometheus_write,
                                "text/plain; version=0.0.4; charset=utf-8");
    return respond_snapshot(rq, mhd, pb_status_page_write, "text/html; charset=utf-8");
}

/* --- Messages ---------------------------------------------------------------- */

static void release_reply(pb_reply *r)
{
    if (r->cycle != NULL)
        pb_cycle_drop(r->cycle);
    pb_reply_free(r);
}

/* The plugin's answer, or its failure, as the response. A reply's bytes
 * are its Content-Type, a NUL and the body (the http codec, codec.c). */
static enum MHD_Result send_reply(http_request *rq, struct MHD_Connection *mhd)
{
    pb_reply *r = rq->reply;
    rq->reply = NULL;
    pb_http *h = rq->conn->http;
    pb_reply_observe(r);
    enum MHD_Result rc;
    const char *head = r->failed || r->written == NULL
                           ? NULL : (const char *)pb_buf_head(r->written);
    size_t used = head != NULL ? pb_buf_used(r->written) : 0;
    const char *nul = head != NULL ? memchr(head, '\0', used) : NULL;
    /* A content-type that would end the header line early is the
     * plugin's failure, not a header of its making. */
    if (nul != NULL && strpbrk(head, "\r\n") != NULL) {
        snprintf(r->error, sizeof r->error,
                 "plugin gave a content-type with a line break in it");
        nul = NULL;
    }
    if (nul == NULL) {
        static pb_log_limit limit = PB_LOG_LIMIT(10.0, 5);
        if (r->error[0] == '\0')
            snprintf(r->error, sizeof r->error, "plugin failed");
        pb_log_limited(&limit, PB_LOG_INFO, "plugin %s failed on a message from %s: %s",
                       r->instance_name, h->listener->address, r->error);
        rc = respond_code(rq, mhd, PB_ERR_PLUGIN_FAILED, r->error);
    } else {
        size_t type_length = (size_t)(nul - head) + 1;
        rc = respond(rq, mhd, MHD_HTTP_OK, head, head + type_length,
                     used - type_length, 0);
    }
    release_reply(r);
    return rc;
}

/* A reply answered after its handle() returned is back on the loop. */
static void on_reply_finished(pb_reply *r)
{
    http_request *rq = r->owner;
    if (rq == NULL) {
        release_reply(r);
        return;
    }
    rq->answered = 1;
    MHD_resume_connection(rq->mhd);
    drive(rq->conn->http);
}

/* "text/json; charset=utf-8" -> "text/json" (lower case) and "utf-8";
 * without a charset, utf-8 for text/ types and binary for the others. 0,
 * or -1 when it does not fit. */
static int parse_content_type(const char *value, char *type, size_t type_size,
                              char *encoding, size_t encoding_size)
{
    if (value == NULL)
        value = "application/octet-stream";
    while (*value == ' ' || *value == '\t')
        value++;
    size_t n = strcspn(value, ";");
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= type_size)
        return -1;
    for (size_t i = 0; i < n; i++)
        type[i] = (char)tolower((unsigned char)value[i]);
    type[n] = '\0';
    snprintf(encoding, encoding_size, "%s",
             strncmp(type, "text/", 5) == 0 ? "utf-8" : "binary");
    for (const char *p = strchr(value, ';'); p != NULL; p = strchr(p + 1, ';')) {
        const char *param = p + 1 + strspn(p + 1, " \t");
        if (strncasecmp(param, "charset=", 8) != 0)
            continue;
        param += 8;
        int quoted = *param == '"';
        param += quoted;
        size_t len = strcspn(param, quoted ? "\"" : "; \t");
        if (len == 0 || len >= encoding_size)
            return -1;
        for (size_t i = 0; i < len; i++)
            encoding[i] = (char)tolower((unsigned char)param[i]);
        encoding[len] = '\0';
    }
    return 0;
}

static const char *peer_name(struct MHD_Connection *mhd, char *out, size_t size)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = info != NULL ? info->client_addr : NULL;
    char host[INET6_ADDRSTRLEN];
    snprintf(out, size, "unix");
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, size, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, size, "[%s]:%u", host, ntohs(in6->sin6_port));
    }
    return out;
}

/* The body is a message: routed as a frame on this listener would be,
 * handed to its plugin, answered now or once the reply comes back. */
static enum MHD_Result handle_message(http_request *rq, struct MHD_Connection *mhd)
{
    pb_http *h = rq->conn->http;
    pb_server *s = h->server;
    if (s->stopping)
        return respond_code(rq, mhd, PB_ERR_SHUTTING_DOWN, "the server is shutting down");
    char type[256], encoding[64];
    if (parse_content_type(MHD_lookup_connection_value(mhd, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_CONTENT_TYPE),
                           type, sizeof type, encoding, sizeof encoding) != 0)
        return respond_error(rq, mhd, MHD_HTTP_BAD_REQUEST, "bad_request",
                             "Content-Type is empty or too long", 0);
    pb_count(&stats(h)->messages, 1);
    pb_count(&stats(h)->bytes_in, (long)pb_buf_used(&rq->body));
    const char *content = pb_buf_used(&rq->body) > 0
                              ? (const char *)pb_buf_head(&rq->body) : "";
    pb_content parsed;
    pb_content_init(&parsed);
    const pb_json *json = NULL;
    if (strcmp(type, "text/json") == 0) {
        json_error_t jerr;
        json = pb_content_parse(&parsed, content, pb_buf_used(&rq->body), &jerr);
        if (json == NULL) {
            char text[300];
            snprintf(text, sizeof text, "content is not valid JSON: %s (at byte %d)",
                     jerr.text, jerr.position);
            return respond_code(rq, mhd, PB_ERR_BAD_JSON, text);
        }
    }

    const char *action = json ? pb_content_string(json, "action") : NULL;
    const pb_listener_view *view = &s->views[h->listener->index];
    pb_instance *instance = view->pinned;
    const pb_route *route = NULL;
    if (instance == NULL) {
        route = pb_router_match(&s->cycle->router, view->conf, type, action);
        instance = route ? route->instance : NULL;
    }
    if (instance == NULL) {
        char text[300];
        pb_router_miss(text, sizeof text, type, action);
        pb_content_release(&parsed);
        return respond_code(rq, mhd, PB_ERR_NO_ROUTE, text);
    }
    pb_reply *reply = pb_reply_new(rq, on_reply_finished, pb_codec_for(PB_HTTP), NULL);
    if (reply == NULL) {
        pb_content_release(&parsed);
        return respond_code(rq, mhd, PB_ERR_PLUGIN_FAILED, "out of memory for the reply");
    }
    reply->instance_stats = s->instance_stats[instance->index];
    reply->instance_name = instance->name;
    reply->route_stats = route ? s->route_stats[route - s->cycle->router.routes] : -1;
    rq->reply = reply;
    /* What a frame's header would say, for plugins that read it. */
    json_t *header = json_pack("{s:s, s:s}", "content-type", type,
                               "content-encoding", encoding);
    char peer[INET6_ADDRSTRLEN + 8];
    pb_request request = {
        .size = sizeof(pb_request),
        .host = &pb_host_services,
        .instance = instance,
        .content_type = type,
        .content_encoding = encoding,
        .header = (const pb_json *)header,
        .content = (const unsigned char *)content,
        .content_length = pb_buf_used(&rq->body),
        .json = json,
        .listener = h->listener->name,
        .framing = PB_FRAMING_HTTP,
        .peer = peer_name(mhd, peer, sizeof peer),
        .peer_uid = rq->conn->peer_uid,
        .tls_subject = rq->conn->tls_subject,
        .connection = rq->conn->number,
    };

    /* It keeps the configuration that routed it until it is answered. */
    reply->cycle = s->cycle;
    pb_cycle_hold(reply->cycle);
    int finished;
    if (header == NULL) {
        reply->failed = 1;
        snprintf(reply->error, sizeof reply->error, "out of memory for the request");
        finished = 1;
    } else if (instance->pool != NULL) {
        finished = 0;
        if (pb_instance_submit(instance, &request, reply) != 0) {
            reply->failed = 1;
            snprintf(reply->error, sizeof reply->error,
                     "out of memory for the plugin's thread");
            finished = 1;
        }
    } else {
        finished = pb_instance_handle(instance, &request, reply);
    }
    pb_content_release(&parsed);
    json_decref(header);
    if (finished)
        return send_reply(rq, mhd);
    MHD_suspend_connection(mhd);
    return MHD_YES;
}

/* --- libmicrohttpd's callbacks ------------------------------------------------- */

static int path_known(const char *url)
{
    return strcmp(url, "/") == 0 || strcmp(url, "/health") == 0
        || strcmp(url, "/metrics") == 0;
}

static enum MHD_Result too_large(http_request *rq, struct MHD_Connection *mhd,
                                 unsigned long long length)
{
    char text[160];
    snprintf(text, sizeof text, "message of %llu bytes exceeds max_message_bytes (%lld)",
             length, rq->conn->http->server->cycle->config->limits.max_message_bytes);
    return respond_code(rq, mhd, PB_ERR_TOO_LARGE, text);
}

/* The answer to a request whose body is in, by path and method. */
static enum MHD_Result dispatch(http_request *rq, struct MHD_Connection *mhd,
                                const char *url, const char *method)
{
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0;
    if (!path_known(url))
        return respond_error(rq, mhd, MHD_HTTP_NOT_FOUND, "not_found",
                             "no such path: GET /health, /metrics or /, "
                             "POST / with a message", 0);
    if (get)
        return answer_get(rq, mhd, url);
    if (post && strcmp(url, "/") == 0)
        return handle_message(rq, mhd);
    return respond_error(rq, mhd, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                         "method not allowed on this path", 0);
}

/* On a TLS listener that asks for client certificates, once per
 * connection: a certificate must verify against the CA (and one is
 * needed with verify_client = "require"); its subject goes to plugins.
 * libmicrohttpd only asks for one, so this is where it is judged. 0, or
 * -1 to close the connection. */
static int check_client(pb_http *h, http_conn *c, struct MHD_Connection *mhd)
{
    c->tls_checked = 1;
    if (h->tls.ca == NULL || h->tls.verify_client == PB_VERIFY_NONE)
        return 0;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gnutls_session_t session = info != NULL ? info->tls_session : NULL;
    unsigned int n = 0, status = 0;
    const gnutls_datum_t *certs = session != NULL
                                      ? gnutls_certificate_get_peers(session, &n) : NULL;
    const char *why = NULL;
    if (certs == NULL || n == 0) {
        if (h->tls.verify_client == PB_VERIFY_REQUIRE)
            why = "no client certificate";
    } else if (gnutls_certificate_verify_peers2(session, &status) != GNUTLS_E_SUCCESS
               || status != 0) {
        why = "client certificate does not verify";
    } else {
        gnutls_x509_crt_t crt;
        gnutls_datum_t dn = { NULL, 0 };
        if (gnutls_x509_crt_init(&crt) == GNUTLS_E_SUCCESS) {
            if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == GNUTLS_E_SUCCESS
                && gnutls_x509_crt_get_dn3(crt, &dn, 0) == GNUTLS_E_SUCCESS) {
                c->tls_subject = strndup((const char *)dn.data, dn.size);
                gnutls_free(dn.data);
            }
            gnutls_x509_crt_deinit(crt);
        }
    }
    if (why == NULL)
        return 0;
    static pb_log_limit limit = PB_LOG_LIMIT(10.0, 5);
    pb_log_limited(&limit, PB_LOG_DEBUG, "refusing an HTTPS client on %s: %s",
                   h->listener->address, why);
    pb_count(&stats(h)->refused_tls, 1);
    return -1;
}

/* Called when a request's headers are in (*state NULL), for each piece of
 * its body, once the body is complete, and again after a resume. An
 * answer given on the first call would close the connection (the body
 * could not be skipped): only too_large, which means to, is. */
static enum MHD_Result on_request(void *arg, struct MHD_Connection *mhd,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **state)
{
    (void)version;
    pb_http *h = arg;
    http_request *rq = *state;
    size_t max = (size_t)h->server->cycle->config->limits.max_message_bytes;
    if (rq == NULL) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        http_conn *c = info != NULL ? info->socket_context : NULL;
        if (c == NULL || (!c->tls_checked && check_client(h, c, mhd) != 0)
            || (rq = calloc(1, sizeof *rq)) == NULL)
            return MHD_NO;
        rq->conn = c;
        rq->mhd = mhd;
        rq->body = (pb_buf)PB_BUF_INIT;
        c->request = rq;
        h->n_idle--;
        *state = rq;
        const char *length = MHD_lookup_connection_value(mhd, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        unsigned long long declared = length != NULL ? strtoull(length, NULL, 10) : 0;
        if (declared > max)
            return too_large(rq, mhd, declared);
        return MHD_YES;
    }
    if (*upload_size > 0) {
        size_t piece = *upload_size;
        *upload_size = 0;
        rq->received += piece;
        if (rq->received > max) {
            /* libmicrohttpd answers only once the body is in: the rest
             * is dropped as it comes, up to a bound past which the
             * connection is closed unanswered. */
            pb_buf_free(&rq->body);
            return rq->received - max <= HTTP_DISCARD_LIMIT ? MHD_YES : MHD_NO;
        }
        return pb_buf_append(&rq->body, upload, piece) == 0 ? MHD_YES : MHD_NO;
    }
    if (rq->received > max)
        return too_large(rq, mhd, rq->received);
    if (rq->answered)
        return send_reply(rq, mhd);
    if (rq->reply != NULL)
        return MHD_YES;
    return dispatch(rq, mhd, url, method);
}

/* The request is over, answered or not (its connection may be closing). */
static void on_completed(void *arg, struct MHD_Connection *mhd, void **state,
                         enum MHD_RequestTerminationCode why)
{
    (void)mhd;
    (void)why;
    pb_http *h = arg;
    http_request *rq = *state;
    if (rq == NULL)
        return;
    *state = NULL;
    if (rq->reply != NULL) {
        /* Dropped when it comes back. */
        if (rq->answered)
            release_reply(rq->reply);
        else
            pb_reply_orphan(rq->reply);
    }
    rq->conn->request = NULL;
    rq->conn->since = ev_now(h->server->loop);
    h->n_idle++;
    pb_buf_free(&rq->body);
    free(rq);
}

static void on_connection(void *arg, struct MHD_Connection *mhd, void **state,
                          enum MHD_ConnectionNotificationCode event)
{
    pb_http *h = arg;
    pb_server *s = h->server;
    if (event == MHD_CONNECTION_NOTIFY_STARTED) {
        h->added = 1;
        http_conn *c = calloc(1, sizeof *c);
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (c == NULL || info == NULL) {
            /* Without its record it could not be swept or stopped: ended
             * at once, closed unrecorded. */
            free(c);
            if (info != NULL)
                shutdown(info->connect_fd, SHUT_RDWR);
            *state = NULL;
        } else {
            c->http = h;
            c->fd = info->connect_fd;
            c->number = pb_conn_next_number();
            struct ucred cred;
            socklen_t length = sizeof cred;
            c->peer_uid = h->listener->unix_path != NULL
                              && getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred,
                                            &length) == 0
                              ? (long)cred.uid : -1;
            c->since = ev_now(s->loop);
            c->listener_stats = h->listener->stats;
            c->next = h->conns;
            if (h->conns != NULL)
                h->conns->prev = c;
            h->conns = c;
            h->n_idle++;
            *state = c;
        }
        s->n_connections++;
        pb_stats_listener_open(s->shared, s->slot, h->listener->stats);
        return;
    }
    http_conn *c = *state;
    pb_stats_listener_close(s->shared, s->slot,
                            c != NULL ? c->listener_stats : h->listener->stats);
    if (c != NULL) {
        if (c->request == NULL)
            h->n_idle--;
        if (c->prev != NULL)
            c->prev->next = c->next;
        else
            h->conns = c->next;
        if (c->next != NULL)
            c->next->prev = c->prev;
        free(c->tls_subject);
        free(c);
    }
    s->n_connections--;
    pb_shared_release_connection(s->shared, s->slot);
}

static void on_log(void *arg, const char *format, va_list ap)
{
    pb_http *h = arg;
    char text[300];
    vsnprintf(text, sizeof text, format, ap);
    text[strcspn(text, "\n")] = '\0';
    pb_log_debug("HTTP on %s: %s", h->listener->address, text);
}

/* --- Life cycle -------------------------------------------------------------- */

static void tls_free(http_tls *t)
{
    char *pem[] = { t->certificate, t->key, t->ca };
    for (size_t i = 0; i < 3; i++)
        if (pem[i] != NULL) {
            /* The key is private. */
            explicit_bzero(pem[i], strlen(pem[i]));
            free(pem[i]);
        }
    memset(t, 0, sizeof *t);
}

/* The bytes of the file the master read for path, NUL-terminated; NULL
 * when it has none or out of memory. */
static char *pem_copy(const pb_tls_files *files, const char *path)
{
    for (size_t i = 0; path != NULL && i < files->count; i++) {
        const pb_tls_file *f = &files->items[i];
        if (strcmp(f->path, path) != 0)
            continue;
        char *copy = malloc(f->len + 1);
        if (copy != NULL) {
            memcpy(copy, f->data, f->len);
            copy[f->len] = '\0';
        }
        return copy;
    }
    return NULL;
}

/* The tls group of config's listener number conf, from the bytes the
 * cycle carries; 0, or -1 when a file is missing or out of memory. */
static int tls_read(http_tls *t, const pb_cycle *cycle, size_t conf)
{
    memset(t, 0, sizeof *t);
    if (conf >= cycle->config->n_listeners || cycle->config->listeners[conf].tls == NULL)
        return 0;
    const pb_tls_conf *c = cycle->config->listeners[conf].tls;
    t->certificate = pem_copy(&cycle->tls_files, c->certificate);
    t->key = pem_copy(&cycle->tls_files, c->key);
    t->ca = pem_copy(&cycle->tls_files, c->ca);
    t->verify_client = c->verify_client;
    t->min_version = c->min_version;
    if (t->certificate == NULL || t->key == NULL || (c->ca != NULL && t->ca == NULL)) {
        tls_free(t);
        return -1;
    }
    return 0;
}

static int same_text(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int tls_same(const http_tls *a, const http_tls *b)
{
    return same_text(a->certificate, b->certificate) && same_text(a->key, b->key)
        && same_text(a->ca, b->ca) && a->verify_client == b->verify_client
        && a->min_version == b->min_version;
}

static void health_free(pb_http *h)
{
    if (h->healthy != NULL)
        MHD_destroy_response(h->healthy);
    if (h->stopping != NULL)
        MHD_destroy_response(h->stopping);
}

/* Starts a server for listener, taking over tls; NULL (logged) when
 * libmicrohttpd cannot. */
static pb_http *http_start(pb_server *s, pb_listener *listener, http_tls *tls)
{
    pb_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        pb_log_error("out of memory for the HTTP server of %s", listener->address);
        tls_free(tls);
        return NULL;
    }
    h->server = s;
    h->listener = listener;
    h->tls = *tls;
    memset(tls, 0, sizeof *tls);
    unsigned int flags = MHD_USE_NO_LISTEN_SOCKET | MHD_USE_EPOLL
                         | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem tls_options[5];
    size_t n = 0;
    if (h->tls.certificate != NULL) {
        flags |= MHD_USE_TLS;
        tls_options[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0,
                                                    h->tls.certificate };
        tls_options[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0,
                                                    h->tls.key };
        /* A CA makes libmicrohttpd ask for a client certificate, which
         * check_client judges. */
        if (h->tls.ca != NULL && h->tls.verify_client != PB_VERIFY_NONE)
            tls_options[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_TRUST, 0,
                                                        h->tls.ca };
        const char *versions = h->tls.min_version == PB_TLS_1_3
                                   ? "NORMAL:-VERS-ALL:+VERS-TLS1.3"
                                   : "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
        tls_options[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_PRIORITIES, 0,
                                                    (void *)versions };
    }
    tls_options[n] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
    h->healthy = health_response(HEALTH_OK, 0);
    /* A stopping worker lets each connection go after its answer. */
    h->stopping = health_response(HEALTH_STOPPING, 1);
    if (h->healthy != NULL && h->stopping != NULL)
        h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                                  MHD_OPTION_EXTERNAL_LOGGER, on_log, h,
                                  MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                                  MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                  (size_t)HTTP_MEMORY_LIMIT,
                                  /* max_connections is the worker's to enforce */
                                  MHD_OPTION_CONNECTION_LIMIT, 1u << 20,
                                  MHD_OPTION_ARRAY, tls_options,
                                  MHD_OPTION_END);
    const union MHD_DaemonInfo *info =
        h->mhd != NULL ? MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (info == NULL) {
        pb_log_error("cannot start the HTTP server of %s", listener->address);
        if (h->mhd != NULL)
            MHD_stop_daemon(h->mhd);
        health_free(h);
        tls_free(&h->tls);
        free(h);
        return NULL;
    }
    ev_io_init(&h->events, on_events, info->epoll_fd, EV_READ);
    h->events.data = h;
    ev_io_start(s->loop, &h->events);
    ev_init(&h->timeout, on_timeout);
    h->timeout.data = h;
    ev_timer_init(&h->sweep, on_sweep, 1.0, 1.0);
    h->sweep.data = h;
    ev_timer_start(s->loop, &h->sweep);
    /* Neither keeps the loop running: open connections are counted by the
     * server. */
    ev_unref(s->loop);
    ev_unref(s->loop);
    return h;
}

int pb_http_bind(pb_http **http, pb_server *s, pb_listener *listener,
                 const pb_cycle *cycle, size_t conf)
{
    http_tls tls;
    if (tls_read(&tls, cycle, conf) != 0) {
        pb_log_error("out of memory for the TLS files of %s", listener->address);
        return -1;
    }
    if (*http != NULL && tls_same(&(*http)->tls, &tls)) {
        tls_free(&tls);
        return 0;
    }
    pb_http *h = http_start(s, listener, &tls);
    if (h == NULL)
        return -1;
    h->older = *http;
    *http = h;
    return 0;
}

void pb_http_open(pb_http *h, int fd, const struct sockaddr *peer, socklen_t peer_len)
{
    h->added = 0;
    if (MHD_add_connection(h->mhd, fd, peer, peer_len) != MHD_YES) {
        pb_log_warning("cannot serve a connection on %s: %s", h->listener->address,
                       strerror(errno));
        /* Closed by libmicrohttpd; counted only once it started. */
        if (!h->added)
            pb_shared_release_connection(h->server->shared, h->server->slot);
    }
    drive(h);
}

size_t pb_http_idle(const pb_http *h)
{
    size_t idle = 0;
    for (; h != NULL; h = h->older)
        idle += h->n_idle;
    return idle;
}

void pb_http_close_idle(pb_http *h)
{
    for (; h != NULL; h = h->older) {
        if (h->n_idle == 0)
            continue;
        for (http_conn *c = h->conns; c != NULL; c = c->next)
            if (c->request == NULL)
                end_connection(c);
        drive(h);
    }
}

void pb_http_free(pb_http *h)
{
    while (h != NULL) {
        pb_http *older = h->older;
        struct ev_loop *loop = h->server->loop;
        ev_ref(loop);
        ev_ref(loop);
        ev_io_stop(loop, &h->events);
        ev_timer_stop(loop, &h->sweep);
        ev_timer_stop(loop, &h->timeout);
        /* libmicrohttpd closes only connections that are not suspended. */
        for (http_conn *c = h->conns; c != NULL; c = c->next)
            if (c->request != NULL && c->request->reply != NULL && !c->request->answered)
                MHD_resume_connection(c->request->mhd);
        MHD_stop_daemon(h->mhd);
        health_free(h);
        tls_free(&h->tls);
        free(h);
        h = older;
    }
}

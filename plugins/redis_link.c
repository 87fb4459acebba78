/*
 * redis_link.c - a command connection and a pattern-subscribed connection
 * to one Redis server on the worker's libev loop (hiredis' adapter), with
 * reconnection, back-off and the log lines and metric of an outage; and
 * the reading and lookup of "redis://HOST:PORT".
 */
#include "redis_link.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ev.h>
#include <hiredis/adapters/libev.h>
#include <hiredis/hiredis.h>

/* Reconnecting waits this long after the first failure, twice as long
 * after each further one, and never longer than the maximum. */
#define BACKOFF_INITIAL 0.1
#define BACKOFF_MAX 5.0
/* hiredis has no timeout for an asynchronous connect: a server that drops
 * the SYN would hold an attempt for minutes, and a stopped one, which the
 * kernel still lets us connect to, for ever. An attempt lasts until the
 * first answer (PING's, PSUBSCRIBE's). */
#define CONNECT_TIMEOUT 5.0
/* Nor for a reply: a server that stops answering (stopped, or cut off by
 * the network with our data unacknowledged, where keepalive never fires)
 * would hold every operation in flight for as long. */
#define REPLY_TIMEOUT 10.0

/* --- Urls ----------------------------------------------------------------- */

static int bad_url(const char *url, char *error, size_t error_size)
{
    snprintf(error, error_size,
             "\"%s\" is not a Redis url (expected \"redis://HOST:PORT\", "
             "HOST an IP address or a hostname)", url);
    return -1;
}

static int hostname_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

int redis_address_parse(const char *url, redis_address *address,
                        char *error, size_t error_size)
{
    static const char scheme[] = "redis://";
    const char *p = url, *host, *host_end;

    if (strncmp(p, scheme, strlen(scheme)) != 0)
        return bad_url(url, error, error_size);
    p += strlen(scheme);
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL)
            return bad_url(url, error, error_size);
        p = host_end + 1;
    } else {
        host = p;
        while (hostname_char(*p))
            p++;
        host_end = p;
    }
    size_t host_length = (size_t)(host_end - host);
    if (host_length == 0 || host_length >= sizeof address->host)
        return bad_url(url, error, error_size);
    memcpy(address->host, host, host_length);
    address->host[host_length] = '\0';
    if (host[-1] == '[') {
        struct in6_addr ignored;
        if (inet_pton(AF_INET6, address->host, &ignored) != 1)
            return bad_url(url, error, error_size);
    }

    address->port = 6379;
    if (*p == ':') {
        long port = 0;
        int digits = 0;
        for (p++; isdigit((unsigned char)*p) && digits < 6; p++, digits++)
            port = port * 10 + (*p - '0');
        if (digits == 0 || port < 1 || port > 65535)
            return bad_url(url, error, error_size);
        address->port = (int)port;
    }
    if (*p != '\0')
        return bad_url(url, error, error_size);

    int ipv6 = strchr(address->host, ':') != NULL;
    snprintf(address->url, sizeof address->url, "redis://%s%s%s:%d",
             ipv6 ? "[" : "", address->host, ipv6 ? "]" : "", address->port);
    return 0;
}

int redis_address_resolve(redis_address *address, char *error, size_t error_size)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST };
    struct addrinfo *found = NULL;
    int rc = getaddrinfo(address->host, NULL, &hints, &found);
    if (rc != 0) {
        hints.ai_flags = AI_ADDRCONFIG;
        rc = getaddrinfo(address->host, NULL, &hints, &found);
    }
    if (rc == 0)
        rc = getnameinfo(found->ai_addr, found->ai_addrlen, address->connect_to,
                         sizeof address->connect_to, NULL, 0, NI_NUMERICHOST);
    if (found != NULL)
        freeaddrinfo(found);
    if (rc != 0) {
        snprintf(error, error_size, "%s: cannot resolve %s: %s", address->url,
                 address->host, gai_strerror(rc));
        return -1;
    }
    return 0;
}

/* --- Connections ---------------------------------------------------------- */

typedef enum conn_state {
    CONN_DOWN,          /* waiting out the back-off */
    CONN_CONNECTING,    /* connecting, then waiting for PING's or
                         * PSUBSCRIBE's answer */
    CONN_UP
} conn_state;

typedef struct redis_conn {
    redis_link *link;
    int subscriber;                 /* the pattern-subscribed one */
    redisAsyncContext *context;     /* NULL while down */
    conn_state state;
    double backoff;                 /* the wait before the next attempt */
    ev_timer retry;
    ev_timer connect_timeout;
} redis_conn;

struct redis_link {
    const pb_host *host;
    pb_instance *instance;
    struct ev_loop *loop;
    char *user;
    redis_address address;
    char *pattern;
    redis_link_message *on_message;
    void *arg;
    pb_metric *reconnects;
    int ever_ready;     /* a first connection is logged as one, not a return */
    int outage;         /* its start is logged, its end not yet */
    redis_conn commands;
    redis_conn subscriptions;
    size_t in_flight;   /* commands sent and not yet answered */
    ev_timer stalled;   /* runs while some are, restarted by each reply */
};

/* A command in flight: the caller's callback, behind the link's own. */
typedef struct command {
    redis_link *link;
    redisCallbackFn *reply_fn;
    void *privdata;
} command;

static void conn_connect(redis_conn *conn);

static void count_reconnect(redis_link *link)
{
    const pb_host *host = link->host;
    if (link->reconnects != NULL && PB_HOST_HAS(host, metric_add)
        && host->metric_add != NULL)
        host->metric_add(link->reconnects, 1);
}

static void link_check_ready(redis_link *link)
{
    if (!redis_link_ready(link))
        return;
    if (link->outage && link->ever_ready) {
        link->host->log(link->instance, PB_LOG_NOTICE, "%s %s is back",
                        link->user, link->address.url);
        count_reconnect(link);
    } else if (link->outage) {
        link->host->log(link->instance, PB_LOG_NOTICE, "%s %s connected",
                        link->user, link->address.url);
    } else {
        link->host->log(link->instance, PB_LOG_INFO, "%s %s connected",
                        link->user, link->address.url);
    }
    link->outage = 0;
    link->ever_ready = 1;
    link->commands.backoff = BACKOFF_INITIAL;
    link->subscriptions.backoff = BACKOFF_INITIAL;
}

static void conn_up(redis_conn *conn)
{
    conn->state = CONN_UP;
    ev_timer_stop(conn->link->loop, &conn->connect_timeout);
    link_check_ready(conn->link);
}

/* The connection is gone (its context already freed or being freed by
 * hiredis): log the outage if it is news, and try again later. */
static void conn_failed(redis_conn *conn, const char *reason)
{
    redis_link *link = conn->link;
    conn->context = NULL;
    conn->state = CONN_DOWN;
    ev_timer_stop(link->loop, &conn->connect_timeout);
    if (!link->outage) {
        link->outage = 1;
        link->host->log(link->instance, PB_LOG_WARNING, "%s %s %s: %s; retrying",
                        link->user, link->address.url,
                        link->ever_ready ? "lost" : "unreachable", reason);
    } else {
        link->host->log(link->instance, PB_LOG_DEBUG, "%s %s: %s; retrying in %.1f s",
                        link->user, link->address.url, reason, conn->backoff);
    }
    ev_timer_set(&conn->retry, conn->backoff, 0.0);
    ev_timer_start(link->loop, &conn->retry);
    conn->backoff *= 2;
    if (conn->backoff > BACKOFF_MAX)
        conn->backoff = BACKOFF_MAX;
}

/* Frees a context of ours outside hiredis' own teardown: detached first,
 * so that the callbacks hiredis runs while freeing it see it is no longer
 * the connection's. Inside a hiredis callback the free happens when the
 * callback returns. */
static void conn_drop(redis_conn *conn)
{
    redisAsyncContext *context = conn->context;
    conn->context = NULL;
    if (context != NULL)
        redisAsyncFree(context);
}

static void on_connect(const redisAsyncContext *context, int status)
{
    redis_conn *conn = context->data;
    if (conn == NULL || conn->context != context)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context once this returns. */
        conn_failed(conn, context->errstr);
        return;
    }
    /* A peer that vanishes without a FIN is noticed by keepalive. */
    redisEnableKeepAlive(&conn->context->c);
}

static void on_disconnect(const redisAsyncContext *context, int status)
{
    (void)status;
    redis_conn *conn = context->data;
    if (conn == NULL || conn->context != context)
        return;
    conn_failed(conn, context->errstr[0] != '\0' ? context->errstr
                                                  : "connection closed");
}

/* An error where the first reply was expected: Redis is there but not
 * serving (still loading its data, say), which is retried like an outage. */
static void refused(redis_conn *conn, const char *what, const char *error)
{
    char reason[256];
    snprintf(reason, sizeof reason, "%s refused: %s", what, error);
    conn_drop(conn);
    conn_failed(conn, reason);
}

/* The command connection is up once Redis answers, not once TCP connects:
 * a stopped server still accepts connections. */
static void on_ping(redisAsyncContext *context, void *reply_data, void *privdata)
{
    redis_conn *conn = privdata;
    const redisReply *reply = reply_data;
    if (reply == NULL || conn->context != context)
        return;
    if (reply->type == REDIS_REPLY_ERROR)
        refused(conn, "PING", reply->str);
    else
        conn_up(conn);
}

static int reply_is(const redisReply *reply, const char *word)
{
    return reply->type == REDIS_REPLY_STRING && strcmp(reply->str, word) == 0;
}

/* The subscribed connection's replies: the PSUBSCRIBE's confirmation, then
 * one ["pmessage", pattern, channel, message] per publish. */
static void on_subscription(redisAsyncContext *context, void *reply_data,
                            void *privdata)
{
    redis_conn *conn = privdata;
    const redisReply *reply = reply_data;
    if (reply == NULL || conn->context != context)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        refused(conn, "PSUBSCRIBE", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    if (reply_is(reply->element[0], "psubscribe")) {
        conn_up(conn);
    } else if (reply_is(reply->element[0], "pmessage") && reply->elements == 4
               && reply->element[2]->type == REDIS_REPLY_STRING
               && reply->element[3]->type == REDIS_REPLY_STRING) {
        redis_link *link = conn->link;
        link->on_message(link->arg, reply->element[2]->str,
                         reply->element[2]->len, reply->element[3]->str,
                         reply->element[3]->len);
    }
}

static void on_retry(struct ev_loop *loop, ev_timer *timer, int revents)
{
    (void)loop;
    (void)revents;
    conn_connect(timer->data);
}

static void on_connect_timeout(struct ev_loop *loop, ev_timer *timer, int revents)
{
    (void)loop;
    (void)revents;
    redis_conn *conn = timer->data;
    conn_drop(conn);
    conn_failed(conn, "connect timed out");
}

static void conn_connect(redis_conn *conn)
{
    redis_link *link = conn->link;
    redisAsyncContext *context = redisAsyncConnect(link->address.connect_to,
                                                   link->address.port);
    if (context == NULL) {
        conn_failed(conn, "out of memory");
        return;
    }
    if (context->err != 0) {
        char reason[128];
        snprintf(reason, sizeof reason, "%s", context->errstr);
        redisAsyncFree(context);
        conn_failed(conn, reason);
        return;
    }
    context->data = conn;
    if (redisLibevAttach(link->loop, context) != REDIS_OK) {
        redisAsyncFree(context);
        conn_failed(conn, "cannot watch the connection");
        return;
    }
    conn->context = context;
    conn->state = CONN_CONNECTING;
    /* The connect callback is armed by the first write event, so the loop
     * must be attached before it is set. */
    redisAsyncSetConnectCallback(context, on_connect);
    redisAsyncSetDisconnectCallback(context, on_disconnect);
    /* Sent once connected; its answer makes the connection up. */
    const char *argv[] = { conn->subscriber ? "PSUBSCRIBE" : "PING", link->pattern };
    if (redisAsyncCommandArgv(context, conn->subscriber ? on_subscription : on_ping,
                              conn, conn->subscriber ? 2 : 1, argv, NULL) != REDIS_OK) {
        conn_drop(conn);
        conn_failed(conn, "out of memory");
        return;
    }
    ev_timer_set(&conn->connect_timeout, CONNECT_TIMEOUT, 0.0);
    ev_timer_start(link->loop, &conn->connect_timeout);
}

static void conn_init(redis_conn *conn, redis_link *link, int subscriber)
{
    conn->link = link;
    conn->subscriber = subscriber;
    conn->state = CONN_DOWN;
    conn->backoff = BACKOFF_INITIAL;
    ev_timer_init(&conn->retry, on_retry, 0.0, 0.0);
    conn->retry.data = conn;
    ev_timer_init(&conn->connect_timeout, on_connect_timeout, 0.0, 0.0);
    conn->connect_timeout.data = conn;
}

/* Redis has not answered for REPLY_TIMEOUT with commands in flight: the
 * connection is given up like a lost one, which fails them. */
static void on_stalled(struct ev_loop *loop, ev_timer *timer, int revents)
{
    (void)revents;
    redis_link *link = timer->data;
    redis_conn *conn = &link->commands;
    ev_timer_stop(loop, timer);
    char reason[64];
    snprintf(reason, sizeof reason, "no reply for %.0f s", REPLY_TIMEOUT);
    if (conn->context != NULL) {
        /* What the commands' callbacks read as the reason. */
        conn->context->err = REDIS_ERR_OTHER;
        snprintf(conn->context->c.errstr, sizeof conn->context->c.errstr, "%s", reason);
    }
    conn_drop(conn);
    conn_failed(conn, reason);
}

static void conn_close(redis_conn *conn)
{
    ev_timer_stop(conn->link->loop, &conn->retry);
    ev_timer_stop(conn->link->loop, &conn->connect_timeout);
    conn->state = CONN_DOWN;
    conn_drop(conn);
}

/* --- The link --------------------------------------------------------------- */

static void link_free(redis_link *link)
{
    free(link->user);
    free(link->pattern);
    free(link);
}

redis_link *redis_link_open(const redis_link_config *config)
{
    const pb_host *host = config->host;
    redis_link *link = calloc(1, sizeof *link);
    if (link == NULL) {
        host->log(config->instance, PB_LOG_ERROR, "%s: out of memory", config->user);
        return NULL;
    }
    link->host = host;
    link->instance = config->instance;
    link->loop = host->loop();
    link->user = strdup(config->user);
    link->address = *config->address;
    link->pattern = strdup(config->pattern);
    link->on_message = config->on_message;
    link->arg = config->arg;
    if (link->user == NULL || link->pattern == NULL || link->loop == NULL) {
        host->log(config->instance, PB_LOG_ERROR, "%s: %s", config->user,
                  link->loop == NULL ? "no event loop" : "out of memory");
        link_free(link);
        return NULL;
    }
    if (config->reconnect_metric != NULL && PB_HOST_HAS(host, metric)
        && host->metric != NULL)
        link->reconnects = host->metric(link->instance, config->reconnect_metric,
                                        NULL, PB_METRIC_COUNTER);
    conn_init(&link->commands, link, 0);
    conn_init(&link->subscriptions, link, 1);
    ev_timer_init(&link->stalled, on_stalled, 0.0, REPLY_TIMEOUT);
    link->stalled.data = link;
    conn_connect(&link->commands);
    conn_connect(&link->subscriptions);
    return link;
}

int redis_link_ready(const redis_link *link)
{
    return link != NULL && link->commands.state == CONN_UP
           && link->subscriptions.state == CONN_UP;
}

void redis_link_not_connected(const redis_link *link, char *error,
                              size_t error_size)
{
    snprintf(error, error_size, "%s %s is not connected", link->user,
             link->address.url);
}

const char *redis_link_url(const redis_link *link)
{
    return link->address.url;
}

static void on_command_reply(redisAsyncContext *context, void *reply,
                             void *privdata)
{
    command *c = privdata;
    redis_link *link = c->link;
    if (--link->in_flight > 0)
        ev_timer_again(link->loop, &link->stalled);
    else
        ev_timer_stop(link->loop, &link->stalled);
    c->reply_fn(context, reply, c->privdata);
    free(c);
}

int redis_link_command(redis_link *link, redisCallbackFn *reply_fn,
                       void *privdata, int argc, const char **argv,
                       const size_t *argv_lengths)
{
    if (!redis_link_ready(link) || link->commands.context == NULL)
        return REDIS_ERR;
    command *c = malloc(sizeof *c);
    if (c == NULL)
        return REDIS_ERR;
    *c = (command){ link, reply_fn, privdata };
    if (redisAsyncCommandArgv(link->commands.context, on_command_reply, c,
                              argc, argv, argv_lengths) != REDIS_OK) {
        free(c);
        return REDIS_ERR;
    }
    if (link->in_flight++ == 0)
        ev_timer_again(link->loop, &link->stalled);
    return REDIS_OK;
}

void redis_link_close(redis_link *link)
{
    if (link == NULL)
        return;
    conn_close(&link->commands);
    conn_close(&link->subscriptions);
    ev_timer_stop(link->loop, &link->stalled);
    link_free(link);
}

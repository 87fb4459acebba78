/*
 * redis_link.h - the Redis connection that the pubsub backplane and the
 * queue's Redis backend share the code of: one connection for commands and
 * one subscribed to a channel pattern, both on the worker's libev loop,
 * each reconnecting with back-off when Redis goes away.
 *
 * An outage is logged once at warning when it starts and once at notice
 * when both connections are back, and each return is counted in a metric
 * where the daemon keeps metrics. Everything here runs on the loop thread.
 */
#ifndef PLUGBOARD_REDIS_LINK_H
#define PLUGBOARD_REDIS_LINK_H

#include <stddef.h>

#include <hiredis/async.h>
#include <plugboard/plugin.h>

/* Long enough for any hostname (253 bytes) or IPv6 literal. */
#define REDIS_HOST_MAX 256
/* "redis://" + "[" host "]" + ":65535". */
#define REDIS_URL_MAX (REDIS_HOST_MAX + 24)

/* Where a Redis server is, as a url names it. */
typedef struct redis_address {
    char host[REDIS_HOST_MAX];      /* as written, without IPv6 brackets */
    int port;
    char url[REDIS_URL_MAX];        /* "redis://HOST:PORT", for messages */
    char connect_to[REDIS_HOST_MAX];    /* host as an IP literal, once resolved */
} redis_address;

/*
 * Reads "redis://HOST[:PORT]": HOST an IPv4 literal, an IPv6 literal in
 * brackets or a hostname, PORT 1-65535 (6379 when left out). 0, or -1
 * with why in `error` (which names the value).
 */
int redis_address_parse(const char *url, redis_address *address,
                        char *error, size_t error_size);

/*
 * Looks HOST up (a blocking lookup, made from create(): hiredis would look
 * a hostname up on every connect, blocking the loop during an outage) and
 * keeps its first address as an IP literal. 0, or -1 with why in `error`.
 * An IP literal is taken as it is.
 */
int redis_address_resolve(redis_address *address, char *error, size_t error_size);

typedef struct redis_link redis_link;

/* A message published to a channel that matches the link's pattern. */
typedef void redis_link_message(void *arg, const char *channel,
                                size_t channel_length, const char *message,
                                size_t message_length);

typedef struct redis_link_config {
    const pb_host *host;
    pb_instance *instance;
    const char *user;               /* what the log calls it: "backplane" */
    const redis_address *address;   /* resolved */
    const char *pattern;            /* PSUBSCRIBEd: "plugboard:*" */
    redis_link_message *on_message;
    void *arg;
    const char *reconnect_metric;   /* counter of returns after an outage */
} redis_link_config;

/*
 * Starts connecting on host->loop(); Redis not being there yet is an
 * outage like any other, retried in the background. NULL (logged) when
 * memory runs out.
 */
redis_link *redis_link_open(const redis_link_config *config);

/* Whether both connections are up and the pattern is subscribed. */
int redis_link_ready(const redis_link *link);

/* "USER redis://HOST:PORT is not connected", for a caller to pass on. */
void redis_link_not_connected(const redis_link *link, char *error,
                              size_t error_size);

/* The url in messages: "redis://HOST:PORT". */
const char *redis_link_url(const redis_link *link);

/*
 * Sends a command on the command connection. `reply_fn` is called once
 * with the reply, or with a NULL reply when the connection is lost or the
 * link closed first; a server that leaves commands unanswered for 10 s
 * counts as lost. REDIS_ERR (and `reply_fn` is not called) when the link
 * is not ready.
 */
int redis_link_command(redis_link *link, redisCallbackFn *reply_fn,
                       void *privdata, int argc, const char **argv,
                       const size_t *argv_lengths);

/* Disconnects (commands in flight get their NULL reply now), stops every
 * watcher and frees the link. NULL is ignored. */
void redis_link_close(redis_link *link);

#endif

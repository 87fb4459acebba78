/*
 * backplane.h - publishes through a Redis server, so that every daemon
 * sharing it delivers to its own subscribers. One connection publishes,
 * one subscribes, both on the worker's libev loop (hiredis' adapter);
 * either one reconnects with back-off when Redis goes away.
 *
 * The subscribing connection receives every publish of every daemon
 * (this one's included) and hands it to `deliver`, which serves the
 * subscribers of this worker only: with a backplane, the Redis server,
 * not broadcasts between workers, reaches the other workers.
 */
#ifndef PUBSUB_BACKPLANE_H
#define PUBSUB_BACKPLANE_H

#include <stddef.h>

#include <plugboard/plugin.h>

typedef struct backplane backplane;

/* Called on the loop thread for each message of `topic` published
 * anywhere; `message` is the JSON text as published. */
typedef void backplane_deliver(void *arg, const char *topic,
                               size_t topic_length, const char *message,
                               size_t message_length);

/*
 * From create(): checks `url` ("redis://HOST:PORT", PORT defaults to 6379)
 * and keeps it. NULL after host->settings_error() when it is not one.
 */
backplane *backplane_configure(const pb_host *host, pb_instance *instance,
                               const pb_json *url);

/* From worker_start(), on the loop thread: connects (and keeps trying in
 * the background when Redis is not there yet). PB_OK, or PB_ERROR when out
 * of memory. */
int backplane_open(backplane *bp, backplane_deliver *deliver, void *arg);

/* Whether publishing works now (both connections up and subscribed). */
int backplane_ready(const backplane *bp);

/*
 * Publishes `message` (JSON text) to `topic`; loop thread. PB_OK when
 * sent to Redis; PB_ERROR with why in `error` when Redis is not reachable
 * now (the publisher gets that as a plugin_failed error).
 */
int backplane_publish(backplane *bp, const char *topic, size_t topic_length,
                      const char *message, size_t message_length,
                      char *error, size_t error_size);

/* From worker_stop(): disconnects and stops every watcher and timer. */
void backplane_close(backplane *bp);
/* From destroy(). */
void backplane_free(backplane *bp);

#endif

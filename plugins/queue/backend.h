/*
 * backend.h - what the queue plugin asks of the store that keeps its
 * messages: SQLite on this machine (sqlite.c) or Redis Streams shared by
 * several daemons (redis.c). queue.c speaks the protocol, holds the waiting
 * dequeues and their timers; a backend only stores, leases and acknowledges.
 *
 * Every operation is asynchronous: it returns at once, and `done` is later
 * called exactly once, on the worker's loop thread, with the outcome
 * (also when the operation fails, and for operations still pending when
 * the backend is closed: then with QUEUE_FAILED). Operations on one queue
 * complete in the order they were started.
 */
#ifndef QUEUE_BACKEND_H
#define QUEUE_BACKEND_H

#include <stddef.h>

#include <plugboard/plugin.h>

#define QUEUE_ID_MAX 64

typedef enum queue_status {
    QUEUE_OK = 0,       /* done: enqueued, a message, acked, a depth */
    QUEUE_EMPTY,        /* dequeue: nothing ready now */
    QUEUE_UNKNOWN,      /* ack: no such id, or its lease has expired */
    QUEUE_FAILED        /* the store failed; `error` says why */
} queue_status;

typedef struct queue_result {
    queue_status status;
    const char *error;              /* QUEUE_FAILED: for the client */
    char id[QUEUE_ID_MAX];          /* enqueue, dequeue: the message's id */
    const char *message;            /* dequeue: the message as JSON text, */
    size_t message_length;          /* valid during the callback only */
    long long deliveries;           /* dequeue: 1 the first time */
    long long ready, leased;        /* depth; also after enqueue, dequeue
                                     * and ack when the backend knows them
                                     * cheaply, else -1 */
    double next_expiry;             /* dequeue QUEUE_EMPTY: seconds until
                                     * the earliest lease of that queue
                                     * expires, or -1 when none is leased */
} queue_result;

typedef void queue_done(void *arg, const queue_result *result);

/* Told that messages may have become ready in `queue` from outside this
 * copy (another daemon sharing the store), so that waiters try again. */
typedef void queue_wake(void *arg, const char *queue);

typedef struct queue_backend queue_backend;

typedef struct queue_backend_ops {
    const char *name;               /* "sqlite", "redis" */

    /*
     * From create(): checks the backend's settings (every member of
     * `settings` but "backend", which queue.c has read) and keeps what
     * open() needs. Settings it does not know are an error
     * (host->settings_error, then NULL). Opens nothing yet.
     */
    queue_backend *(*configure)(const pb_host *host, pb_instance *instance,
                                const pb_json *settings);

    /* From worker_start(), on the loop thread: connects, opens the store,
     * starts threads. PB_OK or PB_ERROR (logged). */
    int (*open)(queue_backend *backend, queue_wake *wake, void *arg);

    /* `message` is the JSON text of the message (copied). */
    void (*enqueue)(queue_backend *backend, const char *queue,
                    const char *message, size_t length,
                    queue_done *done, void *arg);
    /* Leases the oldest ready message for `lease` seconds. */
    void (*dequeue)(queue_backend *backend, const char *queue, double lease,
                    queue_done *done, void *arg);
    void (*ack)(queue_backend *backend, const char *queue, const char *id,
                queue_done *done, void *arg);
    void (*depth)(queue_backend *backend, const char *queue,
                  queue_done *done, void *arg);

    /* From worker_stop(): fails what is pending, stops threads, closes. */
    void (*close)(queue_backend *backend);
    /* From destroy(): frees what configure() kept. */
    void (*free)(queue_backend *backend);
} queue_backend_ops;

extern const queue_backend_ops queue_sqlite_ops;
extern const queue_backend_ops queue_redis_ops;

#endif

/*
 * queue - durable work queues with at-least-once delivery: enqueue, dequeue
 * under a lease, ack, depth. This file speaks the protocol and keeps the
 * dequeues that wait; a backend (backend.h) stores, leases and acknowledges.
 *
 *   {"action": "enqueue", "queue": "jobs", "message": <any JSON>}
 *       -> {"result": "enqueued", "id": "17"}, once the message is durable
 *   {"action": "dequeue", "queue": "jobs", "wait": 5.0, "lease": 30.0}
 *       -> {"result": "message", "id": "17", "message": <JSON>, "deliveries": 1}
 *          or, once `wait` seconds (default 0) passed with nothing ready,
 *          {"result": "empty"}
 *   {"action": "ack", "queue": "jobs", "id": "17"}   -> {"result": "acked"}
 *   {"action": "depth", "queue": "jobs"}  -> {"result": "depth", "ready": N, "leased": M}
 *
 *   settings = { backend = "sqlite"; path = "/var/lib/plugboard/queue.db"; };
 *
 * Why it is built this way:
 *
 * - Every operation is deferred (PB_DEFER) and answered from the backend's
 *   `done` on the loop thread, so no request ever blocks the worker.
 * - A dequeue that finds nothing stays in a list of waiters, in arrival
 *   order, with a timer for its deadline. It tries again when a message may
 *   have become ready: an enqueue finished by this copy, a broadcast from
 *   the copy of another worker (each enqueue sends the queue's name), the
 *   backend's own wake-up, or the moment the earliest lease of the queue
 *   runs out. One such event wakes one waiter, the first of that queue;
 *   a waiter that gets a message wakes the next, since more may be ready.
 *   So waiters are served first come, first served, and a hundred idle
 *   consumers do not all hit the store for every message.
 * - The message is kept as the JSON text json_encode wrote, and put back
 *   verbatim into the reply, which is therefore written here rather than
 *   parsed and encoded again.
 */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plugboard/plugin.h>

#include "backend.h"

#define QUEUE_NAME_MAX 255
#define DEFAULT_LEASE 30.0
/* Longer than any client would sensibly wait or work on one message. */
#define MAX_WAIT 3600.0
#define MAX_LEASE 86400.0
/* Per-queue level metrics kept at most: queue names are the clients'. */
#define LEVELS_MAX 1024
/* Timers may fire a hair early against the wall clock leases are kept in. */
#define SLACK 0.001

typedef struct queue_plugin queue_plugin;

/* A dequeue in progress: with the backend, or parked until woken. */
typedef struct waiter {
    ev_timer timer;             /* first: the callback gets it back */
    queue_plugin *plugin;
    pb_reply *reply;
    char *queue;
    double lease;
    ev_tstamp deadline;         /* on the loop's clock */
    int attempting;             /* a dequeue of it is with the backend */
    int kicked;                 /* woken meanwhile: empty is worth a retry */
    struct waiter *prev, *next;
} waiter;

/* An enqueue, ack or depth with the backend. */
typedef struct pending_op {
    queue_plugin *plugin;
    pb_reply *reply;
    char *queue;
} pending_op;

/* The shared levels of one queue, as last seen by this copy. */
typedef struct levels {
    char *queue;
    pb_metric *ready, *leased;
    struct levels *next;
} levels;

struct queue_plugin {
    const pb_host *host;
    pb_instance *instance;
    const queue_backend_ops *ops;
    queue_backend *backend;
    int serving;                /* between worker_start and worker_stop */
    int stopping;
    waiter *first, *last;       /* every dequeue in progress, oldest first */
    pb_metric *enqueued, *delivered, *acked, *redelivered;
    levels *levels;
    size_t n_levels;
};

/* --- Metrics ------------------------------------------------------------ */

static int has_metrics(const pb_host *host)
{
    return PB_HOST_HAS(host, metric_set) && host->metric != NULL
        && host->metric_add != NULL && host->metric_set != NULL;
}

static pb_metric *counter(queue_plugin *q, const char *name)
{
    if (!has_metrics(q->host))
        return NULL;
    return q->host->metric(q->instance, name, NULL, PB_METRIC_COUNTER);
}

static void count(queue_plugin *q, pb_metric *metric)
{
    if (metric != NULL)
        q->host->metric_add(metric, 1);
}

/* Publishes the levels a backend reported with an operation's result. */
static void note_levels(queue_plugin *q, const char *queue,
                        const queue_result *result)
{
    const pb_host *host = q->host;
    if (!has_metrics(host) || (result->ready < 0 && result->leased < 0))
        return;
    levels *l = q->levels;
    while (l != NULL && strcmp(l->queue, queue) != 0)
        l = l->next;
    if (l == NULL) {
        if (q->n_levels >= LEVELS_MAX || (l = calloc(1, sizeof *l)) == NULL)
            return;
        if ((l->queue = strdup(queue)) == NULL) {
            free(l);
            return;
        }
        l->ready = host->metric(q->instance, "ready", queue, PB_METRIC_SHARED);
        l->leased = host->metric(q->instance, "leased", queue, PB_METRIC_SHARED);
        l->next = q->levels;
        q->levels = l;
        q->n_levels++;
    }
    if (result->ready >= 0 && l->ready != NULL)
        host->metric_set(l->ready, result->ready);
    if (result->leased >= 0 && l->leased != NULL)
        host->metric_set(l->leased, result->leased);
}

/* --- Replies ------------------------------------------------------------- */

static void answer_result(queue_plugin *q, pb_reply *reply, const char *result)
{
    const pb_host *host = q->host;
    pb_json *answer = host->json_new_object();
    if (host->json_set(answer, "result",
                       host->json_new_string(result, strlen(result))) != PB_OK) {
        host->json_free(answer);
        host->reply_error(reply, "out of memory");
        return;
    }
    host->reply_json(reply, answer);
}

/* {"result": "message", "id": ID, "message": MESSAGE, "deliveries": N},
 * with the stored message text as it is. */
static void answer_message(queue_plugin *q, pb_reply *reply,
                           const queue_result *result)
{
    static const char head[] = "{\"result\": \"message\", \"id\": ";
    static const char middle[] = ", \"message\": ";
    const pb_host *host = q->host;
    pb_json *id = host->json_new_string(result->id, strlen(result->id));
    size_t id_length = 0;
    char *id_text = id != NULL ? host->json_encode(id, &id_length) : NULL;
    host->json_free(id);
    char tail[64];
    int tail_length = snprintf(tail, sizeof tail, ", \"deliveries\": %lld}",
                               result->deliveries);
    size_t length = sizeof head - 1 + id_length + sizeof middle - 1
        + result->message_length + (size_t)tail_length;
    char *text = id_text != NULL ? malloc(length) : NULL;
    if (text == NULL) {
        free(id_text);
        host->reply_error(reply, "out of memory");
        return;
    }
    char *p = text;
    memcpy(p, head, sizeof head - 1);
    p += sizeof head - 1;
    memcpy(p, id_text, id_length);
    p += id_length;
    memcpy(p, middle, sizeof middle - 1);
    p += sizeof middle - 1;
    memcpy(p, result->message, result->message_length);
    p += result->message_length;
    memcpy(p, tail, (size_t)tail_length);
    host->reply_bytes(reply, "text/json", "utf-8", text, length);
    free(text);
    free(id_text);
}

/* --- Waiting dequeues ------------------------------------------------------ */

static void attempt(waiter *w);

static void forget(waiter *w)
{
    queue_plugin *q = w->plugin;
    ev_timer_stop(q->host->loop(), &w->timer);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        q->first = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        q->last = w->prev;
    free(w->queue);
    free(w);
}

static void answer_empty(waiter *w)
{
    answer_result(w->plugin, w->reply, "empty");
    forget(w);
}

/*
 * A message may have become ready in `queue`: the first waiter of that
 * queue that is not already asking the backend asks; when all are, the
 * first is told to ask again should its answer be empty (the message may
 * have come after the backend looked). Waiters whose client left go.
 */
static void wake_queue(queue_plugin *q, const char *queue)
{
    if (!q->serving || q->stopping)
        return;
    waiter *asking = NULL;
    for (waiter *w = q->first, *next; w != NULL; w = next) {
        next = w->next;
        if (strcmp(w->queue, queue) != 0)
            continue;
        if (w->attempting) {
            if (asking == NULL)
                asking = w;
        } else if (q->host->reply_cancelled(w->reply)) {
            answer_empty(w);
        } else {
            attempt(w);
            return;
        }
    }
    if (asking != NULL)
        asking->kicked = 1;
}

/* Waits until the deadline, or until the earliest lease of the queue ends
 * (`next_expiry` seconds from now, < 0 for none), whichever comes first. */
static void park(waiter *w, double next_expiry)
{
    struct ev_loop *loop = w->plugin->host->loop();
    double delay = w->deadline - ev_now(loop);
    if (next_expiry >= 0 && next_expiry + SLACK < delay)
        delay = next_expiry + SLACK;
    ev_timer_set(&w->timer, delay, 0.0);
    ev_timer_start(loop, &w->timer);
}

static int expired(const waiter *w)
{
    return ev_now(w->plugin->host->loop()) + SLACK >= w->deadline;
}

static void on_timer(struct ev_loop *loop, ev_timer *timer, int revents)
{
    (void)revents;
    waiter *w = (waiter *)timer;
    queue_plugin *q = w->plugin;
    ev_timer_stop(loop, timer);
    if (expired(w)) {
        answer_empty(w);
        return;
    }
    /* A lease ran out: the first waiter of the queue (perhaps this one)
     * tries; this one keeps its deadline meanwhile. */
    park(w, -1);
    wake_queue(q, w->queue);
}

static void dequeued(void *arg, const queue_result *result)
{
    waiter *w = arg;
    queue_plugin *q = w->plugin;
    w->attempting = 0;
    note_levels(q, w->queue, result);
    switch (result->status) {
    case QUEUE_OK: {
        answer_message(q, w->reply, result);
        count(q, q->delivered);
        if (result->deliveries > 1)
            count(q, q->redelivered);
        /* More may be ready: the next waiter of the queue tries. */
        char *queue = w->queue;
        w->queue = NULL;
        forget(w);
        wake_queue(q, queue);
        free(queue);
        return;
    }
    case QUEUE_EMPTY:
        if (q->stopping || expired(w) || q->host->reply_cancelled(w->reply))
            answer_empty(w);
        else if (w->kicked)
            attempt(w);
        else
            park(w, result->next_expiry);
        return;
    default:
        if (q->stopping) {
            answer_empty(w);
            return;
        }
        q->host->reply_error(w->reply, "dequeue failed: %s",
                             result->error != NULL ? result->error : "?");
        forget(w);
        return;
    }
}

/* Asks the backend for a message; `w` may be answered and gone on return. */
static void attempt(waiter *w)
{
    queue_plugin *q = w->plugin;
    ev_timer_stop(q->host->loop(), &w->timer);
    w->attempting = 1;
    w->kicked = 0;
    q->ops->dequeue(q->backend, w->queue, w->lease, dequeued, w);
}

/* A queue's name from a broadcast or the backend: wakes its first waiter. */
static void wake_by_name(queue_plugin *q, const void *name, size_t length)
{
    char queue[QUEUE_NAME_MAX + 1];
    if (length == 0 || length > QUEUE_NAME_MAX)
        return;
    memcpy(queue, name, length);
    queue[length] = '\0';
    wake_queue(q, queue);
}

static void backend_wake(void *arg, const char *queue)
{
    wake_by_name(arg, queue, strlen(queue));
}

static void queue_on_broadcast(void *state, const void *data, size_t length)
{
    wake_by_name(state, data, length);
}

/* --- Enqueue, ack, depth ------------------------------------------------- */

static pending_op *pending_new(queue_plugin *q, pb_reply *reply, const char *queue)
{
    pending_op *op = malloc(sizeof *op);
    if (op == NULL)
        return NULL;
    op->plugin = q;
    op->reply = reply;
    if ((op->queue = strdup(queue)) == NULL) {
        free(op);
        return NULL;
    }
    return op;
}

static void pending_free(pending_op *op)
{
    free(op->queue);
    free(op);
}

/* Wakes the waiters of every worker: this copy's, and through a broadcast
 * the other copies'. */
static void tell_waiters(queue_plugin *q, const char *queue)
{
    const pb_host *host = q->host;
    if (PB_HOST_HAS(host, broadcast) && host->broadcast != NULL
        && host->broadcast(q->instance, queue, strlen(queue)) != PB_OK)
        host->log(q->instance, PB_LOG_WARNING,
                  "cannot tell the other workers about queue %s", queue);
    wake_queue(q, queue);
}

static void enqueued(void *arg, const queue_result *result)
{
    pending_op *op = arg;
    queue_plugin *q = op->plugin;
    const pb_host *host = q->host;
    if (result->status != QUEUE_OK) {
        host->reply_error(op->reply, "enqueue failed: %s",
                          result->error != NULL ? result->error : "?");
        pending_free(op);
        return;
    }
    pb_json *answer = host->json_new_object();
    if (host->json_set(answer, "result", host->json_new_string("enqueued", 8)) != PB_OK
        || host->json_set(answer, "id", host->json_new_string(
                              result->id, strlen(result->id))) != PB_OK) {
        host->json_free(answer);
        host->reply_error(op->reply, "out of memory");
    } else {
        host->reply_json(op->reply, answer);
    }
    count(q, q->enqueued);
    note_levels(q, op->queue, result);
    tell_waiters(q, op->queue);
    pending_free(op);
}

static void acked(void *arg, const queue_result *result)
{
    pending_op *op = arg;
    queue_plugin *q = op->plugin;
    const pb_host *host = q->host;
    switch (result->status) {
    case QUEUE_OK:
        answer_result(q, op->reply, "acked");
        count(q, q->acked);
        note_levels(q, op->queue, result);
        break;
    case QUEUE_UNKNOWN:
        host->reply_error(op->reply, "no message of that id is leased from "
                          "queue %s (unknown id, or its lease expired)",
                          op->queue);
        break;
    default:
        host->reply_error(op->reply, "ack failed: %s",
                          result->error != NULL ? result->error : "?");
        break;
    }
    pending_free(op);
}

static void measured(void *arg, const queue_result *result)
{
    pending_op *op = arg;
    queue_plugin *q = op->plugin;
    const pb_host *host = q->host;
    if (result->status != QUEUE_OK) {
        host->reply_error(op->reply, "depth failed: %s",
                          result->error != NULL ? result->error : "?");
        pending_free(op);
        return;
    }
    note_levels(q, op->queue, result);
    pb_json *answer = host->json_new_object();
    if (host->json_set(answer, "result", host->json_new_string("depth", 5)) != PB_OK
        || host->json_set(answer, "ready",
                          host->json_new_integer(result->ready)) != PB_OK
        || host->json_set(answer, "leased",
                          host->json_new_integer(result->leased)) != PB_OK) {
        host->json_free(answer);
        host->reply_error(op->reply, "out of memory");
    } else {
        host->reply_json(op->reply, answer);
    }
    pending_free(op);
}

/* --- Requests ------------------------------------------------------------- */

typedef enum action { ENQUEUE, DEQUEUE, ACK, DEPTH } action;

/* A request once checked; the pointers are into the request. */
typedef struct checked_request {
    action action;
    const char *queue;
    const pb_json *message;     /* enqueue */
    const char *id;             /* ack */
    double wait, lease;         /* dequeue */
} checked_request;

/*
 * A number of seconds from the request: `fallback` when absent, else NULL
 * with *seconds set, or the complaint when it is not a number from `least`
 * (excluded unless least_included) to `most`.
 */
static const char *read_seconds(const pb_host *host, const pb_json *request,
                                const char *key, double fallback, double least,
                                int least_included, double most, double *seconds)
{
    const pb_json *value = host->json_get(request, key);
    *seconds = fallback;
    if (value == NULL)
        return NULL;
    pb_json_type type = host->json_type(value);
    if (type != PB_JSON_INTEGER && type != PB_JSON_REAL)
        return "is not a number of seconds";
    *seconds = host->json_number(value);
    if (!(*seconds >= least && *seconds <= most)
        || (!least_included && *seconds == least))
        return "is out of range";
    return NULL;
}

/* Reads and checks everything the request's action needs: PB_OK, or
 * PB_ERROR once reply_error said what is wrong. */
static int check_request(const pb_host *host, const pb_json *json,
                         pb_reply *reply, checked_request *r)
{
    if (host->json_type(json) != PB_JSON_OBJECT) {
        host->reply_error(reply, "a queue request is a JSON object "
                          "(content-type text/json)");
        return PB_ERROR;
    }
    const char *name = host->json_string(host->json_get(json, "action"), NULL);
    if (name != NULL && strcmp(name, "enqueue") == 0) {
        r->action = ENQUEUE;
    } else if (name != NULL && strcmp(name, "dequeue") == 0) {
        r->action = DEQUEUE;
    } else if (name != NULL && strcmp(name, "ack") == 0) {
        r->action = ACK;
    } else if (name != NULL && strcmp(name, "depth") == 0) {
        r->action = DEPTH;
    } else {
        host->reply_error(reply, "\"action\" must be enqueue, dequeue, ack or "
                          "depth");
        return PB_ERROR;
    }
    size_t length;
    r->queue = host->json_string(host->json_get(json, "queue"), &length);
    if (r->queue == NULL || length == 0 || length > QUEUE_NAME_MAX
        || strlen(r->queue) != length) {
        host->reply_error(reply, "\"queue\" must be a queue's name (a string "
                          "of 1 to %d bytes, without NUL)", QUEUE_NAME_MAX);
        return PB_ERROR;
    }
    const char *why;
    switch (r->action) {
    case ENQUEUE:
        r->message = host->json_get(json, "message");
        if (r->message == NULL) {
            host->reply_error(reply, "enqueue needs a \"message\"");
            return PB_ERROR;
        }
        break;
    case DEQUEUE:
        why = read_seconds(host, json, "wait", 0.0, 0.0, 1, MAX_WAIT, &r->wait);
        if (why != NULL) {
            host->reply_error(reply, "\"wait\" %s (0 to %g)", why, MAX_WAIT);
            return PB_ERROR;
        }
        why = read_seconds(host, json, "lease", DEFAULT_LEASE, 0.0, 0,
                           MAX_LEASE, &r->lease);
        if (why != NULL) {
            host->reply_error(reply, "\"lease\" %s (more than 0, at most %g)",
                              why, MAX_LEASE);
            return PB_ERROR;
        }
        break;
    case ACK:
        r->id = host->json_string(host->json_get(json, "id"), &length);
        if (r->id == NULL || length == 0 || length >= QUEUE_ID_MAX
            || strlen(r->id) != length) {
            host->reply_error(reply, "ack needs the \"id\" a dequeue gave");
            return PB_ERROR;
        }
        break;
    case DEPTH:
        break;
    }
    return PB_OK;
}

static int start_dequeue(queue_plugin *q, const checked_request *r,
                         pb_reply *reply)
{
    waiter *w = calloc(1, sizeof *w);
    if (w == NULL || (w->queue = strdup(r->queue)) == NULL) {
        free(w);
        q->host->reply_error(reply, "out of memory");
        return PB_ERROR;
    }
    struct ev_loop *loop = q->host->loop();
    w->plugin = q;
    w->reply = reply;
    w->lease = r->lease;
    w->deadline = ev_now(loop) + r->wait;
    ev_timer_init(&w->timer, on_timer, 0.0, 0.0);
    w->prev = q->last;
    if (q->last != NULL)
        q->last->next = w;
    else
        q->first = w;
    q->last = w;
    attempt(w);
    return PB_DEFER;
}

static int queue_handle(void *state, const pb_request *request, pb_reply *reply)
{
    queue_plugin *q = state;
    const pb_host *host = q->host;
    checked_request r;
    if (check_request(host, request->json, reply, &r) != PB_OK)
        return PB_ERROR;
    if (!q->serving || q->stopping) {
        host->reply_error(reply, "the queue is not serving");
        return PB_ERROR;
    }
    if (r.action == DEQUEUE)
        return start_dequeue(q, &r, reply);

    size_t length = 0;
    char *message = NULL;
    if (r.action == ENQUEUE
        && (message = host->json_encode(r.message, &length)) == NULL) {
        host->reply_error(reply, "cannot encode the message");
        return PB_ERROR;
    }
    pending_op *op = pending_new(q, reply, r.queue);
    if (op == NULL) {
        free(message);
        host->reply_error(reply, "out of memory");
        return PB_ERROR;
    }
    switch (r.action) {
    case ENQUEUE:
        q->ops->enqueue(q->backend, r.queue, message, length, enqueued, op);
        free(message);
        break;
    case ACK:
        q->ops->ack(q->backend, r.queue, r.id, acked, op);
        break;
    default:
        q->ops->depth(q->backend, r.queue, measured, op);
        break;
    }
    return PB_DEFER;
}

/* --- Life cycle ------------------------------------------------------------ */

static int queue_create(const pb_host *host, pb_instance *instance,
                        const pb_json *settings, void **state)
{
    if (!PB_HOST_HAS(host, client_close)) {
        host->settings_error(instance, NULL, "this daemon is too old for the "
                             "queue plugin (it needs deferred replies)");
        return PB_ERROR;
    }
    const queue_backend_ops *ops = &queue_sqlite_ops;
    const pb_json *choice = host->json_get(settings, "backend");
    if (choice != NULL) {
        const char *name = host->json_string(choice, NULL);
        if (name != NULL && strcmp(name, "redis") == 0) {
            ops = &queue_redis_ops;
        } else if (name == NULL || strcmp(name, "sqlite") != 0) {
            host->settings_error(instance, choice,
                                 "\"backend\" must be \"sqlite\" or \"redis\"");
            return PB_ERROR;
        }
    }
    queue_plugin *q = calloc(1, sizeof *q);
    if (q == NULL) {
        host->settings_error(instance, NULL, "out of memory");
        return PB_ERROR;
    }
    q->host = host;
    q->instance = instance;
    q->ops = ops;
    q->backend = ops->configure(host, instance, settings);
    if (q->backend == NULL) {
        free(q);
        return PB_ERROR;
    }
    *state = q;
    return PB_OK;
}

static int queue_worker_start(void *state)
{
    queue_plugin *q = state;
    if (q->ops->open(q->backend, backend_wake, q) != PB_OK)
        return PB_ERROR;
    q->enqueued = counter(q, "enqueued");
    q->delivered = counter(q, "delivered");
    q->acked = counter(q, "acked");
    q->redelivered = counter(q, "redelivered");
    q->serving = 1;
    return PB_OK;
}

/* Every waiter is answered empty; what the backend still holds is
 * answered as the backend closes. */
static void queue_worker_stop(void *state)
{
    queue_plugin *q = state;
    if (!q->serving)
        return;
    q->stopping = 1;
    for (waiter *w = q->first, *next; w != NULL; w = next) {
        next = w->next;
        if (!w->attempting)
            answer_empty(w);
    }
    q->ops->close(q->backend);
    q->serving = 0;
}

static void queue_destroy(void *state)
{
    queue_plugin *q = state;
    q->ops->free(q->backend);
    while (q->levels != NULL) {
        levels *l = q->levels;
        q->levels = l->next;
        free(l->queue);
        free(l);
    }
    free(q);
}

PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
    PB_PLUGIN_VERSIONED,
    .name         = "queue",
    .description  = "durable work queues with leases and at-least-once delivery",
    .create       = queue_create,
    .handle       = queue_handle,
    .destroy      = queue_destroy,
    .worker_start = queue_worker_start,
    .worker_stop  = queue_worker_stop,
    .on_broadcast = queue_on_broadcast,
};

/*
 * redis.c - the queue's Redis backend: each queue is a Redis stream read
 * through one consumer group, so that several daemons share it; leases are
 * kept in a sorted set beside it. Every operation is one Lua script, so
 * that "reclaim an expired lease, else read a new message" and the like
 * happen atomically however many daemons ask at once.
 *
 * Keys of queue NAME:
 *   plugboard:queue:NAME          the stream; entries {"message": JSON}
 *   plugboard:queue-leases:NAME   sorted set: delivered id -> lease deadline
 *                                 (ms, Redis' clock)
 * Group "plugboard"; each worker reads as consumer "HOSTNAME:PID". An
 * acknowledged message is deleted from the stream, so it does not grow.
 * After an enqueue the script publishes on "plugboard-queue-ready:NAME"
 * (outside "plugboard:*", which belongs to the pubsub backplane), and the
 * other daemons wake their waiting dequeues.
 */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "../redis_link.h"

#define STREAM_PREFIX "plugboard:queue:"
#define LEASES_PREFIX "plugboard:queue-leases:"
#define READY_PREFIX "plugboard-queue-ready:"
#define GROUP "plugboard"

/* --- Scripts ---------------------------------------------------------------
 * KEYS[1] is the stream, KEYS[2] the leases; ARGV[1] the group. Each
 * returns the queue's depth (ready, leased) after it, which is cheap. */

#define SCRIPT_COMMON \
    "local function now_ms()\n" \
    "  local t = redis.call('TIME')\n" \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n" \
    "end\n" \
    /* The group starts at 0: it sees what was enqueued before it. */ \
    "local function ensure_group()\n" \
    "  local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')\n" \
    "  if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP', 1, true) then\n" \
    "    return r\n" \
    "  end\n" \
    "end\n" \
    /* ready: never delivered, plus leases run out; every delivered message \
     * has a lease entry until it is acknowledged. */ \
    "local function depth(now)\n" \
    "  local leases = redis.call('ZCARD', KEYS[2])\n" \
    "  local expired = redis.call('ZCOUNT', KEYS[2], '-inf', now)\n" \
    "  return redis.call('XLEN', KEYS[1]) - leases + expired, leases - expired\n" \
    "end\n"

/* ARGV[2] the message, ARGV[3] the channel to wake, ARGV[4] who woke it.
 * -> {id, ready, leased} */
static const char enqueue_script[] = SCRIPT_COMMON
    "local id = redis.call('XADD', KEYS[1], '*', 'message', ARGV[2])\n"
    "local failed = ensure_group()\n"
    "if failed then return failed end\n"
    "redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
    "local ready, leased = depth(now_ms())\n"
    "return {id, ready, leased}\n";

/* ARGV[2] the consumer, ARGV[3] the lease in ms.
 * -> {'message', id, message, deliveries, ready, leased}
 *  | {'empty', ms until the first lease expires or -1, ready, leased} */
static const char dequeue_script[] = SCRIPT_COMMON
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {'empty', -1, 0, 0} end\n"
    "local failed = ensure_group()\n"
    "if failed then return failed end\n"
    "local now = now_ms()\n"
    "local deadline = now + tonumber(ARGV[3])\n"
    "local function field(fields, name)\n"
    "  for i = 1, #fields, 2 do\n"
    "    if fields[i] == name then return fields[i + 1] end\n"
    "  end\n"
    "  return 'null'\n"
    "end\n"
    "local function lease(id, fields, deliveries)\n"
    "  redis.call('ZADD', KEYS[2], deadline, id)\n"
    "  local ready, leased = depth(now)\n"
    "  return {'message', id, field(fields, 'message'), deliveries, ready, leased}\n"
    "end\n"
    "local function stream_id(id)\n"
    "  local ms, seq = string.match(id, '^(%d+)-(%d+)$')\n"
    "  return tonumber(ms or 0), tonumber(seq or 0)\n"
    "end\n"
    /* The oldest of the (first hundred) expired leases goes first. */
    "local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)\n"
    "table.sort(expired, function(a, b)\n"
    "  local ams, aseq = stream_id(a)\n"
    "  local bms, bseq = stream_id(b)\n"
    "  return ams < bms or (ams == bms and aseq < bseq)\n"
    "end)\n"
    "for _, id in ipairs(expired) do\n"
    "  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)\n"
    "  if claimed[1] then\n"
    "    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)\n"
    "    return lease(id, claimed[1][2], pending[1][4])\n"
    "  end\n"
    "  redis.call('ZREM', KEYS[2], id)\n"
    "end\n"
    "local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,\n"
    "                        'STREAMS', KEYS[1], '>')\n"
    "if read and read[1] and read[1][2][1] then\n"
    "  local entry = read[1][2][1]\n"
    "  return lease(entry[1], entry[2], 1)\n"
    "end\n"
    "local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')\n"
    "local next_expiry = -1\n"
    "if first[2] then next_expiry = tonumber(first[2]) - now end\n"
    "local ready, leased = depth(now)\n"
    "return {'empty', next_expiry, ready, leased}\n";

/* ARGV[2] the id. -> {'acked' | 'unknown', ready, leased} */
static const char ack_script[] = SCRIPT_COMMON
    "local now = now_ms()\n"
    "local deadline = redis.call('ZSCORE', KEYS[2], ARGV[2])\n"
    "if not deadline or tonumber(deadline) <= now then\n"
    "  local ready, leased = depth(now)\n"
    "  return {'unknown', ready, leased}\n"
    "end\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "redis.call('ZREM', KEYS[2], ARGV[2])\n"
    "local ready, leased = depth(now)\n"
    "return {'acked', ready, leased}\n";

/* -> {ready, leased} */
static const char depth_script[] = SCRIPT_COMMON
    "local ready, leased = depth(now_ms())\n"
    "return {ready, leased}\n";

/* --- The backend -------------------------------------------------------- */

typedef enum op_kind { OP_ENQUEUE, OP_DEQUEUE, OP_ACK, OP_DEPTH } op_kind;

typedef struct redis_op {
    queue_backend *backend;
    op_kind kind;
    queue_done *done;
    void *arg;
    struct redis_op *next;      /* in the list of operations failed at once */
} redis_op;

struct queue_backend {
    const pb_host *host;
    pb_instance *instance;
    redis_address address;
    redis_link *link;           /* between open and close */
    char consumer[300];         /* "HOSTNAME:PID" */
    char waker[320];            /* consumer + this copy, in wake-ups */
    queue_wake *wake;
    void *wake_arg;
    int closing;
    /* Operations that failed before reaching Redis complete from the loop,
     * after the call that started them has returned, in order. */
    redis_op *failed_head, *failed_tail;
    ev_timer failed_timer;
    struct ev_loop *loop;
};

static int check_setting(const char *key, const pb_json *value, void *arg)
{
    queue_backend *backend = arg;
    if (strcmp(key, "backend") == 0 || strcmp(key, "url") == 0)
        return 0;
    backend->host->settings_error(backend->instance, value,
                                  "unknown setting \"%s\" for the redis backend "
                                  "(it takes url)", key);
    return -1;
}

static queue_backend *redis_configure(const pb_host *host, pb_instance *instance,
                                      const pb_json *settings)
{
    queue_backend *backend = calloc(1, sizeof *backend);
    if (backend == NULL) {
        host->settings_error(instance, NULL, "out of memory");
        return NULL;
    }
    backend->host = host;
    backend->instance = instance;
    int failed = host->json_foreach(settings, check_setting, backend) != 0;

    const pb_json *url = host->json_get(settings, "url");
    const char *text = host->json_type(url) == PB_JSON_STRING
                       ? host->json_string(url, NULL) : NULL;
    char error[2 * REDIS_URL_MAX + 128];
    if (url == NULL) {
        host->settings_error(instance, NULL,
                             "the redis backend needs url = \"redis://HOST:PORT\"");
        failed = 1;
    } else if (text == NULL) {
        host->settings_error(instance, url, "url must be a string \"redis://HOST:PORT\"");
        failed = 1;
    } else if (redis_address_parse(text, &backend->address, error, sizeof error) != 0
               || redis_address_resolve(&backend->address, error, sizeof error) != 0) {
        host->settings_error(instance, url, "url %s", error);
        failed = 1;
    }
    if (failed) {
        free(backend);
        return NULL;
    }
    return backend;
}

static void complete(redis_op *op, const queue_result *result)
{
    op->done(op->arg, result);
    free(op);
}

static void complete_failed(redis_op *op, const char *error)
{
    queue_result result = { .status = QUEUE_FAILED, .error = error,
                            .ready = -1, .leased = -1, .next_expiry = -1 };
    complete(op, &result);
}

static void on_failed_timer(struct ev_loop *loop, ev_timer *timer, int revents)
{
    (void)loop;
    (void)revents;
    queue_backend *backend = timer->data;
    char error[REDIS_URL_MAX + 64];
    snprintf(error, sizeof error, "queue %s is not connected", backend->address.url);
    while (backend->failed_head != NULL) {
        redis_op *op = backend->failed_head;
        backend->failed_head = op->next;
        if (backend->failed_head == NULL)
            backend->failed_tail = NULL;
        complete_failed(op, error);
    }
}

static void fail_later(redis_op *op)
{
    queue_backend *backend = op->backend;
    op->next = NULL;
    if (backend->failed_tail != NULL)
        backend->failed_tail->next = op;
    else
        backend->failed_head = op;
    backend->failed_tail = op;
    ev_timer_start(backend->loop, &backend->failed_timer);
}

static void on_wake(void *arg, const char *channel, size_t channel_length,
                    const char *message, size_t message_length)
{
    queue_backend *backend = arg;
    size_t prefix = strlen(READY_PREFIX);
    if (backend->wake == NULL || channel_length <= prefix
        || memcmp(channel, READY_PREFIX, prefix) != 0
        || memchr(channel, '\0', channel_length) != NULL)
        return;
    /* This copy's own waiters learn of its enqueues from queue.c. */
    if (message_length == strlen(backend->waker)
        && memcmp(message, backend->waker, message_length) == 0)
        return;
    char *queue = strndup(channel + prefix, channel_length - prefix);
    if (queue == NULL)
        return;
    backend->wake(backend->wake_arg, queue);
    free(queue);
}

static int redis_open(queue_backend *backend, queue_wake *wake, void *arg)
{
    /* Several copies of an instance may share a worker after a reload. */
    static unsigned long copies;
    char hostname[256];
    if (gethostname(hostname, sizeof hostname) != 0)
        snprintf(hostname, sizeof hostname, "unknown");
    hostname[sizeof hostname - 1] = '\0';
    snprintf(backend->consumer, sizeof backend->consumer, "%s:%ld", hostname,
             (long)getpid());
    snprintf(backend->waker, sizeof backend->waker, "%s:%lu", backend->consumer,
             ++copies);
    backend->wake = wake;
    backend->wake_arg = arg;
    backend->closing = 0;
    backend->loop = backend->host->loop();
    ev_timer_init(&backend->failed_timer, on_failed_timer, 0.0, 0.0);
    backend->failed_timer.data = backend;

    redis_link_config config = {
        .host = backend->host,
        .instance = backend->instance,
        .user = "queue",
        .address = &backend->address,
        .pattern = READY_PREFIX "*",
        .on_message = on_wake,
        .arg = backend,
        .reconnect_metric = "redis_reconnects",
    };
    backend->link = redis_link_open(&config);
    return backend->link != NULL ? PB_OK : PB_ERROR;
}

/* --- Replies ------------------------------------------------------------- */

static long long integer_at(const redisReply *reply, size_t index)
{
    if (index >= reply->elements || reply->element[index]->type != REDIS_REPLY_INTEGER)
        return -1;
    return reply->element[index]->integer;
}

static int string_is(const redisReply *reply, const char *word)
{
    return reply->type == REDIS_REPLY_STRING && strcmp(reply->str, word) == 0;
}

/* Fills `result` from a script's reply; 0, or -1 when it is not the
 * shape the script returns. */
static int read_reply(op_kind kind, const redisReply *reply, queue_result *result)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2)
        return -1;
    const redisReply *first = reply->element[0];
    switch (kind) {
    case OP_ENQUEUE:
        if (reply->elements != 3 || first->type != REDIS_REPLY_STRING
            || first->len >= QUEUE_ID_MAX)
            return -1;
        memcpy(result->id, first->str, first->len + 1);
        result->ready = integer_at(reply, 1);
        result->leased = integer_at(reply, 2);
        return 0;
    case OP_DEQUEUE:
        if (string_is(first, "empty") && reply->elements == 4) {
            long long next_ms = integer_at(reply, 1);
            result->status = QUEUE_EMPTY;
            result->next_expiry = next_ms >= 0 ? (double)next_ms / 1000.0 : -1;
            result->ready = integer_at(reply, 2);
            result->leased = integer_at(reply, 3);
            return 0;
        }
        if (!string_is(first, "message") || reply->elements != 6)
            return -1;
        const redisReply *id = reply->element[1], *message = reply->element[2];
        if (id->type != REDIS_REPLY_STRING || id->len >= QUEUE_ID_MAX
            || message->type != REDIS_REPLY_STRING)
            return -1;
        memcpy(result->id, id->str, id->len + 1);
        result->message = message->str;
        result->message_length = message->len;
        result->deliveries = integer_at(reply, 3);
        result->ready = integer_at(reply, 4);
        result->leased = integer_at(reply, 5);
        return 0;
    case OP_ACK:
        if (reply->elements != 3)
            return -1;
        if (string_is(first, "unknown"))
            result->status = QUEUE_UNKNOWN;
        else if (!string_is(first, "acked"))
            return -1;
        result->ready = integer_at(reply, 1);
        result->leased = integer_at(reply, 2);
        return 0;
    case OP_DEPTH:
        if (reply->elements != 2)
            return -1;
        result->ready = integer_at(reply, 0);
        result->leased = integer_at(reply, 1);
        return result->ready >= 0 && result->leased >= 0 ? 0 : -1;
    }
    return -1;
}

static void on_reply(redisAsyncContext *context, void *reply_data, void *privdata)
{
    redis_op *op = privdata;
    queue_backend *backend = op->backend;
    const redisReply *reply = reply_data;
    char error[REDIS_URL_MAX + 512];
    if (reply == NULL) {
        if (backend->closing)
            snprintf(error, sizeof error, "queue %s: closed", backend->address.url);
        else
            snprintf(error, sizeof error, "queue %s lost: %s", backend->address.url,
                     context != NULL && context->errstr[0] != '\0'
                     ? context->errstr : "connection closed");
        complete_failed(op, error);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(error, sizeof error, "queue %s: %s", backend->address.url, reply->str);
        complete_failed(op, error);
        return;
    }
    queue_result result = { .status = QUEUE_OK, .deliveries = 0,
                            .ready = -1, .leased = -1, .next_expiry = -1 };
    if (read_reply(op->kind, reply, &result) != 0) {
        snprintf(error, sizeof error, "queue %s: unexpected reply from Redis",
                 backend->address.url);
        complete_failed(op, error);
        return;
    }
    complete(op, &result);
}

/* --- Operations ----------------------------------------------------------- */

/* Runs one of the scripts on `queue`'s keys with `args` after the group. */
static void run(queue_backend *backend, op_kind kind, const char *script,
                const char *queue, int n_args, const char **args,
                const size_t *arg_lengths, queue_done *done, void *arg)
{
    redis_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        queue_result result = { .status = QUEUE_FAILED, .error = "out of memory",
                                .ready = -1, .leased = -1, .next_expiry = -1 };
        done(arg, &result);
        return;
    }
    op->backend = backend;
    op->kind = kind;
    op->done = done;
    op->arg = arg;
    size_t queue_length = strlen(queue);
    char *stream = malloc(strlen(STREAM_PREFIX) + queue_length + 1);
    char *leases = malloc(strlen(LEASES_PREFIX) + queue_length + 1);
    if (stream == NULL || leases == NULL) {
        free(stream);
        free(leases);
        complete_failed(op, "out of memory");
        return;
    }
    sprintf(stream, "%s%s", STREAM_PREFIX, queue);
    sprintf(leases, "%s%s", LEASES_PREFIX, queue);

    /* Up to four script arguments after the group. */
    const char *argv[6 + 4] = { "EVAL", script, "2", stream, leases, GROUP };
    size_t lengths[6 + 4] = { 4, strlen(script), 1, strlen(stream), strlen(leases),
                          strlen(GROUP) };
    int argc = 6;
    for (int i = 0; i < n_args; i++, argc++) {
        argv[argc] = args[i];
        lengths[argc] = arg_lengths[i];
    }
    int rc = backend->link != NULL && !backend->closing
             ? redis_link_command(backend->link, on_reply, op, argc, argv, lengths)
             : REDIS_ERR;
    free(stream);
    free(leases);
    if (rc != REDIS_OK)
        fail_later(op);
}

static void redis_enqueue(queue_backend *backend, const char *queue,
                          const char *message, size_t length,
                          queue_done *done, void *arg)
{
    size_t queue_length = strlen(queue);
    char *channel = malloc(strlen(READY_PREFIX) + queue_length + 1);
    if (channel == NULL) {
        queue_result result = { .status = QUEUE_FAILED, .error = "out of memory",
                                .ready = -1, .leased = -1, .next_expiry = -1 };
        done(arg, &result);
        return;
    }
    sprintf(channel, "%s%s", READY_PREFIX, queue);
    const char *args[] = { message, channel, backend->waker };
    const size_t lengths[] = { length, strlen(channel), strlen(backend->waker) };
    run(backend, OP_ENQUEUE, enqueue_script, queue, 3, args, lengths, done, arg);
    free(channel);
}

static void redis_dequeue(queue_backend *backend, const char *queue, double lease,
                          queue_done *done, void *arg)
{
    char lease_ms[32];
    snprintf(lease_ms, sizeof lease_ms, "%.0f", lease > 0 ? lease * 1000.0 : 0.0);
    const char *args[] = { backend->consumer, lease_ms };
    const size_t lengths[] = { strlen(backend->consumer), strlen(lease_ms) };
    run(backend, OP_DEQUEUE, dequeue_script, queue, 2, args, lengths, done, arg);
}

static void redis_ack(queue_backend *backend, const char *queue, const char *id,
                      queue_done *done, void *arg)
{
    const char *args[] = { id };
    const size_t lengths[] = { strlen(id) };
    run(backend, OP_ACK, ack_script, queue, 1, args, lengths, done, arg);
}

static void redis_depth(queue_backend *backend, const char *queue,
                        queue_done *done, void *arg)
{
    run(backend, OP_DEPTH, depth_script, queue, 0, NULL, NULL, done, arg);
}

static void redis_close(queue_backend *backend)
{
    backend->closing = 1;
    if (backend->loop != NULL) {
        ev_timer_stop(backend->loop, &backend->failed_timer);
        on_failed_timer(backend->loop, &backend->failed_timer, 0);
    }
    /* Operations in flight get their NULL reply, and fail, in here. */
    redis_link_close(backend->link);
    backend->link = NULL;
}

static void redis_free(queue_backend *backend)
{
    if (backend == NULL)
        return;
    redis_close(backend);
    free(backend);
}

const queue_backend_ops queue_redis_ops = {
    .name      = "redis",
    .configure = redis_configure,
    .open      = redis_open,
    .enqueue   = redis_enqueue,
    .dequeue   = redis_dequeue,
    .ack       = redis_ack,
    .depth     = redis_depth,
    .close     = redis_close,
    .free      = redis_free,
};

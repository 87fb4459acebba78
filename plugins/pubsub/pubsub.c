/*
 * pubsub.c - publish/subscribe between connections: subscribe to a topic
 * or a glob pattern, publish any JSON value to a topic, and every
 * subscriber of a matching topic, on any worker, is pushed
 * {"topic": ..., "message": ...}.
 *
 * Each worker's copy keeps the subscriptions of the connections it holds.
 * A publish is pushed at once to this copy's subscribers, then broadcast
 * to the other copies (the other workers', and an older copy a reload left
 * here), which push it to theirs: the content is encoded once, by the
 * publisher's copy. With `backplane`, Redis carries publishes instead, to
 * every copy of every daemon sharing it (backplane.c).
 *
 * Nothing is stored: a subscriber gets what is published while it is
 * subscribed, in publish order per publisher, at most once. A subscriber
 * whose pending output is full is sent slow_consumer and closed; the
 * publisher never waits for it.
 */
#include <fnmatch.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <plugboard/plugin.h>

#include "backplane.h"

typedef struct pubsub pubsub;
typedef struct subscriber subscriber;
typedef struct topic topic;

/* One subscription: of a topic (exact) or of a pattern. */
typedef struct subscription {
    subscriber *who;
    topic *topic;                   /* NULL for a pattern */
    char *pattern;                  /* NULL for a topic */
    struct subscription *prev, *next;   /* in the topic's or the patterns' list */
    struct subscription *next_of_who;
} subscription;

struct topic {
    char *name;
    size_t length;
    subscription *subs;
    topic *next_in_bucket;
};

/* A connection with at least one subscription. */
struct subscriber {
    pubsub *ps;
    pb_client *client;
    unsigned long long connection;
    subscription *subs;
    unsigned long long last_publish;    /* pushed at most once per publish */
    subscriber *next_in_bucket;
};

typedef struct table {
    void **buckets;
    size_t n_buckets, count;
} table;

struct pubsub {
    const pb_host *host;
    pb_instance *instance;
    backplane *backplane;           /* NULL: broadcasts between workers */
    table topics;                   /* topic * by name */
    table subscribers;              /* subscriber * by connection */
    subscription *patterns;
    unsigned long long publishes;   /* numbers each delivery */
    pb_metric *m_subscribers, *m_published, *m_delivered, *m_slow;
};

/* What copies broadcast to each other, after a one-byte kind. */
enum {
    /* a publish: the topic's length (4 bytes), the topic, the push's content */
    MSG_PUBLISH = 'P',
    /* another copy took over a subscription of this connection (8 bytes),
     * topic or pattern ('t' or 'p'), the name: drop ours */
    MSG_DROP = 'D',
};

static const char REPLY_PUBLISHED[] = "{\"result\": \"published\"}";

/* --- Tables ---------------------------------------------------------------- */

static uint64_t hash_bytes(const void *data, size_t length)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < length; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static size_t topic_bucket(const table *t, const char *name, size_t length)
{
    return (size_t)hash_bytes(name, length) & (t->n_buckets - 1);
}

static size_t subscriber_bucket(const table *t, unsigned long long connection)
{
    return (size_t)hash_bytes(&connection, sizeof connection) & (t->n_buckets - 1);
}

static topic *topic_find(const pubsub *ps, const char *name, size_t length)
{
    if (ps->topics.n_buckets == 0)
        return NULL;
    for (topic *t = ps->topics.buckets[topic_bucket(&ps->topics, name, length)];
         t != NULL; t = t->next_in_bucket)
        if (t->length == length && memcmp(t->name, name, length) == 0)
            return t;
    return NULL;
}

static subscriber *subscriber_find(const pubsub *ps, unsigned long long connection)
{
    if (ps->subscribers.n_buckets == 0)
        return NULL;
    for (subscriber *s = ps->subscribers.buckets[subscriber_bucket(&ps->subscribers, connection)];
         s != NULL; s = s->next_in_bucket)
        if (s->connection == connection)
            return s;
    return NULL;
}

/* Doubles a table's buckets when it is full; `rehash` moves one entry. */
static int table_reserve(table *t, void (*rehash)(table *, void *, void **))
{
    if (t->count < t->n_buckets)
        return 0;
    size_t n = t->n_buckets ? t->n_buckets * 2 : 64;
    void **buckets = calloc(n, sizeof *buckets);
    if (buckets == NULL)
        return -1;
    table old = *t;
    t->buckets = buckets;
    t->n_buckets = n;
    for (size_t i = 0; i < old.n_buckets; i++)
        rehash(t, old.buckets[i], buckets);
    free(old.buckets);
    return 0;
}

static void rehash_topics(table *t, void *chain, void **buckets)
{
    topic *next;
    for (topic *e = chain; e != NULL; e = next) {
        next = e->next_in_bucket;
        size_t b = topic_bucket(t, e->name, e->length);
        e->next_in_bucket = buckets[b];
        buckets[b] = e;
    }
}

static void rehash_subscribers(table *t, void *chain, void **buckets)
{
    subscriber *next;
    for (subscriber *e = chain; e != NULL; e = next) {
        next = e->next_in_bucket;
        size_t b = subscriber_bucket(t, e->connection);
        e->next_in_bucket = buckets[b];
        buckets[b] = e;
    }
}

/* --- Subscriptions --------------------------------------------------------- */

static void on_client_close(pb_client *client, void *arg);

static subscriber *subscriber_get(pubsub *ps, const pb_request *request)
{
    subscriber *s = subscriber_find(ps, request->connection);
    if (s != NULL)
        return s;
    if (table_reserve(&ps->subscribers, rehash_subscribers) != 0)
        return NULL;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->ps = ps;
    s->connection = request->connection;
    s->client = ps->host->client_hold(request, on_client_close, s);
    if (s->client == NULL) {
        free(s);
        return NULL;
    }
    size_t b = subscriber_bucket(&ps->subscribers, s->connection);
    s->next_in_bucket = ps->subscribers.buckets[b];
    ps->subscribers.buckets[b] = s;
    ps->subscribers.count++;
    if (ps->m_subscribers != NULL)
        ps->host->metric_add(ps->m_subscribers, 1);
    return s;
}

/* Forgets a subscriber and gives its connection back. */
static void subscriber_free(subscriber *s)
{
    pubsub *ps = s->ps;
    void **p = &ps->subscribers.buckets[subscriber_bucket(&ps->subscribers, s->connection)];
    while (*p != s)
        p = (void **)&((subscriber *)*p)->next_in_bucket;
    *p = s->next_in_bucket;
    ps->subscribers.count--;
    if (ps->m_subscribers != NULL)
        ps->host->metric_add(ps->m_subscribers, -1);
    ps->host->client_release(s->client);
    free(s);
}

static void topic_free(pubsub *ps, topic *t)
{
    void **p = &ps->topics.buckets[topic_bucket(&ps->topics, t->name, t->length)];
    while (*p != t)
        p = (void **)&((topic *)*p)->next_in_bucket;
    *p = t->next_in_bucket;
    ps->topics.count--;
    free(t->name);
    free(t);
}

static void unlink_subscription(pubsub *ps, subscription *sub)
{
    subscription **head = sub->topic != NULL ? &sub->topic->subs : &ps->patterns;
    if (sub->prev != NULL)
        sub->prev->next = sub->next;
    else
        *head = sub->next;
    if (sub->next != NULL)
        sub->next->prev = sub->prev;
    if (sub->topic != NULL && sub->topic->subs == NULL)
        topic_free(ps, sub->topic);
    free(sub->pattern);
    free(sub);
}

/* The subscriber's subscription to this topic (is_pattern 0) or pattern. */
static subscription **subscription_find(subscriber *s, int is_pattern,
                                        const char *name, size_t length)
{
    for (subscription **p = &s->subs; *p != NULL; p = &(*p)->next_of_who) {
        const subscription *sub = *p;
        if (is_pattern ? sub->pattern != NULL && strlen(sub->pattern) == length &&
                             memcmp(sub->pattern, name, length) == 0
                       : sub->topic != NULL && sub->topic->length == length &&
                             memcmp(sub->topic->name, name, length) == 0)
            return p;
    }
    return NULL;
}

static int subscription_add(pubsub *ps, subscriber *s, int is_pattern,
                            const char *name, size_t length)
{
    if (subscription_find(s, is_pattern, name, length) != NULL)
        return 0;
    subscription *sub = calloc(1, sizeof *sub);
    if (sub == NULL)
        return -1;
    sub->who = s;
    subscription **head;
    if (is_pattern) {
        if ((sub->pattern = strndup(name, length)) == NULL) {
            free(sub);
            return -1;
        }
        head = &ps->patterns;
    } else {
        topic *t = topic_find(ps, name, length);
        if (t == NULL) {
            if (table_reserve(&ps->topics, rehash_topics) != 0 ||
                (t = calloc(1, sizeof *t)) == NULL) {
                free(sub);
                return -1;
            }
            if ((t->name = malloc(length + 1)) == NULL) {
                free(t);
                free(sub);
                return -1;
            }
            memcpy(t->name, name, length);
            t->name[length] = '\0';
            t->length = length;
            size_t b = topic_bucket(&ps->topics, name, length);
            t->next_in_bucket = ps->topics.buckets[b];
            ps->topics.buckets[b] = t;
            ps->topics.count++;
        }
        sub->topic = t;
        head = &t->subs;
    }
    sub->next = *head;
    if (*head != NULL)
        (*head)->prev = sub;
    *head = sub;
    sub->next_of_who = s->subs;
    s->subs = sub;
    return 0;
}

/* Drops one subscription of s; a subscriber left with none is freed.
 * Returns whether it had that subscription. */
static int subscription_remove(pubsub *ps, subscriber *s, int is_pattern,
                               const char *name, size_t length)
{
    subscription **p = subscription_find(s, is_pattern, name, length);
    if (p == NULL)
        return 0;
    subscription *sub = *p;
    *p = sub->next_of_who;
    unlink_subscription(ps, sub);
    if (s->subs == NULL)
        subscriber_free(s);
    return 1;
}

static void subscriber_drop(subscriber *s)
{
    pubsub *ps = s->ps;
    while (s->subs != NULL) {
        subscription *sub = s->subs;
        s->subs = sub->next_of_who;
        unlink_subscription(ps, sub);
    }
    subscriber_free(s);
}

static void on_client_close(pb_client *client, void *arg)
{
    (void)client;
    subscriber_drop(arg);
}

/* --- Delivery -------------------------------------------------------------- */

/* Pushes content to s unless this publish reached it already; a
 * subscriber too slow to take it is closed, and freed after the walk.
 * Counts a delivery in *delivered. The host encodes the push's frame once
 * for all the subscribers of one publish and writes each of them once per
 * batch. */
static void deliver_to(pubsub *ps, subscriber *s, const char *content,
                       size_t length, subscriber ***slow, size_t *n_slow,
                       long long *delivered)
{
    if (s->last_publish == ps->publishes)
        return;
    s->last_publish = ps->publishes;
    int rc = ps->host->push_bytes(s->client, "text/json", "utf-8", content, length);
    if (rc == PB_OK) {
        (*delivered)++;
    } else if (rc == PB_FULL) {
        subscriber **grown = realloc(*slow, (*n_slow + 1) * sizeof **slow);
        if (grown != NULL) {
            *slow = grown;
            grown[(*n_slow)++] = s;
        }
    }
}

/* Pushes a publish to every subscriber of this copy whose topic or
 * pattern matches. content is {"topic": ..., "message": ...}. */
static void deliver(pubsub *ps, const char *topic_name, size_t topic_length,
                    const char *content, size_t length)
{
    ps->publishes++;
    subscriber **slow = NULL;
    size_t n_slow = 0;
    long long delivered = 0;
    topic *t = topic_find(ps, topic_name, topic_length);
    for (subscription *sub = t != NULL ? t->subs : NULL; sub != NULL; sub = sub->next)
        deliver_to(ps, sub->who, content, length, &slow, &n_slow, &delivered);
    if (ps->patterns != NULL) {
        /* fnmatch() wants the name NUL-terminated: a short one is copied
         * on the stack. */
        char small[256];
        char *name = topic_length < sizeof small ? small
                                                  : strndup(topic_name, topic_length);
        if (name == small) {
            memcpy(small, topic_name, topic_length);
            small[topic_length] = '\0';
        }
        for (subscription *sub = ps->patterns; name != NULL && sub != NULL; sub = sub->next)
            if (fnmatch(sub->pattern, name, 0) == 0)
                deliver_to(ps, sub->who, content, length, &slow, &n_slow, &delivered);
        if (name != small)
            free(name);
    }
    if (delivered > 0 && ps->m_delivered != NULL)
        ps->host->metric_add(ps->m_delivered, delivered);
    for (size_t i = 0; i < n_slow; i++) {
        ps->host->client_close_slow(slow[i]->client,
                                    "subscriber too slow: pending output is full");
        if (ps->m_slow != NULL)
            ps->host->metric_add(ps->m_slow, 1);
        subscriber_drop(slow[i]);
    }
    free(slow);
}

/* Whether a string is its own JSON text between quotes: printable ASCII
 * without '"' or '\' (the bytes the host's JSON encoder writes for it). */
static int plain_string(const char *text, size_t length)
{
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

/* Appends text at p, between quotes when `quote`; returns the end. */
static char *put(char *p, const char *text, size_t length, int quote)
{
    if (quote)
        *p++ = '"';
    memcpy(p, text, length);
    p += length;
    if (quote)
        *p++ = '"';
    return p;
}

/* {"topic": <topic>, "message": <message>}, after `room` bytes left free
 * for the caller, written into `into` (of into_size bytes) when it fits,
 * else malloc'd; its length in *length. message is JSON text, or a plain
 * string (plain_string) to quote when quote_message is set. */
static char *push_content(const pb_host *host, char *into, size_t into_size,
                          size_t room, const char *topic_name,
                          size_t topic_length, const char *message,
                          size_t message_length, int quote_message, size_t *length)
{
    size_t name_length = topic_length + 2;
    char *quoted = NULL;
    if (!plain_string(topic_name, topic_length)) {
        pb_json *name = host->json_new_string(topic_name, topic_length);
        quoted = name != NULL ? host->json_encode(name, &name_length) : NULL;
        host->json_free(name);
        if (quoted == NULL)
            return NULL;
    }
    static const char a[] = "{\"topic\": ", b[] = ", \"message\": ";
    size_t n = sizeof a - 1 + name_length + sizeof b - 1 + message_length +
               (quote_message ? 2 : 0) + 1;
    char *content = room + n + 1 <= into_size ? into : malloc(room + n + 1);
    if (content != NULL) {
        char *p = put(content + room, a, sizeof a - 1, 0);
        p = quoted != NULL ? put(p, quoted, name_length, 0)
                           : put(p, topic_name, topic_length, 1);
        p = put(p, b, sizeof b - 1, 0);
        p = put(p, message, message_length, quote_message);
        *p++ = '}';
        *p = '\0';
        *length = n;
    }
    free(quoted);
    return content;
}

/* A publish that came through the backplane, from any daemon. */
static void on_backplane_message(void *arg, const char *topic_name,
                                 size_t topic_length, const char *message,
                                 size_t message_length)
{
    pubsub *ps = arg;
    char small[2048];
    size_t length;
    char *content = push_content(ps->host, small, sizeof small, 0, topic_name,
                                 topic_length, message, message_length, 0, &length);
    if (content == NULL) {
        ps->host->log(ps->instance, PB_LOG_WARNING,
                      "out of memory: a publish to %.*s was not delivered",
                      (int)topic_length, topic_name);
        return;
    }
    deliver(ps, topic_name, topic_length, content, length);
    if (content != small)
        free(content);
}

static void on_broadcast(void *state, const void *data, size_t length)
{
    pubsub *ps = state;
    const unsigned char *p = data;
    if (length >= 5 && p[0] == MSG_PUBLISH) {
        uint32_t topic_length;
        memcpy(&topic_length, p + 1, 4);
        if (topic_length > length - 5)
            return;
        const char *topic_name = (const char *)p + 5;
        deliver(ps, topic_name, topic_length, topic_name + topic_length,
                length - 5 - topic_length);
    } else if (length >= 10 && p[0] == MSG_DROP) {
        unsigned long long connection;
        memcpy(&connection, p + 1, sizeof connection);
        subscriber *s = subscriber_find(ps, connection);
        if (s != NULL)
            subscription_remove(ps, s, p[9] == 'p', (const char *)p + 10,
                                length - 10);
    }
}

/* Tells older copies (after a reload) that this one now owns the
 * connection's subscription, or that it is gone. */
static void broadcast_drop(pubsub *ps, unsigned long long connection,
                           int is_pattern, const char *name, size_t length)
{
    if (!PB_HOST_HAS(ps->host, broadcast))
        return;
    unsigned char *msg = malloc(10 + length);
    if (msg == NULL)
        return;
    msg[0] = MSG_DROP;
    memcpy(msg + 1, &connection, sizeof connection);
    msg[9] = is_pattern ? 'p' : 't';
    memcpy(msg + 10, name, length);
    ps->host->broadcast(ps->instance, msg, 10 + length);
    free(msg);
}

/* --- Requests -------------------------------------------------------------- */

/* {"result": <result>, "topic"|"pattern": <name>} */
static int reply_subscription(const pb_host *host, pb_reply *reply,
                              const char *result, const char *key,
                              const char *name, size_t length)
{
    pb_json *answer = host->json_new_object();
    host->json_set(answer, "result", host->json_new_string(result, strlen(result)));
    if (host->json_set(answer, key, host->json_new_string(name, length)) != PB_OK) {
        host->json_free(answer);
        host->reply_error(reply, "out of memory");
        return PB_ERROR;
    }
    return host->reply_json(reply, answer);
}

/* The request's "topic" or "pattern": which one in *is_pattern. */
static const char *subject_of(const pb_host *host, const pb_json *json,
                              int *is_pattern, size_t *length, pb_reply *reply,
                              const char *action)
{
    const pb_json *topic_value = host->json_get(json, "topic");
    const pb_json *pattern_value = host->json_get(json, "pattern");
    if ((topic_value == NULL) == (pattern_value == NULL)) {
        host->reply_error(reply, "%s needs \"topic\" or \"pattern\" (one of them)",
                          action);
        return NULL;
    }
    *is_pattern = pattern_value != NULL;
    const char *name = host->json_string(*is_pattern ? pattern_value : topic_value,
                                         length);
    if (name == NULL || *length == 0 || memchr(name, '\0', *length) != NULL) {
        host->reply_error(reply, "\"%s\" must be a non-empty string",
                          *is_pattern ? "pattern" : "topic");
        return NULL;
    }
    return name;
}

static int handle_subscribe(pubsub *ps, const pb_request *request,
                            pb_reply *reply, int subscribe)
{
    const pb_host *host = ps->host;
    int is_pattern;
    size_t length;
    const char *action = subscribe ? "subscribe" : "unsubscribe";
    const char *name = subject_of(host, request->json, &is_pattern, &length,
                                  reply, action);
    if (name == NULL)
        return PB_ERROR;
    if (subscribe) {
        subscriber *s = subscriber_get(ps, request);
        if (s == NULL || subscription_add(ps, s, is_pattern, name, length) != 0) {
            if (s != NULL && s->subs == NULL)
                subscriber_free(s);
            host->reply_error(reply, s == NULL && host->loop() == NULL
                                         ? "cannot hold the connection"
                                         : "out of memory");
            return PB_ERROR;
        }
    } else {
        subscriber *s = subscriber_find(ps, request->connection);
        if (s != NULL)
            subscription_remove(ps, s, is_pattern, name, length);
    }
    broadcast_drop(ps, request->connection, is_pattern, name, length);
    return reply_subscription(host, reply, subscribe ? "subscribed" : "unsubscribed",
                              is_pattern ? "pattern" : "topic", name, length);
}

static int handle_publish(pubsub *ps, const pb_request *request, pb_reply *reply)
{
    const pb_host *host = ps->host;
    size_t topic_length;
    const char *topic_name = host->json_string(host->json_get(request->json, "topic"),
                                               &topic_length);
    if (topic_name == NULL || topic_length == 0 ||
        memchr(topic_name, '\0', topic_length) != NULL) {
        host->reply_error(reply, "publish needs \"topic\", a non-empty string");
        return PB_ERROR;
    }
    const pb_json *message = host->json_get(request->json, "message");
    if (message == NULL) {
        host->reply_error(reply, "publish needs \"message\" (any JSON value)");
        return PB_ERROR;
    }
    /* A plain string is quoted where it goes into the push, other values
     * encoded. */
    size_t message_length = 0;
    const char *plain = ps->backplane == NULL && host->json_type(message) == PB_JSON_STRING
                            ? host->json_string(message, &message_length)
                            : NULL;
    if (plain != NULL && !plain_string(plain, message_length))
        plain = NULL;
    char *message_text = NULL;
    if (plain == NULL &&
        (message_text = host->json_encode(message, &message_length)) == NULL) {
        host->reply_error(reply, "out of memory");
        return PB_ERROR;
    }
    if (ps->backplane != NULL) {
        char error[256];
        int rc = backplane_publish(ps->backplane, topic_name, topic_length,
                                   message_text, message_length, error, sizeof error);
        free(message_text);
        if (rc != PB_OK) {
            host->reply_error(reply, "%s", error);
            return PB_ERROR;
        }
    } else {
        /* One buffer: what other copies are sent, whose tail is the push;
         * on the stack when it is small. */
        char small[2048];
        size_t head = 5 + topic_length, content_length;
        unsigned char *msg = (unsigned char *)push_content(
            host, small, sizeof small, head, topic_name, topic_length,
            plain != NULL ? plain : message_text, message_length, plain != NULL,
            &content_length);
        free(message_text);
        if (msg == NULL) {
            host->reply_error(reply, "out of memory");
            return PB_ERROR;
        }
        uint32_t n = (uint32_t)topic_length;
        msg[0] = MSG_PUBLISH;
        memcpy(msg + 1, &n, 4);
        memcpy(msg + 5, topic_name, topic_length);
        deliver(ps, topic_name, topic_length, (const char *)msg + head, content_length);
        if (PB_HOST_HAS(host, broadcast))
            host->broadcast(ps->instance, msg, head + content_length);
        if (msg != (unsigned char *)small)
            free(msg);
    }
    if (ps->m_published != NULL)
        host->metric_add(ps->m_published, 1);
    return host->reply_bytes(reply, "text/json", "utf-8", REPLY_PUBLISHED,
                             sizeof REPLY_PUBLISHED - 1);
}

static int pubsub_handle(void *state, const pb_request *request, pb_reply *reply)
{
    pubsub *ps = state;
    const pb_host *host = ps->host;
    const char *action = host->json_string(host->json_get(request->json, "action"), NULL);
    if (action == NULL) {
        host->reply_error(reply, "pubsub takes a JSON object with an \"action\"");
        return PB_ERROR;
    }
    if (strcmp(action, "publish") == 0)
        return handle_publish(ps, request, reply);
    if (strcmp(action, "subscribe") == 0)
        return handle_subscribe(ps, request, reply, 1);
    if (strcmp(action, "unsubscribe") == 0)
        return handle_subscribe(ps, request, reply, 0);
    host->reply_error(reply, "pubsub does not know the action \"%s\" "
                      "(subscribe, unsubscribe, publish)", action);
    return PB_ERROR;
}

/* --- Life cycle ------------------------------------------------------------ */

static int pubsub_create(const pb_host *host, pb_instance *instance,
                         const pb_json *settings, void **state)
{
    if (!PB_HOST_HAS(host, client_close_slow)) {
        host->settings_error(instance, NULL, "pubsub needs a newer daemon "
                             "(broadcasts and slow-consumer closes)");
        return PB_ERROR;
    }
    const pb_json *url = host->json_get(settings, "backplane");
    if (host->json_size(settings) > (url != NULL ? 1u : 0u)) {
        host->settings_error(instance, settings,
                             "unknown setting (pubsub takes only \"backplane\")");
        return PB_ERROR;
    }
    pubsub *ps = calloc(1, sizeof *ps);
    if (ps == NULL) {
        host->settings_error(instance, NULL, "out of memory");
        return PB_ERROR;
    }
    ps->host = host;
    ps->instance = instance;
    if (url != NULL && (ps->backplane = backplane_configure(host, instance, url)) == NULL) {
        free(ps);
        return PB_ERROR;
    }
    *state = ps;
    return PB_OK;
}

static int pubsub_worker_start(void *state)
{
    pubsub *ps = state;
    const pb_host *host = ps->host;
    if (host->metric != NULL) {
        ps->m_subscribers = host->metric(ps->instance, "subscribers", NULL, PB_METRIC_GAUGE);
        ps->m_published = host->metric(ps->instance, "published", NULL, PB_METRIC_COUNTER);
        ps->m_delivered = host->metric(ps->instance, "delivered", NULL, PB_METRIC_COUNTER);
        ps->m_slow = host->metric(ps->instance, "slow_consumers", NULL, PB_METRIC_COUNTER);
    }
    if (ps->backplane != NULL)
        return backplane_open(ps->backplane, on_backplane_message, ps);
    return PB_OK;
}

static void pubsub_worker_stop(void *state)
{
    pubsub *ps = state;
    for (size_t i = 0; i < ps->subscribers.n_buckets; i++)
        while (ps->subscribers.buckets[i] != NULL)
            subscriber_drop(ps->subscribers.buckets[i]);
    if (ps->backplane != NULL)
        backplane_close(ps->backplane);
}

static void pubsub_destroy(void *state)
{
    pubsub *ps = state;
    if (ps->backplane != NULL)
        backplane_free(ps->backplane);
    free(ps->topics.buckets);
    free(ps->subscribers.buckets);
    free(ps);
}

PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
    PB_PLUGIN_VERSIONED,
    .name         = "pubsub",
    .description  = "publish/subscribe between connections, across workers",
    .create       = pubsub_create,
    .handle       = pubsub_handle,
    .destroy      = pubsub_destroy,
    .worker_start = pubsub_worker_start,
    .worker_stop  = pubsub_worker_stop,
    .on_broadcast = on_broadcast,
};

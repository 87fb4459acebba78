/*
 * reply.c - replies in flight: encoding an answer where it belongs, and
 * bringing answers given on other threads (or later, on the loop) back to
 * the loop thread through one ev_async, with work queued by run_on_loop.
 * Reply objects are reused from a free list, so a request that is answered
 * at once allocates nothing.
 */
#include "reply.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "json_dump.h"
#include "shared.h"

/* The worker's loop and what connects other threads to it. */
static struct ev_loop *loop;
static pthread_t loop_thread;
static ev_async wake;

/* Guards what other threads touch: a reply's state and owner, and the two
 * queues back to the loop. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pb_reply *finished_head, **finished_tail = &finished_head;

typedef struct loop_call {
    void (*fn)(void *arg);
    void *arg;
    struct loop_call *next;
} loop_call;
static loop_call *calls_head, **calls_tail = &calls_head;

/* The loop thread's alone. */
#define SPARE_REPLIES 256
static pb_reply *spare[SPARE_REPLIES];
static size_t n_spare;
static pb_reply *live;
static pb_worker_stats *counted;
static long long burst_ns;
static ev_prepare before_wait;

int pb_on_loop_thread(void)
{
    /* Without a loop (tests, fuzzing) the caller's thread is the only one. */
    return loop == NULL || pthread_equal(pthread_self(), loop_thread);
}

/* --- Back to the loop ------------------------------------------------------ */

static void on_wake(struct ev_loop *l, ev_async *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    pthread_mutex_lock(&lock);
    pb_reply *replies = finished_head;
    finished_head = NULL;
    finished_tail = &finished_head;
    loop_call *calls = calls_head;
    calls_head = NULL;
    calls_tail = &calls_head;
    pthread_mutex_unlock(&lock);

    while (replies != NULL) {
        pb_reply *r = replies;
        replies = r->next_finished;
        r->next_finished = NULL;
        pthread_mutex_lock(&lock);
        r->state = PB_REPLY_READY;
        pthread_mutex_unlock(&lock);
        /* Whoever gets it back frees it, sent or (its owner gone) not:
         * it holds what routed it. */
        r->finished(r);
    }
    while (calls != NULL) {
        loop_call *call = calls;
        calls = call->next;
        call->fn(call->arg);
        free(call);
    }
}

/* Under the lock: the reply is answered; it goes back to the loop. */
static void queue_finished(pb_reply *r)
{
    r->state = PB_REPLY_FINISHING;
    r->next_finished = NULL;
    *finished_tail = r;
    finished_tail = &r->next_finished;
}

/* The loop is about to wait: whatever comes next starts a new burst. */
static void on_before_wait(struct ev_loop *l, ev_prepare *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    burst_ns = 0;
}

void pb_replies_init(struct ev_loop *l)
{
    loop = l;
    loop_thread = pthread_self();
    ev_async_init(&wake, on_wake);
    ev_async_start(loop, &wake);
    ev_prepare_init(&before_wait, on_before_wait);
    ev_prepare_start(loop, &before_wait);
    /* Neither alone may keep the loop running. */
    ev_unref(loop);
    ev_unref(loop);
}

int pb_run_on_loop(void (*fn)(void *arg), void *arg)
{
    if (loop == NULL || fn == NULL)
        return -1;
    loop_call *call = malloc(sizeof *call);
    if (call == NULL)
        return -1;
    call->fn = fn;
    call->arg = arg;
    call->next = NULL;
    pthread_mutex_lock(&lock);
    *calls_tail = call;
    calls_tail = &call->next;
    pthread_mutex_unlock(&lock);
    ev_async_send(loop, &wake);
    return 0;
}

void pb_replies_cleanup(void)
{
    if (loop != NULL && ev_is_active(&wake)) {
        ev_ref(loop);
        ev_async_stop(loop, &wake);
    }
    if (loop != NULL && ev_is_active(&before_wait)) {
        ev_ref(loop);
        ev_prepare_stop(loop, &before_wait);
    }
    while (calls_head != NULL) {
        loop_call *call = calls_head;
        calls_head = call->next;
        free(call);
    }
    calls_tail = &calls_head;
    finished_head = NULL;
    finished_tail = &finished_head;
    while (live != NULL)
        pb_reply_free(live);
    while (n_spare > 0)
        free(spare[--n_spare]);
    loop = NULL;
    counted = NULL;
}

/* --- Durations -------------------------------------------------------------- */

void pb_replies_set_stats(pb_worker_stats *slot)
{
    counted = slot;
}

static void count_named(pb_named_counter *table, int index, int failed)
{
    if (index < 0)
        return;
    pb_count(&table[index].messages, 1);
    if (failed)
        pb_count(&table[index].errors, 1);
}

/* A real clock read rather than ev_now(), which is the time the loop
 * iteration began: every request of a pipelined batch would seem to take
 * no time, and the first none of the time its batch spent. */
static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* When a request starts: the clock read when the previous reply of the
 * loop thread was observed, as long as the loop has not waited since (the
 * loop thread went straight on to this request), so a burst of requests
 * costs one clock read each rather than two. */
static long long started_now(void)
{
    if (loop == NULL || burst_ns == 0)
        burst_ns = now_ns();
    return burst_ns;
}

void pb_reply_observe(pb_reply *r)
{
    long long now = now_ns();
    burst_ns = now;
    if (counted == NULL)
        return;
    count_named(counted->instances, r->instance_stats, r->failed);
    count_named(counted->routes, r->route_stats, r->failed);
    if (r->instance_stats >= 0)
        pb_latency_record(&counted->latency[r->instance_stats], now - r->started_ns);
}

/* --- Reply objects --------------------------------------------------------- */

pb_reply *pb_reply_new(void *owner, pb_reply_finished_fn *finished,
                       const pb_codec *codec, pb_buf *out)
{
    pb_reply *r = n_spare > 0 ? spare[--n_spare] : malloc(sizeof *r);
    if (r == NULL)
        return NULL;
    r->own = (pb_buf)PB_BUF_INIT;
    r->out = out != NULL ? out : &r->own;
    r->mark = pb_buf_used(r->out);
    r->written = NULL;
    r->codec = codec;
    r->done = 0;
    r->failed = 0;
    r->error[0] = '\0';
    r->state = PB_REPLY_CALLING;
    r->complete = 0;
    r->owner = owner;
    r->finished = finished;
    r->next = r->next_finished = NULL;
    r->cycle = NULL;
    r->instance_name = "?";
    r->instance_stats = r->route_stats = -1;
    r->started_ns = started_now();
    r->prev_live = NULL;
    r->next_live = live;
    if (live != NULL)
        live->prev_live = r;
    live = r;
    return r;
}

void pb_reply_free(pb_reply *r)
{
    if (r == NULL)
        return;
    if (r->prev_live != NULL)
        r->prev_live->next_live = r->next_live;
    else
        live = r->next_live;
    if (r->next_live != NULL)
        r->next_live->prev_live = r->prev_live;
    pb_buf_free(&r->own);
    if (n_spare < SPARE_REPLIES)
        spare[n_spare++] = r;
    else
        free(r);
}

void pb_reply_orphan(pb_reply *r)
{
    pthread_mutex_lock(&lock);
    r->owner = NULL;
    pthread_mutex_unlock(&lock);
}

int pb_reply_cancelled(const pb_reply *r)
{
    if (r == NULL)
        return 1;
    pthread_mutex_lock(&lock);
    int closed = r->owner == NULL;
    pthread_mutex_unlock(&lock);
    return closed;
}

/* --- Outcomes -------------------------------------------------------------- */

static void set_error(pb_reply *r, const char *text)
{
    if (r->error[0] == '\0')
        snprintf(r->error, sizeof r->error, "%s", text);
}

/* Makes the outcome an answer or a failure with a reason, never both. */
static void settle(pb_reply *r, int rc)
{
    if (rc == PB_DEFER && r->done == 0)
        return;
    if (!r->failed && r->done == 1 && (rc == PB_OK || rc == PB_DEFER))
        return;
    if (r->done > 1)
        set_error(r, "plugin replied more than once");
    else if (r->done == 0 && rc == PB_OK)
        set_error(r, "plugin returned no reply");
    else if (rc != PB_OK && rc != PB_ERROR && rc != PB_DEFER)
        set_error(r, "plugin returned a status that is not PB_OK, PB_ERROR "
                     "or PB_DEFER");
    else
        set_error(r, "plugin failed");
    r->failed = 1;
    if (r->written != NULL && r->written == r->out)
        pb_buf_truncate(r->out, r->out->start + r->mark);
    else if (r->written != NULL)
        pb_buf_clear(r->written);
}

int pb_reply_returned(pb_reply *r, int rc)
{
    int on_loop = pb_on_loop_thread();
    if (on_loop && rc != PB_DEFER) {
        /* Nobody else was given the reply: no lock needed. */
        settle(r, rc);
        return 1;
    }
    pthread_mutex_lock(&lock);
    /* An answer another thread is still writing is not one yet. */
    int waiting = rc == PB_DEFER && !r->complete;
    if (waiting) {
        r->state = PB_REPLY_DEFERRED;
    } else {
        settle(r, rc == PB_DEFER ? PB_OK : rc);
        if (!on_loop)
            queue_finished(r);
    }
    pthread_mutex_unlock(&lock);
    if (waiting)
        return 0;
    if (on_loop)
        return 1;
    ev_async_send(loop, &wake);
    return 0;
}

/*
 * Where an answer is written: during its handle() on the loop thread, where
 * the reply was told to write; anywhere else, its own buffer.
 */
static pb_buf *target(pb_reply *r)
{
    return r->state == PB_REPLY_CALLING && pb_on_loop_thread() ? r->out : &r->own;
}

/* Counts an answer; only the first may write. */
static int claim(pb_reply *r)
{
    if (r->done++ > 0) {
        set_error(r, "plugin replied more than once");
        return -1;
    }
    return 0;
}

/* After an answer: a deferred reply goes back to the loop now. */
static void answered(pb_reply *r)
{
    if (r->state == PB_REPLY_CALLING && pb_on_loop_thread()) {
        r->complete = 1;
        return;
    }
    pthread_mutex_lock(&lock);
    r->complete = 1;
    int deferred = r->state == PB_REPLY_DEFERRED;
    if (deferred)
        queue_finished(r);
    pthread_mutex_unlock(&lock);
    if (deferred)
        ev_async_send(loop, &wake);
}

static void encode_failed(pb_reply *r, pb_buf *buf, size_t keep, int rc,
                          const char *content_type,
                          const char *content_encoding, size_t length)
{
    pb_buf_truncate(buf, buf->start + keep);
    if (rc == PB_FRAME_HEADER_TOO_LONG) {
        char text[120];
        snprintf(text, sizeof text,
                 "reply header is %zu bytes, more than the %d a frame can carry",
                 pb_frame_header_length(content_type, content_encoding, length),
                 PB_FRAME_MAX_HEADER);
        set_error(r, text);
    } else {
        set_error(r, "out of memory while encoding the reply");
    }
    r->failed = 1;
}

int pb_reply_bytes(pb_reply *r, const char *content_type,
                   const char *content_encoding, const void *content,
                   size_t length)
{
    if (r == NULL || claim(r) != 0)
        return PB_ERROR;
    pb_buf *buf = r->written = target(r);
    size_t keep = pb_buf_used(buf);
    int rc = PB_OK;
    if (content_type == NULL || content_encoding == NULL
        || (content == NULL && length > 0)) {
        set_error(r, "plugin gave a reply without content-type, encoding or content");
        r->failed = 1;
        rc = PB_ERROR;
    } else {
        int e = r->codec->reply_head(buf, content_type, content_encoding, length, 0);
        if (e == 0 && pb_buf_append(buf, content, length) != 0)
            e = PB_FRAME_NO_MEMORY;
        if (e == 0)
            e = r->codec->reply_tail(buf);
        if (e != 0) {
            encode_failed(r, buf, keep, e, content_type, content_encoding, length);
            rc = PB_ERROR;
        }
    }
    answered(r);
    return rc;
}

unsigned char *pb_reply_buffer(pb_reply *r, const char *content_type,
                               const char *content_encoding, size_t length)
{
    if (r == NULL || claim(r) != 0)
        return NULL;
    /* The content is written after this returns: only handle() itself may
     * ask, since its return is what sends the reply. */
    if (r->state != PB_REPLY_CALLING) {
        set_error(r, "reply_buffer is for handle() itself; "
                     "answer a deferred reply with reply_bytes");
        r->failed = 1;
        answered(r);
        return NULL;
    }
    pb_buf *buf = r->written = target(r);
    size_t keep = pb_buf_used(buf);
    if (content_type == NULL || content_encoding == NULL) {
        set_error(r, "plugin gave a reply without content-type or encoding");
        r->failed = 1;
        return NULL;
    }
    int e = r->codec->reply_head(buf, content_type, content_encoding, length, 0);
    unsigned char *content = e == 0 ? pb_buf_extend(buf, length) : NULL;
    if (content != NULL && (e = r->codec->reply_tail(buf)) != 0)
        content = NULL;
    if (content == NULL)
        encode_failed(r, buf, keep, e == 0 ? PB_FRAME_NO_MEMORY : e,
                      content_type, content_encoding, length);
    /* Written in full once handle(), on this thread, returns. */
    r->complete = 1;
    return content;
}

int pb_reply_encode_json(pb_buf *out, const pb_codec *codec,
                         const pb_json *value, int push)
{
    /* A frame's header needs the content's length first: dump it once,
     * then move it behind the header written in front of it. */
    size_t keep = pb_buf_used(out);
    pb_buf content = PB_BUF_INIT;
    int rc = pb_json_dump(&content, (const json_t *)value) == 0
             && codec->reply_head(out, "text/json", "utf-8",
                                  pb_buf_used(&content), push) == 0
             && pb_buf_append(out, pb_buf_head(&content), pb_buf_used(&content)) == 0
             && codec->reply_tail(out) == 0 ? 0 : -1;
    pb_buf_free(&content);
    if (rc != 0)
        pb_buf_truncate(out, out->start + keep);
    return rc;
}

int pb_reply_json(pb_reply *r, pb_json *value)
{
    if (r == NULL || claim(r) != 0) {
        json_decref((json_t *)value);
        return PB_ERROR;
    }
    pb_buf *buf = r->written = target(r);
    int rc = PB_OK;
    if (value == NULL) {
        set_error(r, "plugin gave no JSON value to reply with (out of memory?)");
        rc = PB_ERROR;
    } else if (pb_reply_encode_json(buf, r->codec, value, 0) != 0) {
        set_error(r, "could not encode the plugin's JSON reply "
                     "(out of memory, or NaN or infinity in it)");
        rc = PB_ERROR;
    }
    json_decref((json_t *)value);
    if (rc != PB_OK)
        r->failed = 1;
    answered(r);
    return rc;
}

void pb_reply_error(pb_reply *r, const char *text)
{
    if (r == NULL)
        return;
    snprintf(r->error, sizeof r->error, "%s", text);
    /* Inside handle(), the PB_ERROR it returns is the answer; later, this
     * call is. */
    if (r->state == PB_REPLY_CALLING)
        return;
    if (claim(r) == 0) {
        r->failed = 1;
        answered(r);
    }
}

/*
 * reply.h - replies in flight. A reply answered on the loop thread while
 * its handle() runs, with nothing ahead of it, is encoded straight into the
 * connection's output: the common case costs no copy. Any other reply
 * (deferred, answered on another thread, or behind an earlier one still in
 * flight) is encoded into its own buffer and handed back to the loop
 * thread, which lets it out once every reply ahead of it has gone, so that
 * replies leave each connection in request order.
 *
 * A reply belongs to an owner, which is told through the reply's own
 * `finished` callback when an answer given later is back on the loop: a
 * connection of the frame and line framings, or an HTTP request.
 */
#ifndef PB_REPLY_H
#define PB_REPLY_H

#include <ev.h>
#include <plugboard/plugin.h>

#include "buffer.h"

struct pb_codec;
struct pb_cycle;
struct pb_worker_stats;

/* Called on the loop thread for a reply that finishes later than its
 * handle() call (see pb_reply_returned), once its answer (or error) is
 * complete; owner is then NULL when the owner let go of it
 * (pb_reply_orphan), and the callback frees it. */
typedef void pb_reply_finished_fn(pb_reply *reply);

typedef enum pb_reply_state {
    PB_REPLY_CALLING,       /* its handle() runs (on the loop or a pool) */
    PB_REPLY_DEFERRED,      /* handle() returned PB_DEFER, not answered yet */
    PB_REPLY_FINISHING,     /* answered, on its way back to the loop */
    PB_REPLY_READY,         /* back on the loop, waiting for earlier replies */
} pb_reply_state;

struct pb_reply {
    pb_buf *out;                    /* where a reply written during handle()
                                     * on the loop goes: the connection's
                                     * output, or `own` */
    size_t mark;                    /* pb_buf_used(out) before this reply, to
                                     * undo it (relative to out->start, which
                                     * growing the buffer may move) */
    pb_buf *written;                /* where the answer went: out or &own */
    pb_buf own;
    const struct pb_codec *codec;
    int done;                       /* reply calls made; only the first writes */
    int failed;                     /* answered with an error */
    char error[256];                /* why, for the plugin_failed error */

    /* Shared with other threads, under the replies' lock. */
    pb_reply_state state;
    int complete;                   /* an answer is written in full */
    void *owner;                    /* what it answers (a connection, an
                                     * HTTP request); NULL once it left */
    pb_reply_finished_fn *finished; /* tells the owner it is back */

    /* The loop thread's alone. */
    pb_reply *next;                 /* the connection's queue, request order */
    pb_reply *next_finished;        /* the queue back to the loop */
    pb_reply *prev_live, *next_live;    /* every reply, for the exit */
    struct pb_cycle *cycle;         /* held while in flight: the configuration
                                     * it was routed by */
    const char *instance_name;      /* for the log; lives as long as cycle */
    int instance_stats, route_stats;    /* counters to count it against */
    long long started_ns;           /* CLOCK_MONOTONIC at pb_reply_new */
};

/* Sets up the replies of this worker, answered later on loop. */
void pb_replies_init(struct ev_loop *loop);

/* Where pb_reply_observe counts replies and records durations: this
 * worker's slot of the statistics (shared.h). */
void pb_replies_set_stats(struct pb_worker_stats *slot);

/* At exit, after every plugin is destroyed: frees the replies plugins
 * never answered and work queued for the loop that never ran. */
void pb_replies_cleanup(void);

/* A reply for a request of owner, which `finished` tells when it is
 * answered later (loop thread). out is where an answer during handle() on
 * the loop thread is written (the connection's output), or NULL for its
 * own buffer. NULL when out of memory. */
pb_reply *pb_reply_new(void *owner, pb_reply_finished_fn *finished,
                       const struct pb_codec *codec, pb_buf *out);
void pb_reply_free(pb_reply *reply);

/* The reply is queued for its client, answer or error: counts it for its
 * instance and route (and as an error when it failed) and records the
 * time since pb_reply_new in its instance's histogram. Once per reply, on
 * the loop thread; a reply counted against no instance records nothing. */
void pb_reply_observe(pb_reply *reply);

/*
 * handle() returned rc (PB_OK, PB_ERROR or PB_DEFER) for reply. Makes the
 * outcome one of two: an answer in reply->written, or reply->failed with
 * reply->error saying why (anything written undone). On the loop thread,
 * returns 1 when the reply is finished now (the caller lets it out) and 0
 * when it will reach the `finished` callback later; on any other thread,
 * the reply always goes back through the callback, and 0 is returned.
 */
int pb_reply_returned(pb_reply *reply, int rc);

/* The owner of a reply still to finish went away (loop thread): when it
 * finishes, its `finished` callback gets it with owner NULL, to free it. */
void pb_reply_orphan(pb_reply *reply);

/* The reply services of pb_host. */
int pb_reply_bytes(pb_reply *reply, const char *content_type,
                   const char *content_encoding, const void *content,
                   size_t length);
unsigned char *pb_reply_buffer(pb_reply *reply, const char *content_type,
                               const char *content_encoding, size_t length);
int pb_reply_json(pb_reply *reply, pb_json *value);
void pb_reply_error(pb_reply *reply, const char *text);
int pb_reply_cancelled(const pb_reply *reply);

/* Runs fn(arg) on the loop thread soon; from any thread. 0 or -1. */
int pb_run_on_loop(void (*fn)(void *arg), void *arg);

/* Whether the caller runs on this worker's loop thread. */
int pb_on_loop_thread(void);

/* Appends a JSON value as a reply or push would write it; 0 or -1. */
int pb_reply_encode_json(pb_buf *out, const struct pb_codec *codec,
                         const pb_json *value, int push);

#endif

/*
 * later.c - an example plugin that answers later without blocking anyone:
 * {"action": "later", "value": "x", "seconds": 0.5} is answered
 * {"result": "x"} after that many seconds (at most `max_seconds` from its
 * settings), from a timer on the worker's libev loop. handle() returns
 * PB_DEFER and the loop goes on serving every other connection meanwhile;
 * replies still leave each connection in request order.
 *
 * Build: see the Makefile beside it (the SDK, and libev's header).
 */
#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include <plugboard/plugin.h>

typedef struct pending pending;

typedef struct later {
    const pb_host *host;
    double max_seconds;
    pending *waiting;           /* timers running, to stop at worker_stop */
} later;

struct pending {
    ev_timer timer;             /* first: the callback gets it back */
    later *plugin;
    pb_reply *reply;
    char *value;
    pending *prev, *next;
};

static void forget(later *l, pending *p)
{
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        l->waiting = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    free(p->value);
    free(p);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    pending *p = (pending *)w;
    const pb_host *host = p->plugin->host;
    ev_timer_stop(loop, w);
    /* A client that left gets nothing; answering would be harmless too. */
    if (!host->reply_cancelled(p->reply)) {
        pb_json *o = host->json_new_object();
        host->json_set(o, "result", host->json_new_string(p->value, strlen(p->value)));
        host->reply_json(p->reply, o);
    } else {
        host->reply_error(p->reply, "cancelled");
    }
    forget(p->plugin, p);
}

static int create(const pb_host *host, pb_instance *instance,
                  const pb_json *settings, void **state)
{
    double max_seconds = 60.0;
    const pb_json *max = host->json_get(settings, "max_seconds");
    if (host->json_size(settings) > (max != NULL ? 1u : 0u)) {
        host->settings_error(instance, NULL, "only \"max_seconds\" is a setting");
        return PB_ERROR;
    }
    if (max != NULL) {
        pb_json_type t = host->json_type(max);
        max_seconds = host->json_number(max);
        if ((t != PB_JSON_INTEGER && t != PB_JSON_REAL) || max_seconds < 0) {
            host->settings_error(instance, max, "\"max_seconds\" must be a "
                                 "number of seconds, 0 or more");
            return PB_ERROR;
        }
    }
    later *l = calloc(1, sizeof *l);
    if (l == NULL)
        return PB_ERROR;
    l->host = host;
    l->max_seconds = max_seconds;
    *state = l;
    return PB_OK;
}

static int handle(void *state, const pb_request *request, pb_reply *reply)
{
    later *l = state;
    const pb_host *host = l->host;
    size_t length;
    const char *value = host->json_string(host->json_get(request->json, "value"), &length);
    const pb_json *seconds = host->json_get(request->json, "seconds");
    double delay = host->json_number(seconds);
    if (value == NULL || delay < 0 || delay > l->max_seconds) {
        host->reply_error(reply, "later needs a string \"value\" and \"seconds\" "
                          "from 0 to %g", l->max_seconds);
        return PB_ERROR;
    }
    /* The request is gone once handle() returns: keep a copy. */
    pending *p = calloc(1, sizeof *p);
    if (p == NULL || (p->value = malloc(length + 1)) == NULL) {
        free(p);
        host->reply_error(reply, "out of memory");
        return PB_ERROR;
    }
    memcpy(p->value, value, length + 1);
    p->plugin = l;
    p->reply = reply;
    p->next = l->waiting;
    if (l->waiting != NULL)
        l->waiting->prev = p;
    l->waiting = p;
    ev_timer_init(&p->timer, on_timer, delay, 0.0);
    ev_timer_start(host->loop(), &p->timer);
    return PB_DEFER;
}

/* The worker stops serving this instance: answer what still waits. */
static void worker_stop(void *state)
{
    later *l = state;
    while (l->waiting != NULL) {
        pending *p = l->waiting;
        ev_timer_stop(l->host->loop(), &p->timer);
        l->host->reply_error(p->reply, "the server is stopping");
        forget(l, p);
    }
}

static void destroy(void *state)
{
    free(state);
}

PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
    PB_PLUGIN_VERSIONED,
    .name = "later",
    .description = "answers after a delay, from a timer on the worker's loop",
    .create = create,
    .handle = handle,
    .destroy = destroy,
    .worker_stop = worker_stop,
};

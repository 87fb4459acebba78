/*
 * plugin_host.h - the daemon's side of the plugin SDK: the pb_host services
 * table, the instance object behind the SDK's opaque type, a plugin's entry
 * points whatever ABI it was built for, and the guarded call into handle().
 */
#ifndef PB_PLUGIN_HOST_H
#define PB_PLUGIN_HOST_H

#include <plugboard/plugin.h>

#include "buffer.h"
#include "config.h"
#include "diag.h"
#include "reply.h"
#include "shared.h"

struct pb_pool;

/*
 * A module's entry points as the daemon calls them, read from a descriptor
 * of any supported ABI: an ABI 1 plugin's handle() is given the request
 * layout of its own header.
 */
typedef struct pb_module {
    unsigned int abi_version;
    const char *name;
    int (*create)(const pb_host *host, pb_instance *instance,
                  const pb_json *settings, void **state);
    int (*handle)(void *state, const void *request, pb_reply *reply);
    void (*destroy)(void *state);
    int (*worker_start)(void *state);
    void (*worker_stop)(void *state);
    void (*on_broadcast)(void *state, const void *data, size_t length);
} pb_module;

/* One configured plugin instance. */
struct pb_instance {
    char *name;                     /* owned copy of conf->name */
    pb_module module;
    void *dl;                       /* dlopen handle of the module */
    void *state;                    /* what create() returned */
    const pb_plugin_conf *conf;     /* settings, positions (owned by the config) */
    const char *config_dir;         /* base of relative paths in settings */
    pb_diag *diag;                  /* where settings_error goes; only during create */
    int created;                    /* create() succeeded: destroy() is owed */
    int serving;                    /* worker_start() ran: worker_stop() is owed */
    struct pb_pool *pool;           /* threads = N: where handle() runs */
    size_t index;                   /* its place in the cycle's instances */
};

extern const pb_host pb_host_services;

/*
 * Reads the descriptor a module exports into *module. -1 with the reason
 * in why (an ABI this daemon does not load) otherwise.
 */
int pb_module_read(const void *descriptor, pb_module *module, char *why,
                   size_t why_size);

/* Where the `stats` service reads the daemon's counters, and the worker
 * slot whose table the `metric` service claims entries in. NULL (the
 * master, the configuration check) leaves both services without
 * statistics. */
void pb_plugin_host_set_shared(pb_shared *shared, int slot);

/* What the push services need of the connections, which the worker's
 * connection layer provides (pb_conn_replies_init). */
typedef struct pb_push_ops {
    pb_client *(*hold)(const pb_request *request,
                       void (*on_close)(pb_client *client, void *arg), void *arg);
    void (*release)(pb_client *client);
    /* json when not NULL, else the bytes. */
    int (*push)(pb_client *client, const char *content_type,
                const char *content_encoding, const void *content,
                size_t length, const pb_json *json);
    void (*close)(pb_client *client);
    /* Sends a slow_consumer error frame, then closes. */
    void (*close_slow)(pb_client *client, const char *reason);
} pb_push_ops;

void pb_plugin_host_set_pushes(const pb_push_ops *ops);

/* What sends the `broadcast` service's bytes to the instance's other
 * copies (the worker's bus); unset, the service fails. */
typedef int pb_broadcast_fn(pb_instance *origin, const void *data,
                            size_t length);
void pb_plugin_host_set_broadcast(pb_broadcast_fn *fn);

/* Hands a broadcast to the instance's on_broadcast(), when it serves and
 * has one; loop thread. */
void pb_instance_broadcast(pb_instance *instance, const void *data,
                           size_t length);

/* The worker's loop, for the `loop` service and the replies in flight. */
void pb_plugin_host_set_loop(struct ev_loop *loop);

/*
 * In a worker that will serve the instance: starts its thread pool when it
 * has `threads`, then the module's worker_start(). 0, or -1 (logged).
 */
int pb_instance_serve(pb_instance *instance);

/* Undoes pb_instance_serve: the pool's threads answer what is queued for
 * them and are joined, then worker_stop() runs. */
void pb_instance_unserve(pb_instance *instance);

/*
 * Calls the instance's handle() for request (on the calling thread), then
 * hands the outcome to pb_reply_returned(): see reply.h for what the
 * result means.
 */
int pb_instance_handle(pb_instance *instance, const pb_request *request,
                       pb_reply *reply);

/*
 * For callers without a loop (tests, fuzzing): calls handle() and returns
 * PB_OK with one encoded reply appended to out, or PB_ERROR with nothing
 * appended and why in error (a deferred reply counts as an error here).
 */
int pb_instance_call(pb_instance *instance, const pb_request *request,
                     pb_buf *out, char *error, size_t error_size);

/*
 * Queues request for the instance's pool (instance->pool set): copies what
 * the request points to, for the pool thread. 0, or -1 when out of memory.
 */
int pb_instance_submit(pb_instance *instance, const pb_request *request,
                       pb_reply *reply);

/* Frees the scratch memory the reply services keep between calls; at exit. */
void pb_plugin_host_cleanup(void);

#endif

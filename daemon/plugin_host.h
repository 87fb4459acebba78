/*
 * plugin_host.h - the daemon's side of the plugin SDK: the pb_host services
 * table, the instance and reply objects behind the SDK's opaque types, and
 * the call into a plugin's handle().
 */
#ifndef PB_PLUGIN_HOST_H
#define PB_PLUGIN_HOST_H

#include <plugboard/plugin.h>

#include "buffer.h"
#include "config.h"
#include "diag.h"
#include "shared.h"

/* One configured plugin instance. */
struct pb_instance {
    char *name;                     /* owned copy of conf->name */
    const pb_plugin *plugin;        /* the module's descriptor */
    void *dl;                       /* dlopen handle of the module */
    void *state;                    /* what create() returned */
    const pb_plugin_conf *conf;     /* settings, positions (owned by the config) */
    const char *config_dir;         /* base of relative paths in settings */
    pb_diag *diag;                  /* where settings_error goes; only during create */
    int created;                    /* create() succeeded: destroy() is owed */
    int stats_index;                /* its counters in this worker's slot, or -1 */
};

/* The reply to one request, encoded straight into the connection's output. */
struct pb_reply {
    pb_buf *out;                    /* output buffer of the connection */
    size_t mark;                    /* pb_buf_used(out) before this reply, to
                                     * undo it (relative to out->start, which
                                     * growing the buffer may move) */
    pb_framing framing;             /* frame: header + content; line: content + \n */
    int done;                       /* reply calls made; only the first writes */
    char error[256];                /* reply_error's text */
};

extern const pb_host pb_host_services;

/* Where the `stats` service reads the daemon's counters. */
void pb_plugin_host_set_shared(const pb_shared *shared);

void pb_reply_init(pb_reply *reply, pb_buf *out, pb_framing framing);

/*
 * Calls the instance's handle() for request and makes sure the outcome is
 * one of two: PB_OK with exactly one encoded reply in reply->out, or
 * PB_ERROR with nothing in reply->out (anything written is undone) and
 * reply->error saying why (a plugin that returns PB_OK without replying, or
 * PB_ERROR without a reason, gets one).
 */
int pb_instance_handle(pb_instance *instance, const pb_request *request,
                       pb_reply *reply);

/* Frees the scratch memory the reply services keep between calls; at exit. */
void pb_plugin_host_cleanup(void);

#endif

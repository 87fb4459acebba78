/*
 * cycle.h - everything derived from one configuration file: the checked
 * config, its plugin instances and its resolved routes. Parsed once, then
 * started (instances created, routes resolved) only where plugin code may
 * run: in a worker or in the master's check child. Never changed after; a
 * reload builds a new one and swaps it in.
 */
#ifndef PB_CYCLE_H
#define PB_CYCLE_H

#include "config.h"
#include "diag.h"
#include "plugin_host.h"
#include "router.h"
#include "tls.h"

typedef struct pb_cycle {
    pb_config *config;
    /* The file as it was read: what a reload hands to every worker, so that
     * all of them apply the very text the master checked. */
    char *text;
    size_t text_len;
    /* The certificates and keys its TLS listeners name, read with the
     * text, by the master: workers may not be able to read them. */
    pb_tls_files tls_files;
    /* Once started: each TLS listener's context, by its index in
     * config->listeners (NULL for plaintext ones). */
    SSL_CTX **tls;
    /* Empty until pb_cycle_start(): the master's cycles stay so. */
    pb_instance **instances;
    size_t n_instances;
    pb_router router;
    /* In a worker: replies in flight routed by this cycle. A cycle replaced
     * by a reload lives on, retired, until the last of them is done. */
    size_t holds;
    int retired;
    struct pb_cycle *next_retired;
} pb_cycle;

/* Told before the plugin code of config->plugins[index] runs (call is
 * "create" or "destroy"), so that a crash can be blamed on its entry. */
typedef void pb_cycle_step(void *arg, size_t index, const char *call);

/* The plugin directory used when the config names none:
 * $PLUGBOARD_PLUGIN_DIR, else the one fixed at build time. */
const char *pb_default_plugin_dir(void);

/* Reads and parses the file, and reads the TLS files it names; no plugin
 * code runs. NULL with every problem in diag. */
pb_cycle *pb_cycle_read(const char *path, pb_diag *diag);

/* Parses text read from path earlier (copied); path names the file in
 * messages and is the base of relative paths. Reads no TLS file. */
pb_cycle *pb_cycle_parse(const char *path, const char *text, size_t len,
                         pb_diag *diag);

/* What the master sends a worker to build the same cycle: the text and
 * the TLS files, in one buffer; and the cycle rebuilt from it. */
int pb_cycle_pack(const pb_cycle *cycle, pb_buf *out);
pb_cycle *pb_cycle_unpack(const char *path, const unsigned char *data,
                          size_t len, pb_diag *diag);

/* Builds the TLS listeners' contexts, creates every plugin instance, in
 * the config's order, and resolves the routes; step (when not NULL) is told before each create(). 0, or -1 with
 * every problem in diag and no instance left. */
int pb_cycle_start(pb_cycle *cycle, pb_cycle_step *step, void *arg,
                   pb_diag *diag);

/* Destroys the instances, last created first, and forgets the routes and
 * TLS contexts: the cycle is as parsed again. step as for pb_cycle_start(). */
void pb_cycle_stop(pb_cycle *cycle, pb_cycle_step *step, void *arg);

/* The instance called name, or NULL. */
pb_instance *pb_cycle_instance(const pb_cycle *cycle, const char *name);

/* Stops the cycle if started, and frees it. NULL is ignored. */
void pb_cycle_free(pb_cycle *cycle);

/* In a worker: starts every instance serving (thread pools, worker_start);
 * 0, or -1 (logged) with none left serving. */
int pb_cycle_serve(pb_cycle *cycle);

/* A reply in flight was routed by cycle, and is done (loop thread). */
void pb_cycle_hold(pb_cycle *cycle);
void pb_cycle_drop(pb_cycle *cycle);

/* The worker no longer routes by cycle: freed now, or once its last reply
 * in flight is done. */
void pb_cycle_retire(pb_cycle *cycle);

/* Whether a retired cycle lives on in this worker; any thread. */
int pb_cycle_any_retired(void);

/* Hands a broadcast for the instance called name (name_length bytes) to
 * that instance in current and in every retired cycle, but `except`
 * (the sender, when it is in this process). */
void pb_cycle_deliver(const pb_cycle *current, const char *name,
                      size_t name_length, const void *except,
                      const void *data, size_t length);

/* At exit: frees the retired cycles, whatever is still in flight. */
void pb_cycle_free_retired(void);

#endif

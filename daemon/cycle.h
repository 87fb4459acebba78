/*
 * cycle.h - everything derived from one configuration file: the checked
 * config, its plugin instances and its resolved routes. Built whole before
 * anything uses it and never changed after; a reload builds a new one and
 * swaps it in.
 */
#ifndef PB_CYCLE_H
#define PB_CYCLE_H

#include "config.h"
#include "diag.h"
#include "plugin_host.h"
#include "router.h"

typedef struct pb_cycle {
    pb_config *config;
    pb_instance **instances;
    size_t n_instances;
    pb_router router;
    /* The file as it was read: what a reload hands to every worker, so that
     * all of them apply the very text the master checked. */
    char *text;
    size_t text_len;
    /* In a worker: replies in flight routed by this cycle. A cycle replaced
     * by a reload lives on, retired, until the last of them is done. */
    size_t holds;
    int retired;
    struct pb_cycle *next_retired;
} pb_cycle;

/* The plugin directory used when the config names none:
 * $PLUGBOARD_PLUGIN_DIR, else the one fixed at build time. */
const char *pb_default_plugin_dir(void);

/* Loads the file, creates every plugin instance and resolves the routes.
 * NULL with every problem in diag. */
pb_cycle *pb_cycle_create(const char *path, pb_diag *diag);

/* The same from text read from path earlier (copied); path names the file
 * in messages and is the base of relative paths. */
pb_cycle *pb_cycle_parse(const char *path, const char *text, size_t len,
                         pb_diag *diag);

/* The instance called name, or NULL. */
pb_instance *pb_cycle_instance(const pb_cycle *cycle, const char *name);

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

/* At exit: frees the retired cycles, whatever is still in flight. */
void pb_cycle_free_retired(void);

#endif

/*
 * master.h - the master process: supervises the worker processes.
 */
#ifndef PB_MASTER_H
#define PB_MASTER_H

#include "cycle.h"
#include "listener.h"

/* What the master asks of the program around it. */
typedef struct pb_master_hooks {
    /* Loads and checks a configuration for a reload, its plugin instances
     * in a check child that first calls holdings(arg) to let go of what
     * the master holds; NULL (errors logged) when it is not usable. */
    pb_cycle *(*load)(const char *path, void (*holdings)(void *), void *arg);
    /* The workers were started (for detaching and readiness). */
    void (*ready)(void);
    /* In a worker that is about to exit: release process-wide state. */
    void (*worker_exit)(void);
} pb_master_hooks;

/*
 * Starts config->workers workers (0 = one per CPU) serving listeners with
 * cycle (checked, not started: each worker creates its own instances),
 * supervises them until SIGTERM/SIGINT, and returns the exit status.
 * Takes ownership of cycle (a reload replaces it; the last one is freed on
 * return). The listeners stay the caller's.
 */
int pb_master_run(pb_cycle *cycle, pb_listener_set *listeners,
                  const char *config_path, const pb_master_hooks *hooks);

/* How many workers config starts (workers = 0: one per CPU; at most
 * PB_MAX_WORKERS): how many copies of a reuseport listener to bind. */
int pb_master_workers(const pb_config *config);

#endif

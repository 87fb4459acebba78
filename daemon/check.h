/*
 * check.h - the check child: a configuration's plugin instances are
 * created, to prove they can be, in a short-lived child of the master that
 * drops privileges as a worker does, never in the master itself.
 */
#ifndef PB_CHECK_H
#define PB_CHECK_H

#include "cycle.h"
#include "diag.h"

/* What the check child, a fork of its caller, must let go of. */
typedef struct pb_check_release {
    /* Before any plugin code runs: everything the caller holds but the
     * cycle under check (descriptors no plugin should reach, memory no
     * leak check should find). May be NULL. */
    void (*holdings)(void *arg);
    void *arg;
    /* Last, before the child exits: process-wide state (log, caches). */
    void (*process)(void);
} pb_check_release;

/*
 * Forks the check child, which drops privileges like a worker, creates
 * every instance of cycle (parsed, not started) and destroys them again,
 * and reports back. 0 when every instance was created; -1 with every
 * reason in diag ("FILE:LINE: ..."), including a child that crashed
 * (blamed on the entry whose plugin code was running) or did not finish
 * in time. The caller's cycle stays as it was.
 */
int pb_check_cycle(pb_cycle *cycle, const pb_check_release *release,
                   pb_diag *diag);

#endif

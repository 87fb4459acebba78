/*
 * shared.h - what the master and its workers share, in one anonymous
 * shared mapping made before the first fork: the daemon-wide connection
 * count that max_connections limits, and the statistics counters, kept per
 * worker so that each has a single writer and a crashed worker's share can
 * be kept when it is replaced.
 */
#ifndef PB_SHARED_H
#define PB_SHARED_H

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>

#include "error.h"

#define PB_MAX_WORKERS 128
#define PB_STATS_NAMES 64           /* instances, and routes, counted per worker */
#define PB_STATS_NAME_LEN 128
#define PB_ERROR_CODES (PB_ERR_SHUTTING_DOWN + 1)

/* Counters for one plugin instance or route, found by its name. */
typedef struct pb_named_counter {
    atomic_int used;                /* set once name is written */
    char name[PB_STATS_NAME_LEN];
    atomic_long messages;
    atomic_long errors;             /* the plugin failed */
} pb_named_counter;

/* One worker's counters; only that worker writes them. */
typedef struct pb_worker_stats {
    atomic_long connections;        /* open now */
    atomic_long accepted;
    atomic_long refused;            /* busy at accept */
    atomic_long messages;
    atomic_long bytes_in;
    atomic_long bytes_out;
    atomic_long errors[PB_ERROR_CODES];
    pb_named_counter instances[PB_STATS_NAMES];
    pb_named_counter routes[PB_STATS_NAMES];
} pb_worker_stats;

/* Where a worker is in a reload, by the master's serial number of each
 * configuration: the master sets both `prepared` and `serving` when it forks
 * the worker; the worker sets `prepared` once it has built the new cycle (or
 * `failed` when it cannot) and `serving` when told to switch, which the
 * master does only once every worker is prepared. */
typedef struct pb_worker_config {
    atomic_ulong prepared;
    atomic_ulong failed;
    atomic_ulong serving;
} pb_worker_config;

typedef struct pb_shared {
    atomic_long connections;        /* all workers together */
    double started;                 /* wall clock at start, for uptime */
    atomic_long reloads;
    atomic_long failed_reloads;
    atomic_long worker_restarts;
    atomic_int workers;             /* running */
    /* One slot per worker, and one more that keeps the counts of workers
     * that are gone, so totals never go backwards. */
    pb_worker_stats slots[PB_MAX_WORKERS + 1];
    pb_worker_config configs[PB_MAX_WORKERS];
} pb_shared;

#define PB_ARCHIVE_SLOT PB_MAX_WORKERS

/* Maps a zeroed pb_shared; NULL when mmap fails. */
pb_shared *pb_shared_create(void);
void pb_shared_destroy(pb_shared *shared);

/* Worker `slot` takes a connection unless `max` are open daemon-wide;
 * returns 1 when taken (and counts it as accepted), 0 (counted as refused)
 * otherwise. */
int pb_shared_take_connection(pb_shared *shared, int slot, long max);
void pb_shared_release_connection(pb_shared *shared, int slot);

/* The master, after the worker of `slot` exited: gives back the
 * connections it held and moves its counts to the archive. */
void pb_shared_reset_worker(pb_shared *shared, int slot);

/* The index of name's counters in `table` (adding it), or -1 when full. */
int pb_stats_index(pb_named_counter *table, const char *name);

/* Everything, summed over workers, as a JSON object (new reference). */
json_t *pb_stats_snapshot(const pb_shared *shared);

#endif

/*
 * shared.h - what the master and its workers share, in one anonymous
 * shared mapping made before the first fork: the daemon-wide connection
 * count that max_connections limits, and the statistics counters, kept per
 * worker so that each has a single writer and a crashed worker's share can
 * be kept when it is replaced.
 *
 * Who writes what, without locks (every counter is a lock-free atomic, so a
 * process killed mid-update leaves nothing locked):
 *   - a worker writes only its own slot, but for its pid, which the
 *     master writes as it forks the worker;
 *   - the archive slot keeps the counts of names no longer counted
 *     elsewhere. The master adds a worker's counts to it after that worker
 *     exited; a worker adds to it the counts of a name it evicts from its
 *     own table to make room on a reload. Both only add (atomically), and
 *     claim a free archive entry by compare-and-swap, so they need no lock
 *     and a total never goes backwards.
 *   - when the archive's table is full, counts that have no entry there go
 *     to `retired`, reported as one counter per table.
 *   - plugins' metrics live in a table per slot too, claimed as a worker's
 *     plugins first ask for them and never given back while the worker
 *     lives, so that a handle stays valid for as long as the worker does.
 *     Only the master writes the archive's metrics, when it resets a slot.
 * Moving counts from a slot to the archive is not atomic as a whole; the
 * mover marks its slot `moving` and bumps `moves`, and a snapshot taken
 * meanwhile is taken again, so that nothing is counted twice or missed.
 */
#ifndef PB_SHARED_H
#define PB_SHARED_H

#include <jansson.h>
#include <plugboard/plugin.h>
#include <stdatomic.h>
#include <stddef.h>

#include "error.h"

#define PB_MAX_WORKERS 128
#define PB_STATS_NAMES 64           /* instances, and routes, counted per worker */
/* Room for a name and its NUL. A longer name is cut on a character
 * boundary and ends with a hash of the whole name, so that distinct long
 * names stay distinct counters and every stored name stays UTF-8. */
#define PB_STATS_NAME_LEN 128
#define PB_ERROR_CODES (PB_ERR_SLOW_CONSUMER + 1)
#define PB_METRICS 128              /* plugins' metrics per worker */
#define PB_METRIC_NAME_LEN 64       /* a metric's name or label and its NUL */
#define PB_STATS_LISTENERS 32       /* listener names counted per worker */

/*
 * The request-duration histogram's upper bounds, in nanoseconds (an
 * integer sum and bounds keep recording to integer compares and adds);
 * the last bucket, above them all, is +Inf.
 */
#define PB_LATENCY_BOUNDS 17
#define PB_LATENCY_BUCKETS (PB_LATENCY_BOUNDS + 1)
extern const long long pb_latency_bounds_ns[PB_LATENCY_BOUNDS];

typedef enum pb_stats_table { PB_STATS_INSTANCES, PB_STATS_ROUTES } pb_stats_table;

/* Counters for one plugin instance or route, found by its name. */
typedef struct pb_named_counter {
    atomic_int used;                /* 0 free, 1 counting, 2 name being written */
    char name[PB_STATS_NAME_LEN];
    /* An instance's module, as its descriptor names it ("" for a route),
     * for readers that group instances by what they are. */
    char module[PB_METRIC_NAME_LEN];
    atomic_long messages;
    atomic_long errors;             /* the plugin failed */
    unsigned long bound;            /* the owner's binding that last named it */
} pb_named_counter;

/* One instance's request durations in one worker, beside its entry in
 * `instances` (same index). Buckets are not cumulative here: a duration
 * adds to one bucket only; the count is their sum. */
typedef struct pb_latency {
    atomic_long buckets[PB_LATENCY_BUCKETS];
    atomic_llong sum_ns;
} pb_latency;

/* Connections of one listener, by its name. A worker claims entries as it
 * starts and when a reload renames a listener, and never gives one back
 * while it lives: a connection counted in an entry closes in it. */
typedef struct pb_listener_counter {
    atomic_int used;                /* 0 free, 1 counting, 2 name being written */
    char name[PB_STATS_NAME_LEN];
    atomic_long open;               /* now; not archived */
    atomic_long accepted;
} pb_listener_counter;

/*
 * One metric of a plugin instance in one worker (pb_metric_kind in
 * plugboard/plugin.h says how workers' values combine). Found by instance
 * name, metric name and label; claimed like a named counter, in table
 * order, so that the entries in use are those before the first free one.
 * The pb_metric handle a plugin holds is a pointer to it.
 */
typedef struct pb_metric_entry {
    atomic_int used;                /* 0 free, 1 counting, 2 key being written */
    int kind;                       /* pb_metric_kind */
    char instance[PB_STATS_NAME_LEN];   /* stored as the instance counters store it */
    char name[PB_METRIC_NAME_LEN];
    char label[PB_METRIC_NAME_LEN]; /* "" for none */
    atomic_llong value;
    /* CLOCK_MONOTONIC nanoseconds of the last change of a shared metric
     * (0 before the first), which tells the snapshot whose value is the
     * latest: the clock is the same in every process. */
    atomic_llong stamp;
} pb_metric_entry;

/* One worker's counters; only that worker writes them. */
typedef struct pb_worker_stats {
    atomic_int pid;                 /* set by the master as it forks the
                                     * worker; 0 while the slot is free */
    atomic_long connections;        /* open now */
    atomic_long accepted;
    atomic_long refused;            /* busy at accept */
    atomic_long refused_allow;      /* peer outside the listener's allow list */
    atomic_long refused_tls;        /* TLS handshake failed */
    atomic_long messages;
    atomic_long bytes_in;
    atomic_long bytes_out;
    atomic_long errors[PB_ERROR_CODES];
    pb_named_counter instances[PB_STATS_NAMES];
    pb_named_counter routes[PB_STATS_NAMES];
    pb_latency latency[PB_STATS_NAMES];     /* by index in `instances` */
    pb_listener_counter listeners[PB_STATS_LISTENERS];
    atomic_int moving;              /* counts are on their way to the archive */
    unsigned long binding;          /* bumped by each pb_stats_rebind */
    /* Entries of `metrics` claimed: the snapshot reads no further, so a
     * worker's pages of the table are touched only as it fills them. */
    atomic_int metrics_claimed;
    pb_metric_entry metrics[PB_METRICS];    /* last: see pb_shared_reset_worker */
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

/* What no archive entry could take, per table. */
typedef struct pb_retired {
    atomic_long messages;
    atomic_long errors;
} pb_retired;

typedef struct pb_shared {
    atomic_long connections;        /* all workers together */
    double started;                 /* wall clock at start, for uptime */
    atomic_long reloads;
    atomic_long failed_reloads;
    atomic_long worker_restarts;
    atomic_int workers;             /* running */
    atomic_ulong moves;             /* moves to the archive ever begun */
    pb_retired retired[2];          /* by pb_stats_table */
    pb_latency retired_latency;     /* of the instances retired */
    atomic_long retired_accepted;   /* of listeners the archive had no entry for */
    atomic_llong retired_metrics;   /* counters the archive had no entry for */
    /* One slot per worker, and one more that keeps the counts of workers
     * that are gone and of names evicted, so totals never go backwards. */
    pb_worker_stats slots[PB_MAX_WORKERS + 1];
    pb_worker_config configs[PB_MAX_WORKERS];
    /* The serial of the configuration every worker is to serve: the master
     * sets it once all are prepared, then counts the reload. */
    atomic_ulong committed;
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

/* The master, having forked the worker of `slot`: for the worker list. */
void pb_shared_set_pid(pb_shared *shared, int slot, long pid);

/* The master, after the worker of `slot` exited: gives back the
 * connections it held and moves its counts to the archive. */
void pb_shared_reset_worker(pb_shared *shared, int slot);

/*
 * Worker `slot` names its counters for a configuration: pb_stats_rebind,
 * then pb_stats_index for each instance and route name it counts. A name
 * already in the table keeps its entry; a new one takes a free entry or,
 * when there is none, evicts a name that this binding has not named, whose
 * counts move to the archive. Returns the entry's index, or -1 when every
 * entry is named by this binding (more than PB_STATS_NAMES names): that
 * name goes uncounted.
 */
void pb_stats_rebind(pb_shared *shared, int slot);
int pb_stats_index(pb_shared *shared, int slot, pb_stats_table table,
                   const char *name);
/* pb_stats_index for an instance, recording its module's name too. */
int pb_stats_instance_index(pb_shared *shared, int slot, const char *name,
                            const char *module);

/*
 * Worker `slot`'s counters for the listener `name`, claimed when new (a
 * listener's sockets share one name); -1 when PB_STATS_LISTENERS names
 * are taken: that listener goes uncounted. pb_stats_listener_open counts
 * a connection accepted and open, pb_stats_listener_close its close; both
 * take -1 and do nothing.
 */
int pb_stats_listener_index(pb_shared *shared, int slot, const char *name);
void pb_stats_listener_open(pb_shared *shared, int slot, int index);
void pb_stats_listener_close(pb_shared *shared, int slot, int index);

/*
 * Adds n to a counter of this worker's slot that only the worker's loop
 * thread writes: a load and a store, not a locked add, since nothing else
 * writes it at the same time (the master reads it, and archives it only
 * once the worker is gone). Readers still see whole values.
 */
static inline void pb_count(atomic_long *counter, long n)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Adds a request's duration to a histogram (its worker's loop thread
 * alone). */
void pb_latency_record(pb_latency *latency, long long ns);

/*
 * Worker `slot`'s entry for the metric `name` (with `label`, NULL for
 * none) of the instance named `instance`, claimed when new; safe from any
 * thread of the worker. Within an instance a name has one kind, and
 * either never a label or always one, so that the snapshot can report it.
 * The caller checks what the SDK promises of names and labels; this only
 * refuses what does not fit.
 */
#define PB_METRIC_FULL (-1)         /* every entry is taken */
#define PB_METRIC_CONFLICT (-2)     /* the name has another kind or labelling */
#define PB_METRIC_TOO_LONG (-3)     /* the name or the label */
int pb_metric_index(pb_shared *shared, int slot, const char *instance,
                    const char *name, const char *label, pb_metric_kind kind);

/* Counts delta, or sets the value, of a metric, as its kind allows: a
 * counter never goes down. */
void pb_metric_entry_add(pb_metric_entry *metric, long long delta);
void pb_metric_entry_set(pb_metric_entry *metric, long long value);

/* Everything, summed over workers, as a JSON object (new reference). */
json_t *pb_stats_snapshot(const pb_shared *shared);

#endif

/*
 * shared.c - state shared between the master and the workers: the
 * connection count, and the statistics counters with their archive. The
 * rules for who writes what are in shared.h.
 */
#include "shared.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>

/* A snapshot taken while counts move to the archive is taken again; after
 * this many tries (a worker killed mid-move keeps its slot marked until
 * the master replaces it) the last one is answered as it is. */
#define SNAPSHOT_TRIES 100

static double wall_clock(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

pb_shared *pb_shared_create(void)
{
    /* Anonymous mappings are zero-filled, and zero is a valid initial
     * state for every lock-free atomic here. */
    void *p = mmap(NULL, sizeof(pb_shared), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    pb_shared *shared = p;
    shared->started = wall_clock();
    return shared;
}

void pb_shared_destroy(pb_shared *shared)
{
    if (shared != NULL)
        munmap(shared, sizeof *shared);
}

int pb_shared_take_connection(pb_shared *shared, int slot, long max)
{
    pb_worker_stats *w = &shared->slots[slot];
    if (atomic_fetch_add(&shared->connections, 1) >= max) {
        atomic_fetch_sub(&shared->connections, 1);
        atomic_fetch_add(&w->refused, 1);
        return 0;
    }
    atomic_fetch_add(&w->connections, 1);
    atomic_fetch_add(&w->accepted, 1);
    return 1;
}

void pb_shared_release_connection(pb_shared *shared, int slot)
{
    atomic_fetch_sub(&shared->slots[slot].connections, 1);
    atomic_fetch_sub(&shared->connections, 1);
}

/* --- Names ------------------------------------------------------------------ */

static pb_named_counter *table_of(pb_worker_stats *w, pb_stats_table table)
{
    return table == PB_STATS_INSTANCES ? w->instances : w->routes;
}

/* 64-bit FNV-1a. */
static unsigned long long name_hash(const char *name)
{
    unsigned long long h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

/* The name as a table keeps it: itself when it fits; otherwise cut before
 * a character, never inside one, then "…" and the whole name's hash. */
static void stored_name(const char *name, char out[PB_STATS_NAME_LEN])
{
    size_t n = strlen(name);
    if (n < PB_STATS_NAME_LEN) {
        memcpy(out, name, n + 1);
        return;
    }
    char tag[32];
    int t = snprintf(tag, sizeof tag, "\xE2\x80\xA6%016llx", name_hash(name));
    size_t keep = PB_STATS_NAME_LEN - 1 - (size_t)t;
    while (keep > 0 && ((unsigned char)name[keep] & 0xC0) == 0x80)
        keep--;
    memcpy(out, name, keep);
    memcpy(out + keep, tag, (size_t)t + 1);
}

/* --- Plugins' metrics ----------------------------------------------------------- */

static long long monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Whether an entry seen in `state` is in use, once a claim in progress (a
 * few stores by another thread of the same process) has finished. */
static int in_use(pb_metric_entry *e, int state)
{
    while (state == 2) {
        sched_yield();
        state = atomic_load(&e->used);
    }
    return state == 1;
}

int pb_metric_index(pb_shared *shared, int slot, const char *instance,
                    const char *name, const char *label, pb_metric_kind kind)
{
    if (label == NULL)
        label = "";
    size_t name_len = strlen(name), label_len = strlen(label);
    if (name_len >= PB_METRIC_NAME_LEN || label_len >= PB_METRIC_NAME_LEN)
        return PB_METRIC_TOO_LONG;
    char stored[PB_STATS_NAME_LEN];
    stored_name(instance, stored);
    pb_worker_stats *w = &shared->slots[slot];
    /* Entries are claimed in table order and never given back while the
     * worker lives: the first free one ends the search, and two threads
     * asking for the same new metric meet at it, so one key never has two
     * entries. */
    for (int i = 0; i < PB_METRICS; i++) {
        pb_metric_entry *e = &w->metrics[i];
        int state = 0;
        if (atomic_compare_exchange_strong(&e->used, &state, 2)) {
            atomic_fetch_add(&w->metrics_claimed, 1);
            e->kind = (int)kind;
            memcpy(e->instance, stored, strlen(stored) + 1);
            memcpy(e->name, name, name_len + 1);
            memcpy(e->label, label, label_len + 1);
            atomic_store(&e->value, 0);
            atomic_store(&e->stamp, 0);
            atomic_store(&e->used, 1);
            return i;
        }
        if (!in_use(e, state) || strcmp(e->instance, stored) != 0 ||
            strcmp(e->name, name) != 0)
            continue;
        if (e->kind != (int)kind || (e->label[0] == '\0') != (label[0] == '\0'))
            return PB_METRIC_CONFLICT;
        if (strcmp(e->label, label) == 0)
            return i;
    }
    return PB_METRIC_FULL;
}

void pb_metric_entry_add(pb_metric_entry *metric, long long delta)
{
    if (metric->kind == PB_METRIC_COUNTER && delta < 0)
        return;
    atomic_fetch_add(&metric->value, delta);
    /* After the value: a snapshot that reads the new stamp reads the new
     * value too. */
    if (metric->kind == PB_METRIC_SHARED)
        atomic_store(&metric->stamp, monotonic_ns());
}

void pb_metric_entry_set(pb_metric_entry *metric, long long value)
{
    if (metric->kind == PB_METRIC_COUNTER)
        return;
    atomic_store(&metric->value, value);
    if (metric->kind == PB_METRIC_SHARED)
        atomic_store(&metric->stamp, monotonic_ns());
}

/* --- The archive -------------------------------------------------------------- */

/* Brackets a move of counts from w to the archive, for snapshots to see. */
static void begin_move(pb_shared *shared, pb_worker_stats *w)
{
    atomic_store(&w->moving, 1);
    atomic_fetch_add(&shared->moves, 1);
}

static void end_move(pb_worker_stats *w)
{
    atomic_store(&w->moving, 0);
}

/* Adds counts to the archive entry for a stored name, claiming a free
 * entry when there is none; what finds no room goes to `retired`. Several
 * processes may do this at once: an entry is claimed by compare-and-swap,
 * and one being claimed is passed over (two entries for one name are
 * summed by the snapshot). */
static void archive_add(pb_shared *shared, pb_stats_table which,
                        const char *name, long messages, long errors)
{
    if (messages == 0 && errors == 0)
        return;
    pb_named_counter *table = table_of(&shared->slots[PB_ARCHIVE_SLOT], which);
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        pb_named_counter *e = &table[i];
        int state = 0;
        if (atomic_compare_exchange_strong(&e->used, &state, 2)) {
            memcpy(e->name, name, strlen(name) + 1);
            atomic_store(&e->used, 1);
            state = 1;
        } else if (state != 1 || strcmp(e->name, name) != 0) {
            continue;
        }
        atomic_fetch_add(&e->messages, messages);
        atomic_fetch_add(&e->errors, errors);
        return;
    }
    atomic_fetch_add(&shared->retired[which].messages, messages);
    atomic_fetch_add(&shared->retired[which].errors, errors);
}

/* Added before the source is cleared: a mover killed in between counts
 * something twice, never loses it. */
static void archive_entry(pb_shared *shared, pb_stats_table which,
                          const pb_named_counter *e)
{
    archive_add(shared, which, e->name, atomic_load(&e->messages),
                atomic_load(&e->errors));
}

/* Keeps what a departed worker's metrics still report: a counter's count
 * adds to the archive's (to `retired_metrics` when the archive has no room
 * for it), a shared level replaces the archive's when it is newer, and a
 * gauge, the worker's own level, goes with it. Each entry is then cleared
 * for the next worker. Scans to the first free entry rather than trusting
 * metrics_claimed, which a worker killed mid-claim may have left short. */
static void archive_metrics(pb_shared *shared, pb_worker_stats *w)
{
    pb_metric_entry *archive = shared->slots[PB_ARCHIVE_SLOT].metrics;
    for (int i = 0; i < PB_METRICS && atomic_load(&w->metrics[i].used) != 0; i++) {
        pb_metric_entry *e = &w->metrics[i];
        if (atomic_load(&e->used) == 1 && e->kind != PB_METRIC_GAUGE) {
            long long value = atomic_load(&e->value);
            long long stamp = atomic_load(&e->stamp);
            int at = pb_metric_index(shared, PB_ARCHIVE_SLOT, e->instance, e->name,
                                     e->label, (pb_metric_kind)e->kind);
            if (at < 0) {
                if (e->kind == PB_METRIC_COUNTER)
                    atomic_fetch_add(&shared->retired_metrics, value);
            } else if (e->kind == PB_METRIC_COUNTER) {
                atomic_fetch_add(&archive[at].value, value);
            } else if (stamp > atomic_load(&archive[at].stamp)) {
                atomic_store(&archive[at].value, value);
                atomic_store(&archive[at].stamp, stamp);
            }
        }
        memset(e, 0, sizeof *e);
    }
}

void pb_shared_reset_worker(pb_shared *shared, int slot)
{
    pb_worker_stats *w = &shared->slots[slot];
    pb_worker_stats *a = &shared->slots[PB_ARCHIVE_SLOT];
    long held = atomic_exchange(&w->connections, 0);
    atomic_fetch_sub(&shared->connections, held);
    atomic_fetch_sub(&shared->workers, 1);

    begin_move(shared, w);
    atomic_fetch_add(&a->accepted, atomic_load(&w->accepted));
    atomic_fetch_add(&a->refused, atomic_load(&w->refused));
    atomic_fetch_add(&a->refused_allow, atomic_load(&w->refused_allow));
    atomic_fetch_add(&a->refused_tls, atomic_load(&w->refused_tls));
    atomic_fetch_add(&a->messages, atomic_load(&w->messages));
    atomic_fetch_add(&a->bytes_in, atomic_load(&w->bytes_in));
    atomic_fetch_add(&a->bytes_out, atomic_load(&w->bytes_out));
    for (int i = 0; i < PB_ERROR_CODES; i++)
        atomic_fetch_add(&a->errors[i], atomic_load(&w->errors[i]));
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        if (atomic_load(&w->instances[i].used) == 1)
            archive_entry(shared, PB_STATS_INSTANCES, &w->instances[i]);
        if (atomic_load(&w->routes[i].used) == 1)
            archive_entry(shared, PB_STATS_ROUTES, &w->routes[i]);
    }
    archive_metrics(shared, w);
    /* The slot starts over for the next worker that takes it; zeroing it
     * also ends the move. The metrics' entries were cleared one by one,
     * so that the pages of the table that no worker used stay untouched. */
    memset(w, 0, offsetof(pb_worker_stats, metrics));
}

/* --- Binding a worker's names ---------------------------------------------------- */

void pb_stats_rebind(pb_shared *shared, int slot)
{
    shared->slots[slot].binding++;
}

int pb_stats_index(pb_shared *shared, int slot, pb_stats_table which,
                   const char *name)
{
    pb_worker_stats *w = &shared->slots[slot];
    pb_named_counter *table = table_of(w, which);
    char stored[PB_STATS_NAME_LEN];
    stored_name(name, stored);

    int free_at = -1, evict = -1;
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        pb_named_counter *e = &table[i];
        if (!atomic_load(&e->used)) {
            if (free_at < 0)
                free_at = i;
        } else if (strcmp(e->name, stored) == 0) {
            e->bound = w->binding;
            return i;
        } else if (e->bound != w->binding &&
                   (evict < 0 || e->bound < table[evict].bound)) {
            evict = i;      /* the longest unnamed */
        }
    }
    int at = free_at >= 0 ? free_at : evict;
    if (at < 0)
        return -1;
    pb_named_counter *e = &table[at];
    if (at == evict) {
        begin_move(shared, w);
        archive_entry(shared, which, e);
        atomic_store(&e->used, 0);
        atomic_store(&e->messages, 0);
        atomic_store(&e->errors, 0);
    }
    memcpy(e->name, stored, strlen(stored) + 1);
    e->bound = w->binding;
    atomic_store(&e->used, 1);
    if (at == evict)
        end_move(w);
    return at;
}

/* --- Snapshot ---------------------------------------------------------------------- */

static void add_named(json_t *object, const pb_named_counter *table)
{
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        const pb_named_counter *c = &table[i];
        if (atomic_load(&c->used) != 1)
            continue;
        json_t *entry = json_object_get(object, c->name);
        if (entry == NULL) {
            /* On failure jansson has freed the new entry: nothing of it
             * may be touched. A stored name is UTF-8 unless it was read
             * while being rewritten, and then the snapshot is retaken. */
            if (json_object_set_new(object, c->name,
                                    json_pack("{s:I, s:I}", "messages", (json_int_t)0,
                                              "errors", (json_int_t)0)) != 0)
                continue;
            entry = json_object_get(object, c->name);
        }
        json_t *m = json_object_get(entry, "messages");
        json_integer_set(m, json_integer_value(m) + atomic_load(&c->messages));
        json_t *e = json_object_get(entry, "errors");
        json_integer_set(e, json_integer_value(e) + atomic_load(&c->errors));
    }
}

/* Orders metric entries by key, so that the entries of one metric in
 * every slot lie next to each other. */
static int metric_order(const void *a, const void *b)
{
    const pb_metric_entry *x = *(const pb_metric_entry *const *)a;
    const pb_metric_entry *y = *(const pb_metric_entry *const *)b;
    int c = strcmp(x->instance, y->instance);
    if (c == 0)
        c = strcmp(x->name, y->name);
    if (c == 0)
        c = strcmp(x->label, y->label);
    if (c == 0)
        c = x->kind - y->kind;
    return c;
}

static int same_metric(const pb_metric_entry *x, const pb_metric_entry *y)
{
    return metric_order(&x, &y) == 0;
}

/* The object `key` of `object`, made when missing (or when a snapshot of
 * workers that disagree on a metric's labelling left a number there). */
static json_t *object_member(json_t *object, const char *key, json_t *(*make)(void))
{
    json_t *member = json_object_get(object, key);
    if (json_is_object(member))
        return member;
    /* On failure jansson has freed the new member. */
    if (json_object_set_new(object, key, make()) != 0)
        return NULL;
    return json_object_get(object, key);
}

static json_t *instance_counts(void)
{
    return json_pack("{s:I, s:I}", "messages", (json_int_t)0, "errors", (json_int_t)0);
}

/* One metric's combined value, from its sorted entries [from, to): a
 * counter's or a gauge's sum (the archive holds no gauges), a shared
 * level's value with the latest stamp. */
static long long combined(const pb_metric_entry *const *from,
                          const pb_metric_entry *const *to)
{
    long long value = 0, latest = -1;
    for (const pb_metric_entry *const *e = from; e < to; e++) {
        if ((*e)->kind != PB_METRIC_SHARED) {
            value += atomic_load(&(*e)->value);
            continue;
        }
        long long stamp = atomic_load(&(*e)->stamp);
        if (stamp > latest) {
            latest = stamp;
            value = atomic_load(&(*e)->value);
        }
    }
    return value;
}

static void add_metric(json_t *instances, const pb_metric_entry *e, long long value)
{
    json_t *instance = object_member(instances, e->instance, instance_counts);
    json_t *metrics = instance ? object_member(instance, "metrics", json_object) : NULL;
    if (metrics == NULL)
        return;
    if (e->label[0] == '\0') {
        json_object_set_new(metrics, e->name, json_integer(value));
        return;
    }
    json_t *labels = object_member(metrics, e->name, json_object);
    if (labels != NULL)
        json_object_set_new(labels, e->label, json_integer(value));
}

/* Adds every slot's metrics, combined, to the snapshot's "plugins": an
 * instance with metrics appears even before it counted a message. -1
 * when out of memory. */
static int add_metrics(json_t *instances, const pb_shared *shared)
{
    size_t total = 0;
    for (int s = 0; s <= PB_ARCHIVE_SLOT; s++) {
        int claimed = atomic_load(&shared->slots[s].metrics_claimed);
        total += (size_t)(claimed < PB_METRICS ? claimed : PB_METRICS);
    }
    if (total == 0)
        return 0;
    const pb_metric_entry **entries = malloc(total * sizeof *entries);
    if (entries == NULL)
        return -1;
    size_t n = 0;
    for (int s = 0; s <= PB_ARCHIVE_SLOT && n < total; s++) {
        const pb_worker_stats *w = &shared->slots[s];
        int claimed = atomic_load(&w->metrics_claimed);
        for (int i = 0; i < claimed && i < PB_METRICS && n < total; i++)
            if (atomic_load(&w->metrics[i].used) == 1)
                entries[n++] = &w->metrics[i];
    }
    qsort(entries, n, sizeof *entries, metric_order);
    for (size_t first = 0, end; first < n; first = end) {
        for (end = first + 1; end < n && same_metric(entries[first], entries[end]); end++)
            continue;
        add_metric(instances, entries[first], combined(entries + first, entries + end));
    }
    free(entries);
    return 0;
}

static json_t *retired_counts(const pb_retired *r)
{
    return json_pack("{s:I, s:I}", "messages", (json_int_t)atomic_load(&r->messages),
                     "errors", (json_int_t)atomic_load(&r->errors));
}

static json_t *collect(const pb_shared *shared)
{
    long accepted = 0, refused = 0, refused_allow = 0, refused_tls = 0;
    long messages = 0, in = 0, out = 0;
    long errors[PB_ERROR_CODES] = { 0 };
    json_t *instances = json_object(), *routes = json_object();
    for (int s = 0; s <= PB_ARCHIVE_SLOT; s++) {
        const pb_worker_stats *w = &shared->slots[s];
        accepted += atomic_load(&w->accepted);
        refused += atomic_load(&w->refused);
        refused_allow += atomic_load(&w->refused_allow);
        refused_tls += atomic_load(&w->refused_tls);
        messages += atomic_load(&w->messages);
        in += atomic_load(&w->bytes_in);
        out += atomic_load(&w->bytes_out);
        for (int i = 0; i < PB_ERROR_CODES; i++)
            errors[i] += atomic_load(&w->errors[i]);
        add_named(instances, w->instances);
        add_named(routes, w->routes);
    }
    if (add_metrics(instances, shared) != 0) {
        json_decref(instances);
        json_decref(routes);
        return NULL;
    }
    json_t *errs = json_object();
    for (int i = PB_ERR_NONE + 1; i < PB_ERROR_CODES; i++)
        json_object_set_new(errs, pb_error_token((pb_error_code)i),
                            json_integer(errors[i]));
    long reloads = atomic_load(&shared->reloads);
    return json_pack("{s:f, s:I, s:I, s:I, s:I, s:i,"
                     " s:{s:I, s:I, s:I, s:{s:I, s:I, s:I}}, s:I, s:{s:I, s:I}, s:o, s:o, s:o,"
                     " s:{s:o, s:o, s:I}}",
                     "uptime", wall_clock() - shared->started,
                     "generation", (json_int_t)reloads + 1,
                     "reloads", (json_int_t)reloads,
                     "failed_reloads", (json_int_t)atomic_load(&shared->failed_reloads),
                     "worker_restarts", (json_int_t)atomic_load(&shared->worker_restarts),
                     "workers", atomic_load(&shared->workers),
                     "connections",
                       "open", (json_int_t)atomic_load(&shared->connections),
                       "accepted", (json_int_t)accepted,
                       "refused", (json_int_t)(refused + refused_allow + refused_tls),
                       "refused_by",
                         "busy", (json_int_t)refused,
                         "allow", (json_int_t)refused_allow,
                         "tls", (json_int_t)refused_tls,
                     "messages", (json_int_t)messages,
                     "bytes", "in", (json_int_t)in, "out", (json_int_t)out,
                     "errors", errs,
                     "plugins", instances,
                     "routes", routes,
                     "retired",
                       "plugins", retired_counts(&shared->retired[PB_STATS_INSTANCES]),
                       "routes", retired_counts(&shared->retired[PB_STATS_ROUTES]),
                       "metrics", (json_int_t)atomic_load(&shared->retired_metrics));
}

static int moving(const pb_shared *shared)
{
    for (int s = 0; s <= PB_ARCHIVE_SLOT; s++)
        if (atomic_load(&shared->slots[s].moving))
            return 1;
    return 0;
}

json_t *pb_stats_snapshot(const pb_shared *shared)
{
    for (int tries = 1;; tries++) {
        unsigned long moves = atomic_load(&shared->moves);
        int quiet = !moving(shared);
        json_t *snapshot = collect(shared);
        if ((quiet && atomic_load(&shared->moves) == moves) ||
            tries == SNAPSHOT_TRIES || snapshot == NULL)
            return snapshot;
        json_decref(snapshot);
        sched_yield();
    }
}

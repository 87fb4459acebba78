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

const long long pb_latency_bounds_ns[PB_LATENCY_BOUNDS] = {
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
    25000000, 50000000, 100000000, 250000000, 500000000, 1000000000,
    2500000000LL, 5000000000LL, 10000000000LL,
};

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

void pb_shared_set_pid(pb_shared *shared, int slot, long pid)
{
    atomic_store(&shared->slots[slot].pid, (int)pid);
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

/* --- Listeners and latency ------------------------------------------------------ */

/* The entry for a stored name in a listener table, claimed when missing
 * (by compare-and-swap: the archive's may be claimed by several processes
 * at once); -1 when the table is full. */
static int listener_entry(pb_listener_counter *table, const char *stored)
{
    for (int i = 0; i < PB_STATS_LISTENERS; i++) {
        pb_listener_counter *e = &table[i];
        int state = 0;
        if (atomic_compare_exchange_strong(&e->used, &state, 2)) {
            memcpy(e->name, stored, strlen(stored) + 1);
            atomic_store(&e->used, 1);
            return i;
        }
        if (state == 1 && strcmp(e->name, stored) == 0)
            return i;
    }
    return -1;
}

int pb_stats_listener_index(pb_shared *shared, int slot, const char *name)
{
    char stored[PB_STATS_NAME_LEN];
    stored_name(name, stored);
    return listener_entry(shared->slots[slot].listeners, stored);
}

void pb_stats_listener_open(pb_shared *shared, int slot, int index)
{
    if (index < 0)
        return;
    pb_listener_counter *e = &shared->slots[slot].listeners[index];
    atomic_fetch_add_explicit(&e->open, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->accepted, 1, memory_order_relaxed);
}

void pb_stats_listener_close(pb_shared *shared, int slot, int index)
{
    if (index >= 0)
        atomic_fetch_sub_explicit(&shared->slots[slot].listeners[index].open, 1,
                                  memory_order_relaxed);
}

void pb_latency_record(pb_latency *latency, long long ns)
{
    /* Most requests take well under a millisecond: searching from the
     * smallest bound ends within a few compares. */
    int b = 0;
    while (b < PB_LATENCY_BOUNDS && ns > pb_latency_bounds_ns[b])
        b++;
    pb_count(&latency->buckets[b], 1);
    /* The sum is a long long, pb_count's counters longs. */
    atomic_store_explicit(&latency->sum_ns,
                          atomic_load_explicit(&latency->sum_ns, memory_order_relaxed) + ns,
                          memory_order_relaxed);
}

static void latency_add(pb_latency *to, const pb_latency *from)
{
    for (int b = 0; b < PB_LATENCY_BUCKETS; b++)
        atomic_fetch_add(&to->buckets[b], atomic_load(&from->buckets[b]));
    atomic_fetch_add(&to->sum_ns, atomic_load(&from->sum_ns));
}

static void latency_clear(pb_latency *latency)
{
    for (int b = 0; b < PB_LATENCY_BUCKETS; b++)
        atomic_store(&latency->buckets[b], 0);
    atomic_store(&latency->sum_ns, 0);
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
                        const char *name, const char *module, long messages,
                        long errors, const pb_latency *latency)
{
    /* Every duration recorded is of a message counted. */
    if (messages == 0 && errors == 0)
        return;
    pb_worker_stats *a = &shared->slots[PB_ARCHIVE_SLOT];
    pb_named_counter *table = table_of(a, which);
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        pb_named_counter *e = &table[i];
        int state = 0;
        if (atomic_compare_exchange_strong(&e->used, &state, 2)) {
            memcpy(e->name, name, strlen(name) + 1);
            memcpy(e->module, module, strlen(module) + 1);
            atomic_store(&e->used, 1);
            state = 1;
        } else if (state != 1 || strcmp(e->name, name) != 0) {
            continue;
        }
        atomic_fetch_add(&e->messages, messages);
        atomic_fetch_add(&e->errors, errors);
        if (latency != NULL)
            latency_add(&a->latency[i], latency);
        return;
    }
    atomic_fetch_add(&shared->retired[which].messages, messages);
    atomic_fetch_add(&shared->retired[which].errors, errors);
    if (latency != NULL)
        latency_add(&shared->retired_latency, latency);
}

/* Added before the source is cleared: a mover killed in between counts
 * something twice, never loses it. */
static void archive_entry(pb_shared *shared, pb_stats_table which,
                          pb_worker_stats *w, int index)
{
    const pb_named_counter *e = &table_of(w, which)[index];
    archive_add(shared, which, e->name, e->module, atomic_load(&e->messages),
                atomic_load(&e->errors),
                which == PB_STATS_INSTANCES ? &w->latency[index] : NULL);
}

/* A departed worker's listeners: what they accepted stays; what was open
 * closed with the worker. */
static void archive_listeners(pb_shared *shared, const pb_worker_stats *w)
{
    pb_listener_counter *archive = shared->slots[PB_ARCHIVE_SLOT].listeners;
    for (int i = 0; i < PB_STATS_LISTENERS; i++) {
        const pb_listener_counter *e = &w->listeners[i];
        long accepted = atomic_load(&e->accepted);
        if (atomic_load(&e->used) != 1 || accepted == 0)
            continue;
        int at = listener_entry(archive, e->name);
        if (at >= 0)
            atomic_fetch_add(&archive[at].accepted, accepted);
        else
            atomic_fetch_add(&shared->retired_accepted, accepted);
    }
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
            archive_entry(shared, PB_STATS_INSTANCES, w, i);
        if (atomic_load(&w->routes[i].used) == 1)
            archive_entry(shared, PB_STATS_ROUTES, w, i);
    }
    archive_listeners(shared, w);
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

/* A module's name as the instance table keeps it: "" when it does not
 * fit, rather than cut. */
static const char *stored_module(const char *module)
{
    return module != NULL && strlen(module) < PB_METRIC_NAME_LEN ? module : "";
}

static int bind_name(pb_shared *shared, int slot, pb_stats_table which,
                     const char *name, const char *module)
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
            /* Only a reload that gives the name to another module writes
             * here; a snapshot that reads it meanwhile may miss it once. */
            if (strcmp(e->module, module) != 0)
                memcpy(e->module, module, strlen(module) + 1);
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
        archive_entry(shared, which, w, at);
        atomic_store(&e->used, 0);
        atomic_store(&e->messages, 0);
        atomic_store(&e->errors, 0);
        if (which == PB_STATS_INSTANCES)
            latency_clear(&w->latency[at]);
    }
    memcpy(e->name, stored, strlen(stored) + 1);
    memcpy(e->module, module, strlen(module) + 1);
    e->bound = w->binding;
    atomic_store(&e->used, 1);
    if (at == evict)
        end_move(w);
    return at;
}

int pb_stats_index(pb_shared *shared, int slot, pb_stats_table which,
                   const char *name)
{
    return bind_name(shared, slot, which, name, "");
}

int pb_stats_instance_index(pb_shared *shared, int slot, const char *name,
                            const char *module)
{
    return bind_name(shared, slot, PB_STATS_INSTANCES, name, stored_module(module));
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
        if (c->module[0] != '\0' && json_object_get(entry, "module") == NULL)
            json_object_set_new(entry, "module", json_string(c->module));
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

static const char *kind_name(int kind)
{
    return kind == PB_METRIC_COUNTER ? "counter"
         : kind == PB_METRIC_GAUGE ? "gauge" : "shared";
}

/* A metric's value goes in the instance's "metrics", its kind in
 * "metric_kinds", for readers that must tell a counter from a level. */
static void add_metric(json_t *instances, const pb_metric_entry *e, long long value)
{
    json_t *instance = object_member(instances, e->instance, instance_counts);
    json_t *metrics = instance ? object_member(instance, "metrics", json_object) : NULL;
    json_t *kinds = metrics ? object_member(instance, "metric_kinds", json_object) : NULL;
    if (kinds == NULL)
        return;
    json_object_set_new(kinds, e->name, json_string(kind_name(e->kind)));
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

/* A histogram being summed over slots: per-bucket counts and the sum in
 * nanoseconds as they are stored, until finish_latency makes the buckets
 * cumulative with their bounds and the sum seconds. */
static json_t *new_latency(void)
{
    json_t *buckets = json_array();
    for (int b = 0; b < PB_LATENCY_BUCKETS; b++)
        json_array_append_new(buckets, json_integer(0));
    return json_pack("{s:I, s:I, s:o}", "count", (json_int_t)0, "sum", (json_int_t)0,
                     "buckets", buckets);
}

static void add_to(json_t *integer, long long n)
{
    json_integer_set(integer, json_integer_value(integer) + n);
}

static void add_latency(json_t *latency, const pb_latency *from)
{
    json_t *buckets = json_object_get(latency, "buckets");
    for (int b = 0; b < PB_LATENCY_BUCKETS; b++)
        add_to(json_array_get(buckets, (size_t)b), atomic_load(&from->buckets[b]));
    add_to(json_object_get(latency, "sum"), atomic_load(&from->sum_ns));
}

static void finish_latency(json_t *latency)
{
    json_t *buckets = json_object_get(latency, "buckets");
    json_int_t total = 0;
    for (int b = 0; b < PB_LATENCY_BUCKETS; b++) {
        total += json_integer_value(json_array_get(buckets, (size_t)b));
        json_t *bound = b < PB_LATENCY_BOUNDS
                            ? json_real((double)pb_latency_bounds_ns[b] / 1e9)
                            : json_string("+Inf");
        json_array_set_new(buckets, (size_t)b, json_pack("[o, I]", bound, total));
    }
    /* The count is the buckets' total, so that it always equals +Inf's. */
    json_object_set_new(latency, "count", json_integer(total));
    json_t *sum = json_object_get(latency, "sum");
    json_object_set_new(latency, "sum", json_real((double)json_integer_value(sum) / 1e9));
}

/* Adds a slot's durations to the instances that add_named reported. */
static void add_latencies(json_t *instances, const pb_worker_stats *w)
{
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        if (atomic_load(&w->instances[i].used) != 1)
            continue;
        json_t *instance = json_object_get(instances, w->instances[i].name);
        json_t *latency = instance ? object_member(instance, "latency", new_latency)
                                   : NULL;
        if (latency != NULL)
            add_latency(latency, &w->latency[i]);
    }
}

static void finish_latencies(json_t *instances)
{
    const char *name;
    json_t *instance;
    json_object_foreach(instances, name, instance) {
        json_t *latency = json_object_get(instance, "latency");
        if (latency != NULL)
            finish_latency(latency);
    }
}

static json_t *listener_counts(void)
{
    return json_pack("{s:I, s:I}", "open", (json_int_t)0, "accepted", (json_int_t)0);
}

static void add_listeners(json_t *listeners, const pb_worker_stats *w)
{
    for (int i = 0; i < PB_STATS_LISTENERS; i++) {
        const pb_listener_counter *e = &w->listeners[i];
        if (atomic_load(&e->used) != 1)
            continue;
        json_t *entry = object_member(listeners, e->name, listener_counts);
        if (entry == NULL)
            continue;
        add_to(json_object_get(entry, "open"), atomic_load(&e->open));
        add_to(json_object_get(entry, "accepted"), atomic_load(&e->accepted));
    }
}

/* The workers running, by slot: those the master gave a pid. */
static json_t *worker_list(const pb_shared *shared)
{
    json_t *list = json_array();
    for (int s = 0; s < PB_MAX_WORKERS && list != NULL; s++) {
        const pb_worker_stats *w = &shared->slots[s];
        int pid = atomic_load(&w->pid);
        if (pid != 0)
            json_array_append_new(list, json_pack("{s:i, s:i, s:I, s:I}", "slot", s,
                                                  "pid", pid,
                                                  "connections",
                                                  (json_int_t)atomic_load(&w->connections),
                                                  "messages",
                                                  (json_int_t)atomic_load(&w->messages)));
    }
    return list;
}

static json_t *retired_latency(const pb_shared *shared)
{
    json_t *latency = new_latency();
    if (latency != NULL) {
        add_latency(latency, &shared->retired_latency);
        finish_latency(latency);
    }
    return latency;
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
    json_t *listeners = json_object();
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
        add_latencies(instances, w);
        add_listeners(listeners, w);
    }
    finish_latencies(instances);
    if (add_metrics(instances, shared) != 0) {
        json_decref(instances);
        json_decref(routes);
        json_decref(listeners);
        return NULL;
    }
    json_t *errs = json_object();
    for (int i = PB_ERR_NONE + 1; i < PB_ERROR_CODES; i++)
        json_object_set_new(errs, pb_error_token((pb_error_code)i),
                            json_integer(errors[i]));
    long reloads = atomic_load(&shared->reloads);
    json_t *snapshot = json_pack("{s:f, s:I, s:I, s:I, s:I, s:i,"
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
    if (snapshot == NULL) {
        json_decref(listeners);
        return NULL;
    }
    /* Each set takes its value, even when it fails: listeners goes first. */
    json_t *retired = json_object_get(snapshot, "retired");
    if (json_object_set_new(snapshot, "listeners", listeners) != 0 ||
        json_object_set_new(json_object_get(retired, "plugins"), "latency",
                            retired_latency(shared)) != 0 ||
        json_object_set_new(retired, "listeners",
                            json_pack("{s:I}", "accepted",
                                      (json_int_t)atomic_load(&shared->retired_accepted))) != 0 ||
        json_object_set_new(snapshot, "version", json_string(PACKAGE_VERSION)) != 0 ||
        json_object_set_new(snapshot, "abi", json_integer(PLUGBOARD_ABI_VERSION)) != 0 ||
        json_object_set_new(snapshot, "worker_list", worker_list(shared)) != 0) {
        json_decref(snapshot);
        return NULL;
    }
    return snapshot;
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

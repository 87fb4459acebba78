/*
 * test_shared.c - the statistics shared by the master and the workers
 * (daemon/shared.c): naming counters, the snapshot, the archive, the
 * recycling of a worker's entries across reloads, and plugins' metrics.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shared.h"

static pb_shared *shared;

static void map_shared(void)
{
    shared = pb_shared_create();
    cr_assert_not_null(shared);
}

static void unmap_shared(void)
{
    pb_shared_destroy(shared);
}

TestSuite(shared, .init = map_shared, .fini = unmap_shared);

/* As the connection code counts a message. */
static void count(int slot, pb_stats_table table, int index, long n, long failed)
{
    pb_worker_stats *w = &shared->slots[slot];
    pb_named_counter *t = table == PB_STATS_INSTANCES ? w->instances : w->routes;
    cr_assert_geq(index, 0);
    atomic_fetch_add(&t[index].messages, n);
    atomic_fetch_add(&t[index].errors, failed);
}

static json_int_t member(const json_t *object, const char *key)
{
    const json_t *v = json_object_get(object, key);
    cr_assert(json_is_integer(v), "no integer \"%s\"", key);
    return json_integer_value(v);
}

/* Messages of name in a snapshot's "plugins" or "routes"; -1 if absent. */
static json_int_t messages_of(const json_t *snapshot, const char *table,
                              const char *name)
{
    const json_t *entry = json_object_get(json_object_get(snapshot, table), name);
    return entry ? member(entry, "messages") : -1;
}

/* Every message of a table, its retired share included. */
static json_int_t table_total(const json_t *snapshot, const char *table)
{
    json_int_t sum = 0;
    const char *key;
    json_t *entry;
    json_object_foreach(json_object_get(snapshot, table), key, entry)
        sum += member(entry, "messages");
    return sum + member(json_object_get(json_object_get(snapshot, "retired"), table),
                        "messages");
}

/* A snapshot must serialise: every key valid UTF-8. */
static json_t *snapshot_ok(void)
{
    json_t *s = pb_stats_snapshot(shared);
    cr_assert_not_null(s);
    cr_assert_gt(json_dumpb(s, NULL, 0, 0), 0);
    return s;
}

static int utf8_key(const char *name)
{
    json_t *s = json_string(name);
    json_decref(s);
    return s != NULL;
}

/*
 * jansson is not built with the sanitizers, so its reads and writes of
 * memory it already freed go unseen. While a test needs them seen, each of
 * its allocations gets pages of its own, made inaccessible when freed:
 * touching a freed value then crashes the test.
 */
#define GUARD_HEADER 16

static void *guarded_malloc(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t total = (size + GUARD_HEADER + page - 1) / page * page;
    char *p = mmap(NULL, total, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memcpy(p, &total, sizeof total);
    return p + GUARD_HEADER;
}

static void guarded_free(void *ptr)
{
    if (ptr == NULL)
        return;
    char *p = (char *)ptr - GUARD_HEADER;
    size_t total;
    memcpy(&total, p, sizeof total);
    cr_assert_eq(mprotect(p, total, PROT_NONE), 0);
}

/* A snapshot taken with every JSON allocation guarded; it must serialise. */
static void guarded_snapshot(void (*check)(const json_t *snapshot))
{
    json_set_alloc_funcs(guarded_malloc, guarded_free);
    json_t *s = snapshot_ok();
    check(s);
    json_decref(s);
    json_set_alloc_funcs(malloc, free);
}

/* --- Names that JSON cannot hold ------------------------------------------ */

static void only_echo(const json_t *s)
{
    cr_assert_eq(messages_of(s, "plugins", "echo"), 2);
    cr_assert_eq(json_object_size(json_object_get(s, "plugins")), 1);
}

/* Formerly jansson freed the new entry when the key was refused, and the
 * snapshot went on writing into it. */
Test(shared, snapshot_survives_a_counter_name_that_is_not_utf8)
{
    pb_named_counter *e = &shared->slots[0].instances[0];
    strcpy(e->name, "first\xFF" "10");
    atomic_store(&e->messages, 3);
    atomic_store(&e->used, 1);
    pb_named_counter *ok = &shared->slots[0].instances[1];
    strcpy(ok->name, "echo");
    atomic_store(&ok->messages, 2);
    atomic_store(&ok->used, 1);

    guarded_snapshot(only_echo);
}

static void long_route_counted(const json_t *s)
{
    cr_assert_eq(json_object_size(json_object_get(s, "routes")), 1);
    cr_assert_eq(table_total(s, "routes"), 4);
}

/* A route's name holds its content type, which may be long and multi-byte:
 * cut at a fixed byte count, it used to end inside a character. */
Test(shared, a_long_multibyte_name_is_cut_between_characters)
{
    char name[512] = "1: text/";
    for (int i = 0; i < 60; i++)
        strcat(name, "\xC3\xA9");       /* é: 8 + 120 bytes, then more */
    strcat(name, " -> echo");
    pb_stats_rebind(shared, 0);
    int at = pb_stats_index(shared, 0, PB_STATS_ROUTES, name);
    count(0, PB_STATS_ROUTES, at, 4, 1);

    guarded_snapshot(long_route_counted);
    const char *stored = shared->slots[0].routes[at].name;
    cr_assert_lt(strlen(stored), PB_STATS_NAME_LEN);
    cr_assert(utf8_key(stored), "stored name is not UTF-8: %s", stored);
    cr_assert_eq(strncmp(stored, name, 8), 0);
}

/* Formerly names were compared on their first 127 bytes only. */
Test(shared, long_names_sharing_a_prefix_stay_distinct)
{
    char a[300], b[300];
    memset(a, 'x', 200);
    a[200] = '\0';
    strcpy(b, a);
    strcat(a, "-a");
    strcat(b, "-b");
    pb_stats_rebind(shared, 0);
    int ia = pb_stats_index(shared, 0, PB_STATS_INSTANCES, a);
    int ib = pb_stats_index(shared, 0, PB_STATS_INSTANCES, b);
    cr_assert_neq(ia, ib);
    cr_assert_str_neq(shared->slots[0].instances[ia].name,
                      shared->slots[0].instances[ib].name);
    count(0, PB_STATS_INSTANCES, ia, 1, 0);
    count(0, PB_STATS_INSTANCES, ib, 2, 0);

    pb_stats_rebind(shared, 0);
    cr_assert_eq(pb_stats_index(shared, 0, PB_STATS_INSTANCES, b), ib);
    cr_assert_eq(pb_stats_index(shared, 0, PB_STATS_INSTANCES, a), ia);
    json_t *s = snapshot_ok();
    cr_assert_eq(json_object_size(json_object_get(s, "plugins")), 2);
    cr_assert_eq(table_total(s, "plugins"), 3);
    json_decref(s);
}

Test(shared, a_name_that_fits_is_kept_whole)
{
    char name[PB_STATS_NAME_LEN];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    pb_stats_rebind(shared, 0);
    int at = pb_stats_index(shared, 0, PB_STATS_INSTANCES, name);
    cr_assert_str_eq(shared->slots[0].instances[at].name, name);
}

/* --- Recycling across reloads --------------------------------------------- */

Test(shared, a_name_keeps_its_counters_across_rebinds)
{
    pb_stats_rebind(shared, 1);
    int at = pb_stats_index(shared, 1, PB_STATS_ROUTES, "1: * -> echo");
    count(1, PB_STATS_ROUTES, at, 5, 0);
    pb_stats_rebind(shared, 1);
    cr_assert_eq(pb_stats_index(shared, 1, PB_STATS_ROUTES, "1: * -> echo"), at);
    count(1, PB_STATS_ROUTES, at, 1, 0);
    json_t *s = snapshot_ok();
    cr_assert_eq(messages_of(s, "routes", "1: * -> echo"), 6);
    json_decref(s);
}

/* Formerly a worker's 64 entries were never freed: after reloads that
 * renamed routes, new routes went uncounted. */
Test(shared, reloads_that_rename_routes_keep_counting_and_keep_totals)
{
    json_int_t counted = 0;
    for (int reload = 0; reload < 4; reload++) {
        pb_stats_rebind(shared, 0);
        for (int i = 0; i < PB_STATS_NAMES; i++) {
            char name[64];
            snprintf(name, sizeof name, "%d: text/v%d -> echo", i + 1, reload);
            int at = pb_stats_index(shared, 0, PB_STATS_ROUTES, name);
            cr_assert_geq(at, 0, "reload %d: route %d uncounted", reload, i);
            count(0, PB_STATS_ROUTES, at, 1, 0);
            counted++;
        }
        json_t *s = snapshot_ok();
        cr_assert_eq(table_total(s, "routes"), counted, "reload %d", reload);
        cr_assert_eq(messages_of(s, "routes", "1: text/v0 -> echo"), 1);
        json_decref(s);
    }
}

/* The archive has PB_STATS_NAMES entries; beyond them the counts are kept
 * as "retired", so that totals still never go backwards. */
Test(shared, a_full_archive_keeps_counts_as_retired)
{
    for (int reload = 0; reload < 3; reload++) {
        pb_stats_rebind(shared, 0);
        for (int i = 0; i < PB_STATS_NAMES; i++) {
            char name[64];
            snprintf(name, sizeof name, "plugin-%d-%d", reload, i);
            count(0, PB_STATS_INSTANCES,
                  pb_stats_index(shared, 0, PB_STATS_INSTANCES, name), 2, 1);
        }
    }
    json_t *s = snapshot_ok();
    const json_t *retired = json_object_get(json_object_get(s, "retired"), "plugins");
    cr_assert_eq(member(retired, "messages"), 2 * PB_STATS_NAMES);
    cr_assert_eq(member(retired, "errors"), PB_STATS_NAMES);
    cr_assert_eq(table_total(s, "plugins"), 3 * 2 * PB_STATS_NAMES);
    cr_assert_eq(json_object_size(json_object_get(s, "plugins")), 2 * PB_STATS_NAMES);
    json_decref(s);
}

Test(shared, names_beyond_the_table_go_uncounted)
{
    pb_stats_rebind(shared, 0);
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof name, "p%d", i);
        cr_assert_geq(pb_stats_index(shared, 0, PB_STATS_INSTANCES, name), 0);
    }
    cr_assert_eq(pb_stats_index(shared, 0, PB_STATS_INSTANCES, "one too many"), -1);
}

Test(shared, a_worker_that_exits_leaves_its_counts_in_the_archive)
{
    atomic_store(&shared->workers, 2);
    pb_stats_rebind(shared, 3);
    int at = pb_stats_index(shared, 3, PB_STATS_INSTANCES, "echo");
    count(3, PB_STATS_INSTANCES, at, 7, 2);
    cr_assert(pb_shared_take_connection(shared, 3, 10));
    atomic_fetch_add(&shared->slots[3].messages, 7);

    pb_shared_reset_worker(shared, 3);
    cr_assert_eq(atomic_load(&shared->connections), 0);
    cr_assert_eq(atomic_load(&shared->slots[3].moving), 0);
    cr_assert_eq(atomic_load(&shared->slots[3].instances[at].used), 0);
    json_t *s = snapshot_ok();
    cr_assert_eq(messages_of(s, "plugins", "echo"), 7);
    cr_assert_eq(member(s, "messages"), 7);
    cr_assert_eq(member(json_object_get(s, "connections"), "accepted"), 1);
    json_decref(s);
}

/* A worker killed in the middle of a move leaves its slot marked until the
 * master replaces it: a snapshot still answers. */
Test(shared, a_snapshot_answers_while_a_slot_stays_marked_moving)
{
    atomic_store(&shared->slots[5].moving, 1);
    json_t *s = snapshot_ok();
    json_decref(s);
}

/* --- Concurrent snapshots --------------------------------------------------- */

static atomic_int mover_done;

static void *move_names(void *arg)
{
    (void)arg;
    for (int reload = 0; reload < 200; reload++) {
        pb_stats_rebind(shared, 0);
        for (int i = 0; i < 4; i++) {
            char name[32];
            snprintf(name, sizeof name, "r%d-%d", reload, i);
            pb_stats_index(shared, 0, PB_STATS_ROUTES, name);
        }
        usleep(200);
    }
    atomic_store(&mover_done, 1);
    return NULL;
}

/* Counts moving to the archive while snapshots are taken are seen once:
 * never twice, never missing. */
Test(shared, snapshots_see_moved_counts_exactly_once)
{
    pb_stats_rebind(shared, 0);
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof name, "start-%d", i);
        count(0, PB_STATS_ROUTES, pb_stats_index(shared, 0, PB_STATS_ROUTES, name),
              10, 0);
    }
    const json_int_t total = 10 * PB_STATS_NAMES;
    pthread_t mover;
    cr_assert_eq(pthread_create(&mover, NULL, move_names, NULL), 0);
    int taken = 0;
    while (!atomic_load(&mover_done)) {
        json_t *s = pb_stats_snapshot(shared);
        cr_assert_eq(table_total(s, "routes"), total, "snapshot %d", taken);
        json_decref(s);
        taken++;
    }
    pthread_join(mover, NULL);
    cr_assert_gt(taken, 0);
}

/* --- Plugins' metrics -------------------------------------------------------- */

/* Worker slot's metric, asserted claimed. */
static pb_metric_entry *metric(int slot, const char *instance, const char *name,
                               const char *label, pb_metric_kind kind)
{
    int at = pb_metric_index(shared, slot, instance, name, label, kind);
    cr_assert_geq(at, 0, "%s.%s[%s] not claimed: %d", instance, name,
                  label ? label : "", at);
    return &shared->slots[slot].metrics[at];
}

/* The "metrics" of an instance in a snapshot (NULL when it has none). */
static const json_t *metrics_of(const json_t *snapshot, const char *instance)
{
    return json_object_get(json_object_get(json_object_get(snapshot, "plugins"),
                                           instance), "metrics");
}

/* A metric's value in a fresh snapshot; label NULL for none. */
static json_int_t metric_value(const char *instance, const char *name,
                               const char *label)
{
    json_t *s = snapshot_ok();
    const json_t *v = json_object_get(metrics_of(s, instance), name);
    if (label != NULL)
        v = json_object_get(v, label);
    cr_assert(json_is_integer(v), "no metric %s.%s[%s]", instance, name,
              label ? label : "");
    json_int_t value = json_integer_value(v);
    json_decref(s);
    return value;
}

Test(shared, a_metric_is_claimed_with_its_key)
{
    pb_metric_entry *e = metric(0, "queue", "enqueued", NULL, PB_METRIC_COUNTER);
    cr_assert_eq(atomic_load(&e->used), 1);
    cr_assert_str_eq(e->instance, "queue");
    cr_assert_str_eq(e->name, "enqueued");
    cr_assert_str_eq(e->label, "");
    cr_assert_eq(e->kind, PB_METRIC_COUNTER);
    cr_assert_eq(atomic_load(&e->value), 0);
    cr_assert_eq(atomic_load(&shared->slots[0].metrics_claimed), 1);
}

Test(shared, the_same_key_gives_the_same_entry_and_another_key_another)
{
    pb_metric_entry *jobs = metric(0, "queue", "ready", "jobs", PB_METRIC_GAUGE);
    cr_assert_eq(metric(0, "queue", "ready", "jobs", PB_METRIC_GAUGE), jobs);
    cr_assert_neq(metric(0, "queue", "ready", "mail", PB_METRIC_GAUGE), jobs);
    cr_assert_neq(metric(0, "queue2", "ready", "jobs", PB_METRIC_GAUGE), jobs);
    cr_assert_neq(metric(1, "queue", "ready", "jobs", PB_METRIC_GAUGE), jobs);
    cr_assert_eq(metric(0, "queue", "ready", "jobs", PB_METRIC_GAUGE), jobs);
    cr_assert_eq(atomic_load(&shared->slots[0].metrics_claimed), 3);
}

/* A name reported as a number cannot also be an object of labels, nor two
 * kinds at once. */
Test(shared, a_name_keeps_its_kind_and_its_labelling)
{
    metric(0, "queue", "ready", "jobs", PB_METRIC_GAUGE);
    metric(0, "queue", "sent", NULL, PB_METRIC_COUNTER);
    cr_assert_eq(pb_metric_index(shared, 0, "queue", "ready", "jobs",
                                 PB_METRIC_SHARED), PB_METRIC_CONFLICT);
    cr_assert_eq(pb_metric_index(shared, 0, "queue", "ready", NULL,
                                 PB_METRIC_GAUGE), PB_METRIC_CONFLICT);
    cr_assert_eq(pb_metric_index(shared, 0, "queue", "sent", "x",
                                 PB_METRIC_COUNTER), PB_METRIC_CONFLICT);
    metric(0, "other", "ready", NULL, PB_METRIC_SHARED);
}

Test(shared, a_full_table_of_metrics_claims_no_more)
{
    for (int i = 0; i < PB_METRICS; i++) {
        char label[16];
        snprintf(label, sizeof label, "l%d", i);
        metric(2, "queue", "ready", label, PB_METRIC_GAUGE);
    }
    cr_assert_eq(pb_metric_index(shared, 2, "queue", "ready", "one too many",
                                 PB_METRIC_GAUGE), PB_METRIC_FULL);
    /* What it holds is still found. */
    cr_assert_geq(pb_metric_index(shared, 2, "queue", "ready", "l7",
                                  PB_METRIC_GAUGE), 0);
}

Test(shared, names_and_labels_that_do_not_fit_are_refused)
{
    char long_text[PB_METRIC_NAME_LEN + 1];
    memset(long_text, 'x', PB_METRIC_NAME_LEN);
    long_text[PB_METRIC_NAME_LEN] = '\0';
    cr_assert_eq(pb_metric_index(shared, 0, "q", long_text, NULL, PB_METRIC_GAUGE),
                 PB_METRIC_TOO_LONG);
    cr_assert_eq(pb_metric_index(shared, 0, "q", "n", long_text, PB_METRIC_GAUGE),
                 PB_METRIC_TOO_LONG);
    long_text[PB_METRIC_NAME_LEN - 1] = '\0';
    metric(0, "q", long_text, long_text, PB_METRIC_GAUGE);
}

Test(shared, a_counter_only_grows)
{
    pb_metric_entry *e = metric(0, "queue", "enqueued", NULL, PB_METRIC_COUNTER);
    pb_metric_entry_add(e, 5);
    pb_metric_entry_add(e, -3);
    pb_metric_entry_set(e, 1);
    cr_assert_eq(atomic_load(&e->value), 5);
}

Test(shared, metrics_appear_under_their_instance_with_labels_as_objects)
{
    pb_stats_rebind(shared, 0);
    count(0, PB_STATS_INSTANCES, pb_stats_index(shared, 0, PB_STATS_INSTANCES, "echo"),
          2, 0);
    pb_metric_entry_add(metric(0, "echo", "said", NULL, PB_METRIC_COUNTER), 2);
    pb_metric_entry_set(metric(0, "queue", "ready", "jobs", PB_METRIC_GAUGE), 3);
    pb_metric_entry_set(metric(0, "queue", "ready", "mail", PB_METRIC_GAUGE), 0);

    json_t *s = snapshot_ok();
    cr_assert_eq(messages_of(s, "plugins", "echo"), 2);
    cr_assert_eq(member(metrics_of(s, "echo"), "said"), 2);
    /* No message counted yet, but its metrics make it appear. */
    cr_assert_eq(messages_of(s, "plugins", "queue"), 0);
    const json_t *ready = json_object_get(metrics_of(s, "queue"), "ready");
    cr_assert_eq(json_object_size(ready), 2);
    cr_assert_eq(member(ready, "jobs"), 3);
    cr_assert_eq(member(ready, "mail"), 0);
    cr_assert_eq(member(json_object_get(s, "retired"), "metrics"), 0);
    json_decref(s);
}

Test(shared, an_instance_without_metrics_has_no_metrics_member)
{
    pb_stats_rebind(shared, 0);
    count(0, PB_STATS_INSTANCES, pb_stats_index(shared, 0, PB_STATS_INSTANCES, "echo"),
          1, 0);
    json_t *s = snapshot_ok();
    cr_assert_null(metrics_of(s, "echo"));
    json_decref(s);
}

Test(shared, a_counter_is_summed_and_survives_its_worker)
{
    atomic_store(&shared->workers, 2);
    pb_metric_entry_add(metric(0, "queue", "enqueued", "jobs", PB_METRIC_COUNTER), 4);
    pb_metric_entry_add(metric(3, "queue", "enqueued", "jobs", PB_METRIC_COUNTER), 5);
    cr_assert_eq(metric_value("queue", "enqueued", "jobs"), 9);

    pb_shared_reset_worker(shared, 3);
    cr_assert_eq(atomic_load(&shared->slots[3].metrics_claimed), 0);
    cr_assert_eq(atomic_load(&shared->slots[3].metrics[0].used), 0);
    cr_assert_eq(metric_value("queue", "enqueued", "jobs"), 9);

    /* The worker that replaces it counts on from its own zero. */
    pb_metric_entry *again = metric(3, "queue", "enqueued", "jobs", PB_METRIC_COUNTER);
    cr_assert_eq(atomic_load(&again->value), 0);
    pb_metric_entry_add(again, 1);
    cr_assert_eq(metric_value("queue", "enqueued", "jobs"), 10);
    pb_shared_reset_worker(shared, 3);
    pb_shared_reset_worker(shared, 0);
    cr_assert_eq(metric_value("queue", "enqueued", "jobs"), 10);
}

Test(shared, a_gauge_is_summed_over_running_workers_only)
{
    atomic_store(&shared->workers, 2);
    pb_metric_entry_set(metric(0, "pubsub", "subscribers", NULL, PB_METRIC_GAUGE), 4);
    pb_metric_entry *mine = metric(1, "pubsub", "subscribers", NULL, PB_METRIC_GAUGE);
    pb_metric_entry_add(mine, 5);
    pb_metric_entry_add(mine, -2);
    cr_assert_eq(metric_value("pubsub", "subscribers", NULL), 7);

    pb_shared_reset_worker(shared, 1);
    cr_assert_eq(metric_value("pubsub", "subscribers", NULL), 4);
    pb_shared_reset_worker(shared, 0);
    json_t *s = snapshot_ok();
    cr_assert_null(metrics_of(s, "pubsub"));
    json_decref(s);
}

Test(shared, a_shared_level_reports_the_value_set_last_by_any_worker)
{
    atomic_store(&shared->workers, 2);
    pb_metric_entry *a = metric(0, "queue", "depth", "jobs", PB_METRIC_SHARED);
    pb_metric_entry *b = metric(1, "queue", "depth", "jobs", PB_METRIC_SHARED);
    cr_assert_eq(metric_value("queue", "depth", "jobs"), 0);
    pb_metric_entry_set(a, 10);
    pb_metric_entry_set(b, 20);
    cr_assert_eq(metric_value("queue", "depth", "jobs"), 20);
    pb_metric_entry_set(a, 5);
    cr_assert_eq(metric_value("queue", "depth", "jobs"), 5);

    /* Kept when its worker exits, while it is still the latest... */
    pb_shared_reset_worker(shared, 0);
    cr_assert_eq(metric_value("queue", "depth", "jobs"), 5);
    /* ...and replaced by a later one. */
    pb_metric_entry_add(b, 1);
    cr_assert_eq(metric_value("queue", "depth", "jobs"), 21);
    /* An older value leaving does not replace the archive's newer one. */
    pb_metric_entry *c = metric(0, "queue", "depth", "jobs", PB_METRIC_SHARED);
    pb_metric_entry_set(c, 7);
    pb_shared_reset_worker(shared, 1);
    pb_shared_reset_worker(shared, 0);
    cr_assert_eq(metric_value("queue", "depth", "jobs"), 7);
}

/* The archive has PB_METRICS entries; counts of counters beyond them are
 * kept as retired, so that a total never goes backwards. */
Test(shared, counters_the_archive_cannot_hold_are_kept_as_retired)
{
    for (int generation = 0; generation < 2; generation++) {
        for (int i = 0; i < PB_METRICS; i++) {
            char label[32];
            snprintf(label, sizeof label, "g%d-%d", generation, i);
            pb_metric_entry_add(metric(4, "queue", "enqueued", label,
                                       PB_METRIC_COUNTER), 2);
        }
        atomic_fetch_add(&shared->workers, 1);
        pb_shared_reset_worker(shared, 4);
    }
    json_t *s = snapshot_ok();
    cr_assert_eq(member(json_object_get(s, "retired"), "metrics"), 2 * PB_METRICS);
    cr_assert_eq(json_object_size(json_object_get(metrics_of(s, "queue"), "enqueued")),
                 PB_METRICS);
    json_decref(s);
}

/* A worker's pages of the table are touched only as it fills them: a
 * snapshot reads no entry past those claimed. */
Test(shared, a_snapshot_reads_no_metric_past_those_claimed)
{
    metric(6, "queue", "ready", NULL, PB_METRIC_GAUGE);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *table = (char *)shared->slots[6].metrics;
    char *rest = (char *)(((uintptr_t)table + sizeof(pb_metric_entry) + page) / page * page);
    char *end = table + sizeof shared->slots[6].metrics;
    /* Not a whole page past the first entry would be too short a test. */
    cr_assert_lt(rest + page, end);
    size_t length = (size_t)(end - rest) / page * page;
    cr_assert_eq(mprotect(rest, length, PROT_NONE), 0);
    json_t *s = snapshot_ok();
    json_decref(s);
    cr_assert_eq(mprotect(rest, length, PROT_READ | PROT_WRITE), 0);
}

/* --- Concurrent claims --------------------------------------------------------- */

#define CLAIMERS 8
#define CLAIMED_KEYS 32

static pb_metric_entry *claims[CLAIMERS][CLAIMED_KEYS];

static void *claim_keys(void *arg)
{
    pb_metric_entry **mine = arg;
    for (int k = 0; k < CLAIMED_KEYS; k++) {
        char label[16];
        snprintf(label, sizeof label, "k%d", k);
        int at = pb_metric_index(shared, 0, "queue", "enqueued", label,
                                 PB_METRIC_COUNTER);
        mine[k] = at >= 0 ? &shared->slots[0].metrics[at] : NULL;
        if (mine[k] != NULL)
            pb_metric_entry_add(mine[k], 1);
    }
    return NULL;
}

/* Threads of one worker asking for the same new metrics at once meet at
 * the same entries. */
Test(shared, threads_claiming_the_same_metrics_get_the_same_entries)
{
    pthread_t threads[CLAIMERS];
    for (int t = 0; t < CLAIMERS; t++)
        cr_assert_eq(pthread_create(&threads[t], NULL, claim_keys, claims[t]), 0);
    for (int t = 0; t < CLAIMERS; t++)
        pthread_join(threads[t], NULL);
    for (int k = 0; k < CLAIMED_KEYS; k++) {
        cr_assert_not_null(claims[0][k]);
        for (int t = 1; t < CLAIMERS; t++)
            cr_assert_eq(claims[t][k], claims[0][k], "key %d, thread %d", k, t);
        cr_assert_eq(atomic_load(&claims[0][k]->value), CLAIMERS);
    }
    cr_assert_eq(atomic_load(&shared->slots[0].metrics_claimed), CLAIMED_KEYS);
}

/* --- Listeners, durations, the worker list ------------------------------------ */

/* A plugin's "latency" in a snapshot: count, and the cumulative count of
 * bucket b (the last is +Inf). */
static json_int_t latency_count(const json_t *snapshot, const char *instance)
{
    const json_t *latency = json_object_get(
        json_object_get(json_object_get(snapshot, "plugins"), instance), "latency");
    cr_assert(json_is_object(latency), "no latency for %s", instance);
    return member(latency, "count");
}

static json_int_t bucket(const json_t *snapshot, const char *instance, int b)
{
    const json_t *buckets = json_object_get(json_object_get(json_object_get(
        json_object_get(snapshot, "plugins"), instance), "latency"), "buckets");
    cr_assert_eq(json_array_size(buckets), PB_LATENCY_BUCKETS);
    return json_integer_value(json_array_get(json_array_get(buckets, (size_t)b), 1));
}

static double latency_sum(const json_t *snapshot, const char *instance)
{
    return json_real_value(json_object_get(json_object_get(json_object_get(
        json_object_get(snapshot, "plugins"), instance), "latency"), "sum"));
}

static json_int_t listener_stat(const json_t *snapshot, const char *name, const char *key)
{
    const json_t *entry = json_object_get(json_object_get(snapshot, "listeners"), name);
    return entry ? member(entry, key) : -1;
}

Test(shared, listeners_count_open_and_accepted_connections_by_name)
{
    int app = pb_stats_listener_index(shared, 0, "app");
    int admin = pb_stats_listener_index(shared, 0, "admin");
    cr_assert(app >= 0 && admin >= 0 && app != admin);
    cr_assert_eq(pb_stats_listener_index(shared, 0, "app"), app,
                 "a second socket of one listener shares its counters");
    int other = pb_stats_listener_index(shared, 1, "app");
    for (int i = 0; i < 3; i++)
        pb_stats_listener_open(shared, 0, app);
    pb_stats_listener_close(shared, 0, app);
    pb_stats_listener_open(shared, 0, admin);
    pb_stats_listener_open(shared, 1, other);
    pb_stats_listener_open(shared, 1, -1);
    pb_stats_listener_close(shared, 1, -1);

    json_t *s = snapshot_ok();
    cr_expect_eq(listener_stat(s, "app", "open"), 3);
    cr_expect_eq(listener_stat(s, "app", "accepted"), 4);
    cr_expect_eq(listener_stat(s, "admin", "open"), 1);
    cr_expect_eq(listener_stat(s, "admin", "accepted"), 1);
    json_decref(s);
}

Test(shared, a_listener_table_takes_only_so_many_names)
{
    for (int i = 0; i < PB_STATS_LISTENERS; i++) {
        char name[32];
        snprintf(name, sizeof name, "l%d", i);
        cr_assert_geq(pb_stats_listener_index(shared, 0, name), 0);
    }
    cr_assert_eq(pb_stats_listener_index(shared, 0, "one too many"), -1);
}

Test(shared, accepted_connections_outlive_their_worker_and_open_ones_do_not)
{
    atomic_store(&shared->workers, 2);
    for (int slot = 0; slot < 2; slot++) {
        int app = pb_stats_listener_index(shared, slot, "app");
        pb_stats_listener_open(shared, slot, app);
        pb_stats_listener_open(shared, slot, app);
    }
    pb_shared_reset_worker(shared, 0);
    json_t *s = snapshot_ok();
    cr_expect_eq(listener_stat(s, "app", "open"), 2);
    cr_expect_eq(listener_stat(s, "app", "accepted"), 4);
    json_decref(s);

    /* Its successor counts from nothing on top of the archive. */
    int app = pb_stats_listener_index(shared, 0, "app");
    pb_stats_listener_open(shared, 0, app);
    s = snapshot_ok();
    cr_expect_eq(listener_stat(s, "app", "open"), 3);
    cr_expect_eq(listener_stat(s, "app", "accepted"), 5);
    cr_expect_eq(member(json_object_get(json_object_get(s, "retired"), "listeners"),
                        "accepted"), 0);
    json_decref(s);
}

Test(shared, a_duration_lands_in_the_first_bucket_whose_bound_it_does_not_pass)
{
    pb_stats_rebind(shared, 0);
    int at = pb_stats_instance_index(shared, 0, "search", "search");
    pb_latency *l = &shared->slots[0].latency[at];
    pb_latency_record(l, 0);                /* bucket 0: <= 50 us */
    pb_latency_record(l, 50000);            /* a bound itself: still bucket 0 */
    pb_latency_record(l, 50001);            /* bucket 1: <= 100 us */
    pb_latency_record(l, 3000000);          /* bucket 6: <= 5 ms */
    pb_latency_record(l, 10000000000LL);    /* bucket 16: <= 10 s */
    pb_latency_record(l, 10000000001LL);    /* +Inf */

    json_t *s = snapshot_ok();
    cr_expect_eq(bucket(s, "search", 0), 2);
    cr_expect_eq(bucket(s, "search", 1), 3);
    cr_expect_eq(bucket(s, "search", 5), 3);
    cr_expect_eq(bucket(s, "search", 6), 4);
    cr_expect_eq(bucket(s, "search", 15), 4);
    cr_expect_eq(bucket(s, "search", 16), 5);
    cr_expect_eq(bucket(s, "search", PB_LATENCY_BOUNDS), 6);
    cr_expect_eq(latency_count(s, "search"), 6);
    cr_expect_float_eq(latency_sum(s, "search"), 20.003100002, 1e-9);
    const json_t *buckets = json_object_get(json_object_get(json_object_get(
        json_object_get(s, "plugins"), "search"), "latency"), "buckets");
    cr_expect_float_eq(json_real_value(json_array_get(json_array_get(buckets, 0), 0)),
                       0.00005, 1e-12);
    cr_expect_float_eq(json_real_value(json_array_get(json_array_get(buckets, 16), 0)),
                       10.0, 1e-12);
    cr_expect_str_eq(json_string_value(json_array_get(json_array_get(buckets, 17), 0)),
                     "+Inf");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(
                         json_object_get(s, "plugins"), "search"), "module")), "search");
    json_decref(s);
}

Test(shared, durations_are_summed_over_workers_and_survive_a_worker_and_a_reload)
{
    atomic_store(&shared->workers, 2);
    for (int slot = 0; slot < 2; slot++) {
        pb_stats_rebind(shared, slot);
        int at = pb_stats_instance_index(shared, slot, "rt", "runtime");
        count(slot, PB_STATS_INSTANCES, at, 2, 0);
        pb_latency_record(&shared->slots[slot].latency[at], 1000);
        pb_latency_record(&shared->slots[slot].latency[at], 30000000);
    }
    pb_shared_reset_worker(shared, 1);
    json_t *s = snapshot_ok();
    cr_expect_eq(latency_count(s, "rt"), 4);
    cr_expect_eq(bucket(s, "rt", 0), 2);
    cr_expect_float_eq(latency_sum(s, "rt"), 0.060002, 1e-12);
    json_decref(s);

    /* A reload whose names fill the table evicts "rt" from worker 0: its
     * durations move to the archive with its counts. */
    pb_stats_rebind(shared, 0);
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof name, "p%d", i);
        cr_assert_geq(pb_stats_instance_index(shared, 0, name, "echo"), 0);
    }
    s = snapshot_ok();
    cr_expect_eq(latency_count(s, "rt"), 4);
    cr_expect_eq(latency_count(s, "p0"), 0, "an evicted entry starts a new name at 0");
    cr_expect_float_eq(latency_sum(s, "rt"), 0.060002, 1e-12);
    json_decref(s);
}

Test(shared, durations_the_archive_cannot_hold_are_kept_as_retired)
{
    pb_stats_rebind(shared, PB_ARCHIVE_SLOT);
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof name, "old%d", i);
        int at = pb_stats_index(shared, PB_ARCHIVE_SLOT, PB_STATS_INSTANCES, name);
        count(PB_ARCHIVE_SLOT, PB_STATS_INSTANCES, at, 1, 0);
    }
    int at = pb_stats_instance_index(shared, 2, "late", "echo");
    count(2, PB_STATS_INSTANCES, at, 1, 0);
    pb_latency_record(&shared->slots[2].latency[at], 200000);
    atomic_store(&shared->workers, 1);
    pb_shared_reset_worker(shared, 2);
    json_t *s = snapshot_ok();
    const json_t *retired = json_object_get(json_object_get(json_object_get(s, "retired"),
                                                            "plugins"), "latency");
    cr_expect_eq(member(retired, "count"), 1);
    json_decref(s);
}

Test(shared, the_worker_list_shows_running_workers_in_slot_order)
{
    atomic_store(&shared->workers, 2);
    pb_shared_set_pid(shared, 4, 4004);
    pb_shared_set_pid(shared, 1, 1001);
    cr_assert(pb_shared_take_connection(shared, 4, 10));
    atomic_fetch_add(&shared->slots[4].messages, 9);

    json_t *s = snapshot_ok();
    const json_t *list = json_object_get(s, "worker_list");
    cr_assert_eq(json_array_size(list), 2);
    const json_t *first = json_array_get(list, 0), *second = json_array_get(list, 1);
    cr_expect_eq(member(first, "slot"), 1);
    cr_expect_eq(member(first, "pid"), 1001);
    cr_expect_eq(member(first, "connections"), 0);
    cr_expect_eq(member(second, "slot"), 4);
    cr_expect_eq(member(second, "pid"), 4004);
    cr_expect_eq(member(second, "connections"), 1);
    cr_expect_eq(member(second, "messages"), 9);
    cr_expect_str_eq(json_string_value(json_object_get(s, "version")), PACKAGE_VERSION);
    cr_expect_eq(member(s, "abi"), PLUGBOARD_ABI_VERSION);
    json_decref(s);

    pb_shared_reset_worker(shared, 4);
    s = snapshot_ok();
    cr_expect_eq(json_array_size(json_object_get(s, "worker_list")), 1,
                 "a worker gone leaves the list");
    json_decref(s);
}

Test(shared, a_metric_reports_its_kind)
{
    int at = pb_metric_index(shared, 0, "q", "ready", "mail", PB_METRIC_SHARED);
    int c = pb_metric_index(shared, 0, "q", "enqueued", NULL, PB_METRIC_COUNTER);
    cr_assert(at >= 0 && c >= 0);
    json_t *s = snapshot_ok();
    const json_t *kinds = json_object_get(json_object_get(json_object_get(s, "plugins"),
                                                          "q"), "metric_kinds");
    cr_expect_str_eq(json_string_value(json_object_get(kinds, "ready")), "shared");
    cr_expect_str_eq(json_string_value(json_object_get(kinds, "enqueued")), "counter");
    json_decref(s);
}

/*
 * test_shared.c - the statistics shared by the master and the workers
 * (daemon/shared.c): naming counters, the snapshot, the archive and the
 * recycling of a worker's entries across reloads.
 */
#include <criterion/criterion.h>
#include <pthread.h>
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

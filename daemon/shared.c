/*
 * shared.c - state shared between the master and the workers. Counters are
 * lock-free atomics, so a worker killed mid-update leaves nothing locked;
 * each worker writes only its own slot.
 */
#include "shared.h"

#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>

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

static void archive_named(pb_named_counter *archive, pb_named_counter *from)
{
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        if (!atomic_load(&from[i].used))
            continue;
        int at = pb_stats_index(archive, from[i].name);
        if (at >= 0) {
            atomic_fetch_add(&archive[at].messages, atomic_load(&from[i].messages));
            atomic_fetch_add(&archive[at].errors, atomic_load(&from[i].errors));
        }
    }
}

void pb_shared_reset_worker(pb_shared *shared, int slot)
{
    pb_worker_stats *w = &shared->slots[slot];
    pb_worker_stats *a = &shared->slots[PB_ARCHIVE_SLOT];
    long held = atomic_exchange(&w->connections, 0);
    atomic_fetch_sub(&shared->connections, held);
    atomic_fetch_sub(&shared->workers, 1);

    atomic_fetch_add(&a->accepted, atomic_load(&w->accepted));
    atomic_fetch_add(&a->refused, atomic_load(&w->refused));
    atomic_fetch_add(&a->messages, atomic_load(&w->messages));
    atomic_fetch_add(&a->bytes_in, atomic_load(&w->bytes_in));
    atomic_fetch_add(&a->bytes_out, atomic_load(&w->bytes_out));
    for (int i = 0; i < PB_ERROR_CODES; i++)
        atomic_fetch_add(&a->errors[i], atomic_load(&w->errors[i]));
    archive_named(a->instances, w->instances);
    archive_named(a->routes, w->routes);
    /* The slot starts over for the next worker that takes it. */
    memset(w, 0, sizeof *w);
}

int pb_stats_index(pb_named_counter *table, const char *name)
{
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        if (!atomic_load(&table[i].used)) {
            strncpy(table[i].name, name, PB_STATS_NAME_LEN - 1);
            table[i].name[PB_STATS_NAME_LEN - 1] = '\0';
            atomic_store(&table[i].used, 1);
            return i;
        }
        if (strncmp(table[i].name, name, PB_STATS_NAME_LEN - 1) == 0)
            return i;
    }
    return -1;
}

static void add_named(json_t *object, const pb_named_counter *table, int with_errors)
{
    for (int i = 0; i < PB_STATS_NAMES; i++) {
        if (!atomic_load(&table[i].used))
            continue;
        json_t *entry = json_object_get(object, table[i].name);
        if (entry == NULL) {
            entry = json_pack("{s:I}", "messages", (json_int_t)0);
            if (with_errors)
                json_object_set_new(entry, "errors", json_integer(0));
            json_object_set_new(object, table[i].name, entry);
        }
        json_t *m = json_object_get(entry, "messages");
        json_integer_set(m, json_integer_value(m) + atomic_load(&table[i].messages));
        json_t *e = json_object_get(entry, "errors");
        if (e != NULL)
            json_integer_set(e, json_integer_value(e) + atomic_load(&table[i].errors));
    }
}

json_t *pb_stats_snapshot(const pb_shared *shared)
{
    long accepted = 0, refused = 0, messages = 0, in = 0, out = 0;
    long errors[PB_ERROR_CODES] = { 0 };
    json_t *instances = json_object(), *routes = json_object();
    for (int s = 0; s <= PB_ARCHIVE_SLOT; s++) {
        const pb_worker_stats *w = &shared->slots[s];
        accepted += atomic_load(&w->accepted);
        refused += atomic_load(&w->refused);
        messages += atomic_load(&w->messages);
        in += atomic_load(&w->bytes_in);
        out += atomic_load(&w->bytes_out);
        for (int i = 0; i < PB_ERROR_CODES; i++)
            errors[i] += atomic_load(&w->errors[i]);
        add_named(instances, w->instances, 1);
        add_named(routes, w->routes, 1);
    }
    json_t *errs = json_object();
    for (int i = PB_ERR_NONE + 1; i < PB_ERROR_CODES; i++)
        json_object_set_new(errs, pb_error_token((pb_error_code)i),
                            json_integer(errors[i]));
    long reloads = atomic_load(&shared->reloads);
    return json_pack("{s:f, s:I, s:I, s:I, s:I, s:i,"
                     " s:{s:I, s:I, s:I}, s:I, s:{s:I, s:I}, s:o, s:o, s:o}",
                     "uptime", wall_clock() - shared->started,
                     "generation", (json_int_t)reloads + 1,
                     "reloads", (json_int_t)reloads,
                     "failed_reloads", (json_int_t)atomic_load(&shared->failed_reloads),
                     "worker_restarts", (json_int_t)atomic_load(&shared->worker_restarts),
                     "workers", atomic_load(&shared->workers),
                     "connections",
                       "open", (json_int_t)atomic_load(&shared->connections),
                       "accepted", (json_int_t)accepted,
                       "refused", (json_int_t)refused,
                     "messages", (json_int_t)messages,
                     "bytes", "in", (json_int_t)in, "out", (json_int_t)out,
                     "errors", errs,
                     "plugins", instances,
                     "routes", routes);
}

/*
 * shared.c - state shared between the master and the workers. Counters are
 * lock-free atomics, so a worker killed mid-update leaves nothing locked,
 * and each worker's share is kept apart so the master can give back what a
 * crashed worker held.
 */
#include "shared.h"

#include <sys/mman.h>

pb_shared *pb_shared_create(void)
{
    void *p = mmap(NULL, sizeof(pb_shared), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    pb_shared *shared = p;
    atomic_init(&shared->connections, 0);
    for (int i = 0; i < PB_MAX_WORKERS; i++)
        atomic_init(&shared->worker_connections[i], 0);
    return shared;
}

void pb_shared_destroy(pb_shared *shared)
{
    if (shared != NULL)
        munmap(shared, sizeof *shared);
}

int pb_shared_take_connection(pb_shared *shared, int slot, long max)
{
    if (atomic_fetch_add(&shared->connections, 1) >= max) {
        atomic_fetch_sub(&shared->connections, 1);
        return 0;
    }
    atomic_fetch_add(&shared->worker_connections[slot], 1);
    return 1;
}

void pb_shared_release_connection(pb_shared *shared, int slot)
{
    atomic_fetch_sub(&shared->worker_connections[slot], 1);
    atomic_fetch_sub(&shared->connections, 1);
}

void pb_shared_reset_worker(pb_shared *shared, int slot)
{
    long held = atomic_exchange(&shared->worker_connections[slot], 0);
    atomic_fetch_sub(&shared->connections, held);
}

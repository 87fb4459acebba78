/*
 * shared.h - the little state the master and its workers share, in one
 * anonymous shared mapping made before the first fork: the daemon-wide
 * connection count that max_connections limits.
 */
#ifndef PB_SHARED_H
#define PB_SHARED_H

#include <stdatomic.h>
#include <stddef.h>

#define PB_MAX_WORKERS 256

typedef struct pb_shared {
    atomic_long connections;                /* all workers together */
    atomic_long worker_connections[PB_MAX_WORKERS];  /* each worker's share */
} pb_shared;

/* Maps a zeroed pb_shared; NULL when mmap fails. */
pb_shared *pb_shared_create(void);
void pb_shared_destroy(pb_shared *shared);

/* Worker `slot` takes a connection unless `max` are open daemon-wide;
 * returns 1 when taken. */
int pb_shared_take_connection(pb_shared *shared, int slot, long max);
void pb_shared_release_connection(pb_shared *shared, int slot);

/* The master, after worker `slot` died: gives back the connections it
 * held, which its exit closed. */
void pb_shared_reset_worker(pb_shared *shared, int slot);

#endif

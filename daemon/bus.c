/*
 * bus.c - broadcasts between workers: a byte ring per worker slot in a
 * shared mapping, written by any worker and read by its owner, who is
 * woken with SIGURG. A message larger than a fragment travels as several
 * records, put back together per sender.
 *
 * Why signals: every worker, including one forked after others, reaches
 * every other through the mapping the master made before the first fork,
 * and a signal needs nothing more than the receiver's pid; a pipe or an
 * eventfd per worker would have to be handed to workers already running.
 * SIGURG is ignored by default, so one that reaches a process that has
 * since reused an exited worker's pid does nothing; and `wake` makes it
 * one signal per drain, however many messages are sent meanwhile.
 *
 * The ring lock is a robust process-shared mutex: a worker killed while
 * holding it leaves it to the next locker, and a record counts only once
 * `tail` moved past it, so a half-written one is never read.
 */
#include "bus.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "shared.h"

#define RING_BYTES (256u * 1024u)
#define FRAGMENT_BYTES (RING_BYTES / 4u)
/* What one process keeps for a worker that does not drain its ring. */
#define BACKLOG_MAX ((size_t)64 << 20)
#define RETRY_SECONDS 0.01

enum { FIRST = 1, LAST = 2 };

/* Before each fragment; the first of a message also carries the name. */
typedef struct record_head {
    uint32_t length;            /* the bytes after this head */
    uint32_t total;             /* FIRST: the whole message's length */
    uint64_t origin;            /* the sending instance, in its process */
    uint32_t sender;            /* its pid */
    uint16_t slot;              /* its worker slot */
    uint8_t flags;
    uint8_t reserved;
    uint16_t name_length;       /* FIRST: the name's bytes, before the data */
    uint16_t reserved2;
    uint32_t reserved3;
} record_head;

typedef struct ring {
    pthread_mutex_t lock;
    atomic_int pid;             /* the worker reading it; 0: none */
    atomic_int wake;            /* a SIGURG is on its way to it */
    uint64_t head, tail;        /* bytes ever read, ever written */
    unsigned char data[RING_BYTES];
} ring;

/* Records this process could not put in one worker's ring yet. */
typedef struct backlog {
    int pid;                    /* the worker they are for */
    unsigned char *data;
    size_t start, length, capacity;
} backlog;

/* A message arriving in fragments from one sender slot. */
typedef struct partial {
    unsigned char *data;
    size_t have, total, capacity;
    size_t name_length;
    uint64_t origin;
    uint32_t sender;
    int active;
} partial;

static ring *rings;                 /* PB_MAX_WORKERS, shared */
/* Each ring's pid again, side by side in a mapping of their own: a sender
 * looks for the workers to reach in a few cache lines, not one line per
 * ring a quarter of a megabyte apart. After them, one more than the
 * highest slot ever attached: no ring above it has a reader. */
static atomic_int *ring_pids;
#define SLOTS_USED PB_MAX_WORKERS
static int own_slot = -1;

/* Sending: one sender of this process at a time keeps its records in
 * order in every ring. */
static pthread_mutex_t send_lock = PTHREAD_MUTEX_INITIALIZER;
static backlog backlogs[PB_MAX_WORKERS];
static int dropping[PB_MAX_WORKERS];

/* Receiving, on the loop thread. */
static struct ev_loop *bus_loop;
static ev_signal wake_watcher;
static ev_async retry_async;
static ev_timer retry_timer;
static pb_bus_deliver *deliver;
static void *deliver_arg;
static unsigned char *inbox;
static size_t inbox_capacity;
static partial partials[PB_MAX_WORKERS];

int pb_bus_create(void)
{
    size_t size = sizeof(ring) * PB_MAX_WORKERS;
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) {
        pb_log_error("cannot map the broadcast rings: %s", strerror(errno));
        return -1;
    }
    void *pids = mmap(NULL, sizeof(atomic_int) * (PB_MAX_WORKERS + 1),
                      PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (pids == MAP_FAILED) {
        pb_log_error("cannot map the broadcast rings: %s", strerror(errno));
        munmap(map, size);
        return -1;
    }
    rings = map;
    ring_pids = pids;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    for (int i = 0; i < PB_MAX_WORKERS; i++)
        pthread_mutex_init(&rings[i].lock, &attr);
    pthread_mutexattr_destroy(&attr);
    return 0;
}

void pb_bus_forget(int slot)
{
    if (rings != NULL && slot >= 0 && slot < PB_MAX_WORKERS) {
        atomic_store(&rings[slot].pid, 0);
        atomic_store(&ring_pids[slot], 0);
    }
}

static void ring_lock(ring *r)
{
    if (pthread_mutex_lock(&r->lock) == EOWNERDEAD)
        pthread_mutex_consistent(&r->lock);
}

static size_t ring_room(const ring *r)
{
    return RING_BYTES - (size_t)(r->tail - r->head);
}

/* Copies bytes in at the tail, which the caller moves once the record is
 * whole. */
static void ring_put(ring *r, uint64_t at, const void *bytes, size_t n)
{
    if (n == 0)
        return;
    size_t offset = (size_t)(at % RING_BYTES);
    size_t first = n < RING_BYTES - offset ? n : RING_BYTES - offset;
    memcpy(r->data + offset, bytes, first);
    memcpy(r->data, (const unsigned char *)bytes + first, n - first);
}

static void ring_wake(ring *r, int pid)
{
    if (!atomic_exchange(&r->wake, 1))
        kill(pid, SIGURG);
}

static int backlog_put(backlog *b, const void *bytes, size_t n)
{
    if (n == 0)
        return 0;
    if (b->start + b->length + n > b->capacity) {
        if (b->length > 0)
            memmove(b->data, b->data + b->start, b->length);
        b->start = 0;
        if (b->length + n > b->capacity) {
            size_t capacity = b->capacity ? b->capacity : 4096;
            while (capacity < b->length + n)
                capacity *= 2;
            unsigned char *data = realloc(b->data, capacity);
            if (data == NULL)
                return -1;
            b->data = data;
            b->capacity = capacity;
        }
    }
    memcpy(b->data + b->start + b->length, bytes, n);
    b->length += n;
    return 0;
}

/* Moves whole records from the backlog into the ring while they fit.
 * Returns whether anything moved. Ring locked. */
static int backlog_flush(backlog *b, ring *r)
{
    int moved = 0;
    while (b->length > 0) {
        record_head h;
        memcpy(&h, b->data + b->start, sizeof h);
        size_t size = sizeof h + h.length;
        if (ring_room(r) < size)
            break;
        ring_put(r, r->tail, b->data + b->start, size);
        r->tail += size;
        b->start += size;
        b->length -= size;
        moved = 1;
    }
    if (b->length == 0)
        b->start = 0;
    return moved;
}

static void schedule_retry(void)
{
    if (bus_loop != NULL)
        ev_async_send(bus_loop, &retry_async);
}

/* One message to the worker of slot s (pid), send_lock held: straight
 * into its ring while nothing waits before it, the rest into the
 * backlog. */
static int send_to(int s, int pid, const char *name, size_t name_length,
                   const void *origin, const unsigned char *data,
                   size_t length)
{
    ring *r = &rings[s];
    backlog *b = &backlogs[s];
    if (b->pid != pid) {
        b->pid = pid;
        b->start = b->length = 0;
        dropping[s] = 0;
    }
    ring_lock(r);
    int woke = backlog_flush(b, r);
    size_t offset = 0;
    int first = 1, to_backlog = b->length > 0;
    do {
        size_t n = length - offset < FRAGMENT_BYTES ? length - offset : FRAGMENT_BYTES;
        record_head h = {
            .length = (uint32_t)((first ? name_length : 0) + n),
            .total = (uint32_t)length,
            .origin = (uint64_t)(uintptr_t)origin,
            .sender = (uint32_t)getpid(),
            .slot = (uint16_t)own_slot,
            .flags = (uint8_t)((first ? FIRST : 0) | (offset + n == length ? LAST : 0)),
            .name_length = (uint16_t)(first ? name_length : 0),
        };
        if (!to_backlog && ring_room(r) >= sizeof h + h.length) {
            uint64_t at = r->tail;
            ring_put(r, at, &h, sizeof h);
            at += sizeof h;
            if (first) {
                ring_put(r, at, name, name_length);
                at += name_length;
            }
            ring_put(r, at, data + offset, n);
            r->tail = at + n;
            woke = 1;
        } else {
            to_backlog = 1;
            if (b->length + sizeof h + h.length > BACKLOG_MAX ||
                backlog_put(b, &h, sizeof h) != 0 ||
                (first && backlog_put(b, name, name_length) != 0) ||
                backlog_put(b, data + offset, n) != 0) {
                pthread_mutex_unlock(&r->lock);
                if (!dropping[s])
                    pb_log_warning("broadcast to worker %d dropped: it is not "
                                   "reading (%zu bytes waiting)", s, b->length);
                dropping[s] = 1;
                return -1;
            }
        }
        offset += n;
        first = 0;
    } while (offset < length);
    pthread_mutex_unlock(&r->lock);
    if (woke)
        ring_wake(r, pid);
    if (to_backlog)
        schedule_retry();
    else
        dropping[s] = 0;
    return 0;
}

int pb_bus_send(const char *name, const void *origin, const void *data,
                size_t length, int to_self)
{
    size_t name_length = strlen(name);
    if (rings == NULL || length > UINT32_MAX || name_length > UINT16_MAX)
        return -1;
    pthread_mutex_lock(&send_lock);
    int status = own_slot >= 0 ? 0 : -1;
    int used = atomic_load_explicit(&ring_pids[SLOTS_USED], memory_order_acquire);
    for (int s = 0; s < used && own_slot >= 0; s++) {
        int pid = atomic_load_explicit(&ring_pids[s], memory_order_acquire);
        if (pid == 0 || (s == own_slot && !to_self))
            continue;
        if (send_to(s, pid, name, name_length, origin, data, length) != 0)
            status = -1;
    }
    pthread_mutex_unlock(&send_lock);
    return status;
}

/* --- Receiving ------------------------------------------------------------ */

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    int waiting = 0;
    pthread_mutex_lock(&send_lock);
    for (int s = 0; s < PB_MAX_WORKERS; s++) {
        backlog *b = &backlogs[s];
        if (b->length == 0)
            continue;
        ring *r = &rings[s];
        if (atomic_load(&r->pid) != b->pid) {
            b->start = b->length = 0;       /* that worker is gone */
            continue;
        }
        ring_lock(r);
        int moved = backlog_flush(b, r);
        pthread_mutex_unlock(&r->lock);
        if (moved)
            ring_wake(r, b->pid);
        waiting |= b->length > 0;
    }
    pthread_mutex_unlock(&send_lock);
    if (!waiting)
        ev_timer_stop(loop, w);
}

static void on_retry_async(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    if (!ev_is_active(&retry_timer))
        ev_timer_start(loop, &retry_timer);
}

static void partial_reset(partial *p)
{
    p->active = 0;
    p->have = p->total = p->name_length = 0;
}

/* A fragment from slot h->slot: delivered at once when it is a whole
 * message, else gathered. */
static void take_record(const record_head *h, const unsigned char *body)
{
    if (h->slot >= PB_MAX_WORKERS)
        return;
    partial *p = &partials[h->slot];
    if (h->flags & FIRST) {
        if (h->name_length > h->length)
            return;
        if (h->flags & LAST) {
            partial_reset(p);
            if (h->length - h->name_length == h->total)
                deliver(deliver_arg, (const char *)body, h->name_length,
                        (const void *)(uintptr_t)h->origin, (long)h->sender,
                        body + h->name_length, h->total);
            return;
        }
        size_t need = (size_t)h->name_length + h->total;
        if (need > p->capacity) {
            unsigned char *data = realloc(p->data, need);
            if (data == NULL) {
                partial_reset(p);
                return;
            }
            p->data = data;
            p->capacity = need;
        }
        partial_reset(p);
        p->active = 1;
        p->total = h->total;
        p->name_length = h->name_length;
        p->origin = h->origin;
        p->sender = h->sender;
    } else if (!p->active || p->sender != h->sender) {
        return;                 /* its start went to a worker before us */
    }
    if (p->have + h->length > p->name_length + p->total) {
        partial_reset(p);
        return;
    }
    memcpy(p->data + p->have, body, h->length);
    p->have += h->length;
    if (h->flags & LAST) {
        if (p->have == p->name_length + p->total)
            deliver(deliver_arg, (const char *)p->data, p->name_length,
                    (const void *)(uintptr_t)p->origin, (long)p->sender,
                    p->data + p->name_length, p->total);
        partial_reset(p);
    }
}

static void on_wake(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    ring *r = &rings[own_slot];
    /* Cleared before reading, so that a record written after the read
     * sends another signal. */
    atomic_store(&r->wake, 0);
    ring_lock(r);
    size_t n = (size_t)(r->tail - r->head);
    if (n > inbox_capacity) {
        unsigned char *grown = realloc(inbox, RING_BYTES);
        if (grown == NULL) {
            pthread_mutex_unlock(&r->lock);
            atomic_store(&r->wake, 1);
            kill(getpid(), SIGURG);     /* try again next iteration */
            return;
        }
        inbox = grown;
        inbox_capacity = RING_BYTES;
    }
    size_t offset = (size_t)(r->head % RING_BYTES);
    size_t first = n < RING_BYTES - offset ? n : RING_BYTES - offset;
    memcpy(inbox, r->data + offset, first);
    memcpy(inbox + first, r->data, n - first);
    r->head = r->tail;
    pthread_mutex_unlock(&r->lock);

    size_t at = 0;
    while (at + sizeof(record_head) <= n) {
        record_head h;
        memcpy(&h, inbox + at, sizeof h);
        at += sizeof h;
        if (h.length > n - at)
            break;
        take_record(&h, inbox + at);
        at += h.length;
    }
}

int pb_bus_attach(int slot, struct ev_loop *loop, pb_bus_deliver *fn, void *arg)
{
    if (rings == NULL || slot < 0 || slot >= PB_MAX_WORKERS)
        return -1;
    own_slot = slot;
    bus_loop = loop;
    deliver = fn;
    deliver_arg = arg;
    ev_signal_init(&wake_watcher, on_wake, SIGURG);
    ev_signal_start(loop, &wake_watcher);
    ev_unref(loop);
    ev_async_init(&retry_async, on_retry_async);
    ev_async_start(loop, &retry_async);
    ev_unref(loop);
    ev_timer_init(&retry_timer, on_retry, RETRY_SECONDS, RETRY_SECONDS);
    ring *r = &rings[slot];
    ring_lock(r);
    r->head = r->tail = 0;
    atomic_store(&r->wake, 0);
    atomic_store(&r->pid, (int)getpid());
    atomic_store(&ring_pids[slot], (int)getpid());
    int used = atomic_load(&ring_pids[SLOTS_USED]);
    while (used < slot + 1 &&
           !atomic_compare_exchange_weak(&ring_pids[SLOTS_USED], &used, slot + 1))
        ;
    pthread_mutex_unlock(&r->lock);
    return 0;
}

void pb_bus_detach(void)
{
    if (bus_loop == NULL)
        return;
    atomic_store(&rings[own_slot].pid, 0);
    atomic_store(&ring_pids[own_slot], 0);
    ev_ref(bus_loop);
    ev_signal_stop(bus_loop, &wake_watcher);
    ev_ref(bus_loop);
    ev_async_stop(bus_loop, &retry_async);
    ev_timer_stop(bus_loop, &retry_timer);
    bus_loop = NULL;
    pthread_mutex_lock(&send_lock);
    for (int s = 0; s < PB_MAX_WORKERS; s++) {
        free(backlogs[s].data);
        backlogs[s] = (backlog){ 0 };
        free(partials[s].data);
        partials[s] = (partial){ 0 };
    }
    own_slot = -1;
    pthread_mutex_unlock(&send_lock);
    free(inbox);
    inbox = NULL;
    inbox_capacity = 0;
}

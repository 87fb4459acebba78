/*
 * buffer.c - growable byte buffers. Consumed bytes are reclaimed lazily, by
 * moving the live tail to the front only when room is needed, so a stream of
 * small messages costs no memmove per message. Memory released by emptied
 * buffers is kept in a small per-process pool, so a busy connection that
 * empties its buffers after every batch allocates nothing in steady state
 * while an idle one still holds no memory.
 */
#include "buffer.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The first allocation of a buffer; a reply batch or a read usually fits. */
#define FIRST_CAP 4096
/* Blocks kept for reuse: not larger than a read chunk, at most this many. */
#define POOL_MAX_CAP 65536
#define POOL_BLOCKS 16

/* The pool serves one thread, so it needs no lock: the tools' only thread,
 * or the worker's loop thread once it claimed it. Buffers of other threads
 * (a plugin's pool thread encoding a reply) bypass it. */
static struct block {
    unsigned char *data;
    size_t cap;
} pool[POOL_BLOCKS];
static size_t pooled;
static pthread_t owner;
static int owned;

void pb_buf_pool_claim(void)
{
    owner = pthread_self();
    owned = 1;
}

static int may_pool(void)
{
    return PB_POOLS_ENABLED && (!owned || pthread_equal(pthread_self(), owner));
}

static void release(unsigned char *data, size_t cap)
{
    if (data != NULL && may_pool() && cap >= FIRST_CAP
        && cap <= POOL_MAX_CAP && pooled < POOL_BLOCKS) {
        pool[pooled].data = data;
        pool[pooled].cap = cap;
        pooled++;
        return;
    }
    free(data);
}

/* A fresh block of at least `need` bytes (and its capacity), from the pool
 * when it has one. */
static unsigned char *obtain(size_t need, size_t *cap)
{
    if (pooled > 0 && may_pool()) {
        struct block *top = &pool[pooled - 1];
        if (top->cap >= need) {
            pooled--;
            *cap = top->cap;
            return top->data;
        }
    }
    size_t size = FIRST_CAP;
    while (size < need) {
        if (size > SIZE_MAX / 2) {
            size = need;
            break;
        }
        size *= 2;
    }
    *cap = size;
    return malloc(size);
}

void pb_buf_pool_drain(void)
{
    while (pooled > 0) {
        pooled--;
        free(pool[pooled].data);
    }
}

int pb_buf_reserve(pb_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t live = b->len - b->start;
    if (b->start > 0 && b->cap - live >= extra && b->start >= live) {
        memmove(b->data, b->data + b->start, live);
        b->start = 0;
        b->len = live;
        return 0;
    }
    if (extra > SIZE_MAX - live)
        return -1;
    size_t need = live + extra;
    size_t cap;
    unsigned char *data;
    if (b->data == NULL) {
        data = obtain(need, &cap);
        if (data == NULL)
            return -1;
    } else {
        cap = b->cap;
        while (cap < need) {
            if (cap > SIZE_MAX / 2) {
                cap = need;
                break;
            }
            cap *= 2;
        }
        if (b->start == 0) {
            data = realloc(b->data, cap);
            if (data == NULL)
                return -1;
        } else {
            data = malloc(cap);
            if (data == NULL)
                return -1;
            memcpy(data, b->data + b->start, live);
            release(b->data, b->cap);
        }
    }
    b->data = data;
    b->cap = cap;
    b->start = 0;
    b->len = live;
    return 0;
}

unsigned char *pb_buf_extend(pb_buf *b, size_t n)
{
    if (pb_buf_reserve(b, n) != 0)
        return NULL;
    unsigned char *p = b->data + b->len;
    b->len += n;
    return p;
}

int pb_buf_append(pb_buf *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    unsigned char *p = pb_buf_extend(b, n);
    if (p == NULL)
        return -1;
    memcpy(p, data, n);
    return 0;
}

int pb_buf_append_str(pb_buf *b, const char *s)
{
    return pb_buf_append(b, s, strlen(s));
}

int pb_buf_append_byte(pb_buf *b, unsigned char c)
{
    return pb_buf_append(b, &c, 1);
}

void pb_buf_consume(pb_buf *b, size_t n)
{
    b->start += n;
    if (b->start >= b->len)
        pb_buf_free(b);
}

void pb_buf_truncate(pb_buf *b, size_t len)
{
    if (len < b->len)
        b->len = len < b->start ? b->start : len;
}

void pb_buf_clear(pb_buf *b)
{
    b->start = 0;
    b->len = 0;
}

void pb_buf_free(pb_buf *b)
{
    release(b->data, b->cap);
    b->data = NULL;
    b->start = b->len = b->cap = 0;
}

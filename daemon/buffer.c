/*
 * buffer.c - growable byte buffers. Consumed bytes are reclaimed lazily, by
 * moving the live tail to the front only when room is needed, so a stream of
 * small messages costs no memmove per message.
 */
#include "buffer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    unsigned char *data;
    if (b->start == 0) {
        data = realloc(b->data, cap);
        if (data == NULL)
            return -1;
    } else {
        data = malloc(cap);
        if (data == NULL)
            return -1;
        memcpy(data, b->data + b->start, live);
        free(b->data);
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
    free(b->data);
    b->data = NULL;
    b->start = b->len = b->cap = 0;
}

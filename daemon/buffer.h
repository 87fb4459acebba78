/*
 * buffer.h - a growable byte buffer with a read offset, used for connection
 * input and output and for encoding. An empty buffer holds no memory; the
 * memory of emptied buffers is recycled through a small per-process pool.
 */
#ifndef PB_BUFFER_H
#define PB_BUFFER_H

#include <stddef.h>

typedef struct pb_buf {
    unsigned char *data;
    size_t start;     /* first unconsumed byte */
    size_t len;       /* end of the bytes written (data[start..len) is live) */
    size_t cap;
} pb_buf;

#define PB_BUF_INIT { NULL, 0, 0, 0 }

/* Recycled memory would hide a use after release from AddressSanitizer,
 * so the daemon's pools (of buffer memory, of connections) are off in
 * sanitizer builds. */
#if defined(__SANITIZE_ADDRESS__)
#define PB_POOLS_ENABLED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PB_POOLS_ENABLED 0
#endif
#endif
#ifndef PB_POOLS_ENABLED
#define PB_POOLS_ENABLED 1
#endif

/* Bytes not yet consumed. */
static inline size_t pb_buf_used(const pb_buf *b) { return b->len - b->start; }
/* NULL for an empty buffer that owns no memory (no arithmetic on NULL). */
static inline unsigned char *pb_buf_head(const pb_buf *b) { return b->data ? b->data + b->start : NULL; }

/* Makes room for `extra` more bytes after len; returns 0 or -1 (ENOMEM). */
int pb_buf_reserve(pb_buf *b, size_t extra);
/* Appends bytes; returns 0 or -1. */
int pb_buf_append(pb_buf *b, const void *data, size_t n);
int pb_buf_append_str(pb_buf *b, const char *s);
int pb_buf_append_byte(pb_buf *b, unsigned char c);
/* Reserves n bytes at the end and returns them for the caller to fill. */
unsigned char *pb_buf_extend(pb_buf *b, size_t n);
/* Drops n bytes from the front; frees the memory once nothing is left. */
void pb_buf_consume(pb_buf *b, size_t n);
/* Cuts the written end back to `len` (absolute, >= start). */
void pb_buf_truncate(pb_buf *b, size_t len);
/* Empties the buffer but keeps its memory for reuse. */
void pb_buf_clear(pb_buf *b);
/* Releases the memory: into the pool when it has room, else to free(). */
void pb_buf_free(pb_buf *b);
/* Frees the memory the pool keeps; at exit. */
void pb_buf_pool_drain(void);
/* Makes the calling thread the only one that uses the pool (a worker's
 * loop thread, once other threads may handle buffers too). */
void pb_buf_pool_claim(void);

#endif

/*
 * pool.h - a fixed set of threads running queued jobs, for plugin
 * instances with `threads = N`: their handle() may block while the loop
 * thread goes on serving every other connection.
 */
#ifndef PB_POOL_H
#define PB_POOL_H

typedef struct pb_pool pb_pool;

/* Starts `threads` threads named after `name` (for ps and debuggers).
 * NULL when a thread cannot be started (the ones started are stopped). */
pb_pool *pb_pool_start(int threads, const char *name);

/* Queues run(job) for one of the threads; never blocks. 0, or -1 when out
 * of memory. */
int pb_pool_submit(pb_pool *pool, void (*run)(void *job), void *job);

/* Runs what is still queued, then joins the threads and frees the pool.
 * NULL is ignored. */
void pb_pool_stop(pb_pool *pool);

#endif

/*
 * pool.c - thread pools: a mutex-guarded ring of jobs and N threads that
 * wait on a condition variable for it. The loop thread only ever queues,
 * so it never waits on a pool thread; answers come back to it through the
 * replies' ev_async.
 *
 * Wake-ups are batched: a job queued on the loop thread wakes no thread at
 * once. Once the loop has run every callback of its turn (an ev_prepare,
 * just before it polls), waiting threads are woken: one per job while jobs
 * take long (they block), else only as many as their measured time is
 * worth; each takes its share of the queue under one lock. A burst of
 * requests read in one turn thus costs a few context switches, not a few
 * per request. (Jobs queued behind an unexpectedly slow one among quick
 * ones wait until it ends or until the next jobs queued wake another
 * thread.) A job queued by another prepare watcher's work, after this one
 * ran, would wait for the poll: an idle watcher, active meanwhile, keeps
 * that poll from blocking. Outside a worker's loop (no
 * loop to wait for) a job wakes a thread as it is queued.
 */
#include "pool.h"

#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugin_host.h"

/* The most jobs a thread takes at once: a share of what is queued, so
 * that blocking handlers still spread over every thread. */
#define TAKE_MAX 64

/* The work, in nanoseconds of handler time, worth waking one more thread
 * for: far more than the two context switches that costs. */
#define WAKE_WORTH_NS 20000.0

typedef struct job {
    void (*run)(void *job);
    void *arg;
} job;

struct pb_pool {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    job *jobs;                      /* a ring of cap slots */
    size_t cap, first, count;
    int waiting;                    /* threads in pthread_cond_wait */
    double job_ns;                  /* a job's time, moving average */
    int stopping;
    int n_threads;
    pthread_t *threads;
    struct ev_loop *loop;           /* the loop that queues, or NULL */
    ev_prepare kick;                /* wakes threads before it polls */
    ev_idle nudge;                  /* ... and keeps that poll from blocking */
};

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void *work(void *arg)
{
    pb_pool *pool = arg;
    job taken[TAKE_MAX];
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->count == 0 && !pool->stopping) {
            pool->waiting++;
            pthread_cond_wait(&pool->ready, &pool->lock);
            pool->waiting--;
        }
        if (pool->count == 0)
            break;      /* stopping, and nothing left to run */
        size_t n = (pool->count + (size_t)pool->n_threads - 1) / (size_t)pool->n_threads;
        if (n > TAKE_MAX)
            n = TAKE_MAX;
        for (size_t i = 0; i < n; i++) {
            taken[i] = pool->jobs[pool->first];
            pool->first = (pool->first + 1) % pool->cap;
        }
        pool->count -= n;
        pthread_mutex_unlock(&pool->lock);
        double start = now_ns();
        for (size_t i = 0; i < n; i++)
            taken[i].run(taken[i].arg);
        double each = (now_ns() - start) / (double)n;
        pthread_mutex_lock(&pool->lock);
        pool->job_ns += (each - pool->job_ns) / 8;
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* Under the lock: waiting threads for the jobs queued. A job expected to
 * block gets a thread of its own; quick ones get as many threads as their
 * time together is worth, counting those already running (which take
 * what is queued before they wait again). */
static void wake(pb_pool *pool)
{
    if (pool->count == 0 || pool->waiting == 0)
        return;
    size_t n = pool->count;
    if (pool->job_ns < WAKE_WORTH_NS) {
        size_t worth = (size_t)((double)pool->count * pool->job_ns / WAKE_WORTH_NS) + 1;
        size_t running = (size_t)(pool->n_threads - pool->waiting);
        if (worth <= running)
            return;
        n = worth - running;
    }
    if (n >= (size_t)pool->waiting)
        pthread_cond_broadcast(&pool->ready);
    else
        for (size_t i = 0; i < n; i++)
            pthread_cond_signal(&pool->ready);
}

static void kick(pb_pool *pool)
{
    ev_prepare_stop(pool->loop, &pool->kick);
    ev_idle_stop(pool->loop, &pool->nudge);
    pthread_mutex_lock(&pool->lock);
    wake(pool);
    pthread_mutex_unlock(&pool->lock);
}

static void on_kick(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    kick(w->data);
}

static void on_nudge(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)revents;
    kick(w->data);
}

pb_pool *pb_pool_start(int threads, const char *name)
{
    pb_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return NULL;
    pool->threads = calloc((size_t)threads, sizeof *pool->threads);
    pool->cap = 256;
    pool->jobs = malloc(pool->cap * sizeof *pool->jobs);
    if (pool->threads == NULL || pool->jobs == NULL) {
        free(pool->threads);
        free(pool->jobs);
        free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->ready, NULL);
    /* Until measured, jobs are taken for blocking ones. */
    pool->job_ns = WAKE_WORTH_NS;
    pool->loop = pb_host_services.loop();
    ev_prepare_init(&pool->kick, on_kick);
    pool->kick.data = pool;
    ev_idle_init(&pool->nudge, on_nudge);
    pool->nudge.data = pool;
    /* Threads get no signals: the loop thread handles them all. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&pool->threads[i], NULL, work, pool) != 0)
            break;
        pool->n_threads++;
        char title[16];
        snprintf(title, sizeof title, "pb:%.9s", name);
        pthread_setname_np(pool->threads[i], title);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pool->n_threads < threads) {
        pb_pool_stop(pool);
        return NULL;
    }
    return pool;
}

/* Under the lock: room for one more job. 0, or -1 when out of memory. */
static int grow(pb_pool *pool)
{
    if (pool->count < pool->cap)
        return 0;
    job *jobs = malloc(2 * pool->cap * sizeof *jobs);
    if (jobs == NULL)
        return -1;
    for (size_t i = 0; i < pool->count; i++)
        jobs[i] = pool->jobs[(pool->first + i) % pool->cap];
    free(pool->jobs);
    pool->jobs = jobs;
    pool->first = 0;
    pool->cap *= 2;
    return 0;
}

int pb_pool_submit(pb_pool *pool, void (*run)(void *job), void *arg)
{
    pthread_mutex_lock(&pool->lock);
    if (grow(pool) != 0) {
        pthread_mutex_unlock(&pool->lock);
        return -1;
    }
    pool->jobs[(pool->first + pool->count) % pool->cap] = (job){ run, arg };
    pool->count++;
    if (pool->loop == NULL)
        wake(pool);
    pthread_mutex_unlock(&pool->lock);
    if (pool->loop != NULL && !ev_is_active(&pool->kick)) {
        ev_prepare_start(pool->loop, &pool->kick);
        ev_idle_start(pool->loop, &pool->nudge);
    }
    return 0;
}

void pb_pool_stop(pb_pool *pool)
{
    if (pool == NULL)
        return;
    if (pool->loop != NULL) {
        ev_prepare_stop(pool->loop, &pool->kick);
        ev_idle_stop(pool->loop, &pool->nudge);
    }
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->ready);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->ready);
    pthread_mutex_destroy(&pool->lock);
    free(pool->jobs);
    free(pool->threads);
    free(pool);
}

/*
 * pool.c - thread pools: a mutex-guarded FIFO of jobs and N threads that
 * wait on a condition variable for it. The loop thread only ever queues,
 * so it never waits on a pool thread; answers come back to it through the
 * replies' ev_async.
 */
#include "pool.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct job {
    void (*run)(void *job);
    void *arg;
    struct job *next;
} job;

struct pb_pool {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    job *head, **tail;
    int stopping;
    int n_threads;
    pthread_t *threads;
};

static void *work(void *arg)
{
    pb_pool *pool = arg;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->head == NULL && !pool->stopping)
            pthread_cond_wait(&pool->ready, &pool->lock);
        job *j = pool->head;
        if (j == NULL)
            break;      /* stopping, and nothing left to run */
        pool->head = j->next;
        if (pool->head == NULL)
            pool->tail = &pool->head;
        pthread_mutex_unlock(&pool->lock);
        j->run(j->arg);
        free(j);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

pb_pool *pb_pool_start(int threads, const char *name)
{
    pb_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return NULL;
    pool->threads = calloc((size_t)threads, sizeof *pool->threads);
    if (pool->threads == NULL) {
        free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->ready, NULL);
    pool->tail = &pool->head;
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

int pb_pool_submit(pb_pool *pool, void (*run)(void *job), void *arg)
{
    job *j = malloc(sizeof *j);
    if (j == NULL)
        return -1;
    j->run = run;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&pool->lock);
    *pool->tail = j;
    pool->tail = &j->next;
    pthread_cond_signal(&pool->ready);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

void pb_pool_stop(pb_pool *pool)
{
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->ready);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->ready);
    pthread_mutex_destroy(&pool->lock);
    free(pool->threads);
    free(pool);
}

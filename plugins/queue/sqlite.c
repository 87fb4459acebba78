/*
 * sqlite.c - the queue's SQLite backend: one database file on this machine,
 * shared by every worker, whose statements run on a thread of their own.
 *
 * The thread owns the connection. It takes every job queued since its last
 * turn and runs them all in one transaction, in the order they were started,
 * then commits once: with synchronous=FULL each commit costs an fsync, so
 * sharing it among every operation that arrived meanwhile is what lets
 * throughput grow with the number of clients. Results go back to the loop
 * thread through host->run_on_loop, a whole turn's worth per call.
 *
 * Lease deadlines are wall-clock seconds, so that every worker process (and
 * the daemon after a restart) reads them the same way.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend.h"

#define DEFAULT_PATH "/var/lib/plugboard/queue.db"
/* Other workers hold the write lock only for one turn's transaction. */
#define BUSY_TIMEOUT_MS 10000
#define ERROR_MAX 512
#define SCHEMA_TRIES 250

typedef enum job_kind { JOB_ENQUEUE, JOB_DEQUEUE, JOB_ACK, JOB_DEPTH } job_kind;

/* One operation, from its start on the loop thread to its `done`. */
typedef struct job {
    job_kind kind;
    char *queue;
    char *body;                 /* enqueue: the message; dequeue: the result */
    size_t body_length;
    double lease;               /* dequeue */
    char error[ERROR_MAX];
    queue_result result;
    queue_done *done;
    void *arg;
    struct job *next;
} job;

/*
 * Where the thread leaves finished jobs for the loop thread. It lives apart
 * from the backend because a run_on_loop call made just before close() may
 * run after free(): the last of the backend and that call frees it.
 */
typedef struct mailbox {
    pthread_mutex_t lock;
    job *head, *tail;
    int call_pending;           /* a run_on_loop call will empty it */
    int refs;
} mailbox;

struct queue_backend {
    const pb_host *host;
    pb_instance *instance;
    char path[PATH_MAX];
    sqlite3 *db;
    sqlite3_stmt *insert, *take, *next_expiry, *ack, *depth;
    mailbox *finished;

    pthread_t thread;
    int running;                /* the thread was started and not joined */
    pthread_mutex_t lock;       /* guards todo and stopping */
    pthread_cond_t work;
    job *todo_head, *todo_tail;
    int stopping;
};

static double wall_clock(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static void job_free(job *j)
{
    free(j->queue);
    free(j->body);
    free(j);
}

/* Calls the job's `done` with what it found, then frees it. Loop thread. */
static void job_finish(job *j)
{
    if (j->result.status == QUEUE_FAILED)
        j->result.error = j->error;
    if (j->result.status == QUEUE_OK && j->kind == JOB_DEQUEUE) {
        j->result.message = j->body;
        j->result.message_length = j->body_length;
    }
    j->done(j->arg, &j->result);
    job_free(j);
}

static void job_fail(job *j, const char *why, const char *detail)
{
    j->result.status = QUEUE_FAILED;
    snprintf(j->error, sizeof j->error, "%s%s", why, detail);
}

/* --- Settings --------------------------------------------------------- */

typedef struct settings_check {
    const pb_host *host;
    pb_instance *instance;
    queue_backend *backend;
    int failed;
} settings_check;

static int check_setting(const char *key, const pb_json *value, void *arg)
{
    settings_check *check = arg;
    const pb_host *host = check->host;
    if (strcmp(key, "backend") == 0)
        return 0;
    if (strcmp(key, "path") != 0) {
        host->settings_error(check->instance, value, "unknown setting \"%s\" "
                             "(the sqlite backend takes \"path\")", key);
        check->failed = 1;
        return 0;
    }
    size_t length;
    const char *path = host->json_string(value, &length);
    if (path == NULL || length == 0 || strlen(path) != length) {
        host->settings_error(check->instance, value,
                             "\"path\" must be the database file's name");
        check->failed = 1;
    } else if (host->resolve_path(check->instance, path, check->backend->path,
                                  sizeof check->backend->path) != PB_OK) {
        host->settings_error(check->instance, value, "\"path\" is too long");
        check->failed = 1;
    }
    return 0;
}

static queue_backend *sqlite_configure(const pb_host *host, pb_instance *instance,
                                       const pb_json *settings)
{
    queue_backend *b = calloc(1, sizeof *b);
    if (b == NULL) {
        host->settings_error(instance, NULL, "out of memory");
        return NULL;
    }
    b->host = host;
    b->instance = instance;
    strcpy(b->path, DEFAULT_PATH);
    settings_check check = { host, instance, b, 0 };
    host->json_foreach(settings, check_setting, &check);
    if (check.failed) {
        free(b);
        return NULL;
    }
    return b;
}

static void sqlite_free(queue_backend *b)
{
    free(b);
}

/* --- The database ------------------------------------------------------ */

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS messages ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  queue TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  deliveries INTEGER NOT NULL DEFAULT 0,"
    "  lease_until REAL);"      /* NULL: ready */
    "CREATE INDEX IF NOT EXISTS messages_by_queue"
    "  ON messages (queue, lease_until, id);";

/*
 * The oldest message that is ready or whose lease has expired. Each half is
 * a short walk of the index (ready ones in id order; expired leases, few
 * unless consumers are failing); one OR'ed condition would sort the whole
 * queue on every dequeue.
 */
static const char take_sql[] =
    "UPDATE messages SET lease_until = ?3, deliveries = deliveries + 1"
    " WHERE id = (SELECT min(id) FROM ("
    "   SELECT id FROM (SELECT id FROM messages"
    "     WHERE queue = ?1 AND lease_until IS NULL ORDER BY id LIMIT 1)"
    "   UNION ALL"
    "   SELECT id FROM (SELECT id FROM messages"
    "     WHERE queue = ?1 AND lease_until <= ?2 ORDER BY id LIMIT 1)))"
    " RETURNING id, body, deliveries";

static const char next_expiry_sql[] =
    "SELECT min(lease_until) FROM messages WHERE queue = ?1 AND lease_until > ?2";

static const char insert_sql[] =
    "INSERT INTO messages (queue, body, deliveries, lease_until)"
    " VALUES (?1, ?2, 0, NULL)";

static const char ack_sql[] =
    "DELETE FROM messages WHERE id = ?1 AND queue = ?2 AND lease_until > ?3";

static const char depth_sql[] =
    "SELECT count(*) FILTER (WHERE lease_until IS NULL OR lease_until <= ?2),"
    "       count(*) FILTER (WHERE lease_until > ?2)"
    " FROM messages WHERE queue = ?1";

static void close_db(queue_backend *b)
{
    sqlite3_finalize(b->insert);
    sqlite3_finalize(b->take);
    sqlite3_finalize(b->next_expiry);
    sqlite3_finalize(b->ack);
    sqlite3_finalize(b->depth);
    b->insert = b->take = b->next_expiry = b->ack = b->depth = NULL;
    sqlite3_close(b->db);
    b->db = NULL;
}

/* The package makes the database's directory; running from a build tree
 * or another layout it may be missing. Its last level is made, private to
 * the workers' user; a failure shows as the open's. */
static void make_directory_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    if (slash == NULL || slash == path || (size_t)(slash - path) >= sizeof dir)
        return;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    if (mkdir(dir, 0750) != 0 && errno != EEXIST)
        return;
}

static int open_db(queue_backend *b)
{
    const pb_host *host = b->host;
    make_directory_of(b->path);
    int rc = sqlite3_open_v2(b->path, &b->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                             | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        host->log(b->instance, PB_LOG_ERROR, "cannot open %s: %s", b->path,
                  b->db != NULL ? sqlite3_errmsg(b->db) : sqlite3_errstr(rc));
        close_db(b);
        return PB_ERROR;
    }
    sqlite3_busy_timeout(b->db, BUSY_TIMEOUT_MS);
    /* Switching a new file to WAL does not wait for the other workers
     * opening it at the same moment: try again for a while. */
    for (int tries = 0; tries < SCHEMA_TRIES; tries++) {
        rc = sqlite3_exec(b->db, schema, NULL, NULL, NULL);
        if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            break;
        nanosleep(&(struct timespec){ 0, 20 * 1000 * 1000 }, NULL);
    }
    if (rc != SQLITE_OK
        || sqlite3_prepare_v2(b->db, insert_sql, -1, &b->insert, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(b->db, take_sql, -1, &b->take, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(b->db, next_expiry_sql, -1, &b->next_expiry, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(b->db, ack_sql, -1, &b->ack, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(b->db, depth_sql, -1, &b->depth, NULL) != SQLITE_OK) {
        host->log(b->instance, PB_LOG_ERROR, "cannot open %s: %s", b->path,
                  sqlite3_errmsg(b->db));
        close_db(b);
        return PB_ERROR;
    }
    return PB_OK;
}

/* Runs one job's statement inside the turn's transaction. */
static void run_job(queue_backend *b, job *j, double now)
{
    sqlite3 *db = b->db;
    sqlite3_stmt *s = NULL;
    int rc;
    j->result.ready = j->result.leased = -1;
    j->result.next_expiry = -1;
    switch (j->kind) {
    case JOB_ENQUEUE:
        s = b->insert;
        sqlite3_bind_text(s, 1, j->queue, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, j->body, (int)j->body_length, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE)
            break;
        snprintf(j->result.id, sizeof j->result.id, "%lld",
                 (long long)sqlite3_last_insert_rowid(db));
        j->result.status = QUEUE_OK;
        sqlite3_reset(s);
        return;
    case JOB_DEQUEUE:
        free(j->body);
        j->body = NULL;
        s = b->take;
        sqlite3_bind_text(s, 1, j->queue, -1, SQLITE_STATIC);
        sqlite3_bind_double(s, 2, now);
        sqlite3_bind_double(s, 3, now + j->lease);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            const unsigned char *body = sqlite3_column_text(s, 1);
            int length = sqlite3_column_bytes(s, 1);
            snprintf(j->result.id, sizeof j->result.id, "%lld",
                     (long long)sqlite3_column_int64(s, 0));
            j->result.deliveries = sqlite3_column_int64(s, 2);
            j->body = malloc((size_t)length + 1);
            if (j->body == NULL) {
                /* The lease stands; the message comes back when it ends. */
                job_fail(j, "out of memory", "");
                sqlite3_reset(s);
                return;
            }
            memcpy(j->body, body, (size_t)length + 1);
            j->body_length = (size_t)length;
            rc = sqlite3_step(s);
            if (rc != SQLITE_DONE)
                break;
            j->result.status = QUEUE_OK;
            sqlite3_reset(s);
            return;
        }
        if (rc != SQLITE_DONE)
            break;
        sqlite3_reset(s);
        s = b->next_expiry;
        sqlite3_bind_text(s, 1, j->queue, -1, SQLITE_STATIC);
        sqlite3_bind_double(s, 2, now);
        if (sqlite3_step(s) != SQLITE_ROW)
            break;
        if (sqlite3_column_type(s, 0) != SQLITE_NULL)
            j->result.next_expiry = sqlite3_column_double(s, 0) - now;
        j->result.status = QUEUE_EMPTY;
        sqlite3_reset(s);
        return;
    case JOB_ACK: {
        /* Ids are ours: anything but a rowid names no message. */
        char *end;
        errno = 0;
        long long id = strtoll(j->body, &end, 10);
        if (*j->body == '\0' || *end != '\0' || errno != 0 || id <= 0) {
            j->result.status = QUEUE_UNKNOWN;
            return;
        }
        s = b->ack;
        sqlite3_bind_int64(s, 1, id);
        sqlite3_bind_text(s, 2, j->queue, -1, SQLITE_STATIC);
        sqlite3_bind_double(s, 3, now);
        if (sqlite3_step(s) != SQLITE_DONE)
            break;
        j->result.status = sqlite3_changes(db) == 1 ? QUEUE_OK : QUEUE_UNKNOWN;
        sqlite3_reset(s);
        return;
    }
    case JOB_DEPTH:
        s = b->depth;
        sqlite3_bind_text(s, 1, j->queue, -1, SQLITE_STATIC);
        sqlite3_bind_double(s, 2, now);
        if (sqlite3_step(s) != SQLITE_ROW)
            break;
        j->result.ready = sqlite3_column_int64(s, 0);
        j->result.leased = sqlite3_column_int64(s, 1);
        j->result.status = QUEUE_OK;
        sqlite3_reset(s);
        return;
    }
    job_fail(j, "", sqlite3_errmsg(db));
    sqlite3_reset(s);
}

/* --- Back to the loop ---------------------------------------------------- */

static void mailbox_release(mailbox *m)
{
    pthread_mutex_lock(&m->lock);
    int last = --m->refs == 0;
    pthread_mutex_unlock(&m->lock);
    if (last) {
        pthread_mutex_destroy(&m->lock);
        free(m);
    }
}

/* Takes what the mailbox holds, as one list in finishing order. */
static job *mailbox_take(mailbox *m)
{
    pthread_mutex_lock(&m->lock);
    job *jobs = m->head;
    m->head = m->tail = NULL;
    pthread_mutex_unlock(&m->lock);
    return jobs;
}

static void finish_all(job *jobs)
{
    while (jobs != NULL) {
        job *j = jobs;
        jobs = j->next;
        job_finish(j);
    }
}

/* The run_on_loop side: empties the mailbox (nothing, once close() has). */
static void deliver(void *arg)
{
    mailbox *m = arg;
    pthread_mutex_lock(&m->lock);
    m->call_pending = 0;
    pthread_mutex_unlock(&m->lock);
    finish_all(mailbox_take(m));
    mailbox_release(m);
}

/* Thread side: hands a turn's jobs to the loop, with at most one
 * run_on_loop call waiting at any time. */
static void post(queue_backend *b, job *jobs, job *last)
{
    mailbox *m = b->finished;
    pthread_mutex_lock(&m->lock);
    if (m->tail != NULL)
        m->tail->next = jobs;
    else
        m->head = jobs;
    m->tail = last;
    int call = !m->call_pending;
    if (call) {
        m->call_pending = 1;
        m->refs++;
    }
    pthread_mutex_unlock(&m->lock);
    if (call && b->host->run_on_loop(deliver, m) != PB_OK) {
        /* The jobs stay in the mailbox: the next turn's call, or close(),
         * delivers them. */
        b->host->log(b->instance, PB_LOG_ERROR, "cannot reach the loop thread");
        pthread_mutex_lock(&m->lock);
        m->call_pending = 0;
        m->refs--;
        pthread_mutex_unlock(&m->lock);
    }
}

/* --- The thread ----------------------------------------------------------- */

static void run_turn(queue_backend *b, job *jobs)
{
    double now = wall_clock();
    job *last = NULL;
    int rc = sqlite3_exec(b->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    const char *why = rc == SQLITE_OK ? NULL : sqlite3_errmsg(b->db);
    char reason[256];
    if (why == NULL) {
        for (job *j = jobs; j != NULL && why == NULL; j = j->next) {
            run_job(b, j, now);
            /* Some failures (a full disk, I/O) roll the whole transaction
             * back: what follows would run outside it, unreported. */
            if (sqlite3_get_autocommit(b->db)) {
                snprintf(reason, sizeof reason, "%s", sqlite3_errmsg(b->db));
                why = reason;
            }
        }
        if (why == NULL
            && sqlite3_exec(b->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            snprintf(reason, sizeof reason, "%s", sqlite3_errmsg(b->db));
            why = reason;
            sqlite3_exec(b->db, "ROLLBACK", NULL, NULL, NULL);
        }
    }
    for (job *j = jobs; j != NULL; j = j->next) {
        /* Nothing of an uncommitted turn happened. */
        if (why != NULL)
            job_fail(j, "the queue database failed: ", why);
        last = j;
    }
    if (why != NULL)
        b->host->log(b->instance, PB_LOG_ERROR, "%s: %s", b->path, why);
    post(b, jobs, last);
}

static void *thread_main(void *arg)
{
    queue_backend *b = arg;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (b->todo_head == NULL && !b->stopping)
            pthread_cond_wait(&b->work, &b->lock);
        if (b->stopping)
            break;
        job *jobs = b->todo_head;
        b->todo_head = b->todo_tail = NULL;
        pthread_mutex_unlock(&b->lock);
        run_turn(b, jobs);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

static int sqlite_open(queue_backend *b, queue_wake *wake, void *arg)
{
    /* Every change comes through this daemon's workers, which tell each
     * other: nothing outside needs watching. */
    (void)wake;
    (void)arg;
    if (open_db(b) != PB_OK)
        return PB_ERROR;
    mailbox *m = calloc(1, sizeof *m);
    if (m == NULL) {
        b->host->log(b->instance, PB_LOG_ERROR, "out of memory");
        close_db(b);
        return PB_ERROR;
    }
    pthread_mutex_init(&m->lock, NULL);
    m->refs = 1;
    b->finished = m;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->work, NULL);
    b->stopping = 0;
    int rc = pthread_create(&b->thread, NULL, thread_main, b);
    if (rc != 0) {
        b->host->log(b->instance, PB_LOG_ERROR, "cannot start a thread: %s",
                     strerror(rc));
        pthread_cond_destroy(&b->work);
        pthread_mutex_destroy(&b->lock);
        mailbox_release(m);
        b->finished = NULL;
        close_db(b);
        return PB_ERROR;
    }
    b->running = 1;
    return PB_OK;
}

static void sqlite_close(queue_backend *b)
{
    if (!b->running)
        return;
    pthread_mutex_lock(&b->lock);
    b->stopping = 1;
    job *unrun = b->todo_head;
    b->todo_head = b->todo_tail = NULL;
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL);
    b->running = 0;
    /* What ran is reported as it happened, then what never will. */
    finish_all(mailbox_take(b->finished));
    while (unrun != NULL) {
        job *j = unrun;
        unrun = j->next;
        job_fail(j, "the queue is closing", "");
        job_finish(j);
    }
    mailbox_release(b->finished);
    b->finished = NULL;
    pthread_cond_destroy(&b->work);
    pthread_mutex_destroy(&b->lock);
    close_db(b);
}

/* --- Operations ------------------------------------------------------------ */

static void start(queue_backend *b, job_kind kind, const char *queue,
                  const char *body, size_t body_length, double lease,
                  queue_done *done, void *arg)
{
    job *j = calloc(1, sizeof *j);
    if (j != NULL) {
        j->queue = strdup(queue);
        j->body = malloc(body_length + 1);
    }
    if (j == NULL || j->queue == NULL || j->body == NULL) {
        queue_result failed = { .status = QUEUE_FAILED, .error = "out of memory",
                                .ready = -1, .leased = -1, .next_expiry = -1 };
        if (j != NULL)
            job_free(j);
        done(arg, &failed);
        return;
    }
    memcpy(j->body, body, body_length);
    j->body[body_length] = '\0';
    j->body_length = body_length;
    j->kind = kind;
    j->lease = lease;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&b->lock);
    if (b->todo_tail != NULL)
        b->todo_tail->next = j;
    else
        b->todo_head = j;
    b->todo_tail = j;
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->lock);
}

static void sqlite_enqueue(queue_backend *b, const char *queue,
                           const char *message, size_t length,
                           queue_done *done, void *arg)
{
    start(b, JOB_ENQUEUE, queue, message, length, 0, done, arg);
}

static void sqlite_dequeue(queue_backend *b, const char *queue, double lease,
                           queue_done *done, void *arg)
{
    start(b, JOB_DEQUEUE, queue, "", 0, lease, done, arg);
}

static void sqlite_ack(queue_backend *b, const char *queue, const char *id,
                       queue_done *done, void *arg)
{
    start(b, JOB_ACK, queue, id, strlen(id), 0, done, arg);
}

static void sqlite_depth(queue_backend *b, const char *queue,
                         queue_done *done, void *arg)
{
    start(b, JOB_DEPTH, queue, "", 0, 0, done, arg);
}

const queue_backend_ops queue_sqlite_ops = {
    .name      = "sqlite",
    .configure = sqlite_configure,
    .open      = sqlite_open,
    .enqueue   = sqlite_enqueue,
    .dequeue   = sqlite_dequeue,
    .ack       = sqlite_ack,
    .depth     = sqlite_depth,
    .close     = sqlite_close,
    .free      = sqlite_free,
};

/*
 * master.c - the master process. It owns what outlives a worker: the
 * listening sockets, the checked configuration, the pidfile. It starts the
 * workers, restarts one that dies (backing off when one dies young, so a
 * plugin that crashes at start cannot spin the CPU), reads and checks a new
 * configuration once per reload, hands that same text to every worker and
 * reports the reload done only when all of them serve it, and stops them
 * gracefully. It runs no plugin code at all: workers create their own
 * instances after the privilege drop, and a configuration is checked in a
 * short-lived child (check.c), so a plugin that crashes in create() or
 * while handling a message never takes the master down.
 */
#include "master.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "control.h"
#include "daemonize.h"
#include "log.h"
#include "notify.h"
#include "privileges.h"
#include "server.h"
#include "shared.h"

/* A worker that exits with this status hit a problem a restart cannot fix
 * (privileges cannot be dropped, say): the daemon stops. */
#define WORKER_FATAL 100

/* A worker that lived less than this counts as dying young. */
#define YOUNG_SECONDS 1.0
#define BACKOFF_FIRST 0.1
#define BACKOFF_MAX 10.0

/* How long a worker may take to apply a reload (creating its plugin
 * instances) before the master replaces it. */
#define APPLY_SECONDS 30.0

typedef struct worker {
    pid_t pid;                  /* 0 when not running */
    int slot;                   /* its counters in pb_shared */
    int control;                /* the master's end of its command channel */
    int replaced;               /* stopped because it could not apply a reload */
    double started;
    double restart_at;          /* when to start it again; 0 = not scheduled */
    double backoff;
} worker;

typedef struct master {
    pb_cycle *cycle;
    unsigned long serial;       /* of cycle: what workers report serving */
    pb_listener_set *listeners;
    const char *config_path;
    pb_master_hooks hooks;
    pb_shared *shared;
    worker *workers;            /* the current generation */
    int n_workers;
    worker retiring[PB_MAX_WORKERS];    /* replaced, serving what they hold */
    int n_retiring;
    unsigned char slot_taken[PB_MAX_WORKERS];
    int stopping;
    int fatal;
    double stop_deadline;
    int applying;               /* a reload waits for workers to serve it */
    double apply_deadline;
    int reload_again;           /* SIGHUP while applying: reload after it */
    sigset_t signals;
} master;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long workers_asked(const pb_config *config)
{
    long n = config->workers;
    if (n == 0) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        if (n < 1)
            n = 1;
    }
    return n;
}

int pb_master_workers(const pb_config *config)
{
    long n = workers_asked(config);
    return n > PB_MAX_WORKERS ? PB_MAX_WORKERS : (int)n;
}

static int worker_count(const pb_config *config)
{
    long n = workers_asked(config);
    if (n > PB_MAX_WORKERS)
        pb_log_warning("workers = %ld is more than %d: starting %d", n,
                       PB_MAX_WORKERS, PB_MAX_WORKERS);
    return pb_master_workers(config);
}

/* What a worker must not hold: the other workers' command channels. */
static void close_channels(master *m, int keep)
{
    for (int i = 0; i < m->n_workers; i++)
        if (m->workers[i].control >= 0 && m->workers[i].control != keep)
            close(m->workers[i].control);
    for (int i = 0; i < m->n_retiring; i++)
        if (m->retiring[i].control >= 0 && m->retiring[i].control != keep)
            close(m->retiring[i].control);
}

/* In the check child of a reload: the master's descriptors and memory,
 * which are not the child's to hold. */
static void release_master(void *arg)
{
    master *m = arg;
    close_channels(m, -1);
    free(m->workers);
    pb_listeners_close(m->listeners);
    pb_cycle_free(m->cycle);
    pb_shared_destroy(m->shared);
}

/* The worker's whole life, in the child process; index is its place in
 * the generation, which names its copies of reuseport listeners. Never
 * returns. */
static void run_worker(master *m, int slot, int index, int control)
{
    /* Die with the master rather than serve on unsupervised. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        _exit(0);
    /* Only the master reloads, and the user signals mean nothing to a
     * worker: a signal sent to the whole process group must not make a
     * worker read the file on its own, nor kill it. */
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    close_channels(m, -1);
    pb_pidfile_release();

    if (pb_privileges_drop(m->cycle->config) != 0)
        _exit(WORKER_FATAL);
    if (getppid() == 1)
        _exit(0);
    pb_log_info("worker %d running as uid %ld, gid %ld", slot, (long)getuid(),
                (long)getgid());

    static pb_server server;
    int status = 1;
    if (pb_server_init(&server, m->cycle, m->config_path, m->listeners,
                       control, m->shared, slot, index) == 0) {
        sigprocmask(SIG_UNBLOCK, &m->signals, NULL);
        pb_server_run(&server);
        status = 0;
    }
    pb_server_free(&server);
    free(m->workers);
    if (m->hooks.worker_exit)
        m->hooks.worker_exit();
    _exit(status);
}

static int take_slot(master *m)
{
    for (int i = 0; i < PB_MAX_WORKERS; i++)
        if (!m->slot_taken[i]) {
            m->slot_taken[i] = 1;
            return i;
        }
    return -1;
}

static void close_channel(worker *w)
{
    if (w->control >= 0)
        close(w->control);
    w->control = -1;
}

static void start_worker(master *m, worker *w)
{
    int channel[2];
    if (pb_control_pair(channel) != 0) {
        pb_log_error("cannot start worker %d: socketpair: %s", w->slot,
                     strerror(errno));
        w->restart_at = now() + (w->backoff = BACKOFF_MAX);
        return;
    }
    /* Forked from the current cycle, it serves it from the start. */
    pb_worker_config *c = &m->shared->configs[w->slot];
    atomic_store(&c->prepared, m->serial);
    atomic_store(&c->serving, m->serial);
    atomic_store(&c->failed, 0);
    pid_t pid = fork();
    if (pid < 0) {
        pb_log_error("cannot start worker %d: fork: %s", w->slot, strerror(errno));
        close(channel[0]);
        close(channel[1]);
        w->restart_at = now() + (w->backoff = BACKOFF_MAX);
        return;
    }
    if (pid == 0) {
        close(channel[0]);
        run_worker(m, w->slot, (int)(w - m->workers), channel[1]);
    }
    close(channel[1]);
    w->control = channel[0];
    w->pid = pid;
    pb_shared_set_pid(m->shared, w->slot, (long)pid);
    w->replaced = 0;
    atomic_fetch_add(&m->shared->workers, 1);
    w->started = now();
    w->restart_at = 0;
    pb_log_info("worker %d started (pid %ld)", w->slot, (long)pid);
}

/* A new set of workers, one slot each; NULL when out of memory or slots
 * (logged). */
static worker *new_generation(master *m, int n)
{
    worker *workers = calloc((size_t)n, sizeof *workers);
    if (workers == NULL) {
        pb_log_error("cannot start workers: out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        workers[i].control = -1;
        workers[i].slot = take_slot(m);
        if (workers[i].slot < 0) {
            pb_log_error("cannot start workers: more than %d running",
                         PB_MAX_WORKERS);
            for (int j = 0; j < i; j++)
                m->slot_taken[workers[j].slot] = 0;
            free(workers);
            return NULL;
        }
    }
    return workers;
}

static void describe_exit(int status, char *buf, size_t size)
{
    if (WIFSIGNALED(status))
        snprintf(buf, size, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)),
                 WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
}

static void reap_retired(master *m, pid_t pid, const char *how)
{
    for (int i = 0; i < m->n_retiring; i++) {
        if (m->retiring[i].pid != pid)
            continue;
        pb_log_info("replaced worker %d (pid %ld) %s", m->retiring[i].slot,
                    (long)pid, how);
        close_channel(&m->retiring[i]);
        pb_shared_reset_worker(m->shared, m->retiring[i].slot);
        pb_bus_forget(m->retiring[i].slot);
        m->slot_taken[m->retiring[i].slot] = 0;
        m->retiring[i] = m->retiring[--m->n_retiring];
        return;
    }
}

static void reap(master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        char how[96];
        describe_exit(status, how, sizeof how);
        worker *w = NULL;
        for (int i = 0; i < m->n_workers; i++)
            if (m->workers[i].pid == pid)
                w = &m->workers[i];
        if (w == NULL) {
            reap_retired(m, pid, how);
            continue;
        }
        w->pid = 0;
        close_channel(w);
        pb_shared_reset_worker(m->shared, w->slot);
        pb_bus_forget(w->slot);

        int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (m->stopping && clean) {
            pb_log_info("worker %d (pid %ld) stopped", w->slot, (long)pid);
            continue;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_FATAL) {
            pb_log_error("worker %d (pid %ld) could not start; stopping",
                         w->slot, (long)pid);
            m->fatal = 1;
            continue;
        }
        if (m->stopping) {
            pb_log_warning("worker %d (pid %ld) %s while stopping", w->slot,
                           (long)pid, how);
            continue;
        }
        if (w->replaced) {
            pb_log_notice("worker %d (pid %ld) %s; starting it on the new "
                          "configuration", w->slot, (long)pid, how);
            w->restart_at = now();
            continue;
        }
        double t = now();
        if (t - w->started < YOUNG_SECONDS)
            w->backoff = w->backoff == 0 ? BACKOFF_FIRST
                         : (w->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : w->backoff * 2);
        else
            w->backoff = 0;
        w->restart_at = t + w->backoff;
        pb_log_error("worker %d (pid %ld) %s; restarting it%s", w->slot,
                     (long)pid, how, w->backoff > 0 ? " after a pause" : "");
        atomic_fetch_add(&m->shared->worker_restarts, 1);
    }
}

/* A worker that cannot be signalled (the master lacks CAP_KILL over a
 * worker running as another user, say) would ignore reloads and stops:
 * say so rather than wait in silence. */
static void signal_worker(const worker *w, int sig)
{
    static pb_log_limit limit = PB_LOG_LIMIT(10.0, 5);
    if (kill(w->pid, sig) != 0 && errno != ESRCH)
        pb_log_limited(&limit, PB_LOG_ERROR, "cannot signal worker %d (pid %ld): %s",
                       w->slot, (long)w->pid, strerror(errno));
}

static void signal_workers(master *m, int sig)
{
    for (int i = 0; i < m->n_workers; i++)
        if (m->workers[i].pid > 0)
            signal_worker(&m->workers[i], sig);
}

static void signal_retiring(master *m, int sig)
{
    for (int i = 0; i < m->n_retiring; i++)
        signal_worker(&m->retiring[i], sig);
}

/* Sends a worker m->cycle to prepare. A retiring worker may have exited
 * since its last connection closed: failing to reach it is no error. */
static int send_prepare(master *m, const worker *w, int retiring)
{
    pb_buf packed = PB_BUF_INIT;
    int rc = pb_cycle_pack(m->cycle, &packed);
    if (rc == 0)
        rc = pb_control_send_prepare(w->control, m->serial,
                                     (const char *)pb_buf_head(&packed),
                                     pb_buf_used(&packed));
    explicit_bzero(packed.data, packed.cap);
    pb_buf_free(&packed);
    if (rc == 0)
        return 0;
    pb_log(retiring ? PB_LOG_DEBUG : PB_LOG_ERROR,
           "cannot send the new configuration to %sworker %d (pid %ld): %s",
           retiring ? "retiring " : "", w->slot, (long)w->pid, strerror(errno));
    return -1;
}

/*
 * The new configuration needs other sockets or another number of workers:
 * take slots for a new generation, bind what is new and retire the old
 * workers; the caller starts the new ones once it no longer holds the old
 * cycle, which a fork would copy into every new worker. Nothing changes until every
 * step that can fail has succeeded. Retired workers apply the new routes
 * for the connections they hold and exit when the last one closes, so no
 * connection is dropped and no accept is missed.
 */
static int replace_generation(master *m, const pb_config *config)
{
    int n = worker_count(config);
    worker *workers = new_generation(m, n);
    if (workers == NULL)
        return -1;
    if (pb_listeners_reopen(m->listeners, config, n) != 0) {
        for (int i = 0; i < n; i++)
            m->slot_taken[workers[i].slot] = 0;
        free(workers);
        return -1;
    }
    worker *old = m->workers;
    int n_old = m->n_workers;
    m->workers = workers;
    m->n_workers = n;
    for (int i = 0; i < n_old; i++) {
        if (old[i].pid > 0) {
            pb_control_send_retire(old[i].control);
            m->retiring[m->n_retiring++] = old[i];
        } else {
            m->slot_taken[old[i].slot] = 0;
        }
    }
    free(old);
    pb_log_notice("listeners or worker count changed: %d new workers, "
                  "%d retiring", n, m->n_retiring);
    return 0;
}

/* A worker that could not apply the reload: a new worker takes its place
 * from the master's cycle, and it retires with the connections it holds.
 * Without a free slot it stops gracefully and restarts in its own. */
static void replace_worker(master *m, worker *w)
{
    int slot = take_slot(m);
    if (slot < 0) {
        pb_log_error("worker %d (pid %ld) does not serve the new configuration: "
                     "stopping it to restart it", w->slot, (long)w->pid);
        w->replaced = 1;
        signal_worker(w, SIGTERM);
        return;
    }
    pb_log_error("worker %d (pid %ld) does not serve the new configuration: "
                 "worker %d replaces it", w->slot, (long)w->pid, slot);
    pb_control_send_retire(w->control);
    m->retiring[m->n_retiring++] = *w;
    *w = (worker){ .slot = slot, .control = -1 };
    start_worker(m, w);
}

static void follow_reload(master *m);

static void reload_failed(master *m)
{
    pb_log_error("reload failed: keeping the running configuration");
    atomic_fetch_add(&m->shared->failed_reloads, 1);
    pb_notify("READY=1");
}

static void reload(master *m)
{
    if (m->applying) {
        pb_log_notice("SIGHUP received while workers apply the last reload: "
                      "reloading again after it");
        m->reload_again = 1;
        return;
    }
    pb_log_notice("SIGHUP received: reloading %s", m->config_path);
    pb_notify("RELOADING=1");
    pb_cycle *cycle = m->hooks.load(m->config_path, release_master, m);
    if (cycle == NULL) {
        reload_failed(m);
        return;
    }
    /* Workers fork from the master's cycle: swap before starting any. */
    pb_cycle *old = m->cycle;
    unsigned long old_serial = m->serial;
    m->cycle = cycle;
    m->serial++;
    int rc, replaced = worker_count(cycle->config) != m->n_workers ||
                       pb_listeners_differ(m->listeners, cycle->config, m->n_workers);
    if (replaced)
        rc = replace_generation(m, cycle->config);
    else
        rc = pb_listeners_update(m->listeners, cycle->config);
    if (rc != 0) {
        m->cycle = old;
        m->serial = old_serial;
        pb_cycle_free(cycle);
        reload_failed(m);
        return;
    }
    pb_log_apply(cycle->config);
    pb_cycle_free(old);
    for (int i = 0; replaced && i < m->n_workers; i++)
        start_worker(m, &m->workers[i]);
    for (int i = 0; i < m->n_workers; i++) {
        worker *w = &m->workers[i];
        if (w->pid > 0 && atomic_load(&m->shared->configs[w->slot].prepared) != m->serial
            && send_prepare(m, w, 0) != 0)
            replace_worker(m, w);
    }
    /* Retiring workers follow too, for the connections they hold; they
     * are leaving, so the reload does not wait for them. */
    for (int i = 0; i < m->n_retiring; i++)
        if (atomic_load(&m->shared->configs[m->retiring[i].slot].prepared) != m->serial)
            send_prepare(m, &m->retiring[i], 1);
    m->applying = 1;
    m->apply_deadline = now() + APPLY_SECONDS;
    follow_reload(m);
}

/* While a reload is applied: replaces the workers that failed to prepare
 * it or are too slow, and once every worker is prepared, counts the reload
 * and tells them all to switch, so that none serves the new configuration
 * before the reload is reported done. */
static void follow_reload(master *m)
{
    if (!m->applying)
        return;
    int waiting = 0;
    double t = now();
    for (int i = 0; i < m->n_workers; i++) {
        worker *w = &m->workers[i];
        const pb_worker_config *c = &m->shared->configs[w->slot];
        if (w->pid <= 0 || w->replaced || atomic_load(&c->prepared) == m->serial)
            continue;
        if (atomic_load(&c->failed) == m->serial || t > m->apply_deadline)
            replace_worker(m, w);
        else
            waiting++;
    }
    if (waiting > 0)
        return;
    m->applying = 0;
    /* From here on every worker switches before it handles another event
     * (see server.c): the reload is done for anyone who sees it counted. */
    atomic_store(&m->shared->committed, m->serial);
    atomic_fetch_add(&m->shared->reloads, 1);
    pb_log_notice("configuration reloaded: %d workers serve it", m->n_workers);
    for (int i = 0; i < m->n_workers; i++)
        if (m->workers[i].pid > 0 && !m->workers[i].replaced)
            pb_control_send_commit(m->workers[i].control, m->serial);
    for (int i = 0; i < m->n_retiring; i++)
        pb_control_send_commit(m->retiring[i].control, m->serial);
    pb_notify("READY=1");
    if (m->reload_again && !m->stopping) {
        m->reload_again = 0;
        reload(m);
    }
}

static void begin_stop(master *m, int sig)
{
    if (m->stopping)
        return;
    m->stopping = 1;
    pb_notify("STOPPING=1");
    pb_log_notice("%s received: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    /* Workers get their own shutdown_timeout; the margin lets them use it. */
    m->stop_deadline = now() + m->cycle->config->limits.shutdown_timeout + 2.0;
    signal_workers(m, SIGTERM);
    signal_retiring(m, SIGTERM);
}

static int running(const master *m)
{
    int n = m->n_retiring;
    for (int i = 0; i < m->n_workers; i++)
        n += m->workers[i].pid > 0;
    return n;
}

int pb_master_run(pb_cycle *cycle, pb_listener_set *listeners,
                  const char *config_path, const pb_master_hooks *hooks)
{
    master m = {
        .cycle = cycle,
        .serial = 1,
        .listeners = listeners,
        .config_path = config_path,
        .hooks = *hooks,
    };
    sigemptyset(&m.signals);
    sigaddset(&m.signals, SIGCHLD);
    sigaddset(&m.signals, SIGHUP);
    sigaddset(&m.signals, SIGTERM);
    sigaddset(&m.signals, SIGINT);
    sigaddset(&m.signals, SIGUSR1);
    sigaddset(&m.signals, SIGUSR2);
    sigprocmask(SIG_BLOCK, &m.signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    m.shared = pb_shared_create();
    m.n_workers = worker_count(cycle->config);
    m.workers = new_generation(&m, m.n_workers);
    if (m.shared == NULL || m.workers == NULL || pb_bus_create() != 0) {
        pb_log_error("cannot start: out of memory");
        pb_shared_destroy(m.shared);
        free(m.workers);
        pb_cycle_free(m.cycle);
        return 1;
    }
    /* Ready before the first fork, so no worker inherits the terminal or
     * the start-up pipe of a detaching daemon. */
    if (m.hooks.ready)
        m.hooks.ready();
    for (int i = 0; i < m.n_workers; i++)
        start_worker(&m, &m.workers[i]);
    pb_notify("READY=1");

    while (!m.stopping || running(&m) > 0) {
        double t = now(), wait = m.applying ? 0.01 : 1.0;
        for (int i = 0; i < m.n_workers && !m.stopping; i++)
            if (m.workers[i].pid == 0 && m.workers[i].restart_at > 0 &&
                m.workers[i].restart_at - t < wait)
                wait = m.workers[i].restart_at - t;
        if (wait < 0.001)
            wait = 0.001;
        struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };
        siginfo_t info;
        int sig = sigtimedwait(&m.signals, &info, &ts);

        if (sig == SIGHUP && !m.stopping)
            reload(&m);
        else if (sig == SIGTERM || sig == SIGINT)
            begin_stop(&m, sig);
        else if (sig == SIGUSR1 || sig == SIGUSR2)
            pb_log_info("%s received: ignored (there is no log file to reopen)",
                        sig == SIGUSR1 ? "SIGUSR1" : "SIGUSR2");
        reap(&m);
        if (!m.stopping)
            follow_reload(&m);
        if (m.fatal)
            begin_stop(&m, SIGTERM);

        t = now();
        if (m.stopping && t > m.stop_deadline && running(&m) > 0) {
            pb_log_warning("workers did not stop in time: killing them");
            signal_workers(&m, SIGKILL);
            signal_retiring(&m, SIGKILL);
            m.stop_deadline = t + 5.0;
        }
        for (int i = 0; i < m.n_workers && !m.stopping; i++)
            if (m.workers[i].pid == 0 && m.workers[i].restart_at > 0 &&
                m.workers[i].restart_at <= t)
                start_worker(&m, &m.workers[i]);
    }
    pb_log_notice("stopped");
    free(m.workers);
    pb_shared_destroy(m.shared);
    pb_cycle_free(m.cycle);
    return m.fatal ? 1 : 0;
}

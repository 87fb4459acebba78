/*
 * check.c - the check child. The master runs no plugin code, so to check a
 * configuration (at start, on `plugboard -t`, on every reload) it forks a
 * child that drops privileges as a worker does, creates every instance,
 * destroys them, and sends each diagnostic back over a pipe. Before each
 * call into a plugin the child names the entry it is at, so that a crash
 * or a hang is reported at that entry's FILE:LINE.
 */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "buffer.h"
#include "daemonize.h"
#include "privileges.h"

/* How long creating and destroying every instance may take. */
#define CHECK_SECONDS 30

/* The child's records, each a type byte and text ended by a NUL. */
#define RECORD_STEP 's'         /* "create 3": the plugin code running now */
#define RECORD_DIAG 'e'         /* one diagnostic line */

static void send_record(FILE *out, char type, const char *text)
{
    fprintf(out, "%c%s%c", type, text, '\0');
    /* At once: the next thing to run may be a plugin that crashes. */
    fflush(out);
}

static void send_step(void *arg, size_t index, const char *call)
{
    char text[64];
    snprintf(text, sizeof text, "%s %zu", call, index);
    send_record(arg, RECORD_STEP, text);
}

/* The child's whole life. Never returns. */
static void run_child(pb_cycle *cycle, int fd, const pb_check_release *release,
                      pb_diag *inherited)
{
    /* Not left behind by a master that died, and deaf, like a worker, to
     * the signals only the master acts on. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    pb_diag_free(inherited);
    if (release->holdings != NULL)
        release->holdings(release->arg);
    pb_pidfile_release();

    int status = 1;
    FILE *out = fdopen(fd, "w");
    if (out != NULL) {
        pb_diag diag = PB_DIAG_INIT;
        if (pb_privileges_drop(cycle->config) != 0) {
            pb_diag_add(&diag, cycle->config->path, 0,
                        "cannot drop privileges to create the plugin instances");
        } else if (pb_cycle_start(cycle, send_step, out, &diag) != 0) {
            status = EX_CONFIG;
        } else {
            pb_cycle_stop(cycle, send_step, out);
            status = 0;
        }
        send_record(out, RECORD_STEP, "");
        for (size_t i = 0; i < diag.count; i++)
            send_record(out, RECORD_DIAG, diag.lines[i]);
        pb_diag_free(&diag);
        fclose(out);
    }
    pb_cycle_free(cycle);
    if (release->process != NULL)
        release->process();
    _exit(status);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads what is waiting on fd (non-blocking) into got; 0 at EOF. */
static int drain(int fd, pb_buf *got)
{
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        if (pb_buf_append(got, chunk, (size_t)n) != 0)
            return 0;
    return n < 0 && (errno == EAGAIN || errno == EINTR);
}

/* Collects the child's records until it exits, or kills it at the
 * deadline: 0 with its wait status, or -1 when it was too slow. Not EOF
 * alone: something the child started may hold the pipe open. */
static int collect(pid_t pid, int fd, pb_buf *got, int *status)
{
    double deadline = now() + CHECK_SECONDS;
    int open = 1;
    for (;;) {
        if (waitpid(pid, status, WNOHANG) == pid) {
            if (open)
                drain(fd, got);
            return 0;
        }
        if (now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            return -1;
        }
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, open ? 1 : 0, 10) > 0)
            open = drain(fd, got);
    }
}

/* Turns what the child sent and how it ended into diagnostics; 0 when
 * every instance was created. */
static int report(const pb_config *config, pb_buf *got, int timed_out,
                  int status, pb_diag *diag)
{
    const char *running = "";
    size_t errors = diag->count;
    if (pb_buf_append_byte(got, '\0') != 0) {
        pb_diag_add(diag, config->path, 0, "out of memory");
        return -1;
    }
    const char *end = (const char *)pb_buf_head(got) + pb_buf_used(got);
    for (const char *r = (const char *)pb_buf_head(got); r < end;
         r += strlen(r) + 1) {
        if (r[0] == RECORD_STEP)
            running = r + 1;
        else if (r[0] == RECORD_DIAG)
            pb_diag_add(diag, NULL, 0, "%s", r + 1);
    }
    if (!timed_out && WIFEXITED(status)) {
        if (WEXITSTATUS(status) == 0)
            return 0;
        if (diag->count > errors)
            return -1;
    }

    char how[128];
    if (timed_out)
        snprintf(how, sizeof how, "did not return within %d seconds",
                 CHECK_SECONDS);
    else if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "crashed (killed by signal %d, %s)",
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(how, sizeof how, "failed (exit status %d)",
                 WEXITSTATUS(status));
    char call[16];
    size_t index;
    if (sscanf(running, "%15s %zu", call, &index) == 2 &&
        index < config->n_plugins) {
        const pb_plugin_conf *conf = &config->plugins[index];
        pb_diag_add(diag, conf->pos.file, conf->pos.line, "plugin %s: %s() %s",
                    conf->name, call, how);
    } else {
        pb_diag_add(diag, config->path, 0,
                    "checking the plugin instances %s", how);
    }
    return -1;
}

int pb_check_cycle(pb_cycle *cycle, const pb_check_release *release,
                   pb_diag *diag)
{
    const char *path = cycle->config->path;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        pb_diag_add(diag, path, 0, "cannot check the plugin instances: pipe: %s",
                    strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        pb_diag_add(diag, path, 0, "cannot check the plugin instances: fork: %s",
                    strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        run_child(cycle, fds[1], release, diag);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    pb_buf got = PB_BUF_INIT;
    int status = 0;
    int timed_out = collect(pid, fds[0], &got, &status) != 0;
    close(fds[0]);
    int rc = report(cycle->config, &got, timed_out, status, diag);
    pb_buf_free(&got);
    return rc;
}

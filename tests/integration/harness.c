/*
 * harness.c - the integration-test harness: starts the real plugboard daemon
 * from a config template on ephemeral ports and gives tests socket, frame and
 * line I/O with hang guards, and subprocess runs with captured output.
 */

#define PB_T_HARNESS_IMPL
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "json_dump.h"

/* How long a daemon may take to start listening, and to exit on SIGTERM
 * (its shutdown_timeout defaults to 10 s). Generous: sanitizer builds on a
 * loaded machine are slow. */
#define START_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS  30000
#define RUN_TIMEOUT_MS   60000
#define START_ATTEMPTS   5
#define LOG_TAIL         6000

static char reason[1024];
static const char *at_file;
static int at_line;
static char context[512];

#define MAX_TRACKED 32
static char *temp_dirs[MAX_TRACKED];
static size_t n_temp_dirs;
static pb_daemon *running[MAX_TRACKED];

static int failf(const char *format, ...) __attribute__((format(printf, 1, 2)));

static int failf(const char *format, ...)
{
    va_list ap;

    va_start(ap, format);
    vsnprintf(reason, sizeof reason, format, ap);
    va_end(ap);
    return -1;
}

const char *pb_t_reason(void)
{
    return reason;
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/* 1 when fd is ready for events before the deadline, 0 on timeout, -1 on
 * error. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        struct pollfd p = { fd, events, 0 };
        int r;

        if (left <= 0)
            return 0;
        r = poll(&p, 1, (int)left);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* --- Failures ------------------------------------------------------------ */

void pb_t_at(const char *file, int line)
{
    at_file = file;
    at_line = line;
}

void pb_t_context(const char *format, ...)
{
    va_list ap;

    va_start(ap, format);
    vsnprintf(context, sizeof context, format, ap);
    va_end(ap);
}

char *pb_daemon_log(const pb_daemon *d)
{
    char *text = pb_t_read_file(d->log_path, NULL);

    return text ? text : strdup("(no log)");
}

void pb_t_fail(const pb_daemon *d, const char *file, int line,
               const char *format, ...)
{
    char message[4096];
    char *log = NULL;
    const char *tail = "";
    va_list ap;

    va_start(ap, format);
    vsnprintf(message, sizeof message, format, ap);
    va_end(ap);
    if (d && d->log_path[0]) {
        size_t len;

        log = pb_daemon_log(d);
        len = log ? strlen(log) : 0;
        tail = !log ? "" : len > LOG_TAIL ? log + len - LOG_TAIL : log;
    }
    if (strcmp(file, __FILE__) == 0 && at_file) {
        file = at_file;
        line = at_line;
    }
    cr_expect_fail("%s:%d: %s%s%s%s%s", file, line, message,
                   context[0] ? "\nwhile: " : "", context,
                   d ? "\n--- daemon log ---\n" : "", tail);
    free(log);
    criterion_abort_test();
}

/* --- Files and directories ----------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    remove(path);
    return 0;
}

void pb_t_tempdir(char *out, size_t cap)
{
    const char *base = getenv("PB_TEST_TMPDIR");

    if (!base || !*base)
        base = getenv("TMPDIR");
    /* Unix socket paths are short (108 bytes): keep the base short too. */
    if (!base || !*base || strlen(base) > 48)
        base = "/tmp";
    pb_check(NULL, (size_t)snprintf(out, cap, "%s/pbit.XXXXXX", base) < cap,
             "temporary path too long");
    pb_check(NULL, mkdtemp(out) != NULL, "mkdtemp %s: %s", out, strerror(errno));
    if (n_temp_dirs < MAX_TRACKED) {
        temp_dirs[n_temp_dirs] = strdup(out);
        if (temp_dirs[n_temp_dirs])
            n_temp_dirs++;
    }
}

void pb_t_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    pb_check(NULL, f != NULL, "cannot create %s: %s", path, strerror(errno));
    pb_check(NULL, fwrite(data, 1, len, f) == len && fclose(f) == 0,
             "cannot write %s", path);
}

char *pb_t_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t used = 0, cap = 0, n;

    if (!f)
        return NULL;
    do {
        if (cap - used < 4096) {
            char *bigger = realloc(text, cap + 65536);

            if (!bigger) {
                free(text);
                fclose(f);
                return NULL;
            }
            text = bigger;
            cap += 65536;
        }
        n = fread(text + used, 1, cap - used - 1, f);
        used += n;
    } while (n > 0);
    fclose(f);
    text[used] = '\0';
    if (len)
        *len = used;
    return text;
}

/* --- Processes ----------------------------------------------------------- */

static void track(pb_daemon *d)
{
    for (size_t i = 0; i < MAX_TRACKED; i++)
        if (!running[i]) {
            running[i] = d;
            return;
        }
}

static void untrack(pb_daemon *d)
{
    for (size_t i = 0; i < MAX_TRACKED; i++)
        if (running[i] == d)
            running[i] = NULL;
}

void pb_harness_init(void)
{
    signal(SIGPIPE, SIG_IGN);
}

void pb_harness_cleanup(void)
{
    for (size_t i = 0; i < MAX_TRACKED; i++)
        if (running[i] && running[i]->pid > 0) {
            kill(running[i]->pid, SIGKILL);
            waitpid(running[i]->pid, NULL, 0);
            running[i]->pid = 0;
            running[i] = NULL;
        }
    for (size_t i = 0; i < n_temp_dirs; i++) {
        nftw(temp_dirs[i], remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(temp_dirs[i]);
    }
    n_temp_dirs = 0;
}

static int decode_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

/* The child's status when it exits before the deadline, -1 otherwise. */
static int wait_exit(pid_t pid, long long deadline, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);

        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ms() >= deadline)
            return -1;
        sleep_ms(5);
    }
}

/* In a forked child: die with the test process, then exec. */
static void exec_child(const char *const argv[], const char *const env[],
                       const char *in, const char *out, const char *err)
{
    int fd;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    fd = open(in ? in : "/dev/null", O_RDONLY);
    if (fd < 0 || dup2(fd, 0) < 0)
        _exit(126);
    fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0 || dup2(fd, 1) < 0)
        _exit(126);
    fd = open(err, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0 || dup2(fd, 2) < 0)
        _exit(126);
    for (size_t i = 0; env && env[i]; i++)
        putenv((char *)env[i]);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

void pb_run(const char *const argv[], const char *const env[],
            const void *input, size_t input_len, pb_run_result *r)
{
    char dir[128], in[192], out[192], err[192];
    int status;
    pid_t pid;

    memset(r, 0, sizeof *r);
    pb_t_tempdir(dir, sizeof dir);
    snprintf(in, sizeof in, "%s/stdin", dir);
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    pb_t_write_file(in, input ? input : "", input ? input_len : 0);
    pid = fork();
    pb_check(NULL, pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        exec_child(argv, env, in, out, err);
    r->pid = pid;
    if (wait_exit(pid, now_ms() + RUN_TIMEOUT_MS, &status) == 0) {
        r->status = decode_status(status);
    } else {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        r->status = -1;
    }
    r->out = pb_t_read_file(out, &r->out_len);
    r->err = pb_t_read_file(err, &r->err_len);
    pb_check(NULL, r->out && r->err, "cannot read the output of %s", argv[0]);
}

void pb_run_free(pb_run_result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

/* --- Daemon -------------------------------------------------------------- */

int pb_t_free_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok;

    pb_check(NULL, fd >= 0, "socket: %s", strerror(errno));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0
        && getsockname(fd, (struct sockaddr *)&sa, &len) == 0;
    close(fd);
    pb_check(NULL, ok, "cannot find a free port: %s", strerror(errno));
    return ntohs(sa.sin_port);
}

static char *expand(const pb_daemon *d, const char *t)
{
    pb_buf b = PB_BUF_INIT;
    char ports[PB_T_PORTS][16];
    const char *keys[4 + PB_T_PORTS] = { "@DIR@", "@PLUGIN_DIR@", "@SOCK@" };
    const char *values[4 + PB_T_PORTS] = { d->dir, PB_TEST_PLUGIN_DIR, d->sock_path };
    size_t n_keys = 3;
    char *text;

    for (int i = 0; i < PB_T_PORTS; i++) {
        static const char *names[PB_T_PORTS] = { "@PORT0@", "@PORT1@", "@PORT2@" };

        snprintf(ports[i], sizeof ports[i], "%d", d->port[i]);
        keys[n_keys] = names[i];
        values[n_keys++] = ports[i];
    }
    while (*t) {
        size_t k;

        for (k = 0; k < n_keys; k++)
            if (strncmp(t, keys[k], strlen(keys[k])) == 0)
                break;
        if (k < n_keys) {
            pb_check(NULL, pb_buf_append_str(&b, values[k]) == 0, "out of memory");
            t += strlen(keys[k]);
        } else {
            pb_check(NULL, pb_buf_append_byte(&b, (unsigned char)*t) == 0, "out of memory");
            t++;
        }
    }
    pb_check(NULL, pb_buf_append_byte(&b, '\0') == 0, "out of memory");
    text = strdup((char *)pb_buf_head(&b));
    pb_buf_free(&b);
    pb_check(NULL, text != NULL, "out of memory");
    return text;
}

void pb_daemon_write_config(const pb_daemon *d, const char *config_template)
{
    char *text = expand(d, config_template);

    pb_t_write_file(d->config_path, text, strlen(text));
    free(text);
}

static void write_config(pb_daemon *d, const char *config_template)
{
    for (int i = 0; i < PB_T_PORTS; i++)
        d->port[i] = pb_t_free_port();
    pb_daemon_write_config(d, config_template);
}

void pb_daemon_prepare(pb_daemon *d, const char *config_template)
{
    memset(d, 0, sizeof *d);
    pb_t_tempdir(d->dir, sizeof d->dir);
    snprintf(d->config_path, sizeof d->config_path, "%s/plugboard.conf", d->dir);
    snprintf(d->log_path, sizeof d->log_path, "%s/daemon.log", d->dir);
    snprintf(d->sock_path, sizeof d->sock_path, "%s/pb.sock", d->dir);
    write_config(d, config_template);
}

/* Whether something accepts on the port, over IPv4 or IPv6 loopback. */
static int port_accepts(int port)
{
    int fd = pb_connect_tcp("127.0.0.1", port);

    if (fd < 0)
        fd = pb_connect_tcp("::1", port);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

static int unix_accepts(const char *path)
{
    int fd = pb_connect_unix(path);

    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* The inode of the socket listening on TCP `port`, from one of the
 * kernel's tables (/proc/net/tcp or tcp6); 0 when none. */
static unsigned long listening_inode(const char *table, int port)
{
    FILE *f = fopen(table, "r");
    char line[512];
    unsigned long inode = 0;

    if (f == NULL)
        return 0;
    while (inode == 0 && fgets(line, sizeof line, f) != NULL) {
        char local[64];
        unsigned int state;
        unsigned long node;
        const char *colon;
        if (sscanf(line, " %*d: %63s %*s %x %*s %*s %*s %*d %*d %lu", local, &state,
                   &node) == 3 && state == 0x0A && (colon = strrchr(local, ':')) != NULL
            && strtol(colon + 1, NULL, 16) == port)
            inode = node;
    }
    fclose(f);
    return inode;
}

/* Whether the process pid holds the socket listening on TCP `port`: a
 * port another test's daemon took meanwhile accepts too, but is not ours. */
static int port_held_by(pid_t pid, int port)
{
    unsigned long inode = listening_inode("/proc/net/tcp", port);
    char dir[64], want[64];
    DIR *fds;
    struct dirent *e;
    int found = 0;

    if (inode == 0)
        inode = listening_inode("/proc/net/tcp6", port);
    if (inode == 0)
        return 0;
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    snprintf(dir, sizeof dir, "/proc/%ld/fd", (long)pid);
    if ((fds = opendir(dir)) == NULL)
        return 0;
    while (!found && (e = readdir(fds)) != NULL) {
        char path[320], target[64];
        ssize_t n;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        n = readlink(path, target, sizeof target - 1);
        if (n > 0) {
            target[n] = '\0';
            found = strcmp(target, want) == 0;
        }
    }
    closedir(fds);
    return found;
}

static int listeners_ready(const pb_daemon *d, const char *config_template)
{
    static const char *names[PB_T_PORTS] = { "@PORT0@", "@PORT1@", "@PORT2@" };

    for (int i = 0; i < PB_T_PORTS; i++)
        if (strstr(config_template, names[i]) &&
            (!port_accepts(d->port[i]) || !port_held_by(d->pid, d->port[i])))
            return 0;
    if (strstr(config_template, "@SOCK@") && !unix_accepts(d->sock_path))
        return 0;
    return 1;
}

/* 0 when started, 1 when it exited with status 1 (a port taken meanwhile:
 * worth another try on other ports), and fails the test otherwise. */
static int start_once(pb_daemon *d, const char *config_template)
{
    const char *argv[] = { PB_T_DAEMON_BIN, "-f", "-c", d->config_path, NULL };
    long long deadline = now_ms() + START_TIMEOUT_MS;
    int status;
    pid_t pid;

    unlink(d->log_path);
    pid = fork();
    pb_check(d, pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        exec_child(argv, NULL, NULL, d->log_path, d->log_path);
    d->pid = pid;
    track(d);
    while (!listeners_ready(d, config_template)) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            d->pid = 0;
            untrack(d);
            if (decode_status(status) == 1)
                return 1;
            pb_t_fail(d, __FILE__, __LINE__,
                      "the daemon exited with status %d while starting (%s -f -c %s)",
                      decode_status(status), PB_T_DAEMON_BIN, d->config_path);
        }
        pb_check(d, now_ms() < deadline,
                 "the daemon did not start listening within %d ms", START_TIMEOUT_MS);
        sleep_ms(20);
    }
    return 0;
}

void pb_daemon_start(pb_daemon *d, const char *config_template)
{
    pb_daemon_prepare(d, config_template);
    pb_daemon_launch(d, config_template);
}

void pb_daemon_launch(pb_daemon *d, const char *config_template)
{
    for (int attempt = 1; start_once(d, config_template) != 0; attempt++) {
        pb_check(d, attempt < START_ATTEMPTS,
                 "the daemon exited with status 1 while starting, %d times", attempt);
        write_config(d, config_template);
    }
}

void pb_daemon_signal(const pb_daemon *d, int sig)
{
    pb_check(d, d->pid > 0 && kill(d->pid, sig) == 0, "cannot signal the daemon");
}

int pb_daemon_workers(const pb_daemon *d, pid_t *out, int cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)d->pid, (int)d->pid);
    char *text = pb_t_read_file(path, NULL);
    int n = 0;
    for (char *p = text, *end; p != NULL && n < cap; p = end) {
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        out[n++] = (pid_t)pid;
    }
    free(text);
    return n;
}

int pb_daemon_wait_workers(const pb_daemon *d, pid_t *out, int cap, int want)
{
    int n = 0;
    for (int i = 0; i < 1000 && (n = pb_daemon_workers(d, out, cap)) != want; i++)
        sleep_ms(10);
    return n;
}

int pb_daemon_wait(pb_daemon *d)
{
    int status;

    if (d->pid <= 0)
        return -1;
    if (wait_exit(d->pid, now_ms() + STOP_TIMEOUT_MS, &status) != 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        status = -1;
    } else {
        status = decode_status(status);
    }
    d->pid = 0;
    untrack(d);
    return status;
}

int pb_daemon_stop(pb_daemon *d)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    return pb_daemon_wait(d);
}

static void expect_clean_exit(const pb_daemon *d, int status)
{
    char *log = pb_daemon_log(d);
    int report = strstr(log, "Sanitizer") || strstr(log, "runtime error")
        || strstr(log, "ERROR");

    free(log);
    pb_check(d, status == 0, "the daemon exited with status %d after SIGTERM%s",
             status, status == -1 ? " (still running after 30 s: killed)" : "");
    pb_check(d, !report, "the daemon's log has an error report");
}

void pb_daemon_stop_clean(pb_daemon *d)
{
    expect_clean_exit(d, pb_daemon_stop(d));
}

void pb_daemon_wait_clean(pb_daemon *d)
{
    expect_clean_exit(d, pb_daemon_wait(d));
}

/* --- Sockets ------------------------------------------------------------- */

static int connect_addr(const struct sockaddr *sa, socklen_t len)
{
    long long deadline = now_ms() + PB_T_TIMEOUT_MS;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int error = 0;
    socklen_t elen = sizeof error;

    if (fd < 0)
        return failf("socket: %s", strerror(errno));
    if (connect(fd, sa, len) != 0) {
        if (errno != EINPROGRESS) {
            error = errno;
        } else if (wait_fd(fd, POLLOUT, deadline) != 1) {
            error = ETIMEDOUT;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &elen) != 0) {
            error = errno;
        }
    }
    if (error) {
        close(fd);
        errno = error;
        return failf("connect: %s", strerror(error));
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

int pb_connect_tcp(const char *host, int port)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
    struct addrinfo *ai;
    char service[16];
    int fd, r;

    snprintf(service, sizeof service, "%d", port);
    r = getaddrinfo(host, service, &hints, &ai);
    if (r != 0)
        return failf("%s: %s", host, gai_strerror(r));
    fd = connect_addr(ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (fd < 0)
        return failf("connect to %s port %d: %s", host, port, strerror(errno));
    return fd;
}

int pb_connect_unix(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof sa.sun_path)
        return failf("socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    fd = connect_addr((struct sockaddr *)&sa, sizeof sa);
    if (fd < 0)
        return failf("connect to %s: %s", path, strerror(errno));
    return fd;
}

int pb_dial(const pb_daemon *d, int port_index)
{
    int fd = pb_connect_tcp("127.0.0.1", d->port[port_index]);

    pb_check(d, fd >= 0, "%s", pb_t_reason());
    return fd;
}

int pb_dial_unix(const pb_daemon *d)
{
    int fd = pb_connect_unix(d->sock_path);

    pb_check(d, fd >= 0, "%s", pb_t_reason());
    return fd;
}

int pb_send_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    long long deadline = now_ms() + PB_T_TIMEOUT_MS;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
            deadline = now_ms() + PB_T_TIMEOUT_MS;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline) != 1)
                return failf("send: peer not reading for %d ms (%zu bytes left)",
                             PB_T_TIMEOUT_MS, len);
        } else if (n < 0 && errno != EINTR) {
            return failf("send: %s (%zu bytes left)", strerror(errno), len);
        }
    }
    return 0;
}

/* 0 with len bytes, 1 on EOF (*got says how many came), -1 on error or
 * timeout. The deadline restarts whenever bytes arrive. */
static int read_exact(int fd, unsigned char *buf, size_t len, size_t *got)
{
    long long deadline = now_ms() + PB_T_TIMEOUT_MS;

    *got = 0;
    while (*got < len) {
        ssize_t n;
        int ready = wait_fd(fd, POLLIN, deadline);

        if (ready != 1)
            return failf("no reply within %d ms (%zu of %zu bytes received)",
                         PB_T_TIMEOUT_MS, *got, len);
        n = recv(fd, buf + *got, len - *got, MSG_DONTWAIT);
        if (n == 0)
            return 1;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            if (errno == ECONNRESET)
                return 1;
            return failf("recv: %s", strerror(errno));
        }
        *got += (size_t)n;
        deadline = now_ms() + PB_T_TIMEOUT_MS;
    }
    return 0;
}

void pb_t_reply_free(pb_t_reply *r)
{
    pb_buf_free(&r->raw);
    json_decref(r->header);
    memset(r, 0, sizeof *r);
}

static int parse_header(pb_t_reply *r)
{
    json_error_t error;
    json_t *length;
    const unsigned char *text = pb_buf_head(&r->raw) + 2;
    json_int_t n;

    r->header = json_loadb((const char *)text, r->header_length, 0, &error);
    if (!r->header || !json_is_object(r->header))
        return failf("reply header is not a JSON object: %s", error.text);
    r->content_type = json_string_value(json_object_get(r->header, "content-type"));
    r->content_encoding = json_string_value(json_object_get(r->header, "content-encoding"));
    length = json_object_get(r->header, "content-length");
    n = json_is_integer(length) ? json_integer_value(length) : -1;
    if (!r->content_type || !r->content_encoding || n < 0)
        return failf("reply header lacks a required key");
    r->content_length = (size_t)n;
    return 0;
}

int pb_recv_frame(int fd, pb_t_reply *r)
{
    unsigned char *p;
    size_t got;
    int status;

    memset(r, 0, sizeof *r);
    p = pb_buf_extend(&r->raw, 2);
    if (!p)
        return failf("out of memory");
    status = read_exact(fd, p, 2, &got);
    if (status == 1 && got == 0)
        return 1;
    if (status != 0)
        goto fail;
    r->header_length = (size_t)p[0] << 8 | p[1];
    p = pb_buf_extend(&r->raw, r->header_length);
    if (!p) {
        failf("out of memory");
        goto fail_quiet;
    }
    status = read_exact(fd, p, r->header_length, &got);
    if (status != 0)
        goto fail;
    if (parse_header(r) != 0)
        goto fail_quiet;
    p = pb_buf_extend(&r->raw, r->content_length);
    if (!p && r->content_length > 0) {
        failf("out of memory");
        goto fail_quiet;
    }
    status = read_exact(fd, p, r->content_length, &got);
    if (status != 0)
        goto fail;
    r->content = pb_buf_head(&r->raw) + 2 + r->header_length;
    return 0;

fail:
    if (status == 1)
        failf("connection closed in the middle of a reply frame");
fail_quiet:
    {
        char *seen = pb_t_escape(pb_buf_head(&r->raw), pb_buf_used(&r->raw));
        char before[sizeof reason];

        snprintf(before, sizeof before, "%s", reason);
        failf("%s; received so far: %s", before, seen ? seen : "?");
        free(seen);
    }
    pb_t_reply_free(r);
    return -1;
}

int pb_recv_line(int fd, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;

    while (n + 1 < cap) {
        size_t got;
        int r = read_exact(fd, (unsigned char *)buf + n, 1, &got);

        if (r == 1) {
            buf[n] = '\0';
            if (n == 0)
                return 1;
            return failf("connection closed in the middle of a line: \"%s\"", buf);
        }
        if (r != 0)
            return -1;
        if (buf[n++] == '\n')
            break;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    if (n == 0 || buf[n - 1] != '\n')
        return failf("line longer than %zu bytes", cap);
    return 0;
}

int pb_recv_http(int fd, int head_only, pb_t_http *r)
{
    size_t n = 0, got;
    char value[32];

    r->status = 0;
    r->body = (pb_buf)PB_BUF_INIT;
    while (n < 4 || memcmp(r->head + n - 4, "\r\n\r\n", 4) != 0) {
        int rc;

        if (n + 1 >= sizeof r->head)
            return failf("response head longer than %zu bytes", sizeof r->head);
        rc = read_exact(fd, (unsigned char *)r->head + n, 1, &got);
        if (rc == 1 && n == 0)
            return 1;
        if (rc == 1)
            return failf("connection closed in the middle of a response head");
        if (rc != 0)
            return -1;
        n++;
    }
    r->head[n] = '\0';
    if (sscanf(r->head, "HTTP/1.1 %d ", &r->status) != 1)
        return failf("not an HTTP/1.1 status line: %.80s", r->head);
    if (head_only || pb_t_http_header(r, "Content-Length", value, sizeof value) == NULL)
        return 0;
    size_t length = strtoul(value, NULL, 10);
    unsigned char *body = pb_buf_extend(&r->body, length);
    if (length > 0 && body == NULL)
        return failf("out of memory for a body of %zu bytes", length);
    if (length > 0 && read_exact(fd, body, length, &got) != 0)
        return failf("connection closed after %zu of %zu body bytes", got, length);
    return 0;
}

void pb_t_http_free(pb_t_http *r)
{
    pb_buf_free(&r->body);
}

const char *pb_t_http_header(const pb_t_http *r, const char *name, char *out,
                             size_t cap)
{
    size_t len = strlen(name);

    for (const char *line = strstr(r->head, "\r\n"); line != NULL;
         line = strstr(line + 2, "\r\n")) {
        const char *p = line + 2;

        if (strncasecmp(p, name, len) != 0 || p[len] != ':')
            continue;
        p += len + 1;
        p += strspn(p, " ");
        snprintf(out, cap, "%.*s", (int)strcspn(p, "\r"), p);
        return out;
    }
    return NULL;
}

void pb_t_recv_http(const pb_daemon *d, int fd, int head_only, pb_t_http *r)
{
    int status = pb_recv_http(fd, head_only, r);

    pb_check(d, status != 1, "connection closed where an HTTP response was expected");
    pb_check(d, status == 0, "%s", pb_t_reason());
}

void pb_t_expect_http(const pb_daemon *d, int fd, const char *request, int status,
                      const char *content_type, const char *body)
{
    pb_t_http r;
    char type[256];

    pb_t_send(d, fd, request, strlen(request));
    pb_t_recv_http(d, fd, strncmp(request, "HEAD ", 5) == 0, &r);
    pb_check(d, r.status == status, "status %d where %d was expected; head:\n%s",
             r.status, status, r.head);
    if (content_type != NULL) {
        pb_check(d, pb_t_http_header(&r, "Content-Type", type, sizeof type) != NULL,
                 "no Content-Type in\n%s", r.head);
        pb_check(d, strcmp(type, content_type) == 0,
                 "Content-Type \"%s\" where \"%s\" was expected", type, content_type);
    }
    if (body != NULL)
        pb_t_expect_bytes(d, "HTTP body", pb_buf_head(&r.body), pb_buf_used(&r.body),
                          body, strlen(body));
    pb_t_http_free(&r);
}

void pb_t_expect_http_error(const pb_daemon *d, int fd, const char *request,
                            int status, const char *code)
{
    pb_t_http r;
    json_error_t jerr;
    char type[64];

    pb_t_send(d, fd, request, strlen(request));
    pb_t_recv_http(d, fd, 0, &r);
    pb_check(d, r.status == status, "status %d where %d (%s) was expected; head:\n%s",
             r.status, status, code, r.head);
    pb_check(d, pb_t_http_header(&r, "Content-Type", type, sizeof type) != NULL
             && strcmp(type, "application/json") == 0,
             "error response is not application/json:\n%s", r.head);
    json_t *j = json_loadb((const char *)pb_buf_head(&r.body), pb_buf_used(&r.body),
                           0, &jerr);
    pb_check(d, j != NULL && json_object_size(j) == 2
             && json_is_string(json_object_get(j, "error"))
             && strcmp(json_string_value(json_object_get(j, "code")) ?: "", code) == 0,
             "error body is not {\"error\", \"code\": \"%s\"}: %.*s", code,
             (int)pb_buf_used(&r.body), (const char *)pb_buf_head(&r.body));
    {
        const char *text = json_string_value(json_object_get(j, "error"));
        pb_buf want = PB_BUF_INIT;

        pb_check(d, pb_buf_append_str(&want, "{\"error\": ") == 0
                 && pb_json_dump_string(&want, text, strlen(text)) == 0
                 && pb_buf_append_str(&want, ", \"code\": ") == 0
                 && pb_json_dump_string(&want, code, strlen(code)) == 0
                 && pb_buf_append_str(&want, "}") == 0, "out of memory");
        pb_t_expect_bytes(d, "error body", pb_buf_head(&r.body), pb_buf_used(&r.body),
                          pb_buf_head(&want), pb_buf_used(&want));
        pb_buf_free(&want);
    }
    json_decref(j);
    pb_t_http_free(&r);
}

int pb_expect_eof(int fd)
{
    unsigned char c[256];
    size_t got;
    int r = read_exact(fd, c, sizeof c, &got);

    if (r == 1 && got == 0)
        return 0;
    if (r == -1 && got == 0)
        return -1;
    {
        char *seen = pb_t_escape(c, got);

        failf("expected the connection to be closed, received %s", seen ? seen : "?");
        free(seen);
    }
    return -1;
}

/* --- Frames -------------------------------------------------------------- */

void pb_t_frame(pb_buf *out, const char *content_type, const char *encoding,
                const void *content, size_t len)
{
    pb_check(NULL, pb_frame_encode(out, content_type, encoding, content, len) == 0,
             "cannot encode a frame");
}

void pb_t_raw_frame(pb_buf *out, const void *header, size_t header_len,
                    const void *content, size_t len)
{
    unsigned char prefix[2] = { (unsigned char)(header_len >> 8),
                                (unsigned char)(header_len & 0xff) };

    pb_check(NULL, header_len <= 0xffff
             && pb_buf_append(out, prefix, 2) == 0
             && pb_buf_append(out, header, header_len) == 0
             && pb_buf_append(out, content, len) == 0,
             "cannot build a frame");
}

char *pb_t_escape(const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t shown = len > 2000 ? 2000 : len;
    char *out = malloc(shown * 4 + 64);
    size_t n = 0;

    if (!out)
        return NULL;
    out[n++] = '"';
    for (size_t i = 0; i < shown; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\' && p[i] != '"')
            out[n++] = (char)p[i];
        else
            n += (size_t)sprintf(out + n, "\\x%02x", p[i]);
    }
    out[n++] = '"';
    if (shown < len)
        n += (size_t)sprintf(out + n, "... (%zu bytes)", len);
    out[n] = '\0';
    return out;
}

void pb_t_expect_bytes(const pb_daemon *d, const char *what,
                       const void *got, size_t got_len,
                       const void *want, size_t want_len)
{
    char *g, *w;

    if (got_len == want_len && (got_len == 0 || memcmp(got, want, got_len) == 0))
        return;
    g = pb_t_escape(got, got_len);
    w = pb_t_escape(want, want_len);
    pb_t_fail(d, __FILE__, __LINE__, "%s: got %zu bytes\n  %s\nwanted %zu bytes\n  %s",
              what, got_len, g ? g : "?", want_len, w ? w : "?");
}

void pb_t_send(const pb_daemon *d, int fd, const void *data, size_t len)
{
    pb_check(d, pb_send_all(fd, data, len) == 0, "%s", pb_t_reason());
}

void pb_t_send_frame(const pb_daemon *d, int fd, const char *content_type,
                     const char *encoding, const void *content, size_t len)
{
    pb_buf b = PB_BUF_INIT;

    pb_t_frame(&b, content_type, encoding, content, len);
    pb_t_send(d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_buf_free(&b);
}

void pb_t_expect_morpheus(const pb_daemon *d, int fd)
{
    pb_t_send_frame(d, fd, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    pb_t_expect_reply(d, fd, "text/json", "utf-8", PB_T_MORPHEUS_REPLY,
                      strlen(PB_T_MORPHEUS_REPLY));
}

void pb_t_recv_frame(const pb_daemon *d, int fd, pb_t_reply *r)
{
    int status = pb_recv_frame(fd, r);

    pb_check(d, status != 1, "connection closed where a reply frame was expected");
    pb_check(d, status == 0, "%s", pb_t_reason());
}

char *pb_t_recv_result(const pb_daemon *d, int fd)
{
    pb_t_reply r;
    pb_t_recv_frame(d, fd, &r);
    json_t *json = json_loadb((const char *)r.content, r.content_length, 0, NULL);
    const char *result = json_string_value(json_object_get(json, "result"));
    pb_check(d, result != NULL, "no result in %.*s", (int)r.content_length,
             (const char *)r.content);
    char *copy = strdup(result);
    json_decref(json);
    pb_t_reply_free(&r);
    return copy;
}

void pb_t_expect_reply(const pb_daemon *d, int fd, const char *content_type,
                       const char *encoding, const void *content, size_t len)
{
    pb_t_reply r;
    char *shown;

    pb_t_recv_frame(d, fd, &r);
    shown = pb_t_escape(pb_buf_head(&r.raw), pb_buf_used(&r.raw));
    pb_check(d, strcmp(r.content_type, content_type) == 0
             && strcmp(r.content_encoding, encoding) == 0,
             "reply has content-type %s, encoding %s; wanted %s, %s: %s",
             r.content_type, r.content_encoding, content_type, encoding,
             shown ? shown : "?");
    free(shown);
    pb_t_expect_bytes(d, "reply content", r.content, r.content_length, content, len);
    pb_t_reply_free(&r);
}

/* The frame header the daemon must write for a reply, Python style. */
static void expect_canonical_header(const pb_daemon *d, const pb_t_reply *r)
{
    pb_buf want = PB_BUF_INIT;

    pb_check(d, pb_frame_encode_header(&want, r->content_type, r->content_encoding,
                                       r->content_length) == 0, "out of memory");
    pb_t_expect_bytes(d, "reply header", pb_buf_head(&r->raw), 2 + r->header_length,
                      pb_buf_head(&want), pb_buf_used(&want));
    pb_buf_free(&want);
}

void pb_t_expect_error(const pb_daemon *d, int fd, const char *code)
{
    pb_t_reply r;
    json_t *body, *text;
    pb_buf want = PB_BUF_INIT;
    char *shown;

    pb_t_recv_frame(d, fd, &r);
    shown = pb_t_escape(pb_buf_head(&r.raw), pb_buf_used(&r.raw));
    body = json_loadb((const char *)r.content, r.content_length, 0, NULL);
    text = json_object_get(body, "error");
    pb_check(d, strcmp(r.content_type, "text/json") == 0
             && strcmp(r.content_encoding, "utf-8") == 0
             && json_is_object(body) && json_object_size(body) == 2
             && json_is_string(text) && json_string_length(text) > 0
             && json_is_string(json_object_get(body, "code")),
             "wanted a %s error frame, got %s", code, shown ? shown : "?");
    pb_check(d, strcmp(json_string_value(json_object_get(body, "code")), code) == 0,
             "wanted error code %s, got %s", code, shown ? shown : "?");
    free(shown);
    expect_canonical_header(d, &r);
    pb_check(d, pb_buf_append_str(&want, "{\"error\": ") == 0
             && pb_json_dump_string(&want, json_string_value(text),
                                    json_string_length(text)) == 0
             && pb_buf_append_str(&want, ", \"code\": ") == 0
             && pb_json_dump_string(&want, code, strlen(code)) == 0
             && pb_buf_append_str(&want, "}") == 0, "out of memory");
    pb_t_expect_bytes(d, "error content", r.content, r.content_length,
                      pb_buf_head(&want), pb_buf_used(&want));
    pb_buf_free(&want);
    json_decref(body);
    pb_t_reply_free(&r);
}

void pb_t_expect_line(const pb_daemon *d, int fd, const char *line)
{
    char buf[8192];
    size_t len = 0;
    int status = pb_recv_line(fd, buf, sizeof buf, &len);

    pb_check(d, status != 1, "connection closed where the line \"%s\" was expected", line);
    pb_check(d, status == 0, "%s", pb_t_reason());
    pb_t_expect_bytes(d, "reply line", buf, len, line, strlen(line));
}

void pb_t_expect_err_line(const pb_daemon *d, int fd, const char *code)
{
    char buf[8192], prefix[64];
    size_t len = 0;
    int status = pb_recv_line(fd, buf, sizeof buf, &len);
    char *shown;

    pb_check(d, status != 1, "connection closed where ERR %s was expected", code);
    pb_check(d, status == 0, "%s", pb_t_reason());
    snprintf(prefix, sizeof prefix, "ERR %s ", code);
    shown = pb_t_escape(buf, len);
    pb_check(d, strncmp(buf, prefix, strlen(prefix)) == 0 && len > strlen(prefix) + 1
             && !strchr(buf, '\r'),
             "wanted \"%s<text>\\n\", got %s", prefix, shown ? shown : "?");
    free(shown);
}

void pb_t_expect_eof(const pb_daemon *d, int fd)
{
    pb_check(d, pb_expect_eof(fd) == 0, "%s", pb_t_reason());
}

/* --- Reference exchanges ------------------------------------------------- */

static unsigned char *hex_decode(const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    unsigned char *out = malloc(n ? n : 1);

    if (!out || strlen(hex) % 2)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        unsigned int byte;

        if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
            goto fail;
        out[i] = (unsigned char)byte;
    }
    *len = n;
    return out;
fail:
    free(out);
    return NULL;
}

/* The vectors were written on a little-endian host; a big-endian daemon
 * announces "big", three bytes shorter. */
static void host_byteorder(pb_exchange *e)
{
    static const char little[] = "\"byteorder\": \"little\"";
    const char *order = pb_host_byteorder();
    size_t h, at, cut;
    char *found;

    if (strcmp(order, "little") == 0)
        return;
    h = (size_t)e->reply[0] << 8 | e->reply[1];
    found = memmem(e->reply + 2, h, little, sizeof little - 1);
    pb_check(NULL, found != NULL, "%s: reply has no byteorder", e->name);
    at = (size_t)((unsigned char *)found - e->reply) + sizeof little - 1 - 7;
    cut = strlen("little") - strlen(order);
    memcpy(e->reply + at, order, strlen(order));
    memmove(e->reply + at + strlen(order), e->reply + at + strlen("little"),
            e->reply_len - at - strlen("little"));
    e->reply_len -= cut;
    h -= cut;
    e->reply[0] = (unsigned char)(h >> 8);
    e->reply[1] = (unsigned char)(h & 0xff);
}

size_t pb_vectors_load(pb_exchange **out)
{
    json_error_t error;
    json_t *root = json_load_file(PB_T_VECTORS, 0, &error);
    json_t *list = json_object_get(root, "exchanges");
    size_t n = json_array_size(list);
    pb_exchange *v;

    pb_check(NULL, root && n > 0, "cannot read %s: %s", PB_T_VECTORS, error.text);
    v = calloc(n, sizeof *v);
    pb_check(NULL, v != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(list, i);
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *request = json_string_value(json_object_get(e, "request_hex"));
        const char *reply = json_string_value(json_object_get(e, "reply_hex"));

        pb_check(NULL, name && request && reply, "%s: exchange %zu incomplete",
                 PB_T_VECTORS, i);
        snprintf(v[i].name, sizeof v[i].name, "%s", name);
        v[i].request = hex_decode(request, &v[i].request_len);
        v[i].reply = hex_decode(reply, &v[i].reply_len);
        pb_check(NULL, v[i].request && v[i].reply, "%s: %s: bad hex", PB_T_VECTORS, name);
        host_byteorder(&v[i]);
    }
    json_decref(root);
    *out = v;
    return n;
}

const pb_exchange *pb_vector(const pb_exchange *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return &v[i];
    pb_t_fail(NULL, __FILE__, __LINE__, "no exchange named %s in %s", name, PB_T_VECTORS);
}

void pb_vectors_free(pb_exchange *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].request);
        free(v[i].reply);
    }
    free(v);
}

json_t *pb_t_stats(const pb_daemon *d)
{
    static const char content[] = "{\"action\": \"stats\"}";
    int fd = pb_dial(d, 0);
    pb_t_send_frame(d, fd, "text/json", "utf-8", content, sizeof content - 1);
    pb_t_reply r;
    pb_t_recv_frame(d, fd, &r);
    close(fd);
    json_t *json = json_loadb((const char *)r.content, r.content_length, 0, NULL);
    pb_t_reply_free(&r);
    pb_check(d, json_is_object(json), "the stats reply is not a JSON object");
    return json;
}

long long pb_t_wait_stat(const pb_daemon *d, const char *key, long long want)
{
    long long got = -1;

    for (int i = 0; i < 1000 && got != want; i++) {
        json_t *s = pb_t_stats(d);

        got = json_integer_value(json_object_get(s, key));
        json_decref(s);
        if (got != want)
            sleep_ms(20);
    }
    return got;
}

void pb_t_check_serving(const pb_daemon *d, int port_index)
{
    pb_exchange *v;
    size_t n = pb_vectors_load(&v);
    const pb_exchange *e = pb_vector(v, n, "search_morpheus");
    int fd = pb_dial(d, port_index);
    pb_t_reply r;

    pb_t_send(d, fd, e->request, e->request_len);
    pb_t_recv_frame(d, fd, &r);
    pb_t_expect_bytes(d, "search_morpheus reply on a new connection",
                      pb_buf_head(&r.raw), pb_buf_used(&r.raw), e->reply, e->reply_len);
    pb_t_reply_free(&r);
    close(fd);
    pb_vectors_free(v, n);
}

/* --- TLS ----------------------------------------------------------------- */

void pb_t_make_certs(const char *dir)
{
    const char *argv[] = { "/bin/sh", PB_T_TLS_SRC "/make-certs.sh", dir, NULL };
    pb_run_result r;

    pb_run(argv, NULL, NULL, 0, &r);
    pb_check(NULL, r.status == 0, "make-certs.sh %s: exit status %d\n%s", dir,
             r.status, r.err);
    pb_run_free(&r);
}

/* Reads one line from fd into out (without its \n) before the deadline. */
static int read_status_line(int fd, char *out, size_t cap, long long deadline)
{
    size_t n = 0;

    while (n + 1 < cap) {
        char c;
        ssize_t got;

        if (wait_fd(fd, POLLIN, deadline) != 1)
            return failf("no status line from the TLS client within %d ms",
                         PB_T_TIMEOUT_MS);
        got = read(fd, &c, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        if (c == '\n')
            break;
        out[n++] = c;
    }
    out[n] = '\0';
    return n > 0 ? 0 : failf("the TLS client exited without a status line");
}

int pb_t_tls_open(const pb_daemon *d, int port_index, const pb_t_tls_opts *o,
                  pb_t_tls *c)
{
    static const pb_t_tls_opts none;
    char port[16], ca[256], cert[256], key[256], connect_to[64], dir[128];
    const char *argv[40];
    int n = 0, sp[2], status[2] = { -1, -1 };
    pid_t pid;

    if (!o)
        o = &none;
    memset(c, 0, sizeof *c);
    c->fd = -1;
    snprintf(port, sizeof port, "%d", d->port[port_index]);
    snprintf(ca, sizeof ca, "%s/%s.crt", d->dir, o->ca ? o->ca : "ca");
    snprintf(cert, sizeof cert, "%s/%s.crt", d->dir, o->client ? o->client : "");
    snprintf(key, sizeof key, "%s/%s.key", d->dir, o->client ? o->client : "");
    snprintf(connect_to, sizeof connect_to, "127.0.0.1:%s", port);
    pb_t_tempdir(dir, sizeof dir);
    snprintf(c->err_path, sizeof c->err_path, "%s/stderr", dir);

    argv[n++] = "/usr/bin/env";
    if (o->tool == PB_T_TLS_PYTHON) {
        argv[n++] = "python3";
        argv[n++] = PB_T_TLS_SRC "/tls-client.py";
        argv[n++] = "--status-fd";
        argv[n++] = "3";
        argv[n++] = "--ca";
        argv[n++] = ca;
        if (o->client) {
            argv[n++] = "--cert";
            argv[n++] = cert;
            argv[n++] = "--key";
            argv[n++] = key;
        }
        if (o->min_version) {
            argv[n++] = "--min";
            argv[n++] = o->min_version;
        }
        if (o->max_version) {
            argv[n++] = "--max";
            argv[n++] = o->max_version;
        }
        for (size_t i = 0; o->extra && o->extra[i] && n < 28; i++)
            argv[n++] = o->extra[i];
        argv[n++] = "127.0.0.1";
        argv[n++] = port;
    } else {
        argv[n++] = "openssl";
        argv[n++] = "s_client";
        argv[n++] = "-quiet";
        argv[n++] = "-connect";
        argv[n++] = connect_to;
        argv[n++] = "-servername";
        argv[n++] = "localhost";
        argv[n++] = "-verify_ip";
        argv[n++] = "127.0.0.1";
        argv[n++] = "-CAfile";
        argv[n++] = ca;
        argv[n++] = "-verify_return_error";
        if (o->client) {
            argv[n++] = "-cert";
            argv[n++] = cert;
            argv[n++] = "-key";
            argv[n++] = key;
        }
        /* s_client takes one fixed version, or none. */
        if (o->max_version && strcmp(o->max_version, "1.2") == 0)
            argv[n++] = "-tls1_2";
        else if (o->min_version && strcmp(o->min_version, "1.3") == 0)
            argv[n++] = "-tls1_3";
        for (size_t i = 0; o->extra && o->extra[i] && n < 31; i++)
            argv[n++] = o->extra[i];
    }
    argv[n] = NULL;

    pb_check(d, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0,
             "socketpair: %s", strerror(errno));
    if (o->tool == PB_T_TLS_PYTHON)
        pb_check(d, pipe2(status, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    pid = fork();
    pb_check(d, pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int err;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        err = open(c->err_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (err < 0 || dup2(sp[1], 0) < 0 || dup2(sp[1], 1) < 0 || dup2(err, 2) < 0)
            _exit(126);
        if (status[1] >= 0 && dup2(status[1], 3) < 0)
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(sp[1]);
    c->pid = pid;
    c->fd = sp[0];
    if (o->tool != PB_T_TLS_PYTHON) {
        snprintf(c->status, sizeof c->status, "started");
        return 0;
    }
    close(status[1]);
    if (read_status_line(status[0], c->status, sizeof c->status,
                         now_ms() + 2 * PB_T_TIMEOUT_MS) != 0) {
        char *err = pb_t_read_file(c->err_path, NULL);

        snprintf(c->status, sizeof c->status, "FAIL %.200s; stderr: %.250s", pb_t_reason(),
                 err ? err : "");
        free(err);
    }
    close(status[0]);
    if (strncmp(c->status, "OK ", 3) == 0)
        return 0;
    close(c->fd);
    c->fd = -1;
    return failf("TLS handshake failed: %s", c->status);
}

void pb_t_tls_dial(const pb_daemon *d, int port_index, const pb_t_tls_opts *o,
                   pb_t_tls *c)
{
    pb_check(d, pb_t_tls_open(d, port_index, o, c) == 0, "%s", pb_t_reason());
}

void pb_t_tls_close(pb_t_tls *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->pid > 0) {
        int status;

        /* The client exits by itself once the daemon closes; else it is
         * ended here. */
        if (wait_exit(c->pid, now_ms() + 100, &status) != 0) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, NULL, 0);
        }
    }
    c->pid = 0;
}

char *pb_t_tls_stderr(const pb_t_tls *c)
{
    char *text = pb_t_read_file(c->err_path, NULL);

    return text ? text : strdup("");
}

const char *pb_t_tls_peer_cn(const pb_t_tls *c, char *out, size_t cap)
{
    const char *version = strncmp(c->status, "OK ", 3) == 0 ? c->status + 3 : NULL;
    const char *cn = version ? strchr(version, ' ') : NULL;

    snprintf(out, cap, "%s", cn ? cn + 1 : "");
    return out;
}

long long pb_t_stat_path(const json_t *stats, const char *path)
{
    char key[128];
    const json_t *v = stats;

    while (v && *path) {
        size_t len = strcspn(path, ".");

        snprintf(key, sizeof key, "%.*s", (int)len, path);
        v = json_object_get(v, key);
        path += len + (path[len] == '.');
    }
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

long long pb_t_wait_stat_at_least(const pb_daemon *d, const char *path, long long want)
{
    long long got = -1;

    for (int i = 0; i < 1000; i++) {
        json_t *s = pb_t_stats(d);

        got = pb_t_stat_path(s, path);
        json_decref(s);
        if (got >= want)
            break;
        sleep_ms(20);
    }
    return got;
}

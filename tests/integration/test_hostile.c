/*
 * test_hostile.c - the real daemon against hostile peers: malformed and
 * oversized frames, random bytes from hundreds of connections, slowloris,
 * a peer that never reads, a flood past max_connections, resets in the
 * middle of a reply, and garbage pipelined behind a good frame; and on an
 * HTTP listener slowloris headers, huge headers, bad chunking and pipelined
 * garbage. After each attack the daemon must still be up, with the same
 * worker, and serving.
 */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"

TestSuite(hostile, .init = pb_harness_init, .fini = pb_harness_cleanup,
          .timeout = 300);


/* The bundled configuration with one worker and the given limits. */
#define CONF_LIMITS(limits) \
    PB_T_CONF_HEAD "workers = 1;\nlimits = { " limits " };\n" \
    PB_T_CONF_LISTENERS PB_T_CONF_PLUGINS PB_T_CONF_ROUTES

#define KIB 1024
#define MIB (1024 * 1024)

/* --- Time, processes ------------------------------------------------------- */

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

/* The parent pid and state letter from /proc/PID/stat; 0 or -1. The
 * command name may hold spaces and parentheses, so parsing starts after
 * its last ')'. */
static int proc_stat(pid_t pid, pid_t *ppid, char *state)
{
    char path[64], text[1024];
    FILE *f;
    size_t n;
    char *p;
    long parent;

    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    p = strrchr(text, ')');
    if (!p || sscanf(p + 1, " %c %ld", state, &parent) != 2)
        return -1;
    *ppid = (pid_t)parent;
    return 0;
}

static int process_alive(pid_t pid)
{
    pid_t ppid;
    char state;

    return proc_stat(pid, &ppid, &state) == 0 && state != 'Z';
}

/* The daemon's only worker: the master's one live child. Waits for it
 * while the master is still forking. */
static pid_t worker_of(const pb_daemon *d)
{
    long long deadline = now_ms() + PB_T_TIMEOUT_MS;

    for (;;) {
        DIR *proc = opendir("/proc");
        struct dirent *e;
        pid_t found = 0;
        int count = 0;

        pb_check(d, proc != NULL, "cannot read /proc");
        while ((e = readdir(proc)) != NULL) {
            pid_t pid, ppid;
            char state;

            if (!isdigit((unsigned char)e->d_name[0]))
                continue;
            pid = (pid_t)atol(e->d_name);
            if (proc_stat(pid, &ppid, &state) == 0 && ppid == d->pid && state != 'Z') {
                found = pid;
                count++;
            }
        }
        closedir(proc);
        if (count == 1)
            return found;
        pb_check(d, now_ms() < deadline,
                 "the daemon (pid %ld) has %d live worker processes, wanted 1",
                 (long)d->pid, count);
        sleep_ms(20);
    }
}

/* VmRSS in KiB, or -1. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static int fd_count(pid_t pid)
{
    char path[64];
    DIR *dir;
    struct dirent *e;
    int n = 0;

    snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    dir = opendir(path);
    if (!dir)
        return -1;
    while ((e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

/* The worker's descriptors with no client connected. A connection kept
 * open across one exchange is counted and subtracted: by the time the
 * daemon answers it, it has also seen the harness's readiness probes
 * close, which would otherwise be counted too. */
static int settled_fd_count(const pb_daemon *d, pid_t worker)
{
    pb_exchange *v;
    size_t n = pb_vectors_load(&v);
    const pb_exchange *e = pb_vector(v, n, "search_morpheus");
    int fd = pb_dial(d, 0), count;
    pb_t_reply r;

    pb_t_send(d, fd, e->request, e->request_len);
    pb_t_recv_frame(d, fd, &r);
    pb_t_reply_free(&r);
    pb_vectors_free(v, n);
    count = fd_count(worker);
    close(fd);
    pb_check(d, count > 0, "cannot count the worker's descriptors");
    return count - 1;
}

/* Waits until the worker holds no more than `want` descriptors: the
 * connections the test dropped are closed on the daemon's side too. */
static void expect_fds_back(const pb_daemon *d, pid_t worker, int want)
{
    long long deadline = now_ms() + 2 * PB_T_TIMEOUT_MS;
    int n;

    while ((n = fd_count(worker)) > want && now_ms() < deadline)
        sleep_ms(50);
    pb_check(d, n >= 0 && n <= want,
             "the worker still holds %d descriptors, %d before the attack", n, want);
}

/* The master and the very same worker are alive (a worker that crashed
 * would have been replaced), and the log has no sanitizer or crash
 * report. */
static void expect_survived(const pb_daemon *d, pid_t worker)
{
    char *log = pb_daemon_log(d);
    int report = strstr(log, "Sanitizer") || strstr(log, "runtime error")
        || strstr(log, "restarting");

    free(log);
    pb_check(d, process_alive(d->pid), "the daemon's master process is gone");
    pb_check(d, process_alive(worker), "the worker process (pid %ld) is gone",
             (long)worker);
    pb_check(d, worker_of(d) == worker, "the worker was replaced");
    pb_check(d, !report, "the daemon's log has a crash or sanitizer report");
}

/* --- Frames ---------------------------------------------------------------- */

/* A reproducible pseudo-random stream (xorshift64*). */
static uint64_t next_random(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 0x2545F4914F6CDD1DULL;
}

static void random_bytes(uint64_t *state, unsigned char *out, size_t len)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (unsigned char)(next_random(state) >> 56);
}



/* Content of the echo request number `seq`: its number, then a letter
 * that changes with it, so that a reply out of order or cut short shows. */
static void fill_content(unsigned char *out, size_t len, unsigned seq)
{
    char number[16];
    int n = snprintf(number, sizeof number, "%08u:", seq);

    memset(out, 'a' + (int)(seq % 26), len);
    memcpy(out, number, (size_t)n < len ? (size_t)n : len);
}

/* Receives exactly len bytes; 0, or -1 on EOF, error or the hang guard. */
static int recv_exact(int fd, unsigned char *buf, size_t len)
{
    long long deadline = now_ms() + PB_T_TIMEOUT_MS;
    size_t got = 0;

    while (got < len && now_ms() < deadline) {
        struct pollfd p = { fd, POLLIN, 0 };
        ssize_t n;

        if (poll(&p, 1, 100) <= 0)
            continue;
        n = recv(fd, buf + got, len - got, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return -1;
        if (n > 0)
            got += (size_t)n;
    }
    return got == len ? 0 : -1;
}

/* Closes with a reset rather than a FIN. */
static void reset_close(int fd)
{
    struct linger lg = { 1, 0 };

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* --- Malformed frames ------------------------------------------------------ */

struct bad_header {
    const char *what;
    const char *bytes;
    size_t len;
};

#define BAD(what, literal) { what, literal, sizeof literal - 1 }
#define KEYS_AFTER_BYTEORDER \
    ", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": 0}"

static const struct bad_header bad_headers[] = {
    BAD("not JSON: truncated object", "{\"byteorder\": \"little\", \"content-type\": \"text/plain\""),
    BAD("not JSON: plain text", "hello, world"),
    BAD("not JSON: trailing garbage", "{\"byteorder\": \"little\"" KEYS_AFTER_BYTEORDER " x"),
    BAD("not JSON: two objects", "{\"byteorder\": \"little\"" KEYS_AFTER_BYTEORDER "{}"),
    BAD("not JSON: a NUL byte", "\0"),
    BAD("not JSON: single quotes", "{'byteorder': 'little'}"),
    BAD("not an object: array", "[\"little\", \"text/plain\", \"utf-8\", 0]"),
    BAD("not an object: string", "\"byteorder\""),
    BAD("not an object: number", "42"),
    BAD("not an object: null", "null"),
    BAD("not an object: true", "true"),
    BAD("not UTF-8: 0xff in a value",
        "{\"byteorder\": \"little\", \"content-type\": \"text/\xff\", \"content-encoding\": \"utf-8\", \"content-length\": 0}"),
    BAD("not UTF-8: Latin-1 e-acute",
        "{\"byteorder\": \"little\", \"content-type\": \"caf\xe9\", \"content-encoding\": \"utf-8\", \"content-length\": 0}"),
    BAD("not UTF-8: overlong slash",
        "{\"byteorder\": \"little\", \"content-type\": \"text\xc0\xafplain\", \"content-encoding\": \"utf-8\", \"content-length\": 0}"),
    BAD("not UTF-8: encoded surrogate",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"\xed\xa0\x80\", \"content-length\": 0}"),
    BAD("not UTF-8: truncated sequence in a key",
        "{\"x\xe2\x82\": 1, \"byteorder\": \"little\"" KEYS_AFTER_BYTEORDER),
    BAD("missing byteorder",
        "{\"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": 0}"),
    BAD("missing content-type",
        "{\"byteorder\": \"little\", \"content-encoding\": \"utf-8\", \"content-length\": 0}"),
    BAD("missing content-encoding",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-length\": 0}"),
    BAD("missing content-length",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\"}"),
    BAD("empty object", "{}"),
    BAD("byteorder a number", "{\"byteorder\": 1" KEYS_AFTER_BYTEORDER),
    BAD("byteorder null", "{\"byteorder\": null" KEYS_AFTER_BYTEORDER),
    BAD("byteorder an array", "{\"byteorder\": [\"little\"]" KEYS_AFTER_BYTEORDER),
    BAD("byteorder middle", "{\"byteorder\": \"middle\"" KEYS_AFTER_BYTEORDER),
    BAD("byteorder Little", "{\"byteorder\": \"Little\"" KEYS_AFTER_BYTEORDER),
    BAD("byteorder empty", "{\"byteorder\": \"\"" KEYS_AFTER_BYTEORDER),
    BAD("byteorder with a space", "{\"byteorder\": \"big \"" KEYS_AFTER_BYTEORDER),
    BAD("content-type a number",
        "{\"byteorder\": \"little\", \"content-type\": 7, \"content-encoding\": \"utf-8\", \"content-length\": 0}"),
    BAD("content-type null",
        "{\"byteorder\": \"little\", \"content-type\": null, \"content-encoding\": \"utf-8\", \"content-length\": 0}"),
    BAD("content-type an object",
        "{\"byteorder\": \"little\", \"content-type\": {}, \"content-encoding\": \"utf-8\", \"content-length\": 0}"),
    BAD("content-encoding false",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": false, \"content-length\": 0}"),
    BAD("content-encoding an array",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": [], \"content-length\": 0}"),
    BAD("content-length negative",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": -1}"),
    BAD("content-length very negative",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": -9223372036854775808}"),
    BAD("content-length float",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": 1.5}"),
    BAD("content-length integral float",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": 0.0}"),
    BAD("content-length exponent",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": 1e2}"),
    BAD("content-length string",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": \"0\"}"),
    BAD("content-length true",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": true}"),
    BAD("content-length false",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": false}"),
    BAD("content-length null",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": null}"),
    BAD("content-length an array",
        "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", \"content-encoding\": \"utf-8\", \"content-length\": [0]}"),
};

/* Sends the length prefix and header only (nothing is left unread when
 * the daemon closes), expects bad_frame and EOF, then checks that a new
 * connection is served. */
static void expect_bad_frame(const pb_daemon *d, const struct bad_header *h)
{
    pb_buf b = PB_BUF_INIT;
    int fd;

    cr_log_info("malformed header: %s", h->what);
    pb_t_raw_frame(&b, h->bytes, h->len, NULL, 0);
    fd = pb_dial(d, 0);
    pb_t_send(d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_error(d, fd, "bad_frame");
    pb_t_expect_eof(d, fd);
    close(fd);
    pb_buf_free(&b);
    pb_t_check_serving(d, 0);
}

Test(hostile, every_malformed_header_gets_bad_frame_and_close)
{
    pb_daemon d;
    pid_t worker;

    pb_daemon_start(&d, CONF_LIMITS(""));
    worker = worker_of(&d);
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++)
        expect_bad_frame(&d, &bad_headers[i]);
    expect_survived(&d, worker);
    pb_daemon_stop_clean(&d);
}

/* Sends a header announcing `content_length` bytes but none of them. */
static void expect_too_large(const pb_daemon *d, unsigned long long content_length)
{
    pb_buf b = PB_BUF_INIT;
    int fd;

    cr_log_info("content-length %llu", content_length);
    pb_check(d, pb_frame_encode_header(&b, "text/plain", "utf-8",
                                       (size_t)content_length) == 0, "out of memory");
    fd = pb_dial(d, 0);
    pb_t_send(d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_error(d, fd, "too_large");
    pb_t_expect_eof(d, fd);
    close(fd);
    pb_buf_free(&b);
    pb_t_check_serving(d, 0);
}

Test(hostile, too_large_from_the_header_alone)
{
    pb_daemon d;
    pb_buf b = PB_BUF_INIT;
    size_t header_length;
    unsigned char *content;
    int fd;

    pb_daemon_start(&d, CONF_LIMITS("max_message_bytes = 4096;"));
    expect_too_large(&d, MIB);
    expect_too_large(&d, 1ULL << 40);
    expect_too_large(&d, 9223372036854775807ULL);

    /* The limit is on H + content-length: one byte over is refused, the
     * exact size is served. */
    pb_check(&d, pb_frame_encode_header(&b, "text/plain", "utf-8", 4000) == 0, "out of memory");
    header_length = pb_buf_used(&b) - 2;
    pb_buf_free(&b);
    expect_too_large(&d, 4096 - header_length + 1);
    content = malloc(4096 - header_length);
    pb_check(&d, content != NULL, "out of memory");
    fill_content(content, 4096 - header_length, 1);
    fd = pb_dial(&d, 0);
    pb_t_send_frame(&d, fd, "text/plain", "utf-8", content, 4096 - header_length);
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", content, 4096 - header_length);
    close(fd);
    free(content);

    /* A header length over the limit is refused from the 2-byte prefix. */
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, "\xff\xff", 2);
    pb_t_expect_error(&d, fd, "too_large");
    pb_t_expect_eof(&d, fd);
    close(fd);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

/* --- Random bytes ---------------------------------------------------------- */

#define RANDOM_CONNS 300
#define RANDOM_BATCH 100
#define RANDOM_BYTES (4 * KIB)

/* The bytes hostile connection i sends: pure noise, noise behind a small
 * header length, a text/json header with noise as content, or a header
 * with noise for content-type, encoding and content; noise after all. */
static void hostile_bytes(unsigned i, unsigned char *out, size_t len)
{
    uint64_t state = 0x9E3779B97F4A7C15ULL * (i + 1);
    pb_buf b = PB_BUF_INIT;
    size_t used;

    random_bytes(&state, out, len);
    switch (i % 4) {
    case 1:
        out[0] = 0;
        out[1] = (unsigned char)(1 + next_random(&state) % 200);
        return;
    case 2:
        pb_check(NULL, pb_frame_encode_header(&b, "text/json", "utf-8",
                                              next_random(&state) % 1000) == 0,
                 "out of memory");
        break;
    case 3: {
        char type[24], encoding[24];

        for (size_t k = 0; k + 1 < sizeof type; k++) {
            type[k] = (char)(' ' + 1 + next_random(&state) % 94);
            encoding[k] = (char)(' ' + 1 + next_random(&state) % 94);
        }
        type[sizeof type - 1] = encoding[sizeof encoding - 1] = '\0';
        pb_check(NULL, pb_frame_encode_header(&b, type, encoding,
                                              next_random(&state) % 2000) == 0,
                 "out of memory");
        break;
    }
    default:
        return;
    }
    used = pb_buf_used(&b) < len ? pb_buf_used(&b) : len;
    memcpy(out, pb_buf_head(&b), used);
    pb_buf_free(&b);
}

/*
 * Each connection of the batch sends its bytes and then half-closes (or,
 * every fifth, resets); the daemon must close every one of them, after
 * whatever replies it makes of the noise.
 */
static void random_batch(const pb_daemon *d, int port_index, unsigned first,
                         unsigned count)
{
    int fds[RANDOM_BATCH];
    unsigned char bytes[RANDOM_BYTES];
    unsigned open = 0;
    long long deadline;

    for (unsigned k = 0; k < count; k++) {
        fds[k] = pb_dial(d, port_index);
        hostile_bytes(first + k, bytes, sizeof bytes);
        /* The daemon may close before reading all: a failed send is part
         * of the game. */
        (void)pb_send_all(fds[k], bytes, sizeof bytes);
        if ((first + k) % 5 == 4) {
            reset_close(fds[k]);
            fds[k] = -1;
        } else {
            shutdown(fds[k], SHUT_WR);
            fcntl(fds[k], F_SETFL, fcntl(fds[k], F_GETFL) | O_NONBLOCK);
            open++;
        }
    }
    deadline = now_ms() + 2 * PB_T_TIMEOUT_MS;
    while (open > 0) {
        struct pollfd p[RANDOM_BATCH];

        for (unsigned k = 0; k < count; k++)
            p[k] = (struct pollfd){ fds[k], POLLIN, 0 };
        pb_check(d, now_ms() < deadline,
                 "%u of the connections sending random bytes and half-closing "
                 "were still open after %d ms", open, 2 * PB_T_TIMEOUT_MS);
        if (poll(p, count, 100) <= 0)
            continue;
        for (unsigned k = 0; k < count; k++) {
            unsigned char sink[16 * KIB];
            ssize_t n;

            if (fds[k] < 0 || !(p[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            n = recv(fds[k], sink, sizeof sink, 0);
            if (n > 0 || (n < 0 && errno == EAGAIN))
                continue;
            close(fds[k]);
            fds[k] = -1;
            open--;
        }
    }
}

Test(hostile, random_bytes_from_hundreds_of_connections)
{
    pb_daemon d;
    pid_t worker;
    int fds_before;

    pb_daemon_start(&d, CONF_LIMITS(""));
    worker = worker_of(&d);
    fds_before = settled_fd_count(&d, worker);
    for (unsigned first = 0; first < RANDOM_CONNS; first += RANDOM_BATCH)
        random_batch(&d, 0, first, RANDOM_BATCH);
    random_batch(&d, 1, RANDOM_CONNS, RANDOM_BATCH);
    expect_survived(&d, worker);
    expect_fds_back(&d, worker, fds_before);
    pb_t_check_serving(&d, 0);
    {
        int fd = pb_dial(&d, 1);

        pb_t_send(&d, fd, "still here\n", 11);
        pb_t_expect_line(&d, fd, "still here\n");
        close(fd);
    }
    pb_daemon_stop_clean(&d);
}

/* --- Slowloris ------------------------------------------------------------- */

#define SLOW_CONNS 200
#define SLOW_CONTENT 100000
#define SLOW_GUARD_MS 60000

/*
 * 200 peers trickle one byte of a 100 kB frame every half second (it would
 * take them 14 hours to finish); half of them first complete one request,
 * so the timeout must count from the last complete message, not from the
 * last byte. With idle_timeout = 2 the daemon closes them all before any
 * frame completes, and meanwhile new clients are answered every round.
 */
Test(hostile, slowloris_is_closed_by_idle_timeout)
{
    pb_daemon d;
    pb_buf frame = PB_BUF_INIT;
    static unsigned char content[SLOW_CONTENT];
    int fds[SLOW_CONNS];
    size_t sent[SLOW_CONNS];
    int open = SLOW_CONNS, rounds = 0;
    long long start, slowest = 0;
    pid_t worker;

    pb_daemon_start(&d, CONF_LIMITS("idle_timeout = 2;"));
    worker = worker_of(&d);
    fill_content(content, sizeof content, 7);
    pb_t_frame(&frame, "text/plain", "utf-8", content, sizeof content);
    for (int i = 0; i < SLOW_CONNS; i++) {
        fds[i] = pb_dial(&d, 0);
        if (i % 2)
            pb_t_expect_morpheus(&d, fds[i]);
        sent[i] = 0;
    }
    start = now_ms();
    while (open > 0) {
        long long t0;

        pb_check(&d, now_ms() - start < SLOW_GUARD_MS,
                 "%d trickling connections still open after %d s with idle_timeout = 2",
                 open, SLOW_GUARD_MS / 1000);
        for (int i = 0; i < SLOW_CONNS; i++) {
            struct pollfd p = { fds[i], POLLIN, 0 };
            unsigned char c;

            if (fds[i] < 0)
                continue;
            if (poll(&p, 1, 0) > 0) {
                ssize_t n = recv(fds[i], &c, 1, MSG_DONTWAIT);

                pb_check(&d, n <= 0, "a peer that never completed a frame got a reply byte");
                if (n == 0 || errno == ECONNRESET || errno == EPIPE) {
                    close(fds[i]);
                    fds[i] = -1;
                    open--;
                    continue;
                }
            }
            if (send(fds[i], pb_buf_head(&frame) + sent[i], 1,
                     MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
                sent[i]++;
        }
        t0 = now_ms();
        pb_t_check_serving(&d, 0);
        if (now_ms() - t0 > slowest)
            slowest = now_ms() - t0;
        rounds++;
        sleep_ms(500);
    }
    for (int i = 0; i < SLOW_CONNS; i++)
        pb_check(&d, sent[i] < pb_buf_used(&frame), "a trickled frame completed");
    cr_log_info("slowloris: all %d closed after %d rounds (%lld ms); slowest "
                "normal exchange meanwhile %lld ms", SLOW_CONNS, rounds,
                now_ms() - start, slowest);
    pb_buf_free(&frame);
    expect_survived(&d, worker);
    pb_daemon_stop_clean(&d);
}

/* --- A peer that never reads ----------------------------------------------- */

#define STUCK_CONTENT (64 * KIB)
#define STUCK_MAX_FRAMES 8192
#define STUCK_PENDING MIB
#define STUCK_MESSAGE MIB
/* How long sending must block before the daemon is taken to have stopped
 * reading; waiting longer only measures later, it decides no outcome. */
#define STUCK_QUIET_MS 2000

typedef struct stuck_peer {
    int fd;
    unsigned frames;            /* frames begun */
    pb_buf pending;             /* unsent rest of the last frame */
    unsigned replies;           /* replies checked */
    pb_buf in;
} stuck_peer;

/* Pipelines 64 KiB echo requests without reading until sending has been
 * blocked for STUCK_QUIET_MS. */
/* A connection to PORT0 whose receive window stays small: the kernel's
 * receive-buffer autotuning could otherwise take in megabytes of replies
 * the peer never reads, and the daemon would have none left to hold. */
static int dial_small_window(const pb_daemon *d)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int size = 64 * KIB;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)d->port[0]) };

    pb_check(d, fd >= 0, "socket: %s", strerror(errno));
    pb_check(d, setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) == 0,
             "SO_RCVBUF: %s", strerror(errno));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    pb_check(d, connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0,
             "connect: %s", strerror(errno));
    return fd;
}

static void stuck_fill(const pb_daemon *d, stuck_peer *p)
{
    static unsigned char content[STUCK_CONTENT];

    p->fd = dial_small_window(d);
    fcntl(p->fd, F_SETFL, fcntl(p->fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        struct pollfd pfd = { p->fd, POLLOUT, 0 };
        ssize_t n;

        if (pb_buf_used(&p->pending) == 0) {
            pb_check(d, p->frames < STUCK_MAX_FRAMES,
                     "the daemon read %u frames of %d KiB from a peer that never reads",
                     p->frames, STUCK_CONTENT / KIB);
            fill_content(content, sizeof content, p->frames);
            pb_t_frame(&p->pending, "text/plain", "utf-8", content, sizeof content);
            p->frames++;
        }
        n = send(p->fd, pb_buf_head(&p->pending), pb_buf_used(&p->pending), MSG_NOSIGNAL);
        if (n > 0) {
            pb_buf_consume(&p->pending, (size_t)n);
            continue;
        }
        pb_check(d, n < 0 && errno == EAGAIN, "send: %s", strerror(errno));
        if (poll(&pfd, 1, STUCK_QUIET_MS) == 0)
            return;
    }
}

/* Checks every complete reply frame in p->in against its request. */
static void stuck_check_replies(const pb_daemon *d, stuck_peer *p)
{
    static unsigned char want[STUCK_CONTENT];

    for (;;) {
        const unsigned char *head = pb_buf_head(&p->in);
        size_t used = pb_buf_used(&p->in), h;
        json_t *header;
        const char *type;
        json_int_t length;

        if (used < 2)
            return;
        h = (size_t)head[0] << 8 | head[1];
        if (used < 2 + h)
            return;
        header = json_loadb((const char *)head + 2, h, 0, NULL);
        type = json_string_value(json_object_get(header, "content-type"));
        length = json_integer_value(json_object_get(header, "content-length"));
        pb_check(d, type && strcmp(type, "text/plain") == 0 && length == STUCK_CONTENT,
                 "reply %u is not the echo of request %u", p->replies, p->replies);
        json_decref(header);
        if (used < 2 + h + STUCK_CONTENT)
            return;
        fill_content(want, sizeof want, p->replies);
        pb_check(d, memcmp(head + 2 + h, want, STUCK_CONTENT) == 0,
                 "reply %u does not carry the content of request %u (out of order?)",
                 p->replies, p->replies);
        pb_buf_consume(&p->in, 2 + h + STUCK_CONTENT);
        p->replies++;
    }
}

/* Reads (and finishes sending) until every reply came, or until the
 * daemon closes when `until_closed`; 1 when closed, 0 otherwise. */
static int stuck_drain(const pb_daemon *d, stuck_peer *p, int until_closed)
{
    long long deadline = now_ms() + PB_T_TIMEOUT_MS;

    while (until_closed || p->replies < p->frames) {
        struct pollfd pfd = { p->fd, POLLIN, 0 };
        unsigned char *dst;
        ssize_t n;

        if (pb_buf_used(&p->pending) > 0)
            pfd.events |= POLLOUT;
        pb_check(d, now_ms() < deadline,
                 "no progress for %d ms: %u of %u replies received",
                 PB_T_TIMEOUT_MS, p->replies, p->frames);
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        if ((pfd.revents & POLLOUT) && pb_buf_used(&p->pending) > 0) {
            n = send(p->fd, pb_buf_head(&p->pending), pb_buf_used(&p->pending),
                     MSG_NOSIGNAL);
            if (n > 0)
                pb_buf_consume(&p->pending, (size_t)n);
        }
        pb_check(d, pb_buf_reserve(&p->in, 256 * KIB) == 0, "out of memory");
        dst = p->in.data + p->in.len;
        n = recv(p->fd, dst, 256 * KIB, 0);
        if (n > 0) {
            p->in.len += (size_t)n;
            stuck_check_replies(d, p);
            deadline = now_ms() + PB_T_TIMEOUT_MS;
        } else if (n == 0 || errno == ECONNRESET) {
            return 1;
        } else {
            pb_check(d, errno == EAGAIN || errno == EINTR, "recv: %s", strerror(errno));
        }
    }
    return 0;
}

static void stuck_free(stuck_peer *p)
{
    close(p->fd);
    pb_buf_free(&p->pending);
    pb_buf_free(&p->in);
}

/* Warms the worker's allocator up with the traffic the test will make, so
 * that the baseline is not an idle process. */
static void echo_warm_up(const pb_daemon *d)
{
    static unsigned char content[STUCK_CONTENT];
    int fd = pb_dial(d, 0);

    for (unsigned i = 0; i < 32; i++) {
        fill_content(content, sizeof content, i);
        pb_t_send_frame(d, fd, "text/plain", "utf-8", content, sizeof content);
    }
    for (unsigned i = 0; i < 32; i++) {
        fill_content(content, sizeof content, i);
        pb_t_expect_reply(d, fd, "text/plain", "utf-8", content, sizeof content);
    }
    close(fd);
}

/* A daemon built with AddressSanitizer keeps freed memory in quarantine,
 * which would count as resident; the daemon started next (it inherits the
 * environment) reuses freed memory at once, as it does without ASan. */
static void without_asan_quarantine(void)
{
    const char *old = getenv("ASAN_OPTIONS");
    char options[1024];

    snprintf(options, sizeof options, "%s%squarantine_size_mb=0:thread_local_quarantine_size_kb=0",
             old ? old : "", old && *old ? ":" : "");
    pb_check(NULL, setenv("ASAN_OPTIONS", options, 1) == 0, "setenv: %s", strerror(errno));
}

/*
 * The daemon must stop reading a peer whose replies pile up: its memory
 * stays within a bound set by max_pending_output, other clients are
 * answered, and once the peer reads, every reply arrives complete and in
 * order (idle_timeout = 0, so only the reading decides).
 */
Test(hostile, never_reading_peer_is_paused_with_bounded_memory)
{
    pb_daemon d;
    stuck_peer p = { .pending = PB_BUF_INIT, .in = PB_BUF_INIT };
    long baseline, peak = 0, bound;
    pid_t worker;

    without_asan_quarantine();
    pb_daemon_start(&d, CONF_LIMITS("idle_timeout = 0; max_pending_output = 1048576; "
                                    "max_message_bytes = 1048576;"));
    worker = worker_of(&d);
    echo_warm_up(&d);
    baseline = rss_kib(worker);
    pb_check(&d, baseline > 0, "cannot read the worker's VmRSS");
    bound = baseline + (3L * STUCK_PENDING + 2L * STUCK_MESSAGE) / KIB;

    stuck_fill(&d, &p);
    for (int i = 0; i < 10; i++) {
        long rss = rss_kib(worker);

        if (rss > peak)
            peak = rss;
        pb_t_check_serving(&d, 0);
        sleep_ms(200);
    }
    cr_log_info("never-reading peer: %u frames of %d KiB sent before the daemon "
                "stopped reading; worker VmRSS baseline %ld KiB, peak %ld KiB "
                "(+%ld KiB), bound %ld KiB", p.frames, STUCK_CONTENT / KIB,
                baseline, peak, peak - baseline, bound);
    pb_check(&d, peak <= bound,
             "the worker's VmRSS reached %ld KiB while a peer did not read "
             "(baseline %ld KiB, bound %ld KiB)", peak, baseline, bound);

    pb_check(&d, stuck_drain(&d, &p, 0) == 0,
             "the daemon closed the paused peer after %u of %u replies",
             p.replies, p.frames);
    pb_check(&d, pb_buf_used(&p.in) == 0, "bytes after the last reply");
    pb_t_expect_morpheus(&d, p.fd);
    stuck_free(&p);
    expect_survived(&d, worker);
    pb_daemon_stop_clean(&d);
}

/* With an idle timeout, a paused peer sends no complete message either:
 * it is closed, its pending replies dropped, the worker's descriptor and
 * memory freed. What it received before is whole and in order. */
Test(hostile, never_reading_peer_is_closed_by_idle_timeout)
{
    pb_daemon d;
    stuck_peer p = { .pending = PB_BUF_INIT, .in = PB_BUF_INIT };
    pid_t worker;
    int fds_before;

    pb_daemon_start(&d, CONF_LIMITS("idle_timeout = 2; max_pending_output = 1048576;"));
    worker = worker_of(&d);
    fds_before = settled_fd_count(&d, worker);
    stuck_fill(&d, &p);
    expect_fds_back(&d, worker, fds_before);
    pb_check(&d, stuck_drain(&d, &p, 1) == 1, "the stuck peer was not closed");
    /* How many replies it got before the close depends on how much the
     * kernel's buffers held when the timeout struck: a report, not a check. */
    cr_log_info("idle-closed stuck peer: %u of %u replies received before the close",
                p.replies, p.frames);
    stuck_free(&p);
    pb_t_check_serving(&d, 0);
    expect_survived(&d, worker);
    pb_daemon_stop_clean(&d);
}

/* --- Flood past max_connections -------------------------------------------- */

#define FLOOD_MAX 50
#define FLOOD_CONNS 200

/* 1 when a new connection is served, 0 when refused (busy, or closed
 * before the request could be read). */
static int try_serving(const pb_daemon *d, int *fd_out)
{
    int fd = pb_dial(d, 0);
    pb_t_reply r;
    int status, served;

    pb_t_send_frame(d, fd, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    status = pb_recv_frame(fd, &r);
    if (status == 1) {
        close(fd);
        return 0;
    }
    pb_check(d, status == 0, "%s", pb_t_reason());
    served = r.content_length == strlen(PB_T_MORPHEUS_REPLY)
        && memcmp(r.content, PB_T_MORPHEUS_REPLY, r.content_length) == 0;
    if (!served) {
        json_t *body = json_loadb((const char *)r.content, r.content_length, 0, NULL);
        const char *code = json_string_value(json_object_get(body, "code"));

        pb_check(d, code && strcmp(code, "busy") == 0,
                 "a new connection got neither the answer nor busy");
        json_decref(body);
        close(fd);
    } else {
        *fd_out = fd;
    }
    pb_t_reply_free(&r);
    return served;
}

Test(hostile, flood_past_max_connections)
{
    pb_daemon d;
    int fds[FLOOD_CONNS];
    int held = 0;
    long long deadline;
    pid_t worker;

    pb_daemon_start(&d, CONF_LIMITS("max_connections = 50;"));
    worker = worker_of(&d);
    /* One exchange first: the daemon has then seen the harness's readiness
     * probes close, so they hold no slot. */
    fds[0] = pb_dial(&d, 0);
    pb_t_expect_morpheus(&d, fds[0]);
    for (int i = 1; i < FLOOD_CONNS; i++)
        fds[i] = pb_dial(&d, 0);
    for (int i = FLOOD_MAX; i < FLOOD_CONNS; i++) {
        pb_t_expect_error(&d, fds[i], "busy");
        pb_t_expect_eof(&d, fds[i]);
        close(fds[i]);
    }
    for (int i = 0; i < FLOOD_MAX; i++)
        pb_t_expect_morpheus(&d, fds[i]);
    for (int i = 0; i < FLOOD_MAX; i++)
        close(fds[i]);

    /* The slots come back as the daemon sees the closes: retry until 50
     * new connections are held at once, then the 51st is refused. */
    deadline = now_ms() + 2 * PB_T_TIMEOUT_MS;
    while (held < FLOOD_MAX) {
        pb_check(&d, now_ms() < deadline,
                 "only %d new connections served %d ms after closing the first %d",
                 held, 2 * PB_T_TIMEOUT_MS, FLOOD_MAX);
        if (try_serving(&d, &fds[held]))
            held++;
        else
            sleep_ms(20);
    }
    fds[FLOOD_MAX] = pb_dial(&d, 0);
    pb_t_expect_error(&d, fds[FLOOD_MAX], "busy");
    pb_t_expect_eof(&d, fds[FLOOD_MAX]);
    for (int i = 0; i <= FLOOD_MAX; i++)
        close(fds[i]);
    expect_survived(&d, worker);
    pb_daemon_stop_clean(&d);
}

/* --- Reset in the middle of a reply ---------------------------------------- */

#define RESET_ROUNDS 20
#define RESET_CONTENT MIB
#define RESET_FRAMES 16

/*
 * A peer pipelines 1 MiB echo requests, reads a little of the first reply
 * (or nothing) and resets: the daemon is in the middle of writing megabytes
 * it can no longer deliver. It must drop the connection cleanly.
 */
Test(hostile, peer_resets_in_the_middle_of_a_reply)
{
    pb_daemon d;
    static unsigned char content[RESET_CONTENT];
    pb_buf frames = PB_BUF_INIT;
    pid_t worker;
    int fds_before;

    pb_daemon_start(&d, CONF_LIMITS("max_message_bytes = 4194304; max_pending_output = 1048576;"));
    worker = worker_of(&d);
    fds_before = settled_fd_count(&d, worker);
    fill_content(content, sizeof content, 3);
    for (int i = 0; i < RESET_FRAMES; i++)
        pb_t_frame(&frames, "text/plain", "utf-8", content, sizeof content);

    for (int round = 0; round < RESET_ROUNDS; round++) {
        int fd = pb_dial(&d, 0);
        const unsigned char *p = pb_buf_head(&frames);
        size_t left = pb_buf_used(&frames);
        unsigned char head[64 * KIB];

        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        /* Send until the daemon stops taking more (its output is full). */
        while (left > 0) {
            struct pollfd pfd = { fd, POLLOUT, 0 };
            ssize_t n = send(fd, p, left, MSG_NOSIGNAL);

            if (n > 0) {
                p += n;
                left -= (size_t)n;
            } else if (n < 0 && errno == EAGAIN) {
                if (poll(&pfd, 1, 500) == 0)
                    break;
            } else {
                break;
            }
        }
        if (round % 2) {
            pb_check(&d, recv_exact(fd, head, sizeof head) == 0,
                     "round %d: the first 64 KiB of the reply did not come", round);
        }
        reset_close(fd);
        pb_t_check_serving(&d, 0);
    }
    expect_fds_back(&d, worker, fds_before);
    expect_survived(&d, worker);
    pb_buf_free(&frames);
    pb_daemon_stop_clean(&d);
}

/* --- Garbage behind a good frame ------------------------------------------- */

/* A good search request then `garbage` in one write: the answer, then the
 * error `code`, then EOF. */
static void good_then_garbage(const pb_daemon *d, const void *garbage, size_t len,
                              const char *code)
{
    pb_buf b = PB_BUF_INIT;
    int fd = pb_dial(d, 0);

    pb_t_frame(&b, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    pb_check(d, pb_buf_append(&b, garbage, len) == 0, "out of memory");
    pb_t_send(d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_reply(d, fd, "text/json", "utf-8", PB_T_MORPHEUS_REPLY, strlen(PB_T_MORPHEUS_REPLY));
    pb_t_expect_error(d, fd, code);
    pb_t_expect_eof(d, fd);
    close(fd);
    pb_buf_free(&b);
}

Test(hostile, garbage_pipelined_after_a_good_frame)
{
    pb_daemon d;
    pb_buf b = PB_BUF_INIT;
    unsigned char noise[256];
    uint64_t state = 42;
    int fd;

    pb_daemon_start(&d, CONF_LIMITS(""));
    good_then_garbage(&d, "\0\0", 2, "bad_frame");
    good_then_garbage(&d, "\0\x05hello", 7, "bad_frame");
    good_then_garbage(&d, "\0\x03[1]", 5, "bad_frame");
    random_bytes(&state, noise, sizeof noise);
    noise[0] = 0;
    noise[1] = (unsigned char)(sizeof noise - 2);
    noise[2] = '}';
    good_then_garbage(&d, noise, sizeof noise, "bad_frame");
    pb_check(&d, pb_frame_encode_header(&b, "text/plain", "utf-8", 1ULL << 40) == 0,
             "out of memory");
    good_then_garbage(&d, pb_buf_head(&b), pb_buf_used(&b), "too_large");
    pb_buf_free(&b);

    /* Two good frames, the second one's reply queued behind the first. */
    fd = pb_dial(&d, 0);
    pb_t_frame(&b, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    pb_t_frame(&b, "text/plain", "utf-8", "second", 6);
    pb_check(&d, pb_buf_append(&b, "\0\x04null", 6) == 0, "out of memory");
    pb_t_send(&d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_reply(&d, fd, "text/json", "utf-8", PB_T_MORPHEUS_REPLY, strlen(PB_T_MORPHEUS_REPLY));
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "second", 6);
    pb_t_expect_error(&d, fd, "bad_frame");
    pb_t_expect_eof(&d, fd);
    close(fd);
    pb_buf_free(&b);

    /* The line framing: a good line, then one longer than the limit. */
    fd = pb_dial(&d, 1);
    pb_check(&d, pb_buf_append_str(&b, "good line\n") == 0, "out of memory");
    unsigned char *long_line = pb_buf_extend(&b, MIB + 1);
    pb_check(&d, long_line != NULL, "out of memory");
    memset(long_line, 'x', MIB + 1);
    (void)pb_send_all(fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_line(&d, fd, "good line\n");
    pb_t_expect_err_line(&d, fd, "too_large");
    pb_t_expect_eof(&d, fd);
    close(fd);
    pb_buf_free(&b);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

/* --- Hostile TLS peers ----------------------------------------------------- */

/* PORT0: plain frames (statistics, and the reference exchange); PORT2: TLS
 * frames. The certificates come from tests/tls/make-certs.sh. */
#define CONF_TLS(limits) \
    PB_T_CONF_HEAD "workers = 1;\nlimits = { " limits " };\n" \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; },\n" \
    "  { name = \"secure\"; address = \"127.0.0.1\"; port = @PORT2@; framing = \"frame\";\n" \
    "    tls = { certificate = \"@DIR@/server.crt\"; key = \"@DIR@/server.key\"; }; }\n" \
    ");\n" \
    "plugins = (\n" \
    "  { name = \"search\"; module = \"search\";\n" \
    "    settings = { entries = ( (\"morpheus\", \"Follow the white rabbit. \xf0\x9f\x90\xb0\") ); }; },\n" \
    "  { name = \"echo\"; module = \"echo\"; },\n" \
    "  { name = \"stats\"; module = \"stats\"; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"search\"; },\n" \
    "  { content_type = \"text/plain\"; plugin = \"echo\"; }\n" \
    ");\n"

#define TLS_PORT 2
#define REFUSED_TLS "connections.refused_by.tls"

static void start_tls(pb_daemon *d, const char *config_template)
{
    pb_daemon_prepare(d, config_template);
    pb_t_make_certs(d->dir);
    pb_daemon_launch(d, config_template);
}

static long long refused_tls(const pb_daemon *d)
{
    json_t *s = pb_t_stats(d);
    long long n = pb_t_stat_path(s, REFUSED_TLS);

    json_decref(s);
    pb_check(d, n >= 0, "the statistics have no %s", REFUSED_TLS);
    return n;
}

/* Waits until refused_by.tls is base + n, and checks it is no more. */
static void expect_tls_refused(const pb_daemon *d, long long base, long long n)
{
    long long got = pb_t_wait_stat_at_least(d, REFUSED_TLS, base + n);

    pb_check(d, got == base + n, "%s is %lld, wanted %lld (%lld before, %lld refused)",
             REFUSED_TLS, got, base + n, base, n);
}

/* A new TLS connection (Python's ssl module) does the morpheus search. */
static void expect_tls_serving(const pb_daemon *d)
{
    pb_t_tls c;

    pb_t_tls_dial(d, TLS_PORT, NULL, &c);
    pb_t_expect_morpheus(d, c.fd);
    pb_t_tls_close(&c);
}

/* A ClientHello as Python's ssl module sends it (malloc'd). */
static unsigned char *client_hello(size_t *len)
{
    const char *argv[] = { "/usr/bin/env", "python3", PB_T_TLS_SRC "/tls-client.py",
                           "--client-hello", NULL };
    pb_run_result r;
    unsigned char *hello;

    pb_run(argv, NULL, NULL, 0, &r);
    pb_check(NULL, r.status == 0 && r.out_len > 50 && (unsigned char)r.out[0] == 0x16,
             "tls-client.py --client-hello: status %d, %zu bytes; %s",
             r.status, r.out_len, r.err);
    hello = malloc(r.out_len);
    pb_check(NULL, hello != NULL, "out of memory");
    memcpy(hello, r.out, r.out_len);
    *len = r.out_len;
    pb_run_free(&r);
    return hello;
}

/* Whether what a refused peer received is nothing, or TLS records only
 * (an alert, or the server's first flight). */
static int only_tls_records(const unsigned char *p, size_t len)
{
    while (len >= 5) {
        size_t n = (size_t)p[3] << 8 | p[4];

        if (p[0] < 0x14 || p[0] > 0x17 || p[1] != 0x03)
            return 0;
        if (n + 5 > len)
            return 1;   /* cut short by the close */
        p += n + 5;
        len -= n + 5;
    }
    return len == 0 || (p[0] >= 0x14 && p[0] <= 0x17);
}

/* Reads what comes until EOF (or reset); 0, or -1 on the hang guard.
 * The last bytes (up to cap) into buf. */
static int drain_to_eof(int fd, unsigned char *buf, size_t cap, size_t *len)
{
    long long deadline = now_ms() + 2 * PB_T_TIMEOUT_MS;

    *len = 0;
    while (now_ms() < deadline) {
        struct pollfd p = { fd, POLLIN, 0 };
        unsigned char sink[16 * KIB];
        ssize_t n;

        if (poll(&p, 1, 100) <= 0)
            continue;
        n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 0;
        if (n < 0)
            continue;
        if (*len + (size_t)n <= cap) {
            memcpy(buf + *len, sink, (size_t)n);
            *len += (size_t)n;
        }
    }
    return -1;
}

/* The bytes hostile TLS peer i sends: noise; a handshake record header
 * with noise behind it; a ClientHello header whose body is noise; an
 * SSLv2-style header; an alert; or a real ClientHello with noise in the
 * middle. */
static size_t tls_hostile_bytes(unsigned i, const unsigned char *hello, size_t hello_len,
                                unsigned char *out, size_t cap)
{
    uint64_t state = 0xD1B54A32D192ED03ULL * (i + 1);
    size_t len = 1 + next_random(&state) % cap;

    random_bytes(&state, out, cap);
    switch (i % 6) {
    case 1:
        out[0] = 0x16;
        out[1] = 0x03;
        out[2] = (unsigned char)(next_random(&state) % 5);
        break;
    case 2:
        if (len < 9)
            len = 9;
        out[0] = 0x16;
        out[1] = 0x03;
        out[2] = 0x01;
        out[3] = (unsigned char)((len - 5) >> 8);
        out[4] = (unsigned char)((len - 5) & 0xff);
        out[5] = 0x01;
        break;
    case 3:
        out[0] = (unsigned char)(0x80 | (next_random(&state) & 0x7f));
        out[2] = 0x01;
        break;
    case 4:
        if (len < 7)
            len = 7;
        memcpy(out, "\x15\x03\x03\x00\x02\x02\x28", 7);
        break;
    case 5:
        len = hello_len < cap ? hello_len : cap;
        memcpy(out, hello, len);
        for (size_t k = 0; k < 16; k++)
            out[5 + next_random(&state) % (len - 5)] ^= (unsigned char)(1 + k);
        break;
    default:
        break;
    }
    return len;
}

/*
 * Hundreds of peers send the TLS port noise, some of it dressed as TLS,
 * then half-close (or, every fifth, reset). Each is closed, each is
 * counted once as a refused handshake, and an established TLS connection
 * keeps its conversation throughout.
 */
Test(hostile, tls_random_bytes_from_hundreds_of_connections)
{
    enum { CONNS = 300, BATCH = 100 };
    pb_daemon d;
    pb_t_tls held;
    unsigned char *hello;
    size_t hello_len;
    pid_t worker;
    int fds_before;
    long long base;

    start_tls(&d, CONF_TLS(""));
    worker = worker_of(&d);
    hello = client_hello(&hello_len);
    pb_t_tls_dial(&d, TLS_PORT, NULL, &held);
    pb_t_expect_morpheus(&d, held.fd);
    fds_before = settled_fd_count(&d, worker);
    base = refused_tls(&d);

    for (unsigned first = 0; first < CONNS; first += BATCH) {
        int fds[BATCH];

        for (unsigned k = 0; k < BATCH; k++) {
            unsigned char bytes[RANDOM_BYTES];
            size_t len = tls_hostile_bytes(first + k, hello, hello_len, bytes, sizeof bytes);

            fds[k] = pb_dial(&d, TLS_PORT);
            (void)pb_send_all(fds[k], bytes, len);
            if ((first + k) % 5 == 4) {
                reset_close(fds[k]);
                fds[k] = -1;
            } else {
                shutdown(fds[k], SHUT_WR);
            }
        }
        for (unsigned k = 0; k < BATCH; k++) {
            unsigned char got[16 * KIB];
            size_t n;

            if (fds[k] < 0)
                continue;
            pb_check(&d, drain_to_eof(fds[k], got, sizeof got, &n) == 0,
                     "noisy TLS peer %u: still open after %d ms", first + k,
                     2 * PB_T_TIMEOUT_MS);
            pb_check(&d, only_tls_records(got, n),
                     "noisy TLS peer %u received something other than TLS records",
                     first + k);
            close(fds[k]);
        }
        pb_t_expect_morpheus(&d, held.fd);
        expect_tls_serving(&d);
    }
    expect_tls_refused(&d, base, CONNS);
    expect_survived(&d, worker);
    expect_fds_back(&d, worker, fds_before);
    pb_t_expect_morpheus(&d, held.fd);
    pb_t_tls_close(&held);
    pb_t_check_serving(&d, 0);
    free(hello);
    pb_daemon_stop_clean(&d);
}

/* A ClientHello cut at every interesting place, then EOF or a reset. */
Test(hostile, tls_truncated_client_hello_is_refused)
{
    pb_daemon d;
    pb_t_tls held;
    unsigned char *hello;
    size_t hello_len, cuts[16], n_cuts = 0;
    long long base;
    pid_t worker;

    start_tls(&d, CONF_TLS(""));
    worker = worker_of(&d);
    hello = client_hello(&hello_len);
    pb_t_tls_dial(&d, TLS_PORT, NULL, &held);
    pb_t_expect_morpheus(&d, held.fd);
    base = refused_tls(&d);
    /* Inside the record header, inside the handshake header, just after
     * it, in the middle, one byte short. */
    for (size_t cut = 1; cut <= 10; cut++)
        cuts[n_cuts++] = cut;
    cuts[n_cuts++] = 43;
    cuts[n_cuts++] = hello_len / 2;
    cuts[n_cuts++] = hello_len - 1;

    for (int reset = 0; reset < 2; reset++) {
        for (size_t i = 0; i < n_cuts; i++) {
            int fd = pb_dial(&d, TLS_PORT);
            unsigned char got[16 * KIB];
            size_t n;

            pb_t_context("a ClientHello of %zu bytes cut after %zu, then %s",
                         hello_len, cuts[i], reset ? "a reset" : "EOF");
            pb_t_send(&d, fd, hello, cuts[i]);
            if (reset) {
                reset_close(fd);
                continue;
            }
            shutdown(fd, SHUT_WR);
            pb_check(&d, drain_to_eof(fd, got, sizeof got, &n) == 0, "still open");
            pb_check(&d, only_tls_records(got, n), "received something other than TLS");
            close(fd);
        }
    }
    pb_t_context("%s", "");
    expect_tls_refused(&d, base, 2 * (long long)n_cuts);
    pb_t_expect_morpheus(&d, held.fd);
    pb_t_tls_close(&held);
    expect_tls_serving(&d);
    expect_survived(&d, worker);
    free(hello);
    pb_daemon_stop_clean(&d);
}

/*
 * Peers that stall in the handshake: one sends nothing, one half a
 * ClientHello, one a whole ClientHello and then reads the server's answer
 * but never replies, one a whole ClientHello and never reads. With
 * idle_timeout = 2 the daemon closes each; meanwhile an established TLS
 * connection and new ones are served every round. Each stalled handshake
 * is counted as refused.
 */
Test(hostile, tls_handshake_stalled_is_closed_by_idle_timeout)
{
    enum { STALLERS = 4 };
    pb_daemon d;
    pb_t_tls held;
    unsigned char *hello;
    size_t hello_len, flight = 0;
    int fds[STALLERS], open = STALLERS, rounds = 0;
    long long base, start;
    pid_t worker;

    start_tls(&d, CONF_TLS("idle_timeout = 2;"));
    worker = worker_of(&d);
    hello = client_hello(&hello_len);
    pb_t_tls_dial(&d, TLS_PORT, NULL, &held);
    pb_t_expect_morpheus(&d, held.fd);
    base = refused_tls(&d);

    for (int i = 0; i < STALLERS; i++)
        fds[i] = pb_dial(&d, TLS_PORT);
    pb_t_send(&d, fds[1], hello, hello_len / 2);
    pb_t_send(&d, fds[2], hello, hello_len);
    pb_t_send(&d, fds[3], hello, hello_len);
    start = now_ms();
    while (open > 0) {
        pb_check(&d, now_ms() - start < SLOW_GUARD_MS,
                 "%d stalled handshakes still open after %d s with idle_timeout = 2",
                 open, SLOW_GUARD_MS / 1000);
        for (int i = 0; i < 3; i++) {
            struct pollfd p = { fds[i], POLLIN, 0 };
            unsigned char buf[16 * KIB];
            ssize_t n;

            if (fds[i] < 0 || poll(&p, 1, 0) <= 0)
                continue;
            n = recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                pb_check(&d, i == 2 && (flight > 0 || buf[0] == 0x16),
                         "stalled peer %d received %zd bytes that are not a server hello",
                         i, n);
                flight += (size_t)n;
                continue;
            }
            if (n == 0 || errno == ECONNRESET) {
                close(fds[i]);
                fds[i] = -1;
                open--;
            }
        }
        /* The peer that never reads: closed means reset or EOF once its
         * unread server hello is drained. */
        if (fds[3] >= 0) {
            struct pollfd p = { fds[3], POLLIN | POLLRDHUP, 0 };

            if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
                close(fds[3]);
                fds[3] = -1;
                open--;
            }
        }
        pb_t_expect_morpheus(&d, held.fd);
        expect_tls_serving(&d);
        rounds++;
        sleep_ms(500);
    }
    cr_log_info("stalled handshakes: all closed after %d rounds (%lld ms)", rounds,
                now_ms() - start);
    pb_check(&d, flight > 0, "the peer that sent a whole ClientHello got no server hello");
    pb_t_expect_morpheus(&d, held.fd);
    pb_t_tls_close(&held);
    expect_survived(&d, worker);
    expect_tls_refused(&d, base, STALLERS);
    free(hello);
    pb_daemon_stop_clean(&d);
}

/*
 * Hundreds of handshakes left half-open at once (half a ClientHello, or a
 * whole one and no answer), batch after batch, while an established TLS
 * connection keeps its conversation and new ones complete theirs. Then
 * they all leave, half with a reset: every one is closed and counted, and
 * the worker is back to its descriptors.
 */
Test(hostile, tls_hundreds_of_half_open_handshakes_leave_others_served)
{
    enum { HALF_OPEN = 400, BATCH = 50 };
    static int fds[HALF_OPEN];
    pb_daemon d;
    pb_t_tls held;
    unsigned char *hello;
    size_t hello_len;
    long long base;
    pid_t worker;
    int fds_before;

    start_tls(&d, CONF_TLS(""));
    worker = worker_of(&d);
    hello = client_hello(&hello_len);
    pb_t_tls_dial(&d, TLS_PORT, NULL, &held);
    pb_t_expect_morpheus(&d, held.fd);
    fds_before = settled_fd_count(&d, worker);
    base = refused_tls(&d);

    for (int first = 0; first < HALF_OPEN; first += BATCH) {
        for (int i = first; i < first + BATCH; i++) {
            fds[i] = pb_dial(&d, TLS_PORT);
            pb_t_send(&d, fds[i], hello, i % 2 ? hello_len : hello_len / 2);
        }
        pb_t_expect_morpheus(&d, held.fd);
        expect_tls_serving(&d);
        pb_t_check_serving(&d, 0);
    }
    /* Every one is still open: the daemon waits for the rest of their
     * handshakes (the default idle_timeout is 60 s). */
    {
        json_t *s = pb_t_stats(&d);
        long long open_now = pb_t_stat_path(s, "connections.open");

        json_decref(s);
        pb_check(&d, open_now >= HALF_OPEN, "connections.open is %lld with %d "
                 "half-open handshakes", open_now, HALF_OPEN);
    }
    for (int i = 0; i < HALF_OPEN; i++) {
        if (i % 4 == 0)
            reset_close(fds[i]);
        else
            close(fds[i]);
    }
    expect_fds_back(&d, worker, fds_before);
    expect_tls_refused(&d, base, HALF_OPEN);
    pb_t_expect_morpheus(&d, held.fd);
    pb_t_tls_close(&held);
    expect_tls_serving(&d);
    expect_survived(&d, worker);
    free(hello);
    pb_daemon_stop_clean(&d);
}

/* --- HTTP listeners ---------------------------------------------------------
 *
 * The same attacks on a listener with framing "http": while each goes on,
 * a normal client on another connection is served, over HTTP and over
 * frames.
 */

/* PORT0: frame, routed; PORT1: http, routed. */
#define HTTP_CONF(limits) \
    PB_T_CONF_HEAD "workers = 1;\nlimits = { " limits " };\n" \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; },\n" \
    "  { name = \"web\"; address = \"127.0.0.1\"; port = @PORT1@; framing = \"http\"; }\n" \
    ");\n" PB_T_CONF_PLUGINS PB_T_CONF_ROUTES

#define HTTP_HEALTH "GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
#define HTTP_SLOW_CONNS 8

static void expect_http_serving(const pb_daemon *d)
{
    int fd = pb_dial(d, 1);

    pb_t_expect_http(d, fd, HTTP_HEALTH, 200, "text/plain; charset=utf-8", "ok\n");
    close(fd);
    pb_t_check_serving(d, 0);
}

/* Reads what the daemon sends on fd until it closes: an HTTP status (0 when
 * it closed without a response). */
static int status_then_close(const pb_daemon *d, int fd)
{
    pb_t_http r;
    int got = pb_recv_http(fd, 0, &r);
    int status = got == 0 ? r.status : 0;

    if (got == 0)
        pb_t_http_free(&r);
    pb_check(d, got != -1 || status == 0, "%s", pb_t_reason());
    pb_t_expect_eof(d, fd);
    return status;
}

Test(hostile, http_slowloris_headers_are_closed_by_idle_timeout)
{
    pb_daemon d;
    const char *head = "GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: "
                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int fds[HTTP_SLOW_CONNS];
    size_t sent[HTTP_SLOW_CONNS];
    int open = HTTP_SLOW_CONNS;
    long long start;
    pid_t worker;

    pb_daemon_start(&d, HTTP_CONF("idle_timeout = 2;"));
    worker = worker_of(&d);
    for (int i = 0; i < HTTP_SLOW_CONNS; i++) {
        fds[i] = pb_dial(&d, 1);
        sent[i] = 0;
    }
    start = now_ms();
    while (open > 0) {
        pb_check(&d, now_ms() - start < SLOW_GUARD_MS,
                 "%d trickling HTTP connections still open after %d s with "
                 "idle_timeout = 2", open, SLOW_GUARD_MS / 1000);
        for (int i = 0; i < HTTP_SLOW_CONNS; i++) {
            struct pollfd p = { fds[i], POLLIN, 0 };
            unsigned char c;

            if (fds[i] < 0)
                continue;
            if (poll(&p, 1, 0) > 0) {
                ssize_t n = recv(fds[i], &c, 1, MSG_DONTWAIT);

                pb_check(&d, n <= 0, "a peer that never completed its headers got a response");
                if (n == 0 || errno == ECONNRESET || errno == EPIPE) {
                    close(fds[i]);
                    fds[i] = -1;
                    open--;
                    continue;
                }
            }
            if (sent[i] < strlen(head)
                && send(fds[i], head + sent[i], 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
                sent[i]++;
        }
        expect_http_serving(&d);
        sleep_ms(500);
    }
    cr_log_info("HTTP slowloris: all %d closed after %lld ms", HTTP_SLOW_CONNS,
                now_ms() - start);
    expect_survived(&d, worker);
    pb_daemon_stop_clean(&d);
}

Test(hostile, http_huge_headers_are_refused_alone)
{
    pb_daemon d;
    pb_buf b = PB_BUF_INIT;
    pid_t worker;

    pb_daemon_start(&d, HTTP_CONF("idle_timeout = 10;"));
    worker = worker_of(&d);
    int held = pb_dial(&d, 1);
    pb_t_expect_http(&d, held, HTTP_HEALTH, 200, NULL, "ok\n");
    for (int round = 0; round < 4; round++) {
        int fd = pb_dial(&d, 1);

        pb_buf_clear(&b);
        pb_check(&d, pb_buf_append_str(&b, "GET /health HTTP/1.1\r\nHost: test\r\n") == 0,
                 "out of memory");
        for (int i = 0; i < 2000; i++)
            pb_check(&d, pb_buf_append_str(&b, "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n") == 0,
                     "out of memory");
        /* Sent in part: the daemon may close before it has read all. */
        send(fd, pb_buf_head(&b), pb_buf_used(&b), MSG_NOSIGNAL);
        int status = status_then_close(&d, fd);
        pb_check(&d, status == 0 || status == 431 || status == 413,
                 "huge headers answered %d", status);
        close(fd);
        expect_http_serving(&d);
    }
    pb_t_expect_http(&d, held, HTTP_HEALTH, 200, NULL, "ok\n");
    close(held);
    pb_buf_free(&b);
    expect_survived(&d, worker);
    pb_daemon_stop_clean(&d);
}

Test(hostile, http_bad_chunking_closes_that_connection_only)
{
    static const char *const bad[] = {
        "zz\r\nabc\r\n0\r\n\r\n",                     /* not a size */
        "3\r\nabcdef\r\n0\r\n\r\n",                   /* longer than said */
        "ffffffffffffffffffff\r\nabc\r\n",            /* size overflows */
        "-3\r\nabc\r\n0\r\n\r\n",                     /* negative */
    };
    pb_daemon d;
    pid_t worker;

    pb_daemon_start(&d, HTTP_CONF("idle_timeout = 10;"));
    worker = worker_of(&d);
    int held = pb_dial(&d, 1);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char request[512];
        int fd = pb_dial(&d, 1);
        int n = snprintf(request, sizeof request,
                         "POST / HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n%s", bad[i]);

        pb_t_context("bad chunking %zu", i);
        send(fd, request, (size_t)n, MSG_NOSIGNAL);
        /* Either refused (400) and closed, or left for idle_timeout: the
         * test closes it, and the other connections never notice. */
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 2000) > 0) {
            int status = status_then_close(&d, fd);
            pb_check(&d, status == 0 || status == 400 || status == 413,
                     "bad chunking answered %d", status);
        }
        close(fd);
        pb_t_expect_http(&d, held, HTTP_HEALTH, 200, NULL, "ok\n");
        expect_http_serving(&d);
    }
    pb_t_context("%s", "");
    close(held);
    expect_survived(&d, worker);
    pb_daemon_stop_clean(&d);
}

Test(hostile, http_garbage_pipelined_after_a_good_request)
{
    pb_daemon d;
    unsigned char noise[512];
    uint64_t state = 7;
    pid_t worker;

    pb_daemon_start(&d, HTTP_CONF("idle_timeout = 10;"));
    worker = worker_of(&d);
    for (int round = 0; round < 8; round++) {
        int fd = pb_dial(&d, 1);
        pb_buf b = PB_BUF_INIT;

        random_bytes(&state, noise, sizeof noise);
        /* A first byte no request line starts with. */
        noise[0] = '\x01';
        pb_check(&d, pb_buf_append_str(&b, HTTP_HEALTH) == 0
                 && pb_buf_append(&b, noise, sizeof noise) == 0, "out of memory");
        pb_t_send(&d, fd, pb_buf_head(&b), pb_buf_used(&b));
        pb_t_http r;
        pb_t_recv_http(&d, fd, 0, &r);
        pb_check(&d, r.status == 200, "the good request before the garbage got %d", r.status);
        pb_t_http_free(&r);
        int status = status_then_close(&d, fd);
        pb_check(&d, status == 0 || status == 400 || status == 505 || status == 501,
                 "garbage answered %d", status);
        close(fd);
        pb_buf_free(&b);
        expect_http_serving(&d);
    }
    expect_survived(&d, worker);
    pb_daemon_stop_clean(&d);
}

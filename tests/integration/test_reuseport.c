/*
 * test_reuseport.c - reuseport listeners in the real daemon with two
 * workers: connections are answered and reach both workers, reloads (the
 * same file, and turning the setting off and on) keep answering, a killed
 * worker's replacement accepts on its socket, including the connections
 * queued there while it was down, each worker watches its own socket and
 * no other, and `plugboard -t` checks the setting.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(reuseport, .init = pb_harness_init, .fini = pb_harness_cleanup,
          .timeout = 120);

#define FIXTURES PB_TEST_BUILDDIR "/tests/fixtures/.libs"

#define CONF(reuseport) \
    PB_T_CONF_HEAD "workers = 2;\n" \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; " reuseport " }\n" \
    ");\n" \
    "plugins = (\n" \
    "  { name = \"pid\"; module = \"" FIXTURES "/worker_pid.so\"; },\n" \
    "  { name = \"stats\"; module = \"stats\"; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { plugin = \"pid\"; }\n" \
    ");\n"

#define REUSEPORT CONF("reuseport = true;")
#define SHARED CONF("")

#define CONNECTIONS 64

/* The pid of the worker that answers a new connection to PORT0. */
static pid_t answering_worker(const pb_daemon *d)
{
    static const char ask[] = "{\"action\": \"pid\"}";
    int fd = pb_dial(d, 0);
    pb_t_send_frame(d, fd, "text/json", "utf-8", ask, sizeof ask - 1);
    char *pid = pb_t_recv_result(d, fd);
    pid_t p = (pid_t)atol(pid);
    free(pid);
    close(fd);
    return p;
}

/* CONNECTIONS new connections are all answered, by workers in want[0..n)
 * only, and by each of them. */
static void expect_spread(const pb_daemon *d, const pid_t *want, int n)
{
    int seen[8] = { 0 };
    for (int i = 0; i < CONNECTIONS; i++) {
        pid_t p = answering_worker(d);
        int k = 0;
        while (k < n && want[k] != p)
            k++;
        pb_check(d, k < n, "connection %d answered by pid %ld, not a current worker",
                 i, (long)p);
        seen[k]++;
    }
    for (int k = 0; k < n; k++)
        pb_check(d, seen[k] > 0, "worker pid %ld accepted none of %d connections",
                 (long)want[k], CONNECTIONS);
}

/* The two current workers into out, once there are two and neither is
 * one of old[0..n_old) (retiring workers are also the master's children). */
static void current_workers(const pb_daemon *d, pid_t out[2], const pid_t *old, int n_old)
{
    for (int tries = 0; tries < 300; tries++) {
        pid_t all[8];
        int n = pb_daemon_workers(d, all, 8), k = 0;
        for (int i = 0; i < n && k <= 2; i++) {
            int stale = 0;
            for (int j = 0; j < n_old; j++)
                stale |= all[i] == old[j];
            if (!stale && k < 2)
                out[k] = all[i];
            k += !stale;
        }
        if (k == 2)
            return;
        usleep(20000);
    }
    pb_t_fail(d, __FILE__, __LINE__, "no two new workers after 6 s");
}

Test(reuseport, connections_reach_both_workers)
{
    pb_daemon d;
    pb_daemon_start(&d, REUSEPORT);
    pid_t workers[2];
    cr_assert_eq(pb_daemon_wait_workers(&d, workers, 2, 2), 2);
    expect_spread(&d, workers, 2);

    /* Kept connections keep being answered too. */
    int fds[8];
    for (int i = 0; i < 8; i++)
        fds[i] = pb_dial(&d, 0);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 8; i++) {
            static const char ask[] = "{\"action\": \"pid\"}";
            pb_t_send_frame(&d, fds[i], "text/json", "utf-8", ask, sizeof ask - 1);
            free(pb_t_recv_result(&d, fds[i]));
        }
    for (int i = 0; i < 8; i++)
        close(fds[i]);
    pb_daemon_stop_clean(&d);
}

/* The inodes of the sockets listening on port (from /proc/net/tcp), at
 * most cap; their count. */
static int listening_inodes(int port, unsigned long *out, int cap)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    cr_assert_not_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned local_port, state;
        unsigned long inode;
        if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*d %*d %lu",
                   &local_port, &state, &inode) == 3 &&
            (int)local_port == port && state == 0x0A && n < cap)
            out[n++] = inode;
    }
    fclose(f);
    return n;
}

/* Whether process pid watches the socket of inode in an epoll set (the
 * "tfd" lines of its epoll descriptors' fdinfo name their targets). */
static int watches(pid_t pid, unsigned long inode)
{
    char path[64], line[256];
    int found = 0;
    for (int fd = 0; fd < 64 && !found; fd++) {
        snprintf(path, sizeof path, "/proc/%ld/fdinfo/%d", (long)pid, fd);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        while (fgets(line, sizeof line, f) != NULL) {
            unsigned long ino;
            const char *at = strstr(line, " ino:");
            if (strncmp(line, "tfd:", 4) == 0 && at != NULL &&
                sscanf(at, " ino:%lx", &ino) == 1 && ino == inode)
                found = 1;
        }
        fclose(f);
    }
    return found;
}

Test(reuseport, each_worker_accepts_on_its_own_socket)
{
    pb_daemon d;
    pb_daemon_start(&d, REUSEPORT);
    pid_t workers[2];
    cr_assert_eq(pb_daemon_wait_workers(&d, workers, 2, 2), 2);
    unsigned long sockets[4];
    cr_assert_eq(listening_inodes(d.port[0], sockets, 4), 2,
                 "one listening socket per worker");
    /* Polled: a worker watches its socket once its loop runs. */
    int mine[2] = { -1, -1 };
    for (int tries = 0; tries < 500; tries++) {
        for (int w = 0; w < 2; w++) {
            int a = watches(workers[w], sockets[0]), b = watches(workers[w], sockets[1]);
            mine[w] = a && !b ? 0 : b && !a ? 1 : a && b ? 2 : -1;
        }
        if (mine[0] >= 0 && mine[1] >= 0)
            break;
        usleep(20000);
    }
    cr_expect(mine[0] != 2 && mine[1] != 2, "a worker accepts on both copies");
    cr_expect(mine[0] >= 0 && mine[1] >= 0, "a worker accepts on no copy");
    cr_expect_neq(mine[0], mine[1], "both workers accept on the same copy");
    pb_daemon_stop_clean(&d);
}

Test(reuseport, reloads_keep_answering)
{
    pb_daemon d;
    pb_daemon_start(&d, REUSEPORT);
    pid_t first[2];
    cr_assert_eq(pb_daemon_wait_workers(&d, first, 2, 2), 2);
    int kept = pb_dial(&d, 0);
    static const char ask[] = "{\"action\": \"pid\"}";

    /* The same file: the workers stay and keep their sockets. */
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 1), 1);
    expect_spread(&d, first, 2);
    pb_t_send_frame(&d, kept, "text/json", "utf-8", ask, sizeof ask - 1);
    free(pb_t_recv_result(&d, kept));

    /* Turned off: new workers share the first copy, now the only socket. */
    pb_daemon_write_config(&d, SHARED);
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 2), 2);
    pid_t second[2];
    current_workers(&d, second, first, 2);
    for (int i = 0; i < CONNECTIONS; i++)
        answering_worker(&d);
    /* The connection opened before still gets answers, from its worker. */
    pb_t_send_frame(&d, kept, "text/json", "utf-8", ask, sizeof ask - 1);
    free(pb_t_recv_result(&d, kept));

    /* And on again: each new worker accepts on its own copy. */
    pb_daemon_write_config(&d, REUSEPORT);
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 3), 3);
    pid_t old[4] = { first[0], first[1], second[0], second[1] }, third[2];
    current_workers(&d, third, old, 4);
    expect_spread(&d, third, 2);
    close(kept);
    pb_daemon_stop_clean(&d);
}

Test(reuseport, a_killed_workers_replacement_accepts_its_queue)
{
    pb_daemon d;
    pb_daemon_start(&d, REUSEPORT);
    pid_t workers[2];
    cr_assert_eq(pb_daemon_wait_workers(&d, workers, 2, 2), 2);

    /* Connections made while the worker is down wait in its socket's
     * queue, which the master holds, for its replacement. */
    cr_assert_eq(kill(workers[0], SIGKILL), 0);
    int fds[CONNECTIONS];
    static const char ask[] = "{\"action\": \"pid\"}";
    for (int i = 0; i < CONNECTIONS; i++) {
        fds[i] = pb_dial(&d, 0);
        pb_t_send_frame(&d, fds[i], "text/json", "utf-8", ask, sizeof ask - 1);
    }
    for (int i = 0; i < CONNECTIONS; i++) {
        free(pb_t_recv_result(&d, fds[i]));
        close(fds[i]);
    }
    cr_assert_eq(pb_t_wait_stat(&d, "worker_restarts", 1), 1);

    pid_t now[2];
    current_workers(&d, now, &workers[0], 1);
    expect_spread(&d, now, 2);
    pb_daemon_stop_clean(&d);
}

static void expect_test_error(const char *config_template, const char *message)
{
    pb_daemon d;
    pb_daemon_prepare(&d, config_template);
    const char *argv[] = { PB_T_DAEMON_BIN, "-t", "-c", d.config_path, NULL };
    pb_run_result r;
    pb_run(argv, NULL, NULL, 0, &r);
    char want[512];
    snprintf(want, sizeof want, "%s:7: %s", d.config_path, message);
    cr_expect_eq(r.status, 78, "plugboard -t exited %d, wanted 78; stderr: %s",
                 r.status, r.err);
    cr_expect(strstr(r.err, want) != NULL || strstr(r.out, want) != NULL,
              "wanted \"%s\"; stdout: %s stderr: %s", want, r.out, r.err);
    pb_run_free(&r);
}

Test(reuseport, test_checks_the_setting)
{
    pb_daemon d;
    pb_daemon_prepare(&d, REUSEPORT);
    const char *argv[] = { PB_T_DAEMON_BIN, "-t", "-c", d.config_path, NULL };
    pb_run_result r;
    pb_run(argv, NULL, NULL, 0, &r);
    cr_expect_eq(r.status, 0, "plugboard -t: %s%s", r.out, r.err);
    pb_run_free(&r);

    expect_test_error(PB_T_CONF_HEAD "workers = 2;\n"
                      "listeners = (\n"
                      "  { name = \"local\"; path = \"@SOCK@\";\n"
                      "    reuseport = true; }\n"
                      ");\n"
                      "plugins = ( { name = \"echo\"; module = \"echo\"; } );\n"
                      "routes = ( { plugin = \"echo\"; } );\n",
                      "\"reuseport\" applies only to a TCP listener");
    expect_test_error(PB_T_CONF_HEAD "workers = 2;\n"
                      "listeners = (\n"
                      "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@;\n"
                      "    reuseport = \"yes\"; }\n"
                      ");\n"
                      "plugins = ( { name = \"echo\"; module = \"echo\"; } );\n"
                      "routes = ( { plugin = \"echo\"; } );\n",
                      "\"reuseport\" must be true or false");
}

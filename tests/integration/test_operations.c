/*
 * test_operations.c - what an operator does to a running daemon: reload
 * (good, broken, with new listeners) with connections held across it,
 * SIGTERM with replies in flight, a crashing worker, detaching with a
 * pidfile, dropping privileges, and reading the statistics.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(operations, .init = pb_harness_init, .fini = pb_harness_cleanup);

#define LISTENER_APP \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; }\n"
#define LISTENER_EXTRA \
    " ,{ name = \"extra\"; address = \"127.0.0.1\"; port = @PORT1@; }\n"

#define PLUGINS(answer) \
    "plugins = (\n" \
    "  { name = \"search\"; module = \"search\";\n" \
    "    settings = { entries = ( (\"morpheus\", \"" answer "\") ); }; },\n" \
    "  { name = \"stats\"; module = \"stats\"; },\n" \
    "  { name = \"echo\"; module = \"echo\"; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"search\"; },\n" \
    "  { content_type = \"text/plain\"; plugin = \"echo\"; }\n" \
    ");\n"

#define CONF(workers, listeners, answer) \
    PB_T_CONF_HEAD "workers = " workers ";\n" \
    "listeners = (\n" listeners ");\n" PLUGINS(answer)

/* One search over fd; the "result" member of the reply, malloc'd. */
static char *search(const pb_daemon *d, int fd, const char *value)
{
    char content[256];
    snprintf(content, sizeof content,
             "{\"action\": \"search\", \"value\": \"%s\"}", value);
    pb_buf frame = PB_BUF_INIT;
    pb_t_frame(&frame, "text/json", "utf-8", content, strlen(content));
    pb_t_send(d, fd, pb_buf_head(&frame), pb_buf_used(&frame));
    pb_buf_free(&frame);
    return pb_t_recv_result(d, fd);
}

static char *search_new(const pb_daemon *d, int port_index, const char *value)
{
    int fd = pb_dial(d, port_index);
    char *result = search(d, fd, value);
    close(fd);
    return result;
}

static long long stat_at(json_t *stats, const char *a, const char *b)
{
    json_t *v = json_object_get(stats, a);
    if (b != NULL)
        v = json_object_get(v, b);
    return json_integer_value(v);
}

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* Polls (with a hang guard, never a timing assertion) until the search
 * answer over a new connection is `want`. */
static void wait_for_answer(const pb_daemon *d, const char *want)
{
    for (int i = 0; i < 1000; i++) {
        char *got = search_new(d, 0, "morpheus");
        int same = strcmp(got, want) == 0;
        free(got);
        if (same)
            return;
        sleep_ms(20);
    }
    pb_t_fail(d, __FILE__, __LINE__, "the answer never became \"%s\"", want);
}

Test(operations, reload_changes_answers_for_open_and_new_connections)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1", LISTENER_APP, "old answer"));
    int held = pb_dial(&d, 0);
    char *got = search(&d, held, "morpheus");
    cr_expect_str_eq(got, "old answer");
    free(got);

    pb_daemon_write_config(&d, CONF("1", LISTENER_APP, "new answer"));
    pb_daemon_signal(&d, SIGHUP);
    wait_for_answer(&d, "new answer");
    got = search(&d, held, "morpheus");
    cr_expect_str_eq(got, "new answer", "a connection held across the reload "
                     "follows the new configuration");
    free(got);

    json_t *s = pb_t_stats(&d);
    cr_expect_eq(stat_at(s, "reloads", NULL), 1);
    cr_expect_eq(stat_at(s, "generation", NULL), 2);
    cr_expect_eq(stat_at(s, "failed_reloads", NULL), 0);
    json_decref(s);
    close(held);
    pb_daemon_stop_clean(&d);
}

Test(operations, broken_reload_changes_nothing_but_a_log_line_and_a_counter)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", LISTENER_APP, "kept answer"));
    int held = pb_dial(&d, 0);
    char *got = search(&d, held, "morpheus");
    free(got);

    pb_daemon_write_config(&d, CONF("2", LISTENER_APP, "never seen")
                               "limits = { max_connectionz = 5; };\n");
    pb_daemon_signal(&d, SIGHUP);
    for (int i = 0; i < 1000; i++) {
        json_t *s = pb_t_stats(&d);
        long long failed = stat_at(s, "failed_reloads", NULL);
        json_decref(s);
        if (failed == 1)
            break;
        sleep_ms(20);
    }
    json_t *s = pb_t_stats(&d);
    cr_expect_eq(stat_at(s, "failed_reloads", NULL), 1);
    cr_expect_eq(stat_at(s, "reloads", NULL), 0);
    json_decref(s);

    got = search(&d, held, "morpheus");
    cr_expect_str_eq(got, "kept answer");
    free(got);
    got = search_new(&d, 0, "morpheus");
    cr_expect_str_eq(got, "kept answer");
    free(got);

    char *log = pb_daemon_log(&d);
    cr_expect(strstr(log, "unknown key \"max_connectionz\"") != NULL,
              "the log names the mistake: %s", log);
    cr_expect(strstr(log, "reload failed") != NULL, "%s", log);
    free(log);
    close(held);
    pb_daemon_stop_clean(&d);
}

Test(operations, reload_adding_a_listener_keeps_connections_and_port)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", LISTENER_APP, "first"));
    int held = pb_dial(&d, 0);
    free(search(&d, held, "morpheus"));
    pid_t before[8];
    cr_expect_eq(pb_daemon_wait_workers(&d, before, 8, 2), 2);

    pb_daemon_write_config(&d, CONF("2", LISTENER_APP LISTENER_EXTRA, "second"));
    pb_daemon_signal(&d, SIGHUP);
    int extra = -1;
    for (int i = 0; i < 1000 && extra < 0; i++) {
        extra = pb_connect_tcp("127.0.0.1", d.port[1]);
        if (extra < 0)
            sleep_ms(20);
    }
    pb_check(&d, extra >= 0, "the new listener never accepted");
    char *got = search(&d, extra, "morpheus");
    cr_expect_str_eq(got, "second");
    free(got);
    /* The retiring worker that holds the connection reloads on its own
     * signal: its answers change over once it has. */
    int followed = 0;
    for (int i = 0; i < 1000 && !followed; i++) {
        got = search(&d, held, "morpheus");
        followed = strcmp(got, "second") == 0;
        free(got);
        if (!followed)
            sleep_ms(10);
    }
    cr_expect(followed, "the held connection survived the hand-over to new "
              "workers and follows the new routes");
    got = search_new(&d, 0, "morpheus");
    cr_expect_str_eq(got, "second");
    free(got);
    close(extra);
    close(held);
    pb_daemon_stop_clean(&d);
}

Test(operations, reloads_under_load_lose_no_request)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", LISTENER_APP, "under load"));
    char port[16];
    snprintf(port, sizeof port, "%d", d.port[0]);
    pid_t bench = fork();
    cr_assert_geq(bench, 0);
    if (bench == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDOUT_FILENO);
        /* Kind json: every reply must equal the first one. */
        execl(PB_TEST_BUILDDIR "/tools/plugboard-bench", "plugboard-bench", "-q",
              "-c", "8", "-P", "4", "-d", "3", "-k", "json", "--content",
              "{\"action\": \"search\", \"value\": \"morpheus\"}",
              "127.0.0.1", port, (char *)NULL);
        _exit(127);
    }
    sleep_ms(500);
    pb_daemon_signal(&d, SIGHUP);
    sleep_ms(500);
    pb_daemon_write_config(&d, CONF("3", LISTENER_APP, "under load"));
    pb_daemon_signal(&d, SIGHUP);
    sleep_ms(500);
    pb_daemon_write_config(&d, CONF("2", LISTENER_APP, "under load")
                               "broken = 1;\n");
    pb_daemon_signal(&d, SIGHUP);
    int status;
    cr_assert_eq(waitpid(bench, &status, 0), bench);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "plugboard-bench saw failed requests across three reloads "
              "(status %d)", status);
    pb_daemon_stop_clean(&d);
}

Test(operations, sigterm_answers_everything_already_received)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1", LISTENER_APP, "in flight"));
    int fd = pb_dial(&d, 0);
    static const char content[] = "{\"action\": \"search\", \"value\": \"morpheus\"}";
    pb_buf many = PB_BUF_INIT;
    for (int i = 0; i < 300; i++)
        pb_t_frame(&many, "text/json", "utf-8", content, sizeof content - 1);
    pb_t_send(&d, fd, pb_buf_head(&many), pb_buf_used(&many));
    pb_buf_free(&many);
    /* The first reply proves the requests were received. */
    pb_t_reply r;
    pb_t_recv_frame(&d, fd, &r);
    pb_t_reply_free(&r);
    pb_daemon_signal(&d, SIGTERM);

    for (int i = 1; i < 300; i++) {
        pb_t_recv_frame(&d, fd, &r);
        cr_assert(strstr((const char *)r.content, "in flight") != NULL,
                  "reply %d of 300 is not the answer", i + 1);
        pb_t_reply_free(&r);
    }
    pb_t_expect_error(&d, fd, "shutting_down");
    pb_t_expect_eof(&d, fd);
    close(fd);
    pb_daemon_wait_clean(&d);
}

Test(operations, idle_connection_gets_shutting_down)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("1", LISTENER_APP, "x"));
    int fd = pb_dial(&d, 0);
    free(search(&d, fd, "morpheus"));
    pb_daemon_signal(&d, SIGTERM);
    pb_t_expect_error(&d, fd, "shutting_down");
    pb_t_expect_eof(&d, fd);
    close(fd);
    pb_daemon_wait_clean(&d);
}

Test(operations, crashed_worker_is_replaced_and_service_goes_on)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", LISTENER_APP, "still here"));
    pid_t before[8];
    cr_assert_eq(pb_daemon_wait_workers(&d, before, 8, 2), 2);
    cr_assert_eq(kill(before[0], SIGSEGV), 0);

    char *got = search_new(&d, 0, "morpheus");
    cr_expect_str_eq(got, "still here");
    free(got);

    pid_t after[8];
    int n = 0, replaced = 0;
    for (int i = 0; i < 1000 && !replaced; i++) {
        n = pb_daemon_workers(&d, after, 8);
        replaced = n == 2 && after[0] != before[0] && after[1] != before[0];
        if (!replaced)
            sleep_ms(10);
    }
    cr_expect(replaced, "a new worker replaced the crashed one");
    for (int i = 0; i < 20; i++) {
        got = search_new(&d, 0, "morpheus");
        cr_expect_str_eq(got, "still here");
        free(got);
    }
    json_t *s = pb_t_stats(&d);
    cr_expect_eq(stat_at(s, "worker_restarts", NULL), 1);
    cr_expect_eq(stat_at(s, "workers", NULL), 2);
    json_decref(s);
    char *log = pb_daemon_log(&d);
    cr_expect(strstr(log, "killed by signal 11") != NULL, "%s", log);
    free(log);
    pb_daemon_stop_clean(&d);
}

Test(operations, statistics_count_a_known_sequence)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", LISTENER_APP, "counted"));
    /* Counted from here: the start-up probes connected too, and a worker
     * still creating its plugins accepts its share of them late. Each
     * snapshot is one more accepted connection; wait for no other. */
    json_t *s0 = pb_t_stats(&d);
    for (int i = 0; i < 200; i++) {
        sleep_ms(20);
        json_t *next = pb_t_stats(&d);
        int settled = stat_at(next, "connections", "accepted") ==
                      stat_at(s0, "connections", "accepted") + 1;
        json_decref(s0);
        s0 = next;
        if (settled)
            break;
    }
    for (int i = 0; i < 3; i++)
        free(search_new(&d, 0, "morpheus"));

    int fd = pb_dial(&d, 0);
    pb_buf frame = PB_BUF_INIT;
    pb_t_frame(&frame, "text/json", "utf-8", "{nope", 5);
    pb_t_frame(&frame, "image/png", "binary", "\x89PNG", 4);
    pb_t_frame(&frame, "text/plain", "utf-8", "hello", 5);
    pb_t_send(&d, fd, pb_buf_head(&frame), pb_buf_used(&frame));
    pb_buf_free(&frame);
    pb_t_expect_error(&d, fd, "bad_json");
    pb_t_expect_error(&d, fd, "no_route");
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "hello", 5);
    close(fd);

    json_t *s = pb_t_stats(&d);
#define DELTA(a, b) (stat_at(s, a, b) - stat_at(s0, a, b))
    /* 3 searches, 3 on the shared connection, and this stats request. */
    cr_expect_eq(DELTA("messages", NULL), 7);
    cr_expect_eq(DELTA("errors", "bad_json"), 1);
    cr_expect_eq(DELTA("errors", "no_route"), 1);
    cr_expect_eq(DELTA("errors", "bad_frame"), 0);
    cr_expect_eq(DELTA("connections", "accepted"), 5);
    cr_expect_eq(DELTA("connections", "refused"), 0);
    json_t *search_stats = json_object_get(json_object_get(s, "plugins"), "search");
    cr_expect_eq(json_integer_value(json_object_get(search_stats, "messages")), 3);
    cr_expect_eq(json_integer_value(json_object_get(search_stats, "errors")), 0);
    json_t *echo_route = json_object_get(json_object_get(s, "routes"),
                                         "3: text/plain -> echo");
    cr_expect_eq(json_integer_value(json_object_get(echo_route, "messages")), 1);
    cr_expect_gt(DELTA("bytes", "in"), 0);
    cr_expect_gt(DELTA("bytes", "out"), 0);
#undef DELTA
    json_decref(s0);
    json_decref(s);

    /* Closed connections leave the open count once the daemon has seen
     * the close; only the stats request's own connection stays. */
    long long open = -1;
    for (int i = 0; i < 1000 && open != 1; i++) {
        s = pb_t_stats(&d);
        open = stat_at(s, "connections", "open");
        json_decref(s);
        if (open != 1)
            sleep_ms(10);
    }
    cr_expect_eq(open, 1);
    pb_daemon_stop_clean(&d);
}

/* Runs `plugboard -c CONFIG` (detaching); its exit status. */
static int start_detached(const pb_daemon *d)
{
    const char *argv[] = { PB_T_DAEMON_BIN, "-c", d->config_path, NULL };
    pb_run_result r;
    pb_run(argv, NULL, NULL, 0, &r);
    int status = r.status;
    pb_run_free(&r);
    return status;
}

static pid_t read_pidfile(const pb_daemon *d)
{
    char path[256];
    snprintf(path, sizeof path, "%s/plugboard.pid", d->dir);
    char *text = pb_t_read_file(path, NULL);
    pid_t pid = text ? (pid_t)atol(text) : 0;
    free(text);
    return pid;
}

Test(operations, detached_daemon_holds_its_pidfile)
{
    pb_daemon d;
    pb_daemon_prepare(&d, CONF("1", LISTENER_APP, "detached"));
    char pidfile[256];
    snprintf(pidfile, sizeof pidfile, "%s/plugboard.pid", d.dir);

    /* A stale pidfile from a crash is taken over. */
    pb_t_write_file(pidfile, "999999\n", 7);
    cr_assert_eq(start_detached(&d), 0, "the detaching start reports success");
    pid_t pid = read_pidfile(&d);
    cr_assert_gt(pid, 0);
    cr_assert_neq(pid, 999999);
    cr_assert_eq(kill(pid, 0), 0, "the pidfile names a live process");
    char *got = search_new(&d, 0, "morpheus");
    cr_expect_str_eq(got, "detached");
    free(got);

    /* A second daemon with the same pidfile refuses to start. */
    pb_daemon twin = d;
    cr_expect_eq(start_detached(&twin), 1);
    cr_expect_eq(read_pidfile(&d), pid);

    cr_assert_eq(kill(pid, SIGTERM), 0);
    int gone = 0;
    for (int i = 0; i < 1500 && !gone; i++) {
        gone = kill(pid, 0) != 0 && access(pidfile, F_OK) != 0;
        if (!gone)
            sleep_ms(10);
    }
    cr_expect(gone, "the daemon exits and removes its pidfile");
}

static int status_ids(pid_t pid, const char *key, long *first)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *text = pb_t_read_file(path, NULL);
    if (text == NULL)
        return -1;
    char *line = strstr(text, key);
    int n = -1;
    if (line != NULL) {
        line += strlen(key);
        char *end;
        *first = strtol(line, &end, 10);
        n = end == line ? 0 : 1;
        if (strcmp(key, "Groups:") == 0) {
            while (*line == ' ' || *line == '\t')
                line++;
            n = *line == '\n' ? 0 : 1;
        }
    }
    free(text);
    return n;
}

Test(operations, workers_drop_to_the_configured_user)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to drop privileges");
    struct passwd *pw = getpwnam("nobody");
    struct group *gr = getgrnam("nogroup");
    if (pw == NULL || gr == NULL)
        cr_skip_test("no nobody:nogroup on this system");
    uid_t uid = pw->pw_uid;
    gid_t gid = gr->gr_gid;

    pb_daemon d;
    pb_daemon_prepare(&d, CONF("2", LISTENER_APP, "unprivileged")
                          "user = \"nobody\"; group = \"nogroup\";\n");
    /* The build tree's plugins must be readable by anyone for this. */
    chmod(d.dir, 0755);
    pb_daemon_launch(&d, CONF("2", LISTENER_APP, "unprivileged")
                         "user = \"nobody\"; group = \"nogroup\";\n");
    char *got = search_new(&d, 0, "morpheus");
    cr_expect_str_eq(got, "unprivileged");
    free(got);

    pid_t pids[8];
    int n = pb_daemon_wait_workers(&d, pids, 8, 2);
    cr_assert_eq(n, 2);
    for (int i = 0; i < n; i++) {
        long real = -1, group = -1, groups = 0;
        /* A worker drops privileges first thing after the fork. */
        for (int t = 0; t < 1000 && real != (long)uid; t++) {
            status_ids(pids[i], "Uid:", &real);
            if (real != (long)uid)
                sleep_ms(10);
        }
        cr_expect_eq(status_ids(pids[i], "Uid:", &real), 1);
        cr_expect_eq(real, (long)uid, "worker %d runs as nobody", (int)pids[i]);
        cr_expect_eq(status_ids(pids[i], "Gid:", &group), 1);
        cr_expect_eq(group, (long)gid, "worker %d runs as nogroup", (int)pids[i]);
        cr_expect_eq(status_ids(pids[i], "Groups:", &groups), 0,
                     "worker %d has no supplementary groups", (int)pids[i]);
    }
    long master_uid = -1;
    status_ids(d.pid, "Uid:", &master_uid);
    cr_expect_eq(master_uid, 0, "the master keeps root to reload");
    pb_daemon_stop_clean(&d);
}

/* Whether the master process is still there and not a zombie. */
static int master_alive(const pb_daemon *d)
{
    int status;
    return waitpid(d->pid, &status, WNOHANG) == 0;
}

Test(operations, user_signals_leave_master_and_workers_serving)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("2", LISTENER_APP, "still here"));
    pid_t before[8];
    cr_assert_eq(pb_daemon_wait_workers(&d, before, 8, 2), 2);

    pb_daemon_signal(&d, SIGUSR1);
    pb_daemon_signal(&d, SIGUSR2);
    for (int i = 0; i < 2; i++) {
        kill(before[i], SIGUSR1);
        kill(before[i], SIGUSR2);
    }
    /* The default action of either signal ends a process at once; give it
     * the time it needs to be seen. */
    sleep_ms(200);
    cr_assert(master_alive(&d), "the master survives SIGUSR1 and SIGUSR2");
    char *got = search_new(&d, 0, "morpheus");
    cr_expect_str_eq(got, "still here");
    free(got);
    pid_t after[8];
    cr_expect_eq(pb_daemon_workers(&d, after, 8), 2);
    for (int i = 0; i < 2; i++)
        cr_expect(after[0] == before[i] || after[1] == before[i],
                  "worker %d was not replaced", (int)before[i]);
    json_t *s = pb_t_stats(&d);
    cr_expect_eq(stat_at(s, "worker_restarts", NULL), 0);
    json_decref(s);
    pb_daemon_stop_clean(&d);
}

Test(operations, reload_that_cannot_start_workers_binds_nothing)
{
    /* 65 workers and 65 more for the new generation do not fit in the
     * worker slots: the reload fails, and must leave no trace. */
    pb_daemon d;
    pb_daemon_start(&d, CONF("65", LISTENER_APP, "kept"));
    pb_daemon_write_config(&d, CONF("65", LISTENER_APP LISTENER_EXTRA, "never"));
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "failed_reloads", 1), 1);

    int extra = pb_connect_tcp("127.0.0.1", d.port[1]);
    cr_expect_lt(extra, 0, "the new listener's port was left bound");
    if (extra >= 0)
        close(extra);
    char *got = search_new(&d, 0, "morpheus");
    cr_expect_str_eq(got, "kept");
    free(got);
    json_t *s = pb_t_stats(&d);
    cr_expect_eq(stat_at(s, "reloads", NULL), 0);
    json_decref(s);
    pb_daemon_stop_clean(&d);
}

#define AS_NOBODY "user = \"nobody\"; group = \"nogroup\";\n"

/* Starts d on template with workers dropping to nobody: the test's
 * directory must then be readable by them. */
static void start_as_nobody(pb_daemon *d, const char *template)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to drop privileges");
    if (getpwnam("nobody") == NULL || getgrnam("nogroup") == NULL)
        cr_skip_test("no nobody:nogroup on this system");
    pb_daemon_prepare(d, template);
    chmod(d->dir, 0755);
    pb_daemon_launch(d, template);
}

Test(operations, reload_reaches_every_worker_even_when_they_cannot_read_the_file)
{
    pb_daemon d;
    start_as_nobody(&d, CONF("2", LISTENER_APP, "before") AS_NOBODY);
    chmod(d.config_path, 0600);
    int held[6];
    for (int i = 0; i < 6; i++) {
        held[i] = pb_dial(&d, 0);
        char *got = search(&d, held[i], "morpheus");
        cr_expect_str_eq(got, "before");
        free(got);
    }

    pb_daemon_write_config(&d, CONF("2", LISTENER_APP, "after") AS_NOBODY);
    chmod(d.config_path, 0600);
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 1), 1);

    /* Reported done means done: every worker, for every connection. */
    for (int i = 0; i < 6; i++) {
        char *got = search(&d, held[i], "morpheus");
        cr_expect_str_eq(got, "after", "held connection %d", i);
        free(got);
        close(held[i]);
    }
    for (int i = 0; i < 6; i++) {
        char *got = search_new(&d, 0, "morpheus");
        cr_expect_str_eq(got, "after", "new connection %d", i);
        free(got);
    }
    char *log = pb_daemon_log(&d);
    cr_expect(strstr(log, "configuration reloaded") != NULL, "%s", log);
    free(log);
    pb_daemon_stop_clean(&d);
}

#define PLUGINS_DATA_FILE \
    "plugins = (\n" \
    "  { name = \"search\"; module = \"search\"; settings = { data_file = \"secret.json\"; }; },\n" \
    "  { name = \"stats\"; module = \"stats\"; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"search\"; }\n" \
    ");\n"

/* Plugin code runs as the user, never as root: a data file only root can
 * read fails the check of the reload, which then changes nothing. */
Test(operations, reload_fails_when_the_user_cannot_read_a_data_file)
{
    pb_daemon d;
    start_as_nobody(&d, CONF("2", LISTENER_APP, "before") AS_NOBODY);
    int held = pb_dial(&d, 0);
    free(search(&d, held, "morpheus"));

    char path[256];
    snprintf(path, sizeof path, "%s/secret.json", d.dir);
    static const char data[] = "{\"morpheus\": \"after\"}";
    pb_t_write_file(path, data, sizeof data - 1);
    chmod(path, 0600);
    pb_daemon_write_config(&d, PB_T_CONF_HEAD "workers = 2;\n"
                               "listeners = (\n" LISTENER_APP ");\n"
                               PLUGINS_DATA_FILE AS_NOBODY);
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "failed_reloads", 1), 1);

    char *got = search(&d, held, "morpheus");
    cr_expect_str_eq(got, "before");
    free(got);
    got = search_new(&d, 0, "morpheus");
    cr_expect_str_eq(got, "before");
    free(got);
    char *log = pb_daemon_log(&d);
    cr_expect(strstr(log, "secret.json") != NULL, "%s", log);
    free(log);
    close(held);
    pb_daemon_stop_clean(&d);
}

/* Whether process pid has a descriptor open on path. */
static int holds(pid_t pid, const char *path)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    DIR *fds = opendir(dir);
    cr_assert_not_null(fds, "cannot list %s", dir);
    int found = 0;
    struct dirent *e;
    while ((e = readdir(fds)) != NULL) {
        char link[320], target[512];
        snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        found |= strcmp(target, path) == 0;
    }
    closedir(fds);
    return found;
}

Test(operations, workers_hold_neither_the_pidfile_nor_inherited_descriptors)
{
    pb_daemon d;
    pb_daemon_prepare(&d, CONF("2", LISTENER_APP, "detached"));
    char pidfile[256], stray[256];
    snprintf(pidfile, sizeof pidfile, "%s/plugboard.pid", d.dir);
    snprintf(stray, sizeof stray, "%s/stray", d.dir);
    /* A descriptor the starting program leaves open, as a shell might. */
    int leaked = open(stray, O_RDWR | O_CREAT, 0600);
    cr_assert_geq(leaked, 0);
    int status = start_detached(&d);
    close(leaked);
    cr_assert_eq(status, 0);
    pid_t master = read_pidfile(&d);
    cr_assert_gt(master, 0);
    char *got = search_new(&d, 0, "morpheus");
    cr_expect_str_eq(got, "detached");
    free(got);

    pb_daemon probe = d;
    probe.pid = master;
    pid_t pids[8];
    cr_assert_eq(pb_daemon_wait_workers(&probe, pids, 8, 2), 2);
    cr_expect(holds(master, pidfile), "the master holds its pidfile");
    cr_expect(!holds(master, stray), "the master closed what it inherited");
    for (int i = 0; i < 2; i++) {
        /* Its event loop exists once the worker has set itself up. */
        for (int t = 0; t < 1000 && !holds(pids[i], "anon_inode:[eventpoll]"); t++)
            sleep_ms(10);
        cr_expect(!holds(pids[i], pidfile), "worker %d holds the pidfile", (int)pids[i]);
        cr_expect(!holds(pids[i], stray), "worker %d holds an inherited descriptor",
                  (int)pids[i]);
    }
    cr_assert_eq(kill(master, SIGTERM), 0);
    int gone = 0;
    for (int i = 0; i < 1500 && !gone; i++) {
        gone = kill(master, 0) != 0;
        if (!gone)
            sleep_ms(10);
    }
    cr_expect(gone, "the daemon stops");
}

Test(operations, workers_running_as_another_user_die_with_the_master)
{
    pb_daemon d;
    start_as_nobody(&d, CONF("2", LISTENER_APP, "orphans") AS_NOBODY);
    pid_t pids[8];
    cr_assert_eq(pb_daemon_wait_workers(&d, pids, 8, 2), 2);
    char *got = search_new(&d, 0, "morpheus");
    cr_expect_str_eq(got, "orphans");
    free(got);

    cr_assert_eq(kill(d.pid, SIGKILL), 0);
    pb_daemon_wait(&d);
    int left = 2;
    for (int i = 0; i < 1000 && left > 0; i++) {
        left = 0;
        for (int w = 0; w < 2; w++)
            left += kill(pids[w], 0) == 0;
        if (left > 0)
            sleep_ms(10);
    }
    for (int w = 0; w < 2; w++)
        kill(pids[w], SIGKILL);
    cr_expect_eq(left, 0, "%d workers outlived their master", left);
}

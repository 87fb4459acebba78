/*
 * test_lifecycle.c - where plugin code runs and which code it is: create(),
 * handle() and destroy() never run in the master (nor as root when `user`
 * is set), `plugboard -t` creates instances in a child as the configured
 * user, a create() that crashes fails -t, start and a reload (which then
 * changes nothing), a worker that cannot create its instances on a
 * reload is replaced, and a module rebuilt and installed over the old
 * file is the code that answers after a reload.
 */
#include <criterion/criterion.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(lifecycle, .init = pb_harness_init, .fini = pb_harness_cleanup,
          .timeout = 120);

#define FIXTURES PB_TEST_BUILDDIR "/tests/fixtures/.libs"

/* Every message but a stats request goes to the instance "traced". */
#define CONF(extra, plugins) \
    PB_T_CONF_HEAD "workers = 2;\n" extra \
    "listeners = ({ name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; });\n" \
    "plugins = (\n" \
    "  { name = \"stats\"; module = \"stats\"; },\n" \
    plugins \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { plugin = \"traced\"; }\n" \
    ");\n"

#define TRACED(answer) \
    "  { name = \"traced\"; module = \"" FIXTURES "/trace.so\";\n" \
    "    settings = { file = \"@DIR@/trace\"; answer = \"" answer "\"; }; }\n"

#define EXCLUSIVE(answer) \
    "  { name = \"traced\"; module = \"" FIXTURES "/trace.so\";\n" \
    "    settings = { file = \"@DIR@/trace\"; answer = \"" answer "\";\n" \
    "                 exclusive = true; }; }\n"

#define CRASHER \
    "  ,{ name = \"crasher\"; module = \"" FIXTURES "/trace.so\";\n" \
    "     settings = { crash = true; }; }\n"

#define VERSIONED \
    "  { name = \"traced\"; module = \"@DIR@/mine.so\"; }\n"

#define AS_NOBODY "user = \"nobody\";\n"

/* Sends a message over fd and expects answer back. */
static void expect_answer(const pb_daemon *d, int fd, const char *answer)
{
    pb_t_send_frame(d, fd, "text/plain", "utf-8", "hi", 2);
    pb_t_expect_reply(d, fd, "text/plain", "utf-8", answer, strlen(answer));
}

static void expect_answer_new(const pb_daemon *d, const char *answer)
{
    int fd = pb_dial(d, 0);
    expect_answer(d, fd, answer);
    close(fd);
}

static void reload(pb_daemon *d, const char *config_template, const char *counter)
{
    pb_daemon_write_config(d, config_template);
    pb_daemon_signal(d, SIGHUP);
    pb_check(d, pb_t_wait_stat(d, counter, 1) == 1, "%s never reached 1", counter);
}

/* The uid of nobody; skips the test unless it can run workers as nobody. */
static uid_t nobody_or_skip(void)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to drop privileges");
    struct passwd *pw = getpwnam("nobody");
    if (pw == NULL)
        cr_skip_test("no user nobody on this system");
    return pw->pw_uid;
}

/* Lets nobody into the test's directory and write the trace. */
static void open_to_nobody(const pb_daemon *d)
{
    char path[256];
    snprintf(path, sizeof path, "%s/trace", d->dir);
    pb_t_write_file(path, "", 0);
    pb_check(d, chmod(path, 0666) == 0 && chmod(d->dir, 0755) == 0,
             "cannot open %s to nobody", d->dir);
}

typedef struct calls {
    int create, handle, destroy;
} calls;

/* Reads the trace: no call ran in process `forbidden` nor, when uid is not
 * -1, as another user than uid. */
static calls read_trace(const pb_daemon *d, pid_t forbidden, uid_t uid)
{
    char path[256];
    snprintf(path, sizeof path, "%s/trace", d->dir);
    char *text = pb_t_read_file(path, NULL);
    pb_check(d, text != NULL, "no trace at %s: no plugin code ran", path);
    calls n = { 0, 0, 0 };
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char call[16];
        long pid, who;
        pb_check(d, sscanf(line, "%15s %ld %ld", call, &pid, &who) == 3,
                 "bad trace line \"%s\"", line);
        pb_check(d, pid != (long)forbidden, "%s ran in process %ld, which "
                 "must run no plugin code:\n%s", call, pid, text);
        pb_check(d, uid == (uid_t)-1 || who == (long)uid,
                 "%s ran as uid %ld, wanted %ld:\n%s", call, who, (long)uid, text);
        n.create += strcmp(call, "create") == 0;
        n.handle += strcmp(call, "handle") == 0;
        n.destroy += strcmp(call, "destroy") == 0;
    }
    free(text);
    return n;
}

/* Start (already done), a request, a reload to `after`, requests on the
 * held and a new connection, a stop: none of it runs plugin code in the
 * master, nor as another user than uid (unless -1). */
static void serve_reload_stop(pb_daemon *d, const char *after, uid_t uid)
{
    pid_t master = d->pid;
    int held = pb_dial(d, 0);
    expect_answer(d, held, "before");
    reload(d, after, "reloads");
    expect_answer(d, held, "after");
    expect_answer_new(d, "after");
    close(held);
    pb_daemon_stop_clean(d);

    /* At start and on the reload: a check child and both workers. */
    calls n = read_trace(d, master, uid);
    cr_expect_eq(n.create, 6);
    cr_expect_eq(n.handle, 3);
    cr_expect_eq(n.destroy, 6);
}

Test(lifecycle, plugin_code_never_runs_in_the_master)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", TRACED("before")));
    serve_reload_stop(&d, CONF("", TRACED("after")), (uid_t)-1);
}

Test(lifecycle, plugin_code_never_runs_as_root_when_a_user_is_set)
{
    uid_t nobody = nobody_or_skip();
    pb_daemon d;
    pb_daemon_prepare(&d, CONF(AS_NOBODY, TRACED("before")));
    open_to_nobody(&d);
    pb_daemon_launch(&d, CONF(AS_NOBODY, TRACED("before")));
    serve_reload_stop(&d, CONF(AS_NOBODY, TRACED("after")), nobody);
}

Test(lifecycle, test_creates_instances_in_a_child_as_the_user)
{
    uid_t nobody = nobody_or_skip();
    pb_daemon d;
    pb_daemon_prepare(&d, CONF(AS_NOBODY, TRACED("before")));
    open_to_nobody(&d);
    const char *argv[] = { PB_T_DAEMON_BIN, "-t", "-c", d.config_path, NULL };
    pb_run_result r;
    pb_run(argv, NULL, NULL, 0, &r);
    pb_check(&d, r.status == 0 && strstr(r.out, "configuration OK"),
             "plugboard -t exited %d:\n%s", r.status, r.err);
    /* What -t says is the verdict alone, as scripts read it. */
    cr_expect_eq(r.err_len, 0, "plugboard -t wrote on stderr: %s", r.err);
    calls n = read_trace(&d, r.pid, nobody);
    cr_expect_eq(n.create, 1);
    cr_expect_eq(n.destroy, 1);
    cr_expect_eq(n.handle, 0);
    pb_run_free(&r);
}

/* "CONFIG:LINE: plugin crasher: create() crashed (killed by signal 11",
 * LINE being where the crasher's entry starts. */
static void expect_crash_named(const pb_daemon *d, const char *output)
{
    char *config = pb_t_read_file(d->config_path, NULL);
    const char *entry = strstr(config, "name = \"crasher\"");
    pb_check(d, entry != NULL, "no crasher in the config");
    int line = 1;
    for (const char *p = config; p < entry; p++)
        line += *p == '\n';
    free(config);
    char want[512];
    snprintf(want, sizeof want, "%s:%d: plugin crasher: create() crashed "
             "(killed by signal %d", d->config_path, line, SIGSEGV);
    pb_check(d, strstr(output, want) != NULL, "wanted \"%s\" in:\n%s", want,
             output);
}

/* plugboard FLAG on a configuration whose create() crashes: exit 78,
 * naming the instance. */
static void expect_crash_refused(const char *flag)
{
    pb_daemon d;
    pb_daemon_prepare(&d, CONF("", TRACED("before") CRASHER));
    const char *argv[] = { PB_T_DAEMON_BIN, flag, "-c", d.config_path, NULL };
    pb_run_result r;
    pb_run(argv, NULL, NULL, 0, &r);
    pb_check(&d, r.status == 78, "plugboard %s exited %d, wanted 78 "
             "(EX_CONFIG):\n%s", flag, r.status, r.err);
    expect_crash_named(&d, r.err);
    pb_check(&d, strstr(r.out, "configuration OK") == NULL,
             "a crashing configuration reported OK");
    pb_run_free(&r);
}

Test(lifecycle, test_reports_a_create_that_crashes)
{
    expect_crash_refused("-t");
}

Test(lifecycle, start_refuses_a_create_that_crashes)
{
    expect_crash_refused("-f");
}

Test(lifecycle, reload_to_a_create_that_crashes_changes_nothing)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", TRACED("before")));
    int held = pb_dial(&d, 0);
    expect_answer(&d, held, "before");

    reload(&d, CONF("", TRACED("after") CRASHER), "failed_reloads");
    pb_check(&d, waitpid(d.pid, NULL, WNOHANG) == 0, "the master died");
    expect_answer(&d, held, "before");
    expect_answer_new(&d, "before");
    json_t *s = pb_t_stats(&d);
    cr_expect_eq(json_integer_value(json_object_get(s, "reloads")), 0);
    cr_expect_eq(json_integer_value(json_object_get(s, "worker_restarts")), 0);
    json_decref(s);
    close(held);
    char *log = pb_daemon_log(&d);
    expect_crash_named(&d, log);
    free(log);
    pb_daemon_stop_clean(&d);
}

/* A plugin that cannot live twice in one process passes the check (a
 * child that holds no old instance), but no worker can create its new
 * instance beside the old one: each is replaced by a new worker, which
 * creates its instances from scratch, and keeps the connections it holds
 * until they close. */
Test(lifecycle, reload_replaces_a_worker_that_cannot_create_its_instances)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", EXCLUSIVE("before")));
    int held = pb_dial(&d, 0);
    expect_answer(&d, held, "before");

    reload(&d, CONF("", EXCLUSIVE("after")), "reloads");
    for (int i = 0; i < 6; i++)
        expect_answer_new(&d, "after");
    expect_answer(&d, held, "before");
    close(held);
    char *log = pb_daemon_log(&d);
    cr_expect(strstr(log, "another exclusive instance lives here") != NULL &&
              strstr(log, "does not serve the new configuration") != NULL,
              "%s", log);
    free(log);
    pb_daemon_stop_clean(&d);
}

/* Copies a fixture build to path, as an installer would. */
static void install(const pb_daemon *d, const char *build, const char *path)
{
    char from[256];
    size_t len;
    snprintf(from, sizeof from, FIXTURES "/%s.so", build);
    char *bytes = pb_t_read_file(from, &len);
    pb_check(d, bytes != NULL, "cannot read %s", from);
    pb_t_write_file(path, bytes, len);
    free(bytes);
    pb_check(d, chmod(path, 0755) == 0, "chmod %s", path);
}

Test(lifecycle, reload_runs_a_module_installed_over_the_old_one)
{
    pb_daemon d;
    pb_daemon_prepare(&d, CONF("", VERSIONED));
    char module[256], staged[256];
    snprintf(module, sizeof module, "%s/mine.so", d.dir);
    snprintf(staged, sizeof staged, "%s/mine.so.new", d.dir);
    install(&d, "version1", module);
    pb_daemon_launch(&d, CONF("", VERSIONED));
    int held = pb_dial(&d, 0);
    expect_answer(&d, held, "v1");

    install(&d, "version2", staged);
    pb_check(&d, rename(staged, module) == 0, "cannot rename %s", staged);
    pb_daemon_signal(&d, SIGHUP);
    pb_check(&d, pb_t_wait_stat(&d, "reloads", 1) == 1, "the reload never completed");
    expect_answer(&d, held, "v2");
    expect_answer_new(&d, "v2");
    close(held);
    pb_daemon_stop_clean(&d);
}

/*
 * test_plugin_perms.c - the daemon, as root, refuses modules that anyone
 * but root could change (through the file or any directory above it), on
 * `plugboard -t` and at start, with FILE:LINE and the offending path; a
 * module in a sticky directory of root's, or reached through a symlink
 * that lies elsewhere, is accepted.
 */

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

TestSuite(plugin_perms, .init = pb_harness_init, .fini = pb_harness_cleanup,
          .timeout = 180);

#define NOBODY 65534

/* Lines 3, 4 and 5 name a module in a tree the test builds under @DIR@. */
#define PERMS_CONF(echo, first10, upper) \
    "pidfile = \"@DIR@/plugboard.pid\";\n" \
    "log = { level = \"info\"; target = \"stderr\"; };\n" \
    "plugins = ({ name = \"echo\"; module = \"@DIR@/" echo "\"; },\n" \
    "           { name = \"first10\"; module = \"@DIR@/" first10 "\"; },\n" \
    "           { name = \"upper\"; module = \"@DIR@/" upper "\"; });\n" \
    "routes = ({ plugin = \"echo\"; });\n" \
    "listeners = ({ address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; });\n"

static void skip_unless_root(void)
{
    if (geteuid() != 0)
        cr_skip_test("the permission checks apply when running as root");
}

static void make_dir(const pb_daemon *d, const char *rel, uid_t owner, mode_t mode)
{
    char path[256];

    snprintf(path, sizeof path, "%s/%s", d->dir, rel);
    pb_check(d, mkdir(path, 0700) == 0 && chown(path, owner, 0) == 0 &&
             chmod(path, mode) == 0, "cannot make %s", path);
}

/* A copy of the shipped module, owned by owner, at d->dir/rel. */
static void copy_module(const pb_daemon *d, const char *module, const char *rel,
                        uid_t owner)
{
    char path[256], cmd[700];

    snprintf(path, sizeof path, "%s/%s", d->dir, rel);
    snprintf(cmd, sizeof cmd, "cp '%s/%s.so' '%s'", PB_TEST_PLUGIN_DIR, module, path);
    pb_check(d, system(cmd) == 0 && chown(path, owner, 0) == 0 &&
             chmod(path, 0755) == 0, "cannot install %s", path);
}

/* Three modules that someone else could change: one owned by nobody, one
 * in a directory owned by nobody, one below a group-writable directory. */
static void prepare_unsafe(pb_daemon *d)
{
    pb_daemon_prepare(d, PERMS_CONF("echo.so", "theirs/first10.so",
                                    "opt/lib/uppercase.so"));
    copy_module(d, "echo", "echo.so", NOBODY);
    make_dir(d, "theirs", NOBODY, 0755);
    copy_module(d, "first10", "theirs/first10.so", 0);
    make_dir(d, "opt", 0, 0775);
    make_dir(d, "opt/lib", 0, 0755);
    copy_module(d, "uppercase", "opt/lib/uppercase.so", 0);
}

/* Each of lines 3-5 reported as FILE:LINE with its offending path. */
static void expect_refusals(const pb_daemon *d, const char *output)
{
    static const struct { int line; const char *path; const char *why; } want[] = {
        { 3, "echo.so", "is owned by uid 65534" },
        { 4, "theirs", "is owned by uid 65534" },
        { 5, "opt", "is writable by its group" },
    };

    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char at[256], offender[256];

        snprintf(at, sizeof at, "%s:%d: ", d->config_path, want[i].line);
        snprintf(offender, sizeof offender, " %s/%s %s", d->dir, want[i].path,
                 want[i].why);
        const char *line = strstr(output, at);
        const char *end = line ? strchr(line, '\n') : NULL;
        pb_check(d, end != NULL && memmem(line, (size_t)(end - line), offender,
                                          strlen(offender)) != NULL,
                 "wanted a line starting \"%s\" naming \"%s\" in:\n%s", at,
                 offender, output);
    }
}

/* Runs plugboard with flag on the unsafe modules: exit 78, every refusal
 * reported. */
static void expect_unsafe_refused(const char *flag)
{
    pb_daemon d;
    pb_run_result r;

    skip_unless_root();
    prepare_unsafe(&d);
    const char *argv[] = { PB_T_DAEMON_BIN, flag, "-c", d.config_path, NULL };
    pb_run(argv, NULL, NULL, 0, &r);
    pb_check(&d, r.status == 78, "plugboard %s exited %d, wanted 78 (EX_CONFIG):\n%s",
             flag, r.status, r.err);
    expect_refusals(&d, r.err);
    pb_run_free(&r);
}

Test(plugin_perms, test_names_each_unsafe_module)
{
    expect_unsafe_refused("-t");
}

Test(plugin_perms, start_refuses_unsafe_modules)
{
    expect_unsafe_refused("-f");
}

/* A sticky directory of root's, like /tmp, and a link from a directory
 * anyone may write to a module that only root can change. */
Test(plugin_perms, sticky_directory_and_symlink_accepted)
{
    pb_daemon d;
    pb_run_result r;
    char target[256], link[256];

    skip_unless_root();
    pb_daemon_prepare(&d, PERMS_CONF("tmp/echo.so", "lib/first10.so",
                                     "links/uppercase.so"));
    make_dir(&d, "tmp", 0, 01777);
    copy_module(&d, "echo", "tmp/echo.so", 0);
    make_dir(&d, "lib", 0, 0755);
    copy_module(&d, "first10", "lib/first10.so", 0);
    copy_module(&d, "uppercase", "lib/uppercase.so", 0);
    make_dir(&d, "links", NOBODY, 0777);
    snprintf(target, sizeof target, "%s/lib/uppercase.so", d.dir);
    snprintf(link, sizeof link, "%s/links/uppercase.so", d.dir);
    pb_check(&d, symlink(target, link) == 0, "cannot link %s", link);

    const char *argv[] = { PB_T_DAEMON_BIN, "-t", "-c", d.config_path, NULL };
    pb_run(argv, NULL, NULL, 0, &r);
    pb_check(&d, r.status == 0 && strstr(r.out, "configuration OK"),
             "plugboard -t exited %d:\n%s", r.status, r.err);
    pb_run_free(&r);
}

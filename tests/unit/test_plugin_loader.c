/*
 * test_plugin_loader.c - loading modules: the shipped plugins load and
 * answer; a module installed over a loaded one loads afresh; a missing
 * file, a non-plugin, another ABI, settings given to a module that takes
 * none, and (as root) a module that anyone but root could change, through
 * the file or any directory above it, are each refused with a message
 * naming the config line and the offending path.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "frame.h"
#include "plugin_loader.h"

#define FIXTURES PB_TEST_BUILDDIR "/tests/fixtures/.libs"

static pb_plugin_conf conf_for(const char *name, const char *module,
                               const char *path)
{
    pb_plugin_conf conf = {
        .name = (char *)name,
        .module = (char *)module,
        .path = (char *)path,
        .settings = json_object(),
        .pos = { "test.conf", 7 },
    };
    return conf;
}

static char *joined(const pb_diag *diag)
{
    size_t len = 1;
    for (size_t i = 0; i < diag->count; i++)
        len += strlen(diag->lines[i]) + 1;
    char *all = calloc(1, len);
    for (size_t i = 0; i < diag->count; i++) {
        strcat(all, diag->lines[i]);
        strcat(all, "\n");
    }
    return all;
}

static void expect_refused(pb_plugin_conf *conf, const char *fragment)
{
    pb_diag diag = PB_DIAG_INIT;
    pb_instance *instance = pb_instance_create(conf, "/tmp", &diag);
    cr_assert_null(instance);
    cr_assert_geq(diag.count, 1);
    char *all = joined(&diag);
    cr_expect(strstr(all, "test.conf:7: plugin ") == all,
              "diagnostic should start with the entry's FILE:LINE: %s", all);
    cr_expect(strstr(all, fragment) != NULL, "expected \"%s\" in: %s",
              fragment, all);
    free(all);
    pb_diag_free(&diag);
    json_decref(conf->settings);
}

/* What instance answers to the line content, without its \n, in buf. */
static const char *answer_of(pb_instance *instance, const char *content,
                             char *buf, size_t cap)
{
    pb_buf out = PB_BUF_INIT;
    char error[256];
    pb_request request = {
        .size = sizeof request,
        .host = &pb_host_services, .instance = instance,
        .content_type = "text/plain", .content_encoding = "utf-8",
        .content = (const unsigned char *)content, .content_length = strlen(content),
        .listener = "test", .framing = PB_FRAMING_LINE,
    };
    cr_assert_eq(pb_instance_call(instance, &request, &out, error, sizeof error),
                 PB_OK, "%s", error);
    cr_assert(pb_buf_used(&out) > 0 && pb_buf_used(&out) <= cap);
    cr_assert_eq(pb_buf_head(&out)[pb_buf_used(&out) - 1], '\n');
    memcpy(buf, pb_buf_head(&out), pb_buf_used(&out) - 1);
    buf[pb_buf_used(&out) - 1] = '\0';
    pb_buf_free(&out);
    return buf;
}

Test(plugin_loader, shipped_echo_loads_and_answers)
{
    pb_plugin_conf conf = conf_for("e", "echo", PB_TEST_PLUGIN_DIR "/echo.so");
    pb_diag diag = PB_DIAG_INIT;
    pb_instance *instance = pb_instance_create(&conf, "/tmp", &diag);
    cr_assert_not_null(instance, "%s", diag.count ? diag.lines[0] : "");
    cr_assert_eq(instance->module.abi_version, PLUGBOARD_ABI_VERSION);
    cr_assert_str_eq(instance->name, "e");

    char got[16];
    cr_assert_str_eq(answer_of(instance, "hello", got, sizeof got), "hello");
    pb_instance_destroy(instance);
    json_decref(conf.settings);
}

Test(plugin_loader, two_instances_of_one_module)
{
    pb_plugin_conf a = conf_for("a", "first10", PB_TEST_PLUGIN_DIR "/first10.so");
    pb_plugin_conf b = conf_for("b", "first10", PB_TEST_PLUGIN_DIR "/first10.so");
    pb_diag diag = PB_DIAG_INIT;
    pb_instance *ia = pb_instance_create(&a, "/tmp", &diag);
    pb_instance *ib = pb_instance_create(&b, "/tmp", &diag);
    cr_assert_not_null(ia);
    cr_assert_not_null(ib);
    cr_assert_eq(ia->module.handle, ib->module.handle);
    pb_instance_destroy(ia);
    cr_assert_eq(ib->module.abi_version, PLUGBOARD_ABI_VERSION,
                 "the module must stay loaded while an instance uses it");
    pb_instance_destroy(ib);
    json_decref(a.settings);
    json_decref(b.settings);
}

/* Installs a build of the version fixture at path, as mv would: a new
 * file renamed over the old one. */
static void install_version(const char *build, const char *path)
{
    char staged[300], cmd[700];
    snprintf(staged, sizeof staged, "%s.new", path);
    snprintf(cmd, sizeof cmd, "cp '%s/%s.so' '%s'", FIXTURES, build, staged);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(chmod(staged, 0755), 0);
    cr_assert_eq(rename(staged, path), 0);
}

/* A module installed over the one loaded is the code the next instance
 * runs, while instances of the old one keep theirs; the same file again
 * shares what is loaded. */
Test(plugin_loader, module_installed_over_the_loaded_one_loads_afresh)
{
    char dir[] = "/tmp/pb-version-XXXXXX", path[256], got[16];
    cr_assert_not_null(mkdtemp(dir));
    chmod(dir, 0755);
    snprintf(path, sizeof path, "%s/mine.so", dir);
    install_version("version1", path);
    pb_plugin_conf conf = conf_for("v", "mine", path);
    pb_diag diag = PB_DIAG_INIT;
    pb_instance *first = pb_instance_create(&conf, "/tmp", &diag);
    pb_instance *again = pb_instance_create(&conf, "/tmp", &diag);
    cr_assert(first != NULL && again != NULL, "%s", diag.count ? diag.lines[0] : "");
    cr_expect_eq(first->dl, again->dl, "an unchanged module is loaded once");

    install_version("version2", path);
    pb_instance *second = pb_instance_create(&conf, "/tmp", &diag);
    cr_assert_not_null(second, "%s", diag.count ? diag.lines[0] : "");
    cr_expect_str_eq(answer_of(second, "hi", got, sizeof got), "v2");
    cr_expect_str_eq(answer_of(first, "hi", got, sizeof got), "v1");
    pb_instance_destroy(first);
    pb_instance_destroy(again);
    pb_instance *third = pb_instance_create(&conf, "/tmp", &diag);
    cr_assert_not_null(third);
    cr_expect_str_eq(answer_of(third, "hi", got, sizeof got), "v2");
    cr_expect_eq(third->dl, second->dl);
    pb_instance_destroy(second);
    pb_instance_destroy(third);
    pb_diag_free(&diag);
    json_decref(conf.settings);
    unlink(path);
    rmdir(dir);
}

Test(plugin_loader, missing_module)
{
    pb_plugin_conf conf = conf_for("x", "nosuch", PB_TEST_PLUGIN_DIR "/nosuch.so");
    expect_refused(&conf, "module \"nosuch\" not found");
}

Test(plugin_loader, not_a_plugin)
{
    pb_plugin_conf conf = conf_for("x", FIXTURES "/no_descriptor.so",
                                   FIXTURES "/no_descriptor.so");
    expect_refused(&conf, "is not a Plugboard plugin");
}

Test(plugin_loader, other_abi_names_file_and_both_versions)
{
    pb_plugin_conf conf = conf_for("x", FIXTURES "/wrong_abi.so",
                                   FIXTURES "/wrong_abi.so");
    char expected[512];
    snprintf(expected, sizeof expected,
             "%s: it was built for plugin ABI %d, this daemon loads ABI %d to %d",
             FIXTURES "/wrong_abi.so", PLUGBOARD_ABI_VERSION + 1,
             PLUGBOARD_ABI_OLDEST, PLUGBOARD_ABI_VERSION);
    expect_refused(&conf, expected);
}

Test(plugin_loader, not_a_shared_object)
{
    char dir[] = "/tmp/pb-loader-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    chmod(dir, 0755);
    char path[256];
    snprintf(path, sizeof path, "%s/garbage.so", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("not elf", f);
    fclose(f);
    chmod(path, 0644);
    pb_plugin_conf conf = conf_for("x", path, path);
    expect_refused(&conf, "cannot load");
    unlink(path);
    rmdir(dir);
}

Test(plugin_loader, settings_for_a_module_that_takes_none)
{
    pb_plugin_conf conf = conf_for("e", "echo", PB_TEST_PLUGIN_DIR "/echo.so");
    json_object_set_new(conf.settings, "colour", json_string("red"));
    expect_refused(&conf, "colour");
}

Test(plugin_loader, world_writable_module_refused_as_root)
{
    if (geteuid() != 0)
        cr_skip_test("the permission check applies when running as root");
    char dir[] = "/tmp/pb-perm-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    chmod(dir, 0755);
    char path[256];
    snprintf(path, sizeof path, "%s/echo.so", dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cp '%s/echo.so' '%s'", PB_TEST_PLUGIN_DIR, path);
    cr_assert_eq(system(cmd), 0);
    chmod(path, 0666);
    pb_plugin_conf conf = conf_for("e", "echo", path);
    expect_refused(&conf, "writable by others");

    chmod(path, 0644);
    chmod(dir, 0775);
    conf = conf_for("e", "echo", path);
    expect_refused(&conf, "writable by its group");
    unlink(path);
    rmdir(dir);
}

/* --- As root: who could change the module ---------------------------------- */

#define NOBODY 65534

/* A root-owned 0755 directory under /tmp (root's, sticky) for the test's
 * tree of directories and modules, made by tree_new() before the test and
 * removed by tree_free() after it, passed or failed. */
static char base[64];

static void tree_new(void)
{
    if (geteuid() != 0)
        cr_skip_test("the permission checks apply when running as root");
    strcpy(base, "/tmp/pb-tree-XXXXXX");
    cr_assert_not_null(mkdtemp(base));
    cr_assert_eq(chmod(base, 0755), 0);
}

static void tree_free(void)
{
    if (base[0] == '\0')
        return;
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    cr_expect_eq(system(cmd), 0);
}

/* base/rel, as a directory with this owner and mode. */
static void tree_dir(const char *rel, uid_t owner, mode_t mode)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", base, rel);
    cr_assert_eq(mkdir(path, 0700), 0, "mkdir %s", path);
    cr_assert_eq(chown(path, owner, 0), 0);
    cr_assert_eq(chmod(path, mode), 0);
}

/* base/rel, as a copy of the shipped echo module with this owner; its path
 * into out. */
static void tree_echo(const char *rel, uid_t owner, char *out, size_t cap)
{
    cr_assert_lt(snprintf(out, cap, "%s/%s", base, rel), (int)cap);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cp '%s/echo.so' '%s'", PB_TEST_PLUGIN_DIR, out);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(chown(out, owner, 0), 0);
    cr_assert_eq(chmod(out, 0755), 0);
}

static void expect_loads(const char *path)
{
    pb_plugin_conf conf = conf_for("e", "echo", path);
    pb_diag diag = PB_DIAG_INIT;
    pb_instance *instance = pb_instance_create(&conf, "/tmp", &diag);
    cr_expect_not_null(instance, "%s should load: %s", path,
                       diag.count ? diag.lines[0] : "");
    pb_instance_destroy(instance);
    pb_diag_free(&diag);
    json_decref(conf.settings);
}

/* Refused, the message naming the offending path (in the tree) and why. */
static void expect_refused_for(const char *path, const char *rel,
                               const char *why)
{
    char fragment[512];
    snprintf(fragment, sizeof fragment, "%s/%s %s", base, rel, why);
    pb_plugin_conf conf = conf_for("e", "echo", path);
    expect_refused(&conf, fragment);
}

Test(plugin_loader, module_owned_by_another_user_refused_as_root,
     .init = tree_new, .fini = tree_free)
{
    char module[256];
    tree_echo("echo.so", NOBODY, module, sizeof module);
    expect_refused_for(module, "echo.so", "is owned by uid 65534");
}

/* Every directory up to / counts, not only the module's own. */
Test(plugin_loader, directories_above_the_module_refused_as_root,
     .init = tree_new, .fini = tree_free)
{
    char module[256];
    tree_dir("lib", NOBODY, 0755);
    tree_echo("lib/echo.so", 0, module, sizeof module);
    expect_refused_for(module, "lib", "is owned by uid 65534");

    tree_dir("opt", 0, 0775);
    tree_dir("opt/lib", 0, 0755);
    tree_echo("opt/lib/echo.so", 0, module, sizeof module);
    expect_refused_for(module, "opt", "is writable by its group");
}

/* Others may create files in a sticky directory but not replace root's. */
Test(plugin_loader, sticky_directory_of_root_accepted_as_root,
     .init = tree_new, .fini = tree_free)
{
    char module[256];
    tree_dir("tmp", 0, 01777);
    tree_echo("tmp/echo.so", 0, module, sizeof module);
    expect_loads(module);

    tree_dir("theirs", NOBODY, 01777);
    tree_echo("theirs/echo.so", 0, module, sizeof module);
    expect_refused_for(module, "theirs", "is owned by uid 65534");
}

/* What counts is the file the link leads to and the directories above it,
 * not where the link lies. */
Test(plugin_loader, symlink_judged_by_its_target_as_root,
     .init = tree_new, .fini = tree_free)
{
    char good[256], bad[256], link[256];
    tree_dir("good", 0, 0755);
    tree_echo("good/echo.so", 0, good, sizeof good);
    tree_dir("links", NOBODY, 0777);
    snprintf(link, sizeof link, "%s/links/echo.so", base);
    cr_assert_eq(symlink(good, link), 0);
    expect_loads(link);

    tree_echo("good/theirs.so", NOBODY, bad, sizeof bad);
    snprintf(link, sizeof link, "%s/good/link.so", base);
    cr_assert_eq(symlink(bad, link), 0);
    expect_refused_for(link, "good/theirs.so", "is owned by uid 65534");
}

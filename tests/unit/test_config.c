/*
 * test_config.c - the configuration loader (daemon/config.c) and its
 * diagnostics (daemon/diag.c): values, defaults, @include, and every kind of
 * mistake reported with its exact FILE:LINE.
 */
#define _GNU_SOURCE 1   /* nftw */

#include <criterion/criterion.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <plugboard/plugin.h>

#include "config.h"
#include "diag.h"

#define PLUGIN_DIR "/usr/lib/plugboard"
/* One valid listener, for files that test something else. */
#define LISTENER "listeners = ( { address = \"127.0.0.1\"; port = 1; } );\n"

static char tmpdir[256];
static char main_path[PATH_MAX];
static pb_diag diag = PB_DIAG_INIT;

static void make_tmpdir(void)
{
    const char *base = getenv("PB_TEST_TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/pb-config-XXXXXX", base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(main_path, sizeof main_path, "%s/main.conf", tmpdir);
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

static void remove_tmpdir(void)
{
    pb_diag_free(&diag);
    nftw(tmpdir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(config, .init = make_tmpdir, .fini = remove_tmpdir);

/* Writes text to name inside the test's directory (one level of
 * subdirectory is created as needed). */
static void write_file(const char *name, const char *text)
{
    char path[PATH_MAX];
    const char *slash = strchr(name, '/');
    if (slash) {
        snprintf(path, sizeof path, "%s/%.*s", tmpdir, (int)(slash - name), name);
        mkdir(path, 0700);
    }
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static pb_config *load_text(const char *text)
{
    write_file("main.conf", text);
    pb_config *c = NULL;
    int rc = pb_config_load(main_path, PLUGIN_DIR, &c, &diag);
    cr_assert_eq(rc == 0, c != NULL);
    return c;
}

static pb_config *load_ok(const char *text)
{
    pb_config *c = load_text(text);
    if (!c)
        pb_diag_print(&diag);
    cr_assert_not_null(c, "the configuration was refused (see stderr)");
    cr_assert_eq(diag.count, 0);
    return c;
}

static char *all_lines(void)
{
    static char text[8192];
    text[0] = '\0';
    for (size_t i = 0; i < diag.count; i++) {
        strncat(text, diag.lines[i], sizeof text - strlen(text) - 2);
        strcat(text, "\n");
    }
    return text;
}

/* Asserts that diag holds exactly "FILE:LINE: message", FILE being name in
 * the test's directory. */
static void expect_line(const char *name, int line, const char *message)
{
    char want[PATH_MAX + 512];
    if (line > 0)
        snprintf(want, sizeof want, "%s/%s:%d: %s", tmpdir, name, line, message);
    else
        snprintf(want, sizeof want, "%s/%s: %s", tmpdir, name, message);
    for (size_t i = 0; i < diag.count; i++)
        if (strcmp(diag.lines[i], want) == 0)
            return;
    cr_assert_fail("missing diagnostic\n  %s\ngot:\n%s", want, all_lines());
}

/* Loads text, expects it refused with exactly one diagnostic in main.conf. */
static void expect_error(const char *text, int line, const char *message)
{
    cr_assert_null(load_text(text), "accepted a bad configuration");
    expect_line("main.conf", line, message);
    cr_assert_eq(diag.count, 1, "expected one diagnostic, got:\n%s", all_lines());
}

static void resolved(char *out, const char *name)
{
    snprintf(out, PATH_MAX, "%s/%s", tmpdir, name);
}

/* --- Values -------------------------------------------------------------- */

/* The example of plugboard.conf(5), every key set. */
static const char documented_example[] =
    "plugin_dir = \"/usr/lib/x86_64-linux-gnu/plugboard\";\n"
    "user = \"plugboard\"; group = \"plugboard\";\n"
    "pidfile = \"/run/plugboard/plugboard.pid\";\n"
    "workers = 1;\n"
    "log = { level = \"info\"; target = \"stderr\"; };\n"
    "limits = {\n"
    "  max_connections    = 10000;\n"
    "  max_message_bytes  = 1048576;\n"
    "  idle_timeout       = 60.0;\n"
    "  max_pending_output = 4194304;\n"
    "  shutdown_timeout   = 10.0;\n"
    "};\n"
    "listeners = (\n"
    "  { name = \"app\";    address = \"127.0.0.1\"; port = 65432; framing = \"frame\"; },\n"
    "  { name = \"telnet\"; address = \"127.0.0.1\"; port = 65433; framing = \"line\"; plugin = \"echo\"; },\n"
    "  { name = \"local\";  path = \"/run/plugboard/plugboard.sock\"; mode = \"0660\"; framing = \"frame\"; }\n"
    ");\n"
    "plugins = (\n"
    "  { name = \"echo\";    module = \"echo\"; },\n"
    "  { name = \"upper\";   module = \"uppercase\"; },\n"
    "  { name = \"search\";  module = \"search\";\n"
    "    settings = { entries = ( (\"morpheus\", \"Follow the white rabbit. \xF0\x9F\x90\xB0\"),\n"
    "                             (\"ring\", \"In the caves beneath the Misty Mountains. \xF0\x9F\x92\x8D\"),\n"
    "                             (\"\xF0\x9F\x90\xB6\", \"\xF0\x9F\x90\xBE Playing ball! \xF0\x9F\x8F\x90\") ); }; },\n"
    "  { name = \"first10\"; module = \"first10\"; }\n"
    ");\n"
    "routes = (\n"
    "  { content_type = \"text/json\"; action = \"echo\";  plugin = \"echo\"; },\n"
    "  { content_type = \"text/json\"; action = \"upper\"; plugin = \"upper\"; },\n"
    "  { content_type = \"text/json\"; plugin = \"search\"; },\n"
    "  { content_type = \"text/plain\"; plugin = \"echo\"; },\n"
    "  { plugin = \"first10\"; }\n"
    ");\n";

Test(config, documented_example_loads_with_every_value)
{
    pb_config *c = load_ok(documented_example);

    cr_assert_str_eq(c->path, main_path);
    cr_assert_str_eq(c->dir, tmpdir);
    cr_assert_str_eq(c->plugin_dir, "/usr/lib/x86_64-linux-gnu/plugboard");
    cr_assert_str_eq(c->user, "plugboard");
    cr_assert_str_eq(c->group, "plugboard");
    cr_assert_str_eq(c->pidfile, "/run/plugboard/plugboard.pid");
    cr_assert_eq(c->workers, 1);
    cr_assert_eq(c->log_level, PB_LOG_INFO);
    cr_assert_eq(c->log_target, PB_LOG_STDERR);
    cr_assert_str_eq(c->log_facility, "daemon");
    cr_assert_eq(c->limits.max_connections, 10000);
    cr_assert_eq(c->limits.max_message_bytes, 1048576);
    cr_assert_float_eq(c->limits.idle_timeout, 60.0, 1e-9);
    cr_assert_eq(c->limits.max_pending_output, 4194304);
    cr_assert_float_eq(c->limits.shutdown_timeout, 10.0, 1e-9);

    cr_assert_eq(c->n_listeners, 3);
    pb_listener_conf *l = c->listeners;
    cr_assert_str_eq(l[0].name, "app");
    cr_assert_str_eq(l[0].address, "127.0.0.1");
    cr_assert_eq(l[0].port, 65432);
    cr_assert_null(l[0].path);
    cr_assert_eq(l[0].mode, -1);
    cr_assert_eq(l[0].framing, PB_FRAME);
    cr_assert_null(l[0].plugin);
    cr_assert_str_eq(l[0].pos.file, main_path);
    cr_assert_eq(l[0].pos.line, 14);
    cr_assert_str_eq(l[1].name, "telnet");
    cr_assert_eq(l[1].port, 65433);
    cr_assert_eq(l[1].framing, PB_LINE);
    cr_assert_str_eq(l[1].plugin, "echo");
    cr_assert_eq(l[1].pos.line, 15);
    cr_assert_str_eq(l[2].name, "local");
    cr_assert_null(l[2].address);
    cr_assert_str_eq(l[2].path, "/run/plugboard/plugboard.sock");
    cr_assert_eq(l[2].mode, 0660);
    cr_assert_eq(l[2].framing, PB_FRAME);

    cr_assert_eq(c->n_plugins, 4);
    pb_plugin_conf *p = c->plugins;
    const char *names[] = { "echo", "upper", "search", "first10" };
    const char *modules[] = { "echo", "uppercase", "search", "first10" };
    const int lines[] = { 19, 20, 21, 25 };
    for (int i = 0; i < 4; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "/usr/lib/x86_64-linux-gnu/plugboard/%s.so", modules[i]);
        cr_assert_str_eq(p[i].name, names[i]);
        cr_assert_str_eq(p[i].module, modules[i]);
        cr_assert_str_eq(p[i].path, path);
        cr_assert_eq(p[i].pos.line, lines[i]);
        cr_assert(json_is_object(p[i].settings));
    }
    cr_assert_eq(json_object_size(p[0].settings), 0);
    char *json = json_dumps(p[2].settings, JSON_COMPACT);
    cr_assert_str_eq(json,
        "{\"entries\":[[\"morpheus\",\"Follow the white rabbit. \xF0\x9F\x90\xB0\"],"
        "[\"ring\",\"In the caves beneath the Misty Mountains. \xF0\x9F\x92\x8D\"],"
        "[\"\xF0\x9F\x90\xB6\",\"\xF0\x9F\x90\xBE Playing ball! \xF0\x9F\x8F\x90\"]]}");
    free(json);

    cr_assert_eq(c->n_routes, 5);
    pb_route_conf *r = c->routes;
    cr_assert_str_eq(r[0].content_type, "text/json");
    cr_assert_str_eq(r[0].action, "echo");
    cr_assert_str_eq(r[0].plugin, "echo");
    cr_assert_str_eq(r[1].action, "upper");
    cr_assert_str_eq(r[1].plugin, "upper");
    cr_assert_null(r[2].action);
    cr_assert_str_eq(r[2].plugin, "search");
    cr_assert_str_eq(r[3].content_type, "text/plain");
    cr_assert_null(r[4].content_type);
    cr_assert_null(r[4].action);
    cr_assert_str_eq(r[4].plugin, "first10");
    cr_assert_eq(r[4].pos.line, 32);

    cr_assert_eq(c->n_files, 1);
    cr_assert_str_eq(c->files[0], main_path);
    pb_config_free(c);
}

Test(config, defaults)
{
    pb_config *c = load_ok(
        "listeners = ( { address = \"::1\"; port = 80; },\n"
        "              { address = \"localhost\"; port = 81; },\n"
        "              { path = \"/tmp/pb.sock\"; } );\n");

    cr_assert_str_eq(c->plugin_dir, PLUGIN_DIR);
    cr_assert_null(c->user);
    cr_assert_null(c->group);
    cr_assert_str_eq(c->pidfile, "/run/plugboard/plugboard.pid");
    cr_assert_eq(c->workers, 1);
    cr_assert_eq(c->log_level, PB_LOG_INFO);
    cr_assert_eq(c->log_target, PB_LOG_STDERR);
    cr_assert_str_eq(c->log_facility, "daemon");
    cr_assert_eq(c->limits.max_connections, 10000);
    cr_assert_eq(c->limits.max_message_bytes, 1048576);
    cr_assert_float_eq(c->limits.idle_timeout, 60.0, 1e-9);
    cr_assert_eq(c->limits.max_pending_output, 4194304);
    cr_assert_float_eq(c->limits.shutdown_timeout, 10.0, 1e-9);
    cr_assert_eq(c->n_plugins, 0);
    cr_assert_eq(c->n_routes, 0);

    cr_assert_eq(c->n_listeners, 3);
    cr_assert_str_eq(c->listeners[0].name, "[::1]:80");
    cr_assert_str_eq(c->listeners[1].name, "localhost:81");
    cr_assert_str_eq(c->listeners[2].name, "/tmp/pb.sock");
    cr_assert_eq(c->listeners[2].mode, -1);
    cr_assert_eq(c->listeners[2].framing, PB_FRAME);
    cr_assert_eq(c->listeners[2].pos.line, 3);
    pb_config_free(c);
}

Test(config, relative_paths_resolve_against_the_file)
{
    pb_config *c = load_ok(
        "plugin_dir = \"lib/plugins\";\n"
        "pidfile = \"run/pb.pid\";\n"
        "listeners = ( { path = \"pb.sock\"; mode = \"755\"; } );\n"
        "plugins = ( { name = \"a\"; module = \"echo\"; },\n"
        "            { name = \"b\"; module = \"/opt/pb/echo-test.so\"; } );\n"
        "routes = ();\n");
    char want[PATH_MAX];

    resolved(want, "lib/plugins");
    cr_assert_str_eq(c->plugin_dir, want);
    resolved(want, "run/pb.pid");
    cr_assert_str_eq(c->pidfile, want);
    resolved(want, "pb.sock");
    cr_assert_str_eq(c->listeners[0].path, want);
    cr_assert_str_eq(c->listeners[0].name, want);
    cr_assert_eq(c->listeners[0].mode, 0755);
    resolved(want, "lib/plugins/echo.so");
    cr_assert_str_eq(c->plugins[0].path, want);
    cr_assert_str_eq(c->plugins[1].module, "/opt/pb/echo-test.so");
    cr_assert_str_eq(c->plugins[1].path, "/opt/pb/echo-test.so");
    pb_config_free(c);
}

Test(config, numbers_of_every_kind)
{
    pb_config *c = load_ok(
        LISTENER
        "workers = 0;\n"
        "limits = { max_connections = 0x10; max_message_bytes = 5000000000L;\n"
        "           idle_timeout = 0; max_pending_output = 1; shutdown_timeout = 2.5; };\n");

    cr_assert_eq(c->workers, 0);
    cr_assert_eq(c->limits.max_connections, 16);
    cr_assert_eq(c->limits.max_message_bytes, 5000000000LL);
    cr_assert_float_eq(c->limits.idle_timeout, 0.0, 1e-9);
    cr_assert_eq(c->limits.max_pending_output, 1);
    cr_assert_float_eq(c->limits.shutdown_timeout, 2.5, 1e-9);
    pb_config_free(c);
}

Test(config, log_settings)
{
    const char *levels[] = { "error", "warning", "notice", "info", "debug" };
    const int values[] = { PB_LOG_ERROR, PB_LOG_WARNING, PB_LOG_NOTICE,
                           PB_LOG_INFO, PB_LOG_DEBUG };
    for (int i = 0; i < 5; i++) {
        char text[256];
        snprintf(text, sizeof text, LISTENER
                 "log = { level = \"%s\"; target = \"syslog\"; facility = \"local3\"; };\n",
                 levels[i]);
        pb_config *c = load_ok(text);
        cr_assert_eq(c->log_level, values[i]);
        cr_assert_eq(c->log_level, 3 + i);
        cr_assert_eq(c->log_target, PB_LOG_SYSLOG);
        cr_assert_str_eq(c->log_facility, "local3");
        pb_config_free(c);
    }
}

/* --- @include ------------------------------------------------------------ */

Test(config, include_is_relative_to_the_file)
{
    write_file("conf.d/plugins.conf",
        "# instances\n"
        "plugins = ( { name = \"echo\"; module = \"echo\";\n"
        "              settings = { greeting = \"hi\"; }; } );\n");
    /* From another directory, so that only the file's own place can work. */
    cr_assert_eq(chdir("/"), 0);
    pb_config *c = load_ok(
        LISTENER
        "@include \"conf.d/plugins.conf\"\n"
        "routes = ( { plugin = \"echo\"; } );\n");
    char inc[PATH_MAX];
    resolved(inc, "conf.d/plugins.conf");

    cr_assert_eq(c->n_plugins, 1);
    cr_assert_str_eq(c->plugins[0].pos.file, inc);
    cr_assert_eq(c->plugins[0].pos.line, 2);
    json_t *greeting = json_object_get(c->plugins[0].settings, "greeting");
    pb_conf_pos pos = pb_plugin_conf_position(&c->plugins[0], greeting);
    cr_assert_str_eq(pos.file, inc);
    cr_assert_eq(pos.line, 3);
    cr_assert_str_eq(c->routes[0].pos.file, main_path);
    cr_assert_eq(c->routes[0].pos.line, 3);
    cr_assert_eq(c->n_files, 2);
    cr_assert_str_eq(c->files[0], main_path);
    cr_assert_str_eq(c->files[1], inc);
    pb_config_free(c);
}

Test(config, schema_error_in_an_included_file_names_it)
{
    write_file("conf.d/limits.conf",
        "\n"
        "limits = {\n"
        "  max_conections = 5;\n"
        "};\n");
    cr_assert_null(load_text(LISTENER "@include \"conf.d/limits.conf\"\nworkers = -1;\n"));
    expect_line("conf.d/limits.conf", 3,
                "unknown key \"max_conections\" in limits (did you mean \"max_connections\"?)");
    expect_line("main.conf", 3, "\"workers\" must be at least 0");
    cr_assert_eq(diag.count, 2);
}

Test(config, syntax_error_in_an_included_file_names_it)
{
    write_file("inc.conf", "a = 1;\nb = ;\n");
    cr_assert_null(load_text(LISTENER "@include \"inc.conf\"\n"));
    expect_line("inc.conf", 2, "syntax error");
    cr_assert_eq(diag.count, 1);
}

Test(config, missing_include)
{
    cr_assert_null(load_text(LISTENER "@include \"nowhere.conf\"\n"));
    expect_line("main.conf", 2, "cannot open include file");
}

/* --- Errors ---------------------------------------------------------------- */

Test(config, missing_file)
{
    pb_config *c = NULL;
    char path[PATH_MAX];
    resolved(path, "absent.conf");
    cr_assert_eq(pb_config_load(path, PLUGIN_DIR, &c, &diag), -1);
    cr_assert_null(c);
    expect_line("absent.conf", 0, "cannot open: No such file or directory");
}

Test(config, syntax_error)
{
    expect_error(LISTENER "workers = 1\nlog = { level = ; };\n", 3, "syntax error");
}

Test(config, duplicate_setting)
{
    expect_error(LISTENER "workers = 1;\nworkers = 2;\n", 3, "duplicate setting name");
}

Test(config, unknown_key_at_top_level)
{
    expect_error(LISTENER "\nlistner = ();\n", 3,
                 "unknown key \"listner\" at top level (did you mean \"listeners\"?)");
}

Test(config, unknown_key_without_a_close_match)
{
    expect_error(LISTENER "colour = \"blue\";\n", 2, "unknown key \"colour\" at top level");
}

Test(config, unknown_key_in_limits)
{
    expect_error(LISTENER "limits = {\n  idle_timout = 5;\n};\n", 3,
                 "unknown key \"idle_timout\" in limits (did you mean \"idle_timeout\"?)");
}

Test(config, unknown_key_in_log)
{
    expect_error(LISTENER "log = { levle = \"info\"; };\n", 2,
                 "unknown key \"levle\" in log (did you mean \"level\"?)");
}

Test(config, unknown_key_in_listener)
{
    expect_error("listeners = (\n  { address = \"127.0.0.1\";\n    port = 1; portt = 2; }\n);\n", 3,
                 "unknown key \"portt\" in listener (did you mean \"port\"?)");
}

Test(config, unknown_key_in_plugin)
{
    expect_error(LISTENER "plugins = ( { name = \"a\"; module = \"echo\";\n  setings = {}; } );\n", 3,
                 "unknown key \"setings\" in plugin (did you mean \"settings\"?)");
}

Test(config, unknown_key_in_route)
{
    expect_error(LISTENER "plugins = ( { name = \"a\"; module = \"echo\"; } );\n"
                 "routes = ( { plugin = \"a\"; content_typ = \"text/json\"; } );\n", 3,
                 "unknown key \"content_typ\" in route (did you mean \"content_type\"?)");
}

Test(config, wrong_types)
{
    expect_error("listeners = ( { address = \"127.0.0.1\"; port = \"80\"; } );\n", 1,
                 "\"port\" must be an integer");
}

Test(config, wrong_types_everywhere)
{
    cr_assert_null(load_text(
        "listeners = ( { address = 127; port = 1; framing = 1; } );\n"  /* 1 */
        "user = 0;\n"
        "workers = 1.5;\n"
        "log = \"info\";\n"
        "limits = { idle_timeout = \"1\"; max_connections = 2.0; };\n"  /* 5 */
        "plugins = { name = \"a\"; };\n"
        "routes = ( \"a\" );\n"
        "pidfile = true;\n"));
    expect_line("main.conf", 1, "\"address\" must be a string");
    expect_line("main.conf", 1, "\"framing\" must be a string");
    expect_line("main.conf", 2, "\"user\" must be a string");
    expect_line("main.conf", 3, "\"workers\" must be an integer");
    expect_line("main.conf", 4, "\"log\" must be a group: log = { ... };");
    expect_line("main.conf", 5, "\"idle_timeout\" must be a number");
    expect_line("main.conf", 5, "\"max_connections\" must be an integer");
    expect_line("main.conf", 6,
                "\"plugins\" must be a list of groups: plugins = ( { ... }, ... );");
    expect_line("main.conf", 7, "route entries must be groups: { ... }");
    expect_line("main.conf", 8, "\"pidfile\" must be a string");
    cr_assert_eq(diag.count, 10, "got:\n%s", all_lines());
}

Test(config, out_of_range)
{
    cr_assert_null(load_text(
        "listeners = ( { address = \"a\"; port = 0; },\n"
        "              { address = \"b\"; port = 65536; } );\n"
        "limits = {\n"
        "  max_connections = 0;\n"
        "  max_message_bytes = -5;\n"
        "  idle_timeout = -0.5;\n"
        "  max_pending_output = 0;\n"
        "  shutdown_timeout = 1e999;\n"
        "};\n"));
    expect_line("main.conf", 1, "\"port\" must be between 1 and 65535");
    expect_line("main.conf", 2, "\"port\" must be between 1 and 65535");
    expect_line("main.conf", 4, "\"max_connections\" must be at least 1");
    expect_line("main.conf", 5, "\"max_message_bytes\" must be at least 1");
    expect_line("main.conf", 6,
                "\"idle_timeout\" must be a finite number of seconds, at least 0");
    expect_line("main.conf", 7, "\"max_pending_output\" must be at least 1");
    expect_line("main.conf", 8,
                "\"shutdown_timeout\" must be a finite number of seconds, at least 0");
    cr_assert_eq(diag.count, 7, "got:\n%s", all_lines());
}

Test(config, bad_choices)
{
    cr_assert_null(load_text(
        "listeners = ( { address = \"a\"; port = 1; framing = \"lines\"; } );\n"
        "log = { level = \"verbose\";\n"
        "        target = \"file\";\n"
        "        facility = \"kern\"; };\n"));
    expect_line("main.conf", 1, "\"framing\" must be \"frame\", \"line\" or \"http\", not \"lines\"");
    expect_line("main.conf", 2, "\"level\" must be \"error\", \"warning\", \"notice\", "
                "\"info\" or \"debug\", not \"verbose\"");
    expect_line("main.conf", 3, "\"target\" must be \"stderr\" or \"syslog\", not \"file\"");
    expect_line("main.conf", 4, "\"facility\" must be \"daemon\", \"user\", \"local0\", "
                "\"local1\", \"local2\", \"local3\", \"local4\", \"local5\", \"local6\" "
                "or \"local7\", not \"kern\"");
    cr_assert_eq(diag.count, 4, "got:\n%s", all_lines());
}

Test(config, empty_names)
{
    expect_error(LISTENER "plugins = ( { name = \"\"; module = \"echo\"; } );\n", 2,
                 "\"name\" must not be empty");
}

Test(config, duplicate_names)
{
    char text[1024];
    snprintf(text, sizeof text,
        "listeners = ( { name = \"app\"; address = \"a\"; port = 1; },\n"
        "              { name = \"app\"; path = \"/s\"; },\n"
        "              { address = \"a\"; port = 2; },\n"
        "              { address = \"a\"; port = 2; } );\n"
        "plugins = ( { name = \"echo\"; module = \"echo\"; },\n"
        "            { name = \"echo\"; module = \"uppercase\"; } );\n");
    cr_assert_null(load_text(text));
    char msg[PATH_MAX + 128];
    snprintf(msg, sizeof msg, "duplicate listener name \"app\" (first defined at %s:1)", main_path);
    expect_line("main.conf", 2, msg);
    snprintf(msg, sizeof msg, "duplicate listener name \"a:2\" (first defined at %s:3)", main_path);
    expect_line("main.conf", 4, msg);
    snprintf(msg, sizeof msg, "duplicate plugin name \"echo\" (first defined at %s:5)", main_path);
    expect_line("main.conf", 6, msg);
    cr_assert_eq(diag.count, 3, "got:\n%s", all_lines());
}

Test(config, undefined_instances)
{
    cr_assert_null(load_text(
        "plugins = ( { name = \"echo\"; module = \"echo\"; } );\n"
        "listeners = ( { address = \"a\"; port = 1;\n"
        "                plugin = \"ecko\"; } );\n"
        "routes = ( { plugin = \"echo\"; },\n"
        "           { content_type = \"text/*\"; plugin = \"upper\"; } );\n"));
    expect_line("main.conf", 3, "listener refers to undefined plugin instance \"ecko\"");
    expect_line("main.conf", 5, "route refers to undefined plugin instance \"upper\"");
    cr_assert_eq(diag.count, 2, "got:\n%s", all_lines());
}

Test(config, missing_required_keys)
{
    cr_assert_null(load_text(
        LISTENER
        "plugins = ( { name = \"a\"; },\n"
        "            { module = \"echo\"; } );\n"
        "routes = ( { action = \"x\"; } );\n"));
    expect_line("main.conf", 2, "plugin entry lacks \"module\"");
    expect_line("main.conf", 3, "plugin entry lacks \"name\"");
    expect_line("main.conf", 4, "route entry lacks \"plugin\"");
    cr_assert_eq(diag.count, 3, "got:\n%s", all_lines());
}

Test(config, no_listeners)
{
    expect_error("workers = 2;\n", 0, "no listeners: at least one is required");
}

Test(config, empty_listeners)
{
    expect_error("\nlisteners = ();\n", 2, "\"listeners\" is empty: at least one is required");
}

Test(config, listener_forms)
{
    cr_assert_null(load_text(
        "listeners = (\n"
        "  { address = \"a\"; port = 1;\n"
        "    path = \"/s\"; },\n"
        "  { path = \"/t\";\n"
        "    port = 2; },\n"
        "  { name = \"nothing\"; },\n"
        "  { port = 3; },\n"
        "  { address = \"b\"; },\n"
        "  { address = \"c\"; port = 4; mode = \"0600\"; }\n"
        ");\n"));
#define BOTH(key) "listener has both \"path\" and \"" key "\": use either address " \
                   "and port (TCP) or path (Unix socket)"
    expect_line("main.conf", 2, BOTH("address"));
    expect_line("main.conf", 5, BOTH("port"));
#undef BOTH
    expect_line("main.conf", 6,
                "listener needs \"address\" and \"port\" (TCP) or \"path\" (Unix socket)");
    expect_line("main.conf", 7, "\"port\" without \"address\"");
    expect_line("main.conf", 8, "\"address\" without \"port\"");
    expect_line("main.conf", 9, "\"mode\" applies only to a Unix socket (\"path\")");
    cr_assert_eq(diag.count, 6, "got:\n%s", all_lines());
}

Test(config, bad_modes)
{
    cr_assert_null(load_text(
        "listeners = (\n"
        "  { path = \"/a\"; mode = 0660; },\n"
        "  { path = \"/b\"; mode = \"0980\"; },\n"
        "  { path = \"/c\"; mode = \"017777\"; },\n"
        "  { path = \"/d\"; mode = \"\"; },\n"
        "  { path = \"/e\"; mode = \"-1\"; },\n"
        "  { path = \"/f\"; mode = \"07777\"; }\n"
        ");\n"));
    const char *msg = "\"mode\" must be an octal number up to 07777 written as a "
                      "quoted string, such as mode = \"0660\";";
    for (int line = 2; line <= 6; line++)
        expect_line("main.conf", line, msg);
    cr_assert_eq(diag.count, 5, "got:\n%s", all_lines());
}

Test(config, bad_module_names)
{
    cr_assert_null(load_text(
        LISTENER
        "plugins = (\n"
        "  { name = \"a\"; module = \"../echo\"; },\n"
        "  { name = \"b\"; module = \"sub/echo\"; },\n"
        "  { name = \"c\"; module = \".\"; },\n"
        "  { name = \"d\"; module = \"..\"; },\n"
        "  { name = \"e\"; module = \"\"; },\n"
        "  { name = \"f\"; module = 5; }\n"
        ");\n"));
#define BARE(module) "\"module\" must be a bare name looked up in plugin_dir or " \
                     "an absolute path, not \"" module "\""
    expect_line("main.conf", 3, BARE("../echo"));
    expect_line("main.conf", 4, BARE("sub/echo"));
#undef BARE
    expect_line("main.conf", 5, "\"module\" must not be \".\"");
    expect_line("main.conf", 6, "\"module\" must not be \"..\"");
    expect_line("main.conf", 7, "\"module\" must not be empty");
    expect_line("main.conf", 8, "\"module\" must be a string");
    cr_assert_eq(diag.count, 6, "got:\n%s", all_lines());
}

Test(config, several_errors_are_reported_together)
{
    cr_assert_null(load_text(
        "wokers = 2;\n"
        "listeners = ( { address = \"a\"; port = 99999; } );\n"
        "plugins = ( { name = \"p\"; modul = \"echo\"; } );\n"
        "routes = ( { plugin = \"q\"; } );\n"));
    /* In the order of the file, though plugins are checked before listeners. */
    const struct { int line; const char *message; } want[] = {
        { 1, "unknown key \"wokers\" at top level (did you mean \"workers\"?)" },
        { 2, "\"port\" must be between 1 and 65535" },
        { 3, "unknown key \"modul\" in plugin (did you mean \"module\"?)" },
        { 3, "plugin entry lacks \"module\"" },
        { 4, "route refers to undefined plugin instance \"q\"" },
    };
    cr_assert_eq(diag.count, 5, "got:\n%s", all_lines());
    for (size_t i = 0; i < 5; i++) {
        char line[PATH_MAX + 256];
        snprintf(line, sizeof line, "%s:%d: %s", main_path, want[i].line, want[i].message);
        cr_assert_str_eq(diag.lines[i], line);
    }
}

Test(config, diagnostics_of_an_include_follow_the_main_file)
{
    write_file("inc.conf", "workers = \"two\";\n");
    cr_assert_null(load_text("@include \"inc.conf\"\n"
                             "listeners = ( { port = 1; } );\n"));
    char inc[PATH_MAX], line[PATH_MAX + 64];
    resolved(inc, "inc.conf");
    cr_assert_eq(diag.count, 2, "got:\n%s", all_lines());
    snprintf(line, sizeof line, "%s:2: \"port\" without \"address\"", main_path);
    cr_assert_str_eq(diag.lines[0], line);
    snprintf(line, sizeof line, "%s:1: \"workers\" must be an integer", inc);
    cr_assert_str_eq(diag.lines[1], line);
}

/* --- Settings ------------------------------------------------------------ */

Test(config, settings_conversion_and_positions)
{
    pb_config *c = load_ok(
        LISTENER
        "plugins = ( { name = \"s\"; module = \"search\";\n"
        "  settings = {\n"
        "    text = \"caf\xC3\xA9\";\n"
        "    count = 3;\n"
        "    big = 5000000000L;\n"
        "    ratio = 0.25;\n"
        "    on = true;\n"
        "    off = false;\n"
        "    numbers = [ 1, 2,\n"
        "                3 ];\n"
        "    nested = { deeper = ( \"x\", { y = 1; } ); };\n"
        "  }; } );\n");
    pb_plugin_conf *p = &c->plugins[0];

    char *json = json_dumps(p->settings, JSON_COMPACT);
    cr_assert_str_eq(json, "{\"text\":\"caf\xC3\xA9\",\"count\":3,\"big\":5000000000,"
                     "\"ratio\":0.25,\"on\":true,\"off\":false,\"numbers\":[1,2,3],"
                     "\"nested\":{\"deeper\":[\"x\",{\"y\":1}]}}");
    free(json);
    cr_assert(json_is_integer(json_object_get(p->settings, "big")));
    cr_assert(json_is_real(json_object_get(p->settings, "ratio")));

    /* The settings group, then each of its 15 values. */
    cr_assert_eq(p->n_positions, 16);
    cr_assert_eq(p->positions[0].value, p->settings);
    pb_conf_pos pos = pb_plugin_conf_position(p, p->settings);
    cr_assert_eq(pos.line, 3);
    cr_assert_str_eq(pos.file, main_path);
    cr_assert_eq(pb_plugin_conf_position(p, json_object_get(p->settings, "text")).line, 4);
    cr_assert_eq(pb_plugin_conf_position(p, json_object_get(p->settings, "ratio")).line, 7);
    json_t *numbers = json_object_get(p->settings, "numbers");
    cr_assert_eq(pb_plugin_conf_position(p, numbers).line, 10);
    cr_assert_eq(pb_plugin_conf_position(p, json_array_get(numbers, 2)).line, 11);
    json_t *deeper = json_object_get(json_object_get(p->settings, "nested"), "deeper");
    json_t *y = json_object_get(json_array_get(deeper, 1), "y");
    cr_assert_eq(pb_plugin_conf_position(p, y).line, 12);

    /* jansson shares true and false, so each is found only while it appears
     * once; NULL and foreign values fall back to the instance. */
    json_t *other = json_integer(3);
    cr_assert_eq(pb_plugin_conf_position(p, json_true()).line, 8);
    cr_assert_eq(pb_plugin_conf_position(p, json_false()).line, 9);
    cr_assert_eq(pb_plugin_conf_position(p, NULL).line, 2);
    cr_assert_eq(pb_plugin_conf_position(p, other).line, 2);
    json_decref(other);
    pb_config_free(c);
}

Test(config, a_shared_value_found_twice_is_placed_at_the_instance)
{
    pb_config *c = load_ok(LISTENER
                           "plugins = ( { name = \"e\"; module = \"echo\";\n"
                           "  settings = { a = true;\n"
                           "               b = true; }; } );\n");
    cr_assert_eq(c->plugins[0].n_positions, 3);
    cr_assert_eq(pb_plugin_conf_position(&c->plugins[0], json_true()).line, 2);
    pb_config_free(c);
}

Test(config, absent_settings_are_an_empty_object_at_the_instance)
{
    pb_config *c = load_ok(LISTENER "\nplugins = ( { name = \"e\"; module = \"echo\"; } );\n");
    pb_plugin_conf *p = &c->plugins[0];
    cr_assert(json_is_object(p->settings));
    cr_assert_eq(json_object_size(p->settings), 0);
    cr_assert_eq(p->n_positions, 1);
    pb_conf_pos pos = pb_plugin_conf_position(p, p->settings);
    cr_assert_eq(pos.line, 3);
    cr_assert_str_eq(pos.file, main_path);
    pb_config_free(c);
}

Test(config, settings_must_be_a_group)
{
    expect_error(LISTENER "plugins = ( { name = \"e\"; module = \"echo\";\n"
                 "settings = ( 1 ); } );\n", 3,
                 "\"settings\" must be a group: settings = { ... };");
}

Test(config, settings_strings_must_be_utf8)
{
    cr_assert_null(load_text(
        LISTENER
        "plugins = ( { name = \"e\"; module = \"echo\"; settings = {\n"
        "  a = \"\xC3\";\n"
        "  l = ( \"ok\", \"\xED\xA0\x80\" );\n"
        "  f = 1e999;\n"
        "}; } );\n"));
    expect_line("main.conf", 3, "\"a\" is not valid UTF-8");
    expect_line("main.conf", 4, "element 1 of \"l\" is not valid UTF-8");
    expect_line("main.conf", 5, "\"f\" is too large a number");
    cr_assert_eq(diag.count, 3, "got:\n%s", all_lines());
}

/* Names, content types and actions end up as JSON keys in the statistics. */
Test(config, names_content_types_and_actions_must_be_utf8)
{
    cr_assert_null(load_text(
        "listeners = ( { name = \"app\xFF\"; address = \"a\"; port = 1; },\n"
        "              { path = \"/run/p\xC3.sock\"; } );\n"
        "plugins = ( { name = \"first\xFF" "10\"; module = \"first10\"; },\n"
        "            { name = \"echo\"; module = \"echo\"; } );\n"
        "routes = ( { content_type = \"text/\xE2\x82\"; plugin = \"echo\"; },\n"
        "           { action = \"\xC0\xAF\"; plugin = \"echo\"; },\n"
        "           { content_type = \"text/caf\xC3\xA9\"; action = \"\xF0\x9F\x90\xB0\";\n"
        "             plugin = \"echo\"; } );\n"));
    expect_line("main.conf", 1, "\"name\" is not valid UTF-8");
    expect_line("main.conf", 2, "listener named by its path, which is not valid "
                "UTF-8: give it a \"name\"");
    expect_line("main.conf", 3, "\"name\" is not valid UTF-8");
    expect_line("main.conf", 5, "\"content_type\" is not valid UTF-8");
    expect_line("main.conf", 6, "\"action\" is not valid UTF-8");
    cr_assert_eq(diag.count, 5, "got:\n%s", all_lines());
}

Test(config, group_without_user)
{
    expect_error(LISTENER "group = \"nogroup\";\n", 2,
                 "\"group\" without \"user\": set \"user\" too, or neither");
    pb_diag_free(&diag);
    pb_config *c = load_ok(LISTENER "user = \"nobody\";\n");
    pb_config_free(c);
}

Test(config, allow_lists_networks_of_a_tcp_listener)
{
    pb_config *c = load_ok("listeners = ( { address = \"127.0.0.1\"; port = 1;\n"
                           "  allow = [ \"10.0.0.0/8\", \"::1\" ]; } );\n");
    cr_assert_eq(c->listeners[0].n_allow, 2);
    cr_expect_eq(c->listeners[0].allow[0].prefix, 8);
    cr_expect_eq(c->listeners[0].allow[1].prefix, 128);
    pb_config_free(c);

    expect_error("listeners = ( { address = \"127.0.0.1\"; port = 1;\n"
                 "  allow = [ \"10.0.0.0/33\" ]; } );\n", 2,
                 "\"10.0.0.0/33\" is not an IPv4 or IPv6 address or network "
                 "(ADDRESS or ADDRESS/PREFIX)");
    pb_diag_free(&diag);
    expect_error("listeners = ( { address = \"127.0.0.1\"; port = 1;\n"
                 "  allow = [ ]; } );\n", 2, "\"allow\" is empty, which would "
                 "refuse every peer: leave it out to accept all");
    pb_diag_free(&diag);
    expect_error("listeners = ( { address = \"127.0.0.1\"; port = 1;\n"
                 "  allow = \"10.0.0.0/8\"; } );\n", 2,
                 "\"allow\" must be a list of networks: "
                 "allow = [ \"10.0.0.0/8\", \"::1/128\" ];");
    pb_diag_free(&diag);
    expect_error("listeners = ( { path = \"s.sock\";\n"
                 "  allow = [ \"10.0.0.0/8\" ]; } );\n", 2,
                 "\"allow\" applies only to a TCP listener (\"address\")");
}

Test(config, tls_group_of_a_listener)
{
    pb_config *c = load_ok("listeners = ( { address = \"127.0.0.1\"; port = 1;\n"
                           "  tls = { certificate = \"s.crt\"; key = \"/k/s.key\";\n"
                           "          ca = \"ca.crt\"; verify_client = \"require\";\n"
                           "          min_version = \"1.3\"; }; },\n"
                           "  { address = \"127.0.0.1\"; port = 2; } );\n");
    const pb_tls_conf *t = c->listeners[0].tls;
    cr_assert_not_null(t);
    char path[PATH_MAX];
    resolved(path, "s.crt");
    cr_expect_str_eq(t->certificate, path);
    cr_expect_str_eq(t->key, "/k/s.key");
    resolved(path, "ca.crt");
    cr_expect_str_eq(t->ca, path);
    cr_expect_eq(t->verify_client, PB_VERIFY_REQUIRE);
    cr_expect_eq(t->min_version, PB_TLS_1_3);
    cr_expect_eq(t->key_pos.line, 2);
    cr_expect_eq(t->ca_pos.line, 3);
    cr_expect_null(c->listeners[1].tls);
    pb_config_free(c);

    c = load_ok("listeners = ( { path = \"s.sock\";\n"
                "  tls = { certificate = \"s.crt\"; key = \"s.key\"; }; } );\n");
    cr_expect_eq(c->listeners[0].tls->verify_client, PB_VERIFY_NONE);
    cr_expect_eq(c->listeners[0].tls->min_version, PB_TLS_1_2);
    cr_expect_null(c->listeners[0].tls->ca);
    pb_config_free(c);
}

Test(config, tls_files_from_systemd_credentials)
{
    setenv("CREDENTIALS_DIRECTORY", "/run/credentials/plugboard.service", 1);
    pb_config *c = load_ok("listeners = ( { address = \"127.0.0.1\"; port = 443;\n"
                           "  tls = { certificate = \"${CREDENTIALS_DIRECTORY}/server.crt\";\n"
                           "          key = \"${CREDENTIALS_DIRECTORY}/server.key\"; }; } );\n");
    cr_expect_str_eq(c->listeners[0].tls->certificate,
                     "/run/credentials/plugboard.service/server.crt");
    cr_expect_str_eq(c->listeners[0].tls->key,
                     "/run/credentials/plugboard.service/server.key");
    cr_expect_eq(c->listeners[0].tls->key_pos.line, 3);
    pb_config_free(c);

    unsetenv("CREDENTIALS_DIRECTORY");
    expect_error("listeners = ( { address = \"127.0.0.1\"; port = 443;\n"
                 "  tls = { certificate = \"s.crt\";\n"
                 "          key = \"${CREDENTIALS_DIRECTORY}/server.key\"; }; } );\n",
                 3, "\"key\" is in ${CREDENTIALS_DIRECTORY}, which is not set: start "
                 "the daemon from a systemd unit with LoadCredential=");
}

Test(config, http_framing_with_and_without_tls)
{
    pb_config *c = load_ok("listeners = ( { address = \"127.0.0.1\"; port = 1; "
                           "framing = \"http\"; },\n"
                           "  { address = \"127.0.0.1\"; port = 2; framing = \"http\";\n"
                           "    tls = { certificate = \"s.crt\"; key = \"s.key\"; }; } );\n");
    cr_expect_eq(c->listeners[0].framing, PB_HTTP);
    cr_expect_null(c->listeners[0].tls);
    cr_expect_eq(c->listeners[1].framing, PB_HTTP);
    cr_expect_not_null(c->listeners[1].tls);
    pb_config_free(c);
}

Test(config, tls_group_mistakes_are_named)
{
#define TLS_LISTENER(body) "listeners = ( { address = \"127.0.0.1\"; port = 1;\n" \
                           "  tls = { " body " }; } );\n"
    expect_error(TLS_LISTENER("key = \"s.key\";"), 2,
                 "\"tls\" needs \"certificate\" (PEM, the server's certificate "
                 "and its chain)");
    pb_diag_free(&diag);
    expect_error(TLS_LISTENER("certificate = \"s.crt\";"), 2,
                 "\"tls\" needs \"key\" (PEM, the certificate's private key)");
    pb_diag_free(&diag);
    expect_error(TLS_LISTENER("certificate = \"s.crt\"; key = \"s.key\"; "
                              "verify_client = \"require\";"), 2,
                 "verify_client = \"require\" needs \"ca\", the CA certificates "
                 "that client certificates are checked against");
    pb_diag_free(&diag);
    expect_error(TLS_LISTENER("certificate = \"s.crt\"; key = \"s.key\"; "
                              "verify_client = \"always\";"), 2,
                 "\"verify_client\" must be \"none\", \"optional\" or "
                 "\"require\", not \"always\"");
    pb_diag_free(&diag);
    expect_error(TLS_LISTENER("certificate = \"s.crt\"; key = \"s.key\"; "
                              "min_version = \"1.1\";"), 2,
                 "\"min_version\" must be \"1.2\" or \"1.3\", not \"1.1\"");
    pb_diag_free(&diag);
    expect_error(TLS_LISTENER("certificate = \"s.crt\"; key = \"s.key\"; "
                              "cert = \"x\";"), 2,
                 "unknown key \"cert\" in tls");
    pb_diag_free(&diag);
    expect_error(TLS_LISTENER("certificate = \"\"; key = \"s.key\";"), 2,
                 "\"certificate\" must not be empty");
    pb_diag_free(&diag);
    expect_error("listeners = ( { address = \"127.0.0.1\"; port = 1;\n"
                 "  tls = \"on\"; } );\n", 2,
                 "\"tls\" must be a group: tls = { ... };");
#undef TLS_LISTENER
}

Test(config, routes_may_serve_some_listeners_only)
{
    pb_config *c = load_ok("listeners = ( { name = \"app\"; address = \"127.0.0.1\"; port = 1; },\n"
                           "  { name = \"local\"; path = \"s.sock\"; } );\n"
                           "plugins = ( { name = \"echo\"; module = \"echo\"; } );\n"
                           "routes = ( { plugin = \"echo\"; listeners = [ \"local\" ]; },\n"
                           "  { plugin = \"echo\"; listeners = [ \"local\", \"app\" ]; },\n"
                           "  { plugin = \"echo\"; } );\n");
    cr_assert_eq(c->routes[0].n_listeners, 1);
    cr_expect_eq(c->routes[0].listeners[0], 1);
    cr_assert_eq(c->routes[1].n_listeners, 2);
    cr_expect_eq(c->routes[1].listeners[1], 0);
    cr_expect_eq(c->routes[2].n_listeners, 0);
    pb_config_free(c);

#define TWO "listeners = ( { name = \"app\"; address = \"127.0.0.1\"; port = 1; } );\n" \
            "plugins = ( { name = \"echo\"; module = \"echo\"; } );\n"
    expect_error(TWO "routes = ( { plugin = \"echo\";\n listeners = [ \"lokal\" ]; } );\n",
                 4, "route refers to undefined listener \"lokal\"");
    pb_diag_free(&diag);
    expect_error(TWO "routes = ( { plugin = \"echo\";\n listeners = [ ]; } );\n",
                 4, "\"listeners\" must be a list of listener names: "
                 "listeners = [ \"local\" ];");
    pb_diag_free(&diag);
    expect_error(TWO "routes = ( { plugin = \"echo\";\n listeners = \"app\"; } );\n",
                 4, "\"listeners\" must be a list of listener names: "
                 "listeners = [ \"local\" ];");
    pb_diag_free(&diag);
    expect_error(TWO "routes = ( { plugin = \"echo\";\n listeners = [ 1 ]; } );\n",
                 4, "\"listeners\" holds listener names as strings");
#undef TWO
}

/* --- Diagnostics ------------------------------------------------------------ */

Test(config, diag_formats)
{
    pb_diag d = PB_DIAG_INIT;
    pb_diag_add(&d, "a.conf", 7, "bad %s", "thing");
    pb_diag_add(&d, "a.conf", 0, "cannot open: %d", 2);
    pb_diag_add(&d, NULL, 3, "plain");
    for (int i = 0; i < 20; i++)
        pb_diag_add(&d, "b.conf", i + 1, "line %d", i + 1);
    cr_assert_eq(d.count, 23);
    cr_assert_str_eq(d.lines[0], "a.conf:7: bad thing");
    cr_assert_str_eq(d.lines[1], "a.conf: cannot open: 2");
    cr_assert_str_eq(d.lines[2], "plain");
    cr_assert_str_eq(d.lines[22], "b.conf:20: line 20");
    pb_diag_free(&d);
    cr_assert_eq(d.count, 0);
    cr_assert_null(d.lines);
}

/*
 * test_stats_names.c - names in the statistics, against the real daemon:
 * names that JSON cannot hold are refused when the configuration is read,
 * long multi-byte ones are counted and reported, and routes renamed by
 * reloads keep being counted. Also `group` without `user`, refused before
 * any worker could keep root.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

TestSuite(stats_names, .init = pb_harness_init, .fini = pb_harness_cleanup,
          .timeout = 120);

static const char *const plugin_env[] = {
    "PLUGBOARD_PLUGIN_DIR=" PB_TEST_PLUGIN_DIR, NULL
};

#define LISTENER \
    "listeners = ( { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; } );\n"
#define STATS_PLUGINS \
    "plugins = ( { name = \"stats\"; module = \"stats\"; },\n" \
    "            { name = \"echo\"; module = \"echo\"; } );\n"

/* --- Refused when read: plugboard -t and plugboard -f ---------------------- */

/* Runs the daemon with flag on the template; it must exit 78 and report
 * "CONFIG:line: message". */
static void expect_refused(const char *flag, const char *config_template,
                           int line, const char *message)
{
    pb_daemon d;
    pb_daemon_prepare(&d, config_template);
    const char *argv[] = { PB_T_DAEMON_BIN, flag, "-c", d.config_path, NULL };
    pb_run_result r;
    pb_run(argv, plugin_env, NULL, 0, &r);
    char want[512];
    snprintf(want, sizeof want, "%s:%d: %s\n", d.config_path, line, message);
    char *err = pb_t_escape(r.err, r.err_len);
    cr_expect_eq(r.status, 78, "%s: exit status %d, wanted 78; stderr: %s",
                 flag, r.status, err);
    cr_expect_not_null(strstr(r.err, want), "%s: wanted %s\nstderr: %s", flag,
                       want, err);
    free(err);
    pb_run_free(&r);
}

/* PB_T_CONF_HEAD is lines 1-3. */
Test(stats_names, an_instance_name_that_is_not_utf8_is_refused)
{
    expect_refused("-t", PB_T_CONF_HEAD LISTENER
                   "plugins = ( { name = \"first\xff" "10\"; module = \"first10\"; } );\n",
                   5, "\"name\" is not valid UTF-8");
}

Test(stats_names, a_content_type_that_is_not_utf8_is_refused)
{
    expect_refused("-t", PB_T_CONF_HEAD LISTENER STATS_PLUGINS
                   "routes = ( { content_type = \"text/\xc3\"; plugin = \"echo\"; } );\n",
                   7, "\"content_type\" is not valid UTF-8");
}

Test(stats_names, an_action_that_is_not_utf8_is_refused)
{
    expect_refused("-t", PB_T_CONF_HEAD LISTENER STATS_PLUGINS
                   "routes = ( { content_type = \"text/json\";\n"
                   "             action = \"st\xe2\x82" "ats\"; plugin = \"stats\"; } );\n",
                   8, "\"action\" is not valid UTF-8");
}

Test(stats_names, a_listener_name_that_is_not_utf8_is_refused)
{
    expect_refused("-t", PB_T_CONF_HEAD
                   "listeners = ( { name = \"ap\xed\xa0\x80p\"; address = \"127.0.0.1\";\n"
                   "                port = @PORT0@; } );\n" STATS_PLUGINS,
                   4, "\"name\" is not valid UTF-8");
}

#define GROUP_ONLY \
    PB_T_CONF_HEAD "group = \"nogroup\";\n" LISTENER STATS_PLUGINS

Test(stats_names, group_without_user_is_refused_by_test)
{
    expect_refused("-t", GROUP_ONLY, 4,
                   "\"group\" without \"user\": set \"user\" too, or neither");
}

Test(stats_names, group_without_user_is_refused_at_start)
{
    expect_refused("-f", GROUP_ONLY, 4,
                   "\"group\" without \"user\": set \"user\" too, or neither");
}

/* --- Counted and reported ------------------------------------------------------ */

/* Sends content of content_type and expects it echoed. */
static void echo(const pb_daemon *d, const char *content_type)
{
    int fd = pb_dial(d, 0);
    pb_t_send_frame(d, fd, content_type, "utf-8", "hi", 2);
    pb_t_expect_reply(d, fd, content_type, "utf-8", "hi", 2);
    close(fd);
}

/* Messages of the route whose name starts with prefix; -1 when none. */
static long long route_messages(const json_t *stats, const char *prefix)
{
    const char *name;
    json_t *entry;
    json_object_foreach(json_object_get(stats, "routes"), name, entry)
        if (strncmp(name, prefix, strlen(prefix)) == 0)
            return json_integer_value(json_object_get(entry, "messages"));
    return -1;
}

#define LONG_TYPE \
    "text/\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9" \
    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9" \
    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9" \
    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9" \
    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9" \
    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9" \
    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"

/* The route's name, "2: " and 145 bytes of content type, used to be cut
 * inside a character: asking for stats then corrupted the worker's heap. */
Test(stats_names, a_long_multibyte_content_type_is_counted_and_reported)
{
    pb_daemon d;
    pb_daemon_start(&d, PB_T_CONF_HEAD LISTENER STATS_PLUGINS
                    "routes = ( { content_type = \"text/json\"; action = \"stats\";\n"
                    "             plugin = \"stats\"; },\n"
                    "           { content_type = \"" LONG_TYPE "\"; plugin = \"echo\"; } );\n");
    echo(&d, LONG_TYPE);
    echo(&d, LONG_TYPE);
    for (int i = 0; i < 20; i++) {
        json_t *s = pb_t_stats(&d);
        cr_assert_eq(route_messages(s, "2: text/\xc3\xa9\xc3\xa9"), 2,
                     "the long route is not reported with its 2 messages");
        json_decref(s);
    }
    echo(&d, LONG_TYPE);
    pb_daemon_stop_clean(&d);
}

/* --- Reloads that rename routes ------------------------------------------------ */

#define ROUTES_PER_RELOAD 40

/* A configuration whose routes carry the generation in their content type. */
static void write_generation(const pb_daemon *d, int generation, char *out,
                             size_t cap)
{
    int n = snprintf(out, cap, PB_T_CONF_HEAD LISTENER STATS_PLUGINS
                     "routes = ( { content_type = \"text/json\"; action = \"stats\";\n"
                     "             plugin = \"stats\"; }");
    for (int i = 0; i < ROUTES_PER_RELOAD; i++)
        n += snprintf(out + n, cap - (size_t)n,
                      ",\n { content_type = \"text/g%d-%d\"; plugin = \"echo\"; }",
                      generation, i);
    snprintf(out + n, cap - (size_t)n, " );\n");
    if (d != NULL)
        pb_daemon_write_config(d, out);
}

static void wait_for_generation(const pb_daemon *d, long long generation)
{
    for (int i = 0; i < 300; i++) {
        json_t *s = pb_t_stats(d);
        long long g = json_integer_value(json_object_get(s, "generation"));
        json_decref(s);
        if (g == generation)
            return;
        nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
    }
    pb_t_fail(d, __FILE__, __LINE__, "generation %lld never came", generation);
}

/* A worker has 64 entries per table: they used to be spent after a couple
 * of reloads, and routes added later went uncounted. */
Test(stats_names, routes_renamed_by_reloads_are_counted)
{
    static char config[16384];
    pb_daemon d;
    write_generation(NULL, 0, config, sizeof config);
    pb_daemon_start(&d, config);
    for (int generation = 0; generation < 4; generation++) {
        if (generation > 0) {
            write_generation(&d, generation, config, sizeof config);
            pb_daemon_signal(&d, SIGHUP);
            wait_for_generation(&d, generation + 1);
        }
        char type[32], route[48];
        snprintf(type, sizeof type, "text/g%d-%d", generation, ROUTES_PER_RELOAD - 1);
        snprintf(route, sizeof route, "%d: %s ->", ROUTES_PER_RELOAD + 1, type);
        echo(&d, type);
        json_t *s = pb_t_stats(&d);
        cr_assert_eq(route_messages(s, route), 1, "generation %d: \"%s\" uncounted",
                     generation, route);
        json_decref(s);
    }
    pb_daemon_stop_clean(&d);
}

/*
 * test_cli.c - the command lines: plugboard -V, -t on good and bad
 * configurations, a port already in use, and plugboard-cli's forms against
 * a running daemon, in the clear and over TLS, and its --follow mode; and
 * that plugboard-broker-bench counts what it measures.
 */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <plugboard/plugin.h>

#include "frame.h"
#include "harness.h"

TestSuite(cli, .init = pb_harness_init, .fini = pb_harness_cleanup,
          .timeout = 180);

#define BASE PB_T_CONF_HEAD PB_T_CONF_PLUGINS PB_T_CONF_ROUTES

/* The standard listeners plus a line listener pinned to upper on PORT2. */
#define CLI_CONF \
    BASE "listeners = (\n" \
    "  { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; },\n" \
    "  { address = \"127.0.0.1\"; port = @PORT1@; framing = \"line\"; plugin = \"echo\"; },\n" \
    "  { address = \"127.0.0.1\"; port = @PORT2@; framing = \"line\"; plugin = \"upper\"; },\n" \
    "  { path = \"@SOCK@\"; framing = \"frame\"; }\n" \
    ");\n"

static const char *const plugin_env[] = {
    "PLUGBOARD_PLUGIN_DIR=" PB_TEST_PLUGIN_DIR, NULL
};

static void show(const pb_run_result *r, char *out, size_t cap)
{
    char *o = pb_t_escape(r->out, r->out_len);
    char *e = pb_t_escape(r->err, r->err_len);

    snprintf(out, cap, "exit status %d\nstdout: %s\nstderr: %s", r->status,
             o ? o : "?", e ? e : "?");
    free(o);
    free(e);
}

#define expect_run(d, r, cond, what) \
    do { \
        if (!(cond)) { \
            char shown_[8192]; \
            show((r), shown_, sizeof shown_); \
            pb_t_fail((d), __FILE__, __LINE__, "%s\n%s", (what), shown_); \
        } \
    } while (0)

/* --- plugboard ----------------------------------------------------------- */

static void run_daemon(const char *flag, const char *config, pb_run_result *r)
{
    const char *argv[] = { PB_T_DAEMON_BIN, flag, "-c", config, NULL };

    pb_run(argv, plugin_env, NULL, 0, r);
}

Test(cli, daemon_version)
{
    const char *argv[] = { PB_T_DAEMON_BIN, "-V", NULL };
    char want[128];
    pb_run_result r;

    pb_run(argv, NULL, NULL, 0, &r);
    snprintf(want, sizeof want, "plugboard %s (plugin ABI %d)\n", PACKAGE_VERSION,
             PLUGBOARD_ABI_VERSION);
    expect_run(NULL, &r, r.status == 0 && strcmp(r.out, want) == 0, want);
    pb_run_free(&r);
}

Test(cli, daemon_usage_error)
{
    const char *argv[] = { PB_T_DAEMON_BIN, "--no-such-option", NULL };
    pb_run_result r;

    pb_run(argv, NULL, NULL, 0, &r);
    expect_run(NULL, &r, r.status == 64 && r.err_len > 0, "wanted exit 64 and a message");
    pb_run_free(&r);
}

Test(cli, test_bundled_config)
{
    char want[512];
    pb_run_result r;

    run_daemon("-t", PB_T_BUNDLED_CONF, &r);
    snprintf(want, sizeof want, "%s: configuration OK\n", PB_T_BUNDLED_CONF);
    expect_run(NULL, &r, r.status == 0 && strcmp(r.out, want) == 0, want);
    pb_run_free(&r);
}

Test(cli, test_generated_config)
{
    char want[512];
    pb_run_result r;
    pb_daemon d;

    pb_daemon_prepare(&d, CLI_CONF);
    run_daemon("--test", d.config_path, &r);
    snprintf(want, sizeof want, "%s: configuration OK\n", d.config_path);
    expect_run(NULL, &r, r.status == 0 && strcmp(r.out, want) == 0, want);
    pb_run_free(&r);
}

/* -t on the template must exit 78 and report FILE:LINE for each line in
 * `lines` (0-terminated), each with `word` in the message if not NULL. */
static void expect_config_errors(const char *config_template, const int *lines,
                                 const char *word)
{
    char want[512];
    pb_run_result r;
    pb_daemon d;

    pb_daemon_prepare(&d, config_template);
    run_daemon("-t", d.config_path, &r);
    expect_run(NULL, &r, r.status == 78, "wanted exit status 78 (EX_CONFIG)");
    for (size_t i = 0; lines[i]; i++) {
        char *at;

        snprintf(want, sizeof want, "%s:%d: ", d.config_path, lines[i]);
        at = strstr(r.err, want);
        expect_run(NULL, &r, at != NULL, want);
        if (word) {
            char *end = strchr(at, '\n');

            expect_run(NULL, &r, end && memmem(at, (size_t)(end - at), word, strlen(word)),
                       word);
        }
    }
    snprintf(want, sizeof want, "%s: configuration has errors\n", d.config_path);
    expect_run(NULL, &r, strstr(r.err, want) != NULL, want);
    expect_run(NULL, &r, strstr(r.out, "configuration OK") == NULL,
               "an erroneous configuration reported OK");
    pb_run_free(&r);
}

/* PB_T_CONF_HEAD is lines 1-3: the lines below start at 4. */
Test(cli, test_misspelled_keys)
{
    static const int lines[] = { 5, 0 };

    expect_config_errors(PB_T_CONF_HEAD
                         "limits = {\n"
                         "  max_conections = 5;\n"
                         "};\n"
                         PB_T_CONF_PLUGINS PB_T_CONF_ROUTES PB_T_CONF_LISTENERS,
                         lines, "max_conections");
}

Test(cli, test_reports_every_error)
{
    static const int lines[] = { 4, 6, 0 };

    expect_config_errors(PB_T_CONF_HEAD
                         "listners = ();\n"
                         "limits = {\n"
                         "  idle_timout = 5.0;\n"
                         "};\n"
                         PB_T_CONF_PLUGINS PB_T_CONF_ROUTES PB_T_CONF_LISTENERS,
                         lines, NULL);
}

Test(cli, test_mistyped_value)
{
    static const int lines[] = { 5, 0 };

    expect_config_errors(PB_T_CONF_HEAD
                         "listeners = (\n"
                         "  { address = \"127.0.0.1\"; port = \"65432\"; framing = \"frame\"; }\n"
                         ");\n"
                         PB_T_CONF_PLUGINS PB_T_CONF_ROUTES,
                         lines, NULL);
}

Test(cli, test_syntax_error)
{
    static const int lines[] = { 5, 0 };

    expect_config_errors(PB_T_CONF_HEAD
                         "limits = {\n"
                         "  max_connections = ;\n"
                         "};\n"
                         PB_T_CONF_PLUGINS PB_T_CONF_ROUTES PB_T_CONF_LISTENERS,
                         lines, NULL);
}

Test(cli, test_unknown_module)
{
    static const int lines[] = { 5, 0 };

    expect_config_errors(PB_T_CONF_HEAD
                         "plugins = (\n"
                         "  { name = \"ghost\"; module = \"nosuchmodule\"; },\n"
                         "  { name = \"echo\"; module = \"echo\"; }\n"
                         ");\n"
                         "routes = ( { plugin = \"echo\"; } );\n"
                         PB_T_CONF_LISTENERS,
                         lines, "nosuchmodule");
}

Test(cli, test_module_outside_plugin_dir)
{
    static const int lines[] = { 5, 0 };

    expect_config_errors(PB_T_CONF_HEAD
                         "plugins = (\n"
                         "  { name = \"echo\"; module = \"../plugins/echo\"; }\n"
                         ");\n"
                         "routes = ( { plugin = \"echo\"; } );\n"
                         PB_T_CONF_LISTENERS,
                         lines, NULL);
}

Test(cli, test_route_to_unknown_instance)
{
    static const int lines[] = { 7, 0 };

    expect_config_errors(PB_T_CONF_HEAD
                         "plugins = (\n"
                         "  { name = \"echo\"; module = \"echo\"; }\n"
                         ");\n"
                         "routes = ( { plugin = \"nope\"; } );\n"
                         PB_T_CONF_LISTENERS,
                         lines, "nope");
}

/* What only a start would otherwise find: -t checks it too. */
Test(cli, test_catches_what_a_start_would)
{
    static const int lines[] = { 4, 6, 7, 0 };

    expect_config_errors(PB_T_CONF_HEAD
                         "user = \"no-such-user-here\";\n"
                         "listeners = (\n"
                         "  { name = \"app\"; address = \"no-such-host.invalid\"; port = @PORT0@; },\n"
                         "  { name = \"u\"; path = \"/tmp/"
                         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sock\"; }\n"
                         ");\n"
                         PB_T_CONF_PLUGINS PB_T_CONF_ROUTES,
                         lines, NULL);
}

Test(cli, port_in_use)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    char port[16];
    pb_run_result r;
    pb_daemon d;
    int fd;

    pb_daemon_prepare(&d, BASE "listeners = ( { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; } );\n");
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)d.port[0]);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0
              && listen(fd, 1) == 0, "cannot occupy port %d", d.port[0]);
    run_daemon("-f", d.config_path, &r);
    close(fd);
    snprintf(port, sizeof port, "%d", d.port[0]);
    expect_run(NULL, &r, r.status == 1, "wanted exit status 1 for a port in use");
    expect_run(NULL, &r, strstr(r.err, "127.0.0.1") && strstr(r.err, port),
               "wanted a message naming the address and port");
    pb_run_free(&r);
}

/* --- plugboard-cli ------------------------------------------------------- */

typedef struct cli_case {
    const char *args[12];   /* after the program; "@PORTn@", "@SOCK@" are replaced */
    const char *input;
    int status;
    const char *out;        /* exact stdout */
    const char *err;        /* stderr starts with this; NULL: stderr empty */
} cli_case;

static void run_cli(const pb_daemon *d, const cli_case *c)
{
    const char *argv[14] = { PB_T_CLI_BIN };
    char ports[PB_T_PORTS][16], what[512];
    pb_run_result r;
    size_t n = 1;

    for (int i = 0; i < PB_T_PORTS; i++)
        snprintf(ports[i], sizeof ports[i], "%d", d->port[i]);
    for (size_t i = 0; c->args[i]; i++) {
        const char *a = c->args[i];

        if (strcmp(a, "@SOCK@") == 0)
            a = d->sock_path;
        else if (strncmp(a, "@PORT", 5) == 0)
            a = ports[a[5] - '0'];
        argv[n++] = a;
    }
    pb_run(argv, NULL, c->input, c->input ? strlen(c->input) : 0, &r);
    snprintf(what, sizeof what, "plugboard-cli %s %s %s %s %s: wanted status %d, stdout \"%s\"",
             c->args[0], c->args[1] ? c->args[1] : "", c->args[1] && c->args[2] ? c->args[2] : "",
             c->args[1] && c->args[2] && c->args[3] ? c->args[3] : "",
             c->args[1] && c->args[2] && c->args[3] && c->args[4] ? c->args[4] : "",
             c->status, c->out);
    expect_run(d, &r, r.status == c->status && strcmp(r.out, c->out) == 0, what);
    if (c->err)
        expect_run(d, &r, strncmp(r.err, c->err, strlen(c->err)) == 0, c->err);
    else
        expect_run(d, &r, r.err_len == 0, "wanted nothing on stderr");
    pb_run_free(&r);
}

static void run_cli_cases(const cli_case *cases, size_t n)
{
    pb_daemon d;

    pb_daemon_start(&d, CLI_CONF);
    for (size_t i = 0; i < n; i++)
        run_cli(&d, &cases[i]);
    pb_daemon_stop_clean(&d);
}

Test(cli, guide_client_forms)
{
    static const cli_case cases[] = {
        { { "127.0.0.1", "@PORT0@", "search", "morpheus" }, NULL, 0,
          "Follow the white rabbit. \xf0\x9f\x90\xb0\n", NULL },
        { { "127.0.0.1", "@PORT0@", "search", "ring" }, NULL, 0,
          "In the caves beneath the Misty Mountains. \xf0\x9f\x92\x8d\n", NULL },
        { { "127.0.0.1", "@PORT0@", "search", "\xf0\x9f\x90\xb6" }, NULL, 0,
          "\xf0\x9f\x90\xbe Playing ball! \xf0\x9f\x8f\x90\n", NULL },
        { { "127.0.0.1", "@PORT0@", "search", "x" }, NULL, 0, "No match for \"x\".\n", NULL },
        { { "127.0.0.1", "@PORT0@", "binary", "\xf0\x9f\x98\x83" }, NULL, 0,
          "First 10 bytes of request: binary\xf0\x9f\x98\x83\n", NULL },
        { { "-u", "@SOCK@", "search", "morpheus" }, NULL, 0,
          "Follow the white rabbit. \xf0\x9f\x90\xb0\n", NULL },
    };

    run_cli_cases(cases, sizeof cases / sizeof cases[0]);
}

Test(cli, json_forms)
{
    static const cli_case cases[] = {
        { { "127.0.0.1", "@PORT0@", "--json", "{\"action\": \"search\", \"value\": \"ring\"}" },
          NULL, 0, "In the caves beneath the Misty Mountains. \xf0\x9f\x92\x8d\n", NULL },
        { { "127.0.0.1", "@PORT0@", "--json", "{\"action\": \"upper\", \"value\": \"stra\xc3\x9f" "e\"}" },
          NULL, 0, "STRASSE\n", NULL },
        /* a reply without "result": its JSON text */
        { { "127.0.0.1", "@PORT0@", "--json", "{\"action\": \"echo\", \"n\": [1, 2]}" },
          NULL, 0, "{\"action\": \"echo\", \"n\": [1, 2]}\n", NULL },
        { { "-u", "@SOCK@", "-j", "{\"action\": \"fly\", \"value\": \"x\"}" },
          NULL, 0, "Error: invalid action \"fly\".\n", NULL },
        { { "-r", "127.0.0.1", "@PORT0@", "search", "morpheus" }, NULL, 0,
          "{\"result\": \"Follow the white rabbit. \xf0\x9f\x90\xb0\"}", NULL },
        /* JSON objects as arguments: each a request, replies in order */
        { { "127.0.0.1", "@PORT0@", "{\"action\": \"upper\", \"value\": \"ab\"}",
            " {\"action\": \"search\", \"value\": \"ring\"}" },
          NULL, 0, "AB\nIn the caves beneath the Misty Mountains. \xf0\x9f\x92\x8d\n", NULL },
        { { "-u", "@SOCK@", "{\"action\": \"echo\"}" }, NULL, 0, "{\"action\": \"echo\"}\n",
          NULL },
        /* every reply is printed, and one error makes the exit status 1 */
        { { "127.0.0.1", "@PORT0@", "{\"action\": \"upper\", \"value\": \"\\u00ff\"}",
            "{\"action\": \"upper\", \"value\": 1}", "{\"action\": \"upper\", \"value\": \"c\"}" },
          NULL, 1, "\xc5\xb8\nC\n", "plugboard-cli: plugin_failed: " },
    };

    run_cli_cases(cases, sizeof cases / sizeof cases[0]);
}

Test(cli, file_forms)
{
    char file[256];
    pb_daemon d;
    cli_case cases[] = {
        { { "127.0.0.1", "@PORT0@", "--file", file, "--type", "text/plain" }, NULL, 0,
          "file contents\nsecond line\n\n", NULL },
        { { "127.0.0.1", "@PORT0@", "--file", file }, NULL, 0,
          "First 10 bytes of request: file conte\n", NULL },
        { { "127.0.0.1", "@PORT0@", "-f", "-", "-T", "binary/custom-client-binary-type" },
          "0123456789abcdef", 0, "First 10 bytes of request: 0123456789\n", NULL },
    };

    pb_daemon_start(&d, CLI_CONF);
    snprintf(file, sizeof file, "%s/request.txt", d.dir);
    pb_t_write_file(file, "file contents\nsecond line\n", 26);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_cli(&d, &cases[i]);
    pb_daemon_stop_clean(&d);
}

Test(cli, line_forms)
{
    static const cli_case cases[] = {
        { { "127.0.0.1", "@PORT1@", "--line", "hi", "there" }, NULL, 0, "hi\nthere\n", NULL },
        { { "127.0.0.1", "@PORT1@", "-l" }, "from\nstdin\n", 0, "from\nstdin\n", NULL },
        { { "127.0.0.1", "@PORT2@", "--line", "stra\xc3\x9f" "e" }, NULL, 0, "STRASSE\n", NULL },
        { { "127.0.0.1", "@PORT2@", "--line", "bad \xff" }, NULL, 1, "",
          "plugboard-cli: plugin_failed: " },
    };

    run_cli_cases(cases, sizeof cases / sizeof cases[0]);
}

Test(cli, header_option)
{
    pb_buf header = PB_BUF_INIT;
    char want[256];
    cli_case c = {
        { "-H", "127.0.0.1", "@PORT0@", "search", "morpheus" }, NULL, 0,
        "Follow the white rabbit. \xf0\x9f\x90\xb0\n", want
    };
    pb_daemon d;

    cr_assert_eq(pb_frame_encode_header(&header, "text/json", "utf-8", 43), 0);
    snprintf(want, sizeof want, "%.*s\n", (int)(pb_buf_used(&header) - 2),
             (const char *)pb_buf_head(&header) + 2);
    pb_buf_free(&header);
    pb_daemon_start(&d, CLI_CONF);
    run_cli(&d, &c);
    pb_daemon_stop_clean(&d);
}

Test(cli, error_reply_exits_1)
{
    char file[256];
    pb_daemon d;
    cli_case c = {
        { "127.0.0.1", "@PORT0@", "--file", file, "--type", "text/json" }, NULL, 1, "",
        "plugboard-cli: bad_json: "
    };

    pb_daemon_start(&d, CLI_CONF);
    snprintf(file, sizeof file, "%s/broken.json", d.dir);
    pb_t_write_file(file, "{oops", 5);
    run_cli(&d, &c);
    pb_daemon_stop_clean(&d);
}

Test(cli, refused_connection_exits_3)
{
    const char *argv[] = { PB_T_CLI_BIN, "127.0.0.1", NULL, "search", "morpheus", NULL };
    char port[16];
    pb_run_result r;

    snprintf(port, sizeof port, "%d", pb_t_free_port());
    argv[2] = port;
    pb_run(argv, NULL, NULL, 0, &r);
    expect_run(NULL, &r, r.status == 3 && r.out_len == 0, "wanted exit status 3");
    expect_run(NULL, &r, strstr(r.err, "127.0.0.1") && strstr(r.err, port),
               "wanted a message naming the address");
    pb_run_free(&r);

    argv[1] = "-u";
    argv[2] = "/nonexistent/plugboard.sock";
    pb_run(argv, NULL, NULL, 0, &r);
    expect_run(NULL, &r, r.status == 3 && strstr(r.err, "/nonexistent/plugboard.sock"),
               "wanted exit status 3 and a message naming the socket");
    pb_run_free(&r);
}

/* The stats plugin on the frame listener and the socket. */
#define STATS_CONF \
    PB_T_CONF_HEAD "listeners = (\n" \
    "  { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; },\n" \
    "  { path = \"@SOCK@\"; framing = \"frame\"; }\n" \
    ");\n" \
    "plugins = (\n" \
    "  { name = \"echo\";  module = \"echo\"; },\n" \
    "  { name = \"stats\"; module = \"stats\"; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"echo\"; }\n" \
    ");\n"

static void run_args(const pb_daemon *d, const char *const args[], pb_run_result *r)
{
    const char *argv[10] = { PB_T_CLI_BIN };
    size_t n = 1;

    for (size_t i = 0; args[i] != NULL; i++)
        argv[n++] = strcmp(args[i], "@SOCK@") == 0 ? d->sock_path : args[i];
    pb_run(argv, NULL, NULL, 0, r);
}

/* The stats reply printed as JSON: the daemon's object, one echo counted. */
static void expect_stats_json(const pb_daemon *d, const char *const args[], const char *end)
{
    pb_run_result r;
    json_error_t error;

    run_args(d, args, &r);
    expect_run(d, &r, r.status == 0 && r.err_len == 0, "wanted the stats reply");
    json_t *stats = json_loadb(r.out, r.out_len, 0, &error);
    expect_run(d, &r, json_is_object(stats), "wanted a JSON object");
    expect_run(d, &r, json_integer_value(json_object_get(json_object_get(
                   json_object_get(stats, "plugins"), "echo"), "messages")) == 1,
               "wanted plugins.echo.messages 1");
    expect_run(d, &r, strcmp(r.out + r.out_len - strlen(end), end) == 0,
               "wanted the reply to end so");
    json_decref(stats);
    pb_run_free(&r);
}

Test(cli, stats_forms)
{
    static const char *const echo[] = { "-u", "@SOCK@", "{\"action\": \"echo\"}", NULL };
    static const char *const table[] = { "-u", "@SOCK@", "stats", NULL };
    pb_run_result r;
    pb_daemon d;

    pb_daemon_start(&d, STATS_CONF);
    run_args(&d, echo, &r);
    expect_run(&d, &r, r.status == 0, "wanted the echo");
    pb_run_free(&r);

    /* By default, a summary and aligned tables. */
    run_args(&d, table, &r);
    expect_run(&d, &r, r.status == 0 && r.err_len == 0, "wanted the stats table");
    static const char *const lines[] = {
        "\nuptime       ", "\ngeneration   1 (0 reloads, 0 failed)\n",
        "\nworkers      1 (0 restarts)\n", "\nerrors       none\n",
        /* Latency and pid columns are as wide as their figures. */
        "\nPLUGIN  MESSAGES  ERRORS  ", "\necho           1       0  ",
        "\nWORKER  ", "PID  CONNECTIONS  MESSAGES\n",
        "\nLISTENER  ",
        "\nROUTE                               MESSAGES  ERRORS\n"
        "1: text/json action stats -> stats         ",
        "\n2: text/json -> echo                       1       0\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        expect_run(&d, &r, strstr(r.out, lines[i] + (i == 0)) != NULL, lines[i]);
    expect_run(&d, &r, strncmp(r.out, "uptime       ", 13) == 0, "wanted the uptime first");
    pb_run_free(&r);

    /* --json, after stats or with stats as its TEXT: the reply's object. */
    static const char *const json_after[] = { "-u", "@SOCK@", "stats", "--json", NULL };
    static const char *const json_short[] = { "-u", "@SOCK@", "stats", "-j", NULL };
    static const char *const json_before[] = { "--json", "stats", "-u", "@SOCK@", NULL };
    static const char *const raw[] = { "-r", "-u", "@SOCK@", "stats", NULL };
    expect_stats_json(&d, json_after, "}\n");
    expect_stats_json(&d, json_short, "}\n");
    expect_stats_json(&d, json_before, "}\n");
    /* --raw: the content exactly as it came. */
    expect_stats_json(&d, raw, "}");

    /* --json without TEXT is for stats only. */
    static const char *const no_text[] = { "-u", "@SOCK@", "search", "--json", NULL };
    run_args(&d, no_text, &r);
    expect_run(&d, &r, r.status == 2 && strstr(r.err, "'--json' needs an argument") != NULL,
               "wanted a usage error");
    pb_run_free(&r);
    pb_daemon_stop_clean(&d);
}

Test(cli, usage_errors_exit_2)
{
    const char *const usages[][8] = {
        { PB_T_CLI_BIN, NULL },
        { PB_T_CLI_BIN, "127.0.0.1", "1", "--json", "{oops", NULL },
        { PB_T_CLI_BIN, "127.0.0.1", "1", "{oops", NULL },
        { PB_T_CLI_BIN, "127.0.0.1", "1", "{\"action\": \"echo\"}", "echo", NULL },
        { PB_T_CLI_BIN, "--follow", "--line", "127.0.0.1", "1", "hi", NULL },
    };
    pb_run_result r;

    for (size_t i = 0; i < sizeof usages / sizeof usages[0]; i++) {
        pb_run(usages[i], NULL, NULL, 0, &r);
        expect_run(NULL, &r, r.status == 2 && r.err_len > 0 && r.out_len == 0,
                   "wanted exit status 2 and a message");
        pb_run_free(&r);
    }
}

/* --- plugboard-cli over TLS ---------------------------------------------- */

/* TLS on every listener: PORT0 frame, PORT1 line pinned to echo, PORT2
 * frame asking for a client certificate, SOCK frame. */
#define TLS_CONF \
    BASE "listeners = (\n" \
    "  { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\";\n" \
    "    tls = { certificate = \"@DIR@/server.crt\"; key = \"@DIR@/server.key\"; }; },\n" \
    "  { address = \"127.0.0.1\"; port = @PORT1@; framing = \"line\"; plugin = \"echo\";\n" \
    "    tls = { certificate = \"@DIR@/server.crt\"; key = \"@DIR@/server.key\"; }; },\n" \
    "  { address = \"127.0.0.1\"; port = @PORT2@; framing = \"frame\";\n" \
    "    tls = { certificate = \"@DIR@/server.crt\"; key = \"@DIR@/server.key\";\n" \
    "            ca = \"@DIR@/ca.crt\"; verify_client = \"require\"; }; },\n" \
    "  { path = \"@SOCK@\"; framing = \"frame\";\n" \
    "    tls = { certificate = \"@DIR@/server.crt\"; key = \"@DIR@/server.key\"; }; }\n" \
    ");\n"

/* A failure whose message holds `reason` somewhere after the address. */
static void expect_cli_failure(const pb_daemon *d, const char *const args[], int status,
                               const char *reason)
{
    const char *argv[14] = { PB_T_CLI_BIN };
    char ports[PB_T_PORTS][16], what[256];
    pb_run_result r;
    size_t n = 1;

    for (int i = 0; i < PB_T_PORTS; i++)
        snprintf(ports[i], sizeof ports[i], "%d", d->port[i]);
    for (size_t i = 0; args[i]; i++)
        argv[n++] = strncmp(args[i], "@PORT", 5) == 0 ? ports[args[i][5] - '0'] : args[i];
    pb_run(argv, NULL, NULL, 0, &r);
    snprintf(what, sizeof what, "wanted exit status %d and \"%s\" on stderr", status, reason);
    expect_run(d, &r, r.status == status && r.out_len == 0 && strstr(r.err, reason), what);
    pb_run_free(&r);
}

/* The certificates of tests/tls/make-certs.sh, and client.pem: the client
 * certificate with its key in the same file. */
static void make_certificates(const char *dir, char *ca, char *pem, size_t cap)
{
    char crt[256], key[256];
    size_t crt_len, key_len;
    pb_buf both = PB_BUF_INIT;

    pb_t_make_certs(dir);
    snprintf(ca, cap, "%s/ca.crt", dir);
    snprintf(pem, cap, "%s/client.pem", dir);
    snprintf(crt, sizeof crt, "%s/client.crt", dir);
    snprintf(key, sizeof key, "%s/client.key", dir);
    char *crt_text = pb_t_read_file(crt, &crt_len);
    char *key_text = pb_t_read_file(key, &key_len);
    cr_assert(crt_text != NULL && key_text != NULL);
    cr_assert(pb_buf_append(&both, crt_text, crt_len) == 0
              && pb_buf_append(&both, key_text, key_len) == 0);
    pb_t_write_file(pem, pb_buf_head(&both), pb_buf_used(&both));
    pb_buf_free(&both);
    free(crt_text);
    free(key_text);
}

Test(cli, tls_forms)
{
    char ca[256], pem[256];
    pb_daemon d;
    const cli_case cases[] = {
        { { "--tls", "--ca", ca, "127.0.0.1", "@PORT0@", "search", "morpheus" }, NULL, 0,
          "Follow the white rabbit. \xf0\x9f\x90\xb0\n", NULL },
        /* the name, not the address, is verified, and sent as SNI */
        { { "--ca", ca, "localhost", "@PORT0@", "search", "morpheus" }, NULL, 0,
          "Follow the white rabbit. \xf0\x9f\x90\xb0\n", NULL },
        { { "--ca", ca, "--line", "127.0.0.1", "@PORT1@", "hi", "there" }, NULL, 0,
          "hi\nthere\n", NULL },
        { { "--ca", ca, "-l", "127.0.0.1", "@PORT1@" }, "from\nstdin", 0, "from\nstdin\n", NULL },
        { { "--ca", ca, "--cert", pem, "127.0.0.1", "@PORT2@", "search", "morpheus" }, NULL, 0,
          "Follow the white rabbit. \xf0\x9f\x90\xb0\n", NULL },
        { { "--ca", ca, "--servername", "localhost", "-u", "@SOCK@", "search", "morpheus" },
          NULL, 0, "Follow the white rabbit. \xf0\x9f\x90\xb0\n", NULL },
        { { "--insecure", "-u", "@SOCK@", "search", "morpheus" }, NULL, 0,
          "Follow the white rabbit. \xf0\x9f\x90\xb0\n", NULL },
        { { "--insecure", "127.0.0.1", "@PORT0@", "search", "morpheus" }, NULL, 0,
          "Follow the white rabbit. \xf0\x9f\x90\xb0\n", NULL },
        { { "--tls", "-u", "@SOCK@", "search", "morpheus" }, NULL, 2, "",
          "plugboard-cli: TLS over -u PATH needs --servername" },
        { { "--ca", "/nonexistent/ca.crt", "127.0.0.1", "@PORT0@", "search", "morpheus" },
          NULL, 2, "", "plugboard-cli: --ca /nonexistent/ca.crt: No such file or directory\n" },
        { { "--key", pem, "127.0.0.1", "@PORT0@", "search", "morpheus" }, NULL, 2, "",
          "plugboard-cli: --key needs --cert" },
    };
    const char *unknown_ca[] = { "--tls", "127.0.0.1", "@PORT0@", "search", "morpheus", NULL };
    const char *wrong_name[] = { "--ca", ca, "--servername", "wrong.example", "127.0.0.1",
                                 "@PORT0@", "search", "morpheus", NULL };
    const char *no_client_cert[] = { "--ca", ca, "127.0.0.1", "@PORT2@", "search", "morpheus",
                                     NULL };
    const char *plain_client[] = { "-w", "5", "127.0.0.1", "@PORT0@", "search", "morpheus",
                                   NULL };

    pb_daemon_prepare(&d, TLS_CONF);
    make_certificates(d.dir, ca, pem, sizeof ca);
    pb_daemon_launch(&d, TLS_CONF);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_cli(&d, &cases[i]);

    expect_cli_failure(&d, unknown_ca, 3, ": certificate verification failed: unable to get "
                       "local issuer certificate\n");
    expect_cli_failure(&d, wrong_name, 3, ": certificate verification failed: hostname "
                       "mismatch for wrong.example\n");
    /* TLS 1.3 finishes the client's handshake before the daemon judges its
     * certificate: the refusal comes as an alert in place of the reply. */
    expect_cli_failure(&d, no_client_cert, 3, "certificate required");
    /* A client without TLS gets no reply, and no hang. */
    expect_cli_failure(&d, plain_client, 3, "connection closed without a reply");
    pb_daemon_stop_clean(&d);
}

/* --- plugboard-cli --follow ---------------------------------------------- */

#define FIXTURES PB_TEST_BUILDDIR "/tests/fixtures/.libs"

/* The runtime fixture holds subscribers and pushes {"message": VALUE} to
 * them on each publish. */
#define FOLLOW_CONF \
    PB_T_CONF_HEAD "workers = 1;\n" \
    "listeners = ( { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; } );\n" \
    "plugins = ( { name = \"rt\"; module = \"" FIXTURES "/runtime.so\"; } );\n" \
    "routes = ( { content_type = \"text/json\"; plugin = \"rt\"; } );\n"

/* plugboard-cli running in the background, its output read as it comes
 * through pipes. */
typedef struct follower {
    pid_t pid;
    int out_fd, err_fd;         /* -1 once at end of file */
    pb_buf out, err;
} follower;

static void follower_start(follower *f, const char *const argv[])
{
    int out[2], err[2];

    cr_assert(pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0);
    memset(f, 0, sizeof *f);
    f->pid = fork();
    cr_assert(f->pid >= 0, "fork: %s", strerror(errno));
    if (f->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int in = open("/dev/null", O_RDONLY);
        if (in < 0 || dup2(in, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    f->out_fd = out[0];
    f->err_fd = err[0];
}

/* Reads what the follower wrote until stdout holds `lines` lines or both
 * pipes are at end of file (a hang guard, not a timing assertion). */
static void follower_read(follower *f, int lines)
{
    struct timespec start, now;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int have = 0;
        for (size_t i = 0; i < pb_buf_used(&f->out); i++)
            have += ((const char *)pb_buf_head(&f->out))[i] == '\n';
        if ((lines > 0 && have >= lines) || (f->out_fd < 0 && f->err_fd < 0))
            return;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long waited_ms = (now.tv_sec - start.tv_sec) * 1000
                         + (now.tv_nsec - start.tv_nsec) / 1000000;
        cr_assert(waited_ms < PB_T_TIMEOUT_MS, "plugboard-cli --follow: wanted %d lines, has "
                  "\"%.*s\"", lines, (int)pb_buf_used(&f->out), (const char *)pb_buf_head(&f->out));
        struct pollfd p[2] = { { .fd = f->out_fd, .events = POLLIN },
                               { .fd = f->err_fd, .events = POLLIN } };
        if (poll(p, 2, 100) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            int *fd = i == 0 ? &f->out_fd : &f->err_fd;
            if (*fd < 0 || p[i].revents == 0)
                continue;
            char chunk[4096];
            ssize_t n = read(*fd, chunk, sizeof chunk);
            if (n > 0) {
                cr_assert(pb_buf_append(i == 0 ? &f->out : &f->err, chunk, (size_t)n) == 0);
            } else if (n == 0 || errno != EINTR) {
                close(*fd);
                *fd = -1;
            }
        }
    }
}

/* Reads the rest and waits for the exit: its status; stdout and stderr
 * NUL-terminated in f. */
static int follower_finish(follower *f)
{
    int status;

    follower_read(f, 0);
    cr_assert(waitpid(f->pid, &status, 0) == f->pid);
    cr_assert(pb_buf_append_byte(&f->out, '\0') == 0 && pb_buf_append_byte(&f->err, '\0') == 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void follower_free(follower *f)
{
    pb_buf_free(&f->out);
    pb_buf_free(&f->err);
}

static void publish(const pb_daemon *d, const char *value, const char *subscribers)
{
    char request[256];
    int fd = pb_dial(d, 0);

    snprintf(request, sizeof request, "{\"action\": \"publish\", \"value\": \"%s\"}", value);
    pb_t_send_frame(d, fd, "text/json", "utf-8", request, strlen(request));
    char *took = pb_t_recv_result(d, fd);
    cr_expect_str_eq(took, subscribers, "subscribers a publish reached");
    free(took);
    close(fd);
}

Test(cli, follow_prints_pushes_until_interrupted)
{
    char port[16];
    pb_daemon d;
    follower f;

    pb_daemon_start(&d, FOLLOW_CONF);
    snprintf(port, sizeof port, "%d", d.port[0]);
    const char *const argv[] = { PB_T_CLI_BIN, "--follow", "127.0.0.1", port,
                                 "{\"action\": \"subscribe\", \"value\": \"subscribed\"}",
                                 "{\"action\": \"now\", \"value\": \"second reply\"}", NULL };
    follower_start(&f, argv);
    follower_read(&f, 2);
    publish(&d, "one", "1");
    publish(&d, "two", "1");
    follower_read(&f, 4);
    cr_assert(kill(f.pid, SIGINT) == 0);
    int status = follower_finish(&f);
    cr_expect_eq(status, 0, "exit status %d after SIGINT, stderr: %s", status,
                 (const char *)pb_buf_head(&f.err));
    cr_expect_str_eq((const char *)pb_buf_head(&f.out),
                     "subscribed\nsecond reply\n{\"message\": \"one\"}\n{\"message\": \"two\"}\n");
    cr_expect_str_eq((const char *)pb_buf_head(&f.err), "");
    follower_free(&f);

    /* SIGTERM ends it alike; --raw prints each content on a line. */
    const char *const raw[] = { PB_T_CLI_BIN, "-F", "-r", "127.0.0.1", port,
                                "{\"action\": \"subscribe\", \"value\": \"s\"}", NULL };
    follower_start(&f, raw);
    follower_read(&f, 1);
    publish(&d, "three", "1");
    follower_read(&f, 2);
    cr_assert(kill(f.pid, SIGTERM) == 0);
    status = follower_finish(&f);
    cr_expect_eq(status, 0, "exit status %d after SIGTERM", status);
    cr_expect_str_eq((const char *)pb_buf_head(&f.out),
                     "{\"result\": \"s\"}\n{\"message\": \"three\"}\n");
    follower_free(&f);
    pb_daemon_stop_clean(&d);
}

/* The pubsub plugin, subscribed to and published to as a user would. */
#define PUBSUB_CONF \
    PB_T_CONF_HEAD "workers = 2;\n" \
    "listeners = ( { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; } );\n" \
    "plugins = ( { name = \"pubsub\"; module = \"pubsub\"; } );\n" \
    "routes = ( { content_type = \"text/json\"; plugin = \"pubsub\"; } );\n"

Test(cli, follow_prints_what_is_published)
{
    char port[16];
    pb_daemon d;
    pb_run_result r;
    follower f;

    pb_daemon_start(&d, PUBSUB_CONF);
    snprintf(port, sizeof port, "%d", d.port[0]);
    const char *const subscribe[] = { PB_T_CLI_BIN, "--follow", "127.0.0.1", port, "--json",
                                      "{\"action\": \"subscribe\", \"topic\": \"news\"}", NULL };
    const char *const publish[] = { PB_T_CLI_BIN, "127.0.0.1", port,
                                    "{\"action\": \"publish\", \"topic\": \"news\", "
                                    "\"message\": {\"rain\": true}}", NULL };
    follower_start(&f, subscribe);
    follower_read(&f, 1);
    pb_run(publish, NULL, NULL, 0, &r);
    expect_run(&d, &r, r.status == 0 && strcmp(r.out, "published\n") == 0, "publish");
    pb_run_free(&r);
    follower_read(&f, 2);
    cr_assert(kill(f.pid, SIGTERM) == 0);
    int status = follower_finish(&f);
    cr_expect_eq(status, 0, "exit status %d, stderr: %s", status, (const char *)pb_buf_head(&f.err));
    cr_expect_str_eq((const char *)pb_buf_head(&f.out),
                     "{\"result\": \"subscribed\", \"topic\": \"news\"}\n"
                     "{\"topic\": \"news\", \"message\": {\"rain\": true}}\n");
    follower_free(&f);
    pb_daemon_stop_clean(&d);
}

/* --- plugboard-broker-bench ---------------------------------------------- */

#define BROKER_BENCH_BIN PB_TEST_BUILDDIR "/tools/plugboard-broker-bench"

#define BROKER_CONF \
    PB_T_CONF_HEAD "workers = 1;\n" \
    "listeners = ( { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; } );\n" \
    "plugins = ( { name = \"pubsub\"; module = \"pubsub\"; },\n" \
    "            { name = \"queue\"; module = \"queue\"; settings = { path = \"@DIR@/q.db\"; }; } );\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"subscribe\"; plugin = \"pubsub\"; },\n" \
    "  { content_type = \"text/json\"; action = \"publish\"; plugin = \"pubsub\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"queue\"; }\n" \
    ");\n"

/* Runs the broker benchmark against d: its JSON report. */
static json_t *broker_bench(const pb_daemon *d, const char *const args[])
{
    const char *argv[16] = { BROKER_BENCH_BIN, "--json", "-d", "1" };
    char port[16];
    size_t n = 4;
    pb_run_result r;

    snprintf(port, sizeof port, "%d", d->port[0]);
    for (size_t i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n++] = "127.0.0.1";
    argv[n++] = port;
    pb_run(argv, NULL, NULL, 0, &r);
    expect_run(d, &r, r.status == 0, "plugboard-broker-bench: wanted exit status 0");
    json_t *report = json_loads(r.out, 0, NULL);
    expect_run(d, &r, json_is_object(report), "plugboard-broker-bench: wanted a JSON report");
    pb_run_free(&r);
    return report;
}

static long long report_count(const json_t *report, const char *key)
{
    return json_integer_value(json_object_get(report, key));
}

Test(cli, broker_bench_checks_every_delivery_and_queue_cycle)
{
    static const char *const fanout[] = { "fanout", "-s", "5", "-P", "4", NULL };
    static const char *const queue[] = { "queue", "-c", "2", NULL };
    pb_daemon d;

    pb_daemon_start(&d, BROKER_CONF);
    json_t *report = broker_bench(&d, fanout);
    cr_expect(report_count(report, "delivered_total") > 0, "nothing delivered");
    cr_expect_eq(report_count(report, "delivered_total") % 5, 0,
                 "every publish reaches the 5 subscribers");
    cr_expect_eq(report_count(report, "lost"), 0);
    cr_expect_eq(report_count(report, "errors"), 0);
    json_decref(report);

    report = broker_bench(&d, queue);
    cr_expect(report_count(report, "cycles") > 0, "no enqueue, dequeue and ack went through");
    cr_expect_eq(report_count(report, "errors"), 0);
    json_decref(report);
    pb_daemon_stop_clean(&d);
}

/* A listening socket on the loopback for a scripted daemon; its port. */
static int listen_loopback(int *port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0
              && getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

#define PUSH_HEADER(length) \
    "{\"byteorder\": \"little\", \"content-type\": \"text/json\", " \
    "\"content-encoding\": \"utf-8\", \"content-length\": " #length ", \"push\": true}"

/* Plays a daemon that answers the one request, pushes what is given, then
 * closes: the follower's exit status, output in f. */
static int follow_scripted(follower *f, const void *pushes, size_t pushes_len)
{
    char port_text[16];
    int port;
    int listener = listen_loopback(&port);
    pb_buf wire = PB_BUF_INIT;
    pb_t_reply request;

    snprintf(port_text, sizeof port_text, "%d", port);
    const char *const argv[] = { PB_T_CLI_BIN, "--follow", "127.0.0.1", port_text,
                                 "{\"action\": \"subscribe\", \"topic\": \"news\"}", NULL };
    follower_start(f, argv);
    int fd = accept(listener, NULL, NULL);
    cr_assert(fd >= 0, "accept: %s", strerror(errno));
    close(listener);
    cr_assert(pb_recv_frame(fd, &request) == 0, "no request from plugboard-cli");
    pb_t_reply_free(&request);
    const char *reply = "{\"result\": \"subscribed\", \"topic\": \"news\"}";
    pb_t_frame(&wire, "text/json", "utf-8", reply, strlen(reply));
    cr_assert(pb_buf_append(&wire, pushes, pushes_len) == 0);
    cr_assert(pb_send_all(fd, pb_buf_head(&wire), pb_buf_used(&wire)) == 0);
    pb_buf_free(&wire);
    close(fd);
    return follower_finish(f);
}

Test(cli, follow_ends_with_the_daemons_close)
{
    static const char news[] = "{\"topic\": \"news\", \"message\": \"hello\"}";
    static const char slow[] = "{\"error\": \"too far behind\", \"code\": \"slow_consumer\"}";
    pb_buf pushes = PB_BUF_INIT;
    follower f;

    /* An orderly close after the pushes: exit status 0. */
    pb_t_raw_frame(&pushes, PUSH_HEADER(37), strlen(PUSH_HEADER(37)), news, strlen(news));
    int status = follow_scripted(&f, pb_buf_head(&pushes), pb_buf_used(&pushes));
    cr_expect_eq(status, 0, "exit status %d, stderr: %s", status, (const char *)pb_buf_head(&f.err));
    cr_expect_str_eq((const char *)pb_buf_head(&f.out),
                     "{\"result\": \"subscribed\", \"topic\": \"news\"}\n"
                     "{\"topic\": \"news\", \"message\": \"hello\"}\n");
    cr_expect_str_eq((const char *)pb_buf_head(&f.err), "");
    follower_free(&f);

    /* An error pushed before the close: on standard error, exit status 1. */
    pb_t_raw_frame(&pushes, PUSH_HEADER(52), strlen(PUSH_HEADER(52)), slow, strlen(slow));
    status = follow_scripted(&f, pb_buf_head(&pushes), pb_buf_used(&pushes));
    cr_expect_eq(status, 1, "exit status %d", status);
    cr_expect_str_eq((const char *)pb_buf_head(&f.out),
                     "{\"result\": \"subscribed\", \"topic\": \"news\"}\n"
                     "{\"topic\": \"news\", \"message\": \"hello\"}\n");
    cr_expect_str_eq((const char *)pb_buf_head(&f.err),
                     "plugboard-cli: slow_consumer: too far behind\n");
    follower_free(&f);

    /* A close in the middle of a push is no orderly end. */
    pb_buf_clear(&pushes);
    pb_t_raw_frame(&pushes, PUSH_HEADER(37), strlen(PUSH_HEADER(37)), news, 10);
    status = follow_scripted(&f, pb_buf_head(&pushes), pb_buf_used(&pushes));
    cr_expect_eq(status, 3, "exit status %d", status);
    cr_expect(strstr((const char *)pb_buf_head(&f.err), "in the middle of a frame") != NULL,
              "stderr: %s", (const char *)pb_buf_head(&f.err));
    follower_free(&f);
    pb_buf_free(&pushes);
}

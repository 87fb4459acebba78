/*
 * test_cli.c - the command lines: plugboard -V, -t on good and bad
 * configurations, a port already in use, and plugboard-cli's forms against
 * a running daemon, in the clear and over TLS.
 */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

Test(cli, usage_errors_exit_2)
{
    const char *no_args[] = { PB_T_CLI_BIN, NULL };
    const char *bad_json[] = { PB_T_CLI_BIN, "127.0.0.1", "1", "--json", "{oops", NULL };
    pb_run_result r;

    pb_run(no_args, NULL, NULL, 0, &r);
    expect_run(NULL, &r, r.status == 2 && r.err_len > 0, "wanted exit status 2");
    pb_run_free(&r);
    pb_run(bad_json, NULL, NULL, 0, &r);
    expect_run(NULL, &r, r.status == 2 && r.err_len > 0, "wanted exit status 2");
    pb_run_free(&r);
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

/*
 * test_tls.c - TLS listeners of the real daemon, with clients that share no
 * code with it (Python's ssl module and `openssl s_client`): the reference
 * exchanges and the line framing over TLS, client certificates required or
 * optional, the minimum version, plaintext sent to a TLS port, certificates
 * reloaded on SIGHUP (and a broken one refused), `plugboard -t` on TLS
 * mistakes, routes limited to listeners, and the client certificate's
 * subject as a plugin sees it.
 *
 * The certificates are made for each test by tests/tls/make-certs.sh in the
 * daemon's directory.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

TestSuite(tls, .init = pb_harness_init, .fini = pb_harness_cleanup, .timeout = 240);

#define FIXTURES PB_TEST_BUILDDIR "/tests/fixtures/.libs"

#define TLS(extra) \
    "tls = { certificate = \"@DIR@/server.crt\"; key = \"@DIR@/server.key\"; " \
    "ca = \"@DIR@/ca.crt\"; " extra " };"

/* The bundled plugins (the search entries the reference exchanges ask
 * for), the statistics and the runtime fixture, which says where a request
 * came from. */
#define PLUGINS \
    "plugins = (\n" \
    "  { name = \"echo\";    module = \"echo\"; },\n" \
    "  { name = \"upper\";   module = \"uppercase\"; },\n" \
    "  { name = \"search\";  module = \"search\";\n" \
    "    settings = { entries = ( (\"morpheus\", \"Follow the white rabbit. \xf0\x9f\x90\xb0\"),\n" \
    "                             (\"ring\", \"In the caves beneath the Misty Mountains. \xf0\x9f\x92\x8d\"),\n" \
    "                             (\"\xf0\x9f\x90\xb6\", \"\xf0\x9f\x90\xbe Playing ball! \xf0\x9f\x8f\x90\") ); }; },\n" \
    "  { name = \"first10\"; module = \"first10\"; },\n" \
    "  { name = \"stats\";   module = \"stats\"; },\n" \
    "  { name = \"rt\";      module = \"" FIXTURES "/runtime.so\"; }\n" \
    ");\n"

#define ROUTES \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; action = \"subject\"; plugin = \"rt\"; },\n" \
    "  { content_type = \"text/json\"; action = \"origin\"; plugin = \"rt\"; },\n" \
    "  { content_type = \"text/json\"; action = \"echo\";  plugin = \"echo\"; },\n" \
    "  { content_type = \"text/json\"; action = \"upper\"; plugin = \"upper\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"search\"; },\n" \
    "  { content_type = \"text/plain\"; plugin = \"echo\"; },\n" \
    "  { plugin = \"first10\"; }\n" \
    ");\n"

/* PORT0: plain frames (the statistics are asked there), PORT1: TLS lines
 * pinned to echo, PORT2: TLS frames, routed. */
#define CONF_W(workers, limits, line_tls, frame_tls) \
    PB_T_CONF_HEAD "workers = " workers ";\n" limits \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; },\n" \
    "  { name = \"tline\"; address = \"127.0.0.1\"; port = @PORT1@; framing = \"line\";\n" \
    "    plugin = \"echo\"; " line_tls " },\n" \
    "  { name = \"secure\"; address = \"127.0.0.1\"; port = @PORT2@; framing = \"frame\";\n" \
    "    " frame_tls "\n" \
    "    allow = [ \"127.0.0.0/8\", \"::1/128\" ]; }\n" \
    ");\n" PLUGINS ROUTES

#define CONF(frame_tls) CONF_W("1", "", TLS(""), frame_tls)
#define STD CONF(TLS(""))

#define TLS_PORT 2
#define LINE_PORT 1
#define REFUSED_TLS "connections.refused_by.tls"
#define CLIENT_SUBJECT "CN=client,O=Plugboard Test"

static const pb_t_tls_opts PY = { .tool = PB_T_TLS_PYTHON };
static const pb_t_tls_opts S_CLIENT = { .tool = PB_T_TLS_S_CLIENT };

static const char *tool_name(const pb_t_tls_opts *o)
{
    return o->tool == PB_T_TLS_PYTHON ? "python ssl" : "openssl s_client";
}

/* Prepares d, makes the certificates in its directory, starts it. */
static void start(pb_daemon *d, const char *config_template)
{
    pb_daemon_prepare(d, config_template);
    pb_t_make_certs(d->dir);
    pb_daemon_launch(d, config_template);
}

static void dir_path(const pb_daemon *d, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", d->dir, name);
}

/* Replaces DIR/to with a copy of DIR/from, atomically (a rename). */
static void install(const pb_daemon *d, const char *from, const char *to)
{
    char src[256], dst[256], tmp[300];
    size_t len;
    dir_path(d, from, src, sizeof src);
    dir_path(d, to, dst, sizeof dst);
    snprintf(tmp, sizeof tmp, "%s.new", dst);
    char *text = pb_t_read_file(src, &len);
    pb_check(d, text != NULL, "cannot read %s", src);
    pb_t_write_file(tmp, text, len);
    chmod(tmp, 0600);
    pb_check(d, rename(tmp, dst) == 0, "rename %s: %s", tmp, strerror(errno));
    free(text);
}

static void install_text(const pb_daemon *d, const char *to, const char *text)
{
    char dst[256], tmp[300];
    dir_path(d, to, dst, sizeof dst);
    snprintf(tmp, sizeof tmp, "%s.new", dst);
    pb_t_write_file(tmp, text, strlen(text));
    pb_check(d, rename(tmp, dst) == 0, "rename %s: %s", tmp, strerror(errno));
}

static long long stat_now(const pb_daemon *d, const char *path)
{
    json_t *s = pb_t_stats(d);
    long long v = pb_t_stat_path(s, path);
    json_decref(s);
    return v;
}

/* The reply of every reference exchange, byte for byte, one after the
 * other on fd; then all of them pipelined in one write. */
static void exchange_all(const pb_daemon *d, int fd)
{
    pb_exchange *v;
    size_t n = pb_vectors_load(&v);
    pb_buf all = PB_BUF_INIT;

    cr_assert_eq(n, 6, "expected six reference exchanges, found %zu", n);
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(pb_buf_append(&all, v[i].request, v[i].request_len), 0);
            pb_t_send(d, fd, pb_buf_head(&all), pb_buf_used(&all));
        }
        for (size_t i = 0; i < n; i++) {
            pb_t_reply r;
            char what[128];
            if (round == 0)
                pb_t_send(d, fd, v[i].request, v[i].request_len);
            pb_t_recv_frame(d, fd, &r);
            snprintf(what, sizeof what, "reply of exchange %s (%s)", v[i].name,
                     round ? "pipelined" : "one by one");
            pb_t_expect_bytes(d, what, pb_buf_head(&r.raw), pb_buf_used(&r.raw),
                              v[i].reply, v[i].reply_len);
            pb_t_reply_free(&r);
        }
    }
    pb_buf_free(&all);
    pb_vectors_free(v, n);
}

/* A new TLS connection with o to PORTn is served: the morpheus search. */
static void expect_served(const pb_daemon *d, int port_index, const pb_t_tls_opts *o)
{
    pb_t_tls c;
    pb_t_context("%s, client certificate %s, versions %s..%s: expecting to be served",
                 tool_name(o), o->client ? o->client : "none",
                 o->min_version ? o->min_version : "", o->max_version ? o->max_version : "");
    pb_t_tls_dial(d, port_index, o, &c);
    pb_t_expect_morpheus(d, c.fd);
    pb_t_tls_close(&c);
    pb_t_context("%s", "");
}

/*
 * A new TLS connection with o to PORTn is refused: either the client sees
 * the handshake fail, or (TLS 1.3 checks the client's certificate after
 * the client is done) the daemon closes without answering a request.
 */
static void expect_refused(const pb_daemon *d, int port_index, const pb_t_tls_opts *o)
{
    pb_t_tls c;
    pb_buf frame = PB_BUF_INIT;

    pb_t_context("%s, client certificate %s, versions %s..%s: expecting a refusal",
                 tool_name(o), o->client ? o->client : "none",
                 o->min_version ? o->min_version : "", o->max_version ? o->max_version : "");
    if (pb_t_tls_open(d, port_index, o, &c) == 0) {
        pb_t_frame(&frame, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
        /* The client may be gone already: a failed send is fine. */
        (void)pb_send_all(c.fd, pb_buf_head(&frame), pb_buf_used(&frame));
        pb_buf_free(&frame);
        if (pb_expect_eof(c.fd) != 0) {
            char *err = pb_t_tls_stderr(&c);
            pb_t_fail(d, __FILE__, __LINE__, "%s (client status %s; stderr %s)",
                      pb_t_reason(), c.status, err);
        }
    }
    pb_t_tls_close(&c);
    pb_t_context("%s", "");
}

/* The answer of the runtime fixture to action over fd ("result"). */
static char *ask_rt(const pb_daemon *d, int fd, const char *action)
{
    char content[128];
    snprintf(content, sizeof content, "{\"action\": \"%s\"}", action);
    pb_t_send_frame(d, fd, "text/json", "utf-8", content, strlen(content));
    return pb_t_recv_result(d, fd);
}

/* The server certificate's commonName a new Python connection sees. */
static void expect_server_cn(const pb_daemon *d, int port_index, const char *want)
{
    pb_t_tls c;
    char cn[256];
    pb_t_tls_dial(d, port_index, &PY, &c);
    pb_t_tls_peer_cn(&c, cn, sizeof cn);
    pb_check(d, strcmp(cn, want) == 0,
             "a new handshake on port %d presents CN \"%s\", wanted \"%s\" (status %s)",
             d->port[port_index], cn, want, c.status);
    if (port_index == TLS_PORT)
        pb_t_expect_morpheus(d, c.fd);
    pb_t_tls_close(&c);
}

/* One exchange on each TLS port (with a client certificate, in case one is
 * required): the daemon has then seen the harness's
 * readiness probes (connections closed before a byte) and counted them as
 * it counts them. */
static void settle(const pb_daemon *d)
{
    const pb_t_tls_opts with_cert = { .client = "client" };
    pb_t_tls c;
    pb_t_tls_dial(d, LINE_PORT, &with_cert, &c);
    pb_t_send(d, c.fd, "settled\n", 8);
    pb_t_expect_line(d, c.fd, "settled\n");
    pb_t_tls_close(&c);
    expect_served(d, TLS_PORT, &with_cert);
}

/* Waits until refused_by.tls is base + n, and is no more than that. */
static void expect_tls_refusals(const pb_daemon *d, long long base, long long n)
{
    long long got = pb_t_wait_stat_at_least(d, REFUSED_TLS, base + n);
    pb_check(d, got == base + n, "connections.refused_by.tls is %lld, wanted %lld "
             "(%lld before, %lld refusals)", got, base + n, base, n);
}

/* --- The reference exchanges and the line framing ---------------------------- */

Test(tls, reference_exchanges_over_tls_with_python_ssl)
{
    pb_daemon d;
    pb_t_tls c;
    char cn[64];

    start(&d, STD);
    pb_t_tls_dial(&d, TLS_PORT, &PY, &c);
    cr_expect_str_eq(pb_t_tls_peer_cn(&c, cn, sizeof cn), "server", "status %s", c.status);
    exchange_all(&d, c.fd);
    pb_t_tls_close(&c);
    pb_daemon_stop_clean(&d);
}

Test(tls, reference_exchanges_over_tls_with_openssl_s_client)
{
    pb_daemon d;
    pb_t_tls c;

    start(&d, STD);
    pb_t_tls_dial(&d, TLS_PORT, &S_CLIENT, &c);
    exchange_all(&d, c.fd);
    pb_t_tls_close(&c);
    pb_daemon_stop_clean(&d);
}

/* The certificate file may hold the chain: server, then CA. */
Test(tls, a_certificate_file_with_the_chain_is_served)
{
    pb_daemon d;
    const char *t = CONF("tls = { certificate = \"@DIR@/server-chain.crt\"; "
                         "key = \"@DIR@/server.key\"; };");

    start(&d, t);
    expect_served(&d, TLS_PORT, &PY);
    expect_served(&d, TLS_PORT, &S_CLIENT);
    pb_daemon_stop_clean(&d);
}

Test(tls, line_framing_over_tls)
{
    static const char lines[] = "hello over TLS\n\xf0\x9f\x90\xb0 rabbit\n";
    const pb_t_tls_opts *tools[] = { &PY, &S_CLIENT };
    pb_daemon d;

    start(&d, STD);
    for (int i = 0; i < 2; i++) {
        pb_t_tls c;
        pb_t_context("%s", tool_name(tools[i]));
        pb_t_tls_dial(&d, LINE_PORT, tools[i], &c);
        pb_t_send(&d, c.fd, "one line\n", 9);
        pb_t_expect_line(&d, c.fd, "one line\n");
        pb_t_send(&d, c.fd, lines, sizeof lines - 1);
        pb_t_expect_line(&d, c.fd, "hello over TLS\n");
        pb_t_expect_line(&d, c.fd, "\xf0\x9f\x90\xb0 rabbit\n");
        pb_t_tls_close(&c);
    }
    pb_t_context("%s", "");
    pb_daemon_stop_clean(&d);
}

/* --- Client certificates --------------------------------------------------- */

Test(tls, verify_client_require_refuses_every_client_without_a_good_certificate)
{
    pb_daemon d;
    start(&d, CONF(TLS("verify_client = \"require\";")));
    settle(&d);
    long long base = stat_now(&d, REFUSED_TLS);
    cr_assert(base >= 0, "the statistics have no %s", REFUSED_TLS);

    const pb_t_tls_opts tools[] = {
        { .tool = PB_T_TLS_PYTHON },
        { .tool = PB_T_TLS_PYTHON, .max_version = "1.2" },
        { .tool = PB_T_TLS_S_CLIENT },
        { .tool = PB_T_TLS_S_CLIENT, .max_version = "1.2" },
    };
    const char *bad[] = { NULL, "expired", "wrongca" };
    long long refused = 0;
    for (size_t t = 0; t < sizeof tools / sizeof tools[0]; t++) {
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            pb_t_tls_opts o = tools[t];
            o.client = bad[b];
            expect_refused(&d, TLS_PORT, &o);
            refused++;
        }
        pb_t_tls_opts good = tools[t];
        good.client = "client";
        expect_served(&d, TLS_PORT, &good);
    }
    expect_tls_refusals(&d, base, refused);
    /* Other listeners, and the plain one, are not affected. */
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

Test(tls, verify_client_optional_serves_clients_without_a_certificate)
{
    pb_daemon d;
    start(&d, CONF(TLS("verify_client = \"optional\";")));
    expect_served(&d, TLS_PORT, &PY);
    expect_served(&d, TLS_PORT, &S_CLIENT);
    expect_served(&d, TLS_PORT, &(pb_t_tls_opts){ .tool = PB_T_TLS_PYTHON, .max_version = "1.2" });
    expect_served(&d, TLS_PORT, &(pb_t_tls_opts){ .tool = PB_T_TLS_PYTHON, .client = "client" });
    expect_served(&d, TLS_PORT, &(pb_t_tls_opts){ .tool = PB_T_TLS_S_CLIENT, .client = "client" });
    /* A certificate given is a certificate seen. */
    pb_t_tls with;
    pb_t_tls_dial(&d, TLS_PORT, &(pb_t_tls_opts){ .client = "client" }, &with);
    char *subject = ask_rt(&d, with.fd, "subject");
    cr_expect_str_eq(subject, CLIENT_SUBJECT, "the subject of a good optional certificate");
    free(subject);
    pb_t_tls_close(&with);

    /* A certificate that does not verify is never taken for its subject:
     * the connection is refused, or served as if it had none. */
    const char *bad[] = { "wrongca", "expired" };
    for (int i = 0; i < 2; i++) {
        pb_t_tls c;
        pb_t_context("optional, client certificate %s", bad[i]);
        if (pb_t_tls_open(&d, TLS_PORT, &(pb_t_tls_opts){ .client = bad[i] }, &c) == 0) {
            char content[] = "{\"action\": \"subject\"}";
            pb_buf frame = PB_BUF_INIT;
            pb_t_reply r;
            pb_t_frame(&frame, "text/json", "utf-8", content, strlen(content));
            (void)pb_send_all(c.fd, pb_buf_head(&frame), pb_buf_used(&frame));
            pb_buf_free(&frame);
            int status = pb_recv_frame(c.fd, &r);
            pb_check(&d, status != -1, "%s", pb_t_reason());
            if (status == 0) {
                static const char none[] = "{\"result\": \"-\"}";
                pb_t_expect_bytes(&d, "the subject of an unverified certificate",
                                  r.content, r.content_length, none, sizeof none - 1);
                pb_t_reply_free(&r);
                cr_log_info("optional: a %s certificate is served without a subject", bad[i]);
            } else {
                pb_t_reply_free(&r);    /* what pb_recv_frame() began */
                cr_log_info("optional: a %s certificate is refused", bad[i]);
            }
        }
        pb_t_tls_close(&c);
    }
    pb_t_context("%s", "");
    pb_daemon_stop_clean(&d);
}

/* --- Versions ---------------------------------------------------------------- */

Test(tls, min_version_1_3_refuses_a_tls_1_2_client)
{
    pb_daemon d;
    start(&d, CONF(TLS("min_version = \"1.3\";")));
    settle(&d);
    long long base = stat_now(&d, REFUSED_TLS);

    pb_t_tls c;
    cr_expect_neq(pb_t_tls_open(&d, TLS_PORT, &(pb_t_tls_opts){ .max_version = "1.2" }, &c), 0,
                  "a TLS 1.2 client completed a handshake with min_version = \"1.3\": %s",
                  c.status);
    pb_t_tls_close(&c);
    expect_refused(&d, TLS_PORT, &(pb_t_tls_opts){ .tool = PB_T_TLS_S_CLIENT, .max_version = "1.2" });

    pb_t_tls_dial(&d, TLS_PORT, &(pb_t_tls_opts){ .min_version = "1.3" }, &c);
    cr_expect(strncmp(c.status, "OK TLSv1.3 ", 11) == 0, "status %s", c.status);
    pb_t_expect_morpheus(&d, c.fd);
    pb_t_tls_close(&c);
    expect_served(&d, TLS_PORT, &(pb_t_tls_opts){ .tool = PB_T_TLS_S_CLIENT, .min_version = "1.3" });
    expect_tls_refusals(&d, base, 2);

    /* The line listener keeps the default, 1.2. */
    pb_t_tls_dial(&d, LINE_PORT, &(pb_t_tls_opts){ .max_version = "1.2" }, &c);
    cr_expect(strncmp(c.status, "OK TLSv1.2 ", 11) == 0, "status %s", c.status);
    pb_t_send(&d, c.fd, "twelve\n", 7);
    pb_t_expect_line(&d, c.fd, "twelve\n");
    pb_t_tls_close(&c);
    pb_daemon_stop_clean(&d);
}

/* --- Plaintext on a TLS port ------------------------------------------------- */

/* Everything until EOF into buf; 0 on EOF, -1 on the hang guard. */
static int read_until_eof(int fd, unsigned char *buf, size_t cap, size_t *len)
{
    *len = 0;
    for (int waited = 0; waited < PB_T_TIMEOUT_MS; ) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 100) <= 0) {
            waited += 100;
            continue;
        }
        unsigned char sink[4096];
        ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 0;
        if (n < 0)
            continue;
        size_t keep = *len + (size_t)n <= cap ? (size_t)n : cap - *len;
        memcpy(buf + *len, sink, keep);
        *len += keep;
    }
    return -1;
}

/* Plaintext to a TLS port: no answer (at most a TLS alert record), then
 * the connection is closed. */
static void expect_plaintext_refused(const pb_daemon *d, int port_index,
                                     const void *bytes, size_t len)
{
    unsigned char got[4096];
    size_t n;
    int fd = pb_dial(d, port_index);
    (void)pb_send_all(fd, bytes, len);
    pb_check(d, read_until_eof(fd, got, sizeof got, &n) == 0,
             "plaintext to the TLS port %d: still open after %d ms",
             d->port[port_index], PB_T_TIMEOUT_MS);
    char *shown = pb_t_escape(got, n);
    pb_check(d, n == 0 || got[0] == 0x15,
             "plaintext to the TLS port %d got something other than a TLS alert: %s",
             d->port[port_index], shown);
    free(shown);
    close(fd);
}

Test(tls, plaintext_to_a_tls_port_closes_that_connection_only)
{
    pb_daemon d;
    pb_buf frame = PB_BUF_INIT;

    start(&d, STD);
    settle(&d);
    long long base = stat_now(&d, REFUSED_TLS);
    pb_t_tls held;
    pb_t_tls_dial(&d, TLS_PORT, &PY, &held);
    pb_t_expect_morpheus(&d, held.fd);

    pb_t_frame(&frame, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    expect_plaintext_refused(&d, TLS_PORT, pb_buf_head(&frame), pb_buf_used(&frame));
    expect_plaintext_refused(&d, LINE_PORT, "hello\n", 6);
    /* Something that looks like an HTTP request, which OpenSSL notices. */
    expect_plaintext_refused(&d, TLS_PORT, "GET / HTTP/1.0\r\n\r\n", 18);
    expect_tls_refusals(&d, base, 3);

    pb_t_expect_morpheus(&d, held.fd);
    pb_t_tls_close(&held);
    expect_served(&d, TLS_PORT, &PY);
    pb_t_check_serving(&d, 0);
    pb_buf_free(&frame);
    pb_daemon_stop_clean(&d);
}

/* --- Reloading certificates --------------------------------------------------- */

Test(tls, reload_presents_the_new_certificate_and_keeps_open_connections)
{
    pb_daemon d;
    pb_t_tls held, held_line;
    char cn[64];

    start(&d, CONF_W("2", "", TLS(""), TLS("")));
    pb_t_tls_dial(&d, TLS_PORT, &PY, &held);
    cr_assert_str_eq(pb_t_tls_peer_cn(&held, cn, sizeof cn), "server", "status %s", held.status);
    pb_t_expect_morpheus(&d, held.fd);
    pb_t_tls_dial(&d, LINE_PORT, &S_CLIENT, &held_line);
    pb_t_send(&d, held_line.fd, "before\n", 7);
    pb_t_expect_line(&d, held_line.fd, "before\n");

    install(&d, "server2.crt", "server.crt");
    install(&d, "server2.key", "server.key");
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 1), 1, "the reload did not complete");

    /* Two workers: several handshakes, whichever worker takes them. */
    for (int i = 0; i < 6; i++) {
        expect_server_cn(&d, TLS_PORT, "server2");
        expect_server_cn(&d, LINE_PORT, "server2");
    }
    pb_t_expect_morpheus(&d, held.fd);
    pb_t_send(&d, held_line.fd, "after\n", 6);
    pb_t_expect_line(&d, held_line.fd, "after\n");
    pb_t_tls_close(&held);
    pb_t_tls_close(&held_line);
    cr_expect_eq(stat_now(&d, "failed_reloads"), 0);
    pb_daemon_stop_clean(&d);
}

#define BROKEN_PEM \
    "-----BEGIN CERTIFICATE-----\n" \
    "bm90IGEgY2VydGlmaWNhdGUsIG9ubHkgYmFzZTY0IHRleHQ=\n" \
    "-----END CERTIFICATE-----\n"

Test(tls, a_reload_with_a_broken_certificate_or_a_foreign_key_changes_nothing)
{
    pb_daemon d;
    pb_t_tls held;

    start(&d, CONF_W("2", "", TLS(""), TLS("")));
    pb_t_tls_dial(&d, TLS_PORT, &PY, &held);
    pb_t_expect_morpheus(&d, held.fd);

    /* A certificate that does not parse. */
    install(&d, "server.crt", "server-first.crt");
    install_text(&d, "server.crt", BROKEN_PEM);
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "failed_reloads", 1), 1, "the reload did not fail");
    for (int i = 0; i < 4; i++)
        expect_server_cn(&d, TLS_PORT, "server");
    pb_t_expect_morpheus(&d, held.fd);

    /* A good certificate with a key that is not its own. */
    install(&d, "server-first.crt", "server.crt");
    install(&d, "server2.key", "server.key");
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "failed_reloads", 2), 2, "the reload did not fail");
    for (int i = 0; i < 4; i++)
        expect_server_cn(&d, TLS_PORT, "server");
    expect_server_cn(&d, LINE_PORT, "server");
    pb_t_expect_morpheus(&d, held.fd);
    cr_expect_eq(stat_now(&d, "reloads"), 0);

    /* The matching pair is taken. */
    install(&d, "server2.crt", "server.crt");
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 1), 1, "the good reload did not complete");
    for (int i = 0; i < 4; i++)
        expect_server_cn(&d, TLS_PORT, "server2");
    pb_t_expect_morpheus(&d, held.fd);
    pb_t_tls_close(&held);

    char *log = pb_daemon_log(&d);
    cr_expect(strstr(log, "reload failed") != NULL, "%s", log);
    free(log);
    pb_daemon_stop_clean(&d);
}

/* The key may be readable by root only: the master reads it, the workers
 * run as nobody. */
Test(tls, a_root_only_key_serves_workers_that_dropped_root)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to drop privileges");
    if (getpwnam("nobody") == NULL || getgrnam("nogroup") == NULL)
        cr_skip_test("no nobody:nogroup on this system");
    const char *t = PB_T_CONF_HEAD "workers = 2;\nuser = \"nobody\"; group = \"nogroup\";\n"
        "listeners = (\n"
        "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; },\n"
        "  { name = \"secure\"; address = \"127.0.0.1\"; port = @PORT2@; framing = \"frame\";\n"
        "    " TLS("verify_client = \"require\";") " }\n"
        ");\n"
        "plugins = (\n"
        "  { name = \"search\"; module = \"search\";\n"
        "    settings = { entries = ( (\"morpheus\", \"Follow the white rabbit. \xf0\x9f\x90\xb0\") ); }; },\n"
        "  { name = \"stats\"; module = \"stats\"; }\n"
        ");\n"
        "routes = (\n"
        "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n"
        "  { content_type = \"text/json\"; plugin = \"search\"; }\n"
        ");\n";
    pb_daemon d;
    char key[256];
    struct stat st;

    pb_daemon_prepare(&d, t);
    chmod(d.dir, 0755);
    pb_t_make_certs(d.dir);
    dir_path(&d, "server.key", key, sizeof key);
    cr_assert_eq(chown(key, 0, 0), 0);
    cr_assert_eq(chmod(key, 0600), 0);
    cr_assert_eq(stat(key, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    pb_daemon_launch(&d, t);
    for (int i = 0; i < 4; i++)
        expect_served(&d, TLS_PORT, &(pb_t_tls_opts){ .client = "client" });

    install(&d, "server2.crt", "server.crt");
    install(&d, "server2.key", "server.key");
    chmod(key, 0600);
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 1), 1, "the reload did not complete");
    for (int i = 0; i < 4; i++) {
        pb_t_tls c;
        char cn[64];
        pb_t_tls_dial(&d, TLS_PORT, &(pb_t_tls_opts){ .client = "client" }, &c);
        cr_expect_str_eq(pb_t_tls_peer_cn(&c, cn, sizeof cn), "server2", "status %s", c.status);
        pb_t_expect_morpheus(&d, c.fd);
        pb_t_tls_close(&c);
    }
    pb_daemon_stop_clean(&d);
}

/* --- plugboard -t ----------------------------------------------------------------- */

static const char *const plugin_env[] = {
    "PLUGBOARD_PLUGIN_DIR=" PB_TEST_PLUGIN_DIR, NULL
};

/* One setting a line, so that each mistake has its own line number. */
#define TCONF(cert, key, ca, verify, min_version) \
    PB_T_CONF_HEAD \
    "listeners = (\n" \
    "  { name = \"secure\"; address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\";\n" \
    "    tls = {\n" \
    "      certificate = \"@DIR@/" cert "\";\n" \
    "      key = \"@DIR@/" key "\";\n" \
    "      " ca "\n" \
    "      verify_client = \"" verify "\";\n" \
    "      min_version = \"" min_version "\";\n" \
    "    };\n" \
    "  }\n" \
    ");\n" \
    "plugins = ( { name = \"echo\"; module = \"echo\"; } );\n" \
    "routes = ( { plugin = \"echo\"; } );\n"

#define CA "ca = \"@DIR@/ca.crt\";"
#define NO_CA "# no ca"

/* The line of the template where marker first appears. */
static int line_of(const char *config_template, const char *marker)
{
    const char *at = strstr(config_template, marker);
    int line = 1;
    cr_assert(at != NULL, "no %s in the template", marker);
    for (const char *p = config_template; p < at; p++)
        line += *p == '\n';
    return line;
}

/* Runs `plugboard FLAG -c CONFIG` on the template (certificates made);
 * its exit status and stderr. */
static void run_daemon(const char *flag, const char *config_template, pb_daemon *d,
                       pb_run_result *r)
{
    pb_daemon_prepare(d, config_template);
    pb_t_make_certs(d->dir);
    const char *argv[] = { PB_T_DAEMON_BIN, flag, "-c", d->config_path, NULL };
    pb_run(argv, plugin_env, NULL, 0, r);
}

static void expect_accepted(const char *config_template)
{
    pb_daemon d;
    pb_run_result r;
    run_daemon("-t", config_template, &d, &r);
    char *err = pb_t_escape(r.err, r.err_len);
    cr_expect_eq(r.status, 0, "-t: exit status %d, wanted 0; stderr: %s", r.status, err);
    free(err);
    pb_run_free(&r);
}

/*
 * The daemon refuses the template with exit status 78 and an error
 * "CONFIG:LINE: message" where LINE is one of lines (0-terminated) and the
 * message holds one of needles (NULL-terminated).
 */
static void expect_refused_at(const char *flag, const char *what, const char *config_template,
                              const int *lines, const char *const *needles)
{
    pb_daemon d;
    pb_run_result r;
    run_daemon(flag, config_template, &d, &r);
    char *err = pb_t_escape(r.err, r.err_len);
    cr_expect_eq(r.status, 78, "%s %s: exit status %d, wanted 78; stderr: %s",
                 what, flag, r.status, err);
    int found = 0;
    for (int i = 0; lines[i] && !found; i++) {
        char want[256];
        snprintf(want, sizeof want, "%s:%d: ", d.config_path, lines[i]);
        const char *at = strstr(r.err, want);
        if (!at)
            continue;
        const char *end = strchr(at, '\n');
        size_t len = end ? (size_t)(end - at) : strlen(at);
        for (int k = 0; needles[k] && !found; k++) {
            const char *hit = memmem(at, len, needles[k], strlen(needles[k]));
            found = hit != NULL;
        }
    }
    char listed[128] = "";
    for (int i = 0; lines[i]; i++)
        snprintf(listed + strlen(listed), sizeof listed - strlen(listed), "%s%d",
                 i ? " or " : "", lines[i]);
    cr_expect(found, "%s %s: wanted \"%s:LINE: ...\" with LINE %s and a message "
              "naming \"%s\"%s; stderr: %s", what, flag, d.config_path, listed,
              needles[0], needles[1] ? " (or another listed)" : "", err);
    free(err);
    pb_run_free(&r);
}

#define LINES(...) ((const int[]){ __VA_ARGS__, 0 })
#define NEEDLES(...) ((const char *const[]){ __VA_ARGS__, NULL })

Test(tls, test_mode_accepts_good_tls_configurations)
{
    expect_accepted(TCONF("server.crt", "server.key", CA, "require", "1.2"));
    expect_accepted(TCONF("server-chain.crt", "server.key", CA, "optional", "1.3"));
    expect_accepted(TCONF("server2.crt", "server2.key", NO_CA, "none", "1.2"));
}

#define AT_CERT "certificate = "
#define AT_KEY "key = \""
#define AT_CA "ca = \""
#define AT_TLS "tls = {"
#define AT_VERIFY "verify_client = "
#define AT_MIN "min_version = "

Test(tls, test_mode_names_a_missing_certificate_or_key_file)
{
    const char *t = TCONF("no-such.crt", "server.key", CA, "none", "1.2");
    expect_refused_at("-t", "missing certificate", t,
                      LINES(line_of(t, AT_CERT)), NEEDLES("no-such.crt"));
    t = TCONF("server.crt", "no-such.key", CA, "none", "1.2");
    expect_refused_at("-t", "missing key", t,
                      LINES(line_of(t, AT_KEY)), NEEDLES("no-such.key"));
    t = TCONF("server.crt", "server.key", "ca = \"@DIR@/no-such-ca.crt\";", "require", "1.2");
    expect_refused_at("-t", "missing ca", t,
                      LINES(line_of(t, AT_CA)), NEEDLES("no-such-ca.crt"));
    /* Not a certificate at all: a key where the certificate should be. */
    t = TCONF("server.key", "server.key", CA, "none", "1.2");
    expect_refused_at("-t", "key as certificate", t,
                      LINES(line_of(t, AT_CERT)), NEEDLES("server.key", "certificate"));
}

Test(tls, test_mode_names_a_key_that_does_not_match_the_certificate)
{
    const char *t = TCONF("server.crt", "server2.key", CA, "none", "1.2");
    expect_refused_at("-t", "foreign key", t,
                      LINES(line_of(t, AT_KEY), line_of(t, AT_CERT)),
                      NEEDLES("match", "server2.key"));
}

Test(tls, test_mode_names_verify_client_without_a_ca)
{
    const char *t = TCONF("server.crt", "server.key", NO_CA, "require", "1.2");
    expect_refused_at("-t", "require without ca", t,
                      LINES(line_of(t, AT_VERIFY), line_of(t, AT_TLS)),
                      NEEDLES("ca", "verify_client"));
    t = TCONF("server.crt", "server.key", NO_CA, "optional", "1.2");
    expect_refused_at("-t", "optional without ca", t,
                      LINES(line_of(t, AT_VERIFY), line_of(t, AT_TLS)),
                      NEEDLES("ca", "verify_client"));
    t = TCONF("server.crt", "server.key", CA, "sometimes", "1.2");
    expect_refused_at("-t", "unknown verify_client", t,
                      LINES(line_of(t, AT_VERIFY)), NEEDLES("verify_client", "sometimes"));
}

Test(tls, test_mode_names_a_bad_min_version)
{
    const char *bad[] = { "1.1", "1.0", "1.4", "tls1.3", "" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char t[2048];
        snprintf(t, sizeof t, TCONF("server.crt", "server.key", CA, "none", "%s"), bad[i]);
        expect_refused_at("-t", bad[i], t, LINES(line_of(t, AT_MIN)),
                          NEEDLES("min_version"));
    }
}

Test(tls, a_tls_mistake_stops_the_start_too)
{
    const char *t = TCONF("server.crt", "server2.key", CA, "none", "1.2");
    expect_refused_at("-f", "foreign key at start", t,
                      LINES(line_of(t, AT_KEY), line_of(t, AT_CERT)),
                      NEEDLES("match", "server2.key"));
}

/* --- Routes limited to listeners ---------------------------------------------------- */

#define ANSWER(name, answer) \
    "  { name = \"" name "\"; module = \"search\";\n" \
    "    settings = { entries = ( (\"morpheus\", \"" answer "\") ); }; },\n"

#define ROUTED_LISTENERS(routes) \
    PB_T_CONF_HEAD "workers = 1;\n" \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; },\n" \
    "  { name = \"other\"; address = \"127.0.0.1\"; port = @PORT1@; framing = \"frame\"; },\n" \
    "  { name = \"secure\"; address = \"127.0.0.1\"; port = @PORT2@; framing = \"frame\";\n" \
    "    " TLS("") " }\n" \
    ");\n" \
    "plugins = (\n" \
    ANSWER("for_secure", "secure answer") \
    ANSWER("for_other", "other answer") \
    ANSWER("for_any", "any answer") \
    "  { name = \"echo\"; module = \"echo\"; },\n" \
    "  { name = \"stats\"; module = \"stats\"; }\n" \
    ");\n" \
    "routes = (\n" routes ");\n"

#define LIMITED_ROUTES \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; listeners = [ \"secure\" ]; plugin = \"for_secure\"; },\n" \
    "  { content_type = \"text/json\"; listeners = [ \"other\", \"secure\" ]; plugin = \"for_other\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"for_any\"; },\n" \
    "  { content_type = \"text/plain\"; listeners = [ \"secure\" ]; plugin = \"echo\"; }\n"

static char *search_over(const pb_daemon *d, int fd)
{
    pb_t_send_frame(d, fd, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    return pb_t_recv_result(d, fd);
}

Test(tls, a_route_serves_only_the_listeners_it_names)
{
    pb_daemon d;
    start(&d, ROUTED_LISTENERS(LIMITED_ROUTES));

    pb_t_tls c;
    pb_t_tls_dial(&d, TLS_PORT, &PY, &c);
    char *got = search_over(&d, c.fd);
    cr_expect_str_eq(got, "secure answer", "from the TLS listener");
    free(got);
    pb_t_send_frame(&d, c.fd, "text/plain", "utf-8", "plain", 5);
    pb_t_expect_reply(&d, c.fd, "text/plain", "utf-8", "plain", 5);
    pb_t_tls_close(&c);

    int fd = pb_dial(&d, 1);
    got = search_over(&d, fd);
    cr_expect_str_eq(got, "other answer", "from \"other\", past the route of \"secure\"");
    free(got);
    pb_t_send_frame(&d, fd, "text/plain", "utf-8", "plain", 5);
    pb_t_expect_error(&d, fd, "no_route");
    /* no_route keeps the connection. */
    got = search_over(&d, fd);
    cr_expect_str_eq(got, "other answer");
    free(got);
    close(fd);

    fd = pb_dial(&d, 0);
    got = search_over(&d, fd);
    cr_expect_str_eq(got, "any answer", "from \"app\", past both limited routes");
    free(got);
    pb_t_send_frame(&d, fd, "text/plain", "utf-8", "plain", 5);
    pb_t_expect_error(&d, fd, "no_route");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(tls, a_route_naming_an_unknown_listener_is_refused)
{
    const char *t = ROUTED_LISTENERS(
        "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n"
        "  { content_type = \"text/json\"; listeners = [ \"secure\", \"nowhere\" ]; plugin = \"for_secure\"; }\n");
    expect_refused_at("-t", "unknown listener", t, LINES(line_of(t, "nowhere")),
                      NEEDLES("nowhere"));
    t = ROUTED_LISTENERS(
        "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n"
        "  { content_type = \"text/json\"; listeners = [ 7 ]; plugin = \"for_secure\"; }\n");
    expect_refused_at("-t", "listeners not a list of names", t,
                      LINES(line_of(t, "[ 7 ]")), NEEDLES("listeners"));
}

/* --- The client certificate, as plugins see it --------------------------------------- */

#define SUBJECT_CONF \
    PB_T_CONF_HEAD "workers = 1;\n" \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; },\n" \
    "  { name = \"opt\"; address = \"127.0.0.1\"; port = @PORT1@; framing = \"frame\";\n" \
    "    " TLS("verify_client = \"optional\";") " },\n" \
    "  { name = \"secure\"; address = \"127.0.0.1\"; port = @PORT2@; framing = \"frame\";\n" \
    "    " TLS("verify_client = \"require\";") " }\n" \
    ");\n" PLUGINS ROUTES

#define OPT_PORT 1

static void expect_subject(const pb_daemon *d, int fd, const char *want)
{
    char *got = ask_rt(d, fd, "subject");
    pb_check(d, strcmp(got, want) == 0, "the plugin sees tls_subject \"%s\", wanted \"%s\"",
             got, want);
    free(got);
}

Test(tls, a_plugin_sees_the_client_certificate_subject)
{
    pb_daemon d;
    pb_t_tls c;
    char origin[128];

    start(&d, SUBJECT_CONF);
    pb_t_tls_dial(&d, TLS_PORT, &(pb_t_tls_opts){ .client = "client" }, &c);
    expect_subject(&d, c.fd, CLIENT_SUBJECT);
    char *got = ask_rt(&d, c.fd, "origin");
    snprintf(origin, sizeof origin, "secure 127.0.0.1:");
    cr_expect(strncmp(got, origin, strlen(origin)) == 0, "origin \"%s\"", got);
    free(got);
    pb_t_tls_close(&c);

    pb_t_tls_dial(&d, TLS_PORT, &(pb_t_tls_opts){ .tool = PB_T_TLS_S_CLIENT, .client = "client",
                                                 .max_version = "1.2" }, &c);
    expect_subject(&d, c.fd, CLIENT_SUBJECT);
    pb_t_tls_close(&c);

    /* Escaped as RFC 2253 says: no comma, plus or quote in a value reads
     * as a separator, so no CN can pass for another subject. */
    pb_t_tls_dial(&d, TLS_PORT, &(pb_t_tls_opts){ .client = "tricky" }, &c);
    expect_subject(&d, c.fd, "CN=Zo\xc3\xab\\, \\\"admin\\\"\\+x\\,O=Admins,O=Plugboard Test");
    pb_t_tls_close(&c);

    pb_t_tls_dial(&d, OPT_PORT, &(pb_t_tls_opts){ .client = "client" }, &c);
    expect_subject(&d, c.fd, CLIENT_SUBJECT);
    pb_t_tls_close(&c);

    pb_t_tls_dial(&d, OPT_PORT, &PY, &c);
    expect_subject(&d, c.fd, "-");
    pb_t_tls_close(&c);

    int fd = pb_dial(&d, 0);
    expect_subject(&d, fd, "-");
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* --- Large messages, pipelining, errors --------------------------------------------- */

typedef struct sender {
    int fd;
    const unsigned char *data;
    size_t len;
    int rc;
} sender;

static void *send_all_thread(void *arg)
{
    sender *s = arg;
    s->rc = pb_send_all(s->fd, s->data, s->len);
    return NULL;
}

#define BIG_CONTENT (1024 * 1024)
#define BIG_FRAMES 8
#define SMALL_FRAMES 1000

/* Content of echo request seq: its number, then a letter that changes with
 * it, so that a reply out of order or cut short shows. */
static void fill(unsigned char *out, size_t len, unsigned seq)
{
    char number[16];
    int n = snprintf(number, sizeof number, "%08u:", seq);
    memset(out, 'a' + (int)(seq % 26), len);
    memcpy(out, number, (size_t)n < len ? (size_t)n : len);
}

/* Megabyte messages and a thousand small ones, pipelined in one stream
 * that a thread sends while the replies are read: records, partial writes
 * and paused input all happen under TLS. */
static void big_and_many(const pb_daemon *d, const pb_t_tls_opts *o)
{
    static unsigned char content[BIG_CONTENT];
    pb_buf all = PB_BUF_INIT;
    pb_t_tls c;
    pthread_t thread;

    pb_t_context("%s: pipelined large and small messages", tool_name(o));
    for (unsigned i = 0; i < BIG_FRAMES; i++) {
        fill(content, sizeof content, i);
        pb_t_frame(&all, "text/plain", "utf-8", content, sizeof content);
    }
    for (unsigned i = 0; i < SMALL_FRAMES; i++) {
        fill(content, 64, BIG_FRAMES + i);
        pb_t_frame(&all, "text/plain", "utf-8", content, 64);
    }
    pb_t_tls_dial(d, TLS_PORT, o, &c);
    sender s = { c.fd, pb_buf_head(&all), pb_buf_used(&all), -1 };
    cr_assert_eq(pthread_create(&thread, NULL, send_all_thread, &s), 0);
    for (unsigned i = 0; i < BIG_FRAMES + SMALL_FRAMES; i++) {
        size_t len = i < BIG_FRAMES ? sizeof content : 64;
        fill(content, len, i);
        pb_t_expect_reply(d, c.fd, "text/plain", "utf-8", content, len);
    }
    pthread_join(thread, NULL);
    pb_check(d, s.rc == 0, "sending: %s", pb_t_reason());
    pb_t_expect_morpheus(d, c.fd);
    pb_t_tls_close(&c);
    pb_buf_free(&all);
    pb_t_context("%s", "");
}

Test(tls, large_messages_and_deep_pipelining_over_tls)
{
    pb_daemon d;
    start(&d, CONF_W("1", "limits = { max_message_bytes = 4194304; max_pending_output = 1048576; };\n",
                     TLS(""), TLS("")));
    big_and_many(&d, &PY);
    big_and_many(&d, &S_CLIENT);
    pb_daemon_stop_clean(&d);
}

/* An error that closes the connection is delivered over TLS before the
 * close, in both framings. */
Test(tls, a_closing_error_reaches_the_tls_client_before_the_close)
{
    pb_daemon d;
    pb_t_tls c;
    pb_buf b = PB_BUF_INIT;

    start(&d, STD);
    pb_t_tls_dial(&d, TLS_PORT, &PY, &c);
    pb_t_frame(&b, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    pb_check(&d, pb_buf_append(&b, "\0\x05hello", 7) == 0, "out of memory");
    pb_t_send(&d, c.fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_reply(&d, c.fd, "text/json", "utf-8", PB_T_MORPHEUS_REPLY,
                      strlen(PB_T_MORPHEUS_REPLY));
    pb_t_expect_error(&d, c.fd, "bad_frame");
    pb_t_expect_eof(&d, c.fd);
    pb_t_tls_close(&c);
    pb_buf_free(&b);

    pb_t_tls_dial(&d, LINE_PORT, &S_CLIENT, &c);
    pb_check(&d, pb_buf_append_str(&b, "good line\n") == 0, "out of memory");
    unsigned char *long_line = pb_buf_extend(&b, 1024 * 1024 + 1);
    pb_check(&d, long_line != NULL, "out of memory");
    memset(long_line, 'x', 1024 * 1024 + 1);
    (void)pb_send_all(c.fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_line(&d, c.fd, "good line\n");
    pb_t_expect_err_line(&d, c.fd, "too_large");
    pb_t_expect_eof(&d, c.fd);
    pb_t_tls_close(&c);
    pb_buf_free(&b);
    expect_served(&d, TLS_PORT, &PY);
    pb_daemon_stop_clean(&d);
}

/* --- Busy, shutdown, reloads that add or remove TLS ------------------------------------- */

/* Past max_connections a TLS peer is closed at accept, before any
 * handshake, and counted as busy, not as a TLS refusal. */
Test(tls, a_busy_daemon_closes_a_tls_peer_before_any_handshake)
{
    enum { MAX = 3 };
    pb_daemon d;
    pb_t_tls held[MAX];

    start(&d, CONF_W("1", "limits = { max_connections = 3; };\n", TLS(""), TLS("")));
    settle(&d);
    json_t *s = pb_t_stats(&d);
    long long busy = pb_t_stat_path(s, "connections.refused_by.busy");
    long long tls = pb_t_stat_path(s, REFUSED_TLS);
    json_decref(s);
    for (int i = 0; i < MAX; i++) {
        pb_t_tls_dial(&d, TLS_PORT, &PY, &held[i]);
        pb_t_expect_morpheus(&d, held[i].fd);
    }
    /* A plain connection would get the busy error; a TLS one nothing. */
    int fd = pb_dial(&d, TLS_PORT);
    unsigned char got[256];
    size_t n;
    pb_check(&d, read_until_eof(fd, got, sizeof got, &n) == 0 && n == 0,
             "a TLS peer past max_connections was not closed at once (%zu bytes came)", n);
    close(fd);
    pb_t_tls c;
    cr_expect_neq(pb_t_tls_open(&d, TLS_PORT, &PY, &c), 0,
                  "a handshake completed past max_connections: %s", c.status);
    pb_t_tls_close(&c);
    for (int i = 0; i < MAX; i++)
        pb_t_tls_close(&held[i]);

    /* The statistics are asked over a plain connection, itself refused
     * while the slots are taken: now they are free again. */
    for (int i = 0; i < 1000; i++) {
        int probe = pb_dial(&d, 0);
        pb_t_reply r;
        pb_t_send_frame(&d, probe, "text/json", "utf-8", "{\"action\": \"stats\"}", 19);
        int status = pb_recv_frame(probe, &r);
        close(probe);
        if (status == 1)
            pb_t_reply_free(&r);    /* what pb_recv_frame() began */
        if (status == 0) {
            json_t *now = json_loadb((const char *)r.content, r.content_length, 0, NULL);
            pb_t_reply_free(&r);
            if (json_object_get(now, "connections") != NULL) {
                long long now_busy = pb_t_stat_path(now, "connections.refused_by.busy");
                long long now_tls = pb_t_stat_path(now, REFUSED_TLS);
                long long all = pb_t_stat_path(now, "connections.refused");
                long long allow = pb_t_stat_path(now, "connections.refused_by.allow");
                json_decref(now);
                cr_expect_geq(now_busy, busy + 2, "refused_by.busy %lld, %lld before",
                              now_busy, busy);
                cr_expect_eq(now_tls, tls, "refused_by.tls %lld, %lld before: a busy "
                             "refusal is not a TLS one", now_tls, tls);
                cr_expect_eq(all, now_busy + allow + now_tls,
                             "refused is the sum of refused_by");
                break;
            }
            json_decref(now);
        }
        usleep(20 * 1000);
    }
    expect_served(&d, TLS_PORT, &PY);
    pb_daemon_stop_clean(&d);
}

/* SIGTERM with TLS connections open: the idle ones get shutting_down over
 * TLS and are closed, the one mid-handshake is closed, and the daemon
 * exits 0. */
Test(tls, shutdown_says_goodbye_over_tls)
{
    pb_daemon d;
    pb_t_tls frame, line;
    pb_buf b = PB_BUF_INIT;

    start(&d, STD);
    pb_t_tls_dial(&d, TLS_PORT, &PY, &frame);
    pb_t_frame(&b, "text/plain", "utf-8", "first", 5);
    pb_t_frame(&b, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    pb_t_send(&d, frame.fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_reply(&d, frame.fd, "text/plain", "utf-8", "first", 5);
    pb_t_tls_dial(&d, LINE_PORT, &S_CLIENT, &line);
    pb_t_send(&d, line.fd, "hi\n", 3);
    pb_t_expect_line(&d, line.fd, "hi\n");
    int stalled = pb_dial(&d, TLS_PORT);
    pb_t_send(&d, stalled, "\x16\x03\x01\x00\x80\x01", 6);

    pb_daemon_signal(&d, SIGTERM);
    pb_t_expect_reply(&d, frame.fd, "text/json", "utf-8", PB_T_MORPHEUS_REPLY,
                      strlen(PB_T_MORPHEUS_REPLY));
    pb_t_expect_error(&d, frame.fd, "shutting_down");
    pb_t_expect_eof(&d, frame.fd);
    pb_t_expect_err_line(&d, line.fd, "shutting_down");
    pb_t_expect_eof(&d, line.fd);
    unsigned char got[256];
    size_t n;
    cr_expect_eq(read_until_eof(stalled, got, sizeof got, &n), 0,
                 "the connection in the middle of a handshake was not closed");
    close(stalled);
    pb_t_tls_close(&frame);
    pb_t_tls_close(&line);
    pb_buf_free(&b);
    pb_daemon_wait_clean(&d);
}

#define SWITCHED(frame_tls) CONF_W("2", "", TLS(""), frame_tls)

/* A reload gives a listener TLS, and takes it away: new connections follow
 * the configuration, a connection accepted before keeps what it began
 * with. */
Test(tls, a_reload_turns_tls_on_and_off_for_a_listener)
{
    pb_daemon d;
    pb_buf frame = PB_BUF_INIT;

    start(&d, SWITCHED(""));
    int plain = pb_dial(&d, TLS_PORT);
    pb_t_expect_morpheus(&d, plain);

    pb_daemon_write_config(&d, SWITCHED(TLS("")));
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 1), 1, "the reload did not complete");
    for (int i = 0; i < 4; i++)
        expect_served(&d, TLS_PORT, &PY);
    pb_t_frame(&frame, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    expect_plaintext_refused(&d, TLS_PORT, pb_buf_head(&frame), pb_buf_used(&frame));
    pb_t_expect_morpheus(&d, plain);
    pb_t_tls held;
    pb_t_tls_dial(&d, TLS_PORT, &PY, &held);
    pb_t_expect_morpheus(&d, held.fd);

    pb_daemon_write_config(&d, SWITCHED(""));
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 2), 2, "the second reload did not complete");
    for (int i = 0; i < 4; i++)
        pb_t_check_serving(&d, TLS_PORT);
    pb_t_expect_morpheus(&d, plain);
    pb_t_expect_morpheus(&d, held.fd);
    close(plain);
    pb_t_tls_close(&held);
    pb_buf_free(&frame);
    pb_daemon_stop_clean(&d);
}

/* --- Sessions ------------------------------------------------------------------------- */

/* Runs tls-client.py --resume N against PORTn with more arguments (may be
 * NULL); its status line into out. */
static void run_resume(const pb_daemon *d, int port_index, int n, const char *max_version,
                       const char *const *more, char *out, size_t cap)
{
    char port[16], count[16], ca[256];
    const char *argv[32] = { "/usr/bin/env", "python3", PB_T_TLS_SRC "/tls-client.py",
                             "--status-fd", "1", "--resume", count, "--ca", ca,
                             "--max", max_version };
    int argc = 11;
    snprintf(port, sizeof port, "%d", d->port[port_index]);
    snprintf(count, sizeof count, "%d", n);
    dir_path(d, "ca.crt", ca, sizeof ca);
    for (size_t i = 0; more && more[i] && argc < 28; i++)
        argv[argc++] = more[i];
    argv[argc++] = "127.0.0.1";
    argv[argc++] = port;
    argv[argc] = NULL;
    pb_run_result r;
    pb_run(argv, NULL, NULL, 0, &r);
    pb_check(d, r.status == 0 && r.out_len > 0, "tls-client.py --resume: status %d, %s %s",
             r.status, r.out, r.err);
    snprintf(out, cap, "%.*s", (int)strcspn(r.out, "\n"), r.out);
    pb_run_free(&r);
}

/* How many of n sessions resumed on the line port. */
static int resumed(const pb_daemon *d, int n, const char *max_version)
{
    char out[512];
    int k = -1, total = -1;
    run_resume(d, LINE_PORT, n, max_version, NULL, out, sizeof out);
    pb_check(d, sscanf(out, "RESUMED %d %d", &k, &total) == 2 && total == n,
             "tls-client.py --resume: %s", out);
    return k;
}

/* Session tickets are sealed with keys the master drew: a session resumes
 * whichever of the workers takes the connection, and one from before a
 * reload resumes after it. */
Test(tls, sessions_resume_on_any_worker_and_across_a_reload)
{
    pb_daemon d;
    start(&d, CONF_W("2", "", TLS(""), TLS("")));
    cr_expect_eq(resumed(&d, 8, "1.3"), 8, "TLS 1.3 sessions resumed");
    cr_expect_eq(resumed(&d, 8, "1.2"), 8, "TLS 1.2 sessions resumed");

    static const char *const hold[] = { "--resume", "8", "--hold", NULL };
    pb_t_tls c;
    pb_t_tls_dial(&d, LINE_PORT, &(pb_t_tls_opts){ .extra = hold }, &c);
    pb_daemon_signal(&d, SIGHUP);
    cr_assert_eq(pb_t_wait_stat(&d, "reloads", 1), 1, "the reload did not complete");
    pb_t_send(&d, c.fd, "go\n", 3);
    pb_t_expect_line(&d, c.fd, "RESUMED 8 8 -\n");
    pb_t_tls_close(&c);
    pb_daemon_stop_clean(&d);
}

/* A resumed session still tells plugins whose certificate began it. */
Test(tls, a_resumed_session_keeps_the_client_subject)
{
    pb_daemon d;
    char cert[256], key[256], out[512];
    start(&d, SUBJECT_CONF);
    dir_path(&d, "client.crt", cert, sizeof cert);
    dir_path(&d, "client.key", key, sizeof key);
    const char *const ask[] = { "--cert", cert, "--key", key,
                                "--ask", "{\"action\": \"subject\"}", NULL };
    const char *versions[] = { "1.3", "1.2" };
    for (int i = 0; i < 2; i++) {
        run_resume(&d, TLS_PORT, 4, versions[i], ask, out, sizeof out);
        cr_expect_str_eq(out, "RESUMED 4 4 {\"result\": \"" CLIENT_SUBJECT "\"}",
                         "TLS %s", versions[i]);
    }
    pb_daemon_stop_clean(&d);
}

/* A session made where no certificate was asked for must not resume where
 * one is required: that would skip the check. Without a certificate the
 * client is refused; with one, it gets a full handshake. */
Test(tls, a_session_does_not_resume_on_a_listener_that_requires_a_certificate)
{
    pb_daemon d;
    char cert[256], key[256], port[16], out[512];
    start(&d, SUBJECT_CONF);
    dir_path(&d, "client.crt", cert, sizeof cert);
    dir_path(&d, "client.key", key, sizeof key);
    snprintf(port, sizeof port, "%d", d.port[TLS_PORT]);
    const char *const without[] = { "--resume-port", port,
                                    "--ask", "{\"action\": \"subject\"}", NULL };
    const char *const with[] = { "--resume-port", port, "--cert", cert, "--key", key,
                                 "--ask", "{\"action\": \"subject\"}", NULL };
    const char *versions[] = { "1.3", "1.2" };
    for (int i = 0; i < 2; i++) {
        /* First on the optional listener, then on the requiring one. */
        run_resume(&d, OPT_PORT, 2, versions[i], without, out, sizeof out);
        cr_expect(strncmp(out, "FAIL ", 5) == 0, "TLS %s, no certificate: a session from "
                  "the optional listener on the requiring one: %s", versions[i], out);
        run_resume(&d, OPT_PORT, 2, versions[i], with, out, sizeof out);
        cr_expect_str_eq(out, "RESUMED 0 2 {\"result\": \"" CLIENT_SUBJECT "\"}",
                         "TLS %s, with a certificate", versions[i]);
    }
    pb_daemon_stop_clean(&d);
}

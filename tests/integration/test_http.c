/*
 * test_http.c - listeners with framing "http" against the real daemon, over
 * raw sockets: health, metrics and the status page, messages posted and
 * answered (at once, later, on a pool), every error status, keep-alive and
 * pipelining, limits, a graceful stop, a reload with a connection open, and
 * HTTPS with client certificates.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

TestSuite(http, .init = pb_harness_init, .fini = pb_harness_cleanup);

#define FIXTURES PB_TEST_BUILDDIR "/tests/fixtures/.libs"

/* PORT0: frame, routed (the harness asks for statistics there); PORT1:
 * http, routed. */
#define CONF(limits, answer) \
    PB_T_CONF_HEAD "workers = 1;\n" limits \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; },\n" \
    "  { name = \"web\"; address = \"127.0.0.1\"; port = @PORT1@; framing = \"http\"; }\n" \
    ");\n" \
    "plugins = (\n" \
    "  { name = \"rt\"; module = \"" FIXTURES "/runtime.so\"; },\n" \
    "  { name = \"blocking\"; module = \"" FIXTURES "/runtime.so\"; threads = 2; },\n" \
    "  { name = \"stats\"; module = \"stats\"; },\n" \
    "  { name = \"upper\"; module = \"uppercase\"; },\n" \
    "  { name = \"search\"; module = \"search\";\n" \
    "    settings = { entries = ( (\"morpheus\", \"" answer "\") ); }; }\n" \
    ");\n" \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"search\"; plugin = \"search\"; },\n" \
    "  { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "  { content_type = \"text/json\"; action = \"sleep\"; plugin = \"blocking\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"rt\"; },\n" \
    "  { content_type = \"text/plain\"; plugin = \"upper\"; }\n" \
    ");\n"

#define RABBIT "Follow the white rabbit. \xf0\x9f\x90\xb0"
#define STD CONF("", RABBIT)

/* A POST of body as content-type type. */
static char *post(const char *type, const char *body)
{
    char *request = NULL;

    cr_assert(asprintf(&request, "POST / HTTP/1.1\r\nHost: test\r\n"
                       "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n%s",
                       type, strlen(body), body) > 0);
    return request;
}

static void expect_post(const pb_daemon *d, int fd, const char *type, const char *body,
                        int status, const char *reply_type, const char *reply)
{
    char *request = post(type, body);

    pb_t_expect_http(d, fd, request, status, reply_type, reply);
    free(request);
}

static void expect_post_error(const pb_daemon *d, int fd, const char *type,
                              const char *body, int status, const char *code)
{
    char *request = post(type, body);

    pb_t_expect_http_error(d, fd, request, status, code);
    free(request);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: test\r\n\r\n"

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

Test(http, health_metrics_and_status_page_on_one_connection)
{
    pb_daemon d;
    pb_daemon_start(&d, STD);
    int fd = pb_dial(&d, 1);
    pb_t_expect_http(&d, fd, GET("/health"), 200, "text/plain; charset=utf-8", "ok\n");
    pb_t_expect_http(&d, fd, GET("/metrics"), 200,
                     "text/plain; version=0.0.4; charset=utf-8", NULL);
    pb_t_expect_http(&d, fd, GET("/"), 200, "text/html; charset=utf-8", NULL);
    pb_t_expect_http(&d, fd, "HEAD /health HTTP/1.1\r\nHost: test\r\n\r\n", 200,
                     "text/plain; charset=utf-8", "");
    pb_t_expect_http(&d, fd, GET("/health"), 200, NULL, "ok\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(http, a_posted_message_is_routed_and_answered)
{
    pb_daemon d;
    pb_daemon_start(&d, STD);
    int fd = pb_dial(&d, 1);
    expect_post(&d, fd, "text/json", PB_T_MORPHEUS, 200, "text/json; charset=utf-8",
                PB_T_MORPHEUS_REPLY);
    expect_post(&d, fd, "text/plain; charset=utf-8", "hello", 200,
                "text/plain; charset=utf-8", "HELLO");
    expect_post(&d, fd, "text/json", "{\"action\": \"origin\"}", 200,
                "text/json; charset=utf-8", NULL);
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(http, a_unix_socket_listener_tells_the_peer_uid)
{
    pb_daemon d;
    pb_daemon_start(&d, PB_T_CONF_HEAD "workers = 1;\n"
                    "listeners = ( { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; },\n"
                    "  { name = \"websock\"; path = \"@SOCK@\"; framing = \"http\"; } );\n"
                    "plugins = ( { name = \"rt\"; module = \"" FIXTURES "/runtime.so\"; } );\n"
                    "routes = ( { plugin = \"rt\"; } );\n");
    int fd = pb_dial_unix(&d);
    char want[64];
    snprintf(want, sizeof want, "{\"result\": \"websock unix %ld\"}", (long)getuid());
    expect_post(&d, fd, "text/json", "{\"action\": \"origin\"}", 200,
                "text/json; charset=utf-8", want);
    pb_t_expect_http(&d, fd, GET("/health"), 200, NULL, "ok\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(http, keep_alive_and_pipelined_requests_are_answered_in_order)
{
    pb_daemon d;
    pb_daemon_start(&d, STD);
    int fd = pb_dial(&d, 1);
    for (int i = 0; i < 5; i++)
        expect_post(&d, fd, "text/json", PB_T_MORPHEUS, 200, NULL, PB_T_MORPHEUS_REPLY);

    char *one = post("text/json", "{\"action\": \"now\", \"value\": \"1\"}");
    char *two = post("text/json", "{\"action\": \"timer\", \"value\": \"2\", \"delay\": 0.1}");
    char *three = post("text/plain", "three");
    char all[2048];
    snprintf(all, sizeof all, "%s%s%s" GET("/health"), one, two, three);
    pb_t_send(&d, fd, all, strlen(all));
    const char *want[] = { "{\"result\": \"1\"}", "{\"result\": \"2\"}", "THREE", "ok\n" };
    for (int i = 0; i < 4; i++) {
        pb_t_http r;
        pb_t_recv_http(&d, fd, 0, &r);
        cr_expect_eq(r.status, 200);
        pb_t_expect_bytes(&d, "pipelined answer", pb_buf_head(&r.body),
                          pb_buf_used(&r.body), want[i], strlen(want[i]));
        pb_t_http_free(&r);
    }
    free(one);
    free(two);
    free(three);
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(http, deferred_and_pooled_replies)
{
    pb_daemon d;
    pb_daemon_start(&d, STD);
    int fd = pb_dial(&d, 1);
    expect_post(&d, fd, "text/json", "{\"action\": \"timer\", \"value\": \"later\", \"delay\": 0.2}",
                200, "text/json; charset=utf-8", "{\"result\": \"later\"}");
    expect_post(&d, fd, "text/json", "{\"action\": \"thread\", \"value\": \"other\", \"delay\": 0.1}",
                200, NULL, "{\"result\": \"other\"}");
    expect_post(&d, fd, "text/json", "{\"action\": \"sleep\", \"value\": \"pool\", \"delay\": 0.1}",
                200, NULL, "{\"result\": \"pool\"}");
    /* Another connection is served while one waits for its reply. */
    char *slow = post("text/json", "{\"action\": \"timer\", \"value\": \"slow\", \"delay\": 1}");
    pb_t_send(&d, fd, slow, strlen(slow));
    int other = pb_dial(&d, 1);
    pb_t_expect_http(&d, other, GET("/health"), 200, NULL, "ok\n");
    close(other);
    pb_t_http r;
    pb_t_recv_http(&d, fd, 0, &r);
    pb_t_expect_bytes(&d, "slow answer", pb_buf_head(&r.body), pb_buf_used(&r.body),
                      "{\"result\": \"slow\"}", 18);
    pb_t_http_free(&r);
    free(slow);
    /* A client that leaves before its deferred reply costs nothing. */
    slow = post("text/json", "{\"action\": \"timer\", \"value\": \"gone\", \"delay\": 0.2}");
    other = pb_dial(&d, 1);
    pb_t_send(&d, other, slow, strlen(slow));
    close(other);
    free(slow);
    sleep_ms(400);
    pb_t_expect_http(&d, fd, GET("/health"), 200, NULL, "ok\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(http, every_error_has_its_status_and_json_body)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("limits = { max_message_bytes = 1000; };\n", RABBIT));
    int fd = pb_dial(&d, 1);
    expect_post_error(&d, fd, "text/json", "{not json", 400, "bad_json");
    expect_post_error(&d, fd, "image/png", "PNG", 404, "no_route");
    expect_post_error(&d, fd, "text/plain", "ok \xff\xfe", 502, "plugin_failed");
    pb_t_expect_http_error(&d, fd, GET("/nowhere"), 404, "not_found");
    pb_t_expect_http_error(&d, fd, "DELETE /health HTTP/1.1\r\nHost: test\r\n\r\n", 405,
                           "method_not_allowed");
    pb_t_expect_http_error(&d, fd, "POST /health HTTP/1.1\r\nHost: test\r\n"
                           "Content-Length: 0\r\n\r\n", 405, "method_not_allowed");
    /* The connection kept serving through all of them. */
    expect_post(&d, fd, "text/json", PB_T_MORPHEUS, 200, NULL, PB_T_MORPHEUS_REPLY);

    /* too_large from Content-Length alone: no body byte is sent. */
    pb_t_expect_http_error(&d, fd, "POST / HTTP/1.1\r\nHost: test\r\n"
                           "Content-Type: text/plain\r\nContent-Length: 1001\r\n\r\n",
                           413, "too_large");
    pb_t_expect_eof(&d, fd);
    close(fd);

    /* A chunked body that grows past the limit. */
    fd = pb_dial(&d, 1);
    char chunked[2048];
    int n = snprintf(chunked, sizeof chunked, "POST / HTTP/1.1\r\nHost: test\r\n"
                     "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "258\r\n%0600d\r\n258\r\n%0600d\r\n0\r\n\r\n", 0, 0);
    cr_assert(n > 0 && (size_t)n < sizeof chunked);
    pb_t_expect_http_error(&d, fd, chunked, 413, "too_large");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(http, max_connections_answers_busy)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("limits = { max_connections = 1; };\n", RABBIT));
    int fd = pb_dial(&d, 1);
    pb_t_expect_http(&d, fd, GET("/health"), 200, NULL, "ok\n");
    int refused = pb_dial(&d, 1);
    /* Answered at accept, before any request is read. */
    pb_t_http r;
    pb_t_recv_http(&d, refused, 0, &r);
    cr_expect_eq(r.status, 503);
    cr_expect(strstr((const char *)pb_buf_head(&r.body), "\"code\": \"busy\"") != NULL);
    pb_t_http_free(&r);
    close(refused);
    pb_t_expect_http(&d, fd, GET("/health"), 200, NULL, "ok\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* Asks /health on fd until the answer is 503 (the worker has taken the
 * signal), checking it; every earlier answer is a 200. */
static void expect_health_stopping(const pb_daemon *d, int fd)
{
    for (int i = 0; i < 200; i++) {
        pb_t_http r;
        pb_t_send(d, fd, GET("/health"), strlen(GET("/health")));
        pb_t_recv_http(d, fd, 0, &r);
        int status = r.status;
        if (status == 503)
            pb_t_expect_bytes(d, "health while stopping", pb_buf_head(&r.body),
                              pb_buf_used(&r.body), "stopping\n", 9);
        pb_t_http_free(&r);
        if (status == 503)
            return;
        pb_check(d, status == 200, "health answered %d", status);
        sleep_ms(20);
    }
    pb_t_fail(d, __FILE__, __LINE__, "health never answered 503 after SIGTERM");
}

/* A reply in flight on a frame connection keeps the worker stopping until
 * its timer fires: long enough for what a test checks meanwhile. */
#define SLOW_FRAME "{\"action\": \"timer\", \"value\": \"done\", \"delay\": 4}"

Test(http, health_says_stopping_while_the_worker_stops)
{
    pb_daemon d;
    pb_daemon_start(&d, STD);
    int web = pb_dial(&d, 1);
    pb_t_expect_http(&d, web, GET("/health"), 200, NULL, "ok\n");
    int app = pb_dial(&d, 0);
    /* Answered once, so that the worker has taken the connection before
     * the signal: the slow frame's bytes are then its to answer, and the
     * connection keeps it stopping (else it might see only HTTP ones). */
    pb_t_expect_morpheus(&d, app);
    pb_t_send_frame(&d, app, "text/json", "utf-8", SLOW_FRAME, strlen(SLOW_FRAME));
    pb_daemon_signal(&d, SIGTERM);
    expect_health_stopping(&d, web);
    pb_t_expect_eof(&d, web);
    close(web);
    web = -1;
    char *result = pb_t_recv_result(&d, app);
    cr_expect_str_eq(result, "done");
    free(result);
    close(app);
    pb_daemon_wait_clean(&d);
}

Test(http, a_message_while_stopping_is_answered_shutting_down)
{
    pb_daemon d;
    pb_daemon_start(&d, STD);
    int web = pb_dial(&d, 1);
    pb_t_expect_http(&d, web, GET("/health"), 200, NULL, "ok\n");
    /* Health says when the worker stops; that answer closes its
     * connection, so the message goes on another one, opened before. */
    int other = pb_dial(&d, 1);
    pb_t_expect_http(&d, other, GET("/health"), 200, NULL, NULL);
    int app = pb_dial(&d, 0);
    /* Answered once, so that the worker has taken the connection before
     * the signal: the slow frame's bytes are then its to answer, and the
     * connection keeps it stopping (else it might see only HTTP ones). */
    pb_t_expect_morpheus(&d, app);
    pb_t_send_frame(&d, app, "text/json", "utf-8", SLOW_FRAME, strlen(SLOW_FRAME));
    pb_daemon_signal(&d, SIGTERM);
    expect_health_stopping(&d, web);
    expect_post_error(&d, other, "text/json", PB_T_MORPHEUS, 503, "shutting_down");
    close(other);
    close(web);
    char *result = pb_t_recv_result(&d, app);
    free(result);
    close(app);
    pb_daemon_wait_clean(&d);
}

Test(http, a_reload_keeps_an_open_keep_alive_connection)
{
    pb_daemon d;
    pb_daemon_start(&d, CONF("", "old answer"));
    int fd = pb_dial(&d, 1);
    expect_post(&d, fd, "text/json", PB_T_MORPHEUS, 200, NULL,
                "{\"result\": \"old answer\"}");
    pb_daemon_write_config(&d, CONF("", "new answer"));
    pb_daemon_signal(&d, SIGHUP);
    pb_t_wait_stat(&d, "reloads", 1);
    expect_post(&d, fd, "text/json", PB_T_MORPHEUS, 200, NULL,
                "{\"result\": \"new answer\"}");
    pb_t_expect_http(&d, fd, GET("/health"), 200, NULL, "ok\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* PORT0: frame, routed; PORT1: https with verify_client (given). */
#define TLS_CONF(verify) TLS_CONF_MIN(verify, "1.2")
#define TLS_CONF_MIN(verify, min) \
    PB_T_CONF_HEAD "workers = 1;\n" \
    "listeners = (\n" \
    "  { name = \"app\"; address = \"127.0.0.1\"; port = @PORT0@; },\n" \
    "  { name = \"web\"; address = \"127.0.0.1\"; port = @PORT1@; framing = \"http\";\n" \
    "    tls = { certificate = \"@DIR@/server.crt\"; key = \"@DIR@/server.key\";\n" \
    "            ca = \"@DIR@/ca.crt\"; verify_client = \"" verify "\";\n" \
    "            min_version = \"" min "\"; }; }\n" \
    ");\n" \
    "plugins = ( { name = \"rt\"; module = \"" FIXTURES "/runtime.so\"; },\n" \
    "            { name = \"stats\"; module = \"stats\"; } );\n" \
    "routes = ( { content_type = \"text/json\"; action = \"stats\"; plugin = \"stats\"; },\n" \
    "           { plugin = \"rt\"; } );\n"

static void start_tls(pb_daemon *d, const char *config_template)
{
    pb_daemon_prepare(d, config_template);
    pb_t_make_certs(d->dir);
    pb_daemon_launch(d, config_template);
}

Test(http, https_with_client_certificates)
{
    pb_daemon d;
    pb_t_tls c;
    start_tls(&d, TLS_CONF("optional"));
    pb_t_tls_opts with = { .client = "client" }, without = { 0 };
    pb_t_tls_dial(&d, 1, &with, &c);
    pb_t_expect_http(&d, c.fd, GET("/health"), 200, "text/plain; charset=utf-8", "ok\n");
    expect_post(&d, c.fd, "text/json", "{\"action\": \"subject\", \"value\": \"\"}", 200,
                NULL, "{\"result\": \"CN=client,O=Plugboard Test\"}");
    pb_t_tls_close(&c);
    pb_t_tls_dial(&d, 1, &without, &c);
    expect_post(&d, c.fd, "text/json", "{\"action\": \"subject\"}", 200, NULL,
                "{\"result\": \"-\"}");
    pb_t_tls_close(&c);
    pb_daemon_stop_clean(&d);

    start_tls(&d, TLS_CONF("require"));
    pb_t_tls_dial(&d, 1, &with, &c);
    pb_t_expect_http(&d, c.fd, GET("/health"), 200, NULL, "ok\n");
    pb_t_tls_close(&c);
    /* Without a certificate the connection is closed at its first request. */
    if (pb_t_tls_open(&d, 1, &without, &c) == 0) {
        pb_t_send(&d, c.fd, GET("/health"), strlen(GET("/health")));
        pb_t_expect_eof(&d, c.fd);
        pb_t_tls_close(&c);
    }
    pb_t_wait_stat_at_least(&d, "connections.refused_by.tls", 1);
    pb_daemon_stop_clean(&d);
}

Test(http, https_min_version_refuses_older_clients)
{
    pb_daemon d;
    pb_t_tls c;
    start_tls(&d, TLS_CONF_MIN("none", "1.3"));
    pb_t_tls_opts old = { .max_version = "1.2" }, new = { .min_version = "1.3" };
    cr_expect_neq(pb_t_tls_open(&d, 1, &old, &c), 0, "a TLS 1.2 client got in");
    pb_t_tls_close(&c);
    pb_t_tls_dial(&d, 1, &new, &c);
    pb_t_expect_http(&d, c.fd, GET("/health"), 200, NULL, "ok\n");
    pb_t_tls_close(&c);
    pb_daemon_stop_clean(&d);
}

Test(http, a_reload_with_a_new_certificate_keeps_open_https_connections)
{
    pb_daemon d;
    pb_t_tls held, fresh;
    char cn[64], from[256], to[256];
    start_tls(&d, TLS_CONF("none"));
    pb_t_tls_opts o = { 0 };
    pb_t_tls_dial(&d, 1, &o, &held);
    cr_expect_str_eq(pb_t_tls_peer_cn(&held, cn, sizeof cn), "server");
    pb_t_expect_http(&d, held.fd, GET("/health"), 200, NULL, "ok\n");

    snprintf(from, sizeof from, "%s/server2.crt", d.dir);
    snprintf(to, sizeof to, "%s/server.crt", d.dir);
    size_t len;
    char *pem = pb_t_read_file(from, &len);
    cr_assert_not_null(pem);
    pb_t_write_file(to, pem, len);
    free(pem);
    snprintf(from, sizeof from, "%s/server2.key", d.dir);
    snprintf(to, sizeof to, "%s/server.key", d.dir);
    pem = pb_t_read_file(from, &len);
    cr_assert_not_null(pem);
    pb_t_write_file(to, pem, len);
    free(pem);
    pb_daemon_signal(&d, SIGHUP);
    pb_t_wait_stat(&d, "reloads", 1);

    pb_t_tls_dial(&d, 1, &o, &fresh);
    cr_expect_str_eq(pb_t_tls_peer_cn(&fresh, cn, sizeof cn), "server2",
                     "a connection after the reload gets the new certificate");
    pb_t_expect_http(&d, fresh.fd, GET("/health"), 200, NULL, "ok\n");
    pb_t_expect_http(&d, held.fd, GET("/health"), 200, NULL, "ok\n");
    pb_t_tls_close(&fresh);
    pb_t_tls_close(&held);
    pb_daemon_stop_clean(&d);
}

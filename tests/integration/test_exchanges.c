/*
 * test_exchanges.c - the real daemon answers normal traffic: the reference
 * exchanges byte for byte over TCP and a Unix socket, pipelining, large
 * messages, many connections, half-close and the shipped plugins.
 */

#include <criterion/criterion.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"

TestSuite(exchanges, .init = pb_harness_init, .fini = pb_harness_cleanup,
          .timeout = 180);

#define STD_WITH_UPPER_PORT \
    PB_T_CONF_HEAD PB_T_CONF_PLUGINS PB_T_CONF_ROUTES \
    "listeners = (\n" \
    "  { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; },\n" \
    "  { address = \"127.0.0.1\"; port = @PORT1@; framing = \"frame\"; plugin = \"upper\"; },\n" \
    "  { address = \"127.0.0.1\"; port = @PORT2@; framing = \"frame\"; plugin = \"echo\"; }\n" \
    ");\n"

static void expect_raw_reply(const pb_daemon *d, int fd, const pb_exchange *e)
{
    pb_t_reply r;
    char what[128];

    pb_t_recv_frame(d, fd, &r);
    snprintf(what, sizeof what, "reply of exchange %s", e->name);
    pb_t_expect_bytes(d, what, pb_buf_head(&r.raw), pb_buf_used(&r.raw),
                      e->reply, e->reply_len);
    pb_t_reply_free(&r);
}

/* The six exchanges one after the other on one connection. */
static void exchange_all(const pb_daemon *d, int fd)
{
    pb_exchange *v;
    size_t n = pb_vectors_load(&v);

    cr_assert_eq(n, 6, "expected six reference exchanges, found %zu", n);
    for (size_t i = 0; i < n; i++) {
        pb_t_send(d, fd, v[i].request, v[i].request_len);
        expect_raw_reply(d, fd, &v[i]);
    }
    pb_vectors_free(v, n);
}

static void send_text(const pb_daemon *d, int fd, const char *type,
                      const char *encoding, const char *text)
{
    pb_buf b = PB_BUF_INIT;

    pb_t_frame(&b, type, encoding, text, strlen(text));
    pb_t_send(d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_buf_free(&b);
}

Test(exchanges, reference_over_tcp)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    fd = pb_dial(&d, 0);
    exchange_all(&d, fd);
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(exchanges, reference_over_unix_socket)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    fd = pb_dial_unix(&d);
    exchange_all(&d, fd);
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* The guide's client: one request per connection; it may half-close. */
Test(exchanges, reference_one_connection_each_with_half_close)
{
    pb_daemon d;
    pb_exchange *v;
    size_t n;

    pb_daemon_start(&d, PB_T_CONF_STD);
    n = pb_vectors_load(&v);
    for (size_t i = 0; i < n; i++) {
        int fd = pb_dial(&d, 0);

        pb_t_send(&d, fd, v[i].request, v[i].request_len);
        shutdown(fd, SHUT_WR);
        expect_raw_reply(&d, fd, &v[i]);
        pb_t_expect_eof(&d, fd);
        close(fd);
    }
    pb_vectors_free(v, n);
    pb_daemon_stop_clean(&d);
}

Test(exchanges, reference_pipelined_in_one_write)
{
    pb_daemon d;
    pb_exchange *v;
    pb_buf all = PB_BUF_INIT;
    size_t n;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    n = pb_vectors_load(&v);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(pb_buf_append(&all, v[i].request, v[i].request_len), 0);
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, pb_buf_head(&all), pb_buf_used(&all));
    for (size_t i = 0; i < n; i++)
        expect_raw_reply(&d, fd, &v[i]);
    close(fd);
    pb_buf_free(&all);
    pb_vectors_free(v, n);
    pb_daemon_stop_clean(&d);
}

/* Every frame split at every byte: the daemon must reassemble. */
Test(exchanges, reference_sent_byte_by_byte)
{
    pb_daemon d;
    pb_exchange *v;
    size_t n;
    int fd, one = 1;

    pb_daemon_start(&d, PB_T_CONF_STD);
    n = pb_vectors_load(&v);
    fd = pb_dial(&d, 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < v[i].request_len; k++) {
            pb_t_send(&d, fd, v[i].request + k, 1);
            if (k % 16 == 0)
                usleep(1000);
        }
        expect_raw_reply(&d, fd, &v[i]);
    }
    close(fd);
    pb_vectors_free(v, n);
    pb_daemon_stop_clean(&d);
}

/* Other header keys are allowed, and a request may say "big". */
Test(exchanges, extra_header_keys_and_big_byteorder)
{
    static const char header[] =
        "{\"byteorder\": \"big\", \"content-type\": \"text/json\", "
        "\"content-encoding\": \"utf-8\", \"content-length\": 41, "
        "\"x-request-id\": 7, \"x-tags\": [\"a\"]}";
    static const char content[] = "{\"action\": \"search\", \"value\": \"morpheus\"}";
    pb_daemon d;
    pb_exchange *v;
    pb_buf b = PB_BUF_INIT;
    size_t n;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    n = pb_vectors_load(&v);
    pb_t_raw_frame(&b, header, strlen(header), content, strlen(content));
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, pb_buf_head(&b), pb_buf_used(&b));
    expect_raw_reply(&d, fd, pb_vector(v, n, "search_morpheus"));
    close(fd);
    pb_buf_free(&b);
    pb_vectors_free(v, n);
    pb_daemon_stop_clean(&d);
}

Test(exchanges, pipelining_1000_requests_in_one_write)
{
    enum { COUNT = 1000 };
    pb_daemon d;
    pb_buf all = PB_BUF_INIT;
    char text[64];
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    for (int i = 0; i < COUNT; i++) {
        snprintf(text, sizeof text, "message number %d", i);
        pb_t_frame(&all, "text/plain", "utf-8", text, strlen(text));
    }
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, pb_buf_head(&all), pb_buf_used(&all));
    for (int i = 0; i < COUNT; i++) {
        snprintf(text, sizeof text, "message number %d", i);
        pb_t_expect_reply(&d, fd, "text/plain", "utf-8", text, strlen(text));
    }
    close(fd);
    pb_buf_free(&all);
    pb_daemon_stop_clean(&d);
}

Test(exchanges, one_mebibyte_message_echoed)
{
    enum { SIZE = 1 << 20 };
    pb_daemon d;
    pb_buf b = PB_BUF_INIT;
    unsigned char *content = malloc(SIZE);
    int fd;

    cr_assert_not_null(content);
    for (size_t i = 0; i < SIZE; i++)
        content[i] = (unsigned char)('a' + (i * 7 + i / 251) % 26);
    pb_daemon_start(&d, PB_T_CONF_STD "limits = { max_message_bytes = 2097152; };\n");
    pb_t_frame(&b, "text/plain", "utf-8", content, SIZE);
    pb_t_frame(&b, "text/plain", "utf-8", "after", 5);
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", content, SIZE);
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "after", 5);
    close(fd);
    pb_buf_free(&b);
    free(content);
    pb_daemon_stop_clean(&d);
}

Test(exchanges, two_hundred_concurrent_connections)
{
    enum { COUNT = 200 };
    pb_daemon d;
    int fds[COUNT];
    char text[64];

    pb_daemon_start(&d, PB_T_CONF_STD);
    for (int i = 0; i < COUNT; i++)
        fds[i] = pb_dial(&d, 0);
    /* All connections are open before any request; then all requests are
     * in before any reply is read. */
    for (int i = 0; i < COUNT; i++) {
        snprintf(text, sizeof text, "connection %d", i);
        send_text(&d, fds[i], "text/plain", "utf-8", text);
    }
    for (int i = COUNT - 1; i >= 0; i--) {
        snprintf(text, sizeof text, "connection %d", i);
        pb_t_expect_reply(&d, fds[i], "text/plain", "utf-8", text, strlen(text));
    }
    for (int i = 0; i < COUNT; i++)
        close(fds[i]);
    pb_daemon_stop_clean(&d);
}

Test(exchanges, half_close_gets_every_reply_then_eof)
{
    pb_daemon d;
    pb_buf all = PB_BUF_INIT;
    char text[32];
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    for (int i = 0; i < 5; i++) {
        snprintf(text, sizeof text, "request %d", i);
        pb_t_frame(&all, "text/plain", "utf-8", text, strlen(text));
    }
    pb_t_frame(&all, "binary/custom-client-binary-type", "binary", "binary\xf0\x9f\x98\x83", 10);
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, pb_buf_head(&all), pb_buf_used(&all));
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    for (int i = 0; i < 5; i++) {
        snprintf(text, sizeof text, "request %d", i);
        pb_t_expect_reply(&d, fd, "text/plain", "utf-8", text, strlen(text));
    }
    pb_t_expect_reply(&d, fd, "binary/custom-server-binary-type", "binary",
                      "First 10 bytes of request: binary\xf0\x9f\x98\x83", 37);
    pb_t_expect_eof(&d, fd);
    close(fd);
    pb_buf_free(&all);
    pb_daemon_stop_clean(&d);
}

Test(exchanges, uppercase_json_value_as_unicode)
{
    static const char reply[] = "{\"result\": \"STRASSE \xc3\x89T\xc3\x89 \xf0\x9f\x90\xb0\"}";
    pb_daemon d;
    pb_t_reply r;
    pb_buf want = PB_BUF_INIT;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    fd = pb_dial(&d, 0);
    send_text(&d, fd, "text/json", "utf-8",
              "{\"action\": \"upper\", \"value\": \"stra\xc3\x9f" "e \xc3\xa9t\xc3\xa9 \xf0\x9f\x90\xb0\"}");
    pb_t_recv_frame(&d, fd, &r);
    pb_t_frame(&want, "text/json", "utf-8", reply, strlen(reply));
    pb_t_expect_bytes(&d, "uppercase reply", pb_buf_head(&r.raw), pb_buf_used(&r.raw),
                      pb_buf_head(&want), pb_buf_used(&want));
    pb_t_reply_free(&r);
    pb_buf_free(&want);
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* The encoding decides: utf-8 is Unicode, anything else ASCII only. */
Test(exchanges, uppercase_plain_content_by_encoding)
{
    static const char text[] = "stra\xc3\x9f" "e \xc3\xa9t\xc3\xa9 abc";
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, STD_WITH_UPPER_PORT);
    fd = pb_dial(&d, 1);
    send_text(&d, fd, "text/plain", "utf-8", text);
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "STRASSE \xc3\x89T\xc3\x89 ABC",
                      strlen("STRASSE \xc3\x89T\xc3\x89 ABC"));
    send_text(&d, fd, "application/octet-stream", "binary", text);
    pb_t_expect_reply(&d, fd, "application/octet-stream", "binary",
                      "STRA\xc3\x9f" "E \xc3\xa9T\xc3\xa9 ABC",
                      strlen("STRA\xc3\x9f" "E \xc3\xa9T\xc3\xa9 ABC"));
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* A listener's plugin takes every message, whatever the routes say. */
Test(exchanges, frame_listener_pinned_to_a_plugin)
{
    static const char request[] = "{\"action\": \"search\", \"value\": \"morpheus\"}";
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, STD_WITH_UPPER_PORT);
    fd = pb_dial(&d, 2);
    send_text(&d, fd, "text/json", "utf-8", request);
    pb_t_expect_reply(&d, fd, "text/json", "utf-8", request, strlen(request));
    close(fd);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

Test(exchanges, json_echo_route_by_action)
{
    static const char request[] = "{\"action\": \"echo\", \"value\": [1, 2.5, \"\xc3\xa9\"]}";
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    fd = pb_dial(&d, 0);
    send_text(&d, fd, "text/json", "utf-8", request);
    pb_t_expect_reply(&d, fd, "text/json", "utf-8", request, strlen(request));
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(exchanges, first10_short_and_empty_content)
{
    static const char prefix[] = "First 10 bytes of request: ";
    pb_daemon d;
    pb_buf b = PB_BUF_INIT;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    pb_t_frame(&b, "application/octet-stream", "binary", "abc", 3);
    pb_t_frame(&b, "application/octet-stream", "binary", "", 0);
    pb_t_frame(&b, "image/png", "binary", "0123456789ABCDEF", 16);
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_reply(&d, fd, "binary/custom-server-binary-type", "binary",
                      "First 10 bytes of request: abc", strlen(prefix) + 3);
    pb_t_expect_reply(&d, fd, "binary/custom-server-binary-type", "binary",
                      prefix, strlen(prefix));
    pb_t_expect_reply(&d, fd, "binary/custom-server-binary-type", "binary",
                      "First 10 bytes of request: 0123456789", strlen(prefix) + 10);
    close(fd);
    pb_buf_free(&b);
    pb_daemon_stop_clean(&d);
}

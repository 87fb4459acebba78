/*
 * test_errors.c - every error code of the wire protocol from the real
 * daemon, with the connection kept or closed as the protocol says, and the
 * daemon still serving new connections afterwards.
 */

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"

TestSuite(errors, .init = pb_harness_init, .fini = pb_harness_cleanup,
          .timeout = 180);


/* Sends only a length prefix and header (no content, so that nothing is
 * left unread when the daemon closes) and expects bad_frame, then EOF. */
static void expect_bad_header(const pb_daemon *d, const char *header, size_t len)
{
    pb_buf b = PB_BUF_INIT;
    int fd = pb_dial(d, 0);

    pb_t_raw_frame(&b, header, len, NULL, 0);
    pb_t_send(d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_error(d, fd, "bad_frame");
    pb_t_expect_eof(d, fd);
    close(fd);
    pb_buf_free(&b);
}

static void expect_bad_headers(const pb_daemon *d, const char *const *headers)
{
    for (size_t i = 0; headers[i]; i++) {
        char *shown = pb_t_escape(headers[i], strlen(headers[i]));

        pb_t_context("sending the header %s", shown ? shown : "?");
        free(shown);
        expect_bad_header(d, headers[i], strlen(headers[i]));
    }
    pb_t_context("%s", "");
}



Test(errors, bad_frame_header_length_zero)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, "\0\0", 2);
    pb_t_expect_error(&d, fd, "bad_frame");
    pb_t_expect_eof(&d, fd);
    close(fd);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

Test(errors, bad_frame_header_not_json)
{
    static const char *const headers[] = {
        "hello",
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\"",
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\", "
        "\"content-encoding\": \"utf-8\", \"content-length\": 0}}",
        "{'byteorder': 'little'}",
        NULL
    };
    pb_daemon d;

    pb_daemon_start(&d, PB_T_CONF_STD);
    expect_bad_headers(&d, headers);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

Test(errors, bad_frame_header_not_an_object)
{
    static const char *const headers[] = {
        "[\"little\", \"text/json\", \"utf-8\", 0]", "\"text\"", "42", "null", "true",
        NULL
    };
    pb_daemon d;

    pb_daemon_start(&d, PB_T_CONF_STD);
    expect_bad_headers(&d, headers);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

Test(errors, bad_frame_header_not_utf8)
{
    static const char *const headers[] = {
        /* a stray continuation byte, an overlong '/', a lone surrogate */
        "{\"byteorder\": \"little\", \"content-type\": \"text/\xff\", "
        "\"content-encoding\": \"utf-8\", \"content-length\": 0}",
        "{\"byteorder\": \"little\", \"content-type\": \"text\xc0\xafjson\", "
        "\"content-encoding\": \"utf-8\", \"content-length\": 0}",
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\", "
        "\"content-encoding\": \"utf-8\", \"content-length\": 0, \"x\": \"\xed\xa0\x80\"}",
        NULL
    };
    pb_daemon d;

    pb_daemon_start(&d, PB_T_CONF_STD);
    expect_bad_headers(&d, headers);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

Test(errors, bad_frame_missing_required_key)
{
    static const char *const headers[] = {
        "{\"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 0}",
        "{\"byteorder\": \"little\", \"content-encoding\": \"utf-8\", \"content-length\": 0}",
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-length\": 0}",
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\"}",
        "{}",
        NULL
    };
    pb_daemon d;

    pb_daemon_start(&d, PB_T_CONF_STD);
    expect_bad_headers(&d, headers);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

Test(errors, bad_frame_mistyped_required_key)
{
    static const char *const headers[] = {
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": \"0\"}",
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": -1}",
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 1.5}",
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": null}",
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": true}",
        "{\"byteorder\": \"little\", \"content-type\": 5, \"content-encoding\": \"utf-8\", \"content-length\": 0}",
        "{\"byteorder\": \"little\", \"content-type\": null, \"content-encoding\": \"utf-8\", \"content-length\": 0}",
        "{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": [], \"content-length\": 0}",
        "{\"byteorder\": 1, \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 0}",
        NULL
    };
    pb_daemon d;

    pb_daemon_start(&d, PB_T_CONF_STD);
    expect_bad_headers(&d, headers);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

Test(errors, bad_frame_byteorder_middle)
{
    static const char *const headers[] = {
        "{\"byteorder\": \"middle\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 0}",
        "{\"byteorder\": \"\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 0}",
        NULL
    };
    pb_daemon d;

    pb_daemon_start(&d, PB_T_CONF_STD);
    expect_bad_headers(&d, headers);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

/* Messages before a bad frame on the same connection are still answered. */
Test(errors, bad_frame_after_good_requests_in_one_write)
{
    static const char bad[] = "{\"byteorder\": \"middle\", \"content-type\": \"text/plain\", "
                              "\"content-encoding\": \"utf-8\", \"content-length\": 0}";
    pb_daemon d;
    pb_buf b = PB_BUF_INIT;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    pb_t_frame(&b, "text/plain", "utf-8", "one", 3);
    pb_t_frame(&b, "text/plain", "utf-8", "two", 3);
    pb_t_raw_frame(&b, bad, strlen(bad), NULL, 0);
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "one", 3);
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "two", 3);
    pb_t_expect_error(&d, fd, "bad_frame");
    pb_t_expect_eof(&d, fd);
    close(fd);
    pb_buf_free(&b);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

/* Header announcing `length` content bytes; the content is never sent and
 * the reply must come from the header alone. */
static void expect_too_large(const pb_daemon *d, const char *length)
{
    char header[256];
    pb_buf b = PB_BUF_INIT;
    int fd = pb_dial(d, 0);

    snprintf(header, sizeof header,
             "{\"byteorder\": \"little\", \"content-type\": \"text/plain\", "
             "\"content-encoding\": \"utf-8\", \"content-length\": %s}", length);
    pb_t_raw_frame(&b, header, strlen(header), NULL, 0);
    pb_t_send(d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_error(d, fd, "too_large");
    pb_t_expect_eof(d, fd);
    close(fd);
    pb_buf_free(&b);
}

Test(errors, too_large_from_the_header_alone)
{
    pb_daemon d;

    pb_daemon_start(&d, PB_T_CONF_STD);
    expect_too_large(&d, "1048576");
    expect_too_large(&d, "4294967296");
    expect_too_large(&d, "9223372036854775807");
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

/* The limit covers header + content: exactly at it passes, one more fails. */
Test(errors, too_large_limit_is_header_plus_content)
{
    enum { LIMIT = 1000 };
    pb_daemon d;
    pb_buf probe = PB_BUF_INIT, b = PB_BUF_INIT;
    char content[LIMIT], length[16];
    size_t h, fits;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD "limits = { max_message_bytes = 1000; };\n");
    cr_assert_eq(pb_frame_encode_header(&probe, "text/plain", "utf-8", 900), 0);
    h = pb_buf_used(&probe) - 2;
    fits = LIMIT - h;
    memset(content, 'z', sizeof content);
    pb_t_frame(&b, "text/plain", "utf-8", content, fits);
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", content, fits);
    close(fd);
    snprintf(length, sizeof length, "%zu", fits + 1);
    expect_too_large(&d, length);
    pb_t_check_serving(&d, 0);
    pb_buf_free(&probe);
    pb_buf_free(&b);
    pb_daemon_stop_clean(&d);
}

Test(errors, bad_json_keeps_the_connection)
{
    static const char *const contents[] = {
        "{not json", "", "{\"action\": \"search\", \"value\": \"morpheus\"",
        "{\"action\": \"search\", \"value\": \"\xff\"}", "[1, 2] 3",
        NULL
    };
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    fd = pb_dial(&d, 0);
    for (size_t i = 0; contents[i]; i++) {
        char *shown = pb_t_escape(contents[i], strlen(contents[i]));

        pb_t_context("sending the text/json content %s", shown ? shown : "?");
        free(shown);
        pb_t_send_frame(&d, fd, "text/json", "utf-8", contents[i], strlen(contents[i]));
        pb_t_expect_error(&d, fd, "bad_json");
        pb_t_expect_morpheus(&d, fd);
    }
    pb_t_context("%s", "");
    close(fd);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

Test(errors, bad_json_pipelined_keeps_order)
{
    pb_daemon d;
    pb_buf b = PB_BUF_INIT;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    pb_t_frame(&b, "text/plain", "utf-8", "before", 6);
    pb_t_frame(&b, "text/json", "utf-8", "{oops", 5);
    pb_t_frame(&b, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "before", 6);
    pb_t_expect_error(&d, fd, "bad_json");
    pb_t_expect_reply(&d, fd, "text/json", "utf-8", PB_T_MORPHEUS_REPLY, strlen(PB_T_MORPHEUS_REPLY));
    close(fd);
    pb_buf_free(&b);
    pb_daemon_stop_clean(&d);
}

Test(errors, no_route_keeps_the_connection)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_HEAD PB_T_CONF_PLUGINS
                    "listeners = ( { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; } );\n"
                    "routes = ( { content_type = \"text/json\"; plugin = \"search\"; },\n"
                    "           { content_type = \"image/*\"; plugin = \"first10\"; } );\n");
    fd = pb_dial(&d, 0);
    pb_t_send_frame(&d, fd, "binary/custom-client-binary-type", "binary", "binary\xf0\x9f\x98\x83", 10);
    pb_t_expect_error(&d, fd, "no_route");
    pb_t_expect_morpheus(&d, fd);
    pb_t_send_frame(&d, fd, "text/plain", "utf-8", "hello", 5);
    pb_t_expect_error(&d, fd, "no_route");
    pb_t_send_frame(&d, fd, "image/png", "binary", "PNG", 3);
    pb_t_expect_reply(&d, fd, "binary/custom-server-binary-type", "binary",
                      "First 10 bytes of request: PNG", 30);
    close(fd);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

Test(errors, plugin_failed_keeps_the_connection)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_HEAD PB_T_CONF_PLUGINS PB_T_CONF_ROUTES
                    "listeners = ( { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; },\n"
                    "              { address = \"127.0.0.1\"; port = @PORT1@; framing = \"frame\"; plugin = \"upper\"; } );\n");
    fd = pb_dial(&d, 1);
    pb_t_send_frame(&d, fd, "text/plain", "utf-8", "ok \xff\xfe", 5);
    pb_t_expect_error(&d, fd, "plugin_failed");
    pb_t_send_frame(&d, fd, "text/plain", "utf-8", "still ok", 8);
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "STILL OK", 8);
    close(fd);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

/* A new connection to PORTn that is served (not busy), waiting for the
 * daemon to notice that earlier connections closed. */
static int dial_until_served(const pb_daemon *d, int port_index)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = pb_dial(d, port_index);
        pb_buf b = PB_BUF_INIT;
        pb_t_reply r;
        int served;

        pb_t_frame(&b, "text/plain", "utf-8", "anyone?", 7);
        served = pb_send_all(fd, pb_buf_head(&b), pb_buf_used(&b)) == 0
            && pb_recv_frame(fd, &r) == 0;
        pb_buf_free(&b);
        if (served) {
            served = strcmp(r.content_type, "text/plain") == 0;
            if (served)
                pb_t_expect_bytes(d, "reply", r.content, r.content_length, "anyone?", 7);
            pb_t_reply_free(&r);
        }
        if (served)
            return fd;
        close(fd);
        usleep(100000);
    }
    pb_t_fail(d, __FILE__, __LINE__, "still busy after the other connections closed");
}

Test(errors, busy_over_max_connections)
{
    pb_daemon d;
    int a, b, c, fd;

    pb_daemon_start(&d, PB_T_CONF_HEAD PB_T_CONF_PLUGINS PB_T_CONF_ROUTES
                    "limits = { max_connections = 2; };\n"
                    "listeners = ( { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; } );\n");
    a = dial_until_served(&d, 0);
    b = dial_until_served(&d, 0);
    c = pb_dial(&d, 0);
    pb_t_expect_error(&d, c, "busy");
    pb_t_expect_eof(&d, c);
    close(c);
    /* The two accepted connections are unaffected. */
    pb_t_expect_morpheus(&d, a);
    pb_t_expect_morpheus(&d, b);
    close(a);
    fd = dial_until_served(&d, 0);
    close(fd);
    close(b);
    pb_daemon_stop_clean(&d);
}

Test(errors, busy_on_a_line_listener)
{
    pb_daemon d;
    int a, b, c;

    pb_daemon_start(&d, PB_T_CONF_HEAD PB_T_CONF_PLUGINS PB_T_CONF_ROUTES
                    "limits = { max_connections = 2; };\n"
                    "listeners = ( { address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; },\n"
                    "              { address = \"127.0.0.1\"; port = @PORT1@; framing = \"line\"; } );\n");
    a = dial_until_served(&d, 0);
    b = pb_dial(&d, 1);
    pb_t_send(&d, b, "hello\n", 6);
    pb_t_expect_line(&d, b, "hello\n");
    c = pb_dial(&d, 1);
    pb_t_expect_err_line(&d, c, "busy");
    pb_t_expect_eof(&d, c);
    close(a);
    close(b);
    close(c);
    pb_daemon_stop_clean(&d);
}

Test(errors, shutting_down_on_sigterm)
{
    pb_daemon d;
    int frame_fd, line_fd, unix_fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    frame_fd = pb_dial(&d, 0);
    pb_t_expect_morpheus(&d, frame_fd);
    line_fd = pb_dial(&d, 1);
    pb_t_send(&d, line_fd, "hi\n", 3);
    pb_t_expect_line(&d, line_fd, "hi\n");
    unix_fd = pb_dial_unix(&d);
    pb_t_expect_morpheus(&d, unix_fd);
    pb_daemon_signal(&d, SIGTERM);
    pb_t_expect_error(&d, frame_fd, "shutting_down");
    pb_t_expect_eof(&d, frame_fd);
    pb_t_expect_err_line(&d, line_fd, "shutting_down");
    pb_t_expect_eof(&d, line_fd);
    pb_t_expect_error(&d, unix_fd, "shutting_down");
    pb_t_expect_eof(&d, unix_fd);
    close(frame_fd);
    close(line_fd);
    close(unix_fd);
    pb_daemon_wait_clean(&d);
}

/* Messages already received are answered before the goodbye. */
Test(errors, shutting_down_answers_received_messages_first)
{
    pb_daemon d;
    pb_buf b = PB_BUF_INIT;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    pb_t_frame(&b, "text/plain", "utf-8", "first", 5);
    pb_t_frame(&b, "text/plain", "utf-8", "second", 6);
    pb_t_frame(&b, "text/json", "utf-8", PB_T_MORPHEUS, strlen(PB_T_MORPHEUS));
    fd = pb_dial(&d, 0);
    pb_t_send(&d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "first", 5);
    pb_daemon_signal(&d, SIGTERM);
    pb_t_expect_reply(&d, fd, "text/plain", "utf-8", "second", 6);
    pb_t_expect_reply(&d, fd, "text/json", "utf-8", PB_T_MORPHEUS_REPLY, strlen(PB_T_MORPHEUS_REPLY));
    pb_t_expect_error(&d, fd, "shutting_down");
    pb_t_expect_eof(&d, fd);
    close(fd);
    pb_buf_free(&b);
    pb_daemon_wait_clean(&d);
    pb_check(&d, pb_connect_tcp("127.0.0.1", d.port[0]) < 0,
             "the daemon exited but its port still accepts");
}

/* A peer in the middle of a frame does not hold up anyone else. */
Test(errors, partial_frame_does_not_block_others)
{
    pb_daemon d;
    pb_buf b = PB_BUF_INIT;
    size_t half;
    int slow;

    pb_daemon_start(&d, PB_T_CONF_STD);
    pb_t_frame(&b, "text/plain", "utf-8", "slowly but surely", 17);
    half = pb_buf_used(&b) - 8;
    slow = pb_dial(&d, 0);
    pb_t_send(&d, slow, pb_buf_head(&b), half);
    pb_t_check_serving(&d, 0);
    pb_t_send(&d, slow, pb_buf_head(&b) + half, pb_buf_used(&b) - half);
    pb_t_expect_reply(&d, slow, "text/plain", "utf-8", "slowly but surely", 17);
    close(slow);
    pb_buf_free(&b);
    pb_daemon_stop_clean(&d);
}

/* Reads whatever comes until the daemon closes; 0 when it did before the
 * guard, while trickling one byte of `frame` every 100 ms if given. */
static int closed_by_daemon(int fd, const unsigned char *frame, size_t len)
{
    struct timespec start, now;
    size_t sent = 0;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        char buf[512];

        if (poll(&p, 1, 100) > 0) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);

            if (n == 0 || (n < 0 && errno == ECONNRESET))
                return 0;
        } else if (frame && sent < len) {
            if (send(fd, frame + sent, 1, MSG_NOSIGNAL) != 1)
                return 0;
            sent++;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > PB_T_TIMEOUT_MS / 1000)
            return -1;
    }
}

Test(errors, idle_and_trickling_connections_are_closed)
{
    pb_daemon d;
    unsigned char frame[2 + 200 + 4000];
    pb_buf b = PB_BUF_INIT;
    int idle, trickle;

    pb_daemon_start(&d, PB_T_CONF_STD "limits = { idle_timeout = 1.0; };\n");
    memset(frame, 'x', sizeof frame);
    pb_t_frame(&b, "text/plain", "utf-8", frame, 4000);
    idle = pb_dial(&d, 0);
    pb_check(&d, closed_by_daemon(idle, NULL, 0) == 0,
             "an idle connection stayed open %d s with idle_timeout = 1.0",
             PB_T_TIMEOUT_MS / 1000);
    trickle = pb_dial(&d, 0);
    pb_check(&d, closed_by_daemon(trickle, pb_buf_head(&b), pb_buf_used(&b)) == 0,
             "a connection trickling a frame stayed open %d s with idle_timeout = 1.0",
             PB_T_TIMEOUT_MS / 1000);
    close(idle);
    close(trickle);
    pb_buf_free(&b);
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

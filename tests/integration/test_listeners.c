/*
 * test_listeners.c - the daemon's listeners as configured: the line framing,
 * listeners pinned to a plugin, IPv6 and host-name addresses, Unix socket
 * permissions and paths, @include, and reload on SIGHUP.
 */

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"

TestSuite(listeners, .init = pb_harness_init, .fini = pb_harness_cleanup,
          .timeout = 180);

#define LISTENERS(...) "listeners = (\n" __VA_ARGS__ ");\n"
#define TCP(port, framing, extra) \
    "  { address = \"127.0.0.1\"; port = @" port "@; framing = \"" framing "\";" extra " }\n"
#define BASE PB_T_CONF_HEAD PB_T_CONF_PLUGINS PB_T_CONF_ROUTES



static void send_str(const pb_daemon *d, int fd, const char *s)
{
    pb_t_send(d, fd, s, strlen(s));
}

Test(listeners, line_echo)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    fd = pb_dial(&d, 1);
    send_str(&d, fd, "hi\n");
    pb_t_expect_line(&d, fd, "hi\n");
    send_str(&d, fd, "\xf0\x9f\x90\xb0 \xc3\xa9\n");
    pb_t_expect_line(&d, fd, "\xf0\x9f\x90\xb0 \xc3\xa9\n");
    send_str(&d, fd, "\n");
    pb_t_expect_line(&d, fd, "\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* Only one trailing \r is dropped; a \r elsewhere is content. */
Test(listeners, line_crlf)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    fd = pb_dial(&d, 1);
    send_str(&d, fd, "hi\r\n");
    pb_t_expect_line(&d, fd, "hi\n");
    send_str(&d, fd, "a\rb\r\n");
    pb_t_expect_line(&d, fd, "a\rb\n");
    send_str(&d, fd, "\r\n");
    pb_t_expect_line(&d, fd, "\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(listeners, line_several_in_one_write_and_split)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    fd = pb_dial(&d, 1);
    send_str(&d, fd, "one\ntwo\r\nthree\nfo");
    pb_t_expect_line(&d, fd, "one\n");
    pb_t_expect_line(&d, fd, "two\n");
    pb_t_expect_line(&d, fd, "three\n");
    usleep(50000);
    send_str(&d, fd, "ur\n");
    pb_t_expect_line(&d, fd, "four\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(listeners, line_pipelined_1000)
{
    enum { COUNT = 1000 };
    pb_daemon d;
    pb_buf all = PB_BUF_INIT;
    char text[64];
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    for (int i = 0; i < COUNT; i++) {
        snprintf(text, sizeof text, "line %d\n", i);
        cr_assert_eq(pb_buf_append_str(&all, text), 0);
    }
    fd = pb_dial(&d, 1);
    pb_t_send(&d, fd, pb_buf_head(&all), pb_buf_used(&all));
    for (int i = 0; i < COUNT; i++) {
        snprintf(text, sizeof text, "line %d\n", i);
        pb_t_expect_line(&d, fd, text);
    }
    close(fd);
    pb_buf_free(&all);
    pb_daemon_stop_clean(&d);
}

Test(listeners, line_half_close)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD);
    fd = pb_dial(&d, 1);
    send_str(&d, fd, "a\nb\nc\n");
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    pb_t_expect_line(&d, fd, "a\n");
    pb_t_expect_line(&d, fd, "b\n");
    pb_t_expect_line(&d, fd, "c\n");
    pb_t_expect_eof(&d, fd);
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* max_message_bytes counts a line without its \n. */
Test(listeners, line_too_large)
{
    char line[160];
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_STD "limits = { max_message_bytes = 100; };\n");
    fd = pb_dial(&d, 1);
    memset(line, 'y', 100);
    strcpy(line + 100, "\n");
    send_str(&d, fd, line);
    pb_t_expect_line(&d, fd, line);
    memset(line, 'x', 101);
    pb_t_send(&d, fd, line, 101);
    pb_t_expect_err_line(&d, fd, "too_large");
    pb_t_expect_eof(&d, fd);
    close(fd);
    fd = pb_dial(&d, 1);
    send_str(&d, fd, "still here\n");
    pb_t_expect_line(&d, fd, "still here\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(listeners, line_pinned_to_uppercase)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, BASE LISTENERS(TCP("PORT0", "line", " plugin = \"upper\";")));
    fd = pb_dial(&d, 0);
    send_str(&d, fd, "stra\xc3\x9f" "e \xc3\xa9t\xc3\xa9\r\n");
    pb_t_expect_line(&d, fd, "STRASSE \xc3\x89T\xc3\x89\n");
    send_str(&d, fd, "bad \xff\n");
    pb_t_expect_err_line(&d, fd, "plugin_failed");
    send_str(&d, fd, "ok\n");
    pb_t_expect_line(&d, fd, "OK\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* Without a plugin of its own, a line listener follows the routes. */
Test(listeners, line_routed_and_no_route)
{
    pb_daemon d;
    int fd;

    pb_daemon_start(&d, BASE LISTENERS(TCP("PORT0", "line", "")));
    fd = pb_dial(&d, 0);
    send_str(&d, fd, "routed\n");
    pb_t_expect_line(&d, fd, "routed\n");
    close(fd);
    pb_daemon_stop_clean(&d);

    pb_daemon_start(&d, PB_T_CONF_HEAD PB_T_CONF_PLUGINS
                    "routes = ( { content_type = \"text/json\"; plugin = \"search\"; } );\n"
                    LISTENERS(TCP("PORT0", "line", "")));
    fd = pb_dial(&d, 0);
    send_str(&d, fd, "nowhere\n");
    pb_t_expect_err_line(&d, fd, "no_route");
    send_str(&d, fd, "again\n");
    pb_t_expect_err_line(&d, fd, "no_route");
    close(fd);
    pb_daemon_stop_clean(&d);
}

static int have_ipv6_loopback(void)
{
    struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;

    if (fd >= 0)
        close(fd);
    return ok;
}

Test(listeners, ipv6_loopback)
{
    pb_daemon d;
    int fd;

    if (!have_ipv6_loopback())
        cr_skip_test("this host has no IPv6 loopback");
    pb_daemon_start(&d, BASE LISTENERS(
        "  { address = \"::1\"; port = @PORT0@; framing = \"frame\"; },\n"
        "  { address = \"::1\"; port = @PORT1@; framing = \"line\"; plugin = \"echo\"; }\n"));
    fd = pb_connect_tcp("::1", d.port[0]);
    pb_check(&d, fd >= 0, "%s", pb_t_reason());
    pb_t_expect_morpheus(&d, fd);
    close(fd);
    fd = pb_connect_tcp("::1", d.port[1]);
    pb_check(&d, fd >= 0, "%s", pb_t_reason());
    send_str(&d, fd, "v6\n");
    pb_t_expect_line(&d, fd, "v6\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* A host name is bound on every address it resolves to. */
Test(listeners, localhost_binds_every_address)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
    struct addrinfo *list;
    pb_daemon d;
    int n = 0;

    pb_daemon_start(&d, BASE LISTENERS(
        "  { address = \"localhost\"; port = @PORT0@; framing = \"frame\"; }\n"));
    cr_assert_eq(getaddrinfo("localhost", NULL, &hints, &list), 0);
    for (struct addrinfo *ai = list; ai; ai = ai->ai_next) {
        char host[INET6_ADDRSTRLEN];
        const void *addr = ai->ai_family == AF_INET
            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        int fd;

        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        if (ai->ai_family == AF_INET6 && !have_ipv6_loopback())
            continue;
        cr_assert_not_null(inet_ntop(ai->ai_family, addr, host, sizeof host));
        fd = pb_connect_tcp(host, d.port[0]);
        pb_check(&d, fd >= 0, "localhost resolves to %s, not listened on: %s",
                 host, pb_t_reason());
        pb_t_expect_morpheus(&d, fd);
        close(fd);
        n++;
    }
    freeaddrinfo(list);
    cr_assert_gt(n, 0);
    pb_daemon_stop_clean(&d);
}

static void expect_unix_mode(const char *mode_text, mode_t mode)
{
    char config[4096];
    struct stat st;
    pb_daemon d;
    int fd;

    snprintf(config, sizeof config, "%s" LISTENERS(
                 "  { path = \"@SOCK@\"; mode = \"%s\"; framing = \"frame\"; }\n"),
             BASE, mode_text);
    pb_daemon_start(&d, config);
    pb_check(&d, stat(d.sock_path, &st) == 0, "no socket at %s", d.sock_path);
    pb_check(&d, S_ISSOCK(st.st_mode), "%s is not a socket", d.sock_path);
    pb_check(&d, (st.st_mode & 07777) == mode, "socket mode is %04o, configured %s",
             (unsigned)(st.st_mode & 07777), mode_text);
    fd = pb_dial_unix(&d);
    pb_t_expect_morpheus(&d, fd);
    close(fd);
    pb_daemon_stop_clean(&d);
}

Test(listeners, unix_socket_mode_0600)
{
    expect_unix_mode("0600", 0600);
}

/* Wider than the usual umask allows: the mode is set, not masked. */
Test(listeners, unix_socket_mode_0666)
{
    expect_unix_mode("0666", 0666);
}

/* Relative paths are relative to the config file's directory, for
 * sockets and @include alike. */
#define RELATIVE_CONF \
    PB_T_CONF_HEAD "@include \"routing.inc\"\n" \
    LISTENERS(TCP("PORT0", "frame", "") \
              ", { path = \"relative.sock\"; framing = \"line\"; plugin = \"upper\"; }\n")

Test(listeners, relative_paths_and_include)
{
    char path[256], included[256];
    pb_daemon d;
    int fd;

    pb_daemon_prepare(&d, RELATIVE_CONF);
    snprintf(included, sizeof included, "%s/routing.inc", d.dir);
    pb_t_write_file(included, PB_T_CONF_PLUGINS PB_T_CONF_ROUTES,
                    strlen(PB_T_CONF_PLUGINS PB_T_CONF_ROUTES));
    pb_daemon_launch(&d, RELATIVE_CONF);
    fd = pb_dial(&d, 0);
    pb_t_expect_morpheus(&d, fd);
    close(fd);
    snprintf(path, sizeof path, "%s/relative.sock", d.dir);
    fd = pb_connect_unix(path);
    pb_check(&d, fd >= 0, "%s", pb_t_reason());
    send_str(&d, fd, "relative\n");
    pb_t_expect_line(&d, fd, "RELATIVE\n");
    close(fd);
    pb_daemon_stop_clean(&d);
}

/* Sends "probe" as text/plain on fd and returns the reply content. */
static char *probe(const pb_daemon *d, int fd)
{
    pb_buf b = PB_BUF_INIT;
    pb_t_reply r;
    char *text;

    pb_t_frame(&b, "text/plain", "utf-8", "probe", 5);
    pb_t_send(d, fd, pb_buf_head(&b), pb_buf_used(&b));
    pb_buf_free(&b);
    pb_t_recv_frame(d, fd, &r);
    text = strndup((const char *)r.content, r.content_length);
    pb_t_reply_free(&r);
    cr_assert_not_null(text);
    return text;
}

#define RELOADED_ROUTES \
    "routes = ( { content_type = \"text/plain\"; plugin = \"upper\"; },\n" \
    "           { plugin = \"first10\"; } );\n"

/* SIGHUP: new routes apply to open connections; a broken file changes
 * nothing. */
Test(listeners, reload_on_sighup)
{
    pb_daemon d;
    char *reply = NULL;
    int fd;

    pb_daemon_start(&d, PB_T_CONF_HEAD PB_T_CONF_PLUGINS PB_T_CONF_ROUTES
                    LISTENERS(TCP("PORT0", "frame", "")));
    fd = pb_dial(&d, 0);
    reply = probe(&d, fd);
    pb_check(&d, strcmp(reply, "probe") == 0, "before reload: %s", reply);
    free(reply);

    pb_daemon_write_config(&d, PB_T_CONF_HEAD PB_T_CONF_PLUGINS "routes = ( oops\n"
                           LISTENERS(TCP("PORT0", "frame", "")));
    pb_daemon_signal(&d, SIGHUP);
    usleep(500000);
    reply = probe(&d, fd);
    pb_check(&d, strcmp(reply, "probe") == 0, "after a broken reload: %s", reply);
    free(reply);

    pb_daemon_write_config(&d, PB_T_CONF_HEAD PB_T_CONF_PLUGINS RELOADED_ROUTES
                           LISTENERS(TCP("PORT0", "frame", "")));
    pb_daemon_signal(&d, SIGHUP);
    for (int i = 0; i < 100; i++) {
        reply = probe(&d, fd);
        if (strcmp(reply, "PROBE") == 0)
            break;
        pb_check(&d, strcmp(reply, "probe") == 0, "during reload: %s", reply);
        free(reply);
        reply = NULL;
        usleep(100000);
    }
    pb_check(&d, reply != NULL, "the open connection kept the old routes 10 s after SIGHUP");
    free(reply);
    close(fd);
    fd = pb_dial(&d, 0);
    reply = probe(&d, fd);
    pb_check(&d, strcmp(reply, "PROBE") == 0, "new connection after reload: %s", reply);
    free(reply);
    close(fd);
    pb_daemon_stop_clean(&d);
}

/*
 * test_access.c - listener allow-lists against the real daemon: a peer
 * outside the list is closed at accept without a byte of reply, a peer
 * inside is served, and a reload changes the list of an open socket.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <unistd.h>

#include "harness.h"

TestSuite(access, .init = pb_harness_init, .fini = pb_harness_cleanup);

#define CONF(allow0) \
    PB_T_CONF_HEAD "workers = 1;\n" \
    "listeners = (\n" \
    "  { name = \"guarded\"; address = \"127.0.0.1\"; port = @PORT0@; allow = [ " allow0 " ]; },\n" \
    "  { name = \"open\"; address = \"127.0.0.1\"; port = @PORT1@; allow = [ \"127.0.0.0/8\", \"::1\" ]; }\n" \
    ");\n" PB_T_CONF_PLUGINS \
    "  routes = ( { content_type = \"text/json\"; plugin = \"search\"; } );\n"

/* Connects to PORTn and expects to be closed before any byte. */
static void expect_refused(const pb_daemon *d, int port_index)
{
    int fd = pb_dial(d, port_index);
    pb_t_send_frame(d, fd, "text/json", "utf-8", PB_T_MORPHEUS, sizeof PB_T_MORPHEUS - 1);
    pb_t_expect_eof(d, fd);
    close(fd);
}

Test(access, a_peer_outside_the_allow_list_is_closed_at_accept)
{
    pb_daemon d;
    pb_daemon_prepare(&d, CONF("\"10.0.0.0/8\""));
    pb_daemon_launch(&d, CONF("\"10.0.0.0/8\""));
    expect_refused(&d, 0);
    pb_t_check_serving(&d, 1);
    pb_daemon_stop_clean(&d);
}

Test(access, a_reload_changes_the_allow_list_of_an_open_socket)
{
    pb_daemon d;
    pb_daemon_prepare(&d, CONF("\"10.0.0.0/8\""));
    pb_daemon_launch(&d, CONF("\"10.0.0.0/8\""));
    expect_refused(&d, 0);
    pb_daemon_write_config(&d, CONF("\"192.0.2.0/24\", \"127.0.0.1/32\""));
    pb_daemon_signal(&d, SIGHUP);
    int served = 0;
    for (int i = 0; i < 500 && !served; i++) {
        int fd = pb_connect_tcp("127.0.0.1", d.port[0]);
        if (fd >= 0) {
            pb_buf frame = PB_BUF_INIT;
            pb_t_frame(&frame, "text/json", "utf-8", PB_T_MORPHEUS, sizeof PB_T_MORPHEUS - 1);
            pb_t_reply r;
            served = pb_send_all(fd, pb_buf_head(&frame), pb_buf_used(&frame)) == 0 &&
                     pb_recv_frame(fd, &r) == 0;
            if (served)
                pb_t_reply_free(&r);
            pb_buf_free(&frame);
            close(fd);
        }
        if (!served)
            usleep(10 * 1000);
    }
    cr_expect(served, "the reloaded allow list admits 127.0.0.1");
    pb_t_check_serving(&d, 0);
    pb_daemon_stop_clean(&d);
}

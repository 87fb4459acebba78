/*
 * test_stats_table.c - tests of tools/stats_table.c, what plugboard-cli
 * prints for a stats reply: the per-worker, per-listener and latency
 * tables of a full reply, and an older reply without them.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "stats_table.h"

static char *table_of(const json_t *stats)
{
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(stats_table_write(&out, stats), 0);
    char *text = strndup((const char *)pb_buf_head(&out), pb_buf_used(&out));
    cr_assert_not_null(text);
    pb_buf_free(&out);
    return text;
}

#define expect_in(text, needle) \
    cr_expect_not_null(strstr((text), (needle)), "no\n%s\nin\n%s", (needle), (text))
#define expect_not_in(text, needle) \
    cr_expect_null(strstr((text), (needle)), "%s in\n%s", (needle), (text))

Test(stats_table, full_reply)
{
    json_error_t error;
    json_t *s = json_load_file(PB_TEST_SRCDIR "/tests/vectors/status-snapshot.json", 0, &error);
    cr_assert_not_null(s, "%s", error.text);
    char *t = table_of(s);

    cr_expect_eq(strncmp(t, "uptime       3 d 4 h 4 min\n", 27), 0, "%s", t);
    expect_in(t, "\ngeneration   3 (2 reloads, 0 failed)\n");
    expect_in(t, "\nworkers      2 (1 restart)\n");
    expect_in(t, "\nconnections  26 open, 98213 accepted, 7 refused (busy 5, allow 2)\n");
    expect_in(t, "\nmessages     2578445\n");
    expect_in(t, "\nbytes        393.2 MiB in, 513.2 MiB out\n");
    expect_in(t, "\nerrors       bad_frame 3, too_large 1, bad_json 12, no_route 4, slow_consumer 2\n");
    expect_in(t, "\nWORKER    PID  CONNECTIONS  MESSAGES\n"
                 "0       48211           14   1290344\n");
    expect_in(t, "\nLISTENER  OPEN  ACCEPTED\nframe       17     61022\n");
    expect_in(t, "\nPLUGIN   MESSAGES  ERRORS     P50      P99\n"
                 "echo        15233       0   42 \xc2\xb5s   247 \xc2\xb5s\n");
    expect_in(t, "\nsearch    1803334      12  186 \xc2\xb5s  1.77 ms\n");
    expect_in(t, "\nqueue   ready{emails}         2\n");
    expect_in(t, "\n8: text/json -> search  ");
    free(t);
    json_decref(s);
}

Test(stats_table, older_reply)
{
    json_t *s = json_loads("{\"uptime\": 12.5, \"workers\": 1, \"messages\": 3,"
                           " \"errors\": {\"bad_json\": 0},"
                           " \"plugins\": {\"echo\": {\"messages\": 2, \"errors\": 0}},"
                           " \"routes\": {\"1: * -> echo\": {\"messages\": 2, \"errors\": 0}}}",
                           0, NULL);
    cr_assert_not_null(s);
    char *t = table_of(s);

    cr_expect_str_eq(t, "uptime       12.5 s\n"
                        "workers      1 (0 restarts)\n"
                        "messages     3\n"
                        "errors       none\n"
                        "\n"
                        "PLUGIN  MESSAGES  ERRORS\n"
                        "echo           2       0\n"
                        "\n"
                        "ROUTE         MESSAGES  ERRORS\n"
                        "1: * -> echo         2       0\n");
    free(t);
    json_decref(s);
}

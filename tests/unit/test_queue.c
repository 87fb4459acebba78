/*
 * test_queue.c - the queue plugin's settings and its checking of requests,
 * without a worker: every malformed request is refused with a text that
 * says what is wrong, before anything reaches the store, and create()
 * opens no database (it also runs in the configuration check).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "plugin_harness.h"

static pb_test_plugin *queue(const char *settings)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, settings, NULL);
    cr_assert_eq(t->rc, PB_OK, "settings refused: %s", pb_test_diag(t, 0));
    return t;
}

static void expect_refused_settings(const char *settings, const char *error)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, settings, NULL);
    cr_expect_eq(t->rc, PB_ERROR, "settings %s accepted", settings);
    cr_expect_str_eq(pb_test_diag(t, 0), error);
    pb_test_plugin_free(t);
}

Test(queue, settings_default_to_sqlite_and_name_a_path)
{
    pb_test_plugin_free(queue(NULL));
    pb_test_plugin_free(queue("{\"backend\": \"sqlite\"}"));
    pb_test_plugin_free(queue("{\"backend\": \"sqlite\",\n \"path\": \"q.db\"}"));
}

Test(queue, settings_errors_name_the_setting_and_its_line)
{
    expect_refused_settings("{\"path\": \"q.db\",\n \"pth\": \"q.db\"}",
        "harness.conf:2: plugin queue: unknown setting \"pth\" (the sqlite "
        "backend takes \"path\")");
    expect_refused_settings("{\n\"path\": 7}",
        "harness.conf:2: plugin queue: \"path\" must be the database file's name");
    expect_refused_settings("{\n\"path\": \"\"}",
        "harness.conf:2: plugin queue: \"path\" must be the database file's name");
    expect_refused_settings("{\n\"backend\": \"mysql\"}",
        "harness.conf:2: plugin queue: \"backend\" must be \"sqlite\" or \"redis\"");
    expect_refused_settings("{\n\"backend\": 1}",
        "harness.conf:2: plugin queue: \"backend\" must be \"sqlite\" or \"redis\"");
}

Test(queue, create_opens_no_database)
{
    char dir[] = "/tmp/pb-queue-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char settings[256], path[128];
    snprintf(path, sizeof path, "%s/queue.db", dir);
    snprintf(settings, sizeof settings, "{\"path\": \"%s\"}", path);
    pb_test_plugin_free(queue(settings));
    cr_expect(access(path, F_OK) != 0, "create() made %s", path);
    rmdir(dir);
}

/* The request is refused with a text that contains `why`. */
static void expect_refused(pb_test_plugin *t, const char *request, const char *why)
{
    pb_test_reply r;
    cr_expect_eq(pb_test_handle_str(t, "text/json", "utf-8", request, &r), PB_ERROR,
                 "%s was not refused", request);
    cr_expect(strstr(r.error, why) != NULL, "%s: \"%s\" does not say \"%s\"",
              request, r.error, why);
    pb_test_reply_free(&r);
}

Test(queue, malformed_requests_say_what_is_wrong)
{
    static const struct { const char *request, *why; } cases[] = {
        { "[1, 2]", "a queue request is a JSON object" },
        { "\"enqueue\"", "a queue request is a JSON object" },
        { "{\"queue\": \"jobs\"}", "\"action\" must be enqueue, dequeue, ack or depth" },
        { "{\"action\": \"purge\", \"queue\": \"jobs\"}", "\"action\" must be" },
        { "{\"action\": 1, \"queue\": \"jobs\"}", "\"action\" must be" },
        { "{\"action\": \"depth\"}", "\"queue\" must be a queue's name" },
        { "{\"action\": \"depth\", \"queue\": 7}", "\"queue\" must be a queue's name" },
        { "{\"action\": \"depth\", \"queue\": \"\"}", "\"queue\" must be a queue's name" },
        { "{\"action\": \"depth\", \"queue\": \"a\\u0000b\"}", "without NUL" },
        { "{\"action\": \"enqueue\", \"queue\": \"jobs\"}", "enqueue needs a \"message\"" },
        { "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": \"x\"}",
          "\"wait\" is not a number of seconds" },
        { "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": -0.5}",
          "\"wait\" is out of range" },
        { "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": 3601}",
          "\"wait\" is out of range" },
        { "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"lease\": -1}",
          "\"lease\" is out of range" },
        { "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"lease\": 0}",
          "\"lease\" is out of range" },
        { "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"lease\": 1e300}",
          "\"lease\" is out of range" },
        { "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"lease\": true}",
          "\"lease\" is not a number of seconds" },
        { "{\"action\": \"ack\", \"queue\": \"jobs\"}", "ack needs the \"id\"" },
        { "{\"action\": \"ack\", \"queue\": \"jobs\", \"id\": 17}", "ack needs the \"id\"" },
        { "{\"action\": \"ack\", \"queue\": \"jobs\", \"id\": \"\"}", "ack needs the \"id\"" },
    };
    pb_test_plugin *t = queue(NULL);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_refused(t, cases[i].request, cases[i].why);
    pb_test_plugin_free(t);
}

Test(queue, a_queue_name_may_have_255_bytes)
{
    char request[512], name[257];
    pb_test_plugin *t = queue(NULL);
    memset(name, 'q', 256);
    name[256] = '\0';
    snprintf(request, sizeof request, "{\"action\": \"depth\", \"queue\": \"%s\"}", name);
    expect_refused(t, request, "\"queue\" must be a queue's name");
    name[255] = '\0';
    snprintf(request, sizeof request, "{\"action\": \"depth\", \"queue\": \"%s\"}", name);
    /* Well formed: only the missing worker stops it. */
    expect_refused(t, request, "the queue is not serving");
    pb_test_plugin_free(t);
}

Test(queue, well_formed_requests_need_a_serving_worker)
{
    static const char *const requests[] = {
        "{\"action\": \"enqueue\", \"queue\": \"jobs\", \"message\": null}",
        "{\"action\": \"dequeue\", \"queue\": \"jobs\"}",
        "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": 0, \"lease\": 0.001}",
        "{\"action\": \"dequeue\", \"queue\": \"jobs\", \"wait\": 3600, \"lease\": 86400}",
        "{\"action\": \"ack\", \"queue\": \"jobs\", \"id\": \"17\"}",
        "{\"action\": \"depth\", \"queue\": \"jobs\", \"extra\": [1]}",
    };
    pb_test_plugin *t = queue(NULL);
    for (size_t i = 0; i < sizeof requests / sizeof *requests; i++)
        expect_refused(t, requests[i], "the queue is not serving");
    pb_test_plugin_free(t);
}

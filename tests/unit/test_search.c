/*
 * test_search.c - the search plugin: the guide's exchanges byte for byte,
 * how request values are shown in answers, entries and data_file (merge,
 * relative paths, every settings error), and a table large enough to grow.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_harness.h"

/* The shipped configuration's settings. */
static const char guide_settings[] =
    "{\"entries\": [[\"morpheus\", \"Follow the white rabbit. 🐰\"],\n"
    "              [\"ring\", \"In the caves beneath the Misty Mountains. 💍\"],\n"
    "              [\"🐶\", \"🐾 Playing ball! 🏐\"]]}";

static pb_test_plugin *search(const char *settings)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, settings, NULL);
    cr_assert_eq(t->rc, PB_OK, "settings refused: %s", pb_test_diag(t, 0));
    return t;
}

static void check_seed(const char *name)
{
    unsigned char *request, *expected;
    size_t request_length, expected_length;
    pb_test_seed_exchange(name, &request, &request_length, &expected, &expected_length);
    pb_test_plugin *t = search(guide_settings);
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_wire(t, request, request_length, &r), PB_OK);
    cr_assert_eq(r.wire_length, expected_length, "%s: got %s", name, (char *)r.content);
    cr_assert(memcmp(r.wire, expected, expected_length) == 0,
              "%s: got %s", name, (char *)r.content);
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
    free(request);
    free(expected);
}

Test(search, guide_morpheus) { check_seed("search_morpheus"); }
Test(search, guide_ring) { check_seed("search_ring"); }
Test(search, guide_dog_emoji) { check_seed("search_dog_emoji"); }
Test(search, guide_no_match) { check_seed("search_no_match"); }
Test(search, guide_invalid_action) { check_seed("invalid_action_fly"); }

/* Asks t with a JSON request and checks the reply content exactly. */
static void ask(pb_test_plugin *t, const char *request, const char *expected)
{
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "text/json", "utf-8", request, &r), PB_OK,
                 "%s failed: %s", request, r.error);
    cr_assert_str_eq(r.content_type, "text/json");
    cr_assert_str_eq(r.content_encoding, "utf-8");
    cr_assert_str_eq((const char *)r.content, expected);
    pb_test_reply_free(&r);
}

static void ask_guide(const char *request, const char *expected)
{
    pb_test_plugin *t = search(guide_settings);
    ask(t, request, expected);
    pb_test_plugin_free(t);
}

Test(search, other_request_members_are_ignored)
{
    ask_guide("{\"value\": \"ring\", \"extra\": [1, 2], \"action\": \"search\"}",
              "{\"result\": \"In the caves beneath the Misty Mountains. 💍\"}");
}

Test(search, actions_are_shown_as_python_shows_them)
{
    ask_guide("{\"value\": \"x\"}", "{\"result\": \"Error: invalid action \\\"None\\\".\"}");
    ask_guide("{\"action\": null}", "{\"result\": \"Error: invalid action \\\"None\\\".\"}");
    ask_guide("{\"action\": true}", "{\"result\": \"Error: invalid action \\\"True\\\".\"}");
    ask_guide("{\"action\": false}", "{\"result\": \"Error: invalid action \\\"False\\\".\"}");
    ask_guide("{\"action\": -42}", "{\"result\": \"Error: invalid action \\\"-42\\\".\"}");
    ask_guide("{\"action\": \"SEARCH\"}",
              "{\"result\": \"Error: invalid action \\\"SEARCH\\\".\"}");
    ask_guide("{\"action\": \"search\\u0000x\"}",
              "{\"result\": \"Error: invalid action \\\"search\\u0000x\\\".\"}");
}

Test(search, floats_are_shown_as_python_shows_them)
{
    ask_guide("{\"action\": 1.5}", "{\"result\": \"Error: invalid action \\\"1.5\\\".\"}");
    ask_guide("{\"action\": 100.0}", "{\"result\": \"Error: invalid action \\\"100.0\\\".\"}");
    ask_guide("{\"action\": 0.1}", "{\"result\": \"Error: invalid action \\\"0.1\\\".\"}");
    ask_guide("{\"action\": 1e16}", "{\"result\": \"Error: invalid action \\\"1e+16\\\".\"}");
    ask_guide("{\"action\": 1e15}",
              "{\"result\": \"Error: invalid action \\\"1000000000000000.0\\\".\"}");
    ask_guide("{\"action\": 0.0001}", "{\"result\": \"Error: invalid action \\\"0.0001\\\".\"}");
    ask_guide("{\"action\": 0.00001}", "{\"result\": \"Error: invalid action \\\"1e-05\\\".\"}");
    ask_guide("{\"action\": -0.0}", "{\"result\": \"Error: invalid action \\\"-0.0\\\".\"}");
    ask_guide("{\"action\": 1.7976931348623157e308}",
              "{\"result\": \"Error: invalid action \\\"1.7976931348623157e+308\\\".\"}");
}

/* Powers of two have a closer neighbour below than above, so a shorter
 * text than the correctly rounded one can read back as the same float;
 * Python's repr() takes it. The texts are Python's. */
Test(search, powers_of_two_are_shown_as_python_shows_them)
{
    static const char *const floats[] = {
        "7.678447687145631e-239", "5.960464477539063e-08", "5.684341886080802e-14",
        "-6.189700196426902e+26", "7.120236347223045e-307", "6.386688990511104e+293",
    };
    for (size_t i = 0; i < sizeof floats / sizeof *floats; i++) {
        char request[128], expected[128];
        snprintf(request, sizeof request, "{\"action\": %s}", floats[i]);
        snprintf(expected, sizeof expected,
                 "{\"result\": \"Error: invalid action \\\"%s\\\".\"}", floats[i]);
        ask_guide(request, expected);
        snprintf(request, sizeof request,
                 "{\"action\": \"search\", \"value\": [%s]}", floats[i]);
        snprintf(expected, sizeof expected,
                 "{\"result\": \"No match for \\\"[%s]\\\".\"}", floats[i]);
        ask_guide(request, expected);
    }
}

Test(search, arrays_and_objects_are_shown_as_json)
{
    ask_guide("{\"action\": [\"a\", 1, [], {}]}",
              "{\"result\": \"Error: invalid action \\\"[\\\"a\\\", 1, [], {}]\\\".\"}");
    ask_guide("{\"action\": \"search\", \"value\": {\"k\": \"v\\n\\u0001\", \"n\": null}}",
              "{\"result\": \"No match for \\\"{\\\"k\\\": \\\"v\\\\n\\\\u0001\\\", "
              "\\\"n\\\": null}\\\".\"}");
}

Test(search, values_that_are_no_key)
{
    ask_guide("{\"action\": \"search\"}", "{\"result\": \"No match for \\\"None\\\".\"}");
    ask_guide("{\"action\": \"search\", \"value\": 7}",
              "{\"result\": \"No match for \\\"7\\\".\"}");
    ask_guide("{\"action\": \"search\", \"value\": \"Morpheus\"}",
              "{\"result\": \"No match for \\\"Morpheus\\\".\"}");
    ask_guide("{\"action\": \"search\", \"value\": \"a \\\"quote\\\"\"}",
              "{\"result\": \"No match for \\\"a \\\"quote\\\"\\\".\"}");
    ask_guide("{\"action\": \"search\", \"value\": \"\"}",
              "{\"result\": \"No match for \\\"\\\".\"}");
}

Test(search, content_that_is_not_a_json_object_fails)
{
    pb_test_plugin *t = search(guide_settings);
    pb_test_reply r;
    cr_assert_eq(pb_test_handle_str(t, "text/json", "utf-8", "[\"search\", \"ring\"]", &r),
                 PB_ERROR);
    cr_assert_str_eq(r.error, "search needs text/json content holding an object");
    pb_test_reply_free(&r);
    cr_assert_eq(pb_test_handle_str(t, "text/plain", "utf-8", "{\"action\": \"search\"}", &r),
                 PB_ERROR);
    cr_assert_str_eq(r.error, "search needs text/json content holding an object");
    pb_test_reply_free(&r);
    pb_test_plugin_free(t);
}

Test(search, no_settings_means_no_answers)
{
    pb_test_plugin *t = search(NULL);
    ask(t, "{\"action\": \"search\", \"value\": \"ring\"}",
        "{\"result\": \"No match for \\\"ring\\\".\"}");
    pb_test_plugin_free(t);
}

Test(search, a_later_entry_wins_and_answers_keep_their_bytes)
{
    pb_test_plugin *t = search("{\"entries\": [[\"k\", \"first\"], [\"k\", \"sec\\\"ond\\n\"],"
                               " [\"\", \"empty key\"]]}");
    ask(t, "{\"action\": \"search\", \"value\": \"k\"}", "{\"result\": \"sec\\\"ond\\n\"}");
    ask(t, "{\"action\": \"search\", \"value\": \"\"}", "{\"result\": \"empty key\"}");
    pb_test_plugin_free(t);
}

Test(search, many_entries)
{
    char *settings = malloc(64 * 1000 + 64);
    cr_assert_not_null(settings);
    size_t n = (size_t)sprintf(settings, "{\"entries\": [");
    for (int i = 0; i < 1000; i++)
        n += (size_t)sprintf(settings + n, "%s[\"key%d\", \"answer %d\"]", i ? ", " : "", i, i);
    sprintf(settings + n, "]}");
    pb_test_plugin *t = search(settings);
    free(settings);
    for (int i = 0; i < 1000; i += 37) {
        char request[64], expected[64];
        snprintf(request, sizeof request, "{\"action\": \"search\", \"value\": \"key%d\"}", i);
        snprintf(expected, sizeof expected, "{\"result\": \"answer %d\"}", i);
        ask(t, request, expected);
    }
    ask(t, "{\"action\": \"search\", \"value\": \"key1000\"}",
        "{\"result\": \"No match for \\\"key1000\\\".\"}");
    pb_test_plugin_free(t);
}

/* --- Settings errors ---------------------------------------------------- */

/* Creates with settings that must be refused; checks the first error. */
static pb_test_plugin *refused(const char *settings, const char *config_dir,
                               const char *first_error)
{
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, settings, config_dir);
    cr_assert_eq(t->rc, PB_ERROR);
    cr_assert_str_eq(pb_test_diag(t, 0), first_error);
    return t;
}

Test(search, unknown_setting)
{
    pb_test_plugin_free(refused("{\"entries\": [],\n \"entrys\": []}", NULL,
        "harness.conf:2: plugin search: unknown setting \"entrys\" "
        "(search takes entries and data_file)"));
}

Test(search, entries_not_a_list)
{
    pb_test_plugin_free(refused("{\"entries\": {\"a\": \"b\"}}", NULL,
        "harness.conf:1: plugin search: entries must be a list of (key, answer) pairs"));
}

Test(search, malformed_entries_are_each_reported_at_their_line)
{
    pb_test_plugin *t = refused(
        "{\"entries\": [\n"
        "  [\"ok\", \"fine\"],\n"
        "  [\"one\"],\n"
        "  [\"a\", \"b\", \"c\"],\n"
        "  [\"k\", 5],\n"
        "  [1, \"v\"],\n"
        "  \"flat\"\n"
        "]}", NULL,
        "harness.conf:3: plugin search: entries[1] must be a pair of strings (key, answer)");
    cr_assert_eq(t->diag.count, 5);
    cr_assert_str_eq(pb_test_diag(t, 1),
        "harness.conf:4: plugin search: entries[2] must be a pair of strings (key, answer)");
    cr_assert_str_eq(pb_test_diag(t, 2),
        "harness.conf:5: plugin search: entries[3] must be a pair of strings (key, answer)");
    cr_assert_str_eq(pb_test_diag(t, 3),
        "harness.conf:6: plugin search: entries[4] must be a pair of strings (key, answer)");
    cr_assert_str_eq(pb_test_diag(t, 4),
        "harness.conf:7: plugin search: entries[5] must be a pair of strings (key, answer)");
    pb_test_plugin_free(t);
}

Test(search, unknown_setting_and_bad_entry_are_both_reported)
{
    pb_test_plugin *t = refused("{\"colour\": 1,\n\"entries\": [[]]}", NULL,
        "harness.conf:1: plugin search: unknown setting \"colour\" "
        "(search takes entries and data_file)");
    cr_assert_eq(t->diag.count, 2);
    cr_assert_str_eq(pb_test_diag(t, 1),
        "harness.conf:2: plugin search: entries[0] must be a pair of strings (key, answer)");
    pb_test_plugin_free(t);
}

/* --- data_file ---------------------------------------------------------- */

static char dir[4096];

/* A fresh directory standing for the config file's, holding one data file. */
static void data_file(const char *name, const char *text)
{
    const char *tmp = getenv("PB_TEST_TMPDIR");
    snprintf(dir, sizeof dir, "%s/pb-search-XXXXXX", tmp != NULL ? tmp : "/tmp");
    cr_assert_not_null(mkdtemp(dir));
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void remove_data_file(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    rmdir(dir);
}

Test(search, data_file_is_merged_over_entries)
{
    data_file("search.json",
              "{\"b\": \"from the file\", \"c\": \"only in the file\", \"🐶\": \"woof\"}");
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor,
        "{\"data_file\": \"search.json\", \"entries\": [[\"a\", \"A\"], [\"b\", \"B\"]]}", dir);
    cr_assert_eq(t->rc, PB_OK, "%s", pb_test_diag(t, 0));
    ask(t, "{\"action\": \"search\", \"value\": \"a\"}", "{\"result\": \"A\"}");
    ask(t, "{\"action\": \"search\", \"value\": \"b\"}", "{\"result\": \"from the file\"}");
    ask(t, "{\"action\": \"search\", \"value\": \"c\"}", "{\"result\": \"only in the file\"}");
    ask(t, "{\"action\": \"search\", \"value\": \"🐶\"}", "{\"result\": \"woof\"}");
    pb_test_plugin_free(t);
    remove_data_file("search.json");
}

Test(search, data_file_by_absolute_path)
{
    data_file("abs.json", "{\"k\": \"v\"}");
    char settings[4400];
    snprintf(settings, sizeof settings, "{\"data_file\": \"%s/abs.json\"}", dir);
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, settings, "/nonexistent");
    cr_assert_eq(t->rc, PB_OK, "%s", pb_test_diag(t, 0));
    ask(t, "{\"action\": \"search\", \"value\": \"k\"}", "{\"result\": \"v\"}");
    pb_test_plugin_free(t);
    remove_data_file("abs.json");
}

Test(search, missing_data_file)
{
    data_file("other.json", "{}");
    char expected[4600];
    snprintf(expected, sizeof expected,
             "harness.conf:2: plugin search: data_file: %s/missing.json: "
             "No such file or directory", dir);
    pb_test_plugin_free(refused("{\"entries\": [],\n\"data_file\": \"missing.json\"}",
                                dir, expected));
    remove_data_file("other.json");
}

Test(search, broken_data_file_names_its_line)
{
    data_file("broken.json", "{\n  \"a\": \"b\",\n  \"c\": oops\n}\n");
    char expected[4600];
    snprintf(expected, sizeof expected,
             "harness.conf:1: plugin search: data_file: %s/broken.json:3: "
             "invalid token near 'oops'", dir);
    pb_test_plugin_free(refused("{\"data_file\": \"broken.json\"}", dir, expected));
    remove_data_file("broken.json");
}

Test(search, data_file_not_an_object)
{
    data_file("list.json", "[[\"a\", \"b\"]]");
    char expected[4600];
    snprintf(expected, sizeof expected,
             "harness.conf:1: plugin search: data_file %s/list.json must hold a "
             "JSON object of key -> answer", dir);
    pb_test_plugin_free(refused("{\"data_file\": \"list.json\"}", dir, expected));
    remove_data_file("list.json");
}

Test(search, data_file_answer_not_a_string)
{
    data_file("nums.json", "{\"a\": \"fine\", \"b\": 2}");
    char expected[4600];
    snprintf(expected, sizeof expected,
             "harness.conf:1: plugin search: data_file %s/nums.json: "
             "the answer for \"b\" is not a string", dir);
    pb_test_plugin_free(refused("{\"data_file\": \"nums.json\"}", dir, expected));
    remove_data_file("nums.json");
}

Test(search, data_file_not_a_string)
{
    pb_test_plugin_free(refused("{\"data_file\": [\"a.json\"]}", NULL,
        "harness.conf:1: plugin search: data_file must be a string (a file name)"));
}

Test(search, data_file_path_too_long)
{
    char settings[5000];
    char name[4500];
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    snprintf(settings, sizeof settings, "{\"data_file\": \"%s\"}", name);
    pb_test_plugin *t = pb_test_plugin_new(&pb_plugin_descriptor, settings, "/etc");
    cr_assert_eq(t->rc, PB_ERROR);
    cr_assert(strncmp(pb_test_diag(t, 0),
                      "harness.conf:1: plugin search: data_file: path too long: xxx", 60) == 0,
              "%s", pb_test_diag(t, 0));
    pb_test_plugin_free(t);
}

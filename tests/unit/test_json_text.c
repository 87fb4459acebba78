/*
 * test_json_text.c - the JSON text check of messages from outside: what
 * jansson accepts passes, what it refuses (and broken UTF-8) does not.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "../../plugins/json_text.h"

static int valid(const char *text)
{
    return json_text_valid(text, strlen(text));
}

Test(json_text, takes_every_kind_of_value)
{
    static const char *const good[] = {
        "0", "-0", "12", "-3.25", "1e5", "1E+5", "2.5e-3", "true", "false",
        "null", "\"\"", "\"hi\"", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\"",
        "\"stra\xc3\x9f" "e \xe2\x82\xac \xf0\x9f\x90\xb0\"", "[]", "{}",
        " [1, \"two\", {\"three\": [null]}] ", "{\"a\": {\"b\": {}}, \"c\": []}",
        "\n\t{ \"k\" : 1 , \"l\" : [ true , false ] }\r\n",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        cr_expect(valid(good[i]), "refused: %s", good[i]);
        json_t *parsed = json_loads(good[i], JSON_DECODE_ANY, NULL);
        cr_expect_not_null(parsed, "jansson refuses %s", good[i]);
        json_decref(parsed);
    }
}

Test(json_text, refuses_what_is_not_one_json_value)
{
    static const char *const bad[] = {
        "", " ", "hi", "'hi'", "\"open", "01", "1.", ".5", "-", "1e", "+1",
        "tru", "nul", "True", "[1,]", "[1 2]", "{\"a\" 1}", "{\"a\": 1,}",
        "{a: 1}", "{1: 2}", "[", "]", "{\"a\": [}", "1 2", "{} []",
        "\"tab\there\"", "\"\\x\"", "\"\\u12g4\"", "\"\\u12\"", "NaN",
        "\"\xc3\"", "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
        "\"\xff\"", "\"\x80\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect_not(valid(bad[i]), "taken: %s", bad[i]);
    cr_expect_not(json_text_valid("[1]\0", 4), "a NUL after the value");
    cr_expect_not(json_text_valid("\"a\0b\"", 5), "a NUL inside a string");
}

Test(json_text, limits_nesting)
{
    static char deep[2 * (JSON_TEXT_MAX_DEPTH + 1) + 1];
    for (int i = 0; i < JSON_TEXT_MAX_DEPTH; i++) {
        deep[i] = '[';
        deep[JSON_TEXT_MAX_DEPTH + i] = ']';
    }
    cr_expect(json_text_valid(deep, 2 * JSON_TEXT_MAX_DEPTH));
    memset(deep, '[', JSON_TEXT_MAX_DEPTH + 1);
    memset(deep + JSON_TEXT_MAX_DEPTH + 1, ']', JSON_TEXT_MAX_DEPTH + 1);
    cr_expect_not(json_text_valid(deep, 2 * (JSON_TEXT_MAX_DEPTH + 1)));
}

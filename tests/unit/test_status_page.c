/*
 * test_status_page.c - tests of daemon/status_page.c: names escaped, every
 * section present, latency quantiles in readable units, and a page for a
 * snapshot without the per-worker, per-listener and latency members as well
 * as for a full one.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "status_page.h"

/* The page for a snapshot, as a NUL-terminated string to free. */
static char *render(const json_t *snapshot)
{
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_status_page_write(&out, snapshot), 0);
    char *text = strndup((const char *)pb_buf_head(&out), pb_buf_used(&out));
    cr_assert_not_null(text);
    pb_buf_free(&out);
    return text;
}

static json_t *parse(const char *text)
{
    json_error_t error;
    json_t *j = json_loads(text, 0, &error);
    cr_assert_not_null(j, "%s", error.text);
    return j;
}

#define expect_in(page, needle) \
    cr_expect_not_null(strstr((page), (needle)), "no %s in the page", (needle))
#define expect_not_in(page, needle) \
    cr_expect_null(strstr((page), (needle)), "%s in the page", (needle))

/* The snapshot of the stats reply as documented before the per-worker,
 * per-listener and latency members. */
static const char older_snapshot[] =
    "{\"uptime\": 12.5, \"generation\": 1, \"reloads\": 0, \"failed_reloads\": 0,"
    " \"worker_restarts\": 0, \"workers\": 1,"
    " \"connections\": {\"open\": 1, \"accepted\": 7, \"refused\": 0,"
    "   \"refused_by\": {\"busy\": 0, \"allow\": 0, \"tls\": 0}},"
    " \"messages\": 42, \"bytes\": {\"in\": 5120, \"out\": 6144},"
    " \"errors\": {\"bad_frame\": 0, \"too_large\": 0, \"bad_json\": 1, \"no_route\": 0,"
    "   \"plugin_failed\": 0, \"busy\": 0, \"shutting_down\": 0, \"slow_consumer\": 0},"
    " \"plugins\": {\"echo\": {\"messages\": 2, \"errors\": 0},"
    "   \"queue\": {\"messages\": 9, \"errors\": 0, \"metrics\": {\"enqueued\": 4,"
    "     \"ready\": {\"jobs\": 1}, \"leased\": {\"jobs\": 1}}}},"
    " \"routes\": {\"1: text/json action echo -> echo\": {\"messages\": 2, \"errors\": 0}}}";

Test(status_page, every_section_present)
{
    json_t *s = parse(older_snapshot);
    char *page = render(s);

    cr_expect_eq(strncmp(page, "<!DOCTYPE html>", 15), 0);
    expect_in(page, "<meta http-equiv=\"refresh\" content=\"5\">");
    expect_in(page, "<meta name=\"viewport\"");
    static const char *const sections[] = {
        "id=\"summary\"", "id=\"workers\"", "id=\"listeners\"", "id=\"plugins\"",
        "id=\"routes\"", "id=\"metrics\"", "id=\"refused\"", "id=\"errors\"",
    };
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        expect_in(page, sections[i]);
    cr_expect_eq(strcmp(page + strlen(page) - 8, "</html>\n"), 0);
    free(page);
    json_decref(s);
}

Test(status_page, no_external_assets)
{
    json_t *s = parse(older_snapshot);
    char *page = render(s);

    expect_not_in(page, "<script");
    expect_not_in(page, "<link");
    expect_not_in(page, "<img");
    expect_not_in(page, "@import");
    expect_not_in(page, "url(");
    expect_not_in(page, "http://");
    expect_not_in(page, "https://");
    free(page);
    json_decref(s);
}

Test(status_page, older_snapshot_renders)
{
    json_t *s = parse(older_snapshot);
    char *page = render(s);

    expect_in(page, "version unknown");
    expect_in(page, "12.5 s");
    expect_in(page, "<td>1: text/json action echo -&gt; echo</td>");
    expect_in(page, "No per-worker figures.");
    expect_in(page, "No per-listener figures.");
    /* echo has no latency histogram: three dashes, not a made-up zero. */
    expect_in(page, "<td>echo</td><td>2</td><td>0</td><td>\xe2\x80\x94</td>"
                    "<td>\xe2\x80\x94</td><td>\xe2\x80\x94</td></tr>");
    expect_in(page, "<td>queue</td><td>ready</td><td>jobs</td><td>1</td>");
    expect_in(page, "<td>bad_json</td><td class=\"bad\">1</td>");
    free(page);
    json_decref(s);
}

Test(status_page, full_snapshot_renders)
{
    json_error_t error;
    json_t *s = json_load_file(PB_TEST_SRCDIR "/tests/vectors/status-snapshot.json", 0, &error);
    cr_assert_not_null(s, "%s", error.text);
    char *page = render(s);

    expect_in(page, "version 0.2.0 &middot; plugin ABI 2");
    expect_in(page, "3 d 4 h 4 min");
    expect_in(page, "<dt>Messages</dt><dd>2578445</dd>");
    expect_in(page, "<tr><td>0</td><td>48211</td><td>14</td><td>1290344</td></tr>");
    expect_in(page, "<td>http</td><td>2</td><td>15904</td>");
    expect_in(page, "<td>pubsub</td><td>delivered</td><td></td><td>2358036</td>");
    expect_in(page, "<td>queue</td><td>leased</td><td>emails</td><td>0</td>");
    expect_in(page, "<td>busy</td><td class=\"bad\">5</td>");
    expect_in(page, "<td>search</td><td>1803334</td><td class=\"bad\">12</td><td>");
    expect_not_in(page, "(no longer configured)");
    expect_in(page, "393.2 MiB");
    free(page);
    json_decref(s);
}

Test(status_page, names_are_escaped)
{
    json_t *s = parse("{\"version\": \"<b>1</b>\","
                      " \"plugins\": {\"a<script>&'\\\"\": {\"messages\": 1, \"errors\": 0,"
                      "   \"metrics\": {\"m<i>\": {\"q&\": 3}}}},"
                      " \"routes\": {\"1: text/json -> <x>\": {\"messages\": 1, \"errors\": 0}},"
                      " \"listeners\": {\"<l>\": {\"open\": 0, \"accepted\": 0}}}");
    char *page = render(s);

    expect_in(page, "version &lt;b&gt;1&lt;/b&gt;");
    expect_in(page, "<td>a&lt;script&gt;&amp;&#39;&quot;</td>");
    expect_in(page, "<td>m&lt;i&gt;</td><td>q&amp;</td><td>3</td>");
    expect_in(page, "<td>1: text/json -&gt; &lt;x&gt;</td>");
    expect_in(page, "<td>&lt;l&gt;</td>");
    expect_not_in(page, "<script>");
    expect_not_in(page, "<b>1");
    free(page);
    json_decref(s);
}

Test(status_page, empty_snapshot_renders)
{
    json_t *s = json_object();
    char *page = render(s);

    expect_in(page, "</html>");
    expect_in(page, "No plugins.");
    free(page);
    json_decref(s);
}

Test(status_page, appends_after_what_is_there)
{
    json_t *s = json_object();
    pb_buf out = PB_BUF_INIT;

    cr_assert_eq(pb_buf_append_str(&out, "HEAD"), 0);
    cr_assert_eq(pb_status_page_write(&out, s), 0);
    cr_expect_eq(memcmp(pb_buf_head(&out), "HEAD<!DOCTYPE html>", 19), 0);
    pb_buf_free(&out);
    json_decref(s);
}

Test(status_page, latency_shown_in_readable_units)
{
    json_t *s = parse("{\"plugins\": {\"p\": {\"messages\": 100, \"errors\": 0, \"latency\":"
                      " {\"count\": 100, \"sum\": 1, \"buckets\": [[0.0001, 50], [0.01, 90],"
                      "  [10, 100], [\"+Inf\", 100]]}}}}");
    char *page = render(s);

    /* p50 at 100 µs, p90 at 10 ms, p99 at 0.01 + 9.99 * 9/10 s. */
    expect_in(page, "<td>p</td><td>100</td><td>0</td><td>100 \xc2\xb5s</td>"
                    "<td>10.00 ms</td><td>9.00 s</td></tr>");
    free(page);
    json_decref(s);
}

/*
 * test_stats_view.c - tests of daemon/stats_view.c: latency quantiles from
 * known histograms, and durations, uptimes and byte counts in words.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "stats_view.h"

static json_t *parse(const char *text)
{
    json_error_t error;
    json_t *j = json_loads(text, 0, &error);
    cr_assert_not_null(j, "%s", error.text);
    return j;
}

static double quantile(const json_t *h, double q)
{
    double v = NAN;
    cr_assert_eq(pb_stats_quantile(h, q, &v), 0, "no %g-quantile", q);
    return v;
}

#define expect_near(got, want) \
    cr_expect(fabs((got) - (want)) < 1e-9, "got %.9g, wanted %.9g", (got), (want))

Test(stats_view, quantiles_interpolate_within_the_bucket)
{
    /* 10 at most 1 ms, 50 more up to 10 ms, 40 more up to 100 ms. */
    json_t *h = parse("{\"count\": 100, \"sum\": 2.5, \"buckets\": [[0.001, 10], [0.01, 60],"
                      " [0.1, 100], [\"+Inf\", 100]]}");

    expect_near(quantile(h, 0.5), 0.001 + 0.009 * 40 / 50);
    expect_near(quantile(h, 0.9), 0.01 + 0.09 * 30 / 40);
    expect_near(quantile(h, 0.99), 0.01 + 0.09 * 39 / 40);
    expect_near(quantile(h, 0.05), 0.001 * 5 / 10);
    expect_near(quantile(h, 1), 0.1);
    json_decref(h);
}

Test(stats_view, quantile_in_the_infinite_bucket_is_the_last_bound)
{
    json_t *h = parse("{\"count\": 10, \"sum\": 90, \"buckets\": [[0.1, 1], [10, 2],"
                      " [\"+Inf\", 10]]}");

    expect_near(quantile(h, 0.5), 10);
    json_decref(h);
}

Test(stats_view, no_quantile_without_observations)
{
    double v;
    json_t *empty = parse("{\"count\": 0, \"sum\": 0, \"buckets\": [[0.1, 0], [\"+Inf\", 0]]}");
    json_t *no_inf = parse("{\"count\": 1, \"sum\": 0, \"buckets\": [[0.1, 1], [1, 1]]}");

    cr_expect_eq(pb_stats_quantile(empty, 0.5, &v), -1);
    cr_expect_eq(pb_stats_quantile(no_inf, 0.5, &v), -1);
    cr_expect_eq(pb_stats_quantile(NULL, 0.5, &v), -1);
    cr_expect_eq(pb_stats_quantile(empty, 0, &v), -1);
    json_decref(empty);
    json_decref(no_inf);
}

Test(stats_view, figures_in_words)
{
    char t[64];

    pb_stats_format_seconds(t, sizeof t, 0.000042);
    cr_expect_str_eq(t, "42 \xc2\xb5s");
    pb_stats_format_seconds(t, sizeof t, 0.00177);
    cr_expect_str_eq(t, "1.77 ms");
    pb_stats_format_seconds(t, sizeof t, 2.5);
    cr_expect_str_eq(t, "2.50 s");
    pb_stats_format_uptime(t, sizeof t, 12.54);
    cr_expect_str_eq(t, "12.5 s");
    pb_stats_format_uptime(t, sizeof t, 242);
    cr_expect_str_eq(t, "4 min 2 s");
    pb_stats_format_uptime(t, sizeof t, 3 * 3600 + 7 * 60 + 5);
    cr_expect_str_eq(t, "3 h 7 min");
    pb_stats_format_uptime(t, sizeof t, 273841.62);
    cr_expect_str_eq(t, "3 d 4 h 4 min");
    pb_stats_format_bytes(t, sizeof t, 512);
    cr_expect_str_eq(t, "512 B");
    pb_stats_format_bytes(t, sizeof t, 412339812);
    cr_expect_str_eq(t, "393.2 MiB");
}

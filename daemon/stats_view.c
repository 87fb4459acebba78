/*
 * stats_view.c - the figures of a stats snapshot made readable for people:
 * durations, uptimes and byte counts in words, and latency quantiles
 * estimated from the snapshot's cumulative histograms.
 */

#include "stats_view.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* A bucket's upper bound: a number, or "+Inf". */
static int bucket_bound(const json_t *bucket, double *bound)
{
    const json_t *b = json_array_get(bucket, 0);
    if (json_is_number(b)) {
        *bound = json_number_value(b);
        return 0;
    }
    if (json_is_string(b) && strcmp(json_string_value(b), "+Inf") == 0) {
        *bound = INFINITY;
        return 0;
    }
    return -1;
}

int pb_stats_quantile(const json_t *histogram, double q, double *value)
{
    const json_t *buckets = json_object_get(histogram, "buckets");
    size_t n = json_array_size(buckets);
    if (n < 2 || !(q > 0 && q <= 1))
        return -1;
    double last_bound;
    const json_t *last_count = json_array_get(json_array_get(buckets, n - 1), 1);
    if (bucket_bound(json_array_get(buckets, n - 1), &last_bound) != 0
        || !isinf(last_bound) || !json_is_number(last_count))
        return -1;
    double total = json_number_value(last_count);
    if (!(total > 0))
        return -1;

    double rank = q * total;
    double lower = 0, below = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *bucket = json_array_get(buckets, i);
        const json_t *count = json_array_get(bucket, 1);
        double bound;
        if (bucket_bound(bucket, &bound) != 0 || !json_is_number(count))
            return -1;
        double cumulative = json_number_value(count);
        if (cumulative < rank) {
            lower = bound;
            below = cumulative;
            continue;
        }
        /* In the +Inf bucket nothing is known beyond the last finite
         * bound, which is therefore the estimate. */
        if (isinf(bound))
            *value = lower;
        else
            *value = lower + (bound - lower) * (rank - below) / (cumulative - below);
        return 0;
    }
    return -1;
}

void pb_stats_format_seconds(char *text, size_t size, double seconds)
{
    if (seconds < 0.001)
        snprintf(text, size, "%.0f \xc2\xb5s", seconds * 1e6);
    else if (seconds < 1)
        snprintf(text, size, "%.2f ms", seconds * 1e3);
    else
        snprintf(text, size, "%.2f s", seconds);
}

/* The two largest units are enough to tell how long a daemon has run. */
void pb_stats_format_uptime(char *text, size_t size, double seconds)
{
    long long s = (long long)seconds;
    long long d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60;
    if (d > 0)
        snprintf(text, size, "%lld d %lld h %lld min", d, h, m);
    else if (h > 0)
        snprintf(text, size, "%lld h %lld min", h, m);
    else if (m > 0)
        snprintf(text, size, "%lld min %lld s", m, s % 60);
    else
        snprintf(text, size, "%.1f s", seconds);
}

void pb_stats_format_bytes(char *text, size_t size, double bytes)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    size_t u = 0;
    while (bytes >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        bytes /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(text, size, "%.0f B", bytes);
    else
        snprintf(text, size, "%.1f %s", bytes, units[u]);
}

/*
 * stats_view.h - the figures of a stats snapshot made readable for people,
 * shared by the status page and plugboard-cli: durations, uptimes and byte
 * counts in words, and latency quantiles estimated from the histograms.
 */
#ifndef PB_STATS_VIEW_H
#define PB_STATS_VIEW_H

#include <stddef.h>

#include <jansson.h>

/* The q-quantile (0 < q <= 1) of a latency histogram of the snapshot
 * ({"count", "sum", "buckets": [[bound, cumulative count], ..., ["+Inf", n]]}),
 * interpolated linearly within its bucket as Prometheus' histogram_quantile
 * does. 0 and *value set, or -1 when the histogram is missing or empty. */
int pb_stats_quantile(const json_t *histogram, double q, double *value);

/* "42 µs", "1.77 ms", "2.50 s". */
void pb_stats_format_seconds(char *text, size_t size, double seconds);
/* "12.5 s", "4 min 2 s", "3 h 7 min", "3 d 4 h 4 min". */
void pb_stats_format_uptime(char *text, size_t size, double seconds);
/* "512 B", "393.2 MiB". */
void pb_stats_format_bytes(char *text, size_t size, double bytes);

#endif

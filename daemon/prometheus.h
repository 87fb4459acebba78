/*
 * prometheus.h - the statistics snapshot as Prometheus text exposition
 * (format 0.0.4), for the HTTP listeners' /metrics.
 */
#ifndef PB_PROMETHEUS_H
#define PB_PROMETHEUS_H

#include <jansson.h>

#include "buffer.h"

/* Appends the Prometheus text exposition (format 0.0.4) of a stats
 * snapshot (pb_stats_snapshot's JSON) to out. 0, or -1 when out of memory. */
int pb_prometheus_write(pb_buf *out, const json_t *snapshot);

#endif

/*
 * prometheus.c - the statistics snapshot as Prometheus text exposition;
 * for now only whether the daemon is up.
 */
#include "prometheus.h"

int pb_prometheus_write(pb_buf *out, const json_t *snapshot)
{
    (void)snapshot;
    return pb_buf_append_str(out, "# HELP plugboard_up Whether the daemon serves.\n"
                                  "# TYPE plugboard_up gauge\n"
                                  "plugboard_up 1\n") == 0 ? 0 : -1;
}

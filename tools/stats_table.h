/*
 * stats_table.h - the daemon's stats reply as readable text for
 * `plugboard-cli stats`.
 */
#ifndef PB_STATS_TABLE_H
#define PB_STATS_TABLE_H

#include <jansson.h>

#include "buffer.h"

/* Appends the summary and tables for a stats reply to out. 0, or -1 when
 * out of memory. */
int stats_table_write(pb_buf *out, const json_t *stats);

#endif

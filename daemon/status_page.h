/*
 * status_page.h - the HTML status page a browser gets from an http
 * listener: the daemon's counters (a pb_stats_snapshot) as one
 * self-contained document that refreshes itself.
 */
#ifndef PB_STATUS_PAGE_H
#define PB_STATUS_PAGE_H

#include <jansson.h>

#include "buffer.h"

/* Appends the HTML status page for a snapshot to out. 0, or -1 when out of
 * memory (out is then as it was). Members the snapshot lacks are shown as
 * missing rather than failing the page. */
int pb_status_page_write(pb_buf *out, const json_t *snapshot);

#endif

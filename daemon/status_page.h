/*
 * status_page.h - the HTML status page an HTTP listener serves at /, from
 * a statistics snapshot.
 */
#ifndef PB_STATUS_PAGE_H
#define PB_STATUS_PAGE_H

#include <jansson.h>

#include "buffer.h"

/* Appends the HTML status page for a snapshot to out. 0 or -1. */
int pb_status_page_write(pb_buf *out, const json_t *snapshot);

#endif

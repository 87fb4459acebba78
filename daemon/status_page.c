/*
 * status_page.c - the HTML status page served at /; for now one line.
 */
#include "status_page.h"

int pb_status_page_write(pb_buf *out, const json_t *snapshot)
{
    (void)snapshot;
    return pb_buf_append_str(out, "<!DOCTYPE html><title>Plugboard</title>"
                                  "<p>Plugboard is running.</p>\n") == 0 ? 0 : -1;
}

/*
 * status_page_render.c - writes the status page of a stats snapshot read
 * from a JSON file to standard output, so that a browser can be pointed at
 * the page without a running daemon (tests/status-page-browser.sh).
 */
#include <stdio.h>

#include "status_page.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fputs("usage: status-page-render SNAPSHOT.json\n", stderr);
        return 2;
    }
    json_error_t error;
    json_t *snapshot = json_load_file(argv[1], 0, &error);
    if (snapshot == NULL) {
        fprintf(stderr, "%s:%d: %s\n", argv[1], error.line, error.text);
        return 1;
    }
    pb_buf out = PB_BUF_INIT;
    int status = pb_status_page_write(&out, snapshot) == 0
                 && fwrite(pb_buf_head(&out), 1, pb_buf_used(&out), stdout) == pb_buf_used(&out)
                 && fflush(stdout) == 0 ? 0 : 1;
    if (status != 0)
        fputs("status-page-render: cannot write the page\n", stderr);
    pb_buf_free(&out);
    json_decref(snapshot);
    return status;
}

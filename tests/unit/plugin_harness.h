/*
 * plugin_harness.h - an in-process host for plugin unit tests: creates an
 * instance of a plugin descriptor from settings written as JSON, passes it
 * requests through the real codecs and host services, and hands back the
 * reply decoded from the bytes the daemon would send.
 */
#ifndef PB_PLUGIN_HARNESS_H
#define PB_PLUGIN_HARNESS_H

#include <stddef.h>

#include <plugboard/plugin.h>

#include "config.h"
#include "diag.h"
#include "plugin_host.h"

/* The plugin under test: its source is linked into the test binary. */
extern const pb_plugin pb_plugin_descriptor;

/* The file name settings errors are reported against. */
#define PB_TEST_CONF_FILE "harness.conf"

typedef struct pb_test_plugin {
    pb_instance instance;
    pb_plugin_conf conf;
    pb_diag diag;           /* what settings_error reported during create() */
    int rc;                 /* create()'s result */
} pb_test_plugin;

/*
 * Runs plugin->create() on settings_json (a JSON object; NULL for none).
 * Settings errors are placed like the config's: each value at the line of
 * settings_json where it starts, the instance itself at line 1, all in
 * PB_TEST_CONF_FILE. config_dir is the base for relative paths (NULL: the
 * current directory). Always returns the harness; check ->rc and ->diag.
 * The instance is named after the module.
 */
pb_test_plugin *pb_test_plugin_new(const pb_plugin *plugin,
                                   const char *settings_json,
                                   const char *config_dir);
/* Calls destroy() if create() succeeded, then frees everything. */
void pb_test_plugin_free(pb_test_plugin *plugin);

/* Line `index` of the settings errors, or "" when there are fewer. */
const char *pb_test_diag(const pb_test_plugin *plugin, size_t index);

typedef struct pb_test_reply {
    int rc;                     /* pb_instance_handle()'s result */
    char error[256];            /* the failure text when rc is PB_ERROR */
    unsigned char *wire;        /* every byte the reply appended to the output */
    size_t wire_length;
    char *content_type;         /* from the reply frame; NULL for line framing */
    char *content_encoding;
    unsigned char *content;     /* the reply's content, NUL-terminated for
                                 * convenience (the length excludes it) */
    size_t content_length;
} pb_test_reply;

/*
 * Encodes a request frame (or a line, content without its \n, for
 * PB_FRAMING_LINE), decodes it with the daemon's codec, parses text/json
 * content, and runs it through pb_instance_handle() against an output buffer
 * that already holds earlier bytes. Checks (as test assertions) that the
 * earlier bytes survive, that a failure leaves nothing behind and that a
 * success wrote exactly one frame or line. Returns reply->rc.
 */
int pb_test_handle(pb_test_plugin *plugin, pb_framing framing,
                   const char *content_type, const char *content_encoding,
                   const void *content, size_t length, pb_test_reply *reply);

/* pb_test_handle() of a framed request with NUL-terminated content. */
int pb_test_handle_str(pb_test_plugin *plugin, const char *content_type,
                       const char *content_encoding, const char *content,
                       pb_test_reply *reply);

/* Runs one encoded request frame (as a client sends it). */
int pb_test_handle_wire(pb_test_plugin *plugin, const unsigned char *frame,
                        size_t length, pb_test_reply *reply);

void pb_test_reply_free(pb_test_reply *reply);

/*
 * One exchange of tests/vectors/seed-exchanges.json by name: the request's
 * bytes, and the reply's bytes as this host writes them (its own
 * byteorder). The caller frees both.
 */
void pb_test_seed_exchange(const char *name,
                           unsigned char **request, size_t *request_length,
                           unsigned char **reply, size_t *reply_length);

#endif

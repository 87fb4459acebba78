/*
 * fuzz_plugin.c - libFuzzer target for a shipped plugin's handler: run.sh
 * links it with one plugin's source and builds one binary per plugin. The
 * first input byte picks the content-type and encoding, the rest is the
 * content. text/json content that is not JSON is skipped: the daemon
 * answers bad_json before any plugin sees it. Every call must end in
 * exactly one well-formed reply frame, or in a failure that leaves the
 * output as it was and says why.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "json_fast.h"
#include "plugin_host.h"
#include "plugin_loader.h"

extern const pb_plugin pb_plugin_descriptor;

static const struct {
    const char *type;
    const char *encoding;
} kinds[] = {
    { "text/json", "utf-8" },
    { "text/plain", "utf-8" },
    { "text/plain", "latin-1" },
    { "binary/custom-client-binary-type", "binary" },
    { "text/json", "ascii" },
};

static pb_plugin_conf conf;
static pb_instance instance;

static void start_instance(void)
{
    /* The search plugin gets the guide's table; the others take nothing. */
    const char *settings = strcmp(pb_plugin_descriptor.name, "search") == 0
        ? "{\"entries\": [[\"morpheus\", \"Follow the white rabbit.\"],"
          " [\"\\ud83d\\udc36\", \"Playing ball!\"], [\"\", \"empty\"]]}"
        : "{}";
    conf.name = "fuzz";
    conf.module = "fuzz";
    conf.settings = json_loads(settings, 0, NULL);
    conf.pos.file = "fuzz.conf";
    conf.pos.line = 1;
    instance.name = "fuzz";
    char why[160];
    if (pb_module_read(&pb_plugin_descriptor, &instance.module, why, sizeof why) != 0)
        abort();
    instance.conf = &conf;
    instance.config_dir = "/";
    pb_diag diag = PB_DIAG_INIT;
    if (conf.settings == NULL || pb_instance_start(&instance, &diag) != 0)
        abort();
    pb_diag_free(&diag);
}

static void check_reply(const pb_buf *out, int rc, const char *error)
{
    /* What the connection had queued before must survive either way. */
    if (pb_buf_used(out) < 1 || pb_buf_head(out)[0] != 'x')
        abort();
    const unsigned char *frame = pb_buf_head(out) + 1;
    size_t length = pb_buf_used(out) - 1;
    if (rc != PB_OK) {
        if (length != 0 || error[0] == '\0')
            abort();
        return;
    }
    pb_frame_decoder decoder;
    pb_frame_decoder_init(&decoder, SIZE_MAX);
    pb_message msg;
    size_t consumed = 0;
    pb_error err;
    if (pb_frame_decode(&decoder, frame, length, &msg, &consumed, NULL, &err)
            != PB_DECODE_MESSAGE || consumed != length)
        abort();
    pb_message_clear(&msg);
    pb_frame_decoder_reset(&decoder);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (instance.module.handle == NULL)
        start_instance();
    if (size == 0)
        return 0;
    size_t k = data[0] % (sizeof kinds / sizeof kinds[0]);
    const unsigned char *content = data + 1;
    size_t length = size - 1;

    /* The content as the daemon gives it: read in place when flat. */
    pb_content parsed;
    pb_content_init(&parsed);
    const pb_json *json = NULL;
    if (strcmp(kinds[k].type, "text/json") == 0) {
        json = pb_content_parse(&parsed, (const char *)content, length, NULL);
        if (json == NULL)
            return 0;
    }
    json_t *header = json_pack("{s:s, s:s, s:s, s:I}", "byteorder", "little",
                               "content-type", kinds[k].type,
                               "content-encoding", kinds[k].encoding,
                               "content-length", (json_int_t)length);
    pb_request request = {
        .size = sizeof request,
        .host = &pb_host_services,
        .instance = &instance,
        .content_type = kinds[k].type,
        .content_encoding = kinds[k].encoding,
        .header = (const pb_json *)header,
        .content = content,
        .content_length = length,
        .json = json,
        .listener = "fuzz",
        .framing = PB_FRAMING_FRAME,
    };
    pb_buf out = PB_BUF_INIT;
    if (header == NULL || pb_buf_append(&out, "x", 1) != 0)
        abort();
    char error[256];
    int rc = pb_instance_call(&instance, &request, &out, error, sizeof error);
    check_reply(&out, rc, error);
    pb_buf_free(&out);
    json_decref(header);
    pb_content_release(&parsed);
    return 0;
}

/*
 * first10 - the sockets guide's answer to binary content: "First 10 bytes of
 * request: " followed by the first ten content bytes (fewer when the content
 * is shorter), as binary/custom-server-binary-type. Shows reply_buffer,
 * which lets a plugin write its reply in place instead of building a copy.
 */
#include <stddef.h>
#include <string.h>

#include <plugboard/plugin.h>

#define PREFIX "First 10 bytes of request: "
#define MAX_BYTES 10

static int first10_handle(void *state, const pb_request *request,
                          pb_reply *reply)
{
    (void)state;
    size_t n = request->content_length < MAX_BYTES
               ? request->content_length : MAX_BYTES;
    unsigned char *out = request->host->reply_buffer(
        reply, "binary/custom-server-binary-type", "binary",
        strlen(PREFIX) + n);
    if (out == NULL)
        return PB_ERROR;    /* the host has recorded why */
    memcpy(out, PREFIX, strlen(PREFIX));
    if (n > 0)
        memcpy(out + strlen(PREFIX), request->content, n);
    return PB_OK;
}

PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
    PB_PLUGIN_VERSIONED,
    .name        = "first10",
    .description = "answers with the first ten bytes of the request",
    .create      = NULL,     /* takes no settings */
    .handle      = first10_handle,
    .destroy     = NULL,
};

/*
 * echo - answers every message with its own content: the same bytes, the
 * same content-type and encoding. The smallest complete plugin: it keeps no
 * state and takes no settings, so it needs no create() (the daemon then
 * refuses any setting, catching a typo in the config), and it replies with
 * reply_bytes.
 */
#include <stddef.h>

#include <plugboard/plugin.h>

static int echo_handle(void *state, const pb_request *request, pb_reply *reply)
{
    (void)state;
    /* reply_bytes copies the content, and on failure records why, so its
     * result can be handed straight back. */
    return request->host->reply_bytes(reply, request->content_type,
                                      request->content_encoding,
                                      request->content,
                                      request->content_length);
}

PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
    PB_PLUGIN_VERSIONED,
    .name        = "echo",
    .description = "answers with the request's own content",
    .create      = NULL,     /* no settings, no state: the host refuses any setting */
    .handle      = echo_handle,
    .destroy     = NULL,
};

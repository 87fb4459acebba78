/*
 * stats - answers with the daemon's counters as JSON: connections,
 * messages, bytes, errors by code, messages and failures per plugin
 * instance and per route, and the metrics plugin instances keep, summed or
 * combined over the workers. Route to it from a
 * trusted listener, e.g.
 *
 *   { content_type = "text/json"; action = "stats"; plugin = "stats"; }
 *
 * and ask with `plugboard-cli HOST PORT stats`. Shows a host service that
 * newer daemons add to pb_host, tested with PB_HOST_HAS before use.
 */
#include <stddef.h>

#include <plugboard/plugin.h>

static int stats_create(const pb_host *host, pb_instance *instance,
                        const pb_json *settings, void **state)
{
    if (!PB_HOST_HAS(host, stats)) {
        host->settings_error(instance, NULL,
                             "this daemon offers no statistics service");
        return PB_ERROR;
    }
    if (host->json_size(settings) > 0) {
        host->settings_error(instance, settings, "stats takes no settings");
        return PB_ERROR;
    }
    *state = NULL;
    return PB_OK;
}

static int stats_handle(void *state, const pb_request *request, pb_reply *reply)
{
    (void)state;
    const pb_host *host = request->host;
    pb_json *snapshot = host->stats();
    if (snapshot == NULL) {
        host->reply_error(reply, "statistics are not available");
        return PB_ERROR;
    }
    return host->reply_json(reply, snapshot);
}

PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
    PB_PLUGIN_VERSIONED,
    .name        = "stats",
    .description = "answers with the daemon's counters",
    .create      = stats_create,
    .handle      = stats_handle,
    .destroy     = NULL,
};

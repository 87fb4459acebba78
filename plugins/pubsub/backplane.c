/*
 * backplane.c - publishes through Redis: topic T is the channel
 * "plugboard:T", and a subscription to "plugboard:*" hands every publish,
 * from any daemon sharing the server, to this worker's subscribers.
 */
#include "backplane.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../json_text.h"
#include "../redis_link.h"

/* Keeps the daemon's channels apart from other users of the same Redis. */
#define CHANNEL_PREFIX "plugboard:"
#define CHANNEL_PATTERN CHANNEL_PREFIX "*"

struct backplane {
    const pb_host *host;
    pb_instance *instance;
    redis_address address;
    redis_link *link;           /* between open and close */
    backplane_deliver *deliver;
    void *arg;
    int warned_not_json;        /* the first message that is not JSON */
};

backplane *backplane_configure(const pb_host *host, pb_instance *instance,
                               const pb_json *url)
{
    const char *text = host->json_type(url) == PB_JSON_STRING
                       ? host->json_string(url, NULL) : NULL;
    if (text == NULL) {
        host->settings_error(instance, url,
                             "backplane must be a string \"redis://HOST:PORT\"");
        return NULL;
    }
    redis_address address;
    char error[2 * REDIS_URL_MAX + 128];
    if (redis_address_parse(text, &address, error, sizeof error) != 0
        || redis_address_resolve(&address, error, sizeof error) != 0) {
        host->settings_error(instance, url, "backplane %s", error);
        return NULL;
    }
    backplane *bp = calloc(1, sizeof *bp);
    if (bp == NULL) {
        host->settings_error(instance, url, "backplane: out of memory");
        return NULL;
    }
    bp->host = host;
    bp->instance = instance;
    bp->address = address;
    return bp;
}

static void on_message(void *arg, const char *channel, size_t channel_length,
                       const char *message, size_t message_length)
{
    backplane *bp = arg;
    size_t prefix = strlen(CHANNEL_PREFIX);
    if (channel_length < prefix || memcmp(channel, CHANNEL_PREFIX, prefix) != 0)
        return;
    /* Anyone with access to the server may publish to these channels, and
     * subscribers are sent the message as it is: never broken JSON. */
    if (!json_text_valid(message, message_length)) {
        bp->host->log(bp->instance, bp->warned_not_json ? PB_LOG_DEBUG : PB_LOG_WARNING,
                      "backplane %s: a message to %.*s is not JSON; dropped%s",
                      bp->address.url, (int)channel_length, channel,
                      bp->warned_not_json ? "" : " (further ones are logged at debug)");
        bp->warned_not_json = 1;
        return;
    }
    bp->deliver(bp->arg, channel + prefix, channel_length - prefix, message,
                message_length);
}

int backplane_open(backplane *bp, backplane_deliver *deliver, void *arg)
{
    bp->deliver = deliver;
    bp->arg = arg;
    redis_link_config config = {
        .host = bp->host,
        .instance = bp->instance,
        .user = "backplane",
        .address = &bp->address,
        .pattern = CHANNEL_PATTERN,
        .on_message = on_message,
        .arg = bp,
        .reconnect_metric = "backplane_reconnects",
    };
    bp->link = redis_link_open(&config);
    return bp->link != NULL ? PB_OK : PB_ERROR;
}

int backplane_ready(const backplane *bp)
{
    return redis_link_ready(bp->link);
}

/* Nobody waits for a publish's reply; a refusal is worth a line. */
static void on_published(redisAsyncContext *context, void *reply_data,
                         void *privdata)
{
    (void)context;
    backplane *bp = privdata;
    const redisReply *reply = reply_data;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        bp->host->log(bp->instance, PB_LOG_WARNING, "backplane %s refused a publish: %s",
                      redis_link_url(bp->link), reply->str);
}

int backplane_publish(backplane *bp, const char *topic, size_t topic_length,
                      const char *message, size_t message_length,
                      char *error, size_t error_size)
{
    if (!redis_link_ready(bp->link)) {
        if (bp->link != NULL)
            redis_link_not_connected(bp->link, error, error_size);
        else
            snprintf(error, error_size, "backplane %s is not connected",
                     bp->address.url);
        return PB_ERROR;
    }
    size_t prefix = strlen(CHANNEL_PREFIX);
    char *channel = malloc(prefix + topic_length);
    if (channel == NULL) {
        snprintf(error, error_size, "backplane: out of memory");
        return PB_ERROR;
    }
    memcpy(channel, CHANNEL_PREFIX, prefix);
    memcpy(channel + prefix, topic, topic_length);
    const char *argv[] = { "PUBLISH", channel, message };
    const size_t lengths[] = { strlen("PUBLISH"), prefix + topic_length,
                               message_length };
    int rc = redis_link_command(bp->link, on_published, bp, 3, argv, lengths);
    free(channel);
    if (rc != REDIS_OK) {
        redis_link_not_connected(bp->link, error, error_size);
        return PB_ERROR;
    }
    return PB_OK;
}

void backplane_close(backplane *bp)
{
    redis_link_close(bp->link);
    bp->link = NULL;
}

void backplane_free(backplane *bp)
{
    if (bp == NULL)
        return;
    redis_link_close(bp->link);
    free(bp);
}

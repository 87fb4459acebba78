/*
 * redis.c - the queue's Redis backend, absent from this build: choosing it
 * is refused when the configuration is checked, so nothing else of it is
 * ever called.
 */
#include "backend.h"

static queue_backend *redis_configure(const pb_host *host, pb_instance *instance,
                                      const pb_json *settings)
{
    host->settings_error(instance, host->json_get(settings, "backend"),
                         "backend \"redis\" is not available in this build");
    return NULL;
}

const queue_backend_ops queue_redis_ops = {
    .name      = "redis",
    .configure = redis_configure,
};

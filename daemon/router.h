/*
 * router.h - picks the plugin instance for a message: the first route whose
 * content_type (exact, or a shell glob) and action
 * both match.
 */
#ifndef PB_ROUTER_H
#define PB_ROUTER_H

#include <stddef.h>

#include "config.h"
#include "plugin_host.h"

typedef struct pb_route {
    const char *content_type;   /* NULL = any (points into the config) */
    int glob;                   /* content_type has glob characters */
    const char *action;         /* NULL = any */
    const size_t *listeners;    /* config listener indices; none = any */
    size_t n_listeners;
    pb_instance *instance;
    char *name;                 /* "N: TYPE ACTION -> INSTANCE", for statistics */
} pb_route;

typedef struct pb_router {
    pb_route *routes;
    size_t n_routes;
} pb_router;

struct pb_cycle;

/* Resolves the routes of cycle's config against its instances by name; 0 or
 * -1 (out of memory; names were checked when the config was loaded). */
int pb_router_build(pb_router *router, const struct pb_cycle *cycle);

/* The route for a message that came in on the config's listener number
 * `listener`, or NULL when none matches. action is the string "action"
 * member of text/json content, or NULL. */
const pb_route *pb_router_match(const pb_router *router, size_t listener,
                                const char *content_type, const char *action);

/* The text of the no_route error for a message no route matched. */
void pb_router_miss(char *text, size_t size, const char *content_type,
                    const char *action);

void pb_router_free(pb_router *router);

#endif

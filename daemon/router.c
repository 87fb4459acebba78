/*
 * router.c - first-match routing by content-type, action and listener. Routes are
 * few and checked in order, as operators read them in the config; a glob
 * costs an fnmatch() only for patterns that need one.
 */
#include "router.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cycle.h"

int pb_router_build(pb_router *router, const pb_cycle *cycle)
{
    const pb_config *config = cycle->config;
    router->routes = NULL;
    router->n_routes = 0;
    if (config->n_routes == 0)
        return 0;
    router->routes = calloc(config->n_routes, sizeof *router->routes);
    if (router->routes == NULL)
        return -1;
    for (size_t i = 0; i < config->n_routes; i++) {
        const pb_route_conf *rc = &config->routes[i];
        pb_route *route = &router->routes[i];
        route->content_type = rc->content_type;
        route->glob = rc->content_type != NULL &&
                      strpbrk(rc->content_type, "*?[") != NULL;
        route->action = rc->action;
        route->listeners = rc->listeners;
        route->n_listeners = rc->n_listeners;
        route->instance = pb_cycle_instance(cycle, rc->plugin);
        if (route->instance == NULL ||
            asprintf(&route->name, "%zu: %s%s%s -> %s", i + 1,
                     rc->content_type ? rc->content_type : "*",
                     rc->action ? " action " : "", rc->action ? rc->action : "",
                     rc->plugin) < 0) {
            route->name = NULL;
            router->n_routes = i + 1;
            pb_router_free(router);
            return -1;
        }
    }
    router->n_routes = config->n_routes;
    return 0;
}

static int content_type_matches(const pb_route *route, const char *content_type)
{
    if (route->content_type == NULL)
        return 1;
    if (route->glob)
        return fnmatch(route->content_type, content_type, 0) == 0;
    return strcmp(route->content_type, content_type) == 0;
}

static int listener_matches(const pb_route *route, size_t listener)
{
    if (route->n_listeners == 0)
        return 1;
    for (size_t i = 0; i < route->n_listeners; i++)
        if (route->listeners[i] == listener)
            return 1;
    return 0;
}

const pb_route *pb_router_match(const pb_router *router, size_t listener,
                                const char *content_type, const char *action)
{
    for (size_t i = 0; i < router->n_routes; i++) {
        const pb_route *route = &router->routes[i];
        if (!content_type_matches(route, content_type))
            continue;
        if (route->action != NULL &&
            (action == NULL || strcmp(route->action, action) != 0))
            continue;
        if (!listener_matches(route, listener))
            continue;
        return route;
    }
    return NULL;
}

void pb_router_free(pb_router *router)
{
    for (size_t i = 0; i < router->n_routes; i++)
        free(router->routes[i].name);
    free(router->routes);
    router->routes = NULL;
    router->n_routes = 0;
}

void pb_router_miss(char *text, size_t size, const char *content_type,
                    const char *action)
{
    if (action != NULL)
        snprintf(text, size,
                 "no route for content-type \"%.100s\" and action \"%.100s\"",
                 content_type, action);
    else
        snprintf(text, size, "no route for content-type \"%.100s\"", content_type);
}

/*
 * test_router.c - first-match routing by content-type (exact and glob),
 * action and listener.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "cycle.h"
#include "router.h"

static pb_instance echo = { .name = "echo" };
static pb_instance upper = { .name = "upper" };
static pb_instance search = { .name = "search" };
static pb_instance text = { .name = "text" };
static pb_instance rest = { .name = "rest" };
static pb_instance *instances[] = { &echo, &upper, &search, &text, &rest };

static pb_route_conf routes[] = {
    { .content_type = "text/json", .action = "echo", .plugin = "echo" },
    { .content_type = "text/json", .action = "upper", .plugin = "upper" },
    { .content_type = "text/json", .plugin = "search" },
    { .content_type = "text/*", .plugin = "text" },
    { .plugin = "rest" },
};

static pb_router router;

/* The router of config's routes over the instances above. */
static int build(pb_router *r, pb_config *config)
{
    pb_cycle cycle = { .config = config, .instances = instances, .n_instances = 5 };
    return pb_router_build(r, &cycle);
}

static pb_instance *match(const pb_router *r, const char *content_type,
                          const char *action)
{
    const pb_route *route = pb_router_match(r, 0, content_type, action);
    return route ? route->instance : NULL;
}

static void setup(void)
{
    pb_config config = { .routes = routes, .n_routes = 5 };
    cr_assert_eq(build(&router, &config), 0);
}

static void teardown(void)
{
    pb_router_free(&router);
}

TestSuite(router, .init = setup, .fini = teardown);

Test(router, action_routes_first_match)
{
    cr_assert_eq(match(&router, "text/json", "echo"), &echo);
    cr_assert_eq(match(&router, "text/json", "upper"), &upper);
}

Test(router, json_without_matching_action_falls_through)
{
    cr_assert_eq(match(&router, "text/json", "search"), &search);
    cr_assert_eq(match(&router, "text/json", NULL), &search);
    cr_assert_eq(match(&router, "text/json", "ECHO"), &search);
}

Test(router, glob_content_type)
{
    cr_assert_eq(match(&router, "text/plain", NULL), &text);
    cr_assert_eq(match(&router, "text/html", "echo"), &text);
}

Test(router, exact_match_is_not_a_prefix_match)
{
    cr_assert_eq(match(&router, "text/jsonx", NULL), &text);
    cr_assert_eq(match(&router, "text", NULL), &rest);
}

Test(router, catch_all)
{
    cr_assert_eq(match(&router, "binary/custom-client-binary-type", NULL), &rest);
    cr_assert_eq(match(&router, "", NULL), &rest);
}

Test(router_empty, no_routes_match_nothing)
{
    pb_router empty;
    pb_config config = { .routes = NULL, .n_routes = 0 };
    cr_assert_eq(build(&empty, &config), 0);
    cr_assert_null(pb_router_match(&empty, 0, "text/json", "echo"));
    pb_router_free(&empty);
}

Test(router_empty, action_route_needs_an_action)
{
    pb_route_conf only[] = { { .action = "echo", .plugin = "echo" } };
    pb_config config = { .routes = only, .n_routes = 1 };
    pb_router r;
    cr_assert_eq(build(&r, &config), 0);
    cr_assert_null(pb_router_match(&r, 0, "text/json", NULL));
    cr_assert_null(pb_router_match(&r, 0, "text/json", "upper"));
    cr_assert_eq(match(&r, "text/json", "echo"), &echo);
    pb_router_free(&r);
}

Test(router, routes_are_named_for_statistics)
{
    cr_assert_str_eq(router.routes[0].name, "1: text/json action echo -> echo");
    cr_assert_str_eq(router.routes[3].name, "4: text/* -> text");
    cr_assert_str_eq(router.routes[4].name, "5: * -> rest");
}

Test(router_empty, glob_classes_and_question_mark)
{
    pb_route_conf only[] = {
        { .content_type = "image/[jp]?g", .plugin = "upper" },
        { .content_type = "*", .plugin = "rest" },
    };
    pb_config config = { .routes = only, .n_routes = 2 };
    pb_router r;
    cr_assert_eq(build(&r, &config), 0);
    cr_assert_eq(match(&r, "image/jpg", NULL), &upper);
    cr_assert_eq(match(&r, "image/png", NULL), &upper);
    cr_assert_eq(match(&r, "image/gif", NULL), &rest);
    pb_router_free(&r);
}

Test(router_empty, a_route_for_some_listeners_lets_others_fall_through)
{
    size_t local_only[] = { 2 };
    pb_route_conf two[] = {
        { .content_type = "text/json", .action = "stats", .plugin = "upper",
          .listeners = local_only, .n_listeners = 1 },
        { .content_type = "text/json", .plugin = "search" },
    };
    pb_config config = { .routes = two, .n_routes = 2 };
    pb_router r;
    cr_assert_eq(build(&r, &config), 0);
    cr_assert_eq(pb_router_match(&r, 2, "text/json", "stats")->instance, &upper);
    cr_assert_eq(pb_router_match(&r, 0, "text/json", "stats")->instance, &search);
    cr_assert_eq(pb_router_match(&r, 1, "text/json", "stats")->instance, &search);
    pb_router_free(&r);
}

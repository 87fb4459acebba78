/*
 * test_privileges.c - dropping root (daemon/privileges.c): never to a
 * process that keeps uid 0 with only its group changed. Criterion runs
 * each test in its own process, so a test may drop its own privileges.
 */
#include <criterion/criterion.h>
#include <unistd.h>

#include "privileges.h"

static pb_config with(char *user, char *group)
{
    pb_config c = { 0 };
    c.user = user;
    c.group = group;
    c.user_pos.file = c.group_pos.file = "main.conf";
    c.user_pos.line = c.group_pos.line = 2;
    return c;
}

/* Formerly setgid ran, setuid never did, and workers served as root. */
Test(privileges, group_without_user_is_refused)
{
    pb_config c = with(NULL, "nogroup");
    uid_t uid = getuid();
    gid_t gid = getgid();
    cr_assert_eq(pb_privileges_drop(&c), -1);
    cr_assert_eq(getuid(), uid);
    cr_assert_eq(getgid(), gid);
}

Test(privileges, root_with_another_group_is_refused)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to drop privileges");
    pb_config c = with("root", "nogroup");
    cr_assert_eq(pb_privileges_drop(&c), -1);
}

Test(privileges, user_and_group_are_both_taken)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to drop privileges");
    pb_config c = with("nobody", "nogroup");
    cr_assert_eq(pb_privileges_drop(&c), 0);
    cr_assert_neq(getuid(), 0);
    cr_assert_neq(geteuid(), 0);
    cr_assert_neq(getgid(), 0);
}

Test(privileges, nothing_configured_changes_nothing)
{
    pb_config c = with(NULL, NULL);
    uid_t uid = getuid();
    cr_assert_eq(pb_privileges_drop(&c), 0);
    cr_assert_eq(getuid(), uid);
}

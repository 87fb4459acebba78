/*
 * test_privileges.c - dropping root (daemon/privileges.c): never to a
 * process that keeps uid 0 with only its group changed. Criterion runs
 * each test in its own process, so a test may drop its own privileges.
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <pwd.h>
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

/* Becomes nobody:nogroup, as a service manager would start the daemon. */
static void become_nobody(void)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to become another user first");
    struct passwd *pw = getpwnam("nobody");
    struct group *gr = getgrnam("nogroup");
    cr_assert(pw != NULL && gr != NULL);
    cr_assert_eq(setgroups(0, NULL), 0);
    cr_assert_eq(setgid(gr->gr_gid), 0);
    cr_assert_eq(setuid(pw->pw_uid), 0);
}

Test(privileges, started_as_the_configured_user_changes_and_says_nothing,
     .init = cr_redirect_stderr)
{
    become_nobody();
    pb_config c = with("nobody", "nogroup");
    uid_t uid = getuid();
    cr_assert_eq(pb_privileges_drop(&c), 0);
    cr_assert_eq(getuid(), uid);
    fflush(stderr);
    cr_assert_stderr_eq_str("");
}

Test(privileges, started_as_another_user_says_which_it_runs_as,
     .init = cr_redirect_stderr)
{
    become_nobody();
    pb_config c = with("root", NULL);
    cr_assert_eq(pb_privileges_drop(&c), 0);
    cr_assert_neq(getuid(), 0);
    fflush(stderr);
    char want[128];
    snprintf(want, sizeof want, "not started as root: running as uid %ld", (long)getuid());
    FILE *err = cr_get_redirected_stderr();
    char line[512] = "";
    cr_assert(fgets(line, sizeof line, err) != NULL);
    cr_expect(strstr(line, want) != NULL, "got: %s", line);
}

/*
 * privileges.c - giving up root. Done once, after binding (so ports below
 * 1024 and sockets in /run work) and before the first connection, so no
 * peer ever talks to a root process.
 */
#include "privileges.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "log.h"

static int lookup(const pb_config *config, uid_t *uid, gid_t *gid,
                  pb_diag *diag)
{
    int rc = 0;
    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (config->user != NULL) {
        struct passwd *pw = getpwnam(config->user);
        if (pw == NULL) {
            pb_diag_add(diag, config->user_pos.file, config->user_pos.line,
                        "user \"%s\" does not exist", config->user);
            rc = -1;
        } else {
            *uid = pw->pw_uid;
            *gid = pw->pw_gid;
        }
    }
    if (config->group != NULL) {
        struct group *gr = getgrnam(config->group);
        if (gr == NULL) {
            pb_diag_add(diag, config->group_pos.file, config->group_pos.line,
                        "group \"%s\" does not exist", config->group);
            rc = -1;
        } else {
            *gid = gr->gr_gid;
        }
    }
    return rc;
}

int pb_privileges_check(const pb_config *config, pb_diag *diag)
{
    uid_t uid;
    gid_t gid;
    return lookup(config, &uid, &gid, diag);
}

static int drop(const pb_config *config);

int pb_privileges_drop(const pb_config *config)
{
    /* The kernel forgets a process's parent-death signal when its
     * credentials change: a worker would outlive a master that died. */
    int parent_death = 0;
    prctl(PR_GET_PDEATHSIG, &parent_death);
    int rc = drop(config);
    if (rc == 0 && parent_death != 0)
        prctl(PR_SET_PDEATHSIG, parent_death);
    return rc;
}

static int drop(const pb_config *config)
{
    if (config->user == NULL && config->group == NULL)
        return 0;
    /* The configuration refuses this too: setgid without setuid would
     * serve as root with only the group changed. */
    if (config->user == NULL) {
        pb_log_error("%s:%d: \"group\" without \"user\": refusing to run as "
                     "root with only the group dropped",
                     config->group_pos.file, config->group_pos.line);
        return -1;
    }
    pb_diag diag = PB_DIAG_INIT;
    uid_t uid;
    gid_t gid;
    int found = lookup(config, &uid, &gid, &diag) == 0;
    if (geteuid() != 0) {
        pb_diag_free(&diag);
        /* Started as that user already (a service manager's User=, say):
         * there is nothing to change, and nothing to say. */
        if (found && uid == geteuid() && gid == getegid())
            return 0;
        pb_log_warning("not started as root: running as uid %ld, gid %ld, not as "
                       "the configured %s%s%s", (long)geteuid(), (long)getegid(),
                       config->user, config->group ? ":" : "",
                       config->group ? config->group : "");
        return 0;
    }
    if (!found) {
        pb_diag_log(&diag);
        pb_diag_free(&diag);
        return -1;
    }
    if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        pb_log_error("cannot drop privileges to %s:%s: %s",
                     config->user, config->group ? config->group : "-",
                     strerror(errno));
        return -1;
    }
    if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        pb_log_error("root privileges could be regained after dropping them");
        return -1;
    }
    if (getuid() == 0 && getgid() != 0) {
        pb_log_error("user \"%s\" has uid 0: refusing to serve as root "
                     "with only the group changed", config->user);
        return -1;
    }
    return 0;
}

/*
 * syscall-filter-exec.c - runs a command under a system call allow list, as
 * systemd does for a unit with NoNewPrivileges=yes, SystemCallFilter= and
 * SystemCallErrorNumber=EPERM, SystemCallArchitectures=native: for the
 * package test, which has no systemd to start the daemon.
 *
 *     syscall-filter-exec LIST COMMAND [ARG]...
 *
 * LIST names the allowed system calls, one a line (the unit's filter as
 * `systemd-analyze syscall-filter` expands it); a name this architecture
 * does not have is skipped, as systemd skips it. Any other call fails with
 * EPERM; a call of another architecture kills the process. The filter and
 * no_new_privs are set, then COMMAND is executed with them.
 *
 * Built by packaging/test-packages.sh: cc -o X syscall-filter-exec.c -lseccomp
 */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s LIST COMMAND [ARG]...\n", argv[0]);
        return 64;
    }
    FILE *list = fopen(argv[1], "r");
    if (list == NULL) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], argv[1], strerror(errno));
        return 66;
    }
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (ctx == NULL) {
        fprintf(stderr, "%s: seccomp_init failed\n", argv[0]);
        return 71;
    }
    char line[256];
    int allowed = 0;
    while (fgets(line, sizeof line, list) != NULL) {
        line[strcspn(line, " \t\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        int nr = seccomp_syscall_resolve_name(line);
        if (nr == __NR_SCMP_ERROR)
            continue;
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        if (rc != 0) {
            fprintf(stderr, "%s: cannot allow %s: %s\n", argv[0], line, strerror(-rc));
            return 71;
        }
        allowed++;
    }
    fclose(list);
    if (allowed == 0) {
        fprintf(stderr, "%s: %s allows no system call\n", argv[0], argv[1]);
        return 65;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "%s: no_new_privs: %s\n", argv[0], strerror(errno));
        return 71;
    }
    int rc = seccomp_load(ctx);
    if (rc != 0) {
        fprintf(stderr, "%s: seccomp_load: %s\n", argv[0], strerror(-rc));
        return 71;
    }
    seccomp_release(ctx);
    execvp(argv[2], argv + 2);
    fprintf(stderr, "%s: %s: %s\n", argv[0], argv[2], strerror(errno));
    return 127;
}

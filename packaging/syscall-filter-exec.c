/*
 * syscall-filter-exec.c - runs a command under a system call allow list, as
 * systemd does for a unit with NoNewPrivileges=yes, SystemCallFilter= and
 * SystemCallErrorNumber=EPERM, SystemCallArchitectures=native: for the
 * package test, which has no systemd to start the daemon.
 *
 *     syscall-filter-exec [-a FAMILY,...] LIST COMMAND [ARG]...
 *
 * LIST names the allowed system calls, one a line (the unit's filter as
 * `systemd-analyze syscall-filter` expands it); a name this architecture
 * does not have is skipped, as systemd skips it. Any other call fails with
 * EPERM; a call of another architecture kills the process. With -a (the
 * numbers of the address families of RestrictAddressFamilies=), socket()
 * of any other family fails with EAFNOSUPPORT, as under systemd. The
 * filter and no_new_privs are set, then COMMAND is executed with them.
 *
 * Built by packaging/test-packages.sh: cc -o X syscall-filter-exec.c -lseccomp
 */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define FAMILIES 64     /* above AF_MAX: larger ones are refused as one */

/* socket() of the families in `allowed` only; the others, EAFNOSUPPORT. */
static int restrict_families(scmp_filter_ctx ctx, const int *allowed)
{
    int nr = seccomp_syscall_resolve_name("socket");
    int rc = 0;
    for (int family = 0; family < FAMILIES && rc == 0; family++) {
        uint32_t action = allowed[family] ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(EAFNOSUPPORT);
        rc = seccomp_rule_add(ctx, action, nr, 1, SCMP_A0(SCMP_CMP_EQ, family));
    }
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), nr, 1,
                              SCMP_A0(SCMP_CMP_GE, FAMILIES));
    return rc;
}

int main(int argc, char **argv)
{
    const char *self = argv[0];
    int families[FAMILIES] = { 0 };
    int restricted = 0;
    if (argc > 2 && strcmp(argv[1], "-a") == 0) {
        char *list = argv[2], *end;
        for (;;) {
            long family = strtol(list, &end, 10);
            if (end == list || family < 0 || family >= FAMILIES) {
                fprintf(stderr, "%s: -a: bad address family list\n", self);
                return 64;
            }
            families[family] = 1;
            if (*end != ',')
                break;
            list = end + 1;
        }
        restricted = 1;
        argc -= 2;
        argv += 2;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: %s [-a FAMILY,...] LIST COMMAND [ARG]...\n", self);
        return 64;
    }
    FILE *list = fopen(argv[1], "r");
    if (list == NULL) {
        fprintf(stderr, "%s: %s: %s\n", self, argv[1], strerror(errno));
        return 66;
    }
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (ctx == NULL) {
        fprintf(stderr, "%s: seccomp_init failed\n", self);
        return 71;
    }
    char line[256];
    int allowed = 0;
    while (fgets(line, sizeof line, list) != NULL) {
        line[strcspn(line, " \t\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        int nr = seccomp_syscall_resolve_name(line);
        if (nr == __NR_SCMP_ERROR || (restricted && strcmp(line, "socket") == 0))
            continue;
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        if (rc != 0) {
            fprintf(stderr, "%s: cannot allow %s: %s\n", self, line, strerror(-rc));
            return 71;
        }
        allowed++;
    }
    fclose(list);
    if (restricted) {
        int rc = restrict_families(ctx, families);
        if (rc != 0) {
            fprintf(stderr, "%s: cannot restrict socket(): %s\n", self, strerror(-rc));
            return 71;
        }
    }
    if (allowed == 0) {
        fprintf(stderr, "%s: %s allows no system call\n", self, argv[1]);
        return 65;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "%s: no_new_privs: %s\n", self, strerror(errno));
        return 71;
    }
    int rc = seccomp_load(ctx);
    if (rc != 0) {
        fprintf(stderr, "%s: seccomp_load: %s\n", self, strerror(-rc));
        return 71;
    }
    seccomp_release(ctx);
    execvp(argv[2], argv + 2);
    fprintf(stderr, "%s: %s: %s\n", self, argv[2], strerror(errno));
    return 127;
}

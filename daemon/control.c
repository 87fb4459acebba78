/*
 * control.c - commands from the master to a worker over a SOCK_SEQPACKET
 * pair, one small record each. A configuration travels as a memfd passed
 * with SCM_RIGHTS: any size, never blocking the master, and read by the
 * worker after it dropped privileges without opening any file.
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct record {
    uint32_t command;
    uint32_t reserved;
    uint64_t serial;
} record;

int pb_control_pair(int fds[2])
{
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0)
        return -1;
    int flags = fcntl(fds[0], F_GETFL);
    if (flags < 0 || fcntl(fds[0], F_SETFL, flags | O_NONBLOCK) != 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    return 0;
}

static int send_record(int fd, const record *r, int attached)
{
    struct iovec iov = { (void *)r, sizeof *r };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (attached >= 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &attached, sizeof(int));
    }
    ssize_t n;
    do
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof *r ? 0 : -1;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int pb_control_send_prepare(int fd, unsigned long serial, const char *text,
                            size_t len)
{
    int memfd = memfd_create("plugboard-config", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (memfd < 0)
        return -1;
    /* Sealed, the worker reads exactly what the master checked. */
    record r = { PB_CONTROL_PREPARE, 0, serial };
    int rc = -1;
    if (write_all(memfd, text, len) == 0 &&
        fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
                                  F_SEAL_SEAL) == 0)
        rc = send_record(fd, &r, memfd);
    close(memfd);
    return rc;
}

int pb_control_send_commit(int fd, unsigned long serial)
{
    record r = { PB_CONTROL_COMMIT, 0, serial };
    return send_record(fd, &r, -1);
}

int pb_control_send_retire(int fd)
{
    record r = { PB_CONTROL_RETIRE, 0, 0 };
    return send_record(fd, &r, -1);
}

static int read_attached(int memfd, char **text, size_t *len)
{
    struct stat st;
    if (fstat(memfd, &st) != 0)
        return -1;
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    if (buf == NULL)
        return -1;
    size_t got = 0;
    while (got < size) {
        ssize_t n = pread(memfd, buf + got, size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return -1;
        }
        got += (size_t)n;
    }
    buf[size] = '\0';
    *text = buf;
    *len = size;
    return 0;
}

int pb_control_receive(int fd, pb_control_command *command,
                       unsigned long *serial, char **text, size_t *len)
{
    record r;
    struct iovec iov = { &r, sizeof r };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control.buf, .msg_controllen = sizeof control.buf,
    };
    ssize_t n;
    do
        n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;

    int attached = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(&attached, CMSG_DATA(c), sizeof(int));
    int rc = -1;
    if (n == (ssize_t)sizeof r && !(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        *command = (pb_control_command)r.command;
        *serial = (unsigned long)r.serial;
        if (r.command == PB_CONTROL_COMMIT || r.command == PB_CONTROL_RETIRE)
            rc = 1;
        else if (r.command == PB_CONTROL_PREPARE && attached >= 0)
            rc = read_attached(attached, text, len) == 0 ? 1 : -1;
    }
    if (attached >= 0)
        close(attached);
    return rc;
}

/*
 * notify.c - systemd's notification protocol is one datagram of
 * "KEY=VALUE" lines to the Unix socket in $NOTIFY_SOCKET (a leading '@'
 * meaning the abstract namespace). Speaking it directly keeps libsystemd
 * out of the daemon's dependencies while Type=notify works everywhere.
 */
#include "notify.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

void pb_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (path == NULL || (path[0] != '/' && path[0] != '@') ||
        strlen(path) >= sizeof sun.sun_path)
        return;
    memcpy(sun.sun_path, path, strlen(path));
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0';
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    ssize_t ignored = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
                             (struct sockaddr *)&sun, len);
    (void)ignored;
    close(fd);
}

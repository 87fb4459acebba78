/*
 * daemonize.c - the classic double fork, with a pipe so the shell that
 * started the daemon learns whether it really started; and a pidfile held
 * under a lock, so a stale file from a crash never blocks a restart.
 */
#include "daemonize.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

static int ready_fd = -1;
static int pidfile_fd = -1;
static char *pidfile_path;

int pb_daemonize(void)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        close(fds[1]);
        unsigned char status = 1;
        ssize_t n;
        do
            n = read(fds[0], &status, 1);
        while (n < 0 && errno == EINTR);
        /* EOF without a status: the daemon died during start-up. */
        _exit(n == 1 ? status : 1);
    }
    close(fds[0]);
    setsid();
    pid = fork();
    if (pid < 0)
        _exit(1);
    if (pid > 0)
        _exit(0);
    ready_fd = fds[1];
    if (chdir("/") != 0)
        return -1;
    return 0;
}

void pb_daemonize_ready(int status)
{
    if (ready_fd < 0)
        return;
    unsigned char byte = (unsigned char)status;
    ssize_t ignored = write(ready_fd, &byte, 1);
    (void)ignored;
    close(ready_fd);
    ready_fd = -1;
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO)
            close(null);
    }
}

int pb_pidfile_create(const char *path)
{
    if (pb_runtime_dir_create(path) != 0) {
        pb_log_error("cannot create the directory of pidfile %s: %s", path,
                     strerror(errno));
        return -1;
    }

    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        pb_log_error("cannot open pidfile %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char buf[32] = "";
        ssize_t n = read(fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        pb_log_error("pidfile %s is held by a running plugboard (pid %s)",
                     path, buf[0] ? buf : "unknown");
        close(fd);
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || write(fd, pid, (size_t)len) != len) {
        pb_log_error("cannot write pidfile %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    pidfile_fd = fd;
    pidfile_path = strdup(path);
    return 0;
}

void pb_pidfile_remove(void)
{
    if (pidfile_fd < 0)
        return;
    if (pidfile_path != NULL)
        unlink(pidfile_path);
    close(pidfile_fd);
    pidfile_fd = -1;
    free(pidfile_path);
    pidfile_path = NULL;
}

void pb_pidfile_release(void)
{
    if (pidfile_fd >= 0)
        close(pidfile_fd);
    pidfile_fd = -1;
    free(pidfile_path);
    pidfile_path = NULL;
}

void pb_close_inherited(void)
{
    /* Descriptors above the limit are not the program's: valgrind keeps its
     * own there. */
    long max = sysconf(_SC_OPEN_MAX);
    if (max <= 0)
        max = 1024;
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL) {
        for (long fd = STDERR_FILENO + 1; fd < max; fd++)
            close((int)fd);
        return;
    }
    int own = dirfd(dir);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        char *end;
        long fd = strtol(entry->d_name, &end, 10);
        if (*end == '\0' && end != entry->d_name && fd > STDERR_FILENO &&
            fd < max && fd != own)
            close((int)fd);
    }
    closedir(dir);
}

int pb_runtime_dir_create(const char *path)
{
    char *dir = strdup(path);
    if (dir == NULL)
        return -1;
    int rc = mkdir(dirname(dir), 0755) != 0 && errno != EEXIST ? -1 : 0;
    int saved = errno;
    free(dir);
    errno = saved;
    return rc;
}

/*
 * redis_server.c - a private redis-server per test: a child process on a
 * free loopback port, persistence off, dying with the test process.
 */
#include "redis_server.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_MS 10000

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int free_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t length = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0
             && getsockname(fd, (struct sockaddr *)&sa, &length) == 0;
    close(fd);
    cr_assert(ok, "cannot find a free port: %s", strerror(errno));
    return ntohs(sa.sin_port);
}

/* Whether the server answers PING on its port now. */
static int answers_ping(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct timeval timeout = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    char reply[16] = "";
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0
             && write(fd, "PING\r\n", 6) == 6
             && read(fd, reply, sizeof reply - 1) > 0
             && strncmp(reply, "+PONG", 5) == 0;
    close(fd);
    return ok;
}

static void launch(pb_redis_server *server)
{
    char port[16];
    snprintf(port, sizeof port, "%d", server->port);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        execlp("redis-server", "redis-server", "--port", port,
               "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--daemonize", "no", (char *)NULL);
        fprintf(stderr, "cannot run redis-server: %s\n", strerror(errno));
        _exit(127);
    }
    server->pid = pid;
    long long deadline = now_ms() + START_TIMEOUT_MS;
    while (!answers_ping(server->port)) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            server->pid = 0;
            cr_assert_fail("redis-server on port %d exited at start (status %d): "
                           "is the redis-server package installed?",
                           server->port, status);
        }
        if (now_ms() > deadline) {
            pb_redis_kill(server);
            cr_assert_fail("redis-server on port %d does not answer", server->port);
        }
        sleep_ms(10);
    }
}

void pb_redis_start(pb_redis_server *server)
{
    memset(server, 0, sizeof *server);
    server->port = free_port();
    snprintf(server->url, sizeof server->url, "redis://127.0.0.1:%d", server->port);
    launch(server);
}

void pb_redis_restart(pb_redis_server *server)
{
    cr_assert_eq(server->pid, 0, "redis-server is still running");
    launch(server);
}

static void end(pb_redis_server *server, int sig)
{
    if (server->pid <= 0)
        return;
    kill(server->pid, sig);
    while (waitpid(server->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    server->pid = 0;
}

void pb_redis_kill(pb_redis_server *server)
{
    end(server, SIGKILL);
}

void pb_redis_stop(pb_redis_server *server)
{
    end(server, SIGTERM);
}

char *pb_redis_cli(const pb_redis_server *server, const char *const args[])
{
    char port[16];
    snprintf(port, sizeof port, "%d", server->port);
    const char *argv[32] = { "redis-cli", "-h", "127.0.0.1", "-p", port };
    size_t argc = 5;
    for (size_t i = 0; args[i] != NULL; i++) {
        cr_assert(argc < 31, "too many arguments for redis-cli");
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;

    int out[2];
    cr_assert_eq(pipe(out), 0, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execvp("redis-cli", (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    size_t used = 0, size = 256;
    char *text = malloc(size);
    cr_assert_not_null(text);
    for (;;) {
        if (used + 1 == size) {
            text = realloc(text, size *= 2);
            cr_assert_not_null(text);
        }
        ssize_t n = read(out[0], text + used, size - used - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        used += (size_t)n;
    }
    text[used] = '\0';
    close(out[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "redis-cli %s failed", args[0]);
    return text;
}

/*
 * redis_server.h - a private redis-server for a test: started as a child
 * process on a free loopback port with nothing saved to disk, killed (or
 * restarted on the same port) when the test says.
 */
#ifndef PB_TEST_REDIS_SERVER_H
#define PB_TEST_REDIS_SERVER_H

#include <sys/types.h>

typedef struct pb_redis_server {
    pid_t pid;                  /* 0 when not running */
    int port;
    char url[64];               /* "redis://127.0.0.1:PORT" */
} pb_redis_server;

/* Starts redis-server on a free port and waits until it answers PING.
 * Fails the test when it cannot (redis-server not installed, say). */
void pb_redis_start(pb_redis_server *server);

/* Starts it again on the port it had, after pb_redis_kill(). */
void pb_redis_restart(pb_redis_server *server);

/* SIGKILL, as a crash: clients see their connections reset. */
void pb_redis_kill(pb_redis_server *server);

/* Stops it for good (SIGTERM, then waits); nothing when not running. */
void pb_redis_stop(pb_redis_server *server);

/* Runs one command with redis-cli's argument syntax (what a user of the
 * same Redis would do) and returns its output, malloc'd. */
char *pb_redis_cli(const pb_redis_server *server, const char *const args[]);

#endif

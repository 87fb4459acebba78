/*
 * connection.h - one client connection: reads bytes, feeds them to the
 * listener's codec, routes each message to its plugin, queues the replies in
 * order and writes them; closes on error, idle timeout or shutdown.
 */
#ifndef PB_CONNECTION_H
#define PB_CONNECTION_H

#include "listener.h"
#include "server.h"

/* Takes over an accepted socket (already non-blocking). */
void pb_conn_open(pb_server *server, pb_listener *listener, int fd);

/* Refuses an accepted socket with an error (code, text) and closes it;
 * on a TLS listener only closes it. */
void pb_conn_refuse(pb_listener *listener, int fd, int code, const char *text);

/* Server shutdown, for every connection: answer what was already
 * received, then send shutting_down and close once the output is written. */
void pb_conns_shutdown(pb_server *server);

/* Closes connections that have had no complete message for
 * limits.idle_timeout seconds. */
void pb_conn_expire_idle(pb_server *server);

/* Closes at once, dropping unsent output. */
void pb_conn_close(pb_conn *conn);

/* Frees the closed connections kept for the next accepts: when the worker
 * has nothing open, and at exit. */
void pb_conn_pool_drain(void);

/* A number for pb_request.connection, unique among the daemon's open
 * connections of every framing. */
unsigned long long pb_conn_next_number(void);

/* Sets up the worker's replies in flight (reply.h), the push services
 * for the connections and the pacing of TLS handshakes. */
void pb_conns_init(struct ev_loop *loop);

#endif

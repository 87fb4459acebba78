/*
 * http.h - listeners with framing "http": HTTP/1.1 through GNU
 * libmicrohttpd, one server per listener in each worker, fed the sockets
 * the worker accepts and driven from the worker's loop.
 */
#ifndef PB_HTTP_H
#define PB_HTTP_H

#include <sys/socket.h>

#include "cycle.h"
#include "listener.h"
#include "server.h"

typedef struct pb_http pb_http;

/* Makes *http, the listener's HTTP server in this worker, serve cycle's
 * entry conf of config->listeners: the running one when its tls group
 * (the bytes of its files included) is the same, else a new one for new
 * connections, the one before it serving its own until they close. 0, or
 * -1 (logged) when libmicrohttpd cannot start one. */
int pb_http_bind(pb_http **http, pb_server *server, pb_listener *listener,
                 const pb_cycle *cycle, size_t conf);

/* Takes over an accepted socket, already counted against
 * max_connections; http is the listener's newest server. */
void pb_http_open(pb_http *http, int fd, const struct sockaddr *peer,
                  socklen_t peer_len);

/* Connections waiting for a request (none in progress), in http and the
 * servers before it. */
size_t pb_http_idle(const pb_http *http);

/* Closes the connections waiting for a request: while the worker stops,
 * once nothing else is open. */
void pb_http_close_idle(pb_http *http);

/* Closes every connection (a reply still to come is dropped when it
 * arrives) and frees http and the servers before it. NULL is ignored. */
void pb_http_free(pb_http *http);

#endif

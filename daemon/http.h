/*
 * http.h - listeners with framing "http": HTTP/1.1 through GNU
 * libmicrohttpd, one server per listener in each worker, fed the sockets
 * the worker accepts and driven from the worker's loop.
 */
#ifndef PB_HTTP_H
#define PB_HTTP_H

#include <sys/socket.h>

#include "listener.h"
#include "server.h"

typedef struct pb_http pb_http;

/* The HTTP server of a listener in this worker; NULL (logged) when
 * libmicrohttpd cannot start one. */
pb_http *pb_http_new(pb_server *server, pb_listener *listener);

/* Takes over an accepted socket, already counted against
 * max_connections. */
void pb_http_open(pb_http *http, int fd, const struct sockaddr *peer,
                  socklen_t peer_len);

/* Connections waiting for a request (none in progress). */
size_t pb_http_idle(const pb_http *http);

/* Closes the connections waiting for a request: while the worker stops,
 * once nothing else is open. */
void pb_http_close_idle(pb_http *http);

/* Closes every connection (a reply still to come is dropped when it
 * arrives) and frees the server. NULL is ignored. */
void pb_http_free(pb_http *http);

#endif

/*
 * server.h - one worker's event loop: its listeners, its connections, the
 * current configuration cycle, the master's commands, signals and timers.
 */
#ifndef PB_SERVER_H
#define PB_SERVER_H

#include <ev.h>

#include "cycle.h"
#include "listener.h"
#include "shared.h"

typedef struct pb_conn pb_conn;

#define PB_READ_CHUNK 65536

/* What a worker derives for one of its listeners from the cycle. */
typedef struct pb_listener_view {
    pb_instance *pinned;            /* every message goes to it, or NULL */
    size_t conf;                    /* its entry in config->listeners, which
                                     * routes name */
    SSL_CTX *tls;                   /* the cycle's context; NULL: plaintext */
} pb_listener_view;

typedef struct pb_server {
    struct ev_loop *loop;
    pb_cycle *cycle;                /* current configuration; owned */
    pb_cycle *prepared;             /* the next one, until the master commits it */
    /* What this worker derives from the cycle, which it never writes:
     * a view of each listener (by listener index), and the counters of
     * each instance and route (by their index; -1 = none). */
    pb_listener_view *views;
    int *instance_stats;
    int *route_stats;
    unsigned long prepared_serial;
    const char *config_path;        /* names the file in messages */
    pb_listener_set listeners;       /* inherited from the master; owned */
    pb_shared *shared;              /* daemon-wide counters */
    int slot;                       /* this worker's index in shared */
    int index;                      /* its place in the generation: the
                                     * reuseport copies it accepts on */

    ev_signal sig_term, sig_int;
    ev_io control;                  /* commands from the master */
    ev_timer idle_timer;            /* closes connections past idle_timeout */
    ev_timer shutdown_timer;        /* bounds a graceful stop */
    ev_timer accept_pause;          /* accepting resumes after EMFILE */
    ev_prepare stop_check;          /* notices the last close while stopping */
    ev_check switch_check;          /* switches to a committed configuration
                                     * before handling any event */

    /* Every connection, least recently active first. */
    pb_conn *oldest, *newest;
    size_t n_connections;
    int stopping;                   /* SIGTERM: finishing, then exit */
    int retiring;                   /* replaced: serve what is open, then exit */
    int trimmed;                    /* memory handed back since the last close */

    /* Where reads land when a connection has no partial message buffered,
     * so that an idle connection owns no input buffer. */
    unsigned char scratch[PB_READ_CHUNK];
} pb_server;

/* Prepares a worker's loop over listeners opened by the master, taking
 * commands on control_fd, and creates the plugin instances of cycle
 * (parsed, not started). Takes ownership of cycle, of the listener set and
 * of control_fd. -1 (logged) on failure. */
int pb_server_init(pb_server *server, pb_cycle *cycle, const char *config_path,
                   pb_listener_set *listeners, int control_fd,
                   pb_shared *shared, int slot, int index);

/* Runs until SIGTERM/SIGINT and a graceful stop, or until retired and the
 * last connection closed. */
void pb_server_run(pb_server *server);

/* Frees everything: connections, listeners, the cycle and the loop. */
void pb_server_free(pb_server *server);

#endif

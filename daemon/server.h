/*
 * server.h - one process's event loop: its listeners, its connections, the
 * current configuration cycle, signals and timers.
 */
#ifndef PB_SERVER_H
#define PB_SERVER_H

#include <ev.h>

#include "cycle.h"
#include "listener.h"
#include "shared.h"

typedef struct pb_conn pb_conn;

#define PB_READ_CHUNK 65536

typedef struct pb_server {
    struct ev_loop *loop;
    pb_cycle *cycle;                /* current configuration; owned */
    const char *config_path;        /* for reloads */
    pb_listener_set listeners;       /* inherited from the master; owned */
    pb_shared *shared;              /* daemon-wide counters */
    int slot;                       /* this worker's index in shared */

    ev_signal sig_term, sig_int, sig_hup;
    ev_signal sig_retire;           /* SIGUSR2: a new generation took over */
    ev_timer idle_timer;            /* closes connections past idle_timeout */
    ev_timer shutdown_timer;        /* bounds a graceful stop */
    ev_timer accept_pause;          /* accepting resumes after EMFILE */
    ev_prepare stop_check;          /* notices the last close while stopping */

    /* Every connection, least recently active first. */
    pb_conn *oldest, *newest;
    size_t n_connections;
    int stopping;                   /* SIGTERM: finishing, then exit */
    int retiring;                   /* replaced: serve what is open, then exit */
    int trimmed;                    /* memory handed back since the last close */
    int exit_status;

    /* Where reads land when a connection has no partial message buffered,
     * so that an idle connection owns no input buffer. */
    unsigned char scratch[PB_READ_CHUNK];
} pb_server;

/* Prepares a worker's loop over listeners opened by the master. Takes
 * ownership of cycle and of the listener set. -1 (logged) on failure. */
int pb_server_init(pb_server *server, pb_cycle *cycle, const char *config_path,
                   pb_listener_set *listeners, pb_shared *shared, int slot);

/* Runs until SIGTERM/SIGINT and a graceful stop; returns the exit status. */
int pb_server_run(pb_server *server);

/* Frees everything: connections, listeners, the cycle and the loop. */
void pb_server_free(pb_server *server);

#endif

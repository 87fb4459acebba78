/*
 * listener.h - listening sockets: TCP on every address a host name resolves
 * to, IPv4 and IPv6, and Unix-domain sockets with their mode. One
 * pb_listener is one bound socket. A reuseport listener has one socket per
 * worker, all bound with SO_REUSEPORT, so the kernel gives each worker its
 * own accept queue; the master holds them all, so a restarted worker finds
 * its queue where it left it.
 */
#ifndef PB_LISTENER_H
#define PB_LISTENER_H

#include <ev.h>
#include <sys/types.h>

#include "config.h"
#include "diag.h"
#include "plugin_host.h"

typedef struct pb_listener {
    ev_io watcher;              /* first, so callbacks can cast */
    int fd;
    char *name;                 /* the config's listener name */
    char *address;              /* "127.0.0.1:65432", "[::1]:65432", path */
    char *unix_path;            /* to unlink on close; NULL for TCP */
    pid_t owner;                /* the process that bound it: only it unlinks */
    pb_framing_kind framing;
    char *key;                  /* "tcp ADDRESS PORT" or "unix PATH": what
                                 * a reload must keep open */
    char *pinned;               /* instance name every message goes to, or NULL */
    int worker;                 /* the worker (its place in the generation)
                                 * that alone accepts on it: a reuseport
                                 * listener's copy; -1 = every worker */
    int reuseport;              /* bound with SO_REUSEPORT */
    pb_cidr *allow;             /* peers accepted (n_allow networks); NULL = all */
    size_t n_allow;
    size_t index;               /* its place in the worker's listener set */
    int stats;                  /* the worker's counters for its name
                                 * (pb_stats_listener_index), or -1 */
    void *server;
    struct pb_http *http;       /* a worker's HTTP server for it, once it
                                 * has framing "http" */
} pb_listener;

typedef struct pb_listener_set {
    pb_listener **items;
    size_t count;
} pb_listener_set;

/* What binding would find wrong short of binding: host names that do not
 * resolve, Unix socket paths too long for a socket address. Adds
 * FILE:LINE errors to diag; 0 or -1. */
int pb_listeners_check(const pb_config *config, pb_diag *diag);

/* Binds and listens on every socket the config's listeners describe, for
 * a generation of workers workers (a reuseport listener binds one socket
 * per worker). On failure closes what it opened, logs what failed (naming
 * the address and listener) and returns -1. */
int pb_listeners_open(pb_listener_set *set, const pb_config *config, int workers);

/* Whether config, served by workers workers, needs other sockets than the
 * set has open, or the same sockets shared otherwise. */
int pb_listeners_differ(const pb_listener_set *set, const pb_config *config,
                        int workers);

/* After a reload: takes the settings that do not need a new socket (name,
 * framing, plugin, and, in the process that bound it, a Unix socket's mode)
 * from config's entry for the same socket. */
int pb_listeners_update(pb_listener_set *set, const pb_config *config);

/* Makes the set match config for a generation of workers workers: sockets
 * that stay are kept open (no accept gap), new ones are bound, removed
 * ones closed. On failure (logged) the set is left as it was and -1
 * returned. */
int pb_listeners_reopen(pb_listener_set *set, const pb_config *config, int workers);

/* Stops listening: closes every socket and unlinks Unix socket files, but
 * keeps the listener objects, which open connections still point to. */
void pb_listeners_stop(pb_listener_set *set);

/* Stops listening if not done yet and frees the set. */
void pb_listeners_close(pb_listener_set *set);

#endif

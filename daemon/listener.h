/*
 * listener.h - listening sockets: TCP on every address a host name resolves
 * to, IPv4 and IPv6, and Unix-domain sockets with their mode. One
 * pb_listener is one bound socket.
 */
#ifndef PB_LISTENER_H
#define PB_LISTENER_H

#include <ev.h>
#include <sys/types.h>

#include "config.h"
#include "plugin_host.h"

typedef struct pb_listener {
    ev_io watcher;              /* first, so callbacks can cast */
    int fd;
    char *name;                 /* the config's listener name */
    char *address;              /* "127.0.0.1:65432", "[::1]:65432", path */
    char *unix_path;            /* to unlink on close; NULL for TCP */
    pid_t owner;                /* the process that bound it: only it unlinks */
    pb_framing_kind framing;
    char *spec;                 /* the config entry's socket settings, to
                                 * notice a reload that changes them */
    char *pinned;               /* instance name every message goes to, or NULL */
    pb_instance *pinned_instance;  /* resolved against the current cycle */
    void *server;
} pb_listener;

typedef struct pb_listener_set {
    pb_listener **items;
    size_t count;
} pb_listener_set;

/* Binds and listens on every socket the config's listeners describe. On
 * failure closes what it opened, logs what failed (naming the address and
 * listener) and returns -1. */
int pb_listeners_open(pb_listener_set *set, const pb_config *config);

/* Logs a warning for each listener of config that differs from the open
 * ones in address, port, path, mode or framing: those changes need a
 * restart. */
void pb_listener_changes_warn(const pb_listener_set *set,
                              const pb_config *config);

/* After a reload: takes each listener's `plugin` from the entry of the
 * same name in config (the only listener setting a reload changes). */
int pb_listeners_update(pb_listener_set *set, const pb_config *config);

/* Stops listening: closes every socket and unlinks Unix socket files, but
 * keeps the listener objects, which open connections still point to. */
void pb_listeners_stop(pb_listener_set *set);

/* Stops listening if not done yet and frees the set. */
void pb_listeners_close(pb_listener_set *set);

#endif

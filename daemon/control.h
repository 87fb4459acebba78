/*
 * control.h - the channel from the master to one worker. A reload is a
 * command the master sends, carrying the configuration it has checked (the
 * text and the TLS files, pb_cycle_pack), so that every worker applies the
 * same bytes: no worker reads the files itself, and none can see another
 * version of them.
 */
#ifndef PB_CONTROL_H
#define PB_CONTROL_H

#include <stddef.h>

typedef enum pb_control_command {
    /* Build a cycle from the attached configuration, ready to serve it. */
    PB_CONTROL_PREPARE = 1,
    /* Every worker is prepared: serve the cycle prepared for `serial`. */
    PB_CONTROL_COMMIT = 2,
    /* A new generation of workers took over the listeners: accept no more,
     * serve what is open, exit when the last connection closes. */
    PB_CONTROL_RETIRE = 3,
} pb_control_command;

/* A connected pair: fds[0] for the master (non-blocking, so a wedged worker
 * never stalls it), fds[1] for the worker. Both close-on-exec. 0 or -1. */
int pb_control_pair(int fds[2]);

/* The master's side: 0, or -1 when the worker cannot be told (gone, or
 * not reading its commands). `serial` names the configuration. */
int pb_control_send_prepare(int fd, unsigned long serial, const char *text,
                            size_t len);
int pb_control_send_commit(int fd, unsigned long serial);
int pb_control_send_retire(int fd);

/* The worker's side: one command into *command, and its *serial. For
 * PB_CONTROL_PREPARE also the text (*text malloc'd and NUL-terminated, *len bytes).
 * 1 with a command, 0 when none is waiting, -1 when the master is gone or
 * the command cannot be read. */
int pb_control_receive(int fd, pb_control_command *command,
                       unsigned long *serial, char **text, size_t *len);

#endif

/*
 * daemonize.h - detaching from the terminal, the pidfile, and the runtime
 * directory that holds it.
 */
#ifndef PB_DAEMONIZE_H
#define PB_DAEMONIZE_H

/* Forks into the background. Returns in the daemon; the process that
 * called it waits until the daemon calls pb_daemonize_ready() and exits
 * with the status given there (so `plugboard` without -f still exits 1
 * when a port is in use). -1 when fork fails. */
int pb_daemonize(void);

/* From the daemon: reports start-up success (0) or failure (non-zero) to
 * the waiting parent and detaches stdin/stdout/stderr. No-op in the
 * foreground. */
void pb_daemonize_ready(int status);

/* Writes and locks the pidfile. Refuses (-1, logged) when a live process
 * holds it; a stale one is taken over. */
int pb_pidfile_create(const char *path);

/* Removes the pidfile created above, if any. */
void pb_pidfile_remove(void);

/* In a worker: closes the pidfile inherited from the master without
 * removing it, so that a worker running as another user cannot write
 * another pid into it, and the lock goes with the master alone. */
void pb_pidfile_release(void);

/* Closes every descriptor above stderr: whatever the program that started
 * the daemon left open is not the daemon's to hold, nor its workers'. */
void pb_close_inherited(void);

/* Creates the directory path lies in (one level, mode 0755) unless it
 * exists: the daemon's runtime directory, such as /run/plugboard on a tmpfs,
 * which holds its pidfile and Unix sockets and is empty after a boot.
 * 0, or -1 with errno set. */
int pb_runtime_dir_create(const char *path);

#endif

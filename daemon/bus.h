/*
 * bus.h - broadcasts between the copies of a plugin instance in the
 * daemon's workers (pb_host.broadcast). Each worker slot has a ring of
 * bytes in one shared mapping the master makes before the first fork; a
 * sender appends a record to every other running worker's ring and wakes
 * it with SIGURG, and the worker's loop drains its ring and hands each
 * message to the instances of that name.
 */
#ifndef PB_BUS_H
#define PB_BUS_H

#include <ev.h>
#include <stddef.h>

/* Receives one whole message for the copies of the instance named by the
 * `name_length` bytes at `name` in this worker, except the sender itself
 * (the instance `origin` in process `sender`). */
typedef void pb_bus_deliver(void *arg, const char *name, size_t name_length,
                            const void *origin, long sender,
                            const void *data, size_t length);

/* The master, before it forks the first worker. 0, or -1 when the
 * mapping cannot be made (logged). */
int pb_bus_create(void);

/* The master, once the worker of `slot` has exited: nothing more is sent
 * to it. */
void pb_bus_forget(int slot);

/* A worker, before its instances start serving: takes `slot`'s ring
 * (what a worker before it left there is dropped) and delivers to
 * `deliver` on `loop`. 0, or -1 without a bus (tests, the check). */
int pb_bus_attach(int slot, struct ev_loop *loop, pb_bus_deliver *deliver,
                  void *arg);

/* A worker leaving: stops receiving and drops what it could not send. */
void pb_bus_detach(void);

/*
 * Sends `length` bytes from the instance `origin` named `name` to every
 * other worker, and to this one too when `to_self` (it holds other copies
 * of that instance: a reload left old ones serving). Any thread. 0, or -1
 * when out of memory or not attached.
 */
int pb_bus_send(const char *name, const void *origin, const void *data,
                size_t length, int to_self);

#endif

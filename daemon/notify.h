/*
 * notify.h - readiness notification for systemd (Type=notify): the
 * sd_notify datagram protocol, spoken directly.
 */
#ifndef PB_NOTIFY_H
#define PB_NOTIFY_H

/* Sends state ("READY=1", "RELOADING=1", "STOPPING=1", ...) to the socket
 * named by $NOTIFY_SOCKET; does nothing when it is not set. */
void pb_notify(const char *state);

#endif

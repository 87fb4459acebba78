/*
 * access.h - address allow-lists: the networks a listener accepts peers
 * from, parsed from CIDR text ("10.0.0.0/8", "::1/128", or a plain address)
 * and matched against a peer's address at accept. No I/O.
 */
#ifndef PB_ACCESS_H
#define PB_ACCESS_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct pb_cidr {
    int family;                 /* AF_INET or AF_INET6 */
    unsigned char addr[16];     /* network bytes; IPv4 in the first 4 */
    int prefix;                 /* bits that must match */
} pb_cidr;

/* Parses "ADDRESS" or "ADDRESS/PREFIX" (IPv4 or IPv6). 0, or -1 when it is
 * neither, or the prefix is out of range for its family. */
int pb_cidr_parse(const char *text, pb_cidr *out);

/* Whether the peer at sa (AF_INET or AF_INET6; an IPv4-mapped IPv6 address
 * counts as IPv4) lies in one of the n networks. */
int pb_cidr_match(const pb_cidr *list, size_t n, const struct sockaddr *sa);

#endif

/*
 * access.c - address allow-lists, parsed from CIDR text and matched bit by
 * bit against a peer's address.
 */
#include "access.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

int pb_cidr_parse(const char *text, pb_cidr *out)
{
    char address[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(text, '/');
    size_t length = slash ? (size_t)(slash - text) : strlen(text);
    if (length == 0 || length >= sizeof address)
        return -1;
    memcpy(address, text, length);
    address[length] = '\0';

    memset(out, 0, sizeof *out);
    int max;
    if (inet_pton(AF_INET, address, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, address, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    out->prefix = max;
    if (slash != NULL) {
        char *end;
        const char *digits = slash + 1;
        if (*digits < '0' || *digits > '9')
            return -1;
        long prefix = strtol(digits, &end, 10);
        if (*end != '\0' || prefix < 0 || prefix > max)
            return -1;
        out->prefix = (int)prefix;
    }
    return 0;
}

static int same_prefix(const unsigned char *a, const unsigned char *b, int bits)
{
    int bytes = bits / 8;
    if (memcmp(a, b, (size_t)bytes) != 0)
        return 0;
    int rest = bits % 8;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

int pb_cidr_match(const pb_cidr *list, size_t n, const struct sockaddr *sa)
{
    unsigned char addr[16];
    int family;
    if (sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            memcpy(addr, a6->s6_addr + 12, 4);
            family = AF_INET;
        } else {
            memcpy(addr, a6->s6_addr, 16);
            family = AF_INET6;
        }
    } else {
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (list[i].family == family && same_prefix(addr, list[i].addr, list[i].prefix))
            return 1;
    return 0;
}

/*
 * tls_client.h - the TLS client side plugboard-cli and plugboard-bench
 * share: one context built from their --ca, --cert, --key, --insecure and
 * --servername, and OpenSSL's reasons in words.
 */
#ifndef PB_TLS_CLIENT_H
#define PB_TLS_CLIENT_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct pb_tls_client_options {
    const char *ca;             /* trusted CAs (PEM); NULL: the system's */
    const char *cert;           /* client certificate chain (PEM), or NULL */
    const char *key;            /* its key; NULL: in the cert's file */
    const char *name;           /* what the server's certificate must name:
                                 * a host name or an IP address */
    int insecure;               /* verify nothing */
} pb_tls_client_options;

/* Why a context could not be made: a file or name the user gave (a usage
 * error), or the system's trusted certificates. */
typedef enum pb_tls_client_failure {
    PB_TLS_CLIENT_USAGE = 1,
    PB_TLS_CLIENT_SYSTEM = 2,
} pb_tls_client_failure;

/*
 * A client context: TLS 1.2 or later, renegotiation refused (so a write
 * never waits for a read), a close without close_notify read as the end
 * of the stream (the framing tells a whole reply from a cut one). NULL
 * with a one-line reason in error and *failure set.
 */
SSL_CTX *pb_tls_client_context(const pb_tls_client_options *options,
                               char *error, size_t size,
                               pb_tls_client_failure *failure);

/*
 * A failed SSL_read or SSL_write (its SSL_get_error() code) as recv() and
 * send() report one: -1 with errno EAGAIN to wait for the socket, 0 for
 * the daemon's close, -1 with errno for a broken connection, and -1 with
 * errno EPROTO for a TLS protocol failure, which pb_tls_client_reason()
 * explains.
 */
ssize_t pb_tls_client_io_failure(int error);

/* OpenSSL's reason for its earliest queued failure, which names the root
 * cause rather than its consequences; the queue is left empty. */
const char *pb_tls_client_reason(void);

/* Whether name is an IPv4 or IPv6 address, which is verified as an address
 * and never sent as a server name indication (RFC 6066). */
int pb_tls_is_ip_literal(const char *name);

#endif

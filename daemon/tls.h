/*
 * tls.h - TLS listeners, with OpenSSL. The files a listener's tls group
 * names are read once, by the master (keys may be readable by root alone),
 * and travel with the configuration text to every worker, which builds its
 * contexts from those bytes; a connection is then a handshake followed by
 * reads and writes through its SSL object.
 */
#ifndef PB_TLS_H
#define PB_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <sys/types.h>

#include "buffer.h"
#include "config.h"
#include "diag.h"

/* The bytes of every file the TLS listeners of a configuration name. */
typedef struct pb_tls_file {
    char *path;
    unsigned char *data;
    size_t len;
} pb_tls_file;

typedef struct pb_tls_files {
    pb_tls_file *items;
    size_t count;
} pb_tls_files;

/* Once in the master, before any worker or check child is forked: the
 * session ticket keys every process shares, so that a client resumes its
 * session whichever worker accepts it. 0 or -1. */
int pb_tls_init(void);

/* Reads every certificate, key and CA file config's listeners name. 0, or
 * -1 with a FILE:LINE error for each file that cannot be read. */
int pb_tls_files_read(pb_tls_files *files, const pb_config *config,
                      pb_diag *diag);

/* The files in one buffer, for the master's channel to a worker, and
 * back. Unpacking takes len bytes at data; 0 or -1 (truncated or out of
 * memory) with *files empty. */
int pb_tls_files_pack(const pb_tls_files *files, pb_buf *out);
int pb_tls_files_unpack(pb_tls_files *files, const unsigned char *data,
                        size_t len, size_t *used);

void pb_tls_files_free(pb_tls_files *files);

/* The context of a TLS listener from its files: certificate chain and key
 * (checked to match), CAs and verification of client certificates, version
 * floor, shared ticket keys. NULL with FILE:LINE errors in diag. */
SSL_CTX *pb_tls_context_new(const pb_listener_conf *listener,
                            const pb_tls_files *files, pb_diag *diag);

/* --- One connection ------------------------------------------------------ */

typedef enum pb_tls_status {
    PB_TLS_OK = 0,          /* done, or bytes moved */
    PB_TLS_WANT_READ,       /* wait until the socket is readable */
    PB_TLS_WANT_WRITE,      /* wait until the socket is writable */
    PB_TLS_CLOSED,          /* the peer ended the stream */
    PB_TLS_FAILED,          /* broken: pb_tls_reason() says why */
} pb_tls_status;

/* An SSL object for an accepted socket, server side; NULL when out of
 * memory. */
SSL *pb_tls_new(SSL_CTX *context, int fd);

/* One step of the handshake. */
pb_tls_status pb_tls_handshake(SSL *ssl);

/* At most len bytes of plaintext; *n is set on PB_TLS_OK. */
pb_tls_status pb_tls_read(SSL *ssl, void *buf, size_t len, size_t *n);

/* Whether OpenSSL holds bytes it read from the socket and has not handed
 * out: then no poll will say there is more to read. */
int pb_tls_pending(const SSL *ssl);

/* Writes some of buf (at least one record's worth when it can); *n is set
 * on PB_TLS_OK. */
pb_tls_status pb_tls_write(SSL *ssl, const void *buf, size_t len, size_t *n);

/* Why the last call failed, for a log line; clears OpenSSL's error queue. */
const char *pb_tls_reason(char *text, size_t size);

/* The client certificate's subject (RFC 2253, "CN=client,O=Example"),
 * malloc'd; NULL when the client sent none. */
char *pb_tls_subject(SSL *ssl);

#endif

/*
 * tls_client.c - the client context both tools build from their options,
 * and the reasons they print when OpenSSL fails.
 */
#include "tls_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *pb_tls_client_reason(void)
{
    static char text[256];
    unsigned long e = ERR_get_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

    if (reason != NULL)
        snprintf(text, sizeof text, "%s", reason);
    else if (e != 0)
        ERR_error_string_n(e, text, sizeof text);
    else
        snprintf(text, sizeof text, "unknown TLS error");
    ERR_clear_error();
    return text;
}

ssize_t pb_tls_client_io_failure(int error)
{
    switch (error) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        /* errno 0: closed without close_notify, as OpenSSL 1.1 reports it. */
        return errno == 0 ? 0 : -1;
    default:
        errno = EPROTO;
        return -1;
    }
}

int pb_tls_is_ip_literal(const char *name)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

/* Names the file and what OpenSSL made of it. */
static void file_failure(char *error, size_t size, const char *option,
                         const char *path, const char *wanted)
{
    if (access(path, R_OK) != 0)
        snprintf(error, size, "%s %s: %s", option, path, strerror(errno));
    else
        snprintf(error, size, "%s %s: no usable %s in it (%s)", option, path, wanted,
                 pb_tls_client_reason());
}

/* 0, or -1 with the reason in error. */
static int set_verification(SSL_CTX *ctx, const pb_tls_client_options *o,
                            char *error, size_t size, pb_tls_client_failure *failure)
{
    if (o->insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    *failure = PB_TLS_CLIENT_USAGE;
    if (o->ca != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1) {
            file_failure(error, size, "--ca", o->ca, "PEM certificate");
            return -1;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(error, size, "cannot load the system's trusted certificates: %s",
                 pb_tls_client_reason());
        *failure = PB_TLS_CLIENT_SYSTEM;
        return -1;
    }
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
    int ok = pb_tls_is_ip_literal(o->name) ? X509_VERIFY_PARAM_set1_ip_asc(param, o->name)
                                           : X509_VERIFY_PARAM_set1_host(param, o->name, 0);
    if (ok != 1) {
        snprintf(error, size, "cannot verify a certificate against the name '%s'", o->name);
        return -1;
    }
    return 0;
}

static int use_certificate(SSL_CTX *ctx, const pb_tls_client_options *o,
                           char *error, size_t size)
{
    if (o->cert == NULL)
        return 0;
    const char *key = o->key != NULL ? o->key : o->cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
        file_failure(error, size, "--cert", o->cert, "PEM certificate");
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1)
        return 0;
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
        snprintf(error, size, "the key in %s does not match the certificate in %s", key,
                 o->cert);
    else if (o->key == NULL)
        snprintf(error, size, "--cert %s: no private key found in it; give --key FILE",
                 o->cert);
    else
        file_failure(error, size, "--key", key, "PEM private key");
    ERR_clear_error();
    return -1;
}

SSL_CTX *pb_tls_client_context(const pb_tls_client_options *o, char *error,
                               size_t size, pb_tls_client_failure *failure)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    *failure = PB_TLS_CLIENT_SYSTEM;
    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        snprintf(error, size, "cannot make a TLS context: %s", pb_tls_client_reason());
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    int rc = set_verification(ctx, o, error, size, failure);
    if (rc == 0) {
        *failure = PB_TLS_CLIENT_USAGE;
        rc = use_certificate(ctx, o, error, size);
    }
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

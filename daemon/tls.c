/*
 * tls.c - TLS listeners with OpenSSL: reading the files a configuration
 * names, building a listener's context from their bytes, and the
 * non-blocking handshake, reads and writes of one connection.
 */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Certificates, chains and CA bundles are small; a file larger than this
 * is a mistake in the configuration, not something to hold in memory. */
#define MAX_TLS_FILE (4 * 1024 * 1024)

/* Session ticket keys: a name, an HMAC secret and an AES key, as
 * SSL_CTX_set_tlsext_ticket_keys() takes them. */
static unsigned char ticket_keys[80];
static int have_ticket_keys;

int pb_tls_init(void)
{
    if (RAND_bytes(ticket_keys, sizeof ticket_keys) != 1)
        return -1;
    have_ticket_keys = 1;
    return 0;
}

/* --- The files ----------------------------------------------------------- */

static const pb_tls_file *find_file(const pb_tls_files *files, const char *path)
{
    for (size_t i = 0; i < files->count; i++)
        if (strcmp(files->items[i].path, path) == 0)
            return &files->items[i];
    return NULL;
}

static int read_whole(const char *path, unsigned char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    int error = 0;
    if (fstat(fd, &st) != 0)
        error = errno;
    else if (!S_ISREG(st.st_mode))
        error = EINVAL;
    else if (st.st_size > MAX_TLS_FILE)
        error = EFBIG;
    if (error != 0) {
        close(fd);
        errno = error;
        return -1;
    }
    unsigned char *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf != NULL && got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    int saved = errno;
    close(fd);
    if (buf == NULL || got < (size_t)st.st_size) {
        free(buf);
        errno = buf == NULL ? ENOMEM : saved;
        return -1;
    }
    *data = buf;
    *len = got;
    return 0;
}

static int add_file(pb_tls_files *files, const char *what, const char *path,
                    pb_conf_pos pos, pb_diag *diag)
{
    if (path == NULL || find_file(files, path) != NULL)
        return 0;
    pb_tls_file file = { 0 };
    if (read_whole(path, &file.data, &file.len) != 0) {
        pb_diag_add(diag, pos.file, pos.line, "cannot read %s %s: %s", what,
                    path, strerror(errno));
        return -1;
    }
    pb_tls_file *items = realloc(files->items, (files->count + 1) * sizeof *items);
    if (items == NULL || (file.path = strdup(path)) == NULL) {
        if (items != NULL)
            files->items = items;
        OPENSSL_cleanse(file.data, file.len);
        free(file.data);
        pb_diag_add(diag, pos.file, pos.line, "out of memory");
        return -1;
    }
    files->items = items;
    files->items[files->count++] = file;
    return 0;
}

int pb_tls_files_read(pb_tls_files *files, const pb_config *config,
                      pb_diag *diag)
{
    files->items = NULL;
    files->count = 0;
    int rc = 0;
    for (size_t i = 0; i < config->n_listeners; i++) {
        const pb_tls_conf *t = config->listeners[i].tls;
        if (t == NULL)
            continue;
        rc |= add_file(files, "certificate", t->certificate, t->certificate_pos, diag);
        rc |= add_file(files, "key", t->key, t->key_pos, diag);
        rc |= add_file(files, "CA file", t->ca, t->ca_pos, diag);
    }
    if (rc != 0)
        pb_tls_files_free(files);
    return rc;
}

void pb_tls_files_free(pb_tls_files *files)
{
    for (size_t i = 0; i < files->count; i++) {
        /* Private keys do not linger in freed memory. */
        if (files->items[i].data != NULL)
            OPENSSL_cleanse(files->items[i].data, files->items[i].len);
        free(files->items[i].data);
        free(files->items[i].path);
    }
    free(files->items);
    files->items = NULL;
    files->count = 0;
}

/* Packed: a count, then for each file its path and its bytes, each behind
 * its length; host byte order, since both ends are the same binary. */
static int pack_bytes(pb_buf *out, const void *data, size_t len)
{
    uint64_t n = len;
    return pb_buf_append(out, &n, sizeof n) | pb_buf_append(out, data, len);
}

int pb_tls_files_pack(const pb_tls_files *files, pb_buf *out)
{
    uint64_t count = files->count;
    int rc = pb_buf_append(out, &count, sizeof count);
    for (size_t i = 0; i < files->count; i++)
        rc |= pack_bytes(out, files->items[i].path, strlen(files->items[i].path)) |
              pack_bytes(out, files->items[i].data, files->items[i].len);
    return rc != 0 ? -1 : 0;
}

/* The next length-prefixed field of data[*at..len), or NULL. */
static const unsigned char *unpack_bytes(const unsigned char *data, size_t len,
                                         size_t *at, size_t *n)
{
    uint64_t field;
    if (len - *at < sizeof field)
        return NULL;
    memcpy(&field, data + *at, sizeof field);
    *at += sizeof field;
    if (field > len - *at)
        return NULL;
    *n = (size_t)field;
    *at += *n;
    return data + *at - *n;
}

int pb_tls_files_unpack(pb_tls_files *files, const unsigned char *data,
                        size_t len, size_t *used)
{
    files->items = NULL;
    files->count = 0;
    uint64_t count;
    if (len < sizeof count)
        return -1;
    memcpy(&count, data, sizeof count);
    size_t at = sizeof count;
    if (count > len / (2 * sizeof(uint64_t)))
        return -1;
    if (count > 0 && (files->items = calloc((size_t)count, sizeof *files->items)) == NULL)
        return -1;
    /* Entries are zeroed: freeing them all is safe at any point. */
    files->count = (size_t)count;
    for (size_t i = 0; i < files->count; i++) {
        pb_tls_file *f = &files->items[i];
        size_t path_len, data_len;
        const unsigned char *path = unpack_bytes(data, len, &at, &path_len);
        const unsigned char *bytes = path ? unpack_bytes(data, len, &at, &data_len) : NULL;
        if (bytes == NULL || (f->path = strndup((const char *)path, path_len)) == NULL ||
            (f->data = malloc(data_len + 1)) == NULL) {
            pb_tls_files_free(files);
            return -1;
        }
        memcpy(f->data, bytes, data_len);
        f->len = data_len;
    }
    *used = at;
    return 0;
}

/* --- A listener's context ------------------------------------------------- */

const char *pb_tls_reason(char *text, size_t size)
{
    unsigned long last = 0, e;
    while ((e = ERR_get_error()) != 0)
        last = e;
    if (last == 0) {
        snprintf(text, size, "%s", errno != 0 ? strerror(errno) : "unknown error");
        return text;
    }
    const char *reason = ERR_reason_error_string(last);
    if (reason != NULL)
        snprintf(text, size, "%s", reason);
    else
        ERR_error_string_n(last, text, size);
    return text;
}

/* Keys are read without a terminal: an encrypted one is refused, never
 * prompted for. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

/* A memory BIO over the bytes read for path. */
static BIO *file_bio(const pb_tls_files *files, const char *path)
{
    const pb_tls_file *f = find_file(files, path);
    return f != NULL ? BIO_new_mem_buf(f->data, (int)f->len) : NULL;
}

typedef struct context_build {
    SSL_CTX *ctx;
    const pb_listener_conf *listener;
    const pb_tls_files *files;
    pb_diag *diag;
} context_build;

static int fail(context_build *b, pb_conf_pos pos, const char *what,
                const char *path)
{
    char reason[256];
    pb_diag_add(b->diag, pos.file, pos.line, "listener %s: %s %s: %s",
                b->listener->name, what, path, pb_tls_reason(reason, sizeof reason));
    return -1;
}

/* The certificate first, then the chain behind it. */
static int load_certificate(context_build *b)
{
    const pb_tls_conf *t = b->listener->tls;
    BIO *bio = file_bio(b->files, t->certificate);
    X509 *cert = bio ? PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL) : NULL;
    int rc = 0;
    if (cert == NULL || SSL_CTX_use_certificate(b->ctx, cert) != 1) {
        rc = fail(b, t->certificate_pos, "cannot load the certificate in", t->certificate);
    } else {
        X509 *chain;
        while ((chain = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) != NULL) {
            if (SSL_CTX_add0_chain_cert(b->ctx, chain) != 1) {
                X509_free(chain);
                rc = fail(b, t->certificate_pos, "cannot add the chain in",
                          t->certificate);
                break;
            }
        }
        /* The loop ends on "no start line" at the end of the file. */
        if (rc == 0)
            ERR_clear_error();
    }
    X509_free(cert);
    BIO_free(bio);
    return rc;
}

static int load_key(context_build *b)
{
    const pb_tls_conf *t = b->listener->tls;
    BIO *bio = file_bio(b->files, t->key);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
    int rc = 0;
    if (key == NULL)
        rc = fail(b, t->key_pos, "cannot load the private key (PEM, unencrypted) in",
                  t->key);
    else if (SSL_CTX_use_PrivateKey(b->ctx, key) != 1 ||
             SSL_CTX_check_private_key(b->ctx) != 1)
        rc = fail(b, t->key_pos, "the certificate does not match the key in", t->key);
    EVP_PKEY_free(key);
    BIO_free(bio);
    return rc;
}

/* The CAs client certificates are verified against, also named to
 * clients as the acceptable issuers. */
static int load_ca(context_build *b)
{
    const pb_tls_conf *t = b->listener->tls;
    BIO *bio = file_bio(b->files, t->ca);
    STACK_OF(X509_INFO) *infos = bio ? PEM_X509_INFO_read_bio(bio, NULL, no_passphrase, NULL)
                                     : NULL;
    X509_STORE *store = SSL_CTX_get_cert_store(b->ctx);
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    int added = 0, rc = 0;
    for (int i = 0; infos != NULL && names != NULL && i < sk_X509_INFO_num(infos); i++) {
        X509 *cert = sk_X509_INFO_value(infos, i)->x509;
        if (cert == NULL)
            continue;
        X509_NAME *name = X509_NAME_dup(X509_get_subject_name(cert));
        if (X509_STORE_add_cert(store, cert) != 1 || name == NULL ||
            sk_X509_NAME_push(names, name) == 0) {
            X509_NAME_free(name);
            rc = -1;
            break;
        }
        added++;
    }
    if (rc == 0 && added == 0) {
        ERR_clear_error();
        pb_diag_add(b->diag, t->ca_pos.file, t->ca_pos.line,
                    "listener %s: no PEM certificate in CA file %s",
                    b->listener->name, t->ca);
        rc = -1;
    } else if (rc != 0) {
        fail(b, t->ca_pos, "cannot load the CA file", t->ca);
    } else {
        SSL_CTX_set_client_CA_list(b->ctx, names);
        names = NULL;
    }
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    BIO_free(bio);
    return rc;
}

/*
 * Every listener shares the ticket keys, so a session must name what it
 * was verified for: a session resumes only where the listener, its
 * verify_client and its CAs are the same. Otherwise a session from a
 * listener that asks for no certificate would resume on one that insists.
 */
static int set_session_context(context_build *b)
{
    const pb_tls_conf *t = b->listener->tls;
    unsigned char id[SHA256_DIGEST_LENGTH];
    unsigned char mode = (unsigned char)t->verify_client;
    const pb_tls_file *ca = t->ca != NULL ? find_file(b->files, t->ca) : NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, b->listener->name, strlen(b->listener->name) + 1) == 1 &&
             EVP_DigestUpdate(md, &mode, 1) == 1 &&
             (ca == NULL || EVP_DigestUpdate(md, ca->data, ca->len) == 1) &&
             EVP_DigestFinal_ex(md, id, NULL) == 1 &&
             SSL_CTX_set_session_id_context(b->ctx, id, sizeof id) == 1;
    EVP_MD_CTX_free(md);
    if (!ok)
        return fail(b, t->pos, "cannot set the session context", "");
    return 0;
}

SSL_CTX *pb_tls_context_new(const pb_listener_conf *listener,
                            const pb_tls_files *files, pb_diag *diag)
{
    const pb_tls_conf *t = listener->tls;
    context_build b = { SSL_CTX_new(TLS_server_method()), listener, files, diag };
    if (b.ctx == NULL) {
        fail(&b, t->pos, "cannot create a TLS context", "");
        return NULL;
    }
    SSL_CTX *ctx = b.ctx;
    SSL_CTX_set_min_proto_version(ctx, t->min_version == PB_TLS_1_3 ? TLS1_3_VERSION
                                                                   : TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    /* Renegotiation would let a reader need a write and a writer a read,
     * for nothing the daemon wants. Many clients close without
     * close_notify: that is the end of their stream, not an error. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Output is written from a buffer that grows and moves; idle
     * connections keep no record buffers. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* One read takes whatever the socket has, several records at once,
     * rather than two per record (its header, then its body); the
     * connection asks pb_tls_pending before it waits for the socket. */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* One ticket per handshake is enough to resume, and cheaper than two. */
    SSL_CTX_set_num_tickets(ctx, 1);
    if (set_session_context(&b) != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (have_ticket_keys)
        SSL_CTX_set_tlsext_ticket_keys(ctx, ticket_keys, sizeof ticket_keys);

    int rc = load_certificate(&b);
    if (rc == 0)
        rc = load_key(&b);
    if (t->ca != NULL)
        rc |= load_ca(&b);
    int mode = SSL_VERIFY_NONE;
    if (t->verify_client == PB_VERIFY_OPTIONAL)
        mode = SSL_VERIFY_PEER;
    else if (t->verify_client == PB_VERIFY_REQUIRE)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* --- One connection ---------------------------------------------------------- */

SSL *pb_tls_new(SSL_CTX *context, int fd)
{
    SSL *ssl = SSL_new(context);
    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

static pb_tls_status status_of(SSL *ssl, int rc)
{
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        return PB_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return PB_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return PB_TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        /* A peer that closed without close_notify, as many do. */
        if (ERR_peek_error() == 0 && (errno == 0 || errno == ECONNRESET))
            return PB_TLS_CLOSED;
        return PB_TLS_FAILED;
    default:
        return PB_TLS_FAILED;
    }
}

pb_tls_status pb_tls_handshake(SSL *ssl)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return PB_TLS_OK;
    pb_tls_status st = status_of(ssl, rc);
    /* Gone before the handshake finished is a failed handshake too. */
    return st == PB_TLS_CLOSED ? PB_TLS_FAILED : st;
}

pb_tls_status pb_tls_read(SSL *ssl, void *buf, size_t len, size_t *n)
{
    ERR_clear_error();
    errno = 0;
    if (SSL_read_ex(ssl, buf, len, n) == 1)
        return PB_TLS_OK;
    return status_of(ssl, 0);
}

int pb_tls_pending(const SSL *ssl)
{
    return SSL_has_pending(ssl);
}

pb_tls_status pb_tls_write(SSL *ssl, const void *buf, size_t len, size_t *n)
{
    ERR_clear_error();
    errno = 0;
    if (SSL_write_ex(ssl, buf, len, n) == 1)
        return PB_TLS_OK;
    return status_of(ssl, 0);
}

char *pb_tls_subject(SSL *ssl)
{
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (cert == NULL)
        return NULL;
    char *subject = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio != NULL &&
        X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0,
                           XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        char *text;
        long len = BIO_get_mem_data(bio, &text);
        subject = strndup(text, (size_t)len);
    }
    BIO_free(bio);
    X509_free(cert);
    return subject;
}

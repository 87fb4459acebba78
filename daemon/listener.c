/*
 * listener.c - opening listening sockets. Everything here happens at start
 * (before privileges are dropped, so ports below 1024 work) and reports
 * failures as log lines that name the address and the listener.
 */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemonize.h"
#include "log.h"

#define LISTEN_BACKLOG 511

/* What a listener entry binds: its sockets are kept across a reload
 * exactly when this stays the same. A reuseport listener's copies are told
 * apart by the worker they serve; the first copy has the key of a shared
 * socket, so that turning reuseport on or off keeps that socket open. */
static char *socket_key(const pb_listener_conf *lc, int worker)
{
    char *key;
    int rc = lc->path ? asprintf(&key, "unix %s", lc->path)
           : worker > 0 ? asprintf(&key, "tcp %s %d #%d", lc->address, lc->port, worker)
                        : asprintf(&key, "tcp %s %d", lc->address, lc->port);
    return rc < 0 ? NULL : key;
}

/* The sockets a configuration asks for: one per listener entry, or one per
 * worker for a reuseport entry (worker is then its place in the
 * generation, and -1 for a shared socket). */
typedef struct wanted {
    const pb_listener_conf *lc;
    int worker;
    char *key;
} wanted;

static void wanted_free(wanted *w, size_t n)
{
    for (size_t i = 0; w != NULL && i < n; i++)
        free(w[i].key);
    free(w);
}

static wanted *wanted_sockets(const pb_config *config, int workers, size_t *count)
{
    size_t n = 0;
    if (workers < 1)
        workers = 1;
    for (size_t i = 0; i < config->n_listeners; i++)
        n += config->listeners[i].reuseport ? (size_t)workers : 1;
    wanted *w = calloc(n + 1, sizeof *w);
    if (w == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < config->n_listeners; i++) {
        const pb_listener_conf *lc = &config->listeners[i];
        int copies = lc->reuseport ? workers : 1;
        for (int c = 0; c < copies; c++, k++) {
            w[k].lc = lc;
            w[k].worker = lc->reuseport ? c : -1;
            w[k].key = socket_key(lc, w[k].worker);
            if (w[k].key == NULL) {
                wanted_free(w, k);
                return NULL;
            }
        }
    }
    *count = n;
    return w;
}

static void listener_free(pb_listener *l);

/* A copy of lc's allow-list into *allow (NULL for none). 0 or -1. */
static int copy_allow(const pb_listener_conf *lc, pb_cidr **allow)
{
    *allow = NULL;
    if (lc->n_allow == 0)
        return 0;
    *allow = malloc(lc->n_allow * sizeof **allow);
    if (*allow == NULL)
        return -1;
    memcpy(*allow, lc->allow, lc->n_allow * sizeof **allow);
    return 0;
}

static pb_listener *listener_new(const pb_listener_conf *lc, int worker, int fd,
                                 const char *address, const char *unix_path)
{
    pb_listener *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    l->fd = fd;
    l->owner = getpid();
    l->framing = lc->framing;
    l->name = strdup(lc->name);
    l->address = strdup(address);
    l->unix_path = unix_path ? strdup(unix_path) : NULL;
    l->pinned = lc->plugin ? strdup(lc->plugin) : NULL;
    l->key = socket_key(lc, worker);
    l->worker = worker;
    l->reuseport = lc->reuseport;
    l->n_allow = lc->n_allow;
    if (l->name == NULL || l->address == NULL || l->key == NULL ||
        (unix_path && l->unix_path == NULL) || (lc->plugin && l->pinned == NULL) ||
        copy_allow(lc, &l->allow) != 0) {
        l->fd = -1;     /* the caller still owns the socket */
        listener_free(l);
        return NULL;
    }
    return l;
}

static void listener_stop(pb_listener *l)
{
    if (l->fd < 0)
        return;
    close(l->fd);
    l->fd = -1;
    if (l->unix_path != NULL && l->owner == getpid())
        unlink(l->unix_path);
}

static void listener_free(pb_listener *l)
{
    listener_stop(l);
    free(l->name);
    free(l->address);
    free(l->unix_path);
    free(l->pinned);
    free(l->allow);
    free(l->key);
    free(l);
}

static int set_add(pb_listener_set *set, pb_listener *l)
{
    pb_listener **items = realloc(set->items, (set->count + 1) * sizeof *items);
    if (items == NULL)
        return -1;
    set->items = items;
    set->items[set->count++] = l;
    return 0;
}

static void format_address(const struct sockaddr *sa, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(buf, size, "%s:%d", host, port);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(buf, size, "[%s]:%d", host, port);
    }
}

/* Binds lc's address; worker >= 0 makes it that worker's SO_REUSEPORT
 * copy. */
static int open_tcp(pb_listener_set *set, const pb_listener_conf *lc, int worker)
{
    struct addrinfo hints = { 0 }, *res, *ai;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", lc->port);
    int rc = getaddrinfo(lc->address, port, &hints, &res);
    if (rc != 0) {
        pb_log_error("listener %s: cannot resolve \"%s\": %s", lc->name,
                     lc->address, gai_strerror(rc));
        return -1;
    }
    int bound = 0, failed = 0;
    size_t first = set->count;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        char address[INET6_ADDRSTRLEN + 16];
        format_address(ai->ai_addr, address, sizeof address);
        /* Resolvers may list an address twice (/etc/hosts and DNS). */
        int duplicate = 0;
        for (size_t i = first; i < set->count; i++)
            if (strcmp(set->items[i]->address, address) == 0)
                duplicate = 1;
        if (duplicate)
            continue;

        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            pb_log_error("cannot listen on %s (listener %s): socket: %s",
                         address, lc->name, strerror(errno));
            failed = 1;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (lc->reuseport &&
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
            pb_log_error("cannot listen on %s (listener %s): SO_REUSEPORT: %s",
                         address, lc->name, strerror(errno));
            close(fd);
            failed = 1;
            continue;
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
            listen(fd, LISTEN_BACKLOG) != 0) {
            /* The packaged service runs without root: say what it takes. */
            int privileged = errno == EACCES && lc->port < 1024;
            pb_log_error("cannot listen on %s (listener %s): %s%s", address,
                         lc->name, strerror(errno),
                         privileged ? "; a port below 1024 needs root or "
                                      "CAP_NET_BIND_SERVICE (see plugboard(8))"
                                    : "");
            close(fd);
            failed = 1;
            continue;
        }
        pb_listener *l = listener_new(lc, worker, fd, address, NULL);
        if (l == NULL || set_add(set, l) != 0) {
            pb_log_error("cannot listen on %s (listener %s): out of memory",
                         address, lc->name);
            if (l != NULL)
                listener_free(l);
            else
                close(fd);
            failed = 1;
            continue;
        }
        bound++;
    }
    freeaddrinfo(res);
    return (failed || bound == 0) ? -1 : 0;
}

/* A socket file left by a daemon that died is removed; one that still
 * answers belongs to a running daemon and is left alone. */
static int clear_stale_socket(const pb_listener_conf *lc, const struct sockaddr_un *sun)
{
    struct stat st;
    if (lstat(lc->path, &st) != 0)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        pb_log_error("cannot listen on %s (listener %s): the file exists "
                     "and is not a socket", lc->path, lc->name);
        return -1;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return -1;
    int alive = connect(probe, (const struct sockaddr *)sun, sizeof *sun) == 0;
    close(probe);
    if (alive) {
        pb_log_error("cannot listen on %s (listener %s): another process "
                     "is listening on it", lc->path, lc->name);
        return -1;
    }
    unlink(lc->path);
    return 0;
}

/* Started as root with a user or group to drop to: the socket belongs to
 * them, so that its mode means what the operator wrote. */
static int chown_socket(const pb_config *config, const pb_listener_conf *lc)
{
    if (geteuid() != 0 || (config->user == NULL && config->group == NULL))
        return 0;
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    struct passwd *pw = config->user ? getpwnam(config->user) : NULL;
    struct group *gr = config->group ? getgrnam(config->group) : NULL;
    if (pw != NULL) {
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    if (gr != NULL)
        gid = gr->gr_gid;
    if (chown(lc->path, uid, gid) != 0) {
        pb_log_error("cannot listen on %s (listener %s): chown: %s", lc->path,
                     lc->name, strerror(errno));
        return -1;
    }
    return 0;
}

static int open_unix(pb_listener_set *set, const pb_config *config,
                     const pb_listener_conf *lc)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(lc->path) >= sizeof sun.sun_path) {
        pb_log_error("cannot listen on %s (listener %s): path longer than "
                     "%zu bytes", lc->path, lc->name, sizeof sun.sun_path - 1);
        return -1;
    }
    strcpy(sun.sun_path, lc->path);

    if (pb_runtime_dir_create(lc->path) != 0) {
        pb_log_error("cannot listen on %s (listener %s): cannot create its "
                     "directory: %s", lc->path, lc->name, strerror(errno));
        return -1;
    }

    if (clear_stale_socket(lc, &sun) != 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        pb_log_error("cannot listen on %s (listener %s): %s", lc->path,
                     lc->name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if ((lc->mode >= 0 && chmod(lc->path, (mode_t)lc->mode) != 0) ||
        chown_socket(config, lc) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        pb_log_error("cannot listen on %s (listener %s): %s", lc->path,
                     lc->name, strerror(errno));
        close(fd);
        unlink(lc->path);
        return -1;
    }
    pb_listener *l = listener_new(lc, -1, fd, lc->path, lc->path);
    if (l == NULL || set_add(set, l) != 0) {
        pb_log_error("cannot listen on %s (listener %s): out of memory",
                     lc->path, lc->name);
        if (l != NULL)
            listener_free(l);
        else {
            close(fd);
            unlink(lc->path);
        }
        return -1;
    }
    return 0;
}

int pb_listeners_check(const pb_config *config, pb_diag *diag)
{
    int rc = 0;
    for (size_t i = 0; i < config->n_listeners; i++) {
        const pb_listener_conf *lc = &config->listeners[i];
        if (lc->path != NULL) {
            struct sockaddr_un sun;
            if (strlen(lc->path) >= sizeof sun.sun_path) {
                pb_diag_add(diag, lc->pos.file, lc->pos.line,
                            "listener %s: socket path longer than %zu bytes",
                            lc->name, sizeof sun.sun_path - 1);
                rc = -1;
            }
            continue;
        }
        struct addrinfo hints = { 0 }, *res;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        int gai = getaddrinfo(lc->address, NULL, &hints, &res);
        if (gai != 0) {
            pb_diag_add(diag, lc->pos.file, lc->pos.line,
                        "listener %s: cannot resolve \"%s\": %s", lc->name,
                        lc->address, gai_strerror(gai));
            rc = -1;
            continue;
        }
        freeaddrinfo(res);
    }
    return rc;
}

static int open_wanted(pb_listener_set *set, const pb_config *config,
                       const wanted *w)
{
    return w->lc->path ? open_unix(set, config, w->lc)
                       : open_tcp(set, w->lc, w->worker);
}

int pb_listeners_open(pb_listener_set *set, const pb_config *config, int workers)
{
    set->items = NULL;
    set->count = 0;
    size_t n;
    wanted *w = wanted_sockets(config, workers, &n);
    if (w == NULL) {
        pb_log_error("cannot listen: out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (open_wanted(set, config, &w[i]) != 0) {
            pb_listeners_close(set);
            wanted_free(w, n);
            return -1;
        }
    }
    wanted_free(w, n);
    return 0;
}

/* Takes the settings a reload may change on an open socket. */
static int apply_conf(pb_listener *l, const pb_listener_conf *lc)
{
    char *name = strdup(lc->name);
    char *pinned = lc->plugin ? strdup(lc->plugin) : NULL;
    pb_cidr *allow;
    if (name == NULL || (lc->plugin && pinned == NULL) || copy_allow(lc, &allow) != 0) {
        free(name);
        free(pinned);
        return -1;
    }
    free(l->name);
    l->name = name;
    free(l->pinned);
    l->pinned = pinned;
    free(l->allow);
    l->allow = allow;
    l->n_allow = lc->n_allow;
    l->framing = lc->framing;
    /* Only a mode that changed is set again: a master without CAP_FOWNER
     * (a service's capability set) may not chmod a socket it gave away. */
    struct stat st;
    if (l->unix_path != NULL && lc->mode >= 0 && l->owner == getpid() &&
        (stat(l->unix_path, &st) != 0 || (st.st_mode & 07777) != (mode_t)lc->mode) &&
        chmod(l->unix_path, (mode_t)lc->mode) != 0)
        pb_log_warning("listener %s: cannot change the mode of %s: %s",
                       lc->name, l->unix_path, strerror(errno));
    return 0;
}

/* The entry of config that l's socket belongs to: the same key, ignoring
 * which worker's copy it is. */
static const pb_listener_conf *find_conf(const pb_config *config,
                                         const pb_listener *l)
{
    for (size_t i = 0; i < config->n_listeners; i++) {
        const pb_listener_conf *lc = &config->listeners[i];
        char *k = socket_key(lc, l->worker);
        int same = k != NULL && strcmp(k, l->key) == 0;
        free(k);
        if (same)
            return lc;
    }
    return NULL;
}

int pb_listeners_differ(const pb_listener_set *set, const pb_config *config,
                        int workers)
{
    size_t n;
    wanted *w = wanted_sockets(config, workers, &n);
    if (w == NULL)
        return 1;
    int differ = 0;
    for (size_t i = 0; i < set->count && !differ; i++) {
        const pb_listener *l = set->items[i];
        int found = 0;
        for (size_t k = 0; k < n; k++)
            found |= strcmp(w[k].key, l->key) == 0 && w[k].worker == l->worker;
        differ = !found;
    }
    for (size_t k = 0; k < n && !differ; k++) {
        int found = 0;
        for (size_t i = 0; i < set->count; i++)
            found |= strcmp(set->items[i]->key, w[k].key) == 0;
        differ = !found;
    }
    wanted_free(w, n);
    return differ;
}

int pb_listeners_update(pb_listener_set *set, const pb_config *config)
{
    for (size_t i = 0; i < set->count; i++) {
        const pb_listener_conf *lc = find_conf(config, set->items[i]);
        if (lc != NULL && apply_conf(set->items[i], lc) != 0)
            return -1;
    }
    return 0;
}

/* A socket kept for a reuseport entry: SO_REUSEPORT is set on it before
 * the other workers' copies are bound next to it (as nginx does), so a
 * shared socket becomes the first worker's copy without closing. A copy
 * kept as a shared socket keeps the option, harmlessly, once alone. */
static int keep_socket(pb_listener *l, const wanted *w)
{
    int one = 1;
    if (w->lc->reuseport && !l->reuseport) {
        if (setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
            pb_log_error("cannot listen on %s (listener %s): SO_REUSEPORT: %s",
                         l->address, w->lc->name, strerror(errno));
            return -1;
        }
        l->reuseport = 1;
    }
    return 0;
}

int pb_listeners_reopen(pb_listener_set *set, const pb_config *config, int workers)
{
    pb_listener_set next = { NULL, 0 };
    size_t n;
    wanted *w = wanted_sockets(config, workers, &n);
    char *kept = calloc(set->count + 1, 1);
    int *worker = calloc(set->count + 1, sizeof *worker);
    if (w == NULL || kept == NULL || worker == NULL) {
        if (w != NULL)
            wanted_free(w, n);
        free(kept);
        free(worker);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int found = 0;
        for (size_t j = 0; j < set->count && rc == 0; j++) {
            if (!kept[j] && strcmp(set->items[j]->key, w[i].key) == 0) {
                kept[j] = 1;
                worker[j] = w[i].worker;
                found = 1;
                if (keep_socket(set->items[j], &w[i]) != 0 ||
                    set_add(&next, set->items[j]) != 0)
                    rc = -1;
            }
        }
        if (!found && rc == 0)
            rc = open_wanted(&next, config, &w[i]);
    }
    wanted_free(w, n);
    if (rc != 0) {
        /* Give back the sockets that stay; close only the new ones. */
        for (size_t i = 0; i < next.count; i++) {
            int reused = 0;
            for (size_t j = 0; j < set->count; j++)
                reused |= next.items[i] == set->items[j];
            if (!reused)
                listener_free(next.items[i]);
        }
        free(next.items);
        free(kept);
        free(worker);
        return -1;
    }
    for (size_t j = 0; j < set->count; j++) {
        if (!kept[j])
            listener_free(set->items[j]);
        else
            set->items[j]->worker = worker[j];
    }
    free(kept);
    free(worker);
    free(set->items);
    *set = next;
    return pb_listeners_update(set, config);
}

void pb_listeners_stop(pb_listener_set *set)
{
    for (size_t i = 0; i < set->count; i++)
        listener_stop(set->items[i]);
}

void pb_listeners_close(pb_listener_set *set)
{
    for (size_t i = 0; i < set->count; i++)
        listener_free(set->items[i]);
    free(set->items);
    set->items = NULL;
    set->count = 0;
}

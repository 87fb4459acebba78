/*
 * server.c - the event loop of one worker: accepting on the listeners
 * (and refusing past max_connections; an http listener's sockets go to
 * its HTTP server, http.c), the idle sweep, the master's
 * commands (apply a configuration, retire) and the graceful stop on
 * SIGTERM/SIGINT.
 */
#include "server.h"

#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buffer.h"
#include "bus.h"
#include "connection.h"
#include "control.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "plugin_host.h"
#include "reply.h"

/* After EMFILE/ENFILE the pending connection cannot be accepted; polling
 * the listener again at once would spin, so accepting pauses this long. */
#define ACCEPT_PAUSE_SECONDS 0.1
#define ACCEPTS_PER_WAKEUP 64

/* The entry of config's listeners named name (names are unique). */
static size_t listener_conf(const pb_config *config, const char *name)
{
    size_t i = 0;
    while (i < config->n_listeners && strcmp(config->listeners[i].name, name) != 0)
        i++;
    return i;
}

/* Derives this worker's view of cycle: for each listener the instance it
 * is pinned to, its config entry and TLS context, and the counters the
 * listeners, instances and routes count into. -1 and the view unchanged
 * when out of memory. */
static int bind_cycle(pb_server *s, const pb_cycle *cycle)
{
    pb_listener_view *views = calloc(s->listeners.count + 1, sizeof *views);
    int *instance_stats = calloc(cycle->n_instances + 1, sizeof *instance_stats);
    int *route_stats = calloc(cycle->router.n_routes + 1, sizeof *route_stats);
    if (views == NULL || instance_stats == NULL || route_stats == NULL) {
        free(views);
        free(instance_stats);
        free(route_stats);
        return -1;
    }
    for (size_t i = 0; i < s->listeners.count; i++) {
        const pb_listener *l = s->listeners.items[i];
        views[i].pinned = l->pinned ? pb_cycle_instance(cycle, l->pinned) : NULL;
        views[i].conf = listener_conf(cycle->config, l->name);
        if (views[i].conf < cycle->config->n_listeners)
            views[i].tls = cycle->tls[views[i].conf];
    }
    /* A reload may rename a listener: its connections count under the
     * new name from now on. */
    for (size_t i = 0; i < s->listeners.count; i++) {
        pb_listener *l = s->listeners.items[i];
        if (l->framing == PB_HTTP
            && pb_http_bind(&l->http, s, l, cycle, views[i].conf) != 0) {
            free(views);
            free(instance_stats);
            free(route_stats);
            return -1;
        }
        l->stats = pb_stats_listener_index(s->shared, s->slot, l->name);
    }
    pb_stats_rebind(s->shared, s->slot);
    for (size_t i = 0; i < cycle->n_instances; i++)
        instance_stats[i] = pb_stats_instance_index(s->shared, s->slot,
                                                    cycle->instances[i]->name,
                                                    cycle->instances[i]->module.name);
    for (size_t i = 0; i < cycle->router.n_routes; i++)
        route_stats[i] = pb_stats_index(s->shared, s->slot, PB_STATS_ROUTES,
                                        cycle->router.routes[i].name);
    free(s->views);
    free(s->instance_stats);
    free(s->route_stats);
    s->views = views;
    s->instance_stats = instance_stats;
    s->route_stats = route_stats;
    return 0;
}

static void pause_accepting(pb_server *s);

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    pb_listener *l = (pb_listener *)w;
    pb_server *s = l->server;
    const pb_limits *limits = &s->cycle->config->limits;

    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof peer;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &peer_len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            static pb_log_limit limit = PB_LOG_LIMIT(10.0, 5);
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                pb_log_limited(&limit, PB_LOG_WARNING,
                               "cannot accept on %s: %s; pausing accepts",
                               l->address, strerror(errno));
                pause_accepting(s);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                pb_log_limited(&limit, PB_LOG_WARNING, "cannot accept on %s: %s",
                               l->address, strerror(errno));
            }
            return;
        }
        if (l->n_allow > 0 && !pb_cidr_match(l->allow, l->n_allow,
                                             (const struct sockaddr *)&peer)) {
            /* Closed before a byte is read: a peer outside the list learns
             * nothing of the protocol behind the port. */
            static pb_log_limit refused = PB_LOG_LIMIT(10.0, 5);
            pb_log_limited(&refused, PB_LOG_DEBUG,
                           "refusing a peer on %s: not in its allow list",
                           l->address);
            pb_count(&s->shared->slots[s->slot].refused_allow, 1);
            close(fd);
            continue;
        }
        if (!pb_shared_take_connection(s->shared, s->slot,
                                       limits->max_connections)) {
            pb_log_debug("refusing a connection on %s: max_connections (%lld) reached",
                         l->address, limits->max_connections);
            pb_count(&s->shared->slots[s->slot].errors[PB_ERR_BUSY], 1);
            pb_conn_refuse(l, fd, PB_ERR_BUSY,
                           "too many connections, try again later");
            continue;
        }
        if (l->unix_path == NULL) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        if (l->framing != PB_HTTP) {
            pb_conn_open(s, l, fd);
        } else if (l->http != NULL) {
            pb_http_open(l->http, fd, (const struct sockaddr *)&peer, peer_len);
        } else {
            /* Its server could not start when a reload made it http. */
            pb_shared_release_connection(s->shared, s->slot);
            close(fd);
        }
    }
}

/* Every shared socket, and of a reuseport listener's copies only this
 * worker's: the others queue connections for their own workers. */
static void start_accepting(pb_server *s)
{
    for (size_t i = 0; i < s->listeners.count; i++) {
        pb_listener *l = s->listeners.items[i];
        if (l->worker < 0 || l->worker == s->index)
            ev_io_start(s->loop, &l->watcher);
    }
}

static void stop_accepting(pb_server *s)
{
    for (size_t i = 0; i < s->listeners.count; i++)
        ev_io_stop(s->loop, &s->listeners.items[i]->watcher);
}

static void on_accept_pause_end(struct ev_loop *loop, ev_timer *w, int revents)
{
    pb_server *s = w->data;
    if (!s->stopping && !s->retiring)
        start_accepting(s);
}

static void pause_accepting(pb_server *s)
{
    stop_accepting(s);
    ev_timer_stop(s->loop, &s->accept_pause);
    ev_timer_init(&s->accept_pause, on_accept_pause_end, ACCEPT_PAUSE_SECONDS, 0.0);
    s->accept_pause.data = s;
    ev_timer_start(s->loop, &s->accept_pause);
}

static void on_idle_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    pb_server *s = w->data;
    pb_conn_expire_idle(s);
    /* A burst (a flood of peers, deep pipelines of large messages) leaves
     * freed memory that the allocator keeps; once the worker has nothing
     * open, hand it back to the system rather than sit on the peak. */
    if (s->n_connections == 0 && !s->trimmed) {
        pb_buf_pool_drain();
        pb_conn_pool_drain();
        malloc_trim(0);
        s->trimmed = 1;
    } else if (s->n_connections > 0) {
        s->trimmed = 0;
    }
}

/* A stopping worker keeps an HTTP connection that waits for a request
 * open while anything else is (a health check on it answers 503), then
 * closes it. */
static void close_idle_http(pb_server *s)
{
    size_t idle = 0;
    for (size_t i = 0; i < s->listeners.count; i++)
        idle += pb_http_idle(s->listeners.items[i]->http);
    if (idle == 0 || idle < s->n_connections)
        return;
    for (size_t i = 0; i < s->listeners.count; i++)
        pb_http_close_idle(s->listeners.items[i]->http);
}

static void check_stopped(pb_server *s)
{
    if (s->stopping)
        close_idle_http(s);
    if ((s->stopping || s->retiring) && s->n_connections == 0)
        ev_break(s->loop, EVBREAK_ALL);
}

static void on_shutdown_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    pb_server *s = w->data;
    if (s->n_connections > 0)
        pb_log_warning("shutdown_timeout reached: closing %zu connections",
                       s->n_connections);
    while (s->oldest)
        pb_conn_close(s->oldest);
    pb_conn_pool_drain();
    ev_break(loop, EVBREAK_ALL);
}

static void on_stop_check(struct ev_loop *loop, ev_prepare *w, int revents)
{
    check_stopped(w->data);
}

static void begin_stop(pb_server *s, const char *signame)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    pb_log_info("worker %d: %s received, stopping (%zu connections open)",
                s->slot, signame, s->n_connections);
    stop_accepting(s);
    ev_timer_stop(s->loop, &s->accept_pause);
    pb_listeners_stop(&s->listeners);

    pb_conns_shutdown(s);
    ev_timer_init(&s->shutdown_timer, on_shutdown_timeout,
                  s->cycle->config->limits.shutdown_timeout, 0.0);
    s->shutdown_timer.data = s;
    ev_timer_start(s->loop, &s->shutdown_timer);
    ev_prepare_start(s->loop, &s->stop_check);
    check_stopped(s);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    begin_stop(w->data, w->signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* A new generation of workers took over the listeners: accept no more,
 * serve what is open, and leave when the last connection closes. */
static void retire(pb_server *s)
{
    if (s->stopping || s->retiring)
        return;
    s->retiring = 1;
    pb_log_info("worker %d: retiring, %zu connections open", s->slot,
                s->n_connections);
    stop_accepting(s);
    ev_timer_stop(s->loop, &s->accept_pause);
    pb_listeners_stop(&s->listeners);
    ev_prepare_start(s->loop, &s->stop_check);
    check_stopped(s);
}

/* Builds the configuration the master checked, from the text and TLS
 * files it sent, and keeps it until the master says every worker has one:
 * the outcome goes to the master through shared memory, and a worker that
 * fails is replaced. */
static void prepare(pb_server *s, unsigned long serial, const char *packed,
                    size_t len)
{
    pb_worker_config *mine = &s->shared->configs[s->slot];
    pb_cycle_free(s->prepared);
    s->prepared = NULL;
    pb_diag diag = PB_DIAG_INIT;
    pb_cycle *cycle = pb_cycle_unpack(s->config_path, (const unsigned char *)packed,
                                      len, &diag);
    if (cycle != NULL && pb_cycle_start(cycle, NULL, NULL, &diag) != 0) {
        pb_cycle_free(cycle);
        cycle = NULL;
    }
    pb_diag_log(&diag);
    pb_diag_free(&diag);
    if (cycle != NULL && pb_cycle_serve(cycle) != 0) {
        pb_cycle_free(cycle);
        cycle = NULL;
    }
    if (cycle == NULL) {
        /* A worker that cannot serve the new configuration takes no new
         * connection: the master starts one that can. */
        pb_log_error("worker %d: cannot apply the new configuration; "
                     "retiring with the running one", s->slot);
        atomic_store(&mine->failed, serial);
        retire(s);
        return;
    }
    s->prepared = cycle;
    s->prepared_serial = serial;
    atomic_store(&mine->prepared, serial);
}

static void commit(pb_server *s, unsigned long serial)
{
    if (s->prepared == NULL || s->prepared_serial != serial)
        return;
    if (pb_listeners_update(&s->listeners, s->prepared->config) != 0 ||
        bind_cycle(s, s->prepared) != 0) {
        pb_log_error("worker %d: out of memory applying the configuration", s->slot);
        return;
    }
    pb_cycle *old = s->cycle;
    s->cycle = s->prepared;
    s->prepared = NULL;
    pb_log_apply(s->cycle->config);
    pb_cycle_retire(old);
    atomic_store(&s->shared->configs[s->slot].serving, serial);
    pb_log_info("worker %d: serving the new configuration", s->slot);
}

/* Runs after every poll, before the events it found are handled: once the
 * master has committed the prepared configuration (and counted the reload),
 * no event of this worker is handled by the old one, whether or not the
 * commit command has been read yet. */
static void on_switch_check(struct ev_loop *loop, ev_check *w, int revents)
{
    pb_server *s = w->data;
    if (s->prepared != NULL &&
        atomic_load(&s->shared->committed) == s->prepared_serial)
        commit(s, s->prepared_serial);
}

static void on_control(struct ev_loop *loop, ev_io *w, int revents)
{
    pb_server *s = w->data;
    pb_control_command command;
    unsigned long serial = 0;
    char *text = NULL;
    size_t len = 0;
    int got;
    while ((got = pb_control_receive(w->fd, &command, &serial, &text, &len)) > 0) {
        if (command == PB_CONTROL_PREPARE)
            prepare(s, serial, text, len);
        else if (command == PB_CONTROL_COMMIT)
            commit(s, serial);
        else if (command == PB_CONTROL_RETIRE)
            retire(s);
        /* It may have carried private keys. */
        if (text != NULL)
            explicit_bzero(text, len);
        free(text);
        text = NULL;
    }
    if (got < 0) {
        /* The master is gone (the parent-death signal stops this worker)
         * or sent what cannot be read: stop listening to it. */
        ev_io_stop(loop, w);
    }
}

/* The broadcast service: to every other worker, and to this one while a
 * reload left older copies of instances serving here. */
static int send_broadcast(pb_instance *origin, const void *data, size_t length)
{
    return pb_bus_send(origin->name, origin, data, length,
                       pb_cycle_any_retired());
}

static void deliver_broadcast(void *arg, const char *name, size_t name_length,
                              const void *origin, long sender,
                              const void *data, size_t length)
{
    pb_server *s = arg;
    pb_cycle_deliver(s->cycle, name, name_length,
                     sender == (long)getpid() ? origin : NULL, data, length);
}

int pb_server_init(pb_server *s, pb_cycle *cycle, const char *config_path,
                   pb_listener_set *listeners, int control_fd,
                   pb_shared *shared, int slot, int index)
{
    s->cycle = cycle;
    s->prepared = NULL;
    s->views = NULL;
    s->instance_stats = s->route_stats = NULL;
    s->config_path = config_path;
    s->listeners = *listeners;
    listeners->items = NULL;
    listeners->count = 0;
    s->shared = shared;
    s->slot = slot;
    s->index = index;
    s->oldest = s->newest = NULL;
    s->n_connections = 0;
    s->stopping = 0;
    s->retiring = 0;
    s->trimmed = 0;
    ev_io_init(&s->control, on_control, control_fd, EV_READ);
    s->control.data = s;
    s->loop = ev_default_loop(EVFLAG_AUTO);
    if (s->loop == NULL) {
        pb_log_error("cannot initialise the event loop");
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Plugin threads may build buffers too; the pool is the loop's. */
    pb_buf_pool_claim();
    pb_conns_init(s->loop);
    pb_replies_set_stats(&shared->slots[slot]);
    pb_plugin_host_set_loop(s->loop);
    pb_plugin_host_set_shared(shared, slot);
    if (pb_bus_attach(slot, s->loop, deliver_broadcast, s) == 0)
        pb_plugin_host_set_broadcast(send_broadcast);
    /* The check passed, so creating fails only when something changed
     * since (a data file, a module); the master restarts the worker,
     * backing off. */
    pb_diag diag = PB_DIAG_INIT;
    int started = pb_cycle_start(s->cycle, NULL, NULL, &diag);
    pb_diag_log(&diag);
    pb_diag_free(&diag);
    if (started != 0 || pb_cycle_serve(s->cycle) != 0) {
        pb_log_error("worker %d: cannot start its plugins", s->slot);
        return -1;
    }
    for (size_t i = 0; i < s->listeners.count; i++) {
        pb_listener *l = s->listeners.items[i];
        l->server = s;
        l->index = i;
        ev_io_init(&l->watcher, on_accept, l->fd, EV_READ);
    }
    if (bind_cycle(s, s->cycle) != 0) {
        pb_log_error("worker %d: out of memory", s->slot);
        return -1;
    }

    ev_signal_init(&s->sig_term, on_stop_signal, SIGTERM);
    ev_signal_init(&s->sig_int, on_stop_signal, SIGINT);
    s->sig_term.data = s->sig_int.data = s;
    ev_signal_start(s->loop, &s->sig_term);
    ev_signal_start(s->loop, &s->sig_int);
    ev_io_start(s->loop, &s->control);

    ev_timer_init(&s->idle_timer, on_idle_timer, 1.0, 1.0);
    s->idle_timer.data = s;
    ev_timer_start(s->loop, &s->idle_timer);
    ev_init(&s->shutdown_timer, on_shutdown_timeout);
    ev_init(&s->accept_pause, on_accept_pause_end);
    ev_prepare_init(&s->stop_check, on_stop_check);
    ev_check_init(&s->switch_check, on_switch_check);
    s->switch_check.data = s;
    ev_check_start(s->loop, &s->switch_check);
    /* It alone must not keep the loop running. */
    ev_unref(s->loop);
    s->stop_check.data = s;
    return 0;
}

void pb_server_run(pb_server *s)
{
    start_accepting(s);
    ev_run(s->loop, 0);
    pb_log_info("worker %d: stopped", s->slot);
}

void pb_server_free(pb_server *s)
{
    while (s->oldest)
        pb_conn_close(s->oldest);
    pb_conn_pool_drain();
    for (size_t i = 0; i < s->listeners.count; i++) {
        pb_http_free(s->listeners.items[i]->http);
        s->listeners.items[i]->http = NULL;
    }
    if (s->loop != NULL) {
        ev_timer_stop(s->loop, &s->idle_timer);
        ev_timer_stop(s->loop, &s->shutdown_timer);
        ev_timer_stop(s->loop, &s->accept_pause);
        ev_prepare_stop(s->loop, &s->stop_check);
        ev_ref(s->loop);
        ev_check_stop(s->loop, &s->switch_check);
        ev_signal_stop(s->loop, &s->sig_term);
        ev_signal_stop(s->loop, &s->sig_int);
        ev_io_stop(s->loop, &s->control);
    }
    if (s->control.fd >= 0)
        close(s->control.fd);
    s->control.fd = -1;
    pb_listeners_close(&s->listeners);
    pb_cycle_free(s->cycle);
    s->cycle = NULL;
    pb_cycle_free(s->prepared);
    s->prepared = NULL;
    pb_cycle_free_retired();
    pb_plugin_host_set_broadcast(NULL);
    pb_bus_detach();
    pb_replies_cleanup();
    free(s->views);
    free(s->instance_stats);
    free(s->route_stats);
    s->views = NULL;
    s->instance_stats = s->route_stats = NULL;
    if (s->loop != NULL)
        ev_loop_destroy(s->loop);
    s->loop = NULL;
}

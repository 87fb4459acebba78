/*
 * cycle.c - building a configuration cycle: parse and check the file, then,
 * where plugin code may run, create every plugin instance and resolve
 * routes to instances. Nothing is half-built: either the whole cycle
 * exists or none of it.
 */
#include "cycle.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_loader.h"

const char *pb_default_plugin_dir(void)
{
    const char *dir = getenv("PLUGBOARD_PLUGIN_DIR");
    return (dir != NULL && *dir != '\0') ? dir : PB_PLUGIN_DIR;
}

pb_cycle *pb_cycle_read(const char *path, pb_diag *diag)
{
    char *text;
    size_t len;
    if (pb_config_read(path, &text, &len, diag) != 0)
        return NULL;
    pb_cycle *cycle = pb_cycle_parse(path, text, len, diag);
    free(text);
    if (cycle != NULL &&
        pb_tls_files_read(&cycle->tls_files, cycle->config, diag) != 0) {
        pb_cycle_free(cycle);
        return NULL;
    }
    return cycle;
}

int pb_cycle_pack(const pb_cycle *cycle, pb_buf *out)
{
    if (pb_tls_files_pack(&cycle->tls_files, out) != 0 ||
        pb_buf_append(out, cycle->text, cycle->text_len) != 0)
        return -1;
    return 0;
}

pb_cycle *pb_cycle_unpack(const char *path, const unsigned char *data,
                          size_t len, pb_diag *diag)
{
    pb_tls_files files;
    size_t used;
    if (pb_tls_files_unpack(&files, data, len, &used) != 0) {
        pb_diag_add(diag, path, 0, "the configuration sent by the master is "
                    "truncated, or out of memory");
        return NULL;
    }
    pb_cycle *cycle = pb_cycle_parse(path, (const char *)data + used, len - used, diag);
    if (cycle == NULL) {
        pb_tls_files_free(&files);
        return NULL;
    }
    cycle->tls_files = files;
    return cycle;
}

/* A context for each TLS listener; every broken one is reported. */
static int start_tls(pb_cycle *cycle, pb_diag *diag)
{
    const pb_config *config = cycle->config;
    cycle->tls = calloc(config->n_listeners, sizeof *cycle->tls);
    if (cycle->tls == NULL) {
        pb_diag_add(diag, config->path, 0, "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < config->n_listeners; i++) {
        if (config->listeners[i].tls == NULL)
            continue;
        cycle->tls[i] = pb_tls_context_new(&config->listeners[i],
                                           &cycle->tls_files, diag);
        if (cycle->tls[i] == NULL)
            rc = -1;
    }
    return rc;
}

static void stop_tls(pb_cycle *cycle)
{
    if (cycle->tls == NULL)
        return;
    /* Connections still in TLS hold their own reference to the context. */
    for (size_t i = 0; i < cycle->config->n_listeners; i++)
        SSL_CTX_free(cycle->tls[i]);
    free(cycle->tls);
    cycle->tls = NULL;
}

pb_cycle *pb_cycle_parse(const char *path, const char *text, size_t len,
                         pb_diag *diag)
{
    pb_cycle *cycle = calloc(1, sizeof *cycle);
    if (cycle == NULL || (cycle->text = malloc(len + 1)) == NULL) {
        free(cycle);
        pb_diag_add(diag, path, 0, "out of memory");
        return NULL;
    }
    memcpy(cycle->text, text, len);
    cycle->text[len] = '\0';
    cycle->text_len = len;
    if (pb_config_parse(path, cycle->text, len, pb_default_plugin_dir(),
                        &cycle->config, diag) != 0) {
        free(cycle->text);
        free(cycle);
        return NULL;
    }
    return cycle;
}

int pb_cycle_start(pb_cycle *cycle, pb_cycle_step *step, void *arg,
                   pb_diag *diag)
{
    const pb_config *config = cycle->config;
    /* Create every instance even after one failed, so that one run of
     * `plugboard -t` names every broken plugin and certificate. */
    int failed = start_tls(cycle, diag) != 0;
    if (config->n_plugins > 0) {
        cycle->instances = calloc(config->n_plugins, sizeof *cycle->instances);
        if (cycle->instances == NULL) {
            pb_diag_add(diag, config->path, 0, "out of memory");
            stop_tls(cycle);
            return -1;
        }
    }
    for (size_t i = 0; i < config->n_plugins; i++) {
        if (step != NULL)
            step(arg, i, "create");
        pb_instance *instance =
            pb_instance_create(&config->plugins[i], config->dir, diag);
        if (instance == NULL) {
            failed = 1;
            continue;
        }
        instance->index = cycle->n_instances;
        cycle->instances[cycle->n_instances++] = instance;
    }
    if (!failed && pb_router_build(&cycle->router, cycle) != 0) {
        pb_diag_add(diag, config->path, 0, "out of memory");
        failed = 1;
    }
    if (failed) {
        pb_cycle_stop(cycle, step, arg);
        return -1;
    }
    return 0;
}

void pb_cycle_stop(pb_cycle *cycle, pb_cycle_step *step, void *arg)
{
    pb_router_free(&cycle->router);
    for (size_t i = cycle->n_instances; i > 0; i--) {
        pb_instance *instance = cycle->instances[i - 1];
        if (step != NULL)
            step(arg, (size_t)(instance->conf - cycle->config->plugins), "destroy");
        pb_instance_destroy(instance);
    }
    free(cycle->instances);
    cycle->instances = NULL;
    cycle->n_instances = 0;
    stop_tls(cycle);
}

pb_instance *pb_cycle_instance(const pb_cycle *cycle, const char *name)
{
    for (size_t i = 0; i < cycle->n_instances; i++)
        if (strcmp(cycle->instances[i]->name, name) == 0)
            return cycle->instances[i];
    return NULL;
}

void pb_cycle_free(pb_cycle *cycle)
{
    if (cycle == NULL)
        return;
    pb_cycle_stop(cycle, NULL, NULL);
    pb_config_free(cycle->config);
    pb_tls_files_free(&cycle->tls_files);
    free(cycle->text);
    free(cycle);
}

int pb_cycle_serve(pb_cycle *cycle)
{
    for (size_t i = 0; i < cycle->n_instances; i++) {
        if (pb_instance_serve(cycle->instances[i]) != 0) {
            while (i > 0)
                pb_instance_unserve(cycle->instances[--i]);
            return -1;
        }
    }
    return 0;
}

/* Retired cycles still held by replies in flight; how many, for threads
 * other than the loop's. */
static pb_cycle *retired;
static atomic_int n_retired;

void pb_cycle_hold(pb_cycle *cycle)
{
    cycle->holds++;
}

static void unlink_retired(pb_cycle *cycle)
{
    pb_cycle **p = &retired;
    while (*p != cycle)
        p = &(*p)->next_retired;
    *p = cycle->next_retired;
    atomic_fetch_sub(&n_retired, 1);
}

void pb_cycle_drop(pb_cycle *cycle)
{
    if (--cycle->holds == 0 && cycle->retired) {
        unlink_retired(cycle);
        pb_cycle_free(cycle);
    }
}

void pb_cycle_retire(pb_cycle *cycle)
{
    if (cycle == NULL)
        return;
    if (cycle->holds == 0) {
        pb_cycle_free(cycle);
        return;
    }
    cycle->retired = 1;
    cycle->next_retired = retired;
    retired = cycle;
    atomic_fetch_add(&n_retired, 1);
}

int pb_cycle_any_retired(void)
{
    return atomic_load(&n_retired) > 0;
}

static void deliver_in(const pb_cycle *cycle, const char *name,
                       size_t name_length, const void *except,
                       const void *data, size_t length)
{
    for (size_t i = 0; i < cycle->n_instances; i++) {
        pb_instance *instance = cycle->instances[i];
        if (instance != except && strncmp(instance->name, name, name_length) == 0
            && instance->name[name_length] == '\0')
            pb_instance_broadcast(instance, data, length);
    }
}

void pb_cycle_deliver(const pb_cycle *current, const char *name,
                      size_t name_length, const void *except,
                      const void *data, size_t length)
{
    deliver_in(current, name, name_length, except, data, length);
    /* An instance may let go of its last connection while it takes the
     * message, which would free its retired cycle under us: held
     * meanwhile, it goes only once the walk has moved past it. */
    pb_cycle *c = retired;
    while (c != NULL) {
        pb_cycle_hold(c);
        deliver_in(c, name, name_length, except, data, length);
        pb_cycle *next = c->next_retired;
        pb_cycle_drop(c);
        c = next;
    }
}

void pb_cycle_free_retired(void)
{
    while (retired != NULL) {
        pb_cycle *cycle = retired;
        retired = cycle->next_retired;
        atomic_fetch_sub(&n_retired, 1);
        /* Holds its instances give back while they stop must not free it
         * a second time. */
        cycle->retired = 0;
        pb_cycle_free(cycle);
    }
}

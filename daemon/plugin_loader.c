/*
 * plugin_loader.c - loading plugin modules. Everything that can be wrong
 * with a module (missing, unsafe permissions, not a plugin, another ABI, bad
 * settings) is found here, at start, on `plugboard -t` and before a reload
 * swaps anything, and reported against the config entry that named it.
 */
#include "plugin_loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* As root, a module anyone else can write is a way to run code as root. */
static int check_not_writable(const pb_plugin_conf *conf, const char *path,
                              const char *what, pb_diag *diag)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        pb_diag_add(diag, conf->pos.file, conf->pos.line,
                    "plugin %s: cannot read %s %s: %s", conf->name, what,
                    path, strerror(errno));
        return -1;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        pb_diag_add(diag, conf->pos.file, conf->pos.line,
                    "plugin %s: refusing %s %s: it is writable by %s "
                    "(running as root)", conf->name, what, path,
                    (st.st_mode & S_IWOTH) ? "others" : "its group");
        return -1;
    }
    return 0;
}

static int check_permissions(const pb_plugin_conf *conf, pb_diag *diag)
{
    if (geteuid() != 0)
        return 0;
    char *copy = strdup(conf->path);
    if (copy == NULL)
        return -1;
    int rc = check_not_writable(conf, conf->path, "module", diag);
    if (rc == 0)
        rc = check_not_writable(conf, dirname(copy), "plugin directory", diag);
    free(copy);
    return rc;
}

static int reject_settings(pb_instance *instance)
{
    const pb_plugin_conf *conf = instance->conf;
    const char *key = json_object_iter_key(json_object_iter(conf->settings));
    if (key == NULL)
        return 0;
    pb_conf_pos pos = pb_plugin_conf_position(
        conf, json_object_get(conf->settings, key));
    pb_diag_add(instance->diag, pos.file, pos.line,
                "plugin %s: unknown setting \"%s\" (%s takes no settings)",
                conf->name, key, instance->plugin->name);
    return -1;
}

static int run_create(pb_instance *instance)
{
    const pb_plugin *plugin = instance->plugin;
    if (plugin->create == NULL)
        return reject_settings(instance);

    size_t errors_before = instance->diag->count;
    int rc = plugin->create(&pb_host_services, instance,
                            (const pb_json *)instance->conf->settings,
                            &instance->state);
    if (rc == PB_OK)
        return 0;
    if (instance->diag->count == errors_before)
        pb_diag_add(instance->diag, instance->conf->pos.file,
                    instance->conf->pos.line,
                    "plugin %s: module %s refused its settings",
                    instance->conf->name, instance->conf->module);
    return -1;
}

int pb_instance_start(pb_instance *instance, pb_diag *diag)
{
    instance->diag = diag;
    int rc = run_create(instance);
    instance->diag = NULL;
    instance->created = rc == 0;
    return rc;
}

pb_instance *pb_instance_create(const pb_plugin_conf *conf,
                                const char *config_dir, pb_diag *diag)
{
    const char *file = conf->pos.file;
    int line = conf->pos.line;

    if (access(conf->path, F_OK) != 0) {
        pb_diag_add(diag, file, line, "plugin %s: module \"%s\" not found (%s: %s)",
                    conf->name, conf->module, conf->path, strerror(errno));
        return NULL;
    }
    if (check_permissions(conf, diag) != 0)
        return NULL;

    pb_instance *instance = calloc(1, sizeof *instance);
    if (instance == NULL || (instance->name = strdup(conf->name)) == NULL) {
        pb_diag_add(diag, file, line, "plugin %s: out of memory", conf->name);
        free(instance);
        return NULL;
    }
    instance->conf = conf;
    instance->config_dir = config_dir;

    instance->dl = dlopen(conf->path, RTLD_NOW | RTLD_LOCAL);
    if (instance->dl == NULL) {
        pb_diag_add(diag, file, line, "plugin %s: cannot load %s: %s",
                    conf->name, conf->path, dlerror());
        goto fail;
    }
    instance->plugin = dlsym(instance->dl, PB_PLUGIN_DESCRIPTOR_SYMBOL);
    if (instance->plugin == NULL) {
        pb_diag_add(diag, file, line,
                    "plugin %s: %s is not a Plugboard plugin (no %s symbol)",
                    conf->name, conf->path, PB_PLUGIN_DESCRIPTOR_SYMBOL);
        goto fail;
    }
    if (instance->plugin->abi_version != PLUGBOARD_ABI_VERSION) {
        pb_diag_add(diag, file, line,
                    "plugin %s: %s was built for plugin ABI %u, "
                    "this daemon supports ABI %u",
                    conf->name, conf->path, instance->plugin->abi_version,
                    (unsigned)PLUGBOARD_ABI_VERSION);
        goto fail;
    }
    if (instance->plugin->handle == NULL) {
        pb_diag_add(diag, file, line, "plugin %s: %s has no handle function",
                    conf->name, conf->path);
        goto fail;
    }

    if (pb_instance_start(instance, diag) != 0)
        goto fail;
    return instance;

fail:
    pb_instance_destroy(instance);
    return NULL;
}

void pb_instance_destroy(pb_instance *instance)
{
    if (instance == NULL)
        return;
    if (instance->created && instance->plugin->destroy != NULL)
        instance->plugin->destroy(instance->state);
    if (instance->dl != NULL)
        dlclose(instance->dl);
    free(instance->name);
    free(instance);
}

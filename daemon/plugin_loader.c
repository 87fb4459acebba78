/*
 * plugin_loader.c - loading plugin modules. Everything that can be wrong
 * with a module (missing, unsafe permissions, not a plugin, another ABI, bad
 * settings) is found here, at start, on `plugboard -t` and before a reload
 * swaps anything, and reported against the config entry that named it.
 */
#include "plugin_loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * As root, a module that anyone but root can change is a way to run code as
 * root. Like OpenSSH's StrictModes, the module and every directory above it
 * must belong to root and be writable by nobody else; a sticky directory
 * (such as /tmp) may be writable by all, since others cannot rename or
 * remove what they do not own.
 *
 * The checks run on the path realpath() resolved, and that path is what
 * dlopen() then loads, so a symlink is judged by what it points to and
 * cannot be re-pointed in between. The window left between the checks and
 * the load is one in which only root can change anything they passed.
 */
static int check_owner_and_mode(const pb_plugin_conf *conf, const char *path,
                                pb_diag *diag)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        pb_diag_add(diag, conf->pos.file, conf->pos.line,
                    "plugin %s: cannot check %s: %s", conf->name, path,
                    strerror(errno));
        return -1;
    }
    const char *what = S_ISDIR(st.st_mode) ? "directory" : "module";
    char why[64];
    if (S_ISLNK(st.st_mode))
        snprintf(why, sizeof why, "became a symbolic link while checked");
    else if (st.st_uid != 0)
        snprintf(why, sizeof why, "is owned by uid %lu",
                 (unsigned long)st.st_uid);
    else if ((st.st_mode & (S_IWGRP | S_IWOTH)) &&
             !(S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX)))
        snprintf(why, sizeof why, "is writable by %s",
                 (st.st_mode & S_IWOTH) ? "others" : "its group");
    else
        return 0;
    pb_diag_add(diag, conf->pos.file, conf->pos.line,
                "plugin %s: refusing %s: %s %s %s (running as root, the module "
                "and every directory above it must be owned by root and "
                "writable by no one else)",
                conf->name, conf->path, what, path, why);
    return -1;
}

/* resolved: absolute, without symlinks (from realpath). */
static int check_permissions(const pb_plugin_conf *conf, const char *resolved,
                             pb_diag *diag)
{
    char *path = strdup(resolved);
    if (path == NULL) {
        pb_diag_add(diag, conf->pos.file, conf->pos.line,
                    "plugin %s: out of memory", conf->name);
        return -1;
    }
    int rc = check_owner_and_mode(conf, path, diag);
    char *slash;
    while (rc == 0 && path[1] != '\0' && (slash = strrchr(path, '/')) != NULL) {
        slash[slash == path] = '\0';   /* "/a" becomes "/", not "" */
        rc = check_owner_and_mode(conf, path, diag);
    }
    free(path);
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
                conf->name, key, instance->module.name);
    return -1;
}

static int run_create(pb_instance *instance)
{
    const pb_module *module = &instance->module;
    if (module->create == NULL)
        return reject_settings(instance);

    size_t errors_before = instance->diag->count;
    int rc = module->create(&pb_host_services, instance,
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

    char *resolved = realpath(conf->path, NULL);
    if (resolved == NULL) {
        pb_diag_add(diag, file, line, "plugin %s: module \"%s\" not found (%s: %s)",
                    conf->name, conf->module, conf->path, strerror(errno));
        return NULL;
    }
    if (geteuid() == 0 && check_permissions(conf, resolved, diag) != 0) {
        free(resolved);
        return NULL;
    }

    pb_instance *instance = calloc(1, sizeof *instance);
    if (instance == NULL || (instance->name = strdup(conf->name)) == NULL) {
        pb_diag_add(diag, file, line, "plugin %s: out of memory", conf->name);
        free(instance);
        free(resolved);
        return NULL;
    }
    instance->conf = conf;
    instance->config_dir = config_dir;

    instance->dl = dlopen(resolved, RTLD_NOW | RTLD_LOCAL);
    free(resolved);
    if (instance->dl == NULL) {
        pb_diag_add(diag, file, line, "plugin %s: cannot load %s: %s",
                    conf->name, conf->path, dlerror());
        goto fail;
    }
    const void *descriptor = dlsym(instance->dl, PB_PLUGIN_DESCRIPTOR_SYMBOL);
    if (descriptor == NULL) {
        pb_diag_add(diag, file, line,
                    "plugin %s: %s is not a Plugboard plugin (no %s symbol)",
                    conf->name, conf->path, PB_PLUGIN_DESCRIPTOR_SYMBOL);
        goto fail;
    }
    char why[160];
    if (pb_module_read(descriptor, &instance->module, why, sizeof why) != 0) {
        pb_diag_add(diag, file, line, "plugin %s: cannot use %s: %s",
                    conf->name, conf->path, why);
        goto fail;
    }
    if (instance->module.handle == NULL) {
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
    pb_instance_unserve(instance);
    if (instance->created && instance->module.destroy != NULL)
        instance->module.destroy(instance->state);
    if (instance->dl != NULL)
        dlclose(instance->dl);
    free(instance->name);
    free(instance);
}

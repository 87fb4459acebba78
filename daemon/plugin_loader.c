/*
 * plugin_loader.c - loading plugin modules. Everything that can be wrong
 * with a module (missing, unsafe permissions, not a plugin, another ABI, bad
 * settings) is found here, in a worker or in the master's check child
 * before a configuration is used, and reported against the config entry
 * that named it; the master itself only checks, as root, who could change
 * a module, and never loads one.
 *
 * Every load opens the file anew and dlopen()s it through /proc/self/fd/N,
 * so that a module installed over the old one is the code a reload runs:
 * dlopen() by path would hand back the handle already loaded from that
 * path. glibc also knows loaded objects by the name they were loaded
 * under, so the descriptor stays open for as long as the object is loaded
 * (a closed and reused /proc/self/fd/N would name a stale object); and by
 * device and inode, so a file loaded already, unchanged, is shared rather
 * than opened under a second name. Install a new build with mv or install
 * (a new inode): writing over a module in place changes the code that
 * running processes have mapped.
 */
#include "plugin_loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A module file this process has loaded, and how many instances use it. */
typedef struct loaded_file {
    dev_t dev;
    ino_t ino;
    int fd;                     /* loaded through /proc/self/fd/<fd> */
    void *dl;
    unsigned refs;
    struct loaded_file *next;
} loaded_file;

static loaded_file *loaded;

/*
 * As root, a module that anyone but root can change is a way to run code as
 * root. Like OpenSSH's StrictModes, the module and every directory above it
 * must belong to root and be writable by nobody else; a sticky directory
 * (such as /tmp) may be writable by all, since others cannot rename or
 * remove what they do not own.
 *
 * The checks run on the path realpath() resolved, and the module judged is
 * the file opened there (without following a link), which is what dlopen()
 * then loads; so a symlink is judged by what it points to and cannot be
 * re-pointed in between. The window left between the checks and the load
 * is one in which only root can change anything they passed.
 */
static int judge(const pb_plugin_conf *conf, const char *path,
                 const struct stat *st, pb_diag *diag)
{
    const char *what = S_ISDIR(st->st_mode) ? "directory" : "module";
    char why[64];
    if (S_ISLNK(st->st_mode))
        snprintf(why, sizeof why, "became a symbolic link while checked");
    else if (st->st_uid != 0)
        snprintf(why, sizeof why, "is owned by uid %lu",
                 (unsigned long)st->st_uid);
    else if ((st->st_mode & (S_IWGRP | S_IWOTH)) &&
             !(S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX)))
        snprintf(why, sizeof why, "is writable by %s",
                 (st->st_mode & S_IWOTH) ? "others" : "its group");
    else
        return 0;
    pb_diag_add(diag, conf->pos.file, conf->pos.line,
                "plugin %s: refusing %s: %s %s %s (running as root, the module "
                "and every directory above it must be owned by root and "
                "writable by no one else)",
                conf->name, conf->path, what, path, why);
    return -1;
}

/* resolved: absolute, without symlinks (from realpath); file: the module
 * opened there. */
static int check_permissions(const pb_plugin_conf *conf, const char *resolved,
                             const struct stat *file, pb_diag *diag)
{
    char *path = strdup(resolved);
    if (path == NULL) {
        pb_diag_add(diag, conf->pos.file, conf->pos.line,
                    "plugin %s: out of memory", conf->name);
        return -1;
    }
    int rc = judge(conf, path, file, diag);
    char *slash;
    while (rc == 0 && path[1] != '\0' && (slash = strrchr(path, '/')) != NULL) {
        slash[slash == path] = '\0';   /* "/a" becomes "/", not "" */
        struct stat st;
        if (lstat(path, &st) != 0) {
            pb_diag_add(diag, conf->pos.file, conf->pos.line,
                        "plugin %s: cannot check %s: %s", conf->name, path,
                        strerror(errno));
            rc = -1;
        } else {
            rc = judge(conf, path, &st, diag);
        }
    }
    free(path);
    return rc;
}

/* Opens the module conf names, checked as root: its descriptor and what
 * fstat() says of it, or -1 with the reasons in diag. */
static int open_module(const pb_plugin_conf *conf, struct stat *st,
                       pb_diag *diag)
{
    const char *file = conf->pos.file;
    int line = conf->pos.line;
    char *resolved = realpath(conf->path, NULL);
    if (resolved == NULL) {
        pb_diag_add(diag, file, line, "plugin %s: module \"%s\" not found (%s: %s)",
                    conf->name, conf->module, conf->path, strerror(errno));
        return -1;
    }
    /* Not blocking: a FIFO put where a module should be must not hang. */
    int fd = open(resolved, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 || fstat(fd, st) != 0) {
        pb_diag_add(diag, file, line, "plugin %s: cannot open %s: %s",
                    conf->name, resolved,
                    errno == ELOOP ? "became a symbolic link while checked"
                                   : strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    } else if (!S_ISREG(st->st_mode)) {
        pb_diag_add(diag, file, line, "plugin %s: %s is not a regular file",
                    conf->name, resolved);
        close(fd);
        fd = -1;
    } else if (geteuid() == 0 && check_permissions(conf, resolved, st, diag) != 0) {
        close(fd);
        fd = -1;
    }
    free(resolved);
    return fd;
}

int pb_modules_check(const pb_config *config, pb_diag *diag)
{
    if (geteuid() != 0)
        return 0;
    int rc = 0;
    for (size_t i = 0; i < config->n_plugins; i++) {
        const pb_plugin_conf *conf = &config->plugins[i];
        /* A module that cannot be found is reported where it is loaded,
         * as the user that loads it. */
        if (access(conf->path, F_OK) != 0)
            continue;
        struct stat st;
        int fd = open_module(conf, &st, diag);
        if (fd < 0)
            rc = -1;
        else
            close(fd);
    }
    return rc;
}

/* The loaded module of the file conf names, one more instance using it:
 * its handle, or NULL with the reason in diag. */
static void *load(const pb_plugin_conf *conf, pb_diag *diag)
{
    struct stat st;
    int fd = open_module(conf, &st, diag);
    if (fd < 0)
        return NULL;
    for (loaded_file *m = loaded; m != NULL; m = m->next)
        if (m->dev == st.st_dev && m->ino == st.st_ino) {
            close(fd);
            m->refs++;
            return m->dl;
        }
    loaded_file *m = calloc(1, sizeof *m);
    if (m == NULL) {
        pb_diag_add(diag, conf->pos.file, conf->pos.line,
                    "plugin %s: out of memory", conf->name);
        close(fd);
        return NULL;
    }
    char name[32];
    snprintf(name, sizeof name, "/proc/self/fd/%d", fd);
    m->dl = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (m->dl == NULL) {
        /* dlerror() starts with the name loaded, which says nothing to
         * whoever reads the message: conf->path takes its place. */
        const char *error = dlerror();
        size_t n = strlen(name);
        if (error == NULL)
            error = "unknown error";
        else if (strncmp(error, name, n) == 0 && strncmp(error + n, ": ", 2) == 0)
            error += n + 2;
        pb_diag_add(diag, conf->pos.file, conf->pos.line,
                    "plugin %s: cannot load %s: %s", conf->name, conf->path,
                    error);
        close(fd);
        free(m);
        return NULL;
    }
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    m->fd = fd;
    m->refs = 1;
    m->next = loaded;
    loaded = m;
    return m->dl;
}

/* One instance fewer uses the module loaded as dl; the last unloads it. */
static void unload(void *dl)
{
    for (loaded_file **p = &loaded; *p != NULL; p = &(*p)->next) {
        loaded_file *m = *p;
        if (m->dl != dl)
            continue;
        if (--m->refs == 0) {
            *p = m->next;
            dlclose(m->dl);
            close(m->fd);
            free(m);
        }
        return;
    }
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

    pb_instance *instance = calloc(1, sizeof *instance);
    if (instance == NULL || (instance->name = strdup(conf->name)) == NULL) {
        pb_diag_add(diag, file, line, "plugin %s: out of memory", conf->name);
        free(instance);
        return NULL;
    }
    instance->conf = conf;
    instance->config_dir = config_dir;

    instance->dl = load(conf, diag);
    if (instance->dl == NULL)
        goto fail;
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
        unload(instance->dl);
    free(instance->name);
    free(instance);
}

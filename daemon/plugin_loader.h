/*
 * plugin_loader.h - turns a configured plugin entry into a live instance:
 * dlopen()s the module, checks its ABI and file permissions, runs create().
 */
#ifndef PB_PLUGIN_LOADER_H
#define PB_PLUGIN_LOADER_H

#include "config.h"
#include "diag.h"
#include "plugin_host.h"

/* Creates the instance of conf, or returns NULL with the reasons in diag
 * (each naming the entry's FILE:LINE). config_dir is the base for relative
 * paths in its settings. */
pb_instance *pb_instance_create(const pb_plugin_conf *conf,
                                const char *config_dir, pb_diag *diag);

/*
 * Runs the module's create() for an instance whose plugin and conf are set
 * (or, for a module without create(), refuses any setting), with settings
 * errors going to diag. 0, or -1 with the reasons in diag.
 */
int pb_instance_start(pb_instance *instance, pb_diag *diag);

/* Runs destroy() and unloads the module (dlopen counts references, so a
 * module shared by other instances stays). NULL is ignored. */
void pb_instance_destroy(pb_instance *instance);

#endif

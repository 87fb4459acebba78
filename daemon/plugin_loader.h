/*
 * plugin_loader.h - turns a configured plugin entry into a live instance:
 * opens and checks the module file, loads it, checks its ABI, runs
 * create(). Only workers and the master's check child load modules.
 */
#ifndef PB_PLUGIN_LOADER_H
#define PB_PLUGIN_LOADER_H

#include "config.h"
#include "diag.h"
#include "plugin_host.h"

/* As root, for the master, which loads nothing: that no module config
 * names could be changed by anyone but root, through the file or any
 * directory above it. Adds FILE:LINE errors to diag; 0 or -1. 0 when not
 * root. */
int pb_modules_check(const pb_config *config, pb_diag *diag);

/* Creates the instance of conf, or returns NULL with the reasons in diag
 * (each naming the entry's FILE:LINE). config_dir is the base for relative
 * paths in its settings. The module is the file as it is now: loaded
 * afresh when it changed since this process last loaded it, shared with
 * the instances that use it when it did not. */
pb_instance *pb_instance_create(const pb_plugin_conf *conf,
                                const char *config_dir, pb_diag *diag);

/*
 * Runs the module's create() for an instance whose plugin and conf are set
 * (or, for a module without create(), refuses any setting), with settings
 * errors going to diag. 0, or -1 with the reasons in diag.
 */
int pb_instance_start(pb_instance *instance, pb_diag *diag);

/* Runs destroy() and unloads the module once no other instance uses it.
 * NULL is ignored. */
void pb_instance_destroy(pb_instance *instance);

#endif

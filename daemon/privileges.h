/*
 * privileges.h - dropping root for the configured user and group after the
 * listeners are bound.
 */
#ifndef PB_PRIVILEGES_H
#define PB_PRIVILEGES_H

#include "config.h"
#include "diag.h"

/* Checks that the configured user and group exist; adds FILE errors. */
int pb_privileges_check(const pb_config *config, pb_diag *diag);

/* As root with a user or group configured: switch to them for good,
 * supplementary groups cleared, and verify root cannot be regained. Not
 * root: a warning that they are ignored. 0, or -1 (logged). */
int pb_privileges_drop(const pb_config *config);

#endif

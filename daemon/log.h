/*
 * log.h - the daemon's log: one event per line, with level, to stderr (with
 * a timestamp) or syslog. Usable before the configuration is read.
 */
#ifndef PB_LOG_H
#define PB_LOG_H

#include <stdarg.h>

#include <plugboard/plugin.h>

#include "config.h"

/* Starts logging to stderr at info level: the state before a config. */
void pb_log_init(const char *ident);

/* Switches target and level as the configuration says. Returns 0, or -1
 * when the syslog facility name is unknown. */
int pb_log_configure(pb_log_target target, int level, const char *facility);

/* Applies a (re)loaded configuration's log settings, keeping syslog when
 * stderr is gone (a detached daemon). */
void pb_log_apply(const pb_config *config);

/* Stderr is gone from now on: stderr targets become syslog. */
void pb_log_detached(void);

/* Whether a message at level would be written. */
int pb_log_enabled(int level);

void pb_log(int level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
void pb_logv(int level, const char *format, va_list ap);

/*
 * A budget for a log line that a peer can trigger at will (a plugin failing
 * on its requests, accept errors under a flood): at most `burst` lines per
 * `interval` seconds; what is dropped is counted and reported with the
 * next line that gets through. Give each call site its own, static.
 */
typedef struct pb_log_limit {
    double interval;
    int burst;
    double window_start;
    int used;
    unsigned long suppressed;
} pb_log_limit;

#define PB_LOG_LIMIT(interval, burst) { (interval), (burst), 0.0, 0, 0 }

void pb_log_limited(pb_log_limit *limit, int level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* The levels ("error" ... "debug", as pb_log_level values) and the syslog
 * facilities ("daemon", "user", "local0" ... "local7", as LOG_ values) that
 * a configuration may name, in the order they are listed to a user; each
 * ends with a NULL name. */
extern const pb_conf_word pb_log_levels[];
extern const pb_conf_word pb_log_facilities[];

const char *pb_log_level_name(int level);

/* Closes syslog if it was opened. */
void pb_log_close(void);

#define pb_log_error(...)   pb_log(PB_LOG_ERROR, __VA_ARGS__)
#define pb_log_warning(...) pb_log(PB_LOG_WARNING, __VA_ARGS__)
#define pb_log_notice(...)  pb_log(PB_LOG_NOTICE, __VA_ARGS__)
#define pb_log_info(...)    pb_log(PB_LOG_INFO, __VA_ARGS__)
#define pb_log_debug(...)   do { if (pb_log_enabled(PB_LOG_DEBUG)) pb_log(PB_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif

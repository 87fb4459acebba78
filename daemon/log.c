/*
 * log.c - the daemon's log. Lines go to stderr as
 * "2026-11-22T10:00:00.123Z plugboard[PID]: LEVEL: message" or to syslog;
 * until a configuration says otherwise, to stderr at info level, so that a
 * configuration error is always visible.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *log_ident = "plugboard";
static int detached;
static int log_level = PB_LOG_INFO;
static pb_log_target log_target = PB_LOG_STDERR;
static int syslog_open;

const pb_conf_word pb_log_levels[] = {
    { "error", PB_LOG_ERROR },
    { "warning", PB_LOG_WARNING },
    { "notice", PB_LOG_NOTICE },
    { "info", PB_LOG_INFO },
    { "debug", PB_LOG_DEBUG },
    { NULL, 0 },
};

const pb_conf_word pb_log_facilities[] = {
    { "daemon", LOG_DAEMON }, { "user", LOG_USER },
    { "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 },
    { "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 },
    { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 },
    { "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
    { NULL, 0 },
};

void pb_log_init(const char *ident)
{
    log_ident = ident;
    log_level = PB_LOG_INFO;
    log_target = PB_LOG_STDERR;
}

int pb_log_configure(pb_log_target target, int level, const char *facility)
{
    int fac = -1;
    if (target == PB_LOG_SYSLOG) {
        for (size_t i = 0; pb_log_facilities[i].name; i++)
            if (facility != NULL && strcmp(facility, pb_log_facilities[i].name) == 0)
                fac = pb_log_facilities[i].value;
        if (fac < 0)
            return -1;
        pb_log_close();
        openlog(log_ident, LOG_PID | LOG_NDELAY, fac);
        syslog_open = 1;
    } else {
        pb_log_close();
    }
    log_target = target;
    log_level = level;
    return 0;
}

void pb_log_apply(const pb_config *config)
{
    pb_log_target target = detached ? PB_LOG_SYSLOG : config->log_target;
    if (pb_log_configure(target, config->log_level, config->log_facility) != 0)
        pb_log_error("unknown syslog facility \"%s\": keeping the log as it was",
                     config->log_facility);
}

void pb_log_detached(void)
{
    detached = 1;
}

int pb_log_enabled(int level)
{
    return level <= log_level;
}

const char *pb_log_level_name(int level)
{
    for (size_t i = 0; pb_log_levels[i].name; i++)
        if (pb_log_levels[i].value == level)
            return pb_log_levels[i].name;
    return "unknown";
}

void pb_logv(int level, const char *format, va_list ap)
{
    if (!pb_log_enabled(level))
        return;
    char message[2048];
    vsnprintf(message, sizeof message, format, ap);
    /* One event per line: a newline inside a message (say, from a peer's
     * bytes in an error text) must not forge a second log line. */
    for (char *p = message; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';

    if (log_target == PB_LOG_SYSLOG) {
        syslog(level, "%s: %s", pb_log_level_name(level), message);
        return;
    }
    struct timeval tv;
    struct tm tm;
    char stamp[32];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03dZ %s[%ld]: %s: %s\n", stamp,
            (int)(tv.tv_usec / 1000), log_ident, (long)getpid(),
            pb_log_level_name(level), message);
}

void pb_log(int level, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    pb_logv(level, format, ap);
    va_end(ap);
}

void pb_log_limited(pb_log_limit *limit, int level, const char *format, ...)
{
    if (!pb_log_enabled(level))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (now - limit->window_start >= limit->interval) {
        limit->window_start = now;
        limit->used = 0;
    }
    if (limit->used >= limit->burst) {
        limit->suppressed++;
        return;
    }
    limit->used++;
    char message[2048];
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, sizeof message, format, ap);
    va_end(ap);
    if (limit->suppressed > 0) {
        pb_log(level, "%s (%lu similar messages suppressed)", message,
               limit->suppressed);
        limit->suppressed = 0;
    } else {
        pb_log(level, "%s", message);
    }
}

void pb_log_close(void)
{
    if (syslog_open) {
        closelog();
        syslog_open = 0;
    }
}

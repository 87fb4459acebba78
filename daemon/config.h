/*
 * config.h - the configuration file (plugboard.conf(5)) parsed and checked
 * into one plain structure. Loading validates the whole schema (unknown keys,
 * wrong types, ranges, references between sections) and reports each
 * mistake as FILE:LINE; it loads no plugin and opens no socket.
 */
#ifndef PB_CONFIG_H
#define PB_CONFIG_H

#include <jansson.h>
#include <stddef.h>

#include "access.h"
#include "diag.h"

/* A word a setting may be, and what it stands for; tables of them end
 * with a NULL name. */
typedef struct pb_conf_word {
    const char *name;
    int value;
} pb_conf_word;

/* The most threads `threads` may ask for, per instance and worker. */
#define PB_MAX_PLUGIN_THREADS 256

typedef enum pb_framing_kind { PB_FRAME = 0, PB_LINE = 1, PB_HTTP = 2 } pb_framing_kind;

/* Where something was written, for messages. `file` points into
 * pb_config.files and lives as long as the config. */
typedef struct pb_conf_pos {
    const char *file;
    int line;
} pb_conf_pos;

/* Whether a TLS listener asks for client certificates, and insists. */
typedef enum pb_verify_client {
    PB_VERIFY_NONE = 0,
    PB_VERIFY_OPTIONAL = 1,
    PB_VERIFY_REQUIRE = 2,
} pb_verify_client;

/* The oldest protocol a TLS listener speaks, by its wire number. */
#define PB_TLS_1_2 0x0303
#define PB_TLS_1_3 0x0304

/* A listener's tls group. The files are read by the master, which may be
 * the only one that can (keys readable by root alone). */
typedef struct pb_tls_conf {
    char *certificate;      /* PEM: the certificate, then its chain */
    char *key;              /* PEM private key, unencrypted */
    char *ca;               /* PEM CAs for client certificates, or NULL */
    pb_conf_pos certificate_pos, key_pos, ca_pos;
    pb_verify_client verify_client;
    int min_version;        /* PB_TLS_1_2 (default) or PB_TLS_1_3 */
    pb_conf_pos pos;
} pb_tls_conf;

typedef struct pb_listener_conf {
    char *name;             /* given, or derived: "127.0.0.1:65432", path */
    char *address;          /* host name or literal; NULL for a Unix socket */
    int port;               /* 1..65535 when address is set */
    char *path;             /* Unix socket path (resolved); NULL for TCP */
    int mode;               /* Unix socket permission bits; -1 = leave as umask makes them */
    pb_framing_kind framing;
    char *plugin;           /* instance every message goes to, or NULL */
    pb_cidr *allow;         /* peers accepted: n_allow networks; none = all */
    size_t n_allow;
    pb_tls_conf *tls;       /* NULL: plaintext */
    int reuseport;          /* one SO_REUSEPORT socket per worker (TCP only) */
    pb_conf_pos pos;
} pb_listener_conf;

/* A value inside an instance's settings and where it was written. */
typedef struct pb_setting_pos {
    const json_t *value;
    pb_conf_pos pos;
} pb_setting_pos;

typedef struct pb_plugin_conf {
    char *name;             /* instance name */
    char *module;           /* as written: bare name or absolute path */
    char *path;             /* resolved .so path: plugin_dir/module.so, or module */
    int threads;            /* handle() on a pool of this many threads per
                             * worker; 0 = on the loop thread */
    json_t *settings;       /* object, empty when none were given */
    pb_setting_pos *positions;  /* one per value in settings, settings itself first */
    size_t n_positions;
    pb_conf_pos pos;
} pb_plugin_conf;

typedef struct pb_route_conf {
    char *content_type;     /* exact or glob; NULL = any */
    char *action;           /* NULL = any */
    char *plugin;           /* instance name */
    size_t *listeners;      /* the listeners it serves, as indices into
                             * pb_config.listeners; none = all */
    size_t n_listeners;
    pb_conf_pos pos;
} pb_route_conf;

typedef struct pb_limits {
    long long max_connections;      /* default 10000 */
    long long max_message_bytes;    /* default 1048576 */
    double idle_timeout;            /* seconds, default 60; 0 = never */
    long long max_pending_output;   /* default 4194304 */
    double shutdown_timeout;        /* seconds, default 10 */
    long long max_inflight;         /* requests of one connection in progress
                                     * before reading it pauses; default 128 */
} pb_limits;

typedef enum pb_log_target { PB_LOG_STDERR = 0, PB_LOG_SYSLOG = 1 } pb_log_target;

typedef struct pb_config {
    char *path;             /* the file as given on the command line */
    char *dir;              /* its directory: base of relative paths */
    char *plugin_dir;       /* resolved */
    char *user;             /* NULL when not set */
    char *group;
    pb_conf_pos user_pos;   /* where user and group were set */
    pb_conf_pos group_pos;
    char *pidfile;          /* resolved; default "/run/plugboard/plugboard.pid" */
    long long workers;      /* default 1; 0 = one per CPU */
    int log_level;          /* pb_log_level value; default info */
    pb_log_target log_target;
    char *log_facility;     /* syslog facility name; default "daemon" */
    pb_limits limits;

    pb_listener_conf *listeners;
    size_t n_listeners;
    pb_plugin_conf *plugins;
    size_t n_plugins;
    pb_route_conf *routes;
    size_t n_routes;

    char **files;           /* every file read (main, @includes), owned */
    size_t n_files;
} pb_config;

/*
 * Reads the whole file at path into *text (NUL-terminated, malloc'd; *len
 * bytes without the NUL), so that one reading can be checked once and then
 * applied everywhere. 0, or -1 with the reason in diag.
 */
int pb_config_read(const char *path, char **text, size_t *len, pb_diag *diag);

/*
 * Validates text as the contents of the file at path: path names it in
 * messages and is the base of relative paths and @include. Otherwise as
 * pb_config_load().
 */
int pb_config_parse(const char *path, const char *text, size_t len,
                    const char *default_plugin_dir, pb_config **out,
                    pb_diag *diag);

/*
 * Reads and validates the file at path. default_plugin_dir is used when the
 * file sets no plugin_dir. On success returns 0 and *out; otherwise returns
 * -1 with every problem added to diag (each "FILE:LINE: message").
 */
int pb_config_load(const char *path, const char *default_plugin_dir,
                   pb_config **out, pb_diag *diag);

/* Where a settings value was written; the instance's own position when
 * value is NULL or unknown. */
pb_conf_pos pb_plugin_conf_position(const pb_plugin_conf *plugin,
                                    const json_t *value);

void pb_config_free(pb_config *config);

#endif

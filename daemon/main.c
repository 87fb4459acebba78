/*
 * main.c - the plugboard command: options, configuration test, start-up
 * order (configuration and its check child, then sockets, then workers,
 * which drop privileges and create the plugin instances) and exit
 * statuses systemd understands.
 */
#include <getopt.h>
#include <openssl/crypto.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "check.h"
#include "cycle.h"
#include "daemonize.h"
#include "line.h"
#include "listener.h"
#include "log.h"
#include "master.h"
#include "plugin_host.h"
#include "plugin_loader.h"
#include "privileges.h"
#include "tls.h"

#define EXIT_RUNTIME 1

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: plugboard [-c FILE] [-f] [-t] [-V] [-h]\n"
            "  -c, --config FILE   configuration file (default %s)\n"
            "  -f, --foreground    do not detach; log to stderr unless the config says syslog\n"
            "  -t, --test          load the configuration and create every plugin instance, report, exit\n"
            "  -V, --version       print version and supported plugin ABI\n"
            "  -h, --help          print this help\n",
            PB_CONFIG_FILE);
}

enum load_purpose { FOR_TEST, FOR_START, FOR_RELOAD };

/* Reads and checks a configuration as -t does, its plugin instances in a
 * check child that lets go of release; NULL after reporting every
 * problem. */
static pb_cycle *load(const char *path, enum load_purpose purpose,
                      const pb_check_release *release)
{
    pb_diag diag = PB_DIAG_INIT;
    pb_cycle *cycle = pb_cycle_read(path, &diag);
    if (cycle != NULL) {
        int rc = pb_listeners_check(cycle->config, &diag);
        /* Plugin code runs only as a user that exists, and only from
         * modules that nobody but root could have changed. */
        if ((pb_privileges_check(cycle->config, &diag) |
             pb_modules_check(cycle->config, &diag)) != 0)
            rc = -1;
        else
            rc |= pb_check_cycle(cycle, release, &diag);
        if (rc != 0) {
            pb_cycle_free(cycle);
            cycle = NULL;
        }
    }
    if (cycle == NULL) {
        if (purpose == FOR_TEST) {
            pb_diag_print(&diag);
            fprintf(stderr, "%s: configuration has errors\n", path);
        } else {
            pb_diag_log(&diag);
            if (purpose == FOR_START)
                pb_log_error("%s: configuration has errors, not starting", path);
        }
    }
    pb_diag_free(&diag);
    return cycle;
}

/* Process-wide state a worker releases before it exits. */
static void cleanup_worker(void)
{
    pb_plugin_host_cleanup();
    pb_line_codec_cleanup();
    pb_buf_pool_drain();
    pb_log_close();
    /* Workers and check children leave by _exit(), which runs none of the
     * atexit handlers OpenSSL frees its tables in. */
    OPENSSL_cleanup();
}

/* The master, or the process that never got as far as one, also owns the
 * pidfile. */
static void cleanup_process(void)
{
    pb_pidfile_remove();
    cleanup_worker();
}

/* What a check child started from main() holds besides the cycle. */
static const pb_check_release release_main = { .process = cleanup_worker };

static pb_cycle *load_for_reload(const char *path, void (*holdings)(void *),
                                 void *arg)
{
    const pb_check_release release = { holdings, arg, cleanup_worker };
    return load(path, FOR_RELOAD, &release);
}

static void report_ready(void)
{
    pb_daemonize_ready(0);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "config", required_argument, NULL, 'c' },
        { "foreground", no_argument, NULL, 'f' },
        { "test", no_argument, NULL, 't' },
        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *config_arg = PB_CONFIG_FILE;
    int foreground = 0, test = 0, opt;

    pb_log_init("plugboard");
    while ((opt = getopt_long(argc, argv, "c:ftVh", options, NULL)) != -1) {
        switch (opt) {
        case 'c': config_arg = optarg; break;
        case 'f': foreground = 1; break;
        case 't': test = 1; break;
        case 'V':
            printf("plugboard %s (plugin ABI %d)\n", PACKAGE_VERSION,
                   PLUGBOARD_ABI_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "plugboard: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return EX_USAGE;
    }

    if (test) {
        pb_cycle *cycle = load(config_arg, FOR_TEST, &release_main);
        if (cycle == NULL) {
            cleanup_process();
            return EX_CONFIG;
        }
        printf("%s: configuration OK\n", config_arg);
        pb_cycle_free(cycle);
        cleanup_process();
        return 0;
    }

    pb_close_inherited();

    /* Reloads read the file again after the daemon left its directory. */
    char config_path[PATH_MAX];
    if (realpath(config_arg, config_path) == NULL) {
        strncpy(config_path, config_arg, sizeof config_path - 1);
        config_path[sizeof config_path - 1] = '\0';
    }

    if (pb_tls_init() != 0) {
        pb_log_error("cannot draw the TLS session ticket keys");
        cleanup_process();
        return EXIT_RUNTIME;
    }
    pb_cycle *cycle = load(config_path, FOR_START, &release_main);
    if (cycle == NULL) {
        cleanup_process();
        return EX_CONFIG;
    }
    const pb_config *config = cycle->config;
    if (pb_log_configure(config->log_target, config->log_level,
                         config->log_facility) != 0) {
        pb_log_error("unknown syslog facility \"%s\"", config->log_facility);
        pb_cycle_free(cycle);
        cleanup_process();
        return EX_CONFIG;
    }
    if (!foreground) {
        if (pb_daemonize() != 0) {
            pb_log_error("cannot detach: %m");
            pb_cycle_free(cycle);
            cleanup_process();
            return EXIT_RUNTIME;
        }
        /* stderr goes to /dev/null once detached. */
        pb_log_detached();
        pb_log_apply(config);
    }

    pb_listener_set listeners;
    int status = EXIT_RUNTIME;
    if (pb_listeners_open(&listeners, config, pb_master_workers(config)) == 0) {
        if (foreground || pb_pidfile_create(config->pidfile) == 0) {
            pb_log_notice("plugboard %s starting (plugin ABI %d, pid %ld)",
                          PACKAGE_VERSION, PLUGBOARD_ABI_VERSION, (long)getpid());
            const pb_master_hooks hooks = {
                .load = load_for_reload,
                .ready = report_ready,
                .worker_exit = cleanup_worker,
            };
            status = pb_master_run(cycle, &listeners, config_path, &hooks);
            cycle = NULL;
        }
        pb_listeners_close(&listeners);
    }
    pb_daemonize_ready(status);
    pb_cycle_free(cycle);
    cleanup_process();
    return status;
}

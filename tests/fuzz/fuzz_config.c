/*
 * fuzz_config.c - libFuzzer target for the configuration loader: the input
 * is loaded as a configuration file and again as a file it @includes; either
 * way the loader must return a config or diagnostics, never crash or leak.
 */
#define _GNU_SOURCE 1   /* memmem */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "diag.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/* libconfig 1.5 leaks its scanner's string buffers on some syntax errors;
 * the leaks to find are the loader's own. */
const char *__lsan_default_suppressions(void)
{
    return "leak:libconfig.so\n";
}

static char dir[64];
static char main_path[96];
static char wrapper_path[96];

static int write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(data, 1, size, f);
    return fclose(f) == 0 && n == size ? 0 : -1;
}

static void load(const char *path)
{
    pb_config *config = NULL;
    pb_diag diag = PB_DIAG_INIT;
    if (pb_config_load(path, "/usr/lib/plugboard", &config, &diag) == 0) {
        if (diag.count != 0 || !config)
            abort();
        /* Every recorded position must be reachable by lookup. */
        for (size_t i = 0; i < config->n_plugins; i++) {
            const pb_plugin_conf *p = &config->plugins[i];
            for (size_t j = 0; j < p->n_positions; j++)
                if (!pb_plugin_conf_position(p, p->positions[j].value).file)
                    abort();
        }
        pb_config_free(config);
    } else if (diag.count == 0 || config) {
        abort();
    }
    pb_diag_free(&diag);
}

static void cleanup(void)
{
    unlink(main_path);
    unlink(wrapper_path);
    rmdir(dir);
}

/* One directory for the whole run; the included file's name is fixed. */
static int setup(void)
{
    if (dir[0])
        return 0;
    snprintf(dir, sizeof dir, "/tmp/pb-fuzz-config-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    atexit(cleanup);
    snprintf(main_path, sizeof main_path, "%s/input.conf", dir);
    snprintf(wrapper_path, sizeof wrapper_path, "%s/wrapper.conf", dir);
    static const char wrapper[] =
        "listeners = ( { address = \"127.0.0.1\"; port = 1; } );\n"
        "@include \"input.conf\"\n"
        "workers = 2;\n";
    return write_file(wrapper_path, wrapper, sizeof wrapper - 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An @include in the input could name any file on the host ("../../dev/zero");
     * the wrapper covers includes with a name fixed here. */
    if (memmem(data, size, "@include", 8))
        return 0;
    if (setup() < 0 || write_file(main_path, data, size) < 0)
        return 0;
    load(main_path);
    load(wrapper_path);
    return 0;
}

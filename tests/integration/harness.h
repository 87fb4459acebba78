/*
 * harness.h - runs the real plugboard daemon and tools for the integration
 * tests: generated configs on ephemeral ports, sockets with hang guards,
 * frame and line replies, subprocesses with captured output.
 */
#ifndef PB_TEST_HARNESS_H
#define PB_TEST_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#include "buffer.h"

#define PB_T_DAEMON_BIN PB_TEST_BUILDDIR "/daemon/plugboard"
#define PB_T_CLI_BIN    PB_TEST_BUILDDIR "/tools/plugboard-cli"
#define PB_T_BUNDLED_CONF PB_TEST_SRCDIR "/etc/plugboard.conf"
#define PB_T_VECTORS    PB_TEST_SRCDIR "/tests/vectors/seed-exchanges.json"

/* Guards against hangs only: no test depends on anything being this fast. */
#define PB_T_TIMEOUT_MS 15000

#define PB_T_PORTS 3

/*
 * Config templates. Placeholders, replaced when a daemon is prepared:
 *   @DIR@         the test's temporary directory
 *   @PLUGIN_DIR@  the build tree's plugins
 *   @SOCK@        a Unix socket path in @DIR@
 *   @PORT0@ @PORT1@ @PORT2@   free TCP ports on the loopback
 */
#define PB_T_CONF_HEAD \
    "plugin_dir = \"@PLUGIN_DIR@\";\n" \
    "pidfile = \"@DIR@/plugboard.pid\";\n" \
    "log = { level = \"info\"; target = \"stderr\"; };\n"

#define PB_T_CONF_PLUGINS \
    "plugins = (\n" \
    "  { name = \"echo\";    module = \"echo\"; },\n" \
    "  { name = \"upper\";   module = \"uppercase\"; },\n" \
    "  { name = \"search\";  module = \"search\";\n" \
    "    settings = { entries = ( (\"morpheus\", \"Follow the white rabbit. \xf0\x9f\x90\xb0\"),\n" \
    "                             (\"ring\", \"In the caves beneath the Misty Mountains. \xf0\x9f\x92\x8d\"),\n" \
    "                             (\"\xf0\x9f\x90\xb6\", \"\xf0\x9f\x90\xbe Playing ball! \xf0\x9f\x8f\x90\") ); }; },\n" \
    "  { name = \"first10\"; module = \"first10\"; }\n" \
    ");\n"

#define PB_T_CONF_ROUTES \
    "routes = (\n" \
    "  { content_type = \"text/json\"; action = \"echo\";  plugin = \"echo\"; },\n" \
    "  { content_type = \"text/json\"; action = \"upper\"; plugin = \"upper\"; },\n" \
    "  { content_type = \"text/json\"; plugin = \"search\"; },\n" \
    "  { content_type = \"text/plain\"; plugin = \"echo\"; },\n" \
    "  { plugin = \"first10\"; }\n" \
    ");\n"

/* PORT0: frame (routed), PORT1: line pinned to echo, SOCK: frame (routed). */
#define PB_T_CONF_LISTENERS \
    "listeners = (\n" \
    "  { name = \"app\";    address = \"127.0.0.1\"; port = @PORT0@; framing = \"frame\"; },\n" \
    "  { name = \"telnet\"; address = \"127.0.0.1\"; port = @PORT1@; framing = \"line\"; plugin = \"echo\"; },\n" \
    "  { name = \"local\";  path = \"@SOCK@\"; mode = \"0660\"; framing = \"frame\"; }\n" \
    ");\n"

/* The bundled configuration, on test ports. */
#define PB_T_CONF_STD \
    PB_T_CONF_HEAD PB_T_CONF_LISTENERS PB_T_CONF_PLUGINS PB_T_CONF_ROUTES

typedef struct pb_daemon {
    pid_t pid;                  /* 0 when not running */
    char dir[128];
    char config_path[192];
    char log_path[192];
    char sock_path[192];
    int port[PB_T_PORTS];
} pb_daemon;

/* One reply frame as received. */
typedef struct pb_t_reply {
    pb_buf raw;                 /* the whole frame, length prefix included */
    size_t header_length;       /* H */
    json_t *header;
    const char *content_type;   /* inside header */
    const char *content_encoding;
    const unsigned char *content;   /* inside raw */
    size_t content_length;
} pb_t_reply;

/* One reference exchange of tests/vectors/seed-exchanges.json, the reply's
 * byteorder already made this host's. */
typedef struct pb_exchange {
    char name[64];
    unsigned char *request;
    size_t request_len;
    unsigned char *reply;
    size_t reply_len;
} pb_exchange;

typedef struct pb_run_result {
    pid_t pid;                  /* the process that ran */
    int status;                 /* exit code, 128 + signal, or -1 on timeout */
    char *out;                  /* NUL-terminated captured stdout */
    size_t out_len;
    char *err;
    size_t err_len;
} pb_run_result;

/* Suite init and fini: ignores SIGPIPE; kills leftover daemons and removes
 * temporary directories even when a test failed half-way. */
void pb_harness_init(void);
void pb_harness_cleanup(void);

/* Fails the test with a message and the tail of the daemon's log (d may be
 * NULL). */
void pb_t_fail(const pb_daemon *d, const char *file, int line,
               const char *format, ...)
    __attribute__((format(printf, 4, 5), noreturn));

#define pb_check(d, cond, ...) \
    do { if (!(cond)) pb_t_fail((d), __FILE__, __LINE__, __VA_ARGS__); } while (0)

/* What the test is doing, added to any failure message from now on
 * (pb_t_context("%s", "") forgets it). */
void pb_t_context(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Why the last socket helper returned -1. */
const char *pb_t_reason(void);

/* A fresh temporary directory, removed at cleanup; path into out. */
void pb_t_tempdir(char *out, size_t cap);
/* A loopback TCP port that nothing listens on right now. */
int pb_t_free_port(void);
/* Writes a file; asserts. */
void pb_t_write_file(const char *path, const void *data, size_t len);
/* Whole file, NUL-terminated (NULL when unreadable); *len if not NULL. */
char *pb_t_read_file(const char *path, size_t *len);

/* Temporary dir, ports and config written from the template; not started. */
void pb_daemon_prepare(pb_daemon *d, const char *config_template);
/* Rewrites the config file from a template, same dir and ports. */
void pb_daemon_write_config(const pb_daemon *d, const char *config_template);
/* Prepares and starts `plugboard -f -c CONFIG` (stderr to the log), and
 * waits until every listener of the template accepts connections. */
void pb_daemon_start(pb_daemon *d, const char *config_template);
/* The starting half of pb_daemon_start(), for a prepared daemon. */
void pb_daemon_launch(pb_daemon *d, const char *config_template);
void pb_daemon_signal(const pb_daemon *d, int sig);
/* Waits for the daemon to exit: the exit code, 128 + signal, or -1 when it
 * was still running after 30 s (then it is killed). */
int pb_daemon_wait(pb_daemon *d);
/* SIGTERM, then pb_daemon_wait(). */
int pb_daemon_stop(pb_daemon *d);
/* Stop (or only wait), then assert exit status 0 and no sanitizer report
 * in the log. */
void pb_daemon_stop_clean(pb_daemon *d);
void pb_daemon_wait_clean(pb_daemon *d);
/* The daemon's log so far, malloc'd. */
char *pb_daemon_log(const pb_daemon *d);
/* The daemon's worker processes (the master's children), at most cap. */
int pb_daemon_workers(const pb_daemon *d, pid_t *out, int cap);
/* Polls (with a hang guard) until `want` workers run (the listeners accept
 * as soon as the master bound them, before the workers are forked); the
 * last count. */
int pb_daemon_wait_workers(const pb_daemon *d, pid_t *out, int cap, int want);

/* Sockets: fd, or -1 (see pb_t_reason). */
int pb_connect_tcp(const char *host, int port);
int pb_connect_unix(const char *path);
/* Connect to the daemon's PORTn / its @SOCK@, asserting success. */
int pb_dial(const pb_daemon *d, int port_index);
int pb_dial_unix(const pb_daemon *d);

/* 0, or -1 on error or timeout. */
int pb_send_all(int fd, const void *data, size_t len);
/* 0 with a frame, 1 on EOF before its first byte, -1 otherwise. */
int pb_recv_frame(int fd, pb_t_reply *r);
void pb_t_reply_free(pb_t_reply *r);
/* A line with its \n into buf (NUL-terminated): 0, 1 on EOF before any
 * byte, -1 otherwise. */
int pb_recv_line(int fd, char *buf, size_t cap, size_t *len);
/* 0 when the peer closed (EOF or reset) with no further data, -1 otherwise. */
int pb_expect_eof(int fd);

/* Frame building. */
void pb_t_frame(pb_buf *out, const char *content_type, const char *encoding,
                const void *content, size_t len);
void pb_t_raw_frame(pb_buf *out, const void *header, size_t header_len,
                    const void *content, size_t len);

/* The guide's search for morpheus, and its answer's content. */
#define PB_T_MORPHEUS "{\"action\": \"search\", \"value\": \"morpheus\"}"
#define PB_T_MORPHEUS_REPLY "{\"result\": \"Follow the white rabbit. \xf0\x9f\x90\xb0\"}"

/* Asserting conveniences that put the daemon's log in any failure. */
void pb_t_send(const pb_daemon *d, int fd, const void *data, size_t len);
void pb_t_recv_frame(const pb_daemon *d, int fd, pb_t_reply *r);
/* Receives one reply frame and returns the string "result" of its JSON
 * content (malloc'd). */
char *pb_t_recv_result(const pb_daemon *d, int fd);
/* Sends one frame carrying content. */
void pb_t_send_frame(const pb_daemon *d, int fd, const char *content_type,
                     const char *encoding, const void *content, size_t len);
/* Sends the search for morpheus over fd and expects its answer. */
void pb_t_expect_morpheus(const pb_daemon *d, int fd);
/* Receives one frame and checks content-type, encoding and content. */
void pb_t_expect_reply(const pb_daemon *d, int fd, const char *content_type,
                       const char *encoding, const void *content, size_t len);
/* Receives an error frame: canonical header, text/json utf-8, content
 * exactly {"error": "...", "code": "CODE"}. */
void pb_t_expect_error(const pb_daemon *d, int fd, const char *code);
void pb_t_expect_line(const pb_daemon *d, int fd, const char *line);
/* Receives "ERR CODE text\n". */
void pb_t_expect_err_line(const pb_daemon *d, int fd, const char *code);
void pb_t_expect_eof(const pb_daemon *d, int fd);
void pb_t_expect_bytes(const pb_daemon *d, const char *what,
                       const void *got, size_t got_len,
                       const void *want, size_t want_len);
/* Asks the stats plugin over a new connection to PORT0 (a route must send
 * {"action": "stats"} to it); the reply's JSON object (new reference). */
json_t *pb_t_stats(const pb_daemon *d);
/* Polls (with a hang guard, never a timing assertion) until the top-level
 * counter key of the stats reply is want; its last value. */
long long pb_t_wait_stat(const pb_daemon *d, const char *key, long long want);
/* A new connection to PORTn does the search-morpheus reference exchange. */
void pb_t_check_serving(const pb_daemon *d, int port_index);

/* --- HTTP ------------------------------------------------------------------
 *
 * Raw HTTP/1.1 over a plain socket (curl is not always installed): the
 * tests write requests byte for byte and read responses with a
 * Content-Length, as the daemon sends them.
 */
typedef struct pb_t_http {
    int status;
    char head[8192];            /* status line and headers, NUL-terminated */
    pb_buf body;
} pb_t_http;

/* One response; head_only for the answer to a HEAD. 0, 1 on EOF before
 * its first byte, -1 otherwise. */
int pb_recv_http(int fd, int head_only, pb_t_http *r);
void pb_t_http_free(pb_t_http *r);
/* The value of header name (case-insensitive) into out, or NULL. */
const char *pb_t_http_header(const pb_t_http *r, const char *name, char *out,
                             size_t cap);
/* Asserting: receives one response into r. */
void pb_t_recv_http(const pb_daemon *d, int fd, int head_only, pb_t_http *r);
/* Sends request, receives one response and checks its status,
 * Content-Type (unless NULL) and body (unless NULL). */
void pb_t_expect_http(const pb_daemon *d, int fd, const char *request, int status,
                      const char *content_type, const char *body);
/* An error response: that status, application/json, the body exactly
 * {"error": "...", "code": "CODE"}. */
void pb_t_expect_http_error(const pb_daemon *d, int fd, const char *request,
                            int status, const char *code);

/* Printable form of bytes (\xNN escapes), malloc'd. */
char *pb_t_escape(const void *data, size_t len);

/* The reference exchanges; asserts. */
size_t pb_vectors_load(pb_exchange **out);
const pb_exchange *pb_vector(const pb_exchange *v, size_t n, const char *name);
void pb_vectors_free(pb_exchange *v, size_t n);

/* Runs argv[0] with env entries ("K=V") added and input on stdin. */
void pb_run(const char *const argv[], const char *const env[],
            const void *input, size_t input_len, pb_run_result *r);
void pb_run_free(pb_run_result *r);


/* --- TLS --------------------------------------------------------------------
 *
 * The certificates come from tests/tls/make-certs.sh (see its list). TLS
 * clients are other programs, never the daemon's code: Python's ssl module
 * (tests/tls/tls-client.py) or `openssl s_client`. Each runs with one end
 * of a socket pair as its stdin and stdout, so that the test reads and
 * writes the other end, pb_t_tls.fd, as if it were a plain connection:
 * what the test sends goes over TLS, what the daemon answers comes back,
 * and the daemon closing the TLS connection closes fd's peer (EOF).
 */
#define PB_T_TLS_SRC PB_TEST_SRCDIR "/tests/tls"

/* Makes the test certificates in dir; asserts. */
void pb_t_make_certs(const char *dir);

typedef enum pb_t_tls_tool {
    PB_T_TLS_PYTHON = 0,        /* tests/tls/tls-client.py */
    PB_T_TLS_S_CLIENT           /* openssl s_client -quiet */
} pb_t_tls_tool;

typedef struct pb_t_tls_opts {
    pb_t_tls_tool tool;
    /* "client" for DIR/client.crt and DIR/client.key (DIR: the daemon's
     * directory); NULL for no client certificate. */
    const char *client;
    /* "1.2" or "1.3", NULL for the tool's default. */
    const char *min_version;
    const char *max_version;
    /* The CA the server is verified with, "ca" (DIR/ca.crt) when NULL. */
    const char *ca;
    /* More arguments for the tool (NULL-terminated), or NULL. */
    const char *const *extra;
} pb_t_tls_opts;

typedef struct pb_t_tls {
    pid_t pid;                  /* the client process */
    int fd;                     /* the test's end of the socket pair */
    /* Python: "OK TLSv1.3 CN" (CN: the server certificate's commonName)
     * or "FAIL reason"; s_client: "started". */
    char status[512];
    char err_path[192];         /* the client's stderr */
} pb_t_tls;

/* Starts a TLS client to PORTn of the daemon. Python: waits for the end of
 * the handshake and returns 0 when it succeeded (as far as the client can
 * tell: under TLS 1.3 the server refuses a client certificate only after),
 * -1 when it failed (fd is then -1). s_client: 0 once started. */
int pb_t_tls_open(const pb_daemon *d, int port_index, const pb_t_tls_opts *o,
                  pb_t_tls *c);
/* pb_t_tls_open(), asserting that the handshake succeeded. */
void pb_t_tls_dial(const pb_daemon *d, int port_index, const pb_t_tls_opts *o,
                   pb_t_tls *c);
/* Closes fd and ends the client process. */
void pb_t_tls_close(pb_t_tls *c);
/* The client's stderr so far, malloc'd. */
char *pb_t_tls_stderr(const pb_t_tls *c);
/* The server certificate's commonName from a Python client's status ("" if
 * none). */
const char *pb_t_tls_peer_cn(const pb_t_tls *c, char *out, size_t cap);

/* The integer at a dotted path of a stats reply ("connections.refused_by.tls"),
 * -1 when absent. */
long long pb_t_stat_path(const json_t *stats, const char *path);
/* Polls (with a hang guard) until the counter at path is at least want;
 * its last value. */
long long pb_t_wait_stat_at_least(const pb_daemon *d, const char *path, long long want);

/*
 * The asserting helpers remember where a test called them, so that a
 * failure names the test's line rather than the harness's.
 */
void pb_t_at(const char *file, int line);

#ifndef PB_T_HARNESS_IMPL
#define PB_T_AT(call) (pb_t_at(__FILE__, __LINE__), call)
#define pb_daemon_start(...) PB_T_AT(pb_daemon_start(__VA_ARGS__))
#define pb_daemon_launch(...) PB_T_AT(pb_daemon_launch(__VA_ARGS__))
#define pb_daemon_stop_clean(...) PB_T_AT(pb_daemon_stop_clean(__VA_ARGS__))
#define pb_daemon_wait_clean(...) PB_T_AT(pb_daemon_wait_clean(__VA_ARGS__))
#define pb_daemon_signal(...) PB_T_AT(pb_daemon_signal(__VA_ARGS__))
#define pb_dial(...) PB_T_AT(pb_dial(__VA_ARGS__))
#define pb_dial_unix(...) PB_T_AT(pb_dial_unix(__VA_ARGS__))
#define pb_t_send(...) PB_T_AT(pb_t_send(__VA_ARGS__))
#define pb_t_recv_frame(...) PB_T_AT(pb_t_recv_frame(__VA_ARGS__))
#define pb_t_recv_result(...) PB_T_AT(pb_t_recv_result(__VA_ARGS__))
#define pb_t_expect_reply(...) PB_T_AT(pb_t_expect_reply(__VA_ARGS__))
#define pb_t_expect_error(...) PB_T_AT(pb_t_expect_error(__VA_ARGS__))
#define pb_t_expect_line(...) PB_T_AT(pb_t_expect_line(__VA_ARGS__))
#define pb_t_expect_err_line(...) PB_T_AT(pb_t_expect_err_line(__VA_ARGS__))
#define pb_t_expect_eof(...) PB_T_AT(pb_t_expect_eof(__VA_ARGS__))
#define pb_t_expect_bytes(...) PB_T_AT(pb_t_expect_bytes(__VA_ARGS__))
#define pb_t_check_serving(...) PB_T_AT(pb_t_check_serving(__VA_ARGS__))
#define pb_t_stats(...) PB_T_AT(pb_t_stats(__VA_ARGS__))
#define pb_t_wait_stat(...) PB_T_AT(pb_t_wait_stat(__VA_ARGS__))
#define pb_t_tls_dial(...) PB_T_AT(pb_t_tls_dial(__VA_ARGS__))
#define pb_t_wait_stat_at_least(...) PB_T_AT(pb_t_wait_stat_at_least(__VA_ARGS__))
#define pb_t_make_certs(...) PB_T_AT(pb_t_make_certs(__VA_ARGS__))
#endif

#endif

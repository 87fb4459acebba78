/*
 * cli.c - plugboard-cli, the command-line client: sends one request (or a
 * few JSON requests, or with the line framing a batch of lines) to a daemon
 * and prints the replies; with --follow it stays connected and prints the
 * frames the daemon pushes.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "buffer.h"
#include "frame.h"
#include "json_dump.h"
#include "line.h"
#include "stats_table.h"
#include "tls_client.h"

#define PROGRAM "plugboard-cli"

enum {
    EXIT_REPLY_ERROR = 1,   /* the daemon answered with an error */
    EXIT_USAGE = 2,
    EXIT_IO = 3             /* connect, I/O, timeout, malformed reply */
};

/* The client trusts its own daemon's replies far beyond the daemon's
 * request limit, yet still refuses a length that can only be garbage. */
#define MAX_REPLY_BYTES ((size_t)1 << 30)
#define READ_CHUNK 65536
/* Standard input is read no further while this much is still unsent, so a
 * daemon that reads slowly cannot make the client buffer all of it. */
#define STDIN_HIGH_WATER ((size_t)1 << 20)
/* Where JSON requests go when no address is given: the frame listener of
 * the shipped configuration. */
#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT "65432"

typedef enum form {
    FORM_ACTION,            /* ACTION VALUE, the guide's app-client */
    FORM_JSON,              /* --json TEXT, or REQUEST arguments */
    FORM_FILE,
    FORM_LINE
} form;

typedef struct options {
    form form;
    const char *unix_path;
    const char *host;
    const char *port;
    char *json_text;        /* --json TEXT */
    int stats;              /* the stats request, its reply as tables */
    int stats_json;         /* stats --json: the reply's JSON instead */
    char **requests;        /* FORM_JSON: the JSON texts to send */
    int nrequests;
    const char *file;
    const char *type;
    const char *encoding;
    int print_header;
    int raw;
    int follow;             /* print pushes until the daemon closes */
    const char *timeout_text;
    int timeout_ms;         /* -1: wait forever */
    char **args;            /* ACTION VALUE, or the TEXTs of --line */
    int nargs;
    int tls;
    const char *ca;         /* NULL: the system's trusted certificates */
    const char *cert;
    const char *key;
    const char *servername; /* NULL: HOST */
    int insecure;
} options;

/* One connection and the bytes moving through it. */
typedef struct session {
    int fd;
    SSL *ssl;               /* NULL without --tls */
    short tls_recv_wait;    /* POLLOUT while SSL_read waits to write */
    short tls_close_wait;   /* what a blocked close_notify waits for */
    char peer[128];         /* host:port or socket path, for messages */
    const options *opt;
    pb_buf out;
    int write_errno;        /* why the daemon stopped taking our bytes */
    int write_shut;
    pb_buf in;
    int read_errno;         /* set when the connection was reset */
    int eof;
    int stdin_open;         /* --line without TEXT: still reading stdin */
    int stdin_last;         /* last byte read from stdin, -1 before any */
    unsigned long lines_sent;
    unsigned long lines_received;
    unsigned long frames_sent;
    unsigned long replies_received;
    sigset_t poll_mask;     /* signals let in only while waiting */
    int status;
} session;

static const char synopsis[] =
    "Usage: " PROGRAM " [OPTIONS] HOST PORT ACTION VALUE\n"
    "       " PROGRAM " [OPTIONS] -u PATH ACTION VALUE\n"
    "       " PROGRAM " [OPTIONS] HOST PORT stats [--json]\n"
    "       " PROGRAM " [OPTIONS] [HOST PORT] --json TEXT\n"
    "       " PROGRAM " [OPTIONS] [HOST PORT] REQUEST...\n"
    "       " PROGRAM " [OPTIONS] HOST PORT --file FILE [--type TYPE] [--encoding ENC]\n"
    "       " PROGRAM " [OPTIONS] HOST PORT --line [TEXT...]\n";

static const char help_text[] =
    "\n"
    "Send a request to a Plugboard daemon and print its reply. -u PATH can take\n"
    "the place of HOST PORT in every form.\n"
    "\n"
    "ACTION \"search\" sends the text/json content {\"action\": \"search\", \"value\": VALUE};\n"
    "any other ACTION sends binary/custom-client-binary-type content ACTION+VALUE.\n"
    "\"stats\" alone sends {\"action\": \"stats\"} and prints the daemon's counters as\n"
    "a summary and tables, or with --json as the JSON object the daemon sent (the\n"
    "configuration must route that action to the stats plugin).\n"
    "Each REQUEST, a JSON object such as '{\"action\": \"subscribe\", \"topic\": \"news\"}',\n"
    "is sent as text/json content, all on one connection, and each reply is\n"
    "printed in turn. Without HOST PORT or -u PATH, JSON requests go to\n"
    DEFAULT_HOST " port " DEFAULT_PORT ".\n"
    "\n"
    "Options:\n"
    "  -u, --unix PATH        connect to a Unix-domain socket instead of HOST PORT\n"
    "  -j, --json TEXT        send TEXT (valid JSON) as text/json utf-8 content;\n"
    "                         after stats (or as --json stats), with no TEXT: print\n"
    "                         the stats reply as JSON\n"
    "  -f, --file FILE        send the file's bytes as content (\"-\" = standard input)\n"
    "  -T, --type TYPE        content-type (default application/octet-stream for\n"
    "                         --file); overrides the type of any form\n"
    "  -E, --encoding ENC     content-encoding (default binary for files and binary\n"
    "                         sends, utf-8 for JSON)\n"
    "  -l, --line             use the line framing: send each TEXT (or, with none,\n"
    "                         each line of standard input) as one line and print\n"
    "                         each reply line\n"
    "  -F, --follow           after the replies, stay connected and print every frame\n"
    "                         the daemon pushes, one line each, until interrupted\n"
    "                         (SIGINT, SIGTERM) or until the daemon closes\n"
    "  -H, --header           also print the reply's JSON header on standard error\n"
    "  -r, --raw              print the reply content exactly as received\n"
    "  -w, --timeout SECONDS  give up after SECONDS without progress while connecting\n"
    "                         or waiting for a reply (default 10; 0 = never)\n"
    "      --tls              speak TLS (1.2 or later) to the daemon\n"
    "      --ca FILE          trust the CA certificates in FILE (PEM) instead of the\n"
    "                         system's when verifying the daemon's certificate\n"
    "      --cert FILE        present the client certificate in FILE (PEM)\n"
    "      --key FILE         the client certificate's private key (PEM; default:\n"
    "                         the --cert file)\n"
    "      --servername NAME  the name the daemon's certificate must carry, also sent\n"
    "                         as SNI (default HOST; with -u, give it or --insecure)\n"
    "      --insecure         do not verify the daemon's certificate\n"
    "  -h, --help             print this help and exit\n"
    "  -V, --version          print the version and exit\n"
    "\n"
    "--ca, --cert, --key, --servername and --insecure each imply --tls.\n"
    "\n"
    "A text/json reply whose only member is \"result\" prints that member; any\n"
    "other reply prints its content. With --follow, pushes print the same way;\n"
    "a push has no \"result\", so it prints as its JSON content, such as\n"
    "{\"topic\": \"news\", \"message\": \"hello\"}. An error reply is printed on\n"
    "standard error.\n"
    "\n"
    "Exit status: 0 success (with --follow: interrupted, or the daemon closed in\n"
    "good order), 1 the daemon replied or pushed an error, 2 usage error,\n"
    "3 connection, TLS handshake, I/O, timeout or malformed reply.\n";

static void message(const char *format, ...) __attribute__((format(printf, 1, 2)));

static void message(const char *format, ...)
{
    va_list ap;
    fputs(PROGRAM ": ", stderr);
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage_error(const char *format, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *format, ...)
{
    va_list ap;
    fputs(PROGRAM ": ", stderr);
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fprintf(stderr, "\n%sTry '" PROGRAM " --help' for more information.\n", synopsis);
    exit(EXIT_USAGE);
}

static void out_of_memory(void) __attribute__((noreturn));

static void out_of_memory(void)
{
    message("out of memory");
    exit(EXIT_IO);
}

static int parse_timeout(const char *text)
{
    char *end;
    errno = 0;
    double seconds = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(seconds) || seconds < 0)
        usage_error("invalid timeout '%s': expected a number of seconds", text);
    if (seconds == 0)
        return -1;
    double ms = seconds * 1000.0;
    if (ms >= INT_MAX)
        return INT_MAX;
    /* Rounded up, so that a tiny timeout still waits. */
    int whole = (int)ms;
    return whole < ms ? whole + 1 : whole;
}

static void parse_port(const char *port)
{
    char *end;
    errno = 0;
    long n = strtol(port, &end, 10);
    if (end == port || *end != '\0' || errno == ERANGE || n < 1 || n > 65535)
        usage_error("invalid port '%s': expected a number from 1 to 65535", port);
}

/* A REQUEST argument: JSON object text, which no host name, action or
 * line of text is taken for. */
static int is_json_request(const char *arg)
{
    arg += strspn(arg, " \t\r\n");
    return *arg == '{';
}

static void parse_options(int argc, char **argv, options *o)
{
    enum { OPT_TLS = 256, OPT_CA, OPT_CERT, OPT_KEY, OPT_SERVERNAME, OPT_INSECURE };
    static const struct option long_options[] = {
        { "unix",     required_argument, NULL, 'u' },
        { "json",     required_argument, NULL, 'j' },
        { "file",     required_argument, NULL, 'f' },
        { "type",     required_argument, NULL, 'T' },
        { "encoding", required_argument, NULL, 'E' },
        { "line",     no_argument,       NULL, 'l' },
        { "follow",   no_argument,       NULL, 'F' },
        { "header",   no_argument,       NULL, 'H' },
        { "raw",      no_argument,       NULL, 'r' },
        { "timeout",  required_argument, NULL, 'w' },
        { "tls",        no_argument,       NULL, OPT_TLS },
        { "ca",         required_argument, NULL, OPT_CA },
        { "cert",       required_argument, NULL, OPT_CERT },
        { "key",        required_argument, NULL, OPT_KEY },
        { "servername", required_argument, NULL, OPT_SERVERNAME },
        { "insecure",   no_argument,       NULL, OPT_INSECURE },
        { "help",     no_argument,       NULL, 'h' },
        { "version",  no_argument,       NULL, 'V' },
        { NULL, 0, NULL, 0 }
    };
    int line = 0;
    const char *json_bare = NULL;   /* --json (or -j) last, without TEXT */
    int c;

    memset(o, 0, sizeof *o);
    o->timeout_text = "10";
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":u:j:f:T:E:lFHrw:hV", long_options, NULL)) != -1) {
        switch (c) {
        case 'u': o->unix_path = optarg; break;
        case 'j': o->json_text = optarg; break;
        case 'f': o->file = optarg; break;
        case 'T': o->type = optarg; break;
        case 'E': o->encoding = optarg; break;
        case 'l': line = 1; break;
        case 'F': o->follow = 1; break;
        case 'H': o->print_header = 1; break;
        case 'r': o->raw = 1; break;
        case 'w': o->timeout_text = optarg; break;
        case OPT_TLS: o->tls = 1; break;
        case OPT_CA: o->ca = optarg; break;
        case OPT_CERT: o->cert = optarg; break;
        case OPT_KEY: o->key = optarg; break;
        case OPT_SERVERNAME: o->servername = optarg; break;
        case OPT_INSECURE: o->insecure = 1; break;
        case 'h':
            fputs(synopsis, stdout);
            fputs(help_text, stdout);
            exit(fflush(stdout) == 0 ? 0 : EXIT_IO);
        case 'V':
            printf("%s %s\n", PROGRAM, PACKAGE_VERSION);
            exit(fflush(stdout) == 0 ? 0 : EXIT_IO);
        case ':':
            if (optopt == 'j' && optind == argc) {
                json_bare = argv[optind - 1];
                break;
            }
            usage_error("option '%s' needs an argument", argv[optind - 1]);
        default:
            if (optopt != 0)
                usage_error("unknown option '-%c'", optopt);
            usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    o->timeout_ms = parse_timeout(o->timeout_text);
    /* getopt has moved the operands last: a bare --json must follow stats. */
    if (json_bare != NULL && (optind == argc || strcmp(argv[argc - 1], "stats") != 0))
        usage_error("option '%s' needs an argument", json_bare);
    /* "stats" is no JSON text, so `--json stats` can only ask for the
     * stats reply in JSON. */
    if (o->json_text != NULL && strcmp(o->json_text, "stats") == 0) {
        o->json_text = NULL;
        o->stats = o->stats_json = 1;
    }
    if (o->ca || o->cert || o->key || o->servername || o->insecure)
        o->tls = 1;
    if (o->key != NULL && o->cert == NULL)
        usage_error("--key needs --cert");
    if (o->servername != NULL && o->servername[0] == '\0')
        usage_error("--servername must not be empty");
    /* A socket path is no name a certificate can carry. */
    if (o->tls && o->unix_path != NULL && o->servername == NULL && !o->insecure)
        usage_error("TLS over -u PATH needs --servername NAME (or --insecure)");

    if ((o->json_text != NULL) + (o->file != NULL) + line > 1)
        usage_error("--json, --file and --line exclude each other");
    if (o->follow && line)
        usage_error("--follow needs the frame framing, not --line");
    o->form = o->json_text ? FORM_JSON : o->file ? FORM_FILE : line ? FORM_LINE : FORM_ACTION;

    o->args = argv + optind;
    o->nargs = argc - optind;
    int json_first = o->nargs > 0 && is_json_request(o->args[0]);
    if (o->unix_path == NULL) {
        if ((o->json_text != NULL && o->nargs == 0) || (json_first && o->form == FORM_ACTION)) {
            o->host = DEFAULT_HOST;
            o->port = DEFAULT_PORT;
        } else {
            if (o->nargs < 2)
                usage_error("missing HOST and PORT (or -u PATH)");
            o->host = o->args[0];
            o->port = o->args[1];
            parse_port(o->port);
            o->args += 2;
            o->nargs -= 2;
        }
    }
    if (o->form == FORM_ACTION && o->nargs > 0 && is_json_request(o->args[0]))
        o->form = FORM_JSON;
    if (o->json_text != NULL) {
        o->requests = &o->json_text;
        o->nrequests = 1;
    } else if (o->form == FORM_JSON) {
        o->requests = o->args;
        o->nrequests = o->nargs;
    }

    switch (o->form) {
    case FORM_ACTION:
        if (o->nargs == 1 && strcmp(o->args[0], "stats") == 0 && !o->stats) {
            o->stats = 1;
            o->stats_json = json_bare != NULL;
            break;
        }
        if (o->stats) {
            if (o->nargs != 0)
                usage_error("unexpected argument '%s'", o->args[0]);
            break;
        }
        if (o->nargs != 2)
            usage_error("expected ACTION VALUE");
        break;
    case FORM_JSON:
        if (o->json_text != NULL && o->nargs != 0)
            usage_error("unexpected argument '%s'", o->args[0]);
        /* --json sends any JSON text; arguments are requests only when
         * they are objects, so that a stray word is not sent. */
        for (int i = 0; o->json_text == NULL && i < o->nrequests; i++)
            if (!is_json_request(o->requests[i]))
                usage_error("'%s' is no JSON object: every REQUEST must be one", o->requests[i]);
        break;
    case FORM_FILE:
        if (o->nargs != 0)
            usage_error("unexpected argument '%s'", o->args[0]);
        break;
    case FORM_LINE:
        if (o->type || o->encoding || o->print_header)
            usage_error("--type, --encoding and --header do not apply to --line");
        for (int i = 0; i < o->nargs; i++)
            if (strchr(o->args[i], '\n') != NULL)
                usage_error("a TEXT of --line must be a single line");
        break;
    }
}

static void read_whole_file(const char *path, pb_buf *content)
{
    int from_stdin = strcmp(path, "-") == 0;
    const char *name = from_stdin ? "standard input" : path;
    FILE *f = from_stdin ? stdin : fopen(path, "rb");
    if (f == NULL) {
        message("cannot open %s: %s", path, strerror(errno));
        exit(EXIT_USAGE);
    }
    for (;;) {
        unsigned char *p = pb_buf_extend(content, READ_CHUNK);
        if (p == NULL)
            out_of_memory();
        size_t n = fread(p, 1, READ_CHUNK, f);
        pb_buf_truncate(content, content->len - (READ_CHUNK - n));
        if (n < READ_CHUNK)
            break;
    }
    if (ferror(f)) {
        message("cannot read %s: %s", name, strerror(errno));
        exit(EXIT_IO);
    }
    if (!from_stdin)
        fclose(f);
}

/* The guide's search request, written the way its Python client writes it. */
static void build_search(const char *value, pb_buf *content)
{
    json_t *v = json_string(value);
    if (v == NULL) {
        /* json_string() fails alike on bad UTF-8 and on no memory. */
        v = json_string_nocheck(value);
        if (v == NULL)
            out_of_memory();
        json_decref(v);
        usage_error("VALUE is not valid UTF-8");
    }
    json_t *request = json_object();
    if (request == NULL || json_object_set_new(request, "action", json_string("search")) != 0
        || json_object_set_new(request, "value", v) != 0 || pb_json_dump(content, request) != 0)
        out_of_memory();
    json_decref(request);
}

/* Frames content with the type and encoding of its form, or those of
 * --type and --encoding. */
static void append_frame(const options *o, pb_buf *out, const pb_buf *content,
                         const char *type, const char *encoding)
{
    if (o->type != NULL) {
        /* JSON content is text whatever form carried it in. */
        if (o->form == FORM_FILE && strcmp(o->type, "text/json") == 0)
            encoding = "utf-8";
        type = o->type;
    }
    if (o->encoding != NULL)
        encoding = o->encoding;
    if (pb_frame_encode(out, type, encoding, pb_buf_head(content), pb_buf_used(content)) != 0) {
        message("cannot encode the request: out of memory or a header over 65535 bytes");
        exit(EXIT_USAGE);
    }
}

static void append_json_request(const options *o, pb_buf *out, const char *text)
{
    json_error_t error;
    json_t *check = json_loads(text, JSON_DECODE_ANY, &error);
    if (check == NULL)
        usage_error("'%s' is not valid JSON: %s (line %d, column %d)", text, error.text,
                    error.line, error.column);
    json_decref(check);
    pb_buf content = PB_BUF_INIT;
    if (pb_buf_append_str(&content, text) != 0)
        out_of_memory();
    append_frame(o, out, &content, "text/json", "utf-8");
    pb_buf_free(&content);
}

/* The request frames into s->out, counted in s->frames_sent. */
static void build_frame_requests(const options *o, session *s)
{
    pb_buf content = PB_BUF_INIT;
    const char *type;
    const char *encoding;

    if (o->form == FORM_JSON) {
        for (int i = 0; i < o->nrequests; i++)
            append_json_request(o, &s->out, o->requests[i]);
        s->frames_sent = (unsigned long)o->nrequests;
        return;
    }
    switch (o->form) {
    case FORM_ACTION:
        if (o->stats) {
            if (pb_buf_append_str(&content, "{\"action\": \"stats\"}") != 0)
                out_of_memory();
            type = "text/json";
            encoding = "utf-8";
        } else if (strcmp(o->args[0], "search") == 0) {
            build_search(o->args[1], &content);
            type = "text/json";
            encoding = "utf-8";
        } else {
            if (pb_buf_append_str(&content, o->args[0]) != 0
                || pb_buf_append_str(&content, o->args[1]) != 0)
                out_of_memory();
            type = "binary/custom-client-binary-type";
            encoding = "binary";
        }
        break;
    default:
        read_whole_file(o->file, &content);
        type = "application/octet-stream";
        encoding = "binary";
        break;
    }
    append_frame(o, &s->out, &content, type, encoding);
    s->frames_sent = 1;
    pb_buf_free(&content);
}

static void build_line_request(const options *o, session *s)
{
    for (int i = 0; i < o->nargs; i++) {
        if (pb_buf_append_str(&s->out, o->args[i]) != 0 || pb_buf_append_byte(&s->out, '\n') != 0)
            out_of_memory();
        s->lines_sent++;
    }
}

/* Waits for a non-blocking connect; 0 or an errno value. */
static int finish_connect(int fd, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int r;
    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        continue;
    if (r < 0)
        return errno;
    if (r == 0)
        return ETIMEDOUT;
    int error = 0;
    socklen_t len = sizeof error;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0)
        return errno;
    return error;
}

/* Starts and completes a connect; 0 or an errno value (fd closed then). */
static int connect_to(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    int error = 0;
    if (connect(fd, sa, len) != 0) {
        error = errno;
        if (error == EINPROGRESS || error == EINTR)
            error = finish_connect(fd, timeout_ms);
    }
    if (error != 0)
        close(fd);
    return error;
}

static void connect_unix(session *s, const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof addr.sun_path)
        usage_error("socket path too long: %s", path);
    strcpy(addr.sun_path, path);
    snprintf(s->peer, sizeof s->peer, "%s", path);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int error = fd < 0 ? errno : connect_to(fd, (struct sockaddr *)&addr, sizeof addr,
                                            s->opt->timeout_ms);
    if (error != 0) {
        message("cannot connect to %s: %s", path, strerror(error));
        exit(EXIT_IO);
    }
    s->fd = fd;
}

static void format_peer(const struct addrinfo *ai, char *peer, size_t size)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(peer, size, "(unprintable address)");
        return;
    }
    snprintf(peer, size, ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* Tries every address HOST resolves to; each failure is reported only
 * when none of them connects. */
static void connect_tcp(session *s, const char *host, const char *port)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    struct addrinfo *list;
    int r = getaddrinfo(host, port, &hints, &list);
    if (r != 0) {
        message("cannot resolve %s: %s", host, r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
        exit(EXIT_IO);
    }
    pb_buf failures = PB_BUF_INIT;
    for (const struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
        format_peer(ai, s->peer, sizeof s->peer);
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        int error = fd < 0 ? errno : connect_to(fd, ai->ai_addr, ai->ai_addrlen,
                                                s->opt->timeout_ms);
        if (error == 0) {
            s->fd = fd;
            break;
        }
        if (pb_buf_append_str(&failures, PROGRAM ": cannot connect to ") != 0
            || pb_buf_append_str(&failures, s->peer) != 0
            || pb_buf_append_str(&failures, ": ") != 0
            || pb_buf_append_str(&failures, strerror(error)) != 0
            || pb_buf_append_byte(&failures, '\n') != 0)
            out_of_memory();
    }
    freeaddrinfo(list);
    if (s->fd < 0) {
        fwrite(pb_buf_head(&failures), 1, pb_buf_used(&failures), stderr);
        exit(EXIT_IO);
    }
    pb_buf_free(&failures);
}

/* ---- TLS ----------------------------------------------------------------- */

/* The name the daemon's certificate must carry: --servername, else HOST;
 * NULL over a Unix socket with --insecure and no --servername. */
static const char *tls_name(const options *o)
{
    return o->servername != NULL ? o->servername : o->host;
}

static SSL_CTX *tls_context(const options *o)
{
    const pb_tls_client_options tls = {
        .ca = o->ca, .cert = o->cert, .key = o->key, .name = tls_name(o),
        .insecure = o->insecure,
    };
    char error[600];
    pb_tls_client_failure failure;
    SSL_CTX *ctx = pb_tls_client_context(&tls, error, sizeof error, &failure);
    if (ctx == NULL) {
        message("%s", error);
        exit(failure == PB_TLS_CLIENT_USAGE ? EXIT_USAGE : EXIT_IO);
    }
    /* Like send(), a write returns once part of the buffer is out; and
     * send_pending() retries with the head of a buffer that may have grown
     * and moved since. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return ctx;
}

static void handshake_failure(const session *s, int error) __attribute__((noreturn));

static void handshake_failure(const session *s, int error)
{
    long verified = SSL_get_verify_result(s->ssl);

    if (verified != X509_V_OK && !s->opt->insecure) {
        int mismatch = verified == X509_V_ERR_HOSTNAME_MISMATCH
                       || verified == X509_V_ERR_IP_ADDRESS_MISMATCH;
        message("cannot connect to %s: certificate verification failed: %s%s%s", s->peer,
                X509_verify_cert_error_string(verified), mismatch ? " for " : "",
                mismatch ? tls_name(s->opt) : "");
    } else if (error == SSL_ERROR_SSL) {
        message("cannot connect to %s: TLS handshake failed: %s", s->peer, pb_tls_client_reason());
    } else if (error == SSL_ERROR_SYSCALL && errno != 0) {
        message("cannot connect to %s: TLS handshake: %s", s->peer, strerror(errno));
    } else {
        message("cannot connect to %s: connection closed during the TLS handshake", s->peer);
    }
    exit(EXIT_IO);
}

/* Completes the handshake on the non-blocking socket, each wait for the
 * socket held to the timeout like the connect before it. */
static void tls_handshake(session *s, SSL_CTX *ctx)
{
    const char *name = tls_name(s->opt);

    s->ssl = SSL_new(ctx);
    if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1)
        out_of_memory();
    /* RFC 6066: a server name indication is a host name, never an address. */
    if (name != NULL && !pb_tls_is_ip_literal(name) && SSL_set_tlsext_host_name(s->ssl, name) != 1)
        usage_error("invalid server name '%s'", name);
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(s->ssl);
        if (r == 1)
            return;
        int error = SSL_get_error(s->ssl, r);
        if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE)
            handshake_failure(s, error);
        struct pollfd p = { .fd = s->fd,
                            .events = error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT };
        while ((r = poll(&p, 1, s->opt->timeout_ms)) < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            message("%s: poll: %s", s->peer, strerror(errno));
            exit(EXIT_IO);
        }
        if (r == 0) {
            message("cannot connect to %s: timed out after %s s in the TLS handshake",
                    s->peer, s->opt->timeout_text);
            exit(EXIT_IO);
        }
    }
}

static void write_stdout(const void *data, size_t len)
{
    if (len > 0 && fwrite(data, 1, len, stdout) != len) {
        message("cannot write to standard output: %s", strerror(errno));
        exit(EXIT_IO);
    }
}

static void print_error_member(const json_t *value)
{
    if (json_is_string(value)) {
        fwrite(json_string_value(value), 1, json_string_length(value), stderr);
        return;
    }
    pb_buf text = PB_BUF_INIT;
    if (pb_json_dump(&text, value) != 0)
        out_of_memory();
    fwrite(pb_buf_head(&text), 1, pb_buf_used(&text), stderr);
    pb_buf_free(&text);
}

/* {"error": ..., "code": ...}: reports it and returns 1, else 0. */
static int report_error_reply(const json_t *content)
{
    const json_t *error = json_object_get(content, "error");
    const json_t *code = json_object_get(content, "code");
    if (error == NULL || code == NULL)
        return 0;
    fflush(stdout);
    fputs(PROGRAM ": ", stderr);
    print_error_member(code);
    fputs(": ", stderr);
    print_error_member(error);
    fputc('\n', stderr);
    return 1;
}

static int print_frame_reply(const session *s, const pb_message *m)
{
    if (s->opt->print_header) {
        pb_buf header = PB_BUF_INIT;
        if (pb_json_dump(&header, m->header) != 0 || pb_buf_append_byte(&header, '\n') != 0)
            out_of_memory();
        fwrite(pb_buf_head(&header), 1, pb_buf_used(&header), stderr);
        pb_buf_free(&header);
    }

    json_t *content = NULL;
    if (strcmp(m->content_type, "text/json") == 0)
        content = json_loadb((const char *)m->content, m->content_length,
                             JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (json_is_object(content) && report_error_reply(content)) {
        json_decref(content);
        return EXIT_REPLY_ERROR;
    }

    /* Tables only for what is a stats reply, whatever the route. */
    if (s->opt->stats && !s->opt->stats_json && !s->opt->raw
        && json_object_get(content, "uptime") != NULL) {
        pb_buf table = PB_BUF_INIT;
        if (stats_table_write(&table, content) != 0)
            out_of_memory();
        write_stdout(pb_buf_head(&table), pb_buf_used(&table));
        pb_buf_free(&table);
        json_decref(content);
        return 0;
    }

    /* {"result": X} alone prints X; a reply with more to say than its result
     * (an id, a topic) prints whole, so that nothing is lost. */
    const json_t *result = json_is_object(content) && json_object_size(content) == 1
                           ? json_object_get(content, "result") : NULL;
    if (s->opt->raw) {
        write_stdout(m->content, m->content_length);
        /* Frames that keep coming need something between them. */
        if (s->opt->follow)
            write_stdout("\n", 1);
    } else if (json_is_string(result)) {
        write_stdout(json_string_value(result), json_string_length(result));
        write_stdout("\n", 1);
    } else if (result != NULL) {
        pb_buf text = PB_BUF_INIT;
        if (pb_json_dump(&text, result) != 0 || pb_buf_append_byte(&text, '\n') != 0)
            out_of_memory();
        write_stdout(pb_buf_head(&text), pb_buf_used(&text));
        pb_buf_free(&text);
    } else {
        write_stdout(m->content, m->content_length);
        write_stdout("\n", 1);
    }
    json_decref(content);
    return 0;
}

/* One reply line, without its \n: `ERR <code> <text>` or content. */
static void print_reply_line(session *s, const unsigned char *line, size_t len)
{
    if (len >= 4 && memcmp(line, "ERR ", 4) == 0) {
        const unsigned char *code = line + 4;
        const unsigned char *space = memchr(code, ' ', len - 4);
        size_t code_len = space ? (size_t)(space - code) : len - 4;
        fflush(stdout);
        fprintf(stderr, PROGRAM ": %.*s", (int)code_len, (const char *)code);
        if (space != NULL) {
            fputs(": ", stderr);
            fwrite(space + 1, 1, len - 4 - code_len - 1, stderr);
        }
        fputc('\n', stderr);
        s->status = EXIT_REPLY_ERROR;
        return;
    }
    write_stdout(line, len);
    write_stdout("\n", 1);
}

static void io_failure(const session *s, const char *what, int error) __attribute__((noreturn));

static void io_failure(const session *s, const char *what, int error)
{
    fflush(stdout);
    if (error != 0)
        message("%s: %s: %s", s->peer, what, strerror(error));
    else
        message("%s: %s", s->peer, what);
    exit(EXIT_IO);
}

/* SSL_write and SSL_read made to answer as send() and recv() do, so that
 * one loop drives both transports: -1 with EAGAIN until the socket is
 * ready, 0 at the daemon's close, -1 with errno for a broken connection.
 * A TLS protocol failure ends the run. */
static ssize_t tls_result(const session *s, int error, const char *what)
{
    ssize_t rc = pb_tls_client_io_failure(error);
    if (rc < 0 && errno == EPROTO) {
        fflush(stdout);
        message("%s: %s: TLS: %s", s->peer, what, pb_tls_client_reason());
        exit(EXIT_IO);
    }
    return rc;
}

static ssize_t tls_send(session *s, const void *data, size_t len)
{
    size_t n;
    ERR_clear_error();
    if (SSL_write_ex(s->ssl, data, len, &n) == 1)
        return (ssize_t)n;
    ssize_t r = tls_result(s, SSL_get_error(s->ssl, 0), "cannot send");
    if (r == 0) {
        errno = EPIPE;
        r = -1;
    }
    return r;
}

static ssize_t tls_recv(session *s, void *into, size_t len)
{
    size_t n;
    ERR_clear_error();
    if (SSL_read_ex(s->ssl, into, len, &n) == 1) {
        s->tls_recv_wait = 0;
        return (ssize_t)n;
    }
    int error = SSL_get_error(s->ssl, 0);
    /* A read may have to write (an answer to the daemon's key update) and
     * find the socket full. */
    s->tls_recv_wait = error == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    return tls_result(s, error, "cannot receive");
}

/* Tells the daemon that no more lines come: with TLS, close_notify first,
 * so that the end reads as a clean one and not as a cut connection. */
static void end_writes(session *s)
{
    if (s->ssl != NULL) {
        ERR_clear_error();
        int r = SSL_shutdown(s->ssl);
        if (r < 0 && SSL_get_error(s->ssl, r) == SSL_ERROR_WANT_WRITE) {
            s->tls_close_wait = POLLOUT;
            return;
        }
        /* Any other failure is a broken connection, which reading reports. */
        ERR_clear_error();
        s->tls_close_wait = 0;
    }
    shutdown(s->fd, SHUT_WR);
    s->write_shut = 1;
}

static void send_pending(session *s)
{
    while (pb_buf_used(&s->out) > 0) {
        ssize_t n = s->ssl != NULL
                    ? tls_send(s, pb_buf_head(&s->out), pb_buf_used(&s->out))
                    : send(s->fd, pb_buf_head(&s->out), pb_buf_used(&s->out), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno != EPIPE && errno != ECONNRESET)
                io_failure(s, "cannot send", errno);
            /* The daemon may have answered before closing (too_large,
             * busy): stop sending and go read what it said. */
            s->write_errno = errno;
            pb_buf_free(&s->out);
            s->stdin_open = 0;
            s->write_shut = 1;
            return;
        }
        pb_buf_consume(&s->out, (size_t)n);
    }
}

static void read_stdin_lines(session *s)
{
    unsigned char *p = pb_buf_extend(&s->out, READ_CHUNK);
    if (p == NULL)
        out_of_memory();
    ssize_t n = read(STDIN_FILENO, p, READ_CHUNK);
    pb_buf_truncate(&s->out, s->out.len - READ_CHUNK + (n > 0 ? (size_t)n : 0));
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return;
        message("cannot read standard input: %s", strerror(errno));
        exit(EXIT_IO);
    }
    if (n == 0) {
        s->stdin_open = 0;
        /* A last line without its \n is still a line. */
        if (s->stdin_last >= 0 && s->stdin_last != '\n') {
            if (pb_buf_append_byte(&s->out, '\n') != 0)
                out_of_memory();
            s->lines_sent++;
        }
        return;
    }
    for (ssize_t i = 0; i < n; i++)
        if (p[i] == '\n')
            s->lines_sent++;
    s->stdin_last = p[n - 1];
}

static void receive(session *s)
{
    unsigned char *p = pb_buf_extend(&s->in, READ_CHUNK);
    if (p == NULL)
        out_of_memory();
    ssize_t n = s->ssl != NULL ? tls_recv(s, p, READ_CHUNK) : recv(s->fd, p, READ_CHUNK, 0);
    pb_buf_truncate(&s->in, s->in.len - READ_CHUNK + (n > 0 ? (size_t)n : 0));
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno != ECONNRESET)
            io_failure(s, "cannot receive", errno);
        /* A daemon that closes with our request unread resets the
         * connection; what it said before is already in hand. */
        s->read_errno = errno;
    }
    if (n <= 0)
        s->eof = 1;
}

static int replies_owed(const session *s)
{
    return s->replies_received < s->frames_sent;
}

/* Prints every whole frame in hand; 1 when the run is over. Pushes
 * (frames whose header says "push": true) answer no request: --follow
 * prints them, as it does any frame after the last reply; without it they
 * are skipped. An error reply is printed and the other replies still
 * awaited, but then nothing is followed; an error pushed ends the run at
 * once (the daemon closes after a slow_consumer). */
static int take_frames(session *s, pb_frame_decoder *d)
{
    pb_message msg;
    size_t consumed;
    pb_error err;
    for (;;) {
        pb_decode_status st = pb_frame_decode(d, pb_buf_head(&s->in), pb_buf_used(&s->in),
                                              &msg, &consumed, NULL, &err);
        if (st == PB_DECODE_NEED_MORE)
            break;
        if (st == PB_DECODE_ERROR) {
            fflush(stdout);
            message("%s: malformed reply: %s", s->peer, err.text);
            exit(EXIT_IO);
        }
        int push = json_is_true(json_object_get(msg.header, "push")) || !replies_owed(s);
        int failed = 0;
        if (!push || s->opt->follow)
            failed = print_frame_reply(s, &msg) != 0;
        pb_message_clear(&msg);
        pb_buf_consume(&s->in, consumed);
        if (failed)
            s->status = EXIT_REPLY_ERROR;
        if (!push)
            s->replies_received++;
        if (failed && push)
            return 1;
        if (!replies_owed(s) && (!s->opt->follow || s->status != 0))
            return 1;
    }
    if (!s->eof)
        return 0;
    int error = s->read_errno ? s->read_errno : s->write_errno;
    if (pb_buf_used(&s->in) > 0)
        io_failure(s, "connection closed in the middle of a frame", error);
    if (s->replies_received == 0)
        io_failure(s, "connection closed without a reply", error);
    if (replies_owed(s)) {
        char what[128];
        snprintf(what, sizeof what, "connection closed after %lu of %lu replies",
                 s->replies_received, s->frames_sent);
        io_failure(s, what, error);
    }
    /* Following ends with the daemon's close; only a reset is a fault. */
    if (s->read_errno != 0)
        io_failure(s, "connection reset", s->read_errno);
    return 1;
}

/* Prints every whole reply line; 1 when the daemon has closed. */
static int take_reply_lines(session *s, pb_line_decoder *d)
{
    for (;;) {
        pb_message msg;
        size_t consumed;
        pb_error err;
        pb_decode_status st = pb_line_decode(d, pb_buf_head(&s->in), pb_buf_used(&s->in),
                                             &msg, &consumed, &err);
        if (st == PB_DECODE_NEED_MORE)
            break;
        if (st == PB_DECODE_ERROR) {
            fflush(stdout);
            message("%s: malformed reply: %s", s->peer, err.text);
            exit(EXIT_IO);
        }
        print_reply_line(s, msg.content, msg.content_length);
        pb_message_clear(&msg);
        pb_buf_consume(&s->in, consumed);
        s->lines_received++;
    }
    if (!s->eof)
        return 0;
    if (pb_buf_used(&s->in) > 0) {
        print_reply_line(s, pb_buf_head(&s->in), pb_buf_used(&s->in));
        s->lines_received++;
    }
    /* After an ERR line, an early close or reset is the one the error
     * announced. A reply may span lines, so only too few is a fault. */
    if (s->status == 0 && (s->read_errno != 0 || s->lines_received < s->lines_sent)) {
        fflush(stdout);
        message("%s: connection closed after %lu replies to %lu lines%s%s", s->peer,
                s->lines_received, s->lines_sent, s->read_errno ? ": " : "",
                s->read_errno ? strerror(s->read_errno) : "");
        exit(EXIT_IO);
    }
    return 1;
}

static volatile sig_atomic_t interrupted;

static void on_stop_signal(int signal_number)
{
    (void)signal_number;
    interrupted = 1;
}

/* With --follow, SIGINT and SIGTERM end the run in good order, as the way
 * to stop following. They are blocked but while run() waits in ppoll, so
 * that one cannot arrive between the check and the wait. */
static void catch_stop_signals(session *s)
{
    sigset_t stop;
    sigemptyset(&stop);
    if (s->opt->follow) {
        sigaddset(&stop, SIGINT);
        sigaddset(&stop, SIGTERM);
    }
    sigprocmask(SIG_BLOCK, &stop, &s->poll_mask);
    if (!s->opt->follow)
        return;
    struct sigaction action = { .sa_handler = on_stop_signal }, before;
    sigemptyset(&action.sa_mask);
    /* A signal the caller ignores (nohup, `&` in a script) stays ignored. */
    for (int i = 0; i < 2; i++) {
        int number = i == 0 ? SIGINT : SIGTERM;
        if (sigaction(number, NULL, &before) == 0 && before.sa_handler != SIG_IGN)
            sigaction(number, &action, NULL);
    }
}

static void timed_out(const session *s) __attribute__((noreturn));

static void timed_out(const session *s)
{
    fflush(stdout);
    message("%s: timed out after %s s waiting %s", s->peer, s->opt->timeout_text,
            pb_buf_used(&s->out) ? "to send the request" : "for a reply");
    exit(EXIT_IO);
}

/* Moves bytes both ways at once, so a daemon that answers (or refuses)
 * before reading everything never deadlocks against our writes. */
static void run(session *s)
{
    pb_frame_decoder frames;
    pb_line_decoder lines;
    int line = s->opt->form == FORM_LINE;

    pb_frame_decoder_init(&frames, MAX_REPLY_BYTES);
    pb_line_decoder_init(&lines, MAX_REPLY_BYTES);
    for (;;) {
        if (line && !s->stdin_open && !s->write_shut && pb_buf_used(&s->out) == 0)
            end_writes(s);

        short events = POLLIN | (pb_buf_used(&s->out) ? POLLOUT : 0);
        if (s->ssl != NULL)
            events |= s->tls_recv_wait | s->tls_close_wait;
        struct pollfd p[2] = {
            { .fd = s->fd, .events = events },
            { .fd = STDIN_FILENO, .events = POLLIN }
        };
        int reading_stdin = s->stdin_open && pb_buf_used(&s->out) < STDIN_HIGH_WATER;
        /* Someone typing lines may pause as long as they like; only a
         * daemon owing us something is held to the timeout. */
        int idle = s->stdin_open && pb_buf_used(&s->out) == 0
                   && s->lines_received >= s->lines_sent;
        /* Pushes come when they come: one waits for them as long as it takes. */
        if (s->opt->follow && pb_buf_used(&s->out) == 0 && !replies_owed(s))
            idle = 1;
        /* Reply bytes OpenSSL has already taken off the socket wake no poll. */
        int buffered = s->ssl != NULL && SSL_pending(s->ssl) > 0;
        int timeout_ms = buffered ? 0 : idle ? -1 : s->opt->timeout_ms;
        struct timespec timeout = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000 };
        int r = ppoll(p, reading_stdin ? 2 : 1, timeout_ms < 0 ? NULL : &timeout,
                      &s->poll_mask);
        if (r < 0) {
            if (errno != EINTR)
                io_failure(s, "poll", errno);
            if (interrupted)
                break;
            continue;
        }
        if (r == 0 && !buffered)
            timed_out(s);

        if (reading_stdin && p[1].revents)
            read_stdin_lines(s);
        /* A TLS read may be waiting for the socket to take bytes and a
         * write for buffered input: with TLS, any readiness retries both. */
        if (s->ssl != NULL && (p[0].revents || buffered))
            p[0].revents |= POLLIN | POLLOUT;
        if (p[0].revents & (POLLOUT | POLLERR | POLLHUP) && pb_buf_used(&s->out))
            send_pending(s);
        if (p[0].revents & (POLLIN | POLLERR | POLLHUP)) {
            receive(s);
            int done = line ? take_reply_lines(s, &lines) : take_frames(s, &frames);
            fflush(stdout);
            if (done)
                break;
        }
    }
    pb_frame_decoder_reset(&frames);
}

int main(int argc, char **argv)
{
    options opt;
    session s = { .fd = -1, .out = PB_BUF_INIT, .in = PB_BUF_INIT, .stdin_last = -1 };

    parse_options(argc, argv, &opt);
    s.opt = &opt;
    if (opt.form == FORM_LINE) {
        build_line_request(&opt, &s);
        s.stdin_open = opt.nargs == 0;
    } else {
        build_frame_requests(&opt, &s);
    }

    SSL_CTX *tls = NULL;
    if (opt.tls) {
        tls = tls_context(&opt);
        /* OpenSSL writes with write(2), which has no MSG_NOSIGNAL. */
        signal(SIGPIPE, SIG_IGN);
    }

    if (opt.unix_path != NULL)
        connect_unix(&s, opt.unix_path);
    else
        connect_tcp(&s, opt.host, opt.port);
    if (tls != NULL)
        tls_handshake(&s, tls);

    catch_stop_signals(&s);
    run(&s);
    if (s.ssl != NULL) {
        /* A courtesy close_notify, unless --line sent it already. */
        if (!s.write_shut)
            SSL_shutdown(s.ssl);
        SSL_free(s.ssl);
        SSL_CTX_free(tls);
    }
    close(s.fd);
    pb_buf_free(&s.in);
    pb_buf_free(&s.out);
    pb_line_codec_cleanup();
    if (fflush(stdout) != 0 || ferror(stdout)) {
        message("cannot write to standard output: %s", strerror(errno));
        return EXIT_IO;
    }
    return s.status;
}

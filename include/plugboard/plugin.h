/*
 * plugboard/plugin.h - the Plugboard plugin SDK: everything a handler plugin
 * sees of the daemon. Self-contained C99; include nothing else from Plugboard.
 *
 * OVERVIEW
 *
 * A plugin is a shared object (`.so`) that the daemon loads with dlopen().
 * It exports exactly one symbol, `pb_plugin_descriptor`, a `pb_plugin` that
 * says which ABI it was built for and where its three entry points are:
 *
 *   create   builds one *instance* from its `settings` group in the config.
 *            A module may be instantiated several times with different
 *            settings (two search plugins with different data, say).
 *   handle   answers one message: it reads a `pb_request` and fills a
 *            `pb_reply`.
 *   destroy  frees what create made.
 *
 * Everything a plugin needs from the daemon (logging, reading settings and
 * JSON, building replies) comes through the `pb_host` table handed to create
 * and reachable from every request. A plugin links against nothing from
 * Plugboard, so a module built once keeps loading into every daemon that
 * speaks its ABI version.
 *
 * WHERE AND WHEN THE ENTRY POINTS RUN
 *
 * Every entry point, and any thread a plugin starts, runs only in worker
 * processes, after the worker has dropped to the configured user; create()
 * and destroy() also run in the short-lived check child that proves a
 * configuration's instances can be created (worker_start() never does).
 * Never in the master process, and never as root when a user is
 * configured.
 *
 *   check          at start, on `plugboard -t` and on every reload, the
 *                  master forks a check child that drops privileges as a
 *                  worker does, creates every instance and destroys them
 *                  again. A create() that fails or crashes fails the
 *                  check: start and -t exit 78, a reload changes nothing.
 *                  The check child's instances never see a request, and
 *                  host->stats() returns NULL there.
 *   start          each worker, a fork() of the master, creates its own
 *                  instances right after the privilege drop, before it
 *                  accepts a connection. So does a worker started to
 *                  replace one that died.
 *   reload         on SIGHUP the master reads the file once and checks it
 *                  as above. Each running worker then creates its new
 *                  instances from the text the master read (it does not
 *                  open the file), on its event-loop thread, while the old
 *                  ones still serve; once every worker has, they all
 *                  switch together and each destroys its old instances. A
 *                  worker whose create() fails is replaced by a new worker,
 *                  which creates its instances as at start; so are the
 *                  workers started when the listeners or the number of
 *                  workers changed.
 *   exit           each worker destroys what it holds.
 *
 * So create() runs several times for the same settings, in different
 * processes, always as the workers' user: a data file must be readable by
 * that user (the configuration file need not be; the master reads it).
 * Each process creates its own instances: nothing create() builds, no
 * thread it starts and no descriptor it opens is shared with another
 * process, and destroy() releases what its own create() made.
 *
 * A reload loads each module file afresh: a module rebuilt and installed
 * over the old one is the code that runs after the reload, for new
 * connections and for the next message of open ones, while an unchanged
 * file is not loaded twice. Install a new build as a new file (mv, or
 * install(1)); writing over an installed module in place changes code
 * that running processes have mapped, and may crash them. A worker that
 * restarts loads the files as they are then.
 *
 * THREADING AND BLOCKING
 *
 * By default handle() runs on the worker's event-loop thread and must not
 * block (no sleeping, no synchronous network or disk I/O per message):
 * while it runs, no other connection of that worker is served. A plugin
 * that must wait has two ways out:
 *
 *   threads = N    an instance key beside `module` (not in `settings`):
 *                  that instance's handle() runs on a pool of N threads in
 *                  each worker and may block (disk, a database client);
 *                  the loop thread goes on serving every other connection
 *                  and never waits for the pool. Requests of one
 *                  connection may then run on several threads at once;
 *                  their replies still leave in request order.
 *   PB_DEFER       handle() keeps the reply and returns PB_DEFER; the
 *                  plugin answers later (DEFERRED REPLIES below), from a
 *                  watcher on the worker's loop or from a thread of its own.
 *
 * Services safe from any thread (a pool thread, a plugin's own thread):
 * log, instance_name, resolve_path, every json_* service on values that
 * thread owns or only reads, the reply services on a reply the thread
 * answers, reply_cancelled, stats, json_encode, run_on_loop, metric,
 * metric_add and metric_set. Loop thread only: loop, client_hold,
 * client_release, push_bytes, push_json, client_close. settings_error
 * belongs to create().
 *
 * Do slow start-up work in create() (reading a data file), and start
 * threads, connections and watchers in worker_start(), which runs only in
 * workers that serve. A worker may hold several instances of the same
 * module, and a reload creates the new ones before the old ones are
 * destroyed, so keep state in the instance, not in globals. A plugin that
 * crashes takes its worker process down with every connection the worker
 * held; the master starts a new worker.
 *
 * DEFERRED REPLIES
 *
 * handle() may return PB_DEFER without answering: the reply then stays
 * valid until the plugin answers it with exactly one of reply_bytes,
 * reply_json or reply_error (which answers with a `plugin_failed` error),
 * from the loop thread or any other; the answer leaves once every earlier
 * reply of that connection has (reply_buffer is for handle() itself). The
 * request is not kept: copy what the answer needs before returning. If
 * the connection closes first, answering is harmless and sends nothing;
 * reply_cancelled() tells whether to bother. A connection with
 * limits.max_inflight requests in progress (deferred, or queued for a
 * pool) is not read until one finishes. A reply never answered is freed
 * when the worker exits; stop what would answer it in worker_stop().
 *
 *   static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
 *   {
 *       pending *p = w->data;                // holds the reply and a host
 *       ev_timer_stop(loop, w);
 *       p->host->reply_bytes(p->reply, "text/plain", "utf-8", "later", 5);
 *       free(p);
 *   }
 *
 *   static int handle(void *state, const pb_request *request, pb_reply *reply)
 *   {
 *       pending *p = malloc(sizeof *p);
 *       if (p == NULL)
 *           return PB_ERROR;
 *       p->host = request->host;
 *       p->reply = reply;
 *       ev_timer_init(&p->timer, on_timer, 1.0, 0.0);
 *       p->timer.data = p;
 *       ev_timer_start(request->host->loop(), &p->timer);
 *       return PB_DEFER;
 *   }
 *
 * plugins/examples/async/ is a complete deferring plugin, and
 * plugins/examples/blocking/ one that blocks on a pool of threads.
 *
 * PUSHES
 *
 * A plugin may send a connection frames that answer no request: during
 * handle(), client_hold() takes a hold on the request's connection; later,
 * on the loop thread, push_bytes() or push_json() queue a whole frame whose
 * header carries "push": true (on a `line` listener, a line). A push is
 * refused with PB_FULL while the connection has more than
 * limits.max_pending_output bytes waiting to be written, so that a slow
 * reader costs the worker bounded memory: drop the message, or
 * client_close() the connection. The on_close callback given to
 * client_hold() runs when the connection closes; the hold stays valid (its
 * pushes fail) until client_release(): release it there. A hold also keeps
 * its instance serving across a reload (the worker stops and destroys the
 * old instance only once its last hold and reply in flight are gone), so a
 * connection keeps what the plugin holds for it; pushes made during a
 * handle() for the same connection follow that request's reply. A thread
 * of the plugin's own pushes through run_on_loop().
 *
 * BROADCASTS
 *
 * Each worker creates its own copy of every instance, and after a reload a
 * worker may hold two copies of one name for a while: the new one, and the
 * old one still serving the connections that it holds (PUSHES). A plugin
 * whose copies must act together (a publish reaching subscribers held by
 * every worker, an enqueue waking a dequeue waiting in another) sends
 * bytes to all the other copies with host->broadcast(); each receives them
 * in its on_broadcast() on its own loop thread. The bytes are the
 * plugin's own format; only copies of the same instance name receive
 * them, and a copy never receives its own. Per sender, they arrive in the
 * order sent; there is no reply, and nothing is stored: a worker that
 * starts later sees only what is sent after it started. The sender never
 * waits: a receiver that falls behind is sent to later (its backlog is
 * kept in the sender, up to 64 MiB, beyond which further broadcasts to
 * it are dropped and logged).
 *
 * pb_request.connection tells connections apart across copies: a new copy
 * that is asked to undo what an old copy holds for a connection (an
 * unsubscribe after a reload) broadcasts the connection's number, and
 * the old copy, which knows it, acts.
 *
 * METRICS
 *
 * An instance's own counters and levels appear in the daemon's statistics
 * (host->stats(), the stats plugin) under plugins.NAME.metrics, summed or
 * combined over the workers as their kind says: `"published": 12` for a
 * metric without label, `"ready": {"jobs": 3, "mail": 0}` for one with.
 * Take the handles once (in worker_start, or when a new label first
 * appears) and update them from any thread:
 *
 *   pb_metric *published = host->metric(instance, "published", NULL,
 *                                       PB_METRIC_COUNTER);
 *   host->metric_add(published, 1);
 *
 * THE WORKER'S LOOP
 *
 * host->loop() is the worker's libev loop (a `struct ev_loop *`): add
 * ev_io and ev_timer watchers to it from the loop thread, or hand it to a
 * library with a libev adapter (hiredis' adapters/libev.h, say). Stop them
 * in worker_stop().
 *
 * WHERE A REQUEST CAME FROM
 *
 * pb_request.listener names the listener; peer is the client's address
 * ("127.0.0.1:40312", "[::1]:40312", or "unix"); peer_uid the uid of a
 * Unix-domain peer (-1 over TCP); tls_subject the subject of the client
 * certificate a TLS listener verified, NULL without one. A plugin that
 * trusts it should also check `listener`: only a listener with
 * verify_client set ever has one.
 *
 * MEMORY
 *
 * Everything the host passes in (requests, settings, JSON values reached
 * from them) is owned by the host and valid only during the call it was
 * passed to; copy what must outlive it. JSON values a plugin creates with
 * the json_new_* functions are owned by the plugin until handed over with a
 * function documented as taking ownership (json_set, json_append,
 * reply_json) or released with json_free.
 *
 * VERSIONING
 *
 * PLUGBOARD_ABI_VERSION changes whenever a change to this header would break
 * a compiled plugin. The daemon loads plugins of every ABI from
 * PLUGBOARD_ABI_OLDEST to its own, handing each the structures of the
 * header it was built against (a plugin built against the 0.1 header, ABI
 * 1, works unchanged), and refuses any other, naming the file and both
 * versions. Every structure that crosses the boundary starts with its size
 * and only ever gains members at its end: pb_host (test a newer service
 * with PB_HOST_HAS()), pb_request (PB_REQUEST_HAS()), and pb_plugin (whose
 * size tells the daemon which entry points a plugin has), so a plugin built
 * against a newer header still runs on an older daemon of the same ABI.
 *
 * BUILDING
 *
 *   cc -std=c99 -shared -fPIC -fvisibility=hidden \
 *      $(pkg-config --cflags plugboard-plugin) -o hello.so hello.c
 *
 * and install it into `pkg-config --variable=plugindir plugboard-plugin`,
 * or name it by absolute path in the config. As root the daemon refuses a
 * plugin file unless it and every directory above it are owned by root and
 * writable by no one else (a sticky directory of root's, like /tmp, passes).
 *
 * A COMPLETE EXAMPLE
 *
 * A plugin that greets: `{"action": "hello", "name": "Ada"}` is answered
 * with `{"result": "Hello, Ada!"}`; the greeting comes from its settings.
 *
 *   #include <stdio.h>
 *   #include <stdlib.h>
 *   #include <string.h>
 *   #include <plugboard/plugin.h>
 *
 *   struct hello { char greeting[64]; };
 *
 *   static int hello_create(const pb_host *host, pb_instance *instance,
 *                           const pb_json *settings, void **state)
 *   {
 *       const char *greeting = "Hello";
 *       const pb_json *value = host->json_get(settings, "greeting");
 *       if (value != NULL) {
 *           greeting = host->json_string(value, NULL);
 *           if (greeting == NULL || strlen(greeting) >= 64) {
 *               host->settings_error(instance, value,
 *                   "greeting must be a string of at most 63 bytes");
 *               return PB_ERROR;
 *           }
 *       }
 *       // "greeting" is the only setting: anything more is a typo.
 *       if (host->json_size(settings) > (value != NULL ? 1u : 0u)) {
 *           host->settings_error(instance, settings,
 *                                "unknown setting (hello takes only \"greeting\")");
 *           return PB_ERROR;
 *       }
 *       struct hello *hello = calloc(1, sizeof *hello);
 *       if (hello == NULL) {
 *           host->settings_error(instance, NULL, "out of memory");
 *           return PB_ERROR;
 *       }
 *       strcpy(hello->greeting, greeting);
 *       *state = hello;
 *       return PB_OK;
 *   }
 *
 *   static int hello_handle(void *state, const pb_request *request,
 *                           pb_reply *reply)
 *   {
 *       const struct hello *hello = state;
 *       const pb_host *host = request->host;
 *       const char *name = host->json_string(
 *           host->json_get(request->json, "name"), NULL);
 *       if (name == NULL) {
 *           host->reply_error(reply, "\"name\" must be a string");
 *           return PB_ERROR;
 *       }
 *       char text[256];
 *       int n = snprintf(text, sizeof text, "%s, %s!", hello->greeting, name);
 *       if (n < 0 || n >= (int)sizeof text) {
 *           host->reply_error(reply, "name too long");
 *           return PB_ERROR;
 *       }
 *       pb_json *answer = host->json_new_object();
 *       if (host->json_set(answer, "result",
 *                          host->json_new_string(text, (size_t)n)) != PB_OK) {
 *           host->json_free(answer);
 *           host->reply_error(reply, "out of memory");
 *           return PB_ERROR;
 *       }
 *       return host->reply_json(reply, answer);
 *   }
 *
 *   static void hello_destroy(void *state) { free(state); }
 *
 *   PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
 *       PB_PLUGIN_VERSIONED,
 *       .name        = "hello",
 *       .description = "greets by name",
 *       .create      = hello_create,
 *       .handle      = hello_handle,
 *       .destroy     = hello_destroy,
 *   };
 *
 * and in plugboard.conf:
 *
 *   plugins = ( { name = "hello"; module = "hello";
 *                 settings = { greeting = "Good morning"; }; } );
 *   routes  = ( { content_type = "text/json"; action = "hello"; plugin = "hello"; } );
 *
 * The shipped plugins are written to be read as further examples: echo,
 * uppercase, search and first10 answer on the spot; stats shows testing for
 * a newer host service with PB_HOST_HAS(); pubsub holds connections, pushes
 * and broadcasts between its copies; queue defers every reply to a backend
 * (a thread of its own for SQLite, hiredis on the loop for Redis).
 */
#ifndef PLUGBOARD_PLUGIN_H
#define PLUGBOARD_PLUGIN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The ABI this header describes. A plugin stores it in
 * pb_plugin.abi_version; the daemon loads plugins of this ABI and of every
 * older one down to PLUGBOARD_ABI_OLDEST (`plugboard -V` prints it).
 */
#define PLUGBOARD_ABI_VERSION 2

/*
 * The oldest ABI the daemon still loads. A plugin built against the 0.1
 * header (ABI 1) keeps working unchanged: it is handed the structures of
 * that header and never sees what ABI 2 added.
 */
#define PLUGBOARD_ABI_OLDEST 1

/* The name of the one symbol every plugin exports, for dlsym(). */
#define PB_PLUGIN_DESCRIPTOR_SYMBOL "pb_plugin_descriptor"

/*
 * Marks the descriptor as exported. Build plugins with -fvisibility=hidden
 * and put this on pb_plugin_descriptor only, so that a plugin's internal
 * names never collide with the daemon's or another plugin's.
 */
#if defined(__GNUC__) || defined(__clang__)
#define PB_PLUGIN_EXPORT __attribute__((visibility("default")))
#define PB_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PB_PLUGIN_EXPORT
#define PB_PRINTF(fmt, args)
#endif

/* Return values of create, handle and the host services that can fail. */
#define PB_OK     0
#define PB_ERROR (-1)
/* From handle() (ABI 2): the plugin keeps the reply and answers later. */
#define PB_DEFER  1
/* From the push services: the connection's pending output is over
 * limits.max_pending_output; nothing was queued. */
#define PB_FULL  (-2)


/* Levels for pb_host.log, most severe first; the values are syslog's. */
typedef enum pb_log_level {
    PB_LOG_ERROR   = 3,
    PB_LOG_WARNING = 4,
    PB_LOG_NOTICE  = 5,
    PB_LOG_INFO    = 6,
    PB_LOG_DEBUG   = 7
} pb_log_level;

/*
 * A JSON value owned by the host: a request's header or parsed content, an
 * instance's settings, or a value the plugin is building for its reply. Read
 * and build it only through the json_* services of pb_host.
 *
 * Settings come from libconfig and map onto JSON: a group is an object, a
 * list or array is an array, and strings, integers, floats and booleans are
 * what they say.
 */
typedef struct pb_json pb_json;

/* The kinds of JSON value, as pb_host.json_type reports them. */
typedef enum pb_json_type {
    PB_JSON_INVALID = 0,   /* a NULL pointer: "no such value" */
    PB_JSON_OBJECT,
    PB_JSON_ARRAY,
    PB_JSON_STRING,
    PB_JSON_INTEGER,
    PB_JSON_REAL,
    PB_JSON_TRUE,
    PB_JSON_FALSE,
    PB_JSON_NULL
} pb_json_type;

/*
 * One configured instance of a plugin, as the host knows it: its name in
 * the config and where its settings came from. Opaque; pass it back to the
 * host for logging and settings errors.
 */
typedef struct pb_instance pb_instance;

/* The reply being built for one request. Opaque; fill it through pb_host.
 * Valid during handle(); a plugin that returns PB_DEFER keeps it until it
 * has answered it (see DEFERRED REPLIES). */
typedef struct pb_reply pb_reply;

/*
 * A plugin's hold on one client connection (ABI 2), for pushes: frames that
 * answer no request. Opaque; see PUSHES.
 */
typedef struct pb_client pb_client;

typedef struct pb_host pb_host;

/*
 * One of an instance's counters in the daemon's statistics (see METRICS).
 * Opaque; a handle from pb_host.metric.
 */
typedef struct pb_metric pb_metric;

/* How the daemon combines the values that the workers keep of a metric. */
typedef enum pb_metric_kind {
    /* Counts events (messages published): only ever grows; each worker
     * adds its own, the daemon reports the sum, and what a worker counted
     * stays counted after it exits or a reload replaces the instance. */
    PB_METRIC_COUNTER = 0,
    /* A level each worker keeps of its own (subscribers it holds): the
     * daemon reports the sum over running workers. */
    PB_METRIC_GAUGE = 1,
    /* A level of something every worker sees whole (the depth of a queue
     * kept in a database): the daemon reports the value set last, by any
     * worker. */
    PB_METRIC_SHARED = 2
} pb_metric_kind;

/* How the message reached the daemon. */
typedef enum pb_framing {
    PB_FRAMING_FRAME = 0,  /* length-prefixed JSON header + content */
    PB_FRAMING_LINE  = 1,  /* one text line; the reply becomes one line */
    PB_FRAMING_HTTP  = 2   /* the body of an HTTP POST; the reply becomes
                            * the response's body */
} pb_framing;

/*
 * One message to answer. Valid only during the handle() call (a plugin that
 * defers its reply copies what it still needs). Members are only ever
 * appended; test for one newer than your oldest supported daemon with
 * PB_REQUEST_HAS(request, member).
 */
typedef struct pb_request {
    /* sizeof(pb_request) as the daemon was built. Always first. */
    size_t size;
    /* The host services, for plugins that keep no state of their own. */
    const pb_host *host;
    /* The instance the message was routed to (for logging). */
    pb_instance *instance;
    /* The header's "content-type" and "content-encoding", NUL-terminated. */
    const char *content_type;
    const char *content_encoding;
    /* The whole header object, unknown keys included. For the line
     * framing: {"content-type": "text/plain", "content-encoding": "utf-8"};
     * for the http framing, those two keys from the POST's Content-Type. */
    const pb_json *header;
    /* The content bytes; not NUL-terminated, may contain NUL bytes. */
    const unsigned char *content;
    size_t content_length;
    /* For content-type "text/json": the parsed content (any JSON value, an
     * object in the usual case). NULL for every other content-type. */
    const pb_json *json;
    /* The listener the message came in on, and its framing. */
    const char *listener;
    pb_framing framing;

    /* --- Where the request came from (ABI 2) ------------------------- */

    /* The peer's address: "127.0.0.1:40312", "[::1]:40312", or "unix" for
     * a Unix-domain socket. */
    const char *peer;
    /* For a Unix-domain socket, the peer's uid (SO_PEERCRED); else -1. */
    long peer_uid;
    /* The subject of the client's verified TLS certificate, in RFC 2253
     * form, most specific first ("CN=alice,O=Example"); NULL without TLS
     * or without a client certificate. */
    const char *tls_subject;

    /* --- Later additions ---------------------------------------------- */

    /* A number naming the request's connection: the same for every request
     * of one connection, and never that of another connection open at the
     * same time in any worker of the daemon. A plugin that keeps state per
     * connection can find it by this number across a reload (BROADCASTS). */
    unsigned long long connection;
} pb_request;

/* True when the daemon's pb_request has `member` (a later addition). */
#define PB_REQUEST_HAS(request, member) \
    ((request)->size >= offsetof(pb_request, member) + sizeof((request)->member))

/*
 * The table of services the daemon offers plugins. Never copy it: keep the
 * pointer. Members are only ever appended; test for a member newer than
 * your oldest supported daemon with PB_HOST_HAS(host, member).
 */
struct pb_host {
    /* sizeof(pb_host) as the daemon was built. Always first. */
    size_t size;
    /* PLUGBOARD_ABI_VERSION of the daemon. */
    unsigned int abi_version;

    /* --- Logging and errors -------------------------------------------- */

    /*
     * Logs one line at `level` through the daemon's log (stderr or syslog,
     * filtered by log.level), prefixed with the instance's name. Do not end
     * the message with a newline. Cheap to call; still, do not log per
     * message above PB_LOG_DEBUG.
     */
    void (*log)(const pb_instance *instance, pb_log_level level,
                const char *format, ...) PB_PRINTF(3, 4);

    /*
     * From create() only: records why the settings are rejected. `where` is
     * the offending setting (a value reached from `settings`), or NULL for
     * the settings group as a whole; the daemon reports the message as
     * `FILE:LINE: plugin NAME: message` with that setting's position in the
     * config. create() must then return PB_ERROR.
     */
    void (*settings_error)(pb_instance *instance, const pb_json *where,
                           const char *format, ...) PB_PRINTF(3, 4);

    /* The instance's name in the config ("search", "upper", ...). */
    const char *(*instance_name)(const pb_instance *instance);

    /*
     * Resolves a path from the settings the way the daemon resolves its own:
     * an absolute path stays, a relative one is taken from the directory of
     * the config file that named it. Writes a NUL-terminated result into
     * buf and returns PB_OK, or PB_ERROR when it does not fit.
     */
    int (*resolve_path)(const pb_instance *instance, const char *path,
                        char *buf, size_t size);

    /* --- Reading JSON --------------------------------------------------- */

    /* The kind of `value`; PB_JSON_INVALID for NULL. */
    pb_json_type (*json_type)(const pb_json *value);

    /* The member `key` of an object; NULL when absent or not an object. */
    const pb_json *(*json_get)(const pb_json *object, const char *key);

    /*
     * A string's UTF-8 bytes, NUL-terminated, with its length in bytes
     * stored in *length when length is not NULL (the string may itself
     * contain NUL). NULL when `value` is not a string.
     */
    const char *(*json_string)(const pb_json *value, size_t *length);

    /* An integer's value; 0 when `value` is not an integer. */
    long long (*json_integer)(const pb_json *value);

    /* A number's value (integer or real); 0.0 for anything else. */
    double (*json_number)(const pb_json *value);

    /* The number of elements of an array or members of an object; else 0. */
    size_t (*json_size)(const pb_json *value);

    /* Element `index` of an array; NULL when out of range or no array. */
    const pb_json *(*json_at)(const pb_json *array, size_t index);

    /*
     * Calls fn for each member of an object, in document order, until fn
     * returns non-zero; returns that value, or 0 when all were visited.
     */
    int (*json_foreach)(const pb_json *object,
                        int (*fn)(const char *key, const pb_json *value,
                                  void *arg),
                        void *arg);

    /*
     * Reads and parses a JSON file (for data files named in settings; call
     * it from create(), never from handle()). Returns a new value the caller
     * owns, or NULL with a message like "search.json:3: ..." in `error`.
     */
    pb_json *(*json_load_file)(const char *path, char *error,
                               size_t error_size);

    /* --- Building JSON -------------------------------------------------- */

    /*
     * New values, owned by the caller; NULL when out of memory (or, for
     * strings, when the bytes are not valid UTF-8). Every function that
     * takes a value accepts NULL and then fails, so a chain of calls needs
     * one check at its end.
     */
    pb_json *(*json_new_object)(void);
    pb_json *(*json_new_array)(void);
    pb_json *(*json_new_string)(const char *utf8, size_t length);
    pb_json *(*json_new_integer)(long long value);
    pb_json *(*json_new_real)(double value);
    pb_json *(*json_new_bool)(int value);
    pb_json *(*json_new_null)(void);

    /* Makes an independent copy of any value (one reached from a request or
     * settings included); the caller owns the copy. */
    pb_json *(*json_copy)(const pb_json *value);

    /* Sets object[key] = value (replacing an existing member), taking
     * ownership of value even on failure. */
    int (*json_set)(pb_json *object, const char *key, pb_json *value);

    /* Appends value to array, taking ownership of it even on failure. */
    int (*json_append)(pb_json *array, pb_json *value);

    /* Releases a value the caller owns; NULL is ignored. */
    void (*json_free)(pb_json *value);

    /* --- Replies -------------------------------------------------------- */

    /*
     * Answers with a copy of `length` bytes of content, described by
     * content_type and content_encoding (both copied). Returns PB_OK, or
     * PB_ERROR when out of memory, when called a second time, or when the
     * reply's header would pass 65535 bytes (a very long content-type).
     * A failing reply service records why, as reply_error would, so
     * handle() may return PB_ERROR at once.
     */
    int (*reply_bytes)(pb_reply *reply, const char *content_type,
                       const char *content_encoding, const void *content,
                       size_t length);

    /*
     * Answers with `length` bytes of content that the plugin writes into the
     * returned buffer before handle() returns: saves a copy for large
     * replies. NULL when it fails, for the reasons of reply_bytes.
     */
    unsigned char *(*reply_buffer)(pb_reply *reply, const char *content_type,
                                   const char *content_encoding,
                                   size_t length);

    /*
     * Answers with a JSON value as content-type "text/json", encoding
     * "utf-8", written the way Python's json.dumps(value,
     * ensure_ascii=False) writes it. Takes ownership of value.
     */
    int (*reply_json)(pb_reply *reply, pb_json *value);

    /*
     * Says why handle() is about to return PB_ERROR. The client gets a
     * `plugin_failed` error carrying this text; the daemon logs it too.
     */
    void (*reply_error)(pb_reply *reply, const char *format, ...)
        PB_PRINTF(2, 3);

    /* --- Daemon ---------------------------------------------------------- */

    /*
     * A snapshot of the daemon's counters, summed over its workers, as a
     * new JSON object the caller owns (NULL when out of memory): version,
     * abi, uptime, generation (1 + successful reloads), reloads,
     * failed_reloads, worker_restarts, workers, worker_list [{slot, pid,
     * connections, messages} of each running worker], connections {open,
     * accepted, refused, refused_by {busy, allow, tls}}, listeners {by
     * name: open, accepted}, messages, bytes {in, out}, errors {by wire
     * error code}, plugins {by instance: module, messages, errors, latency
     * {count, sum, buckets [[upper bound in seconds or "+Inf", cumulative
     * count]]}, and metrics {by name: a value, or {by label: a value}} and
     * metric_kinds {by name: "counter", "gauge" or "shared"} when the
     * instance has any (METRICS)}, routes
     * {by route: messages, errors}, retired {plugins, routes: messages,
     * errors of names no longer configured that no longer fit in the
     * counter tables, with the latency of such instances; listeners:
     * accepted of such listeners; metrics: counts of departed workers'
     * counters that found no room to be kept}. A name longer
     * than 127 bytes is cut between characters and ends with "…" and a hash
     * of the whole name, so that distinct names stay distinct.
     * Call it from handle(): in the configuration check (`plugboard -t`,
     * or a reload's check) there are no counters, and it returns NULL.
     * The shipped `stats` plugin answers with it.
     */
    pb_json *(*stats)(void);

    /*
     * Writes value as JSON exactly as reply_json would (Python's
     * json.dumps(value, ensure_ascii=False)) into a new NUL-terminated
     * buffer that the caller releases with free(); its length in *length
     * when length is not NULL. NULL when out of memory (or for NaN or
     * infinity). For a plugin that answers with the same JSON again and
     * again: encode it once in create() and answer with reply_bytes, as the
     * shipped search plugin does.
     */
    char *(*json_encode)(const pb_json *value, size_t *length);

    /* --- ABI 2: the worker's loop, deferred replies, pushes ------------ */

    /*
     * The worker's libev loop, a `struct ev_loop *` (this header does not
     * include ev.h): watch your own descriptors and timers on it, or hand
     * it to a library with a libev adapter. Use it from the loop thread
     * only (handle() of an instance without `threads`, worker_start, a
     * watcher's callback, a run_on_loop function). NULL where no loop runs
     * (in `plugboard -t` and the configuration check).
     */
    void *(*loop)(void);

    /*
     * Runs fn(arg) soon on the worker's loop thread. Safe from any thread:
     * the way for a plugin's own thread to reach what is loop-only (pushes,
     * its watchers). PB_ERROR when out of memory or where no loop runs.
     */
    int (*run_on_loop)(void (*fn)(void *arg), void *arg);

    /*
     * Whether the connection of a deferred reply has closed: answering it
     * is then harmless and does nothing, but the work may be abandoned.
     * Safe from any thread.
     */
    int (*reply_cancelled)(const pb_reply *reply);

    /*
     * From handle(), on the loop thread: takes a hold on the request's
     * connection, for pushes. on_close (may be NULL) is called on the loop
     * thread when the connection closes, with arg; the hold stays valid
     * (pushes then fail) until client_release. NULL when out of memory.
     */
    pb_client *(*client_hold)(const pb_request *request,
                              void (*on_close)(pb_client *client, void *arg),
                              void *arg);

    /* Gives a hold back; loop thread only. NULL is ignored. */
    void (*client_release)(pb_client *client);

    /*
     * Pushes one frame to the held connection, loop thread only: a whole
     * frame whose header carries the extra key "push": true (on a `line`
     * listener, the content and a newline). Never inside another reply.
     * PB_OK when queued; PB_FULL when the connection's pending output is
     * over limits.max_pending_output (the plugin decides: drop, or
     * disconnect); PB_ERROR when it closed or on lack of memory.
     */
    int (*push_bytes)(pb_client *client, const char *content_type,
                      const char *content_encoding, const void *content,
                      size_t length);

    /* As push_bytes, with a JSON value written as reply_json writes it
     * (text/json, utf-8). Takes ownership of value. */
    int (*push_json)(pb_client *client, pb_json *value);

    /* Closes the held connection once what is queued for it is written
     * (after a last push, say). Loop thread only. */
    void (*client_close)(pb_client *client);

    /* --- Broadcasts and metrics (test with PB_HOST_HAS) --------------- */

    /*
     * Sends `length` bytes to every other copy of this instance (BROADCASTS):
     * the instance of the same name in each other worker, and any copy of
     * it a reload left in this worker. Each copy gets them through its
     * plugin's on_broadcast(), on its loop thread, soon after, in the
     * order this copy sent them. Never waits for a receiver. PB_OK when
     * sent (or when there is no other copy to send to); PB_ERROR when out
     * of memory or where no loop runs. Safe from any thread.
     */
    int (*broadcast)(pb_instance *instance, const void *data, size_t length);

    /*
     * The handle of the instance's metric `name`, with an optional `label`
     * (NULL for none) that tells apart several values of one metric (a
     * queue's name, say): see METRICS. Both are at most 63 bytes of
     * letters, digits and '_' for the name, any UTF-8 for the label.
     * Asking again for the same name, label and kind returns the same
     * metric, also to another copy of the instance in the same worker.
     * Within an instance a name has one kind, and either never a label or
     * always one. The handle stays valid for as long as the worker runs.
     * Returns NULL where there are no statistics (the configuration check),
     * for a name, label or kind that breaks these rules (logged at warning,
     * naming the instance), and when the worker's table of 128 metrics is
     * full (logged once); metric_add and metric_set ignore NULL. The table
     * keeps what a worker asked for until it exits, reloads included: ask
     * for a bounded set of names and labels. Safe from any thread.
     */
    pb_metric *(*metric)(pb_instance *instance, const char *name,
                         const char *label, pb_metric_kind kind);

    /* Adds delta (negative for a gauge going down) to the value this
     * worker keeps; a counter ignores a negative delta, as it only grows.
     * Lock-free; safe from any thread. */
    void (*metric_add)(pb_metric *metric, long long delta);

    /* Sets the value this worker keeps (a gauge or a shared level); a
     * counter ignores it. Lock-free; safe from any thread. */
    void (*metric_set)(pb_metric *metric, long long value);

    /*
     * Closes a held connection that reads too slowly for its pushes (a
     * push returned PB_FULL): after what is already queued for it, it is
     * sent an error frame with code "slow_consumer" and `reason` as its
     * text (on a `line` listener, an error line), then closed. Loop
     * thread only.
     */
    void (*client_close_slow)(pb_client *client, const char *reason);
};

/* The first two members of every descriptor: the ABI and the size this
 * header gives them. */
#define PB_PLUGIN_VERSIONED \
    .abi_version = PLUGBOARD_ABI_VERSION, .size = sizeof(pb_plugin)

/* True when the daemon's host table has `member` (a later addition). */
#define PB_HOST_HAS(host, member) \
    ((host)->size >= offsetof(pb_host, member) + sizeof((host)->member))

/*
 * What a plugin exports as `pb_plugin_descriptor`. Define it const, with
 * designated initializers starting with PB_PLUGIN_VERSIONED, and mark it
 * PB_PLUGIN_EXPORT:
 *
 *   PB_PLUGIN_EXPORT const pb_plugin pb_plugin_descriptor = {
 *       PB_PLUGIN_VERSIONED,
 *       .name = "hello",
 *       .handle = handle,
 *   };
 */
typedef struct pb_plugin {
    /* PLUGBOARD_ABI_VERSION as the plugin was compiled. Always first, so
     * that the daemon can read it from a plugin of any version. */
    unsigned int abi_version;
    /* sizeof(pb_plugin) as the plugin was compiled, so that members added
     * later are read only from plugins that have them. */
    size_t size;

    /* The module's name ("search"), for logs; and one line about it. */
    const char *name;
    const char *description;

    /*
     * Creates an instance from its settings (an object, empty when the
     * config gives none; never NULL). Store whatever handle() needs in
     * *state. On a bad setting call host->settings_error() and return
     * PB_ERROR; the daemon then refuses the whole configuration (at start,
     * on `plugboard -t`, or on reload, which keeps the old one running; a
     * worker whose own create() fails on reload logs why and is replaced
     * by a new worker). See WHERE AND WHEN THE ENTRY POINTS RUN above for
     * the processes and users it runs as.
     * Reject settings you do not know: an operator's typo should not pass.
     * May be NULL for a plugin that takes no settings (the daemon then
     * rejects any setting given to it) and keeps no state.
     */
    int (*create)(const pb_host *host, pb_instance *instance,
                  const pb_json *settings, void **state);

    /*
     * Answers one request: call exactly one of host->reply_bytes,
     * reply_buffer or reply_json and return PB_OK; or call
     * host->reply_error and return PB_ERROR, and the client gets a
     * `plugin_failed` error while its connection stays open; or keep the
     * reply, return PB_DEFER and answer it later (DEFERRED REPLIES). Runs
     * on the loop thread, or on a pool thread for an instance with
     * `threads` (THREADING AND BLOCKING).
     */
    int (*handle)(void *state, const pb_request *request, pb_reply *reply);

    /* Frees an instance's state. May be NULL. Called in the process whose
     * create() made it, once it no longer uses it: at the worker's exit,
     * after a reload replaced it (once its last reply in flight and hold
     * are done), and right away in the configuration check. */
    void (*destroy)(void *state);

    /* --- ABI 2 ---------------------------------------------------------- */

    /*
     * In each worker that will serve the instance, after create(), on the
     * loop thread: start threads, open connections, add watchers to
     * host->loop(). Never called in `plugboard -t` or the configuration
     * check, which only create and destroy. PB_ERROR (after logging why)
     * makes that worker unable to serve the configuration. May be NULL.
     */
    int (*worker_start)(void *state);

    /*
     * In the same worker, before destroy(), on the loop thread, once the
     * instance serves no more requests: stop threads and watchers, close
     * connections. May be NULL.
     */
    void (*worker_stop)(void *state);

    /*
     * Receives what another copy of this instance sent with
     * host->broadcast(): on the loop thread, in a worker that serves the
     * instance (between worker_start and worker_stop). `data` is valid
     * during the call only. May be NULL: broadcasts to it are dropped.
     */
    void (*on_broadcast)(void *state, const void *data, size_t length);
} pb_plugin;

#ifdef __cplusplus
}
#endif

#endif /* PLUGBOARD_PLUGIN_H */

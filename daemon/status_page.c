/*
 * status_page.c - writes the HTML status page of a stats snapshot: one
 * HTML5 document with its style inline and no script or external asset, so
 * that it shows the same from any network, that refreshes itself every
 * five seconds through a meta tag (so it works with scripts off), and that
 * folds to a single column with scrolling tables on a phone. Every name in
 * it comes from the configuration and is escaped.
 */

#include "status_page.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "stats_view.h"

/* The writer notes the first failed append and carries on, so that each
 * section need not check every one. */
typedef struct page {
    pb_buf *out;
    int failed;
} page;

static const char dash[] = "\xe2\x80\x94";   /* an em dash: no data */

static void put(page *p, const char *text)
{
    if (!p->failed && pb_buf_append_str(p->out, text) != 0)
        p->failed = 1;
}

static void putf(page *p, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void putf(page *p, const char *format, ...)
{
    char text[256];
    va_list ap;

    va_start(ap, format);
    int n = vsnprintf(text, sizeof text, format, ap);
    va_end(ap);
    /* Every format here is a number or two with a unit; it fits. */
    if (n < 0 || (size_t)n >= sizeof text) {
        p->failed = 1;
        return;
    }
    put(p, text);
}

static void put_escaped(page *p, const char *text)
{
    for (const char *s = text; *s != '\0' && !p->failed; s++) {
        size_t plain = strcspn(s, "&<>\"'");
        if (plain > 0) {
            if (pb_buf_append(p->out, s, plain) != 0)
                p->failed = 1;
            s += plain;
            if (*s == '\0')
                break;
        }
        switch (*s) {
        case '&': put(p, "&amp;"); break;
        case '<': put(p, "&lt;"); break;
        case '>': put(p, "&gt;"); break;
        case '"': put(p, "&quot;"); break;
        default: put(p, "&#39;"); break;
        }
    }
}

/* A count, or the dash when the snapshot does not have it. */
static void put_count(page *p, const json_t *value)
{
    if (json_is_integer(value))
        putf(p, "%lld", (long long)json_integer_value(value));
    else if (json_is_real(value))
        putf(p, "%.0f", json_real_value(value));
    else
        put(p, dash);
}

/* A figure in words, or the dash when the snapshot does not have it. */
static void put_number_as(page *p, const json_t *value,
                          void (*format)(char *, size_t, double))
{
    char text[64];
    if (!json_is_number(value)) {
        put(p, dash);
        return;
    }
    format(text, sizeof text, json_number_value(value));
    put(p, text);
}

static void put_quantile(page *p, const json_t *histogram, double q)
{
    char text[64];
    double v;
    if (pb_stats_quantile(histogram, q, &v) != 0) {
        put(p, dash);
        return;
    }
    pb_stats_format_seconds(text, sizeof text, v);
    put(p, text);
}

static const char style[] =
    ":root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--muted:#5b6470;"
    "--line:#d8dde3;--tile:#f4f6f8;--accent:#0b6bcb;--bad:#b42318}"
    "@media (prefers-color-scheme:dark){:root{--fg:#e6e8eb;--bg:#15181c;"
    "--muted:#9aa4af;--line:#2d333b;--tile:#1e2329;--accent:#5aa9f5;--bad:#f97066}}"
    "*{box-sizing:border-box}"
    "body{margin:0 auto;max-width:75rem;padding:1rem;color:var(--fg);"
    "background:var(--bg);font:15px/1.45 system-ui,-apple-system,'Segoe UI',"
    "Roboto,sans-serif}"
    "header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.25rem 1rem;"
    "border-bottom:2px solid var(--accent);margin-bottom:1rem}"
    "h1{font-size:1.4rem;margin:.2rem 0}"
    "h2{font-size:1.05rem;margin:0 0 .4rem}"
    ".muted{color:var(--muted)}"
    ".tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(9.5rem,1fr));"
    "gap:.6rem;margin:0 0 1.2rem}"
    ".tile{background:var(--tile);border-radius:.4rem;padding:.5rem .7rem;margin:0}"
    ".tile dt{font-size:.8rem;color:var(--muted)}"
    ".tile dd{margin:0;font-size:1.2rem;font-variant-numeric:tabular-nums}"
    /* minmax(0,...): a wide table scrolls in its column instead of
     * widening the page past a phone's screen. */
    ".grid{display:grid;grid-template-columns:minmax(0,1fr);gap:1.2rem}"
    ".grid>*{min-width:0}"
    "@media (min-width:52rem){.grid{grid-template-columns:repeat(2,minmax(0,1fr))}"
    ".wide{grid-column:1/-1}}"
    ".scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}"
    "table{border-collapse:collapse;width:100%;white-space:nowrap}"
    "th,td{padding:.3rem .6rem;border-bottom:1px solid var(--line);text-align:right}"
    "th:first-child,td:first-child,#metrics td:nth-child(-n+3),"
    "#metrics th:nth-child(-n+3){text-align:left}"
    "th{font-size:.8rem;color:var(--muted);font-weight:600}"
    "td{font-variant-numeric:tabular-nums}"
    "td.bad{color:var(--bad);font-weight:600}"
    "footer{margin-top:1.5rem;font-size:.8rem;color:var(--muted)}";

static void put_head(page *p, const json_t *snapshot)
{
    const json_t *version = json_object_get(snapshot, "version");
    const json_t *abi = json_object_get(snapshot, "abi");

    put(p, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           "<meta http-equiv=\"refresh\" content=\"5\">\n"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
           "<meta name=\"color-scheme\" content=\"light dark\">\n"
           "<title>Plugboard status</title>\n<style>");
    put(p, style);
    put(p, "</style>\n</head>\n<body>\n<header><h1>Plugboard</h1><span class=\"muted\">");
    if (json_is_string(version)) {
        put(p, "version ");
        put_escaped(p, json_string_value(version));
    } else {
        put(p, "version unknown");
    }
    if (json_is_integer(abi))
        putf(p, " &middot; plugin ABI %lld", (long long)json_integer_value(abi));
    put(p, "</span></header>\n");
}

static void tile_start(page *p, const char *label)
{
    put(p, "<div class=\"tile\"><dt>");
    put(p, label);
    put(p, "</dt><dd>");
}

static void tile_count(page *p, const char *label, const json_t *value)
{
    tile_start(p, label);
    put_count(p, value);
    put(p, "</dd></div>");
}

static void put_summary(page *p, const json_t *s)
{
    const json_t *connections = json_object_get(s, "connections");
    const json_t *bytes = json_object_get(s, "bytes");

    put(p, "<dl class=\"tiles\" id=\"summary\">");
    tile_start(p, "Uptime");
    put_number_as(p, json_object_get(s, "uptime"), pb_stats_format_uptime);
    put(p, "</dd></div>");
    tile_count(p, "Generation", json_object_get(s, "generation"));
    tile_count(p, "Reloads", json_object_get(s, "reloads"));
    tile_count(p, "Failed reloads", json_object_get(s, "failed_reloads"));
    tile_count(p, "Workers", json_object_get(s, "workers"));
    tile_count(p, "Worker restarts", json_object_get(s, "worker_restarts"));
    tile_count(p, "Connections open", json_object_get(connections, "open"));
    tile_count(p, "Connections accepted", json_object_get(connections, "accepted"));
    tile_count(p, "Messages", json_object_get(s, "messages"));
    tile_start(p, "Bytes in");
    put_number_as(p, json_object_get(bytes, "in"), pb_stats_format_bytes);
    put(p, "</dd></div>");
    tile_start(p, "Bytes out");
    put_number_as(p, json_object_get(bytes, "out"), pb_stats_format_bytes);
    put(p, "</dd></div></dl>\n");
}

/* A section with a table; the columns after the first are numbers. */
static void table_start(page *p, const char *id, const char *title, const char *const *columns)
{
    putf(p, "<section id=\"%s\"", id);
    put(p, "><h2>");
    put(p, title);
    put(p, "</h2><div class=\"scroll\"><table><thead><tr>");
    for (; *columns != NULL; columns++) {
        put(p, "<th>");
        put(p, *columns);
        put(p, "</th>");
    }
    put(p, "</tr></thead><tbody>");
}

static void table_end(page *p)
{
    put(p, "</tbody></table></div></section>\n");
}

static void empty_row(page *p, int columns, const char *why)
{
    putf(p, "<tr><td colspan=\"%d\" class=\"muted\">", columns);
    put(p, why);
    put(p, "</td></tr>");
}

static void cell_name(page *p, const char *name)
{
    put(p, "<tr><td>");
    put_escaped(p, name);
    put(p, "</td>");
}

static void cell_count(page *p, const json_t *value)
{
    put(p, "<td>");
    put_count(p, value);
    put(p, "</td>");
}

/* Errors stand out once there are any. */
static void cell_errors(page *p, const json_t *value)
{
    put(p, json_is_number(value) && json_number_value(value) > 0 ? "<td class=\"bad\">" : "<td>");
    put_count(p, value);
    put(p, "</td>");
}

static void put_workers(page *p, const json_t *s)
{
    static const char *const columns[] = { "Slot", "PID", "Connections", "Messages", NULL };
    const json_t *list = json_object_get(s, "worker_list");
    size_t i;
    const json_t *w;

    table_start(p, "workers", "Workers", columns);
    if (json_array_size(list) == 0)
        empty_row(p, 4, "No per-worker figures.");
    json_array_foreach(list, i, w) {
        put(p, "<tr><td>");
        put_count(p, json_object_get(w, "slot"));
        put(p, "</td>");
        cell_count(p, json_object_get(w, "pid"));
        cell_count(p, json_object_get(w, "connections"));
        cell_count(p, json_object_get(w, "messages"));
        put(p, "</tr>");
    }
    table_end(p);
}

static void put_listeners(page *p, const json_t *s)
{
    static const char *const columns[] = { "Listener", "Open", "Accepted", NULL };
    const json_t *listeners = json_object_get(s, "listeners");
    const char *name;
    const json_t *l;

    table_start(p, "listeners", "Listeners", columns);
    if (json_object_size(listeners) == 0)
        empty_row(p, 3, "No per-listener figures.");
    json_object_foreach((json_t *)listeners, name, l) {
        cell_name(p, name);
        cell_count(p, json_object_get(l, "open"));
        cell_count(p, json_object_get(l, "accepted"));
        put(p, "</tr>");
    }
    table_end(p);
}

/* Counts kept for names no longer configured, as a last row. */
static void retired_row(page *p, const json_t *retired, int columns)
{
    const json_t *messages = json_object_get(retired, "messages");
    const json_t *errors = json_object_get(retired, "errors");
    if (!(json_is_number(messages) && json_number_value(messages) > 0)
        && !(json_is_number(errors) && json_number_value(errors) > 0))
        return;
    put(p, "<tr class=\"muted\"><td>(no longer configured)</td>");
    cell_count(p, messages);
    cell_errors(p, errors);
    for (int i = 3; i < columns; i++)
        put(p, "<td></td>");
    put(p, "</tr>");
}

static void put_routes(page *p, const json_t *s)
{
    static const char *const columns[] = { "Route", "Messages", "Errors", NULL };
    const json_t *routes = json_object_get(s, "routes");
    const char *name;
    const json_t *r;

    table_start(p, "routes", "Routes", columns);
    if (json_object_size(routes) == 0)
        empty_row(p, 3, "No routes.");
    json_object_foreach((json_t *)routes, name, r) {
        cell_name(p, name);
        cell_count(p, json_object_get(r, "messages"));
        cell_errors(p, json_object_get(r, "errors"));
        put(p, "</tr>");
    }
    retired_row(p, json_object_get(json_object_get(s, "retired"), "routes"), 3);
    table_end(p);
}

static void put_plugins(page *p, const json_t *s)
{
    static const char *const columns[] = { "Plugin", "Messages", "Errors",
                                           "p50", "p90", "p99", NULL };
    const json_t *plugins = json_object_get(s, "plugins");
    const char *name;
    const json_t *pl;

    table_start(p, "plugins", "Plugins", columns);
    if (json_object_size(plugins) == 0)
        empty_row(p, 6, "No plugins.");
    json_object_foreach((json_t *)plugins, name, pl) {
        const json_t *latency = json_object_get(pl, "latency");
        cell_name(p, name);
        cell_count(p, json_object_get(pl, "messages"));
        cell_errors(p, json_object_get(pl, "errors"));
        static const double quantiles[] = { 0.5, 0.9, 0.99 };
        for (size_t i = 0; i < sizeof quantiles / sizeof quantiles[0]; i++) {
            put(p, "<td>");
            put_quantile(p, latency, quantiles[i]);
            put(p, "</td>");
        }
        put(p, "</tr>");
    }
    retired_row(p, json_object_get(json_object_get(s, "retired"), "plugins"), 6);
    table_end(p);
}

/* Each plugin's own metrics: a number, or numbers by label (a queue's
 * depth by queue name), one row each. */
static void put_plugin_metrics(page *p, const json_t *s)
{
    static const char *const columns[] = { "Plugin", "Metric", "Label", "Value", NULL };
    const json_t *plugins = json_object_get(s, "plugins");
    const char *plugin, *metric, *label;
    const json_t *pl, *value, *v;
    int rows = 0;

    table_start(p, "metrics", "Plugin metrics", columns);
    json_object_foreach((json_t *)plugins, plugin, pl) {
        json_object_foreach(json_object_get(pl, "metrics"), metric, value) {
            if (json_is_object(value)) {
                json_object_foreach((json_t *)value, label, v) {
                    cell_name(p, plugin);
                    put(p, "<td>");
                    put_escaped(p, metric);
                    put(p, "</td><td>");
                    put_escaped(p, label);
                    put(p, "</td>");
                    cell_count(p, v);
                    put(p, "</tr>");
                    rows++;
                }
                continue;
            }
            cell_name(p, plugin);
            put(p, "<td>");
            put_escaped(p, metric);
            put(p, "</td><td></td>");
            cell_count(p, value);
            put(p, "</tr>");
            rows++;
        }
    }
    if (rows == 0)
        empty_row(p, 4, "No plugin keeps metrics of its own.");
    table_end(p);
}

static void put_refusals(page *p, const json_t *s)
{
    static const char *const columns[] = { "Refused because", "Connections", NULL };
    const json_t *connections = json_object_get(s, "connections");
    const json_t *by = json_object_get(connections, "refused_by");
    const char *reason;
    const json_t *n;

    table_start(p, "refused", "Connections refused", columns);
    json_object_foreach((json_t *)by, reason, n) {
        cell_name(p, reason);
        cell_errors(p, n);
        put(p, "</tr>");
    }
    put(p, "<tr><td>total</td>");
    cell_errors(p, json_object_get(connections, "refused"));
    put(p, "</tr>");
    table_end(p);
}

static void put_errors(page *p, const json_t *s)
{
    static const char *const columns[] = { "Error code", "Replies", NULL };
    const json_t *errors = json_object_get(s, "errors");
    const char *code;
    const json_t *n;

    table_start(p, "errors", "Errors", columns);
    if (json_object_size(errors) == 0)
        empty_row(p, 2, "No error counts.");
    json_object_foreach((json_t *)errors, code, n) {
        cell_name(p, code);
        cell_errors(p, n);
        put(p, "</tr>");
    }
    table_end(p);
}

int pb_status_page_write(pb_buf *out, const json_t *snapshot)
{
    page p = { out, 0 };
    size_t was = out->len;

    put_head(&p, snapshot);
    put(&p, "<main>\n");
    put_summary(&p, snapshot);
    put(&p, "<div class=\"grid\">\n");
    put_workers(&p, snapshot);
    put_listeners(&p, snapshot);
    put(&p, "<div class=\"wide\">");
    put_plugins(&p, snapshot);
    put(&p, "</div><div class=\"wide\">");
    put_routes(&p, snapshot);
    put(&p, "</div>");
    put_plugin_metrics(&p, snapshot);
    put(&p, "<div>");
    put_refusals(&p, snapshot);
    put(&p, "<br>");
    put_errors(&p, snapshot);
    put(&p, "</div>\n</div>\n</main>\n<footer>Counters summed over the workers; "
            "this page refreshes itself every 5 seconds. Prometheus metrics: "
            "<a href=\"/metrics\">/metrics</a>.</footer>\n</body>\n</html>\n");
    if (p.failed) {
        if (out->data != NULL)
            pb_buf_truncate(out, was);
        return -1;
    }
    return 0;
}

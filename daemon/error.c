/*
 * error.c - names, close semantics, HTTP statuses and the JSON content of
 * the wire error codes.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "json_dump.h"

const char *pb_error_token(pb_error_code code)
{
    switch (code) {
    case PB_ERR_NONE:          return "none";
    case PB_ERR_BAD_FRAME:     return "bad_frame";
    case PB_ERR_TOO_LARGE:     return "too_large";
    case PB_ERR_BAD_JSON:      return "bad_json";
    case PB_ERR_NO_ROUTE:      return "no_route";
    case PB_ERR_PLUGIN_FAILED: return "plugin_failed";
    case PB_ERR_BUSY:          return "busy";
    case PB_ERR_SHUTTING_DOWN: return "shutting_down";
    case PB_ERR_SLOW_CONSUMER: return "slow_consumer";
    }
    return "unknown";
}

int pb_error_closes(pb_error_code code)
{
    switch (code) {
    case PB_ERR_BAD_JSON:
    case PB_ERR_NO_ROUTE:
    case PB_ERR_PLUGIN_FAILED:
        return 0;
    default:
        return 1;
    }
}

int pb_error_http_status(pb_error_code code)
{
    switch (code) {
    case PB_ERR_NO_ROUTE:      return 404;
    case PB_ERR_TOO_LARGE:     return 413;
    case PB_ERR_PLUGIN_FAILED: return 502;
    case PB_ERR_BUSY:
    case PB_ERR_SHUTTING_DOWN: return 503;
    default:                   return 400;
    }
}

int pb_error_encode_json(pb_buf *out, const char *token, const char *text)
{
    size_t keep = pb_buf_used(out);
    if (pb_buf_append_str(out, "{\"error\": ") == 0
        && pb_json_dump_string(out, text, strlen(text)) == 0
        && pb_buf_append_str(out, ", \"code\": ") == 0
        && pb_json_dump_string(out, token, strlen(token)) == 0
        && pb_buf_append_byte(out, '}') == 0)
        return 0;
    pb_buf_truncate(out, out->start + keep);
    return -1;
}

int pb_error_set(pb_error *err, pb_error_code code, const char *format, ...)
{
    va_list ap;
    err->code = code;
    va_start(ap, format);
    vsnprintf(err->text, sizeof err->text, format, ap);
    va_end(ap);
    return -1;
}

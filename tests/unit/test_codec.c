/*
 * test_codec.c - tests of daemon/codec.c's http table and of the error
 * helpers of daemon/error.c it builds on: a reply's Content-Type with and
 * without charset, the whole response a refused connection gets, and the
 * HTTP status of every error code.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "frame.h"

static void expect_buf(const pb_buf *b, const void *want, size_t len)
{
    cr_assert_eq(pb_buf_used(b), len, "got %zu bytes, wanted %zu", pb_buf_used(b), len);
    cr_expect(memcmp(pb_buf_head(b), want, len) == 0);
}

Test(codec, http_reply_is_its_content_type_a_nul_and_the_body)
{
    const pb_codec *http = pb_codec_for(PB_HTTP);
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(http->framing, PB_FRAMING_HTTP);
    cr_assert_eq(http->reply_head(&out, "text/json", "utf-8", 2, 0), 0);
    cr_assert_eq(pb_buf_append(&out, "{}", 2), 0);
    cr_assert_eq(http->reply_tail(&out), 0);
    expect_buf(&out, "text/json; charset=utf-8\0{}", 27);
    pb_buf_clear(&out);
    cr_assert_eq(http->reply_head(&out, "image/png", "binary", 3, 0), 0);
    expect_buf(&out, "image/png\0", 10);
    pb_buf_free(&out);
}

Test(codec, http_error_is_a_whole_response_that_closes)
{
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_codec_for(PB_HTTP)->error(&out, PB_ERR_BUSY, "too \"many\""), 0);
    const char *body = "{\"error\": \"too \\\"many\\\"\", \"code\": \"busy\"}";
    char want[512];
    int n = snprintf(want, sizeof want,
                     "HTTP/1.1 503 Service Unavailable\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s", strlen(body), body);
    expect_buf(&out, want, (size_t)n);
    pb_buf_free(&out);
}

Test(codec, error_json_is_the_error_frames_content)
{
    pb_buf out = PB_BUF_INIT;
    cr_assert_eq(pb_error_encode_json(&out, "no_route", "no route for \xf0\x9f\x90\xb0"), 0);
    /* As json.dumps(ensure_ascii=False) writes it. */
    const char *want = "{\"error\": \"no route for \xf0\x9f\x90\xb0\", \"code\": \"no_route\"}";
    expect_buf(&out, want, strlen(want));
    pb_buf frame = PB_BUF_INIT;
    cr_assert_eq(pb_frame_encode_error(&frame, PB_ERR_NO_ROUTE, "no route for \xf0\x9f\x90\xb0"), 0);
    /* The frame's content is its last bytes. */
    cr_assert(pb_buf_used(&frame) > pb_buf_used(&out));
    cr_expect(memcmp(pb_buf_head(&frame) + pb_buf_used(&frame) - pb_buf_used(&out),
                     pb_buf_head(&out), pb_buf_used(&out)) == 0);
    pb_buf_free(&frame);
    pb_buf_free(&out);
}

Test(codec, http_status_of_every_code)
{
    cr_expect_eq(pb_error_http_status(PB_ERR_BAD_JSON), 400);
    cr_expect_eq(pb_error_http_status(PB_ERR_NO_ROUTE), 404);
    cr_expect_eq(pb_error_http_status(PB_ERR_TOO_LARGE), 413);
    cr_expect_eq(pb_error_http_status(PB_ERR_PLUGIN_FAILED), 502);
    cr_expect_eq(pb_error_http_status(PB_ERR_BUSY), 503);
    cr_expect_eq(pb_error_http_status(PB_ERR_SHUTTING_DOWN), 503);
    cr_expect_eq(pb_error_http_status(PB_ERR_BAD_FRAME), 400);
    cr_expect_eq(pb_error_http_status(PB_ERR_SLOW_CONSUMER), 400);
}

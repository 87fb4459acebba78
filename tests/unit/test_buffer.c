/*
 * test_buffer.c - tests of daemon/buffer.c: appending, consuming,
 * compaction, truncation and the memory an empty buffer holds.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "buffer.h"

static void expect_content(const pb_buf *b, const void *data, size_t n)
{
    cr_assert_eq(pb_buf_used(b), n);
    if (n > 0)
        cr_expect_eq(memcmp(pb_buf_head(b), data, n), 0);
}

Test(buffer, empty_buffer_holds_no_memory)
{
    pb_buf b = PB_BUF_INIT;
    cr_expect_eq(pb_buf_used(&b), 0);
    cr_expect_null(b.data);
    cr_expect_eq(pb_buf_append(&b, "x", 0), 0);
    cr_expect_null(b.data, "appending nothing allocates nothing");
    pb_buf_free(&b);
    cr_expect_null(b.data);
}

Test(buffer, appends)
{
    pb_buf b = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append(&b, "ab", 2), 0);
    cr_assert_eq(pb_buf_append_str(&b, "cd"), 0);
    cr_assert_eq(pb_buf_append_byte(&b, 0), 0);
    cr_assert_eq(pb_buf_append_byte(&b, 'e'), 0);
    expect_content(&b, "abcd\0e", 6);
    pb_buf_free(&b);
}

Test(buffer, extend_hands_out_room_to_fill)
{
    pb_buf b = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append_str(&b, "head:"), 0);
    unsigned char *p = pb_buf_extend(&b, 3);
    cr_assert_not_null(p);
    memcpy(p, "xyz", 3);
    expect_content(&b, "head:xyz", 8);
    pb_buf_free(&b);
}

Test(buffer, consume_drops_from_the_front_and_frees_when_empty)
{
    pb_buf b = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append_str(&b, "hello world"), 0);
    pb_buf_consume(&b, 6);
    expect_content(&b, "world", 5);
    pb_buf_consume(&b, 5);
    cr_expect_eq(pb_buf_used(&b), 0);
    cr_expect_null(b.data);
    cr_expect_eq(b.cap, 0);
}

Test(buffer, growth_keeps_content)
{
    pb_buf b = PB_BUF_INIT;
    for (unsigned i = 0; i < 100000; i++)
        cr_assert_eq(pb_buf_append_byte(&b, (unsigned char)(i * 7)), 0);
    cr_assert_eq(pb_buf_used(&b), 100000);
    for (unsigned i = 0; i < 100000; i++)
        cr_assert_eq(pb_buf_head(&b)[i], (unsigned char)(i * 7));
    cr_expect_geq(b.cap, b.len);
    pb_buf_free(&b);
}

Test(buffer, room_is_reclaimed_from_consumed_bytes)
{
    pb_buf b = PB_BUF_INIT;
    char block[200];
    memset(block, 'a', sizeof block);
    cr_assert_eq(pb_buf_append(&b, block, sizeof block), 0);
    size_t cap = b.cap;
    pb_buf_consume(&b, 190);
    cr_assert_eq(pb_buf_append_str(&b, "0123456789"), 0);
    cr_assert_eq(pb_buf_reserve(&b, cap - 20), 0);
    cr_expect_eq(b.cap, cap, "the live tail moved to the front instead of growing");
    cr_expect_eq(b.start, 0);
    expect_content(&b, "aaaaaaaaaa0123456789", 20);
    pb_buf_free(&b);
}

Test(buffer, reserve_keeps_content_when_growing_after_consume)
{
    pb_buf b = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append_str(&b, "0123456789"), 0);
    pb_buf_consume(&b, 2);
    cr_assert_eq(pb_buf_reserve(&b, 100000), 0);
    cr_expect_geq(b.cap - b.len, 100000);
    expect_content(&b, "23456789", 8);
    pb_buf_free(&b);
}

Test(buffer, impossible_reserve_fails_and_keeps_content)
{
    pb_buf b = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append_str(&b, "keep"), 0);
    cr_expect_eq(pb_buf_reserve(&b, SIZE_MAX), -1);
    cr_expect_null(pb_buf_extend(&b, SIZE_MAX - 1));
    expect_content(&b, "keep", 4);
    pb_buf_free(&b);
}

Test(buffer, truncate_is_absolute_and_stops_at_start)
{
    pb_buf b = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append_str(&b, "abcdef"), 0);
    pb_buf_consume(&b, 2);
    pb_buf_truncate(&b, b.start + 3);
    expect_content(&b, "cde", 3);
    pb_buf_truncate(&b, b.start + 10);
    expect_content(&b, "cde", 3);
    pb_buf_truncate(&b, 0);
    cr_expect_eq(pb_buf_used(&b), 0);
    pb_buf_free(&b);
}

Test(buffer, clear_keeps_memory)
{
    pb_buf b = PB_BUF_INIT;
    cr_assert_eq(pb_buf_append_str(&b, "abc"), 0);
    pb_buf_consume(&b, 1);
    unsigned char *data = b.data;
    size_t cap = b.cap;
    pb_buf_clear(&b);
    cr_expect_eq(pb_buf_used(&b), 0);
    cr_expect_eq(b.data, data);
    cr_expect_eq(b.cap, cap);
    cr_assert_eq(pb_buf_append_str(&b, "xy"), 0);
    cr_expect_eq(b.data, data);
    expect_content(&b, "xy", 2);
    pb_buf_free(&b);
}

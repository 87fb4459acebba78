/*
 * test_tls_files.c - the TLS files the master reads travel to a worker
 * packed in one buffer: they come back whole, and a cut buffer is refused
 * without a leak.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "tls.h"

static pb_tls_file two[] = {
    { .path = "/etc/plugboard/tls/server.crt", .data = (unsigned char *)"CERT\0bytes", .len = 10 },
    { .path = "/etc/plugboard/tls/server.key", .data = (unsigned char *)"", .len = 0 },
};

Test(tls_files, come_back_whole)
{
    pb_tls_files files = { two, 2 }, back;
    pb_buf packed = PB_BUF_INIT;
    cr_assert_eq(pb_tls_files_pack(&files, &packed), 0);
    pb_buf_append(&packed, "text after", 10);

    size_t used = 0;
    cr_assert_eq(pb_tls_files_unpack(&back, pb_buf_head(&packed), pb_buf_used(&packed), &used), 0);
    cr_assert_eq(back.count, 2);
    for (size_t i = 0; i < 2; i++) {
        cr_expect_str_eq(back.items[i].path, two[i].path);
        cr_assert_eq(back.items[i].len, two[i].len);
        cr_expect_eq(memcmp(back.items[i].data, two[i].data, two[i].len), 0);
    }
    cr_expect_eq(used, pb_buf_used(&packed) - 10, "the text follows the files");
    pb_tls_files_free(&back);
    pb_buf_free(&packed);
}

Test(tls_files, none_is_a_count_of_zero)
{
    pb_tls_files none = { NULL, 0 }, back;
    pb_buf packed = PB_BUF_INIT;
    cr_assert_eq(pb_tls_files_pack(&none, &packed), 0);
    size_t used = 0;
    cr_assert_eq(pb_tls_files_unpack(&back, pb_buf_head(&packed), pb_buf_used(&packed), &used), 0);
    cr_expect_eq(back.count, 0);
    cr_expect_eq(used, pb_buf_used(&packed));
    pb_tls_files_free(&back);
    pb_buf_free(&packed);
}

Test(tls_files, a_cut_buffer_is_refused_at_every_length)
{
    pb_tls_files files = { two, 2 }, back;
    pb_buf packed = PB_BUF_INIT;
    cr_assert_eq(pb_tls_files_pack(&files, &packed), 0);
    for (size_t len = 0; len < pb_buf_used(&packed); len++) {
        size_t used = 0;
        cr_expect_eq(pb_tls_files_unpack(&back, pb_buf_head(&packed), len, &used), -1,
                     "%zu of %zu bytes unpacked", len, pb_buf_used(&packed));
        cr_expect_eq(back.count, 0);
        cr_expect_null(back.items);
    }
    pb_buf_free(&packed);
}

Test(tls_files, a_count_larger_than_the_buffer_is_refused)
{
    unsigned char huge[8];
    uint64_t count = UINT64_MAX;
    memcpy(huge, &count, sizeof huge);
    pb_tls_files back;
    size_t used = 0;
    cr_expect_eq(pb_tls_files_unpack(&back, huge, sizeof huge, &used), -1);
}

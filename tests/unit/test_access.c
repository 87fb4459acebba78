/*
 * test_access.c - allow-lists: CIDR text, good and bad, and matching IPv4,
 * IPv6 and IPv4-mapped peers at every prefix boundary.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "access.h"

static struct sockaddr_storage peer(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &in->sin_addr) == 1)
        in->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1)
        in6->sin6_family = AF_INET6;
    else
        cr_assert_fail("test address %s", text);
    return ss;
}

static int allowed(const char *network, const char *address)
{
    pb_cidr c;
    cr_assert_eq(pb_cidr_parse(network, &c), 0, "%s", network);
    struct sockaddr_storage ss = peer(address);
    return pb_cidr_match(&c, 1, (const struct sockaddr *)&ss);
}

Test(access, networks_and_plain_addresses_parse)
{
    static const char *const good[] = {
        "10.0.0.0/8", "127.0.0.1", "0.0.0.0/0", "192.168.1.7/32",
        "::1", "::1/128", "fe80::/10", "::/0", "2001:db8::/32",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        pb_cidr c;
        cr_expect_eq(pb_cidr_parse(good[i], &c), 0, "%s", good[i]);
    }
}

Test(access, malformed_networks_are_refused)
{
    static const char *const bad[] = {
        "", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/8x",
        "10.0.0/8", "256.0.0.0", "::1/129", "localhost", "10.0.0.0/ 8",
        "10.0.0.0/+8", "1.2.3.4/08x", "::g",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pb_cidr c;
        cr_expect_eq(pb_cidr_parse(bad[i], &c), -1, "\"%s\" was accepted", bad[i]);
    }
}

Test(access, ipv4_prefixes)
{
    cr_expect(allowed("10.0.0.0/8", "10.255.1.2"));
    cr_expect(!allowed("10.0.0.0/8", "11.0.0.1"));
    cr_expect(allowed("192.168.4.0/22", "192.168.7.255"));
    cr_expect(!allowed("192.168.4.0/22", "192.168.8.0"));
    cr_expect(allowed("127.0.0.1", "127.0.0.1"));
    cr_expect(!allowed("127.0.0.1", "127.0.0.2"));
    cr_expect(allowed("0.0.0.0/0", "8.8.8.8"));
}

Test(access, ipv6_prefixes_and_mapped_ipv4)
{
    cr_expect(allowed("::1/128", "::1"));
    cr_expect(!allowed("::1/128", "::2"));
    cr_expect(allowed("fe80::/10", "febf::1"));
    cr_expect(!allowed("fe80::/10", "fec0::1"));
    cr_expect(allowed("10.0.0.0/8", "::ffff:10.1.2.3"),
              "an IPv4 peer on an IPv6 socket matches IPv4 networks");
    cr_expect(!allowed("::1/128", "127.0.0.1"), "families never mix");
}

Test(access, any_network_of_a_list_admits)
{
    pb_cidr list[2];
    cr_assert_eq(pb_cidr_parse("10.0.0.0/8", &list[0]), 0);
    cr_assert_eq(pb_cidr_parse("::1", &list[1]), 0);
    struct sockaddr_storage a = peer("::1"), b = peer("192.0.2.1");
    cr_expect(pb_cidr_match(list, 2, (const struct sockaddr *)&a));
    cr_expect(!pb_cidr_match(list, 2, (const struct sockaddr *)&b));
}

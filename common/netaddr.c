/* Numeric socket addresses ("1.2.3.4:80", "[::1]:80") and CIDR networks, for listeners, backends and the
 * allowlist of backend networks.
 *
 * Parsing is numeric only (inet_pton, never getaddrinfo) so it can't block the event loop, and strict:
 * the whole string must be an address, ports are decimal in 1..65535, IPv6 with a port needs brackets.
 * A struct netaddr is a plain value that can be copied and compared; nothing here allocates or logs. */
#include "common/netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/macro.h"

/* Longest host text we accept: a full IPv6 address with an embedded IPv4 part. */
#define NETADDR_HOST_MAX INET6_ADDRSTRLEN

/* Parses a decimal port. Returns 0, -EINVAL when malformed, -ERANGE above 65535, or for 0 unless
 * <allow_port0>. */
static int netaddr_parse_port(const char *s, bool allow_port0, uint16_t *ret)
{
        unsigned v = 0;
        size_t n = 0;

        for (; s[n] != '\0'; n++) {
                if (s[n] < '0' || s[n] > '9')
                        return -EINVAL;
                if (n < 6)
                        v = v * 10 + (unsigned)(s[n] - '0');
        }
        if (n == 0)
                return -EINVAL;
        if (n > 5 || v > 65535 || (v == 0 && !allow_port0))
                return -ERANGE;
        *ret = (uint16_t)v;
        return 0;
}

/* Copies the <len> bytes at <s> into <buf> as a string. Returns -EINVAL when empty or too long. */
static int netaddr_copy_host(const char *s, size_t len, char buf[static NETADDR_HOST_MAX])
{
        if (len == 0 || len >= NETADDR_HOST_MAX)
                return -EINVAL;
        memcpy(buf, s, len);
        buf[len] = '\0';
        return 0;
}

static void netaddr_make_v4(struct netaddr *a, const struct in_addr *addr, uint16_t port)
{
        *a = (struct netaddr){.len = sizeof(struct sockaddr_in)};
        a->u.in.sin_family = AF_INET;
        a->u.in.sin_addr = *addr;
        a->u.in.sin_port = htons(port);
}

static void netaddr_make_v6(struct netaddr *a, const struct in6_addr *addr, uint16_t port)
{
        *a = (struct netaddr){.len = sizeof(struct sockaddr_in6)};
        a->u.in6.sin6_family = AF_INET6;
        a->u.in6.sin6_addr = *addr;
        a->u.in6.sin6_port = htons(port);
}

int netaddr_parse(const char *s, uint16_t default_port, bool allow_port0, struct netaddr *ret)
{
        char host[NETADDR_HOST_MAX];
        const char *colon, *port_str = NULL;
        struct in6_addr in6;
        struct in_addr in4;
        uint16_t port = default_port;
        bool v6;
        int r;

        if (!s || !ret)
                return -EINVAL;

        if (s[0] == '[') {
                /* "[v6]" or "[v6]:port" */
                const char *end = strchr(s, ']');

                if (!end)
                        return -EINVAL;
                r = netaddr_copy_host(s + 1, (size_t)(end - s - 1), host);
                if (r < 0)
                        return r;
                if (end[1] == ':')
                        port_str = end + 2;
                else if (end[1] != '\0')
                        return -EINVAL;
                v6 = true;
        } else if ((colon = strchr(s, ':')) && strchr(colon + 1, ':')) {
                /* Two colons or more without brackets: a bare IPv6 address, which can't carry a port. */
                r = netaddr_copy_host(s, strlen(s), host);
                if (r < 0)
                        return r;
                v6 = true;
        } else if (colon) {
                /* "v4:port", ":port" or "*:port" */
                size_t len = (size_t)(colon - s);

                if (len == 0 || (len == 1 && s[0] == '*'))
                        (void)snprintf(host, sizeof(host), "0.0.0.0");
                else {
                        r = netaddr_copy_host(s, len, host);
                        if (r < 0)
                                return r;
                }
                port_str = colon + 1;
                v6 = false;
        } else {
                r = netaddr_copy_host(s, strlen(s), host);
                if (r < 0)
                        return r;
                v6 = false;
        }

        if (port_str) {
                r = netaddr_parse_port(port_str, allow_port0, &port);
                if (r < 0)
                        return r;
        } else if (default_port == 0)
                return -EINVAL;

        if (v6) {
                if (inet_pton(AF_INET6, host, &in6) != 1)
                        return -EINVAL;
                netaddr_make_v6(ret, &in6, port);
        } else {
                if (inet_pton(AF_INET, host, &in4) != 1)
                        return -EINVAL;
                netaddr_make_v4(ret, &in4, port);
        }
        return 0;
}

int netaddr_format_host(const struct netaddr *a, char *buf, size_t size)
{
        char host[NETADDR_HOST_MAX];
        const char *p;
        size_t len;

        if (a->u.sa.sa_family == AF_INET)
                p = inet_ntop(AF_INET, &a->u.in.sin_addr, host, sizeof(host));
        else if (a->u.sa.sa_family == AF_INET6)
                p = inet_ntop(AF_INET6, &a->u.in6.sin6_addr, host, sizeof(host));
        else
                return -EAFNOSUPPORT;
        if (!p)
                return -EINVAL;

        len = strlen(host);
        if (len >= size)
                return -ENOBUFS;
        memcpy(buf, host, len + 1);
        return (int)len;
}

int netaddr_format(const struct netaddr *a, char *buf, size_t size)
{
        char host[NETADDR_HOST_MAX];
        int r, n;

        r = netaddr_format_host(a, host, sizeof(host));
        if (r < 0)
                return r;
        if (a->u.sa.sa_family == AF_INET6)
                n = snprintf(buf, size, "[%s]:%u", host, (unsigned)netaddr_port(a));
        else
                n = snprintf(buf, size, "%s:%u", host, (unsigned)netaddr_port(a));
        if (n < 0 || (size_t)n >= size)
                return -ENOBUFS;
        return n;
}

uint16_t netaddr_port(const struct netaddr *a)
{
        if (a->u.sa.sa_family == AF_INET)
                return ntohs(a->u.in.sin_port);
        if (a->u.sa.sa_family == AF_INET6)
                return ntohs(a->u.in6.sin6_port);
        return 0;
}

void netaddr_set_port(struct netaddr *a, uint16_t port)
{
        if (a->u.sa.sa_family == AF_INET)
                a->u.in.sin_port = htons(port);
        else if (a->u.sa.sa_family == AF_INET6)
                a->u.in6.sin6_port = htons(port);
}

bool netaddr_equal(const struct netaddr *a, const struct netaddr *b)
{
        if (a->u.sa.sa_family != b->u.sa.sa_family)
                return false;
        if (a->u.sa.sa_family == AF_INET)
                return a->u.in.sin_port == b->u.in.sin_port &&
                       a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr;
        if (a->u.sa.sa_family == AF_INET6)
                return a->u.in6.sin6_port == b->u.in6.sin6_port &&
                       a->u.in6.sin6_scope_id == b->u.in6.sin6_scope_id &&
                       memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, sizeof(struct in6_addr)) == 0;
        return false;
}

bool netaddr_same_host(const struct netaddr *a, const struct netaddr *b)
{
        struct netaddr x = *a, y = *b;

        netaddr_set_port(&x, 0);
        netaddr_set_port(&y, 0);
        return netaddr_equal(&x, &y);
}

/* True when the first <prefix> bits of <a> and <b> are equal. */
static bool netaddr_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
        size_t bytes = prefix / 8;
        unsigned bits = prefix % 8;

        if (memcmp(a, b, bytes) != 0)
                return false;
        if (bits == 0)
                return true;
        return ((a[bytes] ^ b[bytes]) & (uint8_t)(0xff << (8 - bits))) == 0;
}

/* True when every bit of <addr> from <prefix> up to <bits> is zero. */
static bool netaddr_host_bits_clear(const uint8_t *addr, unsigned prefix, unsigned bits)
{
        for (unsigned i = prefix; i < bits; i++)
                if (addr[i / 8] & (0x80u >> (i % 8)))
                        return false;
        return true;
}

int netaddr_cidr_parse(const char *s, struct netaddr_cidr *ret)
{
        char host[NETADDR_HOST_MAX];
        struct netaddr_cidr c = {0};
        const char *slash;
        unsigned max;
        size_t len;
        int r;

        if (!s || !ret)
                return -EINVAL;

        slash = strchr(s, '/');
        len = slash ? (size_t)(slash - s) : strlen(s);
        r = netaddr_copy_host(s, len, host);
        if (r < 0)
                return r;

        if (inet_pton(AF_INET, host, c.addr) == 1) {
                c.family = AF_INET;
                max = 32;
        } else if (inet_pton(AF_INET6, host, c.addr) == 1) {
                c.family = AF_INET6;
                max = 128;
        } else
                return -EINVAL;

        c.prefix = max;
        if (slash) {
                const char *p = slash + 1;
                unsigned v = 0;
                size_t n = 0;

                for (; p[n] != '\0'; n++) {
                        if (p[n] < '0' || p[n] > '9' || n >= 3)
                                return -EINVAL;
                        v = v * 10 + (unsigned)(p[n] - '0');
                }
                if (n == 0)
                        return -EINVAL;
                if (v > max)
                        return -ERANGE;
                c.prefix = v;
        }

        /* Host bits set ("10.0.0.1/16") are almost always a typo for another network: refuse them. */
        if (!netaddr_host_bits_clear(c.addr, c.prefix, max))
                return -EINVAL;

        *ret = c;
        return 0;
}

bool netaddr_cidr_contains(const struct netaddr_cidr *c, const struct netaddr *a)
{
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        uint8_t addr[16];

        if (a->u.sa.sa_family == AF_INET) {
                if (c->family == AF_INET) {
                        memcpy(addr, &a->u.in.sin_addr, 4);
                        return netaddr_prefix_equal(c->addr, addr, c->prefix);
                }
                if (c->family == AF_INET6) {
                        /* Compare as ::ffff:a.b.c.d against an IPv6 network. */
                        memcpy(addr, v4mapped, sizeof(v4mapped));
                        memcpy(addr + 12, &a->u.in.sin_addr, 4);
                        return netaddr_prefix_equal(c->addr, addr, c->prefix);
                }
                return false;
        }
        if (a->u.sa.sa_family == AF_INET6) {
                memcpy(addr, &a->u.in6.sin6_addr, 16);
                if (c->family == AF_INET6)
                        return netaddr_prefix_equal(c->addr, addr, c->prefix);
                if (c->family == AF_INET && memcmp(addr, v4mapped, sizeof(v4mapped)) == 0)
                        return netaddr_prefix_equal(c->addr, addr + 12, c->prefix);
        }
        return false;
}

int netaddr_listen(const struct netaddr *a, int backlog)
{
        int fd, one = 1;

        fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 || bind(fd, &a->u.sa, a->len) < 0 ||
            listen(fd, backlog) < 0) {
                int e = errno;

                (void)close(fd);
                return -e;
        }
        return fd;
}

/* Numeric socket addresses and CIDR networks. Nothing here resolves names: the event loop must never wait
 * on DNS, so config files give addresses. */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Big enough for "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535" and a NUL. */
#define NETADDR_STRLEN 56

struct netaddr {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } u;
        socklen_t len;
};

struct netaddr_cidr {
        int family;       /* AF_INET or AF_INET6 */
        uint8_t addr[16]; /* network byte order, host bits zero */
        unsigned prefix;
};

/* Parses "1.2.3.4:80", "[::1]:80", ":80" / "*:80" (any IPv4 address), or, when <default_port> is not 0,
 * an address without a port ("1.2.3.4", "::1", "[::1]"). Port 0 is rejected unless <allow_port0>.
 * Returns 0, -EINVAL when malformed, or -ERANGE when the port is out of range; <ret> is written only on
 * success. */
int netaddr_parse(const char *s, uint16_t default_port, bool allow_port0, struct netaddr *ret);

/* Writes "1.2.3.4:80" or "[::1]:80" into <buf>. Returns the length, or -ENOBUFS. */
int netaddr_format(const struct netaddr *a, char *buf, size_t size);

/* Writes the address without the port ("1.2.3.4", "::1"). Returns the length, or -ENOBUFS. */
int netaddr_format_host(const struct netaddr *a, char *buf, size_t size);

uint16_t netaddr_port(const struct netaddr *a);
void netaddr_set_port(struct netaddr *a, uint16_t port);
bool netaddr_equal(const struct netaddr *a, const struct netaddr *b);
/* Whether <a> and <b> are the same address, whatever their ports. */
bool netaddr_same_host(const struct netaddr *a, const struct netaddr *b);
/* A TCP socket bound to <a> (SO_REUSEADDR) and listening with <backlog>, non-blocking and close-on-exec.
 * Returns the descriptor, which the caller owns, or -errno. */
int netaddr_listen(const struct netaddr *a, int backlog);

/* Parses "10.0.0.0/16", "127.0.0.0/8", "::1/128", or a plain address (a /32 or /128). Host bits set in
 * the address ("10.0.0.1/16") are an error. Returns 0, -EINVAL when malformed, or -ERANGE when the prefix
 * is longer than the address. */
int netaddr_cidr_parse(const char *s, struct netaddr_cidr *ret);

/* Returns true when <a> lies inside <c>. An IPv4-mapped IPv6 address matches IPv4 networks. */
bool netaddr_cidr_contains(const struct netaddr_cidr *c, const struct netaddr *a);

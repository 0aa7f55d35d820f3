/* Login throttling: failed logins counted in memory per account and client address, and delays that grow
 * with them, decided before any password is hashed.
 *
 * Three counters see each failure: the account from that address (strict: an attacker guessing from one
 * place), the address whatever the account (one place trying many accounts), and the account whatever
 * the address (many places guessing one account; looser, and not applied from an address the account
 * has logged in from, so that an attacker can't lock the owner out). Once a counter reaches its limit,
 * each further failure sets a delay before the next attempt is heard: 1 s, then doubling, up to
 * <max_delay>. A counter is forgotten once three times <max_delay> have passed since its last failure;
 * a successful login clears the account's counter for that address. IPv6 addresses count by /64, the
 * block one subscriber gets.
 *
 * The counters live in a table of a fixed number of entries: when it is full the least recently used
 * entry is reused, so nobody can make it grow by cycling names or addresses. Time is passed in (an
 * injectable clock for tests). Not thread-safe: the event loop owns it. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/netaddr.h"

struct throttle;

/* Account names are counted by their first THROTTLE_ACCOUNT_MAX - 1 bytes. */
#define THROTTLE_ACCOUNT_MAX 64

struct throttle_limits {
        uint64_t pair;    /* failures of one account from one address before delays start */
        uint64_t address; /* ... from one address, whatever the account */
        uint64_t account; /* ... of one account, whatever the address */
        uint64_t max_delay_usec;
        size_t entries;   /* counters kept, at least 16 */
};

/* Creates the table. Returns 0, -EINVAL (a limit of 0, a delay under 1 s, too few entries) or -ENOMEM. */
int throttle_new(const struct throttle_limits *l, struct throttle **ret);

struct throttle *throttle_free(struct throttle *t);

/* How long an attempt to log in as <account> (the caller's normal form: webd lowercases it) from
 * <address> must wait, at <now_usec>: 0 when it may go ahead. */
uint64_t throttle_check(struct throttle *t, const char *account, const struct netaddr *address,
                        uint64_t now_usec);

/* Records a failed login (a password that was checked and wrong, or an account that does not exist). */
void throttle_failed(struct throttle *t, const char *account, const struct netaddr *address, uint64_t now_usec);

/* Records a successful login: clears the account's counter at <address> and remembers the address as one
 * the account logs in from. */
void throttle_succeeded(struct throttle *t, const char *account, const struct netaddr *address,
                        uint64_t now_usec);

/* Entries in use, for tests. */
size_t throttle_size(const struct throttle *t);

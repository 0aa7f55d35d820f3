/* Parsers for the values found in config files and on command lines. None logs; each returns 0 and writes
 * its ret_ argument on success, or -EINVAL (malformed) / -ERANGE (out of range) and leaves it alone. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "250us", "500ms", "1s", "1.5s", "2m", "1h", "1d"; a bare number is seconds. A fraction needs digits on
 * both sides of the '.'; what falls below a microsecond is dropped. At most 30 days (-ERANGE beyond). */
int parse_duration(const char *s, uint64_t *ret_usec);
/* "512", "512B", "16k", "16K", "16KiB", "1M", "2G", "1T" (powers of 1024; K/M/G/T in either case, alone
 * or followed by "iB"). Whole numbers only. */
int parse_size(const char *s, uint64_t *ret_bytes);
/* Decimal unsigned integer in [min, max], no sign, no spaces. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret);
/* yes/no, true/false, on/off, 1/0 (case-insensitive). */
int parse_bool(const char *s, bool *ret);
/* True for a non-empty string of at most <max> bytes with no control character (below 0x20, or 0x7f) and
 * none of the bytes in <reject> (NULL: none): a value fit to go into a request, a log line or a file. */
bool parse_text_ok(const char *s, size_t max, const char *reject);
/* The value of hexadecimal digit <c> (either case), or -1. */
int parse_hex_digit(char c);

/* True when <s> is a DNS host name: dot-separated labels of 1..63 letters, digits and '-' (not at either
 * end of a label), 1..253 bytes in all, no trailing dot, not all digits and dots (an address). */
bool parse_dns_name_ok(const char *s);

/* Value parsers for config files and command lines: durations, sizes, bounded integers and booleans.
 *
 * All of them are strict: the whole string must be consumed, there is no sign, no surrounding whitespace
 * and no locale dependence (no strtoul, which accepts "-1", leading spaces and "0x"). None logs; the
 * caller knows which key was wrong and says so once. */
#include "common/parse.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "common/macro.h"

#define PARSE_DURATION_MAX_USEC (UINT64_C(30) * 24 * 3600 * USEC_PER_SEC)

static bool parse_is_digit(char c)
{
        return c >= '0' && c <= '9';
}

/* Reads the run of decimal digits at *<p> into <ret>, advancing *<p> past it. Returns -EINVAL when there
 * is no digit and -ERANGE when the number does not fit in 64 bits (the digits are consumed either way). */
static int parse_digits(const char **p, uint64_t *ret)
{
        const char *s = *p;
        uint64_t v = 0;
        bool overflow = false;

        if (!parse_is_digit(*s))
                return -EINVAL;
        for (; parse_is_digit(*s); s++) {
                unsigned d = (unsigned)(*s - '0');

                if (v > (UINT64_MAX - d) / 10)
                        overflow = true;
                else
                        v = v * 10 + d;
        }
        *p = s;
        if (overflow)
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
        uint64_t v;
        int r;

        if (!s)
                return -EINVAL;
        r = parse_digits(&s, &v);
        if (r == -EINVAL || *s != '\0')
                return -EINVAL;
        if (r < 0 || v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_duration(const char *s, uint64_t *ret_usec)
{
        static const struct {
                const char *suffix;
                uint64_t usec;
        } units[] = {
                {"us", 1},
                {"ms", USEC_PER_MSEC},
                {"s", USEC_PER_SEC},
                {"m", 60 * USEC_PER_SEC},
                {"h", 3600 * USEC_PER_SEC},
                {"d", 86400 * USEC_PER_SEC},
                {"", USEC_PER_SEC},
        };
        const char *frac = NULL, *p = s;
        size_t n_frac = 0;
        uint64_t whole, unit = 0, total;
        int r;

        if (!s)
                return -EINVAL;
        r = parse_digits(&p, &whole);
        if (r == -EINVAL)
                return -EINVAL;
        if (*p == '.') {
                frac = ++p;
                while (parse_is_digit(*p))
                        p++;
                n_frac = (size_t)(p - frac);
                if (n_frac == 0)
                        return -EINVAL;
        }
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (strcmp(p, units[i].suffix) == 0) {
                        unit = units[i].usec;
                        break;
                }
        if (unit == 0)
                return -EINVAL;
        if (r < 0 || whole > PARSE_DURATION_MAX_USEC / unit)
                return -ERANGE;

        total = whole * unit;
        /* Each fractional digit is worth a tenth of the previous one; anything below a microsecond is
         * dropped. Every unit is a multiple of a power of ten, so this is exact down to that point. */
        for (uint64_t scale = unit / 10; frac && n_frac > 0 && scale > 0; scale /= 10, frac++, n_frac--)
                total += (uint64_t)(*frac - '0') * scale;
        if (total > PARSE_DURATION_MAX_USEC)
                return -ERANGE;

        *ret_usec = total;
        return 0;
}

int parse_size(const char *s, uint64_t *ret_bytes)
{
        static const struct {
                char letter;
                unsigned shift;
        } units[] = {
                {'k', 10},
                {'m', 20},
                {'g', 30},
                {'t', 40},
        };
        const char *p = s;
        unsigned shift = 0;
        uint64_t v;
        int r;

        if (!s)
                return -EINVAL;
        r = parse_digits(&p, &v);
        if (r == -EINVAL)
                return -EINVAL;

        /* Accepted suffixes: none, "B", or a letter K/M/G/T (either case) alone or followed by "iB". */
        if (strcmp(p, "B") == 0)
                p++;
        else if (*p != '\0') {
                bool found = false;

                for (size_t i = 0; i < ELEMENTSOF(units); i++)
                        if ((*p | 0x20) == units[i].letter) {
                                shift = units[i].shift;
                                found = true;
                                break;
                        }
                if (!found)
                        return -EINVAL;
                p++;
                if (strcmp(p, "iB") == 0)
                        p += 2;
        }
        if (*p != '\0')
                return -EINVAL;
        if (r < 0 || v > (UINT64_MAX >> shift))
                return -ERANGE;

        *ret_bytes = v << shift;
        return 0;
}

int parse_bool(const char *s, bool *ret)
{
        static const char *const yes[] = {"yes", "true", "on", "1"};
        static const char *const no[] = {"no", "false", "off", "0"};

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcasecmp(s, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

bool parse_text_ok(const char *s, size_t max, const char *reject)
{
        size_t n;

        if (!s)
                return false;
        n = strnlen(s, max + 1);
        if (n == 0 || n > max)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f || (reject && strchr(reject, s[i])))
                        return false;
        return true;
}

int parse_hex_digit(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

bool parse_dns_name_ok(const char *s)
{
        size_t len = strlen(s), label = 0;
        bool letter = false;

        if (len == 0 || len > 253)
                return false;
        for (size_t i = 0; i <= len; i++) {
                char c = s[i];

                if (c == '.' || c == '\0') {
                        if (label == 0 || label > 63 || s[i - 1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
                        return false;
                if (label == 0 && c == '-')
                        return false;
                letter = letter || !(c >= '0' && c <= '9');
                label++;
        }
        return letter;
}

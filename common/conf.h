/* The table-driven configuration engine behind lbd's and webd's config.c.
 *
 * A daemon describes its keys in a table of struct conf_key rows: section, key, default text, parser, and
 * the field the parser writes. The engine applies the defaults, reads an INI file (ini.h) or one
 * command-line value, finds the row, runs its parser and, when the parser refuses, logs the one message
 * users see: "WHERE: [section] key 'KEY': reason (value 'V')". WHERE is "FILE:LINE" for the file and the
 * origin ("--listen", "command line") for a single value. Unknown sections and keys are errors, so a typo
 * never silently leaves a default in place.
 *
 * The engine knows nothing about the daemon's struct: parsers get it as void * and find their field at
 * k->offset. The generic parsers here (numbers, sizes, durations) cover the common kinds; anything
 * particular to one daemon stays in that daemon's config.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macro.h"

#define CONF_KEYS_MAX    128 /* rows in one table; each source remembers which it has set */
#define CONF_SECTION_MAX 64
#define CONF_KEY_MAX     128
#define CONF_ITEM_MAX    128 /* longest entry of a list value */

struct conf_key;

/* Parses <value> for key <k> into the daemon's struct <obj>. <first> is true when the key was not set yet
 * by the same source (a file, or one conf_set() call), which list keys use to replace rather than append.
 * On failure writes a reason into <reason> (<size> bytes) and returns -EINVAL; <obj> is then unchanged. */
typedef int (*conf_parser_t)(const struct conf_key *k, void *obj, const char *value, bool first,
                             char *reason, size_t size);

struct conf_key {
        const char *section;
        const char *key;
        const char *default_value;
        conf_parser_t parse;
        size_t offset;     /* the field, for the generic parsers */
        uint64_t min, max; /* bounds, for numbers, sizes and durations (see each parser) */
        bool hidden;       /* never print the value: it may hold a secret */
};

struct conf_table {
        const struct conf_key *keys;
        size_t n_keys;                 /* at most CONF_KEYS_MAX */
        const char *outside_reason;    /* the reason given for a key before any [section] */
        bool hide_unknown;             /* hide the value of unknown keys too */
        size_t path_offset, path_size; /* the char array that records the file's path */
};

/* offsetof() that also checks the field's type, so a table row can't point a parser at the wrong kind. */
#define CONF_FIELD(st, field, type)                                                                         \
        (offsetof(st, field) +                                                                              \
         0 * sizeof(char[__builtin_types_compatible_p(__typeof__(((st *)0)->field), type) ? 1 : -1]))

/* Runs every key's parser on its default text. <obj> should be zeroed first. The defaults are part of the
 * program, so a default that does not parse is a bug (asserted). */
void conf_init(const struct conf_table *t, void *obj);

/* Reads <path> into <obj> (on top of what is there) and records <path> at t->path_offset. Every bad key is
 * logged and the load goes on to report every bad line, then returns -EINVAL; a syntax error (ini.h) is
 * logged and stops the load with -EINVAL. Returns -errno if the file can't be read (logged),
 * -ENAMETOOLONG if <path> does not fit in t->path_size bytes (logged). */
int conf_load_file(const struct conf_table *t, void *obj, const char *path);

/* Sets one key as if read from a file of its own; <origin> names it in messages (NULL: "command line").
 * Returns 0, or -EINVAL (logged, <obj> unchanged). */
int conf_set(const struct conf_table *t, void *obj, const char *section, const char *key, const char *value,
             const char *origin);

/* The parts of a --set SECTION.KEY=VALUE argument; <value> points into the argument. */
struct conf_assignment {
        char section[CONF_SECTION_MAX];
        char key[CONF_KEY_MAX];
        const char *value;
};

/* Splits "SECTION.KEY=VALUE" at the first '.' and the first '='. Returns 0, or -EINVAL (not logged: the
 * caller names the option) when either is missing, the '=' comes first, or a name does not fit. */
int conf_parse_assignment(const char *arg, struct conf_assignment *ret);

/* Logs a problem found after loading, by a check that needs several keys, as "PATH: [section] key 'KEY':
 * message" (<path> "" reads "configuration"). Returns -EINVAL. */
int conf_invalid(const char *path, const char *section, const char *key, const char *format, ...)
        _printf_(4, 5);

/* Writes a parser's reason into <reason> (<size> bytes); returns -EINVAL, for "return conf_reason(...)". */
int conf_reason(char *reason, size_t size, const char *format, ...) _printf_(3, 4);

/* True when <s> has no control characters. */
bool conf_is_printable(const char *s);

/* Calls <item> on each comma-separated entry of <value>, trimmed of blanks, for list keys. An empty entry
 * ("a,,b", "a,") or one of CONF_ITEM_MAX bytes or more is an error (the reason written). Returns 0, or the
 * first negative value of <item>. */
int conf_split(const char *value, int (*item)(const char *entry, void *userdata, char *reason, size_t size),
               void *userdata, char *reason, size_t size);

/* Log levels as config files and options spell them: debug, info, notice, warning, error. Returns 0 and
 * writes *<ret> (a LOG_* value), or -EINVAL. */
int conf_parse_log_level(const char *s, int *ret);
/* Returns the name of <level>, or NULL for one that has none. */
const char *conf_log_level_name(int level);

/* The generic parsers; each writes the uint64_t at k->offset.
 * conf_parse_number: an integer in [min, max].
 * conf_parse_size: a parse_size() value in [min, max] bytes; one beyond 64 bits is "size too large".
 * conf_parse_duration: a parse_duration() value of at least <min> microseconds (a <min> of 1 reads "must be
 * greater than 0"); a <max> of USEC_PER_SEC asks for whole seconds. */
int conf_parse_number(const struct conf_key *k, void *obj, const char *value, bool first, char *reason,
                      size_t size);
int conf_parse_size(const struct conf_key *k, void *obj, const char *value, bool first, char *reason,
                    size_t size);
int conf_parse_duration(const struct conf_key *k, void *obj, const char *value, bool first, char *reason,
                        size_t size);

/* A strict INI reader for our config files.
 *
 *   ; comment           # comment
 *   [section]           ; blanks inside the brackets are ignored; a comment may follow
 *   key = value         ; an inline comment starts at " ;" or " #" (whitespace before it)
 *
 * Keys and section names are [A-Za-z0-9_.-]+; values are trimmed and may be empty or contain '='. A key
 * before any section has section "". Lines end in LF or CRLF; a line holds at most INI_LINE_MAX - 1 bytes
 * besides its line ending, and a file at most INI_FILE_MAX bytes; a leading UTF-8 byte order mark is
 * skipped; a NUL or other control character (except TAB) in the file is an error. Errors are: a line that
 * is neither a comment, a section header nor "key = value"; an unterminated '['; text after ']'; an empty
 * key or section name; other characters in names. Syntax errors are logged as "FILE:LINE: reason" and the
 * parse stops. Repeated keys are all passed to the handler. */
#pragma once

#include <stddef.h>

#define INI_LINE_MAX 4096
#define INI_FILE_MAX (1024 * 1024)

/* Called once per key. <file> and <line> are for messages. Returns >= 0 to go on, < 0 to stop the parse
 * with that value (the handler logs its own message naming file, line and key). */
typedef int (*ini_handler_t)(const char *file, unsigned line, const char *section, const char *key,
                             const char *value, void *userdata);

/* Parses the file at <path>. Returns 0 on success, the handler's negative value, -EINVAL on a syntax
 * error, -EFBIG when over INI_FILE_MAX, or -errno when it can't be read (logged). */
int ini_parse_file(const char *path, ini_handler_t handler, void *userdata);

/* Parses <len> bytes of <text>; <name> is what messages call it. Same returns as ini_parse_file(). */
int ini_parse_string(const char *text, size_t len, const char *name, ini_handler_t handler, void *userdata);

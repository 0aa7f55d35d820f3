/* The INI reader behind lbd's config file (format in ini.h).
 *
 * The whole file is read into memory (at most INI_FILE_MAX bytes), then walked line by line; each line is
 * copied into a bounded buffer, split in place, and handed to the caller's handler as NUL-terminated
 * strings that live only for the call. The reader knows nothing about keys: what they mean, and whether a
 * repeated key appends or replaces, is the handler's business. Syntax errors are the user's to fix, so
 * they are logged here, once, with the file name and line number. */
#include "common/ini.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"

static bool ini_is_space(char c)
{
        return c == ' ' || c == '\t';
}

static bool ini_is_name_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '.' || c == '-';
}

/* Returns <s> without leading and trailing blanks; modifies <s> in place. */
static char *ini_strip(char *s)
{
        size_t n;

        while (ini_is_space(*s))
                s++;
        n = strlen(s);
        while (n > 0 && ini_is_space(s[n - 1]))
                s[--n] = '\0';
        return s;
}

static bool ini_name_valid(const char *s)
{
        if (*s == '\0')
                return false;
        for (; *s; s++)
                if (!ini_is_name_char(*s))
                        return false;
        return true;
}

/* Cuts an inline comment: a ';' or '#' preceded by a blank ends the value. */
static void ini_cut_comment(char *s)
{
        for (size_t i = 0; s[i] != '\0'; i++)
                if ((s[i] == ';' || s[i] == '#') && i > 0 && ini_is_space(s[i - 1])) {
                        s[i] = '\0';
                        return;
                }
}

static int ini_syntax_error(const char *name, unsigned lineno, const char *reason)
{
        log_error("%s:%u: %s", name, lineno, reason);
        return -EINVAL;
}

/* Parses one line (already checked for length and control characters) held in <buf>, which it modifies.
 * <section> (INI_LINE_MAX bytes) is the current section name and is updated by a header. */
static int ini_parse_line(char *buf, char *section, const char *name, unsigned lineno, ini_handler_t handler,
                          void *userdata)
{
        char *s = ini_strip(buf), *eq, *key, *value;

        if (*s == '\0' || *s == ';' || *s == '#')
                return 0;

        if (*s == '[') {
                char *end = strchr(s, ']'), *rest, *sect;

                if (!end)
                        return ini_syntax_error(name, lineno, "unterminated section header, missing ']'");
                *end = '\0';
                rest = ini_strip(end + 1);
                if (*rest != '\0' && *rest != ';' && *rest != '#')
                        return ini_syntax_error(name, lineno, "unexpected text after section header");
                sect = ini_strip(s + 1);
                if (*sect == '\0')
                        return ini_syntax_error(name, lineno, "empty section name");
                if (!ini_name_valid(sect))
                        return ini_syntax_error(name, lineno,
                                                "invalid section name, use letters, digits, '_', '.', '-'");
                /* Fits: the name is part of a line shorter than INI_LINE_MAX. */
                memmove(section, sect, strlen(sect) + 1);
                return 0;
        }

        eq = strchr(s, '=');
        if (!eq)
                return ini_syntax_error(name, lineno, "expected 'key = value' or '[section]'");
        *eq = '\0';
        key = ini_strip(s);
        if (*key == '\0')
                return ini_syntax_error(name, lineno, "empty key before '='");
        if (!ini_name_valid(key))
                return ini_syntax_error(name, lineno,
                                        "invalid key name, use letters, digits, '_', '.', '-'");

        value = eq + 1;
        ini_cut_comment(value);
        value = ini_strip(value);

        return handler(name, lineno, section, key, value, userdata);
}

int ini_parse_string(const char *text, size_t len, const char *name, ini_handler_t handler, void *userdata)
{
        char section[INI_LINE_MAX] = "", buf[INI_LINE_MAX];
        unsigned lineno = 0;
        size_t pos = 0;

        if (!name)
                name = "(string)";
        if (len > INI_FILE_MAX) {
                log_error("%s: larger than %d bytes", name, INI_FILE_MAX);
                return -EFBIG;
        }
        if (len > 0 && !text)
                return -EINVAL;

        /* Editors on some systems start UTF-8 files with a byte order mark. */
        if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
                pos = 3;

        while (pos < len) {
                const char *start = text + pos, *nl = memchr(start, '\n', len - pos);
                size_t line_len = nl ? (size_t)(nl - start) : len - pos;
                int r;

                lineno++;
                pos += line_len + (nl ? 1 : 0);

                if (line_len > 0 && start[line_len - 1] == '\r')
                        line_len--; /* CRLF */
                if (line_len >= INI_LINE_MAX) {
                        log_error("%s:%u: line longer than %d bytes", name, lineno, INI_LINE_MAX - 1);
                        return -EINVAL;
                }
                for (size_t i = 0; i < line_len; i++) {
                        unsigned char c = (unsigned char)start[i];

                        if (c == '\0')
                                return ini_syntax_error(name, lineno, "NUL byte in line");
                        if ((c < 0x20 && c != '\t') || c == 0x7f) {
                                log_error("%s:%u: control character 0x%02x in line", name, lineno, c);
                                return -EINVAL;
                        }
                }

                memcpy(buf, start, line_len);
                buf[line_len] = '\0';
                r = ini_parse_line(buf, section, name, lineno, handler, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

int ini_parse_file(const char *path, ini_handler_t handler, void *userdata)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *data = NULL;
        size_t size = 0, allocated = 0;
        struct stat st;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return log_error_errno(errno, "Failed to open %s: %m", path);
        if (fstat(fd, &st) < 0)
                return log_error_errno(errno, "Failed to stat %s: %m", path);
        if (S_ISDIR(st.st_mode))
                return log_error_errno(EISDIR, "Failed to read %s: %m", path);

        /* Read until EOF, never holding more than one byte past the limit, so a file that grows while it
         * is read, or a pipe, is still bounded. */
        for (;;) {
                ssize_t n;

                if (size == allocated) {
                        size_t want = allocated == 0 ? 4096 : MIN(allocated * 2, (size_t)INI_FILE_MAX + 1);
                        char *p;

                        if (want <= allocated) {
                                log_error("%s: larger than %d bytes", path, INI_FILE_MAX);
                                return -EFBIG;
                        }
                        p = realloc(data, want);
                        if (!p)
                                return log_error_errno(ENOMEM, "Failed to read %s: %m", path);
                        data = p;
                        allocated = want;
                }
                n = read(fd, data + size, allocated - size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(errno, "Failed to read %s: %m", path);
                }
                if (n == 0)
                        break;
                size += (size_t)n;
        }

        return ini_parse_string(data, size, path, handler, userdata);
}

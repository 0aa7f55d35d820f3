/* Logging: formats one line and writes it to stderr with a single write(2), so lines from one process are
 * never interleaved. Lines are capped at LOG_LINE_MAX bytes and control characters in the message are
 * replaced, so nothing a peer sends can forge a second line. */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static int log_max_level = LOG_INFO;
static const char *log_ident = "lbd";
static int log_tty = -1;

void log_set_max_level(int level)
{
        log_max_level = level;
}

int log_get_max_level(void)
{
        return log_max_level;
}

void log_set_ident(const char *ident)
{
        log_ident = ident;
}

static const char *log_level_name(int level)
{
        static const char *const names[] = {
                "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
        };
        return level >= 0 && level < (int)ELEMENTSOF(names) ? names[level] : "info";
}

int log_internal(int level, int error, const char *format, ...)
{
        char line[LOG_LINE_MAX];
        int saved = errno, n, prefix;
        va_list ap;

        if (error < 0)
                error = -error;
        if (log_tty < 0)
                log_tty = isatty(STDERR_FILENO);

        if (log_tty)
                prefix = snprintf(line, sizeof(line), "%s: %s: ", log_ident, log_level_name(level));
        else
                prefix = snprintf(line, sizeof(line), "<%d>", level);
        if (prefix < 0)
                prefix = 0;

        errno = error;
        va_start(ap, format);
        n = vsnprintf(line + prefix, sizeof(line) - (size_t)prefix - 1, format, ap);
        va_end(ap);
        if (n < 0)
                n = 0;
        n += prefix;
        if ((size_t)n > sizeof(line) - 2)
                n = (int)sizeof(line) - 2;
        for (int i = prefix; i < n; i++)
                if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
                        line[i] = ' ';
        line[n++] = '\n';

        (void)!write(STDERR_FILENO, line, (size_t)n);
        errno = saved;
        return -error;
}

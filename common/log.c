/* Logging: formats one line and writes it to stderr with a single write(2), so lines from one process are
 * never interleaved. Lines are capped at LOG_LINE_MAX bytes and control characters in the message are
 * replaced, so nothing a peer sends can forge a second line.
 *
 * Batching (log_batch_start): on a daemon's loop thread, info and debug lines (one per request in webd) are
 * gathered in a buffer of LOG_BATCH_MAX bytes and written together once the loop is done with the current
 * callbacks, one write(2) for many lines instead of one each. A notice or anything more urgent writes what
 * is gathered first and then itself at once, so the order of lines is kept and a warning is never held back;
 * the buffer is also written when full and at exit. The flag is per thread: other threads (webd's password
 * workers) write their lines directly. */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LOG_LINE_MAX  2048
#define LOG_BATCH_MAX (64 * 1024)

static int log_max_level = LOG_INFO;
static const char *log_ident = "lbd";
static int log_tty = -1;

static _Thread_local bool log_batching;
static char log_batch[LOG_BATCH_MAX];
static size_t log_batch_len;
static void (*log_batch_kick)(void *userdata);
static void *log_batch_userdata;

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

        if (log_batching && level >= LOG_INFO) {
                bool was_empty;

                if (log_batch_len + (size_t)n > sizeof(log_batch))
                        log_flush();
                was_empty = log_batch_len == 0;
                memcpy(log_batch + log_batch_len, line, (size_t)n);
                log_batch_len += (size_t)n;
                if (was_empty && log_batch_kick)
                        log_batch_kick(log_batch_userdata);
        } else {
                if (log_batching)
                        log_flush();
                (void)!write(STDERR_FILENO, line, (size_t)n);
        }
        errno = saved;
        return -error;
}

void log_flush(void)
{
        size_t done = 0;
        int saved = errno;

        if (!log_batching)
                return;
        while (done < log_batch_len) {
                ssize_t k = write(STDERR_FILENO, log_batch + done, log_batch_len - done);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break; /* nowhere to write: the lines are dropped, as a single write would drop one */
                done += (size_t)k;
        }
        log_batch_len = 0;
        errno = saved;
}

static void log_flush_at_exit(void)
{
        log_flush();
}

void log_batch_start(void (*kick)(void *userdata), void *userdata)
{
        static bool registered;

        log_batch_kick = kick;
        log_batch_userdata = userdata;
        log_batching = true;
        if (!registered)
                registered = atexit(log_flush_at_exit) == 0;
}

void log_batch_stop(void)
{
        log_flush();
        log_batching = false;
        log_batch_kick = NULL;
        log_batch_userdata = NULL;
}

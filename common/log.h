/* Logging to stderr in a form journald keeps: one line per event, prefixed with the syslog priority as
 * "<N>" (journald turns it into the entry's priority), or, on a terminal, with the level's name.
 *
 * Helpers log at debug level at most; the caller that decides what a failure means logs it once:
 *         r = backend_connect(b);
 *         if (r < 0)
 *                 return log_error_errno(r, "Failed to connect to %s: %m", b->name);
 * The *_errno forms set errno from <error> so "%m" prints its text, and return -abs(error). */
#pragma once

#include <syslog.h>

#include "common/macro.h"

/* Sets the highest priority that is printed (LOG_DEBUG prints everything). Default LOG_INFO. */
void log_set_max_level(int level);
int log_get_max_level(void);
/* Sets the program name printed on a terminal. Not copied: pass a string that lives forever. */
void log_set_ident(const char *ident);

int log_internal(int level, int error, const char *format, ...) _printf_(3, 4);

/* From now on, info and debug lines logged by the calling thread are gathered and written together by
 * log_flush() (see log.c). <kick> is called, with <userdata>, when a first line is gathered: it arranges for
 * log_flush() to run soon (on an event loop: once the current callbacks are done). A more urgent line, a
 * full buffer and exit() flush as well. */
void log_batch_start(void (*kick)(void *userdata), void *userdata);
/* Writes what was gathered; does nothing on a thread that does not batch. */
void log_flush(void);
/* Writes what was gathered and goes back to one write per line. */
void log_batch_stop(void);

#define log_full_errno(level, error, ...)                                                                     \
        __extension__({                                                                                       \
                int _level_ = (level), _e_ = (error);                                                         \
                _level_ <= log_get_max_level() ? log_internal(_level_, _e_, __VA_ARGS__)                      \
                                               : -(_e_ < 0 ? -_e_ : _e_);                                     \
        })

#define log_debug(...)   log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...)    log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...)  log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...)   log_full_errno(LOG_ERR, 0, __VA_ARGS__)

#define log_debug_errno(error, ...)   log_full_errno(LOG_DEBUG, error, __VA_ARGS__)
#define log_info_errno(error, ...)    log_full_errno(LOG_INFO, error, __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, error, __VA_ARGS__)
#define log_error_errno(error, ...)   log_full_errno(LOG_ERR, error, __VA_ARGS__)

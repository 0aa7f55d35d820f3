/* The systemd notification protocol (sd_notify): READY, STATUS, RELOADING, STOPPING, and WATCHDOG=1 sent
 * from a timer on the event loop itself, so a wedged loop stops the pings and systemd restarts us. All
 * calls are no-ops when NOTIFY_SOCKET is unset. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct notify;

/* Reads NOTIFY_SOCKET / WATCHDOG_USEC and starts the watchdog timer (every WATCHDOG_USEC / 2). Returns 0
 * (with *ret NULL-safe to use even when nothing is set) or -ENOMEM. */
int notify_new(struct event_base *base, struct notify **ret);
/* Each watchdog tick asks alive(<userdata>, WATCHDOG_USEC / 2) first and pings only when it says true (the
 * other event loops of the process answered within that time). */
void notify_set_alive(struct notify *n, bool (*alive)(void *userdata, uint64_t usec), void *userdata);
void notify_ready(struct notify *n, const char *status);
void notify_status(struct notify *n, const char *status);
void notify_reloading(struct notify *n);
void notify_stopping(struct notify *n, const char *status);
struct notify *notify_free(struct notify *n);

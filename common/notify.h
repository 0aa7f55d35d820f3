/* The systemd notification protocol (sd_notify): READY, STATUS, RELOADING, STOPPING, and WATCHDOG=1 sent
 * from a timer on the event loop itself, so a wedged loop stops the pings and systemd restarts us. All
 * calls are no-ops when NOTIFY_SOCKET is unset. */
#pragma once

struct event_base;
struct notify;

/* Reads NOTIFY_SOCKET / WATCHDOG_USEC and starts the watchdog timer (every WATCHDOG_USEC / 2). Returns 0
 * (with *ret NULL-safe to use even when nothing is set) or -ENOMEM. */
int notify_new(struct event_base *base, struct notify **ret);
void notify_ready(struct notify *n, const char *status);
void notify_status(struct notify *n, const char *status);
void notify_reloading(struct notify *n);
void notify_stopping(struct notify *n, const char *status);
struct notify *notify_free(struct notify *n);

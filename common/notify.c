/* systemd notification: thin wrappers around sd_notify(), and the watchdog timer on the event loop. The
 * timer fires every WATCHDOG_USEC / 2; since it runs on the loop, a loop that stops turning stops the
 * pings, which is the point. */
#include "common/notify.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "common/log.h"
#include "common/macro.h"

struct notify {
        struct event *watchdog;
        uint64_t watchdog_usec;
        bool (*alive)(void *userdata, uint64_t usec);
        void *alive_userdata;
        bool enabled;
        bool stalled; /* the last tick skipped the ping */
};

static void notify_watchdog_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct notify *n = userdata;

        /* Other loops (lbd's worker threads) must have turned within the interval too. */
        if (n->alive && !n->alive(n->alive_userdata, n->watchdog_usec / 2)) {
                if (!n->stalled)
                        log_warning("An event loop did not answer its heartbeat: watchdog not pinged");
                n->stalled = true;
                return;
        }
        n->stalled = false;
        (void)sd_notify(0, "WATCHDOG=1");
}

void notify_set_alive(struct notify *n, bool (*alive)(void *userdata, uint64_t usec), void *userdata)
{
        if (!n)
                return;
        n->alive = alive;
        n->alive_userdata = userdata;
}

int notify_new(struct event_base *base, struct notify **ret)
{
        struct notify *n;
        uint64_t usec = 0;
        int r;

        n = calloc(1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        n->enabled = getenv("NOTIFY_SOCKET") != NULL;

        r = sd_watchdog_enabled(0, &usec);
        if (r > 0 && usec > 0) {
                struct timeval tv = timeval_from_usec(usec / 2);

                n->watchdog_usec = usec;
                n->watchdog = event_new(base, -1, EV_PERSIST, notify_watchdog_cb, n);
                if (!n->watchdog || event_add(n->watchdog, &tv) < 0) {
                        notify_free(n);
                        return -ENOMEM;
                }
                log_info("watchdog enabled: pinging every %llu ms", (unsigned long long)(usec / 2 / 1000));
        }
        *ret = n;
        return 0;
}

void notify_ready(struct notify *n, const char *status)
{
        if (!n || !n->enabled)
                return;
        (void)sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void notify_status(struct notify *n, const char *status)
{
        if (!n || !n->enabled)
                return;
        (void)sd_notifyf(0, "STATUS=%s", status);
}

void notify_reloading(struct notify *n)
{
        if (!n || !n->enabled)
                return;
        (void)sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading configuration",
                         (unsigned long long)now_usec());
}

void notify_stopping(struct notify *n, const char *status)
{
        if (!n || !n->enabled)
                return;
        (void)sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status);
}

struct notify *notify_free(struct notify *n)
{
        if (!n)
                return NULL;
        if (n->watchdog)
                event_free(n->watchdog);
        free(n);
        return NULL;
}

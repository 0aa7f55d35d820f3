/* What a listener does when accept() fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM): a
 * level-triggered listener would otherwise be woken again at once, forever, and log each time. Instead the
 * owner stops watching its listening socket for a backoff (ACCEPTPAUSE_FIRST_USEC doubling to
 * ACCEPTPAUSE_MAX_USEC) and tries again; the kernel keeps new connections in the backlog meanwhile.
 *
 * One episode (from the first failure to the next accept() that succeeds) logs two lines: a warning when
 * it starts, and a notice when it ends with the count of accept() calls that failed. The owner embeds a
 * struct acceptpause, zero-initialised, and runs on one event loop. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define ACCEPTPAUSE_FIRST_USEC (100 * 1000ULL)
#define ACCEPTPAUSE_MAX_USEC   (1000 * 1000ULL)

struct event;
struct event_base;

struct acceptpause {
        struct event *timer;
        const char *what;              /* names the listener in log lines: "proxy", "admin API" */
        void (*set_listening)(void *userdata, bool on);
        void *userdata;
        uint64_t delay_usec;           /* the current backoff; 0 outside an episode */
        uint64_t refused;              /* accept() calls that failed in this episode */
        uint64_t since_usec;           /* when the episode started */
        bool paused;                   /* the owner is not watching its socket now */
        unsigned *shared;              /* listeners of one socket that started an episode (acceptpause_share()) */
};

/* <ap> is one of several listeners on one socket (lbd's event loops), all given the same <counter> (0 at
 * first): an episode is logged once for all of them, when the first one runs short and when one of them
 * accepts again, not once per listener. */
void acceptpause_share(struct acceptpause *ap, unsigned *counter);

/* Prepares <ap> on <base>: <set_listening>(<userdata>, on) is called to stop and restart watching the
 * listening socket. <what> must outlive <ap>. Returns 0 or -ENOMEM. */
int acceptpause_init(struct acceptpause *ap, struct event_base *base, const char *what,
                     void (*set_listening)(void *userdata, bool on), void *userdata);
/* accept() failed with <error> (a positive errno). Returns true when that is a shortage of resources and
 * watching has been stopped for the backoff (logging once per episode); false for errors to ignore
 * (EAGAIN, EINTR, ECONNABORTED, ...), which leave everything as it was. */
bool acceptpause_failed(struct acceptpause *ap, int error);
/* accept() succeeded: ends an episode, if one is running, with its notice. Cheap otherwise. */
void acceptpause_accepted(struct acceptpause *ap);
/* Frees the timer; <ap> is zeroed. Accepts one that was never initialised. */
void acceptpause_done(struct acceptpause *ap);

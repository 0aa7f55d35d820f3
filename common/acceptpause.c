/* Backing off a listener that runs out of descriptors or memory (see acceptpause.h). The timer restarts
 * watching; whether the next accept() then fails or succeeds decides whether the backoff doubles or the
 * episode ends. Nothing here blocks: the only waits are the timer's. */
#include "common/acceptpause.h"

#include <errno.h>
#include <event2/event.h>
#include <string.h>

#include "common/log.h"
#include "common/macro.h"

static void acceptpause_timer_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct acceptpause *ap = userdata;

        ap->paused = false;
        ap->set_listening(ap->userdata, true);
}

int acceptpause_init(struct acceptpause *ap, struct event_base *base, const char *what,
                     void (*set_listening)(void *userdata, bool on), void *userdata)
{
        *ap = (struct acceptpause){
                .what = what,
                .set_listening = set_listening,
                .userdata = userdata,
        };
        ap->timer = evtimer_new(base, acceptpause_timer_cb, ap);
        return ap->timer ? 0 : -ENOMEM;
}

static bool acceptpause_shortage(int error)
{
        return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

bool acceptpause_failed(struct acceptpause *ap, int error)
{
        struct timeval tv;

        if (!acceptpause_shortage(error) || !ap->timer)
                return false;
        ap->refused++;
        if (ap->delay_usec == 0) {
                ap->delay_usec = ACCEPTPAUSE_FIRST_USEC;
                ap->since_usec = now_usec();
                if (!ap->shared || __atomic_fetch_add(ap->shared, 1, __ATOMIC_RELAXED) == 0)
                        log_warning_errno(error, "%s: out of %s: stopped accepting, trying again in %llu ms: %m",
                                  ap->what, error == ENOBUFS || error == ENOMEM ? "memory" : "file descriptors",
                                  (unsigned long long)(ap->delay_usec / 1000));
        } else
                ap->delay_usec = MIN(ap->delay_usec * 2, ACCEPTPAUSE_MAX_USEC);
        ap->paused = true;
        ap->set_listening(ap->userdata, false);
        tv = timeval_from_usec(ap->delay_usec);
        (void)evtimer_add(ap->timer, &tv);
        return true;
}

void acceptpause_accepted(struct acceptpause *ap)
{
        if (ap->delay_usec == 0)
                return;
        /* Any listener that accepts again ends the episode of all of them: the shortage is over. */
        if (!ap->shared || __atomic_exchange_n(ap->shared, 0, __ATOMIC_RELAXED) != 0)
                log_notice("%s: accepting again after %llu ms; %llu accept() calls failed meanwhile", ap->what,
                           (unsigned long long)((now_usec() - ap->since_usec) / 1000),
                           (unsigned long long)ap->refused);
        ap->delay_usec = 0;
        ap->refused = 0;
}

void acceptpause_share(struct acceptpause *ap, unsigned *counter)
{
        ap->shared = counter;
}

void acceptpause_done(struct acceptpause *ap)
{
        if (ap->timer)
                event_free(ap->timer);
        *ap = (struct acceptpause){0};
}

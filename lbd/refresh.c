/* The instance refresh's arithmetic: how many to launch and how many old instances may go in one poll.
 * Pure functions of their arguments, so that the reconciler's tests and this module's can pin every case
 * down; the state, the choice of instances and the logging are the reconciler's (reconcile.c). */
#include "lbd/refresh.h"

#include "common/macro.h"

size_t refresh_min_serving(size_t desired, uint64_t min_healthy)
{
        uint64_t pct = MIN(min_healthy, (uint64_t)100);

        return (size_t)(((uint64_t)desired * pct + 99) / 100);
}

void refresh_plan(const struct refresh_settings *s, const struct refresh_counts *c, struct refresh_step *ret)
{
        size_t min_serving = refresh_min_serving(c->desired, s->min_healthy);
        size_t serving = c->old_serving + c->new_warm;
        size_t surge = MAX((size_t)1, c->desired - MIN(min_serving, c->desired));
        size_t max_total = c->desired + surge, total, wanted;
        struct refresh_step step = {0};

        if (c->old_total > 0 && serving > min_serving)
                step.terminate_old = MIN(c->old_serving, serving - min_serving);
        /* Only as many old ones go as new ones will take their place: never below desired on our own. */
        total = c->old_total + c->new_total - step.terminate_old;
        wanted = c->desired > c->new_total ? c->desired - c->new_total : 0;
        if (c->old_total > 0 || total < c->desired)
                step.launch = MIN(wanted, max_total > total ? max_total - total : 0);
        *ret = step;
}

const char *refresh_state_name(enum refresh_state s)
{
        static const char *const names[] = {
                [REFRESH_NONE] = "none",
                [REFRESH_RUNNING] = "running",
                [REFRESH_DONE] = "done",
                [REFRESH_CANCELLED] = "cancelled",
                [REFRESH_ROLLED_BACK] = "rolled-back",
                [REFRESH_FAILED] = "failed",
        };

        return (size_t)s < ELEMENTSOF(names) && names[s] ? names[s] : "unknown";
}

const char *refresh_on_failure_name(enum refresh_on_failure f)
{
        return f == REFRESH_STOP ? "stop" : "rollback";
}

/* Creating and releasing providers, and the names of instance states.
 *
 * The ops table (provider.h) has no constructor of its own: provider_new() fills a struct provider
 * (ops, base, config; data NULL) and calls ops->set_config() once. An implementation sets itself up on
 * that first call, when p->data is still NULL, and takes new settings on later calls (reloads); when the
 * first call fails, provider_new() calls ops->free() (which must accept p->data == NULL) and gives up.
 * ops->free() releases p->data and anything pending, without calling back; provider_free() then frees
 * the struct itself.
 *
 * Calls (list, launch, terminate) return 0 when their callback will come, from the event loop and never
 * from inside the call, or a negative errno when it won't (the request could not even be started). */
#include "lbd/provider.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "lbd/config.h"

static void provider_deferred_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct provider_deferred *d = userdata;
        struct provider_deferred **list = d->list;

        DLIST_REMOVE(deferred, *list, d);
        d->answer(d);
}

int provider_defer(struct provider *p, struct provider_deferred **list, struct provider_deferred *d,
                   void (*answer)(struct provider_deferred *d))
{
        const struct timeval now = {0, 0};

        d->answer = answer;
        d->list = list;
        (void)evtimer_assign(&d->timer, p->base, provider_deferred_cb, d);
        if (evtimer_add(&d->timer, &now) < 0)
                return -ENOMEM;
        DLIST_PREPEND(deferred, *list, d);
        return 0;
}

void provider_defer_cancel_all(struct provider_deferred **list, void (*free_call)(struct provider_deferred *d))
{
        while (*list) {
                struct provider_deferred *d = *list;

                (void)evtimer_del(&d->timer);
                DLIST_REMOVE(deferred, *list, d);
                free_call(d);
        }
}

static const struct provider_ops *provider_ops_for(enum provider_kind kind)
{
        switch (kind) {
        case PROVIDER_STATIC:
                return &provider_static_ops;
        case PROVIDER_LOCAL:
                return &provider_local_ops;
        case PROVIDER_EC2:
                return &provider_ec2_ops;
        }
        return NULL;
}

int provider_write_file(const char *path, int (*write)(FILE *f, void *userdata), void *userdata)
{
        char tmp[PATH_MAX];
        FILE *f;
        int fd, r;

        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
                return -ENAMETOOLONG;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        f = fdopen(fd, "w");
        if (!f) {
                r = -errno;
                (void)close(fd);
                (void)unlink(tmp);
                return r;
        }
        r = write(f, userdata);
        if (r == 0 && (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) < 0))
                r = -(errno ? errno : EIO);
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void)unlink(tmp);
        return r;
}

int provider_new(struct event_base *base, const struct config *c, struct provider **ret)
{
        const struct provider_ops *ops = provider_ops_for(c->provider);
        struct provider *p;
        int r;

        if (!ops)
                return log_error_errno(EINVAL, "Unknown provider %d", (int)c->provider);

        p = calloc(1, sizeof(*p));
        if (!p)
                return log_error_errno(ENOMEM, "Out of memory");
        p->ops = ops;
        p->base = base;
        p->config = c;

        r = ops->set_config(p, c);
        if (r < 0) {
                ops->free(p);
                free(p);
                return log_error_errno(r, "Failed to set up the %s provider: %m", ops->name);
        }
        *ret = p;
        return 0;
}

struct provider *provider_free(struct provider *p)
{
        if (!p)
                return NULL;
        p->ops->free(p);
        free(p);
        return NULL;
}

const char *provider_instance_state_name(enum instance_state s)
{
        switch (s) {
        case INSTANCE_PENDING:
                return "pending";
        case INSTANCE_RUNNING:
                return "running";
        case INSTANCE_STOPPING:
                return "stopping";
        case INSTANCE_STOPPED:
                return "stopped";
        case INSTANCE_SHUTTING_DOWN:
                return "shutting-down";
        case INSTANCE_TERMINATED:
                return "terminated";
        case INSTANCE_UNKNOWN:
                return "unknown";
        }
        return "unknown";
}

void provider_get_status(struct provider *p, struct provider_status *ret)
{
        *ret = (struct provider_status){0};
        if (p->ops->status)
                p->ops->status(p, ret);
        ret->error[sizeof(ret->error) - 1] = '\0';
        for (char *c = ret->error; *c; c++)
                if (*c < 0x20 || *c > 0x7e)
                        *c = '?';
}

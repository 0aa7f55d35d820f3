/* The static provider: the pool is the [pool] backends list, as configured. Every address is one
 * "instance" that is always running, named by its address; nothing is ever launched or terminated
 * (managed = false), so the reconciler only mirrors the list into the pool.
 *
 * A list call answers from the event loop on its next turn (provider_defer(), which keeps the calls on a
 * list so that free() can cancel what has not fired). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "lbd/config.h"
#include "lbd/provider.h"

struct provider_static_call {
        struct provider_deferred deferred; /* first: the call is its deferred */
        struct provider *provider;
        provider_list_cb cb;
        void *userdata;
};

struct provider_static_data {
        struct provider_deferred *calls;
};

static void provider_static_call_free(struct provider_deferred *d)
{
        free(container_of(d, struct provider_static_call, deferred));
}

static void provider_static_answer(struct provider_deferred *d)
{
        struct provider_static_call *call = container_of(d, struct provider_static_call, deferred);
        struct provider *p = call->provider;
        const struct config *c = p->config;
        size_t n = MIN(c->n_backends, (size_t)CONFIG_MAX_BACKENDS);
        struct instance *instances;
        provider_list_cb cb = call->cb;
        void *cb_userdata = call->userdata;

        free(call);

        instances = calloc(n ? n : 1, sizeof(*instances));
        if (!instances) {
                cb(p, -ENOMEM, NULL, 0, cb_userdata);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                instances[i].state = INSTANCE_RUNNING;
                instances[i].addr = c->backends[i];
                instances[i].has_addr = true;
                if (netaddr_format(&c->backends[i], instances[i].id, sizeof(instances[i].id)) < 0)
                        memcpy(instances[i].id, "?", 2);
        }
        cb(p, 0, instances, n, cb_userdata);
        free(instances);
}

static int provider_static_list(struct provider *p, provider_list_cb cb, void *userdata)
{
        struct provider_static_data *d = p->data;
        struct provider_static_call *call;

        call = calloc(1, sizeof(*call));
        if (!call)
                return -ENOMEM;
        call->provider = p;
        call->cb = cb;
        call->userdata = userdata;
        if (provider_defer(p, &d->calls, &call->deferred, provider_static_answer) < 0) {
                free(call);
                return -ENOMEM;
        }
        return 0;
}

static int provider_static_launch(struct provider *p, unsigned count, const char *zone, const char *client_token,
                                  provider_launch_cb cb, void *userdata)
{
        return -EOPNOTSUPP;
}

static int provider_static_terminate(struct provider *p, const char *const *ids, size_t n,
                                     provider_terminate_cb cb, void *userdata)
{
        return -EOPNOTSUPP;
}

static int provider_static_set_config(struct provider *p, const struct config *c)
{
        if (!p->data) {
                p->data = calloc(1, sizeof(struct provider_static_data));
                if (!p->data)
                        return -ENOMEM;
        }
        p->config = c;
        return 0;
}

static void provider_static_free(struct provider *p)
{
        struct provider_static_data *d = p->data;

        if (!d)
                return;
        provider_defer_cancel_all(&d->calls, provider_static_call_free);
        free(d);
        p->data = NULL;
}

const struct provider_ops provider_static_ops = {
        .name = "static",
        .managed = false,
        .list = provider_static_list,
        .launch = provider_static_launch,
        .terminate = provider_static_terminate,
        .set_config = provider_static_set_config,
        .free = provider_static_free,
};

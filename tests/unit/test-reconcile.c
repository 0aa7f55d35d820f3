/* Unit tests for lbd/reconcile.c with a fake provider (an in-memory "cloud" whose calls the test answers
 * one by one), a fake clock, and the real pool (backend.c). Health verdicts are set on the backends by the
 * test itself, as health.c would. Covered: adopting what exists, launching up to desired, ClientToken reuse
 * on a retried launch, replacing stopped, vanished and failed instances (failed only past the grace period;
 * never-up adopted ones only after fall x interval), the early poll when a backend fails, scaling up and
 * down (failed and unhealthy first, then newest; draining first), instances not listed yet, nothing
 * terminated while the list fails or is stale, the storm guard, the all-failing case, the static
 * (unmanaged) provider, a new instance at an old address, and the instance refresh (launch before
 * terminate, not counted by the storm guard, resumed without extra launches after a restart). */
#include <errno.h>
#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "common/netaddr.h"
#include "lbd/backend.h"
#include "lbd/balance.h"
#include "lbd/config.h"
#include "lbd/history.h"
#include "lbd/provider.h"
#include "lbd/reconcile.h"

#define SEC       USEC_PER_SEC
#define MAX_CLOUD 64

struct fake {
        struct provider provider;
        struct event_base *base;
        struct pool *pool;
        struct config config;
        struct reconcile *r;
        struct history *history; /* the timeline the reconciler tells */
        uint64_t mono, wall; /* the fake clock */

        struct instance cloud[MAX_CLOUD];
        size_t n_cloud;
        unsigned next_id;

        /* the call waiting for an answer (at most one: the reconciler has one in flight) */
        provider_list_cb list_cb;
        provider_launch_cb launch_cb;
        provider_terminate_cb terminate_cb;
        void *userdata;
        unsigned launch_count;
        char launch_zone[INSTANCE_ID_MAX]; /* "" when none asked for */
        char token[128];
        char terminate_ids[MAX_CLOUD][INSTANCE_ID_MAX];
        size_t n_terminate;

        unsigned lists, launches, terminates; /* calls made */
        unsigned changes;                     /* on_change callbacks */
};

static int fake_list(struct provider *p, provider_list_cb cb, void *userdata)
{
        struct fake *f = p->data;

        assert_null(f->list_cb);
        assert_null(f->launch_cb);
        assert_null(f->terminate_cb);
        f->list_cb = cb;
        f->userdata = userdata;
        f->lists++;
        return 0;
}

static int fake_launch(struct provider *p, unsigned count, const char *zone, const char *client_token, provider_launch_cb cb,
                       void *userdata)
{
        struct fake *f = p->data;

        assert_null(f->list_cb);
        assert_null(f->launch_cb);
        assert_non_null(client_token);
        assert_true(strlen(client_token) <= 64); /* EC2's limit */
        f->launch_cb = cb;
        f->userdata = userdata;
        f->launch_count = count;
        (void)snprintf(f->launch_zone, sizeof(f->launch_zone), "%s", zone ? zone : "");
        (void)snprintf(f->token, sizeof(f->token), "%s", client_token);
        f->launches++;
        return 0;
}

static int fake_terminate(struct provider *p, const char *const *ids, size_t n, provider_terminate_cb cb,
                          void *userdata)
{
        struct fake *f = p->data;

        assert_null(f->terminate_cb);
        assert_true(n > 0 && n <= MAX_CLOUD);
        f->terminate_cb = cb;
        f->userdata = userdata;
        for (size_t i = 0; i < n; i++)
                (void)snprintf(f->terminate_ids[i], INSTANCE_ID_MAX, "%s", ids[i]);
        f->n_terminate = n;
        f->terminates++;
        return 0;
}

static int fake_set_config(struct provider *p, const struct config *c)
{
        return 0;
}

static void fake_free(struct provider *p)
{
}

static const struct provider_ops fake_managed_ops = {
        .name = "fake",
        .managed = true,
        .list = fake_list,
        .launch = fake_launch,
        .terminate = fake_terminate,
        .set_config = fake_set_config,
        .free = fake_free,
};

static const struct provider_ops fake_static_ops = {
        .name = "fake-static",
        .managed = false,
        .list = fake_list,
        .launch = fake_launch,
        .terminate = fake_terminate,
        .set_config = fake_set_config,
        .free = fake_free,
};

static uint64_t fake_mono(void *userdata)
{
        return ((struct fake *)userdata)->mono;
}

static uint64_t fake_wall(void *userdata)
{
        return ((struct fake *)userdata)->wall;
}

static void fake_on_change(void *userdata)
{
        ((struct fake *)userdata)->changes++;
}

static void fake_pool_changed(struct pool *p, void *userdata)
{
        struct fake *f = userdata;

        if (f->r)
                reconcile_pool_changed(f->r);
}

/* Runs what is due on the loop now (zero timers), a few turns. */
static void run(struct fake *f)
{
        for (int i = 0; i < 4; i++)
                assert_true(event_base_loop(f->base, EVLOOP_NONBLOCK) >= 0);
}

/* Runs the loop for <ms> milliseconds of real time. */
static void run_for(struct fake *f, unsigned ms)
{
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};

        assert_int_equal(event_base_loopexit(f->base, &tv), 0);
        assert_true(event_base_dispatch(f->base) >= 0);
}

static struct instance *cloud_add(struct fake *f, enum instance_state state)
{
        struct instance *inst;

        assert_true(f->n_cloud < MAX_CLOUD);
        inst = &f->cloud[f->n_cloud++];
        memset(inst, 0, sizeof(*inst));
        f->next_id++;
        (void)snprintf(inst->id, sizeof(inst->id), "i-%04u", f->next_id);
        inst->state = state;
        assert_int_equal(netaddr_parse("127.0.0.1", (uint16_t)(20000 + f->next_id), false, &inst->addr), 0);
        inst->has_addr = true;
        inst->launched_usec = f->wall;
        (void)snprintf(inst->zone, sizeof(inst->zone), "zone-%c", 'a' + (int)(f->next_id % 3));
        return inst;
}

static struct instance *cloud_find(struct fake *f, const char *id)
{
        for (size_t i = 0; i < f->n_cloud; i++)
                if (strcmp(f->cloud[i].id, id) == 0)
                        return &f->cloud[i];
        return NULL;
}

static void cloud_remove(struct fake *f, const char *id)
{
        for (size_t i = 0; i < f->n_cloud; i++)
                if (strcmp(f->cloud[i].id, id) == 0) {
                        memmove(&f->cloud[i], &f->cloud[i + 1], (f->n_cloud - i - 1) * sizeof(f->cloud[0]));
                        f->n_cloud--;
                        return;
                }
        fail_msg("no instance %s", id);
}

static size_t cloud_alive(const struct fake *f)
{
        size_t n = 0;

        for (size_t i = 0; i < f->n_cloud; i++)
                if (f->cloud[i].state == INSTANCE_PENDING || f->cloud[i].state == INSTANCE_RUNNING)
                        n++;
        return n;
}

static void answer_list(struct fake *f)
{
        provider_list_cb cb = f->list_cb;

        assert_non_null(cb);
        f->list_cb = NULL;
        cb(&f->provider, 0, f->cloud, f->n_cloud, f->userdata);
}

static void fail_list(struct fake *f, int error)
{
        provider_list_cb cb = f->list_cb;

        assert_non_null(cb);
        f->list_cb = NULL;
        cb(&f->provider, error, NULL, 0, f->userdata);
}

/* Starts the instances asked for; with <listed> false, the next list won't show them yet. */
static void answer_launch_ex(struct fake *f, bool listed)
{
        provider_launch_cb cb = f->launch_cb;
        struct instance launched[MAX_CLOUD];
        unsigned n = f->launch_count;

        assert_non_null(cb);
        assert_true(n <= MAX_CLOUD);
        f->launch_cb = NULL;
        for (unsigned i = 0; i < n; i++) {
                struct instance *inst = cloud_add(f, INSTANCE_RUNNING);

                /* launched with the provider's settings of now (or its previous ones when asked), as the
                 * ec2 provider tags them */
                memcpy(inst->launch_hash,
                       f->provider.launch_previous ? f->provider.previous_hash : f->provider.launch_hash,
                       sizeof(inst->launch_hash));
                memcpy(inst->subnet, f->launch_zone, sizeof(inst->subnet));
                launched[i] = *inst;
                if (!listed)
                        f->n_cloud--;
        }
        cb(&f->provider, 0, launched, n, f->userdata);
}

static void answer_launch(struct fake *f)
{
        answer_launch_ex(f, true);
}

static void fail_launch(struct fake *f, int error)
{
        provider_launch_cb cb = f->launch_cb;

        assert_non_null(cb);
        f->launch_cb = NULL;
        cb(&f->provider, error, NULL, 0, f->userdata);
}

static void answer_terminate(struct fake *f)
{
        provider_terminate_cb cb = f->terminate_cb;

        assert_non_null(cb);
        f->terminate_cb = NULL;
        for (size_t i = 0; i < f->n_terminate; i++) {
                struct instance *inst = cloud_find(f, f->terminate_ids[i]);

                if (inst)
                        inst->state = INSTANCE_SHUTTING_DOWN;
        }
        cb(&f->provider, 0, f->userdata);
}

static bool terminated(const struct fake *f, const char *id)
{
        for (size_t i = 0; i < f->n_terminate; i++)
                if (strcmp(f->terminate_ids[i], id) == 0)
                        return true;
        return false;
}

/* A poll: the timer fires and the list is asked for. */
static void poll_now(struct fake *f)
{
        reconcile_poll(f->r);
        run(f);
        assert_non_null(f->list_cb);
}

/* Nothing in flight and nothing asked. */
static void assert_idle(struct fake *f)
{
        run(f);
        assert_null(f->list_cb);
        assert_null(f->launch_cb);
        assert_null(f->terminate_cb);
}

static struct backend *backend_of(struct fake *f, const char *id)
{
        struct instance *inst = cloud_find(f, id);
        struct backend *b;

        assert_non_null(inst);
        b = pool_find(f->pool, &inst->addr);
        if (b)
                assert_string_equal(b->instance_id, id);
        return b;
}

static struct fake *current; /* the test's, for its clock */

/* Sets a verdict as health.c would after a check; the change is dated by the fake clock. */
static void set_health(struct backend *b, bool healthy, enum check_result result)
{
        bool changed;

        assert_non_null(b);
        changed = b->healthy != healthy;
        b->checked_once = true;
        b->last_check = result;
        backend_set_healthy(b, healthy, "test");
        if (changed)
                b->health_changed_usec = current->mono;
}

static void all_healthy(struct fake *f)
{
        for (size_t i = 0; i < f->pool->n_backends; i++)
                set_health(f->pool->backends[i], true, CHECK_OK);
}

static struct reconcile_view view(struct fake *f)
{
        struct reconcile_view v;

        reconcile_get_view(f->r, &v);
        return v;
}

static struct fake *fake_new(const struct provider_ops *ops)
{
        struct fake *f = calloc(1, sizeof(*f));
        struct reconcile_clock clock;

        assert_non_null(f);
        f->base = event_base_new();
        assert_non_null(f->base);
        f->mono = now_usec(); /* comparable with the backends' own timestamps */
        f->wall = UINT64_C(1700000000) * SEC;
        f->provider = (struct provider){.ops = ops, .base = f->base, .config = &f->config, .data = f};

        config_init(&f->config);
        assert_int_equal(config_set(&f->config, "pool", "networks", "127.0.0.0/8", NULL), 0);
        assert_int_equal(config_set(&f->config, "pool", "grace", "60s", NULL), 0);
        assert_int_equal(config_set(&f->config, "lbd", "drain_timeout", "2s", NULL), 0);
        /* The early poll after a failure waits one health interval. */
        assert_int_equal(config_set(&f->config, "health", "interval", "20ms", NULL), 0);
        assert_int_equal(f->config.desired, 3);
        assert_int_equal(f->config.poll_usec, 10 * SEC);
        assert_int_equal(f->config.max_replacements, 3);

        current = f;
        f->pool = pool_new(f->base, balance_from_kind(BALANCE_ROUND_ROBIN));
        assert_non_null(f->pool);
        f->pool->on_change = fake_pool_changed;
        f->pool->on_change_userdata = f;
        assert_int_equal(reconcile_new(f->base, &f->provider, f->pool, &f->config, &f->r), 0);
        clock = (struct reconcile_clock){.monotonic = fake_mono, .realtime = fake_wall, .userdata = f};
        reconcile_set_clock(f->r, &clock);
        reconcile_set_on_change(f->r, fake_on_change, f);
        f->history = history_new(NULL, NULL, NULL, NULL);
        assert_non_null(f->history);
        reconcile_set_history(f->r, f->history);
        return f;
}

/* Whether the timeline has an entry of <kind> whose text contains <a> and <b> (NULL: anything). */
static bool timeline_has(const struct fake *f, enum history_event_kind kind, const char *a, const char *b)
{
        for (size_t i = 0; i < history_n_events(f->history); i++) {
                const struct history_event *e = history_event_at(f->history, i);

                if (e->kind == kind && (!a || strstr(e->text, a)) && (!b || strstr(e->text, b)))
                        return true;
        }
        return false;
}

static void fake_free_all(struct fake *f)
{
        f->r = reconcile_free(f->r);
        f->history = history_free(f->history);
        f->pool = pool_free(f->pool);
        event_base_free(f->base);
        free(f);
}

/* Starts with <n> running instances in the cloud; answers the first list; all healthy. */
static struct fake *fake_adopted(unsigned n)
{
        struct fake *f = fake_new(&fake_managed_ops);

        for (unsigned i = 0; i < n; i++)
                cloud_add(f, INSTANCE_RUNNING);
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        all_healthy(f);
        return f;
}

/* ---- tests ---- */

static void test_adopt(void **state)
{
        struct fake *f = fake_adopted(3);
        struct reconcile_view v;

        /* The first call is a list; what it shows is the pool: nothing launched. */
        assert_int_equal(f->lists, 1);
        assert_int_equal(f->launches, 0);
        assert_int_equal(f->pool->n_backends, 3);
        for (size_t i = 0; i < f->n_cloud; i++) {
                struct backend *b = backend_of(f, f->cloud[i].id);

                assert_non_null(b);
                assert_string_equal(b->instance_state, "running");
                assert_int_equal(b->launched_usec, f->cloud[i].launched_usec);
                assert_string_equal(b->zone, f->cloud[i].zone);
        }
        assert_idle(f);

        v = view(f);
        assert_true(v.managed);
        assert_true(v.list_ok);
        assert_int_equal(v.n_instances, 3);
        assert_int_equal(v.by_state[INSTANCE_RUNNING], 3);
        assert_int_equal(v.stats.lists, 1);
        assert_int_equal(v.stats.launches, 0);
        assert_false(v.panic);
        assert_false(v.guard);

        /* A steady pool: each poll is one list, nothing else. */
        for (int i = 0; i < 5; i++) {
                poll_now(f);
                answer_list(f);
                assert_idle(f);
        }
        assert_int_equal(f->lists, 6);
        assert_int_equal(f->launches + f->terminates, 0);
        fake_free_all(f);
}

static void test_launch_and_client_token(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        char first[128];

        reconcile_start(f->r);
        run(f);
        answer_list(f);
        assert_non_null(f->launch_cb);
        assert_int_equal(f->launch_count, 3);
        memcpy(first, f->token, sizeof(first));
        assert_true(strncmp(first, "lbd-", 4) == 0);

        /* The API fails: nothing more until the next poll, which retries with the same token. */
        fail_launch(f, -EAGAIN);
        assert_idle(f);
        assert_int_equal(view(f).last_error, -EAGAIN);
        assert_int_equal(view(f).stats.provider_errors, 1);
        poll_now(f);
        answer_list(f);
        assert_int_equal(f->launch_count, 3);
        assert_string_equal(f->token, first);

        /* It failed again, but this time it did start the instances: the list shows them. */
        fail_launch(f, -ETIMEDOUT);
        cloud_add(f, INSTANCE_PENDING);
        cloud_add(f, INSTANCE_PENDING);
        poll_now(f);
        answer_list(f);
        /* One is missing: a launch of another count is another launch, with another token. */
        assert_int_equal(f->launch_count, 1);
        assert_string_not_equal(f->token, first);
        memcpy(first, f->token, sizeof(first));
        answer_launch(f);
        run(f);
        answer_list(f); /* the poll right after a launch */
        assert_idle(f);
        assert_int_equal(cloud_alive(f), 3);
        assert_int_equal(view(f).stats.launches, 1);
        assert_int_equal(view(f).last_error, 0);

        /* A launch that succeeded is never repeated with its token. */
        cloud_remove(f, f->cloud[0].id);
        poll_now(f);
        answer_list(f);
        assert_int_equal(f->launch_count, 1);
        assert_string_not_equal(f->token, first);
        answer_launch(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        fake_free_all(f);
}

/* A fake lease: whether this host may act, and its epoch; counts the questions. */
struct fake_lease {
        bool may;
        uint64_t epoch;
        unsigned asked;
};

static bool fake_may_mutate(void *userdata, uint64_t *ret_epoch)
{
        struct fake_lease *l = userdata;

        l->asked++;
        if (l->may)
                *ret_epoch = l->epoch;
        return l->may;
}

static void set_lease(struct fake *f, struct fake_lease *l)
{
        const struct reconcile_authority a = {.may_mutate = fake_may_mutate, .userdata = l};

        reconcile_set_authority(f->r, &a);
}

/* A host that does not lead lists, mirrors and serves the pool, and changes nothing however far it is
 * from desired; once it leads, it launches in its epoch: the ClientToken says so, the provider is told,
 * and a launch retried in a new epoch is a new token. */
static void test_follower_changes_nothing(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        struct fake_lease lease = {.may = false};
        char first[128];

        set_lease(f, &lease);
        cloud_add(f, INSTANCE_RUNNING);
        cloud_add(f, INSTANCE_STOPPED); /* a leader would terminate it and launch two */
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(f->pool->n_backends, 1);
        assert_true(view(f).following);
        for (int i = 0; i < 3; i++) {
                poll_now(f);
                answer_list(f);
                assert_idle(f);
        }
        assert_int_equal(f->launches + f->terminates, 0);
        assert_true(lease.asked >= 4);

        lease = (struct fake_lease){.may = true, .epoch = 7};
        poll_now(f);
        answer_list(f);
        assert_false(view(f).following);
        assert_int_equal(view(f).epoch, 7);
        assert_non_null(f->launch_cb);
        assert_int_equal(f->launch_count, 2);
        assert_int_equal(f->provider.epoch, 7);
        assert_true(strncmp(f->token, "lbd-e7-", 7) == 0);
        memcpy(first, f->token, sizeof(first));
        fail_launch(f, -EAGAIN);
        assert_idle(f);

        /* The same launch retried by the same leader: the same token. In a later epoch: another. */
        poll_now(f);
        answer_list(f);
        assert_string_equal(f->token, first);
        fail_launch(f, -EAGAIN);
        lease.epoch = 9;
        poll_now(f);
        answer_list(f);
        assert_true(strncmp(f->token, "lbd-e9-", 7) == 0);
        assert_int_equal(f->provider.epoch, 9);
        answer_launch(f);
        run(f);
        /* The stopped instance goes once the launch is done, in the same epoch. */
        assert_non_null(f->terminate_cb);
        assert_int_equal(f->n_terminate, 1);
        answer_terminate(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        fake_free_all(f);
}

/* Leadership lost while a plan is carried out: the launch or the terminate that comes next is not made,
 * and instances chosen for termination go back into the pool. */
static void test_leadership_lost_mid_plan(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        struct fake_lease lease = {.may = true, .epoch = 3};
        struct backend *busy;
        struct config smaller;
        char ids[3][INSTANCE_ID_MAX];

        set_lease(f, &lease);
        for (int i = 0; i < 3; i++) {
                memcpy(ids[i], cloud_add(f, INSTANCE_RUNNING)->id, INSTANCE_ID_MAX);
                f->wall += 60 * SEC; /* ids[2] is the newest: the one a scale-down picks */
        }
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        all_healthy(f);
        assert_idle(f);

        /* Scale down to 2 while the victim drains; the lease lapses meanwhile. */
        busy = backend_of(f, ids[2]);
        backend_ref(busy);
        busy->loops[0].active = 1;
        smaller = f->config;
        smaller.desired = 2;
        reconcile_set_config(f->r, &smaller);
        run(f);
        answer_list(f);
        assert_int_equal(f->pool->n_backends, 2);
        lease.may = false;
        busy->loops[0].active = 0;
        run_for(f, 120);
        assert_null(f->terminate_cb);
        assert_int_equal(f->terminates, 0);
        assert_int_equal(f->pool->n_backends, 3); /* back in the pool */
        assert_true(view(f).following);
        backend_unref(busy);

        /* A launch decided by a leader that loses the lease before the call. */
        smaller.desired = 4;
        lease.may = true;
        reconcile_set_config(f->r, &smaller);
        run(f);
        lease.may = false;
        answer_list(f);
        assert_idle(f);
        assert_int_equal(f->launches, 0);
        fake_free_all(f);
}

static void test_replace_not_running(void **state)
{
        struct fake *f = fake_adopted(3);
        char stopped[INSTANCE_ID_MAX], gone[INSTANCE_ID_MAX];

        /* Stopped from outside: terminated and replaced, the launch first. */
        memcpy(stopped, f->cloud[1].id, sizeof(stopped));
        f->cloud[1].state = INSTANCE_STOPPED;
        poll_now(f);
        answer_list(f);
        assert_non_null(f->launch_cb);
        assert_int_equal(f->launch_count, 1);
        assert_null(f->terminate_cb);
        assert_null(backend_of(f, stopped)); /* not running: not a backend */
        answer_launch(f);
        assert_non_null(f->terminate_cb);
        assert_int_equal(f->n_terminate, 1);
        assert_true(terminated(f, stopped));
        answer_terminate(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(cloud_alive(f), 3);
        assert_int_equal(f->pool->n_backends, 3);
        assert_true(timeline_has(f, HISTORY_EVENT_LOST, stopped, "running -> stopped"));
        assert_true(timeline_has(f, HISTORY_EVENT_REPLACE, stopped, "a replacement follows"));

        /* Terminated from outside (gone from the list): replaced. */
        cloud_remove(f, stopped);
        all_healthy(f);
        memcpy(gone, f->cloud[0].id, sizeof(gone));
        cloud_remove(f, gone);
        poll_now(f);
        answer_list(f);
        assert_int_equal(f->launch_count, 1);
        answer_launch(f);
        assert_null(f->terminate_cb);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(cloud_alive(f), 3);
        assert_int_equal(view(f).stats.launches, 2);
        assert_int_equal(view(f).stats.terminations, 1);
        assert_int_equal(view(f).replacements, 2);
        fake_free_all(f);
}

/* Lets the settle time (fall x interval = 60 ms here) pass on both clocks. */
static void settle(struct fake *f)
{
        f->mono += 100 * USEC_PER_MSEC;
        run_for(f, 100);
}

static void test_replace_unhealthy_after_grace(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        struct backend *b;
        char sick[INSTANCE_ID_MAX];

        reconcile_start(f->r);
        run(f);
        answer_list(f);
        answer_launch(f);
        run(f);
        answer_list(f);
        all_healthy(f);
        assert_idle(f);

        /* Down within the grace period (60 s from launch): kept, and no early poll for it. */
        b = backend_of(f, f->cloud[2].id);
        f->wall += 30 * SEC;
        f->mono += 30 * SEC;
        set_health(b, false, CHECK_REFUSED);
        settle(f);
        assert_null(f->list_cb);
        poll_now(f);
        answer_list(f);
        assert_idle(f);
        set_health(b, true, CHECK_OK);

        /* Past it: down, then the settle time, then the early poll, and the failed instance is replaced. */
        f->wall += 31 * SEC;
        f->mono += 31 * SEC;
        memcpy(sick, f->cloud[1].id, sizeof(sick));
        b = backend_of(f, sick);
        set_health(b, false, CHECK_REFUSED);
        run(f);
        assert_null(f->list_cb);
        poll_now(f); /* a poll within the settle time: not failed yet */
        answer_list(f);
        assert_idle(f);
        settle(f);
        assert_non_null(f->list_cb);
        answer_list(f);
        assert_int_equal(f->launch_count, 1);
        answer_launch(f);
        assert_true(terminated(f, sick));
        assert_null(pool_find(f->pool, &cloud_find(f, sick)->addr)); /* out of the pool before it goes */
        answer_terminate(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(view(f).replacements, 1);
        /* The timeline has the replacement with its reason, and the launch that made up for it. */
        assert_true(timeline_has(f, HISTORY_EVENT_REPLACE, sick, "failing its health checks past its grace period"));
        assert_true(timeline_has(f, HISTORY_EVENT_LAUNCH, "1 to replace lost ones", NULL));
        assert_false(timeline_has(f, HISTORY_EVENT_TERMINATE, NULL, NULL));

        /* Another instance failing right after has its own early poll; when that poll can't replace it
         * (the launch fails), no second early poll comes for it within the poll interval. */
        b = pool_find(f->pool, &f->cloud[0].addr);
        set_health(b, false, CHECK_REFUSED);
        settle(f);
        assert_non_null(f->list_cb);
        answer_list(f);
        assert_int_equal(f->launch_count, 1);
        fail_launch(f, -EAGAIN);
        settle(f);
        assert_null(f->list_cb);
        assert_true(timeline_has(f, HISTORY_EVENT_PROVIDER, "Launching instances failed", NULL));
        fake_free_all(f);
}

static void test_adopted_never_up(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        struct backend *b;

        /* Adopted long after their launch: their grace is over, but a backend that has never passed
         * is given fall x interval (3 s) of checks before it is judged. */
        f->config.health_interval_usec = SEC;
        for (int i = 0; i < 3; i++)
                cloud_add(f, INSTANCE_RUNNING);
        f->wall += 3600 * SEC;
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        assert_idle(f);
        b = backend_of(f, f->cloud[0].id);
        set_health(f->pool->backends[1], true, CHECK_OK);
        set_health(f->pool->backends[2], true, CHECK_OK);
        b->checked_once = true;
        b->last_check = CHECK_REFUSED;
        b->health_changed_usec = f->mono;
        f->mono += 2 * SEC;
        poll_now(f);
        answer_list(f);
        assert_idle(f);

        f->mono += 2 * SEC;
        poll_now(f);
        answer_list(f);
        assert_int_equal(f->launch_count, 1);
        answer_launch(f);
        assert_true(terminated(f, f->cloud[0].id));
        answer_terminate(f);
        fake_free_all(f);
}

static void test_scale(void **state)
{
        struct fake *f = fake_adopted(3);
        struct config bigger, smaller;

        /* 3 -> 5: growth, not replacements. */
        bigger = f->config;
        bigger.desired = 5;
        f->wall += 100 * SEC;
        reconcile_set_config(f->r, &bigger);
        run(f);
        answer_list(f);
        assert_int_equal(f->launch_count, 2);
        answer_launch(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(cloud_alive(f), 5);
        assert_int_equal(view(f).replacements, 0);
        assert_false(view(f).guard);
        all_healthy(f);

        /* 5 -> 3: all healthy, so the two newest go. */
        smaller = f->config;
        smaller.desired = 3;
        reconcile_set_config(f->r, &smaller);
        run(f);
        answer_list(f);
        assert_null(f->launch_cb);
        assert_non_null(f->terminate_cb);
        assert_int_equal(f->n_terminate, 2);
        assert_true(terminated(f, f->cloud[3].id));
        assert_true(terminated(f, f->cloud[4].id));
        answer_terminate(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_true(timeline_has(f, HISTORY_EVENT_DESIRED, "5 -> 3", NULL));
        assert_true(timeline_has(f, HISTORY_EVENT_TERMINATE, f->cloud[4].id, "beyond desired"));
        assert_false(timeline_has(f, HISTORY_EVENT_REPLACE, NULL, NULL));

        /* Back to 5: the pool grew back to where it was; still no replacement counted. */
        reconcile_set_config(f->r, &bigger);
        run(f);
        answer_list(f);
        assert_int_equal(f->launch_count, 2);
        answer_launch(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(view(f).replacements, 0);
        fake_free_all(f);
}

/* Scale-down order and drain, with the drained backend reachable. */
static void test_scale_down_order(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        struct config smaller;
        struct backend *busy;
        char ids[5][INSTANCE_ID_MAX];

        /* Five instances launched a minute apart: cloud[4] is the newest. */
        for (int i = 0; i < 5; i++) {
                memcpy(ids[i], cloud_add(f, INSTANCE_RUNNING)->id, INSTANCE_ID_MAX);
                f->wall += 60 * SEC;
        }
        f->config.desired = 5;
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        all_healthy(f);
        assert_idle(f);

        /* cloud[1] is not healthy (never passed, too recent to be judged); cloud[4] is busy. */
        busy = backend_of(f, ids[4]);
        backend_ref(busy);
        busy->loops[0].active = 1;
        backend_set_healthy(backend_of(f, ids[1]), false, "test");
        backend_of(f, ids[1])->been_healthy = false;
        backend_of(f, ids[1])->health_changed_usec = f->mono;

        smaller = f->config;
        smaller.desired = 2;
        reconcile_set_config(f->r, &smaller);
        run(f);
        answer_list(f);
        assert_null(f->launch_cb);
        assert_int_equal(f->pool->n_backends, 2);
        assert_non_null(backend_of(f, ids[0]));
        assert_non_null(backend_of(f, ids[2]));
        assert_int_equal(busy->state, BACKEND_DRAINING);

        /* Terminated only once the busy one has drained. */
        run_for(f, 120);
        assert_null(f->terminate_cb);
        busy->loops[0].active = 0;
        run_for(f, 120);
        assert_non_null(f->terminate_cb);
        assert_int_equal(f->n_terminate, 3);
        assert_true(terminated(f, ids[1]));
        assert_true(terminated(f, ids[4]));
        assert_true(terminated(f, ids[3]));
        answer_terminate(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(cloud_alive(f), 2);
        assert_int_equal(view(f).stats.terminations, 3);
        assert_int_equal(view(f).replacements, 0);
        backend_unref(busy);
        fake_free_all(f);
}

/* <n> running instances launched a minute apart (the last the newest), in <subnets> (NULL: none) of the
 * provider's <zones> (3 of them, or NULL), adopted and healthy, desired <n>; their ids into <ids>. */
static struct fake *healthy_minute_apart(size_t n, const char *const *zones, const char *const *subnets,
                                         char ids[][INSTANCE_ID_MAX])
{
        struct fake *f = fake_new(&fake_managed_ops);

        for (size_t i = 0; zones && i < 3; i++)
                (void)snprintf(f->provider.zones[i], sizeof(f->provider.zones[i]), "%s", zones[i]);
        f->provider.n_zones = zones ? 3 : 0;
        for (size_t i = 0; i < n; i++) {
                struct instance *inst = cloud_add(f, INSTANCE_RUNNING);

                memcpy(ids[i], inst->id, INSTANCE_ID_MAX);
                if (subnets)
                        (void)snprintf(inst->subnet, sizeof(inst->subnet), "%s", subnets[i]);
                f->wall += 60 * SEC;
        }
        f->config.desired = n;
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        all_healthy(f);
        assert_idle(f);
        return f;
}

/* Lowers desired by one with <loads> on the backends of <ids> (n of them): the one terminated must be
 * <ids>[<expected>]. */
static void scale_down_one(struct fake *f, char ids[][INSTANCE_ID_MAX], const double *loads, size_t n,
                           size_t expected)
{
        for (size_t i = 0; i < n; i++)
                if (backend_of(f, ids[i]))
                        backend_of(f, ids[i])->load = loads[i];
        f->config.desired--;
        reconcile_set_config(f->r, &f->config);
        run(f);
        answer_list(f);
        assert_non_null(f->terminate_cb);
        assert_int_equal(f->n_terminate, 1);
        assert_true(terminated(f, ids[expected]));
        answer_terminate(f);
        run(f);
        answer_list(f);
        assert_idle(f);
}

/* Scaling down among healthy instances: the least loaded goes first (the smoothed load, backend.h), the
 * newest among equal loads; with zones, the least loaded of the fullest zone. */
static void test_scale_down_least_loaded(void **state)
{
        const char *const zones[] = {"subnet-a", "subnet-b", "subnet-c"};
        const char *const subnet_of[] = {"subnet-a", "subnet-a", "subnet-b", "subnet-c", "subnet-a"};
        /* The newest (ids[3]) is clearly busy, ids[1] the least loaded: ids[1] goes. */
        const double busy_newest[] = {1.4, 0.2, 1.5, 4.0};
        /* Loads equal within the margins (a steady load's noise): the newest of those goes, ids[2], not
         * ids[0], a little less loaded but older; ids[3] is still clearly busier. */
        const double equal[] = {0.9, 0, 1.6, 4.0};
        /* Zones: a has three (the fullest), b and c one each. The idle ones in b and c stay; in a, the
         * newest (ids[4]) is busy and ids[1] the least loaded of the zone. */
        const double in_zones[] = {2.5, 1.0, 0, 0, 3.0};
        char ids[5][INSTANCE_ID_MAX];
        struct fake *f;

        f = healthy_minute_apart(4, NULL, NULL, ids);
        scale_down_one(f, ids, busy_newest, 4, 1);
        scale_down_one(f, ids, equal, 4, 2);
        assert_int_equal(cloud_alive(f), 2);
        fake_free_all(f);

        f = healthy_minute_apart(5, zones, subnet_of, ids);
        scale_down_one(f, ids, in_zones, 5, 1);
        fake_free_all(f);
}

static void test_unlisted_launch(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);

        reconcile_start(f->r);
        run(f);
        answer_list(f);
        /* The launch answered, but the list lags behind: the three count as pending, no new launch. */
        answer_launch_ex(f, false);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(view(f).n_instances, 3);
        assert_false(view(f).instances[0].listed);

        /* Never listed within the TTL (30 s, 3 polls): they are not counted any more. */
        f->mono += 31 * SEC;
        poll_now(f);
        answer_list(f);
        assert_int_equal(f->launch_count, 3);
        answer_launch(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        fake_free_all(f);
}

static void test_list_failure(void **state)
{
        struct fake *f = fake_adopted(3);
        struct backend *b = backend_of(f, f->cloud[0].id);

        f->wall += 3600 * SEC;
        set_health(b, false, CHECK_REFUSED);

        /* The list (the early poll's) fails: nothing is launched or terminated on old data. */
        settle(f);
        fail_list(f, -EAGAIN);
        assert_idle(f);
        assert_false(view(f).list_ok);
        assert_int_equal(view(f).stats.provider_errors, 1);
        poll_now(f);
        fail_list(f, -EIO);
        assert_idle(f);
        assert_int_equal(f->terminates, 0);
        assert_int_equal(f->launches, 0);

        /* It works again: the failed instance is replaced. */
        poll_now(f);
        answer_list(f);
        assert_true(view(f).list_ok);
        answer_launch(f);
        assert_true(terminated(f, f->cloud[0].id));
        answer_terminate(f);
        run(f);
        answer_list(f);
        assert_idle(f);

        /* A launch that takes longer than 3 polls: the terminations it was planned with are skipped. */
        b = backend_of(f, f->cloud[1].id);
        set_health(b, false, CHECK_REFUSED);
        f->mono += 10 * SEC;
        poll_now(f);
        answer_list(f);
        assert_non_null(f->launch_cb);
        f->mono += 31 * SEC;
        answer_launch(f);
        assert_null(f->terminate_cb);
        run(f);
        assert_non_null(f->list_cb); /* a fresh list decides again */
        answer_list(f);
        /* Four alive (one failed): one beyond desired, the failed one. */
        assert_non_null(f->terminate_cb);
        assert_true(terminated(f, f->cloud[1].id));
        answer_terminate(f);
        fake_free_all(f);
}

static void test_storm_guard(void **state)
{
        struct fake *f = fake_adopted(3);
        struct backend *b;

        /* Three replacements pass... */
        for (int i = 0; i < 3; i++) {
                cloud_remove(f, f->cloud[0].id);
                f->mono += 10 * SEC;
                poll_now(f);
                answer_list(f);
                assert_int_equal(f->launch_count, 1);
                answer_launch(f);
                run(f);
                answer_list(f);
                assert_idle(f);
        }
        assert_int_equal(view(f).replacements, 3);
        assert_false(view(f).guard);
        assert_true(timeline_has(f, HISTORY_EVENT_LOST, "is gone (not terminated by lbd)", NULL));

        /* ...the fourth within 5 minutes is held back, and said so. */
        f->changes = 0;
        cloud_remove(f, f->cloud[0].id);
        poll_now(f);
        answer_list(f);
        assert_idle(f);
        assert_true(view(f).guard);
        assert_int_equal(view(f).held, 1);
        assert_true(f->changes > 0);
        assert_int_equal(cloud_alive(f), 2);
        assert_true(timeline_has(f, HISTORY_EVENT_GUARD, "holding back 1", NULL));

        /* A failed instance isn't terminated either while its replacement doesn't fit. */
        f->wall += 3600 * SEC;
        all_healthy(f);
        b = pool_find(f->pool, &f->cloud[0].addr);
        set_health(b, false, CHECK_REFUSED);
        f->mono += 10 * SEC;
        poll_now(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(f->terminates, 0);

        /* Once the window has passed, both are replaced. */
        f->mono += 5 * 60 * SEC;
        poll_now(f);
        answer_list(f);
        assert_int_equal(f->launch_count, 2);
        answer_launch(f);
        assert_true(terminated(f, f->cloud[0].id));
        answer_terminate(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_false(view(f).guard);
        assert_int_equal(view(f).held, 0);
        assert_int_equal(view(f).replacements, 2);
        assert_true(timeline_has(f, HISTORY_EVENT_GUARD, "released", NULL));
        fake_free_all(f);
}

static void test_all_failing(void **state)
{
        struct fake *f = fake_adopted(3);
        struct backend *b[3];

        f->wall += 3600 * SEC;
        for (int i = 0; i < 3; i++)
                b[i] = backend_of(f, f->cloud[i].id);

        /* All three fail at once: two answer with 503, one refuses connections. */
        set_health(b[0], false, CHECK_FAIL);
        set_health(b[1], false, CHECK_REFUSED);
        set_health(b[2], false, CHECK_FAIL);
        run(f); /* the pool's change is judged on the next turn */
        assert_true(view(f).panic);
        assert_true(b[0]->forced && backend_in_rotation(b[0]));
        assert_false(b[1]->forced || backend_in_rotation(b[1]));
        assert_true(b[2]->forced && backend_in_rotation(b[2]));
        assert_int_equal(pool_count_healthy(f->pool), 2);
        assert_true(timeline_has(f, HISTORY_EVENT_ALL_FAILING, "2 of 3 kept in rotation", NULL));

        /* Nothing is terminated (no early poll either), and polls don't change that. */
        assert_null(f->list_cb);
        poll_now(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(f->terminates + f->launches, 0);

        /* A check passes on b[0], not yet the rise: it is coming back, the least bad of all; and one that
         * answers stays beside it. Any change of the pool re-decides (here b[1] times out now). */
        b[0]->last_check = CHECK_OK;
        set_health(b[1], false, CHECK_TIMEOUT);
        pool_refresh(f->pool);
        run(f);
        assert_true(view(f).panic);
        assert_true(b[0]->forced && b[2]->forced);
        assert_false(b[1]->forced);
        /* Every one passes once (still down until the rise): all kept, the pool never empty. */
        b[1]->last_check = CHECK_OK;
        b[2]->last_check = CHECK_OK;
        pool_refresh(f->pool);
        run(f);
        assert_true(view(f).panic);
        assert_true(b[0]->forced && b[1]->forced && b[2]->forced);
        assert_int_equal(pool_count_healthy(f->pool), 3);
        b[0]->last_check = CHECK_FAIL;
        b[1]->last_check = CHECK_REFUSED;
        b[2]->last_check = CHECK_FAIL;
        pool_refresh(f->pool);
        run(f);

        /* One passes again: back to normal, and the failed ones are replaced (within the budget). */
        set_health(b[2], true, CHECK_OK);
        run(f);
        assert_false(view(f).panic);
        assert_true(timeline_has(f, HISTORY_EVENT_ALL_FAILING, "back to normal", NULL));
        assert_false(b[0]->forced);
        assert_false(backend_in_rotation(b[0]));
        /* The others get (rise + 1) x interval to come back before they are judged. */
        run(f);
        assert_null(f->list_cb);
        poll_now(f);
        answer_list(f);
        assert_idle(f);
        settle(f);
        assert_non_null(f->list_cb); /* the early poll */
        answer_list(f);
        assert_int_equal(f->launch_count, 2);
        answer_launch(f);
        assert_int_equal(f->n_terminate, 2);
        assert_true(terminated(f, f->cloud[0].id));
        assert_true(terminated(f, f->cloud[1].id));
        answer_terminate(f);
        fake_free_all(f);
}

/* A managed pool of one running instance, healthy and long past its grace period. */
static struct fake *one_healthy_instance(void)
{
        struct fake *f = fake_new(&fake_managed_ops);

        f->config.desired = 1;
        cloud_add(f, INSTANCE_RUNNING);
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        all_healthy(f);
        f->wall += 3600 * SEC;
        return f;
}

/* A poll is due: it replaces the one instance (launch, then terminate), and the test ends. */
static void expect_replaced_and_free(struct fake *f)
{
        answer_list(f);
        assert_int_equal(f->launch_count, 1);
        answer_launch(f);
        assert_true(terminated(f, f->cloud[0].id));
        answer_terminate(f);
        fake_free_all(f);
}

static void test_single_failing_is_replaced(void **state)
{
        struct fake *f = one_healthy_instance();

        set_health(f->pool->backends[0], false, CHECK_FAIL);
        settle(f);
        assert_false(view(f).panic);
        assert_non_null(f->list_cb);
        expect_replaced_and_free(f);
}

/* Whatever takes a backend down first, live traffic (a refused connect, while the last probe still
 * passed) or a probe, the early poll comes once the settle time has passed, and replaces it. */
static void test_failed_whichever_signal_first(void **state)
{
        struct fake *f = one_healthy_instance();
        struct backend *b = f->pool->backends[0];

        assert_int_equal(b->last_check, CHECK_OK);
        backend_report_refused(b, "connection refused (live traffic)");
        b->health_changed_usec = f->mono;
        assert_false(b->healthy);
        run(f);
        assert_null(f->list_cb); /* not before the settle time */
        settle(f);
        assert_non_null(f->list_cb);
        expect_replaced_and_free(f);

        f = one_healthy_instance();
        b = f->pool->backends[0];
        b->last_check = CHECK_REFUSED;
        b->fall_count = 1;
        backend_report_refused(b, "connection refused (live traffic)");
        b->health_changed_usec = f->mono;
        settle(f);
        assert_non_null(f->list_cb);
        expect_replaced_and_free(f);

        f = one_healthy_instance();
        set_health(f->pool->backends[0], false, CHECK_REFUSED);
        settle(f);
        assert_non_null(f->list_cb);
        expect_replaced_and_free(f);
}

/* The early poll's timer firing before the backend counts as failed (the loop's timers may run a little
 * early, here the reconciler's clock lags behind) neither polls too soon, which would find nothing failed
 * and spend the early poll, nor falls back to the regular poll: it waits for the moment. */
static void test_early_timer_fires_before_the_moment(void **state)
{
        struct fake *f = one_healthy_instance();

        set_health(f->pool->backends[0], false, CHECK_REFUSED);
        run(f);
        f->mono += 30 * USEC_PER_MSEC; /* the settle time is 60 ms */
        run_for(f, 100);
        assert_null(f->list_cb);
        f->mono += 100 * USEC_PER_MSEC;
        run_for(f, 100);
        assert_non_null(f->list_cb);
        expect_replaced_and_free(f);
}

static void test_recovering_is_not_replaced(void **state)
{
        struct fake *f = one_healthy_instance();
        struct backend *b = f->pool->backends[0];

        /* Its relay crashed (live traffic took it down) and was restarted at once: a check passed after it
         * went down (rise not reached yet) when the settle time ends. The early poll is not spent on it. */
        backend_report_refused(b, "connection refused (live traffic)");
        b->health_changed_usec = f->mono;
        run(f); /* the early poll is scheduled for the end of the settle time */
        b->last_check = CHECK_OK;
        b->rise_count = 1;
        settle(f);
        assert_idle(f);
        assert_int_equal(f->launch_count, 0);
        /* It fails again (health.c tells the pool): polled at once, not at the next regular poll, and
         * replaced. */
        b->last_check = CHECK_REFUSED;
        b->rise_count = 0;
        pool_refresh(f->pool);
        run(f);
        assert_non_null(f->list_cb);
        expect_replaced_and_free(f);
}

static void test_maintenance_is_never_replaced(void **state)
{
        struct fake *f = one_healthy_instance();
        struct backend *b = f->pool->backends[0];

        /* The operator drains it, then its checks fail (the service is being worked on): kept. */
        backend_set_maintenance(b, true);
        set_health(b, false, CHECK_REFUSED);
        settle(f);
        poll_now(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(f->launch_count, 0);
        assert_false(terminated(f, f->cloud[0].id));
        /* Back from maintenance and still down: judged as usual, and replaced. */
        backend_set_maintenance(b, false);
        set_health(b, true, CHECK_OK);
        set_health(b, false, CHECK_REFUSED);
        settle(f);
        assert_non_null(f->list_cb);
        expect_replaced_and_free(f);
}

static void test_static(void **state)
{
        struct fake *f = fake_new(&fake_static_ops);

        /* Unmanaged: mirrored into the pool, never launched or terminated, never judged. */
        cloud_add(f, INSTANCE_RUNNING);
        f->cloud[0].launched_usec = 0;
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(f->pool->n_backends, 1);
        f->wall += 3600 * SEC;
        set_health(f->pool->backends[0], false, CHECK_FAIL);
        settle(f);
        assert_null(f->list_cb);
        poll_now(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(f->launches + f->terminates, 0);
        assert_false(view(f).managed);

        /* A reload's new list replaces the pool. */
        cloud_add(f, INSTANCE_RUNNING);
        reconcile_set_config(f->r, &f->config);
        run(f);
        answer_list(f);
        assert_int_equal(f->pool->n_backends, 2);
        fake_free_all(f);
}

static void test_new_instance_same_address(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        struct netaddr addr;
        struct backend *old, *fresh;

        f->config.desired = 1;
        addr = cloud_add(f, INSTANCE_RUNNING)->addr;
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        all_healthy(f);
        assert_idle(f);
        old = pool_find(f->pool, &addr);
        assert_non_null(old);
        assert_true(old->healthy);
        backend_ref(old);

        /* The instance is replaced from outside by one at the same address. */
        cloud_remove(f, f->cloud[0].id);
        cloud_add(f, INSTANCE_RUNNING)->addr = addr;
        poll_now(f);
        answer_list(f);
        fresh = pool_find(f->pool, &addr);
        assert_non_null(fresh);
        assert_ptr_not_equal(fresh, old);
        assert_false(fresh->healthy);
        assert_string_equal(fresh->instance_id, f->cloud[0].id);
        assert_int_equal(old->state, BACKEND_DRAINING);
        backend_unref(old);
        fake_free_all(f);
}

static void test_outside_networks(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        struct instance *inst;

        inst = cloud_add(f, INSTANCE_RUNNING);
        assert_int_equal(netaddr_parse("192.0.2.3:80", 0, false, &inst->addr), 0);
        f->config.desired = 1;
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        /* Counted, never contacted. */
        assert_idle(f);
        assert_int_equal(f->pool->n_backends, 0);
        assert_true(view(f).instances[0].outside);
        fake_free_all(f);
}

#define OLD_HASH "00000000000000aa"
#define NEW_HASH "00000000000000bb"

/* Answers whatever is asked, making every backend healthy when nothing is, for at most <turns> turns;
 * returns when the refresh is no longer running. */
static void drive_refresh(struct fake *f, int turns, size_t *max_alive, size_t *min_serving)
{
        for (int i = 0; i < turns && view(f).refresh == REFRESH_RUNNING; i++) {
                size_t serving = 0;

                *max_alive = MAX(*max_alive, cloud_alive(f));
                for (size_t j = 0; j < f->pool->n_backends; j++)
                        serving += f->pool->backends[j]->healthy;
                *min_serving = MIN(*min_serving, serving);
                if (f->launch_cb)
                        answer_launch(f);
                else if (f->terminate_cb)
                        answer_terminate(f);
                else if (f->list_cb)
                        answer_list(f);
                else {
                        all_healthy(f);
                        poll_now(f);
                }
                run(f);
        }
}

static void test_refresh(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        size_t max_alive = 0, min_serving = SIZE_MAX, n_new = 0;
        char old[3][INSTANCE_ID_MAX];

        for (int i = 0; i < 3; i++) {
                struct instance *inst = cloud_add(f, INSTANCE_RUNNING);

                memcpy(inst->launch_hash, OLD_HASH, sizeof(OLD_HASH));
                memcpy(old[i], inst->id, INSTANCE_ID_MAX);
                f->wall += 60 * SEC;
        }
        memcpy(f->provider.launch_hash, NEW_HASH, sizeof(NEW_HASH));
        /* No replacement allowed at all: the refresh's launches are not replacements. */
        assert_int_equal(config_set(&f->config, "pool", "max_replacements", "0", NULL), 0);
        assert_int_equal(config_set(&f->config, "pool", "refresh_warmup", "0", NULL), 0);
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        assert_int_equal(view(f).refresh, REFRESH_RUNNING);
        /* launch before terminate: one new, nothing old touched */
        assert_non_null(f->launch_cb);
        assert_int_equal(f->launch_count, 1);
        assert_null(f->terminate_cb);
        all_healthy(f);

        drive_refresh(f, 200, &max_alive, &min_serving);
        assert_int_equal(view(f).refresh, REFRESH_DONE);
        assert_int_equal(view(f).refresh_replaced, 3);
        assert_int_equal(view(f).stats.launches, 3);
        assert_int_equal(view(f).stats.terminations, 3);
        assert_int_equal(view(f).replacements, 0);
        assert_false(view(f).guard);
        assert_true(max_alive <= 5); /* one launched as one old drains */
        assert_true(min_serving >= 3);
        for (int i = 0; i < 3; i++)
                assert_int_not_equal(cloud_find(f, old[i])->state, INSTANCE_RUNNING);
        for (size_t i = 0; i < f->n_cloud; i++)
                if (f->cloud[i].state == INSTANCE_RUNNING) {
                        assert_string_equal(f->cloud[i].launch_hash, NEW_HASH);
                        n_new++;
                }
        assert_int_equal(n_new, 3);
        fake_free_all(f);
}

/* A restarted lbd finds 3 old and 1 new instance, none checked yet: it launches nothing more until the
 * new one counts, then goes on. */
static void test_refresh_after_restart(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);

        for (int i = 0; i < 3; i++)
                memcpy(cloud_add(f, INSTANCE_RUNNING)->launch_hash, OLD_HASH, sizeof(OLD_HASH));
        memcpy(cloud_add(f, INSTANCE_RUNNING)->launch_hash, NEW_HASH, sizeof(NEW_HASH));
        memcpy(f->provider.launch_hash, NEW_HASH, sizeof(NEW_HASH));
        assert_int_equal(config_set(&f->config, "pool", "refresh_warmup", "0", NULL), 0);
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        assert_int_equal(view(f).refresh, REFRESH_RUNNING);
        assert_int_equal(view(f).refresh_counts.old_total, 3);
        assert_int_equal(view(f).refresh_counts.new_total, 1);
        assert_idle(f);
        poll_now(f);
        answer_list(f);
        assert_idle(f); /* nothing healthy yet: nothing launched, nothing terminated */
        all_healthy(f);
        poll_now(f);
        answer_list(f);
        /* the new one counts: one old goes, the next new one comes */
        assert_non_null(f->launch_cb);
        assert_int_equal(f->launch_count, 1);
        fake_free_all(f);
}

/* New instances that never become healthy: the refresh stops and the old ones stay. */
static void test_refresh_rollback(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        struct backend *b;
        const char *fresh;

        for (int i = 0; i < 3; i++)
                memcpy(cloud_add(f, INSTANCE_RUNNING)->launch_hash, OLD_HASH, sizeof(OLD_HASH));
        memcpy(f->provider.launch_hash, NEW_HASH, sizeof(NEW_HASH));
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        all_healthy(f);
        answer_launch(f);
        fresh = f->cloud[3].id;
        run(f);
        answer_list(f);
        b = backend_of(f, fresh);
        set_health(b, false, CHECK_FAIL);
        /* past its grace period, down past the settle time: failed, and never healthy */
        f->wall += 61 * SEC;
        f->mono += 5 * SEC;
        poll_now(f);
        answer_list(f);
        assert_int_equal(view(f).refresh, REFRESH_ROLLED_BACK);
        assert_non_null(strstr(view(f).refresh_reason, "did not become healthy"));
        assert_null(f->launch_cb);
        assert_non_null(f->terminate_cb);
        assert_int_equal(f->n_terminate, 1);
        assert_string_equal(f->terminate_ids[0], fresh);
        answer_terminate(f);
        run(f);
        answer_list(f);
        assert_idle(f);
        assert_int_equal(cloud_alive(f), 3);
        assert_int_equal(view(f).replacements, 0);
        fake_free_all(f);
}

/* A rollback after a batch was replaced (min_healthy low enough to terminate an old one before the new one
 * shows healthy): the pool gets back to desired with instances launched with the old settings, which the
 * provider still has (previous_hash). */
static void test_refresh_rollback_relaunches_old(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        size_t n_old = 0;
        const char *fresh, *fresh2;

        for (int i = 0; i < 3; i++)
                memcpy(cloud_add(f, INSTANCE_RUNNING)->launch_hash, OLD_HASH, sizeof(OLD_HASH));
        memcpy(f->provider.launch_hash, NEW_HASH, sizeof(NEW_HASH));
        memcpy(f->provider.previous_hash, OLD_HASH, sizeof(OLD_HASH));
        assert_int_equal(config_set(&f->config, "pool", "refresh_min_healthy", "50", NULL), 0);
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        all_healthy(f);
        /* 2 of 3 must serve: one new launched first */
        assert_non_null(f->launch_cb);
        assert_int_equal(f->launch_count, 1);
        assert_false(f->provider.launch_previous);
        answer_launch(f);
        fresh = f->cloud[3].id;
        run(f);
        answer_list(f);
        /* the next batch: another new one, and one old goes without waiting for either to count */
        assert_non_null(f->launch_cb);
        answer_launch(f);
        fresh2 = f->cloud[4].id;
        run(f);
        assert_non_null(f->terminate_cb);
        assert_int_equal(f->n_terminate, 1);
        answer_terminate(f);
        run(f);
        answer_list(f);
        assert_int_equal(view(f).refresh_replaced, 1);
        set_health(backend_of(f, fresh), false, CHECK_FAIL);
        set_health(backend_of(f, fresh2), false, CHECK_FAIL);
        f->wall += 61 * SEC;
        f->mono += 5 * SEC;
        poll_now(f);
        answer_list(f);
        assert_int_equal(view(f).refresh, REFRESH_ROLLED_BACK);
        assert_non_null(strstr(view(f).refresh_reason, "with the old settings " OLD_HASH));
        /* one launched with the old settings (2 old left, desired 3), then the new one terminated */
        assert_non_null(f->launch_cb);
        assert_int_equal(f->launch_count, 1);
        assert_true(f->provider.launch_previous);
        answer_launch(f);
        run(f);
        assert_non_null(f->terminate_cb);
        assert_int_equal(f->n_terminate, 2);
        assert_true(terminated(f, fresh) && terminated(f, fresh2));
        answer_terminate(f);
        run(f);
        answer_list(f);
        all_healthy(f);
        assert_idle(f);
        for (size_t i = 0; i < f->n_cloud; i++)
                if (f->cloud[i].state == INSTANCE_RUNNING) {
                        assert_string_equal(f->cloud[i].launch_hash, OLD_HASH);
                        n_old++;
                }
        assert_int_equal(n_old, 3);
        assert_int_equal(view(f).refresh, REFRESH_ROLLED_BACK);

        /* New settings (a reload) end the rollback: launches use the current settings again. */
        memcpy(f->provider.previous_hash, NEW_HASH, sizeof(NEW_HASH));
        memcpy(f->provider.launch_hash, "00000000000000cc", 17);
        poll_now(f);
        answer_list(f);
        assert_int_equal(view(f).refresh, REFRESH_RUNNING);
        assert_non_null(f->launch_cb);
        assert_false(f->provider.launch_previous);
        fake_free_all(f);
}

/* <id> fails its checks, its grace period and settle time pass, and a poll decides its replacement. */
static void fail_and_poll(struct fake *f, const char *id)
{
        set_health(backend_of(f, id), false, CHECK_TIMEOUT);
        f->wall += 61 * SEC;
        f->mono += 5 * SEC;
        poll_now(f);
        answer_list(f);
        assert_non_null(f->launch_cb);
}

/* Zones: launches spread one per zone; a zone whose instances keep failing their checks is left alone, and
 * the replacement goes to another. */
static void test_zones(void **state)
{
        struct fake *f = fake_new(&fake_managed_ops);
        const char *zones[] = {"subnet-a", "subnet-b", "subnet-c"};
        char in_c[INSTANCE_ID_MAX];
        int used[3] = {0};

        for (int i = 0; i < 3; i++)
                memcpy(f->provider.zones[i], zones[i], strlen(zones[i]) + 1);
        f->provider.n_zones = 3;
        reconcile_start(f->r);
        run(f);
        answer_list(f);
        for (int i = 0; i < 3; i++) {
                assert_non_null(f->launch_cb);
                assert_int_equal(f->launch_count, 1);
                for (int z = 0; z < 3; z++)
                        used[z] += strcmp(f->launch_zone, zones[z]) == 0;
                answer_launch(f);
                run(f);
        }
        assert_int_equal(used[0] + used[1] + used[2], 3);
        assert_true(used[0] == 1 && used[1] == 1 && used[2] == 1);
        answer_list(f);
        all_healthy(f);
        assert_idle(f);

        /* The instance in c fails past its grace: replaced in c (the emptiest zone then). */
        for (size_t i = 0; i < f->n_cloud; i++)
                if (strcmp(f->cloud[i].subnet, "subnet-c") == 0)
                        memcpy(in_c, f->cloud[i].id, INSTANCE_ID_MAX);
        fail_and_poll(f, in_c);
        assert_string_equal(f->launch_zone, "subnet-c");
        answer_launch(f);
        run(f);
        answer_terminate(f);
        run(f);
        answer_list(f);
        all_healthy(f);
        assert_idle(f);

        /* Its replacement fails too: the zone is closed, the next replacement goes elsewhere. */
        memcpy(in_c, f->cloud[f->n_cloud - 1].id, INSTANCE_ID_MAX);
        assert_string_equal(f->cloud[f->n_cloud - 1].subnet, "subnet-c");
        fail_and_poll(f, in_c);
        assert_string_not_equal(f->launch_zone, "subnet-c");
        assert_int_equal(view(f).zones->z[2].refusals, 1);
        fake_free_all(f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_follower_changes_nothing),
                cmocka_unit_test(test_leadership_lost_mid_plan),
                cmocka_unit_test(test_adopt),
                cmocka_unit_test(test_launch_and_client_token),
                cmocka_unit_test(test_replace_not_running),
                cmocka_unit_test(test_replace_unhealthy_after_grace),
                cmocka_unit_test(test_adopted_never_up),
                cmocka_unit_test(test_scale),
                cmocka_unit_test(test_scale_down_order),
                cmocka_unit_test(test_scale_down_least_loaded),
                cmocka_unit_test(test_unlisted_launch),
                cmocka_unit_test(test_list_failure),
                cmocka_unit_test(test_storm_guard),
                cmocka_unit_test(test_all_failing),
                cmocka_unit_test(test_single_failing_is_replaced),
                cmocka_unit_test(test_maintenance_is_never_replaced),
                cmocka_unit_test(test_failed_whichever_signal_first),
                cmocka_unit_test(test_early_timer_fires_before_the_moment),
                cmocka_unit_test(test_recovering_is_not_replaced),
                cmocka_unit_test(test_static),
                cmocka_unit_test(test_new_instance_same_address),
                cmocka_unit_test(test_outside_networks),
                cmocka_unit_test(test_refresh),
                cmocka_unit_test(test_refresh_after_restart),
                cmocka_unit_test(test_refresh_rollback),
                cmocka_unit_test(test_refresh_rollback_relaunches_old),
                cmocka_unit_test(test_zones),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

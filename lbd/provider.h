/* Providers say where backends come from, behind one small interface: list, launch, terminate. All calls
 * are asynchronous on the event loop; each reports once through its callback (never from inside the call
 * itself). A provider never decides anything: the reconciler (reconcile.c) does.
 *
 * - static: the [pool] backends list; nothing is ever launched or terminated (managed = false).
 * - local:  local processes started from [local] command, one per port; a process that exits is reported
 *           as terminated (the reconciler launches a replacement).
 * - ec2:    EC2 instances carrying the pool's tag, through the EC2 Query API (ec2.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <event2/event_struct.h>

#include "common/list.h"
#include "common/netaddr.h"

struct event_base;
struct config;
struct provider;

enum instance_state {
        INSTANCE_PENDING,
        INSTANCE_RUNNING,
        INSTANCE_STOPPING,
        INSTANCE_STOPPED,
        INSTANCE_SHUTTING_DOWN,
        INSTANCE_TERMINATED,
        INSTANCE_UNKNOWN,
};

#define INSTANCE_ID_MAX 64
#define INSTANCE_ZONE_MAX 32 /* = EC2_ZONE_MAX */
/* The identity of the settings an instance is launched with: hex digits of a hash, with the NUL */
#define INSTANCE_LAUNCH_HASH_MAX 17
#define PROVIDER_MAX_ZONES 16

struct instance {
        char id[INSTANCE_ID_MAX];  /* "i-0abc…", "local-2", or the address for static */
        enum instance_state state;
        struct netaddr addr;       /* where its backend listens (with the pool port), when has_addr */
        bool has_addr;
        uint64_t launched_usec;    /* wall clock, 0 if unknown */
        char zone[INSTANCE_ZONE_MAX]; /* where it runs ("us-east-1a"), "" if the provider has no zones */
        /* The hash of the launch settings it carries (ec2: a tag), "" when unknown; compared with the
         * provider's launch_hash to tell instances launched with other settings (reconcile.c's refresh) */
        char launch_hash[INSTANCE_LAUNCH_HASH_MAX];
        char subnet[INSTANCE_ID_MAX]; /* its subnet (ec2), "" when unknown or none */
};

/* <r> >= 0 on success. Failures: -EAGAIN throttled, 5xx or network (transient: the API is failing),
 * -EACCES/-EPERM credentials or permissions, -EINVAL a request the API refused; the provider has logged
 * the details (never a secret). <instances> are valid during the callback only. */
typedef void (*provider_list_cb)(struct provider *p, int r, const struct instance *instances, size_t n,
                                 void *userdata);
typedef void (*provider_launch_cb)(struct provider *p, int r, const struct instance *launched, size_t n,
                                   void *userdata);
typedef void (*provider_terminate_cb)(struct provider *p, int r, void *userdata);

#define PROVIDER_ERROR_MAX 768

/* What the provider's API is going through, for /status. */
struct provider_status {
        unsigned failures;           /* attempts that failed in a row: > 0 while the API is failing now */
        uint64_t failing_since_usec; /* now_usec() of the first of them, 0 when none */
        /* The last failure in the API's own words ("AuthFailure: AWS was not able to validate …",
         * "Failed to connect to … (Connection refused)"), printable ASCII only; "" when none */
        char error[PROVIDER_ERROR_MAX];
};

struct provider_ops {
        const char *name;
        bool managed; /* launches and terminates (false: static) */
        /* Every instance of the pool that is not terminated (terminated ones may be listed too). */
        int (*list)(struct provider *p, provider_list_cb cb, void *userdata);
        /* Starts <count> instances in <zone> (one of p->zones; NULL: the provider's choice). <client_token>
         * makes the call idempotent: the same token never makes more instances, however often it is
         * retried. -ENOSPC: the zone has no capacity for them now (try another). */
        int (*launch)(struct provider *p, unsigned count, const char *zone, const char *client_token,
                      provider_launch_cb cb, void *userdata);
        int (*terminate)(struct provider *p, const char *const *ids, size_t n, provider_terminate_cb cb,
                         void *userdata);
        /* New settings (reload). Returns 0 or -EINVAL. */
        int (*set_config)(struct provider *p, const struct config *c);
        /* Fills <ret> (zeroed by the caller). NULL: the provider has nothing to say. */
        void (*status)(struct provider *p, struct provider_status *ret);
        void (*free)(struct provider *p);
};

struct provider {
        const struct provider_ops *ops;
        struct event_base *base;
        const struct config *config;
        void *data; /* the implementation's */
        /* The hash of the settings the next launch uses (set_config() writes it), "" when the provider
         * has no such thing (static, local): instances launched with other settings are refreshed */
        char launch_hash[INSTANCE_LAUNCH_HASH_MAX];
        /* The hash of the settings it launched with before the last change of them (a reload), which it
         * can still launch with; "" when none (never changed, or the provider has no such thing). Kept
         * for a refresh's rollback, which relaunches instances with the old settings. */
        char previous_hash[INSTANCE_LAUNCH_HASH_MAX];
        /* Set by the reconciler before each launch, like epoch: launch with the previous settings
         * (previous_hash) instead of the current ones. */
        bool launch_previous;
        /* Where instances may go (ec2: the subnets), set by set_config(); none when the provider has no
         * such choice. The reconciler keeps the pool balanced across them. */
        char zones[PROVIDER_MAX_ZONES][INSTANCE_ID_MAX];
        size_t n_zones;
        /* The leader's epoch (lease.h) the reconciler sets before each launch and terminate, 0 without a
         * lease: a provider that can marks what it launches with it (ec2: the lbd:epoch tag) */
        uint64_t epoch;
};

/* A call a provider answers on the event loop's next turn, which keeps the promise that a callback never
 * runs inside the call (the static and local providers answer at once otherwise). The provider embeds one
 * in its own call structure and keeps a list of them, so that ops->free() cancels what has not fired. */
struct provider_deferred {
        struct event timer;
        void (*answer)(struct provider_deferred *d); /* runs off the list; frees the call */
        struct provider_deferred **list;             /* the list it is on */
        DLIST_FIELDS(struct provider_deferred, deferred);
};

/* Puts <d> on <*list> and arms it to run <answer> on <p>'s loop's next turn. Returns 0, or -ENOMEM with
 * <d> on no list. */
int provider_defer(struct provider *p, struct provider_deferred **list, struct provider_deferred *d,
                   void (*answer)(struct provider_deferred *d));
/* Cancels every call on <*list>, freeing each with <free_call>; none is answered. */
void provider_defer_cancel_all(struct provider_deferred **list, void (*free_call)(struct provider_deferred *d));

/* Replaces the file <path> with what <write> puts into a stream (mode 0600, since what a provider keeps
 * may be secret): it writes to PATH.tmp, flushes it to disk and renames it over <path>, so a reader sees
 * the old file or the new one, never part of it. <write> returns 0 or -errno. Returns 0 or -errno (nothing
 * logged; PATH.tmp is removed on failure). */
int provider_write_file(const char *path, int (*write)(FILE *f, void *userdata), void *userdata);

/* Creates the provider [pool] provider names. Returns 0 or -errno (logged). */
int provider_new(struct event_base *base, const struct config *c, struct provider **ret);
struct provider *provider_free(struct provider *p);

const char *provider_instance_state_name(enum instance_state s);

/* The provider's status, its error made safe for a log line or JSON. */
void provider_get_status(struct provider *p, struct provider_status *ret);

extern const struct provider_ops provider_static_ops;
extern const struct provider_ops provider_local_ops;
extern const struct provider_ops provider_ec2_ops;

/* The ec2 provider's launch hash of <c> with the rendered <user_data> (exposed for tests). Returns 0,
 * -ENOMEM or -EIO. */
int provider_ec2_launch_hash(const struct config *c, const char *user_data, size_t user_data_len,
                             char ret[static INSTANCE_LAUNCH_HASH_MAX]);

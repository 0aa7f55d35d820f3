/* The Elastic IP that follows the leader (eip.h). One call in flight at most; a retry timer while it
 * fails. The epoch is the key: the address is moved once per epoch this host leads, so a host that keeps
 * the lease never calls again, and one that takes it back in a later epoch moves it back even if the
 * other host moved it meanwhile. AssociateAddress has no ClientToken; it is idempotent by itself (the same
 * instance again is a no-op), and every call is logged with the epoch it was made in. */
#include "lbd/eip.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/ec2.h"
#include "common/log.h"
#include "common/macro.h"
#include "lbd/config.h"

#define EIP_ANSWER_MAX (64 * 1024)

struct eip {
        struct event_base *base;
        struct ec2 *ec2;
        bool (*may_act)(void *userdata, uint64_t *ret_epoch);
        void *userdata;
        char allocation_id[64];
        char instance_id[64];
        struct ec2_call *call;
        uint64_t call_epoch; /* the epoch of the call in flight */
        uint64_t moved_epoch;
        struct event retry;
};

static void eip_on_retry(evutil_socket_t fd, short what, void *userdata)
{
        eip_update(userdata);
}

static void eip_on_answer(int r, const char *error, const char *code, const char *xml, size_t len, void *userdata)
{
        struct eip *e = userdata;
        struct timeval tv = timeval_from_usec(EIP_RETRY_USEC);

        e->call = NULL;
        if (r < 0) {
                log_warning("Moving the Elastic IP %s to instance %s failed (epoch %" PRIu64 "): %s; trying "
                            "again in %llu s while this host leads",
                            e->allocation_id, e->instance_id, e->call_epoch, error && *error ? error : "error",
                            (unsigned long long)(EIP_RETRY_USEC / USEC_PER_SEC));
                (void)evtimer_add(&e->retry, &tv);
                return;
        }
        e->moved_epoch = e->call_epoch;
        log_notice("Elastic IP %s moved to this host's instance %s (epoch %" PRIu64 ")", e->allocation_id,
                   e->instance_id, e->call_epoch);
        /* Leadership may have moved on meanwhile. */
        eip_update(e);
}

void eip_update(struct eip *e)
{
        const struct ec2_param params[] = {
                { "AllocationId", e->allocation_id },
                { "InstanceId", e->instance_id },
                { "AllowReassociation", "true" },
        };
        uint64_t epoch = 0;
        int r;

        if (!e || e->call || evtimer_pending(&e->retry, NULL))
                return;
        if (!e->may_act(e->userdata, &epoch) || epoch == e->moved_epoch)
                return;
        e->call_epoch = epoch;
        log_info("Moving the Elastic IP %s to this host's instance %s (epoch %" PRIu64 ")", e->allocation_id,
                 e->instance_id, epoch);
        r = ec2_query(e->ec2, "AssociateAddress", params, ELEMENTSOF(params), EIP_ANSWER_MAX, eip_on_answer, e,
                      &e->call);
        if (r < 0) {
                struct timeval tv = timeval_from_usec(EIP_RETRY_USEC);

                log_warning_errno(r, "Failed to start moving the Elastic IP: %m; trying again");
                (void)evtimer_add(&e->retry, &tv);
        }
}

uint64_t eip_moved_epoch(const struct eip *e)
{
        return e ? e->moved_epoch : 0;
}

int eip_new(struct event_base *base, const struct config *c, bool (*may_act)(void *userdata, uint64_t *ret_epoch),
            void *userdata, struct eip **ret)
{
        const struct ec2_settings s = {
                .region = c->ec2_region,
                .endpoint = c->ec2_endpoint,
                .credentials_file = c->ec2_credentials_file,
                .profile = c->ec2_profile,
                .backoff_cap_usec = EIP_RETRY_USEC,
        };
        struct eip *e;
        int r;

        e = calloc(1, sizeof(*e));
        if (!e)
                return log_error_errno(ENOMEM, "Out of memory");
        r = ec2_new(base, &s, &e->ec2);
        if (r < 0) {
                free(e);
                return log_error_errno(r, "Failed to set up the EC2 client for the Elastic IP: %m");
        }
        e->base = base;
        e->may_act = may_act;
        e->userdata = userdata;
        (void)snprintf(e->allocation_id, sizeof(e->allocation_id), "%s", c->lease_elastic_ip);
        (void)snprintf(e->instance_id, sizeof(e->instance_id), "%s", c->lease_instance_id);
        (void)evtimer_assign(&e->retry, base, eip_on_retry, e);
        *ret = e;
        return 0;
}

struct eip *eip_free(struct eip *e)
{
        if (!e)
                return NULL;
        (void)evtimer_del(&e->retry);
        e->call = ec2_call_cancel(e->call);
        e->ec2 = ec2_free(e->ec2);
        free(e);
        return NULL;
}

/* The ec2 provider: the pool's backends are EC2 instances carrying the pool's tag ([ec2] tag), listed,
 * launched and terminated through the EC2 API client (ec2.c).
 *
 * list:      DescribeInstances filtered by the tag and the live states; each instance's backend address
 *            is its PrivateIpAddress with [pool] port. An address outside [pool] networks is never
 *            reported (has_addr = false), so it is never contacted; that is logged once per instance.
 *            An instance whose lbd:role tag names another role (the web host `lbctl provision` launched
 *            with the pool's tag) is not one of the pool's: it is left out of the list, so it is never
 *            counted, probed or terminated; that too is logged once per instance.
 * launch:    RunInstances from [ec2] image or launch_template, with the instance type, the subnet the
 *            reconciler chose among [ec2] subnets (its zones, p->zones; [ec2] subnet is a list of one), security
 *            groups, key pair, instance profile, the pool's tag and a Name tag, the caller's ClientToken,
 *            and the user data: the [ec2] user_data file with every "{{upstream}}" replaced by [ec2]
 *            upstream, "{{upstream_ca}}" by the text of [ec2] upstream_ca and "{{upstream_name}}" by [ec2]
 *            upstream_name, so each backend boots into relay mode towards the web host by itself, over
 *            TLS that verifies the web host when the CA is set; "{{relay_tls_cert}}" and "{{relay_tls_key}}"
 *            by the texts of [ec2] relay_tls_cert and relay_tls_key, so the relay listens with TLS for
 *            lbd's [tls] backend = on. The rendered user data (holding that key) is wiped when freed.
 * terminate: TerminateInstances.
 *
 * Launch settings have an identity: a hash of everything an instance is launched with (image or launch
 * template, instance type, the rendered user data, security groups, key pair, instance profile, subnets
 * and the pool's tag), tagged on every instance as EC2_LAUNCH_HASH_TAG and read back by every list. The
 * reconciler compares it with p->launch_hash to refresh instances launched with other settings.
 *
 * The previous settings: when a reload changes them, the ones before stay in memory (a copy of the
 * configuration and the rendered user data, p->previous_hash), so that a refresh that fails can relaunch
 * instances as they were (p->launch_previous). A reload back to them swaps the two. With [ec2]
 * previous_settings they are also saved to that file (written to a temporary one, then renamed), and read
 * back at start: the file is untrusted, so it counts only when every line parses within its limits and
 * the settings it holds hash to the hash it names (and not to the configured one).
 *
 * Clients and reloads: every set_config() makes a new ec2 client, so a reload picks up rotated
 * credentials, a new endpoint or region, and re-reads the user data template. Calls already running keep
 * their old client (struct provider_ec2_client, counted by the calls that use it) and still report; a
 * retired client is freed from the loop once its last call is done. free() cancels everything without
 * calling back. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aws/ec2.h"
#include "common/list.h"
#include "common/log.h"
#include "common/readfile.h"
#include "common/macro.h"
#include "common/netaddr.h"
#include "common/readfile.h"
#include "common/template.h"
#include "lbd/config.h"
#include "lbd/provider.h"

#define PROVIDER_EC2_WARNED_MAX 64 /* instances remembered as already warned about */
#define PROVIDER_EC2_PREVIOUS_HEAD_MAX 16384 /* bytes of the previous_settings file before the user data */
#define PROVIDER_EC2_NAME_MAX   300
#define PROVIDER_EC2_PEM_MAX    8192 /* [ec2] upstream_ca, relay_tls_cert, relay_tls_key: PEM files */

struct provider_ec2_client {
        struct ec2 *ec2;
        unsigned calls; /* calls running on it */
        struct provider_ec2_client *next;
};

enum provider_ec2_kind {
        PROVIDER_EC2_LIST,
        PROVIDER_EC2_LAUNCH,
        PROVIDER_EC2_TERMINATE,
};

struct provider_ec2_call {
        struct provider *provider;
        DLIST_FIELDS(struct provider_ec2_call, calls);
        struct provider_ec2_client *client;
        struct ec2_call *call;
        enum provider_ec2_kind kind;
        union {
                provider_list_cb list;
                provider_launch_cb launch;
                provider_terminate_cb terminate;
        } cb;
        void *userdata;
};

struct provider_ec2_data {
        struct provider_ec2_client *current;
        struct provider_ec2_client *retired;
        struct event *gc; /* frees idle retired clients */
        DLIST_HEAD(struct provider_ec2_call, calls);
        char *user_data; /* rendered template */
        size_t user_data_len;
        /* The launch settings before the last change (p->previous_hash), or NULL */
        struct config *previous;
        char *previous_user_data;
        size_t previous_user_data_len;
        char warned[PROVIDER_EC2_WARNED_MAX][EC2_ID_MAX];
        size_t warned_next;
};

static struct provider_ec2_client *provider_ec2_client_free(struct provider_ec2_client *cl)
{
        if (cl) {
                ec2_free(cl->ec2);
                free(cl);
        }
        return NULL;
}

static void provider_ec2_gc_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct provider_ec2_data *d = userdata;
        struct provider_ec2_client **p = &d->retired;

        while (*p) {
                struct provider_ec2_client *cl = *p;

                if (cl->calls == 0) {
                        *p = cl->next;
                        provider_ec2_client_free(cl);
                } else {
                        p = &cl->next;
                }
        }
}

/* Maps EC2's state names. */
static enum instance_state provider_ec2_state(const char *s)
{
        static const struct {
                const char *name;
                enum instance_state state;
        } states[] = {
                {"pending", INSTANCE_PENDING},
                {"running", INSTANCE_RUNNING},
                {"stopping", INSTANCE_STOPPING},
                {"stopped", INSTANCE_STOPPED},
                {"shutting-down", INSTANCE_SHUTTING_DOWN},
                {"terminated", INSTANCE_TERMINATED},
        };

        for (size_t i = 0; i < ELEMENTSOF(states); i++)
                if (strcmp(s, states[i].name) == 0)
                        return states[i].state;
        return INSTANCE_UNKNOWN;
}

/* True the first time it is asked about instance <e> (of the last PROVIDER_EC2_WARNED_MAX asked about):
 * what is wrong with an instance is logged once, not at every poll. */
static bool provider_ec2_first_warning(struct provider_ec2_data *d, const struct ec2_instance *e)
{
        for (size_t i = 0; i < PROVIDER_EC2_WARNED_MAX; i++)
                if (strcmp(d->warned[i], e->id) == 0)
                        return false;
        memcpy(d->warned[d->warned_next], e->id, sizeof(e->id));
        d->warned_next = (d->warned_next + 1) % PROVIDER_EC2_WARNED_MAX;
        return true;
}

/* Feeds <s> (NULL as "") into <md> with its length first, so that no two lists of strings hash alike. */
static int provider_ec2_hash_add(EVP_MD_CTX *md, const void *s, size_t len)
{
        uint64_t n = len;

        if (EVP_DigestUpdate(md, &n, sizeof(n)) != 1 || (len > 0 && EVP_DigestUpdate(md, s, len) != 1))
                return -EIO;
        return 0;
}

static int provider_ec2_hash_str(EVP_MD_CTX *md, const char *s)
{
        return provider_ec2_hash_add(md, s, s ? strlen(s) : 0);
}

/* The hash of the launch settings of <c> with the rendered <user_data>, as INSTANCE_LAUNCH_HASH_MAX - 1
 * hex digits (the first bytes of a SHA-256) into <ret>. Returns 0 or -ENOMEM/-EIO. */
int provider_ec2_launch_hash(const struct config *c, const char *user_data, size_t user_data_len,
                             char ret[static INSTANCE_LAUNCH_HASH_MAX])
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        int r = 0;

        if (!md)
                return -ENOMEM;
        if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
                r = -EIO;
        if (r >= 0)
                r = provider_ec2_hash_str(md, "lbd-launch-1"); /* the layout of what follows */
        if (r >= 0)
                r = provider_ec2_hash_str(md, c->ec2_image);
        if (r >= 0)
                r = provider_ec2_hash_str(md, c->ec2_launch_template);
        if (r >= 0)
                r = provider_ec2_hash_str(md, c->ec2_instance_type);
        if (r >= 0)
                r = provider_ec2_hash_add(md, user_data, user_data ? user_data_len : 0);
        if (r >= 0) {
                uint64_t n = MIN(c->n_ec2_security_groups, (size_t)CONFIG_MAX_SECURITY_GROUPS);

                r = provider_ec2_hash_add(md, &n, sizeof(n));
        }
        for (size_t i = 0; i < c->n_ec2_security_groups && i < CONFIG_MAX_SECURITY_GROUPS && r >= 0; i++)
                r = provider_ec2_hash_str(md, c->ec2_security_groups[i]);
        if (r >= 0)
                r = provider_ec2_hash_str(md, c->ec2_key_name);
        if (r >= 0)
                r = provider_ec2_hash_str(md, c->ec2_instance_profile);
        /* The subnets: "subnet = a" and "subnets = a" are the same settings. */
        if (r >= 0 && c->n_ec2_subnets > 1) {
                uint64_t n = MIN(c->n_ec2_subnets, (size_t)CONFIG_MAX_SUBNETS);

                r = provider_ec2_hash_str(md, "subnets");
                if (r >= 0)
                        r = provider_ec2_hash_add(md, &n, sizeof(n));
                for (size_t i = 0; i < n && r >= 0; i++)
                        r = provider_ec2_hash_str(md, c->ec2_subnets[i]);
        } else if (r >= 0)
                r = provider_ec2_hash_str(md, c->n_ec2_subnets == 1 ? c->ec2_subnets[0] : c->ec2_subnet);
        if (r >= 0)
                r = provider_ec2_hash_str(md, c->ec2_tag_key);
        if (r >= 0)
                r = provider_ec2_hash_str(md, c->ec2_tag_value);
        if (r >= 0 && EVP_DigestFinal_ex(md, digest, &len) != 1)
                r = -EIO;
        EVP_MD_CTX_free(md);
        if (r < 0)
                return r;
        for (size_t i = 0; i < (INSTANCE_LAUNCH_HASH_MAX - 1) / 2 && i < len; i++)
                (void)snprintf(ret + 2 * i, 3, "%02x", digest[i]);
        return 0;
}

/* Converts what ec2.c reports into the provider's instances, leaving out those of another role. Returns a
 * new array and its length in <ret_n>, or NULL. */
static struct instance *provider_ec2_convert(struct provider *p, const struct ec2_instance *v, size_t n,
                                             size_t *ret_n)
{
        struct provider_ec2_data *d = p->data;
        const struct config *c = p->config;
        struct instance *out = calloc(MAX(n, (size_t)1), sizeof(*out));
        size_t m = 0;

        if (!out)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                struct instance *inst;
                struct netaddr a;

                if (v[i].role[0] && strcmp(v[i].role, "backend") != 0) {
                        if (provider_ec2_first_warning(d, &v[i]))
                                log_info("EC2 instance %s carries the pool's tag with %s=%s: not a backend, "
                                         "never counted, contacted or terminated",
                                         v[i].id, EC2_ROLE_TAG, v[i].role);
                        continue;
                }
                inst = &out[m++];
                memcpy(inst->id, v[i].id, MIN(sizeof(inst->id), sizeof(v[i].id)));
                inst->id[sizeof(inst->id) - 1] = 0;
                inst->state = provider_ec2_state(v[i].state);
                inst->launched_usec = v[i].launch_usec;
                memcpy(inst->zone, v[i].zone, MIN(sizeof(inst->zone), sizeof(v[i].zone)));
                inst->zone[sizeof(inst->zone) - 1] = 0;
                /* a longer hash than lbd writes is some other one: it reads as none */
                if (strlen(v[i].launch_hash) < sizeof(inst->launch_hash))
                        memcpy(inst->launch_hash, v[i].launch_hash, strlen(v[i].launch_hash) + 1);
                _Static_assert(sizeof(inst->subnet) >= sizeof(v[i].subnet_id), "a subnet id fits");
                memcpy(inst->subnet, v[i].subnet_id, sizeof(v[i].subnet_id));
                if (!v[i].private_ip[0] || netaddr_parse(v[i].private_ip, c->port, false, &a) < 0)
                        continue;
                if (!config_in_networks(c, &a)) {
                        if (provider_ec2_first_warning(d, &v[i]))
                                log_warning("EC2 instance %s has the address %s, outside [pool] networks: it "
                                            "is not used as a backend and never contacted",
                                            v[i].id, v[i].private_ip);
                        continue;
                }
                netaddr_set_port(&a, c->port);
                inst->addr = a;
                inst->has_addr = true;
        }
        *ret_n = m;
        return out;
}

static const char *provider_ec2_kind_name(enum provider_ec2_kind k)
{
        switch (k) {
        case PROVIDER_EC2_LIST:
                return "listing the pool's instances";
        case PROVIDER_EC2_LAUNCH:
                return "launching instances";
        case PROVIDER_EC2_TERMINATE:
        default:
                return "terminating instances";
        }
}

/* Logs a failed call once, with what the API said. */
static void provider_ec2_log_failure(enum provider_ec2_kind kind, int r, const char *error)
{
        if (r == -EACCES)
                log_error("EC2 error while %s: %s (check the AWS access key and secret key)",
                          provider_ec2_kind_name(kind), error);
        else if (r == -EPERM)
                log_error("EC2 error while %s: %s (the credentials lack a permission)",
                          provider_ec2_kind_name(kind), error);
        else if (r == -EAGAIN)
                log_warning("EC2 API unavailable while %s: %s", provider_ec2_kind_name(kind), error);
        else if (r == -ENOSPC)
                log_warning("EC2 has no capacity while %s: %s", provider_ec2_kind_name(kind), error);
        else
                log_error_errno(r, "EC2 error while %s: %s", provider_ec2_kind_name(kind),
                                error && *error ? error : "%m");
}

/* Takes <pc> out of the provider's books before its callback runs (which may free the provider). */
static void provider_ec2_call_detach(struct provider_ec2_call *pc)
{
        struct provider_ec2_data *d = pc->provider->data;

        DLIST_REMOVE(calls, d->calls, pc);
        pc->client->calls--;
        if (pc->client != d->current && pc->client->calls == 0)
                event_active(d->gc, EV_TIMEOUT, 0);
}

static void provider_ec2_instances_done(int r, const char *error, const struct ec2_instance *v, size_t n,
                                        void *userdata)
{
        struct provider_ec2_call *pc = userdata;
        struct provider *p = pc->provider;
        _cleanup_free_ struct instance *instances = NULL;
        size_t m = 0;

        if (r >= 0) {
                instances = provider_ec2_convert(p, v, n, &m);
                if (!instances)
                        r = -ENOMEM;
        }
        if (r < 0) {
                provider_ec2_log_failure(pc->kind, r, error);
                m = 0;
        } else if (pc->kind == PROVIDER_EC2_LAUNCH) {
                for (size_t i = 0; i < n; i++)
                        log_info("EC2 instance %s launched (%s, address %s)", v[i].id, v[i].state,
                                 v[i].private_ip[0] ? v[i].private_ip : "none yet");
        }
        provider_ec2_call_detach(pc);
        if (pc->kind == PROVIDER_EC2_LIST)
                pc->cb.list(p, r, instances, m, pc->userdata);
        else
                pc->cb.launch(p, r, instances, m, pc->userdata);
        free(pc);
}

static void provider_ec2_terminate_done(int r, const char *error, void *userdata)
{
        struct provider_ec2_call *pc = userdata;
        struct provider *p = pc->provider;

        if (r < 0)
                provider_ec2_log_failure(pc->kind, r, error);
        provider_ec2_call_detach(pc);
        pc->cb.terminate(p, r, pc->userdata);
        free(pc);
}

static void provider_ec2_status(struct provider *p, struct provider_status *ret)
{
        struct provider_ec2_data *d = p->data;
        struct ec2_status st;

        _Static_assert(EC2_ERROR_MAX <= PROVIDER_ERROR_MAX, "an EC2 error fits a provider's");
        if (!d || !d->current)
                return;
        ec2_get_status(d->current->ec2, &st);
        ret->failures = st.failures;
        ret->failing_since_usec = st.failing_since_usec;
        (void)snprintf(ret->error, sizeof(ret->error), "%s", st.error);
}

static struct provider_ec2_call *provider_ec2_call_new(struct provider *p, enum provider_ec2_kind kind,
                                                       void *userdata)
{
        struct provider_ec2_data *d = p->data;
        struct provider_ec2_call *pc = calloc(1, sizeof(*pc));

        if (!pc)
                return NULL;
        pc->provider = p;
        pc->kind = kind;
        pc->userdata = userdata;
        pc->client = d->current;
        return pc;
}

/* Records <pc> once its ec2 call started (r >= 0), or frees it. Returns <r>. */
static int provider_ec2_call_started(struct provider *p, struct provider_ec2_call *pc, int r)
{
        struct provider_ec2_data *d = p->data;

        if (r < 0) {
                free(pc);
                return r;
        }
        pc->client->calls++;
        DLIST_PREPEND(calls, d->calls, pc);
        return 0;
}

static int provider_ec2_list(struct provider *p, provider_list_cb cb, void *userdata)
{
        const struct config *c = p->config;
        struct provider_ec2_call *pc = provider_ec2_call_new(p, PROVIDER_EC2_LIST, userdata);
        int r;

        if (!pc)
                return -ENOMEM;
        pc->cb.list = cb;
        r = ec2_describe_instances(pc->client->ec2, c->ec2_tag_key, c->ec2_tag_value,
                                   provider_ec2_instances_done, pc, &pc->call);
        return provider_ec2_call_started(p, pc, r);
}

static int provider_ec2_launch(struct provider *p, unsigned count, const char *zone, const char *client_token,
                               provider_launch_cb cb, void *userdata)
{
        struct provider_ec2_data *d = p->data;
        bool previous = p->launch_previous && d->previous;
        const struct config *c = previous ? d->previous : p->config;
        const char *groups[CONFIG_MAX_NETWORKS];
        char name[PROVIDER_EC2_NAME_MAX];
        struct provider_ec2_call *pc;
        struct ec2_launch l;
        int r;

        for (size_t i = 0; i < c->n_ec2_security_groups && i < ELEMENTSOF(groups); i++)
                groups[i] = c->ec2_security_groups[i];
        (void)snprintf(name, sizeof(name), "lbd-%s", c->ec2_tag_value);
        l = (struct ec2_launch){
                .image = c->ec2_image,
                .launch_template = c->ec2_launch_template,
                .instance_type = c->ec2_instance_type,
                .subnet = zone ? zone : p->n_zones > 0 ? p->zones[0] : NULL,
                .security_groups = groups,
                .n_security_groups = MIN(c->n_ec2_security_groups, ELEMENTSOF(groups)),
                .key_name = c->ec2_key_name,
                .instance_profile = c->ec2_instance_profile,
                .user_data = previous ? d->previous_user_data : d->user_data,
                .user_data_len = previous ? d->previous_user_data_len : d->user_data_len,
                .tag_key = c->ec2_tag_key,
                .tag_value = c->ec2_tag_value,
                .name = name,
                .launch_hash = previous ? p->previous_hash : p->launch_hash,
                .client_token = client_token,
                .epoch = p->epoch,
                .count = count,
        };

        pc = provider_ec2_call_new(p, PROVIDER_EC2_LAUNCH, userdata);
        if (!pc)
                return -ENOMEM;
        pc->cb.launch = cb;
        r = ec2_run_instances(pc->client->ec2, &l, provider_ec2_instances_done, pc, &pc->call);
        return provider_ec2_call_started(p, pc, r);
}

static int provider_ec2_terminate(struct provider *p, const char *const *ids, size_t n,
                                  provider_terminate_cb cb, void *userdata)
{
        struct provider_ec2_call *pc = provider_ec2_call_new(p, PROVIDER_EC2_TERMINATE, userdata);
        int r;

        if (!pc)
                return -ENOMEM;
        pc->cb.terminate = cb;
        r = ec2_terminate_instances(pc->client->ec2, ids, n, provider_ec2_terminate_done, pc, &pc->call);
        return provider_ec2_call_started(p, pc, r);
}

/* The PEM file <path> of [ec2] <key> as text for the user data, which puts it between single quotes in a
 * shell script: PEM only (base64, blanks, dashes and "BEGIN ..." lines), holding a certificate OpenSSL
 * reads (or, with <want_key>, a private key, returned in <*ret_key> when not NULL). Returns 0 with a new
 * string, or -errno (logged, never with the file's content). */
static int provider_ec2_read_pem(const char *key, const char *path, bool want_key, X509 **ret_x509,
                                 EVP_PKEY **ret_key, char **ret)
{
        _cleanup_free_ char *pem = NULL;
        size_t len = 0;
        EVP_PKEY *pkey = NULL;
        X509 *x = NULL;
        BIO *bio;
        int r;

        r = readfile_bounded(path, PROVIDER_EC2_PEM_MAX, 0, &pem, &len);
        if (r < 0)
                return log_error_errno(r, "Failed to read [ec2] %s %s (a PEM file of at most %d bytes): %m", key,
                                       path, PROVIDER_EC2_PEM_MAX);
        for (size_t i = 0; i < len; i++)
                if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \n\r-", pem[i]) ||
                    pem[i] == 0) {
                        OPENSSL_cleanse(pem, len);
                        return log_error_errno(EINVAL, "[ec2] %s %s: not a PEM %s file", key, path,
                                               want_key ? "private key" : "certificate");
                }
        bio = BIO_new_mem_buf(pem, (int)len);
        if (bio) {
                if (want_key)
                        pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
                else
                        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        }
        BIO_free(bio);
        ERR_clear_error();
        if (!x && !pkey) {
                OPENSSL_cleanse(pem, len);
                return log_error_errno(EINVAL, "[ec2] %s %s: no PEM %s in it", key, path,
                                       want_key ? "private key" : "certificate");
        }
        if (ret_x509)
                *ret_x509 = x;
        else
                X509_free(x);
        if (ret_key)
                *ret_key = pkey;
        else
                EVP_PKEY_free(pkey);
        *ret = TAKE_PTR(pem);
        return 0;
}

/* Frees a string that may hold a private key, wiped first. */
static void provider_ec2_free_secret(char *s)
{
        if (s)
                OPENSSL_cleanse(s, strlen(s));
        free(s);
}

static void provider_ec2_free_secretp(char **s)
{
        provider_ec2_free_secret(*s);
}

/* The relays' certificate and key ([ec2] relay_tls_cert and relay_tls_key) as text, checked to be a pair.
 * Returns 0 or -errno (logged). */
static int provider_ec2_read_relay_tls(const struct config *c, char **ret_cert, char **ret_key)
{
        _cleanup_free_ char *cert = NULL;
        char *key = NULL;
        X509 *x = NULL;
        EVP_PKEY *pkey = NULL;
        bool match;
        int r;

        r = provider_ec2_read_pem("relay_tls_cert", c->ec2_relay_tls_cert, false, &x, NULL, &cert);
        if (r < 0)
                return r;
        r = provider_ec2_read_pem("relay_tls_key", c->ec2_relay_tls_key, true, NULL, &pkey, &key);
        if (r < 0) {
                X509_free(x);
                return r;
        }
        match = X509_check_private_key(x, pkey) == 1;
        ERR_clear_error();
        X509_free(x);
        EVP_PKEY_free(pkey);
        if (!match) {
                provider_ec2_free_secret(key);
                return log_error_errno(EINVAL, "[ec2] relay_tls_key %s is not the key of relay_tls_cert %s",
                                       c->ec2_relay_tls_key, c->ec2_relay_tls_cert);
        }
        *ret_cert = TAKE_PTR(cert);
        *ret_key = key;
        return 0;
}

/* Reads the user data template and fills in its placeholders: {{upstream}} ([ec2] upstream, required when
 * used), {{upstream_ca}} (the text of [ec2] upstream_ca; "" for plain HTTP), {{upstream_name}},
 * {{relay_tls_cert}} and {{relay_tls_key}} (the texts of [ec2] relay_tls_cert and relay_tls_key; "" for a
 * plain listener). Returns 0 with a new buffer (NULL and 0 when no template is configured), or -errno
 * (logged). The buffer may hold a private key: the caller wipes it before freeing it. */
static int provider_ec2_render_user_data(const struct config *c, char **ret, size_t *ret_len)
{
        _cleanup_free_ char *tmpl = NULL, *ca = NULL, *relay_cert = NULL;
        char *relay_key = NULL;
        char upstream[NETADDR_STRLEN] = "";
        size_t len = 0;
        int r;

        if (!c->ec2_user_data[0]) {
                *ret = NULL;
                *ret_len = 0;
                return 0;
        }
        r = readfile_bounded(c->ec2_user_data, EC2_USER_DATA_MAX, 0, &tmpl, &len);
        if (r == -EFBIG || r == -EINVAL)
                return log_error_errno(EFBIG, "[ec2] user_data %s: not a file of at most %d bytes",
                                       c->ec2_user_data, EC2_USER_DATA_MAX);
        if (r < 0)
                return log_error_errno(r, "Failed to read [ec2] user_data %s: %m", c->ec2_user_data);

        if (template_uses(tmpl, len, "{{upstream}}")) {
                if (!c->ec2_upstream_set)
                        return log_error_errno(EINVAL,
                                               "[ec2] user_data %s uses {{upstream}}: set [ec2] upstream",
                                               c->ec2_user_data);
                if (netaddr_format(&c->ec2_upstream, upstream, sizeof(upstream)) < 0)
                        return log_error_errno(EINVAL, "[ec2] upstream can't be formatted");
        }
        if (c->ec2_upstream_ca[0]) {
                /* Without the placeholder the relays would speak plain HTTP while the configuration says
                 * they verify the web host: refused rather than silently unencrypted. */
                if (!template_uses(tmpl, len, "{{upstream_ca}}"))
                        return log_error_errno(EINVAL,
                                               "[ec2] upstream_ca is set but user_data %s has no {{upstream_ca}}",
                                               c->ec2_user_data);
                r = provider_ec2_read_pem("upstream_ca", c->ec2_upstream_ca, false, NULL, NULL, &ca);
                if (r < 0)
                        return r;
        }
        if (c->ec2_relay_tls_cert[0]) {
                /* Likewise: the relays would listen in the clear while lbd expects TLS from them. */
                if (!template_uses(tmpl, len, "{{relay_tls_cert}}") || !template_uses(tmpl, len, "{{relay_tls_key}}"))
                        return log_error_errno(EINVAL,
                                               "[ec2] relay_tls_cert is set but user_data %s lacks "
                                               "{{relay_tls_cert}} or {{relay_tls_key}}",
                                               c->ec2_user_data);
                r = provider_ec2_read_relay_tls(c, &relay_cert, &relay_key);
                if (r < 0)
                        return r;
        }

        {
                const struct template_var vars[] = {
                        {"{{upstream}}", upstream},
                        {"{{upstream_ca}}", ca ? ca : ""},
                        {"{{upstream_name}}", c->ec2_upstream_name},
                        {"{{relay_tls_cert}}", relay_cert ? relay_cert : ""},
                        {"{{relay_tls_key}}", relay_key ? relay_key : ""},
                };

                r = template_render(tmpl, len, vars, ELEMENTSOF(vars), EC2_USER_DATA_MAX, ret, ret_len);
        }
        provider_ec2_free_secret(relay_key);
        if (r == -EFBIG)
                return log_error_errno(EFBIG, "[ec2] user_data %s: more than %d bytes once rendered",
                                       c->ec2_user_data, EC2_USER_DATA_MAX);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        return 0;
}

static void provider_ec2_forget_previous(struct provider *p, struct provider_ec2_data *d)
{
        free(d->previous);
        d->previous = NULL;
        provider_ec2_free_secret(d->previous_user_data);
        d->previous_user_data = NULL;
        d->previous_user_data_len = 0;
        p->previous_hash[0] = '\0';
}

struct provider_ec2_saved {
        const struct provider *p;
        const struct provider_ec2_data *d;
};

/* The previous_settings file's content: "key=value" lines, then the user data's bytes. */
static int provider_ec2_previous_lines(FILE *f, void *userdata)
{
        const struct provider_ec2_saved *s = userdata;
        const struct config *c = s->d->previous;

        fprintf(f, "# lbd: the launch settings in force before the last change, which a refresh's rollback "
                   "relaunches\nhash=%s\nimage=%s\nlaunch_template=%s\ninstance_type=%s\nsubnet=%s\n",
                s->p->previous_hash, c->ec2_image, c->ec2_launch_template, c->ec2_instance_type, c->ec2_subnet);
        for (size_t i = 0; i < c->n_ec2_subnets && i < CONFIG_MAX_SUBNETS; i++)
                fprintf(f, "subnets=%s\n", c->ec2_subnets[i]);
        for (size_t i = 0; i < c->n_ec2_security_groups && i < CONFIG_MAX_SECURITY_GROUPS; i++)
                fprintf(f, "security_group=%s\n", c->ec2_security_groups[i]);
        fprintf(f, "key_name=%s\ninstance_profile=%s\ntag_key=%s\ntag_value=%s\nuser_data_bytes=%zu\n",
                c->ec2_key_name, c->ec2_instance_profile, c->ec2_tag_key, c->ec2_tag_value,
                s->d->previous_user_data ? s->d->previous_user_data_len : 0);
        if (s->d->previous_user_data && s->d->previous_user_data_len > 0)
                (void)fwrite(s->d->previous_user_data, 1, s->d->previous_user_data_len, f);
        return 0;
}

/* Copies <value> (<len> bytes) into the string field <dst> of <size>. Returns false when it does not fit. */
static bool provider_ec2_previous_field(char *dst, size_t size, const char *value, size_t len)
{
        if (len >= size || memchr(value, '\0', len))
                return false;
        memcpy(dst, value, len);
        dst[len] = '\0';
        return true;
}

/* Parses one "key=value" line of the previous_settings file into <c> (its launch fields) and <hash>.
 * Returns false on an unknown key or a value beyond its field. */
static bool provider_ec2_previous_line(struct config *c, char hash[static INSTANCE_LAUNCH_HASH_MAX],
                                       size_t *ret_user_data, const char *key, size_t key_len,
                                       const char *value, size_t len)
{
#define PREVIOUS_KEY(name) (key_len == sizeof(name) - 1 && memcmp(key, name, key_len) == 0)
        if (PREVIOUS_KEY("hash"))
                return len == INSTANCE_LAUNCH_HASH_MAX - 1 &&
                       provider_ec2_previous_field(hash, INSTANCE_LAUNCH_HASH_MAX, value, len);
        if (PREVIOUS_KEY("image"))
                return provider_ec2_previous_field(c->ec2_image, sizeof(c->ec2_image), value, len);
        if (PREVIOUS_KEY("launch_template"))
                return provider_ec2_previous_field(c->ec2_launch_template, sizeof(c->ec2_launch_template),
                                                   value, len);
        if (PREVIOUS_KEY("instance_type"))
                return provider_ec2_previous_field(c->ec2_instance_type, sizeof(c->ec2_instance_type), value, len);
        if (PREVIOUS_KEY("subnet"))
                return provider_ec2_previous_field(c->ec2_subnet, sizeof(c->ec2_subnet), value, len);
        if (PREVIOUS_KEY("subnets"))
                return c->n_ec2_subnets < CONFIG_MAX_SUBNETS &&
                       provider_ec2_previous_field(c->ec2_subnets[c->n_ec2_subnets++], sizeof(c->ec2_subnets[0]),
                                                   value, len);
        if (PREVIOUS_KEY("security_group"))
                return c->n_ec2_security_groups < CONFIG_MAX_SECURITY_GROUPS &&
                       provider_ec2_previous_field(c->ec2_security_groups[c->n_ec2_security_groups++],
                                                   sizeof(c->ec2_security_groups[0]), value, len);
        if (PREVIOUS_KEY("key_name"))
                return provider_ec2_previous_field(c->ec2_key_name, sizeof(c->ec2_key_name), value, len);
        if (PREVIOUS_KEY("instance_profile"))
                return provider_ec2_previous_field(c->ec2_instance_profile, sizeof(c->ec2_instance_profile),
                                                   value, len);
        if (PREVIOUS_KEY("tag_key"))
                return provider_ec2_previous_field(c->ec2_tag_key, sizeof(c->ec2_tag_key), value, len);
        if (PREVIOUS_KEY("tag_value"))
                return provider_ec2_previous_field(c->ec2_tag_value, sizeof(c->ec2_tag_value), value, len);
        if (PREVIOUS_KEY("user_data_bytes")) {
                size_t n = 0;

                if (len == 0 || len > 5)
                        return false;
                for (size_t i = 0; i < len; i++) {
                        if (value[i] < '0' || value[i] > '9')
                                return false;
                        n = n * 10 + (size_t)(value[i] - '0');
                }
                *ret_user_data = n;
                return n <= EC2_USER_DATA_MAX;
        }
        return false;
#undef PREVIOUS_KEY
}

/* Reads [ec2] previous_settings back at start (see the top): on success they become the previous
 * settings. A missing file is no error; anything else wrong is logged with the file and line, and the
 * file is not used. */
static void provider_ec2_load_previous(struct provider *p, struct provider_ec2_data *d, const struct config *cur)
{
        const char *path = cur->ec2_previous_settings;
        _cleanup_free_ char *buf = NULL;
        _cleanup_free_ struct config *c = NULL;
        char hash[INSTANCE_LAUNCH_HASH_MAX] = "", check[INSTANCE_LAUNCH_HASH_MAX];
        size_t len = 0, pos = 0, user_data = SIZE_MAX;
        unsigned line = 0;
        int r;

        r = readfile_bounded(path, PROVIDER_EC2_PREVIOUS_HEAD_MAX + EC2_USER_DATA_MAX, O_NOFOLLOW, &buf, &len);
        if (r == -ENOENT)
                return;
        if (r < 0) {
                log_warning_errno(r, "[ec2] previous_settings %s: %m (at most %d bytes); not used", path,
                                  PROVIDER_EC2_PREVIOUS_HEAD_MAX + EC2_USER_DATA_MAX);
                return;
        }
        c = malloc(sizeof(*c));
        if (!c) {
                log_warning("[ec2] previous_settings %s: out of memory; not used", path);
                return;
        }
        /* The launch fields start empty; the rest (region, endpoint, ...) is the configured one's. */
        *c = *cur;
        c->ec2_image[0] = c->ec2_launch_template[0] = c->ec2_instance_type[0] = c->ec2_subnet[0] = '\0';
        c->ec2_key_name[0] = c->ec2_instance_profile[0] = c->ec2_tag_key[0] = c->ec2_tag_value[0] = '\0';
        c->n_ec2_subnets = c->n_ec2_security_groups = 0;
        while (user_data == SIZE_MAX && pos < len) {
                const char *start = buf + pos, *nl = memchr(start, '\n', len - pos), *eq;
                size_t l;

                line++;
                if (!nl || pos > PROVIDER_EC2_PREVIOUS_HEAD_MAX) {
                        log_warning("[ec2] previous_settings %s:%u: the line does not end; not used", path, line);
                        return;
                }
                l = (size_t)(nl - start);
                pos += l + 1;
                if (l == 0 || start[0] == '#')
                        continue;
                eq = memchr(start, '=', l);
                if (!eq || !provider_ec2_previous_line(c, hash, &user_data, start, (size_t)(eq - start), eq + 1,
                                                       l - (size_t)(eq - start) - 1)) {
                        log_warning("[ec2] previous_settings %s:%u: key '%.*s' unknown or its value invalid; "
                                    "not used",
                                    path, line, eq ? (int)MIN((size_t)(eq - start), (size_t)64) : 0, start);
                        return;
                }
        }
        if (user_data == SIZE_MAX || !hash[0] || len - pos != user_data) {
                log_warning("[ec2] previous_settings %s: incomplete (hash, user_data_bytes and that many bytes at "
                            "the end); not used",
                            path);
                return;
        }
        if (provider_ec2_launch_hash(c, user_data > 0 ? buf + pos : NULL, user_data, check) < 0 ||
            strcmp(check, hash) != 0) {
                log_warning("[ec2] previous_settings %s: its settings do not hash to %s; not used", path, hash);
                return;
        }
        if (strcmp(hash, p->launch_hash) == 0)
                return; /* the configured ones: nothing before them */
        provider_ec2_forget_previous(p, d);
        if (user_data > 0) {
                d->previous_user_data = malloc(user_data + 1);
                if (!d->previous_user_data) {
                        log_warning("[ec2] previous_settings %s: out of memory; not used", path);
                        return;
                }
                memcpy(d->previous_user_data, buf + pos, user_data);
                d->previous_user_data[user_data] = '\0';
        }
        d->previous_user_data_len = user_data;
        d->previous = TAKE_PTR(c);
        memcpy(p->previous_hash, hash, sizeof(p->previous_hash));
        log_info("Launch settings before the last change: %s (from %s)", hash, path);
}

/* Keeps the settings in force (p->config, d->user_data, p->launch_hash) as the previous ones, before a
 * reload replaces them, and saves them when [ec2] previous_settings says where (<c>: the new
 * configuration). Returns 0 or -ENOMEM (then there are none). */
static int provider_ec2_keep_previous(struct provider *p, struct provider_ec2_data *d, const struct config *next)
{
        struct config *copy;
        char *user_data = NULL;

        copy = malloc(sizeof(*copy));
        if (d->user_data) {
                user_data = malloc(d->user_data_len + 1);
                if (user_data)
                        memcpy(user_data, d->user_data, d->user_data_len + 1);
        }
        if (!copy || (d->user_data && !user_data)) {
                free(copy);
                provider_ec2_free_secret(user_data);
                provider_ec2_forget_previous(p, d);
                return -ENOMEM;
        }
        *copy = *p->config; /* flat: no pointer inside */
        provider_ec2_forget_previous(p, d);
        d->previous = copy;
        d->previous_user_data = user_data;
        d->previous_user_data_len = d->user_data_len;
        memcpy(p->previous_hash, p->launch_hash, sizeof(p->previous_hash));
        if (next->ec2_previous_settings[0]) {
                struct provider_ec2_saved saved = {.p = p, .d = d};
                int r = provider_write_file(next->ec2_previous_settings, provider_ec2_previous_lines, &saved);

                if (r < 0)
                        log_warning_errno(r, "Failed to save the previous launch settings to %s (kept in memory "
                                             "only): %m",
                                          next->ec2_previous_settings);
        }
        return 0;
}

static int provider_ec2_set_config(struct provider *p, const struct config *c)
{
        struct provider_ec2_data *d = p->data;
        const struct ec2_settings s = {
                .region = c->ec2_region,
                .endpoint = c->ec2_endpoint,
                .credentials_file = c->ec2_credentials_file,
                .profile = c->ec2_profile,
                /* While the API fails, a try at least once per poll, so its recovery shows within one. */
                .backoff_cap_usec = c->poll_usec,
        };
        struct provider_ec2_client *cl;
        _cleanup_(provider_ec2_free_secretp) char *user_data = NULL;
        char launch_hash[INSTANCE_LAUNCH_HASH_MAX];
        size_t user_data_len = 0;
        bool first = false;
        int r;

        if (!c->ec2_tag_key[0] || (!c->ec2_image[0] && !c->ec2_launch_template[0]))
                return log_error_errno(EINVAL,
                                       "The ec2 provider needs [ec2] tag and an image or launch_template");
        r = provider_ec2_render_user_data(c, &user_data, &user_data_len);
        if (r < 0)
                return r;
        r = provider_ec2_launch_hash(c, user_data, user_data_len, launch_hash);
        if (r < 0)
                return log_error_errno(r, "Failed to hash the launch settings: %m");

        if (!d) {
                first = true;
                d = calloc(1, sizeof(*d));
                if (!d)
                        return log_error_errno(ENOMEM, "Out of memory");
                p->data = d;
                d->gc = event_new(p->base, -1, 0, provider_ec2_gc_cb, d);
                if (!d->gc)
                        return log_error_errno(ENOMEM, "Out of memory");
        }

        cl = calloc(1, sizeof(*cl));
        if (!cl)
                return log_error_errno(ENOMEM, "Out of memory");
        r = ec2_new(p->base, &s, &cl->ec2);
        if (r < 0) {
                free(cl);
                if (r == -EINVAL)
                        return log_error_errno(r, "Invalid EC2 settings: check [ec2] endpoint (or "
                                                  "AWS_ENDPOINT_URL_EC2 / AWS_ENDPOINT_URL) and [ec2] "
                                                  "credentials_file");
                return log_error_errno(r, "Failed to set up the EC2 client: %m");
        }

        /* The previous client finishes its running calls, then goes. */
        if (d->current) {
                d->current->next = d->retired;
                d->retired = d->current;
                event_active(d->gc, EV_TIMEOUT, 0);
        }
        d->current = cl;
        if (p->config && p->launch_hash[0] && strcmp(p->launch_hash, launch_hash) != 0) {
                /* The settings change: the ones in force become the previous ones. */
                r = provider_ec2_keep_previous(p, d, c);
                if (r < 0)
                        log_warning_errno(r, "Failed to keep the previous launch settings %s (a failed refresh "
                                             "then cannot relaunch them): %m",
                                          p->launch_hash);
        }
        provider_ec2_free_secret(d->user_data);
        d->user_data = TAKE_PTR(user_data);
        d->user_data_len = user_data_len;
        if (strcmp(p->launch_hash, launch_hash) != 0)
                log_info("Launch settings: %s%s%s", launch_hash, p->previous_hash[0] ? ", previously " : "",
                         p->previous_hash);
        memcpy(p->launch_hash, launch_hash, sizeof(launch_hash));
        if (first && c->ec2_previous_settings[0])
                provider_ec2_load_previous(p, d, c);
        _Static_assert(CONFIG_MAX_SUBNETS <= PROVIDER_MAX_ZONES, "every subnet is a zone");
        _Static_assert(sizeof(c->ec2_subnets[0]) <= sizeof(p->zones[0]), "a subnet id fits a zone");
        p->n_zones = 0;
        for (size_t i = 0; i < c->n_ec2_subnets && i < CONFIG_MAX_SUBNETS; i++)
                memcpy(p->zones[p->n_zones++], c->ec2_subnets[i], sizeof(c->ec2_subnets[i]));
        if (p->n_zones == 0 && c->ec2_subnet[0])
                memcpy(p->zones[p->n_zones++], c->ec2_subnet, sizeof(c->ec2_subnet));
        p->config = c;
        return 0;
}

static void provider_ec2_free(struct provider *p)
{
        struct provider_ec2_data *d = p->data;

        if (!d)
                return;
        while (d->calls) {
                struct provider_ec2_call *pc = d->calls;

                DLIST_REMOVE(calls, d->calls, pc);
                (void)ec2_call_cancel(pc->call);
                free(pc);
        }
        while (d->retired) {
                struct provider_ec2_client *cl = d->retired;

                d->retired = cl->next;
                provider_ec2_client_free(cl);
        }
        provider_ec2_client_free(d->current);
        if (d->gc)
                event_free(d->gc);
        provider_ec2_free_secret(d->user_data);
        provider_ec2_forget_previous(p, d);
        free(d);
        p->data = NULL;
}

const struct provider_ops provider_ec2_ops = {
        .name = "ec2",
        .managed = true,
        .list = provider_ec2_list,
        .launch = provider_ec2_launch,
        .terminate = provider_ec2_terminate,
        .set_config = provider_ec2_set_config,
        .status = provider_ec2_status,
        .free = provider_ec2_free,
};

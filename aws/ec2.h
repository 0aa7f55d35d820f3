/* A client for the EC2 Query API (version 2016-11-15): DescribeInstances, RunInstances and
 * TerminateInstances, signed with SigV4, sent through curlev.c on the event loop, answers parsed with
 * libxml2; and ec2_query(), any other action, whose answer the caller parses (with the ec2_xml_*()
 * helpers below, which read documents the same defensive way).
 *
 * Each call retries by itself what is worth retrying (throttling, 5xx, network errors and timeouts) with
 * capped exponential backoff and full jitter, logging each retry at warning level, and reports once to its
 * callback. The backoff carries over from one call to the next while the API keeps failing (struct
 * ec2_backoff). A refused signature or unknown key is never retried. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libxml/tree.h>

#include "common/macro.h"

#define EC2_API_VERSION         "2016-11-15"
#define EC2_ID_MAX              64 /* instance ids ("i-0123456789abcdef0") and the like */
#define EC2_STATE_MAX           32
#define EC2_ADDR_MAX            64
#define EC2_TIME_MAX            40
#define EC2_ZONE_MAX            32 /* availability zones ("us-east-1a", "us-west-2-lax-1a") */
#define EC2_ROLE_MAX            32
/* The tag that says what an instance of a pool is for: "web" for the web host `lbctl provision` launches
 * (it carries the pool's tag too, so a second run finds it); absent on the backends lbd launches. */
#define EC2_ROLE_TAG            "lbd:role"
#define EC2_ROLE_UNKNOWN        "?" /* a role tag whose value is too long or not text */
#define EC2_CODE_MAX            128
#define EC2_MESSAGE_MAX         512
#define EC2_ERROR_MAX           (EC2_CODE_MAX + EC2_MESSAGE_MAX + 64)
#define EC2_NEXT_TOKEN_MAX      4096
#define EC2_MAX_INSTANCES       1000 /* DescribeInstances results at most (all pages) */
#define EC2_MAX_PAGES           20
#define EC2_PAGE_SIZE           100
#define EC2_MAX_TERMINATE       100   /* ids per TerminateInstances */
#define EC2_MAX_LAUNCH          100   /* instances per RunInstances */
#define EC2_USER_DATA_MAX       16384 /* bytes before base64, EC2's own limit */
#define EC2_MAX_ATTEMPTS        5
#define EC2_BACKOFF_BASE_USEC   (200 * USEC_PER_MSEC)
#define EC2_BACKOFF_CAP_USEC    (20 * USEC_PER_SEC)
#define EC2_MAX_SECURITY_GROUPS 32
#define EC2_ACTION_MAX          64          /* "DescribeSecurityGroups" and the like, with the NUL */
#define EC2_QUERY_MAX_PARAMS    512         /* parameters per ec2_query() */
#define EC2_QUERY_NAME_MAX      127         /* bytes in a parameter's name */
#define EC2_QUERY_VALUE_MAX     (64 * 1024) /* bytes in a parameter's value (base64 user data fits) */
#define EC2_QUERY_MAX_RESPONSE  (4u * 1024 * 1024)
/* The tag that carries the hash of the settings an instance was launched with (ec2_launch's
 * launch_hash), read back by the parsers into ec2_instance's launch_hash */
#define EC2_LAUNCH_HASH_TAG     "lbd:launch-hash"
#define EC2_LAUNCH_HASH_MAX     65 /* hex digits, with the NUL */
/* The tag that carries the epoch of the leader that launched an instance (ec2_launch's epoch), with
 * several lbd hosts on one pool: a deposed leader's late launch is told apart by it */
#define EC2_EPOCH_TAG           "lbd:epoch"

struct event_base;
struct ec2;
struct ec2_call;

struct ec2_instance {
        char id[EC2_ID_MAX];
        char state[EC2_STATE_MAX];     /* "pending", "running", "stopping", "stopped", "shutting-down",
                                        * "terminated" */
        char private_ip[EC2_ADDR_MAX]; /* "" when it has none (yet) */
        char subnet_id[EC2_ID_MAX];
        char zone[EC2_ZONE_MAX];       /* placement's availability zone, "" when absent */
        char launch_time[EC2_TIME_MAX]; /* as EC2 wrote it */
        uint64_t launch_usec;           /* the same, wall clock; 0 when absent or unparsable */
        char role[EC2_ROLE_MAX];        /* its EC2_ROLE_TAG tag's value; "" without one */
        /* The EC2_LAUNCH_HASH_TAG tag's value: "" when absent, or when it is not 1..64 hex digits */
        char launch_hash[EC2_LAUNCH_HASH_MAX];
};

struct ec2_settings {
        const char *region;           /* NULL or "": AWS_REGION, AWS_DEFAULT_REGION, config file, IMDS */
        const char *endpoint;         /* NULL or "": AWS_ENDPOINT_URL_EC2, AWS_ENDPOINT_URL, else
                                       * https://ec2.<region>.amazonaws.com */
        const char *credentials_file; /* NULL or "": the SDK chain (awscred.h) */
        const char *profile;
        uint64_t backoff_cap_usec; /* the longest delay between attempts; 0: EC2_BACKOFF_CAP_USEC */
};

struct ec2_launch {
        const char *image;           /* ami-…, or NULL/"" with a launch template */
        const char *launch_template; /* lt-… id or a name; NULL or "" for none */
        const char *instance_type;   /* NULL or "": the template's */
        const char *subnet;
        const char *const *security_groups;
        size_t n_security_groups;
        const char *key_name;
        const char *instance_profile; /* a name, or an ARN ("arn:…") */
        const void *user_data;        /* raw bytes, base64-encoded here; at most EC2_USER_DATA_MAX */
        size_t user_data_len;
        const char *tag_key; /* the pool's tag, on every instance launched */
        const char *tag_value;
        const char *name;         /* Name tag, NULL or "" for none */
        const char *launch_hash;  /* EC2_LAUNCH_HASH_TAG's value, NULL or "" for none; hex digits only */
        const char *client_token; /* idempotency: at most 64 ASCII characters */
        uint64_t epoch;           /* EC2_EPOCH_TAG's value in decimal; 0 for no such tag */
        unsigned count;           /* MinCount = MaxCount */
};

/* <r> is 0 on success, or: -EAGAIN the API kept failing (throttling, 5xx, network, timeouts) through every
 * attempt; -ENOSPC no capacity where the launch asked for (InsufficientInstanceCapacity, Unsupported, ...:
 * never retried, another subnet may have it); -EACCES credentials missing or refused (AuthFailure, SignatureDoesNotMatch, …); -EPERM not
 * allowed (UnauthorizedOperation); -EINVAL the API refused the request; -EBADMSG an answer that doesn't
 * parse; -E2BIG more instances than EC2_MAX_INSTANCES; -ENOMEM. <error> describes the failure for a log
 * line ("" on success); it never holds a secret. Everything passed is valid during the call only. */
typedef void (*ec2_instances_cb)(int r, const char *error, const struct ec2_instance *instances, size_t n,
                                 void *userdata);
typedef void (*ec2_done_cb)(int r, const char *error, void *userdata);

/* One parameter of a query: "Filter.1.Name" = "vpc-id". */
struct ec2_param {
        const char *name;
        const char *value;
};

/* <r> as above. On success <xml> is the answer (<len> bytes, NUL-terminated, untrusted: parse it with
 * bounds). On failure <xml> is NULL and <code> the EC2 error code when the API refused the request
 * ("InvalidPermission.Duplicate"), "" otherwise (a network failure, no credentials, ...). */
typedef void (*ec2_query_cb)(int r, const char *error, const char *code, const char *xml, size_t len,
                             void *userdata);

/* Reads the credentials' static sources (see awscred.h). Returns 0, -EINVAL (a bad endpoint URL or
 * credentials file), -ENOMEM. */
int ec2_new(struct event_base *base, const struct ec2_settings *s, struct ec2 **ret);
/* Cancels every call (no callback runs) and frees <e>. NULL allowed. Returns NULL. */
struct ec2 *ec2_free(struct ec2 *e);

/* Lists the instances carrying the tag <tag_key>=<tag_value> in the states pending, running, stopping,
 * stopped and shutting-down, following NextToken through every page. */
int ec2_describe_instances(struct ec2 *e, const char *tag_key, const char *tag_value, ec2_instances_cb cb,
                           void *userdata, struct ec2_call **ret);
/* Launches <l->count> instances; the callback lists them. */
int ec2_run_instances(struct ec2 *e, const struct ec2_launch *l, ec2_instances_cb cb, void *userdata,
                      struct ec2_call **ret);
int ec2_terminate_instances(struct ec2 *e, const char *const *ids, size_t n, ec2_done_cb cb, void *userdata,
                            struct ec2_call **ret);

/* Calls <action> (letters only) with <n> parameters, sent in this order (names of letters, digits, '.',
 * '_' and '-', at most EC2_QUERY_NAME_MAX bytes; values without control characters, may be empty, at most
 * EC2_QUERY_VALUE_MAX bytes; "Action" and "Version" are added here; form-encoded with spaces as '+', as
 * the SDKs do). The answer may be at most <max_response> bytes (0: EC2_QUERY_MAX_RESPONSE, also the
 * largest allowed). Signing, credentials, retries and error classes are those of the calls above: a call
 * that is not idempotent by itself needs a ClientToken or a caller that treats a "Duplicate" error as
 * done. No pagination: the caller sends NextToken itself. The parameters are copied. */
int ec2_query(struct ec2 *e, const char *action, const struct ec2_param *params, size_t n,
              size_t max_response, ec2_query_cb cb, void *userdata, struct ec2_call **ret);

/* Each of the four returns 0, or -EINVAL (bad arguments), -E2BIG (too many ids or instances, user data
 * too large), -EBUSY (too many calls running), -ENOMEM; the callback runs exactly once, from the event
 * loop, unless the call is cancelled. <ret> (may be NULL) is valid until the callback runs. */

/* Stops a call; its callback won't run. NULL allowed. Returns NULL. */
struct ec2_call *ec2_call_cancel(struct ec2_call *c);

/* Calls made to the API since ec2_new() (every attempt and every page counts). */
uint64_t ec2_requests_total(const struct ec2 *e);

/* The parsers, exposed for tests. */

/* Parses a DescribeInstancesResponse or RunInstancesResponse of <len> bytes, appending the instances to
 * <*list> (<*n> of them, reallocated; at most EC2_MAX_INSTANCES in all), and writes its nextToken into
 * <next_token> ("" when none). Returns 0, -EBADMSG (not XML, not such a response, a field too long or
 * malformed), -E2BIG, -ENOMEM. On failure the list may have grown; the caller frees it either way. */
int ec2_parse_instances(const char *xml, size_t len, struct ec2_instance **list, size_t *n,
                        char next_token[static EC2_NEXT_TOKEN_MAX]);
/* Parses an error answer (<Response><Errors><Error><Code>…</Code><Message>…</Message>, or the same under
 * <ErrorResponse>). Returns 0 with the code (and the message, "" when absent), or -EBADMSG. */
int ec2_parse_error(const char *xml, size_t len, char code[static EC2_CODE_MAX],
                    char message[static EC2_MESSAGE_MAX]);

/* Reading answers with libxml2, for ec2_query()'s callers. */

/* Parses <len> bytes, refusing a document with a DTD (no entity can expand) and reaching nothing on the
 * network. Returns the document (free with xmlFreeDoc()) or NULL. */
xmlDoc *ec2_xml_read(const char *xml, size_t len);
/* True when <n> is an element named <name> (local name, any namespace). NULL allowed. */
bool ec2_xml_is(const xmlNode *n, const char *name);
/* The first child element of <parent> (NULL allowed) named <name>, or NULL. */
xmlNode *ec2_xml_child(const xmlNode *parent, const char *name);
/* Copies the text directly inside <n> (text and CDATA children only: entity references are not followed),
 * trimmed, into <buf> of <size> bytes. Returns 0, -E2BIG when it doesn't fit, -EBADMSG for control
 * characters. */
int ec2_xml_text(const xmlNode *n, char *buf, size_t size);
/* The text of <parent>'s child <name>, "" when there is no such child. */
int ec2_xml_child_text(const xmlNode *parent, const char *name, char *buf, size_t size);
/* True when <s> holds only ASCII letters, digits and characters of <allowed_punct>. */
bool ec2_chars_ok(const char *s, const char *allowed_punct);

/* What a failed answer means: returns the -errno a caller receives (-EAGAIN, -EACCES, -EPERM, -ENOSPC, -EINVAL) and
 * sets <ret_retry> when another attempt may succeed. <code> may be "" (no parsable error). */
int ec2_classify_error(long status, const char *code, bool *ret_retry);

/* The delay before retry number <attempt> (1 for the first retry): uniformly random in
 * [0, min(cap, base * 2^(attempt-1))] ("full jitter"), from <random> (any 64 random bits). */
uint64_t ec2_backoff_usec(unsigned attempt, uint64_t random);

/* The backoff one client carries from call to call while the API fails (times are now_usec()): every
 * attempt of any call comes no sooner than the delay drawn after the previous failure, ec2_backoff_usec()
 * of the count of failures in a row (so it keeps growing across calls, up to <cap_usec>); once a call has
 * used all EC2_MAX_ATTEMPTS, each later call makes a single attempt (the caller's own schedule, such as
 * the reconciler's poll, is the retry) until an attempt gets an answer from the API, which resets it. A
 * long outage thus costs one call per caller's interval, and the first call after it ends succeeds. */
struct ec2_backoff {
        uint64_t cap_usec;           /* 0: EC2_BACKOFF_CAP_USEC */
        unsigned failures;           /* attempts that failed in a row, over every call */
        uint64_t failing_since_usec; /* when the first of them failed, 0 when none */
        uint64_t not_before_usec;    /* no attempt before it */
};

/* The attempts a call that starts now may make. */
unsigned ec2_backoff_attempts(const struct ec2_backoff *b);
/* How long an attempt at <now> must wait. */
uint64_t ec2_backoff_wait(const struct ec2_backoff *b, uint64_t now);
/* Records an attempt that failed at <now> (throttling, 5xx, network, timeout); returns the delay before
 * the next attempt, drawn from <random>. */
uint64_t ec2_backoff_failed(struct ec2_backoff *b, uint64_t now, uint64_t random);
/* Records an answer from the API (success, or a refusal that retrying would not change). */
void ec2_backoff_answered(struct ec2_backoff *b);

/* What the client is going through, for status pages. */
struct ec2_status {
        unsigned failures;           /* attempts that failed in a row (the API is failing now when > 0) */
        uint64_t failing_since_usec; /* now_usec() of the first of them, 0 when none */
        const char *error;           /* the last failure, as in the callbacks' <error> ("" when none):
                                      * "AuthFailure: AWS was not able to …", "Failed to connect to …
                                      * (Connection refused)"; bounded (EC2_ERROR_MAX), no control
                                      * characters, never a secret; valid until the next call to ec2.c */
};

void ec2_get_status(const struct ec2 *e, struct ec2_status *ret);

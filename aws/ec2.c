/* The EC2 Query API client: builds the form-encoded requests, signs them (sigv4.c) with credentials from
 * awscred.c, sends them through curlev.c, parses the XML answers with libxml2, and retries what is worth
 * retrying.
 *
 * A struct ec2 owns one curlev (its HTTP connections are reused from call to call), one awscred, and the
 * list of running calls. A struct ec2_call is one API operation from the caller's point of view: it owns
 * its form body (the parameters, built once, so every retry and page sends the same request), its
 * transfer or retry timer, and for DescribeInstances the instances gathered across pages. Its life:
 *
 *   region known? -> credentials (awscred, maybe from IMDS) -> sign + POST -> answer
 *     200: parse; another page (NextToken) goes round again; otherwise report
 *     error: classify (ec2_classify_error()); retryable and attempts left: wait
 *            ec2_backoff_usec() and go round again; otherwise report
 *
 * Retries: throttling codes, HTTP 5xx, network errors and timeouts, and the metadata service failing to
 * hand out credentials; at most EC2_MAX_ATTEMPTS attempts per request, the delays capped exponential with
 * full jitter. Each retry is logged at warning level with the reason and the delay; the final failure is
 * reported to the callback with a description for the caller to log. Authentication failures are never
 * retried: a wrong key stays wrong. RunInstances carries the caller's ClientToken in every attempt, so a
 * retry after a lost answer never launches twice.
 *
 * ec2_query() is the same machinery for any other action: its call keeps the caller's action name and
 * hands the answer over unparsed (with the EC2 error code on failure), for the caller to read with the
 * exported ec2_xml_*() helpers; `lbctl provision` is built on it.
 *
 * Parsing is defensive: the document must not carry a DTD (no entity can expand), only the elements we
 * need are read, each into a fixed-size field (too long = the answer is rejected), and at most
 * EC2_MAX_INSTANCES instances are accepted over all pages. */
#include "aws/ec2.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "aws/awscred.h"
#include "aws/curlev.h"
#include "aws/sigv4.h"
#include "common/list.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/parse.h"

#define EC2_FORM_MAX     (256 * 1024)
#define EC2_URL_MAX      1024
#define EC2_HOST_MAX     300
#define EC2_MAX_CALLS    32
#define EC2_MAX_RESPONSE (4u * 1024 * 1024)
#define EC2_CONNECT_USEC (5 * USEC_PER_SEC)
#define EC2_TIMEOUT_USEC (20 * USEC_PER_SEC)
#define EC2_CONTENT_TYPE "application/x-www-form-urlencoded; charset=utf-8"

enum ec2_action {
        EC2_DESCRIBE,
        EC2_RUN,
        EC2_TERMINATE,
        EC2_QUERY, /* any action, the answer handed over as it came */
};

static const char *const ec2_action_names[] = {
        [EC2_DESCRIBE] = "DescribeInstances",
        [EC2_RUN] = "RunInstances",
        [EC2_TERMINATE] = "TerminateInstances",
        [EC2_QUERY] = "", /* the caller's */
};

struct ec2 {
        struct event_base *base;
        struct curlev *curl;
        struct awscred *cred;
        char endpoint_setting[EC2_URL_MAX]; /* explicit endpoint, or "" for the region's */
        char region[AWSCRED_REGION_MAX];
        char url[EC2_URL_MAX];   /* resolved once the region is known */
        char host[EC2_HOST_MAX]; /* the Host header, signed */
        char path[EC2_URL_MAX];
        bool endpoint_ready;
        DLIST_HEAD(struct ec2_call, calls);
        size_t n_calls;
        uint64_t requests;
        uint64_t rng;
        enum awscred_source logged_source; /* last credentials announced in the log */
        char logged_key[AWSCRED_MASK_LEN];
        struct ec2_backoff backoff;
        char last_error[EC2_ERROR_MAX]; /* the last failure, "" after a success */
};

struct ec2_call {
        struct ec2 *ec2;
        DLIST_FIELDS(struct ec2_call, calls);
        enum ec2_action action;
        char action_name[EC2_ACTION_MAX]; /* for the log lines */
        struct evbuffer *form;            /* Action=…&Version=…&params, without NextToken */
        unsigned attempt;                 /* attempts made for the current page */
        unsigned max_attempts;            /* ec2_backoff_attempts() when the call began */
        struct curlev_transfer *transfer;
        struct event *timer; /* the delay before a retry */
        ec2_instances_cb instances_cb;
        ec2_done_cb done_cb;
        ec2_query_cb query_cb;
        size_t max_response; /* EC2_QUERY: answer bytes accepted */
        void *userdata;
        struct ec2_instance *list; /* DescribeInstances: gathered over the pages */
        size_t n;
        unsigned pages;
        char next_token[EC2_NEXT_TOKEN_MAX];
        char error[EC2_ERROR_MAX];
        char code[EC2_CODE_MAX]; /* the API's error code of the last answer, "" when none */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(xmlDoc *, xmlFreeDoc)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct evbuffer *, evbuffer_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(CURLU *, curl_url_cleanup)

static void ec2_call_step(struct ec2_call *c);

/* ---------------------------------------------------------------------------------------------------- */
/* Errors and backoff */

static const char *const ec2_throttling_codes[] = {
        "RequestLimitExceeded",      "Throttling",
        "ThrottlingException",       "RequestThrottled",
        "RequestThrottledException", "TooManyRequestsException",
        "EC2ThrottledException",     "SlowDown",
        "PriorRequestNotComplete",   "BandwidthLimitExceeded",
};

static bool ec2_is_throttling(const char *code)
{
        for (size_t i = 0; i < ELEMENTSOF(ec2_throttling_codes); i++)
                if (strcmp(code, ec2_throttling_codes[i]) == 0)
                        return true;
        return false;
}

int ec2_classify_error(long status, const char *code, bool *ret_retry)
{
        static const char *const transient[] = {
                "InternalError", "InternalFailure", "ServiceUnavailable",
                "Unavailable",   "RequestTimeout",  "RequestTimeoutException",
        };
        static const char *const auth[] = {
                "AuthFailure",
                "SignatureDoesNotMatch",
                "InvalidClientTokenId",
                "IncompleteSignature",
                "MissingAuthenticationToken",
                "InvalidAccessKeyId",
                "UnrecognizedClientException",
                "ExpiredToken",
                "ExpiredTokenException",
                "RequestExpired",
                "InvalidToken",
                "OptInRequired",
                "Blocked",
                "PendingVerification",
        };
        static const char *const denied[] = {
                "UnauthorizedOperation",
                "AccessDenied",
                "AccessDeniedException",
        };
        /* Capacity in one zone (subnet): another zone may have it, retrying this one soon won't. */
        static const char *const capacity[] = {
                "InsufficientInstanceCapacity",
                "InsufficientCapacity",
                "InsufficientHostCapacity",
                "InsufficientReservedInstanceCapacity",
                "InsufficientFreeAddressesInSubnet",
                "Unsupported",
        };

        if (!code)
                code = "";
        if (ec2_is_throttling(code)) {
                *ret_retry = true;
                return -EAGAIN;
        }
        for (size_t i = 0; i < ELEMENTSOF(auth); i++)
                if (strcmp(code, auth[i]) == 0) {
                        *ret_retry = false;
                        return -EACCES;
                }
        for (size_t i = 0; i < ELEMENTSOF(denied); i++)
                if (strcmp(code, denied[i]) == 0) {
                        *ret_retry = false;
                        return -EPERM;
                }
        for (size_t i = 0; i < ELEMENTSOF(capacity); i++)
                if (strcmp(code, capacity[i]) == 0) {
                        *ret_retry = false;
                        return -ENOSPC;
                }
        for (size_t i = 0; i < ELEMENTSOF(transient); i++)
                if (strcmp(code, transient[i]) == 0) {
                        *ret_retry = true;
                        return -EAGAIN;
                }
        if (status >= 500 || status == 429 || status == 408) {
                *ret_retry = true;
                return -EAGAIN;
        }
        if (status == 401 || status == 403) {
                *ret_retry = false;
                return -EACCES;
        }
        *ret_retry = false;
        return -EINVAL;
}

static uint64_t ec2_backoff_capped(unsigned attempt, uint64_t cap, uint64_t random)
{
        uint64_t ceiling = EC2_BACKOFF_BASE_USEC;

        for (unsigned i = 1; i < attempt && ceiling < cap; i++)
                ceiling *= 2;
        ceiling = MIN(ceiling, cap);
        return random % (ceiling + 1);
}

uint64_t ec2_backoff_usec(unsigned attempt, uint64_t random)
{
        return ec2_backoff_capped(attempt, EC2_BACKOFF_CAP_USEC, random);
}

unsigned ec2_backoff_attempts(const struct ec2_backoff *b)
{
        return b->failures >= EC2_MAX_ATTEMPTS ? 1 : EC2_MAX_ATTEMPTS;
}

uint64_t ec2_backoff_wait(const struct ec2_backoff *b, uint64_t now)
{
        return b->not_before_usec > now ? b->not_before_usec - now : 0;
}

uint64_t ec2_backoff_failed(struct ec2_backoff *b, uint64_t now, uint64_t random)
{
        uint64_t cap = b->cap_usec ? MIN(b->cap_usec, EC2_BACKOFF_CAP_USEC) : EC2_BACKOFF_CAP_USEC;
        uint64_t delay;

        if (b->failures == 0)
                b->failing_since_usec = now;
        if (b->failures < UINT_MAX)
                b->failures++;
        delay = ec2_backoff_capped(b->failures, cap, random);
        b->not_before_usec = now + delay;
        return delay;
}

void ec2_backoff_answered(struct ec2_backoff *b)
{
        b->failures = 0;
        b->failing_since_usec = 0;
        b->not_before_usec = 0;
}

void ec2_get_status(const struct ec2 *e, struct ec2_status *ret)
{
        *ret = (struct ec2_status){
                .failures = e->backoff.failures,
                .failing_since_usec = e->backoff.failing_since_usec,
                .error = e->last_error,
        };
}

static uint64_t ec2_random(struct ec2 *e)
{
        /* xorshift64*: jitter only needs to differ between processes and calls. */
        e->rng ^= e->rng >> 12;
        e->rng ^= e->rng << 25;
        e->rng ^= e->rng >> 27;
        return e->rng * UINT64_C(2685821657736338717);
}

/* ---------------------------------------------------------------------------------------------------- */
/* XML */

xmlDoc *ec2_xml_read(const char *xml, size_t len)
{
        xmlDoc *doc;

        if (!xml || len == 0 || len > INT_MAX)
                return NULL;
        /* No network, no DTD loading, no entity substitution (XML_PARSE_NOENT stays off), no messages on
         * stderr. */
        doc = xmlReadMemory(xml, (int)len, "ec2-response.xml", NULL,
                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
        if (!doc)
                return NULL;
        if (doc->intSubset || doc->extSubset || !xmlDocGetRootElement(doc)) {
                xmlFreeDoc(doc);
                return NULL;
        }
        return doc;
}

bool ec2_xml_is(const xmlNode *n, const char *name)
{
        return n && n->type == XML_ELEMENT_NODE && n->name && strcmp((const char *)n->name, name) == 0;
}

xmlNode *ec2_xml_child(const xmlNode *parent, const char *name)
{
        for (xmlNode *c = parent ? parent->children : NULL; c; c = c->next)
                if (ec2_xml_is(c, name))
                        return c;
        return NULL;
}

int ec2_xml_text(const xmlNode *n, char *buf, size_t size)
{
        size_t len = 0, start = 0;

        buf[0] = 0;
        for (const xmlNode *c = n ? n->children : NULL; c; c = c->next) {
                size_t m;

                if ((c->type != XML_TEXT_NODE && c->type != XML_CDATA_SECTION_NODE) || !c->content)
                        continue;
                m = strlen((const char *)c->content);
                if (m >= size - len)
                        return -E2BIG;
                memcpy(buf + len, c->content, m);
                len += m;
        }
        buf[len] = 0;
        for (size_t i = 0; i < len; i++)
                if ((unsigned char)buf[i] < 0x20 && buf[i] != '\t' && buf[i] != '\n' && buf[i] != '\r')
                        return -EBADMSG;
        while (len > 0 && strchr(" \t\r\n", buf[len - 1]))
                buf[--len] = 0;
        while (start < len && strchr(" \t\r\n", buf[start]))
                start++;
        if (start > 0)
                memmove(buf, buf + start, len - start + 1);
        return 0;
}

int ec2_xml_child_text(const xmlNode *parent, const char *name, char *buf, size_t size)
{
        const xmlNode *c = ec2_xml_child(parent, name);

        if (!c) {
                buf[0] = 0;
                return 0;
        }
        return ec2_xml_text(c, buf, size);
}

bool ec2_chars_ok(const char *s, const char *allowed_punct)
{
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;

                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                      strchr(allowed_punct, ch)))
                        return false;
        }
        return true;
}

static uint64_t ec2_parse_time(const char *s)
{
        struct tm tm = {0};
        const char *end;
        time_t t;

        if (!*s)
                return 0;
        end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!end)
                return 0;
        t = timegm(&tm);
        return t > 0 ? (uint64_t)t * USEC_PER_SEC : 0;
}

/* Reads the tags lbd gives meaning to from an instance's <tagSet>, in one pass; a tag, which anyone allowed
 * to tag can set, never makes the whole listing fail:
 *   - EC2_ROLE_TAG into <i>->role; a value that does not fit or is not text becomes EC2_ROLE_UNKNOWN;
 *   - EC2_LAUNCH_HASH_TAG into <i>->launch_hash; a value that is not 1..64 hex digits is not a hash lbd
 *     wrote: it reads as none, so the instance counts as launched with other settings. */
static void ec2_parse_tags(const xmlNode *tag_set, struct ec2_instance *i)
{
        i->role[0] = '\0';
        i->launch_hash[0] = '\0';
        for (const xmlNode *item = tag_set ? tag_set->children : NULL; item; item = item->next) {
                char key[MAX(sizeof(EC2_ROLE_TAG), sizeof(EC2_LAUNCH_HASH_TAG)) + 1];
                char value[EC2_LAUNCH_HASH_MAX];

                if (!ec2_xml_is(item, "item") || ec2_xml_child_text(item, "key", key, sizeof(key)) < 0)
                        continue;
                if (strcmp(key, EC2_ROLE_TAG) == 0) {
                        if (ec2_xml_child_text(item, "value", i->role, sizeof(i->role)) < 0)
                                memcpy(i->role, EC2_ROLE_UNKNOWN, sizeof(EC2_ROLE_UNKNOWN));
                } else if (strcmp(key, EC2_LAUNCH_HASH_TAG) == 0) {
                        if (ec2_xml_child_text(item, "value", value, sizeof(value)) >= 0 && value[0] &&
                            strspn(value, "0123456789abcdef") == strlen(value))
                                memcpy(i->launch_hash, value, sizeof(value));
                }
        }
}

/* Reads one <item> of an instancesSet. */
static int ec2_parse_instance(const xmlNode *item, struct ec2_instance *ret)
{
        struct ec2_instance i = {0};
        int r;

        r = ec2_xml_child_text(item, "instanceId", i.id, sizeof(i.id));
        if (r >= 0)
                r = ec2_xml_child_text(ec2_xml_child(item, "instanceState"), "name", i.state,
                                       sizeof(i.state));
        if (r >= 0)
                r = ec2_xml_child_text(item, "privateIpAddress", i.private_ip, sizeof(i.private_ip));
        if (r >= 0)
                r = ec2_xml_child_text(item, "subnetId", i.subnet_id, sizeof(i.subnet_id));
        if (r >= 0)
                r = ec2_xml_child_text(item, "launchTime", i.launch_time, sizeof(i.launch_time));
        if (r >= 0)
                r = ec2_xml_child_text(ec2_xml_child(item, "placement"), "availabilityZone", i.zone,
                                       sizeof(i.zone));
        if (r < 0)
                return -EBADMSG;
        if (!i.id[0] || !ec2_chars_ok(i.id, "-") || !ec2_chars_ok(i.state, "-") ||
            !ec2_chars_ok(i.private_ip, ".:") || !ec2_chars_ok(i.subnet_id, "-") ||
            !ec2_chars_ok(i.launch_time, "-:.+Z") || !ec2_chars_ok(i.zone, "-"))
                return -EBADMSG;
        if (!i.state[0])
                memcpy(i.state, "unknown", sizeof("unknown"));
        i.launch_usec = ec2_parse_time(i.launch_time);
        ec2_parse_tags(ec2_xml_child(item, "tagSet"), &i);
        *ret = i;
        return 0;
}

static int ec2_parse_instances_set(const xmlNode *set, struct ec2_instance **list, size_t *n)
{
        for (const xmlNode *item = set ? set->children : NULL; item; item = item->next) {
                struct ec2_instance *v;
                int r;

                if (!ec2_xml_is(item, "item"))
                        continue;
                if (*n >= EC2_MAX_INSTANCES)
                        return -E2BIG;
                v = reallocarray(*list, *n + 1, sizeof(**list));
                if (!v)
                        return -ENOMEM;
                *list = v;
                r = ec2_parse_instance(item, &v[*n]);
                if (r < 0)
                        return r;
                (*n)++;
        }
        return 0;
}

int ec2_parse_instances(const char *xml, size_t len, struct ec2_instance **list, size_t *n,
                        char next_token[static EC2_NEXT_TOKEN_MAX])
{
        _cleanup_(xmlFreeDocp) xmlDoc *doc = ec2_xml_read(xml, len);
        const xmlNode *root;
        char token[EC2_NEXT_TOKEN_MAX];
        int r;

        if (!doc)
                return -EBADMSG;
        root = xmlDocGetRootElement(doc);
        if (ec2_xml_is(root, "DescribeInstancesResponse")) {
                const xmlNode *set = ec2_xml_child(root, "reservationSet");

                if (!set)
                        return -EBADMSG;
                for (const xmlNode *res = set->children; res; res = res->next) {
                        if (!ec2_xml_is(res, "item"))
                                continue;
                        r = ec2_parse_instances_set(ec2_xml_child(res, "instancesSet"), list, n);
                        if (r < 0)
                                return r;
                }
        } else if (ec2_xml_is(root, "RunInstancesResponse")) {
                const xmlNode *set = ec2_xml_child(root, "instancesSet");

                if (!set)
                        return -EBADMSG;
                r = ec2_parse_instances_set(set, list, n);
                if (r < 0)
                        return r;
        } else {
                return -EBADMSG;
        }
        r = ec2_xml_child_text(root, "nextToken", token, sizeof(token));
        if (r < 0 || !ec2_chars_ok(token, "+/=-_.~:"))
                return -EBADMSG;
        memcpy(next_token, token, strlen(token) + 1);
        return 0;
}

/* Finds the first <Error> element at most a few levels down. */
static const xmlNode *ec2_find_error(const xmlNode *n, unsigned depth)
{
        for (; n; n = n->next) {
                const xmlNode *found;

                if (ec2_xml_is(n, "Error"))
                        return n;
                if (depth > 0 && n->type == XML_ELEMENT_NODE) {
                        found = ec2_find_error(n->children, depth - 1);
                        if (found)
                                return found;
                }
        }
        return NULL;
}

int ec2_parse_error(const char *xml, size_t len, char code[static EC2_CODE_MAX],
                    char message[static EC2_MESSAGE_MAX])
{
        _cleanup_(xmlFreeDocp) xmlDoc *doc = ec2_xml_read(xml, len);
        char c[EC2_CODE_MAX], m[EC2_MESSAGE_MAX];
        const xmlNode *error;

        if (!doc)
                return -EBADMSG;
        error = ec2_find_error(xmlDocGetRootElement(doc), 3);
        if (!error)
                return -EBADMSG;
        if (ec2_xml_child_text(error, "Code", c, sizeof(c)) < 0 || !c[0] || !ec2_chars_ok(c, ".-_:"))
                return -EBADMSG;
        if (ec2_xml_child_text(error, "Message", m, sizeof(m)) < 0) {
                /* A message too long to keep is no reason to lose the code. */
                m[0] = 0;
        }
        for (char *p = m; *p; p++)
                if ((unsigned char)*p < 0x20)
                        *p = ' ';
        memcpy(code, c, sizeof(c));
        memcpy(message, m, sizeof(m));
        return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Forms */

static int ec2_form_raw(struct evbuffer *f, const char *s, size_t n)
{
        if (n > EC2_FORM_MAX || evbuffer_get_length(f) > EC2_FORM_MAX - n)
                return -E2BIG;
        return evbuffer_add(f, s, n) < 0 ? -ENOMEM : 0;
}

/* Appends <s> form-encoded: everything but the unreserved characters percent-encoded, and spaces as '+'
 * (as the SDKs send them, and as moto_server re-encodes a form to check its signature; EC2 reads both). */
static int ec2_form_encode(struct evbuffer *f, const char *s)
{
        for (;;) {
                size_t n = strcspn(s, " ");
                int r = sigv4_uri_encode(f, s, n, false, EC2_FORM_MAX);

                if (r < 0)
                        return r;
                if (!s[n])
                        return 0;
                r = ec2_form_raw(f, "+", 1);
                if (r < 0)
                        return r;
                s += n + 1;
        }
}

/* Appends "&<key>=<value>" (or "<key>=<value>" first), both encoded. */
static int ec2_form_add(struct evbuffer *f, const char *key, const char *value)
{
        int r = 0;

        if (evbuffer_get_length(f) > 0)
                r = ec2_form_raw(f, "&", 1);
        if (r >= 0)
                r = ec2_form_encode(f, key);
        if (r >= 0)
                r = ec2_form_raw(f, "=", 1);
        if (r >= 0)
                r = ec2_form_encode(f, value);
        return r;
}

static int ec2_form_addf(struct evbuffer *f, const char *value, const char *key_format, ...) _printf_(3, 4);
static int ec2_form_addf(struct evbuffer *f, const char *value, const char *key_format, ...)
{
        char key[128];
        va_list ap;
        int n;

        va_start(ap, key_format);
        n = vsnprintf(key, sizeof(key), key_format, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= sizeof(key))
                return -E2BIG;
        return ec2_form_add(f, key, value);
}

static int ec2_form_new(const char *action, struct evbuffer **ret)
{
        struct evbuffer *f = evbuffer_new();
        int r;

        if (!f)
                return -ENOMEM;
        r = ec2_form_add(f, "Action", action);
        if (r >= 0)
                r = ec2_form_add(f, "Version", EC2_API_VERSION);
        if (r < 0) {
                evbuffer_free(f);
                return r;
        }
        *ret = f;
        return 0;
}

/* True for a non-empty parameter value without control characters, at most <max> bytes. */
static bool ec2_param_ok(const char *s, size_t max)
{
        return parse_text_ok(s, max, NULL);
}

static bool ec2_set(const char *s)
{
        return s && *s;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Calls */

static void ec2_call_free(struct ec2_call *c)
{
        if (!c)
                return;
        c->transfer = curlev_cancel(c->transfer);
        if (c->timer)
                event_free(c->timer);
        if (c->form)
                evbuffer_free(c->form);
        free(c->list);
        free(c);
}

static void ec2_call_unlink(struct ec2_call *c)
{
        struct ec2 *e = c->ec2;

        DLIST_REMOVE(calls, e->calls, c);
        e->n_calls--;
        awscred_cancel(e->cred, c);
}

/* Reports the outcome (<body> is the answer of a successful EC2_QUERY) and frees the call. The callback
 * may free the ec2. */
static void ec2_call_report(struct ec2_call *c, int r, const char *body, size_t body_len)
{
        struct ec2 *e = c->ec2;

        ec2_call_unlink(c);
        if (r >= 0)
                c->error[0] = c->code[0] = 0;
        /* A transient failure was kept by ec2_call_retry(), without this call's closing words. */
        if (r >= 0 || e->backoff.failures == 0)
                memcpy(e->last_error, c->error, sizeof(e->last_error));
        if (c->action == EC2_TERMINATE)
                c->done_cb(r, c->error, c->userdata);
        else if (c->action == EC2_QUERY)
                c->query_cb(r, c->error, c->code, r >= 0 ? body : NULL, r >= 0 ? body_len : 0, c->userdata);
        else
                c->instances_cb(r, c->error, r >= 0 ? c->list : NULL, r >= 0 ? c->n : 0, c->userdata);
        ec2_call_free(c);
}

static void ec2_call_finish(struct ec2_call *c, int r)
{
        ec2_call_report(c, r, NULL, 0);
}

static void ec2_retry_cb(evutil_socket_t fd, short what, void *userdata)
{
        ec2_call_step(userdata);
}

/* Retries after a transient failure described in c->error (<throttled>: the API said slow down), or
 * reports <final> when the attempts are used up. */
static void ec2_call_retry(struct ec2_call *c, bool throttled, int final)
{
        struct ec2 *e = c->ec2;
        uint64_t delay;
        struct timeval tv;

        delay = ec2_backoff_failed(&e->backoff, now_usec(), ec2_random(e));
        memcpy(e->last_error, c->error, sizeof(e->last_error));
        if (c->attempt >= c->max_attempts) {
                size_t n = strlen(c->error);

                if (c->max_attempts > 1)
                        (void)snprintf(c->error + n, sizeof(c->error) - n, " (gave up after %u attempts)",
                                       c->attempt);
                else
                        (void)snprintf(c->error + n, sizeof(c->error) - n,
                                       " (failing for %llu s, %u attempts in a row)",
                                       (unsigned long long)((now_usec() - e->backoff.failing_since_usec) /
                                                            USEC_PER_SEC),
                                       e->backoff.failures);
                ec2_call_finish(c, final);
                return;
        }
        log_warning("EC2 %s %s (%s); retrying in %.1f s (attempt %u/%u)", c->action_name,
                    throttled ? "throttled" : "failed", c->error, (double)delay / (double)USEC_PER_SEC,
                    c->attempt + 1, c->max_attempts);
        tv = timeval_from_usec(delay);
        if (evtimer_add(c->timer, &tv) < 0) {
                ec2_call_finish(c, -ENOMEM);
                return;
        }
}

static void ec2_http_done(int r, const struct curlev_response *resp, void *userdata)
{
        struct ec2_call *c = userdata;
        char code[EC2_CODE_MAX], message[EC2_MESSAGE_MAX];
        bool retry = false;

        c->transfer = NULL;
        c->code[0] = 0;
        if (r < 0) {
                (void)snprintf(c->error, sizeof(c->error), "%s", resp->error);
                if (r == -EFBIG || r == -EINVAL || r == -ENOMEM) {
                        ec2_call_finish(c, r == -EFBIG ? -EBADMSG : r);
                        return;
                }
                ec2_call_retry(c, false, -EAGAIN);
                return;
        }

        if (resp->status == 200) {
                ec2_backoff_answered(&c->ec2->backoff);
                if (c->action == EC2_TERMINATE) {
                        ec2_call_finish(c, 0);
                        return;
                }
                if (c->action == EC2_QUERY) {
                        ec2_call_report(c, 0, resp->body, resp->body_len);
                        return;
                }
                r = ec2_parse_instances(resp->body, resp->body_len, &c->list, &c->n, c->next_token);
                if (r < 0) {
                        (void)snprintf(c->error, sizeof(c->error), "%s",
                                       r == -E2BIG ? "more instances than lbd accepts"
                                                   : "unexpected answer from the API");
                        ec2_call_finish(c, r);
                        return;
                }
                if (c->action == EC2_DESCRIBE && c->next_token[0]) {
                        if (++c->pages >= EC2_MAX_PAGES) {
                                (void)snprintf(c->error, sizeof(c->error), "more than %u pages of instances",
                                               EC2_MAX_PAGES);
                                ec2_call_finish(c, -E2BIG);
                                return;
                        }
                        c->attempt = 0;
                        ec2_call_step(c);
                        return;
                }
                ec2_call_finish(c, 0);
                return;
        }

        if (ec2_parse_error(resp->body, resp->body_len, code, message) < 0) {
                code[0] = message[0] = 0;
        }
        memcpy(c->code, code, sizeof(c->code));
        r = ec2_classify_error(resp->status, code, &retry);
        if (retry && ec2_is_throttling(code))
                (void)snprintf(c->error, sizeof(c->error), "%s", code);
        else if (resp->status >= 500 || !code[0])
                (void)snprintf(c->error, sizeof(c->error), "HTTP %ld%s%s", resp->status, code[0] ? " " : "",
                               code);
        else
                (void)snprintf(c->error, sizeof(c->error), "%s%s%s", code, message[0] ? ": " : "", message);
        if (retry) {
                ec2_call_retry(c, ec2_is_throttling(code), r);
                return;
        }
        ec2_backoff_answered(&c->ec2->backoff);
        ec2_call_finish(c, r);
}

/* Signs the request of the current attempt with <cred> and sends it. */
static int ec2_call_send(struct ec2_call *c, const struct awscred_credentials *cred)
{
        struct ec2 *e = c->ec2;
        _cleanup_(evbuffer_freep) struct evbuffer *body = evbuffer_new();
        _cleanup_(sigv4_signature_freep) struct sigv4_signature *sig = NULL;
        _cleanup_free_ char *h_host = NULL, *h_date = NULL, *h_token = NULL, *h_auth = NULL;
        const char *headers[5];
        size_t n_headers = 0, len;
        const unsigned char *data;
        int r;

        if (!body)
                return -ENOMEM;
        if (evbuffer_add_buffer_reference(body, c->form) < 0)
                return -ENOMEM;
        if (c->next_token[0]) {
                r = ec2_form_add(body, "NextToken", c->next_token);
                if (r < 0)
                        return r;
        }
        if (c->action == EC2_DESCRIBE) {
                char page[16];

                (void)snprintf(page, sizeof(page), "%d", EC2_PAGE_SIZE);
                r = ec2_form_add(body, "MaxResults", page);
                if (r < 0)
                        return r;
        }
        len = evbuffer_get_length(body);
        data = evbuffer_pullup(body, -1);
        if (!data && len > 0)
                return -ENOMEM;

        {
                const struct sigv4_header sh[] = {
                        {"Host", e->host},
                        {"Content-Type", EC2_CONTENT_TYPE},
                };
                const struct sigv4_request req = {
                        .method = "POST",
                        .path = e->path,
                        .headers = sh,
                        .n_headers = ELEMENTSOF(sh),
                        .body = data,
                        .body_len = len,
                };
                const struct sigv4_credentials sc = {
                        .access_key_id = cred->access_key_id,
                        .secret_access_key = cred->secret_access_key,
                        .session_token = cred->session_token,
                };
                const struct sigv4_params params = {
                        .region = e->region,
                        .service = "ec2",
                        .when = time(NULL),
                        .normalize = true,
                };

                r = sigv4_sign(&req, &sc, &params, &sig);
                if (r < 0)
                        return r;
        }

        if (asprintf(&h_host, "Host: %s", e->host) < 0 ||
            asprintf(&h_date, "X-Amz-Date: %s", sig->amz_date) < 0 ||
            asprintf(&h_auth, "Authorization: %s", sig->authorization) < 0)
                return -ENOMEM;
        headers[n_headers++] = h_host;
        headers[n_headers++] = "Content-Type: " EC2_CONTENT_TYPE;
        headers[n_headers++] = h_date;
        if (cred->session_token[0]) {
                if (asprintf(&h_token, "X-Amz-Security-Token: %s", cred->session_token) < 0)
                        return -ENOMEM;
                headers[n_headers++] = h_token;
        }
        headers[n_headers++] = h_auth;

        {
                const struct curlev_request req = {
                        .method = "POST",
                        .url = e->url,
                        .headers = headers,
                        .n_headers = n_headers,
                        .body = data,
                        .body_len = len,
                        .max_response = c->max_response ? c->max_response : EC2_MAX_RESPONSE,
                        .connect_timeout_usec = EC2_CONNECT_USEC,
                        .timeout_usec = EC2_TIMEOUT_USEC,
                };

                r = curlev_start(e->curl, &req, ec2_http_done, c, &c->transfer);
        }
        if (h_token)
                OPENSSL_cleanse(h_token, strlen(h_token));
        OPENSSL_cleanse(h_auth, strlen(h_auth));
        if (r < 0)
                return r;
        e->requests++;
        c->attempt++;
        return 0;
}


/* The instance metadata service could not answer <c>'s question (<r>, a -errno): a transient failure,
 * retried with the call's backoff. */
static void ec2_call_metadata_failed(struct ec2_call *c, int r)
{
        (void)snprintf(c->error, sizeof(c->error), "instance metadata service: %s", strerror(-r));
        c->attempt++;
        ec2_call_retry(c, false, -EAGAIN);
}
static void ec2_credentials_cb(int r, const struct awscred_credentials *cred, void *userdata)
{
        struct ec2_call *c = userdata;
        struct ec2 *e = c->ec2;
        char masked[AWSCRED_MASK_LEN];

        if (r == -ENOKEY || r == -EINVAL) {
                (void)snprintf(c->error, sizeof(c->error), "%s",
                               r == -ENOKEY
                                       ? "no AWS credentials found (environment, shared files, instance "
                                         "role)"
                                       : "the instance metadata service gave malformed credentials");
                ec2_call_finish(c, -EACCES);
                return;
        }
        if (r < 0) {
                ec2_call_metadata_failed(c, r);
                return;
        }

        awscred_mask(cred->access_key_id, masked);
        if (cred->source != e->logged_source || strcmp(masked, e->logged_key) != 0) {
                log_info("EC2: using AWS credentials from the %s (access key %s%s)",
                         awscred_source_name(cred->source), masked,
                         cred->session_token[0] ? ", session" : "");
                e->logged_source = cred->source;
                memcpy(e->logged_key, masked, sizeof(masked));
        }

        r = ec2_call_send(c, cred);
        if (r < 0) {
                (void)snprintf(c->error, sizeof(c->error), "could not send the request: %s", strerror(-r));
                ec2_call_finish(c, r == -EBUSY ? -EAGAIN : r);
        }
}

/* Works out URL and Host header once the region is known. */
static int ec2_resolve_endpoint(struct ec2 *e)
{
        _cleanup_(curl_url_cleanupp) CURLU *u = curl_url();
        char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *url = NULL, *extra = NULL;
        char fallback[EC2_URL_MAX];
        const char *endpoint = e->endpoint_setting;
        int r = -EINVAL, n;

        if (!u)
                return -ENOMEM;
        if (!endpoint[0]) {
                n = snprintf(fallback, sizeof(fallback), "https://ec2.%s.amazonaws.com/", e->region);
                if (n < 0 || (size_t)n >= sizeof(fallback))
                        return -EINVAL;
                endpoint = fallback;
        }
        if (curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
                goto out;
        if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
                goto out;
        if (curl_url_get(u, CURLUPART_USER, &extra, 0) == CURLUE_OK ||
            curl_url_get(u, CURLUPART_QUERY, &extra, 0) == CURLUE_OK ||
            curl_url_get(u, CURLUPART_FRAGMENT, &extra, 0) == CURLUE_OK)
                goto out;
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
                port = NULL;
        if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK)
                goto out;
        if (port)
                n = snprintf(e->host, sizeof(e->host), "%s:%s", host, port);
        else
                n = snprintf(e->host, sizeof(e->host), "%s", host);
        if (n < 0 || (size_t)n >= sizeof(e->host) || strlen(path) >= sizeof(e->path) ||
            strlen(url) >= sizeof(e->url))
                goto out;
        memcpy(e->path, path[0] ? path : "/", strlen(path[0] ? path : "/") + 1);
        memcpy(e->url, url, strlen(url) + 1);
        e->endpoint_ready = true;
        r = 0;
out:
        curl_free(scheme);
        curl_free(host);
        curl_free(port);
        curl_free(path);
        curl_free(url);
        curl_free(extra);
        return r;
}

static void ec2_region_cb(int r, const char *region, void *userdata)
{
        struct ec2_call *c = userdata;
        struct ec2 *e = c->ec2;

        if (r == -ENOENT || r == -EINVAL) {
                (void)snprintf(c->error, sizeof(c->error),
                               "no AWS region configured ([ec2] region, AWS_REGION, config file, instance "
                               "metadata)");
                ec2_call_finish(c, -EINVAL);
                return;
        }
        if (r < 0) {
                ec2_call_metadata_failed(c, r);
                return;
        }
        if (!e->endpoint_ready) {
                memcpy(e->region, region, strlen(region) + 1);
                if (ec2_resolve_endpoint(e) < 0) {
                        (void)snprintf(c->error, sizeof(c->error), "invalid EC2 endpoint URL");
                        ec2_call_finish(c, -EINVAL);
                        return;
                }
        }
        ec2_call_step(c);
}

/* Runs the next attempt: the region, then credentials, then the request. */
static void ec2_call_step(struct ec2_call *c)
{
        struct ec2 *e = c->ec2;
        int r;

        if (!e->endpoint_ready)
                r = awscred_get_region(e->cred, ec2_region_cb, c);
        else
                r = awscred_get(e->cred, ec2_credentials_cb, c);
        if (r < 0) {
                (void)snprintf(c->error, sizeof(c->error), "%s", strerror(-r));
                c->attempt++;
                ec2_call_retry(c, false, -EAGAIN);
        }
}

/* Allocates a call for <action> that owns <form> (freed on failure too) and links it to <e>. It is started
 * by ec2_call_begin() once its callback is set. */
static int ec2_call_new(struct ec2 *e, enum ec2_action action, struct evbuffer *form, void *userdata,
                        struct ec2_call **ret)
{
        struct ec2_call *c;

        if (e->n_calls >= EC2_MAX_CALLS) {
                evbuffer_free(form);
                return -EBUSY;
        }
        c = calloc(1, sizeof(*c));
        if (!c) {
                evbuffer_free(form);
                return -ENOMEM;
        }
        c->ec2 = e;
        c->action = action;
        memcpy(c->action_name, ec2_action_names[action], strlen(ec2_action_names[action]) + 1);
        c->form = form;
        c->userdata = userdata;
        c->timer = evtimer_new(e->base, ec2_retry_cb, c);
        if (!c->timer) {
                ec2_call_free(c);
                return -ENOMEM;
        }
        DLIST_PREPEND(calls, e->calls, c);
        e->n_calls++;
        *ret = c;
        return 0;
}

static void ec2_call_begin(struct ec2_call *c, struct ec2_call **ret)
{
        struct ec2 *e = c->ec2;
        uint64_t wait = ec2_backoff_wait(&e->backoff, now_usec());
        struct timeval tv = timeval_from_usec(wait);

        c->max_attempts = ec2_backoff_attempts(&e->backoff);
        if (ret)
                *ret = c;
        /* The first step runs from the loop, once the backoff of earlier calls allows, so that no
         * callback ever runs inside the call (a call with one attempt may end at its first step). */
        if (evtimer_add(c->timer, &tv) < 0)
                ec2_call_step(c); /* only registers with awscred, whose answer comes from the loop */
}

static int ec2_call_start(struct ec2 *e, enum ec2_action action, struct evbuffer *form, ec2_instances_cb icb,
                          ec2_done_cb dcb, void *userdata, struct ec2_call **ret)
{
        struct ec2_call *c;
        int r;

        r = ec2_call_new(e, action, form, userdata, &c);
        if (r < 0)
                return r;
        c->instances_cb = icb;
        c->done_cb = dcb;
        ec2_call_begin(c, ret);
        return 0;
}

int ec2_describe_instances(struct ec2 *e, const char *tag_key, const char *tag_value, ec2_instances_cb cb,
                           void *userdata, struct ec2_call **ret)
{
        static const char *const states[] = {"pending", "running", "stopping", "stopped", "shutting-down"};
        struct evbuffer *f = NULL;
        int r;

        if (!e || !cb || !ec2_param_ok(tag_key, 127) || !ec2_param_ok(tag_value, 255))
                return -EINVAL;
        r = ec2_form_new(ec2_action_names[EC2_DESCRIBE], &f);
        if (r < 0)
                return r;
        {
                char name[160];

                (void)snprintf(name, sizeof(name), "tag:%s", tag_key);
                r = ec2_form_add(f, "Filter.1.Name", name);
        }
        if (r >= 0)
                r = ec2_form_add(f, "Filter.1.Value.1", tag_value);
        if (r >= 0)
                r = ec2_form_add(f, "Filter.2.Name", "instance-state-name");
        for (size_t i = 0; i < ELEMENTSOF(states) && r >= 0; i++)
                r = ec2_form_addf(f, states[i], "Filter.2.Value.%zu", i + 1);
        if (r < 0) {
                evbuffer_free(f);
                return r;
        }
        return ec2_call_start(e, EC2_DESCRIBE, f, cb, NULL, userdata, ret);
}

static int ec2_run_form(const struct ec2_launch *l, struct evbuffer *f)
{
        char count[16];
        int r = 0, tag = 1;

        (void)snprintf(count, sizeof(count), "%u", l->count);
        if (ec2_set(l->image))
                r = ec2_form_add(f, "ImageId", l->image);
        if (r >= 0 && ec2_set(l->launch_template))
                r = ec2_form_add(f,
                                 strncmp(l->launch_template, "lt-", 3) == 0
                                         ? "LaunchTemplate.LaunchTemplateId"
                                         : "LaunchTemplate.LaunchTemplateName",
                                 l->launch_template);
        if (r >= 0 && ec2_set(l->instance_type))
                r = ec2_form_add(f, "InstanceType", l->instance_type);
        if (r >= 0 && ec2_set(l->subnet))
                r = ec2_form_add(f, "SubnetId", l->subnet);
        for (size_t i = 0; i < l->n_security_groups && r >= 0; i++)
                r = ec2_form_addf(f, l->security_groups[i],
                                  strncmp(l->security_groups[i], "sg-", 3) == 0 ? "SecurityGroupId.%zu"
                                                                                : "SecurityGroup.%zu",
                                  i + 1);
        if (r >= 0 && ec2_set(l->key_name))
                r = ec2_form_add(f, "KeyName", l->key_name);
        if (r >= 0 && ec2_set(l->instance_profile))
                r = ec2_form_add(f,
                                 strncmp(l->instance_profile, "arn:", 4) == 0 ? "IamInstanceProfile.Arn"
                                                                              : "IamInstanceProfile.Name",
                                 l->instance_profile);
        if (r >= 0 && l->user_data_len > 0) {
                _cleanup_free_ unsigned char *b64 = malloc(4 * ((l->user_data_len + 2) / 3) + 1);

                if (!b64)
                        return -ENOMEM;
                (void)EVP_EncodeBlock(b64, l->user_data, (int)l->user_data_len);
                r = ec2_form_add(f, "UserData", (const char *)b64);
        }
        if (r >= 0)
                r = ec2_form_add(f, "TagSpecification.1.ResourceType", "instance");
        if (r >= 0)
                r = ec2_form_addf(f, l->tag_key, "TagSpecification.1.Tag.%d.Key", tag);
        if (r >= 0)
                r = ec2_form_addf(f, l->tag_value, "TagSpecification.1.Tag.%d.Value", tag);
        tag++;
        if (r >= 0 && ec2_set(l->name) && strcmp(l->tag_key, "Name") != 0) {
                r = ec2_form_addf(f, "Name", "TagSpecification.1.Tag.%d.Key", tag);
                if (r >= 0)
                        r = ec2_form_addf(f, l->name, "TagSpecification.1.Tag.%d.Value", tag);
                tag++;
        }
        if (r >= 0 && ec2_set(l->launch_hash) && strcmp(l->tag_key, EC2_LAUNCH_HASH_TAG) != 0) {
                r = ec2_form_addf(f, EC2_LAUNCH_HASH_TAG, "TagSpecification.1.Tag.%d.Key", tag);
                if (r >= 0)
                        r = ec2_form_addf(f, l->launch_hash, "TagSpecification.1.Tag.%d.Value", tag);
                tag++;
        }
        if (r >= 0 && l->epoch > 0 && strcmp(l->tag_key, EC2_EPOCH_TAG) != 0) {
                char epoch[24];

                (void)snprintf(epoch, sizeof(epoch), "%" PRIu64, l->epoch);
                r = ec2_form_addf(f, EC2_EPOCH_TAG, "TagSpecification.1.Tag.%d.Key", tag);
                if (r >= 0)
                        r = ec2_form_addf(f, epoch, "TagSpecification.1.Tag.%d.Value", tag);
        }
        if (r >= 0)
                r = ec2_form_add(f, "ClientToken", l->client_token);
        if (r >= 0)
                r = ec2_form_add(f, "MinCount", count);
        if (r >= 0)
                r = ec2_form_add(f, "MaxCount", count);
        return r;
}

int ec2_run_instances(struct ec2 *e, const struct ec2_launch *l, ec2_instances_cb cb, void *userdata,
                      struct ec2_call **ret)
{
        struct evbuffer *f = NULL;
        int r;

        if (!e || !l || !cb || l->count == 0 || !ec2_param_ok(l->tag_key, 127) ||
            !ec2_param_ok(l->tag_value, 255) || !ec2_param_ok(l->client_token, 64) ||
            (!ec2_set(l->image) && !ec2_set(l->launch_template)) || (l->user_data_len > 0 && !l->user_data) ||
            (ec2_set(l->launch_hash) && (strlen(l->launch_hash) >= EC2_LAUNCH_HASH_MAX ||
                                         strspn(l->launch_hash, "0123456789abcdef") != strlen(l->launch_hash))))
                return -EINVAL;
        for (const char *p = l->client_token; *p; p++)
                if ((unsigned char)*p > 0x7e || (unsigned char)*p < 0x21)
                        return -EINVAL;
        if (l->count > EC2_MAX_LAUNCH || l->user_data_len > EC2_USER_DATA_MAX ||
            l->n_security_groups > EC2_MAX_SECURITY_GROUPS)
                return -E2BIG;
        r = ec2_form_new(ec2_action_names[EC2_RUN], &f);
        if (r >= 0)
                r = ec2_run_form(l, f);
        if (r < 0) {
                if (f)
                        evbuffer_free(f);
                return r;
        }
        return ec2_call_start(e, EC2_RUN, f, cb, NULL, userdata, ret);
}

int ec2_terminate_instances(struct ec2 *e, const char *const *ids, size_t n, ec2_done_cb cb, void *userdata,
                            struct ec2_call **ret)
{
        struct evbuffer *f = NULL;
        int r;

        if (!e || !cb || n == 0 || !ids)
                return -EINVAL;
        if (n > EC2_MAX_TERMINATE)
                return -E2BIG;
        for (size_t i = 0; i < n; i++)
                if (!ec2_param_ok(ids[i], EC2_ID_MAX - 1) || !ec2_chars_ok(ids[i], "-"))
                        return -EINVAL;
        r = ec2_form_new(ec2_action_names[EC2_TERMINATE], &f);
        for (size_t i = 0; i < n && r >= 0; i++)
                r = ec2_form_addf(f, ids[i], "InstanceId.%zu", i + 1);
        if (r < 0) {
                if (f)
                        evbuffer_free(f);
                return r;
        }
        return ec2_call_start(e, EC2_TERMINATE, f, NULL, cb, userdata, ret);
}

/* True for a query parameter's name: letters, digits, '.', '_' and '-', at most <max> bytes. */
static bool ec2_name_ok(const char *s, size_t max)
{
        size_t n;

        if (!s)
                return false;
        n = strnlen(s, max + 1);
        return n > 0 && n <= max && ec2_chars_ok(s, "._-");
}

int ec2_query(struct ec2 *e, const char *action, const struct ec2_param *params, size_t n,
              size_t max_response, ec2_query_cb cb, void *userdata, struct ec2_call **ret)
{
        struct evbuffer *f = NULL;
        struct ec2_call *c;
        int r;

        if (!e || !cb || !ec2_name_ok(action, EC2_ACTION_MAX - 1) || !ec2_chars_ok(action, "") ||
            (n > 0 && !params))
                return -EINVAL;
        if (n > EC2_QUERY_MAX_PARAMS || max_response > EC2_QUERY_MAX_RESPONSE)
                return -E2BIG;
        for (size_t i = 0; i < n; i++) {
                const char *v = params[i].value;

                if (!ec2_name_ok(params[i].name, EC2_QUERY_NAME_MAX) ||
                    strcmp(params[i].name, "Action") == 0 || strcmp(params[i].name, "Version") == 0 || !v)
                        return -EINVAL;
                if (v[0] && !ec2_param_ok(v, EC2_QUERY_VALUE_MAX))
                        return strnlen(v, EC2_QUERY_VALUE_MAX + 1) > EC2_QUERY_VALUE_MAX ? -E2BIG : -EINVAL;
        }
        r = ec2_form_new(action, &f);
        for (size_t i = 0; i < n && r >= 0; i++)
                r = ec2_form_add(f, params[i].name, params[i].value);
        if (r < 0) {
                if (f)
                        evbuffer_free(f);
                return r;
        }
        r = ec2_call_new(e, EC2_QUERY, f, userdata, &c);
        if (r < 0)
                return r;
        memcpy(c->action_name, action, strlen(action) + 1);
        c->query_cb = cb;
        c->max_response = max_response;
        ec2_call_begin(c, ret);
        return 0;
}

struct ec2_call *ec2_call_cancel(struct ec2_call *c)
{
        if (!c)
                return NULL;
        ec2_call_unlink(c);
        ec2_call_free(c);
        return NULL;
}

uint64_t ec2_requests_total(const struct ec2 *e)
{
        return e ? e->requests : 0;
}

/* The endpoint a setting or the environment names, "" for the region's own. */
static int ec2_endpoint_setting(const struct ec2_settings *s, char buf[static EC2_URL_MAX])
{
        const char *candidates[] = {
                s->endpoint,
                getenv("AWS_ENDPOINT_URL_EC2"),
                getenv("AWS_ENDPOINT_URL"),
        };

        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(candidates); i++) {
                const char *v = candidates[i];

                if (!ec2_set(v))
                        continue;
                if (strlen(v) >= EC2_URL_MAX ||
                    (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0))
                        return -EINVAL;
                for (const char *p = v; *p; p++)
                        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
                                return -EINVAL;
                memcpy(buf, v, strlen(v) + 1);
                return 0;
        }
        return 0;
}

int ec2_new(struct event_base *base, const struct ec2_settings *s, struct ec2 **ret)
{
        const struct ec2_settings none = {0};
        const struct awscred_settings as = {
                .credentials_file = s ? s->credentials_file : NULL,
                .profile = s ? s->profile : NULL,
                .region = s ? s->region : NULL,
        };
        struct ec2 *e;
        int r;

        if (!s)
                s = &none;
        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->base = base;
        e->backoff.cap_usec = s->backoff_cap_usec;
        xmlInitParser();
        if (getrandom(&e->rng, sizeof(e->rng), GRND_NONBLOCK) != sizeof(e->rng))
                e->rng = now_usec() ^ (uint64_t)getpid() << 32;
        e->rng |= 1;

        r = ec2_endpoint_setting(s, e->endpoint_setting);
        if (r >= 0)
                r = curlev_new(base, &e->curl);
        if (r >= 0)
                r = awscred_new(base, e->curl, &as, &e->cred);
        if (r < 0) {
                ec2_free(e);
                return r;
        }
        /* With an explicit endpoint, a malformed URL shows now rather than at the first call. */
        if (e->endpoint_setting[0]) {
                memcpy(e->region, "us-east-1", sizeof("us-east-1"));
                r = ec2_resolve_endpoint(e);
                e->endpoint_ready = false;
                e->region[0] = 0;
                if (r < 0) {
                        ec2_free(e);
                        return r;
                }
        }
        *ret = e;
        return 0;
}

struct ec2 *ec2_free(struct ec2 *e)
{
        if (!e)
                return NULL;
        while (e->calls)
                (void)ec2_call_cancel(e->calls);
        e->cred = awscred_free(e->cred);
        e->curl = curlev_free(e->curl);
        free(e);
        return NULL;
}

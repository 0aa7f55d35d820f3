/* The AWS credential and region chain (the order is in awscred.h), and the instance metadata client.
 *
 * awscred_new() settles everything that needs no network: the environment and the shared files are read
 * then, once. Only when they hold no key (or no region) is the instance metadata service (IMDS) asked, on
 * the event loop: one IMDSv2 session token (PUT /latest/api/token with a TTL), reused until shortly before
 * it expires; then the role name (GET /latest/meta-data/iam/security-credentials/) and the role's
 * credentials (GET .../<role>), or the region (GET /latest/meta-data/placement/region). One fetch runs at
 * a time; callers wait in a bounded list of waiters. Instance role credentials are fetched again when
 * fewer than AWSCRED_REFRESH_USEC remain, in the background while the current ones are still good for
 * more than AWSCRED_MIN_VALID_USEC; if that refresh fails the current ones are used until then.
 *
 * Callbacks never run inside awscred_get(): a waiter that can be answered at once is marked ready and
 * a zero-delay event (dispatch) answers it from the loop. A callback may free the awscred; the dispatcher
 * notices through the <freed> flag and stops touching it.
 *
 * The shared files are AWS's INI dialect, which the config parser (common/ini.c) deliberately rejects:
 * "[profile name]" section headers with a space, indented sub-keys, no inline comments. So they get their
 * own small reader here. Secrets are wiped when freed and never logged. */
#include "aws/awscred.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aws/curlev.h"
#include "common/cjson.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/readfile.h"

#define AWSCRED_MAX_WAITERS       256
#define AWSCRED_REFRESH_USEC      (15 * 60 * USEC_PER_SEC) /* fetch again when less than this remains */
#define AWSCRED_MIN_VALID_USEC    (60 * USEC_PER_SEC)      /* ...and wait for it below this */
#define AWSCRED_IMDS_TOKEN_TTL    21600                    /* seconds, the maximum IMDS allows */
#define AWSCRED_IMDS_TOKEN_MAX    1024
#define AWSCRED_IMDS_ROLE_MAX     256
#define AWSCRED_IMDS_RESPONSE_MAX (64 * 1024)
#define AWSCRED_IMDS_CONNECT_USEC (1 * USEC_PER_SEC)
#define AWSCRED_IMDS_TIMEOUT_USEC (3 * USEC_PER_SEC)
#define AWSCRED_URL_MAX           1024

enum awscred_want {
        AWSCRED_WANT_CREDENTIALS,
        AWSCRED_WANT_REGION,
};

enum awscred_step {
        AWSCRED_STEP_IDLE,
        AWSCRED_STEP_TOKEN,
        AWSCRED_STEP_ROLE,
        AWSCRED_STEP_CREDENTIALS,
        AWSCRED_STEP_REGION,
};

struct awscred_waiter {
        struct awscred_waiter *next;
        enum awscred_want want;
        union {
                awscred_cb credentials;
                awscred_region_cb region;
        } cb;
        void *userdata;
        bool ready; /* answer at the next dispatch with <r> and the current state */
        int r;
};

struct awscred {
        struct event_base *base;
        struct curlev *curl;
        struct event *dispatch;
        bool *freed;

        struct awscred_credentials static_cred; /* steps 1 to 4 */
        bool have_static;
        char region[AWSCRED_REGION_MAX];
        bool have_region;

        /* The instance metadata service. */
        bool imds_disabled;
        char imds_endpoint[AWSCRED_URL_MAX];
        struct awscred_credentials imds_cred;
        bool have_imds_cred;
        char imds_token[AWSCRED_IMDS_TOKEN_MAX];
        uint64_t imds_token_expiry; /* monotonic */
        char imds_role[AWSCRED_IMDS_ROLE_MAX];
        enum awscred_step step;
        enum awscred_want goal; /* what the running fetch is for */
        bool token_retried;     /* a 401 already made us fetch a new token once */
        bool region_queued;     /* a region fetch is owed after the running credential fetch */
        bool credentials_queued;
        struct curlev_transfer *transfer;

        struct awscred_waiter *waiters;
        size_t n_waiters;
};

/* ---------------------------------------------------------------------------------------------------- */
/* Small pieces */

const char *awscred_source_name(enum awscred_source s)
{
        switch (s) {
        case AWSCRED_SOURCE_LBD_CONFIG:
                return "[ec2] credentials_file";
        case AWSCRED_SOURCE_ENV:
                return "environment";
        case AWSCRED_SOURCE_CREDENTIALS_FILE:
                return "shared credentials file";
        case AWSCRED_SOURCE_CONFIG_FILE:
                return "shared config file";
        case AWSCRED_SOURCE_IMDS:
                return "instance metadata (instance role)";
        case AWSCRED_SOURCE_NONE:
        default:
                return "none";
        }
}

void awscred_mask(const char *key_id, char buf[static AWSCRED_MASK_LEN])
{
        size_t n = key_id ? strlen(key_id) : 0;

        (void)snprintf(buf, AWSCRED_MASK_LEN, "****%s", n >= 8 ? key_id + n - 4 : "");
}

static void awscred_wipe(struct awscred_credentials *c)
{
        OPENSSL_cleanse(c, sizeof(*c));
}

/* True for a non-empty value of printable ASCII without blanks, shorter than <size>: what a key id, a
 * secret, a token or a region may be (they end up in HTTP headers). */
static bool awscred_value_ok(const char *s, size_t size)
{
        size_t n;

        if (!s)
                return false;
        n = strnlen(s, size);
        if (n == 0 || n >= size)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
                        return false;
        return true;
}

static int awscred_copy(char *dst, size_t size, const char *src)
{
        if (!awscred_value_ok(src, size))
                return -EINVAL;
        memcpy(dst, src, strlen(src) + 1);
        return 0;
}

static const char *awscred_env(const char *name)
{
        const char *v = getenv(name);

        return v && *v ? v : NULL;
}

static const char *awscred_profile(const struct awscred_settings *s)
{
        if (s && s->profile && *s->profile)
                return s->profile;
        if (awscred_env("AWS_PROFILE"))
                return awscred_env("AWS_PROFILE");
        return "default";
}

/* Writes the path of a shared file into <buf>: <env>'s value, else ~/.aws/<name>; "~/" at the start of
 * either is the home directory. Returns 0, or -ENOENT when there is no home to look in. */
static int awscred_shared_path(const char *env, const char *name, char *buf, size_t size)
{
        const char *path = awscred_env(env), *home = getenv("HOME");
        char pwbuf[1024];
        struct passwd pw, *found = NULL;
        int n;

        if (path && strncmp(path, "~/", 2) != 0) {
                n = snprintf(buf, size, "%s", path);
                return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
        }
        if (!home || !*home) {
                if (getpwuid_r(getuid(), &pw, pwbuf, sizeof(pwbuf), &found) != 0 || !found || !pw.pw_dir)
                        return -ENOENT;
                home = pw.pw_dir;
        }
        if (path)
                n = snprintf(buf, size, "%s/%s", home, path + 2);
        else
                n = snprintf(buf, size, "%s/.aws/%s", home, name);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The shared files */

struct awscred_profile_values {
        char key_id[AWSCRED_KEY_ID_MAX];
        char secret[AWSCRED_SECRET_MAX];
        char token[AWSCRED_TOKEN_MAX];
        char region[AWSCRED_REGION_MAX];
        bool bad; /* a value of the profile didn't fit or had odd characters */
};

static char *awscred_strip(char *s)
{
        char *end;

        while (*s == ' ' || *s == '\t')
                s++;
        end = s + strlen(s);
        while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
                *--end = 0;
        return s;
}

/* True when the section header text <name> (without brackets) is <profile>'s section: "[profile]" in the
 * credentials file; "[profile <profile>]" in the config file, where "default" may also be "[default]". */
static bool awscred_section_matches(const char *name, const char *profile, bool config_file)
{
        if (!config_file)
                return strcmp(name, profile) == 0;
        if (strcmp(profile, "default") == 0 && strcmp(name, "default") == 0)
                return true;
        if (strncmp(name, "profile", 7) != 0 || (name[7] != ' ' && name[7] != '\t'))
                return false;
        name += 7;
        while (*name == ' ' || *name == '\t')
                name++;
        return strcmp(name, profile) == 0;
}

static void awscred_take_value(char *dst, size_t size, const char *value, bool *bad)
{
        if (awscred_copy(dst, size, value) < 0)
                *bad = true;
}

/* Reads <profile>'s keys from the text of a shared file (modified in place). */
static void awscred_parse_shared(char *text, const char *profile, bool config_file,
                                 struct awscred_profile_values *v)
{
        bool in_profile = false, nested = false;
        char *line = text;

        while (line && *line) {
                char *nl = strchr(line, '\n'), *s, *eq, *key, *value;
                bool indented = *line == ' ' || *line == '\t';

                if (nl)
                        *nl = 0;
                s = awscred_strip(line);
                line = nl ? nl + 1 : NULL;

                if (*s == 0 || *s == '#' || *s == ';')
                        continue;
                if (indented && nested)
                        continue; /* a sub-key of a nested block ("s3 =" then indented lines) */
                nested = false;
                if (*s == '[') {
                        char *end = strrchr(s, ']');

                        if (!end)
                                continue;
                        *end = 0;
                        in_profile = awscred_section_matches(awscred_strip(s + 1), profile, config_file);
                        continue;
                }
                eq = strchr(s, '=');
                if (!eq || !in_profile)
                        continue;
                *eq = 0;
                key = awscred_strip(s);
                value = awscred_strip(eq + 1);
                if (*value == 0) {
                        nested = true;
                        continue;
                }
                if (strcasecmp(key, "aws_access_key_id") == 0)
                        awscred_take_value(v->key_id, sizeof(v->key_id), value, &v->bad);
                else if (strcasecmp(key, "aws_secret_access_key") == 0)
                        awscred_take_value(v->secret, sizeof(v->secret), value, &v->bad);
                else if (strcasecmp(key, "aws_session_token") == 0)
                        awscred_take_value(v->token, sizeof(v->token), value, &v->bad);
                else if (strcasecmp(key, "region") == 0)
                        awscred_take_value(v->region, sizeof(v->region), value, &v->bad);
        }
}

/* Reads <profile> from the file at <path>. Returns 0, -ENOENT when the file doesn't exist, or -errno. */
static int awscred_read_profile(const char *path, const char *profile, bool config_file,
                                struct awscred_profile_values *v)
{
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r;

        r = readfile_bounded(path, AWSCRED_FILE_MAX, 0, &text, &len);
        if (r < 0)
                return r;
        awscred_parse_shared(text, profile, config_file, v);
        OPENSSL_cleanse(text, len);
        return 0;
}

/* Fills <ret> from <v> when it holds a key id and a secret. */
static int awscred_from_profile(struct awscred_profile_values *v, enum awscred_source source,
                                struct awscred_credentials *ret)
{
        if (!v->key_id[0] || !v->secret[0])
                return -ENOKEY;
        memset(ret, 0, sizeof(*ret));
        memcpy(ret->access_key_id, v->key_id, sizeof(v->key_id));
        memcpy(ret->secret_access_key, v->secret, sizeof(v->secret));
        memcpy(ret->session_token, v->token, sizeof(v->token));
        ret->source = source;
        return 0;
}

int awscred_load_static(const struct awscred_settings *s, struct awscred_credentials *ret)
{
        struct awscred_profile_values v;
        const char *profile = awscred_profile(s), *id, *secret, *token;
        char path[PATH_MAX];
        int r;

        /* 1. The file lbd's own config names: that file only. */
        if (s && s->credentials_file && *s->credentials_file) {
                memset(&v, 0, sizeof(v));
                r = awscred_read_profile(s->credentials_file, profile, false, &v);
                if (r >= 0 && v.bad)
                        r = -EINVAL;
                if (r >= 0)
                        r = awscred_from_profile(&v, AWSCRED_SOURCE_LBD_CONFIG, ret);
                OPENSSL_cleanse(&v, sizeof(v));
                return r < 0 ? -EINVAL : 0;
        }

        /* 2. The environment. */
        id = awscred_env("AWS_ACCESS_KEY_ID");
        secret = awscred_env("AWS_SECRET_ACCESS_KEY");
        token = awscred_env("AWS_SESSION_TOKEN");
        if (id && secret) {
                struct awscred_credentials c = {.source = AWSCRED_SOURCE_ENV};

                if (awscred_copy(c.access_key_id, sizeof(c.access_key_id), id) < 0 ||
                    awscred_copy(c.secret_access_key, sizeof(c.secret_access_key), secret) < 0 ||
                    (token && awscred_copy(c.session_token, sizeof(c.session_token), token) < 0)) {
                        awscred_wipe(&c);
                        return -EINVAL;
                }
                *ret = c;
                awscred_wipe(&c);
                return 0;
        }

        /* 3. The shared credentials file, 4. the shared config file. */
        for (int i = 0; i < 2; i++) {
                bool config_file = i == 1;

                r = awscred_shared_path(config_file ? "AWS_CONFIG_FILE" : "AWS_SHARED_CREDENTIALS_FILE",
                                        config_file ? "config" : "credentials", path, sizeof(path));
                if (r < 0)
                        continue;
                memset(&v, 0, sizeof(v));
                r = awscred_read_profile(path, profile, config_file, &v);
                if (r >= 0 && v.bad)
                        r = -EINVAL;
                if (r >= 0)
                        r = awscred_from_profile(&v,
                                                 config_file ? AWSCRED_SOURCE_CONFIG_FILE
                                                             : AWSCRED_SOURCE_CREDENTIALS_FILE,
                                                 ret);
                OPENSSL_cleanse(&v, sizeof(v));
                if (r >= 0)
                        return 0;
                if (r == -EINVAL)
                        return r;
        }
        return -ENOKEY;
}

int awscred_load_region(const struct awscred_settings *s, char ret[static AWSCRED_REGION_MAX])
{
        const char *candidates[] = {
                s && s->region && *s->region ? s->region : NULL,
                awscred_env("AWS_REGION"),
                awscred_env("AWS_DEFAULT_REGION"),
        };
        struct awscred_profile_values v;
        char path[PATH_MAX];
        int r;

        for (size_t i = 0; i < ELEMENTSOF(candidates); i++)
                if (candidates[i])
                        return awscred_copy(ret, AWSCRED_REGION_MAX, candidates[i]);

        if (awscred_shared_path("AWS_CONFIG_FILE", "config", path, sizeof(path)) < 0)
                return -ENOENT;
        memset(&v, 0, sizeof(v));
        r = awscred_read_profile(path, awscred_profile(s), true, &v);
        if (r >= 0 && v.region[0])
                memcpy(ret, v.region, sizeof(v.region));
        else
                r = -ENOENT;
        OPENSSL_cleanse(&v, sizeof(v));
        return r >= 0 ? 0 : -ENOENT;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The instance metadata service */

static int awscred_parse_time(const char *s, uint64_t *ret_usec)
{
        struct tm tm = {0};
        const char *end;
        time_t t;

        end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!end)
                return -EINVAL;
        if (*end == '.') /* fractions of a second */
                for (end++; *end >= '0' && *end <= '9'; end++)
                        ;
        if (strcmp(end, "Z") != 0 && strcmp(end, "+00:00") != 0)
                return -EINVAL;
        t = timegm(&tm);
        if (t < 0)
                return -EINVAL;
        *ret_usec = (uint64_t)t * USEC_PER_SEC;
        return 0;
}

int awscred_parse_imds_credentials(const char *json, size_t len, struct awscred_credentials *ret)
{
        _cleanup_(cJSON_Deletep) cJSON *doc = NULL;
        struct awscred_credentials c = {.source = AWSCRED_SOURCE_IMDS};
        const cJSON *code, *id, *secret, *token, *expiration;
        int r = -EINVAL;

        if (!json || len > AWSCRED_IMDS_RESPONSE_MAX)
                return -EINVAL;
        doc = cJSON_ParseWithLength(json, len);
        if (!cJSON_IsObject(doc))
                return -EINVAL;
        code = cJSON_GetObjectItemCaseSensitive(doc, "Code");
        id = cJSON_GetObjectItemCaseSensitive(doc, "AccessKeyId");
        secret = cJSON_GetObjectItemCaseSensitive(doc, "SecretAccessKey");
        token = cJSON_GetObjectItemCaseSensitive(doc, "Token");
        expiration = cJSON_GetObjectItemCaseSensitive(doc, "Expiration");

        if (code && (!cJSON_IsString(code) || strcmp(code->valuestring, "Success") != 0))
                goto out;
        if (!cJSON_IsString(id) || !cJSON_IsString(secret) ||
            awscred_copy(c.access_key_id, sizeof(c.access_key_id), id->valuestring) < 0 ||
            awscred_copy(c.secret_access_key, sizeof(c.secret_access_key), secret->valuestring) < 0)
                goto out;
        if (token && (!cJSON_IsString(token) ||
                      awscred_copy(c.session_token, sizeof(c.session_token), token->valuestring) < 0))
                goto out;
        if (expiration && (!cJSON_IsString(expiration) ||
                           awscred_parse_time(expiration->valuestring, &c.expiration_usec) < 0))
                goto out;
        *ret = c;
        r = 0;
out:
        awscred_wipe(&c);
        if (doc) {
                /* The secret is in the parsed tree too. */
                if (cJSON_IsString(secret))
                        OPENSSL_cleanse(secret->valuestring, strlen(secret->valuestring));
                if (cJSON_IsString(token))
                        OPENSSL_cleanse(token->valuestring, strlen(token->valuestring));
        }
        return r;
}

static bool awscred_imds_cred_usable(const struct awscred *a, uint64_t margin)
{
        uint64_t now = realtime_usec();

        return a->have_imds_cred &&
               (a->imds_cred.expiration_usec == 0 || a->imds_cred.expiration_usec > now + margin);
}

static void awscred_imds_next(struct awscred *a);
static void awscred_imds_finish(struct awscred *a, int r);

static void awscred_arm_dispatch(struct awscred *a)
{
        event_active(a->dispatch, EV_TIMEOUT, 0);
}

/* Marks every waiter for <want> that waits on the fetch as ready with <r>. */
static void awscred_release(struct awscred *a, enum awscred_want want, int r)
{
        bool any = false;

        for (struct awscred_waiter *w = a->waiters; w; w = w->next)
                if (w->want == want && !w->ready) {
                        w->ready = true;
                        w->r = r;
                        any = true;
                }
        if (any)
                awscred_arm_dispatch(a);
}

static void awscred_imds_done(int r, const struct curlev_response *resp, void *userdata)
{
        struct awscred *a = userdata;
        enum awscred_step step = a->step;

        a->transfer = NULL;
        if (r < 0) {
                log_debug_errno(r, "Instance metadata request failed: %s", resp->error);
                awscred_imds_finish(a, r);
                return;
        }
        if (resp->status == 401 && step != AWSCRED_STEP_TOKEN && !a->token_retried) {
                /* The session token expired early or was revoked: one new token, then once more. */
                a->token_retried = true;
                a->imds_token[0] = 0;
                a->step = AWSCRED_STEP_TOKEN;
                awscred_imds_next(a);
                return;
        }
        if (resp->status == 404 && (step == AWSCRED_STEP_ROLE || step == AWSCRED_STEP_CREDENTIALS)) {
                log_debug("Instance metadata: no instance role (HTTP 404)");
                awscred_imds_finish(a, -ENOKEY);
                return;
        }
        if (resp->status != 200) {
                log_debug("Instance metadata: HTTP %ld at step %d", resp->status, (int)step);
                awscred_imds_finish(a, -EPROTO);
                return;
        }

        switch (step) {
        case AWSCRED_STEP_TOKEN: {
                char token[AWSCRED_IMDS_TOKEN_MAX];

                if (resp->body_len >= sizeof(token)) {
                        awscred_imds_finish(a, -EINVAL);
                        return;
                }
                memcpy(token, resp->body, resp->body_len + 1);
                if (awscred_copy(a->imds_token, sizeof(a->imds_token), awscred_strip(token)) < 0) {
                        awscred_imds_finish(a, -EINVAL);
                        return;
                }
                OPENSSL_cleanse(token, sizeof(token));
                /* Renewed a minute before it lapses. */
                a->imds_token_expiry = now_usec() + (AWSCRED_IMDS_TOKEN_TTL - 60) * USEC_PER_SEC;
                a->step = a->goal == AWSCRED_WANT_REGION ? AWSCRED_STEP_REGION : AWSCRED_STEP_ROLE;
                break;
        }
        case AWSCRED_STEP_ROLE: {
                char role[AWSCRED_IMDS_ROLE_MAX];
                const char *nl;
                size_t n;

                nl = memchr(resp->body, '\n', resp->body_len);
                n = nl ? (size_t)(nl - resp->body) : resp->body_len;
                if (n >= sizeof(role)) {
                        awscred_imds_finish(a, -EINVAL);
                        return;
                }
                memcpy(role, resp->body, n);
                role[n] = 0;
                /* The role becomes a path segment: keep it to the characters IAM allows in role names. */
                for (size_t i = 0; i < n; i++)
                        if (role[i] == 0 ||
                            !strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+=,.@_-",
                                    role[i])) {
                                awscred_imds_finish(a, -EINVAL);
                                return;
                        }
                if (n == 0) {
                        awscred_imds_finish(a, -ENOKEY);
                        return;
                }
                memcpy(a->imds_role, role, n + 1);
                a->step = AWSCRED_STEP_CREDENTIALS;
                break;
        }
        case AWSCRED_STEP_CREDENTIALS: {
                struct awscred_credentials c;

                r = awscred_parse_imds_credentials(resp->body, resp->body_len, &c);
                if (r < 0) {
                        awscred_imds_finish(a, r);
                        return;
                }
                awscred_wipe(&a->imds_cred);
                a->imds_cred = c;
                awscred_wipe(&c);
                a->have_imds_cred = true;
                awscred_imds_finish(a, 0);
                return;
        }
        case AWSCRED_STEP_REGION: {
                char region[AWSCRED_REGION_MAX];

                if (resp->body_len >= sizeof(region)) {
                        awscred_imds_finish(a, -EINVAL);
                        return;
                }
                memcpy(region, resp->body, resp->body_len + 1);
                if (awscred_copy(a->region, sizeof(a->region), awscred_strip(region)) < 0) {
                        awscred_imds_finish(a, -EINVAL);
                        return;
                }
                a->have_region = true;
                awscred_imds_finish(a, 0);
                return;
        }
        case AWSCRED_STEP_IDLE:
        default:
                awscred_imds_finish(a, -EINVAL);
                return;
        }
        awscred_imds_next(a);
}

/* Issues the request of the current step. */
static void awscred_imds_next(struct awscred *a)
{
        char url[AWSCRED_URL_MAX + 512], header[AWSCRED_IMDS_TOKEN_MAX + 64];
        const char *headers[1] = {header};
        struct curlev_request req = {
                .method = "GET",
                .url = url,
                .headers = headers,
                .n_headers = 1,
                .max_response = AWSCRED_IMDS_RESPONSE_MAX,
                .connect_timeout_usec = AWSCRED_IMDS_CONNECT_USEC,
                .timeout_usec = AWSCRED_IMDS_TIMEOUT_USEC,
                .no_proxy = true,
        };
        const char *path = NULL;
        int r;

        if (a->step != AWSCRED_STEP_TOKEN && (!a->imds_token[0] || now_usec() >= a->imds_token_expiry))
                a->step = AWSCRED_STEP_TOKEN;

        switch (a->step) {
        case AWSCRED_STEP_TOKEN:
                req.method = "PUT";
                path = "/latest/api/token";
                (void)snprintf(header, sizeof(header), "X-aws-ec2-metadata-token-ttl-seconds: %d",
                               AWSCRED_IMDS_TOKEN_TTL);
                break;
        case AWSCRED_STEP_ROLE:
                path = "/latest/meta-data/iam/security-credentials/";
                break;
        case AWSCRED_STEP_CREDENTIALS:
                path = "/latest/meta-data/iam/security-credentials/";
                break;
        case AWSCRED_STEP_REGION:
                path = "/latest/meta-data/placement/region";
                break;
        case AWSCRED_STEP_IDLE:
        default:
                return;
        }
        if (a->step != AWSCRED_STEP_TOKEN)
                (void)snprintf(header, sizeof(header), "X-aws-ec2-metadata-token: %s", a->imds_token);
        (void)snprintf(url, sizeof(url), "%s%s%s", a->imds_endpoint, path,
                       a->step == AWSCRED_STEP_CREDENTIALS ? a->imds_role : "");

        r = curlev_start(a->curl, &req, awscred_imds_done, a, &a->transfer);
        OPENSSL_cleanse(header, sizeof(header));
        if (r < 0) {
                log_debug_errno(r, "Failed to start an instance metadata request: %m");
                awscred_imds_finish(a, r);
        }
}

/* Starts fetching <goal> unless a fetch runs; then it is queued behind it. */
static void awscred_imds_start(struct awscred *a, enum awscred_want goal)
{
        if (a->step != AWSCRED_STEP_IDLE) {
                if (goal != a->goal) {
                        if (goal == AWSCRED_WANT_REGION)
                                a->region_queued = true;
                        else
                                a->credentials_queued = true;
                }
                return;
        }
        a->goal = goal;
        a->token_retried = false;
        a->step = goal == AWSCRED_WANT_REGION ? AWSCRED_STEP_REGION : AWSCRED_STEP_ROLE;
        awscred_imds_next(a);
}

static void awscred_imds_finish(struct awscred *a, int r)
{
        enum awscred_want goal = a->goal;

        a->step = AWSCRED_STEP_IDLE;
        if (goal == AWSCRED_WANT_CREDENTIALS) {
                /* A failed refresh while the current credentials still hold: keep using them. */
                if (r < 0 && awscred_imds_cred_usable(a, AWSCRED_MIN_VALID_USEC))
                        r = 0;
                if (r >= 0 && !awscred_imds_cred_usable(a, AWSCRED_MIN_VALID_USEC))
                        r = -EPROTO; /* fresh from IMDS, yet about to expire */
        }
        awscred_release(a, goal, r);

        if (a->region_queued) {
                a->region_queued = false;
                awscred_imds_start(a, AWSCRED_WANT_REGION);
        } else if (a->credentials_queued) {
                a->credentials_queued = false;
                awscred_imds_start(a, AWSCRED_WANT_CREDENTIALS);
        }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Waiters */

static void awscred_dispatch_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct awscred *a = userdata;
        bool freed = false;

        a->freed = &freed;
        for (;;) {
                struct awscred_waiter **p = &a->waiters, *w;

                while (*p && !(*p)->ready)
                        p = &(*p)->next;
                w = *p;
                if (!w)
                        break;
                *p = w->next;
                a->n_waiters--;

                if (w->want == AWSCRED_WANT_REGION) {
                        if (w->r >= 0 && !a->have_region)
                                w->r = -ENOENT;
                        w->cb.region(w->r, w->r >= 0 ? a->region : NULL, w->userdata);
                } else {
                        const struct awscred_credentials *c = NULL;

                        if (a->have_static)
                                c = &a->static_cred;
                        else if (awscred_imds_cred_usable(a, 0))
                                c = &a->imds_cred;
                        if (w->r >= 0 && !c)
                                w->r = -ENOKEY;
                        w->cb.credentials(w->r, w->r >= 0 ? c : NULL, w->userdata);
                }
                free(w);
                if (freed)
                        return;
        }
        a->freed = NULL;
}

static int awscred_wait(struct awscred *a, enum awscred_want want, awscred_cb ccb, awscred_region_cb rcb,
                        void *userdata, struct awscred_waiter **ret)
{
        struct awscred_waiter *w, **tail;

        if (a->n_waiters >= AWSCRED_MAX_WAITERS)
                return -EBUSY;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->want = want;
        if (want == AWSCRED_WANT_REGION)
                w->cb.region = rcb;
        else
                w->cb.credentials = ccb;
        w->userdata = userdata;
        for (tail = &a->waiters; *tail; tail = &(*tail)->next)
                ;
        *tail = w;
        a->n_waiters++;
        *ret = w;
        return 0;
}

static void awscred_answer_now(struct awscred *a, struct awscred_waiter *w, int r)
{
        w->ready = true;
        w->r = r;
        awscred_arm_dispatch(a);
}

int awscred_get(struct awscred *a, awscred_cb cb, void *userdata)
{
        struct awscred_waiter *w;
        int r;

        r = awscred_wait(a, AWSCRED_WANT_CREDENTIALS, cb, NULL, userdata, &w);
        if (r < 0)
                return r;
        if (a->have_static) {
                awscred_answer_now(a, w, 0);
                return 0;
        }
        if (a->imds_disabled) {
                awscred_answer_now(a, w, -ENOKEY);
                return 0;
        }
        if (awscred_imds_cred_usable(a, AWSCRED_MIN_VALID_USEC)) {
                awscred_answer_now(a, w, 0);
                if (!awscred_imds_cred_usable(a, AWSCRED_REFRESH_USEC))
                        awscred_imds_start(a, AWSCRED_WANT_CREDENTIALS); /* refresh in the background */
                return 0;
        }
        awscred_imds_start(a, AWSCRED_WANT_CREDENTIALS);
        return 0;
}

int awscred_get_region(struct awscred *a, awscred_region_cb cb, void *userdata)
{
        struct awscred_waiter *w;
        int r;

        r = awscred_wait(a, AWSCRED_WANT_REGION, NULL, cb, userdata, &w);
        if (r < 0)
                return r;
        if (a->have_region) {
                awscred_answer_now(a, w, 0);
                return 0;
        }
        if (a->imds_disabled) {
                awscred_answer_now(a, w, -ENOENT);
                return 0;
        }
        awscred_imds_start(a, AWSCRED_WANT_REGION);
        return 0;
}

void awscred_cancel(struct awscred *a, void *userdata)
{
        struct awscred_waiter **p;

        if (!a)
                return;
        p = &a->waiters;
        while (*p) {
                struct awscred_waiter *w = *p;

                if (w->userdata == userdata) {
                        *p = w->next;
                        a->n_waiters--;
                        free(w);
                } else {
                        p = &w->next;
                }
        }
}

enum awscred_source awscred_static_source(const struct awscred *a)
{
        return a && a->have_static ? a->static_cred.source : AWSCRED_SOURCE_NONE;
}

static int awscred_imds_settings(struct awscred *a)
{
        const char *disabled = awscred_env("AWS_EC2_METADATA_DISABLED");
        const char *endpoint = awscred_env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
        size_t n;

        a->imds_disabled = disabled && strcasecmp(disabled, "true") == 0;
        if (!endpoint)
                endpoint = AWSCRED_IMDS_DEFAULT_ENDPOINT;
        if ((strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0) ||
            strlen(endpoint) >= sizeof(a->imds_endpoint))
                return -EINVAL;
        for (const char *p = endpoint; *p; p++)
                if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
                        return -EINVAL;
        memcpy(a->imds_endpoint, endpoint, strlen(endpoint) + 1);
        n = strlen(a->imds_endpoint);
        while (n > 0 && a->imds_endpoint[n - 1] == '/')
                a->imds_endpoint[--n] = 0;
        return 0;
}

int awscred_new(struct event_base *base, struct curlev *curl, const struct awscred_settings *s,
                struct awscred **ret)
{
        struct awscred *a;
        int r;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->base = base;
        a->curl = curl;
        a->dispatch = event_new(base, -1, 0, awscred_dispatch_cb, a);
        if (!a->dispatch) {
                awscred_free(a);
                return -ENOMEM;
        }

        r = awscred_imds_settings(a);
        if (r < 0) {
                awscred_free(a);
                return r;
        }
        r = awscred_load_static(s, &a->static_cred);
        if (r < 0 && r != -ENOKEY) {
                awscred_free(a);
                return r;
        }
        a->have_static = r >= 0;
        a->have_region = awscred_load_region(s, a->region) >= 0;
        *ret = a;
        return 0;
}

struct awscred *awscred_free(struct awscred *a)
{
        if (!a)
                return NULL;
        if (a->freed)
                *a->freed = true;
        a->transfer = curlev_cancel(a->transfer);
        while (a->waiters) {
                struct awscred_waiter *w = a->waiters;

                a->waiters = w->next;
                free(w);
        }
        if (a->dispatch)
                event_free(a->dispatch);
        OPENSSL_cleanse(a, sizeof(*a));
        free(a);
        return NULL;
}

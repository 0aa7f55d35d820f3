/* AWS credentials and region, found the way the AWS SDKs find them.
 *
 * Credentials, first match wins:
 *   1. [ec2] credentials_file when set: that file only ([ec2] profile, else AWS_PROFILE, else "default");
 *   2. the environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
 *   3. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials), section
 *      [<profile>];
 *   4. the shared config file (AWS_CONFIG_FILE, else ~/.aws/config), section [profile <profile>] (or
 *      [default]), keys aws_access_key_id / aws_secret_access_key / aws_session_token;
 *   5. the instance role, from the instance metadata service with IMDSv2 sessions (endpoint
 *      AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254; AWS_EC2_METADATA_DISABLED=true
 *      turns it off). These expire: they are fetched again before they do.
 * <profile> is [ec2] profile, else AWS_PROFILE, else "default".
 *
 * Region: [ec2] region, AWS_REGION, AWS_DEFAULT_REGION, the config file's profile, then the instance
 * metadata (placement/region).
 *
 * The files and the environment are read once, by awscred_new(); the metadata service is asked on the
 * event loop (curlev.c) when needed. Secrets are never logged; key ids only masked (awscred_mask()). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macro.h"

#define AWSCRED_KEY_ID_MAX  128
#define AWSCRED_SECRET_MAX  256
#define AWSCRED_TOKEN_MAX   4096
#define AWSCRED_REGION_MAX  64
#define AWSCRED_PROFILE_MAX 128
#define AWSCRED_FILE_MAX    (1024 * 1024)
#define AWSCRED_MASK_LEN    16

#define AWSCRED_IMDS_DEFAULT_ENDPOINT "http://169.254.169.254"

struct event_base;
struct curlev;
struct awscred;

enum awscred_source {
        AWSCRED_SOURCE_NONE,
        AWSCRED_SOURCE_LBD_CONFIG, /* [ec2] credentials_file */
        AWSCRED_SOURCE_ENV,
        AWSCRED_SOURCE_CREDENTIALS_FILE,
        AWSCRED_SOURCE_CONFIG_FILE,
        AWSCRED_SOURCE_IMDS,
};

struct awscred_credentials {
        char access_key_id[AWSCRED_KEY_ID_MAX];
        char secret_access_key[AWSCRED_SECRET_MAX];
        char session_token[AWSCRED_TOKEN_MAX]; /* "" when none */
        uint64_t expiration_usec;              /* wall clock; 0 = never expires */
        enum awscred_source source;
};

struct awscred_settings {
        const char *credentials_file; /* NULL or "": the chain */
        const char *profile;          /* NULL or "": AWS_PROFILE, else "default" */
        const char *region;           /* NULL or "": the chain */
};

/* <r> is 0 with credentials valid during the call, or -ENOKEY (no credentials anywhere), -EINVAL (a file
 * or the metadata service gave something malformed), -ECANCELED, or a transport error of the metadata
 * service (curlev.h) / -EPROTO (it answered with an unexpected HTTP status). */
typedef void (*awscred_cb)(int r, const struct awscred_credentials *cred, void *userdata);
/* <r> is 0 with the region, or -ENOENT (no region anywhere), or as above. */
typedef void (*awscred_region_cb)(int r, const char *region, void *userdata);

/* Reads the environment and the files. Returns 0, -EINVAL when [ec2] credentials_file can't be read or
 * holds no usable key, -ENOMEM. <curl> is borrowed and must outlive the awscred. */
int awscred_new(struct event_base *base, struct curlev *curl, const struct awscred_settings *s,
                struct awscred **ret);
/* Frees <a> (NULL allowed) without calling pending callbacks; wipes the secrets. Returns NULL. */
struct awscred *awscred_free(struct awscred *a);

/* Calls <cb> from the event loop (never inside this call) with credentials that stay valid for at least
 * a minute, fetching them from the metadata service first when needed. Returns 0, or -EBUSY when too many
 * callers wait, -ENOMEM. */
int awscred_get(struct awscred *a, awscred_cb cb, void *userdata);
/* The same for the region. */
int awscred_get_region(struct awscred *a, awscred_region_cb cb, void *userdata);
/* Forgets the callbacks registered with <userdata>: they won't be called. */
void awscred_cancel(struct awscred *a, void *userdata);

/* Where the credentials come from, when known without asking the metadata service; NONE otherwise. */
enum awscred_source awscred_static_source(const struct awscred *a);
const char *awscred_source_name(enum awscred_source s);

/* Writes "****" and the last 4 characters of <key_id> into <buf>, for logs. */
void awscred_mask(const char *key_id, char buf[static AWSCRED_MASK_LEN]);

/* The pieces, exposed for tests. */

/* Looks for credentials in the environment and the files (steps 1 to 4). Returns 0 with <ret> filled,
 * -ENOKEY when none is found, -EINVAL as for awscred_new(). */
int awscred_load_static(const struct awscred_settings *s, struct awscred_credentials *ret);
/* Looks for the region in the settings, the environment and the config file. Returns 0, -ENOENT. */
int awscred_load_region(const struct awscred_settings *s, char ret[static AWSCRED_REGION_MAX]);
/* Parses the metadata service's credentials document (JSON: Code, AccessKeyId, SecretAccessKey, Token,
 * Expiration). Returns 0 or -EINVAL. */
int awscred_parse_imds_credentials(const char *json, size_t len, struct awscred_credentials *ret);

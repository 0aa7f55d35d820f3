/* Unit tests for aws/awscred.c: the order of the credential sources (lbd's own file, the environment, the
 * shared credentials file, the shared config file), profiles and their spellings, the region chain, the
 * metadata service's credential document, and the IMDSv2 exchange against a scripted server
 * (tests/unit/fakehttp.h): token PUT with its TTL, the token on every GET, caching, refresh before expiry,
 * a new token after a 401, no role, and the service turned off. HOME points at an empty directory so the
 * machine's own ~/.aws never plays a part. */
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
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "aws/awscred.h"
#include "aws/curlev.h"
#include "common/log.h"
#include "common/macro.h"
#include "tests/unit/fakehttp.h"

static char tmpdir[] = "/tmp/test-awscred-XXXXXX";

static const char *const aws_vars[] = {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_EC2_METADATA_DISABLED",
};

static void write_file(const char *name, const char *text)
{
        char path[256];
        FILE *f;

        (void)snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
        f = fopen(path, "we");
        assert_non_null(f);
        assert_int_equal(fputs(text, f) >= 0, 1);
        assert_int_equal(fclose(f), 0);
}

static const char *path_of(const char *name)
{
        static char paths[4][256];
        static unsigned next;
        char *p = paths[next++ % 4];

        (void)snprintf(p, 256, "%s/%s", tmpdir, name);
        return p;
}

static int reset_env(void **state)
{
        for (size_t i = 0; i < ELEMENTSOF(aws_vars); i++)
                unsetenv(aws_vars[i]);
        setenv("HOME", tmpdir, 1);
        setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
        return 0;
}

static const char credentials_file[] = "# comment\n"
                                       "[default]\n"
                                       "aws_access_key_id = AKIADEFAULT00000001\n"
                                       "aws_secret_access_key=secret/default+1\n"
                                       "\n"
                                       "; another comment\n"
                                       "[other]\n"
                                       "  aws_access_key_id   =   AKIAOTHER0000000002   \r\n"
                                       "AWS_SECRET_ACCESS_KEY = secret-other\n"
                                       "aws_session_token = token-other==\n"
                                       "s3 =\n"
                                       "  max_concurrent_requests = 20\n"
                                       "  aws_access_key_id = NOT-THIS-ONE\n"
                                       "[partial]\n"
                                       "aws_access_key_id = AKIAPARTIAL00000003\n";

static const char config_file[] = "[default]\n"
                                  "region = eu-west-1\n"
                                  "[profile cfg]\n"
                                  "aws_access_key_id = AKIACONFIG000000004\n"
                                  "aws_secret_access_key = secret-config\n"
                                  "region = ap-south-1\n"
                                  "[cfg]\n"
                                  "region = wrong-section\n"
                                  "[profile   spaced]\n"
                                  "region = sa-east-1\n";

static void test_environment_first(void **state)
{
        struct awscred_credentials c;

        write_file("credentials", credentials_file);
        setenv("AWS_SHARED_CREDENTIALS_FILE", path_of("credentials"), 1);
        setenv("AWS_ACCESS_KEY_ID", "AKIAENV0000000000005", 1);
        setenv("AWS_SECRET_ACCESS_KEY", "secret-env", 1);
        setenv("AWS_SESSION_TOKEN", "token-env", 1);
        assert_int_equal(awscred_load_static(NULL, &c), 0);
        assert_int_equal(c.source, AWSCRED_SOURCE_ENV);
        assert_string_equal(c.access_key_id, "AKIAENV0000000000005");
        assert_string_equal(c.secret_access_key, "secret-env");
        assert_string_equal(c.session_token, "token-env");
        assert_int_equal(c.expiration_usec, 0);

        /* Half a key in the environment: the next source. */
        unsetenv("AWS_SECRET_ACCESS_KEY");
        assert_int_equal(awscred_load_static(NULL, &c), 0);
        assert_int_equal(c.source, AWSCRED_SOURCE_CREDENTIALS_FILE);
        assert_string_equal(c.access_key_id, "AKIADEFAULT00000001");
        assert_string_equal(c.secret_access_key, "secret/default+1");
        assert_string_equal(c.session_token, "");

        /* A value with a blank inside would end up in a header: refused. */
        setenv("AWS_SECRET_ACCESS_KEY", "two words", 1);
        assert_int_equal(awscred_load_static(NULL, &c), -EINVAL);
}

static void test_profiles(void **state)
{
        struct awscred_credentials c;
        struct awscred_settings s = {.profile = "other"};

        write_file("credentials", credentials_file);
        write_file("config", config_file);
        setenv("AWS_SHARED_CREDENTIALS_FILE", path_of("credentials"), 1);
        setenv("AWS_CONFIG_FILE", path_of("config"), 1);

        setenv("AWS_PROFILE", "other", 1);
        assert_int_equal(awscred_load_static(NULL, &c), 0);
        assert_string_equal(c.access_key_id, "AKIAOTHER0000000002");
        assert_string_equal(c.secret_access_key, "secret-other");
        assert_string_equal(c.session_token, "token-other==");

        /* [ec2] profile wins over AWS_PROFILE. */
        setenv("AWS_PROFILE", "default", 1);
        assert_int_equal(awscred_load_static(&s, &c), 0);
        assert_string_equal(c.access_key_id, "AKIAOTHER0000000002");

        /* Found only in the config file, as [profile cfg]. */
        s.profile = "cfg";
        assert_int_equal(awscred_load_static(&s, &c), 0);
        assert_int_equal(c.source, AWSCRED_SOURCE_CONFIG_FILE);
        assert_string_equal(c.access_key_id, "AKIACONFIG000000004");

        /* A key id without its secret is no credential; nor is a missing profile. */
        s.profile = "partial";
        assert_int_equal(awscred_load_static(&s, &c), -ENOKEY);
        s.profile = "nosuch";
        assert_int_equal(awscred_load_static(&s, &c), -ENOKEY);

        /* Files that don't exist: nothing, no error. */
        setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
        setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);
        assert_int_equal(awscred_load_static(NULL, &c), -ENOKEY);
}

static void test_default_paths(void **state)
{
        struct awscred_credentials c;
        char dir[256];

        (void)snprintf(dir, sizeof(dir), "%s/.aws", tmpdir);
        (void)mkdir(dir, 0700);
        write_file(".aws/credentials", "[default]\naws_access_key_id=AKIAHOME00000000006\n"
                                       "aws_secret_access_key=secret-home\n");
        assert_int_equal(awscred_load_static(NULL, &c), 0);
        assert_string_equal(c.access_key_id, "AKIAHOME00000000006");
        /* "~/" in the variable is the home directory too. */
        write_file("alt", "[default]\naws_access_key_id=AKIAALT000000000007\naws_secret_access_key=s\n");
        setenv("AWS_SHARED_CREDENTIALS_FILE", "~/alt", 1);
        assert_int_equal(awscred_load_static(NULL, &c), 0);
        assert_string_equal(c.access_key_id, "AKIAALT000000000007");
        (void)unlink(path_of(".aws/credentials"));
        (void)rmdir(dir);
}

static void test_lbd_credentials_file(void **state)
{
        struct awscred_credentials c;
        struct awscred_settings s = {.credentials_file = path_of("lbd-credentials")};

        write_file("lbd-credentials",
                   "[default]\naws_access_key_id = AKIALBD000000000008\n"
                   "aws_secret_access_key = secret-lbd\n[p2]\naws_access_key_id=AKIAP2\n");
        setenv("AWS_ACCESS_KEY_ID", "AKIAENV0000000000005", 1);
        setenv("AWS_SECRET_ACCESS_KEY", "secret-env", 1);
        /* lbd's own setting beats the environment. */
        assert_int_equal(awscred_load_static(&s, &c), 0);
        assert_int_equal(c.source, AWSCRED_SOURCE_LBD_CONFIG);
        assert_string_equal(c.access_key_id, "AKIALBD000000000008");
        /* ... and when it names a file without a usable key, that is an error, not a fallback. */
        s.profile = "p2";
        assert_int_equal(awscred_load_static(&s, &c), -EINVAL);
        s.credentials_file = "/nonexistent/lbd-credentials";
        s.profile = NULL;
        assert_int_equal(awscred_load_static(&s, &c), -EINVAL);
}

static void test_region(void **state)
{
        char region[AWSCRED_REGION_MAX];
        struct awscred_settings s = {.region = "us-west-2"};

        write_file("config", config_file);
        setenv("AWS_CONFIG_FILE", path_of("config"), 1);
        setenv("AWS_REGION", "eu-central-1", 1);
        setenv("AWS_DEFAULT_REGION", "eu-north-1", 1);
        assert_int_equal(awscred_load_region(&s, region), 0);
        assert_string_equal(region, "us-west-2");
        assert_int_equal(awscred_load_region(NULL, region), 0);
        assert_string_equal(region, "eu-central-1");
        unsetenv("AWS_REGION");
        assert_int_equal(awscred_load_region(NULL, region), 0);
        assert_string_equal(region, "eu-north-1");
        unsetenv("AWS_DEFAULT_REGION");
        assert_int_equal(awscred_load_region(NULL, region), 0);
        assert_string_equal(region, "eu-west-1");
        s = (struct awscred_settings){.profile = "cfg"};
        assert_int_equal(awscred_load_region(&s, region), 0);
        assert_string_equal(region, "ap-south-1");
        s.profile = "spaced";
        assert_int_equal(awscred_load_region(&s, region), 0);
        assert_string_equal(region, "sa-east-1");
        s.profile = "nosuch";
        assert_int_equal(awscred_load_region(&s, region), -ENOENT);
}

static void test_imds_document(void **state)
{
        struct awscred_credentials c;
        const char ok[] =
                "{\"Code\":\"Success\",\"LastUpdated\":\"2024-05-01T11:00:00Z\",\"Type\":\"AWS-HMAC\","
                "\"AccessKeyId\":\"ASIAROLE00000000009\",\"SecretAccessKey\":\"secret-role\","
                "\"Token\":\"token-role\",\"Expiration\":\"2024-05-01T17:00:00Z\"}";
        const char *bad[] = {
                "{\"Code\":\"Failure\",\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s\"}",
                "{\"AccessKeyId\":\"A\"}",
                "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s\",\"Expiration\":\"tomorrow\"}",
                "{\"AccessKeyId\":\"A B\",\"SecretAccessKey\":\"s\"}",
                "{\"AccessKeyId\":1,\"SecretAccessKey\":\"s\"}",
                "[]",
                "not json",
        };

        assert_int_equal(awscred_parse_imds_credentials(ok, strlen(ok), &c), 0);
        assert_int_equal(c.source, AWSCRED_SOURCE_IMDS);
        assert_string_equal(c.access_key_id, "ASIAROLE00000000009");
        assert_string_equal(c.secret_access_key, "secret-role");
        assert_string_equal(c.session_token, "token-role");
        assert_int_equal(c.expiration_usec, UINT64_C(1714582800) * USEC_PER_SEC);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                print_message("bad: %s\n", bad[i]);
                assert_int_equal(awscred_parse_imds_credentials(bad[i], strlen(bad[i]), &c), -EINVAL);
        }
}

static void test_mask(void **state)
{
        char buf[AWSCRED_MASK_LEN];

        awscred_mask("AKIAIOSFODNN7EXAMPLE", buf);
        assert_string_equal(buf, "****MPLE");
        awscred_mask("short", buf);
        assert_string_equal(buf, "****");
        awscred_mask(NULL, buf);
        assert_string_equal(buf, "****");
}

/* ---------------------------------------------------------------------------------------------------- */
/* The metadata service */

struct imds {
        char token[64];
        char expiration[32];
        unsigned token_puts;
        bool reject_next_get; /* 401 once */
        bool no_role;
};

static int imds_handler(struct fakehttp *f, const struct fakehttp_request *req, const char **ret_body)
{
        struct imds *m = f->userdata;
        static char creds[512];
        char expect[128];

        if (strcmp(req->uri, "/latest/api/token") == 0) {
                if (strcmp(req->method, "PUT") != 0 ||
                    !strstr(req->headers, "X-aws-ec2-metadata-token-ttl-seconds: 21600\n"))
                        return 400;
                m->token_puts++;
                (void)snprintf(m->token, sizeof(m->token), "token-%u", m->token_puts);
                *ret_body = m->token;
                return 200;
        }
        (void)snprintf(expect, sizeof(expect), "X-aws-ec2-metadata-token: %s\n", m->token);
        if (strcmp(req->method, "GET") != 0 || !m->token[0] || !strstr(req->headers, expect))
                return 401;
        if (m->reject_next_get) {
                m->reject_next_get = false;
                return 401;
        }
        if (strcmp(req->uri, "/latest/meta-data/iam/security-credentials/") == 0) {
                if (m->no_role)
                        return 404;
                *ret_body = "lbd-role\n";
                return 200;
        }
        if (strcmp(req->uri, "/latest/meta-data/iam/security-credentials/lbd-role") == 0) {
                (void)snprintf(
                        creds, sizeof(creds),
                        "{\"Code\":\"Success\",\"AccessKeyId\":\"ASIAROLE%u\",\"SecretAccessKey\":\"s\","
                        "\"Token\":\"session\",\"Expiration\":\"%s\"}",
                        m->token_puts, m->expiration);
                *ret_body = creds;
                return 200;
        }
        if (strcmp(req->uri, "/latest/meta-data/placement/region") == 0) {
                *ret_body = "ca-central-1";
                return 200;
        }
        return 404;
}

struct got {
        bool done;
        int r;
        char key_id[AWSCRED_KEY_ID_MAX];
        char token[AWSCRED_TOKEN_MAX];
        char region[AWSCRED_REGION_MAX];
        enum awscred_source source;
};

static void on_credentials(int r, const struct awscred_credentials *c, void *userdata)
{
        struct got *g = userdata;

        g->done = true;
        g->r = r;
        if (r >= 0) {
                (void)snprintf(g->key_id, sizeof(g->key_id), "%s", c->access_key_id);
                (void)snprintf(g->token, sizeof(g->token), "%s", c->session_token);
                g->source = c->source;
        }
}

static void on_region(int r, const char *region, void *userdata)
{
        struct got *g = userdata;

        g->done = true;
        g->r = r;
        if (r >= 0)
                (void)snprintf(g->region, sizeof(g->region), "%s", region);
}

static void run_until(struct event_base *base, const bool *done)
{
        uint64_t deadline = now_usec() + 10 * USEC_PER_SEC;

        while (!*done && now_usec() < deadline)
                (void)event_base_loop(base, EVLOOP_ONCE);
        assert_true(*done);
}

static void format_expiration(char *buf, size_t size, time_t when)
{
        struct tm tm;

        assert_non_null(gmtime_r(&when, &tm));
        assert_true(strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0);
}

static void test_imds(void **state)
{
        struct event_base *base = event_base_new();
        struct curlev *curl = NULL;
        struct awscred *a = NULL;
        struct fakehttp *srv = calloc(1, sizeof(*srv)); /* too big for the stack */
        struct imds m = {0};
        struct got g = {0};
        char endpoint[64];
        size_t requests;

        assert_non_null(base);
        assert_non_null(srv);
        assert_int_equal(curlev_new(base, &curl), 0);
        fakehttp_start(srv, base);
        srv->handler = imds_handler;
        srv->userdata = &m;
        format_expiration(m.expiration, sizeof(m.expiration), time(NULL) + 6 * 3600);
        (void)snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%u/", srv->port);
        unsetenv("AWS_EC2_METADATA_DISABLED");
        setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint, 1);
        setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
        setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);

        assert_int_equal(awscred_new(base, curl, NULL, &a), 0);
        assert_int_equal(awscred_static_source(a), AWSCRED_SOURCE_NONE);

        /* Region and credentials asked at once: one token serves both. */
        {
                struct got gr = {0};

                assert_int_equal(awscred_get_region(a, on_region, &gr), 0);
                assert_int_equal(awscred_get(a, on_credentials, &g), 0);
                assert_false(g.done);
                run_until(base, &gr.done);
                run_until(base, &g.done);
                assert_int_equal(gr.r, 0);
                assert_string_equal(gr.region, "ca-central-1");
        }
        assert_int_equal(g.r, 0);
        assert_string_equal(g.key_id, "ASIAROLE1");
        assert_string_equal(g.token, "session");
        assert_int_equal(g.source, AWSCRED_SOURCE_IMDS);
        assert_int_equal(m.token_puts, 1);
        assert_int_equal(srv->n_requests, 4); /* PUT, region, role, credentials */

        /* Cached: no request. */
        requests = srv->n_requests;
        memset(&g, 0, sizeof(g));
        assert_int_equal(awscred_get(a, on_credentials, &g), 0);
        run_until(base, &g.done);
        assert_int_equal(g.r, 0);
        assert_int_equal(srv->n_requests, requests);
        awscred_free(a);

        /* Credentials 10 minutes from expiry: handed out at once and fetched again behind. */
        format_expiration(m.expiration, sizeof(m.expiration), time(NULL) + 600);
        assert_int_equal(awscred_new(base, curl, &(struct awscred_settings){.region = "us-east-1"}, &a), 0);
        memset(&g, 0, sizeof(g));
        assert_int_equal(awscred_get(a, on_credentials, &g), 0);
        run_until(base, &g.done);
        assert_int_equal(g.r, 0);
        requests = srv->n_requests;
        memset(&g, 0, sizeof(g));
        assert_int_equal(awscred_get(a, on_credentials, &g), 0);
        run_until(base, &g.done);
        assert_int_equal(g.r, 0);
        {
                uint64_t deadline = now_usec() + 5 * USEC_PER_SEC;

                while (srv->n_requests < requests + 2 && now_usec() < deadline)
                        (void)event_base_loop(base, EVLOOP_ONCE);
        }
        assert_int_equal(srv->n_requests, requests + 2); /* role, credentials: the token is reused */

        /* A rejected token: a new one, then on. */
        awscred_free(a);
        format_expiration(m.expiration, sizeof(m.expiration), time(NULL) + 6 * 3600);
        assert_int_equal(awscred_new(base, curl, NULL, &a), 0);
        m.reject_next_get = true;
        memset(&g, 0, sizeof(g));
        assert_int_equal(awscred_get(a, on_credentials, &g), 0);
        run_until(base, &g.done);
        assert_int_equal(g.r, 0);
        assert_int_equal(m.token_puts, 4);

        /* No role on the instance. */
        awscred_free(a);
        m.no_role = true;
        assert_int_equal(awscred_new(base, curl, NULL, &a), 0);
        memset(&g, 0, sizeof(g));
        assert_int_equal(awscred_get(a, on_credentials, &g), 0);
        run_until(base, &g.done);
        assert_int_equal(g.r, -ENOKEY);
        awscred_free(a);

        /* Turned off: never asked. */
        requests = srv->n_requests;
        setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
        assert_int_equal(awscred_new(base, curl, NULL, &a), 0);
        memset(&g, 0, sizeof(g));
        assert_int_equal(awscred_get(a, on_credentials, &g), 0);
        run_until(base, &g.done);
        assert_int_equal(g.r, -ENOKEY);
        memset(&g, 0, sizeof(g));
        assert_int_equal(awscred_get_region(a, on_region, &g), 0);
        run_until(base, &g.done);
        assert_int_equal(g.r, -ENOENT);
        assert_int_equal(srv->n_requests, requests);

        /* Freed with a caller waiting: no callback. */
        unsetenv("AWS_EC2_METADATA_DISABLED");
        awscred_free(a);
        assert_int_equal(awscred_new(base, curl, NULL, &a), 0);
        memset(&g, 0, sizeof(g));
        assert_int_equal(awscred_get(a, on_credentials, &g), 0);
        a = awscred_free(a);
        for (int i = 0; i < 20; i++)
                (void)event_base_loop(base, EVLOOP_NONBLOCK);
        assert_false(g.done);

        fakehttp_stop(srv);
        free(srv);
        curlev_free(curl);
        event_base_free(base);
}

static int group_setup(void **state)
{
        assert_non_null(mkdtemp(tmpdir));
        return 0;
}

static int group_teardown(void **state)
{
        const char *names[] = {"credentials", "config", "alt", "lbd-credentials"};

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                (void)unlink(path_of(names[i]));
        (void)rmdir(tmpdir);
        return 0;
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup(test_environment_first, reset_env),
                cmocka_unit_test_setup(test_profiles, reset_env),
                cmocka_unit_test_setup(test_default_paths, reset_env),
                cmocka_unit_test_setup(test_lbd_credentials_file, reset_env),
                cmocka_unit_test_setup(test_region, reset_env),
                cmocka_unit_test_setup(test_imds_document, reset_env),
                cmocka_unit_test_setup(test_mask, reset_env),
                cmocka_unit_test_setup(test_imds, reset_env),
        };

        log_set_max_level(LOG_WARNING);
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

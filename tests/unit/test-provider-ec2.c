/* Unit tests for lbd/provider-ec2.c through the provider interface (provider_new() with provider = ec2),
 * against a scripted EC2 endpoint (tests/unit/fakehttp.h): instances become backends at their private
 * address and [pool] port, and an address outside [pool] networks is never reported (has_addr false);
 * states are mapped; a launch carries the rendered user data ({{upstream}} filled in), the pool's tag, a
 * Name tag and the caller's ClientToken; terminate names the ids; a reload while a call runs still lets
 * that call report; errors come back as the provider's -errno. */
#include <errno.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/macro.h"
#include "lbd/config.h"
#include "lbd/provider.h"
#include "tests/unit/fakehttp.h"

#define ITEM(id, state, ip)                                                                                 \
        "<item><instanceId>" id "</instanceId><instanceState><name>" state "</name></instanceState>"        \
        "<launchTime>2024-05-01T12:00:00.000Z</launchTime><privateIpAddress>" ip                            \
        "</privateIpAddress></item>"

/* clang-format off */
static const char describe[] =
        "<DescribeInstancesResponse><reservationSet><item><instancesSet>"
        ITEM("i-in", "running", "127.0.1.4")
        ITEM("i-out", "running", "192.0.2.5")
        ITEM("i-none", "pending", "")
        ITEM("i-stop", "stopped", "127.0.1.6")
        ITEM("i-odd", "rebooting", "127.0.1.7")
        "</instancesSet></item></reservationSet></DescribeInstancesResponse>";

static const char run[] =
        "<RunInstancesResponse><instancesSet>"
        ITEM("i-new", "pending", "127.0.1.9")
        "</instancesSet></RunInstancesResponse>";
/* clang-format on */

struct fixture {
        struct event_base *base;
        struct fakehttp *server;
        struct config config, config2;
        struct provider *p;
        char template_path[64];
};

struct result {
        bool done;
        int r;
        struct instance v[8];
        size_t n;
};

static void on_list(struct provider *p, int r, const struct instance *v, size_t n, void *userdata)
{
        struct result *res = userdata;

        res->done = true;
        res->r = r;
        res->n = n;
        for (size_t i = 0; i < n && i < ELEMENTSOF(res->v); i++)
                res->v[i] = v[i];
}

static void on_terminate(struct provider *p, int r, void *userdata)
{
        on_list(p, r, NULL, 0, userdata);
}

static void run_until(struct event_base *base, const bool *done)
{
        uint64_t deadline = now_usec() + 10 * USEC_PER_SEC;

        while (!*done && now_usec() < deadline)
                (void)event_base_loop(base, EVLOOP_ONCE);
        assert_true(*done);
}

static void fill_config(struct fixture *f, struct config *c)
{
        char endpoint[64];

        config_init(c);
        (void)snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%u", f->server->port);
        assert_int_equal(config_set(c, "pool", "provider", "ec2", NULL), 0);
        assert_int_equal(config_set(c, "pool", "port", "8080", NULL), 0);
        assert_int_equal(config_set(c, "pool", "networks", "127.0.0.0/8", NULL), 0);
        assert_int_equal(config_set(c, "ec2", "endpoint", endpoint, NULL), 0);
        assert_int_equal(config_set(c, "ec2", "region", "us-east-1", NULL), 0);
        assert_int_equal(config_set(c, "ec2", "image", "ami-1", NULL), 0);
        assert_int_equal(config_set(c, "ec2", "subnet", "subnet-1", NULL), 0);
        assert_int_equal(config_set(c, "ec2", "user_data", f->template_path, NULL), 0);
        assert_int_equal(config_set(c, "ec2", "upstream", "127.0.0.1:9000", NULL), 0);
        assert_int_equal(config_set(c, "ec2", "tag", "lbd:pool=main", NULL), 0);
        config_finish(c);
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        FILE *t;
        int fd;

        assert_non_null(f);
        setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
        setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1);
        setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
        memcpy(f->template_path, "/tmp/test-provider-ec2-XXXXXX", sizeof("/tmp/test-provider-ec2-XXXXXX"));
        fd = mkstemp(f->template_path);
        assert_true(fd >= 0);
        t = fdopen(fd, "w");
        assert_non_null(t);
        assert_true(fputs("#!/bin/sh\nexec lbd --backend {{upstream}} # {{upstream}}\n", t) >= 0);
        assert_int_equal(fclose(t), 0);

        f->base = event_base_new();
        f->server = calloc(1, sizeof(*f->server));
        assert_non_null(f->base);
        assert_non_null(f->server);
        fakehttp_start(f->server, f->base);
        fill_config(f, &f->config);
        assert_int_equal(provider_new(f->base, &f->config, &f->p), 0);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        provider_free(f->p);
        fakehttp_stop(f->server);
        free(f->server);
        event_base_free(f->base);
        (void)unlink(f->template_path);
        free(f);
        return 0;
}

static void test_list(void **state)
{
        struct fixture *f = *state;
        struct result res = {0};
        char buf[NETADDR_STRLEN];

        assert_true(f->p->ops->managed);
        fakehttp_queue(f->server, 200, describe);
        assert_int_equal(f->p->ops->list(f->p, on_list, &res), 0);
        assert_false(res.done);
        run_until(f->base, &res.done);
        assert_int_equal(res.r, 0);
        assert_int_equal(res.n, 5);

        assert_string_equal(res.v[0].id, "i-in");
        assert_int_equal(res.v[0].state, INSTANCE_RUNNING);
        assert_true(res.v[0].has_addr);
        assert_true(netaddr_format(&res.v[0].addr, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, "127.0.1.4:8080");
        assert_int_equal(res.v[0].launched_usec, UINT64_C(1714564800) * USEC_PER_SEC);

        /* Outside [pool] networks: listed, but never an address to contact. */
        assert_string_equal(res.v[1].id, "i-out");
        assert_false(res.v[1].has_addr);
        assert_string_equal(res.v[2].id, "i-none");
        assert_int_equal(res.v[2].state, INSTANCE_PENDING);
        assert_false(res.v[2].has_addr);
        assert_int_equal(res.v[3].state, INSTANCE_STOPPED);
        assert_int_equal(res.v[4].state, INSTANCE_UNKNOWN);

        assert_non_null(
                strstr(f->server->requests[0].body, "Filter.1.Name=tag%3Albd%3Apool&Filter.1.Value.1=main"));
}

static void test_launch_and_terminate(void **state)
{
        struct fixture *f = *state;
        struct result res = {0};
        const char rendered[] = "#!/bin/sh\nexec lbd --backend 127.0.0.1:9000 # 127.0.0.1:9000\n";
        unsigned char b64[256];
        char expect[512];

        fakehttp_queue(f->server, 200, run);
        assert_int_equal(f->p->ops->launch(f->p, 1, NULL, "lbd-token-1", on_list, &res), 0);
        run_until(f->base, &res.done);
        assert_int_equal(res.r, 0);
        assert_int_equal(res.n, 1);
        assert_string_equal(res.v[0].id, "i-new");
        assert_true(res.v[0].has_addr);

        (void)EVP_EncodeBlock(b64, (const unsigned char *)rendered, (int)strlen(rendered));
        {
                /* '+', '/' and '=' of base64 are percent-encoded in the form. */
                char enc[400];
                size_t o = 0;

                for (const unsigned char *p = b64; *p; p++)
                        o += (size_t)snprintf(enc + o, sizeof(enc) - o, strchr("+/=", *p) ? "%%%02X" : "%c",
                                              *p);
                (void)snprintf(expect, sizeof(expect), "&UserData=%s&", enc);
        }
        print_message("%s\n", f->server->requests[0].body);
        assert_non_null(strstr(f->server->requests[0].body, expect));
        assert_non_null(strstr(f->server->requests[0].body,
                               "&ImageId=ami-1&InstanceType=t3.micro&SubnetId=subnet-1&"));
        assert_non_null(strstr(f->server->requests[0].body,
                               "TagSpecification.1.Tag.1.Key=lbd%3Apool&TagSpecification"
                               ".1.Tag.1.Value=main&TagSpecification.1.Tag.2.Key=Name&"
                               "TagSpecification.1.Tag.2.Value=lbd-main&"));
        assert_non_null(
                strstr(f->server->requests[0].body, "&ClientToken=lbd-token-1&MinCount=1&MaxCount=1"));
        /* The launch settings' hash is a tag of its own. */
        assert_int_equal(strlen(f->p->launch_hash), INSTANCE_LAUNCH_HASH_MAX - 1);
        (void)snprintf(expect, sizeof(expect),
                       "&TagSpecification.1.Tag.3.Key=lbd%%3Alaunch-hash&TagSpecification.1.Tag.3.Value=%s&",
                       f->p->launch_hash);
        assert_non_null(strstr(f->server->requests[0].body, expect));

        memset(&res, 0, sizeof(res));
        fakehttp_queue(f->server, 200, "<TerminateInstancesResponse/>");
        assert_int_equal(
                f->p->ops->terminate(f->p, (const char *[]){"i-in", "i-stop"}, 2, on_terminate, &res), 0);
        run_until(f->base, &res.done);
        assert_int_equal(res.r, 0);
        assert_non_null(strstr(f->server->requests[1].body, "&InstanceId.1=i-in&InstanceId.2=i-stop"));
}

/* Every launch setting changes the hash; the same settings give the same hash; a reload takes the new
 * one. */
static void test_launch_hash(void **state)
{
        struct fixture *f = *state;
        static const char *const changes[][3] = {
                {"ec2", "image", "ami-2"},
                {"ec2", "instance_type", "t3.large"},
                {"ec2", "subnet", "subnet-2"},
                {"ec2", "security_groups", "sg-1"},
                {"ec2", "key_name", "k"},
                {"ec2", "instance_profile", "p"},
                {"ec2", "launch_template", "lt-1"},
                {"ec2", "tag", "lbd:pool=other"},
        };
        char base[INSTANCE_LAUNCH_HASH_MAX], h[INSTANCE_LAUNCH_HASH_MAX];
        struct config c;

        assert_int_equal(provider_ec2_launch_hash(&f->config, "ud", 2, base), 0);
        assert_int_equal(strlen(base), INSTANCE_LAUNCH_HASH_MAX - 1);
        assert_int_equal(strspn(base, "0123456789abcdef"), INSTANCE_LAUNCH_HASH_MAX - 1);
        assert_int_equal(provider_ec2_launch_hash(&f->config, "ud", 2, h), 0);
        assert_string_equal(base, h);
        /* The user data after substitution counts, byte for byte. */
        assert_int_equal(provider_ec2_launch_hash(&f->config, "ue", 2, h), 0);
        assert_string_not_equal(base, h);
        assert_int_equal(provider_ec2_launch_hash(&f->config, "ud", 1, h), 0);
        assert_string_not_equal(base, h);
        for (size_t i = 0; i < ELEMENTSOF(changes); i++) {
                c = f->config;
                assert_int_equal(config_set(&c, changes[i][0], changes[i][1], changes[i][2], NULL), 0);
                assert_int_equal(provider_ec2_launch_hash(&c, "ud", 2, h), 0);
                print_message("%s: %s vs %s\n", changes[i][1], h, base);
                assert_string_not_equal(base, h);
        }
        /* Two security groups are not one with their names run together. */
        {
                char one[INSTANCE_LAUNCH_HASH_MAX];

                c = f->config;
                assert_int_equal(config_set(&c, "ec2", "security_groups", "sg-1,sg-2", NULL), 0);
                assert_int_equal(provider_ec2_launch_hash(&c, "ud", 2, h), 0);
                assert_int_equal(config_set(&c, "ec2", "security_groups", "sg-1sg-2", NULL), 0);
                assert_int_equal(provider_ec2_launch_hash(&c, "ud", 2, one), 0);
                assert_string_not_equal(one, h);
        }

        /* A reload with a new image makes the provider launch with the new hash. */
        memcpy(base, f->p->launch_hash, sizeof(base));
        c = f->config;
        assert_int_equal(config_set(&c, "ec2", "image", "ami-2", NULL), 0);
        assert_int_equal(f->p->ops->set_config(f->p, &c), 0);
        assert_string_not_equal(f->p->launch_hash, base);
        assert_int_equal(f->p->ops->set_config(f->p, &f->config), 0);
        assert_string_equal(f->p->launch_hash, base);
}

/* A reload keeps the settings before it: a launch with launch_previous uses them (image, hash tag), one
 * without the new ones; a reload back to them swaps the two. */
static void test_launch_previous(void **state)
{
        struct fixture *f = *state;
        struct result res = {0};
        char old[INSTANCE_LAUNCH_HASH_MAX], fresh[INSTANCE_LAUNCH_HASH_MAX], expect[256];
        struct config c;

        assert_string_equal(f->p->previous_hash, "");
        memcpy(old, f->p->launch_hash, sizeof(old));
        c = f->config;
        assert_int_equal(config_set(&c, "ec2", "image", "ami-2", NULL), 0);
        assert_int_equal(f->p->ops->set_config(f->p, &c), 0);
        memcpy(fresh, f->p->launch_hash, sizeof(fresh));
        assert_string_equal(f->p->previous_hash, old);

        f->p->launch_previous = true;
        fakehttp_queue(f->server, 200, run);
        assert_int_equal(f->p->ops->launch(f->p, 1, NULL, "lbd-token-1", on_list, &res), 0);
        run_until(f->base, &res.done);
        assert_int_equal(res.r, 0);
        assert_non_null(strstr(f->server->requests[0].body, "&ImageId=ami-1&"));
        (void)snprintf(expect, sizeof(expect), "Tag.3.Value=%s&", old);
        assert_non_null(strstr(f->server->requests[0].body, expect));

        f->p->launch_previous = false;
        memset(&res, 0, sizeof(res));
        fakehttp_queue(f->server, 200, run);
        assert_int_equal(f->p->ops->launch(f->p, 1, NULL, "lbd-token-2", on_list, &res), 0);
        run_until(f->base, &res.done);
        assert_non_null(strstr(f->server->requests[1].body, "&ImageId=ami-2&"));
        (void)snprintf(expect, sizeof(expect), "Tag.3.Value=%s&", fresh);
        assert_non_null(strstr(f->server->requests[1].body, expect));

        /* The same settings again change nothing; back to the old ones swaps. */
        assert_int_equal(f->p->ops->set_config(f->p, &c), 0);
        assert_string_equal(f->p->previous_hash, old);
        assert_int_equal(f->p->ops->set_config(f->p, &f->config), 0);
        assert_string_equal(f->p->launch_hash, old);
        assert_string_equal(f->p->previous_hash, fresh);
}

/* Writes <text> to <path>: a provider started with <c> does not take it for its previous settings. */
static void previous_not_used(struct fixture *f, const struct config *c, const char *path, const char *text)
{
        struct provider *p = NULL;
        FILE *file = fopen(path, "w");

        assert_non_null(file);
        assert_true(fputs(text, file) >= 0);
        (void)fclose(file);
        assert_int_equal(provider_new(f->base, c, &p), 0);
        assert_string_equal(p->previous_hash, "");
        provider_free(p);
}

/* [ec2] previous_settings: a reload saves the settings before it; a new provider (a restart) reads them
 * back and launches with them when asked; a file whose settings do not hash to the hash it names, or with
 * a line it does not know, is not used. */
static void test_previous_settings_file(void **state)
{
        struct fixture *f = *state;
        char dir[] = "/tmp/test-provider-ec2-prev-XXXXXX", path[128], tmp[160], old[INSTANCE_LAUNCH_HASH_MAX];
        _cleanup_free_ char *text = NULL;
        struct provider *p2 = NULL;
        struct result res = {0};
        struct config c;
        FILE *file;
        long size;

        assert_non_null(mkdtemp(dir));
        (void)snprintf(path, sizeof(path), "%s/previous", dir);
        (void)snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        assert_int_equal(config_set(&f->config, "ec2", "previous_settings", path, NULL), 0);
        assert_int_equal(f->p->ops->set_config(f->p, &f->config), 0);
        assert_int_equal(access(path, F_OK), -1); /* nothing changed yet: nothing saved */
        memcpy(old, f->p->launch_hash, sizeof(old));
        c = f->config;
        assert_int_equal(config_set(&c, "ec2", "image", "ami-2", NULL), 0);
        assert_int_equal(f->p->ops->set_config(f->p, &c), 0);
        assert_int_equal(access(path, R_OK), 0);
        assert_int_equal(access(tmp, F_OK), -1);

        /* A restart with the new settings: the old ones come back from the file. */
        assert_int_equal(provider_new(f->base, &c, &p2), 0);
        assert_string_equal(p2->previous_hash, old);
        p2->launch_previous = true;
        fakehttp_queue(f->server, 200, run);
        assert_int_equal(p2->ops->launch(p2, 1, NULL, "lbd-token-1", on_list, &res), 0);
        run_until(f->base, &res.done);
        assert_int_equal(res.r, 0);
        assert_non_null(strstr(f->server->requests[0].body, "&ImageId=ami-1&"));
        assert_non_null(strstr(f->server->requests[0].body, "UserData="));
        p2 = provider_free(p2);

        /* Tampered with: the image no longer matches the hash. */
        file = fopen(path, "r");
        assert_non_null(file);
        assert_int_equal(fseek(file, 0, SEEK_END), 0);
        size = ftell(file);
        rewind(file);
        text = calloc(1, (size_t)size + 1);
        assert_non_null(text);
        assert_int_equal(fread(text, 1, (size_t)size, file), (size_t)size);
        (void)fclose(file);
        assert_non_null(strstr(text, "\nimage=ami-1\n"));
        strstr(text, "\nimage=ami-1\n")[10] = '9';
        file = fopen(path, "w");
        assert_non_null(file);
        assert_int_equal(fwrite(text, 1, (size_t)size, file), (size_t)size);
        (void)fclose(file);
        assert_int_equal(provider_new(f->base, &c, &p2), 0);
        assert_string_equal(p2->previous_hash, "");
        p2 = provider_free(p2);

        /* An unknown key, and a file cut short. */
        previous_not_used(f, &c, path, "hash=0123456789abcdef\nwhatever=1\n");
        previous_not_used(f, &c, path, "hash=0123456789abcdef\nuser_data_bytes=10\nshort");

        /* The file names the configured settings: nothing before them. */
        assert_int_equal(f->p->ops->set_config(f->p, &f->config), 0); /* back: saves ami-2's as previous */
        assert_int_equal(provider_new(f->base, &c, &p2), 0);
        assert_string_equal(p2->previous_hash, "");
        p2 = provider_free(p2);

        (void)unlink(path);
        (void)rmdir(dir);
}

static void test_errors(void **state)
{
        struct fixture *f = *state;
        struct result res = {0};

        fakehttp_queue(f->server, 401,
                       "<Response><Errors><Error><Code>AuthFailure</Code></Error></Errors></Response>");
        assert_int_equal(f->p->ops->list(f->p, on_list, &res), 0);
        run_until(f->base, &res.done);
        assert_int_equal(res.r, -EACCES);
        assert_int_equal(res.n, 0);

        memset(&res, 0, sizeof(res));
        fakehttp_queue(
                f->server, 403,
                "<Response><Errors><Error><Code>UnauthorizedOperation</Code></Error></Errors></Response>");
        assert_int_equal(f->p->ops->launch(f->p, 1, NULL, "t", on_list, &res), 0);
        run_until(f->base, &res.done);
        assert_int_equal(res.r, -EPERM);
}

static void test_reload_during_call(void **state)
{
        struct fixture *f = *state;
        struct result res = {0}, res2 = {0};

        fakehttp_queue(f->server, 200, describe);
        fakehttp_queue(f->server, 200, describe);
        assert_int_equal(f->p->ops->list(f->p, on_list, &res), 0);
        /* A reload (a new client) before the call is answered. */
        fill_config(f, &f->config2);
        assert_int_equal(config_set(&f->config2, "pool", "port", "9090", NULL), 0);
        assert_int_equal(f->p->ops->set_config(f->p, &f->config2), 0);
        assert_int_equal(f->p->ops->list(f->p, on_list, &res2), 0);
        run_until(f->base, &res.done);
        run_until(f->base, &res2.done);
        assert_int_equal(res.r, 0);
        assert_int_equal(res2.r, 0);
        assert_int_equal(res2.n, 5);
        assert_int_equal(netaddr_port(&res2.v[0].addr), 9090);

        /* A template that can't be read is refused, and the old settings stay. */
        assert_int_equal(config_set(&f->config2, "ec2", "user_data", "/nonexistent/user-data", NULL), 0);
        assert_int_equal(f->p->ops->set_config(f->p, &f->config2), -ENOENT);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_list, setup, teardown),
                cmocka_unit_test_setup_teardown(test_launch_and_terminate, setup, teardown),
                cmocka_unit_test_setup_teardown(test_launch_hash, setup, teardown),
                cmocka_unit_test_setup_teardown(test_launch_previous, setup, teardown),
                cmocka_unit_test_setup_teardown(test_previous_settings_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reload_during_call, setup, teardown),
        };

        log_set_max_level(LOG_CRIT); /* the failures provoked here are logged as errors */
        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for ec2_query() (aws/ec2.c), the generic Query call, against a scripted server
 * (tests/unit/fakehttp.h): the form it sends (order, encoding, spaces as '+'), the answer handed over as
 * it came, the error code passed on, retries of throttling, no retry of an authentication failure, the
 * answer's size bound, the argument checks, and cancellation. */
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

#include <cmocka.h>

#include "aws/ec2.h"
#include "common/log.h"
#include "common/macro.h"
#include "tests/unit/fakehttp.h"

static const char tags_ok[] = "<CreateTagsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
                              "<requestId>r</requestId><return>true</return></CreateTagsResponse>";
static const char throttled[] = "<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
                                "<Message>slow down</Message></Error></Errors></Response>";
static const char duplicate[] = "<Response><Errors><Error><Code>InvalidPermission.Duplicate</Code>"
                                "<Message>the rule already exists</Message></Error></Errors></Response>";
static const char auth_failure[] = "<ErrorResponse><Errors><Error><Code>AuthFailure</Code>"
                                   "<Message>not valid</Message></Error></Errors></ErrorResponse>";

struct outcome {
        bool done;
        int r;
        char error[EC2_ERROR_MAX];
        char code[EC2_CODE_MAX];
        char xml[4096];
        bool got_xml;
        size_t len;
};

static void on_answer(int r, const char *error, const char *code, const char *xml, size_t len,
                      void *userdata)
{
        struct outcome *o = userdata;

        assert_false(o->done);
        o->done = true;
        o->r = r;
        (void)snprintf(o->error, sizeof(o->error), "%s", error);
        (void)snprintf(o->code, sizeof(o->code), "%s", code);
        o->got_xml = xml != NULL;
        o->len = len;
        if (xml)
                (void)snprintf(o->xml, sizeof(o->xml), "%s", xml);
}

static void run_until_done(struct event_base *base, struct outcome *o, unsigned seconds)
{
        uint64_t deadline = now_usec() + seconds * USEC_PER_SEC;

        while (!o->done && now_usec() < deadline)
                (void)event_base_loop(base, EVLOOP_ONCE);
        assert_true(o->done);
}

struct fixture {
        struct event_base *base;
        struct fakehttp server;
        struct ec2 *ec2;
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        char endpoint[64];
        struct ec2_settings s = {.region = "us-east-1"};

        assert_non_null(f);
        setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
        setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1);
        unsetenv("AWS_SESSION_TOKEN");
        setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
        unsetenv("AWS_ENDPOINT_URL_EC2");
        unsetenv("AWS_ENDPOINT_URL");
        f->base = event_base_new();
        assert_non_null(f->base);
        fakehttp_start(&f->server, f->base);
        (void)snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%u", f->server.port);
        s.endpoint = endpoint;
        assert_int_equal(ec2_new(f->base, &s, &f->ec2), 0);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        ec2_free(f->ec2);
        fakehttp_stop(&f->server);
        event_base_free(f->base);
        free(f);
        return 0;
}

static void test_query_form_and_answer(void **state)
{
        struct fixture *f = *state;
        const struct ec2_param params[] = {
                {"ResourceId.1", "sg-1"},
                {"Tag.1.Key", "lbd:pool"},
                {"Tag.1.Value", "my pool"},
                {"Description", ""},
                {"Filter.1.Value.1", "ubuntu/images/hvm-ssd*/x+y=z&w~"},
        };
        struct outcome o = {0};

        fakehttp_queue(&f->server, 200, tags_ok);
        assert_int_equal(ec2_query(f->ec2, "CreateTags", params, ELEMENTSOF(params), 0, on_answer, &o, NULL),
                         0);
        assert_false(o.done); /* never from inside the call */
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, 0);
        assert_string_equal(o.error, "");
        assert_string_equal(o.code, "");
        assert_true(o.got_xml);
        assert_int_equal(o.len, strlen(tags_ok));
        assert_string_equal(o.xml, tags_ok);
        assert_int_equal(f->server.n_requests, 1);
        assert_string_equal(f->server.requests[0].method, "POST");
        assert_string_equal(
                f->server.requests[0].body,
                "Action=CreateTags&Version=2016-11-15&ResourceId.1=sg-1&Tag.1.Key=lbd%3Apool"
                "&Tag.1.Value=my+pool&Description=&Filter.1.Value.1=ubuntu%2Fimages%2Fhvm-ssd%2A%2Fx%2By"
                "%3Dz%26w~");
        assert_true(fakehttp_has_header(&f->server, 0,
                                        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
}

static void test_query_no_params(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};

        fakehttp_queue(&f->server, 200, "<DescribeRegionsResponse/>");
        assert_int_equal(ec2_query(f->ec2, "DescribeRegions", NULL, 0, 0, on_answer, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, 0);
        assert_string_equal(f->server.requests[0].body, "Action=DescribeRegions&Version=2016-11-15");
}

static void test_query_retry_then_code(void **state)
{
        struct fixture *f = *state;
        const struct ec2_param params[] = {{"GroupId", "sg-1"}};
        struct outcome o = {0};

        fakehttp_queue(&f->server, 503, throttled);
        fakehttp_queue(&f->server, 400, duplicate);
        fakehttp_queue(&f->server, 200, tags_ok);
        assert_int_equal(
                ec2_query(f->ec2, "AuthorizeSecurityGroupIngress", params, 1, 0, on_answer, &o, NULL), 0);
        run_until_done(f->base, &o, 20);
        assert_int_equal(o.r, -EINVAL);
        assert_string_equal(o.code, "InvalidPermission.Duplicate");
        assert_non_null(strstr(o.error, "InvalidPermission.Duplicate"));
        assert_false(o.got_xml);
        assert_int_equal(f->server.n_requests, 2);
        /* The retry sent the same request. */
        assert_string_equal(f->server.requests[0].body, f->server.requests[1].body);
}

static void test_query_auth_not_retried(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};

        fakehttp_queue(&f->server, 401, auth_failure);
        fakehttp_queue(&f->server, 200, tags_ok);
        assert_int_equal(ec2_query(f->ec2, "DescribeSubnets", NULL, 0, 0, on_answer, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, -EACCES);
        assert_string_equal(o.code, "AuthFailure");
        assert_int_equal(f->server.n_requests, 1);
}

static void test_query_answer_bounded(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};

        fakehttp_queue(&f->server, 200, tags_ok);
        assert_int_equal(ec2_query(f->ec2, "CreateTags", NULL, 0, 32, on_answer, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, -EBADMSG);
        assert_false(o.got_xml);
        assert_int_equal(f->server.n_requests, 1);
}

static void test_query_cancel(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};
        struct ec2_call *c = NULL;
        uint64_t deadline = now_usec() + 300 * USEC_PER_MSEC;

        fakehttp_queue(&f->server, 200, tags_ok);
        assert_int_equal(ec2_query(f->ec2, "CreateTags", NULL, 0, 0, on_answer, &o, &c), 0);
        assert_non_null(c);
        assert_null(ec2_call_cancel(c));
        while (now_usec() < deadline)
                (void)event_base_loop(f->base, EVLOOP_NONBLOCK);
        assert_false(o.done);
}

static void test_query_argument_checks(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};
        const struct ec2_param ok[] = {{"A", "b"}};
        const struct ec2_param bad_names[][1] = {
                {{"Action", "x"}},      {{"Version", "x"}}, {{"", "x"}},   {{"a=b", "x"}},
                {{"a&b", "x"}},         {{"a b", "x"}},     {{NULL, "x"}}, {{"a", NULL}},
                {{"a", "line\nbreak"}}, {{"a", "del\x7f"}},
        };
        _cleanup_free_ struct ec2_param *many = calloc(EC2_QUERY_MAX_PARAMS + 1, sizeof(*many));
        _cleanup_free_ char *long_value = malloc(EC2_QUERY_VALUE_MAX + 2);
        char long_name[EC2_QUERY_NAME_MAX + 2];

        assert_non_null(many);
        assert_non_null(long_value);
        assert_int_equal(ec2_query(NULL, "CreateTags", ok, 1, 0, on_answer, &o, NULL), -EINVAL);
        assert_int_equal(ec2_query(f->ec2, "CreateTags", ok, 1, 0, NULL, &o, NULL), -EINVAL);
        assert_int_equal(ec2_query(f->ec2, NULL, ok, 1, 0, on_answer, &o, NULL), -EINVAL);
        assert_int_equal(ec2_query(f->ec2, "", ok, 1, 0, on_answer, &o, NULL), -EINVAL);
        assert_int_equal(ec2_query(f->ec2, "Create Tags", ok, 1, 0, on_answer, &o, NULL), -EINVAL);
        assert_int_equal(ec2_query(f->ec2, "Create-Tags", ok, 1, 0, on_answer, &o, NULL), -EINVAL);
        assert_int_equal(ec2_query(f->ec2, "CreateTags&x=y", ok, 1, 0, on_answer, &o, NULL), -EINVAL);
        assert_int_equal(ec2_query(f->ec2, "CreateTags", NULL, 1, 0, on_answer, &o, NULL), -EINVAL);
        for (size_t i = 0; i < ELEMENTSOF(bad_names); i++)
                assert_int_equal(ec2_query(f->ec2, "CreateTags", bad_names[i], 1, 0, on_answer, &o, NULL),
                                 -EINVAL);

        memset(long_name, 'a', sizeof(long_name) - 1);
        long_name[sizeof(long_name) - 1] = 0;
        {
                const struct ec2_param p[] = {{long_name, "x"}};

                assert_int_equal(ec2_query(f->ec2, "CreateTags", p, 1, 0, on_answer, &o, NULL), -EINVAL);
        }
        memset(long_value, 'v', EC2_QUERY_VALUE_MAX + 1);
        long_value[EC2_QUERY_VALUE_MAX + 1] = 0;
        {
                const struct ec2_param p[] = {{"UserData", long_value}};

                assert_int_equal(ec2_query(f->ec2, "RunInstances", p, 1, 0, on_answer, &o, NULL), -E2BIG);
        }
        for (size_t i = 0; i <= EC2_QUERY_MAX_PARAMS; i++)
                many[i] = (struct ec2_param){"A", "b"};
        assert_int_equal(
                ec2_query(f->ec2, "CreateTags", many, EC2_QUERY_MAX_PARAMS + 1, 0, on_answer, &o, NULL),
                -E2BIG);
        assert_int_equal(
                ec2_query(f->ec2, "CreateTags", ok, 1, EC2_QUERY_MAX_RESPONSE + 1, on_answer, &o, NULL),
                -E2BIG);
        assert_false(o.done);
        assert_int_equal(f->server.n_requests, 0);
        assert_int_equal(ec2_requests_total(f->ec2), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_query_form_and_answer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_query_no_params, setup, teardown),
                cmocka_unit_test_setup_teardown(test_query_retry_then_code, setup, teardown),
                cmocka_unit_test_setup_teardown(test_query_auth_not_retried, setup, teardown),
                cmocka_unit_test_setup_teardown(test_query_answer_bounded, setup, teardown),
                cmocka_unit_test_setup_teardown(test_query_cancel, setup, teardown),
                cmocka_unit_test_setup_teardown(test_query_argument_checks, setup, teardown),
        };

        log_set_max_level(LOG_ERR);
        return cmocka_run_group_tests(tests, NULL, NULL);
}

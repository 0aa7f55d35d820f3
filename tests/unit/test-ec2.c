/* Unit tests for aws/ec2.c: the XML parsers on recorded answers (instances over several reservations and
 * pages, nested addresses that must not be taken, errors in both envelopes, every field bounded, DTDs
 * refused), the error classes and the backoff, and whole calls against a scripted server
 * (tests/unit/fakehttp.h): pagination, retries after throttling and 5xx, no retry after an
 * authentication failure, the request parameters and the signature headers. */
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

#define INSTANCE_XML(id, state, ip)                                                                         \
        "<item><instanceId>" id "</instanceId><imageId>ami-1</imageId>"                                     \
        "<instanceState><code>16</code><name>" state "</name></instanceState>"                              \
        "<networkInterfaceSet><item><privateIpAddress>192.0.2.9</privateIpAddress>"                          \
        "<subnetId>subnet-nested</subnetId></item></networkInterfaceSet>"                                   \
        "<launchTime>2024-05-01T12:00:00.000Z</launchTime><subnetId>subnet-1</subnetId>"                    \
        "<placement><availabilityZone>us-east-1a</availabilityZone><tenancy>default</tenancy></placement>"   \
        "<privateIpAddress>" ip "</privateIpAddress></item>"

/* clang-format off */
static const char describe_page1[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
        "<requestId>r1</requestId><reservationSet>"
        "<item><reservationId>r-1</reservationId><instancesSet>"
        INSTANCE_XML("i-0aaa", "running", "127.0.1.4")
        INSTANCE_XML("i-0bbb", "pending", "127.0.1.5")
        "</instancesSet></item>"
        "<item><reservationId>r-2</reservationId><instancesSet>"
        INSTANCE_XML("i-0ccc", "stopped", "")
        "</instancesSet></item>"
        "</reservationSet><nextToken>tok+/=1</nextToken></DescribeInstancesResponse>";

static const char describe_page2[] =
        "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
        "<reservationSet><item><instancesSet>"
        INSTANCE_XML("i-0ddd", "shutting-down", "127.0.1.7")
        "</instancesSet></item></reservationSet></DescribeInstancesResponse>";
/* clang-format on */

static const char describe_empty[] =
        "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
        "<requestId>x</requestId><reservationSet/></DescribeInstancesResponse>";

/* clang-format off */
static const char run_response[] =
        "<RunInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
        "<reservationId>r-9</reservationId><instancesSet>"
        INSTANCE_XML("i-0eee", "pending", "127.0.1.9")
        "</instancesSet></RunInstancesResponse>";
/* clang-format on */

static const char terminate_response[] =
        "<TerminateInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><instancesSet>"
        "<item><instanceId>i-0aaa</instanceId><currentState><code>32</code><name>shutting-down</name>"
        "</currentState></item></instancesSet></TerminateInstancesResponse>";

static const char throttled[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
                                "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
                                "</Error></Errors><RequestID>abc</RequestID></Response>";

static const char auth_failure[] =
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ErrorResponse><Errors><Error>"
        "<Code>AuthFailure</Code><Message>AWS was not able to validate the provided "
        "access credentials</Message><Type>Sender</Type></Error></Errors>"
        "</ErrorResponse>";

static const char unavailable[] = "<Response><Errors><Error><Code>Unavailable</Code><Message>The server is "
                                  "overloaded</Message></Error></Errors></Response>";

/* clang-format off */
#define TAGGED_XML(id, tags)                                                                                 \
        "<item><instanceId>" id "</instanceId><instanceState><code>16</code><name>running</name>"          \
        "</instanceState><privateIpAddress>127.0.1.8</privateIpAddress><tagSet>" tags "</tagSet></item>"
#define TAG_XML(k, v) "<item><key>" k "</key><value>" v "</value></item>"
static const char describe_tagged[] =
        "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
        "<reservationSet><item><instancesSet>"
        TAGGED_XML("i-1", TAG_XML("lbd:pool", "main") TAG_XML("lbd:launch-hash", "0123abcd"))
        TAGGED_XML("i-2", TAG_XML("lbd:launch-hash", "0123ABCD"))
        TAGGED_XML("i-3", TAG_XML("lbd:launch-hash", "01 23"))
        TAGGED_XML("i-4", TAG_XML("lbd:launch-hash", "00000000000000000000000000000000000000000000000000000000000000000"))
        TAGGED_XML("i-5", TAG_XML("Name", "x"))
        TAGGED_XML("i-6", TAG_XML("lbd:launch-hash", ""))
        "</instancesSet></item></reservationSet></DescribeInstancesResponse>";
/* clang-format on */

/* The launch hash tag is read back; a value lbd could not have written reads as none, and never makes the
 * answer unreadable. */
static void test_parse_launch_hash(void **state)
{
        struct ec2_instance *list = NULL;
        char token[EC2_NEXT_TOKEN_MAX];
        size_t n = 0;

        assert_int_equal(ec2_parse_instances(describe_tagged, strlen(describe_tagged), &list, &n, token), 0);
        assert_int_equal(n, 6);
        assert_string_equal(list[0].launch_hash, "0123abcd");
        for (size_t i = 1; i < n; i++)
                assert_string_equal(list[i].launch_hash, "");
        free(list);
}

static void test_parse_describe(void **state)
{
        struct ec2_instance *list = NULL;
        char token[EC2_NEXT_TOKEN_MAX];
        size_t n = 0;

        assert_int_equal(ec2_parse_instances(describe_page1, strlen(describe_page1), &list, &n, token), 0);
        assert_int_equal(n, 3);
        assert_string_equal(token, "tok+/=1");
        assert_string_equal(list[0].id, "i-0aaa");
        assert_string_equal(list[0].state, "running");
        /* The instance's own address, not the nested interface's. */
        assert_string_equal(list[0].private_ip, "127.0.1.4");
        assert_string_equal(list[0].subnet_id, "subnet-1");
        assert_string_equal(list[0].zone, "us-east-1a");
        assert_string_equal(list[0].launch_time, "2024-05-01T12:00:00.000Z");
        assert_int_equal(list[0].launch_usec, UINT64_C(1714564800) * USEC_PER_SEC);
        assert_string_equal(list[1].state, "pending");
        assert_string_equal(list[2].id, "i-0ccc");
        assert_string_equal(list[2].state, "stopped");
        assert_string_equal(list[2].private_ip, "");

        /* The next page appends. */
        assert_int_equal(ec2_parse_instances(describe_page2, strlen(describe_page2), &list, &n, token), 0);
        assert_int_equal(n, 4);
        assert_string_equal(token, "");
        assert_string_equal(list[3].state, "shutting-down");
        free(list);

        list = NULL;
        n = 0;
        assert_int_equal(ec2_parse_instances(describe_empty, strlen(describe_empty), &list, &n, token), 0);
        assert_int_equal(n, 0);
        free(list);

        list = NULL;
        n = 0;
        assert_int_equal(ec2_parse_instances(run_response, strlen(run_response), &list, &n, token), 0);
        assert_int_equal(n, 1);
        assert_string_equal(list[0].id, "i-0eee");
        assert_string_equal(list[0].private_ip, "127.0.1.9");
        free(list);
}

/* The role tag is read from the instance's own tagSet; a value too long is a role too (an unknown one),
 * never a reason to refuse the listing. */
static void test_parse_role(void **state)
{
        static const char xml[] =
                "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><reservationSet>"
                "<item><instancesSet>"
                "<item><instanceId>i-0web</instanceId><instanceState><name>running</name></instanceState>"
                "<tagSet><item><key>lbd:pool</key><value>main</value></item>"
                "<item><key>lbd:role</key><value>web</value></item></tagSet></item>"
                "<item><instanceId>i-0be</instanceId><instanceState><name>running</name></instanceState>"
                "<tagSet><item><key>lbd:pool</key><value>main</value></item>"
                "<item><key>Name</key><value>lbd:role</value></item></tagSet>"
                "<networkInterfaceSet><item><tagSet><item><key>lbd:role</key><value>web</value></item>"
                "</tagSet></item></networkInterfaceSet></item>"
                "<item><instanceId>i-0long</instanceId><instanceState><name>running</name></instanceState>"
                "<tagSet><item><key>lbd:role</key><value>0123456789012345678901234567890123456789</value>"
                "</item></tagSet></item>"
                "</instancesSet></item></reservationSet></DescribeInstancesResponse>";
        struct ec2_instance *list = NULL;
        char token[EC2_NEXT_TOKEN_MAX];
        size_t n = 0;

        assert_int_equal(ec2_parse_instances(xml, strlen(xml), &list, &n, token), 0);
        assert_int_equal(n, 3);
        assert_string_equal(list[0].role, "web");
        /* Neither a Name whose value is the key nor a nested interface's tags count. */
        assert_string_equal(list[1].role, "");
        assert_string_equal(list[2].role, EC2_ROLE_UNKNOWN);
        free(list);

        /* The recorded answers carry no role tag. */
        list = NULL;
        n = 0;
        assert_int_equal(ec2_parse_instances(describe_page1, strlen(describe_page1), &list, &n, token), 0);
        assert_string_equal(list[0].role, "");
        free(list);
}

static void check_rejected(const char *xml, int expect)
{
        struct ec2_instance *list = NULL;
        char token[EC2_NEXT_TOKEN_MAX];
        size_t n = 0;

        print_message("reject: %.80s\n", xml);
        assert_int_equal(ec2_parse_instances(xml, strlen(xml), &list, &n, token), expect);
        free(list);
}

static void test_parse_rejects(void **state)
{
        char *big;
        size_t size, used;

        check_rejected("", -EBADMSG);
        check_rejected("not xml at all", -EBADMSG);
        check_rejected("<DescribeInstancesResponse><reservationSet>", -EBADMSG);
        check_rejected("<SomethingElse/>", -EBADMSG);
        check_rejected("<DescribeInstancesResponse/>", -EBADMSG);
        /* Fields are bounded: an over-long id rejects the answer. */
        check_rejected("<RunInstancesResponse><instancesSet><item><instanceId>"
                       "i-0123456789012345678901234567890123456789012345678901234567890123456789"
                       "</instanceId></item></instancesSet></RunInstancesResponse>",
                       -EBADMSG);
        /* Odd characters in what becomes a backend address or an id. */
        check_rejected("<RunInstancesResponse><instancesSet><item><instanceId>i-1</instanceId>"
                       "<privateIpAddress>1.2.3.4/evil</privateIpAddress></item></instancesSet>"
                       "</RunInstancesResponse>",
                       -EBADMSG);
        check_rejected("<RunInstancesResponse><instancesSet><item><instanceId>i 1</instanceId>"
                       "</item></instancesSet></RunInstancesResponse>",
                       -EBADMSG);
        check_rejected("<RunInstancesResponse><instancesSet><item><imageId>ami-1</imageId>"
                       "</item></instancesSet></RunInstancesResponse>",
                       -EBADMSG);
        /* No DTD, so no entity can expand (nor be fetched). */
        check_rejected(
                "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;\">]>"
                "<RunInstancesResponse><instancesSet><item><instanceId>i-1&b;</instanceId></item>"
                "</instancesSet></RunInstancesResponse>",
                -EBADMSG);
        check_rejected("<?xml version=\"1.0\"?><!DOCTYPE r SYSTEM \"http://127.0.0.1:1/x.dtd\">"
                       "<RunInstancesResponse><instancesSet/></RunInstancesResponse>",
                       -EBADMSG);

        /* At most EC2_MAX_INSTANCES. */
        size = (EC2_MAX_INSTANCES + 1) * 64 + 256;
        big = malloc(size);
        assert_non_null(big);
        used = (size_t)snprintf(big, size, "<RunInstancesResponse><instancesSet>");
        for (unsigned i = 0; i <= EC2_MAX_INSTANCES; i++)
                used += (size_t)snprintf(big + used, size - used,
                                         "<item><instanceId>i-%u</instanceId></item>", i);
        (void)snprintf(big + used, size - used, "</instancesSet></RunInstancesResponse>");
        check_rejected(big, -E2BIG);
        free(big);
}

static void test_parse_error(void **state)
{
        char code[EC2_CODE_MAX], message[EC2_MESSAGE_MAX];

        assert_int_equal(ec2_parse_error(throttled, strlen(throttled), code, message), 0);
        assert_string_equal(code, "RequestLimitExceeded");
        assert_string_equal(message, "Request limit exceeded.");
        assert_int_equal(ec2_parse_error(auth_failure, strlen(auth_failure), code, message), 0);
        assert_string_equal(code, "AuthFailure");
        assert_int_equal(
                ec2_parse_error("<Response><Errors><Error><Code>X.Y</Code></Error></Errors></Response>", 69,
                                code, message),
                0);
        assert_string_equal(code, "X.Y");
        assert_string_equal(message, "");
        assert_int_equal(ec2_parse_error("<html>Bad gateway</html>", 24, code, message), -EBADMSG);
        assert_int_equal(ec2_parse_error("Service Unavailable", 19, code, message), -EBADMSG);
        assert_int_equal(
                ec2_parse_error("<Response><Errors><Error><Code>a b</Code></Error></Errors></Response>", 69,
                                code, message),
                -EBADMSG);
}

static void test_classify_and_backoff(void **state)
{
        bool retry;

        assert_int_equal(ec2_classify_error(503, "RequestLimitExceeded", &retry), -EAGAIN);
        assert_true(retry);
        assert_int_equal(ec2_classify_error(400, "Throttling", &retry), -EAGAIN);
        assert_true(retry);
        assert_int_equal(ec2_classify_error(503, "", &retry), -EAGAIN);
        assert_true(retry);
        assert_int_equal(ec2_classify_error(500, "InternalError", &retry), -EAGAIN);
        assert_true(retry);
        assert_int_equal(ec2_classify_error(401, "AuthFailure", &retry), -EACCES);
        assert_false(retry);
        assert_int_equal(ec2_classify_error(403, "SignatureDoesNotMatch", &retry), -EACCES);
        assert_false(retry);
        assert_int_equal(ec2_classify_error(403, "UnauthorizedOperation", &retry), -EPERM);
        assert_false(retry);
        assert_int_equal(ec2_classify_error(400, "InvalidParameterValue", &retry), -EINVAL);
        assert_false(retry);
        assert_int_equal(ec2_classify_error(403, "", &retry), -EACCES);
        assert_false(retry);
        /* No capacity in the subnet's zone: not retried there (another zone may have it), even as a 500. */
        assert_int_equal(ec2_classify_error(500, "InsufficientInstanceCapacity", &retry), -ENOSPC);
        assert_false(retry);
        assert_int_equal(ec2_classify_error(400, "Unsupported", &retry), -ENOSPC);
        assert_false(retry);

        /* Full jitter under a doubling ceiling from 200 ms, capped at 20 s. */
        assert_int_equal(ec2_backoff_usec(1, UINT64_MAX), UINT64_MAX % (200 * USEC_PER_MSEC + 1));
        for (uint64_t rnd = 0; rnd < 1000000; rnd += 7919) {
                assert_true(ec2_backoff_usec(1, rnd * 2654435761u) <= 200 * USEC_PER_MSEC);
                assert_true(ec2_backoff_usec(2, rnd * 2654435761u) <= 400 * USEC_PER_MSEC);
                assert_true(ec2_backoff_usec(4, rnd * 2654435761u) <= 1600 * USEC_PER_MSEC);
                assert_true(ec2_backoff_usec(40, rnd * 2654435761u) <= 20 * USEC_PER_SEC);
        }
        assert_int_equal(ec2_backoff_usec(3, 800 * USEC_PER_MSEC), 800 * USEC_PER_MSEC);
        assert_int_equal(ec2_backoff_usec(30, 20 * USEC_PER_SEC), 20 * USEC_PER_SEC);
        assert_int_equal(ec2_backoff_usec(30, 20 * USEC_PER_SEC + 1), 0);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Whole calls against the scripted server */

struct outcome {
        bool done;
        int r;
        char error[EC2_ERROR_MAX];
        struct ec2_instance instances[8];
        size_t n;
};

static void on_instances(int r, const char *error, const struct ec2_instance *v, size_t n, void *userdata)
{
        struct outcome *o = userdata;

        o->done = true;
        o->r = r;
        (void)snprintf(o->error, sizeof(o->error), "%s", error);
        o->n = n;
        for (size_t i = 0; i < n && i < ELEMENTSOF(o->instances); i++)
                o->instances[i] = v[i];
}

static void on_done(int r, const char *error, void *userdata)
{
        on_instances(r, error, NULL, 0, userdata);
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

static void test_describe_pages(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};
        char host[64];

        fakehttp_queue(&f->server, 200, describe_page1);
        fakehttp_queue(&f->server, 200, describe_page2);
        assert_int_equal(ec2_describe_instances(f->ec2, "lbd:pool", "main", on_instances, &o, NULL), 0);
        assert_false(o.done); /* never from inside the call */
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, 0);
        assert_string_equal(o.error, "");
        assert_int_equal(o.n, 4);
        assert_string_equal(o.instances[3].id, "i-0ddd");
        assert_int_equal(f->server.n_requests, 2);
        assert_int_equal(ec2_requests_total(f->ec2), 2);

        assert_string_equal(f->server.requests[0].method, "POST");
        assert_string_equal(
                f->server.requests[0].body,
                "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3Albd%3Apool"
                "&Filter.1.Value.1=main&Filter.2.Name=instance-state-name&Filter.2.Value.1=pending"
                "&Filter.2.Value.2=running&Filter.2.Value.3=stopping&Filter.2.Value.4=stopped"
                "&Filter.2.Value.5=shutting-down&MaxResults=100");
        assert_non_null(strstr(f->server.requests[1].body, "&NextToken=tok%2B%2F%3D1&MaxResults=100"));
        (void)snprintf(host, sizeof(host), "Host: 127.0.0.1:%u", f->server.port);
        assert_true(fakehttp_has_header(&f->server, 0, host));
        assert_true(fakehttp_has_header(&f->server, 0, "Content-Type: application/x-www-form-urlencoded"));
        assert_true(fakehttp_has_header(&f->server, 0, "X-Amz-Date: "));
        assert_true(fakehttp_has_header(&f->server, 0,
                                        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
        assert_non_null(strstr(
                f->server.requests[0].headers,
                "/us-east-1/ec2/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="));
        assert_false(fakehttp_has_header(&f->server, 0, "X-Amz-Security-Token"));
}

static void test_retry_throttled(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};

        fakehttp_queue(&f->server, 503, throttled);
        fakehttp_queue(&f->server, 503, unavailable);
        fakehttp_queue(&f->server, 200, describe_empty);
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, 0);
        assert_int_equal(o.n, 0);
        assert_int_equal(f->server.n_requests, 3);
}

static void test_gives_up(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};

        for (int i = 0; i < EC2_MAX_ATTEMPTS + 2; i++)
                fakehttp_queue(&f->server, 503, throttled);
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, NULL), 0);
        run_until_done(f->base, &o, 20);
        assert_int_equal(o.r, -EAGAIN);
        assert_int_equal(f->server.n_requests, EC2_MAX_ATTEMPTS);
        assert_non_null(strstr(o.error, "RequestLimitExceeded"));
        assert_non_null(strstr(o.error, "gave up after 5 attempts"));
}

static void test_auth_failure_not_retried(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};

        fakehttp_queue(&f->server, 401, auth_failure);
        fakehttp_queue(&f->server, 200, describe_empty);
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, -EACCES);
        assert_int_equal(f->server.n_requests, 1);
        assert_string_equal(o.error,
                            "AuthFailure: AWS was not able to validate the provided access credentials");
        /* Nothing of the secret in what a caller logs. */
        assert_null(strstr(o.error, "EXAMPLEKEY"));
}

static void test_bad_request(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};

        fakehttp_queue(&f->server, 400,
                       "<Response><Errors><Error><Code>InvalidAMIID.Malformed</Code><Message>Invalid id: "
                       "\"x\"</Message></Error></Errors></Response>");
        assert_int_equal(ec2_terminate_instances(f->ec2, (const char *[]){"i-1"}, 1, on_done, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, -EINVAL);
        assert_string_equal(o.error, "InvalidAMIID.Malformed: Invalid id: \"x\"");
        assert_int_equal(f->server.n_requests, 1);

        /* An answer that isn't EC2's XML. */
        memset(&o, 0, sizeof(o));
        fakehttp_queue(&f->server, 200, "<html>hello</html>");
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, -EBADMSG);
}

static void test_run_and_terminate(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};
        const char *groups[] = {"sg-1", "sg-2"};
        const char user_data[] = "#!/bin/sh\nUPSTREAM=192.0.2.1:8080\n";
        const struct ec2_launch l = {
                .image = "ami-123",
                .instance_type = "t3.micro",
                .subnet = "subnet-1",
                .security_groups = groups,
                .n_security_groups = 2,
                .key_name = "my key",
                .instance_profile = "arn:aws:iam::1:instance-profile/p",
                .user_data = user_data,
                .user_data_len = sizeof(user_data) - 1,
                .tag_key = "lbd:pool",
                .tag_value = "main",
                .name = "lbd-main",
                .launch_hash = "00ff",
                .client_token = "tok-1",
                .epoch = 12,
                .count = 2,
        };
        const char *body;

        setenv("AWS_SESSION_TOKEN", "SESSION/TOKEN=", 1);
        f->ec2 = ec2_free(f->ec2);
        {
                char endpoint[64];
                const struct ec2_settings s = {.region = "eu-west-3", .endpoint = endpoint};

                (void)snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%u/", f->server.port);
                assert_int_equal(ec2_new(f->base, &s, &f->ec2), 0);
        }

        fakehttp_queue(&f->server, 500, "oops");
        fakehttp_queue(&f->server, 200, run_response);
        assert_int_equal(ec2_run_instances(f->ec2, &l, on_instances, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, 0);
        assert_int_equal(o.n, 1);
        assert_string_equal(o.instances[0].id, "i-0eee");
        assert_int_equal(f->server.n_requests, 2);
        /* The retry sends the same request, ClientToken included. */
        assert_string_equal(f->server.requests[0].body, f->server.requests[1].body);
        body = f->server.requests[1].body;
        print_message("%s\n", body);
        assert_string_equal(
                body, "Action=RunInstances&Version=2016-11-15&ImageId=ami-123&InstanceType=t3.micro"
                      "&SubnetId=subnet-1&SecurityGroupId.1=sg-1&SecurityGroupId.2=sg-2"
                      "&KeyName=my+key&IamInstanceProfile.Arn=arn%3Aaws%3Aiam%3A%3A1%3Ainstance-"
                      "profile%2Fp&UserData=IyEvYmluL3NoClVQU1RSRUFNPTE5Mi4wLjIuMTo4MDgwCg%3D%3D"
                      "&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=lbd%3Apool"
                      "&TagSpecification.1.Tag.1.Value=main&TagSpecification.1.Tag.2.Key=Name"
                      "&TagSpecification.1.Tag.2.Value=lbd-main&TagSpecification.1.Tag.3.Key=lbd%3Alaunch-hash"
                      "&TagSpecification.1.Tag.3.Value=00ff&TagSpecification.1.Tag.4.Key=lbd%3Aepoch"
                      "&TagSpecification.1.Tag.4.Value=12&ClientToken=tok-1&MinCount=2&MaxCount=2");
        assert_true(fakehttp_has_header(&f->server, 1, "X-Amz-Security-Token: SESSION/TOKEN="));
        assert_non_null(strstr(f->server.requests[1].headers, "/eu-west-3/ec2/aws4_request, "
                                                              "SignedHeaders=content-type;host;x-amz-date;"
                                                              "x-amz-security-token, Signature="));

        memset(&o, 0, sizeof(o));
        fakehttp_queue(&f->server, 200, terminate_response);
        assert_int_equal(
                ec2_terminate_instances(f->ec2, (const char *[]){"i-0aaa", "i-0bbb"}, 2, on_done, &o, NULL),
                0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, 0);
        assert_string_equal(
                f->server.requests[2].body,
                "Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-0aaa&InstanceId.2=i-0bbb");
        unsetenv("AWS_SESSION_TOKEN");
}

static void test_argument_checks(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};
        struct ec2_launch l = {
                .image = "ami-1",
                .tag_key = "k",
                .tag_value = "v",
                .client_token = "t",
                .count = 1,
        };
        struct ec2_call *call = NULL;
        static char big[EC2_USER_DATA_MAX + 1];

        assert_int_equal(ec2_describe_instances(f->ec2, "", "v", on_instances, &o, NULL), -EINVAL);
        assert_int_equal(ec2_terminate_instances(f->ec2, (const char *[]){"i-1&x=y"}, 1, on_done, &o, NULL),
                         -EINVAL);
        assert_int_equal(ec2_terminate_instances(f->ec2, (const char *[]){"i-1"}, 0, on_done, &o, NULL),
                         -EINVAL);
        l.client_token = "has space";
        assert_int_equal(ec2_run_instances(f->ec2, &l, on_instances, &o, NULL), -EINVAL);
        l.client_token = "t";
        l.image = NULL;
        assert_int_equal(ec2_run_instances(f->ec2, &l, on_instances, &o, NULL), -EINVAL);
        l.image = "ami-1";
        l.launch_hash = "ABC";
        assert_int_equal(ec2_run_instances(f->ec2, &l, on_instances, &o, NULL), -EINVAL);
        l.launch_hash = NULL;
        l.user_data = big;
        l.user_data_len = sizeof(big);
        assert_int_equal(ec2_run_instances(f->ec2, &l, on_instances, &o, NULL), -E2BIG);

        /* A cancelled call never reports. */
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, &call), 0);
        assert_non_null(call);
        (void)ec2_call_cancel(call);
        for (int i = 0; i < 20; i++)
                (void)event_base_loop(f->base, EVLOOP_NONBLOCK);
        assert_false(o.done);

        /* A bad endpoint is refused up front. */
        {
                struct ec2 *e = NULL;
                const struct ec2_settings s = {.region = "us-east-1", .endpoint = "ftp://127.0.0.1/"};

                assert_int_equal(ec2_new(f->base, &s, &e), -EINVAL);
        }
}

static void test_no_credentials(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};
        char endpoint[64];
        struct ec2_settings s = {.region = "us-east-1", .endpoint = endpoint};

        (void)snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%u", f->server.port);
        unsetenv("AWS_ACCESS_KEY_ID");
        unsetenv("AWS_SECRET_ACCESS_KEY");
        setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
        setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);
        f->ec2 = ec2_free(f->ec2);
        assert_int_equal(ec2_new(f->base, &s, &f->ec2), 0);
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, -EACCES);
        assert_non_null(strstr(o.error, "no AWS credentials"));
        assert_int_equal(f->server.n_requests, 0);
        unsetenv("AWS_SHARED_CREDENTIALS_FILE");
        unsetenv("AWS_CONFIG_FILE");
}

static void test_connection_refused(void **state)
{
        struct fixture *f = *state;
        struct outcome o = {0};
        struct ec2_settings s = {.region = "us-east-1"};
        char endpoint[64];
        unsigned short port = f->server.port;

        /* The server's port, once it is gone: nothing listens there. */
        fakehttp_stop(&f->server);
        (void)snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%u", port);
        s.endpoint = endpoint;
        f->ec2 = ec2_free(f->ec2);
        assert_int_equal(ec2_new(f->base, &s, &f->ec2), 0);
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, NULL), 0);
        run_until_done(f->base, &o, 20);
        assert_int_equal(o.r, -EAGAIN);
        assert_int_equal(ec2_requests_total(f->ec2), EC2_MAX_ATTEMPTS);
        /* The cause, not only curl's "Couldn't connect to server". */
        assert_non_null(strstr(o.error, "(Connection refused)"));
}

/* The backoff carried from call to call, on a simulated clock: a caller that calls every poll (10 s,
 * minus up to 10% of jitter, as the reconciler does) through a 10-minute outage makes a few calls a
 * minute (each call of the outage a single attempt), and its first call after the API is back succeeds,
 * within one poll of the recovery. Then a call may use every attempt again. */
static void test_backoff_across_calls(void **state)
{
        const uint64_t poll = 10 * USEC_PER_SEC, outage_end = 600 * USEC_PER_SEC;
        struct ec2_backoff b = {.cap_usec = poll};
        uint64_t t = 0, rng = 0x9e3779b97f4a7c15u, recovered = 0;
        unsigned per_minute[10] = {0}, total = 0;

        while (!recovered) {
                unsigned attempts = ec2_backoff_attempts(&b);

                assert_true(t < outage_end + 2 * poll);
                for (unsigned a = 0; a < attempts; a++) {
                        uint64_t delay;

                        t += ec2_backoff_wait(&b, t);
                        if (t >= outage_end) {
                                ec2_backoff_answered(&b);
                                recovered = t;
                                break;
                        }
                        per_minute[t / (60 * USEC_PER_SEC)]++;
                        total++;
                        delay = ec2_backoff_failed(&b, t, rng);
                        assert_true(delay <= poll);
                        assert_int_equal(ec2_backoff_wait(&b, t), delay);
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        if (a + 1 < attempts)
                                t += delay; /* the call's own retry timer */
                }
                t += poll - rng % (poll / 10 + 1); /* the caller's next poll */
        }
        for (size_t m = 1; m < ELEMENTSOF(per_minute); m++)
                assert_true(per_minute[m] <= 7);
        assert_true(per_minute[0] <= 7 + EC2_MAX_ATTEMPTS);
        assert_true(total <= 70);
        assert_true(recovered - outage_end <= poll);
        assert_int_equal(b.failures, 0);
        assert_int_equal(ec2_backoff_attempts(&b), EC2_MAX_ATTEMPTS);
        assert_int_equal(ec2_backoff_wait(&b, recovered), 0);
        print_message("10-minute outage: %u calls, %u in its last minute; recovery seen after %.1f s\n", total,
                      per_minute[9], (double)(recovered - outage_end) / (double)USEC_PER_SEC);
}

/* The same with real calls: one that used every attempt leaves the client in backoff, so the next call
 * makes one attempt; the status tells how long and why it fails, in the API's words; an answer resets it. */
static void test_outage_status_and_single_attempt(void **state)
{
        struct fixture *f = *state;
        struct ec2_settings s = {.region = "us-east-1", .backoff_cap_usec = 50 * USEC_PER_MSEC};
        char endpoint[64];
        struct outcome o = {0};
        struct ec2_status st;

        (void)snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%u", f->server.port);
        s.endpoint = endpoint;
        f->ec2 = ec2_free(f->ec2);
        assert_int_equal(ec2_new(f->base, &s, &f->ec2), 0);
        ec2_get_status(f->ec2, &st);
        assert_int_equal(st.failures, 0);
        assert_string_equal(st.error, "");

        for (int i = 0; i < EC2_MAX_ATTEMPTS + 1; i++)
                fakehttp_queue(&f->server, 503, throttled);
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, -EAGAIN);
        assert_int_equal(f->server.n_requests, EC2_MAX_ATTEMPTS);
        ec2_get_status(f->ec2, &st);
        assert_int_equal(st.failures, EC2_MAX_ATTEMPTS);
        assert_true(st.failing_since_usec > 0 && st.failing_since_usec <= now_usec());
        assert_non_null(strstr(st.error, "RequestLimitExceeded"));

        memset(&o, 0, sizeof(o));
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, NULL), 0);
        assert_false(o.done);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, -EAGAIN);
        assert_int_equal(f->server.n_requests, EC2_MAX_ATTEMPTS + 1);
        ec2_get_status(f->ec2, &st);
        assert_int_equal(st.failures, EC2_MAX_ATTEMPTS + 1);

        /* The API refuses the key: an answer (the backoff ends), its words kept for the status. */
        memset(&o, 0, sizeof(o));
        fakehttp_queue(&f->server, 401, auth_failure);
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, -EACCES);
        ec2_get_status(f->ec2, &st);
        assert_int_equal(st.failures, 0);
        assert_int_equal(st.failing_since_usec, 0);
        assert_string_equal(st.error,
                            "AuthFailure: AWS was not able to validate the provided access credentials");

        /* Back to full retries, and a success clears the error. */
        memset(&o, 0, sizeof(o));
        fakehttp_queue(&f->server, 503, unavailable);
        fakehttp_queue(&f->server, 200, describe_empty);
        assert_int_equal(ec2_describe_instances(f->ec2, "k", "v", on_instances, &o, NULL), 0);
        run_until_done(f->base, &o, 10);
        assert_int_equal(o.r, 0);
        ec2_get_status(f->ec2, &st);
        assert_int_equal(st.failures, 0);
        assert_string_equal(st.error, "");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_describe),
                cmocka_unit_test(test_parse_role),
                cmocka_unit_test(test_parse_launch_hash),
                cmocka_unit_test(test_parse_rejects),
                cmocka_unit_test(test_parse_error),
                cmocka_unit_test(test_classify_and_backoff),
                cmocka_unit_test_setup_teardown(test_describe_pages, setup, teardown),
                cmocka_unit_test_setup_teardown(test_retry_throttled, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gives_up, setup, teardown),
                cmocka_unit_test_setup_teardown(test_auth_failure_not_retried, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_request, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_and_terminate, setup, teardown),
                cmocka_unit_test_setup_teardown(test_argument_checks, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_credentials, setup, teardown),
                cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
                cmocka_unit_test(test_backoff_across_calls),
                cmocka_unit_test_setup_teardown(test_outage_status_and_single_attempt, setup, teardown),
        };

        log_set_max_level(LOG_WARNING);
        return cmocka_run_group_tests(tests, NULL, NULL);
}

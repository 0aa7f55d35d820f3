/* Unit tests for lbd/peer.c's reading of another host's answer on its lease listener: only a JSON object
 * with a host name, two booleans and an epoch in range is taken; anything else is refused with a reason,
 * and nothing of it is kept. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "lbd/peer.h"

static int parse(const char *body, struct peer_view *v)
{
        return peer_parse_answer(body, strlen(body), v);
}

static void test_good_answer(void **state)
{
        struct peer_view v = {0};

        assert_int_equal(parse("{\"name\":\"lb-b\",\"pool\":\"main\",\"leader\":true,\"holder\":\"lb-b\","
                               "\"epoch\":7,\"store_up\":false,\"peers\":[]}",
                               &v),
                         0);
        assert_string_equal(v.name, "lb-b");
        assert_true(v.leader);
        assert_false(v.store_up);
        assert_int_equal(v.epoch, 7);
        assert_string_equal(v.error, "");
}

static void test_bad_answers(void **state)
{
        const char *bad[] = {
                "",
                "null",
                "[1,2]",
                "<html>busy</html>",
                "{\"name\":\"lb-b\",\"leader\":true,\"store_up\":true}",                /* no epoch */
                "{\"name\":\"lb-b\",\"leader\":\"yes\",\"store_up\":true,\"epoch\":1}", /* not a bool */
                "{\"name\":7,\"leader\":true,\"store_up\":true,\"epoch\":1}",           /* not a string */
                "{\"name\":\"\",\"leader\":true,\"store_up\":true,\"epoch\":1}",        /* empty name */
                "{\"name\":\"lb b\\n\",\"leader\":true,\"store_up\":true,\"epoch\":1}", /* not a host name */
                "{\"name\":\"lb-b\",\"leader\":true,\"store_up\":true,\"epoch\":-1}",   /* negative */
                "{\"name\":\"lb-b\",\"leader\":true,\"store_up\":true,\"epoch\":1e300}", /* too big */
                "{\"name\":\"lb-b\",\"leader\":true,\"store_up\":true,\"epoch\":1",      /* cut short */
                "", /* the long name below */
        };
        char long_name[256], name[LEASE_NAME_MAX + 1];
        struct peer_view good = {0};

        /* LEASE_NAME_MAX - 1 bytes is the longest host name; one more is refused. */
        memset(name, 'a', LEASE_NAME_MAX - 1);
        name[LEASE_NAME_MAX - 1] = '\0';
        (void)snprintf(long_name, sizeof(long_name),
                       "{\"name\":\"%s\",\"leader\":true,\"store_up\":true,\"epoch\":1}", name);
        assert_int_equal(parse(long_name, &good), 0);
        assert_int_equal(strlen(good.name), LEASE_NAME_MAX - 1);
        name[LEASE_NAME_MAX - 1] = 'a';
        name[LEASE_NAME_MAX] = '\0';
        (void)snprintf(long_name, sizeof(long_name),
                       "{\"name\":\"%s\",\"leader\":true,\"store_up\":true,\"epoch\":1}", name);
        bad[ELEMENTSOF(bad) - 1] = long_name;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct peer_view v = {.name = "kept", .epoch = 3};

                assert_int_equal(parse(bad[i], &v), -EBADMSG);
                assert_string_equal(v.name, "kept");
                assert_int_equal(v.epoch, 3);
                assert_true(v.error[0] != '\0');
        }
}

static void test_not_nul_terminated(void **state)
{
        /* The answer's length counts, not a NUL: a body cut inside the object is refused. */
        const char body[] = "{\"name\":\"lb-b\",\"leader\":true,\"store_up\":true,\"epoch\":1}";
        struct peer_view v = {0};

        assert_int_equal(peer_parse_answer(body, sizeof(body) - 3, &v), -EBADMSG);
        assert_int_equal(peer_parse_answer(body, sizeof(body) - 1, &v), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_good_answer),
                cmocka_unit_test(test_bad_answers),
                cmocka_unit_test(test_not_nul_terminated),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for common/daemon.c: daemon_run() reports a failed loop as an error, so that the daemon's exit
 * status says it failed. libevent refuses to run a loop that is already running, which is how the test
 * makes it fail without touching the kernel. */
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

#include <cmocka.h>

#include "common/daemon.h"
#include "tests/unit/fixture.h"

struct nested {
        struct daemon *daemon;
        int r;
        bool ran;
};

static void run_again_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct nested *n = userdata;

        n->r = daemon_run(n->daemon);
        n->ran = true;
}

static void test_run_failure_is_an_error(void **state)
{
        struct daemon d = {0};
        struct nested n = {.daemon = &d, .r = 1};
        struct event *ev;
        struct timeval tv = {0, 0};
        struct capture c;
        char *out;

        assert_int_equal(daemon_start(&d, 0), 0);
        ev = evtimer_new(d.base, run_again_cb, &n);
        assert_non_null(ev);
        assert_int_equal(evtimer_add(ev, &tv), 0);

        capture_begin(&c);
        assert_int_equal(daemon_run(&d), 0); /* the outer run ends when nothing is left */
        out = capture_end(&c);
        assert_true(n.ran);
        assert_int_equal(n.r, -EIO);
        assert_non_null(strstr(out, "The event loop failed"));
        free(out);
        event_free(ev);
        daemon_done(&d);
}

static void test_run_until_exit(void **state)
{
        struct daemon d = {0};

        assert_int_equal(daemon_start(&d, 0), 0);
        daemon_exit(&d);
        assert_int_equal(daemon_run(&d), 0);
        daemon_done(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_run_failure_is_an_error),
                cmocka_unit_test(test_run_until_exit),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

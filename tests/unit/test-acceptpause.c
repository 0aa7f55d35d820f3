/* Unit tests for common/acceptpause.c: a shortage of descriptors or memory stops watching for a backoff
 * that doubles up to its cap, logs one line when an episode starts and one when it ends (with the count
 * of failed accept() calls), and other errors change nothing. stderr is captured (fixture.h). */
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

#include "common/acceptpause.h"
#include "tests/unit/fixture.h"

struct owner {
        unsigned on, off;
        bool listening;
};

static void set_listening(void *userdata, bool on)
{
        struct owner *o = userdata;

        o->listening = on;
        if (on)
                o->on++;
        else
                o->off++;
}

static size_t count(const char *text, const char *needle)
{
        size_t n = 0;

        for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static void test_episode(void **state)
{
        struct event_base *base = event_base_new();
        struct owner o = {.listening = true};
        struct acceptpause ap;
        struct capture c;
        char *out;

        assert_non_null(base);
        assert_int_equal(acceptpause_init(&ap, base, "proxy", set_listening, &o), 0);
        capture_begin(&c);

        /* Errors that are not shortages change nothing. */
        assert_false(acceptpause_failed(&ap, EAGAIN));
        assert_false(acceptpause_failed(&ap, ECONNABORTED));
        assert_false(acceptpause_failed(&ap, EINTR));
        assert_int_equal(o.off, 0);
        assert_false(ap.paused);

        /* The first failure pauses for the first step and logs; later ones double it, silently, to the cap. */
        assert_true(acceptpause_failed(&ap, EMFILE));
        assert_true(ap.paused);
        assert_false(o.listening);
        assert_int_equal(ap.delay_usec, ACCEPTPAUSE_FIRST_USEC);
        for (unsigned i = 0; i < 2; i++) {
                (void)event_base_loop(base, EVLOOP_ONCE); /* the backoff ends: watching again */
                assert_true(o.listening);
                assert_false(ap.paused);
                assert_true(acceptpause_failed(&ap, i ? ENFILE : EMFILE));
                assert_false(o.listening);
                assert_int_equal(ap.delay_usec, ACCEPTPAUSE_FIRST_USEC << (i + 1));
        }
        assert_int_equal(ap.refused, 3);

        /* A success ends the episode with one notice; the next failure starts a new one from the start. */
        acceptpause_accepted(&ap);
        acceptpause_accepted(&ap);
        assert_int_equal(ap.delay_usec, 0);
        assert_true(acceptpause_failed(&ap, ENOBUFS));
        assert_int_equal(ap.delay_usec, ACCEPTPAUSE_FIRST_USEC);

        out = capture_end(&c);
        assert_int_equal(count(out, "proxy: out of file descriptors: stopped accepting"), 1);
        assert_int_equal(count(out, "proxy: out of memory: stopped accepting"), 1);
        assert_int_equal(count(out, "proxy: accepting again after"), 1);
        assert_non_null(strstr(out, "3 accept() calls failed"));
        free(out);

        acceptpause_done(&ap);
        acceptpause_done(&ap); /* zeroed: harmless twice */
        event_base_free(base);
}

static void test_cap(void **state)
{
        struct event_base *base = event_base_new();
        struct owner o = {0};
        struct acceptpause ap;
        struct capture c;

        assert_int_equal(acceptpause_init(&ap, base, "admin API", set_listening, &o), 0);
        capture_begin(&c);
        for (unsigned i = 0; i < 20; i++)
                assert_true(acceptpause_failed(&ap, EMFILE));
        free(capture_end(&c));
        assert_int_equal(ap.delay_usec, ACCEPTPAUSE_MAX_USEC);
        assert_int_equal(ap.refused, 20);
        acceptpause_done(&ap);
        event_base_free(base);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_episode),
                cmocka_unit_test(test_cap),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

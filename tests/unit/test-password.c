/* Unit tests for webd/password.c on a real libevent loop: hash and verify round trips, wrong passwords,
 * the dummy hash for unknown users, malformed stored hashes, that callbacks never run inside the submitting
 * call and always on the loop's thread, the queue bound (-EBUSY), and cancellation when the pool is freed,
 * including from one of its own callbacks. Every wait on the loop has a deadline. Prints the time one hash
 * takes. */
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "webd/password.h"

#define DEADLINE_SEC 120 /* generous: valgrind makes a hash ~50 times slower */

struct fixture {
        struct event_base *base;
        struct password_pool *pool;
        pthread_t loop_thread;
};

struct result {
        struct fixture *f;
        bool called;
        int r;
        char encoded[PASSWORD_ENCODED_MAX];
        unsigned *counter; /* bumped by every call, if set */
        bool on_loop_thread;
};

static void on_hash(int r, const char *encoded, void *userdata)
{
        struct result *res = userdata;

        assert_false(res->called);
        res->called = true;
        res->r = r;
        res->on_loop_thread = pthread_equal(pthread_self(), res->f->loop_thread);
        if (r >= 0) {
                assert_non_null(encoded);
                assert_true(strlen(encoded) < sizeof(res->encoded));
                memcpy(res->encoded, encoded, strlen(encoded) + 1);
        } else
                assert_null(encoded);
        if (res->counter)
                (*res->counter)++;
}

static void on_verify(int r, void *userdata)
{
        struct result *res = userdata;

        assert_false(res->called);
        res->called = true;
        res->r = r;
        res->on_loop_thread = pthread_equal(pthread_self(), res->f->loop_thread);
        if (res->counter)
                (*res->counter)++;
}

static void on_deadline(evutil_socket_t fd, short what, void *userdata)
{
        fail_msg("deadline passed waiting for password callbacks");
}

/* Runs the loop until every result in <res> has been called back. */
static void wait_for(struct fixture *f, struct result *res, size_t n)
{
        struct timeval tv = { .tv_sec = DEADLINE_SEC };
        struct event *deadline = evtimer_new(f->base, on_deadline, NULL);

        assert_non_null(deadline);
        assert_int_equal(evtimer_add(deadline, &tv), 0);
        for (;;) {
                bool all = true;

                for (size_t i = 0; i < n; i++)
                        all = all && res[i].called;
                if (all)
                        break;
                assert_true(event_base_loop(f->base, EVLOOP_ONCE) >= 0);
        }
        event_free(deadline);
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        f->base = event_base_new();
        assert_non_null(f->base);
        f->loop_thread = pthread_self();
        assert_int_equal(password_pool_new(f->base, 2, &f->pool), 0);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        f->pool = password_pool_free(f->pool);
        event_base_free(f->base);
        free(f);
        return 0;
}

static void test_round_trip(void **state)
{
        static const char password[] = "correct horse battery staple";
        static const char prefix[] = "$argon2id$v=19$m=19456,t=2,p=1$";
        struct fixture *f = *state;
        struct result h[2] = { { .f = f }, { .f = f } }, v[5];
        uint64_t start;

        start = now_usec();
        assert_int_equal(password_hash_async(f->pool, password, strlen(password), on_hash, &h[0]), 0);
        assert_false(h[0].called); /* never from inside the call */
        wait_for(f, h, 1);
        print_message("one Argon2id hash (t=2, m=19456 KiB, p=1): %.1f ms\n",
                      (double)(now_usec() - start) / 1000.0);
        assert_int_equal(h[0].r, 0);
        assert_true(h[0].on_loop_thread);
        assert_memory_equal(h[0].encoded, prefix, strlen(prefix));

        /* A second hash of the same password has another salt. */
        assert_int_equal(password_hash_async(f->pool, password, strlen(password), on_hash, &h[1]), 0);
        wait_for(f, h + 1, 1);
        assert_int_equal(h[1].r, 0);
        assert_string_not_equal(h[0].encoded, h[1].encoded);

        /* Five verifies at once on two threads: right, wrong, a prefix, one byte more, the other hash. */
        for (size_t i = 0; i < ELEMENTSOF(v); i++)
                v[i] = (struct result){ .f = f };
        assert_int_equal(password_verify_async(f->pool, password, strlen(password), h[0].encoded, on_verify,
                                               &v[0]),
                         0);
        assert_int_equal(password_verify_async(f->pool, "Correct horse battery staple", strlen(password),
                                               h[0].encoded, on_verify, &v[1]),
                         0);
        assert_int_equal(password_verify_async(f->pool, password, strlen(password) - 1, h[0].encoded,
                                               on_verify, &v[2]),
                         0);
        assert_int_equal(password_verify_async(f->pool, password, strlen(password) + 1, h[0].encoded,
                                               on_verify, &v[3]),
                         0);
        assert_int_equal(password_verify_async(f->pool, password, strlen(password), h[1].encoded, on_verify,
                                               &v[4]),
                         0);
        wait_for(f, v, ELEMENTSOF(v));
        assert_int_equal(v[0].r, 0);
        assert_int_equal(v[1].r, -EPERM);
        assert_int_equal(v[2].r, -EPERM);
        assert_int_equal(v[3].r, -EPERM);
        assert_int_equal(v[4].r, 0);
        for (size_t i = 0; i < ELEMENTSOF(v); i++)
                assert_true(v[i].on_loop_thread);
}

static void test_binary_and_empty(void **state)
{
        static const char binary[] = { 'a', '\0', 'b', (char)0xff };
        struct fixture *f = *state;
        struct result h = { .f = f }, e = { .f = f }, v[3];

        assert_int_equal(password_hash_async(f->pool, binary, sizeof(binary), on_hash, &h), 0);
        assert_int_equal(password_hash_async(f->pool, NULL, 0, on_hash, &e), 0);
        wait_for(f, &h, 1);
        wait_for(f, &e, 1);
        assert_int_equal(h.r, 0);
        assert_int_equal(e.r, 0);

        for (size_t i = 0; i < ELEMENTSOF(v); i++)
                v[i] = (struct result){ .f = f };
        /* The bytes after a NUL count. */
        assert_int_equal(password_verify_async(f->pool, binary, sizeof(binary), h.encoded, on_verify, &v[0]),
                         0);
        assert_int_equal(password_verify_async(f->pool, binary, 1, h.encoded, on_verify, &v[1]), 0);
        assert_int_equal(password_verify_async(f->pool, "", 0, e.encoded, on_verify, &v[2]), 0);
        wait_for(f, v, ELEMENTSOF(v));
        assert_int_equal(v[0].r, 0);
        assert_int_equal(v[1].r, -EPERM);
        assert_int_equal(v[2].r, 0);
}

static void test_dummy_and_bad_hashes(void **state)
{
        static const char *const bad[] = {
                "",
                "plain",
                ("$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$"
                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), /* argon2i, not argon2id */
                "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ", /* no hash */
                "$argon2id$v=19$m=19456,t=2,p=1$!!!$AAAA",
        };
        struct fixture *f = *state;
        struct result d[2] = { { .f = f }, { .f = f } }, b[ELEMENTSOF(bad)];
        uint64_t start, dummy_usec;

        /* No such user: as slow as a real check, and never a match, whatever the password. */
        start = now_usec();
        assert_int_equal(password_verify_async(f->pool, "whatever", 8, NULL, on_verify, &d[0]), 0);
        wait_for(f, d, 1);
        dummy_usec = now_usec() - start;
        print_message("verify against the dummy hash: %.1f ms\n", (double)dummy_usec / 1000.0);
        assert_int_equal(d[0].r, -EPERM);
        assert_int_equal(password_verify_async(f->pool, "", 0, NULL, on_verify, &d[1]), 0);
        wait_for(f, d + 1, 1);
        assert_int_equal(d[1].r, -EPERM);
        assert_true(dummy_usec > 1000); /* it really ran Argon2 */

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                b[i] = (struct result){ .f = f };
                assert_int_equal(password_verify_async(f->pool, "password", 8, bad[i], on_verify, &b[i]), 0);
        }
        wait_for(f, b, ELEMENTSOF(b));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                print_message("stored hash '%s'\n", bad[i]);
                assert_int_equal(b[i].r, -EINVAL);
        }
}

static void test_bad_arguments(void **state)
{
        struct fixture *f = *state;
        struct password_pool *p = NULL;
        struct result r = { .f = f };
        char big[PASSWORD_MAX + 1], encoded[PASSWORD_ENCODED_MAX + 1];

        assert_int_equal(password_pool_new(f->base, 0, &p), -EINVAL);
        assert_int_equal(password_pool_new(f->base, 17, &p), -EINVAL);
        assert_int_equal(password_pool_new(NULL, 1, &p), -EINVAL);
        assert_null(p);

        memset(big, 'x', sizeof(big));
        assert_int_equal(password_hash_async(f->pool, big, sizeof(big), on_hash, &r), -EINVAL);
        assert_int_equal(password_hash_async(f->pool, NULL, 1, on_hash, &r), -EINVAL);
        assert_int_equal(password_hash_async(f->pool, "x", 1, NULL, &r), -EINVAL);
        assert_int_equal(password_hash_async(NULL, "x", 1, on_hash, &r), -EINVAL);
        memset(encoded, 'x', sizeof(encoded) - 1);
        encoded[sizeof(encoded) - 1] = '\0';
        assert_int_equal(password_verify_async(f->pool, "x", 1, encoded, on_verify, &r), -EINVAL);
        assert_int_equal(password_verify_async(f->pool, "x", 1, NULL, NULL, &r), -EINVAL);
        assert_false(r.called);

        /* The longest password accepted. */
        assert_int_equal(password_hash_async(f->pool, big, PASSWORD_MAX, on_hash, &r), 0);
        wait_for(f, &r, 1);
        assert_int_equal(r.r, 0);

        assert_null(password_pool_free(NULL));
}

struct cancel_ctx {
        struct password_pool *pool;
        unsigned cancelled, other;
        int resubmit; /* what submitting from a cancelled callback returned */
};

static void on_cancel_hash(int r, const char *encoded, void *userdata)
{
        struct cancel_ctx *c = userdata;

        if (r == -ECANCELED) {
                assert_null(encoded);
                c->cancelled++;
                c->resubmit = password_hash_async(c->pool, "x", 1, on_cancel_hash, c);
        } else
                c->other++;
}

/* With one thread and the loop never run, the 257th job is refused; freeing the pool cancels all 256 and
 * refuses new work from inside those callbacks. */
static void test_queue_bound_and_cancel(void **state)
{
        struct fixture *f = *state;
        struct cancel_ctx c = { 0 };
        uint64_t start;

        assert_int_equal(password_pool_new(f->base, 1, &c.pool), 0);
        for (unsigned i = 0; i < PASSWORD_QUEUE_MAX; i++)
                assert_int_equal(password_hash_async(c.pool, "password", 8, on_cancel_hash, &c), 0);
        assert_int_equal(password_hash_async(c.pool, "password", 8, on_cancel_hash, &c), -EBUSY);
        assert_int_equal(password_verify_async(c.pool, "password", 8, NULL, on_verify, NULL), -EBUSY);
        assert_int_equal(c.cancelled + c.other, 0);

        start = now_usec();
        c.pool = password_pool_free(c.pool);
        print_message("freeing a pool with %u queued jobs: %.1f ms\n", PASSWORD_QUEUE_MAX,
                      (double)(now_usec() - start) / 1000.0);
        assert_int_equal(c.cancelled, PASSWORD_QUEUE_MAX);
        assert_int_equal(c.other, 0);
        assert_int_equal(c.resubmit, -ECANCELED);
}

struct free_ctx {
        struct password_pool *pool;
        unsigned ok, cancelled;
};

static void on_free_hash(int r, const char *encoded, void *userdata)
{
        struct free_ctx *c = userdata;

        if (r == 0) {
                c->ok++;
                /* The first result frees the pool from inside its own callback. */
                c->pool = password_pool_free(c->pool);
        } else {
                assert_int_equal(r, -ECANCELED);
                c->cancelled++;
        }
}

static void on_free_deadline(evutil_socket_t fd, short what, void *userdata)
{
        fail_msg("deadline passed");
}

static void test_free_from_callback(void **state)
{
        struct fixture *f = *state;
        struct free_ctx c = { 0 };
        struct timeval tv = { .tv_sec = DEADLINE_SEC };
        struct event *deadline;

        assert_int_equal(password_pool_new(f->base, 1, &c.pool), 0);
        for (unsigned i = 0; i < 4; i++)
                assert_int_equal(password_hash_async(c.pool, "password", 8, on_free_hash, &c), 0);

        deadline = evtimer_new(f->base, on_free_deadline, NULL);
        assert_non_null(deadline);
        assert_int_equal(evtimer_add(deadline, &tv), 0);
        while (c.ok == 0)
                assert_true(event_base_loop(f->base, EVLOOP_ONCE) >= 0);
        event_free(deadline);

        assert_null(c.pool);
        assert_int_equal(c.ok, 1);
        assert_int_equal(c.cancelled, 3);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_binary_and_empty),
                cmocka_unit_test(test_dummy_and_bad_hashes),
                cmocka_unit_test(test_bad_arguments),
                cmocka_unit_test(test_queue_bound_and_cancel),
                cmocka_unit_test(test_free_from_callback),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}

/* Unit tests for common/list.h: adding first, removing from the head, the middle and the end, an item on
 * two lists at once, and removal while iterating. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/list.h"

struct item {
        int v;
        DLIST_FIELDS(struct item, a);
        DLIST_FIELDS(struct item, b);
};

/* The values on list a, first to last, checked against the links back. */
static void expect_a(struct item *head, const int *want, size_t n)
{
        size_t i = 0;
        struct item *prev = NULL;

        DLIST_FOREACH(a, it, head) {
                assert_true(i < n);
                assert_int_equal(it->v, want[i]);
                assert_ptr_equal(it->a_prev, prev);
                prev = it;
                i++;
        }
        assert_int_equal(i, n);
}

static void test_prepend_remove(void **state)
{
        struct item x[4] = {{.v = 0}, {.v = 1}, {.v = 2}, {.v = 3}};
        DLIST_HEAD(struct item, head) = NULL;

        for (int i = 0; i < 4; i++)
                DLIST_PREPEND(a, head, &x[i]);
        expect_a(head, (const int[]){3, 2, 1, 0}, 4);
        assert_true(DLIST_LINKED(a, head, &x[3]));
        assert_true(DLIST_LINKED(a, head, &x[0]));

        DLIST_REMOVE(a, head, &x[2]); /* middle */
        expect_a(head, (const int[]){3, 1, 0}, 3);
        assert_false(DLIST_LINKED(a, head, &x[2]));
        assert_null(x[2].a_next);
        assert_null(x[2].a_prev);
        DLIST_REMOVE(a, head, &x[3]); /* head */
        expect_a(head, (const int[]){1, 0}, 2);
        DLIST_REMOVE(a, head, &x[0]); /* last */
        expect_a(head, (const int[]){1}, 1);
        DLIST_PREPEND(a, head, &x[2]); /* back on after removal */
        expect_a(head, (const int[]){2, 1}, 2);
        DLIST_REMOVE(a, head, &x[1]);
        DLIST_REMOVE(a, head, &x[2]);
        assert_null(head);
}

static void test_two_lists(void **state)
{
        struct item x[3] = {{.v = 0}, {.v = 1}, {.v = 2}};
        DLIST_HEAD(struct item, ha) = NULL;
        DLIST_HEAD(struct item, hb) = NULL;
        int n = 0;

        for (int i = 0; i < 3; i++)
                DLIST_PREPEND(a, ha, &x[i]);
        DLIST_PREPEND(b, hb, &x[1]);
        DLIST_REMOVE(a, ha, &x[1]);
        expect_a(ha, (const int[]){2, 0}, 2);
        DLIST_FOREACH(b, it, hb) {
                assert_int_equal(it->v, 1);
                n++;
        }
        assert_int_equal(n, 1);
}

static void test_remove_while_iterating(void **state)
{
        struct item x[5];
        DLIST_HEAD(struct item, head) = NULL;

        for (int i = 0; i < 5; i++) {
                x[i] = (struct item){.v = i};
                DLIST_PREPEND(a, head, &x[i]);
        }
        DLIST_FOREACH_SAFE(a, it, next, head)
                if (it->v % 2 == 0)
                        DLIST_REMOVE(a, head, it);
        expect_a(head, (const int[]){3, 1}, 2);
        DLIST_FOREACH_SAFE(a, it, next, head)
                DLIST_REMOVE(a, head, it);
        assert_null(head);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_prepend_remove),
                cmocka_unit_test(test_two_lists),
                cmocka_unit_test(test_remove_while_iterating),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

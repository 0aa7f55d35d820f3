/* Intrusive doubly linked lists: the links live in the item, the list is one pointer to its first item,
 * and adding or removing is O(1) without allocating. An item may sit on several lists, one pair of links
 * per list, each pair named: DLIST_FIELDS(struct upstream, idle) gives idle_next and idle_prev, and every
 * macro takes that name first.
 *
 *     struct call { ...; DLIST_FIELDS(struct call, calls); };
 *     struct owner { ...; DLIST_HEAD(struct call, calls); };
 *     DLIST_PREPEND(calls, owner->calls, call);
 *     DLIST_FOREACH(calls, c, owner->calls) ...
 *     DLIST_REMOVE(calls, owner->calls, call);
 *
 * An item not on the list has both links NULL (zero-initialised, or after DLIST_REMOVE); only the first
 * item has a NULL prev while on it. The DLIST_ prefix keeps clear of <sys/queue.h>'s LIST_ macros, which
 * libevent's headers define for their own use. */
#pragma once

#include <assert.h>
#include <stddef.h>

#define DLIST_HEAD(t, name) t *name
#define DLIST_FIELDS(t, name) t *name##_next, *name##_prev

/* Puts <item>, which is on no list <name>, first on the list starting at <head>. */
#define DLIST_PREPEND(name, head, item)                                                                        \
        do {                                                                                                  \
                __typeof__(*(head)) **_head = &(head), *_item = (item);                                       \
                assert(_item && !_item->name##_next && !_item->name##_prev && *_head != _item);              \
                if ((_item->name##_next = *_head))                                                            \
                        _item->name##_next->name##_prev = _item;                                              \
                *_head = _item;                                                                               \
        } while (0)

/* Takes <item>, which is on the list starting at <head>, off it. */
#define DLIST_REMOVE(name, head, item)                                                                         \
        do {                                                                                                  \
                __typeof__(*(head)) **_head = &(head), *_item = (item);                                       \
                assert(_item);                                                                                \
                if (_item->name##_next)                                                                       \
                        _item->name##_next->name##_prev = _item->name##_prev;                                 \
                if (_item->name##_prev)                                                                       \
                        _item->name##_prev->name##_next = _item->name##_next;                                 \
                else {                                                                                        \
                        assert(*_head == _item);                                                              \
                        *_head = _item->name##_next;                                                          \
                }                                                                                             \
                _item->name##_next = _item->name##_prev = NULL;                                               \
        } while (0)

/* Whether <item> is on the list starting at <head>. */
#define DLIST_LINKED(name, head, item) ((item)->name##_prev || (head) == (item))

/* Visits each item; <i> may not be removed inside the loop (use DLIST_FOREACH_SAFE). */
#define DLIST_FOREACH(name, i, head) for (__typeof__(*(head)) *i = (head); i; i = i->name##_next)

/* Visits each item; <i> may be removed (and freed) inside the loop, other items not. */
#define DLIST_FOREACH_SAFE(name, i, n, head)                                                                   \
        for (__typeof__(*(head)) *i = (head), *n = i ? i->name##_next : NULL; i;                              \
             i = n, n = i ? i->name##_next : NULL)

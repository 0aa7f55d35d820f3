/* Lists as the server pages them ({"items": [...], "next_offset": N or null}), printed for people: a
 * table of the page, and on stderr the command that shows the next one when there is more. */
#pragma once

#include <cjson/cJSON.h>
#include <stddef.h>

#include "webctl/table.h"

struct list {
        const char *name;           /* in "the server's answer has no <name> list" */
        const char *const *headers; /* the table's columns */
        size_t columns;
        void (*layout)(struct table *t);                     /* aligns and caps the columns */
        int (*add_row)(struct table *t, const cJSON *item); /* 0 or -errno */
        const char *empty;          /* the line printed for a page without items */
        const char *more;           /* the command for the next page, without its " --offset N" */
};

/* Prints the page <answer> as <userdata>, a const struct list, says: the shape of webctl_show()'s <print>.
 * Returns an exit status. */
int list_print(const cJSON *answer, const void *userdata);

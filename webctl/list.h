/* Lists as the server pages them ({"items": [...], "next_offset": N or null}), printed for people: a
 * table of the page fitted to the terminal, and on stderr the command that shows the next one when there
 * is more, with the filters, limit and --url of this one so that it works as printed. */
#pragma once

#include <cjson/cJSON.h>
#include <stddef.h>

#include "webctl/table.h"
#include "webctl/webctl.h"

#define LIST_ARGS_MAX 8

struct list {
        const char *name;           /* in "the server's answer has no <name> list" */
        const char *const *headers; /* the table's columns */
        size_t columns;
        void (*layout)(struct table *t);                     /* aligns and caps the columns */
        int (*add_row)(struct table *t, const cJSON *item); /* 0 or -errno */
        const char *empty;          /* the line printed for a page without items */
        const char *more;           /* "More tasks", before the command for the next page */
        const char *cursor;         /* "before": the next page is "--before <next_before>" when the answer has
                                     * one (stable while the list grows), else "--offset <next_offset>" */
        /* the command's arguments after "webctl [--url URL]", without --offset or the cursor */
        const char *args[LIST_ARGS_MAX];
        size_t n_args;
};

/* Adds <arg> to <l>'s arguments (at most LIST_ARGS_MAX). */
void list_add_arg(struct list *l, const char *arg);

/* Prints the page <answer> as <userdata>, a const struct list, says: the shape of webctl_show()'s <print>.
 * Returns an exit status. */
int list_print(const struct webctl *w, const cJSON *answer, const void *userdata);

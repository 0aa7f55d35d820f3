/* The one way webctl prints a page of a list answer (tasks, activity): the command describes its columns
 * and rows in a struct list; the table, the line for an empty page and the hint for the next page are
 * the same for every list. Everything allocated here is freed before returning. */
#include "webctl/list.h"

#include <stdio.h>

#include "common/macro.h"
#include "webctl/webctl.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct table *, table_free)

int list_print(const cJSON *answer, const void *userdata)
{
        const struct list *l = userdata;
        _cleanup_(table_freep) struct table *t = NULL;
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(answer, "items"), *item;
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(answer, "next_offset");
        char next_buf[32];

        if (!cJSON_IsArray(items)) {
                fprintf(stderr, "webctl: the server's answer has no %s list\n", l->name);
                return WEBCTL_EXIT_API;
        }
        if (table_new(l->headers, l->columns, &t) < 0)
                return WEBCTL_EXIT_API;
        l->layout(t);
        cJSON_ArrayForEach(item, items) {
                if (l->add_row(t, item) < 0)
                        return WEBCTL_EXIT_API;
        }

        if (table_rows(t) == 0)
                printf("%s\n", l->empty);
        else
                (void)table_print(t, stdout, table_terminal_width(stdout));
        if (cJSON_IsNumber(next))
                fprintf(stderr, "%s --offset %s\n", l->more,
                        webctl_integer(answer, "next_offset", next_buf, sizeof(next_buf)));
        return WEBCTL_EXIT_OK;
}

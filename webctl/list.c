/* The one way webctl prints a page of a list answer (tasks, activity): the command describes its columns
 * and rows in a struct list; the table, the line for an empty page and the hint for the next page are
 * the same for every list. Everything allocated here is freed before returning. */
#include "webctl/list.h"

#include <assert.h>
#include <stdio.h>

#include "common/macro.h"
#include "webctl/term.h"
#include "webctl/webctl.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct table *, table_free)

void list_add_arg(struct list *l, const char *arg)
{
        assert(l->n_args < LIST_ARGS_MAX);
        l->args[l->n_args++] = arg;
}

/* Prints on stderr the command that shows the next page: by the cursor when the answer has one. */
static void list_print_more(const struct webctl *w, const struct list *l, const cJSON *answer)
{
        struct webctl_line line;
        char next[32], key[32], option[40];
        const char *name = "offset";

        if (l->cursor) {
                (void)snprintf(key, sizeof(key), "next_%s", l->cursor);
                if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(answer, key)))
                        name = l->cursor;
        }
        (void)snprintf(key, sizeof(key), "next_%s", name);
        (void)snprintf(option, sizeof(option), "--%s", name);
        webctl_line_start(w, &line);
        for (size_t i = 0; i < l->n_args; i++)
                webctl_line_add(&line, l->args[i]);
        webctl_line_add(&line, option);
        webctl_line_add(&line, webctl_integer(answer, key, next, sizeof(next)));
        if (!line.overflow)
                fprintf(stderr, "%s: %s\n", l->more, line.text);
}

int list_print(const struct webctl *w, const cJSON *answer, const void *userdata)
{
        const struct list *l = userdata;
        _cleanup_(table_freep) struct table *t = NULL;
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(answer, "items"), *item;
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(answer, "next_offset");

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
                (void)table_print(t, stdout, term_width(stdout), term_color(stdout));
        if (cJSON_IsNumber(next))
                list_print_more(w, l, answer);
        return WEBCTL_EXIT_OK;
}

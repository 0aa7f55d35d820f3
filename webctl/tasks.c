/* The task commands, one function each, on webd's /tasks routes (all of them need the saved login), and
 * their table for webctl_dispatch() with their help:
 *   list  GET /tasks?limit=&offset=&done=   a table, newest first; a note on stderr when there are more
 *   add   POST /tasks                       "Created task N."
 *   show  GET /tasks/N                      a record, the description on as many lines as it has
 *   edit  PATCH /tasks/N                    only the fields given
 *   done  PATCH /tasks/N {"done":true}
 *   rm    DELETE /tasks/N
 * Under --json each prints the server's JSON instead (rm prints nothing: the answer is 204 No Content). */
#include "webctl/tasks.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/cjson.h"
#include "common/macro.h"
#include "webctl/list.h"
#include "webctl/table.h"
#include "webctl/webctl.h"

#define TASKS_PATH_MAX     128
#define TASKS_LIMIT_MAX    100
#define TASKS_TITLE_COLUMN 60 /* widest title shown in a list */

enum {
        TASKS_OPT_DONE = 0x100,
        TASKS_OPT_TODO,
        TASKS_OPT_LIMIT,
        TASKS_OPT_OFFSET,
        TASKS_OPT_TITLE,
        TASKS_OPT_DESCRIPTION,
};

/* Parses <argv> with <options>, giving the command's own options to <own> (which returns 0 or an exit
 * status), and expects <positional> arguments, left in argv[optind...]; else says so, with the command's
 * usage and <note>. Returns -1 to go on, or an exit status. */
static int tasks_getopt(struct webctl *w, int argc, char **argv, const struct option *options,
                        webctl_option_cb own, void *userdata, int positional, const char *note)
{
        int r = webctl_getopt(w, argc, argv, options, own, userdata);

        if (r >= 0)
                return r;
        if (argc - optind != positional)
                return webctl_usage_error(w, "usage: webctl tasks %s %s%s", w->command->name, w->command->args,
                                          note);
        return -1;
}

/* The task that show, edit, done and rm act on. */
struct tasks_item {
        uint64_t id;
        char path[TASKS_PATH_MAX]; /* "/tasks/ID" */
};

/* tasks_getopt() for the commands on one task: their single argument is the task's ID, parsed into
 * *<ret>. Returns -1 to go on, or an exit status. */
static int tasks_item_getopt(struct webctl *w, int argc, char **argv, const struct option *options,
                             webctl_option_cb own, void *userdata, struct tasks_item *ret)
{
        int r;

        r = tasks_getopt(w, argc, argv, options, own, userdata, 1, "");
        if (r >= 0)
                return r;
        r = webctl_parse_number(w, "the task ID", argv[optind], 1, INT64_MAX, &ret->id);
        if (r != 0)
                return r;
        (void)snprintf(ret->path, sizeof(ret->path), "/tasks/%" PRIu64, ret->id);
        return -1;
}

struct tasks_fields {
        const char *title, *description;
        int done; /* -1: not given */
};

/* The JSON object of the fields given, or NULL (out of memory). */
static cJSON *tasks_fields_json(const struct tasks_fields *f)
{
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();

        if (!j)
                return NULL;
        if (f->title && !cJSON_AddStringToObject(j, "title", f->title))
                return NULL;
        if (f->description && !cJSON_AddStringToObject(j, "description", f->description))
                return NULL;
        if (f->done >= 0 && !cJSON_AddBoolToObject(j, "done", f->done))
                return NULL;
        return TAKE_PTR(j);
}

/* Connects with the saved login, sends the fields <f> (NULL: no body) and prints "<before> N<after>" (N:
 * <id>, or the id in the answer if <id> is 0), or the JSON answer. Returns an exit status. */
static int tasks_send(struct webctl *w, const char *method, const char *path, const struct tasks_fields *f,
                      long expect, const char *before, uint64_t id, const char *after)
{
        _cleanup_(cJSON_Deletep) cJSON *body = NULL;
        _cleanup_(cJSON_freep) char *text = NULL;
        struct api_response res;
        char buf[32];
        int r;

        r = webctl_connect(w, true);
        if (r != 0)
                return r;
        if (f) {
                body = tasks_fields_json(f);
                text = body ? cJSON_PrintUnformatted(body) : NULL;
                if (!text) {
                        webctl_error("out of memory");
                        return WEBCTL_EXIT_API;
                }
        }
        r = webctl_call(w, method, path, text, expect, &res);
        if (r != 0)
                return r;
        if (w->json) {
                r = res.len > 0 ? webctl_print_json(&res) : WEBCTL_EXIT_OK;
        } else {
                const char *shown = id > 0 ? NULL : webctl_integer(res.json, "id", buf, sizeof(buf));

                if (shown)
                        printf("%s %s%s\n", before, shown, after);
                else
                        printf("%s %" PRIu64 "%s\n", before, id, after);
                r = WEBCTL_EXIT_OK;
        }
        api_response_done(&res);
        return r;
}

/* --done and --todo, for list (a filter) and for add and edit (the new state). */
static int tasks_done_option(const struct webctl *w, int c, int *done)
{
        if (*done >= 0)
                return webctl_usage_error(w, "give --done or --todo once");
        *done = c == TASKS_OPT_DONE;
        return 0;
}

struct tasks_list_args {
        int done; /* -1: all */
        uint64_t limit, offset;
        const char *limit_arg; /* --limit as given, or NULL */
};

static int tasks_list_option(const struct webctl *w, int c, const char *arg, void *userdata)
{
        struct tasks_list_args *a = userdata;

        switch (c) {
        case TASKS_OPT_DONE:
        case TASKS_OPT_TODO:
                return tasks_done_option(w, c, &a->done);
        case TASKS_OPT_LIMIT:
                a->limit_arg = arg;
                return webctl_parse_number(w, "--limit", arg, 1, TASKS_LIMIT_MAX, &a->limit);
        case TASKS_OPT_OFFSET:
                return webctl_parse_number(w, "--offset", arg, 0, INT64_MAX, &a->offset);
        default:
                return webctl_usage_error(w, "unknown option");
        }
}

static const char *const tasks_list_headers[] = { "ID", "DONE", "TITLE", "CREATED" };

static void tasks_list_layout(struct table *t)
{
        table_align_right(t, 0);
        table_limit(t, 2, TASKS_TITLE_COLUMN, 1, 10);
}

static int tasks_list_add_row(struct table *t, const cJSON *item)
{
        char id[32], created[64];
        bool done = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "done"));
        const char *cells[] = {
                webctl_integer(item, "id", id, sizeof(id)),
                done ? "yes" : "no",
                webctl_string(item, "title"),
                webctl_time(webctl_string(item, "created_at"), created, sizeof(created)),
        };
        int r;

        r = table_add_row(t, cells);
        if (r >= 0 && done)
                table_style_row(t, TABLE_STYLE_DIM);
        return r;
}

static int tasks_list(struct webctl *w, int argc, char **argv)
{
        static const struct option options[] = {
                { "done", no_argument, NULL, TASKS_OPT_DONE },
                { "todo", no_argument, NULL, TASKS_OPT_TODO },
                { "limit", required_argument, NULL, TASKS_OPT_LIMIT },
                { "offset", required_argument, NULL, TASKS_OPT_OFFSET },
                WEBCTL_COMMON_OPTIONS,
                { NULL, 0, NULL, 0 },
        };
        struct tasks_list_args a = { .done = -1 };
        struct list list = {
                .name = "task",
                .headers = tasks_list_headers,
                .columns = ELEMENTSOF(tasks_list_headers),
                .layout = tasks_list_layout,
                .add_row = tasks_list_add_row,
                .more = "More tasks",
        };
        char path[TASKS_PATH_MAX];
        int r, n;

        r = tasks_getopt(w, argc, argv, options, tasks_list_option, &a, 0, "");
        if (r >= 0)
                return r;

        /* The next page's command keeps this one's filter and limit. */
        list_add_arg(&list, "tasks");
        list_add_arg(&list, "list");
        if (a.done >= 0)
                list_add_arg(&list, a.done ? "--done" : "--todo");
        if (a.limit_arg) {
                list_add_arg(&list, "--limit");
                list_add_arg(&list, a.limit_arg);
        }

        /* At most 14 + 20 + 7 + 3 + 11 bytes: it fits. */
        n = snprintf(path, sizeof(path), "/tasks?offset=%" PRIu64, a.offset);
        if (a.limit_arg)
                n += snprintf(path + n, sizeof(path) - (size_t)n, "&limit=%" PRIu64, a.limit);
        if (a.done >= 0)
                (void)snprintf(path + n, sizeof(path) - (size_t)n, "&done=%s", a.done ? "true" : "false");
        list.empty = a.offset > 0 ? "No more tasks." : "No tasks.";
        return webctl_show(w, path, list_print, &list);
}

static int tasks_fields_option(const struct webctl *w, int c, const char *arg, void *userdata)
{
        struct tasks_fields *f = userdata;

        switch (c) {
        case TASKS_OPT_DONE:
        case TASKS_OPT_TODO:
                return tasks_done_option(w, c, &f->done);
        case TASKS_OPT_TITLE:
                f->title = arg;
                return 0;
        case TASKS_OPT_DESCRIPTION:
                f->description = arg;
                return 0;
        default:
                return webctl_usage_error(w, "unknown option");
        }
}

static int tasks_add(struct webctl *w, int argc, char **argv)
{
        static const struct option options[] = {
                { "description", required_argument, NULL, TASKS_OPT_DESCRIPTION },
                { "done", no_argument, NULL, TASKS_OPT_DONE },
                WEBCTL_COMMON_OPTIONS,
                { NULL, 0, NULL, 0 },
        };
        struct tasks_fields f = { .done = -1 };
        int r;

        r = tasks_getopt(w, argc, argv, options, tasks_fields_option, &f, 1, "");
        if (r == WEBCTL_EXIT_USAGE && argc - optind > 1)
                webctl_suggest_joined(w, argv + optind, argc - optind, "A TITLE of several words is quoted");
        if (r >= 0)
                return r;
        if (f.done == 0)
                f.done = -1; /* --todo isn't an option of add, but would be the default anyway */
        f.title = argv[optind];
        return tasks_send(w, "POST", "/tasks", &f, 201, "Created task", 0, ".");
}

static const struct option tasks_item_options[] = {
        WEBCTL_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
};

static int tasks_print_task(_unused_ const struct webctl *w, const cJSON *task, _unused_ const void *userdata)
{
        static const char *const keys[] = { "ID", "Title", "Done", "Created", "Updated", "Description" };
        char id[32], created[64], updated[64];
        const char *values[] = {
                webctl_integer(task, "id", id, sizeof(id)),
                webctl_string(task, "title"),
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(task, "done")) ? "yes" : "no",
                webctl_time(webctl_string(task, "created_at"), created, sizeof(created)),
                webctl_time(webctl_string(task, "updated_at"), updated, sizeof(updated)),
                webctl_string(task, "description"),
        };

        return table_print_record(stdout, keys, values, ELEMENTSOF(keys)) < 0 ? WEBCTL_EXIT_API
                                                                              : WEBCTL_EXIT_OK;
}

static int tasks_show(struct webctl *w, int argc, char **argv)
{
        struct tasks_item item;
        int r;

        r = tasks_item_getopt(w, argc, argv, tasks_item_options, NULL, NULL, &item);
        if (r >= 0)
                return r;
        return webctl_show(w, item.path, tasks_print_task, NULL);
}

static int tasks_edit(struct webctl *w, int argc, char **argv)
{
        static const struct option options[] = {
                { "title", required_argument, NULL, TASKS_OPT_TITLE },
                { "description", required_argument, NULL, TASKS_OPT_DESCRIPTION },
                { "done", no_argument, NULL, TASKS_OPT_DONE },
                { "todo", no_argument, NULL, TASKS_OPT_TODO },
                WEBCTL_COMMON_OPTIONS,
                { NULL, 0, NULL, 0 },
        };
        struct tasks_fields f = { .done = -1 };
        struct tasks_item item;
        int r;

        r = tasks_item_getopt(w, argc, argv, options, tasks_fields_option, &f, &item);
        if (r >= 0)
                return r;
        if (!f.title && !f.description && f.done < 0)
                return webctl_usage_error(w, "nothing to change: give --title, --description, --done or "
                                             "--todo");
        return tasks_send(w, "PATCH", item.path, &f, 200, "Updated task", item.id, ".");
}

static int tasks_done(struct webctl *w, int argc, char **argv)
{
        static const struct tasks_fields f = { .done = 1 };
        struct tasks_item item;
        int r;

        r = tasks_item_getopt(w, argc, argv, tasks_item_options, NULL, NULL, &item);
        if (r >= 0)
                return r;
        return tasks_send(w, "PATCH", item.path, &f, 200, "Task", item.id, " is done.");
}

static int tasks_rm(struct webctl *w, int argc, char **argv)
{
        struct tasks_item item;
        int r;

        r = tasks_item_getopt(w, argc, argv, tasks_item_options, NULL, NULL, &item);
        if (r >= 0)
                return r;
        return tasks_send(w, "DELETE", item.path, NULL, 204, "Deleted task", item.id, ".");
}

const struct webctl_command tasks_commands[] = {
        {
                .name = "list",
                .alias = "ls",
                .args = "[--done|--todo] [--limit N] [--offset N]",
                .summary = "List your tasks, newest first",
                .options = "      --done        only the tasks done\n"
                           "      --todo        only the tasks not done\n"
                           "      --limit N     at most N tasks (1-100; default: the server's, 20)\n"
                           "      --offset N    skip the first N (the command for the next page is on stderr)\n",
                .run = tasks_list,
        },
        {
                .name = "add",
                .args = "TITLE [--description D] [--done]",
                .summary = "Create a task (a TITLE that starts with '-' goes after '--': tasks add -- -TITLE)",
                .options = "      --description D   its description\n"
                           "      --done            created done\n",
                .run = tasks_add,
                .text_args = true,
        },
        { .name = "show", .args = "ID", .summary = "Show a task", .run = tasks_show },
        {
                .name = "edit",
                .args = "ID [--title T] [--description D] [--done|--todo]",
                .summary = "Change a task: only the fields given",
                .options = "      --title T         the new title\n"
                           "      --description D   the new description\n"
                           "      --done, --todo    mark it done, or not done\n",
                .run = tasks_edit,
        },
        { .name = "done", .args = "ID", .summary = "Mark a task done", .run = tasks_done },
        { .name = "rm", .args = "ID", .summary = "Delete a task", .run = tasks_rm },
};

const size_t tasks_n_commands = ELEMENTSOF(tasks_commands);

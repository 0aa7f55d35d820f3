/* The task commands, one function each, on webd's /tasks routes (all of them need the saved login):
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

#include "common/macro.h"
#include "webctl/table.h"
#include "webctl/webctl.h"

#define TASKS_PATH_MAX     128
#define TASKS_LIMIT_MAX    100
#define TASKS_TITLE_COLUMN 60 /* widest title shown in a list */

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)
DEFINE_TRIVIAL_CLEANUP_FUNC(char *, cJSON_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct table *, table_free)

enum {
        TASKS_OPT_DONE = 0x100,
        TASKS_OPT_TODO,
        TASKS_OPT_LIMIT,
        TASKS_OPT_OFFSET,
        TASKS_OPT_TITLE,
        TASKS_OPT_DESCRIPTION,
};

/* Parses <argv> with <options>, giving the command's own options to <own> (which returns 0 or an exit
 * status), and expects <positional> arguments, left in argv[optind...]. Returns -1 to go on, or an exit
 * status. */
static int tasks_getopt(struct webctl *w, int argc, char **argv, const struct option *options,
                        int (*own)(int c, const char *arg, void *userdata), void *userdata, int positional,
                        const char *usage)
{
        int c, r, status;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                r = webctl_common_option(w, c, argv, &status);
                if (r < 0)
                        return status;
                if (r > 0)
                        continue;
                r = own ? own(c, optarg, userdata) : 0;
                if (r != 0)
                        return r;
        }
        if (argc - optind != positional)
                return webctl_usage_error("usage: webctl tasks %s", usage);
        return -1;
}

/* Sends <body> (a JSON tree, or NULL) and prints "<before> N<after>" (N: <id>, or the id in the answer if
 * <id> is 0), or the JSON answer. */
static int tasks_send(struct webctl *w, const char *method, const char *path, const cJSON *body, long expect,
                      const char *before, uint64_t id, const char *after)
{
        _cleanup_(cJSON_freep) char *text = NULL;
        struct api_response res;
        char buf[32];
        int r;

        if (body) {
                text = cJSON_PrintUnformatted(body);
                if (!text) {
                        fprintf(stderr, "webctl: out of memory\n");
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

struct tasks_list_args {
        int done; /* -1: all */
        uint64_t limit, offset;
        bool have_limit;
};

static int tasks_list_option(int c, const char *arg, void *userdata)
{
        struct tasks_list_args *a = userdata;

        switch (c) {
        case TASKS_OPT_DONE:
        case TASKS_OPT_TODO:
                if (a->done >= 0)
                        return webctl_usage_error("give --done or --todo once");
                a->done = c == TASKS_OPT_DONE;
                return 0;
        case TASKS_OPT_LIMIT:
                a->have_limit = true;
                return webctl_parse_number("--limit", arg, 1, TASKS_LIMIT_MAX, &a->limit);
        case TASKS_OPT_OFFSET:
                return webctl_parse_number("--offset", arg, 0, INT64_MAX, &a->offset);
        default:
                return webctl_usage_error("unknown option");
        }
}

static int tasks_print_list(const cJSON *answer, uint64_t offset)
{
        static const char *const headers[] = { "ID", "DONE", "TITLE", "CREATED" };
        _cleanup_(table_freep) struct table *t = NULL;
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(answer, "items"), *item;
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(answer, "next_offset");
        char next_buf[32];

        if (!cJSON_IsArray(items)) {
                fprintf(stderr, "webctl: the server's answer has no task list\n");
                return WEBCTL_EXIT_API;
        }
        if (table_new(headers, ELEMENTSOF(headers), &t) < 0)
                return WEBCTL_EXIT_API;
        table_align_right(t, 0);
        table_limit(t, 2, TASKS_TITLE_COLUMN, true, 10);
        cJSON_ArrayForEach(item, items) {
                char id[32], created[64];
                const char *cells[] = {
                        webctl_integer(item, "id", id, sizeof(id)),
                        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "done")) ? "yes" : "no",
                        webctl_string(item, "title"),
                        webctl_time(webctl_string(item, "created_at"), created, sizeof(created)),
                };

                if (table_add_row(t, cells) < 0)
                        return WEBCTL_EXIT_API;
        }

        if (table_rows(t) == 0)
                printf(offset > 0 ? "No more tasks.\n" : "No tasks.\n");
        else
                (void)table_print(t, stdout, table_terminal_width(stdout));
        if (cJSON_IsNumber(next))
                fprintf(stderr, "More tasks: webctl tasks list --offset %s\n",
                        webctl_integer(answer, "next_offset", next_buf, sizeof(next_buf)));
        return WEBCTL_EXIT_OK;
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
        struct api_response res;
        char path[TASKS_PATH_MAX];
        int r, n;

        r = tasks_getopt(w, argc, argv, options, tasks_list_option, &a, 0,
                         "list [--done|--todo] [--limit N] [--offset N]");
        if (r >= 0)
                return r;
        r = webctl_connect(w, true);
        if (r != 0)
                return r;

        /* At most 14 + 20 + 7 + 3 + 11 bytes: it fits. */
        n = snprintf(path, sizeof(path), "/tasks?offset=%" PRIu64, a.offset);
        if (a.have_limit)
                n += snprintf(path + n, sizeof(path) - (size_t)n, "&limit=%" PRIu64, a.limit);
        if (a.done >= 0)
                (void)snprintf(path + n, sizeof(path) - (size_t)n, "&done=%s", a.done ? "true" : "false");

        r = webctl_call(w, "GET", path, NULL, 200, &res);
        if (r != 0)
                return r;
        r = w->json ? webctl_print_json(&res) : tasks_print_list(res.json, a.offset);
        api_response_done(&res);
        return r;
}

struct tasks_fields {
        const char *title, *description;
        int done; /* -1: not given */
};

static int tasks_fields_option(int c, const char *arg, void *userdata)
{
        struct tasks_fields *f = userdata;

        switch (c) {
        case TASKS_OPT_DONE:
        case TASKS_OPT_TODO:
                if (f->done >= 0)
                        return webctl_usage_error("give --done or --todo once");
                f->done = c == TASKS_OPT_DONE;
                return 0;
        case TASKS_OPT_TITLE:
                f->title = arg;
                return 0;
        case TASKS_OPT_DESCRIPTION:
                f->description = arg;
                return 0;
        default:
                return webctl_usage_error("unknown option");
        }
}

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

static int tasks_add(struct webctl *w, int argc, char **argv)
{
        static const struct option options[] = {
                { "description", required_argument, NULL, TASKS_OPT_DESCRIPTION },
                { "done", no_argument, NULL, TASKS_OPT_DONE },
                WEBCTL_COMMON_OPTIONS,
                { NULL, 0, NULL, 0 },
        };
        struct tasks_fields f = { .done = -1 };
        _cleanup_(cJSON_Deletep) cJSON *body = NULL;
        int r;

        r = tasks_getopt(w, argc, argv, options, tasks_fields_option, &f, 1,
                         "add TITLE [--description D] [--done]  (quote a TITLE of several words)");
        if (r >= 0)
                return r;
        if (f.done == 0)
                f.done = -1; /* --todo isn't an option of add, but would be the default anyway */
        f.title = argv[optind];
        r = webctl_connect(w, true);
        if (r != 0)
                return r;
        body = tasks_fields_json(&f);
        if (!body)
                return WEBCTL_EXIT_API;
        return tasks_send(w, "POST", "/tasks", body, 201, "Created task", 0, ".");
}

/* Parses the ID argument of show/done/rm/edit into *<ret> and builds "/tasks/ID" into <path>. */
static int tasks_id_path(const char *arg, uint64_t *ret, char *path, size_t size)
{
        int r = webctl_parse_number("the task ID", arg, 1, INT64_MAX, ret);

        if (r != 0)
                return r;
        (void)snprintf(path, size, "/tasks/%" PRIu64, *ret);
        return -1;
}

static const struct option tasks_id_options[] = {
        WEBCTL_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
};

static int tasks_show(struct webctl *w, int argc, char **argv)
{
        static const char *const keys[] = { "ID", "Title", "Done", "Created", "Updated", "Description" };
        char path[TASKS_PATH_MAX], id_buf[32], created[64], updated[64];
        struct api_response res;
        uint64_t id;
        int r;

        r = tasks_getopt(w, argc, argv, tasks_id_options, NULL, NULL, 1, "show ID");
        if (r >= 0)
                return r;
        r = tasks_id_path(argv[optind], &id, path, sizeof(path));
        if (r >= 0)
                return r;
        r = webctl_connect(w, true);
        if (r != 0)
                return r;
        r = webctl_call(w, "GET", path, NULL, 200, &res);
        if (r != 0)
                return r;
        if (w->json)
                r = webctl_print_json(&res);
        else {
                const char *values[] = {
                        webctl_integer(res.json, "id", id_buf, sizeof(id_buf)),
                        webctl_string(res.json, "title"),
                        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res.json, "done")) ? "yes" : "no",
                        webctl_time(webctl_string(res.json, "created_at"), created, sizeof(created)),
                        webctl_time(webctl_string(res.json, "updated_at"), updated, sizeof(updated)),
                        webctl_string(res.json, "description"),
                };

                r = table_print_record(stdout, keys, values, ELEMENTSOF(keys)) < 0 ? WEBCTL_EXIT_API
                                                                                    : WEBCTL_EXIT_OK;
        }
        api_response_done(&res);
        return r;
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
        _cleanup_(cJSON_Deletep) cJSON *body = NULL;
        char path[TASKS_PATH_MAX];
        uint64_t id;
        int r;

        r = tasks_getopt(w, argc, argv, options, tasks_fields_option, &f, 1,
                         "edit ID [--title T] [--description D] [--done|--todo]");
        if (r >= 0)
                return r;
        r = tasks_id_path(argv[optind], &id, path, sizeof(path));
        if (r >= 0)
                return r;
        if (!f.title && !f.description && f.done < 0)
                return webctl_usage_error("nothing to change: give --title, --description, --done or "
                                          "--todo");
        r = webctl_connect(w, true);
        if (r != 0)
                return r;
        body = tasks_fields_json(&f);
        if (!body)
                return WEBCTL_EXIT_API;
        return tasks_send(w, "PATCH", path, body, 200, "Updated task", id, ".");
}

static int tasks_done(struct webctl *w, int argc, char **argv)
{
        struct tasks_fields f = { .done = 1 };
        _cleanup_(cJSON_Deletep) cJSON *body = NULL;
        char path[TASKS_PATH_MAX];
        uint64_t id;
        int r;

        r = tasks_getopt(w, argc, argv, tasks_id_options, NULL, NULL, 1, "done ID");
        if (r >= 0)
                return r;
        r = tasks_id_path(argv[optind], &id, path, sizeof(path));
        if (r >= 0)
                return r;
        r = webctl_connect(w, true);
        if (r != 0)
                return r;
        body = tasks_fields_json(&f);
        if (!body)
                return WEBCTL_EXIT_API;
        return tasks_send(w, "PATCH", path, body, 200, "Task", id, " is done.");
}

static int tasks_rm(struct webctl *w, int argc, char **argv)
{
        char path[TASKS_PATH_MAX];
        uint64_t id;
        int r;

        r = tasks_getopt(w, argc, argv, tasks_id_options, NULL, NULL, 1, "rm ID");
        if (r >= 0)
                return r;
        r = tasks_id_path(argv[optind], &id, path, sizeof(path));
        if (r >= 0)
                return r;
        r = webctl_connect(w, true);
        if (r != 0)
                return r;
        return tasks_send(w, "DELETE", path, NULL, 204, "Deleted task", id, ".");
}

int tasks_main(struct webctl *w, int argc, char **argv)
{
        static const struct {
                const char *name;
                int (*run)(struct webctl *w, int argc, char **argv);
        } commands[] = {
                { "list", tasks_list }, { "ls", tasks_list },   { "add", tasks_add }, { "show", tasks_show },
                { "edit", tasks_edit }, { "done", tasks_done }, { "rm", tasks_rm },
        };

        if (argc < 2)
                return webctl_usage_error("tasks needs a command: list, add, show, edit, done or rm");
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                webctl_help();
                return WEBCTL_EXIT_OK;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(argv[1], commands[i].name) == 0)
                        return commands[i].run(w, argc - 1, argv + 1);
        return webctl_usage_error("unknown tasks command '%s'", argv[1]);
}

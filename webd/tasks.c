/* The task routes. Every statement names the owner (user_id = the token's subject) next to the task id,
 * so a task of another user is simply not found: there is no separate ownership check to forget. Every
 * statement is wrapped by SERVER_AUTH_SQL and gated on EXISTS (SELECT 1 FROM auth), so the token's
 * validity is checked by the statement itself and a revoked token reads and writes nothing (server.h).
 *
 * Writes answer only once their statement's result has arrived (autocommit: committed). The rows come
 * back through RETURNING, so a create or an update is one round trip. */
#include "webd/tasks.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "webd/db.h"
#include "webd/json.h"
#include "webd/server.h"

#define TASKS_COLUMNS "id, title, description, done, created_at, updated_at"
/* What every statement's WHERE adds: the owner is the token's user, and the token is still good. */
#define TASKS_OWNER "user_id = $1 AND EXISTS (SELECT 1 FROM auth)"
/* The first column of a task in a result: the one before is SERVER_AUTH_SQL's. */
#define TASKS_FIRST 1

struct tasks {
        unsigned insert, get, list, put, patch, delete;
};

static const struct json_field tasks_fields[] = {
        { "title", JSON_STRING, true, 1, 200, false, true },
        { "description", JSON_STRING, false, 0, 2000, false },
        { "done", JSON_BOOL, false, 0, 0, false },
};

/* What GET /tasks takes in its query string. */
static const char *const tasks_list_params_names[] = {"limit", "offset", "done", NULL};

/* PATCH: the same fields, none required. */
static const struct json_field tasks_patch_fields[] = {
        { "title", JSON_STRING, false, 1, 200, false, true },
        { "description", JSON_STRING, false, 0, 2000, false },
        { "done", JSON_BOOL, false, 0, 0, false },
};

/* True when row <row> of <res> holds a task (not the row of NULLs SERVER_AUTH_SQL gives for none). */
static bool tasks_row_present(const PGresult *res, int row)
{
        return row < PQntuples(res) && !PQgetisnull(res, row, TASKS_FIRST);
}

/* Builds the task JSON of row <row>, or NULL when out of memory or the row is not what we selected. */
static cJSON *tasks_row_json(const PGresult *res, int row)
{
        char created[JSON_TIME_MAX], updated[JSON_TIME_MAX];
        const char *id;
        size_t n;
        cJSON *task;

        if (PQnfields(res) != TASKS_FIRST + 6 ||
            json_timestamp(PQgetvalue(res, row, TASKS_FIRST + 4), created, sizeof(created)) < 0 ||
            json_timestamp(PQgetvalue(res, row, TASKS_FIRST + 5), updated, sizeof(updated)) < 0)
                return NULL;
        /* A bigint's text is a JSON number as it is: no round trip through a double. */
        id = PQgetvalue(res, row, TASKS_FIRST);
        n = strlen(id);
        if (n == 0 || n > 19 || strspn(id, "0123456789") != n)
                return NULL;
        task = cJSON_CreateObject();
        if (!task || !cJSON_AddRawToObject(task, "id", id) ||
            !cJSON_AddStringToObject(task, "title", PQgetvalue(res, row, TASKS_FIRST + 1)) ||
            !cJSON_AddStringToObject(task, "description", PQgetvalue(res, row, TASKS_FIRST + 2)) ||
            !cJSON_AddBoolToObject(task, "done", PQgetvalue(res, row, TASKS_FIRST + 3)[0] == 't') ||
            !cJSON_AddStringToObject(task, "created_at", created) ||
            !cJSON_AddStringToObject(task, "updated_at", updated)) {
                cJSON_Delete(task);
                return NULL;
        }
        return task;
}

static void tasks_reply_internal(struct server_request *r)
{
        server_reply_error(r, 500, "internal", "internal error");
}

static void tasks_reply_not_found(struct server_request *r)
{
        server_reply_error(r, 404, "not_found", "no such task");
}

/* Answers with the single task in <res> (200/201), or 404 when there is none. */
static void tasks_reply_row(struct server_request *r, int status, int error, const PGresult *res)
{
        cJSON *task;

        if (error < 0) {
                server_reply_db_error(r, error, res);
                return;
        }
        if (!tasks_row_present(res, 0)) {
                tasks_reply_not_found(r);
                return;
        }
        task = tasks_row_json(res, 0);
        if (!task) {
                tasks_reply_internal(r);
                return;
        }
        if (status == 201) {
                char location[48];

                (void)snprintf(location, sizeof(location), "/tasks/%s", PQgetvalue(res, 0, TASKS_FIRST));
                (void)server_add_header(r, "Location", location);
        }
        server_reply(r, status, task);
}

static void tasks_created(struct server_request *r, int error, const PGresult *res)
{
        tasks_reply_row(r, 201, error, res);
}

static void tasks_found(struct server_request *r, int error, const PGresult *res)
{
        tasks_reply_row(r, 200, error, res);
}

/* Answers a request whose input was checked: 500 when the check failed (<k> < 0), 400 with <problems> when
 * it found any. Returns < 0 when it answered, 0 when the input is good. Empties <problems>. */
static int tasks_reply_problems(struct server_request *r, int k, struct json_problems *problems)
{
        if (k < 0) {
                json_problems_clear(problems);
                tasks_reply_internal(r);
                return k;
        }
        if (problems->count > 0) {
                server_reply_invalid(r, problems);
                return -EINVAL;
        }
        json_problems_clear(problems);
        return 0;
}

/* Validates the body of a create or update; a <partial> one (PATCH) may leave out any field but not all.
 * Answers 400 and returns < 0 when it is not valid. */
static int tasks_check_body(struct server_request *r, bool partial)
{
        struct json_problems problems = {0};
        int k;

        if (partial)
                k = json_check_object(r->body, tasks_patch_fields, ELEMENTSOF(tasks_patch_fields),
                                      &problems);
        else
                k = json_check_object(r->body, tasks_fields, ELEMENTSOF(tasks_fields), &problems);
        if (k >= 0 && problems.count == 0 && partial && !r->body->child)
                k = json_add_problem(&problems, "body",
                                     "must hold at least one of title, description, done");
        return tasks_reply_problems(r, k, &problems);
}

static const char *tasks_string(const struct server_request *r, const char *name, const char *def)
{
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->body, name);

        return cJSON_IsString(item) ? item->valuestring : def;
}

static const char *tasks_bool(const struct server_request *r, const char *name, const char *def)
{
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->body, name);

        if (!cJSON_IsBool(item))
                return def;
        return cJSON_IsTrue(item) ? "true" : "false";
}

#define TASKS_PARAMS_MAX 4

/* Runs statement <stmt> with its parameters in their order after the user and token generation
 * (server_query_auth()): the task id when the route names one (<item>), then the <n> <extra> values (at
 * most TASKS_PARAMS_MAX in all). Answers itself when the query can't be sent; <cb> answers otherwise. */
static void tasks_query(struct server_request *r, unsigned stmt, bool item, const char *const *extra, int n,
                        server_query_cb cb)
{
        char id[SERVER_INT_MAX];
        const char *values[TASKS_PARAMS_MAX];
        int k = 0;

        if (item) {
                server_int_text(r->id, id);
                values[k++] = id;
        }
        for (int i = 0; i < n && k < TASKS_PARAMS_MAX; i++)
                values[k++] = extra[i];
        k = server_query_auth(r, stmt, values, k, cb);
        if (k < 0)
                server_reply_db_error(r, k, NULL);
}

/* Creates (POST) or updates (PUT, PATCH) a task from the body, after checking it. A field a <partial> body
 * leaves out is sent as NULL (the statement keeps the stored value); otherwise it takes its default. */
static void tasks_write(struct server_request *r, unsigned stmt, bool item, bool partial, server_query_cb cb)
{
        const char *fields[3];

        if (tasks_check_body(r, partial) < 0)
                return;
        fields[0] = tasks_string(r, "title", partial ? NULL : "");
        fields[1] = tasks_string(r, "description", partial ? NULL : "");
        fields[2] = tasks_bool(r, "done", partial ? NULL : "false");
        tasks_query(r, stmt, item, fields, ELEMENTSOF(fields), cb);
}

static void tasks_create(struct server_request *r, void *userdata)
{
        const struct tasks *t = userdata;

        tasks_write(r, t->insert, false, false, tasks_created);
}

static void tasks_get(struct server_request *r, void *userdata)
{
        const struct tasks *t = userdata;

        tasks_query(r, t->get, true, NULL, 0, tasks_found);
}

static void tasks_put(struct server_request *r, void *userdata)
{
        const struct tasks *t = userdata;

        tasks_write(r, t->put, true, false, tasks_found);
}

static void tasks_patch(struct server_request *r, void *userdata)
{
        const struct tasks *t = userdata;

        tasks_write(r, t->patch, true, true, tasks_found);
}

static void tasks_deleted(struct server_request *r, int error, const PGresult *res)
{
        if (error < 0) {
                server_reply_db_error(r, error, res);
                return;
        }
        if (!tasks_row_present(res, 0)) {
                tasks_reply_not_found(r);
                return;
        }
        server_reply(r, 204, NULL);
}

static void tasks_delete(struct server_request *r, void *userdata)
{
        const struct tasks *t = userdata;

        tasks_query(r, t->delete, true, NULL, 0, tasks_deleted);
}

/* Reads limit, offset and done from the query string. Answers 400 and returns < 0 when one is bad. */
static int tasks_list_params(struct server_request *r, int64_t *limit, int64_t *offset, const char **done)
{
        struct json_problems problems = {0};
        const char *d = server_param(r, "done");
        int k;

        k = server_paging(r, limit, offset, &problems);
        if (k >= 0 && d && strcmp(d, "true") != 0 && strcmp(d, "false") != 0)
                k = json_add_problem(&problems, "done", "must be true or false");
        k = tasks_reply_problems(r, k, &problems);
        if (k < 0)
                return k;
        *done = d;
        return 0;
}

static void tasks_listed(struct server_request *r, int error, const PGresult *res)
{
        int64_t limit, offset;
        const char *done;
        cJSON *body, *items;
        int n;

        if (error < 0) {
                server_reply_db_error(r, error, res);
                return;
        }
        if (tasks_list_params(r, &limit, &offset, &done) < 0)
                return;
        body = cJSON_CreateObject();
        items = cJSON_AddArrayToObject(body, "items");
        if (!items) {
                cJSON_Delete(body);
                tasks_reply_internal(r);
                return;
        }
        n = PQntuples(res);
        /* One row more than asked for was selected: it only says whether there is a next page. With no
         * task at all there is one row of NULLs (SERVER_AUTH_SQL). */
        if (!tasks_row_present(res, 0))
                n = 0;
        for (int i = 0; i < n && i < limit; i++) {
                cJSON *task = tasks_row_json(res, i);

                if (!task) {
                        cJSON_Delete(body);
                        tasks_reply_internal(r);
                        return;
                }
                cJSON_AddItemToArray(items, task);
        }
        if (!cJSON_AddNumberToObject(body, "limit", (double)limit) ||
            !cJSON_AddNumberToObject(body, "offset", (double)offset) ||
            !(n > limit ? cJSON_AddNumberToObject(body, "next_offset", (double)(offset + limit))
                        : cJSON_AddNullToObject(body, "next_offset"))) {
                cJSON_Delete(body);
                tasks_reply_internal(r);
                return;
        }
        server_reply(r, 200, body);
}

static void tasks_list(struct server_request *r, void *userdata)
{
        const struct tasks *t = userdata;
        char limit_text[SERVER_INT_MAX], offset_text[SERVER_INT_MAX];
        const char *done, *values[3];
        int64_t limit, offset;

        if (tasks_list_params(r, &limit, &offset, &done) < 0)
                return;
        server_int_text(limit + 1, limit_text);
        server_int_text(offset, offset_text);
        values[0] = done;
        values[1] = limit_text;
        values[2] = offset_text;
        tasks_query(r, t->list, false, values, ELEMENTSOF(values), tasks_listed);
}

int tasks_new(struct server *s, struct db *db, struct tasks **ret)
{
        static const struct server_method collection[] = {
                { HTTP_GET, tasks_list, true, false, tasks_list_params_names },
                { HTTP_POST, tasks_create, true, true },
        };
        static const struct server_method item[] = {
                { HTTP_GET, tasks_get, true, false },
                { HTTP_PUT, tasks_put, true, true },
                { HTTP_PATCH, tasks_patch, true, true },
                { HTTP_DELETE, tasks_delete, true, false },
        };
        static const struct {
                const char *sql;
                int n_params;
                size_t offset;
        } statements[] = {
                { SERVER_AUTH_SQL("INSERT INTO tasks (user_id, title, description, done) "
                                  "SELECT id, $3::text, $4::text, $5::boolean FROM auth "
                                  "RETURNING " TASKS_COLUMNS,
                                  ""),
                  5, offsetof(struct tasks, insert) },
                { SERVER_AUTH_SQL("SELECT " TASKS_COLUMNS " FROM tasks WHERE id = $3 AND " TASKS_OWNER, ""), 3,
                  offsetof(struct tasks, get) },
                { SERVER_AUTH_SQL("SELECT " TASKS_COLUMNS " FROM tasks WHERE " TASKS_OWNER
                                  " AND ($3::boolean IS NULL OR done = $3) ORDER BY id DESC LIMIT $4 OFFSET $5",
                                  "ORDER BY q.id DESC"),
                  5, offsetof(struct tasks, list) },
                { SERVER_AUTH_SQL("UPDATE tasks SET title = $4, description = $5, done = $6, updated_at = now() "
                                  "WHERE id = $3 AND " TASKS_OWNER " RETURNING " TASKS_COLUMNS,
                                  ""),
                  6, offsetof(struct tasks, put) },
                { SERVER_AUTH_SQL("UPDATE tasks SET title = COALESCE($4, title), "
                                  "description = COALESCE($5, description), done = COALESCE($6::boolean, done), "
                                  "updated_at = now() WHERE id = $3 AND " TASKS_OWNER
                                  " RETURNING " TASKS_COLUMNS,
                                  ""),
                  6, offsetof(struct tasks, patch) },
                { SERVER_AUTH_SQL("DELETE FROM tasks WHERE id = $3 AND " TASKS_OWNER " RETURNING id", ""), 3,
                  offsetof(struct tasks, delete) },
        };
        struct tasks *t;
        int r = 0;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(statements) && r >= 0; i++)
                r = db_statement(db, statements[i].sql, statements[i].n_params,
                                 (unsigned *)(void *)((char *)t + statements[i].offset));
        /* The seeds' paths first spelled /Tarefa/ and /Tarefa/<id>; both forms are kept. */
        if (r >= 0)
                r = server_route(s, "/tasks", false, collection, ELEMENTSOF(collection), t);
        if (r >= 0)
                r = server_route(s, "/tasks", true, item, ELEMENTSOF(item), t);
        if (r >= 0)
                r = server_route(s, "/Tarefa", false, collection, ELEMENTSOF(collection), t);
        if (r >= 0)
                r = server_route(s, "/Tarefa", true, item, ELEMENTSOF(item), t);
        if (r < 0) {
                free(t);
                return r;
        }
        *ret = t;
        return 0;
}

struct tasks *tasks_free(struct tasks *t)
{
        free(t);
        return NULL;
}

/* Tasks, each owned by the user who created it: GET/POST /tasks, GET/PUT/PATCH/DELETE /tasks/{id}, and
 * the same under /Tarefa and /Tarefa/{id} (with or without a trailing slash), the paths the original
 * clients spoke. Another user's task answers 404, exactly like a missing one. */
#pragma once

struct server;
struct db;
struct tasks;

/* Registers the statements with <db> and the routes with <s>. Returns 0, -ENOMEM, or the error of
 * db_statement() / server_route(). */
int tasks_new(struct server *s, struct db *db, struct tasks **ret);
struct tasks *tasks_free(struct tasks *t);

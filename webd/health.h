/* GET /healthcheck: whether this instance can serve, which is whether its database answers. lbd's health
 * probes call it every second or so, so it is cheap: one prepared SELECT 1 with a 1 s deadline, and an
 * immediate 503 while the connection pool is down. */
#pragma once

struct server;
struct db;
struct health;

/* Registers the statement with <db> and the routes /healthcheck and /healthcheck/ with <s>. Returns 0,
 * -ENOMEM, or the error of db_statement() / server_route(). */
int health_new(struct server *s, struct db *db, struct health **ret);
struct health *health_free(struct health *h);

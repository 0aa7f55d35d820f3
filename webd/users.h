/* Accounts: POST /auth/register, POST /auth/login, POST /auth/revoke (log out everywhere) and
 * PUT /auth/password. Passwords are hashed and checked with Argon2id on the password pool's threads; a
 * successful login returns a signed bearer token (jwt.h) carrying the user's token generation, which
 * revoking and a password change bump. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server;
struct db;
struct password_pool;
struct config;
struct users;

/* Registers the statements with <db> and the routes with <s>. <config> must outlive the module (token
 * lifetime); <key> is copied. Returns 0, -EINVAL, -ENOMEM, or the error of db_statement() /
 * server_route(). */
int users_new(struct server *s, struct db *db, struct password_pool *passwords, const struct config *config,
              const uint8_t *key, size_t key_len, struct users **ret);
struct users *users_free(struct users *u);

/* True when <name> is a valid username: 3..32 characters of [A-Za-z0-9_.-]. Exposed for tests. */
bool users_name_valid(const char *name);

/* Registration, login, and the two ways to revoke a user's tokens.
 *
 * Usernames are unique without regard to case: "ALICE" can't register when "alice" exists, and logs in
 * as "alice" (the stored spelling goes into the token). Register: validate, hash the password off the
 * loop, then one INSERT ... WHERE NOT EXISTS (a name taken in any case: no row, 409); the unique index on
 * lower(username) catches two clients racing through it (23505 -> 409).
 *
 * Login: every failure is the same 401 "invalid username or password", and costs the same: a name that
 * can't exist or isn't found is still checked against the password pool's dummy hash, so the answer's
 * timing doesn't tell whether the account exists. Only the types of the fields (strings) are validated
 * with 400: their values are the secret being tested. Before any of that the throttle (throttle.h) is
 * asked: an account or client address with too many recent failures gets 429 with Retry-After, before a
 * hash is spent; every checked password that fails counts, a success clears its account and address.
 * The name a login tried goes to the activity log (sanitised by the server); the password never does.
 *
 * Revocation: tokens are stateless, so one token can't be revoked alone; every user has a token generation
 * (users.token_generation), each token carries the one it was issued under ("gen"), and every
 * authenticated statement checks that they still match (SERVER_AUTH_SQL in server.h). POST /auth/revoke
 * (log out everywhere) and PUT /auth/password bump the generation, which revokes every token of the user
 * at once; the password change answers with a new token, so the client that made it stays logged in.
 *
 * Passwords are wiped from the request body as soon as the pool has its own copy. Nothing here logs a
 * password, a hash or a token. */
#include "webd/users.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/parse.h"
#include "webd/config.h"
#include "webd/db.h"
#include "webd/json.h"
#include "webd/jwt.h"
#include "webd/password.h"
#include "webd/secret.h"
#include "webd/server.h"
#include "webd/throttle.h"

#define USERS_NAME_MIN     3
#define USERS_NAME_MAX     32
#define USERS_PASSWORD_MIN 8
#define USERS_PASSWORD_MAX 128

struct users {
        struct db *db;
        struct password_pool *passwords;
        const struct config *config;
        struct throttle *throttle;
        uint8_t key[SECRET_MAX];
        size_t key_len;
        unsigned insert, by_name, revoke, password_get, password_set;
};

/* A login in progress: the account found (id 0: none) while its password is being checked, and what the
 * throttle counts it under. */
struct users_login {
        struct server_request *request;
        int64_t id;
        int64_t gen;                   /* the account's token generation */
        char name[USERS_NAME_MAX + 1]; /* as stored */
        char account[THROTTLE_ACCOUNT_MAX];
        struct netaddr address;
};

/* A password change in progress: the stored hash the old password is checked against, and which the
 * update must still find (another change in between makes it fail instead of being overwritten). */
struct users_change {
        struct server_request *request;
        char old_hash[PASSWORD_ENCODED_MAX + 1];
        char account[THROTTLE_ACCOUNT_MAX]; /* what the throttle counts a wrong old password under */
        struct netaddr address;
};

bool users_name_valid(const char *name)
{
        size_t n = strlen(name);

        if (n < USERS_NAME_MIN || n > USERS_NAME_MAX)
                return false;
        return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static const char *users_string(const struct server_request *r, const char *name)
{
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->body, name);

        return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* Overwrites the password member <name> of the request body: the pool has its own copy. */
static void users_wipe_password(struct server_request *r, const char *name)
{
        cJSON *item = cJSON_GetObjectItemCaseSensitive(r->body, name);

        if (cJSON_IsString(item) && item->valuestring)
                explicit_bzero(item->valuestring, strlen(item->valuestring));
}

/* Overwrites every password member a route of this file takes, for a request answered before they are used. */
static void users_wipe_passwords(struct server_request *r)
{
        users_wipe_password(r, "password");
        users_wipe_password(r, "old_password");
        users_wipe_password(r, "new_password");
}

/* Checks the body of <r> against <fields>. Returns true when it passes; else answers (400 with the problems,
 * or 500) with every password in the body wiped first, and returns false. */
static bool users_body_ok(struct server_request *r, const struct json_field *fields, size_t n)
{
        _cleanup_(json_problems_clear) struct json_problems problems = {0};
        int k;

        k = json_check_object(r->body, fields, n, &problems);
        if (k >= 0 && problems.count == 0)
                return true;
        users_wipe_passwords(r);
        if (k < 0)
                server_reply_error(r, 500, "internal", "internal error");
        else
                server_reply_invalid(r, &problems);
        return false;
}

static void users_reply_pool_error(struct server_request *r, int error)
{
        if (error == -EBUSY || error == -ECANCELED)
                server_reply_error(r, 503, "unavailable", "the server is busy; try again");
        else {
                log_error_errno(error, "Request %s: password hashing failed: %m", r->request_id);
                server_reply_error(r, 500, "internal", "internal error");
        }
}

static void users_inserted(struct server_request *r, int error, const PGresult *res)
{
        char created[JSON_TIME_MAX];
        uint64_t id;
        cJSON *body;

        /* No row: the name is taken in another case; -EEXIST: the unique index caught a race. */
        if (error == -EEXIST || (error == 0 && PQntuples(res) == 0)) {
                server_reply_error(r, 409, "conflict", "this username is taken");
                return;
        }
        if (error < 0) {
                server_reply_db_error(r, error, res);
                return;
        }
        if (PQntuples(res) != 1 || sscanf(PQgetvalue(res, 0, 0), "%" SCNu64, &id) != 1 ||
            json_timestamp(PQgetvalue(res, 0, 2), created, sizeof(created)) < 0) {
                server_reply_db_error(r, -EIO, NULL);
                return;
        }
        body = cJSON_CreateObject();
        if (!body || !cJSON_AddNumberToObject(body, "id", (double)id) ||
            !cJSON_AddStringToObject(body, "username", PQgetvalue(res, 0, 1)) ||
            !cJSON_AddStringToObject(body, "created_at", created)) {
                cJSON_Delete(body);
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        r->user_id = (int64_t)id;
        server_copy_text(r->user_name, sizeof(r->user_name), PQgetvalue(res, 0, 1));
        server_reply(r, 201, body);
}

static void users_hashed(int error, const char *encoded, void *userdata)
{
        struct server_request *r = userdata;
        struct users *u = r->userdata;
        const char *values[2];
        int k;

        if (r->answered)
                goto done;
        if (error < 0) {
                users_reply_pool_error(r, error);
                goto done;
        }
        values[0] = users_string(r, "username");
        values[1] = encoded;
        k = server_query(r, u->insert, values, 2, users_inserted);
        if (k < 0)
                server_reply_db_error(r, k, NULL);
done:
        server_request_unref(r);
}

static void users_register(struct server_request *r, void *userdata)
{
        static const struct json_field fields[] = {
                { "username", JSON_STRING, true, USERS_NAME_MIN, USERS_NAME_MAX, true },
                { "password", JSON_STRING, true, USERS_PASSWORD_MIN, USERS_PASSWORD_MAX, true },
        };
        struct users *u = userdata;
        _cleanup_(json_problems_clear) struct json_problems problems = {0};
        const char *name, *password;
        int k;

        k = json_check_object(r->body, fields, ELEMENTSOF(fields), &problems);
        if (k < 0) {
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        name = users_string(r, "username");
        if (name && !users_name_valid(name) &&
            json_add_problem(&problems, "username", "may only hold letters, digits, '_', '.' and '-'") < 0) {
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        if (problems.count > 0) {
                server_reply_invalid(r, &problems);
                return;
        }

        password = users_string(r, "password");
        server_request_ref(r);
        k = password_hash_async(u->passwords, password, strlen(password), users_hashed, r);
        users_wipe_password(r, "password");
        if (k < 0) {
                server_request_unref(r);
                users_reply_pool_error(r, k);
        }
}

static void users_reply_denied(struct server_request *r)
{
        server_reply_error(r, 401, "unauthorized", "invalid username or password");
}

static void users_reply_token(struct server_request *r, struct users *u, const struct users_login *l)
{
        int64_t now = (int64_t)(realtime_usec() / USEC_PER_SEC);
        int64_t ttl = (int64_t)(u->config->token_ttl_usec / USEC_PER_SEC), exp = now + ttl;
        char token[JWT_MAX + 1], sub[24], expires[JSON_TIME_MAX];
        cJSON *body;
        int k;

        (void)snprintf(sub, sizeof(sub), "%" PRId64, l->id);
        k = jwt_sign(u->key, u->key_len, sub, l->name, now, exp, l->gen, token, sizeof(token));
        if (k < 0 || json_format_time(exp, expires, sizeof(expires)) < 0) {
                log_error_errno(k < 0 ? k : -ERANGE, "Request %s: signing a token failed: %m", r->request_id);
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        body = cJSON_CreateObject();
        if (!body || !cJSON_AddStringToObject(body, "token", token) ||
            !cJSON_AddStringToObject(body, "token_type", "Bearer") ||
            !cJSON_AddStringToObject(body, "expires_at", expires) ||
            !cJSON_AddNumberToObject(body, "expires_in", (double)ttl)) {
                cJSON_Delete(body);
                server_reply_error(r, 500, "internal", "internal error");
        } else {
                r->user_id = l->id;
                server_request_set_user_name(r, l->name); /* as stored, not as typed */
                server_reply(r, 200, body);
        }
        explicit_bzero(token, sizeof(token));
}

static void users_verified(int error, void *userdata)
{
        struct users_login *l = userdata;
        struct server_request *r = l->request;
        struct users *u = r->userdata;

        /* Counted even when the request was answered meanwhile (deadline): the hash was spent. */
        if (error == 0 && l->id > 0)
                throttle_succeeded(u->throttle, l->account, &l->address, now_usec());
        else if (error == 0 || error == -EPERM || error == -EINVAL)
                throttle_failed(u->throttle, l->account, &l->address, now_usec());
        if (!r->answered) {
                if (error == 0 && l->id > 0)
                        users_reply_token(r, u, l);
                else if (error == -EPERM || error == 0)
                        users_reply_denied(r);
                else if (error == -EINVAL) {
                        /* A stored hash we can't read: the account is unusable, tell the operator. */
                        log_error("Request %s: user %" PRId64 " has an invalid password hash", r->request_id,
                                  l->id);
                        users_reply_denied(r);
                } else
                        users_reply_pool_error(r, error);
        }
        server_request_unref(r);
        free(l);
}

/* A new login of <r>, counted under the lowercased name tried and the client's address; NULL when out
 * of memory (answered). */
/* Writes the throttle's account key for <name> (lowercased, cut) to <account>, THROTTLE_ACCOUNT_MAX bytes. */
static void users_account_key(const char *name, char *account)
{
        size_t i;

        for (i = 0; name[i] && i < THROTTLE_ACCOUNT_MAX - 1; i++)
                account[i] = name[i] >= 'A' && name[i] <= 'Z' ? (char)(name[i] - 'A' + 'a') : name[i];
        account[i] = '\0';
}

/* A new login of <r> by the name <name>, counted under it and the client's address; NULL when out of
 * memory (answered). */
static struct users_login *users_login_new(struct server_request *r, const char *name)
{
        struct users_login *l = calloc(1, sizeof(*l));

        if (!l) {
                server_reply_error(r, 500, "internal", "internal error");
                return NULL;
        }
        users_account_key(name, l->account);
        l->address = r->client_addr;
        return l;
}

/* Checks the password member <field> of the body of <r> against <encoded> (NULL: the dummy hash) on the
 * pool, which calls <cb> with <userdata>; holds a reference to <r> for it, and wipes the member. Returns 0,
 * or the pool's error (the reference dropped: nothing will be called back). */
static int users_verify(struct server_request *r, const char *field, const char *encoded, password_verify_cb cb,
                        void *userdata)
{
        struct users *u = r->userdata;
        const char *password = users_string(r, field);
        int k;

        server_request_ref(r);
        k = password_verify_async(u->passwords, password, MIN(strlen(password), (size_t)PASSWORD_MAX), encoded,
                                  cb, userdata);
        users_wipe_password(r, field);
        if (k < 0)
                server_request_unref(r);
        return k;
}

/* Checks the login's password against <encoded> (NULL: the dummy hash); answers the request on error. */
static void users_check_password(struct server_request *r, struct users_login *l, const char *encoded)
{
        int k;

        l->request = r;
        k = users_verify(r, "password", encoded, users_verified, l);
        if (k < 0) {
                free(l);
                users_reply_pool_error(r, k);
        }
}

/* Reads a token generation as the database gave it: 0..2^53 (what a token can carry). */
static int users_parse_gen(const char *text, uint64_t *ret)
{
        return parse_uint(text, 0, UINT64_C(1) << 53, ret);
}

static void users_found(struct server_request *r, int error, const PGresult *res)
{
        struct users_login *l;
        uint64_t id, gen;

        if (error < 0) {
                server_reply_db_error(r, error, res);
                return;
        }
        l = users_login_new(r, users_string(r, "username"));
        if (!l)
                return;
        if (PQntuples(res) == 1 && PQnfields(res) == 4 && sscanf(PQgetvalue(res, 0, 0), "%" SCNu64, &id) == 1 &&
            id > 0 && id <= INT64_MAX && users_name_valid(PQgetvalue(res, 0, 2)) &&
            users_parse_gen(PQgetvalue(res, 0, 3), &gen) >= 0) {
                l->id = (int64_t)id;
                l->gen = (int64_t)gen;
                (void)snprintf(l->name, sizeof(l->name), "%s", PQgetvalue(res, 0, 2));
                users_check_password(r, l, PQgetvalue(res, 0, 1));
        } else
                users_check_password(r, l, NULL);
}

/* Answers 429 when the throttle holds attempts of <r> back. Returns true when it did. */
static bool users_throttled(struct server_request *r, struct users *u, const char *name)
{
        _cleanup_free_ struct users_login *l = users_login_new(r, name);
        char seconds[SERVER_INT_MAX], message[96];
        uint64_t wait;

        if (!l)
                return true;
        wait = throttle_check(u->throttle, l->account, &l->address, now_usec());
        if (wait == 0)
                return false;
        users_wipe_passwords(r); /* before the answer, which may free the request */
        server_int_text((int64_t)((wait + USEC_PER_SEC - 1) / USEC_PER_SEC), seconds);
        (void)server_add_header(r, "Retry-After", seconds);
        (void)snprintf(message, sizeof(message), "too many failed logins; try again in %s seconds", seconds);
        server_reply_error(r, 429, "too_many_attempts", message);
        return true;
}

static void users_login(struct server_request *r, void *userdata)
{
        static const struct json_field fields[] = {
                { "username", JSON_STRING, true, 0, SIZE_MAX, true },
                { "password", JSON_STRING, true, 0, SIZE_MAX, true },
        };
        struct users *u = userdata;
        const char *name, *password;
        struct users_login *l;
        size_t len;
        int k;

        if (!users_body_ok(r, fields, ELEMENTSOF(fields)))
                return;
        name = users_string(r, "username");
        password = users_string(r, "password");
        server_request_set_user_name(r, name);
        if (users_throttled(r, u, name))
                return;
        len = strlen(password);
        if (users_name_valid(name) && len >= USERS_PASSWORD_MIN && len <= USERS_PASSWORD_MAX) {
                const char *values[1] = {name};

                k = server_query(r, u->by_name, values, 1, users_found);
                if (k < 0)
                        server_reply_db_error(r, k, NULL);
                return;
        }
        /* No such account can exist: spend the same time anyway. */
        l = users_login_new(r, users_string(r, "username"));
        if (l)
                users_check_password(r, l, NULL);
}

static void users_revoked(struct server_request *r, int error, const PGresult *res)
{
        if (error < 0)
                server_reply_db_error(r, error, res);
        else
                server_reply(r, 204, NULL);
}

/* POST /auth/revoke: log out everywhere. Every token of the user, this one included, stops working. */
static void users_revoke(struct server_request *r, void *userdata)
{
        struct users *u = userdata;
        int k;

        k = server_query_auth(r, u->revoke, NULL, 0, users_revoked);
        if (k < 0)
                server_reply_db_error(r, k, NULL);
}

static void users_change_free(struct users_change *c)
{
        explicit_bzero(c->old_hash, sizeof(c->old_hash));
        free(c);
}

static void users_password_set(struct server_request *r, int error, const PGresult *res)
{
        struct users_login l = {.request = r};
        uint64_t id, gen;

        if (error < 0) {
                server_reply_db_error(r, error, res);
                return;
        }
        if (PQgetisnull(res, 0, 1)) {
                server_reply_error(r, 409, "conflict", "the password was changed meanwhile; try again");
                return;
        }
        if (parse_uint(PQgetvalue(res, 0, 1), 1, INT64_MAX, &id) < 0 ||
            users_parse_gen(PQgetvalue(res, 0, 2), &gen) < 0) {
                server_reply_db_error(r, -EIO, NULL);
                return;
        }
        l.id = (int64_t)id;
        l.gen = (int64_t)gen;
        server_copy_text(l.name, sizeof(l.name), PQgetvalue(res, 0, 3));
        users_reply_token(r, r->userdata, &l);
}

static void users_change_hashed(int error, const char *encoded, void *userdata)
{
        struct users_change *c = userdata;
        struct server_request *r = c->request;
        struct users *u = r->userdata;
        const char *values[2] = {encoded, c->old_hash};
        int k;

        if (!r->answered) {
                if (error < 0)
                        users_reply_pool_error(r, error);
                else {
                        k = server_query_auth(r, u->password_set, values, 2, users_password_set);
                        if (k < 0)
                                server_reply_db_error(r, k, NULL);
                }
        }
        server_request_unref(r);
        users_change_free(c);
}

static void users_change_verified(int error, void *userdata)
{
        struct users_change *c = userdata;
        struct server_request *r = c->request;
        struct users *u = r->userdata;
        const char *password;
        int k;

        if (r->answered)
                goto done;
        if (error == -EPERM) {
                throttle_failed(u->throttle, c->account, &c->address, now_usec());
                server_reply_error(r, 403, "forbidden", "the old password is wrong");
                goto done;
        }
        if (error < 0) {
                users_reply_pool_error(r, error);
                goto done;
        }
        password = users_string(r, "new_password");
        k = password_hash_async(u->passwords, password, strlen(password), users_change_hashed, c);
        users_wipe_password(r, "new_password");
        if (k < 0) {
                users_reply_pool_error(r, k);
                goto done;
        }
        return; /* c and the reference go on to users_change_hashed() */
done:
        server_request_unref(r);
        users_change_free(c);
}

static void users_password_found(struct server_request *r, int error, const PGresult *res)
{
        size_t len = strlen(users_string(r, "old_password"));
        struct users_change *c;
        const char *hash;
        int k;

        if (error < 0) {
                server_reply_db_error(r, error, res);
                return;
        }
        hash = PQgetvalue(res, 0, 1);
        c = calloc(1, sizeof(*c));
        if (!c || strlen(hash) >= sizeof(c->old_hash)) {
                free(c);
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        memcpy(c->old_hash, hash, strlen(hash) + 1);
        c->request = r;
        users_account_key(r->user_name, c->account);
        c->address = r->client_addr;
        /* A wrong length can't be the password: checked against the dummy hash, for the same cost. */
        k = users_verify(r, "old_password",
                         len >= USERS_PASSWORD_MIN && len <= USERS_PASSWORD_MAX ? c->old_hash : NULL,
                         users_change_verified, c);
        if (k < 0) {
                users_change_free(c);
                users_reply_pool_error(r, k);
        }
}

/* PUT /auth/password {"old_password","new_password"}: checks the old password, stores the new one's hash
 * and bumps the token generation in one statement, and answers with a new token (as login does). */
static void users_change_password(struct server_request *r, void *userdata)
{
        static const struct json_field fields[] = {
                { "old_password", JSON_STRING, true, 0, SIZE_MAX, true },
                { "new_password", JSON_STRING, true, USERS_PASSWORD_MIN, USERS_PASSWORD_MAX, true },
        };
        struct users *u = userdata;
        int k;

        if (!users_body_ok(r, fields, ELEMENTSOF(fields)))
                return;
        /* A wrong old password counts as a failed login of the account: guessing it through this route
         * costs the same hash and is held back the same way. */
        if (users_throttled(r, u, r->user_name))
                return;
        k = server_query_auth(r, u->password_get, NULL, 0, users_password_found);
        if (k < 0)
                server_reply_db_error(r, k, NULL);
}

int users_new(struct server *s, struct db *db, struct password_pool *passwords, const struct config *config,
              const uint8_t *key, size_t key_len, struct users **ret)
{
        static const struct server_method register_methods[] = {
                { HTTP_POST, users_register, false, true },
        };
        static const struct server_method login_methods[] = {
                { HTTP_POST, users_login, false, true },
        };
        static const struct server_method revoke_methods[] = {
                { HTTP_POST, users_revoke, true, false },
        };
        static const struct server_method password_methods[] = {
                { HTTP_PUT, users_change_password, true, true },
        };
        static const struct {
                const char *sql;
                int n_params;
                size_t offset;
        } statements[] = {
                /* Both rely on the unique index on lower(username): for the race, and to find a name fast. */
                { "INSERT INTO users (username, password_hash) SELECT $1::text, $2::text "
                  "WHERE NOT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower($1::text)) "
                  "RETURNING id, username, created_at",
                  2, offsetof(struct users, insert) },
                { "SELECT id, password_hash, username, token_generation FROM users "
                  "WHERE lower(username) = lower($1::text) ORDER BY id LIMIT 1",
                  1, offsetof(struct users, by_name) },
                { SERVER_AUTH_SQL("UPDATE users SET token_generation = token_generation + 1 "
                                  "WHERE id = $1 AND EXISTS (SELECT 1 FROM auth) RETURNING id",
                                  ""),
                  2, offsetof(struct users, revoke) },
                { SERVER_AUTH_SQL("SELECT password_hash FROM users "
                                  "WHERE id = $1 AND EXISTS (SELECT 1 FROM auth)",
                                  ""),
                  2, offsetof(struct users, password_get) },
                /* Only if the hash is still the one the old password was checked against. */
                { SERVER_AUTH_SQL("UPDATE users SET password_hash = $3, token_generation = token_generation + 1 "
                                  "WHERE id = $1 AND EXISTS (SELECT 1 FROM auth) AND password_hash = $4 "
                                  "RETURNING id, token_generation, username",
                                  ""),
                  4, offsetof(struct users, password_set) },
        };
        struct users *u;
        int r = 0;

        if (!key || key_len == 0 || key_len > SECRET_MAX)
                return -EINVAL;
        u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        u->db = db;
        u->passwords = passwords;
        u->config = config;
        memcpy(u->key, key, key_len);
        u->key_len = key_len;

        r = throttle_new(&(struct throttle_limits){
                                 .pair = config->login_failures,
                                 .address = config->login_address_failures,
                                 .account = config->login_account_failures,
                                 .max_delay_usec = config->login_max_delay_usec,
                                 .entries = (size_t)config->login_throttle_entries,
                         },
                         &u->throttle);
        for (size_t i = 0; i < ELEMENTSOF(statements) && r >= 0; i++)
                r = db_statement(db, statements[i].sql, statements[i].n_params,
                                 (unsigned *)(void *)((char *)u + statements[i].offset));
        if (r >= 0)
                r = server_route(s, "/auth/register", false, register_methods,
                                 ELEMENTSOF(register_methods), u);
        if (r >= 0)
                r = server_route(s, "/auth/login", false, login_methods, ELEMENTSOF(login_methods), u);
        if (r >= 0)
                r = server_route(s, "/auth/revoke", false, revoke_methods, ELEMENTSOF(revoke_methods), u);
        if (r >= 0)
                r = server_route(s, "/auth/password", false, password_methods,
                                 ELEMENTSOF(password_methods), u);
        if (r < 0) {
                users_free(u);
                return r;
        }
        *ret = u;
        return 0;
}

struct users *users_free(struct users *u)
{
        if (!u)
                return NULL;
        explicit_bzero(u->key, sizeof(u->key));
        throttle_free(u->throttle);
        free(u);
        return NULL;
}

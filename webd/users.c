/* Registration and login.
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
        unsigned insert, by_name;
};

/* A login in progress: the account found (id 0: none) while its password is being checked, and what the
 * throttle counts it under. */
struct users_login {
        struct server_request *request;
        int64_t id;
        char name[USERS_NAME_MAX + 1]; /* as stored */
        char account[THROTTLE_ACCOUNT_MAX];
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

/* Overwrites the password in the request body: the pool has its own copy. */
static void users_wipe_password(struct server_request *r)
{
        cJSON *item = cJSON_GetObjectItemCaseSensitive(r->body, "password");

        if (cJSON_IsString(item) && item->valuestring)
                explicit_bzero(item->valuestring, strlen(item->valuestring));
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
        users_wipe_password(r);
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
        k = jwt_sign(u->key, u->key_len, sub, l->name, now, exp, token, sizeof(token));
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
static struct users_login *users_login_new(struct server_request *r)
{
        const char *name = users_string(r, "username");
        struct users_login *l = calloc(1, sizeof(*l));

        if (!l) {
                server_reply_error(r, 500, "internal", "internal error");
                return NULL;
        }
        for (size_t i = 0; name[i] && i < sizeof(l->account) - 1; i++)
                l->account[i] = name[i] >= 'A' && name[i] <= 'Z' ? (char)(name[i] - 'A' + 'a') : name[i];
        l->address = r->client_addr;
        return l;
}

/* Checks <len> bytes of the password against <encoded> (NULL: the dummy hash) for <l>, which it takes;
 * answers the request on error. */
static void users_check_password(struct server_request *r, struct users_login *l, const char *encoded,
                                 size_t len)
{
        struct users *u = r->userdata;
        const char *password = users_string(r, "password");
        int k;

        server_request_ref(r);
        l->request = r;
        k = password_verify_async(u->passwords, password, len, encoded, users_verified, l);
        users_wipe_password(r);
        if (k < 0) {
                server_request_unref(r);
                free(l);
                users_reply_pool_error(r, k);
        }
}

static void users_found(struct server_request *r, int error, const PGresult *res)
{
        const char *password = users_string(r, "password");
        struct users_login *l;
        uint64_t id;

        if (error < 0) {
                server_reply_db_error(r, error, res);
                return;
        }
        l = users_login_new(r);
        if (!l)
                return;
        if (PQntuples(res) == 1 && PQnfields(res) == 3 && sscanf(PQgetvalue(res, 0, 0), "%" SCNu64, &id) == 1 &&
            id > 0 && id <= INT64_MAX && users_name_valid(PQgetvalue(res, 0, 2))) {
                l->id = (int64_t)id;
                (void)snprintf(l->name, sizeof(l->name), "%s", PQgetvalue(res, 0, 2));
                users_check_password(r, l, PQgetvalue(res, 0, 1), strlen(password));
        } else
                users_check_password(r, l, NULL, strlen(password));
}

/* Answers 429 when the throttle holds attempts of <r> back. Returns true when it did. */
static bool users_throttled(struct server_request *r, struct users *u)
{
        _cleanup_free_ struct users_login *l = users_login_new(r);
        char seconds[SERVER_INT_MAX], message[96];
        uint64_t wait;

        if (!l)
                return true;
        wait = throttle_check(u->throttle, l->account, &l->address, now_usec());
        if (wait == 0)
                return false;
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
        _cleanup_(json_problems_clear) struct json_problems problems = {0};
        const char *name, *password;
        struct users_login *l;
        size_t len;
        int k;

        k = json_check_object(r->body, fields, ELEMENTSOF(fields), &problems);
        if (k < 0) {
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        if (problems.count > 0) {
                server_reply_invalid(r, &problems);
                return;
        }
        name = users_string(r, "username");
        password = users_string(r, "password");
        server_request_set_user_name(r, name);
        if (users_throttled(r, u))
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
        l = users_login_new(r);
        if (l)
                users_check_password(r, l, NULL, MIN(len, (size_t)PASSWORD_MAX));
}

int users_new(struct server *s, struct db *db, struct password_pool *passwords, const struct config *config,
              const uint8_t *key, size_t key_len, struct users **ret)
{
        static const struct server_method register_methods[] = {
                { EVHTTP_REQ_POST, users_register, false, true },
        };
        static const struct server_method login_methods[] = {
                { EVHTTP_REQ_POST, users_login, false, true },
        };
        struct users *u;
        int r;

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
        /* Both rely on the unique index on lower(username): for the race, and to find a name fast. */
        if (r >= 0)
                r = db_statement(db,
                                 "INSERT INTO users (username, password_hash) SELECT $1::text, $2::text "
                                 "WHERE NOT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower($1::text)) "
                                 "RETURNING id, username, created_at",
                                 2, &u->insert);
        if (r >= 0)
                r = db_statement(db,
                                 "SELECT id, password_hash, username FROM users "
                                 "WHERE lower(username) = lower($1::text) ORDER BY id LIMIT 1",
                                 1, &u->by_name);
        if (r >= 0)
                r = server_route(s, "/auth/register", false, register_methods,
                                 ELEMENTSOF(register_methods), u);
        if (r >= 0)
                r = server_route(s, "/auth/login", false, login_methods, ELEMENTSOF(login_methods), u);
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

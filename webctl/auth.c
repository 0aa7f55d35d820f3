/* The account commands. `register` and `login` read the password (prompt.c), send it once in a JSON body
 * and wipe every copy webctl made of it; `login` keeps the token it receives in the token file (token.c),
 * together with the server it is for and when it expires; `logout` removes that file, and with --all first
 * asks the server to revoke every token of the user (POST /auth/revoke), on every machine. */
#include "webctl/auth.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/macro.h"
#include "webctl/prompt.h"
#include "webctl/token.h"
#include "webctl/webctl.h"

#define AUTH_PASSWORD_MAX 1024 /* the server takes at most 128 bytes; longer input is refused here */

static int auth_option(int c, _unused_ const char *arg, void *userdata)
{
        bool *from_stdin = userdata;

        if (c == 'p')
                *from_stdin = true;
        return 0;
}

/* Parses "COMMAND USER [--password-stdin]" into *<ret_user> and *<ret_stdin>. Returns -1 to go on, or an
 * exit status. */
static int auth_parse(struct webctl *w, int argc, char **argv, const char **ret_user, bool *ret_stdin)
{
        static const struct option options[] = {
                { "password-stdin", no_argument, NULL, 'p' },
                WEBCTL_COMMON_OPTIONS,
                { NULL, 0, NULL, 0 },
        };
        bool from_stdin = false;
        int r;

        r = webctl_getopt(w, argc, argv, options, auth_option, &from_stdin);
        if (r >= 0)
                return r;
        if (argc - optind != 1)
                return webctl_usage_error("%s takes one argument: USER", argv[0]);
        *ret_user = argv[optind];
        *ret_stdin = from_stdin;
        return -1;
}

/* Reads the password into <buf> (twice, to confirm, when <confirm> and it is typed). Returns its length,
 * or -1 after printing why (with *<ret_status> set). */
static int auth_read_password(bool from_stdin, bool confirm, char *buf, size_t size, int *ret_status)
{
        char again[AUTH_PASSWORD_MAX + 1];
        int n, m;

        n = prompt_password(from_stdin, "Password: ", buf, size);
        if (n >= 0 && confirm && !from_stdin) {
                m = prompt_password(false, "Repeat password: ", again, sizeof(again));
                if (m < 0)
                        n = m;
                else if (m != n || memcmp(buf, again, (size_t)n) != 0) {
                        explicit_bzero(again, sizeof(again));
                        explicit_bzero(buf, size);
                        fprintf(stderr, "webctl: the passwords don't match\n");
                        *ret_status = WEBCTL_EXIT_USAGE;
                        return -1;
                }
                explicit_bzero(again, sizeof(again));
        }
        if (n >= 0)
                return n;

        explicit_bzero(buf, size);
        if (n == -ENOTTY)
                fprintf(stderr, "webctl: no terminal to ask for the password on; use --password-stdin\n");
        else if (n == -ENODATA)
                fprintf(stderr, "webctl: no password given\n");
        else if (n == -E2BIG)
                fprintf(stderr, "webctl: password too long\n");
        else
                fprintf(stderr, "webctl: can't read the password: %s\n", strerror(-n));
        *ret_status = WEBCTL_EXIT_USAGE;
        return -1;
}

/* {"username":..,"password":..} as text (cJSON_free it after wiping), or NULL. The tree's copy of the
 * password is wiped here. */
static char *auth_body(const char *user, const char *password)
{
        cJSON *j = cJSON_CreateObject(), *p = NULL;
        char *text = NULL;

        if (j && cJSON_AddStringToObject(j, "username", user) &&
            (p = cJSON_AddStringToObject(j, "password", password)))
                text = cJSON_PrintUnformatted(j);
        if (p)
                explicit_bzero(p->valuestring, strlen(p->valuestring));
        cJSON_Delete(j);
        return text;
}

/* Sends <user> and the password read as the command asks to <path>; on <expect> leaves the answer in
 * *<res>. Returns 0 or an exit status. */
static int auth_send(struct webctl *w, int argc, char **argv, const char *path, long expect, bool confirm,
                     const char **ret_user, struct api_response *res)
{
        char password[AUTH_PASSWORD_MAX + 1];
        const char *user = NULL;
        bool from_stdin = false;
        char *body;
        int r, status;

        r = auth_parse(w, argc, argv, &user, &from_stdin);
        if (r >= 0)
                return r;
        r = webctl_connect(w, false);
        if (r != 0)
                return r;
        if (auth_read_password(from_stdin, confirm, password, sizeof(password), &status) < 0)
                return status;

        body = auth_body(user, password);
        explicit_bzero(password, sizeof(password));
        if (!body) {
                fprintf(stderr, "webctl: out of memory\n");
                return WEBCTL_EXIT_API;
        }
        r = webctl_call(w, "POST", path, body, expect, res);
        explicit_bzero(body, strlen(body));
        cJSON_free(body);
        *ret_user = user;
        return r;
}

int auth_register(struct webctl *w, int argc, char **argv)
{
        struct api_response res;
        const char *user;
        char id[32];
        int r;

        r = auth_send(w, argc, argv, "/auth/register", 201, true, &user, &res);
        if (r != 0)
                return r;
        if (w->json)
                r = webctl_print_json(&res);
        else
                printf("Registered %s (user id %s). Log in with: webctl login %s\n",
                       webctl_string(res.json, "username"), webctl_integer(res.json, "id", id, sizeof(id)),
                       webctl_string(res.json, "username"));
        api_response_done(&res);
        return r;
}

int auth_login(struct webctl *w, int argc, char **argv)
{
        struct api_response res;
        struct token t = { 0 };
        const cJSON *token, *expires_in;
        const char *user;
        char when[64];
        size_t n;
        int r;

        r = auth_send(w, argc, argv, "/auth/login", 200, false, &user, &res);
        if (r != 0)
                return r;

        token = cJSON_GetObjectItemCaseSensitive(res.json, "token");
        expires_in = cJSON_GetObjectItemCaseSensitive(res.json, "expires_in");
        if (!cJSON_IsString(token) || strlen(token->valuestring) > TOKEN_MAX ||
            strlen(user) >= sizeof(t.username)) {
                fprintf(stderr, "webctl: the server's answer has no usable token\n");
                r = WEBCTL_EXIT_API;
                goto out;
        }
        n = strlen(w->url);
        memcpy(t.url, w->url, MIN(n + 1, sizeof(t.url)));
        t.url[sizeof(t.url) - 1] = '\0';
        memcpy(t.username, user, strlen(user) + 1);
        memcpy(t.token, token->valuestring, strlen(token->valuestring) + 1);
        if (cJSON_IsNumber(expires_in) && expires_in->valuedouble > 0 && expires_in->valuedouble < INT_MAX)
                t.expires = (int64_t)time(NULL) + (int64_t)expires_in->valuedouble;

        r = token_save(&t);
        token_wipe(&t);
        if (r < 0) {
                char path[4096];

                if (token_path(path, sizeof(path)) < 0)
                        (void)snprintf(path, sizeof(path), "the token file");
                fprintf(stderr, "webctl: can't save the login to %s: %s\n", path, strerror(-r));
                r = WEBCTL_EXIT_API;
                goto out;
        }

        if (w->json)
                r = webctl_print_json(&res);
        else {
                printf("Logged in to %s as %s until %s.\n", w->url, user,
                       webctl_time(webctl_string(res.json, "expires_at"), when, sizeof(when)));
                r = WEBCTL_EXIT_OK;
        }
out:
        if (cJSON_IsString(token))
                explicit_bzero(token->valuestring, strlen(token->valuestring));
        explicit_bzero(res.body, res.len);
        api_response_done(&res);
        return r;
}

static int auth_logout_option(int c, _unused_ const char *arg, void *userdata)
{
        bool *all = userdata;

        if (c == 'a')
                *all = true;
        return 0;
}

/* Revokes every token of the saved login's user. Returns 0, or an exit status (printed). */
static int auth_revoke(struct webctl *w)
{
        struct api_response res;
        int r;

        r = webctl_connect(w, true);
        if (r != 0)
                return r;
        r = webctl_call(w, "POST", "/auth/revoke", NULL, 204, &res);
        if (r == 0)
                api_response_done(&res);
        return r;
}

int auth_logout(struct webctl *w, int argc, char **argv)
{
        static const struct option options[] = {
                { "all", no_argument, NULL, 'a' },
                WEBCTL_COMMON_OPTIONS,
                { NULL, 0, NULL, 0 },
        };
        bool all = false;
        int r, status = WEBCTL_EXIT_OK;

        r = webctl_getopt(w, argc, argv, options, auth_logout_option, &all);
        if (r >= 0)
                return r;
        if (optind != argc)
                return webctl_usage_error("logout takes no arguments");
        if (all) {
                /* Unreachable: the login is kept, to try again. Refused (no login, or revoked already):
                 * reported, and the login is forgotten all the same, since it is worth nothing. */
                status = auth_revoke(w);
                if (status != 0 && status != WEBCTL_EXIT_AUTH)
                        return status;
                if (status == 0 && !w->json)
                        printf("Every login of this account, on every machine, is revoked.\n");
        }

        r = token_remove();
        if (r == -ENOENT) {
                if (!w->json && !all)
                        printf("Not logged in.\n");
                return status;
        }
        if (r < 0) {
                fprintf(stderr, "webctl: can't remove the saved login: %s\n", strerror(-r));
                return WEBCTL_EXIT_API;
        }
        if (!w->json)
                printf("Logged out.\n");
        return status;
}

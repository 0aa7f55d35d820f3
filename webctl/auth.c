/* The account commands. `register` and `login` read the password (prompt.c), send it in a JSON body and
 * wipe every copy webctl made of it; `login` keeps the token it receives in the token file (token.c),
 * under the server it is for, with when it expires; `register` first asks the server whether the name is
 * acceptable (before the password is typed), then registers and logs in with the same password; `logout`
 * removes the login for the server, and with --all first asks the server to revoke every token of the
 * user (POST /auth/revoke), on every machine. */
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

static int auth_option(_unused_ const struct webctl *w, int c, _unused_ const char *arg, void *userdata)
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
                return webctl_usage_error(w, "%s takes one argument: USER", argv[0]);
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
                        webctl_error("the passwords don't match");
                        *ret_status = WEBCTL_EXIT_USAGE;
                        return -1;
                }
                explicit_bzero(again, sizeof(again));
        }
        if (n >= 0)
                return n;

        explicit_bzero(buf, size);
        if (n == -ENOTTY)
                webctl_error("no terminal to ask for the password on; use --password-stdin");
        else if (n == -ENODATA)
                webctl_error("no password given");
        else if (n == -E2BIG)
                webctl_error("password too long");
        else
                webctl_error("can't read the password: %s", strerror(-n));
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

/* POSTs {"username": <user>, "password": <password>} (no password when NULL) to <path>; on <expect>
 * leaves the answer in *<res>. Returns 0 or an exit status. */
static int auth_post(struct webctl *w, const char *path, const char *user, const char *password, long expect,
                     struct api_response *res)
{
        char *body = password ? auth_body(user, password) : NULL;
        cJSON *j;
        int r;

        if (!password && (j = cJSON_CreateObject())) {
                if (cJSON_AddStringToObject(j, "username", user))
                        body = cJSON_PrintUnformatted(j);
                cJSON_Delete(j);
        }
        if (!body) {
                webctl_error("out of memory");
                return WEBCTL_EXIT_API;
        }
        r = webctl_call(w, "POST", path, body, expect, res);
        explicit_bzero(body, strlen(body));
        cJSON_free(body);
        return r;
}

/* Asks the server whether <user> is acceptable for a new account, before the password is typed: a
 * registration without a password is refused (400) with the problems of each field, and creates
 * nothing. A taken name is only known when the account is inserted. Returns 0 or an exit status. */
static int auth_check_username(struct webctl *w, const char *user)
{
        struct api_response res;
        const cJSON *fields;
        int r;

        r = auth_post(w, "/auth/register", user, NULL, 400, &res);
        if (r != 0)
                return r;
        fields = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(res.json, "error"), "fields");
        if (cJSON_GetObjectItemCaseSensitive(fields, "username")) {
                if (w->json)
                        (void)webctl_print_json(&res);
                /* The missing password is this check's own doing: only the name's problems are shown. */
                cJSON_DeleteItemFromObjectCaseSensitive((cJSON *)fields, "password");
                webctl_report_error(&res);
                r = WEBCTL_EXIT_API;
        }
        api_response_done(&res);
        return r;
}

/* Logs in as <user> with <password> and keeps the token; prints "<what> <user> ... until ..." unless
 * <quiet>. Returns 0 or an exit status. */
static int auth_login_with(struct webctl *w, const char *user, const char *password, const char *what,
                           bool quiet)
{
        struct api_response res;
        struct token t = { 0 };
        const cJSON *token, *expires_in;
        char when[64], safe[64];
        int r;

        r = auth_post(w, "/auth/login", user, password, 200, &res);
        if (r != 0)
                return r;

        token = cJSON_GetObjectItemCaseSensitive(res.json, "token");
        expires_in = cJSON_GetObjectItemCaseSensitive(res.json, "expires_in");
        if (!cJSON_IsString(token) || strlen(token->valuestring) > TOKEN_MAX ||
            strlen(user) >= sizeof(t.username)) {
                webctl_error("the server's answer has no usable token");
                r = WEBCTL_EXIT_API;
                goto out;
        }
        memcpy(t.url, w->url, sizeof(t.url));
        memcpy(t.username, user, strlen(user) + 1);
        memcpy(t.token, token->valuestring, strlen(token->valuestring) + 1);
        if (cJSON_IsNumber(expires_in) && expires_in->valuedouble > 0 && expires_in->valuedouble < INT_MAX)
                t.expires = (int64_t)time(NULL) + (int64_t)expires_in->valuedouble;

        r = token_save(&t);
        token_wipe(&t);
        if (r < 0) {
                r = r == -EPERM || r == -EBADMSG ? webctl_token_error(r) : WEBCTL_EXIT_API;
                if (r == WEBCTL_EXIT_API) {
                        char path[4096];

                        if (token_path(path, sizeof(path)) < 0)
                                (void)snprintf(path, sizeof(path), "the token file");
                        webctl_error("can't save the login to %s: %s", path, strerror(-r));
                }
                goto out;
        }

        if (w->json && !quiet)
                r = webctl_print_json(&res);
        else if (!quiet) {
                printf("%s %s until %s.\n", what, user,
                       webctl_safe(webctl_time(webctl_string(res.json, "expires_at"), when, sizeof(when)), safe,
                                   sizeof(safe)));
                r = WEBCTL_EXIT_OK;
        }
out:
        if (cJSON_IsString(token))
                explicit_bzero(token->valuestring, strlen(token->valuestring));
        explicit_bzero(res.body, res.len);
        api_response_done(&res);
        return r;
}

/* The start of register and login: the arguments, the URL, then (register) the name, and the password.
 * Returns -1 to go on with *<ret_user> and <password> filled, or an exit status. */
static int auth_start(struct webctl *w, int argc, char **argv, bool registering, const char **ret_user,
                      char *password, size_t size)
{
        bool from_stdin = false;
        int r, status;

        r = auth_parse(w, argc, argv, ret_user, &from_stdin);
        if (r >= 0)
                return r;
        r = webctl_connect(w, false);
        if (r != 0)
                return r;
        if (registering) {
                r = auth_check_username(w, *ret_user);
                if (r != 0)
                        return r;
        }
        if (auth_read_password(from_stdin, registering, password, size, &status) < 0)
                return status;
        return -1;
}

static int auth_register(struct webctl *w, int argc, char **argv)
{
        char password[AUTH_PASSWORD_MAX + 1], what[WEBCTL_URL_MAX + 64];
        struct api_response res;
        const char *user = NULL;
        char id[32], name[128];
        int r;

        r = auth_start(w, argc, argv, true, &user, password, sizeof(password));
        if (r >= 0)
                return r;
        r = auth_post(w, "/auth/register", user, password, 201, &res);
        if (r != 0) {
                explicit_bzero(password, sizeof(password));
                return r;
        }
        if (w->json)
                (void)webctl_print_json(&res);
        (void)snprintf(what, sizeof(what), "Registered %s (user id %s) and logged in to %s as",
                       webctl_safe(webctl_string(res.json, "username"), name, sizeof(name)),
                       webctl_integer(res.json, "id", id, sizeof(id)),
                       w->url);
        r = auth_login_with(w, user, password, what, w->json);
        explicit_bzero(password, sizeof(password));
        if (r != 0) {
                struct webctl_line l;

                webctl_line_start(w, &l);
                webctl_line_add(&l, "login");
                webctl_line_add(&l, user);
                fprintf(stderr, "The account %s was created; log in with: %s\n", user, l.text);
        }
        api_response_done(&res);
        return r;
}

static int auth_login(struct webctl *w, int argc, char **argv)
{
        char password[AUTH_PASSWORD_MAX + 1], what[WEBCTL_URL_MAX + 32];
        const char *user = NULL;
        int r;

        r = auth_start(w, argc, argv, false, &user, password, sizeof(password));
        if (r >= 0)
                return r;
        (void)snprintf(what, sizeof(what), "Logged in to %s as", w->url);
        r = auth_login_with(w, user, password, what, false);
        explicit_bzero(password, sizeof(password));
        return r;
}

static int auth_logout_option(_unused_ const struct webctl *w, int c, _unused_ const char *arg, void *userdata)
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

static int auth_logout(struct webctl *w, int argc, char **argv)
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
                return webctl_usage_error(w, "logout takes no arguments");
        if (all) {
                /* Unreachable: the login is kept, to try again. Refused (no login, or revoked already):
                 * reported, and the login is forgotten all the same, since it is worth nothing. */
                status = auth_revoke(w);
                if (status != 0 && status != WEBCTL_EXIT_AUTH)
                        return status;
                if (status == 0 && !w->json)
                        printf("Every login of this account, on every machine, is revoked.\n");
        }

        r = webctl_pick_url(w);
        if (r != 0)
                return r;
        r = token_remove(w->url);
        if (r == -ENOENT) {
                if (!w->json && !all)
                        printf("Not logged in to %s.\n", w->url);
                return status;
        }
        if (r < 0)
                return webctl_token_error(r);
        if (!w->json)
                printf("Logged out of %s.\n", w->url);
        return status;
}

static const char auth_password_help[] =
        "      --password-stdin  read the password as one line of standard input (else it is asked\n"
        "                        for on the terminal, without echo)\n";

const struct webctl_command auth_register_command = {
        .name = "register",
        .args = "USER [--password-stdin]",
        .summary = "Create an account and log in to it (the password is asked twice on a terminal)",
        .options = auth_password_help,
        .run = auth_register,
        .text_args = true,
};

const struct webctl_command auth_login_command = {
        .name = "login",
        .args = "USER [--password-stdin]",
        .summary = "Log in and keep the login for this server",
        .options = auth_password_help,
        .run = auth_login,
        .text_args = true,
};

const struct webctl_command auth_logout_command = {
        .name = "logout",
        .args = "[--all]",
        .summary = "Forget the saved login for this server",
        .options = "      --all             first log out everywhere: the server revokes every token of the\n"
                   "                        account, on every machine\n",
        .run = auth_logout,
};

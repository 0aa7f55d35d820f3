/* The parts of a webctl invocation that every command shares: the commands' dispatch and help, option
 * errors that name the argument at fault, the command lines webctl suggests (quoted, with the options
 * that make them work as printed), choosing and normalising the server URL, opening the client with the
 * saved login for that URL, turning every kind of failure into one clear message on stderr and the exit
 * status of the contract (1 API error, 2 usage, 3 not logged in, 4 unreachable), and small formatting
 * helpers.
 *
 * Error messages are the server's own ("error": {"message": ...}, plus one line per field problem);
 * responses that aren't the API's JSON (a proxy's error page, say) are reported by their status line, and
 * a 404 or 405 that doesn't come from webd (a URL with a wrong path, another server) by asking the same
 * base URL for /healthcheck: "URL: not a webd API". */
#include "webctl/webctl.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/macro.h"
#include "common/parse.h"
#include "webctl/table.h"
#include "webctl/term.h"
#include "webctl/token.h"
#include "webctl/url.h"

void webctl_error(const char *format, ...)
{
        bool color = term_color(stderr);
        va_list ap;

        fputs(color ? TERM_RED "webctl: " : "webctl: ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputs(color ? TERM_RESET "\n" : "\n", stderr);
}

/* "tasks list" or "login": the running command's name as typed after "webctl", or "" before one. */
static void webctl_command_name(const struct webctl *w, char *buf, size_t size)
{
        (void)snprintf(buf, size, "%s%s%s", w->group ? w->group->name : "", w->group && w->command ? " " : "",
                       w->command ? w->command->name : "");
}

int webctl_usage_error(const struct webctl *w, const char *format, ...)
{
        char name[64];
        va_list ap;
        char message[1024];

        va_start(ap, format);
        (void)vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        webctl_error("%s", message);
        webctl_command_name(w, name, sizeof(name));
        fprintf(stderr, "Try 'webctl %s%s--help'.\n", name, *name ? " " : "");
        return WEBCTL_EXIT_USAGE;
}

static const char webctl_common_help[] =
        "      --url URL     the server (default: $WEBCTL_URL, else " WEBCTL_DEFAULT_URL ")\n"
        "      --json        print the server's JSON instead of tables\n"
        "  -h, --help        show this help\n";

/* Prints one line of a command list: "  NAME ARGS   summary", the summary under it when NAME ARGS is long. */
static void webctl_help_line(const char *prefix, const struct webctl_command *c)
{
        int n = printf("  %s%s%s%s", prefix, c->name, c->args && *c->args ? " " : "", c->args ? c->args : "");

        if (!c->summary)
                printf("\n");
        else if (n >= 40)
                printf("\n%40s%s\n", "", c->summary);
        else
                printf("%*s%s\n", 40 - n, "", c->summary);
}

static void webctl_help_program(const struct webctl *w)
{
        printf("Usage: webctl [--url URL] [--json] COMMAND [ARGS]\n"
               "\n"
               "Command-line client of webd: an account, its tasks and its activity log.\n"
               "\n"
               "Commands:\n");
        for (size_t i = 0; i < w->n_top; i++) {
                const struct webctl_command *c = &w->top[i];
                char prefix[64];

                if (!c->group) {
                        webctl_help_line("", c);
                        continue;
                }
                (void)snprintf(prefix, sizeof(prefix), "%s ", c->name);
                for (size_t k = 0; k < c->n; k++)
                        webctl_help_line(prefix, &c->group[k]);
        }
        printf("\n"
               "Options (before or after the command):\n"
               "%s"
               "  -V, --version     show the version\n"
               "\n"
               "'webctl COMMAND --help' shows a command's options. The password is read from the terminal\n"
               "without echo, or with --password-stdin as one line of standard input; never from the command\n"
               "line. Logins are kept, one per server URL, in $XDG_CONFIG_HOME/webctl/token (default\n"
               "~/.config/webctl/token), which must be mode 0600. Colour only on a terminal, never with\n"
               "NO_COLOR set; tables fit $COLUMNS or the terminal's width.\n"
               "\n"
               "Exit status: 0 ok, 1 the server refused or failed (its message is on stderr), 2 bad\n"
               "usage, 3 not logged in or login expired, 4 the server could not be reached.\n",
               webctl_common_help);
}

void webctl_help(const struct webctl *w)
{
        const struct webctl_command *c = w->command;

        if (c) {
                char name[64];

                webctl_command_name(w, name, sizeof(name));
                printf("Usage: webctl [--url URL] [--json] %s%s%s\n\n%s.\n\nOptions:\n%s%s", name,
                       c->args && *c->args ? " " : "", c->args ? c->args : "", c->summary,
                       c->options ? c->options : "", webctl_common_help);
                return;
        }
        if (w->group) {
                char prefix[64];

                printf("Usage: webctl [--url URL] [--json] %s COMMAND [ARGS]\n\n%s.\n\nCommands:\n",
                       w->group->name, w->group->summary);
                (void)snprintf(prefix, sizeof(prefix), "%s ", w->group->name);
                for (size_t k = 0; k < w->group->n; k++)
                        webctl_help_line(prefix, &w->group->group[k]);
                printf("\n'webctl %s COMMAND --help' shows a command's options.\n", w->group->name);
                return;
        }
        webctl_help_program(w);
}

static bool webctl_is_help(const char *arg)
{
        return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0 || strcmp(arg, "help") == 0;
}

int webctl_dispatch(struct webctl *w, const struct webctl_command *commands, size_t n, int argc, char **argv)
{
        const struct webctl_command *c = NULL;

        for (size_t i = 0; i < n && !c; i++)
                if (strcmp(argv[0], commands[i].name) == 0 ||
                    (commands[i].alias && strcmp(argv[0], commands[i].alias) == 0))
                        c = &commands[i];
        if (!c)
                return w->group ? webctl_usage_error(w, "unknown %s command '%s'", w->group->name, argv[0])
                                : webctl_usage_error(w, "unknown command '%s'", argv[0]);
        if (!c->group) {
                w->command = c;
                return c->run(w, argc, argv);
        }

        w->group = c;
        if (argc < 2) {
                char names[256];
                size_t len = 0;

                names[0] = '\0';
                for (size_t k = 0; k < c->n; k++) {
                        int m = snprintf(names + len, sizeof(names) - len, "%s%s",
                                         k == 0 ? "" : k + 1 == c->n ? " or " : ", ", c->group[k].name);

                        if (m < 0 || (size_t)m >= sizeof(names) - len)
                                break;
                        len += (size_t)m;
                }
                return webctl_usage_error(w, "%s needs a command: %s", c->name, names);
        }
        if (webctl_is_help(argv[1])) {
                webctl_help(w);
                return WEBCTL_EXIT_OK;
        }
        return webctl_dispatch(w, c->group, c->n, argc - 1, argv + 1);
}

/* Shell-quotes <arg> into <l> when it holds anything but the characters that never need it. */
void webctl_line_add(struct webctl_line *l, const char *arg)
{
        static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-";
        bool quote = *arg == '\0' || strspn(arg, safe) != strlen(arg);
        size_t need = 1 + strlen(arg) + (quote ? 2 : 0);

        for (const char *p = arg; quote && *p; p++)
                if (*p == '\'')
                        need += 3; /* ' becomes '\'' */
        if (l->overflow || l->len + need >= sizeof(l->text)) {
                l->overflow = true;
                return;
        }
        l->text[l->len++] = ' ';
        if (quote)
                l->text[l->len++] = '\'';
        for (const char *p = arg; *p; p++) {
                if (*p == '\'' && quote) {
                        memcpy(l->text + l->len, "'\\''", 4);
                        l->len += 4;
                } else
                        l->text[l->len++] = *p;
        }
        if (quote)
                l->text[l->len++] = '\'';
        l->text[l->len] = '\0';
}

/* Starts <l> as "webctl" alone. */
static void webctl_line_init(struct webctl_line *l)
{
        memcpy(l->text, "webctl", sizeof("webctl"));
        l->len = strlen(l->text);
        l->overflow = false;
}

void webctl_line_start(const struct webctl *w, struct webctl_line *l)
{
        webctl_line_init(l);
        if (w->url_option) {
                webctl_line_add(l, "--url");
                webctl_line_add(l, *w->url ? w->url : w->url_option);
        }
}

/* Finds the long option <arg> ("--name" or "--name=value") in <options> as getopt_long() does: an exact
 * name, else a prefix of one name only. Returns it, or NULL with the number of names it is a prefix of
 * in *<ret_matches>. */
static const struct option *webctl_find_long(const struct option *options, const char *arg, int *ret_matches)
{
        const char *name = arg + 2;
        size_t n = strcspn(name, "=");
        const struct option *found = NULL;
        int matches = 0;

        for (const struct option *o = options; o->name; o++) {
                if (strncmp(o->name, name, n) != 0)
                        continue;
                if (o->name[n] == '\0') {
                        *ret_matches = 1;
                        return o;
                }
                matches++;
                found = o;
        }
        *ret_matches = matches;
        return matches == 1 ? found : NULL;
}

/* The element of <argv> that holds the short option <c> that getopt_long() refused: the first cluster of
 * short options that is not an option's value, since the only short options webctl has (-h, -V) end the
 * parsing. NULL if none is found. */
static const char *webctl_short_culprit(int argc, char **argv, const struct option *options, int c)
{
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                const struct option *o;
                int matches;

                if (strcmp(a, "--") == 0)
                        break;
                if (a[0] != '-' || a[1] == '\0')
                        continue;
                if (a[1] == '-') {
                        o = webctl_find_long(options, a, &matches);
                        if (o && o->has_arg == required_argument && !strchr(a, '='))
                                i++;
                        continue;
                }
                if (c > 0 && c < 256 && strchr(a + 1, c))
                        return a;
        }
        return NULL;
}

/* Prints how to pass the argument <culprit> that looks like an option: the command line as it was given,
 * with <culprit> moved after "--". */
static void webctl_suggest_dashdash(const struct webctl *w, const char *culprit)
{
        struct webctl_line l;
        bool dashdash = false;

        webctl_line_init(&l);
        for (int i = 1; i < w->argc; i++) {
                if (w->argv[i] == culprit)
                        continue;
                if (strcmp(w->argv[i], "--") == 0)
                        dashdash = true;
                webctl_line_add(&l, w->argv[i]);
        }
        if (!dashdash)
                webctl_line_add(&l, "--");
        webctl_line_add(&l, culprit);
        if (!l.overflow)
                fprintf(stderr, "An argument that starts with '-' goes after '--': %s\n", l.text);
}

void webctl_suggest_joined(const struct webctl *w, char *const *args, int n, const char *what)
{
        struct webctl_line l;
        char joined[WEBCTL_LINE_MAX];
        size_t len = 0;

        joined[0] = '\0';
        for (int k = 0; k < n; k++) {
                int m = snprintf(joined + len, sizeof(joined) - len, "%s%s", k > 0 ? " " : "", args[k]);

                if (m < 0 || (size_t)m >= sizeof(joined) - len)
                        return;
                len += (size_t)m;
        }
        webctl_line_init(&l);
        for (int i = 1; i < w->argc; i++) {
                bool one_of_them = false;

                for (int k = 0; k < n; k++)
                        one_of_them = one_of_them || w->argv[i] == args[k];
                if (!one_of_them)
                        webctl_line_add(&l, w->argv[i]);
        }
        webctl_line_add(&l, joined);
        if (!l.overflow)
                fprintf(stderr, "%s: %s\n", what, l.text);
}

/* Reports the option getopt_long() refused with '?' or ':' and returns WEBCTL_EXIT_USAGE. */
static int webctl_option_error(const struct webctl *w, int c, int argc, char **argv,
                               const struct option *options)
{
        const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
        const struct option *o;
        int matches;

        if (c == ':')
                return webctl_usage_error(w, "option '%s' needs a value", arg);
        if (optopt > 0 && optopt < 256 && !(strncmp(arg, "--", 2) == 0 && arg[2] != '\0')) {
                const char *culprit = webctl_short_culprit(argc, argv, options, optopt);
                int r;

                if (!culprit || strlen(culprit) == 2)
                        r = webctl_usage_error(w, "unknown option '-%c'", optopt);
                else
                        r = webctl_usage_error(w, "unknown option '-%c' in '%s'", optopt, culprit);
                if (culprit && w->command && w->command->text_args)
                        webctl_suggest_dashdash(w, culprit);
                return r;
        }
        o = webctl_find_long(options, arg, &matches);
        if (o && o->has_arg == no_argument && strchr(arg, '='))
                return webctl_usage_error(w, "option '--%s' takes no value (in '%s')", o->name, arg);
        if (matches > 1) {
                char names[256] = "";
                size_t len = 0, n = strcspn(arg + 2, "=");

                for (o = options; o->name; o++) {
                        int m;

                        if (strncmp(o->name, arg + 2, n) != 0)
                                continue;
                        m = snprintf(names + len, sizeof(names) - len, "%s--%s", len ? ", " : "", o->name);
                        if (m < 0 || (size_t)m >= sizeof(names) - len)
                                break;
                        len += (size_t)m;
                }
                return webctl_usage_error(w, "option '%s' is ambiguous: %s", arg, names);
        }
        return webctl_usage_error(w, "unknown option '%s'", arg);
}

int webctl_common_option(struct webctl *w, int c, int argc, char **argv, const struct option *options,
                         int *ret_status)
{
        switch (c) {
        case 'U':
                w->url_option = optarg;
                return 1;
        case 'J':
                w->json = true;
                return 1;
        case 'h':
                webctl_help(w);
                *ret_status = WEBCTL_EXIT_OK;
                return -1;
        case ':':
        case '?':
                *ret_status = webctl_option_error(w, c, argc, argv, options);
                return -1;
        default:
                return 0;
        }
}

int webctl_getopt(struct webctl *w, int argc, char **argv, const struct option *options,
                  webctl_option_cb own, void *userdata)
{
        int c, r, status;

        /* optind 0 restarts getopt_long() on this command's own argv, after main() read the options before
         * the command; opterr 0 and the leading ':' leave the messages to webctl_common_option(). */
        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                r = webctl_common_option(w, c, argc, argv, options, &status);
                if (r < 0)
                        return status;
                if (r > 0 || !own)
                        continue;
                r = own(w, c, optarg, userdata);
                if (r != 0)
                        return r;
        }
        return -1;
}

int webctl_pick_url(struct webctl *w)
{
        const char *url = w->url_option, *from = "--url", *why = NULL;
        int r;

        if (!url || !*url) {
                url = getenv("WEBCTL_URL");
                from = "WEBCTL_URL";
        }
        if (!url || !*url) {
                url = WEBCTL_DEFAULT_URL;
                from = "the default URL";
        }
        r = url_normalize(url, w->url, sizeof(w->url), &why);
        if (r == -ENAMETOOLONG)
                return webctl_usage_error(w, "%s is too long (over %zu bytes)", from, sizeof(w->url) - 1);
        if (r < 0)
                return webctl_usage_error(w, "%s '%s' %s", from, url, why);
        return 0;
}

/* The first line of a short text answer (an error page of a proxy: "no healthy backend"), made safe for a
 * terminal, into <buf>; "" when the answer is JSON, empty, or not text. */
static void webctl_body_line(const struct api_response *res, char *buf, size_t size)
{
        _cleanup_free_ char *first = NULL, *text = NULL;

        buf[0] = '\0';
        if (res->json || res->len == 0 || memchr(res->body, '\0', res->len))
                return;
        first = strndup(res->body, MIN(strcspn(res->body, "\r\n"), size - 1));
        text = first ? table_sanitize(first, false, NULL) : NULL;
        if (text)
                (void)snprintf(buf, size, "%s", text);
}

/* Whether <res> is webd's error shape: {"error": {"code": .., "message": ..}}. */
static bool webctl_is_webd_error(const struct api_response *res)
{
        const cJSON *error = cJSON_GetObjectItemCaseSensitive(res->json, "error");

        return cJSON_IsString(cJSON_GetObjectItemCaseSensitive(error, "code")) &&
               cJSON_IsString(cJSON_GetObjectItemCaseSensitive(error, "message"));
}

/* Whether <res> is what webd's /healthcheck answers: a JSON object with "status" and "database". */
static bool webctl_is_webd_health(const struct api_response *res)
{
        return (res->status == 200 || res->status == 503) && cJSON_IsObject(res->json) &&
               cJSON_IsString(cJSON_GetObjectItemCaseSensitive(res->json, "status")) &&
               cJSON_IsString(cJSON_GetObjectItemCaseSensitive(res->json, "database"));
}

/* Sends one request; on a transfer failure reports it, naming the URL. Returns 0 (*<res> filled) or an
 * exit status. */
static int webctl_send(struct webctl *w, const char *method, const char *path, const char *body,
                       struct api_response *res)
{
        int r = api_request(w->api, method, path, body, res);

        if (r == -EMSGSIZE || r == -ENOMEM) {
                webctl_error("%s: %s", w->url, api_error(w->api));
                return WEBCTL_EXIT_API;
        }
        if (r == -ETIMEDOUT) {
                webctl_error("no answer from %s in time: %s", w->url, api_error(w->api));
                return WEBCTL_EXIT_CONNECT;
        }
        if (r < 0) {
                webctl_error("cannot connect to %s: %s", w->url, api_error(w->api));
                return WEBCTL_EXIT_CONNECT;
        }
        return 0;
}

/* Asks the server for /healthcheck, to tell whether the URL is webd's API at all. Returns 0 when it is,
 * else reports what answered and returns an exit status. */
static int webctl_probe(struct webctl *w)
{
        struct api_response res;
        size_t root = url_root_len(w->url);
        char line[WEBCTL_BODY_LINE_MAX];
        int r;

        r = webctl_send(w, "GET", "/healthcheck", NULL, &res);
        if (r != 0)
                return r;
        if (webctl_is_webd_health(&res)) {
                api_response_done(&res);
                return 0;
        }
        webctl_body_line(&res, line, sizeof(line));
        if (res.status >= 500) {
                /* Something in front of webd (lbd with no backend) or webd's own failure. */
                webctl_error("%s is unavailable (%ld on %s/healthcheck%s%s)", w->url, res.status, w->url + root,
                             *line ? ": " : "", line);
                api_response_done(&res);
                return WEBCTL_EXIT_API;
        }
        webctl_error("%s: not a webd API (%ld on %s/healthcheck)", w->url, res.status, w->url + root);
        if (url_has_path(w->url))
                fprintf(stderr, "webd serves its API at the root of its address: --url %.*s\n", (int)root,
                        w->url);
        api_response_done(&res);
        return WEBCTL_EXIT_API;
}

int webctl_token_error(int r)
{
        char path[4096];
        mode_t mode = 0;
        uid_t uid = 0;
        struct webctl_line l = { .text = "chmod 600", .len = strlen("chmod 600") };

        if (token_path(path, sizeof(path)) < 0)
                (void)snprintf(path, sizeof(path), "the token file");
        if (r == -EPERM) {
                _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

                if (fd >= 0 && token_check(fd, &mode, &uid) < 0 && uid != geteuid()) {
                        webctl_error("%s belongs to user %u, not to you (%u): refusing the logins in it; "
                                     "remove it and log in again",
                                     path, (unsigned)uid, (unsigned)geteuid());
                        return WEBCTL_EXIT_AUTH;
                }
                webctl_line_add(&l, path);
                webctl_error("%s is open to other users (mode %04o): refusing the logins in it, which may have "
                             "leaked; make it yours alone with: %s",
                             path, (unsigned)mode, l.text);
                return WEBCTL_EXIT_AUTH;
        }
        if (r == -EBADMSG)
                webctl_error("can't use the saved logins in %s: bad format (or over %u logins); remove it and log "
                             "in again",
                             path, TOKEN_LOGINS_MAX);
        else
                webctl_error("can't use the saved logins in %s: %s", path, strerror(-r));
        return WEBCTL_EXIT_AUTH;
}

/* Prints the command that logs in to w->url as <user> (NULL: "USER"), after <what>. */
static void webctl_login_hint(const struct webctl *w, const char *what, const char *user)
{
        struct webctl_line l;

        webctl_line_start(w, &l);
        webctl_line_add(&l, "login");
        if (user)
                webctl_line_add(&l, user);
        fprintf(stderr, "%s: %s%s\n", what, l.text, user ? "" : " USER");
}

int webctl_connect(struct webctl *w, bool need_login)
{
        char others[512] = "";
        struct token t;
        int r;

        r = webctl_pick_url(w);
        if (r > 0)
                return r;
        r = api_new(w->url, &w->api);
        if (r < 0) {
                webctl_error("%s", strerror(-r));
                return WEBCTL_EXIT_API;
        }
        if (!need_login)
                return 0;

        r = token_load(w->url, &t, others, sizeof(others));
        if (r == -ENOENT) {
                /* A mistyped URL is said to be one before "not logged in". */
                r = webctl_probe(w);
                if (r != 0)
                        return r;
                if (*others)
                        webctl_error("not logged in to %s (saved logins: %s)", w->url, others);
                else
                        webctl_error("not logged in to %s", w->url);
                webctl_login_hint(w, "Log in with", NULL);
                return WEBCTL_EXIT_AUTH;
        }
        if (r < 0)
                return webctl_token_error(r);
        if (t.expires > 0 && t.expires <= (int64_t)time(NULL)) {
                webctl_error("the login of %s to %s has expired", t.username, w->url);
                webctl_login_hint(w, "Log in again with", t.username);
                token_wipe(&t);
                return WEBCTL_EXIT_AUTH;
        }
        r = api_set_token(w->api, t.token);
        memcpy(w->username, t.username, MIN(sizeof(w->username), sizeof(t.username)));
        w->username[sizeof(w->username) - 1] = '\0';
        token_wipe(&t);
        if (r < 0) {
                webctl_error("the saved login is unusable");
                webctl_login_hint(w, "Log in again with", w->username);
                return WEBCTL_EXIT_AUTH;
        }
        w->authenticated = true;
        return 0;
}

void webctl_done(struct webctl *w)
{
        w->api = api_free(w->api);
}

/* Prints the server's error message and field problems from an error response, made safe for a
 * terminal. */
void webctl_report_error(const struct api_response *res)
{
        const cJSON *error = cJSON_GetObjectItemCaseSensitive(res->json, "error");
        const cJSON *message = cJSON_GetObjectItemCaseSensitive(error, "message");
        const cJSON *fields = cJSON_GetObjectItemCaseSensitive(error, "fields"), *f;
        _cleanup_free_ char *text = NULL;

        if (!cJSON_IsString(message) || !(text = table_sanitize(message->valuestring, false, NULL))) {
                char line[WEBCTL_BODY_LINE_MAX];

                webctl_body_line(res, line, sizeof(line));
                webctl_error("the server answered with status %ld%s%s", res->status, *line ? ": " : "", line);
                return;
        }
        webctl_error("%s", text);
        cJSON_ArrayForEach(f, fields) {
                _cleanup_free_ char *name = NULL, *value = NULL;

                if (!f->string || !cJSON_IsString(f))
                        continue;
                name = table_sanitize(f->string, false, NULL);
                value = table_sanitize(f->valuestring, false, NULL);
                if (name && value)
                        fprintf(stderr, "  %s: %s\n", name, value);
        }
}

int webctl_print_json(const struct api_response *res)
{
        if (!res->json) {
                webctl_error("the server's answer is not JSON");
                return WEBCTL_EXIT_API;
        }
        fwrite(res->body, 1, res->len, stdout);
        if (res->len == 0 || res->body[res->len - 1] != '\n')
                fputc('\n', stdout);
        return WEBCTL_EXIT_OK;
}

int webctl_call(struct webctl *w, const char *method, const char *path, const char *body, long expect,
                struct api_response *ret)
{
        struct api_response res;
        int r;

        r = webctl_send(w, method, path, body, &res);
        if (r != 0)
                return r;

        if (res.status == expect) {
                /* The expected answer must be the API's JSON, unless it has no body (204). */
                if (res.len > 0 && !res.json) {
                        api_response_done(&res);
                        r = webctl_probe(w);
                        if (r == 0) {
                                webctl_error("the server's answer is not JSON");
                                r = WEBCTL_EXIT_API;
                        }
                        return r;
                }
                *ret = res;
                return 0;
        }

        /* A 404 or 405 (webd's own for a route it doesn't have, under a path), or an answer below 500 that
         * is not in webd's error shape (a redirect, another server's page), may say that the URL is not
         * webd's API at all. */
        if (res.status == 404 || res.status == 405 || (res.status < 500 && !webctl_is_webd_error(&res))) {
                r = webctl_probe(w);
                if (r != 0) {
                        api_response_done(&res);
                        return r;
                }
        }
        if (w->json && res.json)
                (void)webctl_print_json(&res);
        webctl_report_error(&res);
        r = WEBCTL_EXIT_API;
        if (res.status == 401 && w->authenticated) {
                webctl_login_hint(w, "Log in again with", w->username);
                r = WEBCTL_EXIT_AUTH;
        }
        api_response_done(&res);
        return r;
}

int webctl_show(struct webctl *w, const char *path, webctl_print_cb print, const void *userdata)
{
        struct api_response res;
        int r;

        r = webctl_connect(w, true);
        if (r != 0)
                return r;
        r = webctl_call(w, "GET", path, NULL, 200, &res);
        if (r != 0)
                return r;
        r = w->json ? webctl_print_json(&res) : print(w, res.json, userdata);
        api_response_done(&res);
        return r;
}

int webctl_parse_number(const struct webctl *w, const char *what, const char *s, uint64_t min, uint64_t max,
                        uint64_t *ret)
{
        if (parse_uint(s, min, max, ret) < 0)
                return webctl_usage_error(w, "%s must be a whole number from %" PRIu64 " to %" PRIu64
                                             ", not '%s'",
                                          what, min, max, s);
        return 0;
}

const char *webctl_safe(const char *s, char *buf, size_t size)
{
        _cleanup_free_ char *text = table_sanitize(s, false, NULL);

        (void)snprintf(buf, size, "%s", text ? text : "?");
        return buf;
}

const char *webctl_string(const cJSON *obj, const char *name)
{
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, name);

        return cJSON_IsString(m) ? m->valuestring : "";
}

const char *webctl_integer(const cJSON *obj, const char *name, char *buf, size_t size)
{
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, name);

        if (!cJSON_IsNumber(m) || !(m->valuedouble >= -9e15 && m->valuedouble <= 9e15))
                return "";
        (void)snprintf(buf, size, "%" PRId64, (int64_t)m->valuedouble);
        return buf;
}

/* Reads <n> digits at <s>. */
static int webctl_digits(const char *s, int n)
{
        int v = 0;

        for (int i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -1;
                v = v * 10 + (s[i] - '0');
        }
        return v;
}

const char *webctl_time(const char *s, char *buf, size_t size)
{
        struct tm tm = { 0 };
        const char *p;
        time_t t;
        long offset = 0;

        /* YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM) */
        if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
            s[13] != ':' || s[16] != ':')
                return s;
        tm.tm_year = webctl_digits(s, 4) - 1900;
        tm.tm_mon = webctl_digits(s + 5, 2) - 1;
        tm.tm_mday = webctl_digits(s + 8, 2);
        tm.tm_hour = webctl_digits(s + 11, 2);
        tm.tm_min = webctl_digits(s + 14, 2);
        tm.tm_sec = webctl_digits(s + 17, 2);
        if (tm.tm_year < 0 || tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_hour < 0 || tm.tm_min < 0 ||
            tm.tm_sec < 0)
                return s;
        p = s + 19;
        if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++)
                        ;
        if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
                offset = 0;
        else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':' && webctl_digits(p + 1, 2) >= 0 &&
                 webctl_digits(p + 4, 2) >= 0)
                offset = (*p == '-' ? -1 : 1) *
                         (webctl_digits(p + 1, 2) * 3600L + webctl_digits(p + 4, 2) * 60L);
        else
                return s;

        t = timegm(&tm);
        if (t == (time_t)-1)
                return s;
        t -= offset;
        if (!localtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
                return s;
        return buf;
}

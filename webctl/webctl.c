/* The parts of a webctl invocation that every command shares: choosing the server URL, opening the client
 * with the saved login, turning every kind of failure into one clear message on stderr and the exit status
 * of the contract (1 API error, 2 usage, 3 not logged in, 4 unreachable), and small formatting helpers.
 *
 * Error messages are the server's own ("error": {"message": ...}, plus one line per field problem);
 * responses that aren't the API's JSON (a proxy's error page, say) are reported by their status line. */
#include "webctl/webctl.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/macro.h"
#include "common/parse.h"
#include "webctl/token.h"

int webctl_usage_error(const char *format, ...)
{
        va_list ap;

        fputs("webctl: ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputs("\nTry 'webctl --help'.\n", stderr);
        return WEBCTL_EXIT_USAGE;
}

void webctl_help(void)
{
        printf("Usage: webctl [--url URL] [--json] COMMAND [ARGS]\n"
               "\n"
               "Command-line client of webd: an account, its tasks and its activity log.\n"
               "\n"
               "Commands:\n"
               "  register USER [--password-stdin]      create an account\n"
               "  login USER [--password-stdin]         log in and keep the token\n"
               "  logout [--all]                        forget the saved login; --all: log out everywhere\n"
               "  tasks list [--done|--todo] [--limit N] [--offset N]\n"
               "                                        list your tasks, newest first\n"
               "  tasks add TITLE [--description D] [--done]\n"
               "  tasks show ID\n"
               "  tasks edit ID [--title T] [--description D] [--done|--todo]\n"
               "  tasks done ID                         mark a task done\n"
               "  tasks rm ID                           delete a task\n"
               "  activity [--limit N] [--offset N]     your recent requests\n"
               "\n"
               "Options (before or after the command):\n"
               "      --url URL     the server (default: $WEBCTL_URL, else " WEBCTL_DEFAULT_URL ")\n"
               "      --json        print the server's JSON instead of tables\n"
               "  -h, --help        show this help\n"
               "  -V, --version     show the version\n"
               "\n"
               "The password is read from the terminal without echo, or with --password-stdin as one\n"
               "line of standard input; never from the command line. The login is kept, for one server,\n"
               "in $XDG_CONFIG_HOME/webctl/token (default ~/.config/webctl/token), mode 0600.\n"
               "\n"
               "Exit status: 0 ok, 1 the server refused or failed (its message is on stderr), 2 bad\n"
               "usage, 3 not logged in or login expired, 4 the server could not be reached.\n");
}

int webctl_common_option(struct webctl *w, int c, char **argv, int *ret_status)
{
        switch (c) {
        case 'U':
                w->url_option = optarg;
                return 1;
        case 'J':
                w->json = true;
                return 1;
        case 'h':
                webctl_help();
                *ret_status = WEBCTL_EXIT_OK;
                return -1;
        case ':':
                *ret_status = webctl_usage_error("option '%s' needs a value", argv[optind - 1]);
                return -1;
        case '?':
                *ret_status = webctl_usage_error("unknown option '%s'", argv[optind - 1]);
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
                r = webctl_common_option(w, c, argv, &status);
                if (r < 0)
                        return status;
                if (r > 0 || !own)
                        continue;
                r = own(c, optarg, userdata);
                if (r != 0)
                        return r;
        }
        return -1;
}

/* Copies the URL to use into w->url: --url, else $WEBCTL_URL, else the default; trailing '/' removed. */
static int webctl_pick_url(struct webctl *w)
{
        const char *url = w->url_option;
        size_t n;

        if (!url || !*url)
                url = getenv("WEBCTL_URL");
        if (!url || !*url)
                url = WEBCTL_DEFAULT_URL;
        if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
                return webctl_usage_error("'%s' is not an http:// or https:// URL", url);
        n = strlen(url);
        if (n >= sizeof(w->url))
                return webctl_usage_error("URL too long");
        if (strpbrk(url, " \t\r\n?#"))
                return webctl_usage_error("'%s' is not a server URL (no spaces, query or fragment)", url);
        while (n > 0 && url[n - 1] == '/')
                n--;
        memcpy(w->url, url, n);
        w->url[n] = '\0';
        return 0;
}

int webctl_connect(struct webctl *w, bool need_login)
{
        struct token t;
        int r;

        r = webctl_pick_url(w);
        if (r > 0)
                return r;
        r = api_new(w->url, &w->api);
        if (r < 0) {
                fprintf(stderr, "webctl: %s\n", strerror(-r));
                return WEBCTL_EXIT_API;
        }
        if (!need_login)
                return 0;

        r = token_load(&t);
        if (r == -ENOENT) {
                fprintf(stderr, "webctl: not logged in; run 'webctl login USER' first\n");
                return WEBCTL_EXIT_AUTH;
        }
        if (r < 0) {
                fprintf(stderr, "webctl: can't read the saved login: %s; run 'webctl login USER' again\n",
                        r == -EBADMSG ? "bad format" : strerror(-r));
                return WEBCTL_EXIT_AUTH;
        }
        if (strcmp(t.url, w->url) != 0) {
                fprintf(stderr,
                        "webctl: not logged in to %s (the saved login is for %s); run 'webctl login USER'\n",
                        w->url, t.url);
                token_wipe(&t);
                return WEBCTL_EXIT_AUTH;
        }
        if (t.expires > 0 && t.expires <= (int64_t)time(NULL)) {
                fprintf(stderr, "webctl: the login of %s has expired; run 'webctl login %s' again\n",
                        t.username, t.username);
                token_wipe(&t);
                return WEBCTL_EXIT_AUTH;
        }
        r = api_set_token(w->api, t.token);
        token_wipe(&t);
        if (r < 0) {
                fprintf(stderr, "webctl: the saved login is unusable; run 'webctl login USER' again\n");
                return WEBCTL_EXIT_AUTH;
        }
        w->authenticated = true;
        return 0;
}

void webctl_done(struct webctl *w)
{
        w->api = api_free(w->api);
}

/* Prints the server's error message and field problems from an error response. */
static void webctl_report_error(const struct api_response *res)
{
        const cJSON *error = cJSON_GetObjectItemCaseSensitive(res->json, "error");
        const cJSON *message = cJSON_GetObjectItemCaseSensitive(error, "message");
        const cJSON *fields = cJSON_GetObjectItemCaseSensitive(error, "fields"), *f;

        if (!cJSON_IsString(message)) {
                fprintf(stderr, "webctl: the server answered with status %ld\n", res->status);
                return;
        }
        fprintf(stderr, "webctl: %s\n", message->valuestring);
        cJSON_ArrayForEach(f, fields) {
                if (f->string && cJSON_IsString(f))
                        fprintf(stderr, "  %s: %s\n", f->string, f->valuestring);
        }
}

int webctl_print_json(const struct api_response *res)
{
        if (!res->json) {
                fprintf(stderr, "webctl: the server's answer is not JSON\n");
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

        r = api_request(w->api, method, path, body, &res);
        if (r == -EMSGSIZE || r == -ENOMEM) {
                fprintf(stderr, "webctl: %s: %s\n", w->url, api_error(w->api));
                return WEBCTL_EXIT_API;
        }
        if (r == -ETIMEDOUT) {
                fprintf(stderr, "webctl: no answer from %s in time: %s\n", w->url, api_error(w->api));
                return WEBCTL_EXIT_CONNECT;
        }
        if (r < 0) {
                fprintf(stderr, "webctl: cannot connect to %s: %s\n", w->url, api_error(w->api));
                return WEBCTL_EXIT_CONNECT;
        }

        if (res.status == expect) {
                /* The expected answer must be the API's JSON, unless it has no body (204). */
                if (res.len > 0 && !res.json) {
                        fprintf(stderr, "webctl: the server's answer is not JSON\n");
                        api_response_done(&res);
                        return WEBCTL_EXIT_API;
                }
                *ret = res;
                return 0;
        }

        if (w->json && res.json)
                (void)webctl_print_json(&res);
        webctl_report_error(&res);
        r = WEBCTL_EXIT_API;
        if (res.status == 401 && w->authenticated) {
                fprintf(stderr, "webctl: log in again with 'webctl login USER'\n");
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
        r = w->json ? webctl_print_json(&res) : print(res.json, userdata);
        api_response_done(&res);
        return r;
}

int webctl_parse_number(const char *what, const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
        if (parse_uint(s, min, max, ret) < 0)
                return webctl_usage_error("%s must be a whole number from %" PRIu64 " to %" PRIu64
                                          ", not '%s'",
                                          what, min, max, s);
        return 0;
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
        if (!localtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                return s;
        return buf;
}

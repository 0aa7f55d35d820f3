/* What every webctl command shares: the invocation's options, the connection to the server with the saved
 * login, error reporting with the exit statuses, and the small output helpers.
 *
 * Commands are `int <module>_main(struct webctl *w, int argc, char **argv)` (argv[0] is the command's
 * name) and return an exit status, not -errno: they are the outermost layer, where a failure becomes a
 * message on stderr and a number for the shell. */
#pragma once

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "webctl/api.h"

enum {
        WEBCTL_EXIT_OK = 0,
        WEBCTL_EXIT_API = 1,     /* the server answered with an error (4xx, 5xx), or nonsense */
        WEBCTL_EXIT_USAGE = 2,   /* bad command line or input */
        WEBCTL_EXIT_AUTH = 3,    /* not logged in, or the login was refused or expired */
        WEBCTL_EXIT_CONNECT = 4, /* the server could not be reached or didn't answer in time */
};

#define WEBCTL_DEFAULT_URL "http://127.0.0.1:8000" /* what scripts/demo.sh serves */
#define WEBCTL_URL_MAX     1024
#define WEBCTL_LINE_MAX    2048 /* a command line webctl suggests */
#define WEBCTL_BODY_LINE_MAX 160 /* what is shown of a text error page */

struct webctl;

/* One command: its name, its help, and what runs it. */
struct webctl_command {
        const char *name;
        const char *args;    /* its arguments and options, for the usage line */
        const char *summary; /* one line */
        const char *options; /* lines of help for its own options, or NULL */
        int (*run)(struct webctl *w, int argc, char **argv);
        bool text_args; /* takes free text (a title, a user name), which may start with '-' */
        const char *alias; /* another name for it, or NULL */
        const struct webctl_command *group; /* a group of commands ("tasks"), with <n> of them; run is NULL */
        size_t n;
};

struct webctl {
        /* from the command line */
        const char *url_option; /* --url, or NULL */
        bool json;              /* --json: print the server's JSON as is */
        int argc;               /* the whole command line as given, for the commands webctl suggests */
        char **argv;
        const struct webctl_command *group; /* "tasks" while a tasks command runs, else NULL */
        const struct webctl_command *command; /* the command running, NULL before one is chosen */
        const struct webctl_command *top; /* the program's commands, for its help */
        size_t n_top;
        /* set by webctl_connect() */
        char url[WEBCTL_URL_MAX]; /* --url, else $WEBCTL_URL, else the default; normalised (url.h) */
        struct api *api;
        bool authenticated; /* requests carry the saved token */
        char username[128]; /* whom the saved token is for */
};

/* A command line webctl prints for the user to run: shell-quoted, bounded, cut off as a whole ("" ) if
 * it doesn't fit. */
struct webctl_line {
        char text[WEBCTL_LINE_MAX];
        size_t len;
        bool overflow;
};

/* The options every command takes besides its own, for getopt_long() tables. */
#define WEBCTL_COMMON_OPTIONS                                                                               \
        { "url", required_argument, NULL, 'U' }, { "json", no_argument, NULL, 'J' },                       \
                { "help", no_argument, NULL, 'h' }

/* Handles the options every command takes, and getopt_long()'s '?' and ':' (with opterr = 0 and an
 * optstring starting with ':') for the command line <argc>, <argv> read with <options>. Returns 1 if <c>
 * was one of them, 0 if it is the command's own, or -1 when the command must stop: *<ret_status> is then
 * its exit status (0 after --help, 2 after a bad option, named as it was given). */
int webctl_common_option(struct webctl *w, int c, int argc, char **argv, const struct option *options,
                         int *ret_status);

/* Takes a command's own option <c> with its argument <arg> (NULL if it has none). Returns 0, or the exit
 * status the command must stop with. */
typedef int (*webctl_option_cb)(const struct webctl *w, int c, const char *arg, void *userdata);

/* Reads the options of a command (argv[0] is its name) with <options>, which end with
 * WEBCTL_COMMON_OPTIONS: the common ones through webctl_common_option(), the others through <own> with
 * <userdata> (NULL: they are ignored). The arguments are left in argv[optind...] for the command to check.
 * Returns -1 to go on, or the exit status the command must stop with. */
int webctl_getopt(struct webctl *w, int argc, char **argv, const struct option *options,
                  webctl_option_cb own, void *userdata);

/* Prints to stdout the help of the command running, of the group ("tasks") when none is chosen yet, or of
 * the whole program. */
void webctl_help(const struct webctl *w);

/* Runs the command named argv[0] among <commands>, or for a group the command of the group named in
 * argv[1]. Returns an exit status. */
int webctl_dispatch(struct webctl *w, const struct webctl_command *commands, size_t n, int argc, char **argv);

/* Prints "webctl: <message>" to stderr (in red on a terminal that takes colour). */
void webctl_error(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Prints "webctl: <message>" and where to find the command's help to stderr; returns WEBCTL_EXIT_USAGE. */
int webctl_usage_error(const struct webctl *w, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* Starts <l> as "webctl", with "--url URL" when the URL came from --url (else the same URL is picked
 * again). */
void webctl_line_start(const struct webctl *w, struct webctl_line *l);
/* Appends " <arg>", quoted for the shell when it needs to be. */
void webctl_line_add(struct webctl_line *l, const char *arg);

/* Prints "<what>: <command>", the command line as given with the <n> arguments <args> (elements of the
 * command's argv) joined into one, quoted, at its end. */
void webctl_suggest_joined(const struct webctl *w, char *const *args, int n, const char *what);

/* Picks the URL (--url, else $WEBCTL_URL, else the default) and normalises it into w->url. Returns 0 or an
 * exit status (2, with the reason printed). */
int webctl_pick_url(struct webctl *w);

/* Picks the URL and opens the connection; with <need_login>, loads the saved login for that URL. Without
 * one, the server is asked first (GET /healthcheck) so that a wrong URL is reported as such, then "not
 * logged in" with the command that logs in (exit status 3), as for an expired one. Returns 0 or an exit
 * status. */
int webctl_connect(struct webctl *w, bool need_login);

/* Prints why the token file can't be used (<r> from token.h) and returns the exit status. */
int webctl_token_error(int r);

void webctl_done(struct webctl *w);

/* Sends one request (body: JSON text or NULL). When the server answers with <expect> the response is
 * left in *<res> (free with api_response_done()) and 0 is returned; otherwise the problem is reported on
 * stderr (the server's message and field errors, or why it couldn't be reached, or that the URL is not
 * webd's API when a 404 or 405 comes from something else), the server's JSON goes to stdout under --json,
 * and the exit status is returned: 3 for a 401 on an authenticated request, 4 when unreachable, else 1. */
int webctl_call(struct webctl *w, const char *method, const char *path, const char *body, long expect,
                struct api_response *res);

/* Prints an answer for people from its JSON (<answer>, NULL if the body wasn't JSON). Returns an exit
 * status. */
typedef int (*webctl_print_cb)(const struct webctl *w, const cJSON *answer, const void *userdata);

/* Connects with the saved login and sends GET <path>, expecting 200; prints the answer: the server's JSON
 * under --json, else through <print> with <userdata>. Returns an exit status. */
int webctl_show(struct webctl *w, const char *path, webctl_print_cb print, const void *userdata);

/* Prints the server's error message and field problems from the error response <res> to stderr. */
void webctl_report_error(const struct api_response *res);

/* Under --json prints the response body (which must be JSON) to stdout. Returns an exit status. */
int webctl_print_json(const struct api_response *res);

/* Parses the decimal value <s> of <what> (an option or argument name) in [min, max]. Returns 0, or prints
 * why and returns WEBCTL_EXIT_USAGE. */
int webctl_parse_number(const struct webctl *w, const char *what, const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/* <s> (text from the server) made safe to print on a terminal (see table_sanitize()), in <buf>, cut to
 * fit. */
const char *webctl_safe(const char *s, char *buf, size_t size);
/* The string member <name> of <obj>, or "" */
const char *webctl_string(const cJSON *obj, const char *name);
/* The integer member <name> of <obj> written as decimal into <buf>, or "" */
const char *webctl_integer(const cJSON *obj, const char *name, char *buf, size_t size);
/* An RFC 3339 time from the server, in local time with its zone as "YYYY-MM-DD HH:MM:SS ZONE" (e.g.
 * "2026-12-07 14:03:05 UTC", or a numeric offset when the zone has no name) in <buf>; the string itself if
 * it can't be read. */
const char *webctl_time(const char *rfc3339, char *buf, size_t size);

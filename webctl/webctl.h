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

#define WEBCTL_DEFAULT_URL "http://127.0.0.1:8080"
#define WEBCTL_URL_MAX     1024

struct webctl {
        /* from the command line */
        const char *url_option; /* --url, or NULL */
        bool json;              /* --json: print the server's JSON as is */
        /* set by webctl_connect() */
        char url[WEBCTL_URL_MAX]; /* --url, else $WEBCTL_URL, else the default; no trailing '/' */
        struct api *api;
        bool authenticated; /* requests carry the saved token */
};

/* The options every command takes besides its own, for getopt_long() tables. */
#define WEBCTL_COMMON_OPTIONS                                                                               \
        { "url", required_argument, NULL, 'U' }, { "json", no_argument, NULL, 'J' },                       \
                { "help", no_argument, NULL, 'h' }

/* Handles the options every command takes, and getopt_long()'s '?' and ':' (with opterr = 0 and an
 * optstring starting with ':'). Returns 1 if <c> was one of them, 0 if it is the command's own, or -1 when
 * the command must stop: *<ret_status> is then its exit status (0 after --help, 2 after a bad option). */
int webctl_common_option(struct webctl *w, int c, char **argv, int *ret_status);

/* Takes a command's own option <c> with its argument <arg> (NULL if it has none). Returns 0, or the exit
 * status the command must stop with. */
typedef int (*webctl_option_cb)(int c, const char *arg, void *userdata);

/* Reads the options of a command (argv[0] is its name) with <options>, which end with
 * WEBCTL_COMMON_OPTIONS: the common ones through webctl_common_option(), the others through <own> with
 * <userdata> (NULL: they are ignored). The arguments are left in argv[optind...] for the command to check.
 * Returns -1 to go on, or the exit status the command must stop with. */
int webctl_getopt(struct webctl *w, int argc, char **argv, const struct option *options,
                  webctl_option_cb own, void *userdata);

/* Prints the help of the whole program to stdout. */
void webctl_help(void);

/* Prints "webctl: <message>" and a hint to stderr; returns WEBCTL_EXIT_USAGE. */
int webctl_usage_error(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Picks the URL and opens the connection; with <need_login>, loads the saved login for that URL (exit
 * status 3 with a message when there is none or it has expired). Returns 0 or an exit status. */
int webctl_connect(struct webctl *w, bool need_login);

void webctl_done(struct webctl *w);

/* Sends one request (body: JSON text or NULL). When the server answers with <expect> the response is
 * left in *<res> (free with api_response_done()) and 0 is returned; otherwise the problem is reported on
 * stderr (the server's message and field errors, or why it couldn't be reached), the server's JSON goes
 * to stdout under --json, and the exit status is returned: 3 for a 401 on an authenticated request, 4
 * when unreachable, else 1. */
int webctl_call(struct webctl *w, const char *method, const char *path, const char *body, long expect,
                struct api_response *res);

/* Prints an answer for people from its JSON (<answer>, NULL if the body wasn't JSON). Returns an exit
 * status. */
typedef int (*webctl_print_cb)(const cJSON *answer, const void *userdata);

/* Connects with the saved login and sends GET <path>, expecting 200; prints the answer: the server's JSON
 * under --json, else through <print> with <userdata>. Returns an exit status. */
int webctl_show(struct webctl *w, const char *path, webctl_print_cb print, const void *userdata);

/* Under --json prints the response body (which must be JSON) to stdout. Returns an exit status. */
int webctl_print_json(const struct api_response *res);

/* Parses the decimal value <s> of <what> (an option or argument name) in [min, max]. Returns 0, or prints
 * why and returns WEBCTL_EXIT_USAGE. */
int webctl_parse_number(const char *what, const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/* The string member <name> of <obj>, or "" */
const char *webctl_string(const cJSON *obj, const char *name);
/* The integer member <name> of <obj> written as decimal into <buf>, or "" */
const char *webctl_integer(const cJSON *obj, const char *name, char *buf, size_t size);
/* An RFC 3339 time from the server, in local time as "YYYY-MM-DD HH:MM:SS" in <buf>; the string itself
 * if it can't be read. */
const char *webctl_time(const char *rfc3339, char *buf, size_t size);

/* webctl's entry point: the options before the command, a UTF-8 character type for measuring text,
 * libcurl's global setup, and the dispatch to the command modules (auth.c, tasks.c, activity.c).
 *
 * Exit codes: 0 done, 1 the server refused or failed, 2 bad usage, 3 not logged in or login expired,
 * 4 the server could not be reached (see webctl.h). */
#include <curl/curl.h>
#include <getopt.h>
#include <langinfo.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>

#include "common/macro.h"
#include "lbd-version.h"
#include "webctl/activity.h"
#include "webctl/auth.h"
#include "webctl/tasks.h"
#include "webctl/webctl.h"

static const struct {
        const char *name;
        int (*run)(struct webctl *w, int argc, char **argv);
} main_commands[] = {
        { "register", auth_register }, { "login", auth_login },       { "logout", auth_logout },
        { "tasks", tasks_main },       { "activity", activity_main },
};

/* Tables measure text with wcwidth(), which needs a UTF-8 character type; the server's text is UTF-8
 * whatever the user's locale says. Only LC_CTYPE: messages and numbers stay in the C locale. */
static void main_set_locale(void)
{
        if (setlocale(LC_CTYPE, "") && strcmp(nl_langinfo(CODESET), "UTF-8") == 0)
                return;
        (void)setlocale(LC_CTYPE, "C.UTF-8");
}

static int main_run(struct webctl *w, int argc, char **argv)
{
        static const struct option options[] = {
                { "version", no_argument, NULL, 'V' },
                WEBCTL_COMMON_OPTIONS,
                { NULL, 0, NULL, 0 },
        };
        int c, r, status;

        opterr = 0;
        while ((c = getopt_long(argc, argv, "+:hV", options, NULL)) >= 0) {
                if (c == 'V') {
                        printf("webctl %s\n", PACKAGE_VERSION);
                        return WEBCTL_EXIT_OK;
                }
                r = webctl_common_option(w, c, argv, &status);
                if (r < 0)
                        return status;
        }
        if (optind >= argc)
                return webctl_usage_error("no command given");
        if (strcmp(argv[optind], "help") == 0) {
                webctl_help();
                return WEBCTL_EXIT_OK;
        }
        for (size_t i = 0; i < ELEMENTSOF(main_commands); i++)
                if (strcmp(argv[optind], main_commands[i].name) == 0)
                        return main_commands[i].run(w, argc - optind, argv + optind);
        return webctl_usage_error("unknown command '%s'", argv[optind]);
}

int main(int argc, char **argv)
{
        struct webctl w = { 0 };
        int status;

        main_set_locale();
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                fprintf(stderr, "webctl: can't initialize libcurl\n");
                return WEBCTL_EXIT_API;
        }
        status = main_run(&w, argc, argv);
        webctl_done(&w);
        curl_global_cleanup();

        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "webctl: can't write the output\n");
                if (status == WEBCTL_EXIT_OK)
                        status = WEBCTL_EXIT_API;
        }
        return status;
}

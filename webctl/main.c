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
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "lbd-version.h"
#include "webctl/activity.h"
#include "webctl/auth.h"
#include "webctl/tasks.h"
#include "webctl/webctl.h"

static const struct webctl_command main_tasks = {
        .name = "tasks",
        .summary = "Your tasks",
        .group = tasks_commands,
};

/* main_commands[] is filled in main(): the commands of other modules are not constant expressions here. */
static struct webctl_command main_commands[5];

static void main_init_commands(void)
{
        main_commands[0] = auth_register_command;
        main_commands[1] = auth_login_command;
        main_commands[2] = auth_logout_command;
        main_commands[3] = main_tasks;
        main_commands[3].n = tasks_n_commands;
        main_commands[4] = activity_command;
}

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
                r = webctl_common_option(w, c, argc, argv, options, &status);
                if (r < 0)
                        return status;
        }
        if (optind >= argc)
                return webctl_usage_error(w, "no command given");
        if (strcmp(argv[optind], "help") == 0) {
                /* "webctl help [COMMAND...]" is "webctl [COMMAND...] --help". */
                if (optind + 1 >= argc) {
                        webctl_help(w);
                        return WEBCTL_EXIT_OK;
                }
                for (int i = optind; i + 1 < argc; i++)
                        argv[i] = argv[i + 1];
                argv[argc - 1] = (char *)"--help";
        }
        return webctl_dispatch(w, main_commands, ELEMENTSOF(main_commands), argc - optind, argv + optind);
}

int main(int argc, char **argv)
{
        _cleanup_free_ char **args = NULL;
        struct webctl w = { 0 };
        int status;

        main_init_commands();
        /* The command line as given, for the commands webctl suggests: getopt_long() reorders argv. */
        args = calloc((size_t)argc + 1, sizeof(*args));
        if (!args) {
                fprintf(stderr, "webctl: out of memory\n");
                return WEBCTL_EXIT_API;
        }
        memcpy(args, argv, (size_t)argc * sizeof(*args));
        w.argc = argc;
        w.argv = args;
        w.top = main_commands;
        w.n_top = ELEMENTSOF(main_commands);

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

/* What lbd and webd do alike around their own modules: the first pass over the command line (--config,
 * --check-config, --help, --version, usage errors), the event loop with systemd notification, the signals
 * (SIGHUP reloads, the first SIGTERM/SIGINT starts an orderly stop, a second one exits at once) and the
 * deadline that ends a stop which takes too long.
 *
 * Exit codes shared by both: 0 done, 1 runtime failure, DAEMON_EXIT_USAGE, DAEMON_EXIT_CONFIG. */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#define DAEMON_EXIT_USAGE  2
#define DAEMON_EXIT_CONFIG 78 /* EX_CONFIG */

/* The value of the --check-config long option; a daemon's own long options start at DAEMON_ARG_FIRST. */
#define DAEMON_ARG_CHECK_CONFIG 0x100
#define DAEMON_ARG_FIRST        0x101

struct event_base;
struct event;
struct notify;

struct daemon_cli {
        const char *name; /* the program, as --version and usage errors name it */
        const char *version;
        const char *short_options;
        const struct option *options; /* must map -c/--config, -h, -V and DAEMON_ARG_CHECK_CONFIG */
        void (*help)(void);
        /* May be NULL. Called in the first pass for every option besides the ones above, which is where
         * options that act before the configuration is read go (lbd's --log-level). Returns < 0, after
         * logging why, for a usage error. */
        int (*option)(int opt, const char *arg);
};

struct daemon_args {
        const char *config_path; /* NULL without --config */
        bool check;              /* --check-config */
};

/* The first pass over the command line; the options that set keys are left for a second pass (optind is
 * reset there). Returns 0 to go on (and fills <ret>), 1 when --help or --version was answered, or -EINVAL
 * on a usage error (told on stderr). Leaves opterr at 0, so the second pass stays quiet. */
int daemon_parse_command_line(const struct daemon_cli *cli, int argc, char **argv, struct daemon_args *ret);

struct daemon_ops {
        void (*reload)(void *userdata);   /* SIGHUP; also while stopping */
        void (*stop)(void *userdata);     /* the first SIGTERM or SIGINT */
        void (*deadline)(void *userdata); /* the stop deadline passed: say what is left; the loop exits */
};

/* The loop and its parts; main() owns it, zero-initialised, and frees it with daemon_done(). */
struct daemon {
        struct event_base *base;
        struct notify *notify;
        bool stopping; /* a stop signal arrived */
        const struct daemon_ops *ops;
        void *userdata;
        struct event *sig_hup, *sig_term, *sig_int, *deadline;
        struct event *log_flush; /* writes the lines logged during a turn of the loop (log_batch_start) */
};

/* Creates the event loop (event_config flags <flags>, EVENT_BASE_FLAG_*) and the systemd notification on
 * it. Returns 0, or a negative errno after logging it (main's caller only returns it). */
int daemon_start(struct daemon *d, int flags);
/* Routes SIGHUP, SIGTERM and SIGINT to <ops>, called with <userdata>. Returns 0 or -ENOMEM (logged). */
int daemon_catch_signals(struct daemon *d, const struct daemon_ops *ops, void *userdata);
/* Exits the loop <usec> from now unless it has exited by then, after ops->deadline. Best effort: without
 * memory for the timer, the stop simply has no deadline. */
void daemon_set_deadline(struct daemon *d, uint64_t usec);
/* Runs the loop until daemon_exit() or until nothing is left on it. Returns 0, or -EIO after logging that
 * the loop failed (libevent gives no reason), so that main() exits with a failure status. */
int daemon_run(struct daemon *d);
/* Ends daemon_run() after the current callbacks. */
void daemon_exit(struct daemon *d);
/* Frees what daemon_start() and the rest set up; call after the modules on the loop are freed. */
void daemon_done(struct daemon *d);

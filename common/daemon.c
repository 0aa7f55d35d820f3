/* The startup and signal handling lbd and webd share (see daemon.h). Everything here runs on the daemon's
 * one event loop: signals arrive as libevent signal events, so the ops callbacks run between other
 * callbacks and may touch any module. The first-pass option parsing runs before the loop exists. */
#include "common/daemon.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/notify.h"

int daemon_parse_command_line(const struct daemon_cli *cli, int argc, char **argv, struct daemon_args *ret)
{
        struct daemon_args args = {0};

        opterr = 1;
        for (;;) {
                int opt = getopt_long(argc, argv, cli->short_options, cli->options, NULL);

                if (opt < 0)
                        break;
                switch (opt) {
                case 'c':
                        args.config_path = optarg;
                        break;
                case 'h':
                        cli->help();
                        return 1;
                case 'V':
                        printf("%s %s\n", cli->name, cli->version);
                        return 1;
                case DAEMON_ARG_CHECK_CONFIG:
                        args.check = true;
                        break;
                case '?':
                        /* getopt_long has said what is wrong. */
                        fprintf(stderr, "Try '%s --help'.\n", cli->name);
                        return -EINVAL;
                default:
                        if (cli->option && cli->option(opt, optarg) < 0)
                                return -EINVAL;
                        break;
                }
        }
        if (optind < argc) {
                log_error("Unexpected argument '%s'; try '%s --help'", argv[optind], cli->name);
                return -EINVAL;
        }
        opterr = 0;
        *ret = args;
        return 0;
}

static void daemon_log_flush_cb(evutil_socket_t fd, short what, void *userdata)
{
        log_flush();
}

/* Runs the flush after the callbacks already active in this turn of the loop (an active event is queued
 * behind them), however many lines they log. */
static void daemon_log_kick(void *userdata)
{
        struct daemon *d = userdata;

        event_active(d->log_flush, EV_TIMEOUT, 1);
}

int daemon_start(struct daemon *d, int flags)
{
        struct event_config *ec;
        int r;

        ec = event_config_new();
        if (!ec)
                return log_error_errno(ENOMEM, "Out of memory");
        (void)event_config_set_flag(ec, flags);
        d->base = event_base_new_with_config(ec);
        event_config_free(ec);
        if (!d->base)
                return log_error_errno(ENOMEM, "Failed to create the event loop");

        r = notify_new(d->base, &d->notify);
        if (r < 0)
                return log_error_errno(r, "Failed to set up systemd notification: %m");

        /* Lines logged during one turn of the loop go out in one write at its end. Without the event,
         * every line is written at once, as before. */
        d->log_flush = event_new(d->base, -1, 0, daemon_log_flush_cb, d);
        if (d->log_flush)
                log_batch_start(daemon_log_kick, d);
        return 0;
}

static void daemon_signal_cb(evutil_socket_t sig, short what, void *userdata)
{
        struct daemon *d = userdata;

        if (sig == SIGHUP) {
                d->ops->reload(d->userdata);
                return;
        }
        if (d->stopping) {
                log_notice("Second stop signal: exiting now");
                daemon_exit(d);
                return;
        }
        d->stopping = true;
        d->ops->stop(d->userdata);
}

int daemon_catch_signals(struct daemon *d, const struct daemon_ops *ops, void *userdata)
{
        d->ops = ops;
        d->userdata = userdata;
        d->sig_hup = evsignal_new(d->base, SIGHUP, daemon_signal_cb, d);
        d->sig_term = evsignal_new(d->base, SIGTERM, daemon_signal_cb, d);
        d->sig_int = evsignal_new(d->base, SIGINT, daemon_signal_cb, d);
        if (!d->sig_hup || !d->sig_term || !d->sig_int || evsignal_add(d->sig_hup, NULL) < 0 ||
            evsignal_add(d->sig_term, NULL) < 0 || evsignal_add(d->sig_int, NULL) < 0)
                return log_error_errno(ENOMEM, "Failed to set up signal handling");
        return 0;
}

static void daemon_deadline_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct daemon *d = userdata;

        d->ops->deadline(d->userdata);
        daemon_exit(d);
}

void daemon_set_deadline(struct daemon *d, uint64_t usec)
{
        struct timeval tv = timeval_from_usec(usec);

        d->deadline = evtimer_new(d->base, daemon_deadline_cb, d);
        if (d->deadline)
                (void)evtimer_add(d->deadline, &tv);
}

int daemon_run(struct daemon *d)
{
        if (event_base_dispatch(d->base) < 0)
                return log_error_errno(EIO, "The event loop failed");
        return 0;
}

void daemon_exit(struct daemon *d)
{
        (void)event_base_loopexit(d->base, NULL);
}

void daemon_done(struct daemon *d)
{
        if (d->log_flush) {
                log_batch_stop();
                event_free(d->log_flush);
                d->log_flush = NULL;
        }
        d->notify = notify_free(d->notify);
        if (d->sig_hup)
                event_free(d->sig_hup);
        if (d->sig_term)
                event_free(d->sig_term);
        if (d->sig_int)
                event_free(d->sig_int);
        if (d->deadline)
                event_free(d->deadline);
        if (d->base)
                event_base_free(d->base);
        *d = (struct daemon){0};
}

/* Password input for webctl. Passwords never appear on the command line (where every user sees them in
 * the process list): scripts pipe one line into --password-stdin, people type it at the terminal.
 *
 * The terminal is /dev/tty itself, not stdin, so the prompt works while stdin is redirected. Echo is
 * turned off with termios for the read (ECHONL still shows the newline), and put back whatever happens:
 * the usual terminal signals are caught for the duration, and one that arrives restores the terminal and
 * is then raised again with its default action. Input is read a byte at a time, so nothing beyond the
 * line is consumed, and any buffer that held the password is wiped on failure. */
#include "webctl/prompt.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "common/macro.h"

static const int prompt_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP };
static volatile sig_atomic_t prompt_signal;

static void prompt_on_signal(int sig)
{
        prompt_signal = sig;
}

/* Reads one line from <fd> into <buf>. */
static int prompt_read_line(int fd, char *buf, size_t size)
{
        size_t len = 0;
        bool any = false;
        int r;

        if (size == 0)
                return -E2BIG;
        for (;;) {
                char c;
                ssize_t n = read(fd, &c, 1);

                if (n < 0 && errno == EINTR && !prompt_signal)
                        continue;
                if (n < 0) {
                        r = -errno;
                        goto fail;
                }
                if (n == 0) {
                        if (!any) {
                                r = -ENODATA;
                                goto fail;
                        }
                        break;
                }
                any = true;
                if (c == '\n')
                        break;
                if (len + 1 >= size) {
                        r = -E2BIG;
                        goto fail;
                }
                buf[len++] = c;
        }
        if (len > 0 && buf[len - 1] == '\r')
                len--;
        buf[len] = '\0';
        return (int)len;

fail:
        explicit_bzero(buf, size);
        return r;
}

static int prompt_tty(const char *prompt, char *buf, size_t size)
{
        struct sigaction sa = { .sa_handler = prompt_on_signal }, saved[ELEMENTSOF(prompt_signals)];
        struct termios old, quiet;
        _cleanup_close_ int fd = -1;
        int r;

        fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || tcgetattr(fd, &old) < 0)
                return -ENOTTY;

        /* No SA_RESTART: the read must return so the terminal can be restored. */
        sigemptyset(&sa.sa_mask);
        prompt_signal = 0;
        for (size_t i = 0; i < ELEMENTSOF(prompt_signals); i++)
                (void)sigaction(prompt_signals[i], &sa, &saved[i]);

        (void)!write(fd, prompt, strlen(prompt));
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
        quiet.c_lflag |= ECHONL;
        if (tcsetattr(fd, TCSAFLUSH, &quiet) < 0)
                r = -errno;
        else {
                r = prompt_read_line(fd, buf, size);
                (void)tcsetattr(fd, TCSAFLUSH, &old);
        }

        for (size_t i = 0; i < ELEMENTSOF(prompt_signals); i++)
                (void)sigaction(prompt_signals[i], &saved[i], NULL);
        if (prompt_signal) {
                explicit_bzero(buf, size);
                (void)!write(fd, "\n", 1);
                (void)raise(prompt_signal);
                return -EINTR;
        }
        return r;
}

int prompt_password(bool from_stdin, const char *prompt, char *buf, size_t size)
{
        if (from_stdin)
                return prompt_read_line(STDIN_FILENO, buf, size);
        return prompt_tty(prompt, buf, size);
}

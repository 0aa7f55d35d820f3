/* The access log: one logfmt line per request, to stderr or to a file, without ever blocking the loop.
 *
 * accesslog_write() formats a line (every value from the network escaped and capped, so a client can
 * neither forge a second line nor grow one without bound) and appends it to a bounded buffer. The buffer
 * is flushed when more than ACCESSLOG_FLUSH_AT bytes are queued, and otherwise by a 100 ms timer on the
 * event loop. How a flush writes depends on what the descriptor is:
 *   - a socket (journald's stream socket behind stderr): send() with MSG_DONTWAIT, so it never waits;
 *   - a pipe: write() only after poll() with a zero timeout said it is writable, in chunks of at most
 *     PIPE_BUF bytes ending on a line boundary: such a write fits in the free room poll() promised, so
 *     it neither blocks nor splits a line (the pipe stays blocking: it may be shared with other processes);
 *   - a regular file or a terminal: plain write(), which doesn't wait for long.
 * When a new line doesn't fit in the buffer even after a flush, it is dropped whole and counted; the count
 * is logged once the buffer has drained. The module owns its buffer, its timer and, for a file target, the
 * descriptor; stderr is only borrowed.
 *
 * With several event loops (loops.c) only the main loop's log writes: each worker loop's log is a
 * forwarding one (accesslog_open_forward()), whose flush hands its whole lines, as one block, to a
 * callback that carries them to the main loop's log (accesslog_append()). One writer: lines are never
 * interleaved, whatever the target. */
#include "lbd/accesslog.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"

#define ACCESSLOG_BUFFER_MAX (256u * 1024u) /* queued bytes at most */
#define ACCESSLOG_FLUSH_AT   (16u * 1024u)  /* flush at once beyond this */
#define ACCESSLOG_FLUSH_USEC (100 * USEC_PER_MSEC)
#define ACCESSLOG_PATH_MAX   1024u /* escaped path, bytes */
#define ACCESSLOG_METHOD_MAX 32u
#define ACCESSLOG_ID_MAX     128u
#define ACCESSLOG_LINE_MAX   2048u /* big enough for every capped field */
#define ACCESSLOG_CHUNK      PIPE_BUF

enum accesslog_kind {
        ACCESSLOG_PLAIN,  /* regular file, terminal, /dev/null: write() */
        ACCESSLOG_SOCKET, /* send(MSG_DONTWAIT) */
        ACCESSLOG_PIPE,   /* poll() then write() of at most PIPE_BUF bytes */
};

struct accesslog {
        struct event_base *base;
        struct event *timer;
        int fd;
        bool own_fd;
        bool prefix; /* "<6>" before each line: stderr that is not a terminal */
        enum accesslog_kind kind;

        char *buf; /* ACCESSLOG_BUFFER_MAX bytes; [0, len) queued, whole lines only */
        size_t len;

        /* Forwarding log: flushes hand the buffer to forward() instead of writing */
        void (*forward)(void *userdata, char *buf, size_t len);
        void *forward_userdata;

        uint64_t dropped;
        uint64_t dropped_reported;
        bool closing; /* accesslog_free(): no more report lines queued */
};

static enum accesslog_kind accesslog_kind_of(int fd)
{
        struct stat st;

        if (fstat(fd, &st) < 0)
                return ACCESSLOG_PLAIN;
        if (S_ISSOCK(st.st_mode))
                return ACCESSLOG_SOCKET;
        if (S_ISFIFO(st.st_mode))
                return ACCESSLOG_PIPE;
        return ACCESSLOG_PLAIN;
}

/* Counts the newlines in [p, p + n): the lines that a discarded stretch of the buffer held. */
static uint64_t accesslog_count_lines(const char *p, size_t n)
{
        uint64_t lines = 0;

        for (const char *q = p; (q = memchr(q, '\n', n - (size_t)(q - p))) != NULL; q++)
                lines++;
        return lines;
}

/* Returns the length of the longest prefix of the <n> queued bytes at <p> that is at most <max> bytes
 * and ends with a newline. Lines are capped at ACCESSLOG_LINE_MAX < PIPE_BUF, so one always fits; the
 * <max> fallback only matters after a socket took part of a line. */
static size_t accesslog_chunk_len(const char *p, size_t n, size_t max)
{
        if (n <= max)
                return n;
        for (size_t i = max; i > 0; i--)
                if (p[i - 1] == '\n')
                        return i;
        return max;
}

/* Writes one chunk. Returns the bytes written, 0 when the target can't take more now, or -errno. */
static ssize_t accesslog_write_chunk(struct accesslog *a, const char *p, size_t n)
{
        ssize_t k;

        switch (a->kind) {
        case ACCESSLOG_SOCKET:
                k = send(a->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
                break;
        case ACCESSLOG_PIPE: {
                struct pollfd pfd = {.fd = a->fd, .events = POLLOUT};
                int r = poll(&pfd, 1, 0);

                if (r < 0)
                        return errno == EINTR ? 0 : -errno;
                if (r == 0)
                        return 0;
                if (pfd.revents & (POLLERR | POLLNVAL))
                        return -EPIPE;
                if (!(pfd.revents & POLLOUT))
                        return 0;
                k = write(a->fd, p, n);
                break;
        }
        default:
                k = write(a->fd, p, n);
                break;
        }
        if (k < 0)
                return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
        return k;
}

/* Says how many lines were dropped since the last report. The message goes through the log, except when
 * the access log itself is stderr and stderr may block (a pipe or a socket): then it is queued as one more
 * line of our own, with the warning priority, so it waits for room like the access lines do. */
static void accesslog_report_dropped(struct accesslog *a)
{
        uint64_t n = a->dropped - a->dropped_reported;
        char line[128];
        int k;

        a->dropped_reported = a->dropped;
        if (a->own_fd || a->kind == ACCESSLOG_PLAIN) {
                log_warning("Access log could not keep up: dropped %" PRIu64 " lines", n);
                return;
        }

        k = snprintf(line, sizeof(line), "%sAccess log could not keep up: dropped %" PRIu64 " lines\n",
                     a->prefix ? "<4>" : "", n);
        if (k > 0 && (size_t)k < sizeof(line) && a->len + (size_t)k <= ACCESSLOG_BUFFER_MAX) {
                memcpy(a->buf + a->len, line, (size_t)k);
                a->len += (size_t)k;
        }
}

/* Writes as much of the buffer as the target takes without waiting. On a hard error (the reader went
 * away, disk full...), the queued lines are discarded and counted as dropped: they can't be delivered and
 * keeping them would only stall the lines that follow. Returns 0 when the buffer is empty afterwards,
 * -EAGAIN when something is left, or the write error. */
static int accesslog_flush(struct accesslog *a)
{
        size_t done = 0;
        int r = 0;

        if (a->forward) {
                char *copy;

                if (a->len == 0)
                        return 0;
                copy = malloc(a->len);
                if (!copy) {
                        a->dropped += accesslog_count_lines(a->buf, a->len);
                        a->len = 0;
                        return -ENOMEM;
                }
                memcpy(copy, a->buf, a->len);
                a->forward(a->forward_userdata, copy, a->len);
                a->len = 0;
                return 0;
        }

        while (done < a->len) {
                size_t n = a->kind == ACCESSLOG_PLAIN
                                   ? a->len - done
                                   : accesslog_chunk_len(a->buf + done, a->len - done, ACCESSLOG_CHUNK);
                ssize_t k = accesslog_write_chunk(a, a->buf + done, n);

                if (k < 0) {
                        r = (int)k;
                        a->dropped += accesslog_count_lines(a->buf + done, a->len - done);
                        done = a->len;
                        break;
                }
                if (k == 0)
                        break;
                done += (size_t)k;
        }

        if (done > 0) {
                memmove(a->buf, a->buf + done, a->len - done);
                a->len -= done;
        }
        if (r < 0)
                return r;
        if (a->len > 0)
                return -EAGAIN;

        if (a->dropped > a->dropped_reported && !a->closing)
                accesslog_report_dropped(a);
        return 0;
}

static void accesslog_arm(struct accesslog *a)
{
        const struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)ACCESSLOG_FLUSH_USEC};

        if (a->len > 0 && !evtimer_pending(a->timer, NULL))
                (void)evtimer_add(a->timer, &tv);
}

static void accesslog_on_timer(evutil_socket_t fd, short what, void *userdata)
{
        struct accesslog *a = userdata;
        int r;

        r = accesslog_flush(a);
        if (r < 0 && r != -EAGAIN)
                log_debug_errno(r, "Failed to write the access log: %m");
        accesslog_arm(a);
}

int accesslog_open(struct event_base *base, const char *target, struct accesslog **ret)
{
        _cleanup_close_ int fd = -1;
        struct accesslog *a;
        bool is_stderr;

        if (!base || !target || !ret)
                return -EINVAL;
        if (strcmp(target, "off") == 0) {
                *ret = NULL;
                return 0;
        }

        is_stderr = strcmp(target, "stderr") == 0;
        if (!is_stderr) {
                if (target[0] == '\0')
                        return -EINVAL;
                /* O_NONBLOCK: a FIFO without a reader fails at once instead of waiting. */
                fd = open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0640);
                if (fd < 0)
                        return -errno;
        }

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->buf = malloc(ACCESSLOG_BUFFER_MAX);
        a->timer = evtimer_new(base, accesslog_on_timer, a);
        if (!a->buf || !a->timer) {
                if (a->timer)
                        event_free(a->timer);
                free(a->buf);
                free(a);
                return -ENOMEM;
        }

        a->base = base;
        if (is_stderr) {
                a->fd = STDERR_FILENO;
                a->prefix = !isatty(STDERR_FILENO);
        } else {
                a->fd = TAKE_FD(fd);
                a->own_fd = true;
        }
        a->kind = accesslog_kind_of(a->fd);

        *ret = a;
        return 0;
}

int accesslog_open_forward(struct event_base *base, const struct accesslog *like,
                           void (*forward)(void *userdata, char *buf, size_t len), void *userdata,
                           struct accesslog **ret)
{
        struct accesslog *a;
        int r;

        if (!like || !forward) {
                *ret = NULL;
                return 0;
        }
        r = accesslog_open(base, "stderr", &a);
        if (r < 0)
                return r;
        a->prefix = like->prefix;
        a->forward = forward;
        a->forward_userdata = userdata;
        *ret = a;
        return 0;
}

void accesslog_append(struct accesslog *a, const char *buf, size_t len)
{
        if (!a || len == 0)
                return;
        if (a->len + len > ACCESSLOG_BUFFER_MAX)
                (void)accesslog_flush(a);
        if (a->len + len > ACCESSLOG_BUFFER_MAX) {
                a->dropped += accesslog_count_lines(buf, len);
                accesslog_arm(a);
                return;
        }
        memcpy(a->buf + a->len, buf, len);
        a->len += len;
        if (a->len > ACCESSLOG_FLUSH_AT)
                (void)accesslog_flush(a);
        accesslog_arm(a);
}

/* Appends <n> bytes of <s> to <out> (capacity <size>, already holding *pos bytes) with every byte outside
 * 0x21..0x7e written as %XX, stopping before the escaped text would pass <cap> bytes. An empty value is
 * written as "-", so every field keeps a value. */
static void accesslog_put_escaped(char *out, size_t size, size_t *pos, const char *s, size_t n, size_t cap)
{
        static const char hex[] = "0123456789ABCDEF";
        size_t p = *pos, limit = MIN(size - 1, *pos + cap);

        if (!s || n == 0) {
                if (p < limit)
                        out[p++] = '-';
                *pos = p;
                return;
        }

        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];

                if (c >= 0x21 && c <= 0x7e) {
                        if (p + 1 > limit)
                                break;
                        out[p++] = (char)c;
                } else {
                        if (p + 3 > limit)
                                break;
                        out[p++] = '%';
                        out[p++] = hex[c >> 4];
                        out[p++] = hex[c & 0xf];
                }
        }
        *pos = p;
}

/* Appends printf-style text; stops at the end of <out> (which always leaves room for the NUL). */
_printf_(4, 5) static void accesslog_put(char *out, size_t size, size_t *pos, const char *format, ...)
{
        va_list ap;
        int n;

        if (*pos >= size - 1)
                return;
        va_start(ap, format);
        n = vsnprintf(out + *pos, size - *pos, format, ap);
        va_end(ap);
        if (n > 0)
                *pos = MIN(size - 1, *pos + (size_t)n);
}

/* Formats the line for <e> into <out>, newline included. Returns its length. */
static size_t accesslog_format(const struct accesslog *a, const struct accesslog_entry *e, char *out,
                               size_t size)
{
        char client[NETADDR_STRLEN] = "-";
        size_t pos = 0;

        if (e->client && netaddr_format(e->client, client, sizeof(client)) < 0)
                client[0] = '-', client[1] = '\0';

        accesslog_put(out, size, &pos, "%saccess client=%s method=", a->prefix ? "<6>" : "", client);
        accesslog_put_escaped(out, size, &pos, e->method, e->method ? strlen(e->method) : 0,
                              ACCESSLOG_METHOD_MAX);
        accesslog_put(out, size, &pos, " path=");
        accesslog_put_escaped(out, size, &pos, e->path, e->path ? e->path_len : 0, ACCESSLOG_PATH_MAX);
        accesslog_put(out, size, &pos, " status=%u bytes=%" PRIu64 " backend=", e->status, e->bytes);
        accesslog_put_escaped(out, size, &pos, e->backend, e->backend ? strlen(e->backend) : 0,
                              NETADDR_STRLEN);
        accesslog_put(out, size, &pos,
                      " duration_ms=%" PRIu64 ".%03" PRIu64 " request_id=", e->duration_usec / USEC_PER_MSEC,
                      e->duration_usec % USEC_PER_MSEC);
        accesslog_put_escaped(out, size, &pos, e->request_id, e->request_id ? strlen(e->request_id) : 0,
                              ACCESSLOG_ID_MAX);
        /* The caps above keep every line far below <size>; the newline always fits. */
        out[pos++] = '\n';
        return pos;
}

void accesslog_write(struct accesslog *a, const struct accesslog_entry *e)
{
        char line[ACCESSLOG_LINE_MAX];
        size_t n;

        if (!a || !e)
                return;

        n = accesslog_format(a, e, line, sizeof(line));
        accesslog_append(a, line, n);
}

uint64_t accesslog_dropped(const struct accesslog *a)
{
        return a ? a->dropped : 0;
}

struct accesslog *accesslog_free(struct accesslog *a)
{
        if (!a)
                return NULL;

        a->closing = true;
        (void)accesslog_flush(a);
        if (a->len > 0)
                a->dropped += accesslog_count_lines(a->buf, a->len);
        /* Logging to a stderr that is backed up could block: say it only when that can't be the case. */
        if (a->dropped > a->dropped_reported && !a->forward && (a->own_fd || a->kind == ACCESSLOG_PLAIN))
                log_warning("Access log closed after dropping %" PRIu64 " lines",
                            a->dropped - a->dropped_reported);
        event_free(a->timer);
        if (a->own_fd)
                (void)close(a->fd);
        free(a->buf);
        free(a);
        return NULL;
}

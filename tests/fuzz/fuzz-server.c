/* Fuzz target: bytes from a client through the whole server engine (http/server.c) on a loopback
 * connection: the head parser, body framing, pipelining, refusals and closes. The client sends the input,
 * shuts its side and reads to the end. Every answer must be an HTTP/1.1 status line, every request the
 * application saw must have been answered once (the access hook), and the connection must be gone once
 * the client is. The sanitizers see the rest. */
#include <errno.h>
#include <stdbool.h>
#include <event2/event.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/macro.h"
#include "http/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz {
        struct event_base *base;
        struct http_server *server;
        struct netaddr addr;
        unsigned requests, answers;
};

static void fuzz_request(struct http_request *req, void *userdata)
{
        struct fuzz *f = userdata;

        f->requests++;
        http_request_respond(req, &(struct http_response){ .status = 200, .body = req->body,
                                                           .body_len = req->body_len });
}

static uint64_t fuzz_body_limit(const struct http_request *req, void *userdata)
{
        return req->path[0] == '/' && req->path[1] == 's' ? 8 : 0;
}

static void fuzz_access(const struct http_request *req, unsigned status, size_t body_len, void *userdata)
{
        struct fuzz *f = userdata;

        f->answers++;
}

static struct fuzz *fuzz_setup(void)
{
        static const struct http_server_ops ops = {
                .request = fuzz_request,
                .body_limit = fuzz_body_limit,
                .access = fuzz_access,
        };
        static const struct http_server_limits limits = {
                .max_connections = 4,
                .max_head_size = 2048,
                .max_body_size = 1024,
                .head_timeout_usec = USEC_PER_SEC,
                .body_timeout_usec = USEC_PER_SEC,
                .idle_timeout_usec = USEC_PER_SEC,
        };
        static struct fuzz f;
        struct netaddr any;

        if (f.base)
                return &f;
        f.base = event_base_new();
        if (!f.base || netaddr_parse("127.0.0.1:0", 0, true, &any) < 0 ||
            http_server_new(f.base, &limits, &ops, &f, &f.server) < 0 ||
            http_server_listen(f.server, &any, "fuzz") < 0 || http_server_bound(f.server, 0, &f.addr) < 0)
                abort();
        return &f;
}

static void fuzz_turn(struct fuzz *f)
{
        (void)event_base_loop(f->base, EVLOOP_NONBLOCK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct fuzz *f = fuzz_setup();
        char out[65536];
        size_t len = 0, sent = 0;
        bool eof = false;
        int fd;

        f->requests = f->answers = 0;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                abort();
        if (connect(fd, &f->addr.u.sa, f->addr.len) < 0 && errno != EINPROGRESS)
                abort();
        if (size == 0)
                (void)shutdown(fd, SHUT_WR);
        /* Send and read until the engine closes (it must: the client's side is shut), at most ~3 s. */
        for (int i = 0; i < 3000 && !eof; i++) {
                struct pollfd p = { .fd = fd, .events = POLLIN | (sent < size ? POLLOUT : 0) };

                fuzz_turn(f);
                if (poll(&p, 1, 1) <= 0)
                        continue;
                if ((p.revents & POLLOUT) && sent < size) {
                        ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);

                        if (n > 0)
                                sent += (size_t)n;
                        else if (n < 0 && errno != EAGAIN)
                                sent = size;
                        if (sent == size)
                                (void)shutdown(fd, SHUT_WR);
                }
                if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
                        ssize_t n = recv(fd, out + len, sizeof(out) - 1 - len, 0);

                        if (n <= 0)
                                eof = n == 0 || errno != EAGAIN;
                        else if (len + (size_t)n < sizeof(out) - 1)
                                len += (size_t)n;
                }
        }
        out[len] = '\0';
        if (len > 0 && strncmp(out, "HTTP/1.1 ", 9) != 0)
                abort();
        (void)close(fd);
        for (int i = 0; i < 1000 && http_server_connections(f->server) > 0; i++) {
                fuzz_turn(f);
                (void)poll(NULL, 0, 1);
        }
        if (http_server_connections(f->server) > 0 || f->answers < f->requests)
                abort();
        return 0;
}

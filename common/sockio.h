/* Socket I/O straight between a non-blocking socket and an evbuffer: the reads and writes that lbd's proxy
 * and the HTTP server engine (http/server.c) both do, without libevent's bufferevents and their FIONREAD
 * ioctl per read. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

struct evbuffer;

/* Reads what the socket has, up to <max> bytes, straight into <buf>'s free space (no FIONREAD, no copy).
 * Returns bytes read, 0 on EOF, -EAGAIN, or -errno. */
ssize_t sockio_read(int fd, struct evbuffer *buf, size_t max);

/* Writes as much of <buf> as the socket takes, draining what went out. Returns bytes written (>= 0), or
 * -errno (the connection is broken). Never raises SIGPIPE. */
ssize_t sockio_write(int fd, struct evbuffer *buf);

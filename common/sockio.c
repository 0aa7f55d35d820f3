/* Socket I/O between a non-blocking socket and an evbuffer (see sockio.h). recvmsg() and sendmsg() rather
 * than readv() and writev(): on a socket they skip the file-position lock and checks of the read(2) and
 * write(2) families, and MSG_NOSIGNAL keeps a closed peer from raising SIGPIPE. */
#include "common/sockio.h"

#include <errno.h>
#include <event2/buffer.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "common/macro.h"

#define SOCKIO_IOV_MAX 16 /* chains handed to one sendmsg() */

ssize_t sockio_read(int fd, struct evbuffer *buf, size_t max)
{
        struct evbuffer_iovec v[2];
        int n_vec;
        ssize_t n;

        n_vec = evbuffer_reserve_space(buf, (ev_ssize_t)max, v, 2);
        if (n_vec <= 0)
                return -ENOMEM;
        if (n_vec == 2 && v[0].iov_len >= max)
                n_vec = 1;
        do {
                struct msghdr msg = { .msg_iov = (struct iovec *)v, .msg_iovlen = (size_t)n_vec };

                n = recvmsg(fd, &msg, 0);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
                int e = errno == EWOULDBLOCK ? EAGAIN : errno;
                (void)evbuffer_commit_space(buf, v, 0);
                return -e;
        }
        if ((size_t)n <= v[0].iov_len) {
                v[0].iov_len = (size_t)n;
                n_vec = 1;
        } else
                v[1].iov_len = (size_t)n - v[0].iov_len;
        if (evbuffer_commit_space(buf, v, n_vec) < 0)
                return -ENOMEM;
        return n;
}

ssize_t sockio_write(int fd, struct evbuffer *buf)
{
        ssize_t total = 0;

        while (evbuffer_get_length(buf) > 0) {
                struct evbuffer_iovec v[SOCKIO_IOV_MAX];
                struct msghdr msg = { .msg_iov = (struct iovec *)v };
                int n_vec = evbuffer_peek(buf, -1, NULL, v, SOCKIO_IOV_MAX);
                size_t offered = 0;
                ssize_t n;

                if (n_vec <= 0)
                        break;
                msg.msg_iovlen = (size_t)MIN(n_vec, SOCKIO_IOV_MAX);
                for (size_t i = 0; i < msg.msg_iovlen; i++)
                        offered += v[i].iov_len;
                n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                break;
                        return -errno;
                }
                if (n == 0)
                        break;
                (void)evbuffer_drain(buf, (size_t)n);
                total += n;
                if ((size_t)n < offered)
                        break; /* the socket is full: asking again would only return EAGAIN */
        }
        return total;
}

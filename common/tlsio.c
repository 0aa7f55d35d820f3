/* See tlsio.h. */
#include "common/tlsio.h"

#include <errno.h>
#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>

#include "common/macro.h"

#define TLS_RECORD 16384 /* the largest plaintext of one record */

/* The intermediate profile's TLS 1.2 suites: ECDHE key exchange and AEAD ciphers only. TLS 1.3's three
 * suites are all AEAD and kept as OpenSSL orders them. */
#define TLS_CIPHERS_12 "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
                       "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
                       "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_CIPHERS_13 "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS     "X25519:P-256:P-384"

int tls_ctx_set_profile(SSL_CTX *ctx, bool modern)
{
        SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
        if (SSL_CTX_set_min_proto_version(ctx, modern ? TLS1_3_VERSION : TLS1_2_VERSION) !=
                    1 ||
            SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
            SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1 ||
            SSL_CTX_set_ciphersuites(ctx, TLS_CIPHERS_13) != 1 || SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1) {
                ERR_clear_error();
                return -EINVAL;
        }
        return 0;
}

int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                     unsigned inlen, void *arg)
{
        static const unsigned char http11[] = "\x08http/1.1";
        unsigned char *selected = NULL;

        /* Only HTTP/1.1 is spoken: a client that offers nothing else it can use goes on without ALPN. */
        if (SSL_select_next_proto(&selected, outlen, http11, sizeof(http11) - 1, in, inlen) !=
            OPENSSL_NPN_NEGOTIATED)
                return SSL_TLSEXT_ERR_NOACK;
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
}

/* The text of OpenSSL's last error, or <fallback>. */
static const char *tls_last_error(char *buf, size_t size, const char *fallback)
{
        unsigned long e = ERR_peek_last_error();

        if (e == 0)
                return fallback;
        ERR_error_string_n(e, buf, size);
        return buf;
}

SSL_CTX *tls_server_ctx_new(const char *cert, const char *key, bool modern, char *reason, size_t size)
{
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        char err[256];

        ERR_clear_error();
        if (!ctx || tls_ctx_set_profile(ctx, modern) < 0) {
                (void)snprintf(reason, size, "cannot set up TLS: %s", tls_last_error(err, sizeof(err), "out of memory"));
                goto fail;
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
                (void)snprintf(reason, size, "%s: no usable certificate: %s", cert,
                               tls_last_error(err, sizeof(err), "unreadable"));
                goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
                unsigned long e = ERR_peek_last_error();

                if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
                        (void)snprintf(reason, size, "%s: the key does not match the certificate in %s", key, cert);
                else
                        (void)snprintf(reason, size, "%s: no usable private key: %s", key,
                                       tls_last_error(err, sizeof(err), "unreadable"));
                goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
                (void)snprintf(reason, size, "%s: the key does not match the certificate in %s", key, cert);
                goto fail;
        }
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
        (void)SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"http", 4);
        ERR_clear_error();
        return ctx;
fail:
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
}

int tls_handshake_step(SSL *ssl, int *ret_err)
{
        int r, err;

        ERR_clear_error();
        errno = 0;
        r = SSL_do_handshake(ssl);
        if (r == 1)
                return TLS_DONE;
        err = SSL_get_error(ssl, r);
        if (err == SSL_ERROR_WANT_READ)
                return TLS_WANT_READ;
        if (err == SSL_ERROR_WANT_WRITE)
                return TLS_WANT_WRITE;
        *ret_err = err;
        return -EPROTO;
}

/* Maps the SSL_get_error() of a failed read or write to the proxy's convention. */
static ssize_t tls_io_error(int err)
{
        int e = errno;

        ERR_clear_error();
        switch (err) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
                return -EAGAIN;
        case SSL_ERROR_ZERO_RETURN:
                return 0;
        case SSL_ERROR_SYSCALL:
                return e != 0 && e != EAGAIN ? -e : -ECONNRESET;
        default:
                return -EPROTO;
        }
}

bool tls_has_pending(SSL *ssl)
{
        return SSL_has_pending(ssl) || (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN);
}

ssize_t tls_read(SSL *ssl, struct evbuffer *buf, size_t max, bool *ret_again)
{
        struct evbuffer_iovec v[2];
        size_t got[2] = {0, 0}, total = 0;
        int n_vec, err = SSL_ERROR_NONE;

        n_vec = evbuffer_reserve_space(buf, (ev_ssize_t)max, v, 2);
        if (n_vec <= 0)
                return -ENOMEM;
        ERR_clear_error();
        for (int i = 0; i < n_vec && total < max;) {
                size_t room = MIN(v[i].iov_len - got[i], max - total), n = 0;

                if (room == 0) {
                        i++;
                        continue;
                }
                errno = 0;
                if (SSL_read_ex(ssl, (char *)v[i].iov_base + got[i], room, &n) != 1) {
                        err = SSL_get_error(ssl, 0);
                        break;
                }
                got[i] += n;
                total += n;
                /* The records are used up: asking again would only get WANT_READ, after OpenSSL took its
                 * read buffer back (SSL_MODE_RELEASE_BUFFERS) and then allocated it anew for nothing,
                 * 16 KiB held by every idle connection. The socket's next event brings the rest. */
                if (n < room && !SSL_has_pending(ssl))
                        break;
        }
        v[0].iov_len = got[0];
        v[1].iov_len = got[1];
        if (evbuffer_commit_space(buf, v, got[1] > 0 ? 2 : got[0] > 0 ? 1 : 0) < 0)
                return -ENOMEM;
        if (total > 0) {
                /* The end or a failure after some bytes shows again on the next call, which nothing
                 * on the socket would bring. */
                *ret_again = tls_has_pending(ssl) ||
                             (err != SSL_ERROR_NONE && err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE);
                ERR_clear_error();
                return (ssize_t)total;
        }
        *ret_again = false;
        return err == SSL_ERROR_NONE ? -EAGAIN : tls_io_error(err);
}

ssize_t tls_write(SSL *ssl, struct evbuffer *buf)
{
        ssize_t total = 0;
        size_t len;

        ERR_clear_error();
        while ((len = evbuffer_get_length(buf)) > 0) {
                /* A record's worth, joined when it spans chains (a head and a small body): one record and
                 * one send instead of several. A retry after WANT_WRITE offers the same bytes or more. */
                size_t chunk = MIN(len, (size_t)TLS_RECORD), n = 0;
                unsigned char *p = evbuffer_pullup(buf, (ev_ssize_t)chunk);
                ssize_t r;

                if (!p)
                        return -ENOMEM;
                errno = 0;
                if (SSL_write_ex(ssl, p, chunk, &n) != 1) {
                        r = tls_io_error(SSL_get_error(ssl, 0));
                        if (r == -EAGAIN)
                                break;
                        return r == 0 ? -EPIPE : r;
                }
                (void)evbuffer_drain(buf, n);
                total += (ssize_t)n;
        }
        return total;
}

void tls_shutdown(SSL *ssl)
{
        if (!SSL_is_init_finished(ssl) || (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
                return;
        ERR_clear_error();
        (void)SSL_shutdown(ssl);
        ERR_clear_error();
}

/* TLS record I/O on a non-blocking socket, shared by lbd's listeners and upstreams and the HTTP server
 * engine: one handshake step, reads into and writes from evbuffers, the close; and the settings every
 * context of the project uses (the Mozilla "intermediate" or "modern" profile, ALPN http/1.1), with a
 * server context for one certificate. */
#pragma once

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct evbuffer;

/* Results of a handshake step besides failure. */
#define TLS_DONE       0
#define TLS_WANT_READ  1
#define TLS_WANT_WRITE 2

/* The profile: versions, suites, groups, and what is never done (compression, renegotiation); TLS 1.3
 * only when <modern>. Returns 0 or -EINVAL. */
int tls_ctx_set_profile(SSL_CTX *ctx, bool modern);

/* An ALPN selection callback (SSL_CTX_set_alpn_select_cb) that picks http/1.1, the only protocol spoken. */
int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                    unsigned inlen, void *arg);

/* A server context for one certificate: <cert> (PEM, the certificate then its chain) and <key> (PEM, not
 * encrypted), checked to match; the profile, ALPN, a session cache and tickets (OpenSSL's keys, in memory
 * only). Returns the context, or NULL with the reason (naming the file at fault) in <reason>. */
SSL_CTX *tls_server_ctx_new(const char *cert, const char *key, bool modern, char *reason, size_t size);

/* One step of either side's handshake: TLS_DONE, TLS_WANT_READ, TLS_WANT_WRITE, or -EPROTO with
 * SSL_get_error()'s verdict in *<ret_err> (OpenSSL's error queue left for the caller to read). */
int tls_handshake_step(SSL *ssl, int *ret_err);

/* Whether a read of <ssl> has something to return without the socket: records OpenSSL holds, or the
 * peer's close_notify already seen. */
bool tls_has_pending(SSL *ssl);

/* Reads decrypted bytes into <buf>'s free space, up to <max>. Returns the bytes read, 0 when the peer
 * closed (close_notify or EOF), -EAGAIN when the socket has nothing more, or -EPROTO/-errno on failure.
 * *<ret_again> says whether the caller must read again without waiting for the socket: records stay
 * inside OpenSSL (<max> was reached, or read ahead), or the end or a failure came after the bytes
 * returned and is reported by the next call. */
ssize_t tls_read(SSL *ssl, struct evbuffer *buf, size_t max, bool *ret_again);

/* Writes as much of <buf> as the socket takes, a record of up to 16 KiB at a time (small chains joined
 * into one record). Returns the bytes taken (>= 0), or -EPROTO/-errno. */
ssize_t tls_write(SSL *ssl, struct evbuffer *buf);

/* Sends close_notify if the connection is still sound; never blocks, never fails. */
void tls_shutdown(SSL *ssl);

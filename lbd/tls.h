/* TLS termination for lbd's listeners: the server context, the certificates chosen by SNI, session
 * resumption, and the non-blocking record I/O the proxy calls in place of recvmsg()/sendmsg().
 * See tls.c for how the contexts are laid out and what a reload swaps. */
#pragma once

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/tlsio.h"

struct config;
struct event_base;
struct evbuffer;
struct netaddr;
struct tls;
struct tls_client;

/* Why a handshake failed, as /metrics counts it. */
enum tls_failure {
        TLS_FAIL_PROTOCOL,    /* a version lbd does not speak (TLS 1.0/1.1, SSLv3) */
        TLS_FAIL_CIPHER,      /* no cipher, group or signature algorithm in common */
        TLS_FAIL_NO_CERT,     /* strict_sni and a name no certificate carries */
        TLS_FAIL_NOT_TLS,     /* plain HTTP or garbage on a TLS port */
        TLS_FAIL_ABORT,       /* the client closed or reset the connection mid-handshake */
        TLS_FAIL_TIMEOUT,     /* the handshake did not finish within [timeouts] client_header */
        TLS_FAIL_OTHER,
        TLS_FAIL_MAX,
};

/* One loop's handshakes: written by that loop only (relaxed atomic stores), read by any thread through
 * tls_stats_add(). */
struct tls_stats {
        uint64_t handshakes;            /* completed */
        uint64_t resumed;               /* of which resumed a session (ticket or cache) */
        uint64_t failures[TLS_FAIL_MAX];
};

/* What /status and /metrics say of one loaded certificate. */
struct tls_cert_info {
        const char *file;               /* the certificate's path */
        const char *name;               /* its first name (DNS SAN, else the common name) */
        const char *key_type;           /* "RSA", "ECDSA", "Ed25519", ... */
        int64_t not_after;              /* expiry, seconds since the epoch */
        bool is_default;                /* the one clients without SNI get */
};

/* Builds the server side from <c>'s [tls] section, for every TLS listener on every event loop. Loads every
 * certificate; returns 0 and *<ret>, or -errno with every bad file logged as "FILE: reason". Ticket keys
 * are rotated on <base> (the main loop) every [tls] ticket_rotate. */
int tls_new(struct event_base *base, const struct config *c, struct tls **ret);

/* With worker loops: what a reload or a rotation replaces is freed through <defer>, which must call
 * fn(arg) on the main loop once every loop has finished what it was running when <defer> was called
 * (loops_defer()). Without it (one loop) it is freed at once. Main loop only. */
void tls_set_defer(struct tls *t, void (*defer)(void *userdata, void (*fn)(void *arg), void *arg),
                   void *userdata);

/* Loads <c>'s certificates again (changed files, added or removed entries) and the settings that apply to
 * new handshakes. On success new handshakes on every loop use them at once and open connections keep
 * what they negotiated; on any bad or mismatched file, each is logged (file, reason), the running
 * certificates are kept, and -errno is returned. Main loop only. */
int tls_reload(struct tls *t, const struct config *c);

/* Checks that <c>'s certificates load, without keeping them (lbd --check-config). Returns 0 or -errno,
 * every bad file logged. */
int tls_check(const struct config *c);

/* A server connection on the accepted socket <fd> (which stays the caller's to close), from the running
 * generation. Any loop. NULL on ENOMEM. */
SSL *tls_accept(struct tls *t, int fd);

/* Drives the handshake of <ssl>: TLS_DONE, TLS_WANT_READ or TLS_WANT_WRITE, or -EPROTO with the reason
 * written to *<ret_failure>. The outcome is counted in <stats>, the calling loop's. */
int tls_handshake(SSL *ssl, struct tls_stats *stats, enum tls_failure *ret_failure);

/* Counts a failure the caller saw itself (a handshake that timed out) in its loop's <stats>. */
void tls_count_failure(struct tls_stats *stats, enum tls_failure f);

/* Adds <s> (any loop's) to <ret>, read atomically. */
void tls_stats_add(struct tls_stats *ret, const struct tls_stats *s);

/* Handshake failure reasons as /metrics labels them ("protocol", "cipher", ...). */
const char *tls_failure_name(enum tls_failure f);

/* Certificate reloads refused (the running certificates kept). Main loop only. */
uint64_t tls_reloads_failed(const struct tls *t);

/* Fills up to <max> entries of <out> with the loaded certificates; returns how many there are. The
 * strings stay valid until the next reload. Main loop only. */
size_t tls_get_certs(const struct tls *t, struct tls_cert_info *out, size_t max);

/* Frees everything; open connections' SSL objects keep their own references. Returns NULL. */
struct tls *tls_free(struct tls *t);

/* ---- the client side: lbd to its backends ([tls] backend = on) ---- */

/* A client context that trusts only [tls] backend_ca and checks each backend's certificate for
 * [tls] backend_name (sent as SNI too), or for the backend's IP address when no name is set. TLS 1.2 or
 * 1.3, ALPN http/1.1, sessions resumed per backend. Returns 0 and *<ret>, or -errno (logged: file and
 * reason). */
int tls_client_new(const struct config *c, struct tls_client **ret);

/* Another client on the context of <tc> (shared, never changed after tls_client_new()) with its own
 * sessions: one per event loop, so that no loop touches another's. NULL on ENOMEM. */
struct tls_client *tls_client_clone(const struct tls_client *tc);

/* A client connection on the connected (or connecting) socket <fd> to <addr>. NULL on ENOMEM. */
SSL *tls_client_connect(struct tls_client *tc, int fd, const struct netaddr *addr);

/* Drives a client handshake: TLS_DONE, TLS_WANT_READ, TLS_WANT_WRITE, or -EPROTO with why in <reason>
 * (the certificate check's verdict when that failed). Sessions the backend gives are kept for the next
 * connection to the same address. */
int tls_client_handshake(SSL *ssl, char *reason, size_t size);

struct tls_client *tls_client_free(struct tls_client *tc);

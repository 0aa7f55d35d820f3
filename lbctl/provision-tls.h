/* The pool's private CA, webd's certificate and the relays' one, for TLS between lbd, the relays and the web
 * host (OpenSSL).
 *
 * The CA lives in a directory on the load balancer host only (`lbctl provision --web-tls-dir`): ca.pem
 * (public, 0644), its key ca.key (0600, created with that mode, never read by anything but this module),
 * and web.pem, a copy of the certificate webd was last given (public), which tells a later run how long it
 * has left. webd's own key is made in memory for each certificate and handed to the caller (for the web
 * host's user data): it is never written here. Nothing here logs a key. */
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <time.h>

#define PROVISION_TLS_CA_DAYS    3650 /* the CA */
#define PROVISION_TLS_WEB_DAYS   825  /* webd's certificate */
#define PROVISION_TLS_RENEW_DAYS 30   /* a run renews webd's certificate with fewer days left than this */

struct provision_tls_ca {
        X509 *cert;
        EVP_PKEY *key;
        bool made; /* by this call */
};

/* Loads the CA of <dir>; when neither ca.pem nor ca.key is there, makes one (P-256, PROVISION_TLS_CA_DAYS
 * from <now>, creating <dir> 0755 if needed) if <create>, else returns -ENOENT. Returns 0, -EEXIST when
 * only one of the two files is there, -EBADMSG when they are not a CA certificate and its key, or another
 * -errno; <why> gets a reason for the log. */
int provision_tls_ca_load(const char *dir, time_t now, bool create, struct provision_tls_ca *ret, char *why,
                          size_t why_size);

void provision_tls_ca_clear(struct provision_tls_ca *ca);

/* Issues a certificate for DNS name <name> and, when not NULL, the IPv4 or IPv6 address <ip> (both in the
 * subjectAltName), signed by <ca>, valid PROVISION_TLS_WEB_DAYS from <now>, for a new P-256 key: both as
 * PEM text in new buffers (*<ret_cert>, *<ret_key>; the caller frees them, the key after wiping it).
 * Returns 0, -EINVAL (a bad name or address) or -ENOMEM. */
int provision_tls_issue(const struct provision_tls_ca *ca, const char *name, const char *ip, time_t now,
                        char **ret_cert, char **ret_key);

/* Reads <dir>/web.pem: when it is a certificate of <ca> for <name>, returns 0 with the whole days it has
 * left at <now> (negative once expired) in <*ret_days>; -ENOENT when there is none, -EBADMSG when it is not
 * one of <ca>'s for <name>. */
int provision_tls_web_days_left(const char *dir, const struct provision_tls_ca *ca, const char *name,
                                time_t now, long *ret_days);

/* Writes <cert> (PEM) as <dir>/web.pem (0644), whole (written aside, then renamed). Returns 0 or -errno. */
int provision_tls_web_save(const char *dir, const char *cert);

/* The relays' certificate <dir>/relay.pem and its key relay.key: as provision_tls_web_days_left(), and
 * -ENOENT when the key is missing, -EPERM when others may read it, -EBADMSG when it is not the
 * certificate's. */
int provision_tls_relay_days_left(const char *dir, const struct provision_tls_ca *ca, const char *name,
                                  time_t now, long *ret_days);

/* Writes <key> as <dir>/relay.key (0600, keeping the owner of the one it replaces), then <cert> as
 * relay.pem (0644), each whole. Returns 0 or -errno. */
int provision_tls_relay_save(const char *dir, const char *cert, const char *key);

/* TLS termination: the contexts behind lbd's TLS listeners, certificate choice by SNI, resumption, reload,
 * and the record I/O that proxy.c uses instead of plain socket calls on a TLS client.
 *
 * Contexts. A base SSL_CTX creates every TLS connection: it holds the protocol profile, the session cache,
 * the ticket callback, and the SNI and ALPN callbacks. The certificates live in a struct tls_certs: one
 * SSL_CTX per group of certificates that carry the same names, each group holding at most one certificate
 * per key type (RSA and ECDSA side by side: OpenSSL picks the one the client's signature algorithms allow).
 * The SNI callback finds the group for the client's name (exact, then one-label wildcard, then the
 * default: the first certificate listed) and moves the connection onto that group's SSL_CTX. Sessions and
 * tickets stay with the base context (OpenSSL keeps them on the session context), so a client resumes
 * whichever certificate it got.
 *
 * Threads. One struct tls serves every event loop ([lbd] threads): it belongs to the main loop, which
 * alone reloads it and rotates its keys; the loops only read it, without a lock:
 *   - the running generation (struct tls_gen: the base context, the certificates, strict_sni) is one
 *     pointer, published with a release store and read with an acquire load at each accept and in the SNI
 *     callback. A loop never keeps it past the callback it loaded it in, so once every loop has run one
 *     message after the store (tls_set_defer(): loops_defer()), none can still see the old one, and the
 *     main loop frees it then. The SSL_CTXs themselves are reference counted by OpenSSL: a connection
 *     created from, or moved onto, an old context keeps that context alive until it is freed;
 *   - the base context is shared by every loop (SSL_new() on one context is safe from any thread) and is
 *     never changed once published: a reload that changes its settings (profile, tickets, session cache,
 *     ticket lifetime) makes a new one, and one that changes only certificates keeps it;
 *   - the session cache is OpenSSL's, on the base context, so it is shared: a client resumes whichever
 *     loop its second connection lands on. OpenSSL guards it with its own lock, held for one lookup or
 *     insertion of a full TLS 1.2 handshake or a TLS 1.3 handshake without tickets; tickets need no
 *     cache. A reload that makes a new base context starts with an empty cache (tickets stay good);
 *   - ticket keys: one set for every loop (struct tls_keys: the current key and the previous one),
 *     published and retired like a generation, so a ticket made on one loop opens on any other, and a
 *     rotation never changes a key that a loop is reading;
 *   - counters: each loop counts its own handshakes (struct tls_stats in its proxy, relaxed atomic
 *     stores); /metrics sums them. Certificates and reload failures are the main loop's.
 *
 * Reload. tls_reload() builds a complete new struct tls_certs from the files; only when every file loaded
 * does it replace the running one. Open connections keep their certificate; new handshakes get the new one.
 *
 * Ticket keys are random, in memory only, and rotated on the main loop every [tls] ticket_rotate: a
 * ticket made with the previous key is still accepted (and replaced by one under the current key), so a
 * ticket lives two periods at most and a restart forgets them all.
 *
 * I/O. Sockets are non-blocking and OpenSSL reads and writes them itself. The proxy calls tls_read() and
 * tls_write() where it would call recvmsg()/sendmsg(); renegotiation is off, so after the handshake a read
 * only wants to read and a write only wants to write. Reads go ahead (one read() takes what the socket
 * has, records then wait inside OpenSSL: tls_read() says when to come back for them). SSL_MODE_RELEASE_BUFFERS
 * gives the record buffers back while a connection is idle, which is what keeps an idle TLS connection
 * small.
 *
 * The client side (TLS to the backends): one SSL_CTX, made at start and never changed, shared by the
 * health checks and every loop; each of them has its own struct tls_client around it (tls_client_clone())
 * with its own table of sessions to resume, so no loop touches another's sessions. A loop's first
 * connection to a backend is a full handshake, the next ones resume.
 *
 * The files are read at start and on SIGHUP only, on the main loop. */
#include "lbd/tls.h"

#include <assert.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/readfile.h"
#include "common/netaddr.h"
#include "lbd/config.h"

#define TLS_FILE_MAX   (1024 * 1024) /* a PEM file larger than this is refused */
#define TLS_NAMES_MAX  100           /* names one certificate may carry */
#define TLS_NAME_MAX   253
#define TLS_SID_CONTEXT "lbd"

struct tls_cert {
        char *file;
        char *names[TLS_NAMES_MAX];      /* lower case; "*.example.com" for a wildcard */
        size_t n_names;
        const char *key_type;
        int key_id;                      /* EVP_PKEY_RSA, EVP_PKEY_EC, ... */
        int64_t not_after;
        size_t group;                    /* index into tls_certs.groups */
};

struct tls_group {
        SSL_CTX *ctx;                    /* this group's certificates; one reference owned here */
        size_t first;                    /* index of its first certificate: the names are that one's */
};

struct tls_certs {
        struct tls_cert certs[CONFIG_MAX_CERTS];
        size_t n_certs;
        struct tls_group groups[CONFIG_MAX_CERTS];
        size_t n_groups;
};

struct tls_ticket_key {
        unsigned char name[16];
        unsigned char aes[32];
        unsigned char hmac[32];
};

/* What a reload replaces; immutable once published (see the top). */
struct tls_gen {
        SSL_CTX *ctx;                    /* the base context; one reference owned here */
        struct tls_certs *certs;
        bool strict_sni;
};

/* The base context's settings: a reload that changes one makes a new base context. */
struct tls_base_settings {
        enum tls_profile profile;
        bool tickets;
        uint64_t session_cache;
        uint64_t lifetime_sec;
};

/* The ticket keys; immutable once published. */
struct tls_keys {
        struct tls_ticket_key keys[2];   /* [0] makes tickets, [1] is the previous one, still accepted */
};

struct tls {
        struct tls_gen *gen;             /* atomic (acquire/release): the running generation */
        struct tls_keys *keys;           /* atomic (acquire/release): the ticket keys */
        struct tls_base_settings base;   /* what gen->ctx was made with */
        EVP_CIPHER *ticket_cipher;       /* AES-256-CBC, fetched once rather than at every ticket */
        struct event rotate;
        uint64_t rotate_usec;
        uint64_t reloads_failed;
        void (*defer)(void *userdata, void (*fn)(void *arg), void *arg);
        void *defer_userdata;
};

static int tls_ex_tls = -1;       /* SSL ex_data: the struct tls a connection belongs to */
static int tls_ex_no_cert = -1;   /* SSL ex_data: non-NULL when strict SNI refused the name */
static int tls_ex_client = -1;    /* SSL ex_data: the struct tls_client of a connection to a backend */
static int tls_ex_addr = -1;      /* SSL ex_data: that backend's address (lives as long as the SSL) */
static int tls_ex_base = -1;      /* SSL ex_data: the base context a server connection was made from */
static int tls_ex_ticket = -1;    /* SSL ex_data: non-NULL when the client offered to take a ticket */

static int tls_ex_init(void)
{
        if (tls_ex_tls >= 0)
                return 0;
        tls_ex_tls = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        tls_ex_no_cert = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        tls_ex_client = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        tls_ex_addr = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        tls_ex_base = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        tls_ex_ticket = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        return tls_ex_tls < 0 || tls_ex_no_cert < 0 || tls_ex_client < 0 || tls_ex_addr < 0 || tls_ex_base < 0 ||
                               tls_ex_ticket < 0
                       ? -ENOMEM
                       : 0;
}

/* A zeroed struct tls or tls_client, once the SSL ex_data indexes exist. NULL on ENOMEM (logged). */
static void *tls_alloc(size_t size)
{
        void *p = tls_ex_init() < 0 ? NULL : calloc(1, size);

        if (!p)
                log_error("Failed to set up TLS: out of memory");
        return p;
}

static const char *const tls_failure_names[TLS_FAIL_MAX] = {
        [TLS_FAIL_PROTOCOL] = "protocol",
        [TLS_FAIL_CIPHER] = "cipher",
        [TLS_FAIL_NO_CERT] = "no_certificate",
        [TLS_FAIL_NOT_TLS] = "not_tls",
        [TLS_FAIL_ABORT] = "client_abort",
        [TLS_FAIL_TIMEOUT] = "timeout",
        [TLS_FAIL_OTHER] = "other",
};

const char *tls_failure_name(enum tls_failure f)
{
        return (size_t)f < TLS_FAIL_MAX ? tls_failure_names[f] : "other";
}

/* The text of OpenSSL's last error, for a reason; the queue is emptied. */
static const char *tls_error_text(char *buf, size_t size)
{
        unsigned long e = ERR_peek_last_error();

        if (e == 0)
                (void)snprintf(buf, size, "unknown error");
        else
                ERR_error_string_n(e, buf, size);
        ERR_clear_error();
        return buf;
}

/* ---- certificates: files, names, groups ---- */

static int tls_no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
        return 0;
}

/* Reads <path> (a regular file of at most TLS_FILE_MAX bytes) into a memory BIO. Returns 0 and *<ret>, or
 * -errno with a reason. */
static int tls_read_file(const char *path, BIO **ret, char *reason, size_t size)
{
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        BIO *bio;
        int r;

        r = readfile_bounded(path, TLS_FILE_MAX, 0, &data, &len);
        if (r == -EINVAL)
                (void)snprintf(reason, size, "not a regular file");
        else if (r == -EFBIG)
                (void)snprintf(reason, size, "larger than %d bytes", TLS_FILE_MAX);
        else if (r < 0)
                (void)snprintf(reason, size, "cannot read it: %s", strerror(-r));
        if (r < 0)
                return r;
        bio = BIO_new(BIO_s_mem());
        if (!bio || BIO_write(bio, data, (int)len) != (int)len) {
                BIO_free(bio);
                return -ENOMEM;
        }
        *ret = bio;
        return 0;
}

/* Adds one name to <cert>, lower-cased. Names that are not host names (or wildcards of one) are skipped:
 * a client could never ask for them. */
static int tls_add_name(struct tls_cert *cert, const unsigned char *s, size_t len)
{
        char *name;

        if (len == 0 || len > TLS_NAME_MAX)
                return 0;
        for (size_t i = 0; i < len; i++)
                if (s[i] <= 0x20 || s[i] >= 0x7f || s[i] == '/')
                        return 0;
        if (cert->n_names >= TLS_NAMES_MAX)
                return -E2BIG;
        name = strndup((const char *)s, len);
        if (!name)
                return -ENOMEM;
        for (char *p = name; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char)(*p - 'A' + 'a');
        cert->names[cert->n_names++] = name;
        return 0;
}

/* The names a client may ask <x> by: its DNS subject alternative names, else its common name. */
static int tls_cert_names(struct tls_cert *cert, X509 *x)
{
        GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
        int r = 0;

        for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && r >= 0; i++) {
                const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);

                if (g->type == GEN_DNS)
                        r = tls_add_name(cert, ASN1_STRING_get0_data(g->d.dNSName),
                                         (size_t)ASN1_STRING_length(g->d.dNSName));
        }
        GENERAL_NAMES_free(sans);
        if (r >= 0 && cert->n_names == 0) {
                const X509_NAME *subject = X509_get_subject_name(x);
                int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);

                if (i >= 0) {
                        const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));

                        r = tls_add_name(cert, ASN1_STRING_get0_data(cn), (size_t)ASN1_STRING_length(cn));
                }
        }
        return r;
}

/* Two certificates belong in one group when they carry the same names (in any order). */
static bool tls_same_names(const struct tls_cert *a, const struct tls_cert *b)
{
        if (a->n_names != b->n_names)
                return false;
        for (size_t i = 0; i < a->n_names; i++) {
                size_t j;

                for (j = 0; j < b->n_names; j++)
                        if (strcmp(a->names[i], b->names[j]) == 0)
                                break;
                if (j == b->n_names)
                        return false;
        }
        return true;
}

static void tls_key_type(struct tls_cert *cert, const EVP_PKEY *key)
{
        cert->key_id = EVP_PKEY_get_base_id(key);
        switch (cert->key_id) {
        case EVP_PKEY_RSA:
                cert->key_type = "RSA";
                break;
        case EVP_PKEY_EC:
                cert->key_type = "ECDSA";
                break;
        case EVP_PKEY_ED25519:
                cert->key_type = "Ed25519";
                break;
        case EVP_PKEY_ED448:
                cert->key_type = "Ed448";
                break;
        default:
                cert->key_type = "other";
                break;
        }
}

static SSL_CTX *tls_group_ctx_new(enum tls_profile profile)
{
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

        if (!ctx)
                return NULL;
        /* After the SNI callback moves a connection here, these are read from this context. */
        if (tls_ctx_set_profile(ctx, profile == TLS_PROFILE_MODERN) < 0) {
                SSL_CTX_free(ctx);
                return NULL;
        }
        (void)SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SID_CONTEXT,
                                             sizeof(TLS_SID_CONTEXT) - 1);
        SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
        return ctx;
}

/* Loads the entry <e> into <set>: its certificate (with the chain after it) and key, checked to match,
 * added to the group of its names. Returns 0, or -errno with a reason naming the file at fault. */
static int tls_load_cert(struct tls_certs *set, const struct config_cert *e, enum tls_profile profile,
                         char *reason, size_t size)
{
        struct tls_cert *cert = &set->certs[set->n_certs];
        char err[256];
        BIO *bio = NULL;
        X509 *x = NULL;
        EVP_PKEY *key = NULL;
        STACK_OF(X509) *chain = NULL;
        const char *at = e->cert;
        struct tm tm;
        int r;

        *cert = (struct tls_cert){0};
        cert->file = strdup(e->cert);
        if (!cert->file)
                return -ENOMEM;
        set->n_certs++; /* from here on, freed with the set */

        r = tls_read_file(e->cert, &bio, reason, size);
        if (r < 0)
                goto fail;
        x = PEM_read_bio_X509(bio, NULL, tls_no_passphrase, NULL);
        if (!x) {
                (void)snprintf(reason, size, "no PEM certificate in it");
                r = -EINVAL;
                goto fail;
        }
        chain = sk_X509_new_null();
        if (!chain) {
                r = -ENOMEM;
                goto fail;
        }
        for (;;) {
                X509 *ca = PEM_read_bio_X509(bio, NULL, tls_no_passphrase, NULL);

                if (!ca)
                        break;
                if (sk_X509_num(chain) >= 16 || !sk_X509_push(chain, ca)) {
                        X509_free(ca);
                        (void)snprintf(reason, size, "more than 16 certificates in the chain");
                        r = -E2BIG;
                        goto fail;
                }
        }
        ERR_clear_error(); /* the end of the file reads as an error */
        if (strcmp(e->key, e->cert) != 0) {
                BIO_free(bio);
                bio = NULL;
                at = e->key;
                r = tls_read_file(e->key, &bio, reason, size);
                if (r < 0)
                        goto fail;
        } else
                (void)BIO_reset(bio);
        key = PEM_read_bio_PrivateKey(bio, NULL, tls_no_passphrase, NULL);
        if (!key) {
                (void)snprintf(reason, size, "no unencrypted PEM private key in it (%s)",
                               tls_error_text(err, sizeof(err)));
                r = -EINVAL;
                goto fail;
        }
        at = e->key;
        if (X509_check_private_key(x, key) != 1) {
                ERR_clear_error();
                (void)snprintf(reason, size, "the key does not match the certificate %s", e->cert);
                r = -EINVAL;
                goto fail;
        }
        at = e->cert;
        tls_key_type(cert, key);
        r = tls_cert_names(cert, x);
        if (r == -E2BIG)
                (void)snprintf(reason, size, "more than %d names", TLS_NAMES_MAX);
        else if (r >= 0 && cert->n_names == 0) {
                (void)snprintf(reason, size, "the certificate carries no DNS name");
                r = -EINVAL;
        }
        if (r < 0)
                goto fail;
        if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) {
                (void)snprintf(reason, size, "unreadable expiry date");
                r = -EINVAL;
                goto fail;
        }
        cert->not_after = (int64_t)timegm(&tm);

        /* Its group: the one with the same names, else a new one. */
        cert->group = set->n_groups;
        for (size_t i = 0; i + 1 < set->n_certs; i++)
                if (tls_same_names(&set->certs[i], cert)) {
                        cert->group = set->certs[i].group;
                        if (set->certs[i].key_id == cert->key_id) {
                                (void)snprintf(reason, size,
                                               "a second %s certificate for the names of %s: one of each "
                                               "key type per name",
                                               cert->key_type, set->certs[i].file);
                                r = -EEXIST;
                                goto fail;
                        }
                }
        if (cert->group == set->n_groups) {
                set->groups[set->n_groups].ctx = tls_group_ctx_new(profile);
                if (!set->groups[set->n_groups].ctx) {
                        r = -ENOMEM;
                        goto fail;
                }
                set->groups[set->n_groups].first = set->n_certs - 1;
                set->n_groups++;
        }
        if (SSL_CTX_use_cert_and_key(set->groups[cert->group].ctx, x, key, chain, 1) != 1) {
                (void)snprintf(reason, size, "OpenSSL refused it: %s", tls_error_text(err, sizeof(err)));
                r = -EINVAL;
                goto fail;
        }
        r = 0;
fail:
        if (r < 0 && at != e->cert) {
                /* Name the key file in the reason when it is the one at fault. */
                char tmp[512];
                (void)snprintf(tmp, sizeof(tmp), "%s: %s", at, reason);
                (void)snprintf(reason, size, "%s", tmp);
        }
        sk_X509_pop_free(chain, X509_free);
        EVP_PKEY_free(key);
        X509_free(x);
        BIO_free(bio);
        ERR_clear_error();
        return r;
}

static struct tls_certs *tls_certs_free(struct tls_certs *set)
{
        if (!set)
                return NULL;
        for (size_t i = 0; i < set->n_certs; i++) {
                free(set->certs[i].file);
                for (size_t j = 0; j < set->certs[i].n_names; j++)
                        free(set->certs[i].names[j]);
        }
        for (size_t i = 0; i < set->n_groups; i++)
                SSL_CTX_free(set->groups[i].ctx);
        free(set);
        return NULL;
}

/* Loads every certificate of <c>. Returns 0 and *<ret>, or -errno with each bad file logged (on a reload,
 * as <what>). */
static int tls_certs_load(const struct config *c, const char *what, struct tls_certs **ret)
{
        struct tls_certs *set = calloc(1, sizeof(*set));
        int r = 0;

        if (!set)
                return log_error_errno(ENOMEM, "Out of memory");
        for (size_t i = 0; i < MIN(c->n_certs, (size_t)CONFIG_MAX_CERTS); i++) {
                char reason[768] = "";
                int k = tls_load_cert(set, &c->certs[i], c->tls_profile, reason, sizeof(reason));

                if (k < 0) {
                        if (!reason[0])
                                (void)snprintf(reason, sizeof(reason), "%s", strerror(-k));
                        log_error("%s%s: %s", what, c->certs[i].cert, reason);
                        r = k;
                }
        }
        if (r < 0) {
                tls_certs_free(set);
                return r;
        }
        for (size_t i = 0; i < set->n_certs; i++)
                if (set->certs[i].not_after < (int64_t)time(NULL))
                        log_warning("TLS certificate %s (%s) has expired", set->certs[i].file,
                                    set->certs[i].names[0]);
        *ret = set;
        return 0;
}

/* The group whose certificates carry <name>: an exact name first, then a wildcard for its first label;
 * NULL if none. */
static const struct tls_group *tls_certs_find(const struct tls_certs *set, const char *name)
{
        const char *parent = strchr(name, '.');

        for (size_t i = 0; i < set->n_certs; i++)
                for (size_t j = 0; j < set->certs[i].n_names; j++)
                        if (strcasecmp(set->certs[i].names[j], name) == 0)
                                return &set->groups[set->certs[i].group];
        if (!parent || parent == name || parent[1] == '\0')
                return NULL;
        for (size_t i = 0; i < set->n_certs; i++)
                for (size_t j = 0; j < set->certs[i].n_names; j++) {
                        const char *n = set->certs[i].names[j];

                        if (n[0] == '*' && n[1] == '.' && strcasecmp(n + 1, parent) == 0)
                                return &set->groups[set->certs[i].group];
                }
        return NULL;
}

/* ---- generations and keys: published to the loops, retired once none can see them ---- */

static struct tls_gen *tls_gen_free(struct tls_gen *g)
{
        if (!g)
                return NULL;
        tls_certs_free(g->certs);
        SSL_CTX_free(g->ctx);
        free(g);
        return NULL;
}

static void tls_gen_free_cb(void *arg)
{
        tls_gen_free(arg);
}

static void tls_keys_free_cb(void *arg)
{
        struct tls_keys *k = arg;

        OPENSSL_cleanse(k, sizeof(*k));
        free(k);
}

/* Frees <arg> with <fn> once no loop can still be reading it: at once without loops. */
static void tls_retire(struct tls *t, void (*fn)(void *arg), void *arg)
{
        if (t->defer)
                t->defer(t->defer_userdata, fn, arg);
        else
                fn(arg);
}

static struct tls_gen *tls_gen_get(const struct tls *t)
{
        return __atomic_load_n(&t->gen, __ATOMIC_ACQUIRE);
}

/* ---- the base context: SNI, tickets, profile ---- */

static int tls_servername_cb(SSL *ssl, int *alert, void *arg)
{
        struct tls *t = arg;
        const struct tls_gen *gen = tls_gen_get(t);
        const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        const struct tls_group *g = name ? tls_certs_find(gen->certs, name) : NULL;

        if (!g) {
                if (name && gen->strict_sni) {
                        (void)SSL_set_ex_data(ssl, tls_ex_no_cert, t);
                        *alert = SSL_AD_UNRECOGNIZED_NAME;
                        return SSL_TLSEXT_ERR_ALERT_FATAL;
                }
                g = &gen->certs->groups[gen->certs->certs[0].group];
        }
        if (SSL_set_SSL_CTX(ssl, g->ctx) != g->ctx) {
                *alert = SSL_AD_INTERNAL_ERROR;
                return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
        return SSL_TLSEXT_ERR_OK;
}

static int tls_new_ticket_key(struct tls_ticket_key *k)
{
        if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
            RAND_bytes(k->hmac, sizeof(k->hmac)) != 1) {
                ERR_clear_error();
                return -EIO;
        }
        return 0;
}

/* Runs on any loop: reads the published key set once, and only that. */
static int tls_ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
        struct tls *t = SSL_get_ex_data(ssl, tls_ex_tls);
        const struct tls_keys *keys;
        const struct tls_ticket_key *k = NULL;
        OSSL_PARAM params[3];
        size_t i = 0;

        if (!t)
                return -1;
        keys = __atomic_load_n(&t->keys, __ATOMIC_ACQUIRE);
        if (enc) {
                k = &keys->keys[0];
                memcpy(key_name, k->name, sizeof(k->name));
                if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(t->ticket_cipher)) != 1 ||
                    EVP_EncryptInit_ex(cctx, t->ticket_cipher, NULL, k->aes, iv) != 1)
                        return -1;
        } else {
                for (i = 0; i < ELEMENTSOF(keys->keys); i++)
                        if (memcmp(key_name, keys->keys[i].name, sizeof(keys->keys[i].name)) == 0)
                                break;
                if (i == ELEMENTSOF(keys->keys))
                        return 0; /* unknown or expired key: a full handshake */
                k = &keys->keys[i];
                if (EVP_DecryptInit_ex(cctx, t->ticket_cipher, NULL, k->aes, iv) != 1)
                        return -1;
        }
        params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac));
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
        params[2] = OSSL_PARAM_construct_end();
        if (EVP_MAC_CTX_set_params(hctx, params) != 1)
                return -1;
        /* A ticket under the previous key is good, and gets replaced by one under the current key. */
        return enc || i == 0 ? 1 : 2;
}

static void tls_rotate_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct tls *t = userdata;
        struct tls_keys *next = malloc(sizeof(*next)), *prev = t->keys;
        struct timeval tv = timeval_from_usec(t->rotate_usec);

        if (!next || tls_new_ticket_key(&next->keys[0]) < 0) {
                log_warning("Failed to make a new TLS ticket key: keeping the current one");
                free(next);
        } else {
                next->keys[1] = prev->keys[0];
                __atomic_store_n(&t->keys, next, __ATOMIC_RELEASE);
                tls_retire(t, tls_keys_free_cb, prev);
        }
        (void)event_add(&t->rotate, &tv);
}

/* Tickets on: notes whether the client offered to take one (a TLS 1.2 session ticket extension). */
static int tls_client_hello_cb(SSL *ssl, int *alert, void *arg)
{
        const unsigned char *data;
        size_t len;

        if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_session_ticket, &data, &len) == 1)
                (void)SSL_set_ex_data(ssl, tls_ex_ticket, ssl);
        return SSL_CLIENT_HELLO_SUCCESS;
}

/* Tickets on: a new session goes into the shared cache only when its client takes no ticket (a client
 * that has a ticket resumes with it, and every cached session costs the cache's lock and memory, at
 * every full TLS 1.2 handshake, on every loop). Returns 0: OpenSSL keeps its reference. */
static int tls_new_session_cb(SSL *ssl, SSL_SESSION *session)
{
        SSL_CTX *base = SSL_get_ex_data(ssl, tls_ex_base);

        if (base && !SSL_get_ex_data(ssl, tls_ex_ticket))
                (void)SSL_CTX_add_session(base, session);
        return 0;
}

static struct tls_base_settings tls_base_settings(const struct config *c)
{
        return (struct tls_base_settings){
                .profile = c->tls_profile,
                .tickets = c->tls_tickets,
                .session_cache = c->tls_session_cache,
                /* A ticket or cached session is good for two rotation periods, a minute at least. */
                .lifetime_sec = MAX(2 * (c->tls_ticket_rotate_usec / USEC_PER_SEC), (uint64_t)60),
        };
}

/* A base context with <b>'s settings for <t>. NULL on failure (the caller logs). */
static SSL_CTX *tls_base_ctx_new(struct tls *t, const struct tls_base_settings *b)
{
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

        if (!ctx)
                return NULL;
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        /* One read() for what the socket has, instead of one for a record's header and one for its body. */
        SSL_CTX_set_read_ahead(ctx, 1);
        (void)SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SID_CONTEXT,
                                             sizeof(TLS_SID_CONTEXT) - 1);
        (void)SSL_CTX_set_num_tickets(ctx, 1);
        SSL_CTX_set_tlsext_servername_callback(ctx, tls_servername_cb);
        SSL_CTX_set_tlsext_servername_arg(ctx, t);
        SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
        (void)SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb);
        if (tls_ctx_set_profile(ctx, b->profile == TLS_PROFILE_MODERN) < 0) {
                SSL_CTX_free(ctx);
                return NULL;
        }
        if (b->tickets)
                SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
        else
                SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        if (b->session_cache == 0)
                (void)SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        else if (!b->tickets)
                (void)SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        else {
                /* Only the sessions of clients without tickets are stored (tls_new_session_cb()). */
                (void)SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL_STORE);
                SSL_CTX_sess_set_new_cb(ctx, tls_new_session_cb);
                SSL_CTX_set_client_hello_cb(ctx, tls_client_hello_cb, NULL);
        }
        (void)SSL_CTX_sess_set_cache_size(ctx, (long)b->session_cache);
        (void)SSL_CTX_set_timeout(ctx, (long)b->lifetime_sec);
        return ctx;
}

/* A new generation for <c> with the certificates <certs> (taken, also on failure): the running base
 * context when its settings did not change, else a new one. NULL on failure (logged). */
static struct tls_gen *tls_gen_new(struct tls *t, const struct config *c, struct tls_certs *certs)
{
        struct tls_base_settings b = tls_base_settings(c);
        struct tls_gen *g = calloc(1, sizeof(*g)), *running = t->gen;

        if (!g) {
                tls_certs_free(certs);
                log_error("Failed to set up TLS: out of memory");
                return NULL;
        }
        g->certs = certs;
        g->strict_sni = c->tls_strict_sni;
        if (running && b.profile == t->base.profile && b.tickets == t->base.tickets &&
            b.session_cache == t->base.session_cache && b.lifetime_sec == t->base.lifetime_sec &&
            SSL_CTX_up_ref(running->ctx) == 1)
                g->ctx = running->ctx;
        else
                g->ctx = tls_base_ctx_new(t, &b);
        if (!g->ctx) {
                log_error("Failed to set up TLS: OpenSSL refused the profile's settings");
                return tls_gen_free(g);
        }
        t->base = b;
        return g;
}

/* Publishes <g> for new handshakes and retires the running generation. */
static void tls_gen_publish(struct tls *t, struct tls_gen *g)
{
        struct tls_gen *prev = t->gen;

        __atomic_store_n(&t->gen, g, __ATOMIC_RELEASE);
        if (prev)
                tls_retire(t, tls_gen_free_cb, prev);
}

/* The rotation timer follows [tls] ticket_rotate. */
static void tls_set_rotation(struct tls *t, const struct config *c)
{
        struct timeval tv = timeval_from_usec(c->tls_ticket_rotate_usec);

        if (t->rotate_usec == c->tls_ticket_rotate_usec)
                return;
        t->rotate_usec = c->tls_ticket_rotate_usec;
        (void)event_add(&t->rotate, &tv);
}

int tls_new(struct event_base *base, const struct config *c, struct tls **ret)
{
        struct tls_certs *certs = NULL;
        struct tls_gen *g;
        struct tls *t;
        int r;

        t = tls_alloc(sizeof(*t));
        if (!t)
                return -ENOMEM;
        (void)evtimer_assign(&t->rotate, base, tls_rotate_cb, t);
        r = tls_certs_load(c, "TLS certificate ", &certs);
        if (r < 0)
                goto fail;
        t->ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
        t->keys = calloc(1, sizeof(*t->keys));
        if (!t->ticket_cipher || !t->keys || tls_new_ticket_key(&t->keys->keys[0]) < 0 ||
            tls_new_ticket_key(&t->keys->keys[1]) < 0) {
                tls_certs_free(certs);
                r = log_error_errno(ENOMEM, "Failed to set up TLS: out of memory");
                goto fail;
        }
        g = tls_gen_new(t, c, certs);
        if (!g) {
                r = -EINVAL;
                goto fail;
        }
        tls_gen_publish(t, g);
        tls_set_rotation(t, c);
        *ret = t;
        return 0;
fail:
        tls_free(t);
        return r;
}

void tls_set_defer(struct tls *t, void (*defer)(void *userdata, void (*fn)(void *arg), void *arg),
                   void *userdata)
{
        t->defer = defer;
        t->defer_userdata = userdata;
}

int tls_reload(struct tls *t, const struct config *c)
{
        struct tls_certs *set = NULL;
        struct tls_gen *g;
        int r;

        if (c->n_certs == 0) {
                /* The TLS listeners stay until a restart: they keep the certificates they have. */
                t->reloads_failed++;
                log_error("TLS certificates not reloaded: [tls] certificate lists none; keeping the running ones");
                return -EINVAL;
        }
        r = tls_certs_load(c, "TLS certificates not reloaded: ", &set);
        if (r < 0) {
                t->reloads_failed++;
                log_error("TLS certificates not reloaded: keeping the running ones");
                return r;
        }
        g = tls_gen_new(t, c, set);
        if (!g) {
                t->reloads_failed++;
                log_error("TLS settings not reloaded: keeping the running ones");
                return -EINVAL;
        }
        tls_gen_publish(t, g);
        tls_set_rotation(t, c);
        log_info("TLS certificates reloaded: %zu certificates for %zu names", g->certs->n_certs,
                 g->certs->n_groups);
        return 0;
}

int tls_check(const struct config *c)
{
        struct tls_certs *set = NULL;
        int r = tls_certs_load(c, "TLS certificate ", &set);

        tls_certs_free(set);
        return r;
}

SSL *tls_accept(struct tls *t, int fd)
{
        SSL_CTX *base = tls_gen_get(t)->ctx;
        SSL *ssl = SSL_new(base);

        if (!ssl)
                goto fail;
        /* <base> lives as long as <ssl>, which holds a reference to it. */
        if (SSL_set_fd(ssl, fd) != 1 || SSL_set_ex_data(ssl, tls_ex_tls, t) != 1 ||
            SSL_set_ex_data(ssl, tls_ex_base, base) != 1) {
                SSL_free(ssl);
                goto fail;
        }
        SSL_set_accept_state(ssl);
        return ssl;
fail:
        ERR_clear_error();
        return NULL;
}

static enum tls_failure tls_classify(SSL *ssl, int err)
{
        unsigned long e;

        if (SSL_get_ex_data(ssl, tls_ex_no_cert))
                return TLS_FAIL_NO_CERT;
        if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
                return TLS_FAIL_ABORT;
        e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) != ERR_LIB_SSL)
                return TLS_FAIL_OTHER;
        switch (ERR_GET_REASON(e)) {
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_VERSION_TOO_LOW:
        case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
        case SSL_R_UNKNOWN_PROTOCOL:
        case SSL_R_WRONG_VERSION_NUMBER:
                return TLS_FAIL_PROTOCOL;
        case SSL_R_NO_SHARED_CIPHER:
        case SSL_R_NO_SHARED_GROUPS:
        case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
        case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
        case SSL_R_NO_CIPHERS_AVAILABLE:
        case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        case SSL_R_TLSV1_ALERT_INSUFFICIENT_SECURITY:
                return TLS_FAIL_CIPHER;
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_RECORD_LENGTH_MISMATCH:
                return TLS_FAIL_NOT_TLS;
        case SSL_R_UNEXPECTED_EOF_WHILE_READING:
                return TLS_FAIL_ABORT;
        default:
                return TLS_FAIL_OTHER;
        }
}

/* Adds one to a counter of a loop's struct tls_stats: written by that loop only, read by the main loop
 * (relaxed atomics, as COUNTER_ADD in backend.h). */
static void tls_count(uint64_t *counter)
{
        __atomic_store_n(counter, *counter + 1, __ATOMIC_RELAXED);
}

int tls_handshake(SSL *ssl, struct tls_stats *stats, enum tls_failure *ret_failure)
{
        int err = SSL_ERROR_SSL, r = tls_handshake_step(ssl, &err);

        if (r == TLS_DONE) {
                tls_count(&stats->handshakes);
                if (SSL_session_reused(ssl))
                        tls_count(&stats->resumed);
        }
        if (r >= 0)
                return r;
        *ret_failure = tls_classify(ssl, err);
        tls_count(&stats->failures[*ret_failure]);
        ERR_clear_error();
        return -EPROTO;
}

void tls_count_failure(struct tls_stats *stats, enum tls_failure f)
{
        tls_count(&stats->failures[(size_t)f < TLS_FAIL_MAX ? f : TLS_FAIL_OTHER]);
}

void tls_stats_add(struct tls_stats *ret, const struct tls_stats *s)
{
        ret->handshakes += __atomic_load_n(&s->handshakes, __ATOMIC_RELAXED);
        ret->resumed += __atomic_load_n(&s->resumed, __ATOMIC_RELAXED);
        for (size_t i = 0; i < TLS_FAIL_MAX; i++)
                ret->failures[i] += __atomic_load_n(&s->failures[i], __ATOMIC_RELAXED);
}

uint64_t tls_reloads_failed(const struct tls *t)
{
        return t->reloads_failed;
}

size_t tls_get_certs(const struct tls *t, struct tls_cert_info *out, size_t max)
{
        const struct tls_certs *set = t->gen->certs;

        for (size_t i = 0; i < MIN(set->n_certs, max); i++)
                out[i] = (struct tls_cert_info){
                        .file = set->certs[i].file,
                        .name = set->certs[i].names[0],
                        .key_type = set->certs[i].key_type,
                        .not_after = set->certs[i].not_after,
                        .is_default = set->certs[i].group == set->certs[0].group,
                };
        return set->n_certs;
}

struct tls *tls_free(struct tls *t)
{
        if (!t)
                return NULL;
        (void)event_del(&t->rotate);
        t->gen = tls_gen_free(t->gen);
        if (t->keys)
                tls_keys_free_cb(t->keys);
        EVP_CIPHER_free(t->ticket_cipher);
        free(t);
        return NULL;
}

/* ---- the client side ---- */

#define TLS_CLIENT_SESSIONS 64 /* backends whose last session is kept for resumption */

static int tls_client_new_session_cb(SSL *ssl, SSL_SESSION *session);

struct tls_client {
        SSL_CTX *ctx;                    /* shared by every clone; one reference owned here */
        char name[256];                  /* "" = check the IP address */
        struct {
                struct netaddr addr;
                SSL_SESSION *session;
        } sessions[TLS_CLIENT_SESSIONS];
        size_t next_session;             /* the slot a new backend takes (round robin) */
};

int tls_client_new(const struct config *c, struct tls_client **ret)
{
        struct tls_client *tc;
        char err[256];

        tc = tls_alloc(sizeof(*tc));
        if (!tc)
                return -ENOMEM;
        tc->ctx = SSL_CTX_new(TLS_client_method());
        if (!tc->ctx) {
                free(tc);
                return log_error_errno(ENOMEM, "Failed to set up TLS to the backends: out of memory");
        }
        if (tls_ctx_set_profile(tc->ctx, false) < 0 ||
            SSL_CTX_set_alpn_protos(tc->ctx, (const unsigned char *)"\x08http/1.1", 9) != 0) {
                tls_client_free(tc);
                return log_error_errno(EINVAL, "Failed to set up TLS to the backends");
        }
        if (SSL_CTX_load_verify_locations(tc->ctx, c->backend_ca, NULL) != 1) {
                log_error("[tls] backend_ca %s: no CA certificate could be read from it (%s)", c->backend_ca,
                          tls_error_text(err, sizeof(err)));
                tls_client_free(tc);
                return -EINVAL;
        }
        SSL_CTX_set_verify(tc->ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_mode(tc->ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_read_ahead(tc->ctx, 1);
        (void)SSL_CTX_set_session_cache_mode(tc->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(tc->ctx, tls_client_new_session_cb);
        (void)snprintf(tc->name, sizeof(tc->name), "%s", c->backend_name);
        *ret = tc;
        return 0;
}

struct tls_client *tls_client_clone(const struct tls_client *tc)
{
        struct tls_client *c = calloc(1, sizeof(*c));

        if (!c)
                return NULL;
        if (SSL_CTX_up_ref(tc->ctx) != 1) {
                free(c);
                return NULL;
        }
        c->ctx = tc->ctx;
        memcpy(c->name, tc->name, sizeof(c->name));
        return c;
}

static ssize_t tls_client_slot(const struct tls_client *tc, const struct netaddr *addr)
{
        for (size_t i = 0; i < TLS_CLIENT_SESSIONS; i++)
                if (tc->sessions[i].session && netaddr_equal(&tc->sessions[i].addr, addr))
                        return (ssize_t)i;
        return -1;
}

/* A session the server gave (with TLS 1.3, after the handshake): kept as the backend's latest. */
static int tls_client_new_session_cb(SSL *ssl, SSL_SESSION *session)
{
        struct tls_client *tc = SSL_get_ex_data(ssl, tls_ex_client);
        const struct netaddr *addr = SSL_get_ex_data(ssl, tls_ex_addr);
        ssize_t slot;

        if (!tc || !addr)
                return 0;
        slot = tls_client_slot(tc, addr);
        if (slot < 0) {
                slot = (ssize_t)tc->next_session;
                tc->next_session = (tc->next_session + 1) % TLS_CLIENT_SESSIONS;
        }
        SSL_SESSION_free(tc->sessions[slot].session);
        tc->sessions[slot].addr = *addr;
        tc->sessions[slot].session = session;
        return 1; /* the reference is ours */
}

SSL *tls_client_connect(struct tls_client *tc, int fd, const struct netaddr *addr)
{
        SSL *ssl = SSL_new(tc->ctx);
        char ip[NETADDR_STRLEN];
        ssize_t slot;

        if (!ssl)
                goto fail;
        if (SSL_set_fd(ssl, fd) != 1 || SSL_set_ex_data(ssl, tls_ex_client, tc) != 1 ||
            SSL_set_ex_data(ssl, tls_ex_addr, (void *)addr) != 1)
                goto fail;
        if (tc->name[0]) {
                if (SSL_set_tlsext_host_name(ssl, tc->name) != 1 || SSL_set1_host(ssl, tc->name) != 1)
                        goto fail;
        } else if (netaddr_format_host(addr, ip, sizeof(ip)) < 0 ||
                   X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip) != 1)
                goto fail;
        slot = tls_client_slot(tc, addr);
        if (slot >= 0)
                (void)SSL_set_session(ssl, tc->sessions[slot].session);
        SSL_set_connect_state(ssl);
        return ssl;
fail:
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
}

int tls_client_handshake(SSL *ssl, char *reason, size_t size)
{
        int err = SSL_ERROR_SSL, r = tls_handshake_step(ssl, &err);
        long verify;

        if (r >= 0)
                return r;
        verify = SSL_get_verify_result(ssl);
        if (verify != X509_V_OK)
                (void)snprintf(reason, size, "certificate not trusted: %s", X509_verify_cert_error_string(verify));
        else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
                (void)snprintf(reason, size, "connection closed during the handshake");
        else {
                char text[256];
                (void)snprintf(reason, size, "%s", tls_error_text(text, sizeof(text)));
        }
        ERR_clear_error();
        return -EPROTO;
}

struct tls_client *tls_client_free(struct tls_client *tc)
{
        if (!tc)
                return NULL;
        for (size_t i = 0; i < TLS_CLIENT_SESSIONS; i++)
                SSL_SESSION_free(tc->sessions[i].session);
        SSL_CTX_free(tc->ctx);
        free(tc);
        return NULL;
}

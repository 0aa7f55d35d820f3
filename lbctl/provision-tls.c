/* The pool's private CA and webd's certificates (provision-tls.h), with OpenSSL's API: no openssl command,
 * no temporary file holding a key.
 *
 * Files are written aside (".NAME.XXXXXX", created with their final mode, so a key is never readable by
 * others even for a moment) and renamed over the old name; the CA's key is created only when ca.pem and
 * ca.key are both missing, so a CA is never replaced behind the relays' backs. */
#include "lbctl/provision-tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/macro.h"
#include "common/parse.h"
#include "common/readfile.h"

#define PROVISION_TLS_PEM_MAX  16384
#define PROVISION_TLS_PATH_MAX 4096
#define PROVISION_TLS_SAN_MAX  (256 + 64)

DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free)

static int provision_tls_path(const char *dir, const char *name, char buf[static PROVISION_TLS_PATH_MAX])
{
        int n = snprintf(buf, PROVISION_TLS_PATH_MAX, "%s/%s", dir, name);

        return n < 0 || n >= PROVISION_TLS_PATH_MAX ? -ENAMETOOLONG : 0;
}

/* Writes <len> bytes of <data> to <dir>/<name> with <mode>, whole: a new file aside, then rename(). With
 * <keep_owner>, the new file gets the owner and group of the one it replaces (the installer hands the
 * relays' key to the user lbd runs as; a later run keeps it so). */
static int provision_tls_write_owned(const char *dir, const char *name, const char *data, size_t len, mode_t mode,
                                     bool keep_owner)
{
        struct stat st;
        char path[PROVISION_TLS_PATH_MAX], tmp[PROVISION_TLS_PATH_MAX];
        _cleanup_close_ int fd = -1;
        int r, n;

        r = provision_tls_path(dir, name, path);
        if (r < 0)
                return r;
        n = snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, name);
        if (n < 0 || (size_t)n >= sizeof(tmp))
                return -ENAMETOOLONG;
        fd = mkostemp(tmp, O_CLOEXEC); /* 0600 */
        if (fd < 0)
                return -errno;
        for (size_t off = 0; off < len;) {
                ssize_t w = write(fd, data + off, len - off);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0) {
                        r = -errno;
                        goto fail;
                }
                off += (size_t)w;
        }
        if (keep_owner && lstat(path, &st) == 0 && S_ISREG(st.st_mode) && fchown(fd, st.st_uid, st.st_gid) < 0) {
                r = -errno;
                goto fail;
        }
        if (fchmod(fd, mode) < 0 || fsync(fd) < 0 || rename(tmp, path) < 0) {
                r = -errno;
                goto fail;
        }
        return 0;
fail:
        (void)unlink(tmp);
        return r;
}

static int provision_tls_write(const char *dir, const char *name, const char *data, size_t len, mode_t mode)
{
        return provision_tls_write_owned(dir, name, data, len, mode, false);
}

/* The PEM text of <x> or <key> in a new string. */
static char *provision_tls_pem(X509 *x, EVP_PKEY *key)
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new(BIO_s_mem());
        char *data = NULL, *out;
        long len;

        if (!bio || (x && PEM_write_bio_X509(bio, x) != 1) ||
            (key && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1))
                return NULL;
        len = BIO_get_mem_data(bio, &data);
        if (len <= 0 || !data)
                return NULL;
        out = malloc((size_t)len + 1);
        if (!out)
                return NULL;
        memcpy(out, data, (size_t)len);
        out[len] = 0;
        OPENSSL_cleanse(data, (size_t)len);
        return out;
}

static int provision_tls_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
        X509V3_CTX ctx;
        X509_EXTENSION *ext;
        int ok;

        X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
        ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
        if (!ext)
                return -EINVAL;
        ok = X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        return ok == 1 ? 0 : -ENOMEM;
}

/* A new certificate for <key> named <cn>, valid <days> from an hour before <now> (clocks differ a little),
 * with a random 127-bit serial; issued by <issuer> (NULL: itself). */
static X509 *provision_tls_cert_new(EVP_PKEY *key, const char *cn, X509 *issuer, time_t now, long days)
{
        _cleanup_(X509_freep) X509 *x = X509_new();
        BIGNUM *serial = BN_new();
        bool ok;

        ok = x && serial && X509_set_version(x, 2) == 1 && BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
             BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) &&
             X509_time_adj_ex(X509_getm_notBefore(x), 0, -3600, &now) &&
             X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, &now) && X509_set_pubkey(x, key) == 1 &&
             X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8, (const unsigned char *)cn,
                                        -1, -1, 0) == 1 &&
             X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x)) == 1;
        BN_free(serial);
        return ok ? TAKE_PTR(x) : NULL;
}

void provision_tls_ca_clear(struct provision_tls_ca *ca)
{
        X509_free(ca->cert);
        EVP_PKEY_free(ca->key);
        *ca = (struct provision_tls_ca){0};
}

static int provision_tls_ca_make(const char *dir, time_t now, struct provision_tls_ca *ret)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = EVP_EC_gen("P-256");
        _cleanup_(X509_freep) X509 *x = NULL;
        _cleanup_free_ char *cert_pem = NULL, *key_pem = NULL;
        int r;

        if (!key)
                return -ENOMEM;
        x = provision_tls_cert_new(key, "lbd private CA for webd", NULL, now, PROVISION_TLS_CA_DAYS);
        if (!x || provision_tls_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
            provision_tls_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
            provision_tls_ext(x, x, NID_subject_key_identifier, "hash") < 0 || X509_sign(x, key, EVP_sha256()) <= 0)
                return -ENOMEM;
        cert_pem = provision_tls_pem(x, NULL);
        key_pem = provision_tls_pem(NULL, key);
        if (!cert_pem || !key_pem)
                return -ENOMEM;
        /* The key first: a ca.pem without its key would stop the next run. */
        r = provision_tls_write(dir, "ca.key", key_pem, strlen(key_pem), 0600);
        OPENSSL_cleanse(key_pem, strlen(key_pem));
        if (r >= 0)
                r = provision_tls_write(dir, "ca.pem", cert_pem, strlen(cert_pem), 0644);
        if (r < 0)
                return r;
        ret->cert = TAKE_PTR(x);
        ret->key = TAKE_PTR(key);
        ret->made = true;
        return 0;
}

int provision_tls_ca_load(const char *dir, time_t now, bool create, struct provision_tls_ca *ret, char *why,
                          size_t why_size)
{
        char cert_path[PROVISION_TLS_PATH_MAX], key_path[PROVISION_TLS_PATH_MAX];
        _cleanup_free_ char *cert_pem = NULL, *key_pem = NULL;
        _cleanup_(BIO_freep) BIO *cb = NULL, *kb = NULL;
        struct provision_tls_ca ca = {0};
        size_t cert_len = 0, key_len = 0;
        struct stat st;
        int rc, rk;

        if (provision_tls_path(dir, "ca.pem", cert_path) < 0 || provision_tls_path(dir, "ca.key", key_path) < 0) {
                (void)snprintf(why, why_size, "the directory's name is too long");
                return -ENAMETOOLONG;
        }
        if (create && mkdir(dir, 0755) < 0 && errno != EEXIST) {
                rc = -errno;
                (void)snprintf(why, why_size, "can't create %s: %s", dir, strerror(errno));
                return rc;
        }
        rc = readfile_bounded(cert_path, PROVISION_TLS_PEM_MAX, O_NOFOLLOW, &cert_pem, &cert_len);
        rk = readfile_bounded(key_path, PROVISION_TLS_PEM_MAX, O_NOFOLLOW, &key_pem, &key_len);
        if (rc == -ENOENT && rk == -ENOENT) {
                if (!create)
                        return -ENOENT;
                rc = provision_tls_ca_make(dir, now, ret);
                if (rc < 0)
                        (void)snprintf(why, why_size, "can't make a CA in %s: %s", dir, strerror(-rc));
                return rc;
        }
        if (rc == -ENOENT || rk == -ENOENT) {
                (void)snprintf(why, why_size, "%s is there without %s: restore it, or remove both for a new CA "
                               "(every relay then needs the new ca.pem)",
                               rc == -ENOENT ? key_path : cert_path, rc == -ENOENT ? cert_path : key_path);
                return -EEXIST;
        }
        if (rc < 0 || rk < 0) {
                (void)snprintf(why, why_size, "can't read %s: %s", rc < 0 ? cert_path : key_path,
                               strerror(-(rc < 0 ? rc : rk)));
                return rc < 0 ? rc : rk;
        }
        /* The key must stay the owner's alone. */
        if (stat(key_path, &st) == 0 && (st.st_mode & 0077)) {
                (void)snprintf(why, why_size, "%s is readable by others (mode %04o): chmod 0600 it",
                               key_path, (unsigned)(st.st_mode & 07777));
                OPENSSL_cleanse(key_pem, key_len);
                return -EPERM;
        }
        cb = BIO_new_mem_buf(cert_pem, (int)cert_len);
        kb = BIO_new_mem_buf(key_pem, (int)key_len);
        if (cb && kb) {
                ca.cert = PEM_read_bio_X509(cb, NULL, NULL, NULL);
                ca.key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
        }
        OPENSSL_cleanse(key_pem, key_len);
        ERR_clear_error();
        if (!ca.cert || !ca.key || X509_check_private_key(ca.cert, ca.key) != 1 || X509_check_ca(ca.cert) == 0) {
                ERR_clear_error();
                provision_tls_ca_clear(&ca);
                (void)snprintf(why, why_size, "%s and %s are not a CA certificate and its key", cert_path, key_path);
                return -EBADMSG;
        }
        *ret = ca;
        return 0;
}

int provision_tls_issue(const struct provision_tls_ca *ca, const char *name, const char *ip, time_t now,
                        char **ret_cert, char **ret_key)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;
        _cleanup_free_ char *cert_pem = NULL;
        unsigned char addr[16];
        char san[PROVISION_TLS_SAN_MAX];
        int n;

        if (!parse_dns_name_ok(name) ||
            (ip && inet_pton(AF_INET, ip, addr) != 1 && inet_pton(AF_INET6, ip, addr) != 1))
                return -EINVAL;
        n = ip ? snprintf(san, sizeof(san), "DNS:%s,IP:%s", name, ip) : snprintf(san, sizeof(san), "DNS:%s", name);
        if (n < 0 || (size_t)n >= sizeof(san))
                return -EINVAL;
        key = EVP_EC_gen("P-256");
        if (!key)
                return -ENOMEM;
        x = provision_tls_cert_new(key, name, ca->cert, now, PROVISION_TLS_WEB_DAYS);
        if (!x || provision_tls_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
            provision_tls_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") < 0 ||
            provision_tls_ext(x, ca->cert, NID_ext_key_usage, "serverAuth") < 0 ||
            provision_tls_ext(x, ca->cert, NID_subject_alt_name, san) < 0 ||
            provision_tls_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always") < 0 ||
            X509_sign(x, ca->key, EVP_sha256()) <= 0) {
                ERR_clear_error();
                return -ENOMEM;
        }
        cert_pem = provision_tls_pem(x, NULL);
        if (!cert_pem)
                return -ENOMEM;
        *ret_key = provision_tls_pem(NULL, key);
        if (!*ret_key)
                return -ENOMEM;
        *ret_cert = TAKE_PTR(cert_pem);
        return 0;
}

/* The days <dir>/<file> has left at <now> when it is a certificate of <ca> for <name> (in <*ret_x509> when
 * not NULL), as provision_tls_web_days_left(). */
static int provision_tls_days_left(const char *dir, const char *file, const struct provision_tls_ca *ca,
                                   const char *name, time_t now, long *ret_days, X509 **ret_x509)
{
        char path[PROVISION_TLS_PATH_MAX];
        _cleanup_free_ char *pem = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;
        ASN1_TIME *at = NULL;
        EVP_PKEY *ca_pub;
        size_t len = 0;
        int days = 0, secs = 0, r;
        bool ok;

        r = provision_tls_path(dir, file, path);
        if (r < 0)
                return r;
        r = readfile_bounded(path, PROVISION_TLS_PEM_MAX, O_NOFOLLOW, &pem, &len);
        if (r < 0)
                return r == -ENOENT ? -ENOENT : -EBADMSG;
        bio = BIO_new_mem_buf(pem, (int)len);
        if (bio)
                x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        ca_pub = X509_get0_pubkey(ca->cert);
        ok = x && ca_pub && X509_verify(x, ca_pub) == 1 && X509_check_host(x, name, 0, 0, NULL) == 1;
        if (ok) {
                at = ASN1_TIME_set(NULL, now);
                ok = at && ASN1_TIME_diff(&days, &secs, at, X509_get0_notAfter(x)) == 1;
                ASN1_TIME_free(at);
        }
        ERR_clear_error();
        if (!ok)
                return -EBADMSG;
        *ret_days = days - (secs < 0 ? 1 : 0);
        if (ret_x509)
                *ret_x509 = TAKE_PTR(x);
        return 0;
}

int provision_tls_web_days_left(const char *dir, const struct provision_tls_ca *ca, const char *name,
                                time_t now, long *ret_days)
{
        return provision_tls_days_left(dir, "web.pem", ca, name, now, ret_days, NULL);
}

int provision_tls_relay_days_left(const char *dir, const struct provision_tls_ca *ca, const char *name,
                                  time_t now, long *ret_days)
{
        char path[PROVISION_TLS_PATH_MAX];
        _cleanup_(X509_freep) X509 *x = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        _cleanup_free_ char *pem = NULL;
        size_t len = 0;
        struct stat st;
        bool ok;
        int r;

        r = provision_tls_days_left(dir, "relay.pem", ca, name, now, ret_days, &x);
        if (r < 0)
                return r;
        r = provision_tls_path(dir, "relay.key", path);
        if (r < 0)
                return r;
        r = readfile_bounded(path, PROVISION_TLS_PEM_MAX, O_NOFOLLOW, &pem, &len);
        if (r < 0)
                return r == -ENOENT ? -ENOENT : -EBADMSG;
        /* Readable by others, it may have leaked: a new key rather than the old one. */
        if (stat(path, &st) < 0 || (st.st_mode & 0077)) {
                OPENSSL_cleanse(pem, len);
                return -EPERM;
        }
        bio = BIO_new_mem_buf(pem, (int)len);
        if (bio)
                key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        OPENSSL_cleanse(pem, len);
        ok = key && X509_check_private_key(x, key) == 1;
        ERR_clear_error();
        return ok ? 0 : -EBADMSG;
}

int provision_tls_relay_save(const char *dir, const char *cert, const char *key)
{
        /* The key first: a relay.pem beside an old key is found not to match and issued again. */
        int r = provision_tls_write_owned(dir, "relay.key", key, strlen(key), 0600, true);

        return r < 0 ? r : provision_tls_write(dir, "relay.pem", cert, strlen(cert), 0644);
}

int provision_tls_web_save(const char *dir, const char *cert)
{
        return provision_tls_write(dir, "web.pem", cert, strlen(cert), 0644);
}

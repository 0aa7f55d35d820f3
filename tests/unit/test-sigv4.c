/* Unit tests for aws/sigv4.c: every case folder of the AWS SigV4 test suite must come out exactly (the
 * canonical request, the string to sign, the signature, and the Authorization header of the signed
 * request), plus the corners the suite doesn't cover: an unsigned session token, the query encoding,
 * malformed input.
 *
 * The suite is read from the directory in $SIGV4_SUITE, or else from ../shared/aws-sigv4-suite next to the
 * repository (found by walking up from the working directory and from this program's path to the
 * directory holding aws/sigv4.c). Each folder holds context.json and request.txt (see the suite's
 * README); further folders dropped in are picked up. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "aws/sigv4.h"
#include "common/cjson.h"
#include "common/macro.h"

#define TEST_FILE_MAX (1024 * 1024)

/* Reads <dir>/<name> whole. Returns NULL when it doesn't exist. */
static char *read_file(const char *dir, const char *name, size_t *ret_len)
{
        char path[PATH_MAX];
        FILE *f;
        char *buf;
        size_t n;

        if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
                return NULL;
        f = fopen(path, "re");
        if (!f)
                return NULL;
        buf = malloc(TEST_FILE_MAX + 1);
        assert_non_null(buf);
        n = fread(buf, 1, TEST_FILE_MAX, f);
        assert_int_equal(ferror(f), 0);
        (void)fclose(f);
        buf[n] = 0;
        if (ret_len)
                *ret_len = n;
        return buf;
}

/* The expected strings end without a line end; tolerate one in a file edited by hand. */
static void strip_final_newline(char *s)
{
        size_t n = strlen(s);

        if (n > 0 && s[n - 1] == '\n')
                s[--n] = 0;
        if (n > 0 && s[n - 1] == '\r')
                s[--n] = 0;
}

static bool is_dir(const char *path)
{
        struct stat st;

        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Walks up from <start> to the directory holding aws/sigv4.c and writes <that>/../shared/aws-sigv4-suite
 * into <out> when it exists. */
static bool find_suite_from(const char *start, char *out, size_t size)
{
        char dir[PATH_MAX], probe[PATH_MAX + 64];

        if (!realpath(start, dir))
                return false;
        for (;;) {
                char *slash;

                if (snprintf(probe, sizeof(probe), "%s/aws/sigv4.c", dir) < (int)sizeof(probe) &&
                    access(probe, F_OK) == 0) {
                        if (snprintf(out, size, "%s/../shared/aws-sigv4-suite", dir) < (int)size &&
                            is_dir(out))
                                return true;
                        return false;
                }
                slash = strrchr(dir, '/');
                if (!slash || slash == dir)
                        return false;
                *slash = 0;
        }
}

static void find_suite(char *out, size_t size)
{
        const char *env = getenv("SIGV4_SUITE");
        char exe[PATH_MAX];
        ssize_t n;

        if (env && *env) {
                assert_true(snprintf(out, size, "%s", env) < (int)size);
                return;
        }
        if (find_suite_from(".", out, size))
                return;
        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
                char *slash;

                exe[n] = 0;
                slash = strrchr(exe, '/');
                if (slash)
                        *slash = 0;
                if (find_suite_from(exe, out, size))
                        return;
        }
        fail_msg("SigV4 suite not found: set SIGV4_SUITE to the folder of the case folders");
}

struct test_request {
        char method[32];
        char *target; /* path and query, owned */
        char *query;  /* points into target, or NULL */
        struct sigv4_header headers[SIGV4_MAX_HEADERS];
        size_t n_headers;
        const char *body;
        size_t body_len;
        char *text; /* the file; names and values point into it */
};

/* Parses request.txt: request line, "Name:value" lines, an empty line, the body. Lines end with LF or
 * CRLF; a line starting with a blank continues the previous header's value. */
static void parse_request(char *text, size_t len, struct test_request *req)
{
        char *p = text, *end = text + len, *line_end, *sp, *last_sp;

        memset(req, 0, sizeof(*req));
        req->text = text;

        line_end = memchr(p, '\n', (size_t)(end - p));
        assert_non_null(line_end);
        *line_end = 0;
        if (line_end > p && line_end[-1] == '\r')
                line_end[-1] = 0;
        sp = strchr(p, ' ');
        last_sp = strrchr(p, ' ');
        assert_non_null(sp);
        assert_true(last_sp > sp);
        assert_true((size_t)(sp - p) < sizeof(req->method));
        memcpy(req->method, p, (size_t)(sp - p));
        req->target = strndup(sp + 1, (size_t)(last_sp - sp - 1));
        assert_non_null(req->target);
        req->query = strchr(req->target, '?');
        if (req->query)
                *req->query++ = 0;
        p = line_end + 1;

        while (p < end) {
                char *colon;

                line_end = memchr(p, '\n', (size_t)(end - p));
                if (!line_end)
                        line_end = end;
                *line_end = 0;
                if (line_end > p && line_end[-1] == '\r')
                        line_end[-1] = 0;
                if (*p == 0) {
                        p = line_end < end ? line_end + 1 : end;
                        req->body = p;
                        req->body_len = (size_t)(end - p);
                        return;
                }
                if (*p == ' ' || *p == '\t') {
                        /* A folded line: joined to the previous value with one space. */
                        size_t prev, add;
                        char *joined;

                        assert_true(req->n_headers > 0);
                        prev = strlen(req->headers[req->n_headers - 1].value);
                        add = strlen(p);
                        joined = malloc(prev + add + 2);
                        assert_non_null(joined);
                        memcpy(joined, req->headers[req->n_headers - 1].value, prev);
                        joined[prev] = ' ';
                        memcpy(joined + prev + 1, p, add + 1);
                        req->headers[req->n_headers - 1].value = joined; /* leaked: tests only */
                } else {
                        colon = strchr(p, ':');
                        assert_non_null(colon);
                        assert_true(req->n_headers < SIGV4_MAX_HEADERS);
                        *colon = 0;
                        req->headers[req->n_headers].name = p;
                        req->headers[req->n_headers].value = colon + 1;
                        req->n_headers++;
                }
                p = line_end < end ? line_end + 1 : end;
        }
}

static time_t parse_timestamp(const char *s)
{
        struct tm tm = {0};
        const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);

        assert_non_null(end);
        assert_int_equal(*end, 0);
        return timegm(&tm);
}

static const char *json_string(const cJSON *obj, const char *key)
{
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

        return cJSON_IsString(item) ? item->valuestring : NULL;
}

static bool json_bool(const cJSON *obj, const char *key, bool def)
{
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

        return cJSON_IsBool(item) ? cJSON_IsTrue(item) : def;
}

/* Compares one string; prints both on a mismatch. Returns true when equal. */
static bool check_string(const char *name, const char *what, const char *expected, const char *got)
{
        if (strcmp(expected, got) == 0)
                return true;
        print_message("FAIL %s: %s differs\n--- expected\n%s\n--- got\n%s\n---\n", name, what, expected,
                      got);
        return false;
}

/* The Authorization value in header-signed-request.txt. */
static char *expected_authorization(char *signed_request)
{
        char *p = signed_request;

        while (p && *p) {
                char *nl = strchr(p, '\n');

                if (nl)
                        *nl = 0;
                if (strncasecmp(p, "Authorization:", 14) == 0) {
                        char *v = p + 14;
                        size_t n;

                        while (*v == ' ')
                                v++;
                        n = strlen(v);
                        if (n > 0 && v[n - 1] == '\r')
                                v[n - 1] = 0;
                        return v;
                }
                p = nl ? nl + 1 : NULL;
        }
        return NULL;
}

/* Runs one case folder. Returns true when it passes. */
static bool run_case(const char *dir, const char *name)
{
        _cleanup_free_ char *context_text = NULL, *request_text = NULL, *exp_creq = NULL, *exp_sts = NULL,
                            *exp_sig = NULL, *exp_signed = NULL;
        _cleanup_(cJSON_Deletep) cJSON *context = NULL;
        _cleanup_(sigv4_signature_freep) struct sigv4_signature *sig = NULL;
        struct test_request req;
        struct sigv4_credentials cred;
        struct sigv4_params params;
        struct sigv4_request sreq;
        const cJSON *creds;
        const char *auth;
        size_t request_len = 0;
        bool ok = true;
        int r;

        context_text = read_file(dir, "context.json", NULL);
        request_text = read_file(dir, "request.txt", &request_len);
        exp_creq = read_file(dir, "header-canonical-request.txt", NULL);
        exp_sts = read_file(dir, "header-string-to-sign.txt", NULL);
        exp_sig = read_file(dir, "header-signature.txt", NULL);
        exp_signed = read_file(dir, "header-signed-request.txt", NULL);
        if (!context_text || !request_text || !exp_creq || !exp_sts || !exp_sig) {
                print_message("FAIL %s: missing context.json, request.txt or header-*.txt\n", name);
                return false;
        }
        strip_final_newline(exp_creq);
        strip_final_newline(exp_sts);
        strip_final_newline(exp_sig);

        context = cJSON_Parse(context_text);
        if (!context) {
                print_message("FAIL %s: context.json is not JSON\n", name);
                return false;
        }
        creds = cJSON_GetObjectItemCaseSensitive(context, "credentials");
        cred = (struct sigv4_credentials){
                .access_key_id = json_string(creds, "access_key_id"),
                .secret_access_key = json_string(creds, "secret_access_key"),
                .session_token = json_string(creds, "token"),
        };
        params = (struct sigv4_params){
                .region = json_string(context, "region"),
                .service = json_string(context, "service"),
                .when = parse_timestamp(json_string(context, "timestamp")),
                .normalize = json_bool(context, "normalize", true),
                .sign_body = json_bool(context, "sign_body", false),
                .omit_session_token = json_bool(context, "omit_session_token", false),
        };

        parse_request(request_text, request_len, &req);
        sreq = (struct sigv4_request){
                .method = req.method,
                .path = req.target,
                .query = req.query,
                .headers = req.headers,
                .n_headers = req.n_headers,
                .body = req.body,
                .body_len = req.body_len,
        };
        r = sigv4_sign(&sreq, &cred, &params, &sig);
        if (r < 0) {
                print_message("FAIL %s: sigv4_sign() returned %d\n", name, r);
                free(req.target);
                return false;
        }
        free(req.target);

        ok &= check_string(name, "canonical request", exp_creq, sig->canonical_request);
        ok &= check_string(name, "string to sign", exp_sts, sig->string_to_sign);
        ok &= check_string(name, "signature", exp_sig, sig->signature);
        auth = exp_signed ? expected_authorization(exp_signed) : NULL;
        if (auth)
                ok &= check_string(name, "Authorization header", auth, sig->authorization);
        if (ok)
                print_message("ok   %s\n", name);
        return ok;
}

static int case_filter(const struct dirent *d)
{
        return d->d_name[0] != '.';
}

static void test_suite(void **state)
{
        char suite[PATH_MAX];
        struct dirent **list = NULL;
        unsigned cases = 0, failed = 0;
        int n;

        find_suite(suite, sizeof(suite));
        print_message("suite: %s\n", suite);
        n = scandir(suite, &list, case_filter, alphasort);
        assert_true(n >= 0);
        for (int i = 0; i < n; i++) {
                char dir[PATH_MAX + 256], probe[PATH_MAX + 300];

                if (snprintf(dir, sizeof(dir), "%s/%s", suite, list[i]->d_name) < (int)sizeof(dir) &&
                    snprintf(probe, sizeof(probe), "%s/context.json", dir) < (int)sizeof(probe) &&
                    is_dir(dir) && access(probe, F_OK) == 0) {
                        cases++;
                        if (!run_case(dir, list[i]->d_name))
                                failed++;
                }
                free(list[i]);
        }
        free(list);
        print_message("%u cases, %u failed\n", cases, failed);
        assert_true(cases > 0);
        assert_int_equal(failed, 0);
}

static const struct sigv4_credentials example_cred = {
        .access_key_id = "AKIDEXAMPLE",
        .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
};

static struct sigv4_params example_params(void)
{
        return (struct sigv4_params){
                .region = "us-east-1",
                .service = "ec2",
                .when = 1440938160, /* 2015-08-30T12:36:00Z */
                .normalize = true,
        };
}

static void test_session_token_omitted(void **state)
{
        _cleanup_(sigv4_signature_freep) struct sigv4_signature *signed_token = NULL, *unsigned_token = NULL,
                                                                *no_token = NULL;
        const struct sigv4_header headers[] = {{"Host", "example.amazonaws.com"}};
        const struct sigv4_request req = {.method = "GET", .path = "/", .headers = headers, .n_headers = 1};
        struct sigv4_credentials cred = example_cred;
        struct sigv4_params params = example_params();

        assert_int_equal(sigv4_sign(&req, &cred, &params, &no_token), 0);
        cred.session_token = "TOKEN";
        assert_int_equal(sigv4_sign(&req, &cred, &params, &signed_token), 0);
        params.omit_session_token = true;
        assert_int_equal(sigv4_sign(&req, &cred, &params, &unsigned_token), 0);

        assert_non_null(strstr(signed_token->canonical_request, "x-amz-security-token:TOKEN\n"));
        assert_non_null(
                strstr(signed_token->authorization, "SignedHeaders=host;x-amz-date;x-amz-security-token,"));
        /* Omitted: signed exactly as without a token. */
        assert_string_equal(unsigned_token->canonical_request, no_token->canonical_request);
        assert_string_equal(unsigned_token->signature, no_token->signature);
        assert_string_equal(no_token->amz_date, "20150830T123600Z");
}

static void test_query_and_path(void **state)
{
        _cleanup_(sigv4_signature_freep) struct sigv4_signature *s = NULL, *raw = NULL;
        const struct sigv4_header headers[] = {{"Host", "h"}, {"X-Multi", "  a   b \t c  "}};
        const struct sigv4_request req = {
                .method = "GET",
                .path = "/a/./b/../c//d/..",
                .query = "b=2&a=1&&a=0&c=%7e+x&e&d=%zz&f=%2F",
                .headers = headers,
                .n_headers = 2,
        };
        struct sigv4_params params = example_params();

        assert_int_equal(sigv4_sign(&req, &example_cred, &params, &s), 0);
        assert_string_equal(s->canonical_request,
                            "GET\n"
                            "/a/c/\n"
                            "a=0&a=1&b=2&c=~%2Bx&d=%25zz&e=&f=%2F\n"
                            "host:h\n"
                            "x-amz-date:20150830T123600Z\n"
                            "x-multi:a b c\n"
                            "\n"
                            "host;x-amz-date;x-multi\n"
                            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

        params.normalize = false;
        assert_int_equal(sigv4_sign(&req, &example_cred, &params, &raw), 0);
        assert_true(strncmp(raw->canonical_request, "GET\n/a/./b/../c//d/..\n", 22) == 0);
}

static void test_body_and_sign_body(void **state)
{
        _cleanup_(sigv4_signature_freep) struct sigv4_signature *s = NULL;
        const char body[] = "Action=DescribeInstances&Version=2016-11-15";
        const struct sigv4_header headers[] = {
                {"Host", "127.0.0.1:5000"},
                {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
        };
        const struct sigv4_request req = {
                .method = "POST",
                .path = "/",
                .headers = headers,
                .n_headers = 2,
                .body = body,
                .body_len = sizeof(body) - 1,
        };
        struct sigv4_params params = example_params();

        params.sign_body = true;
        assert_int_equal(sigv4_sign(&req, &example_cred, &params, &s), 0);
        assert_non_null(strstr(s->canonical_request, "\nx-amz-content-sha256:"));
        assert_non_null(strstr(s->canonical_request, s->content_sha256));
        assert_non_null(strstr(s->authorization,
                               "Credential=AKIDEXAMPLE/20150830/us-east-1/ec2/aws4_request, "
                               "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, "
                               "Signature="));
        assert_int_equal(strlen(s->signature), SIGV4_HEX_LEN);
}

static void test_rejects(void **state)
{
        struct sigv4_signature *s = NULL;
        struct sigv4_header headers[SIGV4_MAX_HEADERS] = {{"Host", "h"}};
        struct sigv4_request req = {.method = "GET", .path = "/", .headers = headers, .n_headers = 1};
        struct sigv4_credentials cred = example_cred;
        struct sigv4_params params = example_params();

        headers[0] = (struct sigv4_header){"Bad Name", "v"};
        assert_int_equal(sigv4_sign(&req, &cred, &params, &s), -EINVAL);
        headers[0] = (struct sigv4_header){"Name", "line\r\nInjected: x"};
        assert_int_equal(sigv4_sign(&req, &cred, &params, &s), -EINVAL);
        headers[0] = (struct sigv4_header){"Host", "h"};

        req.method = "GE T";
        assert_int_equal(sigv4_sign(&req, &cred, &params, &s), -EINVAL);
        req.method = "GET";

        cred.access_key_id = "";
        assert_int_equal(sigv4_sign(&req, &cred, &params, &s), -EINVAL);
        cred = example_cred;
        params.region = "us/east";
        assert_int_equal(sigv4_sign(&req, &cred, &params, &s), -EINVAL);
        params = example_params();

        for (size_t i = 0; i < SIGV4_MAX_HEADERS; i++)
                headers[i] = (struct sigv4_header){"X-H", "v"};
        req.n_headers = SIGV4_MAX_HEADERS;
        assert_int_equal(sigv4_sign(&req, &cred, &params, &s), -E2BIG);
        assert_null(s);
}

static void test_uri_encode(void **state)
{
        struct evbuffer *b = evbuffer_new();
        char out[64];
        size_t n;

        assert_non_null(b);
        assert_int_equal(sigv4_uri_encode(b, "a b/~+=\xc3\xa9", 9, false, 100), 0);
        n = evbuffer_get_length(b);
        assert_true(n < sizeof(out));
        assert_int_equal(evbuffer_remove(b, out, n), (int)n);
        out[n] = 0;
        assert_string_equal(out, "a%20b%2F~%2B%3D%C3%A9");
        assert_int_equal(sigv4_uri_encode(b, "a/b", 3, true, 100), 0);
        assert_int_equal(evbuffer_get_length(b), 3);
        assert_int_equal(sigv4_uri_encode(b, "xxxx", 4, true, 5), -E2BIG);
        evbuffer_free(b);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_suite),          cmocka_unit_test(test_session_token_omitted),
                cmocka_unit_test(test_query_and_path), cmocka_unit_test(test_body_and_sign_body),
                cmocka_unit_test(test_rejects),        cmocka_unit_test(test_uri_encode),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

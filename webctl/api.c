/* webctl's HTTP client: one libcurl easy handle reused for every request of the invocation (so a second
 * request reuses the connection), with the limits a command line should have: 5 s to connect, 30 s for
 * the whole exchange, no redirects, http/https only, and at most API_RESPONSE_MAX bytes of response kept
 * in memory. The bearer token is held in one header string that is wiped when the client is freed. */
#include "webctl/api.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "lbd-version.h"

#define API_AUTH_MAX (2048 + 32)

struct api {
        CURL *curl;
        char *url;
        char auth[API_AUTH_MAX]; /* "Authorization: Bearer ...", or empty */
        char error[CURL_ERROR_SIZE];
};

struct api_buffer {
        char *data;
        size_t len, size;
        bool overflow;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct curl_slist *, curl_slist_free_all)

int api_new(const char *url, struct api **ret)
{
        struct api *a;

        if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
                return -EINVAL;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->url = strdup(url);
        a->curl = curl_easy_init();
        if (!a->url || !a->curl) {
                api_free(a);
                return -ENOMEM;
        }
        *ret = a;
        return 0;
}

struct api *api_free(struct api *a)
{
        if (a) {
                if (a->curl)
                        curl_easy_cleanup(a->curl);
                explicit_bzero(a->auth, sizeof(a->auth));
                free(a->url);
                free(a);
        }
        return NULL;
}

int api_set_token(struct api *a, const char *token)
{
        int n;

        if (!token || strpbrk(token, "\r\n"))
                return -EINVAL;
        n = snprintf(a->auth, sizeof(a->auth), "Authorization: Bearer %s", token);
        if (n < 0 || (size_t)n >= sizeof(a->auth)) {
                explicit_bzero(a->auth, sizeof(a->auth));
                return -EINVAL;
        }
        return 0;
}

static size_t api_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        struct api_buffer *b = userdata;
        size_t n = nmemb; /* size is always 1 */

        if (size != 1 || n > API_RESPONSE_MAX - b->len) {
                b->overflow = true;
                return 0; /* aborts the transfer */
        }
        if (b->len + n + 1 > b->size) {
                size_t want = MAX(b->size * 2, b->len + n + 1);
                char *p;

                want = MIN(want, (size_t)API_RESPONSE_MAX + 1);
                p = realloc(b->data, want);
                if (!p)
                        return 0;
                b->data = p;
                b->size = want;
        }
        memcpy(b->data + b->len, ptr, n);
        b->len += n;
        b->data[b->len] = '\0';
        return n;
}

static int api_errno(CURLcode code)
{
        switch (code) {
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        default:
                return -EIO;
        }
}

/* The NUL-terminated <data> of <len> bytes parsed as one JSON text, or NULL: nothing may follow it but
 * white space (cJSON alone would take "503 Service Unavailable" for the number 503), and it may hold no
 * NUL byte. */
static cJSON *api_parse_json(const char *data, size_t len)
{
        if (len == 0 || memchr(data, '\0', len))
                return NULL;
        /* With the terminating NUL counted, cJSON checks that the text ends there. */
        return cJSON_ParseWithLengthOpts(data, len + 1, NULL, true);
}

int api_request(struct api *a, const char *method, const char *path, const char *body,
                struct api_response *ret)
{
        static const char *const fixed[] = { "Accept: application/json", "Expect:" };
        _cleanup_(curl_slist_free_allp) struct curl_slist *headers = NULL;
        struct api_buffer b = { 0 };
        struct curl_slist *h;
        _cleanup_free_ char *url = NULL;
        CURLcode code;
        long status = 0;
        size_t n;

        n = strlen(a->url) + strlen(path) + 1;
        url = malloc(n);
        if (!url)
                return -ENOMEM;
        (void)snprintf(url, n, "%s%s", a->url, path);

        /* Accept, no "Expect: 100-continue" round trip, and the token and body type when there are. */
        for (size_t i = 0; i < ELEMENTSOF(fixed); i++) {
                h = curl_slist_append(headers, fixed[i]);
                if (!h)
                        return -ENOMEM;
                headers = h;
        }
        if (body) {
                h = curl_slist_append(headers, "Content-Type: application/json");
                if (!h)
                        return -ENOMEM;
                headers = h;
        }
        if (a->auth[0]) {
                h = curl_slist_append(headers, a->auth);
                if (!h)
                        return -ENOMEM;
                headers = h;
        }

        curl_easy_reset(a->curl);
        a->error[0] = '\0';
        if (curl_easy_setopt(a->curl, CURLOPT_URL, url) != CURLE_OK ||
            curl_easy_setopt(a->curl, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
            curl_easy_setopt(a->curl, CURLOPT_ERRORBUFFER, a->error) != CURLE_OK ||
            curl_easy_setopt(a->curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
            curl_easy_setopt(a->curl, CURLOPT_CONNECTTIMEOUT_MS, API_CONNECT_TIMEOUT_MS) != CURLE_OK ||
            curl_easy_setopt(a->curl, CURLOPT_TIMEOUT_MS, API_TOTAL_TIMEOUT_MS) != CURLE_OK ||
            curl_easy_setopt(a->curl, CURLOPT_USERAGENT, "webctl/" PACKAGE_VERSION) != CURLE_OK ||
            curl_easy_setopt(a->curl, CURLOPT_HTTPHEADER, headers) != CURLE_OK ||
            curl_easy_setopt(a->curl, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK ||
            curl_easy_setopt(a->curl, CURLOPT_WRITEFUNCTION, api_write) != CURLE_OK ||
            curl_easy_setopt(a->curl, CURLOPT_WRITEDATA, &b) != CURLE_OK)
                return -EIO;
        if (body && (curl_easy_setopt(a->curl, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
                     curl_easy_setopt(a->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body)) !=
                             CURLE_OK))
                return -EIO;

        code = curl_easy_perform(a->curl);
        /* The handle keeps pointers to the headers and body: drop them before they go away. */
        (void)curl_easy_setopt(a->curl, CURLOPT_HTTPHEADER, NULL);
        (void)curl_easy_setopt(a->curl, CURLOPT_POSTFIELDS, NULL);
        if (code != CURLE_OK) {
                int r = b.overflow ? -EMSGSIZE : api_errno(code);

                if (!a->error[0])
                        (void)snprintf(a->error, sizeof(a->error), "%s", curl_easy_strerror(code));
                if (b.overflow)
                        (void)snprintf(a->error, sizeof(a->error), "response larger than %u bytes",
                                       API_RESPONSE_MAX);
                free(b.data);
                return r;
        }
        (void)curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &status);

        if (!b.data) {
                b.data = strdup("");
                if (!b.data)
                        return -ENOMEM;
        }
        *ret = (struct api_response){
                .status = status,
                .body = b.data,
                .len = b.len,
                .json = api_parse_json(b.data, b.len),
        };
        return 0;
}

void api_response_done(struct api_response *r)
{
        if (r) {
                cJSON_Delete(r->json);
                free(r->body);
                *r = (struct api_response){ 0 };
        }
}

const char *api_error(const struct api *a)
{
        return a->error[0] ? a->error : "unknown error";
}

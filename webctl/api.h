/* HTTP requests to webd's JSON API through libcurl's easy interface (a command line makes one request at a
 * time, so blocking is what we want): timeouts, a bounded response, the bearer token, and the JSON body
 * parsed. */
#pragma once

#include <cjson/cJSON.h>
#include <stddef.h>

/* Responses larger than this are refused (-EMSGSIZE). */
#define API_RESPONSE_MAX (8u * 1024 * 1024)
#define API_CONNECT_TIMEOUT_MS 5000L
#define API_TOTAL_TIMEOUT_MS   30000L

struct api;

struct api_response {
        long status;  /* the HTTP status */
        char *body;   /* NUL-terminated, possibly empty */
        size_t len;
        cJSON *json;  /* the body parsed, or NULL if it is empty or not JSON */
};

/* Makes a client for the server at <url> ("http://host:port" or https, with no trailing '/'). Returns 0,
 * -EINVAL (not an http or https URL), or -ENOMEM. */
int api_new(const char *url, struct api **ret);
/* Frees <a>, wiping the token it held. Returns NULL. */
struct api *api_free(struct api *a);

/* Sends "Authorization: Bearer <token>" from now on (copied). Returns 0, -EINVAL or -ENOMEM. */
int api_set_token(struct api *a, const char *token);

/* Sends <method> <path> (e.g. "/tasks?limit=5") with <body> (JSON text, or NULL for none) and waits for
 * the answer. Returns 0 and fills *<ret> for any HTTP status, or -ECONNREFUSED (couldn't connect),
 * -EHOSTUNREACH (couldn't resolve), -ETIMEDOUT, -EMSGSIZE (response over API_RESPONSE_MAX), -ENOMEM, -EIO
 * (any other transfer failure); api_error() then says what happened. */
int api_request(struct api *a, const char *method, const char *path, const char *body,
                struct api_response *ret);
/* Frees what a response holds. */
void api_response_done(struct api_response *r);

/* The last transfer error in words ("Failed to connect to 127.0.0.1 port 8080: Connection refused"). */
const char *api_error(const struct api *a);

/* HTTP client transfers on the event loop: libcurl's multi interface driven by libevent.
 *
 * One struct curlev per event loop runs any number of transfers at once (up to CURLEV_MAX_TRANSFERS); it
 * keeps connections alive between transfers to the same host. Every transfer is bounded: response size,
 * connect timeout and total timeout. Nothing blocks: name resolution runs in curl's resolver thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macro.h"

#define CURLEV_MAX_TRANSFERS        64
#define CURLEV_DEFAULT_MAX_RESPONSE (4u * 1024 * 1024)
#define CURLEV_DEFAULT_CONNECT_USEC (3 * USEC_PER_SEC)
#define CURLEV_DEFAULT_TIMEOUT_USEC (20 * USEC_PER_SEC)
#define CURLEV_ERROR_MAX            256

struct event_base;
struct curlev;
struct curlev_transfer;

struct curlev_request {
        const char *method;         /* "GET", "POST", "PUT" */
        const char *url;            /* http:// or https:// only */
        const char *const *headers; /* "Name: value" lines */
        size_t n_headers;
        const void *body; /* copied; sent for any method when body_len > 0, and always for
                           * POST and PUT (Content-Length: 0 when empty) */
        size_t body_len;
        size_t max_response;           /* body bytes accepted; 0 = CURLEV_DEFAULT_MAX_RESPONSE */
        uint64_t connect_timeout_usec; /* 0 = CURLEV_DEFAULT_CONNECT_USEC */
        uint64_t timeout_usec;         /* whole transfer; 0 = CURLEV_DEFAULT_TIMEOUT_USEC */
        bool no_proxy;                 /* ignore http_proxy & co. (the instance metadata service) */
};

struct curlev_response {
        long status;      /* HTTP status, 0 when none arrived */
        const char *body; /* NUL-terminated (the NUL is not counted in body_len) */
        size_t body_len;
        const char *error; /* what went wrong, for logs, when r < 0; "" otherwise */
};

/* Reports the end of a transfer. <r> is 0 when a response arrived (whatever its status), or -ETIMEDOUT,
 * -ECONNREFUSED, -EHOSTUNREACH (name or route not found), -ECONNRESET (connection lost, empty reply),
 * -EFBIG (response larger than max_response), -EPROTO (TLS or HTTP error), -EIO. <resp> and what it
 * points to are valid during the call only. The transfer is freed when the callback returns; the callback
 * may start and cancel other transfers, and may free the curlev. */
typedef void (*curlev_done_cb)(int r, const struct curlev_response *resp, void *userdata);

/* Returns 0 and a new curlev in <ret>, or -ENOMEM / -EIO. */
int curlev_new(struct event_base *base, struct curlev **ret);
/* Cancels every transfer (their callbacks are not called) and frees <c>. NULL allowed. Returns NULL. */
struct curlev *curlev_free(struct curlev *c);

/* Starts a transfer. <cb> is called exactly once, from the event loop, never from inside this call, unless
 * the transfer is cancelled first. <ret> (may be NULL) receives a handle for curlev_cancel(), valid until
 * the callback runs. Returns 0, -EINVAL (bad method or URL), -EBUSY (CURLEV_MAX_TRANSFERS running), or
 * -ENOMEM. */
int curlev_start(struct curlev *c, const struct curlev_request *req, curlev_done_cb cb, void *userdata,
                 struct curlev_transfer **ret);

/* Stops a transfer without calling its callback. NULL allowed. Returns NULL. */
struct curlev_transfer *curlev_cancel(struct curlev_transfer *t);

/* Transfers running now (for tests and metrics). */
size_t curlev_running(const struct curlev *c);

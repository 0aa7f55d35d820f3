/* The other LB hosts' own word on the lease: a read-only listener and the questions to the other hosts.
 *
 * The listener ([lease] listen): libevent's evhttp on lbd's loop, apart from the admin API (which stays
 * on loopback, since it drains and reloads without authentication). It answers GET (and HEAD) /lease with
 * this host's lease object as /status carries it (admin_lease_json()): who leads, the epoch, the expiry,
 * the store; nothing else (404; 405 for other methods), no action and no secret. Bounded: 8 KiB of
 * headers, no body, a connection silent for 5 s closed; open it to the other LB hosts only (the security
 * group).
 *
 * The questions ([lease] peers): every [lease] renew, one GET /lease to each peer through curlev (curl's
 * multi interface on this loop, so nothing blocks), connect and whole transfer within [lease] timeout,
 * PEER_MAX_RESPONSE bytes at most; a peer still answering is not asked again. Its answer is untrusted:
 * only a JSON object whose fields have the expected types is taken (the name checked like [lease] name);
 * anything else is a failure, kept with its reason for /status. What a peer says never decides anything
 * here: the lease in the store alone does. */
#include "lbd/peer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws/curlev.h"
#include "common/cjson.h"
#include "common/log.h"
#include "common/macro.h"
#include "lbd/admin.h"
#include "lbd/config.h"
#include "lbd/lbd.h"

#define PEER_MAX_HEADERS_SIZE 8192
#define PEER_TIMEOUT_SEC      5
#define PEER_BACKLOG          16

struct peer {
        struct netaddr addr;
        char url[NETADDR_STRLEN + 16];
        struct curlev_transfer *transfer; /* in flight, or NULL */
        struct peer_view view;
        uint64_t answered_usec, failing_since;
};

struct peers {
        struct lbd *lbd;
        struct evhttp *http; /* the listener, or NULL */
        struct curlev *curl; /* the questions, or NULL without peers */
        struct event timer;
        uint64_t interval_usec, timeout_usec;
        bool started;
        struct peer list[CONFIG_MAX_LEASE_PEERS];
        size_t n;
};

/* ---- the answer ---- */

static void peer_reason(struct peer_view *v, const char *reason)
{
        (void)snprintf(v->error, sizeof(v->error), "%s", reason);
}

int peer_parse_answer(const char *body, size_t len, struct peer_view *ret)
{
        _cleanup_(cJSON_Deletep) cJSON *root = NULL;
        const cJSON *name, *leader, *store_up, *epoch;
        size_t n;

        root = cJSON_ParseWithLength(body, len);
        if (!cJSON_IsObject(root)) {
                peer_reason(ret, "the answer is not a JSON object");
                return -EBADMSG;
        }
        name = cJSON_GetObjectItemCaseSensitive(root, "name");
        leader = cJSON_GetObjectItemCaseSensitive(root, "leader");
        store_up = cJSON_GetObjectItemCaseSensitive(root, "store_up");
        epoch = cJSON_GetObjectItemCaseSensitive(root, "epoch");
        if (!cJSON_IsString(name) || !cJSON_IsBool(leader) || !cJSON_IsBool(store_up) ||
            !cJSON_IsNumber(epoch)) {
                peer_reason(ret, "the answer lacks name, leader, store_up or epoch");
                return -EBADMSG;
        }
        n = strlen(name->valuestring);
        for (size_t i = 0; i < n; i++)
                if (!config_lease_name_char(name->valuestring[i]))
                        n = 0;
        if (n == 0 || n >= LEASE_NAME_MAX) {
                peer_reason(ret, "the answer's name is not a host name");
                return -EBADMSG;
        }
        if (!(epoch->valuedouble >= 0 && epoch->valuedouble <= 9007199254740992.0)) {
                peer_reason(ret, "the answer's epoch is out of range");
                return -EBADMSG;
        }
        memcpy(ret->name, name->valuestring, n + 1);
        ret->leader = cJSON_IsTrue(leader);
        ret->store_up = cJSON_IsTrue(store_up);
        ret->epoch = (uint64_t)epoch->valuedouble;
        ret->error[0] = '\0';
        return 0;
}

/* ---- the questions ---- */

static void peer_on_answer(int r, const struct curlev_response *resp, void *userdata)
{
        struct peer *p = userdata;
        uint64_t now = now_usec();
        bool was_up = p->view.up, ok = false;

        p->transfer = NULL;
        p->view.asked = true;
        if (r < 0)
                peer_reason(&p->view, resp && resp->error && resp->error[0] ? resp->error : "no answer");
        else if (resp->status != 200)
                (void)snprintf(p->view.error, sizeof(p->view.error), "HTTP status %ld", resp->status);
        else
                ok = peer_parse_answer(resp->body, resp->body_len, &p->view) >= 0;
        if (ok) {
                p->view.up = p->view.ever = true;
                p->answered_usec = now;
                p->failing_since = 0;
                if (!was_up)
                        log_info("Other LB host %s answers: %s, %s in epoch %llu", p->view.address,
                                 p->view.name, p->view.leader ? "leading" : "not leading",
                                 (unsigned long long)p->view.epoch);
                return;
        }
        if (!p->failing_since) {
                p->failing_since = now;
                log_warning("Other LB host %s does not answer on its lease listener: %s", p->view.address,
                            p->view.error);
        }
        p->view.up = false;
}

static void peer_ask(struct peers *ps, struct peer *p)
{
        struct curlev_request req = {
                .method = "GET",
                .url = p->url,
                .max_response = PEER_MAX_RESPONSE,
                .connect_timeout_usec = ps->timeout_usec,
                .timeout_usec = ps->timeout_usec,
                .no_proxy = true,
        };
        int r;

        if (p->transfer)
                return;
        r = curlev_start(ps->curl, &req, peer_on_answer, p, &p->transfer);
        if (r < 0) {
                p->transfer = NULL;
                (void)snprintf(p->view.error, sizeof(p->view.error), "could not ask: %s", strerror(-r));
        }
}

static void peers_on_timer(evutil_socket_t fd, short what, void *userdata)
{
        struct peers *ps = userdata;
        struct timeval tv = timeval_from_usec(ps->interval_usec);

        (void)evtimer_add(&ps->timer, &tv);
        for (size_t i = 0; i < ps->n; i++)
                peer_ask(ps, &ps->list[i]);
}

/* ---- the listener ---- */

static void peers_on_request(struct evhttp_request *req, void *userdata)
{
        struct peers *ps = userdata;
        const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
        const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
        enum evhttp_cmd_type method = evhttp_request_get_command(req);
        _cleanup_(cJSON_Deletep) cJSON *root = NULL;
        _cleanup_(cJSON_freep) char *text = NULL;
        struct evbuffer *body;

        if (!path || strcmp(path, "/lease") != 0) {
                evhttp_send_error(req, HTTP_NOTFOUND, NULL);
                return;
        }
        if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
                (void)evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
                evhttp_send_error(req, 405, "Method Not Allowed");
                return;
        }
        root = cJSON_CreateObject();
        if (!root || admin_lease_json(root, ps->lbd) < 0 ||
            !(text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "lease")))) {
                evhttp_send_error(req, HTTP_INTERNAL, NULL);
                return;
        }
        body = evbuffer_new();
        if (!body || evbuffer_add_printf(body, "%s\n", text) < 0) {
                if (body)
                        evbuffer_free(body);
                evhttp_send_error(req, HTTP_INTERNAL, NULL);
                return;
        }
        (void)evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
        (void)evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
        evhttp_send_reply(req, HTTP_OK, "OK", body);
        evbuffer_free(body);
}

static int peers_listen(struct peers *ps, const struct netaddr *addr)
{
        _cleanup_close_ int fd = -1;

        fd = netaddr_listen(addr, PEER_BACKLOG);
        if (fd < 0)
                return fd;
        ps->http = evhttp_new(ps->lbd->base);
        if (!ps->http)
                return -ENOMEM;
        evhttp_set_allowed_methods(ps->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                                     EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                     EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
        evhttp_set_max_headers_size(ps->http, PEER_MAX_HEADERS_SIZE);
        evhttp_set_max_body_size(ps->http, 0);
        evhttp_set_timeout(ps->http, PEER_TIMEOUT_SEC);
        evhttp_set_gencb(ps->http, peers_on_request, ps);
        if (!evhttp_accept_socket_with_handle(ps->http, fd))
                return -ENOMEM;
        fd = -1; /* evhttp's now */
        return 0;
}

/* ---- the object ---- */

int peers_new(struct lbd *lbd, struct peers **ret)
{
        const struct config *c = lbd->config;
        struct peers *ps;
        int r;

        *ret = NULL;
        if (!c->lease_listen_set && c->n_lease_peers == 0)
                return 0;
        ps = calloc(1, sizeof(*ps));
        if (!ps)
                return -ENOMEM;
        ps->lbd = lbd;
        ps->interval_usec = c->lease_renew_usec;
        ps->timeout_usec = c->lease_timeout_usec;
        (void)evtimer_assign(&ps->timer, lbd->base, peers_on_timer, ps);
        ps->n = MIN(c->n_lease_peers, (size_t)CONFIG_MAX_LEASE_PEERS);
        for (size_t i = 0; i < ps->n; i++) {
                struct peer *p = &ps->list[i];

                p->addr = c->lease_peers[i];
                (void)netaddr_format(&p->addr, p->view.address, sizeof(p->view.address));
                (void)snprintf(p->url, sizeof(p->url), "http://%s/lease", p->view.address);
        }
        if (ps->n > 0) {
                r = curlev_new(lbd->base, &ps->curl);
                if (r < 0) {
                        peers_free(ps);
                        return r;
                }
        }
        if (c->lease_listen_set) {
                r = peers_listen(ps, &c->lease_listen);
                if (r < 0) {
                        peers_free(ps);
                        return r;
                }
        }
        *ret = ps;
        return 0;
}

struct peers *peers_free(struct peers *ps)
{
        if (!ps)
                return NULL;
        (void)evtimer_del(&ps->timer);
        ps->curl = curlev_free(ps->curl); /* cancels the transfers: no callback runs */
        if (ps->http)
                evhttp_free(ps->http);
        free(ps);
        return NULL;
}

void peers_start(struct peers *ps)
{
        const struct timeval now = {0, 0};

        if (!ps || ps->started || ps->n == 0)
                return;
        ps->started = true;
        (void)evtimer_add(&ps->timer, &now);
}

size_t peers_get_view(const struct peers *ps, struct peer_view *views, size_t max)
{
        uint64_t now = now_usec();
        size_t n = 0;

        for (; ps && n < ps->n && n < max; n++) {
                const struct peer *p = &ps->list[n];

                views[n] = p->view;
                views[n].answered_ago_usec = p->view.ever ? now - p->answered_usec : 0;
                views[n].down_usec = !p->view.up && p->failing_since ? now - p->failing_since : 0;
        }
        return n;
}

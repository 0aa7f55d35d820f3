/* The other LB hosts' own word on the lease: a read-only listener and the questions to the other hosts.
 *
 * The listener ([lease] listen): the HTTP engine (http/server.h) on lbd's main loop, apart from the admin
 * API (which stays on loopback, since it drains and reloads without authentication). It answers GET (and
 * HEAD) /lease with this host's lease object as /status carries it (admin_lease_json()): who leads, the
 * epoch, the expiry, the store; nothing else (404; 405 for other methods), no action and no secret.
 * Bounded as the engine bounds every listener: PEER_MAX_CONNECTIONS connections (the kernel's queue holds
 * more), of which PEER_MAX_PER_CLIENT from one address (so that one host let through the security group
 * cannot hold every slot and keep the other LB hosts' questions waiting), 8 KiB of head within 5 s of its
 * first byte, no body, idle connections closed after 5 s, strict framing, the accept() backoff when
 * descriptors run out; open it to the other LB hosts only (the security group).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws/curlev.h"
#include "common/cjson.h"
#include "common/log.h"
#include "common/macro.h"
#include "http/server.h"
#include "lbd/admin.h"
#include "lbd/config.h"
#include "lbd/lbd.h"

#define PEER_MAX_HEADERS_SIZE 8192
#define PEER_TIMEOUT_USEC     (5 * USEC_PER_SEC)
#define PEER_MAX_CONNECTIONS  64
#define PEER_MAX_PER_CLIENT   8 /* a peer asks once per renewal, on one connection */

struct peer {
        struct netaddr addr;
        char url[NETADDR_STRLEN + 16];
        struct curlev_transfer *transfer; /* in flight, or NULL */
        struct peer_view view;
        uint64_t answered_usec, failing_since;
};

struct peers {
        struct lbd *lbd;
        struct http_server *http; /* the listener, or NULL */
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

static void peers_on_request(struct http_request *req, void *userdata)
{
        struct peers *ps = userdata;
        _cleanup_(cJSON_Deletep) cJSON *root = NULL;
        _cleanup_(cJSON_freep) char *text = NULL;
        struct evbuffer *body;

        if (strcmp(req->path, "/lease") != 0) {
                admin_respond_text(req, 404, NULL, NULL, NULL);
                return;
        }
        if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
                admin_respond_text(req, 405, "Allow: GET, HEAD\r\n", NULL, NULL);
                return;
        }
        root = cJSON_CreateObject();
        body = evbuffer_new();
        if (!root || !body || admin_lease_json(root, ps->lbd) < 0 ||
            !(text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "lease"))) ||
            evbuffer_add_printf(body, "%s\n", text) < 0)
                admin_respond_text(req, 500, NULL, NULL, NULL);
        else
                admin_respond(req, 200, "application/json", NULL, body);
        if (body)
                evbuffer_free(body);
}

static int peers_listen(struct peers *ps, const struct netaddr *addr)
{
        static const struct http_server_limits limits = {
                .max_connections = PEER_MAX_CONNECTIONS,
                .max_per_client = PEER_MAX_PER_CLIENT,
                .max_head_size = PEER_MAX_HEADERS_SIZE,
                .max_body_size = 1, /* no route takes a body; the engine takes no limit under 1 */
                .head_timeout_usec = PEER_TIMEOUT_USEC,
                .body_timeout_usec = PEER_TIMEOUT_USEC,
                .idle_timeout_usec = PEER_TIMEOUT_USEC,
        };
        static const struct http_server_ops ops = {
                .request = peers_on_request,
        };
        int r;

        r = http_server_new(ps->lbd->base, &limits, &ops, ps, &ps->http);
        if (r < 0)
                return r;
        http_server_set_name(ps->http, "lease listener");
        return http_server_listen(ps->http, addr, "lease listener");
}

uint64_t peers_listener_refused(const struct peers *p)
{
        return p ? http_server_refused_per_client(p->http) : 0;
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
        ps->http = http_server_free(ps->http);
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

/* The health check route. 200 {"status":"ok","database":"ok"} when SELECT 1 answers within a second,
 * else 503 {"status":"unavailable","database":"down"}. No authentication: it tells nothing private. */
#include "webd/health.h"

#include <errno.h>
#include <stdlib.h>

#include "common/macro.h"
#include "webd/db.h"
#include "webd/server.h"

#define HEALTH_TIMEOUT_USEC (1 * USEC_PER_SEC)

struct health {
        struct db *db;
        unsigned ping;
};

static void health_reply(struct server_request *r, bool up)
{
        cJSON *body = cJSON_CreateObject();

        if (!body || !cJSON_AddStringToObject(body, "status", up ? "ok" : "unavailable") ||
            !cJSON_AddStringToObject(body, "database", up ? "ok" : "down")) {
                cJSON_Delete(body);
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        if (!up)
                (void)server_add_header(r, "Retry-After", "1");
        server_reply(r, up ? 200 : 503, body);
}

static void health_timeout(struct server_request *r)
{
        health_reply(r, false);
}

static void health_done(struct server_request *r, int error, const PGresult *res)
{
        health_reply(r, error >= 0);
}

static void health_get(struct server_request *r, void *userdata)
{
        struct health *h = userdata;

        if (!db_is_up(h->db) || server_request_set_timeout(r, HEALTH_TIMEOUT_USEC, health_timeout) < 0 ||
            server_query(r, h->ping, NULL, 0, health_done) < 0)
                health_reply(r, false);
}

int health_new(struct server *s, struct db *db, struct health **ret)
{
        static const struct server_method methods[] = {
                { HTTP_GET, health_get, false, false, NULL, true },
        };
        struct health *h;
        int r;

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->db = db;
        r = db_statement(db, "SELECT 1", 0, &h->ping);
        if (r >= 0)
                r = server_route(s, "/healthcheck", false, methods, ELEMENTSOF(methods), h);
        if (r < 0) {
                free(h);
                return r;
        }
        *ret = h;
        return 0;
}

struct health *health_free(struct health *h)
{
        free(h);
        return NULL;
}

/* The live status page on the admin listener, for a person with a browser:
 *   GET /                      the page, rendered whole by the server (a plain table that works without
 *                              JavaScript; it refreshes itself every 5 s then)
 *   GET /page.js, /page.css    its script and style, built into the binary (nothing fetched elsewhere)
 *   GET /page/data             JSON for the script, which redraws the page from it every second;
 *                              ?since=UNIX_SECOND&events=SEQ send only the samples and events after those
 *   GET /page/confirm?backend=NAME&action=drain|enable   the confirmation, for browsers without JavaScript
 *   POST /page/backends/NAME/drain, /page/backends/NAME/enable   the page's buttons
 *
 * Cross-site protection. The admin listener has no authentication (loopback only), so a web page the
 * operator visits must not be able to act through the operator's browser:
 * - every POST (the page's and the admin API's) is refused when it carries an Origin that is not the
 *   listener's own or a Sec-Fetch-Site other than same-origin or none (scripts such as lbctl send neither);
 * - the page's POSTs need the per-process random token the page carries (a form field `token` or the
 *   header X-LBD-Token), which another site cannot read;
 * - the page's routes answer only when Host names an IP address or localhost, so a DNS name rebound to
 *   127.0.0.1 by an attacker gets no page (and no token).
 * All of it runs on the event loop, built in memory from the pool, the reconciler and the history. */
#pragma once

#include <stdbool.h>

struct http_request;
struct lbd;
struct statuspage;

#define STATUSPAGE_TOKEN_BYTES 16 /* random bytes, sent as hex */

/* Creates the page's state (its token). Returns 0, -ENOMEM, or -errno when no random bytes could be had. */
int statuspage_new(struct lbd *lbd, struct statuspage **ret);
struct statuspage *statuspage_free(struct statuspage *p);

/* Whether <path> is one of the page's routes (then statuspage_handle() answers it). */
bool statuspage_owns(const char *path);
/* Answers <req> for one of the page's routes. */
void statuspage_handle(struct statuspage *p, struct http_request *req, const char *path);

/* For any POST to the admin listener: false (and answered 403 with the reason) when the request comes
 * from another site (Origin, Sec-Fetch-Site), true when it may go on. */
bool statuspage_post_allowed(struct http_request *req);

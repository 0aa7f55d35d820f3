/* Server URLs as webctl keeps them: one spelling per server, so that a login saved for
 * "HTTP://Example.com:80/" is found again for "http://example.com". */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Writes the normal form of the server URL <in> into <out>: the scheme (http or https) and host in lower
 * case, the scheme's default port left out, no trailing '/'. A path is kept (webd serves its API at the
 * root, but a proxy may serve it under one). Returns 0, -ENAMETOOLONG (<out> is then ""), or -EINVAL with
 * the reason in *<ret_why> ("has no host", ...) and <out> untouched. */
int url_normalize(const char *in, char *out, size_t size, const char **ret_why);

/* Whether the normalised <url> has a path after its host and port. */
bool url_has_path(const char *url);

/* The length of <url>'s scheme, host and port: the server's root. */
size_t url_root_len(const char *url);

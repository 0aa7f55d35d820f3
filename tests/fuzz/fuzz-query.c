/* Fuzz target: a query string through the HTTP engine's parser (http/server.c). Whatever it holds, the
 * parse stays within the count http_query_count() gives, every name is non-empty and holds neither '='
 * nor '&' (names are not decoded; values are, and may hold both), every value is no longer than its text,
 * and a smaller bound gives -E2BIG, never an overrun. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *query = malloc(size + 1), *buf = malloc(size + 1);
        struct http_param *params;
        size_t max;
        int n;

        if (!query || !buf) {
                free(query);
                free(buf);
                return 0;
        }
        memcpy(query, data, size);
        query[size] = '\0';
        max = http_query_count(query);
        params = calloc(max + 1, sizeof(*params));
        if (!params)
                abort();
        n = http_parse_query(query, buf, params, max);
        if (n > (int)max || (n < 0 && n != -EINVAL))
                abort();
        for (int i = 0; i < n; i++) {
                if (!params[i].name[0] || strpbrk(params[i].name, "=&"))
                        abort();
                if (strlen(params[i].value) > strlen(query))
                        abort();
        }
        if (n > 0 && http_parse_query(query, buf, params, (size_t)n - 1) != -E2BIG)
                abort();
        free(params);
        free(buf);
        free(query);
        return 0;
}

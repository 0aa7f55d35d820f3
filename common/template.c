/* "{{name}}" placeholders filled into a template (template.h): one bounded copy loop for every user-data
 * template, so that each caller only says which names it fills and with what. */
#include "common/template.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"

bool template_uses(const char *tmpl, size_t len, const char *name)
{
        return memmem(tmpl, len, name, strlen(name)) != NULL;
}

int template_render(const char *tmpl, size_t len, const struct template_var *vars, size_t n, size_t max,
                    char **ret, size_t *ret_len)
{
        _cleanup_free_ char *out = malloc(max + 1);
        size_t olen = 0;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len;) {
                const char *piece = tmpl + i;
                size_t m = 1, skip = 1;

                for (size_t v = 0; v < n; v++) {
                        size_t nlen = strlen(vars[v].name);

                        if (nlen > 0 && len - i >= nlen && memcmp(tmpl + i, vars[v].name, nlen) == 0) {
                                piece = vars[v].value;
                                m = strlen(vars[v].value);
                                skip = nlen;
                                break;
                        }
                }
                if (m > max - olen)
                        return -EFBIG;
                memcpy(out + olen, piece, m);
                olen += m;
                i += skip;
        }
        out[olen] = 0;
        *ret = TAKE_PTR(out);
        *ret_len = olen;
        return 0;
}

/* Filling "{{name}}" placeholders into a template of bytes (a user-data script), with a limit on the
 * result. The backends' user data (lbd's ec2 provider) and the web host's (`lbctl provision`) use it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct template_var {
        const char *name;  /* the whole placeholder, "{{upstream}}" */
        const char *value; /* its replacement, NUL-terminated */
};

/* True when <tmpl> (<len> bytes, any bytes) holds <name>. */
bool template_uses(const char *tmpl, size_t len, const char *name);

/* Copies <tmpl> (<len> bytes) with every occurrence of each of the <n> placeholders of <vars> replaced by
 * its value, into a new NUL-terminated buffer (*<ret>, *<ret_len> bytes before the NUL; the caller frees
 * it). Text that no placeholder matches is copied as it is, byte for byte. Returns 0, -EFBIG when the result
 * would be longer than <max> bytes, or -ENOMEM. Nothing is logged. */
int template_render(const char *tmpl, size_t len, const struct template_var *vars, size_t n, size_t max,
                    char **ret, size_t *ret_len);

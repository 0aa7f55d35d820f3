/* Reading a whole small file (a certificate, a credentials file, a challenge token) with a limit. */
#pragma once

#include <stddef.h>

/* Reads the regular file <path>, of at most <max> bytes, into a new NUL-terminated buffer (*<ret>, the
 * caller frees it; *<ret_len> bytes before the NUL). <flags> are added to open()'s (O_NOFOLLOW, say).
 * Returns 0, -EFBIG when the file is larger than <max>, -EINVAL when it is not a regular file, -ENOMEM,
 * or the -errno of open() or read(). Nothing is logged. */
int readfile_bounded(const char *path, size_t max, int flags, char **ret, size_t *ret_len);

/* The token signing key: a file only the service can read, made on first start if missing. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Sizes a key file may have, in bytes. A new file is given SECRET_MIN random bytes. */
#define SECRET_MIN 32
#define SECRET_MAX 256

/* Loads the key stored at <path> (raw bytes) into <buf> (<size> bytes). The file must be a regular file
 * owned by the effective user with no group or other permission bits; symlinks are not followed. If the
 * file doesn't exist, SECRET_MIN bytes from getrandom() are written to a new file, created with
 * O_CREAT|O_EXCL and mode 0600, flushed to disk, and returned.
 * Returns the key's length (SECRET_MIN..SECRET_MAX), or -EPERM (group/world permission or another owner),
 * -EINVAL (size out of range, not a regular file, bad arguments), -ENOBUFS (<size> too small), or the
 * -errno of open/read/write. <buf> is written only on success. */
int secret_load(const char *path, uint8_t *buf, size_t size);

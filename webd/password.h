/* Password hashing with Argon2id, off the event loop: a fixed pool of worker threads does the hashing and
 * the results come back as callbacks on the event loop's thread. */
#pragma once

#include <stddef.h>

struct event_base;
struct password_pool;

/* Longest password and encoded hash accepted, in bytes; longer ones are refused with -EINVAL. */
#define PASSWORD_MAX         4096
#define PASSWORD_ENCODED_MAX 512
/* Jobs accepted but not yet called back, at most; beyond it submitting fails with -EBUSY. */
#define PASSWORD_QUEUE_MAX   256

/* Starts <threads> (1..16) worker threads whose results are delivered on <base>, and computes the dummy
 * hash used by password_verify_async() for unknown users (one hash, on the calling thread).
 * Returns 0, or -EINVAL, -ENOMEM, -errno from eventfd/pthread_create. */
int password_pool_new(struct event_base *base, unsigned threads, struct password_pool **ret);
/* Stops and joins the workers (a hash in progress is finished first), then calls every callback not yet
 * called with -ECANCELED, on the calling thread. May be called from a callback of this pool.
 * Returns NULL. */
struct password_pool *password_pool_free(struct password_pool *p);

/* <r> is 0 and <encoded> the PHC string ("$argon2id$v=19$m=19456,t=2,p=1$salt$hash", valid only during
 * the call), or <r> is -errno (-ENOMEM, -ECANCELED, -EIO) and <encoded> NULL. */
typedef void (*password_hash_cb)(int r, const char *encoded, void *userdata);
/* Hashes the <len> bytes at <password> with a fresh random 16-byte salt, t=2, m=19456 KiB, p=1, 32-byte
 * output. The password is copied (and the copy wiped once hashed): the caller may wipe its own at once.
 * <cb> runs later on the loop's thread, never from inside this call. Returns 0, or -EINVAL (too long),
 * -EBUSY (PASSWORD_QUEUE_MAX jobs pending), -ECANCELED (the pool is being freed), -ENOMEM. */
int password_hash_async(struct password_pool *p, const char *password, size_t len, password_hash_cb cb,
                        void *userdata);

/* <r> is 0 if the password matches, -EPERM if it doesn't (and always for a NULL <encoded>), or -EINVAL
 * (the stored hash isn't a valid Argon2id string), -ENOMEM, -ECANCELED, -EIO. */
typedef void (*password_verify_cb)(int r, void *userdata);
/* Checks the password against <encoded> (copied). With <encoded> NULL (no such user) the password is
 * checked against the pool's dummy hash, which costs the same time, and the answer is -EPERM.
 * Returns like password_hash_async(). */
int password_verify_async(struct password_pool *p, const char *password, size_t len, const char *encoded,
                          password_verify_cb cb, void *userdata);

/* Argon2id password hashing on a small pool of worker threads, so the event loop never stalls on the tens
 * of milliseconds (and ~19 MiB) one hash costs.
 *
 * Parameters: Argon2id, t=2, m=19456 KiB, p=1, a 16-byte salt from getrandom(), a 32-byte hash, stored as
 * the PHC string libargon2 encodes ("$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>"), which carries its own
 * parameters, so a stored hash stays verifiable if they change.
 *
 * Threads and ownership: the event loop's thread submits jobs and receives every callback; the workers
 * only run libargon2 on a job they have taken off the queue. A job belongs to the queue (under <lock>),
 * then to exactly one worker (no lock: nobody else sees it), then to the done list (under <lock>), then to
 * the loop thread, which calls its callback and frees it. The counter of jobs not yet called back
 * (<pending>, loop thread only) bounds the memory: PASSWORD_QUEUE_MAX jobs, then -EBUSY.
 *
 * Results come back through an eventfd watched by a libevent event on the loop: a worker appends the job
 * to the done list and adds 1 to the eventfd; the loop's callback drains the list. This was chosen over
 * event_active() because that needs libevent's thread support (evthread_use_pthreads() before any base is
 * made, after which every libevent structure in the process takes locks), a global decision that would
 * leak out of this module for one wake-up per hash; the eventfd keeps the loop single-threaded and one
 * wake-up carries any number of finished jobs.
 *
 * Passwords are copied at submission and the copy is wiped with explicit_bzero() as soon as the worker is
 * done with it (or when a job is cancelled), so the caller can wipe its own buffer right away.
 *
 * Unknown users: password_verify_async() with no stored hash verifies against a dummy hash of a random
 * password made when the pool starts, so "no such user" costs the same time as "wrong password", and
 * always answers -EPERM. */
#include "webd/password.h"

#include <argon2.h>
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/macro.h"

#define PASSWORD_T_COST      2u
#define PASSWORD_M_COST      19456u /* KiB */
#define PASSWORD_PARALLELISM 1u
#define PASSWORD_SALT_LEN    16u
#define PASSWORD_HASH_LEN    32u
#define PASSWORD_THREADS_MAX 16u

enum password_kind {
        PASSWORD_HASH,
        PASSWORD_VERIFY,
        PASSWORD_VERIFY_DUMMY,
};

struct password_job {
        struct password_job *next;
        enum password_kind kind;
        char *password; /* a copy, wiped and freed once used */
        size_t len;
        /* verify: the stored hash; hash: the result */
        char encoded[PASSWORD_ENCODED_MAX];
        int r;
        password_hash_cb hash_cb;
        password_verify_cb verify_cb;
        void *userdata;
};

struct password_list {
        struct password_job *head, **tail;
};

struct password_pool {
        struct event_base *base;
        struct event *done_event;
        int efd;

        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t *threads;
        unsigned n_threads; /* started, so to be joined */

        /* under <lock> */
        struct password_list queue; /* waiting for a worker */
        struct password_list done;  /* finished, waiting for the loop */
        bool stopping;

        /* loop thread only */
        unsigned pending;   /* accepted, callback not called yet */
        bool closing;       /* password_pool_free() has started: no new jobs */
        bool dispatching;   /* inside password_on_done() */
        bool free_deferred; /* freed from a callback: password_on_done() finishes the job */

        char dummy[PASSWORD_ENCODED_MAX]; /* written before the workers start, read-only after */
};

static void password_list_init(struct password_list *l)
{
        l->head = NULL;
        l->tail = &l->head;
}

static void password_list_push(struct password_list *l, struct password_job *job)
{
        job->next = NULL;
        *l->tail = job;
        l->tail = &job->next;
}

static struct password_job *password_list_pop(struct password_list *l)
{
        struct password_job *job = l->head;

        if (job) {
                l->head = job->next;
                if (!l->head)
                        l->tail = &l->head;
                job->next = NULL;
        }
        return job;
}

static void password_job_wipe(struct password_job *job)
{
        if (job->password) {
                explicit_bzero(job->password, job->len);
                free(job->password);
                job->password = NULL;
        }
}

static struct password_job *password_job_free(struct password_job *job)
{
        if (job) {
                password_job_wipe(job);
                free(job);
        }
        return NULL;
}

/* Hashes <len> bytes at <password> into <encoded> (PASSWORD_ENCODED_MAX bytes). Returns 0 or -errno. */
static int password_hash_now(const char *password, size_t len, char *encoded)
{
        uint8_t salt[PASSWORD_SALT_LEN];
        ssize_t n;
        int r;

        do
                n = getrandom(salt, sizeof(salt), 0);
        while (n < 0 && errno == EINTR);
        if (n != (ssize_t)sizeof(salt))
                return n < 0 ? -errno : -EIO;

        r = argon2id_hash_encoded(PASSWORD_T_COST, PASSWORD_M_COST, PASSWORD_PARALLELISM, password, len,
                                  salt, sizeof(salt), PASSWORD_HASH_LEN, encoded, PASSWORD_ENCODED_MAX);
        if (r == ARGON2_MEMORY_ALLOCATION_ERROR)
                return -ENOMEM;
        return r == ARGON2_OK ? 0 : -EIO;
}

static int password_verify_now(const char *encoded, const char *password, size_t len)
{
        switch (argon2id_verify(encoded, password, len)) {
        case ARGON2_OK:
                return 0;
        case ARGON2_VERIFY_MISMATCH:
                return -EPERM;
        case ARGON2_MEMORY_ALLOCATION_ERROR:
                return -ENOMEM;
        default:
                return -EINVAL; /* not an Argon2id string, or parameters out of range */
        }
}

/* Runs on a worker. <dummy> is read-only once the workers run. */
static void password_job_run(struct password_job *job, const char *dummy)
{
        switch (job->kind) {
        case PASSWORD_HASH:
                job->r = password_hash_now(job->password, job->len, job->encoded);
                break;
        case PASSWORD_VERIFY:
                job->r = password_verify_now(job->encoded, job->password, job->len);
                break;
        case PASSWORD_VERIFY_DUMMY:
                (void)password_verify_now(dummy, job->password, job->len);
                job->r = -EPERM;
                break;
        }
        password_job_wipe(job);
}

static void *password_worker(void *userdata)
{
        struct password_pool *p = userdata;
        const uint64_t one = 1;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                struct password_job *job;

                while (!p->stopping && !p->queue.head)
                        pthread_cond_wait(&p->cond, &p->lock);
                if (p->stopping)
                        break;
                job = password_list_pop(&p->queue);
                pthread_mutex_unlock(&p->lock);

                password_job_run(job, p->dummy);

                pthread_mutex_lock(&p->lock);
                password_list_push(&p->done, job);
                /* Can only fail if the counter would overflow, and then the loop is woken anyway. */
                (void)!write(p->efd, &one, sizeof(one));
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

/* Calls the job's callback with <r> and frees the job. Loop thread. */
static void password_deliver(struct password_pool *p, struct password_job *job, int r)
{
        p->pending--;
        if (job->kind == PASSWORD_HASH)
                job->hash_cb(r, r >= 0 ? job->encoded : NULL, job->userdata);
        else
                job->verify_cb(r, job->userdata);
        password_job_free(job);
}

static void password_destroy(struct password_pool *p)
{
        if (p->done_event)
                event_free(p->done_event);
        if (p->efd >= 0)
                (void)close(p->efd);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        free(p->threads);
        free(p);
}

static void password_on_done(evutil_socket_t fd, short what, void *userdata)
{
        struct password_pool *p = userdata;
        struct password_job *job;
        uint64_t n;

        (void)!read(p->efd, &n, sizeof(n));

        p->dispatching = true;
        for (;;) {
                pthread_mutex_lock(&p->lock);
                job = password_list_pop(&p->done);
                pthread_mutex_unlock(&p->lock);
                if (!job)
                        break;
                password_deliver(p, job, job->r);
                if (p->free_deferred)
                        break;
        }
        p->dispatching = false;

        if (p->free_deferred)
                password_destroy(p);
}

/* Starts the workers with every signal blocked: signals are for the loop's thread. */
static int password_start_threads(struct password_pool *p, unsigned threads)
{
        sigset_t all, saved;
        int r = 0;

        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        for (unsigned i = 0; i < threads; i++) {
                r = -pthread_create(&p->threads[i], NULL, password_worker, p);
                if (r < 0)
                        break;
                p->n_threads++;
        }
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        return r;
}

static void password_stop_threads(struct password_pool *p)
{
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);

        for (unsigned i = 0; i < p->n_threads; i++)
                pthread_join(p->threads[i], NULL);
        p->n_threads = 0;
}

int password_pool_new(struct event_base *base, unsigned threads, struct password_pool **ret)
{
        struct password_pool *p;
        uint8_t random_password[32];
        ssize_t n;
        int r;

        if (!base || !ret || threads < 1 || threads > PASSWORD_THREADS_MAX)
                return -EINVAL;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->base = base;
        p->efd = -1;
        password_list_init(&p->queue);
        password_list_init(&p->done);
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);

        /* The dummy's password is random and forgotten: nothing can match it. */
        do
                n = getrandom(random_password, sizeof(random_password), 0);
        while (n < 0 && errno == EINTR);
        if (n != (ssize_t)sizeof(random_password)) {
                r = n < 0 ? -errno : -EIO;
                goto fail;
        }
        r = password_hash_now((const char *)random_password, sizeof(random_password), p->dummy);
        explicit_bzero(random_password, sizeof(random_password));
        if (r < 0)
                goto fail;

        p->threads = calloc(threads, sizeof(*p->threads));
        if (!p->threads) {
                r = -ENOMEM;
                goto fail;
        }
        p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (p->efd < 0) {
                r = -errno;
                goto fail;
        }
        p->done_event = event_new(base, p->efd, EV_READ | EV_PERSIST, password_on_done, p);
        if (!p->done_event || event_add(p->done_event, NULL) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        r = password_start_threads(p, threads);
        if (r < 0) {
                password_stop_threads(p);
                goto fail;
        }

        *ret = p;
        return 0;

fail:
        password_destroy(p);
        return r;
}

struct password_pool *password_pool_free(struct password_pool *p)
{
        struct password_job *job;

        if (!p || p->closing)
                return NULL;
        p->closing = true;

        password_stop_threads(p);

        /* The workers are gone: the lists are the loop thread's alone. Finished jobs are older. */
        while ((job = password_list_pop(&p->done)))
                password_deliver(p, job, -ECANCELED);
        while ((job = password_list_pop(&p->queue)))
                password_deliver(p, job, -ECANCELED);

        if (p->dispatching)
                p->free_deferred = true;
        else
                password_destroy(p);
        return NULL;
}

static int password_submit(struct password_pool *p, enum password_kind kind, const char *password,
                           size_t len, const char *encoded, password_hash_cb hash_cb,
                           password_verify_cb verify_cb, void *userdata)
{
        struct password_job *job;
        size_t elen = 0;

        if (!p || (!password && len > 0) || len > PASSWORD_MAX)
                return -EINVAL;
        if (encoded) {
                elen = strnlen(encoded, PASSWORD_ENCODED_MAX);
                if (elen >= PASSWORD_ENCODED_MAX)
                        return -EINVAL;
        }
        if (p->closing)
                return -ECANCELED;
        if (p->pending >= PASSWORD_QUEUE_MAX)
                return -EBUSY;

        job = calloc(1, sizeof(*job));
        if (!job)
                return -ENOMEM;
        job->password = malloc(len + 1);
        if (!job->password) {
                password_job_free(job);
                return -ENOMEM;
        }
        if (len > 0)
                memcpy(job->password, password, len);
        job->password[len] = '\0';
        job->len = len;
        job->kind = kind;
        if (encoded)
                memcpy(job->encoded, encoded, elen + 1);
        job->hash_cb = hash_cb;
        job->verify_cb = verify_cb;
        job->userdata = userdata;

        pthread_mutex_lock(&p->lock);
        password_list_push(&p->queue, job);
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
        p->pending++;
        return 0;
}

int password_hash_async(struct password_pool *p, const char *password, size_t len, password_hash_cb cb,
                        void *userdata)
{
        if (!cb)
                return -EINVAL;
        return password_submit(p, PASSWORD_HASH, password, len, NULL, cb, NULL, userdata);
}

int password_verify_async(struct password_pool *p, const char *password, size_t len, const char *encoded,
                          password_verify_cb cb, void *userdata)
{
        if (!cb)
                return -EINVAL;
        return password_submit(p, encoded ? PASSWORD_VERIFY : PASSWORD_VERIFY_DUMMY, password, len, encoded,
                               NULL, cb, userdata);
}

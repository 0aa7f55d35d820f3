/* Small macros shared by every program: cleanup attributes, ownership transfer, array sizes and time units.
 *
 * The cleanup helpers follow systemd's: a variable declared `_cleanup_free_ char *p = NULL;` is freed when it
 * goes out of scope, and `return TAKE_PTR(p);` hands it to the caller instead. */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/time.h>

#define _cleanup_(f)  __attribute__((cleanup(f)))
#define _unused_      __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x)   (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))
#define _noreturn_    __attribute__((noreturn))

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* The structure of type <type> whose member <member> is at <ptr>. */
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Returns the value of <p> and sets <p> to NULL, so a cleanup attribute no longer frees it. */
#define TAKE_PTR(p)                                                                                           \
        __extension__({                                                                                       \
                __typeof__(p) _ptr_ = (p);                                                                    \
                (p) = NULL;                                                                                   \
                _ptr_;                                                                                        \
        })

/* Returns the file descriptor <fd> and sets it to -1. */
#define TAKE_FD(fd)                                                                                           \
        __extension__({                                                                                       \
                int _fd_ = (fd);                                                                              \
                (fd) = -1;                                                                                    \
                _fd_;                                                                                         \
        })

static inline void freep(void *p)
{
        free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

void closep(int *fd);
#define _cleanup_close_ _cleanup_(closep)

/* Defines <func>p(type *p), which calls <func> on *p unless it is NULL, for use with _cleanup_(). */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                               \
        static inline void func##p(type *p)                                                                   \
        {                                                                                                     \
                if (*p)                                                                                       \
                        func(*p);                                                                             \
        }

#define USEC_PER_SEC  UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)
#define NSEC_PER_USEC UINT64_C(1000)

/* <usec> microseconds as a struct timeval, for libevent's timers. */
static inline struct timeval timeval_from_usec(uint64_t usec)
{
        return (struct timeval){
                .tv_sec = (time_t)(usec / USEC_PER_SEC),
                .tv_usec = (suseconds_t)(usec % USEC_PER_SEC),
        };
}

/* Returns the monotonic clock in microseconds. */
uint64_t now_usec(void);
/* Returns the wall clock in microseconds since the epoch. */
uint64_t realtime_usec(void);

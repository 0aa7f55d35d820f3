/* The local provider: backends are processes on this machine, started from the [local] command template,
 * one per port: 127.0.0.1:(base_port + index), index 0, 1, 2, ... (the lowest free one). This is the
 * embedded default that runs the whole system on one machine: each process is typically lbd itself in relay
 * mode ({lbd} --listen {address} --backend {upstream}).
 *
 * Processes: the command is split at blanks into argv (no shell, no quoting) and each word's placeholders
 * ({lbd} {port} {address} {upstream} {index}) are filled in, so a substituted value is always one word.
 * posix_spawn() starts it with stdin on /dev/null, stdout and stderr inherited, default signal handling,
 * the systemd variables (NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*) removed from its environment, and in a
 * process group of its own: a Ctrl-C meant for lbd doesn't reach the backends, and terminating one signals
 * its whole group. SIGCHLD comes through libevent (an evsignal), and each exit is collected with waitpid()
 * on that child's pid only. Terminate sends SIGTERM to the group (lbd in relay mode then drains and exits),
 * and SIGKILL if it is still there LOCAL_KILL_DEADLINE later.
 *
 * Instances: the id is "local-INDEX-PID", so a relaunched process is a new instance. A process is
 * "running" from its start, "shutting-down" once terminated, and "terminated" once it has exited: it is
 * listed that way once, then forgotten.
 *
 * Adoption across restarts of lbd: processes outlive lbd, like instances outlive a load balancer (SIGKILL
 * or a normal stop both leave them running; a stop under systemd ends them only if the unit's KillMode
 * does). So that a restarted lbd adopts them instead of launching duplicates, every change is written to a
 * state file, one line per process: "INDEX PID STARTTIME LAUNCHED_USEC". STARTTIME is field 22 of
 * /proc/PID/stat (clock ticks since boot): on start, a line is adopted only if /proc/PID/stat still shows
 * that start time, so a recycled pid is never mistaken for a backend, and adopted processes are watched
 * (and signalled) only after the same check. They are not our children: their exit is noticed at the next
 * list. The file is [local] state_file, else $RUNTIME_DIRECTORY/local-PORT.state (systemd's
 * RuntimeDirectory=), else /run/lbd/local-PORT.state, PORT being base_port; it is written to a temporary
 * file and renamed, so a crash never leaves half of it. Without a usable state file lbd still runs, but a
 * restart can't adopt.
 *
 * ClientToken: a launch repeated with the token of an earlier one (the last LOCAL_TOKENS are kept) starts
 * nothing and reports the instances the first one started.
 *
 * Callbacks come from the event loop's next turn (provider_defer()); free() cancels those pending. */
#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"
#include "lbd/config.h"
#include "lbd/provider.h"

#define LOCAL_KILL_DEADLINE (10 * USEC_PER_SEC)
#define LOCAL_KILL_CHECK    (100 * USEC_PER_MSEC)
#define LOCAL_MAX_PROCS     2048 /* desired is at most 1000; replacements may overlap */
#define LOCAL_MAX_ARGS      64
#define LOCAL_ARG_MAX       (2 * CONFIG_PATH_MAX)
#define LOCAL_STATE_MAX     (256 * 1024)
#define LOCAL_TOKENS        16
#define LOCAL_TOKEN_MAX     128
#define LOCAL_DEFAULT_DIR   "/run/lbd"

extern char **environ;

enum provider_local_proc_state {
        LOCAL_RUNNING,
        LOCAL_STOPPING, /* SIGTERM sent */
        LOCAL_EXITED,   /* gone; listed once as terminated, then forgotten */
};

struct provider_local_proc {
        unsigned index; /* port = base_port + index */
        uint16_t port;
        pid_t pid;
        uint64_t start_ticks;   /* /proc/PID/stat starttime */
        uint64_t launched_usec; /* wall clock */
        bool child;             /* started by this lbd (waitpid) rather than adopted (/proc) */
        enum provider_local_proc_state state;
        uint64_t kill_at_usec; /* while stopping: when SIGKILL follows */
        char id[INSTANCE_ID_MAX];
};

struct provider_local_token {
        char token[LOCAL_TOKEN_MAX];
        char (*ids)[INSTANCE_ID_MAX];
        size_t n;
};

enum provider_local_call_kind {
        LOCAL_CALL_LIST,
        LOCAL_CALL_LAUNCH,
        LOCAL_CALL_TERMINATE,
};

struct provider_local_call {
        struct provider *provider;
        struct provider_deferred deferred;
        enum provider_local_call_kind kind;
        int result;
        union {
                provider_list_cb list;
                provider_launch_cb launch;
                provider_terminate_cb terminate;
        } cb;
        void *userdata;
        char (*ids)[INSTANCE_ID_MAX]; /* launch: what it started (or had started, for a repeated token) */
        size_t n_ids;
};

struct provider_local_data {
        struct provider_local_proc *procs;
        size_t n_procs;
        struct event *sigchld;
        struct event kill_timer;
        struct provider_deferred *calls;
        struct provider_local_token tokens[LOCAL_TOKENS];
        size_t next_token;
        char exe[PATH_MAX];               /* {lbd} */
        char state_path[CONFIG_PATH_MAX]; /* "" = no state file */
        bool state_broken;                /* a write failed; said once */
};

/* ---- /proc ---- */

/* Reads the state letter and starttime (field 22) of /proc/<pid>/stat. Returns 0, or -ESRCH when there is
 * no such process, or -EBADMSG. */
static int provider_local_proc_stat(pid_t pid, char *ret_state, uint64_t *ret_start)
{
        char path[64], buf[1024], *p, *end;
        ssize_t k;
        int fd;

        (void)snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ESRCH : -errno;
        k = read(fd, buf, sizeof(buf) - 1);
        (void)close(fd);
        if (k <= 0)
                return -ESRCH;
        buf[k] = '\0';

        /* "PID (COMM) S PPID ...": COMM may hold anything, so look from the last ')'. */
        p = strrchr(buf, ')');
        if (!p || p[1] != ' ' || p[2] == '\0')
                return -EBADMSG;
        p += 2;
        *ret_state = *p;
        for (int field = 3; field < 22; field++) {
                p = strchr(p, ' ');
                if (!p)
                        return -EBADMSG;
                p++;
        }
        errno = 0;
        *ret_start = strtoull(p, &end, 10);
        if (errno != 0 || end == p)
                return -EBADMSG;
        return 0;
}

/* True when the process <proc> describes is still there and still the same (its start time matches). */
static bool provider_local_proc_alive(const struct provider_local_proc *proc)
{
        uint64_t start;
        char state;

        if (provider_local_proc_stat(proc->pid, &state, &start) < 0)
                return false;
        return start == proc->start_ticks && state != 'Z' && state != 'X';
}

/* ---- state file ---- */

static int provider_local_state_lines(FILE *f, void *userdata)
{
        const struct provider_local_data *d = userdata;

        (void)fprintf(f, "# lbd local backends: INDEX PID STARTTIME LAUNCHED_USEC\n");
        for (size_t i = 0; i < d->n_procs; i++) {
                const struct provider_local_proc *proc = &d->procs[i];

                if (proc->state != LOCAL_EXITED)
                        (void)fprintf(f, "%u %d %" PRIu64 " %" PRIu64 "\n", proc->index, (int)proc->pid,
                                      proc->start_ticks, proc->launched_usec);
        }
        return 0;
}

static int provider_local_state_write(struct provider_local_data *d)
{
        if (d->state_path[0] == '\0')
                return 0;
        return provider_write_file(d->state_path, provider_local_state_lines, d);
}

static void provider_local_state_save(struct provider_local_data *d)
{
        int r = provider_local_state_write(d);

        if (r < 0 && !d->state_broken) {
                log_warning_errno(r,
                                  "Failed to write %s: %m; a restarted lbd won't adopt the local backends",
                                  d->state_path);
                d->state_broken = true;
        } else if (r >= 0)
                d->state_broken = false;
}

static void provider_local_make_id(struct provider_local_proc *proc)
{
        (void)snprintf(proc->id, sizeof(proc->id), "local-%u-%d", proc->index, (int)proc->pid);
}

static struct provider_local_proc *provider_local_add_proc(struct provider_local_data *d)
{
        struct provider_local_proc *procs;

        if (d->n_procs >= LOCAL_MAX_PROCS)
                return NULL;
        procs = realloc(d->procs, (d->n_procs + 1) * sizeof(*procs));
        if (!procs)
                return NULL;
        d->procs = procs;
        memset(&procs[d->n_procs], 0, sizeof(procs[0]));
        return &procs[d->n_procs++];
}

static bool provider_local_index_used(const struct provider_local_data *d, unsigned index)
{
        for (size_t i = 0; i < d->n_procs; i++)
                if (d->procs[i].index == index && d->procs[i].state != LOCAL_EXITED)
                        return true;
        return false;
}

/* Adopts the processes the state file names that are still there. Returns how many. */
static size_t provider_local_state_load(struct provider_local_data *d, const struct config *c)
{
        char line[256];
        size_t adopted = 0, bytes = 0;
        FILE *f;

        if (d->state_path[0] == '\0')
                return 0;
        f = fopen(d->state_path, "re");
        if (!f) {
                if (errno != ENOENT)
                        log_warning_errno(errno, "Failed to read %s: %m; not adopting local backends",
                                          d->state_path);
                return 0;
        }
        while (fgets(line, sizeof(line), f)) {
                struct provider_local_proc proc = {0}, *slot;
                unsigned index;
                int pid;
                uint64_t start, launched;

                bytes += strlen(line);
                if (bytes > LOCAL_STATE_MAX)
                        break;
                if (line[0] == '#' || line[0] == '\n')
                        continue;
                if (sscanf(line, "%u %d %" SCNu64 " %" SCNu64, &index, &pid, &start, &launched) != 4 ||
                    pid <= 1 || index >= LOCAL_MAX_PROCS || (uint64_t)c->local_base_port + index > 65535) {
                        log_warning("%s: ignoring a malformed line", d->state_path);
                        continue;
                }
                proc.index = index;
                proc.port = (uint16_t)(c->local_base_port + index);
                proc.pid = (pid_t)pid;
                proc.start_ticks = start;
                proc.launched_usec = launched;
                proc.state = LOCAL_RUNNING;
                provider_local_make_id(&proc);
                if (!provider_local_proc_alive(&proc)) {
                        log_info("Local backend %s from %s is gone", proc.id, d->state_path);
                        continue;
                }
                if (provider_local_index_used(d, index)) {
                        log_warning("%s: index %u is listed twice; ignoring pid %d", d->state_path, index,
                                    pid);
                        continue;
                }
                slot = provider_local_add_proc(d);
                if (!slot)
                        break;
                *slot = proc;
                adopted++;
                log_info("Adopted local backend %s on 127.0.0.1:%u", proc.id, proc.port);
        }
        (void)fclose(f);
        return adopted;
}

/* Picks the state file path (see the top of the file). Returns 0, or -errno when there is none to use. */
static int provider_local_state_path(struct provider_local_data *d, const struct config *c)
{
        const char *dir = getenv("RUNTIME_DIRECTORY");
        char first[CONFIG_PATH_MAX];
        int n;

        if (c->local_state_file[0] != '\0') {
                n = snprintf(d->state_path, sizeof(d->state_path), "%s", c->local_state_file);
                return n < 0 || (size_t)n >= sizeof(d->state_path) ? -ENAMETOOLONG : 0;
        }
        if (dir && dir[0] == '/') {
                /* RuntimeDirectory= may name several: the first is ours. */
                size_t len = strcspn(dir, ":");

                if (len >= sizeof(first))
                        return -ENAMETOOLONG;
                memcpy(first, dir, len);
                first[len] = '\0';
        } else {
                if (mkdir(LOCAL_DEFAULT_DIR, 0755) < 0 && errno != EEXIST)
                        return -errno;
                memcpy(first, LOCAL_DEFAULT_DIR, sizeof(LOCAL_DEFAULT_DIR));
        }
        n = snprintf(d->state_path, sizeof(d->state_path), "%s/local-%u.state", first, c->local_base_port);
        return n < 0 || (size_t)n >= sizeof(d->state_path) ? -ENAMETOOLONG : 0;
}

/* ---- starting and stopping processes ---- */

/* Appends <s> to <buf> (<len> used of <size>). Returns 0 or -E2BIG. */
static int provider_local_append(char *buf, size_t size, size_t *len, const char *s, size_t n)
{
        if (*len + n >= size)
                return -E2BIG;
        memcpy(buf + *len, s, n);
        *len += n;
        buf[*len] = '\0';
        return 0;
}

/* Expands the placeholders of one word of the command into <buf>. Returns 0, -E2BIG or -EINVAL. */
static int provider_local_expand_word(struct provider_local_data *d, const struct config *c,
                                      const char *word, size_t n, unsigned index, uint16_t port, char *buf,
                                      size_t size)
{
        size_t len = 0;
        char number[NETADDR_STRLEN];
        int r;

        buf[0] = '\0';
        for (size_t i = 0; i < n;) {
                const char *close, *value = number;
                size_t name_len;

                if (word[i] != '{') {
                        r = provider_local_append(buf, size, &len, word + i, 1);
                        if (r < 0)
                                return r;
                        i++;
                        continue;
                }
                close = memchr(word + i, '}', n - i);
                if (!close)
                        return -EINVAL;
                name_len = (size_t)(close - (word + i)) + 1;
                if (name_len == 5 && memcmp(word + i, "{lbd}", 5) == 0)
                        value = d->exe;
                else if (name_len == 6 && memcmp(word + i, "{port}", 6) == 0)
                        (void)snprintf(number, sizeof(number), "%u", port);
                else if (name_len == 7 && memcmp(word + i, "{index}", 7) == 0)
                        (void)snprintf(number, sizeof(number), "%u", index);
                else if (name_len == 9 && memcmp(word + i, "{address}", 9) == 0)
                        (void)snprintf(number, sizeof(number), "127.0.0.1:%u", port);
                else if (name_len == 10 && memcmp(word + i, "{upstream}", 10) == 0) {
                        if (!c->local_upstream_set ||
                            netaddr_format(&c->local_upstream, number, sizeof(number)) < 0)
                                return -EINVAL;
                } else
                        return -EINVAL;
                r = provider_local_append(buf, size, &len, value, strlen(value));
                if (r < 0)
                        return r;
                i += name_len;
        }
        return 0;
}

struct provider_local_argv {
        char *argv[LOCAL_MAX_ARGS + 1];
        char words[LOCAL_MAX_ARGS][LOCAL_ARG_MAX];
};

static int provider_local_build_argv(struct provider_local_data *d, const struct config *c, unsigned index,
                                     uint16_t port, struct provider_local_argv *a)
{
        const char *s = c->local_command;
        size_t n = 0;
        int r;

        for (;;) {
                size_t len;

                s += strspn(s, " \t");
                if (*s == '\0')
                        break;
                len = strcspn(s, " \t");
                if (n >= LOCAL_MAX_ARGS)
                        return -E2BIG;
                r = provider_local_expand_word(d, c, s, len, index, port, a->words[n], sizeof(a->words[n]));
                if (r < 0)
                        return r;
                a->argv[n] = a->words[n];
                n++;
                s += len;
        }
        if (n == 0)
                return -EINVAL;
        a->argv[n] = NULL;
        return 0;
}

static bool provider_local_env_dropped(const char *entry)
{
        static const char *const dropped[] = {"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=",
                                              "LISTEN_FDS=",    "LISTEN_PID=",    "LISTEN_FDNAMES="};

        for (size_t i = 0; i < ELEMENTSOF(dropped); i++)
                if (strncmp(entry, dropped[i], strlen(dropped[i])) == 0)
                        return true;
        return false;
}

/* Starts the process for <index>. Returns 0 and fills <proc>, or -errno. */
static int provider_local_spawn(struct provider_local_data *d, const struct config *c, unsigned index,
                                struct provider_local_proc *proc)
{
        _cleanup_free_ struct provider_local_argv *a = NULL;
        _cleanup_free_ char **envp = NULL;
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        sigset_t mask, defaults;
        size_t n_env = 0, k = 0;
        uint16_t port;
        pid_t pid;
        char state;
        int r;

        if ((uint64_t)c->local_base_port + index > 65535)
                return -ERANGE;
        port = (uint16_t)(c->local_base_port + index);

        a = malloc(sizeof(*a));
        if (!a)
                return -ENOMEM;
        r = provider_local_build_argv(d, c, index, port, a);
        if (r < 0)
                return r;

        while (environ && environ[n_env])
                n_env++;
        envp = calloc(n_env + 1, sizeof(*envp));
        if (!envp)
                return -ENOMEM;
        for (size_t i = 0; i < n_env; i++)
                if (!provider_local_env_dropped(environ[i]))
                        envp[k++] = environ[i];
        envp[k] = NULL;

        (void)sigemptyset(&mask);
        (void)sigemptyset(&defaults);
        for (int sig = 1; sig < NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void)sigaddset(&defaults, sig);

        r = posix_spawnattr_init(&attr);
        if (r != 0)
                return -r;
        r = posix_spawn_file_actions_init(&actions);
        if (r != 0) {
                (void)posix_spawnattr_destroy(&attr);
                return -r;
        }
        r = posix_spawnattr_setflags(&attr,
                                     POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        if (r == 0)
                r = posix_spawnattr_setpgroup(&attr, 0);
        if (r == 0)
                r = posix_spawnattr_setsigmask(&attr, &mask);
        if (r == 0)
                r = posix_spawnattr_setsigdefault(&attr, &defaults);
        if (r == 0)
                r = posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        if (r == 0) {
                if (strchr(a->argv[0], '/'))
                        r = posix_spawn(&pid, a->argv[0], &actions, &attr, a->argv, envp);
                else
                        r = posix_spawnp(&pid, a->argv[0], &actions, &attr, a->argv, envp);
        }
        (void)posix_spawn_file_actions_destroy(&actions);
        (void)posix_spawnattr_destroy(&attr);
        if (r != 0)
                return -r;

        *proc = (struct provider_local_proc){
                .index = index,
                .port = port,
                .pid = pid,
                .launched_usec = realtime_usec(),
                .child = true,
                .state = LOCAL_RUNNING,
        };
        /* The child can't be reaped before we waitpid() it, so its /proc entry is there. */
        if (provider_local_proc_stat(pid, &state, &proc->start_ticks) < 0)
                proc->start_ticks = 0;
        provider_local_make_id(proc);
        log_info("Started local backend %s on 127.0.0.1:%u: %s", proc->id, port, a->argv[0]);
        return 0;
}

static void provider_local_arm_kill_timer(struct provider_local_data *d)
{
        const struct timeval tv = {
                .tv_sec = 0,
                .tv_usec = (suseconds_t)LOCAL_KILL_CHECK,
        };

        if (!evtimer_pending(&d->kill_timer, NULL))
                (void)evtimer_add(&d->kill_timer, &tv);
}

/* Sends <sig> to the process group of <proc>, after making sure it is still that process. */
static void provider_local_signal(struct provider_local_proc *proc, int sig)
{
        if (!proc->child && !provider_local_proc_alive(proc))
                return;
        if (kill(-proc->pid, sig) < 0 && errno == ESRCH)
                (void)kill(proc->pid, sig);
}

static void provider_local_exited(struct provider_local_data *d, struct provider_local_proc *proc,
                                  int status)
{
        bool expected = proc->state == LOCAL_STOPPING;

        proc->state = LOCAL_EXITED;
        if (status < 0)
                log_full_errno(expected ? LOG_INFO : LOG_WARNING, 0,
                               "Local backend %s on 127.0.0.1:%u is gone", proc->id, proc->port);
        else if (WIFSIGNALED(status))
                log_full_errno(expected ? LOG_INFO : LOG_WARNING, 0,
                               "Local backend %s on 127.0.0.1:%u was killed by signal %d", proc->id,
                               proc->port, WTERMSIG(status));
        else
                log_full_errno(expected && WEXITSTATUS(status) == 0 ? LOG_INFO : LOG_WARNING, 0,
                               "Local backend %s on 127.0.0.1:%u exited with status %d", proc->id,
                               proc->port, WEXITSTATUS(status));
        provider_local_state_save(d);
}

/* Collects the exits of our children and notices those of adopted processes. */
static void provider_local_reap(struct provider_local_data *d)
{
        for (size_t i = 0; i < d->n_procs; i++) {
                struct provider_local_proc *proc = &d->procs[i];
                int status;

                if (proc->state == LOCAL_EXITED)
                        continue;
                if (proc->child) {
                        pid_t r = waitpid(proc->pid, &status, WNOHANG);

                        if (r == proc->pid)
                                provider_local_exited(d, proc, status);
                        else if (r < 0 && errno == ECHILD)
                                provider_local_exited(d, proc, -1);
                } else if (!provider_local_proc_alive(proc))
                        provider_local_exited(d, proc, -1);
        }
}

static void provider_local_on_sigchld(evutil_socket_t sig, short what, void *userdata)
{
        provider_local_reap(userdata);
}

static void provider_local_on_kill_timer(evutil_socket_t fd, short what, void *userdata)
{
        struct provider_local_data *d = userdata;
        uint64_t now = now_usec();
        bool stopping = false;

        provider_local_reap(d);
        for (size_t i = 0; i < d->n_procs; i++) {
                struct provider_local_proc *proc = &d->procs[i];

                if (proc->state != LOCAL_STOPPING)
                        continue;
                stopping = true;
                if (now >= proc->kill_at_usec) {
                        log_warning("Local backend %s did not stop within %llu s: killing it", proc->id,
                                    (unsigned long long)(LOCAL_KILL_DEADLINE / USEC_PER_SEC));
                        provider_local_signal(proc, SIGKILL);
                        proc->kill_at_usec = UINT64_MAX;
                }
        }
        if (stopping)
                provider_local_arm_kill_timer(d);
}

/* ---- calls ---- */

static void provider_local_call_free(struct provider_deferred *d)
{
        struct provider_local_call *call = container_of(d, struct provider_local_call, deferred);

        free(call->ids);
        free(call);
}

static void provider_local_fill(const struct provider_local_proc *proc, struct instance *inst)
{
        memcpy(inst->id, proc->id, sizeof(inst->id));
        inst->state = proc->state == LOCAL_RUNNING    ? INSTANCE_RUNNING
                      : proc->state == LOCAL_STOPPING ? INSTANCE_SHUTTING_DOWN
                                                      : INSTANCE_TERMINATED;
        (void)netaddr_parse("127.0.0.1", proc->port, false, &inst->addr);
        inst->has_addr = true;
        inst->launched_usec = proc->launched_usec;
}

static struct provider_local_proc *provider_local_find(struct provider_local_data *d, const char *id)
{
        for (size_t i = 0; i < d->n_procs; i++)
                if (strcmp(d->procs[i].id, id) == 0)
                        return &d->procs[i];
        return NULL;
}

static void provider_local_answer_list(struct provider *p, struct provider_local_call *call)
{
        struct provider_local_data *d = p->data;
        _cleanup_free_ struct instance *instances = NULL;
        size_t n = 0, kept = 0;

        provider_local_reap(d);
        instances = calloc(d->n_procs ? d->n_procs : 1, sizeof(*instances));
        if (!instances) {
                call->cb.list(p, -ENOMEM, NULL, 0, call->userdata);
                return;
        }
        for (size_t i = 0; i < d->n_procs; i++)
                provider_local_fill(&d->procs[i], &instances[n++]);

        /* Exited processes have been reported once: forget them. */
        for (size_t i = 0; i < d->n_procs; i++)
                if (d->procs[i].state != LOCAL_EXITED)
                        d->procs[kept++] = d->procs[i];
        d->n_procs = kept;

        call->cb.list(p, 0, instances, n, call->userdata);
}

static void provider_local_answer_launch(struct provider *p, struct provider_local_call *call)
{
        struct provider_local_data *d = p->data;
        _cleanup_free_ struct instance *instances = NULL;
        size_t n = 0;

        if (call->result < 0) {
                call->cb.launch(p, call->result, NULL, 0, call->userdata);
                return;
        }
        instances = calloc(call->n_ids ? call->n_ids : 1, sizeof(*instances));
        if (!instances) {
                call->cb.launch(p, -ENOMEM, NULL, 0, call->userdata);
                return;
        }
        for (size_t i = 0; i < call->n_ids; i++) {
                const struct provider_local_proc *proc = provider_local_find(d, call->ids[i]);

                if (proc)
                        provider_local_fill(proc, &instances[n]);
                else {
                        memcpy(instances[n].id, call->ids[i], sizeof(instances[n].id));
                        instances[n].state = INSTANCE_TERMINATED;
                }
                n++;
        }
        call->cb.launch(p, 0, instances, n, call->userdata);
}

static void provider_local_on_call(struct provider_deferred *d)
{
        struct provider_local_call *call = container_of(d, struct provider_local_call, deferred);
        struct provider *p = call->provider;

        switch (call->kind) {
        case LOCAL_CALL_LIST:
                provider_local_answer_list(p, call);
                break;
        case LOCAL_CALL_LAUNCH:
                provider_local_answer_launch(p, call);
                break;
        case LOCAL_CALL_TERMINATE:
                call->cb.terminate(p, call->result, call->userdata);
                break;
        }
        provider_local_call_free(&call->deferred);
}

static struct provider_local_call *
provider_local_call_new(struct provider *p, enum provider_local_call_kind kind, void *userdata)
{
        struct provider_local_call *call;

        call = calloc(1, sizeof(*call));
        if (!call)
                return NULL;
        call->provider = p;
        call->kind = kind;
        call->userdata = userdata;
        return call;
}

/* Answers <call> on the loop's next turn. Returns 0, or -ENOMEM after freeing it. */
static int provider_local_call_start(struct provider_local_call *call)
{
        struct provider *p = call->provider;
        struct provider_local_data *d = p->data;
        int r;

        r = provider_defer(p, &d->calls, &call->deferred, provider_local_on_call);
        if (r < 0)
                provider_local_call_free(&call->deferred);
        return r;
}

static int provider_local_list(struct provider *p, provider_list_cb cb, void *userdata)
{
        struct provider_local_call *call = provider_local_call_new(p, LOCAL_CALL_LIST, userdata);

        if (!call)
                return -ENOMEM;
        call->cb.list = cb;
        return provider_local_call_start(call);
}

static struct provider_local_token *provider_local_token_find(struct provider_local_data *d,
                                                              const char *token)
{
        for (size_t i = 0; i < LOCAL_TOKENS; i++)
                if (d->tokens[i].ids && strcmp(d->tokens[i].token, token) == 0)
                        return &d->tokens[i];
        return NULL;
}

static void provider_local_token_remember(struct provider_local_data *d, const char *token,
                                          struct provider_local_call *call)
{
        struct provider_local_token *t = &d->tokens[d->next_token];

        if (strlen(token) >= sizeof(t->token) || call->n_ids == 0)
                return;
        free(t->ids);
        t->ids = calloc(call->n_ids, sizeof(*t->ids));
        if (!t->ids)
                return;
        memcpy(t->ids, call->ids, call->n_ids * sizeof(*t->ids));
        t->n = call->n_ids;
        memcpy(t->token, token, strlen(token) + 1);
        d->next_token = (d->next_token + 1) % LOCAL_TOKENS;
}

static int provider_local_launch(struct provider *p, unsigned count, const char *zone, const char *client_token,
                                 provider_launch_cb cb, void *userdata)
{
        struct provider_local_data *d = p->data;
        const struct config *c = p->config;
        struct provider_local_token *seen = client_token ? provider_local_token_find(d, client_token) : NULL;
        struct provider_local_call *call;
        unsigned index = 0;
        int r = 0;

        if (count == 0 || count > LOCAL_MAX_PROCS)
                return -EINVAL;
        call = provider_local_call_new(p, LOCAL_CALL_LAUNCH, userdata);
        if (!call)
                return -ENOMEM;
        call->cb.launch = cb;
        call->ids = calloc(seen ? seen->n : count, sizeof(*call->ids));
        if (!call->ids) {
                provider_local_call_free(&call->deferred);
                return -ENOMEM;
        }

        if (seen) {
                /* The same launch again: report what it started. */
                memcpy(call->ids, seen->ids, seen->n * sizeof(*call->ids));
                call->n_ids = seen->n;
                return provider_local_call_start(call);
        }

        for (unsigned i = 0; i < count; i++) {
                struct provider_local_proc proc, *slot;

                while (provider_local_index_used(d, index))
                        index++;
                r = provider_local_spawn(d, c, index, &proc);
                if (r < 0)
                        break;
                slot = provider_local_add_proc(d);
                if (!slot) {
                        /* Can't track it: don't leave it running. */
                        (void)kill(-proc.pid, SIGKILL);
                        (void)waitpid(proc.pid, NULL, 0);
                        r = -ENOMEM;
                        break;
                }
                *slot = proc;
                memcpy(call->ids[call->n_ids++], proc.id, sizeof(proc.id));
                index++;
        }
        if (call->n_ids > 0) {
                provider_local_state_save(d);
                if (client_token)
                        provider_local_token_remember(d, client_token, call);
        }
        if (r < 0) {
                log_error_errno(r, "Failed to start a local backend (%s): %m", c->local_command);
                if (call->n_ids == 0)
                        call->result = r;
        }
        return provider_local_call_start(call);
}

static int provider_local_terminate(struct provider *p, const char *const *ids, size_t n,
                                    provider_terminate_cb cb, void *userdata)
{
        struct provider_local_data *d = p->data;
        struct provider_local_call *call;
        bool any = false;

        call = provider_local_call_new(p, LOCAL_CALL_TERMINATE, userdata);
        if (!call)
                return -ENOMEM;
        call->cb.terminate = cb;

        provider_local_reap(d);
        for (size_t i = 0; i < n; i++) {
                struct provider_local_proc *proc = provider_local_find(d, ids[i]);

                if (!proc || proc->state != LOCAL_RUNNING)
                        continue;
                log_info("Stopping local backend %s on 127.0.0.1:%u", proc->id, proc->port);
                provider_local_signal(proc, SIGTERM);
                proc->state = LOCAL_STOPPING;
                proc->kill_at_usec = now_usec() + LOCAL_KILL_DEADLINE;
                any = true;
        }
        if (any)
                provider_local_arm_kill_timer(d);
        return provider_local_call_start(call);
}

static int provider_local_init(struct provider *p, const struct config *c)
{
        struct provider_local_data *d;
        ssize_t len;
        int r;

        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        p->data = d;
        (void)evtimer_assign(&d->kill_timer, p->base, provider_local_on_kill_timer, d);

        len = readlink("/proc/self/exe", d->exe, sizeof(d->exe) - 1);
        if (len <= 0)
                memcpy(d->exe, "lbd", 4);
        else
                d->exe[len] = '\0';

        d->sigchld = evsignal_new(p->base, SIGCHLD, provider_local_on_sigchld, d);
        if (!d->sigchld || evsignal_add(d->sigchld, NULL) < 0)
                return -ENOMEM;

        r = provider_local_state_path(d, c);
        if (r < 0) {
                log_warning_errno(
                        r, "No state file for the local backends (%m): a restarted lbd won't adopt them");
                d->state_path[0] = '\0';
        } else {
                size_t n = provider_local_state_load(d, c);

                log_info("Local backends: state in %s, %zu adopted", d->state_path, n);
                provider_local_state_save(d);
        }
        return 0;
}

static int provider_local_set_config(struct provider *p, const struct config *c)
{
        int r;

        if (!p->data) {
                r = provider_local_init(p, c);
                if (r < 0)
                        return r;
        } else if (c->local_state_file[0] != '\0' &&
                   strcmp(c->local_state_file, ((struct provider_local_data *)p->data)->state_path) != 0)
                log_warning("A changed [local] state_file takes effect on restart");
        p->config = c;
        return 0;
}

static void provider_local_free(struct provider *p)
{
        struct provider_local_data *d = p->data;

        if (!d)
                return;
        provider_defer_cancel_all(&d->calls, provider_local_call_free);
        (void)evtimer_del(&d->kill_timer);
        if (d->sigchld)
                event_free(d->sigchld);
        for (size_t i = 0; i < LOCAL_TOKENS; i++)
                free(d->tokens[i].ids);
        free(d->procs);
        free(d);
        p->data = NULL;
}

const struct provider_ops provider_local_ops = {
        .name = "local",
        .managed = true,
        .list = provider_local_list,
        .launch = provider_local_launch,
        .terminate = provider_local_terminate,
        .set_config = provider_local_set_config,
        .free = provider_local_free,
};

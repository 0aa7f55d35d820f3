/* Unit tests for lbd/provider-local.c: real processes (/bin/sleep, which ignores the port it is given) on
 * the test's event loop. Checks launching (ids, addresses, the state file, placeholders), a repeated
 * ClientToken, listing, terminating (shutting-down, then terminated once, then forgotten), an exit noticed
 * through SIGCHLD, adoption by a new provider from the state file (and refusing lines whose process is
 * gone or whose start time doesn't match), terminating an adopted process, and that callbacks never come
 * from inside a call. Every wait has a deadline; every process started is ended. */
#include <errno.h>
#include <event2/event.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/macro.h"
#include "lbd/config.h"
#include "lbd/provider.h"

#define MAX_SEEN 16

struct result {
        bool done;
        int r;
        struct instance instances[MAX_SEEN];
        size_t n;
};

struct fixture {
        char dir[64];
        char state_file[128];
        struct event_base *base;
        struct config config;
        struct provider *p;
};

static void on_list(struct provider *p, int r, const struct instance *instances, size_t n, void *userdata)
{
        struct result *res = userdata;

        res->done = true;
        res->r = r;
        res->n = MIN(n, (size_t)MAX_SEEN);
        if (r >= 0)
                memcpy(res->instances, instances, res->n * sizeof(*instances));
}

static void on_launch(struct provider *p, int r, const struct instance *launched, size_t n, void *userdata)
{
        on_list(p, r, launched, n, userdata);
}

static void on_terminate(struct provider *p, int r, void *userdata)
{
        struct result *res = userdata;

        res->done = true;
        res->r = r;
}

/* Runs the loop until <done> or 5 s. */
static void wait_done(struct fixture *f, const bool *done)
{
        uint64_t deadline = now_usec() + 5 * USEC_PER_SEC;

        while (!*done) {
                assert_true(now_usec() < deadline);
                assert_true(event_base_loop(f->base, EVLOOP_NONBLOCK) >= 0);
                if (!*done)
                        usleep(1000);
        }
}

static struct result list(struct fixture *f)
{
        struct result res = {0};

        assert_int_equal(f->p->ops->list(f->p, on_list, &res), 0);
        assert_false(res.done); /* never from inside the call */
        wait_done(f, &res.done);
        assert_int_equal(res.r, 0);
        return res;
}

static struct result launch(struct fixture *f, unsigned count, const char *token)
{
        struct result res = {0};

        assert_int_equal(f->p->ops->launch(f->p, count, NULL, token, on_launch, &res), 0);
        assert_false(res.done);
        wait_done(f, &res.done);
        return res;
}

static void terminate(struct fixture *f, const char *id)
{
        struct result res = {0};
        const char *ids[] = {id};

        assert_int_equal(f->p->ops->terminate(f->p, ids, 1, on_terminate, &res), 0);
        assert_false(res.done);
        wait_done(f, &res.done);
        assert_int_equal(res.r, 0);
}

static const struct instance *find(const struct result *res, const char *id)
{
        for (size_t i = 0; i < res->n; i++)
                if (strcmp(res->instances[i].id, id) == 0)
                        return &res->instances[i];
        return NULL;
}

static pid_t pid_of(const char *id)
{
        const char *dash = strrchr(id, '-');

        assert_non_null(dash);
        return (pid_t)strtol(dash + 1, NULL, 10);
}

/* Lists until <id> is reported in <state> (or missing, for INSTANCE_UNKNOWN), within 5 s. */
static void wait_state(struct fixture *f, const char *id, enum instance_state state)
{
        uint64_t deadline = now_usec() + 5 * USEC_PER_SEC;

        for (;;) {
                struct result res = list(f);
                const struct instance *inst = find(&res, id);

                if (state == INSTANCE_UNKNOWN ? !inst : inst && inst->state == state)
                        return;
                assert_true(now_usec() < deadline);
                usleep(10000);
        }
}

/* Reads /proc/<pid>/cmdline into <buf>, waiting up to 5 s for it to be filled in. Returns its length. */
static size_t read_cmdline(pid_t pid, char *buf, size_t size)
{
        uint64_t deadline = now_usec() + 5 * USEC_PER_SEC;
        char path[64];

        (void)snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        for (;;) {
                FILE *file = fopen(path, "re");
                size_t n;

                assert_non_null(file);
                n = fread(buf, 1, size - 1, file);
                fclose(file);
                if (n > 0)
                        return n;
                assert_true(now_usec() < deadline);
                usleep(1000);
        }
}

/* Collects the exit of our child <pid>, which is gone already or about to be, within 5 s. */
static void reap(pid_t pid)
{
        uint64_t deadline = now_usec() + 5 * USEC_PER_SEC;

        while (waitpid(pid, NULL, WNOHANG) == 0) {
                assert_true(now_usec() < deadline);
                usleep(1000);
        }
}

static size_t state_lines(const struct fixture *f)
{
        char line[256];
        size_t n = 0;
        FILE *file = fopen(f->state_file, "re");

        if (!file)
                return 0;
        while (fgets(line, sizeof(line), file))
                if (line[0] != '#')
                        n++;
        fclose(file);
        return n;
}

static void provider_start(struct fixture *f)
{
        assert_int_equal(provider_new(f->base, &f->config, &f->p), 0);
        assert_non_null(f->p);
        assert_string_equal(f->p->ops->name, "local");
        assert_true(f->p->ops->managed);
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        (void)snprintf(f->dir, sizeof(f->dir), "/tmp/test-provider-local-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        (void)snprintf(f->state_file, sizeof(f->state_file), "%s/local.state", f->dir);
        f->base = event_base_new();
        assert_non_null(f->base);
        config_init(&f->config);
        assert_int_equal(config_set(&f->config, "pool", "provider", "local", NULL), 0);
        /* sleep adds up its arguments: 30 s and a fraction, with the index and port in its command line. */
        assert_int_equal(
                config_set(&f->config, "local", "command", "/bin/sleep 30 0.{index} 0.{port}", NULL), 0);
        assert_int_equal(config_set(&f->config, "local", "base_port", "41000", NULL), 0);
        assert_int_equal(config_set(&f->config, "local", "state_file", f->state_file, NULL), 0);
        assert_int_equal(config_validate(&f->config), 0);
        *state = f;
        return 0;
}

/* Ends what a failed test may have left running: the processes of the state file that are /bin/sleep. */
static void kill_leftovers(const struct fixture *f)
{
        char line[256];
        FILE *file = fopen(f->state_file, "re");

        while (file && fgets(line, sizeof(line), file)) {
                char path[64], cmd[16] = "";
                unsigned index;
                int pid;
                FILE *c;

                if (sscanf(line, "%u %d", &index, &pid) != 2 || pid <= 1)
                        continue;
                (void)snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
                c = fopen(path, "re");
                if (!c)
                        continue;
                if (fread(cmd, 1, sizeof(cmd) - 1, c) > 0 && strcmp(cmd, "/bin/sleep") == 0) {
                        (void)kill(pid, SIGKILL);
                        (void)waitpid(pid, NULL, 0);
                }
                fclose(c);
        }
        if (file)
                fclose(file);
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char path[160];

        f->p = provider_free(f->p);
        kill_leftovers(f);
        event_base_free(f->base);
        (void)unlink(f->state_file);
        (void)snprintf(path, sizeof(path), "%s.tmp", f->state_file);
        (void)unlink(path);
        (void)rmdir(f->dir);
        free(f);
        return 0;
}

static void test_launch_list_terminate(void **state)
{
        struct fixture *f = *state;
        struct result res, again, seen;
        char id0[INSTANCE_ID_MAX], id1[INSTANCE_ID_MAX], name[NETADDR_STRLEN], cmdline[256];
        size_t n;

        provider_start(f);
        assert_int_equal(list(f).n, 0);

        res = launch(f, 2, "lbd-test-1");
        assert_int_equal(res.r, 0);
        assert_int_equal(res.n, 2);
        memcpy(id0, res.instances[0].id, sizeof(id0));
        memcpy(id1, res.instances[1].id, sizeof(id1));
        assert_true(strncmp(id0, "local-0-", 8) == 0);
        assert_true(strncmp(id1, "local-1-", 8) == 0);
        for (size_t i = 0; i < 2; i++) {
                assert_int_equal(res.instances[i].state, INSTANCE_RUNNING);
                assert_true(res.instances[i].has_addr);
                assert_true(res.instances[i].launched_usec > 0);
                assert_true(netaddr_format(&res.instances[i].addr, name, sizeof(name)) > 0);
                assert_string_equal(name, i == 0 ? "127.0.0.1:41000" : "127.0.0.1:41001");
        }
        assert_int_equal(state_lines(f), 2);

        /* The command's placeholders were filled in, one argv word each; its own process group. (Right
         * after the spawn, the kernel may not show the new program's arguments yet.) */
        n = read_cmdline(pid_of(id1), cmdline, sizeof(cmdline));
        assert_int_equal(n, sizeof("/bin/sleep\0"
                                   "30\0"
                                   "0.1\0"
                                   "0.41001"));
        assert_memory_equal(cmdline,
                            "/bin/sleep\0"
                            "30\0"
                            "0.1\0"
                            "0.41001",
                            n);
        assert_int_equal(getpgid(pid_of(id1)), pid_of(id1));

        /* The same token again starts nothing and reports the same instances. */
        again = launch(f, 2, "lbd-test-1");
        assert_int_equal(again.n, 2);
        assert_string_equal(again.instances[0].id, id0);
        assert_string_equal(again.instances[1].id, id1);
        seen = list(f);
        assert_int_equal(seen.n, 2);
        assert_non_null(find(&seen, id0));

        /* Terminated: shutting-down, then terminated once, then forgotten; the index is free again. */
        terminate(f, id0);
        seen = list(f);
        assert_true(find(&seen, id0)->state == INSTANCE_SHUTTING_DOWN ||
                    find(&seen, id0)->state == INSTANCE_TERMINATED);
        wait_state(f, id0, INSTANCE_UNKNOWN);
        assert_int_equal(state_lines(f), 1);
        res = launch(f, 1, "lbd-test-2");
        assert_int_equal(res.n, 1);
        assert_true(strncmp(res.instances[0].id, "local-0-", 8) == 0);
        memcpy(id0, res.instances[0].id, sizeof(id0));

        /* One that exits on its own is reported terminated (SIGCHLD), once. */
        assert_int_equal(kill(pid_of(id1), SIGKILL), 0);
        wait_state(f, id1, INSTANCE_TERMINATED);
        seen = list(f);
        assert_null(find(&seen, id1));
        assert_int_equal(state_lines(f), 1);

        terminate(f, id0);
        wait_state(f, id0, INSTANCE_UNKNOWN);
        assert_int_equal(state_lines(f), 0);
}

static void test_adopt(void **state)
{
        struct fixture *f = *state;
        char id0[INSTANCE_ID_MAX], id1[INSTANCE_ID_MAX];
        struct result res;
        FILE *file;
        pid_t pid0;

        provider_start(f);
        res = launch(f, 2, "lbd-test-adopt");
        assert_int_equal(res.n, 2);
        memcpy(id0, res.instances[0].id, sizeof(id0));
        memcpy(id1, res.instances[1].id, sizeof(id1));
        pid0 = pid_of(id0);

        /* A new provider (a restarted lbd) adopts both from the state file; the processes stay. */
        f->p = provider_free(f->p);
        assert_int_equal(kill(pid0, 0), 0);
        /* Add a line whose process doesn't exist and one with a wrong start time: both ignored. */
        file = fopen(f->state_file, "ae");
        assert_non_null(file);
        fprintf(file, "5 999999999 1 1\n7 %d 1 1\n", (int)getpid());
        fclose(file);
        provider_start(f);
        res = list(f);
        assert_int_equal(res.n, 2);
        assert_non_null(find(&res, id0));
        assert_non_null(find(&res, id1));
        assert_int_equal(find(&res, id0)->state, INSTANCE_RUNNING);
        assert_int_equal(state_lines(f), 2);

        /* An adopted process isn't our child: terminated through its group, its end noticed in /proc. */
        terminate(f, id0);
        wait_state(f, id0, INSTANCE_UNKNOWN);
        /* The new one doesn't take the index of the adopted one still running. */
        res = launch(f, 1, "lbd-test-adopt-2");
        assert_true(strncmp(res.instances[0].id, "local-0-", 8) == 0);
        terminate(f, res.instances[0].id);
        terminate(f, id1);
        wait_state(f, id1, INSTANCE_UNKNOWN);
        wait_state(f, res.instances[0].id, INSTANCE_UNKNOWN);
        /* Both adopted processes are this test's children after all: collect them. */
        reap(pid0);
        reap(pid_of(id1));
}

static void test_spawn_failure(void **state)
{
        struct fixture *f = *state;
        struct result res;

        assert_int_equal(config_set(&f->config, "local", "command", "/nonexistent/relay {port}", NULL), 0);
        provider_start(f);
        res = launch(f, 1, "lbd-test-fail");
        if (res.r == 0) {
                /* Where posix_spawn() forks and reports exec failures as an exit (under valgrind). */
                assert_int_equal(res.n, 1);
                wait_state(f, res.instances[0].id, INSTANCE_TERMINATED);
                return;
        }
        assert_int_equal(res.r, -ENOENT);
        assert_int_equal(list(f).n, 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_launch_list_terminate, setup, teardown),
                cmocka_unit_test_setup_teardown(test_adopt, setup, teardown),
                cmocka_unit_test_setup_teardown(test_spawn_failure, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

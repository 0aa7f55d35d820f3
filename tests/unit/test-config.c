/* Unit tests for lbd/config.c: the documented defaults, a complete example file, list keys, every key's
 * error path with the message format users see, the command-line setter, config_finish() and
 * config_validate(). Config files are written into a private temporary directory. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/macro.h"
#include "lbd/config.h"
#include "tests/unit/fixture.h"

#define SEC USEC_PER_SEC

static size_t count_lines(const char *s)
{
        size_t n = 0;

        for (; *s; s++)
                n += *s == '\n';
        return n;
}

static char test_dir[64];
static char test_file[128];

static int dir_setup(void **state)
{
        (void)snprintf(test_dir, sizeof(test_dir), "/tmp/test-config-XXXXXX");
        if (!mkdtemp(test_dir))
                return -1;
        (void)snprintf(test_file, sizeof(test_file), "%s/lbd.conf", test_dir);
        return 0;
}

static int dir_teardown(void **state)
{
        (void)unlink(test_file);
        return rmdir(test_dir);
}

static void write_config(const char *text)
{
        FILE *f = fopen(test_file, "we");

        assert_non_null(f);
        assert_int_equal(fputs(text, f) >= 0, 1);
        assert_int_equal(fclose(f), 0);
}

/* Writes <text> to the test file and loads it on top of the defaults; returns the result, the log in
 * <ret_log> when not NULL. */
static int load(struct config *c, const char *text, char **ret_log)
{
        struct capture cap;
        char *log;
        int r;

        write_config(text);
        config_init(c);
        capture_begin(&cap);
        r = config_load_file(c, test_file);
        log = capture_end(&cap);
        if (ret_log)
                *ret_log = log;
        else
                free(log);
        return r;
}

static void check_addr(const struct netaddr *a, const char *expect)
{
        char buf[NETADDR_STRLEN];

        assert_true(netaddr_format(a, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, expect);
}

/* The one rule every module asks before contacting an address: inside [pool] networks, or none set. A
 * count larger than the array (a bug elsewhere) never makes it read past the array. */
static void test_in_networks(void **state)
{
        struct config *c = malloc(sizeof(*c));
        struct netaddr in, out, in6;

        assert_non_null(c);
        config_init(c);
        assert_int_equal(netaddr_parse("203.0.113.3:80", 0, false, &in), 0);
        assert_int_equal(netaddr_parse("192.0.2.1:80", 0, false, &out), 0);
        assert_int_equal(netaddr_parse("[::ffff:203.0.113.9]:80", 0, false, &in6), 0);
        assert_int_equal(c->n_networks, 0);
        assert_true(config_in_networks(c, &out)); /* none set: any address */

        assert_int_equal(netaddr_cidr_parse("203.0.113.0/24", &c->networks[0]), 0);
        c->n_networks = 1;
        assert_true(config_in_networks(c, &in));
        assert_true(config_in_networks(c, &in6));
        assert_false(config_in_networks(c, &out));

        for (size_t i = 1; i < CONFIG_MAX_NETWORKS; i++)
                assert_int_equal(netaddr_cidr_parse("198.18.0.0/15", &c->networks[i]), 0);
        c->n_networks = (size_t)1 << 40;
        assert_false(config_in_networks(c, &out));
        assert_true(config_in_networks(c, &in));
        free(c);
}

static void test_defaults(void **state)
{
        struct config c;

        memset(&c, 0x5a, sizeof(c));
        config_init(&c);

        assert_int_equal(c.n_listen, 1);
        check_addr(&c.listen[0], "0.0.0.0:80");
        assert_true(c.admin_enabled);
        check_addr(&c.admin, "127.0.0.1:9180");
        assert_int_equal(c.balance, BALANCE_ROUND_ROBIN);
        assert_string_equal(c.access_log, "stderr");
        assert_int_equal(c.max_connections, 10000);
        assert_int_equal(c.drain_timeout_usec, 30 * SEC);

        assert_int_equal(c.client_header_timeout_usec, 10 * SEC);
        assert_int_equal(c.client_idle_timeout_usec, 60 * SEC);
        assert_int_equal(c.client_body_timeout_usec, 30 * SEC);
        assert_int_equal(c.connect_timeout_usec, 3 * SEC);
        assert_int_equal(c.backend_timeout_usec, 30 * SEC);
        assert_int_equal(c.backend_idle_timeout_usec, 10 * SEC);
        assert_int_equal(c.tunnel_timeout_usec, 3600 * SEC);

        assert_int_equal(c.max_header_size, 16384);
        assert_int_equal(c.max_body_size, 1024 * 1024);
        assert_int_equal(c.retries, 2);
        assert_int_equal(c.max_idle_per_backend, 64);

        assert_string_equal(c.health_path, "/healthcheck");
        assert_int_equal(c.health_interval_usec, SEC);
        assert_int_equal(c.health_timeout_usec, SEC);
        assert_int_equal(c.health_rise, 2);
        assert_int_equal(c.health_fall, 3);
        assert_int_equal(c.health_expect_min, 200);
        assert_int_equal(c.health_expect_max, 399);
        assert_int_equal(c.health_passive_fall, 3);

        assert_int_equal(c.provider, PROVIDER_STATIC);
        assert_int_equal(c.desired, 3);
        assert_int_equal(c.port, 80);
        assert_int_equal(c.n_networks, 0);
        assert_int_equal(c.n_backends, 0);
        assert_int_equal(c.grace_usec, 120 * SEC);
        assert_int_equal(c.poll_usec, 10 * SEC);
        assert_int_equal(c.max_replacements, 3);
        assert_int_equal(c.replacement_window_usec, 300 * SEC);
        assert_string_equal(c.path, "");

        assert_string_equal(c.ec2_region, "");
        assert_string_equal(c.ec2_image, "");
        assert_string_equal(c.ec2_instance_type, "t3.micro");
        assert_int_equal(c.n_ec2_security_groups, 0);
        assert_false(c.ec2_upstream_set);
        assert_string_equal(c.ec2_tag_key, "lbd:pool");
        assert_string_equal(c.ec2_tag_value, "main");

        assert_string_equal(c.local_command,
                            "{lbd} --listen {address} --backend {upstream} --admin off --access-log off");
        assert_int_equal(c.local_base_port, 18100);
        assert_false(c.local_upstream_set);
        assert_string_equal(c.local_state_file, "");
}

static void test_names(void **state)
{
        assert_string_equal(config_balance_name(BALANCE_ROUND_ROBIN), "round-robin");
        assert_string_equal(config_balance_name(BALANCE_LEAST_CONN), "least-conn");
        assert_string_equal(config_balance_name(BALANCE_P2C), "p2c");
        assert_null(config_balance_name((enum balance_kind)42));
        assert_string_equal(config_provider_name(PROVIDER_STATIC), "static");
        assert_string_equal(config_provider_name(PROVIDER_LOCAL), "local");
        assert_string_equal(config_provider_name(PROVIDER_EC2), "ec2");
        assert_null(config_provider_name((enum provider_kind)42));
}

static const char full_example[] = "; lbd example: every key\r\n"
                                   "[lbd]\r\n"
                                   "listen = 127.0.0.1:8080, [::1]:8080\r\n"
                                   "listen = 127.0.0.2:8081\r\n"
                                   "admin = [::1]:9999          ; loopback only\r\n"
                                   "balance = p2c\r\n"
                                   "access_log = /var/log/lbd/access.log\r\n"
                                   "max_connections = 500\r\n"
                                   "drain_timeout = 0\r\n"
                                   "\r\n"
                                   "[timeouts]\r\n"
                                   "client_header = 5s\r\n"
                                   "client_idle = 2m\r\n"
                                   "client_body = 1.5s\r\n"
                                   "connect = 250ms\r\n"
                                   "backend = 1h\r\n"
                                   "backend_idle = 7\r\n"
                                   "\r\n"
                                   "[limits]\r\n"
                                   "max_header_size = 1M\r\n"
                                   "max_body_size = 10MiB\r\n"
                                   "retries = 0\r\n"
                                   "max_idle_per_backend = 0\r\n"
                                   "\r\n"
                                   "[health]\r\n"
                                   "path = /health?full=1\r\n"
                                   "interval = 500ms\r\n"
                                   "timeout = 2s\r\n"
                                   "rise = 1\r\n"
                                   "fall = 100\r\n"
                                   "expect = 204\r\n"
                                   "passive_fall = 0\r\n"
                                   "\r\n"
                                   "[pool]\r\n"
                                   "provider = static\r\n"
                                   "desired = 0\r\n"
                                   "port = 8000\r\n"
                                   "networks = 127.0.0.0/8, ::1/128\r\n"
                                   "backends = 127.0.1.1, 127.0.1.2:9000\r\n"
                                   "backends = [::1], ::ffff:127.0.1.3\r\n"
                                   "grace = 0\r\n"
                                   "poll = 1.5m\r\n";

static void test_full_example(void **state)
{
        struct config c;
        char *log;

        assert_int_equal(load(&c, full_example, &log), 0);
        assert_string_equal(log, "");
        free(log);

        assert_string_equal(c.path, test_file);
        assert_int_equal(c.n_listen, 3);
        check_addr(&c.listen[0], "127.0.0.1:8080");
        check_addr(&c.listen[1], "[::1]:8080");
        check_addr(&c.listen[2], "127.0.0.2:8081");
        assert_true(c.admin_enabled);
        check_addr(&c.admin, "[::1]:9999");
        assert_int_equal(c.balance, BALANCE_P2C);
        assert_string_equal(c.access_log, "/var/log/lbd/access.log");
        assert_int_equal(c.max_connections, 500);
        assert_int_equal(c.drain_timeout_usec, 0);

        assert_int_equal(c.client_header_timeout_usec, 5 * SEC);
        assert_int_equal(c.client_idle_timeout_usec, 120 * SEC);
        assert_int_equal(c.client_body_timeout_usec, 1500000);
        assert_int_equal(c.connect_timeout_usec, 250000);
        assert_int_equal(c.backend_timeout_usec, 3600 * SEC);
        assert_int_equal(c.backend_idle_timeout_usec, 7 * SEC);

        assert_int_equal(c.max_header_size, 1048576);
        assert_int_equal(c.max_body_size, 10485760);
        assert_int_equal(c.retries, 0);
        assert_int_equal(c.max_idle_per_backend, 0);

        assert_string_equal(c.health_path, "/health?full=1");
        assert_int_equal(c.health_interval_usec, 500000);
        assert_int_equal(c.health_timeout_usec, 2 * SEC);
        assert_int_equal(c.health_rise, 1);
        assert_int_equal(c.health_fall, 100);
        assert_int_equal(c.health_expect_min, 204);
        assert_int_equal(c.health_expect_max, 204);
        assert_int_equal(c.health_passive_fall, 0);

        assert_int_equal(c.provider, PROVIDER_STATIC);
        assert_int_equal(c.desired, 0);
        assert_int_equal(c.port, 8000);
        assert_int_equal(c.n_networks, 2);
        assert_int_equal(c.networks[0].family, AF_INET);
        assert_int_equal(c.networks[0].prefix, 8);
        assert_int_equal(c.networks[1].family, AF_INET6);
        assert_int_equal(c.networks[1].prefix, 128);
        assert_int_equal(c.n_backends, 4);
        check_addr(&c.backends[0], "127.0.1.1:0"); /* filled by config_finish() */
        check_addr(&c.backends[1], "127.0.1.2:9000");
        check_addr(&c.backends[2], "[::1]:0");
        check_addr(&c.backends[3], "[::ffff:127.0.1.3]:0");
        assert_int_equal(c.grace_usec, 0);
        assert_int_equal(c.poll_usec, 90 * SEC);

        config_finish(&c);
        check_addr(&c.backends[0], "127.0.1.1:8000");
        check_addr(&c.backends[1], "127.0.1.2:9000");
        check_addr(&c.backends[2], "[::1]:8000");
        check_addr(&c.backends[3], "[::ffff:127.0.1.3]:8000");
        assert_int_equal(config_validate(&c), 0);
}

static void test_lists(void **state)
{
        struct config c;
        char *log;

        /* The first listen replaces the default. */
        assert_int_equal(load(&c, "[lbd]\nlisten = 127.0.0.1:81\n", NULL), 0);
        assert_int_equal(c.n_listen, 1);
        check_addr(&c.listen[0], "127.0.0.1:81");

        /* Up to CONFIG_MAX_LISTEN, in any mix of repeats and commas. */
        assert_int_equal(load(&c,
                              "[lbd]\nlisten = :1,:2,:3\nlisten=:4\n"
                              "listen = :5 ,\t:6 , [::]:7, *:8\n",
                              NULL),
                         0);
        assert_int_equal(c.n_listen, CONFIG_MAX_LISTEN);
        check_addr(&c.listen[5], "0.0.0.0:6");
        check_addr(&c.listen[6], "[::]:7");
        check_addr(&c.listen[7], "0.0.0.0:8");

        assert_int_equal(load(&c, "[lbd]\nlisten = :1,:2,:3,:4,:5,:6,:7\nlisten = :8,:9\n", &log), -EINVAL);
        assert_non_null(strstr(log, ":3: [lbd] key 'listen': too many addresses (at most 8)"));
        free(log);
        assert_int_equal(load(&c, "[lbd]\nlisten = :1,:2,:3,:4,:5,:6,:7,:8,:9\n", &log), -EINVAL);
        assert_non_null(strstr(log, "too many addresses (at most 8)"));
        free(log);

        /* A bad entry leaves the list alone. */
        assert_int_equal(load(&c, "[lbd]\nlisten = :1\nlisten = :2, :0, :3\n", &log), -EINVAL);
        assert_non_null(strstr(log, ":3: [lbd] key 'listen': ':0': port must be between 1 and 65535 "
                                    "(value ':2, :0, :3')"));
        free(log);
        assert_int_equal(c.n_listen, 1);
        check_addr(&c.listen[0], "0.0.0.0:1");

        /* Empty entries. */
        assert_int_equal(load(&c, "[lbd]\nlisten = :1,,:2\n", &log), -EINVAL);
        assert_non_null(strstr(log, "empty entry"));
        free(log);
        assert_int_equal(load(&c, "[lbd]\nlisten = :1,\n", &log), -EINVAL);
        assert_non_null(strstr(log, "empty entry"));
        free(log);
        assert_int_equal(load(&c, "[lbd]\nlisten =\n", &log), -EINVAL);
        assert_non_null(strstr(log, "needs at least one address"));
        free(log);

        /* Networks: empty means any; repeats append. */
        assert_int_equal(load(&c, "[pool]\nnetworks = 127.0.0.0/8\nnetworks = 198.18.0.0/15,::1\n", NULL), 0);
        assert_int_equal(c.n_networks, 3);
        assert_int_equal(c.networks[2].family, AF_INET6);
        assert_int_equal(load(&c, "[pool]\nnetworks =\n", NULL), 0);
        assert_int_equal(c.n_networks, 0);
        assert_int_equal(load(&c, "[pool]\nnetworks = 198.18.0.1/15\n", &log), -EINVAL);
        assert_non_null(strstr(log, "[pool] key 'networks': '198.18.0.1/15' is not a network"));
        free(log);

        /* Backends up to CONFIG_MAX_BACKENDS. */
        {
                size_t size = 32 * CONFIG_MAX_BACKENDS + 64, len;
                _cleanup_free_ char *text = malloc(size);

                assert_non_null(text);
                len = (size_t)snprintf(text, size, "[pool]\n");
                for (unsigned i = 0; i < CONFIG_MAX_BACKENDS; i++)
                        len += (size_t)snprintf(text + len, size - len, "backends = 127.0.%u.%u:80\n",
                                                i / 250, i % 250 + 1);
                assert_int_equal(load(&c, text, NULL), 0);
                assert_int_equal(c.n_backends, CONFIG_MAX_BACKENDS);
                check_addr(&c.backends[CONFIG_MAX_BACKENDS - 1], "127.0.1.6:80");

                (void)snprintf(text + len, size - len, "backends = 127.0.9.9\n");
                assert_int_equal(load(&c, text, &log), -EINVAL);
                assert_non_null(strstr(log, "too many addresses (at most 256)"));
                free(log);
        }
}

/* Sets one key through config_set(), expecting failure: the config must not change and the message must
 * name the origin, section, key and value, plus <reason>. */
static void check_bad(const char *section, const char *key, const char *value, const char *reason)
{
        struct config c, before;
        struct capture cap;
        char expect[512], *log;
        int r;

        print_message("[%s] %s = '%s'\n", section, key, value);
        config_init(&c);
        memcpy(&before, &c, sizeof(c));
        capture_begin(&cap);
        r = config_set(&c, section, key, value, "--opt");
        log = capture_end(&cap);
        assert_int_equal(r, -EINVAL);
        assert_memory_equal(&c, &before, sizeof(c));
        (void)snprintf(expect, sizeof(expect), "--opt: [%s] key '%s': ", section, key);
        assert_non_null(strstr(log, expect));
        assert_non_null(strstr(log, reason));
        /* The log turns control characters into spaces. */
        (void)snprintf(expect, sizeof(expect), " (value '%s')\n", value);
        for (char *p = expect; *p && *p != '\n'; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        *p = ' ';
        assert_non_null(strstr(log, expect));
        assert_int_equal(count_lines(log), 1);
        free(log);
}

static void test_bad_values(void **state)
{
        static const struct {
                const char *section, *key, *value, *reason;
        } cases[] = {
                {"lbd", "listen", "1.2.3.4", "not a numeric address with a port"},
                {"lbd", "listen", "localhost:80", "not a numeric address"},
                {"lbd", "listen", "1.2.3.4:65536", "port must be between 1 and 65535"},
                {"lbd", "listen", "[::1]:80, x", "'x' is not a numeric address"},
                {"lbd", "listen",
                 "0123456789012345678901234567890123456789012345678901234567890123456789"
                 "0123456789012345678901234567890123456789012345678901234567890123456789",
                 "is too long"},
                {"lbd", "admin", "192.0.2.1:9180", "must be a loopback address"},
                {"lbd", "admin", "0.0.0.0:9180", "must be a loopback address"},
                {"lbd", "admin", "[::]:9180", "must be a loopback address"},
                {"lbd", "admin", "[::ffff:127.0.0.1]:9180", "must be a loopback address"},
                {"lbd", "admin", "127.0.0.1", "must be a loopback address with a port"},
                {"lbd", "admin", "127.0.0.1:0", "port must be between 1 and 65535"},
                {"lbd", "admin", "no", "or off"},
                {"lbd", "balance", "random", "must be one of: round-robin least-conn p2c"},
                {"lbd", "balance", "Round-Robin", "must be one of"},
                {"lbd", "threads", "0", "must be auto or a number from 1 to 64"},
                {"lbd", "threads", "65", "must be auto or a number from 1 to 64"},
                {"lbd", "threads", "Auto", "must be auto or a number from 1 to 64"},
                {"lbd", "threads", "", "must be auto or a number from 1 to 64"},
                {"lbd", "access_log", "relative/path", "must be stderr, off or an absolute file path"},
                {"lbd", "access_log", "", "must be stderr, off or an absolute file path"},
                {"lbd", "access_log", "/tmp/a\tb", "absolute file path"},
                {"lbd", "max_connections", "0", "must be an integer between 1 and 1000000"},
                {"lbd", "max_connections", "1000001", "between 1 and 1000000"},
                {"lbd", "max_connections", "1k", "between 1 and 1000000"},
                {"lbd", "drain_timeout", "-1s", "not a duration"},
                {"lbd", "drain_timeout", "31d", "duration out of range"},
                {"timeouts", "client_header", "0", "must be greater than 0"},
                {"timeouts", "client_idle", "10 s", "not a duration"},
                {"timeouts", "client_body", "", "not a duration"},
                {"timeouts", "connect", "0ms", "must be greater than 0"},
                {"timeouts", "backend", "1y", "not a duration"},
                {"timeouts", "backend_idle", "99999999999999999999", "out of range"},
                {"limits", "max_header_size", "1023", "must be between 1024 and 1048576 bytes"},
                {"limits", "max_header_size", "2M", "must be between 1024 and 1048576 bytes"},
                {"limits", "max_header_size", "16 k", "not a size"},
                {"limits", "max_body_size", "-1", "not a size"},
                {"limits", "max_body_size", "99999999999999999999", "size too large"},
                {"limits", "retries", "11", "between 0 and 10"},
                {"limits", "max_idle_per_backend", "100001", "between 0 and 100000"},
                {"health", "path", "healthcheck", "starting with '/'"},
                {"health", "path", "/health check", "without spaces"},
                {"health", "path", "/caf\xc3\xa9", "printable ASCII"},
                {"health", "path", "", "starting with '/'"},
                {"health", "interval", "0", "must be greater than 0"},
                {"health", "timeout", "0s", "must be greater than 0"},
                {"health", "rise", "0", "between 1 and 100"},
                {"health", "fall", "101", "between 1 and 100"},
                {"health", "expect", "99", "within 100..599"},
                {"health", "expect", "600", "within 100..599"},
                {"health", "expect", "200-", "within 100..599"},
                {"health", "expect", "-399", "within 100..599"},
                {"health", "expect", "200-300-400", "within 100..599"},
                {"health", "expect", "2xx", "within 100..599"},
                {"health", "expect", "123456789-200", "within 100..599"},
                {"health", "expect", "", "within 100..599"},
                {"health", "expect", "399-200", "the range is reversed"},
                {"health", "passive_fall", "1001", "between 0 and 1000"},
                {"pool", "provider", "aws", "must be one of: static local ec2"},
                {"pool", "desired", "1001", "between 0 and 1000"},
                {"pool", "port", "0", "between 1 and 65535"},
                {"pool", "port", "65536", "between 1 and 65535"},
                {"pool", "networks", "198.18.0.0/33", "'198.18.0.0/33': prefix longer than the address"},
                {"pool", "networks", "198.18.0.0/16, 198.18.0.1/16", "'198.18.0.1/16' is not a network"},
                {"pool", "networks", "198.18.0.0/15,,", "empty entry"},
                {"pool", "backends", "192.0.2.1:0", "port must be between 1 and 65535"},
                {"pool", "backends", "host.example:80", "is not a numeric address, e.g."},
                {"pool", "backends", "127.0.0.1:80,", "empty entry"},
                {"pool", "grace", "1x", "not a duration"},
                {"pool", "poll", "0", "must be greater than 0"},
                /* Unknown names. */
                {"lbd", "listn", "0.0.0.0:80", "unknown key"},
                {"pool", "backend", "127.0.0.1:80", "unknown key"},
                {"aws", "region", "us-east-1", "unknown section"},
                {"pool", "max_replacements", "1001", "between 0 and 1000"},
                {"pool", "replacement_window", "0", "must be greater than 0"},
                {"ec2", "region", "us east 1", "without blanks"},
                {"ec2", "endpoint", "ftp://127.0.0.1:5000", "http:// or https:// URL"},
                {"ec2", "endpoint", "http://", "http:// or https:// URL"},
                {"ec2", "image", "ami-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                 "longer than 63 bytes"},
                {"ec2", "security_groups", "sg-1,,sg-2", "empty entry"},
                {"ec2", "security_groups", "sg 1", "without blanks"},
                {"ec2", "security_groups", "sg-1,sg-1", "'sg-1' is listed twice"},
                {"ec2", "subnets", "subnet-a,subnet-a", "'subnet-a' is listed twice"},
                {"ec2", "subnets", "subnet-a,,subnet-b", "empty entry"},
                {"ec2", "subnets", "s1,s2,s3,s4,s5,s6,s7,s8,s9,s10,s11,s12,s13,s14,s15,s16,s17",
                 "too many subnets (at most 16)"},
                {"pool", "refresh_min_healthy", "101", ""},
                {"pool", "refresh_on_failure", "retry", ""},
                {"pool", "zone_backoff", "0", ""},
                {"ec2", "user_data", "user-data.sh", "absolute file path"},
                {"ec2", "upstream", "192.0.2.20", "numeric address with a port"},
                {"ec2", "upstream_ca", "ca.pem", "absolute file path"},
                {"ec2", "relay_tls_cert", "relay.pem", "absolute file path"},
                {"ec2", "relay_tls_key", "relay.key", "absolute file path"},
                {"ec2", "upstream_name", "web lbd", "expected a DNS name such as web.lbd.internal"},
                {"ec2", "upstream_name", "web'$(x)", "expected a DNS name such as web.lbd.internal"},
                {"ec2", "upstream_name", "-web.internal", "expected a DNS name such as web.lbd.internal"},
                {"ec2", "upstream_name", "192.0.2.1", "expected a DNS name such as web.lbd.internal"},
                {"ec2", "tag", "lbd:pool", "KEY=VALUE"},
                {"ec2", "tag", "=main", "KEY=VALUE"},
                {"ec2", "tag", "aws:pool=main", "reserved by AWS"},
                {"ec2", "access_key", "x", "unknown key"},
                {"local", "command", "", "must name a program"},
                {"local", "command", "lbd --listen {addr}", "unknown placeholder at '{addr}'"},
                {"local", "command", "lbd }", "a '}' without its '{'"},
                {"local", "base_port", "0", "between 1 and 65535"},
                {"local", "upstream", "127.0.0.1:0", "port must be between 1 and 65535"},
                {"local", "state_file", "state", "absolute file path"},
                {"", "listen", "0.0.0.0:80", "key outside any section"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                check_bad(cases[i].section, cases[i].key, cases[i].value, cases[i].reason);
}

static void test_set(void **state)
{
        struct config c;
        struct capture cap;
        char *log;

        config_init(&c);

        /* A list key given on the command line replaces the list, each time. */
        assert_int_equal(config_set(&c, "lbd", "listen", "127.0.0.1:1,127.0.0.1:2", "--listen"), 0);
        assert_int_equal(c.n_listen, 2);
        assert_int_equal(config_set(&c, "lbd", "listen", "127.0.0.1:3", "--listen"), 0);
        assert_int_equal(c.n_listen, 1);
        check_addr(&c.listen[0], "127.0.0.1:3");

        assert_int_equal(config_set(&c, "lbd", "admin", "off", "--admin"), 0);
        assert_false(c.admin_enabled);
        assert_int_equal(config_set(&c, "lbd", "admin", "127.1.2.3:1", "--admin"), 0);
        assert_true(c.admin_enabled);
        check_addr(&c.admin, "127.1.2.3:1");
        assert_int_equal(config_set(&c, "lbd", "balance", "least-conn", NULL), 0);
        assert_int_equal(c.balance, BALANCE_LEAST_CONN);
        assert_int_equal(c.threads, 1);
        assert_int_equal(config_set(&c, "lbd", "threads", "3", NULL), 0);
        assert_int_equal(c.threads, 3);
        assert_int_equal(config_set(&c, "lbd", "threads", "auto", NULL), 0);
        assert_true(c.threads >= 1 && c.threads <= CONFIG_THREADS_MAX);
        assert_int_equal(config_set(&c, "lbd", "threads", "1", NULL), 0);
        assert_int_equal(config_set(&c, "lbd", "access_log", "off", NULL), 0);
        assert_string_equal(c.access_log, "off");
        assert_int_equal(config_set(&c, "pool", "provider", "ec2", NULL), 0);
        assert_int_equal(c.provider, PROVIDER_EC2);
        assert_int_equal(config_set(&c, "pool", "provider", "local", NULL), 0);
        assert_int_equal(c.provider, PROVIDER_LOCAL);
        assert_int_equal(config_set(&c, "health", "expect", "100-599", NULL), 0);
        assert_int_equal(c.health_expect_min, 100);
        assert_int_equal(c.health_expect_max, 599);
        assert_int_equal(config_set(&c, "pool", "port", "65535", NULL), 0);
        assert_int_equal(c.port, 65535);
        assert_int_equal(config_set(&c, "lbd", "drain_timeout", "30d", NULL), 0);
        assert_int_equal(c.drain_timeout_usec, UINT64_C(30) * 86400 * SEC);

        /* The control plane's keys. */
        assert_int_equal(config_set(&c, "ec2", "tag", "team=web=blue", NULL), 0);
        assert_string_equal(c.ec2_tag_key, "team");
        assert_string_equal(c.ec2_tag_value, "web=blue");
        assert_int_equal(config_set(&c, "ec2", "security_groups", "sg-1, sg-2", NULL), 0);
        assert_int_equal(c.n_ec2_security_groups, 2);
        assert_string_equal(c.ec2_security_groups[1], "sg-2");
        assert_int_equal(config_set(&c, "ec2", "upstream", "192.0.2.20:8080", NULL), 0);
        assert_true(c.ec2_upstream_set);
        check_addr(&c.ec2_upstream, "192.0.2.20:8080");
        assert_int_equal(config_set(&c, "ec2", "upstream", "", NULL), 0);
        assert_false(c.ec2_upstream_set);
        assert_int_equal(config_set(&c, "ec2", "instance_type", "", NULL), 0);
        assert_string_equal(c.ec2_instance_type, "");
        assert_int_equal(config_set(&c, "ec2", "endpoint", "http://127.0.0.1:5000", NULL), 0);
        assert_string_equal(c.ec2_endpoint, "http://127.0.0.1:5000");
        assert_int_equal(config_set(&c, "local", "command", "/usr/bin/relay -p {port} -i {index}", NULL), 0);
        assert_string_equal(c.local_command, "/usr/bin/relay -p {port} -i {index}");
        assert_int_equal(config_set(&c, "local", "base_port", "20000", NULL), 0);
        assert_int_equal(c.local_base_port, 20000);
        assert_int_equal(config_set(&c, "local", "upstream", "127.0.0.1:8080", NULL), 0);
        check_addr(&c.local_upstream, "127.0.0.1:8080");
        assert_int_equal(config_set(&c, "pool", "replacement_window", "10m", NULL), 0);
        assert_int_equal(c.replacement_window_usec, 600 * SEC);

        /* Without an origin, messages say "command line"; NULL arguments are errors, not crashes. */
        capture_begin(&cap);
        assert_int_equal(config_set(&c, "lbd", "nope", "1", NULL), -EINVAL);
        assert_int_equal(config_set(&c, NULL, NULL, NULL, "--x"), -EINVAL);
        log = capture_end(&cap);
        assert_non_null(strstr(log, "command line: [lbd] key 'nope': unknown key (value '1')"));
        assert_non_null(strstr(log, "--x: [] key '': key outside any section"));
        free(log);
}

static void test_secret_hidden(void **state)
{
        struct config c;
        struct capture cap;
        char *log;

        config_init(&c);
        capture_begin(&cap);
        assert_int_equal(config_set(&c, "aws", "secret_access_key", "hunter2", "--secret"), -EINVAL);
        assert_int_equal(config_set(&c, "lbd", "DB_Password", "hunter3", "--pw"), -EINVAL);
        assert_int_equal(config_set(&c, "lbd", "token", "visible", "--t"), -EINVAL);
        log = capture_end(&cap);
        assert_null(strstr(log, "hunter2"));
        assert_null(strstr(log, "hunter3"));
        assert_non_null(
                strstr(log, "--secret: [aws] key 'secret_access_key': unknown section (value hidden)"));
        assert_non_null(strstr(log, "--pw: [lbd] key 'DB_Password': unknown key (value hidden)"));
        assert_non_null(strstr(log, "(value 'visible')"));
        free(log);
}

static void test_load_errors(void **state)
{
        static const char text[] = "[lbd]\n"                          /* 1 */
                                   "listen = 127.0.0.1:8080\n"        /* 2 */
                                   "bogus = 1\n"                      /* 3 */
                                   "balance = fastest\n"              /* 4 */
                                   "\n"                               /* 5 */
                                   "[aws]\n"                          /* 6 */
                                   "region = us-east-1\n"             /* 7 */
                                   "image = ami-1\n"                  /* 8 */
                                   "[health]\n"                       /* 9 */
                                   "rise = 0\n"                       /* 10 */
                                   "fall = 5\n"                       /* 11 */
                                   "[aws]\n"                          /* 12 */
                                   "tag = x\n"                        /* 13 */
                                   "[pool]\n"                         /* 14 */
                                   "backends = 127.0.0.1:80, nope\n"; /* 15 */
        struct config c;
        char expect[256], *log;

        assert_int_equal(load(&c, text, &log), -EINVAL);
        (void)snprintf(expect, sizeof(expect), "%s:3: [lbd] key 'bogus': unknown key (value '1')\n",
                       test_file);
        assert_non_null(strstr(log, expect));
        (void)snprintf(
                expect, sizeof(expect),
                "%s:4: [lbd] key 'balance': must be one of: round-robin least-conn p2c (value 'fastest')\n",
                test_file);
        assert_non_null(strstr(log, expect));
        (void)snprintf(expect, sizeof(expect),
                       "%s:7: [aws] key 'region': unknown section (value 'us-east-1')\n", test_file);
        assert_non_null(strstr(log, expect));
        (void)snprintf(expect, sizeof(expect),
                       "%s:10: [health] key 'rise': must be an integer between 1 and 100 "
                       "(value '0')\n",
                       test_file);
        assert_non_null(strstr(log, expect));
        (void)snprintf(expect, sizeof(expect), "%s:15: [pool] key 'backends': 'nope' is not", test_file);
        assert_non_null(strstr(log, expect));
        /* An unknown section is reported once per header: line 8 adds nothing, line 13 is reported. */
        (void)snprintf(expect, sizeof(expect), "%s:13: [aws] key 'tag': unknown section", test_file);
        assert_non_null(strstr(log, expect));
        assert_int_equal(count_lines(log), 6);
        free(log);

        /* The good lines around the bad ones were read. */
        check_addr(&c.listen[0], "127.0.0.1:8080");
        assert_int_equal(c.health_fall, 5);

        /* A syntax error stops the read, after reporting what came before. */
        assert_int_equal(load(&c, "[lbd]\nbogus = 1\nnot a key\nbalance = x\n", &log), -EINVAL);
        (void)snprintf(expect, sizeof(expect), "%s:2: [lbd] key 'bogus': unknown key", test_file);
        assert_non_null(strstr(log, expect));
        (void)snprintf(expect, sizeof(expect), "%s:3: expected 'key = value'", test_file);
        assert_non_null(strstr(log, expect));
        assert_int_equal(count_lines(log), 2);
        free(log);

        /* A key before any section. */
        assert_int_equal(load(&c, "listen = :80\n", &log), -EINVAL);
        (void)snprintf(expect, sizeof(expect), "%s:1: [] key 'listen': key outside any section", test_file);
        assert_non_null(strstr(log, expect));
        free(log);
}

static void test_load_file_errors(void **state)
{
        struct config c;
        struct capture cap;
        char path[CONFIG_PATH_MAX + 8];
        int r;

        config_init(&c);
        (void)snprintf(path, sizeof(path), "%s/missing.conf", test_dir);
        capture_begin(&cap);
        r = config_load_file(&c, path);
        free(capture_end(&cap));
        assert_int_equal(r, -ENOENT);

        memset(path, 'a', sizeof(path) - 1);
        path[0] = '/';
        path[sizeof(path) - 1] = '\0';
        capture_begin(&cap);
        r = config_load_file(&c, path);
        free(capture_end(&cap));
        assert_int_equal(r, -ENAMETOOLONG);

        /* An empty file is fine: defaults stay. */
        assert_int_equal(load(&c, "", NULL), 0);
        assert_int_equal(c.n_listen, 1);
        assert_int_equal(c.health_rise, 2);
}

static void test_finish(void **state)
{
        struct config c;

        config_init(&c);
        assert_int_equal(config_set(&c, "pool", "backends", "127.0.0.1, 127.0.0.2:81, [::1], ::2", NULL), 0);
        assert_int_equal(config_set(&c, "pool", "port", "8080", NULL), 0);
        config_finish(&c);
        check_addr(&c.backends[0], "127.0.0.1:8080");
        check_addr(&c.backends[1], "127.0.0.2:81");
        check_addr(&c.backends[2], "[::1]:8080");
        check_addr(&c.backends[3], "[::2]:8080");

        /* Idempotent, and a later port change doesn't move backends that have one. */
        assert_int_equal(config_set(&c, "pool", "port", "9", NULL), 0);
        config_finish(&c);
        check_addr(&c.backends[0], "127.0.0.1:8080");
}

/* Runs config_validate() on <c>, expecting <error>, and checks the log has <lines> lines each with <what>.
 */
static void check_validate(const struct config *c, int error, const char *what, size_t lines)
{
        struct capture cap;
        char *log;
        int r;

        capture_begin(&cap);
        r = config_validate(c);
        log = capture_end(&cap);
        assert_int_equal(r, error);
        if (what)
                assert_non_null(strstr(log, what));
        assert_int_equal(count_lines(log), lines);
        free(log);
}

static void valid_config(struct config *c)
{
        config_init(c);
        assert_int_equal(config_set(c, "pool", "backends", "127.0.0.1:8001,127.0.0.1:8002", NULL), 0);
        assert_int_equal(config_set(c, "pool", "networks", "127.0.0.0/8", NULL), 0);
        config_finish(c);
        check_validate(c, 0, NULL, 0);
}

static void test_validate(void **state)
{
        struct config c;

        /* The defaults alone: the static provider has no backend. */
        config_init(&c);
        check_validate(
                &c, -EINVAL,
                "configuration: [pool] key 'backends': the static provider needs at least one backend", 1);

        /* Only the static provider has backends; ec2 needs an image or a launch template. */
        valid_config(&c);
        c.provider = PROVIDER_EC2;
        check_validate(&c, -EINVAL,
                       "[pool] key 'backends': only the static provider uses it (provider is ec2)", 2);
        c.n_backends = 0;
        check_validate(&c, -EINVAL,
                       "[ec2] key 'image': the ec2 provider needs an image or a launch_template", 1);
        assert_int_equal(config_set(&c, "ec2", "launch_template", "lt-0123", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        /* One subnet or several, not both. */
        assert_int_equal(config_set(&c, "ec2", "subnets", "subnet-a, subnet-b,subnet-c", NULL), 0);
        assert_int_equal(c.n_ec2_subnets, 3);
        assert_string_equal(c.ec2_subnets[2], "subnet-c");
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "ec2", "subnet", "subnet-a", NULL), 0);
        check_validate(&c, -EINVAL, "[ec2] key 'subnets': set subnet (one subnet) or subnets (several), not both",
                       1);
        assert_int_equal(config_set(&c, "ec2", "subnet", "", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        /* The web host's name is checked only over TLS: not without the CA. */
        assert_int_equal(config_set(&c, "ec2", "upstream_name", "web.lbd.internal", NULL), 0);
        check_validate(&c, -EINVAL, "[ec2] key 'upstream_name': needs upstream_ca (the relays check it over TLS)", 1);
        assert_int_equal(config_set(&c, "ec2", "upstream_ca", "/etc/lbd/web-tls/ca.pem", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "ec2", "upstream_name", "", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        /* The relays' certificate and key go together. */
        assert_int_equal(config_set(&c, "ec2", "relay_tls_cert", "/etc/lbd/web-tls/relay.pem", NULL), 0);
        check_validate(&c, -EINVAL,
                       "[ec2] key 'relay_tls_cert': relay_tls_cert and relay_tls_key go together (the relays' "
                       "certificate and key)",
                       1);
        assert_int_equal(config_set(&c, "ec2", "relay_tls_key", "/etc/lbd/web-tls/relay.key", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "ec2", "relay_tls_cert", "", NULL), 0);
        check_validate(&c, -EINVAL,
                       "[ec2] key 'relay_tls_key': relay_tls_cert and relay_tls_key go together (the relays' "
                       "certificate and key)",
                       1);
        assert_int_equal(config_set(&c, "ec2", "relay_tls_key", "", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        /* Scaling on demand: bounds around desired, a target, and nothing of it without max. */
        assert_int_equal(config_set(&c, "pool", "target_rps", "100", NULL), 0);
        check_validate(&c, -EINVAL,
                       "[pool] key 'max': min, target_rps, target_inflight and target_p90 need max (scaling on demand)", 1);
        assert_int_equal(config_set(&c, "pool", "max", "2", NULL), 0);
        assert_int_equal(config_set(&c, "pool", "min", "3", NULL), 0);
        check_validate(&c, -EINVAL, "[pool] key 'min': must not exceed max (2)", 2);
        assert_int_equal(config_set(&c, "pool", "max", "5", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "pool", "desired", "6", NULL), 0);
        check_validate(&c, -EINVAL, "[pool] key 'desired': the starting count must lie within min and max (3..5)",
                       1);
        assert_int_equal(config_set(&c, "pool", "desired", "3", NULL), 0);
        assert_int_equal(config_set(&c, "pool", "target_rps", "0", NULL), 0);
        check_validate(&c, -EINVAL, "[pool] key 'max': scaling on demand needs target_rps, target_inflight or target_p90", 1);
        assert_int_equal(config_set(&c, "pool", "target_inflight", "8", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "pool", "scale_in_after", "16m", NULL), 0);
        check_validate(&c, -EINVAL, "[pool] key 'scale_in_after': must be at most 900 s", 1);
        assert_int_equal(config_set(&c, "pool", "scale_in_after", "15m", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "pool", "max", "0", NULL), 0);
        assert_int_equal(config_set(&c, "pool", "min", "0", NULL), 0);
        assert_int_equal(config_set(&c, "pool", "target_inflight", "0", NULL), 0);
        check_validate(&c, 0, NULL, 0);

        /* local: {upstream} needs an upstream; the ports must fit; 127.0.0.1 must be allowed. */
        valid_config(&c);
        c.provider = PROVIDER_LOCAL;
        c.n_backends = 0;
        check_validate(&c, -EINVAL, "[local] key 'upstream': the command uses {upstream}", 1);
        assert_int_equal(config_set(&c, "local", "upstream", "127.0.0.1:8080", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "local", "base_port", "65534", NULL), 0);
        check_validate(&c, -EINVAL,
                       "[local] key 'base_port': base_port + desired - 1 is beyond port 65535", 1);
        c.desired = 2;
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "pool", "networks", "198.18.0.0/15", NULL), 0);
        check_validate(&c, -EINVAL,
                       "[pool] key 'networks': the local provider's backends listen on 127.0.0.1", 1);
        assert_int_equal(config_set(&c, "local", "command", "/bin/relay {port}", NULL), 0);
        assert_int_equal(config_set(&c, "local", "upstream", "", NULL), 0);
        assert_int_equal(config_set(&c, "pool", "networks", "", NULL), 0);
        check_validate(&c, 0, NULL, 0);

        valid_config(&c);
        c.n_listen = 0;
        check_validate(&c, -EINVAL, "[lbd] key 'listen': at least one listen address is needed", 1);

        valid_config(&c);
        assert_int_equal(config_set(&c, "lbd", "listen", "127.0.0.1:80, 127.0.0.1:80", NULL), 0);
        check_validate(&c, -EINVAL, "[lbd] key 'listen': 127.0.0.1:80 is given twice", 1);

        valid_config(&c);
        assert_int_equal(config_set(&c, "lbd", "listen", "127.0.0.1:9180", NULL), 0);
        check_validate(&c, -EINVAL, "[lbd] key 'admin': 127.0.0.1:9180 is also a listen address", 1);
        assert_int_equal(config_set(&c, "lbd", "admin", "off", NULL), 0);
        check_validate(&c, 0, NULL, 0);

        valid_config(&c);
        assert_int_equal(netaddr_parse("192.0.2.1:9180", 0, false, &c.admin), 0);
        check_validate(&c, -EINVAL, "[lbd] key 'admin': must be a loopback address", 1);

        /* Backends outside the allowed networks are named. */
        valid_config(&c);
        assert_int_equal(config_set(&c, "pool", "backends", "127.0.0.1:80, 192.0.2.3:80, [::1]:80", NULL), 0);
        check_validate(&c, -EINVAL, "[pool] key 'backends': backend 192.0.2.3:80 is outside [pool] networks",
                       2);
        assert_int_equal(config_set(&c, "pool", "networks", "", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "pool", "networks", "127.0.0.0/8, 192.0.2.0/24, ::1", NULL), 0);
        check_validate(&c, 0, NULL, 0);

        /* An IPv4-mapped backend is inside an IPv4 network. */
        assert_int_equal(config_set(&c, "pool", "backends", "[::ffff:127.0.0.5]:80", NULL), 0);
        check_validate(&c, 0, NULL, 0);

        valid_config(&c);
        assert_int_equal(config_set(&c, "pool", "backends", "127.0.0.1:80, 127.0.0.2, 127.0.0.1:80", NULL),
                         0);
        check_validate(&c, -EINVAL, "[pool] key 'backends': backend 127.0.0.2 has no port", 2);
        config_finish(&c);
        check_validate(&c, -EINVAL, "backend 127.0.0.1:80 is listed twice", 1);
        assert_int_equal(config_set(&c, "pool", "backends", "127.0.0.1:80, 127.0.0.1", NULL), 0);
        config_finish(&c); /* port 80 */
        check_validate(&c, -EINVAL, "backend 127.0.0.1:80 is listed twice", 1);

        valid_config(&c);
        c.health_timeout_usec = 0;
        check_validate(&c, -EINVAL, "[health] key 'timeout': must be greater than 0", 1);
        c.health_interval_usec = 0;
        check_validate(&c, -EINVAL, "[health] key 'interval': must be greater than 0", 2);

        /* More than one loop with TLS to the backends and TLS listeners (loops.c). */
        valid_config(&c);
        c.threads = 2;
        check_validate(&c, 0, NULL, 0);
        c.backend_tls = true;
        memcpy(c.backend_ca, "/etc/lbd/ca.pem", sizeof("/etc/lbd/ca.pem"));
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "lbd", "listen", "127.0.0.1:8443 tls", NULL), 0);
        assert_int_equal(config_set(&c, "tls", "certificate", "/etc/lbd/site.pem /etc/lbd/site.key", NULL), 0);
        config_finish(&c);
        check_validate(&c, 0, NULL, 0);

        /* The health timeout may exceed the interval. */
        valid_config(&c);
        assert_int_equal(config_set(&c, "health", "timeout", "5s", NULL), 0);
        check_validate(&c, 0, NULL, 0);

        valid_config(&c);
        c.health_rise = 0;
        c.health_fall = 0;
        c.health_expect_min = 500;
        c.health_expect_max = 400;
        c.health_path[0] = 'x';
        c.max_connections = 0;
        c.port = 0;
        check_validate(&c, -EINVAL, "[health] key 'expect'", 6);

        /* Every problem is reported in one run, and the file name is used once known. */
        valid_config(&c);
        (void)snprintf(c.path, sizeof(c.path), "/etc/lbd/lbd.conf");
        c.n_listen = 0;
        c.provider = PROVIDER_EC2;
        c.health_timeout_usec = 0;
        check_validate(&c, -EINVAL, "/etc/lbd/lbd.conf: [ec2] key 'image'", 4);
}

/* [lease]: off by default; its timing must let the leader renew before it stops; names are restricted;
 * an empty name becomes the host name; the elastic IP needs the lease and the ec2 provider. */
static void test_lease(void **state)
{
        struct config c;
        char *log = NULL;

        config_init(&c);
        assert_false(config_lease_enabled(&c));
        assert_string_equal(c.lease_pool, "main");
        assert_int_equal(c.lease_duration_usec, 15 * USEC_PER_SEC);
        assert_int_equal(c.lease_renew_usec, 3 * USEC_PER_SEC);
        assert_int_equal(c.lease_margin_usec, 3 * USEC_PER_SEC);
        assert_int_equal(c.lease_timeout_usec, 2 * USEC_PER_SEC);

        assert_int_equal(load(&c, "[lease]\nname = lb a\n", &log), -EINVAL);
        assert_non_null(strstr(log, "[lease] key 'name': only ASCII letters, digits"));
        free(log);
        assert_int_equal(load(&c, "[lease]\nduration = 500ms\n", &log), -EINVAL);
        assert_non_null(strstr(log, "[lease] key 'duration'"));
        free(log);
        assert_int_equal(load(&c, "[lease]\nconninfo_file = lease.conf\n", &log), -EINVAL);
        assert_non_null(strstr(log, "[lease] key 'conninfo_file': must be an absolute file path"));
        free(log);

        valid_config(&c);
        c.n_backends = 0;
        c.provider = PROVIDER_EC2;
        assert_int_equal(config_set(&c, "ec2", "image", "ami-0123", NULL), 0);
        assert_int_equal(config_set(&c, "lease", "elastic_ip", "eipalloc-1", NULL), 0);
        check_validate(&c, -EINVAL, "[lease] key 'elastic_ip': needs conninfo_file", 1);
        assert_int_equal(config_set(&c, "lease", "conninfo_file", "/etc/lbd/lease.conninfo", NULL), 0);
        assert_true(config_lease_enabled(&c));
        check_validate(&c, -EINVAL, "[lease] key 'instance_id': elastic_ip needs this host's instance id", 1);
        assert_int_equal(config_set(&c, "lease", "instance_id", "i-0123", NULL), 0);
        config_finish(&c);
        assert_true(c.lease_name[0] != '\0');
        for (const char *p = c.lease_name; *p; p++)
                assert_true(config_lease_name_char(*p));
        check_validate(&c, 0, NULL, 0);

        assert_int_equal(config_set(&c, "lease", "margin", "15s", NULL), 0);
        check_validate(&c, -EINVAL, "[lease] key 'margin': must be shorter than duration", 1);
        assert_int_equal(config_set(&c, "lease", "margin", "10s", NULL), 0);
        check_validate(&c, -EINVAL, "[lease] key 'renew': renew + timeout must be shorter than duration - margin",
                       1);
        assert_int_equal(config_set(&c, "lease", "margin", "3s", NULL), 0);
        assert_int_equal(config_set(&c, "lease", "timeout", "4s", NULL), 0);
        check_validate(&c, -EINVAL, "[lease] key 'timeout': must be at most renew", 1);
        assert_int_equal(config_set(&c, "lease", "timeout", "2s", NULL), 0);
        assert_int_equal(config_set(&c, "lease", "duration", "11m", NULL), 0);
        check_validate(&c, -EINVAL, "[lease] key 'duration': must be at most 10m", 1);
        assert_int_equal(config_set(&c, "lease", "duration", "15s", NULL), 0);
        check_validate(&c, 0, NULL, 0);

        /* The lease listener and the other hosts' addresses. */
        assert_false(c.lease_listen_set);
        assert_int_equal(c.n_lease_peers, 0);
        check_bad("lease", "listen", "0.0.0.0", "must be empty or a numeric address with a port");
        check_bad("lease", "listen", "lb-b:9181", "must be empty or a numeric address with a port");
        check_bad("lease", "listen", "0.0.0.0:70000", "port must be between 1 and 65535");
        check_bad("lease", "peers", "192.0.2.7", "is not a numeric address with a port");
        check_bad("lease", "peers", "192.0.2.1:1, 192.0.2.2:1, 192.0.2.3:1, 192.0.2.4:1, 192.0.2.5:1, 192.0.2.6:1, "
                                    "192.0.2.7:1, 192.0.2.8:1, 192.0.2.9:1",
                  "too many addresses (at most 8)");
        assert_int_equal(config_set(&c, "lease", "listen", "0.0.0.0:9181", NULL), 0);
        assert_int_equal(config_set(&c, "lease", "peers", "192.0.2.7:9181, [2001:db8::7]:9181", NULL), 0);
        assert_true(c.lease_listen_set);
        assert_int_equal(c.n_lease_peers, 2);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "lease", "listen", "127.0.0.1:9180", NULL), 0);
        check_validate(&c, -EINVAL, "[lease] key 'listen': is also the admin address", 1);
        assert_int_equal(config_set(&c, "lease", "listen", "", NULL), 0);
        assert_false(c.lease_listen_set);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "lease", "elastic_ip", "", NULL), 0);
        assert_int_equal(config_set(&c, "lease", "conninfo_file", "", NULL), 0);
        check_validate(&c, -EINVAL, "[lease] key 'peers': needs conninfo_file", 1);
        assert_int_equal(config_set(&c, "lease", "peers", "", NULL), 0);
        assert_int_equal(config_set(&c, "lease", "conninfo_file", "/etc/lbd/lease.conninfo", NULL), 0);

        /* The static provider acts on nothing: a lease there is a mistake. */
        c.provider = PROVIDER_STATIC;
        assert_int_equal(config_set(&c, "lease", "elastic_ip", "", NULL), 0);
        assert_int_equal(config_set(&c, "pool", "backends", "127.0.0.1:8001", NULL), 0);
        check_validate(&c, -EINVAL, "[lease] key 'conninfo_file': the static provider never acts", 1);
}

static void test_upgrades(void **state)
{
        struct config c;

        config_init(&c);
        assert_string_equal(c.upgrades, "websocket");
        assert_int_equal(config_set(&c, "lbd", "upgrades", "off", NULL), 0);
        assert_string_equal(c.upgrades, "");
        assert_int_equal(config_set(&c, "lbd", "upgrades", " WebSocket , h2c/1.0,x ", NULL), 0);
        assert_string_equal(c.upgrades, "WebSocket,h2c/1.0,x");
        assert_int_equal(config_set(&c, "lbd", "upgrades", "", NULL), 0);
        assert_string_equal(c.upgrades, "");
        assert_int_equal(load(&c, "[lbd]\nupgrades = websocket\n", NULL), 0);
        assert_string_equal(c.upgrades, "websocket");

        check_bad("lbd", "upgrades", "web socket", "'web socket' is not a protocol");
        check_bad("lbd", "upgrades", "websocket,,h2c", "empty entry");
        check_bad("lbd", "upgrades", "websocket/", "is not a protocol");
        check_bad("lbd", "upgrades", "/13", "is not a protocol");
        check_bad("lbd", "upgrades", "a/b/c", "is not a protocol");
        check_bad("lbd", "upgrades", "ws(x)", "is not a protocol");
        check_bad("lbd", "upgrades",
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                  "the list is longer than 255 bytes");
}

/* [tls] and the listeners' options: defaults, a file, bad values, and the checks across keys. */
static void test_tls(void **state)
{
        struct config c;
        char text[4096];
        size_t n = 0;

        config_init(&c);
        assert_int_equal(c.n_certs, 0);
        assert_int_equal(c.tls_profile, TLS_PROFILE_INTERMEDIATE);
        assert_true(c.tls_tickets);
        assert_int_equal(c.tls_ticket_rotate_usec, 3600 * SEC);
        assert_int_equal(c.tls_session_cache, 20000);
        assert_false(c.tls_strict_sni);
        assert_int_equal(c.tls_hsts_max_age, 0);
        assert_string_equal(c.acme_dir, "");
        assert_false(c.backend_tls);
        assert_false(config_has_tls(&c));
        assert_false(c.listen_tls[0] || c.listen_redirect[0]);

        assert_int_equal(load(&c,
                              "[lbd]\nlisten = 127.0.0.1:80 redirect, 127.0.0.1:443 tls\nlisten = [::1]:8443\ttls\n"
                              "[tls]\ncertificate = /etc/a.pem /etc/a.key\ncertificate = /etc/b.pem\n"
                              "profile = modern\ntickets = off\nticket_rotate = 30m\nsession_cache = 0\n"
                              "strict_sni = on\nhsts = 63072000\nacme_challenge_dir = /var/lib/acme\n"
                              "backend = on\nbackend_ca = /etc/ca.pem\nbackend_name = web.internal\n",
                              NULL),
                         0);
        assert_int_equal(c.n_listen, 3);
        check_addr(&c.listen[2], "[::1]:8443");
        assert_true(c.listen_redirect[0] && !c.listen_tls[0]);
        assert_true(c.listen_tls[1] && !c.listen_redirect[1]);
        assert_true(c.listen_tls[2]);
        assert_true(config_has_tls(&c));
        assert_int_equal(c.n_certs, 2);
        assert_string_equal(c.certs[0].cert, "/etc/a.pem");
        assert_string_equal(c.certs[0].key, "/etc/a.key");
        assert_string_equal(c.certs[1].key, "/etc/b.pem"); /* one file for both */
        assert_int_equal(c.tls_profile, TLS_PROFILE_MODERN);
        assert_false(c.tls_tickets);
        assert_int_equal(c.tls_ticket_rotate_usec, 1800 * SEC);
        assert_int_equal(c.tls_session_cache, 0);
        assert_true(c.tls_strict_sni);
        assert_int_equal(c.tls_hsts_max_age, 63072000);
        assert_string_equal(c.acme_dir, "/var/lib/acme");
        assert_true(c.backend_tls);
        assert_string_equal(c.backend_name, "web.internal");
        assert_string_equal(config_tls_profile_name(c.tls_profile), "modern");

        /* A later source replaces the list, and the options with it. */
        assert_int_equal(config_set(&c, "lbd", "listen", "127.0.0.1:81", NULL), 0);
        assert_int_equal(c.n_listen, 1);
        assert_false(c.listen_tls[0] || c.listen_redirect[0]);

        check_bad("lbd", "listen", "127.0.0.1:443 ssl", "unknown option 'ssl' (known: tls, redirect)");
        check_bad("lbd", "listen", "127.0.0.1:443 tls redirect", "unknown option");
        check_bad("lbd", "listen", "tls", "not a numeric address");
        check_bad("tls", "certificate", "relative.pem", "must be an absolute certificate path");
        check_bad("tls", "certificate", "/a.pem key.pem", "must be an absolute certificate path");
        check_bad("tls", "certificate", "/a.pem /a.key /b", "must be an absolute certificate path");
        check_bad("tls", "certificate", "/a\x01.pem", "must be an absolute certificate path");
        check_bad("tls", "profile", "old", "must be one of: intermediate modern");
        check_bad("tls", "tickets", "maybe", "must be on or off");
        check_bad("tls", "ticket_rotate", "0", "must be greater than 0");
        check_bad("tls", "session_cache", "1000001", "between 0 and 1000000");
        check_bad("tls", "hsts", "63072001", "between 0 and 63072000");
        check_bad("tls", "acme_challenge_dir", "acme", "must be an absolute file path");
        check_bad("tls", "backend_name", "web internal", "only printable ASCII without blanks");

        /* At most CONFIG_MAX_CERTS certificates. */
        n += (size_t)snprintf(text, sizeof(text), "[tls]\n");
        for (int i = 0; i <= CONFIG_MAX_CERTS; i++)
                n += (size_t)snprintf(text + n, sizeof(text) - n, "certificate = /c%d.pem\n", i);
        assert_int_equal(load(&c, text, NULL), -EINVAL);

        /* Across keys: a tls listener needs a certificate, the challenge a plain listener, backend TLS a CA. */
        valid_config(&c);
        assert_int_equal(config_set(&c, "lbd", "listen", "127.0.0.1:443 tls", NULL), 0);
        check_validate(&c, -EINVAL, "[tls] key 'certificate': a listener is tls: at least one certificate", 1);
        assert_int_equal(config_set(&c, "tls", "certificate", "/a.pem", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "tls", "acme_challenge_dir", "/acme", NULL), 0);
        check_validate(&c, -EINVAL, "[tls] key 'acme_challenge_dir': the challenge is served on a plain", 1);
        assert_int_equal(config_set(&c, "lbd", "listen", "127.0.0.1:80 redirect, 127.0.0.1:443 tls", NULL), 0);
        check_validate(&c, 0, NULL, 0);
        assert_int_equal(config_set(&c, "tls", "backend", "on", NULL), 0);
        check_validate(&c, -EINVAL, "[tls] key 'backend_ca': backend = on needs the CA file", 1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),         cmocka_unit_test(test_names),
                cmocka_unit_test(test_full_example),     cmocka_unit_test(test_lists),
                cmocka_unit_test(test_bad_values),       cmocka_unit_test(test_set),
                cmocka_unit_test(test_secret_hidden),    cmocka_unit_test(test_load_errors),
                cmocka_unit_test(test_load_file_errors), cmocka_unit_test(test_finish),
                cmocka_unit_test(test_validate), cmocka_unit_test(test_in_networks),         cmocka_unit_test(test_upgrades),
                cmocka_unit_test(test_tls), cmocka_unit_test(test_lease),
        };

        return cmocka_run_group_tests(tests, dir_setup, dir_teardown);
}

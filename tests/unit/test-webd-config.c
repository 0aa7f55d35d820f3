/* Unit tests for webd/config.c: the documented defaults, a complete file, every key's error path with
 * the message users see, secrets kept out of messages, the setter and config_validate(). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "common/macro.h"
#include "webd/config.h"
#include "tests/unit/fixture.h"

static char *write_file(const char *text)
{
        return fixture_write_file("/tmp/test-webd-config-XXXXXX", text);
}

static void test_defaults(void **state)
{
        struct config c;
        char buf[NETADDR_STRLEN];

        config_init(&c);
        assert_true(netaddr_format(&c.listen, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, "127.0.0.1:8080");
        assert_string_equal(c.database, "");
        assert_int_equal(c.pool_size, 4);
        assert_string_equal(c.secret_file, "/var/lib/webd/jwt.key");
        assert_int_equal(c.token_ttl_usec, 3600 * USEC_PER_SEC);
        assert_int_equal(c.max_body_size, 64 * 1024);
        assert_int_equal(c.request_timeout_usec, 10 * USEC_PER_SEC);
        assert_int_equal(c.max_connections, 10000);
        assert_int_equal(c.max_header_size, 16 * 1024);
        assert_int_equal(c.header_timeout_usec, 10 * USEC_PER_SEC);
        assert_int_equal(c.body_timeout_usec, 30 * USEC_PER_SEC);
        assert_int_equal(c.idle_timeout_usec, 30 * USEC_PER_SEC);
        assert_int_equal(c.startup_timeout_usec, 30 * USEC_PER_SEC);
        assert_int_equal(c.log_level, LOG_INFO);
        assert_true(c.activity);
        assert_int_equal(c.n_trusted_proxies, 2);
        assert_true(netaddr_cidr_contains(&c.trusted_proxies[0], &(struct netaddr){
                                                                         .u.in = {.sin_family = AF_INET,
                                                                                  .sin_addr = {htonl(0x7f000009)}},
                                                                         .len = sizeof(struct sockaddr_in),
                                                                 }));
        assert_int_equal(c.trusted_proxies[1].family, AF_INET6);
        assert_int_equal(c.login_failures, 5);
        assert_int_equal(c.login_address_failures, 20);
        assert_int_equal(c.login_account_failures, 100);
        assert_int_equal(c.login_max_delay_usec, 300 * USEC_PER_SEC);
        assert_int_equal(c.login_throttle_entries, 16384);
        assert_int_equal(c.activity_retention_usec, UINT64_C(90) * 86400 * USEC_PER_SEC);
        assert_int_equal(c.activity_sweep_usec, 60 * USEC_PER_SEC);
        /* No database yet: not valid. */
        assert_int_equal(config_validate(&c), -EINVAL);
}

static void test_full_file(void **state)
{
        char *path = write_file("; webd\n[webd]\nlisten = [::1]:9000\n"
                                "database = host=/run/postgresql dbname=webd user=webd\n"
                                "pool_size = 16 ; more\ntoken_ttl = 15m\nmax_body_size = 1M\n"
                                "request_timeout = 2.5s\nstartup_timeout = 0\nlog_level = debug\n"
                                "activity = off\nsecret_file = /etc/webd/key\n"
                                "trusted_proxies = 198.51.100.0/24, fd00::/8 , 192.0.2.7\nlogin_failures = 3\n"
                                "login_address_failures = 9\nlogin_account_failures = 50\nlogin_max_delay = 1m\n"
                                "login_throttle_entries = 2048\n");
        struct config c;
        char buf[NETADDR_STRLEN];

        config_init(&c);
        assert_int_equal(config_load_file(&c, path), 0);
        assert_true(netaddr_format(&c.listen, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, "[::1]:9000");
        assert_string_equal(c.database, "host=/run/postgresql dbname=webd user=webd");
        assert_int_equal(c.pool_size, 16);
        assert_int_equal(c.token_ttl_usec, 900 * USEC_PER_SEC);
        assert_int_equal(c.max_body_size, 1024 * 1024);
        assert_int_equal(c.request_timeout_usec, 2500 * USEC_PER_MSEC);
        assert_int_equal(c.startup_timeout_usec, 0);
        assert_int_equal(c.log_level, LOG_DEBUG);
        assert_false(c.activity);
        assert_string_equal(c.secret_file, "/etc/webd/key");
        assert_int_equal(c.n_trusted_proxies, 3);
        assert_int_equal(c.trusted_proxies[1].prefix, 8);
        assert_int_equal(c.trusted_proxies[2].prefix, 32);
        assert_int_equal(c.login_failures, 3);
        assert_int_equal(c.login_address_failures, 9);
        assert_int_equal(c.login_account_failures, 50);
        assert_int_equal(c.login_max_delay_usec, 60 * USEC_PER_SEC);
        assert_int_equal(c.login_throttle_entries, 2048);
        assert_string_equal(c.path, path);
        assert_int_equal(config_validate(&c), 0);
        unlink(path);
        free(path);
}

static void test_bad_keys(void **state)
{
        static const struct {
                const char *line, *expect;
        } cases[] = {
                {"listen = 1.2.3.4", "numeric address with a port"},
                {"listen = host:80", "numeric address"},
                {"pool_size = 0", "between 1 and 64"},
                {"pool_size = 65", "between 1 and 64"},
                {"token_ttl = 0", "at least 1000 ms"},
                {"token_ttl = 90.5s", "whole number of seconds"},
                {"max_body_size = 100", "between 1024 and"},
                {"max_body_size = 17M", "between 1024 and"},
                {"request_timeout = 1ms", "at least 10 ms"},
                {"max_connections = 15", "between 16 and 1000000"},
                {"max_connections = 1000001", "between 16 and 1000000"},
                {"max_header_size = 1000", "between 1024 and"},
                {"max_header_size = 2M", "between 1024 and"},
                {"header_timeout = 0", "at least 100 ms"},
                {"body_timeout = 50ms", "at least 100 ms"},
                {"idle_timeout = soon", "not a duration"},
                {"startup_timeout = forever", "not a duration"},
                {"log_level = chatty", "debug info notice warning error"},
                {"activity = sometimes", "on or off"},
                {"secret_file = key", "absolute path"},
                {"database = not a conninfo", "libpq connection string"},
                {"nonsense = 1", "unknown key"},
                {"trusted_proxies = 198.51.100.1/24", "not a network"},
                {"trusted_proxies = relay.example", "not a network"},
                {"trusted_proxies = 198.51.100.0/24,,::1", "empty entry"},
                {"trusted_proxies = 1.0.0.0/8, 2.0.0.0/8, 3.0.0.0/8, 4.0.0.0/8, 5.0.0.0/8, 6.0.0.0/8, 7.0.0.0/8, "
                 "8.0.0.0/8, 9.0.0.0/8, 34.0.0.0/8, 11.0.0.0/8, 12.0.0.0/8, 13.0.0.0/8, 14.0.0.0/8, 15.0.0.0/8, "
                 "16.0.0.0/8, 17.0.0.0/8, 18.0.0.0/8, 19.0.0.0/8, 20.0.0.0/8, 21.0.0.0/8, 22.0.0.0/8, 23.0.0.0/8, "
                 "24.0.0.0/8, 25.0.0.0/8, 26.0.0.0/8, 27.0.0.0/8, 28.0.0.0/8, 29.0.0.0/8, 30.0.0.0/8, 31.0.0.0/8, "
                 "32.0.0.0/8, 33.0.0.0/8", "more than 32"},
                {"login_failures = 0", "between 1 and 1000"},
                {"login_address_failures = 10001", "between 1 and 10000"},
                {"login_account_failures = x", "between 1 and 100000"},
                {"login_max_delay = 0.5s", "at least 1000 ms"},
                {"login_throttle_entries = 100", "between 1024 and 1048576"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char text[1024], *path, *log, where[128];
                struct capture cap;
                struct config c;

                (void)snprintf(text, sizeof(text), "[webd]\n%s\n", cases[i].line);
                path = write_file(text);
                config_init(&c);
                capture_begin(&cap);
                assert_int_equal(config_load_file(&c, path), -EINVAL);
                log = capture_end(&cap);
                (void)snprintf(where, sizeof(where), "%s:2: [webd] key '", path);
                assert_non_null(strstr(log, where));
                assert_non_null(strstr(log, cases[i].expect));
                free(log);
                unlink(path);
                free(path);
        }
}

/* [activity] retention: off/0, or a whole number with a unit from 1h to 36500d (beyond the 30 days that
 * durations stop at); no unit, a fraction, too short or too long are refused with a reason. */
static void test_retention(void **state)
{
        static const struct {
                const char *value;
                int error;
                uint64_t seconds;
        } cases[] = {
                { "90d", 0, UINT64_C(90) * 86400 },
                { "off", 0, 0 },
                { "0", 0, 0 },
                { "1h", 0, 3600 },
                { "60m", 0, 3600 },
                { "3600s", 0, 3600 },
                { "400d", 0, UINT64_C(400) * 86400 },
                { "36500d", 0, UINT64_C(36500) * 86400 },
                { "36501d", -EINVAL, 0 },
                { "59m", -EINVAL, 0 },
                { "90", -EINVAL, 0 },
                { "2.5d", -EINVAL, 0 },
                { "d", -EINVAL, 0 },
                { "-1d", -EINVAL, 0 },
                { "90dd", -EINVAL, 0 },
                { "90w", -EINVAL, 0 },
                { "99999999999999999999d", -EINVAL, 0 },
                { "", -EINVAL, 0 },
                { "never", -EINVAL, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct capture cap;
                struct config c;
                char *log;

                print_message("retention '%s'\n", cases[i].value);
                config_init(&c);
                capture_begin(&cap);
                assert_int_equal(config_set(&c, "activity", "retention", cases[i].value, NULL), cases[i].error);
                log = capture_end(&cap);
                if (cases[i].error == 0)
                        assert_int_equal(c.activity_retention_usec, cases[i].seconds * USEC_PER_SEC);
                else
                        assert_non_null(strstr(log, "[activity] key 'retention'"));
                free(log);
        }

        /* In a file, with the interval. */
        {
                char *path = write_file("[activity]\nretention = 365d\nretention_interval = 10m\n");
                struct config c;

                config_init(&c);
                assert_int_equal(config_load_file(&c, path), 0);
                assert_int_equal(c.activity_retention_usec, UINT64_C(365) * 86400 * USEC_PER_SEC);
                assert_int_equal(c.activity_sweep_usec, 600 * USEC_PER_SEC);
                unlink(path);
                free(path);
        }
        {
                struct capture cap;
                struct config c;
                char *log;

                config_init(&c);
                capture_begin(&cap);
                assert_int_equal(config_set(&c, "activity", "retention_interval", "500ms", NULL), -EINVAL);
                log = capture_end(&cap);
                free(log);
        }
}

static void test_secrets_hidden(void **state)
{
        char *path = write_file("[webd]\ndatabase = host=x password=TopSecret1 =broken\n"
                                "secret_file = relative/TopSecret2\n[other]\npassword = TopSecret3\n");
        struct capture cap;
        struct config c;
        char *log;

        config_init(&c);
        capture_begin(&cap);
        assert_int_equal(config_load_file(&c, path), -EINVAL);
        assert_int_equal(config_set(&c, "webd", "database", "password=TopSecret4 x", "--database"), -EINVAL);
        log = capture_end(&cap);
        assert_non_null(strstr(log, "value hidden"));
        assert_null(strstr(log, "TopSecret"));
        assert_non_null(strstr(log, "unknown section"));
        free(log);
        unlink(path);
        free(path);
}

static void test_set(void **state)
{
        struct config c;

        config_init(&c);
        assert_int_equal(config_set(&c, "webd", "database", "dbname=webd", "WEBD_DATABASE"), 0);
        assert_int_equal(config_set(&c, "webd", "pool_size", "2", NULL), 0);
        assert_int_equal(c.pool_size, 2);
        assert_int_equal(config_set(&c, "webd", "pool_size", "x", NULL), -EINVAL);
        assert_int_equal(c.pool_size, 2);
        assert_int_equal(config_set(&c, "", "pool_size", "2", NULL), -EINVAL);
        assert_int_equal(config_set(&c, "lbd", "listen", "1.2.3.4:80", NULL), -EINVAL);
        assert_int_equal(config_validate(&c), 0);
        /* An empty list trusts no relay; a list replaces the default. */
        assert_int_equal(config_set(&c, "webd", "trusted_proxies", "", NULL), 0);
        assert_int_equal(c.n_trusted_proxies, 0);
        assert_int_equal(config_set(&c, "webd", "trusted_proxies", "198.51.100.0/24", NULL), 0);
        assert_int_equal(c.n_trusted_proxies, 1);
        assert_int_equal(config_set(&c, "webd", "trusted_proxies", "198.51.100.0/24, bad", NULL), -EINVAL);
        assert_int_equal(c.n_trusted_proxies, 1);
        assert_int_equal(config_set(&c, "webd", "login_max_delay", "2h", NULL), 0);
        assert_int_equal(config_validate(&c), -EINVAL);
}

static void test_missing_file(void **state)
{
        struct capture cap;
        struct config c;
        char *log;

        config_init(&c);
        capture_begin(&cap);
        assert_true(config_load_file(&c, "/nonexistent/webd.conf") < 0);
        log = capture_end(&cap);
        free(log);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),   cmocka_unit_test(test_full_file),
                cmocka_unit_test(test_bad_keys),   cmocka_unit_test(test_secrets_hidden),
                cmocka_unit_test(test_set),        cmocka_unit_test(test_missing_file),
                cmocka_unit_test(test_retention),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

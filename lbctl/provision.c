/* `lbctl provision`: creates what an lbd pool needs in EC2, or finds it when it is already there, and
 * prints what lbd's configuration needs to know about it.
 *
 *   lbctl provision --subnet SUBNET [--region R] [--endpoint URL] [--credentials-file FILE] [--profile P]
 *       [--tag KEY=VALUE] [--name PREFIX] [--lb-port N] [--backend-port N] [--web-port N]
 *       [--ssh-cidr CIDR] [--image AMI] [--instance-type TYPE] [--key-name NAME]
 *       [--web-user-data FILE] [--no-web] [--bake-from INSTANCE_ID] [--json]
 *
 * In order, each step idempotent (a second run finds everything and changes nothing):
 *   1. the subnet (DescribeSubnets) gives the VPC;
 *   2. three security groups in that VPC, found by name or created, tagged with the pool's tag:
 *      <prefix>-lb (the LB port from 0.0.0.0/0 and ::/0), <prefix>-backend (the backend port from the lb
 *      group only), <prefix>-web (the web port from the backend group only), and SSH from --ssh-cidr into
 *      each when given. Existing rules are compared first; only missing ones are added (a "Duplicate"
 *      answer counts as present). Other rules found in these groups are reported, never removed;
 *   3. the image: --image, or the newest Ubuntu LTS amd64 server image of Canonical (owner
 *      099720109477) by creation date; with --bake-from, CreateImage of that instance under a name derived
 *      from it (found again on a second run), waited for until available: it becomes LBD_IMAGE, while the
 *      web host still boots from the first;
 *   4. the web host (unless --no-web): an instance with the pool's tag and lbd:role=web, pending or
 *      running; else RunInstances in the subnet with the web group and --web-user-data, with a ClientToken
 *      derived from the pool, so a retried or repeated launch never makes two; then its private address.
 *
 * Everything goes through the AWS client that lbd uses too (aws/ec2.c: SigV4, the SDK's credentials chain,
 * retries with backoff) on a libevent loop that this command runs until each answer arrives: one call at a
 * time, the order above. Answers are parsed by provision-parse.c. stdout carries only the result (KEY=VALUE
 * lines or one JSON object); what was found and what was created is logged on stderr.
 *
 * Exit status: 0 done, 1 an EC2 call failed (its action and error code are logged), 2 bad usage, 3 AWS
 * credentials missing or refused. */
#include "lbctl/provision.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aws/awscred.h"
#include "aws/ec2.h"
#include "common/cjson.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/netaddr.h"
#include "common/parse.h"
#include "common/template.h"
#include "lbctl/provision-parse.h"
#include "lbctl/provision-tls.h"

#define PROVISION_CANONICAL       "099720109477"
#define PROVISION_UBUNTU_PATTERN  "ubuntu/images/hvm-ssd*/ubuntu-*-amd64-server-*"
#define PROVISION_ROLE_KEY        EC2_ROLE_TAG
#define PROVISION_ROLE_WEB        "web"
#define PROVISION_ROLE_LB         "lb"
#define PROVISION_LEASE_PORT      9181 /* the LB hosts' lease listeners ([lease] listen, the installer's) */
#define PROVISION_PREFIX_MAX      64
#define PROVISION_VALUE_MAX       128 /* an output value */
#define PROVISION_IMAGE_PAGES     10
#define PROVISION_IMAGE_PAGE_SIZE "1000"
#define PROVISION_INSTANCE_PAGES  10
#define PROVISION_IMAGE_WAIT_USEC (45 * 60 * USEC_PER_SEC)
#define PROVISION_IMAGE_POLL_USEC (15 * USEC_PER_SEC)
#define PROVISION_WEB_WAIT_USEC   (10 * 60 * USEC_PER_SEC)
#define PROVISION_WEB_POLL_USEC   (3 * USEC_PER_SEC)
#define PROVISION_GROUP_ROUNDS    3
#define PROVISION_WEB_TLS_DIR     "/etc/lbd/web-tls"
#define PROVISION_WEB_NAME        "web.lbd.internal"
#define PROVISION_RELAY_NAME      "relay.lbd.internal"
#define PROVISION_WEB_CERT_VAR    "{{web_tls_cert}}"
#define PROVISION_WEB_KEY_VAR     "{{web_tls_key}}"

enum { GROUP_LB, GROUP_BACKEND, GROUP_WEB, N_GROUPS };

static const char *const provision_group_roles[N_GROUPS] = {"lb", "backend", "web"};
static const char *const provision_group_descriptions[N_GROUPS] = {
        "lbd load balancer: clients from anywhere",
        "lbd backends: from the load balancer only",
        "lbd web host: from the backends only",
};

struct provision_options {
        const char *subnet;
        const char *region;
        const char *endpoint;
        const char *credentials_file;
        const char *profile;
        char tag_key[PROVISION_TAG_KEY_MAX];
        char tag_value[PROVISION_TAG_VALUE_MAX];
        const char *prefix;
        unsigned lb_port, backend_port, web_port;
        bool ssh;
        char ssh_cidr[PROVISION_CIDR_MAX]; /* canonical text */
        enum provision_source ssh_kind;
        const char *image;
        const char *instance_type;
        const char *key_name;
        const char *web_user_data_path;
        char *web_user_data; /* the file's bytes */
        size_t web_user_data_len;
        bool no_web;
        const char *lb_user_data_path; /* --lb-peer: the second LB host's user data */
        char *lb_user_data;
        size_t lb_user_data_len;
        const char *bake_from;
        bool elastic_ip;
        bool json;
        const char *web_tls_dir; /* the private CA and webd's last certificate */
        const char *web_name;    /* the DNS name in webd's certificate, which the relays check */
        bool web_plain;          /* --web-plain-http */
        bool web_placeholders;   /* the web user data has both of webd's certificate placeholders */
        bool renew_web_cert;
        const char *relay_name; /* the DNS name in the relays' certificate, which lbd checks */
        bool relay_plain;       /* --relay-plain-http */
};

struct provision {
        const struct provision_options *o;
        struct event_base *base;
        struct ec2 *ec2;
        int exit_status; /* of the first failure */
        char vpc[EC2_ID_MAX];
        char group_names[N_GROUPS][PROVISION_NAME_MAX];
        char groups[N_GROUPS][EC2_ID_MAX];
        char base_image[EC2_ID_MAX]; /* --image or Ubuntu's: the web host's */
        char image[EC2_ID_MAX];      /* LBD_IMAGE: the baked one, else base_image */
        char web_instance[EC2_ID_MAX];
        char web_ip[EC2_ADDR_MAX];
        char upstream[PROVISION_VALUE_MAX];
        struct provision_address address; /* --elastic-ip */
        char lb_peer[EC2_ID_MAX];         /* --lb-peer: the second LB host */
        char lb_peer_ip[EC2_ADDR_MAX];
        struct provision_tls_ca ca;       /* the web tier's private CA, unless --web-plain-http */
        char web_ca[PROVISION_VALUE_MAX]; /* LBD_WEB_CA: its certificate's path; "" = plain HTTP */
        char web_name[PROVISION_VALUE_MAX];
        char relay_cert[PROVISION_VALUE_MAX]; /* LBD_RELAY_CERT: "" = the relays listen in plain HTTP */
        char relay_key[PROVISION_VALUE_MAX];
        char *web_user_data;              /* rendered for a launch: webd's certificate and key in it */
        size_t web_user_data_len;
};

/* One answer, copied out of ec2_query()'s callback. */
struct provision_answer {
        bool done;
        int r;
        char error[EC2_ERROR_MAX];
        char code[EC2_CODE_MAX];
        char *xml;
        size_t len;
};

static void provision_answer_clear(struct provision_answer *a)
{
        free(a->xml);
        *a = (struct provision_answer){0};
}

static void provision_help(void)
{
        printf("Usage: lbctl provision --subnet SUBNET [OPTIONS]\n"
               "\n"
               "Creates in EC2 what an lbd pool needs, or finds it when it is already there, and prints\n"
               "the settings lbd's configuration takes from it. Running it again creates nothing new.\n"
               "\n"
               "  1. the subnet's VPC;\n"
               "  2. security groups in that VPC, by name, tagged with the pool's tag:\n"
               "       PREFIX-lb       LB port from anywhere (0.0.0.0/0 and ::/0)\n"
               "       PREFIX-backend  backend port from PREFIX-lb only\n"
               "       PREFIX-web      web port from PREFIX-backend only\n"
               "     plus SSH (22) from --ssh-cidr into each when given; nothing else, PostgreSQL never.\n"
               "     Missing rules are added; other rules found are reported, not removed;\n"
               "  3. the image: --image, else the newest Ubuntu LTS amd64 server image published by\n"
               "     Canonical (owner " PROVISION_CANONICAL
               "); with --bake-from, an image of that instance\n"
               "     (named PREFIX-backend-INSTANCE_ID), waited for until available;\n"
               "  4. the web host: the instance tagged with the pool's tag and " PROVISION_ROLE_KEY
               "=" PROVISION_ROLE_WEB ",\n"
               "     pending or running; else one launched in the subnet with PREFIX-web, the web user\n"
               "     data, and a client token derived from the pool (never two). Unless --web-plain-http,\n"
               "     webd serves HTTPS: the pool's private CA (made once in --web-tls-dir, its key 0600\n"
               "     there only) issues webd's certificate for --web-name (825 days), which goes into the\n"
               "     web user data's {{web_tls_cert}} and {{web_tls_key}}; the relays verify it against\n"
               "     LBD_WEB_CA and LBD_WEB_NAME ([ec2] upstream_ca and upstream_name).\n"
               "  5. unless --relay-plain-http, the relays' certificate for --relay-name from the same CA,\n"
               "     with its key (relay.pem, relay.key 0600 in --web-tls-dir; renewed with fewer than 30\n"
               "     days left): lbd puts both into each backend's user data, the relays listen with TLS,\n"
               "     and lbd verifies them against the CA and that name.\n"               "\n");
        printf("Options:\n"
               "  --subnet SUBNET          subnet of the pool and the web host (required)\n"
               "  --region R               AWS region (default: AWS_REGION, AWS_DEFAULT_REGION,\n"
               "                           ~/.aws/config, the instance metadata)\n"
               "  --endpoint URL           EC2 endpoint (default: AWS_ENDPOINT_URL_EC2,\n"
               "                           AWS_ENDPOINT_URL, the region's)\n"
               "  --credentials-file FILE  read the access key from FILE (INI, like\n"
               "                           ~/.aws/credentials); default: the SDKs' chain (environment,\n"
               "                           shared files, instance role)\n"
               "  --profile P              profile in the credentials and config files\n"
               "  --tag KEY=VALUE          the pool's tag (default lbd:pool=main)\n"
               "  --name PREFIX            security group and instance names (default lbd)\n"
               "  --lb-port N              port clients reach the load balancer on (default 80)\n"
               "  --backend-port N         port of the backends (default 80)\n"
               "  --web-port N             port of webd on the web host (default 8080)\n"
               "  --ssh-cidr CIDR          allow SSH from this network (default: none; a /0 is refused)\n"
               "  --image AMI              image of the pool and the web host (default: Ubuntu LTS)\n"
               "  --instance-type TYPE     web host's instance type (default t3.micro)\n"
               "  --key-name NAME          EC2 key pair for the web host\n"
               "  --web-user-data FILE     web host's user data (at most 16384 bytes); needed to launch it\n"
               "  --no-web                 no web host: neither looked for nor launched\n"
               "  --bake-from INSTANCE_ID  make the pool's image from this instance\n"
               "  --elastic-ip             the pool's Elastic IP (for two LB hosts with [lease]): the\n"
               "                           address tagged with the pool's tag, else one allocated with it;\n"
               "                           prints LBD_ELASTIC_IP (allocation id) and LBD_PUBLIC_IP\n"
               "  --lb-peer FILE           the second LB host (two LB hosts with [lease]): the instance\n"
               "                           tagged with the pool's tag and " PROVISION_ROLE_KEY "=" PROVISION_ROLE_LB ", else one\n"
               "                           launched with PREFIX-lb and this user data (never two); prints\n"
               "                           LBD_LB_PEER_INSTANCE and LBD_LB_PEER_IP; the LB group lets the LB\n"
               "                           hosts reach each other's lease listener (port 9181)\n"
               "  --web-tls-dir DIR        the web tier's private CA: ca.pem, ca.key (0600) and webd's\n"
               "                           last certificate web.pem (default " PROVISION_WEB_TLS_DIR ")\n"
               "  --web-name NAME          the DNS name in webd's certificate (default " PROVISION_WEB_NAME ")\n"
               "  --web-plain-http         no TLS between the relays and webd (not recommended)\n"
               "  --renew-web-cert         renew webd's certificate now (a run renews it anyway with\n"
               "                           fewer than 30 days left)\n"
               "  --relay-name NAME        the DNS name in the relays' certificate (default " PROVISION_RELAY_NAME ")\n"
               "  --relay-plain-http       no TLS between lbd and the relays (not recommended)\n"
               "  --json                   print one JSON object instead of KEY=VALUE lines\n"
               "  -h, --help               show this help\n"
               "\n"
               "Output (stdout), one KEY=VALUE a line, values of [A-Za-z0-9._:/-] only (empty when there\n"
               "is no web host):\n"
               "  LBD_VPC LBD_SUBNET LBD_SECURITY_GROUP_LB LBD_SECURITY_GROUP_BACKEND\n"
               "  LBD_SECURITY_GROUP_WEB LBD_IMAGE LBD_WEB_INSTANCE LBD_UPSTREAM (web host's ip:web-port)\n"
               "  and when the relays verify webd: LBD_WEB_CA (the CA certificate's path) LBD_WEB_NAME\n"
               "  (not with --web-plain-http, a web user data without the placeholders, or a web host\n"
               "  found with no certificate recorded from the CA)\n"
               "  unless --relay-plain-http: LBD_RELAY_CERT LBD_RELAY_KEY (the relays' certificate and key\n"
               "  from the same CA, in --web-tls-dir; [ec2] relay_tls_cert and relay_tls_key) LBD_RELAY_NAME\n"
               "  (lbd's [tls] backend_name, with backend_ca = the CA's ca.pem and backend = on)\n"
               "  and with --elastic-ip LBD_ELASTIC_IP LBD_PUBLIC_IP\n"
               "What was found and what was created is logged on stderr.\n"
               "\n"
               "Exit status: 0 done, 1 an EC2 call failed (the call and EC2's error code are logged),\n"
               "2 bad usage, 3 AWS credentials missing or refused.\n");
}

/* ---------------------------------------------------------------------------------------------------- */
/* Command line */

static int provision_usage(const char *fmt, ...) _printf_(1, 2);
static int provision_usage(const char *fmt, ...)
{
        va_list ap;

        fputs("lbctl provision: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\nTry 'lbctl provision --help'.\n", stderr);
        return PROVISION_EXIT_USAGE;
}

/* An EC2 id: "<prefix>-" and alphanumerics, shorter than EC2_ID_MAX. */
static bool provision_id_ok(const char *s, const char *prefix)
{
        size_t n = strlen(prefix);

        return s && strlen(s) < EC2_ID_MAX && strncmp(s, prefix, n) == 0 && s[n] == '-' && s[n + 1] &&
               ec2_chars_ok(s + n + 1, "");
}

/* Text of at most <max> bytes, none of them a control character; non-empty. */
static bool provision_text_ok(const char *s, size_t max)
{
        return parse_text_ok(s, max, NULL);
}

static int provision_parse_tag(const char *s, struct provision_options *o)
{
        const char *eq = strchr(s, '=');
        size_t kn;

        if (!eq)
                return -EINVAL;
        kn = (size_t)(eq - s);
        /* EC2's tag alphabet; "aws:" is reserved; Name and lbd:role are set by this command. */
        if (kn == 0 || kn >= sizeof(o->tag_key) || strlen(eq + 1) == 0 ||
            strlen(eq + 1) >= sizeof(o->tag_value))
                return -EINVAL;
        memcpy(o->tag_key, s, kn);
        o->tag_key[kn] = 0;
        memcpy(o->tag_value, eq + 1, strlen(eq + 1) + 1);
        if (!ec2_chars_ok(o->tag_key, " +-=._:/@") || !ec2_chars_ok(o->tag_value, " +-=._:/@") ||
            strncmp(o->tag_key, "aws:", 4) == 0 || strcmp(o->tag_key, "Name") == 0 ||
            strcmp(o->tag_key, PROVISION_ROLE_KEY) == 0)
                return -EINVAL;
        return 0;
}

static int provision_parse_ssh(const char *s, struct provision_options *o)
{
        struct netaddr_cidr c;
        char host[INET6_ADDRSTRLEN];
        int n;

        if (netaddr_cidr_parse(s, &c) < 0)
                return provision_usage("--ssh-cidr '%s': expected a network such as 203.0.113.0/24, "
                                       "host bits zero",
                                       s);
        if (c.prefix == 0)
                return provision_usage("--ssh-cidr '%s': refusing SSH from the whole Internet; "
                                       "give your own network",
                                       s);
        if (!inet_ntop(c.family, c.addr, host, sizeof(host)))
                return provision_usage("--ssh-cidr '%s': not an address", s);
        n = snprintf(o->ssh_cidr, sizeof(o->ssh_cidr), "%s/%u", host, c.prefix);
        if (n < 0 || (size_t)n >= sizeof(o->ssh_cidr))
                return provision_usage("--ssh-cidr '%s': too long", s);
        o->ssh = true;
        o->ssh_kind = c.family == AF_INET ? PROVISION_SOURCE_CIDR4 : PROVISION_SOURCE_CIDR6;
        return 0;
}

/* Reads the user-data file <path> of option <flag> into <*ret> (<*ret_len> bytes). */
static int provision_read_user_data(const char *flag, const char *path, char **ret, size_t *ret_len)
{
        _cleanup_free_ char *buf = malloc(EC2_USER_DATA_MAX + 1);
        FILE *f;
        size_t n;
        bool bad;

        if (!buf)
                return provision_usage("out of memory");
        f = fopen(path, "re");
        if (!f)
                return provision_usage("%s '%s': %s", flag, path, strerror(errno));
        n = fread(buf, 1, EC2_USER_DATA_MAX + 1, f);
        bad = ferror(f);
        fclose(f);
        if (bad)
                return provision_usage("%s '%s': read error", flag, path);
        if (n > EC2_USER_DATA_MAX)
                return provision_usage("%s '%s': larger than %d bytes (EC2's limit)", flag,
                                       path, EC2_USER_DATA_MAX);
        if (n == 0)
                return provision_usage("%s '%s': empty", flag, path);
        *ret = TAKE_PTR(buf);
        *ret_len = n;
        return 0;
}

static int provision_port_option(const char *name, const char *s, unsigned *ret)
{
        uint64_t v;

        if (parse_uint(s, 1, 65535, &v) < 0)
                return provision_usage("%s '%s': expected a port, 1..65535", name, s);
        *ret = (unsigned)v;
        return 0;
}

static bool provision_endpoint_ok(const char *s)
{
        if (strlen(s) >= 1024 || (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0))
                return false;
        for (; *s; s++)
                if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
                        return false;
        return true;
}

/* <flag>'s value <arg>, a DNS name (such as <example>) put in the output: in <*ret>, or 2 (logged). */
static int provision_dns_name_option(const char *flag, const char *example, const char *arg, const char **ret)
{
        if (!parse_dns_name_ok(arg) || strlen(arg) >= PROVISION_VALUE_MAX)
                return provision_usage("%s '%s': expected a DNS name such as %s", flag, arg, example);
        *ret = arg;
        return 0;
}

static int provision_parse_options(int argc, char **argv, struct provision_options *o)
{
        enum {
                OPT_SUBNET = 0x100,
                OPT_REGION,
                OPT_ENDPOINT,
                OPT_CREDENTIALS_FILE,
                OPT_PROFILE,
                OPT_TAG,
                OPT_NAME,
                OPT_LB_PORT,
                OPT_BACKEND_PORT,
                OPT_WEB_PORT,
                OPT_SSH_CIDR,
                OPT_IMAGE,
                OPT_INSTANCE_TYPE,
                OPT_KEY_NAME,
                OPT_WEB_USER_DATA,
                OPT_NO_WEB,
                OPT_BAKE_FROM,
                OPT_ELASTIC_IP,
                OPT_LB_PEER,
                OPT_JSON,
                OPT_WEB_TLS_DIR,
                OPT_WEB_NAME,
                OPT_WEB_PLAIN_HTTP,
                OPT_RENEW_WEB_CERT,
                OPT_RELAY_NAME,
                OPT_RELAY_PLAIN_HTTP,
        };
        static const struct option options[] = {
                {"subnet", required_argument, NULL, OPT_SUBNET},
                {"region", required_argument, NULL, OPT_REGION},
                {"endpoint", required_argument, NULL, OPT_ENDPOINT},
                {"credentials-file", required_argument, NULL, OPT_CREDENTIALS_FILE},
                {"profile", required_argument, NULL, OPT_PROFILE},
                {"tag", required_argument, NULL, OPT_TAG},
                {"name", required_argument, NULL, OPT_NAME},
                {"lb-port", required_argument, NULL, OPT_LB_PORT},
                {"backend-port", required_argument, NULL, OPT_BACKEND_PORT},
                {"web-port", required_argument, NULL, OPT_WEB_PORT},
                {"ssh-cidr", required_argument, NULL, OPT_SSH_CIDR},
                {"image", required_argument, NULL, OPT_IMAGE},
                {"instance-type", required_argument, NULL, OPT_INSTANCE_TYPE},
                {"key-name", required_argument, NULL, OPT_KEY_NAME},
                {"web-user-data", required_argument, NULL, OPT_WEB_USER_DATA},
                {"no-web", no_argument, NULL, OPT_NO_WEB},
                {"bake-from", required_argument, NULL, OPT_BAKE_FROM},
                {"elastic-ip", no_argument, NULL, OPT_ELASTIC_IP},
                {"lb-peer", required_argument, NULL, OPT_LB_PEER},
                {"json", no_argument, NULL, OPT_JSON},
                {"web-tls-dir", required_argument, NULL, OPT_WEB_TLS_DIR},
                {"web-name", required_argument, NULL, OPT_WEB_NAME},
                {"web-plain-http", no_argument, NULL, OPT_WEB_PLAIN_HTTP},
                {"renew-web-cert", no_argument, NULL, OPT_RENEW_WEB_CERT},
                {"relay-name", required_argument, NULL, OPT_RELAY_NAME},
                {"relay-plain-http", no_argument, NULL, OPT_RELAY_PLAIN_HTTP},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        int r;

        memcpy(o->tag_key, "lbd:pool", sizeof("lbd:pool"));
        memcpy(o->tag_value, "main", sizeof("main"));
        o->prefix = "lbd";
        o->lb_port = 80;
        o->backend_port = 80;
        o->web_port = 8080;
        o->instance_type = "t3.micro";
        o->web_tls_dir = PROVISION_WEB_TLS_DIR;
        o->web_name = PROVISION_WEB_NAME;
        o->relay_name = PROVISION_RELAY_NAME;

        optind = 1;
        for (;;) {
                int opt = getopt_long(argc, argv, "h", options, NULL);

                if (opt < 0)
                        break;
                r = 0;
                switch (opt) {
                case OPT_SUBNET:
                        if (!provision_id_ok(optarg, "subnet"))
                                return provision_usage("--subnet '%s': expected a subnet id (subnet-…)",
                                                       optarg);
                        o->subnet = optarg;
                        break;
                case OPT_REGION:
                        if (strlen(optarg) == 0 || strlen(optarg) >= 32 || !ec2_chars_ok(optarg, "-"))
                                return provision_usage("--region '%s': expected a region such as us-east-1",
                                                       optarg);
                        o->region = optarg;
                        break;
                case OPT_ENDPOINT:
                        if (!provision_endpoint_ok(optarg))
                                return provision_usage(
                                        "--endpoint '%s': expected an http:// or https:// URL", optarg);
                        o->endpoint = optarg;
                        break;
                case OPT_CREDENTIALS_FILE:
                        if (!provision_text_ok(optarg, 4096))
                                return provision_usage("--credentials-file: expected a file name");
                        o->credentials_file = optarg;
                        break;
                case OPT_PROFILE:
                        if (!provision_text_ok(optarg, AWSCRED_PROFILE_MAX - 1))
                                return provision_usage("--profile: expected a profile name");
                        o->profile = optarg;
                        break;
                case OPT_TAG:
                        if (provision_parse_tag(optarg, o) < 0)
                                return provision_usage(
                                        "--tag '%s': expected KEY=VALUE of letters, digits and "
                                        "' +-=._:/@' (key at most 127 bytes, value 1..255; "
                                        "not aws:*, Name or " PROVISION_ROLE_KEY ")",
                                        optarg);
                        break;
                case OPT_NAME:
                        if (strlen(optarg) == 0 || strlen(optarg) > PROVISION_PREFIX_MAX ||
                            !ec2_chars_ok(optarg, "-_."))
                                return provision_usage(
                                        "--name '%s': expected 1..%d letters, digits, '-', '_' "
                                        "or '.'",
                                        optarg, PROVISION_PREFIX_MAX);
                        o->prefix = optarg;
                        break;
                case OPT_LB_PORT:
                        r = provision_port_option("--lb-port", optarg, &o->lb_port);
                        break;
                case OPT_BACKEND_PORT:
                        r = provision_port_option("--backend-port", optarg, &o->backend_port);
                        break;
                case OPT_WEB_PORT:
                        r = provision_port_option("--web-port", optarg, &o->web_port);
                        break;
                case OPT_SSH_CIDR:
                        r = provision_parse_ssh(optarg, o);
                        break;
                case OPT_IMAGE:
                        if (!provision_id_ok(optarg, "ami"))
                                return provision_usage("--image '%s': expected an image id (ami-…)", optarg);
                        o->image = optarg;
                        break;
                case OPT_INSTANCE_TYPE:
                        if (strlen(optarg) == 0 || strlen(optarg) >= 32 || !ec2_chars_ok(optarg, ".-"))
                                return provision_usage(
                                        "--instance-type '%s': expected a type such as t3.micro", optarg);
                        o->instance_type = optarg;
                        break;
                case OPT_KEY_NAME:
                        if (!provision_text_ok(optarg, 255))
                                return provision_usage(
                                        "--key-name: expected a key pair name (1..255 bytes)");
                        o->key_name = optarg;
                        break;
                case OPT_WEB_USER_DATA:
                        o->web_user_data_path = optarg;
                        break;
                case OPT_NO_WEB:
                        o->no_web = true;
                        break;
                case OPT_BAKE_FROM:
                        if (!provision_id_ok(optarg, "i"))
                                return provision_usage("--bake-from '%s': expected an instance id (i-…)",
                                                       optarg);
                        o->bake_from = optarg;
                        break;
                case OPT_ELASTIC_IP:
                        o->elastic_ip = true;
                        break;
                case OPT_LB_PEER:
                        o->lb_user_data_path = optarg;
                        break;
                case OPT_JSON:
                        o->json = true;
                        break;
                case OPT_WEB_TLS_DIR:
                        /* Printed as LBD_WEB_CA's and LBD_RELAY_KEY's directory: the output's alphabet,
                         * an absolute path. */
                        if (optarg[0] != '/' || strlen(optarg) > PROVISION_VALUE_MAX - sizeof("/relay.key") ||
                            !ec2_chars_ok(optarg, "._/-"))
                                return provision_usage("--web-tls-dir '%s': expected an absolute path of "
                                                       "letters, digits and '._/-'",
                                                       optarg);
                        o->web_tls_dir = optarg;
                        break;
                case OPT_WEB_NAME:
                        r = provision_dns_name_option("--web-name", PROVISION_WEB_NAME, optarg, &o->web_name);
                        break;
                case OPT_WEB_PLAIN_HTTP:
                        o->web_plain = true;
                        break;
                case OPT_RENEW_WEB_CERT:
                        o->renew_web_cert = true;
                        break;
                case OPT_RELAY_NAME:
                        r = provision_dns_name_option("--relay-name", PROVISION_RELAY_NAME, optarg, &o->relay_name);
                        break;
                case OPT_RELAY_PLAIN_HTTP:
                        o->relay_plain = true;
                        break;
                case 'h':
                        provision_help();
                        return -1;
                default:
                        return provision_usage("unknown option");
                }
                if (r != 0)
                        return r;
        }
        if (optind < argc)
                return provision_usage("unexpected argument '%s'", argv[optind]);
        if (!o->subnet)
                return provision_usage("--subnet is required");
        if (o->web_user_data_path && o->no_web)
                return provision_usage("--web-user-data and --no-web exclude each other");
        if (o->web_user_data_path) {
                r = provision_read_user_data("--web-user-data", o->web_user_data_path, &o->web_user_data,
                                             &o->web_user_data_len);
                if (r != 0)
                        return r;
        }
        if (o->web_plain && o->renew_web_cert)
                return provision_usage("--web-plain-http and --renew-web-cert exclude each other");
        if (o->no_web && o->renew_web_cert)
                return provision_usage("--no-web and --renew-web-cert exclude each other");
        /* webd gets its certificate through its user data: a file without both placeholders (someone's
         * own web host, or bytes that are no script) can't carry one, so that web host is plain HTTP. */
        o->web_placeholders = o->web_user_data &&
                              template_uses(o->web_user_data, o->web_user_data_len, PROVISION_WEB_CERT_VAR) &&
                              template_uses(o->web_user_data, o->web_user_data_len, PROVISION_WEB_KEY_VAR);
        if (o->renew_web_cert && !o->web_placeholders)
                return provision_usage("--renew-web-cert needs --web-user-data FILE with " PROVISION_WEB_CERT_VAR
                                       " and " PROVISION_WEB_KEY_VAR " (see scripts/cloud-init-web.sh)");
        if (o->lb_user_data_path) {
                r = provision_read_user_data("--lb-peer", o->lb_user_data_path, &o->lb_user_data,
                                             &o->lb_user_data_len);
                if (r != 0)
                        return r;
        }
        return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Calls */

static void provision_answer_cb(int r, const char *error, const char *code, const char *xml, size_t len,
                                void *userdata)
{
        struct provision_answer *a = userdata;

        a->done = true;
        a->r = r;
        (void)snprintf(a->error, sizeof(a->error), "%s", error ? error : "");
        (void)snprintf(a->code, sizeof(a->code), "%s", code ? code : "");
        if (r < 0)
                return;
        a->xml = malloc(len + 1);
        if (!a->xml) {
                a->r = -ENOMEM;
                (void)snprintf(a->error, sizeof(a->error), "out of memory");
                return;
        }
        memcpy(a->xml, xml, len);
        a->xml[len] = 0;
        a->len = len;
}

/* Records the first failure's exit status and logs it. Returns <r>. */
static int provision_fail(struct provision *p, int r, const char *action, const char *what)
{
        if (!p->exit_status)
                p->exit_status = r == -EACCES ? PROVISION_EXIT_CREDENTIALS : PROVISION_EXIT_API;
        log_error("%s failed: %s", action, what);
        return r;
}

/* Calls <action> and waits for its answer, running the event loop. Returns 0 with the answer in <a> (the
 * caller clears it), -EEXIST when the API refused with <ok_code> (not logged: the caller expects it), or
 * another failure (logged). */
static int provision_call(struct provision *p, const char *action, const struct ec2_param *params, size_t n,
                          const char *ok_code, struct provision_answer *a)
{
        struct ec2_call *call = NULL;
        int r;

        provision_answer_clear(a);
        r = ec2_query(p->ec2, action, params, n, 0, provision_answer_cb, a, &call);
        if (r < 0)
                return provision_fail(p, r, action, strerror(-r));
        while (!a->done) {
                /* The call always holds an event (a transfer or a timer); an empty loop would be a bug. */
                if (event_base_loop(p->base, EVLOOP_ONCE) != 0 && !a->done) {
                        (void)ec2_call_cancel(call);
                        return provision_fail(p, -EIO, action, "the event loop stopped");
                }
        }
        if (a->r >= 0)
                return 0;
        if (ok_code && strcmp(a->code, ok_code) == 0)
                return -EEXIST;
        return provision_fail(p, a->r, action, a->error);
}

/* Runs the event loop (connections' housekeeping) for <usec>. */
static void provision_sleep(struct provision *p, uint64_t usec)
{
        struct timeval tv = timeval_from_usec(usec);

        if (event_base_loopexit(p->base, &tv) < 0 || event_base_loop(p->base, 0) < 0) {
                struct timespec ts = {.tv_sec = tv.tv_sec, .tv_nsec = tv.tv_usec * 1000};

                (void)nanosleep(&ts, NULL);
        }
}

static int provision_bad_answer(struct provision *p, const char *action, int r)
{
        return provision_fail(p, r == -ENOMEM ? -ENOMEM : -EBADMSG, action,
                              r == -E2BIG ? "the answer holds more than lbctl accepts"
                                          : "unexpected answer from the API");
}

/* A Describe action read page after page: how to ask for a page and how to read one. */
struct provision_pager {
        const char *action;
        /* MaxResults sent with every page, or NULL. Not sent when the call names ids of <ids_param>
         * ("ImageId.1" and so on): EC2 refuses both together. */
        const char *page_size;
        const char *ids_param;
        unsigned max_pages;
        const char *too_many; /* why it stops after max_pages */
        /* Appends one page's items to <list> (<*n>) and writes its nextToken ("" on the last page). Returns
         * 0 or a failure of the page parser (-EBADMSG, -E2BIG, -ENOMEM). */
        int (*parse)(const char *xml, size_t len, void *list, size_t *n,
                     char next[static EC2_NEXT_TOKEN_MAX]);
};

/* Calls <pg>'s action with <params> (plus the pages' NextToken and MaxResults), every page, appending the
 * items to <list> (<*n_list>) through <pg>'s parser. Returns 0, -E2BIG (not logged) when <params> leave
 * no room for the pages' own, or a failure (logged); the caller frees the list either way. */
static int provision_describe_pages(struct provision *p, const struct provision_pager *pg,
                                    const struct ec2_param *params, size_t n, void *list, size_t *n_list)
{
        struct ec2_param all[16];
        char token[EC2_NEXT_TOKEN_MAX] = "";
        struct provision_answer a = {0};
        bool sized = pg->page_size != NULL;
        int r;

        if (n + 1 + (pg->page_size ? 1 : 0) > ELEMENTSOF(all))
                return -E2BIG;
        memcpy(all, params, n * sizeof(*params));
        for (size_t i = 0; i < n && pg->ids_param; i++)
                sized = sized && strncmp(params[i].name, pg->ids_param, strlen(pg->ids_param)) != 0;
        for (unsigned page = 0; page < pg->max_pages; page++) {
                size_t m = n;

                if (sized)
                        all[m++] = (struct ec2_param){"MaxResults", pg->page_size};
                if (token[0])
                        all[m++] = (struct ec2_param){"NextToken", token};
                r = provision_call(p, pg->action, all, m, NULL, &a);
                if (r >= 0) {
                        char next[EC2_NEXT_TOKEN_MAX];

                        r = pg->parse(a.xml, a.len, list, n_list, next);
                        if (r < 0)
                                r = provision_bad_answer(p, pg->action, r);
                        else
                                memcpy(token, next, sizeof(token));
                }
                provision_answer_clear(&a);
                if (r < 0)
                        return r;
                if (!token[0])
                        return 0;
        }
        return provision_fail(p, -E2BIG, pg->action, pg->too_many);
}

static int provision_parse_images_page(const char *xml, size_t len, void *list, size_t *n,
                                       char next[static EC2_NEXT_TOKEN_MAX])
{
        return provision_parse_images(xml, len, list, n, next);
}

static int provision_parse_instances_page(const char *xml, size_t len, void *list, size_t *n,
                                          char next[static EC2_NEXT_TOKEN_MAX])
{
        return ec2_parse_instances(xml, len, list, n, next);
}

static const struct provision_pager provision_images_pager = {
        "DescribeImages", PROVISION_IMAGE_PAGE_SIZE, "ImageId.", PROVISION_IMAGE_PAGES,
        "more pages of images than lbctl reads", provision_parse_images_page,
};
static const struct provision_pager provision_instances_pager = {
        "DescribeInstances", NULL, NULL, PROVISION_INSTANCE_PAGES,
        "more pages of instances than lbctl reads", provision_parse_instances_page,
};

/* DescribeImages or DescribeInstances with <params>, every page, into <*list>: typed entries to
 * provision_describe_pages(). */
static int provision_describe_images(struct provision *p, const struct ec2_param *params, size_t n,
                                     struct provision_image **list, size_t *n_list)
{
        return provision_describe_pages(p, &provision_images_pager, params, n, list, n_list);
}

static int provision_describe_instances(struct provision *p, const struct ec2_param *params, size_t n,
                                        struct ec2_instance **list, size_t *n_list)
{
        return provision_describe_pages(p, &provision_instances_pager, params, n, list, n_list);
}

/* ---------------------------------------------------------------------------------------------------- */
/* 1. Subnet */

static int provision_subnet(struct provision *p)
{
        const struct ec2_param params[] = {{"SubnetId.1", p->o->subnet}};
        struct provision_answer a = {0};
        struct provision_subnet s;
        int r;

        r = provision_call(p, "DescribeSubnets", params, ELEMENTSOF(params), NULL, &a);
        if (r >= 0) {
                r = provision_parse_subnet(a.xml, a.len, &s);
                if (r == -ENOENT)
                        r = provision_fail(p, -ENOENT, "DescribeSubnets", "the subnet is not there");
                else if (r < 0)
                        r = provision_bad_answer(p, "DescribeSubnets", r);
        }
        provision_answer_clear(&a);
        if (r < 0)
                return r;
        if (strcmp(s.id, p->o->subnet) != 0)
                return provision_fail(p, -EBADMSG, "DescribeSubnets", "the answer is about another subnet");
        memcpy(p->vpc, s.vpc_id, sizeof(p->vpc));
        log_info("subnet %s: found, in VPC %s (%s, %s)", s.id, s.vpc_id, s.cidr[0] ? s.cidr : "?",
                 s.zone[0] ? s.zone : "?");
        return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* 2. Security groups */

static int provision_describe_groups(struct provision *p, struct provision_group **ret, size_t *ret_n)
{
        const struct ec2_param params[] = {
                {"Filter.1.Name", "vpc-id"},
                {"Filter.1.Value.1", p->vpc},
                {"Filter.2.Name", "group-name"},
                {"Filter.2.Value.1", p->group_names[GROUP_LB]},
                {"Filter.2.Value.2", p->group_names[GROUP_BACKEND]},
                {"Filter.2.Value.3", p->group_names[GROUP_WEB]},
        };
        struct provision_answer a = {0};
        int r;

        r = provision_call(p, "DescribeSecurityGroups", params, ELEMENTSOF(params), NULL, &a);
        if (r >= 0) {
                r = provision_parse_groups(a.xml, a.len, ret, ret_n);
                if (r < 0)
                        r = provision_bad_answer(p, "DescribeSecurityGroups", r);
        }
        provision_answer_clear(&a);
        return r;
}

static int provision_tag_group(struct provision *p, const char *id, const char *name)
{
        const struct ec2_param params[] = {
                {"ResourceId.1", id},
                {"Tag.1.Key", p->o->tag_key},
                {"Tag.1.Value", p->o->tag_value},
        };
        struct provision_answer a = {0};
        int r;

        r = provision_call(p, "CreateTags", params, ELEMENTSOF(params), NULL, &a);
        if (r >= 0 && provision_parse_return(a.xml, a.len, "CreateTagsResponse") < 0)
                r = provision_bad_answer(p, "CreateTags", -EBADMSG);
        provision_answer_clear(&a);
        if (r >= 0)
                log_info("security group %s (%s): found, tagged %s=%s", name, id, p->o->tag_key,
                         p->o->tag_value);
        return r;
}

/* Creates group <i>. Returns 0, -EEXIST when a group of that name appeared meanwhile, or a failure. */
static int provision_create_group(struct provision *p, size_t i)
{
        const struct ec2_param params[] = {
                {"GroupName", p->group_names[i]},
                {"GroupDescription", provision_group_descriptions[i]},
                {"VpcId", p->vpc},
                {"TagSpecification.1.ResourceType", "security-group"},
                {"TagSpecification.1.Tag.1.Key", p->o->tag_key},
                {"TagSpecification.1.Tag.1.Value", p->o->tag_value},
                {"TagSpecification.1.Tag.2.Key", "Name"},
                {"TagSpecification.1.Tag.2.Value", p->group_names[i]},
        };
        struct provision_answer a = {0};
        int r;

        r = provision_call(p, "CreateSecurityGroup", params, ELEMENTSOF(params), "InvalidGroup.Duplicate",
                           &a);
        if (r >= 0 && provision_parse_group_id(a.xml, a.len, p->groups[i]) < 0)
                r = provision_bad_answer(p, "CreateSecurityGroup", -EBADMSG);
        provision_answer_clear(&a);
        if (r >= 0)
                log_info("security group %s: created %s in %s", p->group_names[i], p->groups[i], p->vpc);
        return r;
}

/* The rules group <i> must have; <ret> holds at least 4. Returns how many. */
static size_t provision_wanted_rules(const struct provision *p, size_t i, struct provision_rule *ret)
{
        const struct provision_options *o = p->o;
        size_t n = 0;

        switch (i) {
        case GROUP_LB:
                ret[n++] = (struct provision_rule){"tcp", (int)o->lb_port, (int)o->lb_port,
                                                   PROVISION_SOURCE_CIDR4, "0.0.0.0/0"};
                ret[n++] = (struct provision_rule){"tcp", (int)o->lb_port, (int)o->lb_port,
                                                   PROVISION_SOURCE_CIDR6, "::/0"};
                if (o->lb_user_data) {
                        /* Two LB hosts: each asks the other's lease listener, and nobody else may. */
                        ret[n] = (struct provision_rule){"tcp", PROVISION_LEASE_PORT, PROVISION_LEASE_PORT,
                                                         PROVISION_SOURCE_GROUP, ""};
                        memcpy(ret[n++].source, p->groups[GROUP_LB], strlen(p->groups[GROUP_LB]) + 1);
                }
                break;
        case GROUP_BACKEND:
                ret[n] = (struct provision_rule){"tcp", (int)o->backend_port, (int)o->backend_port,
                                                 PROVISION_SOURCE_GROUP, ""};
                memcpy(ret[n++].source, p->groups[GROUP_LB], strlen(p->groups[GROUP_LB]) + 1);
                break;
        default:
                ret[n] = (struct provision_rule){"tcp", (int)o->web_port, (int)o->web_port,
                                                 PROVISION_SOURCE_GROUP, ""};
                memcpy(ret[n++].source, p->groups[GROUP_BACKEND], strlen(p->groups[GROUP_BACKEND]) + 1);
                break;
        }
        if (o->ssh) {
                ret[n] = (struct provision_rule){"tcp", 22, 22, o->ssh_kind, ""};
                memcpy(ret[n++].source, o->ssh_cidr, strlen(o->ssh_cidr) + 1);
        }
        return n;
}

static const char *provision_rule_description(const struct provision_rule *w)
{
        if (w->from_port == 22 && w->kind != PROVISION_SOURCE_GROUP)
                return "ssh from the administrators";
        if (w->kind == PROVISION_SOURCE_GROUP)
                return "from the group in front";
        return "clients";
}

/* Adds rule <w> to group <i>. Returns 1 added, 0 already there, or a failure. */
static int provision_authorize(struct provision *p, size_t i, const struct provision_rule *w)
{
        char port[8];
        struct ec2_param params[7] = {
                {"GroupId", p->groups[i]},
                {"IpPermissions.1.IpProtocol", "tcp"},
                {"IpPermissions.1.FromPort", port},
                {"IpPermissions.1.ToPort", port},
        };
        struct provision_answer a = {0};
        int r;

        (void)snprintf(port, sizeof(port), "%d", w->from_port);
        switch (w->kind) {
        case PROVISION_SOURCE_CIDR4:
                params[4] = (struct ec2_param){"IpPermissions.1.IpRanges.1.CidrIp", w->source};
                params[5] = (struct ec2_param){"IpPermissions.1.IpRanges.1.Description",
                                               provision_rule_description(w)};
                break;
        case PROVISION_SOURCE_CIDR6:
                params[4] = (struct ec2_param){"IpPermissions.1.Ipv6Ranges.1.CidrIpv6", w->source};
                params[5] = (struct ec2_param){"IpPermissions.1.Ipv6Ranges.1.Description",
                                               provision_rule_description(w)};
                break;
        default:
                params[4] = (struct ec2_param){"IpPermissions.1.Groups.1.GroupId", w->source};
                params[5] = (struct ec2_param){"IpPermissions.1.Groups.1.Description",
                                               provision_rule_description(w)};
                break;
        }
        r = provision_call(p, "AuthorizeSecurityGroupIngress", params, 6, "InvalidPermission.Duplicate", &a);
        if (r >= 0 && provision_parse_return(a.xml, a.len, "AuthorizeSecurityGroupIngressResponse") < 0)
                r = provision_bad_answer(p, "AuthorizeSecurityGroupIngress", -EBADMSG);
        provision_answer_clear(&a);
        if (r == -EEXIST)
                return 0;
        return r < 0 ? r : 1;
}

static const char *provision_source_what(enum provision_source kind)
{
        switch (kind) {
        case PROVISION_SOURCE_GROUP:
                return "group ";
        case PROVISION_SOURCE_PREFIX_LIST:
                return "prefix list ";
        default:
                return "";
        }
}

/* Adds the missing rules of group <i> (<g>: what EC2 showed, NULL for a group just created) and reports
 * the rules found there that this command would not have made. */
static int provision_group_rules(struct provision *p, size_t i, const struct provision_group *g)
{
        struct provision_rule wanted[4];
        size_t n = provision_wanted_rules(p, i, wanted);
        int r;

        for (size_t k = 0; k < n; k++) {
                const struct provision_rule *w = &wanted[k];

                if (g && provision_parse_rule_present(g, (unsigned)w->from_port, w->kind, w->source)) {
                        log_info("security group %s: found rule tcp %d from %s%s", p->group_names[i],
                                 w->from_port, provision_source_what(w->kind), w->source);
                        continue;
                }
                r = provision_authorize(p, i, w);
                if (r < 0)
                        return r;
                log_info("security group %s: %s rule tcp %d from %s%s", p->group_names[i],
                         r > 0 ? "added" : "found", w->from_port, provision_source_what(w->kind), w->source);
        }
        for (size_t k = 0; g && k < g->n_rules; k++) {
                const struct provision_rule *x = &g->rules[k];

                if (provision_parse_rule_wanted(x, wanted, n))
                        continue;
                log_warning(
                        "security group %s (%s) also allows protocol %s ports %d-%d from %s%s: not part of "
                        "this configuration, left as it is",
                        p->group_names[i], p->groups[i], x->protocol, x->from_port, x->to_port,
                        provision_source_what(x->kind), x->source);
        }
        return 0;
}

static int provision_groups(struct provision *p)
{
        struct provision_group *found[N_GROUPS] = {0};
        _cleanup_free_ struct provision_group *list = NULL;
        size_t n = 0;
        int r = 0;

        for (size_t i = 0; i < N_GROUPS; i++)
                (void)snprintf(p->group_names[i], sizeof(p->group_names[i]), "%s-%s", p->o->prefix,
                               provision_group_roles[i]);

        /* A group created by someone else between our look and our create is looked up again. */
        for (unsigned round = 0; round < PROVISION_GROUP_ROUNDS; round++) {
                bool again = false;

                free(list);
                list = NULL;
                memset(found, 0, sizeof(found));
                r = provision_describe_groups(p, &list, &n);
                if (r < 0)
                        return r;
                for (size_t k = 0; k < n; k++)
                        for (size_t i = 0; i < N_GROUPS; i++)
                                if (strcmp(list[k].name, p->group_names[i]) == 0 &&
                                    strcmp(list[k].vpc_id, p->vpc) == 0 && !found[i])
                                        found[i] = &list[k];
                for (size_t i = 0; i < N_GROUPS && !again; i++) {
                        const char *tag;

                        if (!found[i]) {
                                if (p->groups[i][0])
                                        continue; /* created in an earlier round */
                                r = provision_create_group(p, i);
                                if (r == -EEXIST) {
                                        again = true;
                                        continue;
                                }
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        memcpy(p->groups[i], found[i]->id, sizeof(p->groups[i]));
                        tag = provision_parse_group_tag(found[i], p->o->tag_key);
                        if (tag && strcmp(tag, p->o->tag_value) != 0)
                                return provision_fail(p, -EEXIST, "security groups",
                                                      "a group of that name belongs to another pool; choose "
                                                      "another --name");
                        if (!tag) {
                                r = provision_tag_group(p, found[i]->id, found[i]->name);
                                if (r < 0)
                                        return r;
                        } else
                                log_info("security group %s (%s): found", found[i]->name, found[i]->id);
                }
                if (!again)
                        break;
        }
        for (size_t i = 0; i < N_GROUPS; i++)
                if (!p->groups[i][0])
                        return provision_fail(p, -EAGAIN, "CreateSecurityGroup",
                                              "the groups keep changing under lbctl; run it again");
        for (size_t i = 0; i < N_GROUPS; i++) {
                r = provision_group_rules(p, i, found[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* 3. Images */

static int provision_base_image(struct provision *p)
{
        _cleanup_free_ struct provision_image *list = NULL;
        const struct provision_image *best;
        size_t n = 0;
        int r;

        if (p->o->image) {
                const struct ec2_param params[] = {{"ImageId.1", p->o->image}};

                r = provision_describe_images(p, params, ELEMENTSOF(params), &list, &n);
                if (r < 0)
                        return r;
                if (n != 1 || strcmp(list[0].id, p->o->image) != 0)
                        return provision_fail(p, -ENOENT, "DescribeImages",
                                              "the image given by --image is not there");
                if (strcmp(list[0].state, "available") != 0)
                        return provision_fail(p, -EINVAL, "DescribeImages",
                                              "the image given by --image is not available");
                memcpy(p->base_image, list[0].id, sizeof(p->base_image));
                log_info("image %s: found (%s)", list[0].id, list[0].name[0] ? list[0].name : "no name");
                return 0;
        }

        {
                const struct ec2_param params[] = {
                        {"Owner.1", PROVISION_CANONICAL},
                        {"Filter.1.Name", "name"},
                        {"Filter.1.Value.1", PROVISION_UBUNTU_PATTERN},
                        {"Filter.2.Name", "architecture"},
                        {"Filter.2.Value.1", "x86_64"},
                        {"Filter.3.Name", "state"},
                        {"Filter.3.Value.1", "available"},
                        {"Filter.4.Name", "image-type"},
                        {"Filter.4.Value.1", "machine"},
                        {"Filter.5.Name", "root-device-type"},
                        {"Filter.5.Value.1", "ebs"},
                };

                r = provision_describe_images(p, params, ELEMENTSOF(params), &list, &n);
                if (r < 0)
                        return r;
        }
        best = provision_parse_pick_image(list, n);
        if (!best)
                return provision_fail(
                        p, -ENOENT, "DescribeImages",
                        "no Ubuntu LTS amd64 server image from Canonical (owner " PROVISION_CANONICAL
                        ") in this region; give one with --image");
        memcpy(p->base_image, best->id, sizeof(p->base_image));
        log_info("image %s: found, the newest Ubuntu LTS of %zu candidates (%s, %s)", best->id, n,
                 best->name, best->creation_date);
        return 0;
}

/* Looks up the image named <name> that this account owns. Returns 1 found (into <ret>), 0 none. */
static int provision_find_own_image(struct provision *p, const char *name, struct provision_image *ret)
{
        const struct ec2_param params[] = {
                {"Owner.1", "self"},
                {"Filter.1.Name", "name"},
                {"Filter.1.Value.1", name},
        };
        _cleanup_free_ struct provision_image *list = NULL;
        size_t n = 0;
        int r;

        r = provision_describe_images(p, params, ELEMENTSOF(params), &list, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (strcmp(list[i].name, name) == 0) {
                        *ret = list[i];
                        return 1;
                }
        return 0;
}

static int provision_wait_image(struct provision *p, const char *id)
{
        const struct ec2_param params[] = {{"ImageId.1", id}};
        uint64_t deadline = now_usec() + PROVISION_IMAGE_WAIT_USEC;

        for (;;) {
                _cleanup_free_ struct provision_image *list = NULL;
                size_t n = 0;
                int r;

                r = provision_describe_images(p, params, ELEMENTSOF(params), &list, &n);
                if (r < 0)
                        return r;
                if (n == 1 && strcmp(list[0].state, "available") == 0)
                        return 0;
                if (n == 1 && strcmp(list[0].state, "pending") != 0)
                        return provision_fail(p, -EIO, "CreateImage",
                                              "the image failed (state not pending nor available)");
                if (now_usec() >= deadline)
                        return provision_fail(p, -ETIMEDOUT, "CreateImage",
                                              "the image is still not available after 45 minutes");
                log_info("image %s: %s, waiting", id, n == 1 ? list[0].state : "not listed yet");
                provision_sleep(p, PROVISION_IMAGE_POLL_USEC);
        }
}

static int provision_bake(struct provision *p)
{
        char name[PROVISION_NAME_MAX];
        struct provision_image img;
        int r;

        (void)snprintf(name, sizeof(name), "%s-backend-%s", p->o->prefix, p->o->bake_from);
        for (unsigned round = 0; round < 2; round++) {
                r = provision_find_own_image(p, name, &img);
                if (r < 0)
                        return r;
                if (r > 0) {
                        memcpy(p->image, img.id, sizeof(p->image));
                        log_info("image %s: found %s (%s)", name, img.id, img.state);
                        break;
                }
                {
                        const struct ec2_param params[] = {
                                {"InstanceId", p->o->bake_from},
                                {"Name", name},
                                {"Description", "lbd backend image"},
                                {"TagSpecification.1.ResourceType", "image"},
                                {"TagSpecification.1.Tag.1.Key", p->o->tag_key},
                                {"TagSpecification.1.Tag.1.Value", p->o->tag_value},
                                {"TagSpecification.1.Tag.2.Key", "Name"},
                                {"TagSpecification.1.Tag.2.Value", name},
                        };
                        struct provision_answer a = {0};

                        r = provision_call(p, "CreateImage", params, ELEMENTSOF(params),
                                           "InvalidAMIName.Duplicate", &a);
                        if (r >= 0 && provision_parse_image_id(a.xml, a.len, p->image) < 0)
                                r = provision_bad_answer(p, "CreateImage", -EBADMSG);
                        provision_answer_clear(&a);
                }
                if (r == -EEXIST)
                        continue; /* made meanwhile: look again */
                if (r < 0)
                        return r;
                log_info("image %s: created %s from %s", name, p->image, p->o->bake_from);
                break;
        }
        if (!p->image[0])
                return provision_fail(p, -EAGAIN, "CreateImage",
                                      "the image name is taken but the image not found");
        return provision_wait_image(p, p->image);
}

/* ---------------------------------------------------------------------------------------------------- */
/* 4. The web host */

static bool provision_live(const char *state)
{
        return strcmp(state, "pending") == 0 || strcmp(state, "running") == 0;
}

/* The idempotency token of the web host's launch: the pool, the prefix, the subnet, and how many web
 * hosts of the pool are gone (so one may be launched again after the last was terminated). */
static void provision_client_token(const struct provision *p, const char *role, size_t gone, char ret[static 64])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        char input[1024];
        int n;

        n = snprintf(input, sizeof(input), "lbd-%s\n%s\n%s\n%s\n%s\n%zu", role, p->o->tag_key, p->o->tag_value,
                     p->o->prefix, p->o->subnet, gone);
        if (n < 0 || (size_t)n >= sizeof(input) ||
            EVP_Digest(input, (size_t)n, md, &md_len, EVP_sha256(), NULL) != 1)
                md_len = 0;
        size_t k = (size_t)snprintf(ret, 16, "lbd-%.8s-", role);

        for (unsigned i = 0; i < 20 && i < md_len; i++)
                (void)snprintf(ret + k + 2 * i, 3, "%02x", md[i]);
        if (md_len < 20)
                (void)snprintf(ret + k, 64 - k, "%zu", gone);
}

/* What a role's instance is: the web host, or the second LB host. */
struct provision_role {
        const char *role;  /* its PROVISION_ROLE_KEY tag */
        const char *what;  /* "web host" */
        const char *flag;  /* the user-data option */
        size_t group;
        const char *user_data;
        size_t user_data_len;
        /* When set, called just before a launch; it may render the user data into p->web_user_data,
         * which the launch then sends instead of <user_data>. */
        int (*prepare)(struct provision *p);
};

static int provision_launch(struct provision *p, const struct provision_role *w, size_t gone,
                            struct ec2_instance *ret)
{
        const struct provision_options *o = p->o;
        _cleanup_free_ char *b64 = NULL;
        _cleanup_free_ struct ec2_instance *list = NULL;
        char token[64], name[PROVISION_NAME_MAX], next[EC2_NEXT_TOKEN_MAX];
        struct ec2_param params[24];
        struct provision_answer a = {0};
        size_t n = 0, m = 0;
        const char *user_data = w->user_data;
        size_t user_data_len = w->user_data_len;
        int r;

        if (!w->user_data) {
                p->exit_status = PROVISION_EXIT_USAGE;
                log_error("no %s of the pool %s=%s is pending or running: %s FILE is needed to launch one",
                          w->what, o->tag_key, o->tag_value, w->flag);
                return -EINVAL;
        }
        if (w->prepare) {
                r = w->prepare(p);
                if (r < 0)
                        return r;
                user_data = p->web_user_data;
                user_data_len = p->web_user_data_len;
        }
        b64 = malloc(4 * ((user_data_len + 2) / 3) + 1);
        if (!b64)
                return provision_fail(p, -ENOMEM, "RunInstances", "out of memory");
        (void)EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)user_data, (int)user_data_len);
        provision_client_token(p, w->role, gone, token);
        (void)snprintf(name, sizeof(name), "%s-%s", o->prefix, w->role);

        params[n++] = (struct ec2_param){"ImageId", p->base_image};
        params[n++] = (struct ec2_param){"InstanceType", o->instance_type};
        params[n++] = (struct ec2_param){"SubnetId", o->subnet};
        params[n++] = (struct ec2_param){"SecurityGroupId.1", p->groups[w->group]};
        if (o->key_name)
                params[n++] = (struct ec2_param){"KeyName", o->key_name};
        params[n++] = (struct ec2_param){"UserData", b64};
        params[n++] = (struct ec2_param){"MetadataOptions.HttpTokens", "required"};
        params[n++] = (struct ec2_param){"TagSpecification.1.ResourceType", "instance"};
        params[n++] = (struct ec2_param){"TagSpecification.1.Tag.1.Key", o->tag_key};
        params[n++] = (struct ec2_param){"TagSpecification.1.Tag.1.Value", o->tag_value};
        params[n++] = (struct ec2_param){"TagSpecification.1.Tag.2.Key", PROVISION_ROLE_KEY};
        params[n++] = (struct ec2_param){"TagSpecification.1.Tag.2.Value", w->role};
        params[n++] = (struct ec2_param){"TagSpecification.1.Tag.3.Key", "Name"};
        params[n++] = (struct ec2_param){"TagSpecification.1.Tag.3.Value", name};
        params[n++] = (struct ec2_param){"ClientToken", token};
        params[n++] = (struct ec2_param){"MinCount", "1"};
        params[n++] = (struct ec2_param){"MaxCount", "1"};

        r = provision_call(p, "RunInstances", params, n, NULL, &a);
        if (r >= 0) {
                r = ec2_parse_instances(a.xml, a.len, &list, &m, next);
                if (r >= 0 && m != 1)
                        r = -EBADMSG;
                if (r < 0)
                        r = provision_bad_answer(p, "RunInstances", r);
        }
        provision_answer_clear(&a);
        if (r < 0)
                return r;
        if (!provision_live(list[0].state))
                return provision_fail(
                        p, -EIO, "RunInstances",
                        "EC2 answered with an instance that is not pending nor running (a launch of "
                        "an earlier run with the same client token, since stopped); run again once "
                        "it is terminated");
        *ret = list[0];
        log_info("%s: launched %s (%s) in %s with %s, image %s, client token %s", w->what, ret->id, name,
                 o->subnet, p->groups[w->group], p->base_image, token);
        return 0;
}

/* Waits until instance <inst> (the <what>) has a private address. */
static int provision_wait_ip(struct provision *p, struct ec2_instance *inst, const char *what)
{
        const struct ec2_param params[] = {{"InstanceId.1", inst->id}};
        uint64_t deadline = now_usec() + PROVISION_WEB_WAIT_USEC;
        char why[128];

        while (!inst->private_ip[0]) {
                _cleanup_free_ struct ec2_instance *list = NULL;
                size_t n = 0;
                int r;

                if (now_usec() >= deadline) {
                        (void)snprintf(why, sizeof(why), "the %s has no private address after 10 minutes", what);
                        return provision_fail(p, -ETIMEDOUT, "DescribeInstances", why);
                }
                provision_sleep(p, PROVISION_WEB_POLL_USEC);
                r = provision_describe_instances(p, params, ELEMENTSOF(params), &list, &n);
                if (r < 0)
                        return r;
                if (n == 1 && strcmp(list[0].id, inst->id) == 0) {
                        if (!provision_live(list[0].state)) {
                                (void)snprintf(why, sizeof(why), "the %s stopped", what);
                                return provision_fail(p, -EIO, "DescribeInstances", why);
                        }
                        *inst = list[0];
                }
        }
        return 0;
}

/* The pool's instance of role <w>: the one pending or running, else one launched; with its private
 * IPv4 address in <ret>. */
static int provision_role_instance(struct provision *p, const struct provision_role *w, struct ec2_instance *ret)
{
        char role_filter[PROVISION_TAG_KEY_MAX + 8], pool_filter[PROVISION_TAG_KEY_MAX + 8];
        const struct ec2_param params[] = {
                {"Filter.1.Name", pool_filter},
                {"Filter.1.Value.1", p->o->tag_value},
                {"Filter.2.Name", role_filter},
                {"Filter.2.Value.1", w->role},
        };
        _cleanup_free_ struct ec2_instance *list = NULL;
        struct ec2_instance chosen = {0};
        struct in_addr addr;
        size_t n = 0, gone = 0, live = 0;
        int r;

        (void)snprintf(pool_filter, sizeof(pool_filter), "tag:%s", p->o->tag_key);
        (void)snprintf(role_filter, sizeof(role_filter), "tag:%s", PROVISION_ROLE_KEY);
        r = provision_describe_instances(p, params, ELEMENTSOF(params), &list, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (!provision_live(list[i].state)) {
                        gone++;
                        if (strcmp(list[i].state, "stopped") == 0 || strcmp(list[i].state, "stopping") == 0)
                                log_warning("%s %s is %s: not used; start it and run again to keep its data",
                                            w->what, list[i].id, list[i].state);
                        continue;
                }
                live++;
                /* Prefer a running one with an address. */
                if (!chosen.id[0] || (!chosen.private_ip[0] && list[i].private_ip[0]))
                        chosen = list[i];
        }
        if (live > 1)
                log_warning("%zu %ss of the pool are pending or running; using %s", live, w->what, chosen.id);
        if (chosen.id[0])
                log_info("%s: found %s (%s%s%s)", w->what, chosen.id, chosen.state, chosen.private_ip[0] ? ", " : "",
                         chosen.private_ip);
        else {
                r = provision_launch(p, w, gone, &chosen);
                if (r < 0)
                        return r;
        }
        r = provision_wait_ip(p, &chosen, w->what);
        if (r < 0)
                return r;
        if (inet_pton(AF_INET, chosen.private_ip, &addr) != 1)
                return provision_fail(p, -EBADMSG, "DescribeInstances", "a private address that is not IPv4");
        log_info("%s %s: private address %s", w->what, chosen.id, chosen.private_ip);
        *ret = chosen;
        return 0;
}

/* Renders the web host's user data into p->web_user_data: the --web-user-data file with webd's
 * certificate and key filled in (a new certificate from the pool's CA for --web-name and, when not NULL,
 * the address <ip>; its PEM in <*ret_cert>), or both placeholders emptied with --web-plain-http. The key
 * exists only in that buffer. */
static int provision_web_render(struct provision *p, const char *ip, char **ret_cert)
{
        const struct provision_options *o = p->o;
        _cleanup_free_ char *cert = NULL, *key = NULL;
        int r;

        if (p->ca.cert) {
                r = provision_tls_issue(&p->ca, o->web_name, ip, time(NULL), &cert, &key);
                if (r < 0)
                        return provision_fail(p, r, "TLS", "can't issue webd's certificate");
        }
        if (p->web_user_data) {
                OPENSSL_cleanse(p->web_user_data, p->web_user_data_len);
                free(p->web_user_data);
                p->web_user_data = NULL;
        }
        {
                const struct template_var vars[] = {
                        {PROVISION_WEB_CERT_VAR, cert ? cert : ""},
                        {PROVISION_WEB_KEY_VAR, key ? key : ""},
                };

                r = template_render(o->web_user_data, o->web_user_data_len, vars, ELEMENTSOF(vars),
                                    EC2_USER_DATA_MAX, &p->web_user_data, &p->web_user_data_len);
        }
        if (key)
                OPENSSL_cleanse(key, strlen(key));
        if (r < 0)
                return provision_fail(p, r, "TLS",
                                      r == -EFBIG ? "the web user data with webd's certificate and key is "
                                                    "larger than EC2's 16384 bytes"
                                                  : "out of memory");
        *ret_cert = TAKE_PTR(cert);
        return 0;
}

static int provision_web_save(struct provision *p, const char *cert)
{
        int r = provision_tls_web_save(p->o->web_tls_dir, cert);

        if (r < 0) {
                log_error_errno(r, "can't write %s/web.pem: %m", p->o->web_tls_dir);
                return provision_fail(p, r, "TLS", "webd's certificate not recorded");
        }
        log_info("web host: a certificate for %s from the CA in %s (%d days) is in its user data", p->o->web_name,
                 p->o->web_tls_dir, PROVISION_TLS_WEB_DAYS);
        return 0;
}

/* Before a launch: the user data, with a certificate for the name (the address is not known yet). */
static int provision_web_prepare(struct provision *p)
{
        _cleanup_free_ char *cert = NULL;
        int r;

        r = provision_web_render(p, NULL, &cert);
        if (r >= 0 && cert)
                r = provision_web_save(p, cert);
        return r;
}

/* The web tier's CA, before anything is launched: made when missing only if <create> (a certificate may
 * be issued), else none (-ENOENT, not logged: plain HTTP). A CA that can't be read stops the run. */
static int provision_web_ca(struct provision *p, bool create)
{
        char why[512];
        int r;

        r = provision_tls_ca_load(p->o->web_tls_dir, time(NULL), create, &p->ca, why, sizeof(why));
        if (r == -ENOENT && !create)
                return r;
        if (r < 0) {
                p->exit_status = PROVISION_EXIT_API;
                log_error("the web tier's private CA: %s", why);
                return r;
        }
        if (p->ca.made)
                log_info("made the web tier's private CA: %s/ca.pem (its key ca.key, 0600, stays here; %d days)",
                         p->o->web_tls_dir, PROVISION_TLS_CA_DAYS);
        else
                log_info("web tier's private CA: found %s/ca.pem", p->o->web_tls_dir);
        return 0;
}

/* Calls <action> (StopInstances, StartInstances) on the one instance <id>. */
static int provision_instance_action(struct provision *p, const char *action, const char *id)
{
        const struct ec2_param params[] = {{"InstanceId.1", id}};
        struct provision_answer a = {0};
        int r;

        r = provision_call(p, action, params, ELEMENTSOF(params), NULL, &a);
        provision_answer_clear(&a);
        return r;
}

/* Waits until instance <id> is in <state> (at most PROVISION_WEB_WAIT_USEC). */
static int provision_wait_state(struct provision *p, const char *id, const char *state)
{
        const struct ec2_param params[] = {{"InstanceId.1", id}};
        uint64_t deadline = now_usec() + PROVISION_WEB_WAIT_USEC;
        char why[128];

        for (;;) {
                _cleanup_free_ struct ec2_instance *list = NULL;
                size_t n = 0;
                int r;

                r = provision_describe_instances(p, params, ELEMENTSOF(params), &list, &n);
                if (r < 0)
                        return r;
                if (n == 1 && strcmp(list[0].id, id) == 0 && strcmp(list[0].state, state) == 0)
                        return 0;
                if (n != 1 || strcmp(list[0].state, "terminated") == 0 || strcmp(list[0].state, "shutting-down") == 0)
                        return provision_fail(p, -EIO, "DescribeInstances", "the web host is gone");
                if (now_usec() >= deadline) {
                        (void)snprintf(why, sizeof(why), "the web host is not %s after 10 minutes", state);
                        return provision_fail(p, -ETIMEDOUT, "DescribeInstances", why);
                }
                provision_sleep(p, PROVISION_WEB_POLL_USEC);
        }
}

/* Renews webd's certificate on the running web host: a new one from the same CA, for the name and the
 * host's address, in its user data. EC2 changes the user data of a stopped instance only, so the web host
 * is stopped, given the new user data and started again (its data volume stays); on boot its
 * scripts/cloud-init-web.sh hook installs the certificate from the user data and reloads webd. web.pem
 * records the new certificate only once EC2 holds it. */
static int provision_web_renew(struct provision *p, long days)
{
        const char *id = p->web_instance;
        _cleanup_free_ char *cert = NULL, *b64 = NULL;
        struct provision_answer a = {0};
        int r;

        r = provision_web_render(p, p->web_ip, &cert);
        if (r < 0)
                return r;
        b64 = malloc(4 * ((p->web_user_data_len + 2) / 3) + 1);
        if (!b64)
                return provision_fail(p, -ENOMEM, "ModifyInstanceAttribute", "out of memory");
        (void)EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)p->web_user_data, (int)p->web_user_data_len);

        log_notice("web host %s: renewing webd's certificate (%ld days left): stopping it to change its user data",
                   id, days);
        r = provision_instance_action(p, "StopInstances", id);
        if (r >= 0)
                r = provision_wait_state(p, id, "stopped");
        if (r >= 0) {
                /* The Attribute/Value form: Value is the user data in base64, as EC2 documents it. */
                const struct ec2_param params[] = {{"InstanceId", id}, {"Attribute", "userData"}, {"Value", b64}};

                r = provision_call(p, "ModifyInstanceAttribute", params, ELEMENTSOF(params), NULL, &a);
                provision_answer_clear(&a);
                if (r >= 0)
                        r = provision_web_save(p, cert);
        }
        /* Started again whatever happened above, so a failed renewal never leaves the web host down. */
        if (provision_instance_action(p, "StartInstances", id) < 0 || provision_wait_state(p, id, "running") < 0) {
                log_error("web host %s may still be stopped: start it (aws ec2 start-instances --instance-ids %s) "
                          "before running lbctl provision again",
                          id, id);
                return r < 0 ? r : -EIO;
        }
        if (r < 0)
                return r;
        log_notice("web host %s: running again with webd's new certificate for %s and %s", id, p->o->web_name,
                   p->web_ip);
        return 0;
}

/* A web host found running: the certificate recorded for it says whether the relays may expect TLS, and
 * how long it has left; with fewer than PROVISION_TLS_RENEW_DAYS (or --renew-web-cert) it is renewed. */
static int provision_web_found(struct provision *p, bool launched)
{
        const struct provision_options *o = p->o;
        long days = 0;
        int r;

        if (!launched) {
                r = provision_tls_web_days_left(o->web_tls_dir, &p->ca, o->web_name, time(NULL), &days);
                if (r < 0) {
                        log_warning("web host %s: %s/web.pem %s, so webd there has no certificate from "
                                    "this CA: the relays stay on plain HTTP to it (replace the web host for "
                                    "TLS, or give --web-plain-http to say so)",
                                    p->web_instance, o->web_tls_dir,
                                    r == -ENOENT ? "is missing" : "is not a certificate of this CA for the name");
                        return 0;
                }
                if (o->renew_web_cert && !o->web_user_data) {
                        p->exit_status = PROVISION_EXIT_USAGE;
                        log_error("--renew-web-cert: give --web-user-data FILE (the web host's user data "
                                  "template), which carries the new certificate");
                        return -EINVAL;
                }
                if (days < PROVISION_TLS_RENEW_DAYS && !o->web_user_data)
                        log_warning("web host %s: webd's certificate has %ld days left: run again with "
                                    "--web-user-data FILE to renew it",
                                    p->web_instance, days);
                else if (days < PROVISION_TLS_RENEW_DAYS || o->renew_web_cert) {
                        r = provision_web_renew(p, days);
                        if (r < 0)
                                return r;
                } else
                        log_info("web host %s: webd's certificate for %s has %ld days left", p->web_instance,
                                 o->web_name, days);
        }
        (void)snprintf(p->web_ca, sizeof(p->web_ca), "%s/ca.pem", o->web_tls_dir);
        (void)snprintf(p->web_name, sizeof(p->web_name), "%s", o->web_name);
        return 0;
}

static int provision_web(struct provision *p)
{
        const struct provision_role w = {
                .role = PROVISION_ROLE_WEB,
                .what = "web host",
                .flag = "--web-user-data",
                .group = GROUP_WEB,
                .user_data = p->o->web_user_data,
                .user_data_len = p->o->web_user_data_len,
                .prepare = provision_web_prepare,
        };
        struct ec2_instance inst;
        int r;

        /* TLS unless --web-plain-http, or a web user data that can't carry webd's certificate. Without any
         * web user data nothing is launched: the CA is only looked for, for the web host found. */
        if (p->o->web_user_data && !p->o->web_placeholders && !p->o->web_plain)
                log_warning("--web-user-data %s has no " PROVISION_WEB_CERT_VAR " and " PROVISION_WEB_KEY_VAR
                            " (see scripts/cloud-init-web.sh): a web host booted from it gets no certificate, "
                            "and the relays speak plain HTTP to it",
                            p->o->web_user_data_path);
        else if (!p->o->web_plain) {
                r = provision_web_ca(p, p->o->web_placeholders);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        r = provision_role_instance(p, &w, &inst);
        if (r < 0)
                return r;
        memcpy(p->web_instance, inst.id, sizeof(p->web_instance));
        memcpy(p->web_ip, inst.private_ip, sizeof(p->web_ip));
        (void)snprintf(p->upstream, sizeof(p->upstream), "%s:%u", p->web_ip, p->o->web_port);
        if (p->ca.cert)
                return provision_web_found(p, p->web_user_data != NULL);
        return 0;
}

/* The relays' certificate and key, from the same private CA, for the name lbd checks (--relay-name): kept
 * in --web-tls-dir as relay.pem and relay.key (0600) for lbd to put into each backend's user data
 * ([ec2] relay_tls_cert and relay_tls_key). A pair found there for the name, with at least
 * PROVISION_TLS_RENEW_DAYS left, is kept; else a new one is issued (relays launched from then on get it). */
static int provision_relay_tls(struct provision *p)
{
        const struct provision_options *o = p->o;
        _cleanup_free_ char *cert = NULL, *key = NULL;
        long days = 0;
        int r;

        if (!p->ca.cert) {
                r = provision_web_ca(p, true);
                if (r < 0)
                        return r;
        }
        r = provision_tls_relay_days_left(o->web_tls_dir, &p->ca, o->relay_name, time(NULL), &days);
        if (r >= 0 && days >= PROVISION_TLS_RENEW_DAYS)
                log_info("relays' certificate for %s: %ld days left", o->relay_name, days);
        else {
                if (r >= 0)
                        log_notice("relays' certificate for %s: %ld days left, renewing it (relays launched "
                                   "from now on get the new one)",
                                   o->relay_name, days);
                else if (r != -ENOENT)
                        log_warning("%s/relay.pem and relay.key: %s, issuing new ones", o->web_tls_dir,
                                    r == -EPERM ? "the key is readable by others" : "not a pair from this CA for the name");
                r = provision_tls_issue(&p->ca, o->relay_name, NULL, time(NULL), &cert, &key);
                if (r < 0)
                        return provision_fail(p, r, "TLS", "can't issue the relays' certificate");
                r = provision_tls_relay_save(o->web_tls_dir, cert, key);
                OPENSSL_cleanse(key, strlen(key));
                if (r < 0) {
                        log_error_errno(r, "can't write %s/relay.key and relay.pem: %m", o->web_tls_dir);
                        return provision_fail(p, r, "TLS", "the relays' certificate not written");
                }
                log_info("relays' certificate for %s from the CA in %s (%d days): %s/relay.pem, its key relay.key (0600)",
                         o->relay_name, o->web_tls_dir, PROVISION_TLS_WEB_DAYS, o->web_tls_dir);
        }
        (void)snprintf(p->relay_cert, sizeof(p->relay_cert), "%s/relay.pem", o->web_tls_dir);
        (void)snprintf(p->relay_key, sizeof(p->relay_key), "%s/relay.key", o->web_tls_dir);
        return 0;
}

/* The second LB host (--lb-peer): the first is the machine the installer runs on. */
static int provision_lb_peer(struct provision *p)
{
        const struct provision_role w = {
                .role = PROVISION_ROLE_LB,
                .what = "second LB host",
                .flag = "--lb-peer",
                .group = GROUP_LB,
                .user_data = p->o->lb_user_data,
                .user_data_len = p->o->lb_user_data_len,
        };
        struct ec2_instance inst;
        int r;

        r = provision_role_instance(p, &w, &inst);
        if (r < 0)
                return r;
        memcpy(p->lb_peer, inst.id, sizeof(p->lb_peer));
        memcpy(p->lb_peer_ip, inst.private_ip, sizeof(p->lb_peer_ip));
        return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Addresses */

/* The pool's Elastic IP: the one carrying the pool's tag, else one allocated with it (AllocateAddress has
 * no client token: a run whose answer was lost finds the address at the next run). */
static int provision_address(struct provision *p)
{
        const struct provision_options *o = p->o;
        char pool_filter[PROVISION_TAG_KEY_MAX + 8], name[PROVISION_NAME_MAX];
        const struct ec2_param find[] = {
                {"Filter.1.Name", pool_filter},
                {"Filter.1.Value.1", o->tag_value},
        };
        const struct ec2_param allocate[] = {
                {"Domain", "vpc"},
                {"TagSpecification.1.ResourceType", "elastic-ip"},
                {"TagSpecification.1.Tag.1.Key", o->tag_key},
                {"TagSpecification.1.Tag.1.Value", o->tag_value},
                {"TagSpecification.1.Tag.2.Key", "Name"},
                {"TagSpecification.1.Tag.2.Value", name},
        };
        struct provision_answer a = {0};
        size_t n = 0;
        int r;

        (void)snprintf(pool_filter, sizeof(pool_filter), "tag:%s", o->tag_key);
        (void)snprintf(name, sizeof(name), "%s-lb", o->prefix);
        r = provision_call(p, "DescribeAddresses", find, ELEMENTSOF(find), NULL, &a);
        if (r >= 0) {
                r = provision_parse_address(a.xml, a.len, &p->address, &n);
                if (r < 0 && r != -ENOENT)
                        r = provision_bad_answer(p, "DescribeAddresses", r);
        }
        provision_answer_clear(&a);
        if (r >= 0) {
                if (n > 1)
                        log_warning("%zu Elastic IPs carry the pool's tag; using %s", n, p->address.allocation_id);
                log_info("Elastic IP: found %s (%s)", p->address.allocation_id, p->address.public_ip);
                return 0;
        }
        if (r != -ENOENT)
                return r;
        r = provision_call(p, "AllocateAddress", allocate, ELEMENTSOF(allocate), NULL, &a);
        if (r >= 0) {
                r = provision_parse_address(a.xml, a.len, &p->address, NULL);
                if (r < 0)
                        r = provision_bad_answer(p, "AllocateAddress", r);
        }
        provision_answer_clear(&a);
        if (r < 0)
                return r;
        log_info("Elastic IP: allocated %s (%s) as %s", p->address.allocation_id, p->address.public_ip, name);
        return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Output */

static bool provision_value_ok(const char *v)
{
        return strlen(v) < PROVISION_VALUE_MAX && ec2_chars_ok(v, "._:/-");
}

static int provision_print(const struct provision *p)
{
        /* The optional keys only when asked for: the output stays what it was without them. */
        const struct {
                const char *key, *value;
                bool shown;
        } rows[] = {
                {"LBD_VPC", p->vpc, true},
                {"LBD_SUBNET", p->o->subnet, true},
                {"LBD_SECURITY_GROUP_LB", p->groups[GROUP_LB], true},
                {"LBD_SECURITY_GROUP_BACKEND", p->groups[GROUP_BACKEND], true},
                {"LBD_SECURITY_GROUP_WEB", p->groups[GROUP_WEB], true},
                {"LBD_IMAGE", p->image, true},
                {"LBD_WEB_INSTANCE", p->web_instance, true},
                {"LBD_UPSTREAM", p->upstream, true},
                {"LBD_RELAY_CERT", p->relay_cert, p->relay_cert[0] != 0},
                {"LBD_RELAY_KEY", p->relay_key, p->relay_cert[0] != 0},
                {"LBD_RELAY_NAME", p->o->relay_name, p->relay_cert[0] != 0},
                {"LBD_ELASTIC_IP", p->address.allocation_id, p->o->elastic_ip},
                {"LBD_PUBLIC_IP", p->address.public_ip, p->o->elastic_ip},
                {"LBD_LB_PEER_INSTANCE", p->lb_peer, p->o->lb_user_data != NULL},
                {"LBD_LB_PEER_IP", p->lb_peer_ip, p->o->lb_user_data != NULL},
                {"LBD_WEB_CA", p->web_ca, p->web_ca[0] != 0},
                {"LBD_WEB_NAME", p->web_name, p->web_ca[0] != 0},
        };
        _cleanup_(cJSON_Deletep) cJSON *json = NULL;
        _cleanup_free_ char *text = NULL;

        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                if (rows[i].shown && !provision_value_ok(rows[i].value)) {
                        log_error("%s: refusing to print a value outside [A-Za-z0-9._:/-]", rows[i].key);
                        return PROVISION_EXIT_API;
                }
        if (!p->o->json) {
                for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                        if (rows[i].shown)
                                printf("%s=%s\n", rows[i].key, rows[i].value);
                return 0;
        }
        json = cJSON_CreateObject();
        if (!json)
                return PROVISION_EXIT_API;
        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                if (rows[i].shown && !cJSON_AddStringToObject(json, rows[i].key, rows[i].value))
                        return PROVISION_EXIT_API;
        text = cJSON_PrintUnformatted(json);
        if (!text)
                return PROVISION_EXIT_API;
        printf("%s\n", text);
        return 0;
}

/* ---------------------------------------------------------------------------------------------------- */

static int provision_run(struct provision *p)
{
        int r;

        r = provision_subnet(p);
        if (r >= 0)
                r = provision_groups(p);
        if (r >= 0)
                r = provision_base_image(p);
        if (r >= 0 && p->o->bake_from)
                r = provision_bake(p);
        else if (r >= 0)
                memcpy(p->image, p->base_image, sizeof(p->image));
        if (r >= 0 && !p->o->no_web)
                r = provision_web(p);
        if (r >= 0 && p->o->elastic_ip)
                r = provision_address(p);
        if (r >= 0 && p->o->lb_user_data)
                r = provision_lb_peer(p);
        if (r >= 0 && !p->o->relay_plain)
                r = provision_relay_tls(p);
        return r;
}

int provision_main(int argc, char **argv)
{
        struct provision_options o = {0};
        struct provision p = {.o = &o};
        int r, status;

        r = provision_parse_options(argc, argv, &o);
        if (r != 0) {
                free(o.web_user_data);
                free(o.lb_user_data);
                return r < 0 ? 0 : r;
        }
        log_set_ident("lbctl");

        {
                const struct ec2_settings s = {
                        .region = o.region,
                        .endpoint = o.endpoint,
                        .credentials_file = o.credentials_file,
                        .profile = o.profile,
                };

                p.base = event_base_new();
                if (!p.base) {
                        free(o.web_user_data);
                free(o.lb_user_data);
                        log_error("failed to set up the event loop");
                        return PROVISION_EXIT_API;
                }
                r = ec2_new(p.base, &s, &p.ec2);
        }
        if (r < 0) {
                status = r == -EINVAL
                                 ? (o.credentials_file ? PROVISION_EXIT_CREDENTIALS : PROVISION_EXIT_USAGE)
                                 : PROVISION_EXIT_API;
                log_error_errno(
                        r, "failed to set up the EC2 client (%s): %m",
                        status == PROVISION_EXIT_CREDENTIALS
                                ? "the credentials file can't be read or holds no key"
                                : "check the endpoint URL, AWS_ENDPOINT_URL_EC2 and AWS_ENDPOINT_URL");
                event_base_free(p.base);
                free(o.web_user_data);
                free(o.lb_user_data);
                return status;
        }

        r = provision_run(&p);
        if (r < 0)
                status = p.exit_status ? p.exit_status : PROVISION_EXIT_API;
        else
                status = provision_print(&p);
        p.ec2 = ec2_free(p.ec2);
        provision_tls_ca_clear(&p.ca);
        if (p.web_user_data)
                OPENSSL_cleanse(p.web_user_data, p.web_user_data_len);
        free(p.web_user_data);
        event_base_free(p.base);
        free(o.web_user_data);
        free(o.lb_user_data);
        if (fflush(stdout) != 0 && status == 0)
                status = PROVISION_EXIT_API;
        return status;
}

/* Fuzz target: what EC2 answers `lbctl provision`. Any bytes go through every parser of
 * lbctl/provision-parse.h (subnets, security groups, created ids, <return> answers, images, image names);
 * whatever they accept must hold only bounded, well-formed fields within the limits the header promises,
 * and the decisions taken on it (rules present or wanted, tags, the Ubuntu LTS image picked) must agree
 * with what was parsed. Every input runs through all of them: a seed of one kind exercises its own parser
 * and the others' refusal of a foreign document, and a mutation may reach another. The instance and error
 * answers provision.c also reads go through aws/ec2.c's parsers, fuzzed by fuzz-ec2.c; they are seeds here
 * for their shapes (tag sets, nested items) and because these parsers must refuse them. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aws/ec2.h"
#include "lbctl/provision-parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed-size field must be NUL-terminated inside its buffer. */
static void check_field(const char *s, size_t size)
{
        if (strnlen(s, size) >= size)
                abort();
}

/* An EC2 id the parsers accepted: "<prefix>-" and more, within EC2_ID_MAX. */
static void check_id(const char *id, const char *prefix)
{
        size_t n = strlen(prefix);

        check_field(id, EC2_ID_MAX);
        if (strncmp(id, prefix, n) != 0 || id[n] != '-' || !id[n + 1])
                abort();
}

static void check_port(int port)
{
        if (port < -1 || port > 65535)
                abort();
}

static void fuzz_subnet(const char *text, size_t size)
{
        struct provision_subnet s;
        int r = provision_parse_subnet(text, size, &s);

        if (r != 0) {
                if (r != -ENOENT && r != -EBADMSG)
                        abort();
                return;
        }
        check_id(s.id, "subnet");
        check_id(s.vpc_id, "vpc");
        check_field(s.cidr, sizeof(s.cidr));
        check_field(s.zone, sizeof(s.zone));
        check_field(s.state, sizeof(s.state));
}

static void fuzz_rule(const struct provision_group *g, const struct provision_rule *rule)
{
        bool tcp = strcmp(rule->protocol, "tcp") == 0 || strcmp(rule->protocol, "6") == 0;

        if (!rule->protocol[0] || !rule->source[0])
                abort();
        check_field(rule->protocol, sizeof(rule->protocol));
        check_field(rule->source, sizeof(rule->source));
        check_port(rule->from_port);
        check_port(rule->to_port);
        if (rule->kind != PROVISION_SOURCE_CIDR4 && rule->kind != PROVISION_SOURCE_CIDR6 &&
            rule->kind != PROVISION_SOURCE_GROUP && rule->kind != PROVISION_SOURCE_PREFIX_LIST)
                abort();
        /* A TCP rule is always the rule it was parsed as: the comparisons must find it again. */
        if (provision_parse_rule_wanted(rule, rule, 1) != tcp)
                abort();
        if (tcp && rule->from_port >= 0 && rule->from_port == rule->to_port &&
            !provision_parse_rule_present(g, (unsigned)rule->from_port, rule->kind, rule->source))
                abort();
}

static void fuzz_groups(const char *text, size_t size)
{
        struct provision_group *list = NULL;
        size_t n = 0;
        int r = provision_parse_groups(text, size, &list, &n);

        if (r != 0) {
                if ((r != -EBADMSG && r != -E2BIG && r != -ENOMEM) || list)
                        abort();
                return;
        }
        if (n > PROVISION_MAX_GROUPS || (n == 0) != (list == NULL))
                abort();
        for (size_t i = 0; i < n; i++) {
                const struct provision_group *g = &list[i];

                check_id(g->id, "sg");
                if (!g->name[0] || g->n_tags > PROVISION_MAX_TAGS || g->n_rules > PROVISION_MAX_RULES)
                        abort();
                check_field(g->name, sizeof(g->name));
                check_field(g->vpc_id, sizeof(g->vpc_id));
                for (size_t t = 0; t < g->n_tags; t++) {
                        if (!g->tags[t].key[0])
                                abort();
                        check_field(g->tags[t].key, sizeof(g->tags[t].key));
                        check_field(g->tags[t].value, sizeof(g->tags[t].value));
                        if (!provision_parse_group_tag(g, g->tags[t].key))
                                abort();
                }
                for (size_t k = 0; k < g->n_rules; k++)
                        fuzz_rule(g, &g->rules[k]);
        }
        free(list);
}

static void fuzz_created_ids(const char *text, size_t size)
{
        char id[EC2_ID_MAX];

        if (provision_parse_group_id(text, size, id) == 0)
                check_id(id, "sg");
        if (provision_parse_image_id(text, size, id) == 0)
                check_id(id, "ami");
}

/* An Elastic IP's answer: a whole allocation id and a dotted IPv4 address, or nothing written. */
static void fuzz_address(const char *text, size_t size)
{
        struct provision_address a;
        size_t n = 0;

        if (provision_parse_address(text, size, &a, &n) == 0) {
                check_id(a.allocation_id, "eipalloc");
                if (strlen(a.public_ip) < 7 || strspn(a.public_ip, "0123456789.") != strlen(a.public_ip) || n < 1)
                        abort();
        }
}

static void fuzz_return(const char *text, size_t size)
{
        static const char *const responses[] = {"CreateTagsResponse", "AuthorizeSecurityGroupIngressResponse"};

        for (size_t i = 0; i < sizeof(responses) / sizeof(responses[0]); i++) {
                int r = provision_parse_return(text, size, responses[i]);

                if (r != 0 && r != -EINVAL && r != -EBADMSG)
                        abort();
        }
}

static void check_image(const struct provision_image *img)
{
        unsigned release;

        check_id(img->id, "ami");
        check_field(img->name, sizeof(img->name));
        check_field(img->state, sizeof(img->state));
        check_field(img->architecture, sizeof(img->architecture));
        check_field(img->creation_date, sizeof(img->creation_date));
        if (provision_parse_ubuntu_lts(img->name, &release) &&
            (release % 100 != 4 || release / 100 % 2 != 0 || release / 100 < 12 || release / 100 > 99))
                abort();
}

/* The same answer read twice, as two pages of one listing: the second appends to the first. */
static void fuzz_images(const char *text, size_t size)
{
        struct provision_image *list = NULL;
        const struct provision_image *best;
        char token[EC2_NEXT_TOKEN_MAX];
        size_t n = 0, first = 0;
        int r;

        for (unsigned page = 0; page < 2; page++) {
                r = provision_parse_images(text, size, &list, &n, token);
                if (n > PROVISION_MAX_IMAGES)
                        abort();
                if (r != 0) {
                        if (r != -EBADMSG && r != -E2BIG && r != -ENOMEM)
                                abort();
                        break;
                }
                check_field(token, sizeof(token));
                if (page == 0)
                        first = n;
                else if (n != 2 * first)
                        abort();
        }
        for (size_t i = 0; i < n; i++)
                check_image(&list[i]);
        best = provision_parse_pick_image(list, n);
        if (best) {
                unsigned release;

                if (best < list || best >= list + n || strcmp(best->state, "available") != 0 ||
                    strcmp(best->architecture, "x86_64") != 0 ||
                    !provision_parse_ubuntu_lts(best->name, &release))
                        abort();
        }
        free(list);
}

/* The input itself as an image name: names reach provision_parse_ubuntu_lts() from any answer. */
static void fuzz_name(const char *text, size_t size)
{
        char name[PROVISION_NAME_MAX];
        unsigned release;

        if (size >= sizeof(name))
                return;
        memcpy(name, text, size);
        name[size] = 0;
        if (provision_parse_ubuntu_lts(name, &release) && (release % 100 != 4 || release / 100 % 2 != 0))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *text = (const char *)data;

        fuzz_subnet(text, size);
        fuzz_groups(text, size);
        fuzz_created_ids(text, size);
        fuzz_address(text, size);
        fuzz_return(text, size);
        fuzz_images(text, size);
        fuzz_name(text, size);
        return 0;
}

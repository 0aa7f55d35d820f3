/* Parsers of the EC2 answers `lbctl provision` reads (see provision-parse.h), built on ec2.c's libxml2
 * helpers: no DTD, no entity expansion, only the elements named here, each into a fixed-size field.
 *
 * Nothing here talks to the network or keeps state: the functions take a document and fill the caller's
 * structures, which makes them easy to test with hostile inputs. */
#include "lbctl/provision-parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "common/netaddr.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(xmlDoc *, xmlFreeDoc)

/* The root element of <doc> when it is named <name>, else NULL. */
static const xmlNode *provision_root(const xmlDoc *doc, const char *name)
{
        const xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;

        return ec2_xml_is(root, name) ? root : NULL;
}

/* Reads child <name> of <parent> into <buf> and checks it holds only alphanumerics and <punct>. An absent
 * child gives "" (allowed unless <required>). */
static int provision_field(const xmlNode *parent, const char *name, char *buf, size_t size,
                           const char *punct, bool required)
{
        if (ec2_xml_child_text(parent, name, buf, size) < 0)
                return -EBADMSG;
        if ((punct && !ec2_chars_ok(buf, punct)) || (required && !buf[0]))
                return -EBADMSG;
        return 0;
}

/* An EC2 id: "<prefix>-" and alphanumerics. */
static bool provision_id_ok(const char *id, const char *prefix)
{
        size_t n = strlen(prefix);

        return strncmp(id, prefix, n) == 0 && id[n] == '-' && id[n + 1] && ec2_chars_ok(id + n + 1, "");
}

/* A port field: "" (absent: -1), or an integer in -1..65535. */
static int provision_port(const xmlNode *parent, const char *name, int *ret)
{
        char buf[16];
        char *end;
        long v;

        if (provision_field(parent, name, buf, sizeof(buf), "-", false) < 0)
                return -EBADMSG;
        if (!buf[0]) {
                *ret = -1;
                return 0;
        }
        errno = 0;
        v = strtol(buf, &end, 10);
        if (errno != 0 || *end || end == buf || v < -1 || v > 65535)
                return -EBADMSG;
        *ret = (int)v;
        return 0;
}

int provision_parse_subnet(const char *xml, size_t len, struct provision_subnet *ret)
{
        _cleanup_(xmlFreeDocp) xmlDoc *doc = ec2_xml_read(xml, len);
        const xmlNode *root = provision_root(doc, "DescribeSubnetsResponse"), *set;
        struct provision_subnet s = {0};

        if (!root)
                return -EBADMSG;
        set = ec2_xml_child(root, "subnetSet");
        if (!set)
                return -EBADMSG;
        for (const xmlNode *item = set->children; item; item = item->next) {
                if (!ec2_xml_is(item, "item"))
                        continue;
                if (provision_field(item, "subnetId", s.id, sizeof(s.id), "-", true) < 0 ||
                    provision_field(item, "vpcId", s.vpc_id, sizeof(s.vpc_id), "-", true) < 0 ||
                    provision_field(item, "cidrBlock", s.cidr, sizeof(s.cidr), ".:/", false) < 0 ||
                    provision_field(item, "availabilityZone", s.zone, sizeof(s.zone), "-", false) < 0 ||
                    provision_field(item, "state", s.state, sizeof(s.state), "-", false) < 0)
                        return -EBADMSG;
                if (!provision_id_ok(s.id, "subnet") || !provision_id_ok(s.vpc_id, "vpc"))
                        return -EBADMSG;
                *ret = s;
                return 0;
        }
        return -ENOENT;
}

static int provision_add_rule(struct provision_group *g, const struct provision_rule *base,
                              enum provision_source kind, const char *source)
{
        struct provision_rule *r;

        if (g->n_rules >= PROVISION_MAX_RULES)
                return -E2BIG;
        r = &g->rules[g->n_rules++];
        *r = *base;
        r->kind = kind;
        memcpy(r->source, source, strlen(source) + 1);
        return 0;
}

/* The sources of one permission: <set> holds items with a <field> each. */
static int provision_sources(struct provision_group *g, const struct provision_rule *base,
                             const xmlNode *set, const char *field, enum provision_source kind)
{
        bool cidr = kind == PROVISION_SOURCE_CIDR4 || kind == PROVISION_SOURCE_CIDR6;

        for (const xmlNode *item = set ? set->children : NULL; item; item = item->next) {
                char v[PROVISION_CIDR_MAX];
                int r;

                if (!ec2_xml_is(item, "item"))
                        continue;
                if (provision_field(item, field, v, sizeof(v), cidr ? ".:/" : "-", false) < 0)
                        return -EBADMSG;
                /* A source named only (EC2-Classic) has no id: not one of ours, and not comparable. */
                if (!v[0])
                        continue;
                r = provision_add_rule(g, base, kind, v);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int provision_permissions(struct provision_group *g, const xmlNode *set)
{
        for (const xmlNode *item = set ? set->children : NULL; item; item = item->next) {
                struct provision_rule base = {0};
                int r;

                if (!ec2_xml_is(item, "item"))
                        continue;
                if (provision_field(item, "ipProtocol", base.protocol, sizeof(base.protocol), "-", true) <
                            0 ||
                    provision_port(item, "fromPort", &base.from_port) < 0 ||
                    provision_port(item, "toPort", &base.to_port) < 0)
                        return -EBADMSG;
                r = provision_sources(g, &base, ec2_xml_child(item, "ipRanges"), "cidrIp",
                                      PROVISION_SOURCE_CIDR4);
                if (r >= 0)
                        r = provision_sources(g, &base, ec2_xml_child(item, "ipv6Ranges"), "cidrIpv6",
                                              PROVISION_SOURCE_CIDR6);
                if (r >= 0)
                        r = provision_sources(g, &base, ec2_xml_child(item, "groups"), "groupId",
                                              PROVISION_SOURCE_GROUP);
                if (r >= 0)
                        r = provision_sources(g, &base, ec2_xml_child(item, "prefixListIds"), "prefixListId",
                                              PROVISION_SOURCE_PREFIX_LIST);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int provision_tags(struct provision_group *g, const xmlNode *set)
{
        for (const xmlNode *item = set ? set->children : NULL; item; item = item->next) {
                struct provision_tag *t;

                if (!ec2_xml_is(item, "item"))
                        continue;
                if (g->n_tags >= PROVISION_MAX_TAGS)
                        return -E2BIG;
                t = &g->tags[g->n_tags];
                if (provision_field(item, "key", t->key, sizeof(t->key), NULL, true) < 0 ||
                    provision_field(item, "value", t->value, sizeof(t->value), NULL, false) < 0)
                        return -EBADMSG;
                g->n_tags++;
        }
        return 0;
}

static int provision_group(const xmlNode *item, struct provision_group *g)
{
        int r;

        memset(g, 0, sizeof(*g));
        if (provision_field(item, "groupId", g->id, sizeof(g->id), "-", true) < 0 ||
            provision_field(item, "groupName", g->name, sizeof(g->name), NULL, true) < 0 ||
            provision_field(item, "vpcId", g->vpc_id, sizeof(g->vpc_id), "-", false) < 0 ||
            !provision_id_ok(g->id, "sg"))
                return -EBADMSG;
        r = provision_tags(g, ec2_xml_child(item, "tagSet"));
        if (r >= 0)
                r = provision_permissions(g, ec2_xml_child(item, "ipPermissions"));
        return r;
}

int provision_parse_groups(const char *xml, size_t len, struct provision_group **ret, size_t *ret_n)
{
        _cleanup_(xmlFreeDocp) xmlDoc *doc = ec2_xml_read(xml, len);
        const xmlNode *root = provision_root(doc, "DescribeSecurityGroupsResponse"), *set;
        _cleanup_free_ struct provision_group *list = NULL;
        size_t n = 0;

        if (!root)
                return -EBADMSG;
        set = ec2_xml_child(root, "securityGroupInfo");
        if (!set)
                return -EBADMSG;
        for (const xmlNode *item = set->children; item; item = item->next) {
                struct provision_group *v;
                int r;

                if (!ec2_xml_is(item, "item"))
                        continue;
                if (n >= PROVISION_MAX_GROUPS)
                        return -E2BIG;
                v = reallocarray(list, n + 1, sizeof(*list));
                if (!v)
                        return -ENOMEM;
                list = v;
                r = provision_group(item, &list[n]);
                if (r < 0)
                        return r;
                n++;
        }
        *ret = TAKE_PTR(list);
        *ret_n = n;
        return 0;
}

int provision_parse_group_id(const char *xml, size_t len, char ret[static EC2_ID_MAX])
{
        _cleanup_(xmlFreeDocp) xmlDoc *doc = ec2_xml_read(xml, len);
        const xmlNode *root = provision_root(doc, "CreateSecurityGroupResponse");
        char id[EC2_ID_MAX];

        if (!root || provision_field(root, "groupId", id, sizeof(id), "-", true) < 0 ||
            !provision_id_ok(id, "sg"))
                return -EBADMSG;
        memcpy(ret, id, sizeof(id));
        return 0;
}

static int provision_address_of(const xmlNode *node, struct provision_address *ret)
{
        struct provision_address a;
        struct in_addr ip;

        if (provision_field(node, "allocationId", a.allocation_id, sizeof(a.allocation_id), "-", true) < 0 ||
            !provision_id_ok(a.allocation_id, "eipalloc") ||
            provision_field(node, "publicIp", a.public_ip, sizeof(a.public_ip), ".", true) < 0 ||
            inet_pton(AF_INET, a.public_ip, &ip) != 1)
                return -EBADMSG;
        *ret = a;
        return 0;
}

int provision_parse_address(const char *xml, size_t len, struct provision_address *ret, size_t *ret_n)
{
        _cleanup_(xmlFreeDocp) xmlDoc *doc = ec2_xml_read(xml, len);
        const xmlNode *root = provision_root(doc, "AllocateAddressResponse"), *set;
        const xmlNode *first = NULL;
        size_t n = 0;

        if (root) {
                if (ret_n)
                        *ret_n = 1;
                return provision_address_of(root, ret);
        }
        root = provision_root(doc, "DescribeAddressesResponse");
        set = root ? ec2_xml_child(root, "addressesSet") : NULL;
        if (!root)
                return -EBADMSG;
        for (const xmlNode *item = set ? set->children : NULL; item; item = item->next)
                if (ec2_xml_is(item, "item")) {
                        if (!first)
                                first = item;
                        n++;
                }
        if (ret_n)
                *ret_n = n;
        if (!first)
                return -ENOENT;
        return provision_address_of(first, ret);
}

int provision_parse_return(const char *xml, size_t len, const char *response)
{
        _cleanup_(xmlFreeDocp) xmlDoc *doc = ec2_xml_read(xml, len);
        const xmlNode *root = provision_root(doc, response);
        char v[16];

        if (!root || provision_field(root, "return", v, sizeof(v), NULL, false) < 0)
                return -EBADMSG;
        /* Some implementations (moto_server) answer an empty response: HTTP 200 already said yes. */
        if (!v[0] || strcmp(v, "true") == 0)
                return 0;
        return strcmp(v, "false") == 0 ? -EINVAL : -EBADMSG;
}

static int provision_image(const xmlNode *item, struct provision_image *img)
{
        memset(img, 0, sizeof(*img));
        if (provision_field(item, "imageId", img->id, sizeof(img->id), "-", true) < 0 ||
            provision_field(item, "name", img->name, sizeof(img->name), NULL, false) < 0 ||
            provision_field(item, "imageState", img->state, sizeof(img->state), "-", false) < 0 ||
            provision_field(item, "architecture", img->architecture, sizeof(img->architecture), "_-",
                            false) < 0 ||
            provision_field(item, "creationDate", img->creation_date, sizeof(img->creation_date), "-:.+",
                            false) < 0 ||
            !provision_id_ok(img->id, "ami"))
                return -EBADMSG;
        return 0;
}

int provision_parse_images(const char *xml, size_t len, struct provision_image **list, size_t *n,
                           char next_token[static EC2_NEXT_TOKEN_MAX])
{
        _cleanup_(xmlFreeDocp) xmlDoc *doc = ec2_xml_read(xml, len);
        const xmlNode *root = provision_root(doc, "DescribeImagesResponse"), *set;
        char token[EC2_NEXT_TOKEN_MAX];

        if (!root)
                return -EBADMSG;
        set = ec2_xml_child(root, "imagesSet");
        if (!set)
                return -EBADMSG;
        for (const xmlNode *item = set->children; item; item = item->next) {
                struct provision_image *v;
                int r;

                if (!ec2_xml_is(item, "item"))
                        continue;
                if (*n >= PROVISION_MAX_IMAGES)
                        return -E2BIG;
                v = reallocarray(*list, *n + 1, sizeof(**list));
                if (!v)
                        return -ENOMEM;
                *list = v;
                r = provision_image(item, &v[*n]);
                if (r < 0)
                        return r;
                (*n)++;
        }
        if (provision_field(root, "nextToken", token, sizeof(token), "+/=-_.~:", false) < 0)
                return -EBADMSG;
        memcpy(next_token, token, strlen(token) + 1);
        return 0;
}

int provision_parse_image_id(const char *xml, size_t len, char ret[static EC2_ID_MAX])
{
        _cleanup_(xmlFreeDocp) xmlDoc *doc = ec2_xml_read(xml, len);
        const xmlNode *root = provision_root(doc, "CreateImageResponse");
        char id[EC2_ID_MAX];

        if (!root || provision_field(root, "imageId", id, sizeof(id), "-", true) < 0 ||
            !provision_id_ok(id, "ami"))
                return -EBADMSG;
        memcpy(ret, id, sizeof(id));
        return 0;
}

/* Two sources of the same kind are the same: CIDRs as networks, ids as strings. */
static bool provision_same_source(enum provision_source kind, const char *a, const char *b)
{
        struct netaddr_cidr ca, cb;

        if (kind != PROVISION_SOURCE_CIDR4 && kind != PROVISION_SOURCE_CIDR6)
                return strcmp(a, b) == 0;
        if (netaddr_cidr_parse(a, &ca) < 0 || netaddr_cidr_parse(b, &cb) < 0)
                return strcmp(a, b) == 0;
        return ca.family == cb.family && ca.prefix == cb.prefix &&
               memcmp(ca.addr, cb.addr, sizeof(ca.addr)) == 0;
}

static bool provision_is_tcp(const char *protocol)
{
        return strcmp(protocol, "tcp") == 0 || strcmp(protocol, "6") == 0;
}

bool provision_parse_rule_present(const struct provision_group *g, unsigned port, enum provision_source kind,
                                  const char *source)
{
        for (size_t i = 0; i < g->n_rules; i++) {
                const struct provision_rule *r = &g->rules[i];

                if (provision_is_tcp(r->protocol) && r->from_port == (int)port && r->to_port == (int)port &&
                    r->kind == kind && provision_same_source(kind, r->source, source))
                        return true;
        }
        return false;
}

bool provision_parse_rule_wanted(const struct provision_rule *rule, const struct provision_rule *wanted,
                                 size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (provision_is_tcp(rule->protocol) && rule->from_port == wanted[i].from_port &&
                    rule->to_port == wanted[i].to_port && rule->kind == wanted[i].kind &&
                    provision_same_source(rule->kind, rule->source, wanted[i].source))
                        return true;
        return false;
}

const char *provision_parse_group_tag(const struct provision_group *g, const char *key)
{
        for (size_t i = 0; i < g->n_tags; i++)
                if (strcmp(g->tags[i].key, key) == 0)
                        return g->tags[i].value;
        return NULL;
}

/* Skips at least one character of class <allowed> (a..z, 0..9) at <*p>. */
static bool provision_skip(const char **p, const char *allowed, size_t min)
{
        size_t n = 0;

        while (**p && strchr(allowed, **p)) {
                (*p)++;
                n++;
        }
        return n >= min;
}

bool provision_parse_ubuntu_lts(const char *name, unsigned *ret_release)
{
        static const char prefix[] = "ubuntu/images/hvm-ssd";
        static const char lower[] = "abcdefghijklmnopqrstuvwxyz";
        static const char digits[] = "0123456789";
        const char *p = name, *slash;
        unsigned year;

        if (!name || strncmp(p, prefix, sizeof(prefix) - 1) != 0)
                return false;
        p += sizeof(prefix) - 1;
        /* "hvm-ssd" or a variant of it ("hvm-ssd-gp3"), then the image's own name. */
        slash = strchr(p, '/');
        if (!slash || strchr(slash + 1, '/'))
                return false;
        for (const char *q = p; q < slash; q++)
                if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789-", *q))
                        return false;
        p = slash + 1;
        if (strncmp(p, "ubuntu-", 7) != 0)
                return false;
        p += 7;
        if (!provision_skip(&p, lower, 1) || *p++ != '-')
                return false;
        if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9' ||
            strncmp(p + 2, ".04-amd64-server-", 17) != 0)
                return false;
        year = (unsigned)(p[0] - '0') * 10 + (unsigned)(p[1] - '0');
        p += 2 + 17;
        /* The serial: a date and maybe a respin ("20240207.1"). */
        if (!provision_skip(&p, digits, 8))
                return false;
        if (*p == '.') {
                p++;
                if (!provision_skip(&p, digits, 1))
                        return false;
        }
        if (*p || year % 2 != 0 || year < 12)
                return false;
        *ret_release = year * 100 + 4;
        return true;
}

/* A creation date EC2 writes: "2024-04-23T07:26:41.000Z" (compared as text when well formed). */
static bool provision_date_ok(const char *s)
{
        static const char shape[] = "dddd-dd-ddTdd:dd:dd";

        for (size_t i = 0; i < sizeof(shape) - 1; i++) {
                if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
                        return false;
        }
        return true;
}

const struct provision_image *provision_parse_pick_image(const struct provision_image *list, size_t n)
{
        const struct provision_image *best = NULL;
        unsigned best_release = 0;

        for (size_t i = 0; i < n; i++) {
                const struct provision_image *img = &list[i];
                unsigned release;
                int c;

                if (strcmp(img->state, "available") != 0 || strcmp(img->architecture, "x86_64") != 0 ||
                    !provision_date_ok(img->creation_date) ||
                    !provision_parse_ubuntu_lts(img->name, &release))
                        continue;
                if (best) {
                        c = strcmp(img->creation_date, best->creation_date);
                        if (c == 0)
                                c = release > best_release ? 1 : release < best_release ? -1 : 0;
                        if (c == 0)
                                c = strcmp(img->name, best->name);
                        if (c <= 0)
                                continue;
                }
                best = img;
                best_release = release;
        }
        return best;
}

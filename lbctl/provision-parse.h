/* The EC2 answers `lbctl provision` reads, parsed with libxml2 into fixed-size fields, and the decisions
 * taken on them alone (is a rule already there, which Ubuntu image is the newest LTS).
 *
 * Every answer is untrusted: a field longer than its buffer, a character outside what the field may hold,
 * a number out of range, more items than the limits below: the whole answer is refused (-EBADMSG or
 * -E2BIG), never cut. Only the elements named here are read; everything else is ignored. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aws/ec2.h"

#define PROVISION_NAME_MAX      256 /* group and image names (EC2: 255 and 128 bytes) */
#define PROVISION_CIDR_MAX      64  /* "ffff:…:ffff/128" */
#define PROVISION_PROTOCOL_MAX  16
#define PROVISION_TAG_KEY_MAX   128
#define PROVISION_TAG_VALUE_MAX 256
#define PROVISION_MAX_TAGS      50   /* EC2's own limit per resource */
#define PROVISION_MAX_RULES     256  /* flattened ingress rules per group (one per source) */
#define PROVISION_MAX_GROUPS    16   /* groups in one DescribeSecurityGroups answer */
#define PROVISION_MAX_IMAGES    5000 /* images over every page of DescribeImages */

struct provision_subnet {
        char id[EC2_ID_MAX];
        char vpc_id[EC2_ID_MAX];
        char cidr[PROVISION_CIDR_MAX];
        char zone[EC2_ID_MAX];
        char state[EC2_STATE_MAX];
};

enum provision_source {
        PROVISION_SOURCE_CIDR4,
        PROVISION_SOURCE_CIDR6,
        PROVISION_SOURCE_GROUP,
        PROVISION_SOURCE_PREFIX_LIST,
};

/* One ingress rule with one source: EC2 groups sources under a (protocol, ports) permission; they are
 * flattened here. */
struct provision_rule {
        char protocol[PROVISION_PROTOCOL_MAX]; /* "tcp", "udp", "icmp", "-1" (all), or a number */
        int from_port;                         /* -1 when absent (all ports) */
        int to_port;
        enum provision_source kind;
        char source[PROVISION_CIDR_MAX]; /* CIDR, group id or prefix list id */
};

struct provision_tag {
        char key[PROVISION_TAG_KEY_MAX];
        char value[PROVISION_TAG_VALUE_MAX];
};

struct provision_group {
        char id[EC2_ID_MAX];
        char name[PROVISION_NAME_MAX];
        char vpc_id[EC2_ID_MAX];
        struct provision_tag tags[PROVISION_MAX_TAGS];
        size_t n_tags;
        struct provision_rule rules[PROVISION_MAX_RULES];
        size_t n_rules;
};

struct provision_image {
        char id[EC2_ID_MAX];
        char name[PROVISION_NAME_MAX];
        char state[EC2_STATE_MAX];
        char architecture[EC2_STATE_MAX];
        char creation_date[EC2_TIME_MAX];
};

/* DescribeSubnetsResponse: its first subnet into <ret>. Returns 0, -ENOENT (no subnet in it), -EBADMSG. */
int provision_parse_subnet(const char *xml, size_t len, struct provision_subnet *ret);

/* DescribeSecurityGroupsResponse: the groups (ingress rules and tags) into a new array <*ret> of <*ret_n>
 * (free() it; NULL when empty). Returns 0, -EBADMSG, -E2BIG, -ENOMEM. */
int provision_parse_groups(const char *xml, size_t len, struct provision_group **ret, size_t *ret_n);

/* CreateSecurityGroupResponse: the new group's id. Returns 0 or -EBADMSG. */
int provision_parse_group_id(const char *xml, size_t len, char ret[static EC2_ID_MAX]);

/* An answer <response> ("CreateTagsResponse", "AuthorizeSecurityGroupIngressResponse") whose <return> is
 * "true" or absent. Returns 0, -EINVAL when it says "false", -EBADMSG (another document, another value). */
int provision_parse_return(const char *xml, size_t len, const char *response);

/* DescribeImagesResponse: appends the images to <*list> (<*n>, reallocated; at most PROVISION_MAX_IMAGES
 * in all) and writes its nextToken ("" when none). Returns 0, -EBADMSG, -E2BIG, -ENOMEM; the caller frees
 * the list either way. */
int provision_parse_images(const char *xml, size_t len, struct provision_image **list, size_t *n,
                           char next_token[static EC2_NEXT_TOKEN_MAX]);

/* CreateImageResponse: the new image's id. Returns 0 or -EBADMSG. */
int provision_parse_image_id(const char *xml, size_t len, char ret[static EC2_ID_MAX]);

/* An Elastic IP: its allocation id (eipalloc-…) and public address. */
struct provision_address {
        char allocation_id[EC2_ID_MAX];
        char public_ip[EC2_ADDR_MAX];
};

/* Parses an AllocateAddressResponse, or the first address of a DescribeAddressesResponse (-ENOENT when it
 * lists none; <ret_n> gets how many it lists, may be NULL). Returns 0, -ENOENT or -EBADMSG. */
int provision_parse_address(const char *xml, size_t len, struct provision_address *ret, size_t *ret_n);

/* True when <g> has an ingress rule for TCP port <port> exactly from <source> of <kind> (CIDRs compared as
 * networks, so "::0/0" is "::/0"). */
bool provision_parse_rule_present(const struct provision_group *g, unsigned port, enum provision_source kind,
                                  const char *source);

/* True when <rule> is one of <n> wanted rules (TCP, one port, the same source). */
bool provision_parse_rule_wanted(const struct provision_rule *rule, const struct provision_rule *wanted,
                                 size_t n);

/* The value of tag <key> on <g>, or NULL. */
const char *provision_parse_group_tag(const struct provision_group *g, const char *key);

/* When <name> is one of Canonical's Ubuntu LTS server images for amd64 on EBS SSD
 * ("ubuntu/images/hvm-ssd*" "/ubuntu-<codename>-<YY>.04-amd64-server-<serial>" with YY even), returns
 * true and its release as YY * 100 + 4 in <ret_release>. */
bool provision_parse_ubuntu_lts(const char *name, unsigned *ret_release);

/* The newest available x86_64 Ubuntu LTS image of <list> by creation date (then release, then name), or
 * NULL when there is none. */
const struct provision_image *provision_parse_pick_image(const struct provision_image *list, size_t n);

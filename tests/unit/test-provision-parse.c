/* Unit tests for lbctl/provision-parse.c: the parsers of the answers `lbctl provision` reads, on recorded
 * answers and on hostile ones (DTDs and entities, wrong documents, fields too long or with characters
 * they may not hold, numbers out of range, more items than the limits), and the decisions taken on them
 * (rules present or wanted, the Ubuntu LTS image picked). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "lbctl/provision-parse.h"

#define NS "xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\""

static const char subnets[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<DescribeSubnetsResponse " NS "><requestId>r</requestId><subnetSet><item>"
        "<subnetId>subnet-0abc</subnetId><state>available</state><vpcId>vpc-0def</vpcId>"
        "<cidrBlock>127.0.1.0/24</cidrBlock><availabilityZone>us-east-1a</availabilityZone>"
        "<tagSet><item><key>vpcId</key><value>vpc-nested</value></item></tagSet>"
        "</item></subnetSet></DescribeSubnetsResponse>";

static const char groups[] =
        "<DescribeSecurityGroupsResponse " NS "><securityGroupInfo>"
        "<item><groupId>sg-1</groupId><groupName>lbd-lb</groupName><vpcId>vpc-0def</vpcId>"
        "<ipPermissionsEgress><item><ipProtocol>-1</ipProtocol><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp>"
        "</item></ipRanges></item></ipPermissionsEgress>"
        "<tagSet><item><key>lbd:pool</key><value>main</value></item><item><key>Name</key><value/></item>"
        "</tagSet>"
        "<ipPermissions><item><ipProtocol>tcp</ipProtocol><fromPort>80</fromPort><toPort>80</toPort>"
        "<groups/><ipRanges><item><description>world</description><cidrIp>0.0.0.0/0</cidrIp></item>"
        "</ipRanges><ipv6Ranges><item><cidrIpv6>::/0</cidrIpv6></item></ipv6Ranges><prefixListIds/></item>"
        "<item><ipProtocol>-1</ipProtocol><groups><item><userId>1</userId><groupId>sg-9</groupId></item>"
        "</groups><prefixListIds><item><prefixListId>pl-1</prefixListId></item></prefixListIds></item>"
        "</ipPermissions></item>"
        "<item><groupId>sg-2</groupId><groupName>lbd-backend</groupName><vpcId>vpc-0def</vpcId><tagSet/>"
        "<ipPermissions><item><ipProtocol>6</ipProtocol><fromPort> 8081 </fromPort><toPort>8081</toPort>"
        "<groups><item><groupId>sg-1</groupId></item><item><groupName>classic</groupName></item></groups>"
        "</item></ipPermissions></item>"
        "</securityGroupInfo></DescribeSecurityGroupsResponse>";

static void test_subnet(void **state)
{
        struct provision_subnet s;

        assert_int_equal(provision_parse_subnet(subnets, strlen(subnets), &s), 0);
        assert_string_equal(s.id, "subnet-0abc");
        assert_string_equal(s.vpc_id, "vpc-0def");
        assert_string_equal(s.cidr, "127.0.1.0/24");
        assert_string_equal(s.zone, "us-east-1a");
        assert_string_equal(s.state, "available");
}

static void test_subnet_hostile(void **state)
{
        static const char *const bad[] = {
                "",
                "not xml",
                "<DescribeSubnetsResponse>",
                "<DescribeVpcsResponse><subnetSet/></DescribeVpcsResponse>",
                "<DescribeSubnetsResponse/>",
                /* The VPC must be one. */
                "<DescribeSubnetsResponse><subnetSet><item><subnetId>subnet-1</subnetId><vpcId>vpc-1;x"
                "</vpcId>"
                "</item></subnetSet></DescribeSubnetsResponse>",
                "<DescribeSubnetsResponse><subnetSet><item><subnetId>subnet-1</subnetId><vpcId>sg-1</vpcId>"
                "</item></subnetSet></DescribeSubnetsResponse>",
                "<DescribeSubnetsResponse><subnetSet><item><subnetId>subnet-1</subnetId></item></subnetSet>"
                "</DescribeSubnetsResponse>",
                "<DescribeSubnetsResponse><subnetSet><item><subnetId>subnet-1</subnetId><vpcId>vpc-1&#10;x"
                "</vpcId></item></subnetSet></DescribeSubnetsResponse>",
                "<DescribeSubnetsResponse><subnetSet><item><subnetId>subnet-1</subnetId><vpcId>vpc-\x01"
                "</vpcId></item></subnetSet></DescribeSubnetsResponse>",
                /* Entities are never expanded: a DTD is refused outright. */
                "<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY v \"vpc-1\">]><DescribeSubnetsResponse>"
                "<subnetSet>"
                "<item><subnetId>subnet-1</subnetId><vpcId>&v;</vpcId></item></subnetSet>"
                "</DescribeSubnetsResponse>",
                "<?xml version=\"1.0\"?><!DOCTYPE d SYSTEM \"http://127.0.0.1:1/x.dtd\">"
                "<DescribeSubnetsResponse>"
                "</DescribeSubnetsResponse>",
        };
        static const char none[] = "<DescribeSubnetsResponse><subnetSet/></DescribeSubnetsResponse>";
        struct provision_subnet s;
        char big[512];

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(provision_parse_subnet(bad[i], strlen(bad[i]), &s), -EBADMSG);
        assert_int_equal(provision_parse_subnet(NULL, 0, &s), -EBADMSG);
        assert_int_equal(provision_parse_subnet(none, strlen(none), &s), -ENOENT);

        /* An id longer than its field: refused, not cut. */
        (void)snprintf(
                big, sizeof(big),
                "<DescribeSubnetsResponse><subnetSet><item><subnetId>subnet-1</subnetId><vpcId>vpc-%0100d"
                "</vpcId></item></subnetSet></DescribeSubnetsResponse>",
                0);
        assert_int_equal(provision_parse_subnet(big, strlen(big), &s), -EBADMSG);
}

static void test_groups(void **state)
{
        struct provision_group *list = NULL;
        size_t n = 0;

        assert_int_equal(provision_parse_groups(groups, strlen(groups), &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].id, "sg-1");
        assert_string_equal(list[0].name, "lbd-lb");
        assert_string_equal(list[0].vpc_id, "vpc-0def");
        assert_int_equal(list[0].n_tags, 2);
        assert_string_equal(provision_parse_group_tag(&list[0], "lbd:pool"), "main");
        assert_string_equal(provision_parse_group_tag(&list[0], "Name"), "");
        assert_null(provision_parse_group_tag(&list[0], "other"));
        assert_null(provision_parse_group_tag(&list[1], "lbd:pool"));

        /* Ingress only (egress ignored), one rule per source. */
        assert_int_equal(list[0].n_rules, 4);
        assert_string_equal(list[0].rules[0].protocol, "tcp");
        assert_int_equal(list[0].rules[0].from_port, 80);
        assert_int_equal(list[0].rules[0].kind, PROVISION_SOURCE_CIDR4);
        assert_string_equal(list[0].rules[0].source, "0.0.0.0/0");
        assert_int_equal(list[0].rules[1].kind, PROVISION_SOURCE_CIDR6);
        assert_string_equal(list[0].rules[2].protocol, "-1");
        assert_int_equal(list[0].rules[2].from_port, -1);
        assert_int_equal(list[0].rules[2].to_port, -1);
        assert_int_equal(list[0].rules[2].kind, PROVISION_SOURCE_GROUP);
        assert_string_equal(list[0].rules[2].source, "sg-9");
        assert_int_equal(list[0].rules[3].kind, PROVISION_SOURCE_PREFIX_LIST);

        /* Protocol "6" is TCP; a source by name only is skipped. */
        assert_int_equal(list[1].n_rules, 1);
        assert_int_equal(list[1].rules[0].from_port, 8081);

        assert_true(provision_parse_rule_present(&list[0], 80, PROVISION_SOURCE_CIDR4, "0.0.0.0/0"));
        assert_true(provision_parse_rule_present(&list[0], 80, PROVISION_SOURCE_CIDR6, "::/0"));
        assert_true(provision_parse_rule_present(&list[0], 80, PROVISION_SOURCE_CIDR6, "0::0/0"));
        assert_false(provision_parse_rule_present(&list[0], 80, PROVISION_SOURCE_CIDR4, "198.18.0.0/15"));
        assert_false(provision_parse_rule_present(&list[0], 81, PROVISION_SOURCE_CIDR4, "0.0.0.0/0"));
        /* "all traffic" from sg-9 is not "tcp 80 from sg-9": exact rules only. */
        assert_false(provision_parse_rule_present(&list[0], 80, PROVISION_SOURCE_GROUP, "sg-9"));
        assert_true(provision_parse_rule_present(&list[1], 8081, PROVISION_SOURCE_GROUP, "sg-1"));
        assert_false(provision_parse_rule_present(&list[1], 8081, PROVISION_SOURCE_GROUP, "sg-2"));

        {
                const struct provision_rule wanted[] = {
                        {"tcp", 80, 80, PROVISION_SOURCE_CIDR4, "0.0.0.0/0"},
                        {"tcp", 80, 80, PROVISION_SOURCE_CIDR6, "::/0"},
                };

                assert_true(provision_parse_rule_wanted(&list[0].rules[0], wanted, 2));
                assert_true(provision_parse_rule_wanted(&list[0].rules[1], wanted, 2));
                assert_false(provision_parse_rule_wanted(&list[0].rules[2], wanted, 2));
                assert_false(provision_parse_rule_wanted(&list[0].rules[3], wanted, 2));
                assert_false(provision_parse_rule_wanted(&list[0].rules[0], wanted, 0));
        }
        free(list);
}

/* A DescribeSecurityGroupsResponse of one group whose item holds <inner>. */
static char *groups_doc(const char *inner)
{
        char *doc = NULL;

        assert_true(
                asprintf(&doc,
                         "<DescribeSecurityGroupsResponse><securityGroupInfo><item><groupId>sg-1</groupId>"
                         "<groupName>g</groupName>%s</item></securityGroupInfo>"
                         "</DescribeSecurityGroupsResponse>",
                         inner) > 0);
        return doc;
}

static void check_groups_fail(const char *inner, int expected)
{
        _cleanup_free_ char *doc = groups_doc(inner);
        struct provision_group *list = NULL;
        size_t n = 0;

        assert_int_equal(provision_parse_groups(doc, strlen(doc), &list, &n), expected);
        assert_null(list);
}

static void test_groups_hostile(void **state)
{
        static const char *const bad_permissions[] = {
                "<ipPermissions><item><fromPort>1</fromPort></item></ipPermissions>", /* no protocol */
                "<ipPermissions><item><ipProtocol>tcp</ipProtocol><fromPort>70000</fromPort></item>"
                "</ipPermissions>",
                "<ipPermissions><item><ipProtocol>tcp</ipProtocol><fromPort>-2</fromPort></item>"
                "</ipPermissions>",
                "<ipPermissions><item><ipProtocol>tcp</ipProtocol><fromPort>8O</fromPort></item>"
                "</ipPermissions>",
                "<ipPermissions><item><ipProtocol>tcp</ipProtocol><toPort>99999999999999999999</toPort>"
                "</item>"
                "</ipPermissions>",
                "<ipPermissions><item><ipProtocol>tcp;</ipProtocol></item></ipPermissions>",
                "<ipPermissions><item><ipProtocol>tcp</ipProtocol><ipRanges><item><cidrIp>0.0.0.0/0 x"
                "</cidrIp>"
                "</item></ipRanges></item></ipPermissions>",
                "<ipPermissions><item><ipProtocol>tcp</ipProtocol><groups><item><groupId>sg-1/..</groupId>"
                "</item></groups></item></ipPermissions>",
                "<tagSet><item><value>v</value></item></tagSet>", /* a tag without a key */
                "<vpcId>vpc-\xc3\xa9</vpcId>",
        };
        struct provision_group *list = NULL;
        size_t n = 0;
        char *doc;
        size_t len, cap;

        for (size_t i = 0; i < ELEMENTSOF(bad_permissions); i++)
                check_groups_fail(bad_permissions[i], -EBADMSG);

        /* Wrong or malformed documents. */
        {
                static const char *const bad[] = {
                        "<DescribeSecurityGroupsResponse/>",
                        "<DescribeInstancesResponse><securityGroupInfo/></DescribeInstancesResponse>",
                        ("<DescribeSecurityGroupsResponse><securityGroupInfo>"
                         "<item><groupName>x</groupName></item>"
                         "</securityGroupInfo></DescribeSecurityGroupsResponse>"),
                        ("<DescribeSecurityGroupsResponse><securityGroupInfo>"
                         "<item><groupId>vpc-1</groupId><groupName>x</groupName></item>"
                         "</securityGroupInfo></DescribeSecurityGroupsResponse>"),
                        ("<DescribeSecurityGroupsResponse><securityGroupInfo>"
                         "<item><groupId>sg-1</groupId></item>"
                         "</securityGroupInfo></DescribeSecurityGroupsResponse>"),
                };

                for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                        assert_int_equal(provision_parse_groups(bad[i], strlen(bad[i]), &list, &n),
                                         -EBADMSG);
                        assert_null(list);
                }
        }

        /* More rules, tags or groups than the limits: refused, not cut. */
        cap = 64 * 1024;
        doc = malloc(cap);
        assert_non_null(doc);
        len = (size_t)snprintf(doc, cap, "<ipPermissions><item><ipProtocol>tcp</ipProtocol><ipRanges>");
        for (unsigned i = 0; i <= PROVISION_MAX_RULES; i++)
                len += (size_t)snprintf(doc + len, cap - len, "<item><cidrIp>10.%u.%u.0/24</cidrIp></item>",
                                        i / 256, i % 256);
        len += (size_t)snprintf(doc + len, cap - len, "</ipRanges></item></ipPermissions>");
        assert_true(len < cap);
        check_groups_fail(doc, -E2BIG);

        len = (size_t)snprintf(doc, cap, "<tagSet>");
        for (unsigned i = 0; i <= PROVISION_MAX_TAGS; i++)
                len += (size_t)snprintf(doc + len, cap - len, "<item><key>k%u</key><value>v</value></item>",
                                        i);
        len += (size_t)snprintf(doc + len, cap - len, "</tagSet>");
        check_groups_fail(doc, -E2BIG);

        len = (size_t)snprintf(doc, cap, "<DescribeSecurityGroupsResponse><securityGroupInfo>");
        for (unsigned i = 0; i <= PROVISION_MAX_GROUPS; i++)
                len += (size_t)snprintf(doc + len, cap - len,
                                        "<item><groupId>sg-%u</groupId><groupName>g%u</groupName></item>", i,
                                        i);
        len += (size_t)snprintf(doc + len, cap - len,
                                "</securityGroupInfo></DescribeSecurityGroupsResponse>");
        assert_int_equal(provision_parse_groups(doc, len, &list, &n), -E2BIG);
        assert_null(list);

        /* A tag value longer than EC2 allows. */
        len = (size_t)snprintf(doc, cap, "<tagSet><item><key>k</key><value>");
        memset(doc + len, 'v', PROVISION_TAG_VALUE_MAX);
        len += PROVISION_TAG_VALUE_MAX;
        (void)snprintf(doc + len, cap - len, "</value></item></tagSet>");
        check_groups_fail(doc, -EBADMSG);
        free(doc);

        /* An empty answer is an empty list. */
        {
                static const char empty[] = "<DescribeSecurityGroupsResponse><securityGroupInfo/>"
                                            "</DescribeSecurityGroupsResponse>";

                assert_int_equal(provision_parse_groups(empty, strlen(empty), &list, &n), 0);
                assert_int_equal(n, 0);
                free(list);
        }
}

/* Elastic IPs: an allocation's answer, the first of a listing (and how many), none, and hostile answers
 * (a wrong id, an address that is not IPv4, markup inside) refused without writing the result. */
static void test_address(void **state)
{
        static const char allocated[] =
                "<AllocateAddressResponse " NS "><publicIp>198.51.100.7</publicIp><domain>vpc</domain>"
                "<allocationId>eipalloc-0abc</allocationId></AllocateAddressResponse>";
        static const char listed[] =
                "<DescribeAddressesResponse " NS "><addressesSet>"
                "<item><publicIp>203.0.113.9</publicIp><allocationId>eipalloc-01</allocationId></item>"
                "<item><publicIp>203.0.113.10</publicIp><allocationId>eipalloc-02</allocationId></item>"
                "</addressesSet></DescribeAddressesResponse>";
        static const char none[] = "<DescribeAddressesResponse " NS "><addressesSet/></DescribeAddressesResponse>";
        static const char *const bad[] = {
                "<AllocateAddressResponse/>",
                "<AllocateAddressResponse><publicIp>198.51.100.7</publicIp><allocationId>sg-1</allocationId>"
                "</AllocateAddressResponse>",
                "<AllocateAddressResponse><publicIp>2001:db8::1</publicIp><allocationId>eipalloc-1</allocationId>"
                "</AllocateAddressResponse>",
                "<AllocateAddressResponse><publicIp>198.51.100.7</publicIp><allocationId>eipalloc-1&amp;x"
                "</allocationId></AllocateAddressResponse>",
                "<DescribeAddressesResponse><addressesSet><item><publicIp>1.2.3</publicIp>"
                "<allocationId>eipalloc-1</allocationId></item></addressesSet></DescribeAddressesResponse>",
                "<CreateImageResponse><imageId>ami-1</imageId></CreateImageResponse>",
                "not xml",
        };
        struct provision_address a = {.allocation_id = "unchanged"};
        size_t n = 99;

        assert_int_equal(provision_parse_address(allocated, strlen(allocated), &a, &n), 0);
        assert_string_equal(a.allocation_id, "eipalloc-0abc");
        assert_string_equal(a.public_ip, "198.51.100.7");
        assert_int_equal(n, 1);
        assert_int_equal(provision_parse_address(listed, strlen(listed), &a, &n), 0);
        assert_string_equal(a.allocation_id, "eipalloc-01");
        assert_string_equal(a.public_ip, "203.0.113.9");
        assert_int_equal(n, 2);
        assert_int_equal(provision_parse_address(none, strlen(none), &a, &n), -ENOENT);
        assert_int_equal(n, 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                assert_int_equal(provision_parse_address(bad[i], strlen(bad[i]), &a, NULL), -EBADMSG);
                assert_string_equal(a.allocation_id, "eipalloc-01"); /* written only on success */
        }
}

static void test_created_ids(void **state)
{
        static const char group[] =
                "<CreateSecurityGroupResponse " NS "><requestId>r</requestId>"
                "<return>true</return><groupId>sg-0123</groupId></CreateSecurityGroupResponse>";
        static const char image[] =
                "<CreateImageResponse " NS "><imageId> ami-0456 </imageId></CreateImageResponse>";
        static const char *const bad_groups[] = {
                "<CreateSecurityGroupResponse/>",
                "<CreateSecurityGroupResponse><groupId>ami-1</groupId></CreateSecurityGroupResponse>",
                "<CreateSecurityGroupResponse><groupId>sg-</groupId></CreateSecurityGroupResponse>",
                "<CreateSecurityGroupResponse><groupId>sg-1 2</groupId></CreateSecurityGroupResponse>",
                "<CreateImageResponse><groupId>sg-1</groupId></CreateImageResponse>",
                ("<CreateSecurityGroupResponse><groupId>sg-<![CDATA[1]]>&amp;</groupId>"
                 "</CreateSecurityGroupResponse>"),
        };
        char id[EC2_ID_MAX] = "unchanged";

        assert_int_equal(provision_parse_group_id(group, strlen(group), id), 0);
        assert_string_equal(id, "sg-0123");
        assert_int_equal(provision_parse_image_id(image, strlen(image), id), 0);
        assert_string_equal(id, "ami-0456");
        for (size_t i = 0; i < ELEMENTSOF(bad_groups); i++) {
                assert_int_equal(provision_parse_group_id(bad_groups[i], strlen(bad_groups[i]), id),
                                 -EBADMSG);
                assert_string_equal(id, "ami-0456"); /* written only on success */
        }
        assert_int_equal(provision_parse_image_id(group, strlen(group), id), -EBADMSG);
}

static void test_return(void **state)
{
        static const char yes[] = "<CreateTagsResponse " NS "><return>true</return></CreateTagsResponse>";
        static const char empty[] = "<CreateTagsResponse " NS "/>";
        static const char no[] = "<CreateTagsResponse><return>false</return></CreateTagsResponse>";
        static const char odd[] = "<CreateTagsResponse><return>maybe</return></CreateTagsResponse>";
        static const char other[] = "<AuthorizeSecurityGroupIngressResponse><return>true</return>"
                                    "</AuthorizeSecurityGroupIngressResponse>";

        assert_int_equal(provision_parse_return(yes, strlen(yes), "CreateTagsResponse"), 0);
        assert_int_equal(provision_parse_return(empty, strlen(empty), "CreateTagsResponse"), 0);
        assert_int_equal(provision_parse_return(no, strlen(no), "CreateTagsResponse"), -EINVAL);
        assert_int_equal(provision_parse_return(odd, strlen(odd), "CreateTagsResponse"), -EBADMSG);
        assert_int_equal(provision_parse_return(other, strlen(other), "CreateTagsResponse"), -EBADMSG);
        assert_int_equal(
                provision_parse_return(other, strlen(other), "AuthorizeSecurityGroupIngressResponse"), 0);
        assert_int_equal(provision_parse_return("<x", 2, "CreateTagsResponse"), -EBADMSG);
}

#define IMAGE(id, name, state, arch, date)                                                                  \
        "<item><blockDeviceMapping><item><ebs><snapshotId>snap-1</snapshotId></ebs></item></"               \
        "blockDeviceMapping>"                                                                               \
        "<imageId>" id "</imageId><name>" name "</name><imageState>" state "</imageState>"                  \
        "<architecture>" arch "</architecture><creationDate>" date "</creationDate></item>"

/* clang-format off */
static const char images[] =
        "<DescribeImagesResponse " NS "><imagesSet>"
        IMAGE("ami-1", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240207.1", "available", "x86_64",
              "2024-02-07T10:00:00.000Z")
        IMAGE("ami-2", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240423", "available", "x86_64",
              "2024-04-23T07:26:41.000Z")
        /* Newer, but not LTS, not amd64, not available, or not a date. */
        IMAGE("ami-3", "ubuntu/images/hvm-ssd/ubuntu-mantic-23.10-amd64-server-20240501", "available", "x86_64",
              "2024-05-01T00:00:00.000Z")
        IMAGE("ami-4", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-20240601", "available", "arm64",
              "2024-06-01T00:00:00.000Z")
        IMAGE("ami-5", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240701", "pending", "x86_64",
              "2024-07-01T00:00:00.000Z")
        IMAGE("ami-6", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240801", "available", "x86_64",
              "Tomorrow")
        IMAGE("ami-7", "ubuntu/images-testing/hvm-ssd/ubuntu-noble-24.04-amd64-server-20240901", "available",
              "x86_64", "2024-09-01T00:00:00.000Z")
        "</imagesSet><nextToken>abc+/=</nextToken></DescribeImagesResponse>";
/* clang-format on */

static void test_images(void **state)
{
        struct provision_image *list = NULL;
        size_t n = 0;
        char token[EC2_NEXT_TOKEN_MAX];

        assert_int_equal(provision_parse_images(images, strlen(images), &list, &n, token), 0);
        assert_int_equal(n, 7);
        assert_string_equal(token, "abc+/=");
        assert_string_equal(list[1].id, "ami-2");
        assert_string_equal(list[1].state, "available");
        assert_string_equal(list[1].architecture, "x86_64");
        assert_string_equal(provision_parse_pick_image(list, n)->id, "ami-2");
        assert_string_equal(provision_parse_pick_image(list, 1)->id, "ami-1");
        assert_null(provision_parse_pick_image(list + 2, n - 2));
        assert_null(provision_parse_pick_image(list, 0));

        /* Same date (moto gives every image the same): the later release wins, then the name. */
        memcpy(list[0].creation_date, list[1].creation_date, sizeof(list[0].creation_date));
        assert_string_equal(provision_parse_pick_image(list, 2)->id, "ami-2");
        memcpy(list[0].name, list[1].name, sizeof(list[0].name));
        list[0].name[strlen(list[0].name) - 1] = '4'; /* ...20240424: a later serial */
        assert_string_equal(provision_parse_pick_image(list, 2)->id, "ami-1");
        free(list);

        {
                static const char *const bad[] = {
                        "<DescribeImagesResponse/>",
                        "<DescribeImagesResponse><imagesSet><item><name>x</name></item></imagesSet>"
                        "</DescribeImagesResponse>",
                        "<DescribeImagesResponse><imagesSet><item><imageId>ami-1</imageId><imageState>a b"
                        "</imageState></item></imagesSet></DescribeImagesResponse>",
                        "<DescribeImagesResponse><imagesSet/><nextToken>a&amp;b</nextToken>"
                        "</DescribeImagesResponse>",
                        "<DescribeImagesResponse><imagesSet><item><imageId>ami-1</imageId><creationDate>2024"
                        "<x/>"
                        "</creationDate></item></imagesSet><nextToken>a b</nextToken>"
                        "</DescribeImagesResponse>",
                };

                for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                        list = NULL;
                        n = 0;
                        assert_int_equal(provision_parse_images(bad[i], strlen(bad[i]), &list, &n, token),
                                         -EBADMSG);
                        free(list);
                }
        }
}

static void test_images_limit(void **state)
{
        static const char head[] = "<DescribeImagesResponse><imagesSet>";
        static const char item[] = "<item><imageId>ami-1</imageId></item>";
        static const char tail[] = "</imagesSet></DescribeImagesResponse>";
        size_t cap = sizeof(head) + sizeof(tail) + (PROVISION_MAX_IMAGES + 1) * (sizeof(item) - 1);
        _cleanup_free_ char *doc = malloc(cap);
        struct provision_image *list = NULL;
        char token[EC2_NEXT_TOKEN_MAX];
        size_t n = 0, len = 0;

        assert_non_null(doc);
        memcpy(doc, head, sizeof(head) - 1);
        len = sizeof(head) - 1;
        for (unsigned i = 0; i <= PROVISION_MAX_IMAGES; i++) {
                memcpy(doc + len, item, sizeof(item) - 1);
                len += sizeof(item) - 1;
        }
        memcpy(doc + len, tail, sizeof(tail));
        len += sizeof(tail) - 1;
        assert_int_equal(provision_parse_images(doc, len, &list, &n, token), -E2BIG);
        assert_int_equal(n, PROVISION_MAX_IMAGES);
        free(list);
}

static void test_ubuntu_names(void **state)
{
        static const struct {
                const char *name;
                unsigned release;
        } good[] = {
                {"ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240207", 2204},
                {"ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240207.1", 2204},
                {"ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240423", 2404},
                {"ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-20170721", 1604},
        };
        static const char *const bad[] = {
                "ubuntu/images/hvm-ssd/ubuntu-mantic-23.10-amd64-server-20240101",
                "ubuntu/images/hvm-ssd/ubuntu-lunar-23.04-amd64-server-20240101",
                "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-arm64-server-20240207",
                "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-minimal-20240207",
                "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-2024",
                "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240207.",
                "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240207x",
                "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240207/x",
                "ubuntu/images/hvm-ssd/ubuntu--22.04-amd64-server-20240207",
                "ubuntu/images/hvm-ssd/ubuntu-JAMMY-22.04-amd64-server-20240207",
                "ubuntu/images/hvm-ssd/ubuntu-pro-jammy-22.04-amd64-server-20240207",
                "ubuntu/images/hvm-instance/ubuntu-jammy-22.04-amd64-server-20240207",
                "ubuntu/images/hvm-ssd?/ubuntu-jammy-22.04-amd64-server-20240207",
                "ubuntu/images-testing/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240207",
                "ubuntu-minimal/images/hvm-ssd/ubuntu-jammy-22.04-amd64-minimal-20240207",
                "ubuntu/images/hvm-ssd/ubuntu-warty-04.10-amd64-server-20040101",
                "ubuntu/images/hvm-ssd/ubuntu-x-2",
                "ubuntu/images/hvm-ssd",
                "",
        };
        unsigned release = 7;

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                assert_true(provision_parse_ubuntu_lts(good[i].name, &release));
                assert_int_equal(release, good[i].release);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_false(provision_parse_ubuntu_lts(bad[i], &release));
        assert_false(provision_parse_ubuntu_lts(NULL, &release));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_subnet),       cmocka_unit_test(test_subnet_hostile),
                cmocka_unit_test(test_groups),       cmocka_unit_test(test_groups_hostile),
                cmocka_unit_test(test_created_ids), cmocka_unit_test(test_address),  cmocka_unit_test(test_return),
                cmocka_unit_test(test_images),       cmocka_unit_test(test_images_limit),
                cmocka_unit_test(test_ubuntu_names),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

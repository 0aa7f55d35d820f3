/* Fuzz target: what the cloud answers lbd's control plane. Any bytes go through the EC2 XML parsers
 * (instances, errors) and the instance metadata credentials parser; whatever they accept must hold only
 * bounded, well-formed fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aws/awscred.h"
#include "aws/ec2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_field(const char *s, size_t size)
{
        if (strnlen(s, size) >= size)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *text = (const char *)data;
        struct ec2_instance *list = NULL;
        char token[EC2_NEXT_TOKEN_MAX], code[EC2_CODE_MAX], message[EC2_MESSAGE_MAX];
        struct awscred_credentials cred;
        size_t n = 0;

        if (ec2_parse_instances(text, size, &list, &n, token) == 0) {
                if (n > EC2_MAX_INSTANCES)
                        abort();
                check_field(token, sizeof(token));
                for (size_t i = 0; i < n; i++) {
                        if (!list[i].id[0])
                                abort();
                        check_field(list[i].id, sizeof(list[i].id));
                        check_field(list[i].state, sizeof(list[i].state));
                        check_field(list[i].private_ip, sizeof(list[i].private_ip));
                        check_field(list[i].subnet_id, sizeof(list[i].subnet_id));
                        check_field(list[i].launch_time, sizeof(list[i].launch_time));
                }
        }
        free(list);

        if (ec2_parse_error(text, size, code, message) == 0) {
                if (!code[0])
                        abort();
                check_field(code, sizeof(code));
                check_field(message, sizeof(message));
        }

        if (awscred_parse_imds_credentials(text, size, &cred) == 0) {
                if (!cred.access_key_id[0] || !cred.secret_access_key[0])
                        abort();
                check_field(cred.session_token, sizeof(cred.session_token));
        }
        return 0;
}

/* `lbctl provision`: creates, or finds when they exist, what an lbd pool needs in EC2 (see provision.c). */
#pragma once

#define PROVISION_EXIT_API         1 /* an EC2 call failed */
#define PROVISION_EXIT_USAGE       2
#define PROVISION_EXIT_CREDENTIALS 3 /* credentials missing or refused */

/* Runs the command with its own arguments (<argv>[0] is "provision"). Returns the exit status. */
int provision_main(int argc, char **argv);

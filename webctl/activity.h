/* webctl's activity command: the caller's own requests, from the server's activity log. */
#pragma once

#include "webctl/webctl.h"

/* "activity [--limit N] [--offset N]" */
extern const struct webctl_command activity_command;

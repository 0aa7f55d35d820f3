/* The "tasks" commands: list, add, show, edit, done, rm. */
#pragma once

#include <stddef.h>

#include "webctl/webctl.h"

extern const struct webctl_command tasks_commands[];
extern const size_t tasks_n_commands;

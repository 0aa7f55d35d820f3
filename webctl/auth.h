/* webctl's account commands: register, login, logout. */
#pragma once

#include "webctl/webctl.h"

extern const struct webctl_command auth_register_command, auth_login_command, auth_logout_command;

/* webctl's account commands: register, login, logout. Each returns an exit status (see webctl.h). */
#pragma once

struct webctl;

int auth_register(struct webctl *w, int argc, char **argv);
int auth_login(struct webctl *w, int argc, char **argv);
int auth_logout(struct webctl *w, int argc, char **argv);

/* webctl's task commands: tasks list, add, show, edit, done, rm. */
#pragma once

struct webctl;

/* "tasks SUBCOMMAND ...", argv[0] being "tasks". Returns an exit status (see webctl.h). */
int tasks_main(struct webctl *w, int argc, char **argv);

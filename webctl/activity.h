/* webctl's activity command: the caller's own requests, from the server's activity log. */
#pragma once

struct webctl;

/* "activity [--limit N] [--offset N]". Returns an exit status (see webctl.h). */
int activity_main(struct webctl *w, int argc, char **argv);

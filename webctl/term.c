/* The terminal's width and whether it takes colour, decided from the environment and the file descriptor
 * alone; nothing is cached (a command asks once or twice). */
#include "webctl/term.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/parse.h"

size_t term_width(FILE *f)
{
        const char *columns = getenv("COLUMNS");
        struct winsize ws;
        uint64_t n;

        if (columns && parse_uint(columns, 1, UINT64_MAX, &n) >= 0)
                return n > TERM_WIDTH_MAX ? TERM_WIDTH_MAX : (size_t)n;
        if (!isatty(fileno(f)) || ioctl(fileno(f), TIOCGWINSZ, &ws) < 0 || ws.ws_col == 0)
                return 0;
        return ws.ws_col > TERM_WIDTH_MAX ? TERM_WIDTH_MAX : ws.ws_col;
}

bool term_color(FILE *f)
{
        const char *no_color = getenv("NO_COLOR"), *term = getenv("TERM");

        if (no_color && *no_color)
                return false;
        if (term && strcmp(term, "dumb") == 0)
                return false;
        return isatty(fileno(f));
}

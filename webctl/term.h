/* What webctl asks of the terminal: its width, and whether to use colour. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define TERM_WIDTH_MAX 4096 /* a larger COLUMNS or window size is taken as this */

#define TERM_BOLD  "\033[1m"
#define TERM_DIM   "\033[2m"
#define TERM_RED   "\033[31m"
#define TERM_RESET "\033[0m"

/* The width to fit output on <f> to: $COLUMNS when it is a positive number, else the terminal's width when
 * <f> is a terminal, else 0 (unknown: nothing is cut). */
size_t term_width(FILE *f);

/* Whether to colour what goes to <f>: only when it is a terminal, NO_COLOR is unset or empty
 * (https://no-color.org), and TERM is not "dumb". */
bool term_color(FILE *f);

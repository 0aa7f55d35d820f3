/* Plain-text output for people: tables with computed column widths and records of "Key  value" lines.
 * Text from the server is made safe to print (control characters and invalid UTF-8 become '?') and
 * measured in terminal columns; cells over their column's limit are cut and end with "…". */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define TABLE_COLUMNS_MAX 8
#define TABLE_ROWS_MAX    100000

struct table;

/* A table with the given column headers (1..TABLE_COLUMNS_MAX). Returns 0, -EINVAL or -ENOMEM. */
int table_new(const char *const *headers, size_t columns, struct table **ret);
struct table *table_free(struct table *t);

/* Right-aligns column <i> (numbers). */
void table_align_right(struct table *t, size_t i);
/* Caps column <i> at <width> terminal columns (0: no cap). With <shrink> (1, 2, ...: the order in which
 * columns do it; 0: never) the column also shrinks, down to <min_width> or its header's width, so that the
 * table fits the width given to table_print(); given a width, such a column is not capped but takes the
 * room there is. */
void table_limit(struct table *t, size_t i, size_t width, unsigned shrink, size_t min_width);
/* Lets column <i> be left out, in the order <drop> (1, 2, ...), when the table doesn't fit even with every
 * column shrunk. */
void table_optional(struct table *t, size_t i, unsigned drop);

enum table_style {
        TABLE_STYLE_PLAIN,
        TABLE_STYLE_DIM, /* done, past: less important */
};

/* Sets the style of the row added last. */
void table_style_row(struct table *t, enum table_style style);

/* Adds a row of <columns> cells (copied; NULL prints as ""). Returns 0, -E2BIG or -ENOMEM. */
int table_add_row(struct table *t, const char *const *cells);
size_t table_rows(const struct table *t);

/* Prints the header and the rows, fitted to <width> (the terminal's width, or 0 if unknown), with <color>
 * (see term_color()) a bold header and the styled rows. Returns 0 or -EIO. */
int table_print(struct table *t, FILE *f, size_t width, bool color);

/* Prints "key  value" lines with the keys padded to a common width; a value with several lines continues
 * under the first. Returns 0 or -EIO. */
int table_print_record(FILE *f, const char *const *keys, const char *const *values, size_t n);

/* A printable copy of <s> (NULL: ""), to free(), and its width in terminal columns in *<ret_width> (may
 * be NULL). With <keep_newlines> '\n' stays (as a line break); else '\n' and '\t' become spaces. Other
 * unprintable characters become '?'. NULL when out of memory. */
char *table_sanitize(const char *s, bool keep_newlines, size_t *ret_width);

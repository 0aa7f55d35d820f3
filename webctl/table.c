/* Tables and records for webctl's human-readable output.
 *
 * Everything printed here came from the server, so it is untrusted text for a terminal: cells are
 * sanitized when they are added (invalid UTF-8, C0/C1 control characters and the bidirectional override
 * characters become '?'; in tables newlines and tabs become spaces) and measured in terminal columns with
 * wcwidth(), which needs a UTF-8 LC_CTYPE (main() sets one). Widths are computed from all the rows before
 * anything is printed; a cell wider than its column's limit is cut at a character boundary and ends with
 * "…". To fit the terminal, the columns that may shrink (a path, a title) give up width in their order,
 * after optional ones (a request id) were left out if even that is not enough. Colour (a bold header,
 * dim rows) only when the caller asks for it; escape sequences are never counted as width. */
#include "webctl/table.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "common/macro.h"
#include "webctl/term.h"

#define TABLE_GAP      2
#define TABLE_ELLIPSIS "\xe2\x80\xa6" /* U+2026, one column */

struct table_column {
        char *header;
        size_t header_width;
        bool right;
        unsigned shrink; /* 0: keeps its width; else gives up width to fit, 1 first */
        unsigned drop;   /* 0: always shown; else left out when even the narrowest layout doesn't fit, 1 first */
        size_t limit;    /* 0: none */
        size_t min_width;
};

struct table {
        size_t columns;
        struct table_column column[TABLE_COLUMNS_MAX];
        char **cells; /* rows * columns, sanitized */
        size_t *widths;
        enum table_style *styles; /* one per row */
        size_t rows, allocated;
};

/* Decodes the UTF-8 sequence at <s> (<n> bytes left). Returns its length and *<ret>, or 0 if it is not
 * valid (overlong forms, surrogates and values over U+10FFFF included). */
static size_t table_utf8_decode(const unsigned char *s, size_t n, uint32_t *ret)
{
        uint32_t cp;
        size_t len;

        if (s[0] < 0x80) {
                *ret = s[0];
                return 1;
        }
        if (s[0] >= 0xc2 && s[0] <= 0xdf) {
                len = 2;
                cp = s[0] & 0x1f;
        } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
                len = 3;
                cp = s[0] & 0x0f;
        } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
                len = 4;
                cp = s[0] & 0x07;
        } else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        *ret = cp;
        return len;
}

static bool table_is_bidi_control(uint32_t cp)
{
        return (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
               cp == 0x200f || cp == 0x061c;
}

/* The terminal width of code point <cp>, or -1 if it must not be printed as is. */
static int table_cp_width(uint32_t cp)
{
        if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0) || table_is_bidi_control(cp))
                return -1;
        return wcwidth((wchar_t)cp);
}

char *table_sanitize(const char *s, bool keep_newlines, size_t *ret_width)
{
        const unsigned char *p = (const unsigned char *)(s ? s : "");
        size_t n = strlen((const char *)p), o = 0, width = 0;
        char *out = malloc(n + 1); /* each replacement is no longer than what it replaces */

        if (!out)
                return NULL;
        while (n > 0) {
                uint32_t cp = 0;
                size_t len = table_utf8_decode(p, n, &cp);
                int w;

                if (len == 0) {
                        out[o++] = '?';
                        width++;
                        p++;
                        n--;
                        continue;
                }
                if (cp == '\n' && keep_newlines) {
                        out[o++] = '\n';
                } else if (cp == '\n' || cp == '\t') {
                        out[o++] = ' ';
                        width++;
                } else if ((w = table_cp_width(cp)) < 0) {
                        out[o++] = '?';
                        width++;
                } else {
                        memcpy(out + o, p, len);
                        o += len;
                        width += (size_t)w;
                }
                p += len;
                n -= len;
        }
        out[o] = '\0';
        if (ret_width)
                *ret_width = width;
        return out;
}

/* Prints the sanitized <s>, cut to <limit> columns (with "…") if it is wider, and returns the columns
 * printed. */
static size_t table_put(FILE *f, const char *s, size_t width, size_t limit)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t n = strlen(s), used = 0;

        if (width <= limit) {
                fputs(s, f);
                return width;
        }
        if (limit == 0)
                return 0;
        while (n > 0) {
                uint32_t cp = 0;
                size_t len = table_utf8_decode(p, n, &cp);
                int w = table_cp_width(cp);

                /* The text is sanitized: every sequence decodes and has a width. */
                if (len == 0 || w < 0 || used + (size_t)w > limit - 1)
                        break;
                fwrite(p, 1, len, f);
                used += (size_t)w;
                p += len;
                n -= len;
        }
        fputs(TABLE_ELLIPSIS, f);
        return used + 1;
}

static void table_pad(FILE *f, size_t n)
{
        while (n-- > 0)
                fputc(' ', f);
}

int table_new(const char *const *headers, size_t columns, struct table **ret)
{
        struct table *t;

        if (columns == 0 || columns > TABLE_COLUMNS_MAX)
                return -EINVAL;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->columns = columns;
        for (size_t i = 0; i < columns; i++) {
                t->column[i].header = table_sanitize(headers[i], false, &t->column[i].header_width);
                if (!t->column[i].header) {
                        table_free(t);
                        return -ENOMEM;
                }
        }
        *ret = t;
        return 0;
}

struct table *table_free(struct table *t)
{
        if (t) {
                for (size_t i = 0; i < t->rows * t->columns; i++)
                        free(t->cells[i]);
                for (size_t i = 0; i < t->columns; i++)
                        free(t->column[i].header);
                free(t->cells);
                free(t->widths);
                free(t->styles);
                free(t);
        }
        return NULL;
}

void table_align_right(struct table *t, size_t i)
{
        if (i < t->columns)
                t->column[i].right = true;
}

void table_limit(struct table *t, size_t i, size_t width, unsigned shrink, size_t min_width)
{
        if (i < t->columns) {
                t->column[i].limit = width;
                t->column[i].shrink = shrink;
                t->column[i].min_width = MAX(min_width, (size_t)1);
        }
}

void table_optional(struct table *t, size_t i, unsigned drop)
{
        if (i < t->columns)
                t->column[i].drop = drop;
}

void table_style_row(struct table *t, enum table_style style)
{
        if (t->rows > 0)
                t->styles[t->rows - 1] = style;
}

int table_add_row(struct table *t, const char *const *cells)
{
        size_t base;

        if (t->rows >= TABLE_ROWS_MAX)
                return -E2BIG;
        if (t->rows == t->allocated) {
                size_t want = t->allocated ? t->allocated * 2 : 16;
                char **c = reallocarray(t->cells, want * t->columns, sizeof(*c));
                enum table_style *s;
                size_t *w;

                if (!c)
                        return -ENOMEM;
                t->cells = c;
                w = reallocarray(t->widths, want * t->columns, sizeof(*w));
                if (!w)
                        return -ENOMEM;
                t->widths = w;
                s = reallocarray(t->styles, want, sizeof(*s));
                if (!s)
                        return -ENOMEM;
                t->styles = s;
                t->allocated = want;
        }
        base = t->rows * t->columns;
        for (size_t i = 0; i < t->columns; i++) {
                t->cells[base + i] = table_sanitize(cells[i], false, &t->widths[base + i]);
                if (!t->cells[base + i]) {
                        while (i-- > 0)
                                free(t->cells[base + i]);
                        return -ENOMEM;
                }
        }
        t->styles[t->rows] = TABLE_STYLE_PLAIN;
        t->rows++;
        return 0;
}

size_t table_rows(const struct table *t)
{
        return t->rows;
}

/* The narrowest a column may be made. */
static size_t table_floor(const struct table_column *col, size_t width)
{
        return col->shrink ? MIN(width, MAX(col->min_width, col->header_width)) : width;
}

/* The width of each column (0: left out): its widest cell or header, within its limit; when <total> is
 * known and the table is wider, the shrinking columns give up width in their order, after the optional
 * columns were left out in theirs if even the narrowest layout is too wide. */
static void table_layout(const struct table *t, size_t total, size_t *width)
{
        bool shown[TABLE_COLUMNS_MAX];
        size_t sum = 0, narrowest = 0, n = 0;
        unsigned rank;

        for (size_t c = 0; c < t->columns; c++) {
                const struct table_column *col = &t->column[c];

                width[c] = col->header_width;
                for (size_t r = 0; r < t->rows; r++)
                        width[c] = MAX(width[c], t->widths[r * t->columns + c]);
                /* The cap of a column that shrinks is for an unknown width (a pipe): with a known one it
                 * takes what there is room for. */
                if (col->limit > 0 && !(total > 0 && col->shrink))
                        width[c] = MIN(width[c], MAX(col->limit, col->header_width));
                width[c] = MAX(width[c], (size_t)1);
                shown[c] = true;
                sum += width[c] + (n++ > 0 ? TABLE_GAP : 0);
                narrowest += table_floor(col, width[c]) + (c > 0 ? TABLE_GAP : 0);
        }
        if (total == 0 || sum <= total)
                return;

        for (rank = 1; narrowest > total; rank++) {
                bool any = false;

                for (size_t c = 0; c < t->columns; c++) {
                        if (t->column[c].drop != rank)
                                continue;
                        any = true;
                        shown[c] = false;
                        narrowest -= table_floor(&t->column[c], width[c]) + TABLE_GAP;
                        sum -= width[c] + TABLE_GAP;
                        width[c] = 0;
                        if (narrowest <= total)
                                break;
                }
                if (!any && rank > TABLE_COLUMNS_MAX)
                        break;
        }
        for (rank = 1; rank <= TABLE_COLUMNS_MAX && sum > total; rank++)
                for (size_t c = 0; c < t->columns && sum > total; c++) {
                        size_t floor = table_floor(&t->column[c], width[c]), give;

                        if (!shown[c] || t->column[c].shrink != rank || width[c] <= floor)
                                continue;
                        give = MIN(width[c] - floor, sum - total);
                        width[c] -= give;
                        sum -= give;
                }
}

/* Prints one cell of column <c> in <width> columns; <last>: the last column shown, not padded. */
static void table_put_cell(FILE *f, const struct table *t, size_t c, const char *s, size_t w, size_t width,
                           bool last)
{
        size_t printed;

        if (t->column[c].right && w < width)
                table_pad(f, width - w);
        printed = table_put(f, s, w, width);
        if (!t->column[c].right && !last)
                table_pad(f, width - MIN(printed, width));
        if (!last)
                table_pad(f, TABLE_GAP);
}

static void table_put_row(FILE *f, const struct table *t, const size_t *width, char *const *cells,
                          const size_t *widths, const char *style)
{
        size_t last = 0;

        for (size_t c = 0; c < t->columns; c++)
                if (width[c] > 0)
                        last = c;
        if (style)
                fputs(style, f);
        for (size_t c = 0; c < t->columns; c++)
                if (width[c] > 0)
                        table_put_cell(f, t, c, cells[c], widths[c], width[c], c == last);
        if (style)
                fputs(TERM_RESET, f);
        fputc('\n', f);
}

int table_print(struct table *t, FILE *f, size_t total, bool color)
{
        size_t width[TABLE_COLUMNS_MAX], header_widths[TABLE_COLUMNS_MAX];
        char *headers[TABLE_COLUMNS_MAX];

        table_layout(t, total, width);
        for (size_t c = 0; c < t->columns; c++) {
                headers[c] = t->column[c].header;
                header_widths[c] = t->column[c].header_width;
        }
        table_put_row(f, t, width, headers, header_widths, color ? TERM_BOLD : NULL);
        for (size_t r = 0; r < t->rows; r++)
                table_put_row(f, t, width, t->cells + r * t->columns, t->widths + r * t->columns,
                              color && t->styles[r] == TABLE_STYLE_DIM ? TERM_DIM : NULL);
        return ferror(f) ? -EIO : 0;
}

int table_print_record(FILE *f, const char *const *keys, const char *const *values, size_t n)
{
        size_t key_width = 0;

        for (size_t i = 0; i < n; i++)
                key_width = MAX(key_width, strlen(keys[i]));
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *v = table_sanitize(values[i], true, NULL);
                const char *line;

                if (!v)
                        return -ENOMEM;
                fputs(keys[i], f);
                table_pad(f, key_width - strlen(keys[i]) + TABLE_GAP);
                line = v;
                for (;;) {
                        const char *nl = strchr(line, '\n');

                        if (!nl) {
                                fputs(line, f);
                                break;
                        }
                        fwrite(line, 1, (size_t)(nl - line), f);
                        fputc('\n', f);
                        table_pad(f, key_width + TABLE_GAP);
                        line = nl + 1;
                }
                fputc('\n', f);
        }
        return ferror(f) ? -EIO : 0;
}

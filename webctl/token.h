/* The saved login: $XDG_CONFIG_HOME/webctl/token (default ~/.config/webctl/token), a small JSON file with
 * the token and the server URL it belongs to. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define TOKEN_MAX      2048 /* bytes of token, like the server's JWT_MAX */
#define TOKEN_NAME_MAX 128

struct token {
        char url[1024];
        char username[TOKEN_NAME_MAX];
        char token[TOKEN_MAX + 1];
        int64_t expires; /* seconds since the epoch, local clock; 0: unknown */
};

/* Writes the token file's path into <buf>. Returns 0, -ENOENT (neither XDG_CONFIG_HOME nor a home
 * directory), or -ENAMETOOLONG. */
int token_path(char *buf, size_t size);

/* Reads the saved login into *<ret>. Returns 0, -ENOENT (none saved), -EBADMSG (unreadable content), or
 * -errno. */
int token_load(struct token *ret);

/* Saves <t>, creating the directories (0700) as needed; the file (0600) is written under a temporary name
 * and renamed into place, so it is never seen half-written. Returns 0 or -errno. */
int token_save(const struct token *t);

/* Removes the saved login. Returns 0, -ENOENT (there was none), or -errno. */
int token_remove(void);

/* Wipes <t>'s token. */
void token_wipe(struct token *t);

/* The saved logins: $XDG_CONFIG_HOME/webctl/token (default ~/.config/webctl/token), a small JSON file with
 * one login (token, user, expiry) per server URL. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TOKEN_MAX        2048 /* bytes of token, like the server's JWT_MAX */
#define TOKEN_NAME_MAX   128
#define TOKEN_URL_MAX    1024
#define TOKEN_LOGINS_MAX 16 /* servers remembered; a new one beyond replaces the login that expires first */

struct token {
        char url[TOKEN_URL_MAX]; /* the normalised server URL (webctl_url()) */
        char username[TOKEN_NAME_MAX];
        char token[TOKEN_MAX + 1];
        int64_t expires; /* seconds since the epoch, local clock; 0: unknown */
};

/* Writes the token file's path into <buf>. Returns 0, -ENOENT (neither XDG_CONFIG_HOME nor a home
 * directory), or -ENAMETOOLONG. */
int token_path(char *buf, size_t size);

/* Reads the login saved for the server <url> into *<ret>. Returns 0, -ENOENT (none saved for it), -EBADMSG
 * (unreadable content), -EPERM (the file is open to other users or not the caller's: see token_check()),
 * or -errno. When there is none for <url>, the URLs that have one are written to <others> ("a, b"; may be
 * NULL) if it fits. */
int token_load(const char *url, struct token *ret, char *others, size_t others_size);

/* Saves <t>, replacing the login for the same URL and keeping the others (expired ones are dropped). The
 * directories are created 0700 as needed; the file (0600) is written under a temporary name and renamed
 * into place, so it is never seen half-written. Returns 0, -EPERM, -EBADMSG or -errno. */
int token_save(const struct token *t);

/* Removes the login for <url>, and the file with the last one. Returns 0, -ENOENT (there was none for
 * it), -EPERM, -EBADMSG or -errno. */
int token_remove(const char *url);

/* Checks that the token file, open as <fd>, is the caller's and not open to anyone else, as ssh does with
 * keys. Returns 0, or -EPERM with its mode and owner in *<ret_mode> and *<ret_uid>. */
int token_check(int fd, mode_t *ret_mode, uid_t *ret_uid);

/* Wipes <t>'s token. */
void token_wipe(struct token *t);

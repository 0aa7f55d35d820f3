/* Reading a password: never from the command line, either one line of standard input or typed at the
 * terminal without echo. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Reads one line (without its "\n" or "\r\n") into <buf>, NUL-terminated: from standard input when
 * <from_stdin>, else from the controlling terminal after writing <prompt> to it, with echo off (restored
 * afterwards, also when a signal interrupts the read: the signal is then raised again).
 * Returns the length, or -ENOTTY (no terminal to prompt on), -ENODATA (end of input before any byte),
 * -E2BIG (line of <size> bytes or more), or -errno. */
int prompt_password(bool from_stdin, const char *prompt, char *buf, size_t size);
